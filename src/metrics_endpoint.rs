//! `--metrics-addr` of `gantry controller` and `gantry balancer`: their
//! Prometheus metrics at `/metrics`, and `/healthz` and `/readyz` for
//! probes.

use std::net::SocketAddr;

use anyhow::Context;
use axum::{Router, http::header, routing::get};

/// Serve `encode`'s text on `addr`, in the background.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    encode: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let metrics = move || {
        let text = encode();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
        }
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    tracing::info!(%addr, "serving metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}
