//! The stages of distributed mode on Kafka, and the projector.
//!
//! ```text
//! ingest ─▶ accounts ─▶ funds stage ─▶ commands ─▶ matching stage ─▶ events ─▶ projector
//!  (key account)  ▲     (holds, transfers)  (key symbol)   (books)     │            ▲
//!                 │          └──────────────────▶ ledger ──────────────┼────────────┘
//!                 └──────────── settlements (key account) ◀────────────┘
//! ```
//! - [`funds`]: a shard owns accounts partitions; each holds its accounts' balances, decides
//!   their commands (holds, deposits, withdrawals), forwards order commands with the decision to
//!   the commands topic, and settles what the books report back.
//! - [`matching`]: a shard owns commands partitions; each holds the books whose symbols hash
//!   to it, applies the funded commands, writes events, and sends each event that changes money
//!   back to the accounts partition of every account it touches.
//! - [`projector`]: folds events and the ledger into MongoDB.
//!
//! # Exactly once per partition
//! Both stages run on one driver ([`run_stage`]). A shard `k` of `N` owns every input partition
//! `p` with `p mod N == k` (static assignment, no consumer-group rebalancing). Each owned
//! partition has its own state, its own snapshot, and its own transactional producer whose
//! `transactional.id` names the stage and the partition. A batch of input records is applied
//! and its outputs are produced in one Kafka transaction together with the consumed offsets, so
//! after any crash the outputs and the offsets agree: nothing lost, nothing twice. Because the
//! transactional id follows the partition, not the shard, a new owner fences the old one even
//! when the shard count changes.
//!
//! Each partition's state is a function of its input log alone: the funds stage's input mixes
//! clients' commands and settlements, but in one order fixed by the log, so a replay gives the
//! same balances and the same outputs.
//!
//! # Recovery
//! A partition starts from its latest snapshot (MongoDB) and silently replays the records
//! between the snapshot and the committed offset (their outputs are already written), then
//! processes from the committed offset on. Snapshots are saved after the commit of the
//! transaction they include, so a snapshot never runs ahead of the committed offsets.
//! Recovery is all or nothing (`recover_all`): after a failed transaction no partition is
//! processed until every owned one is back, and the consumer is then re-seeked to each one's
//! next offset, so the records between a committed offset and the consumer's position are
//! always read again.
//!
//! # Records it cannot read
//! A record of a newer format stops its partition until a newer build runs (never skipped); a
//! client's command that cannot be read is rejected with an answer under its key; a record
//! that is none of ours is counted and skipped ([`crate::store::kafka::records`]).
//!
//! # Known limitation
//! The committed offsets of each stage's group are the record of progress; the broker's
//! `offsets.retention.minutes` must be longer than any pause of a stage.

mod funds;
mod matching;
pub(crate) mod projector;

pub use projector::run_projector;

use crate::health::Health;
use crate::metrics::{ConsumerLabels, Metrics};
use crate::store::kafka::rebootstrap::{Kept, Rebootstrap};
use crate::store::kafka::{KafkaConfig, partitions};
use crate::store::mongo::MongoStore;
use crate::store::redis::RedisStore;
use crate::store::{IdempotencyStore, LogPosition, Origin, StoredResponse};
use anyhow::{Context, bail};
use oms_core::{Instrument, RiskLimits};
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Most input records taken in one pass; each partition's share is applied in one transaction.
/// A commit costs the broker's round trips whatever its size, so a backlog drains in large
/// transactions (500 gave a seventh of the throughput, `oms-loadgen pipeline`); under light load
/// a pass takes what has arrived and commits at once.
const BATCH: usize = 4000;
/// How long a transaction may stay open on the broker.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What a stage needs.
pub struct StageConfig {
    /// The cluster and topics.
    pub kafka: KafkaConfig,
    /// This shard.
    pub shard: u32,
    /// How many shards there are.
    pub shards: u32,
    /// Input records per partition between snapshots.
    pub snapshot_every: u64,
    /// Configured instruments.
    pub instruments: Vec<Instrument>,
    /// Risk limits.
    pub limits: RiskLimits,
    /// Snapshots.
    pub mongo: MongoStore,
    /// Depth and buy limits for the API, and the idempotency record of each command (see
    /// [`crate::store::redis`]).
    pub redis: RedisStore,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where the stage reports how it is doing.
    pub health: Health,
    /// Failures to inject (tests of recovery); none in production.
    pub faults: Arc<Faults>,
}

/// Failures a test can inject into a stage, to prove that recovery loses and duplicates
/// nothing. Each counter counts down; the call that takes it from 1 to 0 fails.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fails the n-th transaction commit from now (its transaction is aborted).
    pub commit: AtomicU32,
    /// Fails the n-th partition recovery from now.
    pub recovery: AtomicU32,
}

impl Faults {
    /// Whether the call counted by `counter` is the one to fail.
    fn strike(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok_and(|before| before == 1)
    }
}

/// The header that carries an events record's format version; records without it are of
/// format 1 (read by [`crate::store::legacy`]).
const EVENTS_FORMAT_HEADER: &str = "oms-format";
/// The format version of events records this build writes.
const EVENTS_FORMAT: u8 = 2;

/// One record a stage writes in its transaction.
struct Output {
    topic: String,
    partition: u32,
    key: String,
    payload: Vec<u8>,
    /// The `oms-format` header (events records carry their format there).
    format: Option<u8>,
}

/// The answer stored under a command's idempotency key after the commit.
enum Answer {
    /// Taken into the pipeline: the 202, unless a response is stored already.
    Applied(Origin, StoredResponse),
    /// Rejected as unreadable: an error that replaces what is stored.
    Rejected(Origin, StoredResponse),
}

/// The 422 a request whose command could not be read gets on a retry.
fn unreadable_response(reason: &str) -> StoredResponse {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), "command_unreadable".into());
    error.insert(
        "message".into(),
        format!("the processor could not read this command ({reason}); nothing was done").into(),
    );
    let mut body = serde_json::Map::new();
    body.insert("error".into(), error.into());
    StoredResponse {
        status: 422,
        body: serde_json::Value::Object(body).to_string(),
    }
}

/// Stores each answer under its idempotency key; a failure is logged (a retry of the request
/// then finds the key in flight until its lease ends, and journals nothing twice: see
/// [`crate::store::redis`]).
async fn store_answers(redis: &RedisStore, answers: &[Answer]) {
    let completions = answers.iter().map(|answer| async move {
        match answer {
            Answer::Applied(origin, response) => redis.complete_if_absent(origin, response).await,
            // replaces the 202 the ingest stored: a retry learns that the command failed
            Answer::Rejected(origin, response) => redis.complete(origin, response).await,
        }
    });
    for result in futures::future::join_all(completions).await {
        if let Err(error) = result {
            tracing::warn!(%error, "could not record a command's idempotency key");
            break;
        }
    }
}

/// A record of a newer format than this build reads.
#[derive(Debug, thiserror::Error)]
#[error(
    "{topic} record at partition {partition} offset {offset} has format {version}; this build \
     reads {known}: {upgrade}"
)]
pub struct NewerFormat {
    /// The topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The record's format.
    pub version: u8,
    /// The newest format this build reads.
    pub known: u8,
    /// What to upgrade, in which order.
    pub upgrade: &'static str,
}

/// One stage's state for one owned partition, as [`run_stage`] drives it.
trait Stage: Sized {
    /// The role: names the transactional ids, the consumer group, health and metrics.
    const ROLE: &'static str;

    /// The topic whose partitions the stage owns.
    fn input(kafka: &KafkaConfig) -> String;

    /// The partition's state from its latest snapshot, and the input offset that includes.
    fn restore(
        config: &StageConfig,
        handle: &Handle,
        partition: u32,
        partitions: u32,
    ) -> anyhow::Result<(Self, Option<u64>)>;

    /// Applies an input record whose outputs are already written (recovery).
    fn replay(&mut self, config: &StageConfig, payload: &[u8]);

    /// Applies an input record, writing its outputs to `out`. An error aborts the transaction
    /// (the partition is then recovered).
    fn apply(
        &mut self,
        config: &StageConfig,
        position: LogPosition,
        message: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> anyhow::Result<()>;

    /// About how many records a snapshot of this state holds (see [`super::snapshot_due`]).
    fn snapshot_records(&self) -> usize;

    /// After the recovery: publish what the API reads of this state.
    fn recovered(&mut self, config: &StageConfig, handle: &Handle);

    /// After a commit, work that may fail without harm: idempotency answers, published state,
    /// and the snapshot if `snapshot` (returns whether it was saved).
    async fn committed(
        &mut self,
        config: &StageConfig,
        partition: u32,
        last: u64,
        snapshot: bool,
    ) -> bool;
}

type TransactionalProducer = ThreadedProducer<Kept>;

/// The consumer group of stage `S`: its committed offsets are the stage's progress.
fn group<S: Stage>(kafka: &KafkaConfig) -> String {
    format!("{}.{}", kafka.prefix, S::ROLE)
}

/// Aborts the open transaction of `producer` (its partition is recovered next).
fn abort(producer: &TransactionalProducer, config: &StageConfig) {
    if let Err(abort) = producer.abort_transaction(config.kafka.timeout * 5) {
        tracing::error!(%abort, "abort failed");
    }
}

/// One owned partition: its stage state and its transactional producer.
struct PartitionWorker<S> {
    partition: u32,
    stage: S,
    /// Shared only with a call that may outlive its wait (see [`send_offsets`]).
    producer: Arc<TransactionalProducer>,
    /// The next input offset to apply.
    next: u64,
    since_snapshot: u64,
}

impl<S: Stage> PartitionWorker<S> {
    /// Restores the partition: snapshot, silent replay up to the committed offset, and a
    /// producer that has fenced any older one with the same transactional id.
    fn recover(
        config: &StageConfig,
        handle: &Handle,
        partition: u32,
        partitions: u32,
    ) -> anyhow::Result<PartitionWorker<S>> {
        let kafka = &config.kafka;
        if Faults::strike(&config.faults.recovery) {
            bail!("injected recovery failure of partition {partition}");
        }
        let producer: Arc<TransactionalProducer> = Arc::new(
            kafka.create(
                kafka
                    .client()
                    .set(
                        "transactional.id",
                        format!("{}.{}.{partition}", kafka.prefix, S::ROLE),
                    )
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "2")
                    .set("compression.type", "lz4")
                    .set(
                        "transaction.timeout.ms",
                        TRANSACTION_TIMEOUT.as_millis().to_string(),
                    ),
                Kept::from,
            )?,
        );
        // Fences a zombie owner of this partition and aborts its open transaction, before the
        // committed offsets are read.
        producer.init_transactions(kafka.timeout * 5)?;

        let (mut stage, snapshot_offset) = S::restore(config, handle, partition, partitions)?;
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&S::input(kafka), partition as i32);
        // Asked by a client of its own, as the producer above is new: the stage's consumer is
        // not polled while it recovers, so a consumer librdkafka stranded without brokers by a
        // broker restart would not be cured (`store::kafka::rebootstrap`) and would fail this
        // call every time.
        //
        // Committed offsets only, not "stable" ones (read_committed's default): the stable read
        // fails while any transaction holds offsets of the partition, and after a broker restart
        // the group coordinator was seen holding offsets of a transaction that the transaction
        // coordinator no longer listed: it aborted that transaction without a marker for the
        // offsets, and every stable read timed out until the test gave up. Nothing stable is
        // missed: only this partition's transactional id commits its offsets, and
        // `init_transactions` above returned after its last transaction was completed.
        let group: BaseConsumer = kafka
            .client()
            .set("group.id", group::<S>(kafka))
            .set("isolation.level", "read_uncommitted")
            .create()?;
        let committed = group.committed_offsets(wanted, kafka.timeout * 5)?;
        let committed = match committed.elements().first().map(|e| e.offset()) {
            Some(Offset::Offset(offset)) if offset >= 0 => offset as u64,
            _ => 0,
        };
        let start = snapshot_offset.map_or(0, |offset| offset + 1);
        if start > committed {
            // Offsets of the group expired while the snapshot survived: the snapshot is the
            // better record of progress.
            tracing::warn!(
                role = S::ROLE,
                partition,
                start,
                committed,
                "committed offset behind the snapshot; resuming after the snapshot"
            );
        }
        if start < committed {
            replay(config, partition, &mut stage, start, committed)?;
        }
        let next = start.max(committed);
        tracing::info!(role = S::ROLE, partition, next, snapshot = ?snapshot_offset, "partition recovered");
        stage.recovered(config, handle);
        Ok(PartitionWorker {
            partition,
            stage,
            producer,
            next,
            since_snapshot: 0,
        })
    }

    /// Applies a batch of input records in a new transaction, with their outputs and the
    /// consumed offsets, and leaves it open for [`PartitionWorker::commit`]; gives the last
    /// offset applied. On error the transaction is aborted and the caller must recover the
    /// partition (its state may be ahead of what was committed).
    fn apply_batch(
        &mut self,
        config: &StageConfig,
        consumer: &BaseConsumer<Observed>,
        messages: &[&BorrowedMessage<'_>],
    ) -> anyhow::Result<u64> {
        let kafka = &config.kafka;
        let mut out = Vec::new();
        self.producer.begin_transaction()?;
        let result = (|| -> anyhow::Result<u64> {
            let mut last = self.next;
            for message in messages {
                let offset = message.offset() as u64;
                last = offset;
                let position = LogPosition {
                    partition: self.partition,
                    offset,
                };
                self.stage.apply(config, position, message, &mut out)?;
                for output in out.drain(..) {
                    self.send(output)?;
                }
            }
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(
                &S::input(kafka),
                self.partition as i32,
                Offset::Offset(last as i64 + 1),
            )?;
            let group = consumer
                .group_metadata()
                .context("stage consumer has no group metadata")?;
            send_offsets(&self.producer, offsets, group, kafka.timeout * 5)?;
            Ok(last)
        })();
        if result.is_err() {
            abort(&self.producer, config);
        }
        result
    }

    /// Commits the open transaction (the broker's round trips; several partitions' commits run
    /// at once). On error the transaction is aborted.
    fn commit(producer: &TransactionalProducer, config: &StageConfig) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = if Faults::strike(&config.faults.commit) {
            Err(anyhow::anyhow!("injected commit failure"))
        } else {
            producer
                .commit_transaction(config.kafka.timeout * 5)
                .map_err(anyhow::Error::from)
        };
        if result.is_err() {
            abort(producer, config);
        } else {
            let role = crate::metrics::RoleLabels { role: S::ROLE };
            let metrics = &config.metrics.processing;
            metrics.transactions.get_or_create(&role).inc();
            metrics
                .commit_seconds
                .get_or_create(&role)
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// After the commit of records up to `last`: the stage's follow-up work.
    fn committed(&mut self, config: &StageConfig, handle: &Handle, last: u64, records: usize) {
        self.next = last + 1;
        self.since_snapshot += records as u64;
        let due = super::snapshot_due(
            self.since_snapshot,
            config.snapshot_every,
            self.stage.snapshot_records(),
        );
        if handle.block_on(self.stage.committed(config, self.partition, last, due)) {
            self.since_snapshot = 0;
        }
    }

    /// Produces one output in the open transaction.
    fn send(&self, output: Output) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new();
        if let Some(format) = output.format {
            headers = headers.insert(Header {
                key: EVENTS_FORMAT_HEADER,
                value: Some(&[format]),
            });
        }
        let mut record = BaseRecord::to(&output.topic)
            .partition(output.partition as i32)
            .key(output.key.as_str())
            .payload(&output.payload)
            .headers(headers);
        // A full local queue only means "wait for the broker": retry until it drains.
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((error, returned)) => {
                    if !matches!(
                        error.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        return Err(error.into());
                    }
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

/// How long past its own timeout a call into librdkafka may take before it is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// `send_offsets_to_transaction`, bounded. librdkafka (2.12.1) does not enforce that call's
/// timeout: once the broker has the offsets' partition in the transaction, the call waits for a
/// connection to the group coordinator with no deadline (`rd_kafka_coord_req` sets one and never
/// reads it), and after a broker restart it was seen to wait for good, its stage stalled with it
/// (`tests/restarts.rs`). So the call runs on a thread of its own; one that has not returned in
/// time fails the pass like any other error, and recovery makes a new producer, which fences this
/// one. The waiting thread keeps the old producer until librdkafka lets it go: a leak, logged (one
/// per give-up; after a broker restart, 0 to 2 per process in the test).
fn send_offsets(
    producer: &Arc<TransactionalProducer>,
    offsets: TopicPartitionList,
    group: ConsumerGroupMetadata,
    timeout: Duration,
) -> anyhow::Result<()> {
    let producer = producer.clone();
    let call = move || producer.send_offsets_to_transaction(&offsets, &group, timeout);
    Ok(bounded(
        "send_offsets_to_transaction",
        timeout + GIVE_UP_AFTER,
        call,
    )??)
}

/// Runs `call` on a thread of its own and waits for it at most `limit`; on timeout the thread is
/// left to finish (or not) on its own.
fn bounded<T: Send + 'static>(
    what: &'static str,
    limit: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("bounded {what}"))
        .spawn(move || {
            // The receiver is gone when the wait gave up; nothing is left to tell.
            let _ = done.send(call());
        })?;
    result.recv_timeout(limit).map_err(|_| {
        tracing::error!(
            what,
            ?limit,
            "a librdkafka call did not return in time; given up"
        );
        anyhow::anyhow!("{what} did not return within {limit:?}; given up")
    })
}

/// Applies input records `[from, to)` of a partition to its state and drops the outputs: they
/// are written already.
fn replay<S: Stage>(
    config: &StageConfig,
    partition: u32,
    stage: &mut S,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let kafka = &config.kafka;
    let reader: BaseConsumer = kafka
        .client()
        .set("group.id", format!("{}.{}-replay", kafka.prefix, S::ROLE))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(
        &S::input(kafka),
        partition as i32,
        Offset::Offset(from as i64),
    )?;
    reader.assign(&assignment)?;
    let started = Instant::now();
    let mut next = from;
    while next < to {
        let Some(message) = reader.poll(kafka.timeout) else {
            if started.elapsed() > kafka.timeout * 30 {
                bail!(
                    "replay of {} partition {partition} stalled at offset {next} (target {to})",
                    S::ROLE
                );
            }
            continue;
        };
        let message = message?;
        let offset = message.offset() as u64;
        if offset >= to {
            break;
        }
        next = offset + 1;
        stage.replay(config, message.payload().unwrap_or_default());
    }
    tracing::info!(
        role = S::ROLE,
        partition,
        from,
        to,
        "replayed input after the snapshot"
    );
    Ok(())
}

/// Runs matching shard `config.shard` until `stop` is set. Blocking: run it on its own thread.
pub fn run_processor(
    config: &StageConfig,
    handle: &Handle,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    run_stage::<matching::Books>(config, handle, stop)
}

/// Runs funds shard `config.shard` until `stop` is set. Blocking: run it on its own thread.
pub fn run_funds(config: &StageConfig, handle: &Handle, stop: &AtomicBool) -> anyhow::Result<()> {
    run_stage::<funds::Accounts>(config, handle, stop)
}

fn run_stage<S: Stage>(
    config: &StageConfig,
    handle: &Handle,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let kafka = &config.kafka;
    let count = handle.block_on(partitions(kafka, &S::input(kafka)))?;
    let owned: Vec<u32> = (0..count)
        .filter(|p| p % config.shards == config.shard)
        .collect();
    tracing::info!(
        role = S::ROLE,
        shard = config.shard,
        shards = config.shards,
        ?owned,
        "stage starting"
    );
    let consumer: BaseConsumer<Observed> = kafka
        .create(&kafka.reader(&group::<S>(kafka)), |rebootstrap| {
            Observed::new(&config.metrics, S::ROLE, rebootstrap)
        })?;
    let Some(mut workers) = recover_all::<S>(config, handle, &consumer, &owned, count, stop)?
    else {
        return Ok(());
    };
    while !stop.load(Ordering::Relaxed) {
        let mut batches: BTreeMap<u32, Vec<BorrowedMessage<'_>>> = BTreeMap::new();
        let mut wait = Duration::from_millis(100);
        let mut taken = 0;
        while taken < BATCH {
            match consumer.poll(wait) {
                Some(Ok(message)) => {
                    batches
                        .entry(message.partition() as u32)
                        .or_default()
                        .push(message);
                    taken += 1;
                    wait = Duration::ZERO;
                }
                Some(Err(error)) => {
                    tracing::warn!(role = S::ROLE, %error, "stage consumer error");
                    break;
                }
                None => break,
            }
        }
        // Each partition applies its batch in its own transaction, one after the other (the
        // work is CPU); then all of them commit at once, so a pass waits for the broker once,
        // not once per partition.
        let (mut failed, mut newer) = (None, false);
        let mut open: Vec<(u32, u64, usize)> = Vec::new();
        for (partition, messages) in &batches {
            let Some(worker) = workers.get_mut(partition) else {
                continue;
            };
            // Messages the worker already applied (delivered again after a re-seek) are skipped.
            let fresh: Vec<&BorrowedMessage<'_>> = messages
                .iter()
                .filter(|m| m.offset() as u64 >= worker.next)
                .collect();
            if fresh.is_empty() {
                continue;
            }
            match worker.apply_batch(config, &consumer, &fresh) {
                Ok(last) => open.push((*partition, last, fresh.len())),
                Err(error) => {
                    newer = error.downcast_ref::<NewerFormat>().is_some();
                    failed = Some((*partition, error));
                    break;
                }
            }
        }
        let commits: Vec<anyhow::Result<()>> = if failed.is_some() {
            // The other partitions' batches wait for the recovery too: it re-seeks all.
            for (partition, _, _) in &open {
                abort(&workers[partition].producer, config);
            }
            Vec::new()
        } else {
            std::thread::scope(|scope| {
                let running: Vec<_> = open
                    .iter()
                    .map(|(partition, _, _)| {
                        let producer = &workers[partition].producer;
                        scope.spawn(move || PartitionWorker::<S>::commit(producer, config))
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|commit| {
                        commit
                            .join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("commit panicked")))
                    })
                    .collect()
            })
        };
        for ((partition, last, records), commit) in open.iter().zip(commits) {
            match commit {
                Ok(()) => {
                    if let Some(worker) = workers.get_mut(partition) {
                        worker.committed(config, handle, *last, *records);
                    }
                }
                Err(error) => {
                    failed.get_or_insert((*partition, error));
                }
            }
        }
        if let Some((partition, error)) = &failed {
            tracing::error!(
                role = S::ROLE,
                partition,
                error = format!("{error:#}"),
                "transaction failed; recovering"
            );
            config.metrics.processing.errors.inc();
            config
                .health
                .failing(S::ROLE, format!("partition {partition}: {error:#}"));
        }
        let failed = failed.is_some();
        drop(batches);
        if !failed {
            // Running means a pass went through, so a partition that fails again right after
            // its recovery (a newer format) never looks healthy in between.
            config.health.running(S::ROLE);
        }
        if failed {
            // A newer format waits for an upgrade: no point in retrying every half second.
            std::thread::sleep(if newer {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(500)
            });
            match recover_all::<S>(config, handle, &consumer, &owned, count, stop)? {
                Some(recovered) => workers = recovered,
                None => break,
            }
        }
    }
    tracing::info!(role = S::ROLE, shard = config.shard, "stage stopped");
    Ok(())
}

/// Recovers every owned partition from its snapshot and committed offset, retrying those that
/// fail until all are back (or `stop` is set: `None`), then re-seeks the consumer so that each
/// partition resumes exactly at its worker's next offset.
///
/// # Why all of them, and always the seek
/// After a failed transaction the consumer's position is past what was committed; a partition
/// whose worker starts at its committed offset must be read again from there, or the records in
/// between would never be applied. So recovery is all-or-nothing: no partition is processed
/// while another is missing, and processing resumes only after the assignment that sets every
/// position to its worker's next offset.
fn recover_all<S: Stage>(
    config: &StageConfig,
    handle: &Handle,
    consumer: &BaseConsumer<Observed>,
    owned: &[u32],
    count: u32,
    stop: &AtomicBool,
) -> anyhow::Result<Option<BTreeMap<u32, PartitionWorker<S>>>> {
    let mut workers = BTreeMap::new();
    let mut pause = Duration::from_millis(500);
    loop {
        for &partition in owned {
            if workers.contains_key(&partition) {
                continue;
            }
            match PartitionWorker::recover(config, handle, partition, count) {
                Ok(worker) => {
                    workers.insert(partition, worker);
                }
                Err(error) => {
                    let why = format!("recovering partition {partition}: {error:#}");
                    tracing::error!(role = S::ROLE, error = %why, "recovery failed; retrying");
                    config.health.failing(S::ROLE, why);
                }
            }
        }
        if workers.len() == owned.len() {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(10));
    }
    let mut assignment = TopicPartitionList::new();
    for worker in workers.values() {
        assignment.add_partition_offset(
            &S::input(&config.kafka),
            worker.partition as i32,
            Offset::Offset(worker.next as i64),
        )?;
    }
    consumer.assign(&assignment)?;
    Ok(Some(workers))
}

/// A consumer's observers: rebalances (the projector restarts its batch on one), lag, and its
/// brokers (see [`Rebootstrap`]).
struct Observed {
    moved: Arc<AtomicBool>,
    lag: Gauge,
    rebootstrap: Arc<Rebootstrap>,
}

impl Observed {
    fn new(metrics: &Metrics, consumer: &'static str, rebootstrap: Arc<Rebootstrap>) -> Observed {
        let lag = metrics
            .processing
            .consumer_lag
            .get_or_create(&ConsumerLabels { consumer })
            .clone();
        // Unknown until librdkafka's first statistics; 0 would claim "caught up".
        lag.set(-1);
        Observed {
            moved: Arc::new(AtomicBool::new(false)),
            lag,
            rebootstrap,
        }
    }
}

impl ClientContext for Observed {
    fn stats(&self, statistics: Statistics) {
        self.rebootstrap.check(&statistics);
        // -1 marks a partition whose lag is not known yet; the internal partition is -1 too.
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.values())
            .filter(|partition| partition.partition >= 0 && partition.consumer_lag >= 0)
            .map(|partition| partition.consumer_lag)
            .sum();
        self.lag.set(lag);
    }
}

impl ConsumerContext for Observed {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        self.moved.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_does_not_return_is_given_up_after_its_limit() {
        let (_hold, hung) = std::sync::mpsc::channel::<()>();
        let error = bounded("a hung call", Duration::from_millis(50), move || {
            hung.recv()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("a hung call did not return"), "{error}");
        assert_eq!(bounded("a call", Duration::from_secs(5), || 7).unwrap(), 7);
    }
}
