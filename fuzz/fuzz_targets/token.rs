//! Fuzzes the decision core with a fixed key set: `Jws::parse` and `validate::validate` on
//! arbitrary tokens, and on arbitrary header/claims bytes that carry a real signature.
//!
//! Input: the first byte picks the mode, the rest is the material.
//! - even: the rest is a compact token. Signing keys are generated afresh at start-up and
//!   never leave this process, so no input can carry a valid signature: an `Ok` is a forgery
//!   (alg `none`, key confusion, a skipped check) and fails the run.
//! - odd: the rest is `header JSON \n claims JSON`, signed for real with the Ed25519 key, so
//!   everything after the signature check (claims, audience, scopes, identity headers) is
//!   reached. Whatever passes must render only well-formed header values, and then goes through
//!   the authorize stage (`claim.` requirements, step-up, CEL policies over the fuzzed claims),
//!   which must answer without panicking.
#![no_main]

use std::sync::LazyLock;

use jwtgate::algorithm::Algorithm;
use jwtgate::authorization::authorize;
use jwtgate::config::Config;
use jwtgate::dev_issuer::KeyRing;
use jwtgate::keys::KeySet;
use jwtgate::policy::Policy;
use jwtgate::validate::{Jws, validate};
use libfuzzer_sys::fuzz_target;

/// A fixed "now" (2023-11-14): time checks must not depend on when the fuzzer runs.
const NOW: i64 = 1_700_000_000;

struct Fixture {
    ring: KeyRing,
    keys: KeySet,
    config: Config,
    policies: Vec<Policy>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let ring = KeyRing::standard();
    let (keys, skipped) = KeySet::from_jwks(ring.jwks().to_string().as_bytes(), 100).expect("standard JWKS");
    assert!(skipped.is_empty() && keys.len() == 3, "the standard ring gives three usable keys");
    // Two issuers sharing the keys: one plain, one with the RFC 9068 / RFC 8725 §3.11 options.
    let config = Config::from_yaml(
        r#"
issuers:
  - name: main
    issuer: "https://issuer.fuzz"
    audiences: ["api"]
    algorithms: ["RS256", "ES256", "EdDSA"]
  - name: strict
    issuer: "https://strict.fuzz"
    audiences: ["api", "other"]
    algorithms: ["RS256", "ES256", "EdDSA", "PS256"]
    leeway_seconds: 0
    max_token_lifetime_seconds: 3600
    required_typ: "at+jwt"
    audience_claim: client_id
    scope_claims: [scope, scp, roles]
claims_to_headers:
  - {claim: sub, header: X-Auth-Subject}
  - {claim: iss, header: X-Auth-Issuer}
  - {claim: email, header: X-Auth-Email}
  - {claim: realm_access.roles, header: X-Auth-Roles}
  - {claim: "/https:~1~1example.com~1groups", header: X-Auth-Groups}
  - {claim: aud, header: X-Auth-Audience}
policies:
  admin: 'claims.realm_access.roles.exists(r, r == "admin")'
  method: 'request.method in ["GET", "HEAD"] || "editor" in claims.groups'
  arith: 'claims.n + 1 > claims.m * 2 && size(claims.sub) < 10 && claims.sub.matches("^[a-z]+$")'
"#,
    )
    .expect("fuzz config");
    let policies = [
        "",
        "scope=read",
        "aud=other&issuer=strict",
        "issuer=main&scope=read%20write",
        "claim.realm_access.roles=admin,user&claim./https:~1~1example.com~1groups=a",
        "acr=gold&max_age=300",
        "policy=admin,method",
        "policy=arith&claim.email_verified=true",
    ]
    .iter()
    .map(|q| Policy::parse(Some(q), &config).expect("fuzz policy"))
    .collect();
    Fixture { ring, keys, config, policies }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else { return };
    let policy = &f.policies[(mode as usize >> 1) % f.policies.len()];
    let keys = [&f.keys, &f.keys];
    if mode & 1 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else { return };
        let _ = Jws::parse(token);
        let result = validate(token, &f.config.issuers, &keys, &f.config.claims_to_headers, policy, NOW);
        assert!(result.is_err(), "a token signed by no one was accepted: {token:?}");
    } else {
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
        let token = f.ring.sign_raw("eddsa-1", Algorithm::EdDSA, header, claims);
        let parsed = Jws::parse(&token).is_ok();
        // Authenticated with no requirement (validate has no named policies), then authorized
        // with each of the fixture's policies, CEL ones included, over the fuzzed claims.
        let _ = validate(&token, &f.config.issuers, &keys, &f.config.claims_to_headers, policy, NOW);
        let result = validate(&token, &f.config.issuers, &keys, &f.config.claims_to_headers, &f.policies[0], NOW);
        if let Ok(identity) = result {
            assert!(parsed, "validate accepted what Jws::parse refused");
            assert!(identity.exp > NOW - 60, "an expired token was accepted");
            for (name, value) in &identity.headers {
                assert!(
                    value.as_bytes().iter().all(|b| (0x20..=0x7e).contains(b)),
                    "{name}: header value is not visible ASCII: {value:?}"
                );
            }
            let mut request = http::HeaderMap::new();
            request.insert("x-original-method", http::HeaderValue::from_static("GET"));
            request.insert("x-original-url", http::HeaderValue::from_static("https://app.fuzz/a?b"));
            for p in &f.policies {
                let _ = authorize(&identity, p, &f.config.issuers[identity.issuer], &f.config.policies, &request, NOW);
            }
        }
    }
});
