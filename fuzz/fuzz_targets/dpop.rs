//! Fuzzes the DPoP proof checks (`dpop::check_proof`) and the `htu` normalisation
//! (`dpop::normalize_htu`): the input is a proof, a newline, and an `X-Original-URL`. An arbitrary
//! proof is refused with the `dpop` reason, never accepted and never a crash; a normalised URL is
//! visible ASCII and normalising it again changes nothing (one URL, one form).
#![no_main]

use jwtgate::dpop::{DpopConfig, Target, check_proof, normalize_htu};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (proof, url) = text.split_once('\n').unwrap_or((text, "https://api.example.com/x"));
    for (u, scheme) in [(url, None), (url, Some("https")), (proof, None)] {
        if let Some(n) = normalize_htu(u, scheme) {
            assert!(n.bytes().all(|c| (0x21..0x7f).contains(&c)), "not visible ASCII: {n:?}");
            assert_eq!(normalize_htu(&n, None).as_deref(), Some(n.as_str()), "not idempotent for {u:?}");
        }
    }
    let config = DpopConfig::default();
    match check_proof(proof, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", Target { method: "GET", url }, &config, 1_800_000_000) {
        Ok(p) => panic!("an arbitrary proof was accepted: {p:?}"),
        Err(e) => assert_eq!(e.reason(), "dpop", "{e:?}"),
    }
});
