//! The OMS's views in Binance's shapes: symbols without a dash (`BTC-USDT` is `BTCUSDT`),
//! enums in upper case, times in milliseconds, orders and fills with Binance's field names.
//! Pure: everything comes from the OMS's own views.

use crate::api::Market;
use crate::api::funds::LedgerEntryView;
use crate::api::model::{FillView, Liquidity, OrderView};
use oms_core::{OrderStatus, OrderType, Side, Symbol};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::str::FromStr;

/// An instrument's Binance symbol: base and quote asset, joined.
pub fn symbol_of(market: &Market) -> String {
    let spec = market.instrument.spec();
    format!("{}{}", spec.base, spec.quote)
}

/// The instrument a Binance symbol names.
pub fn market_of<'a>(markets: &'a BTreeMap<Symbol, Market>, symbol: &str) -> Option<&'a Market> {
    markets.values().find(|market| symbol_of(market) == symbol)
}

/// The Binance symbol of an OMS symbol (itself when not configured any more).
pub fn binance_symbol(markets: &BTreeMap<Symbol, Market>, symbol: &str) -> String {
    markets
        .get(symbol)
        .map_or_else(|| symbol.replace('-', ""), symbol_of)
}

/// A snake_case enum as Binance spells it: `partially_filled` is `PARTIALLY_FILLED`.
pub fn upper<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text.to_uppercase(),
        _ => String::new(),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (0 if it does not parse).
pub fn millis(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_millis() as u64)
}

/// Binance's order type: a post-only limit order is `LIMIT_MAKER`.
pub fn order_type(order: &OrderView) -> &'static str {
    match (order.order_type, order.post_only) {
        (OrderType::Market, _) => "MARKET",
        (OrderType::Limit, true) => "LIMIT_MAKER",
        (OrderType::Limit, false) => "LIMIT",
    }
}

/// Binance's order status: an order ended by self-trade prevention is `EXPIRED_IN_MATCH`.
pub fn status(order: &OrderView) -> String {
    let by_prevention = order.status == OrderStatus::Expired
        && order
            .expire_reason
            .is_some_and(|reason| upper(&reason) == "SELF_TRADE_PREVENTION");
    if by_prevention {
        "EXPIRED_IN_MATCH".into()
    } else {
        upper(&order.status)
    }
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

/// An order as `GET /api/v3/order` shows it.
pub fn order(markets: &BTreeMap<Symbol, Market>, order: &OrderView) -> Value {
    let created = millis(&order.created_at);
    json!({
        "symbol": binance_symbol(markets, &order.symbol),
        "orderId": order.order_id.parse::<u64>().unwrap_or_default(),
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": order.price.clone().unwrap_or_else(|| "0".into()),
        "origQty": order.quantity,
        "executedQty": order.filled_quantity,
        "cummulativeQuoteQty": order.filled_quote,
        "status": status(order),
        "timeInForce": upper(&order.time_in_force),
        "type": order_type(order),
        "side": upper(&order.side),
        "stopPrice": "0",
        "icebergQty": "0",
        "time": created,
        "updateTime": millis(&order.updated_at),
        "isWorking": order.status.is_open(),
        "workingTime": created,
        "origQuoteOrderQty": order.quote_quantity.clone().unwrap_or_else(|| "0".into()),
        "selfTradePreventionMode": upper(&order.self_trade_prevention),
    })
}

/// The answer to a placed order: `ACK` (the order id), `RESULT` (its state) or `FULL` (its
/// state and fills).
pub fn placed(
    markets: &BTreeMap<Symbol, Market>,
    view: &OrderView,
    fills: Option<&[FillView]>,
) -> Value {
    let mut out = order(markets, view);
    if let Value::Object(map) = &mut out {
        map.insert("transactTime".into(), json!(millis(&view.updated_at)));
        for gone in ["time", "updateTime", "isWorking", "stopPrice", "icebergQty"] {
            map.remove(gone);
        }
        if let Some(fills) = fills {
            let fills: Vec<Value> = fills
                .iter()
                .map(|fill| {
                    json!({
                        "price": fill.price,
                        "qty": fill.quantity,
                        "commission": fill.fee,
                        "commissionAsset": fill.fee_asset,
                        "tradeId": fill.trade_id,
                    })
                })
                .collect();
            map.insert("fills".into(), Value::Array(fills));
        }
    }
    out
}

/// The `ACK` answer.
pub fn ack(symbol: &str, order_id: u64, client_order_id: &str, at_ms: u64) -> Value {
    json!({
        "symbol": symbol,
        "orderId": order_id,
        "orderListId": -1,
        "clientOrderId": client_order_id,
        "transactTime": at_ms,
    })
}

/// One of the account's trades, as `GET /api/v3/myTrades` shows it.
pub fn my_trade(markets: &BTreeMap<Symbol, Market>, fill: &FillView) -> Value {
    let quote = decimal(&fill.price) * decimal(&fill.quantity);
    json!({
        "symbol": binance_symbol(markets, &fill.symbol),
        "id": fill.trade_id,
        "orderId": fill.order_id.parse::<u64>().unwrap_or_default(),
        "orderListId": -1,
        "price": fill.price,
        "qty": fill.quantity,
        "quoteQty": quote.normalize().to_string(),
        "commission": fill.fee,
        "commissionAsset": fill.fee_asset,
        "time": millis(&fill.executed_at),
        "isBuyer": fill.side == Side::Buy,
        "isMaker": fill.liquidity == Liquidity::Maker,
        "isBestMatch": true,
    })
}

/// The user data stream's `executionReport` for an order's new state, with the fill that
/// changed it (if a trade did).
pub fn execution_report(
    markets: &BTreeMap<Symbol, Market>,
    order: &OrderView,
    fill: Option<&FillView>,
    now_ms: u64,
) -> Value {
    let execution = match (fill, order.status) {
        (Some(_), _) => "TRADE".to_string(),
        (None, OrderStatus::New) if order.version <= 1 => "NEW".into(),
        (None, OrderStatus::New | OrderStatus::PartiallyFilled) => "REPLACED".into(),
        (None, OrderStatus::Expired) if status(order) == "EXPIRED_IN_MATCH" => {
            "TRADE_PREVENTION".into()
        }
        (None, other) => upper(&other),
    };
    let reject = order
        .reject_reason
        .map_or_else(|| "NONE".to_string(), |reason| upper(&reason));
    let (last_qty, last_price, fee, fee_asset, trade_id, maker, last_quote) = match fill {
        Some(fill) => (
            fill.quantity.clone(),
            fill.price.clone(),
            fill.fee.clone(),
            Value::String(fill.fee_asset.clone()),
            json!(fill.trade_id),
            fill.liquidity == Liquidity::Maker,
            (decimal(&fill.price) * decimal(&fill.quantity))
                .normalize()
                .to_string(),
        ),
        None => (
            "0".into(),
            "0".into(),
            "0".into(),
            Value::Null,
            json!(-1),
            false,
            "0".into(),
        ),
    };
    let created = millis(&order.created_at);
    json!({
        "e": "executionReport",
        "E": now_ms,
        "s": binance_symbol(markets, &order.symbol),
        "c": order.client_order_id,
        "S": upper(&order.side),
        "o": order_type(order),
        "f": upper(&order.time_in_force),
        "q": order.quantity,
        "p": order.price.clone().unwrap_or_else(|| "0".into()),
        "P": "0",
        "F": "0",
        "g": -1,
        "C": "",
        "x": execution,
        "X": status(order),
        "r": reject,
        "i": order.order_id.parse::<u64>().unwrap_or_default(),
        "l": last_qty,
        "z": order.filled_quantity,
        "L": last_price,
        "n": fee,
        "N": fee_asset,
        "T": fill.map_or_else(|| millis(&order.updated_at), |fill| millis(&fill.executed_at)),
        "t": trade_id,
        "I": order.version,
        "w": order.status.is_open(),
        "m": maker,
        "M": false,
        "O": created,
        "Z": order.filled_quote,
        "Y": last_quote,
        "Q": order.quote_quantity.clone().unwrap_or_else(|| "0".into()),
        "W": created,
        "V": upper(&order.self_trade_prevention),
    })
}

/// The user data stream's `outboundAccountPosition` for a balance after a change.
pub fn account_position(entry: &LedgerEntryView, now_ms: u64) -> Value {
    json!({
        "e": "outboundAccountPosition",
        "E": now_ms,
        "u": millis(&entry.at),
        "B": [{"a": entry.asset, "f": entry.available, "l": entry.held}],
    })
}

/// The user data stream's `balanceUpdate`, for deposits and withdrawals.
pub fn balance_update(entry: &LedgerEntryView, now_ms: u64) -> Value {
    json!({
        "e": "balanceUpdate",
        "E": now_ms,
        "a": entry.asset,
        "d": entry.available_change,
        "T": millis(&entry.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_and_times_as_binance_spells_them() {
        assert_eq!(upper(&OrderStatus::PartiallyFilled), "PARTIALLY_FILLED");
        assert_eq!(upper(&oms_core::TimeInForce::Gtc), "GTC");
        assert_eq!(
            upper(&oms_core::SelfTradePrevention::ExpireTaker),
            "EXPIRE_TAKER"
        );
        assert_eq!(millis("2026-11-29T15:00:00.123456789Z"), 1_795_964_400_123);
        assert_eq!(millis("not a time"), 0);
    }
}
