//! Single-node storage: the command log (the journal in segment files, the idempotency index in
//! fjall), and the read projection and snapshots in redb.
//!
//! # Two writers
//! The durable path is [`log`]: a `202` waits for its entry to be appended to the journal's
//! segment file and fsynced, in a group with every request waiting at that moment. The
//! projection (orders, trades, money, snapshots) is derived from the journal, so it is written
//! by its own thread into redb, in large transactions that are not fsynced one by one (see
//! below); a crash loses at most what the journal replays. Before this split one writer
//! committed both through redb's copy-on-write B-tree, about 8 KB of rewritten pages per order,
//! and that was the ceiling of the single node (`docs/benchmarks.md`).
//!
//! # Why snapshots live with the projection
//! In single-node mode the projection is the only durable copy of the events. A snapshot at
//! position P may only be kept if every event up to P is projected, so snapshots are written by
//! the projector in the same transaction as the events that precede them. Those transactions
//! are fsynced (`Durability::Immediate`), and so is the first projection transaction after a
//! second without one; the others are not, and become durable with the next fsynced one. redb
//! restores the last fsynced commit after a crash; the engine then restarts from the snapshot in
//! it and replays the journal after it, and the projection's sequence checks ignore what it had
//! already.
//!
//! # Money
//! Single-node mode keeps balances too: the projector writes every ledger entry (in runs, by
//! account and sequence), each balance with the sequence of the entry that set it (a replay
//! never moves one backwards), each decided transfer, and the engine's snapshot (funds and every
//! book at one journal position) with the outputs before it. A database from before funds existed has
//! orders its journal cannot replay under them; it is refused at start (the `meta` table names
//! the format).
//!
//! # Reads and the request path
//! Opening a redb read transaction waits while the projection's writer commits (tens of
//! milliseconds when the disk is busy), and an async worker that waits holds up every request
//! on it. So queries run on the blocking pool, and the two reads requests make all the time
//! come from copies in memory that this process keeps as the tables' only writer: the open
//! orders' client order ids (every placement checks one) and the cancel-after deadlines.

use super::{
    Ack, Backend, Journal, JournalEntry, JournalReader, LogPosition, OrderPage, OrderQuery,
    OrderStore, Origin, Position, ProjectionBatch, Reservation, Result, StoreError, StoredResponse,
    TradeRecord, encode,
};
use super::{Candle, FundsStore, LedgerPage, LedgerQuery, TradeCursor};
use crate::metrics::StoreMetrics;
use async_trait::async_trait;
use log::{Log, LogOp};
use oms_core::{
    Balance, BookSnapshot, EngineSnapshot, LedgerEntry, OrderId, OrderState, TransferOutcome,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

mod background;
mod log;
mod segments;

/// The journal and idempotency tables of format 3 and before, read only to migrate them to
/// the log.
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("idempotency_expiry");
const ORDERS: TableDefinition<u64, &[u8]> = TableDefinition::new("orders");
const ACCOUNT_ORDERS: TableDefinition<(&str, u64), ()> = TableDefinition::new("account_orders");
const OPEN_ORDERS: TableDefinition<(&str, u64), ()> = TableDefinition::new("open_orders");
/// `(account, symbol, client order id)` of every open order.
const CLIENT_IDS: TableDefinition<(&str, &str, &str), u64> =
    TableDefinition::new("open_client_ids_by_symbol");
/// `(account, client order id, order id)` of every order: the lookup by client order id.
const CLIENT_ORDERS: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("client_orders");
const TRADES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("trades");
/// account → its cancel-after deadline, milliseconds since the epoch.
const DEADLINES: TableDefinition<&str, u64> = TableDefinition::new("cancel_after");
/// `(symbol, minute)` → the minute's [`Candle`].
const CANDLES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("candles");
const ACCOUNT_TRADES: TableDefinition<(&str, u64, &str, u64), ()> =
    TableDefinition::new("account_trades");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// `(account, asset)` → the sequence number of the entry that set it (8 bytes, big-endian),
/// then the balance.
const BALANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("balances");
/// `(account, seq of the first entry)` → a run of that account's ledger entries, in order: the
/// last one's sequence number (8 bytes, big-endian), then the entries, one after another. The
/// projection writes one run per account per transaction: a row per entry (five or six an
/// order, counting the fee account's) cost its writer more than everything else it writes.
const LEDGER: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("ledger");
const TRANSFERS: TableDefinition<u64, &[u8]> = TableDefinition::new("transfers");
/// The engine snapshot, under [`ENGINE_KEY`].
const ENGINE: TableDefinition<&str, &[u8]> = TableDefinition::new("engine");
const ENGINE_KEY: &str = "engine";
/// `format` → [`FORMAT`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// 2: with funds (issue 13). 3: orders with a quote budget. 4: the journal and idempotency
/// records in the log beside the database. 5: order holds in the engine snapshot carry the
/// amendments on their way to the book (issue 15). 6: the ledger in runs of entries
/// ([`LEDGER`]). Formats 2 to 5 are migrated at start; a database without a format and with a
/// journal is older than funds.
const FORMAT: u64 = 6;

/// Journal entries kept in memory after their commit, so the processor reading right behind
/// the writers gets them without a database read and a decode.
const TAIL: usize = 16_384;
/// Most projection batches in one transaction.
const MAX_BATCH: usize = 64;
/// The longest the projection goes without an fsynced commit, so that redb can reuse the pages
/// it freed (it keeps them until a durable commit).
const DURABLE_EVERY: Duration = Duration::from_secs(1);

fn format_2_error(table: &'static str) -> impl Fn(postcard::Error) -> StoreError {
    move |error| StoreError::Corrupt {
        table,
        message: format!("format 2 record: {error}"),
    }
}

/// Rewrites a format 2 database's order states in today's layout (see [`super::legacy`]), in
/// the transaction that opens it: all or nothing. Its journal entries are rewritten on their
/// way to the log ([`migrate_journal`]).
fn migrate_from_2(txn: &redb::WriteTransaction, path: &Path) -> Result<()> {
    let corrupt = format_2_error;
    tracing::info!(path = %path.display(), "migrating the order states of format 2");
    let mut orders = txn.open_table(ORDERS).map_err(db_error)?;
    let mut states = Vec::new();
    for row in orders.iter().map_err(db_error)? {
        let (key, value) = row.map_err(db_error)?;
        let (seq, state) = value.value().split_at_checked(8).unwrap_or_default();
        let state = super::legacy::order_state(state).map_err(corrupt("orders"))?;
        let mut bytes = seq.to_vec();
        bytes.extend_from_slice(&encode("order", &state)?);
        states.push((key.value(), bytes));
    }
    for (key, bytes) in states {
        orders.insert(key, bytes.as_slice()).map_err(db_error)?;
    }
    Ok(())
}

/// Rewrites the engine snapshot of formats 2 to 4 in today's layout, in the transaction that
/// opens the database.
fn migrate_engine_snapshot(txn: &redb::WriteTransaction) -> Result<()> {
    let mut table = txn.open_table(ENGINE).map_err(db_error)?;
    let Some(bytes) = table.get(ENGINE_KEY).map_err(db_error)? else {
        return Ok(());
    };
    let (position, snapshot) =
        super::legacy::engine_snapshot(bytes.value()).map_err(|error| StoreError::Corrupt {
            table: "engine",
            message: format!("format 4 snapshot: {error}"),
        })?;
    drop(bytes);
    let stored = encode("engine", &StoredEngine { position, snapshot })?;
    table
        .insert(ENGINE_KEY, stored.as_slice())
        .map_err(db_error)?;
    Ok(())
}

/// Moves the journal and idempotency records of a format 2 or 3 database into the log (a
/// format 2 journal rewritten in today's layout on the way), then drops them from the database
/// in the transaction that opens it. The log persists the copy before that transaction
/// commits, and a copy repeated after a crash writes the same rows again.
fn migrate_journal(
    txn: &redb::WriteTransaction,
    log: &Log,
    path: &Path,
    format: u64,
) -> Result<()> {
    let mut journal = Vec::new();
    for row in txn
        .open_table(JOURNAL)
        .map_err(db_error)?
        .iter()
        .map_err(db_error)?
    {
        let (key, value) = row.map_err(db_error)?;
        let bytes = if format == 2 {
            let entry =
                super::legacy::journal_entry(value.value()).map_err(format_2_error("journal"))?;
            encode("journal entry", &entry)?
        } else {
            value.value().to_vec()
        };
        journal.push((key.value(), bytes));
    }
    let mut idempotency = Vec::new();
    for row in txn
        .open_table(IDEMPOTENCY)
        .map_err(db_error)?
        .iter()
        .map_err(db_error)?
    {
        let (key, value) = row.map_err(db_error)?;
        idempotency.push((key.value().to_string(), value.value().to_vec()));
    }
    tracing::info!(
        path = %path.display(),
        journal_entries = journal.len(),
        idempotency_keys = idempotency.len(),
        "moving the journal and idempotency keys to the log (format {format} to {FORMAT})"
    );
    log.import(journal, idempotency)?;
    txn.delete_table(JOURNAL).map_err(db_error)?;
    txn.delete_table(IDEMPOTENCY).map_err(db_error)?;
    txn.delete_table(IDEMPOTENCY_EXPIRY).map_err(db_error)?;
    Ok(())
}

/// The entries of one [`LEDGER`] row.
fn ledger_run(bytes: &[u8]) -> Result<Vec<LedgerEntry>> {
    let corrupt = |message: String| StoreError::Corrupt {
        table: "ledger",
        message,
    };
    let mut rest = bytes
        .get(8..)
        .ok_or_else(|| corrupt("a run without its last sequence number".into()))?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (entry, after) = postcard::take_from_bytes::<LedgerEntry>(rest)
            .map_err(|error| corrupt(error.to_string()))?;
        entries.push(entry);
        rest = after;
    }
    Ok(entries)
}

/// Makes each ledger row of formats 2 to 5 (one entry) a run of one, in the transaction that
/// opens the database.
fn migrate_ledger(txn: &redb::WriteTransaction) -> Result<()> {
    let mut table = txn.open_table(LEDGER).map_err(db_error)?;
    let mut runs = Vec::new();
    for row in table.iter().map_err(db_error)? {
        let (key, value) = row.map_err(db_error)?;
        let (account, seq) = key.value();
        let mut run = seq.to_be_bytes().to_vec();
        run.extend_from_slice(value.value());
        runs.push((account.to_string(), seq, run));
    }
    for (account, seq, run) in runs {
        table
            .insert((account.as_str(), seq), run.as_slice())
            .map_err(db_error)?;
    }
    Ok(())
}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(Backend::Embedded, error)
}

fn decode<T: for<'de> Deserialize<'de>>(table: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|error| StoreError::Corrupt {
        table,
        message: error.to_string(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Projection changes encoded on the caller's task, so the single writer thread only copies
/// bytes into B-trees.
struct EncodedBatch {
    orders: Vec<EncodedOrder>,
    trades: Vec<EncodedTrade>,
    /// The trades again, for the candles (folded with the stored ones in the transaction).
    trade_records: Vec<TradeRecord>,
    snapshots: Vec<(String, Vec<u8>)>,
    ledger: Vec<AccountEntries>,
    /// `(account, asset, seq ++ balance)`.
    balances: Vec<(String, String, Vec<u8>)>,
    transfers: Vec<(u64, Vec<u8>)>,
    engine: Option<Vec<u8>>,
}

/// One account's ledger entries of a batch, in order, each encoded alone as `(seq, entry)`: the
/// writer drops those a replay brings back and joins the rest into one [`LEDGER`] row.
struct AccountEntries {
    account: String,
    entries: Vec<(u64, Vec<u8>)>,
}

struct EncodedOrder {
    id: u64,
    seq: u64,
    account: String,
    symbol: String,
    client_order_id: String,
    open: bool,
    /// `seq` (8 bytes, big-endian) then the state as JSON.
    value: Vec<u8>,
}

struct EncodedTrade {
    symbol: String,
    seq: u64,
    ts: u64,
    accounts: [String; 2],
    value: Vec<u8>,
}

impl EncodedBatch {
    /// `batch` encoded, with its engine snapshot's bytes (encoded apart, off the async workers).
    fn new(batch: &ProjectionBatch, engine: Option<Vec<u8>>) -> Result<EncodedBatch> {
        Ok(EncodedBatch {
            orders: batch
                .orders
                .iter()
                .map(|state| {
                    let mut value = state.seq.to_be_bytes().to_vec();
                    value.extend_from_slice(&encode("order", state)?);
                    Ok(EncodedOrder {
                        id: state.order.order_id.0,
                        seq: state.seq,
                        account: state.order.account.to_string(),
                        symbol: state.order.symbol.to_string(),
                        client_order_id: state.order.client_order_id.to_string(),
                        open: state.status.is_open(),
                        value,
                    })
                })
                .collect::<Result<_>>()?,
            trades: batch
                .trades
                .iter()
                .map(|trade| {
                    Ok(EncodedTrade {
                        symbol: trade.symbol.clone(),
                        seq: trade.seq,
                        ts: trade.ts,
                        accounts: [trade.taker_account.clone(), trade.maker_account.clone()],
                        value: encode("trade", trade)?,
                    })
                })
                .collect::<Result<_>>()?,
            trade_records: batch.trades.clone(),
            snapshots: batch
                .snapshots
                .iter()
                .map(|(position, snapshot)| {
                    let stored = StoredSnapshot {
                        position: *position,
                        snapshot: snapshot.clone(),
                    };
                    Ok((snapshot.symbol.to_string(), encode("snapshot", &stored)?))
                })
                .collect::<Result<_>>()?,
            ledger: {
                let mut runs = std::collections::BTreeMap::<&str, Vec<_>>::new();
                for entry in &batch.ledger {
                    let encoded = encode("ledger entry", entry)?;
                    runs.entry(entry.account.as_str())
                        .or_default()
                        .push((entry.seq, encoded));
                }
                runs.into_iter()
                    .map(|(account, entries)| AccountEntries {
                        account: account.to_string(),
                        entries,
                    })
                    .collect()
            },
            // Only the last balance of each account and asset in the batch: the ledger is in
            // order, and every row written costs the single writer a B-tree update.
            balances: batch
                .ledger
                .iter()
                .map(|entry| ((entry.account.as_str(), entry.asset.as_str()), entry))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_values()
                .map(|entry| {
                    let mut value = entry.seq.to_be_bytes().to_vec();
                    value.extend_from_slice(&encode("balance", &entry.balance)?);
                    Ok((entry.account.to_string(), entry.asset.to_string(), value))
                })
                .collect::<Result<_>>()?,
            transfers: batch
                .transfers
                .iter()
                .map(|outcome| Ok((outcome.transfer.transfer_id, encode("transfer", outcome)?)))
                .collect::<Result<_>>()?,
            engine,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredEngine {
    position: Position,
    snapshot: EngineSnapshot,
}

/// [`StoredEngine`] by reference, to encode a snapshot without copying it (same bytes).
#[derive(Serialize)]
struct StoredEngineRef<'a> {
    position: Position,
    snapshot: &'a EngineSnapshot,
}

/// The sequence number a stored value starts with.
fn stored_seq(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    position: Position,
    snapshot: BookSnapshot,
}

/// A reserved key: the request's fingerprint and, once its append committed, the ack that the
/// append stored under the key (so completing with that same ack needs no second write).
struct InFlight {
    fingerprint: String,
    stored: Option<StoredResponse>,
}

fn scoped(origin: &Origin) -> String {
    // The unit separator cannot occur in a principal id (auth::check_id) or a (printable)
    // idempotency key.
    format!("{}\u{1f}{}", origin.principal, origin.key)
}

/// What the projection's writer does.
enum Op {
    Project {
        batch: EncodedBatch,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Stop after committing everything queued before this.
    Close { reply: oneshot::Sender<Result<()>> },
}

impl Op {
    fn durable(&self) -> bool {
        match self {
            Op::Project { batch, .. } => !batch.snapshots.is_empty() || batch.engine.is_some(),
            Op::Close { .. } => false,
        }
    }
}

/// The open orders' client order ids, as in the [`CLIENT_IDS`] table: the projection's writer
/// is the table's only writer and updates this copy after each commit, so the check every order
/// placement makes reads memory. Reading the table took a redb read transaction, which waits
/// while the projection commits (tens of milliseconds on a busy disk), on the request's thread.
///
/// Sharded: a hash table grows by rehashing every key under its write lock, and one table of
/// a few hundred thousand keys held the placements' checks for 41 ms (`docs/benchmarks.md`).
/// Each shard holds a sixteenth of the keys, and its growth stalls only the checks of its keys.
struct ClientIds {
    shards: Vec<std::sync::RwLock<HashMap<ClientKey, u64>>>,
}

const CLIENT_ID_SHARDS: u64 = 16;

impl ClientIds {
    fn new(entries: impl IntoIterator<Item = (ClientKey, u64)>) -> ClientIds {
        let ids = ClientIds {
            shards: (0..CLIENT_ID_SHARDS).map(|_| Default::default()).collect(),
        };
        ids.apply(entries.into_iter().map(|(key, id)| (key, Some(id))));
        ids
    }

    fn shard(&self, key: &ClientKey) -> &std::sync::RwLock<HashMap<ClientKey, u64>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        &self.shards[(hash % CLIENT_ID_SHARDS) as usize]
    }

    fn get(&self, key: &ClientKey) -> Result<Option<u64>> {
        Ok(self.shard(key).read().map_err(db_error)?.get(key).copied())
    }

    fn apply(&self, changes: impl IntoIterator<Item = ClientChange>) {
        for (key, id) in changes {
            if let Ok(mut shard) = self.shard(&key).write() {
                match id {
                    Some(id) => shard.insert(key, id),
                    None => shard.remove(&key),
                };
            }
        }
    }
}

/// `(account, symbol, client order id)`.
type ClientKey = (String, String, String);

/// A change of [`ClientIds`] a transaction makes: the order id now, or none.
type ClientChange = (ClientKey, Option<u64>);

/// The single-node store. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    /// The projection's writer.
    writer: mpsc::Sender<Op>,
    log: Log,
    log_writer: mpsc::Sender<LogOp>,
    head: watch::Receiver<Position>,
    in_flight: Arc<Mutex<HashMap<String, InFlight>>>,
    client_ids: Arc<ClientIds>,
    ttl: Duration,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    tail: Arc<Mutex<VecDeque<(Position, JournalEntry)>>>,
    /// The cancel-after deadlines, as in the [`DEADLINES`] table: this process is the table's
    /// only writer, so the sweep looks here and touches the database only when one is due (a
    /// read transaction every 250 ms stalled requests during the projection's durable commits).
    /// Held across each change (database, then memory), so changes never interleave.
    deadlines: Arc<tokio::sync::Mutex<HashMap<String, u64>>>,
}

impl Embedded {
    /// The answer stored under a scoped idempotency key. A retry's is in the journal's files,
    /// read off the async workers.
    async fn stored(&self, key: &str) -> Result<Option<log::IdempotencyRecord>> {
        match self.log.lookup(key)? {
            Some(log::Found::InJournal { position, .. }) => {
                let (log, key) = (self.log.clone(), key.to_owned());
                tokio::task::spawn_blocking(move || log.record_at(&key, position))
                    .await
                    .map_err(|error| {
                        StoreError::unavailable(Backend::Embedded, format!("read task: {error}"))
                    })?
                    .map(Some)
            }
            Some(log::Found::Record(record)) => Ok(Some(record)),
            None => Ok(None),
        }
    }

    /// Opens (or creates) the store: the database at `path`, the journal in the directory
    /// `segments` beside it and the idempotency index in `journal`; starts their writer threads.
    /// Idempotency records live for `ttl`. The database keeps at most `cache_bytes` of its
    /// pages in memory (redb's own default, 1 GiB, would let the process grow by that much).
    pub fn open(
        path: &Path,
        ttl: Duration,
        cache_bytes: usize,
        metrics: StoreMetrics,
    ) -> Result<Embedded> {
        let log = Log::open(
            &path.with_file_name("journal"),
            &path.with_file_name("segments"),
        )?;
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        {
            // Create every table up front so readers never meet a missing one.
            txn.open_table(ORDERS).map_err(db_error)?;
            txn.open_table(ACCOUNT_ORDERS).map_err(db_error)?;
            txn.open_table(OPEN_ORDERS).map_err(db_error)?;
            txn.open_table(CLIENT_IDS).map_err(db_error)?;
            txn.open_table(TRADES).map_err(db_error)?;
            txn.open_table(CANDLES).map_err(db_error)?;
            txn.open_table(DEADLINES).map_err(db_error)?;
            txn.open_table(ACCOUNT_TRADES).map_err(db_error)?;
            txn.open_table(SNAPSHOTS).map_err(db_error)?;
            txn.open_table(BALANCES).map_err(db_error)?;
            txn.open_table(LEDGER).map_err(db_error)?;
            txn.open_table(TRANSFERS).map_err(db_error)?;
            txn.open_table(ENGINE).map_err(db_error)?;
            let old_journal = txn
                .list_tables()
                .map_err(db_error)?
                .any(|table| redb::TableHandle::name(&table) == "journal");
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let format = meta.get("format").map_err(db_error)?.map(|v| v.value());
            match format {
                Some(FORMAT) => {}
                None if !old_journal
                    || txn
                        .open_table(JOURNAL)
                        .map_err(db_error)?
                        .is_empty()
                        .map_err(db_error)? =>
                {
                    if old_journal {
                        txn.delete_table(JOURNAL).map_err(db_error)?;
                    }
                    meta.insert("format", FORMAT).map_err(db_error)?;
                }
                Some(found @ (2..=5)) => {
                    if found == 2 {
                        migrate_from_2(&txn, path)?;
                    }
                    if found < 4 {
                        migrate_journal(&txn, &log, path, found)?;
                    }
                    if found < 5 {
                        migrate_engine_snapshot(&txn)?;
                    }
                    migrate_ledger(&txn)?;
                    meta.insert("format", FORMAT).map_err(db_error)?;
                }
                found => {
                    return Err(StoreError::Incompatible(format!(
                        "database {} was written by an older oms-runtime (format {}, this one \
                         writes {FORMAT}: balances and holds); its journal cannot be replayed \
                         under funds. Start with an empty --data-dir.",
                        path.display(),
                        found.unwrap_or(1)
                    )));
                }
            }
        }
        // After the migrations: it reads the orders in today's format.
        backfill_client_orders(&txn)?;
        txn.commit().map_err(db_error)?;
        let head = log.head()?;
        metrics.head.set(head as i64);
        let db = Arc::new(db);
        // The snapshot's position is its first field: read it alone, not the whole engine.
        let snapshot_position = db
            .begin_read()
            .map_err(db_error)?
            .open_table(ENGINE)
            .map_err(db_error)?
            .get(ENGINE_KEY)
            .map_err(db_error)?
            .map(|bytes| {
                postcard::take_from_bytes::<Position>(bytes.value())
                    .map(|(position, _)| position)
                    .map_err(|error| StoreError::Corrupt {
                        table: "engine",
                        message: error.to_string(),
                    })
            })
            .transpose()?;
        if let Some(position) = snapshot_position
            && position > head
        {
            // Appending would reuse positions the snapshot already includes.
            return Err(StoreError::Incompatible(format!(
                "the journal in {} ends at position {head}, before the snapshot in {} (position \
                 {}): the journal directory is missing or from another database",
                path.with_file_name("segments").display(),
                path.display(),
                position
            )));
        }
        let (head_tx, head_rx) = watch::channel(head);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let (log_writer, log_queue) = mpsc::channel(4096 * 4);
        let (writer, queue) = mpsc::channel(MAX_BATCH * 4);
        let client_ids: Arc<ClientIds> = {
            let txn = db.begin_read().map_err(db_error)?;
            let table = txn.open_table(CLIENT_IDS).map_err(db_error)?;
            let mut entries = Vec::new();
            for row in table.iter().map_err(db_error)? {
                let (key, id) = row.map_err(db_error)?;
                let (account, symbol, client) = key.value();
                let key = (account.to_string(), symbol.to_string(), client.to_string());
                entries.push((key, id.value()));
            }
            Arc::new(ClientIds::new(entries))
        };
        let threads = {
            let (log, tail, log_metrics) = (log.clone(), tail.clone(), metrics.clone());
            let journal = std::thread::Builder::new()
                .name("oms-journal-writer".into())
                .spawn(move || log::write_loop(&log, log_queue, head_tx, &tail, ttl, &log_metrics))
                .map_err(db_error)?;
            let (db, client_ids) = (db.clone(), client_ids.clone());
            let projection = std::thread::Builder::new()
                .name("oms-projection-writer".into())
                .spawn(move || {
                    background::yield_the_disk();
                    write_loop(&db, queue, &client_ids, &metrics)
                })
                .map_err(db_error)?;
            vec![journal, projection]
        };
        let deadlines = {
            let txn = db.begin_read().map_err(db_error)?;
            let table = txn.open_table(DEADLINES).map_err(db_error)?;
            let mut deadlines = HashMap::new();
            for row in table.iter().map_err(db_error)? {
                let (account, deadline) = row.map_err(db_error)?;
                deadlines.insert(account.value().to_string(), deadline.value());
            }
            Arc::new(tokio::sync::Mutex::new(deadlines))
        };
        Ok(Embedded {
            deadlines,
            db,
            writer,
            log,
            log_writer,
            head: head_rx,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            client_ids,
            ttl,
            threads: Arc::new(Mutex::new(threads)),
            tail,
        })
    }

    /// The last durable journal position, 0 when the journal is empty.
    pub fn head(&self) -> Position {
        *self.head.borrow()
    }

    /// Writes everything queued so far and stops both writers; later writes fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        let journal = call(&self.log_writer, |reply| LogOp::Close { reply }).await;
        let projection = call(&self.writer, |reply| Op::Close { reply }).await;
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if journal.is_ok() && projection.is_ok() {
            for thread in threads {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
    }

    /// The latest engine snapshot and the journal position it includes.
    pub fn engine_snapshot(&self) -> Result<Option<(Position, EngineSnapshot)>> {
        self.read(|txn| {
            let table = txn.open_table(ENGINE).map_err(db_error)?;
            let Some(bytes) = table.get(ENGINE_KEY).map_err(db_error)? else {
                return Ok(None);
            };
            let stored: StoredEngine = decode("engine", bytes.value())?;
            Ok(Some((stored.position, stored.snapshot)))
        })
    }

    /// The highest order or transfer id among the last journaled commands (both come from one
    /// generator): a floor for new ids, so a clock that stepped back across a restart cannot
    /// reuse one.
    pub fn last_id(&self) -> Result<Option<OrderId>> {
        let mut highest = None;
        for entry in self.log.newest(1024)? {
            let id = match entry.command.action {
                oms_core::Action::New(order) => order.order_id,
                oms_core::Action::Deposit(t) | oms_core::Action::Withdraw(t) => {
                    OrderId(t.transfer_id)
                }
                oms_core::Action::Cancel(_)
                | oms_core::Action::Amend(_)
                | oms_core::Action::CancelAll(_) => continue,
            };
            highest = highest.max(Some(id));
        }
        Ok(highest)
    }

    /// How long idempotency records live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Removes expired idempotency records; returns how many.
    pub async fn sweep(&self) -> Result<usize> {
        call(&self.log_writer, |reply| LogOp::Sweep {
            now_ms: now_ms(),
            reply,
        })
        .await
    }

    /// A read on the calling thread: for start-up (restoring the engine and the books).
    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().map_err(db_error)?;
        f(&txn)
    }

    /// A read on the blocking pool, so that a scan (or a slow disk) never stalls the async
    /// workers that serve requests.
    /// A durable write transaction off the async threads (waits for the projection's writer
    /// to finish its transaction: milliseconds).
    async fn write_off<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(db_error)?;
            let value = f(&txn)?;
            txn.commit().map_err(db_error)?;
            Ok(value)
        })
        .await
        .map_err(|error| {
            StoreError::unavailable(Backend::Embedded, format!("write task: {error}"))
        })?
    }

    async fn read_off<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(db_error)?;
            f(&txn)
        })
        .await
        .map_err(|error| {
            StoreError::unavailable(Backend::Embedded, format!("read task: {error}"))
        })?
    }
}

/// Sends an operation to a writer and waits for its answer.
async fn call<Op, T>(
    writer: &mpsc::Sender<Op>,
    op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op,
) -> Result<T> {
    let (reply, answer) = oneshot::channel();
    writer
        .send(op(reply))
        .await
        .map_err(|_| StoreError::Closed)?;
    answer.await.map_err(|_| StoreError::Closed)?
}

/// The embedded journal is one partition.
fn local(position: Position) -> LogPosition {
    LogPosition {
        partition: 0,
        offset: position,
    }
}

#[async_trait]
impl Journal for Embedded {
    async fn append(&self, entry: JournalEntry) -> Result<LogPosition> {
        let positions = self.append_batch(vec![entry]).await?;
        positions.into_iter().next().ok_or(StoreError::Closed)
    }

    async fn append_batch(&self, entries: Vec<JournalEntry>) -> Result<Vec<LogPosition>> {
        let mut items = Vec::with_capacity(entries.len());
        for entry in entries {
            items.push(log::Appending {
                key: scoped(&entry.origin),
                ack: Ack::new(&entry, local(0)),
                fingerprint: entry.origin.fingerprint.clone(),
                bytes: encode("journal entry", &entry)?,
                entry: Some(Box::new(entry)),
            });
        }
        let acks: Vec<(String, Ack)> = items
            .iter()
            .map(|item| (item.key.clone(), item.ack.clone()))
            .collect();
        let positions = call(&self.log_writer, |reply| LogOp::Append { items, reply }).await?;
        let positions: Vec<LogPosition> = positions.into_iter().map(local).collect();
        let mut in_flight = self.in_flight.lock().map_err(db_error)?;
        for ((key, ack), position) in acks.into_iter().zip(&positions) {
            if let Some(in_flight) = in_flight.get_mut(&key) {
                in_flight.stored = Some(
                    Ack {
                        position: *position,
                        ..ack
                    }
                    .response()?,
                );
            }
        }
        Ok(positions)
    }

    async fn ping(&self) -> Result<()> {
        if self.log_writer.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }
}

#[async_trait]
impl JournalReader for Embedded {
    async fn read(&self, from: Position, max: usize) -> Result<Vec<(Position, JournalEntry)>> {
        let mut head = self.head.clone();
        head.wait_for(|head| *head >= from)
            .await
            .map_err(|_| StoreError::Closed)?;
        {
            let tail = self.tail.lock().map_err(db_error)?;
            if let Some(&(first, _)) = tail.front()
                && first <= from
            {
                let skip = (from - first) as usize;
                return Ok(tail.iter().skip(skip).take(max).cloned().collect());
            }
        }
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.read(from, max))
            .await
            .map_err(|error| {
                StoreError::unavailable(Backend::Embedded, format!("read task: {error}"))
            })?
    }
}

#[async_trait]
impl super::IdempotencyStore for Embedded {
    async fn reserve(&self, origin: &Origin) -> Result<Reservation> {
        let key = scoped(origin);
        // Check-and-reserve is atomic within the process (in single-node mode, every process
        // there is): the key is reserved before the lookup, so a second request with it finds
        // the reservation. The lock is not held across the lookup: a read of the log can wait
        // on its background work for tens of milliseconds, and every request takes this lock.
        {
            let mut in_flight = self.in_flight.lock().map_err(db_error)?;
            if let Some(reserved) = in_flight.get(&key) {
                return Ok(if reserved.fingerprint == origin.fingerprint {
                    Reservation::InFlight
                } else {
                    Reservation::Mismatch
                });
            }
            in_flight.insert(
                key.clone(),
                InFlight {
                    fingerprint: origin.fingerprint.clone(),
                    stored: None,
                },
            );
        }
        let answer = match self.stored(&key).await {
            Ok(Some(record)) if record.expires_ms > now_ms() => {
                Ok(if record.fingerprint == origin.fingerprint {
                    Reservation::Completed(record.response)
                } else {
                    Reservation::Mismatch
                })
            }
            Ok(_) => return Ok(Reservation::Reserved),
            Err(error) => Err(error),
        };
        // Answered from the log, or not at all: the reservation was only for the lookup.
        self.in_flight.lock().map_err(db_error)?.remove(&key);
        answer
    }

    async fn complete(&self, origin: &Origin, response: &StoredResponse) -> Result<()> {
        let key = scoped(origin);
        let already = {
            let in_flight = self.in_flight.lock().map_err(db_error)?;
            in_flight
                .get(&key)
                .is_some_and(|reserved| reserved.stored.as_ref() == Some(response))
        };
        if already {
            self.in_flight.lock().map_err(db_error)?.remove(&key);
            return Ok(());
        }
        let result = call(&self.log_writer, |reply| LogOp::Complete {
            key: key.clone(),
            fingerprint: origin.fingerprint.clone(),
            response: response.clone(),
            reply,
        })
        .await;
        self.in_flight
            .lock()
            .map_err(db_error)?
            .remove(&scoped(origin));
        result
    }

    async fn release(&self, origin: &Origin) -> Result<()> {
        self.in_flight
            .lock()
            .map_err(db_error)?
            .remove(&scoped(origin));
        Ok(())
    }
}

/// Written through to the [`DEADLINES`] table (durable before the answer), read from memory.
#[async_trait]
impl super::Deadlines for Embedded {
    async fn set_deadline(&self, account: &str, deadline_ms: Option<u64>) -> Result<()> {
        let mut deadlines = self.deadlines.lock().await;
        let owned = account.to_string();
        self.write_off(move |txn| {
            let mut table = txn.open_table(DEADLINES).map_err(db_error)?;
            match deadline_ms {
                Some(deadline) => table.insert(owned.as_str(), deadline).map(drop),
                None => table.remove(owned.as_str()).map(drop),
            }
            .map_err(db_error)
        })
        .await?;
        match deadline_ms {
            Some(deadline) => deadlines.insert(account.to_string(), deadline),
            None => deadlines.remove(account),
        };
        Ok(())
    }

    async fn deadline(&self, account: &str) -> Result<Option<u64>> {
        Ok(self.deadlines.lock().await.get(account).copied())
    }

    async fn claim_due(
        &self,
        now_ms: u64,
        claimed_until_ms: u64,
        max: usize,
    ) -> Result<Vec<(String, u64)>> {
        let mut deadlines = self.deadlines.lock().await;
        let due: Vec<(String, u64)> = deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now_ms)
            .take(max)
            .map(|(account, deadline)| (account.clone(), *deadline))
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let claimed = due.clone();
        self.write_off(move |txn| {
            let mut table = txn.open_table(DEADLINES).map_err(db_error)?;
            for (account, _) in &claimed {
                table
                    .insert(account.as_str(), claimed_until_ms)
                    .map_err(db_error)?;
            }
            Ok(())
        })
        .await?;
        for (account, _) in &due {
            deadlines.insert(account.clone(), claimed_until_ms);
        }
        Ok(due)
    }

    async fn finish(&self, account: &str, claimed_until_ms: u64) -> Result<()> {
        let mut deadlines = self.deadlines.lock().await;
        if deadlines.get(account) != Some(&claimed_until_ms) {
            return Ok(());
        }
        let owned = account.to_string();
        self.write_off(move |txn| {
            txn.open_table(DEADLINES)
                .map_err(db_error)?
                .remove(owned.as_str())
                .map_err(db_error)?;
            Ok(())
        })
        .await?;
        deadlines.remove(account);
        Ok(())
    }
}

#[async_trait]
impl OrderStore for Embedded {
    async fn apply(&self, batch: &ProjectionBatch) -> Result<()> {
        let engine = match batch.engine.clone() {
            // An engine snapshot holds every resting order: encoding it takes tens of
            // milliseconds, which would hold up the requests sharing this async worker.
            Some((position, snapshot)) => Some(
                tokio::task::spawn_blocking(move || {
                    let stored = StoredEngineRef {
                        position,
                        snapshot: &snapshot,
                    };
                    encode("engine snapshot", &stored)
                })
                .await
                .map_err(|error| {
                    StoreError::unavailable(Backend::Embedded, format!("encode task: {error}"))
                })??,
            ),
            None => None,
        };
        let encoded = EncodedBatch::new(batch, engine)?;
        call(&self.writer, |reply| Op::Project {
            batch: encoded,
            reply,
        })
        .await
    }

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderState>> {
        self.read_off(move |txn| get_order(&txn.open_table(ORDERS).map_err(db_error)?, order_id))
            .await
    }

    async fn orders(&self, query: &OrderQuery) -> Result<OrderPage> {
        let query = query.clone();
        self.read_off(move |txn| {
            let index = txn
                .open_table(if query.open_only {
                    OPEN_ORDERS
                } else {
                    ACCOUNT_ORDERS
                })
                .map_err(db_error)?;
            let orders = txn.open_table(ORDERS).map_err(db_error)?;
            let account = query.account.as_str();
            let end = query.before.map_or(u64::MAX, |id| id.0);
            let mut page = Vec::new();
            let mut next = None;
            for row in index
                .range((account, 0)..(account, end))
                .map_err(db_error)?
                .rev()
            {
                let (key, _) = row.map_err(db_error)?;
                let order_id = OrderId(key.value().1);
                let Some(order) = get_order(&orders, order_id)? else {
                    continue;
                };
                let wanted = query
                    .symbol
                    .as_deref()
                    .is_none_or(|s| order.order.symbol == s)
                    && query.status.is_none_or(|status| order.status == status);
                if !wanted {
                    continue;
                }
                if page.len() == query.limit {
                    next = page.last().map(|o: &OrderState| o.order.order_id);
                    break;
                }
                page.push(order);
            }
            Ok(OrderPage { orders: page, next })
        })
        .await
    }

    async fn trades(
        &self,
        account: &str,
        symbol: Option<&str>,
        before: Option<&TradeCursor>,
        limit: usize,
    ) -> Result<Vec<TradeRecord>> {
        let (account, symbol) = (account.to_string(), symbol.map(str::to_string));
        let before = before.cloned();
        self.read_off(move |txn| {
            let (account, symbol) = (account.as_str(), symbol.as_deref());
            let index = txn.open_table(ACCOUNT_TRADES).map_err(db_error)?;
            let trades = txn.open_table(TRADES).map_err(db_error)?;
            let mut out = Vec::new();
            let start = (account, 0, "", 0);
            let range = match &before {
                Some(cursor) => {
                    index.range(start..(account, cursor.ts, cursor.symbol.as_str(), cursor.seq))
                }
                None => index.range(start..=(account, u64::MAX, "\u{10ffff}", u64::MAX)),
            }
            .map_err(db_error)?;
            for row in range.rev() {
                let (key, _) = row.map_err(db_error)?;
                let (_, _, trade_symbol, seq) = key.value();
                if symbol.is_some_and(|s| s != trade_symbol) {
                    continue;
                }
                if let Some(bytes) = trades.get((trade_symbol, seq)).map_err(db_error)? {
                    out.push(decode("trades", bytes.value())?);
                }
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn market_trades(&self, symbol: &str, limit: usize) -> Result<Vec<TradeRecord>> {
        let symbol = symbol.to_string();
        self.read_off(move |txn| {
            let trades = txn.open_table(TRADES).map_err(db_error)?;
            let range = trades
                .range((symbol.as_str(), 0)..=(symbol.as_str(), u64::MAX))
                .map_err(db_error)?;
            let mut out = Vec::new();
            for row in range.rev().take(limit) {
                let (_, bytes) = row.map_err(db_error)?;
                out.push(decode("trades", bytes.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn candles(&self, symbol: &str, from: u64, limit: usize) -> Result<Vec<Candle>> {
        let symbol = symbol.to_string();
        self.read_off(move |txn| {
            let candles = txn.open_table(CANDLES).map_err(db_error)?;
            let range = candles
                .range((symbol.as_str(), from)..=(symbol.as_str(), u64::MAX))
                .map_err(db_error)?;
            let mut out = Vec::new();
            for row in range.take(limit) {
                let (_, bytes) = row.map_err(db_error)?;
                out.push(decode("candles", bytes.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn open_by_client_id(
        &self,
        account: &str,
        symbol: &str,
        client_order_id: &str,
    ) -> Result<Option<OrderId>> {
        let key = (
            account.to_string(),
            symbol.to_string(),
            client_order_id.to_string(),
        );
        Ok(self.client_ids.get(&key)?.map(OrderId))
    }

    async fn by_client_id(
        &self,
        account: &str,
        client_order_id: &str,
        symbol: Option<&str>,
    ) -> Result<Option<OrderState>> {
        let (account, client_order_id) = (account.to_string(), client_order_id.to_string());
        let symbol = symbol.map(str::to_string);
        self.read_off(move |txn| {
            let index = txn.open_table(CLIENT_ORDERS).map_err(db_error)?;
            let orders = txn.open_table(ORDERS).map_err(db_error)?;
            let (account, client) = (account.as_str(), client_order_id.as_str());
            for row in index
                .range((account, client, 0)..=(account, client, u64::MAX))
                .map_err(db_error)?
                .rev()
            {
                let (key, _) = row.map_err(db_error)?;
                let Some(state) = get_order(&orders, OrderId(key.value().2))? else {
                    continue;
                };
                if symbol.as_deref().is_none_or(|s| state.order.symbol == s) {
                    return Ok(Some(state));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn snapshots(&self) -> Result<Vec<(Position, BookSnapshot)>> {
        self.read(|txn| {
            let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(db_error)? {
                let (_, bytes) = row.map_err(db_error)?;
                let stored: StoredSnapshot = decode("snapshots", bytes.value())?;
                out.push((stored.position, stored.snapshot));
            }
            Ok(out)
        })
    }

    async fn ping(&self) -> Result<()> {
        if self.writer.is_closed() {
            return Err(StoreError::Closed);
        }
        self.read_off(|txn| {
            txn.open_table(ORDERS)
                .map_err(db_error)?
                .len()
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl FundsStore for Embedded {
    async fn balances(&self, account: &str) -> Result<Vec<(String, Balance)>> {
        let account = account.to_string();
        self.read_off(move |txn| {
            let table = txn.open_table(BALANCES).map_err(db_error)?;
            let mut out = Vec::new();
            let range = table
                .range((account.as_str(), "")..=(account.as_str(), "\u{10ffff}"))
                .map_err(db_error)?;
            for row in range {
                let (key, value) = row.map_err(db_error)?;
                let balance: Balance =
                    decode("balances", value.value().get(8..).unwrap_or_default())?;
                out.push((key.value().1.to_string(), balance));
            }
            Ok(out)
        })
        .await
    }

    async fn ledger(&self, query: &LedgerQuery) -> Result<LedgerPage> {
        let query = query.clone();
        self.read_off(move |txn| {
            let table = txn.open_table(LEDGER).map_err(db_error)?;
            let account = query.account.as_str();
            let end = query.before.unwrap_or(u64::MAX);
            let mut entries: Vec<LedgerEntry> = Vec::new();
            for row in table
                .range((account, 0)..(account, end))
                .map_err(db_error)?
                .rev()
            {
                let (_, value) = row.map_err(db_error)?;
                let run = ledger_run(value.value())?;
                let wanted = run.into_iter().rev().filter(|entry| {
                    entry.seq < end
                        && query
                            .asset
                            .as_deref()
                            .is_none_or(|asset| entry.asset == asset)
                });
                // One more than the page, to know whether there is a next one.
                entries.extend(wanted.take(query.limit + 1 - entries.len()));
                if entries.len() > query.limit {
                    entries.truncate(query.limit);
                    let next = entries.last().map(|entry| entry.seq);
                    return Ok(LedgerPage { entries, next });
                }
            }
            Ok(LedgerPage {
                entries,
                next: None,
            })
        })
        .await
    }

    async fn transfer(&self, transfer_id: u64) -> Result<Option<TransferOutcome>> {
        self.read_off(move |txn| {
            let table = txn.open_table(TRANSFERS).map_err(db_error)?;
            table
                .get(transfer_id)
                .map_err(db_error)?
                .map(|bytes| decode("transfers", bytes.value()))
                .transpose()
        })
        .await
    }
}

/// Fills the client order id index of a database from before it (it is created empty beside
/// the orders it should cover).
fn backfill_client_orders(txn: &redb::WriteTransaction) -> Result<()> {
    let orders = txn.open_table(ORDERS).map_err(db_error)?;
    let mut index = txn.open_table(CLIENT_ORDERS).map_err(db_error)?;
    if !index.is_empty().map_err(db_error)? {
        return Ok(());
    }
    for row in orders.iter().map_err(db_error)? {
        let (id, bytes) = row.map_err(db_error)?;
        let state: OrderState = decode("orders", bytes.value().get(8..).unwrap_or_default())?;
        let order = &state.order;
        index
            .insert(
                (
                    order.account.as_str(),
                    order.client_order_id.as_str(),
                    id.value(),
                ),
                (),
            )
            .map_err(db_error)?;
    }
    Ok(())
}

fn get_order(
    table: &impl ReadableTable<u64, &'static [u8]>,
    order_id: OrderId,
) -> Result<Option<OrderState>> {
    table
        .get(order_id.0)
        .map_err(db_error)?
        .map(|bytes| decode("orders", bytes.value().get(8..).unwrap_or_default()))
        .transpose()
}

/// `first` and whatever else is waiting (`waiting` gives it, without blocking), up to `max`
/// operations and never past one that closes: what a writer thread commits together (group
/// commit).
fn gather<T>(
    first: T,
    max: usize,
    closes: impl Fn(&T) -> bool,
    mut waiting: impl FnMut() -> Option<T>,
) -> Vec<T> {
    let mut ops = vec![first];
    while ops.len() < max && !ops.last().is_some_and(&closes) {
        match waiting() {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    ops
}

/// The projection's writer thread: takes every batch waiting, commits them in one transaction.
fn write_loop(
    db: &Database,
    mut queue: mpsc::Receiver<Op>,
    client_ids: &ClientIds,
    metrics: &StoreMetrics,
) {
    let mut closing = false;
    let mut last_durable = std::time::Instant::now();
    while !closing && let Some(first) = queue.blocking_recv() {
        let ops = gather(
            first,
            MAX_BATCH,
            |op| matches!(op, Op::Close { .. }),
            || queue.try_recv().ok(),
        );
        closing = matches!(ops.last(), Some(Op::Close { .. }));
        let durable =
            closing || last_durable.elapsed() >= DURABLE_EVERY || ops.iter().any(Op::durable);
        let started = std::time::Instant::now();
        let written = write_batch(db, &ops, durable);
        metrics
            .projection_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if durable && written.is_ok() {
            last_durable = started;
        }
        match &written {
            Ok(changes) => client_ids.apply(changes.iter().cloned()),
            Err(error) => {
                tracing::error!(%error, operations = ops.len(), "projection write failed");
            }
        }
        for op in ops {
            let result = written.as_ref().map(drop).map_err(db_error);
            let (Op::Project { reply, .. } | Op::Close { reply }) = op;
            let _ = reply.send(result);
        }
    }
}

/// Every table, opened once per write transaction.
struct Tables<'txn> {
    orders: redb::Table<'txn, u64, &'static [u8]>,
    account_orders: redb::Table<'txn, (&'static str, u64), ()>,
    open_orders: redb::Table<'txn, (&'static str, u64), ()>,
    client_ids: redb::Table<'txn, (&'static str, &'static str, &'static str), u64>,
    client_orders: redb::Table<'txn, (&'static str, &'static str, u64), ()>,
    trades: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    candles: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    account_trades: redb::Table<'txn, (&'static str, u64, &'static str, u64), ()>,
    snapshots: redb::Table<'txn, &'static str, &'static [u8]>,
    balances: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    ledger: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    transfers: redb::Table<'txn, u64, &'static [u8]>,
    engine: redb::Table<'txn, &'static str, &'static [u8]>,
    /// What the transaction did to [`CLIENT_IDS`], for the copy in memory once it commits.
    client_changes: Vec<ClientChange>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Tables<'txn>, redb::Error> {
        Ok(Tables {
            orders: txn.open_table(ORDERS)?,
            account_orders: txn.open_table(ACCOUNT_ORDERS)?,
            open_orders: txn.open_table(OPEN_ORDERS)?,
            client_ids: txn.open_table(CLIENT_IDS)?,
            client_orders: txn.open_table(CLIENT_ORDERS)?,
            trades: txn.open_table(TRADES)?,
            candles: txn.open_table(CANDLES)?,
            account_trades: txn.open_table(ACCOUNT_TRADES)?,
            snapshots: txn.open_table(SNAPSHOTS)?,
            balances: txn.open_table(BALANCES)?,
            ledger: txn.open_table(LEDGER)?,
            transfers: txn.open_table(TRANSFERS)?,
            engine: txn.open_table(ENGINE)?,
            client_changes: Vec::new(),
        })
    }

    fn project(&mut self, batch: &EncodedBatch) -> Result<(), redb::Error> {
        for order in &batch.orders {
            // Idempotent: an event replayed after a restart never moves an order backwards.
            let stored = self
                .orders
                .get(order.id)?
                .and_then(|v| stored_seq(v.value()));
            if stored.is_some_and(|seq| seq >= order.seq) {
                continue;
            }
            let (id, account) = (order.id, order.account.as_str());
            let client_id = (
                account,
                order.symbol.as_str(),
                order.client_order_id.as_str(),
            );
            self.orders.insert(id, order.value.as_slice())?;
            if stored.is_none() {
                self.account_orders.insert((account, id), ())?;
                self.client_orders
                    .insert((account, order.client_order_id.as_str(), id), ())?;
            }
            let owned = || {
                (
                    account.to_string(),
                    order.symbol.clone(),
                    order.client_order_id.clone(),
                )
            };
            if order.open {
                self.open_orders.insert((account, id), ())?;
                self.client_ids.insert(client_id, id)?;
                self.client_changes.push((owned(), Some(id)));
            } else if stored.is_some() {
                // An order that opens and closes within one batch was never in these tables.
                self.open_orders.remove((account, id))?;
                let owner = self.client_ids.get(client_id)?.map(|v| v.value());
                if owner == Some(id) {
                    self.client_ids.remove(client_id)?;
                    self.client_changes.push((owned(), None));
                }
            }
        }
        for trade in &batch.trades {
            let symbol = trade.symbol.as_str();
            self.trades
                .insert((symbol, trade.seq), trade.value.as_slice())?;
            for account in &trade.accounts {
                self.account_trades
                    .insert((account.as_str(), trade.ts, symbol, trade.seq), ())?;
            }
        }
        let corrupt = |error: StoreError| redb::Error::Corrupted(error.to_string());
        let candles = super::fold_candles(&batch.trade_records, |symbol, minute| {
            let stored = self.candles.get((symbol, minute)).map_err(db_error)?;
            stored
                .map(|bytes| decode::<Candle>("candles", bytes.value()))
                .transpose()
        })
        .map_err(corrupt)?;
        for candle in &candles {
            let value = encode("candle", candle).map_err(corrupt)?;
            self.candles
                .insert((candle.symbol.as_str(), candle.minute), value.as_slice())?;
        }
        for (symbol, value) in &batch.snapshots {
            self.snapshots.insert(symbol.as_str(), value.as_slice())?;
        }
        for AccountEntries { account, entries } in &batch.ledger {
            let account = account.as_str();
            // A replay after a restart brings back entries the table may have already.
            let stored = match self
                .ledger
                .range((account, 0)..=(account, u64::MAX))?
                .next_back()
            {
                Some(row) => stored_seq(row?.1.value()),
                None => None,
            };
            let fresh = match stored {
                Some(stored) => &entries[entries.partition_point(|(seq, _)| *seq <= stored)..],
                None => entries.as_slice(),
            };
            let (Some((first, _)), Some((last, _))) = (fresh.first(), fresh.last()) else {
                continue;
            };
            let mut run = last.to_be_bytes().to_vec();
            for (_, entry) in fresh {
                run.extend_from_slice(entry);
            }
            self.ledger.insert((account, *first), run.as_slice())?;
        }
        for (account, asset, value) in &batch.balances {
            let key = (account.as_str(), asset.as_str());
            // A replayed entry never moves a balance back.
            let stored = self.balances.get(key)?.and_then(|v| stored_seq(v.value()));
            if stored >= stored_seq(value) {
                continue;
            }
            self.balances.insert(key, value.as_slice())?;
        }
        for (transfer_id, value) in &batch.transfers {
            self.transfers.insert(*transfer_id, value.as_slice())?;
        }
        if let Some(engine) = &batch.engine {
            self.engine.insert(ENGINE_KEY, engine.as_slice())?;
        }
        Ok(())
    }
}

/// Applies `ops` in one transaction; gives what it did to the open client ids.
fn write_batch(db: &Database, ops: &[Op], durable: bool) -> Result<Vec<ClientChange>, redb::Error> {
    let mut txn = db.begin_write()?;
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(|error| redb::Error::Corrupted(error.to_string()))?;
    let changes = {
        let mut tables = Tables::open(&txn)?;
        for op in ops {
            if let Op::Project { batch, .. } = op {
                tables.project(batch)?;
            }
        }
        tables.client_changes
    };
    txn.commit()?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates the database at `path` with what `fill` writes, as an older build left it.
    fn write_database(path: &Path, fill: impl FnOnce(&redb::WriteTransaction)) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        fill(&txn);
        txn.commit().unwrap();
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A resting limit buy of alice on BTC-USDT.
    fn limit_buy(order_id: u64, client_order_id: &str) -> oms_core::NewOrder {
        oms_core::NewOrder {
            order_id: OrderId(order_id),
            client_order_id: client_order_id.into(),
            account: "alice".into(),
            symbol: "BTC-USDT".into(),
            side: oms_core::Side::Buy,
            order_type: oms_core::OrderType::Limit,
            time_in_force: oms_core::TimeInForce::Gtc,
            price: Some(oms_core::Price(100)),
            quantity: oms_core::Quantity(5),
            post_only: false,
            self_trade_prevention: oms_core::SelfTradePrevention::None,
            quote_quantity: None,
        }
    }

    fn open(path: &Path) -> Result<Embedded> {
        open_with_cache(path, 16 << 20)
    }

    fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Embedded> {
        Embedded::open(
            path,
            Duration::from_secs(60),
            cache_bytes,
            crate::metrics::Metrics::new().store.clone(),
        )
    }

    /// The projection's pages in memory stay within the configured cache: writing and reading
    /// back several times its size evicts, instead of growing towards redb's default of 1 GiB.
    #[test]
    fn the_page_cache_stays_within_its_size() {
        use oms_core::{Event, EventRecord, Timestamp};
        const CACHE: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime();
        let _guard = runtime.enter();
        let store = open_with_cache(&dir.path().join("oms.redb"), CACHE).unwrap();
        let orders = 1..=20_000;
        for chunk in orders.clone().collect::<Vec<_>>().chunks(1_000) {
            let batch = ProjectionBatch {
                orders: chunk
                    .iter()
                    .map(|&id| {
                        let order = limit_buy(id, &format!("client-{id}"));
                        let record = EventRecord {
                            seq: id,
                            ts: Timestamp(id),
                            symbol: "BTC-USDT".into(),
                            event: Event::Accepted { order },
                        };
                        OrderState::open(&record).unwrap()
                    })
                    .collect(),
                ..ProjectionBatch::default()
            };
            runtime.block_on(store.apply(&batch)).unwrap();
        }
        for id in orders {
            let found = runtime.block_on(store.order(OrderId(id))).unwrap();
            assert!(found.is_some(), "order {id} was projected");
        }
        let stats = store.db.cache_stats();
        assert!(stats.evictions() > 0, "nothing was evicted: {stats:?}");
        assert!(
            stats.used_bytes() <= CACHE,
            "{} bytes cached, over {CACHE}",
            stats.used_bytes()
        );
        runtime.block_on(store.close());
    }

    /// A journal written before funds existed cannot be replayed under them: refused, with a
    /// message that says what to do, and the file left as it was.
    #[test]
    fn a_database_from_before_funds_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        write_database(&path, |txn| {
            txn.open_table(JOURNAL)
                .unwrap()
                .insert(1, b"an old entry".as_slice())
                .unwrap();
        });
        let runtime = runtime();
        let _guard = runtime.enter();
        let refused = open(&path);
        let Err(StoreError::Incompatible(message)) = refused else {
            panic!("an old database was opened");
        };
        assert!(message.contains("empty --data-dir"), "{message}");
        // a new database is marked, and opens again
        let fresh = dir.path().join("new.redb");
        let store = open(&fresh);
        assert!(store.is_ok());
    }

    /// A database of format 2 (orders without quote budgets) is migrated at start: its journal
    /// replays and its orders read as before, and it opens again as today's format.
    #[test]
    fn a_format_2_database_is_migrated() {
        use oms_core::{Action, Command, Timestamp};
        let order = limit_buy(7, "c7");
        // Format 2 wrote the same bytes but the `None` that ends today's order.
        let order_end = postcard::to_allocvec(&order).unwrap().len() - 1;
        let entry = JournalEntry {
            command: Command {
                ts: Timestamp(1),
                action: Action::New(order.clone()),
            },
            origin: Origin {
                principal: "desk".into(),
                key: "k".into(),
                fingerprint: "f".into(),
            },
        };
        let mut entry_v2 = postcard::to_allocvec(&entry).unwrap();
        // ts (1 byte), the variant (1 byte), then the order.
        entry_v2.remove(2 + order_end);
        let state = OrderState::open(&oms_core::EventRecord {
            seq: 1,
            ts: Timestamp(1),
            symbol: "BTC-USDT".into(),
            event: oms_core::Event::Accepted {
                order: order.clone(),
            },
        })
        .unwrap();
        let mut state_v2 = 1u64.to_be_bytes().to_vec();
        let mut encoded = postcard::to_allocvec(&state).unwrap();
        encoded.remove(order_end);
        state_v2.extend(encoded);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        write_database(&path, |txn| {
            txn.open_table(JOURNAL)
                .unwrap()
                .insert(1, entry_v2.as_slice())
                .unwrap();
            txn.open_table(ORDERS)
                .unwrap()
                .insert(7, state_v2.as_slice())
                .unwrap();
            txn.open_table(META).unwrap().insert("format", 2).unwrap();
        });
        let runtime = runtime();
        for _ in 0..2 {
            let _guard = runtime.enter();
            let store = open(&path).unwrap();
            let read = runtime
                .block_on(JournalReader::read(&store, 1, 10))
                .unwrap();
            assert_eq!(read, vec![(1, entry.clone())]);
            let found = runtime
                .block_on(OrderStore::order(&store, OrderId(7)))
                .unwrap();
            assert_eq!(found, Some(state.clone()));
            // the client order id index, newer than the database, was filled at the opening
            let by_client_id = runtime.block_on(OrderStore::by_client_id(
                &store,
                &state.order.account,
                &state.order.client_order_id,
                None,
            ));
            assert_eq!(by_client_id.unwrap(), Some(state.clone()));
            let txn = store.db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
            drop((meta, txn));
            runtime.block_on(store.close());
        }
    }

    /// The client order ids of open orders are answered from memory: what each commit did to
    /// the table is there at once, and a reopened store finds them in the table.
    #[test]
    fn open_client_ids_follow_commits_and_a_reopening() {
        use oms_core::{Event, EventRecord, Quantity, Timestamp};
        let order = limit_buy(9, "mine");
        let record = |seq, event| EventRecord {
            seq,
            ts: Timestamp(seq),
            symbol: "BTC-USDT".into(),
            event,
        };
        let open_state = OrderState::open(&record(1, Event::Accepted { order })).unwrap();
        let mut canceled = open_state.clone();
        canceled.apply(&record(
            2,
            Event::Canceled {
                order_id: OrderId(9),
                account: "alice".into(),
                quantity: Quantity(5),
            },
        ));
        let project = |state: &OrderState| ProjectionBatch {
            orders: vec![state.clone()],
            ..ProjectionBatch::default()
        };

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        let runtime = runtime();
        let _guard = runtime.enter();
        let find = |store: &Embedded| {
            runtime
                .block_on(store.open_by_client_id("alice", "BTC-USDT", "mine"))
                .unwrap()
        };
        let store = open(&path).unwrap();
        assert_eq!(find(&store), None);
        runtime
            .block_on(store.apply(&project(&open_state)))
            .unwrap();
        assert_eq!(find(&store), Some(OrderId(9)));
        let other = runtime.block_on(store.open_by_client_id("alice", "ETH-USDT", "mine"));
        assert_eq!(other.unwrap(), None, "another instrument's order");
        runtime.block_on(store.close());
        drop(store);

        let store = open(&path).unwrap();
        assert_eq!(find(&store), Some(OrderId(9)), "read back from the table");
        runtime.block_on(store.apply(&project(&canceled))).unwrap();
        assert_eq!(find(&store), None);
        runtime.block_on(store.close());
        drop(store);
        let store = open(&path).unwrap();
        assert_eq!(find(&store), None);
        runtime.block_on(store.close());
    }

    /// A database of format 4 keeps its engine snapshot across the upgrade: the order holds are
    /// rewritten with no amendment on its way (single-node mode has none between commands).
    #[test]
    fn a_format_4_engine_snapshot_is_migrated() {
        use oms_core::{Action, Command, NewOrder, OrderType, Quantity, Side, Timestamp};
        let instruments: Vec<_> = crate::default_instruments()
            .into_iter()
            .map(|spec| oms_core::Instrument::new(spec).unwrap())
            .collect();
        let mut engine =
            oms_core::Engine::new(&instruments, &oms_core::RiskLimits::default()).unwrap();
        let mut out = oms_core::Output::default();
        let deposit = oms_core::Transfer {
            transfer_id: 1,
            account: "alice".into(),
            asset: "USDT".into(),
            amount: 1_000_000_000_000,
        };
        engine.deposit(Timestamp(1), &deposit, &mut out).unwrap();
        let order = NewOrder {
            order_id: OrderId(7),
            client_order_id: "c7".into(),
            account: "alice".into(),
            symbol: "BTC-USDT".into(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: oms_core::TimeInForce::Gtc,
            price: Some(oms_core::Price(1_000_000)),
            quantity: Quantity(100),
            post_only: false,
            self_trade_prevention: oms_core::SelfTradePrevention::None,
            quote_quantity: None,
        };
        let command = Command {
            ts: Timestamp(2),
            action: Action::New(order),
        };
        engine.apply(&command, &mut out);
        let snapshot = engine.snapshot();
        assert_eq!(snapshot.funds.orders.len(), 1, "the order rests and holds");
        // Format 4's layout: postcard writes structs as tuples, and a hold ended at `held`.
        let holds: Vec<_> = snapshot
            .funds
            .orders
            .iter()
            .map(|h| {
                (
                    h.order_id, &h.account, &h.symbol, h.side, h.price, h.quantity, h.leaves,
                    h.held,
                )
            })
            .collect();
        let funds = (snapshot.funds.seq, &snapshot.funds.balances, holds);
        let stored_v4 = postcard::to_allocvec(&(0u64, (funds, &snapshot.books))).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        write_database(&path, |txn| {
            txn.open_table(ENGINE)
                .unwrap()
                .insert(ENGINE_KEY, stored_v4.as_slice())
                .unwrap();
            txn.open_table(META).unwrap().insert("format", 4).unwrap();
        });
        let runtime = runtime();
        let _guard = runtime.enter();
        let store = open(&path).unwrap();
        assert_eq!(store.engine_snapshot().unwrap(), Some((0, snapshot)));
        runtime.block_on(store.close());
    }

    /// A database of format 3 (journal and idempotency keys in redb) moves both into the log at
    /// start: the journal replays, an acknowledged key still answers its stored response, and
    /// the tables are gone from the database.
    #[test]
    fn a_format_3_database_moves_its_journal_into_the_log() {
        use crate::store::IdempotencyStore;
        use oms_core::{Action, Command, Timestamp, Transfer};
        let origin = Origin {
            principal: "desk".into(),
            key: "k-1".into(),
            fingerprint: "f".into(),
        };
        let entry = JournalEntry {
            command: Command {
                ts: Timestamp(1),
                action: Action::Deposit(Transfer {
                    transfer_id: 9,
                    account: "alice".into(),
                    asset: "USDT".into(),
                    amount: 100,
                }),
            },
            origin: origin.clone(),
        };
        let response = StoredResponse {
            status: 202,
            body: "{\"transfer_id\":\"9\"}".into(),
        };
        let far = now_ms() + 3_600_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        write_database(&path, |txn| {
            let bytes = postcard::to_allocvec(&entry).unwrap();
            txn.open_table(JOURNAL)
                .unwrap()
                .insert(1, bytes.as_slice())
                .unwrap();
            let record = log::IdempotencyRecord::encode("f", &response, far);
            txn.open_table(IDEMPOTENCY)
                .unwrap()
                .insert(scoped(&origin).as_str(), record.as_slice())
                .unwrap();
            txn.open_table(IDEMPOTENCY_EXPIRY)
                .unwrap()
                .insert((far, scoped(&origin).as_str()), ())
                .unwrap();
            txn.open_table(META).unwrap().insert("format", 3).unwrap();
        });
        let runtime = runtime();
        let _guard = runtime.enter();
        let store = open(&path).unwrap();
        assert_eq!(store.head(), 1);
        let read = runtime
            .block_on(JournalReader::read(&store, 1, 10))
            .unwrap();
        assert_eq!(read, vec![(1, entry)]);
        assert_eq!(
            runtime.block_on(store.reserve(&origin)).unwrap(),
            Reservation::Completed(response)
        );
        let txn = store.db.begin_read().unwrap();
        let tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|table| redb::TableHandle::name(&table).to_string())
            .collect();
        assert!(!tables.contains(&"journal".to_string()), "{tables:?}");
        assert!(!tables.contains(&"idempotency".to_string()), "{tables:?}");
        drop(txn);
        runtime.block_on(store.close());
    }

    /// A journal that ends before the engine snapshot (its directory lost or swapped) is
    /// refused: appending would reuse positions the snapshot includes.
    #[test]
    fn a_journal_behind_the_snapshot_is_refused() {
        let instruments: Vec<oms_core::Instrument> = crate::default_instruments()
            .into_iter()
            .map(|spec| oms_core::Instrument::new(spec).unwrap())
            .collect();
        let engine = oms_core::Engine::new(&instruments, &oms_core::RiskLimits::default())
            .unwrap()
            .snapshot();
        let stored = postcard::to_allocvec(&StoredEngine {
            position: 5,
            snapshot: engine,
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        write_database(&path, |txn| {
            txn.open_table(ENGINE)
                .unwrap()
                .insert(ENGINE_KEY, stored.as_slice())
                .unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format", FORMAT)
                .unwrap();
        });
        let runtime = runtime();
        let _guard = runtime.enter();
        let refused = open(&path);
        let Err(StoreError::Incompatible(message)) = refused else {
            panic!("a journal behind its snapshot was opened");
        };
        assert!(message.contains("ends at position 0"), "{message}");
    }

    /// Entry `seq` of `account`: a deposit of `seq` BTC when `seq` is a multiple of 3, of USDT
    /// otherwise.
    fn entry(account: &str, seq: u64) -> LedgerEntry {
        LedgerEntry {
            seq,
            ts: oms_core::Timestamp(seq),
            account: account.into(),
            asset: if seq.is_multiple_of(3) { "BTC" } else { "USDT" }.into(),
            kind: oms_core::EntryKind::Deposit,
            cause: oms_core::funds::Cause::Transfer(seq),
            available_change: i128::from(seq),
            held_change: 0,
            balance: Balance {
                available: u128::from(seq),
                held: 0,
            },
        }
    }

    /// Every page of `account`'s ledger, `limit` entries at a time, following the cursors.
    fn ledger_pages(
        runtime: &tokio::runtime::Runtime,
        store: &Embedded,
        account: &str,
        asset: Option<&str>,
        limit: usize,
    ) -> Vec<Vec<u64>> {
        let mut pages = Vec::new();
        let mut before = None;
        loop {
            let query = LedgerQuery {
                account: account.into(),
                asset: asset.map(Into::into),
                before,
                limit,
            };
            let page = runtime.block_on(store.ledger(&query)).unwrap();
            pages.push(page.entries.iter().map(|e| e.seq).collect());
            match page.next {
                Some(next) => before = Some(next),
                None => return pages,
            }
        }
    }

    /// The ledger is written in runs (one row per account and transaction), and a replay after
    /// a restart, which brings back entries already written, adds none twice: pages read
    /// across runs as they did entry by entry.
    #[test]
    fn ledger_runs_page_across_rows_and_a_replay_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime();
        let _guard = runtime.enter();
        let store = open(&dir.path().join("oms.redb")).unwrap();
        let batch = |seqs: std::ops::RangeInclusive<u64>| ProjectionBatch {
            ledger: seqs
                .flat_map(|seq| [entry("alice", seq * 2), entry("bob", seq * 2 + 1)])
                .collect(),
            ..ProjectionBatch::default()
        };
        runtime.block_on(store.apply(&batch(1..=4))).unwrap();
        runtime.block_on(store.apply(&batch(5..=6))).unwrap();
        // a replay from 3: 3 to 6 are there already, 7 and 8 are new
        runtime.block_on(store.apply(&batch(3..=8))).unwrap();
        runtime.block_on(store.apply(&batch(2..=5))).unwrap();

        let rows = store
            .db
            .begin_read()
            .unwrap()
            .open_table(LEDGER)
            .unwrap()
            .len()
            .unwrap();
        assert_eq!(rows, 6, "a run per account per batch that had new entries");
        let alice: Vec<u64> = (1..=8).rev().map(|seq| seq * 2).collect();
        assert_eq!(
            ledger_pages(&runtime, &store, "alice", None, 100),
            std::slice::from_ref(&alice)
        );
        let by_three: Vec<Vec<u64>> = alice.chunks(3).map(<[u64]>::to_vec).collect();
        assert_eq!(ledger_pages(&runtime, &store, "alice", None, 3), by_three);
        assert_eq!(
            ledger_pages(&runtime, &store, "alice", None, 4),
            [alice[..4].to_vec(), alice[4..].to_vec()],
            "a full last page has no next"
        );
        assert_eq!(
            ledger_pages(&runtime, &store, "bob", Some("BTC"), 1),
            [[15], [9], [3]],
            "only the asset's, across runs"
        );
        assert_eq!(
            ledger_pages(&runtime, &store, "carol", None, 5),
            [Vec::<u64>::new()]
        );
        runtime.block_on(store.close());
    }

    /// A database of format 5 (a ledger row per entry) opens with every entry where it was.
    #[test]
    fn a_format_5_ledger_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        write_database(&path, |txn| {
            let mut ledger = txn.open_table(LEDGER).unwrap();
            for seq in 1..=5 {
                let bytes = postcard::to_allocvec(&entry("alice", seq)).unwrap();
                ledger.insert(("alice", seq), bytes.as_slice()).unwrap();
            }
            drop(ledger);
            txn.open_table(META).unwrap().insert("format", 5).unwrap();
        });
        let runtime = runtime();
        for _ in 0..2 {
            let _guard = runtime.enter();
            let store = open(&path).unwrap();
            let query = LedgerQuery {
                account: "alice".into(),
                asset: None,
                before: None,
                limit: 10,
            };
            let page = runtime.block_on(store.ledger(&query)).unwrap();
            let migrated: Vec<_> = (1..=5).rev().map(|seq| entry("alice", seq)).collect();
            assert!(page.entries.ends_with(&migrated), "{:?}", page.entries);
            // the next entries follow the migrated ones
            let next = ProjectionBatch {
                ledger: vec![entry("alice", 6)],
                ..ProjectionBatch::default()
            };
            runtime.block_on(store.apply(&next)).unwrap();
            let page = runtime.block_on(store.ledger(&query)).unwrap();
            assert_eq!(page.entries.len(), 6);
            let meta = store.db.begin_read().unwrap().open_table(META).unwrap();
            assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
            drop(meta);
            runtime.block_on(store.close());
        }
    }
}
