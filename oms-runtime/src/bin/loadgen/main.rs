//! `oms-loadgen`: drives the order API with many concurrent connections and unique idempotency
//! keys, and prints orders/s and latency percentiles.
//!
//! `oms-loadgen bench` is the documented benchmark: it measures the HTTP layer's ceiling (a
//! bare axum handler answering a fixed 202, in its own process), then a single-node
//! `oms-runtime` at full speed and at half of that rate. `oms-loadgen pipeline` measures the
//! distributed stages without HTTP. See docs/benchmarks.md.

mod pipeline;
mod streams;

use anyhow::{Context, bail};
use axum::routing::post;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Load generator for the OMS order API.
#[derive(Parser)]
#[command(name = "oms-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The documented benchmark: HTTP ceiling, then single-node oms-runtime at full and half
    /// rate, then the bare server at the half rate (the floor)
    Bench(BenchArgs),
    /// Distributed mode without HTTP: orders written straight to the accounts topic, the funds
    /// and matching stages with 1 and 2 shards each, measured to events committed.
    Pipeline(pipeline::PipelineArgs),
    /// WebSocket subscribers (book and orders) on a single-node oms-runtime under an order flow.
    Streams(streams::StreamsArgs),
    /// Drive a running server.
    Run(RunArgs),
    /// Serve a bare handler that answers every POST /v1/orders with a fixed 202 (used by bench).
    CeilingServer {
        /// Address to listen on; the chosen port is printed on stdout.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
    },
}

#[derive(Args, Clone)]
struct Load {
    /// Concurrent connections (one request in flight on each).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to measure, after a 2 s warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    load: Load,
    /// The oms-runtime binary (default: next to this one).
    #[arg(long)]
    runtime: Option<std::path::PathBuf>,
    /// Benchmark distributed mode (`--role all` on the Kafka, Redis and MongoDB named by the
    /// OMS_TEST_* variables of `scripts/services env`) instead of single-node mode, and run
    /// Kafka's ProducerPerformance (acks=all, same record size) on the same broker.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: the role of the measured process (`all`, or `ingest` to measure the
    /// write path alone, with nothing processing the commands).
    #[arg(long, default_value = "all")]
    role: String,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    load: Load,
    /// API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// API key (Bearer).
    #[arg(long, env = "OMS_API_KEY")]
    key: String,
    /// Accounts to trade, comma separated; the key must be bound to them.
    #[arg(long, value_delimiter = ',', default_value = "alice,bob")]
    accounts: Vec<String>,
    /// Fixed request rate per second (open loop); default: as fast as the server answers.
    #[arg(long)]
    rate: Option<f64>,
}

/// What a run measured.
struct Report {
    sent: u64,
    ok: u64,
    /// Requests that started more than [`LATE`] after they were due: every connection was
    /// waiting on an answer (or the load generator on a CPU), so the latency includes a wait
    /// here, not in the server.
    late: u64,
    errors: std::collections::BTreeMap<String, u64>,
    latency: Histogram<u64>,
    elapsed: Duration,
}

impl Report {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, name: &str) {
        self.print_as(name, "orders/s");
    }

    fn print_as(&self, name: &str, unit: &str) {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<34} {:>9.0} {unit:<8}   p50 {:>6.2} ms   p99 {:>6.2} ms   p99.9 {:>6.2} ms   max {:>7.2} ms   ({} ok, {} errors{}{})",
            self.rate(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency.max() as f64 / 1000.0,
            self.ok,
            self.sent - self.ok,
            if self.late > 0 {
                format!(", {} sent over {} ms late", self.late, LATE.as_millis())
            } else {
                String::new()
            },
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(": {:?}", self.errors)
            }
        );
    }
}

/// A request that starts later than this after it was due waited in the load generator.
const LATE: Duration = Duration::from_millis(5);

/// Whether a request due at `due` and started at `started` waited in the load generator.
fn late(due: Instant, started: Instant) -> bool {
    started.saturating_duration_since(due) > LATE
}

/// Deposits far more than the bench can spend into every account, so that the funds checks
/// pass every order (they are part of what is measured).
async fn fund(target: &str, key: &str, accounts: &[String]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for account in accounts {
        for (asset, amount) in [("USDT", "1000000000000"), ("BTC", "1000000000")] {
            let response = client
                .post(format!("{target}/v1/deposits"))
                .bearer_auth(key)
                .header("idempotency-key", format!("fund-{account}-{asset}"))
                .header("content-type", "application/json")
                .header("prefer", "wait=10")
                .body(format!(
                    r#"{{"account":"{account}","asset":"{asset}","amount":"{amount}"}}"#
                ))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "deposit for {account} failed: {}",
                response.status()
            );
        }
    }
    Ok(())
}

/// What a run sends.
#[derive(Clone)]
enum Kind {
    /// `POST /v1/orders`: limit orders around 100.00 on both sides.
    Place,
    /// `PATCH /v1/orders/{id}` of these resting orders, their quantity alternating.
    Amend(Arc<Vec<String>>),
    /// `DELETE /v1/orders?account=`, the accounts in turn.
    MassCancel,
}

/// Sends orders to `target` for `load.duration` (after a 2 s warm-up that is not counted).
async fn drive(
    target: &str,
    key: &str,
    accounts: &[String],
    load: &Load,
    rate: Option<f64>,
) -> anyhow::Result<Report> {
    drive_kind(target, key, accounts, load, rate, Kind::Place).await
}

/// Sends requests of `kind` to `target` for `load.duration` (after a 2 s warm-up that is not
/// counted).
async fn drive_kind(
    target: &str,
    key: &str,
    accounts: &[String],
    load: &Load,
    rate: Option<f64>,
    kind: Kind,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{target}/v1/orders");
    let run = format!(
        "{}-{}",
        std::process::id(),
        NEXT_RUN.fetch_add(1, Ordering::Relaxed)
    );
    let next = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + load.duration;
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let (client, url, key, next) = (client.clone(), url.clone(), key.to_string(), next.clone());
        let (accounts, kind, run) = (accounts.to_vec(), kind.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("histogram");
            let (mut sent, mut ok, mut lagged) = (0u64, 0u64, 0u64);
            let mut errors = std::collections::BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                // Open loop: request i is due at start + i/rate, and its latency counts from
                // then, so a slow server cannot hide its queueing (coordinated omission).
                let due = match rate {
                    Some(rate) => start + Duration::from_secs_f64(i as f64 / rate),
                    None => Instant::now(),
                };
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                // Closed loop, a request is due when its connection is free: never late.
                let started_late = rate.is_some() && late(due, Instant::now());
                let account = &accounts[i as usize % accounts.len()];
                let request = match &kind {
                    Kind::Place => {
                        let side = if i % 2 == 0 { "buy" } else { "sell" };
                        let price = 10_000 + (i * 7919 % 200);
                        client.post(&url).body(format!(
                            r#"{{"account":"{account}","symbol":"BTC-USDT","side":"{side}","type":"limit","price":"{}.{:02}","quantity":"0.1"}}"#,
                            price / 100,
                            price % 100
                        ))
                    }
                    Kind::Amend(ids) => {
                        let id = &ids[i as usize % ids.len()];
                        let quantity = if (i as usize / ids.len()).is_multiple_of(2) { "0.2" } else { "0.1" };
                        client
                            .patch(format!("{url}/{id}"))
                            .body(format!(r#"{{"quantity":"{quantity}"}}"#))
                    }
                    Kind::MassCancel => client.delete(format!("{url}?account={account}")),
                };
                let response = request
                    .bearer_auth(&key)
                    .header("idempotency-key", format!("lg-{run}-{i}"))
                    .header("content-type", "application/json")
                    .send()
                    .await;
                let outcome = match response {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        if status.is_success() { Ok(()) } else { Err(status.as_u16().to_string()) }
                    }
                    Err(error) => Err(if error.is_timeout() { "timeout".into() } else { "connection".into() }),
                };
                if due < measure_from {
                    continue;
                }
                sent += 1;
                lagged += u64::from(started_late);
                match outcome {
                    Ok(()) => {
                        ok += 1;
                        latency.record(due.elapsed().as_micros() as u64).ok();
                    }
                    Err(kind) => *errors.entry(kind).or_insert(0) += 1,
                }
            }
            (sent, ok, lagged, errors, latency)
        }));
    }
    let mut report = Report {
        sent: 0,
        ok: 0,
        late: 0,
        errors: Default::default(),
        latency: Histogram::new(3)?,
        elapsed: load.duration,
    };
    for task in tasks {
        let (sent, ok, lagged, errors, latency) = task.await?;
        report.sent += sent;
        report.ok += ok;
        report.late += lagged;
        for (kind, n) in errors {
            *report.errors.entry(kind).or_insert(0) += n;
        }
        report.latency.add(latency)?;
    }
    Ok(report)
}

/// Tells the runs of one process apart in their idempotency keys.
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

/// Places `count` buys of `account` that rest (below the place phase's prices, within its price
/// band) and gives their ids.
async fn rest(target: &str, key: &str, account: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let mut ids = Vec::with_capacity(count);
    let batches = (0..count).collect::<Vec<_>>();
    for chunk in batches.chunks(20) {
        let orders: Vec<String> = chunk
            .iter()
            .map(|n| {
                format!(
                    r#"{{"account":"{account}","symbol":"BTC-USDT","side":"buy","type":"limit","price":"{}.{:02}","quantity":"0.1"}}"#,
                    92 + n % 5,
                    n % 100
                )
            })
            .collect();
        let response = client
            .post(format!("{target}/v1/orders/batch"))
            .bearer_auth(key)
            .header(
                "idempotency-key",
                format!("rest-{account}-{}-{}", std::process::id(), chunk[0]),
            )
            .header("content-type", "application/json")
            .body(format!(r#"{{"orders":[{}]}}"#, orders.join(",")))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "batch: {}",
            response.status()
        );
        let answer: serde_json::Value = response.json().await?;
        for result in answer["results"].as_array().into_iter().flatten() {
            let id = result["order_id"]
                .as_str()
                .context("a refused resting order")?;
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// Waits until the order is processed (the projection has it).
async fn processed(target: &str, key: &str, order_id: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = client
            .get(format!("{target}/v1/orders/{order_id}"))
            .bearer_auth(key)
            .send()
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "order {order_id} never processed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Amends and mass cancels through HTTP (single-node mode), next to placing: printed lines.
async fn bench_changes(target: &str, key: &str, load: &Load) -> anyhow::Result<Vec<String>> {
    eprintln!("resting 2,000 orders to amend ...");
    let ids = rest(target, key, "alice", 2_000).await?;
    if let Some(last) = ids.last() {
        processed(target, key, last).await?;
    }
    eprintln!("measuring amendments (PATCH /v1/orders/{{id}}) at full speed ...");
    let amend = drive_kind(
        target,
        key,
        &["alice".into()],
        load,
        None,
        Kind::Amend(Arc::new(ids)),
    )
    .await?;
    eprintln!("measuring mass cancels (DELETE /v1/orders?account=) at full speed ...");
    let mass = drive_kind(
        target,
        key,
        &["alice".into(), "bob".into()],
        load,
        None,
        Kind::MassCancel,
    )
    .await?;

    eprintln!("resting 10,000 orders, then one mass cancel of them all ...");
    let ids = rest(target, key, "bob", 10_000).await?;
    if let Some(last) = ids.last() {
        processed(target, key, last).await?;
    }
    let started = Instant::now();
    let response = reqwest::Client::new()
        .delete(format!("{target}/v1/orders?account=bob"))
        .bearer_auth(key)
        .header("idempotency-key", format!("mass-{}", std::process::id()))
        .header("prefer", "wait=60")
        .send()
        .await?;
    let elapsed = started.elapsed();
    let answer: serde_json::Value = response.json().await?;
    let canceled = answer["canceled"].as_u64().unwrap_or(0);
    let capture = |report: &Report, name: &str, unit: &str| {
        let ms = |q: f64| report.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{name:<34} {:>9.0} {unit:<8}   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} ok, {} errors)",
            report.rate(),
            ms(0.5),
            ms(0.99),
            report.ok,
            report.sent - report.ok
        )
    };
    Ok(vec![
        capture(&amend, "amend (PATCH), max", "amends/s"),
        capture(&mass, "mass cancel (DELETE), max", "cancels/s"),
        format!(
            "one mass cancel of {canceled} resting orders, Prefer: wait: {:.1} ms ({:.0} orders canceled/s)",
            elapsed.as_secs_f64() * 1000.0,
            canceled as f64 / elapsed.as_secs_f64()
        ),
    ])
}

/// A child process stopped when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Spawned {
    /// Peak resident memory (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_until_up(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not come up")
}

async fn wait_until_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..1200 {
        let answer = client.get(url).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} not ready in 60 s")
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let runtime = match args.runtime {
        Some(path) => path,
        None => me.with_file_name("oms-runtime"),
    };
    let load = &args.load;
    println!(
        "oms-loadgen bench: {} connections, {:?} measured after a 2 s warm-up, POST /v1/orders with unique Idempotency-Keys",
        load.connections, load.duration
    );

    eprintln!("measuring the bare HTTP ceiling ...");
    let bare = drive_bare(&me, load, None).await?;

    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    let scopes = vec![
        oms_runtime::auth::Scope::Read,
        oms_runtime::auth::Scope::Trade,
        oms_runtime::auth::Scope::Funds,
    ];
    // The bench measures throughput: its key's quota is far above what it can send.
    let unlimited = oms_runtime::auth::RateLimits {
        writes_per_second: Some(u32::MAX),
        reads_per_second: Some(u32::MAX),
    };
    let key = oms_runtime::auth::add_key(
        &keys,
        "loadgen",
        vec!["alice".into(), "bob".into()],
        scopes,
        Some(unlimited),
    )?;
    let (api, admin) = (free_port()?, free_port()?);
    let mut command = Command::new(&runtime);
    command
        .args(["--api-addr", &format!("127.0.0.1:{api}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--data-dir", &dir.path().display().to_string()])
        .args(["--api-keys-file", &keys.display().to_string()])
        // The bench measures the write path; its two accounts rest tens of thousands of
        // orders, far over the default open-order limit.
        .args(["--max-open-orders", "none"])
        .env("OMS_LOG", "warn")
        .stdout(Stdio::null());
    let services = args.distributed.then(Services::from_env).transpose()?;
    let prefix = format!("bench_{}", std::process::id());
    if let Some(services) = &services {
        command
            .args(["--role", &args.role])
            .args([
                "--kafka-bootstrap",
                &services.kafka,
                "--kafka-topic-prefix",
                &prefix,
            ])
            .args(["--kafka-create-topics", "--kafka-partitions", "12"])
            .args(["--redis-url", &services.redis])
            .args(["--mongo-url", &services.mongo, "--mongo-database", &prefix]);
    }
    let server = Spawned(
        command
            .spawn()
            .with_context(|| format!("cannot start {}", runtime.display()))?,
    );
    // Ready, not just up: in distributed mode the API port opens once the dependencies answer.
    wait_until_ready(&format!("http://127.0.0.1:{admin}/readyz")).await?;
    let target = format!("http://127.0.0.1:{api}");
    let accounts = ["alice".to_string(), "bob".to_string()];
    // Funds checks are part of what is measured; `--role ingest` alone has no funds stage to
    // decide a deposit.
    if services.is_none() || args.role != "ingest" {
        fund(&target, &key, &accounts).await?;
    }
    let mode = if services.is_some() {
        "distributed (Kafka + Redis)"
    } else {
        "single-node"
    };
    eprintln!("measuring oms-runtime ({mode}) at full speed ...");
    let admin_url = format!("http://127.0.0.1:{admin}/metrics");
    let before = Sample::take(&admin_url, server.0.id()).await?;
    let full = drive(&target, &key, &accounts, load, None).await?;
    let after = Sample::take(&admin_url, server.0.id()).await?;
    let writers = (services.is_none()).then(|| Writers::between(&before, &after));
    let half_rate = full.rate() / 2.0;
    eprintln!("measuring oms-runtime at half of that rate ({half_rate:.0}/s, open loop) ...");
    let half = drive(&target, &key, &accounts, load, Some(half_rate)).await?;
    let syncs = if services.is_none() {
        Some(Syncs::between(
            &after,
            &Sample::take(&admin_url, server.0.id()).await?,
        ))
    } else {
        None
    };
    let changes = match &services {
        None => bench_changes(&target, &key, load).await?,
        Some(_) => Vec::new(),
    };
    let rss = server.peak_rss_mib();
    drop(server);
    let scheduler = io_scheduler(dir.path());
    eprintln!("measuring the bare server at the half rate (the load generator's own latency) ...");
    let bare_half = drive_bare(&me, load, Some(half_rate)).await?;

    let producer = match &services {
        Some(services) => Some(producer_performance(services, &prefix, load)?),
        None => None,
    };
    println!();
    bare.print("bare axum 202 (ceiling)");
    let short = if services.is_some() {
        format!("distributed --role {}", args.role)
    } else {
        "single-node".to_string()
    };
    full.print(&format!("oms-runtime {short}, max"));
    half.print(&format!("oms-runtime at {half_rate:.0}/s (half)"));
    bare_half.print(&format!("bare axum at {half_rate:.0}/s (floor)"));
    for line in &changes {
        println!("{line}");
    }
    if let Some(line) = producer {
        println!("kafka ProducerPerformance, acks=all: {line}");
    }
    if let Some(writers) = writers {
        writers.print();
    }
    if let Some(syncs) = syncs {
        syncs.print(half_rate);
    }
    println!(
        "\noms-runtime reaches {:.0}% of the HTTP ceiling; peak memory {}",
        100.0 * full.rate() / bare.rate(),
        rss.map_or("unknown".into(), |mib| format!("{mib:.0} MiB"))
    );
    if services.is_none() && bursty_writeback() {
        println!(
            "note: this machine writes dirty pages back in bursts (vm.dirty_background_bytes is \
             0), which the journal's fsync waits behind at half rate; see docs/architecture.md, \
             \"The disk is shared\""
        );
    }
    if services.is_none() && scheduler.as_deref() == Some("none") {
        println!(
            "note: the data directory's disk has no I/O scheduler (none), so the background \
             writers' idle I/O class cannot keep their bursts from the journal's syncs; see \
             docs/architecture.md, \"The background writers yield the disk\""
        );
    }
    Ok(())
}

/// Drives the bare ceiling server (a process of this binary) as fast as it answers, or at
/// `rate`: what the HTTP layer and this load generator take without any work behind them.
async fn drive_bare(
    me: &std::path::Path,
    load: &Load,
    rate: Option<f64>,
) -> anyhow::Result<Report> {
    let port = free_port()?;
    let _ceiling = Spawned(
        Command::new(me)
            .args(["ceiling-server", "--addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the ceiling server")?,
    );
    let target = format!("http://127.0.0.1:{port}");
    wait_until_up(&target).await?;
    drive(&target, "none", &["alice".into()], load, rate).await
}

/// The I/O scheduler of the disk holding `path` (`mq-deadline`, `none`, ...), when it is a
/// block device Linux names in `/sys`.
fn io_scheduler(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let device = format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev));
    // A partition's queue is its disk's.
    let listed = std::fs::read_to_string(format!("{device}/queue/scheduler"))
        .or_else(|_| std::fs::read_to_string(format!("{device}/../queue/scheduler")))
        .ok()?;
    chosen_scheduler(&listed).map(str::to_string)
}

/// The chosen one of `/sys/block/*/queue/scheduler`: bracketed, or the only one listed.
fn chosen_scheduler(listed: &str) -> Option<&str> {
    let names: Vec<&str> = listed.split_whitespace().collect();
    let chosen = match names.iter().find(|name| name.starts_with('[')) {
        Some(bracketed) => bracketed,
        None if names.len() == 1 => names[0],
        None => return None,
    };
    Some(chosen.trim_matches(['[', ']']))
}

/// Whether Linux starts background writeback only at its default share of memory.
fn bursty_writeback() -> bool {
    std::fs::read_to_string("/proc/sys/vm/dirty_background_bytes")
        .is_ok_and(|bytes| bytes.trim() == "0")
}

/// What the server's metrics and `/proc` say at one moment.
struct Sample {
    metrics: std::collections::HashMap<String, f64>,
    /// Bytes the process caused to be written to storage (`/proc/<pid>/io` `write_bytes`).
    disk_bytes: Option<f64>,
    /// CPU seconds of the journal writer and the projection writer threads.
    journal_cpu: f64,
    projection_cpu: f64,
}

impl Sample {
    async fn take(url: &str, pid: u32) -> anyhow::Result<Sample> {
        let metrics = scrape(url).await?;
        let disk_bytes = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| {
                let line = io.lines().find(|line| line.starts_with("write_bytes:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            });
        Ok(Sample {
            metrics,
            disk_bytes,
            journal_cpu: thread_cpu(pid, "oms-journal-wri"),
            projection_cpu: thread_cpu(pid, "oms-projection-"),
        })
    }

    fn get(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(0.0)
    }
}

/// Every sample of a Prometheus metrics page, by its name with labels.
async fn scrape(url: &str) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let page = reqwest::get(url).await?.text().await?;
    Ok(page
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// CPU seconds (user and system) of the threads of `pid` named `name` (as `/proc` shows names:
/// at most 15 bytes).
fn thread_cpu(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ticks = 0.0;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesized name; utime and stime are the 14th and 15th overall.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        for index in [11, 12] {
            ticks += fields
                .get(index)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// The single-node writers' cost per acknowledged order over the full-speed run, and how far
/// processing and projection were behind the journal when it ended.
struct Writers {
    orders: f64,
    journal_cpu: f64,
    projection_cpu: f64,
    batches: f64,
    journal_busy: f64,
    journal_bytes: f64,
    fsyncs: f64,
    projection_busy: f64,
    disk_bytes: Option<f64>,
    head: f64,
    processed: f64,
    projected: f64,
}

impl Writers {
    fn between(before: &Sample, after: &Sample) -> Writers {
        let delta = |name: &str| after.get(name) - before.get(name);
        Writers {
            orders: delta("oms_store_appended_total").max(1.0),
            journal_cpu: after.journal_cpu - before.journal_cpu,
            projection_cpu: after.projection_cpu - before.projection_cpu,
            batches: delta("oms_store_commits_total"),
            journal_busy: delta("oms_store_commit_seconds_sum"),
            journal_bytes: delta("oms_store_written_bytes_total"),
            fsyncs: delta("oms_store_fsyncs_total"),
            projection_busy: delta("oms_store_projection_commit_seconds_sum"),
            disk_bytes: after.disk_bytes.zip(before.disk_bytes).map(|(a, b)| a - b),
            head: after.get("oms_store_journal_head"),
            processed: after.get("oms_processing_journal_read_position"),
            projected: after.get("oms_processing_journal_projected_position"),
        }
    }

    fn print(&self) {
        let per = |value: f64| value / self.orders;
        let cpu_us = per(self.journal_cpu) * 1e6;
        println!(
            "\njournal writer at full speed: {cpu_us:.1} µs CPU per order (so one writer could \
             acknowledge {:.0} orders/s), {:.1} µs busy per order with its fsyncs ({:.1} orders \
             per batch), {:.0} bytes and {:.3} fsyncs per order",
            1e6 / cpu_us.max(f64::MIN_POSITIVE),
            per(self.journal_busy) * 1e6,
            self.orders / self.batches.max(1.0),
            per(self.journal_bytes),
            per(self.fsyncs),
        );
        println!(
            "projection writer: {:.1} µs CPU and {:.1} µs busy per order; the process wrote {} \
             to disk per order (journal, idempotency index and its compactions, projection)",
            per(self.projection_cpu) * 1e6,
            per(self.projection_busy) * 1e6,
            self.disk_bytes
                .map_or("unknown".into(), |bytes| format!("{:.0} bytes", per(bytes))),
        );
        println!(
            "when the full-speed run ended: journal head {:.0}, processed {:.0}, projected {:.0} \
             (lag {:.0} commands)",
            self.head,
            self.processed,
            self.projected,
            self.head - self.projected
        );
    }
}

/// Where the half-rate run's time went in the server, from its histograms: whether a slow
/// acknowledgement waited on the disk (a slow sync) or on something else.
struct Syncs {
    /// From the request's enqueueing to its batch's fdatasync.
    acknowledgement: Growth,
    /// One batch's write and fdatasync.
    sync: Growth,
}

impl Syncs {
    fn between(before: &Sample, after: &Sample) -> Syncs {
        let growth = |name| Growth::between(&before.metrics, &after.metrics, name);
        Syncs {
            acknowledgement: growth("oms_ingest_journal_append_seconds"),
            sync: growth("oms_store_commit_seconds"),
        }
    }

    fn print(&self, rate: f64) {
        let show = |growth: &Growth| {
            if growth.count() <= 0.0 {
                return "unknown".to_string();
            }
            let ms = |q: f64| match growth.quantile(q) {
                Some(bound) if bound.is_finite() => format!("≤ {:.2} ms", bound * 1e3),
                _ => "beyond the last bucket".into(),
            };
            format!("p50 {}, p99 {}, slowest {}", ms(0.5), ms(0.99), ms(1.0))
        };
        println!(
            "in the server at {rate:.0}/s (histogram bucket bounds): acknowledgement, from \
             enqueueing to fdatasync, {}; one batch's write and fdatasync, {}",
            show(&self.acknowledgement),
            show(&self.sync)
        );
    }
}

/// A histogram's observations between two scrapes, as cumulative `(upper bound, count)`
/// buckets in ascending order.
struct Growth {
    buckets: Vec<(f64, f64)>,
}

impl Growth {
    /// The growth of histogram `name` between two scrapes (see [`scrape`]).
    fn between(
        before: &std::collections::HashMap<String, f64>,
        after: &std::collections::HashMap<String, f64>,
        name: &str,
    ) -> Growth {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = after
            .iter()
            .filter_map(|(key, count)| {
                let bound = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count - before.get(key).copied().unwrap_or(0.0)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Growth { buckets }
    }

    /// How many observations.
    fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, count)| *count)
    }

    /// The upper bound of the bucket quantile `q` falls in; `None` when nothing was observed.
    fn quantile(&self, q: f64) -> Option<f64> {
        let wanted = q * self.count();
        self.buckets
            .iter()
            .find(|(_, count)| *count >= wanted && *count > 0.0)
            .map(|(bound, _)| *bound)
    }
}

/// The services of `scripts/services env`.
struct Services {
    kafka: String,
    redis: String,
    mongo: String,
    kafka_home: String,
}

impl Services {
    fn from_env() -> anyhow::Result<Services> {
        let get = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set: run `eval \"$(scripts/services up)\"` first")
            })
        };
        Ok(Services {
            kafka: get("OMS_TEST_KAFKA")?,
            redis: get("OMS_TEST_REDIS")?,
            mongo: get("OMS_TEST_MONGO")?,
            kafka_home: get("OMS_KAFKA_HOME")?,
        })
    }
}

/// Kafka's own producer benchmark on the same broker, with the size of one journaled order
/// command: the raw log's ceiling. Returns its summary line.
fn producer_performance(services: &Services, prefix: &str, load: &Load) -> anyhow::Result<String> {
    let sample = oms_runtime::store::JournalEntry {
        command: oms_core::Command {
            ts: oms_core::Timestamp(1_764_000_000_000_000_000),
            action: oms_core::Action::New(oms_core::NewOrder {
                order_id: oms_core::OrderId(251_016_748_654_923_776),
                client_order_id: "251016748654923776".into(),
                account: "alice".into(),
                symbol: "BTC-USDT".into(),
                side: oms_core::Side::Buy,
                order_type: oms_core::OrderType::Limit,
                time_in_force: oms_core::TimeInForce::Gtc,
                price: Some(oms_core::Price(10_042)),
                quantity: oms_core::Quantity(10_000),
                post_only: false,
                self_trade_prevention: oms_core::SelfTradePrevention::None,
                quote_quantity: None,
            }),
        },
        origin: oms_runtime::store::Origin {
            principal: "loadgen".into(),
            key: "lg-123456-1234567".into(),
            fingerprint: "0".repeat(64),
        },
    };
    let size = postcard::to_allocvec(&sample)?.len();
    let records = (load.duration.as_secs() * 100_000).max(100_000);
    eprintln!(
        "measuring Kafka ProducerPerformance: {records} records of {size} bytes, acks=all ..."
    );
    let output = Command::new("java")
        .args([
            "-Xmx512m",
            "-cp",
            &format!("{}/libs/*", services.kafka_home),
        ])
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", &format!("{prefix}.commands")])
        .args([
            "--num-records",
            &records.to_string(),
            "--record-size",
            &size.to_string(),
        ])
        .args(["--throughput", "-1", "--producer-props"])
        .arg(format!("bootstrap.servers={}", services.kafka))
        .args([
            "acks=all",
            "enable.idempotence=true",
            "linger.ms=1",
            "compression.type=lz4",
        ])
        .output()
        .context("cannot run java (Kafka's ProducerPerformance)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let summary = text.lines().last().unwrap_or_default().trim().to_string();
    anyhow::ensure!(
        output.status.success() && !summary.is_empty(),
        "ProducerPerformance failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(summary)
}

async fn ceiling_server(addr: &str) -> anyhow::Result<()> {
    // The same work an order request costs the HTTP layer, and nothing more: read the body,
    // answer a fixed 202.
    let router = axum::Router::new().route(
        "/v1/orders",
        post(|_body: axum::body::Bytes| async {
            (
                axum::http::StatusCode::ACCEPTED,
                [("content-type", "application/json")],
                r#"{"order_id":"1","client_order_id":"1","status":"pending","position":1}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", listener.local_addr()?.port());
    axum::serve(listener, router).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Bench(args) => bench(args).await,
        Cmd::Pipeline(args) => pipeline::pipeline(args).await,
        Cmd::Streams(args) => streams::streams(args).await,
        Cmd::Run(args) => {
            let report = drive(
                &args.target,
                &args.key,
                &args.accounts,
                &args.load,
                args.rate,
            )
            .await?;
            report.print(&args.target);
            Ok(())
        }
        Cmd::CeilingServer { addr } => ceiling_server(&addr).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_late_once_it_starts_over_5_ms_after_it_was_due() {
        let due = Instant::now();
        assert!(!late(due, due));
        assert!(!late(due, due + Duration::from_millis(5)));
        assert!(late(due, due + Duration::from_millis(6)));
        assert!(
            !late(due + Duration::from_millis(1), due),
            "early is not late"
        );
    }

    fn growth(buckets: &[(f64, f64)]) -> Growth {
        Growth {
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn a_growth_reads_the_bucket_each_quantile_falls_in() {
        let grown = growth(&[(0.001, 10.0), (0.002, 95.0), (0.004, 99.0), (0.008, 100.0)]);
        assert_eq!(
            [0.5, 0.99, 1.0].map(|q| grown.quantile(q)),
            [Some(0.002), Some(0.004), Some(0.008)]
        );
        assert_eq!(
            growth(&[(0.001, 0.0), (f64::INFINITY, 0.0)]).quantile(0.5),
            None
        );
        assert_eq!(growth(&[]).quantile(0.5), None);
    }

    #[test]
    fn a_growth_counts_only_what_came_between_the_scrapes() {
        let scrape = |counts: [(&str, f64); 3]| {
            counts
                .iter()
                .map(|(le, count)| (format!("x_seconds_bucket{{le=\"{le}\"}}"), *count))
                .collect()
        };
        let before = scrape([("0.001", 50.0), ("0.1", 60.0), ("+Inf", 60.0)]);
        let after = scrape([("0.001", 150.0), ("0.1", 160.0), ("+Inf", 160.0)]);
        let grown = Growth::between(&before, &after, "x_seconds");
        assert_eq!(
            (grown.quantile(0.99), grown.quantile(1.0)),
            (Some(0.001), Some(0.001))
        );
    }

    #[test]
    fn the_chosen_scheduler_is_the_bracketed_one_or_the_only_one() {
        assert_eq!(
            chosen_scheduler("none [mq-deadline] kyber bfq\n"),
            Some("mq-deadline")
        );
        assert_eq!(chosen_scheduler("[none] mq-deadline\n"), Some("none"));
        assert_eq!(chosen_scheduler("none\n"), Some("none"));
        assert_eq!(chosen_scheduler("none mq-deadline\n"), None);
        assert_eq!(chosen_scheduler(""), None);
    }

    #[test]
    fn a_block_device_names_its_scheduler_and_proc_names_none() {
        assert_eq!(io_scheduler(std::path::Path::new("/proc")), None);
        // A disk-backed root lists one; a tmpfs or overlay root (some containers) has none.
        if let Some(name) = io_scheduler(std::path::Path::new("/")) {
            assert!(!name.is_empty() && !name.contains(['[', ']']), "{name:?}");
        }
    }
}
