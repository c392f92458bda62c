//! Single-node processing: the journal, in order, through the engine (funds and every book),
//! into the read projection.
//!
//! ```text
//! journal ──reader──▶ engine actor (funds + books, bounded mailbox) ──▶ projector ──▶ stores
//! ```
//! The actor owns the [`Engine`] and is the only code that touches it: each command is held
//! for, matched and settled before the next (see `oms_core::engine`). The projector folds events
//! into order states and trades, adds ledger entries, balances and transfers, writes them, and
//! wakes the requests waiting for that command (`Prefer: wait`).
//!
//! One actor for every book: funds are shared by all of an account's orders, and finishing each
//! command before the next is what makes the state a function of the journal. The engine runs
//! several million commands a second on one core (`cargo bench -p oms-core --bench matching`),
//! far beyond what the HTTP edge delivers.
//!
//! # Recovery
//! The engine starts from its latest snapshot, which records the journal position it includes;
//! the reader starts right after it. The projector writes a snapshot in the same transaction as
//! the outputs before it (see [`crate::store::embedded`]), so nothing a snapshot includes is
//! missing from the projection, and replayed outputs are ignored by the projection's sequence
//! checks.

use super::{Projection, unroutable};
use crate::metrics::Metrics;
use crate::store::{JournalEntry, JournalReader, OrderStore, Origin, Position, StoreError};
use oms_core::{
    Depth, Engine, EngineSnapshot, Instrument, Output as EngineOutput, RiskLimits, Symbol,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Commands queued for the engine before the reader waits: the backpressure bound.
const MAILBOX: usize = 1024;
/// Outputs queued for the projector.
const PROJECTOR_QUEUE: usize = 4096;
/// Journal entries read at once.
const READ_BATCH: usize = 512;
/// Most commands' outputs written to the projection in one transaction.
const PROJECT_BATCH: usize = 2048;
/// A projection batch at least this large means load: the next one waits for more.
const BUSY: usize = 32;
/// How long a projection batch under load waits for more outputs.
const GATHER: Duration = Duration::from_millis(3);

/// Why processing could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine cannot be built, or its snapshot does not fit the configuration.
    #[error("cannot start the engine: {0}")]
    Engine(#[from] oms_core::EngineError),
}

/// How the pipeline runs.
pub struct Options {
    /// Commands between engine snapshots.
    pub snapshot_every: u64,
    /// Fault injection for tests: nothing is written to the projection.
    pub hold_projection: bool,
    /// Where the projector sends stream updates, if anywhere.
    pub streams: Option<Streams>,
}

/// What a waiting request learns of its processed command, beyond the states it can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Orders the command canceled (a mass cancel's count).
    pub canceled: usize,
    /// Why a cancel or amendment was refused (the order is unchanged then).
    pub refused: Option<oms_core::Reject>,
}

impl Outcome {
    /// The outcome of a command that decided `events`.
    pub fn of(events: &[oms_core::EventRecord]) -> Outcome {
        let mut outcome = Outcome::default();
        for record in events {
            match &record.event {
                oms_core::Event::Canceled { .. } => outcome.canceled += 1,
                oms_core::Event::CancelRejected { reject, .. }
                | oms_core::Event::AmendRejected { reject, .. } => {
                    outcome.refused.get_or_insert(*reject);
                }
                _ => {}
            }
        }
        outcome
    }
}

/// Requests waiting for their command to be processed, by idempotency scope.
#[derive(Clone, Default)]
pub struct Waiters {
    inner: Arc<Mutex<HashMap<Origin, oneshot::Sender<Outcome>>>>,
}

impl Waiters {
    /// Registers interest in the command written by `origin`; register before appending.
    pub fn register(&self, origin: &Origin) -> oneshot::Receiver<Outcome> {
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

    fn wake(&self, origin: &Origin, outcome: Outcome) {
        let waiter = self
            .inner
            .lock()
            .ok()
            .and_then(|mut map| map.remove(origin));
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
    }
}

enum Query {
    Depth {
        symbol: Symbol,
        levels: usize,
        reply: oneshot::Sender<Option<Depth>>,
    },
}

/// One book of the running engine, for queries.
#[derive(Clone)]
pub struct BookHandle {
    symbol: Symbol,
    queries: mpsc::Sender<Query>,
}

impl BookHandle {
    /// Aggregated depth, as of the last command the engine processed.
    pub async fn depth(&self, levels: usize) -> Option<Depth> {
        let (reply, answer) = oneshot::channel();
        self.queries
            .send(Query::Depth {
                symbol: self.symbol.clone(),
                levels,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }
}

/// What the engine actor hands the projector.
enum Output {
    Processed {
        position: Position,
        origin: Origin,
        output: EngineOutput,
        snapshot: Option<EngineSnapshot>,
    },
}

/// What the projector feeds the streams with (single-node: one source, the journal).
pub struct Streams {
    /// Folds outputs into messages.
    pub follower: crate::streams::follow::Follower,
    /// Where they go.
    pub hub: Arc<crate::streams::Hub>,
}

/// The running pipeline.
pub struct Pipeline {
    /// Query handles of the books, by symbol.
    pub books: Arc<BTreeMap<Symbol, BookHandle>>,
    /// Requests waiting for processing.
    pub waiters: Waiters,
    tasks: JoinSet<()>,
}

impl Pipeline {
    /// Restores the engine and starts the reader, the engine actor and the projector.
    pub async fn start(
        instruments: &[Instrument],
        limits: &RiskLimits,
        journal: Arc<dyn JournalReader>,
        store: Arc<dyn OrderStore>,
        snapshot: Option<(Position, EngineSnapshot)>,
        options: Options,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, Error> {
        let (engine, done) = match snapshot {
            Some((position, snapshot)) => {
                (Engine::restore(instruments, limits, &snapshot)?, position)
            }
            None => (Engine::new(instruments, limits)?, 0),
        };
        tracing::info!(
            from = done,
            resting = engine.books().map(|book| book.open_orders()).sum::<usize>(),
            "engine restored"
        );
        let waiters = Waiters::default();
        let pipeline_waiters = waiters.clone();
        let (output, mut outputs) = mpsc::channel(PROJECTOR_QUEUE);
        let (commands, mailbox) = mpsc::channel(MAILBOX);
        let (queries, query_box) = mpsc::channel(64);
        let books = instruments
            .iter()
            .map(|instrument| {
                let symbol = instrument.symbol().clone();
                let handle = BookHandle {
                    symbol: symbol.clone(),
                    queries: queries.clone(),
                };
                (symbol, handle)
            })
            .collect();
        let actor = EngineActor {
            engine,
            done,
            since_snapshot: 0,
            snapshot_every: options.snapshot_every,
            output,
            metrics: metrics.clone(),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(actor.run(mailbox, query_box));
        tasks.spawn(read_journal(journal, done + 1, commands, metrics.clone()));
        let store = (!options.hold_projection).then_some(store);
        let streams = options.streams;
        tasks.spawn(async move {
            match store {
                Some(store) => project(outputs, store, waiters, metrics, streams).await,
                // Outputs are dropped: the journal is all that survives.
                None => while outputs.recv().await.is_some() {},
            }
        });
        Ok(Pipeline {
            books: Arc::new(books),
            waiters: pipeline_waiters,
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
    engine: mpsc::Sender<(Position, JournalEntry)>,
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
            if engine.send((position, entry)).await.is_err() {
                return;
            }
            metrics.processing.read_position.set(position as i64);
        }
    }
}

struct EngineActor {
    engine: Engine,
    /// The last journal position the engine has applied.
    done: Position,
    since_snapshot: u64,
    snapshot_every: u64,
    output: mpsc::Sender<Output>,
    metrics: Arc<Metrics>,
}

impl EngineActor {
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
            Query::Depth {
                symbol,
                levels,
                reply,
            } => {
                let _ = reply.send(self.engine.book(&symbol).map(|book| book.depth(levels)));
            }
        }
    }

    /// Applies one command; false once the projector is gone.
    async fn apply(&mut self, position: Position, entry: JournalEntry) -> bool {
        if position <= self.done {
            return true; // already in the snapshot the engine was restored from
        }
        let configured = entry
            .command
            .action
            .symbol()
            .is_none_or(|symbol| self.engine.book(symbol).is_some());
        let output = if configured {
            let mut output = EngineOutput::default();
            self.engine.apply(&entry.command, &mut output);
            output
        } else {
            EngineOutput {
                events: unroutable(&entry),
                ..EngineOutput::default()
            }
        };
        self.done = position;
        self.since_snapshot += 1;
        self.metrics.processing.commands.inc();
        self.metrics
            .processing
            .events
            .inc_by(output.events.len() as u64);
        let due = super::snapshot_due(
            self.since_snapshot,
            self.snapshot_every,
            self.engine.records(),
        );
        let snapshot = due.then(|| {
            self.since_snapshot = 0;
            snapshot(&self.engine)
        });
        self.output
            .send(Output::Processed {
                position,
                origin: entry.origin,
                output,
                snapshot,
            })
            .await
            .is_ok()
    }
}

/// A copy of the engine's state. For a book of a hundred thousand resting orders it takes tens
/// of milliseconds (`cargo bench -p oms-core --bench matching`), so on a multi-thread runtime the
/// worker's other tasks move to another thread meanwhile instead of waiting behind it. (An engine
/// on a thread of its own avoids that too, but was measured to cost more at half rate: on two
/// cores each of its wake-ups preempts a worker; `docs/benchmarks.md`.)
fn snapshot(engine: &Engine) -> EngineSnapshot {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::current().runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| engine.snapshot()),
        // A current-thread runtime (tests) has no other worker to hand its tasks to.
        _ => engine.snapshot(),
    }
}

async fn project(
    mut outputs: mpsc::Receiver<Output>,
    store: Arc<dyn OrderStore>,
    waiters: Waiters,
    metrics: Arc<Metrics>,
    mut streams: Option<Streams>,
) {
    let mut projection = Projection::new(store.clone());
    let mut buffer = Vec::new();
    let mut busy = false;
    while outputs.recv_many(&mut buffer, PROJECT_BATCH).await > 0 {
        // Under load, a moment's wait for more outputs makes fewer, larger transactions, and
        // each costs the projection's B-trees about the same whatever its size. Idle, a lone
        // command is written at once.
        if busy {
            let deadline = tokio::time::Instant::now() + GATHER;
            while buffer.len() < PROJECT_BATCH {
                let more = PROJECT_BATCH - buffer.len();
                match tokio::time::timeout_at(deadline, outputs.recv_many(&mut buffer, more)).await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        busy = buffer.len() >= BUSY;
        let mut engine = None;
        let mut origins = Vec::with_capacity(buffer.len());
        let mut folded = Vec::new();
        let mut last = None;
        for processed in buffer.drain(..) {
            let Output::Processed {
                position,
                origin,
                output,
                snapshot,
            } = processed;
            last = Some(position);
            if let Some(snapshot) = snapshot {
                engine = Some((position, std::sync::Arc::new(snapshot)));
            }
            while let Err(error) = projection.fold(&output.events).await {
                tracing::error!(%error, "projection read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            projection.fold_funds(&output.ledger, &output.transfers);
            if let Some(streams) = &mut streams {
                // Before the batch is written: an order read from the projection then holds
                // every event before this command's.
                let mut out = crate::streams::follow::Folded::default();
                while let Err(error) = streams
                    .follower
                    .fold(&output.events, &output.ledger, &mut out)
                    .await
                {
                    tracing::error!(%error, "stream read failed; retrying");
                    out = crate::streams::follow::Folded::default();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                folded.push((position, out));
            }
            origins.push((origin, Outcome::of(&output.events)));
        }
        let mut batch = projection.take_batch();
        batch.engine = engine;
        let started = std::time::Instant::now();
        metrics
            .processing
            .projected_orders
            .inc_by(batch.orders.len() as u64);
        while let Err(error) = store.apply(&batch).await {
            tracing::error!(%error, "projection write failed; retrying");
            metrics.processing.errors.inc();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        metrics
            .processing
            .projection_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(last) = last {
            metrics.processing.projected_position.set(last as i64);
        }
        for (origin, outcome) in origins {
            waiters.wake(&origin, outcome);
        }
        if let Some(streams) = &streams {
            let committed = Some(crate::streams::Committed::At(std::time::Instant::now()));
            for (position, out) in folded {
                streams.hub.feed(0, position, out, committed);
            }
        }
    }
}
