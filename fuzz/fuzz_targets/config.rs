//! Fuzzes the configuration loader (`Config::from_yaml`): any text either loads or is refused
//! with at least one problem named, never a crash.
#![no_main]

use jwtgate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_yaml(text) {
        Ok(config) => {
            assert!(!config.issuers.is_empty(), "a config without issuers was accepted");
            assert_eq!(config.summary().len(), config.issuers.len());
            for issuer in &config.issuers {
                assert!(!issuer.audiences.is_empty(), "an issuer without audiences was accepted");
                assert!(!issuer.algorithms.is_empty(), "an issuer without algorithms was accepted");
            }
        }
        Err(errors) => assert!(!errors.0.is_empty(), "refused without naming a problem"),
    }
});
