//! `GET /v1/ws`: one task per connection, writing its queue and reading its requests.

use super::protocol::{self, Control, MAX_CLIENT_MESSAGE, Request};
use super::{Close, Frame, Hub, Refused, Subscribed, Topic, close};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::{Principal, Scope};
use crate::metrics::OutcomeLabels;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use smol_str::SmolStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a close frame may take to reach a client before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Most frames written with one flush.
const WRITE_BATCH: usize = 64;

/// The upgrade. A key in `Authorization: Bearer` is checked here (a bad one gets `401`, a key
/// at its connection limit `429`); without one, the first message must be `auth`.
pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::bad_request("not_a_websocket", rejection.body_text()).into_response();
        }
    };
    let key = crate::api::bearer(&headers).map(str::to_string);
    let principal = match &key {
        Some(key) => match app.keys.authenticate(key) {
            Some(principal) => Some(principal),
            None => return ApiError::unauthorized().into_response(),
        },
        None => None,
    };
    let admitted = match &principal {
        Some(principal) => match admit(&app.streams, principal) {
            Ok(admitted) => Some(admitted),
            Err(refused) => {
                return ApiError::too_many_connections(refused.to_string()).into_response();
            }
        },
        None => None,
    };
    // Small buffers: a connection costs its buffers, and the defaults (128 KiB each way) are
    // sized for bulk transfer; clients send small requests, and bursts are written in batches.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            let session = Session {
                app,
                socket,
                key,
                principal,
                admitted,
            };
            session.run().await;
        })
}

/// A connection registered with the hub; leaves it when dropped (also when the upgrade never
/// completes, so a client that hangs up mid-handshake holds no slot).
struct Admitted {
    hub: Arc<Hub>,
    conn: u64,
    kill: Arc<super::Kill>,
    queue: mpsc::Receiver<Frame>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.hub.disconnect(self.conn);
    }
}

fn admit(hub: &Arc<Hub>, principal: &Principal) -> Result<Admitted, Refused> {
    let (tx, queue) = mpsc::channel(hub.limits().queue);
    let (conn, kill) = hub.connect(&principal.id, tx)?;
    Ok(Admitted {
        hub: hub.clone(),
        conn,
        kill,
        queue,
    })
}

struct Session {
    app: Arc<AppState>,
    socket: WebSocket,
    key: Option<String>,
    principal: Option<Principal>,
    admitted: Option<Admitted>,
}

/// Why the loop ended.
enum End {
    /// The client closed or vanished.
    Gone,
    /// The server closes with this.
    Close(Close),
}

impl Session {
    async fn run(mut self) {
        let hub = self.app.streams.clone();
        let all = self.app.metrics.clone();
        let metrics = &all.streams;
        let (principal, key, admitted) = match self.authenticate().await {
            Ok(done) => done,
            Err(end) => {
                let reason = self.finish(end).await;
                count(metrics, reason);
                return;
            }
        };
        let mut admitted = admitted;
        let (conn, kill) = (admitted.conn, admitted.kill.clone());
        let queue = &mut admitted.queue;
        let welcome = Control::Welcome {
            key: &principal.id,
            heartbeat_ms: hub.limits().heartbeat.as_millis() as u64,
            cursor: hub.cursor().encode(),
        };
        let mut end = self.control(&welcome).await.err();
        let mut heartbeat = tokio::time::interval(hub.limits().heartbeat);
        heartbeat.tick().await;
        let mut heard = Instant::now();
        let mut requests = Bucket::new(Instant::now());
        while end.is_none() {
            end = tokio::select! {
                biased;
                close = kill.wait() => Some(End::Close(close)),
                frame = queue.recv() => match frame {
                    // A client that stops reading blocks the write; the hub's cut-off must
                    // still get through (what was written stays buffered, whole, before the
                    // close frame).
                    Some(frame) => tokio::select! {
                        written = self.write_queued(frame, queue) => written.err(),
                        close = kill.wait() => Some(End::Close(close)),
                    },
                    None => Some(End::Gone),
                },
                message = self.socket.recv() => {
                    heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(_))) if !requests.take(heard) => {
                            Some(End::Close(Close {
                                code: close::POLICY,
                                reason: "more than 50 requests a second",
                            }))
                        }
                        Some(Ok(Message::Text(text))) => {
                            self.request(&hub, conn, &principal, &text).await.err()
                        }
                        Some(Ok(Message::Binary(_))) => Some(End::Close(Close {
                            code: close::POLICY,
                            reason: "binary messages are not part of the protocol",
                        })),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => Some(End::Gone),
                    }
                }
                _ = heartbeat.tick() => self.beat(&hub, &key, heard).await.err(),
            };
        }
        // Out of the hub before the closing handshake, which may take a while.
        drop(admitted);
        let reason = self.finish(end.unwrap_or(End::Gone)).await;
        count(metrics, reason);
    }

    /// The key from the upgrade, or from an `auth` message within the authentication timeout.
    async fn authenticate(&mut self) -> Result<(Principal, String, Admitted), End> {
        if let (Some(principal), Some(key), Some(admitted)) =
            (self.principal.take(), self.key.take(), self.admitted.take())
        {
            return Ok((principal, key, admitted));
        }
        let unauthorized = |reason| {
            End::Close(Close {
                code: close::UNAUTHORIZED,
                reason,
            })
        };
        let limit = self.app.streams.limits().auth_timeout;
        let first = loop {
            match tokio::time::timeout(limit, self.socket.recv()).await {
                Err(_) => return Err(unauthorized("no auth message in time")),
                Ok(Some(Ok(Message::Text(text)))) => break text,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(_) => return Err(End::Gone),
            }
        };
        let Ok(Request::Auth { key }) = serde_json::from_str::<Request>(&first) else {
            return Err(unauthorized(
                "the first message must be {\"op\":\"auth\",\"key\":...}",
            ));
        };
        let Some(principal) = self.app.keys.authenticate(&key) else {
            return Err(unauthorized("unknown API key"));
        };
        match admit(&self.app.streams, &principal) {
            Ok(admitted) => Ok((principal, key, admitted)),
            Err(_) => Err(End::Close(Close {
                code: close::TOO_MANY_CONNECTIONS,
                reason: "this key has as many connections as it may",
            })),
        }
    }

    async fn request(
        &mut self,
        hub: &Hub,
        conn: u64,
        principal: &Principal,
        text: &str,
    ) -> Result<(), End> {
        let request = match serde_json::from_str::<Request>(text) {
            Ok(request) => request,
            Err(error) => {
                return self
                    .control(&Control::Error {
                        id: None,
                        code: "bad_request",
                        message: format!("unreadable request: {error}"),
                    })
                    .await;
            }
        };
        let answer = match request {
            Request::Auth { .. } => Control::Error {
                id: None,
                code: "bad_request",
                message: "already authenticated".into(),
            },
            Request::Ping { id } => Control::Pong { id },
            Request::Subscribe {
                id,
                channel,
                account,
                symbol,
                cursor,
            } => {
                let topic = match self.topic(principal, channel, account, symbol) {
                    Ok(topic) => topic,
                    Err((code, message)) => {
                        return self.control(&Control::Error { id, code, message }).await;
                    }
                };
                match hub.subscribe(conn, topic.clone(), cursor.as_deref()) {
                    Ok(Subscribed::Live { replayed }) => Control::Ack {
                        id,
                        op: "subscribe",
                        channel: topic.channel(),
                        replayed: cursor.is_some().then_some(replayed),
                    },
                    Ok(Subscribed::Resync) => {
                        let account = match &topic {
                            Topic::Orders(a) | Topic::Fills(a) | Topic::Balances(a) => a.clone(),
                            _ => SmolStr::default(),
                        };
                        return self
                            .control(&Control::Resync {
                                id,
                                channel: topic.channel(),
                                account: &account,
                            })
                            .await;
                    }
                    Err(refused) => Control::Error {
                        id,
                        code: match refused {
                            Refused::Duplicate => "already_subscribed",
                            Refused::BadCursor(_) => "invalid_cursor",
                            _ => "too_many_subscriptions",
                        },
                        message: refused.to_string(),
                    },
                }
            }
            Request::Unsubscribe {
                id,
                channel,
                account,
                symbol,
            } => match protocol::topic(channel, account, symbol) {
                Ok(topic) if hub.unsubscribe(conn, &topic) => Control::Ack {
                    id,
                    op: "unsubscribe",
                    channel: topic.channel(),
                    replayed: None,
                },
                Ok(_) => Control::Error {
                    id,
                    code: "not_subscribed",
                    message: "no such subscription".into(),
                },
                Err(message) => Control::Error {
                    id,
                    code: "bad_request",
                    message: message.into(),
                },
            },
        };
        self.control(&answer).await
    }

    /// The topic a subscribe names, if this key may have it.
    fn topic(
        &self,
        principal: &Principal,
        channel: protocol::Channel,
        account: Option<String>,
        symbol: Option<String>,
    ) -> Result<Topic, (&'static str, String)> {
        let topic =
            protocol::topic(channel, account, symbol).map_err(|m| ("bad_request", m.into()))?;
        match &topic {
            Topic::Orders(account) | Topic::Fills(account) | Topic::Balances(account) => {
                if !principal.can(Scope::Read) {
                    return Err(("forbidden", "this API key lacks the read scope".into()));
                }
                if !principal.may_use(account) {
                    return Err((
                        "forbidden",
                        format!("this API key may not use account {account:?}"),
                    ));
                }
            }
            Topic::Book(symbol) | Topic::Trades(symbol) | Topic::Ticker(symbol) => {
                if !self.app.markets.contains_key(symbol.as_str()) {
                    return Err(("unknown_symbol", format!("no instrument {symbol:?}")));
                }
            }
        }
        Ok(topic)
    }

    /// A heartbeat, and the checks that ride on it: the key still valid, the client still
    /// there.
    async fn beat(&mut self, hub: &Hub, key: &str, heard: Instant) -> Result<(), End> {
        if heard.elapsed() > hub.limits().idle_timeout {
            return Err(End::Close(Close {
                code: close::IDLE,
                reason: "idle timeout: nothing received, not even a pong",
            }));
        }
        if self.app.keys.authenticate(key).is_none() {
            return Err(End::Close(Close {
                code: close::UNAUTHORIZED,
                reason: "the API key was revoked",
            }));
        }
        let beat = Control::Heartbeat {
            cursor: hub.cursor().encode(),
            time: crate::api::model::rfc3339(crate::api::handlers::now().0),
        };
        self.control(&beat).await?;
        self.socket
            .send(Message::Ping(bytes::Bytes::new()))
            .await
            .map_err(|_| End::Gone)
    }

    async fn control(&mut self, control: &Control<'_>) -> Result<(), End> {
        let frame = Frame {
            text: Utf8Bytes::from(protocol::text(control)),
            committed: None,
            channel: "control",
        };
        self.write(frame).await
    }

    async fn write(&mut self, frame: Frame) -> Result<(), End> {
        self.socket
            .send(Message::Text(frame.text.clone()))
            .await
            .map_err(|_| End::Gone)?;
        self.written(&frame);
        Ok(())
    }

    /// Writes `first` and what else is queued (up to [`WRITE_BATCH`]) with one flush: under a
    /// burst, one system call for many frames.
    async fn write_queued(
        &mut self,
        first: Frame,
        queue: &mut mpsc::Receiver<Frame>,
    ) -> Result<(), End> {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH
            && let Ok(next) = queue.try_recv()
        {
            batch.push(next);
        }
        for frame in &batch {
            self.socket
                .feed(Message::Text(frame.text.clone()))
                .await
                .map_err(|_| End::Gone)?;
        }
        self.socket.flush().await.map_err(|_| End::Gone)?;
        for frame in &batch {
            self.written(frame);
        }
        Ok(())
    }

    fn written(&self, frame: &Frame) {
        let metrics = &self.app.metrics.streams;
        metrics
            .sent
            .get_or_create(&OutcomeLabels {
                outcome: frame.channel,
            })
            .inc();
        if let Some(committed) = frame.committed {
            metrics.delay_seconds.observe(committed.elapsed());
        }
    }

    /// Sends the close frame, if the server closes; says why the connection ended.
    async fn finish(&mut self, end: End) -> &'static str {
        match end {
            End::Gone => "client_closed",
            End::Close(close) => {
                let frame = CloseFrame {
                    code: close.code,
                    reason: Utf8Bytes::from_static(close.reason),
                };
                // The closing handshake: the close frame, then the client's reply (until then
                // the socket stays open, so a client still reading what was queued gets to the
                // close frame instead of a reset).
                let socket = &mut self.socket;
                let _ = tokio::time::timeout(CLOSE_WAIT, async {
                    socket.send(Message::Close(Some(frame))).await?;
                    while let Some(message) = socket.recv().await {
                        if matches!(message?, Message::Close(_)) {
                            break;
                        }
                    }
                    Ok::<_, axum::Error>(())
                })
                .await;
                match close.code {
                    close::SLOW_CONSUMER => "slow_consumer",
                    close::IDLE => "idle_timeout",
                    close::UNAUTHORIZED => "unauthorized",
                    close::TOO_MANY_CONNECTIONS => "too_many_connections",
                    close::GOING_AWAY => "shutdown",
                    _ => "protocol_error",
                }
            }
        }
    }
}

/// A client's requests: [`Bucket::RATE`] a second, bursts of [`Bucket::BURST`] (subscribing to
/// everything at once fits). A client over it is closed: requests are cheap, but not free.
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    const RATE: f64 = 50.0;
    const BURST: f64 = 300.0;

    pub(crate) fn new(now: Instant) -> Bucket {
        Bucket {
            tokens: Bucket::BURST,
            at: now,
        }
    }

    /// Takes one request's token; false if there is none.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * Bucket::RATE;
        self.tokens = (self.tokens + refill).min(Bucket::BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

fn count(metrics: &crate::metrics::StreamMetrics, reason: &'static str) {
    metrics
        .disconnects
        .get_or_create(&OutcomeLabels { outcome: reason })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        for _ in 0..300 {
            assert!(bucket.take(start));
        }
        assert!(!bucket.take(start));
        // A second later, 50 more.
        let later = start + Duration::from_secs(1);
        for _ in 0..50 {
            assert!(bucket.take(later));
        }
        assert!(!bucket.take(later));
    }
}
