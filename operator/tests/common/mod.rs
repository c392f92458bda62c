//! The operator against the real kube-apiserver, kube-controller-manager and Kafka started by
//! `scripts/services`. Each test works in its own namespace with its own operator process.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod argocd;

use crds::OrderSystem;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the services are.
#[derive(Clone, Debug)]
pub struct Env {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub kafka: String,
}

/// The services, or `None` with `OMS_SKIP_SERVICE_TESTS=1`; otherwise a clear failure.
pub fn env() -> Option<Env> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        get("OMS_TEST_KUBECONFIG"),
        get("OMS_KUBECTL"),
        get("OMS_TEST_KAFKA"),
    ) {
        (Some(kubeconfig), Some(kubectl), Some(kafka)) => Some(Env {
            kubeconfig: kubeconfig.into(),
            kubectl: kubectl.into(),
            kafka,
        }),
        _ if get("OMS_SKIP_SERVICE_TESTS").as_deref() == Some("1") => None,
        _ => panic!(
            "this test needs the Kubernetes API and Kafka: run `eval \"$(scripts/services up)\"` \
             first (or scripts/test), or set OMS_SKIP_SERVICE_TESTS=1 to skip it"
        ),
    }
}

pub async fn client(env: &Env) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&env.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Installs (or updates) the CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = serde_json::to_value(OrderSystem::crd()).unwrap();
    crd["apiVersion"] = "apiextensions.k8s.io/v1".into();
    crd["kind"] = "CustomResourceDefinition".into();
    crds.patch(
        "ordersystems.oms.dev",
        &PatchParams::apply("oms-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait(
        Duration::from_secs(30),
        "the CRD to be established",
        || async {
            let crd = crds.get("ordersystems.oms.dev").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;
}

static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// A fresh namespace for one test.
pub async fn namespace(client: &Client, test: &str) -> String {
    let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000;
    let name = format!("e2e-{test}-{}-{stamp}-{n}", std::process::id() % 10_000);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    name
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One operator process.
pub struct Operator {
    pub child: Child,
    pub metrics: String,
}

impl Operator {
    /// Starts an operator watching `namespace`, electing its leader on a Lease there.
    pub fn start(env: &Env, namespace: &str) -> Operator {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_oms-operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--lease-namespace",
                namespace,
            ])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--kafka-timeout",
                "5s",
            ])
            .env("KUBECONFIG", &env.kubeconfig)
            .env(
                "OMS_LOG",
                std::env::var("OMS_TEST_LOG").unwrap_or_else(|_| "warn,kube_client=error".into()),
            )
            .env("HOSTNAME", format!("operator-{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oms-operator");
        Operator {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    /// Whether this replica says it leads (its `oms_operator_leader` gauge).
    pub async fn leads(&self) -> bool {
        let Ok(response) = reqwest::get(&self.metrics).await else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .any(|line| line.trim() == "oms_operator_leader 1")
    }

    /// The value of one sample of its metrics (`name{labels}` as printed), 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(&self.metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Peak resident memory in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An OrderSystem manifest on the test Kafka.
pub fn manifest(env: &Env, name: &str, partitions: i32, shards: i32) -> Value {
    json!({
        "apiVersion": "oms.dev/v1alpha1",
        "kind": "OrderSystem",
        "metadata": {"name": name},
        "spec": {
            "image": "ghcr.io/oms/oms-runtime:test",
            "instruments": [
                {"symbol": "BTC-USDT", "base": "BTC", "quote": "USDT", "tickSize": "0.01",
                 "lotSize": "0.00001", "minQuantity": "0.00001", "maxQuantity": "100"}
            ],
            "kafka": {"bootstrapServers": env.kafka, "partitions": partitions,
                      "replicationFactor": 1, "minInSyncReplicas": 1},
            "redis": {"url": "redis://127.0.0.1:36379"},
            "mongodb": {"secretRef": {"name": "docdb", "key": "uri"}},
            "processor": {"shards": shards},
            "auth": {"apiKeysSecretRef": {"name": "keys"}}
        }
    })
}

pub fn systems(client: &Client, namespace: &str) -> Api<OrderSystem> {
    Api::namespaced(client.clone(), namespace)
}

/// Creates an OrderSystem from a manifest.
pub async fn create(client: &Client, namespace: &str, manifest: &Value) -> OrderSystem {
    let system: OrderSystem = serde_json::from_value(manifest.clone()).unwrap();
    systems(client, namespace)
        .create(&PostParams::default(), &system)
        .await
        .unwrap()
}

/// Polls `probe` until it gives a value, or fails the test after `within`.
pub async fn wait<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The status of condition `kind`, once it is about the current generation.
pub async fn condition(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: &str,
) -> Option<(String, String, String)> {
    let system = systems(client, namespace).get(name).await.ok()?;
    let generation = system.metadata.generation?;
    let status = system.status?;
    if status.observed_generation != Some(generation) {
        return None;
    }
    let condition = status.conditions.into_iter().find(|c| c.type_ == kind)?;
    Some((condition.status, condition.reason, condition.message))
}

/// Partitions of a topic in the test Kafka, `None` if it does not exist.
pub fn partitions(env: &Env, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.kafka)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let found = metadata.topics().iter().find(|t| t.name() == topic)?;
    (found.error().is_none() && !found.partitions().is_empty()).then_some(found.partitions().len())
}

/// Runs kubectl against the test API server.
pub fn kubectl(env: &Env, args: &[&str]) -> Output {
    Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}
