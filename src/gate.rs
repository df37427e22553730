//! The gate: one `/verify` decision with everything around the pure core — the verified-token
//! cache, each issuer's current keys (asked of [`crate::jwks::IssuerKeys`]), and metrics.
//!
//! [`Gate::decide`] runs the stages of Ory Oathkeeper and heimdall, in this order:
//! 1. the request's policy, parsed once per distinct `auth-url` query ([`PolicyMemo`]; 400);
//! 2. [`Gate::authenticate`]: issuer, key, signature and time ([`crate::validate`]), the cacheable
//!    part: a hit in the verified-token cache skips it;
//! 3. authorize ([`crate::authorization::authorize`]): issuer filter, audience, step-up, scope,
//!    `claim.` requirements and named policies, on every request, hit or miss alike;
//! 4. render: the identity headers were rendered once at verification and are cached with the
//!    identity; what is left is how long nginx may keep the answer ([`Allowed`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::authorization::Grant;
use crate::config::{Config, IssuerConfig};
use crate::dpop::{Replay, ReplayStore, Target};
use crate::error::{AuthError, Refused};
use crate::jwks::{IssuerKeys, IssuerState};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyMemo};
use crate::token_cache::{Entry, TokenCache};
use crate::validate::{self, Identity};

/// One configured issuer: its configuration, its keys and its metric label, in one value. Its
/// index in [`Gate::issuers`] is the one an [`Identity`] and a [`Refused`] carry.
pub struct Issuer {
    pub config: IssuerConfig,
    pub keys: Arc<IssuerKeys>,
}

impl Issuer {
    /// The `issuer` label of its metrics and log lines.
    pub fn label(&self) -> &str {
        &self.config.name
    }
}

/// The shared state of the service. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    pub config: Arc<Config>,
    pub issuers: Arc<[Issuer]>,
    pub cache: TokenCache,
    pub metrics: Metrics,
    policies: Arc<PolicyMemo>,
    replay: Arc<ReplayStore>,
    /// The DPoP challenge's `algs` value, made once.
    dpop_algs: Arc<str>,
}

/// An allowed request: the identity and how long nginx may cache the answer.
pub struct Allowed {
    pub entry: Arc<Entry>,
    pub max_age: u64,
    /// The decision holds for this request only, nginx must not reuse it: a policy read
    /// `request`, or the request used DPoP (every proof is single-use).
    pub no_store: bool,
}

/// Whether [`Gate::decide_with`] checks DPoP proofs: always on `/verify`; `jwtgate explain`
/// takes no proof, so it checks the binding rule only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proofs {
    Check,
    Skip,
}

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750 §2.1).
    Bearer,
    /// `Authorization: DPoP` (RFC 9449 §7.1).
    Dpop,
    /// The configured cookie: a bearer token too.
    Cookie,
}

/// The token and how it came.
#[derive(Debug, Clone, Copy)]
pub struct Credential<'h> {
    pub token: &'h str,
    pub scheme: Scheme,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// How long nginx may cache an allow that holds until `end` (the token's `exp`, or earlier under
/// step-up's `max_age=`): at most `max_ttl`.
pub fn max_age(end: i64, now: i64, max_ttl: std::time::Duration) -> u64 {
    // `now` is whole seconds, so up to a second has already passed: one less keeps nginx's
    // cache (which counts the whole last second as fresh) strictly before `end`.
    let remaining = end.saturating_sub(now).saturating_sub(1).max(0) as u64;
    remaining.min(max_ttl.as_secs())
}

/// Extracts the token: `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1),
/// else the configured cookie. More than one `Authorization` header is malformed.
pub fn extract_token<'h>(headers: &'h HeaderMap, config: &crate::config::TokenConfig) -> Result<&'h str, AuthError> {
    extract_credential(headers, config).map(|c| c.token)
}

/// True when the request's `Authorization` uses the `DPoP` scheme.
fn uses_dpop_scheme(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().split(|b| *b == b' ').next())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"dpop"))
}

/// Extracts the token and its scheme: `Authorization: Bearer <token>` or `Authorization: DPoP
/// <token>` (schemes case-insensitive, RFC 6750 §2.1, RFC 9449 §7.1), else the configured cookie.
/// More than one `Authorization` header is malformed.
pub fn extract_credential<'h>(
    headers: &'h HeaderMap,
    config: &crate::config::TokenConfig,
) -> Result<Credential<'h>, AuthError> {
    let mut auth = headers.get_all(http::header::AUTHORIZATION).iter();
    match (auth.next(), auth.next()) {
        (Some(_), Some(_)) => return Err(AuthError::Malformed("more than one Authorization header")),
        (Some(value), None) => {
            if value.len() > config.max_bytes + 7 {
                return Err(AuthError::TooLarge);
            }
            let v = value.to_str().map_err(|_| AuthError::Malformed("Authorization is not ASCII"))?;
            let (scheme, token) = v.split_once(' ').ok_or(AuthError::Malformed("not a Bearer credential"))?;
            let scheme = if scheme.eq_ignore_ascii_case("bearer") {
                Scheme::Bearer
            } else if scheme.eq_ignore_ascii_case("dpop") {
                Scheme::Dpop
            } else {
                // Another scheme (Basic, ...) carries no token for us.
                return Err(AuthError::MissingToken);
            };
            // Anything after a second space is refused as malformed by the JWS parser.
            if token.is_empty() {
                return Err(AuthError::Malformed("not a Bearer credential"));
            }
            return Ok(Credential { token: check_size(token, config.max_bytes)?, scheme });
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
                    return Ok(Credential { token: check_size(v, config.max_bytes)?, scheme: Scheme::Cookie });
                }
            }
        }
    }
    Err(AuthError::MissingToken)
}

/// The one `X-Original-Method` / `X-Original-URL` nginx sent. Without it no proof can be checked:
/// refused, with a warning naming the header and the nginx variable that sets it.
fn original<'h>(headers: &'h HeaderMap, name: &'static str, nginx: &'static str) -> Result<&'h str, AuthError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().map_err(|_| AuthError::DpopProof("original request header is not visible ASCII")),
        (None, _) => {
            tracing::warn!(
                header = name,
                "DPoP request without {name}: nginx must send it (ingress-nginx does; plain nginx: \
                 proxy_set_header {name} {nginx};)"
            );
            Err(AuthError::DpopProof(match name {
                "x-original-method" => "X-Original-Method missing",
                _ => "X-Original-URL missing",
            }))
        }
        (Some(_), Some(_)) => Err(AuthError::DpopProof("original request header repeated")),
    }
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
                Ok(client) => issuers.push(Issuer {
                    config: issuer.clone(),
                    keys: Arc::new(IssuerKeys::new(issuer, config.jwks.clone(), client, metrics.clone())),
                }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let cache = TokenCache::new(config.cache.max_entries, config.cache.max_bytes, config.cache.max_ttl);
        let replay = Arc::new(ReplayStore::new(&config.dpop));
        let dpop_algs = config.dpop.algs().into();
        Ok(Gate {
            config: Arc::new(config),
            issuers: issuers.into(),
            cache,
            metrics,
            policies: Arc::default(),
            replay,
            dpop_algs,
        })
    }

    /// Starts one background refresher per issuer, stopped by `cancel`.
    pub fn spawn_refreshers(&self, cancel: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.issuers
            .iter()
            .map(|issuer| {
                let cache = self.cache.clone();
                tokio::spawn(issuer.keys.clone().run(cancel.clone(), move |removed| cache.purge_keys(removed)))
            })
            .collect()
    }

    /// True once every issuer has usable keys.
    pub fn ready(&self) -> bool {
        self.issuers.iter().all(|i| i.keys.state() == IssuerState::Ready)
    }

    /// The metric label of an issuer index.
    pub fn issuer_label(&self, issuer: Option<usize>) -> &str {
        issuer.map_or("none", |i| self.issuers[i].label())
    }

    /// Decides one `/verify` request: policy, authenticate, authorize, render (module docs).
    pub async fn decide(&self, query: Option<&str>, headers: &HeaderMap, now: i64) -> Result<Allowed, Refused> {
        self.decide_with(query, headers, now, Proofs::Check).await
    }

    /// [`Gate::decide`], with DPoP proofs checked or (`jwtgate explain` only, which has none)
    /// skipped once the binding rule is met.
    pub async fn decide_with(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
        now: i64,
        proofs: Proofs,
    ) -> Result<Allowed, Refused> {
        let policy = self.policies.get(query, &self.config)?;
        let credential = extract_credential(headers, &self.config.token)?;
        let entry = self.authenticate(credential.token, &policy, now).await?;
        let grant = self.authorize(&entry.identity, &policy, credential, proofs, headers, now)?;
        Ok(self.render(entry, grant, now))
    }

    /// Authenticate: the verified identity of `token`, from the cache when it is there and still
    /// vouched for, else verified now and cached. On a miss the request's issuer filter and
    /// audience refuse before any signature work (cheap refusals first); authorize checks them
    /// again on every request, so what is cached serves every Ingress alike.
    pub async fn authenticate(&self, token: &str, policy: &Policy, now: i64) -> Result<Arc<Entry>, Refused> {
        let digest = crate::token_cache::digest(token);
        match self.cache.get(&digest) {
            Some(entry) => {
                self.metrics.cache_hits.inc();
                let id = &entry.identity;
                let issuer = &self.issuers[id.issuer];
                let refuse = |e: AuthError| e.at(id.issuer);
                if now >= id.exp.saturating_add(issuer.config.leeway_seconds as i64) {
                    return Err(refuse(AuthError::Expired));
                }
                // Past max_stale, after the issuer withdrew every key, or once the key that
                // verified it left the JWKS, a cached identity is not vouched for.
                issuer.keys.vouch(&entry).map_err(refuse)?;
                Ok(entry)
            }
            None => {
                self.metrics.cache_misses.inc();
                let (identity, key) = self.verify(token, policy, now).await?;
                Ok(self.cache.insert(digest, identity, &key, now))
            }
        }
    }

    /// Authorize: on every request, in the contract's order after the token itself (the
    /// request's issuer filter and audience), the DPoP binding and proof, then the policy
    /// (step-up, scope, `claim.`, named policies).
    pub fn authorize(
        &self,
        identity: &Identity,
        policy: &Policy,
        credential: Credential<'_>,
        proofs: Proofs,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Grant, Refused> {
        let issuer = &self.issuers[identity.issuer];
        let refuse = |e: AuthError| e.at(identity.issuer);
        // The token's own requirements first (authorization::authorize repeats these two
        // comparisons, which is cheaper than splitting it).
        policy.check_issuer(identity.issuer).map_err(refuse)?;
        policy.check_audience(&identity.audiences, &issuer.config).map_err(refuse)?;
        let dpop = self.check_dpop(policy, credential, proofs, identity, headers, now).map_err(refuse)?;
        let mut grant =
            crate::authorization::authorize(identity, policy, &issuer.config, &self.config.policies, headers, now)
                .map_err(refuse)?;
        grant.per_request |= dpop;
        Ok(grant)
    }

    /// Render: the identity headers (rendered at verification) and how long nginx may keep the
    /// answer: until the token's `exp`, and under step-up until `auth_time` + `max_age`.
    fn render(&self, entry: Arc<Entry>, grant: Grant, now: i64) -> Allowed {
        let end = grant.until.map_or(entry.identity.exp, |until| until.min(entry.identity.exp));
        let max_age = max_age(end, now, self.config.cache.max_ttl);
        Allowed { entry, max_age, no_store: grant.per_request }
    }

    /// Proof of possession (RFC 9449 §7): the scheme and the token's `cnf.jkt` must agree, and a
    /// bound token needs one valid, fresh proof for this request whose key is the bound one.
    /// Returns whether the decision used DPoP.
    fn check_dpop(
        &self,
        policy: &Policy,
        credential: Credential<'_>,
        proofs: Proofs,
        identity: &Identity,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<bool, AuthError> {
        let dpop_scheme = credential.scheme == Scheme::Dpop;
        if !crate::dpop::binding(dpop_scheme, identity.jkt.is_some(), policy.dpop_required)? {
            return Ok(false);
        }
        if proofs == Proofs::Skip {
            return Ok(true);
        }
        let jkt = identity.jkt.as_deref().expect("bound");
        let mut proofs = headers.get_all("dpop").iter();
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) => return Err(AuthError::DpopProof("DPoP proof missing")),
            (Some(_), Some(_)) => return Err(AuthError::DpopProof("more than one DPoP header")),
            (Some(p), None) => p.to_str().map_err(|_| AuthError::DpopProof("DPoP proof is not a compact JWS"))?,
        };
        let method = original(headers, "x-original-method", "$request_method")?;
        let url = original(headers, "x-original-url", "$scheme://$http_host$request_uri")?;
        let proof = crate::dpop::check_proof(proof, credential.token, Target { method, url }, &self.config.dpop, now)?;
        if proof.jkt != jkt {
            return Err(AuthError::DpopBinding("DPoP proof key is not the token's cnf.jkt"));
        }
        match self.replay.check_and_insert(proof.replay_id, proof.iat, now) {
            Ok(()) => Ok(true),
            Err(Replay::Seen) => Err(AuthError::DpopProof("DPoP proof replayed")),
            Err(Replay::Forgotten) => Err(AuthError::DpopProof("DPoP proof too old for the replay store")),
        }
    }

    /// The challenge `algs` when a refusal must use the `DPoP` scheme: the request used it, the
    /// query asks `dpop=required`, or the refusal is about DPoP itself (RFC 9449 §7.1).
    pub fn dpop_challenge(&self, query: Option<&str>, headers: &HeaderMap, error: &AuthError) -> Option<&str> {
        let dpop = matches!(error, AuthError::DpopProof(_) | AuthError::DpopBinding(_))
            || uses_dpop_scheme(headers)
            || self.policies.get(query, &self.config).is_ok_and(|p| p.dpop_required);
        dpop.then_some(&*self.dpop_algs)
    }

    /// Bytes the DPoP replay store accounts now.
    pub fn replay_bytes(&self) -> usize {
        self.replay.bytes()
    }

    /// Verifies a token that is not in the cache.
    async fn verify(
        &self,
        token: &str,
        policy: &Policy,
        now: i64,
    ) -> Result<(Identity, Arc<crate::keys::VerifyingKey>), Refused> {
        let candidate = validate::precheck(token, &self.config.issuers, policy, now)?;
        let index = candidate.issuer;
        let refuse = |e: AuthError| e.at(index);
        let kid = candidate.jws.header.kid.as_deref();
        // Every key-set rule (refetch, cooldown, unknown-kid memory, revocation) is the owner's.
        let snapshot = self.issuers[index].keys.keys_for(kid, candidate.jws.header.alg).await.map_err(refuse)?;
        validate::finish(candidate, &self.config.issuers, &snapshot.keys, &self.config.claims_to_headers)
            .map_err(refuse)
    }
}
