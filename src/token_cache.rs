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

/// Bounded by entry count; each entry is roughly the identity's headers plus ~200 bytes.
#[derive(Clone)]
pub struct TokenCache {
    cache: Cache<Digest, Arc<Entry>>,
    max_ttl: Duration,
}

impl TokenCache {
    pub fn new(max_entries: u64, max_ttl: Duration) -> TokenCache {
        let cache = Cache::builder()
            .max_capacity(max_entries)
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
        let entry = Arc::new(Entry { identity, key: Arc::downgrade(key), ttl });
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
