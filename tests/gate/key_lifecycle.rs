//! Key-set lifecycle (issue 4): refresh schedule, backoff, stale-if-error, startup with the
//! provider down, single-flight refetch on unknown kids, floods, hangs, garbage, key removal.
//!
//! Schedules are tested under paused `tokio::time` against a scripted key source (paused time
//! auto-advances through socket waits, so real HTTP cannot run under it); everything that
//! crosses HTTP is tested against the in-process development issuer in real time with short
//! intervals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jwtgate::algorithm::Algorithm;
use jwtgate::config::JwksConfig;
use jwtgate::dev_issuer::{KeyRing, Mode};
use jwtgate::error::AuthError;
use jwtgate::jwks::{Fetched, IssuerKeys, IssuerState, KeySource};
use jwtgate::keys::KeySet;
use jwtgate::metrics::Metrics;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Paused time, scripted source.

#[derive(Clone, Copy)]
enum Next {
    Ok(Option<u64>),
    Fail,
}

#[derive(Clone)]
struct Scripted {
    next: Arc<Mutex<Next>>,
    calls: Arc<Mutex<Vec<Instant>>>,
    delay: Duration,
    jwks: Arc<Vec<u8>>,
}

impl Scripted {
    fn new(next: Next) -> Scripted {
        Scripted {
            next: Arc::new(Mutex::new(next)),
            calls: Arc::new(Mutex::new(Vec::new())),
            delay: Duration::ZERO,
            jwks: Arc::new(KeyRing::standard().jwks().to_string().into_bytes()),
        }
    }
    fn set(&self, next: Next) {
        *self.next.lock().unwrap() = next;
    }
    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    fn gaps(&self) -> Vec<u64> {
        let calls = self.calls.lock().unwrap();
        calls.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
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
                    let (keys, _) = KeySet::from_jwks(&self.jwks, 100).unwrap();
                    Ok((keys, max_age.map(Duration::from_secs)))
                }
                Next::Fail => Err("scripted failure".into()),
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

fn issuer(source: &Scripted, cfg: JwksConfig) -> Arc<IssuerKeys> {
    Arc::new(IssuerKeys::with_source("main", cfg, Box::new(source.clone()), Metrics::new(&["main"])))
}

fn run(keys: &Arc<IssuerKeys>) -> CancellationToken {
    let cancel = CancellationToken::new();
    tokio::spawn(keys.clone().run(cancel.clone(), || {}));
    cancel
}

async fn at(start: Instant, secs: u64) {
    tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn background_refresh_follows_the_interval_with_jitter_below_it() {
    let src = Scripted::new(Next::Ok(None));
    let keys = issuer(&src, jwks_config(300, 10, 86400));
    let start = Instant::now();
    let _cancel = run(&keys);
    at(start, 1).await;
    assert_eq!(src.count(), 1, "loads at once");
    assert_eq!(keys.state(), IssuerState::Ready);
    at(start, 269).await;
    assert_eq!(src.count(), 1, "no refresh before interval minus 10% jitter");
    at(start, 301).await;
    assert_eq!(src.count(), 2, "refreshed within the interval");
}

#[tokio::test(start_paused = true)]
async fn shorter_cache_control_max_age_wins_but_never_below_the_minimum() {
    let src = Scripted::new(Next::Ok(Some(60)));
    let keys = issuer(&src, jwks_config(300, 10, 86400));
    let start = Instant::now();
    let _cancel = run(&keys);
    at(start, 61).await;
    assert_eq!(src.count(), 2, "max-age 60 beats the 300 s interval");
    src.set(Next::Ok(Some(1)));
    at(start, 200).await;
    let gaps = src.gaps();
    assert!(gaps[1..].iter().all(|g| *g >= 9), "max-age 1 is held to the 10 s minimum: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn failed_fetches_back_off_exponentially_with_jitter_capped_at_sixty_seconds() {
    let src = Scripted::new(Next::Fail);
    let keys = issuer(&src, jwks_config(300, 10, 86400));
    let start = Instant::now();
    let _cancel = run(&keys);
    at(start, 600).await;
    let gaps = src.gaps();
    let bounds = [(5, 10), (10, 20), (20, 40), (30, 60), (30, 60), (30, 60)];
    for (i, (lo, hi)) in bounds.iter().enumerate() {
        assert!((*lo..=*hi).contains(&gaps[i]), "gap {i} = {} not in {lo}..={hi}: {gaps:?}", gaps[i]);
    }
    assert!(gaps.iter().all(|g| *g <= 60), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn startup_with_the_provider_down_is_loading_then_ready_soon_after_it_returns() {
    let src = Scripted::new(Next::Fail);
    let keys = issuer(&src, jwks_config(300, 10, 86400));
    let start = Instant::now();
    let _cancel = run(&keys);
    at(start, 100).await;
    assert_eq!(keys.state(), IssuerState::Loading);
    assert_eq!(keys.current().unwrap_err(), AuthError::KeysUnavailable);
    src.set(Next::Ok(None));
    at(start, 161).await;
    assert_eq!(keys.state(), IssuerState::Ready, "ready within one capped backoff (60 s) of the return");
}

#[tokio::test(start_paused = true)]
async fn last_good_keys_serve_until_max_stale_then_unavailable_then_recover() {
    let src = Scripted::new(Next::Ok(None));
    let keys = issuer(&src, jwks_config(30, 10, 100));
    let start = Instant::now();
    let _cancel = run(&keys);
    at(start, 1).await;
    src.set(Next::Fail);
    at(start, 99).await;
    assert!(keys.current().is_ok(), "stale-if-error within max_stale");
    assert_eq!(keys.state(), IssuerState::Ready);
    at(start, 102).await;
    assert_eq!(keys.current().unwrap_err(), AuthError::KeysUnavailable);
    assert_eq!(keys.state(), IssuerState::Stale);
    src.set(Next::Ok(None));
    at(start, 102 + 31).await;
    assert_eq!(keys.state(), IssuerState::Ready, "resumes without a restart");
}

#[tokio::test(start_paused = true)]
async fn concurrent_unknown_kid_misses_share_one_fetch_and_the_cooldown_holds() {
    let mut src = Scripted::new(Next::Ok(None));
    src.delay = Duration::from_millis(200);
    let keys = issuer(&src, jwks_config(300, 10, 86400));
    keys.refresh().await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = src.count();
    let generation = keys.generation();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let k = keys.clone();
        tasks.push(tokio::spawn(async move { k.refetch_for_unknown(Some("new"), generation).await }));
    }
    for t in tasks {
        assert!(t.await.unwrap(), "every waiter sees the shared fetch");
    }
    assert_eq!(src.count() - before, 1, "50 concurrent misses, one fetch");
    // Inside the cooldown: refused at once, no fetch.
    assert!(!keys.refetch_for_unknown(Some("other"), keys.generation()).await);
    assert_eq!(src.count() - before, 1);
    // A kid that stayed unknown is remembered until the cooldown ends.
    keys.remember_unknown(Some("other"));
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(keys.refetch_for_unknown(Some("other"), keys.generation()).await);
    assert_eq!(src.count() - before, 2, "after the cooldown a fetch is allowed again");
}

// ---------------------------------------------------------------------------------------------
// Real time, real HTTP against the development issuer.

/// A gate with 1 s cooldown, and the issuer it trusts; waits until ready and the cooldown passed.
async fn app_with(extra_jwks: &str) -> TestApp {
    let app =
        spawn_app_extra(&format!("jwks:\n  min_refresh_interval_seconds: 1\n  fetch_timeout_seconds: 3\n{extra_jwks}"))
            .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app
}

fn random_kid_token(app: &TestApp, kid: &str) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string();
    let claims = app.issuer.claims("u", AUD, 300).to_string();
    app.issuer.sign_raw("rs256-1", Algorithm::RS256, header.as_bytes(), claims.as_bytes())
}

#[tokio::test]
async fn n_simultaneous_requests_with_one_new_kid_cause_exactly_one_fetch() {
    let app = app_with("").await;
    app.issuer.add_key("rotated-2", Algorithm::ES256);
    let token = app.token("rotated-2");
    let before = app.issuer.jwks_hits();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, url, t) = (app.client.clone(), format!("{}/verify", app.url), token.clone());
        tasks.push(tokio::spawn(async move { client.get(url).bearer_auth(t).send().await.unwrap().status() }));
    }
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
    let app = app_with("").await;
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
    let app = app_with("").await;
    let good = app.token("rs256-1");
    assert_eq!(app.verify(Some(&good), "").await.status(), 200);
    app.issuer.set_mode(Mode::Hang);
    // An unknown kid starts a refetch that hangs (holding the fetch lock for fetch_timeout = 3 s).
    let stuck = {
        let (client, url, t) = (app.client.clone(), format!("{}/verify", app.url), random_kid_token(&app, "new-kid"));
        tokio::spawn(async move { client.get(url).bearer_auth(t).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
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
}

#[tokio::test]
async fn errors_and_garbage_keep_the_last_good_keys() {
    let app = app_with("").await;
    for mode in [Mode::Error, Mode::Garbage] {
        app.issuer.set_mode(mode);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = app.verify(Some(&random_kid_token(&app, "unknown")), "").await;
        assert_eq!(r.status(), 401);
        assert_eq!(app.verify(Some(&app.token("es256-1")), "").await.status(), 200, "{mode:?}");
        let ready = app.client.get(format!("{}/readyz", app.url)).send().await.unwrap();
        assert_eq!(ready.status(), 200, "still ready with last good keys ({mode:?})");
    }
    assert!(app.metric("jwtgate_jwks_fetches_total{issuer=\"main\",result=\"error\"}").await >= 2.0);
}

#[tokio::test]
async fn a_removed_key_stops_validating_even_cached_tokens_at_the_next_refresh() {
    let app = app_with("  refresh_interval_seconds: 1\n").await;
    let cached = app.token("rs256-1");
    assert_eq!(app.verify(Some(&cached), "").await.status(), 200);
    assert_eq!(app.verify(Some(&cached), "").await.status(), 200);
    assert!(app.metric("jwtgate_token_cache_lookups_total{result=\"hit\"}").await >= 1.0);
    app.issuer.unpublish("rs256-1");
    let before = app.issuer.jwks_hits();
    for _ in 0..100 {
        if app.issuer.jwks_hits() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = app.verify(Some(&cached), "").await;
    assert_eq!(r.status(), 401, "a cached token whose key left the JWKS is refused");
    assert_eq!(app.verify(Some(&app.token("es256-1")), "").await.status(), 200, "other keys unaffected");
    assert_eq!(app.metric("jwtgate_jwks_keys{issuer=\"main\"}").await, 2.0);
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
    assert_eq!(app.metric("jwtgate_jwks_keys{issuer=\"main\"}").await, 3.0);
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
    assert_eq!(app.metric("jwtgate_jwks_keys{issuer=\"main\"}").await, 2.0);
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
    let app = app_with("  refresh_interval_seconds: 1\n").await;
    let hits = Arc::new(AtomicUsize::new(app.issuer.jwks_hits()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(app.issuer.jwks_hits() > hits.load(Ordering::SeqCst), "refreshed in the background");
    assert!(app.metric("jwtgate_jwks_fetches_total{issuer=\"main\",result=\"ok\"}").await >= 2.0);
}
