//! Money: balances per account and asset, holds for open orders, settlement of trades, fees,
//! and a ledger entry for every change.
//!
//! [`Funds`] is the account-owned half of the trading pipeline; books are the symbol-owned half:
//!
//! ```text
//! command ─▶ Funds::hold_order / hold_amend ─▶ Book::apply ─▶ Funds::settle(each event)
//!            (account-owned: enough available?)  (symbol-owned)  (account-owned: pay, receive,
//!                                                                 release)
//! ```
//! Funds only ever reads its own state and what the command or event carries, so the same
//! code runs in one process ([`crate::Engine`]) and, account-sharded, across a log.
//!
//! # Rules
//! - A balance is `available` and `held`; the total is both, and neither is ever negative.
//! - A buy holds `leaves × limit price` of the quote asset (a market buy: at its hold price, the
//!   edge of the price band); a sell holds `leaves` of the base asset. Fees need no hold: they
//!   are charged in the asset received, out of what is received.
//! - A trade moves the traded amounts out of the holds; a buy that trades below its limit gets
//!   the difference released. What an order still holds is released when it ends (canceled,
//!   expired, rejected by the book, filled).
//! - An amendment that needs more is held before the book sees it (refused with
//!   `insufficient_funds` otherwise); the book's answer settles the difference.
//! - Fees: the maker's or taker's rate of the instrument, in basis points of what the side
//!   receives, rounded up to a whole unit, credited to [`FEE_ACCOUNT`].
//! - Conservation: per asset, the totals of all accounts (the fee account included) add up to
//!   deposits minus withdrawals.

mod assets;
mod snapshot;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use assets::{Amount, Asset, Assets, MAX_SCALE, Market, ScaleError, fee};
pub use snapshot::{FundsSnapshot, OrderHold};

use crate::command::{Action, AmendOrder, Command, Funding, NewOrder};
use crate::event::{Event, EventRecord, Fill, Trade};
use crate::instrument::Instrument;
use crate::reject::{Field, Reject, RejectReason};
use crate::types::{AccountId, OrderId, OrderType, Price, Quantity, Side, Symbol, Timestamp};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The account that receives every fee.
pub const FEE_ACCOUNT: &str = "fees";

/// One account's amount of one asset.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Free to hold or withdraw.
    pub available: Amount,
    /// Held for open orders.
    pub held: Amount,
}

impl Balance {
    /// Available and held.
    pub fn total(&self) -> Amount {
        self.available + self.held
    }
}

/// A deposit or a withdrawal, with its id assigned upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Unique id.
    pub transfer_id: u64,
    /// The account.
    pub account: AccountId,
    /// The asset.
    pub asset: Asset,
    /// How much, in the asset's units; positive.
    pub amount: Amount,
}

/// Whether a transfer is a deposit or a withdrawal.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Money in.
    Deposit,
    /// Money out.
    Withdrawal,
}

/// A deposit or withdrawal as decided: done, or refused with a reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOutcome {
    /// The timestamp of the command.
    pub ts: Timestamp,
    /// Deposit or withdrawal.
    pub kind: TransferKind,
    /// What was asked.
    pub transfer: Transfer,
    /// Why it was refused; none if it was done.
    pub reject: Option<Reject>,
}

/// What funds did with a client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// An order command, for its book.
    Order(Funding),
    /// A deposit or withdrawal, finished here.
    Transfer(TransferOutcome),
}

fn outcome(
    ts: Timestamp,
    kind: TransferKind,
    transfer: &Transfer,
    done: Result<(), Reject>,
) -> TransferOutcome {
    TransferOutcome {
        ts,
        kind,
        transfer: transfer.clone(),
        reject: done.err(),
    }
}

/// What kind of change a ledger entry records.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money in.
    Deposit,
    /// Money out.
    Withdrawal,
    /// Available to held, for an order.
    Hold,
    /// Held back to available: an order ended, shrank or traded below its limit.
    Release,
    /// Paid or received in a trade.
    Trade,
    /// A fee charged, or (for the fee account) collected.
    Fee,
}

/// What caused a ledger entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A deposit or withdrawal.
    Transfer(u64),
    /// An order's hold or release.
    Order(OrderId),
    /// A trade: the book's sequence number of the trade is its id.
    Trade {
        /// The instrument.
        symbol: Symbol,
        /// The trade id.
        trade_id: u64,
        /// The order of this account in the trade.
        order_id: OrderId,
    },
}

/// One change of one balance, with the balance after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the ledger, from 1.
    pub seq: u64,
    /// The timestamp of the command that caused it.
    pub ts: Timestamp,
    /// The account.
    pub account: AccountId,
    /// The asset.
    pub asset: Asset,
    /// What happened.
    pub kind: EntryKind,
    /// Why.
    pub cause: Cause,
    /// Change of `available`.
    pub available_change: i128,
    /// Change of `held`.
    pub held_change: i128,
    /// The balance after the change.
    pub balance: Balance,
}

/// Why funds cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FundsError {
    /// An asset needs too many decimals.
    #[error(transparent)]
    Scale(#[from] ScaleError),
    /// A snapshot does not fit the configuration.
    #[error("funds snapshot does not fit the configuration: {0}")]
    Snapshot(String),
}

/// The open order state funds needs: enough to know what the order still holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Open {
    /// The account's row in `Funds::table` (its name is there).
    slot: usize,
    /// Index into `Funds::markets`.
    market: usize,
    side: Side,
    /// The price a buy holds at per lot (its limit, or a market buy's hold price).
    price: Price,
    /// Total quantity, filled included.
    quantity: Quantity,
    /// Open quantity.
    leaves: Quantity,
    /// What it holds now, in the quote (buy) or base (sell) asset.
    held: Amount,
    /// A market buy sized by a quote budget: each trade pays out of the hold what it costs.
    /// Such an order never rests, but it may be on its way to the book when a funds stage
    /// takes its snapshot.
    budget: bool,
    /// Amendments held for (or refused) that the book has not answered yet. Only when the last
    /// is answered does the order's hold shrink to what it needs: until then the book may be in
    /// the state any of them leaves, and an amendment held while another is on its way counts
    /// on that one's hold.
    amending: u32,
    /// While amendments are unanswered: the highest price and quantity any of them may leave
    /// (the current ones otherwise).
    top_price: Price,
    top_quantity: Quantity,
}

impl Open {
    /// The highest price and quantity the order may have once the book answered every
    /// amendment on its way.
    fn ceiling(&self) -> (Price, Quantity) {
        if self.amending == 0 {
            (self.price, self.quantity)
        } else {
            (self.top_price, self.top_quantity)
        }
    }
}

/// A market with the indexes of its assets.
#[derive(Clone, Debug)]
struct Venue {
    market: Market,
    base: usize,
    quote: usize,
}

impl Venue {
    /// The index of the asset an order on `side` holds (and pays with).
    fn held(&self, side: Side) -> usize {
        match side {
            Side::Buy => self.quote,
            Side::Sell => self.base,
        }
    }
}

/// Every account's balances: one row per account, one column per asset, in one vector. An
/// account gets its row the first time money reaches it; open orders remember their row, so
/// settling a trade looks nothing up by name.
#[derive(Clone, Debug, Default)]
struct Table {
    rows: FxHashMap<AccountId, usize>,
    accounts: Vec<AccountId>,
    balances: Vec<Balance>,
    width: usize,
}

impl Table {
    fn new(width: usize) -> Table {
        Table {
            width,
            ..Table::default()
        }
    }

    /// The row of `account`, if it has one.
    fn find(&self, account: &str) -> Option<usize> {
        self.rows.get(account).copied()
    }

    /// The row of `account`, created empty if missing.
    fn slot(&mut self, account: &AccountId) -> usize {
        if let Some(slot) = self.find(account) {
            return slot;
        }
        let slot = self.accounts.len();
        self.rows.insert(account.clone(), slot);
        self.accounts.push(account.clone());
        self.balances
            .extend(std::iter::repeat_n(Balance::default(), self.width));
        slot
    }

    fn at(&mut self, slot: usize, asset: usize) -> &mut Balance {
        &mut self.balances[slot * self.width + asset]
    }

    /// The account of row `slot` with its balance of `asset`: a ledger entry names the account
    /// while the balance changes, and borrowing it saves a clone per entry.
    fn entry(&mut self, slot: usize, asset: usize) -> (&AccountId, &mut Balance) {
        (
            &self.accounts[slot],
            &mut self.balances[slot * self.width + asset],
        )
    }

    fn get(&self, slot: usize, asset: usize) -> Balance {
        self.balances[slot * self.width + asset]
    }

    /// Every account with its balances, by asset index.
    fn iter(&self) -> impl Iterator<Item = (&AccountId, &[Balance])> {
        self.accounts
            .iter()
            .zip(self.balances.chunks(self.width.max(1)))
    }
}

/// Balances, holds and the ledger's position.
///
/// Assets, markets and accounts are numbered (assets and markets once from the
/// configuration, accounts as they appear), so the hot path indexes vectors.
#[derive(Clone, Debug)]
pub struct Funds {
    assets: Assets,
    /// Asset names by index (sorted).
    names: Vec<Asset>,
    markets: Vec<Venue>,
    by_symbol: FxHashMap<Symbol, usize>,
    table: Table,
    /// The fee account's row.
    venue: usize,
    orders: FxHashMap<OrderId, Open>,
    seq: u64,
}

/// Up to this many markets, a symbol is found by comparing names rather than by hashing.
const FEW_MARKETS: usize = 4;

/// Where ledger entries go: stamps each with the next sequence number.
struct Ledger<'a> {
    seq: &'a mut u64,
    ts: Timestamp,
    entries: &'a mut Vec<LedgerEntry>,
}

impl Funds {
    /// Empty funds for `instruments`.
    pub fn new<'a>(
        instruments: impl IntoIterator<Item = &'a Instrument> + Clone,
    ) -> Result<Funds, FundsError> {
        let assets = Assets::new(instruments.clone())?;
        let names: Vec<Asset> = assets.iter().map(|(asset, _)| asset.clone()).collect();
        let index = |asset: &str| names.iter().position(|name| name == asset);
        let mut markets = Vec::new();
        let mut by_symbol = FxHashMap::default();
        for instrument in instruments {
            let Some(market) = assets.market(instrument) else {
                continue;
            };
            let (Some(base), Some(quote)) = (index(&market.base), index(&market.quote)) else {
                continue;
            };
            by_symbol.insert(market.symbol.clone(), markets.len());
            markets.push(Venue {
                market,
                base,
                quote,
            });
        }
        let mut table = Table::new(names.len());
        let venue = table.slot(&FEE_ACCOUNT.into());
        Ok(Funds {
            assets,
            names,
            markets,
            by_symbol,
            table,
            venue,
            orders: FxHashMap::default(),
            seq: 0,
        })
    }

    /// The assets and their scales.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// An instrument's conversions.
    pub fn market(&self, symbol: &str) -> Option<&Market> {
        let index = *self.by_symbol.get(symbol)?;
        Some(&self.markets[index].market)
    }

    /// The sequence number of the last ledger entry, 0 before any.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn asset_index(&self, asset: &str) -> Option<usize> {
        self.names.iter().position(|name| name == asset)
    }

    /// One balance (zero if the account never had the asset).
    pub fn balance(&self, account: &str, asset: &str) -> Balance {
        match (self.table.find(account), self.asset_index(asset)) {
            (Some(slot), Some(index)) => self.table.get(slot, index),
            _ => Balance::default(),
        }
    }

    /// Every asset's balance of `account`, by asset (zero for an account never seen).
    pub fn balances_of(&self, account: &str) -> Vec<(Asset, Balance)> {
        let slot = self.table.find(account);
        self.names
            .iter()
            .enumerate()
            .map(|(index, asset)| {
                let balance = slot.map_or_else(Balance::default, |s| self.table.get(s, index));
                (asset.clone(), balance)
            })
            .collect()
    }

    /// The sum of every account's total of each asset.
    pub fn totals(&self) -> std::collections::BTreeMap<Asset, Amount> {
        let mut totals: std::collections::BTreeMap<Asset, Amount> =
            self.names.iter().map(|asset| (asset.clone(), 0)).collect();
        for (_, balances) in self.table.iter() {
            for (asset, balance) in self.names.iter().zip(balances) {
                *totals.entry(asset.clone()).or_insert(0) += balance.total();
            }
        }
        totals
    }

    /// What the open orders hold, per account and asset: always equal to the `held` balances.
    pub fn held_by_orders(&self) -> std::collections::BTreeMap<(AccountId, Asset), Amount> {
        let mut held = std::collections::BTreeMap::new();
        for open in self.orders.values() {
            let asset = self.names[self.markets[open.market].held(open.side)].clone();
            let account = self.table.accounts[open.slot].clone();
            *held.entry((account, asset)).or_insert(0) += open.held;
        }
        held.retain(|_, amount| *amount > 0);
        held
    }

    /// The orders that hold something.
    #[cfg(test)]
    pub(crate) fn held_order_ids(&self) -> Vec<OrderId> {
        self.orders.keys().copied().collect()
    }

    /// About how many records a snapshot holds: one per account and one per open hold. What a
    /// snapshot costs grows with it.
    pub fn records(&self) -> usize {
        self.table.accounts.len() + self.orders.len()
    }

    /// What an open order holds, if it holds anything.
    pub fn order_held(&self, order_id: OrderId) -> Option<Amount> {
        self.orders.get(&order_id).map(|open| open.held)
    }

    /// The account-owned half of a command: a deposit or withdrawal is done or refused here; an
    /// order command is held for (or refused) and goes on to its book with the decision.
    /// `hold_price` prices a market buy by quantity (see [`Funds::hold_order`]); it becomes the
    /// cap the book trades the order under.
    pub fn command(
        &mut self,
        command: &Command,
        hold_price: Option<Price>,
        entries: &mut Vec<LedgerEntry>,
    ) -> Decided {
        let market = command
            .action
            .symbol()
            .and_then(|symbol| self.market_index(symbol));
        self.command_in(market, command, hold_price, entries)
    }

    /// [`Funds::command`] with the market of the command's symbol looked up already (the
    /// engine needs it for the book too).
    pub(crate) fn command_in(
        &mut self,
        market: Option<usize>,
        command: &Command,
        hold_price: Option<Price>,
        entries: &mut Vec<LedgerEntry>,
    ) -> Decided {
        let ts = command.ts;
        let decided = match &command.action {
            Action::Deposit(transfer) => {
                let done = self.deposit(ts, transfer, entries);
                return Decided::Transfer(outcome(ts, TransferKind::Deposit, transfer, done));
            }
            Action::Withdraw(transfer) => {
                let done = self.withdraw(ts, transfer, entries);
                return Decided::Transfer(outcome(ts, TransferKind::Withdrawal, transfer, done));
            }
            Action::New(order) => match market {
                Some(market) => self.hold_order_at(market, ts, order, hold_price, entries),
                None => Err(Reject::field(RejectReason::UnknownSymbol, Field::Symbol)),
            }
            .map(|()| {
                let by_quantity = order.order_type == OrderType::Market
                    && order.side == Side::Buy
                    && !order.is_quote();
                by_quantity.then_some(hold_price).flatten()
            }),
            Action::Amend(amend) => self.hold_amend(ts, amend, entries).map(|()| None),
            Action::Cancel(_) | Action::CancelAll(_) => Ok(None),
        };
        Decided::Order(match decided {
            Ok(cap) => Funding::Funded { cap },
            Err(reject) => Funding::Refused(reject),
        })
    }

    /// Credits a deposit.
    pub fn deposit(
        &mut self,
        ts: Timestamp,
        transfer: &Transfer,
        entries: &mut Vec<LedgerEntry>,
    ) -> Result<(), Reject> {
        self.transfer(ts, transfer, EntryKind::Deposit, entries)
    }

    /// Debits a withdrawal: at most what is available.
    pub fn withdraw(
        &mut self,
        ts: Timestamp,
        transfer: &Transfer,
        entries: &mut Vec<LedgerEntry>,
    ) -> Result<(), Reject> {
        self.transfer(ts, transfer, EntryKind::Withdrawal, entries)
    }

    /// Money in (`Deposit`) or out (`Withdrawal`, at most what is available).
    fn transfer(
        &mut self,
        ts: Timestamp,
        transfer: &Transfer,
        kind: EntryKind,
        entries: &mut Vec<LedgerEntry>,
    ) -> Result<(), Reject> {
        let asset = self.transfer_checks(transfer)?;
        let insufficient = Reject::new(RejectReason::InsufficientFunds);
        let slot = match kind {
            EntryKind::Deposit => self.table.slot(&transfer.account),
            // No row, no money: nothing to withdraw, and no row made for it.
            _ => self.table.find(&transfer.account).ok_or(insufficient)?,
        };
        let Funds {
            names, table, seq, ..
        } = self;
        let balance = table.at(slot, asset);
        let (available, change) = match kind {
            EntryKind::Deposit => (
                balance
                    .available
                    .checked_add(transfer.amount)
                    .ok_or(Reject::field(RejectReason::TooLarge, Field::Amount))?,
                signed(transfer.amount),
            ),
            _ => (
                balance
                    .available
                    .checked_sub(transfer.amount)
                    .ok_or(insufficient)?,
                -signed(transfer.amount),
            ),
        };
        balance.available = available;
        Ledger { seq, ts, entries }.push(
            &transfer.account,
            &names[asset],
            kind,
            Cause::Transfer(transfer.transfer_id),
            change,
            0,
            *balance,
        );
        Ok(())
    }

    /// The transfer's asset index, if the transfer can be made at all.
    fn transfer_checks(&self, transfer: &Transfer) -> Result<usize, Reject> {
        let asset = self
            .asset_index(&transfer.asset)
            .ok_or(Reject::field(RejectReason::UnknownAsset, Field::Asset))?;
        if transfer.amount == 0 {
            return Err(Reject::field(RejectReason::NotPositive, Field::Amount));
        }
        Ok(asset)
    }

    /// Holds what a new order needs, or refuses it and holds nothing. `hold_price` prices a
    /// market buy (the edge of the price band); without one a market buy cannot be held.
    pub fn hold_order(
        &mut self,
        ts: Timestamp,
        order: &NewOrder,
        hold_price: Option<Price>,
        entries: &mut Vec<LedgerEntry>,
    ) -> Result<(), Reject> {
        let Some(market) = self.market_index(&order.symbol) else {
            return Err(Reject::field(RejectReason::UnknownSymbol, Field::Symbol));
        };
        self.hold_order_at(market, ts, order, hold_price, entries)
    }

    /// How many markets there are.
    pub fn markets(&self) -> usize {
        self.markets.len()
    }

    /// The index of `symbol`'s market.
    pub fn market_index(&self, symbol: &str) -> Option<usize> {
        // Most engines trade a handful of instruments: comparing a few short strings costs
        // less than hashing one.
        if self.markets.len() <= FEW_MARKETS {
            return self
                .markets
                .iter()
                .position(|venue| venue.market.symbol == symbol);
        }
        self.by_symbol.get(symbol).copied()
    }

    /// [`Funds::hold_order`] for the market at `market`.
    fn hold_order_at(
        &mut self,
        market: usize,
        ts: Timestamp,
        order: &NewOrder,
        hold_price: Option<Price>,
        entries: &mut Vec<LedgerEntry>,
    ) -> Result<(), Reject> {
        let Funds {
            names,
            markets,
            table,
            orders,
            seq,
            ..
        } = self;
        let std::collections::hash_map::Entry::Vacant(vacant) = orders.entry(order.order_id) else {
            return Err(Reject::field(
                RejectReason::DuplicateOrderId,
                Field::OrderId,
            ));
        };
        let venue = &markets[market];
        let (price, amount) = match order.side {
            Side::Buy if let Some(budget) = order.quote_quantity => {
                (Price(0), budget.checked_mul(venue.market.quote_per_unit))
            }
            Side::Buy => {
                let price = order
                    .price
                    .or(hold_price)
                    .ok_or(Reject::new(RejectReason::NoReferencePrice))?;
                (price, venue.market.quote(price, order.quantity))
            }
            Side::Sell => (
                order.price.unwrap_or(Price(0)),
                venue.market.base(order.quantity),
            ),
        };
        let amount = amount.ok_or(Reject::new(RejectReason::InsufficientFunds))?;
        let asset = venue.held(order.side);
        // No row, no money: nothing to hold.
        let slot = table
            .find(&order.account)
            .ok_or(Reject::new(RejectReason::InsufficientFunds))?;
        hold(
            table,
            names,
            Ledger { seq, ts, entries },
            slot,
            asset,
            amount,
            Cause::Order(order.order_id),
        )?;
        vacant.insert(Open {
            slot,
            market,
            side: order.side,
            price,
            quantity: order.quantity,
            leaves: order.quantity,
            held: amount,
            budget: order.is_quote(),
            amending: 0,
            top_price: price,
            top_quantity: order.quantity,
        });
        Ok(())
    }

    /// Holds what an amendment needs beyond what the order holds, or refuses it. An amendment
    /// funds does not know (another account's order, a finished one) passes: the book refuses
    /// it with the right reason, and nothing was held.
    pub fn hold_amend(
        &mut self,
        ts: Timestamp,
        amend: &AmendOrder,
        entries: &mut Vec<LedgerEntry>,
    ) -> Result<(), Reject> {
        let Some(open) = self.orders.get(&amend.order_id) else {
            return Ok(());
        };
        // Another account's order, or another book's: that book refuses it.
        if self.table.accounts[open.slot] != amend.account
            || self.market_index(&amend.symbol) != Some(open.market)
        {
            return Ok(());
        }
        // What the order may need once the book applied this amendment, whichever of the
        // amendments before it (still unanswered) the book accepts: the highest price and
        // quantity any of them could leave (see `Open::amending`). A buy lowered in price is
        // also held at its old price: fills at the old price may be on their way, and each
        // pays its hold at that price.
        let (top_price, top_quantity) = open.ceiling();
        let price = match open.side {
            Side::Buy => amend.price.map_or(top_price, |price| price.max(top_price)),
            Side::Sell => open.price,
        };
        let quantity = amend.quantity.unwrap_or(top_quantity);
        let filled = open.quantity - open.leaves;
        let needed = if quantity <= filled {
            Some(0)
        } else {
            self.needs(open, price, quantity - filled)
        };
        let extra = needed.map(|needed| needed.saturating_sub(open.held));
        let (slot, asset) = (open.slot, self.markets[open.market].held(open.side));
        let held = match extra {
            None => Err(Reject::new(RejectReason::InsufficientFunds)),
            Some(0) => Ok(()),
            Some(extra) => {
                let Funds {
                    names, table, seq, ..
                } = self;
                hold(
                    table,
                    names,
                    Ledger { seq, ts, entries },
                    slot,
                    asset,
                    extra,
                    Cause::Order(amend.order_id),
                )
            }
        };
        let Some(open) = self.orders.get_mut(&amend.order_id) else {
            return held;
        };
        // The book answers it, held or refused.
        open.amending += 1;
        if held.is_ok() {
            open.held += extra.unwrap_or(0);
            open.top_price = top_price.max(amend.price.unwrap_or(top_price));
            open.top_quantity = top_quantity.max(amend.quantity.unwrap_or(top_quantity));
        }
        held
    }

    /// Settles one event of a book: trades pay and receive, ended orders release their holds,
    /// amendments settle what was held for them. Only orders these funds hold are settled: funds
    /// split by account (the distributed funds stage) see a trade whose other side belongs to
    /// another partition, and settle their own side.
    pub fn settle(&mut self, record: &EventRecord, entries: &mut Vec<LedgerEntry>) {
        let ts = record.ts;
        match &record.event {
            Event::Accepted { .. } | Event::CancelRejected { .. } => {}
            // The id is another order's: that order keeps its hold.
            Event::Rejected { reject, .. } if reject.reason == RejectReason::DuplicateOrderId => {}
            Event::Rejected { order, .. } => self.end(ts, order.order_id, entries),
            Event::Canceled { order_id, .. } | Event::Expired { order_id, .. } => {
                self.end(ts, *order_id, entries)
            }
            Event::Trade(trade) => {
                for (fill, maker) in [(&trade.taker, false), (&trade.maker, true)] {
                    self.fill(ts, &record.symbol, record.seq, trade, fill, maker, entries);
                }
            }
            Event::Amended {
                order_id,
                account,
                price,
                quantity,
                leaves,
                ..
            } => {
                if let Some(open) = self.answered(record, *order_id, account) {
                    if open.side == Side::Buy {
                        open.price = *price;
                    }
                    open.quantity = *quantity;
                    open.leaves = *leaves;
                    if open.amending == 0 {
                        self.release_excess(ts, *order_id, entries);
                    }
                }
            }
            Event::AmendRejected {
                order_id, account, ..
            } => {
                if let Some(open) = self.answered(record, *order_id, account)
                    && open.amending == 0
                {
                    self.release_excess(ts, *order_id, entries);
                }
            }
        }
    }

    /// The open order an amendment answer is about, with one answer fewer awaited; none if the
    /// answer is to an amendment funds passed on unheld (another account's, another book's).
    fn answered(
        &mut self,
        record: &EventRecord,
        order_id: OrderId,
        account: &AccountId,
    ) -> Option<&mut Open> {
        let market = self.market_index(&record.symbol)?;
        let open = self.orders.get_mut(&order_id)?;
        if open.market != market || self.table.accounts[open.slot] != *account {
            return None;
        }
        open.amending = open.amending.saturating_sub(1);
        Some(open)
    }

    /// What `open` must hold for `leaves` at `price`.
    fn needs(&self, open: &Open, price: Price, leaves: Quantity) -> Option<Amount> {
        let market = &self.markets[open.market].market;
        match open.side {
            Side::Buy => market.quote(price, leaves),
            Side::Sell => market.base(leaves),
        }
    }

    /// Releases `amount` of `account`'s held `asset` back to available.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        ts: Timestamp,
        slot: usize,
        asset: usize,
        amount: Amount,
        order_id: OrderId,
        entries: &mut Vec<LedgerEntry>,
    ) {
        if amount == 0 {
            return;
        }
        let Funds {
            names, table, seq, ..
        } = self;
        let (account, balance) = table.entry(slot, asset);
        debug_assert!(balance.held >= amount, "release beyond held");
        let amount = amount.min(balance.held);
        balance.held -= amount;
        balance.available += amount;
        Ledger { seq, ts, entries }.push(
            account,
            &names[asset],
            EntryKind::Release,
            Cause::Order(order_id),
            signed(amount),
            -signed(amount),
            *balance,
        );
    }

    /// An order ended: everything it still holds goes back.
    fn end(&mut self, ts: Timestamp, order_id: OrderId, entries: &mut Vec<LedgerEntry>) {
        let Some(open) = self.orders.remove(&order_id) else {
            return;
        };
        let asset = self.markets[open.market].held(open.side);
        self.release(ts, open.slot, asset, open.held, order_id, entries);
    }

    /// After an amendment was decided: release what the order holds beyond its needs.
    fn release_excess(&mut self, ts: Timestamp, order_id: OrderId, entries: &mut Vec<LedgerEntry>) {
        let Some(open) = self.orders.get(&order_id) else {
            return;
        };
        let needed = self
            .needs(open, open.price, open.leaves)
            .unwrap_or(open.held);
        let excess = open.held.saturating_sub(needed);
        if excess == 0 {
            return;
        }
        let (slot, asset) = (open.slot, self.markets[open.market].held(open.side));
        if let Some(open) = self.orders.get_mut(&order_id) {
            open.held -= excess;
        }
        self.release(ts, slot, asset, excess, order_id, entries);
    }

    /// One side of a trade: pay out of the hold, receive less the fee, release what a buy
    /// held above the trade price, and everything left once the order is filled.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        ts: Timestamp,
        symbol: &Symbol,
        trade_id: u64,
        trade: &Trade,
        fill: &Fill,
        maker: bool,
        entries: &mut Vec<LedgerEntry>,
    ) {
        let Funds {
            names,
            markets,
            table,
            venue: fee_slot,
            orders,
            seq,
            ..
        } = self;
        // Another partition's order (see `settle`).
        let Some(open) = orders.get_mut(&fill.order_id) else {
            return;
        };
        let venue = &markets[open.market];
        let market = &venue.market;
        // Cannot overflow: both amounts are at most what the order held.
        let base = market.base(trade.quantity).unwrap_or(0);
        let quote = market.quote(trade.price, trade.quantity).unwrap_or(0);
        let (paid_asset, paid, received_asset, received, held_part) = match fill.side {
            Side::Buy if open.budget => (venue.quote, quote, venue.base, base, quote),
            Side::Buy => {
                let held_part = market.quote(open.price, trade.quantity).unwrap_or(quote);
                (venue.quote, quote, venue.base, base, held_part)
            }
            Side::Sell => (venue.base, base, venue.quote, quote, base),
        };
        let held_part = held_part.min(open.held);
        let refund = held_part.saturating_sub(paid);
        let (_, fee) = market.fill_fee(fill.side, maker, trade.price, trade.quantity);
        open.held -= held_part;
        open.leaves = fill.leaves;
        let cause = Cause::Trade {
            symbol: symbol.clone(),
            trade_id,
            order_id: fill.order_id,
        };
        let slot = open.slot;
        let mut ledger = Ledger { seq, ts, entries };
        let (account, payer) = table.entry(slot, paid_asset);
        debug_assert!(payer.held >= held_part, "a trade paid beyond the hold");
        payer.held = payer.held.saturating_sub(paid);
        ledger.push(
            account,
            &names[paid_asset],
            EntryKind::Trade,
            cause.clone(),
            0,
            -signed(paid),
            *payer,
        );
        if refund > 0 {
            payer.held -= refund;
            payer.available += refund;
            ledger.push(
                account,
                &names[paid_asset],
                EntryKind::Release,
                Cause::Order(fill.order_id),
                signed(refund),
                -signed(refund),
                *payer,
            );
        }
        let (account, receiver) = table.entry(slot, received_asset);
        receiver.available += received;
        ledger.push(
            account,
            &names[received_asset],
            EntryKind::Trade,
            cause.clone(),
            signed(received),
            0,
            *receiver,
        );
        if fee > 0 {
            receiver.available -= fee;
            ledger.push(
                account,
                &names[received_asset],
                EntryKind::Fee,
                cause.clone(),
                -signed(fee),
                0,
                *receiver,
            );
            let (venue, collected) = table.entry(*fee_slot, received_asset);
            collected.available += fee;
            ledger.push(
                venue,
                &names[received_asset],
                EntryKind::Fee,
                cause,
                signed(fee),
                0,
                *collected,
            );
        }
        if fill.leaves.is_zero() {
            self.end(ts, fill.order_id, entries);
        }
    }
}

/// Moves `amount` of `asset` from available to held in row `slot`, or refuses with
/// `insufficient_funds` and changes nothing.
fn hold(
    table: &mut Table,
    names: &[Asset],
    mut ledger: Ledger<'_>,
    slot: usize,
    asset: usize,
    amount: Amount,
    cause: Cause,
) -> Result<(), Reject> {
    let (account, balance) = table.entry(slot, asset);
    if balance.available < amount {
        return Err(Reject::new(RejectReason::InsufficientFunds));
    }
    balance.available -= amount;
    balance.held += amount;
    ledger.push(
        account,
        &names[asset],
        EntryKind::Hold,
        cause,
        -signed(amount),
        signed(amount),
        *balance,
    );
    Ok(())
}

impl Ledger<'_> {
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn push(
        &mut self,
        account: &AccountId,
        asset: &Asset,
        kind: EntryKind,
        cause: Cause,
        available_change: i128,
        held_change: i128,
        balance: Balance,
    ) {
        *self.seq += 1;
        self.entries.push(LedgerEntry {
            seq: *self.seq,
            ts: self.ts,
            account: account.clone(),
            asset: asset.clone(),
            kind,
            cause,
            available_change,
            held_change,
            balance,
        });
    }
}

/// An amount as a signed change. Amounts stay below 2^127 (see [`MAX_SCALE`]).
fn signed(amount: Amount) -> i128 {
    i128::try_from(amount).unwrap_or(i128::MAX)
}
