//! Per-Ingress authorization over HTTP: `claim.` requirements, named CEL policies and step-up
//! (RFC 9470), their challenges and cache headers, and the same answers on cache hits and misses.

use serde_json::{Value, json};

use crate::helpers::*;

const POLICIES: &str = r#"
jwks:
  min_refresh_interval_seconds: 1
policies:
  admins-only: 'claims.realm_access.roles.exists(r, r == "admin")'
  read-or-editor: 'request.method in ["GET", "HEAD"] || "editor" in claims.groups'
  needs-missing-claim: 'claims.department == "sales"'
"#;

async fn app() -> TestApp {
    spawn_app_extra(POLICIES).await
}

fn keycloak_claims(app: &TestApp) -> Value {
    let mut c = app.issuer.claims("alice", AUD, 600);
    c["realm_access"] = json!({"roles": ["user", "secret-role-value"]});
    c["resource_access"] = json!({"orders-api": {"roles": ["reader"]}});
    c["groups"] = json!(["viewer"]);
    c["email_verified"] = json!(true);
    c["https://example.com/roles"] = json!(["editor"]);
    c
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()["www-authenticate"].to_str().unwrap().to_string()
}

fn assert_no_store(r: &reqwest::Response) {
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-accel-expires"], "0");
}

#[tokio::test]
async fn claim_requirements_allow_or_refuse_with_403_naming_the_path_never_a_value() {
    let app = app().await;
    let t = app.sign("rs256-1", &keycloak_claims(&app));
    for q in [
        "claim.realm_access.roles=admin,user",
        "claim.resource_access.orders-api.roles=reader",
        "claim.email_verified=true",
        "claim.%2Fhttps:~1~1example.com~1roles=editor",
        "claim.groups=viewer&claim.realm_access.roles=user",
    ] {
        let r = app.verify(Some(&t), q).await;
        assert_eq!(r.status(), 200, "{q}");
        assert!(r.headers()["cache-control"].to_str().unwrap().starts_with("private, max-age="), "{q}");
    }
    let r = app.verify(Some(&t), "claim.groups=viewer&claim.realm_access.roles=admin").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_scope", error_description="claim requirement not met: realm_access.roles""#
    );
    assert!(!challenge(&r).contains("secret-role-value"));
    assert_no_store(&r);
    // A missing claim never matches; characters RFC 6750 forbids in the description are encoded.
    let r = app.verify(Some(&t), "claim.a%22b%5Cc=x").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_scope", error_description="claim requirement not met: a%22b%5Cc""#
    );
    assert_eq!(app.metric(r#"jwtgate_decisions_total{decision="deny",issuer="main",reason="claim"}"#).await, 2.0);
}

#[tokio::test]
async fn named_policies_allow_or_refuse_with_403_naming_the_policy() {
    let app = app().await;
    let mut claims = keycloak_claims(&app);
    let plain = app.sign("rs256-1", &claims);
    claims["realm_access"]["roles"] = json!(["admin"]);
    let admin = app.sign("rs256-1", &claims);
    let r = app.verify(Some(&admin), "policy=admins-only").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"].to_str().unwrap().starts_with("private, max-age="));
    let r = app.verify(Some(&plain), "policy=admins-only").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_scope", error_description="policy not met: admins-only""#
    );
    assert_no_store(&r);
    // Every listed policy must hold: the first that does not is named.
    let r = app.verify(Some(&admin), "policy=admins-only,needs-missing-claim").await;
    assert_eq!(r.status(), 403);
    assert!(challenge(&r).ends_with(r#"error_description="policy not met: needs-missing-claim""#), "{}", challenge(&r));
    assert_eq!(app.metric(r#"jwtgate_decisions_total{decision="deny",issuer="main",reason="policy"}"#).await, 2.0);
}

#[tokio::test]
async fn a_policy_that_reads_request_decides_per_request_and_is_never_cached_by_nginx() {
    let app = app().await;
    let t = app.sign("es256-1", &keycloak_claims(&app));
    let send = |method: &'static str, with_headers: bool| {
        let mut req = app.client.get(format!("{}/verify?policy=read-or-editor", app.url)).bearer_auth(&t);
        if with_headers {
            req = req.header("X-Original-Method", method).header("X-Original-URL", "https://shop.example/orders/7");
        }
        req.send()
    };
    let r = send("GET", true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_no_store(&r);
    assert_eq!(r.headers()["x-auth-subject"], "alice");
    // X-Accel-Expires comes before Cache-Control (nginx < 1.23 reads them in order).
    let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("x-accel-expires") < pos("cache-control"), "{names:?}");
    assert_eq!(send("DELETE", true).await.unwrap().status(), 403);
    assert_eq!(send("HEAD", true).await.unwrap().status(), 200);
    // Without X-Original-Method the policy cannot be evaluated: denied, never allowed.
    let r = send("GET", false).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(challenge(&r).ends_with(r#"error_description="policy not met: read-or-editor""#));
    // An editor may use any method.
    let mut claims = keycloak_claims(&app);
    claims["groups"] = json!(["editor"]);
    let editor = app.sign("es256-1", &claims);
    let r = app
        .client
        .get(format!("{}/verify?policy=read-or-editor", app.url))
        .bearer_auth(&editor)
        .header("X-Original-Method", "DELETE")
        .header("X-Original-URL", "https://shop.example/orders/7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_no_store(&r);
}

#[tokio::test]
async fn step_up_acr_is_401_with_acr_values() {
    let app = app().await;
    let mut claims = keycloak_claims(&app);
    claims["acr"] = json!("1");
    let t = app.sign("rs256-1", &claims);
    assert_eq!(app.verify(Some(&t), "acr=1,2").await.status(), 200);
    let r = app.verify(Some(&t), "acr=2,urn:example:mfa").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="2 urn:example:mfa""#
    );
    assert_no_store(&r);
    assert_eq!(app.metric(r#"jwtgate_decisions_total{decision="deny",issuer="main",reason="step_up"}"#).await, 1.0);
}

#[tokio::test]
async fn step_up_max_age_is_401_with_max_age_and_both_when_both_are_asked() {
    let app = app().await;
    let now = jwtgate::gate::unix_now();
    let mut claims = keycloak_claims(&app);
    claims["acr"] = json!("1");
    claims["auth_time"] = json!(now - 3600);
    let old = app.sign("rs256-1", &claims);
    let r = app.verify(Some(&old), "max_age=300").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_user_authentication", error_description="more recent authentication is required", max_age="300""#
    );
    assert_no_store(&r);
    // Both parameters were asked: the challenge carries both, whichever failed.
    let r = app.verify(Some(&old), "acr=1&max_age=300").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="jwtgate", error="insufficient_user_authentication", error_description="more recent authentication is required", acr_values="1", max_age="300""#
    );
    // No auth_time at all: step-up too.
    let mut no_time = keycloak_claims(&app);
    no_time.as_object_mut().unwrap().remove("auth_time");
    let r = app.verify(Some(&app.sign("rs256-1", &no_time)), "max_age=86400").await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains(r#"error="insufficient_user_authentication""#));
    assert!(challenge(&r).ends_with(r#"max_age="86400""#));
}

#[tokio::test]
async fn under_max_age_nginx_may_cache_an_allow_only_until_auth_time_plus_max_age() {
    let app = app().await;
    let now = jwtgate::gate::unix_now();
    let mut claims = keycloak_claims(&app);
    claims["auth_time"] = json!(now - 100);
    let t = app.sign("rs256-1", &claims);
    let r = app.verify(Some(&t), "max_age=160").await;
    assert_eq!(r.status(), 200);
    let secs: u64 = r.headers()["x-accel-expires"].to_str().unwrap().parse().unwrap();
    assert_eq!(r.headers()["cache-control"].to_str().unwrap(), format!("private, max-age={secs}"));
    // auth_time + 160 is 60 s from `now`: at most 59 s left, whatever the token's own 600 s.
    assert!(secs <= 59, "{secs}");
    assert!(secs >= 30, "{secs}");
    // The same token without max_age is cached by its lifetime.
    let r = app.verify(Some(&t), "").await;
    let secs: u64 = r.headers()["x-accel-expires"].to_str().unwrap().parse().unwrap();
    assert!(secs > 200, "{secs}");
}

#[tokio::test]
async fn bad_authorization_parameters_are_400() {
    let app = app().await;
    let t = app.sign("rs256-1", &keycloak_claims(&app));
    for q in [
        "claim.=x",
        "claim.a=",
        "claim.a..b=x",
        "claim./a~2b=x",
        "policy=unknown",
        "policy=admins-only,unknown",
        "max_age=abc",
        "max_age=-5",
        "acr=",
    ] {
        let r = app.verify(Some(&t), q).await;
        assert_eq!(r.status(), 400, "{q}");
        assert_no_store(&r);
    }
}

#[tokio::test]
async fn requirements_apply_on_cache_hits_exactly_as_on_misses() {
    let app = app().await;
    let now = jwtgate::gate::unix_now();
    let mut claims = keycloak_claims(&app);
    claims["acr"] = json!("1");
    claims["auth_time"] = json!(now - 60);
    let t = app.sign("rs256-1", &claims);
    let hits = async || app.metric(r#"jwtgate_token_cache_lookups_total{result="hit"}"#).await;
    // The first request verifies (a miss) and is allowed.
    assert_eq!(app.verify(Some(&t), "claim.groups=viewer").await.status(), 200);
    let before = hits().await;
    // The same token, now cached, refused by each new requirement...
    for (q, status) in [
        ("claim.groups=admin", 403),
        ("policy=admins-only", 403),
        ("acr=2", 401),
        ("max_age=10", 401),
        ("scope=orders:write", 403),
    ] {
        assert_eq!(app.verify(Some(&t), q).await.status(), status, "{q}");
    }
    // ...and allowed again when the requirement is one it meets.
    for q in ["claim.groups=viewer", "acr=1&max_age=3600", ""] {
        assert_eq!(app.verify(Some(&t), q).await.status(), 200, "{q}");
    }
    assert_eq!(hits().await - before, 8.0, "every request after the first was a cache hit");

    // A token first seen under a requirement it fails is refused on the miss just the same,
    // and then allowed from the cache where it is met.
    let mut other = keycloak_claims(&app);
    other["sub"] = json!("bob");
    let t2 = app.sign("rs256-1", &other);
    let misses = app.metric(r#"jwtgate_token_cache_lookups_total{result="miss"}"#).await;
    assert_eq!(app.verify(Some(&t2), "claim.realm_access.roles=admin").await.status(), 403);
    assert_eq!(app.verify(Some(&t2), "claim.realm_access.roles=user").await.status(), 200);
    assert_eq!(app.metric(r#"jwtgate_token_cache_lookups_total{result="miss"}"#).await - misses, 1.0);
}

#[tokio::test]
async fn one_verification_serves_every_ingress_and_each_applies_its_own_audience() {
    let app = app().await;
    let t = app.sign("rs256-1", &keycloak_claims(&app));
    let misses = async || app.metric(r#"jwtgate_token_cache_lookups_total{result="miss"}"#).await;
    // An Ingress whose audience the token lacks refuses it before any signature work.
    assert_eq!(app.verify(Some(&t), "aud=billing-api").await.status(), 401);
    assert_eq!(misses().await, 1.0);
    // Verified (and cached) once where it is accepted...
    assert_eq!(app.verify(Some(&t), "").await.status(), 200);
    assert_eq!(misses().await, 2.0);
    // ...then every Ingress decides from the cache, each with its own audience and requirements.
    assert_eq!(app.verify(Some(&t), "claim.realm_access.roles=user").await.status(), 200);
    assert_eq!(app.verify(Some(&t), "aud=billing-api").await.status(), 401);
    assert_eq!(app.verify(Some(&t), "claim.realm_access.roles=admin").await.status(), 403);
    assert_eq!(misses().await, 2.0, "verified once");
}
