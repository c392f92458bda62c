//! Order ids: 64-bit, unique across ingest processes, increasing in time.
//!
//! Layout: 41 bits of milliseconds since 2025-01-01, 10 bits of node id, 12 bits of sequence.
//! Ids never go backwards: a clock that steps back, or more than 4096 ids in a millisecond,
//! borrow from the next millisecond instead.

use oms_core::OrderId;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const EPOCH_MS: u64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z
const NODE_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
/// Largest node id.
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;

/// Hands out order ids for one node.
pub struct OrderIds {
    node: u64,
    last: Mutex<(u64, u64)>,
}

impl OrderIds {
    /// A generator for `node` (0..=1023) that never returns an id at or below `floor`.
    pub fn new(node: u16, floor: Option<OrderId>) -> OrderIds {
        let node = u64::from(node.min(MAX_NODE));
        let last = floor.map_or((0, 0), |id| {
            (
                id.0 >> (NODE_BITS + SEQUENCE_BITS),
                id.0 & ((1 << SEQUENCE_BITS) - 1),
            )
        });
        OrderIds {
            node,
            last: Mutex::new(last),
        }
    }

    /// The next id.
    pub fn next(&self) -> OrderId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(EPOCH_MS);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (ms, sequence) = *last;
        *last = if now > ms {
            (now, 0)
        } else if sequence + 1 < (1 << SEQUENCE_BITS) {
            (ms, sequence + 1)
        } else {
            (ms + 1, 0)
        };
        let (ms, sequence) = *last;
        OrderId(ms << (NODE_BITS + SEQUENCE_BITS) | self.node << SEQUENCE_BITS | sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_carry_the_node() {
        let ids = OrderIds::new(5, None);
        let mut previous = ids.next();
        for _ in 0..20_000 {
            let id = ids.next();
            assert!(id > previous);
            assert_eq!((id.0 >> SEQUENCE_BITS) & u64::from(MAX_NODE), 5);
            previous = id;
        }
    }

    #[test]
    fn ids_stay_above_the_floor() {
        let far = OrderIds::new(0, None).next().0 + (1000 << 22);
        let ids = OrderIds::new(0, Some(OrderId(far)));
        assert!(ids.next().0 > far);
    }
}
