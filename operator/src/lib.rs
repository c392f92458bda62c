//! The OrderSystem operator: reconciles each `OrderSystem` into OMS runtime pods, Kafka topics,
//! Services, autoscaling, disruption budgets and status.
//!
//! The reconcile is a pipeline (see [`controller`]): only dereference and apply touch the API
//! server; [`validate`] and [`children`] are plain functions, tested without a server.

pub mod children;
pub mod cli;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod topics;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures;

use axum::Router;
use axum::routing::get;
use crds::OrderSystem;
use std::sync::Arc;

/// Every object the operator would create for `system`, as a multi-document YAML stream.
pub fn render(system: &OrderSystem) -> anyhow::Result<String> {
    let plan = validate::validate(system)?;
    let children = children::build(system, &plan);
    let mut documents = Vec::new();
    let mut push = |value: serde_json::Value| -> anyhow::Result<()> {
        documents.push(serde_yaml::to_string(&value)?);
        Ok(())
    };
    for child in children.all() {
        push(child.to_value()?)?;
    }
    for topic in topics::wanted(
        &plan.topic_prefix,
        plan.partitions,
        system.spec.kafka.replication_factor,
        system.spec.kafka.min_in_sync_replicas,
    ) {
        documents.push(format!(
            "# Kafka topic {} (admin API): {} partitions, replication factor {}, {:?}\n",
            topic.name, topic.partitions, topic.replication_factor, topic.config
        ));
    }
    Ok(documents.join("---\n"))
}

/// Logging: `OMS_LOG` filter (default info), JSON lines.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .init();
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: cli::RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let admin = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get({
                let metrics = metrics.clone();
                move || {
                    let metrics = metrics.clone();
                    async move { metrics.encode() }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics and health");
    tokio::spawn(async move {
        let _ = axum::serve(listener, admin).await;
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    let identity = std::env::var("HOSTNAME")
        .unwrap_or_else(|_| format!("oms-operator-{}", std::process::id()));
    let election = args.leader_election.then(|| {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        leader::LeaderElection::new(client.clone(), &namespace, &args.lease_name, &identity)
    });
    if let Some(election) = &election {
        tracing::info!(%identity, "waiting for leadership");
        tokio::select! {
            _ = election.acquire() => {}
            _ = stopped() => return Ok(()),
        }
        tracing::info!(%identity, "leading");
        metrics.leader.set(1);
    }
    let ctx = Arc::new(controller::Context::new(
        client,
        metrics,
        args.kafka_timeout,
    ));
    let lost = async {
        match &election {
            Some(election) => election.hold().await,
            None => std::future::pending().await,
        }
    };
    let controller = controller::run(ctx, args.namespace.as_deref(), stopped());
    tokio::select! {
        _ = controller => Ok(()),
        _ = lost => anyhow::bail!("lost leadership; exiting so a restart rejoins as a standby"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
