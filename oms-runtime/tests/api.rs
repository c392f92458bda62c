//! Handler tests through the router (no socket): every status code of the API, and that bad
//! input changes nothing; money (balances, deposits, withdrawals, holds, fees) at the end.

mod common;

use async_trait::async_trait;
use axum::http::StatusCode;
use common::{Call, OTHER, READER, TRADER, VENUE, order, start, start_in, start_unfunded};
use oms_runtime::api::write::fingerprint;
use oms_runtime::store::{
    Backend, Journal, JournalEntry, LogPosition, Origin, Reservation, StoreError,
};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn place_replay_and_wait() {
    let h = start().await;
    let router = h.router();
    let body = order("alice", "sell", "65000.00", "0.5");
    let first = Call::new("POST", "/v1/orders")
        .idempotency("p-1")
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.json["status"], "pending");
    assert_eq!(
        first.json["position"],
        serde_json::json!({"partition": 0, "offset": h.base + 1})
    );
    let order_id = first.json["order_id"].as_str().unwrap().to_string();

    // same key, same body: the same answer, marked as a replay, nothing journaled again
    let again = Call::new("POST", "/v1/orders")
        .idempotency("p-1")
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json, first.json);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(h.head(), 1);

    // same key, another body: 422
    let other = order("alice", "sell", "65000.00", "0.6");
    let reply = Call::new("POST", "/v1/orders")
        .idempotency("p-1")
        .body(other)
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "idempotency_key_reused");

    // keys are scoped to the principal: another key may use the same idempotency key
    let carol = order("carol", "buy", "64000.00", "0.1");
    let reply = Call::new("POST", "/v1/orders")
        .key(Some(OTHER))
        .idempotency("p-1")
        .body(carol)
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);

    // Prefer: wait gives the processed order: a taker that fills against the first order
    let taker = order("bob", "buy", "65000.00", "0.2");
    let reply = Call::new("POST", "/v1/orders")
        .idempotency("p-2")
        .prefer("wait=5")
        .body(taker)
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["status"], "filled");
    assert_eq!(reply.json["filled_quantity"], "0.20000");
    assert_eq!(reply.headers["preference-applied"], "wait=5");

    let maker = Call::new("GET", &format!("/v1/orders/{order_id}"))
        .send(&router)
        .await;
    assert_eq!(maker.status, StatusCode::OK);
    assert_eq!(maker.json["status"], "partially_filled");
    assert_eq!(maker.json["price"], "65000.00");

    let book = Call::new("GET", "/v1/book/BTC-USDT?depth=5")
        .key(None)
        .send(&router)
        .await;
    assert_eq!(book.status, StatusCode::OK);
    assert_eq!(
        book.json["asks"][0],
        serde_json::json!(["65000.00", "0.30000"])
    );
    assert_eq!(
        book.json["bids"][0],
        serde_json::json!(["64000.00", "0.10000"])
    );

    let trades = Call::new("GET", "/v1/trades?account=bob")
        .send(&router)
        .await;
    assert_eq!(trades.status, StatusCode::OK);
    assert_eq!(trades.json["trades"][0]["price"], "65000.00");
    assert_eq!(trades.json["trades"][0]["liquidity"], "taker");
    let trades = Call::new("GET", "/v1/trades?account=alice")
        .send(&router)
        .await;
    assert_eq!(trades.json["trades"][0]["order_id"], order_id.as_str());
    assert_eq!(trades.json["trades"][0]["liquidity"], "maker");
    h.runtime.stop().await;
}

#[tokio::test]
async fn cancel_and_its_refusals() {
    let h = start().await;
    let router = h.router();
    let placed = Call::new("POST", "/v1/orders")
        .idempotency("c-1")
        .prefer("wait=5")
        .body(order("alice", "buy", "100.00", "1"))
        .send(&router)
        .await;
    assert_eq!(placed.status, StatusCode::CREATED);
    let id = placed.json["order_id"].as_str().unwrap().to_string();
    let path = format!("/v1/orders/{id}");

    let reply = Call::new("DELETE", &path)
        .key(Some(OTHER))
        .idempotency("c-x")
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = Call::new("DELETE", &path).send(&router).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "missing_idempotency_key");

    let canceled = Call::new("DELETE", &path)
        .idempotency("c-2")
        .prefer("wait=5")
        .send(&router)
        .await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.text);
    assert_eq!(canceled.json["status"], "canceled");
    // a retry replays the answer; a new key finds the order closed
    let replay = Call::new("DELETE", &path)
        .idempotency("c-2")
        .send(&router)
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.json, canceled.json);
    let closed = Call::new("DELETE", &path)
        .idempotency("c-3")
        .send(&router)
        .await;
    assert_eq!(closed.status, StatusCode::CONFLICT);
    assert_eq!(closed.code(), "order_not_open");

    let missing = Call::new("DELETE", "/v1/orders/12345")
        .idempotency("c-4")
        .send(&router)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let invalid = Call::new("DELETE", "/v1/orders/abc")
        .idempotency("c-5")
        .send(&router)
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.code(), "invalid_order_id");
    // the refused cancels released their keys: the same key works for a real request now
    let placed = Call::new("POST", "/v1/orders")
        .idempotency("c-4")
        .body(order("alice", "buy", "100.00", "1"))
        .send(&router)
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED);
    h.runtime.stop().await;
}

#[tokio::test]
async fn authentication_and_scoping() {
    let h = start().await;
    let router = h.router();
    let body = order("alice", "buy", "100.00", "1");
    for key in [None, Some("oms_not_a_key")] {
        let reply = Call::new("POST", "/v1/orders")
            .key(key)
            .idempotency("a-1")
            .body(&body)
            .send(&router)
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "unauthorized");
        let reply = Call::new("GET", "/v1/orders?account=alice")
            .key(key)
            .send(&router)
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // a key may not trade or read an account it is not bound to
    let reply = Call::new("POST", "/v1/orders")
        .key(Some(OTHER))
        .idempotency("a-2")
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = Call::new("GET", "/v1/orders?account=alice")
        .key(Some(OTHER))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = Call::new("GET", "/v1/trades?account=alice")
        .key(Some(OTHER))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let placed = Call::new("POST", "/v1/orders")
        .idempotency("a-3")
        .prefer("wait=5")
        .body(&body)
        .send(&router)
        .await;
    let id = placed.json["order_id"].as_str().unwrap();
    let reply = Call::new("GET", &format!("/v1/orders/{id}"))
        .key(Some(OTHER))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = Call::new("GET", &format!("/v1/orders/{id}"))
        .key(Some(TRADER))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // a key with several accounts must name one; a key with one need not
    let reply = Call::new("GET", "/v1/orders").send(&router).await;
    assert_eq!(reply.code(), "missing_account");
    let reply = Call::new("GET", "/v1/orders")
        .key(Some(OTHER))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["orders"], serde_json::json!([]));
    h.runtime.stop().await;
}

#[tokio::test]
async fn fills_show_only_the_callers_side() {
    let h = start().await;
    let router = h.router();
    // carol (key OTHER) rests a sell; alice (key TRADER) buys against it
    let maker = Call::new("POST", "/v1/orders")
        .key(Some(OTHER))
        .idempotency("fill-maker")
        .prefer("wait=5")
        .body(order("carol", "sell", "100.00", "1"))
        .send(&router)
        .await;
    assert_eq!(maker.status, StatusCode::CREATED, "{}", maker.json);
    let taker = Call::new("POST", "/v1/orders")
        .idempotency("fill-taker")
        .prefer("wait=5")
        .body(order("alice", "buy", "100.00", "1"))
        .send(&router)
        .await;
    assert_eq!(taker.json["status"], "filled", "{}", taker.json);
    let (maker_id, taker_id) = (
        maker.json["order_id"].as_str().unwrap(),
        taker.json["order_id"].as_str().unwrap(),
    );
    let alice = Call::new("GET", "/v1/trades?account=alice")
        .send(&router)
        .await;
    let carol = Call::new("GET", "/v1/trades")
        .key(Some(OTHER))
        .send(&router)
        .await;
    for (reply, own, other_id, other_account, side, liquidity) in [
        (&alice, taker_id, maker_id, "carol", "buy", "taker"),
        (&carol, maker_id, taker_id, "alice", "sell", "maker"),
    ] {
        assert_eq!(reply.status, StatusCode::OK);
        let fills = reply.json["trades"].as_array().unwrap();
        assert_eq!(fills.len(), 1, "{}", reply.json);
        let fill = &fills[0];
        assert_eq!(fill["order_id"], own);
        assert_eq!(fill["side"], side);
        assert_eq!(fill["liquidity"], liquidity);
        let decimal = |field: &str| -> rust_decimal::Decimal {
            fill[field].as_str().unwrap().parse().unwrap()
        };
        assert_eq!(
            (decimal("price"), decimal("quantity")),
            (100.into(), 1.into())
        );
        let text = reply.json.to_string();
        assert!(
            !text.contains(other_account) && !text.contains(other_id),
            "the counterparty leaks: {text}"
        );
    }
    assert_eq!(
        alice.json["trades"][0]["trade_id"],
        carol.json["trades"][0]["trade_id"]
    );
    h.runtime.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_4xx_and_journals_nothing() {
    let h = start().await;
    let router = h.router();
    let cases: Vec<(String, &str, &str)> = vec![
        ("{\"account\":".into(), "malformed_json", ""),
        ("[1,2]".into(), "malformed_json", ""),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"limit","price":"1.00","quantity":"1","extra":true}"#.into(), "invalid_field", "extra"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"limit","price":1.5,"quantity":"1"}"#.into(), "invalid_field", "price"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"up","type":"limit","price":"1.00","quantity":"1"}"#.into(), "invalid_field", "side"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"limit","price":"1.00"}"#.into(), "quantity_required", "quantity"),
        (order("alice", "buy", "100.00", "-1"), "not_positive", "quantity"),
        (order("alice", "buy", "100.00", "0"), "not_positive", "quantity"),
        (order("alice", "buy", "0", "1"), "not_positive", "price"),
        (order("alice", "buy", "100.001", "1"), "off_tick", "price"),
        (order("alice", "buy", "100.00", "0.000001"), "off_lot", "quantity"),
        (order("alice", "buy", "100.00", "1000"), "quantity_above_max", "quantity"),
        (order("alice", "buy", "99999999999999999999999999", "1"), "too_large", "price"),
        (order("alice", "buy", "1e5", "1"), "invalid_field", "price"),
        (order("alice", "buy", "0.01", "0.00001"), "notional_below_min", ""),
        (order("alice", "buy", "100.00", "1").replace("BTC-USDT", "DOGE-USDT"), "unknown_symbol", "symbol"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"limit","quantity":"1"}"#.into(), "price_required", "price"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"market","price":"1.00","quantity":"1"}"#.into(), "price_not_allowed", "price"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"market","time_in_force":"gtc","quantity":"1"}"#.into(), "invalid_time_in_force", "time_in_force"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"limit","time_in_force":"ioc","post_only":true,"price":"1.00","quantity":"10"}"#.into(), "invalid_time_in_force", "time_in_force"),
        (r#"{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"limit","price":"1.00","quantity":"10","client_order_id":""}"#.into(), "invalid_client_order_id", "client_order_id"),
    ];
    for (i, (body, code, field)) in cases.into_iter().enumerate() {
        let key = format!("bad-{i}");
        let reply = Call::new("POST", "/v1/orders")
            .idempotency(&key)
            .body(body.clone())
            .send(&router)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_eq!(reply.code(), code, "{body}: {}", reply.text);
        let got = reply.json["error"]["field"].as_str().unwrap_or("");
        assert_eq!(got, field, "{body}: {}", reply.text);
        assert!(!reply.json["error"]["message"].as_str().unwrap().is_empty());
    }

    let body = order("alice", "buy", "100.00", "1");
    let long_key = "k".repeat(256);
    let reply = Call::new("POST", "/v1/orders")
        .idempotency(&long_key)
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_idempotency_key")
    );
    let reply = Call::new("POST", "/v1/orders")
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "missing_idempotency_key")
    );
    let huge = format!(r#"{{"account":"{}"}}"#, "a".repeat(20_000));
    let reply = Call::new("POST", "/v1/orders")
        .idempotency("big")
        .body(huge)
        .send(&router)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );

    for (uri, code) in [
        ("/v1/orders?account=alice&limit=0", "invalid_limit"),
        ("/v1/orders?account=alice&status=sleeping", "invalid_status"),
        ("/v1/orders?account=alice&colour=red", "invalid_query"),
        ("/v1/orders?account=alice&cursor=xyz", "invalid_order_id"),
        ("/v1/book/BTC-USDT?depth=0", "invalid_depth"),
        ("/v1/orders/not-a-number", "invalid_order_id"),
    ] {
        let reply = Call::new("GET", uri).send(&router).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, code),
            "{uri}"
        );
    }
    let reply = Call::new("GET", "/v1/book/NOPE").send(&router).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = Call::new("GET", "/v1/orders/42").send(&router).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = Call::new("GET", "/v2/anything").send(&router).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let reply = Call::new("PUT", "/v1/orders").send(&router).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    assert_eq!(h.head(), 0, "bad input must journal nothing");
    h.runtime.stop().await;
}

#[tokio::test]
async fn in_flight_key_is_409_and_duplicate_client_order_id_is_409() {
    let h = start().await;
    let router = h.router();
    let body = order("alice", "buy", "100.00", "1");
    let origin = Origin {
        principal: "trader".into(),
        key: "busy".into(),
        fingerprint: fingerprint("POST", "/v1/orders", body.as_bytes()),
    };
    assert_eq!(
        h.runtime.app.idempotency.reserve(&origin).await.unwrap(),
        Reservation::Reserved
    );
    let reply = Call::new("POST", "/v1/orders")
        .idempotency("busy")
        .body(&body)
        .send(&router)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::CONFLICT, "idempotency_key_in_use")
    );

    let with_id = |quantity: &str| {
        format!(
            r#"{{"account":"alice","symbol":"BTC-USDT","side":"buy","type":"limit","price":"100.00","quantity":"{quantity}","client_order_id":"my-ref"}}"#
        )
    };
    let first = Call::new("POST", "/v1/orders")
        .idempotency("cid-1")
        .prefer("wait=5")
        .body(with_id("1"))
        .send(&router)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json["client_order_id"], "my-ref");
    let second = Call::new("POST", "/v1/orders")
        .idempotency("cid-2")
        .body(with_id("2"))
        .send(&router)
        .await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::CONFLICT, "duplicate_client_order_id")
    );
    h.runtime.stop().await;
}

/// A journal that fails or hangs: the request must fail fast with 503 and Retry-After, and the
/// key must be free again for a retry.
struct BrokenJournal {
    hang: bool,
}

#[async_trait]
impl Journal for BrokenJournal {
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }

    async fn append(&self, _entry: JournalEntry) -> Result<LogPosition, StoreError> {
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Err(StoreError::unavailable(Backend::Embedded, "disk on fire"))
    }

    async fn append_batch(
        &self,
        entries: Vec<JournalEntry>,
    ) -> Result<Vec<LogPosition>, StoreError> {
        let mut positions = Vec::new();
        for entry in entries {
            positions.push(self.append(entry).await?);
        }
        Ok(positions)
    }
}

#[tokio::test]
async fn failing_journal_gives_a_fast_503_and_frees_the_key() {
    let h = start().await;
    for hang in [false, true] {
        let mut app = h.runtime.app.clone();
        app.journal = Arc::new(BrokenJournal { hang });
        let broken = oms_runtime::api::router(app);
        let body = order("alice", "buy", "100.00", "1");
        let key = format!("broken-{hang}");
        let started = std::time::Instant::now();
        let reply = Call::new("POST", "/v1/orders")
            .idempotency(&key)
            .body(&body)
            .send(&broken)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text
        );
        assert_eq!(reply.code(), "unavailable");
        assert_eq!(reply.headers["retry-after"], "1");
        assert!(
            !reply.text.contains("disk on fire"),
            "5xx details must not leak"
        );
        if !hang {
            // the failed append released the key: a retry against the healthy journal works
            let retry = Call::new("POST", "/v1/orders")
                .idempotency(&key)
                .body(&body)
                .send(&h.router())
                .await;
            assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.text);
        } else {
            // still hanging: the key stays reserved (the append might yet succeed), so a retry
            // is told to wait rather than risk a duplicate
            let retry = Call::new("POST", "/v1/orders")
                .idempotency(&key)
                .body(&body)
                .send(&h.router())
                .await;
            assert_eq!(retry.status, StatusCode::CONFLICT);
        }
        // bounded by the configured dependency timeout (500 ms), not by the journal
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    h.runtime.stop().await;
}

#[tokio::test]
async fn openapi_and_instruments() {
    let h = start().await;
    let router = h.router();
    let doc = Call::new("GET", "/openapi.json")
        .key(None)
        .send(&router)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    for path in [
        "/v1/orders",
        "/v1/orders/{order_id}",
        "/v1/trades",
        "/v1/book/{symbol}",
        "/v1/instruments",
    ] {
        assert!(
            doc.json["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc.json["components"]["schemas"]["OrderRequest"].is_object());
    let instruments = Call::new("GET", "/v1/instruments")
        .key(None)
        .send(&router)
        .await;
    assert_eq!(instruments.status, StatusCode::OK);
    assert_eq!(instruments.json[0]["symbol"], "BTC-USDT");
    assert_eq!(instruments.json[0]["tick_size"], "0.01");
    assert_eq!(instruments.json[0]["status"], "trading");
    h.runtime.stop().await;
}

/// A read projection that never answers (a MongoDB that accepts connections and then hangs).
struct SilentStore;

#[async_trait]
impl oms_runtime::store::OrderStore for SilentStore {
    async fn apply(&self, _: &oms_runtime::store::ProjectionBatch) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn order(
        &self,
        _: oms_core::OrderId,
    ) -> Result<Option<oms_core::OrderState>, StoreError> {
        std::future::pending().await
    }
    async fn orders(
        &self,
        _: &oms_runtime::store::OrderQuery,
    ) -> Result<oms_runtime::store::OrderPage, StoreError> {
        std::future::pending().await
    }
    async fn trades(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&oms_runtime::store::TradeCursor>,
        _: usize,
    ) -> Result<Vec<oms_runtime::store::TradeRecord>, StoreError> {
        std::future::pending().await
    }
    async fn open_by_client_id(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<oms_core::OrderId>, StoreError> {
        std::future::pending().await
    }
    async fn by_client_id(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<Option<oms_core::OrderState>, StoreError> {
        std::future::pending().await
    }
    async fn market_trades(
        &self,
        _: &str,
        _: usize,
    ) -> Result<Vec<oms_runtime::store::TradeRecord>, StoreError> {
        std::future::pending().await
    }
    async fn candles(
        &self,
        _: &str,
        _: u64,
        _: usize,
    ) -> Result<Vec<oms_runtime::store::Candle>, StoreError> {
        std::future::pending().await
    }
    async fn snapshots(&self) -> Result<Vec<(u64, oms_core::BookSnapshot)>, StoreError> {
        std::future::pending().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

/// Every await on the request path is bounded: with a read store that never answers and no
/// in-process notification (as in distributed mode), a write with `Prefer: wait=2` still
/// answers, once durable, after about the wait plus the dependency timeout (0.5 s here); reads
/// fail fast with 503.
#[tokio::test]
async fn a_silent_read_store_never_holds_a_request() {
    let h = start().await;
    let mut app = h.runtime.app.clone();
    app.orders = Arc::new(SilentStore);
    app.waiters = None;
    let router = oms_runtime::api::router(app);
    // a hang would be forever; anything that ends proves the bound
    let bound = Duration::from_secs(2 + 10);
    let placed = tokio::time::timeout(
        bound,
        Call::new("POST", "/v1/orders")
            .idempotency("silent-1")
            .prefer("wait=2")
            .body(order("alice", "buy", "100.00", "1"))
            .send(&router),
    )
    .await
    .expect("the waited write answered");
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{}", placed.text);
    let id = placed.json["order_id"].as_str().unwrap().to_string();
    for (method, uri) in [
        ("GET", format!("/v1/orders/{id}")),
        ("GET", "/v1/orders?account=alice".to_string()),
        ("GET", "/v1/trades?account=alice".to_string()),
        ("DELETE", format!("/v1/orders/{id}")),
    ] {
        let reply = tokio::time::timeout(
            bound,
            Call::new(method, &uri)
                .idempotency("silent-2")
                .send(&router),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {uri} hung"));
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(reply.headers["retry-after"], "1");
    }
    h.runtime.stop().await;
}

/// Metric labels come from a closed set: made-up methods all count as `other`, so a client
/// cannot grow `/metrics` without bound (issue 20).
#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let harness = start().await;
    let router = harness.router();
    Call::new("GET", "/v1/instruments").send(&router).await;
    let before = harness.runtime.app.metrics.encode().len();
    for n in 0..200 {
        let method = format!("BREW{n}");
        let reply = Call::new(&method, "/v1/orders").send(&router).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    let text = harness.runtime.app.metrics.encode();
    assert!(
        !text.contains("BREW"),
        "a made-up method became a label value"
    );
    assert!(text.contains(r#"method="other""#));
    // one new series (method="other" on that route and status) per metric, not 200
    assert!(
        text.len() < before + 4_000,
        "metrics grew from {before} to {} bytes",
        text.len()
    );
}

/// Every 4xx the server sends is the JSON error shape, echoes at most a short prefix of what the
/// caller sent, and a body that says it is not JSON is refused with 415 (issue 20).
#[tokio::test]
async fn hostile_input_gets_short_json_errors() {
    let harness = start().await;
    let router = harness.router();

    // a path that is not valid UTF-8 once decoded
    for uri in ["/v1/orders/%ff", "/v1/book/%ff%fe"] {
        let reply = Call::new("GET", uri).send(&router).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.text
        );
        assert_eq!(reply.code(), "invalid_path", "{uri}: {}", reply.text);
    }

    // a 10 KB account name (the body limit is 16 KB) is not echoed back in full
    let huge = "x".repeat(10_000);
    let reply = Call::new("POST", "/v1/orders")
        .idempotency("huge-account")
        .body(order(&huge, "buy", "100.00", "0.10000"))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.code());
    assert!(reply.text.len() < 400, "{} bytes echoed", reply.text.len());
    // nor is a huge unknown field name or value
    let reply = Call::new("POST", "/v1/orders")
        .idempotency("huge-field")
        .body(format!(r#"{{"{huge}": 1}}"#))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.len() < 400, "{} bytes echoed", reply.text.len());

    // a body that is not JSON by its own account
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let reply = Call::new("POST", "/v1/orders")
            .idempotency(content_type)
            .content_type(content_type)
            .body(order("alice", "buy", "100.00", "0.10000"))
            .send(&router)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{}",
            reply.text
        );
        assert_eq!(reply.code(), "unsupported_media_type");
    }
    assert_eq!(harness.head(), 0, "nothing was journaled");
    // JSON with parameters is JSON
    let reply = Call::new("POST", "/v1/orders")
        .idempotency("charset")
        .content_type("application/json; charset=utf-8")
        .body(order("alice", "buy", "100.00", "0.10000"))
        .send(&router)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
}

/// `POST` `body` to `path` with `key`, waiting for the outcome.
async fn post_waiting(
    router: &axum::Router,
    key: &str,
    path: &str,
    idempotency: &str,
    body: &str,
) -> common::Reply {
    Call::new("POST", path)
        .key(Some(key))
        .idempotency(idempotency)
        .prefer("wait=5")
        .body(body)
        .send(router)
        .await
}

/// `(available, held)` of `account`'s `asset`, as the API shows them.
async fn balance(router: &axum::Router, key: &str, account: &str, asset: &str) -> (String, String) {
    let reply = Call::new("GET", &format!("/v1/balances?account={account}"))
        .key(Some(key))
        .send(router)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let balance = reply.json["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == asset)
        .unwrap_or_else(|| panic!("no {asset} in {}", reply.text))
        .clone();
    (
        balance["available"].as_str().unwrap().to_string(),
        balance["held"].as_str().unwrap().to_string(),
    )
}

fn transfer(account: &str, asset: &str, amount: &str) -> String {
    format!(r#"{{"account":"{account}","asset":"{asset}","amount":"{amount}"}}"#)
}

#[tokio::test]
async fn deposits_withdrawals_balances_and_the_ledger() {
    let h = start_unfunded(tempfile::tempdir().unwrap()).await;
    let router = h.router();
    assert_eq!(
        balance(&router, TRADER, "alice", "USDT").await,
        ("0.0000000".into(), "0.0000000".into())
    );
    let deposit = post_waiting(
        &router,
        TRADER,
        "/v1/deposits",
        "d-1",
        &transfer("alice", "USDT", "1000.5"),
    )
    .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{}", deposit.text);
    assert_eq!(deposit.json["status"], "completed");
    assert_eq!(deposit.json["kind"], "deposit");
    assert_eq!(deposit.json["amount"], "1000.5000000");
    // a retry replays the answer and deposits nothing more
    let again = post_waiting(
        &router,
        TRADER,
        "/v1/deposits",
        "d-1",
        &transfer("alice", "USDT", "1000.5"),
    )
    .await;
    assert_eq!(again.text, deposit.text);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        balance(&router, TRADER, "alice", "USDT").await,
        ("1000.5000000".into(), "0.0000000".into())
    );
    // beyond what is available: rejected, nothing changes
    let too_much = post_waiting(
        &router,
        TRADER,
        "/v1/withdrawals",
        "w-1",
        &transfer("alice", "USDT", "2000"),
    )
    .await;
    assert_eq!(too_much.status, StatusCode::CREATED);
    assert_eq!(too_much.json["status"], "rejected");
    assert_eq!(too_much.json["reject_reason"], "insufficient_funds");
    let ok = post_waiting(
        &router,
        TRADER,
        "/v1/withdrawals",
        "w-2",
        &transfer("alice", "USDT", "500.25"),
    )
    .await;
    assert_eq!(ok.json["status"], "completed", "{}", ok.text);
    assert_eq!(
        balance(&router, TRADER, "alice", "USDT").await,
        ("500.2500000".into(), "0.0000000".into())
    );
    // the transfer can be read back; the ledger shows both changes, newest first
    let id = ok.json["transfer_id"].as_str().unwrap();
    let read = Call::new("GET", &format!("/v1/transfers/{id}"))
        .send(&router)
        .await;
    assert_eq!(read.json, ok.json);
    let ledger = Call::new("GET", "/v1/ledger?account=alice&limit=1")
        .send(&router)
        .await;
    assert_eq!(ledger.status, StatusCode::OK, "{}", ledger.text);
    let entry = &ledger.json["entries"][0];
    assert_eq!(
        (
            entry["kind"].as_str(),
            entry["available_change"].as_str(),
            entry["available"].as_str()
        ),
        (
            Some("withdrawal"),
            Some("-500.2500000"),
            Some("500.2500000")
        )
    );
    assert_eq!(entry["transfer_id"], ok.json["transfer_id"]);
    let cursor = ledger.json["next_cursor"].as_str().unwrap();
    let older = Call::new("GET", &format!("/v1/ledger?account=alice&cursor={cursor}"))
        .send(&router)
        .await;
    let kinds: Vec<&str> = older.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deposit"], "the refused withdrawal left no entry");
}

#[tokio::test]
async fn funds_need_the_funds_scope_and_the_account() {
    let h = start().await;
    let router = h.router();
    let refused = |reply: common::Reply| {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    };
    // the read-only key reads alice, and does nothing else
    assert_eq!(
        balance(&router, READER, "alice", "BTC").await.0,
        "1000.00000"
    );
    refused(
        post_waiting(
            &router,
            READER,
            "/v1/deposits",
            "r-1",
            &transfer("alice", "USDT", "1"),
        )
        .await,
    );
    refused(
        post_waiting(
            &router,
            READER,
            "/v1/orders",
            "r-2",
            &order("alice", "buy", "100.00", "0.1"),
        )
        .await,
    );
    refused(
        Call::new("GET", "/v1/balances?account=bob")
            .key(Some(READER))
            .send(&router)
            .await,
    );
    // another key's account
    refused(
        post_waiting(
            &router,
            OTHER,
            "/v1/withdrawals",
            "o-1",
            &transfer("alice", "USDT", "1"),
        )
        .await,
    );
    let missing = Call::new("GET", "/v1/balances?account=alice")
        .key(None)
        .send(&router)
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.head(), 0, "nothing was journaled");
}

#[tokio::test]
async fn bad_transfers_are_4xx_and_journal_nothing() {
    let h = start().await;
    let router = h.router();
    for (body, code, field) in [
        (
            transfer("alice", "DOGE", "1"),
            "unknown_asset",
            Some("asset"),
        ),
        (
            transfer("alice", "USDT", "0.00000001"),
            "too_precise",
            Some("amount"),
        ),
        (
            transfer("alice", "USDT", "0"),
            "not_positive",
            Some("amount"),
        ),
        (
            transfer("alice", "USDT", "-5"),
            "not_positive",
            Some("amount"),
        ),
        (
            r#"{"account":"alice","asset":"USDT","amount":5}"#.to_string(),
            "invalid_field",
            Some("amount"),
        ),
        (
            r#"{"account":"alice","asset":"USDT"}"#.to_string(),
            "invalid_field",
            None,
        ),
        (
            r#"{"account":"alice","asset":"USDT","amount":"1","memo":"x"}"#.to_string(),
            "invalid_field",
            None,
        ),
    ] {
        let reply = post_waiting(&router, TRADER, "/v1/deposits", "bad", &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_eq!(reply.code(), code, "{body}");
        if let Some(field) = field {
            assert_eq!(reply.json["error"]["field"], field, "{body}");
        }
    }
    assert_eq!(h.head(), 0, "nothing was journaled");
}

#[tokio::test]
async fn orders_hold_trades_settle_and_fees_show_on_fills() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let h = start_in(dir).await;
    let router = h.router();
    // alice sells 0.5 BTC at 65,000: 0.5 BTC held
    let sell = post_waiting(
        &router,
        TRADER,
        "/v1/orders",
        "s-1",
        &order("alice", "sell", "65000.00", "0.5"),
    )
    .await;
    assert_eq!(sell.json["status"], "new", "{}", sell.text);
    assert_eq!(
        balance(&router, TRADER, "alice", "BTC").await,
        ("999.50000".into(), "0.50000".into())
    );
    // bob bids 65,100 for 0.2 and trades at 65,000: pays 13,000, the 20 held above it come back
    let buy = post_waiting(
        &router,
        TRADER,
        "/v1/orders",
        "b-1",
        &order("bob", "buy", "65100.00", "0.2"),
    )
    .await;
    assert_eq!(buy.json["status"], "filled", "{}", buy.text);
    assert_eq!(
        balance(&router, TRADER, "bob", "USDT").await,
        ("9987000.0000000".into(), "0.0000000".into())
    );
    // bob receives 0.2 BTC less the 10 bps taker fee (0.0002)
    assert_eq!(
        balance(&router, TRADER, "bob", "BTC").await,
        ("1000.19980".into(), "0.00000".into())
    );
    // alice receives 13,000 USDT less the 10 bps maker fee (13)
    assert_eq!(
        balance(&router, TRADER, "alice", "USDT").await,
        ("10012987.0000000".into(), "0.0000000".into())
    );
    assert_eq!(
        balance(&router, TRADER, "alice", "BTC").await,
        ("999.50000".into(), "0.30000".into())
    );
    assert_eq!(balance(&router, VENUE, "fees", "BTC").await.0, "0.00020");
    assert_eq!(
        balance(&router, VENUE, "fees", "USDT").await.0,
        "13.0000000"
    );
    let fills = Call::new("GET", "/v1/trades?account=bob")
        .send(&router)
        .await;
    let fill = &fills.json["trades"][0];
    assert_eq!(
        (
            fill["liquidity"].as_str(),
            fill["fee"].as_str(),
            fill["fee_asset"].as_str()
        ),
        (Some("taker"), Some("0.00020"), Some("BTC"))
    );
    let fills = Call::new("GET", "/v1/trades?account=alice")
        .send(&router)
        .await;
    let fill = &fills.json["trades"][0];
    assert_eq!(
        (
            fill["liquidity"].as_str(),
            fill["fee"].as_str(),
            fill["fee_asset"].as_str()
        ),
        (Some("maker"), Some("13.0000000"), Some("USDT"))
    );
    // canceling releases what is left
    let id = sell.json["order_id"].as_str().unwrap();
    let cancel = Call::new("DELETE", &format!("/v1/orders/{id}"))
        .idempotency("c-1")
        .prefer("wait=5")
        .send(&router)
        .await;
    assert_eq!(cancel.json["status"], "canceled", "{}", cancel.text);
    assert_eq!(
        balance(&router, TRADER, "alice", "BTC").await,
        ("999.80000".into(), "0.00000".into())
    );
    // more than there is: rejected, nothing held
    // 100 BTC at 99,999 is 9,999,900 USDT; bob has 9,987,000
    let broke = post_waiting(
        &router,
        TRADER,
        "/v1/orders",
        "b-2",
        &order("bob", "buy", "99999.00", "100"),
    )
    .await;
    assert_eq!(broke.json["status"], "rejected", "{}", broke.text);
    assert_eq!(broke.json["reject_reason"], "insufficient_funds");
    assert_eq!(balance(&router, TRADER, "bob", "USDT").await.1, "0.0000000");

    // after a restart (engine snapshot + journal replay) every balance is the same
    let mut before = Vec::new();
    for account in ["alice", "bob"] {
        let path = format!("/v1/balances?account={account}");
        before.push(Call::new("GET", &path).send(&router).await.json);
    }
    let ledger = Call::new("GET", "/v1/ledger?account=bob&limit=1000")
        .send(&router)
        .await
        .json;
    drop(router);
    let common::Harness {
        runtime, dir: kept, ..
    } = h;
    runtime.stop().await;
    assert_eq!(kept.path(), path);
    let h = start_in(kept).await;
    let router = h.router();
    for (account, balances) in ["alice", "bob"].iter().zip(&before) {
        let after = Call::new("GET", &format!("/v1/balances?account={account}"))
            .send(&router)
            .await;
        assert_eq!(&after.json, balances, "{account}");
    }
    let after = Call::new("GET", "/v1/ledger?account=bob&limit=1000")
        .send(&router)
        .await
        .json;
    assert_eq!(after, ledger);
}

fn quote_buy(account: &str, extra: &str) -> String {
    format!(r#"{{"account":"{account}","symbol":"BTC-USDT","side":"buy","type":"market"{extra}}}"#)
}

#[tokio::test]
async fn a_market_buy_by_quote_quantity_spends_at_most_its_budget() {
    let h = start().await;
    let router = h.router();
    for (key, price, quantity) in [("s-1", "65000.00", "0.3"), ("s-2", "66000.00", "0.5")] {
        let sell = post_waiting(
            &router,
            TRADER,
            "/v1/orders",
            key,
            &order("alice", "sell", price, quantity),
        )
        .await;
        assert_eq!(sell.json["status"], "new", "{}", sell.text);
    }
    let (usdt_before, _) = balance(&router, TRADER, "bob", "USDT").await;
    // 0.3 at 65,000 is 19,500; the other 10,500 buy 0.15909 at 66,000 (10,499.94).
    let buy = post_waiting(
        &router,
        TRADER,
        "/v1/orders",
        "q-1",
        &quote_buy("bob", r#","quote_quantity":"30000.00""#),
    )
    .await;
    assert_eq!(buy.status, StatusCode::CREATED, "{}", buy.text);
    assert_eq!(buy.json["status"], "filled", "{}", buy.text);
    assert_eq!(buy.json["quantity"], "0.45909");
    assert_eq!(buy.json["filled_quantity"], "0.45909");
    assert_eq!(buy.json["quote_quantity"], "30000.0000000");
    assert_eq!(buy.json["filled_quote"], "29999.9400000");
    let decimal = |text: &str| rust_decimal::Decimal::from_str_exact(text).unwrap();
    let usdt_after = balance(&router, TRADER, "bob", "USDT").await.0;
    assert_eq!(
        decimal(&usdt_before) - decimal(&usdt_after),
        decimal("29999.94")
    );
    assert_eq!(balance(&router, TRADER, "bob", "USDT").await.1, "0.0000000");

    // A budget beyond what is available: rejected, nothing held.
    let broke = post_waiting(
        &router,
        TRADER,
        "/v1/orders",
        "q-2",
        &quote_buy("bob", r#","quote_quantity":"999999999.00""#),
    )
    .await;
    assert_eq!(broke.json["status"], "rejected", "{}", broke.text);
    assert_eq!(broke.json["reject_reason"], "insufficient_funds");
    assert_eq!(broke.json["quote_quantity"], "999999999.0000000");
    assert_eq!(balance(&router, TRADER, "bob", "USDT").await.1, "0.0000000");

    // Bad shapes are 400s naming the field, and journal nothing.
    let head = h.head();
    for (key, body, code, field) in [
        (
            "bad-1",
            quote_buy("bob", r#","quote_quantity":"100.00","quantity":"0.1""#),
            "quote_quantity_not_allowed",
            "quote_quantity",
        ),
        (
            "bad-2",
            quote_buy("bob", r#","quote_quantity":"100.00","time_in_force":"fok""#),
            "quote_quantity_not_allowed",
            "quote_quantity",
        ),
        (
            "bad-3",
            quote_buy("bob", "").replace("buy", "sell").replace(
                r#""type":"market""#,
                r#""type":"market","quote_quantity":"100.00""#,
            ),
            "quote_quantity_not_allowed",
            "quote_quantity",
        ),
        (
            "bad-4",
            quote_buy("bob", ""),
            "quantity_required",
            "quantity",
        ),
        (
            "bad-5",
            quote_buy("bob", r#","quote_quantity":"100.00000001""#),
            "too_precise",
            "quote_quantity",
        ),
        (
            "bad-6",
            quote_buy("bob", r#","quote_quantity":"0""#),
            "not_positive",
            "quote_quantity",
        ),
    ] {
        let reply = post_waiting(&router, TRADER, "/v1/orders", key, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{key}: {}",
            reply.text
        );
        assert_eq!(reply.json["error"]["code"], code, "{key}: {}", reply.text);
        assert_eq!(reply.json["error"]["field"], field, "{key}: {}", reply.text);
    }
    assert_eq!(h.head(), head, "nothing journaled");
}
