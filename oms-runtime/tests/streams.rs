//! WebSocket streams in single-node mode, over a real socket served by the project's server:
//! every update of a place, amend, fill and cancel arrives in order and matches the REST state;
//! the book rebuilt from its snapshot and updates equals `GET /v1/book`; a client resumes from
//! its cursor; a slow client is cut off while a fast one keeps receiving; a key reads only its
//! own accounts.

mod common;

use axum::http::StatusCode;
use common::streams::{Book, drain};
use common::{Call, Harness, OTHER, READER, TRADER, order, start_in, start_unfunded_with};
use oms_runtime::streams::client::{ClientError, StreamClient};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// The router on a loopback port, as `oms-runtime` serves it; stops when dropped.
struct Served {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(h: &Harness) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = oms_runtime::server::Limits {
        max_connections: 1000,
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(1),
    };
    tokio::spawn(oms_runtime::server::serve(
        listener,
        h.router(),
        limits,
        "api",
        h.runtime.app.metrics.http.connections.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Served {
        url: format!("ws://{addr}/v1/ws"),
        _stop: stop,
    }
}

async fn start_with(limits: oms_runtime::streams::Limits) -> Harness {
    let mut h = start_unfunded_with(tempfile::tempdir().unwrap(), limits).await;
    common::fund(&h.router()).await;
    h.base = h.runtime.store.head();
    h
}

async fn place(h: &Harness, idempotency: &str, body: &str) -> String {
    let reply = Call::new("POST", "/v1/orders")
        .idempotency(idempotency)
        .prefer("wait=5")
        .body(body)
        .send(&h.router())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json["order_id"].as_str().unwrap().to_string()
}

async fn get(h: &Harness, path: &str) -> Value {
    let reply = Call::new("GET", path).send(&h.router()).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    reply.json
}

#[tokio::test]
async fn every_update_arrives_in_order_and_matches_the_rest_state() {
    let h = start_in(tempfile::tempdir().unwrap()).await;
    let served = serve(&h).await;
    let (mut client, welcome) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    for (channel, name) in [
        ("orders", "alice"),
        ("orders", "bob"),
        ("fills", "alice"),
        ("fills", "bob"),
        ("balances", "alice"),
        ("book", "BTC-USDT"),
        ("trades", "BTC-USDT"),
        ("ticker", "BTC-USDT"),
    ] {
        let ack = client.subscribe(channel, name, None).await.unwrap();
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    // The book's snapshot and the first ticker, in either order.
    let (first, second) = (
        client.update(WAIT).await.unwrap(),
        client.update(WAIT).await.unwrap(),
    );
    let (snapshot, ticker) = if first["type"] == "ticker" {
        (second, first)
    } else {
        (first, second)
    };
    assert_eq!(snapshot["type"], "book_snapshot", "{snapshot}");
    assert_eq!(ticker["type"], "ticker", "{ticker}");
    assert_eq!(ticker["ticker"]["symbol"], "BTC-USDT");

    // A book with depth, an amend, a partial fill, a cancel.
    place(&h, "s-1", &order("bob", "sell", "51000", "2")).await;
    place(&h, "s-2", &order("bob", "sell", "52000", "1.5")).await;
    let bid = place(&h, "s-3", &order("alice", "buy", "50000", "1")).await;
    let amended = Call::new("PATCH", &format!("/v1/orders/{bid}"))
        .idempotency("s-4")
        .prefer("wait=5")
        .body(r#"{"price":"50010"}"#)
        .send(&h.router())
        .await;
    assert_eq!(amended.status, StatusCode::OK, "{}", amended.text);
    let ask = place(&h, "s-5", &order("bob", "sell", "50010", "0.4")).await;
    let canceled = Call::new("DELETE", &format!("/v1/orders/{bid}"))
        .idempotency("s-6")
        .prefer("wait=5")
        .send(&h.router())
        .await;
    assert!(canceled.status.is_success(), "{}", canceled.text);

    let mut seen = vec![snapshot];
    seen.extend(drain(&mut client, Duration::from_millis(500)).await);
    // The ticker follows the trade (at most once a second).
    let tickers: Vec<&Value> = seen.iter().filter(|m| m["type"] == "ticker").collect();
    if let Some(last) = tickers.last() {
        assert_eq!(last["ticker"]["last_price"], "50010.00", "{last}");
    } else {
        let ticker = client.update(WAIT).await.unwrap();
        assert_eq!(ticker["ticker"]["last_price"], "50010.00", "{ticker}");
    }

    // Orders: versions 1, 2, 3, ... with no gap, ending at the REST state.
    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    let mut last: HashMap<String, Value> = HashMap::new();
    for message in seen.iter().filter(|m| m["type"] == "order") {
        assert!(message["cursor"].is_string(), "{message}");
        let order = &message["order"];
        let id = order["order_id"].as_str().unwrap().to_string();
        versions
            .entry(id.clone())
            .or_default()
            .push(order["version"].as_u64().unwrap());
        last.insert(id, order.clone());
    }
    assert_eq!(versions.len(), 4, "{versions:?}");
    for (id, seen_versions) in &versions {
        let expected: Vec<u64> = (1..=seen_versions.len() as u64).collect();
        assert_eq!(seen_versions, &expected, "order {id}");
        let rest = get(&h, &format!("/v1/orders/{id}")).await;
        assert_eq!(&last[id], &rest, "order {id}");
    }
    assert_eq!(last[&bid]["status"], "canceled");
    assert_eq!(last[&ask]["status"], "filled");
    assert_eq!(last[&bid]["filled_quantity"], "0.40000");

    // Fills: each account's own side, as the REST API lists them.
    for account in ["alice", "bob"] {
        let streamed: Vec<&Value> = seen
            .iter()
            .filter(|m| m["type"] == "fill" && m["account"] == account)
            .map(|m| &m["fill"])
            .collect();
        let rest = get(&h, &format!("/v1/trades?account={account}")).await;
        let rest: Vec<&Value> = rest["trades"].as_array().unwrap().iter().collect();
        assert_eq!(streamed.len(), 1, "{account}: {streamed:?}");
        assert_eq!(streamed, rest, "{account}");
    }

    // Balances: every ledger entry of alice since the subscription, in ledger order.
    let streamed: Vec<&Value> = seen
        .iter()
        .filter(|m| m["type"] == "balance")
        .map(|m| &m["entry"])
        .collect();
    assert!(!streamed.is_empty());
    let first = streamed[0]["seq"].as_u64().unwrap();
    let ledger = get(&h, "/v1/ledger?account=alice&limit=100").await;
    let mut rest: Vec<&Value> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() >= first)
        .collect();
    rest.reverse();
    assert_eq!(streamed, rest);

    // Public trades name no account and no order.
    let trades: Vec<&Value> = seen.iter().filter(|m| m["type"] == "trade").collect();
    assert_eq!(trades.len(), 1);
    let trade = trades[0]["trade"].as_object().unwrap();
    assert!(
        trade
            .keys()
            .all(|k| !k.contains("account") && !k.contains("order"))
    );

    // The book from its snapshot and updates is the REST book.
    let mut book = Book::default();
    for message in &seen {
        book.apply(message);
    }
    let rest = get(&h, "/v1/book/BTC-USDT?depth=100").await;
    book.assert_matches(&rest);
    assert_eq!(book.asks.len(), 2, "{:?}", book.asks);
    client.close().await;
}

#[tokio::test]
async fn a_key_reads_only_its_own_accounts() {
    let h = start_in(tempfile::tempdir().unwrap()).await;
    let served = serve(&h).await;
    let (mut other, _) = StreamClient::connect(&served.url, OTHER).await.unwrap();
    for (channel, account) in [("orders", "alice"), ("fills", "bob"), ("balances", "alice")] {
        match other.subscribe(channel, account, None).await {
            Err(ClientError::Refused(answer)) => assert_eq!(answer["code"], "forbidden"),
            other => panic!("{channel} of {account}: {other:?}"),
        }
    }
    other.subscribe("orders", "carol", None).await.unwrap();
    match other.subscribe("book", "DOGE-USDT", None).await {
        Err(ClientError::Refused(answer)) => assert_eq!(answer["code"], "unknown_symbol"),
        other => panic!("{other:?}"),
    }
    // Read-only alice: alice yes, bob no.
    let (mut reader, _) = StreamClient::connect(&served.url, READER).await.unwrap();
    reader.subscribe("fills", "alice", None).await.unwrap();
    assert!(reader.subscribe("fills", "bob", None).await.is_err());

    // A bad key at the upgrade is a 401; without a header, the first message must authenticate.
    match StreamClient::connect(&served.url, "not-a-key").await {
        Err(ClientError::WebSocket(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("{:?}", other.map(|(_, w)| w)),
    }
    let (socket, _) = tokio_tungstenite::connect_async(&served.url).await.unwrap();
    let mut anonymous = StreamClient::unauthenticated(socket);
    anonymous
        .send(json!({"op": "auth", "key": "wrong"}))
        .await
        .unwrap();
    match anonymous.next(WAIT).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 4003),
        other => panic!("{other:?}"),
    }
    let (socket, _) = tokio_tungstenite::connect_async(&served.url).await.unwrap();
    let mut authed = StreamClient::unauthenticated(socket);
    authed
        .send(json!({"op": "auth", "key": TRADER}))
        .await
        .unwrap();
    assert_eq!(authed.next(WAIT).await.unwrap()["type"], "welcome");
    authed.subscribe("orders", "alice", None).await.unwrap();
}

#[tokio::test]
async fn a_reconnecting_client_resumes_from_its_cursor() {
    let h = start_with(oms_runtime::streams::Limits {
        replay: 20,
        ..Default::default()
    })
    .await;
    let served = serve(&h).await;
    let (mut client, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    client.subscribe("orders", "alice", None).await.unwrap();
    place(&h, "r-1", &order("alice", "buy", "40000", "1")).await;
    let first = client.update(WAIT).await.unwrap();
    assert_eq!(first["order"]["version"], 1);
    let cursor = first["cursor"].as_str().unwrap().to_string();
    client.close().await;

    // Missed while away: two orders.
    let second = place(&h, "r-2", &order("alice", "buy", "40001", "1")).await;
    let third = place(&h, "r-3", &order("alice", "buy", "40002", "1")).await;
    let (mut client, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    let ack = client
        .subscribe("orders", "alice", Some(&cursor))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["replayed"], 2, "{ack}");
    let ids: Vec<String> = drain(&mut client, Duration::from_millis(500))
        .await
        .iter()
        .map(|m| m["order"]["order_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [second, third]);

    // A cursor the window no longer reaches back to: told to resynchronize.
    for i in 0..30 {
        place(
            &h,
            &format!("r-fill-{i}"),
            &order("alice", "buy", "40000", "0.1"),
        )
        .await;
    }
    let (mut late, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    let answer = late
        .subscribe("orders", "alice", Some(&cursor))
        .await
        .unwrap();
    assert_eq!(answer["type"], "resync", "{answer}");
    assert_eq!(answer["account"], "alice");
    // Live updates follow the resync.
    place(&h, "r-after", &order("alice", "buy", "40000", "0.1")).await;
    assert_eq!(late.update(WAIT).await.unwrap()["type"], "order");
    match late.subscribe("orders", "bob", Some("1.2")).await {
        Err(ClientError::Refused(answer)) => assert_eq!(answer["code"], "invalid_cursor"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn after_a_restart_a_client_resumes_if_it_missed_nothing() {
    let h = start_in(tempfile::tempdir().unwrap()).await;
    let served = serve(&h).await;
    let cursor = |message: Value| message["cursor"].as_str().unwrap().to_string();
    let (mut early, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    let (mut late, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    early.subscribe("orders", "alice", None).await.unwrap();
    late.subscribe("orders", "alice", None).await.unwrap();
    place(&h, "x-1", &order("alice", "buy", "40000", "1")).await;
    let early_cursor = cursor(early.update(WAIT).await.unwrap());
    early.close().await;
    place(&h, "x-2", &order("alice", "buy", "40000", "1")).await;
    late.update(WAIT).await.unwrap();
    let late_cursor = cursor(late.update(WAIT).await.unwrap());
    late.close().await;
    drop(served);
    // The server lets go of its handles to the store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Harness { runtime, dir, .. } = h;
    runtime.stop().await;
    let h = start_in(dir).await;
    let served = serve(&h).await;
    // What was journaled before the restart is not streamed again: a client that missed some
    // of it reads the state from the REST API; one that saw all of it goes on.
    let (mut client, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    let answer = client
        .subscribe("orders", "alice", Some(&early_cursor))
        .await
        .unwrap();
    assert_eq!(answer["type"], "resync", "{answer}");
    let (mut resumed, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    let answer = resumed
        .subscribe("orders", "alice", Some(&late_cursor))
        .await
        .unwrap();
    assert_eq!(answer["type"], "ack", "{answer}");
    place(&h, "x-3", &order("alice", "buy", "40000", "1")).await;
    for client in [&mut client, &mut resumed] {
        let update = client.update(WAIT).await.unwrap();
        assert_eq!(update["order"]["version"], 1, "{update}");
    }
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_a_fast_one_keeps_receiving() {
    let h = start_with(oms_runtime::streams::Limits {
        queue: 256,
        ..Default::default()
    })
    .await;
    let served = serve(&h).await;
    // The slow client reads nothing, through a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = served
        .url
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws");
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = served.url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {TRADER}").parse().unwrap());
        request
    };
    let (socket, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let (mut slow, _) = StreamClient::welcomed(socket).await.unwrap();
    let (mut fast, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    for client in [&mut slow, &mut fast] {
        for (channel, name) in [
            ("orders", "alice"),
            ("orders", "bob"),
            ("fills", "alice"),
            ("fills", "bob"),
            ("balances", "alice"),
            ("trades", "BTC-USDT"),
        ] {
            client.subscribe(channel, name, None).await.unwrap();
        }
    }
    // The fast client reads as the orders go in.
    let reader = tokio::spawn(async move {
        let mut versions: HashMap<String, u64> = HashMap::new();
        while let Ok(message) = fast.update(Duration::from_secs(3)).await {
            if message["type"] == "order" {
                let order = &message["order"];
                let id = order["order_id"].as_str().unwrap().to_string();
                let version = order["version"].as_u64().unwrap();
                let before = versions.insert(id.clone(), version).unwrap_or(0);
                assert_eq!(version, before + 1, "order {id}: a gap");
            }
        }
        versions
    });
    let cut_off = || {
        h.runtime
            .app
            .metrics
            .encode()
            .contains("oms_stream_messages_dropped_total{outcome=\"slow_consumer\"} 1")
    };
    // Pairs that trade: each gives about ten messages.
    let mut placed = Vec::new();
    while !cut_off() && placed.len() < 8000 {
        let (account, side) = if placed.len() % 2 == 0 {
            ("alice", "buy")
        } else {
            ("bob", "sell")
        };
        let reply = Call::new("POST", "/v1/orders")
            .idempotency(&format!("slow-{}", placed.len()))
            .body(order(account, side, "40000", "0.01"))
            .send(&h.router())
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        placed.push(reply.json["order_id"].as_str().unwrap().to_string());
    }
    assert!(
        cut_off(),
        "placed {} orders and the slow client is still on",
        placed.len()
    );
    // Reading at last, the slow client finds what was queued, then the close.
    let closed = loop {
        match slow.update(WAIT).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, reason }) => break (code, reason),
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(closed.0, 4001, "{closed:?}");
    assert!(closed.1.contains("slow consumer"), "{closed:?}");
    // Every order reached the fast client, each change once and in order.
    let versions = reader.await.unwrap();
    for id in &placed {
        assert!(
            versions.contains_key(id),
            "order {id} never reached the fast client"
        );
    }
    let last = get(&h, &format!("/v1/orders/{}", placed[placed.len() - 2])).await;
    assert_eq!(
        versions[&placed[placed.len() - 2]],
        last["version"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn limits_per_key_and_the_idle_timeout_hold() {
    let h = start_with(oms_runtime::streams::Limits {
        connections_per_key: 2,
        subscriptions_per_key: 3,
        heartbeat: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let served = serve(&h).await;
    // Clients that hang up in the middle of the handshake hold no connection slot.
    let addr = served
        .url
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws");
    for _ in 0..4 {
        use tokio::io::AsyncWriteExt;
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {TRADER}\r\n\r\n"
        );
        raw.write_all(request.as_bytes()).await.unwrap();
        drop(raw);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut first, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    let (_second, _) = StreamClient::connect(&served.url, TRADER).await.unwrap();
    match StreamClient::connect(&served.url, TRADER).await {
        Err(ClientError::WebSocket(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!("a third connection: {:?}", other.map(|(_, w)| w)),
    }
    // Another key is not held to this one's count.
    let (mut other, _) = StreamClient::connect(&served.url, OTHER).await.unwrap();
    // A client flooding requests is closed (a burst of 300, then 50 a second).
    for id in 0..400 {
        other.send(json!({"op": "ping", "id": id})).await.unwrap();
    }
    let flooded = loop {
        match other.next(WAIT).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, .. }) => break code,
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(flooded, 1008);
    for symbol in ["BTC-USDT", "ETH-USDT"] {
        first.subscribe("trades", symbol, None).await.unwrap();
    }
    first.subscribe("orders", "alice", None).await.unwrap();
    match first.subscribe("orders", "bob", None).await {
        Err(ClientError::Refused(answer)) => {
            assert_eq!(answer["code"], "too_many_subscriptions", "{answer}");
        }
        other => panic!("{other:?}"),
    }
    // A client that answers nothing, not even the pings, is closed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closed = loop {
        match first.next(WAIT).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, .. }) => break code,
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(closed, 4000);
}
