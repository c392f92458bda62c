//! The read projection in MongoDB (DocumentDB on AWS; FerretDB in the tests).
//!
//! Collections:
//! - `orders`: `_id` = order id (zero-padded string), the fields the list queries filter on (`account`, `symbol`,
//!   `status`, `open`, `client_order_id`), readable fields for people, and `state`, the exact
//!   order state (postcard) the API renders, in the layout its `format` names.
//! - `trades`: `_id` = `<symbol>/<seq>`, `accounts` = both sides, for the trades query.
//! - `snapshots`: `_id` = command-log partition, the processor's snapshot of its books.
//! - `funds_snapshots`: `_id` = accounts partition, the funds stage's snapshot.
//! - `balances`: `_id` = `<account>/<asset>/<partition>`, one balance as one funds partition
//!   holds it (only the fee account is in more than one; readers add the parts up), with the
//!   ledger sequence number of the entry that set it.
//! - `ledger`: `_id` = `<partition>/<seq>`, one ledger entry; `transfers`: `_id` = transfer id,
//!   a deposit or withdrawal as decided.
//!
//! # Idempotence without transactions
//! DocumentDB has no multi-document transactions and the tests run without retryable writes, so
//! every write stands alone and may be repeated: an order is replaced only by a state with a
//! higher event sequence number (`update_one` filtered on `seq < new`, upserting; the duplicate
//! key error of a lost race means a newer state is already there), and trades are inserted under
//! their natural id, a duplicate being a no-op. Balances follow the orders' rule on their
//! ledger sequence number; ledger entries and transfers are inserted under their natural id.

use super::kafka::FundsRecord;
use super::{
    Backend, Candle, FundsStore, LedgerPage, LedgerQuery, OrderPage, OrderQuery, OrderStore,
    ProjectionBatch, Result, StoreError, TradeCursor, TradeRecord, encode,
};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use oms_core::funds::FundsSnapshot;
use oms_core::{Balance, BookSnapshot, LedgerEntry, OrderId, OrderState, TransferOutcome};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Orders and trades written at once per projection batch.
const CONCURRENT_WRITES: usize = 16;

fn error(error: mongodb::error::Error) -> StoreError {
    StoreError::unavailable(Backend::Mongodb, error)
}

fn is_duplicate(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == 11000,
        ErrorKind::Command(command) => command.code == 11000,
        _ => error.to_string().contains("E11000"),
    }
}

/// A write whose duplicate-key error means "already there" (an insert under a natural id, or an
/// upsert that lost to a newer state): done either way.
fn ignoring_duplicate<T>(result: std::result::Result<T, mongodb::error::Error>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_duplicate(&e) => Ok(()),
        Err(e) => Err(error(e)),
    }
}

/// Creates the `wanted` indexes of `collection` that it does not have yet (by name).
async fn ensure_indexes(collection: &Collection<Document>, wanted: Vec<IndexModel>) -> Result<()> {
    let existing = match collection.list_index_names().await {
        Ok(names) => names,
        // A collection that does not exist yet has no indexes.
        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => {
            Vec::new()
        }
        Err(e) => return Err(error(e)),
    };
    let missing: Vec<IndexModel> = wanted
        .into_iter()
        .filter(|model| {
            let name = model.options.as_ref().and_then(|o| o.name.as_deref());
            !name.is_some_and(|name| existing.iter().any(|e| e == name))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    collection.create_indexes(missing).await.map_err(error)?;
    Ok(())
}

/// An order id as a document id: a string (FerretDB's SQLite backend pushes string equality down
/// to SQL, 64-bit integers not always), zero-padded so string order is numeric order.
fn order_key(order_id: u64) -> String {
    format!("{order_id:020}")
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

fn bytes_of<'a>(document: &'a Document, field: &'static str) -> Result<&'a [u8]> {
    match document.get(field) {
        Some(Bson::Binary(binary)) => Ok(&binary.bytes),
        _ => Err(StoreError::Corrupt {
            table: "mongodb",
            message: format!("document without binary field {field}"),
        }),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|error| StoreError::Corrupt {
        table: "mongodb",
        message: error.to_string(),
    })
}

/// The format of the `state` of order documents this build writes, in their `format` field;
/// documents without one are of format 1 (read by [`super::legacy`]).
const ORDER_FORMAT: i32 = 2;

/// The order state of an order document, of any format this build knows.
/// Every document of `cursor`, the postcard value of its `field` decoded.
async fn decode_all<T: for<'de> Deserialize<'de>>(
    mut cursor: mongodb::Cursor<Document>,
    field: &'static str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(document) = cursor.try_next().await.map_err(error)? {
        out.push(decode(bytes_of(&document, field)?)?);
    }
    Ok(out)
}

fn order_state(document: &Document) -> Result<OrderState> {
    let bytes = bytes_of(document, "state")?;
    match document.get_i32("format") {
        Ok(ORDER_FORMAT) => decode(bytes),
        Err(_) | Ok(1) => super::legacy::order_state(bytes).map_err(|error| StoreError::Corrupt {
            table: "mongodb",
            message: error.to_string(),
        }),
        Ok(newer) => Err(StoreError::Corrupt {
            table: "mongodb",
            message: format!("order format {newer} is newer than this build ({ORDER_FORMAT})"),
        }),
    }
}

fn status_name(state: &OrderState) -> String {
    serde_json::to_value(state.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A processor's snapshot of one command-log partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    /// The last command-log offset applied.
    pub offset: u64,
    /// Every book of the partition.
    pub books: Vec<BookSnapshot>,
}

/// The funds stage's snapshot of one accounts partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsPartitionSnapshot {
    /// The last accounts-topic offset applied.
    pub offset: u64,
    /// Balances and holds.
    pub funds: FundsSnapshot,
}

/// The MongoDB order store.
#[derive(Clone)]
pub struct MongoStore {
    orders: Collection<Document>,
    trades: Collection<Document>,
    candles: Collection<Document>,
    snapshots: Collection<Document>,
    funds_snapshots: Collection<Document>,
    balances: Collection<Document>,
    ledger: Collection<Document>,
    transfers: Collection<Document>,
    database: mongodb::Database,
    /// Bound on every operation: the driver has none of its own here.
    timeout: Duration,
}

impl MongoStore {
    /// The postcard value in `field` of the document `id` of `collection`, if there is one.
    async fn find_by_id<T: for<'de> Deserialize<'de>>(
        &self,
        collection: &Collection<Document>,
        id: String,
        field: &'static str,
    ) -> Result<Option<T>> {
        self.bounded(async {
            let found = collection.find_one(doc! {"_id": id}).await.map_err(error)?;
            found
                .map(|document| decode(bytes_of(&document, field)?))
                .transpose()
        })
        .await
    }

    /// The same store with another bound on each operation. The projector writes with a long
    /// one: its writes are not on any request's path, and abandoning a slow write after the
    /// request path's 2 s only to send it again left the server more to do each time (a
    /// projector's writes timed out for minutes after a resharding, `tests/distributed.rs`).
    pub fn with_timeout(&self, timeout: Duration) -> MongoStore {
        MongoStore {
            timeout,
            ..self.clone()
        }
    }

    /// Runs one operation within the store's timeout.
    async fn bounded<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::unavailable(
                    Backend::Mongodb,
                    "operation timed out",
                ))
            })
    }
}

impl MongoStore {
    /// Connects to `uri` and uses `database`; creates the indexes the queries need. Server
    /// selection is bounded by `timeout`, so an unreachable server fails fast.
    pub async fn connect(uri: &str, database: &str, timeout: Duration) -> Result<MongoStore> {
        let mut options = ClientOptions::parse(uri).await.map_err(error)?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("oms-runtime".into());
        let client = Client::with_options(options).map_err(error)?;
        let database = client.database(database);
        let store = MongoStore {
            orders: database.collection("orders"),
            trades: database.collection("trades"),
            candles: database.collection("candles"),
            snapshots: database.collection("snapshots"),
            funds_snapshots: database.collection("funds_snapshots"),
            balances: database.collection("balances"),
            ledger: database.collection("ledger"),
            transfers: database.collection("transfers"),
            database,
            timeout,
        };
        Ok(store)
    }

    /// Creates the indexes of the list queries that are missing. Existing ones are listed first
    /// and left alone: asking to create an index that exists is not harmless everywhere (the
    /// test server fails on it), and a restarted projector must come up on its own database.
    pub async fn create_indexes(&self) -> Result<()> {
        self.bounded(async {
            let index = |keys: Document, name: &str| {
                IndexModel::builder()
                    .keys(keys)
                    .options(IndexOptions::builder().name(name.to_string()).build())
                    .build()
            };
            ensure_indexes(
                &self.orders,
                vec![
                    index(doc! {"account": 1, "_id": -1}, "account_newest"),
                    index(
                        doc! {"account": 1, "open": 1, "_id": -1},
                        "account_open_newest",
                    ),
                    index(
                        doc! {"account": 1, "client_order_id": 1},
                        "account_client_order_id",
                    ),
                ],
            )
            .await?;
            ensure_indexes(
                &self.trades,
                vec![
                    index(doc! {"accounts": 1, "ts": -1}, "accounts_newest"),
                    index(doc! {"symbol": 1, "seq": -1}, "symbol_newest"),
                ],
            )
            .await?;
            ensure_indexes(
                &self.ledger,
                vec![index(doc! {"account": 1, "seq": -1}, "account_newest")],
            )
            .await?;
            ensure_indexes(&self.balances, vec![index(doc! {"account": 1}, "account")]).await
        })
        .await
    }

    async fn put_order(&self, state: &OrderState) -> Result<()> {
        self.bounded(async {
            let id = order_key(state.order.order_id.0);
            let seq = state.seq as i64;
            let fields = doc! {
                "seq": seq,
                "version": state.version as i64,
                "account": state.order.account.as_str(),
                "symbol": state.order.symbol.as_str(),
                "client_order_id": state.order.client_order_id.as_str(),
                "status": status_name(state),
                "open": state.status.is_open(),
                "created_at_ns": state.created_at.0 as i64,
                "updated_at_ns": state.updated_at.0 as i64,
                "state": binary(encode("order", state)?),
                "format": ORDER_FORMAT,
            };
            // The first write of an order is an insert: constant cost on every backend (FerretDB's
            // SQLite updates scan the collection). A duplicate key means it exists: update it only
            // if this state is newer.
            let mut document = fields.clone();
            document.insert("_id", &id);
            match self.orders.insert_one(document).await {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(error(e)),
            }
            let result = self
                .orders
                .update_one(
                    doc! {"_id": &id, "seq": {"$lt": seq}},
                    doc! {"$set": fields},
                )
                .upsert(true)
                .await;
            // A duplicate: the order exists with a sequence number at least as high.
            ignoring_duplicate(result)
        })
        .await
    }

    /// Folds `trades` into the candles they fall in: the stored candles are read, added to
    /// (a trade folded already is skipped, see [`Candle::add`]) and written back. One projector
    /// writes a symbol's trades, in order, so nothing else writes these candles meanwhile.
    async fn put_candles(&self, trades: &[TradeRecord]) -> Result<()> {
        if trades.is_empty() {
            return Ok(());
        }
        let ids: std::collections::BTreeSet<String> = trades
            .iter()
            .map(|trade| candle_key(&trade.symbol, Candle::minute_of(trade.ts)))
            .collect();
        let stored: std::collections::HashMap<String, Candle> = self
            .bounded(async {
                let ids: Vec<&String> = ids.iter().collect();
                let cursor = self
                    .candles
                    .find(doc! {"_id": {"$in": ids}})
                    .await
                    .map_err(error)?;
                let found: Vec<Candle> = decode_all(cursor, "candle").await?;
                Ok(found
                    .into_iter()
                    .map(|candle| (candle_key(&candle.symbol, candle.minute), candle))
                    .collect())
            })
            .await?;
        let candles = super::fold_candles(trades, |symbol, minute| {
            Ok(stored.get(&candle_key(symbol, minute)).cloned())
        })?;
        let writes = candles.into_iter().map(|candle| {
            let store = self.clone();
            async move {
                let id = candle_key(&candle.symbol, candle.minute);
                let document = doc! {
                    "_id": &id,
                    "symbol": candle.symbol.as_str(),
                    "minute": candle.minute as i64,
                    "candle": binary(encode("candle", &candle)?),
                };
                store
                    .bounded(async {
                        store
                            .candles
                            .replace_one(doc! {"_id": &id}, document)
                            .upsert(true)
                            .await
                            .map_err(error)?;
                        Ok(())
                    })
                    .await
            }
        });
        futures::stream::iter(writes)
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn put_trade(&self, trade: &TradeRecord) -> Result<()> {
        self.bounded(async {
            let document = doc! {
                "_id": format!("{}/{}", trade.symbol, trade.seq),
                "symbol": trade.symbol.as_str(),
                "seq": trade.seq as i64,
                "ts": trade.ts as i64,
                "accounts": [trade.taker_account.as_str(), trade.maker_account.as_str()],
                "trade": binary(encode("trade", trade)?),
            };
            ignoring_duplicate(self.trades.insert_one(document).await)
        })
        .await
    }

    /// The latest snapshot of a command-log partition.
    pub async fn partition_snapshot(&self, partition: u32) -> Result<Option<PartitionSnapshot>> {
        self.find_by_id(&self.snapshots, partition.to_string(), "payload")
            .await
    }

    /// Replaces a partition's snapshot, unless a newer one is stored.
    pub async fn save_partition_snapshot(
        &self,
        partition: u32,
        snapshot: &PartitionSnapshot,
    ) -> Result<()> {
        let payload = encode("snapshot", snapshot)?;
        self.save_snapshot(&self.snapshots, partition, snapshot.offset, payload)
            .await
    }

    /// Replaces the snapshot of `partition` in `collection` by `payload`, taken at input
    /// `offset`, unless one at a later offset is stored (a stage that lost its partition may
    /// still write an older one).
    async fn save_snapshot(
        &self,
        collection: &Collection<Document>,
        partition: u32,
        offset: u64,
        payload: Vec<u8>,
    ) -> Result<()> {
        self.bounded(async {
            let offset = offset as i64;
            let result = collection
                .update_one(
                    doc! {"_id": partition.to_string(), "offset": {"$lt": offset}},
                    doc! {"$set": {"offset": offset, "payload": binary(payload)}},
                )
                .upsert(true)
                .await;
            ignoring_duplicate(result)
        })
        .await
    }
}

/// A ledger sequence number as part of a document id: zero-padded, so string order is numeric.
/// A candle's id: its symbol and minute, the minute zero-padded so ids sort in time.
fn candle_key(symbol: &str, minute: u64) -> String {
    format!("{symbol}/{minute:012}")
}

fn ledger_key(partition: u32, seq: u64) -> String {
    format!("{partition}/{seq:020}")
}

impl MongoStore {
    /// The latest snapshot of an accounts partition.
    pub async fn funds_snapshot(&self, partition: u32) -> Result<Option<FundsPartitionSnapshot>> {
        self.find_by_id(&self.funds_snapshots, partition.to_string(), "payload")
            .await
    }

    /// Replaces an accounts partition's snapshot, unless a newer one is stored.
    pub async fn save_funds_snapshot(
        &self,
        partition: u32,
        snapshot: &FundsPartitionSnapshot,
    ) -> Result<()> {
        let payload = encode("funds snapshot", snapshot)?;
        self.save_snapshot(&self.funds_snapshots, partition, snapshot.offset, payload)
            .await
    }

    /// Folds what funds partitions did into balances, the ledger and transfers; idempotent, so
    /// a record projected twice (after a projector restart) changes nothing.
    pub async fn apply_funds(&self, records: &[(u32, FundsRecord)]) -> Result<()> {
        // The last balance of each (account, asset, partition) in these records.
        let mut balances: std::collections::BTreeMap<(String, String, u32), &LedgerEntry> =
            std::collections::BTreeMap::new();
        let mut entries = Vec::new();
        let mut transfers = Vec::new();
        for (partition, record) in records {
            for entry in &record.ledger {
                let key = (
                    entry.account.to_string(),
                    entry.asset.to_string(),
                    *partition,
                );
                balances.insert(key, entry);
                entries.push((*partition, entry));
            }
            transfers.extend(record.transfer.as_ref());
        }
        let writes = entries
            .into_iter()
            .map(|(partition, entry)| {
                let store = self.clone();
                let entry = entry.clone();
                async move { store.put_ledger_entry(partition, &entry).await }
            })
            .collect::<Vec<_>>();
        futures::stream::iter(writes)
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        for transfer in transfers {
            self.put_transfer(transfer).await?;
        }
        let writes = balances
            .into_iter()
            .map(|((account, asset, partition), entry)| {
                let store = self.clone();
                let (seq, balance) = (entry.seq, entry.balance);
                async move {
                    store
                        .put_balance(&account, &asset, partition, seq, balance)
                        .await
                }
            })
            .collect::<Vec<_>>();
        futures::stream::iter(writes)
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn put_ledger_entry(&self, partition: u32, entry: &LedgerEntry) -> Result<()> {
        self.bounded(async {
            let document = doc! {
                "_id": ledger_key(partition, entry.seq),
                "account": entry.account.as_str(),
                "asset": entry.asset.as_str(),
                "partition": partition as i64,
                "seq": entry.seq as i64,
                "entry": binary(encode("ledger entry", entry)?),
            };
            ignoring_duplicate(self.ledger.insert_one(document).await)
        })
        .await
    }

    async fn put_transfer(&self, outcome: &TransferOutcome) -> Result<()> {
        self.bounded(async {
            let document = doc! {
                "_id": order_key(outcome.transfer.transfer_id),
                "outcome": binary(encode("transfer", outcome)?),
            };
            ignoring_duplicate(self.transfers.insert_one(document).await)
        })
        .await
    }

    async fn put_balance(
        &self,
        account: &str,
        asset: &str,
        partition: u32,
        seq: u64,
        balance: Balance,
    ) -> Result<()> {
        self.bounded(async {
            let id = format!("{account}/{asset}/{partition}");
            let seq = seq as i64;
            let fields = doc! {
                "account": account,
                "asset": asset,
                "partition": partition as i64,
                "seq": seq,
                "balance": binary(encode("balance", &balance)?),
            };
            // As for orders: an insert first, then an update only by a newer entry.
            let mut document = fields.clone();
            document.insert("_id", &id);
            match self.balances.insert_one(document).await {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(error(e)),
            }
            let result = self
                .balances
                .update_one(
                    doc! {"_id": &id, "seq": {"$lt": seq}},
                    doc! {"$set": fields},
                )
                .upsert(true)
                .await;
            ignoring_duplicate(result)
        })
        .await
    }
}

/// Balances, the ledger and transfers as the projector folded them from the ledger topic.
#[async_trait]
impl FundsStore for MongoStore {
    async fn balances(&self, account: &str) -> Result<Vec<(String, Balance)>> {
        self.bounded(async {
            let mut cursor = self
                .balances
                .find(doc! {"account": account})
                .await
                .map_err(error)?;
            // The fee account's balances are split across funds partitions: add them up.
            let mut sums: std::collections::BTreeMap<String, Balance> =
                std::collections::BTreeMap::new();
            while let Some(document) = cursor.try_next().await.map_err(error)? {
                let asset = document.get_str("asset").unwrap_or_default().to_string();
                let part: Balance = decode(bytes_of(&document, "balance")?)?;
                let sum = sums.entry(asset).or_default();
                sum.available += part.available;
                sum.held += part.held;
            }
            Ok(sums.into_iter().collect())
        })
        .await
    }

    async fn ledger(&self, query: &LedgerQuery) -> Result<LedgerPage> {
        self.bounded(async {
            let mut filter = doc! {"account": query.account.as_str()};
            if let Some(asset) = &query.asset {
                filter.insert("asset", asset.as_str());
            }
            if let Some(before) = query.before {
                filter.insert("seq", doc! {"$lt": before as i64});
            }
            let cursor = self
                .ledger
                .find(filter)
                .sort(doc! {"seq": -1, "partition": -1})
                .limit(query.limit as i64 + 1)
                .await
                .map_err(error)?;
            let mut entries: Vec<LedgerEntry> = decode_all(cursor, "entry").await?;
            let next = (entries.len() > query.limit).then(|| {
                entries.truncate(query.limit);
                entries.last().map(|entry| entry.seq)
            });
            Ok(LedgerPage {
                entries,
                next: next.flatten(),
            })
        })
        .await
    }

    async fn transfer(&self, transfer_id: u64) -> Result<Option<TransferOutcome>> {
        self.find_by_id(&self.transfers, order_key(transfer_id), "outcome")
            .await
    }
}

#[async_trait]
impl OrderStore for MongoStore {
    async fn apply(&self, batch: &ProjectionBatch) -> Result<()> {
        // Owned futures: each write stands alone (no transactions), so they may run at once.
        let orders = batch.orders.iter().cloned().map(|state| {
            let store = self.clone();
            async move { store.put_order(&state).await }
        });
        futures::stream::iter(orders)
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        let trades = batch.trades.iter().cloned().map(|trade| {
            let store = self.clone();
            async move { store.put_trade(&trade).await }
        });
        futures::stream::iter(trades)
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        // After the trades: a crash between the two replays both, and the candles skip what
        // they counted.
        self.put_candles(&batch.trades).await
    }

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderState>> {
        self.bounded(async {
            let found = self
                .orders
                .find_one(doc! {"_id": order_key(order_id.0)})
                .await
                .map_err(error)?;
            found.as_ref().map(order_state).transpose()
        })
        .await
    }

    async fn orders(&self, query: &OrderQuery) -> Result<OrderPage> {
        self.bounded(async {
            let mut filter = doc! {"account": query.account.as_str()};
            if let Some(symbol) = &query.symbol {
                filter.insert("symbol", symbol.as_str());
            }
            if query.open_only {
                filter.insert("open", true);
            }
            if let Some(status) = query.status {
                let name = serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
                filter.insert("status", name.unwrap_or_default());
            }
            if let Some(before) = query.before {
                filter.insert("_id", doc! {"$lt": order_key(before.0)});
            }
            let mut cursor = self
                .orders
                .find(filter)
                .sort(doc! {"_id": -1})
                .limit(query.limit as i64 + 1)
                .await
                .map_err(error)?;
            let mut orders = Vec::new();
            while let Some(document) = cursor.try_next().await.map_err(error)? {
                orders.push(order_state(&document)?);
            }
            let next = (orders.len() > query.limit).then(|| {
                orders.truncate(query.limit);
                orders.last().map(|o| o.order.order_id)
            });
            Ok(OrderPage {
                orders,
                next: next.flatten(),
            })
        })
        .await
    }

    /// In `(ts, _id)` order, newest first: the `_id` (`symbol/seq`) orders the trades of one
    /// time, as a string, the same way in the sort and in the cursor's filter.
    async fn trades(
        &self,
        account: &str,
        symbol: Option<&str>,
        before: Option<&TradeCursor>,
        limit: usize,
    ) -> Result<Vec<TradeRecord>> {
        self.bounded(async {
            let mut filter = doc! {"accounts": account};
            if let Some(symbol) = symbol {
                filter.insert("symbol", symbol);
            }
            if let Some(cursor) = before {
                let ts = cursor.ts as i64;
                let id = format!("{}/{}", cursor.symbol, cursor.seq);
                filter.insert(
                    "$or",
                    vec![
                        doc! {"ts": {"$lt": ts}},
                        doc! {"ts": ts, "_id": {"$lt": id}},
                    ],
                );
            }
            let cursor = self
                .trades
                .find(filter)
                .sort(doc! {"ts": -1, "_id": -1})
                .limit(limit as i64)
                .await
                .map_err(error)?;
            decode_all(cursor, "trade").await
        })
        .await
    }

    async fn market_trades(&self, symbol: &str, limit: usize) -> Result<Vec<TradeRecord>> {
        self.bounded(async {
            let cursor = self
                .trades
                .find(doc! {"symbol": symbol})
                .sort(doc! {"seq": -1})
                .limit(limit as i64)
                .await
                .map_err(error)?;
            decode_all(cursor, "trade").await
        })
        .await
    }

    async fn candles(&self, symbol: &str, from: u64, limit: usize) -> Result<Vec<Candle>> {
        self.bounded(async {
            let range = doc! {"$gte": candle_key(symbol, from), "$lte": candle_key(symbol, 999_999_999_999)};
            let cursor = self
                .candles
                .find(doc! {"_id": range})
                .sort(doc! {"_id": 1})
                .limit(limit as i64)
                .await
                .map_err(error)?;
            decode_all(cursor, "candle").await
        })
        .await
    }

    /// Not answered from MongoDB: a query on a secondary index per request costs too much on
    /// some backends (FerretDB scans), and the processor's book enforces the rule exactly.
    async fn open_by_client_id(
        &self,
        _account: &str,
        _symbol: &str,
        _client_order_id: &str,
    ) -> Result<Option<OrderId>> {
        Ok(None)
    }

    /// On the `account_client_order_id` index (DocumentDB and MongoDB use it; the test server,
    /// FerretDB on SQLite, scans, which its small data affords).
    async fn by_client_id(
        &self,
        account: &str,
        client_order_id: &str,
        symbol: Option<&str>,
    ) -> Result<Option<OrderState>> {
        self.bounded(async {
            let mut filter = doc! {"account": account, "client_order_id": client_order_id};
            if let Some(symbol) = symbol {
                filter.insert("symbol", symbol);
            }
            let found = self
                .orders
                .find_one(filter)
                .sort(doc! {"_id": -1})
                .await
                .map_err(error)?;
            found.as_ref().map(order_state).transpose()
        })
        .await
    }

    async fn snapshots(&self) -> Result<Vec<(super::Position, BookSnapshot)>> {
        // Book snapshots of the single-node pipeline; processors keep partition snapshots.
        Ok(Vec::new())
    }

    async fn ping(&self) -> Result<()> {
        self.bounded(async {
            self.database
                .run_command(doc! {"ping": 1})
                .await
                .map_err(error)?;
            Ok(())
        })
        .await
    }
}
