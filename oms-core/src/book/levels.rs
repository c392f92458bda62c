//! Storage of resting orders: price levels holding FIFO queues threaded through a slab.
//!
//! # Layout
//! Every resting order lives in one slab slot and is linked to its neighbours in the queue of
//! its price level, so a cancel anywhere in a queue is O(1) after the id lookup. A level keeps
//! the sum of its orders' open quantities, which is what depth snapshots report.
//!
//! # Invariants
//! - An order is in the id index if and only if it is linked into exactly one level, except for
//!   the moment an amended order is re-matched (detached, then re-linked or removed).
//! - `Level::total` is the sum of `leaves` of its orders, `Level::count` their number, and
//!   no level is empty.
//! - `client_ids` holds the slab key of every order, found by `(account, client_order_id)`;
//!   the strings live in the slab only, so placing and removing an order allocates nothing
//!   for this index. `open[account]` is the account's number of orders in the slab, never 0.

use crate::types::{AccountId, ClientOrderId, OrderId, Price, Quantity, SelfTradePrevention, Side};
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::{Deserialize, Serialize};
use slab::Slab;
use std::collections::BTreeMap;
use std::collections::btree_map::{Entry, OccupiedEntry};
use std::hash::{BuildHasher, Hasher};

pub(super) const NIL: usize = usize::MAX;

/// An order resting on the book, as snapshots and queries show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestingOrder {
    /// The order.
    pub order_id: OrderId,
    /// Its account.
    pub account: AccountId,
    /// The client's reference, unique among the account's open orders on this book.
    pub client_order_id: ClientOrderId,
    /// Its side.
    pub side: Side,
    /// Its limit price.
    pub price: Price,
    /// Its total quantity, filled quantity included.
    pub quantity: Quantity,
    /// Its open quantity.
    pub leaves: Quantity,
    /// Whether an amendment may make it take liquidity.
    pub post_only: bool,
    /// Its self-trade prevention mode, used when an amendment makes it a taker.
    pub self_trade_prevention: SelfTradePrevention,
}

pub(super) struct Node {
    pub order: RestingOrder,
    /// The order's hashes, kept so that removing it hashes no string.
    owner: Owner,
    prev: usize,
    next: usize,
}

/// One price level: a FIFO queue and its aggregate.
#[derive(Debug)]
pub(super) struct Level {
    head: usize,
    tail: usize,
    pub total: Quantity,
    pub count: u32,
}

impl Level {
    fn empty() -> Level {
        Level {
            head: NIL,
            tail: NIL,
            total: Quantity::ZERO,
            count: 0,
        }
    }

    /// The first order in time priority.
    pub fn head(&self) -> usize {
        self.head
    }
}

/// All levels of one side of the book.
#[derive(Debug)]
pub(super) struct Levels {
    side: Side,
    map: BTreeMap<Price, Level>,
}

impl Levels {
    pub fn new(side: Side) -> Levels {
        Levels {
            side,
            map: BTreeMap::new(),
        }
    }

    /// The best price: the highest bid or the lowest ask.
    pub fn best(&self) -> Option<Price> {
        match self.side {
            Side::Buy => self.map.last_key_value(),
            Side::Sell => self.map.first_key_value(),
        }
        .map(|(price, _)| *price)
    }

    pub fn best_entry(&mut self) -> Option<OccupiedEntry<'_, Price, Level>> {
        match self.side {
            Side::Buy => self.map.last_entry(),
            Side::Sell => self.map.first_entry(),
        }
    }

    /// Levels from the best price outwards.
    pub fn best_first(&self) -> Box<dyn Iterator<Item = (&Price, &Level)> + '_> {
        match self.side {
            Side::Buy => Box::new(self.map.iter().rev()),
            Side::Sell => Box::new(self.map.iter()),
        }
    }

    pub fn level_mut(&mut self, price: Price) -> &mut Level {
        self.map.entry(price).or_insert_with(Level::empty)
    }

    /// Unlinks order `key` from its level at `price` and drops the level if that emptied it,
    /// in one lookup; the order stays stored.
    pub fn unlink(&mut self, orders: &mut Orders, price: Price, key: usize) {
        if let Entry::Occupied(mut entry) = self.map.entry(price) {
            orders.unlink(entry.get_mut(), key);
            if entry.get().count == 0 {
                entry.remove();
            }
        }
    }
}

/// The resting orders, their id and client-id indexes and the per-account open-order counts.
#[derive(Default)]
pub(super) struct Orders {
    slab: Slab<Node>,
    index: FxHashMap<OrderId, usize>,
    client_ids: HashTable<usize>,
    open: HashTable<(AccountId, u32)>,
}

/// The hashes of an order's account and of its `(account, client order id)`: computed once
/// per command, used by every index lookup and insertion of that command.
#[derive(Clone, Copy)]
pub(super) struct Owner {
    account: u64,
    client: u64,
}

impl Owner {
    pub fn new(account: &str, client_order_id: &str) -> Owner {
        let account = hash_str(0, account);
        Owner {
            account,
            client: hash_str(account, client_order_id),
        }
    }

    pub fn of(order: &RestingOrder) -> Owner {
        Owner::new(&order.account, &order.client_order_id)
    }
}

fn hash_str(seed: u64, text: &str) -> u64 {
    let mut hasher = FxBuildHasher.build_hasher();
    hasher.write_u64(seed);
    hasher.write(text.as_bytes());
    hasher.write_u8(0xff);
    hasher.finish()
}

impl Orders {
    pub fn get(&self, key: usize) -> &RestingOrder {
        &self.slab[key].order
    }

    pub fn get_mut(&mut self, key: usize) -> &mut RestingOrder {
        &mut self.slab[key].order
    }

    pub fn next(&self, key: usize) -> usize {
        self.slab[key].next
    }

    pub fn find(&self, order_id: OrderId) -> Option<usize> {
        self.index.get(&order_id).copied()
    }

    /// The open order of `account` with this client order id (`owner` hashes the two).
    pub fn find_client_id(
        &self,
        owner: Owner,
        account: &str,
        client_order_id: &str,
    ) -> Option<OrderId> {
        let slab = &self.slab;
        self.client_ids
            .find(owner.client, |&key| {
                let order = &slab[key].order;
                order.account == account && order.client_order_id == client_order_id
            })
            .map(|&key| slab[key].order.order_id)
    }

    /// The number of open orders of `account` (`owner` hashes it).
    pub fn open_count(&self, owner: Owner, account: &str) -> u32 {
        self.open
            .find(owner.account, |(open, _)| open == account)
            .map_or(0, |(_, count)| *count)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// The ids of `account`'s open orders, ascending. A scan of the book, skipped when the
    /// account has nothing open.
    pub fn of_account(&self, account: &str) -> Vec<OrderId> {
        if self.open_count(Owner::new(account, ""), account) == 0 {
            return Vec::new();
        }
        let mut ids: Vec<OrderId> = self
            .slab
            .iter()
            .map(|(_, node)| &node.order)
            .filter(|order| order.account == account)
            .map(|order| order.order_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Stores an order that is about to rest (`owner` hashes its account and client order id);
    /// link it with [`Orders::push_back`].
    pub fn insert(&mut self, order: RestingOrder, owner: Owner) -> usize {
        let order_id = order.order_id;
        let account = order.account.as_str();
        match self
            .open
            .find_mut(owner.account, |(open, _)| open == account)
        {
            Some((_, count)) => *count += 1,
            None => {
                self.open
                    .insert_unique(owner.account, (order.account.clone(), 1), |(open, _)| {
                        hash_str(0, open)
                    });
            }
        }
        let key = self.slab.insert(Node {
            order,
            owner,
            prev: NIL,
            next: NIL,
        });
        let slab = &self.slab;
        self.client_ids
            .insert_unique(owner.client, key, |&key| slab[key].owner.client);
        self.index.insert(order_id, key);
        key
    }

    /// Forgets an order that is no longer linked into any level.
    pub fn remove(&mut self, key: usize) -> RestingOrder {
        let owner = self.slab[key].owner;
        if let Ok(entry) = self.client_ids.find_entry(owner.client, |&k| k == key) {
            entry.remove();
        }
        let node = self.slab.remove(key);
        self.index.remove(&node.order.order_id);
        let account = node.order.account.as_str();
        if let Ok(mut entry) = self
            .open
            .find_entry(owner.account, |(open, _)| open == account)
        {
            entry.get_mut().1 -= 1;
            if entry.get().1 == 0 {
                entry.remove();
            }
        }
        node.order
    }

    /// Links an order at the back of `level`'s queue.
    pub fn push_back(&mut self, level: &mut Level, key: usize) {
        let tail = level.tail;
        let node = &mut self.slab[key];
        node.prev = tail;
        node.next = NIL;
        level.total += node.order.leaves;
        level.count += 1;
        if tail == NIL {
            level.head = key;
        } else {
            self.slab[tail].next = key;
        }
        level.tail = key;
    }

    /// Unlinks an order from `level`'s queue; the order stays stored.
    pub fn unlink(&mut self, level: &mut Level, key: usize) {
        let node = &mut self.slab[key];
        let (prev, next) = (node.prev, node.next);
        node.prev = NIL;
        node.next = NIL;
        level.total -= node.order.leaves;
        level.count -= 1;
        if prev == NIL {
            level.head = next;
        } else {
            self.slab[prev].next = next;
        }
        if next == NIL {
            level.tail = prev;
        } else {
            self.slab[next].prev = prev;
        }
    }

    /// The orders of a level in queue order.
    pub fn queue<'a>(&'a self, level: &Level) -> impl Iterator<Item = &'a RestingOrder> + 'a {
        let mut key = level.head;
        std::iter::from_fn(move || {
            if key == NIL {
                return None;
            }
            let node = &self.slab[key];
            key = node.next;
            Some(&node.order)
        })
    }

    /// Checks the invariants in the module doc against `levels`; for tests.
    #[cfg(test)]
    pub fn check(&self, sides: [&Levels; 2]) {
        let mut linked = 0;
        let mut open: FxHashMap<&str, u32> = FxHashMap::default();
        for levels in sides {
            for (price, level) in &levels.map {
                assert!(level.count > 0, "empty level {price:?}");
                let orders: Vec<_> = self.queue(level).collect();
                assert_eq!(orders.len(), level.count as usize);
                let total = orders.iter().map(|o| o.leaves.0).sum::<u64>();
                assert_eq!(total, level.total.0, "level total at {price:?}");
                for order in orders {
                    assert_eq!(order.price, *price);
                    assert_eq!(order.side, levels.side);
                    assert!(!order.leaves.is_zero() && order.leaves <= order.quantity);
                    assert!(self.index.contains_key(&order.order_id));
                    *open.entry(order.account.as_str()).or_default() += 1;
                    linked += 1;
                }
            }
        }
        assert_eq!(linked, self.slab.len());
        assert_eq!(self.client_ids.len(), self.slab.len());
        for (key, node) in &self.slab {
            let order = &node.order;
            let owner = Owner::of(order);
            let found = self.find_client_id(owner, &order.account, &order.client_order_id);
            assert_eq!(found, Some(order.order_id), "client id index of slot {key}");
        }
        assert!(self.open.iter().all(|(_, count)| *count > 0));
        assert_eq!(self.index.len(), self.slab.len());
        assert_eq!(open.len(), self.open.len());
        for (account, count) in open {
            let owner = Owner::new(account, "");
            assert_eq!(
                self.open_count(owner, account),
                count,
                "open count of {account}"
            );
        }
    }
}
