//! Fills the verified-token cache with N realistic identities and prints RSS (VmRSS), to size
//! `cache.max_entries`. `cargo run --release --example cache_rss -- 150000`
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use http::{HeaderName, HeaderValue};
use jwtgate::keys::KeySet;
use jwtgate::token_cache::{TokenCache, digest};
use jwtgate::validate::Identity;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(150_000);
    let ring = jwtgate::dev_issuer::KeyRing::standard();
    let (keys, _) = KeySet::from_jwks(ring.jwks().to_string().as_bytes(), 10).unwrap();
    let key = keys.keys()[0].clone();
    let cache = TokenCache::new(n, std::time::Duration::from_secs(300));
    let before = rss_kib();
    let names = [HeaderName::from_static("x-auth-subject"), HeaderName::from_static("x-auth-issuer")];
    for i in 0..n {
        let identity = Identity {
            issuer: 0,
            exp: 4_000_000_000,
            audiences: vec!["orders-api".into()].into(),
            scopes: vec!["orders:read".into(), "profile".into()].into(),
            headers: vec![
                (names[0].clone(), HeaderValue::from_str(&format!("user-{i:08}")).unwrap()),
                (names[1].clone(), HeaderValue::from_str("https://idp.example.com/realms/main").unwrap()),
            ]
            .into(),
            jkt: None,
        };
        cache.insert(digest(&format!("token-{i}")), identity, &key, 1_800_000_000);
    }
    let after = rss_kib();
    println!(
        "{n} entries: {} cached, RSS {} MiB before, {} MiB after, {:.0} bytes/entry",
        cache.entry_count(),
        before / 1024,
        after / 1024,
        (after - before) as f64 * 1024.0 / n as f64
    );
    drop(Arc::new(()));
}
