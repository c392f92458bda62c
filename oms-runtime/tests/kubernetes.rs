//! The whole system on the real single-node cluster of `scripts/services` (scheduler,
//! controller-manager, a kubelet on containerd, kube-proxy) with the images of `scripts/images`:
//! the Helm chart runs the operator from its image, `examples/ordersystems/local.yaml` runs its
//! pods, and orders go through the ingest Service. One scenario, step by step, because each step
//! starts from the state the last one left (scaled, resharded, rolled).

#[path = "../../operator/tests/common/argocd.rs"]
mod argocd;
mod common;

use common::cluster::{Api, Cluster, services};
use common::log::{assert_exactly_once, events, fold};
use oms_core::{Instrument, InstrumentSpec, OrderId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The public key of the example's API key Secret.
const KEY: &str = "oms_0000000000000000000000000000000000000000000000000000000000000001";
const RUNTIME_IMAGE: &str = "localhost/oms-runtime:dev";
const OPERATOR_IMAGE: &str = "localhost/oms-operator:dev";
const WAIT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// kubectl and helm on the test cluster, in one namespace; deleted with the test.
struct Kube {
    kubeconfig: String,
    kubectl: String,
    helm: String,
    namespace: String,
}

impl Kube {
    fn from_env() -> Kube {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run `eval \"$(scripts/services up)\"` and \
                     `eval \"$(scripts/deploy-tools)\"` first (scripts/test does both)"
                )
            })
        };
        Kube {
            kubeconfig: get("OMS_TEST_KUBECONFIG"),
            kubectl: get("OMS_KUBECTL"),
            helm: get("OMS_HELM"),
            namespace: format!("node-{}", std::process::id()),
        }
    }

    /// Runs kubectl or helm (both take these two flags) in the test's namespace.
    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let output = Command::new(program)
            .args(["--kubeconfig", &self.kubeconfig])
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("run {program}: {error}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(text)
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(format!("{program} {}: {text}{stderr}", args.join(" ")))
        }
    }

    fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.run(&self.kubectl, args)
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.try_kubectl(args)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn helm(&self, args: &[&str]) -> String {
        self.run(&self.helm, args)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn try_get(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.try_kubectl(&all)?;
        serde_json::from_str(&text).map_err(|error| format!("{error}: {text}"))
    }

    fn get(&self, args: &[&str]) -> Value {
        self.try_get(args).unwrap_or_else(|error| panic!("{error}"))
    }

    /// The pods of one component of OrderSystem `local`.
    fn pods(&self, component: &str) -> Vec<Value> {
        let selector =
            format!("app.kubernetes.io/instance=local,app.kubernetes.io/component={component}");
        let list = self.get(&["pods", "-l", &selector]);
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        // Whatever the outcome, leave no pods running: the OrderSystem first, while its
        // operator still runs to finish it, then the operator, then the rest.
        let _ = self.try_kubectl(&["delete", "ordersystems", "--all", "--timeout=60s"]);
        let _ = self.run(&self.helm, &["uninstall", "oms-operator", "--wait"]);
        let _ = self.try_kubectl(&["delete", "namespace", &self.namespace, "--wait=false"]);
    }
}

fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn name(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap().to_string()
}

/// Polls `probe` until it gives a value; on timeout fails with `what` and the last `context`.
async fn wait<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {WAIT:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Waits until `component` has exactly `count` ready pods (and no others), returning them.
async fn ready_pods(kube: &Kube, component: &str, count: usize) -> Vec<Value> {
    wait(&format!("{count} ready {component} pods"), || {
        let pods = kube.pods(component);
        let ready_count = pods.iter().filter(|p| ready(p)).count();
        if ready_count == count && pods.len() == count {
            Ok(pods)
        } else {
            Err(format!(
                "{ready_count} ready of {}: {:?}",
                pods.len(),
                pods.iter()
                    .map(|p| (
                        name(p),
                        p["status"]["phase"].clone(),
                        p["status"]["containerStatuses"].clone()
                    ))
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await
}

async fn system_ready(kube: &Kube) -> Value {
    wait("OrderSystem local to be Ready for its generation", || {
        let system = kube.get(&["ordersystem", "local"]);
        let status = &system["status"];
        let current = status["observedGeneration"] == system["metadata"]["generation"];
        let ready = status["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if current && ready {
            Ok(system)
        } else {
            Err(status.to_string())
        }
    })
    .await
}

/// The body of a BTC-USDT limit order.
fn limit(account: &str, side: &str, price: &str, quantity: &str) -> String {
    json!({"account": account, "symbol": "BTC-USDT", "side": side, "type": "limit",
           "price": price, "quantity": quantity})
    .to_string()
}

/// Order `n` of a stream where about half trade.
fn nth_order(n: usize) -> String {
    let side = if n.is_multiple_of(2) { "buy" } else { "sell" };
    let account = if n % 4 < 2 { "alice" } else { "bob" };
    let price = format!("{}.{:02}", 100 + (n * 7) % 3, (n * 13) % 100);
    limit(account, side, &price, "0.10000")
}

/// Sends orders `range` through `client` from four concurrent senders, each retrying a failed
/// request under the same idempotency key (a pod may go away mid-request); returns the
/// acknowledged order ids.
async fn stream(client: &Api, range: std::ops::Range<usize>) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, next, end) = (client.clone(), next.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return acked;
                }
                let mut attempts = 0;
                loop {
                    let (status, answer) =
                        client.post(&format!("s-{n}"), &nth_order(n), false).await;
                    if status == StatusCode::ACCEPTED {
                        acked.push(answer["order_id"].as_str().unwrap().to_string());
                        break;
                    }
                    attempts += 1;
                    assert!(attempts < 50, "order {n}: {status} {answer}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked
}

/// Streams orders `range` and runs `kubectl args` once the stream is under way; returns the
/// acknowledged order ids.
async fn while_streaming(
    api: &Api,
    range: std::ops::Range<usize>,
    kube: &Kube,
    args: &[&str],
) -> Vec<String> {
    let sender = {
        let api = api.clone();
        tokio::spawn(async move { stream(&api, range).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    kube.kubectl(args);
    sender.await.unwrap()
}

/// Preflight: the node runs and holds both images (scripts/images load).
async fn node_with_images(kube: &Kube) {
    wait("node oms-node to be Ready with the OMS images", || {
        let node = kube.get(&["node", "oms-node"]);
        let names: BTreeSet<String> = node["status"]["images"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|image| image["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|name| name.as_str().map(str::to_string))
            .collect();
        let missing: Vec<_> = [RUNTIME_IMAGE, OPERATOR_IMAGE]
            .into_iter()
            .filter(|image| !names.contains(*image))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            // A node under pressure deletes unused images; say so rather than blame the load.
            let pressure: Vec<_> = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["status"] == "True" && c["type"] != "Ready")
                .map(|c| format!("{}: {}", c["type"], c["message"]))
                .collect();
            Err(format!(
                "missing {missing:?}: run scripts/images && scripts/images load; \
                 node conditions {pressure:?}"
            ))
        }
    })
    .await;
}

fn instruments(kube: &Kube) -> Vec<Instrument> {
    let config = kube.get(&["configmap", "local-config"]);
    let specs: Vec<InstrumentSpec> =
        serde_json::from_str(config["data"]["instruments.json"].as_str().unwrap()).unwrap();
    specs
        .into_iter()
        .map(|s| Instrument::new(s).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_system_runs_on_a_real_node() {
    let Some(services) = services() else { return };
    let kube = Kube::from_env();
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    node_with_images(&kube).await;
    kube.try_kubectl(&["create", "namespace", &kube.namespace])
        .or_else(|e| {
            if e.contains("AlreadyExists") {
                Ok(String::new())
            } else {
                Err(e)
            }
        })
        .unwrap();

    step("the chart installs the operator from its image");
    let chart = repo().join("charts/oms-operator");
    kube.helm(&[
        "install",
        "oms-operator",
        chart.to_str().unwrap(),
        "--take-ownership",
        "--set",
        "image.repository=localhost/oms-operator",
        "--set",
        "image.tag=dev",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        &format!("watchNamespace={}", kube.namespace),
    ]);
    wait("an operator pod to lead, the other standing by", || {
        let pods = kube.get(&["pods", "-l", "app.kubernetes.io/name=oms-operator"]);
        let names: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| ready(p))
            .map(name)
            .collect();
        let lease = kube.try_get(&["lease", "oms-operator"])?;
        let holder = lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // The chart runs two replicas: one leads, one stands by.
        if names.len() == 2 && names.contains(&holder) {
            Ok(())
        } else {
            Err(format!("holder {holder:?}, ready pods {names:?}"))
        }
    })
    .await;

    step("kubectl apply -f examples/ordersystems/local.yaml");
    let example = repo().join("examples/ordersystems/local.yaml");
    kube.kubectl(&["apply", "-f", example.to_str().unwrap()]);
    ready_pods(&kube, "ingest", 1).await;
    ready_pods(&kube, "funds", 2).await;
    ready_pods(&kube, "processor", 2).await;
    ready_pods(&kube, "projector", 1).await;
    system_ready(&kube).await;

    step("deposits through the ingest Service, completed by the funds stage");
    let service = kube.get(&["service", "local"]);
    let service_ip = service["spec"]["clusterIP"].as_str().unwrap();
    let api = Api::at(&format!("http://{service_ip}:80"), KEY);
    // (the example's one instrument: BTC-USDT)
    api.fund_in(&["USDT", "BTC"]).await;

    step("an order through the ingest Service, filled against a second one");
    let (status, resting) = api
        .post("first", &limit("alice", "sell", "100.00", "0.10000"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{resting}");
    assert_eq!(resting["status"], "new");
    let (status, taker) = api
        .post("second", &limit("bob", "buy", "100.00", "0.10000"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{taker}");
    assert_eq!(taker["status"], "filled", "{taker}");
    let id = resting["order_id"].as_str().unwrap();
    let maker = api.await_order(id, |o| o["status"] == "filled").await;
    assert_eq!(maker["filled_quantity"], "0.10000");

    step("the ingest Service serves the web UI the image carries");
    let page = api
        .client
        .get(format!("{}/", api.base))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no script in the page: {html}"));
    let asset = api.client.get(format!("{}{script}", api.base)).send().await;
    assert_eq!(
        asset.expect("GET the script").status(),
        StatusCode::OK,
        "{script}"
    );

    step("the ingest Service answers the Binance-compatible API");
    let info: serde_json::Value = api
        .client
        .get(format!("{}/api/v3/exchangeInfo", api.base))
        .send()
        .await
        .expect("GET /api/v3/exchangeInfo")
        .json()
        .await
        .expect("exchangeInfo is JSON");
    let symbols: Vec<&str> = info["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|s| s["symbol"].as_str())
        .collect();
    assert!(symbols.contains(&"BTCUSDT"), "{info}");
    let depth: serde_json::Value = api
        .client
        .get(format!("{}/api/v3/depth?symbol=BTCUSDT&limit=5", api.base))
        .send()
        .await
        .expect("GET /api/v3/depth")
        .json()
        .await
        .expect("depth is JSON");
    assert!(depth["lastUpdateId"].as_u64().is_some(), "{depth}");

    step("kubectl scale adds an ingest pod that serves");
    let before: BTreeSet<String> = kube.pods("ingest").iter().map(name).collect();
    kube.kubectl(&["scale", "ordersystem/local", "--replicas=2"]);
    let pods = ready_pods(&kube, "ingest", 2).await;
    let added = pods
        .iter()
        .find(|p| !before.contains(&name(p)))
        .expect("a new ingest pod");
    let pod_ip = added["status"]["podIP"].as_str().unwrap();
    let direct = Api::at(&format!("http://{pod_ip}:8080"), KEY);
    let (status, order) = direct
        .post(
            "via-new-pod",
            &limit("alice", "buy", "99.00", "0.10000"),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let mut acked = vec![order["order_id"].as_str().unwrap().to_string()];

    step("resharding 2 -> 3 processors while orders stream in");
    let patch = r#"{"spec":{"processor":{"shards":3}}}"#;
    let args = ["patch", "ordersystem/local", "--type=merge", "-p", patch];
    acked.extend(while_streaming(&api, 0..400, &kube, &args).await);
    ready_pods(&kube, "processor", 3).await;
    system_ready(&kube).await;

    step("a processor pod deleted while orders stream in");
    let args = [
        "delete",
        "pod",
        "local-processor-1",
        "--grace-period=0",
        "--force",
    ];
    acked.extend(while_streaming(&api, 400..800, &kube, &args).await);
    ready_pods(&kube, "processor", 3).await;

    step("resharding 2 -> 3 funds shards while orders stream in");
    let patch = r#"{"spec":{"funds":{"shards":3}}}"#;
    let args = ["patch", "ordersystem/local", "--type=merge", "-p", patch];
    acked.extend(while_streaming(&api, 800..1200, &kube, &args).await);
    ready_pods(&kube, "funds", 3).await;
    system_ready(&kube).await;

    step("a funds pod deleted while orders stream in");
    let args = [
        "delete",
        "pod",
        "local-funds-0",
        "--grace-period=0",
        "--force",
    ];
    acked.extend(while_streaming(&api, 1200..1600, &kube, &args).await);
    ready_pods(&kube, "funds", 3).await;

    step("nothing lost, nothing twice: every topic is that of one uninterrupted run");
    let cluster = Cluster {
        prefix: format!("{}.local", kube.namespace),
        services,
        dir: tempfile::tempdir().unwrap(),
        partitions: 4,
    };
    let instruments = instruments(&kube);
    let written = wait("every acknowledged order in the events topic", || {
        let written = events(&cluster);
        let states = fold(&written);
        let missing = acked
            .iter()
            .filter(|id| !states.contains_key(&OrderId(id.parse().unwrap())))
            .count();
        if missing == 0 {
            Ok(written)
        } else {
            Err(format!("{missing} of {} not processed yet", acked.len()))
        }
    })
    .await;
    // and the ledger, the forwarded commands and the settlements too; money is conserved
    assert_exactly_once(&cluster, &instruments);
    let states = fold(&written);
    for id in &acked {
        let version = states[&OrderId(id.parse().unwrap())].version;
        api.await_order(id, |o| o["version"].as_u64() >= Some(version))
            .await;
    }

    step("a config change rolls every pod");
    let old: BTreeSet<String> = ["ingest", "funds", "processor", "projector"]
        .iter()
        .flat_map(|c| kube.pods(c))
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    kube.kubectl(&["patch", "ordersystem/local", "--type=json", "-p",
        r#"[{"op":"add","path":"/spec/instruments/-","value":{"symbol":"ETH-USDT","base":"ETH","quote":"USDT","tickSize":"0.01","lotSize":"0.0001","minQuantity":"0.0001","maxQuantity":"1000","minNotional":"5"}}]"#]);
    for (component, count) in [
        ("ingest", 2),
        ("funds", 3),
        ("processor", 3),
        ("projector", 1),
    ] {
        wait(&format!("every {component} pod replaced"), || {
            let pods = kube.pods(component);
            let fresh = pods
                .iter()
                .filter(|p| ready(p) && !old.contains(p["metadata"]["uid"].as_str().unwrap()))
                .count();
            if fresh == count && pods.len() == count {
                Ok(())
            } else {
                Err(format!("{fresh} fresh of {}", pods.len()))
            }
        })
        .await;
    }
    let system = system_ready(&kube).await;
    let (_, listed) = api.get("/v1/instruments").await;
    assert!(listed.to_string().contains("ETH-USDT"), "{listed}");

    step("Argo CD's health check reads Healthy");
    let (health, message) = argocd::health(&system);
    assert_eq!(health, "Healthy", "{message}");

    step("deleting the OrderSystem removes its pods, children and topics");
    kube.kubectl(&["delete", "ordersystem", "local", "--timeout=120s"]);
    wait("the children to be gone", || {
        let left = kube.kubectl(&[
            "get",
            "deployments,statefulsets,services,configmaps,pods",
            "-l",
            "app.kubernetes.io/instance=local",
            "-o",
            "name",
        ]);
        if left.trim().is_empty() {
            Ok(())
        } else {
            Err(left)
        }
    })
    .await;
    wait("the topics to be deleted", || {
        let topic = format!("{}.commands", cluster.prefix);
        if common::log::topic_exists(&cluster, &topic) {
            Err(format!("{topic} still exists"))
        } else {
            Ok(())
        }
    })
    .await;
    step("done");
}
