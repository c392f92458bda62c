//! The trading pipeline of one process: funds and every book, one command at a time.
//!
//! ```text
//! new order ─▶ Funds::hold_order ─ok─▶ Book::apply ─▶ Funds::settle (each event)
//!                     └─refused─▶ Book::reject (the order ends `rejected`, insufficient_funds)
//! amendment ─▶ Funds::hold_amend ─ok─▶ Book::apply ─▶ Funds::settle
//! cancel, mass cancel ───────────────▶ Book::apply ─▶ Funds::settle (a mass cancel of every
//!                                                     instrument: each book in turn)
//! deposit, withdrawal ─▶ Funds
//! ```
//! Each command is finished, settlement included, before the next begins, so the state after
//! a journal is a function of the journal: a restart is a snapshot plus a replay.

use crate::book::{Book, BookSnapshot, RestoreError};
use crate::command::{Action, Command};
use crate::event::EventRecord;
use crate::funds::{Decided, Funds, FundsError, FundsSnapshot, LedgerEntry, Transfer};
pub use crate::funds::{TransferKind, TransferOutcome};
use crate::instrument::Instrument;
use crate::reject::Reject;
use crate::risk::{RiskError, RiskLimits};
use crate::types::{OrderType, Side, Symbol, Timestamp};
use serde::{Deserialize, Serialize};

/// What one command did: book events, ledger entries and transfer outcomes, each in the
/// order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Order events of the books.
    pub events: Vec<EventRecord>,
    /// Balance changes.
    pub ledger: Vec<LedgerEntry>,
    /// Deposits and withdrawals, done or refused.
    pub transfers: Vec<TransferOutcome>,
}

impl Output {
    /// Empties all, keeping their memory.
    pub fn clear(&mut self) {
        self.events.clear();
        self.ledger.clear();
        self.transfers.clear();
    }
}

/// Why an engine cannot be built or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The risk limits do not apply to an instrument.
    #[error(transparent)]
    Risk(#[from] RiskError),
    /// Funds cannot count an asset, or their snapshot does not fit.
    #[error(transparent)]
    Funds(#[from] FundsError),
    /// A book snapshot does not fit.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A snapshot lacks a configured instrument or has one that is not configured.
    #[error("snapshot books {found:?} do not match the instruments {expected:?}")]
    Books {
        /// Configured.
        expected: Vec<Symbol>,
        /// In the snapshot.
        found: Vec<Symbol>,
    },
}

/// The whole state of an engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// Balances and holds.
    pub funds: FundsSnapshot,
    /// Every book, by symbol.
    pub books: Vec<BookSnapshot>,
}

/// Funds and books of every configured instrument.
pub struct Engine {
    funds: Funds,
    /// By funds' market index: one lookup finds both.
    books: Vec<Book>,
}

impl Engine {
    /// Empty books and no money.
    pub fn new(instruments: &[Instrument], limits: &RiskLimits) -> Result<Engine, EngineError> {
        let funds = Funds::new(instruments)?;
        let mut books = Vec::new();
        for instrument in instruments {
            books.push(Book::new(instrument.clone(), limits)?);
        }
        Engine::check(&funds, &books)?;
        Ok(Engine { funds, books })
    }

    /// Balances and holds.
    pub fn funds(&self) -> &Funds {
        &self.funds
    }

    /// One book.
    pub fn book(&self, symbol: &str) -> Option<&Book> {
        self.books.get(self.funds.market_index(symbol)?)
    }

    /// Every book.
    pub fn books(&self) -> impl Iterator<Item = &Book> {
        self.books.iter()
    }

    /// About how many records a snapshot holds: accounts, holds and resting orders. What a
    /// snapshot costs grows with it.
    pub fn records(&self) -> usize {
        self.funds.records() + self.books.iter().map(Book::open_orders).sum::<usize>()
    }

    /// Books and funds' markets must line up, index for index.
    fn check(funds: &Funds, books: &[Book]) -> Result<(), EngineError> {
        let aligned = books.len() == funds.markets()
            && books
                .iter()
                .enumerate()
                .all(|(index, book)| funds.market_index(book.instrument().symbol()) == Some(index));
        if aligned {
            Ok(())
        } else {
            let symbols = books
                .iter()
                .map(|book| book.instrument().symbol().clone())
                .collect();
            Err(EngineError::Books {
                expected: symbols,
                found: Vec::new(),
            })
        }
    }

    /// Applies a command: funds first, then (an order command) its book, then funds settle
    /// what the book did. A command for an instrument that is not configured changes nothing
    /// (the edge refuses those; a journal may hold some after a configuration change).
    pub fn apply(&mut self, command: &Command, out: &mut Output) {
        let Engine { funds, books } = self;
        let market = command
            .action
            .symbol()
            .and_then(|symbol| funds.market_index(symbol));
        let hold_price = match (&command.action, market) {
            (Action::New(order), Some(market))
                if order.order_type == OrderType::Market && order.side == Side::Buy =>
            {
                books[market].market_limit(Side::Buy)
            }
            _ => None,
        };
        let funding = match funds.command_in(market, command, hold_price, &mut out.ledger) {
            Decided::Transfer(outcome) => return out.transfers.push(outcome),
            Decided::Order(funding) => funding,
        };
        let markets = match (market, &command.action) {
            (Some(market), _) => market..market + 1,
            // A mass cancel of every instrument goes to every book, in funds' market order.
            (None, Action::CancelAll(cancel)) if cancel.symbol.is_none() => 0..books.len(),
            (None, _) => return,
        };
        for market in markets {
            let first = out.events.len();
            books[market].apply_funded(command, &funding, &mut out.events);
            for record in &out.events[first..] {
                funds.settle(record, &mut out.ledger);
            }
        }
    }

    /// Credits a deposit.
    pub fn deposit(
        &mut self,
        ts: Timestamp,
        transfer: &Transfer,
        out: &mut Output,
    ) -> Result<(), Reject> {
        self.funds.deposit(ts, transfer, &mut out.ledger)
    }

    /// Debits a withdrawal, at most what is available.
    pub fn withdraw(
        &mut self,
        ts: Timestamp,
        transfer: &Transfer,
        out: &mut Output,
    ) -> Result<(), Reject> {
        self.funds.withdraw(ts, transfer, &mut out.ledger)
    }

    /// The state as data.
    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            funds: self.funds.snapshot(),
            books: self.books.iter().map(Book::snapshot).collect(),
        }
    }

    /// An engine for `instruments` under `limits` in the state of `snapshot`.
    pub fn restore(
        instruments: &[Instrument],
        limits: &RiskLimits,
        snapshot: &EngineSnapshot,
    ) -> Result<Engine, EngineError> {
        let expected: Vec<Symbol> = instruments.iter().map(|i| i.symbol().clone()).collect();
        let mut found: Vec<Symbol> = snapshot.books.iter().map(|b| b.symbol.clone()).collect();
        found.sort();
        let mut sorted = expected.clone();
        sorted.sort();
        if sorted != found {
            return Err(EngineError::Books { expected, found });
        }
        let funds = Funds::restore(instruments, &snapshot.funds)?;
        let mut books = Vec::new();
        for instrument in instruments {
            let book = snapshot
                .books
                .iter()
                .find(|book| &book.symbol == instrument.symbol())
                .cloned()
                .ok_or_else(|| EngineError::Books {
                    expected: expected.clone(),
                    found: found.clone(),
                })?;
            books.push(Book::restore(instrument.clone(), limits, book)?);
        }
        Engine::check(&funds, &books)?;
        Ok(Engine { funds, books })
    }
}
