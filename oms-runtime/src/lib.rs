//! The OMS pod binary's library: HTTP order API, journal, processing and read projection.
//!
//! `main` parses the configuration and calls [`serve`]; tests build the same pieces with
//! [`Runtime::start`] and drive [`api::router`] without a socket.

pub mod admin;
pub mod api;
pub mod auth;
pub mod binance;
pub mod config;
pub mod distributed;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod processing;
pub mod server;
pub mod store;
pub mod streams;
pub mod ui;

use anyhow::Context;
use api::{AppState, Market, Settings};
use config::ServeArgs;
use oms_core::{Instrument, InstrumentSpec, RiskLimits, Symbol};
use processing::Pipeline;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::embedded::Embedded;

/// How often cancel-after deadlines are looked at: the most a lapsed one waits.
pub const CANCEL_AFTER_SWEEP: Duration = Duration::from_millis(250);
/// How often expired idempotency keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The instruments of the quick start.
pub fn default_instruments() -> Vec<InstrumentSpec> {
    let spec = |symbol: &str, base: &str, lot: Decimal, max: i64, max_price: i64| InstrumentSpec {
        symbol: symbol.into(),
        base: base.into(),
        quote: "USDT".into(),
        tick_size: Decimal::new(1, 2),
        lot_size: lot,
        min_quantity: lot,
        max_quantity: Decimal::from(max),
        min_notional: Decimal::from(5),
        price_band_percent: None,
        max_price: Some(Decimal::from(max_price)),
        reference_price: None,
        maker_fee_bps: 10,
        taker_fee_bps: 10,
        status: oms_core::InstrumentStatus::Trading,
    };
    vec![
        spec("BTC-USDT", "BTC", Decimal::new(1, 5), 100, 10_000_000),
        spec("ETH-USDT", "ETH", Decimal::new(1, 4), 1000, 1_000_000),
    ]
}

/// Reads an instruments file (a JSON array of instrument specs).
pub fn load_instruments(path: &Path) -> anyhow::Result<Vec<InstrumentSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read instruments file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "instruments file {} is not a JSON array of instruments",
            path.display()
        )
    })
}

/// Validates instruments and scales the risk limits for each.
pub fn markets(
    specs: Vec<InstrumentSpec>,
    limits: &RiskLimits,
) -> anyhow::Result<BTreeMap<Symbol, Market>> {
    let mut markets = BTreeMap::new();
    for spec in specs {
        let instrument = Instrument::new(spec)?;
        let checks = oms_core::Checks::new(&instrument, limits)
            .with_context(|| format!("risk limits for {}", instrument.symbol()))?;
        let symbol = instrument.symbol().clone();
        if markets
            .insert(symbol.clone(), Market { instrument, checks })
            .is_some()
        {
            anyhow::bail!("instrument {symbol} is configured twice");
        }
    }
    anyhow::ensure!(!markets.is_empty(), "no instruments configured");
    Ok(markets)
}

/// The assets of the configured instruments, with their decimals.
pub fn assets(markets: &BTreeMap<Symbol, Market>) -> anyhow::Result<oms_core::funds::Assets> {
    Ok(oms_core::funds::Assets::new(
        markets.values().map(|market| &market.instrument),
    )?)
}

/// Everything a running single-node OMS is made of.
pub struct Runtime {
    /// Handler state.
    pub app: AppState,
    /// Admin state.
    pub admin: admin::AdminState,
    /// The store.
    pub store: Embedded,
    pipeline: Pipeline,
    sweeper: tokio::task::JoinHandle<()>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    deadlines: tokio::task::JoinHandle<()>,
    market: Arc<streams::market::Market>,
}

/// What [`Runtime::start`] needs.
pub struct RuntimeConfig {
    /// Database file.
    pub database: std::path::PathBuf,
    /// Most bytes of the database's pages kept in memory.
    pub database_cache_bytes: usize,
    /// Instruments with limits.
    pub markets: BTreeMap<Symbol, Market>,
    /// Risk limits (for the books).
    pub limits: RiskLimits,
    /// API keys.
    pub keys: auth::ApiKeys,
    /// The keys file to watch for changes, and how often.
    pub keys_file: Option<(std::path::PathBuf, Duration)>,
    /// Idempotency key lifetime.
    pub idempotency_ttl: Duration,
    /// API limits.
    pub settings: Settings,
    /// Commands per book between snapshots.
    pub snapshot_every: u64,
    /// Fault injection for tests: the projection is never written.
    pub hold_projection: bool,
    /// Order id node.
    pub node_id: u16,
}

impl Runtime {
    /// Opens the store, restores the books and starts processing.
    pub async fn start(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let metrics = Arc::new(metrics::Metrics::new());
        let store = Embedded::open(
            &config.database,
            config.idempotency_ttl,
            config.database_cache_bytes,
            metrics.store.clone(),
        )
        .with_context(|| format!("cannot open database {}", config.database.display()))?;
        let instruments: Vec<Instrument> = config
            .markets
            .values()
            .map(|market| market.instrument.clone())
            .collect();
        let journal: Arc<dyn store::Journal> = Arc::new(store.clone());
        let orders: Arc<dyn store::OrderStore> = Arc::new(store.clone());
        let markets = Arc::new(config.markets);
        let assets = Arc::new(assets(&markets)?);
        // One source, the journal; what it held at start is replayed, not streamed again.
        let hub = Arc::new(streams::Hub::new(
            1,
            streams::follow::Render::new(markets.clone(), assets.clone()),
            config.settings.streams.clone(),
            metrics.clone(),
        ));
        hub.start_source(0, store.head());
        let follower = streams::follow::Follower::new(&markets, &assets, orders.clone());
        let pipeline = Pipeline::start(
            &instruments,
            &config.limits,
            Arc::new(store.clone()),
            orders.clone(),
            store.engine_snapshot()?,
            processing::local::Options {
                snapshot_every: config.snapshot_every,
                hold_projection: config.hold_projection,
                streams: Some(processing::local::Streams {
                    follower,
                    hub: hub.clone(),
                }),
            },
            metrics.clone(),
        )
        .await?;
        let market = streams::market::Market::start(
            &hub,
            &markets,
            pipeline.books.clone(),
            api::market::ticker_source(orders.clone(), pipeline.books.clone()),
        );
        let floor = store.last_id()?;
        let keys = Arc::new(auth::KeyRing::new(config.keys));
        let watcher = config.keys_file.map(|(path, every)| {
            keys.clone()
                .watch(path, every, metrics.ingest.key_reloads.clone())
        });
        let app = AppState {
            assets,
            markets,
            keys: keys.clone(),
            limiter: Arc::new(api::limits::RateLimiter::new(config.settings.rate_limits)),
            journal,
            idempotency: Arc::new(store.clone()),
            orders: orders.clone(),
            funds: Arc::new(store.clone()),
            deadlines: Arc::new(store.clone()),
            depth: pipeline.books.clone(),
            waiters: Some(pipeline.waiters.clone()),
            ids: Arc::new(ids::OrderIds::new(config.node_id, floor)),
            metrics: metrics.clone(),
            settings: config.settings,
            streams: hub,
            binance: Default::default(),
        };
        let deadlines = api::cancel_after::sweep(
            app.journal.clone(),
            app.deadlines.clone(),
            metrics.clone(),
            CANCEL_AFTER_SWEEP,
        );
        let health = health::Health::new(metrics.clone());
        health.probe(
            "store",
            health::probe(orders, |orders: Arc<dyn store::OrderStore>| {
                Box::pin(async move { orders.ping().await })
            }),
        );
        let admin = admin::AdminState {
            metrics,
            health,
            draining: Arc::new(AtomicBool::new(false)),
        };
        let sweeping = store.clone();
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                every.tick().await;
                match sweeping.sweep().await {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "expired idempotency keys removed"),
                    Err(error) => tracing::warn!(%error, "idempotency sweep failed"),
                }
            }
        });
        Ok(Runtime {
            app,
            admin,
            store,
            pipeline,
            sweeper,
            watcher,
            deadlines,
            market,
        })
    }

    /// Stops processing and waits until every write handed to the store is committed.
    pub async fn stop(self) {
        self.sweeper.abort();
        self.deadlines.abort();
        self.market.stop();
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
        self.pipeline.shutdown().await;
        let Runtime {
            app, admin, store, ..
        } = self;
        drop(app);
        drop(admin);
        store.close().await;
    }
}

/// Loads the keys file, or on a first start creates one with a bootstrap key and prints it;
/// says whether it did.
fn api_keys(args: &ServeArgs) -> anyhow::Result<(auth::ApiKeys, bool)> {
    if let Some(path) = &args.api_keys_file {
        return Ok((auth::ApiKeys::load(path)?, false));
    }
    let path = args.data_dir.join("api-keys.json");
    let first = !path.exists();
    if first {
        let scopes = vec![auth::Scope::Read, auth::Scope::Trade, auth::Scope::Funds];
        let key = auth::add_key(
            &path,
            "bootstrap",
            args.bootstrap_accounts.clone(),
            scopes,
            None,
        )?;
        println!(
            "\nCreated API key \"bootstrap\" for accounts {}. It is shown only this once:\n\n    {key}\n\n\
             Its hash is in {}. Use it as: Authorization: Bearer {key}\n",
            args.bootstrap_accounts.join(", "),
            path.display(),
        );
        if args.binance_api {
            let binance = auth::add_binance(&path, "bootstrap")?;
            println!(
                "For Binance-compatible tools (/api/v3, docs/binance.md; trading account {}):\n\n    \
                 API key: {}\n    secret:  {}\n",
                args.bootstrap_accounts.first().map_or("", String::as_str),
                binance.api_key,
                binance.secret,
            );
        }
    }
    Ok((auth::ApiKeys::load(&path)?, first))
}

/// On a first start, journals the demo deposits of `--bootstrap-deposit` into the bootstrap
/// accounts, so the quick start trades at once. Journaled like any deposit: in the ledger,
/// replayed after a restart, never twice (the journal is empty only once).
async fn bootstrap_deposits(runtime: &Runtime, args: &ServeArgs) -> anyhow::Result<()> {
    let deposits = args.bootstrap_deposits()?;
    if runtime.store.head() != 0 || deposits.is_empty() {
        return Ok(());
    }
    let app = &runtime.app;
    let mut done = Vec::new();
    for (asset, amount) in deposits {
        let units = app
            .assets
            .amount(&asset, amount)
            .map_err(|reject| anyhow::anyhow!("--bootstrap-deposit {asset}={amount}: {reject}"))?;
        for account in &args.bootstrap_accounts {
            let transfer = oms_core::Transfer {
                transfer_id: app.ids.next().0,
                account: account.as_str().into(),
                asset: asset.as_str().into(),
                amount: units,
            };
            let entry = store::JournalEntry {
                command: oms_core::Command {
                    ts: api::handlers::now(),
                    action: oms_core::Action::Deposit(transfer),
                },
                origin: store::Origin {
                    principal: "bootstrap".into(),
                    key: format!("bootstrap-deposit-{account}-{asset}"),
                    fingerprint: "bootstrap".into(),
                },
            };
            app.journal.append(entry).await?;
        }
        done.push(format!("{amount} {asset}"));
    }
    println!(
        "Deposited {} into each of {} (demo funds; --bootstrap-deposit none to start empty).\n",
        done.join(", "),
        args.bootstrap_accounts.join(", ")
    );
    Ok(())
}

/// Runs the OMS until SIGTERM or Ctrl-C: single-node without Kafka, else the roles chosen.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    raise_open_files_limit();
    let connections = args.connections.limits(server::open_files_limit());
    if args.kafka.bootstrap.is_some() {
        return distributed::serve(args, connections).await;
    }
    anyhow::ensure!(
        args.role == config::Role::All,
        "--role {:?} needs --kafka-bootstrap: single-node mode runs every role in one process",
        args.role
    );
    anyhow::ensure!(
        args.redis.url.is_none() && args.mongo.url.is_none(),
        "--redis-url and --mongo-url need --kafka-bootstrap (single-node mode uses its embedded store)"
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let limits = args.risk.limits();
    // Checked on every start, used on the first: a typo is an error, not a surprise later.
    args.bootstrap_deposits()?;
    let ui = ui::of(&args)?;
    let (keys, first_start) = api_keys(&args)?;
    let keys_file = args
        .api_keys_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("api-keys.json"));
    let runtime = Runtime::start(RuntimeConfig {
        database: args.data_dir.join("oms.redb"),
        database_cache_bytes: args.projection_cache_mib << 20,
        markets: markets(instrument_specs(&args)?, &limits)?,
        limits,
        keys,
        keys_file: Some((keys_file, args.keys_reload_every)),
        idempotency_ttl: args.idempotency_ttl,
        settings: settings(&args),
        snapshot_every: args.snapshot_every,
        hold_projection: args.fault_hold_projection,
        node_id: args.node_id,
    })
    .await?;
    if first_start {
        bootstrap_deposits(&runtime, &args).await?;
    }
    tracing::info!(
        instruments = runtime.app.markets.len(),
        journal_head = runtime.store.head(),
        "oms-runtime starting (single-node)"
    );
    // Ready only once the API port is open (`serve_api`).
    runtime.admin.health.starting("api", "opening the API port");
    let admin = admin::AdminServer::start(
        args.admin_addr,
        runtime.admin.clone(),
        server::Limits::admin(&connections),
    )
    .await?;
    let api = Some((
        args.api_addr,
        ui::beside(api::router(runtime.app.clone()), ui),
        runtime.app.streams.clone(),
    ));
    if args.ui_dir.is_some() {
        println!(
            "The trading UI: open {} in a browser.\n",
            ui::url(args.api_addr)
        );
    }
    serve_api(api, &runtime.admin, &connections).await?;
    admin.stop().await;
    runtime.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The instruments: the file's, or the quick start's.
pub fn instrument_specs(args: &ServeArgs) -> anyhow::Result<Vec<InstrumentSpec>> {
    match &args.instruments_file {
        Some(path) => load_instruments(path),
        None => Ok(default_instruments()),
    }
}

/// The API's limits from the flags.
pub fn settings(args: &ServeArgs) -> Settings {
    Settings {
        max_wait: args.max_wait,
        dependency_timeout: args.dependency_timeout,
        body_timeout: args.connections.body_timeout,
        rate_limits: api::limits::Defaults {
            writes_per_second: args.rate_limit_writes,
            reads_per_second: args.rate_limit_reads,
        },
        streams: args.streams.limits(),
        binance_api: args.binance_api,
    }
}

/// Sockets are files: at a common soft limit of 1,024, a client holding idle connections could
/// exhaust them and starve the probes. The hard limit is what the platform allows.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-files limit"),
    }
}

/// Serves the API, if this process has one, until SIGTERM or Ctrl-C; then sets `draining` (so
/// readiness fails first) and drains the connections within the limits' deadline.
pub async fn serve_api(
    api: Option<(std::net::SocketAddr, axum::Router, Arc<streams::Hub>)>,
    admin: &admin::AdminState,
    limits: &server::Limits,
) -> anyhow::Result<()> {
    let draining = admin.draining.clone();
    let hub = api.as_ref().map(|(_, _, hub)| hub.clone());
    let signalled = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        draining.store(true, Ordering::Relaxed);
        // Stream clients reconnect to another pod and resume.
        if let Some(hub) = hub {
            hub.close_all(streams::Close {
                code: streams::close::GOING_AWAY,
                reason: "server shutting down: reconnect and resume",
            });
        }
    };
    let Some((addr, router, _)) = api else {
        signalled.await;
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    admin.health.connected("api");
    tracing::info!(
        api = %listener.local_addr()?,
        max_connections = limits.max_connections,
        "serving"
    );
    let metrics = admin.metrics.http.connections.clone();
    server::serve(listener, router, limits.clone(), "api", metrics, signalled).await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Sets up logging: `OMS_LOG` filter (default `info`), text or JSON.
pub fn init_tracing(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => builder.init(),
        config::LogFormat::Json => builder.json().init(),
    }
}
