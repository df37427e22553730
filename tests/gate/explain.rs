//! `jwtgate explain`, run as the real binary against an in-process issuer: its verdict is the
//! one a live gate's `/verify` gives for the same token, config and query; `--offline` fetches
//! nothing and says the signature was not checked; the signature is never printed.

use std::process::{Command, Output, Stdio};

use jwtgate::dev_issuer::{DevIssuer, Mode};
use serde_json::{Value, json};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_jwtgate");

#[derive(Debug)]
struct Explain {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `jwtgate explain --config <yaml> ARGS` (off the async runtime, so the in-process issuer
/// keeps answering), with the token as an argument or on stdin.
async fn explain(yaml: &str, args: &[&str], stdin: Option<&str>) -> Explain {
    let dir = std::env::temp_dir().join(format!("jwtgate-explain-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    let out: Output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.arg("explain").arg("--config").arg(&path).args(&args);
        cmd.env("NO_PROXY", "127.0.0.1,localhost").env_remove("RUST_LOG");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                pipe.write_all(s.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Explain {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

fn assert_no_signature(e: &Explain, token: &str) {
    let sig = signature(token);
    assert!(!sig.is_empty());
    assert!(!e.stdout.contains(sig) && !e.stderr.contains(sig), "the signature was printed:\n{}", e.stdout);
    assert!(!e.stdout.contains(token), "the token was printed");
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["check"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_verdict_is_what_verify_answers_for_every_kind_of_token() {
    let app = spawn_app().await;
    let yaml = config_yaml(&app.issuer, "", "");
    let good = app.token("rs256-1");
    let mut wrong_aud = app.issuer.claims("user-1", "someone-else", 3600);
    wrong_aud["scope"] = json!("orders:read");
    let mut expired = app.issuer.claims("user-1", AUD, 3600);
    expired["exp"] = json!(jwtgate::gate::unix_now() - 600);
    let (input, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", signature(&app.token("es256-1")));
    let mut unknown_kid = app.token("rs256-1");
    {
        let header = base64_json(&json!({"alg": "RS256", "kid": "gone", "typ": "JWT"}));
        let rest = unknown_kid.split_once('.').unwrap().1.to_string();
        unknown_kid = format!("{header}.{rest}");
    }
    let cases: Vec<(&str, String, &str)> = vec![
        ("valid", good.clone(), ""),
        ("valid, query met", good.clone(), "aud=orders-api"),
        ("missing scope", good.clone(), "scope=orders:write"),
        ("issuer not allowed by query", good.clone(), "issuer=main&aud=other"),
        ("wrong audience", app.sign("es256-1", &wrong_aud), ""),
        ("expired", app.sign("eddsa-1", &expired), ""),
        ("bad signature", forged, ""),
        ("unknown kid", unknown_kid, ""),
        ("malformed", "not.a-token".to_string(), ""),
    ];
    for (what, token, query) in &cases {
        let live = app.verify(Some(token), query).await;
        let status = live.status().as_u16();
        let challenge = live.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        let mut args = vec!["--json", token.as_str()];
        if !query.is_empty() {
            args.extend(["--query", query]);
        }
        let e = explain(&yaml, &args, None).await;
        let report: Value = serde_json::from_str(&e.stdout).unwrap_or_else(|err| panic!("{what}: {err}\n{e:?}"));
        assert_eq!(report["verdict"]["status"], status, "{what}: {report:#}");
        assert_eq!(report["verdict"]["www_authenticate"].as_str().map(str::to_string), challenge, "{what}");
        let failed: Vec<&Value> =
            report["checks"].as_array().unwrap().iter().filter(|c| c["outcome"] == "failed").collect();
        if status == 200 {
            assert_eq!(e.code, 0, "{what}: {}", e.stdout);
            assert!(failed.is_empty(), "{what}");
            assert_eq!(report["signature_checked"], true, "{what}");
            assert_eq!(report["verdict"]["headers"]["X-Auth-Subject"], "user-1", "{what}");
        } else {
            assert_eq!(e.code, 1, "{what}: {}", e.stdout);
            // Exactly one check failed, and it is the reason /verify gives.
            assert_eq!(failed.len(), 1, "{what}: {report:#}");
            assert_eq!(failed[0]["reason"], report["verdict"]["reason"], "{what}");
            // What the token has against what the config wants, for the checks that compare.
            let hint = failed[0]["hint"].as_str().unwrap_or("");
            let want = match *what {
                "missing scope" => "required: orders:write; granted: none",
                "issuer not allowed by query" => "aud \"orders-api\"; accepted (the query's aud=): other",
                "wrong audience" => "aud \"someone-else\"; accepted (the issuer's audiences): orders-api",
                "unknown kid" => "kid \"gone\", alg \"RS256\"; the issuer's keys: rs256-1 (Rsa, alg RS256)",
                "expired" => "leeway 30 s",
                _ => "",
            };
            assert!(hint.contains(want), "{what}: hint {hint:?} lacks {want:?}");
        }
        if token.contains('.') && token.len() > 20 {
            assert_no_signature(&e, token);
        }
    }
    app.stop().await;
}

fn base64_json(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_each_check_and_the_answer_for_a_refused_token() {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", "");
    let mut claims = issuer.claims("alice", AUD, 3600);
    claims["exp"] = json!(jwtgate::gate::unix_now() - 120);
    let token = issuer.sign("es256-1", &claims);
    // From stdin, as `-`.
    let e = explain(&yaml, &["-"], Some(&format!("{token}\n"))).await;
    assert_eq!(e.code, 1, "{e:?}");
    let out = &e.stdout;
    for line in [
        "\"sub\": \"alice\"",
        "  ok    issuer",
        "  -     audience   not run",
        "  FAIL  time       exp, nbf, iat within the issuer's leeway (expired: token expired)",
        "  -     keys       not run",
        "  -     signature  not run",
        "keys       not fetched (refused before the key stage)",
        "/verify    401 expired (token expired), issuer main",
        "WWW-Authenticate: Bearer realm=\"jwtgate\", error=\"invalid_token\", error_description=\"token expired\"",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    assert!(out.contains("bytes (not shown)"));
    assert_no_signature(&e, &token);
    // Refused before the key stage: nothing was fetched.
    assert_eq!(issuer.jwks_hits() + issuer.discovery_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_fetches_nothing_and_says_the_signature_was_not_checked() {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", "");
    let good = issuer.sign("rs256-1", &issuer.claims("alice", AUD, 3600));
    let (input, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", signature(&issuer.sign("rs256-1", &issuer.claims("bob", AUD, 60))));
    for token in [&good, &forged] {
        let e = explain(&yaml, &["--offline", token.as_str()], None).await;
        assert_eq!(e.code, 0, "{e:?}");
        assert!(e.stdout.contains("THE SIGNATURE WAS NOT CHECKED"), "{}", e.stdout);
        assert!(e.stdout.contains("skip  signature  --offline: the signature was NOT checked"), "{}", e.stdout);
        assert!(e.stdout.contains("200 allow if the signature is valid (not checked: --offline)"), "{}", e.stdout);
        assert_no_signature(&e, token);
        let j = explain(&yaml, &["--offline", "--json", token.as_str()], None).await;
        let report: Value = serde_json::from_str(&j.stdout).unwrap();
        assert_eq!(report["signature_checked"], false);
        assert_eq!(report["keys"]["offline"], true);
        assert_eq!(check(&report, "signature")["outcome"], "skipped");
    }
    // A refusal that needs no key is still found offline.
    let e = explain(&yaml, &["--offline", "--query", "scope=admin", good.as_str()], None).await;
    assert_eq!(e.code, 1);
    assert!(e.stdout.contains("/verify    403 scope"), "{}", e.stdout);
    assert_eq!(issuer.jwks_hits(), 0, "--offline fetched the JWKS");
    assert_eq!(issuer.discovery_hits(), 0, "--offline fetched discovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_explains_as_keys_unavailable() {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    issuer.set_mode(Mode::Error);
    let yaml = config_yaml(&issuer, "", "");
    let token = issuer.sign("rs256-1", &issuer.claims("alice", AUD, 3600));
    let e = explain(&yaml, &["--json", &token], None).await;
    assert_eq!(e.code, 1, "{e:?}");
    let report: Value = serde_json::from_str(&e.stdout).unwrap();
    assert_eq!(report["verdict"]["status"], 503);
    assert_eq!(report["verdict"]["reason"], "keys_unavailable");
    assert_eq!(check(&report, "keys")["outcome"], "failed");
    assert!(report["keys"]["error"].as_str().unwrap().contains("HTTP 500"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_or_config_exits_2_and_no_token_exits_1() {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", "");
    let token = issuer.sign("rs256-1", &issuer.claims("alice", AUD, 3600));
    for query in ["audience=x", "issuer=nope", "scope="] {
        let e = explain(&yaml, &["--offline", "--query", query, &token], None).await;
        assert_eq!(e.code, 2, "{query}: {e:?}");
        assert!(e.stderr.contains("--query"), "{}", e.stderr);
    }
    let e = explain("issuers: []\n", &["--offline", &token], None).await;
    assert_eq!(e.code, 2, "{e:?}");
    let e = explain(&yaml, &["--offline", "-"], Some("")).await;
    assert_eq!(e.code, 1, "{e:?}");
    assert!(e.stdout.contains("401 missing_token"), "{}", e.stdout);
    // A leading `?` (pasted from the auth-url) is accepted.
    let e = explain(&yaml, &["--offline", "--query", "?aud=orders-api", &token], None).await;
    assert_eq!(e.code, 0, "{e:?}");
}

const EXAMPLE: &str = include_str!("../../examples/jwtgate.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_passes_check_config_and_explains_a_keycloak_token() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jwtgate.yaml");
    let out = Command::new(BIN).args(["check-config", "--config", path]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "config ok",
            "issuer keycloak: https://keycloak.example.com/realms/shop (jwks_uri https://keycloak.example.com/realms/shop/protocol/openid-connect/certs; audiences orders-api; algorithms RS256,ES512; leeway 30s)"
        ]
    );

    // A token shaped like a Keycloak access token, ES512-signed, explained offline against it.
    let mut ring = jwtgate::dev_issuer::KeyRing::default();
    ring.add_key("kc-es512", jwtgate::algorithm::Algorithm::ES512);
    let now = jwtgate::gate::unix_now();
    let claims = json!({
        "exp": now + 300, "iat": now, "jti": "onrtac:0b1d", "typ": "Bearer",
        "iss": "https://keycloak.example.com/realms/shop", "aud": ["orders-api", "account"],
        "sub": "f1b7c2c4-3f0e-4d53-9d0e-6a2b8f0d7c11", "azp": "shop-frontend",
        "scope": "openid email profile orders:read", "preferred_username": "alice", "email": "alice@example.com",
        "realm_access": {"roles": ["default-roles-shop", "customer"]},
        "resource_access": {"orders-api": {"roles": ["reader"]}}
    });
    let token = ring.sign("kc-es512", &claims);
    let e = explain(EXAMPLE, &["--offline", "--json", "--query", "scope=orders:read", &token], None).await;
    assert_eq!(e.code, 0, "{e:?}");
    let report: Value = serde_json::from_str(&e.stdout).unwrap();
    let headers = &report["verdict"]["headers"];
    assert_eq!(headers["X-Auth-User"], "alice");
    assert_eq!(headers["X-Auth-Roles"], "default-roles-shop,customer");
    assert_eq!(headers["X-Auth-Client-Roles"], "reader");
    assert_eq!(check(&report, "lifetime")["outcome"], "passed");
    // The same token for another API: the audience check names the refusal.
    let e = explain(EXAMPLE, &["--offline", "--json", "--query", "aud=billing-api", &token], None).await;
    assert_eq!(e.code, 1);
    let report: Value = serde_json::from_str(&e.stdout).unwrap();
    assert_eq!(report["verdict"]["reason"], "audience");
    assert_no_signature(&e, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_traces_step_up_claim_requirements_and_policies_as_verify_decides() {
    let extra = "jwks:\n  min_refresh_interval_seconds: 1\npolicies:\n  reads-only: 'request.method in [\"GET\", \"HEAD\"]'\n  admins: 'claims.realm_access.roles.exists(r, r == \"admin\")'\n";
    let app = spawn_app_extra(extra).await;
    let yaml = config_yaml(&app.issuer, "", extra);
    let mut claims = app.issuer.claims("user-1", AUD, 3600);
    claims["realm_access"] = json!({"roles": ["user"]});
    claims["acr"] = json!("1");
    claims["auth_time"] = json!(jwtgate::gate::unix_now() - 60);
    let token = app.sign("rs256-1", &claims);
    // (query, method, failing check or "" for an allow)
    let cases = [
        ("claim.realm_access.roles=user&acr=1&max_age=300", "GET", ""),
        ("claim.realm_access.roles=admin", "GET", "claim"),
        ("acr=2&claim.realm_access.roles=admin", "GET", "step-up"),
        ("max_age=10", "GET", "step-up"),
        ("policy=admins", "GET", "policy"),
        ("policy=reads-only", "GET", ""),
        ("policy=reads-only", "DELETE", "policy"),
    ];
    for (query, method, failing) in cases {
        let live = app
            .client
            .get(format!("{}/verify?{query}", app.url))
            .bearer_auth(&token)
            .header("X-Original-Method", method)
            .header("X-Original-URL", "https://shop.example/orders")
            .send()
            .await
            .unwrap();
        let status = live.status().as_u16();
        let args = ["--json", "--query", query, "--method", method, "--url", "https://shop.example/orders", &token];
        let e = explain(&yaml, &args, None).await;
        let report: Value = serde_json::from_str(&e.stdout).unwrap_or_else(|err| panic!("{query}: {err}\n{e:?}"));
        assert_eq!(report["verdict"]["status"], status, "{query} {method}: {report:#}");
        let failed: Vec<&Value> =
            report["checks"].as_array().unwrap().iter().filter(|c| c["outcome"] == "failed").collect();
        if failing.is_empty() {
            assert_eq!(status, 200, "{query} {method}");
            assert!(failed.is_empty(), "{query}: {report:#}");
            assert_eq!(e.code, 0);
        } else {
            assert_eq!(failed.len(), 1, "{query}: {report:#}");
            assert_eq!(failed[0]["check"], failing, "{query} {method}: {report:#}");
            assert_eq!(e.code, 1);
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_checks_the_dpop_binding_as_verify_does_and_says_the_proof_is_not_checked() {
    let app = spawn_app().await;
    let yaml = config_yaml(&app.issuer, "", "");
    let client = jwtgate::dev_issuer::KeyRing::standard();
    let mut claims = app.issuer.claims("user-1", AUD, 3600);
    claims["cnf"] = json!({"jkt": client.thumbprint("es256-1")});
    let bound = app.sign("rs256-1", &claims);
    let unbound = app.token("rs256-1");
    // (token, query, status /verify gives the token as explain presents it, dpop check outcome)
    let cases = [
        ("bound", &bound, "", 200, "skipped"),
        ("bound, step-up", &bound, "acr=gold", 401, "skipped"),
        ("unbound, dpop=required", &unbound, "dpop=required", 401, "failed"),
        ("unbound, dpop=required and a scope", &unbound, "dpop=required&scope=admin", 401, "failed"),
        ("unbound", &unbound, "", 200, "skipped"),
    ];
    for (what, token, query, status, outcome) in cases {
        let mut args = vec!["--json", token.as_str()];
        if !query.is_empty() {
            args.extend(["--query", query]);
        }
        let e = explain(&yaml, &args, None).await;
        let report: Value = serde_json::from_str(&e.stdout).unwrap_or_else(|err| panic!("{what}: {err}\n{e:?}"));
        assert_eq!(report["verdict"]["status"], status, "{what}: {report:#}");
        assert_eq!(check(&report, "dpop")["outcome"], outcome, "{what}: {report:#}");
        // /verify says the same: for a bound token, with a valid proof.
        let mut req = app.client.get(format!("{}/verify?{query}", app.url)).header("X-Original-Method", "GET");
        req = req.header("X-Original-URL", "https://api.example.com/x");
        if token == &bound {
            let proof = client.dpop_proof(
                "es256-1",
                "GET",
                "https://api.example.com/x",
                token,
                jwtgate::gate::unix_now(),
                what,
            );
            req = req.header("Authorization", format!("DPoP {token}")).header("DPoP", proof);
        } else {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let live = req.send().await.unwrap();
        assert_eq!(live.status().as_u16(), status, "{what}");
        let challenge = live.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(report["verdict"]["www_authenticate"].as_str().map(str::to_string), challenge, "{what}");
        if status == 401 && outcome == "failed" {
            assert_eq!(report["verdict"]["reason"], "dpop", "{what}");
        }
        // Offline agrees on the verdict.
        let mut args = vec!["--json", "--offline", token.as_str()];
        if !query.is_empty() {
            args.extend(["--query", query]);
        }
        let off: Value = serde_json::from_str(&explain(&yaml, &args, None).await.stdout).unwrap();
        assert_eq!(off["verdict"]["status"], status, "{what} offline: {off:#}");
    }
    app.stop().await;
}
