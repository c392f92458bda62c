//! Live streams over WebSocket (`GET /v1/ws`, see `docs/api.md`).
//!
//! A [`Hub`] per process holds the connections and their subscriptions. Two kinds of source
//! feed it, one per mode, and both go through the same [`follow::Follower`]:
//! - single-node: the projector hands over each command's events and ledger entries once they
//!   are in the projection;
//! - distributed: every ingest pod follows the events and ledger topics itself
//!   ([`kafka::follow`], read committed), so a stream needs nothing of the pod that served the
//!   order.
//!
//! Private updates (orders, fills, balances) carry a **cursor**: the position in every source
//! log up to which this update's connection has been sent everything. The hub keeps a window of
//! recent private updates ([`Limits::replay`]); a client that reconnects (to this pod or any
//! other, since every pod follows the same logs) and subscribes with its last cursor gets what
//! it missed, or a `resync` message when the window no longer reaches back that far.
//! Public channels (book, trades, ticker) are live only: the book channel starts with a
//! snapshot, and its updates chain by sequence number.
//!
//! Fan-out never waits for a client: each connection has a bounded queue, and one that is full
//! is closed with [`close::SLOW_CONSUMER`] while the others keep receiving.

pub mod client;
pub mod follow;
pub mod kafka;
pub mod market;
pub mod protocol;
pub mod socket;

use crate::metrics::{Metrics, OutcomeLabels};
use axum::extract::ws::Utf8Bytes;
use smol_str::SmolStr;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Close codes the server sends (4000–4999 are the application's).
pub mod close {
    /// The server is shutting down (RFC 6455).
    pub const GOING_AWAY: u16 = 1001;
    /// A message the server cannot read (RFC 6455: policy violation).
    pub const POLICY: u16 = 1008;
    /// Nothing came from the client (not even a pong) for the idle timeout.
    pub const IDLE: u16 = 4000;
    /// The connection's queue filled up: the client does not read fast enough.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// No valid key within the authentication timeout, or the key was revoked.
    pub const UNAUTHORIZED: u16 = 4003;
    /// The key has as many connections as it may.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
}

/// Limits of the streams.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Frames queued for one connection before it is cut off as a slow consumer.
    pub queue: usize,
    /// Connections of one key.
    pub connections_per_key: usize,
    /// Subscriptions of one key, over all its connections.
    pub subscriptions_per_key: usize,
    /// Connections of the process.
    pub connections: usize,
    /// Private updates kept for resuming.
    pub replay: usize,
    /// How often the server sends a heartbeat (and a ping).
    pub heartbeat: Duration,
    /// A connection from which nothing arrives for this long is closed.
    pub idle_timeout: Duration,
    /// How long a connection may take to authenticate.
    pub auth_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            queue: 4096,
            connections_per_key: 32,
            subscriptions_per_key: 256,
            connections: 10_000,
            replay: 100_000,
            heartbeat: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(45),
            auth_timeout: Duration::from_secs(10),
        }
    }
}

/// What a subscription is to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// An account's order states.
    Orders(SmolStr),
    /// An account's fills.
    Fills(SmolStr),
    /// An account's balance changes.
    Balances(SmolStr),
    /// A book's depth.
    Book(SmolStr),
    /// A symbol's public trades.
    Trades(SmolStr),
    /// A symbol's ticker.
    Ticker(SmolStr),
}

impl Topic {
    /// The channel's name in the protocol.
    pub fn channel(&self) -> &'static str {
        match self {
            Topic::Orders(_) => "orders",
            Topic::Fills(_) => "fills",
            Topic::Balances(_) => "balances",
            Topic::Book(_) => "book",
            Topic::Trades(_) => "trades",
            Topic::Ticker(_) => "ticker",
        }
    }

    /// Whether it is an account's (resumable, cursor-carrying).
    pub fn is_private(&self) -> bool {
        matches!(
            self,
            Topic::Orders(_) | Topic::Fills(_) | Topic::Balances(_)
        )
    }
}

/// A frame on its way to clients.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The JSON text.
    pub text: Utf8Bytes,
    /// When its source was committed, for the commit-to-write delay.
    pub committed: Option<Committed>,
    /// Its channel, for metrics.
    pub channel: &'static str,
}

/// When an update's source was committed.
#[derive(Clone, Copy, Debug)]
pub enum Committed {
    /// Seen committed by this process (single-node projection).
    At(Instant),
    /// The record's timestamp in the log, milliseconds since the epoch (distributed).
    EpochMillis(i64),
}

impl Committed {
    /// Seconds from the commit until now.
    pub fn elapsed(self) -> f64 {
        match self {
            Committed::At(at) => at.elapsed().as_secs_f64(),
            Committed::EpochMillis(ms) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                (now - ms).max(0) as f64 / 1000.0
            }
        }
    }
}

/// A private update produced by the [`follow::Follower`], not yet rendered: most updates of a
/// busy system have no subscriber, and rendering (decimal strings, JSON) is paid only for a
/// subscriber or a resume.
#[derive(Clone, Debug)]
pub struct Update {
    /// Where it goes.
    pub topic: Topic,
    /// What it says.
    pub body: Body,
}

/// What a private update says.
#[derive(Clone, Debug)]
pub enum Body {
    /// An order's state after a change.
    Order(Box<oms_core::OrderState>),
    /// The account's side (by liquidity) of a trade.
    Fill(Arc<crate::store::TradeRecord>, crate::api::model::Liquidity),
    /// A balance change.
    Balance(Box<oms_core::LedgerEntry>),
    /// Rendered already (tests).
    #[cfg(test)]
    Raw(String),
}

/// A position in every source log: `positions[s]` is the last position of source `s` whose
/// updates were sent. Single-node has one source (the journal); distributed mode one per
/// partition of the events topic and of the ledger topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(pub Vec<u64>);

impl Cursor {
    /// The text clients keep: positions joined by `.`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, position) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(&position.to_string());
        }
        out
    }

    /// Reads a cursor of `sources` positions.
    pub fn decode(text: &str, sources: usize) -> Option<Cursor> {
        let positions: Vec<u64> = text
            .split('.')
            .map(|part| part.parse().ok())
            .collect::<Option<_>>()?;
        (positions.len() == sources).then_some(Cursor(positions))
    }
}

/// Why a connection is closed by the server.
#[derive(Clone, Debug)]
pub struct Close {
    /// WebSocket close code.
    pub code: u16,
    /// Reason, as sent in the close frame.
    pub reason: &'static str,
}

/// A connection as the hub sees it.
struct Conn {
    key: String,
    queue: mpsc::Sender<Frame>,
    kill: Arc<Kill>,
}

/// How the hub tells a connection's task to close it.
#[derive(Default)]
pub struct Kill {
    close: OnceLock<Close>,
    notify: Notify,
}

impl Kill {
    /// Asks for the close; true the first time.
    fn close(&self, close: Close) -> bool {
        let first = self.close.set(close).is_ok();
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Resolves once the hub wants the connection closed.
    pub async fn wait(&self) -> Close {
        loop {
            if let Some(close) = self.close.get() {
                return close.clone();
            }
            self.notify.notified().await;
        }
    }
}

/// One subscription of one connection.
struct Sub {
    conn: u64,
    /// After a resume: updates at or before these positions were sent by an earlier connection.
    after: Option<Arc<Cursor>>,
    /// Book and ticker: waits for its first snapshot.
    fresh: bool,
}

/// A private update kept for resuming.
struct Kept {
    topic: Topic,
    source: usize,
    position: u64,
    body: Body,
    /// The cursor it was sent with (encoded only when sent again).
    cursor: Arc<[u64]>,
    committed: Option<Committed>,
}

/// Keys' counts.
#[derive(Default)]
struct Usage {
    connections: usize,
    subscriptions: usize,
}

/// What the hub guards with one lock: fan-out, subscribing and resuming see one order.
struct Registry {
    conns: HashMap<u64, Conn>,
    topics: HashMap<Topic, Vec<Sub>>,
    usage: HashMap<String, Usage>,
    kept: VecDeque<Kept>,
    /// Per source: the last position sent.
    position: Vec<u64>,
    /// Per source: positions at or before this are no longer kept (or were never seen); a
    /// cursor before it cannot be resumed. `u64::MAX` until the source's start is known.
    floor: Vec<u64>,
}

/// What a subscribe asked for, answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// Live from now on (and what the cursor missed was sent first).
    Live {
        /// Updates sent from the window.
        replayed: usize,
    },
    /// The cursor is outside the window: live from now on, state to be read from the REST API.
    Resync,
}

/// Why a subscription or connection was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The key's subscription limit.
    #[error("this key has {0} subscriptions, the most it may")]
    TooManySubscriptions(usize),
    /// The key's connection limit.
    #[error("this key has {0} connections, the most it may")]
    TooManyConnections(usize),
    /// The process's connection limit.
    #[error("this server has {0} stream connections, the most it takes")]
    Full(usize),
    /// Already subscribed.
    #[error("already subscribed")]
    Duplicate,
    /// A cursor that is not one of this server's.
    #[error("cursor is not {0} positions separated by '.'")]
    BadCursor(usize),
}

/// Connections, subscriptions and the window of private updates.
pub struct Hub {
    registry: Mutex<Registry>,
    render: follow::Render,
    limits: Limits,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// Public-channel producers, woken when a subscription needs a snapshot.
    market: OnceLock<Arc<market::Market>>,
}

impl Hub {
    /// A hub for `sources` source logs, rendering updates with `render`.
    pub fn new(
        sources: usize,
        render: follow::Render,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Hub {
        Hub {
            render,
            registry: Mutex::new(Registry {
                conns: HashMap::new(),
                topics: HashMap::new(),
                usage: HashMap::new(),
                kept: VecDeque::new(),
                position: vec![0; sources],
                floor: vec![u64::MAX; sources],
            }),
            limits,
            next_id: AtomicU64::new(1),
            metrics,
            market: OnceLock::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connects the public channels' producers.
    pub fn set_market(&self, market: Arc<market::Market>) {
        let _ = self.market.set(market);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says where `source` starts: positions at or before `floor` were never seen here.
    pub fn start_source(&self, source: usize, floor: u64) {
        let mut registry = self.lock();
        if let Some(slot) = registry.floor.get_mut(source) {
            *slot = floor;
        }
        if let Some(slot) = registry.position.get_mut(source) {
            *slot = (*slot).max(floor);
        }
    }

    /// The cursor after everything sent so far.
    pub fn cursor(&self) -> Cursor {
        Cursor(self.lock().position.clone())
    }

    /// Registers a connection of `key`; its frames go to `queue`.
    pub fn connect(
        &self,
        key: &str,
        queue: mpsc::Sender<Frame>,
    ) -> Result<(u64, Arc<Kill>), Refused> {
        let mut registry = self.lock();
        if registry.conns.len() >= self.limits.connections {
            return Err(Refused::Full(self.limits.connections));
        }
        let usage = registry.usage.entry(key.to_string()).or_default();
        if usage.connections >= self.limits.connections_per_key {
            return Err(Refused::TooManyConnections(usage.connections));
        }
        usage.connections += 1;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(Kill::default());
        registry.conns.insert(
            id,
            Conn {
                key: key.to_string(),
                queue,
                kill: kill.clone(),
            },
        );
        self.metrics.streams.connections.inc();
        Ok((id, kill))
    }

    /// Removes a connection and its subscriptions.
    pub fn disconnect(&self, conn: u64) {
        let mut registry = self.lock();
        let Some(gone) = registry.conns.remove(&conn) else {
            return;
        };
        let mut dropped = 0;
        registry.topics.retain(|_, subs| {
            let before = subs.len();
            subs.retain(|sub| sub.conn != conn);
            dropped += before - subs.len();
            !subs.is_empty()
        });
        if let Some(usage) = registry.usage.get_mut(&gone.key) {
            usage.connections -= 1;
            usage.subscriptions -= dropped;
            if usage.connections == 0 {
                registry.usage.remove(&gone.key);
            }
        }
        self.metrics.streams.connections.dec();
        self.metrics.streams.subscriptions.dec_by(dropped as i64);
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, close: Close) {
        for conn in self.lock().conns.values() {
            conn.kill.close(close.clone());
        }
    }

    /// Subscribes `conn` to `topic`. A private topic with a cursor first gets what it missed from
    /// the window (or `Resync`); a book or ticker gets a snapshot from its producer.
    pub fn subscribe(
        &self,
        conn: u64,
        topic: Topic,
        cursor: Option<&str>,
    ) -> Result<Subscribed, Refused> {
        let mut registry = self.lock();
        let registry = &mut *registry;
        let Some(key) = registry.conns.get(&conn).map(|c| c.key.clone()) else {
            return Ok(Subscribed::Live { replayed: 0 });
        };
        if registry
            .topics
            .get(&topic)
            .is_some_and(|subs| subs.iter().any(|sub| sub.conn == conn))
        {
            return Err(Refused::Duplicate);
        }
        let usage = registry.usage.entry(key).or_default();
        if usage.subscriptions >= self.limits.subscriptions_per_key {
            return Err(Refused::TooManySubscriptions(usage.subscriptions));
        }
        let cursor = match cursor {
            Some(text) if topic.is_private() => Some(
                Cursor::decode(text, registry.position.len())
                    .ok_or(Refused::BadCursor(registry.position.len()))?,
            ),
            _ => None,
        };
        usage.subscriptions += 1;
        self.metrics.streams.subscriptions.inc();
        let mut outcome = Subscribed::Live { replayed: 0 };
        let mut after = None;
        if let Some(cursor) = cursor {
            let covered = cursor
                .0
                .iter()
                .zip(&registry.floor)
                .all(|(at, floor)| *floor != u64::MAX && at >= floor);
            if covered {
                let conn_queue = registry.conns.get(&conn).map(|c| c.queue.clone());
                let mut replayed = 0;
                for kept in &registry.kept {
                    if kept.topic == topic && kept.position > cursor.0[kept.source] {
                        let frame =
                            self.frame(&kept.topic, &kept.body, &kept.cursor, kept.committed);
                        if let Some(queue) = &conn_queue
                            && queue.try_send(frame).is_err()
                        {
                            self.kill(registry, conn);
                            break;
                        }
                        replayed += 1;
                    }
                }
                outcome = Subscribed::Live { replayed };
                after = Some(Arc::new(cursor));
            } else {
                outcome = Subscribed::Resync;
            }
        }
        let public_snapshot = matches!(topic, Topic::Book(_) | Topic::Ticker(_));
        registry.topics.entry(topic.clone()).or_default().push(Sub {
            conn,
            after,
            fresh: public_snapshot,
        });
        if public_snapshot && let Some(market) = self.market.get() {
            market.wake(&topic);
        }
        Ok(outcome)
    }

    /// Ends a subscription; false if there was none.
    pub fn unsubscribe(&self, conn: u64, topic: &Topic) -> bool {
        let mut registry = self.lock();
        let Some(subs) = registry.topics.get_mut(topic) else {
            return false;
        };
        let before = subs.len();
        subs.retain(|sub| sub.conn != conn);
        if subs.len() == before {
            return false;
        }
        if subs.is_empty() {
            registry.topics.remove(topic);
        }
        let key = registry.conns.get(&conn).map(|c| c.key.clone());
        if let Some(usage) = key.and_then(|key| registry.usage.get_mut(&key)) {
            usage.subscriptions -= 1;
        }
        self.metrics.streams.subscriptions.dec();
        true
    }

    /// Whether anyone subscribes to `topic`.
    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        self.lock().topics.contains_key(topic)
    }

    /// Hands one source record's messages to the subscribers: private updates (kept for
    /// resuming), public trades, and the books it changed. A record at or before where the
    /// source started here (single-node: a command replayed at start) is not sent again.
    pub fn feed(
        &self,
        source: usize,
        position: u64,
        folded: follow::Folded,
        committed: Option<Committed>,
    ) {
        if self
            .lock()
            .floor
            .get(source)
            .is_some_and(|floor| *floor != u64::MAX && position <= *floor)
        {
            return;
        }
        self.publish(source, position, folded.updates, committed);
        if let Some(market) = self.market.get() {
            for trade in folded.trades {
                if let Some(text) = self.render.trade(&trade) {
                    market.trade(&trade.symbol, text, committed);
                }
            }
            for (symbol, seq) in folded.touched {
                market.touched(&symbol, seq);
            }
        }
    }

    /// Sends the private updates of one source record at `position` of `source`, keeps them for
    /// resuming, and moves the source's position there.
    pub fn publish(
        &self,
        source: usize,
        position: u64,
        updates: Vec<Update>,
        committed: Option<Committed>,
    ) {
        let mut registry = self.lock();
        let registry = &mut *registry;
        if source >= registry.position.len() {
            return;
        }
        if registry.floor[source] == u64::MAX {
            registry.floor[source] = position.saturating_sub(1);
        }
        registry.position[source] = registry.position[source].max(position);
        if updates.is_empty() {
            return;
        }
        let cursor: Arc<[u64]> = registry.position.as_slice().into();
        for update in updates {
            if self.wanted(registry, &update.topic, source, position) {
                let frame = self.frame(&update.topic, &update.body, &cursor, committed);
                self.deliver(registry, &update.topic, &frame, Some((source, position)));
            }
            registry.kept.push_back(Kept {
                topic: update.topic,
                source,
                position,
                body: update.body,
                cursor: cursor.clone(),
                committed,
            });
        }
        while registry.kept.len() > self.limits.replay {
            if let Some(old) = registry.kept.pop_front() {
                let floor = &mut registry.floor[old.source];
                *floor = (*floor).max(old.position);
            }
        }
    }

    /// Sends a public frame to every subscriber of `topic`.
    pub fn broadcast(&self, topic: &Topic, frame: &Frame) {
        let mut registry = self.lock();
        self.deliver(&mut registry, topic, frame, None);
    }

    /// Sends `update` to the subscribers of `topic` that have had their snapshot, and
    /// `snapshot` to those waiting for one (who then count as having had it). Both are made
    /// only if someone will get them.
    pub fn snapshot_or_update(
        &self,
        topic: &Topic,
        snapshot: impl FnOnce() -> Frame,
        update: Option<impl FnOnce() -> Frame>,
    ) {
        let mut registry = self.lock();
        let registry = &mut *registry;
        let Some(subs) = registry.topics.get_mut(topic) else {
            return;
        };
        let (mut fresh, mut known) = (Vec::new(), Vec::new());
        for sub in subs.iter_mut() {
            if sub.fresh {
                sub.fresh = false;
                fresh.push(sub.conn);
            } else {
                known.push(sub.conn);
            }
        }
        let send = |conns: Vec<u64>, frame: Frame| {
            for conn in conns {
                self.send_to(registry, conn, &frame);
            }
        };
        if let Some(update) = update
            && !known.is_empty()
        {
            send(known, update());
        }
        if !fresh.is_empty() {
            send(fresh, snapshot());
        }
    }

    /// Whether any subscriber of `topic` would get an update at `position` of `source`.
    fn wanted(&self, registry: &Registry, topic: &Topic, source: usize, position: u64) -> bool {
        registry.topics.get(topic).is_some_and(|subs| {
            subs.iter().any(|sub| {
                sub.after
                    .as_ref()
                    .is_none_or(|after| position > after.0[source])
            })
        })
    }

    /// A private update's frame.
    fn frame(
        &self,
        topic: &Topic,
        body: &Body,
        cursor: &[u64],
        committed: Option<Committed>,
    ) -> Frame {
        let cursor = Cursor(cursor.to_vec()).encode();
        Frame {
            text: Utf8Bytes::from(with_cursor(&self.render.body(topic, body), &cursor)),
            committed,
            channel: topic.channel(),
        }
    }

    fn deliver(
        &self,
        registry: &mut Registry,
        topic: &Topic,
        frame: &Frame,
        at: Option<(usize, u64)>,
    ) {
        let Some(subs) = registry.topics.get(topic) else {
            return;
        };
        let targets: Vec<u64> = subs
            .iter()
            .filter(|sub| match (&sub.after, at) {
                (Some(after), Some((source, position))) => position > after.0[source],
                _ => true,
            })
            .map(|sub| sub.conn)
            .collect();
        for conn in targets {
            self.send_to(registry, conn, frame);
        }
    }

    fn send_to(&self, registry: &Registry, conn: u64, frame: &Frame) {
        let Some(target) = registry.conns.get(&conn) else {
            return;
        };
        match target.queue.try_send(frame.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.kill(registry, conn),
            // Its task is gone; `disconnect` follows.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Cuts off a connection whose queue is full.
    fn kill(&self, registry: &Registry, conn: u64) {
        if let Some(target) = registry.conns.get(&conn) {
            let first = target.kill.close(Close {
                code: close::SLOW_CONSUMER,
                reason: "slow consumer: too many messages queued",
            });
            if first {
                self.metrics
                    .streams
                    .dropped
                    .get_or_create(&OutcomeLabels {
                        outcome: "slow_consumer",
                    })
                    .inc();
            }
        }
    }
}

/// `body` (a JSON object) with a `cursor` field first.
fn with_cursor(body: &str, cursor: &str) -> String {
    let rest = body.strip_prefix('{').unwrap_or(body);
    let mut text = String::with_capacity(body.len() + cursor.len() + 14);
    text.push_str("{\"cursor\":\"");
    text.push_str(cursor);
    text.push_str("\",");
    text.push_str(rest);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(replay: usize) -> Hub {
        let limits = Limits {
            replay,
            queue: 4,
            subscriptions_per_key: 3,
            ..Limits::default()
        };
        Hub::new(
            2,
            follow::Render::default(),
            limits,
            Arc::new(Metrics::new()),
        )
    }

    fn update(account: &str, n: u32) -> Update {
        Update {
            topic: Topic::Orders(account.into()),
            body: Body::Raw(format!("{{\"n\":{n}}}")),
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Frame>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            out.push(frame.text.to_string());
        }
        out
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_shapes() {
        let cursor = Cursor(vec![3, 0, 17]);
        assert_eq!(cursor.encode(), "3.0.17");
        assert_eq!(Cursor::decode("3.0.17", 3), Some(cursor));
        assert_eq!(Cursor::decode("3.0", 3), None);
        assert_eq!(Cursor::decode("3.x.1", 3), None);
        assert_eq!(Cursor::decode("", 1), None);
    }

    #[test]
    fn a_resume_gets_what_the_cursor_missed_and_nothing_twice() {
        let hub = hub(100);
        hub.start_source(0, 0);
        hub.start_source(1, 0);
        let (tx, mut first) = mpsc::channel(16);
        let (a, _) = hub.connect("k", tx).unwrap();
        hub.subscribe(a, Topic::Orders("alice".into()), None)
            .unwrap();
        hub.publish(0, 1, vec![update("alice", 1)], None);
        hub.publish(1, 1, vec![update("bob", 2)], None);
        hub.publish(0, 2, vec![update("alice", 3)], None);
        let seen = drain(&mut first);
        assert_eq!(seen.len(), 2);
        assert!(
            seen[0].starts_with("{\"cursor\":\"1.0\",\"n\":1"),
            "{seen:?}"
        );
        // The client saw only the first update, then lost the connection.
        hub.disconnect(a);
        let (tx, mut second) = mpsc::channel(16);
        let (b, _) = hub.connect("k", tx).unwrap();
        let outcome = hub
            .subscribe(b, Topic::Orders("alice".into()), Some("1.0"))
            .unwrap();
        assert_eq!(outcome, Subscribed::Live { replayed: 1 });
        hub.publish(0, 3, vec![update("alice", 4)], None);
        let seen = drain(&mut second);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].contains("\"n\":3") && seen[1].contains("\"n\":4"));
    }

    #[test]
    fn a_cursor_ahead_of_this_server_skips_what_it_already_had() {
        let hub = hub(100);
        hub.start_source(0, 0);
        hub.start_source(1, 0);
        let (tx, mut rx) = mpsc::channel(16);
        let (conn, _) = hub.connect("k", tx).unwrap();
        // Another server had sent up to position 2 of source 0.
        hub.subscribe(conn, Topic::Orders("alice".into()), Some("2.0"))
            .unwrap();
        hub.publish(0, 1, vec![update("alice", 1)], None);
        hub.publish(0, 2, vec![update("alice", 2)], None);
        hub.publish(0, 3, vec![update("alice", 3)], None);
        let seen = drain(&mut rx);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains("\"n\":3"));
    }

    #[test]
    fn a_cursor_older_than_the_window_is_told_to_resync() {
        let hub = hub(2);
        hub.start_source(0, 0);
        hub.start_source(1, 0);
        for n in 1..=4 {
            hub.publish(0, n, vec![update("alice", n as u32)], None);
        }
        let (tx, _rx) = mpsc::channel(16);
        let (conn, _) = hub.connect("k", tx).unwrap();
        let topic = Topic::Orders("alice".into());
        assert_eq!(
            hub.subscribe(conn, topic.clone(), Some("1.0")).unwrap(),
            Subscribed::Resync
        );
        hub.unsubscribe(conn, &topic);
        assert_eq!(
            hub.subscribe(conn, topic, Some("2.0")).unwrap(),
            Subscribed::Live { replayed: 2 }
        );
        // A source whose start is unknown cannot be resumed either.
        let fresh = Hub::new(
            1,
            follow::Render::default(),
            Limits::default(),
            Arc::new(Metrics::new()),
        );
        let (tx, _rx) = mpsc::channel(16);
        let (conn, _) = fresh.connect("k", tx).unwrap();
        assert_eq!(
            fresh
                .subscribe(conn, Topic::Fills("a".into()), Some("5"))
                .unwrap(),
            Subscribed::Resync
        );
    }

    #[tokio::test]
    async fn a_full_queue_cuts_off_its_connection_and_no_other() {
        let hub = hub(100);
        let (slow_tx, _slow_rx) = mpsc::channel(4);
        let (fast_tx, mut fast_rx) = mpsc::channel(64);
        let (slow, slow_kill) = hub.connect("k", slow_tx).unwrap();
        let (fast, fast_kill) = hub.connect("k", fast_tx).unwrap();
        let topic = Topic::Trades("BTC-USDT".into());
        hub.subscribe(slow, topic.clone(), None).unwrap();
        hub.subscribe(fast, topic.clone(), None).unwrap();
        for n in 0..10 {
            let frame = Frame {
                text: Utf8Bytes::from(format!("{n}")),
                committed: None,
                channel: "trades",
            };
            hub.broadcast(&topic, &frame);
        }
        let close = slow_kill.wait().await;
        assert_eq!(close.code, close::SLOW_CONSUMER);
        assert!(fast_kill.close.get().is_none());
        assert_eq!(drain(&mut fast_rx).len(), 10);
    }

    #[test]
    fn limits_count_per_key() {
        let hub = hub(100);
        let (tx, _rx) = mpsc::channel(4);
        let (conn, _) = hub.connect("k", tx).unwrap();
        for symbol in ["A", "B", "C"] {
            hub.subscribe(conn, Topic::Trades(symbol.into()), None)
                .unwrap();
        }
        assert_eq!(
            hub.subscribe(conn, Topic::Trades("D".into()), None),
            Err(Refused::TooManySubscriptions(3))
        );
        assert_eq!(
            hub.subscribe(conn, Topic::Trades("A".into()), None),
            Err(Refused::Duplicate)
        );
        hub.disconnect(conn);
        let (tx, _rx) = mpsc::channel(4);
        let (conn, _) = hub.connect("k", tx).unwrap();
        hub.subscribe(conn, Topic::Trades("D".into()), None)
            .unwrap();
    }
}
