//! Events: everything a book decides, in the order it decides it.
//!
//! Every event is stamped with the book's sequence number, which increases by one per event and
//! is never reused; a trade's sequence number is its trade id. Consumers that store state from
//! events (the read projection) make their writes idempotent on `(order_id, seq)`.

use crate::command::NewOrder;
use crate::reject::Reject;
use crate::types::{AccountId, OrderId, Price, Quantity, Side, Symbol, Timestamp};
use serde::{Deserialize, Serialize};

/// An event with its place in the book's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Book sequence number, from 1.
    pub seq: u64,
    /// The timestamp of the command that caused it.
    pub ts: Timestamp,
    /// The book's instrument.
    pub symbol: Symbol,
    /// What happened.
    pub event: Event,
}

/// What a book decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An order passed the checks and entered matching.
    Accepted {
        /// The order as accepted.
        order: NewOrder,
    },
    /// An order failed a check; it never traded.
    Rejected {
        /// The order as submitted.
        order: NewOrder,
        /// Why.
        reject: Reject,
    },
    /// Two orders traded, at the maker's price.
    Trade(Trade),
    /// An order was canceled by its owner.
    Canceled {
        /// The order.
        order_id: OrderId,
        /// Its account.
        account: AccountId,
        /// The quantity that was still open.
        quantity: Quantity,
    },
    /// An order's remainder was ended by the system.
    Expired {
        /// The order.
        order_id: OrderId,
        /// Its account.
        account: AccountId,
        /// The quantity that was still open.
        quantity: Quantity,
        /// Why.
        reason: ExpireReason,
    },
    /// An open order's price or quantity changed.
    Amended {
        /// The order.
        order_id: OrderId,
        /// Its account.
        account: AccountId,
        /// Its limit price now.
        price: Price,
        /// Its total quantity now (filled quantity included).
        quantity: Quantity,
        /// Its open quantity now.
        leaves: Quantity,
        /// Whether it kept its place in the queue.
        priority_kept: bool,
    },
    /// A cancel was refused; nothing changed.
    CancelRejected {
        /// The order named.
        order_id: OrderId,
        /// The account asking.
        account: AccountId,
        /// Why.
        reject: Reject,
    },
    /// An amendment was refused; the order is unchanged.
    AmendRejected {
        /// The order named.
        order_id: OrderId,
        /// The account asking.
        account: AccountId,
        /// Why.
        reject: Reject,
    },
}

impl Event {
    /// The orders this event changes: a trade changes two, a refused cancel or amendment none.
    pub fn order_ids(&self) -> impl Iterator<Item = OrderId> {
        let (first, second) = match self {
            Event::Accepted { order } | Event::Rejected { order, .. } => {
                (Some(order.order_id), None)
            }
            Event::Trade(trade) => (Some(trade.taker.order_id), Some(trade.maker.order_id)),
            Event::Canceled { order_id, .. }
            | Event::Expired { order_id, .. }
            | Event::Amended { order_id, .. } => (Some(*order_id), None),
            Event::CancelRejected { .. } | Event::AmendRejected { .. } => (None, None),
        };
        first.into_iter().chain(second)
    }

    /// The accounts whose funds this event changes, each once: where the matching stage sends
    /// it to be settled (a trade to both sides; an order's end, rejection or amendment to its
    /// owner). `accepted` and `cancel_rejected` change no balance.
    pub fn settled_accounts(&self) -> impl Iterator<Item = &AccountId> {
        let (first, second) = match self {
            Event::Trade(trade) => (
                Some(&trade.taker.account),
                (trade.maker.account != trade.taker.account).then_some(&trade.maker.account),
            ),
            Event::Rejected { order, .. } => (Some(&order.account), None),
            Event::Canceled { account, .. }
            | Event::Expired { account, .. }
            | Event::Amended { account, .. }
            | Event::AmendRejected { account, .. } => (Some(account), None),
            Event::Accepted { .. } | Event::CancelRejected { .. } => (None, None),
        };
        first.into_iter().chain(second)
    }
}

/// One trade between an incoming (taker) and a resting (maker) order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// The maker's price.
    pub price: Price,
    /// Traded quantity.
    pub quantity: Quantity,
    /// The incoming order.
    pub taker: Fill,
    /// The resting order.
    pub maker: Fill,
}

/// One side of a trade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// The order.
    pub order_id: OrderId,
    /// Its account.
    pub account: AccountId,
    /// Its side.
    pub side: Side,
    /// Its open quantity after this trade; zero means filled.
    pub leaves: Quantity,
}

/// Why the system ended an order's remainder.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpireReason {
    /// IOC: what did not trade at once.
    ImmediateOrCancel,
    /// FOK: the whole quantity could not trade at once, so none did.
    FillOrKill,
    /// Market order: no more liquidity within the price band.
    NoLiquidity,
    /// Self-trade prevention ended it.
    SelfTradePrevention,
}
