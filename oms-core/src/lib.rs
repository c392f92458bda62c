//! The order domain of the OMS, pure and deterministic: instruments, pre-trade risk and
//! price-time matching, with no IO, no async runtime and no clock.
//!
//! Everything else stands on this crate: the runtime feeds [`Command`]s from its journal into a
//! [`Book`] per instrument and stores the [`EventRecord`]s it returns; the read projection folds
//! them into [`OrderState`]s; the HTTP edge runs the same [`Checks`] before journaling so bad
//! orders get a 4xx. Prices and quantities are decimals only at the edge ([`Instrument`] converts
//! them); inside they are integer counts of ticks and lots.
//!
//! # Determinism
//! A book's state and events are a function of the commands applied to it, in order. Time comes
//! in with each command; clippy's `disallowed-methods` (see `clippy.toml`) keeps clocks and
//! randomly seeded hash maps out of this crate.

pub mod book;
pub mod command;
pub mod engine;
pub mod event;
pub mod funds;
pub mod instrument;
pub mod order;
pub mod properties;
pub mod reject;
pub mod risk;
pub mod types;

#[cfg(test)]
pub(crate) mod test_support;

pub use book::{Book, BookSnapshot, Depth, RestingOrder, RestoreError};
pub use command::{Action, AmendOrder, CancelAll, CancelOrder, Command, Funding, NewOrder};
pub use engine::{Engine, EngineError, EngineSnapshot, Output, TransferKind, TransferOutcome};
pub use event::{Event, EventRecord, ExpireReason, Fill, Trade};
pub use funds::{Amount, Asset, Balance, EntryKind, FEE_ACCOUNT, Funds, LedgerEntry, Transfer};
pub use instrument::{Instrument, InstrumentSpec, InstrumentStatus, SpecError};
pub use order::OrderState;
pub use reject::{Field, Reject, RejectReason};
pub use risk::{Checks, RiskError, RiskLimits};
pub use types::{
    AccountId, ClientOrderId, OrderId, OrderStatus, OrderType, Price, Quantity,
    SelfTradePrevention, Side, Symbol, TimeInForce, Timestamp,
};
