//! The matching stage: the books of one commands partition.
//!
//! A funded command is applied as funds decided it ([`oms_core::Book::apply_funded`]); a command
//! of the formats before the funds stage as it was. Its events go to the events topic, in the
//! partition of the command; each event that changes money goes back, as one settlement per
//! accounts partition, to the partitions of the accounts it touches, in the same transaction.

use super::{
    Answer, EVENTS_FORMAT, NewerFormat, Output, Stage, StageConfig, store_answers,
    unreadable_response,
};
use crate::processing::{Processed, unroutable};
use crate::store::kafka::{
    COMMAND_FORMAT, Decoded, Forwarded, KafkaConfig, Settlement, decode_command, encode_settlement,
    partition_of, partitions,
};
use crate::store::mongo::PartitionSnapshot;
use crate::store::{Ack, LogPosition};
use anyhow::Context;
use oms_core::{Book, EventRecord, Side, Symbol};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::BTreeMap;
use tokio::runtime::Handle;

/// The books of one commands partition.
pub(super) struct Books {
    books: BTreeMap<Symbol, Book>,
    /// Partitions of the accounts topic, where settlements go.
    accounts: u32,
    answers: Vec<Answer>,
    touched: Vec<Symbol>,
    records: Vec<EventRecord>,
}

impl Books {
    /// Applies one command to its book; the events end up in `self.records`.
    fn apply_command(&mut self, forwarded: &Forwarded) -> Option<Symbol> {
        self.records.clear();
        let command = &forwarded.entry.command;
        let symbol = command.action.symbol()?;
        match self.books.get_mut(symbol) {
            Some(book) => {
                match &forwarded.funding {
                    Some(funding) => book.apply_funded(command, funding, &mut self.records),
                    None => book.apply(command, &mut self.records),
                }
                Some(symbol.clone())
            }
            None => {
                self.records = unroutable(&forwarded.entry);
                None
            }
        }
    }

    /// The settlements of the events in `self.records`, one per accounts partition touched.
    fn settlements(&self, position: LogPosition) -> BTreeMap<u32, Settlement> {
        let mut settlements: BTreeMap<u32, Settlement> = BTreeMap::new();
        for record in &self.records {
            let mut partitions: Vec<u32> = record
                .event
                .settled_accounts()
                .map(|account| partition_of(account, self.accounts))
                .collect();
            // Once per partition: both sides of a trade may live in the same one.
            partitions.dedup();
            for partition in partitions {
                settlements
                    .entry(partition)
                    .or_insert_with(|| Settlement {
                        position,
                        records: Vec::new(),
                    })
                    .records
                    .push(record.clone());
            }
        }
        settlements
    }
}

impl Stage for Books {
    const ROLE: &'static str = "processor";

    fn input(kafka: &KafkaConfig) -> String {
        kafka.commands()
    }

    fn restore(
        config: &StageConfig,
        handle: &Handle,
        partition: u32,
        partitions_of_input: u32,
    ) -> anyhow::Result<(Books, Option<u64>)> {
        let kafka = &config.kafka;
        let accounts = handle
            .block_on(partitions(kafka, &kafka.accounts()))
            .context("the accounts topic, where settlements go")?;
        let mut books = BTreeMap::new();
        for instrument in &config.instruments {
            if partition_of(instrument.symbol(), partitions_of_input) == partition {
                let book = Book::new(instrument.clone(), &config.limits)?;
                books.insert(instrument.symbol().clone(), book);
            }
        }
        let snapshot = handle.block_on(config.mongo.partition_snapshot(partition))?;
        let offset = snapshot.as_ref().map(|snapshot| snapshot.offset);
        for book in snapshot.map(|snapshot| snapshot.books).unwrap_or_default() {
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
        let stage = Books {
            books,
            accounts,
            answers: Vec::new(),
            touched: Vec::new(),
            records: Vec::new(),
        };
        Ok((stage, offset))
    }

    fn replay(&mut self, _config: &StageConfig, payload: &[u8]) {
        // Only what processing applied changes the books: rejected and foreign records do not,
        // and a newer format never reached a commit.
        if let Decoded::Record(forwarded) = decode_command(payload) {
            self.apply_command(&forwarded);
        }
    }

    fn apply(
        &mut self,
        config: &StageConfig,
        position: LogPosition,
        message: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> anyhow::Result<()> {
        let kafka = &config.kafka;
        let metrics = &config.metrics.processing;
        let (processed, key) = match decode_command(message.payload().unwrap_or_default()) {
            Decoded::Record(forwarded) => {
                let touched = self.apply_command(&forwarded);
                let key = match forwarded.entry.command.action.symbol() {
                    Some(symbol) => symbol.to_string(),
                    None => forwarded.entry.command.action.account().to_string(),
                };
                self.touched.extend(touched);
                metrics.commands.inc();
                metrics.events.inc_by(self.records.len() as u64);
                // Funded commands were answered by the funds stage; those of the formats
                // before it are answered here, as they always were.
                if forwarded.funding.is_none() {
                    let ack = Ack::new(&forwarded.entry, position).response()?;
                    self.answers
                        .push(Answer::Applied(forwarded.entry.origin.clone(), ack));
                }
                for (partition, settlement) in self.settlements(position) {
                    out.push(Output {
                        topic: kafka.accounts(),
                        partition,
                        key: key.clone(),
                        payload: encode_settlement(&settlement)?,
                        format: None,
                    });
                }
                let processed = Processed {
                    position,
                    origin: forwarded.entry.origin,
                    records: std::mem::take(&mut self.records),
                    rejected: None,
                };
                (processed, key)
            }
            Decoded::Newer { version } => {
                // Never skipped: the command waits for a build that can read it.
                return Err(NewerFormat {
                    topic: kafka.commands(),
                    partition: position.partition,
                    offset: position.offset,
                    version,
                    known: COMMAND_FORMAT,
                    upgrade: "upgrade the processors (before the funds stage)",
                }
                .into());
            }
            Decoded::Unreadable { origin, reason } => {
                tracing::error!(partition = position.partition, offset = position.offset, %reason, "unreadable command rejected");
                metrics.undecodable.inc();
                self.answers.push(Answer::Rejected(
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
            Decoded::Foreign { reason } => {
                tracing::error!(partition = position.partition, offset = position.offset, %reason, "a record that is no command skipped");
                metrics.undecodable.inc();
                return Ok(());
            }
        };
        out.push(Output {
            topic: kafka.events(),
            partition: position.partition,
            key,
            payload: postcard::to_allocvec(&processed)?,
            format: Some(EVENTS_FORMAT),
        });
        Ok(())
    }

    fn snapshot_records(&self) -> usize {
        self.books.values().map(Book::open_orders).sum()
    }

    fn recovered(&mut self, config: &StageConfig, handle: &Handle) {
        let symbols: Vec<Symbol> = self.books.keys().cloned().collect();
        handle.block_on(self.publish(config, &symbols));
    }

    async fn committed(
        &mut self,
        config: &StageConfig,
        partition: u32,
        last: u64,
        snapshot: bool,
    ) -> bool {
        store_answers(&config.redis, &std::mem::take(&mut self.answers)).await;
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort();
        touched.dedup();
        self.publish(config, &touched).await;
        if !snapshot {
            return false;
        }
        let snapshot = PartitionSnapshot {
            offset: last,
            books: self.books.values().map(Book::snapshot).collect(),
        };
        match config
            .mongo
            .save_partition_snapshot(partition, &snapshot)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(partition, %error, "snapshot not saved; will retry");
                false
            }
        }
    }
}

impl Books {
    /// Depth and the buy limit of each book in `symbols`, for the API and the ingest.
    async fn publish(&self, config: &StageConfig, symbols: &[Symbol]) {
        let redis = &config.redis;
        for symbol in symbols {
            let Some(book) = self.books.get(symbol) else {
                continue;
            };
            let published = redis
                .publish_book(symbol, &book.depth(100), book.market_limit(Side::Buy))
                .await;
            if let Err(error) = published {
                tracing::warn!(%error, "could not publish depth");
                break;
            }
        }
    }
}
