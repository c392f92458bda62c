//! Single-node storage: the journal, idempotency keys, the read projection and book snapshots
//! in one redb file.
//!
//! # Group commit
//! One writer thread owns every write. It takes all operations waiting in its queue, applies
//! them in one write transaction and commits once, so concurrent requests share one fsync.
//! Transactions holding a journal append or a snapshot are fsynced (`Durability::Immediate`);
//! the others (projection updates, refined idempotency responses) are not, and become durable
//! with the next fsynced commit. redb restores the last fsynced commit after a crash.
//!
//! # Why an append also writes its idempotency record
//! The journal append and the idempotency record of its request are written in the same
//! transaction. Otherwise a crash between "journaled" and "response stored" would leave a key
//! that a retry could use to journal the same order twice.
//!
//! # Why snapshots live with the projection
//! In single-node mode the projection is the only durable copy of the events. A snapshot at
//! position P may only be kept if every event up to P is projected, so snapshots are written by
//! the projector in the same transaction as the events that precede them.
//!
//! # Money
//! Single-node mode keeps balances too: the projector writes every ledger entry (by account
//! and sequence), each balance with the sequence of the entry that set it (a replay never moves
//! one backwards), each decided transfer, and the engine's snapshot (funds and every book at
//! one journal position) with the outputs before it. A database from before funds existed has
//! orders its journal cannot replay under them; it is refused at start (the `meta` table names
//! the format).
//!
//! # Known limitation
//! Reads run on the calling task: redb reads are memory-mapped and short, so they are not moved
//! to a blocking thread.

use super::{
    Ack, Backend, Journal, JournalEntry, JournalReader, LogPosition, OrderPage, OrderQuery,
    OrderStore, Origin, Position, ProjectionBatch, Reservation, Result, StoreError, StoredResponse,
    TradeRecord, encode,
};
use super::{FundsStore, LedgerPage, LedgerQuery};
use crate::metrics::StoreMetrics;
use async_trait::async_trait;
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
const TRADES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("trades");
const ACCOUNT_TRADES: TableDefinition<(&str, u64, &str, u64), ()> =
    TableDefinition::new("account_trades");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// `(account, asset)` → the sequence number of the entry that set it (8 bytes, big-endian),
/// then the balance.
const BALANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("balances");
const LEDGER: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("ledger");
const TRANSFERS: TableDefinition<u64, &[u8]> = TableDefinition::new("transfers");
/// The engine snapshot, under [`ENGINE_KEY`].
const ENGINE: TableDefinition<&str, &[u8]> = TableDefinition::new("engine");
const ENGINE_KEY: &str = "engine";
/// `format` → [`FORMAT`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// 2: with funds (issue 13). 3: orders with a quote budget; a format 2 database is migrated
/// at start. A database without a format and with a journal is older than funds.
const FORMAT: u64 = 3;

/// Journal entries kept in memory after their commit, so the processor reading right behind
/// the writers gets them without a database read and a decode.
const TAIL: usize = 16_384;
/// Most operations in one transaction; bounds the latency of the first one in a batch.
const MAX_BATCH: usize = 4096;
/// Most expired idempotency keys removed per sweep, so a sweep never holds the writer long.
const SWEEP_LIMIT: usize = 10_000;

/// Rewrites a format 2 database's journal entries and order states in today's layout (see
/// [`super::legacy`]), in the transaction that opens it: all or nothing.
fn migrate_from_2(txn: &redb::WriteTransaction, path: &Path) -> Result<()> {
    let corrupt = |table: &'static str| {
        move |error: postcard::Error| StoreError::Corrupt {
            table,
            message: format!("format 2 record: {error}"),
        }
    };
    let mut journal = txn.open_table(JOURNAL).map_err(db_error)?;
    let mut entries = Vec::new();
    for row in journal.iter().map_err(db_error)? {
        let (key, value) = row.map_err(db_error)?;
        let entry = super::legacy::journal_entry(value.value()).map_err(corrupt("journal"))?;
        entries.push((key.value(), encode("journal entry", &entry)?));
    }
    tracing::info!(
        path = %path.display(),
        journal_entries = entries.len(),
        "migrating the database from format 2 to {FORMAT}"
    );
    for (key, bytes) in entries {
        journal.insert(key, bytes.as_slice()).map_err(db_error)?;
    }
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

/// An idempotency record: `expires_ms` (8 bytes, big-endian), `status` (2), the fingerprint's
/// length (1) and bytes, then the response body.
struct IdempotencyRecord {
    fingerprint: String,
    response: StoredResponse,
    expires_ms: u64,
}

impl IdempotencyRecord {
    fn encode(fingerprint: &str, response: &StoredResponse, expires_ms: u64) -> Vec<u8> {
        let fingerprint = &fingerprint.as_bytes()[..fingerprint.len().min(255)];
        let mut out = Vec::with_capacity(11 + fingerprint.len() + response.body.len());
        out.extend_from_slice(&expires_ms.to_be_bytes());
        out.extend_from_slice(&response.status.to_be_bytes());
        out.push(fingerprint.len() as u8);
        out.extend_from_slice(fingerprint);
        out.extend_from_slice(response.body.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<IdempotencyRecord> {
        let corrupt = || StoreError::Corrupt {
            table: "idempotency",
            message: "truncated record".into(),
        };
        let expires_ms = u64::from_be_bytes(
            bytes
                .get(..8)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        );
        let status = u16::from_be_bytes(
            bytes
                .get(8..10)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        );
        let length = usize::from(*bytes.get(10).ok_or_else(corrupt)?);
        let fingerprint = bytes.get(11..11 + length).ok_or_else(corrupt)?;
        let body = bytes.get(11 + length..).ok_or_else(corrupt)?;
        Ok(IdempotencyRecord {
            fingerprint: String::from_utf8_lossy(fingerprint).into_owned(),
            response: StoredResponse {
                status,
                body: String::from_utf8_lossy(body).into_owned(),
            },
            expires_ms,
        })
    }
}

/// Projection changes encoded on the caller's task, so the single writer thread only copies
/// bytes into B-trees.
struct EncodedBatch {
    orders: Vec<EncodedOrder>,
    trades: Vec<EncodedTrade>,
    snapshots: Vec<(String, Vec<u8>)>,
    /// `(account, seq, entry)`.
    ledger: Vec<(String, u64, Vec<u8>)>,
    /// `(account, asset, seq ++ balance)`.
    balances: Vec<(String, String, Vec<u8>)>,
    transfers: Vec<(u64, Vec<u8>)>,
    engine: Option<Vec<u8>>,
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
    fn new(batch: &ProjectionBatch) -> Result<EncodedBatch> {
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
            ledger: batch
                .ledger
                .iter()
                .map(|entry| {
                    Ok((
                        entry.account.to_string(),
                        entry.seq,
                        encode("ledger entry", entry)?,
                    ))
                })
                .collect::<Result<_>>()?,
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
            engine: batch
                .engine
                .as_ref()
                .map(|(position, snapshot)| {
                    encode(
                        "engine snapshot",
                        &StoredEngine {
                            position: *position,
                            snapshot: snapshot.clone(),
                        },
                    )
                })
                .transpose()?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredEngine {
    position: Position,
    snapshot: EngineSnapshot,
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

enum Op {
    Append {
        /// The entry, moved into the in-memory tail after the commit.
        entry: Option<Box<JournalEntry>>,
        /// The entry as stored.
        bytes: Vec<u8>,
        /// Its idempotency key, scoped.
        key: String,
        fingerprint: String,
        /// Its acknowledgement, without the position the writer assigns.
        ack: Ack,
        reply: oneshot::Sender<Result<Position>>,
    },
    Complete {
        key: String,
        fingerprint: String,
        response: StoredResponse,
        reply: oneshot::Sender<Result<()>>,
    },
    Project {
        batch: EncodedBatch,
        reply: oneshot::Sender<Result<()>>,
    },
    Sweep {
        now_ms: u64,
        reply: oneshot::Sender<Result<usize>>,
    },
    /// Stop after committing everything queued before this.
    Close { reply: oneshot::Sender<Result<()>> },
}

impl Op {
    fn durable(&self) -> bool {
        match self {
            Op::Append { .. } => true,
            Op::Project { batch, .. } => !batch.snapshots.is_empty() || batch.engine.is_some(),
            Op::Complete { .. } | Op::Sweep { .. } | Op::Close { .. } => false,
        }
    }
}

/// What one operation gave back, before the commit decides whether it counts.
enum Done {
    Position(Position),
    Unit,
    Count(usize),
}

/// The single-node store. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    writer: mpsc::Sender<Op>,
    head: watch::Receiver<Position>,
    in_flight: Arc<Mutex<HashMap<String, InFlight>>>,
    ttl: Duration,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    tail: Arc<Mutex<VecDeque<(Position, JournalEntry)>>>,
}

impl Embedded {
    /// Opens (or creates) the store at `path` and starts its writer thread. Idempotency records
    /// live for `ttl`.
    pub fn open(path: &Path, ttl: Duration, metrics: StoreMetrics) -> Result<Embedded> {
        let db = Database::create(path).map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        let head = {
            // Create every table up front so readers never meet a missing one.
            txn.open_table(IDEMPOTENCY).map_err(db_error)?;
            txn.open_table(IDEMPOTENCY_EXPIRY).map_err(db_error)?;
            txn.open_table(ORDERS).map_err(db_error)?;
            txn.open_table(ACCOUNT_ORDERS).map_err(db_error)?;
            txn.open_table(OPEN_ORDERS).map_err(db_error)?;
            txn.open_table(CLIENT_IDS).map_err(db_error)?;
            txn.open_table(TRADES).map_err(db_error)?;
            txn.open_table(ACCOUNT_TRADES).map_err(db_error)?;
            txn.open_table(SNAPSHOTS).map_err(db_error)?;
            txn.open_table(BALANCES).map_err(db_error)?;
            txn.open_table(LEDGER).map_err(db_error)?;
            txn.open_table(TRANSFERS).map_err(db_error)?;
            txn.open_table(ENGINE).map_err(db_error)?;
            let head = {
                let journal = txn.open_table(JOURNAL).map_err(db_error)?;
                let last = journal.last().map_err(db_error)?;
                last.map_or(0, |(key, _)| key.value())
            };
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let format = meta.get("format").map_err(db_error)?.map(|v| v.value());
            match format {
                Some(FORMAT) => {}
                None if head == 0 => {
                    meta.insert("format", FORMAT).map_err(db_error)?;
                }
                Some(2) => {
                    migrate_from_2(&txn, path)?;
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
            head
        };
        txn.commit().map_err(db_error)?;
        let db = Arc::new(db);
        let (writer, queue) = mpsc::channel(MAX_BATCH * 4);
        let (head_tx, head) = watch::channel(head);
        let thread_db = db.clone();
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let thread_tail = tail.clone();
        let thread = std::thread::Builder::new()
            .name("oms-store-writer".into())
            .spawn(move || write_loop(&thread_db, queue, head_tx, &thread_tail, ttl, &metrics))
            .map_err(db_error)?;
        Ok(Embedded {
            db,
            writer,
            head,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            ttl,
            thread: Arc::new(Mutex::new(Some(thread))),
            tail,
        })
    }

    /// The last durable journal position, 0 when the journal is empty.
    pub fn head(&self) -> Position {
        *self.head.borrow()
    }

    /// Commits everything queued so far and stops the writer; later writes fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        let closed = self.call(|reply| Op::Close { reply }).await;
        let thread = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let (Ok(()), Some(thread)) = (closed, thread) {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
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
        self.read(|txn| {
            let journal = txn.open_table(JOURNAL).map_err(db_error)?;
            let mut highest = None;
            for row in journal.iter().map_err(db_error)?.rev().take(1024) {
                let (_, bytes) = row.map_err(db_error)?;
                let entry: JournalEntry = decode("journal", bytes.value())?;
                let id = match entry.command.action {
                    oms_core::Action::New(order) => order.order_id,
                    oms_core::Action::Deposit(t) | oms_core::Action::Withdraw(t) => {
                        OrderId(t.transfer_id)
                    }
                    oms_core::Action::Cancel(_) | oms_core::Action::Amend(_) => continue,
                };
                highest = highest.max(Some(id));
            }
            Ok(highest)
        })
    }

    /// How long idempotency records live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Removes expired idempotency records; returns how many.
    pub async fn sweep(&self) -> Result<usize> {
        self.call(|reply| Op::Sweep {
            now_ms: now_ms(),
            reply,
        })
        .await
    }

    async fn call<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(op(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// A read on the calling thread: for start-up, and for the point lookup of an idempotency
    /// key that must stay under the in-flight lock.
    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().map_err(db_error)?;
        f(&txn)
    }

    /// A read on the blocking pool, so that a scan (or a slow disk) never stalls the async
    /// workers that serve requests.
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
        let key = scoped(&entry.origin);
        let ack = Ack::new(&entry, local(0));
        let fingerprint = entry.origin.fingerprint.clone();
        let bytes = encode("journal entry", &entry)?;
        let position = self
            .call(|reply| Op::Append {
                bytes,
                entry: Some(Box::new(entry)),
                key: key.clone(),
                fingerprint,
                ack: ack.clone(),
                reply,
            })
            .await?;
        let position = local(position);
        if let Some(in_flight) = self.in_flight.lock().map_err(db_error)?.get_mut(&key) {
            in_flight.stored = Some(Ack { position, ..ack }.response()?);
        }
        Ok(position)
    }

    async fn ping(&self) -> Result<()> {
        if self.writer.is_closed() {
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
        self.read_off(move |txn| {
            let journal = txn.open_table(JOURNAL).map_err(db_error)?;
            let mut out = Vec::new();
            for row in journal.range(from..).map_err(db_error)?.take(max) {
                let (position, bytes) = row.map_err(db_error)?;
                out.push((position.value(), decode("journal", bytes.value())?));
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl super::IdempotencyStore for Embedded {
    async fn reserve(&self, origin: &Origin) -> Result<Reservation> {
        let key = scoped(origin);
        // Held across the lookup so that check-and-reserve is atomic within the process, which
        // in single-node mode is every process there is.
        let mut in_flight = self.in_flight.lock().map_err(db_error)?;
        if let Some(reserved) = in_flight.get(&key) {
            return Ok(if reserved.fingerprint == origin.fingerprint {
                Reservation::InFlight
            } else {
                Reservation::Mismatch
            });
        }
        let stored = self.read(|txn| {
            let table = txn.open_table(IDEMPOTENCY).map_err(db_error)?;
            let record = table.get(key.as_str()).map_err(db_error)?;
            record
                .map(|bytes| IdempotencyRecord::decode(bytes.value()))
                .transpose()
        })?;
        match stored {
            Some(record) if record.expires_ms > now_ms() => {
                Ok(if record.fingerprint == origin.fingerprint {
                    Reservation::Completed(record.response)
                } else {
                    Reservation::Mismatch
                })
            }
            _ => {
                in_flight.insert(
                    key,
                    InFlight {
                        fingerprint: origin.fingerprint.clone(),
                        stored: None,
                    },
                );
                Ok(Reservation::Reserved)
            }
        }
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
        let result = self
            .call(|reply| Op::Complete {
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

#[async_trait]
impl OrderStore for Embedded {
    async fn apply(&self, batch: ProjectionBatch) -> Result<()> {
        let batch = EncodedBatch::new(&batch)?;
        self.call(|reply| Op::Project { batch, reply }).await
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
        limit: usize,
    ) -> Result<Vec<TradeRecord>> {
        let (account, symbol) = (account.to_string(), symbol.map(str::to_string));
        self.read_off(move |txn| {
            let (account, symbol) = (account.as_str(), symbol.as_deref());
            let index = txn.open_table(ACCOUNT_TRADES).map_err(db_error)?;
            let trades = txn.open_table(TRADES).map_err(db_error)?;
            let mut out = Vec::new();
            let range = index
                .range((account, 0, "", 0)..=(account, u64::MAX, "\u{10ffff}", u64::MAX))
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
        self.read_off(move |txn| {
            let table = txn.open_table(CLIENT_IDS).map_err(db_error)?;
            let found = table
                .get((key.0.as_str(), key.1.as_str(), key.2.as_str()))
                .map_err(db_error)?;
            Ok(found.map(|id| OrderId(id.value())))
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
            let mut next = None;
            for row in table
                .range((account, 0)..(account, end))
                .map_err(db_error)?
                .rev()
            {
                let (_, value) = row.map_err(db_error)?;
                let entry: LedgerEntry = decode("ledger", value.value())?;
                if query
                    .asset
                    .as_deref()
                    .is_some_and(|asset| entry.asset != asset)
                {
                    continue;
                }
                if entries.len() == query.limit {
                    next = entries.last().map(|e| e.seq);
                    break;
                }
                entries.push(entry);
            }
            Ok(LedgerPage { entries, next })
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

fn write_loop(
    db: &Database,
    mut queue: mpsc::Receiver<Op>,
    head: watch::Sender<Position>,
    tail: &Mutex<VecDeque<(Position, JournalEntry)>>,
    ttl: Duration,
    metrics: &StoreMetrics,
) {
    let mut last = *head.borrow();
    let mut closing = false;
    while !closing && let Some(first) = queue.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH && !matches!(ops.last(), Some(Op::Close { .. })) {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        closing = matches!(ops.last(), Some(Op::Close { .. }));
        let durable = ops.iter().any(Op::durable);
        let started = std::time::Instant::now();
        let written = write_batch(db, &ops, last, durable, ttl);
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok((done, new_last)) => {
                last = new_last;
                if let Ok(mut tail) = tail.lock() {
                    for (op, done) in ops.iter_mut().zip(&done) {
                        if let (Op::Append { entry, .. }, Done::Position(position)) = (op, done)
                            && let Some(entry) = entry.take()
                        {
                            if tail.len() == TAIL {
                                tail.pop_front();
                            }
                            tail.push_back((*position, *entry));
                        }
                    }
                }
                metrics.commits.inc();
                metrics.fsyncs.inc_by(u64::from(durable));
                metrics.batch_size.observe(ops.len() as f64);
                // Readers may look once the commit is done, before the callers hear of it.
                head.send_if_modified(|head| std::mem::replace(head, last) != last);
                for (op, done) in ops.into_iter().zip(done) {
                    reply(op, Ok(done));
                }
            }
            Err(error) => {
                tracing::error!(%error, operations = ops.len(), "store write failed");
                for op in ops {
                    reply(op, Err(db_error(&error)));
                }
            }
        }
    }
}

fn reply(op: Op, result: Result<Done>) {
    match op {
        Op::Append { reply, .. } => {
            let _ = reply.send(result.map(|done| match done {
                Done::Position(position) => position,
                _ => 0,
            }));
        }
        Op::Complete { reply, .. } | Op::Project { reply, .. } | Op::Close { reply } => {
            let _ = reply.send(result.map(|_| ()));
        }
        Op::Sweep { reply, .. } => {
            let _ = reply.send(result.map(|done| match done {
                Done::Count(n) => n,
                _ => 0,
            }));
        }
    }
}

/// Every table, opened once per write transaction.
struct Tables<'txn> {
    journal: redb::Table<'txn, u64, &'static [u8]>,
    idempotency: redb::Table<'txn, &'static str, &'static [u8]>,
    expiry: redb::Table<'txn, (u64, &'static str), ()>,
    orders: redb::Table<'txn, u64, &'static [u8]>,
    account_orders: redb::Table<'txn, (&'static str, u64), ()>,
    open_orders: redb::Table<'txn, (&'static str, u64), ()>,
    client_ids: redb::Table<'txn, (&'static str, &'static str, &'static str), u64>,
    trades: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    account_trades: redb::Table<'txn, (&'static str, u64, &'static str, u64), ()>,
    snapshots: redb::Table<'txn, &'static str, &'static [u8]>,
    balances: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    ledger: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    transfers: redb::Table<'txn, u64, &'static [u8]>,
    engine: redb::Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Tables<'txn>, redb::Error> {
        Ok(Tables {
            journal: txn.open_table(JOURNAL)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            expiry: txn.open_table(IDEMPOTENCY_EXPIRY)?,
            orders: txn.open_table(ORDERS)?,
            account_orders: txn.open_table(ACCOUNT_ORDERS)?,
            open_orders: txn.open_table(OPEN_ORDERS)?,
            client_ids: txn.open_table(CLIENT_IDS)?,
            trades: txn.open_table(TRADES)?,
            account_trades: txn.open_table(ACCOUNT_TRADES)?,
            snapshots: txn.open_table(SNAPSHOTS)?,
            balances: txn.open_table(BALANCES)?,
            ledger: txn.open_table(LEDGER)?,
            transfers: txn.open_table(TRANSFERS)?,
            engine: txn.open_table(ENGINE)?,
        })
    }

    fn put_response(
        &mut self,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        expires_ms: u64,
    ) -> Result<(), redb::Error> {
        let record = IdempotencyRecord::encode(fingerprint, response, expires_ms);
        self.idempotency.insert(key, record.as_slice())?;
        self.expiry.insert((expires_ms, key), ())?;
        Ok(())
    }

    fn sweep(&mut self, now_ms: u64) -> Result<usize, redb::Error> {
        let mut expired = Vec::new();
        for row in self.expiry.range((0, "")..(now_ms, ""))?.take(SWEEP_LIMIT) {
            let (key, _) = row?;
            let (at, name) = key.value();
            expired.push((at, name.to_string()));
        }
        for (at, name) in &expired {
            self.expiry.remove((*at, name.as_str()))?;
            // A key stored again later has a later expiry; drop only records really expired.
            let stale = match self.idempotency.get(name.as_str())? {
                Some(bytes) => IdempotencyRecord::decode(bytes.value())
                    .map_or(true, |record| record.expires_ms <= now_ms),
                None => false,
            };
            if stale {
                self.idempotency.remove(name.as_str())?;
            }
        }
        Ok(expired.len())
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
            self.account_orders.insert((account, id), ())?;
            if order.open {
                self.open_orders.insert((account, id), ())?;
                self.client_ids.insert(client_id, id)?;
            } else {
                self.open_orders.remove((account, id))?;
                let owner = self.client_ids.get(client_id)?.map(|v| v.value());
                if owner == Some(id) {
                    self.client_ids.remove(client_id)?;
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
        for (symbol, value) in &batch.snapshots {
            self.snapshots.insert(symbol.as_str(), value.as_slice())?;
        }
        for (account, seq, value) in &batch.ledger {
            self.ledger
                .insert((account.as_str(), *seq), value.as_slice())?;
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

/// Applies `ops` in one transaction; gives each op's result and the new last position.
fn write_batch(
    db: &Database,
    ops: &[Op],
    last: Position,
    durable: bool,
    ttl: Duration,
) -> Result<(Vec<Done>, Position), redb::Error> {
    let mut txn = db.begin_write()?;
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(|error| redb::Error::Corrupted(error.to_string()))?;
    let mut done = Vec::with_capacity(ops.len());
    let mut position = last;
    {
        let mut tables = Tables::open(&txn)?;
        let expires_ms = now_ms() + ttl.as_millis() as u64;
        for op in ops {
            done.push(match op {
                Op::Append {
                    bytes,
                    key,
                    fingerprint,
                    ack,
                    ..
                } => {
                    position += 1;
                    tables.journal.insert(position, bytes.as_slice())?;
                    let ack = Ack {
                        position: local(position),
                        ..ack.clone()
                    };
                    // Cannot fail for our plain type; if it did, the whole batch is refused
                    // (a 503), never stored with an empty answer.
                    let response = ack
                        .response()
                        .map_err(|error| redb::Error::Corrupted(error.to_string()))?;
                    tables.put_response(key, fingerprint, &response, expires_ms)?;
                    Done::Position(position)
                }
                Op::Complete {
                    key,
                    fingerprint,
                    response,
                    ..
                } => {
                    tables.put_response(key, fingerprint, response, expires_ms)?;
                    Done::Unit
                }
                Op::Project { batch, .. } => {
                    tables.project(batch)?;
                    Done::Unit
                }
                Op::Sweep { now_ms, .. } => Done::Count(tables.sweep(*now_ms)?),
                Op::Close { .. } => Done::Unit,
            });
        }
    }
    txn.commit()?;
    Ok((done, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal written before funds existed cannot be replayed under them: refused, with a
    /// message that says what to do, and the file left as it was.
    #[test]
    fn a_database_from_before_funds_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oms.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(JOURNAL)
                .unwrap()
                .insert(1, b"an old entry".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let refused = Embedded::open(
            &path,
            Duration::from_secs(60),
            crate::metrics::Metrics::new().store.clone(),
        );
        let Err(StoreError::Incompatible(message)) = refused else {
            panic!("an old database was opened");
        };
        assert!(message.contains("empty --data-dir"), "{message}");
        // a new database is marked, and opens again
        let fresh = dir.path().join("new.redb");
        let store = Embedded::open(
            &fresh,
            Duration::from_secs(60),
            crate::metrics::Metrics::new().store.clone(),
        );
        assert!(store.is_ok());
    }

    /// A database of format 2 (orders without quote budgets) is migrated at start: its journal
    /// replays and its orders read as before, and it opens again as format 3.
    #[test]
    fn a_format_2_database_is_migrated() {
        use oms_core::{Action, Command, NewOrder, OrderType, Quantity, Side, Timestamp};
        let order = NewOrder {
            order_id: OrderId(7),
            client_order_id: "c7".into(),
            account: "alice".into(),
            symbol: "BTC-USDT".into(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: oms_core::TimeInForce::Gtc,
            price: Some(oms_core::Price(100)),
            quantity: Quantity(5),
            post_only: false,
            self_trade_prevention: oms_core::SelfTradePrevention::None,
            quote_quantity: None,
        };
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
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(JOURNAL)
                .unwrap()
                .insert(1, entry_v2.as_slice())
                .unwrap();
            txn.open_table(ORDERS)
                .unwrap()
                .insert(7, state_v2.as_slice())
                .unwrap();
            txn.open_table(META).unwrap().insert("format", 2).unwrap();
            txn.commit().unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..2 {
            let _guard = runtime.enter();
            let store = Embedded::open(
                &path,
                Duration::from_secs(60),
                crate::metrics::Metrics::new().store.clone(),
            )
            .unwrap();
            let read = runtime
                .block_on(JournalReader::read(&store, 1, 10))
                .unwrap();
            assert_eq!(read, vec![(1, entry.clone())]);
            let found = runtime
                .block_on(OrderStore::order(&store, OrderId(7)))
                .unwrap();
            assert_eq!(found, Some(state.clone()));
            let txn = store.db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
            drop((meta, txn));
            runtime.block_on(store.close());
        }
    }
}
