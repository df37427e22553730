//! Fuzzes JWKS parsing (`KeySet::from_jwks`) and key selection: a hostile or broken identity
//! provider must never crash the gate, and whatever it publishes is either a usable key or
//! skipped with a reason.
#![no_main]

// HMAC and `none` are not representable as a jwtgate `Algorithm`: no published key can fit them.
use jwtgate::algorithm::NAMES;
use jwtgate::keys::{KeyFamily, KeySet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((keys, skipped)) = KeySet::from_jwks(data, 8) else { return };
    assert!(keys.len() <= 8, "the key cap was exceeded");
    for s in &skipped {
        assert!(!s.why.is_empty());
    }
    for key in keys.keys() {
        // Every kept key verifies exactly the algorithms of its family (and its JWK `alg`).
        for alg in NAMES.iter().map(|(_, a)| *a) {
            let fits = KeyFamily::for_algorithm(alg) == Some(key.family) && key.alg.is_none_or(|a| a == alg);
            assert_eq!(key.fits(alg), fits);
            if let Ok(selected) = keys.select(key.kid.as_deref(), alg) {
                assert!(selected.fits(alg), "select returned a key that does not fit {alg}");
            }
        }
    }
});
