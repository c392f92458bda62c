//! The user data stream: `executionReport`, `outboundAccountPosition` and `balanceUpdate`
//! events of the key's account, two ways in, as Binance has them:
//! - a listen key (`POST /api/v3/userDataStream`, with only `X-MBX-APIKEY`) and its WebSocket
//!   `/ws/<listenKey>`, where events arrive as they are;
//! - the WebSocket API at `/ws-api/v3`: `userDataStream.subscribe.signature` (signed like a REST
//!   call), after which events arrive as `{"subscriptionId": n, "event": {...}}`. Current CCXT and
//!   python-binance use this one.
//!
//! Both are an ordinary connection of the OMS's stream hub (orders, fills and balances of the
//! account, with its limits and slow-consumer cut-off) whose messages a [`Translator`] turns
//! into Binance's events.
//!
//! A listen key is derived from the key's credentials (an HMAC of its secret), so every pod
//! knows every listen key without shared state, and asking again gives the same one, as
//! Binance gives the active one. It stays valid as long as the key's Binance credentials do:
//! keep-alive and close are accepted and change nothing; revoke the key to end it.

use super::params::Params;
use super::view;
use super::{Caller, Error, keyed, now_ms};
use crate::api::funds::LedgerEntryView;
use crate::api::model::{FillView, OrderView};
use crate::api::{AppState, Market};
use crate::auth::Scope;
use crate::streams::{Frame, Hub, Kill, Topic, close};
use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use oms_core::Symbol;
use oms_core::funds::EntryKind;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// The listen key of a key's Binance credentials.
pub fn listen_key(api_key: &str, secret: &str) -> String {
    super::sign::sign(secret, &format!("listenKey:{api_key}"))
}

/// `POST /api/v3/userDataStream`: the key's listen key.
pub async fn create(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (_, key) = keyed(&app, &headers, &Method::POST)?;
    Ok(Json(json!({ "listenKey": key })).into_response())
}

/// `PUT` and `DELETE /api/v3/userDataStream`: the listen key must be the key's; nothing else
/// changes (see the module's documentation).
pub async fn keep_alive(
    State(app): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, Error> {
    let (_, key) = keyed(&app, &headers, &method)?;
    let params = Params::parse(query.as_deref().unwrap_or_default(), &headers, &body)?;
    if params.required("listenKey")? != key {
        return Err(Error::bad(-1125, "This listenKey does not exist."));
    }
    Ok(Json(json!({})).into_response())
}

/// `GET /ws/<listenKey>`: the account's events, as they are.
pub async fn listen(
    State(app): State<Arc<AppState>>,
    Path(key): Path<String>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Error> {
    let upgrade =
        upgrade.map_err(|_| Error::bad(-1100, "A WebSocket upgrade is expected here."))?;
    let principal = app
        .keys
        .keys()
        .listen_key(&key)
        .cloned()
        .ok_or_else(|| Error::bad(-1125, "This listenKey does not exist."))?;
    let caller = super::caller(principal, Scope::Read)?;
    let tap =
        Tap::open(&app, &caller, Credential::ListenKey(key)).map_err(|_| Error::rate_limited())?;
    Ok(upgrade.on_upgrade(move |socket| async move {
        let mut session = Session::new(app, socket, false);
        session.tap = Some((tap, 0));
        session.run().await;
    }))
}

/// `GET /ws-api/v3`: the WebSocket API (its user data stream methods, `ping` and `time`).
pub async fn ws_api(
    State(app): State<Arc<AppState>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Error> {
    let upgrade =
        upgrade.map_err(|_| Error::bad(-1100, "A WebSocket upgrade is expected here."))?;
    Ok(upgrade
        .max_message_size(crate::streams::protocol::MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            Session::new(app, socket, true).run().await;
        }))
}

/// What a stream was opened with: checked again at every heartbeat, so that revoking the key
/// (or renewing its credentials) ends its streams.
enum Credential {
    ListenKey(String),
    ApiKey(String),
}

impl Credential {
    fn valid(&self, keys: &crate::auth::ApiKeys) -> bool {
        match self {
            Credential::ListenKey(key) => keys.listen_key(key).is_some(),
            Credential::ApiKey(key) => keys.binance(key).is_some(),
        }
    }
}

/// A hub connection subscribed to one account's orders, fills and balances; leaves the hub
/// when dropped.
struct Tap {
    credential: Credential,
    hub: Arc<Hub>,
    conn: u64,
    kill: Arc<Kill>,
    queue: mpsc::Receiver<Frame>,
    translator: Translator,
}

impl Tap {
    fn open(
        app: &AppState,
        caller: &Caller,
        credential: Credential,
    ) -> Result<Tap, crate::streams::Refused> {
        let hub = app.streams.clone();
        let (tx, queue) = mpsc::channel(hub.limits().queue);
        let (conn, kill) = hub.connect(&caller.principal.id, tx)?;
        let tap = Tap {
            credential,
            hub: hub.clone(),
            conn,
            kill,
            queue,
            translator: Translator::new(app.markets.clone()),
        };
        let account: smol_str::SmolStr = caller.account.as_str().into();
        for topic in [
            Topic::Orders(account.clone()),
            Topic::Fills(account.clone()),
            Topic::Balances(account),
        ] {
            hub.subscribe(conn, topic, None)?;
        }
        Ok(tap)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.hub.disconnect(self.conn);
    }
}

/// A WebSocket API request.
#[derive(Deserialize)]
struct ApiRequest {
    #[serde(default)]
    id: Value,
    method: String,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
}

struct Session {
    app: Arc<AppState>,
    socket: WebSocket,
    /// The WebSocket API (events wrapped in their subscription) or a listen key's stream.
    api: bool,
    tap: Option<(Tap, u64)>,
    subscriptions: u64,
    /// Requests per second, as on the OMS's own stream.
    requests: crate::streams::socket::Bucket,
}

impl Session {
    fn new(app: Arc<AppState>, socket: WebSocket, api: bool) -> Session {
        Session {
            app,
            socket,
            api,
            tap: None,
            subscriptions: 0,
            requests: crate::streams::socket::Bucket::new(Instant::now()),
        }
    }

    async fn send(&mut self, value: &Value) -> Result<(), ()> {
        let text = serde_json::to_string(value).unwrap_or_default();
        self.socket
            .send(Message::Text(Utf8Bytes::from(text)))
            .await
            .map_err(|_| ())
    }

    async fn run(mut self) {
        let limits = self.app.streams.limits().clone();
        let mut heartbeat = tokio::time::interval(limits.heartbeat);
        heartbeat.tick().await;
        let mut heard = Instant::now();
        let closing = loop {
            let event = {
                let tap = self.tap.as_mut();
                let (kill, queue) = match tap {
                    Some((tap, _)) => (Some(tap.kill.clone()), Some(&mut tap.queue)),
                    None => (None, None),
                };
                tokio::select! {
                    biased;
                    close = async { match &kill { Some(kill) => kill.wait().await, None => std::future::pending().await } } => Event::Close(close.code, close.reason),
                    frame = async { match queue { Some(queue) => queue.recv().await, None => std::future::pending().await } } => match frame {
                        Some(frame) => Event::Frame(frame),
                        None => Event::Gone,
                    },
                    message = self.socket.recv() => {
                        heard = Instant::now();
                        match message {
                            Some(Ok(Message::Text(_))) if !self.requests.take(heard) => {
                                Event::Close(close::POLICY, "more than 50 requests a second")
                            }
                            Some(Ok(Message::Text(text))) => Event::Text(text.to_string()),
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Event::Nothing,
                            Some(Ok(Message::Binary(_))) => Event::Close(close::POLICY, "binary messages are not taken"),
                            Some(Ok(Message::Close(_)) | Err(_)) | None => Event::Gone,
                        }
                    }
                    _ = heartbeat.tick() => if heard.elapsed() > limits.idle_timeout {
                        Event::Close(close::IDLE, "nothing heard within the idle timeout")
                    } else {
                        Event::Beat
                    },
                }
            };
            let done = match event {
                Event::Close(code, reason) => break Some((code, reason)),
                Event::Gone => break None,
                Event::Nothing => Ok(()),
                Event::Beat => {
                    let keys = self.app.keys.keys();
                    if let Some((tap, _)) = &self.tap
                        && !tap.credential.valid(&keys)
                    {
                        break Some((close::UNAUTHORIZED, "the API key was revoked"));
                    }
                    self.socket
                        .send(Message::Ping(bytes::Bytes::from_static(b"oms")))
                        .await
                        .map_err(|_| ())
                }
                Event::Frame(frame) => self.forward(&frame).await,
                Event::Text(text) if self.api => self.request(&text).await,
                Event::Text(_) => Ok(()),
            };
            if done.is_err() {
                break None;
            }
        };
        self.tap = None;
        if let Some((code, reason)) = closing {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                self.socket.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    /// Sends a hub frame's Binance events.
    async fn forward(&mut self, frame: &Frame) -> Result<(), ()> {
        let Some((tap, subscription)) = self.tap.as_mut() else {
            return Ok(());
        };
        let subscription = *subscription;
        let events = tap.translator.events(frame.text.as_str(), now_ms() as u64);
        for event in events {
            let message = if self.api {
                json!({ "subscriptionId": subscription, "event": event })
            } else {
                event
            };
            self.send(&message).await?;
        }
        Ok(())
    }

    /// Answers one WebSocket API request.
    async fn request(&mut self, text: &str) -> Result<(), ()> {
        let Ok(request) = serde_json::from_str::<ApiRequest>(text) else {
            let error = Error::bad(-1100, "A request is {\"id\", \"method\", \"params\"}.");
            return self.send(&failure(&Value::Null, &error)).await;
        };
        let answer = match request.method.as_str() {
            "ping" => Ok(json!({})),
            "time" => Ok(json!({ "serverTime": now_ms() })),
            "userDataStream.subscribe.signature" => self.subscribe(&request.params),
            "userDataStream.unsubscribe" => {
                self.tap = None;
                Ok(json!({}))
            }
            _ => Err(Error::bad(
                -1100,
                format!("Unknown method '{}'.", request.method),
            )),
        };
        let message = match answer {
            Ok(result) => {
                json!({ "id": request.id, "status": 200, "result": result, "rateLimits": [] })
            }
            Err(error) => failure(&request.id, &error),
        };
        self.send(&message).await
    }

    /// `userDataStream.subscribe.signature`: `apiKey`, `timestamp` (and `recvWindow`) signed
    /// like a REST call, the payload being the parameters sorted by name and form-encoded.
    fn subscribe(&mut self, params: &serde_json::Map<String, Value>) -> Result<Value, Error> {
        if self.tap.is_some() {
            return Err(Error::bad(
                -1100,
                "This connection is subscribed to the user data stream already.",
            ));
        }
        let mut pairs: Vec<(String, String)> = params
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect();
        pairs.sort();
        let signature = pairs
            .iter()
            .find(|(name, _)| name == "signature")
            .map(|(_, value)| value.clone())
            .ok_or_else(|| Error::mandatory("signature"))?;
        let api_key = pairs
            .iter()
            .find(|(name, _)| name == "apiKey")
            .map(|(_, value)| value.clone())
            .ok_or_else(|| Error::mandatory("apiKey"))?;
        let payload = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().filter(|(name, _)| name != "signature"))
            .finish();
        let checked = Params::of(pairs.clone());
        checked.only(&["apiKey"])?;
        let (principal, secret) = self
            .app
            .keys
            .binance(&api_key)
            .ok_or_else(Error::key_refused)?;
        super::check_signature(
            &self.app,
            "ws-api userDataStream.subscribe.signature",
            &secret,
            &payload,
            &signature,
            &checked,
        )?;
        let caller = super::caller(principal, Scope::Read)?;
        let tap = Tap::open(&self.app, &caller, Credential::ApiKey(api_key))
            .map_err(|refused| Error::bad(-1100, refused.to_string()))?;
        let id = self.subscriptions;
        self.subscriptions += 1;
        self.tap = Some((tap, id));
        Ok(json!({ "subscriptionId": id }))
    }
}

enum Event {
    Close(u16, &'static str),
    Gone,
    Nothing,
    Beat,
    Frame(Frame),
    Text(String),
}

fn failure(id: &Value, error: &Error) -> Value {
    json!({
        "id": id,
        "status": error.status().as_u16(),
        "error": { "code": error.code(), "msg": error.msg() },
        "rateLimits": [],
    })
}

/// A message of the OMS's private channels, as far as the translation needs it.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Order {
        order: OrderView,
    },
    Fill {
        fill: FillView,
    },
    Balance {
        entry: LedgerEntryView,
    },
    #[serde(other)]
    Other,
}

/// Turns the OMS stream's private messages of one account into Binance's user data events.
///
/// A trade reaches the OMS stream as a fill, then the order's state after it; Binance has both
/// in one `executionReport` (`x: TRADE`), so a fill waits here for its order's next state.
pub struct Translator {
    markets: Arc<BTreeMap<Symbol, Market>>,
    fills: HashMap<String, Vec<FillView>>,
}

impl Translator {
    /// A translator naming symbols as `markets` do.
    pub fn new(markets: Arc<BTreeMap<Symbol, Market>>) -> Translator {
        Translator {
            markets,
            fills: HashMap::new(),
        }
    }

    /// The Binance events of one OMS stream message.
    pub fn events(&mut self, text: &str, now_ms: u64) -> Vec<Value> {
        match serde_json::from_str::<Incoming>(text) {
            Ok(Incoming::Fill { fill }) => {
                self.fills
                    .entry(fill.order_id.clone())
                    .or_default()
                    .push(fill);
                Vec::new()
            }
            Ok(Incoming::Order { order }) => {
                let fill = match self.fills.get_mut(&order.order_id) {
                    Some(waiting) if !waiting.is_empty() => {
                        let fill = waiting.remove(0);
                        if waiting.is_empty() {
                            self.fills.remove(&order.order_id);
                        }
                        Some(fill)
                    }
                    _ => None,
                };
                vec![view::execution_report(
                    &self.markets,
                    &order,
                    fill.as_ref(),
                    now_ms,
                )]
            }
            Ok(Incoming::Balance { entry }) => {
                let mut out = Vec::with_capacity(2);
                if matches!(entry.kind, EntryKind::Deposit | EntryKind::Withdrawal) {
                    out.push(view::balance_update(&entry, now_ms));
                }
                out.push(view::account_position(&entry, now_ms));
                out
            }
            Ok(Incoming::Other) | Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: &str, filled: &str, version: u64) -> Value {
        json!({"type": "order", "account": "alice", "cursor": "7", "order": {
            "order_id": "42", "client_order_id": "c-1", "account": "alice", "symbol": "BTC-USDT",
            "side": "buy", "type": "limit", "time_in_force": "gtc", "price": "60000.00",
            "quantity": "0.50000", "quote_quantity": null, "filled_quantity": filled,
            "filled_quote": "0", "average_price": null, "status": status, "reject_reason": null,
            "expire_reason": null, "post_only": false, "self_trade_prevention": "none",
            "created_at": "2026-11-29T15:00:00Z", "updated_at": "2026-11-29T15:00:01Z",
            "version": version}})
    }

    fn fill(quantity: &str) -> Value {
        json!({"type": "fill", "account": "alice", "cursor": "8", "fill": {
            "trade_id": 9, "symbol": "BTC-USDT", "order_id": "42", "side": "buy",
            "price": "60000.00", "quantity": quantity, "liquidity": "maker", "fee": "0.00020",
            "fee_asset": "BTC", "executed_at": "2026-11-29T15:00:02Z"}})
    }

    fn balance(kind: &str) -> Value {
        json!({"type": "balance", "account": "alice", "cursor": "9", "entry": {
            "seq": 3, "asset": "BTC", "kind": kind, "available_change": "0.19980",
            "held_change": "0", "available": "10.19980", "held": "0.00000",
            "at": "2026-11-29T15:00:02Z"}})
    }

    fn events(translator: &mut Translator, message: Value) -> Vec<Value> {
        translator.events(&message.to_string(), 1_000)
    }

    #[test]
    fn a_new_order_then_a_trade_become_execution_reports() {
        let mut translator = Translator::new(Arc::default());
        let new = events(&mut translator, order("new", "0.00000", 1));
        assert_eq!(new.len(), 1);
        assert_eq!(
            (
                new[0]["e"].as_str(),
                new[0]["x"].as_str(),
                new[0]["X"].as_str()
            ),
            (Some("executionReport"), Some("NEW"), Some("NEW"))
        );
        assert_eq!(new[0]["s"], "BTCUSDT");
        assert_eq!(new[0]["i"], 42);
        // The fill waits for the order's state after it: one report with both.
        assert!(events(&mut translator, fill("0.20000")).is_empty());
        let traded = events(&mut translator, order("partially_filled", "0.20000", 2));
        let report = &traded[0];
        assert_eq!(
            (report["x"].as_str(), report["X"].as_str()),
            (Some("TRADE"), Some("PARTIALLY_FILLED"))
        );
        assert_eq!(
            (report["l"].as_str(), report["z"].as_str()),
            (Some("0.20000"), Some("0.20000"))
        );
        assert_eq!(
            (
                report["L"].as_str(),
                report["n"].as_str(),
                report["N"].as_str()
            ),
            (Some("60000.00"), Some("0.00020"), Some("BTC"))
        );
        assert_eq!(
            (report["t"].as_u64(), report["m"].as_bool()),
            (Some(9), Some(true))
        );
        assert_eq!(report["Y"], "12000");
        // The next change without a fill is not a trade.
        let canceled = events(&mut translator, order("canceled", "0.20000", 3));
        assert_eq!(
            (canceled[0]["x"].as_str(), canceled[0]["X"].as_str()),
            (Some("CANCELED"), Some("CANCELED"))
        );
        assert_eq!(canceled[0]["N"], Value::Null);
        let amended = events(&mut translator, order("new", "0.00000", 4));
        assert_eq!(amended[0]["x"], "REPLACED");
    }

    #[test]
    fn balance_changes_become_account_positions() {
        let mut translator = Translator::new(Arc::default());
        let trade = events(&mut translator, balance("trade"));
        assert_eq!(trade.len(), 1);
        assert_eq!(trade[0]["e"], "outboundAccountPosition");
        assert_eq!(
            trade[0]["B"],
            json!([{"a": "BTC", "f": "10.19980", "l": "0.00000"}])
        );
        let deposit = events(&mut translator, balance("deposit"));
        assert_eq!(
            deposit
                .iter()
                .map(|e| e["e"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["balanceUpdate", "outboundAccountPosition"]
        );
        assert_eq!(deposit[0]["d"], "0.19980");
        // Control messages of the hub are not the user's events.
        assert!(
            events(
                &mut translator,
                json!({"type": "heartbeat", "cursor": "1", "time": "x"})
            )
            .is_empty()
        );
        assert!(translator.events("not json", 0).is_empty());
    }
}
