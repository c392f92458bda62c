//! Integration tests that start the real `oms-runtime` binary and talk to it over HTTP:
//! round trips, concurrent identical requests, kill -9 under load and restart, SIGTERM.

mod common;

use common::{OTHER, TRADER, funding, order, write_keys};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    api: String,
    admin: String,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    async fn start(dir: &Path) -> Server {
        Server::start_with(dir, Command::new(env!("CARGO_BIN_EXE_oms-runtime"))).await
    }

    /// Starts the binary through `command` (the binary itself, or a shell that execs it).
    async fn start_with(dir: &Path, mut command: Command) -> Server {
        let (api_port, admin_port) = (free_port(), free_port());
        let child = command
            .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--data-dir", dir.to_str().unwrap()])
            .args(["--api-keys-file", write_keys(dir).to_str().unwrap()])
            .args(["--snapshot-every", "50"])
            .env("OMS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oms-runtime");
        let server = Server {
            child,
            api: format!("http://127.0.0.1:{api_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = server
                .client
                .get(format!("{}/readyz", server.admin))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                server.fund().await;
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "oms-runtime did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Funds alice, bob and carol (idempotent: the keys are fixed).
    async fn fund(&self) {
        for (key, account) in [(TRADER, "alice"), (TRADER, "bob"), (OTHER, "carol")] {
            for (idempotency, body) in funding(account) {
                let response = self
                    .client
                    .post(format!("{}/v1/deposits", self.api))
                    .bearer_auth(key)
                    .header("idempotency-key", idempotency)
                    .header("content-type", "application/json")
                    .header("prefer", "wait=5")
                    .body(body)
                    .send()
                    .await
                    .expect("deposit");
                assert!(response.status().is_success(), "{response:?}");
            }
        }
    }

    /// Every balance of alice, bob, carol and the fee account: (available, held) by account and
    /// asset.
    async fn money(&self) -> BTreeMap<(String, String), (Decimal, Decimal)> {
        let mut out = BTreeMap::new();
        for (key, account) in [
            (TRADER, "alice"),
            (TRADER, "bob"),
            (OTHER, "carol"),
            (common::VENUE, "fees"),
        ] {
            let (status, list) = self
                .get(key, &format!("/v1/balances?account={account}"))
                .await;
            assert_eq!(status, StatusCode::OK, "{list}");
            for balance in list["balances"].as_array().unwrap() {
                let decimal = |field: &str| balance[field].as_str().unwrap().parse().unwrap();
                out.insert(
                    (account.into(), balance["asset"].as_str().unwrap().into()),
                    (decimal("available"), decimal("held")),
                );
            }
        }
        out
    }

    async fn post(
        &self,
        key: &str,
        idempotency: &str,
        body: &str,
        wait: bool,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}/v1/orders", self.api))
            .bearer_auth(key)
            .header("idempotency-key", idempotency)
            .header("content-type", "application/json")
            .body(body.to_string());
        if wait {
            request = request.header("prefer", "wait=5");
        }
        let response = request.send().await.expect("request");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.api))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Every order of `account`, following cursors.
    async fn all_orders(&self, account: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self
                .get(
                    TRADER,
                    &format!("/v1/orders?account={account}&limit=1000{cursor}"),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            for order in page["orders"].as_array().unwrap() {
                out.insert(
                    order["order_id"].as_str().unwrap().to_string(),
                    order.clone(),
                );
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return out,
            }
        }
    }

    /// Every order of alice and bob, once the restarted server has replayed its journal tail
    /// (two reads 200 ms apart agree).
    async fn settled(&self) -> BTreeMap<String, Value> {
        let read = || async {
            let mut orders = self.all_orders("alice").await;
            orders.extend(self.all_orders("bob").await);
            orders
        };
        let mut last = read().await;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = read().await;
            if now == last {
                return now;
            }
            last = now;
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_over_http_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let (status, sell) = server
        .post(TRADER, "rt-1", &order("alice", "sell", "100.00", "1"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sell}");
    let (status, buy) = server
        .post(TRADER, "rt-2", &order("bob", "buy", "100.00", "0.4"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(buy["status"], "filled");
    let sell_id = sell["order_id"].as_str().unwrap();
    let (status, state) = server.get(TRADER, &format!("/v1/orders/{sell_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (state["status"].as_str(), state["filled_quantity"].as_str()),
        (Some("partially_filled"), Some("0.40000"))
    );

    let cancel = server
        .client
        .delete(format!("{}/v1/orders/{sell_id}", server.api))
        .bearer_auth(TRADER)
        .header("idempotency-key", "rt-3")
        .header("prefer", "wait=5")
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    let canceled: Value = cancel.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");

    // auth over the wire
    let (status, _) = server.get("oms_wrong", "/v1/orders?account=alice").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.get(OTHER, &format!("/v1/orders/{sell_id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let metrics = server
        .client
        .get(format!("{}/metrics", server.admin))
        .send()
        .await
        .unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("oms_http_requests_total")
    );

    // SIGTERM: streams are closed with 1001 (go to another pod and resume); the process exits
    // 0; everything acknowledged is there after a restart.
    let ws = format!("{}/v1/ws", server.api.replace("http://", "ws://"));
    let (mut stream, _) = oms_runtime::streams::client::StreamClient::connect(&ws, TRADER)
        .await
        .unwrap();
    stream.subscribe("orders", "alice", None).await.unwrap();
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let closed = loop {
        match stream.update(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(oms_runtime::streams::client::ClientError::Closed { code, .. }) => break code,
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(closed, 1001);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    let server = Server::start(dir.path()).await;
    let (_, state) = server.get(TRADER, &format!("/v1/orders/{sell_id}")).await;
    assert_eq!(state["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_create_exactly_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::start(dir.path()).await);
    let body = order("alice", "buy", "50.00", "1");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let server = server.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            server.post(TRADER, "same-key", &body, false).await
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        let (status, json) = task.await.unwrap();
        match status {
            StatusCode::ACCEPTED => accepted.push(json),
            StatusCode::CONFLICT => assert_eq!(json["error"]["code"], "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {json}"),
        }
    }
    assert!(!accepted.is_empty());
    assert!(
        accepted.iter().all(|json| *json == accepted[0]),
        "every 202 is the same answer"
    );
    // after the dust settles a retry is a replay of that answer
    let (status, replay) = server.post(TRADER, "same-key", &body, false).await;
    assert_eq!((status, &replay), (StatusCode::ACCEPTED, &accepted[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let orders = server.all_orders("alice").await;
    assert_eq!(orders.len(), 1, "exactly one order: {orders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_order() {
    kill_9_under_load(600, |_| true).await;
}

/// The journal's segments after the first are zero-filled ahead of need (4 MiB of records in);
/// a crash while appending into one loses nothing acknowledged and invents nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_appending_to_a_prepared_segment_loses_nothing() {
    kill_9_under_load(600, |dir| {
        let segments = dir.join("segments");
        let mut logs: Vec<_> = std::fs::read_dir(&segments)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        // The active segment is a prepared one (64 MiB of zeros and records).
        logs.len() >= 2
            && logs
                .last()
                .and_then(|path| std::fs::metadata(path).ok())
                .is_some_and(|meta| meta.len() == 64 << 20)
    })
    .await;
}

/// Drives eight clients placing orders until `orders` are acknowledged and `ready` says so of
/// the data directory, kills the server with SIGKILL mid-flight, and checks what a restart finds.
async fn kill_9_under_load(orders: usize, ready: impl Fn(&Path) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String, Value)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8 {
        let (client_http, api) = (server.client.clone(), server.api.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let key = format!("load-{client}-{n}");
                let (side, account) = if n % 2 == 0 {
                    ("buy", "alice")
                } else {
                    ("sell", "bob")
                };
                let price = format!("{}.00", 100 + (n * 7 + client) % 5);
                let body = order(account, side, &price, "0.1");
                let request = client_http
                    .post(format!("{api}/v1/orders"))
                    .bearer_auth(TRADER)
                    .header("idempotency-key", &key)
                    .body(body.clone())
                    .send()
                    .await;
                let Ok(response) = request else { return }; // the server died
                let status = response.status();
                let Ok(json) = response.json::<Value>().await else {
                    return;
                };
                assert_eq!(status, StatusCode::ACCEPTED, "{json}");
                acked.lock().unwrap().push((key, body, json));
            }
        }));
    }
    // let the load run, snapshots included (every 50 commands), then kill -9 mid-flight
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < orders || !ready(dir.path()) {
        assert!(
            Instant::now() < deadline,
            "load did not get {orders} orders acknowledged, and the data directory ready, in time"
        );
        assert!(clients.iter().all(|c| !c.is_finished()), "a client failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= orders);

    let server = Server::start(dir.path()).await;
    let orders = server.settled().await;
    let money = server.money().await;
    money_adds_up(&money, &orders);
    for (_, _, ack) in &acked {
        let id = ack["order_id"].as_str().unwrap();
        assert!(orders.contains_key(id), "acknowledged order {id} lost");
    }
    // every acknowledged key replays its original answer
    for (key, body, ack) in acked.iter().step_by(7) {
        let (status, replay) = server.post(TRADER, key, body, false).await;
        assert_eq!(
            (status, &replay),
            (StatusCode::ACCEPTED, ack),
            "replay of {key}"
        );
    }
    // the rebuilt books equal what a second clean restart rebuilds (snapshot + journal)
    let depth = |server: &Server| {
        let client = server.client.clone();
        let url = format!("{}/v1/book/BTC-USDT?depth=1000", server.api);
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let before = depth(&server).await;
    let states: BTreeMap<_, _> = orders;
    assert!(server.terminate().success());
    let server = Server::start(dir.path()).await;
    let again = server.settled().await;
    assert_eq!(depth(&server).await, before);
    assert_eq!(again, states, "order states survive a restart unchanged");
    assert_eq!(
        server.money().await,
        money,
        "balances survive a restart unchanged"
    );
}

/// Conservation (every asset's totals add up to what was deposited: nothing was withdrawn)
/// and holds (alice's and bob's held balances are what their open orders still need).
fn money_adds_up(
    money: &BTreeMap<(String, String), (Decimal, Decimal)>,
    orders: &BTreeMap<String, Value>,
) {
    for (asset, funded) in common::FUNDING {
        let total: Decimal = money
            .iter()
            .filter(|((_, a), _)| a == asset)
            .map(|(_, (available, held))| available + held)
            .sum();
        let deposited = funded.parse::<Decimal>().unwrap() * Decimal::from(3);
        assert_eq!(total, deposited, "{asset} is conserved");
    }
    let mut needs: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for order in orders.values() {
        if !matches!(order["status"].as_str(), Some("new" | "partially_filled")) {
            continue;
        }
        let decimal = |field: &str| order[field].as_str().unwrap().parse::<Decimal>().unwrap();
        let leaves = decimal("quantity") - decimal("filled_quantity");
        let account = order["account"].as_str().unwrap().to_string();
        let (asset, amount) = match order["side"].as_str() {
            Some("buy") => ("USDT", leaves * decimal("price")),
            _ => ("BTC", leaves),
        };
        *needs.entry((account, asset.into())).or_default() += amount;
    }
    for account in ["alice", "bob"] {
        for asset in ["USDT", "BTC"] {
            let key = (account.to_string(), asset.to_string());
            let held = money[&key].1;
            let need = needs.get(&key).copied().unwrap_or_default();
            assert_eq!(
                held, need,
                "{account}'s held {asset} is what its open orders need"
            );
        }
    }
}

/// Sockets are files: the process raises its open-files soft limit to the hard limit at start,
/// so a common default of 1,024 does not cap its connections (issue 20).
#[tokio::test]
async fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut shell = Command::new("sh");
    shell.args([
        "-c",
        r#"ulimit -Sn 256 && exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_oms-runtime"),
    ]);
    let server = Server::start_with(dir.path(), shell).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit not raised: {line}");
    assert_ne!(numbers[0], "256", "{line}");
}

/// Starts the binary with the open-files limit (soft and hard) at `files`, and `args`.
async fn start_limited(dir: &Path, files: u32, args: &[&str]) -> Server {
    let mut shell = Command::new("sh");
    shell
        .args([
            "-c",
            &format!(r#"ulimit -n {files} && exec "$0" "$@""#),
            env!("CARGO_BIN_EXE_oms-runtime"),
        ])
        .args(args);
    Server::start_with(dir, shell).await
}

impl Server {
    /// The value of one series of `/metrics`, such as `oms_http_connections_open{port="api"}`.
    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `series` until `done` holds, for at most `limit`.
    async fn metric_until(&self, series: &str, limit: Duration, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.metric(series).await;
            if done(value) || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn port(&self) -> String {
        self.api.trim_start_matches("http://").to_string()
    }
}

/// Reads until the peer closes or `limit` passes; gives what was read and whether it closed.
async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

/// One unauthenticated client holding idle connections took the service down: every API call
/// and the probes timed out once the process ran out of file descriptors (issue 20). Now the
/// API port has a cap below the open-files limit, clients over it get a 503 at once, the admin
/// port answers, and idle connections are closed after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_over_the_cap_neither_starve_the_api_nor_the_probes() {
    let _ = rlimit::increase_nofile_limit(4096);
    let dir = tempfile::tempdir().unwrap();
    // 512 files leave room for 512 - 256 - 64 = 192 API connections of the 1,000 asked for.
    let server = start_limited(
        dir.path(),
        512,
        &["--max-connections", "1000", "--idle-timeout", "10s"],
    )
    .await;
    let open = r#"oms_http_connections_open{port="api"}"#;
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(tokio::net::TcpStream::connect(server.port()).await.unwrap());
    }
    let cap = server
        .metric_until(open, Duration::from_secs(20), |n| n >= 192.0)
        .await;
    assert_eq!(cap, 192.0, "the cap is lowered to fit the open-files limit");
    assert!(
        server
            .metric(r#"oms_http_connections_refused_total{port="api"}"#)
            .await
            > 0.0
    );
    // The connections over the cap opened above hold the few refusal slots for a second
    // (clients that flood get a closed socket); a client after them gets the 503.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let refused = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{}/v1/instruments", server.api))
        .send()
        .await
        .expect("a client over the cap is answered, not left waiting");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    for probe in ["/healthz", "/readyz"] {
        let response = server
            .client
            .get(format!("{}{probe}", server.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
    }

    // Idle connections are closed after the idle timeout, and the API answers again.
    let closed = futures::future::join_all(
        idle.iter_mut()
            .map(|stream| read_to_close(stream, Duration::from_secs(60))),
    )
    .await;
    assert!(
        closed.iter().all(|(_, closed)| *closed),
        "idle connections left open"
    );
    assert!(
        server
            .metric(r#"oms_http_connections_timed_out_total{port="api"}"#)
            .await
            >= 192.0
    );
    let (status, _) = server.get(TRADER, "/v1/instruments").await;
    assert_eq!(status, StatusCode::OK);
}

/// 200 connections sending one header line every 3 s were never cut off, nor a body sent at
/// 1 byte/s (issue 20). Now a head must be complete within the header timeout of its first
/// byte and at most 64 KiB long, and a body must arrive within the body timeout (a 408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_requests_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), {
        let mut command = Command::new(env!("CARGO_BIN_EXE_oms-runtime"));
        command.args(["--header-timeout", "2s", "--body-timeout", "2s"]);
        command
    })
    .await;

    // A head trickling in, one header line every 500 ms, for up to 30 s.
    let mut slow = tokio::net::TcpStream::connect(server.port()).await.unwrap();
    slow.write_all(b"GET /v1/instruments HTTP/1.1\r\nhost: oms\r\n")
        .await
        .unwrap();
    let mut cut_after = None;
    for line in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if slow
            .write_all(format!("x-slow-{line}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_after = Some(line);
            break;
        }
        let (_, closed) = read_to_close(&mut slow, Duration::from_millis(1)).await;
        if closed {
            cut_after = Some(line);
            break;
        }
    }
    assert!(cut_after.is_some(), "a slow head was never cut off");

    // A head of 256 KiB is refused, not buffered: the read buffer is bounded at 64 KiB (one
    // read may take it a little further), where hyper's default of ~400 KiB would take it.
    let mut big = tokio::net::TcpStream::connect(server.port()).await.unwrap();
    let filler = "a".repeat(256 * 1024);
    let _ = big
        .write_all(
            format!("GET /v1/instruments HTTP/1.1\r\nhost: oms\r\nx-big: {filler}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let (answer, _) = read_to_close(&mut big, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A body trickling in, one byte every 500 ms: a 408 in the one error shape.
    let mut slow = tokio::net::TcpStream::connect(server.port()).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/orders HTTP/1.1\r\nhost: oms\r\nauthorization: Bearer {TRADER}\r\n\
             idempotency-key: slow-body\r\ncontent-type: application/json\r\n\
             content-length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Read while writing: a write after the server closed would reset the connection and
    // could discard the answer before it is read.
    let (mut read, mut write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut read, &mut answer),
    )
    .await
    .is_ok();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed, "the connection of a slow body stays open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    assert!(
        server
            .metric(r#"oms_http_connections_timed_out_total{port="api"}"#)
            .await
            >= 1.0
    );
    // Nothing was journaled for the half-sent order.
    assert!(server.all_orders("alice").await.is_empty());
}

/// With 50 half-sent requests open, SIGTERM did not finish until they closed: one client could
/// stall a rollout until the kubelet's SIGKILL (issue 20). Now idle connections close at once,
/// and whatever is still stalled at the drain deadline is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stalled_requests_exits_after_the_drain_deadline() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_oms-runtime"));
    // Timeouts far beyond the test, so that only the drain deadline can end the requests.
    command.args([
        "--header-timeout",
        "1h",
        "--body-timeout",
        "1h",
        "--idle-timeout",
        "1h",
        "--drain-timeout",
        "2s",
    ]);
    let server = Server::start_with(dir.path(), command).await;
    let mut stalled = Vec::new();
    for n in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(server.port()).await.unwrap();
        let request: &[u8] = if n % 2 == 0 {
            b"GET /v1/instruments HTTP/1.1\r\nhost: oms\r\n"
        } else {
            b"POST /v1/orders HTTP/1.1\r\nhost: oms\r\ncontent-length: 100\r\n\r\n{"
        };
        stream.write_all(request).await.unwrap();
        stalled.push(stream);
    }
    for _ in 0..10 {
        stalled.push(tokio::net::TcpStream::connect(server.port()).await.unwrap());
    }
    server
        .metric_until(
            r#"oms_http_connections_open{port="api"}"#,
            Duration::from_secs(10),
            |n| n >= 60.0,
        )
        .await;
    for stream in &mut stalled {
        let (_, closed) = read_to_close(stream, Duration::from_millis(1)).await;
        assert!(!closed, "a stalled connection was closed before SIGTERM");
    }
    let mut server = server;
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    // A hang guard far beyond the 2 s deadline, not a measurement: without the deadline the
    // process waits for the stalled clients, which never finish.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.is_some_and(|status| status.success()),
        "SIGTERM did not end the process while requests stalled: {status:?}"
    );
}

/// Without any risk flag, a buy of 100 BTC at 184467440737095516.15 was accepted and filled,
/// and one account could open orders without end (issue 20). The defaults now refuse them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_refuse_fat_fingers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let refused = |body: &Value, code: &str, field: Option<&str>| {
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{body}");
    };
    let (status, body) = server
        .post(
            TRADER,
            "absurd-price",
            &order("alice", "buy", "184467440737095516.15", "100"),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    refused(&body, "price_above_max", Some("price"));
    let (status, body) = server
        .post(
            TRADER,
            "absurd-size",
            &order("alice", "buy", "100.00", "100000"),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    refused(&body, "quantity_above_max", Some("quantity"));
    // 50 BTC at 50,000 is 2,500,000 USDT, over the default 1,000,000
    let (status, body) = server
        .post(
            TRADER,
            "big-notional",
            &order("alice", "buy", "50000.00", "50"),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    refused(&body, "notional_above_max", None);

    // A trade at 100 sets the reference: a price 50% away is outside the default 10% band.
    server
        .post(
            TRADER,
            "maker",
            &order("bob", "sell", "100.00", "0.1"),
            true,
        )
        .await;
    let (_, taker) = server
        .post(
            TRADER,
            "taker",
            &order("alice", "buy", "100.00", "0.1"),
            true,
        )
        .await;
    assert_eq!(taker["status"], "filled", "{taker}");
    let (_, far) = server
        .post(TRADER, "far", &order("alice", "buy", "150.00", "0.1"), true)
        .await;
    assert_eq!(far["status"], "rejected", "{far}");
    assert_eq!(far["reject_reason"], "price_outside_band", "{far}");

    // 1,000 open orders on one instrument are the default most for one account.
    let server = Arc::new(server);
    for chunk in 0..50 {
        let posts = (0..20).map(|n| {
            let server = server.clone();
            async move {
                let id = format!("rest-{chunk}-{n}");
                let (status, _) = server
                    .post(TRADER, &id, &order("alice", "buy", "95.00", "0.1"), false)
                    .await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
        });
        futures::future::join_all(posts).await;
    }
    let (_, over) = server
        .post(
            TRADER,
            "one-too-many",
            &order("alice", "buy", "95.00", "0.1"),
            true,
        )
        .await;
    assert_eq!(over["status"], "rejected", "{over}");
    assert_eq!(over["reject_reason"], "too_many_open_orders", "{over}");
}

/// A crash between the journal append and the projection write loses nothing: with the
/// projection held back (a test-only fault), acknowledged orders are journaled but not
/// projected; after kill -9 a restart replays the journal into the projection, money included.
#[tokio::test]
async fn a_crash_between_journal_and_projection_is_rebuilt_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let funded = server.money().await;
    assert!(server.terminate().success());

    let mut command = Command::new(env!("CARGO_BIN_EXE_oms-runtime"));
    command.arg("--fault-hold-projection");
    let server = Server::start_with(dir.path(), command).await;
    let mut acked = Vec::new();
    for n in 0..20 {
        let (account, side) = if n % 2 == 0 {
            ("bob", "sell")
        } else {
            ("alice", "buy")
        };
        let body = order(account, side, "100.00", "0.1");
        let (status, ack) = server
            .post(TRADER, &format!("held-{n}"), &body, false)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
        acked.push(ack["order_id"].as_str().unwrap().to_string());
    }
    for id in &acked {
        let (status, _) = server.get(TRADER, &format!("/v1/orders/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "order {id} was projected");
    }
    assert_eq!(
        server.money().await,
        funded,
        "no balance moved in the projection"
    );
    server.kill9();

    let server = Server::start(dir.path()).await;
    let orders = server.settled().await;
    for id in &acked {
        assert_eq!(
            orders.get(id).and_then(|o| o["status"].as_str()),
            Some("filled"),
            "order {id} rebuilt"
        );
    }
    let money = server.money().await;
    money_adds_up(&money, &orders);
    assert_ne!(money, funded, "the trades settled");
}

/// A cancel-after deadline outlives the process that took it: set, then kill -9 before it
/// lapses; the restarted process fires it, and the orders end canceled with their holds back.
#[tokio::test]
async fn cancel_after_fires_after_a_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, placed) = server
            .post(
                TRADER,
                &format!("dms-{n}"),
                &order("alice", "buy", "90.00", "1"),
                true,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        ids.push(placed["order_id"].as_str().unwrap().to_string());
    }
    let response = server
        .client
        .post(format!("{}/v1/cancel-after", server.api))
        .bearer_auth(TRADER)
        .header("content-type", "application/json")
        .body(r#"{"account":"alice","timeout_seconds":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.kill9();

    let server = Server::start(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, open) = server
            .get(TRADER, "/v1/orders?account=alice&status=open")
            .await;
        if open["orders"] == serde_json::json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cancel-after never fired: {open}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        let (_, order) = server.get(TRADER, &format!("/v1/orders/{id}")).await;
        assert_eq!(order["status"], "canceled", "{order}");
    }
    let (_, switch) = server.get(TRADER, "/v1/cancel-after?account=alice").await;
    assert_eq!(switch["deadline"], Value::Null, "fired once, then off");
    assert_eq!(
        server.metric("oms_ingest_cancel_after_fired_total").await,
        1.0
    );
}

/// The Binance-compatible API is on unless `--binance-api false` (what the operator sets unless
/// an OrderSystem asks for it) takes it off the API port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binance_api_is_served_unless_turned_off() {
    let ping = |server: &Server| {
        let url = format!("{}/api/v3/ping", server.api);
        let client = server.client.clone();
        async move { client.get(url).send().await.expect("ping").status() }
    };
    let on = tempfile::tempdir().unwrap();
    let server = Server::start(on.path()).await;
    assert_eq!(ping(&server).await, StatusCode::OK);
    drop(server);
    let off = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_oms-runtime"));
    command.env("OMS_BINANCE_API", "false");
    let server = Server::start_with(off.path(), command).await;
    assert_eq!(ping(&server).await, StatusCode::NOT_FOUND);
    // The OMS's own API is unchanged.
    let (status, _) = server.get(TRADER, "/v1/balances?account=alice").await;
    assert_eq!(status, StatusCode::OK);
}
