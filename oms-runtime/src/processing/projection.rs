//! Folding events into order states and trades for the read projection.

use crate::store::{OrderStore, ProjectionBatch, StoreError, TradeRecord};
use oms_core::funds::{Cause, Market};
use oms_core::{
    Amount, EntryKind, Event, EventRecord, FEE_ACCOUNT, LedgerEntry, OrderId, OrderState, Symbol,
    Trade, TransferOutcome,
};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Folds events into order states, caching open orders so a busy order is read from the store
/// once.
pub struct Projection {
    store: Arc<dyn OrderStore>,
    /// Boxed: the map grows with the resting orders, and growing it moves every entry (a
    /// pointer each, not a whole order state) on the pipeline's thread.
    open: FxHashMap<OrderId, Box<OrderState>>,
    batch: ProjectionBatch,
    changed: Vec<OrderId>,
    /// Where a trade's fees come from the instruments' rates (distributed mode: the ledger is
    /// another topic); without them, from the ledger entries folded with the events.
    markets: Option<BTreeMap<Symbol, Market>>,
}

impl Projection {
    /// A projection writing to `store`; trades get their fees from [`Projection::fold_funds`].
    pub fn new(store: Arc<dyn OrderStore>) -> Projection {
        Projection {
            store,
            open: FxHashMap::default(),
            batch: ProjectionBatch::default(),
            changed: Vec::new(),
            markets: None,
        }
    }

    /// A projection writing to `store` whose trades carry the fees the instruments' rates give,
    /// as funds charge them ([`Market::fill_fee`]).
    pub fn with_markets(
        store: Arc<dyn OrderStore>,
        markets: BTreeMap<Symbol, Market>,
    ) -> Projection {
        Projection {
            markets: Some(markets),
            ..Projection::new(store)
        }
    }

    /// A side's fee from the instrument's rate, if this projection prices fees so and there is
    /// one.
    fn fee(&self, symbol: &Symbol, trade: &Trade, maker: bool) -> Option<(String, Amount)> {
        priced_fee(self.markets.as_ref()?.get(symbol)?, trade, maker)
    }

    /// The state to fold `record` into. A new order starts from its own accepted or rejected
    /// event without a read: if that is a replay, the fold reaches the stored state again, and
    /// the store ignores every write that is not newer than what it has.
    async fn state(
        &mut self,
        record: &EventRecord,
        order_id: OrderId,
    ) -> Result<Option<&mut OrderState>, StoreError> {
        if !self.open.contains_key(&order_id) {
            let state = match OrderState::open(record) {
                Some(state) => state,
                None => match self.store.order(order_id).await? {
                    Some(stored) => stored,
                    None => {
                        tracing::warn!(%order_id, seq = record.seq, "event for an order the projection does not know");
                        return Ok(None);
                    }
                },
            };
            self.open.insert(order_id, Box::new(state));
        }
        Ok(self.open.get_mut(&order_id).map(Box::as_mut))
    }

    /// Folds the events of one command into the pending batch.
    pub async fn fold(&mut self, records: &[EventRecord]) -> Result<(), StoreError> {
        for record in records {
            if let Event::Trade(trade) = &record.event {
                let fee = |maker| self.fee(&record.symbol, trade, maker);
                self.batch.trades.push(TradeRecord::of(record, trade, fee));
            }
            for order_id in record.event.order_ids() {
                if let Some(state) = self.state(record, order_id).await? {
                    state.apply(record);
                    self.changed.push(order_id);
                }
            }
        }
        Ok(())
    }

    /// Adds one command's balance changes and transfers to the pending batch, and puts the fees
    /// they charged on the trades of the same command.
    pub fn fold_funds(&mut self, ledger: &[LedgerEntry], transfers: &[TransferOutcome]) {
        for entry in ledger {
            let Cause::Trade {
                symbol,
                trade_id,
                order_id,
            } = &entry.cause
            else {
                continue;
            };
            if entry.kind != EntryKind::Fee || entry.account == FEE_ACCOUNT {
                continue;
            }
            let trade = self
                .batch
                .trades
                .iter_mut()
                .rev()
                .find(|trade| trade.seq == *trade_id && trade.symbol == symbol.as_str());
            if let Some(trade) = trade {
                let fee = Some((
                    entry.asset.to_string(),
                    entry.available_change.unsigned_abs(),
                ));
                if trade.taker_order_id == *order_id {
                    trade.taker_fee = fee;
                } else if trade.maker_order_id == *order_id {
                    trade.maker_fee = fee;
                }
            }
        }
        self.batch.ledger.extend_from_slice(ledger);
        self.batch.transfers.extend_from_slice(transfers);
    }

    /// The pending batch: the latest state of every order touched and the new trades. Closed
    /// orders leave the cache; only orders this batch touched can have closed.
    pub fn take_batch(&mut self) -> ProjectionBatch {
        let mut batch = std::mem::take(&mut self.batch);
        self.changed.sort_unstable();
        self.changed.dedup();
        for order_id in self.changed.drain(..) {
            let Some(state) = self.open.get(&order_id) else {
                continue;
            };
            batch.orders.push(OrderState::clone(state));
            if !state.status.is_open() {
                self.open.remove(&order_id);
            }
        }
        batch
    }
}

/// A side's fee of `trade` at `market`'s rates, as funds charge it ([`Market::fill_fee`]); none
/// at a zero rate.
pub fn priced_fee(market: &Market, trade: &Trade, maker: bool) -> Option<(String, Amount)> {
    let side = if maker { &trade.maker } else { &trade.taker }.side;
    let (asset, fee) = market.fill_fee(side, maker, trade.price, trade.quantity);
    (fee > 0).then(|| (asset.to_string(), fee))
}

/// Each configured instrument's fee rates and assets, as funds charge by them.
pub fn fee_markets(
    markets: &BTreeMap<Symbol, crate::api::Market>,
    assets: &oms_core::funds::Assets,
) -> BTreeMap<Symbol, Market> {
    markets
        .values()
        .filter_map(|m| Some((m.instrument.symbol().clone(), assets.market(&m.instrument)?)))
        .collect()
}
