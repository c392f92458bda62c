//! The command log on Kafka (MSK in production): the ingest's journal and the topic layout.
//!
//! # Topics
//! `<prefix>.commands` carries journal entries, keyed by symbol and sent to the partition
//! [`partition_of`] the symbol, so every command for one book is in one partition, in order,
//! and a processor shard owning that partition owns the book. `<prefix>.events` carries what the
//! processors decided, partition for partition, written in Kafka transactions together with the
//! command offsets they consumed.
//!
//! # Record format
//! A command record is a format version byte ([`COMMAND_FORMAT`]), then the request's
//! [`Origin`], then the [`Command`] (postcard). The origin comes first so that a command a
//! processor cannot read can still be answered to the request that sent it, and the version
//! lets a processor tell a newer format (wait for the upgrade: never skip an acknowledged
//! command) from a record it will never read (reject it). See [`decode_command`].
//!
//! # Durability
//! The producer is idempotent with `acks=all`: an append returns only after the delivery report,
//! that is, once every in-sync replica has the command. A broker that does not answer fails the
//! append after `message.timeout.ms`, which is set to the dependency timeout.

use super::{Backend, Journal, JournalEntry, LogPosition, Origin, Result, StoreError, encode};
use async_trait::async_trait;
use oms_core::Command;
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

/// The format version of command records this build writes. It reads this one and format 1
/// (see [`super::legacy`]).
pub const COMMAND_FORMAT: u8 = 2;

/// A journal entry as a command record (see the module doc).
pub fn encode_command(entry: &JournalEntry) -> Result<Vec<u8>> {
    let mut bytes = vec![COMMAND_FORMAT];
    bytes.extend(encode("command origin", &entry.origin)?);
    bytes.extend(encode("command", &entry.command)?);
    Ok(bytes)
}

/// What a command record holds, as far as this build can read it.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodedCommand {
    /// A command to apply.
    Entry(JournalEntry),
    /// A newer format: a newer ingest wrote it, and only a newer processor may apply it.
    Newer {
        /// Its format version.
        version: u8,
    },
    /// A record of this format whose command cannot be read: it is rejected, and its request
    /// is told so.
    Unreadable {
        /// The request that wrote it.
        origin: Origin,
        /// Why it cannot be read.
        reason: String,
    },
    /// Not a command record at all (no origin can be read): nothing to answer.
    Foreign {
        /// Why it cannot be read.
        reason: String,
    },
}

/// Reads a command record.
pub fn decode_command(bytes: &[u8]) -> DecodedCommand {
    let Some((&version, rest)) = bytes.split_first() else {
        return DecodedCommand::Foreign {
            reason: "empty record".into(),
        };
    };
    if version > COMMAND_FORMAT {
        return DecodedCommand::Newer { version };
    }
    if version == 0 {
        return DecodedCommand::Foreign {
            reason: format!("unknown format {version}"),
        };
    }
    let (origin, rest) = match postcard::take_from_bytes::<Origin>(rest) {
        Ok(decoded) => decoded,
        Err(error) => {
            return DecodedCommand::Foreign {
                reason: format!("origin: {error}"),
            };
        }
    };
    let command = match version {
        1 => super::legacy::command(rest),
        _ => postcard::take_from_bytes::<Command>(rest),
    };
    match command {
        Ok((command, [])) => DecodedCommand::Entry(JournalEntry { command, origin }),
        Ok((_, trailing)) => DecodedCommand::Unreadable {
            origin,
            reason: format!("{} bytes after the command", trailing.len()),
        },
        Err(error) => DecodedCommand::Unreadable {
            origin,
            reason: error.to_string(),
        },
    }
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
        // Orders by symbol (a book's commands stay in order); funds commands by account.
        let symbol = match entry.command.action.symbol() {
            Some(symbol) => symbol.to_string(),
            None => entry.command.action.account().to_string(),
        };
        let partition = partition_of(&symbol, self.partitions);
        let payload = encode_command(&entry)?;
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

    fn entry() -> JournalEntry {
        JournalEntry {
            command: Command {
                ts: oms_core::Timestamp(7),
                action: oms_core::Action::Cancel(oms_core::CancelOrder {
                    order_id: oms_core::OrderId(42),
                    account: "alice".into(),
                    symbol: "BTC-USDT".into(),
                }),
            },
            origin: Origin {
                principal: "desk".into(),
                key: "k-1".into(),
                fingerprint: "f".into(),
            },
        }
    }

    fn golden_order(quote_quantity: Option<u128>) -> oms_core::NewOrder {
        use oms_core::{NewOrder, OrderId, Price, Quantity};
        NewOrder {
            order_id: OrderId(7),
            client_order_id: "0123456789abcdef0123456789abcdef0123".into(),
            account: "an-account-with-a-long-name-0001".into(),
            symbol: "BTC-USDT".into(),
            side: oms_core::Side::Buy,
            order_type: oms_core::OrderType::Limit,
            time_in_force: oms_core::TimeInForce::Gtc,
            price: Some(Price(100)),
            quantity: Quantity(5),
            post_only: false,
            self_trade_prevention: oms_core::SelfTradePrevention::None,
            quote_quantity,
        }
    }

    fn golden_records(order: oms_core::NewOrder) -> (JournalEntry, oms_core::EventRecord) {
        use oms_core::{Action, Event, EventRecord};
        let command = JournalEntry {
            command: Command {
                ts: oms_core::Timestamp(1),
                action: Action::New(order.clone()),
            },
            origin: entry().origin,
        };
        let event = EventRecord {
            seq: 1,
            ts: oms_core::Timestamp(1),
            symbol: "BTC-USDT".into(),
            event: Event::Accepted { order },
        };
        (command, event)
    }

    /// The wire format of this build, byte for byte (a change must bump [`COMMAND_FORMAT`] and
    /// the events format, and teach [`super::super::legacy`] the old one).
    #[test]
    fn records_keep_their_wire_format() {
        let (command, event) = golden_records(golden_order(Some(12_345)));
        let bytes = [
            encode_command(&command).unwrap(),
            postcard::to_allocvec(&event).unwrap(),
        ]
        .concat();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_2, "{hex}");
        let written = postcard::to_allocvec(&event).unwrap();
        assert_eq!(
            postcard::from_bytes::<oms_core::EventRecord>(&written).unwrap(),
            event
        );
    }

    /// Records of format 1, as an earlier build wrote them, still read: an upgrade with
    /// commands and events in flight loses nothing.
    #[test]
    fn format_1_records_still_read() {
        let golden = hex::decode(GOLDEN).unwrap();
        let (command, event) = golden_records(golden_order(None));
        let (_, rest) = postcard::take_from_bytes::<Origin>(&golden[1..]).unwrap();
        let (_, event_bytes) = super::super::legacy::command(rest).unwrap();
        let command_bytes = &golden[..golden.len() - event_bytes.len()];
        assert_eq!(
            decode_command(command_bytes),
            DecodedCommand::Entry(command)
        );
        let processed = crate::processing::Processed {
            position: LogPosition {
                partition: 3,
                offset: 9,
            },
            origin: entry().origin,
            records: vec![event],
            rejected: None,
        };
        // An events payload of format 1: the same fields, the record in the old layout.
        let v1 = [
            postcard::to_allocvec(&processed.position).unwrap(),
            postcard::to_allocvec(&processed.origin).unwrap(),
            vec![1],
            event_bytes.to_vec(),
            vec![0],
        ]
        .concat();
        assert_eq!(super::super::legacy::processed(&v1).unwrap(), processed);
    }

    /// Format 1 (before quote budgets), printed by the build that wrote it.
    const GOLDEN: &str = concat!(
        "01046465736b036b2d3101660100072430313233343536373839616263646566303132333435363738396162",
        "636465663031323320616e2d6163636f756e742d776974682d612d6c6f6e672d6e616d652d30303031084254",
        "432d5553445400000001640500000101084254432d5553445400072430313233343536373839616263646566",
        "303132333435363738396162636465663031323320616e2d6163636f756e742d776974682d612d6c6f6e672d",
        "6e616d652d30303031084254432d555344540000000164050000",
    );

    /// Format 2.
    const GOLDEN_2: &str = concat!(
        "02046465736b036b2d3101660100072430313233343536373839616263646566303132333435363738396162",
        "636465663031323320616e2d6163636f756e742d776974682d612d6c6f6e672d6e616d652d30303031084254",
        "432d55534454000000016405000001b9600101084254432d5553445400072430313233343536373839616263",
        "646566303132333435363738396162636465663031323320616e2d6163636f756e742d776974682d612d6c6f",
        "6e672d6e616d652d30303031084254432d55534454000000016405000001b960",
    );

    #[test]
    fn command_records_round_trip_and_say_what_they_cannot_read() {
        let entry = entry();
        let bytes = encode_command(&entry).unwrap();
        assert_eq!(decode_command(&bytes), DecodedCommand::Entry(entry.clone()));
        let mut newer = bytes.clone();
        newer[0] = COMMAND_FORMAT + 1;
        assert_eq!(
            decode_command(&newer),
            DecodedCommand::Newer {
                version: COMMAND_FORMAT + 1
            }
        );
        // the origin is readable, the command is not (cut short, or with bytes after it)
        let origin_len = encode("o", &entry.origin).unwrap().len();
        for broken in [
            bytes[..1 + origin_len + 2].to_vec(),
            [bytes.as_slice(), &[0xff]].concat(),
        ] {
            assert!(matches!(
                decode_command(&broken),
                DecodedCommand::Unreadable { origin, .. } if origin == entry.origin
            ));
        }
        for foreign in [&[][..], &[0u8, 1, 2][..], &[COMMAND_FORMAT, 0xff][..]] {
            assert!(matches!(
                decode_command(foreign),
                DecodedCommand::Foreign { .. }
            ));
        }
    }

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
