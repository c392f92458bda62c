//! The admin port: liveness, readiness and Prometheus metrics, apart from the API port.

use crate::metrics::Metrics;
use crate::store::StoreError;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A readiness probe of one dependency.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// A probe from anything that can be cloned into a ping.
pub fn probe<T, F>(target: T, ping: F) -> Probe
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync + 'static,
{
    Arc::new(move || ping(target.clone()))
}

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// The dependencies this process needs, by name, checked on every `/readyz`.
    pub checks: Vec<(&'static str, Probe)>,
    /// Set when shutdown starts: readiness fails so load balancers stop sending traffic.
    pub draining: Arc<AtomicBool>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let results = futures::future::join_all(state.checks.iter().map(|(name, probe)| async move {
        let result = match tokio::time::timeout(Duration::from_secs(1), probe()).await {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_string(),
        };
        (name.to_string(), result)
    }))
    .await;
    let draining = state.draining.load(Ordering::Relaxed);
    let ready = results.iter().all(|(_, result)| result == "ok") && !draining;
    let checks: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, result)| (name, result.into()))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "draining": draining,
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
