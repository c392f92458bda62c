//! The funds stage: the balances of the accounts of one accounts partition.
//!
//! Its input mixes two writers in one order: clients' commands (from the ingest) and
//! settlements (from the matching stage). A command is decided by [`Funds::command`]: a deposit
//! or withdrawal ends here, an order command goes on to the commands topic with the decision
//! (held, or refused), in the partition of its symbol. A settlement is folded by
//! [`Funds::settle`]. Every balance change goes to the ledger topic, in this partition, in the
//! same transaction; the projector folds it into MongoDB.
//!
//! The funds stage is the first to read a client's command, so it also stores the command's
//! acknowledgement under its idempotency key (unless the ingest did): a key whose ingest died
//! after journaling is never journaled twice by a retry.

use super::{Answer, NewerFormat, Output, Stage, StageConfig, store_answers, unreadable_response};
use crate::store::kafka::{
    ACCOUNTS_FORMAT, AccountRecord, Decoded, FundsRecord, KafkaConfig, decode_account_record,
    encode_command, encode_funds_record, partition_of, partitions,
};
use crate::store::mongo::FundsPartitionSnapshot;
use crate::store::{Ack, JournalEntry, LogPosition};
use anyhow::Context;
use oms_core::funds::Decided;
use oms_core::{Action, CancelAll, Funds, LedgerEntry};
use rdkafka::message::{BorrowedMessage, Message};
use tokio::runtime::Handle;

/// The funds of one accounts partition.
pub(super) struct Accounts {
    funds: Funds,
    /// Partitions of the commands topic, where order commands go.
    commands: u32,
    answers: Vec<Answer>,
    ledger: Vec<LedgerEntry>,
}

impl Accounts {
    /// Applies one record to funds: the ledger entries end up in `self.ledger`; a command's
    /// decision is returned.
    fn apply_record(&mut self, record: &AccountRecord) -> Option<Decided> {
        self.ledger.clear();
        match record {
            AccountRecord::Command { entry, hold_price } => Some(self.funds.command(
                &entry.command,
                *hold_price,
                &mut self.ledger,
            )),
            AccountRecord::Settle(settlement) => {
                for record in &settlement.records {
                    self.funds.settle(record, &mut self.ledger);
                }
                None
            }
        }
    }
}

/// An order command as the books get it: a mass cancel of every instrument becomes one mass
/// cancel per instrument (each book sees it in its own partition, after every command the
/// account sent before it); anything else goes as it is.
fn per_symbol<'a>(
    entry: &'a JournalEntry,
    instruments: &[oms_core::Instrument],
) -> Vec<std::borrow::Cow<'a, JournalEntry>> {
    use std::borrow::Cow;
    match &entry.command.action {
        Action::CancelAll(cancel) if cancel.symbol.is_none() => instruments
            .iter()
            .map(|instrument| {
                let mut one = entry.clone();
                one.command.action = Action::CancelAll(CancelAll {
                    account: cancel.account.clone(),
                    symbol: Some(instrument.symbol().clone()),
                });
                Cow::Owned(one)
            })
            .collect(),
        _ => vec![Cow::Borrowed(entry)],
    }
}

impl Stage for Accounts {
    const ROLE: &'static str = "funds";

    fn input(kafka: &KafkaConfig) -> String {
        kafka.accounts()
    }

    fn restore(
        config: &StageConfig,
        handle: &Handle,
        partition: u32,
        _partitions: u32,
    ) -> anyhow::Result<(Accounts, Option<u64>)> {
        let kafka = &config.kafka;
        let commands = handle
            .block_on(partitions(kafka, &kafka.commands()))
            .context("the commands topic, where order commands go")?;
        let snapshot = handle.block_on(config.mongo.funds_snapshot(partition))?;
        let (funds, offset) = match snapshot {
            Some(snapshot) => (
                Funds::restore(&config.instruments, &snapshot.funds)
                    .with_context(|| format!("restoring the funds of partition {partition}"))?,
                Some(snapshot.offset),
            ),
            None => (Funds::new(&config.instruments)?, None),
        };
        let stage = Accounts {
            funds,
            commands,
            answers: Vec::new(),
            ledger: Vec::new(),
        };
        Ok((stage, offset))
    }

    fn replay(&mut self, _config: &StageConfig, payload: &[u8]) {
        // Only readable records changed funds; a newer format never reached a commit.
        if let Decoded::Record(record) = decode_account_record(payload) {
            self.apply_record(&record);
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
        let record = match decode_account_record(message.payload().unwrap_or_default()) {
            Decoded::Record(record) => record,
            Decoded::Newer { version } => {
                // Never skipped: the record waits for a build that can read it.
                return Err(NewerFormat {
                    topic: kafka.accounts(),
                    partition: position.partition,
                    offset: position.offset,
                    version,
                    known: ACCOUNTS_FORMAT,
                    upgrade: "upgrade the funds stage (before the ingest)",
                }
                .into());
            }
            Decoded::Unreadable { origin, reason } => {
                tracing::error!(partition = position.partition, offset = position.offset, %reason, "unreadable command rejected");
                metrics.undecodable.inc();
                self.answers
                    .push(Answer::Rejected(origin, unreadable_response(&reason)));
                return Ok(());
            }
            Decoded::Foreign { reason } => {
                tracing::error!(partition = position.partition, offset = position.offset, %reason, "a record that is none of ours skipped");
                metrics.undecodable.inc();
                return Ok(());
            }
        };
        let decided = self.apply_record(&record);
        metrics.funds_records.inc();
        metrics.ledger_entries.inc_by(self.ledger.len() as u64);
        let mut transfer = None;
        if let AccountRecord::Command { entry, .. } = &record {
            let ack = Ack::new(entry, position).response()?;
            self.answers
                .push(Answer::Applied(entry.origin.clone(), ack));
            match decided {
                Some(Decided::Order(funding)) => {
                    for entry in per_symbol(entry, &config.instruments) {
                        let symbol = entry.command.action.symbol().map(|s| s.to_string());
                        let symbol = symbol.unwrap_or_default();
                        out.push(Output {
                            topic: kafka.commands(),
                            partition: partition_of(&symbol, self.commands),
                            key: symbol,
                            payload: encode_command(&entry, &funding)?,
                            format: None,
                        });
                    }
                }
                Some(Decided::Transfer(outcome)) => transfer = Some(outcome),
                None => {}
            }
        }
        if !self.ledger.is_empty() || transfer.is_some() {
            let record = FundsRecord {
                position,
                ledger: std::mem::take(&mut self.ledger),
                transfer,
            };
            let key = message
                .key()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            out.push(Output {
                topic: kafka.ledger(),
                partition: position.partition,
                key,
                payload: encode_funds_record(&record)?,
                format: None,
            });
        }
        Ok(())
    }

    fn snapshot_records(&self) -> usize {
        self.funds.records()
    }

    fn recovered(&mut self, _config: &StageConfig, _handle: &Handle) {}

    async fn committed(
        &mut self,
        config: &StageConfig,
        partition: u32,
        last: u64,
        snapshot: bool,
    ) -> bool {
        store_answers(&config.redis, &std::mem::take(&mut self.answers)).await;
        if !snapshot {
            return false;
        }
        let snapshot = FundsPartitionSnapshot {
            offset: last,
            funds: self.funds.snapshot(),
        };
        match config.mongo.save_funds_snapshot(partition, &snapshot).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(partition, %error, "funds snapshot not saved; will retry");
                false
            }
        }
    }
}
