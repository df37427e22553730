//! The key-set lifecycle of each issuer: discovery, JWKS fetches, background refresh with
//! backoff, stale-if-error, and the single-flight refetch for an unknown `kid`.
//!
//! Readers take an immutable `Arc<Snapshot>` from an `ArcSwap` (no lock, never across an
//! `.await`), so a request whose key is known never waits on the identity provider. Writers
//! (the background refresher and the unknown-kid path) serialise on one async mutex per issuer:
//! concurrent misses share one fetch, and at most one fetch starts per
//! `min_refresh_interval_seconds`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{IssuerConfig, JwksConfig};
use crate::error::AuthError;
use crate::keys::KeySet;
use crate::metrics::Metrics;

/// Unknown kids remembered at most this many at once (a flood of random kids cannot grow it).
const NEGATIVE_CAPACITY: usize = 1024;
/// Backoff never exceeds this, nor `refresh_interval_seconds`.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Redirects followed on discovery and JWKS requests.
const MAX_REDIRECTS: usize = 3;

/// One successful load of an issuer's keys.
#[derive(Debug)]
pub struct Snapshot {
    pub keys: KeySet,
    pub fetched_at: Instant,
}

/// What `/readyz` reports for an issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerState {
    /// No successful load yet.
    Loading,
    /// Keys loaded and within `max_stale_seconds`.
    Ready,
    /// The last successful load is older than `max_stale_seconds`.
    Stale,
}

impl IssuerState {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerState::Loading => "loading",
            IssuerState::Ready => "ready",
            IssuerState::Stale => "stale",
        }
    }
}

/// The result of one fetch: the keys and the JWKS response's `Cache-Control: max-age`.
pub type Fetched = Result<(KeySet, Option<Duration>), String>;

/// Where an issuer's keys come from. Production uses [`HttpSource`]; tests script one to drive
/// the lifecycle under paused time.
pub trait KeySource: Send + Sync + 'static {
    /// Fetches the current key set. Called by one task at a time (under the issuer's fetch lock).
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Fetched> + Send + '_>>;
}

/// Discovery and JWKS over HTTP(S).
pub struct HttpSource {
    name: String,
    issuer: String,
    jwks_uri: Option<Url>,
    jwks: JwksConfig,
    client: reqwest::Client,
    /// The `jwks_uri` learned by discovery, kept until a JWKS fetch fails.
    discovered: Mutex<Option<Url>>,
}

/// Everything about one issuer's keys.
pub struct IssuerKeys {
    pub name: String,
    jwks: JwksConfig,
    source: Box<dyn KeySource>,
    metrics: Metrics,
    snapshot: ArcSwapOption<Snapshot>,
    fetch_lock: tokio::sync::Mutex<()>,
    /// Bumped after every completed fetch attempt; waiters compare it to see that one happened.
    generation: AtomicU64,
    fetching: AtomicBool,
    /// When the last fetch attempt started, for the cooldown.
    last_attempt: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// kid -> when it may be looked up again.
    unknown_kids: Mutex<HashMap<String, Instant>>,
}

/// Builds the HTTP client for an issuer: rustls, timeouts, capped redirects, the proxy
/// environment variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), and an optional extra CA.
pub fn build_client(config: &IssuerConfig, jwks: &JwksConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
        .timeout(jwks.fetch_timeout)
        .connect_timeout(jwks.fetch_timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS));
    if let Some(path) = &config.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("issuer {}: ca_file {}: {e}", config.name, path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("issuer {}: ca_file {}: {e}", config.name, path.display()))?;
        if certs.is_empty() {
            return Err(format!("issuer {}: ca_file {} holds no certificate", config.name, path.display()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("issuer {}: HTTP client: {e}", config.name))
}

/// Reads a response body, refusing more than `max` bytes.
async fn capped_body(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|l| l > max as u64) {
        return Err(format!("response larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading body: {e}"))? {
        if body.len() + chunk.len() > max {
            return Err(format!("response larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `max-age` from a `Cache-Control` header, if any.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let cc = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    cc.split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The delay before the next refresh after a success: the configured interval, or a shorter
/// `max-age`, never below the minimum; minus up to 10% jitter so replicas spread out.
pub fn next_refresh(jwks: &JwksConfig, max_age: Option<Duration>, jitter: f64) -> Duration {
    let base = max_age.map_or(jwks.refresh_interval, |m| m.min(jwks.refresh_interval));
    let base = base.max(jwks.min_refresh_interval);
    base.mul_f64(1.0 - 0.1 * jitter).max(jwks.min_refresh_interval)
}

/// The delay before retry number `failures` (1, 2, ...): exponential from the minimum interval,
/// capped at `min(60 s, refresh_interval)`, with jitter between half and all of it.
pub fn backoff(jwks: &JwksConfig, failures: u32, jitter: f64) -> Duration {
    let cap = MAX_BACKOFF.min(jwks.refresh_interval);
    let exp = jwks.min_refresh_interval.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(cap).mul_f64(0.5 + 0.5 * jitter)
}

impl HttpSource {
    async fn fetch_once(&self) -> Fetched {
        let known = self.jwks_uri.clone().or_else(|| self.discovered.lock().unwrap().clone());
        let uri = match known {
            Some(u) => u,
            None => {
                let u = self.discover().await?;
                *self.discovered.lock().unwrap() = Some(u.clone());
                u
            }
        };
        let result = self.fetch_jwks(&uri).await;
        if result.is_err() {
            // The provider may have moved its keys: discover again next time.
            *self.discovered.lock().unwrap() = None;
        }
        result
    }

    /// OIDC discovery (OpenID Connect Discovery 1.0 §4): the document's `issuer` must equal ours.
    async fn discover(&self) -> Result<Url, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let response = self.client.get(&url).send().await.map_err(|e| format!("discovery {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("discovery {url}: HTTP {}", response.status().as_u16()));
        }
        let body =
            capped_body(response, self.jwks.max_response_bytes).await.map_err(|e| format!("discovery {url}: {e}"))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("discovery {url}: not JSON: {e}"))?;
        let issuer = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or_default();
        if issuer != self.issuer {
            return Err(format!("discovery {url}: issuer `{issuer}` is not the configured `{}`", self.issuer));
        }
        let jwks_uri = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or(format!("discovery {url}: no jwks_uri"))?;
        match Url::parse(jwks_uri) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => Ok(u),
            _ => Err(format!("discovery {url}: jwks_uri `{jwks_uri}` is not an http(s) URL")),
        }
    }

    async fn fetch_jwks(&self, uri: &Url) -> Fetched {
        let response = self.client.get(uri.clone()).send().await.map_err(|e| format!("JWKS {uri}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("JWKS {uri}: HTTP {}", response.status().as_u16()));
        }
        let max_age = max_age(response.headers());
        let body = capped_body(response, self.jwks.max_response_bytes).await.map_err(|e| format!("JWKS {uri}: {e}"))?;
        let (keys, skipped) = KeySet::from_jwks(&body, self.jwks.max_keys).map_err(|e| format!("JWKS {uri}: {e}"))?;
        for s in &skipped {
            tracing::warn!(issuer = %self.name, index = s.index, kid = s.kid.as_deref().unwrap_or(""), why = %s.why, "JWKS entry skipped");
        }
        if keys.is_empty() {
            return Err(format!("JWKS {uri}: no usable keys ({} skipped)", skipped.len()));
        }
        Ok((keys, max_age))
    }
}

impl KeySource for HttpSource {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Fetched> + Send + '_>> {
        Box::pin(self.fetch_once())
    }
}

impl IssuerKeys {
    /// Keys fetched over HTTP(S) by discovery or from the configured `jwks_uri`.
    pub fn new(config: &IssuerConfig, jwks: JwksConfig, client: reqwest::Client, metrics: Metrics) -> IssuerKeys {
        let source = HttpSource {
            name: config.name.clone(),
            issuer: config.issuer.clone(),
            jwks_uri: config.jwks_uri.clone(),
            jwks: jwks.clone(),
            client,
            discovered: Mutex::new(None),
        };
        IssuerKeys::with_source(&config.name, jwks, Box::new(source), metrics)
    }

    /// Keys from any source (tests use a scripted one).
    pub fn with_source(name: &str, jwks: JwksConfig, source: Box<dyn KeySource>, metrics: Metrics) -> IssuerKeys {
        IssuerKeys {
            name: name.to_string(),
            jwks,
            source,
            metrics,
            snapshot: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            fetching: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            unknown_kids: Mutex::new(HashMap::new()),
        }
    }

    /// The keys to verify with now, or `KeysUnavailable` (never loaded, or past `max_stale`).
    pub fn current(&self) -> Result<Arc<Snapshot>, AuthError> {
        let snap = self.snapshot.load_full().ok_or(AuthError::KeysUnavailable)?;
        if snap.fetched_at.elapsed() > self.jwks.max_stale {
            return Err(AuthError::KeysUnavailable);
        }
        Ok(snap)
    }

    pub fn state(&self) -> IssuerState {
        match self.snapshot.load().as_ref() {
            None => IssuerState::Loading,
            Some(s) if s.fetched_at.elapsed() > self.jwks.max_stale => IssuerState::Stale,
            Some(_) => IssuerState::Ready,
        }
    }

    /// Seconds since the last successful fetch, if there was one.
    pub fn last_success_age(&self) -> Option<f64> {
        self.snapshot.load().as_ref().map(|s| s.fetched_at.elapsed().as_secs_f64())
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn in_cooldown(&self) -> bool {
        self.last_attempt.lock().unwrap().is_some_and(|t| t.elapsed() < self.jwks.min_refresh_interval)
    }

    /// Fetches now (the caller holds the fetch lock) and installs the keys on success.
    async fn fetch_locked(&self) -> Result<Option<Duration>, String> {
        *self.last_attempt.lock().unwrap() = Some(Instant::now());
        self.fetching.store(true, Ordering::Release);
        let result = self.source.fetch().await;
        self.fetching.store(false, Ordering::Release);
        let outcome = match result {
            Ok((keys, max_age)) => {
                let previous = self.snapshot.load_full();
                let keys = match &previous {
                    Some(p) => keys.reuse_from(&p.keys),
                    None => keys,
                };
                let removed = previous.as_ref().is_some_and(|p| p.keys.keys().iter().any(|k| !keys.contains(k)));
                self.metrics.jwks_keys.with_label_values(&[&self.name]).set(keys.len() as i64);
                self.metrics.jwks_fetches.with_label_values(&[&self.name, "ok"]).inc();
                self.snapshot.store(Some(Arc::new(Snapshot { keys, fetched_at: Instant::now() })));
                *self.last_error.lock().unwrap() = None;
                // New keys may make remembered-unknown kids known.
                self.unknown_kids.lock().unwrap().clear();
                if removed {
                    tracing::info!(issuer = %self.name, "keys removed from the JWKS no longer validate tokens");
                }
                Ok(max_age)
            }
            Err(e) => {
                self.metrics.jwks_fetches.with_label_values(&[&self.name, "error"]).inc();
                tracing::warn!(issuer = %self.name, error = %e, stale_keys = self.snapshot.load().is_some(), "key fetch failed");
                *self.last_error.lock().unwrap() = Some(e.clone());
                Err(e)
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// A background refresh: always fetches (the schedule already spaces them).
    pub async fn refresh(&self) -> Result<Option<Duration>, String> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_locked().await
    }

    /// Called when a token's `kid` is not in the current keys (or there are no keys yet).
    /// Returns true when a fetch completed since `seen_generation`, so the caller should look
    /// again. Shares one fetch among concurrent callers, waits at most `fetch_timeout_seconds`,
    /// and starts no fetch inside the cooldown or for a kid that recently stayed unknown.
    pub async fn refetch_for_unknown(&self, kid: Option<&str>, seen_generation: u64) -> bool {
        let kid_key = kid.unwrap_or("");
        let now = Instant::now();
        {
            let mut unknown = self.unknown_kids.lock().unwrap();
            match unknown.get(kid_key) {
                Some(until) if *until > now => {
                    drop(unknown);
                    self.metrics.unknown_kid_refusals.with_label_values(&[&self.name]).inc();
                    return false;
                }
                Some(_) => {
                    unknown.remove(kid_key);
                }
                None => {}
            }
        }
        // Fast refusal inside the cooldown, unless a fetch is running that we can wait for.
        if self.in_cooldown() && !self.fetching.load(Ordering::Acquire) && self.generation() == seen_generation {
            self.metrics.unknown_kid_refusals.with_label_values(&[&self.name]).inc();
            return false;
        }
        let Ok(_guard) = tokio::time::timeout(self.jwks.fetch_timeout, self.fetch_lock.lock()).await else {
            return false;
        };
        if self.generation() != seen_generation {
            return true;
        }
        if self.in_cooldown() {
            self.metrics.unknown_kid_refusals.with_label_values(&[&self.name]).inc();
            return false;
        }
        self.metrics.unknown_kid_refetches.with_label_values(&[&self.name]).inc();
        self.fetch_locked().await.is_ok()
    }

    /// Remembers that `kid` stayed unknown after the keys were current, until the cooldown ends.
    pub fn remember_unknown(&self, kid: Option<&str>) {
        let mut unknown = self.unknown_kids.lock().unwrap();
        if unknown.len() >= NEGATIVE_CAPACITY {
            let now = Instant::now();
            unknown.retain(|_, until| *until > now);
            if unknown.len() >= NEGATIVE_CAPACITY {
                unknown.clear();
            }
        }
        unknown.insert(kid.unwrap_or("").to_string(), Instant::now() + self.jwks.min_refresh_interval);
    }

    /// Refreshes forever: at once, then on schedule, with backoff after failures, until cancelled.
    /// `on_refresh` runs after every successful fetch (the token cache drops dead keys there).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, on_refresh: impl Fn() + Send + 'static) {
        let mut failures = 0u32;
        loop {
            let delay = match self.refresh().await {
                Ok(max_age) => {
                    failures = 0;
                    on_refresh();
                    next_refresh(&self.jwks, max_age, fastrand::f64())
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    backoff(&self.jwks, failures, fastrand::f64())
                }
            };
            tracing::debug!(issuer = %self.name, delay_ms = delay.as_millis() as u64, "next key refresh");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Updates this issuer's age gauge (called when `/metrics` is scraped).
    pub fn export_age(&self) {
        let age = self.last_success_age().unwrap_or(-1.0);
        self.metrics.jwks_last_success_age.with_label_values(&[&self.name]).set(age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JwksConfig {
        JwksConfig {
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(10),
            max_stale: Duration::from_secs(86400),
            fetch_timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
            max_keys: 100,
        }
    }

    #[test]
    fn shorter_max_age_wins_but_never_below_the_minimum() {
        let c = cfg();
        assert_eq!(next_refresh(&c, None, 0.0), Duration::from_secs(300));
        assert_eq!(next_refresh(&c, Some(Duration::from_secs(60)), 0.0), Duration::from_secs(60));
        assert_eq!(next_refresh(&c, Some(Duration::from_secs(1)), 0.0), Duration::from_secs(10));
        assert_eq!(next_refresh(&c, Some(Duration::from_secs(9999)), 0.0), Duration::from_secs(300));
        assert!(next_refresh(&c, None, 1.0) >= Duration::from_secs(270));
    }

    #[test]
    fn backoff_doubles_from_the_minimum_and_caps_at_sixty_seconds() {
        let c = cfg();
        assert_eq!(backoff(&c, 1, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(&c, 2, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(&c, 3, 1.0), Duration::from_secs(40));
        assert_eq!(backoff(&c, 4, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&c, 40, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&c, 1, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn backoff_never_exceeds_the_refresh_interval() {
        let mut c = cfg();
        c.refresh_interval = Duration::from_secs(30);
        assert_eq!(backoff(&c, 10, 1.0), Duration::from_secs(30));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CACHE_CONTROL, "public, max-age=120, must-revalidate".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::from_secs(120)));
        h.insert(http::header::CACHE_CONTROL, "no-cache".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }
}
