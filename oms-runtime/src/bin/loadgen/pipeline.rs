//! `oms-loadgen pipeline`: the distributed pipeline's throughput without HTTP.
//!
//! For each shard count: a fresh topic prefix; deposits and then `--orders` orders written
//! straight to the accounts topic as an ingest would write them (idempotent producer,
//! `acks=all`); then the funds and matching stages started as separate processes with that many
//! shards each. Measured from the moment every stage is ready: how long until the events topic
//! holds every order (read committed), and until the funds stage has settled every trade; the
//! CPU each stage and the broker spent per order.

use super::{Load, Services, Spawned, free_port, producer_performance};
use anyhow::{Context, bail};
use clap::Args;
use oms_core::{
    Action, Command as OmsCommand, NewOrder, OrderId, OrderType, Price, Quantity,
    SelfTradePrevention, Side, TimeInForce, Timestamp, Transfer,
};
use oms_runtime::store::kafka::{KafkaConfig, create_topics, encode_client_command, partition_of};
use oms_runtime::store::{JournalEntry, Origin};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct PipelineArgs {
    /// Orders per run (after one deposit of each asset per account).
    #[arg(long, default_value_t = 100_000)]
    orders: u64,
    /// Shards per stage, one run each, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    shards: Vec<u32>,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// Accounts the orders are spread over.
    #[arg(long, default_value_t = 64)]
    accounts: usize,
    /// The oms-runtime binary (default: next to this one).
    #[arg(long)]
    runtime: Option<std::path::PathBuf>,
}

/// The accounts topic's input: deposits, then orders of both sides of both default
/// instruments around one price, so that about half trade.
fn inputs(args: &PipelineArgs) -> Vec<JournalEntry> {
    let account = |n: u64| format!("acct-{:03}", n as usize % args.accounts);
    let origin = |n: u64| Origin {
        principal: "pipeline".into(),
        key: format!("p-{n}"),
        fingerprint: "0".repeat(64),
    };
    let mut entries = Vec::new();
    let mut id = 1_000_000u64;
    for n in 0..args.accounts as u64 {
        for asset in ["USDT", "BTC", "ETH"] {
            id += 1;
            entries.push(JournalEntry {
                command: OmsCommand {
                    ts: Timestamp(id),
                    action: Action::Deposit(Transfer {
                        transfer_id: id,
                        account: account(n).into(),
                        asset: asset.into(),
                        // in each asset's units: far more than the run can spend
                        amount: 1_000_000_000_000_000,
                    }),
                },
                origin: origin(id),
            });
        }
    }
    for n in 0..args.orders {
        id += 1;
        // BTC-USDT: tick 0.01, lot 0.00001; ETH-USDT: tick 0.01, lot 0.0001; 0.1 of either
        let (symbol, quantity) = if n.is_multiple_of(3) {
            ("ETH-USDT", 1_000)
        } else {
            ("BTC-USDT", 10_000)
        };
        let side = if n.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 10_000 + (n * 7) % 300;
        entries.push(JournalEntry {
            command: OmsCommand {
                ts: Timestamp(id),
                action: Action::New(NewOrder {
                    order_id: OrderId(id),
                    client_order_id: id.to_string().into(),
                    account: account(n / 2).into(),
                    symbol: symbol.into(),
                    side,
                    order_type: OrderType::Limit,
                    time_in_force: TimeInForce::Gtc,
                    price: Some(Price(price)),
                    quantity: Quantity(quantity),
                    post_only: false,
                    self_trade_prevention: SelfTradePrevention::None,
                    quote_quantity: None,
                }),
            },
            origin: origin(id),
        });
    }
    entries
}

/// Writes `entries` to the accounts topic as the ingest does; gives the records per second.
async fn produce(config: &KafkaConfig, entries: &[JournalEntry]) -> anyhow::Result<f64> {
    let producer: FutureProducer = config
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let topic = config.accounts();
    let partitions = oms_runtime::store::kafka::partitions(config, &topic).await?;
    let started = Instant::now();
    for chunk in entries.chunks(10_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for entry in chunk {
            let account = entry.command.action.account().to_string();
            let payload = encode_client_command(entry, None)?;
            let partition = partition_of(&account, partitions) as i32;
            let producer = producer.clone();
            let topic = topic.clone();
            pending.push(async move {
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .partition(partition)
                            .key(&account)
                            .payload(&payload),
                        Timeout::Never,
                    )
                    .await
                    .map_err(|(error, _)| error)
            });
        }
        for result in futures::future::join_all(pending).await {
            result?;
        }
    }
    Ok(entries.len() as f64 / started.elapsed().as_secs_f64())
}

/// Committed records of `topic` up to its end now.
fn count(config: &KafkaConfig, topic: &str, partitions: u32) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = config
        .client()
        .set("group.id", format!("{}.bench-counter", config.prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("fetch.max.bytes", "52428800")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition as i32, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let (mut records, mut finished) = (0u64, std::collections::BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while finished.len() < partitions as usize {
        if Instant::now() > deadline {
            bail!("could not read {topic} to its end");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => records += 1,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                finished.insert(partition);
            }
            Some(Err(error)) => return Err(error.into()),
            None => {}
        }
    }
    Ok(records)
}

/// CPU seconds (user and system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// The broker's process (the Kafka of `scripts/services`), if it runs here.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains("kafka.Kafka")
                .then_some(pid)
        })
}

/// One stage process and its admin address.
struct Stage {
    role: &'static str,
    process: Spawned,
    admin: String,
}

async fn ready(admin: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = client.get(format!("{admin}/readyz")).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{admin} not ready in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A counter summed over the stages of `role`.
async fn metric(stages: &[Stage], role: &str, name: &str) -> f64 {
    let mut sum = 0.0;
    for stage in stages.iter().filter(|s| s.role == role) {
        let Ok(page) = reqwest::get(format!("{}/metrics", stage.admin)).await else {
            continue;
        };
        let Ok(text) = page.text().await else {
            continue;
        };
        sum += text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    sum
}

struct Run {
    shards: u32,
    produced: f64,
    events_rate: f64,
    settled_rate: f64,
    cpu: Vec<(&'static str, f64)>,
    broker_cpu: Option<f64>,
    /// Per stage: transactions committed, and the broker's time to commit them (seconds).
    transactions: Vec<(&'static str, f64, f64)>,
}

/// Transactions committed by the stages of `role`, and the seconds their commits took.
async fn transactions(stages: &[Stage], role: &'static str) -> (f64, f64) {
    let count = metric(
        stages,
        role,
        &format!("oms_processing_transactions_total{{role=\"{role}\"}}"),
    )
    .await;
    let seconds = metric(
        stages,
        role,
        &format!("oms_processing_transaction_commit_seconds_sum{{role=\"{role}\"}}"),
    )
    .await;
    (count, seconds)
}

async fn run(
    args: &PipelineArgs,
    services: &Services,
    runtime: &std::path::Path,
    shards: u32,
) -> anyhow::Result<Run> {
    let prefix = format!("pipe_{}_{shards}", std::process::id());
    let config = KafkaConfig {
        bootstrap: services.kafka.clone(),
        prefix: prefix.clone(),
        properties: Vec::new(),
        timeout: Duration::from_secs(10),
    };
    create_topics(&config, args.partitions, 1).await?;
    let entries = inputs(args);
    eprintln!(
        "{shards} shard(s) per stage: writing {} records to {} ...",
        entries.len(),
        config.accounts()
    );
    let produced = produce(&config, &entries).await?;

    let mut stages = Vec::new();
    for role in ["funds", "processor"] {
        for shard in 0..shards {
            let admin = free_port()?;
            let process = Command::new(runtime)
                .args(["--role", role])
                .args([
                    "--shards",
                    &shards.to_string(),
                    "--shard",
                    &shard.to_string(),
                ])
                .args(["--kafka-bootstrap", &services.kafka])
                .args(["--kafka-topic-prefix", &prefix])
                .args(["--redis-url", &services.redis])
                .args(["--mongo-url", &services.mongo, "--mongo-database", &prefix])
                .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
                .args(["--api-addr", &format!("127.0.0.1:{}", free_port()?)])
                .args(["--max-open-orders", "none"])
                .env("OMS_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", runtime.display()))?;
            stages.push(Stage {
                role,
                process: Spawned(process),
                admin: format!("http://127.0.0.1:{admin}"),
            });
        }
    }
    for stage in &stages {
        ready(&stage.admin).await?;
    }
    let broker = broker_pid();
    let cpu_before: Vec<f64> = stages
        .iter()
        .map(|s| cpu_seconds(s.process.0.id()))
        .collect();
    let broker_before = broker.map(cpu_seconds);
    let mut transactions_before = Vec::new();
    for role in ["funds", "processor"] {
        transactions_before.push((role, transactions(&stages, role).await));
    }
    let started = Instant::now();
    eprintln!(
        "  stages ready; waiting for {} orders' events ...",
        args.orders
    );
    loop {
        let events = metric(&stages, "processor", "oms_processing_commands_total").await;
        if events >= args.orders as f64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the stages processed {events} of {} orders", args.orders);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_events = started.elapsed();
    // Every settlement is written with its events: the accounts topic is complete now.
    let (counting, topic) = (config.clone(), config.accounts());
    let partitions = args.partitions;
    let records =
        tokio::task::spawn_blocking(move || count(&counting, &topic, partitions)).await??;
    loop {
        let folded = metric(&stages, "funds", "oms_processing_funds_records_total").await;
        if folded >= records as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_settled = started.elapsed();
    let cpu = stages
        .iter()
        .zip(cpu_before)
        .map(|(s, before)| (s.role, cpu_seconds(s.process.0.id()) - before))
        .collect();
    let broker_cpu = broker
        .zip(broker_before)
        .map(|(pid, b)| cpu_seconds(pid) - b);
    let mut committed = Vec::new();
    for (role, (count, seconds)) in transactions_before {
        let (count_after, seconds_after) = transactions(&stages, role).await;
        committed.push((role, count_after - count, seconds_after - seconds));
    }
    // The commands written before the stages were ready count too: the events rate is the
    // backlog over the time to drain it.
    let orders = args.orders as f64;
    Ok(Run {
        shards,
        produced,
        events_rate: orders / to_events.as_secs_f64(),
        settled_rate: orders / to_settled.as_secs_f64(),
        cpu,
        broker_cpu,
        transactions: committed,
    })
}

pub async fn pipeline(args: PipelineArgs) -> anyhow::Result<()> {
    let services = Services::from_env()?;
    let runtime = match &args.runtime {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("oms-runtime"),
    };
    println!(
        "oms-loadgen pipeline: {} orders of {} accounts on BTC-USDT and ETH-USDT, {} partitions, \
         written to the accounts topic before the stages start",
        args.orders, args.accounts, args.partitions
    );
    let mut runs = Vec::new();
    for &shards in &args.shards {
        runs.push(run(&args, &services, &runtime, shards).await?);
    }
    let load = Load {
        connections: 1,
        duration: Duration::from_secs(10),
    };
    let producer =
        producer_performance(&services, &format!("pipe_{}_1", std::process::id()), &load)?;
    println!();
    for run in &runs {
        let orders = args.orders as f64;
        let per_order = |role: &str| {
            run.cpu
                .iter()
                .filter(|(r, _)| *r == role)
                .map(|(_, cpu)| cpu)
                .sum::<f64>()
                / orders
                * 1e6
        };
        println!(
            "{} shard(s) per stage: {:>7.0} orders/s to events committed, {:>7.0} orders/s to every \
             trade settled (input written at {:.0} records/s)",
            run.shards, run.events_rate, run.settled_rate, run.produced
        );
        println!(
            "    CPU per order: funds {:.1} µs, matching {:.1} µs, broker {}",
            per_order("funds"),
            per_order("processor"),
            run.broker_cpu.map_or("unknown".into(), |cpu| format!(
                "{:.1} µs",
                cpu / orders * 1e6
            ))
        );
        for (role, count, seconds) in &run.transactions {
            let stage = if *role == "processor" {
                "matching"
            } else {
                role
            };
            println!(
                "    {stage}: {count:.0} transactions, {:.0} orders per transaction, commits \
                 {:.1} ms each on average ({:.1} s of commits over all partitions)",
                orders / count.max(1.0),
                seconds / count.max(1.0) * 1e3,
                seconds
            );
        }
    }
    println!("kafka ProducerPerformance, acks=all: {producer}");
    Ok(())
}
