//! Identifiers and small value types shared by every part of the core.
//!
//! # Scaled integers
//! [`Price`] counts ticks and [`Quantity`] counts lots of one instrument. A price off the tick or a
//! quantity off the lot cannot be represented, so the matching code never sees one; conversion
//! from and to decimals happens once, at the edge, in [`crate::Instrument`].

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::fmt;

/// An order's identifier, assigned before the order reaches the core (by the ingest role).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A trading account; self-trade prevention and open-order limits are per account.
pub type AccountId = SmolStr;
/// An instrument symbol such as `BTC-USDT`.
pub type Symbol = SmolStr;
/// The client's own reference for an order, echoed back on every event about it.
pub type ClientOrderId = SmolStr;

/// Nanoseconds since the Unix epoch, stamped on a command before it reaches the core.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

/// A price in ticks of its instrument (price = ticks × tick size). Always positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Price(pub u64);

/// A quantity in lots of its instrument (quantity = lots × lot size).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Quantity(pub u64);

impl Quantity {
    /// No quantity at all.
    pub const ZERO: Quantity = Quantity(0);

    /// Whether nothing is left.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, rhs: Quantity) -> Quantity {
        Quantity(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, rhs: Quantity) -> Quantity {
        Quantity(self.0 - rhs.0)
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, rhs: Quantity) {
        self.0 += rhs.0;
    }
}

impl std::ops::SubAssign for Quantity {
    fn sub_assign(&mut self, rhs: Quantity) {
        self.0 -= rhs.0;
    }
}

/// Buy or sell.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Bid: wants to pay at most its price.
    Buy,
    /// Ask: wants to receive at least its price.
    Sell,
}

impl Side {
    /// The side this one trades against.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// Whether an order on this side with `limit` accepts a trade at `price`.
    pub fn accepts(self, limit: Price, price: Price) -> bool {
        match self {
            Side::Buy => price <= limit,
            Side::Sell => price >= limit,
        }
    }
}

/// Limit or market.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// Trades at its price or better; may rest on the book.
    Limit,
    /// Trades at any price within the price band; never rests.
    Market,
}

/// How long an order stays working.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till canceled: the remainder rests on the book.
    Gtc,
    /// Immediate or cancel: trades what it can, the remainder expires.
    Ioc,
    /// Fill or kill: trades its whole quantity at once or nothing at all.
    Fok,
}

/// What happens when an order would trade against another order of the same account.
///
/// The taker's mode decides, as on the large exchanges.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTradePrevention {
    /// Self-trades are allowed.
    #[default]
    None,
    /// The incoming order's remainder expires; the resting order stays.
    ExpireTaker,
    /// The resting order expires; the incoming order goes on matching.
    ExpireMaker,
    /// Both expire.
    ExpireBoth,
}

/// The lifecycle state of an order, as the API reports it.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted, nothing filled yet, working.
    New,
    /// Some filled, the rest working.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Canceled by its owner.
    Canceled,
    /// Refused before it could trade.
    Rejected,
    /// Ended by the system: IOC/FOK/market remainder, or self-trade prevention.
    Expired,
}

impl OrderStatus {
    /// Whether the order can still trade.
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}
