//! HTTP endpoints (axum): `/health` and Prometheus `/metrics`. Off unless
//! `http_addr` is set. The admin REST API and console come later; this is the
//! only place errors become HTTP statuses.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        format!(
            "{}{}{}{}{}",
            broker.storage.metrics().render_prometheus(),
            broker.writer.flush_metrics().render_prometheus(),
            broker.requests.render_prometheus(),
            broker.txn.render_prometheus(),
            crate::broker::cluster::render_prometheus(&broker)
        ),
    )
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    broker: Arc<Broker>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(broker);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::warn!(%error, "HTTP server stopped");
        }
    });
    Ok((local, task))
}
