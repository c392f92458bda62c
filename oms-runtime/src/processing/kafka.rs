//! The processor and projector roles on Kafka.
//!
//! # Processor: exactly once per partition
//! A shard `k` of `N` owns every commands partition `p` with `p mod N == k` (static assignment,
//! no consumer-group rebalancing). Each owned partition has its own books (the instruments whose
//! symbol hashes to it), its own snapshot, and its own transactional producer whose
//! `transactional.id` names the partition. A batch of commands is applied and its events are
//! produced to the same partition of `<prefix>.events` in one Kafka transaction together with
//! the consumed offsets, so after any crash the events and the offsets agree: nothing lost,
//! nothing twice. Because the transactional id follows the partition, not the shard, a new owner
//! fences the old one even when the shard count changes.
//!
//! # Recovery
//! A partition starts from its latest snapshot (MongoDB) and silently replays the commands
//! between the snapshot and the committed offset (their events are already in the events topic),
//! then processes from the committed offset on. Snapshots are saved after the commit of the
//! transaction they include, so a snapshot never runs ahead of the committed offsets.
//! Recovery is all or nothing (`recover_all`): after a failed transaction no partition is
//! processed until every owned one is back, and the consumer is then re-seeked to each one's
//! next offset, so the records between a committed offset and the consumer's position are
//! always read again.
//!
//! # Records it cannot read
//! A record of a newer format stops its partition until a newer processor runs (never skipped);
//! a command that cannot be read is rejected with an event and an answer under its key; a record
//! that is no command is counted and skipped ([`crate::store::kafka::decode_command`]).
//!
//! # Projector
//! A consumer group on `<prefix>.events` (read committed) folds the events into the MongoDB
//! projection, writing before committing its offsets; writes are idempotent, so a redelivery
//! after a crash or a rebalance is harmless. While MongoDB is down it retries and the lag
//! grows; it catches up when MongoDB returns.
//!
//! # Known limitation
//! The committed offsets of the processor group are the record of progress; the broker's
//! `offsets.retention.minutes` must be longer than any pause of a processor.

use super::{Processed, Projection, unroutable};
use crate::health::Health;
use crate::metrics::{ConsumerLabels, Metrics};
use crate::store::kafka::{
    COMMAND_FORMAT, DecodedCommand, KafkaConfig, decode_command, partition_of, partitions,
};
use crate::store::mongo::{MongoStore, PartitionSnapshot};
use crate::store::redis::RedisStore;
use crate::store::{
    Ack, IdempotencyStore, LogPosition, OrderStore, Origin, StoreError, StoredResponse,
};
use anyhow::{Context, bail};
use oms_core::{Book, EventRecord, Instrument, RiskLimits, Symbol};
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Most commands in one transaction.
const BATCH: usize = 500;
/// How often librdkafka reports statistics, consumer lag among them.
const STATISTICS_INTERVAL_MS: &str = "5000";
/// How often an idle projector says it is alive (well within `health::STALLED_AFTER`).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a transaction may stay open on the broker.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What a processor needs.
pub struct ProcessorConfig {
    /// The cluster and topics.
    pub kafka: KafkaConfig,
    /// This shard.
    pub shard: u32,
    /// How many shards there are.
    pub shards: u32,
    /// Commands per partition between snapshots.
    pub snapshot_every: u64,
    /// Configured instruments.
    pub instruments: Vec<Instrument>,
    /// Risk limits.
    pub limits: RiskLimits,
    /// Snapshots.
    pub mongo: MongoStore,
    /// Depth for the API, and the idempotency record of each applied command (see
    /// [`crate::store::redis`]).
    pub redis: RedisStore,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where the processor reports how it is doing.
    pub health: Health,
    /// Failures to inject (tests of recovery); none in production.
    pub faults: Arc<Faults>,
}

/// Failures a test can inject into a processor, to prove that recovery loses and duplicates
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

fn decode<T: for<'de> serde::Deserialize<'de>>(payload: Option<&[u8]>) -> anyhow::Result<T> {
    Ok(postcard::from_bytes(payload.unwrap_or_default())?)
}

/// The header that carries an events record's format version; records without it are of
/// format 1 (read by [`crate::store::legacy`]).
const EVENTS_FORMAT_HEADER: &str = "oms-format";
/// The format version of events records this build writes.
const EVENTS_FORMAT: u8 = 2;

/// An events record's format, from its header.
fn events_format(message: &BorrowedMessage<'_>) -> Option<u8> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == EVENTS_FORMAT_HEADER)
        .and_then(|header| header.value?.first().copied())
}

/// Reads an events record of any format this build knows.
fn decode_processed(format: Option<u8>, payload: Option<&[u8]>) -> anyhow::Result<Processed> {
    match format {
        None | Some(1) => Ok(crate::store::legacy::processed(
            payload.unwrap_or_default(),
        )?),
        Some(EVENTS_FORMAT) => decode(payload),
        Some(other) => bail!("events format {other} is not one this build reads"),
    }
}

/// The answer stored under a processed command's idempotency key after the commit.
enum Answer {
    /// Applied: the 202, unless a response is stored already.
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

/// A command record of a newer format than this processor reads.
#[derive(Debug, thiserror::Error)]
#[error(
    "command at partition {partition} offset {offset} has format {version}; this processor reads \
     {COMMAND_FORMAT}: upgrade the processors (before the ingest)"
)]
pub struct NewerFormat {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The record's format.
    pub version: u8,
}

/// One owned partition: its books and its transactional producer.
struct PartitionWorker {
    partition: u32,
    books: BTreeMap<Symbol, Book>,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// The next command offset to apply.
    next: u64,
    since_snapshot: u64,
}

impl PartitionWorker {
    /// Books for the instruments of `partition`, from the snapshot if there is one.
    fn books(
        config: &ProcessorConfig,
        partition: u32,
        partitions: u32,
        snapshot: Option<PartitionSnapshot>,
    ) -> anyhow::Result<(BTreeMap<Symbol, Book>, Option<u64>)> {
        let mut books = BTreeMap::new();
        for instrument in &config.instruments {
            if partition_of(instrument.symbol(), partitions) == partition {
                let book = Book::new(instrument.clone(), &config.limits)?;
                books.insert(instrument.symbol().clone(), book);
            }
        }
        let Some(snapshot) = snapshot else {
            return Ok((books, None));
        };
        for book in snapshot.books {
            let Some(existing) = books.get(&book.symbol) else {
                tracing::warn!(symbol = %book.symbol, "snapshot of an instrument no longer configured; dropped");
                continue;
            };
            let instrument = existing.instrument().clone();
            let symbol = book.symbol.clone();
            let restored = Book::restore(instrument, &config.limits, book)
                .with_context(|| format!("restoring {symbol}"))?;
            books.insert(symbol, restored);
        }
        Ok((books, Some(snapshot.offset)))
    }

    /// Restores the partition: snapshot, silent replay up to the committed offset, and a
    /// producer that has fenced any older one with the same transactional id.
    fn recover(
        config: &ProcessorConfig,
        handle: &Handle,
        consumer: &BaseConsumer<Observed>,
        partition: u32,
        partitions: u32,
    ) -> anyhow::Result<PartitionWorker> {
        let kafka = &config.kafka;
        if Faults::strike(&config.faults.recovery) {
            bail!("injected recovery failure of partition {partition}");
        }
        let producer: ThreadedProducer<DefaultProducerContext> = kafka
            .client()
            .set(
                "transactional.id",
                format!("{}.processor.{partition}", kafka.prefix),
            )
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        // Fences a zombie owner of this partition and aborts its open transaction, before the
        // committed offsets are read.
        producer.init_transactions(kafka.timeout * 5)?;

        let snapshot = handle.block_on(config.mongo.partition_snapshot(partition))?;
        let (mut books, snapshot_offset) = Self::books(config, partition, partitions, snapshot)?;
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&kafka.commands(), partition as i32);
        let committed = consumer.committed_offsets(wanted, kafka.timeout * 5)?;
        let committed = match committed.elements().first().map(|e| e.offset()) {
            Some(Offset::Offset(offset)) if offset >= 0 => offset as u64,
            _ => 0,
        };
        let start = snapshot_offset.map_or(0, |offset| offset + 1);
        if start > committed {
            // Offsets of the group expired while the snapshot survived: the snapshot is the
            // better record of progress.
            tracing::warn!(
                partition,
                start,
                committed,
                "committed offset behind the snapshot; resuming after the snapshot"
            );
        }
        if start < committed {
            replay(config, partition, &mut books, start, committed)?;
        }
        let next = start.max(committed);
        tracing::info!(partition, next, books = books.len(), snapshot = ?snapshot_offset, "partition recovered");
        for (symbol, book) in &books {
            if let Err(error) =
                handle.block_on(config.redis.publish_depth(symbol, &book.depth(100)))
            {
                tracing::warn!(%error, "could not publish depth");
            }
        }
        Ok(PartitionWorker {
            partition,
            books,
            producer,
            next,
            since_snapshot: 0,
        })
    }

    /// Applies a batch of commands in one transaction. On error the transaction is aborted and
    /// the caller must recover the partition (its books may be ahead of what was committed).
    fn process(
        &mut self,
        config: &ProcessorConfig,
        handle: &Handle,
        consumer: &BaseConsumer<Observed>,
        messages: &[&BorrowedMessage<'_>],
    ) -> anyhow::Result<()> {
        let kafka = &config.kafka;
        let events_topic = kafka.events();
        let mut acks = Vec::with_capacity(messages.len());
        let mut touched = Vec::new();
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
                let (processed, key) = match decode_command(message.payload().unwrap_or_default()) {
                    DecodedCommand::Entry(entry) => {
                        // Keyed as the journal keyed it: by symbol, or by account for funds
                        // commands, which distributed mode does not take yet (issue 15).
                        let key = match entry.command.action.symbol() {
                            Some(symbol) => symbol.clone(),
                            None => entry.command.action.account().clone(),
                        };
                        let mut records: Vec<EventRecord> = Vec::new();
                        let book = entry
                            .command
                            .action
                            .symbol()
                            .and_then(|symbol| self.books.get_mut(symbol));
                        match book {
                            Some(book) => {
                                book.apply(&entry.command, &mut records);
                                touched.push(key.clone());
                            }
                            None => records = unroutable(&entry),
                        }
                        config.metrics.processing.commands.inc();
                        config
                            .metrics
                            .processing
                            .events
                            .inc_by(records.len() as u64);
                        let ack = Ack::new(&entry, position).response()?;
                        acks.push(Answer::Applied(entry.origin.clone(), ack));
                        let processed = Processed {
                            position,
                            origin: entry.origin,
                            records,
                            rejected: None,
                        };
                        (processed, key.to_string())
                    }
                    DecodedCommand::Newer { version } => {
                        // Never skipped: the command waits for a processor that can read it.
                        return Err(NewerFormat {
                            partition: self.partition,
                            offset,
                            version,
                        }
                        .into());
                    }
                    DecodedCommand::Unreadable { origin, reason } => {
                        tracing::error!(partition = self.partition, offset, %reason, "unreadable command rejected");
                        config.metrics.processing.undecodable.inc();
                        acks.push(Answer::Rejected(
                            origin.clone(),
                            unreadable_response(&reason),
                        ));
                        let processed = Processed {
                            position,
                            origin,
                            records: Vec::new(),
                            rejected: Some(format!("unreadable command: {reason}")),
                        };
                        let key = message
                            .key()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        (processed, key.into_owned())
                    }
                    DecodedCommand::Foreign { reason } => {
                        tracing::error!(partition = self.partition, offset, %reason, "a record that is no command skipped");
                        config.metrics.processing.undecodable.inc();
                        continue;
                    }
                };
                let payload = postcard::to_allocvec(&processed)?;
                let mut record = BaseRecord::to(&events_topic)
                    .partition(self.partition as i32)
                    .key(key.as_str())
                    .payload(&payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: EVENTS_FORMAT_HEADER,
                        value: Some(&[EVENTS_FORMAT]),
                    }));
                // A full local queue only means "wait for the broker": retry until it drains.
                loop {
                    match self.producer.send(record) {
                        Ok(()) => break,
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
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(
                &kafka.commands(),
                self.partition as i32,
                Offset::Offset(last as i64 + 1),
            )?;
            let group = consumer
                .group_metadata()
                .context("processor consumer has no group metadata")?;
            self.producer
                .send_offsets_to_transaction(&offsets, &group, kafka.timeout * 5)?;
            if Faults::strike(&config.faults.commit) {
                bail!("injected commit failure");
            }
            self.producer.commit_transaction(kafka.timeout * 5)?;
            Ok(last)
        })();
        let last = match result {
            Ok(last) => last,
            Err(error) => {
                if let Err(abort) = self.producer.abort_transaction(kafka.timeout * 5) {
                    tracing::error!(%abort, "abort failed");
                }
                return Err(error);
            }
        };
        self.next = last + 1;
        self.since_snapshot += messages.len() as u64;
        touched.sort();
        touched.dedup();
        handle.block_on(self.after_commit(config, acks, &touched, last));
        Ok(())
    }

    /// Work that follows a committed batch and may fail without harm: idempotency records,
    /// depth for the API, the snapshot.
    async fn after_commit(
        &mut self,
        config: &ProcessorConfig,
        acks: Vec<Answer>,
        touched: &[Symbol],
        last: u64,
    ) {
        let redis = &config.redis;
        let completions = acks.iter().map(|answer| async move {
            match answer {
                Answer::Applied(origin, response) => {
                    redis.complete_if_absent(origin, response).await
                }
                // replaces the 202 the ingest stored: a retry learns that the command failed
                Answer::Rejected(origin, response) => redis.complete(origin, response).await,
            }
        });
        for result in futures::future::join_all(completions).await {
            if let Err(error) = result {
                tracing::warn!(%error, "could not record an applied command's idempotency key");
                break;
            }
        }
        for symbol in touched {
            if let Some(book) = self.books.get(symbol)
                && let Err(error) = redis.publish_depth(symbol, &book.depth(100)).await
            {
                tracing::warn!(%error, "could not publish depth");
                break;
            }
        }
        if self.since_snapshot >= config.snapshot_every {
            let snapshot = PartitionSnapshot {
                offset: last,
                books: self.books.values().map(Book::snapshot).collect(),
            };
            match config
                .mongo
                .save_partition_snapshot(self.partition, &snapshot)
                .await
            {
                Ok(()) => self.since_snapshot = 0,
                Err(error) => {
                    tracing::warn!(partition = self.partition, %error, "snapshot not saved; will retry")
                }
            }
        }
    }
}

/// Applies commands `[from, to)` of a partition to its books and drops the events: they are
/// in the events topic already.
fn replay(
    config: &ProcessorConfig,
    partition: u32,
    books: &mut BTreeMap<Symbol, Book>,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let kafka = &config.kafka;
    let reader: BaseConsumer = kafka
        .client()
        .set("group.id", format!("{}.processor-replay", kafka.prefix))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(
        &kafka.commands(),
        partition as i32,
        Offset::Offset(from as i64),
    )?;
    reader.assign(&assignment)?;
    let started = Instant::now();
    let mut next = from;
    let mut events = Vec::new();
    while next < to {
        let Some(message) = reader.poll(kafka.timeout) else {
            if started.elapsed() > kafka.timeout * 30 {
                bail!("replay of partition {partition} stalled at offset {next} (target {to})");
            }
            continue;
        };
        let message = message?;
        let offset = message.offset() as u64;
        if offset >= to {
            break;
        }
        next = offset + 1;
        // Only what processing applied changes the books: rejected and foreign records do not,
        // and a newer format never reached a commit.
        let DecodedCommand::Entry(entry) = decode_command(message.payload().unwrap_or_default())
        else {
            continue;
        };
        let book = entry
            .command
            .action
            .symbol()
            .and_then(|symbol| books.get_mut(symbol));
        if let Some(book) = book {
            events.clear();
            book.apply(&entry.command, &mut events);
        }
    }
    tracing::info!(partition, from, to, "replayed commands after the snapshot");
    Ok(())
}

/// Runs processor shard `config.shard` until `stop` is set. Blocking: run it on its own thread.
pub fn run_processor(
    config: &ProcessorConfig,
    handle: &Handle,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let kafka = &config.kafka;
    let count = handle.block_on(partitions(kafka, &kafka.commands()))?;
    let owned: Vec<u32> = (0..count)
        .filter(|p| p % config.shards == config.shard)
        .collect();
    tracing::info!(
        shard = config.shard,
        shards = config.shards,
        ?owned,
        "processor starting"
    );
    let consumer: BaseConsumer<Observed> = kafka
        .client()
        .set("group.id", format!("{}.processor", kafka.prefix))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .create_with_context(Observed::new(&config.metrics, "processor"))?;
    let Some(mut workers) = recover_all(config, handle, &consumer, &owned, count, stop)? else {
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
                    tracing::warn!(%error, "processor consumer error");
                    break;
                }
                None => break,
            }
        }
        let (mut failed, mut newer) = (false, false);
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
            if let Err(error) = worker.process(config, handle, &consumer, &fresh) {
                newer = error.downcast_ref::<NewerFormat>().is_some();
                tracing::error!(
                    partition,
                    error = format!("{error:#}"),
                    "transaction failed; recovering"
                );
                config.metrics.processing.errors.inc();
                config
                    .health
                    .failing("processor", format!("partition {partition}: {error:#}"));
                failed = true;
                // The other partitions' batches wait for the recovery too: it re-seeks all.
                break;
            }
        }
        drop(batches);
        if !failed {
            // Running means a pass went through, so a partition that fails again right after
            // its recovery (a newer format) never looks healthy in between.
            config.health.running("processor");
        }
        if failed {
            // A newer format waits for an upgrade: no point in retrying every half second.
            std::thread::sleep(if newer {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(500)
            });
            match recover_all(config, handle, &consumer, &owned, count, stop)? {
                Some(recovered) => workers = recovered,
                None => break,
            }
        }
    }
    tracing::info!(shard = config.shard, "processor stopped");
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
fn recover_all(
    config: &ProcessorConfig,
    handle: &Handle,
    consumer: &BaseConsumer<Observed>,
    owned: &[u32],
    count: u32,
    stop: &AtomicBool,
) -> anyhow::Result<Option<BTreeMap<u32, PartitionWorker>>> {
    let mut workers = BTreeMap::new();
    let mut pause = Duration::from_millis(500);
    loop {
        for &partition in owned {
            if workers.contains_key(&partition) {
                continue;
            }
            match PartitionWorker::recover(config, handle, consumer, partition, count) {
                Ok(worker) => {
                    workers.insert(partition, worker);
                }
                Err(error) => {
                    let why = format!("recovering partition {partition}: {error:#}");
                    tracing::error!(error = %why, "recovery failed; retrying");
                    config.health.failing("processor", why);
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
            &config.kafka.commands(),
            worker.partition as i32,
            Offset::Offset(worker.next as i64),
        )?;
    }
    consumer.assign(&assignment)?;
    Ok(Some(workers))
}

/// Notes rebalances, so the projector drops cached states of partitions that may have moved.
/// A consumer's observers: rebalances (the projector restarts its batch on one) and lag.
struct Observed {
    moved: Arc<AtomicBool>,
    lag: Gauge,
}

impl Observed {
    fn new(metrics: &Metrics, consumer: &'static str) -> Observed {
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
        }
    }
}

impl ClientContext for Observed {
    fn stats(&self, statistics: Statistics) {
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

/// Runs the projector until `stopped` is set. While MongoDB fails it retries and reports
/// `failing`; an error it cannot retry ends it (its supervisor restarts it).
pub async fn run_projector(
    kafka: KafkaConfig,
    store: Arc<dyn OrderStore>,
    metrics: Arc<Metrics>,
    health: Health,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let observed = Observed::new(&metrics, "projector");
    let moved = observed.moved.clone();
    let consumer: StreamConsumer<Observed> = kafka
        .client()
        .set("group.id", format!("{}.projector", kafka.prefix))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .create_with_context(observed)?;
    consumer.subscribe(&[&kafka.events()])?;
    let mut projection = Projection::new(store.clone());
    health.running("projector");
    loop {
        let first = tokio::select! {
            _ = stopped.wait_for(|stopped| *stopped) => break,
            message = consumer.recv() => message,
            // Idle is not hung: a heartbeat while no event arrives (`recv` is cancel-safe; the
            // batching below relies on that too).
            () = tokio::time::sleep(HEARTBEAT) => {
                health.running("projector");
                continue;
            }
        };
        let mut messages = vec![first];
        while messages.len() < BATCH {
            match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await {
                Ok(message) => messages.push(message),
                Err(_) => break,
            }
        }
        if moved.swap(false, Ordering::Relaxed) {
            projection = Projection::new(store.clone());
        }
        let mut offsets = TopicPartitionList::new();
        for message in messages {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "projector consumer error");
                    continue;
                }
            };
            let format = events_format(&message);
            if let Some(newer) = format.filter(|format| *format > EVENTS_FORMAT) {
                // Never skipped: the record waits for a projector that can read it, and the
                // offsets before it are not committed either.
                let problem = format!(
                    "events record at partition {} offset {} has format {newer}; this projector \
                     reads {EVENTS_FORMAT}: upgrade the projectors (before the processors)",
                    message.partition(),
                    message.offset()
                );
                tracing::error!("{problem}");
                health.failing("projector", problem);
                let _ = stopped.wait_for(|stopped| *stopped).await;
                return Ok(());
            }
            match decode_processed(format, message.payload()) {
                Ok(processed) => {
                    while let Err(error) = projection.fold(&processed.records).await {
                        retry_pause(&metrics, &health, "projection read", &error).await;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, offset = message.offset(), "undecodable event message skipped");
                    metrics.processing.undecodable.inc();
                }
            }
            offsets.add_partition_offset(
                message.topic(),
                message.partition(),
                Offset::Offset(message.offset() + 1),
            )?;
        }
        let batch = projection.take_batch();
        metrics
            .processing
            .projected_orders
            .inc_by(batch.orders.len() as u64);
        let started = Instant::now();
        while let Err(error) = store.apply(batch.clone()).await {
            retry_pause(&metrics, &health, "projection write", &error).await;
        }
        health.running("projector");
        metrics
            .processing
            .projection_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(%error, "projector offset commit failed; events will be folded again");
        }
    }
    Ok(())
}

async fn retry_pause(metrics: &Metrics, health: &Health, what: &str, error: &StoreError) {
    tracing::warn!(%error, "{what} failed; retrying");
    health.failing("projector", format!("{what} failed: {error}"));
    metrics.processing.errors.inc();
    tokio::time::sleep(Duration::from_millis(500)).await;
}
