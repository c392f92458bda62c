//! The admin port: liveness, readiness and Prometheus metrics, apart from the API port.
//!
//! It is the first thing a process opens: `/healthz` answers at once, `/readyz` answers 503 and
//! names what is missing until every part of the process is ready ([`crate::health`]).

use crate::health::Health;
use crate::metrics::Metrics;
use crate::server::{self, Limits};
use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// The dependencies and roles of this process, checked on every `/readyz`.
    pub health: Health,
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
    let report = state.health.report().await;
    let draining = state.draining.load(Ordering::Relaxed);
    let ready = !report.is_empty() && report.iter().all(|(_, r)| r.is_ok()) && !draining;
    let checks: serde_json::Map<String, serde_json::Value> = report
        .into_iter()
        .map(|(name, result)| (name.to_string(), result.err().unwrap_or("ok".into()).into()))
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

/// The running admin server.
pub struct AdminServer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl AdminServer {
    /// Binds `addr` and serves `state` under `limits` until [`AdminServer::stop`].
    pub async fn start(
        addr: SocketAddr,
        state: AdminState,
        limits: Limits,
    ) -> anyhow::Result<AdminServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let metrics = state.metrics.http.connections.clone();
        let stopped = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let task = tokio::spawn(server::serve(
            listener,
            router(state),
            limits,
            "admin",
            metrics,
            stopped,
        ));
        tracing::info!(%addr, "admin port open");
        Ok(AdminServer { stop, task, addr })
    }

    /// Stops serving, after the requests in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
