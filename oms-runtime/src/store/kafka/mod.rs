//! The logs on Kafka (MSK in production): the ingest's journal and the topic layout.
//!
//! # Topics
//! ```text
//! <prefix>.accounts  key account  clients' commands (ingest) and settlements (matching stage)
//! <prefix>.commands  key symbol   funded commands (funds stage)
//! <prefix>.events    by partition what the books decided (matching stage)
//! <prefix>.ledger    by partition what funds did: balance changes, transfers (funds stage)
//! ```
//! A key goes to the partition [`partition_of`] it, so every command of one account is in one
//! accounts partition and every command for one book in one commands partition, in order: a
//! funds shard owning an accounts partition owns those accounts, a matching shard owning a
//! commands partition owns those books. `events` and `ledger` are written partition for
//! partition of their stage's input, in Kafka transactions together with the offsets consumed.
//!
//! # Record format
//! See [`records`]: a format version byte, then the request's origin where there is one, then
//! the rest (postcard).
//!
//! # Durability
//! The producer is idempotent with `acks=all`: an append returns only after the delivery report,
//! that is, once every in-sync replica has the command. A broker that does not answer fails the
//! append after `message.timeout.ms`, which is set to the dependency timeout.

pub mod rebootstrap;
pub mod records;

pub use records::{
    ACCOUNTS_FORMAT, AccountRecord, COMMAND_FORMAT, Decoded, Forwarded, FundsRecord, LEDGER_FORMAT,
    Settlement, decode_account_record, decode_command, decode_funds_record, encode_client_command,
    encode_command, encode_funds_record, encode_settlement,
};

use super::redis::RedisStore;
use super::{Backend, Journal, JournalEntry, LogPosition, Result, StoreError};
use async_trait::async_trait;
use oms_core::{Action, OrderType, Side};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rebootstrap::Kept;
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

    /// The accounts topic: clients' commands and settlements, keyed by account.
    pub fn accounts(&self) -> String {
        format!("{}.accounts", self.prefix)
    }

    /// The ledger topic: what the funds stage did, partition for partition of the accounts.
    pub fn ledger(&self) -> String {
        format!("{}.ledger", self.prefix)
    }

    /// Every topic of the order system.
    pub fn topics(&self) -> [String; 4] {
        [
            self.accounts(),
            self.commands(),
            self.events(),
            self.ledger(),
        ]
    }

    /// Makes a long-lived client of `config` that never ends up without a broker to ask; its
    /// context is built around the [`rebootstrap::Rebootstrap`] it must call from its statistics
    /// ([`rebootstrap::Kept`] when there is nothing else to observe).
    pub fn create<T, C>(
        &self,
        config: &ClientConfig,
        context: impl FnOnce(std::sync::Arc<rebootstrap::Rebootstrap>) -> C,
    ) -> rdkafka::error::KafkaResult<T>
    where
        T: rdkafka::config::FromClientConfigAndContext<C> + rebootstrap::Native,
        C: rdkafka::ClientContext,
    {
        rebootstrap::create(&self.bootstrap, config, context)
    }

    /// A reading consumer's configuration: group `group`, offsets committed by the caller, only
    /// committed transactions read, a short fetch wait, and from the oldest record where the
    /// group has no offset (or one the log no longer has, after retention).
    pub fn reader(&self, group: &str) -> ClientConfig {
        let mut config = self.client();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "5");
        config
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

/// Creates the topics if they do not exist, each with `partitions` partitions (for development
/// and tests; in Kubernetes the operator owns them).
pub async fn create_topics(config: &KafkaConfig, partitions: u32, replication: u32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.client().create().map_err(error)?;
    let names = config.topics();
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

/// The ingest's journal: an idempotent producer to the accounts topic. Every command of an
/// account (orders, cancels, amendments, deposits, withdrawals) goes to its account's partition,
/// so the funds stage sees them in the order they were acknowledged.
pub struct KafkaJournal {
    producer: FutureProducer<Kept>,
    topic: String,
    partitions: u32,
    config: KafkaConfig,
    /// Where the matching stage publishes the price a market buy may trade up to.
    limits: RedisStore,
}

impl KafkaJournal {
    /// Creates the producer and learns the topic's partition count.
    pub async fn connect(config: KafkaConfig, limits: RedisStore) -> Result<KafkaJournal> {
        let topic = config.accounts();
        let partitions = partitions(&config, &topic).await?;
        let producer = config
            .create(
                config
                    .client()
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "1")
                    .set("compression.type", "lz4")
                    .set("message.timeout.ms", config.timeout.as_millis().to_string()),
                Kept::from,
            )
            .map_err(error)?;
        Ok(KafkaJournal {
            producer,
            topic,
            partitions,
            config,
            limits,
        })
    }

    /// Partitions of the accounts topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// What a market buy by quantity is held at: the limit its book last published (the edge
    /// of the price band). The book trades the order no higher (see `oms_core::Funding`), so a
    /// limit that moved since only leaves part of the order unfilled.
    async fn hold_price(&self, entry: &JournalEntry) -> Result<Option<oms_core::Price>> {
        match &entry.command.action {
            Action::New(order)
                if order.order_type == OrderType::Market
                    && order.side == Side::Buy
                    && !order.is_quote() =>
            {
                self.limits.buy_limit(&order.symbol).await
            }
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl Journal for KafkaJournal {
    async fn append(&self, entry: JournalEntry) -> Result<LogPosition> {
        let account = entry.command.action.account().to_string();
        let partition = partition_of(&account, self.partitions);
        let payload = encode_client_command(&entry, self.hold_price(&entry).await?)?;
        let record = FutureRecord::to(&self.topic)
            .partition(partition as i32)
            .key(&account)
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

    /// The records go to the producer together, so the ones of a partition share a produce
    /// request; each is acknowledged by every in-sync replica before this returns.
    async fn append_batch(&self, entries: Vec<JournalEntry>) -> Result<Vec<LogPosition>> {
        let appends = entries.into_iter().map(|entry| self.append(entry));
        futures::future::try_join_all(appends).await
    }

    async fn ping(&self) -> Result<()> {
        partitions(&self.config, &self.topic).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Origin;
    use super::*;
    use oms_core::{Command, Funding};

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
        let funding = Funding::Funded {
            cap: Some(oms_core::Price(77)),
        };
        let bytes = [
            encode_command(&command, &funding).unwrap(),
            postcard::to_allocvec(&event).unwrap(),
        ]
        .concat();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_3, "{hex}");
        let written = postcard::to_allocvec(&event).unwrap();
        assert_eq!(
            postcard::from_bytes::<oms_core::EventRecord>(&written).unwrap(),
            event
        );
    }

    /// Command records of formats 1 and 2, as earlier builds wrote them straight to the
    /// commands topic, still read (without funding), and so do events of format 1: an upgrade
    /// with commands and events in flight loses nothing.
    #[test]
    fn records_of_earlier_formats_still_read() {
        let golden = hex::decode(GOLDEN).unwrap();
        let (command, event) = golden_records(golden_order(None));
        let (_, rest) = postcard::take_from_bytes::<Origin>(&golden[1..]).unwrap();
        let (_, event_bytes) = super::super::legacy::command(rest).unwrap();
        let command_bytes = &golden[..golden.len() - event_bytes.len()];
        let unfunded = |entry| {
            Decoded::Record(Forwarded {
                entry,
                funding: None,
            })
        };
        assert_eq!(decode_command(command_bytes), unfunded(command));
        let golden_2 = hex::decode(GOLDEN_2).unwrap();
        let (command_2, event_2) = golden_records(golden_order(Some(12_345)));
        let event_2_len = postcard::to_allocvec(&event_2).unwrap().len();
        assert_eq!(
            decode_command(&golden_2[..golden_2.len() - event_2_len]),
            unfunded(command_2)
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

    /// Format 2 (before the funds stage), printed by the build that wrote it.
    const GOLDEN_2: &str = concat!(
        "02046465736b036b2d3101660100072430313233343536373839616263646566303132333435363738396162",
        "636465663031323320616e2d6163636f756e742d776974682d612d6c6f6e672d6e616d652d30303031084254",
        "432d55534454000000016405000001b9600101084254432d5553445400072430313233343536373839616263",
        "646566303132333435363738396162636465663031323320616e2d6163636f756e742d776974682d612d6c6f",
        "6e672d6e616d652d30303031084254432d55534454000000016405000001b960",
    );

    /// Format 3 (funded commands).
    const GOLDEN_3: &str = concat!(
        "03046465736b036b2d3101660100072430313233343536373839616263646566303132333435363738396162",
        "636465663031323320616e2d6163636f756e742d776974682d612d6c6f6e672d6e616d652d30303031084254",
        "432d55534454000000016405000001b96000014d0101084254432d5553445400072430313233343536373839",
        "616263646566303132333435363738396162636465663031323320616e2d6163636f756e742d776974682d61",
        "2d6c6f6e672d6e616d652d30303031084254432d55534454000000016405000001b960",
    );

    #[test]
    fn command_records_round_trip_and_say_what_they_cannot_read() {
        let entry = entry();
        let bytes = encode_command(&entry, &Funding::PASS).unwrap();
        assert_eq!(
            decode_command(&bytes),
            Decoded::Record(Forwarded {
                entry: entry.clone(),
                funding: Some(Funding::PASS),
            })
        );
        let mut newer = bytes.clone();
        newer[0] = COMMAND_FORMAT + 1;
        assert_eq!(
            decode_command(&newer),
            Decoded::Newer {
                version: COMMAND_FORMAT + 1
            }
        );
        // the origin is readable, the command is not (cut short, or with bytes after it)
        let origin_len = super::super::encode("o", &entry.origin).unwrap().len();
        for broken in [
            bytes[..1 + origin_len + 2].to_vec(),
            [bytes.as_slice(), &[0xff]].concat(),
        ] {
            assert!(matches!(
                decode_command(&broken),
                Decoded::Unreadable { origin, .. } if origin == entry.origin
            ));
        }
        for foreign in [&[][..], &[0u8, 1, 2][..], &[COMMAND_FORMAT, 0xff][..]] {
            assert!(matches!(decode_command(foreign), Decoded::Foreign { .. }));
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
