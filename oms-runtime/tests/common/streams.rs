//! Reading streams in tests: every update until a quiet moment, and a book rebuilt from its
//! snapshot and updates.

use oms_runtime::streams::client::{ClientError, StreamClient};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every update until nothing arrives for `quiet`.
pub async fn drain(client: &mut StreamClient, quiet: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        match client.update(quiet).await {
            Ok(message) => seen.push(message),
            Err(ClientError::Timeout(_)) => return seen,
            Err(error) => panic!("stream failed: {error}"),
        }
    }
}

/// A book from a snapshot and its updates, checking the chain of sequence numbers.
#[derive(Default)]
pub struct Book {
    pub seq: u64,
    pub bids: BTreeMap<String, String>,
    pub asks: BTreeMap<String, String>,
}

impl Book {
    /// Applies `message` if it is a book snapshot or update.
    pub fn apply(&mut self, message: &Value) {
        let side = |levels: &Value, into: &mut BTreeMap<String, String>| {
            for level in levels.as_array().unwrap() {
                let (price, quantity) = (level[0].as_str().unwrap(), level[1].as_str().unwrap());
                if quantity == "0" {
                    into.remove(price);
                } else {
                    into.insert(price.to_string(), quantity.to_string());
                }
            }
        };
        match message["type"].as_str() {
            Some("book_snapshot") => *self = Book::default(),
            Some("book_update") => {
                assert_eq!(
                    message["prev_seq"], self.seq,
                    "a gap in the book: {message}"
                );
            }
            _ => return,
        }
        self.seq = message["seq"].as_u64().unwrap();
        side(&message["bids"], &mut self.bids);
        side(&message["asks"], &mut self.asks);
    }

    /// Checks that this is the book of `GET /v1/book` (`rest`, its JSON).
    pub fn assert_matches(&self, rest: &Value) {
        let levels = |side: &Value| -> BTreeMap<String, String> {
            side.as_array()
                .unwrap()
                .iter()
                .map(|l| (l[0].as_str().unwrap().into(), l[1].as_str().unwrap().into()))
                .collect()
        };
        assert_eq!(self.seq, rest["seq"].as_u64().unwrap());
        assert_eq!(self.bids, levels(&rest["bids"]));
        assert_eq!(self.asks, levels(&rest["asks"]));
    }
}
