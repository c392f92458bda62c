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
