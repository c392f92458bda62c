//! Single-node processing: the journal, in order, through one actor per book, into the read
//! projection.
//!
//! ```text
//! journal ──reader──▶ book actor (one per instrument, bounded mailbox) ──▶ projector ──▶ OrderStore
//! ```
//! The reader routes each command to the actor of its symbol. An actor owns its [`Book`] and is
//! the only code that touches it; the per-account risk state (open-order counts) lives in the
//! book. The projector folds events into order states and trades, writes them, and wakes the
//! requests waiting for that command (`Prefer: wait`).
//!
//! # Recovery
//! Each book starts from its latest snapshot, which records the journal position it includes;
//! the reader starts after the oldest of those positions and each actor skips what its snapshot
//! already holds. The projector writes a snapshot in the same transaction as the events before
//! it (see [`crate::store::embedded`]), so nothing a snapshot includes is missing from the
//! projection, and replayed events are ignored by the projection's sequence check.

use super::{Projection, unroutable};
use crate::metrics::Metrics;
use crate::store::{JournalEntry, JournalReader, OrderStore, Origin, Position, StoreError};
use oms_core::{Book, Depth, EventRecord, Instrument, RiskLimits, Symbol};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Commands queued per book before the reader waits: the backpressure bound.
const MAILBOX: usize = 1024;
/// Outputs queued for the projector.
const PROJECTOR_QUEUE: usize = 4096;
/// Journal entries read at once.
const READ_BATCH: usize = 512;

/// Why processing could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A snapshot does not fit the configured instrument.
    #[error("cannot restore book {symbol}: {source}")]
    Restore {
        /// The instrument.
        symbol: Symbol,
        /// Why.
        source: oms_core::RestoreError,
    },
    /// The risk limits do not apply to an instrument.
    #[error(transparent)]
    Risk(#[from] oms_core::RiskError),
}

/// Requests waiting for their command to be processed, by idempotency scope.
#[derive(Clone, Default)]
pub struct Waiters {
    inner: Arc<Mutex<HashMap<Origin, oneshot::Sender<()>>>>,
}

impl Waiters {
    /// Registers interest in the command written by `origin`; register before appending.
    pub fn register(&self, origin: &Origin) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut map) = self.inner.lock() {
            map.insert(origin.clone(), tx);
        }
        rx
    }

    /// Drops interest (the request stopped waiting).
    pub fn forget(&self, origin: &Origin) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(origin);
        }
    }

    fn wake(&self, origin: &Origin) {
        let waiter = self
            .inner
            .lock()
            .ok()
            .and_then(|mut map| map.remove(origin));
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }
}

enum Query {
    Depth {
        levels: usize,
        reply: oneshot::Sender<Depth>,
    },
}

/// A running book actor, for queries.
#[derive(Clone)]
pub struct BookHandle {
    queries: mpsc::Sender<Query>,
}

impl BookHandle {
    /// Aggregated depth, as of the last command the actor processed.
    pub async fn depth(&self, levels: usize) -> Option<Depth> {
        let (reply, answer) = oneshot::channel();
        self.queries
            .send(Query::Depth { levels, reply })
            .await
            .ok()?;
        answer.await.ok()
    }
}

/// What a book actor hands the projector.
enum Output {
    Processed {
        position: Position,
        origin: Origin,
        records: Vec<EventRecord>,
        snapshot: Option<oms_core::BookSnapshot>,
    },
    /// A command for a symbol that is not configured (the configuration changed since it was
    /// journaled): a new order is recorded as rejected.
    Unroutable { entry: JournalEntry },
}

/// The running pipeline.
pub struct Pipeline {
    /// Query handles of the book actors, by symbol.
    pub books: Arc<BTreeMap<Symbol, BookHandle>>,
    /// Requests waiting for processing.
    pub waiters: Waiters,
    tasks: JoinSet<()>,
}

impl Pipeline {
    /// Restores every book and starts the reader, the actors and the projector.
    pub async fn start(
        instruments: &[Instrument],
        limits: &RiskLimits,
        journal: Arc<dyn JournalReader>,
        store: Arc<dyn OrderStore>,
        snapshot_every: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, Error> {
        let mut snapshots: HashMap<Symbol, (Position, oms_core::BookSnapshot)> = store
            .snapshots()
            .await?
            .into_iter()
            .map(|(position, snapshot)| (snapshot.symbol.clone(), (position, snapshot)))
            .collect();
        let waiters = Waiters::default();
        let (output, outputs) = mpsc::channel(PROJECTOR_QUEUE);
        let mut tasks = JoinSet::new();
        let mut routes = HashMap::new();
        let mut books = BTreeMap::new();
        let mut start = Position::MAX;
        for instrument in instruments {
            let symbol = instrument.symbol().clone();
            let (book, done) = match snapshots.remove(&symbol) {
                Some((position, snapshot)) => {
                    let book =
                        Book::restore(instrument.clone(), limits, snapshot).map_err(|source| {
                            Error::Restore {
                                symbol: symbol.clone(),
                                source,
                            }
                        })?;
                    (book, position)
                }
                None => (Book::new(instrument.clone(), limits)?, 0),
            };
            tracing::info!(%symbol, from = done, resting = book.open_orders(), "book restored");
            start = start.min(done);
            let (commands, mailbox) = mpsc::channel(MAILBOX);
            let (queries, query_box) = mpsc::channel(64);
            let actor = BookActor {
                book,
                done,
                since_snapshot: 0,
                snapshot_every,
                output: output.clone(),
                metrics: metrics.clone(),
            };
            tasks.spawn(actor.run(mailbox, query_box));
            routes.insert(symbol.clone(), commands);
            books.insert(symbol, BookHandle { queries });
        }
        let start = if start == Position::MAX { 0 } else { start };
        tasks.spawn(read_journal(
            journal,
            start + 1,
            routes,
            output,
            metrics.clone(),
        ));
        tasks.spawn(project(outputs, store, waiters.clone(), metrics));
        Ok(Pipeline {
            books: Arc::new(books),
            waiters,
            tasks,
        })
    }

    /// Stops every task.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn read_journal(
    journal: Arc<dyn JournalReader>,
    mut next: Position,
    routes: HashMap<Symbol, mpsc::Sender<(Position, JournalEntry)>>,
    output: mpsc::Sender<Output>,
    metrics: Arc<Metrics>,
) {
    loop {
        let entries = match journal.read(next, READ_BATCH).await {
            Ok(entries) => entries,
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::error!(%error, position = next, "journal read failed; retrying");
                metrics.processing.errors.inc();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for (position, entry) in entries {
            next = position + 1;
            let route = entry
                .command
                .action
                .symbol()
                .and_then(|symbol| routes.get(symbol));
            let sent = match route {
                Some(route) => route.send((position, entry)).await.is_ok(),
                None => output.send(Output::Unroutable { entry }).await.is_ok(),
            };
            if !sent {
                return;
            }
            metrics.processing.read_position.set(position as i64);
        }
    }
}

struct BookActor {
    book: Book,
    /// The last journal position this book has applied.
    done: Position,
    since_snapshot: u64,
    snapshot_every: u64,
    output: mpsc::Sender<Output>,
    metrics: Arc<Metrics>,
}

impl BookActor {
    async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<(Position, JournalEntry)>,
        mut queries: mpsc::Receiver<Query>,
    ) {
        loop {
            tokio::select! {
                biased;
                Some(query) = queries.recv() => self.answer(query),
                command = mailbox.recv() => {
                    let Some((position, entry)) = command else { return };
                    if !self.apply(position, entry).await {
                        return;
                    }
                }
            }
        }
    }

    fn answer(&self, query: Query) {
        match query {
            Query::Depth { levels, reply } => {
                let _ = reply.send(self.book.depth(levels));
            }
        }
    }

    /// Applies one command; false once the projector is gone.
    async fn apply(&mut self, position: Position, entry: JournalEntry) -> bool {
        if position <= self.done {
            return true; // already in the snapshot this book was restored from
        }
        let mut records = Vec::new();
        self.book.apply(&entry.command, &mut records);
        self.done = position;
        self.since_snapshot += 1;
        self.metrics.processing.commands.inc();
        self.metrics.processing.events.inc_by(records.len() as u64);
        let snapshot = (self.since_snapshot >= self.snapshot_every).then(|| {
            self.since_snapshot = 0;
            self.book.snapshot()
        });
        self.output
            .send(Output::Processed {
                position,
                origin: entry.origin,
                records,
                snapshot,
            })
            .await
            .is_ok()
    }
}

async fn project(
    mut outputs: mpsc::Receiver<Output>,
    store: Arc<dyn OrderStore>,
    waiters: Waiters,
    metrics: Arc<Metrics>,
) {
    let mut projection = Projection::new(store.clone());
    let mut buffer = Vec::new();
    while outputs.recv_many(&mut buffer, 512).await > 0 {
        let mut snapshots = Vec::new();
        let mut origins = Vec::with_capacity(buffer.len());
        for output in buffer.drain(..) {
            let (records, origin) = match output {
                Output::Processed {
                    position,
                    origin,
                    records,
                    snapshot,
                } => {
                    snapshots.extend(snapshot.map(|snapshot| (position, snapshot)));
                    (records, origin)
                }
                Output::Unroutable { entry, .. } => (unroutable(&entry), entry.origin),
            };
            while let Err(error) = projection.fold(&records).await {
                tracing::error!(%error, "projection read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            origins.push(origin);
        }
        let mut batch = projection.take_batch();
        batch.snapshots = snapshots;
        let started = std::time::Instant::now();
        metrics
            .processing
            .projected_orders
            .inc_by(batch.orders.len() as u64);
        while let Err(error) = store.apply(batch.clone()).await {
            tracing::error!(%error, "projection write failed; retrying");
            metrics.processing.errors.inc();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        metrics
            .processing
            .projection_seconds
            .observe(started.elapsed().as_secs_f64());
        for origin in &origins {
            waiters.wake(origin);
        }
    }
}
