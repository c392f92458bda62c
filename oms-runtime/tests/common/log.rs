//! Reading a cluster's topics back, and what an uninterrupted run would have written.

use super::cluster::Cluster;
use oms_core::{Book, Instrument, OrderId, OrderState, RiskLimits, Symbol};
use oms_runtime::processing::{Processed, unroutable};
use oms_runtime::store::LogPosition;
use oms_runtime::store::kafka::{DecodedCommand, decode_command, partition_of};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Every committed message of `topic`, partition by partition, as `(offset, payload)`.
pub fn read_topic(cluster: &Cluster, topic: &str) -> BTreeMap<u32, Vec<(u64, Vec<u8>)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.services.kafka)
        .set("group.id", format!("{}.test-reader", cluster.prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..cluster.partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out: BTreeMap<u32, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    let mut finished = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while finished.len() < cluster.partitions as usize {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => out.entry(message.partition() as u32).or_default().push((
                message.offset() as u64,
                message.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                finished.insert(partition);
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    out
}

/// Whether the broker has `topic`.
pub fn topic_exists(cluster: &Cluster, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.services.kafka)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

/// The events topic, decoded.
pub fn events(cluster: &Cluster) -> BTreeMap<u32, Vec<Processed>> {
    read_topic(cluster, &format!("{}.events", cluster.prefix))
        .into_iter()
        .map(|(partition, messages)| {
            let decoded = messages
                .into_iter()
                .map(|(_, payload)| postcard::from_bytes(&payload).expect("event message"))
                .collect();
            (partition, decoded)
        })
        .collect()
}

/// What one uninterrupted processor would have written: the commands topic replayed through
/// fresh books, partition by partition.
pub fn expected_events(
    cluster: &Cluster,
    instruments: &[Instrument],
) -> BTreeMap<u32, Vec<Processed>> {
    let commands = read_topic(cluster, &format!("{}.commands", cluster.prefix));
    let mut books: HashMap<Symbol, Book> = instruments
        .iter()
        .map(|i| {
            (
                i.symbol().clone(),
                Book::new(i.clone(), &RiskLimits::default()).unwrap(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for (partition, messages) in commands {
        let mut processed = Vec::new();
        for (offset, payload) in messages {
            let position = LogPosition { partition, offset };
            let entry = match decode_command(&payload) {
                DecodedCommand::Entry(entry) => entry,
                // rejected without touching a book; a foreign record leaves no event
                DecodedCommand::Unreadable { origin, reason } => {
                    processed.push(Processed {
                        position,
                        origin,
                        records: Vec::new(),
                        rejected: Some(format!("unreadable command: {reason}")),
                    });
                    continue;
                }
                DecodedCommand::Foreign { .. } => continue,
                DecodedCommand::Newer { version } => panic!("a format {version} record"),
            };
            // Distributed mode journals order commands only (funds come with issue 15).
            let symbol = entry
                .command
                .action
                .symbol()
                .expect("an order command")
                .clone();
            assert_eq!(
                partition_of(&symbol, cluster.partitions),
                partition,
                "command in the wrong partition"
            );
            let mut records = Vec::new();
            match books.get_mut(&symbol) {
                Some(book) => book.apply(&entry.command, &mut records),
                None => records = unroutable(&entry),
            }
            processed.push(Processed {
                position,
                origin: entry.origin,
                records,
                rejected: None,
            });
        }
        out.insert(partition, processed);
    }
    out
}

/// Every order's final state folded from `events`.
pub fn fold(events: &BTreeMap<u32, Vec<Processed>>) -> HashMap<OrderId, OrderState> {
    let mut states: HashMap<OrderId, OrderState> = HashMap::new();
    for processed in events.values().flatten() {
        for record in &processed.records {
            if let Some(state) = OrderState::open(record) {
                states.insert(state.order.order_id, state);
                continue;
            }
            for order_id in record.event.order_ids() {
                if let Some(state) = states.get_mut(&order_id) {
                    state.apply(record);
                }
            }
        }
    }
    states
}
