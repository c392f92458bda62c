//! The order book of one instrument: pre-trade checks and price-time matching.
//!
//! [`Book::apply`] is the whole interface for change: a command goes in, events come out, and
//! the book's state moves on. It reads no clock and draws no random number, so the same commands
//! always give the same events, and a book restored from a [`BookSnapshot`] and fed the rest of
//! the commands gives exactly the events of an uninterrupted run.
//!
//! # Matching rules
//! - Price-time priority: better price first, then earlier arrival at that price.
//! - Trades happen at the resting (maker) order's price.
//! - Self-trade prevention follows the incoming (taker) order's mode.
//! - A market order trades down to the edge of the price band (when a band and a reference
//!   price exist) and its remainder expires.
//! - Post-only orders that would take are rejected; FOK orders that cannot fill completely
//!   expire without trading; IOC remainders expire.
//!
//! # Ordering invariant
//! After every command the book is not crossed: the best bid is below the best ask.
//!
//! # Known limitation
//! Duplicate order ids are caught only among open orders; the journal and idempotency keys
//! upstream make sure a command is applied once.

mod levels;
mod snapshot;

#[cfg(test)]
pub(crate) mod proptests;
#[cfg(test)]
mod tests;

pub use levels::RestingOrder;
pub use snapshot::{BookSnapshot, RestoreError};

use crate::command::{Action, AmendOrder, CancelAll, CancelOrder, Command, Funding, NewOrder};
use crate::event::{Event, EventRecord, ExpireReason, Fill, Trade};
use crate::instrument::Instrument;
use crate::reject::{Field, Reject, RejectReason};
use crate::risk::{Checks, RiskError, RiskLimits};
use crate::types::{
    AccountId, OrderId, OrderType, Price, Quantity, SelfTradePrevention, Side, Symbol, TimeInForce,
    Timestamp,
};
use levels::{Levels, NIL, Orders, Owner};
use serde::{Deserialize, Serialize};

/// Aggregated top levels of a book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    /// The sequence number of the last event applied.
    pub seq: u64,
    /// `(price, total open quantity)`, best (highest) first.
    pub bids: Vec<(Price, Quantity)>,
    /// `(price, total open quantity)`, best (lowest) first.
    pub asks: Vec<(Price, Quantity)>,
}

/// One instrument's order book with its risk state.
pub struct Book {
    instrument: Instrument,
    checks: Checks,
    bids: Levels,
    asks: Levels,
    orders: Orders,
    last_trade: Option<Price>,
    seq: u64,
}

/// The incoming side of a match.
struct Taker {
    order_id: OrderId,
    account: AccountId,
    side: Side,
    leaves: Quantity,
    stp: SelfTradePrevention,
}

/// Where events go: stamps each with the next sequence number.
struct Out<'a> {
    seq: &'a mut u64,
    ts: Timestamp,
    symbol: &'a Symbol,
    events: &'a mut Vec<EventRecord>,
}

impl Out<'_> {
    fn push(&mut self, event: Event) {
        *self.seq += 1;
        self.events.push(EventRecord {
            seq: *self.seq,
            ts: self.ts,
            symbol: self.symbol.clone(),
            event,
        });
    }
}

impl Book {
    /// An empty book for `instrument` under `limits`.
    pub fn new(instrument: Instrument, limits: &RiskLimits) -> Result<Book, RiskError> {
        let checks = Checks::new(&instrument, limits)?;
        Ok(Book {
            instrument,
            checks,
            bids: Levels::new(Side::Buy),
            asks: Levels::new(Side::Sell),
            orders: Orders::default(),
            last_trade: None,
            seq: 0,
        })
    }

    /// The instrument.
    pub fn instrument(&self) -> &Instrument {
        &self.instrument
    }

    /// The instrument's and the system's limits, scaled; what the edge checks too.
    pub fn checks(&self) -> &Checks {
        &self.checks
    }

    /// The sequence number of the last event, 0 before any.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The price of the last trade.
    pub fn last_trade(&self) -> Option<Price> {
        self.last_trade
    }

    /// The price the band is centred on: the last trade, else the configured reference.
    pub fn reference_price(&self) -> Option<Price> {
        self.last_trade.or(self.instrument.reference_price())
    }

    /// Highest bid.
    pub fn best_bid(&self) -> Option<Price> {
        self.bids.best()
    }

    /// Lowest ask.
    pub fn best_ask(&self) -> Option<Price> {
        self.asks.best()
    }

    /// Number of resting orders.
    pub fn open_orders(&self) -> usize {
        self.orders.len()
    }

    /// Number of resting orders of one account.
    pub fn open_orders_of(&self, account: &str) -> u32 {
        self.orders.open_count(Owner::new(account, ""), account)
    }

    /// A resting order by id.
    pub fn order(&self, order_id: OrderId) -> Option<&RestingOrder> {
        self.orders.find(order_id).map(|key| self.orders.get(key))
    }

    /// The best `levels` price levels of each side, aggregated.
    pub fn depth(&self, levels: usize) -> Depth {
        let top = |side: &Levels| {
            side.best_first()
                .take(levels)
                .map(|(price, level)| (*price, level.total))
                .collect()
        };
        Depth {
            seq: self.seq,
            bids: top(&self.bids),
            asks: top(&self.asks),
        }
    }

    /// Applies one command, appending what happened to `events`.
    ///
    /// The caller routes commands by symbol; a command for another symbol is a caller bug.
    pub fn apply(&mut self, command: &Command, events: &mut Vec<EventRecord>) {
        debug_assert!(
            command
                .action
                .symbol()
                .is_none_or(|symbol| symbol == self.instrument.symbol())
        );
        match &command.action {
            Action::New(order) => self.new_order(command.ts, order, None, events),
            Action::Cancel(cancel) => self.cancel(command.ts, cancel, events),
            Action::Amend(amend) => self.amend(command.ts, amend, events),
            Action::CancelAll(cancel) => self.cancel_all(command.ts, cancel, events),
            // Not book commands; the caller routes them to funds.
            Action::Deposit(_) | Action::Withdraw(_) => {}
        }
    }

    /// Applies a command as funds decided it: a refused order or amendment is recorded as
    /// rejected, a funded market buy by quantity trades no higher than the price it was held at.
    pub fn apply_funded(
        &mut self,
        command: &Command,
        funding: &Funding,
        events: &mut Vec<EventRecord>,
    ) {
        debug_assert!(
            command
                .action
                .symbol()
                .is_none_or(|symbol| symbol == self.instrument.symbol())
        );
        let ts = command.ts;
        match (&command.action, funding) {
            (Action::New(order), Funding::Refused(reject)) => {
                self.reject(ts, order, *reject, events)
            }
            (Action::Amend(amend), Funding::Refused(reject)) => {
                self.reject_amend(ts, amend, *reject, events)
            }
            (Action::New(order), Funding::Funded { cap }) => {
                self.new_order(ts, order, *cap, events)
            }
            // Funds never refuse a cancel; one marked so is applied all the same.
            _ => self.apply(command, events),
        }
    }

    /// Records that `order` was refused before it reached the book (by funds): the book is
    /// the one writer of its orders' events, so the refusal takes its place in the sequence.
    pub fn reject(
        &mut self,
        ts: Timestamp,
        order: &NewOrder,
        reject: Reject,
        events: &mut Vec<EventRecord>,
    ) {
        self.out(ts, events).push(Event::Rejected {
            order: order.clone(),
            reject,
        });
    }

    /// Records that `amend` was refused before it reached the book (by funds).
    pub fn reject_amend(
        &mut self,
        ts: Timestamp,
        amend: &AmendOrder,
        reject: Reject,
        events: &mut Vec<EventRecord>,
    ) {
        self.out(ts, events).push(Event::AmendRejected {
            order_id: amend.order_id,
            account: amend.account.clone(),
            reject,
        });
    }

    fn out<'a>(&'a mut self, ts: Timestamp, events: &'a mut Vec<EventRecord>) -> Out<'a> {
        Out {
            seq: &mut self.seq,
            ts,
            symbol: self.instrument.symbol(),
            events,
        }
    }

    /// The price a market order on `side` may trade up to now: the price band's edge around
    /// the reference, else the instrument's maximum price (for a buy), else none.
    pub fn market_limit(&self, side: Side) -> Option<Price> {
        self.checks
            .market_limit(side, self.reference_price())
            .or(match side {
                Side::Buy => self.instrument.max_price(),
                Side::Sell => None,
            })
    }

    fn new_order(
        &mut self,
        ts: Timestamp,
        order: &NewOrder,
        cap: Option<Price>,
        events: &mut Vec<EventRecord>,
    ) {
        let reference = self.reference_price();
        let admitted = self.admit(order, reference);
        let market_limit = match (self.market_limit(order.side), cap) {
            (Some(limit), Some(cap)) => Some(limit.min(cap)),
            (limit, cap) => limit.or(cap),
        };
        let Book {
            instrument,
            checks,
            bids,
            asks,
            orders,
            last_trade,
            seq,
        } = self;
        let mut out = Out {
            seq,
            ts,
            symbol: instrument.symbol(),
            events,
        };
        let reject = |out: &mut Out<'_>, reject| {
            out.push(Event::Rejected {
                order: order.clone(),
                reject,
            })
        };
        let owner = match admitted {
            Ok(owner) => owner,
            Err(rejected) => return reject(&mut out, rejected),
        };
        let limit = order.price.or(market_limit);
        let (own, opposite) = match order.side {
            Side::Buy => (bids, asks),
            Side::Sell => (asks, bids),
        };
        let mut taker = Taker {
            order_id: order.order_id,
            account: order.account.clone(),
            side: order.side,
            leaves: order.quantity,
            stp: order.self_trade_prevention,
        };
        let mut accepted = order.clone();
        if let Some(budget) = order.quote_quantity {
            let max = checks.max_quantity();
            let (sized, offered) = affordable(opposite, orders, &taker, limit, budget, max);
            if offered && let Err(rejected) = checks.sized(sized) {
                return reject(&mut out, rejected);
            }
            accepted.quantity = sized;
            taker.leaves = sized;
            if !offered {
                out.push(Event::Accepted { order: accepted });
                return expire(&mut out, &taker, ExpireReason::NoLiquidity);
            }
        }
        out.push(Event::Accepted { order: accepted });
        if order.time_in_force == TimeInForce::Fok
            && fillable(opposite, orders, &taker, limit) < order.quantity
        {
            expire(&mut out, &taker, ExpireReason::FillOrKill);
            return;
        }
        if take(opposite, orders, &mut taker, limit, last_trade, &mut out) {
            return;
        }
        if taker.leaves.is_zero() {
            return;
        }
        match (order.order_type, order.time_in_force) {
            (OrderType::Limit, TimeInForce::Gtc) => {
                let price = order.price.unwrap_or(Price(0));
                let resting = RestingOrder {
                    order_id: order.order_id,
                    account: taker.account,
                    client_order_id: order.client_order_id.clone(),
                    side: order.side,
                    price,
                    quantity: order.quantity,
                    leaves: taker.leaves,
                    post_only: order.post_only,
                    self_trade_prevention: order.self_trade_prevention,
                };
                let key = orders.insert(resting, owner);
                orders.push_back(own.level_mut(price), key);
            }
            (OrderType::Market, _) => expire(&mut out, &taker, ExpireReason::NoLiquidity),
            (OrderType::Limit, TimeInForce::Fok) => {
                expire(&mut out, &taker, ExpireReason::FillOrKill)
            }
            (OrderType::Limit, TimeInForce::Ioc) => {
                expire(&mut out, &taker, ExpireReason::ImmediateOrCancel)
            }
        }
    }

    /// Every pre-trade check, in a fixed order so the same order always gets the same reason.
    /// An admitted order's account and client order id come back hashed, for its insertion.
    fn admit(&self, order: &NewOrder, reference: Option<Price>) -> Result<Owner, Reject> {
        self.checks.new_order(order, reference)?;
        if let Some(price) = order.price {
            self.checks.band(price, reference)?;
        }
        if self.orders.find(order.order_id).is_some() {
            return Err(Reject::field(
                RejectReason::DuplicateOrderId,
                Field::OrderId,
            ));
        }
        let owner = Owner::new(&order.account, &order.client_order_id);
        if self
            .orders
            .find_client_id(owner, &order.account, &order.client_order_id)
            .is_some()
        {
            return Err(Reject::field(
                RejectReason::DuplicateClientOrderId,
                Field::ClientOrderId,
            ));
        }
        if order.order_type == OrderType::Limit && order.time_in_force == TimeInForce::Gtc {
            self.checks
                .open_orders(self.orders.open_count(owner, &order.account))?;
        }
        if order.post_only
            && let Some(price) = order.price
            && self.would_take(order.side, price)
        {
            return Err(Reject::new(RejectReason::PostOnlyWouldTake));
        }
        Ok(owner)
    }

    fn would_take(&self, side: Side, price: Price) -> bool {
        let best = match side {
            Side::Buy => self.asks.best(),
            Side::Sell => self.bids.best(),
        };
        best.is_some_and(|best| side.accepts(price, best))
    }

    /// The open order `order_id` if `account` owns it.
    fn owned(&self, order_id: OrderId, account: &str) -> Option<usize> {
        self.orders
            .find(order_id)
            .filter(|key| self.orders.get(*key).account == account)
    }

    /// Cancels every open order of the account, oldest order id first (a replay from a
    /// snapshot must give the same sequence numbers, and a snapshot does not keep the slab's
    /// layout).
    fn cancel_all(&mut self, ts: Timestamp, cancel: &CancelAll, events: &mut Vec<EventRecord>) {
        for order_id in self.orders.of_account(&cancel.account) {
            let cancel = CancelOrder {
                order_id,
                account: cancel.account.clone(),
                symbol: self.instrument.symbol().clone(),
            };
            self.cancel(ts, &cancel, events);
        }
    }

    fn cancel(&mut self, ts: Timestamp, cancel: &CancelOrder, events: &mut Vec<EventRecord>) {
        let found = self.owned(cancel.order_id, &cancel.account);
        let mut out = Out {
            seq: &mut self.seq,
            ts,
            symbol: self.instrument.symbol(),
            events,
        };
        let Some(key) = found else {
            out.push(Event::CancelRejected {
                order_id: cancel.order_id,
                account: cancel.account.clone(),
                reject: Reject::field(RejectReason::UnknownOrder, Field::OrderId),
            });
            return;
        };
        let order = self.orders.get(key);
        let levels = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let price = order.price;
        levels.unlink(&mut self.orders, price, key);
        let order = self.orders.remove(key);
        out.push(Event::Canceled {
            order_id: order.order_id,
            account: order.account,
            quantity: order.leaves,
        });
    }

    fn amend(&mut self, ts: Timestamp, amend: &AmendOrder, events: &mut Vec<EventRecord>) {
        let checked = self.check_amend(amend);
        let Book {
            instrument,
            bids,
            asks,
            orders,
            last_trade,
            seq,
            ..
        } = self;
        let mut out = Out {
            seq,
            ts,
            symbol: instrument.symbol(),
            events,
        };
        let (key, price, quantity) = match checked {
            Ok(found) => found,
            Err(reject) => {
                out.push(Event::AmendRejected {
                    order_id: amend.order_id,
                    account: amend.account.clone(),
                    reject,
                });
                return;
            }
        };
        let order = orders.get(key);
        let side = order.side;
        let (own, opposite) = match side {
            Side::Buy => (bids, asks),
            Side::Sell => (asks, bids),
        };
        let old_price = order.price;
        let leaves = quantity - (order.quantity - order.leaves);
        let priority_kept = price == old_price && quantity <= order.quantity;
        if priority_kept {
            // Shrinking in place keeps the queue position; only the aggregate moves.
            let level = own.level_mut(old_price);
            let order = orders.get_mut(key);
            level.total -= order.leaves - leaves;
            order.quantity = quantity;
            order.leaves = leaves;
        } else {
            own.unlink(orders, old_price, key);
            let order = orders.get_mut(key);
            order.price = price;
            order.quantity = quantity;
            order.leaves = leaves;
        }
        let order = orders.get(key);
        out.push(Event::Amended {
            order_id: order.order_id,
            account: order.account.clone(),
            price,
            quantity,
            leaves,
            priority_kept,
        });
        if priority_kept {
            return;
        }
        // A new price may cross the book: the order then trades as a taker first.
        let mut taker = Taker {
            order_id: order.order_id,
            account: order.account.clone(),
            side,
            leaves,
            stp: order.self_trade_prevention,
        };
        let ended = take(
            opposite,
            orders,
            &mut taker,
            Some(price),
            last_trade,
            &mut out,
        );
        if ended || taker.leaves.is_zero() {
            orders.remove(key);
        } else {
            orders.get_mut(key).leaves = taker.leaves;
            orders.push_back(own.level_mut(price), key);
        }
    }

    /// Checks an amendment; on success gives the order's key, new price and new quantity.
    fn check_amend(&self, amend: &AmendOrder) -> Result<(usize, Price, Quantity), Reject> {
        let key = self
            .owned(amend.order_id, &amend.account)
            .ok_or(Reject::field(RejectReason::UnknownOrder, Field::OrderId))?;
        self.checks.trading()?;
        let order = self.orders.get(key);
        let price = amend.price.unwrap_or(order.price);
        let quantity = amend.quantity.unwrap_or(order.quantity);
        if price == order.price && quantity == order.quantity {
            return Err(Reject::new(RejectReason::NoChange));
        }
        if quantity <= order.quantity - order.leaves {
            return Err(Reject::field(
                RejectReason::QuantityBelowFilled,
                Field::Quantity,
            ));
        }
        self.checks.quantity(quantity)?;
        self.checks.notional(price, quantity)?;
        if price != order.price {
            self.checks.price(price)?;
            self.checks.band(price, self.reference_price())?;
            if order.post_only && self.would_take(order.side, price) {
                return Err(Reject::new(RejectReason::PostOnlyWouldTake));
            }
        }
        Ok((key, price, quantity))
    }
}

fn expire(out: &mut Out<'_>, taker: &Taker, reason: ExpireReason) {
    out.push(Event::Expired {
        order_id: taker.order_id,
        account: taker.account.clone(),
        quantity: taker.leaves,
        reason,
    });
}

/// How much of `taker` could trade now within `limit`, under its self-trade prevention mode.
/// Stops counting once the whole quantity is reachable.
fn fillable(opposite: &Levels, orders: &Orders, taker: &Taker, limit: Option<Price>) -> Quantity {
    let mut total = Quantity::ZERO;
    for (price, level) in opposite.best_first() {
        if limit.is_some_and(|limit| !taker.side.accepts(limit, *price)) {
            break;
        }
        if taker.stp == SelfTradePrevention::None {
            total += level.total;
        } else {
            for maker in orders.queue(level) {
                if maker.account != taker.account {
                    total += maker.leaves;
                } else if taker.stp != SelfTradePrevention::ExpireMaker {
                    // The taker would expire here; nothing behind this order is reachable.
                    return total;
                }
            }
        }
        if total >= taker.leaves {
            break;
        }
    }
    total
}

/// How many lots `budget` (notional units) buys now within `limit`, best price first, under
/// the taker's self-trade prevention mode, at most `max`; and whether anything was on offer.
/// [`take`] then trades exactly that quantity.
fn affordable(
    opposite: &Levels,
    orders: &Orders,
    taker: &Taker,
    limit: Option<Price>,
    mut budget: u128,
    max: Quantity,
) -> (Quantity, bool) {
    let mut total = Quantity::ZERO;
    let mut offered = false;
    'levels: for (price, level) in opposite.best_first() {
        if limit.is_some_and(|limit| !taker.side.accepts(limit, *price)) {
            break;
        }
        for maker in orders.queue(level) {
            if taker.stp != SelfTradePrevention::None && maker.account == taker.account {
                if taker.stp == SelfTradePrevention::ExpireMaker {
                    continue;
                }
                // The taker would expire here: nothing behind this order is reachable.
                break 'levels;
            }
            offered = true;
            let cap = u64::try_from(budget / u128::from(price.0.max(1))).unwrap_or(u64::MAX);
            let lots = maker.leaves.0.min(cap).min(max.0 - total.0);
            if lots == 0 {
                break 'levels;
            }
            total += Quantity(lots);
            budget -= u128::from(lots) * u128::from(price.0);
        }
    }
    (total, offered)
}

/// Matches `taker` against the opposite side within `limit`. Returns true if self-trade
/// prevention ended the taker (its expiry is already emitted).
fn take(
    opposite: &mut Levels,
    orders: &mut Orders,
    taker: &mut Taker,
    limit: Option<Price>,
    last_trade: &mut Option<Price>,
    out: &mut Out<'_>,
) -> bool {
    while !taker.leaves.is_zero() {
        let Some(mut entry) = opposite.best_entry() else {
            return false;
        };
        let price = *entry.key();
        if limit.is_some_and(|limit| !taker.side.accepts(limit, price)) {
            return false;
        }
        let level = entry.get_mut();
        let mut key = level.head();
        let mut ended = false;
        while key != NIL && !taker.leaves.is_zero() {
            let next = orders.next(key);
            let maker = orders.get_mut(key);
            if taker.stp != SelfTradePrevention::None && maker.account == taker.account {
                if matches!(
                    taker.stp,
                    SelfTradePrevention::ExpireMaker | SelfTradePrevention::ExpireBoth
                ) {
                    orders.unlink(level, key);
                    let maker = orders.remove(key);
                    out.push(Event::Expired {
                        order_id: maker.order_id,
                        account: maker.account,
                        quantity: maker.leaves,
                        reason: ExpireReason::SelfTradePrevention,
                    });
                }
                if matches!(
                    taker.stp,
                    SelfTradePrevention::ExpireTaker | SelfTradePrevention::ExpireBoth
                ) {
                    expire(out, taker, ExpireReason::SelfTradePrevention);
                    taker.leaves = Quantity::ZERO;
                    ended = true;
                }
                key = next;
                continue;
            }
            let quantity = taker.leaves.min(maker.leaves);
            maker.leaves -= quantity;
            taker.leaves -= quantity;
            level.total -= quantity;
            let maker_fill = Fill {
                order_id: maker.order_id,
                account: maker.account.clone(),
                side: maker.side,
                leaves: maker.leaves,
            };
            if maker.leaves.is_zero() {
                orders.unlink(level, key);
                orders.remove(key);
            }
            out.push(Event::Trade(Trade {
                price,
                quantity,
                taker: Fill {
                    order_id: taker.order_id,
                    account: taker.account.clone(),
                    side: taker.side,
                    leaves: taker.leaves,
                },
                maker: maker_fill,
            }));
            *last_trade = Some(price);
            key = next;
        }
        if level.count == 0 {
            entry.remove();
        }
        if ended {
            return true;
        }
    }
    false
}
