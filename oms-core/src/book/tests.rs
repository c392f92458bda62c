use super::*;
use crate::order::OrderState;
use crate::test_support::{
    amend, book, book_with, btc, cancel, cancel_all, limit, market, market_quote, new,
};
use crate::{InstrumentSpec, OrderStatus};
use rust_decimal::Decimal;

fn run(book: &mut Book, command: Command) -> Vec<Event> {
    let mut records = Vec::new();
    book.apply(&command, &mut records);
    book.orders.check([&book.bids, &book.asks]);
    records.into_iter().map(|record| record.event).collect()
}

/// `(price, quantity, taker id, maker id)` of every trade.
fn trades(events: &[Event]) -> Vec<(u64, u64, u64, u64)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Trade(t) => Some((
                t.price.0,
                t.quantity.0,
                t.taker.order_id.0,
                t.maker.order_id.0,
            )),
            _ => None,
        })
        .collect()
}

fn expired(events: &[Event]) -> Vec<(u64, u64, ExpireReason)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Expired {
                order_id,
                quantity,
                reason,
                ..
            } => Some((order_id.0, quantity.0, *reason)),
            _ => None,
        })
        .collect()
}

fn rejected(events: &[Event]) -> Option<RejectReason> {
    events.iter().find_map(|event| match event {
        Event::Rejected { reject, .. }
        | Event::CancelRejected { reject, .. }
        | Event::AmendRejected { reject, .. } => Some(reject.reason),
        _ => None,
    })
}

type Levels = Vec<(u64, u64)>;

/// `(price, quantity)` levels of bids and asks, best first.
fn levels(book: &Book) -> (Levels, Levels) {
    let depth = book.depth(usize::MAX);
    let flat = |side: Vec<(Price, Quantity)>| side.into_iter().map(|(p, q)| (p.0, q.0)).collect();
    (flat(depth.bids), flat(depth.asks))
}

fn with_stp(mut order: NewOrder, stp: SelfTradePrevention) -> NewOrder {
    order.self_trade_prevention = stp;
    order
}

fn with_tif(mut order: NewOrder, tif: TimeInForce) -> NewOrder {
    order.time_in_force = tif;
    order
}

#[test]
fn limit_orders_rest_and_depth_aggregates_levels() {
    let mut b = book();
    let events = run(&mut b, new(limit(1, "a", Side::Buy, 100, 5)));
    assert!(matches!(events.as_slice(), [Event::Accepted { .. }]));
    run(&mut b, new(limit(2, "b", Side::Buy, 100, 7)));
    run(&mut b, new(limit(3, "b", Side::Buy, 99, 1)));
    run(&mut b, new(limit(4, "c", Side::Sell, 101, 2)));
    assert_eq!(levels(&b), (vec![(100, 12), (99, 1)], vec![(101, 2)]));
    assert_eq!(b.depth(1).bids, vec![(Price(100), Quantity(12))]);
    assert_eq!(b.depth(1).seq, 4);
    assert_eq!(b.open_orders(), 4);
    assert_eq!(b.open_orders_of("b"), 2);
}

#[test]
fn partial_fills_across_many_levels_at_maker_prices() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Sell, 100, 100)));
    run(&mut b, new(limit(2, "m", Side::Sell, 101, 100)));
    run(&mut b, new(limit(3, "m", Side::Sell, 102, 100)));
    run(&mut b, new(limit(4, "m", Side::Sell, 103, 100)));
    let events = run(&mut b, new(limit(9, "t", Side::Buy, 102, 250)));
    assert_eq!(
        trades(&events),
        vec![(100, 100, 9, 1), (101, 100, 9, 2), (102, 50, 9, 3)]
    );
    // the maker at 102 keeps 50; the taker is filled and does not rest
    assert_eq!(levels(&b), (vec![], vec![(102, 50), (103, 100)]));
    assert_eq!(b.last_trade(), Some(Price(102)));
    // a taker larger than what its limit reaches rests its remainder at its price
    let events = run(&mut b, new(limit(10, "t", Side::Buy, 102, 80)));
    assert_eq!(trades(&events), vec![(102, 50, 10, 3)]);
    assert_eq!(levels(&b), (vec![(102, 30)], vec![(103, 100)]));
    let Event::Trade(last) = &events[1] else {
        panic!("expected a trade: {events:?}")
    };
    assert_eq!(last.taker.leaves, Quantity(30));
    assert_eq!(last.maker.leaves, Quantity(0));
}

#[test]
fn time_priority_within_a_level() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Buy, 100, 5)));
    run(&mut b, new(limit(2, "b", Side::Buy, 100, 5)));
    run(&mut b, new(limit(3, "c", Side::Buy, 101, 1)));
    let events = run(&mut b, new(limit(4, "d", Side::Sell, 100, 8)));
    assert_eq!(
        trades(&events),
        vec![(101, 1, 4, 3), (100, 5, 4, 1), (100, 2, 4, 2)]
    );
    assert_eq!(b.order(OrderId(2)).map(|o| o.leaves), Some(Quantity(3)));
}

#[test]
fn market_order_sweeps_and_its_remainder_expires() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Buy, 100, 3)));
    run(&mut b, new(limit(2, "m", Side::Buy, 90, 3)));
    let events = run(&mut b, new(market(3, "t", Side::Sell, 10)));
    assert_eq!(trades(&events), vec![(100, 3, 3, 1), (90, 3, 3, 2)]);
    assert_eq!(expired(&events), vec![(3, 4, ExpireReason::NoLiquidity)]);
    assert_eq!(levels(&b), (vec![], vec![]));
}

#[test]
fn market_order_stops_at_the_price_band() {
    let mut b = book_with(RiskLimits {
        price_band_percent: Some(Decimal::from(5)),
        ..RiskLimits::default()
    });
    run(&mut b, new(limit(1, "m", Side::Sell, 1000, 1)));
    run(&mut b, new(limit(2, "t", Side::Buy, 1000, 1))); // reference 1000
    run(&mut b, new(limit(3, "m", Side::Sell, 1040, 1)));
    run(&mut b, new(limit(4, "m", Side::Sell, 1050, 1)));
    // 1051 is outside the band, so it cannot even rest
    let events = run(&mut b, new(limit(5, "m", Side::Sell, 1051, 1)));
    assert_eq!(rejected(&events), Some(RejectReason::PriceOutsideBand));
    assert_eq!(
        rejected(&run(&mut b, new(limit(6, "m", Side::Buy, 949, 1)))),
        Some(RejectReason::PriceOutsideBand)
    );
    let events = run(&mut b, new(market(7, "t", Side::Buy, 5)));
    assert_eq!(trades(&events), vec![(1040, 1, 7, 3), (1050, 1, 7, 4)]);
    assert_eq!(expired(&events), vec![(7, 3, ExpireReason::NoLiquidity)]);
}

#[test]
fn configured_reference_price_bands_before_the_first_trade() {
    let spec = InstrumentSpec {
        max_price: None,
        reference_price: Some(Decimal::from(10)),
        price_band_percent: Some(Decimal::from(10)),
        ..btc()
    };
    let mut b = Book::new(Instrument::new(spec).unwrap(), &RiskLimits::default()).unwrap();
    assert_eq!(b.reference_price(), Some(Price(1000)));
    assert_eq!(
        rejected(&run(&mut b, new(limit(1, "a", Side::Buy, 1101, 1)))),
        Some(RejectReason::PriceOutsideBand)
    );
    assert_eq!(
        rejected(&run(&mut b, new(limit(2, "a", Side::Buy, 1100, 1)))),
        None
    );
}

#[test]
fn ioc_trades_what_it_can_and_expires_the_rest() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Sell, 100, 4)));
    let events = run(
        &mut b,
        new(with_tif(
            limit(2, "t", Side::Buy, 100, 10),
            TimeInForce::Ioc,
        )),
    );
    assert_eq!(trades(&events), vec![(100, 4, 2, 1)]);
    assert_eq!(
        expired(&events),
        vec![(2, 6, ExpireReason::ImmediateOrCancel)]
    );
    // nothing to trade: accepted, then expired whole; it never rests
    let events = run(
        &mut b,
        new(with_tif(
            limit(3, "t", Side::Buy, 100, 10),
            TimeInForce::Ioc,
        )),
    );
    assert!(matches!(events[0], Event::Accepted { .. }));
    assert_eq!(
        expired(&events),
        vec![(3, 10, ExpireReason::ImmediateOrCancel)]
    );
    assert_eq!(b.open_orders(), 0);
}

#[test]
fn fok_that_cannot_fill_completely_trades_nothing() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Sell, 100, 4)));
    run(&mut b, new(limit(2, "m", Side::Sell, 101, 4)));
    run(&mut b, new(limit(3, "m", Side::Sell, 103, 4)));
    let before = b.snapshot();
    let events = run(
        &mut b,
        new(with_tif(limit(4, "t", Side::Buy, 101, 9), TimeInForce::Fok)),
    );
    assert_eq!(trades(&events), vec![]);
    assert_eq!(expired(&events), vec![(4, 9, ExpireReason::FillOrKill)]);
    assert_eq!(b.snapshot().bids, before.bids);
    assert_eq!(b.snapshot().asks, before.asks);
    // exactly reachable: fills across both levels
    let events = run(
        &mut b,
        new(with_tif(limit(5, "t", Side::Buy, 101, 8), TimeInForce::Fok)),
    );
    assert_eq!(trades(&events), vec![(100, 4, 5, 1), (101, 4, 5, 2)]);
    assert_eq!(expired(&events), vec![]);
    // a market FOK larger than the book expires whole
    let events = run(
        &mut b,
        new(with_tif(market(6, "t", Side::Buy, 5), TimeInForce::Fok)),
    );
    assert_eq!(expired(&events), vec![(6, 5, ExpireReason::FillOrKill)]);
    assert_eq!(levels(&b), (vec![], vec![(103, 4)]));
}

#[test]
fn fok_counts_only_what_self_trade_prevention_lets_it_reach() {
    let mut b = book();
    run(&mut b, new(limit(1, "t", Side::Sell, 100, 4))); // own order first in line
    run(&mut b, new(limit(2, "m", Side::Sell, 100, 4)));
    let fok = |id, stp| {
        new(with_stp(
            with_tif(limit(id, "t", Side::Buy, 100, 4), TimeInForce::Fok),
            stp,
        ))
    };
    // expire_taker would stop at its own order: nothing reachable
    let events = run(&mut b, fok(3, SelfTradePrevention::ExpireTaker));
    assert_eq!(expired(&events), vec![(3, 4, ExpireReason::FillOrKill)]);
    assert_eq!(b.open_orders(), 2);
    // expire_maker skips it (expiring it) and fills against the other account
    let events = run(&mut b, fok(4, SelfTradePrevention::ExpireMaker));
    assert_eq!(
        expired(&events),
        vec![(1, 4, ExpireReason::SelfTradePrevention)]
    );
    assert_eq!(trades(&events), vec![(100, 4, 4, 2)]);
}

#[test]
fn post_only_rests_or_is_rejected_if_it_would_take() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Sell, 100, 4)));
    let mut order = limit(2, "t", Side::Buy, 100, 1);
    order.post_only = true;
    let events = run(&mut b, new(order.clone()));
    assert_eq!(rejected(&events), Some(RejectReason::PostOnlyWouldTake));
    assert!(matches!(events.as_slice(), [Event::Rejected { .. }]));
    assert_eq!(b.open_orders(), 1);
    order.order_id = OrderId(3);
    order.price = Some(Price(99));
    let events = run(&mut b, new(order));
    assert!(matches!(events.as_slice(), [Event::Accepted { .. }]));
    assert_eq!(levels(&b), (vec![(99, 1)], vec![(100, 4)]));
}

#[test]
fn self_trade_prevention_none_lets_an_account_trade_with_itself() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Sell, 100, 4)));
    let events = run(&mut b, new(limit(2, "a", Side::Buy, 100, 4)));
    assert_eq!(trades(&events), vec![(100, 4, 2, 1)]);
}

#[test]
fn self_trade_prevention_expire_taker() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Sell, 100, 2)));
    run(&mut b, new(limit(2, "a", Side::Sell, 100, 4)));
    run(&mut b, new(limit(3, "m", Side::Sell, 100, 4)));
    let taker = with_stp(
        limit(4, "a", Side::Buy, 100, 10),
        SelfTradePrevention::ExpireTaker,
    );
    let events = run(&mut b, new(taker));
    assert_eq!(trades(&events), vec![(100, 2, 4, 1)]);
    assert_eq!(
        expired(&events),
        vec![(4, 8, ExpireReason::SelfTradePrevention)]
    );
    assert_eq!(levels(&b), (vec![], vec![(100, 8)]));
    assert!(b.order(OrderId(2)).is_some());
}

#[test]
fn self_trade_prevention_expire_maker() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Sell, 100, 4)));
    run(&mut b, new(limit(2, "m", Side::Sell, 100, 4)));
    let taker = with_stp(
        limit(3, "a", Side::Buy, 100, 10),
        SelfTradePrevention::ExpireMaker,
    );
    let events = run(&mut b, new(taker));
    assert_eq!(
        expired(&events),
        vec![(1, 4, ExpireReason::SelfTradePrevention)]
    );
    assert_eq!(trades(&events), vec![(100, 4, 3, 2)]);
    // the taker's remainder rests
    assert_eq!(levels(&b), (vec![(100, 6)], vec![]));
    assert_eq!(b.open_orders_of("a"), 1);
}

#[test]
fn self_trade_prevention_expire_both() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Sell, 100, 1)));
    run(&mut b, new(limit(2, "a", Side::Sell, 100, 4)));
    let taker = with_stp(
        limit(3, "a", Side::Buy, 100, 10),
        SelfTradePrevention::ExpireBoth,
    );
    let events = run(&mut b, new(taker));
    assert_eq!(trades(&events), vec![(100, 1, 3, 1)]);
    assert_eq!(
        expired(&events),
        vec![
            (2, 4, ExpireReason::SelfTradePrevention),
            (3, 9, ExpireReason::SelfTradePrevention)
        ]
    );
    assert_eq!(levels(&b), (vec![], vec![]));
}

#[test]
fn a_mass_cancel_ends_every_open_order_of_the_account_oldest_first() {
    let mut b = book();
    run(&mut b, new(limit(7, "a", Side::Buy, 100, 5)));
    run(&mut b, new(limit(3, "a", Side::Sell, 110, 5)));
    run(&mut b, new(limit(4, "b", Side::Buy, 100, 2)));
    run(&mut b, new(limit(5, "a", Side::Sell, 120, 5)));
    // order 3 partly filled: its remainder is what the cancel reports
    run(&mut b, new(limit(6, "c", Side::Buy, 110, 2)));
    let canceled: Vec<(u64, u64)> = run(&mut b, cancel_all("a", None))
        .into_iter()
        .map(|event| match event {
            Event::Canceled {
                order_id,
                account,
                quantity,
            } => {
                assert_eq!(account.as_str(), "a");
                (order_id.0, quantity.0)
            }
            other => panic!("only cancels expected, got {other:?}"),
        })
        .collect();
    assert_eq!(canceled, vec![(3, 3), (5, 5), (7, 5)]);
    assert_eq!(levels(&b), (vec![(100, 2)], vec![]));
    // nothing left: a second mass cancel decides nothing
    assert!(run(&mut b, cancel_all("a", Some("BTC-USDT"))).is_empty());
}

#[test]
fn amend_quantity_down_keeps_queue_priority() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Buy, 100, 10)));
    run(&mut b, new(limit(2, "b", Side::Buy, 100, 10)));
    let events = run(&mut b, amend(1, "a", None, Some(6)));
    assert!(matches!(
        events.as_slice(),
        [Event::Amended {
            priority_kept: true,
            leaves: Quantity(6),
            ..
        }]
    ));
    assert_eq!(levels(&b).0, vec![(100, 16)]);
    let events = run(&mut b, new(limit(3, "c", Side::Sell, 100, 7)));
    assert_eq!(trades(&events), vec![(100, 6, 3, 1), (100, 1, 3, 2)]);
}

#[test]
fn amend_quantity_up_or_price_change_loses_priority() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Buy, 100, 10)));
    run(&mut b, new(limit(2, "b", Side::Buy, 100, 10)));
    let events = run(&mut b, amend(1, "a", None, Some(12)));
    assert!(matches!(
        events.as_slice(),
        [Event::Amended {
            priority_kept: false,
            ..
        }]
    ));
    let events = run(&mut b, new(limit(3, "c", Side::Sell, 100, 1)));
    assert_eq!(trades(&events), vec![(100, 1, 3, 2)]);
    // move 2 away and back: it is now behind 1
    run(&mut b, amend(2, "b", Some(99), None));
    assert_eq!(levels(&b).0, vec![(100, 12), (99, 9)]);
    run(&mut b, amend(2, "b", Some(100), None));
    let events = run(&mut b, new(limit(4, "c", Side::Sell, 100, 13)));
    assert_eq!(trades(&events), vec![(100, 12, 4, 1), (100, 1, 4, 2)]);
}

#[test]
fn amend_to_a_crossing_price_trades_then_rests() {
    let mut b = book();
    run(&mut b, new(limit(1, "m", Side::Sell, 101, 3)));
    run(&mut b, new(limit(2, "a", Side::Buy, 99, 10)));
    let events = run(&mut b, amend(2, "a", Some(101), None));
    assert!(matches!(
        events[0],
        Event::Amended {
            priority_kept: false,
            ..
        }
    ));
    assert_eq!(trades(&events), vec![(101, 3, 2, 1)]);
    assert_eq!(levels(&b), (vec![(101, 7)], vec![]));
    assert_eq!(
        b.order(OrderId(2)).map(|o| (o.quantity, o.leaves)),
        Some((Quantity(10), Quantity(7)))
    );
    // fully filled by its amendment: gone from the book
    run(&mut b, new(limit(3, "m", Side::Sell, 102, 7)));
    let events = run(&mut b, amend(2, "a", Some(102), None));
    assert_eq!(trades(&events), vec![(102, 7, 2, 3)]);
    assert_eq!(b.open_orders(), 0);
    assert_eq!(b.open_orders_of("a"), 0);
}

#[test]
fn amend_rejections_leave_the_order_unchanged() {
    let mut b = book();
    let mut maker = limit(1, "a", Side::Buy, 99, 10);
    maker.post_only = true;
    run(&mut b, new(maker));
    run(&mut b, new(limit(2, "m", Side::Sell, 101, 4)));
    run(&mut b, new(limit(3, "t", Side::Sell, 99, 4))); // fills 4 of order 1
    let before = b.snapshot();
    let cases = [
        (
            amend(1, "a", Some(101), None),
            RejectReason::PostOnlyWouldTake,
        ),
        (
            amend(1, "a", None, Some(4)),
            RejectReason::QuantityBelowFilled,
        ),
        (amend(1, "a", Some(99), Some(10)), RejectReason::NoChange),
        (amend(1, "a", None, None), RejectReason::NoChange),
        (amend(1, "other", None, Some(5)), RejectReason::UnknownOrder),
        (amend(42, "a", None, Some(5)), RejectReason::UnknownOrder),
        (
            amend(1, "a", None, Some(20_000_000)),
            RejectReason::QuantityAboveMax,
        ),
    ];
    for (command, reason) in cases {
        let events = run(&mut b, command);
        assert_eq!(rejected(&events), Some(reason));
        assert_eq!(b.snapshot().bids, before.bids);
    }
}

#[test]
fn cancel_removes_the_order_and_refuses_closed_or_foreign_ones() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Buy, 100, 10)));
    run(&mut b, new(limit(2, "a", Side::Buy, 100, 5)));
    assert_eq!(
        rejected(&run(&mut b, cancel(1, "b"))),
        Some(RejectReason::UnknownOrder)
    );
    let events = run(&mut b, cancel(1, "a"));
    assert!(matches!(
        events.as_slice(),
        [Event::Canceled {
            quantity: Quantity(10),
            ..
        }]
    ));
    assert_eq!(levels(&b).0, vec![(100, 5)]);
    // a filled order cannot be canceled
    run(&mut b, new(limit(3, "c", Side::Sell, 100, 5)));
    assert_eq!(
        rejected(&run(&mut b, cancel(2, "a"))),
        Some(RejectReason::UnknownOrder)
    );
    assert_eq!(
        rejected(&run(&mut b, cancel(1, "a"))),
        Some(RejectReason::UnknownOrder)
    );
    assert_eq!(b.open_orders(), 0);
}

#[test]
fn pre_trade_risk_rejections_are_events() {
    let mut b = book_with(RiskLimits {
        max_open_orders: Some(2),
        max_order_notional: Some(Decimal::from(1)),
        ..RiskLimits::default()
    });
    run(&mut b, new(limit(1, "a", Side::Buy, 100, 1)));
    run(&mut b, new(limit(2, "a", Side::Buy, 100, 1)));
    assert_eq!(
        rejected(&run(&mut b, new(limit(3, "a", Side::Buy, 100, 1)))),
        Some(RejectReason::TooManyOpenOrders)
    );
    // IOC never rests, so the open-order limit does not apply
    let ioc = with_tif(limit(4, "a", Side::Buy, 100, 1), TimeInForce::Ioc);
    assert_eq!(rejected(&run(&mut b, new(ioc))), None);
    assert_eq!(
        rejected(&run(&mut b, new(limit(1, "b", Side::Buy, 100, 1)))),
        Some(RejectReason::DuplicateOrderId)
    );
    // 1 USDT = 10_000_000 units: price 1.00 (100 ticks) × 100_001 lots is over
    assert_eq!(
        rejected(&run(&mut b, new(limit(5, "b", Side::Buy, 100, 100_001)))),
        Some(RejectReason::NotionalAboveMax)
    );
}

#[test]
fn halted_instrument_takes_cancels_only() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Buy, 100, 10)));
    let snapshot = b.snapshot();
    let spec = InstrumentSpec {
        status: crate::InstrumentStatus::Halted,
        ..btc()
    };
    let mut halted = Book::restore(
        Instrument::new(spec).unwrap(),
        &RiskLimits::default(),
        snapshot,
    )
    .unwrap();
    assert_eq!(
        rejected(&run(&mut halted, new(limit(2, "a", Side::Buy, 100, 1)))),
        Some(RejectReason::InstrumentHalted)
    );
    assert_eq!(
        rejected(&run(&mut halted, amend(1, "a", None, Some(5)))),
        Some(RejectReason::InstrumentHalted)
    );
    assert!(matches!(
        run(&mut halted, cancel(1, "a")).as_slice(),
        [Event::Canceled { .. }]
    ));
}

#[test]
fn order_state_folds_the_lifecycle() {
    let mut b = book();
    let mut records = Vec::new();
    b.apply(&new(limit(1, "m", Side::Sell, 100, 3)), &mut records);
    b.apply(&new(limit(2, "m", Side::Sell, 110, 3)), &mut records);
    b.apply(&new(limit(3, "t", Side::Buy, 110, 10)), &mut records);
    b.apply(&amend(3, "t", None, Some(8)), &mut records);
    b.apply(&cancel(3, "t"), &mut records);
    let mut state = records
        .iter()
        .find_map(|r| match &r.event {
            Event::Accepted { order } if order.order_id == OrderId(3) => OrderState::open(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(state.status, OrderStatus::New);
    for record in &records {
        state.apply(record);
    }
    assert_eq!(state.status, OrderStatus::Canceled);
    assert_eq!(state.filled, Quantity(6));
    assert_eq!(state.order.quantity, Quantity(8));
    assert_eq!(state.leaves, Quantity(0));
    assert_eq!(state.version, 5); // accepted, 2 trades, amended, canceled
    let instrument = b.instrument();
    // (1.00 × 3 + 1.10 × 3) / 6 = 1.05
    assert_eq!(
        state.average_price(instrument).map(|p| p.to_string()),
        Some("1.05".into())
    );
    // replaying is a no-op
    let again = state.clone();
    for record in &records {
        assert!(!state.apply(record));
    }
    assert_eq!(state, again);
}

#[test]
fn snapshot_restore_checks_instrument_and_consistency() {
    let mut b = book();
    run(&mut b, new(limit(1, "a", Side::Buy, 100, 10)));
    run(&mut b, new(limit(2, "a", Side::Sell, 101, 10)));
    let snapshot = b.snapshot();
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: BookSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snapshot);
    let restore = |snapshot| {
        Book::restore(
            Instrument::new(btc()).unwrap(),
            &RiskLimits::default(),
            snapshot,
        )
    };
    assert_eq!(restore(snapshot.clone()).unwrap().snapshot(), snapshot);

    let other_tick = InstrumentSpec {
        tick_size: Decimal::new(1, 1),
        ..btc()
    };
    assert!(matches!(
        Book::restore(
            Instrument::new(other_tick).unwrap(),
            &RiskLimits::default(),
            snapshot.clone()
        ),
        Err(RestoreError::Instrument { .. })
    ));
    let mut crossed = snapshot.clone();
    crossed.asks[0].price = Price(100);
    assert!(matches!(restore(crossed), Err(RestoreError::Crossed)));
    let mut twice = snapshot.clone();
    twice.bids.push(twice.bids[0].clone());
    assert!(matches!(restore(twice), Err(RestoreError::Order { .. })));
    let mut wrong_side = snapshot;
    wrong_side.bids[0].side = Side::Sell;
    assert!(matches!(
        restore(wrong_side),
        Err(RestoreError::Order { .. })
    ));
}

#[test]
fn client_order_ids_are_unique_among_an_accounts_open_orders() {
    let mut b = book();
    let mut first = limit(1, "a", Side::Buy, 100, 5);
    first.client_order_id = "mine".into();
    run(&mut b, new(first.clone()));
    let mut again = first.clone();
    again.order_id = OrderId(2);
    let events = run(&mut b, new(again.clone()));
    assert_eq!(
        rejected(&events),
        Some(RejectReason::DuplicateClientOrderId)
    );
    // another account may use the same reference
    let mut other = again.clone();
    other.account = "b".into();
    assert_eq!(rejected(&run(&mut b, new(other))), None);
    // once the first order is closed, the reference is free again
    run(&mut b, cancel(1, "a"));
    again.order_id = OrderId(3);
    assert_eq!(rejected(&run(&mut b, new(again))), None);
}

fn accepted_quantity(events: &[Event]) -> Option<u64> {
    events.iter().find_map(|event| match event {
        Event::Accepted { order } => Some(order.quantity.0),
        _ => None,
    })
}

#[test]
fn a_quote_budget_buys_what_it_affords_best_price_first() {
    let mut b = book();
    run(&mut b, new(limit(1, "s", Side::Sell, 100, 3)));
    run(&mut b, new(limit(2, "s", Side::Sell, 110, 5)));
    // 3 × 100 = 300, then 1_000 − 300 = 700 buys 6 lots at 110 but only 5 are there.
    let events = run(&mut b, new(market_quote(3, "b", 1_000)));
    assert_eq!(accepted_quantity(&events), Some(8));
    assert_eq!(trades(&events), vec![(100, 3, 3, 1), (110, 5, 3, 2)]);
    assert!(expired(&events).is_empty());

    // A budget that runs out inside a level: 250 buys 2 lots at 120 (240), the order is filled.
    run(&mut b, new(limit(4, "s", Side::Sell, 120, 5)));
    let events = run(&mut b, new(market_quote(5, "b", 250)));
    assert_eq!(accepted_quantity(&events), Some(2));
    assert_eq!(trades(&events), vec![(120, 2, 5, 4)]);
    assert!(expired(&events).is_empty());
    let last = events.iter().rev().find_map(|event| match event {
        Event::Trade(trade) => Some(trade.taker.leaves),
        _ => None,
    });
    assert_eq!(last, Some(Quantity::ZERO), "the taker is filled");
}

#[test]
fn a_quote_budget_on_an_empty_book_expires_without_trading() {
    let mut b = book();
    let events = run(&mut b, new(market_quote(1, "b", 1_000)));
    assert_eq!(accepted_quantity(&events), Some(0));
    assert_eq!(expired(&events), vec![(1, 0, ExpireReason::NoLiquidity)]);
}

#[test]
fn a_quote_budget_too_small_for_the_minimum_is_rejected() {
    let mut b = book_with(RiskLimits::default());
    run(&mut b, new(limit(1, "s", Side::Sell, 100, 3)));
    let events = run(&mut b, new(market_quote(2, "b", 99)));
    assert_eq!(rejected(&events), Some(RejectReason::QuantityBelowMin));
    assert!(trades(&events).is_empty());
    assert_eq!(levels(&b).1, vec![(100, 3)]);
}

#[test]
fn a_quote_quantity_is_only_for_ioc_market_buys() {
    let mut b = book();
    let sell = NewOrder {
        side: Side::Sell,
        ..market_quote(1, "s", 100)
    };
    let with_quantity = NewOrder {
        quantity: Quantity(1),
        ..market_quote(2, "b", 100)
    };
    let fok = with_tif(market_quote(3, "b", 100), TimeInForce::Fok);
    let limit = NewOrder {
        quote_quantity: Some(100),
        ..limit(4, "b", Side::Buy, 100, 1)
    };
    for order in [sell, with_quantity, fok, limit] {
        let events = run(&mut b, new(order));
        assert_eq!(
            rejected(&events),
            Some(RejectReason::QuoteQuantityNotAllowed)
        );
    }
}

#[test]
fn a_quote_budget_respects_the_band_and_self_trade_prevention() {
    let limits = RiskLimits {
        price_band_percent: Some(10.into()),
        ..RiskLimits::default()
    };
    let mut b = book_with(limits);
    run(&mut b, new(limit(1, "s", Side::Sell, 100, 1)));
    run(&mut b, new(limit(2, "b", Side::Buy, 100, 1)));
    run(&mut b, new(limit(3, "b", Side::Sell, 101, 2)));
    run(&mut b, new(limit(4, "s", Side::Sell, 102, 2)));
    run(&mut b, new(limit(5, "s", Side::Sell, 200, 2)));
    // ExpireMaker: the own order at 101 goes, 2 lots at 102 are bought, 200 is out of band.
    let order = with_stp(
        market_quote(6, "b", 10_000),
        SelfTradePrevention::ExpireMaker,
    );
    let events = run(&mut b, new(order));
    assert_eq!(accepted_quantity(&events), Some(2));
    assert_eq!(trades(&events), vec![(102, 2, 6, 4)]);
    assert_eq!(
        expired(&events),
        vec![(3, 2, ExpireReason::SelfTradePrevention)]
    );
}
