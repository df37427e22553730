//! Fills the verified-token cache with N realistic identities and prints RSS (VmRSS), to size
//! `cache.max_entries`. `cargo run --release --example cache_rss -- 150000`
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use http::{HeaderName, HeaderValue};
use jwtgate::claims::Claims;
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
    let cache = TokenCache::new(n, u64::MAX / 2, std::time::Duration::from_secs(300));
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
            // A Keycloak-shaped access token's claims: kept for `claim.`, step-up and policies.
            claims: Claims::new(serde_json::json!({
                "exp": 4_000_000_000u64, "iat": 3_999_999_700u64, "auth_time": 3_999_999_000u64,
                "jti": format!("{i:08}-4f1c-4b7e-9d8a-2c3b1e5f6a7d"), "iss": "https://idp.example.com/realms/main",
                "aud": "orders-api", "sub": format!("user-{i:08}"), "typ": "Bearer", "azp": "orders-web",
                "sid": "0b5e4c3a-1d2f-4e6a-8b7c-9d0e1f2a3b4c", "acr": "1", "scope": "openid orders:read profile",
                "realm_access": {"roles": ["default-roles-main", "offline_access", "uma_authorization"]},
                "email_verified": true, "preferred_username": format!("user{i}"), "email": format!("user{i}@example.com"),
            })),
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
