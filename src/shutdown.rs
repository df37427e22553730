//! Serving until a signal, then a clean exit: on SIGTERM or SIGINT `/readyz` turns 503 at once,
//! the listener keeps serving for `shutdown.drain_delay_seconds` (so the endpoint is withdrawn
//! before connections are refused), then stops accepting, stops the key owners (abandoning a fetch
//! in progress), and lets in-flight requests finish within `shutdown.grace_seconds`.
//!
//! The accept loop is hyper's HTTP/1 server used directly rather than `axum::serve`, for three
//! settings nginx-facing traffic needs: response header names in canonical Title-Case
//! (ingress-nginx's `auth-keepalive` Lua path looks them up case-sensitively, as
//! `auth-response-headers` spells them), `TCP_NODELAY` on every connection (auth subrequests are
//! small request/response pairs on kept-alive connections), and HTTP/1 only (nginx speaks
//! HTTP/1.1 to auth upstreams; no protocol sniffing per connection).
//!
//! Connection limits: hyper's header count and head size are set above what `/verify` decides on
//! ([`crate::http::MAX_HEADERS`], [`crate::http::MAX_HEADER_BYTES`]) so that jwtgate answers the
//! requests just past its limits with the contract's headers, and hyper only refuses (431) those
//! far past them. hyper's header read timeout also runs while a kept-alive connection waits for
//! its next request, so it is the idle keep-alive timeout: `server.idle_timeout_seconds`, 75 s
//! by default, longer than nginx's default upstream `keepalive_timeout` of 60 s (nginx then closes
//! idle connections itself and never sends a request on one jwtgate is closing).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::gate::Gate;
use crate::http::{App, AppState};

/// hyper refuses requests with more headers than this itself (431).
pub const HYPER_MAX_HEADERS: usize = 4 * crate::http::MAX_HEADERS;
/// hyper refuses request heads (request line and headers) longer than this itself (431). Room for
/// [`crate::http::MAX_HEADER_BYTES`] of headers and a request line as long as URIs get (64 KiB).
pub const HYPER_MAX_HEAD_BYTES: usize = 4 * crate::http::MAX_HEADER_BYTES;

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Accepts connections and serves `app` on each until `until` resolves.
async fn accept_until(
    listener: &TcpListener,
    app: &App,
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    until: impl Future<Output = ()>,
) {
    tokio::pin!(until);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut until => return,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request| app.call(request));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Client resets and timeouts end a connection; nothing to report.
            let _ = connection.await;
        });
    }
}

/// Serves `gate` on `listener` until `stop` resolves, then drains and returns.
pub async fn serve(listener: TcpListener, gate: Gate, stop: impl Future<Output = ()>) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let refreshers = gate.spawn_refreshers(&cancel);
    let draining = Arc::new(AtomicBool::new(false));
    let shutdown = gate.config.shutdown.clone();
    let idle_timeout = gate.config.server.idle_timeout;
    let app = App::new(AppState { gate, draining: draining.clone() });

    let mut builder = http1::Builder::new();
    builder
        .title_case_headers(true)
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_HEAD_BYTES);
    let graceful = GracefulShutdown::new();

    accept_until(&listener, &app, &builder, &graceful, stop).await;
    tracing::info!(drain_delay_s = shutdown.drain_delay.as_secs(), grace_s = shutdown.grace.as_secs(), "shutting down");
    draining.store(true, Ordering::Release);
    accept_until(&listener, &app, &builder, &graceful, tokio::time::sleep(shutdown.drain_delay)).await;
    drop(listener);
    // Stop the key owners before the grace period: a fetch in progress is abandoned, and a request
    // still waiting on it is answered at once rather than holding the exit (shutdown never waits
    // on the identity provider). The owners return without awaiting anything.
    cancel.cancel();
    for r in refreshers {
        let _ = r.await;
    }
    match tokio::time::timeout(shutdown.grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("grace period over with requests in flight; exiting"),
    }
    Ok(())
}
