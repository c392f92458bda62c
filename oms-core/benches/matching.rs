//! Matching-core benchmark on a realistic mixed stream for one book on one core.
//!
//! The stream is what a liquid crypto book sees: mostly passive limit orders placed, canceled
//! and amended within a few ticks of the touch, and a minority of aggressive orders (marketable
//! IOC limits and market orders) that take one to a few levels. A seeded generator drives a book
//! while it builds the stream, so cancels and amendments name orders that are open at that point.
//!
//! Run: `cargo bench -p oms-core --bench matching` (add `-- --report-only` to skip criterion).
//! It prints commands/s over the whole stream and per-command latency percentiles by kind.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads the clock; the core never does"
)]

use criterion::{BatchSize, Criterion, Throughput};
use hdrhistogram::Histogram;
use oms_core::{
    Action, AmendOrder, Book, CancelOrder, Command, Event, EventRecord, Instrument, InstrumentSpec,
    InstrumentStatus, NewOrder, OrderId, OrderType, Price, Quantity, RiskLimits,
    SelfTradePrevention, Side, TimeInForce, Timestamp,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use std::hint::black_box;
use std::time::Instant;

const STREAM: usize = 1_000_000;
const ACCOUNTS: usize = 200;
const SEED: u64 = 0x0B5_2026;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Place,
    Cancel,
    Amend,
    Aggressive,
}

const KINDS: [(Kind, &str); 4] = [
    (Kind::Place, "place (passive)"),
    (Kind::Cancel, "cancel"),
    (Kind::Amend, "amend"),
    (Kind::Aggressive, "aggressive"),
];

fn instrument() -> Instrument {
    Instrument::new(InstrumentSpec {
        symbol: "BTC-USDT".into(),
        base: "BTC".into(),
        quote: "USDT".into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 5),
        min_quantity: Decimal::new(1, 5),
        max_quantity: Decimal::from(100),
        min_notional: Decimal::from(5),
        price_band_percent: None,
        reference_price: None,
        status: InstrumentStatus::Trading,
    })
    .expect("valid instrument")
}

fn limits() -> RiskLimits {
    RiskLimits {
        max_order_notional: Some(Decimal::from(5_000_000)),
        price_band_percent: Some(Decimal::from(10)),
        max_open_orders: Some(1_000),
    }
}

fn book() -> Book {
    Book::new(instrument(), &limits()).expect("valid limits")
}

/// A stream's mix: the percentage of passive placements; cancels fill the gap to 80%, then
/// amendments and aggressive orders take 10% each.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    place_percent: u32,
}

const SCENARIOS: [Scenario; 2] = [
    // Placements and removals balance: the book stays a few thousand orders deep.
    Scenario {
        name: "steady book",
        place_percent: 45,
    },
    // Placements outrun removals: the book grows to about 100k resting orders, most far from
    // the touch, which stresses the id index and the slab's cache footprint.
    Scenario {
        name: "deep book",
        place_percent: 50,
    },
];

/// Builds the stream by driving a book, so that cancels and amendments target open orders.
fn stream(len: usize, scenario: Scenario) -> Vec<(Kind, Command)> {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut book = book();
    let accounts: Vec<oms_core::AccountId> = (0..ACCOUNTS)
        .map(|i| format!("acct-{i:04}").into())
        .collect();
    let mut open: Vec<(OrderId, usize)> = Vec::new();
    let mut next_id = 0u64;
    let mut mid: u64 = 6_500_000; // 65_000.00
    let mut out = Vec::with_capacity(len);
    let mut events: Vec<EventRecord> = Vec::new();
    while out.len() < len {
        if out.len() % 1_000 == 0 {
            mid = mid + rng.random_range(0..=20) - 10;
        }
        let roll = rng.random_range(0..100);
        let kind = if open.len() < 200 || roll < scenario.place_percent {
            Kind::Place
        } else if roll < 80 {
            Kind::Cancel
        } else if roll < 90 {
            Kind::Amend
        } else {
            Kind::Aggressive
        };
        let account = rng.random_range(0..ACCOUNTS);
        let action = match kind {
            Kind::Place | Kind::Aggressive => {
                next_id += 1;
                let side = if rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let (order_type, time_in_force, price) = if kind == Kind::Place {
                    let best = match side {
                        Side::Buy => book.best_ask().map_or(mid, |ask| ask.0.min(mid + 1) - 1),
                        Side::Sell => book.best_bid().map_or(mid, |bid| bid.0.max(mid - 1) + 1),
                    };
                    let away = rng.random_range(0..20);
                    let price = match side {
                        Side::Buy => best - away,
                        Side::Sell => best + away,
                    };
                    (OrderType::Limit, TimeInForce::Gtc, Some(Price(price)))
                } else if rng.random_bool(0.3) {
                    (OrderType::Market, TimeInForce::Ioc, None)
                } else {
                    let reach = rng.random_range(0..3);
                    let price = match side {
                        Side::Buy => book.best_ask().map_or(mid, |p| p.0) + reach,
                        Side::Sell => book.best_bid().map_or(mid, |p| p.0) - reach,
                    };
                    (OrderType::Limit, TimeInForce::Ioc, Some(Price(price)))
                };
                Action::New(NewOrder {
                    order_id: OrderId(next_id),
                    client_order_id: format!("c{next_id}").into(),
                    account: accounts[account].clone(),
                    symbol: "BTC-USDT".into(),
                    side,
                    order_type,
                    time_in_force,
                    price,
                    quantity: Quantity(rng.random_range(10..2_000)),
                    post_only: kind == Kind::Place && rng.random_bool(0.2),
                    self_trade_prevention: SelfTradePrevention::ExpireTaker,
                })
            }
            Kind::Cancel | Kind::Amend => {
                // Forget orders that traded away since they were placed.
                let (order_id, owner) = loop {
                    let picked = open.swap_remove(rng.random_range(0..open.len()));
                    if book.order(picked.0).is_some() || open.is_empty() {
                        break picked;
                    }
                };
                if kind == Kind::Cancel {
                    Action::Cancel(CancelOrder {
                        order_id,
                        account: accounts[owner].clone(),
                        symbol: "BTC-USDT".into(),
                    })
                } else {
                    open.push((order_id, owner));
                    let resting = book.order(order_id);
                    let (price, quantity) =
                        resting.map_or((Price(mid), Quantity(100)), |o| (o.price, o.quantity));
                    let down = rng.random_bool(0.6);
                    Action::Amend(AmendOrder {
                        order_id,
                        account: accounts[owner].clone(),
                        symbol: "BTC-USDT".into(),
                        price: (!down).then(|| Price(price.0 + rng.random_range(0..3) - 1)),
                        quantity: down.then(|| Quantity((quantity.0 * 3 / 4).max(10))),
                    })
                }
            }
        };
        let command = Command {
            ts: Timestamp(out.len() as u64),
            action,
        };
        events.clear();
        book.apply(&command, &mut events);
        for record in &events {
            match &record.event {
                Event::Accepted { order } if order.time_in_force == TimeInForce::Gtc => {
                    open.push((order.order_id, account))
                }
                _ => {}
            }
        }
        out.push((kind, command));
    }
    out
}

fn run(book: &mut Book, stream: &[(Kind, Command)]) -> usize {
    let mut events = Vec::with_capacity(64);
    let mut total = 0;
    for (_, command) in stream {
        events.clear();
        book.apply(command, &mut events);
        total += events.len();
    }
    total
}

fn report(scenario: Scenario, stream: &[(Kind, Command)]) {
    println!(
        "\n== {}: {} commands, one book, one thread",
        scenario.name,
        stream.len()
    );
    let mut per_kind = [0usize; 4];
    for (kind, _) in stream {
        per_kind[KINDS.iter().position(|(k, _)| k == kind).unwrap_or(0)] += 1;
    }
    let mix: Vec<String> = KINDS
        .iter()
        .zip(per_kind)
        .map(|((_, name), n)| format!("{name} {:.0}%", 100.0 * n as f64 / stream.len() as f64))
        .collect();
    println!("mix: {}", mix.join(", "));

    // Throughput: whole stream, fresh book each round; report the median of 7 rounds.
    let mut rates = Vec::new();
    let mut events = 0;
    let mut resting = 0;
    for _ in 0..7 {
        let mut book = book();
        let start = Instant::now();
        events = black_box(run(&mut book, stream));
        let elapsed = start.elapsed();
        resting = book.open_orders();
        rates.push(stream.len() as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "throughput: {:.2} M commands/s median (min {:.2}, max {:.2}); {events} events; {resting} orders resting at the end",
        rates[3] / 1e6,
        rates[0] / 1e6,
        rates[6] / 1e6
    );

    // Latency: each command timed on its own; the timer's own cost is measured and shown.
    let mut timer = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..100_000 {
        let start = Instant::now();
        timer.record(start.elapsed().as_nanos() as u64).ok();
    }
    let mut histograms: Vec<Histogram<u64>> = (0..4)
        .map(|_| Histogram::new(3).expect("histogram"))
        .collect();
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    let mut book = book();
    let mut events = Vec::with_capacity(64);
    for (kind, command) in stream {
        events.clear();
        let start = Instant::now();
        book.apply(command, &mut events);
        let nanos = start.elapsed().as_nanos() as u64;
        let slot = KINDS.iter().position(|(k, _)| k == kind).unwrap_or(0);
        histograms[slot].record(nanos).ok();
        all.record(nanos).ok();
    }
    println!(
        "latency per command in ns (timer overhead p50 {} ns, included):",
        timer.value_at_quantile(0.5)
    );
    println!(
        "{:<18} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8}",
        "kind", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    let rows = KINDS.iter().map(|(_, name)| *name).zip(histograms.iter());
    for (name, h) in rows.chain(std::iter::once(("all", &all))) {
        println!(
            "{:<18} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8}",
            name,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

fn main() {
    let streams: Vec<_> = SCENARIOS
        .iter()
        .map(|scenario| (*scenario, stream(STREAM, *scenario)))
        .collect();
    for (scenario, stream) in &streams {
        report(*scenario, stream);
    }
    if std::env::args().any(|arg| arg == "--report-only") {
        return;
    }
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(8));
    let mut group = criterion.benchmark_group("matching");
    for (scenario, stream) in &streams {
        group.throughput(Throughput::Elements(stream.len() as u64));
        group.bench_function(scenario.name, |b| {
            b.iter_batched_ref(book, |book| run(book, stream), BatchSize::LargeInput)
        });
    }
    group.finish();
    criterion.final_summary();
}
