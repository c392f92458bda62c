//! Records written by earlier versions, read so that an upgrade loses nothing.
//!
//! Stored and sent records are postcard, which has no field tags: a new field changes the
//! layout. So every place that keeps a record says which format it is in — command records a
//! leading byte, event records a Kafka header, order documents a `format` field, the embedded
//! database its `meta` table — and a record of an earlier format is read here, into the types
//! it was written from, and converted.
//!
//! Format 1: orders without `quote_quantity` (before market buys by quote budget). Each type
//! below is the earlier layout of the core type of the same name; only the types that contain
//! a [`NewOrder`] differ.
//!
//! Embedded format 4: engine snapshots whose order holds lack the state of amendments on their
//! way to a book (added for the distributed funds stage, issue 15).

use super::{JournalEntry, LogPosition, Origin};
use crate::processing::Processed;
use oms_core::funds::{FundsSnapshot, OrderHold};
use oms_core::{
    AccountId, AmendOrder, Amount, Asset, Balance, BookSnapshot, CancelOrder, ClientOrderId,
    Command, EngineSnapshot, Event, EventRecord, ExpireReason, OrderId, OrderState, OrderStatus,
    OrderType, Price, Quantity, Reject, SelfTradePrevention, Side, Symbol, TimeInForce, Timestamp,
    Trade, Transfer,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct NewOrder {
    order_id: OrderId,
    client_order_id: ClientOrderId,
    account: AccountId,
    symbol: Symbol,
    side: Side,
    order_type: OrderType,
    time_in_force: TimeInForce,
    price: Option<Price>,
    quantity: Quantity,
    post_only: bool,
    self_trade_prevention: SelfTradePrevention,
}

impl From<NewOrder> for oms_core::NewOrder {
    fn from(o: NewOrder) -> oms_core::NewOrder {
        oms_core::NewOrder {
            order_id: o.order_id,
            client_order_id: o.client_order_id,
            account: o.account,
            symbol: o.symbol,
            side: o.side,
            order_type: o.order_type,
            time_in_force: o.time_in_force,
            price: o.price,
            quantity: o.quantity,
            post_only: o.post_only,
            self_trade_prevention: o.self_trade_prevention,
            quote_quantity: None,
        }
    }
}

#[derive(Deserialize)]
enum Action {
    New(NewOrder),
    Cancel(CancelOrder),
    Amend(AmendOrder),
    Deposit(Transfer),
    Withdraw(Transfer),
}

#[derive(Deserialize)]
struct CommandV1 {
    ts: Timestamp,
    action: Action,
}

impl From<CommandV1> for Command {
    fn from(c: CommandV1) -> Command {
        let action = match c.action {
            Action::New(order) => oms_core::Action::New(order.into()),
            Action::Cancel(cancel) => oms_core::Action::Cancel(cancel),
            Action::Amend(amend) => oms_core::Action::Amend(amend),
            Action::Deposit(transfer) => oms_core::Action::Deposit(transfer),
            Action::Withdraw(transfer) => oms_core::Action::Withdraw(transfer),
        };
        Command { ts: c.ts, action }
    }
}

#[derive(Deserialize)]
struct JournalEntryV1 {
    command: CommandV1,
    origin: Origin,
}

#[derive(Deserialize)]
enum EventV1 {
    Accepted {
        order: NewOrder,
    },
    Rejected {
        order: NewOrder,
        reject: Reject,
    },
    Trade(Trade),
    Canceled {
        order_id: OrderId,
        account: AccountId,
        quantity: Quantity,
    },
    Expired {
        order_id: OrderId,
        account: AccountId,
        quantity: Quantity,
        reason: ExpireReason,
    },
    Amended {
        order_id: OrderId,
        account: AccountId,
        price: Price,
        quantity: Quantity,
        leaves: Quantity,
        priority_kept: bool,
    },
    CancelRejected {
        order_id: OrderId,
        account: AccountId,
        reject: Reject,
    },
    AmendRejected {
        order_id: OrderId,
        account: AccountId,
        reject: Reject,
    },
}

impl From<EventV1> for Event {
    fn from(e: EventV1) -> Event {
        match e {
            EventV1::Accepted { order } => Event::Accepted {
                order: order.into(),
            },
            EventV1::Rejected { order, reject } => Event::Rejected {
                order: order.into(),
                reject,
            },
            EventV1::Trade(trade) => Event::Trade(trade),
            EventV1::Canceled {
                order_id,
                account,
                quantity,
            } => Event::Canceled {
                order_id,
                account,
                quantity,
            },
            EventV1::Expired {
                order_id,
                account,
                quantity,
                reason,
            } => Event::Expired {
                order_id,
                account,
                quantity,
                reason,
            },
            EventV1::Amended {
                order_id,
                account,
                price,
                quantity,
                leaves,
                priority_kept,
            } => Event::Amended {
                order_id,
                account,
                price,
                quantity,
                leaves,
                priority_kept,
            },
            EventV1::CancelRejected {
                order_id,
                account,
                reject,
            } => Event::CancelRejected {
                order_id,
                account,
                reject,
            },
            EventV1::AmendRejected {
                order_id,
                account,
                reject,
            } => Event::AmendRejected {
                order_id,
                account,
                reject,
            },
        }
    }
}

#[derive(Deserialize)]
struct EventRecordV1 {
    seq: u64,
    ts: Timestamp,
    symbol: Symbol,
    event: EventV1,
}

impl From<EventRecordV1> for EventRecord {
    fn from(r: EventRecordV1) -> EventRecord {
        EventRecord {
            seq: r.seq,
            ts: r.ts,
            symbol: r.symbol,
            event: r.event.into(),
        }
    }
}

#[derive(Deserialize)]
struct ProcessedV1 {
    position: LogPosition,
    origin: Origin,
    records: Vec<EventRecordV1>,
    rejected: Option<String>,
}

#[derive(Deserialize)]
struct OrderStateV1 {
    order: NewOrder,
    status: OrderStatus,
    filled: Quantity,
    leaves: Quantity,
    filled_notional: u128,
    reject: Option<Reject>,
    expire_reason: Option<ExpireReason>,
    created_at: Timestamp,
    updated_at: Timestamp,
    version: u64,
    seq: u64,
}

/// A command of format 1 (the part of a command record after its origin).
pub fn command(bytes: &[u8]) -> postcard::Result<(Command, &[u8])> {
    postcard::take_from_bytes::<CommandV1>(bytes).map(|(command, rest)| (command.into(), rest))
}

/// A journal entry of format 1 (the embedded journal's values).
pub fn journal_entry(bytes: &[u8]) -> postcard::Result<JournalEntry> {
    let entry: JournalEntryV1 = postcard::from_bytes(bytes)?;
    Ok(JournalEntry {
        command: entry.command.into(),
        origin: entry.origin,
    })
}

/// An events topic payload of format 1.
pub fn processed(bytes: &[u8]) -> postcard::Result<Processed> {
    let p: ProcessedV1 = postcard::from_bytes(bytes)?;
    Ok(Processed {
        position: p.position,
        origin: p.origin,
        records: p.records.into_iter().map(EventRecord::from).collect(),
        rejected: p.rejected,
    })
}

/// An order state of format 1 (the projection's order values and documents).
pub fn order_state(bytes: &[u8]) -> postcard::Result<OrderState> {
    let s: OrderStateV1 = postcard::from_bytes(bytes)?;
    Ok(OrderState {
        order: s.order.into(),
        status: s.status,
        filled: s.filled,
        leaves: s.leaves,
        filled_notional: s.filled_notional,
        reject: s.reject,
        expire_reason: s.expire_reason,
        created_at: s.created_at,
        updated_at: s.updated_at,
        version: s.version,
        seq: s.seq,
    })
}

/// An order's hold as formats 2 to 4 of the embedded database stored it in the engine
/// snapshot: without the state of amendments and quote budgets on their way to a book, which
/// single-node mode never has between two commands.
#[derive(Deserialize)]
struct OrderHoldV4 {
    order_id: OrderId,
    account: AccountId,
    symbol: Symbol,
    side: Side,
    price: Price,
    quantity: Quantity,
    leaves: Quantity,
    held: Amount,
}

#[derive(Deserialize)]
struct FundsSnapshotV4 {
    seq: u64,
    balances: Vec<(AccountId, Asset, Balance)>,
    orders: Vec<OrderHoldV4>,
}

#[derive(Deserialize)]
struct EngineSnapshotV4 {
    funds: FundsSnapshotV4,
    books: Vec<BookSnapshot>,
}

/// The embedded database's engine snapshot of formats 2 to 4: its journal position and the
/// engine state.
pub fn engine_snapshot(bytes: &[u8]) -> postcard::Result<(u64, EngineSnapshot)> {
    let (position, snapshot): (u64, EngineSnapshotV4) = postcard::from_bytes(bytes)?;
    let orders = snapshot
        .funds
        .orders
        .into_iter()
        .map(|hold| OrderHold {
            order_id: hold.order_id,
            account: hold.account,
            symbol: hold.symbol,
            side: hold.side,
            price: hold.price,
            quantity: hold.quantity,
            leaves: hold.leaves,
            held: hold.held,
            budget: false,
            amending: 0,
            ceiling: (hold.price, hold.quantity),
        })
        .collect();
    let funds = FundsSnapshot {
        seq: snapshot.funds.seq,
        balances: snapshot.funds.balances,
        orders,
    };
    Ok((
        position,
        EngineSnapshot {
            funds,
            books: snapshot.books,
        },
    ))
}
