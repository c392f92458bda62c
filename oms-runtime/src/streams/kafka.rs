//! Distributed mode: every ingest pod follows the events and ledger topics (read committed,
//! without a consumer group: each pod reads every partition) and feeds its own hub.
//!
//! It starts at the projector's committed offsets, so an order it has not seen open is in
//! MongoDB with every event before the one at hand (see [`super::follow`]), and it keeps the
//! updates from there in the hub's window, so a client of another pod can resume here.

use super::follow::{Folded, Follower};
use super::{Committed, Hub};
use crate::processing::kafka::projector::{Read, read};
use crate::store::kafka::KafkaConfig;
use crate::store::kafka::rebootstrap::Kept;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where each source log starts and how many there are: the events topic's partitions, then
/// the ledger topic's.
pub struct Sources {
    /// Partitions of the events topic.
    pub events: usize,
    /// Partitions of the ledger topic.
    pub ledger: usize,
}

impl Sources {
    /// How many.
    pub fn len(&self) -> usize {
        self.events + self.ledger
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The partition counts of the two topics (they never change: the CRD makes them immutable).
pub fn sources(kafka: &KafkaConfig) -> anyhow::Result<Sources> {
    let consumer: BaseConsumer = kafka.client().create()?;
    let count = |topic: &str| -> anyhow::Result<usize> {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| format!("metadata of {topic}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |topic| topic.partitions().len());
        anyhow::ensure!(partitions > 0, "topic {topic} has no partitions yet");
        Ok(partitions)
    };
    Ok(Sources {
        events: count(&kafka.events())?,
        ledger: count(&kafka.ledger())?,
    })
}

/// Follows both topics into `hub` until the process ends.
pub async fn follow(
    kafka: KafkaConfig,
    sources: Sources,
    mut follower: Follower,
    hub: Arc<Hub>,
) -> anyhow::Result<()> {
    let events = kafka.events();
    let consumer = loop {
        match assign(&kafka, &sources, &hub).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "stream follower cannot start; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tracing::info!(
        sources = sources.len(),
        "streams follow the events and ledger topics"
    );
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "stream follower: consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let source = source(&sources, &events, message.topic(), message.partition());
        let committed = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => {
                Some(Committed::EpochMillis(ms))
            }
            Timestamp::NotAvailable => None,
        };
        let position = message.offset() as u64 + 1;
        let mut folded = Folded::default();
        match read(&kafka, &message) {
            Read::Events(processed) => {
                while let Err(error) = follower.fold(&processed.records, &[], &mut folded).await {
                    tracing::warn!(%error, "stream follower: order read failed; retrying");
                    folded = Folded::default();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Read::Funds(record) => {
                // Ledger entries need no reads.
                let _ = follower.fold(&[], &record.ledger, &mut folded).await;
            }
            Read::Newer(problem) => {
                // A newer writer: this pod's streams stop here until it is upgraded too.
                tracing::error!("stream follower: {problem}");
                return Ok(());
            }
            Read::Skipped => {}
        }
        hub.feed(source, position, folded, committed);
    }
}

/// A consumer of both topics from the projector's committed offsets, which become the hub's
/// starting positions.
async fn assign(
    kafka: &KafkaConfig,
    sources: &Sources,
    hub: &Hub,
) -> anyhow::Result<StreamConsumer<Kept>> {
    let (events, ledger) = (kafka.events(), kafka.ledger());
    // Reading the projector's offsets does not join its group.
    let projector: BaseConsumer = kafka
        .client()
        .set("group.id", format!("{}.projector", kafka.prefix))
        .create()?;
    let mut wanted = TopicPartitionList::new();
    for p in 0..sources.events {
        wanted.add_partition(&events, p as i32);
    }
    for p in 0..sources.ledger {
        wanted.add_partition(&ledger, p as i32);
    }
    let committed =
        tokio::task::spawn_blocking(move || projector.committed_offsets(wanted, METADATA_TIMEOUT))
            .await?
            .context("the projector's committed offsets")?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        let source = source(sources, &events, element.topic(), element.partition());
        start.add_partition_offset(element.topic(), element.partition(), Offset::Offset(offset))?;
        hub.start_source(source, offset as u64);
    }
    let consumer: StreamConsumer<Kept> = kafka.create(
        &kafka.reader(&format!("{}.streams", kafka.prefix)),
        Kept::from,
    )?;
    consumer.assign(&start)?;
    Ok(consumer)
}

fn source(sources: &Sources, events: &str, topic: &str, partition: i32) -> usize {
    if topic == events {
        partition as usize
    } else {
        sources.events + partition as usize
    }
}
