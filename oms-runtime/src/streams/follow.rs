//! Turns the pipeline's outputs (events and ledger entries) into stream messages, the same way
//! in both modes.
//!
//! Order updates need each order's whole state, so the follower folds events into
//! [`OrderState`]s as the projection does, with its own cache of open orders. An event for an
//! order it has not seen open (opened before this follower started) reads the order from the
//! projection; a follower starts where the projection had got to (single-node: after the
//! journal it was restored with; distributed: the projector's committed offsets), so that state
//! holds every event before this one.

use super::protocol::{self, Message};
use super::{Body, Topic, Update};
use crate::api::Market;
use crate::api::funds::LedgerEntryView;
use crate::api::model::{FillView, Liquidity, OrderView};
use crate::processing::projection::{fee_markets, priced_fee};
use crate::store::{OrderStore, StoreError, TradeRecord};
use oms_core::funds::Assets;
use oms_core::{Event, EventRecord, LedgerEntry, OrderId, OrderState, Symbol};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one source record gives the streams.
#[derive(Default, Debug)]
pub struct Folded {
    /// Private updates, in order.
    pub updates: Vec<Update>,
    /// Public trades.
    pub trades: Vec<Arc<TradeRecord>>,
    /// Books that changed, with their last event's sequence number.
    pub touched: Vec<(Symbol, u64)>,
}

/// Folds outputs into stream messages.
pub struct Follower {
    fees: BTreeMap<Symbol, oms_core::funds::Market>,
    store: Arc<dyn OrderStore>,
    /// Boxed, as in the projection: growing the map moves pointers, not order states.
    open: FxHashMap<OrderId, Box<OrderState>>,
}

impl Follower {
    /// A follower that prices fees from `markets` and `assets` and reads orders it has not
    /// seen open from `store`.
    pub fn new(
        markets: &BTreeMap<Symbol, Market>,
        assets: &Assets,
        store: Arc<dyn OrderStore>,
    ) -> Follower {
        Follower {
            fees: fee_markets(markets, assets),
            store,
            open: FxHashMap::default(),
        }
    }

    /// The messages of one command's events and ledger entries, added to `out`.
    pub async fn fold(
        &mut self,
        events: &[EventRecord],
        ledger: &[LedgerEntry],
        out: &mut Folded,
    ) -> Result<(), StoreError> {
        for record in events {
            self.fold_event(record, out).await?;
        }
        for entry in ledger {
            out.updates.push(Update {
                topic: Topic::Balances(entry.account.clone()),
                body: Body::Balance(Box::new(entry.clone())),
            });
        }
        Ok(())
    }

    async fn fold_event(
        &mut self,
        record: &EventRecord,
        out: &mut Folded,
    ) -> Result<(), StoreError> {
        match out.touched.last_mut() {
            Some((symbol, seq)) if *symbol == record.symbol => *seq = record.seq,
            _ => out.touched.push((record.symbol.clone(), record.seq)),
        }
        if let Event::Trade(trade) = &record.event {
            let market = self.fees.get(&record.symbol);
            let fee = |maker| market.and_then(|m| priced_fee(m, trade, maker));
            let stored = Arc::new(TradeRecord::of(record, trade, fee));
            out.updates.push(Update {
                topic: Topic::Fills(trade.taker.account.clone()),
                body: Body::Fill(stored.clone(), Liquidity::Taker),
            });
            out.updates.push(Update {
                topic: Topic::Fills(trade.maker.account.clone()),
                body: Body::Fill(stored.clone(), Liquidity::Maker),
            });
            out.trades.push(stored);
        }
        for order_id in record.event.order_ids() {
            let Some((state, read)) = self.state(record, order_id).await? else {
                continue;
            };
            // A new order's state is its opening event's; one read from the projection may
            // already be past this event, and is then sent as it is, once.
            let fresh = state.apply(record) || state.seq == record.seq || read;
            if !fresh {
                continue;
            }
            let closed = !state.status.is_open();
            out.updates.push(Update {
                topic: Topic::Orders(state.order.account.clone()),
                body: Body::Order(Box::new(state.clone())),
            });
            if closed {
                self.open.remove(&order_id);
            }
        }
        Ok(())
    }

    /// The state to fold `record` into: a new order's from its own event, an open one's from
    /// the cache, another from the projection (then `true`).
    async fn state(
        &mut self,
        record: &EventRecord,
        order_id: OrderId,
    ) -> Result<Option<(&mut OrderState, bool)>, StoreError> {
        let mut read = false;
        if !self.open.contains_key(&order_id) {
            let state = match OrderState::open(record) {
                Some(state) => state,
                None => match self.store.order(order_id).await? {
                    Some(stored) => {
                        read = true;
                        stored
                    }
                    None => return Ok(None),
                },
            };
            self.open.insert(order_id, Box::new(state));
        }
        Ok(self
            .open
            .get_mut(&order_id)
            .map(|state| (state.as_mut(), read)))
    }
}

/// Renders updates as the API shows them.
#[derive(Clone, Default)]
pub struct Render {
    markets: Arc<BTreeMap<Symbol, Market>>,
    assets: Arc<Assets>,
}

impl Render {
    /// Renders with these instruments and assets.
    pub fn new(markets: Arc<BTreeMap<Symbol, Market>>, assets: Arc<Assets>) -> Render {
        Render { markets, assets }
    }

    /// The message's JSON object (without the cursor).
    pub fn body(&self, topic: &Topic, body: &Body) -> String {
        let account = match topic {
            Topic::Orders(a) | Topic::Fills(a) | Topic::Balances(a) => a.as_str(),
            _ => "",
        };
        match body {
            Body::Order(state) => protocol::text(&Message::Order {
                account,
                order: OrderView::new(state, self.instrument(state.order.symbol.as_str())),
            }),
            Body::Fill(trade, liquidity) => {
                let instrument = self.instrument(&trade.symbol);
                let fill = FillView::of(trade, account, instrument, &self.assets)
                    .into_iter()
                    .find(|fill| fill.liquidity == *liquidity);
                match fill {
                    Some(fill) => protocol::text(&Message::Fill { account, fill }),
                    None => String::new(),
                }
            }
            Body::Balance(entry) => protocol::text(&Message::Balance {
                account,
                entry: LedgerEntryView::new(entry, &self.assets),
            }),
            #[cfg(test)]
            Body::Raw(text) => text.clone(),
        }
    }

    /// A public trade's message.
    pub fn trade(&self, trade: &TradeRecord) -> Option<String> {
        let instrument = self.instrument(&trade.symbol)?;
        Some(protocol::text(&Message::Trade {
            symbol: &trade.symbol,
            trade: crate::api::model::MarketTradeView::new(trade, instrument),
        }))
    }

    fn instrument(&self, symbol: &str) -> Option<&oms_core::Instrument> {
        self.markets.get(symbol).map(|market| &market.instrument)
    }
}
