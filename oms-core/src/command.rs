//! Commands: what the outside world asks of a book, already scaled to ticks and lots.
//!
//! A command carries its own timestamp, stamped when it entered the system, so applying it reads
//! no clock and the same log always gives the same events.

use crate::funds::Transfer;
use crate::reject::Reject;
use crate::types::{
    AccountId, ClientOrderId, OrderId, OrderType, Price, Quantity, SelfTradePrevention, Side,
    Symbol, TimeInForce, Timestamp,
};
use serde::{Deserialize, Serialize};

/// A command with the time it entered the system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// When the command was accepted by the edge.
    pub ts: Timestamp,
    /// What to do.
    pub action: Action,
}

/// What one can ask: of a book (orders), or of funds (money in and out).
///
/// New variants go last: commands are journaled with the variant's position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Place an order.
    New(NewOrder),
    /// Cancel an open order.
    Cancel(CancelOrder),
    /// Change an open order's price or quantity.
    Amend(AmendOrder),
    /// Credit an account.
    Deposit(Transfer),
    /// Debit an account, at most what is available.
    Withdraw(Transfer),
    /// Cancel every open order of an account, on one instrument or on all.
    CancelAll(CancelAll),
}

impl Action {
    /// The instrument an order command is for; none for deposits and withdrawals.
    pub fn symbol(&self) -> Option<&Symbol> {
        match self {
            Action::New(order) => Some(&order.symbol),
            Action::Cancel(cancel) => Some(&cancel.symbol),
            Action::Amend(amend) => Some(&amend.symbol),
            Action::CancelAll(cancel) => cancel.symbol.as_ref(),
            Action::Deposit(_) | Action::Withdraw(_) => None,
        }
    }

    /// The account the command acts for.
    pub fn account(&self) -> &AccountId {
        match self {
            Action::New(order) => &order.account,
            Action::Cancel(cancel) => &cancel.account,
            Action::Amend(amend) => &amend.account,
            Action::CancelAll(cancel) => &cancel.account,
            Action::Deposit(transfer) | Action::Withdraw(transfer) => &transfer.account,
        }
    }
}

/// A new order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Unique id, assigned upstream.
    pub order_id: OrderId,
    /// The client's reference.
    pub client_order_id: ClientOrderId,
    /// Owning account.
    pub account: AccountId,
    /// Instrument.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Limit or market.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// GTC, IOC or FOK.
    pub time_in_force: TimeInForce,
    /// Limit price; `None` for market orders.
    pub price: Option<Price>,
    /// Quantity in lots.
    pub quantity: Quantity,
    /// Reject instead of taking liquidity.
    pub post_only: bool,
    /// What to do on a match against the same account.
    pub self_trade_prevention: SelfTradePrevention,
    /// A market buy's budget in notional units (`tick × lot`), instead of a quantity: the book
    /// buys as many lots as the budget affords, best price first. `quantity` is zero in the
    /// command; the book's `Accepted` event carries the quantity it sized.
    pub quote_quantity: Option<u128>,
}

impl NewOrder {
    /// Whether the order is a market buy sized by a quote budget.
    pub fn is_quote(&self) -> bool {
        self.quote_quantity.is_some()
    }
}

/// Cancel an open order. The account must own it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrder {
    /// The order.
    pub order_id: OrderId,
    /// The account asking; must be the owner.
    pub account: AccountId,
    /// The order's instrument.
    pub symbol: Symbol,
}

/// Cancel every open order of an account (a mass cancel), on one instrument or, without a
/// symbol, on every instrument: what is open when the command reaches each book, so an order
/// placed before it is canceled however far it got, and one placed after it is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAll {
    /// The account.
    pub account: AccountId,
    /// Only this instrument; every instrument when `None`.
    pub symbol: Option<Symbol>,
}

/// Amend an open order.
///
/// # Priority rule
/// Lowering the quantity keeps the order's place in the queue; a new price or a higher quantity
/// sends it to the back of its (new) price level, as on the large exchanges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmendOrder {
    /// The order.
    pub order_id: OrderId,
    /// The account asking; must be the owner.
    pub account: AccountId,
    /// The order's instrument.
    pub symbol: Symbol,
    /// New limit price, if it changes.
    pub price: Option<Price>,
    /// New total quantity (filled quantity included), if it changes.
    pub quantity: Option<Quantity>,
}

/// What funds decided about an order command before its book sees it: the message between the
/// account-owned and the symbol-owned halves of the pipeline (see [`crate::funds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Funding {
    /// Held what it needs, or needs nothing (a cancel). `cap` is the price a market buy by
    /// quantity was held at: the book trades it no higher, so the hold always covers it.
    Funded {
        /// The highest price a market buy by quantity may trade at.
        cap: Option<Price>,
    },
    /// Refused before the book (`insufficient_funds`, ...): the book records the refusal, so
    /// every order event still has one writer.
    Refused(Reject),
}

impl Funding {
    /// Funded with no cap: what a command that needs nothing held gets.
    pub const PASS: Funding = Funding::Funded { cap: None };
}
