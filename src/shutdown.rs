//! Serving until a signal, then a clean exit: on SIGTERM or SIGINT `/readyz` turns 503 at once,
//! the listener keeps serving for `shutdown.drain_delay_seconds` (so the endpoint is withdrawn
//! before connections are refused), then stops accepting, lets in-flight requests finish within
//! `shutdown.grace_seconds`, and stops the background refreshers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::gate::Gate;
use crate::http::{AppState, router};

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

/// Serves `gate` on `listener` until `stop` resolves, then drains and returns.
pub async fn serve(
    listener: TcpListener,
    gate: Gate,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let refreshers = gate.spawn_refreshers(&cancel);
    let draining = Arc::new(AtomicBool::new(false));
    let shutdown = gate.config.shutdown.clone();
    let app = router(AppState { gate, draining: draining.clone() });

    let close = CancellationToken::new();
    let server = axum::serve(listener, app).with_graceful_shutdown(close.clone().cancelled_owned());
    let mut server = tokio::spawn(async move { server.await });

    tokio::select! {
        result = &mut server => {
            cancel.cancel();
            return result.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        }
        _ = stop => {}
    }
    tracing::info!(drain_delay_s = shutdown.drain_delay.as_secs(), grace_s = shutdown.grace.as_secs(), "shutting down");
    draining.store(true, Ordering::Release);
    tokio::time::sleep(shutdown.drain_delay).await;
    close.cancel();
    match tokio::time::timeout(shutdown.grace, &mut server).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => {
            tracing::warn!("grace period over with requests in flight; exiting");
            server.abort();
        }
    }
    cancel.cancel();
    for r in refreshers {
        let _ = r.await;
    }
    Ok(())
}
