//! Token shapes of the identity providers users run (Keycloak, Auth0, Okta, Entra ID v1 and v2,
//! Cognito, Dex), as fixtures modelled on real tokens and signed by a development issuer, checked
//! against the configurations documented in `docs/providers.md`.
//!
//! Each test runs the gate with that provider's block from the docs, unchanged except for
//! `jwks_uri` (pointed at the development issuer's JWKS) and `listen`: the tokens carry the
//! provider's exact `iss` strings, so the documented issuers, audiences, scope claims and
//! header mappings are what is tested. The last test runs `jwtgate check-config` on every block.

use base64::Engine as _;
use jwtgate::algorithm::Algorithm;
use serde_json::{Value, json};

use crate::helpers::*;
use jwtgate::dev_issuer::DevIssuer;

const DOCS: &str = include_str!("../../docs/providers.md");

/// Every ```yaml block of docs/providers.md.
fn yaml_blocks() -> Vec<&'static str> {
    let mut blocks = Vec::new();
    let mut rest = DOCS;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + "```yaml\n".len()..];
        let end = body.find("\n```").expect("unterminated ```yaml block in docs/providers.md");
        blocks.push(&body[..end + 1]);
        rest = &body[end + 4..];
    }
    blocks
}

/// The configured issuer names of a YAML config.
fn issuer_names(yaml: &str) -> Vec<String> {
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("docs block is not YAML: {e}\n{yaml}"));
    v["issuers"].as_array().into_iter().flatten().filter_map(|i| i["name"].as_str().map(str::to_string)).collect()
}

/// A gate running the docs block that configures exactly the issuers `names`, with every
/// issuer's keys taken from a fresh development issuer.
async fn provider_app(names: &[&str]) -> TestApp {
    let block = yaml_blocks()
        .into_iter()
        .find(|b| issuer_names(b) == names)
        .unwrap_or_else(|| panic!("docs/providers.md has no block configuring exactly {names:?}"));
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut config: Value = serde_yaml_ng::from_str(block).unwrap();
    config["listen"] = json!("127.0.0.1:0");
    for i in config["issuers"].as_array_mut().unwrap() {
        i["jwks_uri"] = json!(issuer.jwks_uri());
    }
    config["shutdown"] = json!({"grace_seconds": 1});
    let yaml = serde_yaml_ng::to_string(&config).unwrap();
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    app
}

/// Signs `claims` with the development issuer's RS256 key under a provider-shaped JOSE header
/// (`alg` and `kid` filled in, everything else as the provider sends it).
fn sign(app: &TestApp, mut header: Value, claims: &Value) -> String {
    header["alg"] = json!("RS256");
    header["kid"] = json!("rs256-1");
    app.issuer.sign_raw("rs256-1", Algorithm::RS256, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

fn now() -> i64 {
    jwtgate::gate::unix_now()
}

/// The identity headers of a 200, as (name, value) pairs in the order given.
fn identity(r: &reqwest::Response, names: &[&str]) -> Vec<(String, Option<String>)> {
    names.iter().map(|n| (n.to_string(), r.headers().get(*n).map(|v| v.to_str().unwrap().to_string()))).collect()
}

fn expect(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.map(str::to_string))).collect()
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()["www-authenticate"].to_str().unwrap().to_string()
}

fn insufficient_scope(scope: &str) -> String {
    format!(r#"Bearer realm="jwtgate", error="insufficient_scope", scope="{scope}""#)
}

fn invalid_token(description: &str) -> String {
    format!(r#"Bearer realm="jwtgate", error="invalid_token", error_description="{description}""#)
}

// --- Keycloak ---------------------------------------------------------------------------------

const KEYCLOAK_ISS: &str = "https://keycloak.example.com/realms/shop";

/// A Keycloak access token for user alice through the `shop-frontend` client, with an Audience
/// mapper adding `orders-api` (Keycloak 2x shape).
fn keycloak_access_token() -> Value {
    let t = now();
    json!({
        "exp": t + 300, "iat": t, "auth_time": t - 10,
        "jti": "onrtac:3f0c8a56-2a4c-4b43-9d8b-6c0f1e2d3a4b",
        "iss": KEYCLOAK_ISS,
        "aud": ["orders-api", "account"],
        "sub": "5d8f2c1e-7a3b-4c9d-8e6f-1a2b3c4d5e6f",
        "typ": "Bearer",
        "azp": "shop-frontend",
        "sid": "0b7e6a8c-1d2e-4f3a-9b8c-7d6e5f4a3b2c",
        "acr": "1",
        "allowed-origins": ["https://shop.example.com"],
        "realm_access": {"roles": ["default-roles-shop", "offline_access", "uma_authorization"]},
        "resource_access": {
            "orders-api": {"roles": ["orders-admin"]},
            "account": {"roles": ["manage-account", "view-profile"]}
        },
        "scope": "openid email profile orders:read",
        "email_verified": true,
        "name": "Alice Doe",
        "preferred_username": "alice",
        "given_name": "Alice",
        "family_name": "Doe",
        "email": "alice@example.com"
    })
}

#[tokio::test]
async fn keycloak_access_token_maps_realm_and_client_roles_and_its_scope_string() {
    let app = provider_app(&["keycloak"]).await;
    let header = json!({"typ": "JWT"});
    let token = sign(&app, header.clone(), &keycloak_access_token());

    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        identity(
            &r,
            &["x-auth-subject", "x-auth-user", "x-auth-email", "x-auth-client", "x-auth-roles", "x-auth-client-roles"]
        ),
        expect(&[
            ("x-auth-subject", Some("5d8f2c1e-7a3b-4c9d-8e6f-1a2b3c4d5e6f")),
            ("x-auth-user", Some("alice")),
            ("x-auth-email", Some("alice@example.com")),
            ("x-auth-client", Some("shop-frontend")),
            ("x-auth-roles", Some("default-roles-shop,offline_access,uma_authorization")),
            ("x-auth-client-roles", Some("orders-admin")),
        ])
    );

    assert_eq!(app.verify(Some(&token), "scope=orders:read").await.status(), 200);
    let r = app.verify(Some(&token), "scope=orders:write").await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), insufficient_scope("orders:write"));

    // Without the Audience mapper Keycloak's access token says aud "account" only.
    let mut no_mapper = keycloak_access_token();
    no_mapper["aud"] = json!("account");
    let r = app.verify(Some(&sign(&app, header.clone(), &no_mapper)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("audience not accepted"));

    // The ID token of the same login names the frontend client as its audience.
    let mut id_token = keycloak_access_token();
    for k in ["typ", "realm_access", "resource_access", "scope", "allowed-origins"] {
        id_token.as_object_mut().unwrap().remove(k);
    }
    id_token["typ"] = json!("ID");
    id_token["aud"] = json!("shop-frontend");
    id_token["at_hash"] = json!("kT2mNy5nW7mKIGq7bXxY4Q");
    let r = app.verify(Some(&sign(&app, header, &id_token)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("audience not accepted"));
}

#[tokio::test]
async fn keycloak_acr_and_auth_time_drive_step_up() {
    let app = provider_app(&["keycloak"]).await;
    let header = json!({"typ": "JWT"});
    // A password login: Keycloak's default LoA mapping says acr "1"; auth_time is the login.
    let token = sign(&app, header.clone(), &keycloak_access_token());
    assert_eq!(app.verify(Some(&token), "acr=1,2&max_age=300").await.status(), 200);
    assert_eq!(
        app.verify(Some(&token), "claim.resource_access.orders-api.roles=orders-admin&acr=1").await.status(),
        200
    );
    let r = app.verify(Some(&token), "acr=2").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="2""#
    );
    // The login was 10 s ago (Keycloak's auth_time); with the default 30 s leeway, max_age=0 still
    // accepts it, and a token from a session that logged in an hour ago does not meet max_age=300.
    assert_eq!(app.verify(Some(&token), "max_age=0").await.status(), 200);
    let mut old_login = keycloak_access_token();
    old_login["auth_time"] = json!(now() - 3600);
    let r = app.verify(Some(&sign(&app, header.clone(), &old_login)), "max_age=300").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_user_authentication", error_description="more recent authentication is required", max_age="300""#
    );
    // A refreshed token keeps the original auth_time (Keycloak copies it into every refresh), so
    // refreshing does not satisfy max_age: only a new login does.
    let mut refreshed = old_login.clone();
    refreshed["iat"] = json!(now());
    refreshed["exp"] = json!(now() + 300);
    assert_eq!(app.verify(Some(&sign(&app, header.clone(), &refreshed)), "max_age=300").await.status(), 401);
    // A client-credentials token has no auth_time (no user logged in): never meets max_age.
    let mut service = keycloak_access_token();
    service.as_object_mut().unwrap().remove("auth_time");
    assert_eq!(app.verify(Some(&sign(&app, header, &service)), "max_age=86400").await.status(), 401);
}

// --- Auth0 ------------------------------------------------------------------------------------

const AUTH0_ISS: &str = "https://example-tenant.us.auth0.com/";
const AUTH0_API: &str = "https://api.example.com/orders";

/// An Auth0 access token for a user, RBAC permissions on, with claims added by an Action.
fn auth0_user_token() -> Value {
    let t = now();
    json!({
        "https://example.com/roles": ["order-admin", "support"],
        "https://example.com/email": "alice@example.com",
        "iss": AUTH0_ISS,
        "sub": "auth0|64b7f0c2e4a1d3f5a6b7c8d9",
        "aud": [AUTH0_API, "https://example-tenant.us.auth0.com/userinfo"],
        "iat": t, "exp": t + 86400,
        "scope": "openid profile email",
        "azp": "Xk1Ab2Cd3Ef4Gh5Ij6Kl7Mn8Op9Qr0St",
        "permissions": ["read:orders", "write:orders"]
    })
}

#[tokio::test]
async fn auth0_permissions_are_the_scopes_and_namespaced_claims_are_reached_by_json_pointer() {
    let app = provider_app(&["auth0"]).await;
    let header = json!({"typ": "JWT"});
    let token = sign(&app, header.clone(), &auth0_user_token());

    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        identity(&r, &["x-auth-subject", "x-auth-client", "x-auth-roles", "x-auth-email"]),
        expect(&[
            ("x-auth-subject", Some("auth0|64b7f0c2e4a1d3f5a6b7c8d9")),
            ("x-auth-client", Some("Xk1Ab2Cd3Ef4Gh5Ij6Kl7Mn8Op9Qr0St")),
            ("x-auth-roles", Some("order-admin,support")),
            ("x-auth-email", Some("alice@example.com")),
        ])
    );

    assert_eq!(app.verify(Some(&token), "scope=read:orders").await.status(), 200);
    assert_eq!(app.verify(Some(&token), "scope=read:orders,write:orders").await.status(), 200);
    let r = app.verify(Some(&token), "scope=delete:orders").await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), insufficient_scope("delete:orders"));
    // scope_claims: [permissions] — the OIDC scopes in `scope` grant nothing here.
    assert_eq!(app.verify(Some(&token), "scope=openid").await.status(), 403);

    // A machine-to-machine token (client credentials grant).
    let t = now();
    let m2m = json!({
        "iss": AUTH0_ISS,
        "sub": "Xk1Ab2Cd3Ef4Gh5Ij6Kl7Mn8Op9Qr0St@clients",
        "aud": AUTH0_API,
        "iat": t, "exp": t + 86400,
        "gty": "client-credentials",
        "azp": "Xk1Ab2Cd3Ef4Gh5Ij6Kl7Mn8Op9Qr0St",
        "permissions": ["read:orders"]
    });
    let r = app.verify(Some(&sign(&app, header.clone(), &m2m)), "scope=read:orders").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "Xk1Ab2Cd3Ef4Gh5Ij6Kl7Mn8Op9Qr0St@clients");
    assert!(r.headers().get("x-auth-roles").is_none());

    // Auth0's iss ends with a slash; without it, it is another issuer.
    let mut no_slash = auth0_user_token();
    no_slash["iss"] = json!(AUTH0_ISS.trim_end_matches('/'));
    let r = app.verify(Some(&sign(&app, header, &no_slash)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("issuer not accepted"));
}

// --- Microsoft Entra ID -----------------------------------------------------------------------

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const ENTRA_API_APP_ID: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";

/// A v1 access token for a user (delegated permissions in `scp`, an app role in `roles`).
fn entra_v1_user_token() -> Value {
    let t = now();
    json!({
        "aud": "api://orders-api",
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": t, "nbf": t, "exp": t + 3900,
        "acr": "1",
        "aio": "AVQAq/8TAAAAx1y2z3",
        "amr": ["pwd", "mfa"],
        "appid": "0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
        "appidacr": "0",
        "family_name": "Doe",
        "given_name": "Alice",
        "ipaddr": "203.0.113.7",
        "name": "Alice Doe",
        "oid": "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0",
        "rh": "0.AQUA...",
        "roles": ["Orders.Admin"],
        "scp": "Orders.Read User.Read",
        "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
        "tid": TENANT,
        "unique_name": "alice@contoso.com",
        "upn": "alice@contoso.com",
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "1.0"
    })
}

/// A v2 access token of a daemon app (client credentials): application permissions in `roles`,
/// no `scp`, no user.
fn entra_v2_app_token() -> Value {
    let t = now();
    json!({
        "aud": ENTRA_API_APP_ID,
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "iat": t, "nbf": t, "exp": t + 3599,
        "aio": "E2ZgYJjn+X8=",
        "azp": "0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
        "azpacr": "1",
        "idtyp": "app",
        "oid": "2b3c4d5e-6f70-8192-a3b4-c5d6e7f80912",
        "rh": "0.AQUA...",
        "roles": ["Orders.Read.All"],
        "sub": "2b3c4d5e-6f70-8192-a3b4-c5d6e7f80912",
        "tid": TENANT,
        "uti": "0rZ5C-hxL0mEOJhnSd-nAA",
        "ver": "2.0"
    })
}

#[tokio::test]
async fn entra_v1_and_v2_tokens_are_two_issuers_with_scp_and_roles_as_scopes() {
    let app = provider_app(&["entra-v1", "entra-v2"]).await;
    // Entra's header also carries x5t (the key's thumbprint), which is never used.
    let header = json!({"typ": "JWT", "x5t": "nOo3ZDrODXEK1jKWhXslHR_KXEg"});
    let headers =
        ["x-auth-subject", "x-auth-tenant", "x-auth-user", "x-auth-username", "x-auth-roles", "x-auth-token-version"];

    let v1 = sign(&app, header.clone(), &entra_v1_user_token());
    let r = app.verify(Some(&v1), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        identity(&r, &headers),
        expect(&[
            ("x-auth-subject", Some("9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0")),
            ("x-auth-tenant", Some(TENANT)),
            ("x-auth-user", Some("alice@contoso.com")),
            ("x-auth-username", None),
            ("x-auth-roles", Some("Orders.Admin")),
            ("x-auth-token-version", Some("1.0")),
        ])
    );
    // Delegated permissions from the space-delimited scp string, app roles from roles.
    assert_eq!(app.verify(Some(&v1), "scope=Orders.Read").await.status(), 200);
    assert_eq!(app.verify(Some(&v1), "scope=Orders.Read%20Orders.Admin").await.status(), 200);
    let r = app.verify(Some(&v1), "scope=Orders.Write").await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), insufficient_scope("Orders.Write"));
    assert_eq!(app.verify(Some(&v1), "issuer=entra-v1").await.status(), 200);
    assert_eq!(app.verify(Some(&v1), "issuer=entra-v2").await.status(), 401);

    let v2 = sign(&app, header.clone(), &entra_v2_app_token());
    let r = app.verify(Some(&v2), "scope=Orders.Read.All").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        identity(&r, &headers),
        expect(&[
            ("x-auth-subject", Some("2b3c4d5e-6f70-8192-a3b4-c5d6e7f80912")),
            ("x-auth-tenant", Some(TENANT)),
            ("x-auth-user", None),
            ("x-auth-username", None),
            ("x-auth-roles", Some("Orders.Read.All")),
            ("x-auth-token-version", Some("2.0")),
        ])
    );
    assert_eq!(app.verify(Some(&v2), "scope=Orders.Read").await.status(), 403);
    assert_eq!(app.verify(Some(&v2), "issuer=entra-v2").await.status(), 200);
    assert_eq!(app.verify(Some(&v2), "issuer=entra-v1").await.status(), 401);

    // A v2 user token: preferred_username instead of upn, scp as in v1.
    let t = now();
    let v2_user = json!({
        "aud": ENTRA_API_APP_ID,
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "iat": t, "nbf": t, "exp": t + 3900,
        "azp": "0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
        "azpacr": "0",
        "name": "Alice Doe",
        "oid": "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0",
        "preferred_username": "alice@contoso.com",
        "scp": "Orders.Read",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": TENANT,
        "ver": "2.0"
    });
    let r = app.verify(Some(&sign(&app, header.clone(), &v2_user)), "scope=Orders.Read").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-username"], "alice@contoso.com");
    assert_eq!(r.headers()["x-auth-subject"], "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0");

    // Another tenant is another issuer.
    let mut other_tenant = entra_v1_user_token();
    other_tenant["iss"] = json!("https://sts.windows.net/99999999-8888-7777-6666-555555555555/");
    let r = app.verify(Some(&sign(&app, header.clone(), &other_tenant)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("issuer not accepted"));

    // A token for Microsoft Graph is not for this API.
    let mut graph = entra_v1_user_token();
    graph["aud"] = json!("00000003-0000-0000-c000-000000000000");
    let r = app.verify(Some(&sign(&app, header, &graph)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("audience not accepted"));
}

// --- Okta -------------------------------------------------------------------------------------

const OKTA_ISS: &str = "https://dev-123456.okta.com/oauth2/default";

#[tokio::test]
async fn okta_scp_array_grants_scopes_and_cid_names_the_client() {
    let app = provider_app(&["okta"]).await;
    // Okta's header has no typ.
    let header = json!({});
    let t = now();
    let user = json!({
        "ver": 1,
        "jti": "AT.Dv1mQ0o3Zq9cK2g7Rr8pYbLx3nEwTt5uVvWwXxYyZz0",
        "iss": OKTA_ISS,
        "aud": "api://default",
        "iat": t, "exp": t + 3600,
        "cid": "0oa1b2c3d4e5f6g7h8i9",
        "uid": "00u1a2b3c4d5e6f7g8h9",
        "scp": ["openid", "email", "orders:read"],
        "auth_time": t - 60,
        "sub": "alice@example.com",
        "groups": ["Everyone", "orders-admins"]
    });
    let token = sign(&app, header.clone(), &user);
    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        identity(&r, &["x-auth-subject", "x-auth-user-id", "x-auth-client", "x-auth-groups"]),
        expect(&[
            ("x-auth-subject", Some("alice@example.com")),
            ("x-auth-user-id", Some("00u1a2b3c4d5e6f7g8h9")),
            ("x-auth-client", Some("0oa1b2c3d4e5f6g7h8i9")),
            ("x-auth-groups", Some("Everyone,orders-admins")),
        ])
    );
    assert_eq!(app.verify(Some(&token), "scope=orders:read").await.status(), 200);
    assert_eq!(app.verify(Some(&token), "scope=openid,orders:read").await.status(), 200);
    let r = app.verify(Some(&token), "scope=orders:write").await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), insufficient_scope("orders:write"));

    // Client credentials: sub is the client id, no uid, no groups.
    let service = json!({
        "ver": 1, "jti": "AT.Qq1Ww2Ee3Rr4Tt5Yy6Uu7Ii8Oo9Pp0",
        "iss": OKTA_ISS, "aud": "api://default",
        "iat": t, "exp": t + 3600,
        "cid": "0oa9z8y7x6w5v4u3t2s1",
        "scp": ["orders:read", "orders:write"],
        "sub": "0oa9z8y7x6w5v4u3t2s1"
    });
    let r = app.verify(Some(&sign(&app, header.clone(), &service)), "scope=orders:write").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        identity(&r, &["x-auth-subject", "x-auth-user-id", "x-auth-client", "x-auth-groups"]),
        expect(&[
            ("x-auth-subject", Some("0oa9z8y7x6w5v4u3t2s1")),
            ("x-auth-user-id", None),
            ("x-auth-client", Some("0oa9z8y7x6w5v4u3t2s1")),
            ("x-auth-groups", None),
        ])
    );

    // A token of the org authorization server is not one of this API's.
    let mut org = user.clone();
    org["iss"] = json!("https://dev-123456.okta.com");
    org["aud"] = json!("https://dev-123456.okta.com");
    let r = app.verify(Some(&sign(&app, header, &org)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("issuer not accepted"));
}

// --- Amazon Cognito ---------------------------------------------------------------------------

const COGNITO_ISS: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123";
const COGNITO_CLIENT: &str = "1example23456789abcdefghij";

/// A Cognito access token: the app client in `client_id`, no `aud`.
fn cognito_access_token(client_id: &str) -> Value {
    let t = now();
    json!({
        "sub": "a1b2c3d4-0000-1111-2222-333344445555",
        "cognito:groups": ["admin", "staff"],
        "iss": COGNITO_ISS,
        "version": 2,
        "client_id": client_id,
        "origin_jti": "0c1d2e3f-aaaa-bbbb-cccc-ddddeeeeffff",
        "event_id": "7e8f9a0b-1111-2222-3333-444455556666",
        "token_use": "access",
        "scope": "orders/read openid email",
        "auth_time": t - 5,
        "exp": t + 3600,
        "iat": t,
        "jti": "5a6b7c8d-9999-8888-7777-666655554444",
        "username": "alice"
    })
}

#[tokio::test]
async fn cognito_access_tokens_are_matched_by_client_id_and_id_tokens_are_refused() {
    let app = provider_app(&["cognito"]).await;
    // Cognito's header: kid and alg only.
    let header = json!({});
    let token = sign(&app, header.clone(), &cognito_access_token(COGNITO_CLIENT));
    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        identity(&r, &["x-auth-subject", "x-auth-user", "x-auth-groups", "x-auth-client"]),
        expect(&[
            ("x-auth-subject", Some("a1b2c3d4-0000-1111-2222-333344445555")),
            ("x-auth-user", Some("alice")),
            ("x-auth-groups", Some("admin,staff")),
            ("x-auth-client", Some(COGNITO_CLIENT)),
        ])
    );
    assert_eq!(app.verify(Some(&token), "scope=orders/read").await.status(), 200);
    let r = app.verify(Some(&token), "scope=orders/write").await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), insufficient_scope("orders/write"));

    // An access token of another app client of the same pool.
    let other = sign(&app, header.clone(), &cognito_access_token("9other8client7id6abcdefghi"));
    let r = app.verify(Some(&other), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("audience not accepted"));
    // `?aud=` overrides are compared with client_id as well.
    assert_eq!(app.verify(Some(&other), "aud=9other8client7id6abcdefghi").await.status(), 200);
    assert_eq!(app.verify(Some(&token), "aud=9other8client7id6abcdefghi").await.status(), 401);

    // The ID token of the same sign-in: aud is the client, but there is no client_id.
    let t = now();
    let id_token = json!({
        "sub": "a1b2c3d4-0000-1111-2222-333344445555",
        "cognito:groups": ["admin", "staff"],
        "email_verified": true,
        "iss": COGNITO_ISS,
        "cognito:username": "alice",
        "origin_jti": "0c1d2e3f-aaaa-bbbb-cccc-ddddeeeeffff",
        "aud": COGNITO_CLIENT,
        "event_id": "7e8f9a0b-1111-2222-3333-444455556666",
        "token_use": "id",
        "auth_time": t - 5,
        "exp": t + 3600,
        "iat": t,
        "jti": "1f2e3d4c-9999-8888-7777-666655554444",
        "email": "alice@example.com"
    });
    let r = app.verify(Some(&sign(&app, header, &id_token)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("audience not accepted"));
}

// --- Dex --------------------------------------------------------------------------------------

const DEX_ISS: &str = "https://dex.example.com";

/// A Dex ID token with the email, profile, groups and federated:id scopes, from an LDAP connector.
fn dex_id_token(aud: Value) -> Value {
    let t = now();
    json!({
        "iss": DEX_ISS,
        "sub": "CiRjbj1hbGljZSxvdT1wZW9wbGUsZGM9ZXhhbXBsZSxkYz1vcmcSBGxkYXA",
        "aud": aud,
        "exp": t + 86400,
        "iat": t,
        "nonce": "n-0S6_WzA2Mj",
        "at_hash": "Zo9aM3sdk5n2YpsFqo1xKw",
        "c_hash": "9uBq2Lw1kXbe0mNqR6ZqXg",
        "email": "alice@example.com",
        "email_verified": true,
        "groups": ["admins", "developers"],
        "name": "Alice Ødegård",
        "preferred_username": "alice",
        "federated_claims": {"connector_id": "ldap", "user_id": "cn=alice,ou=people,dc=example,dc=org"}
    })
}

#[tokio::test]
async fn dex_id_token_delivers_email_groups_and_federated_claims() {
    let app = provider_app(&["dex"]).await;
    let header = json!({});
    let token = sign(&app, header.clone(), &dex_id_token(json!("orders-app")));
    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 200);
    let name = format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode("Alice Ødegård"));
    assert_eq!(
        identity(
            &r,
            &[
                "x-auth-subject",
                "x-auth-email",
                "x-auth-email-verified",
                "x-auth-name",
                "x-auth-groups",
                "x-auth-connector",
                "x-auth-upstream-user"
            ]
        ),
        expect(&[
            ("x-auth-subject", Some("CiRjbj1hbGljZSxvdT1wZW9wbGUsZGM9ZXhhbXBsZSxkYz1vcmcSBGxkYXA")),
            ("x-auth-email", Some("alice@example.com")),
            ("x-auth-email-verified", Some("true")),
            ("x-auth-name", Some(&name)),
            ("x-auth-groups", Some("admins,developers")),
            ("x-auth-connector", Some("ldap")),
            ("x-auth-upstream-user", Some("cn=alice,ou=people,dc=example,dc=org")),
        ])
    );

    // Policy by audience: the client id the token was issued to.
    assert_eq!(app.verify(Some(&token), "aud=orders-app").await.status(), 200);
    assert_eq!(app.verify(Some(&token), "aud=billing-app").await.status(), 401);
    // Dex tokens carry no scopes, so no scope can be required of them.
    let r = app.verify(Some(&token), "scope=groups").await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), insufficient_scope("groups"));

    // Cross-client trust: issued to orders-app (and another peer) at the request of login-app.
    for aud in [json!("orders-app"), json!(["kubernetes", "orders-app"])] {
        let mut cross = dex_id_token(aud);
        cross["azp"] = json!("login-app");
        assert_eq!(app.verify(Some(&sign(&app, header.clone(), &cross)), "").await.status(), 200);
    }
    // A token for another client only.
    let r = app.verify(Some(&sign(&app, header, &dex_id_token(json!("kubernetes")))), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), invalid_token("audience not accepted"));
}

// --- The documentation ------------------------------------------------------------------------

#[test]
fn every_yaml_example_in_docs_providers_md_passes_check_config() {
    let blocks = yaml_blocks();
    let mut names: Vec<String> = blocks.iter().flat_map(|b| issuer_names(b)).collect();
    names.sort();
    assert_eq!(names, ["auth0", "cognito", "dex", "entra-v1", "entra-v2", "keycloak", "okta"], "issuers documented");

    let dir = std::env::temp_dir().join(format!("jwtgate-providers-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let path = dir.join(format!("provider-{i}.yaml"));
        std::fs::write(&path, block).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "check-config refused docs block {i} ({:?}):\n{}\n{block}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().next(), Some("config ok"), "block {i}: {stdout}");
        for name in issuer_names(block) {
            assert!(stdout.contains(&format!("issuer {name}: ")), "block {i} summary lacks {name}: {stdout}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
