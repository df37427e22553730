//! Key-set lifecycle: the promises of the contract's "What the key set promises", each tested
//! twice where it can be: under paused `tokio::time` against a scripted [`KeySource`] (exact
//! schedules, no sleeps), and over HTTP against the in-process development issuer (real time,
//! waiting on observable conditions: hit counters, metrics, the owner's state). The last section
//! runs the real binary and prints the figures the README quotes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jwtgate::algorithm::Algorithm;
use jwtgate::config::JwksConfig;
use jwtgate::dev_issuer::{KeyRing, Mode};
use jwtgate::error::AuthError;
use jwtgate::jwks::{Fetched, IssuerKeys, IssuerState, KeySource};
use jwtgate::keys::{KeySet, VerifyingKey};
use jwtgate::metrics::Metrics;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Paused time, scripted source.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Next {
    Ok(Option<u64>),
    Fail,
    /// Never answers (the owner's limit or shutdown ends the fetch).
    Hang,
}

#[derive(Clone)]
struct Scripted {
    next: Arc<Mutex<Next>>,
    calls: Arc<Mutex<Vec<Instant>>>,
    delay: Duration,
    jwks: Arc<Mutex<Value>>,
}

impl Scripted {
    fn new(next: Next) -> Scripted {
        Scripted {
            next: Arc::new(Mutex::new(next)),
            calls: Arc::new(Mutex::new(Vec::new())),
            delay: Duration::ZERO,
            jwks: Arc::new(Mutex::new(KeyRing::standard().jwks())),
        }
    }
    fn set(&self, next: Next) {
        *self.next.lock().unwrap() = next;
    }
    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    fn last_call(&self) -> Instant {
        *self.calls.lock().unwrap().last().expect("a fetch happened")
    }
    fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls.windows(2).map(|w| w[1] - w[0]).collect()
    }
    /// Publishes another key under `kid` (a copy of `rs256-1`'s material: selection is by kid).
    fn publish(&self, kid: &str) {
        let mut jwks = self.jwks.lock().unwrap();
        let mut k = jwks["keys"][0].clone();
        k["kid"] = json!(kid);
        jwks["keys"].as_array_mut().unwrap().push(k);
    }
    fn serve(&self, doc: Value) {
        *self.jwks.lock().unwrap() = doc;
    }
}

impl KeySource for Scripted {
    fn fetch(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Fetched> + Send + '_>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(Instant::now());
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let next = *self.next.lock().unwrap();
            match next {
                Next::Ok(max_age) => {
                    let body = self.jwks.lock().unwrap().to_string();
                    let (keys, _) = KeySet::from_jwks(body.as_bytes(), 100).unwrap();
                    Ok((keys, max_age.map(Duration::from_secs)))
                }
                Next::Fail => Err("scripted failure".into()),
                Next::Hang => std::future::pending().await,
            }
        })
    }
}

fn jwks_config(refresh: u64, min: u64, max_stale: u64) -> JwksConfig {
    JwksConfig {
        refresh_interval: Duration::from_secs(refresh),
        min_refresh_interval: Duration::from_secs(min),
        max_stale: Duration::from_secs(max_stale),
        fetch_timeout: Duration::from_secs(5),
        max_response_bytes: 1 << 20,
        max_keys: 100,
    }
}

struct Owned {
    keys: Arc<IssuerKeys>,
    metrics: Metrics,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Every key handed to the removal hook (what the gate purges from its token cache).
    removed: Arc<Mutex<Vec<Arc<VerifyingKey>>>>,
}

impl Owned {
    fn counter(&self, c: &prometheus::IntCounterVec, labels: &[&str]) -> u64 {
        c.with_label_values(labels).get()
    }
    fn refetches(&self) -> u64 {
        self.counter(&self.metrics.unknown_kid_refetches, &["main"])
    }
    fn refusals(&self) -> u64 {
        self.counter(&self.metrics.unknown_kid_refusals, &["main"])
    }
    fn fetch_errors(&self) -> u64 {
        self.counter(&self.metrics.jwks_fetches, &["main", "error"])
    }
    async fn ask(&self, kid: &str) -> Result<(), AuthError> {
        self.keys.keys_for(Some(kid), Algorithm::RS256).await.map(|_| ())
    }
}

/// An issuer whose owner task runs.
fn owned(source: &Scripted, cfg: JwksConfig) -> Owned {
    let metrics = Metrics::new(&["main"]);
    let keys = Arc::new(IssuerKeys::with_source("main", cfg, Box::new(source.clone()), metrics.clone()));
    let cancel = CancellationToken::new();
    let removed = Arc::new(Mutex::new(Vec::new()));
    let sink = removed.clone();
    let task = tokio::spawn(
        keys.clone()
            .run(cancel.clone(), move |gone: &[Arc<VerifyingKey>]| sink.lock().unwrap().extend_from_slice(gone)),
    );
    Owned { keys, metrics, cancel, task, removed }
}

async fn at(start: Instant, millis: u64) {
    tokio::time::sleep_until(start + Duration::from_millis(millis)).await;
}

/// Paused time: steps 10 ms at a time until `cond` holds (panics after an hour of test time).
async fn step_until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(3600);
    while !cond() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_cooldown_held(src: &Scripted, cooldown: u64) {
    let gaps = src.gaps();
    assert!(gaps.iter().all(|g| *g >= Duration::from_secs(cooldown)), "two fetches within {cooldown} s: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn background_refresh_follows_the_interval_with_jitter_below_it() {
    let src = Scripted::new(Next::Ok(None));
    let start = Instant::now();
    let o = owned(&src, jwks_config(300, 10, 86400));
    at(start, 1000).await;
    assert_eq!(src.count(), 1, "loads at once");
    assert_eq!(o.keys.state(), IssuerState::Ready);
    at(start, 269_000).await;
    assert_eq!(src.count(), 1, "no refresh before interval minus 10% jitter");
    at(start, 301_000).await;
    assert_eq!(src.count(), 2, "refreshed within the interval");
}

#[tokio::test(start_paused = true)]
async fn shorter_cache_control_max_age_wins_but_never_below_the_cooldown() {
    let src = Scripted::new(Next::Ok(Some(60)));
    let start = Instant::now();
    let o = owned(&src, jwks_config(300, 10, 86400));
    at(start, 61_000).await;
    assert_eq!(src.count(), 2, "max-age 60 beats the 300 s interval");
    src.set(Next::Ok(Some(1)));
    at(start, 200_000).await;
    assert!(src.count() >= 10, "max-age 1 refreshes at the cooldown: {:?}", src.gaps());
    assert_cooldown_held(&src, 10);
    assert_eq!(o.fetch_errors(), 0);
}

#[tokio::test(start_paused = true)]
async fn failed_fetches_back_off_exponentially_from_the_cooldown_with_jitter_capped_at_sixty_seconds() {
    let src = Scripted::new(Next::Fail);
    let start = Instant::now();
    let o = owned(&src, jwks_config(300, 10, 86400));
    at(start, 3_600_000).await;
    let gaps: Vec<u64> = src.gaps().iter().map(|g| g.as_secs()).collect();
    let bounds = [(10, 10), (10, 20), (20, 40), (30, 60), (30, 60), (30, 60)];
    for (i, (lo, hi)) in bounds.iter().enumerate() {
        assert!((*lo..=*hi).contains(&gaps[i]), "gap {i} = {} not in {lo}..={hi}: {gaps:?}", gaps[i]);
    }
    assert!(gaps.iter().all(|g| (10..=60).contains(g)), "jitter never below the cooldown: {gaps:?}");
    assert_eq!(o.fetch_errors() as usize, src.count());
}

#[tokio::test(start_paused = true)]
async fn startup_with_the_provider_down_is_loading_then_ready_soon_after_it_returns() {
    let src = Scripted::new(Next::Fail);
    let start = Instant::now();
    let o = owned(&src, jwks_config(300, 10, 86400));
    at(start, 100_000).await;
    assert!(src.count() >= 3, "retried");
    assert_eq!(o.keys.state(), IssuerState::Loading);
    assert_eq!(o.keys.current().unwrap_err(), AuthError::KeysUnavailable);
    src.set(Next::Ok(None));
    at(start, 161_000).await;
    assert_eq!(o.keys.state(), IssuerState::Ready, "ready within one capped backoff (60 s) of the return");
}

#[tokio::test(start_paused = true)]
async fn last_good_keys_serve_until_max_stale_then_unavailable_then_recover() {
    let src = Scripted::new(Next::Ok(None));
    let start = Instant::now();
    let o = owned(&src, jwks_config(30, 10, 100));
    at(start, 1000).await;
    src.set(Next::Fail);
    at(start, 99_000).await;
    assert!(o.fetch_errors() >= 2, "the provider failed meanwhile");
    assert!(o.keys.current().is_ok(), "stale-if-error within max_stale");
    assert_eq!(o.keys.state(), IssuerState::Ready);
    at(start, 102_000).await;
    assert_eq!(o.keys.current().unwrap_err(), AuthError::KeysUnavailable);
    assert_eq!(o.keys.state(), IssuerState::Stale);
    assert_eq!(o.ask("rs256-1").await.unwrap_err(), AuthError::KeysUnavailable);
    src.set(Next::Ok(None));
    at(start, 102_000 + 61_000).await;
    assert_eq!(o.keys.state(), IssuerState::Ready, "resumes without a restart");
}

#[tokio::test(start_paused = true)]
async fn concurrent_unknown_kid_misses_share_one_fetch_and_the_cooldown_holds() {
    let mut src = Scripted::new(Next::Ok(None));
    src.delay = Duration::from_millis(200);
    let o = owned(&src, jwks_config(300, 10, 86400));
    step_until("the first load", || o.keys.state() == IssuerState::Ready).await;
    step_until("the cooldown passed", || o.keys.may_fetch_now()).await;
    src.publish("new");
    let before = src.count();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let k = o.keys.clone();
        tasks.push(tokio::spawn(async move { k.keys_for(Some("new"), Algorithm::RS256).await.map(|_| ()) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(()), "every waiter gets the shared fetch's keys");
    }
    assert_eq!(src.count() - before, 1, "50 concurrent misses, one fetch");
    assert_eq!(o.refetches(), 1);
    // Inside the cooldown: refused at once, no fetch, no time spent.
    let asked = Instant::now();
    assert_eq!(o.ask("other").await.unwrap_err(), AuthError::UnknownKey);
    assert_eq!(Instant::now(), asked, "refused without waiting");
    assert_eq!(src.count() - before, 1);
    assert_eq!(o.refusals(), 1);
    // A refusal asks for nothing: no fetch follows at the end of the cooldown.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(src.count() - before, 1, "a refused kid leaves no fetch behind");
    // Asked again after the cooldown, it fetches.
    assert_eq!(o.ask("other").await.unwrap_err(), AuthError::UnknownKey);
    assert_eq!(src.count() - before, 2);
    assert_cooldown_held(&src, 10);
}

#[tokio::test(start_paused = true)]
async fn a_kid_published_during_the_cooldown_and_asked_every_100_ms_is_accepted_within_the_cooldown_plus_one_fetch() {
    let mut src = Scripted::new(Next::Ok(None));
    src.delay = Duration::from_millis(200);
    let o = owned(&src, jwks_config(300, 10, 86400));
    step_until("the first load", || o.keys.state() == IssuerState::Ready).await;
    step_until("the cooldown passed", || o.keys.may_fetch_now()).await;
    // A kid the provider does not publish yet: one fetch, which starts the cooldown.
    assert_eq!(o.ask("new").await.unwrap_err(), AuthError::UnknownKey);
    assert_eq!(src.count(), 2, "the unknown kid caused a fetch");
    let cooldown_start = src.last_call();
    // The provider publishes it mid-cooldown; it keeps arriving every 100 ms.
    tokio::time::sleep_until(cooldown_start + Duration::from_secs(3)).await;
    src.publish("new");
    let published = Instant::now();
    let mut refusals = 0;
    while o.ask("new").await.is_err() {
        refusals += 1;
        assert!(published.elapsed() < Duration::from_secs(300), "never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused_for = published.elapsed();
    eprintln!(
        "paused time: kid published 3 s into a 10 s cooldown, asked every 100 ms: refused {refusals} times for {refused_for:?}"
    );
    assert!(
        refused_for <= Duration::from_secs(10) + src.delay + Duration::from_millis(100),
        "refused for {refused_for:?}: more than the cooldown plus one fetch"
    );
    assert!(refusals > 0, "the precondition: it was refused during the cooldown");
    assert_eq!(src.count(), 3, "one fetch after the publication");
    assert_cooldown_held(&src, 10);
}

#[tokio::test(start_paused = true)]
async fn a_requester_dropped_mid_fetch_does_not_cancel_it_and_the_waiters_get_its_result() {
    let mut src = Scripted::new(Next::Ok(None));
    src.delay = Duration::from_secs(2);
    let o = owned(&src, jwks_config(300, 10, 86400));
    step_until("the first load", || o.keys.state() == IssuerState::Ready).await;
    step_until("the cooldown passed", || o.keys.may_fetch_now()).await;
    src.publish("new");
    let first = {
        let k = o.keys.clone();
        tokio::spawn(async move { k.keys_for(Some("new"), Algorithm::RS256).await.map(|_| ()) })
    };
    step_until("the requester's fetch started", || src.count() == 2).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled(), "the requester went away mid-fetch");
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let k = o.keys.clone();
            tokio::spawn(async move { k.keys_for(Some("new"), Algorithm::RS256).await.map(|_| ()) })
        })
        .collect();
    for w in waiters {
        assert_eq!(w.await.unwrap(), Ok(()), "the waiters get the fetch's result");
    }
    assert_eq!(src.count(), 2, "the same fetch, finished: no second one");
    assert_eq!(o.keys.generation(), 2);
    assert_eq!(o.fetch_errors(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_refresh_never_follows_an_unknown_kid_refetch_within_the_cooldown() {
    let src = Scripted::new(Next::Ok(None));
    let start = Instant::now();
    let o = owned(&src, jwks_config(30, 10, 86400));
    // The schedule after the load at 0 is due at 27..30 s; an unknown kid at 26 s fetches at once.
    at(start, 26_000).await;
    assert_eq!(src.count(), 1);
    assert_eq!(o.ask("absent").await.unwrap_err(), AuthError::UnknownKey);
    assert_eq!(src.count(), 2, "the unknown kid caused a fetch at 26 s");
    assert_eq!(o.refetches(), 1);
    at(start, 120_000).await;
    assert!(src.count() >= 4, "the schedule goes on: {:?}", src.gaps());
    assert_cooldown_held(&src, 10);
}

#[tokio::test(start_paused = true)]
async fn no_two_fetches_of_any_kind_within_the_cooldown() {
    // Every kind at once for an hour: max-age 1, failures (backoff with jitter), scheduled
    // refreshes, and a stream of unknown kids every 100 ms.
    let src = Scripted::new(Next::Ok(Some(1)));
    let start = Instant::now();
    let o = owned(&src, jwks_config(15, 10, 86400));
    let flood = {
        let k = o.keys.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let _ = k.keys_for(Some(&format!("random-{i}")), Algorithm::RS256).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for (minute, next) in [Next::Ok(Some(1)), Next::Fail, Next::Ok(None), Next::Fail, Next::Ok(Some(3))]
        .into_iter()
        .cycle()
        .take(60)
        .enumerate()
    {
        src.set(next);
        at(start, (minute as u64 + 1) * 60_000).await;
    }
    flood.abort();
    assert!(o.fetch_errors() > 10 && o.refetches() > 10, "every kind happened");
    assert!(src.count() > 300, "about one fetch per cooldown: {}", src.count());
    assert_cooldown_held(&src, 10);
}

#[tokio::test(start_paused = true)]
async fn an_empty_or_all_unusable_set_revokes_every_token_and_the_issuer_is_not_ready_until_keys_return() {
    let src = Scripted::new(Next::Ok(None));
    let o = owned(&src, jwks_config(30, 10, 86400));
    step_until("the first load", || o.keys.state() == IssuerState::Ready).await;
    assert_eq!(o.ask("rs256-1").await, Ok(()));
    let all = KeyRing::standard().jwks();
    let unusable = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "tiny", "n": "AQAB", "e": "AQAB"},
    ]});
    for (what, doc) in [("empty", json!({"keys": []})), ("all unusable", unusable)] {
        src.serve(doc);
        let seen = o.keys.generation();
        step_until("the next refresh", || o.keys.generation() > seen).await;
        assert_eq!(o.keys.state(), IssuerState::NoKeys, "{what}");
        assert_eq!(o.keys.current().unwrap_err(), AuthError::KeysUnavailable, "{what}");
        assert_eq!(o.ask("rs256-1").await.unwrap_err(), AuthError::KeysUnavailable, "{what}: 503, not 401");
        let removed = std::mem::take(&mut *o.removed.lock().unwrap());
        assert_eq!(removed.len(), 3, "{what}: every key is purged from the token cache");
        assert_eq!(o.fetch_errors(), 0, "{what} is an answer, not a failure");
        src.serve(all.clone());
        let seen = o.keys.generation();
        step_until("the next refresh", || o.keys.generation() > seen).await;
        assert_eq!(o.keys.state(), IssuerState::Ready, "{what}: keys again, ready again");
        assert_eq!(o.ask("rs256-1").await, Ok(()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_keeps_the_keys_but_an_answer_replaces_them() {
    let src = Scripted::new(Next::Ok(None));
    let o = owned(&src, jwks_config(30, 10, 86400));
    step_until("the first load", || o.keys.state() == IssuerState::Ready).await;
    src.set(Next::Fail);
    let seen = o.keys.generation();
    step_until("a failed refresh", || o.keys.generation() > seen).await;
    assert_eq!(o.fetch_errors(), 1);
    assert_eq!(o.ask("es256-1").await, Ok(()), "stale-if-error");
    assert!(o.removed.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_an_owner_task_a_wanted_fetch_runs_in_a_task_of_its_own_under_the_same_cooldown() {
    // One-shot tools (`jwtgate explain`) decide on a gate whose owner tasks never run.
    let mut src = Scripted::new(Next::Ok(None));
    src.delay = Duration::from_secs(1);
    let metrics = Metrics::new(&["main"]);
    let keys = Arc::new(IssuerKeys::with_source("main", jwks_config(300, 10, 86400), Box::new(src.clone()), metrics));
    let first = {
        let k = keys.clone();
        tokio::spawn(async move { k.keys_for(Some("rs256-1"), Algorithm::RS256).await.map(|_| ()) })
    };
    step_until("the cold gate's fetch started", || src.count() == 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled(), "its requester went away");
    step_until("the fetch finished anyway", || keys.generation() == 1).await;
    assert_eq!(keys.state(), IssuerState::Ready);
    assert_eq!(keys.keys_for(Some("rs256-1"), Algorithm::RS256).await.map(|_| ()), Ok(()));
    // Inside the cooldown an unknown kid fetches nothing; after it, one fetch.
    assert_eq!(keys.keys_for(Some("new"), Algorithm::RS256).await.map(|_| ()), Err(AuthError::UnknownKey));
    assert_eq!(src.count(), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    src.publish("new");
    assert_eq!(keys.keys_for(Some("new"), Algorithm::RS256).await.map(|_| ()), Ok(()));
    assert_eq!(src.count(), 2);
    assert_cooldown_held(&src, 10);
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_hanging_fetch_abandons_it_at_once() {
    let src = Scripted::new(Next::Hang);
    let o = owned(&src, jwks_config(300, 10, 86400));
    step_until("the first fetch started and hangs", || src.count() == 1).await;
    let waiter = {
        let k = o.keys.clone();
        tokio::spawn(async move { k.keys_for(Some("rs256-1"), Algorithm::RS256).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "the request waits on the hanging fetch");
    let cancelled = Instant::now();
    o.cancel.cancel();
    o.task.await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap_err(), AuthError::KeysUnavailable);
    assert_eq!(Instant::now(), cancelled, "the owner and its waiters stop without waiting on the fetch");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_fetch_ends_at_its_limit_and_releases_its_waiters() {
    let src = Scripted::new(Next::Hang);
    let o = owned(&src, jwks_config(300, 10, 86400));
    step_until("the first fetch started and hangs", || src.count() == 1).await;
    let started = src.last_call();
    assert_eq!(o.ask("rs256-1").await.unwrap_err(), AuthError::KeysUnavailable);
    assert_eq!(Instant::now() - started, Duration::from_secs(10), "two fetch timeouts (discovery and JWKS)");
    step_until("the owner recorded the timeout", || o.fetch_errors() == 1).await;
    assert!(o.keys.last_error().unwrap().contains("no answer within 10 s"));
}

// ---------------------------------------------------------------------------------------------
// Real time, real HTTP against the development issuer.

/// A gate with a 1 s cooldown trusting a fresh development issuer, once ready and once the
/// cooldown after its first load has passed (so the next unknown kid may fetch).
async fn app_with(fetch_timeout: u64, extra_jwks: &str) -> TestApp {
    let app = spawn_app_extra(&format!(
        "jwks:\n  min_refresh_interval_seconds: 1\n  fetch_timeout_seconds: {fetch_timeout}\n{extra_jwks}"
    ))
    .await;
    wait_for_cooldown(&app).await;
    app
}

/// A gate refreshing every second (cooldown 1 s): its keys follow the IdP's within a second or two.
async fn refreshing_every_second() -> TestApp {
    spawn_app_extra("jwks:\n  min_refresh_interval_seconds: 1\n  refresh_interval_seconds: 1\n").await
}

async fn wait_for_cooldown(app: &TestApp) {
    wait_until("the cooldown has passed", async || app.gate.issuers[0].keys.may_fetch_now()).await;
}

fn random_kid_token(app: &TestApp, kid: &str) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string();
    let claims = app.issuer.claims("u", AUD, 300).to_string();
    app.issuer.sign_raw("rs256-1", Algorithm::RS256, header.as_bytes(), claims.as_bytes())
}

fn spawn_verify(app: &TestApp, token: &str) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    let (client, url, t) = (app.client.clone(), format!("{}/verify", app.url), token.to_string());
    tokio::spawn(async move { client.get(url).bearer_auth(t).send().await.unwrap().status() })
}

const FETCH_OK: &str = "jwtgate_jwks_fetches_total{issuer=\"main\",result=\"ok\"}";
const FETCH_ERROR: &str = "jwtgate_jwks_fetches_total{issuer=\"main\",result=\"error\"}";
const KEYS: &str = "jwtgate_jwks_keys{issuer=\"main\"}";
const MISSES: &str = "jwtgate_token_cache_lookups_total{result=\"miss\"}";

#[tokio::test]
async fn n_simultaneous_requests_with_one_new_kid_cause_exactly_one_fetch() {
    let app = app_with(3, "").await;
    app.issuer.add_key("rotated-2", Algorithm::ES256);
    let token = app.token("rotated-2");
    let before = app.issuer.jwks_hits();
    let tasks: Vec<_> = (0..50).map(|_| spawn_verify(&app, &token)).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200, "a rotated-in key is accepted without a false 401");
    }
    let fetches = app.issuer.jwks_hits() - before;
    eprintln!("measured: 50 concurrent requests with one new kid -> {fetches} JWKS fetch(es)");
    assert_eq!(fetches, 1);
    assert_eq!(app.metric("jwtgate_jwks_unknown_kid_refetches_total{issuer=\"main\"}").await, 1.0);
}

#[tokio::test]
async fn a_flood_of_random_kids_causes_at_most_one_fetch() {
    let app = app_with(3, "").await;
    let before = app.issuer.jwks_hits();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let t = random_kid_token(&app, &format!("random-{i}-{}", fastrand::u64(..)));
        let (client, url) = (app.client.clone(), format!("{}/verify", app.url));
        tasks.push(tokio::spawn(async move { client.get(url).bearer_auth(t).send().await.unwrap() }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("signing key not found"));
    }
    let fetches = app.issuer.jwks_hits() - before;
    eprintln!("measured: 200 requests with random kids -> {fetches} JWKS fetch(es)");
    assert!(fetches <= 1, "{fetches} fetches");
    assert!(app.metric("jwtgate_jwks_unknown_kid_refetches_total{issuer=\"main\"}").await <= 1.0);
    assert_eq!(
        app.metric("jwtgate_decisions_total{decision=\"deny\",issuer=\"main\",reason=\"unknown_key\"}").await,
        200.0
    );
}

#[tokio::test]
async fn known_keys_never_wait_on_a_hanging_provider() {
    let app = app_with(3, "").await;
    let good = app.token("rs256-1");
    assert_eq!(app.verify(Some(&good), "").await.status(), 200);
    app.issuer.set_mode(Mode::Hang);
    let before = app.issuer.jwks_hits();
    // An unknown kid starts a refetch that hangs until the fetch timeout (3 s).
    let stuck = spawn_verify(&app, &random_kid_token(&app, "new-kid"));
    wait_until("the IdP holds the JWKS request", async || app.issuer.jwks_hits() > before).await;
    let quick = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(1500)).build().unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        // Fresh tokens (cache misses) with a known kid, for every algorithm family.
        let kid = ["rs256-1", "es256-1", "eddsa-1"][i % 3];
        let t = app.sign(kid, &app.issuer.claims(&format!("u{i}"), AUD, 300));
        let started = std::time::Instant::now();
        let r =
            quick.get(format!("{}/verify", app.url)).bearer_auth(&t).send().await.expect("known-key request waited");
        worst = worst.max(started.elapsed());
        assert_eq!(r.status(), 200);
    }
    eprintln!("measured: worst known-key request latency while the IdP hangs: {worst:?}");
    assert_eq!(stuck.await.unwrap(), 401, "the unknown kid is refused after the fetch timeout");
    assert_eq!(app.metric(FETCH_ERROR).await, 1.0, "the hanging fetch timed out");
}

#[tokio::test]
async fn errors_and_garbage_keep_the_last_good_keys() {
    let app = app_with(3, "").await;
    for mode in [Mode::Error, Mode::Garbage] {
        app.issuer.set_mode(mode);
        wait_for_cooldown(&app).await;
        let errors = app.metric(FETCH_ERROR).await;
        let r = app.verify(Some(&random_kid_token(&app, "unknown")), "").await;
        assert_eq!(r.status(), 401);
        assert_eq!(app.metric(FETCH_ERROR).await, errors + 1.0, "the unknown kid's fetch was attempted ({mode:?})");
        assert_eq!(app.verify(Some(&app.token("es256-1")), "").await.status(), 200, "{mode:?}");
        let ready = app.client.get(format!("{}/readyz", app.url)).send().await.unwrap();
        assert_eq!(ready.status(), 200, "still ready with last good keys ({mode:?})");
    }
}

#[tokio::test]
async fn a_removed_key_stops_validating_even_cached_tokens_at_the_next_refresh() {
    let app = refreshing_every_second().await;
    let cached = app.token("rs256-1");
    assert_eq!(app.verify(Some(&cached), "").await.status(), 200);
    assert_eq!(app.verify(Some(&cached), "").await.status(), 200);
    assert!(app.metric("jwtgate_token_cache_lookups_total{result=\"hit\"}").await >= 1.0);
    app.issuer.unpublish("rs256-1");
    wait_until("a refresh dropped the key", async || app.metric(KEYS).await == 2.0).await;
    let r = app.verify(Some(&cached), "").await;
    assert_eq!(r.status(), 401, "a cached token whose key left the JWKS is refused");
    assert_eq!(app.verify(Some(&app.token("es256-1")), "").await.status(), 200, "other keys unaffected");
}

#[tokio::test]
async fn an_empty_or_all_unusable_jwks_revokes_cached_and_new_tokens_until_keys_return() {
    let app = refreshing_every_second().await;
    let cached = app.token("es256-1");
    assert_eq!(app.verify(Some(&cached), "").await.status(), 200);
    assert_eq!(app.verify(Some(&cached), "").await.status(), 200);
    assert!(app.metric("jwtgate_token_cache_lookups_total{result=\"hit\"}").await >= 1.0, "the token is cached");
    let kids = ["rs256-1", "es256-1", "eddsa-1"];
    for round in ["empty", "all unusable"] {
        if round == "all unusable" {
            app.issuer.add_raw_jwk(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
            app.issuer.add_raw_jwk(json!({"kty": "RSA", "kid": "tiny", "n": "AQAB", "e": "AQAB"}));
        }
        kids.iter().for_each(|k| app.issuer.unpublish(k));
        wait_until("a refresh installed the keyless set", async || app.metric(KEYS).await == 0.0).await;
        assert_eq!(app.verify(Some(&cached), "").await.status(), 503, "{round}: the cached token is revoked");
        let fresh = app.sign("rs256-1", &app.issuer.claims("fresh", AUD, 300));
        assert_eq!(app.verify(Some(&fresh), "").await.status(), 503, "{round}: new tokens too");
        let (status, body) = app.readyz().await;
        assert_eq!(status, 503, "{round}: {body}");
        assert_eq!(body["issuers"]["main"]["state"], "no_keys", "{body}");
        assert_eq!(app.metric(FETCH_ERROR).await, 0.0, "{round} is an answer, not a failure");
        kids.iter().for_each(|k| app.issuer.publish(k));
        app.wait_ready().await;
        assert_eq!(app.verify(Some(&cached), "").await.status(), 200, "{round}: keys again, tokens again");
    }
    assert!(
        app.metric("jwtgate_decisions_total{decision=\"deny\",issuer=\"main\",reason=\"keys_unavailable\"}").await
            >= 4.0
    );
}

#[tokio::test]
async fn a_requester_that_goes_away_does_not_cancel_the_fetch_its_waiters_share() {
    let app = app_with(30, "").await;
    app.issuer.add_key("rotated-2", Algorithm::ES256);
    let token = app.token("rotated-2");
    app.issuer.set_mode(Mode::Hang);
    let (hits, misses, ok) = (app.issuer.jwks_hits(), app.metric(MISSES).await, app.metric(FETCH_OK).await);
    let first = spawn_verify(&app, &token);
    wait_until("the first requester's fetch reached the IdP", async || app.issuer.jwks_hits() > hits).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled(), "the first requester went away mid-fetch");
    let waiters: Vec<_> = (0..5).map(|_| spawn_verify(&app, &token)).collect();
    wait_until("the waiters are deciding", async || app.metric(MISSES).await >= misses + 6.0).await;
    app.issuer.set_mode(Mode::Normal);
    for w in waiters {
        assert_eq!(w.await.unwrap(), 200, "every waiter gets the fetch's keys");
    }
    assert_eq!(app.issuer.jwks_hits() - hits, 1, "one fetch, carried to its end");
    assert_eq!(app.metric(FETCH_OK).await, ok + 1.0);
    assert_eq!(app.metric(FETCH_ERROR).await, 0.0);
}

#[tokio::test]
async fn shutdown_abandons_a_hanging_fetch_and_answers_the_request_waiting_on_it() {
    // A 60 s fetch timeout and a 50 s grace: a stop well inside both proves the fetch was
    // abandoned at once, not waited for by the request (and the grace period) holding on to it.
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", "jwks:\n  min_refresh_interval_seconds: 1\n  fetch_timeout_seconds: 60\n")
        .replace("grace_seconds: 1", "grace_seconds: 50");
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    wait_for_cooldown(&app).await;
    app.issuer.set_mode(Mode::Hang);
    let before = app.issuer.jwks_hits();
    let stuck = spawn_verify(&app, &random_kid_token(&app, "new-kid"));
    wait_until("the IdP holds the JWKS request", async || app.issuer.jwks_hits() > before).await;
    assert!(!stuck.is_finished(), "the request waits on the hanging fetch");
    let TestApp { server, issuer: _issuer } = app;
    tokio::time::timeout(Duration::from_secs(30), server.stop()).await.expect("shutdown waited on the IdP");
    assert_eq!(stuck.await.unwrap(), 401, "the waiting request was answered, not cut off");
}

#[tokio::test]
async fn weak_and_unusable_jwks_entries_are_skipped_and_the_good_ones_kept() {
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    issuer.add_raw_jwk(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
    issuer.add_raw_jwk(json!({"kty": "RSA", "kid": "tiny", "n": "AQAB", "e": "AQAB"}));
    let mut enc = issuer.public_jwk("rs256-1");
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc-1");
    issuer.add_raw_jwk(enc);
    let yaml = config_yaml(&issuer, "", "");
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    assert_eq!(app.metric(KEYS).await, 3.0);
    assert_eq!(app.verify(Some(&app.token("eddsa-1")), "").await.status(), 200);
}

#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for i in 0..20 {
        let mut k = issuer.public_jwk("rs256-1");
        k["kid"] = json!(format!("pad-{i}"));
        issuer.add_raw_jwk(k);
    }
    let yaml = config_yaml(&issuer, "", "jwks:\n  max_response_bytes: 4096\n");
    let app = spawn_app_with(issuer, &yaml).await;
    let error = app.wait_issuer_error("main").await;
    assert!(error.contains("larger than 4096"), "{error}");
}

#[tokio::test]
async fn key_count_is_capped() {
    let app = spawn_app_extra("jwks:\n  max_keys: 2\n").await;
    assert_eq!(app.metric(KEYS).await, 2.0);
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_an_issuer_mismatch_is_an_error() {
    // By discovery (the default test config has no jwks_uri).
    let app = spawn_app().await;
    assert_eq!(app.issuer.discovery_hits(), 1);
    // A configured issuer that differs from the discovery document's `issuer` (trailing slash).
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", "")
        .replace(&format!("issuer: \"{}\"", issuer.issuer()), &format!("issuer: \"{}/\"", issuer.issuer()));
    let app = spawn_app_with(issuer, &yaml).await;
    let error = app.wait_issuer_error("main").await;
    assert!(error.contains("is not the configured"), "{error}");
}

#[tokio::test]
async fn last_success_age_is_exported_per_issuer() {
    let app = spawn_app().await;
    let m = app.metrics().await;
    let line = m.lines().find(|l| l.starts_with("jwtgate_jwks_last_success_age_seconds{issuer=\"main\"}")).unwrap();
    let age: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.0..60.0).contains(&age), "{line}");
}

#[tokio::test]
async fn background_refresh_counts_fetches() {
    let app = refreshing_every_second().await;
    let hits = Arc::new(AtomicUsize::new(app.issuer.jwks_hits()));
    wait_until("a background refresh", async || app.issuer.jwks_hits() > hits.load(Ordering::SeqCst)).await;
    wait_until("its metric", async || app.metric(FETCH_OK).await >= 2.0).await;
}

// ---------------------------------------------------------------------------------------------
// https stays https, against an in-process https IdP with a CA made for the test.

/// A gate trusting the https IdP `idp` with its CA in a `ca_file` (and `jwks_uri` when given).
async fn https_gate(idp: &crate::tls_idp::TlsIdp, jwks_uri: Option<&str>) -> (Server, TempDir) {
    let dir = TempDir::new();
    let ca = dir.write("ca.pem", &idp.ca_pem);
    let jwks_uri = jwks_uri.map(|u| format!("    jwks_uri: \"{u}\"\n")).unwrap_or_default();
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nissuers:\n  - name: main\n    issuer: \"{}\"\n{jwks_uri}    ca_file: \"{}\"\n    audiences: [\"{AUD}\"]\n    algorithms: [RS256, ES256, EdDSA]\njwks:\n  min_refresh_interval_seconds: 1\nshutdown:\n  grace_seconds: 1\n",
        idp.issuer(),
        ca.display()
    );
    (Server::spawn(&yaml).await, dir)
}

fn idp_token(idp: &crate::tls_idp::TlsIdp) -> String {
    let now = jwtgate::gate::unix_now();
    idp.sign("es256-1", &json!({"iss": idp.issuer(), "sub": "u", "aud": AUD, "iat": now, "exp": now + 300}))
}

#[tokio::test]
async fn an_https_issuer_trusted_through_its_ca_file_loads_its_keys_by_discovery_and_https_redirects() {
    let idp = crate::tls_idp::TlsIdp::start().await;
    let (gate, _dir) = https_gate(&idp, None).await;
    gate.wait_ready().await;
    assert_eq!(gate.verify(Some(&idp_token(&idp)), "").await.status(), 200);
    // An https redirect to https is followed.
    let via = idp.redirect_to(&format!("{}/jwks", idp.issuer()));
    let (gate, _dir) = https_gate(&idp, Some(&via)).await;
    gate.wait_ready().await;
    assert_eq!(gate.verify(Some(&idp_token(&idp)), "").await.status(), 200);
}

#[tokio::test]
async fn https_discovery_naming_an_http_jwks_uri_is_refused() {
    let idp = crate::tls_idp::TlsIdp::start().await;
    let plain = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    idp.set_discovery_jwks_uri(&plain.jwks_uri());
    let (gate, _dir) = https_gate(&idp, None).await;
    let error = gate.wait_issuer_error("main").await;
    assert!(error.contains("https stays https") && error.contains(&plain.jwks_uri()), "{error}");
    assert!(idp.hits() >= 1, "discovery was served over https");
    assert_eq!(plain.jwks_hits(), 0, "the http jwks_uri was never fetched");
}

#[tokio::test]
async fn an_https_jwks_uri_redirecting_to_http_is_refused() {
    let idp = crate::tls_idp::TlsIdp::start().await;
    let plain = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let downgrade = idp.redirect_to(&plain.jwks_uri());
    let (gate, _dir) = https_gate(&idp, Some(&downgrade)).await;
    let error = gate.wait_issuer_error("main").await;
    assert!(error.contains("https stays https"), "{error}");
    assert!(idp.hits() >= 1, "the https jwks_uri answered with its redirect");
    assert_eq!(plain.jwks_hits(), 0, "the redirect to http was not followed");
}

#[tokio::test]
async fn an_http_issuer_with_an_https_jwks_uri_is_held_to_https_through_redirects() {
    let idp = crate::tls_idp::TlsIdp::start().await;
    let plain = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let back = idp.redirect_to(&plain.jwks_uri());
    let dir = TempDir::new();
    let ca = dir.write("ca.pem", &idp.ca_pem);
    let yaml = config_yaml(&plain, &issuer_keys(&format!("jwks_uri: \"{back}\"\nca_file: \"{}\"", ca.display())), "");
    let gate = Server::spawn(&yaml).await;
    let error = gate.wait_issuer_error("main").await;
    assert!(error.contains("https stays https"), "{error}");
    assert!(idp.hits() >= 1);
    assert_eq!(plain.jwks_hits(), 0, "the redirect to http was not followed");
}

#[tokio::test]
async fn a_redirect_chain_never_goes_from_https_back_to_http_even_for_an_http_issuer() {
    let idp = crate::tls_idp::TlsIdp::start().await;
    let plain = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // http issuer and jwks_uri: http -> https (an upgrade, followed) -> http (a downgrade, refused).
    let chain = crate::tls_idp::http_redirector(&idp.redirect_to(&plain.jwks_uri())).await;
    let dir = TempDir::new();
    let ca = dir.write("ca.pem", &idp.ca_pem);
    let yaml = config_yaml(&plain, &issuer_keys(&format!("jwks_uri: \"{chain}\"\nca_file: \"{}\"", ca.display())), "");
    let gate = Server::spawn(&yaml).await;
    let error = gate.wait_issuer_error("main").await;
    assert!(error.contains("https stays https"), "{error}");
    assert!(idp.hits() >= 1, "the chain reached the https hop");
    assert_eq!(plain.jwks_hits(), 0, "and stopped there");
}

// ---------------------------------------------------------------------------------------------
// The real binary: `ca_file` checks, and the figures the README quotes (printed as `measured:`).

const BIN: &str = env!("CARGO_BIN_EXE_jwtgate");

/// A temporary directory, removed on drop.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("jwtgate-keys-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
fn check_config_and_serve_refuse_an_unreadable_or_unparsable_ca_file_at_its_key_path() {
    let dir = TempDir::new();
    let config = |ca: &std::path::Path| {
        dir.write(
            "config.yaml",
            &format!(
                "issuers:\n  - name: a\n    issuer: 'https://a.example'\n    audiences: [x]\n    ca_file: '{}'\n",
                ca.display()
            ),
        )
    };
    let cases = [
        ("missing", dir.path.join("nope.pem"), "cannot read"),
        ("a directory", dir.path.clone(), "cannot read"),
        ("not PEM", dir.write("garbage.pem", "hello, not a certificate\n"), "no PEM certificate"),
        (
            "a PEM block that is no certificate",
            dir.write("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "not a usable CA certificate",
        ),
    ];
    for (what, ca, expected) in cases {
        let path = config(&ca);
        for cmd in ["check-config", "serve"] {
            let out = std::process::Command::new(BIN).args([cmd, "--config"]).arg(&path).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}, ca_file {what}: {stderr}");
            assert!(stderr.contains("issuers[0].ca_file") && stderr.contains(expected), "{cmd}, {what}: {stderr}");
            assert!(!String::from_utf8_lossy(&out.stdout).contains("config ok"));
        }
    }
    let good = dir.write("ca.pem", &crate::tls_idp::test_ca_pem());
    let out = std::process::Command::new(BIN).args(["check-config", "--config"]).arg(config(&good)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("config ok"));
}

/// The binary serving `yaml` (its `listen` replaced by a free port), once ready.
struct Binary {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
    _dir: TempDir,
}

impl Binary {
    async fn start(yaml: &str) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = TempDir::new();
        let path = dir.write("config.yaml", &yaml.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
        let child = std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let binary = Binary { child, base: format!("http://127.0.0.1:{port}"), client, _dir: dir };
        wait_until("the binary is ready", async || {
            binary.client.get(format!("{}/readyz", binary.base)).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        binary
    }

    async fn verify(&self, token: &str) -> reqwest::StatusCode {
        self.client.get(format!("{}/verify", self.base)).bearer_auth(token).send().await.unwrap().status()
    }

    fn spawn_verify(&self, token: &str) -> tokio::task::JoinHandle<reqwest::StatusCode> {
        let (client, url, t) = (self.client.clone(), format!("{}/verify", self.base), token.to_string());
        tokio::spawn(async move { client.get(url).bearer_auth(t).send().await.map(|r| r.status()).unwrap_or_default() })
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kid_token(issuer: &jwtgate::dev_issuer::DevIssuer, kid: &str) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string();
    let claims = issuer.claims("u", AUD, 300).to_string();
    issuer.sign_raw("rs256-1", Algorithm::RS256, header.as_bytes(), claims.as_bytes())
}

/// Sends an unknown kid every 50 ms until one reaches the IdP, and returns when that fetch was
/// seen (the start of a cooldown, observed) with the requests sent.
async fn start_a_cooldown(
    binary: &Binary,
    issuer: &jwtgate::dev_issuer::DevIssuer,
) -> (std::time::Instant, Vec<tokio::task::JoinHandle<reqwest::StatusCode>>) {
    let hits = issuer.jwks_hits();
    let mut probes = Vec::new();
    wait_until("an unknown kid reached the IdP", async || {
        if issuer.jwks_hits() > hits {
            return true;
        }
        probes.push(binary.spawn_verify(&kid_token(issuer, &format!("probe-{}", fastrand::u64(..)))));
        tokio::time::sleep(Duration::from_millis(50)).await;
        issuer.jwks_hits() > hits
    })
    .await;
    (std::time::Instant::now(), probes)
}

/// [`start_a_cooldown`], once every probe has its answer (none is left to start a fetch later).
async fn start_a_settled_cooldown(binary: &Binary, issuer: &jwtgate::dev_issuer::DevIssuer) -> std::time::Instant {
    let (started, probes) = start_a_cooldown(binary, issuer).await;
    for p in probes {
        assert_eq!(p.await.unwrap(), 401);
    }
    started
}

/// The cooldown for the measurements: 2 s keeps the test short; `JWTGATE_MEASURE_COOLDOWN=10`
/// measures the default.
fn measure_cooldown() -> u64 {
    std::env::var("JWTGATE_MEASURE_COOLDOWN").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

#[tokio::test]
async fn measured_with_the_binary_a_kid_published_mid_cooldown_is_accepted_after_one_fetch() {
    let cooldown = measure_cooldown();
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", &format!("jwks:\n  min_refresh_interval_seconds: {cooldown}\n"));
    let binary = Binary::start(&yaml).await;
    let cooldown_started = start_a_settled_cooldown(&binary, &issuer).await;
    // The IdP publishes the key halfway through the cooldown (`JWTGATE_MEASURE_OFFSET_MS` moves it).
    let offset = std::env::var("JWTGATE_MEASURE_OFFSET_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(cooldown * 500);
    tokio::time::sleep_until((cooldown_started + Duration::from_millis(offset)).into()).await;
    issuer.add_key("rotated-2", Algorithm::ES256);
    let published = std::time::Instant::now();
    let hits = issuer.jwks_hits();
    let token = issuer.sign("rotated-2", &issuer.claims("u", AUD, 300));
    let mut refusals = 0;
    loop {
        let status = binary.verify(&token).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        refusals += 1;
        assert!(published.elapsed() < Duration::from_secs(20 * cooldown), "never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = published.elapsed();
    let fetches = issuer.jwks_hits() - hits;
    eprintln!(
        "measured: binary, cooldown {cooldown} s, kid published {} ms into it, a request every 100 ms: refused {refusals} times for {} ms, then accepted after {fetches} JWKS fetch",
        (published - cooldown_started).as_millis(),
        refused.as_millis()
    );
    assert!(refusals > 0, "published mid-cooldown: refused at first");
    assert_eq!(fetches, 1, "steady traffic never extended the cooldown: one fetch after it, and accepted");
}

#[tokio::test]
async fn measured_with_the_binary_a_200_kid_flood_costs_one_fetch() {
    let cooldown = measure_cooldown();
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", &format!("jwks:\n  min_refresh_interval_seconds: {cooldown}\n"));
    let binary = Binary::start(&yaml).await;
    let cooldown_started = start_a_settled_cooldown(&binary, &issuer).await;
    // Once that cooldown is over a fetch may start: the flood's first kid starts it.
    tokio::time::sleep_until((cooldown_started + Duration::from_millis(cooldown * 1000 + 200)).into()).await;
    let hits = issuer.jwks_hits();
    let flood: Vec<_> = (0..200)
        .map(|i| binary.spawn_verify(&kid_token(&issuer, &format!("flood-{i}-{}", fastrand::u64(..)))))
        .collect();
    for f in flood {
        assert_eq!(f.await.unwrap(), 401);
    }
    let fetches = issuer.jwks_hits() - hits;
    eprintln!("measured: binary, 200 concurrent requests with random kids -> {fetches} JWKS fetch(es)");
    assert_eq!(fetches, 1, "the flood shares one fetch");
}

#[tokio::test]
async fn measured_with_the_binary_shutdown_with_a_hanging_idp_exits_within_drain_plus_grace() {
    let issuer = jwtgate::dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // A 60 s fetch timeout: exiting in much less proves the fetch was abandoned, not finished.
    let yaml = config_yaml(&issuer, "", "jwks:\n  min_refresh_interval_seconds: 1\n  fetch_timeout_seconds: 60\n");
    let mut binary = Binary::start(&yaml).await;
    issuer.set_mode(Mode::Hang);
    let (_, probes) = start_a_cooldown(&binary, &issuer).await;
    assert!(probes.iter().any(|p| !p.is_finished()), "a request waits on the hanging fetch");
    let pid = binary.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = std::time::Instant::now();
    let status = binary.child.wait().unwrap();
    let took = signalled.elapsed();
    eprintln!(
        "measured: binary, SIGTERM while a JWKS fetch hangs (fetch timeout 60 s) and a request waits on it: exited in {} ms (drain 0 s, grace 1 s)",
        took.as_millis()
    );
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(30), "shutdown waited on the IdP: {took:?}");
}
