//! Distributed mode: the roles on Kafka, Redis and MongoDB.
//!
//! | role | needs | runs |
//! |---|---|---|
//! | `ingest` | Kafka, Redis, MongoDB | the API: journal to Kafka, idempotency in Redis, reads from MongoDB |
//! | `processor` | Kafka, Redis, MongoDB | the books of its shard's partitions ([`crate::processing::kafka`]) |
//! | `projector` | Kafka, MongoDB | events into the read projection |
//! | `all` | all three | all of the above in one process, as shard 0 of 1 |
//!
//! A dependency that is down at start is waited for (the process is not ready meanwhile); one
//! that fails later makes requests fail fast with 503 as described in `docs/api.md`.

use crate::admin::{self, AdminState, probe};
use crate::api::{self, AppState};
use crate::config::{Role, ServeArgs};
use crate::ids::OrderIds;
use crate::metrics::Metrics;
use crate::processing::kafka::{ProcessorConfig, run_processor, run_projector};
use crate::store::kafka::{KafkaConfig, KafkaJournal, create_topics};
use crate::store::mongo::MongoStore;
use crate::store::redis::{RedisConfig, RedisStore};
use crate::store::{Journal, OrderStore, StoreError};
use crate::{Servers, instrument_specs, markets, settings};
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Retries `connect` until it succeeds, logging while a dependency is not there yet.
async fn patiently<T, F, Fut>(what: &str, mut connect: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(value) => return value,
            Err(error) => {
                tracing::warn!(%error, "waiting for {what}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the roles of `args.role` until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let role = args.role;
    let (ingest, processor, projector) = (
        matches!(role, Role::All | Role::Ingest),
        matches!(role, Role::All | Role::Processor),
        matches!(role, Role::All | Role::Projector),
    );
    let timeout = args.dependency_timeout;
    let kafka = KafkaConfig {
        bootstrap: args.kafka.bootstrap.clone().unwrap_or_default(),
        prefix: args.kafka.topic_prefix.clone(),
        properties: args
            .kafka
            .property_pairs()
            .context("--kafka-property (OMS_KAFKA_PROPERTIES)")?,
        timeout,
    };
    let mongo_url = args
        .mongo
        .url
        .clone()
        .context("distributed mode needs --mongo-url")?;
    let redis_url = match (&args.redis.url, ingest || processor) {
        (Some(url), _) => Some(url.clone()),
        (None, false) => None,
        (None, true) => anyhow::bail!("the {role:?} role needs --redis-url"),
    };
    let limits = args.risk.limits();
    let markets = markets(instrument_specs(&args)?, &limits)?;
    let metrics = Arc::new(Metrics::new());

    if args.kafka.create_topics {
        let (partitions, replication) = (args.kafka.partitions, args.kafka.replication_factor);
        patiently("kafka (creating topics)", || {
            create_topics(&kafka, partitions, replication)
        })
        .await;
    }
    let mongo = patiently("mongodb", || {
        MongoStore::connect(&mongo_url, &args.mongo.database, timeout)
    })
    .await;
    if projector {
        patiently("mongodb (indexes)", || mongo.create_indexes()).await;
    }
    let redis = match &redis_url {
        Some(url) => Some(
            patiently("redis", || {
                RedisStore::connect(RedisConfig {
                    url: url.clone(),
                    password: args.redis.password.clone(),
                    prefix: args.kafka.topic_prefix.clone(),
                    ttl: args.idempotency_ttl,
                    timeout,
                })
            })
            .await,
        ),
        None => None,
    };

    let mut checks: Vec<(&'static str, admin::Probe)> = vec![(
        "mongodb",
        probe(mongo.clone(), |m: MongoStore| {
            Box::pin(async move { m.ping().await })
        }),
    )];
    if let Some(redis) = &redis {
        checks.push((
            "redis",
            probe(redis.clone(), |r: RedisStore| {
                Box::pin(async move { r.ping().await })
            }),
        ));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let processor_thread = match (processor, &redis) {
        (true, Some(redis)) => {
            let config = ProcessorConfig {
                kafka: kafka.clone(),
                shard: if role == Role::All {
                    0
                } else {
                    args.sharding.shard()
                },
                shards: if role == Role::All {
                    1
                } else {
                    args.sharding.shards
                },
                snapshot_every: args.snapshot_every,
                instruments: markets.values().map(|m| m.instrument.clone()).collect(),
                limits: limits.clone(),
                mongo: mongo.clone(),
                redis: redis.clone(),
                metrics: metrics.clone(),
            };
            anyhow::ensure!(
                config.shard < config.shards,
                "--shard {} is not below --shards {}",
                config.shard,
                config.shards
            );
            let (handle, stop) = (tokio::runtime::Handle::current(), stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("oms-processor".into())
                    .spawn(move || {
                        // Recovers from anything but a stop: a restart of the processing loop
                        // rebuilds every partition from its snapshot and the committed offsets.
                        while !stop.load(Ordering::Relaxed) {
                            if let Err(error) = run_processor(&config, &handle, &stop) {
                                tracing::error!(
                                    error = format!("{error:#}"),
                                    "processor failed; restarting"
                                );
                                std::thread::sleep(Duration::from_secs(1));
                            }
                        }
                    })?,
            )
        }
        _ => None,
    };
    let (stop_projector, projector_stopped) = tokio::sync::oneshot::channel::<()>();
    let projector_task = projector.then(|| {
        let (kafka, store, metrics) = (
            kafka.clone(),
            Arc::new(mongo.clone()) as Arc<dyn OrderStore>,
            metrics.clone(),
        );
        tokio::spawn(async move {
            let stopped = async {
                let _ = projector_stopped.await;
            };
            if let Err(error) = run_projector(kafka, store, metrics, stopped).await {
                tracing::error!(%error, "projector failed");
            }
        })
    });

    let api = match (ingest, &redis) {
        (true, Some(redis)) => {
            let journal = patiently("kafka", || KafkaJournal::connect(kafka.clone())).await;
            let journal: Arc<dyn Journal> = Arc::new(journal);
            checks.push((
                "kafka",
                probe(journal.clone(), |j: Arc<dyn Journal>| {
                    Box::pin(async move { j.ping().await })
                }),
            ));
            let node = match args.node_id {
                0 => patiently("redis (node id)", || redis.next_node_id()).await,
                node => node,
            };
            let keys = match &args.api_keys_file {
                Some(path) => crate::auth::ApiKeys::load(path)?,
                None => anyhow::bail!(
                    "distributed mode needs --api-keys-file (see `oms-runtime keygen`)"
                ),
            };
            let app = AppState {
                markets: Arc::new(markets),
                keys: Arc::new(keys),
                journal,
                idempotency: Arc::new(redis.clone()),
                orders: Arc::new(mongo.clone()),
                depth: Arc::new(redis.clone()),
                waiters: None,
                ids: Arc::new(OrderIds::new(node, None)),
                metrics: metrics.clone(),
                settings: settings(&args),
            };
            tracing::info!(node, "ingest order ids use node {node}");
            Some((args.api_addr, api::router(app)))
        }
        _ => None,
    };
    tracing::info!(?role, prefix = %kafka.prefix, "oms-runtime starting (distributed)");
    let draining = Arc::new(AtomicBool::new(false));
    let servers = Servers {
        api,
        admin: (
            args.admin_addr,
            admin::router(AdminState {
                metrics,
                checks,
                draining: draining.clone(),
            }),
        ),
        draining,
    };
    servers.run().await?;

    stop.store(true, Ordering::Relaxed);
    let _ = stop_projector.send(());
    if let Some(task) = projector_task {
        let _ = task.await;
    }
    if let Some(thread) = processor_thread
        && let Ok(Err(_)) = tokio::task::spawn_blocking(move || thread.join()).await
    {
        tracing::error!("processor panicked");
    }
    tracing::info!("stopped cleanly");
    Ok(())
}
