//! Book snapshots: the whole state of a book as plain, serializable data.
//!
//! A snapshot holds state only; the instrument and the risk limits come from configuration when
//! it is restored, so limits may change across a restart. Tick and lot size may not (they give
//! the scaled integers their meaning), so the snapshot records them and a restore checks them.

use super::levels::{Owner, RestingOrder};
use super::{Book, Levels};
use crate::instrument::Instrument;
use crate::risk::{RiskError, RiskLimits};
use crate::types::{OrderId, Price, Side, Symbol};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A book's state, comparable and serializable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshot {
    /// The instrument.
    pub symbol: Symbol,
    /// The tick size the prices are counted in.
    pub tick_size: Decimal,
    /// The lot size the quantities are counted in.
    pub lot_size: Decimal,
    /// The sequence number of the last event.
    pub seq: u64,
    /// The price of the last trade.
    pub last_trade: Option<Price>,
    /// Resting bids, best level first, in queue order within a level.
    pub bids: Vec<RestingOrder>,
    /// Resting asks, best level first, in queue order within a level.
    pub asks: Vec<RestingOrder>,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// It belongs to another instrument or to other tick or lot sizes.
    #[error(
        "snapshot of {found} (tick {tick_size}, lot {lot_size}) does not fit instrument {expected}"
    )]
    Instrument {
        /// The configured instrument.
        expected: Symbol,
        /// The snapshot's instrument.
        found: Symbol,
        /// The snapshot's tick size.
        tick_size: Decimal,
        /// The snapshot's lot size.
        lot_size: Decimal,
    },
    /// The risk limits do not apply to the instrument.
    #[error(transparent)]
    Risk(#[from] RiskError),
    /// An order in it breaks the book's invariants.
    #[error("snapshot order {order_id} is inconsistent: {problem}")]
    Order {
        /// The order.
        order_id: OrderId,
        /// What is wrong.
        problem: &'static str,
    },
    /// The best bid is not below the best ask.
    #[error("snapshot book is crossed")]
    Crossed,
}

impl Book {
    /// The book's state.
    pub fn snapshot(&self) -> BookSnapshot {
        let spec = self.instrument.spec();
        let side = |levels: &Levels| {
            levels
                .best_first()
                .flat_map(|(_, level)| self.orders.queue(level).cloned())
                .collect()
        };
        BookSnapshot {
            symbol: spec.symbol.clone(),
            tick_size: spec.tick_size,
            lot_size: spec.lot_size,
            seq: self.seq,
            last_trade: self.last_trade,
            bids: side(&self.bids),
            asks: side(&self.asks),
        }
    }

    /// Rebuilds a book from a snapshot, under the current instrument and limits.
    pub fn restore(
        instrument: Instrument,
        limits: &RiskLimits,
        snapshot: BookSnapshot,
    ) -> Result<Book, RestoreError> {
        let spec = instrument.spec();
        if spec.symbol != snapshot.symbol
            || spec.tick_size != snapshot.tick_size
            || spec.lot_size != snapshot.lot_size
        {
            return Err(RestoreError::Instrument {
                expected: spec.symbol.clone(),
                found: snapshot.symbol,
                tick_size: snapshot.tick_size,
                lot_size: snapshot.lot_size,
            });
        }
        let mut book = Book::new(instrument, limits)?;
        book.seq = snapshot.seq;
        book.last_trade = snapshot.last_trade;
        for (side, orders) in [(Side::Buy, snapshot.bids), (Side::Sell, snapshot.asks)] {
            let mut previous: Option<Price> = None;
            for order in orders {
                let problem = if order.side != side {
                    Some("on the wrong side")
                } else if order.leaves.is_zero() || order.leaves > order.quantity {
                    Some("open quantity is zero or above its quantity")
                } else if previous.is_some_and(|p| p != order.price && side.accepts(order.price, p))
                {
                    Some("levels are not in priority order")
                } else if book.orders.find(order.order_id).is_some() {
                    Some("appears twice")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(RestoreError::Order {
                        order_id: order.order_id,
                        problem,
                    });
                }
                previous = Some(order.price);
                let price = order.price;
                let levels = match side {
                    Side::Buy => &mut book.bids,
                    Side::Sell => &mut book.asks,
                };
                let owner = Owner::of(&order);
                let key = book.orders.insert(order, owner);
                book.orders.push_back(levels.level_mut(price), key);
            }
        }
        if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask())
            && bid >= ask
        {
            return Err(RestoreError::Crossed);
        }
        Ok(book)
    }
}
