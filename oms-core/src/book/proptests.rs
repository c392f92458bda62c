//! Property tests on random command streams.
//!
//! Prices sit in a narrow range and a few accounts share the book, so streams cross, self-trade,
//! amend and cancel constantly. Each case checks, after every command:
//! the book is not crossed; the book's internal bookkeeping holds; quantity is conserved for
//! every order (filled + open + canceled/expired = ordered); every trade is within both orders'
//! limits; the book agrees with the order states folded from the events. Separately, a book
//! restored from a snapshot taken anywhere in a stream continues with exactly the events of an
//! uninterrupted run. Both properties run on a uniform mix of every kind of command and on the
//! shape of the matching benchmark's "exchange-core shape" stream.

use super::*;
use crate::OrderStatus;
use crate::order::OrderState;
use crate::test_support::{btc, limit};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

pub(crate) const ACCOUNTS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
pub(crate) enum Op {
    New {
        account: usize,
        side: Side,
        market: bool,
        /// A market buy sized by a budget of `price × quantity` instead.
        quote: bool,
        tif: TimeInForce,
        price: u64,
        quantity: u64,
        post_only: bool,
        stp: SelfTradePrevention,
    },
    Cancel {
        pick: usize,
        account: Option<usize>,
    },
    Amend {
        pick: usize,
        price: Option<u64>,
        quantity: Option<u64>,
    },
    /// A mass cancel of one account, of the book's symbol or of every symbol.
    CancelAll {
        account: usize,
        every: bool,
    },
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let tif = prop_oneof![
        6 => Just(TimeInForce::Gtc),
        2 => Just(TimeInForce::Ioc),
        2 => Just(TimeInForce::Fok)
    ];
    let stp = prop_oneof![
        Just(SelfTradePrevention::None),
        Just(SelfTradePrevention::ExpireTaker),
        Just(SelfTradePrevention::ExpireMaker),
        Just(SelfTradePrevention::ExpireBoth)
    ];
    let new = (
        0..ACCOUNTS.len(),
        side,
        (prop::bool::weighted(0.1), prop::bool::ANY),
        tif,
        95u64..=105,
        1u64..=20,
        prop::bool::weighted(0.15),
        stp,
    )
        .prop_map(
            |(account, side, (market, quote), tif, price, quantity, post_only, stp)| Op::New {
                account,
                side,
                market,
                quote,
                tif,
                price,
                quantity,
                post_only,
                stp,
            },
        );
    let cancel = (
        any::<usize>(),
        prop::option::weighted(0.1, 0..ACCOUNTS.len()),
    )
        .prop_map(|(pick, account)| Op::Cancel { pick, account });
    let amend = (
        any::<usize>(),
        prop::option::of(95u64..=105),
        prop::option::of(1u64..=25),
    )
        .prop_map(|(pick, price, quantity)| Op::Amend {
            pick,
            price,
            quantity,
        });
    let cancel_all = (0..ACCOUNTS.len(), prop::bool::ANY)
        .prop_map(|(account, every)| Op::CancelAll { account, every });
    prop_oneof![60 => new, 20 => cancel, 20 => amend, 1 => cancel_all]
}

/// The benchmark's "exchange-core shape": 44% passive GTC limits, 32% cancels, 12% price moves
/// and size changes, 10% IOC limits across the range, 2% GTC limits that cross.
pub(crate) fn shaped_op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let limit = |tif: TimeInForce, prices: std::ops::RangeInclusive<u64>| {
        let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
        (
            0..ACCOUNTS.len(),
            side,
            prices,
            1u64..=20,
            prop::bool::weighted(0.2),
        )
            .prop_map(move |(account, side, price, quantity, post_only)| Op::New {
                account,
                side,
                market: false,
                quote: false,
                tif,
                price,
                quantity,
                post_only: post_only && tif == TimeInForce::Gtc,
                stp: SelfTradePrevention::ExpireTaker,
            })
    };
    // Across the whole range: a buy at the top and a sell at the bottom take what rests.
    let crossing = |tif: TimeInForce| {
        (0..ACCOUNTS.len(), side.clone(), 1u64..=30).prop_map(move |(account, side, quantity)| {
            Op::New {
                account,
                side,
                market: false,
                quote: false,
                tif,
                price: if side == Side::Buy { 105 } else { 95 },
                quantity,
                post_only: false,
                stp: SelfTradePrevention::ExpireTaker,
            }
        })
    };
    let cancel = any::<usize>().prop_map(|pick| Op::Cancel {
        pick,
        account: None,
    });
    let amend = (any::<usize>(), prop::bool::ANY, 95u64..=105, 1u64..=20).prop_map(
        |(pick, move_price, price, quantity)| Op::Amend {
            pick,
            price: move_price.then_some(price),
            quantity: (!move_price).then_some(quantity),
        },
    );
    prop_oneof![
        44 => limit(TimeInForce::Gtc, 95..=105),
        32 => cancel,
        12 => amend,
        10 => crossing(TimeInForce::Ioc),
        2 => crossing(TimeInForce::Gtc),
    ]
}

pub(crate) fn limits() -> impl Strategy<Value = RiskLimits> {
    prop_oneof![
        Just(RiskLimits::default()),
        Just(RiskLimits {
            // 0.00015 USDT = price 1.00 (100 ticks) × 15 lots
            max_order_notional: Some(Decimal::new(15, 5)),
            price_band_percent: Some(Decimal::from(3)),
            max_open_orders: Some(4),
        }),
    ]
}

/// Turns ops into commands. Cancels and amendments pick among every order id placed so far,
/// open or not, so they also hit closed and unknown orders.
pub(crate) fn commands(ops: &[Op]) -> Vec<Command> {
    let mut placed: Vec<(u64, usize)> = Vec::new();
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let ts = Timestamp(i as u64);
        let action = match op {
            Op::New {
                account,
                side,
                market,
                quote,
                tif,
                price,
                quantity,
                post_only,
                stp,
            } => {
                let id = placed.len() as u64 + 1;
                placed.push((id, *account));
                let mut order = limit(id, ACCOUNTS[*account], *side, *price, *quantity);
                order.time_in_force = *tif;
                order.post_only = *post_only;
                order.self_trade_prevention = *stp;
                if *market {
                    order.order_type = OrderType::Market;
                    order.price = None;
                    if *tif == TimeInForce::Gtc {
                        order.time_in_force = TimeInForce::Ioc;
                    }
                    if *quote && *side == Side::Buy {
                        order.time_in_force = TimeInForce::Ioc;
                        order.quote_quantity = Some(u128::from(price * quantity));
                        order.quantity = Quantity::ZERO;
                    }
                }
                Action::New(order)
            }
            Op::Cancel { pick, account } => {
                let Some(&(id, owner)) = placed.get(pick % placed.len().max(1)) else {
                    continue;
                };
                Action::Cancel(CancelOrder {
                    order_id: OrderId(id),
                    account: ACCOUNTS[account.unwrap_or(owner)].into(),
                    symbol: "BTC-USDT".into(),
                })
            }
            Op::Amend {
                pick,
                price,
                quantity,
            } => {
                let Some(&(id, owner)) = placed.get(pick % placed.len().max(1)) else {
                    continue;
                };
                Action::Amend(AmendOrder {
                    order_id: OrderId(id),
                    account: ACCOUNTS[owner].into(),
                    symbol: "BTC-USDT".into(),
                    price: price.map(Price),
                    quantity: quantity.map(Quantity),
                })
            }
            Op::CancelAll { account, every } => Action::CancelAll(CancelAll {
                account: ACCOUNTS[*account].into(),
                symbol: (!every).then(|| "BTC-USDT".into()),
            }),
        };
        out.push(Command { ts, action });
    }
    out
}

fn new_book(limits: &RiskLimits) -> Book {
    Book::new(Instrument::new(btc()).unwrap(), limits).unwrap()
}

/// Applies one command and checks every per-command invariant against the folded states.
fn step(book: &mut Book, states: &mut BTreeMap<OrderId, OrderState>, command: &Command) {
    let mut records = Vec::new();
    book.apply(command, &mut records);
    book.orders.check([&book.bids, &book.asks]);
    if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
        assert!(bid < ask, "crossed book: bid {bid:?} ask {ask:?}");
    }
    let first_seq = book.seq() + 1 - records.len() as u64;
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.seq,
            first_seq + i as u64,
            "sequence numbers are consecutive"
        );
        if let Some(state) = OrderState::open(record) {
            assert!(states.insert(state.order.order_id, state).is_none());
            continue;
        }
        match &record.event {
            Event::Trade(trade) => {
                let (buy, sell) = match trade.taker.side {
                    Side::Buy => (&trade.taker, &trade.maker),
                    Side::Sell => (&trade.maker, &trade.taker),
                };
                assert_ne!(trade.taker.side, trade.maker.side);
                assert!(!trade.quantity.is_zero());
                for (fill, side) in [(buy, Side::Buy), (sell, Side::Sell)] {
                    if let Some(limit) = states[&fill.order_id].price() {
                        assert!(
                            side.accepts(limit, trade.price),
                            "trade {trade:?} beyond {limit:?}"
                        );
                    }
                }
                if trade.taker.account == trade.maker.account {
                    let stp = states[&trade.taker.order_id].order.self_trade_prevention;
                    assert_eq!(stp, SelfTradePrevention::None, "self-trade under {stp:?}");
                }
            }
            Event::Canceled {
                order_id, quantity, ..
            }
            | Event::Expired {
                order_id, quantity, ..
            } => {
                // what closes is exactly what was open
                assert_eq!(states[order_id].leaves, *quantity);
                let state = &states[order_id];
                assert_eq!(state.filled + *quantity, state.order.quantity);
            }
            _ => {}
        }
        for order_id in record.event.order_ids() {
            let state = states
                .get_mut(&order_id)
                .expect("event about an unknown order");
            assert!(state.apply(record));
        }
    }
    for state in states.values() {
        let resting = book.order(state.order.order_id);
        if state.status.is_open() {
            assert_eq!(state.filled + state.leaves, state.order.quantity);
            let resting = resting.unwrap_or_else(|| panic!("open order missing: {state:?}"));
            assert_eq!(resting.leaves, state.leaves);
            assert_eq!(resting.quantity, state.order.quantity);
            assert_eq!(Some(resting.price), state.order.price);
        } else {
            assert!(resting.is_none(), "closed order still resting: {state:?}");
            assert!(state.leaves.is_zero());
            assert!(state.filled <= state.order.quantity);
            if state.status == OrderStatus::Filled {
                assert_eq!(state.filled, state.order.quantity);
            }
        }
    }
}

fn run_all(book: &mut Book, commands: &[Command]) -> Vec<EventRecord> {
    let mut events = Vec::new();
    for command in commands {
        book.apply(command, &mut events);
    }
    events
}

fn invariants_hold(limits: &RiskLimits, ops: &[Op]) {
    let mut book = new_book(limits);
    let mut states = BTreeMap::new();
    for command in commands(ops) {
        step(&mut book, &mut states, &command);
    }
}

fn replay_equals_run(
    limits: &RiskLimits,
    ops: &[Op],
    split: prop::sample::Index,
) -> Result<(), TestCaseError> {
    let commands = commands(ops);
    let split = split.index(commands.len() + 1);
    let mut whole = new_book(limits);
    let expected = run_all(&mut whole, &commands);

    let mut first = new_book(limits);
    let mut events = run_all(&mut first, &commands[..split]);
    let bytes = serde_json::to_vec(&first.snapshot()).unwrap();
    drop(first);
    let snapshot: BookSnapshot = serde_json::from_slice(&bytes).unwrap();
    let mut restored = Book::restore(Instrument::new(btc()).unwrap(), limits, snapshot).unwrap();
    events.extend(run_all(&mut restored, &commands[split..]));

    prop_assert_eq!(events, expected);
    prop_assert_eq!(restored.snapshot(), whole.snapshot());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_after_every_command(
        limits in limits(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        invariants_hold(&limits, &ops);
    }

    #[test]
    fn invariants_hold_on_the_benchmark_shape(
        limits in limits(),
        ops in prop::collection::vec(shaped_op(), 1..300),
    ) {
        invariants_hold(&limits, &ops);
    }

    #[test]
    fn snapshot_and_replay_equal_an_uninterrupted_run(
        limits in limits(),
        ops in prop::collection::vec(op(), 1..300),
        split in any::<prop::sample::Index>(),
    ) {
        replay_equals_run(&limits, &ops, split)?;
    }

    #[test]
    fn snapshot_and_replay_on_the_benchmark_shape(
        limits in limits(),
        ops in prop::collection::vec(shaped_op(), 1..300),
        split in any::<prop::sample::Index>(),
    ) {
        replay_equals_run(&limits, &ops, split)?;
    }
}
