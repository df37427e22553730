//! `jwtgate explain`: the operator's answer to "why was this token refused?", without logs.
//!
//! It runs the code `/verify` runs, not a copy of it. The verdict (status, reason, challenge) is
//! [`Gate::decide`] itself, on a gate built from the given config that fetches the token
//! issuer's keys through the same discovery and JWKS path as the service. The list of checks
//! comes from [`validate::validate_observed`], the decision pipeline with an observer that
//! records each check's outcome. With `--offline` nothing is fetched: the pipeline runs with
//! the key and signature checks skipped, and the report says the signature was not checked.
//!
//! The token itself is never printed: its header and claims are shown decoded, and of the
//! signature only its length.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::error::{AuthError, Refused};
use crate::gate::{Gate, Proofs, extract_token};
use crate::keys::KeySet;
use crate::policy::Policy;
use crate::validate::{self, Check, Observe};

/// What `explain` was asked.
pub struct Request {
    pub token: String,
    pub query: Option<String>,
    /// `X-Original-Method`, upper case.
    pub method: String,
    /// `X-Original-URL`.
    pub url: Option<String>,
    pub offline: bool,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(AuthError),
    Skipped(&'static str),
    /// An earlier check failed, so the pipeline stopped before this one.
    NotRun,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::NotRun => "not_run",
        }
    }
}

/// Records every check's outcome; a check that runs twice (the issuer: configured, then
/// allowed by the query) keeps its failure if either failed.
#[derive(Default)]
struct Trace(Vec<(Check, Outcome)>);

impl Trace {
    fn set(&mut self, check: Check, outcome: Outcome) {
        match self.0.iter_mut().find(|(c, _)| *c == check) {
            Some((_, Outcome::Failed(_))) => {}
            Some((_, o)) => *o = outcome,
            None => self.0.push((check, outcome)),
        }
    }

    fn get(&self, check: Check) -> Outcome {
        self.0.iter().find(|(c, _)| *c == check).map_or(Outcome::NotRun, |(_, o)| o.clone())
    }
}

impl Observe for Trace {
    fn check(&mut self, check: Check, error: Option<&AuthError>) {
        self.set(check, error.map_or(Outcome::Passed, |e| Outcome::Failed(e.clone())));
    }

    fn skip(&mut self, check: Check, why: &'static str) {
        self.set(check, Outcome::Skipped(why));
    }
}

/// Where the keys came from.
#[derive(Debug)]
pub enum KeysNote {
    /// `--offline`: nothing fetched.
    Offline,
    /// The pipeline stopped before it needed keys, so none were fetched.
    NotNeeded,
    /// Fetched from the issuer: its name and the number of usable keys.
    Fetched { issuer: String, usable: usize },
    /// The fetch failed: the issuer's name and the error.
    Failed { issuer: String, error: String },
}

/// What `/verify` would answer.
#[derive(Debug)]
pub enum Verdict {
    Allow { headers: Vec<(String, String)>, max_age: u64 },
    Refuse(Refused),
}

/// Everything `explain` found.
#[derive(Debug)]
pub struct Report {
    pub header: Option<Value>,
    pub claims: Option<Value>,
    pub signature_bytes: Option<usize>,
    pub checks: Vec<(Check, Outcome)>,
    /// For the failed check, what the token has against what the config wants (display only).
    pub hint: Option<String>,
    pub signature_checked: bool,
    pub keys: KeysNote,
    pub verdict: Verdict,
    /// The issuer names, to label refusals.
    issuers: Vec<String>,
    request: (String, Option<String>, Option<String>),
    /// `dpop.algorithms` when a refusal's challenge uses the DPoP scheme (a bound token, or the
    /// query requires DPoP), as `/verify` answers.
    dpop_algs: Option<String>,
}

impl Report {
    /// 0 when every check that ran passed, 1 when one failed.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Allow { .. } => 0,
            Verdict::Refuse(_) => 1,
        }
    }
}

/// A segment of the token decoded for display only (the checks parse it strictly themselves).
fn shown(segment: Option<&str>) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment?.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Runs the explanation. `Err` is a bad query or a config the gate cannot be built from (exit 2).
pub async fn explain(config: Config, request: Request, now: i64) -> Result<Report, String> {
    let token = request.token.trim();
    let query = request.query.as_deref().filter(|q| !q.is_empty());
    let policy = Policy::parse(query, &config).map_err(|e| match e {
        AuthError::BadPolicy(why) => format!("--query: {why}"),
        other => format!("--query: {}", other.description()),
    })?;
    let mut parts = token.split('.');
    let header = shown(parts.next());
    let claims = shown(parts.next());

    // The token as nginx would pass it, through the same extraction /verify uses.
    let mut headers = HeaderMap::new();
    let mut trace = Trace::default();
    let mut bad_header = None;
    // A token bound to a key (cnf.jkt) is presented as a DPoP client would, under the DPoP scheme;
    // its proof is not checked (explain takes none).
    let bound = claims.as_ref().and_then(|c| c.get("cnf")).and_then(|c| c.get("jkt")).is_some_and(Value::is_string);
    let scheme = if bound { "DPoP" } else { "Bearer" };
    if !token.is_empty() {
        match HeaderValue::from_str(&format!("{scheme} {token}")) {
            Ok(v) => {
                headers.insert(header::AUTHORIZATION, v);
            }
            Err(_) => bad_header = Some(AuthError::Malformed("token is not visible ASCII")),
        }
    }
    // The original request, as nginx describes it to /verify (policies that read `request`).
    if let Ok(m) = HeaderValue::from_str(&request.method) {
        headers.insert("x-original-method", m);
    }
    if let Some(u) = request.url.as_deref().and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert("x-original-url", u);
    }
    let extracted = match bad_header {
        Some(e) => Err(e),
        None => extract_token(&headers, &config.token).map(str::to_string),
    };
    let issuers: Vec<String> = config.issuers.iter().map(|i| i.name.clone()).collect();
    let request_shown = (request.method.clone(), request.url.clone(), query.map(str::to_string));
    let mut report = Report {
        header,
        claims,
        signature_bytes: None,
        checks: Vec::new(),
        hint: None,
        signature_checked: false,
        keys: if request.offline { KeysNote::Offline } else { KeysNote::NotNeeded },
        verdict: Verdict::Refuse(AuthError::MissingToken.into()),
        issuers,
        request: request_shown,
        dpop_algs: (bound || policy.dpop_required).then(|| config.dpop.algs()),
    };
    let token = match trace.on(Check::Token, extracted) {
        Ok(t) => t,
        Err(e) => {
            report.verdict = Verdict::Refuse(e.into());
            report.checks = Check::ALL.iter().map(|c| (*c, trace.get(*c))).collect();
            return Ok(report);
        }
    };
    report.signature_bytes = validate::Jws::parse(&token).ok().map(|j| j.signature_len());

    let mut failed_keys: Option<KeySet> = None;
    // Online, the verdict is exactly /verify's decision (a cold gate fetches the issuer's keys
    // once), and the checks below run with the keys that decision fetched; offline, nothing is
    // fetched and the checks run without keys (the signature is not checked).
    let gate = if request.offline { None } else { Some(Gate::new(config.clone())?) };
    let decided = match &gate {
        Some(gate) => Some(gate.decide_with(query, &headers, now, Proofs::Skip).await),
        None => None,
    };
    let snapshots: Option<Vec<_>> = gate.as_ref().map(|g| g.issuers.iter().map(|i| i.keys.current().ok()).collect());
    let result = validate::validate_observed(
        &token,
        &config.issuers,
        |i| match &snapshots {
            None => Ok(None),
            Some(s) => s[i].as_ref().map(|s| Some(&s.keys)).ok_or(AuthError::KeysUnavailable),
        },
        &config.claims_to_headers,
        &policy,
        &config.policies,
        &headers,
        now,
        &mut trace,
    );
    let result = dpop_stage(result, bound, policy.dpop_required, &mut trace);
    match (gate, snapshots, decided) {
        (Some(gate), Some(snapshots), Some(decided)) => {
            report.signature_checked = matches!(trace.get(Check::Signature), Outcome::Passed | Outcome::Failed(_));
            if let Outcome::Failed(_) = trace.get(Check::Key)
                && let Ok(candidate) = validate::precheck(&token, &config.issuers, &policy, now)
            {
                failed_keys = snapshots[candidate.issuer].as_ref().map(|s| s.keys.clone());
            }
            let issuer = match &decided {
                Ok(allowed) => Some(allowed.entry.identity.issuer),
                Err(r) => r.issuer,
            };
            if trace.get(Check::Keys) != Outcome::NotRun
                && let Some(index) = issuer
            {
                let keys = &gate.issuers[index].keys;
                report.keys = match (&snapshots[index], keys.last_error()) {
                    (Some(s), _) => KeysNote::Fetched { issuer: keys.name.clone(), usable: s.keys.len() },
                    (None, error) => KeysNote::Failed {
                        issuer: keys.name.clone(),
                        error: error.unwrap_or_else(|| "no keys".to_string()),
                    },
                };
            }
            report.verdict = match decided {
                Ok(allowed) => {
                    let max_age = if allowed.no_store { 0 } else { allowed.max_age };
                    Verdict::Allow { headers: header_list(&allowed.entry.identity.headers), max_age }
                }
                Err(r) => Verdict::Refuse(r),
            };
            // The two runs share every check; disagreeing would be a bug in jwtgate, not the token.
            let traced = result.as_ref().err().map(|r| r.error.reason()).unwrap_or("ok");
            let verdict = match &report.verdict {
                Verdict::Allow { .. } => "ok",
                Verdict::Refuse(r) => r.error.reason(),
            };
            if traced != verdict {
                return Err(format!("internal error: /verify decided `{verdict}` but the checks say `{traced}`"));
            }
        }
        _ => {
            report.verdict = match result {
                Ok(identity) => {
                    let grant = crate::authorization::authorize(
                        &identity,
                        &policy,
                        &config.issuers[identity.issuer],
                        &config.policies,
                        &headers,
                        now,
                    )
                    .expect("the observed pipeline allowed it");
                    let end = grant.until.map_or(identity.exp, |u| u.min(identity.exp));
                    let max_age = if grant.per_request || bound {
                        0
                    } else {
                        crate::gate::max_age(end, now, config.cache.max_ttl)
                    };
                    Verdict::Allow { headers: header_list(&identity.headers), max_age }
                }
                Err(r) => Verdict::Refuse(r),
            };
        }
    }
    report.checks = Check::ALL.iter().map(|c| (*c, trace.get(*c))).collect();
    report.hint = report
        .checks
        .iter()
        .find(|(_, o)| matches!(o, Outcome::Failed(_)))
        .and_then(|(c, _)| hint(*c, &config, &policy, &report.claims, &report.header, now, failed_keys.as_ref()));
    Ok(report)
}

/// The DPoP stage of the observed pipeline, where `/verify` runs it: after the token's own
/// checks, before step-up and the 403 requirements. Only the binding rule is checked (explain
/// has no proof), with a bound token taken as sent under the DPoP scheme.
fn dpop_stage(
    result: Result<crate::validate::Identity, Refused>,
    bound: bool,
    required: bool,
    trace: &mut Trace,
) -> Result<crate::validate::Identity, Refused> {
    use crate::error::Reason;
    let issuer = match &result {
        Ok(identity) => identity.issuer,
        Err(r) if matches!(r.error.kind(), Reason::StepUp | Reason::Scope | Reason::Claim | Reason::Policy) => {
            r.issuer.unwrap_or_default()
        }
        // The token itself was refused: the DPoP stage never ran.
        Err(_) => return result,
    };
    match crate::dpop::binding(bound, bound, required) {
        Err(e) => {
            trace.set(Check::Dpop, Outcome::Failed(e.clone()));
            Err(e.at(issuer))
        }
        Ok(true) => {
            trace.set(
                Check::Dpop,
                Outcome::Skipped(
                    "bound by cnf.jkt: /verify needs the DPoP scheme and a fresh proof per request, not checked here",
                ),
            );
            result
        }
        Ok(false) => {
            trace.set(Check::Dpop, Outcome::Skipped("not DPoP-bound, and the query does not require DPoP"));
            result
        }
    }
}

/// A display-only detail for a failed check: what the token has and what the config wants.
fn hint(
    check: Check,
    config: &Config,
    policy: &Policy,
    claims: &Option<Value>,
    header: &Option<Value>,
    now: i64,
    keys: Option<&KeySet>,
) -> Option<String> {
    let claims = claims.as_ref().and_then(Value::as_object);
    let iss = claims.and_then(|c| c.get("iss")).and_then(Value::as_str);
    let issuer = iss.and_then(|i| config.issuers.iter().find(|c| c.issuer == i));
    let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
    let list = |v: &[String]| v.join(", ");
    match check {
        Check::Issuer => {
            let configured: Vec<String> = config.issuers.iter().map(|i| format!("{} = {}", i.name, i.issuer)).collect();
            let mut h =
                format!("iss {}; configured: {}", show(claims.and_then(|c| c.get("iss"))), configured.join(", "));
            if let Some(only) = &policy.issuers {
                let names: Vec<String> = only.iter().map(|i| config.issuers[*i].name.clone()).collect();
                h += &format!("; the query allows only: {}", names.join(", "));
            }
            Some(h)
        }
        Check::Algorithm => {
            let allowed: Vec<&str> = issuer?.algorithms.iter().map(|a| a.name()).collect();
            Some(format!(
                "alg {}; issuer `{}` allows {}",
                show(header.as_ref()?.get("alg")),
                issuer?.name,
                allowed.join(", ")
            ))
        }
        Check::TokenType => Some(format!(
            "typ {}; issuer `{}` requires {}",
            show(header.as_ref()?.get("typ")),
            issuer?.name,
            issuer?.required_typ.as_deref().unwrap_or("-")
        )),
        Check::Time => Some(format!("now {} ({now}); leeway {} s", utc(now), issuer?.leeway_seconds)),
        Check::Lifetime => {
            let exp = claims?.get("exp")?.as_i64()?;
            Some(format!(
                "exp is {} s ahead; max_token_lifetime_seconds {} (plus leeway {} s)",
                exp - now,
                issuer?.max_token_lifetime_seconds?,
                issuer?.leeway_seconds
            ))
        }
        Check::Audience => {
            let i = issuer?;
            let (accepted, from) = match &policy.audiences {
                Some(a) => (a.as_slice(), "the query's aud="),
                None => (i.audiences.as_slice(), "the issuer's audiences"),
            };
            Some(format!(
                "{} {}; accepted ({from}): {}",
                i.audience_claim,
                show(claims?.get(&i.audience_claim)),
                list(accepted)
            ))
        }
        Check::Key => {
            let kids: Vec<String> = keys?
                .keys()
                .iter()
                .map(|k| {
                    format!(
                        "{} ({:?}{})",
                        k.kid.as_deref().unwrap_or("no kid"),
                        k.family,
                        k.alg.map(|a| format!(", alg {a}")).unwrap_or_default()
                    )
                })
                .collect();
            Some(format!(
                "kid {}, alg {}; the issuer's keys: {}",
                show(header.as_ref()?.get("kid")),
                show(header.as_ref()?.get("alg")),
                kids.join(", ")
            ))
        }
        Check::Scope => {
            let i = issuer?;
            let granted: Vec<String> =
                i.scope_claims.iter().filter_map(|c| claims?.get(c).map(|v| format!("{c} {v}"))).collect();
            Some(format!(
                "required: {}; granted: {}",
                list(&policy.scopes),
                if granted.is_empty() { "none".into() } else { granted.join(", ") }
            ))
        }
        _ => None,
    }
}

fn header_list(headers: &[(http::HeaderName, HeaderValue)]) -> Vec<(String, String)> {
    headers.iter().map(|(n, v)| (title_case(n.as_str()), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// `x-auth-subject` as hyper's `title_case_headers` writes it on the wire: `X-Auth-Subject`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (proleptic Gregorian, UTC).
fn utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn relative(t: i64, now: i64) -> String {
    match t - now {
        0 => "now".to_string(),
        d if d > 0 => format!("in {d} s"),
        d => format!("{} s ago", -d),
    }
}

/// What each check verifies, for the human output.
fn what(check: Check) -> &'static str {
    match check {
        Check::Token => "bearer token present, within token.max_bytes",
        Check::Header => "compact JWS, strict JOSE header, supported alg",
        Check::Claims => "claims are a JSON object, no duplicate members",
        Check::Issuer => "iss is a configured issuer the query allows",
        Check::Algorithm => "alg is in the issuer's algorithms",
        Check::TokenType => "typ is the issuer's required_typ",
        Check::Time => "exp, nbf, iat within the issuer's leeway",
        Check::Lifetime => "exp within max_token_lifetime_seconds",
        Check::Audience => "audience claim holds an accepted audience",
        Check::Keys => "the issuer has usable keys",
        Check::Key => "a key fits the token's kid and alg",
        Check::Signature => "the signature verifies with that key",
        Check::StepUp => "acr and auth_time meet the query's acr= and max_age=",
        Check::Scope => "every scope the query requires is granted",
        Check::ClaimRequirements => "every claim. requirement of the query is met",
        Check::Policies => "every named policy of the query evaluates to true",
        Check::Dpop => "cnf.jkt binding and dpop=required (the proof is not checked here)",
    }
}

impl Report {
    fn refusal_headers(&self, refused: &Refused) -> Option<String> {
        // A DPoP refusal only happens to a bound token or under dpop=required: `dpop_algs` is set.
        let response = crate::http::refuse(&refused.error, self.dpop_algs.as_deref());
        response.headers().get(header::WWW_AUTHENTICATE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The `--json` form.
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|(c, o)| {
                let mut v = json!({"check": c.name(), "outcome": o.label()});
                match o {
                    Outcome::Failed(e) => {
                        v["reason"] = json!(e.reason());
                        v["description"] = json!(e.description());
                        if let Some(h) = &self.hint {
                            v["hint"] = json!(h);
                        }
                    }
                    Outcome::Skipped(why) => v["why"] = json!(why),
                    _ => {}
                }
                v
            })
            .collect();
        let keys = match &self.keys {
            KeysNote::Offline => json!({"fetched": false, "offline": true}),
            KeysNote::NotNeeded => json!({"fetched": false, "offline": false}),
            KeysNote::Fetched { issuer, usable } => json!({"fetched": true, "issuer": issuer, "usable": usable}),
            KeysNote::Failed { issuer, error } => json!({"fetched": false, "issuer": issuer, "error": error}),
        };
        let verdict = match &self.verdict {
            Verdict::Allow { headers, max_age } => json!({
                "decision": "allow", "status": 200, "reason": "ok",
                "headers": headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<Map<_, _>>(),
                "max_age": max_age,
            }),
            Verdict::Refuse(r) => json!({
                "decision": "deny",
                "status": r.error.status().as_u16(),
                "reason": r.error.reason(),
                "description": r.error.description(),
                "issuer": r.issuer.map(|i| self.issuers[i].as_str()).unwrap_or("none"),
                "www_authenticate": self.refusal_headers(r),
            }),
        };
        json!({
            "token": {"header": self.header, "claims": self.claims, "signature_bytes": self.signature_bytes},
            "request": {"method": self.request.0, "url": self.request.1, "query": self.request.2},
            "keys": keys,
            "signature_checked": self.signature_checked,
            "checks": checks,
            "verdict": verdict,
        })
    }

    /// The human-readable form.
    pub fn to_text(&self, now: i64) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let pretty = |v: &Option<Value>| match v {
            Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            None => "(not decodable)".to_string(),
        };
        let _ =
            writeln!(out, "header     {}", self.header.as_ref().map_or("(not decodable)".into(), |h| h.to_string()));
        let _ = writeln!(out, "claims     {}", pretty(&self.claims).replace('\n', "\n           "));
        if let Some(Value::Object(c)) = &self.claims {
            for name in ["iat", "nbf", "exp", "auth_time"] {
                if let Some(t) = c.get(name).and_then(Value::as_i64) {
                    let _ = writeln!(out, "           {name:<9} {} ({})", utc(t), relative(t, now));
                }
            }
        }
        let _ = match self.signature_bytes {
            Some(n) => writeln!(out, "signature  {n} bytes (not shown)"),
            None => writeln!(out, "signature  (not shown)"),
        };
        let _ = writeln!(
            out,
            "request    {} {}{}",
            self.request.0,
            self.request.1.as_deref().unwrap_or("(no --url)"),
            self.request.2.as_deref().map(|q| format!("; auth-url query: {q}")).unwrap_or_default()
        );
        let _ = match &self.keys {
            KeysNote::Offline => writeln!(out, "keys       --offline: nothing fetched; THE SIGNATURE WAS NOT CHECKED"),
            KeysNote::NotNeeded => writeln!(out, "keys       not fetched (refused before the key stage)"),
            KeysNote::Fetched { issuer, usable } => {
                writeln!(out, "keys       fetched for issuer `{issuer}`: {usable} usable")
            }
            KeysNote::Failed { issuer, error } => writeln!(out, "keys       issuer `{issuer}`: fetch failed: {error}"),
        };
        let _ = writeln!(out, "\nchecks");
        for (check, outcome) in &self.checks {
            let (mark, detail) = match outcome {
                Outcome::Passed => ("ok  ", what(*check).to_string()),
                Outcome::Failed(e) => ("FAIL", format!("{} ({}: {})", what(*check), e.reason(), e.description())),
                Outcome::Skipped(why) => ("skip", (*why).to_string()),
                Outcome::NotRun => ("-   ", "not run (an earlier check failed)".to_string()),
            };
            let _ = writeln!(out, "  {mark}  {:<10} {detail}", check.name());
            if let (Outcome::Failed(_), Some(h)) = (outcome, &self.hint) {
                let _ = writeln!(out, "                   {h}");
            }
        }
        let offline = if self.keys_offline() { " if the signature is valid (not checked: --offline)" } else { "" };
        let _ = writeln!(out);
        match &self.verdict {
            Verdict::Allow { headers, max_age } => {
                let _ = writeln!(out, "/verify    200 allow{offline}");
                for (n, v) in headers {
                    let _ = writeln!(out, "           {n}: {v}");
                }
                let _ = writeln!(out, "           Cache-Control: private, max-age={max_age}");
            }
            Verdict::Refuse(r) => {
                let _ = writeln!(
                    out,
                    "/verify    {} {} ({}), issuer {}{offline}",
                    r.error.status().as_u16(),
                    r.error.reason(),
                    r.error.description(),
                    r.issuer.map(|i| self.issuers[i].as_str()).unwrap_or("none"),
                );
                if let Some(c) = self.refusal_headers(r) {
                    let _ = writeln!(out, "           WWW-Authenticate: {c}");
                }
            }
        }
        out
    }

    fn keys_offline(&self) -> bool {
        matches!(self.keys, KeysNote::Offline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }
}
