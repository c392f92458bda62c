//! Builders shared by the unit and property tests.

use crate::book::Book;
use crate::command::{Action, AmendOrder, CancelOrder, Command, NewOrder};
use crate::instrument::{Instrument, InstrumentSpec, InstrumentStatus};
use crate::risk::RiskLimits;
use crate::types::{
    OrderId, OrderType, Price, Quantity, SelfTradePrevention, Side, TimeInForce, Timestamp,
};
use rust_decimal::Decimal;

/// BTC-USDT: tick 0.01, lot 0.00001, no minimum notional so tests may use small numbers.
pub fn btc() -> InstrumentSpec {
    InstrumentSpec {
        symbol: "BTC-USDT".into(),
        base: "BTC".into(),
        quote: "USDT".into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 5),
        min_quantity: Decimal::new(1, 5),
        max_quantity: Decimal::from(100),
        min_notional: Decimal::ZERO,
        price_band_percent: None,
        max_price: None,
        reference_price: None,
        maker_fee_bps: 0,
        taker_fee_bps: 0,
        status: InstrumentStatus::Trading,
    }
}

pub fn book() -> Book {
    book_with(RiskLimits::default())
}

pub fn book_with(limits: RiskLimits) -> Book {
    Book::new(Instrument::new(btc()).unwrap(), &limits).unwrap()
}

pub fn limit(id: u64, account: &str, side: Side, price: u64, quantity: u64) -> NewOrder {
    NewOrder {
        order_id: OrderId(id),
        client_order_id: format!("c{id}").into(),
        account: account.into(),
        symbol: "BTC-USDT".into(),
        side,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        price: Some(Price(price)),
        quantity: Quantity(quantity),
        post_only: false,
        self_trade_prevention: SelfTradePrevention::None,
        quote_quantity: None,
    }
}

/// A market buy for a budget of `notional` units (ticks × lots).
pub fn market_quote(id: u64, account: &str, notional: u128) -> NewOrder {
    NewOrder {
        quantity: Quantity::ZERO,
        quote_quantity: Some(notional),
        ..market(id, account, Side::Buy, 0)
    }
}

pub fn market(id: u64, account: &str, side: Side, quantity: u64) -> NewOrder {
    NewOrder {
        order_type: OrderType::Market,
        time_in_force: TimeInForce::Ioc,
        price: None,
        ..limit(id, account, side, 0, quantity)
    }
}

pub fn new(order: NewOrder) -> Command {
    Command {
        ts: Timestamp(order.order_id.0),
        action: Action::New(order),
    }
}

pub fn cancel(id: u64, account: &str) -> Command {
    Command {
        ts: Timestamp(0),
        action: Action::Cancel(CancelOrder {
            order_id: OrderId(id),
            account: account.into(),
            symbol: "BTC-USDT".into(),
        }),
    }
}

pub fn amend(id: u64, account: &str, price: Option<u64>, quantity: Option<u64>) -> Command {
    Command {
        ts: Timestamp(0),
        action: Action::Amend(AmendOrder {
            order_id: OrderId(id),
            account: account.into(),
            symbol: "BTC-USDT".into(),
            price: price.map(Price),
            quantity: quantity.map(Quantity),
        }),
    }
}

/// A mass cancel of `account`'s orders, on `symbol` or on every instrument.
pub fn cancel_all(account: &str, symbol: Option<&str>) -> Command {
    Command {
        ts: Timestamp(0),
        action: Action::CancelAll(crate::command::CancelAll {
            account: account.into(),
            symbol: symbol.map(Into::into),
        }),
    }
}
