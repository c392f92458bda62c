//! Matching-core benchmark on a realistic mixed stream for one book on one core.
//!
//! The stream is what a liquid crypto book sees: mostly passive limit orders placed, canceled
//! and amended within a few ticks of the touch, and a minority of aggressive orders (marketable
//! IOC limits and market orders) that take one to a few levels. A seeded generator drives a book
//! while it builds the stream, so cancels and amendments name orders that are open at that point.
//!
//! Each scenario runs twice: through the book alone, and through funds and the book (the
//! [`Engine`] of single-node mode: holds, settlement, fees at 10/20 bps, the ledger), every
//! account funded far beyond what it spends.
//!
//! Run: `cargo bench -p oms-core --bench matching` (add `-- --report-only` to skip criterion,
//! `--scenario <part of a name>` to run only the scenarios whose name contains it, `--funds` to
//! run only the funds + matching half).
//! It prints commands/s over the whole stream, how long a snapshot of the final state takes,
//! per-command latency percentiles by kind, events and heap allocations per command (a counting
//! global allocator, `stats_alloc`; its atomic counters are in every figure).

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads the clock; the core never does"
)]

use criterion::{BatchSize, Criterion, Throughput};
use hdrhistogram::Histogram;
use oms_core::{
    Action, AmendOrder, Book, CancelOrder, Command, Engine, Event, EventRecord, Instrument,
    InstrumentSpec, InstrumentStatus, NewOrder, OrderId, OrderType, Output, Price, Quantity,
    RiskLimits, SelfTradePrevention, Side, TimeInForce, Timestamp, Transfer,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

const SEED: u64 = 0x0B5_2026;

/// The system allocator, counting.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations so far, reallocations (which may move) included.
fn allocations() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Place,
    Cancel,
    Amend,
    Aggressive,
    Cross,
}

const KINDS: [(Kind, &str); 5] = [
    (Kind::Place, "place (passive)"),
    (Kind::Cancel, "cancel"),
    (Kind::Amend, "amend"),
    (Kind::Aggressive, "aggressive"),
    (Kind::Cross, "crossing gtc"),
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
        max_price: None,
        reference_price: None,
        maker_fee_bps: 10,
        taker_fee_bps: 20,
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

/// A stream's shape. Each command's kind is drawn by percentage, in the order place, cancel,
/// amend, aggressive (IOC or market), crossing GTC; a cancel or amend with too few open orders,
/// or a placement beyond `max_resting`, becomes the other.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    len: usize,
    accounts: usize,
    place: u32,
    cancel: u32,
    amend: u32,
    aggressive: u32,
    /// Of the aggressive orders, the share that are market orders (the rest are IOC limits).
    market_share: f64,
    max_resting: usize,
    /// Client order ids as long as a UUID's text (36 characters) instead of `c<n>`.
    uuid_client_ids: bool,
}

// Placements and removals balance: the book stays a few thousand orders deep.
const STEADY: Scenario = Scenario {
    name: "steady book",
    len: 1_000_000,
    accounts: 200,
    place: 45,
    cancel: 35,
    amend: 10,
    aggressive: 10,
    market_share: 0.3,
    max_resting: usize::MAX,
    uuid_client_ids: false,
};

// The shape exchange-core's own benchmarks use (and issue 12 compares with): passive GTC
// limits near the touch, cancels, price moves and size reductions, IOC orders across the
// spread, a few GTC limits that cross; about 5,000 orders resting, 3,000 accounts.
const EXCHANGE_CORE: Scenario = Scenario {
    name: "exchange-core shape, short client ids",
    len: 3_000_000,
    accounts: 3_000,
    place: 44,
    cancel: 32,
    amend: 12,
    aggressive: 10,
    market_share: 0.0,
    max_resting: 5_000,
    uuid_client_ids: false,
};

const SCENARIOS: [Scenario; 4] = [
    STEADY,
    // Placements outrun removals: the book grows to about 100k resting orders, most far from
    // the touch, which stresses the id index and the slab's cache footprint.
    Scenario {
        name: "deep book",
        place: 50,
        cancel: 30,
        ..STEADY
    },
    EXCHANGE_CORE,
    // The same with client order ids as long as UUIDs, as many bots send: longer than any
    // string stored inline, so every copy of one is a heap string.
    Scenario {
        name: "exchange-core shape, UUID client ids",
        len: 1_000_000,
        uuid_client_ids: true,
        ..EXCHANGE_CORE
    },
];

fn accounts(scenario: &Scenario) -> Vec<oms_core::AccountId> {
    (0..scenario.accounts)
        .map(|i| format!("acct-{i:04}").into())
        .collect()
}

/// Builds the stream by driving a book, so that cancels and amendments target open orders.
fn stream(scenario: Scenario) -> Vec<(Kind, Command)> {
    let len = scenario.len;
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut book = book();
    let accounts = accounts(&scenario);
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
        let s = scenario;
        let kind = if open.len() < 200 || roll < s.place {
            if open.len() >= s.max_resting {
                Kind::Cancel
            } else {
                Kind::Place
            }
        } else if roll < s.place + s.cancel {
            Kind::Cancel
        } else if roll < s.place + s.cancel + s.amend {
            Kind::Amend
        } else if roll < s.place + s.cancel + s.amend + s.aggressive {
            Kind::Aggressive
        } else {
            Kind::Cross
        };
        let account = rng.random_range(0..s.accounts);
        let action = match kind {
            Kind::Place | Kind::Aggressive | Kind::Cross => {
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
                } else if kind == Kind::Aggressive && rng.random_bool(s.market_share) {
                    (OrderType::Market, TimeInForce::Ioc, None)
                } else {
                    let reach = rng.random_range(0..3);
                    let price = match side {
                        Side::Buy => book.best_ask().map_or(mid, |p| p.0) + reach,
                        Side::Sell => book.best_bid().map_or(mid, |p| p.0) - reach,
                    };
                    let tif = if kind == Kind::Cross {
                        TimeInForce::Gtc
                    } else {
                        TimeInForce::Ioc
                    };
                    (OrderType::Limit, tif, Some(Price(price)))
                };
                Action::New(NewOrder {
                    order_id: OrderId(next_id),
                    client_order_id: if s.uuid_client_ids {
                        format!("00000000-0000-4000-8000-{next_id:012}").into()
                    } else {
                        format!("c{next_id}").into()
                    },
                    account: accounts[account].clone(),
                    symbol: "BTC-USDT".into(),
                    side,
                    order_type,
                    time_in_force,
                    price,
                    quantity: Quantity(rng.random_range(10..2_000)),
                    post_only: kind == Kind::Place && rng.random_bool(0.2),
                    self_trade_prevention: SelfTradePrevention::ExpireTaker,
                    quote_quantity: None,
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

/// What the stream runs through: a book alone, or funds and the book (the engine).
trait Target {
    /// What the report calls it.
    const NAME: &'static str;
    /// Fresh, with every account of `scenario` funded.
    fn new(scenario: &Scenario) -> Self;
    /// Applies a command; gives the events and ledger entries it made.
    fn apply(&mut self, command: &Command) -> usize;
    /// Orders resting.
    fn resting(&self) -> usize;
    /// Takes a snapshot of the whole state; gives the records it holds.
    fn snapshot(&self) -> usize;
}

/// Matching alone.
struct Matching {
    book: Book,
    events: Vec<EventRecord>,
}

impl Target for Matching {
    const NAME: &'static str = "matching";

    fn new(_: &Scenario) -> Self {
        Matching {
            book: book(),
            events: Vec::with_capacity(64),
        }
    }

    fn apply(&mut self, command: &Command) -> usize {
        self.events.clear();
        self.book.apply(command, &mut self.events);
        self.events.len()
    }

    fn resting(&self) -> usize {
        self.book.open_orders()
    }

    fn snapshot(&self) -> usize {
        let snapshot = black_box(self.book.snapshot());
        snapshot.bids.len() + snapshot.asks.len()
    }
}

/// Funds (hold, settle, fees, ledger) and matching, as single-node mode runs them. Every
/// account has far more than it can spend, so the stream trades exactly as on a bare book.
struct WithFunds {
    engine: Engine,
    out: Output,
}

impl Target for WithFunds {
    const NAME: &'static str = "funds + matching";

    fn new(scenario: &Scenario) -> Self {
        let mut engine = Engine::new(&[instrument()], &limits()).expect("valid limits");
        let mut out = Output::default();
        for (i, account) in accounts(scenario).into_iter().enumerate() {
            for (asset, amount) in [("BTC", 10u128.pow(15)), ("USDT", 10u128.pow(22))] {
                let transfer = Transfer {
                    transfer_id: i as u64,
                    account: account.clone(),
                    asset: asset.into(),
                    amount,
                };
                engine
                    .deposit(Timestamp(0), &transfer, &mut out)
                    .expect("deposit");
            }
        }
        out.clear();
        WithFunds { engine, out }
    }

    fn apply(&mut self, command: &Command) -> usize {
        self.out.clear();
        self.engine.apply(command, &mut self.out);
        self.out.events.len() + self.out.ledger.len()
    }

    fn resting(&self) -> usize {
        self.engine.books().map(Book::open_orders).sum()
    }

    fn snapshot(&self) -> usize {
        black_box(self.engine.snapshot());
        self.engine.records()
    }
}

fn run<T: Target>(target: &mut T, stream: &[(Kind, Command)]) -> usize {
    stream
        .iter()
        .map(|(_, command)| target.apply(command))
        .sum()
}

fn report<T: Target>(scenario: Scenario, stream: &[(Kind, Command)]) {
    println!(
        "\n== {}, {}: {} commands, one book, one thread, {} accounts",
        scenario.name,
        T::NAME,
        stream.len(),
        scenario.accounts
    );
    let mut per_kind = [0usize; 5];
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
        let mut target = T::new(&scenario);
        let start = Instant::now();
        events = black_box(run(&mut target, stream));
        let elapsed = start.elapsed();
        resting = target.resting();
        rates.push(stream.len() as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "throughput: {:.2} M commands/s median (min {:.2}, max {:.2}); {events} events and ledger entries; {resting} orders resting at the end",
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
    let mut histograms: Vec<Histogram<u64>> = (0..KINDS.len())
        .map(|_| Histogram::new(3).expect("histogram"))
        .collect();
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    // Allocations and events per kind, from the same pass.
    let mut allocated = [0u64; KINDS.len() + 1];
    let mut emitted = [0u64; KINDS.len() + 1];
    let mut target = T::new(&scenario);
    for (kind, command) in stream {
        let before = allocations();
        let start = Instant::now();
        let made = target.apply(command);
        let nanos = start.elapsed().as_nanos() as u64;
        let slot = KINDS.iter().position(|(k, _)| k == kind).unwrap_or(0);
        for slot in [slot, KINDS.len()] {
            allocated[slot] += allocations() - before;
            emitted[slot] += made as u64;
        }
        histograms[slot].record(nanos).ok();
        all.record(nanos).ok();
    }
    // A snapshot copies the whole state at once, on the thread that runs the commands.
    let mut records = 0;
    let mut copies: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            records = target.snapshot();
            start.elapsed().as_secs_f64()
        })
        .collect();
    copies.sort_by(f64::total_cmp);
    println!(
        "snapshot of the final state: {records} records in {:.2} ms median of 5 ({:.0} ns per record)",
        copies[2] * 1e3,
        copies[2] * 1e9 / records.max(1) as f64
    );
    println!(
        "latency per command in ns (timer overhead p50 {} ns, included); events (and ledger entries) and heap allocations per command:",
        timer.value_at_quantile(0.5)
    );
    println!(
        "{:<18} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7}",
        "kind", "count", "p50", "p90", "p99", "p99.9", "max", "events", "allocs"
    );
    let rows = KINDS.iter().map(|(_, name)| *name).zip(histograms.iter());
    for (slot, (name, h)) in rows.chain(std::iter::once(("all", &all))).enumerate() {
        let per = |total: u64| total as f64 / h.len().max(1) as f64;
        println!(
            "{:<18} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7.2} {:>7.2}",
            name,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            per(emitted[slot]),
            per(allocated[slot])
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|arg| arg == "--scenario")
        .and_then(|at| args.get(at + 1));
    let streams: Vec<_> = SCENARIOS
        .iter()
        .filter(|scenario| only.is_none_or(|only| scenario.name.contains(only.as_str())))
        .map(|scenario| (*scenario, stream(*scenario)))
        .collect();
    let funds_only = args.iter().any(|arg| arg == "--funds");
    for (scenario, stream) in &streams {
        if !funds_only {
            report::<Matching>(*scenario, stream);
        }
        report::<WithFunds>(*scenario, stream);
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
            b.iter_batched_ref(
                || Matching::new(scenario),
                |target| run(target, stream),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("{} + funds", scenario.name), |b| {
            b.iter_batched_ref(
                || WithFunds::new(scenario),
                |target| run(target, stream),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
    criterion.final_summary();
}
