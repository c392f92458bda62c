//! Request and response bodies of the v1 API, and their conversion to and from the core.

use crate::api::error::ApiError;
use crate::store::TradeRecord;
use oms_core::{
    Checks, ExpireReason, Field, Instrument, InstrumentSpec, NewOrder, OrderId, OrderState,
    OrderStatus, OrderType, Quantity, Reject, RejectReason, SelfTradePrevention, Side, TimeInForce,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::{Duration, UNIX_EPOCH};
use utoipa::ToSchema;

/// Longest decimal string accepted.
const MAX_DECIMAL_CHARS: usize = 40;
/// Longest client order id.
const MAX_CLIENT_ORDER_ID: usize = 64;

/// A decimal written as a JSON string, such as `"65000.10"`: digits with an optional point and
/// an optional leading minus. No exponents, no separators, no JSON numbers (which lose
/// precision in many clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecimalString(pub Decimal);

impl<'de> Deserialize<'de> for DecimalString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DecimalString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal string such as \"65000.10\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DecimalString, E> {
                parse_decimal(text).map(DecimalString).ok_or_else(|| {
                    E::custom(format!(
                        "expected a decimal string such as \"65000.10\" (at most {MAX_DECIMAL_CHARS} characters), got {text:?}"
                    ))
                })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn parse_decimal(text: &str) -> Option<Decimal> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let well_formed = text.len() <= MAX_DECIMAL_CHARS
        && !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && fraction.is_empty());
    // from_str_exact refuses what would be rounded, rather than rounding it silently.
    well_formed
        .then(|| Decimal::from_str_exact(text).ok())
        .flatten()
}

/// `POST /v1/orders` body.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// Account to trade; the API key must be bound to it.
    pub account: String,
    /// Instrument, such as `BTC-USDT`.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: Side,
    /// `limit` or `market`.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// `gtc`, `ioc` or `fok`; defaults to `gtc` for limit and `ioc` for market orders.
    #[serde(default)]
    pub time_in_force: Option<TimeInForce>,
    /// Limit price as a decimal string; limit orders only.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "65000.10", pattern = r"^-?[0-9]+(\.[0-9]+)?$", max_length = 40)]
    pub price: Option<DecimalString>,
    /// Quantity as a decimal string. Required unless `quote_quantity` is given.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "0.01", pattern = r"^-?[0-9]+(\.[0-9]+)?$", max_length = 40)]
    pub quantity: Option<DecimalString>,
    /// A market buy's budget in the quote asset instead of a quantity (Binance's
    /// `quoteOrderQty`): the order buys as many lots as the budget affords, best price first.
    /// Only for `ioc` market buys; a multiple of `tick_size × lot_size`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "100.00", pattern = r"^-?[0-9]+(\.[0-9]+)?$", max_length = 40)]
    pub quote_quantity: Option<DecimalString>,
    /// Your reference, unique among the account's open orders (1 to 64 characters); the order
    /// id is used when omitted.
    #[serde(default)]
    pub client_order_id: Option<String>,
    /// Reject instead of taking liquidity.
    #[serde(default)]
    pub post_only: bool,
    /// What to do on a match against the same account.
    #[serde(default)]
    pub self_trade_prevention: SelfTradePrevention,
}

impl OrderRequest {
    /// Validates the request against the instrument and its limits and builds the order.
    pub fn to_order(
        &self,
        order_id: OrderId,
        instrument: &Instrument,
        checks: &Checks,
    ) -> Result<NewOrder, ApiError> {
        let client_order_id = match &self.client_order_id {
            Some(id) => {
                let printable = id.bytes().all(|b| b.is_ascii_graphic());
                if id.is_empty() || id.len() > MAX_CLIENT_ORDER_ID || !printable {
                    return Err(ApiError::bad_request(
                        "invalid_client_order_id",
                        format!("client_order_id must be 1 to {MAX_CLIENT_ORDER_ID} printable ASCII characters"),
                    )
                    .with_field("client_order_id"));
                }
                id.as_str().into()
            }
            None => order_id.to_string().into(),
        };
        let price = self
            .price
            .map(|price| instrument.price(price.0))
            .transpose()?;
        let (quantity, quote_quantity) = match (self.quantity, self.quote_quantity) {
            (Some(quantity), None) => (instrument.quantity(quantity.0)?, None),
            (None, Some(budget)) => (Quantity::ZERO, Some(instrument.quote_budget(budget.0)?)),
            (Some(_), Some(_)) => {
                return Err(Reject::field(
                    RejectReason::QuoteQuantityNotAllowed,
                    Field::QuoteQuantity,
                )
                .into());
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "quantity_required",
                    "an order needs a quantity (or, for a market buy, a quote_quantity)",
                )
                .with_field("quantity"));
            }
        };
        let time_in_force = self.time_in_force.unwrap_or(match self.order_type {
            OrderType::Limit => TimeInForce::Gtc,
            OrderType::Market => TimeInForce::Ioc,
        });
        let order = NewOrder {
            order_id,
            client_order_id,
            account: self.account.as_str().into(),
            symbol: instrument.symbol().clone(),
            side: self.side,
            order_type: self.order_type,
            time_in_force,
            price,
            quantity,
            post_only: self.post_only,
            self_trade_prevention: self.self_trade_prevention,
            quote_quantity,
        };
        checks.new_order(&order, None)?;
        Ok(order)
    }
}

/// `PATCH /v1/orders/{order_id}` body: what changes. Priority in the queue is kept only when
/// the quantity alone goes down.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmendRequest {
    /// The new limit price, a multiple of the tick size.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "65000.10", pattern = r"^-?[0-9]+(\.[0-9]+)?$", max_length = 40)]
    pub price: Option<DecimalString>,
    /// The new total quantity, filled quantity included; more than what has filled.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "0.02", pattern = r"^-?[0-9]+(\.[0-9]+)?$", max_length = 40)]
    pub quantity: Option<DecimalString>,
}

/// The processed outcome of a mass cancel (`DELETE /v1/orders` with `Prefer: wait`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MassCancelView {
    /// The account.
    pub account: String,
    /// The instrument, or none for every instrument.
    pub symbol: Option<String>,
    /// How many open orders were canceled.
    pub canceled: usize,
}

/// An order as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    /// Order id (a 64-bit integer, as a string).
    pub order_id: String,
    /// Client reference.
    pub client_order_id: String,
    /// Account.
    pub account: String,
    /// Instrument.
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// Limit or market.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Limit price.
    pub price: Option<String>,
    /// Total quantity; for a `quote_quantity` order, what the budget bought (sized when the
    /// order was accepted).
    pub quantity: String,
    /// A market buy's budget in the quote asset, if it was placed with one.
    pub quote_quantity: Option<String>,
    /// Quantity traded.
    pub filled_quantity: String,
    /// What the trades came to in the quote asset: the sum of price × quantity.
    pub filled_quote: String,
    /// Volume-weighted average trade price.
    pub average_price: Option<String>,
    /// Lifecycle state.
    pub status: OrderStatus,
    /// Why it was rejected.
    pub reject_reason: Option<RejectReason>,
    /// Why the system ended it.
    pub expire_reason: Option<ExpireReason>,
    /// Post-only.
    pub post_only: bool,
    /// Self-trade prevention mode.
    pub self_trade_prevention: SelfTradePrevention,
    /// When it was placed (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// Increases with every change.
    pub version: u64,
}

pub(crate) fn rfc3339(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

impl OrderView {
    /// Renders an order; `instrument` is `None` only for orders of an instrument no longer
    /// configured, whose numbers are then shown in ticks and lots.
    pub fn new(state: &OrderState, instrument: Option<&Instrument>) -> OrderView {
        let order = &state.order;
        let price = |p: oms_core::Price| match instrument {
            Some(i) => i.price_decimal(p).to_string(),
            None => p.0.to_string(),
        };
        let quantity = |q: Quantity| match instrument {
            Some(i) => i.quantity_decimal(q).to_string(),
            None => q.0.to_string(),
        };
        let notional = |units: u128| match instrument.and_then(|i| i.notional_decimal(units)) {
            Some(value) => value.to_string(),
            None => units.to_string(),
        };
        OrderView {
            order_id: order.order_id.to_string(),
            client_order_id: order.client_order_id.to_string(),
            account: order.account.to_string(),
            symbol: order.symbol.to_string(),
            side: order.side,
            order_type: order.order_type,
            time_in_force: order.time_in_force,
            price: order.price.map(price),
            quantity: quantity(order.quantity),
            quote_quantity: order.quote_quantity.map(notional),
            filled_quantity: quantity(state.filled),
            filled_quote: notional(state.filled_notional),
            average_price: instrument
                .and_then(|i| state.average_price(i))
                .map(|p| p.to_string()),
            status: state.status,
            reject_reason: state.reject.map(|r| r.reason),
            expire_reason: state.expire_reason,
            post_only: order.post_only,
            self_trade_prevention: order.self_trade_prevention,
            created_at: rfc3339(state.created_at.0),
            updated_at: rfc3339(state.updated_at.0),
            version: state.version,
        }
    }
}

/// A page of orders.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Which side of a trade an order was on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liquidity {
    /// The resting order.
    Maker,
    /// The incoming order.
    Taker,
}

/// One of the caller's fills: its own side of a trade and nothing of the counterparty's.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct FillView {
    /// The trade's sequence number in its book; both sides of a trade share it.
    pub trade_id: u64,
    /// Instrument.
    pub symbol: String,
    /// The caller's order.
    pub order_id: String,
    /// The caller's order's side.
    pub side: Side,
    /// Price (the maker's).
    pub price: String,
    /// Quantity.
    pub quantity: String,
    /// Whether the caller's order rested (maker) or came in (taker).
    pub liquidity: Liquidity,
    /// The fee charged, out of what the fill received.
    pub fee: String,
    /// The asset of the fee: the one received (base for a buy, quote for a sell).
    pub fee_asset: String,
    /// When (RFC 3339).
    pub executed_at: String,
}

impl FillView {
    /// The fills of `account` in a trade: one, or two for a trade between two of its orders.
    pub fn of(
        trade: &TradeRecord,
        account: &str,
        instrument: Option<&Instrument>,
        assets: &oms_core::funds::Assets,
    ) -> Vec<FillView> {
        let fee = |side: Side, liquidity: Liquidity| {
            let charged = match liquidity {
                Liquidity::Taker => &trade.taker_fee,
                Liquidity::Maker => &trade.maker_fee,
            };
            let received = instrument.map(|i| match side {
                Side::Buy => i.spec().base.to_string(),
                Side::Sell => i.spec().quote.to_string(),
            });
            let (asset, amount) = match charged {
                Some((asset, amount)) => (asset.clone(), *amount),
                None => (received.unwrap_or_default(), 0),
            };
            (assets.decimal(&asset, amount).to_string(), asset)
        };
        let fill = |order_id: OrderId, side: Side, liquidity: Liquidity| {
            let (fee, fee_asset) = fee(side, liquidity);
            FillView {
                trade_id: trade.seq,
                symbol: trade.symbol.clone(),
                order_id: order_id.to_string(),
                side,
                price: instrument.map_or(trade.price.0.to_string(), |i| {
                    i.price_decimal(trade.price).to_string()
                }),
                quantity: instrument.map_or(trade.quantity.0.to_string(), |i| {
                    i.quantity_decimal(trade.quantity).to_string()
                }),
                liquidity,
                fee,
                fee_asset,
                executed_at: rfc3339(trade.ts),
            }
        };
        let mut fills = Vec::with_capacity(1);
        if trade.taker_account == account {
            fills.push(fill(
                trade.taker_order_id,
                trade.taker_side,
                Liquidity::Taker,
            ));
        }
        if trade.maker_account == account {
            let side = match trade.taker_side {
                Side::Buy => Side::Sell,
                Side::Sell => Side::Buy,
            };
            fills.push(fill(trade.maker_order_id, side, Liquidity::Maker));
        }
        fills
    }
}

/// The caller's fills, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TradeList {
    /// The fills.
    pub trades: Vec<FillView>,
    /// Pass as `cursor` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

/// Aggregated book depth.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BookView {
    /// Instrument.
    pub symbol: String,
    /// The book's sequence number as of this view.
    pub seq: u64,
    /// `[price, quantity]`, best first.
    pub bids: Vec<[String; 2]>,
    /// `[price, quantity]`, best first.
    pub asks: Vec<[String; 2]>,
}

/// A public trade: what traded and which side took liquidity; no account, no order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MarketTradeView {
    /// The trade's sequence number in its book.
    pub trade_id: u64,
    /// Price (the maker's).
    pub price: String,
    /// Quantity.
    pub quantity: String,
    /// The side of the order that came in (the taker).
    pub taker_side: Side,
    /// When (RFC 3339).
    pub executed_at: String,
}

impl MarketTradeView {
    /// Renders a trade of `instrument`.
    pub fn new(trade: &TradeRecord, instrument: &Instrument) -> MarketTradeView {
        MarketTradeView {
            trade_id: trade.seq,
            price: instrument.price_decimal(trade.price).to_string(),
            quantity: instrument.quantity_decimal(trade.quantity).to_string(),
            taker_side: trade.taker_side,
            executed_at: rfc3339(trade.ts),
        }
    }
}

/// A price level: price and the quantity resting there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LevelView {
    /// Price.
    pub price: String,
    /// Quantity at that price.
    pub quantity: String,
}

/// Base volume in lots as a decimal.
fn volume(instrument: &Instrument, lots: u128) -> String {
    let lots = rust_decimal::Decimal::try_from_i128_with_scale(lots as i128, 0).ok();
    lots.and_then(|lots| lots.checked_mul(instrument.spec().lot_size))
        .map_or_else(|| lots.unwrap_or_default().to_string(), |v| v.to_string())
}

/// Quote volume in notional units as a decimal.
fn quote_volume(instrument: &Instrument, units: u128) -> String {
    instrument
        .notional_decimal(units)
        .map_or_else(|| units.to_string(), |value| value.to_string())
}

/// The ticker of an instrument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TickerView {
    /// Instrument.
    pub symbol: String,
    /// The last trade's price, if it ever traded.
    pub last_price: Option<String>,
    /// The best bid and its size.
    pub best_bid: Option<LevelView>,
    /// The best ask and its size.
    pub best_ask: Option<LevelView>,
    /// The first price of the window, if it traded in it.
    pub open: Option<String>,
    /// The highest price of the window.
    pub high: Option<String>,
    /// The lowest price of the window.
    pub low: Option<String>,
    /// Base traded in the window.
    pub volume: String,
    /// Quote traded in the window.
    pub quote_volume: String,
    /// Trades in the window.
    pub trades: u64,
    /// Where the window starts (RFC 3339): the start of the minute 24 hours back.
    pub window_start: String,
    /// When this view was made (RFC 3339).
    pub at: String,
}

impl TickerView {
    /// A ticker from its parts.
    pub fn new(
        instrument: &Instrument,
        last: Option<&TradeRecord>,
        depth: Option<&oms_core::Depth>,
        day: Option<&crate::store::Candle>,
        window_start: String,
        at: String,
    ) -> TickerView {
        let price = |p: oms_core::Price| instrument.price_decimal(p).to_string();
        let level = |level: Option<&(oms_core::Price, Quantity)>| {
            level.map(|(p, q)| LevelView {
                price: price(*p),
                quantity: instrument.quantity_decimal(*q).to_string(),
            })
        };
        TickerView {
            symbol: instrument.symbol().to_string(),
            last_price: last.map(|trade| price(trade.price)),
            best_bid: level(depth.and_then(|d| d.bids.first())),
            best_ask: level(depth.and_then(|d| d.asks.first())),
            open: day.map(|d| price(d.open)),
            high: day.map(|d| price(d.high)),
            low: day.map(|d| price(d.low)),
            volume: volume(instrument, day.map_or(0, |d| d.volume)),
            quote_volume: quote_volume(instrument, day.map_or(0, |d| d.quote_volume)),
            trades: day.map_or(0, |d| d.trades),
            window_start,
            at,
        }
    }
}

/// One minute of trades.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CandleView {
    /// The minute's start (RFC 3339).
    pub start: String,
    /// First price.
    pub open: String,
    /// Highest price.
    pub high: String,
    /// Lowest price.
    pub low: String,
    /// Last price.
    pub close: String,
    /// Base traded.
    pub volume: String,
    /// Quote traded.
    pub quote_volume: String,
    /// Trades.
    pub trades: u64,
}

impl CandleView {
    /// Renders a candle of `instrument`.
    pub fn new(candle: &crate::store::Candle, instrument: &Instrument) -> CandleView {
        let price = |p: oms_core::Price| instrument.price_decimal(p).to_string();
        CandleView {
            start: rfc3339(candle.minute * 60_000_000_000),
            open: price(candle.open),
            high: price(candle.high),
            low: price(candle.low),
            close: price(candle.close),
            volume: volume(instrument, candle.volume),
            quote_volume: quote_volume(instrument, candle.quote_volume),
            trades: candle.trades,
        }
    }
}

/// The instruments list.
pub type InstrumentList = Vec<InstrumentSpec>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_shows_only_the_callers_side() {
        let trade = TradeRecord {
            seq: 7,
            symbol: "BTC-USDT".into(),
            price: oms_core::Price(100),
            quantity: Quantity(3),
            taker_side: Side::Buy,
            taker_order_id: OrderId(1),
            taker_account: "bob".into(),
            maker_order_id: OrderId(2),
            maker_account: "alice".into(),
            ts: 0,
            taker_fee: Some(("BTC".into(), 3)),
            maker_fee: None,
        };
        let instrument = Instrument::new(crate::default_instruments().remove(0)).unwrap();
        let assets = oms_core::funds::Assets::new([&instrument]).unwrap();
        let of = |trade: &TradeRecord, account: &str| {
            FillView::of(trade, account, Some(&instrument), &assets)
        };
        let bob = of(&trade, "bob");
        let json = serde_json::to_string(&bob).unwrap();
        assert!(!json.contains("alice") && !json.contains("\"2\""), "{json}");
        assert_eq!(bob.len(), 1);
        assert_eq!(
            (bob[0].side, bob[0].liquidity),
            (Side::Buy, Liquidity::Taker)
        );
        assert_eq!(
            (bob[0].fee.as_str(), bob[0].fee_asset.as_str()),
            ("0.00003", "BTC")
        );
        let alice = of(&trade, "alice");
        assert_eq!(alice[0].order_id, "2");
        assert_eq!(
            (alice[0].side, alice[0].liquidity),
            (Side::Sell, Liquidity::Maker)
        );
        assert_eq!(
            (alice[0].fee.as_str(), alice[0].fee_asset.as_str()),
            ("0.0000000", "USDT"),
            "no fee recorded: zero, in the asset received"
        );
        assert!(of(&trade, "carol").is_empty());
        let own = TradeRecord {
            maker_account: "bob".into(),
            ..trade
        };
        assert_eq!(of(&own, "bob").len(), 2, "a self-trade is two fills");
    }

    #[test]
    fn decimal_strings_are_strict() {
        for good in ["1", "0.01", "65000.10", "-1.5", "0"] {
            assert!(parse_decimal(good).is_some(), "{good}");
        }
        for bad in [
            "",
            ".5",
            "1.",
            "1e5",
            "1_000",
            " 1",
            "+1",
            "0x10",
            "NaN",
            "1.2.3",
            "--1",
            "1234567890123456789012345678901234567890.5",
            "79228162514264337593543950336", // one above Decimal::MAX
            "0.00000000000000000000000000001", // would round
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
    }
}
