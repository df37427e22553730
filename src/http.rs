//! The HTTP surface: `/verify` (any method, no body read), `/healthz`, `/readyz`, `/metrics`.
//!
//! Response rules from the contract: 200 carries the identity headers and a
//! `Cache-Control: private, max-age=N` bounded by the token's remaining lifetime (plus
//! `X-Accel-Expires: N`, which nginx's `proxy_cache` honours for the auth subrequest); every
//! other status carries `Cache-Control: no-store` and `X-Accel-Expires: 0`. Never a 2xx other than
//! 200, never a redirect or a 404 from `/verify`.
//!
//! Limits: `/verify` decides requests with up to [`MAX_HEADERS`] headers and [`MAX_HEADER_BYTES`]
//! of them and answers a larger one 431 itself, with the contract's no-store headers. hyper's own
//! limits (set in [`crate::shutdown`]) are higher, so only requests far past ours are refused by
//! hyper (also 431, without those headers): never allowed either way. While draining on shutdown
//! every answer carries `Connection: close`, so nginx moves to a replica that is not stopping.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use tower::ServiceExt as _;

use crate::error::{AuthError, LogSafe, PolicyDenial, Reason, Refused};
use crate::gate::{Allowed, Gate};

/// The shared state: the gate and the draining flag set on shutdown. Handlers share one `Arc` of
/// it, so reaching it costs one reference count, not a clone of every handle.
pub struct AppState {
    pub gate: Gate,
    pub draining: Arc<AtomicBool>,
}

/// What serves every connection: `/verify`, the hot path, straight to its handler; the other
/// endpoints through an axum [`Router`]. Cheap to clone (two reference counts).
///
/// `/verify` bypasses the router because, per request, the router's dispatch (path match,
/// URL-parameter and extension inserts, a boxed future, a clone of the request headers for the
/// extractor) cost about as many instructions as the cached decision itself.
#[derive(Clone)]
pub struct App {
    state: Arc<AppState>,
    router: Router,
}

impl App {
    pub fn new(state: AppState) -> App {
        let state = Arc::new(state);
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(state.clone());
        App { state, router }
    }

    /// Answers one request. Any method on `/verify` is a decision; the body is never read.
    pub fn call(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        let app = self.clone();
        async move {
            let mut response = if request.uri().path() == "/verify" {
                verify(&app.state, &request).await
            } else {
                app.router.oneshot(request.map(Body::new)).await?
            };
            if app.state.draining.load(Ordering::Acquire) {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }
    }
}

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const ZERO: HeaderValue = HeaderValue::from_static("0");
const X_ACCEL_EXPIRES: header::HeaderName = header::HeaderName::from_static("x-accel-expires");

/// Headers `/verify` decides on; a request with more is answered 431.
pub const MAX_HEADERS: usize = 256;
/// Bytes of request headers (names, values and `: ` / CRLF) `/verify` decides on; more is 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The request id nginx sent, made log-safe (it is client-controlled when a client reaches
/// jwtgate directly, and nginx passes a client's own `X-Request-ID` through by default).
fn request_id(headers: &HeaderMap) -> LogSafe {
    LogSafe::new(headers.get("x-request-id").map(|v| String::from_utf8_lossy(v.as_bytes())).as_deref().unwrap_or(""))
}

/// Refuses requests past [`MAX_HEADERS`] or [`MAX_HEADER_BYTES`].
fn check_header_limits(headers: &HeaderMap) -> Result<(), AuthError> {
    if headers.len() > MAX_HEADERS {
        return Err(AuthError::HeadersTooLarge);
    }
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(AuthError::HeadersTooLarge);
    }
    Ok(())
}

async fn verify(app: &AppState, request: &Request<Incoming>) -> Response {
    let start = Instant::now();
    let now = crate::gate::unix_now();
    let gate = &app.gate;
    let headers = request.headers();
    let outcome = match check_header_limits(headers) {
        Ok(()) => gate.decide(request.uri().query(), headers, now).await,
        Err(e) => Err(e.into()),
    };
    let response = match outcome {
        Ok(allowed) => {
            gate.metrics.decision(Some(allowed.entry.identity.issuer), Reason::Ok);
            allow(allowed)
        }
        Err(Refused { error, issuer }) => {
            let label = gate.issuer_label(issuer);
            gate.metrics.decision(issuer, error.kind());
            match &error {
                AuthError::BadPolicy(why) => tracing::warn!(
                    reason = error.reason(),
                    issuer = label,
                    request_id = %request_id(headers),
                    problem = %why,
                    "bad auth-url policy (check the Ingress auth-url query)"
                ),
                AuthError::Policy(PolicyDenial { name, error: Some(why) }) => tracing::warn!(
                    reason = error.reason(),
                    issuer = label,
                    request_id = %request_id(headers),
                    policy = %name,
                    problem = %why,
                    "policy could not be evaluated; denied"
                ),
                // The log alone answers "why": the challenge's fixed description and, for a 403
                // or a step-up, the requirement that failed; never a token value.
                _ => tracing::info!(
                    reason = error.reason(),
                    issuer = label,
                    request_id = %request_id(headers),
                    status = error.status().as_u16(),
                    error_description = error.description(),
                    requirement = error.requirement().as_ref().map(tracing::field::display),
                    "refused"
                ),
            }
            refuse(&error, gate.dpop_challenge(request.uri().query(), headers, &error))
        }
    };
    gate.metrics.decision_duration.observe(start.elapsed().as_secs_f64());
    response
}

fn allow(allowed: Allowed) -> Response {
    let identity = &allowed.entry.identity.headers;
    let mut h = HeaderMap::with_capacity(identity.len() + 2);
    for (name, value) in identity {
        h.insert(name.clone(), value.clone());
    }
    if allowed.no_store {
        // The decision answers this request only: it read the original request (method, URL),
        // or used a DPoP proof, which is single-use (nginx's auth cache is keyed on the token,
        // not on the proof, so a cached answer would skip the next proof).
        h.insert(X_ACCEL_EXPIRES, ZERO);
        h.insert(header::CACHE_CONTROL, NO_STORE);
    } else {
        let secs = allowed.max_age.to_string();
        // X-Accel-Expires first: nginx before 1.23 reads the headers in order and stops caching at
        // a `Cache-Control: private` seen before X-Accel-Expires (fixed in nginx 1.23.0).
        h.insert(X_ACCEL_EXPIRES, HeaderValue::from_str(&secs).expect("digits"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_str(&format!("private, max-age={secs}")).expect("digits"));
    }
    let mut response = Response::new(Body::empty());
    *response.headers_mut() = h;
    response
}

/// The refusal response for an error (RFC 6750 §3 for 401 and 403). With `dpop_algs` the
/// challenge uses the `DPoP` scheme with the same parameters and `algs` (RFC 9449 §7.1).
pub fn refuse(error: &AuthError, dpop_algs: Option<&str>) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = error.status();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(X_ACCEL_EXPIRES, ZERO);
    let challenge = match error {
        AuthError::MissingToken => Some(r#"Bearer realm="jwtgate""#.to_string()),
        AuthError::DpopProof(why) => {
            Some(format!(r#"Bearer realm="jwtgate", error="invalid_dpop_proof", error_description="{why}""#))
        }
        AuthError::Scope(required) => {
            Some(format!(r#"Bearer realm="jwtgate", error="insufficient_scope", scope="{}""#, quote_safe(required)))
        }
        AuthError::Claim(path) => Some(format!(
            r#"Bearer realm="jwtgate", error="insufficient_scope", error_description="claim requirement not met: {}""#,
            percent_encode_forbidden(path)
        )),
        AuthError::Policy(denial) => Some(format!(
            r#"Bearer realm="jwtgate", error="insufficient_scope", error_description="policy not met: {}""#,
            percent_encode_forbidden(&denial.name)
        )),
        AuthError::StepUp(s) => {
            // RFC 9470 §3: the client learns what to ask its authorization server for.
            let mut c = format!(
                r#"Bearer realm="jwtgate", error="insufficient_user_authentication", error_description="{}""#,
                s.description
            );
            if let Some(acr) = &s.acr_values {
                c.push_str(&format!(r#", acr_values="{acr}""#));
            }
            if let Some(max_age) = s.max_age {
                c.push_str(&format!(r#", max_age="{max_age}""#));
            }
            Some(c)
        }
        e if e.status() == StatusCode::UNAUTHORIZED => {
            Some(format!(r#"Bearer realm="jwtgate", error="invalid_token", error_description="{}""#, e.description()))
        }
        _ => None,
    };
    let challenge = match (challenge, dpop_algs) {
        (Some(c), Some(algs)) => Some(format!(r#"DPoP{}, algs="{algs}""#, c.strip_prefix("Bearer").expect("Bearer"))),
        (c, _) => c,
    };
    if let Some(c) = challenge {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&c).expect("challenge is visible ASCII"));
    }
    response
}

/// Writes text for an `error_description`: characters RFC 6750 §3 forbids there (outside
/// %x20-21 / %x23-5B / %x5D-7E), and `%` itself so that decoding is unambiguous, are
/// percent-encoded as UTF-8 bytes.
fn percent_encode_forbidden(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if matches!(b, 0x20 | 0x21 | 0x23 | 0x24 | 0x26..=0x5b | 0x5d..=0x7e) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Keeps only characters RFC 6750 allows in a `scope` value (%x21 / %x23-5B / %x5D-7E and space).
fn quote_safe(s: &str) -> String {
    s.chars().filter(|c| matches!(*c as u32, 0x20 | 0x21 | 0x23..=0x5b | 0x5d..=0x7e)).collect()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let draining = app.draining.load(Ordering::Acquire);
    let mut all_ready = !draining;
    let mut issuers = serde_json::Map::new();
    for keys in app.gate.issuers.iter().map(|i| &i.keys) {
        let state = keys.state();
        all_ready &= state == crate::jwks::IssuerState::Ready;
        let current = keys.current().ok();
        issuers.insert(
            keys.name.clone(),
            serde_json::json!({
                "state": state.as_str(),
                "keys": current.map(|s| s.keys.len()).unwrap_or(0),
                "last_success_age_seconds": keys.last_success_age().map(|a| a.round() as u64),
                "last_error": keys.last_error(),
            }),
        );
    }
    let body = serde_json::json!({
        "ready": all_ready,
        "draining": draining,
        "issuers": issuers,
    });
    let status = if all_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body.to_string())
        .into_response()
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    for keys in app.gate.issuers.iter().map(|i| &i.keys) {
        keys.export_age();
    }
    app.gate.metrics.cache_entries.set(app.gate.cache.entry_count() as i64);
    app.gate.metrics.dpop_replay_bytes.set(app.gate.replay_bytes() as i64);
    let ready = !app.draining.load(Ordering::Acquire) && app.gate.ready();
    app.gate.metrics.ready.set(i64::from(ready));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.gate.metrics.render()).into_response()
}
