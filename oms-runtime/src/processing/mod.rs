//! Processing: commands, in log order, through the books, into events and the read projection.
//!
//! - [`local`]: single-node mode, one process, the embedded journal.
//! - [`kafka`]: the funds and matching stages and the projector on Kafka.
//!
//! Both apply commands with the same books and fold events with the same [`Projection`].

pub mod kafka;
pub mod local;
pub(crate) mod projection;

pub use local::{BookHandle, Outcome, Pipeline, Waiters};
pub use projection::Projection;

use crate::store::redis::RedisStore;
use crate::store::{JournalEntry, LogPosition, Origin, StoreError};
use async_trait::async_trait;
use oms_core::{Action, Depth, Event, EventRecord, Reject, RejectReason, Symbol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the API gets book depth: the local book actors, or what processors publish.
#[async_trait]
pub trait DepthSource: Send + Sync + 'static {
    /// The best `levels` levels of `symbol`'s book; `None` if nothing is known of it.
    async fn depth(&self, symbol: &str, levels: usize) -> Result<Option<Depth>, StoreError>;
}

#[async_trait]
impl DepthSource for BTreeMap<Symbol, BookHandle> {
    async fn depth(&self, symbol: &str, levels: usize) -> Result<Option<Depth>, StoreError> {
        match self.get(symbol) {
            Some(handle) => handle
                .depth(levels)
                .await
                .map(Some)
                .ok_or(StoreError::Closed),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl DepthSource for RedisStore {
    async fn depth(&self, symbol: &str, levels: usize) -> Result<Option<Depth>, StoreError> {
        let depth = RedisStore::depth(self, symbol).await?;
        Ok(depth.map(|mut depth| {
            depth.bids.truncate(levels);
            depth.asks.truncate(levels);
            depth
        }))
    }
}

/// One applied command: where it was in the command log, who sent it, what was decided. The
/// payload of the events topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processed {
    /// The command's place in the log.
    pub position: LogPosition,
    /// The request that wrote it.
    pub origin: Origin,
    /// The events, in order.
    pub records: Vec<EventRecord>,
    /// Why the command was rejected without being applied (it could not be read); its
    /// `records` are empty then.
    pub rejected: Option<String>,
}

/// What a command for an instrument that is not configured (any more) decides: a new order is
/// rejected with `unknown_symbol` (sequence 0, outside any book's history); anything else is
/// dropped.
pub fn unroutable(entry: &JournalEntry) -> Vec<EventRecord> {
    let symbol = entry
        .command
        .action
        .symbol()
        .map_or("", |symbol| symbol.as_str());
    tracing::warn!(symbol, "command for an unconfigured symbol or role");
    match &entry.command.action {
        Action::New(order) => vec![EventRecord {
            seq: 0,
            ts: entry.command.ts,
            symbol: order.symbol.clone(),
            event: Event::Rejected {
                order: order.clone(),
                reject: Reject::new(RejectReason::UnknownSymbol),
            },
        }],
        _ => Vec::new(),
    }
}

/// Whether a snapshot is due after `since` commands: every `every` commands, or every as many
/// commands as the state holds `records` once it holds more. A snapshot costs in proportion to
/// the state, so its cost per command stays at most about one record's whatever the state's
/// size, and a restart replays at most as many commands as the snapshot it restores holds
/// records (a fixed interval under a large book would snapshot the whole book every few
/// thousand commands). Redis rewrites its append-only file on the same principle.
pub(crate) fn snapshot_due(since: u64, every: u64, records: usize) -> bool {
    since >= every.max(records as u64)
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn snapshots_follow_the_interval_until_the_state_outgrows_it() {
        assert!(!snapshot_due(9_999, 10_000, 500));
        assert!(snapshot_due(10_000, 10_000, 500));
        assert!(snapshot_due(10_000, 10_000, 10_000));
        assert!(!snapshot_due(10_000, 10_000, 60_000));
        assert!(!snapshot_due(59_999, 10_000, 60_000));
        assert!(snapshot_due(60_000, 10_000, 60_000));
    }
}
