//! Runs every example of `docs/authorization.md`: each `/verify?...` line against the config block
//! of its section, with provider-shaped tokens that should be allowed and refused as the line says.
//! A query in the docs that no case here runs, or a case whose query the docs no longer show,
//! fails the test, so the docs cannot drift from what the gate does.

use jwtgate::algorithm::Algorithm;
use serde_json::{Value, json};

use crate::helpers::*;
use jwtgate::dev_issuer::DevIssuer;

const DOCS: &str = include_str!("../../docs/authorization.md");

/// One `## ` section of the docs: its config block and its `/verify?` queries.
struct Section {
    title: &'static str,
    config: &'static str,
    queries: Vec<&'static str>,
}

fn sections() -> Vec<Section> {
    DOCS.split("\n## ")
        .skip(1)
        .map(|body| {
            let title = body.lines().next().unwrap();
            let mut config = None;
            let mut rest = body;
            while let Some(start) = rest.find("```yaml\n") {
                let block = &rest[start + 8..];
                let end = block.find("\n```").expect("unterminated ```yaml block");
                if block[..end].contains("issuers:") {
                    assert!(config.is_none(), "two config blocks in `{title}`");
                    config = Some(&block[..end + 1]);
                }
                rest = &block[end + 4..];
            }
            let queries = body
                .lines()
                .filter(|l| l.starts_with("/verify?"))
                .map(|l| l.split_whitespace().next().unwrap().strip_prefix("/verify?").unwrap())
                .collect();
            Section { title, config: config.unwrap_or_else(|| panic!("no config block in `{title}`")), queries }
        })
        .collect()
}

/// A gate running a section's config, its issuer's keys taken from a development issuer.
async fn docs_app(config: &str) -> TestApp {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut config: Value = serde_yaml_ng::from_str(config).unwrap();
    config["listen"] = json!("127.0.0.1:0");
    for i in config["issuers"].as_array_mut().unwrap() {
        i["jwks_uri"] = json!(issuer.jwks_uri());
    }
    config["shutdown"] = json!({"grace_seconds": 1});
    let app = spawn_app_with(issuer, &serde_yaml_ng::to_string(&config).unwrap()).await;
    app.wait_ready().await;
    app
}

fn now() -> i64 {
    jwtgate::gate::unix_now()
}

fn sign(app: &TestApp, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "rs256-1"});
    app.issuer.sign_raw("rs256-1", Algorithm::RS256, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

/// A Keycloak access token (realm `shop`, Audience mapper adding orders-api).
fn keycloak(edit: impl FnOnce(&mut Value)) -> Value {
    let t = now();
    let mut c = json!({
        "exp": t + 300, "iat": t, "auth_time": t - 60, "jti": "onrtac:7d1e", "typ": "Bearer",
        "iss": "https://keycloak.example.com/realms/shop", "aud": ["orders-api", "account"],
        "sub": "5d8f2c1e-7a3b-4c9d-8e6f-1a2b3c4d5e6f", "azp": "shop-frontend", "acr": "1",
        "sid": "0b7e6a8c-1d2e-4f3a-9b8c-7d6e5f4a3b2c", "scope": "openid email profile",
        "realm_access": {"roles": ["default-roles-shop", "offline_access", "uma_authorization"]},
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "email_verified": true, "preferred_username": "alice", "email": "alice@example.com",
    });
    edit(&mut c);
    c
}

/// A Microsoft Entra ID v2 access token for the orders API.
fn entra(edit: impl FnOnce(&mut Value)) -> Value {
    let t = now();
    let mut c = json!({
        "aud": "6e74172b-be56-4843-9ff4-e66a39bb12e3",
        "iss": "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0",
        "iat": t, "nbf": t, "exp": t + 3600, "aio": "AXQAi/8TAAAA", "azp": "c44b4083-3bb0-49c1-b47d-974e53cbdf3c",
        "azpacr": "0", "name": "Alice Doe", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "preferred_username": "alice@contoso.com", "rh": "0.AXQA", "scp": "Orders.Read",
        "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ", "tid": "11111111-2222-3333-4444-555555555555",
        "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "2.0",
    });
    edit(&mut c);
    c
}

/// An Okta access token from the `default` custom authorization server, groups claim added.
fn okta(edit: impl FnOnce(&mut Value)) -> Value {
    let t = now();
    let mut c = json!({
        "ver": 1, "jti": "AT.q0FJ2-Xc3bA", "iss": "https://dev-123456.okta.com/oauth2/default",
        "aud": "api://default", "iat": t, "exp": t + 3600, "cid": "0oa1b2c3d4e5f6g7h8i9",
        "uid": "00u1a2b3c4d5e6f7g8h9", "scp": ["openid", "orders:read"], "auth_time": t - 30,
        "sub": "alice@example.com", "groups": ["Everyone", "orders-support"],
    });
    edit(&mut c);
    c
}

/// An Auth0 access token for the orders API, RBAC permissions and a namespaced roles claim.
fn auth0(edit: impl FnOnce(&mut Value)) -> Value {
    let t = now();
    let mut c = json!({
        "https://example.com/roles": ["admin"],
        "iss": "https://example-tenant.us.auth0.com/", "sub": "auth0|64b7f0c2a1b2c3d4e5f6a7b8",
        "aud": ["https://api.example.com/orders", "https://example-tenant.us.auth0.com/userinfo"],
        "iat": t, "exp": t + 86400, "azp": "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe",
        "scope": "openid profile email", "permissions": ["read:orders", "delete:orders"],
    });
    edit(&mut c);
    c
}

/// One docs query, and tokens with the answer each must get: (what the token is, claims, method,
/// expected status).
type Case = (&'static str, Vec<(&'static str, Value, &'static str, u16)>);

fn roles(path: &[&str], value: Value) -> impl FnOnce(&mut Value) {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    move |c: &mut Value| {
        let mut at = c;
        for p in &path {
            at = &mut at[p.as_str()];
        }
        *at = value;
    }
}

fn cases() -> Vec<Case> {
    let admin = || keycloak(roles(&["realm_access", "roles"], json!(["default-roles-shop", "admin"])));
    let orders_admin = |client: &str| {
        let client = client.to_string();
        keycloak(move |c| c["resource_access"][client] = json!({"roles": ["orders-admin"]}))
    };
    let t = now();
    vec![
        (
            "claim.realm_access.roles=admin",
            vec![("realm admin", admin(), "GET", 200), ("plain user", keycloak(|_| {}), "GET", 403)],
        ),
        (
            "claim.resource_access.orders-api.roles=orders-admin",
            vec![
                ("client role", orders_admin("orders-api"), "GET", 200),
                ("no client roles", keycloak(|_| {}), "GET", 403),
            ],
        ),
        (
            "claim./resource_access/orders.api/roles=orders-admin",
            vec![
                ("dotted client id", orders_admin("orders.api"), "GET", 200),
                ("other client", orders_admin("orders-api"), "GET", 403),
            ],
        ),
        (
            "claim.realm_access.roles=admin,auditor&claim.email_verified=true",
            vec![
                ("admin, verified", admin(), "GET", 200),
                ("auditor, verified", keycloak(roles(&["realm_access", "roles"], json!(["auditor"]))), "GET", 200),
                (
                    "admin, unverified",
                    keycloak(|c| {
                        c["realm_access"]["roles"] = json!(["admin"]);
                        c["email_verified"] = json!(false);
                    }),
                    "GET",
                    403,
                ),
            ],
        ),
        (
            "policy=orders-write",
            vec![
                ("reader, GET", keycloak(|_| {}), "GET", 200),
                ("reader, DELETE", keycloak(|_| {}), "DELETE", 403),
                ("orders-admin, DELETE", orders_admin("orders-api"), "DELETE", 200),
            ],
        ),
        (
            "claim.realm_access.roles=admin&acr=gold&max_age=300",
            vec![
                (
                    "admin, gold, 60 s ago",
                    keycloak(|c| {
                        c["realm_access"]["roles"] = json!(["admin"]);
                        c["acr"] = json!("gold");
                        c["auth_time"] = json!(t - 60);
                    }),
                    "GET",
                    200,
                ),
                (
                    "admin, silver",
                    keycloak(|c| {
                        c["realm_access"]["roles"] = json!(["admin"]);
                        c["acr"] = json!("silver");
                    }),
                    "GET",
                    401,
                ),
                (
                    "admin, gold, an hour ago",
                    keycloak(|c| {
                        c["realm_access"]["roles"] = json!(["admin"]);
                        c["acr"] = json!("gold");
                        c["auth_time"] = json!(t - 3600);
                    }),
                    "GET",
                    401,
                ),
            ],
        ),
        (
            "claim.roles=Orders.Admin",
            vec![
                ("app role", entra(|c| c["roles"] = json!(["Orders.Admin", "Orders.Read.All"])), "GET", 200),
                ("no roles", entra(|_| {}), "GET", 403),
            ],
        ),
        (
            "claim.groups=0f3c5b2a-8d7e-4c1b-9a6f-2e4d8c7b1a09",
            vec![
                (
                    "group member",
                    entra(|c| {
                        c["groups"] =
                            json!(["a1b2c3d4-0000-0000-0000-000000000000", "0f3c5b2a-8d7e-4c1b-9a6f-2e4d8c7b1a09"])
                    }),
                    "GET",
                    200,
                ),
                (
                    "groups overage",
                    entra(|c| {
                        c["_claim_names"] = json!({"groups": "src1"});
                        c["_claim_sources"] =
                            json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}});
                    }),
                    "GET",
                    403,
                ),
            ],
        ),
        (
            "claim.groups=orders-admins,orders-support",
            vec![
                ("orders-support", okta(|_| {}), "GET", 200),
                ("Everyone only", okta(|c| c["groups"] = json!(["Everyone"])), "GET", 403),
            ],
        ),
        (
            "claim.permissions=delete:orders",
            vec![
                ("with permission", auth0(|_| {}), "GET", 200),
                ("read only", auth0(|c| c["permissions"] = json!(["read:orders"])), "GET", 403),
            ],
        ),
        (
            "claim./https:~1~1example.com~1roles=admin",
            vec![
                ("role admin", auth0(|_| {}), "GET", 200),
                (
                    "no roles claim",
                    auth0(|c| _ = c.as_object_mut().unwrap().remove("https://example.com/roles")),
                    "GET",
                    403,
                ),
            ],
        ),
    ]
}

#[tokio::test]
async fn every_query_in_docs_authorization_md_answers_as_documented() {
    let sections = sections();
    let cases = cases();
    let documented: Vec<&str> = sections.iter().flat_map(|s| s.queries.iter().copied()).collect();
    for q in &documented {
        assert!(cases.iter().any(|(c, _)| c == q), "docs/authorization.md shows `{q}`, which no case runs");
    }
    for (q, _) in &cases {
        assert!(documented.contains(q), "a case runs `{q}`, which docs/authorization.md no longer shows");
    }
    for section in &sections {
        let app = docs_app(section.config).await;
        for query in &section.queries {
            let (_, tokens) = cases.iter().find(|(c, _)| c == query).unwrap();
            for (what, claims, method, status) in tokens {
                let r = app
                    .client
                    .get(format!("{}/verify?{query}", app.url))
                    .bearer_auth(sign(&app, claims))
                    .header("X-Original-Method", *method)
                    .header("X-Original-URL", "https://shop.example.com/orders/7")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), *status, "{}: `{query}` with {what} ({method})", section.title);
            }
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn the_step_up_challenge_shown_in_the_docs_is_the_one_sent() {
    let shown = DOCS
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .expect("docs/authorization.md shows a step-up challenge");
    let section = sections().into_iter().find(|s| s.title.starts_with("Keycloak")).unwrap();
    let app = docs_app(section.config).await;
    let silver = keycloak(|c| {
        c["realm_access"]["roles"] = json!(["admin"]);
        c["acr"] = json!("silver");
    });
    let r = app.verify(Some(&sign(&app, &silver)), "claim.realm_access.roles=admin&acr=gold&max_age=300").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], shown);
}

#[test]
fn every_config_block_in_docs_authorization_md_passes_check_config() {
    for section in sections() {
        let dir = std::env::temp_dir().join(format!("jwtgate-authz-docs-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, section.config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{}: {}", section.title, String::from_utf8_lossy(&out.stderr));
    }
}
