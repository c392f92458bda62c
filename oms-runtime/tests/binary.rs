//! Integration tests that start the real `oms-runtime` binary and talk to it over HTTP:
//! round trips, concurrent identical requests, kill -9 under load and restart, SIGTERM.

mod common;

use common::{OTHER, TRADER, order, write_keys};
use reqwest::StatusCode;
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
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "oms-runtime did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    // SIGTERM: exits 0; everything acknowledged is there after a restart
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 600 {
        assert!(
            Instant::now() < deadline,
            "load did not get 600 orders acknowledged"
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
    assert!(acked.len() >= 600);

    let server = Server::start(dir.path()).await;
    let orders = server.settled().await;
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
