//! Fuzzes JWKS parsing (`KeySet::from_jwks`) and key selection: a hostile or broken identity
//! provider must never crash the gate, and whatever it publishes is either a usable key or
//! skipped with a reason.
#![no_main]

use jsonwebtoken::Algorithm;
use jwtgate::keys::{KeyFamily, KeySet};
use libfuzzer_sys::fuzz_target;

const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fuzz_target!(|data: &[u8]| {
    let Ok((keys, skipped)) = KeySet::from_jwks(data, 8) else { return };
    assert!(keys.len() <= 8, "the key cap was exceeded");
    for s in &skipped {
        assert!(!s.why.is_empty());
    }
    for key in keys.keys() {
        // Every kept key verifies exactly the algorithms of its family (and its JWK `alg`).
        for alg in ALGORITHMS {
            let fits = KeyFamily::for_algorithm(alg) == Some(key.family) && key.alg.is_none_or(|a| a == alg);
            assert_eq!(key.fits(alg), fits);
            if let Ok(selected) = keys.select(key.kid.as_deref(), alg) {
                assert!(selected.fits(alg), "select returned a key that does not fit {alg:?}");
            }
        }
        // HMAC and `none`-like algorithms never fit a published key.
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            assert!(!key.fits(alg));
            assert!(keys.select(key.kid.as_deref(), alg).is_err());
        }
    }
});
