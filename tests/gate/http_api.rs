//! The contract's HTTP surface: statuses, challenges, identity headers, caching headers,
//! metrics and readiness.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn valid_token_gets_200_with_identity_headers_and_bounded_cache_control() {
    let app = spawn_app().await;
    let mut claims = app.issuer.claims("alice", AUD, 120);
    claims["email"] = json!("alice@example.com");
    claims["realm_access"] = json!({"roles": ["admin", "user"]});
    for kid in ["rs256-1", "es256-1", "eddsa-1"] {
        let r = app.verify(Some(&app.sign(kid, &claims)), "").await;
        assert_eq!(r.status(), 200, "{kid}");
        let h = r.headers();
        assert_eq!(h["x-auth-subject"], "alice");
        assert_eq!(h["x-auth-issuer"], app.issuer.issuer().as_str());
        assert_eq!(h["x-auth-email"], "alice@example.com");
        assert_eq!(h["x-auth-roles"], "admin,user");
        let cc = h["cache-control"].to_str().unwrap();
        let max_age: u64 = cc.strip_prefix("private, max-age=").unwrap().parse().unwrap();
        assert!(max_age <= 120, "{cc}");
        assert!(max_age >= 100, "{cc}");
        assert_eq!(r.text().await.unwrap(), "");
    }
}

#[tokio::test]
async fn missing_token_is_401_with_a_bare_challenge() {
    let app = spawn_app().await;
    let r = app.verify(None, "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="jwtgate""#);
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn expired_token_is_401_invalid_token() {
    let app = spawn_app().await;
    let t = app.sign("rs256-1", &app.issuer.claims("u", AUD, -120));
    let r = app.verify(Some(&t), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="jwtgate", error="invalid_token", error_description="token expired""#
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn wrong_audience_is_401_and_aud_override_accepts_another() {
    let app = spawn_app().await;
    let t = app.sign("rs256-1", &app.issuer.claims("u", "billing-api", 300));
    assert_eq!(app.verify(Some(&t), "").await.status(), 401);
    assert_eq!(app.verify(Some(&t), "aud=billing-api").await.status(), 200);
    // The override replaces the configured audience rather than adding to it.
    assert_eq!(app.verify(Some(&app.token("rs256-1")), "aud=billing-api").await.status(), 401);
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope_naming_it() {
    let app = spawn_app().await;
    let mut claims = app.issuer.claims("u", AUD, 300);
    claims["scope"] = json!("orders:read profile");
    let t = app.sign("es256-1", &claims);
    assert_eq!(app.verify(Some(&t), "scope=orders:read").await.status(), 200);
    let r = app.verify(Some(&t), "scope=orders:read%20orders:write").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="jwtgate", error="insufficient_scope", scope="orders:read orders:write""#
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn scp_array_grants_scopes() {
    let app = spawn_app().await;
    let mut claims = app.issuer.claims("u", AUD, 300);
    claims["scp"] = json!(["a", "b"]);
    let t = app.sign("eddsa-1", &claims);
    assert_eq!(app.verify(Some(&t), "scope=a,b").await.status(), 200);
    assert_eq!(app.verify(Some(&t), "scope=c").await.status(), 403);
}

#[tokio::test]
async fn policy_is_applied_on_cache_hits_too() {
    let app = spawn_app().await;
    let t = app.token("rs256-1");
    assert_eq!(app.verify(Some(&t), "").await.status(), 200);
    assert_eq!(app.verify(Some(&t), "scope=admin").await.status(), 403);
    assert_eq!(app.verify(Some(&t), "aud=other").await.status(), 401);
    assert!(app.metric("jwtgate_token_cache_lookups_total{result=\"hit\"}").await >= 2.0);
}

#[tokio::test]
async fn bad_policy_is_400_and_never_cacheable() {
    let app = spawn_app().await;
    let t = app.token("rs256-1");
    for q in ["unknown=1", "issuer=nope", "aud="] {
        let r = app.verify(Some(&t), q).await;
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["x-accel-expires"], "0");
    }
    assert_eq!(
        app.metric("jwtgate_decisions_total{decision=\"deny\",issuer=\"none\",reason=\"bad_policy\"}").await,
        3.0
    );
}

#[tokio::test]
async fn issuer_filter_refuses_other_configured_issuers() {
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let other = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let extra = format!(
        "  - name: other\n    issuer: \"{}\"\n    audiences: [\"{AUD}\"]\n    algorithms: [\"RS256\"]\n",
        other.issuer()
    );
    let yaml = config_yaml(&issuer, &extra, "jwks:\n  min_refresh_interval_seconds: 1\n");
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    let t_other = other.sign("rs256-1", &other.claims("u", AUD, 300));
    assert_eq!(app.verify(Some(&t_other), "").await.status(), 200);
    assert_eq!(app.verify(Some(&t_other), "issuer=main").await.status(), 401);
    assert_eq!(app.verify(Some(&t_other), "issuer=main,other").await.status(), 200);
    // A kid of one issuer is never looked up in another's keys.
    let forged = app.issuer.sign("rs256-1", &other.claims("u", AUD, 300));
    let r = app.verify(Some(&forged), "").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn refusals_are_counted_by_reason_and_issuer() {
    let app = spawn_app().await;
    let expired = app.sign("rs256-1", &app.issuer.claims("u", AUD, -100));
    app.verify(Some(&expired), "").await;
    app.verify(Some("not.a.token"), "").await;
    app.verify(Some(&app.token("rs256-1")), "").await;
    let m = app.metrics().await;
    assert!(m.contains(r#"jwtgate_decisions_total{decision="deny",issuer="main",reason="expired"} 1"#), "{m}");
    assert!(m.contains(r#"jwtgate_decisions_total{decision="deny",issuer="none",reason="malformed"} 1"#), "{m}");
    assert!(m.contains(r#"jwtgate_decisions_total{decision="allow",issuer="main",reason="ok"} 1"#), "{m}");
    assert!(m.contains("jwtgate_decision_duration_seconds_count 3"), "{m}");
    assert!(m.contains(r#"jwtgate_jwks_keys{issuer="main"} 3"#), "{m}");
    assert!(m.contains(r#"jwtgate_jwks_fetches_total{issuer="main",result="ok"} 1"#), "{m}");
}

#[tokio::test]
async fn healthz_and_readyz_report_per_issuer_state() {
    let app = spawn_app().await;
    assert_eq!(app.client.get(format!("{}/healthz", app.url)).send().await.unwrap().status(), 200);
    let r = app.client.get(format!("{}/readyz", app.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["issuers"]["main"]["state"], "ready");
    assert_eq!(body["issuers"]["main"]["keys"], 3);
    assert_eq!(app.metric("jwtgate_ready").await, 1.0, "the readiness gauge follows /readyz");
}

#[tokio::test]
async fn readyz_is_503_naming_the_issuer_until_keys_load() {
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    issuer.set_mode(jwtgate::dev_issuer::Mode::Error);
    let yaml = config_yaml(&issuer, "", "jwks:\n  min_refresh_interval_seconds: 1\n");
    let app = spawn_app_with(issuer, &yaml).await;
    let error = app.wait_issuer_error("main").await;
    assert!(error.contains("HTTP 500"), "{error}");
    assert_eq!(app.readyz().await.1["issuers"]["main"]["state"], "loading");
    assert!(app.metrics().await.lines().any(|l| l == "jwtgate_ready 0"), "the readiness gauge follows /readyz");
    // Tokens for an issuer without keys: 503, not 401.
    let r = app.verify(Some(&app.token("rs256-1")), "").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["cache-control"], "no-store");
    // The provider comes back: the retry with backoff picks it up without a restart.
    app.issuer.set_mode(jwtgate::dev_issuer::Mode::Normal);
    app.wait_ready().await;
    assert_eq!(app.verify(Some(&app.token("rs256-1")), "").await.status(), 200);
    assert_eq!(app.metric("jwtgate_ready").await, 1.0);
}

#[tokio::test]
async fn graceful_stop_returns_cleanly() {
    let app = spawn_app().await;
    assert_eq!(app.verify(Some(&app.token("rs256-1")), "").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn cookie_token_source_when_configured() {
    let app = spawn_app_extra("token:\n  cookie: access_token\n").await;
    let t = app.token("rs256-1");
    let r = app
        .client
        .get(format!("{}/verify", app.url))
        .header("Cookie", format!("theme=dark; access_token={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn any_method_is_accepted_on_verify() {
    let app = spawn_app().await;
    let t = app.token("rs256-1");
    for m in [reqwest::Method::POST, reqwest::Method::HEAD, reqwest::Method::DELETE] {
        let r = app
            .client
            .request(m.clone(), format!("{}/verify", app.url))
            .bearer_auth(&t)
            .body("ignored")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{m}");
    }
}

#[tokio::test]
async fn only_the_exact_verify_path_decides_and_other_paths_are_404() {
    // `/verify` is served outside the router (the hot path); everything else goes through it.
    let app = spawn_app().await;
    let t = app.token("rs256-1");
    let r = app.client.get(format!("{}/verify?aud={AUD}", app.url)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200, "/verify with a query string");
    for path in ["/verify/", "/verifyx", "/VERIFY", "/", "/verify/extra"] {
        let r = app.client.get(format!("{}{path}", app.url)).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers().get("x-auth-subject").is_none(), "{path} must not carry an identity");
    }
    for path in ["/healthz", "/metrics"] {
        let r = app.client.get(format!("{}{path}", app.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn es512_and_rfc9864_ed25519_names_verify_end_to_end() {
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    issuer.add_key("es512-1", jwtgate::algorithm::Algorithm::ES512);
    // The EdDSA key again, published the way Node's WebCrypto exports it: alg "Ed25519".
    let mut jwk = issuer.public_jwk("eddsa-1");
    jwk["kid"] = serde_json::json!("ed25519-named");
    jwk["alg"] = serde_json::json!("Ed25519");
    issuer.add_raw_jwk(jwk);
    let yaml = config_yaml(&issuer, "", "")
        .replace(r#"algorithms: ["RS256", "ES256", "EdDSA"]"#, r#"algorithms: ["ES512", "Ed25519"]"#);
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    assert_eq!(app.verify(Some(&app.token("es512-1")), "").await.status(), 200);
    let claims = app.issuer.claims("user-1", AUD, 3600).to_string();
    for (alg, kid) in [("Ed25519", "ed25519-named"), ("EdDSA", "ed25519-named"), ("Ed25519", "eddsa-1")] {
        let header = serde_json::json!({"alg": alg, "kid": kid}).to_string();
        let token =
            app.issuer.sign_raw("eddsa-1", jwtgate::algorithm::Algorithm::EdDSA, header.as_bytes(), claims.as_bytes());
        assert_eq!(app.verify(Some(&token), "").await.status(), 200, "{alg} {kid}");
    }
    // Not in this issuer's allow-list: RS256 and ES256 are refused as algorithm errors.
    let r = app.verify(Some(&app.token("es256-1")), "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("algorithm not accepted"));
    assert!(app.metrics().await.contains(r#"jwtgate_jwks_keys{issuer="main"} 5"#));
}
