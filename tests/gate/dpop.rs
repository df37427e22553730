//! DPoP (RFC 9449) over HTTP: proofs made by hand for every refusal the contract lists, replay,
//! the challenges, and the no-store 200.

use jwtgate::algorithm::Algorithm;
use jwtgate::dev_issuer::KeyRing;
use jwtgate::gate::unix_now;
use serde_json::{Value, json};

use crate::helpers::*;

const URL: &str = "https://api.example.com/orders/7";
const ALGS: &str = r#"algs="ES256 ES384 ES512 EdDSA Ed25519 RS256 PS256""#;

/// The client's keys: the token is bound to `es256-1` unless a test says otherwise.
fn client() -> KeyRing {
    let mut ring = KeyRing::standard();
    ring.add_key("es384-1", Algorithm::ES384);
    ring
}

fn bound_token(app: &TestApp, client: &KeyRing, kid: &str) -> String {
    let mut claims = app.issuer.claims("alice", AUD, 3600);
    claims["cnf"] = json!({"jkt": client.thumbprint(kid)});
    claims["scope"] = json!("orders:read");
    app.sign("es256-1", &claims)
}

/// A fresh, valid proof for `GET URL` and `token`.
fn proof(client: &KeyRing, kid: &str, token: &str) -> String {
    client.dpop_proof(kid, "GET", URL, token, unix_now(), &format!("jti-{}", fastrand::u64(..)))
}

/// `/verify` as nginx calls it for `GET URL?x=1`: `Authorization: <scheme> <token>`, the proofs
/// as `DPoP` headers, and X-Original-Method/URL unless `original` is false.
async fn call(app: &TestApp, scheme: &str, token: &str, proofs: &[&str], query: &str) -> reqwest::Response {
    send(app, scheme, token, proofs, query, Some("GET"), Some(&format!("{URL}?x=1"))).await
}

async fn send(
    app: &TestApp,
    scheme: &str,
    token: &str,
    proofs: &[&str],
    query: &str,
    method: Option<&str>,
    url: Option<&str>,
) -> reqwest::Response {
    let mut req =
        app.client.get(format!("{}/verify?{query}", app.url)).header("Authorization", format!("{scheme} {token}"));
    for p in proofs {
        req = req.header("DPoP", *p);
    }
    if let Some(m) = method {
        req = req.header("X-Original-Method", m);
    }
    if let Some(u) = url {
        req = req.header("X-Original-URL", u);
    }
    req.send().await.unwrap()
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// A 401 with a DPoP challenge carrying `error` and the configured `algs`, never cacheable.
fn assert_dpop_401(r: &reqwest::Response, error: &str, case: &str) {
    assert_eq!(r.status(), 401, "{case}");
    let c = challenge(r);
    assert!(c.starts_with(r#"DPoP realm="jwtgate", "#), "{case}: {c}");
    assert!(c.contains(&format!(r#"error="{error}""#)), "{case}: {c}");
    assert!(c.ends_with(ALGS), "{case}: {c}");
    assert_eq!(r.headers()["cache-control"], "no-store", "{case}");
    assert_eq!(r.headers()["x-accel-expires"], "0", "{case}");
}

#[tokio::test]
async fn a_bound_token_with_a_valid_proof_is_allowed_and_never_cacheable() {
    let app = spawn_app().await;
    let client = client();
    let token = bound_token(&app, &client, "es256-1");
    // Twice: verified, then from the token cache; the proof is checked both times.
    for scheme in ["DPoP", "dpop"] {
        let r = call(&app, scheme, &token, &[&proof(&client, "es256-1", &token)], "").await;
        assert_eq!(r.status(), 200, "{}", challenge(&r));
        assert_eq!(r.headers()["x-auth-subject"], "alice");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["x-accel-expires"], "0");
        // X-Accel-Expires comes first (nginx reads them in order).
        let names: Vec<_> = r.headers().keys().map(|k| k.as_str()).collect();
        let pos = |n| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("x-accel-expires") < pos("cache-control"), "{names:?}");
    }
    assert_eq!(app.metric("jwtgate_token_cache_lookups_total{result=\"hit\"}").await, 1.0);
    // EdDSA proofs too, and under dpop=required.
    let token = bound_token(&app, &client, "eddsa-1");
    let r = call(&app, "DPoP", &token, &[&proof(&client, "eddsa-1", &token)], "dpop=required").await;
    assert_eq!(r.status(), 200, "{}", challenge(&r));
}

#[tokio::test]
async fn a_replayed_proof_is_refused_on_the_cached_token_too() {
    let app = spawn_app().await;
    let client = client();
    let token = bound_token(&app, &client, "es256-1");
    let p = proof(&client, "es256-1", &token);
    assert_eq!(call(&app, "DPoP", &token, &[&p], "").await.status(), 200);
    let r = call(&app, "DPoP", &token, &[&p], "").await;
    assert_dpop_401(&r, "invalid_dpop_proof", "replay");
    assert!(challenge(&r).contains("replayed"), "{}", challenge(&r));
    // A new proof for the same token passes.
    assert_eq!(call(&app, "DPoP", &token, &[&proof(&client, "es256-1", &token)], "").await.status(), 200);
    // The replay store's size is exported, and it holds the two accepted proofs.
    let bytes = app.metric("jwtgate_dpop_replay_store_bytes").await;
    assert!(bytes > 0.0 && bytes <= (16 << 20) as f64, "{bytes}");
    assert_eq!(app.gate.replay_bytes() as f64, bytes);
    assert_eq!(app.metric("jwtgate_decisions_total{decision=\"deny\",issuer=\"main\",reason=\"dpop\"}").await, 1.0);
}

#[tokio::test]
async fn every_broken_proof_is_invalid_dpop_proof() {
    let app = spawn_app().await;
    let client = client();
    let token = bound_token(&app, &client, "es256-1");
    let now = unix_now();
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({"jti": format!("j-{}", fastrand::u64(..)), "htm": "GET", "htu": URL, "iat": now,
            "ath": jwtgate::dpop::access_token_hash(&token)});
        f(&mut c);
        client.dpop_proof_raw("es256-1", json!({}), &c)
    };
    let header = |h: Value| {
        client.dpop_proof_raw(
            "es256-1",
            h,
            &json!({"jti": format!("j-{}", fastrand::u64(..)),
        "htm": "GET", "htu": URL, "iat": now, "ath": jwtgate::dpop::access_token_hash(&token)}),
        )
    };
    let good = proof(&client, "es256-1", &token);
    let (signed, _) = good.rsplit_once('.').unwrap();
    let other_sig = proof(&client, "es256-1", "another").rsplit_once('.').unwrap().1.to_string();
    let mut private = client.public_jwk("es256-1");
    private["d"] = json!("AAAA");
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "not-a-jws".into()),
        ("badly signed", format!("{signed}.{other_sig}")),
        ("typ", header(json!({"typ": "JWT"}))),
        ("alg none", header(json!({"alg": "none"}))),
        ("alg HS256", header(json!({"alg": "HS256"}))),
        ("no jwk", header(json!({"jwk": null}))),
        ("private jwk", header(json!({"jwk": private}))),
        ("htm", claims(&|c| c["htm"] = json!("POST"))),
        ("htu path", claims(&|c| c["htu"] = json!("https://api.example.com/orders/8"))),
        ("htu host", claims(&|c| c["htu"] = json!("https://evil.example.com/orders/7"))),
        ("htu scheme", claims(&|c| c["htu"] = json!("http://api.example.com/orders/7"))),
        ("iat old", claims(&|c| c["iat"] = json!(now - 400))),
        ("iat future", claims(&|c| c["iat"] = json!(now + 120))),
        ("ath", claims(&|c| c["ath"] = json!(jwtgate::dpop::access_token_hash("another token")))),
        ("no ath", claims(&|c| drop(c.as_object_mut().unwrap().remove("ath")))),
        ("no jti", claims(&|c| drop(c.as_object_mut().unwrap().remove("jti")))),
    ];
    for (case, p) in &cases {
        let r = call(&app, "DPoP", &token, &[p], "").await;
        assert_dpop_401(&r, "invalid_dpop_proof", case);
    }
    // Missing, and repeated.
    assert_dpop_401(&call(&app, "DPoP", &token, &[], "").await, "invalid_dpop_proof", "missing");
    let (a, b) = (proof(&client, "es256-1", &token), proof(&client, "es256-1", &token));
    assert_dpop_401(&call(&app, "DPoP", &token, &[&a, &b], "").await, "invalid_dpop_proof", "repeated");
    // After all that, a good proof passes: no refusal consumed anything it should not have.
    assert_eq!(call(&app, "DPoP", &token, &[&good], "").await.status(), 200);
}

#[tokio::test]
async fn a_dpop_request_without_the_original_method_or_url_is_refused() {
    let app = spawn_app().await;
    let client = client();
    let token = bound_token(&app, &client, "es256-1");
    let p = proof(&client, "es256-1", &token);
    let r = send(&app, "DPoP", &token, &[&p], "", None, Some(URL)).await;
    assert_dpop_401(&r, "invalid_dpop_proof", "no method");
    assert!(challenge(&r).contains("X-Original-Method"), "{}", challenge(&r));
    let r = send(&app, "DPoP", &token, &[&p], "", Some("GET"), None).await;
    assert_dpop_401(&r, "invalid_dpop_proof", "no url");
    assert!(challenge(&r).contains("X-Original-URL"), "{}", challenge(&r));
}

#[tokio::test]
async fn binding_refusals_are_invalid_token_in_the_dpop_scheme() {
    let app = spawn_app().await;
    let client = client();
    let token = bound_token(&app, &client, "es256-1");
    // The proof's key is not the bound one.
    let r = call(&app, "DPoP", &token, &[&proof(&client, "es384-1", &token)], "").await;
    assert_dpop_401(&r, "invalid_token", "thumbprint");
    // A bound token sent as Bearer, with or without a proof.
    assert_dpop_401(&call(&app, "Bearer", &token, &[], "").await, "invalid_token", "bound as bearer");
    let r = call(&app, "Bearer", &token, &[&proof(&client, "es256-1", &token)], "").await;
    assert_dpop_401(&r, "invalid_token", "bound as bearer with a proof");
    // An unbound token under the DPoP scheme.
    let unbound = app.token("es256-1");
    let r = call(&app, "DPoP", &unbound, &[&proof(&client, "es256-1", &unbound)], "").await;
    assert_dpop_401(&r, "invalid_token", "unbound as DPoP");
    // A bearer token where dpop=required; without that it is a plain bearer 200.
    assert_dpop_401(&call(&app, "Bearer", &unbound, &[], "dpop=required").await, "invalid_token", "required");
    let r = call(&app, "Bearer", &unbound, &[], "").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"].to_str().unwrap().starts_with("private, max-age="));
}

#[tokio::test]
async fn every_challenge_of_a_dpop_request_uses_the_dpop_scheme() {
    let app = spawn_app().await;
    let client = client();
    // The token itself invalid comes first, even before a missing proof.
    let mut claims = app.issuer.claims("alice", AUD, -120);
    claims["cnf"] = json!({"jkt": client.thumbprint("es256-1")});
    let expired = app.sign("es256-1", &claims);
    let r = call(&app, "DPoP", &expired, &[], "").await;
    assert_dpop_401(&r, "invalid_token", "expired");
    assert!(challenge(&r).contains("token expired"), "{}", challenge(&r));
    // 403 in the DPoP scheme, with the parameters it has under Bearer.
    let token = bound_token(&app, &client, "es256-1");
    let r = call(&app, "DPoP", &token, &[&proof(&client, "es256-1", &token)], "scope=admin").await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), format!(r#"DPoP realm="jwtgate", error="insufficient_scope", scope="admin", {ALGS}"#));
    // No token at all where dpop=required: a bare DPoP challenge.
    let r = app.verify(None, "dpop=required").await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), format!(r#"DPoP realm="jwtgate", {ALGS}"#));
    // Without DPoP, challenges stay Bearer.
    assert_eq!(challenge(&app.verify(None, "").await), r#"Bearer realm="jwtgate""#);
}

#[tokio::test]
async fn dpop_query_values_other_than_required_are_bad_policy() {
    let app = spawn_app().await;
    for q in ["dpop=optional", "dpop=", "dpop=true"] {
        let r = app.verify(Some(&app.token("es256-1")), q).await;
        assert_eq!(r.status(), 400, "{q}");
    }
}

#[tokio::test]
async fn the_configured_algorithms_and_external_scheme_apply() {
    let app = spawn_app_extra("dpop:\n  algorithms: [ES256]\n  external_scheme: https\n").await;
    let client = client();
    let token = bound_token(&app, &client, "es256-1");
    // TLS ended before nginx: X-Original-URL says http, the client signed https.
    let p = proof(&client, "es256-1", &token);
    let r = send(&app, "DPoP", &token, &[&p], "", Some("GET"), Some("http://api.example.com/orders/7")).await;
    assert_eq!(r.status(), 200, "{}", challenge(&r));
    // EdDSA is not configured: refused, and the challenge lists only ES256.
    let token = bound_token(&app, &client, "eddsa-1");
    let r = send(&app, "DPoP", &token, &[&proof(&client, "eddsa-1", &token)], "", Some("GET"), Some(URL)).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).ends_with(r#"algs="ES256""#), "{}", challenge(&r));
}

#[tokio::test]
async fn the_proof_is_checked_after_the_token_and_before_step_up_and_the_403_requirements() {
    let app = spawn_app().await;
    let client = client();
    let token = bound_token(&app, &client, "es256-1"); // no acr, no auth_time
    // A broken proof answers before step-up and before a claim requirement.
    for query in ["acr=gold", "max_age=60", "claim.email=x@example.com", "scope=admin"] {
        let r = call(&app, "DPoP", &token, &[], query).await;
        assert_dpop_401(&r, "invalid_dpop_proof", query);
    }
    // With a valid proof, step-up answers, in the DPoP scheme with its RFC 9470 parameters.
    let r = call(&app, "DPoP", &token, &[&proof(&client, "es256-1", &token)], "acr=gold").await;
    assert_eq!(r.status(), 401);
    let c = challenge(&r);
    assert!(c.starts_with(r#"DPoP realm="jwtgate", error="insufficient_user_authentication""#), "{c}");
    assert!(c.contains(r#"acr_values="gold""#) && c.ends_with(ALGS), "{c}");
    // And a claim requirement answers 403 in the DPoP scheme.
    let r = call(&app, "DPoP", &token, &[&proof(&client, "es256-1", &token)], "claim.email=x@example.com").await;
    assert_eq!(r.status(), 403);
    let c = challenge(&r);
    assert!(c.starts_with(r#"DPoP realm="jwtgate", error="insufficient_scope""#) && c.ends_with(ALGS), "{c}");
    // The wrong audience is the token itself: invalid_token, before the (missing) proof.
    let r = call(&app, "DPoP", &token, &[], "aud=billing-api").await;
    assert_dpop_401(&r, "invalid_token", "audience");
    assert!(challenge(&r).contains("audience"), "{}", challenge(&r));
}
