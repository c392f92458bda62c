//! The trading API beyond place and cancel, in single-node mode through the router: amend,
//! mass cancel, client order ids, the clock. Every refusal at the edge journals nothing.

mod common;

use axum::http::StatusCode;
use common::{Call, LIMITED, OTHER, READER, Reply, TRADER, order, start};
use serde_json::Value;

/// Places `body` with `key`, waiting for the outcome; gives the order id.
async fn place(router: &axum::Router, key: &str, idempotency: &str, body: &str) -> String {
    let reply = Call::new("POST", "/v1/orders")
        .key(Some(key))
        .idempotency(idempotency)
        .prefer("wait=5")
        .body(body)
        .send(router)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json["order_id"].as_str().unwrap().to_string()
}

fn eth(account: &str, side: &str, price: &str, quantity: &str) -> String {
    order(account, side, price, quantity).replace("BTC-USDT", "ETH-USDT")
}

fn with_client_id(body: &str, client_order_id: &str) -> String {
    body.replacen(
        '{',
        &format!(r#"{{"client_order_id":"{client_order_id}","#),
        1,
    )
}

async fn amend(router: &axum::Router, id: &str, idempotency: &str, body: &str) -> Reply {
    Call::new("PATCH", &format!("/v1/orders/{id}"))
        .idempotency(idempotency)
        .prefer("wait=5")
        .body(body)
        .send(router)
        .await
}

async fn get(router: &axum::Router, path: &str) -> Value {
    let reply = Call::new("GET", path).send(router).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    reply.json
}

async fn status(router: &axum::Router, id: &str) -> (String, String) {
    let order = get(router, &format!("/v1/orders/{id}")).await;
    (
        order["status"].as_str().unwrap().to_string(),
        order["filled_quantity"].as_str().unwrap().to_string(),
    )
}

async fn held(router: &axum::Router, account: &str, asset: &str) -> String {
    let key = if account == "carol" { OTHER } else { TRADER };
    let reply = Call::new("GET", &format!("/v1/balances?account={account}"))
        .key(Some(key))
        .send(router)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let balances = reply.json;
    balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == asset)
        .map(|b| b["held"].as_str().unwrap().to_string())
        .unwrap()
}

#[tokio::test]
async fn amend_keeps_priority_only_for_a_smaller_quantity_and_moves_the_hold() {
    let h = start().await;
    let router = h.router();
    let first = place(
        &router,
        TRADER,
        "a-1",
        &order("alice", "sell", "100.00", "1"),
    )
    .await;
    let second = place(&router, TRADER, "a-2", &order("bob", "sell", "100.00", "1")).await;

    // a smaller quantity keeps the first order ahead: a buy of 0.5 fills it
    let reply = amend(&router, &first, "a-3", r#"{"quantity":"0.5"}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["quantity"], "0.50000");
    assert_eq!(reply.headers["preference-applied"], "wait=5");
    place(
        &router,
        OTHER,
        "a-4",
        &order("carol", "buy", "100.00", "0.5"),
    )
    .await;
    assert_eq!(status(&router, &first).await.0, "filled");
    assert_eq!(status(&router, &second).await.1, "0.00000");

    // a larger quantity sends bob's order behind alice's new one
    let third = place(
        &router,
        TRADER,
        "a-5",
        &order("alice", "sell", "100.00", "1"),
    )
    .await;
    let reply = amend(&router, &second, "a-6", r#"{"quantity":"2"}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    place(&router, OTHER, "a-7", &order("carol", "buy", "100.00", "1")).await;
    assert_eq!(status(&router, &third).await.0, "filled");
    assert_eq!(
        status(&router, &second).await,
        ("new".to_string(), "0.00000".to_string())
    );

    // a buy's hold follows its price, and a new price crossing the book trades at once
    let buy = place(&router, OTHER, "a-8", &order("carol", "buy", "50.00", "1")).await;
    assert_eq!(held(&router, "carol", "USDT").await, "50.0000000");
    let reply = Call::new("PATCH", &format!("/v1/orders/{buy}"))
        .key(Some(OTHER))
        .idempotency("a-9")
        .prefer("wait=5")
        .body(r#"{"price":"60.00"}"#)
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["price"], "60.00");
    assert_eq!(held(&router, "carol", "USDT").await, "60.0000000");
    let reply = Call::new("PATCH", &format!("/v1/orders/{buy}"))
        .key(Some(OTHER))
        .idempotency("a-10")
        .prefer("wait=5")
        .body(r#"{"price":"100.00"}"#)
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["status"], "filled");
    assert_eq!(held(&router, "carol", "USDT").await, "0.0000000");
    h.runtime.stop().await;
}

#[tokio::test]
async fn amend_refusals() {
    let h = start().await;
    let router = h.router();
    let id = place(
        &router,
        TRADER,
        "r-1",
        &order("alice", "buy", "100.00", "1"),
    )
    .await;
    let path = format!("/v1/orders/{id}");
    let head = h.head();
    for (body, status, code) in [
        ("{}", StatusCode::BAD_REQUEST, "nothing_to_amend"),
        (r#"{"size":"1"}"#, StatusCode::BAD_REQUEST, "invalid_field"),
        (
            r#"{"price":"100.001"}"#,
            StatusCode::BAD_REQUEST,
            "off_tick",
        ),
        (r#"{"price":100}"#, StatusCode::BAD_REQUEST, "invalid_field"),
        (
            r#"{"quantity":"0"}"#,
            StatusCode::BAD_REQUEST,
            "not_positive",
        ),
        (
            r#"{"quantity":"1000000"}"#,
            StatusCode::BAD_REQUEST,
            "quantity_above_max",
        ),
        ("[1]", StatusCode::BAD_REQUEST, "malformed_json"),
    ] {
        let reply = Call::new("PATCH", &path)
            .idempotency("r-x")
            .body(body)
            .send(&router)
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert_eq!(reply.code(), code, "{body}: {}", reply.text);
    }
    let cases = [
        (
            Call::new("PATCH", &path).body(r#"{"quantity":"2"}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            Call::new("PATCH", &path)
                .key(Some(OTHER))
                .idempotency("r-y")
                .body(r#"{"quantity":"2"}"#),
            StatusCode::FORBIDDEN,
        ),
        (
            Call::new("PATCH", &path)
                .key(Some(READER))
                .idempotency("r-y")
                .body(r#"{"quantity":"2"}"#),
            StatusCode::FORBIDDEN,
        ),
        (
            Call::new("PATCH", "/v1/orders/42")
                .idempotency("r-y")
                .body(r#"{"quantity":"2"}"#),
            StatusCode::NOT_FOUND,
        ),
        (
            Call::new("PATCH", "/v1/orders/x")
                .idempotency("r-y")
                .body(r#"{"quantity":"2"}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            Call::new("PATCH", &path)
                .idempotency("r-y")
                .content_type("text/plain")
                .body(r#"{"quantity":"2"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (call, status) in cases {
        let reply = call.send(&router).await;
        assert_eq!(reply.status, status, "{}", reply.text);
    }
    assert_eq!(h.head(), head, "nothing journaled");

    // the book refuses what changes nothing: journaled, answered 409 with the reason
    let reply = amend(&router, &id, "r-2", r#"{"price":"100.00","quantity":"1"}"#).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert_eq!(reply.code(), "no_change");
    assert_eq!(h.head(), head + 1);
    // ... and a retry replays that answer
    let again = amend(&router, &id, "r-2", r#"{"price":"100.00","quantity":"1"}"#).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // a closed order cannot be amended
    let canceled = Call::new("DELETE", &path)
        .idempotency("r-3")
        .prefer("wait=5")
        .send(&router)
        .await;
    assert_eq!(canceled.status, StatusCode::OK);
    let reply = amend(&router, &id, "r-4", r#"{"quantity":"2"}"#).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "order_not_open");
    h.runtime.stop().await;
}

#[tokio::test]
async fn mass_cancel_ends_every_open_order_and_releases_the_holds() {
    let h = start().await;
    let router = h.router();
    let buy = place(
        &router,
        TRADER,
        "m-1",
        &order("alice", "buy", "100.00", "1"),
    )
    .await;
    let sell = place(
        &router,
        TRADER,
        "m-2",
        &order("alice", "sell", "200.00", "1"),
    )
    .await;
    let on_eth = place(&router, TRADER, "m-3", &eth("alice", "buy", "10.00", "1")).await;
    let bobs = place(&router, TRADER, "m-4", &order("bob", "buy", "100.00", "1")).await;
    assert_ne!(held(&router, "alice", "USDT").await, "0.0000000");

    let head = h.head();
    for (call, status) in [
        (
            Call::new("DELETE", "/v1/orders?account=alice"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Call::new("DELETE", "/v1/orders?account=alice&symbol=DOGE-USDT").idempotency("m-x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Call::new("DELETE", "/v1/orders?account=alice&side=buy").idempotency("m-x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Call::new("DELETE", "/v1/orders").idempotency("m-x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Call::new("DELETE", "/v1/orders?account=carol").idempotency("m-x"),
            StatusCode::FORBIDDEN,
        ),
        (
            Call::new("DELETE", "/v1/orders?account=alice")
                .key(Some(READER))
                .idempotency("m-x"),
            StatusCode::FORBIDDEN,
        ),
        (
            Call::new("DELETE", "/v1/orders?account=alice").key(None),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let reply = call.send(&router).await;
        assert_eq!(reply.status, status, "{}", reply.text);
    }
    assert_eq!(h.head(), head, "nothing journaled");

    let reply = Call::new("DELETE", "/v1/orders?account=alice&symbol=BTC-USDT")
        .idempotency("m-5")
        .prefer("wait=5")
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json,
        serde_json::json!({"account": "alice", "symbol": "BTC-USDT", "canceled": 2})
    );
    for id in [&buy, &sell] {
        assert_eq!(status(&router, id).await.0, "canceled");
    }
    assert_eq!(status(&router, &on_eth).await.0, "new");
    // a retry replays the count; it cancels nothing again
    let again = Call::new("DELETE", "/v1/orders?account=alice&symbol=BTC-USDT")
        .idempotency("m-5")
        .send(&router)
        .await;
    assert_eq!(again.json, reply.json);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // without a symbol: every instrument; without a wait: durable
    let reply = Call::new("DELETE", "/v1/orders?account=alice")
        .idempotency("m-6")
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["status"], "pending");
    let mut open = Value::Null;
    for _ in 0..200 {
        open = get(&router, "/v1/orders?account=alice&status=open").await;
        if open["orders"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(open["orders"], serde_json::json!([]));
    assert_eq!(held(&router, "alice", "USDT").await, "0.0000000");
    assert_eq!(held(&router, "alice", "BTC").await, "0.00000");
    assert_eq!(
        status(&router, &bobs).await.0,
        "new",
        "another account's order stays"
    );

    // nothing open: a mass cancel is answered with zero
    let reply = Call::new("DELETE", "/v1/orders?account=alice")
        .idempotency("m-7")
        .prefer("wait=5")
        .send(&router)
        .await;
    assert_eq!(reply.json["canceled"], 0);
    h.runtime.stop().await;
}

#[tokio::test]
async fn orders_by_client_order_id() {
    let h = start().await;
    let router = h.router();
    let first = place(
        &router,
        TRADER,
        "k-1",
        &with_client_id(&order("alice", "buy", "100.00", "1"), "mm-1"),
    )
    .await;
    let found = get(&router, "/v1/orders/client/mm-1?account=alice").await;
    assert_eq!(found["order_id"], first.as_str());
    let found = get(
        &router,
        "/v1/orders/client/mm-1?account=alice&symbol=BTC-USDT",
    )
    .await;
    assert_eq!(found["order_id"], first.as_str());
    for (path, key, status) in [
        (
            "/v1/orders/client/mm-1?account=alice&symbol=ETH-USDT",
            TRADER,
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/orders/client/mm-1?account=bob",
            TRADER,
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/orders/client/mm-2?account=alice",
            TRADER,
            StatusCode::NOT_FOUND,
        ),
        ("/v1/orders/client/mm-1", TRADER, StatusCode::BAD_REQUEST),
        (
            "/v1/orders/client/mm-1?account=alice",
            OTHER,
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/orders/client/mm-1?account=alice&x=1",
            TRADER,
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let reply = Call::new("GET", path).key(Some(key)).send(&router).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text);
    }

    let head = h.head();
    let reply = Call::new("DELETE", "/v1/orders/client/mm-1?account=alice")
        .key(Some(OTHER))
        .idempotency("k-x")
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = Call::new("DELETE", "/v1/orders/client/nope?account=alice")
        .idempotency("k-x")
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(h.head(), head, "nothing journaled");

    let reply = Call::new("DELETE", "/v1/orders/client/mm-1?account=alice")
        .idempotency("k-2")
        .prefer("wait=5")
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["order_id"], first.as_str());
    assert_eq!(reply.json["status"], "canceled");
    let reply = Call::new("DELETE", "/v1/orders/client/mm-1?account=alice")
        .idempotency("k-3")
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "order_not_open");

    // the id is free again once the order ended; the lookup finds the newest order
    let second = place(
        &router,
        TRADER,
        "k-4",
        &with_client_id(&order("alice", "buy", "101.00", "1"), "mm-1"),
    )
    .await;
    let found = get(&router, "/v1/orders/client/mm-1?account=alice").await;
    assert_eq!(found["order_id"], second.as_str());
    assert_eq!(found["status"], "new");
    h.runtime.stop().await;
}

#[tokio::test]
async fn the_clock_is_public() {
    let h = start().await;
    let router = h.router();
    let reply = Call::new("GET", "/v1/time").key(None).send(&router).await;
    assert_eq!(reply.status, StatusCode::OK);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let epoch_ms = reply.json["epoch_ms"].as_u64().unwrap();
    assert!(epoch_ms.abs_diff(now) < 60_000, "{epoch_ms} vs {now}");
    assert!(reply.json["now"].as_str().unwrap().ends_with('Z'));
    h.runtime.stop().await;
}

/// Sends `call` until the key's quota runs out (a window may reset in between on a slow
/// machine, so no count is assumed); gives the 429.
async fn exhaust(router: &axum::Router, call: impl Fn(usize) -> Call<'static>) -> Reply {
    for n in 0..1000 {
        let reply = call(n).send(router).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return reply;
        }
        assert!(
            reply.headers.contains_key("ratelimit"),
            "{:?}",
            reply.headers
        );
    }
    panic!("never limited");
}

#[tokio::test]
async fn a_key_over_its_quota_gets_429_with_the_headers_and_recovers() {
    let h = start().await;
    let router = h.router();
    let ok = Call::new("GET", "/v1/orders?account=dave")
        .key(Some(LIMITED))
        .send(&router)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["ratelimit-policy"], "\"reads\";q=3;w=1");
    assert!(
        ok.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"reads\";r=")
    );

    let head = h.head();
    let keys: Vec<&'static str> = (0..1000)
        .map(|n| &*Box::leak(format!("q-{n}").into_boxed_str()))
        .collect();
    let limited = exhaust(&router, |n| {
        Call::new("POST", "/v1/orders")
            .key(Some(LIMITED))
            .idempotency(keys[n])
            .body(order("dave", "buy", "100.00", "1"))
    })
    .await;
    assert_eq!(limited.code(), "rate_limited");
    assert_eq!(limited.headers["retry-after"], "1");
    assert_eq!(limited.headers["ratelimit-policy"], "\"writes\";q=2;w=1");
    assert_eq!(limited.headers["ratelimit"], "\"writes\";r=0;t=1");
    let accepted = h.head() - head;
    assert!(accepted >= 2, "the quota's writes went through");
    // reads have their own quota, and other keys are not affected
    let other = Call::new("GET", "/v1/orders?account=alice")
        .send(&router)
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert!(
        !other.headers["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("q=2")
    );

    // once the window has passed, the key writes again
    let mut recovered = None;
    for n in 0..200 {
        let reply = Call::new("POST", "/v1/orders")
            .key(Some(LIMITED))
            .idempotency(keys[999 - n])
            .body(order("dave", "buy", "100.00", "1"))
            .send(&router)
            .await;
        if reply.status != StatusCode::TOO_MANY_REQUESTS {
            recovered = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        recovered.expect("never recovered").status,
        StatusCode::ACCEPTED
    );
    h.runtime.stop().await;
}

#[tokio::test]
async fn keys_are_revoked_and_added_without_a_restart() {
    let h = start().await;
    let router = h.router();
    let path = h.dir.path().join("keys.json");
    let reply = Call::new("GET", "/v1/orders")
        .key(Some(OTHER))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    oms_runtime::auth::revoke_key(&path, "other").unwrap();
    let new = oms_runtime::auth::add_key(
        &path,
        "fresh",
        vec!["erin".into()],
        vec![oms_runtime::auth::Scope::Read],
        None,
    )
    .unwrap();
    let (mut revoked, mut added) = (false, false);
    for _ in 0..100 {
        let old = Call::new("GET", "/v1/orders")
            .key(Some(OTHER))
            .send(&router)
            .await;
        let fresh = Call::new("GET", "/v1/orders")
            .key(Some(&new))
            .send(&router)
            .await;
        revoked = old.status == StatusCode::UNAUTHORIZED;
        added = fresh.status == StatusCode::OK;
        if revoked && added {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(revoked && added, "revoked {revoked}, added {added}");
    // a broken file changes nothing: the keys in use stay
    std::fs::write(&path, "[{").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let fresh = Call::new("GET", "/v1/orders")
        .key(Some(&new))
        .send(&router)
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
    h.runtime.stop().await;
}

#[tokio::test]
async fn public_trades_ticker_candles_and_fill_pages() {
    let h = start().await;
    let router = h.router();
    place(&router, TRADER, "d-1", &order("bob", "sell", "100.00", "1")).await;
    place(&router, TRADER, "d-2", &order("bob", "sell", "101.00", "1")).await;
    place(
        &router,
        TRADER,
        "d-3",
        &order("alice", "buy", "100.00", "1"),
    )
    .await;
    place(
        &router,
        TRADER,
        "d-4",
        &order("alice", "buy", "101.00", "0.5"),
    )
    .await;
    place(
        &router,
        TRADER,
        "d-5",
        &order("alice", "buy", "101.00", "0.25"),
    )
    .await;
    place(
        &router,
        OTHER,
        "d-6",
        &order("carol", "buy", "90.00", "0.1"),
    )
    .await;

    fn public(path: &str) -> Call<'_> {
        Call::new("GET", path).key(None)
    }
    let trades = public("/v1/markets/BTC-USDT/trades").send(&router).await;
    assert_eq!(trades.status, StatusCode::OK, "{}", trades.text);
    let list = trades.json.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["price"], "101.00");
    assert_eq!(list[0]["quantity"], "0.25000");
    assert_eq!(list[0]["taker_side"], "buy");
    assert_eq!(list[2]["price"], "100.00");
    assert!(list[0]["trade_id"].as_u64() > list[1]["trade_id"].as_u64());
    for trade in list {
        let mut keys: Vec<&String> = trade.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["executed_at", "price", "quantity", "taker_side", "trade_id"],
            "nothing of the accounts or orders"
        );
    }
    let one = public("/v1/markets/BTC-USDT/trades?limit=1")
        .send(&router)
        .await;
    assert_eq!(one.json.as_array().unwrap().len(), 1);
    for (path, status) in [
        (
            "/v1/markets/BTC-USDT/trades?limit=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/markets/BTC-USDT/trades?since=1",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/markets/DOGE-USDT/trades", StatusCode::NOT_FOUND),
        ("/v1/markets/DOGE-USDT/ticker", StatusCode::NOT_FOUND),
        (
            "/v1/markets/BTC-USDT/candles?minutes=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/markets/BTC-USDT/candles?minutes=1441",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let reply = public(path).send(&router).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text);
    }

    let ticker = public("/v1/markets/BTC-USDT/ticker").send(&router).await;
    assert_eq!(ticker.status, StatusCode::OK, "{}", ticker.text);
    let t = &ticker.json;
    assert_eq!(t["symbol"], "BTC-USDT");
    assert_eq!(t["last_price"], "101.00");
    assert_eq!(
        t["best_bid"],
        serde_json::json!({"price": "90.00", "quantity": "0.10000"})
    );
    assert_eq!(
        t["best_ask"],
        serde_json::json!({"price": "101.00", "quantity": "0.25000"})
    );
    assert_eq!(
        (&t["open"], &t["high"], &t["low"]),
        (&"100.00".into(), &"101.00".into(), &"100.00".into())
    );
    assert_eq!(t["volume"], "1.75000");
    assert_eq!(
        t["quote_volume"].as_str().unwrap().trim_end_matches('0'),
        "175.75"
    );
    assert_eq!(t["trades"], 3);
    // an instrument that never traded
    let quiet = public("/v1/markets/ETH-USDT/ticker").send(&router).await;
    assert_eq!(quiet.json["last_price"], Value::Null);
    assert_eq!(quiet.json["trades"], 0);

    let candles = public("/v1/markets/BTC-USDT/candles?minutes=1440")
        .send(&router)
        .await;
    let candles = candles.json.as_array().unwrap();
    let traded: u64 = candles.iter().map(|c| c["trades"].as_u64().unwrap()).sum();
    assert_eq!(traded, 3, "{candles:?}");
    assert_eq!(candles.last().unwrap()["close"], "101.00");

    // alice's fills, two to a page
    let first = get(&router, "/v1/trades?account=alice&limit=2").await;
    assert_eq!(first["trades"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = get(
        &router,
        &format!("/v1/trades?account=alice&limit=2&cursor={cursor}"),
    )
    .await;
    let rest = second["trades"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["price"], "100.00", "the oldest last");
    assert_eq!(second["next_cursor"], Value::Null);
    let bad = Call::new("GET", "/v1/trades?account=alice&cursor=x")
        .send(&router)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "invalid_cursor");
    h.runtime.stop().await;
}

#[tokio::test]
async fn a_batch_journals_its_good_orders_in_one_append_and_refuses_the_bad() {
    let h = start().await;
    let router = h.router();
    let good = order("alice", "buy", "100.00", "1");
    let off_tick = order("alice", "buy", "100.001", "1");
    let foreign = order("carol", "buy", "100.00", "1");
    let sell = order("bob", "sell", "101.00", "0.5");
    let body = format!(r#"{{"orders":[{good},{off_tick},{foreign},{sell},{{"price":1}}]}}"#);
    let head = h.head();
    let commits = |h: &common::Harness| {
        let metrics = h.runtime.app.metrics.encode();
        metrics
            .lines()
            .find(|line| line.starts_with("oms_store_fsyncs_total "))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .unwrap()
    };
    let commits_before = commits(&h);
    let reply = Call::new("POST", "/v1/orders/batch")
        .idempotency("b-1")
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let results = reply.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["status"], "pending");
    assert_eq!(results[1]["error"]["code"], "off_tick");
    assert_eq!(results[1]["error"]["field"], "price");
    assert_eq!(results[2]["error"]["code"], "forbidden");
    assert_eq!(results[3]["status"], "pending");
    assert_eq!(results[4]["error"]["code"], "invalid_field");
    assert_eq!(h.head(), head + 2, "the two good orders, nothing else");
    assert_eq!(commits(&h), commits_before + 1, "in one durable append");
    assert_eq!(
        results[3]["position"]["offset"].as_u64(),
        results[0]["position"]["offset"]
            .as_u64()
            .map(|offset| offset + 1)
    );
    // processed like any order
    let id = results[0]["order_id"].as_str().unwrap();
    let mut status = Value::Null;
    for _ in 0..200 {
        let reply = Call::new("GET", &format!("/v1/orders/{id}"))
            .send(&router)
            .await;
        status = reply.json["status"].clone();
        if reply.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, "new");

    // a retry replays the answer and journals nothing
    let again = Call::new("POST", "/v1/orders/batch")
        .idempotency("b-1")
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(again.json, reply.json);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(h.head(), head + 2);

    // not a batch: 400, nothing journaled, the key free again
    let many = vec![good.clone(); 21].join(",");
    for (body, code) in [
        (r#"{"orders":[]}"#.to_string(), "invalid_batch"),
        (format!(r#"{{"orders":[{many}]}}"#), "invalid_batch"),
        (format!(r#"[{good}]"#), "malformed_json"),
        (r#"{"orders":[],"x":1}"#.to_string(), "invalid_field"),
        (format!(r#"{{"orders":[{good},[1]]}}"#), "invalid_field"),
    ] {
        let reply = Call::new("POST", "/v1/orders/batch")
            .idempotency("b-2")
            .body(body.clone())
            .send(&router)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_eq!(reply.code(), code, "{body}");
    }
    let reader = Call::new("POST", "/v1/orders/batch")
        .key(Some(READER))
        .idempotency("b-3")
        .body(format!(r#"{{"orders":[{good}]}}"#))
        .send(&router)
        .await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);
    assert_eq!(h.head(), head + 2);
    h.runtime.stop().await;
}

/// An idempotency store that never stores a batch's own answer (keys without `#`), as if the
/// process died right after the append.
struct LosesBatchAnswers(std::sync::Arc<dyn oms_runtime::store::IdempotencyStore>);

#[async_trait::async_trait]
impl oms_runtime::store::IdempotencyStore for LosesBatchAnswers {
    async fn reserve(
        &self,
        origin: &oms_runtime::store::Origin,
    ) -> Result<oms_runtime::store::Reservation, oms_runtime::store::StoreError> {
        self.0.reserve(origin).await
    }
    async fn complete(
        &self,
        origin: &oms_runtime::store::Origin,
        response: &oms_runtime::store::StoredResponse,
    ) -> Result<(), oms_runtime::store::StoreError> {
        if origin.key.contains('#') {
            self.0.complete(origin, response).await
        } else {
            Ok(())
        }
    }
    async fn release(
        &self,
        origin: &oms_runtime::store::Origin,
    ) -> Result<(), oms_runtime::store::StoreError> {
        self.0.release(origin).await
    }
}

/// A batch whose first attempt journaled its orders but died before storing the batch's
/// answer: after a restart, the retry finds each order under its own key and journals none
/// twice.
#[tokio::test]
async fn a_retried_batch_never_journals_an_order_twice() {
    let h = start().await;
    let mut app = h.runtime.app.clone();
    app.idempotency = std::sync::Arc::new(LosesBatchAnswers(app.idempotency.clone()));
    let dying = oms_runtime::api::router(app);
    let body = format!(
        r#"{{"orders":[{},{}]}}"#,
        order("alice", "buy", "100.00", "1"),
        order("bob", "sell", "101.00", "1")
    );
    let first = Call::new("POST", "/v1/orders/batch")
        .idempotency("r-1")
        .body(&body)
        .send(&dying)
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    drop(dying);
    let journaled = h.runtime.store.head();
    let common::Harness { runtime, dir, .. } = h;
    runtime.stop().await;
    let h = common::start_in(dir).await;
    assert_eq!(h.runtime.store.head(), journaled);
    let retry = Call::new("POST", "/v1/orders/batch")
        .idempotency("r-1")
        .body(&body)
        .send(&h.router())
        .await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.text);
    assert_eq!(retry.json, first.json, "each order's first acknowledgement");
    assert_eq!(h.runtime.store.head(), journaled, "nothing journaled again");
    h.runtime.stop().await;
}

#[tokio::test]
async fn cancel_after_is_set_refreshed_cleared_and_fires() {
    let h = start().await;
    let router = h.router();
    let set = |body: &'static str| {
        Call::new("POST", "/v1/cancel-after")
            .body(body)
            .send(&router)
    };
    let reply = set(r#"{"account":"alice","timeout_seconds":3600}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let deadline = reply.json["deadline"].as_str().unwrap().to_string();
    let shown = get(&router, "/v1/cancel-after?account=alice").await;
    assert_eq!(shown["deadline"], deadline.as_str());
    let cleared = set(r#"{"account":"alice","timeout_seconds":0}"#).await;
    assert_eq!(cleared.json["deadline"], Value::Null);
    for (body, status) in [
        (
            r#"{"account":"alice","timeout_seconds":86401}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"account":"alice","timeout_seconds":-1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (r#"{"account":"alice"}"#, StatusCode::BAD_REQUEST),
        (r#"{"timeout_seconds":5}"#, StatusCode::BAD_REQUEST),
        (
            r#"{"account":"carol","timeout_seconds":5}"#,
            StatusCode::FORBIDDEN,
        ),
    ] {
        let reply = set(body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
    }
    let reader = Call::new("POST", "/v1/cancel-after")
        .key(Some(READER))
        .body(r#"{"account":"alice","timeout_seconds":5}"#)
        .send(&router)
        .await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);

    // it fires: alice's orders are canceled, bob's stay
    let alices = place(&router, TRADER, "x-1", &order("alice", "buy", "90.00", "1")).await;
    let bobs = place(&router, TRADER, "x-2", &order("bob", "buy", "90.00", "1")).await;
    let reply = set(r#"{"account":"alice","timeout_seconds":1}"#).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut state = (String::new(), String::new());
    for _ in 0..300 {
        state = status(&router, &alices).await;
        if state.0 == "canceled" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state.0, "canceled");
    assert_eq!(status(&router, &bobs).await.0, "new");
    assert_eq!(held(&router, "alice", "USDT").await, "0.0000000");
    let shown = get(&router, "/v1/cancel-after?account=alice").await;
    assert_eq!(shown["deadline"], Value::Null);
    h.runtime.stop().await;
}
