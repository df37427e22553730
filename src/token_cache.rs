//! The verified-token cache: a SHA-256 digest of the token to the identity it proved.
//!
//! A hit skips all signature work; the policy (query string) is still applied on every request.
//! The token itself is never kept. Entries expire at `min(exp, max_ttl)`, and an entry whose
//! key has left its issuer's JWKS is refused and dropped (it holds only a `Weak` to the key,
//! which dies when the refreshed key set no longer contains it).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::keys::VerifyingKey;
use crate::validate::Identity;

/// The cache key: a cryptographic digest, never the token and never a non-cryptographic hash.
pub type Digest = [u8; 32];

/// Digest of a token.
pub fn digest(token: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// One cached verification.
pub struct Entry {
    pub identity: Identity,
    key: Weak<VerifyingKey>,
    ttl: Duration,
    /// [`entry_bytes`], computed once.
    weight: u32,
}

impl Entry {
    /// The key that verified this token, if its issuer still publishes it.
    pub fn key_alive(&self) -> bool {
        self.key.strong_count() > 0
    }

    /// True when `key` is the key that verified this token (by identity; the entry's `Weak`
    /// keeps the allocation, so the address cannot be reused while the entry exists).
    pub fn verified_by(&self, key: &Arc<VerifyingKey>) -> bool {
        std::ptr::eq(self.key.as_ptr(), Arc::as_ptr(key))
    }
}

struct ExpireAtEntryTtl;

impl moka::Expiry<Digest, Arc<Entry>> for ExpireAtEntryTtl {
    fn expire_after_create(&self, _: &Digest, value: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// What one entry costs besides its identity's own data: the moka node, the `Arc<Entry>`, the
/// digest and the boxed slices' headers (measured with `examples/cache_rss.rs`).
pub const ENTRY_OVERHEAD_BYTES: usize = 1024;

/// Bounded by entry count and by bytes: each entry weighs its estimated memory
/// ([`entry_bytes`]), but never less than `max_bytes / max_entries`, so neither bound is passed.
/// A claims set is kept with each identity (requirements and policies read it on every
/// request), and tokens of some providers are many kilobytes: a count alone would not bound RSS.
#[derive(Clone)]
pub struct TokenCache {
    cache: Cache<Digest, Arc<Entry>>,
    max_ttl: Duration,
}

/// Estimated heap bytes of one cached identity, [`ENTRY_OVERHEAD_BYTES`] included.
pub fn entry_bytes(identity: &Identity) -> usize {
    let headers: usize = identity.headers.iter().map(|(_, v)| v.len() + 48).sum();
    let lists: usize = identity.audiences.iter().chain(identity.scopes.iter()).map(|s| s.len() + 16).sum();
    let jkt = identity.jkt.as_ref().map_or(0, |j| j.len());
    ENTRY_OVERHEAD_BYTES + headers + lists + jkt + identity.claims.heap_bytes()
}

impl TokenCache {
    /// A cache of at most `max_entries` entries and about `max_bytes` of estimated memory.
    pub fn new(max_entries: u64, max_bytes: u64, max_ttl: Duration) -> TokenCache {
        let floor = max_bytes.checked_div(max_entries).unwrap_or(u64::MAX).min(u32::MAX as u64) as u32;
        let capacity = if max_entries == 0 { 0 } else { max_bytes };
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(move |_: &Digest, e: &Arc<Entry>| e.weight.max(floor))
            .expire_after(ExpireAtEntryTtl)
            .support_invalidation_closures()
            .build();
        TokenCache { cache, max_ttl }
    }

    /// A live entry for this digest, or `None`. Entries whose key left the JWKS are removed.
    pub fn get(&self, digest: &Digest) -> Option<Arc<Entry>> {
        let entry = self.cache.get(digest)?;
        if entry.key_alive() {
            Some(entry)
        } else {
            self.cache.invalidate(digest);
            None
        }
    }

    /// Wraps a verification in an entry and remembers it until `min(exp, max_ttl)` from `now`
    /// (seconds since the epoch). The entry is returned even when it is not cacheable.
    pub fn insert(&self, digest: Digest, identity: Identity, key: &Arc<VerifyingKey>, now: i64) -> Arc<Entry> {
        let remaining = Duration::from_secs(identity.exp.saturating_sub(now).max(0) as u64);
        let ttl = remaining.min(self.max_ttl);
        let weight = entry_bytes(&identity).min(u32::MAX as usize) as u32;
        let entry = Arc::new(Entry { identity, key: Arc::downgrade(key), ttl, weight });
        if !ttl.is_zero() && self.cache.policy().max_capacity() != Some(0) {
            self.cache.insert(digest, entry.clone());
        }
        entry
    }

    /// Drops every entry verified by one of `removed` (keys that just left their issuer's JWKS),
    /// and any whose key is gone. Called in the same step as the key set that dropped them is
    /// installed; holds only the keys' addresses, so it keeps no removed key alive.
    pub fn purge_keys(&self, removed: &[Arc<VerifyingKey>]) {
        let removed: Vec<usize> = removed.iter().map(|k| Arc::as_ptr(k) as usize).collect();
        let _ = self
            .cache
            .invalidate_entries_if(move |_, e| !e.key_alive() || removed.contains(&(e.key.as_ptr() as usize)));
    }

    /// Entries held, after moka's pending maintenance has run.
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Claims;
    use crate::keys::KeySet;
    use serde_json::json;

    fn identity(claims: serde_json::Value) -> Identity {
        Identity {
            issuer: 0,
            exp: 4_000_000_000,
            audiences: vec![Box::from("api")].into(),
            scopes: Box::new([]),
            headers: Box::new([]),
            jkt: None,
            claims: Claims::new(claims),
        }
    }

    fn fill(cache: &TokenCache, n: usize, claims: impl Fn(usize) -> serde_json::Value) {
        let ring = crate::dev_issuer::KeyRing::standard();
        let (keys, _) = KeySet::from_jwks(ring.jwks().to_string().as_bytes(), 10).unwrap();
        let key = keys.keys()[0].clone();
        for i in 0..n {
            cache.insert(digest(&format!("t{i}")), identity(claims(i)), &key, 1_800_000_000);
        }
    }

    #[test]
    fn large_claims_sets_are_bounded_by_bytes() {
        let max_bytes = 4 << 20;
        let cache = TokenCache::new(100_000, max_bytes, Duration::from_secs(300));
        // ~20 KB of claims each: 1,000 of them would be ~20 MB.
        fill(&cache, 1000, |i| json!({"sub": format!("u{i}"), "groups": vec!["g".repeat(200); 90]}));
        let one = entry_bytes(&identity(json!({"sub": "u0", "groups": vec!["g".repeat(200); 90]})));
        assert!(one > 18_000, "{one}");
        let held = cache.entry_count();
        assert!(held > 0);
        assert!(held as usize * one <= max_bytes as usize, "{held} entries of {one} bytes");
    }

    #[test]
    fn small_identities_are_bounded_by_count() {
        let cache = TokenCache::new(100, 1 << 30, Duration::from_secs(300));
        fill(&cache, 1000, |i| json!({"sub": format!("u{i}")}));
        assert!(cache.entry_count() <= 100, "{}", cache.entry_count());
    }

    #[test]
    fn zero_entries_disables_the_cache() {
        let cache = TokenCache::new(0, 1 << 30, Duration::from_secs(300));
        fill(&cache, 10, |i| json!({"sub": format!("u{i}")}));
        assert_eq!(cache.entry_count(), 0);
    }
}
