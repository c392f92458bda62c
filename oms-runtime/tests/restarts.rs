//! Kafka restarted again and again under a trickle of orders: after each restart the whole path
//! (ingest, funds, matching, projection) works again, without restarting the process.
//!
//! A broker that is starting answers Metadata with its topics and no brokers; librdkafka then
//! drops every broker it knew, and a client that asked at that moment never asks again
//! (`store/kafka/rebootstrap.rs`). Before the cure, one restart in several left the ingest
//! timing out every append for good, or a funds stage hung in its transaction. Which restart
//! strands a client is chance, so the test restarts several times. One sequential test: it stops
//! the Kafka that other tests use.

mod common;

use common::cluster::{Api, Cluster, services};
use common::order;
use reqwest::StatusCode;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Restarts per run; each strands some client by chance, so more find it more often.
const RESTARTS: u64 = 5;
/// How long the path may take to work again after a restart. Usually 2–10 s; once in about 55
/// restarts a funds partition could not read its committed offsets for over 80 s (see "Known
/// limitations" in docs/architecture.md). A stranded client never works again.
const RECOVERY: Duration = Duration::from_secs(300);

// Not in `scripts/test`: besides the stranded clients it was written for (cured), it meets two
// rarer stalls after a restart that are not explained yet (docs/architecture.md, "Known
// limitations") and failed 2 of 3 CI runs on them. Run it with
// `cargo test -p oms-runtime --test restarts -- --ignored` after `scripts/services up`.
#[ignore = "meets unexplained stalls after Kafka restarts; see docs/architecture.md"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kafka_restart_is_followed_by_working_writes() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "restarts", 2);
    let node = cluster.spawn("all", &[]).await;
    let api = Api::new(&node);
    api.fund().await;
    // Orders keep arriving through every outage, as they would from clients.
    let trickle = {
        let base = api.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0u64.. {
                let _ = client
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(common::TRADER)
                    .header("idempotency-key", format!("trickle-{i}"))
                    .body(order("alice", "buy", "40.00", "1"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for restart in 0..RESTARTS {
        let down = Command::new(&services.script)
            .args(["down", "kafka"])
            .status()
            .unwrap();
        assert!(down.success(), "could not stop kafka");
        tokio::time::sleep(Duration::from_secs(1 + restart % 4)).await;
        let up = Command::new(&services.script)
            .args(["up", "kafka"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(up.success(), "could not start kafka again");

        // An order placed now goes through every stage and into the projection.
        let started = Instant::now();
        let deadline = started + RECOVERY;
        let key = format!("after-restart-{restart}");
        let placed = loop {
            let (status, placed) = api
                .post(&key, &order("bob", "buy", "45.00", "1"), true)
                .await;
            match status {
                StatusCode::CREATED => break placed,
                // the broker electing its coordinators, a failed append (its key released), an
                // order on its way, or the previous try still running
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::ACCEPTED | StatusCode::CONFLICT
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => {
                    let (_, ready) = node.readiness().await;
                    panic!("restart {restart}: {other} {placed}; readiness {ready}")
                }
            }
        };
        eprintln!(
            "restart {restart}: an order went through after {:?}",
            started.elapsed()
        );
        assert_eq!(placed["status"], "new", "restart {restart}: {placed}");
        let id = placed["order_id"].as_str().unwrap();
        let projected = api.await_order(id, |order| order["status"] == "new").await;
        assert_eq!(projected["account"], "bob", "restart {restart}");
    }
    trickle.abort();
    node.wait_ready(Duration::from_secs(60)).await;
}
