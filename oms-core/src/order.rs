//! The state of one order, folded from the events about it.
//!
//! This is the read model the API serves and the projection stores. Folding is idempotent: an
//! event whose sequence number is not above the last one applied is ignored, so replaying events
//! after a crash cannot count a fill twice.

use crate::command::NewOrder;
use crate::event::{Event, EventRecord, ExpireReason};
use crate::instrument::Instrument;
use crate::reject::Reject;
use crate::types::{OrderStatus, Price, Quantity, Timestamp};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An order as the API reports it, in scaled integers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The order as placed; `price` and `quantity` follow amendments.
    pub order: NewOrder,
    /// Lifecycle state.
    pub status: OrderStatus,
    /// Quantity traded so far.
    pub filled: Quantity,
    /// Quantity still open; zero once the order is closed.
    pub leaves: Quantity,
    /// Sum of `price × quantity` over its trades, in `tick × lot` units.
    pub filled_notional: u128,
    /// Why it was rejected.
    #[serde(default)]
    pub reject: Option<Reject>,
    /// Why the system ended it.
    #[serde(default)]
    pub expire_reason: Option<ExpireReason>,
    /// When it was placed.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Number of events applied to it; increases with every change.
    pub version: u64,
    /// Sequence number of the last event applied.
    pub seq: u64,
}

impl OrderState {
    /// The state an order starts in, from its accepted or rejected event.
    pub fn open(record: &EventRecord) -> Option<OrderState> {
        let (order, status, reject) = match &record.event {
            Event::Accepted { order } => (order, OrderStatus::New, None),
            Event::Rejected { order, reject } => (order, OrderStatus::Rejected, Some(*reject)),
            _ => return None,
        };
        Some(OrderState {
            order: order.clone(),
            status,
            filled: Quantity::ZERO,
            leaves: if reject.is_some() {
                Quantity::ZERO
            } else {
                order.quantity
            },
            filled_notional: 0,
            reject,
            expire_reason: None,
            created_at: record.ts,
            updated_at: record.ts,
            version: 1,
            seq: record.seq,
        })
    }

    /// Applies an event. Returns false, changing nothing, if the event is not about this order
    /// or was already applied.
    pub fn apply(&mut self, record: &EventRecord) -> bool {
        if record.seq <= self.seq {
            return false;
        }
        let id = self.order.order_id;
        match &record.event {
            Event::Trade(trade) => {
                let fill = if trade.taker.order_id == id {
                    &trade.taker
                } else if trade.maker.order_id == id {
                    &trade.maker
                } else {
                    return false;
                };
                self.filled += trade.quantity;
                self.filled_notional += u128::from(trade.price.0) * u128::from(trade.quantity.0);
                self.leaves = fill.leaves;
                self.status = if fill.leaves.is_zero() {
                    OrderStatus::Filled
                } else {
                    OrderStatus::PartiallyFilled
                };
            }
            Event::Canceled { order_id, .. } if *order_id == id => {
                self.leaves = Quantity::ZERO;
                self.status = OrderStatus::Canceled;
            }
            Event::Expired {
                order_id, reason, ..
            } if *order_id == id => {
                self.leaves = Quantity::ZERO;
                self.status = OrderStatus::Expired;
                self.expire_reason = Some(*reason);
            }
            Event::Amended {
                order_id,
                price,
                quantity,
                leaves,
                ..
            } if *order_id == id => {
                self.order.price = Some(*price);
                self.order.quantity = *quantity;
                self.leaves = *leaves;
            }
            _ => return false,
        }
        self.updated_at = record.ts;
        self.version += 1;
        self.seq = record.seq;
        true
    }

    /// Volume-weighted average trade price as a decimal, if anything filled.
    ///
    /// Rounded half-even to 8 decimals beyond the tick: an average can fall between ticks.
    pub fn average_price(&self, instrument: &Instrument) -> Option<Decimal> {
        if self.filled.is_zero() {
            return None;
        }
        let notional = instrument.notional_decimal(self.filled_notional)?;
        let quantity = instrument.quantity_decimal(self.filled);
        notional
            .checked_div(quantity)
            .map(|price| price.normalize())
    }

    /// The limit price, if any.
    pub fn price(&self) -> Option<Price> {
        self.order.price
    }
}
