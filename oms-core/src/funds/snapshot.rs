//! Funds snapshots: balances and open holds as plain, serializable data.

use super::{Amount, Asset, Balance, Funds, FundsError, Open};
use crate::instrument::Instrument;
use crate::types::{AccountId, OrderId, Price, Quantity, Side, Symbol};
use serde::{Deserialize, Serialize};

/// The whole state of [`Funds`], comparable and serializable; sorted, so equal states give
/// equal snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsSnapshot {
    /// The sequence number of the last ledger entry.
    pub seq: u64,
    /// Every balance that was ever touched, by account and asset.
    pub balances: Vec<(AccountId, Asset, Balance)>,
    /// Every open order that holds funds, by order id.
    pub orders: Vec<OrderHold>,
}

/// An open order's hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderHold {
    /// The order.
    pub order_id: OrderId,
    /// Its account.
    pub account: AccountId,
    /// Its instrument.
    pub symbol: Symbol,
    /// Its side.
    pub side: Side,
    /// The price a buy holds at, per lot.
    pub price: Price,
    /// Total quantity.
    pub quantity: Quantity,
    /// Open quantity.
    pub leaves: Quantity,
    /// What it holds.
    pub held: Amount,
    /// A market buy sized by a quote budget (on its way to the book).
    pub budget: bool,
    /// Amendments the book has not answered yet.
    pub amending: u32,
    /// The highest price and quantity those may leave.
    pub ceiling: (Price, Quantity),
}

impl Funds {
    /// The state as data.
    pub fn snapshot(&self) -> FundsSnapshot {
        let mut balances: Vec<(AccountId, Asset, Balance)> = self
            .table
            .iter()
            .flat_map(|(account, balances)| {
                self.names
                    .iter()
                    .zip(balances)
                    .filter(|(_, balance)| **balance != Balance::default())
                    .map(|(asset, balance)| (account.clone(), asset.clone(), *balance))
            })
            .collect();
        balances.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut orders: Vec<OrderHold> = self
            .orders
            .iter()
            .map(|(order_id, open)| OrderHold {
                order_id: *order_id,
                account: self.table.accounts[open.slot].clone(),
                symbol: self.markets[open.market].market.symbol.clone(),
                side: open.side,
                price: open.price,
                quantity: open.quantity,
                leaves: open.leaves,
                held: open.held,
                budget: open.budget,
                amending: open.amending,
                ceiling: open.ceiling(),
            })
            .collect();
        orders.sort_by_key(|order| order.order_id);
        FundsSnapshot {
            seq: self.seq,
            balances,
            orders,
        }
    }

    /// Funds for `instruments` in the state of `snapshot`.
    pub fn restore<'a>(
        instruments: impl IntoIterator<Item = &'a Instrument> + Clone,
        snapshot: &FundsSnapshot,
    ) -> Result<Funds, FundsError> {
        let mut funds = Funds::new(instruments)?;
        funds.seq = snapshot.seq;
        for (account, asset, balance) in &snapshot.balances {
            let Some(index) = funds.asset_index(asset) else {
                return Err(FundsError::Snapshot(format!(
                    "asset {asset} is no asset of the configured instruments"
                )));
            };
            let slot = funds.table.slot(account);
            *funds.table.at(slot, index) = *balance;
        }
        for hold in &snapshot.orders {
            let Some(&market) = funds.by_symbol.get(&hold.symbol) else {
                return Err(FundsError::Snapshot(format!(
                    "order {} is on {}, which is not configured",
                    hold.order_id, hold.symbol
                )));
            };
            let slot = funds.table.slot(&hold.account);
            funds.orders.insert(
                hold.order_id,
                Open {
                    slot,
                    market,
                    side: hold.side,
                    price: hold.price,
                    quantity: hold.quantity,
                    leaves: hold.leaves,
                    held: hold.held,
                    budget: hold.budget,
                    amending: hold.amending,
                    top_price: hold.ceiling.0,
                    top_quantity: hold.ceiling.1,
                },
            );
        }
        if funds.held_by_orders() != funds.held_balances() {
            return Err(FundsError::Snapshot(
                "held balances differ from what the open orders hold".into(),
            ));
        }
        Ok(funds)
    }

    /// Every non-zero held balance.
    pub fn held_balances(&self) -> std::collections::BTreeMap<(AccountId, Asset), Amount> {
        self.table
            .iter()
            .flat_map(|(account, balances)| {
                self.names
                    .iter()
                    .zip(balances)
                    .filter(|(_, balance)| balance.held > 0)
                    .map(|(asset, balance)| ((account.clone(), asset.clone()), balance.held))
            })
            .collect()
    }
}
