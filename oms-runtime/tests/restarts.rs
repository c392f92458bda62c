//! Kafka restarted again and again under a trickle of orders: after each restart the whole path
//! (ingest, funds, matching, projection) works again, without restarting the process.
//!
//! It found three ways a restart left the pipeline stuck for good (see "A broker restart" in
//! docs/architecture.md): a client librdkafka left without brokers (the ingest timing out every
//! append), a `send_offsets_to_transaction` that never returned (a stage stalled), and offsets
//! the broker kept pending for a transaction it had aborted (every recovery of a funds
//! partition timing out). Which restart meets one is chance, so the test restarts several
//! times. One sequential test: it stops the Kafka that other tests use.

mod common;

use common::cluster::{Api, Cluster, services};
use common::order;
use reqwest::StatusCode;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Restarts per run: each meets one of those states by chance, so more find them more often.
const RESTARTS: u64 = 5;
/// How long the path may take to work again after a restart: usually 2–10 s, up to about 25 s when
/// a stage gives up a hung call (15 s) and recovers. A stuck pipeline never works again.
const RECOVERY: Duration = Duration::from_secs(180);

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

        // An order placed now goes through every stage and into the projection. A 202 is an
        // order on its way whose outcome the wait did not see; its key keeps that answer, so
        // the order is followed by its id from then on, not posted again.
        let started = Instant::now();
        let deadline = started + RECOVERY;
        let key = format!("after-restart-{restart}");
        let id = loop {
            let (status, placed) = api
                .post(&key, &order("bob", "buy", "45.00", "1"), true)
                .await;
            match status {
                StatusCode::CREATED | StatusCode::ACCEPTED => {
                    break placed["order_id"].as_str().unwrap().to_string();
                }
                // the broker electing its coordinators, a failed append (its key released), or
                // the previous try still running
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT
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
        let projected = loop {
            let (status, order) = api.get(&format!("/v1/orders/{id}")).await;
            if status == StatusCode::OK && order["status"] == "new" {
                break order;
            }
            if Instant::now() > deadline {
                let (_, ready) = node.readiness().await;
                panic!("restart {restart}: order {id}: {status} {order}; readiness {ready}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        eprintln!(
            "restart {restart}: an order went through after {:?}",
            started.elapsed()
        );
        assert_eq!(projected["account"], "bob", "restart {restart}");
    }
    trickle.abort();
    node.wait_ready(Duration::from_secs(60)).await;
}
