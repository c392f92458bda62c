//! The production stores against the real Redis and FerretDB of `scripts/services`, below the
//! API: what their encodings and set-up steps promise. Each test has its own prefix or database.

mod common;

use common::cluster::services;
use oms_runtime::store::mongo::MongoStore;
use oms_runtime::store::redis::{RedisConfig, RedisStore};
use oms_runtime::store::{IdempotencyStore, OrderStore, Origin, Reservation, StoredResponse};
use std::time::Duration;

fn unique(name: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!("t_{name}_{}_{stamp}", std::process::id())
}

fn origin(principal: &str, key: &str, fingerprint: &str) -> Origin {
    Origin {
        principal: principal.into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
    }
}

#[tokio::test]
async fn idempotency_keys_of_two_principals_never_share_a_record() {
    let Some(services) = services() else { return };
    let redis = RedisStore::connect(RedisConfig {
        url: services.redis.clone(),
        password: None,
        prefix: unique("idem"),
        ttl: Duration::from_secs(60),
        timeout: Duration::from_secs(2),
    })
    .await
    .unwrap();
    // (a/b, c) and (a, b/c) would both be "a/b/c" joined with a slash
    let first = origin("a/b", "c", "fingerprint-1");
    let second = origin("a", "b/c", "fingerprint-2");
    assert_ne!(redis.key(&first), redis.key(&second));
    assert_eq!(redis.reserve(&first).await.unwrap(), Reservation::Reserved);
    assert_eq!(
        redis.reserve(&second).await.unwrap(),
        Reservation::Reserved,
        "the second principal's key is its own, not a mismatch with the first's"
    );
    let response = StoredResponse {
        status: 202,
        body: "{}".into(),
    };
    redis.complete(&first, &response).await.unwrap();
    assert_eq!(
        redis.reserve(&second).await.unwrap(),
        Reservation::InFlight,
        "completing the first leaves the second in flight"
    );
    assert_eq!(
        redis.reserve(&first).await.unwrap(),
        Reservation::Completed(response)
    );
}

#[tokio::test]
async fn indexes_are_created_once_and_a_restart_finds_them() {
    let Some(services) = services() else { return };
    let database = unique("indexes");
    let timeout = Duration::from_secs(5);
    // A first start creates the indexes; every later start (a restarted projector) finds them.
    for start in 0..3 {
        let mongo = MongoStore::connect(&services.mongo, &database, timeout)
            .await
            .unwrap();
        mongo
            .create_indexes()
            .await
            .unwrap_or_else(|e| panic!("start {start}: {e}"));
        mongo.ping().await.unwrap();
    }
}

/// Order documents written before quote budgets (no `format` field, the order state in the
/// layout of format 1) still read, next to ones written now.
#[tokio::test]
async fn order_documents_of_format_1_still_read() {
    use mongodb::bson::{Binary, doc, spec::BinarySubtype};
    use oms_core::{Event, EventRecord, NewOrder, OrderId, OrderState, Quantity, Timestamp};
    use oms_runtime::store::{OrderQuery, ProjectionBatch};
    let Some(services) = services() else { return };
    let database = unique("format1");
    let timeout = Duration::from_secs(5);
    let mongo = MongoStore::connect(&services.mongo, &database, timeout)
        .await
        .unwrap();
    mongo.create_indexes().await.unwrap();
    let state = |id: u64, quote_quantity: Option<u128>| {
        let order = NewOrder {
            order_id: OrderId(id),
            client_order_id: format!("c{id}").into(),
            account: "alice".into(),
            symbol: "BTC-USDT".into(),
            side: oms_core::Side::Buy,
            order_type: oms_core::OrderType::Market,
            time_in_force: oms_core::TimeInForce::Ioc,
            price: None,
            quantity: Quantity(5),
            post_only: false,
            self_trade_prevention: oms_core::SelfTradePrevention::None,
            quote_quantity,
        };
        OrderState::open(&EventRecord {
            seq: id,
            ts: Timestamp(id),
            symbol: "BTC-USDT".into(),
            event: Event::Accepted { order },
        })
        .unwrap()
    };
    let old = state(1, None);
    // Format 1 wrote the same bytes but the `None` that ends today's order.
    let order_end = postcard::to_allocvec(&old.order).unwrap().len() - 1;
    let mut bytes = postcard::to_allocvec(&old).unwrap();
    bytes.remove(order_end);
    let client = mongodb::Client::with_uri_str(&services.mongo)
        .await
        .unwrap();
    client
        .database(&database)
        .collection::<mongodb::bson::Document>("orders")
        .insert_one(doc! {
            "_id": format!("{:020}", 1),
            "seq": 1i64,
            "version": 1i64,
            "account": "alice",
            "symbol": "BTC-USDT",
            "client_order_id": "c1",
            "status": "new",
            "open": true,
            "created_at_ns": 1i64,
            "updated_at_ns": 1i64,
            "state": Binary { subtype: BinarySubtype::Generic, bytes },
        })
        .await
        .unwrap();
    let new = state(2, Some(500));
    mongo
        .apply(&ProjectionBatch {
            orders: vec![new.clone()],
            ..ProjectionBatch::default()
        })
        .await
        .unwrap();
    assert_eq!(mongo.order(OrderId(1)).await.unwrap(), Some(old.clone()));
    assert_eq!(mongo.order(OrderId(2)).await.unwrap(), Some(new.clone()));
    let page = mongo
        .orders(&OrderQuery {
            account: "alice".into(),
            symbol: None,
            open_only: false,
            status: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(page.orders, vec![new, old]);
}
