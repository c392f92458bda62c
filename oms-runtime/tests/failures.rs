//! Dependency failures, by stopping the real services and starting them again: a failing
//! dependency gives a fast 503 with Retry-After, leaves no idempotency key in flight, and the
//! system recovers when it returns. One sequential test: it stops services other tests use.

mod common;

use common::cluster::{Api, Cluster, services};
use common::order;
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// A stopped service, started again when dropped (also when an assertion fails).
struct Outage {
    script: std::path::PathBuf,
    name: &'static str,
}

impl Outage {
    fn begin(script: &std::path::Path, name: &'static str) -> Outage {
        let status = Command::new(script).args(["down", name]).status().unwrap();
        assert!(status.success(), "could not stop {name}");
        Outage {
            script: script.to_path_buf(),
            name,
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        let status = Command::new(&self.script)
            .args(["up", self.name])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "could not start {} again", self.name);
    }
}

/// A request against a failed dependency: 503, Retry-After, and well inside the bound.
async fn assert_fast_503(api: &Api, key: &str, body: &str) {
    let started = Instant::now();
    let response = api
        .client
        .post(format!("{}/v1/orders", api.base))
        .bearer_auth(common::TRADER)
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["code"], "unavailable");
    // the dependency timeout is 2 s; anything near 10 s would be a hang, not a fast failure
    assert!(elapsed < Duration::from_secs(10), "503 took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_failures_fail_fast_and_recover() {
    let Some(services) = services() else { return };
    down_at_start(&services).await;
    let cluster = Cluster::new(&services, "failures", 2);
    let node = cluster.spawn("all", &[]).await;
    let api = Api::new(&node);
    api.fund().await;
    let (status, first) = api
        .post("f-0", &order("alice", "buy", "50.00", "1"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first_id = first["order_id"].as_str().unwrap().to_string();

    // Redis down: writes fail closed (never a duplicate), reads from MongoDB still work.
    {
        let _redis = Outage::begin(&services.script, "redis");
        let body = order("alice", "buy", "51.00", "1");
        assert_fast_503(&api, "f-redis", &body).await;
        let (status, _) = api.get(&format!("/v1/orders/{first_id}")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, ready) = node.readiness().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
        assert_ne!(ready["checks"]["redis"], "ok");
    }
    node.wait_ready(Duration::from_secs(60)).await;
    let (status, placed) = api
        .post("f-redis", &order("alice", "buy", "51.00", "1"), true)
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the key was never taken: {placed}"
    );
    // keys stored before the outage survived it: a retry is still a replay
    let (status, replay) = api
        .post("f-0", &order("alice", "buy", "50.00", "1"), false)
        .await;
    assert_eq!((status, &replay), (StatusCode::CREATED, &first));

    // Kafka down: writes get 503 within the bound and release their key.
    {
        let _kafka = Outage::begin(&services.script, "kafka");
        assert_fast_503(&api, "f-kafka", &order("alice", "buy", "52.00", "1")).await;
        let (status, _) = api.get(&format!("/v1/orders/{first_id}")).await;
        assert_eq!(status, StatusCode::OK, "reads do not need Kafka");
        // let the failed append's own timeout pass, so its key is released
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    node.wait_ready(Duration::from_secs(90)).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let placed = loop {
        let (status, placed) = api
            .post("f-kafka", &order("alice", "buy", "52.00", "1"), true)
            .await;
        match status {
            StatusCode::CREATED => break placed,
            // the broker may still be electing its coordinators right after the restart
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::ACCEPTED if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => panic!("after Kafka returned: {other} {placed}"),
        }
    };
    assert_eq!(
        placed["status"], "new",
        "processed after Kafka returned: {placed}"
    );

    // MongoDB down: writes still succeed, reads 503, the projection catches up afterwards.
    let accepted = {
        let _mongo = Outage::begin(&services.script, "mongo");
        let (status, accepted) = api
            .post("f-mongo", &order("bob", "buy", "53.00", "1"), false)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let started = Instant::now();
        let (status, error) = api.get(&format!("/v1/orders/{first_id}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // the projector cannot write the accepted order: it says so in readiness
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, ready) = node.readiness().await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
            let projector = ready["checks"]["projector"].as_str().unwrap_or_default();
            // (the order's events, or its hold in the ledger: whichever write comes first)
            if projector.starts_with("failing:") && projector.contains("projection write failed") {
                break;
            }
            assert!(Instant::now() < deadline, "projector not failing: {ready}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        accepted
    };
    node.wait_ready(Duration::from_secs(60)).await;
    let id = accepted["order_id"].as_str().unwrap();
    let caught_up = api.await_order(id, |order| order["status"] == "new").await;
    assert_eq!(caught_up["account"], "bob");
    let (status, ready) = node.readiness().await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["checks"]["projector"], "ok");
}

/// A dependency down at start: the process opens its admin port at once and stays live (so a
/// liveness probe never restarts it), is not ready and says why, and becomes ready without a
/// restart once the dependency is back.
async fn down_at_start(services: &common::cluster::Services) {
    let cluster = Cluster::new(services, "downatstart", 2);
    let mut node = {
        let _kafka = Outage::begin(&services.script, "kafka");
        let mut node = cluster.start("all", &[], &[]);
        let until = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(node.alive(), "exited while Kafka was down");
            let Ok(live) = reqwest::get(format!("{}/healthz", node.admin)).await else {
                assert!(seen == 0, "admin port closed after it opened");
                continue;
            };
            assert_eq!(live.status(), StatusCode::OK);
            let (status, ready) = node.readiness().await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
            let kafka = ready["checks"]["kafka"].as_str().unwrap_or_default();
            assert!(kafka.starts_with("starting: waiting for kafka"), "{ready}");
            seen += 1;
        }
        assert!(seen >= 50, "admin port answered only {seen} times in 60 s");
        node
    };
    node.wait_ready(Duration::from_secs(120)).await;
    assert!(node.alive());
    let api = Api::new(&node);
    let (status, placed) = api
        .post("late-1", &order("alice", "buy", "10.00", "1"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
}
