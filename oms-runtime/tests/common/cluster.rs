//! Distributed-mode processes against the real services of `scripts/services`: each cluster
//! has its own topic prefix, Redis key prefix and MongoDB database, so tests run in parallel.

use super::TRADER;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the services are, from the variables `scripts/services up` prints.
#[derive(Clone, Debug)]
pub struct Services {
    pub kafka: String,
    pub redis: String,
    pub mongo: String,
    pub script: PathBuf,
}

/// The services, or `None` when the run opted out with `OMS_SKIP_SERVICE_TESTS=1`. Without
/// them and without the opt-out the test fails and says how to start them.
pub fn services() -> Option<Services> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        get("OMS_TEST_KAFKA"),
        get("OMS_TEST_REDIS"),
        get("OMS_TEST_MONGO"),
        get("OMS_TEST_SERVICES"),
    ) {
        (Some(kafka), Some(redis), Some(mongo), Some(script)) => Some(Services {
            kafka,
            redis,
            mongo,
            script: script.into(),
        }),
        _ if get("OMS_SKIP_SERVICE_TESTS").as_deref() == Some("1") => {
            eprintln!("skipped: OMS_SKIP_SERVICE_TESTS=1");
            None
        }
        _ => panic!(
            "this test needs Kafka, Redis and MongoDB: run `eval \"$(scripts/services up)\"` first \
             (or scripts/test, which does), or set OMS_SKIP_SERVICE_TESTS=1 to skip it"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// One order system: a topic prefix, a database, a keys file.
pub struct Cluster {
    pub prefix: String,
    pub services: Services,
    pub dir: tempfile::TempDir,
    pub partitions: u32,
}

/// One `oms-runtime` process.
pub struct Node {
    pub child: Child,
    pub api: String,
    pub admin: String,
}

impl Cluster {
    pub fn new(services: &Services, name: &str, partitions: u32) -> Cluster {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 100_000_000;
        let prefix = format!("t_{name}_{}_{stamp}_{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        super::write_keys(dir.path());
        Cluster {
            prefix,
            services: services.clone(),
            dir,
            partitions,
        }
    }

    /// Starts a process of `role` with `extra` flags and waits until it is ready.
    pub async fn spawn(&self, role: &str, extra: &[&str]) -> Node {
        let node = self.start(role, extra, &[]);
        node.wait_ready(Duration::from_secs(60)).await;
        node
    }

    /// Starts a process of `role` with `extra` flags and environment variables; does not wait.
    pub fn start(&self, role: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let (api, admin) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_oms-runtime"))
            .args(["--role", role])
            .args(["--kafka-bootstrap", &self.services.kafka])
            .args(["--kafka-topic-prefix", &self.prefix])
            .args([
                "--kafka-create-topics",
                "--kafka-partitions",
                &self.partitions.to_string(),
            ])
            .args(["--redis-url", &self.services.redis])
            .args(["--mongo-url", &self.services.mongo])
            .args(["--mongo-database", &self.prefix])
            .args([
                "--api-keys-file",
                self.dir.path().join("keys.json").to_str().unwrap(),
            ])
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--dependency-timeout", "2s", "--snapshot-every", "100"])
            // the tests' load is not what the default quotas are for; the `limited` key has its
            // own
            .args([
                "--rate-limit-writes",
                "1000000",
                "--rate-limit-reads",
                "1000000",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env(
                "OMS_LOG",
                std::env::var("OMS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oms-runtime");
        Node {
            child,
            api: format!("http://127.0.0.1:{api}"),
            admin: format!("http://127.0.0.1:{admin}"),
        }
    }
}

impl Node {
    pub async fn wait_ready(&self, within: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            let ready = client.get(format!("{}/readyz", self.admin)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "oms-runtime not ready in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz`: its status and body.
    pub async fn readiness(&self) -> (StatusCode, Value) {
        let response = reqwest::get(format!("{}/readyz", self.admin)).await;
        match response {
            Ok(response) => (
                response.status(),
                response.json().await.unwrap_or(Value::Null),
            ),
            Err(error) => panic!("admin port of oms-runtime not answering: {error}"),
        }
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small HTTP client for the API.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    /// The API of `node`, as the test key `TRADER`.
    pub fn new(node: &Node) -> Api {
        Api::at(&node.api, TRADER)
    }

    /// The API at `base` (`http://host:port`), as `key`.
    pub fn at(base: &str, key: &str) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base: base.to_string(),
            key: key.to_string(),
        }
    }

    pub async fn post(&self, key: &str, body: &str, wait: bool) -> (StatusCode, Value) {
        self.transfer("/v1/orders", key, body, wait).await
    }

    /// A POST of `body` to `path` (`/v1/deposits`, `/v1/withdrawals`, `/v1/orders`) under the
    /// idempotency key `key`, waiting for the outcome if `wait`.
    pub async fn transfer(
        &self,
        path: &str,
        key: &str,
        body: &str,
        wait: bool,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string());
        if wait {
            request = request.header("prefer", "wait=10");
        }
        let response = request.send().await.expect("request");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Funds alice and bob (the `TRADER` key's accounts) with [`super::FUNDING`], waiting until
    /// each deposit is completed. The idempotency keys are fixed: funding again changes nothing.
    pub async fn fund(&self) {
        self.fund_in(&["USDT", "BTC", "ETH"]).await;
    }

    /// [`Api::fund`] in the assets named only (those of the system's instruments).
    pub async fn fund_in(&self, assets: &[&str]) {
        self.fund_accounts(&["alice".into(), "bob".into()], assets)
            .await;
    }

    /// Funds `accounts` (of this API's key) with [`super::FUNDING`] in `assets`, waiting until
    /// each deposit is completed.
    pub async fn fund_accounts(&self, accounts: &[String], assets: &[&str]) {
        for account in accounts {
            let wanted = super::funding(account)
                .into_iter()
                .zip(super::FUNDING)
                .filter(|(_, (asset, _))| assets.contains(asset))
                .map(|(deposit, _)| deposit);
            for (key, body) in wanted {
                let (status, done) = self.transfer("/v1/deposits", &key, &body, true).await;
                assert_eq!(status, StatusCode::CREATED, "deposit: {done}");
                assert_eq!(done["status"], "completed", "{done}");
            }
        }
    }

    pub async fn delete(&self, key: &str, order_id: &str, wait: bool) -> (StatusCode, Value) {
        let mut request = self
            .client
            .delete(format!("{}/v1/orders/{order_id}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", key);
        if wait {
            request = request.header("prefer", "wait=10");
        }
        let response = request.send().await.expect("request");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// `method` on `path` under the idempotency key `key`, with a JSON `body` if given, waiting
    /// for the outcome if `wait`.
    pub async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&str>,
        wait: bool,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if wait {
            request = request.header("prefer", "wait=10");
        }
        let response = request.send().await.expect("request");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("request");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Waits until `GET /v1/orders/{id}` answers 200 and `done` holds for it.
    pub async fn await_order(&self, order_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, order) = self.get(&format!("/v1/orders/{order_id}")).await;
            if status == StatusCode::OK && done(&order) {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "order {order_id} not projected: {status} {order}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
