//! The Binance-compatible API against a real single-node runtime: signing, idempotency of
//! orders, and the user data stream's end when its key is revoked. (CCXT and python-binance
//! drive the same API in scripts/check-binance.)

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{BINANCE_KEY, BINANCE_SECRET, Harness, start_unfunded_with};
use futures::StreamExt;
use oms_runtime::binance::sign::sign;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower::ServiceExt;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A call with `X-MBX-APIKEY`; `params` signed with `secret` when given.
async fn call(
    router: &Router,
    method: &str,
    path: &str,
    params: &str,
    secret: Option<&str>,
) -> (StatusCode, Value) {
    let query = match secret {
        Some(secret) => format!("{params}&signature={}", sign(secret, params)),
        None => params.to_string(),
    };
    let request = Request::builder()
        .method(method)
        .uri(format!("{path}?{query}"))
        .header("x-mbx-apikey", BINANCE_KEY)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn start() -> Harness {
    let limits = oms_runtime::streams::Limits {
        heartbeat: Duration::from_millis(200),
        ..Default::default()
    };
    let h = start_unfunded_with(tempfile::tempdir().unwrap(), limits).await;
    common::fund(&h.router()).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_are_checked_as_binance_checks_them() {
    let h = start().await;
    let router = h.router();
    let account = |params: String, secret: Option<&'static str>| {
        let router = router.clone();
        async move { call(&router, "GET", "/api/v3/account", &params, secret).await }
    };
    let refused = |(status, body): (StatusCode, Value)| (status, body["code"].as_i64());
    let params = format!("timestamp={}", now_ms());
    let (status, balances) = account(params.clone(), Some(BINANCE_SECRET)).await;
    assert_eq!(status, StatusCode::OK, "{balances}");
    let usdt = balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "USDT")
        .unwrap();
    assert_eq!(usdt["free"], "10000000.0000000", "{usdt}");
    // The same signed request again is a replay.
    assert_eq!(
        refused(account(params, Some(BINANCE_SECRET)).await),
        (StatusCode::BAD_REQUEST, Some(-1022))
    );
    let fresh = format!("timestamp={}", now_ms());
    assert_eq!(
        refused(account(fresh, Some("wrong")).await),
        (StatusCode::BAD_REQUEST, Some(-1022))
    );
    let stale = format!("timestamp={}&recvWindow=1000", now_ms() - 2_000);
    assert_eq!(
        refused(account(stale, Some(BINANCE_SECRET)).await),
        (StatusCode::BAD_REQUEST, Some(-1021))
    );
    let unsigned = format!("timestamp={}", now_ms());
    assert_eq!(
        refused(account(unsigned, None).await),
        (StatusCode::BAD_REQUEST, Some(-1102))
    );
    // Binance signs the parameters, not the path: the same parameters in the same millisecond
    // to two paths are two requests, not a replay (python-binance's get_my_trades then
    // get_all_orders were refused once).
    let same = format!("symbol=BTCUSDT&timestamp={}", now_ms());
    for path in [
        "/api/v3/myTrades",
        "/api/v3/allOrders",
        "/api/v3/openOrders",
    ] {
        let (status, body) = call(&router, "GET", path, &same, Some(BINANCE_SECRET)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_order_is_placed_once_and_refused_as_a_duplicate() {
    let h = start().await;
    let router = h.router();
    let order = |ts: u128| {
        format!(
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=100.00\
             &newClientOrderId=retry-1&timestamp={ts}"
        )
    };
    let (status, placed) = call(
        &router,
        "POST",
        "/api/v3/order",
        &order(now_ms()),
        Some(BINANCE_SECRET),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{placed}");
    assert_eq!(placed["status"], "NEW");
    // A client retries with a new timestamp and signature: the same order, not a second one.
    let (status, again) = call(
        &router,
        "POST",
        "/api/v3/order",
        &order(now_ms() + 1),
        Some(BINANCE_SECRET),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");
    assert_eq!(
        (again["code"].as_i64(), again["msg"].as_str()),
        (Some(-2010), Some("Duplicate order sent."))
    );
    let (status, open) = call(
        &router,
        "GET",
        "/api/v3/openOrders",
        &format!("symbol=BTCUSDT&timestamp={}", now_ms()),
        Some(BINANCE_SECRET),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["orderId"])
        .collect();
    assert_eq!(ids, [&placed["orderId"]]);
    // order/test checks and places nothing.
    let test = format!(
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.1&price=100.005&timestamp={}",
        now_ms()
    );
    let (status, body) = call(
        &router,
        "POST",
        "/api/v3/order/test",
        &test,
        Some(BINANCE_SECRET),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-1013)),
        "{body}"
    );
    let good = test.replace("100.005", "100.01");
    let (status, body) = call(
        &router,
        "POST",
        "/api/v3/order/test",
        &good,
        Some(BINANCE_SECRET),
    )
    .await;
    assert_eq!((status, &body), (StatusCode::OK, &serde_json::json!({})));
    let (_, open) = call(
        &router,
        "GET",
        "/api/v3/openOrders",
        &format!("timestamp={}", now_ms()),
        Some(BINANCE_SECRET),
    )
    .await;
    assert_eq!(open.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_ends_its_user_data_stream() {
    let h = start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = h.router();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let (status, body) = call(&h.router(), "POST", "/api/v3/userDataStream", "", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listen_key = body["listenKey"].as_str().unwrap().to_string();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/{listen_key}"))
        .await
        .expect("the listen key's stream");
    // A deposit shows as a balance update, then the key is revoked.
    let deposit = common::Call::new("POST", "/v1/deposits")
        .key(Some(common::TRADER))
        .idempotency("stream-deposit")
        .body(r#"{"account":"alice","asset":"USDT","amount":"5"}"#)
        .send(&h.router())
        .await;
    assert!(deposit.status.is_success(), "{}", deposit.text);
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            kinds.push(event["e"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(kinds, ["balanceUpdate", "outboundAccountPosition"]);
    let path = h.dir.path().join("keys.json");
    oms_runtime::auth::revoke_key(&path, "trader").unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return frame.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the stream ends within seconds of the revocation");
    assert_eq!(closed, Some(4003));
}

/// Without `symbol`, the tickers answer every symbol (they answered only the last one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickers_without_a_symbol_list_every_symbol() {
    let h = start().await;
    let router = h.router();
    for path in [
        "/api/v3/ticker/price",
        "/api/v3/ticker/bookTicker",
        "/api/v3/ticker/24hr",
    ] {
        let (status, all) = call(&router, "GET", path, "", None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {all}");
        let symbols: Vec<&str> = all
            .as_array()
            .unwrap_or_else(|| panic!("{path}: a list: {all}"))
            .iter()
            .filter_map(|t| t["symbol"].as_str())
            .collect();
        assert_eq!(symbols, ["BTCUSDT", "ETHUSDT"], "{path}");
        let (_, one) = call(&router, "GET", path, "symbol=ETHUSDT", None).await;
        assert_eq!(one["symbol"], "ETHUSDT", "{path}: {one}");
    }
}
