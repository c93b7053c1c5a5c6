//! HTTP endpoints (axum): `/health` and Prometheus `/metrics`. Off unless
//! `http_addr` is set (its own address, apart from the Kafka listeners).
//! With `http_auth_token`, every endpoint but `/health` (for load
//! balancers' and orchestrators' probes) needs `Authorization: Bearer
//! TOKEN`, else 401. The admin REST API and console come later; this is the
//! only place errors become HTTP statuses.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let mut text = format!(
        "{}{}{}{}{}",
        broker.storage.metrics().render_prometheus(),
        broker.writer.flush_metrics().render_prometheus(),
        broker.requests.render_prometheus(),
        broker.txn.render_prometheus(),
        crate::broker::cluster::render_prometheus(&broker)
    );
    broker.connections.render_prometheus(&mut text);
    broker.quotas.render_prometheus(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Lets a request through only with the configured bearer token.
async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let matches = given.is_some_and(|given| {
        aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), token.as_bytes())
            .is_ok()
    });
    if matches {
        return next.run(request).await;
    }
    let message = if given.is_some() {
        "wrong bearer token\n"
    } else {
        "this endpoint needs an 'Authorization: Bearer TOKEN' header (http_auth_token)\n"
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        message,
    )
        .into_response()
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
    let token = broker
        .config
        .http_auth_token
        .as_ref()
        .map(|token| Arc::<str>::from(token.0.as_str()));
    let mut protected = Router::new().route("/metrics", get(metrics));
    if let Some(token) = token {
        protected = protected.layer(middleware::from_fn_with_state(token, require_token));
    }
    let app = Router::new()
        .route("/health", get(health))
        .merge(protected)
        .with_state(broker);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::warn!(%error, "HTTP server stopped");
        }
    });
    Ok((local, task))
}
