//! Property tests of money on random streams of deposits, withdrawals, orders, cancels and
//! amendments (the book's streams, with transfers mixed in, fees on or off, limits on or off).
//!
//! After every command: for every asset, the totals of all accounts (fee account included)
//! equal deposits minus withdrawals; `held` equals what the open orders hold, and every resting
//! order holds exactly what it still needs; no balance went negative (the arithmetic would
//! have failed a debug assertion or overflowed). Separately: an engine restored from a snapshot
//! taken anywhere in a stream continues with exactly the output of an uninterrupted run.

use super::*;
use crate::book::proptests::{ACCOUNTS, Op, commands, limits, op, shaped_op};
use crate::command::Command;
use crate::engine::{Engine, Output};
use crate::instrument::{Instrument, InstrumentSpec};
use crate::risk::RiskLimits;
use crate::test_support::btc;
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Move {
    Deposit,
    Withdraw,
}

/// A transfer, and where in the order stream it goes.
#[derive(Clone, Debug)]
struct TransferOp {
    at: usize,
    kind: Move,
    account: usize,
    base: bool,
    amount: Amount,
}

#[derive(Clone, Debug)]
enum Input {
    Command(Command),
    Transfer(Move, Transfer),
}

fn transfer_op() -> impl Strategy<Value = TransferOp> {
    (
        any::<usize>(),
        prop_oneof![3 => Just(Move::Deposit), 1 => Just(Move::Withdraw)],
        0..ACCOUNTS.len(),
        any::<bool>(),
        1u128..=3_000,
    )
        .prop_map(|(at, kind, account, base, amount)| TransferOp {
            at,
            kind,
            account,
            base,
            amount,
        })
}

/// Some accounts start rich, some poor, so that both fills and refusals happen.
fn opening() -> impl Strategy<Value = Vec<(Amount, Amount)>> {
    prop::collection::vec((0u128..=200, 0u128..=20_000), ACCOUNTS.len())
}

fn spec(fees: bool) -> InstrumentSpec {
    InstrumentSpec {
        maker_fee_bps: if fees { 10 } else { 0 },
        taker_fee_bps: if fees { 25 } else { 0 },
        ..btc()
    }
}

fn inputs(opening: &[(Amount, Amount)], ops: &[Op], transfers: &[TransferOp]) -> Vec<Input> {
    let mut out: Vec<Input> = Vec::new();
    let mut id = 0;
    let mut transfer = |kind: Move, account: usize, base: bool, amount: Amount| {
        id += 1;
        Input::Transfer(
            kind,
            Transfer {
                transfer_id: id,
                account: ACCOUNTS[account].into(),
                asset: if base { "BTC" } else { "USDT" }.into(),
                amount,
            },
        )
    };
    for (account, (base, quote)) in opening.iter().enumerate() {
        for (is_base, amount) in [(true, *base), (false, *quote)] {
            if amount > 0 {
                out.push(transfer(Move::Deposit, account, is_base, amount));
            }
        }
    }
    let orders: Vec<Input> = commands(ops).into_iter().map(Input::Command).collect();
    let mut placed: Vec<(usize, Input)> = transfers
        .iter()
        .map(|t| {
            let at = t.at % (orders.len() + 1);
            (at, transfer(t.kind.clone(), t.account, t.base, t.amount))
        })
        .collect();
    placed.sort_by_key(|(at, _)| *at);
    let mut placed = placed.into_iter().peekable();
    for (i, order) in orders.into_iter().enumerate() {
        while let Some((_, input)) = placed.next_if(|(at, _)| *at == i) {
            out.push(input);
        }
        out.push(order);
    }
    out.extend(placed.map(|(_, input)| input));
    out
}

fn engine(fees: bool, limits: &RiskLimits) -> Engine {
    Engine::new(&[Instrument::new(spec(fees)).unwrap()], limits).unwrap()
}

/// Applies one input; gives whether a transfer went through.
fn apply(engine: &mut Engine, input: &Input, out: &mut Output) -> bool {
    match input {
        Input::Command(command) => {
            engine.apply(command, out);
            false
        }
        Input::Transfer(Move::Deposit, transfer) => {
            engine.deposit(transfer.ts(), transfer, out).is_ok()
        }
        Input::Transfer(Move::Withdraw, transfer) => {
            engine.withdraw(transfer.ts(), transfer, out).is_ok()
        }
    }
}

impl Transfer {
    fn ts(&self) -> crate::types::Timestamp {
        crate::types::Timestamp(self.transfer_id)
    }
}

fn invariants_hold(fees: bool, limits: &RiskLimits, inputs: &[Input]) {
    let mut engine = engine(fees, limits);
    let mut net: BTreeMap<Asset, i128> = BTreeMap::new();
    let mut out = Output::default();
    for input in inputs {
        out.clear();
        let moved = apply(&mut engine, input, &mut out);
        if let (true, Input::Transfer(kind, transfer)) = (moved, input) {
            let sign = match kind {
                Move::Deposit => 1,
                Move::Withdraw => -1,
            };
            *net.entry(transfer.asset.clone()).or_insert(0) += sign * transfer.amount as i128;
        }
        let funds = engine.funds();
        let totals: BTreeMap<Asset, i128> = funds
            .totals()
            .into_iter()
            .map(|(asset, total)| (asset, total as i128))
            .filter(|(_, total)| *total != 0)
            .collect();
        let expected: BTreeMap<Asset, i128> = net
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(a, n)| (a.clone(), *n))
            .collect();
        assert_eq!(totals, expected, "conservation after {input:?}");
        assert_eq!(
            funds.held_balances(),
            funds.held_by_orders(),
            "after {input:?}"
        );
        for book in engine.books() {
            let market = funds.market(book.instrument().symbol()).unwrap();
            let snapshot = book.snapshot();
            for order in snapshot.bids.iter().chain(&snapshot.asks) {
                let needs = match order.side {
                    Side::Buy => market.quote(order.price, order.leaves),
                    Side::Sell => market.base(order.leaves),
                };
                assert_eq!(funds.order_held(order.order_id), needs, "after {input:?}");
            }
        }
        // Every entry's balance is the one funds reports, in order.
        for entry in &out.ledger {
            assert!(
                entry.available_change != 0 || entry.held_change != 0,
                "{entry:?}"
            );
        }
        if let Some(last) = out.ledger.last() {
            assert_eq!(last.seq, funds.seq());
        }
    }
}

fn replay_equals_run(fees: bool, limits: &RiskLimits, inputs: &[Input], cut: usize) {
    let cut = cut % (inputs.len() + 1);
    let mut whole = engine(fees, limits);
    let mut expected = Output::default();
    for input in inputs {
        apply(&mut whole, input, &mut expected);
    }
    let mut first = engine(fees, limits);
    let mut before = Output::default();
    for input in &inputs[..cut] {
        apply(&mut first, input, &mut before);
    }
    let snapshot = first.snapshot();
    let instruments = [Instrument::new(spec(fees)).unwrap()];
    let mut restored = Engine::restore(&instruments, limits, &snapshot).unwrap();
    let mut after = Output::default();
    for input in &inputs[cut..] {
        apply(&mut restored, input, &mut after);
    }
    let mut joined = before;
    joined.events.extend(after.events);
    joined.ledger.extend(after.ledger);
    assert_eq!(joined, expected);
    assert_eq!(restored.snapshot(), whole.snapshot());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn money_is_conserved_and_holds_match_orders(
        fees in any::<bool>(),
        limits in limits(),
        opening in opening(),
        ops in prop::collection::vec(op(), 1..150),
        transfers in prop::collection::vec(transfer_op(), 0..20),
    ) {
        invariants_hold(fees, &limits, &inputs(&opening, &ops, &transfers));
    }

    #[test]
    fn money_is_conserved_on_the_benchmark_shape(
        fees in any::<bool>(),
        opening in opening(),
        ops in prop::collection::vec(shaped_op(), 1..150),
        transfers in prop::collection::vec(transfer_op(), 0..20),
    ) {
        invariants_hold(fees, &RiskLimits::default(), &inputs(&opening, &ops, &transfers));
    }

    #[test]
    fn funds_snapshot_and_replay_equal_an_uninterrupted_run(
        fees in any::<bool>(),
        limits in limits(),
        opening in opening(),
        ops in prop::collection::vec(op(), 1..120),
        transfers in prop::collection::vec(transfer_op(), 0..20),
        cut in any::<usize>(),
    ) {
        replay_equals_run(fees, &limits, &inputs(&opening, &ops, &transfers), cut);
    }
}

/// Funds split by account over `count` partitions, as the distributed funds stage will be
/// (issue 15): each partition holds for its own accounts' commands, with the hold price the
/// edge would stamp on a market buy, and settles the events of its accounts' orders (a trade
/// reaches the partitions of both sides). Every account ends with the balances, and every
/// partition with the holds, of one engine that did everything; the fee account is split
/// across partitions and its parts add up to the one engine's.
fn partitions_settle_like_one(fees: bool, limits: &RiskLimits, inputs: &[Input], count: usize) {
    let instruments = [Instrument::new(spec(fees)).unwrap()];
    let mut whole = engine(fees, limits);
    let mut parts: Vec<Funds> = (0..count)
        .map(|_| Funds::new(&instruments).unwrap())
        .collect();
    let partition = |account: &str| {
        ACCOUNTS
            .iter()
            .position(|a| *a == account)
            .expect("a test account")
            % count
    };
    let mut out = Output::default();
    let mut ledger = Vec::new();
    for input in inputs {
        out.clear();
        match input {
            Input::Transfer(kind, transfer) => {
                let funds = &mut parts[partition(&transfer.account)];
                let ts = transfer.ts();
                let (one, split) = match kind {
                    Move::Deposit => (
                        whole.deposit(ts, transfer, &mut out),
                        funds.deposit(ts, transfer, &mut ledger),
                    ),
                    Move::Withdraw => (
                        whole.withdraw(ts, transfer, &mut out),
                        funds.withdraw(ts, transfer, &mut ledger),
                    ),
                };
                assert_eq!(one, split, "{input:?}");
            }
            Input::Command(command) => {
                let hold_price = match &command.action {
                    crate::command::Action::New(order)
                        if order.order_type == crate::types::OrderType::Market
                            && order.side == Side::Buy =>
                    {
                        whole
                            .book(&order.symbol)
                            .and_then(|book| book.market_limit(Side::Buy))
                    }
                    _ => None,
                };
                whole.apply(command, &mut out);
                let funds = &mut parts[partition(command.action.account())];
                let refused = match &command.action {
                    crate::command::Action::New(order) => funds
                        .hold_order(command.ts, order, hold_price, &mut ledger)
                        .err(),
                    crate::command::Action::Amend(amend) => {
                        funds.hold_amend(command.ts, amend, &mut ledger).err()
                    }
                    _ => None,
                };
                // A partition refuses exactly what the one engine's funds refused, and the
                // book recorded that refusal.
                if let Some(refused) = refused {
                    let recorded = out.events.iter().any(|record| {
                        matches!(
                            &record.event,
                            Event::Rejected { reject, .. } | Event::AmendRejected { reject, .. }
                                if *reject == refused
                        )
                    });
                    assert!(recorded, "partition refused {refused:?} for {command:?}");
                }
                for record in &out.events {
                    let mut touched: Vec<usize> = match &record.event {
                        Event::Trade(trade) => vec![
                            partition(&trade.taker.account),
                            partition(&trade.maker.account),
                        ],
                        Event::Accepted { order } | Event::Rejected { order, .. } => {
                            vec![partition(&order.account)]
                        }
                        Event::Canceled { account, .. }
                        | Event::Expired { account, .. }
                        | Event::Amended { account, .. }
                        | Event::CancelRejected { account, .. }
                        | Event::AmendRejected { account, .. } => vec![partition(account)],
                    };
                    touched.dedup();
                    for part in touched {
                        parts[part].settle(record, &mut ledger);
                    }
                }
            }
        }
        for funds in &parts {
            assert_eq!(
                funds.held_balances(),
                funds.held_by_orders(),
                "after {input:?}"
            );
        }
    }
    for account in ACCOUNTS {
        assert_eq!(
            parts[partition(account)].balances_of(account),
            whole.funds().balances_of(account),
            "{account}"
        );
    }
    let mut fees_split: BTreeMap<Asset, Amount> = BTreeMap::new();
    for funds in &parts {
        for (asset, balance) in funds.balances_of(FEE_ACCOUNT) {
            *fees_split.entry(asset).or_default() += balance.available + balance.held;
        }
    }
    let fees_whole: BTreeMap<Asset, Amount> = whole
        .funds()
        .balances_of(FEE_ACCOUNT)
        .into_iter()
        .map(|(asset, balance)| (asset, balance.available + balance.held))
        .collect();
    assert_eq!(
        fees_split
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<_, _>>(),
        fees_whole
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<_, _>>()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn funds_split_by_account_settle_like_one(
        fees in any::<bool>(),
        limits in limits(),
        opening in opening(),
        ops in prop::collection::vec(op(), 1..150),
        transfers in prop::collection::vec(transfer_op(), 0..20),
        count in 2usize..=3,
    ) {
        partitions_settle_like_one(fees, &limits, &inputs(&opening, &ops, &transfers), count);
    }
}

/// What the account-keyed log of one funds partition carries: clients' commands (with the
/// hold price the edge stamped) and the settlements the matching stage sends back.
#[derive(Clone, Debug)]
enum AccountInput {
    Client(Command, Option<Price>),
    Settle(EventRecord),
}

/// The distributed pipeline with its logs lagging at random: `count` funds partitions, each
/// consuming its account log; one book consuming the symbol log of funded commands; the book's
/// events going back, as settlements, to the partitions of the accounts they touch. `schedule`
/// decides, step by step, which log moves next (or that the next client command arrives), so
/// holds, forwarded orders and settlements interleave in every order Kafka could deliver them.
/// Once every log is drained: money is conserved per asset, every partition's held equals what
/// its open orders hold, every resting order holds exactly what it still needs, and nothing is
/// held for an order that no longer rests. No balance ever goes negative on the way (debug
/// assertions and checked arithmetic).
fn pipeline_conserves_money(
    fees: bool,
    limits: &RiskLimits,
    inputs: &[Input],
    count: usize,
    schedule: &[u8],
) {
    use crate::command::{Action, Funding};
    use std::collections::VecDeque;
    let instruments = [Instrument::new(spec(fees)).unwrap()];
    let mut book = crate::Book::new(instruments[0].clone(), limits).unwrap();
    let mut parts: Vec<Funds> = (0..count)
        .map(|_| Funds::new(&instruments).unwrap())
        .collect();
    let partition = |account: &str| {
        ACCOUNTS
            .iter()
            .chain(std::iter::once(&FEE_ACCOUNT))
            .position(|a| *a == account)
            .expect("a test account")
            % count
    };
    let mut account_logs: Vec<VecDeque<AccountInput>> = vec![VecDeque::new(); count];
    let mut symbol_log: VecDeque<(Command, Funding)> = VecDeque::new();
    let mut net: BTreeMap<Asset, i128> = BTreeMap::new();
    let mut pending = inputs.iter().peekable();
    let mut steps = schedule.iter().copied().cycle();
    let mut ledger = Vec::new();
    let mut events = Vec::new();
    loop {
        // The step the schedule names, or the next one after it that can move.
        let ready =
            |step: usize, pending: &mut std::iter::Peekable<std::slice::Iter<'_, Input>>| match step
            {
                0 => pending.peek().is_some(),
                part if part <= count => !account_logs[part - 1].is_empty(),
                _ => !symbol_log.is_empty(),
            };
        let first = steps.next().unwrap_or(0) as usize;
        let Some(step) = (0..count + 2)
            .map(|offset| (first + offset) % (count + 2))
            .find(|step| ready(*step, &mut pending))
        else {
            break;
        };
        match step {
            0 => {
                let input = pending.next().expect("ready");
                let command = match input {
                    Input::Command(command) => command.clone(),
                    Input::Transfer(kind, transfer) => Command {
                        ts: transfer.ts(),
                        action: match kind {
                            Move::Deposit => Action::Deposit(transfer.clone()),
                            Move::Withdraw => Action::Withdraw(transfer.clone()),
                        },
                    },
                };
                // The edge stamps the limit the matching stage last published: stale by the
                // time funds and the book see the order, which the cap must make harmless.
                let hold_price = book.market_limit(Side::Buy);
                account_logs[partition(command.action.account())]
                    .push_back(AccountInput::Client(command, hold_price));
            }
            part if part <= count => {
                let Some(input) = account_logs[part - 1].pop_front() else {
                    continue;
                };
                let funds = &mut parts[part - 1];
                match input {
                    AccountInput::Client(command, hold_price) => {
                        match funds.command(&command, hold_price, &mut ledger) {
                            Decided::Transfer(outcome) => {
                                if outcome.reject.is_none() {
                                    let sign = match outcome.kind {
                                        TransferKind::Deposit => 1,
                                        TransferKind::Withdrawal => -1,
                                    };
                                    *net.entry(outcome.transfer.asset.clone()).or_insert(0) +=
                                        sign * outcome.transfer.amount as i128;
                                }
                            }
                            Decided::Order(funding) => symbol_log.push_back((command, funding)),
                        }
                    }
                    AccountInput::Settle(record) => {
                        funds.settle(&record, &mut ledger);
                        // Between settlements too, every partition's holds add up.
                        assert_eq!(funds.held_balances(), funds.held_by_orders(), "{record:?}");
                    }
                }
            }
            _ => {
                let Some((command, funding)) = symbol_log.pop_front() else {
                    continue;
                };
                events.clear();
                book.apply_funded(&command, &funding, &mut events);
                for record in &events {
                    // Once per partition: both sides of a trade may live in the same one.
                    let mut to: Vec<usize> = record
                        .event
                        .settled_accounts()
                        .map(|a| partition(a))
                        .collect();
                    to.dedup();
                    for part in to {
                        account_logs[part].push_back(AccountInput::Settle(record.clone()));
                    }
                }
            }
        }
    }
    let mut totals: BTreeMap<Asset, i128> = BTreeMap::new();
    for funds in &parts {
        for (asset, total) in funds.totals() {
            *totals.entry(asset).or_insert(0) += total as i128;
        }
        assert_eq!(funds.held_balances(), funds.held_by_orders());
    }
    let nonzero = |map: BTreeMap<Asset, i128>| {
        map.into_iter()
            .filter(|(_, n)| *n != 0)
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(nonzero(totals), nonzero(net), "conservation");
    let market = parts[0].market(book.instrument().symbol()).unwrap().clone();
    let snapshot = book.snapshot();
    let mut resting = std::collections::BTreeSet::new();
    for order in snapshot.bids.iter().chain(&snapshot.asks) {
        let needs = match order.side {
            Side::Buy => market.quote(order.price, order.leaves),
            Side::Sell => market.base(order.leaves),
        };
        let funds = &parts[partition(&order.account)];
        assert_eq!(funds.order_held(order.order_id), needs, "{order:?}");
        resting.insert(order.order_id);
    }
    for funds in &parts {
        for order_id in funds.held_order_ids() {
            assert!(
                resting.contains(&order_id),
                "{order_id:?} holds but does not rest"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn pipeline_with_lagging_logs_conserves_money(
        fees in any::<bool>(),
        limits in limits(),
        opening in opening(),
        ops in prop::collection::vec(op(), 1..150),
        transfers in prop::collection::vec(transfer_op(), 0..20),
        count in 1usize..=3,
        schedule in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        pipeline_conserves_money(
            fees,
            &limits,
            &inputs(&opening, &ops, &transfers),
            count,
            &schedule,
        );
    }
}
