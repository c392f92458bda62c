//! The single-node command log: journal entries and idempotency records, in fjall.
//!
//! # Why a log-structured store
//! A durable acknowledgement is the cost every write pays before its `202`. In a copy-on-write
//! B-tree (redb, which keeps the read projection) each commit rewrites the pages from every
//! touched leaf to the root: about 8 KB per order. fjall is an LSM tree with a write-ahead
//! journal: a batch is appended to the journal (one sequential write), applied to in-memory
//! tables, and flushed and compacted in the background. So an acknowledgement costs its own
//! bytes and a share of one `fdatasync`.
//!
//! # Group commit
//! One writer thread takes every operation waiting in its queue, writes them as one fjall
//! batch, which is atomic across keyspaces (after a crash the whole batch is there or none of
//! it), and persists the batch with one `fdatasync` when it holds an append. Refined
//! idempotency responses and sweeps ride along unpersisted and become durable with the next
//! persisted batch; losing them in a crash only loses a refinement of a stored answer.
//!
//! # Why an append also writes its idempotency record
//! The journal entry and the idempotency record of its request are in the same batch.
//! Otherwise a crash between "journaled" and "response stored" would leave a key that a retry
//! could use to journal the same order twice.
//!
//! # Keys
//! `journal`: the position, 8 bytes big-endian (so keys sort by position). `idempotency`: the
//! scoped key (principal, unit separator, key). `expiry`: the expiry in milliseconds, 8 bytes
//! big-endian, then the scoped key: the sweep reads them in expiry order.

use super::{Done, TAIL, db_error, decode, local, now_ms};
use crate::metrics::StoreMetrics;
use crate::store::{Ack, JournalEntry, Position, Result, StoreError, StoredResponse};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The largest in-memory table of a keyspace before it is flushed to disk (fjall's default).
/// A flush takes CPU for a moment; smaller tables flush more often, and on two cores each
/// flush shows in the tail latency (`docs/benchmarks.md`).
const MEMTABLE: u64 = 64 << 20;
/// The block cache, for reads of flushed records (idempotency lookups of old keys, replays).
const CACHE: u64 = 32 << 20;
/// The most journal fjall keeps unflushed: what it replays at start.
const JOURNALING: u64 = 256 << 20;
/// Most operations in one batch; bounds the latency of the first one.
const MAX_BATCH: usize = 4096;
/// Most expired idempotency keys removed per sweep, so a sweep never holds the writer long.
const SWEEP_LIMIT: usize = 10_000;

fn log_error(error: impl std::fmt::Display) -> StoreError {
    db_error(format!("journal: {error}"))
}

/// The journal and the idempotency records.
#[derive(Clone)]
pub(super) struct Log {
    db: Database,
    journal: Keyspace,
    idempotency: Keyspace,
    expiry: Keyspace,
}

impl Log {
    /// Opens (or creates) the log in the directory `dir`, replaying fjall's own journal.
    pub(super) fn open(dir: &Path) -> Result<Log> {
        let db = Database::builder(dir)
            // Batches say themselves when they must reach the disk.
            .manual_journal_persist(true)
            // Flushes and compactions in the background; the writer never waits for them.
            .worker_threads(1)
            // Bounded memory, and a bounded journal to replay at start.
            .cache_size(CACHE)
            .max_journaling_size(JOURNALING)
            .open()
            .map_err(log_error)?;
        let keyspace = |name| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE)
            })
            .map_err(log_error)
        };
        Ok(Log {
            journal: keyspace("journal")?,
            idempotency: keyspace("idempotency")?,
            expiry: keyspace("expiry")?,
            db,
        })
    }

    /// The last journal position, 0 when the journal is empty.
    pub(super) fn head(&self) -> Result<Position> {
        match self.journal.last_key_value() {
            Some(guard) => position_of(&guard.key().map_err(log_error)?),
            None => Ok(0),
        }
    }

    /// Up to `max` entries from position `from` on.
    pub(super) fn read(&self, from: Position, max: usize) -> Result<Vec<(Position, JournalEntry)>> {
        let mut out = Vec::new();
        for guard in self.journal.range(from.to_be_bytes()..).take(max) {
            let (key, value) = guard.into_inner().map_err(log_error)?;
            out.push((position_of(&key)?, decode("journal", &value)?));
        }
        Ok(out)
    }

    /// The last `n` entries, newest first.
    pub(super) fn newest(&self, n: usize) -> Result<Vec<JournalEntry>> {
        let mut out = Vec::new();
        for guard in self.journal.iter().rev().take(n) {
            let (_, value) = guard.into_inner().map_err(log_error)?;
            out.push(decode("journal", &value)?);
        }
        Ok(out)
    }

    /// The stored answer under a scoped idempotency key.
    pub(super) fn response(&self, key: &str) -> Result<Option<IdempotencyRecord>> {
        self.idempotency
            .get(key)
            .map_err(log_error)?
            .map(|bytes| IdempotencyRecord::decode(&bytes))
            .transpose()
    }

    /// Writes rows of an earlier database (journal entries, idempotency records with their
    /// expiry) and persists them: the import of a migration, safe to repeat.
    pub(super) fn import(
        &self,
        journal: Vec<(Position, Vec<u8>)>,
        idempotency: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for (position, bytes) in journal {
            batch.insert(&self.journal, position.to_be_bytes(), bytes);
        }
        for (key, bytes) in idempotency {
            let expires_ms = IdempotencyRecord::decode(&bytes)?.expires_ms;
            batch.insert(&self.expiry, expiry_key(expires_ms, &key), []);
            batch.insert(&self.idempotency, key, bytes);
        }
        batch.commit().map_err(log_error)
    }
}

fn position_of(key: &[u8]) -> Result<Position> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            table: "journal",
            message: format!("a key of {} bytes", key.len()),
        })
}

fn expiry_key(expires_ms: u64, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// An idempotency record: `expires_ms` (8 bytes, big-endian), `status` (2), the fingerprint's
/// length (1) and bytes, then the response body.
pub(super) struct IdempotencyRecord {
    pub(super) fingerprint: String,
    pub(super) response: StoredResponse,
    pub(super) expires_ms: u64,
}

impl IdempotencyRecord {
    pub(super) fn encode(fingerprint: &str, response: &StoredResponse, expires_ms: u64) -> Vec<u8> {
        let fingerprint = &fingerprint.as_bytes()[..fingerprint.len().min(255)];
        let mut out = Vec::with_capacity(11 + fingerprint.len() + response.body.len());
        out.extend_from_slice(&expires_ms.to_be_bytes());
        out.extend_from_slice(&response.status.to_be_bytes());
        out.push(fingerprint.len() as u8);
        out.extend_from_slice(fingerprint);
        out.extend_from_slice(response.body.as_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<IdempotencyRecord> {
        let corrupt = || StoreError::Corrupt {
            table: "idempotency",
            message: "truncated record".into(),
        };
        let number = |range: std::ops::Range<usize>| bytes.get(range).ok_or_else(corrupt);
        let expires_ms = u64::from_be_bytes(number(0..8)?.try_into().map_err(|_| corrupt())?);
        let status = u16::from_be_bytes(number(8..10)?.try_into().map_err(|_| corrupt())?);
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

/// One entry to append.
pub(super) struct Appending {
    /// The entry, moved into the in-memory tail after the commit.
    pub entry: Option<Box<JournalEntry>>,
    /// The entry as stored.
    pub bytes: Vec<u8>,
    /// Its idempotency key, scoped.
    pub key: String,
    pub fingerprint: String,
    /// Its acknowledgement, without the position the writer assigns.
    pub ack: Ack,
}

/// What the log's writer does.
pub(super) enum LogOp {
    /// Entries appended together, in one commit (a batch of orders is one append).
    Append {
        items: Vec<Appending>,
        reply: oneshot::Sender<Result<Vec<Position>>>,
    },
    Complete {
        key: String,
        fingerprint: String,
        response: StoredResponse,
        reply: oneshot::Sender<Result<()>>,
    },
    Sweep {
        now_ms: u64,
        reply: oneshot::Sender<Result<usize>>,
    },
    /// Stop after writing everything queued before this.
    Close { reply: oneshot::Sender<Result<()>> },
}

fn reply(op: LogOp, result: Result<Done>) {
    match op {
        LogOp::Append { reply, .. } => {
            let _ = reply.send(result.map(|done| match done {
                Done::Positions(positions) => positions,
                _ => Vec::new(),
            }));
        }
        LogOp::Complete { reply, .. } | LogOp::Close { reply } => {
            let _ = reply.send(result.map(|_| ()));
        }
        LogOp::Sweep { reply, .. } => {
            let _ = reply.send(result.map(|done| match done {
                Done::Count(n) => n,
                _ => 0,
            }));
        }
    }
}

/// The writer thread: group commit until closed.
pub(super) fn write_loop(
    log: &Log,
    mut queue: mpsc::Receiver<LogOp>,
    head: watch::Sender<Position>,
    tail: &Mutex<VecDeque<(Position, JournalEntry)>>,
    ttl: Duration,
    metrics: &StoreMetrics,
) {
    let mut last = *head.borrow();
    let mut closing = false;
    while !closing && let Some(first) = queue.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH && !matches!(ops.last(), Some(LogOp::Close { .. })) {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        closing = matches!(ops.last(), Some(LogOp::Close { .. }));
        let started = Instant::now();
        let written = write_batch(log, &ops, last, ttl);
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok(Written {
                done,
                last: new_last,
                bytes,
                appended,
                durable,
            }) => {
                last = new_last;
                if let Ok(mut tail) = tail.lock() {
                    for (op, done) in ops.iter_mut().zip(&done) {
                        if let (LogOp::Append { items, .. }, Done::Positions(positions)) =
                            (op, done)
                        {
                            for (item, position) in items.iter_mut().zip(positions) {
                                if let Some(entry) = item.entry.take() {
                                    if tail.len() == TAIL {
                                        tail.pop_front();
                                    }
                                    tail.push_back((*position, *entry));
                                }
                            }
                        }
                    }
                }
                metrics.commits.inc();
                metrics.fsyncs.inc_by(u64::from(durable));
                metrics.appended.inc_by(appended);
                metrics.bytes.inc_by(bytes);
                metrics.batch_size.observe(ops.len() as f64);
                metrics.head.set(last as i64);
                // Readers may look once the batch is written, before the callers hear of it.
                head.send_if_modified(|head| std::mem::replace(head, last) != last);
                for (op, done) in ops.into_iter().zip(done) {
                    reply(op, Ok(done));
                }
            }
            Err(error) => {
                tracing::error!(%error, operations = ops.len(), "journal write failed");
                for op in ops {
                    reply(op, Err(log_error(&error)));
                }
            }
        }
    }
}

/// What one batch did.
struct Written {
    done: Vec<Done>,
    last: Position,
    /// Keys and values written.
    bytes: u64,
    appended: u64,
    durable: bool,
}

/// Writes `ops` as one batch, persisted if it holds an append.
fn write_batch(log: &Log, ops: &[LogOp], last: Position, ttl: Duration) -> Result<Written> {
    let durable = ops.iter().any(|op| matches!(op, LogOp::Append { .. }));
    let mut batch = log
        .db
        .batch()
        .durability(durable.then_some(PersistMode::SyncData));
    let mut done = Vec::with_capacity(ops.len());
    let mut position = last;
    let mut bytes = 0;
    let mut appended = 0;
    let expires_ms = now_ms() + ttl.as_millis() as u64;
    let put = |batch: &mut fjall::OwnedWriteBatch,
               key: &str,
               fingerprint: &str,
               response: &StoredResponse|
     -> u64 {
        let record = IdempotencyRecord::encode(fingerprint, response, expires_ms);
        let expiry = expiry_key(expires_ms, key);
        let written = (key.len() + record.len() + expiry.len()) as u64;
        batch.insert(&log.expiry, expiry, []);
        batch.insert(&log.idempotency, key, record);
        written
    };
    for op in ops {
        done.push(match op {
            LogOp::Append { items, .. } => {
                let mut positions = Vec::with_capacity(items.len());
                for item in items {
                    position += 1;
                    appended += 1;
                    bytes += 8 + item.bytes.len() as u64;
                    batch.insert(&log.journal, position.to_be_bytes(), item.bytes.as_slice());
                    let ack = Ack {
                        position: local(position),
                        ..item.ack.clone()
                    };
                    // Cannot fail for our plain type; if it did, the whole batch is refused (a
                    // 503), never stored with an empty answer.
                    let response = ack.response()?;
                    bytes += put(&mut batch, &item.key, &item.fingerprint, &response);
                    positions.push(position);
                }
                Done::Positions(positions)
            }
            LogOp::Complete {
                key,
                fingerprint,
                response,
                ..
            } => {
                bytes += put(&mut batch, key, fingerprint, response);
                Done::Unit
            }
            LogOp::Sweep { now_ms, .. } => Done::Count(sweep(log, &mut batch, *now_ms)?),
            LogOp::Close { .. } => Done::Unit,
        });
    }
    batch.commit().map_err(log_error)?;
    Ok(Written {
        done,
        last: position,
        bytes,
        appended,
        durable,
    })
}

/// Removes records whose time is up, at most [`SWEEP_LIMIT`]; gives how many expiry rows went.
fn sweep(log: &Log, batch: &mut fjall::OwnedWriteBatch, now_ms: u64) -> Result<usize> {
    let mut removed = 0;
    for guard in log.expiry.range(..now_ms.to_be_bytes()).take(SWEEP_LIMIT) {
        let expiry = guard.key().map_err(log_error)?;
        let key = String::from_utf8_lossy(expiry.get(8..).unwrap_or_default()).into_owned();
        batch.remove(&log.expiry, expiry);
        removed += 1;
        // A key stored again later has a later expiry; drop only records really expired.
        let stale = match log.idempotency.get(&key).map_err(log_error)? {
            Some(bytes) => {
                IdempotencyRecord::decode(&bytes).map_or(true, |record| record.expires_ms <= now_ms)
            }
            None => false,
        };
        if stale {
            batch.remove(&log.idempotency, key);
        }
    }
    Ok(removed)
}
