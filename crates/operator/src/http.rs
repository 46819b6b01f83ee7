//! The operator's HTTP endpoints: Prometheus metrics and health probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::reach::Reach;

#[derive(Clone)]
pub struct Http {
    pub registry: Arc<Registry>,
    /// True once the controller runs (or this replica waits as a healthy standby).
    pub ready: Arc<AtomicBool>,
    /// Whether the kube-apiserver answers: a replica that cannot reach it is not ready.
    pub reach: Reach,
}

pub async fn serve(addr: SocketAddr, state: Http) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn metrics(State(s): State<Http>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            String::new(),
        ),
    }
}

/// Not ready while starting, or while the kube-apiserver does not answer (the body says since
/// when and why). Liveness (/healthz) stays ok then: a restart would not bring it back.
async fn readyz(State(s): State<Http>) -> impl IntoResponse {
    if let Some(problem) = s.reach.problem() {
        (StatusCode::SERVICE_UNAVAILABLE, problem)
    } else if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting".into())
    }
}
