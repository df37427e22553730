//! The gate: one `/verify` decision with everything around the pure core — the verified-token
//! cache, each issuer's current keys, the unknown-kid refetch, and metrics.
//!
//! Stages, after Ory Oathkeeper's authenticate → authorize → mutate: [`Gate::authenticate`]
//! (cache or [`crate::validate`]), [`crate::policy::Policy`] (issuer, audience, scope), and the
//! identity headers rendered once at verification and reused on every hit.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{AuthError, Refused};
use crate::jwks::{IssuerKeys, IssuerState};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyMemo};
use crate::token_cache::{Entry, TokenCache};
use crate::validate::{self, Identity};

/// The shared state of the service. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    pub config: Arc<Config>,
    pub issuers: Arc<[Arc<IssuerKeys>]>,
    pub cache: TokenCache,
    pub metrics: Metrics,
    policies: Arc<PolicyMemo>,
}

/// An allowed request: the identity and how long nginx may cache the answer.
pub struct Allowed {
    pub entry: Arc<Entry>,
    pub max_age: u64,
    /// The decision read the original request (a policy reads `request`): nginx must not reuse it.
    pub no_store: bool,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Extracts the token: `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1),
/// else the configured cookie. More than one `Authorization` header is malformed.
pub fn extract_token<'h>(headers: &'h HeaderMap, config: &crate::config::TokenConfig) -> Result<&'h str, AuthError> {
    let mut auth = headers.get_all(http::header::AUTHORIZATION).iter();
    match (auth.next(), auth.next()) {
        (Some(_), Some(_)) => return Err(AuthError::Malformed("more than one Authorization header")),
        (Some(value), None) => {
            if value.len() > config.max_bytes + 7 {
                return Err(AuthError::TooLarge);
            }
            let v = value.to_str().map_err(|_| AuthError::Malformed("Authorization is not ASCII"))?;
            let (scheme, token) = v.split_once(' ').ok_or(AuthError::Malformed("not a Bearer credential"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                // Another scheme (Basic, DPoP, ...) carries no bearer token for us.
                return Err(AuthError::MissingToken);
            }
            // Anything after a second space is refused as malformed by the JWS parser.
            if token.is_empty() {
                return Err(AuthError::Malformed("not a Bearer credential"));
            }
            return check_size(token, config.max_bytes);
        }
        (None, _) => {}
    }
    if let Some(name) = &config.cookie {
        for header in headers.get_all(http::header::COOKIE) {
            let Ok(s) = header.to_str() else { continue };
            for pair in s.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k == name
                    && !v.is_empty()
                {
                    return check_size(v, config.max_bytes);
                }
            }
        }
    }
    Err(AuthError::MissingToken)
}

fn check_size(token: &str, max: usize) -> Result<&str, AuthError> {
    if token.len() > max { Err(AuthError::TooLarge) } else { Ok(token) }
}

impl Gate {
    /// Builds the gate from a validated config. Fails only on an unreadable `ca_file`.
    pub fn new(config: Config) -> Result<Gate, String> {
        let names: Vec<&str> = config.issuers.iter().map(|i| i.name.as_str()).collect();
        let metrics = Metrics::new(&names);
        let mut issuers = Vec::with_capacity(config.issuers.len());
        let mut errors = Vec::new();
        for issuer in &config.issuers {
            match crate::jwks::build_client(issuer, &config.jwks) {
                Ok(client) => {
                    issuers.push(Arc::new(IssuerKeys::new(issuer, config.jwks.clone(), client, metrics.clone())))
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let cache = TokenCache::new(config.cache.max_entries, config.cache.max_bytes, config.cache.max_ttl);
        Ok(Gate { config: Arc::new(config), issuers: issuers.into(), cache, metrics, policies: Arc::default() })
    }

    /// Starts one background refresher per issuer, stopped by `cancel`.
    pub fn spawn_refreshers(&self, cancel: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.issuers
            .iter()
            .map(|keys| {
                let cache = self.cache.clone();
                tokio::spawn(keys.clone().run(cancel.clone(), move || cache.purge_dead_keys()))
            })
            .collect()
    }

    /// True once every issuer has usable keys.
    pub fn ready(&self) -> bool {
        self.issuers.iter().all(|i| i.state() == IssuerState::Ready)
    }

    /// The metric label of an issuer index.
    pub fn issuer_label(&self, issuer: Option<usize>) -> &str {
        issuer.map_or("none", |i| self.config.issuers[i].name.as_str())
    }

    /// Decides one `/verify` request: authenticate (cache hit, or verification), then authorize
    /// on every request alike.
    pub async fn decide(&self, query: Option<&str>, headers: &HeaderMap, now: i64) -> Result<Allowed, Refused> {
        let policy = self.policies.get(query, &self.config)?;
        let token = extract_token(headers, &self.config.token)?;
        let digest = crate::token_cache::digest(token);

        let entry = match self.cache.get(&digest) {
            Some(entry) => {
                self.metrics.cache_hits.inc();
                let id = &entry.identity;
                let refuse = |e: AuthError| e.at(id.issuer);
                let leeway = self.config.issuers[id.issuer].leeway_seconds as i64;
                if now >= id.exp.saturating_add(leeway) {
                    return Err(refuse(AuthError::Expired));
                }
                // Past max_stale, even cached identities are not vouched for.
                self.issuers[id.issuer].current().map_err(refuse)?;
                entry
            }
            None => {
                self.metrics.cache_misses.inc();
                let (identity, key) = self.authenticate(token, &policy, now).await?;
                self.cache.insert(digest, identity, &key, now)
            }
        };
        let id = &entry.identity;
        let issuer = &self.config.issuers[id.issuer];
        let grant = crate::authorization::authorize(id, &policy, issuer, &self.config.policies, headers, now)
            .map_err(|e| e.at(id.issuer))?;
        // `now` is whole seconds, so up to a second has already passed: one less keeps nginx's
        // cache (which counts the whole last second as fresh) strictly before `exp`, and before
        // `auth_time` + `max_age` under step-up.
        let end = grant.until.map_or(entry.identity.exp, |until| until.min(entry.identity.exp));
        let remaining = end.saturating_sub(now).saturating_sub(1).max(0) as u64;
        let max_age = remaining.min(self.config.cache.max_ttl.as_secs());
        Ok(Allowed { entry, max_age, no_store: grant.per_request })
    }

    /// Verifies a token that is not in the cache.
    async fn authenticate(
        &self,
        token: &str,
        policy: &Policy,
        now: i64,
    ) -> Result<(Identity, Arc<crate::keys::VerifyingKey>), Refused> {
        let candidate = validate::precheck(token, &self.config.issuers, policy, now)?;
        let index = candidate.issuer;
        let refuse = |e: AuthError| e.at(index);
        let keys = &self.issuers[index];
        let kid = candidate.jws.header.kid.clone();
        let alg = candidate.jws.header.alg;

        let generation = keys.generation();
        let mut snapshot = keys.current();
        let needs_fetch = match &snapshot {
            Ok(s) => matches!(s.keys.select(kid.as_deref(), alg), Err(AuthError::UnknownKey)),
            Err(_) => true,
        };
        if needs_fetch {
            if keys.refetch_for_unknown(kid.as_deref(), generation).await {
                snapshot = keys.current();
            }
            if let Ok(s) = &snapshot
                && matches!(s.keys.select(kid.as_deref(), alg), Err(AuthError::UnknownKey))
            {
                keys.remember_unknown(kid.as_deref());
            }
        }
        let snapshot = snapshot.map_err(refuse)?;
        validate::finish(candidate, &self.config.issuers, &snapshot.keys, &self.config.claims_to_headers)
            .map_err(refuse)
    }
}
