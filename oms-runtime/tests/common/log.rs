//! Reading a cluster's topics back, and what an uninterrupted run would have written.

use super::cluster::Cluster;
use oms_core::funds::Decided;
use oms_core::{Book, Funds, Instrument, OrderId, OrderState, RiskLimits, Symbol};
use oms_runtime::processing::{Processed, unroutable};
use oms_runtime::store::LogPosition;
use oms_runtime::store::kafka::{
    AccountRecord, Decoded, FundsRecord, Settlement, decode_account_record, decode_command,
    decode_funds_record, encode_command, partition_of,
};
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

/// What one uninterrupted matching stage would have written: the commands topic replayed
/// through fresh books, partition by partition, each command as funds decided it.
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
            let forwarded = match decode_command(&payload) {
                Decoded::Record(forwarded) => forwarded,
                // rejected without touching a book; a foreign record leaves no event
                Decoded::Unreadable { origin, reason } => {
                    processed.push(Processed {
                        position,
                        origin,
                        records: Vec::new(),
                        rejected: Some(format!("unreadable command: {reason}")),
                    });
                    continue;
                }
                Decoded::Foreign { .. } => continue,
                Decoded::Newer { version } => panic!("a format {version} record"),
            };
            let entry = &forwarded.entry;
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
            match (books.get_mut(&symbol), &forwarded.funding) {
                (Some(book), Some(funding)) => {
                    book.apply_funded(&entry.command, funding, &mut records)
                }
                (Some(book), None) => book.apply(&entry.command, &mut records),
                (None, _) => records = unroutable(entry),
            }
            processed.push(Processed {
                position,
                origin: forwarded.entry.origin,
                records,
                rejected: None,
            });
        }
        out.insert(partition, processed);
    }
    out
}

/// The ledger topic, decoded, partition by partition.
pub fn ledger(cluster: &Cluster) -> BTreeMap<u32, Vec<FundsRecord>> {
    read_topic(cluster, &format!("{}.ledger", cluster.prefix))
        .into_iter()
        .map(|(partition, messages)| {
            let decoded = messages
                .into_iter()
                .map(|(_, payload)| match decode_funds_record(&payload) {
                    Decoded::Record(record) => record,
                    other => panic!("a ledger record: {other:?}"),
                })
                .collect();
            (partition, decoded)
        })
        .collect()
}

/// What uninterrupted funds stages would have written: the accounts topic replayed through
/// fresh funds, partition by partition.
pub struct FundsRun {
    /// The ledger topic, partition by partition.
    pub ledger: BTreeMap<u32, Vec<FundsRecord>>,
    /// The commands forwarded from each accounts partition to each commands partition, in
    /// order (the commands topic interleaves the sources; each source's order is fixed).
    pub forwarded: BTreeMap<(u32, u32), Vec<Vec<u8>>>,
    /// The settlements each commands partition sent to each accounts partition, in order.
    pub settlements: BTreeMap<(u32, u32), Vec<Settlement>>,
    /// Every partition's funds at the end.
    pub funds: BTreeMap<u32, Funds>,
    /// Deposits minus withdrawals, per asset.
    pub net: BTreeMap<String, i128>,
}

pub fn expected_funds(cluster: &Cluster, instruments: &[Instrument]) -> FundsRun {
    let accounts = read_topic(cluster, &format!("{}.accounts", cluster.prefix));
    let mut run = FundsRun {
        ledger: BTreeMap::new(),
        forwarded: BTreeMap::new(),
        settlements: BTreeMap::new(),
        funds: BTreeMap::new(),
        net: BTreeMap::new(),
    };
    for (partition, messages) in accounts {
        let mut funds = Funds::new(instruments).unwrap();
        let mut records = Vec::new();
        for (offset, payload) in messages {
            let position = LogPosition { partition, offset };
            let mut ledger = Vec::new();
            let mut transfer = None;
            match decode_account_record(&payload) {
                Decoded::Record(AccountRecord::Command { entry, hold_price }) => {
                    assert_eq!(
                        partition_of(entry.command.action.account(), cluster.partitions),
                        partition,
                        "command in the wrong accounts partition"
                    );
                    match funds.command(&entry.command, hold_price, &mut ledger) {
                        Decided::Order(funding) => {
                            // a mass cancel of every instrument goes to each book, in the
                            // instruments' order
                            let entries: Vec<_> = match &entry.command.action {
                                oms_core::Action::CancelAll(cancel) if cancel.symbol.is_none() => {
                                    instruments
                                        .iter()
                                        .map(|instrument| {
                                            let mut one = (*entry).clone();
                                            one.command.action =
                                                oms_core::Action::CancelAll(oms_core::CancelAll {
                                                    account: cancel.account.clone(),
                                                    symbol: Some(instrument.symbol().clone()),
                                                });
                                            one
                                        })
                                        .collect()
                                }
                                _ => vec![(*entry).clone()],
                            };
                            for entry in entries {
                                let symbol = entry.command.action.symbol().unwrap();
                                let to = partition_of(symbol, cluster.partitions);
                                run.forwarded
                                    .entry((partition, to))
                                    .or_default()
                                    .push(encode_command(&entry, &funding).unwrap());
                            }
                        }
                        Decided::Transfer(outcome) => {
                            if outcome.reject.is_none() {
                                let sign = match outcome.kind {
                                    oms_core::TransferKind::Deposit => 1,
                                    oms_core::TransferKind::Withdrawal => -1,
                                };
                                *run.net
                                    .entry(outcome.transfer.asset.to_string())
                                    .or_default() += sign * outcome.transfer.amount as i128;
                            }
                            transfer = Some(outcome);
                        }
                    }
                }
                Decoded::Record(AccountRecord::Settle(settlement)) => {
                    for record in &settlement.records {
                        funds.settle(record, &mut ledger);
                    }
                    run.settlements
                        .entry((settlement.position.partition, partition))
                        .or_default()
                        .push(settlement);
                }
                Decoded::Unreadable { .. } | Decoded::Foreign { .. } => continue,
                Decoded::Newer { version } => panic!("an accounts record of format {version}"),
            }
            if !ledger.is_empty() || transfer.is_some() {
                records.push(FundsRecord {
                    position,
                    ledger,
                    transfer,
                });
            }
        }
        if !records.is_empty() {
            run.ledger.insert(partition, records);
        }
        run.funds.insert(partition, funds);
    }
    run
}

/// The commands topic's records by where they came from: (accounts partition of the
/// command's account, commands partition) → payloads, in order.
pub fn forwarded(cluster: &Cluster) -> BTreeMap<(u32, u32), Vec<Vec<u8>>> {
    let mut out: BTreeMap<(u32, u32), Vec<Vec<u8>>> = BTreeMap::new();
    for (partition, messages) in read_topic(cluster, &format!("{}.commands", cluster.prefix)) {
        for (_, payload) in messages {
            if let Decoded::Record(forwarded) = decode_command(&payload) {
                let account = forwarded.entry.command.action.account();
                let from = partition_of(account, cluster.partitions);
                out.entry((from, partition)).or_default().push(payload);
            }
        }
    }
    out
}

/// The settlements the events imply: each event that changes money, once per accounts
/// partition it touches, grouped by command.
pub fn settlements_of(
    cluster: &Cluster,
    events: &BTreeMap<u32, Vec<Processed>>,
) -> BTreeMap<(u32, u32), Vec<Settlement>> {
    let mut out: BTreeMap<(u32, u32), Vec<Settlement>> = BTreeMap::new();
    for (partition, processed) in events {
        for processed in processed {
            let mut by_partition: BTreeMap<u32, Vec<oms_core::EventRecord>> = BTreeMap::new();
            for record in &processed.records {
                let mut to: Vec<u32> = record
                    .event
                    .settled_accounts()
                    .map(|account| partition_of(account, cluster.partitions))
                    .collect();
                to.dedup();
                for to in to {
                    by_partition.entry(to).or_default().push(record.clone());
                }
            }
            for (to, records) in by_partition {
                out.entry((*partition, to)).or_default().push(Settlement {
                    position: processed.position,
                    records,
                });
            }
        }
    }
    out
}

/// Checks that the topics hold exactly what uninterrupted stages would have written, message
/// for message: events, ledger, forwarded commands and settlements. Gives the funds run.
pub fn assert_exactly_once(cluster: &Cluster, instruments: &[Instrument]) -> FundsRun {
    let (written, expected) = (events(cluster), expected_events(cluster, instruments));
    assert_eq!(written, expected, "events differ from an uninterrupted run");
    // Every event is written, and with it every settlement (one transaction): the accounts
    // topic is complete. The funds stage may still be settling its tail.
    let run = expected_funds(cluster, instruments);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written_ledger = ledger(cluster);
    while written_ledger != run.ledger && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        written_ledger = ledger(cluster);
    }
    assert_eq!(
        written_ledger, run.ledger,
        "the ledger differs from an uninterrupted run"
    );
    assert_eq!(
        forwarded(cluster),
        run.forwarded,
        "forwarded commands differ from an uninterrupted run"
    );
    assert_eq!(
        run.settlements,
        settlements_of(cluster, &written),
        "settlements differ from what the events imply"
    );
    // Conservation: the partitions' totals add up to deposits minus withdrawals.
    let mut totals: BTreeMap<String, i128> = BTreeMap::new();
    for funds in run.funds.values() {
        for (asset, total) in funds.totals() {
            *totals.entry(asset.to_string()).or_default() += total as i128;
        }
        assert_eq!(funds.held_balances(), funds.held_by_orders());
    }
    totals.retain(|_, total| *total != 0);
    let mut net = run.net.clone();
    net.retain(|_, n| *n != 0);
    assert_eq!(totals, net, "money is conserved per asset");
    run
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
