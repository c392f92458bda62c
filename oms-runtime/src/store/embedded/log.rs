//! The single-node command log: the journal in segment files, the idempotency records in
//! fjall.
//!
//! # The durable path is one append
//! A durable acknowledgement is the cost every write pays before its `202`. The journal's
//! writer takes every operation waiting in its queue, appends their records to the journal's
//! segment file with one `write` and one `fdatasync` (group commit), and only then answers.
//! Each record holds the journal entry and the idempotency record of its request (key,
//! fingerprint, acknowledgement): a crash after "journaled" can never leave a key that a retry
//! could use to journal the same order twice, because the key's record is in the same bytes.
//! Why the journal is not in an LSM tree: [`super::segments`].
//!
//! # The idempotency index is derived, and written off the durable path
//! Lookups by key need an index, which fjall keeps (keyspaces `idempotency` and `expiry`). An
//! indexer thread writes the records there after the journal's writer has answered, with the
//! journal position they reach (`INDEXED`) in the same atomic batch, unsynced. Until a record
//! is in fjall, lookups find it in memory (`unindexed`), so a retry never misses it. At start,
//! the records after `INDEXED` are indexed again from the segments, so a crash loses nothing
//! (a refined answer stored after the acknowledgement, `Complete`, lives only in the index: a
//! crash before it reaches the disk leaves the acknowledgement, a valid answer). So fjall's
//! background work (flushes and compactions hold a tree's lock for tens of milliseconds) never
//! holds an acknowledgement; it can only delay a lookup of an older key.
//!
//! # The index points into the journal
//! Under a key the index holds where the journal holds its record ([`IN_JOURNAL`], the
//! position and the expiry: 17 bytes), not the record (the answer's JSON, about 250 bytes). The
//! index's flushes and compactions rewrite what it holds, under random keys, in bursts the
//! journal's `fdatasync` waits behind (`docs/benchmarks.md`); a smaller index makes smaller
//! bursts. A lookup that finds a key reads its record from the journal: a retry's cost, not
//! a new request's (a new key's lookup misses). A refined answer is not in the journal, so the
//! index holds it whole, as it holds records written by earlier versions.
//!
//! # Keys
//! `idempotency`: the scoped key (principal, unit separator, key), and [`INDEXED`]. `expiry`:
//! the expiry in milliseconds, 8 bytes big-endian, then the scoped key: the sweep reads them in
//! expiry order. Before the segments, the journal was a fjall keyspace `journal` (keys: the
//! position, 8 bytes big-endian); opening moves it into the segments.

use super::background;
use super::segments::{self, Segments};
use super::{TAIL, db_error, decode, gather, local, now_ms};
use crate::metrics::StoreMetrics;
use crate::store::{Ack, JournalEntry, Position, Result, StoreError, StoredResponse};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The largest in-memory table of a keyspace before it is flushed to disk (fjall's default).
const MEMTABLE: u64 = 64 << 20;
/// The block cache, for reads of flushed records (idempotency lookups of old keys).
const CACHE: u64 = 32 << 20;
/// The most of fjall's own journal it keeps unflushed: what it replays at start.
const JOURNALING: u64 = 256 << 20;
/// Most operations in one batch; bounds the latency of the first one.
const MAX_BATCH: usize = 4096;
/// Most expired idempotency keys removed per sweep, so a sweep never holds the indexer long.
const SWEEP_LIMIT: usize = 10_000;
/// How often the indexer syncs fjall's own journal. Left to the kernel, its pages are written
/// back once they are 30 seconds old, all at once (tens of megabytes under load), and the
/// journal's `fdatasync` waits behind that burst (`docs/benchmarks.md`).
const INDEX_SYNC_EVERY: Duration = Duration::from_millis(250);
/// Records indexed per batch when indexing again at start.
const REINDEX_BATCH: usize = 4096;
/// The key, in `idempotency`, of the last journal position whose record is indexed. Scoped
/// keys always hold a unit separator; this one cannot.
const INDEXED: &str = "\0indexed";
/// The first byte of an index value that points into the journal. A whole record starts with
/// its expiry in milliseconds, big-endian, whose first byte is 0 for the next two million years.
const IN_JOURNAL: u8 = 1;

/// An index value pointing at the journal record of `position`.
fn in_journal(position: Position, expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(IN_JOURNAL);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(&position.to_be_bytes());
    out
}

/// What the index holds under a key.
pub(super) enum Found {
    /// The record itself (a refined answer, or one written by an earlier version).
    Record(IdempotencyRecord),
    /// The journal position whose record holds it: [`Log::record_at`] reads it.
    InJournal { position: Position, expires_ms: u64 },
}

impl Found {
    fn parse(bytes: &[u8]) -> Result<Found> {
        if bytes.first() != Some(&IN_JOURNAL) {
            return IdempotencyRecord::decode(bytes).map(Found::Record);
        }
        let number = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .and_then(|bytes| bytes.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt {
                    table: "idempotency",
                    message: format!("a journal pointer of {} bytes", bytes.len()),
                })
        };
        Ok(Found::InJournal {
            expires_ms: number(1..9)?,
            position: number(9..17)?,
        })
    }

    fn expires_ms(&self) -> u64 {
        match self {
            Found::Record(record) => record.expires_ms,
            Found::InJournal { expires_ms, .. } => *expires_ms,
        }
    }
}

fn log_error(error: impl std::fmt::Display) -> StoreError {
    db_error(format!("journal: {error}"))
}

/// The journal and the idempotency records. Cheap to clone.
#[derive(Clone)]
pub(super) struct Log {
    db: Database,
    idempotency: Keyspace,
    expiry: Keyspace,
    /// The appending side, used by the writer thread (and by imports before it starts).
    segments: Arc<Mutex<Segments>>,
    reader: segments::Shared,
    /// Idempotency records acknowledged (or refined) but not yet in the index, by key.
    unindexed: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

/// A journal record: the key's length (u16, little-endian) and bytes, the idempotency
/// record's length (u32, little-endian) and bytes, then the journal entry. An entry moved from
/// an earlier journal has an empty key and no record.
fn encode_record(key: &str, idempotency: &[u8], entry: &[u8]) -> Vec<u8> {
    let key = &key.as_bytes()[..key.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(6 + key.len() + idempotency.len() + entry.len());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(idempotency.len() as u32).to_le_bytes());
    out.extend_from_slice(idempotency);
    out.extend_from_slice(entry);
    out
}

/// `(key, idempotency record, entry)` of a journal record.
fn decode_record(bytes: &[u8]) -> Result<(&str, &[u8], &[u8])> {
    let corrupt = || StoreError::Corrupt {
        table: "journal",
        message: "a truncated record".into(),
    };
    let key_len = usize::from(u16::from_le_bytes(
        bytes
            .get(..2)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ));
    let key = bytes.get(2..2 + key_len).ok_or_else(corrupt)?;
    let at = 2 + key_len;
    let record_len = u32::from_le_bytes(
        bytes
            .get(at..at + 4)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ) as usize;
    let record = bytes.get(at + 4..at + 4 + record_len).ok_or_else(corrupt)?;
    let entry = bytes.get(at + 4 + record_len..).ok_or_else(corrupt)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?;
    Ok((key, record, entry))
}

impl Log {
    /// Opens (or creates) the log: fjall in the directory `dir`, the journal's segments in
    /// `segments` beside it. Moves a journal kept by an earlier version into the segments and
    /// indexes the records the index had not reached.
    pub(super) fn open(dir: &Path, segments: &Path) -> Result<Log> {
        // Its flush and compaction worker starts here and inherits the idle I/O class.
        let db = background::open_in_background(|| {
            Database::builder(dir)
                // The indexer says when its batches go to the operating system.
                .manual_journal_persist(true)
                // Flushes and compactions in the background.
                .worker_threads(1)
                // Bounded memory, and a bounded journal to replay at start.
                .cache_size(CACHE)
                .max_journaling_size(JOURNALING)
                .open()
        })
        .map_err(log_error)?;
        let keyspace = |name| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE)
            })
            .map_err(log_error)
        };
        let segments = Segments::open(segments)?;
        let log = Log {
            idempotency: keyspace("idempotency")?,
            expiry: keyspace("expiry")?,
            reader: segments.shared(),
            segments: Arc::new(Mutex::new(segments)),
            unindexed: Arc::default(),
            db,
        };
        log.move_old_journal()?;
        log.reindex()?;
        Ok(log)
    }

    /// Copies the fjall keyspace `journal` of an earlier version into the segments, then drops
    /// it. Safe to repeat after a crash: positions the segments hold are skipped.
    fn move_old_journal(&self) -> Result<()> {
        if !self.db.keyspace_exists("journal") {
            return Ok(());
        }
        let old = self
            .db
            .keyspace("journal", KeyspaceCreateOptions::default)
            .map_err(log_error)?;
        let mut moved = 0;
        loop {
            let head = self.reader.head();
            let mut chunk = Vec::new();
            for guard in old.range((head + 1).to_be_bytes()..).take(REINDEX_BATCH) {
                let (key, value) = guard.into_inner().map_err(log_error)?;
                chunk.push((position_of(&key)?, encode_record("", &[], &value)));
            }
            let Some(&(first, _)) = chunk.first() else {
                break;
            };
            let mut segments = self.segments.lock().map_err(log_error)?;
            let from = (segments.head() == 0).then_some(first);
            segments.append(from, chunk.iter().map(|(_, bytes)| bytes.as_slice()))?;
            moved += chunk.len();
        }
        // Every moved entry's idempotency record is already in the index.
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.idempotency, INDEXED, self.reader.head().to_be_bytes());
        batch.commit().map_err(log_error)?;
        tracing::info!(
            entries = moved,
            "moved the journal from fjall into segment files"
        );
        self.db.delete_keyspace(old).map_err(log_error)
    }

    /// Indexes the idempotency records of the journal after [`INDEXED`].
    fn reindex(&self) -> Result<()> {
        let mut indexed = match self.idempotency.get(INDEXED).map_err(log_error)? {
            Some(bytes) => position_of(&bytes)?,
            None => 0,
        };
        let head = self.reader.head();
        let behind = head.saturating_sub(indexed);
        while indexed < head {
            let records = self.reader.read(indexed + 1, REINDEX_BATCH)?;
            let Some(&(last, _)) = records.last() else {
                break;
            };
            let mut batch = self.db.batch();
            for (position, bytes) in &records {
                let (key, record, _) = decode_record(bytes)?;
                if !key.is_empty() {
                    let expires_ms = IdempotencyRecord::decode(record)?.expires_ms;
                    batch.insert(&self.expiry, expiry_key(expires_ms, key), []);
                    batch.insert(&self.idempotency, key, in_journal(*position, expires_ms));
                }
            }
            batch.insert(&self.idempotency, INDEXED, last.to_be_bytes());
            batch.commit().map_err(log_error)?;
            indexed = last;
        }
        if behind > 0 {
            self.db.persist(PersistMode::SyncAll).map_err(log_error)?;
            tracing::info!(
                records = behind,
                "indexed idempotency keys the index had not reached"
            );
        }
        Ok(())
    }

    /// The last journal position, 0 when the journal is empty.
    pub(super) fn head(&self) -> Result<Position> {
        Ok(self.reader.head())
    }

    /// Up to `max` entries from position `from` on.
    pub(super) fn read(&self, from: Position, max: usize) -> Result<Vec<(Position, JournalEntry)>> {
        let mut out = Vec::new();
        for (position, bytes) in self.reader.read(from, max)? {
            let (_, _, entry) = decode_record(&bytes)?;
            out.push((position, decode("journal", entry)?));
        }
        Ok(out)
    }

    /// The last `n` entries, newest first.
    pub(super) fn newest(&self, n: usize) -> Result<Vec<JournalEntry>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let head = self.reader.head();
        let from = head.saturating_sub(n as u64 - 1).max(1);
        let mut entries: Vec<JournalEntry> = self
            .read(from, n)?
            .into_iter()
            .map(|(_, entry)| entry)
            .collect();
        entries.reverse();
        Ok(entries)
    }

    /// What is stored under a scoped idempotency key: the answer, or where the journal has it.
    pub(super) fn lookup(&self, key: &str) -> Result<Option<Found>> {
        let pending = self.unindexed.lock().map_err(log_error)?.get(key).cloned();
        match pending {
            Some(bytes) => {
                IdempotencyRecord::decode(&bytes).map(|record| Some(Found::Record(record)))
            }
            None => self
                .idempotency
                .get(key)
                .map_err(log_error)?
                .map(|bytes| Found::parse(&bytes))
                .transpose(),
        }
    }

    /// The idempotency record journaled at `position` under `key` (reads the journal's files).
    pub(super) fn record_at(&self, key: &str, position: Position) -> Result<IdempotencyRecord> {
        let corrupt = |message: String| StoreError::Corrupt {
            table: "idempotency",
            message,
        };
        let read = self.reader.read(position, 1)?;
        let Some((_, bytes)) = read.first().filter(|(at, _)| *at == position) else {
            return Err(corrupt(format!(
                "a key pointing past the journal, at {position}"
            )));
        };
        let (journaled, record, _) = decode_record(bytes)?;
        if journaled != key {
            return Err(corrupt(format!(
                "a key pointing at another's record, at {position}"
            )));
        }
        IdempotencyRecord::decode(record)
    }

    /// Writes rows of an earlier database (journal entries, idempotency records with their
    /// expiry) and persists them: the import of a migration, safe to repeat.
    pub(super) fn import(
        &self,
        journal: Vec<(Position, Vec<u8>)>,
        idempotency: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        {
            let mut segments = self.segments.lock().map_err(log_error)?;
            let head = segments.head();
            let records: Vec<(Position, Vec<u8>)> = journal
                .into_iter()
                .filter(|(position, _)| *position > head)
                .map(|(position, bytes)| (position, encode_record("", &[], &bytes)))
                .collect();
            if let Some(&(first, _)) = records.first() {
                if records
                    .iter()
                    .zip(first..)
                    .any(|((position, _), expected)| *position != expected)
                {
                    return Err(StoreError::Corrupt {
                        table: "journal",
                        message: "positions with a gap".into(),
                    });
                }
                let from = (head == 0).then_some(first);
                segments.append(from, records.iter().map(|(_, bytes)| bytes.as_slice()))?;
            }
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for (key, bytes) in idempotency {
            let expires_ms = IdempotencyRecord::decode(&bytes)?.expires_ms;
            batch.insert(&self.expiry, expiry_key(expires_ms, &key), []);
            batch.insert(&self.idempotency, key, bytes);
        }
        batch.insert(&self.idempotency, INDEXED, self.reader.head().to_be_bytes());
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
    /// A refined answer under a key already journaled.
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
    /// Stop after writing and indexing everything queued before this.
    Close { reply: oneshot::Sender<Result<()>> },
}

/// One key's idempotency record, for the index.
struct Put {
    key: String,
    /// The record, as lookups find it in memory until it is indexed.
    record: Vec<u8>,
    expires_ms: u64,
    /// Where the journal holds it; none for a refined answer, which the index holds whole.
    position: Option<Position>,
}

impl Put {
    fn value(&self) -> Vec<u8> {
        match self.position {
            Some(position) => in_journal(position, self.expires_ms),
            None => self.record.clone(),
        }
    }
}

/// What the indexer does, in the order the writer hands it over.
enum IndexOp {
    /// Idempotency records to put in the index; with the journal position they reach, when
    /// they come from an append.
    Put {
        records: Vec<Put>,
        reaching: Option<Position>,
    },
    Sweep {
        now_ms: u64,
        reply: oneshot::Sender<Result<usize>>,
    },
    Close {
        reply: std::sync::mpsc::Sender<Result<()>>,
    },
}

/// The writer thread: group commit until closed. It runs the indexer beside it.
pub(super) fn write_loop(
    log: &Log,
    mut queue: mpsc::Receiver<LogOp>,
    head: watch::Sender<Position>,
    tail: &Mutex<VecDeque<(Position, JournalEntry)>>,
    ttl: Duration,
    metrics: &StoreMetrics,
) {
    let (index, index_queue) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let indexer = std::thread::Builder::new()
            .name("oms-journal-idx".into())
            .spawn_scoped(scope, || {
                background::yield_the_disk();
                index_loop(log, index_queue)
            });
        if let Err(error) = indexer {
            tracing::error!(%error, "cannot start the idempotency indexer");
            return;
        }
        let mut closing = false;
        while !closing && let Some(first) = queue.blocking_recv() {
            let ops = gather(
                first,
                MAX_BATCH,
                |op| matches!(op, LogOp::Close { .. }),
                || queue.try_recv().ok(),
            );
            closing = matches!(ops.last(), Some(LogOp::Close { .. }));
            write_ops(log, ops, &index, &head, tail, ttl, metrics);
        }
    });
}

/// Appends the batch's entries with one sync, answers, and hands the records to the indexer.
fn write_ops(
    log: &Log,
    mut ops: Vec<LogOp>,
    index: &std::sync::mpsc::Sender<IndexOp>,
    head: &watch::Sender<Position>,
    tail: &Mutex<VecDeque<(Position, JournalEntry)>>,
    ttl: Duration,
    metrics: &StoreMetrics,
) {
    let started = Instant::now();
    let expires_ms = now_ms() + ttl.as_millis() as u64;
    let appended = append(log, &ops, expires_ms);
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    let Appended {
        last,
        mut records,
        bytes,
    } = match appended {
        Ok(appended) => appended,
        Err(error) => {
            tracing::error!(%error, operations = ops.len(), "journal write failed");
            for op in ops {
                fail(op, &error);
            }
            return;
        }
    };
    let count = records.len() as u64;
    if count > 0 {
        metrics.commits.inc();
        metrics.fsyncs.inc();
        metrics.appended.inc_by(count);
        metrics.bytes.inc_by(bytes);
        metrics.batch_size.observe(ops.len() as f64);
        metrics.head.set(last as i64);
    }
    for op in &ops {
        if let LogOp::Complete {
            key,
            fingerprint,
            response,
            ..
        } = op
        {
            records.push(Put {
                key: key.clone(),
                record: IdempotencyRecord::encode(fingerprint, response, expires_ms),
                expires_ms,
                position: None,
            });
        }
    }
    if !records.is_empty() {
        // Visible to lookups before anyone hears of the append.
        if let Ok(mut unindexed) = log.unindexed.lock() {
            for put in &records {
                unindexed.insert(put.key.clone(), put.record.clone());
            }
        }
        let reaching = (count > 0).then_some(last);
        let _ = index.send(IndexOp::Put { records, reaching });
    }
    if let Ok(mut tail) = tail.lock() {
        let mut position = last - count;
        for op in &mut ops {
            if let LogOp::Append { items, .. } = op {
                for item in items {
                    position += 1;
                    if let Some(entry) = item.entry.take() {
                        if tail.len() == TAIL {
                            tail.pop_front();
                        }
                        tail.push_back((position, *entry));
                    }
                }
            }
        }
    }
    // Readers may look once the batch is written, before the callers hear of it.
    head.send_if_modified(|head| std::mem::replace(head, last) != last);
    let mut position = last - count;
    for op in ops {
        match op {
            LogOp::Append { items, reply } => {
                let positions = (position + 1..=position + items.len() as u64).collect();
                position += items.len() as u64;
                let _ = reply.send(Ok(positions));
            }
            LogOp::Complete { reply, .. } => drop(reply.send(Ok(()))),
            LogOp::Sweep { now_ms, reply } => drop(index.send(IndexOp::Sweep { now_ms, reply })),
            LogOp::Close { reply } => {
                let (closed, done) = std::sync::mpsc::channel();
                let _ = index.send(IndexOp::Close { reply: closed });
                let _ = reply.send(done.recv().unwrap_or(Err(StoreError::Closed)));
            }
        }
    }
}

fn fail(op: LogOp, error: &StoreError) {
    let error = || log_error(error);
    match op {
        LogOp::Append { reply, .. } => drop(reply.send(Err(error()))),
        LogOp::Complete { reply, .. } | LogOp::Close { reply } => drop(reply.send(Err(error()))),
        LogOp::Sweep { reply, .. } => drop(reply.send(Err(error()))),
    }
}

/// What one append wrote.
struct Appended {
    /// The last journal position.
    last: Position,
    /// Each entry's idempotency record, in order.
    records: Vec<Put>,
    bytes: u64,
}

/// Appends the entries of `ops` to the segments, with one sync.
fn append(log: &Log, ops: &[LogOp], expires_ms: u64) -> Result<Appended> {
    let mut segments = log.segments.lock().map_err(log_error)?;
    let mut position = segments.head();
    let mut records = Vec::new();
    let mut payloads = Vec::new();
    for op in ops {
        let LogOp::Append { items, .. } = op else {
            continue;
        };
        for item in items {
            position += 1;
            let ack = Ack {
                position: local(position),
                ..item.ack.clone()
            };
            // Cannot fail for our plain type; if it did, the whole batch is refused (a 503),
            // never stored with an empty answer.
            let record = IdempotencyRecord::encode(&item.fingerprint, &ack.response()?, expires_ms);
            payloads.push(encode_record(&item.key, &record, &item.bytes));
            records.push(Put {
                key: item.key.clone(),
                record,
                expires_ms,
                position: Some(position),
            });
        }
    }
    let (last, bytes) = segments.append(None, payloads.iter().map(Vec::as_slice))?;
    Ok(Appended {
        last,
        records,
        bytes,
    })
}

/// The indexer thread: puts records in fjall, in the order the writer handed them over.
fn index_loop(log: &Log, queue: std::sync::mpsc::Receiver<IndexOp>) {
    let mut synced = Instant::now();
    while let Ok(first) = queue.recv() {
        let ops = gather(
            first,
            MAX_BATCH,
            |op| matches!(op, IndexOp::Close { .. }),
            || queue.try_recv().ok(),
        );
        let closing = matches!(ops.last(), Some(IndexOp::Close { .. }));
        if let Err(error) = index_batch(log, ops) {
            // The records stay in memory, and are indexed again from the journal at start.
            tracing::error!(%error, "idempotency index write failed");
        }
        if closing {
            return;
        }
        if synced.elapsed() >= INDEX_SYNC_EVERY {
            if let Err(error) = log.db.persist(PersistMode::SyncData) {
                tracing::warn!(%error, "idempotency index sync failed");
            }
            synced = Instant::now();
        }
    }
}

fn index_batch(log: &Log, ops: Vec<IndexOp>) -> Result<()> {
    let mut batch = log.db.batch().durability(Some(PersistMode::Buffer));
    let mut reaching = None;
    let mut sweeps = Vec::new();
    let mut close = None;
    for op in &ops {
        match op {
            IndexOp::Put {
                records,
                reaching: to,
            } => {
                for put in records {
                    batch.insert(&log.expiry, expiry_key(put.expires_ms, &put.key), []);
                    batch.insert(&log.idempotency, put.key.as_str(), put.value());
                }
                reaching = to.or(reaching);
            }
            IndexOp::Sweep { now_ms, .. } => sweeps.push(sweep(log, &mut batch, *now_ms)),
            IndexOp::Close { .. } => {}
        }
    }
    if let Some(position) = reaching {
        batch.insert(&log.idempotency, INDEXED, position.to_be_bytes());
    }
    let committed = batch.commit().map_err(log_error);
    if committed.is_ok()
        && let Ok(mut unindexed) = log.unindexed.lock()
    {
        for op in &ops {
            if let IndexOp::Put { records, .. } = op {
                for put in records {
                    // A later record under the key waits for its own batch.
                    if unindexed.get(&put.key) == Some(&put.record) {
                        unindexed.remove(&put.key);
                    }
                }
            }
        }
    }
    let mut sweeps = sweeps.into_iter();
    for op in ops {
        match op {
            IndexOp::Sweep { reply, .. } => {
                let swept = sweeps.next().unwrap_or(Ok(0));
                let _ = reply.send(match &committed {
                    Ok(()) => swept,
                    Err(error) => Err(log_error(error)),
                });
            }
            IndexOp::Close { reply } => close = Some(reply),
            IndexOp::Put { .. } => {}
        }
    }
    if let Some(reply) = close {
        let persisted = match &committed {
            Ok(()) => log.db.persist(PersistMode::SyncAll).map_err(log_error),
            Err(error) => Err(log_error(error)),
        };
        let _ = reply.send(persisted);
    }
    committed
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
            Some(bytes) => Found::parse(&bytes).map_or(true, |found| found.expires_ms() <= now_ms),
            None => false,
        };
        if stale {
            batch.remove(&log.idempotency, key);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored answer under a scoped idempotency key, as `Embedded` resolves it.
    fn response(log: &Log, key: &str) -> Result<Option<IdempotencyRecord>> {
        match log.lookup(key)? {
            None => Ok(None),
            Some(Found::Record(record)) => Ok(Some(record)),
            Some(Found::InJournal { position, .. }) => log.record_at(key, position).map(Some),
        }
    }

    fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (journal, segments) = (dir.path().join("journal"), dir.path().join("segments"));
        (dir, journal, segments)
    }

    fn answer(body: &str) -> StoredResponse {
        StoredResponse {
            status: 202,
            body: body.into(),
        }
    }

    /// An acknowledged append whose index write never reached the disk (a crash right after
    /// the answer) is indexed again from the journal at start.
    #[test]
    fn records_the_index_had_not_reached_are_indexed_at_start() {
        let (_dir, journal, segments) = dirs();
        let expires_ms = now_ms() + 60_000;
        {
            let log = Log::open(&journal, &segments).unwrap();
            let record = IdempotencyRecord::encode("f", &answer("first"), expires_ms);
            let payload = encode_record("desk\u{1f}k-1", &record, b"entry");
            log.segments
                .lock()
                .unwrap()
                .append(None, [payload.as_slice()])
                .unwrap();
            // Found before it is indexed: the writer puts it in memory before answering.
            log.unindexed
                .lock()
                .unwrap()
                .insert("desk\u{1f}k-1".into(), record);
            assert_eq!(
                response(&log, "desk\u{1f}k-1").unwrap().unwrap().response,
                answer("first")
            );
            assert!(log.idempotency.get("desk\u{1f}k-1").unwrap().is_none());
        }
        let log = Log::open(&journal, &segments).unwrap();
        assert!(log.unindexed.lock().unwrap().is_empty());
        let found = response(&log, "desk\u{1f}k-1").unwrap().unwrap();
        assert_eq!(
            (found.fingerprint.as_str(), found.response),
            ("f", answer("first"))
        );
        assert_eq!(
            log.idempotency.get(INDEXED).unwrap().as_deref(),
            Some(&1u64.to_be_bytes()[..])
        );
        assert_eq!(log.head().unwrap(), 1);
        // Indexed as a pointer into the journal, not as the record.
        let value = log.idempotency.get("desk\u{1f}k-1").unwrap().unwrap();
        assert_eq!(*value, in_journal(1, expires_ms));
    }

    /// An append's record is indexed as its journal position, a refined answer whole; lookups
    /// read the first from the journal, and the sweep knows both expiries.
    #[test]
    fn the_index_points_into_the_journal_and_holds_refined_answers_whole() {
        let (_dir, journal, segments) = dirs();
        let log = Log::open(&journal, &segments).unwrap();
        let (soon, later) = (now_ms() + 1_000, now_ms() + 60_000);
        let mut puts = Vec::new();
        for (n, expires_ms) in [(1, soon), (2, later)] {
            let key = format!("desk\u{1f}k-{n}");
            let record = IdempotencyRecord::encode("f", &answer(&format!("ack {n}")), expires_ms);
            let payload = encode_record(&key, &record, b"entry");
            let (position, _) = log
                .segments
                .lock()
                .unwrap()
                .append(None, [payload.as_slice()])
                .unwrap();
            puts.push(Put {
                key,
                record,
                expires_ms,
                position: Some(position),
            });
        }
        index_batch(
            &log,
            vec![IndexOp::Put {
                records: puts,
                reaching: Some(2),
            }],
        )
        .unwrap();
        let stored = |key: &str| log.idempotency.get(key).unwrap().unwrap().to_vec();
        assert_eq!(stored("desk\u{1f}k-2"), in_journal(2, later));
        assert!(matches!(
            log.lookup("desk\u{1f}k-2").unwrap(),
            Some(Found::InJournal { position: 2, .. })
        ));
        assert_eq!(
            response(&log, "desk\u{1f}k-2").unwrap().unwrap().response,
            answer("ack 2")
        );
        // A pointer names its key's record, never another's.
        assert!(log.record_at("desk\u{1f}k-2", 1).is_err());
        assert!(log.record_at("desk\u{1f}k-2", 3).is_err());

        // The order's state after `Prefer: wait` replaces the pointer, whole.
        let refined = IdempotencyRecord::encode("f", &answer("filled"), later);
        index_batch(
            &log,
            vec![IndexOp::Put {
                records: vec![Put {
                    key: "desk\u{1f}k-2".into(),
                    record: refined.clone(),
                    expires_ms: later,
                    position: None,
                }],
                reaching: None,
            }],
        )
        .unwrap();
        assert_eq!(stored("desk\u{1f}k-2"), refined);
        assert_eq!(
            response(&log, "desk\u{1f}k-2").unwrap().unwrap().response,
            answer("filled")
        );

        // The sweep reads the expiry from the pointer: k-1 goes, k-2 stays.
        let mut batch = log.db.batch();
        assert_eq!(sweep(&log, &mut batch, soon + 1).unwrap(), 1);
        batch.commit().unwrap();
        assert!(log.lookup("desk\u{1f}k-1").unwrap().is_none());
        assert!(log.lookup("desk\u{1f}k-2").unwrap().is_some());
    }

    /// The journal of an earlier version, a fjall keyspace, moves into the segments; its
    /// idempotency records stay where they are.
    #[test]
    fn a_journal_kept_in_fjall_moves_into_the_segments() {
        let (_dir, journal, segments) = dirs();
        let record = IdempotencyRecord::encode("f", &answer("old"), now_ms() + 60_000);
        {
            let db = Database::builder(&journal).open().unwrap();
            let old = db
                .keyspace("journal", KeyspaceCreateOptions::default)
                .unwrap();
            let idempotency = db
                .keyspace("idempotency", KeyspaceCreateOptions::default)
                .unwrap();
            for position in 1..=3u64 {
                old.insert(position.to_be_bytes(), format!("entry {position}"))
                    .unwrap();
            }
            idempotency
                .insert("desk\u{1f}k-1", record.as_slice())
                .unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let log = Log::open(&journal, &segments).unwrap();
        assert_eq!(log.head().unwrap(), 3);
        let moved = log.reader.read(1, 10).unwrap();
        let entries: Vec<&[u8]> = moved
            .iter()
            .map(|(_, bytes)| decode_record(bytes).unwrap().2)
            .collect();
        assert_eq!(entries, [b"entry 1".as_slice(), b"entry 2", b"entry 3"]);
        assert!(!log.db.keyspace_exists("journal"));
        assert_eq!(
            response(&log, "desk\u{1f}k-1").unwrap().unwrap().response,
            answer("old")
        );
        drop(log);
        // Opening again moves nothing twice.
        assert_eq!(Log::open(&journal, &segments).unwrap().head().unwrap(), 3);
    }

    #[test]
    fn journal_records_round_trip() {
        let bytes = encode_record("desk\u{1f}k", b"record", b"entry");
        assert_eq!(
            decode_record(&bytes).unwrap(),
            ("desk\u{1f}k", &b"record"[..], &b"entry"[..])
        );
        assert_eq!(
            decode_record(&encode_record("", &[], b"e")).unwrap(),
            ("", &[][..], &b"e"[..])
        );
        assert!(decode_record(&bytes[..5]).is_err());
    }
}
