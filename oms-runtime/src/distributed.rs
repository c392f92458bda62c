//! Distributed mode: the roles on Kafka, Redis and MongoDB.
//!
//! | role | needs | runs |
//! |---|---|---|
//! | `ingest` | Kafka, Redis, MongoDB | the API: journal to Kafka, idempotency in Redis, reads from MongoDB |
//! | `funds` | Kafka, Redis, MongoDB | the balances of its shard's accounts partitions ([`crate::processing::kafka`]) |
//! | `processor` | Kafka, Redis, MongoDB | the books of its shard's commands partitions (the matching stage) |
//! | `projector` | Kafka, MongoDB | events and the ledger into the read projection |
//! | `all` | all three | all of the above in one process, as shard 0 of 1 |
//!
//! # Start-up
//! The admin port opens first: the process is live at once and `/readyz` names what it still
//! waits for. Each dependency is then waited for (the process is not ready meanwhile), and the
//! roles start. A SIGTERM while waiting ends the process cleanly.
//!
//! # Failure
//! A dependency that fails later makes requests fail fast with 503 as described in
//! `docs/api.md`. A role that fails is restarted with backoff ([`crate::health::supervise`]) and
//! shows in readiness until it works again.

use crate::admin::{AdminServer, AdminState};
use crate::api::{self, AppState};
use crate::config::{Role, ServeArgs};
use crate::health::{Health, patiently, probe, supervise};
use crate::ids::OrderIds;
use crate::metrics::Metrics;
use crate::processing::kafka::{StageConfig, run_funds, run_processor, run_projector};
use crate::server::Limits;
use crate::store::kafka::{KafkaConfig, KafkaJournal, create_topics};
use crate::store::mongo::MongoStore;
use crate::store::redis::{RedisConfig, RedisStore};
use crate::store::{Journal, OrderStore};
use crate::{instrument_specs, markets, serve_api, settings, shutdown_signal};
use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What runs once the dependencies answered: the API and the roles' tasks.
struct Started {
    api: Option<(std::net::SocketAddr, axum::Router, Arc<crate::streams::Hub>)>,
    funds: Option<tokio::task::JoinHandle<()>>,
    processor: Option<tokio::task::JoinHandle<()>>,
    projector: Option<tokio::task::JoinHandle<()>>,
}

/// Runs the roles of `args.role` until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs, limits: Limits) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Health::new(metrics.clone());
    let draining = Arc::new(AtomicBool::new(false));
    // Checked before the port opens: a bad flag is an exit with a message, not a pod that
    // stays unready.
    let plan = Plan::new(&args)?;
    let ui = crate::ui::of(&args)?;
    let admin_state = AdminState {
        metrics: metrics.clone(),
        health: health.clone(),
        draining,
    };
    if plan.runs(Role::Ingest) {
        // Ready only once the API port is open (`serve_api`).
        health.starting("api", "opening the API port");
    }
    let admin =
        AdminServer::start(args.admin_addr, admin_state.clone(), Limits::admin(&limits)).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = tokio::select! {
        started = start(&args, plan, ui, &health, &metrics, stopped) => started?,
        () = shutdown_signal() => {
            tracing::info!("stopped while starting");
            admin.stop().await;
            return Ok(());
        }
    };
    serve_api(started.api, &admin_state, &limits).await?;

    let _ = stop.send(true);
    // The supervisors end once their role has stopped.
    for task in [started.projector, started.processor, started.funds]
        .into_iter()
        .flatten()
    {
        let _ = task.await;
    }
    admin.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The flags, checked: everything that needs no dependency.
struct Plan {
    role: Role,
    kafka: KafkaConfig,
    mongo_url: String,
    redis_url: Option<String>,
    markets: std::collections::BTreeMap<oms_core::Symbol, api::Market>,
    limits: oms_core::RiskLimits,
}

impl Plan {
    fn new(args: &ServeArgs) -> anyhow::Result<Plan> {
        let role = args.role;
        let kafka = KafkaConfig {
            bootstrap: args.kafka.bootstrap.clone().unwrap_or_default(),
            prefix: args.kafka.topic_prefix.clone(),
            properties: args
                .kafka
                .property_pairs()
                .context("--kafka-property (OMS_KAFKA_PROPERTIES)")?,
            timeout: args.dependency_timeout,
        };
        let mongo_url = args
            .mongo
            .url
            .clone()
            .context("distributed mode needs --mongo-url")?;
        let redis_url = match (&args.redis.url, role == Role::Projector) {
            (Some(url), _) => Some(url.clone()),
            (None, true) => None,
            (None, false) => anyhow::bail!("the {role:?} role needs --redis-url"),
        };
        if matches!(role, Role::All | Role::Ingest) && args.api_keys_file.is_none() {
            anyhow::bail!("distributed mode needs --api-keys-file (see `oms-runtime keygen`)");
        }
        if matches!(role, Role::Processor | Role::Funds) {
            let (shard, shards) = (args.sharding.shard(), args.sharding.shards);
            anyhow::ensure!(
                shard < shards,
                "--shard {shard} is not below --shards {shards}"
            );
        }
        let limits = args.risk.limits();
        let markets = markets(instrument_specs(args)?, &limits)?;
        Ok(Plan {
            role,
            kafka,
            mongo_url,
            redis_url,
            markets,
            limits,
        })
    }

    fn runs(&self, role: Role) -> bool {
        self.role == Role::All || self.role == role
    }
}

/// Waits for the dependencies, then starts the roles.
async fn start(
    args: &ServeArgs,
    plan: Plan,
    ui: Option<axum::Router>,
    health: &Health,
    metrics: &Arc<Metrics>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Started> {
    let kafka = &plan.kafka;
    let timeout = args.dependency_timeout;
    if args.kafka.create_topics {
        let (partitions, replication) = (args.kafka.partitions, args.kafka.replication_factor);
        patiently(health, "kafka", || {
            create_topics(kafka, partitions, replication)
        })
        .await;
    }
    let mongo = patiently(health, "mongodb", || {
        MongoStore::connect(&plan.mongo_url, &args.mongo.database, timeout)
    })
    .await;
    if plan.runs(Role::Projector) {
        patiently(health, "mongodb", || mongo.create_indexes()).await;
    }
    // Registered after the last wait on it: a probe replaces the waiting state.
    health.probe(
        "mongodb",
        probe(mongo.clone(), |m: MongoStore| {
            Box::pin(async move { m.ping().await })
        }),
    );
    let mut node = args.node_id;
    let redis = match &plan.redis_url {
        Some(url) => {
            let redis = patiently(health, "redis", || {
                RedisStore::connect(RedisConfig {
                    url: url.clone(),
                    password: args.redis.password.clone(),
                    prefix: args.kafka.topic_prefix.clone(),
                    ttl: args.idempotency_ttl,
                    timeout,
                })
            })
            .await;
            if plan.runs(Role::Ingest) && args.node_id == 0 {
                node = patiently(health, "redis", || redis.next_node_id()).await;
            }
            // Registered after the last wait on it: a probe replaces the waiting state.
            health.probe(
                "redis",
                probe(redis.clone(), |r: RedisStore| {
                    Box::pin(async move { r.ping().await })
                }),
            );
            Some(redis)
        }
        None => None,
    };

    let stage = |role: Role| {
        let (shard, shards) = match plan.role {
            Role::All => (0, 1),
            _ => (args.sharding.shard(), args.sharding.shards),
        };
        redis
            .as_ref()
            .map(|redis| StageConfig {
                kafka: kafka.clone(),
                shard,
                shards,
                snapshot_every: args.snapshot_every,
                instruments: plan
                    .markets
                    .values()
                    .map(|m| m.instrument.clone())
                    .collect(),
                limits: plan.limits.clone(),
                mongo: mongo.clone(),
                redis: redis.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                faults: Arc::default(),
            })
            .filter(|_| plan.runs(role))
    };
    let funds = stage(Role::Funds).map(|config| spawn_stage("funds", config, stopped.clone()));
    let processor =
        stage(Role::Processor).map(|config| spawn_stage("processor", config, stopped.clone()));
    // The projector prices each trade's fees from the instruments' rates, as funds charge
    // them: the ledger that records them is another topic.
    let assets = crate::assets(&plan.markets)?;
    let fee_markets = crate::processing::projection::fee_markets(&plan.markets, &assets);
    let projector = plan.runs(Role::Projector).then(|| {
        let (kafka, mongo, metrics, health) = (
            kafka.clone(),
            mongo.clone(),
            metrics.clone(),
            health.clone(),
        );
        let markets = fee_markets.clone();
        tokio::spawn(supervise(
            health.clone(),
            "projector",
            stopped.clone(),
            move || {
                run_projector(
                    kafka.clone(),
                    mongo.clone(),
                    markets.clone(),
                    metrics.clone(),
                    health.clone(),
                    stopped.clone(),
                )
            },
        ))
    });

    let api = match (plan.runs(Role::Ingest), &redis) {
        (true, Some(redis)) => {
            let journal = patiently(health, "kafka", || {
                KafkaJournal::connect(kafka.clone(), redis.clone())
            })
            .await;
            // The streams follow the events and ledger topics: their partitions (before the
            // probe: a probe replaces the waiting state).
            let sources = patiently(health, "kafka", || {
                let kafka = kafka.clone();
                async move {
                    tokio::task::spawn_blocking(move || crate::streams::kafka::sources(&kafka))
                        .await
                        .map_err(anyhow::Error::from)
                        .and_then(|sources| sources)
                        .map_err(|error| crate::store::StoreError::Unavailable {
                            backend: crate::store::Backend::Kafka,
                            message: format!("{error:#}"),
                        })
                }
            })
            .await;
            let journal: Arc<dyn Journal> = Arc::new(journal);
            health.probe(
                "kafka",
                probe(journal.clone(), |j: Arc<dyn Journal>| {
                    Box::pin(async move { j.ping().await })
                }),
            );
            let path = args.api_keys_file.as_ref().context("--api-keys-file")?;
            let keys = Arc::new(crate::auth::KeyRing::new(crate::auth::ApiKeys::load(path)?));
            // Lives as long as the process: the watch ends with the runtime.
            drop(keys.clone().watch(
                path.clone(),
                args.keys_reload_every,
                metrics.ingest.key_reloads.clone(),
            ));
            let markets = Arc::new(plan.markets);
            let assets = Arc::new(crate::assets(&markets)?);
            let limits = settings(args).streams;
            let hub = Arc::new(crate::streams::Hub::new(
                sources.len(),
                crate::streams::follow::Render::new(markets.clone(), assets.clone()),
                limits,
                metrics.clone(),
            ));
            let orders: Arc<dyn crate::store::OrderStore> = Arc::new(mongo.clone());
            let depth: Arc<dyn crate::processing::DepthSource> = Arc::new(redis.clone());
            crate::streams::market::Market::start(
                &hub,
                &markets,
                depth.clone(),
                crate::api::market::ticker_source(orders.clone(), depth),
            );
            let follower = crate::streams::follow::Follower::new(&markets, &assets, orders);
            let following = hub.clone();
            let follow_kafka = kafka.clone();
            // Lives as long as the process.
            drop(tokio::spawn(async move {
                if let Err(error) =
                    crate::streams::kafka::follow(follow_kafka, sources, follower, following).await
                {
                    tracing::error!(error = %format!("{error:#}"), "streams stopped following the logs");
                }
            }));
            let app = AppState {
                assets,
                markets,
                keys,
                limiter: Arc::new(crate::api::limits::RateLimiter::new(
                    settings(args).rate_limits,
                )),
                journal,
                idempotency: Arc::new(redis.clone()),
                orders: Arc::new(mongo.clone()),
                funds: Arc::new(mongo.clone()),
                deadlines: Arc::new(redis.clone()),
                depth: Arc::new(redis.clone()),
                waiters: None,
                ids: Arc::new(OrderIds::new(node, None)),
                metrics: metrics.clone(),
                settings: settings(args),
                streams: hub,
                binance: Default::default(),
            };
            // Any ingest fires any lapsed deadline: lives as long as the process.
            drop(crate::api::cancel_after::sweep(
                app.journal.clone(),
                app.deadlines.clone(),
                metrics.clone(),
                crate::CANCEL_AFTER_SWEEP,
            ));
            tracing::info!(node, "ingest order ids use node {node}");
            let streams = app.streams.clone();
            Some((
                args.api_addr,
                crate::ui::beside(api::router(app), ui),
                streams,
            ))
        }
        _ => None,
    };
    tracing::info!(role = ?plan.role, prefix = %kafka.prefix, "oms-runtime started (distributed)");
    Ok(Started {
        api,
        funds,
        processor,
        projector,
    })
}

/// A stage (funds, processor) runs blocking Kafka calls on the blocking pool, under the same
/// supervisor as the projector: after any failure (a panic included) its loop restarts with
/// backoff, rebuilding every partition from its snapshot and committed offsets.
fn spawn_stage(
    role: &'static str,
    config: StageConfig,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        // The loop polls an atomic; mirror the watch into it.
        let (stop, mut stopped) = (stop.clone(), stopped.clone());
        tokio::spawn(async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let config = Arc::new(config);
    let health = config.health.clone();
    tokio::spawn(supervise(health, role, stopped, move || {
        let (config, stop) = (config.clone(), stop.clone());
        async move {
            config.health.starting(role, "recovering partitions");
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || match role {
                "funds" => run_funds(&config, &handle, &stop),
                _ => run_processor(&config, &handle, &stop),
            })
            .await?
        }
    }))
}
