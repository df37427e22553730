//! The key-set lifecycle of each issuer, in one owner: discovery, JWKS fetches, the refresh
//! schedule with backoff, stale-if-error, revocation by an empty answer, the refetch for an
//! unknown `kid`, and the memory of kids a fetch did not contain. Every key-set rule is here.
//!
//! One task per issuer ([`IssuerKeys::run`]) does every fetch (a one-shot tool that runs no owner,
//! such as `jwtgate explain`, gets each wanted fetch in a task of its own, under the same
//! cooldown). Requests never fetch: they read
//! an immutable `Arc<Snapshot>` from an `ArcSwap` (no lock, never across an `.await`), and when
//! the token's key is not in it they signal the owner and wait on a `watch` of completed fetches,
//! at most until the fetch in progress must end. So a request whose key is known never waits on
//! the identity provider, and a request that goes away cancels nothing.
//!
//! The promises (README, "Operations"):
//! - one fetch per `min_refresh_interval_seconds` (the cooldown), of any kind: the owner is the only
//!   one that starts fetches, and it starts none within the cooldown after the last one started;
//! - a published key is usable within one cooldown plus one fetch: a refusal never extends the
//!   cooldown, and a kid is remembered as unknown only after a completed fetch that lacked it, until
//!   that fetch's start plus the cooldown (exactly when the next fetch may start);
//! - a fetch, once started, finishes or times out whatever happens to the requests waiting on it;
//! - an empty answer (a well-formed JWK Set with no usable key) replaces the keys: the issuer's
//!   tokens get 503 and it is not ready; only failures to fetch or parse keep the last good keys;
//! - https stays https: an https issuer's discovery must name an https `jwks_uri`, and no redirect
//!   may lead to http;
//! - shutdown abandons a fetch in progress.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::algorithm::Algorithm;
use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{IssuerConfig, JwksConfig};
use crate::error::AuthError;
use crate::keys::{KeySet, VerifyingKey};
use crate::metrics::Metrics;
use crate::token_cache::Entry;

/// Backoff never exceeds this, nor `refresh_interval_seconds`.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Redirects followed on discovery and JWKS requests.
const MAX_REDIRECTS: usize = 3;
/// Bytes the memory of unknown kids may hold (kid text plus a fixed per-entry overhead).
const UNKNOWN_KIDS_BYTES: usize = 64 * 1024;
/// What one remembered kid costs besides its text (hash-table slot, allocation header).
const UNKNOWN_KID_OVERHEAD: usize = 48;

/// One successful load of an issuer's keys (possibly empty: the provider withdrew every key).
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
    /// Usable keys loaded and within `max_stale_seconds`.
    Ready,
    /// The last successful load is older than `max_stale_seconds`.
    Stale,
    /// The provider's last answer was a JWK Set without a usable key: every token is refused.
    NoKeys,
}

impl IssuerState {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerState::Loading => "loading",
            IssuerState::Ready => "ready",
            IssuerState::Stale => "stale",
            IssuerState::NoKeys => "no_keys",
        }
    }
}

/// The result of one fetch: the keys and the JWKS response's `Cache-Control: max-age`.
pub type Fetched = Result<(KeySet, Option<Duration>), String>;

/// Where an issuer's keys come from. Production uses [`HttpSource`]; tests script one to drive
/// the lifecycle under paused time.
pub trait KeySource: Send + Sync + 'static {
    /// Fetches the current key set. Called by one task at a time (the issuer's owner task). An
    /// `Ok` with an empty set means the provider answered with no usable key (revocation).
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Fetched> + Send + '_>>;
}

/// Discovery and JWKS over HTTP(S).
pub struct HttpSource {
    name: String,
    issuer: String,
    jwks_uri: Option<Url>,
    jwks: JwksConfig,
    client: reqwest::Client,
    /// The configured `issuer` or `jwks_uri` is https: discovery must name https (redirects are
    /// held to https by the client's redirect policy, see [`build_client`]).
    https_only: bool,
    /// The `jwks_uri` learned by discovery, kept until a JWKS fetch fails.
    discovered: Mutex<Option<Url>>,
}

/// What waiters learn from a completed fetch attempt.
#[derive(Debug, Clone, Copy)]
struct Completed {
    /// Completed attempts so far.
    generation: u64,
    /// When this attempt started (the negative memory of kids runs from here).
    started: Instant,
    /// It produced a key set (possibly empty).
    ok: bool,
}

/// When fetches start. Held only for a few instructions, never across an `.await`.
#[derive(Debug, Default)]
struct FetchState {
    /// When the last fetch, of any kind, started: no fetch starts within the cooldown after it.
    last_start: Option<Instant>,
    /// The fetch in progress: when it started.
    in_flight: Option<Instant>,
    /// A request met an unknown kid after the cooldown: fetch now.
    wanted: bool,
}

/// Kids a completed fetch did not contain, until that fetch's start plus the cooldown.
///
/// Only the latest fetch's kids are kept: the next fetch starts at least one cooldown after the
/// last, when every entry of the older one has expired anyway. Bounded in bytes (each kid at most
/// [`crate::validate::MAX_KID_BYTES`], [`UNKNOWN_KIDS_BYTES`] in all); a kid that does not fit is
/// simply not remembered, which costs nothing but a signal to the owner (still one fetch per
/// cooldown). Insertion and lookup are O(1) (std's SipHash with random keys: no crafted collisions).
#[derive(Debug, Default)]
struct UnknownKids {
    /// When the entries expire: the fetch's start plus the cooldown.
    until: Option<Instant>,
    kids: HashSet<Box<str>>,
    /// A token without `kid` found no single fitting key.
    no_kid: bool,
    bytes: usize,
}

impl UnknownKids {
    fn remembers(&self, kid: Option<&str>, now: Instant) -> bool {
        if self.until.is_none_or(|until| now >= until) {
            return false;
        }
        match kid {
            None => self.no_kid,
            Some(k) => self.kids.contains(k),
        }
    }

    /// Remembers `kid` as absent from the fetch whose memory ends at `until`.
    fn remember(&mut self, kid: Option<&str>, until: Instant) {
        match self.until {
            Some(current) if until < current => return, // an older fetch: already superseded
            Some(current) if until == current => {}
            _ => {
                self.until = Some(until);
                self.kids.clear();
                self.no_kid = false;
                self.bytes = 0;
            }
        }
        let Some(kid) = kid else {
            self.no_kid = true;
            return;
        };
        let cost = kid.len() + UNKNOWN_KID_OVERHEAD;
        if kid.len() > crate::validate::MAX_KID_BYTES
            || self.bytes + cost > UNKNOWN_KIDS_BYTES
            || self.kids.contains(kid)
        {
            return;
        }
        self.kids.insert(kid.into());
        self.bytes += cost;
    }
}

/// Everything about one issuer's keys: the snapshot requests read, and the state of the one
/// task ([`IssuerKeys::run`]) that fetches them.
pub struct IssuerKeys {
    pub name: String,
    jwks: JwksConfig,
    source: Box<dyn KeySource>,
    metrics: Metrics,
    snapshot: ArcSwapOption<Snapshot>,
    fetch: Mutex<FetchState>,
    /// Wakes the owner when a request first wants a fetch.
    wake: Notify,
    /// The owner task runs. Without it (one-shot tools such as `jwtgate explain`), a request that
    /// wants a fetch spawns it as a task of its own: still never inside the request's future.
    owner_running: AtomicBool,
    /// Every completed fetch attempt, for requests waiting on one.
    completed: watch::Sender<Option<Completed>>,
    unknown_kids: Mutex<UnknownKids>,
    last_error: Mutex<Option<String>>,
}

/// The full text of an error and its sources (reqwest's `Display` omits the cause, which is
/// where "redirect to http refused" or "connection refused" is).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// True when the configured issuer or `jwks_uri` is https: then nothing may lead to http.
pub fn https_only(config: &IssuerConfig) -> bool {
    config.issuer.starts_with("https://") || config.jwks_uri.as_ref().is_some_and(|u| u.scheme() == "https")
}

/// Follows at most [`MAX_REDIRECTS`] redirects, and none from https (or from an https-only
/// issuer) to plain http: a downgrade would let anyone on the path serve the keys.
fn redirect_policy(https_only: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let from_https = https_only || attempt.previous().iter().any(|u| u.scheme() == "https");
        if from_https && attempt.url().scheme() != "https" {
            let to = attempt.url().to_string();
            return attempt.error(format!("redirect to {to} refused: https stays https"));
        }
        attempt.follow()
    })
}

/// Builds the HTTP client for an issuer: rustls, timeouts, capped redirects that never leave
/// https, the proxy environment variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), and the
/// issuer's `ca_file` roots on top of the system's.
pub fn build_client(config: &IssuerConfig, jwks: &JwksConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
        .timeout(jwks.fetch_timeout)
        .connect_timeout(jwks.fetch_timeout)
        .redirect(redirect_policy(https_only(config)));
    if let Some(path) = &config.ca_file {
        let certs = crate::config::read_ca_file(path)
            .map_err(|e| format!("issuer {}: ca_file {}: {e}", config.name, path.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| format!("issuer {}: HTTP client: {}", config.name, error_chain(&e)))
}

/// Reads a response body, refusing more than `max` bytes.
async fn capped_body(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|l| l > max as u64) {
        return Err(format!("response larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading body: {}", error_chain(&e)))? {
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
/// capped at `min(60 s, refresh_interval)`, with jitter in the upper half of each step but never
/// below the minimum interval (the cooldown holds for retries too).
pub fn backoff(jwks: &JwksConfig, failures: u32, jitter: f64) -> Duration {
    let cap = MAX_BACKOFF.min(jwks.refresh_interval).max(jwks.min_refresh_interval);
    let step = jwks.min_refresh_interval.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(cap);
    let low = (step / 2).max(jwks.min_refresh_interval).min(step);
    low + (step - low).mul_f64(jitter.clamp(0.0, 1.0))
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

    /// OIDC discovery (OpenID Connect Discovery 1.0 §4): the document's `issuer` must equal ours,
    /// and an https issuer's `jwks_uri` must be https.
    async fn discover(&self) -> Result<Url, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let response =
            self.client.get(&url).send().await.map_err(|e| format!("discovery {url}: {}", error_chain(&e)))?;
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
            Ok(u) if u.scheme() == "https" => Ok(u),
            Ok(u) if u.scheme() == "http" && !self.https_only => Ok(u),
            Ok(u) if u.scheme() == "http" => {
                Err(format!("discovery {url}: jwks_uri `{jwks_uri}` is http for an https issuer: https stays https"))
            }
            _ => Err(format!("discovery {url}: jwks_uri `{jwks_uri}` is not an http(s) URL")),
        }
    }

    async fn fetch_jwks(&self, uri: &Url) -> Fetched {
        let response =
            self.client.get(uri.clone()).send().await.map_err(|e| format!("JWKS {uri}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("JWKS {uri}: HTTP {}", response.status().as_u16()));
        }
        let max_age = max_age(response.headers());
        let body = capped_body(response, self.jwks.max_response_bytes).await.map_err(|e| format!("JWKS {uri}: {e}"))?;
        let (keys, skipped) = KeySet::from_jwks(&body, self.jwks.max_keys).map_err(|e| format!("JWKS {uri}: {e}"))?;
        for s in &skipped {
            tracing::warn!(issuer = %self.name, index = s.index, kid = s.kid.as_deref().unwrap_or(""), why = %s.why, "JWKS entry skipped");
        }
        // A well-formed set without a usable key is an answer, not a failure: the provider
        // withdrew its keys (the owner revokes; see `IssuerKeys::install`).
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
            https_only: https_only(config),
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
            fetch: Mutex::new(FetchState::default()),
            wake: Notify::new(),
            owner_running: AtomicBool::new(false),
            completed: watch::Sender::new(None),
            unknown_kids: Mutex::new(UnknownKids::default()),
            last_error: Mutex::new(None),
        }
    }

    /// The keys to verify with now, or `KeysUnavailable`: never loaded, past `max_stale`, or the
    /// provider's last answer held no usable key.
    pub fn current(&self) -> Result<Arc<Snapshot>, AuthError> {
        let snap = self.snapshot.load_full().ok_or(AuthError::KeysUnavailable)?;
        if snap.keys.is_empty() || snap.fetched_at.elapsed() > self.jwks.max_stale {
            return Err(AuthError::KeysUnavailable);
        }
        Ok(snap)
    }

    pub fn state(&self) -> IssuerState {
        match self.snapshot.load().as_ref() {
            None => IssuerState::Loading,
            Some(s) if s.fetched_at.elapsed() > self.jwks.max_stale => IssuerState::Stale,
            Some(s) if s.keys.is_empty() => IssuerState::NoKeys,
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

    /// Completed fetch attempts so far (successful or not).
    pub fn generation(&self) -> u64 {
        self.completed.borrow().map_or(0, |c| c.generation)
    }

    /// True when a fetch could start now: none is running and the cooldown after the last start
    /// has passed (what a request with an unknown kid would find; for tests and diagnostics).
    pub fn may_fetch_now(&self) -> bool {
        let st = self.fetch.lock().unwrap();
        st.in_flight.is_none() && st.last_start.is_none_or(|t| t.elapsed() >= self.jwks.min_refresh_interval)
    }

    /// The longest one fetch may take: discovery and the JWKS request, each within
    /// `fetch_timeout_seconds`. The owner abandons a fetch that takes longer.
    fn fetch_limit(&self) -> Duration {
        self.jwks.fetch_timeout.saturating_mul(2)
    }

    /// Whether a token verified earlier (a cache entry) may still be vouched for: the issuer has
    /// usable keys and still publishes the key that verified it. `UnknownKey` when that key left.
    pub fn vouch(&self, entry: &Entry) -> Result<(), AuthError> {
        let snap = self.current()?;
        if snap.keys.keys().iter().any(|k| entry.verified_by(k)) { Ok(()) } else { Err(AuthError::UnknownKey) }
    }

    /// The current keys when they can decide a token with this `kid` and `alg` (a key by that
    /// `kid`, or for a token without `kid` exactly one fitting key); `UnknownKey` or
    /// `KeysUnavailable` otherwise.
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Snapshot>, AuthError> {
        let snap = self.current()?;
        match snap.keys.select(kid, alg) {
            Err(AuthError::UnknownKey) => Err(AuthError::UnknownKey),
            // Found, or an error `validate::finish` reports again (a kid that does not fit `alg`).
            _ => Ok(snap),
        }
    }

    /// The keys to verify a token with `kid` and `alg` with.
    ///
    /// When the current keys cannot decide it (unknown kid, nothing loaded, stale, revoked), the
    /// request waits for the next completed fetch when one is running or may start now (then it
    /// asks the owner to start it); inside the cooldown it is refused at once, and so is a kid the
    /// latest fetch did not contain, until that fetch's start plus the cooldown. The wait is
    /// bounded by the fetch's own limit, and dropping this future cancels nothing.
    pub async fn keys_for(self: &Arc<Self>, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Snapshot>, AuthError> {
        if let Ok(snap) = self.lookup(kid, alg) {
            return Ok(snap);
        }
        // Subscribe, then look again, so a fetch completing in between is not missed.
        let mut completed = self.completed.subscribe();
        let missing = match self.lookup(kid, alg) {
            Ok(snap) => return Ok(snap),
            Err(e) => e,
        };
        let now = Instant::now();
        let refused_without_fetch = |e: AuthError| {
            if e == AuthError::UnknownKey {
                self.metrics.unknown_kid_refusals.with_label_values(&[&self.name]).inc();
            }
            Err(e)
        };
        if self.unknown_kids.lock().unwrap().remembers(kid, now) {
            return refused_without_fetch(missing);
        }
        let Some(deadline) = self.want_fetch(now) else {
            // A fetch may have completed since we looked: its keys decide.
            if completed.has_changed().unwrap_or(false) {
                return self.lookup(kid, alg);
            }
            return refused_without_fetch(missing);
        };
        let done = match tokio::time::timeout_at(deadline, completed.changed()).await {
            Ok(Ok(())) => *completed.borrow_and_update(),
            _ => None,
        };
        match self.lookup(kid, alg) {
            Ok(snap) => Ok(snap),
            Err(e) => {
                // Only a completed fetch that answered, and lacked the kid, is remembered; and only
                // until the next fetch may start, so a refusal never extends the cooldown.
                if let Some(done) = done.filter(|d| d.ok) {
                    let until = done.started + self.jwks.min_refresh_interval;
                    self.unknown_kids.lock().unwrap().remember(kid, until);
                }
                Err(e)
            }
        }
    }

    /// Asks for a fetch when one may start now. Returns how long to wait for the next completed
    /// fetch: until the running fetch's limit, or a whole limit for the one asked for; `None`
    /// inside the cooldown, where nothing is asked (the next request after the cooldown asks
    /// again, so a flood costs one fetch per cooldown at most, and nothing once it stops).
    fn want_fetch(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut st = self.fetch.lock().unwrap();
        if let Some(started) = st.in_flight {
            return Some(started + self.fetch_limit());
        }
        if st.last_start.is_some_and(|t| now < t + self.jwks.min_refresh_interval) {
            return None;
        }
        if self.owner_running.load(Ordering::Acquire) {
            let first = !std::mem::replace(&mut st.wanted, true);
            drop(st);
            if first {
                self.wake.notify_one();
            }
        } else {
            // No owner: the fetch runs in a task of its own, so this request cannot cancel it.
            st.last_start = Some(now);
            st.in_flight = Some(now);
            drop(st);
            self.metrics.unknown_kid_refetches.with_label_values(&[&self.name]).inc();
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.fetch_and_install(now, &|_| {}).await;
            });
        }
        Some(now + self.fetch_limit())
    }

    /// When the owner may start the next fetch: at the scheduled time `due`, or at once when a
    /// request asked (it asks only once the cooldown is over); never within the cooldown of the
    /// last start.
    fn next_start(&self, due: Instant) -> Instant {
        let st = self.fetch.lock().unwrap();
        let allowed = st.last_start.map_or(due, |t| t + self.jwks.min_refresh_interval);
        if st.wanted { allowed } else { due.max(allowed) }
    }

    /// Marks a fetch as started: `Some(true)` when a request asked for it before its scheduled
    /// time, `None` when another fetch is still running (one a request spawned before the owner
    /// ran), which the owner then waits for instead.
    fn begin_fetch(&self, started: Instant, due: Instant) -> Option<bool> {
        let mut st = self.fetch.lock().unwrap();
        if st.in_flight.is_some() {
            return None;
        }
        st.last_start = Some(started);
        st.in_flight = Some(started);
        Some(std::mem::take(&mut st.wanted) && started < due)
    }

    /// Runs one fetch to its end or its limit, and installs the result.
    async fn fetch_and_install(
        &self,
        started: Instant,
        on_keys_removed: &(dyn Fn(&[Arc<VerifyingKey>]) + Sync),
    ) -> Result<Option<Duration>, String> {
        let limit = self.fetch_limit();
        let result = match tokio::time::timeout(limit, self.source.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        };
        self.install(result, started, on_keys_removed)
    }

    /// Installs a fetch's result and tells the waiters. A key set replaces the keys, even an
    /// empty one (revocation); a failure keeps the last good keys (stale-if-error). Keys that left
    /// are purged from the verified-token cache in the same step.
    fn install(
        &self,
        result: Fetched,
        started: Instant,
        on_keys_removed: &(dyn Fn(&[Arc<VerifyingKey>]) + Sync),
    ) -> Result<Option<Duration>, String> {
        let outcome = match result {
            Ok((keys, max_age)) => {
                let previous = self.snapshot.load_full();
                let keys = match &previous {
                    Some(p) => keys.reuse_from(&p.keys),
                    None => keys,
                };
                let removed: Vec<Arc<VerifyingKey>> = previous
                    .as_ref()
                    .map(|p| p.keys.keys().iter().filter(|k| !keys.contains(k)).cloned().collect())
                    .unwrap_or_default();
                self.metrics.jwks_keys.with_label_values(&[&self.name]).set(keys.len() as i64);
                self.metrics.jwks_fetches.with_label_values(&[&self.name, "ok"]).inc();
                if keys.is_empty() {
                    tracing::warn!(
                        issuer = %self.name,
                        "the JWKS holds no usable key: every token of this issuer is refused (503) and it is not ready until the provider publishes one"
                    );
                }
                self.snapshot.store(Some(Arc::new(Snapshot { keys, fetched_at: Instant::now() })));
                if !removed.is_empty() {
                    on_keys_removed(&removed);
                    tracing::info!(issuer = %self.name, removed = removed.len(), "keys removed from the JWKS no longer validate tokens");
                }
                *self.last_error.lock().unwrap() = None;
                Ok(max_age)
            }
            Err(e) => {
                self.metrics.jwks_fetches.with_label_values(&[&self.name, "error"]).inc();
                tracing::warn!(issuer = %self.name, error = %e, stale_keys = self.snapshot.load().is_some(), "key fetch failed");
                *self.last_error.lock().unwrap() = Some(e.clone());
                Err(e)
            }
        };
        self.finish_fetch(started, outcome.is_ok());
        outcome
    }

    /// Ends the fetch that started at `started` and wakes everyone waiting on it.
    fn finish_fetch(&self, started: Instant, ok: bool) {
        self.fetch.lock().unwrap().in_flight = None;
        self.completed.send_modify(|c| {
            let generation = c.map_or(0, |c| c.generation) + 1;
            *c = Some(Completed { generation, started, ok });
        });
    }

    /// One fetch now, outside the owner task: for tools and benches that run no owner. It starts
    /// no second fetch while one is in progress (it waits for that one instead) but does not wait
    /// for the cooldown. The service never calls it: there [`IssuerKeys::run`] does every fetch.
    pub async fn refresh(&self) -> Result<Option<Duration>, String> {
        let mut completed = self.completed.subscribe();
        let started = Instant::now();
        let running = {
            let mut st = self.fetch.lock().unwrap();
            let running = st.in_flight.is_some();
            if !running {
                st.last_start = Some(started);
                st.in_flight = Some(started);
            }
            running
        };
        if running {
            // That fetch ends within its own limit.
            let _ = completed.changed().await;
            let ok = completed.borrow().is_some_and(|c| c.ok);
            return if ok { Ok(None) } else { Err(self.last_error().unwrap_or_default()) };
        }
        // No timer here, so it runs on any executor (benches poll it without a Tokio runtime);
        // the HTTP source bounds each request with `fetch_timeout_seconds` itself.
        let result = self.source.fetch().await;
        self.install(result, started, &|_| {})
    }

    /// The owner: does every fetch of this issuer until `cancel`. Loads at once, then refreshes
    /// on schedule (interval or `max-age`, with jitter), retries with backoff after a failure, and
    /// fetches when a request met an unknown kid; never two starts within the cooldown. A fetch
    /// in progress is abandoned at `cancel` (shutdown never waits on the provider).
    /// `on_keys_removed` runs in the same step as a key set that drops keys is installed.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        on_keys_removed: impl Fn(&[Arc<VerifyingKey>]) + Send + Sync + 'static,
    ) {
        /// Clears `owner_running` however the owner ends (returned, or its task aborted).
        struct Running<'a>(&'a AtomicBool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.owner_running.store(true, Ordering::Release);
        let _running = Running(&self.owner_running);
        let mut due = Instant::now();
        let mut failures = 0u32;
        loop {
            let start_at = self.next_start(due);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                // A request wants a fetch: recompute when (the cooldown may allow it sooner).
                _ = self.wake.notified() => continue,
                _ = tokio::time::sleep_until(start_at) => {}
            }
            let started = Instant::now();
            match self.begin_fetch(started, due) {
                Some(true) => {
                    self.metrics.unknown_kid_refetches.with_label_values(&[&self.name]).inc();
                    tracing::debug!(issuer = %self.name, "fetching keys for an unknown kid");
                }
                Some(false) => {}
                None => {
                    let mut completed = self.completed.subscribe();
                    if self.fetch.lock().unwrap().in_flight.is_some() {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::timeout(self.fetch_limit(), completed.changed()) => {}
                        }
                    }
                    continue;
                }
            }
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.finish_fetch(started, false);
                    tracing::info!(issuer = %self.name, "shutting down: key fetch in progress abandoned");
                    return;
                }
                outcome = self.fetch_and_install(started, &on_keys_removed) => outcome,
            };
            let delay = match outcome {
                Ok(max_age) => {
                    failures = 0;
                    next_refresh(&self.jwks, max_age, fastrand::f64())
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    backoff(&self.jwks, failures, fastrand::f64())
                }
            };
            due = Instant::now() + delay;
            tracing::debug!(issuer = %self.name, delay_ms = delay.as_millis() as u64, "next scheduled key refresh");
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
        assert_eq!(backoff(&c, 3, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(&c, 40, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn backoff_jitter_never_goes_below_the_cooldown() {
        let c = cfg();
        for failures in 1..20 {
            for jitter in [0.0, 0.01, 0.5, 0.99, 1.0] {
                let d = backoff(&c, failures, jitter);
                assert!(d >= c.min_refresh_interval && d <= MAX_BACKOFF, "{failures} {jitter}: {d:?}");
            }
        }
        // A cooldown longer than the cap: the cooldown wins.
        let mut long = cfg();
        long.min_refresh_interval = Duration::from_secs(120);
        assert_eq!(backoff(&long, 1, 0.0), Duration::from_secs(120));
        assert_eq!(backoff(&long, 5, 1.0), Duration::from_secs(120));
    }

    fn at(secs: u64) -> Instant {
        // A fixed origin: `UnknownKids` only compares instants.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    #[test]
    fn an_unknown_kid_is_remembered_until_its_fetch_time_plus_the_cooldown_only() {
        let mut u = UnknownKids::default();
        u.remember(Some("k"), at(10));
        assert!(u.remembers(Some("k"), at(9)));
        assert!(!u.remembers(Some("k"), at(10)), "expires at fetch time + cooldown");
        assert!(!u.remembers(Some("other"), at(5)));
        assert!(!u.remembers(None, at(5)));
        u.remember(None, at(10));
        assert!(u.remembers(None, at(5)));
    }

    #[test]
    fn remembering_again_never_extends_the_memory() {
        let mut u = UnknownKids::default();
        u.remember(Some("k"), at(10));
        // A late writer from an older fetch changes nothing.
        u.remember(Some("k"), at(5));
        u.remember(Some("old"), at(5));
        assert!(!u.remembers(Some("k"), at(10)));
        assert!(!u.remembers(Some("old"), at(4)));
        // A newer fetch replaces the older one's kids.
        u.remember(Some("new"), at(20));
        assert!(u.remembers(Some("new"), at(15)));
        assert!(!u.remembers(Some("k"), at(9)), "the older fetch's kids are gone");
    }

    #[test]
    fn unknown_kid_memory_is_bounded_in_bytes_and_kid_length() {
        let mut u = UnknownKids::default();
        let long = "x".repeat(crate::validate::MAX_KID_BYTES + 1);
        u.remember(Some(&long), at(10));
        assert!(!u.remembers(Some(&long), at(1)), "an over-long kid is not kept");
        for i in 0..100_000 {
            u.remember(Some(&format!("{i:0>200}")), at(10));
        }
        assert!(u.bytes <= UNKNOWN_KIDS_BYTES, "{}", u.bytes);
        let kept: usize = u.kids.iter().map(|k| k.len() + UNKNOWN_KID_OVERHEAD).sum();
        assert_eq!(kept, u.bytes);
        assert!(u.kids.len() < UNKNOWN_KIDS_BYTES / 200, "{}", u.kids.len());
        assert!(u.remembers(Some(&format!("{:0>200}", 0)), at(1)), "the first ones are kept");
    }

    #[test]
    fn a_redirect_to_http_is_refused_for_an_https_issuer() {
        let cfg = |issuer: &str, jwks_uri: Option<&str>| IssuerConfig {
            name: "t".into(),
            issuer: issuer.into(),
            jwks_uri: jwks_uri.map(|u| Url::parse(u).unwrap()),
            audiences: vec!["a".into()],
            algorithms: vec![Algorithm::RS256],
            leeway_seconds: 0,
            ca_file: None,
            audience_claim: "aud".into(),
            scope_claims: vec![],
            max_token_lifetime_seconds: None,
            required_typ: None,
        };
        assert!(https_only(&cfg("https://idp.example", None)));
        assert!(https_only(&cfg("http://idp.example", Some("https://idp.example/keys"))));
        assert!(!https_only(&cfg("http://idp.example", None)));
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
