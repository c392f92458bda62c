//! Shared set-up for the runtime's tests: a runtime on a temporary database with two keys, and
//! a request helper that drives the router without a socket.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod cluster;
pub mod log;
pub mod streams;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use oms_runtime::api::Settings;
use oms_runtime::auth::{ApiKeys, KeyEntry, RateLimits, Scope, hash_key};
use oms_runtime::{Runtime, RuntimeConfig, default_instruments, markets};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

pub const TRADER: &str = "oms_trader_key_for_tests_only";
pub const OTHER: &str = "oms_other_key_for_tests_only";
/// Reads the fee account, to check conservation.
pub const VENUE: &str = "oms_venue_key_for_tests_only";
/// Reads alice, and nothing else.
pub const READER: &str = "oms_reader_key_for_tests_only";
/// Trades dave, at 2 writes and 3 reads a second.
pub const LIMITED: &str = "oms_limited_key_for_tests_only";

/// Trades the 16 accounts of [`desk_account`], with every scope (distributed tests with many
/// accounts).
pub const DESK: &str = "oms_desk_key_for_tests_only";
/// The trader key's Binance API key and secret (it trades alice there).
pub const BINANCE_KEY: &str = "TraderBinanceApiKeyForTestsOnly000000000000000000000000000000001";
pub const BINANCE_SECRET: &str = "TraderBinanceSecretForTestsOnly000000000000000000000000000000001";
/// How many accounts the `DESK` key has.
pub const DESK_ACCOUNTS: usize = 16;

/// The `i`-th account of the `DESK` key.
pub fn desk_account(i: usize) -> String {
    format!("desk-{:02}", i % DESK_ACCOUNTS)
}

/// What every account of the test keys starts with (deposited by [`fund`]).
pub const FUNDING: [(&str, &str); 3] = [("USDT", "10000000"), ("BTC", "1000"), ("ETH", "10000")];

pub struct Harness {
    pub runtime: Runtime,
    pub dir: tempfile::TempDir,
    /// The journal's head once the accounts were funded.
    pub base: u64,
}

/// The test principals: `trader` (accounts alice and bob), `other` (carol) and `desk` (16
/// accounts), with every scope; `venue` (the fee account) and `reader` (alice), read only.
pub fn key_entries() -> Vec<KeyEntry> {
    let all = Some(vec![Scope::Read, Scope::Trade, Scope::Funds]);
    vec![
        KeyEntry {
            id: "trader".into(),
            sha256: hash_key(TRADER),
            accounts: vec!["alice".into(), "bob".into()],
            scopes: all.clone(),
            // the load of the tests (a thousand orders at once), whatever the defaults
            rate_limits: Some(RateLimits {
                writes_per_second: Some(1_000_000),
                reads_per_second: Some(1_000_000),
            }),
            binance: Some(oms_runtime::auth::BinanceCredentials {
                api_key: BINANCE_KEY.into(),
                secret: BINANCE_SECRET.into(),
            }),
        },
        KeyEntry {
            id: "other".into(),
            sha256: hash_key(OTHER),
            accounts: vec!["carol".into()],
            scopes: all,
            rate_limits: None,
            binance: None,
        },
        KeyEntry {
            id: "desk".into(),
            sha256: hash_key(DESK),
            accounts: (0..DESK_ACCOUNTS).map(desk_account).collect(),
            scopes: Some(vec![Scope::Read, Scope::Trade, Scope::Funds]),
            // the load of the distributed tests, whatever the server's defaults
            rate_limits: Some(RateLimits {
                writes_per_second: Some(1_000_000),
                reads_per_second: Some(1_000_000),
            }),
            binance: None,
        },
        KeyEntry {
            id: "venue".into(),
            sha256: hash_key(VENUE),
            accounts: vec!["fees".into()],
            scopes: Some(vec![Scope::Read]),
            rate_limits: None,
            binance: None,
        },
        KeyEntry {
            id: "reader".into(),
            sha256: hash_key(READER),
            accounts: vec!["alice".into()],
            scopes: Some(vec![Scope::Read]),
            rate_limits: None,
            binance: None,
        },
        KeyEntry {
            id: "limited".into(),
            sha256: hash_key(LIMITED),
            accounts: vec!["dave".into()],
            scopes: Some(vec![Scope::Read, Scope::Trade]),
            rate_limits: Some(RateLimits {
                writes_per_second: Some(2),
                reads_per_second: Some(3),
            }),
            binance: None,
        },
    ]
}

/// The deposits that fund an account: `(idempotency key, body)`. The keys are fixed, so funding
/// again (after a restart) changes nothing.
pub fn funding(account: &str) -> Vec<(String, String)> {
    FUNDING
        .iter()
        .map(|(asset, amount)| {
            (
                format!("fund-{account}-{asset}"),
                format!(r#"{{"account":"{account}","asset":"{asset}","amount":"{amount}"}}"#),
            )
        })
        .collect()
}

/// Funds alice, bob and carol through the API, waiting until each deposit is processed.
pub async fn fund(router: &Router) {
    for (key, account) in [(TRADER, "alice"), (TRADER, "bob"), (OTHER, "carol")] {
        for (idempotency, body) in funding(account) {
            let reply = Call::new("POST", "/v1/deposits")
                .key(Some(key))
                .idempotency(&idempotency)
                .prefer("wait=5")
                .body(body)
                .send(router)
                .await;
            assert!(reply.status.is_success(), "deposit: {reply:?}");
            assert_eq!(reply.json["status"], "completed", "{reply:?}");
        }
    }
}

/// A keys file with [`key_entries`] in `dir`.
pub fn write_keys(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("keys.json");
    std::fs::write(&path, serde_json::to_string(&key_entries()).unwrap()).unwrap();
    path
}

pub fn keys() -> ApiKeys {
    ApiKeys::new(key_entries(), "tests").unwrap()
}

/// A runtime on `dir` whose accounts hold nothing.
pub async fn start_unfunded(dir: tempfile::TempDir) -> Harness {
    start_unfunded_with(dir, oms_runtime::streams::Limits::default()).await
}

/// A runtime on `dir` whose accounts hold nothing, with these stream limits.
pub async fn start_unfunded_with(
    dir: tempfile::TempDir,
    streams: oms_runtime::streams::Limits,
) -> Harness {
    let limits = oms_core::RiskLimits::default();
    // Watched like a server's: a test may revoke a key by rewriting it.
    let keys_file = write_keys(dir.path());
    let runtime = Runtime::start(RuntimeConfig {
        database: dir.path().join("oms.redb"),
        database_cache_bytes: 16 << 20,
        markets: markets(default_instruments(), &limits).unwrap(),
        limits,
        keys: keys(),
        keys_file: Some((keys_file, Duration::from_millis(100))),
        idempotency_ttl: Duration::from_secs(3600),
        settings: Settings {
            max_wait: Duration::from_secs(5),
            dependency_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_secs(5),
            rate_limits: oms_runtime::api::limits::Defaults {
                writes_per_second: 100_000,
                reads_per_second: 100_000,
            },
            streams,
            binance_api: true,
        },
        snapshot_every: 3,
        hold_projection: false,
        node_id: 1,
    })
    .await
    .unwrap();
    Harness {
        runtime,
        dir,
        base: 0,
    }
}

/// A runtime whose accounts are funded (see [`fund`]).
pub async fn start() -> Harness {
    start_in(tempfile::tempdir().unwrap()).await
}

/// A runtime on `dir`, its accounts funded (again: funding is idempotent).
pub async fn start_in(dir: tempfile::TempDir) -> Harness {
    let mut harness = start_unfunded(dir).await;
    fund(&harness.router()).await;
    harness.base = harness.runtime.store.head();
    harness
}

impl Harness {
    pub fn router(&self) -> Router {
        oms_runtime::api::router(self.runtime.app.clone())
    }

    /// Journal entries since the harness started (funding not counted).
    pub fn head(&self) -> u64 {
        self.runtime.store.head() - self.base
    }
}

/// One request through `router`.
pub struct Call<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub key: Option<&'a str>,
    pub idempotency: Option<&'a str>,
    pub prefer: Option<&'a str>,
    pub body: Option<String>,
    /// The body's `Content-Type`; `application/json` unless set.
    pub content_type: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, uri: &'a str) -> Call<'a> {
        Call {
            method,
            uri,
            key: Some(TRADER),
            idempotency: None,
            prefer: None,
            body: None,
            content_type: "application/json",
        }
    }

    pub fn key(mut self, key: Option<&'a str>) -> Self {
        self.key = key;
        self
    }

    pub fn idempotency(mut self, key: &'a str) -> Self {
        self.idempotency = Some(key);
        self
    }

    pub fn prefer(mut self, prefer: &'a str) -> Self {
        self.prefer = Some(prefer);
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn content_type(mut self, content_type: &'a str) -> Self {
        self.content_type = content_type;
        self
    }

    pub async fn send(self, router: &Router) -> Reply {
        let mut request = Request::builder().method(self.method).uri(self.uri);
        if let Some(key) = self.key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if let Some(idempotency) = self.idempotency {
            request = request.header("idempotency-key", idempotency);
        }
        if let Some(prefer) = self.prefer {
            request = request.header("prefer", prefer);
        }
        let body = match self.body {
            Some(body) => {
                request = request.header("content-type", self.content_type);
                Body::from(body)
            }
            None => Body::empty(),
        };
        let response = router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// The error code of an error reply.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

pub fn order(account: &str, side: &str, price: &str, quantity: &str) -> String {
    format!(
        r#"{{"account":"{account}","symbol":"BTC-USDT","side":"{side}","type":"limit","price":"{price}","quantity":"{quantity}"}}"#
    )
}
