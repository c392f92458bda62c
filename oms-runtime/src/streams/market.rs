//! The public channels' producers: one book task and one ticker task per instrument, woken by
//! the follower when a book changes and by the hub when a subscription needs a snapshot.
//!
//! A book update is the difference between two depth views of the book, each stamped with the
//! book's sequence number, so the updates chain (`prev_seq`) and a client that applies them to
//! the snapshot has the book's top levels exactly as `GET /v1/book` shows them. The views come
//! from where the REST API reads depth: the engine in single-node mode, what the matching stage
//! publishes after each commit in distributed mode (read again until it has caught up with the
//! events that woke the task).

use super::protocol::{self, Message};
use super::{Committed, Frame, Hub, Topic};
use crate::api::Market as Configured;
use crate::api::model::TickerView;
use crate::processing::DepthSource;
use crate::store::StoreError;
use axum::extract::ws::Utf8Bytes;
use futures::future::BoxFuture;
use oms_core::{Depth, Instrument, Price, Quantity, Symbol};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Levels per side of the book channel.
pub const BOOK_LEVELS: usize = 100;

/// The most often a ticker is sent per instrument.
const TICKER_EVERY: Duration = Duration::from_secs(1);

/// The most often a book update is sent: changes within it are sent as one update (the
/// sequence numbers still chain), so a busy book costs each subscriber at most this many
/// frames a second.
const BOOK_EVERY: Duration = Duration::from_millis(10);

/// How long a book task waits for a depth view that has caught up with its events.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Makes an instrument's ticker (the REST API's).
pub type TickerFn =
    Arc<dyn Fn(Instrument) -> BoxFuture<'static, Result<TickerView, StoreError>> + Send + Sync>;

/// One instrument's wake-ups.
#[derive(Default)]
struct Tracker {
    /// The last event sequence number the follower saw.
    wanted: AtomicU64,
    book: Notify,
    ticker: Notify,
    /// Whether the book (the ticker) has subscribers: without, a change wakes nothing (the
    /// follower touches books for every command).
    book_watched: AtomicBool,
    ticker_watched: AtomicBool,
}

/// The public channels of every instrument.
pub struct Market {
    trackers: BTreeMap<String, Arc<Tracker>>,
    hub: Weak<Hub>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Market {
    /// Starts the book and ticker tasks of every instrument and connects them to `hub`; they
    /// end when the hub does.
    pub fn start(
        hub: &Arc<Hub>,
        markets: &BTreeMap<Symbol, Configured>,
        depth: Arc<dyn DepthSource>,
        ticker: TickerFn,
    ) -> Arc<Market> {
        let mut trackers = BTreeMap::new();
        let mut tasks = Vec::new();
        for (symbol, market) in markets {
            let tracker = Arc::new(Tracker::default());
            trackers.insert(symbol.to_string(), tracker.clone());
            tasks.push(tokio::spawn(book_task(
                Arc::downgrade(hub),
                market.instrument.clone(),
                tracker.clone(),
                depth.clone(),
            )));
            tasks.push(tokio::spawn(ticker_task(
                Arc::downgrade(hub),
                market.instrument.clone(),
                tracker,
                ticker.clone(),
            )));
        }
        let market = Arc::new(Market {
            trackers,
            hub: Arc::downgrade(hub),
            tasks: std::sync::Mutex::new(tasks),
        });
        hub.set_market(market.clone());
        market
    }

    /// Stops the tasks (they hold the stores they read).
    pub fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    /// A subscription wants its snapshot.
    pub fn wake(&self, topic: &Topic) {
        match topic {
            Topic::Book(symbol) => self.trackers.get(symbol.as_str()).map(|t| {
                t.book_watched.store(true, Ordering::Relaxed);
                t.book.notify_one();
            }),
            Topic::Ticker(symbol) => self.trackers.get(symbol.as_str()).map(|t| {
                t.ticker_watched.store(true, Ordering::Relaxed);
                t.ticker.notify_one();
            }),
            _ => None,
        };
    }

    /// A book changed up to event `seq`.
    pub fn touched(&self, symbol: &str, seq: u64) {
        if let Some(tracker) = self.trackers.get(symbol) {
            tracker.wanted.fetch_max(seq, Ordering::Relaxed);
            if tracker.book_watched.load(Ordering::Relaxed) {
                tracker.book.notify_one();
            }
            if tracker.ticker_watched.load(Ordering::Relaxed) {
                tracker.ticker.notify_one();
            }
        }
    }

    /// A public trade, rendered.
    pub fn trade(&self, symbol: &str, text: String, committed: Option<Committed>) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let topic = Topic::Trades(symbol.into());
        if hub.has_subscribers(&topic) {
            let frame = Frame {
                text: Utf8Bytes::from(text),
                committed,
                channel: "trades",
            };
            hub.broadcast(&topic, &frame);
        }
    }
}

fn frame(message: &Message<'_>, committed: Option<Committed>, channel: &'static str) -> Frame {
    Frame {
        text: Utf8Bytes::from(protocol::text(message)),
        committed,
        channel,
    }
}

async fn book_task(
    hub: Weak<Hub>,
    instrument: Instrument,
    tracker: Arc<Tracker>,
    source: Arc<dyn DepthSource>,
) {
    let symbol = instrument.symbol().to_string();
    let topic = Topic::Book(instrument.symbol().clone());
    let mut current: Option<Depth> = None;
    loop {
        tracker.book.notified().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        // Cleared before the look, so that a subscription made meanwhile (which sets it after
        // registering) is never missed.
        tracker.book_watched.store(false, Ordering::Relaxed);
        if !hub.has_subscribers(&topic) {
            current = None;
            continue;
        }
        tracker.book_watched.store(true, Ordering::Relaxed);
        let woken = Instant::now();
        let depth = match caught_up(&*source, &symbol, &tracker).await {
            Ok(depth) => depth,
            Err(error) => {
                tracing::warn!(%error, %symbol, "book stream: depth unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                tracker.book.notify_one();
                continue;
            }
        };
        let committed = Some(Committed::At(woken));
        let update = current
            .as_ref()
            .filter(|before| before.seq != depth.seq)
            .map(|before| {
                let (bids, asks) = (
                    changes(&instrument, &before.bids, &depth.bids, true),
                    changes(&instrument, &before.asks, &depth.asks, false),
                );
                let (symbol, depth) = (&symbol, &depth);
                move || {
                    let message = Message::BookUpdate {
                        symbol,
                        seq: depth.seq,
                        prev_seq: before.seq,
                        bids,
                        asks,
                    };
                    frame(&message, committed, "book")
                }
            });
        hub.snapshot_or_update(
            &topic,
            || {
                let message = Message::BookSnapshot {
                    symbol: &symbol,
                    seq: depth.seq,
                    bids: levels(&instrument, &depth.bids),
                    asks: levels(&instrument, &depth.asks),
                };
                frame(&message, committed, "book")
            },
            update,
        );
        current = Some(depth);
        drop(hub);
        tokio::time::sleep(BOOK_EVERY).await;
    }
}

/// A depth view at or after the last event the follower saw, or the newest within
/// [`CATCH_UP`].
async fn caught_up(
    source: &dyn DepthSource,
    symbol: &str,
    tracker: &Tracker,
) -> Result<Depth, StoreError> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let depth = source.depth(symbol, BOOK_LEVELS).await?.unwrap_or(Depth {
            seq: 0,
            bids: Vec::new(),
            asks: Vec::new(),
        });
        if depth.seq >= tracker.wanted.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Ok(depth);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn level(instrument: &Instrument, price: Price, quantity: Quantity) -> [String; 2] {
    [
        instrument.price_decimal(price).to_string(),
        instrument.quantity_decimal(quantity).to_string(),
    ]
}

fn levels(instrument: &Instrument, side: &[(Price, Quantity)]) -> Vec<[String; 2]> {
    side.iter()
        .map(|(price, quantity)| level(instrument, *price, *quantity))
        .collect()
}

/// The levels of `after` that differ from `before`, and those of `before` that are gone (with
/// quantity 0), best first.
fn changes(
    instrument: &Instrument,
    before: &[(Price, Quantity)],
    after: &[(Price, Quantity)],
    bids: bool,
) -> Vec<[String; 2]> {
    let old: BTreeMap<Price, Quantity> = before.iter().copied().collect();
    let new: BTreeMap<Price, Quantity> = after.iter().copied().collect();
    let mut changed: Vec<(Price, Quantity)> = new
        .iter()
        .filter(|(price, quantity)| old.get(price) != Some(quantity))
        .map(|(price, quantity)| (*price, *quantity))
        .chain(
            old.keys()
                .filter(|price| !new.contains_key(price))
                .map(|price| (*price, Quantity::ZERO)),
        )
        .collect();
    changed.sort_by_key(|(price, _)| *price);
    if bids {
        changed.reverse();
    }
    changed
        .into_iter()
        .map(|(price, quantity)| match quantity {
            Quantity::ZERO => [instrument.price_decimal(price).to_string(), "0".into()],
            _ => level(instrument, price, quantity),
        })
        .collect()
}

async fn ticker_task(
    hub: Weak<Hub>,
    instrument: Instrument,
    tracker: Arc<Tracker>,
    make: TickerFn,
) {
    let topic = Topic::Ticker(instrument.symbol().clone());
    loop {
        tracker.ticker.notified().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        tracker.ticker_watched.store(false, Ordering::Relaxed);
        if !hub.has_subscribers(&topic) {
            continue;
        }
        tracker.ticker_watched.store(true, Ordering::Relaxed);
        let woken = Instant::now();
        match make(instrument.clone()).await {
            Ok(ticker) => {
                let frame = frame(
                    &Message::Ticker { ticker },
                    Some(Committed::At(woken)),
                    "ticker",
                );
                hub.snapshot_or_update(&topic, || frame.clone(), Some(|| frame.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, symbol = %instrument.symbol(), "ticker stream: unavailable");
                tracker.ticker.notify_one();
            }
        }
        drop(hub);
        tokio::time::sleep(TICKER_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_every_changed_and_removed_level_best_first() {
        let instrument = Instrument::new(crate::default_instruments().remove(0)).unwrap();
        let (p, q) = (Price, Quantity);
        let before = [(p(105), q(1)), (p(104), q(2)), (p(103), q(3))];
        let after = [(p(106), q(5)), (p(105), q(1)), (p(103), q(4))];
        let changed = changes(&instrument, &before, &after, true);
        let price = |ticks| instrument.price_decimal(p(ticks)).to_string();
        let quantity = |lots| instrument.quantity_decimal(q(lots)).to_string();
        assert_eq!(
            changed,
            [
                [price(106), quantity(5)],
                [price(104), "0".to_string()],
                [price(103), quantity(4)],
            ]
        );
        assert!(changes(&instrument, &after, &after, false).is_empty());
    }
}
