//! Distributed mode against the real Kafka, Redis and FerretDB of `scripts/services`: each test
//! has its own topics, key prefix and database.

mod common;

use common::cluster::{Api, Cluster, Node, services};
use common::log::{assert_exactly_once, events, expected_events, fold};
use common::order;
use oms_core::OrderId;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn instruments() -> Vec<oms_core::Instrument> {
    oms_runtime::default_instruments()
        .into_iter()
        .map(|spec| oms_core::Instrument::new(spec).unwrap())
        .collect()
}

/// A decimal string of the API that is a whole number, as one.
fn whole(value: &Value) -> u64 {
    let text = value.as_str().expect("a decimal string");
    let (int, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert!(fraction.bytes().all(|b| b == b'0'), "{text} is not whole");
    int.parse().unwrap()
}

/// The accounts an API key of the tests trades: the `DESK` key's 16, or alice and bob.
fn accounts_of(api: &Api) -> Vec<String> {
    if api.key == common::DESK {
        (0..common::DESK_ACCOUNTS)
            .map(common::desk_account)
            .collect()
    } else {
        vec!["alice".into(), "bob".into()]
    }
}

/// Order `n` of a deterministic mixed stream: both sides of both instruments around one price,
/// so that about half trade, spread over `accounts` (alice and bob alternate in pairs).
fn nth_order(n: usize, accounts: &[String]) -> String {
    let (symbol, quantity) = if n.is_multiple_of(3) {
        ("ETH-USDT", "0.1000")
    } else {
        ("BTC-USDT", "0.10000")
    };
    let side = if n.is_multiple_of(2) { "buy" } else { "sell" };
    let account = &accounts[(n / 2) % accounts.len()];
    let price = format!("{}.{:02}", 100 + (n * 7) % 3, (n * 13) % 100);
    format!(
        r#"{{"account":"{account}","symbol":"{symbol}","side":"{side}","type":"limit","price":"{price}","quantity":"{quantity}"}}"#
    )
}

/// Sends orders `range` from `clients` concurrent clients spread over `apis`; returns the
/// acknowledged order ids.
async fn send(
    apis: &[Api],
    range: std::ops::Range<usize>,
    clients: usize,
    tag: &str,
) -> Vec<String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (api, next, tag) = (
            apis[client % apis.len()].clone(),
            next.clone(),
            tag.to_string(),
        );
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= end {
                    return acked;
                }
                let order = nth_order(n, &accounts_of(&api));
                let (status, ack) = api.post(&format!("{tag}-{n}"), &order, false).await;
                assert_eq!(status, StatusCode::ACCEPTED, "order {n}: {ack}");
                acked.push(ack["order_id"].as_str().unwrap().to_string());
            }
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked
}

/// Waits until every acknowledged order is in the events topic, then until the projection has
/// each in the state the events give it.
async fn await_projected(api: &Api, acked: &[String], cluster: &Cluster) {
    let expected = await_processed(acked, cluster).await;
    for id in acked {
        let version = expected[&OrderId(id.parse().unwrap())].version;
        api.await_order(id, |order| order["version"].as_u64() >= Some(version))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_roles_in_one_process_round_trip() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "roundtrip", 4);
    let node = cluster.spawn("all", &[]).await;
    let api = Api::new(&node);
    api.fund().await;
    let (status, sell) = api
        .post("r-1", &order("alice", "sell", "100.00", "1"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sell}");
    assert_eq!(sell["status"], "new");
    let (status, buy) = api
        .post("r-2", &order("bob", "buy", "100.00", "0.4"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{buy}");
    assert_eq!(buy["status"], "filled");
    // a replay from Redis is the stored answer
    let (status, again) = api
        .post("r-2", &order("bob", "buy", "100.00", "0.4"), false)
        .await;
    assert_eq!((status, &again), (StatusCode::CREATED, &buy));
    let id = sell["order_id"].as_str().unwrap();
    let (status, canceled) = api.delete("r-3", id, true).await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["filled_quantity"], "0.40000");
    let (status, trades) = api.get("/v1/trades?account=bob").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(trades["trades"][0]["price"], "100.00");
    // the taker's fee (10 bps of the 0.4 BTC bob received), priced as funds charged it
    let fill = &trades["trades"][0];
    assert_eq!(fill["fee_asset"], "BTC", "{fill}");
    assert_eq!(
        fill["fee"].as_str().unwrap().trim_end_matches('0'),
        "0.0004",
        "{fill}"
    );
    let book = api.get("/v1/book/BTC-USDT").await.1;
    assert_eq!(book["bids"], serde_json::json!([]));
    assert_eq!(book["asks"], serde_json::json!([]));
    let ready: Value = reqwest::get(format!("{}/readyz", node.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["checks"],
        serde_json::json!({
            "api": "ok", "kafka": "ok", "mongodb": "ok", "redis": "ok", "funds": "ok",
            "processor": "ok", "projector": "ok"
        })
    );
    // money moved: bob paid 40 USDT (and 10 bps of his BTC), alice holds what is left of hers
    let (status, balances) = api.get("/v1/balances?account=bob").await;
    assert_eq!(status, StatusCode::OK, "{balances}");
    let usdt = balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "USDT")
        .cloned()
        .unwrap();
    assert_eq!(whole(&usdt["available"]), 9_999_960, "{balances}");
    assert_eq!(whole(&usdt["held"]), 0, "{balances}");
    // a market buy by quantity: held at the buy limit the book published, filled
    let (status, _) = api
        .post("r-4", &order("alice", "sell", "100.00", "0.5"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let market =
        r#"{"account":"bob","symbol":"BTC-USDT","side":"buy","type":"market","quantity":"0.5"}"#;
    let (status, bought) = api.post("r-5", market, true).await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    assert_eq!(bought["status"], "filled", "{bought}");
    // once settled, its hold is gone and bob paid 50 more
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, balances) = api.get("/v1/balances?account=bob").await;
        let usdt = balances["balances"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["asset"] == "USDT"))
            .cloned()
            .unwrap_or_default();
        if usdt["held"].is_string() && whole(&usdt["held"]) == 0 {
            assert_eq!(whole(&usdt["available"]), 9_999_910, "{balances}");
            break;
        }
        assert!(Instant::now() < deadline, "hold never released: {balances}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // librdkafka's statistics (every 5 s) give the consumers' lag, -1 until then. Caught up,
    // it is at most the transaction markers after the last record the consumer committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = node.metrics().await;
        let lag = |consumer: &str| -> i64 {
            let prefix = format!("oms_processing_consumer_lag{{consumer=\"{consumer}\"}} ");
            let line = metrics.lines().find(|line| line.starts_with(&prefix));
            line.map_or(-1, |line| line[prefix.len()..].parse().unwrap())
        };
        // (the projector reads two topics: the markers of both)
        let caught_up = [("funds", 2), ("processor", 2), ("projector", 4)]
            .into_iter()
            .all(|(consumer, markers)| (0..=markers).contains(&lag(consumer)));
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag not known or not caught up:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Amend, lookup and cancel by client order id, and mass cancel through the stages; every
/// topic still agrees with a replay of the commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amend_client_ids_and_mass_cancel_through_the_stages() {
    use reqwest::Method;
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "trading", 4);
    let node = cluster.spawn("all", &[]).await;
    let api = Api::new(&node);
    api.fund().await;
    let placed = |key: &'static str, body: String| {
        let api = api.clone();
        async move {
            let (status, order) = api.post(key, &body, true).await;
            assert_eq!(status, StatusCode::CREATED, "{order}");
            order["order_id"].as_str().unwrap().to_string()
        }
    };
    let amend = |key: &'static str, id: String, body: &'static str| {
        let api = api.clone();
        async move {
            api.write(
                Method::PATCH,
                &format!("/v1/orders/{id}"),
                key,
                Some(body),
                true,
            )
            .await
        }
    };
    let filled = |id: String| {
        let api = api.clone();
        async move {
            let order = api.get(&format!("/v1/orders/{id}")).await.1;
            order["filled_quantity"].as_str().unwrap().to_string()
        }
    };

    // priority: kept by a smaller quantity, lost by a larger one
    let first = placed("t-1", order("alice", "sell", "100.00", "1")).await;
    let second = placed("t-2", order("bob", "sell", "100.00", "1")).await;
    let (status, amended) = amend("t-3", first.clone(), r#"{"quantity":"0.5"}"#).await;
    assert_eq!(status, StatusCode::OK, "{amended}");
    assert_eq!(amended["quantity"], "0.50000");
    // (a taker's answer comes when the taker is projected; its maker is written beside it,
    // and may show a moment later)
    placed("t-4", order("bob", "buy", "100.00", "0.5")).await;
    api.await_order(&first, |order| order["filled_quantity"] == "0.50000")
        .await;
    assert_eq!(filled(second.clone()).await, "0.00000");
    let third = placed("t-5", order("alice", "sell", "100.00", "1")).await;
    let (status, amended) = amend("t-6", second.clone(), r#"{"quantity":"2"}"#).await;
    assert_eq!(status, StatusCode::OK, "{amended}");
    placed("t-7", order("bob", "buy", "100.00", "1")).await;
    api.await_order(&third, |order| order["filled_quantity"] == "1.00000")
        .await;
    assert_eq!(filled(second.clone()).await, "0.00000");

    // by client order id
    let body = order("alice", "buy", "90.00", "1").replacen('{', r#"{"client_order_id":"d-1","#, 1);
    let mine = placed("t-8", body).await;
    let (status, found) = api.get("/v1/orders/client/d-1?account=alice").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["order_id"], mine.as_str());
    let (status, canceled) = api
        .write(
            Method::DELETE,
            "/v1/orders/client/d-1?account=alice",
            "t-9",
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["status"], "canceled");

    // mass cancel of every instrument: durable at once, then nothing of alice's stays open
    placed("t-10", order("alice", "buy", "90.00", "1")).await;
    placed(
        "t-11",
        order("alice", "buy", "10.00", "1").replace("BTC-USDT", "ETH-USDT"),
    )
    .await;
    let (status, ack) = api
        .write(
            Method::DELETE,
            "/v1/orders?account=alice",
            "t-12",
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = api.get("/v1/orders?account=alice&status=open").await.1;
        let (_, balances) = api.get("/v1/balances?account=alice").await;
        let held: Vec<&Value> = balances["balances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|balance| &balance["held"])
            .filter(|held| {
                held.as_str()
                    .is_some_and(|h| !h.trim_matches(['0', '.']).is_empty())
            })
            .collect();
        if open["orders"] == serde_json::json!([]) && held.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{open} {balances}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bobs = api.get(&format!("/v1/orders/{second}")).await.1;
    assert_eq!(bobs["status"], "new", "another account's order stays");

    // market data from the projection: the two trades, in the ticker and the candles too
    let (status, trades) = api.get("/v1/markets/BTC-USDT/trades").await;
    assert_eq!(status, StatusCode::OK, "{trades}");
    assert_eq!(trades.as_array().unwrap().len(), 2, "{trades}");
    assert_eq!(trades[0]["quantity"], "1.00000");
    let (_, ticker) = api.get("/v1/markets/BTC-USDT/ticker").await;
    assert_eq!(ticker["last_price"], "100.00", "{ticker}");
    assert_eq!(ticker["volume"], "1.50000", "{ticker}");
    assert_eq!(ticker["trades"], 2, "{ticker}");
    assert_eq!(ticker["best_ask"]["price"], "100.00", "{ticker}");
    // bob's fills a page at a time, through the cursor
    let (_, first) = api.get("/v1/trades?account=bob&limit=1").await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, page) = api
        .get(&format!("/v1/trades?account=bob&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page["trades"][0]["quantity"], "0.50000", "{page}");
    assert_eq!(page["next_cursor"], Value::Null, "{page}");

    // a batch: the good orders journaled (to their accounts' partitions), the bad refused
    let batch = format!(
        r#"{{"orders":[{},{},{}]}}"#,
        order("alice", "buy", "95.00", "1"),
        order("alice", "buy", "95.001", "1"),
        order("bob", "buy", "81.00", "1").replace("BTC-USDT", "ETH-USDT"),
    );
    let (status, answer) = api
        .write(
            Method::POST,
            "/v1/orders/batch",
            "t-13",
            Some(&batch),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer["results"][1]["error"]["code"], "off_tick",
        "{answer}"
    );
    let (again_status, again) = api
        .write(
            Method::POST,
            "/v1/orders/batch",
            "t-13",
            Some(&batch),
            false,
        )
        .await;
    assert_eq!((again_status, &again), (StatusCode::ACCEPTED, &answer));
    for index in [0, 2] {
        let id = answer["results"][index]["order_id"].as_str().unwrap();
        api.await_order(id, |order| order["status"] == "new").await;
    }
    assert_exactly_once(&cluster, &instruments());
}

/// Rate limits and key changes on an ingest process: a key over its quota gets 429 with the
/// headers and recovers; a revoked key gets 401 and a new one works, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_key_changes_on_an_ingest() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "quotas", 2);
    let node = cluster
        .spawn("ingest", &["--keys-reload-every", "200ms"])
        .await;
    let limited = Api::at(&node.api, common::LIMITED);
    let mut refused = None;
    for n in 0..1000 {
        let response = limited
            .client
            .post(format!("{}/v1/orders", limited.base))
            .bearer_auth(&limited.key)
            .header("idempotency-key", format!("q-{n}"))
            .body(order("dave", "buy", "100.00", "1"))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("ratelimit"));
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let refused = refused.expect("never limited");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["ratelimit-policy"], "\"writes\";q=2;w=1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = limited
            .post("q-recovered", &order("dave", "buy", "100.00", "1"), false)
            .await;
        if status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let keys = cluster.dir.path().join("keys.json");
    oms_runtime::auth::revoke_key(&keys, "other").unwrap();
    let fresh = oms_runtime::auth::add_key(
        &keys,
        "fresh",
        vec!["erin".into()],
        vec![oms_runtime::auth::Scope::Read],
        None,
    )
    .unwrap();
    let (old, new) = (
        Api::at(&node.api, common::OTHER),
        Api::at(&node.api, &fresh),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let revoked = old.get("/v1/instruments").await.0 == StatusCode::OK
            && old.get("/v1/orders").await.0 == StatusCode::UNAUTHORIZED;
        let added = new.get("/v1/orders").await.0 == StatusCode::OK;
        if revoked && added {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revoked {revoked}, added {added}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cancel-after deadline set through one ingest fires through another after the first was
/// killed: the deadline lives in Redis, and any ingest takes it when it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_fires_after_its_ingest_is_killed() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "deadman", 2);
    let survivor = cluster.spawn("all", &[]).await;
    let mut doomed = cluster.spawn("ingest", &[]).await;
    let (via, other) = (Api::new(&doomed), Api::new(&survivor));
    via.fund().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, placed) = via
            .post(
                &format!("dm-{n}"),
                &order("alice", "buy", "90.00", "1"),
                true,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        ids.push(placed["order_id"].as_str().unwrap().to_string());
    }
    let (_, bobs) = via
        .post("dm-bob", &order("bob", "buy", "90.00", "1"), true)
        .await;
    let response = via
        .client
        .post(format!("{}/v1/cancel-after", via.base))
        .bearer_auth(&via.key)
        .header("content-type", "application/json")
        .body(r#"{"account":"alice","timeout_seconds":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    doomed.kill9();
    for id in &ids {
        other
            .await_order(id, |order| order["status"] == "canceled")
            .await;
    }
    let (_, bobs) = other
        .get(&format!(
            "/v1/orders/{}",
            bobs["order_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(bobs["status"], "new");
    let (_, switch) = other.get("/v1/cancel-after?account=alice").await;
    assert_eq!(switch["deadline"], Value::Null, "fired, then off");
    assert_exactly_once(&cluster, &instruments());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replay_across_two_ingest_processes() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "twoingest", 4);
    let a = cluster.spawn("all", &[]).await;
    let b = cluster.spawn("ingest", &[]).await;
    let apis = [Api::new(&a), Api::new(&b)];
    apis[0].fund().await;
    let body = order("alice", "buy", "90.00", "1");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (api, body) = (apis[i % 2].clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            api.post("shared-key", &body, false).await
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
        accepted.iter().all(|a| *a == accepted[0]),
        "every 202 is the same answer: {accepted:?}"
    );
    let id = accepted[0]["order_id"].as_str().unwrap();
    apis[1].await_order(id, |_| true).await;
    let (_, list) = apis[1].get("/v1/orders?account=alice").await;
    assert_eq!(
        list["orders"].as_array().unwrap().len(),
        1,
        "exactly one order: {list}"
    );
    // a different body under the same key is refused by either process
    let (status, _) = apis[0]
        .post("shared-key", &order("alice", "buy", "91.00", "1"), false)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Kills the process of stage `role` with SIGKILL while orders stream in, and starts it again:
/// every acknowledged order reaches the projection, and every topic holds exactly what an
/// uninterrupted run writes, message for message.
async fn kill9_mid_stream(name: &str, role: &str) {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, name, 4);
    let ingest = cluster.spawn("ingest", &[]).await;
    let _projector = cluster.spawn("projector", &[]).await;
    let one_shard = ["--shards", "1", "--shard", "0"];
    let mut stages = vec![
        cluster.spawn("funds", &one_shard).await,
        cluster.spawn("processor", &one_shard).await,
    ];
    let api = Api::new(&ingest);
    api.fund().await;
    let victim = if role == "funds" { 0 } else { 1 };
    let mut acked = send(std::slice::from_ref(&api), 0..300, 8, "k").await;
    // kill -9 while commands are still arriving and being processed
    let mut doomed = stages.remove(victim);
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        doomed.kill9();
        doomed
    });
    acked.extend(send(std::slice::from_ref(&api), 300..600, 8, "k").await);
    drop(killer.await.unwrap());
    stages.push(cluster.spawn(role, &one_shard).await);
    acked.extend(send(std::slice::from_ref(&api), 600..700, 8, "k").await);

    // every acknowledged order reaches the projection, in the state the events give it
    await_projected(&api, &acked, &cluster).await;
    assert_eq!(events(&cluster).values().map(Vec::len).sum::<usize>(), 700);
    assert_exactly_once(&cluster, &instruments());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_processor_kill_9() {
    kill9_mid_stream("kill9", "processor").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_funds_kill_9() {
    kill9_mid_stream("kill9funds", "funds").await;
}

/// Deposits and withdrawals `range` for the accounts of `api`'s key, one at a time (a
/// withdrawal takes less than the account was funded with, so none is refused).
async fn transfers(api: &Api, range: std::ops::Range<usize>, tag: &str) {
    let accounts = accounts_of(api);
    for n in range {
        let account = &accounts[n % accounts.len()];
        let (path, amount) = if n % 4 < 2 {
            ("/v1/deposits", "3")
        } else {
            ("/v1/withdrawals", "2")
        };
        let body = format!(r#"{{"account":"{account}","asset":"USDT","amount":"{amount}"}}"#);
        let (status, ack) = api
            .transfer(path, &format!("{tag}-x{n}"), &body, false)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "transfer {n}: {ack}");
    }
}

/// Starts `n` shards of `role`.
async fn shards(cluster: &Cluster, role: &str, n: u32) -> Vec<Node> {
    let mut nodes = Vec::new();
    for shard in 0..n {
        let args = [
            "--shards".to_string(),
            n.to_string(),
            "--shard".to_string(),
            shard.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(cluster.spawn(role, &args).await);
    }
    nodes
}

/// Both stages as `n` shards each.
async fn stages(cluster: &Cluster, n: u32) -> Vec<Node> {
    let mut nodes = shards(cluster, "funds", n).await;
    nodes.extend(shards(cluster, "processor", n).await);
    nodes
}

/// Separate processes (two ingest, two funds, two matching, a projector), thousands of orders
/// of 16 accounts on two symbols with deposits and withdrawals between them, and both stages
/// resharded 2 → 1 → 2 on the way: the same books after each step, every topic exactly what an
/// uninterrupted run writes, money conserved, and the projection's balances those of the
/// stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_of_separate_processes_survives_resharding() {
    use oms_runtime::store::FundsStore;
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "topology", 4);
    let ingest: Vec<Node> = vec![
        cluster.spawn("ingest", &[]).await,
        cluster.spawn("ingest", &[]).await,
    ];
    let _projector = cluster.spawn("projector", &[]).await;
    let apis: Vec<Api> = ingest
        .iter()
        .map(|node| Api::at(&node.api, common::DESK))
        .collect();
    let depth = |api: Api| async move {
        let btc = api.get("/v1/book/BTC-USDT?depth=1000").await.1;
        let eth = api.get("/v1/book/ETH-USDT?depth=1000").await.1;
        (btc, eth)
    };

    let started = std::time::Instant::now();
    let step = |name: &str| eprintln!("topology: {name} at {:?}", started.elapsed());
    let two = stages(&cluster, 2).await;
    step("2 + 2 shards up");
    let accounts = accounts_of(&apis[0]);
    apis[0]
        .fund_accounts(&accounts, &["USDT", "BTC", "ETH"])
        .await;
    let (mut acked, ()) = tokio::join!(
        send(&apis, 0..2000, 16, "t"),
        transfers(&apis[1], 0..40, "t")
    );
    step("2000 sent");
    await_projected(&apis[0], &acked, &cluster).await;
    step("2000 projected");
    let before = depth(apis[0].clone()).await;
    assert!(
        before.0["bids"].as_array().is_some_and(|b| !b.is_empty()),
        "a live book: {:?}",
        before.0
    );

    // 2 shards of each stage -> 1: each single shard takes every partition and rebuilds the
    // same state
    for mut node in two {
        assert!(node.terminate().success());
    }
    let one = stages(&cluster, 1).await;
    assert_eq!(
        depth(apis[0].clone()).await,
        before,
        "books after resharding to 1"
    );
    let (more, ()) = tokio::join!(
        send(&apis, 2000..2300, 16, "t"),
        transfers(&apis[0], 40..60, "t")
    );
    acked.extend(more);
    await_projected(&apis[0], &acked, &cluster).await;
    let middle = depth(apis[0].clone()).await;
    drop(one);

    // 1 -> 2 again
    let _two = stages(&cluster, 2).await;
    assert_eq!(
        depth(apis[1].clone()).await,
        middle,
        "books after resharding to 2"
    );
    let (more, ()) = tokio::join!(
        send(&apis, 2300..2600, 16, "t"),
        transfers(&apis[1], 60..80, "t")
    );
    acked.extend(more);
    await_projected(&apis[1], &acked, &cluster).await;
    step("2600 projected");

    assert_eq!(events(&cluster).values().map(Vec::len).sum::<usize>(), 2600);
    let run = assert_exactly_once(&cluster, &instruments());
    // the projection's balances are the stages': the fee account's parts added up
    let mongo = oms_runtime::store::mongo::MongoStore::connect(
        &services.mongo,
        &cluster.prefix,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    for account in accounts
        .iter()
        .map(String::as_str)
        .chain([oms_core::FEE_ACCOUNT])
    {
        let mut expected: std::collections::BTreeMap<String, oms_core::Balance> =
            std::collections::BTreeMap::new();
        for funds in run.funds.values() {
            for (asset, balance) in funds.balances_of(account) {
                let sum = expected.entry(asset.to_string()).or_default();
                sum.available += balance.available;
                sum.held += balance.held;
            }
        }
        expected.retain(|_, balance| *balance != oms_core::Balance::default());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut projected: std::collections::BTreeMap<String, oms_core::Balance> =
                mongo.balances(account).await.unwrap().into_iter().collect();
            projected.retain(|_, balance| *balance != oms_core::Balance::default());
            if projected == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{account}: projected {projected:?}, the stages hold {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    step("checked");
}

/// Waits until the events topic holds every acknowledged order; gives every order's state.
async fn await_processed(
    acked: &[String],
    cluster: &Cluster,
) -> std::collections::HashMap<OrderId, oms_core::OrderState> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let processed = fold(&events(cluster));
        let missing = acked
            .iter()
            .filter(|id| !processed.contains_key(&OrderId(id.parse().unwrap())))
            .count();
        if missing == 0 {
            return processed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} acknowledged orders never processed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A stage's recovery after a failed transaction, with one partition's recovery failing too:
/// every topic holds exactly what an uninterrupted run writes, every input position once.
async fn failed_commit_and_recovery(name: &str, role: &str) {
    use oms_runtime::health::Health;
    use oms_runtime::metrics::Metrics;
    use oms_runtime::processing::kafka::{Faults, StageConfig, run_funds, run_processor};
    use oms_runtime::store::kafka::KafkaConfig;
    use oms_runtime::store::mongo::MongoStore;
    use oms_runtime::store::redis::{RedisConfig, RedisStore};
    use std::sync::atomic::{AtomicBool, Ordering};

    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, name, 4);
    let ingest = cluster.spawn("ingest", &[]).await;
    // the other stage, as a process
    let other = if role == "funds" {
        "processor"
    } else {
        "funds"
    };
    let _other = cluster
        .spawn(other, &["--shards", "1", "--shard", "0"])
        .await;
    let api = Api::new(&ingest);
    let timeout = Duration::from_secs(2);
    let metrics = Arc::new(Metrics::new());
    // The start recovers all 4 partitions; after the third commit fails, the second partition
    // recovered fails once, while the others recover.
    let faults = Arc::new(Faults::default());
    faults.commit.store(3, Ordering::SeqCst);
    faults.recovery.store(4 + 2, Ordering::SeqCst);
    let config = StageConfig {
        kafka: KafkaConfig {
            bootstrap: services.kafka.clone(),
            prefix: cluster.prefix.clone(),
            properties: Vec::new(),
            timeout,
        },
        shard: 0,
        shards: 1,
        snapshot_every: 50,
        instruments: instruments(),
        limits: oms_core::RiskLimits::default(),
        mongo: MongoStore::connect(&services.mongo, &cluster.prefix, timeout)
            .await
            .unwrap(),
        redis: RedisStore::connect(RedisConfig {
            url: services.redis.clone(),
            password: None,
            prefix: cluster.prefix.clone(),
            ttl: Duration::from_secs(600),
            timeout,
        })
        .await
        .unwrap(),
        metrics: metrics.clone(),
        health: Health::new(metrics.clone()),
        faults: faults.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stage = {
        let (stop, handle) = (stop.clone(), tokio::runtime::Handle::current());
        let run = if role == "funds" {
            run_funds
        } else {
            run_processor
        };
        std::thread::spawn(move || run(&config, &handle, &stop))
    };
    // Deposits are processed by the funds stage: the projector is not running, so read the
    // ledger topic instead of waiting on the API.
    for (key, body) in common::funding("alice")
        .into_iter()
        .chain(common::funding("bob"))
    {
        let (status, ack) = api.transfer("/v1/deposits", &key, &body, false).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    }
    // In rounds, each processed before the next is sent: one transaction or more per round.
    let mut acked = Vec::new();
    for round in 0..5 {
        let range = round * 80..(round + 1) * 80;
        acked.extend(send(std::slice::from_ref(&api), range, 8, "f").await);
        await_processed(&acked, &cluster).await;
    }
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || stage.join().unwrap().unwrap())
        .await
        .unwrap();
    assert_eq!(
        faults.commit.load(Ordering::SeqCst),
        0,
        "the commit failure happened"
    );
    assert_eq!(
        faults.recovery.load(Ordering::SeqCst),
        0,
        "the recovery failure happened"
    );

    // Every command position once, in order (the funds stage writes the commands topic in
    // transactions, so its offsets skip the transaction markers; the comparison below checks
    // that none is missing).
    let written = events(&cluster);
    for (partition, processed) in &written {
        let offsets: Vec<u64> = processed.iter().map(|p| p.position.offset).collect();
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "partition {partition}: a duplicate or a reordering: {offsets:?}"
        );
    }
    assert_eq!(written.values().map(Vec::len).sum::<usize>(), 400);
    assert_exactly_once(&cluster, &instruments());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_failed_commit_and_a_failed_recovery() {
    failed_commit_and_recovery("faults", "processor").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funds_exactly_once_across_a_failed_commit_and_a_failed_recovery() {
    failed_commit_and_recovery("faultsfunds", "funds").await;
}

/// Every role restarts on the state it left, after SIGTERM and after kill -9: no acknowledged
/// order is lost, and the projector comes up again on its existing database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_restarts_on_existing_state() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "restart", 4);
    let roles = || async {
        vec![
            cluster.spawn("ingest", &[]).await,
            cluster
                .spawn("funds", &["--shards", "1", "--shard", "0"])
                .await,
            cluster
                .spawn("processor", &["--shards", "1", "--shard", "0"])
                .await,
            cluster.spawn("projector", &[]).await,
        ]
    };
    let mut nodes = roles().await;
    Api::new(&nodes[0]).fund().await;
    let mut acked = send(&[Api::new(&nodes[0])], 0..200, 8, "r").await;
    await_projected(&Api::new(&nodes[0]), &acked, &cluster).await;
    for node in &mut nodes {
        assert!(node.terminate().success(), "a clean exit on SIGTERM");
    }
    let mut nodes = roles().await;
    acked.extend(send(&[Api::new(&nodes[0])], 200..400, 8, "r").await);
    for node in &mut nodes {
        node.kill9();
    }
    let nodes = roles().await;
    let api = Api::new(&nodes[0]);
    acked.extend(send(std::slice::from_ref(&api), 400..500, 8, "r").await);
    await_projected(&api, &acked, &cluster).await;
    assert_eq!(events(&cluster).values().map(Vec::len).sum::<usize>(), 500);
    assert_exactly_once(&cluster, &instruments());
}

/// Opens a transaction of a stranger (`transactional_id`) that holds offsets of `group` for
/// partition 0 of `topic` pending while it stays open.
fn pending_offsets(kafka: &str, transactional_id: &str, group: &str, topic: &str) -> BaseProducer {
    let config = |key: &str, value: &str| {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", kafka).set(key, value);
        config
    };
    let producer: BaseProducer = config("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "600000")
        .create()
        .unwrap();
    let wait = Duration::from_secs(30);
    producer.init_transactions(wait).unwrap();
    producer.begin_transaction().unwrap();
    let member: BaseConsumer = config("group.id", group).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    let metadata = member.group_metadata().unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &metadata, wait)
        .unwrap();
    producer
}

/// Recovery reads a partition's committed offsets even while a transaction holds offsets of it
/// pending. After a Kafka restart the broker was seen holding such offsets for good (a
/// transaction aborted without their marker; see "A broker restart" in docs/architecture.md);
/// a read of stable offsets then failed every recovery of that funds partition. Here a
/// stranger's open transaction holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_reads_offsets_that_a_transaction_holds_pending() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "pending", 1);
    let mut node = cluster.spawn("all", &[]).await;
    Api::new(&node).fund().await;
    // A clean exit: a killed projector would hold its group for the session timeout.
    assert!(node.terminate().success());
    let (kafka, prefix) = (cluster.services.kafka.clone(), cluster.prefix.clone());
    let stranger = tokio::task::spawn_blocking(move || {
        let (group, topic) = (format!("{prefix}.funds"), format!("{prefix}.accounts"));
        pending_offsets(&kafka, &format!("{prefix}.stranger"), &group, &topic)
    })
    .await
    .unwrap();
    let node = cluster.spawn("all", &[]).await;
    let (status, placed) = Api::new(&node)
        .post("pending-1", &order("alice", "buy", "10.00", "1"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["status"], "new", "{placed}");
    stranger.abort_transaction(Duration::from_secs(30)).unwrap();
}

/// The runtime reads `OMS_KAFKA_PROPERTIES` in the Secret's format (one per line, comments),
/// as the operator hands it to pods, and applies them: a value that swallowed the next lines
/// would be refused by librdkafka and the process would never be ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_properties_in_the_secret_format_reach_the_broker() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "properties", 2);
    let properties = "# as in a Secret's kafka.properties\nsecurity.protocol=PLAINTEXT\n\nclient.id=oms-properties-test\nsocket.keepalive.enable=true\n";
    let node = cluster.start("all", &[], &[("OMS_KAFKA_PROPERTIES", properties)]);
    node.wait_ready(Duration::from_secs(60)).await;
    let (status, placed) = Api::new(&node)
        .post("p-1", &order("alice", "buy", "10.00", "1"), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    // a malformed text is refused at start with the line, not applied half
    let mut bad = cluster.start("all", &[], &[("OMS_KAFKA_PROPERTIES", "a=1\nnot-a-pair\n")]);
    let exit = tokio::task::spawn_blocking(move || bad.child.wait().unwrap())
        .await
        .unwrap();
    assert!(!exit.success());
}

/// Produces raw records to the partition of `key` in topic `<prefix>.<suffix>`, as a foreign
/// or newer writer would.
async fn produce_raw(cluster: &Cluster, suffix: &str, key: &str, payloads: &[Vec<u8>]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cluster.services.kafka)
        .create()
        .unwrap();
    let partition = oms_runtime::store::kafka::partition_of(key, cluster.partitions) as i32;
    let topic = format!("{}.{suffix}", cluster.prefix);
    for payload in payloads {
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(partition)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// A record whose origin reads but whose command does not, written to `<prefix>.<suffix>` in
/// the partition of `key` after `head` (its format and kind bytes), then a record that is none
/// of ours: the first is rejected, not skipped (its request learns it on a retry: 422), both
/// are counted, and the partition goes on. Gives the cluster, the node and the origin.
async fn unreadable_is_answered(
    services: &common::cluster::Services,
    name: &str,
    suffix: &str,
    key: &str,
    head: &[u8],
) -> (Cluster, Node, oms_runtime::store::Origin) {
    let cluster = Cluster::new(services, name, 2);
    let node = cluster.spawn("all", &[]).await;
    let api = Api::new(&node);
    let body = order("alice", "buy", "10.00", "1");
    let origin = oms_runtime::store::Origin {
        principal: "trader".into(),
        key: "bad-1".into(),
        fingerprint: oms_runtime::api::write::fingerprint("POST", "/v1/orders", body.as_bytes()),
    };
    let mut unreadable = head.to_vec();
    unreadable.extend(postcard::to_allocvec(&origin).unwrap());
    unreadable.extend([0xff, 0xff, 0xff]);
    produce_raw(&cluster, suffix, key, &[unreadable, vec![0, 1, 2]]).await;
    // the partition goes on after both
    let (status, placed) = api.post("good-1", &body, true).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let (status, answer) = api.post("bad-1", &body, false).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["code"], "command_unreadable");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("oms_processing_undecodable_records_total 2"),
        "{metrics}"
    );
    (cluster, node, origin)
}

/// A command record the matching stage cannot read: also an event says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_command_is_rejected_and_answered() {
    use oms_runtime::store::kafka::COMMAND_FORMAT;
    let Some(services) = services() else { return };
    let (cluster, _node, origin) = unreadable_is_answered(
        &services,
        "unreadable",
        "commands",
        "BTC-USDT",
        &[COMMAND_FORMAT],
    )
    .await;
    let (written, expected) = (events(&cluster), expected_events(&cluster, &instruments()));
    assert_eq!(written, expected);
    let rejected: Vec<_> = written
        .values()
        .flatten()
        .filter(|p| p.rejected.is_some())
        .collect();
    assert_eq!(rejected.len(), 1, "one rejection event");
    assert_eq!(rejected[0].origin, origin);
}

/// A client's command the funds stage cannot read: every topic is still that of an
/// uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_client_command_is_rejected_by_the_funds_stage() {
    use oms_runtime::store::kafka::ACCOUNTS_FORMAT;
    let Some(services) = services() else { return };
    let head = [ACCOUNTS_FORMAT, 0];
    let (cluster, _node, _) =
        unreadable_is_answered(&services, "unreadablefunds", "accounts", "alice", &head).await;
    assert_exactly_once(&cluster, &instruments());
}

/// A record of a newer format in `<prefix>.<suffix>`, partition of `key`, is never skipped:
/// the stage whose readiness check is `check` waits for an upgrade, says `upgrade` there, and
/// nothing after the record is applied on that partition meanwhile (an order sent after it
/// stays unknown). Gives the cluster.
async fn newer_format_halts(
    services: &common::cluster::Services,
    name: &str,
    (suffix, key): (&str, &str),
    record: Vec<u8>,
    (check, upgrade): (&str, &str),
) -> Cluster {
    let cluster = Cluster::new(services, name, 2);
    let node = cluster.spawn("all", &[]).await;
    let api = Api::new(&node);
    produce_raw(&cluster, suffix, key, &[record]).await;
    let (status, accepted) = api
        .post("after-newer", &order("alice", "buy", "10.00", "1"), false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = node.readiness().await;
        let said = ready["checks"][check].as_str().unwrap_or_default();
        if status == StatusCode::SERVICE_UNAVAILABLE && said.contains(upgrade) {
            break;
        }
        assert!(Instant::now() < deadline, "no visible halt: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = accepted["order_id"].as_str().unwrap();
    let (status, _) = api.get(&format!("/v1/orders/{id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing after the newer record is applied"
    );
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_accounts_format_halts_the_funds_stage_visibly() {
    use oms_runtime::store::kafka::ACCOUNTS_FORMAT;
    let Some(services) = services() else { return };
    let record = vec![ACCOUNTS_FORMAT + 1, 1, 2, 3];
    let place = ("accounts", "alice");
    let check = ("funds", "upgrade the funds stage");
    newer_format_halts(&services, "newerfunds", place, record, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_command_format_halts_its_partition_visibly() {
    use oms_runtime::store::kafka::COMMAND_FORMAT;
    let Some(services) = services() else { return };
    let record = vec![COMMAND_FORMAT + 1, 1, 2, 3];
    let place = ("commands", "BTC-USDT");
    let check = ("processor", "upgrade the processors");
    let cluster = newer_format_halts(&services, "newer", place, record, check).await;
    assert!(
        events(&cluster).values().all(Vec::is_empty),
        "no event past the newer record"
    );
}

/// An events record of `payload` on the partition of BTC-USDT, with the format header if given.
async fn produce_event(cluster: &Cluster, payload: &[u8], format: Option<u8>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cluster.services.kafka)
        .create()
        .unwrap();
    let partition = oms_runtime::store::kafka::partition_of("BTC-USDT", cluster.partitions) as i32;
    let topic = format!("{}.events", cluster.prefix);
    let mut record = FutureRecord::to(&topic)
        .partition(partition)
        .key("BTC-USDT")
        .payload(payload);
    if let Some(format) = format {
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: "oms-format",
            value: Some(&[format]),
        }));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
}

/// An events payload accepting order `id` of alice, in the layout of format 1 (before quote
/// budgets): today's bytes without the `None` that ends the order.
fn accepted_v1(id: u64) -> Vec<u8> {
    use oms_core::{Event, EventRecord, NewOrder, Price, Quantity, Timestamp};
    use oms_runtime::processing::Processed;
    use oms_runtime::store::{LogPosition, Origin};
    let order = NewOrder {
        order_id: OrderId(id),
        client_order_id: format!("v1-{id}").into(),
        account: "alice".into(),
        symbol: "BTC-USDT".into(),
        side: oms_core::Side::Buy,
        order_type: oms_core::OrderType::Limit,
        time_in_force: oms_core::TimeInForce::Gtc,
        price: Some(Price(1_000)),
        quantity: Quantity(10_000),
        post_only: false,
        self_trade_prevention: oms_core::SelfTradePrevention::None,
        quote_quantity: None,
    };
    let order_bytes = postcard::to_allocvec(&order).unwrap();
    let processed = Processed {
        position: LogPosition {
            partition: 0,
            offset: id,
        },
        origin: Origin {
            principal: "old-build".into(),
            key: format!("k-{id}"),
            fingerprint: "f".into(),
        },
        records: vec![EventRecord {
            seq: id,
            ts: Timestamp(id),
            symbol: "BTC-USDT".into(),
            event: Event::Accepted { order },
        }],
        rejected: None,
    };
    let mut bytes = postcard::to_allocvec(&processed).unwrap();
    let at = bytes
        .windows(order_bytes.len())
        .position(|window| window == order_bytes)
        .unwrap();
    bytes.remove(at + order_bytes.len() - 1);
    bytes
}

/// Events an earlier build wrote (format 1, no header) are projected by this one; a record of
/// a newer format is never skipped: the projector says so in readiness and projects nothing
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_format_1_project_and_a_newer_format_halts_the_projector() {
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "eventformat", 2);
    let node = cluster.spawn("all", &[]).await;
    let api = Api::new(&node);
    produce_event(&cluster, &accepted_v1(901), None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, order) = api.get("/v1/orders/901").await;
        if status == StatusCode::OK {
            assert_eq!(order["client_order_id"], "v1-901", "{order}");
            assert_eq!(order["quote_quantity"], Value::Null, "{order}");
            break;
        }
        assert!(Instant::now() < deadline, "format 1 event not projected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce_event(&cluster, &[1, 2, 3], Some(99)).await;
    produce_event(&cluster, &accepted_v1(902), None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = node.readiness().await;
        let projector = ready["checks"]["projector"].as_str().unwrap_or_default();
        if status == StatusCode::SERVICE_UNAVAILABLE && projector.contains("upgrade the projectors")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no visible halt: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = api.get("/v1/orders/902").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing after the newer record is projected"
    );
}

/// Checks that every order's versions go 1, 2, 3, ... and gives each order's last state.
fn last_states(seen: &[Value]) -> std::collections::HashMap<String, Value> {
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    for message in seen.iter().filter(|m| m["type"] == "order") {
        let order = &message["order"];
        let id = order["order_id"].as_str().unwrap().to_string();
        let before = last.get(&id).map_or(0, |o| o["version"].as_u64().unwrap());
        assert_eq!(
            order["version"],
            before + 1,
            "a gap in order {id}: {message}"
        );
        last.insert(id, order.clone());
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_the_logs_and_resume_on_another_ingest() {
    use oms_runtime::streams::client::StreamClient;
    let Some(services) = services() else { return };
    let cluster = Cluster::new(&services, "streams", 2);
    let all = cluster.spawn("all", &[]).await;
    let mut doomed = cluster.spawn("ingest", &[]).await;
    let api = Api::new(&all);
    api.fund().await;
    let ws = |node: &Node| format!("{}/v1/ws", node.api.replace("http://", "ws://"));
    let (mut client, welcome) = StreamClient::connect(&ws(&doomed), common::TRADER)
        .await
        .unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    for (channel, name) in [
        ("orders", "alice"),
        ("orders", "bob"),
        ("fills", "alice"),
        ("balances", "alice"),
        ("book", "BTC-USDT"),
        ("trades", "BTC-USDT"),
    ] {
        client.subscribe(channel, name, None).await.unwrap();
    }
    // Orders go in through the other process: the stream follows the logs, not its own pod.
    let place = |key: &'static str, body: String| {
        let api = &api;
        async move {
            let (status, placed) = api.post(key, &body, true).await;
            assert_eq!(status, StatusCode::CREATED, "{placed}");
            placed["order_id"].as_str().unwrap().to_string()
        }
    };
    place("ws-1", order("bob", "sell", "100.00", "2")).await;
    place("ws-2", order("bob", "sell", "101.00", "1.5")).await;
    let bid = place("ws-3", order("alice", "buy", "90.00", "1")).await;
    let (status, amended) = api
        .write(
            reqwest::Method::PATCH,
            &format!("/v1/orders/{bid}"),
            "ws-4",
            Some(r#"{"price":"90.10"}"#),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{amended}");
    let ask = place("ws-5", order("bob", "sell", "90.10", "0.4")).await;
    let (status, canceled) = api.delete("ws-6", &bid, true).await;
    assert!(status.is_success(), "{canceled}");
    api.await_order(&bid, |o| o["status"] == "canceled").await;

    let seen = common::streams::drain(&mut client, Duration::from_secs(2)).await;
    let last = last_states(&seen);
    assert_eq!(last.len(), 4, "{last:?}");
    for (id, state) in &last {
        let rest = api
            .await_order(id, |o| o["version"] == state["version"])
            .await;
        assert_eq!(state, &rest, "order {id}");
    }
    assert_eq!(last[&bid]["status"], "canceled");
    assert_eq!(last[&ask]["status"], "filled");
    let fills: Vec<&Value> = seen
        .iter()
        .filter(|m| m["type"] == "fill")
        .map(|m| &m["fill"])
        .collect();
    let (_, rest) = api.get("/v1/trades?account=alice").await;
    assert_eq!(
        fills,
        rest["trades"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
    );
    assert!(seen.iter().any(|m| m["type"] == "balance"));
    assert_eq!(seen.iter().filter(|m| m["type"] == "trade").count(), 1);

    // The book from its snapshot and updates is the book the REST API shows.
    let mut book = common::streams::Book::default();
    for message in &seen {
        book.apply(message);
    }
    let (_, rest) = api.get("/v1/book/BTC-USDT?depth=100").await;
    book.assert_matches(&rest);

    // The pod dies; the client resumes on the other one from its last cursor, missing nothing.
    let cursor = seen
        .iter()
        .rev()
        .find_map(|m| m["cursor"].as_str())
        .unwrap()
        .to_string();
    doomed.kill9();
    let later = place("ws-7", order("alice", "buy", "89.00", "1")).await;
    let (mut client, _) = StreamClient::connect(&ws(&all), common::TRADER)
        .await
        .unwrap();
    let ack = client
        .subscribe("orders", "alice", Some(&cursor))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["replayed"], 1, "{ack}");
    let resumed = client.update(Duration::from_secs(10)).await.unwrap();
    assert_eq!(resumed["order"]["order_id"], later.as_str(), "{resumed}");
    assert_eq!(resumed["order"]["version"], 1);
    let more = place("ws-8", order("alice", "buy", "88.00", "1")).await;
    let live = client.update(Duration::from_secs(10)).await.unwrap();
    assert_eq!(live["order"]["order_id"], more.as_str(), "{live}");
}
