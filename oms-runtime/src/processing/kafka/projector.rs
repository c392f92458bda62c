//! The projector: a consumer group on the events and ledger topics (read committed) that folds
//! them into MongoDB, writing before committing its offsets. Writes are idempotent, so a
//! redelivery after a crash or a rebalance is harmless. While MongoDB is down it retries and
//! the lag grows; it catches up when MongoDB returns.

use super::{BATCH, EVENTS_FORMAT, EVENTS_FORMAT_HEADER, Observed};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::processing::{Processed, Projection};
use crate::store::kafka::{Decoded, FundsRecord, KafkaConfig, LEDGER_FORMAT, decode_funds_record};
use crate::store::mongo::MongoStore;
use crate::store::{OrderStore, StoreError};
use anyhow::bail;
use oms_core::Symbol;
use oms_core::funds::Market;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often an idle projector says it is alive (well within `health::STALLED_AFTER`).
const HEARTBEAT: Duration = Duration::from_secs(5);

fn decode<T: for<'de> serde::Deserialize<'de>>(payload: Option<&[u8]>) -> anyhow::Result<T> {
    Ok(postcard::from_bytes(payload.unwrap_or_default())?)
}

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

/// What one consumed record is for the projection.
pub(crate) enum Read {
    Events(Processed),
    Funds(FundsRecord),
    /// A newer format: the projector must wait for an upgrade (never skip).
    Newer(String),
    /// Skipped with an error log.
    Skipped,
}

pub(crate) fn read(kafka: &KafkaConfig, message: &BorrowedMessage<'_>) -> Read {
    let at = format!(
        "partition {} offset {}",
        message.partition(),
        message.offset()
    );
    if message.topic() == kafka.ledger() {
        return match decode_funds_record(message.payload().unwrap_or_default()) {
            Decoded::Record(record) => Read::Funds(record),
            Decoded::Newer { version } => Read::Newer(format!(
                "ledger record at {at} has format {version}; this projector reads \
                 {LEDGER_FORMAT}: upgrade the projectors (before the funds stage)"
            )),
            Decoded::Unreadable { reason, .. } | Decoded::Foreign { reason } => {
                tracing::error!(%reason, %at, "undecodable ledger record skipped");
                Read::Skipped
            }
        };
    }
    let format = events_format(message);
    if let Some(newer) = format.filter(|format| *format > EVENTS_FORMAT) {
        return Read::Newer(format!(
            "events record at {at} has format {newer}; this projector reads {EVENTS_FORMAT}: \
             upgrade the projectors (before the processors)"
        ));
    }
    match decode_processed(format, message.payload()) {
        Ok(processed) => Read::Events(processed),
        Err(error) => {
            tracing::error!(%error, %at, "undecodable event message skipped");
            Read::Skipped
        }
    }
}

/// The bound on each projection write: long, since no request waits for it (see
/// `MongoStore::with_timeout`); a dead server still shows, as the projector's health.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the projector until `stopped` is set. While MongoDB fails it retries and reports
/// `failing`; an error it cannot retry ends it (its supervisor restarts it).
pub async fn run_projector(
    kafka: KafkaConfig,
    mongo: MongoStore,
    markets: BTreeMap<Symbol, Market>,
    metrics: Arc<Metrics>,
    health: Health,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mongo = mongo.with_timeout(WRITE_TIMEOUT);
    let consumer: StreamConsumer<Observed> = kafka.create(
        &kafka.reader(&format!("{}.projector", kafka.prefix)),
        |rebootstrap| Observed::new(&metrics, "projector", rebootstrap),
    )?;
    let moved = consumer.context().moved.clone();
    consumer.subscribe(&[&kafka.events(), &kafka.ledger()])?;
    let store: Arc<dyn OrderStore> = Arc::new(mongo.clone());
    let mut projection = Projection::with_markets(store.clone(), markets.clone());
    health.running("projector");
    loop {
        let first = tokio::select! {
            _ = stopped.wait_for(|stopped| *stopped) => break,
            message = consumer.recv() => message,
            // Idle is not hung: a heartbeat while no record arrives (`recv` is cancel-safe; the
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
            projection = Projection::with_markets(store.clone(), markets.clone());
        }
        let mut offsets = TopicPartitionList::new();
        let mut funds = Vec::new();
        for message in messages {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "projector consumer error");
                    continue;
                }
            };
            match read(&kafka, &message) {
                Read::Events(processed) => {
                    while let Err(error) = projection.fold(&processed.records).await {
                        retry_pause(&metrics, &health, "projection read", &error).await;
                    }
                }
                Read::Funds(record) => funds.push((message.partition() as u32, record)),
                Read::Newer(problem) => {
                    // Never skipped: the record waits for a projector that can read it, and
                    // the offsets before it are not committed either.
                    tracing::error!("{problem}");
                    health.failing("projector", problem);
                    let _ = stopped.wait_for(|stopped| *stopped).await;
                    return Ok(());
                }
                Read::Skipped => {
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
        while let Err(error) = store.apply(&batch).await {
            retry_pause(&metrics, &health, "projection write", &error).await;
        }
        while let Err(error) = mongo.apply_funds(&funds).await {
            retry_pause(&metrics, &health, "funds projection write", &error).await;
        }
        health.running("projector");
        metrics
            .processing
            .projection_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(%error, "projector offset commit failed; records will be folded again");
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
