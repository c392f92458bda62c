//! The rules of funds, one by one, through the engine (funds and a BTC-USDT book).
//!
//! With the test instrument (tick 0.01, lot 0.00001) one base unit is one lot and one quote unit
//! is one `tick × lot`: a buy of `q` lots at `p` ticks holds `p × q` quote units.

use super::*;
use crate::engine::{Engine, Output};
use crate::event::ExpireReason;
use crate::instrument::{Instrument, InstrumentSpec};
use crate::risk::RiskLimits;
use crate::test_support::{amend, btc, cancel, cancel_all, limit, market, market_quote, new};
use crate::types::{SelfTradePrevention, TimeInForce};

fn engine_with(spec: InstrumentSpec, limits: RiskLimits) -> Engine {
    Engine::new(&[Instrument::new(spec).unwrap()], &limits).unwrap()
}

fn engine() -> Engine {
    engine_with(btc(), RiskLimits::default())
}

/// An engine with fees: maker 10 bps, taker 20 bps.
fn engine_with_fees() -> Engine {
    engine_with(
        InstrumentSpec {
            maker_fee_bps: 10,
            taker_fee_bps: 20,
            ..btc()
        },
        RiskLimits::default(),
    )
}

fn transfer(id: u64, account: &str, asset: &str, amount: Amount) -> Transfer {
    Transfer {
        transfer_id: id,
        account: account.into(),
        asset: asset.into(),
        amount,
    }
}

fn fund(engine: &mut Engine, account: &str, asset: &str, amount: Amount) {
    let mut out = Output::default();
    engine
        .deposit(Timestamp(0), &transfer(0, account, asset, amount), &mut out)
        .unwrap();
}

fn run(engine: &mut Engine, command: crate::command::Command) -> Output {
    let mut out = Output::default();
    engine.apply(&command, &mut out);
    check(engine);
    out
}

fn balance(engine: &Engine, account: &str, asset: &str) -> (Amount, Amount) {
    let balance = engine.funds().balance(account, asset);
    (balance.available, balance.held)
}

fn rejected(out: &Output) -> Option<RejectReason> {
    out.events.iter().find_map(|record| match &record.event {
        Event::Rejected { reject, .. } | Event::AmendRejected { reject, .. } => Some(reject.reason),
        _ => None,
    })
}

/// The invariants every state must keep.
fn check(engine: &Engine) {
    let funds = engine.funds();
    assert_eq!(
        funds.held_balances(),
        funds.held_by_orders(),
        "held ≠ holds"
    );
    for book in engine.books() {
        let market = funds.market(book.instrument().symbol()).unwrap();
        for side in [book.snapshot().bids, book.snapshot().asks] {
            for order in side {
                let needs = match order.side {
                    Side::Buy => market.quote(order.price, order.leaves).unwrap(),
                    Side::Sell => market.base(order.leaves).unwrap(),
                };
                assert_eq!(
                    funds.order_held(order.order_id),
                    Some(needs),
                    "order {} holds what it needs",
                    order.order_id
                );
            }
        }
    }
}

#[test]
fn deposits_and_withdrawals() {
    let mut e = engine();
    let mut out = Output::default();
    e.deposit(Timestamp(1), &transfer(1, "a", "USDT", 1_000), &mut out)
        .unwrap();
    assert_eq!(balance(&e, "a", "USDT"), (1_000, 0));
    assert_eq!(
        e.withdraw(Timestamp(2), &transfer(2, "a", "USDT", 1_001), &mut out),
        Err(Reject::new(RejectReason::InsufficientFunds))
    );
    e.withdraw(Timestamp(3), &transfer(3, "a", "USDT", 400), &mut out)
        .unwrap();
    assert_eq!(balance(&e, "a", "USDT"), (600, 0));
    assert_eq!(
        e.deposit(Timestamp(4), &transfer(4, "a", "DOGE", 1), &mut out)
            .unwrap_err()
            .reason,
        RejectReason::UnknownAsset
    );
    assert_eq!(
        e.deposit(Timestamp(4), &transfer(4, "a", "USDT", 0), &mut out)
            .unwrap_err()
            .reason,
        RejectReason::NotPositive
    );
    let kinds: Vec<(EntryKind, i128, Amount)> = out
        .ledger
        .iter()
        .map(|entry| (entry.kind, entry.available_change, entry.balance.available))
        .collect();
    assert_eq!(
        kinds,
        [
            (EntryKind::Deposit, 1_000, 1_000),
            (EntryKind::Withdrawal, -400, 600)
        ]
    );
    assert_eq!(out.ledger[1].cause, Cause::Transfer(3));
    assert_eq!(out.ledger[1].seq, 2);
}

#[test]
fn a_withdrawal_cannot_take_what_is_held() {
    let mut e = engine();
    fund(&mut e, "a", "USDT", 1_000);
    run(&mut e, new(limit(1, "a", Side::Buy, 10, 60)));
    assert_eq!(balance(&e, "a", "USDT"), (400, 600));
    let mut out = Output::default();
    assert_eq!(
        e.withdraw(Timestamp(1), &transfer(1, "a", "USDT", 401), &mut out)
            .unwrap_err()
            .reason,
        RejectReason::InsufficientFunds
    );
    assert!(
        out.ledger.is_empty(),
        "a refused withdrawal changes nothing"
    );
}

#[test]
fn a_limit_buy_holds_price_times_quantity_and_a_sell_its_quantity() {
    let mut e = engine();
    fund(&mut e, "b", "USDT", 1_000);
    fund(&mut e, "s", "BTC", 50);
    let out = run(&mut e, new(limit(1, "b", Side::Buy, 10, 100)));
    assert_eq!(rejected(&out), None);
    assert_eq!(balance(&e, "b", "USDT"), (0, 1_000));
    let hold = &out.ledger[0];
    assert_eq!(
        (hold.kind, hold.cause.clone(), hold.held_change),
        (EntryKind::Hold, Cause::Order(OrderId(1)), 1_000)
    );
    run(&mut e, new(limit(2, "s", Side::Sell, 20, 50)));
    assert_eq!(balance(&e, "s", "BTC"), (0, 50));
}

#[test]
fn insufficient_funds_reject_every_order_type_and_hold_nothing() {
    let mut e = engine();
    fund(&mut e, "b", "USDT", 999);
    fund(&mut e, "s", "BTC", 9);
    let orders = [
        limit(1, "b", Side::Buy, 10, 100),
        limit(2, "s", Side::Sell, 10, 10),
        NewOrder {
            time_in_force: TimeInForce::Ioc,
            ..limit(3, "b", Side::Buy, 10, 100)
        },
        NewOrder {
            time_in_force: TimeInForce::Fok,
            ..limit(4, "s", Side::Sell, 10, 10)
        },
        market(5, "s", Side::Sell, 10),
    ];
    for order in orders {
        let out = run(&mut e, new(order));
        assert_eq!(rejected(&out), Some(RejectReason::InsufficientFunds));
        assert!(out.ledger.is_empty(), "{:?}", out.ledger);
    }
    assert_eq!(balance(&e, "b", "USDT"), (999, 0));
    assert_eq!(balance(&e, "s", "BTC"), (9, 0));
    assert_eq!(e.book("BTC-USDT").unwrap().open_orders(), 0);
}

#[test]
fn a_trade_settles_both_sides_and_refunds_a_better_price() {
    let mut e = engine();
    fund(&mut e, "s", "BTC", 10);
    fund(&mut e, "b", "USDT", 1_200);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 10)));
    // The buyer bids 120 and trades at the maker's 100: 200 held too much comes back.
    let out = run(&mut e, new(limit(2, "b", Side::Buy, 120, 10)));
    assert_eq!(balance(&e, "b", "USDT"), (200, 0));
    assert_eq!(balance(&e, "b", "BTC"), (10, 0));
    assert_eq!(balance(&e, "s", "BTC"), (0, 0));
    assert_eq!(balance(&e, "s", "USDT"), (1_000, 0));
    let release = out
        .ledger
        .iter()
        .find(|entry| entry.kind == EntryKind::Release && entry.account == "b")
        .unwrap();
    assert_eq!(release.available_change, 200);
}

#[test]
fn partial_fills_keep_the_rest_held_and_cancel_releases_it() {
    let mut e = engine();
    fund(&mut e, "s", "BTC", 4);
    fund(&mut e, "b", "USDT", 1_000);
    run(&mut e, new(limit(1, "b", Side::Buy, 100, 10)));
    run(&mut e, new(limit(2, "s", Side::Sell, 100, 4)));
    assert_eq!(balance(&e, "b", "USDT"), (0, 600));
    assert_eq!(balance(&e, "b", "BTC"), (4, 0));
    assert_eq!(e.funds().order_held(OrderId(1)), Some(600));
    let out = run(&mut e, cancel(1, "b"));
    assert_eq!(balance(&e, "b", "USDT"), (600, 0));
    assert_eq!(out.ledger.len(), 1);
    assert_eq!(out.ledger[0].kind, EntryKind::Release);
    assert_eq!(e.funds().order_held(OrderId(1)), None);
}

#[test]
fn a_mass_cancel_of_every_instrument_releases_every_hold() {
    let eth = InstrumentSpec {
        symbol: "ETH-USDT".into(),
        base: "ETH".into(),
        ..btc()
    };
    let mut e = Engine::new(
        &[
            Instrument::new(btc()).unwrap(),
            Instrument::new(eth).unwrap(),
        ],
        &RiskLimits::default(),
    )
    .unwrap();
    fund(&mut e, "b", "USDT", 10_000);
    fund(&mut e, "b", "ETH", 50);
    fund(&mut e, "o", "USDT", 1_000);
    let on_eth = |order: NewOrder| NewOrder {
        symbol: "ETH-USDT".into(),
        ..order
    };
    run(&mut e, new(limit(1, "b", Side::Buy, 100, 10)));
    run(&mut e, new(on_eth(limit(2, "b", Side::Sell, 200, 50))));
    run(&mut e, new(on_eth(limit(3, "b", Side::Buy, 100, 20))));
    run(&mut e, new(limit(4, "o", Side::Buy, 100, 10)));
    assert_eq!(balance(&e, "b", "USDT"), (7_000, 3_000));
    // one instrument first: the ETH orders stay
    let out = run(&mut e, cancel_all("b", Some("BTC-USDT")));
    assert_eq!(out.events.len(), 1);
    assert_eq!(balance(&e, "b", "USDT"), (8_000, 2_000));
    let out = run(&mut e, cancel_all("b", None));
    assert_eq!(out.events.len(), 2);
    assert_eq!(balance(&e, "b", "USDT"), (10_000, 0));
    assert_eq!(balance(&e, "b", "ETH"), (50, 0));
    assert_eq!(
        balance(&e, "o", "USDT"),
        (0, 1_000),
        "another account's order stays"
    );
}

#[test]
fn fees_are_charged_in_the_asset_received_and_collected() {
    let mut e = engine_with_fees();
    fund(&mut e, "s", "BTC", 10_000);
    fund(&mut e, "b", "USDT", 1_000_000);
    // maker sells 10,000 lots at 100; taker buys them: 1,000,000 quote units change hands
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 10_000)));
    let out = run(&mut e, new(limit(2, "b", Side::Buy, 100, 10_000)));
    // taker (buyer) pays 20 bps of the 10,000 base units received: 20
    assert_eq!(balance(&e, "b", "BTC"), (9_980, 0));
    // maker (seller) pays 10 bps of the 1,000,000 quote units received: 1,000
    assert_eq!(balance(&e, "s", "USDT"), (999_000, 0));
    assert_eq!(balance(&e, FEE_ACCOUNT, "BTC"), (20, 0));
    assert_eq!(balance(&e, FEE_ACCOUNT, "USDT"), (1_000, 0));
    let fees: Vec<(&str, i128)> = out
        .ledger
        .iter()
        .filter(|entry| entry.kind == EntryKind::Fee)
        .map(|entry| (entry.account.as_str(), entry.available_change))
        .collect();
    assert_eq!(
        fees,
        [
            ("b", -20),
            (FEE_ACCOUNT, 20),
            ("s", -1_000),
            (FEE_ACCOUNT, 1_000)
        ]
    );
}

#[test]
fn fees_round_up_to_a_whole_unit() {
    let mut e = engine_with_fees();
    fund(&mut e, "s", "BTC", 1);
    fund(&mut e, "b", "USDT", 7);
    run(&mut e, new(limit(1, "s", Side::Sell, 7, 1)));
    run(&mut e, new(limit(2, "b", Side::Buy, 7, 1)));
    // 20 bps of 1 unit is 0.002 units: 1 unit, all of it
    assert_eq!(balance(&e, "b", "BTC"), (0, 0));
    // 10 bps of 7 units: 1 unit
    assert_eq!(balance(&e, "s", "USDT"), (6, 0));
    assert_eq!(balance(&e, FEE_ACCOUNT, "BTC"), (1, 0));
}

#[test]
fn ioc_and_fok_remainders_release_their_holds() {
    let mut e = engine();
    fund(&mut e, "s", "BTC", 5);
    fund(&mut e, "b", "USDT", 2_000);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 5)));
    let ioc = NewOrder {
        time_in_force: TimeInForce::Ioc,
        ..limit(2, "b", Side::Buy, 100, 10)
    };
    run(&mut e, new(ioc));
    assert_eq!(balance(&e, "b", "USDT"), (1_500, 0));
    assert_eq!(balance(&e, "b", "BTC"), (5, 0));
    let fok = NewOrder {
        time_in_force: TimeInForce::Fok,
        ..limit(3, "b", Side::Buy, 100, 10)
    };
    let out = run(&mut e, new(fok));
    assert!(out.events.iter().any(|r| matches!(
        r.event,
        Event::Expired {
            reason: ExpireReason::FillOrKill,
            ..
        }
    )));
    assert_eq!(balance(&e, "b", "USDT"), (1_500, 0));
}

#[test]
fn a_market_buy_holds_at_the_band_edge_and_gets_the_rest_back() {
    let limits = RiskLimits {
        price_band_percent: Some(10.into()),
        ..RiskLimits::default()
    };
    let mut e = engine_with(btc(), limits);
    fund(&mut e, "s", "BTC", 20);
    fund(&mut e, "b", "USDT", 10_000);
    // Before any trade there is no reference to hold against.
    let out = run(&mut e, new(market(1, "b", Side::Buy, 5)));
    assert_eq!(rejected(&out), Some(RejectReason::NoReferencePrice));
    // A trade at 100 sets the reference; the band edge is 110.
    fund(&mut e, "b2", "USDT", 100);
    run(&mut e, new(limit(2, "s", Side::Sell, 100, 1)));
    run(&mut e, new(limit(3, "b2", Side::Buy, 100, 1)));
    run(&mut e, new(limit(4, "s", Side::Sell, 105, 5)));
    let out = run(&mut e, new(market(5, "b", Side::Buy, 10)));
    let hold = out
        .ledger
        .iter()
        .find(|e| e.kind == EntryKind::Hold)
        .unwrap();
    assert_eq!(hold.held_change, 110 * 10);
    // 5 traded at 105; the other 5 expire: all but 525 comes back
    assert_eq!(balance(&e, "b", "USDT"), (10_000 - 525, 0));
    assert_eq!(balance(&e, "b", "BTC"), (5, 0));
}

#[test]
fn a_market_buy_without_a_band_holds_at_the_instrument_maximum() {
    let spec = InstrumentSpec {
        max_price: Some(rust_decimal::Decimal::from(2)),
        ..btc()
    };
    let mut e = engine_with(spec, RiskLimits::default());
    fund(&mut e, "b", "USDT", 10_000);
    run(&mut e, new(market(1, "b", Side::Buy, 10)));
    // max price 2.00 is 200 ticks: the hold was 2,000, all released when nothing traded
    assert_eq!(balance(&e, "b", "USDT"), (10_000, 0));
    let mut out = Output::default();
    e.apply(&new(market(2, "b", Side::Buy, 100)), &mut out);
    assert_eq!(rejected(&out), Some(RejectReason::InsufficientFunds));
}

#[test]
fn a_market_sell_holds_its_quantity() {
    let mut e = engine();
    fund(&mut e, "b", "USDT", 1_000);
    fund(&mut e, "s", "BTC", 10);
    run(&mut e, new(limit(1, "b", Side::Buy, 100, 4)));
    run(&mut e, new(market(2, "s", Side::Sell, 10)));
    assert_eq!(balance(&e, "s", "BTC"), (6, 0));
    assert_eq!(balance(&e, "s", "USDT"), (400, 0));
}

#[test]
fn amends_adjust_the_hold() {
    let mut e = engine();
    fund(&mut e, "b", "USDT", 1_500);
    run(&mut e, new(limit(1, "b", Side::Buy, 100, 10)));
    assert_eq!(balance(&e, "b", "USDT"), (500, 1_000));
    // up: 15 lots at 100 need 500 more
    run(&mut e, amend(1, "b", None, Some(15)));
    assert_eq!(balance(&e, "b", "USDT"), (0, 1_500));
    // more than there is: refused, the order and the hold unchanged
    let out = run(&mut e, amend(1, "b", Some(101), None));
    assert_eq!(rejected(&out), Some(RejectReason::InsufficientFunds));
    assert_eq!(balance(&e, "b", "USDT"), (0, 1_500));
    assert_eq!(
        e.book("BTC-USDT").unwrap().order(OrderId(1)).unwrap().price,
        Price(100)
    );
    // down in price: the difference comes back
    run(&mut e, amend(1, "b", Some(80), None));
    assert_eq!(balance(&e, "b", "USDT"), (300, 1_200));
    // down in quantity
    run(&mut e, amend(1, "b", None, Some(5)));
    assert_eq!(balance(&e, "b", "USDT"), (1_100, 400));
}

#[test]
fn an_amend_the_book_refuses_releases_its_extra_hold() {
    let limits = RiskLimits {
        price_band_percent: Some(10.into()),
        ..RiskLimits::default()
    };
    let mut e = engine_with(btc(), limits);
    fund(&mut e, "s", "BTC", 1);
    fund(&mut e, "b", "USDT", 10_000);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 1)));
    run(&mut e, new(limit(2, "b", Side::Buy, 100, 1)));
    run(&mut e, new(limit(3, "b", Side::Buy, 95, 10)));
    let before = balance(&e, "b", "USDT");
    // 200 is outside the 10% band: the book refuses after funds held the extra
    let out = run(&mut e, amend(3, "b", Some(200), None));
    assert_eq!(rejected(&out), Some(RejectReason::PriceOutsideBand));
    assert_eq!(balance(&e, "b", "USDT"), before);
    assert!(out.ledger.iter().any(|entry| entry.kind == EntryKind::Hold));
    assert!(
        out.ledger
            .iter()
            .any(|entry| entry.kind == EntryKind::Release)
    );
}

#[test]
fn a_sell_amend_up_needs_the_base() {
    let mut e = engine();
    fund(&mut e, "s", "BTC", 12);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 10)));
    let out = run(&mut e, amend(1, "s", None, Some(13)));
    assert_eq!(rejected(&out), Some(RejectReason::InsufficientFunds));
    run(&mut e, amend(1, "s", None, Some(12)));
    assert_eq!(balance(&e, "s", "BTC"), (0, 12));
}

#[test]
fn an_amend_that_crosses_trades_and_settles() {
    let mut e = engine();
    fund(&mut e, "s", "BTC", 10);
    fund(&mut e, "b", "USDT", 2_000);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 10)));
    run(&mut e, new(limit(2, "b", Side::Buy, 90, 10)));
    run(&mut e, amend(2, "b", Some(110), None));
    // traded 10 at 100: paid 1,000, the rest of the 1,100 hold released
    assert_eq!(balance(&e, "b", "USDT"), (1_000, 0));
    assert_eq!(balance(&e, "b", "BTC"), (10, 0));
}

#[test]
fn a_book_rejection_releases_the_hold() {
    let mut e = engine();
    fund(&mut e, "a", "USDT", 10_000);
    run(&mut e, new(limit(1, "a", Side::Buy, 100, 10)));
    // the same client order id is open: the book rejects, funds had held
    let mut dup = limit(2, "a", Side::Buy, 100, 10);
    dup.client_order_id = "c1".into();
    let out = run(&mut e, new(dup));
    assert_eq!(rejected(&out), Some(RejectReason::DuplicateClientOrderId));
    assert_eq!(balance(&e, "a", "USDT"), (9_000, 1_000));
}

#[test]
fn self_trade_prevention_expiry_releases() {
    let mut e = engine();
    fund(&mut e, "a", "BTC", 10);
    fund(&mut e, "a", "USDT", 10_000);
    run(&mut e, new(limit(1, "a", Side::Sell, 100, 10)));
    let taker = NewOrder {
        self_trade_prevention: SelfTradePrevention::ExpireBoth,
        ..limit(2, "a", Side::Buy, 100, 10)
    };
    run(&mut e, new(taker));
    assert_eq!(balance(&e, "a", "BTC"), (10, 0));
    assert_eq!(balance(&e, "a", "USDT"), (10_000, 0));
}

#[test]
fn a_duplicate_order_id_does_not_replace_a_hold() {
    let mut e = engine();
    fund(&mut e, "a", "USDT", 10_000);
    run(&mut e, new(limit(1, "a", Side::Buy, 100, 10)));
    let out = run(&mut e, new(limit(1, "a", Side::Buy, 100, 20)));
    assert_eq!(rejected(&out), Some(RejectReason::DuplicateOrderId));
    assert_eq!(balance(&e, "a", "USDT"), (9_000, 1_000));
}

#[test]
fn snapshots_restore_the_same_state() {
    let mut e = engine_with_fees();
    fund(&mut e, "s", "BTC", 100);
    fund(&mut e, "b", "USDT", 100_000);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 50)));
    run(&mut e, new(limit(2, "b", Side::Buy, 101, 70)));
    let snapshot = e.snapshot();
    let instruments = [Instrument::new(InstrumentSpec {
        maker_fee_bps: 10,
        taker_fee_bps: 20,
        ..btc()
    })
    .unwrap()];
    let restored = Engine::restore(&instruments, &RiskLimits::default(), &snapshot).unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    let mut bad = snapshot.clone();
    bad.funds.balances[0].2.held += 1;
    assert!(Engine::restore(&instruments, &RiskLimits::default(), &bad).is_err());
}

#[test]
fn transfer_commands_report_their_outcome() {
    use crate::command::{Action, Command};
    use crate::engine::TransferKind;
    let mut e = engine();
    let mut out = Output::default();
    let command = |action| Command {
        ts: Timestamp(7),
        action,
    };
    e.apply(
        &command(Action::Deposit(transfer(1, "a", "USDT", 50))),
        &mut out,
    );
    e.apply(
        &command(Action::Withdraw(transfer(2, "a", "USDT", 80))),
        &mut out,
    );
    let outcomes: Vec<(TransferKind, u64, Option<RejectReason>)> = out
        .transfers
        .iter()
        .map(|t| (t.kind, t.transfer.transfer_id, t.reject.map(|r| r.reason)))
        .collect();
    assert_eq!(
        outcomes,
        [
            (TransferKind::Deposit, 1, None),
            (
                TransferKind::Withdrawal,
                2,
                Some(RejectReason::InsufficientFunds)
            )
        ]
    );
    assert_eq!(out.ledger.len(), 1);
    assert_eq!(balance(&e, "a", "USDT"), (50, 0));
}

#[test]
fn a_quote_budget_holds_the_budget_pays_what_it_buys_and_gets_the_rest_back() {
    let mut e = engine_with_fees();
    fund(&mut e, "s", "BTC", 10);
    fund(&mut e, "b", "USDT", 5_000);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 3)));
    run(&mut e, new(limit(2, "s", Side::Sell, 110, 5)));
    let out = run(&mut e, new(market_quote(3, "b", 1_000)));
    let hold = out
        .ledger
        .iter()
        .find(|e| e.kind == EntryKind::Hold)
        .unwrap();
    assert_eq!(
        hold.held_change, 1_000,
        "the whole budget is held, no fee in quote"
    );
    // 3 at 100 and 5 at 110 cost 850; 150 comes back. 8 lots received in two trades, the
    // taker fee of 20 bps rounds up to one lot on each.
    assert_eq!(balance(&e, "b", "USDT"), (5_000 - 850, 0));
    assert_eq!(balance(&e, "b", "BTC"), (8 - 2, 0));
    assert_eq!(balance(&e, FEE_ACCOUNT, "BTC"), (2, 0));
}

#[test]
fn a_quote_budget_beyond_available_is_refused_and_holds_nothing() {
    let mut e = engine();
    fund(&mut e, "s", "BTC", 10);
    fund(&mut e, "b", "USDT", 999);
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 3)));
    let out = run(&mut e, new(market_quote(2, "b", 1_000)));
    assert_eq!(rejected(&out), Some(RejectReason::InsufficientFunds));
    assert_eq!(balance(&e, "b", "USDT"), (999, 0));
    assert!(out.ledger.is_empty());
}

#[test]
fn a_quote_budget_refused_by_the_book_or_finding_nothing_releases_its_hold() {
    let mut e = engine();
    fund(&mut e, "b", "USDT", 1_000);
    // Empty book: accepted, expires with nothing bought.
    run(&mut e, new(market_quote(1, "b", 1_000)));
    assert_eq!(balance(&e, "b", "USDT"), (1_000, 0));
    // Too small for one lot: rejected by the book after funds held it.
    fund(&mut e, "s", "BTC", 1);
    run(&mut e, new(limit(2, "s", Side::Sell, 100, 1)));
    let out = run(&mut e, new(market_quote(3, "b", 99)));
    assert_eq!(rejected(&out), Some(RejectReason::QuantityBelowMin));
    assert_eq!(balance(&e, "b", "USDT"), (1_000, 0));
}

/// Funds and a book as the distributed stages run them: funds decide each command when it
/// arrives, the book applies it later, and its events come back to be settled later still.
struct Stages {
    funds: Funds,
    book: crate::Book,
    to_book: Vec<(crate::command::Command, crate::command::Funding)>,
}

impl Stages {
    fn new() -> Stages {
        let instrument = Instrument::new(btc()).unwrap();
        Stages {
            funds: Funds::new([&instrument]).unwrap(),
            book: crate::Book::new(instrument, &RiskLimits::default()).unwrap(),
            to_book: Vec::new(),
        }
    }

    fn deposit(&mut self, account: &str, asset: &str, amount: Amount) {
        self.funds
            .deposit(
                Timestamp(0),
                &transfer(0, account, asset, amount),
                &mut Vec::new(),
            )
            .unwrap();
    }

    /// Funds decide; the command waits for the book.
    fn send(&mut self, command: crate::command::Command) {
        match self.funds.command(&command, None, &mut Vec::new()) {
            Decided::Order(funding) => self.to_book.push((command, funding)),
            Decided::Transfer(_) => unreachable!("order commands only"),
        }
    }

    /// The book applies everything sent, then funds settle what it did.
    fn deliver(&mut self) {
        let mut events = Vec::new();
        for (command, funding) in self.to_book.drain(..) {
            self.book.apply_funded(&command, &funding, &mut events);
        }
        for record in &events {
            self.funds.settle(record, &mut Vec::new());
            assert_eq!(self.funds.held_balances(), self.funds.held_by_orders());
        }
    }

    fn held(&self, order: u64) -> Option<Amount> {
        self.funds.order_held(OrderId(order))
    }
}

#[test]
fn amendments_on_their_way_count_on_each_others_holds() {
    // Found by pipeline_with_lagging_logs_conserves_money: the second amendment was held as if
    // the first (quantity 12) had not happened, and the order ended up holding 96 × 12 for a
    // state that needs 100 × 12.
    let mut stages = Stages::new();
    stages.deposit("a", "USDT", 10_000);
    stages.send(new(limit(1, "a", Side::Buy, 96, 6)));
    stages.deliver();
    stages.send(amend(1, "a", None, Some(12)));
    stages.send(amend(1, "a", Some(100), None));
    stages.deliver();
    assert_eq!(stages.held(1), Some(100 * 12));
    assert_eq!(stages.funds.balance("a", "USDT").held, 1_200);
}

#[test]
fn a_rejected_amendment_keeps_the_hold_another_on_its_way_needs() {
    // Found by the same property: the book refused the first amendment (quantity 24) and its
    // release took the hold the second (quantity 11, held on top of it) counted on.
    let mut stages = Stages::new();
    stages.deposit("c", "BTC", 100);
    stages.send(new(limit(1, "c", Side::Sell, 97, 8)));
    stages.deliver();
    stages.send(amend(1, "c", None, Some(0)));
    stages.send(amend(1, "c", None, Some(11)));
    stages.deliver();
    assert_eq!(stages.held(1), Some(11));
}

#[test]
fn a_buy_lowered_in_price_is_held_at_its_old_price_until_the_book_answers() {
    // Found by the same property: a sell filled the buy at its old price (100) while the
    // amendment to 97 × 24 was on its way, paying 100 a lot out of a hold sized at 97.
    let mut stages = Stages::new();
    stages.deposit("b", "USDT", 10_000);
    stages.deposit("c", "BTC", 100);
    stages.send(new(limit(1, "b", Side::Buy, 100, 11)));
    stages.deliver();
    stages.send(new(limit(2, "c", Side::Sell, 100, 7)));
    stages.send(amend(1, "b", Some(97), Some(24)));
    assert_eq!(
        stages.held(1),
        Some(100 * 24),
        "held at the old price meanwhile"
    );
    stages.deliver();
    assert_eq!(stages.held(1), Some(97 * 17));
}

#[test]
fn records_count_accounts_holds_and_resting_orders() {
    let mut e = engine();
    let start = e.records();
    fund(&mut e, "s", "BTC", 10);
    fund(&mut e, "b", "USDT", 1_000);
    assert_eq!(e.records(), start + 2, "one per account");
    run(&mut e, new(limit(1, "s", Side::Sell, 100, 10)));
    assert_eq!(e.records(), start + 4, "a resting order and its hold");
    run(&mut e, new(limit(2, "b", Side::Buy, 100, 4)));
    assert_eq!(
        e.records(),
        start + 4,
        "the buy filled; the sell rests with the rest"
    );
    run(&mut e, cancel(1, "s"));
    assert_eq!(e.records(), start + 2);
}
