//! Prometheus metrics, in the service's own registry. Names and labels are part of the contract;
//! no label ever holds a token, a subject, a kid or a path.

use std::sync::OnceLock;

use crate::error::Reason;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric jwtgate exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub decisions: IntCounterVec,
    pub decision_duration: Histogram,
    pub jwks_fetches: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
    pub jwks_last_success_age: GaugeVec,
    pub unknown_kid_refetches: IntCounterVec,
    pub unknown_kid_refusals: IntCounterVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_entries: prometheus::IntGauge,
    /// Bytes the DPoP replay store accounts (bounded by `dpop.replay_cache_bytes`).
    pub dpop_replay_bytes: prometheus::IntGauge,
    /// 1 while `/readyz` answers 200, else 0 (set when `/metrics` is scraped).
    pub ready: prometheus::IntGauge,
    /// `decisions` resolved once per (issuer, reason): the request path does no label hashing.
    /// Row `i` is issuer `i`; the last row is `none`. Column `r` is `Reason::ALL[r]`, so every
    /// reason has its slot by construction.
    decision_counters: std::sync::Arc<Vec<[OnceLock<IntCounter>; Reason::COUNT]>>,
    issuer_names: std::sync::Arc<Vec<String>>,
}

impl Metrics {
    /// Registers every metric. `issuers` pre-creates the per-issuer series so dashboards see
    /// zeros rather than gaps.
    pub fn new(issuers: &[&str]) -> Metrics {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new("jwtgate_decisions_total", "Decisions on /verify by issuer, decision and reason."),
            &["issuer", "decision", "reason"],
        )
        .unwrap();
        let decision_duration = Histogram::with_opts(
            HistogramOpts::new("jwtgate_decision_duration_seconds", "Time to decide one /verify request.").buckets(
                vec![
                    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                    0.05, 0.25, 1.0, 5.0,
                ],
            ),
        )
        .unwrap();
        let jwks_fetches = IntCounterVec::new(
            Opts::new("jwtgate_jwks_fetches_total", "Discovery and JWKS fetches by issuer and result."),
            &["issuer", "result"],
        )
        .unwrap();
        let jwks_keys =
            IntGaugeVec::new(Opts::new("jwtgate_jwks_keys", "Usable keys in use per issuer."), &["issuer"]).unwrap();
        let jwks_last_success_age = GaugeVec::new(
            Opts::new(
                "jwtgate_jwks_last_success_age_seconds",
                "Seconds since the last successful JWKS fetch per issuer (-1 before the first).",
            ),
            &["issuer"],
        )
        .unwrap();
        let unknown_kid_refetches = IntCounterVec::new(
            Opts::new(
                "jwtgate_jwks_unknown_kid_refetches_total",
                "JWKS refetches caused by a token with an unknown kid.",
            ),
            &["issuer"],
        )
        .unwrap();
        let unknown_kid_refusals = IntCounterVec::new(
            Opts::new(
                "jwtgate_jwks_unknown_kid_cooldown_refusals_total",
                "Unknown-kid tokens refused without a fetch (cooldown, or kid remembered as unknown).",
            ),
            &["issuer"],
        )
        .unwrap();
        let lookups = IntCounterVec::new(
            Opts::new("jwtgate_token_cache_lookups_total", "Verified-token cache lookups by result."),
            &["result"],
        )
        .unwrap();
        let cache_entries =
            prometheus::IntGauge::new("jwtgate_token_cache_entries", "Entries in the verified-token cache.").unwrap();
        let dpop_replay_bytes = prometheus::IntGauge::new(
            "jwtgate_dpop_replay_store_bytes",
            "Bytes the DPoP replay store holds (bounded by dpop.replay_cache_bytes).",
        )
        .unwrap();
        let ready = prometheus::IntGauge::new(
            "jwtgate_ready",
            "1 while /readyz answers 200 (every issuer has usable keys, not draining).",
        )
        .unwrap();
        for c in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(decision_duration.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(jwks_last_success_age.clone()),
            Box::new(unknown_kid_refetches.clone()),
            Box::new(unknown_kid_refusals.clone()),
            Box::new(lookups.clone()),
            Box::new(cache_entries.clone()),
            Box::new(dpop_replay_bytes.clone()),
            Box::new(ready.clone()),
        ] {
            registry.register(c).unwrap();
        }
        for issuer in issuers {
            for result in ["ok", "error"] {
                jwks_fetches.with_label_values(&[*issuer, result]);
            }
            jwks_keys.with_label_values(&[*issuer]);
            jwks_last_success_age.with_label_values(&[*issuer]).set(-1.0);
            unknown_kid_refetches.with_label_values(&[*issuer]);
            unknown_kid_refusals.with_label_values(&[*issuer]);
            decisions.with_label_values(&[*issuer, Reason::Ok.decision(), Reason::Ok.label()]);
        }
        // Filled on first use, so only the series that occur are exported.
        let decision_counters = (0..=issuers.len()).map(|_| std::array::from_fn(|_| OnceLock::new())).collect();
        let issuer_names = issuers.iter().map(|s| s.to_string()).chain(std::iter::once("none".to_string())).collect();
        Metrics {
            registry,
            cache_hits: lookups.with_label_values(&["hit"]),
            cache_misses: lookups.with_label_values(&["miss"]),
            decisions,
            decision_duration,
            jwks_fetches,
            jwks_keys,
            jwks_last_success_age,
            unknown_kid_refetches,
            unknown_kid_refusals,
            cache_entries,
            dpop_replay_bytes,
            ready,
            decision_counters: std::sync::Arc::new(decision_counters),
            issuer_names: std::sync::Arc::new(issuer_names),
        }
    }

    /// Counts one decision for issuer index `issuer` (`None`: before the issuer was known).
    pub fn decision(&self, issuer: Option<usize>, reason: Reason) {
        let row = issuer.unwrap_or(self.decision_counters.len() - 1);
        self.decision_counters[row][reason as usize]
            .get_or_init(|| {
                self.decisions.with_label_values(&[&self.issuer_names[row], reason.decision(), reason.label()])
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}
