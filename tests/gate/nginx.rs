//! jwtgate behind a real nginx, configured the way ingress-nginx renders `auth-url`,
//! `auth-response-headers`, `auth-keepalive` and `auth-cache-key` (both the `auth_request` flavour
//! and the Lua keepalive flavour), and the plain-nginx example `examples/nginx/jwtgate.conf`.
//!
//! Every Ingress here is rendered from the annotations of `examples/ingress.yaml`, with the
//! auth-url's host and port replaced by the test gate's address.

use std::net::SocketAddr;

use base64::Engine;
use jwtgate::config::Config;
use jwtgate::dev_issuer::{DevIssuer, Mode};
use jwtgate::policy::Policy;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::nginx_support::*;

/// Generates one `#[tokio::test]` per flavour for `async fn $name(flavour: Flavour)`.
macro_rules! for_both_flavours {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn auth_request() {
                super::$name(super::Flavour::AuthRequest).await
            }
            #[tokio::test]
            async fn lua_keepalive() {
                super::$name(super::Flavour::LuaKeepalive).await
            }
        }
    )*};
}

for_both_flavours!(
    valid_token_reaches_the_app_with_its_identity_headers,
    forged_identity_headers_are_replaced_or_removed,
    refusals_reach_the_client_with_the_gate_status,
    ingresses_with_different_policies_share_one_gate,
    gate_down_or_undecided_is_500_never_200,
    request_body_never_reaches_the_gate,
    auth_cache_entry_expires_with_the_token,
    refusals_are_never_cached,
    claim_requirements_and_step_up_per_ingress,
);

const ORDERS: &str = "orders.test";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A request to `nginx` for `host` (the Ingress's server_name) and `path`, with a bearer token.
fn request(nginx: &Nginx, host: &str, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let mut req = client().get(nginx.url(path)).header(http::header::HOST, host);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req
}

/// Claims for the example Ingress's policy (`aud=orders-api&scope=orders:read`).
fn orders_claims(app: &TestApp, sub: &str, ttl: i64) -> Value {
    let mut claims = app.issuer.claims(sub, AUD, ttl);
    claims["scope"] = json!("orders:read profile");
    claims
}

/// The gate, the echo app and nginx serving the example Ingress as `orders.test`.
async fn example_stack(flavour: Flavour) -> (TestApp, Echo, Nginx) {
    let app = spawn_app().await;
    let echo = Echo::start().await;
    let example = example_ingress();
    let spec = example.spec(ORDERS, example.auth_url_at(app.addr));
    let nginx = ingress_nginx(vec![spec], flavour, echo.addr).await;
    (app, echo, nginx)
}

async fn valid_token_reaches_the_app_with_its_identity_headers(flavour: Flavour) {
    let (app, echo, nginx) = example_stack(flavour).await;
    let mut claims = orders_claims(&app, "alice", 300);
    claims["email"] = json!("zoë@example.com");
    claims["realm_access"] = json!({"roles": ["admin", "user"]});
    let token = app.sign("es256-1", &claims);

    let r = request(&nginx, ORDERS, "/orders/7?expand=items", Some(&token))
        .header("X-Request-ID", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{flavour:?}\n{}", nginx.log());
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["uri"], "/orders/7?expand=items");
    assert_eq!(echoed(&seen, "x-auth-subject"), ["alice"]);
    assert_eq!(echoed(&seen, "x-auth-issuer"), [app.issuer.issuer()]);
    assert_eq!(echoed(&seen, "x-auth-roles"), ["admin,user"]);
    assert_eq!(echoed(&seen, "x-request-id"), ["req-42"]);
    // A non-ASCII claim crosses nginx in jwtgate's lossless encoding (RFC 2047 encoded word).
    let email = echoed(&seen, "x-auth-email");
    let b64 = email[0].strip_prefix("=?UTF-8?B?").and_then(|s| s.strip_suffix("?=")).expect("encoded word");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), "zoë@example.com".as_bytes());
    assert_eq!(echo.hits(), 1);
}

async fn forged_identity_headers_are_replaced_or_removed(flavour: Flavour) {
    let (app, echo, nginx) = example_stack(flavour).await;
    // No email and no roles in this token: those headers must not reach the app at all.
    let token = app.sign("rs256-1", &orders_claims(&app, "alice", 300));

    let r = request(&nginx, ORDERS, "/orders", Some(&token))
        .header("X-Auth-Subject", "admin")
        .header("x-auth-subject", "root")
        .header("X-Auth-Issuer", "https://evil.example")
        .header("x-auth-email", "root@evil.example")
        .header("X-AUTH-ROLES", "admin")
        // Frameworks that map `_` to `-` must not see this either; nginx drops it
        // (underscores_in_headers off, ingress-nginx's default).
        .header("X_Auth_Roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{flavour:?}\n{}", nginx.log());
    let seen: Value = r.json().await.unwrap();
    assert_eq!(echoed(&seen, "x-auth-subject"), ["alice"], "{seen}");
    assert_eq!(echoed(&seen, "x-auth-issuer"), [app.issuer.issuer()], "{seen}");
    assert!(echoed(&seen, "x-auth-email").is_empty(), "forged email reached the app: {seen}");
    assert!(echoed(&seen, "x-auth-roles").is_empty(), "forged roles reached the app: {seen}");
    assert!(echoed(&seen, "x_auth_roles").is_empty(), "underscore variant reached the app: {seen}");
    assert_eq!(echo.hits(), 1);

    // Forged headers without any token never get through at all.
    let r = request(&nginx, ORDERS, "/orders", None).header("X-Auth-Subject", "admin").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(echo.hits(), 1);
}

async fn refusals_reach_the_client_with_the_gate_status(flavour: Flavour) {
    let (app, echo, nginx) = example_stack(flavour).await;
    let expired = app.sign("rs256-1", &orders_claims(&app, "u", -120));
    let mut other_aud = app.issuer.claims("u", "billing-api", 300);
    other_aud["scope"] = json!("orders:read");
    let other_aud = app.sign("rs256-1", &other_aud);
    let no_scope = app.sign("rs256-1", &app.issuer.claims("u", AUD, 300));
    let garbage = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

    let cases: [(&str, Option<&str>, u16, &str); 5] = [
        ("no token", None, 401, r#"Bearer realm="jwtgate""#),
        ("expired", Some(&expired), 401, r#"error_description="token expired""#),
        ("wrong audience", Some(&other_aud), 401, r#"error_description="audience not accepted""#),
        ("malformed", Some(garbage), 401, r#"error="invalid_token""#),
        ("scope missing", Some(&no_scope), 403, r#"error="insufficient_scope", scope="orders:read""#),
    ];
    for (what, token, status, challenge) in cases {
        // What the gate itself answers.
        let direct = app.verify(token, "aud=orders-api&scope=orders:read").await;
        assert_eq!(direct.status(), status, "{what}");
        let direct_challenge = direct.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(direct_challenge.contains(challenge), "{what}: {direct_challenge}");

        // What the client gets through nginx.
        let r = request(&nginx, ORDERS, "/orders", token).send().await.unwrap();
        assert_eq!(r.status(), status, "{flavour:?} {what}\n{}", nginx.log());
        let through: Vec<_> = r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
        match (flavour, status) {
            // auth_request copies WWW-Authenticate to the client on 401 (and only on 401).
            (Flavour::AuthRequest, 401) => assert_eq!(through, [direct_challenge.as_str()], "{what}"),
            // On 403, and on every refusal of ingress-nginx's Lua keepalive path
            // (`ngx.exit(res.status)`), only the status reaches the client.
            _ => assert!(through.is_empty(), "{flavour:?} {what}: {through:?}"),
        }
    }
    assert_eq!(echo.hits(), 0, "a refused request reached the app");
}

async fn ingresses_with_different_policies_share_one_gate(flavour: Flavour) {
    // One gate trusting two issuers: `main` (audience orders-api) and `partner` (partner-api).
    let main = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let partner = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let partner_entry = format!(
        "  - name: partner\n    issuer: \"{}\"\n    audiences: [\"partner-api\"]\n    algorithms: [\"ES256\"]\n",
        partner.issuer()
    );
    let yaml =
        config_yaml(&main, "", "").replacen("claims_to_headers:", &format!("{partner_entry}claims_to_headers:"), 1);
    let app = spawn_app_with(main, &yaml).await;
    app.wait_ready().await;
    let echo = Echo::start().await;
    let example = example_ingress();
    let specs = vec![
        example.spec("orders.test", example.auth_url_at(app.addr)), // aud=orders-api&scope=orders:read
        example.spec("billing.test", example.auth_url_with(app.addr, "aud=billing-api")),
        example.spec("partner.test", example.auth_url_with(app.addr, "issuer=partner")),
        example.spec("admin.test", example.auth_url_with(app.addr, "issuer=main&scope=orders:admin")),
    ];
    let nginx = ingress_nginx(specs, flavour, echo.addr).await;

    let orders = app.sign("rs256-1", &orders_claims(&app, "alice", 300));
    let billing = app.sign("rs256-1", &app.issuer.claims("bob", "billing-api", 300));
    let partner_token = partner.sign("es256-1", &partner.claims("carol", "partner-api", 300));
    let mut admin = orders_claims(&app, "dave", 300);
    admin["scope"] = json!("orders:read orders:admin");
    let admin = app.sign("eddsa-1", &admin);

    let tokens = [("orders", &orders), ("billing", &billing), ("partner", &partner_token), ("admin", &admin)];
    let token = |name: &str| tokens.iter().find(|(n, _)| *n == name).unwrap().1.as_str();
    // (Ingress host, token, status, subject the app sees)
    let expect = [
        ("orders.test", "orders", 200, "alice"),
        ("orders.test", "billing", 401, ""),
        ("orders.test", "partner", 401, ""),
        ("orders.test", "admin", 200, "dave"),
        ("billing.test", "billing", 200, "bob"),
        ("billing.test", "orders", 401, ""),
        ("partner.test", "partner", 200, "carol"),
        ("partner.test", "orders", 401, ""),
        ("admin.test", "admin", 200, "dave"),
        ("admin.test", "orders", 403, ""),
        ("admin.test", "partner", 401, ""),
    ];
    for (host, name, status, subject) in expect {
        let r = request(&nginx, host, "/", Some(token(name))).send().await.unwrap();
        assert_eq!(r.status(), status, "{flavour:?} {host} with the {name} token\n{}", nginx.log());
        if status == 200 {
            let seen: Value = r.json().await.unwrap();
            assert_eq!(echoed(&seen, "x-auth-subject"), [subject], "{host} with the {name} token");
        }
    }
    assert_eq!(echo.hits(), 5);
}

async fn gate_down_or_undecided_is_500_never_200(flavour: Flavour) {
    let app = spawn_app().await;
    // A gate that cannot decide: its issuer never serves keys, so it answers 503.
    let (undecided, undecided_token) = undecided_gate().await;
    assert_eq!(undecided.verify(Some(&undecided_token), "").await.status(), 503, "premise: the gate answers 503");

    let echo = Echo::start().await;
    let example = example_ingress();
    let down = closed_addr();
    let specs = vec![
        example.spec("down.test", example.auth_url_at(down)),
        example.spec("undecided.test", example.auth_url_at(undecided.addr)),
        // A policy the gate does not understand: 400 from the gate.
        example.spec("typo.test", example.auth_url_with(app.addr, "audience=orders-api")),
    ];
    let nginx = ingress_nginx(specs, flavour, echo.addr).await;
    let token = app.sign("rs256-1", &orders_claims(&app, "alice", 300));
    assert_eq!(app.verify(Some(&token), "audience=orders-api").await.status(), 400, "premise: bad policy is 400");

    for (host, token) in [("down.test", &token), ("undecided.test", &undecided_token), ("typo.test", &token)] {
        let r = request(&nginx, host, "/", Some(token)).send().await.unwrap();
        assert_eq!(r.status(), 500, "{flavour:?} {host}\n{}", nginx.log());
    }
    assert_eq!(echo.hits(), 0, "a request reached the app without the gate's 200");
}

/// A gate whose only issuer never serves its keys (so it answers 503), and a token of that issuer
/// meeting the example policy.
async fn undecided_gate() -> (TestApp, String) {
    let broken = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    broken.set_mode(Mode::Error);
    let mut claims = broken.claims("u", AUD, 300);
    claims["scope"] = json!("orders:read");
    let token = broken.sign("rs256-1", &claims);
    let yaml = config_yaml(&broken, "", "");
    (spawn_app_with(broken, &yaml).await, token)
}

async fn request_body_never_reaches_the_gate(flavour: Flavour) {
    let app = spawn_app().await;
    let tap = Tap::start(app.addr).await;
    let echo = Echo::start().await;
    let example = example_ingress();
    let nginx = ingress_nginx(vec![example.spec(ORDERS, example.auth_url_at(tap.addr))], flavour, echo.addr).await;
    let token = app.sign("rs256-1", &orders_claims(&app, "alice", 300));
    // Larger than nginx's client_body_buffer_size, so nginx spools it to a temp file too.
    let body = "BODY-MARKER-".repeat(2000);

    for token in [Some(token.as_str()), None] {
        let mut req = client()
            .post(nginx.url("/orders/items?id=7"))
            .header(http::header::HOST, ORDERS)
            .header("X-Forwarded-Proto", "https")
            .header("X-Request-ID", "req-body-1")
            .body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        if token.is_some() {
            assert_eq!(r.status(), 200, "{flavour:?}\n{}", nginx.log());
            let seen: Value = r.json().await.unwrap();
            assert_eq!(seen["method"], "POST");
            assert_eq!(seen["body"].as_str().unwrap().len(), body.len(), "the app gets the whole body");
        } else {
            assert_eq!(r.status(), 401, "{flavour:?}\n{}", nginx.log());
        }
    }

    if flavour == Flavour::LuaKeepalive {
        assert_eq!(tap.connections(), 1, "auth-keepalive reuses one connection to the gate");
    }
    let sent = tap.sent();
    assert!(
        !sent.contains("BODY-MARKER"),
        "{flavour:?}: the body reached the gate:\n{}",
        sent.chars().take(2000).collect::<String>()
    );
    // With no body, what nginx sent is request heads only, one after another.
    let heads: Vec<&str> = sent.split("\r\n\r\n").filter(|h| !h.is_empty()).collect();
    assert_eq!(heads.len(), 2, "{flavour:?}: two requests to the gate:\n{sent}");
    for head in heads {
        let request_line = head.lines().next().unwrap();
        assert!(
            request_line.starts_with("GET /verify?aud=orders-api&scope=orders:read HTTP/1.1"),
            "{flavour:?}: {request_line}"
        );
        let has = |name: &str| head.lines().skip(1).any(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")));
        let value = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        assert!(!has("content-length"), "{flavour:?}: {head}");
        assert!(!has("transfer-encoding"), "{flavour:?}: {head}");
        // ingress-nginx clears the client's X-Forwarded-Proto on the auth request.
        assert!(!has("x-forwarded-proto"), "{flavour:?}: {head}");
        assert_eq!(value("x-original-url").as_deref(), Some("http://orders.test/orders/items?id=7"), "{head}");
        assert_eq!(value("x-original-method").as_deref(), Some("POST"), "{head}");
        assert_eq!(value("x-request-id").as_deref(), Some("req-body-1"), "{head}");
    }
}

async fn auth_cache_entry_expires_with_the_token(flavour: Flavour) {
    // No leeway, so the token is refused as soon as it expires.
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, &issuer_keys("leeway_seconds: 0"), "");
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    let echo = Echo::start().await;
    let example = example_ingress();
    let nginx =
        ingress_nginx(vec![example.cached_spec(ORDERS, example.auth_url_at(app.addr))], flavour, echo.addr).await;

    let claims = orders_claims(&app, "alice", 3);
    let exp = claims["exp"].as_i64().unwrap();
    let token = app.sign("rs256-1", &claims);
    let direct = app.verify(Some(&token), "aud=orders-api&scope=orders:read").await;
    let accel: i64 = direct.headers()["x-accel-expires"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&accel), "premise: X-Accel-Expires is the token's remaining lifetime, got {accel}");

    let before = decisions(&app.metrics().await);
    let r = request(&nginx, ORDERS, "/", Some(&token)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{flavour:?}\n{}", nginx.log());
    assert_eq!(decisions(&app.metrics().await), before + 1.0, "the first request asks the gate");
    let r = request(&nginx, ORDERS, "/", Some(&token)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        decisions(&app.metrics().await),
        before + 1.0,
        "{flavour:?}: the second request is answered from nginx's auth cache (nginx honours X-Accel-Expires \
         only when it precedes Cache-Control: private before nginx 1.23)"
    );
    let seen: Value = r.json().await.unwrap();
    assert_eq!(echoed(&seen, "x-auth-subject"), ["alice"], "the cached answer carries the identity");

    // Once the token has expired, so has nginx's entry: the gate is asked again and refuses.
    while jwtgate::gate::unix_now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = request(&nginx, ORDERS, "/", Some(&token)).send().await.unwrap();
    assert_eq!(r.status(), 401, "{flavour:?}: served from cache after the token expired\n{}", nginx.log());
    assert_eq!(decisions(&app.metrics().await), before + 2.0);
    assert_eq!(echo.hits(), 2);
}

async fn refusals_are_never_cached(flavour: Flavour) {
    let app = spawn_app().await;
    let (undecided, broken_token) = undecided_gate().await;

    let echo = Echo::start().await;
    let example = example_ingress();
    let specs = vec![
        example.cached_spec("orders.test", example.auth_url_at(app.addr)),
        example.cached_spec("typo.test", example.auth_url_with(app.addr, "audience=orders-api")),
        example.cached_spec("undecided.test", example.auth_url_at(undecided.addr)),
    ];
    // ingress-nginx's default duration lists 401: only X-Accel-Expires: 0 keeps refusals out.
    let specs: Vec<_> =
        specs.into_iter().map(|s| IngressSpec { cache_duration: vec!["200 202 401 5m".into()], ..s }).collect();
    let nginx = ingress_nginx(specs, flavour, echo.addr).await;

    let valid = app.sign("rs256-1", &orders_claims(&app, "alice", 300));
    let expired = app.sign("rs256-1", &orders_claims(&app, "alice", -120));
    let no_scope = app.sign("rs256-1", &app.issuer.claims("alice", AUD, 300));

    // Premise: every refusal says "do not cache".
    for (token, query, gate) in [
        (None, "", &app),
        (Some(expired.as_str()), "", &app),
        (Some(no_scope.as_str()), "scope=orders:read", &app),
        (Some(valid.as_str()), "audience=x", &app),
        (Some(broken_token.as_str()), "", &undecided),
    ] {
        let r = gate.verify(token, query).await;
        assert_ne!(r.status(), 200);
        assert_eq!(r.headers()["x-accel-expires"], "0", "{}", r.status());
        assert_eq!(r.headers()["cache-control"], "no-store", "{}", r.status());
    }

    // The cache is on: a 200 is answered from it the second time.
    let before = decisions(&app.metrics().await);
    for _ in 0..2 {
        assert_eq!(request(&nginx, "orders.test", "/", Some(&valid)).send().await.unwrap().status(), 200);
    }
    assert_eq!(decisions(&app.metrics().await), before + 1.0, "{flavour:?}: the 200 was not cached\n{}", nginx.log());

    // Refusals are asked afresh every time.
    let cases = [
        ("orders.test", None, 401, &app),
        ("orders.test", Some(&expired), 401, &app),
        ("orders.test", Some(&no_scope), 403, &app),
        ("typo.test", Some(&valid), 500, &app),
        ("undecided.test", Some(&broken_token), 500, &undecided),
    ];
    for (host, token, status, gate) in cases {
        let before = decisions(&gate.metrics().await);
        for _ in 0..3 {
            let r = request(&nginx, host, "/", token.map(|t| t.as_str())).send().await.unwrap();
            assert_eq!(r.status(), status, "{flavour:?} {host}\n{}", nginx.log());
        }
        assert_eq!(decisions(&gate.metrics().await), before + 3.0, "{flavour:?} {host}: a {status} was cached");
    }
    assert_eq!(echo.hits(), 2);
}

#[tokio::test]
async fn example_ingress_matches_the_gate_config_the_nginx_tests_use() {
    let example = example_ingress();
    let doc = &example.doc;
    assert_eq!(doc["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(doc["kind"], "Ingress");

    // auth-response-headers lists exactly the headers of claims_to_headers, so every identity
    // header a client could forge is overwritten or removed by nginx.
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = Config::from_yaml(&config_yaml(&issuer, "", "")).unwrap();
    let mut configured: Vec<String> = config.claims_to_headers.iter().map(|c| c.header.as_str().to_string()).collect();
    let mut listed: Vec<String> = example.response_headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    configured.sort();
    listed.sort();
    assert_eq!(listed, configured);
    // Canonical Title-Case, as jwtgate sends them (see
    // lua_keepalive_matches_response_header_names_case_sensitively).
    for h in &example.response_headers {
        let canonical: String = h
            .split('-')
            .map(|w| w[..1].to_ascii_uppercase() + &w[1..].to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("-");
        assert_eq!(h, &canonical, "{:?}", example.response_headers);
    }

    // auth-url: the in-cluster Service, /verify, and a query that is a valid policy.
    let url = &example.auth_url;
    assert_eq!(url.scheme(), "http");
    assert_eq!(url.host_str(), Some("jwtgate.jwtgate.svc.cluster.local"));
    assert_eq!(url.port(), Some(8080));
    assert_eq!(url.path(), "/verify");
    let policy = Policy::parse(url.query(), &config).expect("the example's policy parses");
    assert_eq!(policy.audiences, Some(vec!["orders-api".to_string()]));
    assert_eq!(policy.scopes, ["orders:read"]);
    assert_eq!(policy.audiences.as_ref().unwrap()[0], AUD, "the nginx tests' tokens carry this audience");

    // The cache is keyed by the token, and keepalive is on.
    assert!(example.cache_key.contains("$http_authorization"), "{}", example.cache_key);
    assert!(example.keepalive > 0);
    assert!(!example.cache_duration.is_empty());
}

/// ingress-nginx's keepalive path reads the auth answer's headers from a Lua table keyed by the
/// names as they came over the wire, and jwtgate sends them in canonical Title-Case: an
/// `auth-response-headers` entry spelled `x-auth-issuer` finds nothing there (the identity is lost,
/// and a forged header is still removed); `auth_request` matches names case-insensitively.
#[tokio::test]
async fn lua_keepalive_matches_response_header_names_case_sensitively() {
    let app = spawn_app().await;
    let echo = Echo::start().await;
    let example = example_ingress();
    let mut spec = example.spec(ORDERS, example.auth_url_at(app.addr));
    spec.response_headers = vec!["X-Auth-Subject".into(), "x-auth-issuer".into()];
    let token = app.sign("rs256-1", &orders_claims(&app, "alice", 300));
    for flavour in [Flavour::AuthRequest, Flavour::LuaKeepalive] {
        let nginx = ingress_nginx(vec![spec.clone()], flavour, echo.addr).await;
        let r = request(&nginx, ORDERS, "/", Some(&token)).header("X-Auth-Subject", "admin").send().await.unwrap();
        assert_eq!(r.status(), 200, "{flavour:?}\n{}", nginx.log());
        let seen: Value = r.json().await.unwrap();
        assert_eq!(echoed(&seen, "x-auth-subject"), ["alice"], "{flavour:?}");
        let issuer = echoed(&seen, "x-auth-issuer");
        match flavour {
            Flavour::AuthRequest => assert_eq!(issuer, [app.issuer.issuer()]),
            Flavour::LuaKeepalive => assert!(issuer.is_empty(), "{issuer:?}"),
        }
    }
}

#[tokio::test]
async fn plain_nginx_example_config_protects_an_app() {
    let app = spawn_app().await;
    let echo = Echo::start().await;
    let tap = Tap::start(app.addr).await;
    let nginx = plain_example_nginx(tap.addr, echo.addr).await;

    let mut claims = orders_claims(&app, "alice", 300);
    claims["email"] = json!("alice@example.com");
    let token = app.sign("rs256-1", &claims);
    let r = client()
        .get(nginx.url("/orders"))
        .bearer_auth(&token)
        .header("X-Auth-Subject", "admin")
        .header("X-Auth-Roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", nginx.log());
    let seen: Value = r.json().await.unwrap();
    assert_eq!(echoed(&seen, "x-auth-subject"), ["alice"]);
    assert_eq!(echoed(&seen, "x-auth-issuer"), [app.issuer.issuer()]);
    assert_eq!(echoed(&seen, "x-auth-email"), ["alice@example.com"]);
    assert!(echoed(&seen, "x-auth-roles").is_empty(), "{seen}");

    let r = client().get(nginx.url("/orders")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="jwtgate""#);

    let expired = app.sign("rs256-1", &orders_claims(&app, "alice", -120));
    let r = client().get(nginx.url("/orders")).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains(r#"error_description="token expired""#));

    // The example passes the insufficient_scope challenge on 403 as well.
    let no_scope = app.sign("rs256-1", &app.issuer.claims("alice", AUD, 300));
    let r = client().get(nginx.url("/orders")).bearer_auth(&no_scope).send().await.unwrap();
    assert_eq!(r.status(), 403, "{}", nginx.log());
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges, [r#"Bearer realm="jwtgate", error="insufficient_scope", scope="orders:read""#]);
    assert_eq!(echo.hits(), 1);
    // jwtgate's answers have no body, so auth_request keeps the upstream connection alive.
    assert_eq!(tap.connections(), 1, "the example's keepalive to jwtgate is used");

    // With jwtgate down the example answers 500.
    let down = plain_example_nginx(closed_addr(), echo.addr).await;
    let r = client().get(down.url("/orders")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 500, "{}", down.log());
    assert_eq!(echo.hits(), 1);
}

/// nginx running exactly `examples/nginx/jwtgate.conf`, its placeholders replaced.
async fn plain_example_nginx(gate: SocketAddr, app: SocketAddr) -> Nginx {
    let template = std::fs::read_to_string(EXAMPLE_NGINX_CONF).expect("examples/nginx/jwtgate.conf");
    Nginx::start(move |prefix, port| {
        let conf = template
            .replace("LISTEN_ADDR", &format!("127.0.0.1:{port}"))
            .replace("JWTGATE_ADDR", &gate.to_string())
            .replace("UPSTREAM_ADDR", &app.to_string());
        std::fs::write(prefix.join("jwtgate.conf"), conf).unwrap();
        format!("include {}/jwtgate.conf;\n", prefix.display())
    })
    .await
}

/// Keycloak-shaped claims for the authorization Ingresses: realm roles, `acr`, `auth_time`.
fn keycloak_claims(app: &TestApp, sub: &str, roles: &[&str], acr: &str, auth_age: i64) -> Value {
    let mut claims = app.issuer.claims(sub, AUD, 300);
    claims["realm_access"] = json!({"roles": roles});
    claims["acr"] = json!(acr);
    claims["auth_time"] = json!(jwtgate::gate::unix_now() - auth_age);
    claims
}

async fn claim_requirements_and_step_up_per_ingress(flavour: Flavour) {
    // One gate, four Ingresses with their own requirements, each with the example's auth cache.
    let app = spawn_app_extra(
        "jwks:\n  min_refresh_interval_seconds: 1\npolicies:\n  read-or-editor: 'request.method in [\"GET\", \"HEAD\"] || \"editor\" in claims.realm_access.roles'\n",
    )
    .await;
    let echo = Echo::start().await;
    let example = example_ingress();
    let specs = vec![
        example.cached_spec("shop.test", example.auth_url_with(app.addr, "claim.realm_access.roles=user")),
        example.cached_spec("admin.test", example.auth_url_with(app.addr, "claim.realm_access.roles=admin")),
        example.cached_spec("stepup.test", example.auth_url_with(app.addr, "acr=gold&max_age=300")),
        example.cached_spec("edit.test", example.auth_url_with(app.addr, "policy=read-or-editor")),
    ];
    let nginx = ingress_nginx(specs, flavour, echo.addr).await;

    let user = app.sign("rs256-1", &keycloak_claims(&app, "alice", &["user"], "1", 60));
    let admin = app.sign("rs256-1", &keycloak_claims(&app, "root", &["user", "admin"], "silver", 60));
    let gold = app.sign("es256-1", &keycloak_claims(&app, "gina", &["user"], "gold", 60));
    let step_up = r#"Bearer realm="jwtgate", error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="gold", max_age="300""#;

    // Twice each: the second answer may come from nginx's auth cache, which is per Ingress, so
    // an allow cached for one Ingress never answers another.
    for round in 0..2 {
        for (host, token, subject, status) in [
            ("shop.test", &user, "alice", 200),
            ("admin.test", &user, "", 403),
            ("admin.test", &admin, "root", 200),
            ("shop.test", &admin, "root", 200),
            ("stepup.test", &gold, "gina", 200),
            ("stepup.test", &admin, "", 401),
        ] {
            let r = request(&nginx, host, "/", Some(token)).send().await.unwrap();
            assert_eq!(r.status(), status, "{flavour:?} round {round}: {host} as {subject:?}\n{}", nginx.log());
            let challenge: Vec<_> =
                r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_string()).collect();
            match (flavour, status) {
                (_, 200) => {
                    let seen: Value = r.json().await.unwrap();
                    assert_eq!(echoed(&seen, "x-auth-subject"), [subject], "{host}");
                }
                // Without auth-keepalive the step-up challenge reaches the client as the gate sent it.
                (Flavour::AuthRequest, 401) => assert_eq!(challenge, [step_up], "{host}"),
                _ => assert!(challenge.is_empty(), "{flavour:?} {host}: {challenge:?}"),
            }
        }
    }
    assert_eq!(echo.hits(), 8, "only the allowed requests reached the app");

    // nginx's auth cache is on: the second round's four allows came from it (refusals never do).
    assert_eq!(decisions(&app.metrics().await), 6.0 + 2.0, "{flavour:?}");

    // A policy that reads the method: its allow is never reused by nginx's auth cache for another
    // method, because the gate answers it with X-Accel-Expires: 0; every request asks the gate.
    for (method, status) in [("GET", 200), ("DELETE", 403), ("GET", 200), ("DELETE", 403)] {
        let r = client()
            .request(method.parse().unwrap(), nginx.url("/"))
            .header(http::header::HOST, "edit.test")
            .bearer_auth(&user)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{flavour:?} {method} on edit.test\n{}", nginx.log());
    }
    assert_eq!(decisions(&app.metrics().await), 8.0 + 4.0, "{flavour:?}");
}
