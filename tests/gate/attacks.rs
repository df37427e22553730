//! The attack catalogue: hostile tokens and headers, each test naming the RFC 8725 section or
//! CVE it covers and asserting the exact outcome (the `AuthError` reason, or the HTTP status and
//! `error_description`), never just "not 200".
//!
//! Most attacks run against the pure core (`jwtgate::validate::validate` with a `KeyRing`'s
//! JWKS and a fixed `now`); the ones where the network matters (`jku`/`x5u`, kid floods, size
//! limits, what reaches the response headers) run over HTTP with `spawn_app`.

use std::sync::LazyLock;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jwtgate::algorithm::Algorithm;
use jwtgate::config::Config;
use jwtgate::dev_issuer::{DevIssuer, KeyRing};
use jwtgate::error::AuthError;
use jwtgate::keys::KeySet;
use jwtgate::policy::Policy;
use jwtgate::validate::{Identity, validate};
use serde_json::{Value, json};

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// The pure fixture: one trusted key ring, one attacker key ring, a fixed clock.
// ---------------------------------------------------------------------------------------------

/// A fixed "now" (2023-11-14T22:13:20Z).
const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://idp.attacks.example/realms/main";

/// The trusted issuer's keys: `rs256-1`, `es256-1`, `eddsa-1` (each JWK pins its `alg`).
static RING: LazyLock<KeyRing> = LazyLock::new(KeyRing::standard);

/// The attacker's own keys: `evil-rsa` (RS256) and `evil-ed` (EdDSA).
static ATTACKER: LazyLock<KeyRing> = LazyLock::new(|| {
    let mut ring = KeyRing::default();
    ring.add_key("evil-rsa", Algorithm::RS256);
    ring.add_key("evil-ed", Algorithm::EdDSA);
    ring
});

/// A configuration and key set to validate against, without any server.
struct Pure {
    config: Config,
    keys: KeySet,
}

impl Pure {
    /// The trusted ring's JWKS, with `issuer_extra` YAML added to the issuer entry.
    fn new(issuer_extra: &str) -> Pure {
        Pure::with_jwks(issuer_extra, RING.jwks())
    }

    fn with_jwks(issuer_extra: &str, jwks: Value) -> Pure {
        let extra: String = issuer_extra.lines().map(|l| format!("    {l}\n")).collect();
        let yaml = format!(
            r#"
issuers:
  - name: main
    issuer: "{ISS}"
    audiences: ["{AUD}"]
    algorithms: ["RS256", "PS256", "ES256", "EdDSA"]
{extra}
claims_to_headers:
  - {{claim: sub, header: X-Auth-Subject}}
  - {{claim: email, header: X-Auth-Email}}
  - {{claim: realm_access.roles, header: X-Auth-Roles}}
"#
        );
        let config = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
        let (keys, skipped) = KeySet::from_jwks(jwks.to_string().as_bytes(), 100).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        Pure { config, keys }
    }

    fn check(&self, token: &str) -> Result<Identity, AuthError> {
        let policy = Policy::default();
        validate(token, &self.config.issuers, &[&self.keys], &self.config.claims_to_headers, &policy, NOW)
    }

    /// The decision's reason label: `ok`, or the refusal's bounded reason.
    fn reason(&self, token: &str) -> &'static str {
        match self.check(token) {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        }
    }
}

static DEFAULT: LazyLock<Pure> = LazyLock::new(|| Pure::new(""));

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Valid claims for the trusted issuer: five minutes left.
fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": AUD, "iat": NOW - 10, "exp": NOW + 300})
}

/// Claims with one member replaced (or added).
fn claims_with(name: &str, value: Value) -> Value {
    let mut c = claims();
    c[name] = value;
    c
}

/// Claims with one member removed.
fn claims_without(name: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(name);
    c
}

/// A token whose header and claims are serialised from JSON values and signed for real by the
/// trusted key `kid` with `alg` (which the header need not agree with).
fn signed(kid: &str, alg: Algorithm, header: &Value, claims: &Value) -> String {
    RING.sign_raw(kid, alg, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

/// Like [`signed`], with header and claims given as raw JSON text (duplicates, odd literals).
fn signed_raw(kid: &str, alg: Algorithm, header: &str, claims: &str) -> String {
    RING.sign_raw(kid, alg, header.as_bytes(), claims.as_bytes())
}

/// A standard RS256 token for these claims.
fn rs256(claims: &Value) -> String {
    RING.sign("rs256-1", claims)
}

/// A token with an arbitrary signature (not made by any key).
fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(signature))
}

fn rs_header() -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": "rs256-1"})
}

#[test]
fn the_fixture_accepts_an_honest_token_with_every_key() {
    for kid in ["rs256-1", "es256-1", "eddsa-1"] {
        assert_eq!(DEFAULT.reason(&RING.sign(kid, &claims())), "ok", "{kid}");
    }
}

// ---------------------------------------------------------------------------------------------
// Algorithm attacks.
// ---------------------------------------------------------------------------------------------

/// RFC 8725 §2.1 and §3.1 (CVE-2015-9235 and kin): `alg: none` in any casing, with or without a
/// signature segment, is an algorithm refusal.
#[test]
fn alg_none_in_every_casing_with_and_without_signature_is_refused() {
    for alg in ["none", "None", "NONE", "nOnE", "none ", ""] {
        for kid in [None, Some("rs256-1")] {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let unsigned = format!("{}.{}.", b64(header.to_string().as_bytes()), b64(claims().to_string().as_bytes()));
            assert_eq!(DEFAULT.reason(&unsigned), "algorithm", "{alg:?} {kid:?} without signature");
            let with_sig = forged(&header, &claims(), b"\x00\x01\x02\x03");
            assert_eq!(DEFAULT.reason(&with_sig), "algorithm", "{alg:?} {kid:?} with signature");
            // A real RS256 signature under a `none` header changes nothing.
            let real = signed("rs256-1", Algorithm::RS256, &header, &claims());
            assert_eq!(DEFAULT.reason(&real), "algorithm", "{alg:?} {kid:?} with a real signature");
        }
    }
}

/// RFC 8725 §3.1 over HTTP: `alg: none` is a 401 naming the algorithm.
#[tokio::test]
async fn alg_none_over_http_is_401_algorithm_not_accepted() {
    let app = spawn_app().await;
    let claims = app.issuer.claims("mallory", AUD, 300);
    let token = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="jwtgate", error="invalid_token", error_description="algorithm not accepted""#
    );
    assert!(r.headers().get("x-auth-subject").is_none());
}

// A minimal DER writer, to build the RSA public key in the forms an HMAC-confusion attacker uses.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(big_endian: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = big_endian.iter().copied().skip_while(|&b| b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    der(0x02, &content)
}

/// The trusted RSA key as PKCS#1 `RSAPublicKey` DER and as X.509 `SubjectPublicKeyInfo` DER.
fn rsa_public_der() -> (Vec<u8>, Vec<u8>) {
    let jwk = RING.public_jwk("rs256-1");
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    let algorithm = der(
        0x30,
        &[&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01][..], &[0x05, 0x00][..]].concat(),
    );
    let bit_string = der(0x03, &[&[0u8][..], &pkcs1[..]].concat());
    let spki = der(0x30, &[algorithm, bit_string].concat());
    (pkcs1, spki)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// RFC 8725 §2.1 and §3.1 (CVE-2016-10555, CVE-2017-11424): HS256/384/512 keyed with the
/// issuer's published RSA key — as PEM (SPKI and PKCS#1), DER, JWK text and the bare modulus —
/// is an algorithm refusal: HMAC is never verified with a published key.
#[test]
fn hmac_keyed_with_the_rsa_public_key_in_any_form_is_refused() {
    let (pkcs1, spki) = rsa_public_der();
    // The DER really is the trusted key: it verifies an honest RS256 token.
    let honest = rs256(&claims());
    let (input, sig) = honest.rsplit_once('.').unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, &pkcs1)
        .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        .expect("the hand-built PKCS#1 DER is the trusted key");

    let jwk = RING.public_jwk("rs256-1");
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let pem_spki = pem("PUBLIC KEY", &spki);
    let pem_pkcs1 = pem("RSA PUBLIC KEY", &pkcs1);
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("PEM SPKI", pem_spki.clone().into_bytes()),
        ("PEM SPKI without final newline", pem_spki.trim_end().as_bytes().to_vec()),
        ("PEM PKCS#1", pem_pkcs1.into_bytes()),
        ("DER SPKI", spki),
        ("DER PKCS#1", pkcs1),
        ("JWK text", jwk.to_string().into_bytes()),
        ("JWK pretty", serde_json::to_string_pretty(&jwk).unwrap().into_bytes()),
        ("modulus", n),
    ];
    for (hs, digest) in [("HS256", hmac::HMAC_SHA256), ("HS384", hmac::HMAC_SHA384), ("HS512", hmac::HMAC_SHA512)] {
        for kid in [Some("rs256-1"), None] {
            let mut header = json!({"alg": hs, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            for (form, secret) in &secrets {
                let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims().to_string().as_bytes()));
                let tag = hmac::sign(&hmac::Key::new(digest, secret), input.as_bytes());
                let token = format!("{input}.{}", b64(tag.as_ref()));
                assert_eq!(DEFAULT.reason(&token), "algorithm", "{hs} {kid:?} keyed with {form}");
            }
        }
    }
}

/// RFC 8725 §3.1: HMAC and `none` cannot even be configured.
#[test]
fn hmac_and_none_cannot_be_put_in_the_allow_list() {
    for alg in ["HS256", "HS384", "HS512", "none"] {
        let yaml =
            format!("issuers:\n  - {{name: a, issuer: 'https://a.example', audiences: [x], algorithms: [{alg}]}}\n");
        let err = Config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(err.contains("issuers[0].algorithms[0]"), "{alg}: {err}");
    }
}

/// RFC 8725 §3.10 (CVE-2018-0114): an embedded `jwk` header carrying the attacker's key is never
/// used. Under the attacker's own kid the key is unknown; under the trusted kid (or no kid) the
/// trusted key is used and the signature fails.
#[test]
fn embedded_jwk_header_with_an_attacker_key_is_refused() {
    for (signer, attacker_alg, hdr_alg) in
        [("evil-rsa", Algorithm::RS256, "RS256"), ("evil-ed", Algorithm::EdDSA, "EdDSA")]
    {
        let jwk = ATTACKER.public_jwk(signer);
        let sign = |header: Value| {
            ATTACKER.sign_raw(signer, attacker_alg, header.to_string().as_bytes(), claims().to_string().as_bytes())
        };
        let own_kid = sign(json!({"alg": hdr_alg, "kid": signer, "jwk": jwk}));
        assert_eq!(DEFAULT.reason(&own_kid), "unknown_key", "{signer} under its own kid");
        let trusted_kid = if hdr_alg == "RS256" { "rs256-1" } else { "eddsa-1" };
        let victim_kid = sign(json!({"alg": hdr_alg, "kid": trusted_kid, "jwk": jwk}));
        assert_eq!(DEFAULT.reason(&victim_kid), "bad_signature", "{signer} under the trusted kid");
        let no_kid = sign(json!({"alg": hdr_alg, "jwk": jwk}));
        assert_eq!(DEFAULT.reason(&no_kid), "bad_signature", "{signer} without kid");
        // `x5c` is no better than `jwk` (RFC 8725 §3.10).
        let x5c = sign(json!({"alg": hdr_alg, "kid": trusted_kid, "x5c": [STANDARD.encode(b"not a certificate")]}));
        assert_eq!(DEFAULT.reason(&x5c), "bad_signature", "{signer} with x5c");
    }
    // A symmetric `jwk` with HMAC: the algorithm is refused before any key is looked at.
    let secret = b"attacker secret";
    let header = json!({"alg": "HS256", "jwk": {"kty": "oct", "k": b64(secret)}});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims().to_string().as_bytes()));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    assert_eq!(DEFAULT.reason(&format!("{input}.{}", b64(tag.as_ref()))), "algorithm");
}

/// RFC 8725 §3.10: `jku` and `x5u` are never followed. Tokens pointing at an attacker's issuer
/// are refused, and that issuer never sees a request (no SSRF, no attacker-chosen keys).
#[tokio::test]
async fn jku_and_x5u_headers_are_never_fetched() {
    let app = spawn_app().await;
    let attacker = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    attacker.add_key("evil-1", Algorithm::RS256);
    let claims = app.issuer.claims("mallory", AUD, 300);
    let cases = [
        // The attacker's own rs256-1 under the trusted kid: the trusted key fails the signature.
        (
            json!({"alg": "RS256", "kid": "rs256-1", "jku": attacker.jwks_uri()}),
            "rs256-1",
            "signature verification failed",
        ),
        (
            json!({"alg": "RS256", "kid": "rs256-1", "x5u": format!("{}/cert.pem", attacker.issuer())}),
            "rs256-1",
            "signature verification failed",
        ),
        // A kid only the attacker publishes: unknown, whatever jku says.
        (
            json!({"alg": "RS256", "kid": "evil-1", "jku": attacker.jwks_uri(), "x5u": attacker.jwks_uri()}),
            "evil-1",
            "signing key not found",
        ),
    ];
    for (header, kid, description) in cases {
        let token =
            attacker.sign_raw(kid, Algorithm::RS256, header.to_string().as_bytes(), claims.to_string().as_bytes());
        let r = app.verify(Some(&token), "").await;
        assert_eq!(r.status(), 401, "{header}");
        assert_eq!(
            r.headers()["www-authenticate"],
            format!(r#"Bearer realm="jwtgate", error="invalid_token", error_description="{description}""#).as_str(),
            "{header}"
        );
    }
    // The attacker as `iss` too: not a configured issuer.
    let own = attacker.sign_raw(
        "evil-1",
        Algorithm::RS256,
        json!({"alg": "RS256", "kid": "evil-1", "jku": attacker.jwks_uri()}).to_string().as_bytes(),
        attacker.claims("mallory", AUD, 300).to_string().as_bytes(),
    );
    let r = app.verify(Some(&own), "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("issuer not accepted"));
    assert_eq!(attacker.jwks_hits(), 0, "the gate fetched the attacker's JWKS");
    assert_eq!(attacker.discovery_hits(), 0, "the gate fetched the attacker's discovery document");
}

/// RFC 8725 §3.10 (kid injection, e.g. CVE-2018-1000531-style lookups): a `kid` is only ever an
/// opaque lookup key in the issuer's own key set. Path traversal, quotes, NUL, CRLF and SQL are
/// unknown keys; a `kid` over 256 bytes is malformed.
#[test]
fn kid_injection_strings_are_unknown_keys_and_huge_kids_are_malformed() {
    for kid in INJECTION_KIDS {
        let token = signed("rs256-1", Algorithm::RS256, &json!({"alg": "RS256", "kid": kid}), &claims());
        assert_eq!(DEFAULT.reason(&token), "unknown_key", "{kid:?}");
    }
    let huge = "k".repeat(257);
    let token = signed("rs256-1", Algorithm::RS256, &json!({"alg": "RS256", "kid": huge}), &claims());
    assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("kid too long"));
    let not_string = signed("rs256-1", Algorithm::RS256, &json!({"alg": "RS256", "kid": ["rs256-1"]}), &claims());
    assert_eq!(DEFAULT.check(&not_string).unwrap_err(), AuthError::Malformed("kid is not a string"));
}

const INJECTION_KIDS: &[&str] = &[
    "../../etc/passwd",
    "../../../../../../dev/null",
    "/etc/passwd",
    "rs256-1' OR '1'='1",
    "\"rs256-1\"",
    "rs256-1\u{0}",
    "rs256-1\r\nX-Injected: 1",
    "1; DROP TABLE keys;--",
    "' UNION SELECT 'secret' --",
    "rs256-1 ",
    "RS256-1",
    "",
];

/// RFC 8725 §3.10 and the contract's kid-flood rule: over HTTP the injected kids are refused
/// with "signing key not found", cost at most one JWKS fetch in all (cooldown), never reach a
/// response header and never become a metric label.
#[tokio::test]
async fn kid_flood_with_injection_strings_costs_at_most_one_fetch() {
    let app = spawn_app_extra("jwks:\n  min_refresh_interval_seconds: 60\n").await;
    let (jwks_before, discovery_before) = (app.issuer.jwks_hits(), app.issuer.discovery_hits());
    let claims = app.issuer.claims("mallory", AUD, 300);
    for round in 0..3 {
        for kid in INJECTION_KIDS.iter().map(|k| format!("{k}{round}")) {
            let header = json!({"alg": "RS256", "kid": kid});
            let token = app.issuer.sign_raw(
                "rs256-1",
                Algorithm::RS256,
                header.to_string().as_bytes(),
                claims.to_string().as_bytes(),
            );
            let r = app.verify(Some(&token), "").await;
            assert_eq!(r.status(), 401, "{kid:?}");
            assert!(r.headers().get("x-injected").is_none());
            assert_eq!(
                r.headers()["www-authenticate"],
                r#"Bearer realm="jwtgate", error="invalid_token", error_description="signing key not found""#,
                "{kid:?}"
            );
        }
    }
    let huge = app.issuer.sign_raw(
        "rs256-1",
        Algorithm::RS256,
        json!({"alg": "RS256", "kid": "k".repeat(300)}).to_string().as_bytes(),
        claims.to_string().as_bytes(),
    );
    let r = app.verify(Some(&huge), "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains(r#"error_description="kid too long""#));
    assert!(
        app.issuer.jwks_hits() - jwks_before <= 1,
        "{} JWKS fetches for a kid flood",
        app.issuer.jwks_hits() - jwks_before
    );
    assert!(app.issuer.discovery_hits() - discovery_before <= 1);
    let metrics = app.metrics().await;
    for needle in ["passwd", "DROP", "UNION", "X-Injected"] {
        assert!(!metrics.contains(needle), "a kid reached the metrics: {needle}");
    }
    // The valid key still works after the flood.
    assert_eq!(app.verify(Some(&app.token("rs256-1")), "").await.status(), 200);
}

/// CVE-2022-21449 ("psychic signatures"): ECDSA signatures with r = s = 0, or r = s = n (the
/// P-256 group order), in the 64-byte fixed encoding of RFC 7518 §3.4, never verify; neither do
/// DER-encoded, truncated or all-zero EdDSA signatures.
#[test]
fn psychic_ecdsa_signatures_are_bad_signatures() {
    let n = hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551").unwrap();
    let honest = RING.sign("es256-1", &claims());
    let real_s = URL_SAFE_NO_PAD.decode(honest.rsplit_once('.').unwrap().1).unwrap()[32..].to_vec();
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "es256-1"});
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("r = s = 0", vec![0; 64]),
        ("r = s = n", [n.clone(), n.clone()].concat()),
        ("r = 0, s real", [vec![0; 32], real_s.clone()].concat()),
        ("r = n, s real", [n.clone(), real_s].concat()),
        ("r = s = 1", [[vec![0; 31], vec![1]].concat(), [vec![0; 31], vec![1]].concat()].concat()),
        ("DER r = s = 0", vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]),
        ("empty-ish", vec![0]),
    ];
    for (what, sig) in cases {
        assert_eq!(DEFAULT.reason(&forged(&header, &claims(), &sig)), "bad_signature", "{what}");
    }
    let ed = json!({"alg": "EdDSA", "kid": "eddsa-1"});
    assert_eq!(DEFAULT.reason(&forged(&ed, &claims(), &[0; 64])), "bad_signature", "Ed25519 all zero");
}

/// RFC 8725 §3.1 (algorithm substitution within RSA): a PKCS#1 v1.5 signature presented as PSS
/// and a PSS signature presented as PKCS#1 v1.5 are refused. With the JWK's `alg` pinning the
/// key, the mismatch is an algorithm refusal; with an unpinned key, the signature fails.
#[test]
fn rsa_pkcs1_and_pss_swapped_are_refused() {
    let ps_header = json!({"alg": "PS256", "kid": "rs256-1"});
    let rs_header = json!({"alg": "RS256", "kid": "rs256-1"});
    // Pinned (the JWK says RS256): PS256 never uses that key.
    assert_eq!(DEFAULT.reason(&signed("rs256-1", Algorithm::RS256, &ps_header, &claims())), "algorithm");
    assert_eq!(DEFAULT.reason(&signed("rs256-1", Algorithm::PS256, &ps_header, &claims())), "algorithm");

    // Unpinned: the same key may do both schemes, but each signature only under its own.
    let mut jwks = RING.jwks();
    for k in jwks["keys"].as_array_mut().unwrap() {
        k.as_object_mut().unwrap().remove("alg");
    }
    let unpinned = Pure::with_jwks("", jwks);
    assert_eq!(unpinned.reason(&signed("rs256-1", Algorithm::RS256, &ps_header, &claims())), "bad_signature");
    assert_eq!(unpinned.reason(&signed("rs256-1", Algorithm::PS256, &rs_header, &claims())), "bad_signature");
    // Controls: each scheme under its own name verifies.
    assert_eq!(unpinned.reason(&signed("rs256-1", Algorithm::PS256, &ps_header, &claims())), "ok");
    assert_eq!(unpinned.reason(&signed("rs256-1", Algorithm::RS256, &rs_header, &claims())), "ok");
    // ES256 bytes under an RSA header, and RSA bytes under ES256 for the EC kid.
    let es_on_rsa = signed("es256-1", Algorithm::ES256, &rs_header, &claims());
    assert_eq!(unpinned.reason(&es_on_rsa), "bad_signature");
    let rsa_as_es = signed("rs256-1", Algorithm::RS256, &json!({"alg": "ES256", "kid": "es256-1"}), &claims());
    assert_eq!(unpinned.reason(&rsa_as_es), "bad_signature");
}

/// Regression (found while writing the `jwks` fuzz target, which reproduces it): an RSA JWK
/// whose modulus is empty or only zero bytes is skipped as a 0-bit key next to the good keys.
/// The bit count used to underflow: a panic in debug builds (the fuzz and test profiles), a
/// wrong "over 8192 bits" in release.
#[test]
fn rsa_jwk_with_an_empty_or_zero_modulus_is_skipped_not_a_crash() {
    for n in ["", "AA", "AAAA", "AAAAAAAA"] {
        let jwks = json!({"keys": [{"kty": "RSA", "kid": "zero", "n": n, "e": "AQAB"}, RING.public_jwk("rs256-1")]});
        let (keys, skipped) = KeySet::from_jwks(jwks.to_string().as_bytes(), 100).unwrap();
        assert_eq!(keys.len(), 1, "{n:?}");
        assert_eq!(skipped.len(), 1, "{n:?}");
        assert_eq!(skipped[0].why, "RSA key of 0 bits is under 2048", "{n:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Header parameters that change what is signed or how.
// ---------------------------------------------------------------------------------------------

/// RFC 7515 §4.1.11 and RFC 8725 §3.2: a `crit` header naming anything (we understand no
/// extension) is malformed, even an empty list.
#[test]
fn crit_header_is_refused() {
    for crit in [json!(["exp"]), json!(["http://example.com/ext"]), json!([]), json!("b64"), json!(["b64"])] {
        let header = json!({"alg": "RS256", "kid": "rs256-1", "crit": crit, "exp": NOW + 300});
        let token = signed("rs256-1", Algorithm::RS256, &header, &claims());
        assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("unsupported crit header"), "{crit}");
    }
}

/// RFC 7797: `b64` (unencoded payload) changes what the signature covers; refused in any value.
#[test]
fn b64_header_is_refused() {
    for b64_value in [json!(false), json!(true), json!("false")] {
        let header = json!({"alg": "RS256", "kid": "rs256-1", "b64": b64_value});
        let token = signed("rs256-1", Algorithm::RS256, &header, &claims());
        assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("unsupported b64 header"), "{b64_value}");
    }
}

/// RFC 7516 §4.1.2/§4.1.3 and the contract: JWE parameters `enc` and `zip` on a JWS are refused
/// rather than guessed at (a compressed or encrypted payload is not what was signed).
#[test]
fn zip_and_enc_on_a_jws_are_refused() {
    for (name, value) in [("zip", "DEF"), ("enc", "A256GCM"), ("zip", ""), ("enc", "none")] {
        let mut header = json!({"alg": "RS256", "kid": "rs256-1"});
        header[name] = json!(value);
        let token = signed("rs256-1", Algorithm::RS256, &header, &claims());
        assert_eq!(
            DEFAULT.check(&token).unwrap_err(),
            AuthError::Malformed("JWE header parameters on a JWS"),
            "{name}={value}"
        );
    }
}

/// RFC 8725 §2.6 and §3.7 (parser differentials, e.g. CVE-2017-12973-style duplicate members):
/// duplicate names in the JOSE header (two `alg`, two `kid`) or the claims (two `sub`, two
/// `exp`, escaped duplicates, nested duplicates) make the token malformed. Never first-wins,
/// never last-wins.
#[test]
fn duplicate_members_in_header_and_claims_are_malformed() {
    let good_claims = claims().to_string();
    let headers = [
        r#"{"alg":"RS256","kid":"rs256-1","alg":"none"}"#,
        r#"{"alg":"none","alg":"RS256","kid":"rs256-1"}"#,
        r#"{"alg":"RS256","alg":"RS256","kid":"rs256-1"}"#,
        r#"{"alg":"RS256","kid":"evil","kid":"rs256-1"}"#,
        r#"{"alg":"RS256","kid":"rs256-1","typ":"JWT","typ":"at+jwt"}"#,
        r#"{"alg":"RS256","kid":"rs256-1","\u0061lg":"RS256"}"#,
    ];
    for h in headers {
        let token = signed_raw("rs256-1", Algorithm::RS256, h, &good_claims);
        assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("duplicate member name"), "{h}");
    }
    let h = rs_header().to_string();
    let payloads = [
        format!(r#"{{"iss":"{ISS}","sub":"alice","sub":"admin","aud":"{AUD}","exp":{}}}"#, NOW + 300),
        format!(r#"{{"iss":"{ISS}","sub":"alice","s\u0075b":"admin","aud":"{AUD}","exp":{}}}"#, NOW + 300),
        format!(r#"{{"iss":"{ISS}","sub":"alice","aud":"{AUD}","exp":{},"exp":{}}}"#, NOW - 300, NOW + 300),
        format!(r#"{{"iss":"{ISS}","iss":"https://evil.example","sub":"a","aud":"{AUD}","exp":{}}}"#, NOW + 300),
        format!(r#"{{"iss":"{ISS}","sub":"a","aud":"other","aud":"{AUD}","exp":{}}}"#, NOW + 300),
        format!(
            r#"{{"iss":"{ISS}","sub":"a","aud":"{AUD}","exp":{},"realm_access":{{"roles":["u"],"roles":["a"]}}}}"#,
            NOW + 300
        ),
    ];
    for p in &payloads {
        let token = signed_raw("rs256-1", Algorithm::RS256, &h, p);
        assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("duplicate member name"), "{p}");
    }
}

/// RFC 8725 §2.6 over HTTP: two `sub` values never produce an identity header (nginx would
/// otherwise pass one parser's reading to the upstream).
#[tokio::test]
async fn duplicate_sub_over_http_is_401_without_identity_headers() {
    let app = spawn_app().await;
    let exp = jwtgate::gate::unix_now() + 300;
    let payload =
        format!(r#"{{"iss":"{}","sub":"alice","sub":"admin","aud":"{AUD}","exp":{exp}}}"#, app.issuer.issuer());
    let header = json!({"alg": "RS256", "kid": "rs256-1"}).to_string();
    let token = app.issuer.sign_raw("rs256-1", Algorithm::RS256, header.as_bytes(), payload.as_bytes());
    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="jwtgate", error="invalid_token", error_description="duplicate member name""#
    );
    assert!(r.headers().get("x-auth-subject").is_none());
}

// ---------------------------------------------------------------------------------------------
// Encoding and shape.
// ---------------------------------------------------------------------------------------------

const URL_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The same segment with a non-zero unused trailing bit: decodes to the same bytes under a
/// lenient decoder, so it is a second spelling of one token.
fn with_trailing_bit(segment: &str) -> String {
    assert!(!segment.len().is_multiple_of(4), "a segment without trailing bits");
    let last = *segment.as_bytes().last().unwrap();
    let index = URL_ALPHABET.iter().position(|&c| c == last).unwrap();
    let mut out = segment[..segment.len() - 1].to_string();
    out.push(URL_ALPHABET[index ^ 1] as char);
    out
}

/// A token whose three segments each contain `-` or `_` (so a standard-alphabet spelling exists).
fn token_with_url_only_characters() -> String {
    for i in 0.. {
        let header = json!({"alg": "RS256", "kid": "rs256-1", "n": "?".repeat(i % 7)});
        let token = signed("rs256-1", Algorithm::RS256, &header, &claims_with("x", json!("~".repeat(i))));
        if token.split('.').all(|s| s.contains(['-', '_'])) {
            return token;
        }
    }
    unreachable!()
}

/// RFC 7515 §2 and RFC 8725 §3.7: base64url without padding, canonical trailing bits, the URL
/// alphabet only, no whitespace. Every other spelling of a token is malformed (one token, one
/// reading, one cache entry).
#[test]
fn non_canonical_base64url_is_malformed() {
    let token = token_with_url_only_characters();
    assert_eq!(DEFAULT.reason(&token), "ok");
    let parts: Vec<&str> = token.split('.').collect();
    let respell = |i: usize, f: &dyn Fn(&str) -> String| {
        let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        p[i] = f(&p[i]);
        p.join(".")
    };
    for (i, segment) in ["header", "payload", "signature"].iter().enumerate() {
        let cases: Vec<(&str, String)> = vec![
            ("padding =", respell(i, &|s| format!("{s}="))),
            ("padding ==", respell(i, &|s| format!("{s}=="))),
            ("standard alphabet", respell(i, &|s| s.replace('-', "+").replace('_', "/"))),
            ("inner space", respell(i, &|s| format!("{} {}", &s[..4], &s[4..]))),
            ("inner newline", respell(i, &|s| format!("{}\n{}", &s[..4], &s[4..]))),
            ("percent-encoded", respell(i, &|s| s.replace('-', "%2D").replace('_', "%5F"))),
        ];
        for (what, t) in cases {
            assert_eq!(DEFAULT.reason(&t), "malformed", "{segment}: {what}");
        }
        if !parts[i].len().is_multiple_of(4) {
            assert_eq!(DEFAULT.reason(&respell(i, &with_trailing_bit)), "malformed", "{segment}: trailing bits");
        }
    }
    // The RSA signature (256 bytes, 342 characters) always has trailing bits to abuse.
    assert!(!parts[2].len().is_multiple_of(4));
}

/// RFC 7515 §7.1 and RFC 8725 §3.9/§3.12: a JWS has exactly three segments. Four or five
/// (JWE-shaped), a real JWE compact token, and fewer are malformed before any key work.
#[test]
fn wrong_segment_counts_and_jwe_tokens_are_malformed() {
    let t = rs256(&claims());
    let jwe_header = b64(json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rs256-1"}).to_string().as_bytes());
    let jwe = format!("{jwe_header}.{}.{}.{}.{}", b64(&[7; 256]), b64(&[1; 12]), b64(b"ciphertext"), b64(&[2; 16]));
    let (h, rest) = t.split_once('.').unwrap();
    let (p, _) = rest.split_once('.').unwrap();
    let cases = [
        ("4 segments", format!("{t}.{}", b64(b"extra"))),
        ("5 segments", format!("{t}.{}.{}", b64(b"iv"), b64(b"tag"))),
        ("trailing dot", format!("{t}.")),
        ("JWE compact", jwe.clone()),
        ("JWE with an empty key", format!("{jwe_header}..{}.{}.{}", b64(&[1; 12]), b64(b"c"), b64(&[2; 16]))),
        ("2 segments", format!("{h}.{p}")),
        ("1 segment", h.to_string()),
        ("empty payload", format!("{h}..{}", t.rsplit_once('.').unwrap().1)),
        ("empty header", format!(".{p}.{}", t.rsplit_once('.').unwrap().1)),
        ("dots only", "..".to_string()),
        ("empty", String::new()),
    ];
    for (what, token) in cases {
        assert_eq!(DEFAULT.reason(&token), "malformed", "{what}");
    }
    // A JWE protected header on a three-segment token is refused for its `enc`.
    let three = format!("{jwe_header}.{p}.{}", t.rsplit_once('.').unwrap().1);
    assert_eq!(DEFAULT.check(&three).unwrap_err(), AuthError::Malformed("JWE header parameters on a JWS"));
}

/// Finds the `jwtgate_decisions_total` value for a reason.
fn decisions(metrics: &str, reason: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("jwtgate_decisions_total{") && l.contains(&format!(r#"reason="{reason}""#)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// RFC 8725 §3.9 and the contract: a token longer than `token.max_bytes` is a 401 `too_large`
/// before any parsing (garbage of that size is too large, not malformed), and the limit is the
/// configured one.
#[tokio::test]
async fn oversized_tokens_are_401_too_large_before_parsing() {
    let app = spawn_app().await;
    let garbage = "!".repeat(8193);
    let r = app.verify(Some(&garbage), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="jwtgate", error="invalid_token", error_description="token too large""#
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    // The same garbage under the limit is malformed: size is checked first.
    let r = app.verify(Some(&garbage[..8000]), "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains(r#"error_description="not a compact JWS""#));
    let mut claims = app.issuer.claims("alice", AUD, 300);
    claims["pad"] = json!("p".repeat(7000));
    let big = app.sign("es256-1", &claims);
    assert!(big.len() > 8192, "{}", big.len());
    let r = app.verify(Some(&big), "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("token too large"));
    assert_eq!(decisions(&app.metrics().await, "too_large"), 2.0);

    // A configured limit: a valid token just under it passes, the same token padded over fails.
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", "token:\n  max_bytes: 1024\n");
    let small = spawn_app_with(issuer, &yaml).await;
    small.wait_ready().await;
    let ok = small.token("es256-1");
    assert!(ok.len() <= 1024);
    assert_eq!(small.verify(Some(&ok), "").await.status(), 200);
    let mut claims = small.issuer.claims("alice", AUD, 300);
    claims["pad"] = json!("p".repeat(1024));
    let r = small.verify(Some(&small.sign("es256-1", &claims)), "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("token too large"));
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// RFC 8725 §3.9 (resource exhaustion): deeply nested JSON in the claims or the header is
/// malformed, without recursing deeply (a 100 000-level token must not overflow the stack);
/// moderate nesting is fine.
#[test]
fn deeply_nested_json_is_malformed_and_moderate_nesting_is_fine() {
    let h = rs_header().to_string();
    let base =
        |deep: &str| format!(r#"{{"iss":"{ISS}","sub":"alice","aud":"{AUD}","exp":{},"deep":{deep}}}"#, NOW + 300);
    for depth in [40, 1_000, 100_000] {
        let token = signed_raw("rs256-1", Algorithm::RS256, &h, &base(&nested(depth)));
        assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("invalid JSON"), "claims depth {depth}");
        let deep_header = format!(r#"{{"alg":"RS256","kid":"rs256-1","x":{}}}"#, nested(depth));
        let token = signed_raw("rs256-1", Algorithm::RS256, &deep_header, &claims().to_string());
        assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("invalid JSON"), "header depth {depth}");
    }
    let objects = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
    let token = signed_raw("rs256-1", Algorithm::RS256, &h, &base(&objects));
    assert_eq!(DEFAULT.reason(&token), "malformed", "nested objects");
    let token = signed_raw("rs256-1", Algorithm::RS256, &h, &base(&nested(20)));
    assert_eq!(DEFAULT.reason(&token), "ok", "depth 20");
}

// ---------------------------------------------------------------------------------------------
// Claims: types and values.
// ---------------------------------------------------------------------------------------------

/// RFC 7519 §2 (NumericDate) and RFC 8725 §3.9 with the contract: `exp`, `nbf` and `iat` must
/// be JSON numbers; strings, booleans, null, arrays and objects are malformed.
#[test]
fn time_claims_of_the_wrong_type_are_malformed() {
    for claim in ["exp", "nbf", "iat"] {
        for value in [
            json!((NOW + 300).to_string()),
            json!(true),
            json!(false),
            Value::Null,
            json!([NOW + 300]),
            json!({"t": NOW + 300}),
            json!("NaN"),
            json!("Infinity"),
            json!("-Infinity"),
            json!(""),
        ] {
            let token = rs256(&claims_with(claim, value.clone()));
            assert_eq!(
                DEFAULT.check(&token).unwrap_err(),
                AuthError::Malformed("time claim is not a number"),
                "{claim}={value}"
            );
        }
    }
}

/// RFC 7493 §2.2 (I-JSON safe integers) and the contract: NumericDates outside ±(2^53−1) are
/// malformed, as are literals that are not JSON (NaN, Infinity) or overflow a double (1e400).
#[test]
fn time_claims_with_extreme_values_are_malformed() {
    let too_big = 9_007_199_254_740_993_u64; // 2^53 + 1: would round to 2^53 as a double
    for claim in ["exp", "nbf", "iat"] {
        for value in [
            json!(1e300),
            json!(-1e300),
            json!(too_big),
            json!(1u64 << 53),
            json!(-(too_big as i64)),
            json!(i64::MIN),
            json!(u64::MAX),
        ] {
            let token = rs256(&claims_with(claim, value.clone()));
            assert_eq!(
                DEFAULT.check(&token).unwrap_err(),
                AuthError::Malformed("time claim out of range"),
                "{claim}={value}"
            );
        }
        for literal in ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "0x10", "+1", "01"] {
            let exp = if claim == "exp" { String::new() } else { format!(r#","exp":{}"#, NOW + 300) };
            let payload = format!(r#"{{"iss":"{ISS}","sub":"a","aud":"{AUD}"{exp},"{claim}":{literal}}}"#);
            let token = signed_raw("rs256-1", Algorithm::RS256, &rs_header().to_string(), &payload);
            assert_eq!(DEFAULT.check(&token).unwrap_err(), AuthError::Malformed("invalid JSON"), "{claim}={literal}");
        }
    }
}

/// RFC 7519 §4.1.4/§4.1.5/§4.1.6 with the contract's leeway: in-range but odd values decide by
/// time — negative `exp` is expired, negative `nbf`/`iat` are in the past, the largest safe
/// `nbf` is not yet valid, the largest safe `exp` is fine, and fractional dates are allowed.
#[test]
fn time_claims_with_in_range_values_are_judged_by_time() {
    let max_safe = 9_007_199_254_740_991_i64;
    let cases = [
        (claims_with("exp", json!(-1)), "expired"),
        (claims_with("exp", json!(0)), "expired"),
        (claims_with("exp", json!(NOW - 31)), "expired"),
        (claims_with("exp", json!(NOW - 29)), "ok"), // inside the 30 s leeway
        (claims_with("exp", json!(max_safe)), "ok"),
        (claims_with("exp", json!(NOW as f64 + 300.5)), "ok"),
        (claims_with("exp", json!(1e3)), "expired"),
        (claims_with("nbf", json!(-1)), "ok"),
        (claims_with("iat", json!(-(max_safe))), "ok"),
        (claims_with("nbf", json!(max_safe)), "not_yet_valid"),
        (claims_with("iat", json!(NOW + 31)), "not_yet_valid"),
        (claims_with("nbf", json!(NOW + 29)), "ok"),
    ];
    for (c, want) in cases {
        assert_eq!(DEFAULT.reason(&rs256(&c)), want, "{c}");
    }
}

/// RFC 8725 §3.9 and the contract: `exp` is required.
#[test]
fn missing_exp_is_malformed() {
    assert_eq!(DEFAULT.check(&rs256(&claims_without("exp"))).unwrap_err(), AuthError::Malformed("missing exp"));
}

/// RFC 8725 §3.8 and RFC 7519 §4.1.1: `iss` is one string compared exactly; an array (even one
/// holding the right issuer) or another type is malformed; near misses are the wrong issuer.
#[test]
fn iss_must_be_exactly_one_configured_string() {
    for value in
        [json!([ISS]), json!([ISS, "https://evil.example"]), json!(1), json!({"iss": ISS}), Value::Null, json!(true)]
    {
        assert_eq!(
            DEFAULT.check(&rs256(&claims_with("iss", value.clone()))).unwrap_err(),
            AuthError::Malformed("iss is not a string"),
            "{value}"
        );
    }
    for value in [
        format!("{ISS}/"),
        ISS.to_uppercase(),
        format!("{ISS} "),
        format!(" {ISS}"),
        ISS.replace("https", "http"),
        format!("{ISS}\u{0}"),
        String::new(),
    ] {
        assert_eq!(DEFAULT.reason(&rs256(&claims_with("iss", json!(value)))), "issuer", "{value:?}");
    }
    assert_eq!(DEFAULT.reason(&rs256(&claims_without("iss"))), "issuer");
}

/// RFC 8725 §3.9 and RFC 7519 §4.1.3: `aud` is a string or an array of strings compared
/// exactly. Empty values, prefixes, case and whitespace variants are the wrong audience; other
/// types, or arrays with non-strings, are malformed.
#[test]
fn aud_edge_values_are_refused_precisely() {
    let audience = [
        json!(""),
        json!([]),
        json!([""]),
        json!("orders"),
        json!("orders-api-evil"),
        json!("evil-orders-api"),
        json!("ORDERS-API"),
        json!("Orders-Api"),
        json!(" orders-api"),
        json!("orders-api "),
        json!("orders-api\u{0}"),
        json!("orders-api,other"),
        json!("orders-api other"),
        json!(["orders"]),
    ];
    for value in audience {
        assert_eq!(DEFAULT.reason(&rs256(&claims_with("aud", value.clone()))), "audience", "{value}");
    }
    assert_eq!(DEFAULT.reason(&rs256(&claims_without("aud"))), "audience", "missing aud");
    let malformed = [
        json!([1, AUD]),
        json!([AUD, null]),
        json!([[AUD]]),
        json!([{"aud": AUD}]),
        json!({AUD: true}),
        json!(42),
        json!(true),
        Value::Null,
    ];
    for value in malformed {
        assert_eq!(DEFAULT.reason(&rs256(&claims_with("aud", value.clone()))), "malformed", "{value}");
    }
    // Controls: a string, and an array holding the audience among others.
    assert_eq!(DEFAULT.reason(&rs256(&claims_with("aud", json!(AUD)))), "ok");
    assert_eq!(DEFAULT.reason(&rs256(&claims_with("aud", json!(["other", AUD])))), "ok");
}

/// The rendered identity headers of an accepted token, by name.
fn header_value(identity: &Identity, name: &str) -> String {
    identity.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap().to_string()).unwrap()
}

/// Decodes RFC 2047 encoded words separated by spaces (panics on a plain value).
fn decode_word(value: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in value.split(' ') {
        let b64 =
            word.strip_prefix("=?UTF-8?B?").and_then(|v| v.strip_suffix("?=")).unwrap_or_else(|| panic!("{value}"));
        bytes.extend(STANDARD.decode(b64).unwrap());
    }
    bytes
}

/// An array header read back: JSON (itself encoded when not visible ASCII) when it starts with
/// `[`, else split on `,`.
fn decode_array(value: &str) -> Value {
    let text = if value.starts_with("=?") { String::from_utf8(decode_word(value)).unwrap() } else { value.to_string() };
    if text.starts_with('[') {
        serde_json::from_str(&text).unwrap()
    } else {
        Value::Array(text.split(',').map(|s| json!(s)).collect())
    }
}

const HOSTILE_CLAIMS: &[&str] = &[
    "alice\r\nX-Injected: 1",
    "nul\0byte",
    "Zoë",
    "\u{202e}gnp.exe",
    "tab\there",
    " padded ",
    "=?UTF-8?B?Zm9v?=",
    "\u{7f}",
];

/// RFC 8725 §3.11 spirit and the contract (header injection into upstreams): claims with CR,
/// LF, NUL, other controls or non-ASCII are accepted and emitted as RFC 2047 encoded words
/// that are visible ASCII and decode back to exactly the claim.
#[test]
fn control_and_non_ascii_claims_are_emitted_losslessly_as_visible_ascii() {
    for raw in HOSTILE_CLAIMS {
        let mut c = claims_with("sub", json!(raw));
        c["email"] = json!(raw);
        c["realm_access"] = json!({"roles": [raw, "user"]});
        let identity = DEFAULT.check(&rs256(&c)).unwrap_or_else(|e| panic!("{raw:?}: {e:?}"));
        for (name, value) in &identity.headers {
            assert!(value.as_bytes().iter().all(|b| (0x20..=0x7e).contains(b)), "{name}: {value:?}");
        }
        assert_eq!(decode_word(&header_value(&identity, "x-auth-subject")), raw.as_bytes());
        assert_eq!(decode_word(&header_value(&identity, "x-auth-email")), raw.as_bytes());
        // An element that needs encoding makes the array compact JSON (encoded when not ASCII).
        assert_eq!(decode_array(&header_value(&identity, "x-auth-roles")), json!([raw, "user"]));
    }
    // Plain visible ASCII is passed through unchanged.
    let identity = DEFAULT.check(&rs256(&claims_with("sub", json!("alice@example.com")))).unwrap();
    assert_eq!(header_value(&identity, "x-auth-subject"), "alice@example.com");
}

/// The same over HTTP: nothing the token says becomes a response header of its own.
#[tokio::test]
async fn control_and_non_ascii_claims_over_http_never_inject_headers() {
    let app = spawn_app().await;
    for raw in HOSTILE_CLAIMS {
        let mut claims = app.issuer.claims(raw, AUD, 300);
        claims["email"] = json!(raw);
        let r = app.verify(Some(&app.sign("eddsa-1", &claims)), "").await;
        assert_eq!(r.status(), 200, "{raw:?}");
        assert!(r.headers().get("x-injected").is_none(), "{raw:?}");
        let sub = r.headers()["x-auth-subject"].to_str().unwrap();
        assert_eq!(decode_word(sub), raw.as_bytes(), "{raw:?}");
        let email = r.headers()["x-auth-email"].to_str().unwrap();
        assert_eq!(decode_word(email), raw.as_bytes(), "{raw:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Per-issuer policy options.
// ---------------------------------------------------------------------------------------------

/// RFC 8725 §3.11 / RFC 9068 §2.1 and §4: with `required_typ`, the JOSE `typ` must match,
/// case-insensitively and with or without the `application/` prefix; anything else (including
/// no `typ`) is reason `token_type`. Without the option, `typ` is not required to be `JWT`.
#[test]
fn required_typ_is_enforced_case_insensitively_with_optional_application_prefix() {
    let strict = Pure::new("required_typ: at+jwt");
    let header = |typ: Option<&str>| {
        let mut h = json!({"alg": "ES256", "kid": "es256-1"});
        if let Some(t) = typ {
            h["typ"] = json!(t);
        }
        h
    };
    let token = |typ: Option<&str>| signed("es256-1", Algorithm::ES256, &header(typ), &claims());
    for typ in ["at+jwt", "AT+JWT", "At+Jwt", "application/at+jwt", "APPLICATION/AT+JWT", "Application/at+JWT"] {
        assert_eq!(strict.reason(&token(Some(typ))), "ok", "{typ}");
    }
    for typ in [
        None,
        Some("JWT"),
        Some("jwt"),
        Some("at+jwt "),
        Some("xapplication/at+jwt"),
        Some("application/jwt"),
        Some(""),
    ] {
        assert_eq!(strict.reason(&token(typ)), "token_type", "{typ:?}");
    }
    let numeric = signed("es256-1", Algorithm::ES256, &json!({"alg": "ES256", "kid": "es256-1", "typ": 1}), &claims());
    assert_eq!(strict.check(&numeric).unwrap_err(), AuthError::Malformed("typ is not a string"));
    // The option configured with the prefix matches the short form too.
    let prefixed = Pure::new("required_typ: application/at+jwt");
    assert_eq!(prefixed.reason(&token(Some("at+jwt"))), "ok");
    assert_eq!(prefixed.reason(&token(Some("JWT"))), "token_type");
    // Without the option: any typ or none (RFC 9068 access tokens say at+jwt).
    for typ in [None, Some("at+jwt"), Some("JWT"), Some("anything")] {
        assert_eq!(DEFAULT.reason(&token(typ)), "ok", "{typ:?}");
    }
}

/// RFC 8725 §3.9 spirit (bounded token lifetime): with `max_token_lifetime_seconds`, a token
/// whose `exp` is further ahead than that (plus the leeway) is reason `lifetime`.
#[test]
fn max_token_lifetime_is_enforced_with_the_leeway() {
    let capped = Pure::new("max_token_lifetime_seconds: 3600\nleeway_seconds: 30");
    let cases = [
        (NOW + 60, "ok"),
        (NOW + 3600, "ok"),
        (NOW + 3630, "ok"),
        (NOW + 3631, "lifetime"),
        (NOW + 86_400, "lifetime"),
        (9_007_199_254_740_991, "lifetime"),
        (NOW - 60, "expired"),
    ];
    for (exp, want) in cases {
        assert_eq!(capped.reason(&rs256(&claims_with("exp", json!(exp)))), want, "exp = now + {}", exp - NOW);
    }
    // Without the option, a long-lived token is fine.
    assert_eq!(DEFAULT.reason(&rs256(&claims_with("exp", json!(NOW + 86_400 * 365)))), "ok");
}

/// Both policy options over HTTP: 401 with the matching `error_description`, 200 when met.
#[tokio::test]
async fn policy_options_over_http_refuse_wrong_typ_and_long_lifetime() {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, &issuer_keys("max_token_lifetime_seconds: 600\nrequired_typ: at+jwt"), "");
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    let at_jwt = |ttl: i64| {
        let header = json!({"alg": "ES256", "typ": "application/AT+JWT", "kid": "es256-1"});
        let claims = app.issuer.claims("svc", AUD, ttl);
        app.issuer.sign_raw("es256-1", Algorithm::ES256, header.to_string().as_bytes(), claims.to_string().as_bytes())
    };
    let challenge = |d: &str| format!(r#"Bearer realm="jwtgate", error="invalid_token", error_description="{d}""#);

    let r = app.verify(Some(&at_jwt(300)), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "svc");

    let r = app.verify(Some(&app.token("es256-1")), "").await; // typ JWT
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], challenge("token type not accepted").as_str());

    let r = app.verify(Some(&at_jwt(7200)), "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], challenge("token lifetime too long").as_str());

    let metrics = app.metrics().await;
    assert_eq!(decisions(&metrics, "token_type"), 1.0);
    assert_eq!(decisions(&metrics, "lifetime"), 1.0);
}
