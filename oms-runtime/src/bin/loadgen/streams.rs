//! `oms-loadgen streams`: many WebSocket subscribers on a single-node runtime under a steady
//! order flow. Each connection subscribes to the book of BTC-USDT and to the orders of an account
//! of its own (the flow's orders are spread over those accounts). Prints the order throughput
//! and latency with and without the subscribers, the time from an order's acceptance to its
//! update reaching a client, the server's commit-to-write delay, frames per second, and memory
//! per connection.

use super::{Growth, Load, Report, Spawned, drive, free_port, scrape, wait_until_ready};
use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use oms_runtime::streams::client::StreamClient;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

#[derive(Args)]
pub struct StreamsArgs {
    /// WebSocket connections, each with the book and one account's orders.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Orders per second (open loop), with and without the subscribers.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to measure each run, after a 2 s warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The oms-runtime binary (default: next to this one).
    #[arg(long)]
    runtime: Option<std::path::PathBuf>,
}

/// What the readers counted.
#[derive(Default)]
struct Counts {
    orders: AtomicU64,
    books: AtomicU64,
    other: AtomicU64,
}

pub async fn streams(args: StreamsArgs) -> anyhow::Result<()> {
    raise_open_files();
    let runtime = match args.runtime {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("oms-runtime"),
    };
    println!(
        "oms-loadgen streams: {} WebSocket connections (book BTC-USDT + one account's orders \
         each), {} orders/s for {:?} after a 2 s warm-up, single-node",
        args.subscribers, args.rate, args.duration
    );
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    let accounts: Vec<String> = (0..args.subscribers.max(2))
        .map(|i| format!("acct-{i:05}"))
        .collect();
    let key = oms_runtime::auth::add_key(
        &keys,
        "streams",
        accounts.clone(),
        vec![
            oms_runtime::auth::Scope::Read,
            oms_runtime::auth::Scope::Trade,
            oms_runtime::auth::Scope::Funds,
        ],
        Some(oms_runtime::auth::RateLimits {
            writes_per_second: Some(u32::MAX),
            reads_per_second: Some(u32::MAX),
        }),
    )?;
    let (api, admin) = (free_port()?, free_port()?);
    let many = (args.subscribers * 4).to_string();
    let server = Spawned(
        Command::new(&runtime)
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--data-dir", &dir.path().display().to_string()])
            .args(["--api-keys-file", &keys.display().to_string()])
            .args(["--max-open-orders", "none"])
            .args(["--stream-connections-per-key", &many])
            .args(["--stream-subscriptions-per-key", &many])
            .args(["--stream-connections", &many])
            .env("OMS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", runtime.display()))?,
    );
    wait_until_ready(&format!("http://127.0.0.1:{admin}/readyz")).await?;
    let target = format!("http://127.0.0.1:{api}");
    eprintln!("funding {} accounts ...", accounts.len());
    let mut funding = Vec::new();
    for chunk in accounts.chunks(accounts.len().div_ceil(16)) {
        let (target, key, chunk) = (target.clone(), key.clone(), chunk.to_vec());
        funding.push(tokio::spawn(async move {
            super::fund(&target, &key, &chunk).await
        }));
    }
    for task in funding {
        task.await??;
    }
    let load = Load {
        connections: 64,
        duration: args.duration,
    };
    eprintln!("orders without subscribers ...");
    let alone = drive(&target, &key, &accounts, &load, Some(args.rate)).await?;

    let rss_before = rss_mib(server.0.id());
    eprintln!("opening {} connections ...", args.subscribers);
    let url = format!("ws://127.0.0.1:{api}/v1/ws");
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut readers = Vec::new();
    for (i, account) in accounts.iter().take(args.subscribers).enumerate() {
        let (mut client, _) = StreamClient::connect(&url, &key)
            .await
            .with_context(|| format!("connection {i}"))?;
        client.subscribe("book", "BTC-USDT", None).await?;
        client.subscribe("orders", account, None).await?;
        let (recording, stop, counts) = (recording.clone(), stop.clone(), counts.clone());
        readers.push(tokio::spawn(read(client, recording, stop, counts)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = rss_mib(server.0.id());
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    let delay_before = scrape(&metrics_url).await?;
    eprintln!("orders with the subscribers ...");
    let warmup = tokio::spawn({
        let recording = recording.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            recording.store(true, Ordering::Relaxed);
        }
    });
    let with = drive(&target, &key, &accounts, &load, Some(args.rate)).await?;
    recording.store(false, Ordering::Relaxed);
    warmup.await?;
    let delay_after = scrape(&metrics_url).await?;
    // Updates still in flight arrive; then the readers stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new(3)?;
    for reader in readers {
        latency.add(reader.await?)?;
    }
    let peak = server.peak_rss_mib();
    drop(server);

    println!();
    print_run(&alone, "orders, no subscribers");
    print_run(&with, &format!("orders, {} subscribers", args.subscribers));
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "order accepted → update received   p50 {:>6.2} ms   p99 {:>6.2} ms   p99.9 {:>6.2} ms   \
         max {:>7.2} ms   ({} updates)",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0,
        latency.len()
    );
    let delay = Growth::between(&delay_before, &delay_after, "oms_stream_delay_seconds");
    println!(
        "commit → frame written (server)    p50 ≤ {} p99 ≤ {} p99.9 ≤ {}   ({} frames)",
        delay_quantile(&delay, 0.5),
        delay_quantile(&delay, 0.99),
        delay_quantile(&delay, 0.999),
        delay.count()
    );
    let seconds = args.duration.as_secs_f64() + 3.0;
    println!(
        "frames received: {:.0}/s ({} order, {} book, {} other over the run)",
        (counts.orders.load(Ordering::Relaxed)
            + counts.books.load(Ordering::Relaxed)
            + counts.other.load(Ordering::Relaxed)) as f64
            / seconds,
        counts.orders.load(Ordering::Relaxed),
        counts.books.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
    );
    if let (Some(before), Some(connected)) = (rss_before, rss_connected) {
        println!(
            "memory: {before:.0} MiB before the connections, {connected:.0} MiB with them \
             ({:.1} KiB per connection); peak {}",
            (connected - before) * 1024.0 / args.subscribers.max(1) as f64,
            peak.map_or("unknown".into(), |mib| format!("{mib:.0} MiB"))
        );
    }
    Ok(())
}

fn print_run(report: &Report, name: &str) {
    report.print(name);
}

/// Reads one connection until `stop`, timing order updates from their `updated_at`.
async fn read(
    mut client: StreamClient,
    recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> Histogram<u64> {
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    while !stop.load(Ordering::Relaxed) {
        let Ok(text) = client.next_text(Duration::from_millis(500)).await else {
            continue;
        };
        let received = SystemTime::now();
        // Book frames are counted unparsed: the client's parsing is not what is measured.
        if text.contains("\"type\":\"book_") {
            counts.books.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let message: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if message["type"] == "order" {
            counts.orders.fetch_add(1, Ordering::Relaxed);
            let at = message["order"]["updated_at"].as_str().unwrap_or_default();
            if recording.load(Ordering::Relaxed)
                && let Ok(at) = humantime::parse_rfc3339(at)
                && let Ok(elapsed) = received.duration_since(at)
            {
                latency.record(elapsed.as_micros() as u64).ok();
            }
        } else {
            counts.other.fetch_add(1, Ordering::Relaxed);
        }
    }
    client.close().await;
    latency
}

/// The upper bound of the bucket holding quantile `q` of the delays.
fn delay_quantile(delay: &Growth, q: f64) -> String {
    delay.quantile(q).map_or("-".into(), |bound| {
        if bound.is_infinite() {
            "+Inf".into()
        } else {
            format!("{:.2} ms", bound * 1000.0)
        }
    })
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A thousand connections need more than the common soft limit of 1,024 files.
fn raise_open_files() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}
