//! The Wycheproof JSON Web Crypto vectors (C2SP/wycheproof), run through parsing, key
//! selection and signature verification with claim checks out of the way (their payloads are
//! raw bytes, not claims sets). No vector marked invalid may be accepted; a vector marked valid
//! may be refused only for a documented reason (an algorithm jwtgate does not accept, a
//! symmetric key, or a strictness choice).
//!
//! The vectors are not in the repository, so the test is `#[ignore]`d: a plain `cargo test`
//! reports it as ignored (a visible skip, never a pass). `scripts/test.sh` runs it with
//! `--ignored` when `JWTGATE_WYCHEPROOF_DIR` names the folder or `CI=true` (`.ci/run` sets both),
//! and says SKIPPED otherwise. Once run, it fails when the folder is not set or its files are
//! missing: under `CI=true` a missing folder is a failure, never a skip.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwtgate::keys::KeySet;
use jwtgate::validate::Jws;
use serde_json::{Value, json};

const FILES: &[&str] = &["json_web_signature_test.json", "json_web_key_test.json", "json_web_crypto_test.json"];

fn dir() -> PathBuf {
    match std::env::var_os("JWTGATE_WYCHEPROOF_DIR") {
        Some(d) => PathBuf::from(d),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but JWTGATE_WYCHEPROOF_DIR is not set (.ci/run sets it)")
        }
        None => panic!("JWTGATE_WYCHEPROOF_DIR is not set: point it at the Wycheproof testvectors_v1 folder"),
    }
}

/// Why a vector Wycheproof calls valid may be refused, or `None` if it must be accepted.
fn allowed_refusal(group: &Value, test: &Value) -> Option<&'static str> {
    let jws = test["jws"].as_str().unwrap_or("");
    let keys = group.get("public").or(group.get("private")).unwrap();
    let text = keys.to_string();
    if text.contains("\"oct\"") {
        return Some("symmetric keys are never trusted");
    }
    if keys.get("alg").and_then(Value::as_str) == Some("ES521") {
        // Wycheproof's copy of the RFC 7520 P-521 key says `alg: ES521`, which is no registered
        // JOSE name (RFC 7520 Figure 3 has no `alg`); a JWK `alg` jwtgate does not know skips the
        // key. `p521_vectors_verify_as_es512` runs the same vectors with the key as RFC 7520 has it.
        return Some("the JWK's alg ES521 is not a JOSE algorithm");
    }
    if jws.contains('?') || jws.split('.').count() != 3 || jws.contains('=') {
        return Some("strict base64url / compact serialization");
    }
    // The contract pins a key to its JWK `alg` when it has one (RFC 7517 §4.4); Wycheproof's
    // RFC 7520 Figure 20 signs PS384 with a key published as PS256.
    let key_alg = keys.get("alg").and_then(Value::as_str);
    let token_alg = Jws::parse(jws).ok().map(|j| j.header.alg.name().to_string());
    if key_alg.is_some() && token_alg.is_some() && key_alg != token_alg.as_deref() {
        return Some("the JWK's alg pins the algorithm");
    }
    None
}

#[test]
#[ignore = "needs the Wycheproof vectors: JWTGATE_WYCHEPROOF_DIR=... cargo test --test gate wycheproof -- --ignored"]
fn no_invalid_wycheproof_vector_is_accepted() {
    let dir = dir();
    let (mut accepted_valid, mut refused_valid, mut refused_invalid) = (0, 0, 0);
    let mut failures = Vec::new();
    for file in FILES {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("JWTGATE_WYCHEPROOF_DIR is set but {} cannot be read: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).unwrap();
        for group in doc["testGroups"].as_array().unwrap() {
            let keys = group.get("public").or(group.get("private")).expect("group has a key");
            let jwks = if keys.get("keys").is_some() { keys.clone() } else { json!({ "keys": [keys] }) };
            let (set, _) = KeySet::from_jwks(jwks.to_string().as_bytes(), 100).unwrap();
            for test in group["tests"].as_array().unwrap() {
                let id = test["tcId"].as_u64().unwrap();
                let jws = test["jws"].as_str().unwrap_or("");
                let outcome = Jws::parse(jws).and_then(|j| j.verify(&set));
                match (test["result"].as_str().unwrap(), outcome) {
                    ("invalid", Ok(_)) => failures.push(format!("{file} tcId {id} ({}) ACCEPTED", test["comment"])),
                    ("invalid", Err(_)) => refused_invalid += 1,
                    (_, Ok(_)) => accepted_valid += 1,
                    (_, Err(e)) => match allowed_refusal(group, test) {
                        Some(_) => refused_valid += 1,
                        None => {
                            failures.push(format!("{file} tcId {id} ({}) valid but refused: {e:?}", test["comment"]))
                        }
                    },
                }
            }
        }
    }
    eprintln!(
        "wycheproof: {refused_invalid} invalid refused, {accepted_valid} valid accepted, {refused_valid} valid refused by policy"
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(refused_invalid >= 400, "the vectors were not all read ({refused_invalid})");
    assert!(accepted_valid >= 30, "valid RSA/PSS/ECDSA vectors must verify ({accepted_valid})");
}

/// The Wycheproof vectors signed with P-521 (RFC 7520 §4.3, Figure 27, ES512), against the key as
/// RFC 7520 Figure 3 publishes it (no `alg`) and with `alg: ES512`: each must verify, and must stop
/// verifying when one bit of its signature or payload changes.
#[test]
#[ignore = "needs the Wycheproof vectors: JWTGATE_WYCHEPROOF_DIR=... cargo test --test gate wycheproof -- --ignored"]
fn p521_vectors_verify_as_es512() {
    let dir = dir();
    let path = dir.join("json_web_signature_test.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("JWTGATE_WYCHEPROOF_DIR is set but {} cannot be read: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let Some(public) = group.get("public").filter(|k| k["crv"] == "P-521") else { continue };
        for alg in [None, Some("ES512")] {
            let mut key = public.clone();
            let map = key.as_object_mut().unwrap();
            map.remove("alg");
            if let Some(a) = alg {
                map.insert("alg".into(), json!(a));
            }
            let (set, skipped) = KeySet::from_jwks(json!({ "keys": [key] }).to_string().as_bytes(), 10).unwrap();
            assert!(skipped.is_empty(), "{skipped:?}");
            for test in group["tests"].as_array().unwrap() {
                let id = test["tcId"].as_u64().unwrap();
                let jws = test["jws"].as_str().unwrap();
                assert_eq!(test["result"], "valid", "tcId {id}: only valid P-521 vectors exist so far");
                let parsed = Jws::parse(jws).unwrap();
                assert_eq!(parsed.header.alg.name(), "ES512");
                parsed.verify(&set).unwrap_or_else(|e| panic!("tcId {id} (alg {alg:?}) refused: {e:?}"));
                // One bit changed in the signature, then in the payload.
                let (input, sig) = jws.rsplit_once('.').unwrap();
                let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
                sig[100] ^= 0x01;
                let bad_sig = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
                let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
                let mut payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
                payload[0] ^= 0x01;
                parts[1] = URL_SAFE_NO_PAD.encode(&payload);
                for bad in [bad_sig, parts.join(".")] {
                    let outcome = Jws::parse(&bad).and_then(|j| j.verify(&set));
                    assert!(outcome.is_err(), "tcId {id}: altered vector accepted");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "the P-521 vectors were not found ({checked} checked)");
}
