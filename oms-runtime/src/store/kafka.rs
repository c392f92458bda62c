//! The command log on Kafka (MSK in production): the ingest's journal and the topic layout.
//!
//! # Topics
//! `<prefix>.commands` carries journal entries, keyed by symbol and sent to the partition
//! [`partition_of`] the symbol, so every command for one book is in one partition, in order,
//! and a processor shard owning that partition owns the book. `<prefix>.events` carries what the
//! processors decided, partition for partition, written in Kafka transactions together with the
//! command offsets they consumed.
//!
//! # Durability
//! The producer is idempotent with `acks=all`: an append returns only after the delivery report,
//! that is, once every in-sync replica has the command. A broker that does not answer fails the
//! append after `message.timeout.ms`, which is set to the dependency timeout.

use super::{Backend, Journal, JournalEntry, LogPosition, Result, StoreError};
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::time::Duration;

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port,...`
    pub bootstrap: String,
    /// Topic prefix of one order system.
    pub prefix: String,
    /// Extra librdkafka properties (security: `security.protocol`, `sasl.*`, `ssl.*`).
    pub properties: Vec<(String, String)>,
    /// Bound on every call.
    pub timeout: Duration,
}

impl KafkaConfig {
    /// The commands topic.
    pub fn commands(&self) -> String {
        format!("{}.commands", self.prefix)
    }

    /// The events topic.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// A client configuration with the connection and security settings.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set(
                "socket.timeout.ms",
                self.timeout.as_millis().max(1000).to_string(),
            )
            .set("log_level", "4");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// The partition that owns `symbol`'s book: FNV-1a over the symbol, modulo the partition count.
/// Fixed forever for a topic, since the partition count never changes.
pub fn partition_of(symbol: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in symbol.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

fn error(error: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(Backend::Kafka, error)
}

/// Number of partitions of `topic` (blocking metadata call, bounded by the timeout).
pub async fn partitions(config: &KafkaConfig, topic: &str) -> Result<u32> {
    let client: rdkafka::consumer::BaseConsumer = config.client().create().map_err(error)?;
    let topic = topic.to_string();
    let timeout = config.timeout;
    tokio::task::spawn_blocking(move || {
        let metadata = client
            .fetch_metadata(Some(&topic), timeout)
            .map_err(error)?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as u32)
            }
            _ => Err(StoreError::unavailable(
                Backend::Kafka,
                format!("topic {topic} does not exist"),
            )),
        }
    })
    .await
    .map_err(error)?
}

/// Creates the commands and events topics if they do not exist (for development and tests; in
/// Kubernetes the operator owns them).
pub async fn create_topics(config: &KafkaConfig, partitions: u32, replication: u32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.client().create().map_err(error)?;
    let names = [config.commands(), config.events()];
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                partitions as i32,
                TopicReplication::Fixed(replication as i32),
            )
            .set(
                "min.insync.replicas",
                if replication > 1 { "2" } else { "1" },
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(config.timeout)));
    for result in admin
        .create_topics(&topics, &options)
        .await
        .map_err(error)?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(error(format!("cannot create {topic}: {code}"))),
        }
    }
    Ok(())
}

/// The ingest's journal: an idempotent producer to the commands topic.
pub struct KafkaJournal {
    producer: FutureProducer,
    topic: String,
    partitions: u32,
    config: KafkaConfig,
}

impl KafkaJournal {
    /// Creates the producer and learns the topic's partition count.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaJournal> {
        let topic = config.commands();
        let partitions = partitions(&config, &topic).await?;
        let producer: FutureProducer = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", config.timeout.as_millis().to_string())
            .create()
            .map_err(error)?;
        Ok(KafkaJournal {
            producer,
            topic,
            partitions,
            config,
        })
    }

    /// Partitions of the commands topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }
}

#[async_trait]
impl Journal for KafkaJournal {
    async fn append(&self, entry: JournalEntry) -> Result<LogPosition> {
        let symbol = entry.command.action.symbol().to_string();
        let partition = partition_of(&symbol, self.partitions);
        let payload = postcard::to_allocvec(&entry).map_err(error)?;
        let record = FutureRecord::to(&self.topic)
            .partition(partition as i32)
            .key(&symbol)
            .payload(&payload);
        let delivered = self
            .producer
            .send(record, Timeout::After(self.config.timeout))
            .await
            .map_err(|(e, _)| error(e))?;
        Ok(LogPosition {
            partition: delivered.partition as u32,
            offset: delivered.offset as u64,
        })
    }

    async fn ping(&self) -> Result<()> {
        partitions(&self.config, &self.topic).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_always_lands_in_the_same_partition() {
        assert_eq!(partition_of("BTC-USDT", 12), partition_of("BTC-USDT", 12));
        assert!(partition_of("ETH-USDT", 12) < 12);
        let spread: std::collections::BTreeSet<_> = (0..100)
            .map(|i| partition_of(&format!("S{i}-USDT"), 8))
            .collect();
        assert_eq!(spread.len(), 8, "100 symbols use every partition");
    }
}
