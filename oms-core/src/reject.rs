//! Why an order or a request about an order was refused.
//!
//! A [`Reject`] is both the typed error of validation at the edge (an HTTP 4xx that names the
//! field) and the payload of a rejected event inside the core: the same check gives the same
//! code in both places. Codes are stable snake_case strings; clients may match on them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable reason code.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The symbol names no instrument here.
    UnknownSymbol,
    /// The instrument is halted: no new orders or amendments, cancels only.
    InstrumentHalted,
    /// A price or quantity is zero or negative.
    NotPositive,
    /// A price is not a multiple of the tick size.
    OffTick,
    /// A quantity is not a multiple of the lot size.
    OffLot,
    /// A number is beyond what the instrument can represent.
    TooLarge,
    /// A limit order without a price.
    PriceRequired,
    /// A market order with a price.
    PriceNotAllowed,
    /// The combination of type, time in force and post-only makes no sense (for example a
    /// market order that is good till canceled, or a post-only IOC).
    InvalidTimeInForce,
    /// Below the instrument's minimum quantity.
    QuantityBelowMin,
    /// Above the instrument's maximum quantity.
    QuantityAboveMax,
    /// Price × quantity below the instrument's minimum notional.
    NotionalBelowMin,
    /// Price × quantity above the maximum order notional.
    NotionalAboveMax,
    /// The price is outside the band around the reference price.
    PriceOutsideBand,
    /// The account already has the maximum number of open orders on this instrument.
    TooManyOpenOrders,
    /// A post-only order would have taken liquidity.
    PostOnlyWouldTake,
    /// An order with this order id was already seen.
    DuplicateOrderId,
    /// The account has an open order with this client order id on this instrument.
    DuplicateClientOrderId,
    /// The order is not open (unknown, already filled, canceled or expired) or belongs to
    /// another account.
    UnknownOrder,
    /// An amendment would leave the order with no more than it already filled.
    QuantityBelowFilled,
    /// An amendment that changes nothing.
    NoChange,
    /// Above the instrument's maximum price. (New reasons go last: they are journaled by
    /// position.)
    PriceAboveMax,
    /// The account's available balance does not cover what the order or withdrawal needs.
    InsufficientFunds,
    /// The asset names no asset of the configured instruments.
    UnknownAsset,
    /// An amount has more decimals than its asset.
    TooPrecise,
    /// A market buy by quantity needs a price to hold against (the price band's edge around
    /// the last trade), and there is none yet.
    NoReferencePrice,
    /// A quote quantity on an order that is not an IOC market buy, or with a quantity.
    QuoteQuantityNotAllowed,
}

impl RejectReason {
    /// The stable code, as serialized.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::UnknownSymbol => "unknown_symbol",
            RejectReason::InstrumentHalted => "instrument_halted",
            RejectReason::NotPositive => "not_positive",
            RejectReason::OffTick => "off_tick",
            RejectReason::OffLot => "off_lot",
            RejectReason::TooLarge => "too_large",
            RejectReason::PriceRequired => "price_required",
            RejectReason::PriceNotAllowed => "price_not_allowed",
            RejectReason::InvalidTimeInForce => "invalid_time_in_force",
            RejectReason::QuantityBelowMin => "quantity_below_min",
            RejectReason::QuantityAboveMax => "quantity_above_max",
            RejectReason::NotionalBelowMin => "notional_below_min",
            RejectReason::NotionalAboveMax => "notional_above_max",
            RejectReason::PriceOutsideBand => "price_outside_band",
            RejectReason::TooManyOpenOrders => "too_many_open_orders",
            RejectReason::PostOnlyWouldTake => "post_only_would_take",
            RejectReason::DuplicateOrderId => "duplicate_order_id",
            RejectReason::DuplicateClientOrderId => "duplicate_client_order_id",
            RejectReason::UnknownOrder => "unknown_order",
            RejectReason::QuantityBelowFilled => "quantity_below_filled",
            RejectReason::NoChange => "no_change",
            RejectReason::PriceAboveMax => "price_above_max",
            RejectReason::InsufficientFunds => "insufficient_funds",
            RejectReason::UnknownAsset => "unknown_asset",
            RejectReason::TooPrecise => "too_precise",
            RejectReason::NoReferencePrice => "no_reference_price",
            RejectReason::QuoteQuantityNotAllowed => "quote_quantity_not_allowed",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RejectReason::UnknownSymbol => "unknown symbol",
            RejectReason::InstrumentHalted => "instrument is halted",
            RejectReason::NotPositive => "must be greater than zero",
            RejectReason::OffTick => "price is not a multiple of the tick size",
            RejectReason::OffLot => "quantity is not a multiple of the lot size",
            RejectReason::TooLarge => "number is too large",
            RejectReason::PriceRequired => "a limit order needs a price",
            RejectReason::PriceNotAllowed => "a market order takes no price",
            RejectReason::InvalidTimeInForce => {
                "time in force does not fit the order type (market orders are ioc or fok; post-only orders are gtc limit orders)"
            }
            RejectReason::QuantityBelowMin => "quantity is below the instrument minimum",
            RejectReason::QuantityAboveMax => "quantity is above the instrument maximum",
            RejectReason::NotionalBelowMin => "price × quantity is below the minimum notional",
            RejectReason::NotionalAboveMax => {
                "price × quantity is above the maximum order notional"
            }
            RejectReason::PriceOutsideBand => {
                "price is outside the band around the reference price"
            }
            RejectReason::TooManyOpenOrders => {
                "too many open orders for this account on this instrument"
            }
            RejectReason::PostOnlyWouldTake => "post-only order would take liquidity",
            RejectReason::DuplicateOrderId => "order id already used",
            RejectReason::DuplicateClientOrderId => {
                "the account has an open order with this client order id"
            }
            RejectReason::UnknownOrder => "order is not open or does not exist",
            RejectReason::QuantityBelowFilled => "new quantity is not above the filled quantity",
            RejectReason::NoChange => "the amendment changes nothing",
            RejectReason::PriceAboveMax => "price is above the instrument maximum",
            RejectReason::InsufficientFunds => "the available balance does not cover it",
            RejectReason::UnknownAsset => "unknown asset",
            RejectReason::TooPrecise => "more decimals than the asset has",
            RejectReason::NoReferencePrice => {
                "a market buy needs a last trade (or a reference price) to hold funds against"
            }
            RejectReason::QuoteQuantityNotAllowed => {
                "a quote quantity replaces the quantity of an ioc market buy, and nothing else"
            }
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A request field that a reject can blame, named as in the HTTP API.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `symbol`
    Symbol,
    /// `price`
    Price,
    /// `quantity`
    Quantity,
    /// `time_in_force`
    TimeInForce,
    /// `order_id`
    OrderId,
    /// `client_order_id`
    ClientOrderId,
    /// `asset`
    Asset,
    /// `amount`
    Amount,
    /// `quote_quantity`
    QuoteQuantity,
}

impl Field {
    /// The field's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Field::Symbol => "symbol",
            Field::Price => "price",
            Field::Quantity => "quantity",
            Field::TimeInForce => "time_in_force",
            Field::OrderId => "order_id",
            Field::ClientOrderId => "client_order_id",
            Field::Asset => "asset",
            Field::Amount => "amount",
            Field::QuoteQuantity => "quote_quantity",
        }
    }
}

/// A refused order or request: a reason, and the request field at fault when there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
    /// The request field at fault (`price`, `quantity`, `symbol`, ...), if one is.
    #[serde(default)]
    pub field: Option<Field>,
}

impl Reject {
    /// A reject that blames no single field.
    pub fn new(reason: RejectReason) -> Reject {
        Reject {
            reason,
            field: None,
        }
    }

    /// A reject that names the field at fault.
    pub fn field(reason: RejectReason, field: Field) -> Reject {
        Reject {
            reason,
            field: Some(field),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{}: {}", field.name(), self.reason.describe()),
            None => f.write_str(self.reason.describe()),
        }
    }
}
