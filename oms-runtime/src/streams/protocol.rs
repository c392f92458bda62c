//! The messages of `GET /v1/ws`, both ways (documented in `docs/api.md`).

use super::Topic;
use crate::api::funds::LedgerEntryView;
use crate::api::model::{FillView, MarketTradeView, OrderView, TickerView};
use serde::{Deserialize, Serialize};

/// Largest message a client may send.
pub const MAX_CLIENT_MESSAGE: usize = 4096;

/// A channel as named in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// An account's order states.
    Orders,
    /// An account's fills.
    Fills,
    /// An account's balance changes.
    Balances,
    /// A book: snapshot, then updates.
    Book,
    /// Public trades.
    Trades,
    /// Ticker.
    Ticker,
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Authenticates the connection (when the upgrade carried no `Authorization` header).
    Auth {
        /// The API key.
        key: String,
    },
    /// Starts a subscription.
    Subscribe {
        /// Echoed in the answer.
        id: Option<u64>,
        /// Which channel.
        channel: Channel,
        /// The account, for orders, fills and balances.
        account: Option<String>,
        /// The instrument, for book, trades and ticker.
        symbol: Option<String>,
        /// Resume a private channel after this cursor.
        cursor: Option<String>,
    },
    /// Ends a subscription.
    Unsubscribe {
        /// Echoed in the answer.
        id: Option<u64>,
        /// Which channel.
        channel: Channel,
        /// The account.
        account: Option<String>,
        /// The instrument.
        symbol: Option<String>,
    },
    /// Asks for a `pong`.
    Ping {
        /// Echoed in the answer.
        id: Option<u64>,
    },
}

/// What the server sends besides updates.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control<'a> {
    /// After authentication.
    Welcome {
        /// The key's id.
        key: &'a str,
        /// The heartbeat interval.
        heartbeat_ms: u64,
        /// The cursor as of now.
        cursor: String,
    },
    /// A request was done.
    Ack {
        /// The request's id.
        id: Option<u64>,
        /// `subscribe` or `unsubscribe`.
        op: &'static str,
        /// The channel.
        channel: &'static str,
        /// Updates resent from the window after a cursor.
        #[serde(skip_serializing_if = "Option::is_none")]
        replayed: Option<usize>,
    },
    /// The cursor of a subscription could not be resumed: read the state from the REST API;
    /// updates from now on follow.
    Resync {
        /// The request's id.
        id: Option<u64>,
        /// The channel.
        channel: &'static str,
        /// The account.
        account: &'a str,
    },
    /// A request was refused.
    Error {
        /// The request's id, if it had one.
        id: Option<u64>,
        /// Stable code.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The request's id.
        id: Option<u64>,
    },
    /// Every heartbeat interval: the connection is alive, and everything before `cursor` was
    /// sent.
    Heartbeat {
        /// The cursor as of now.
        cursor: String,
        /// Server time (RFC 3339).
        time: String,
    },
}

/// The updates, as they reach clients (private ones get a `cursor` field first).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message<'a> {
    /// An order's new state.
    Order {
        /// The account.
        account: &'a str,
        /// The order; `version` increases by one per change.
        order: OrderView,
    },
    /// One side of a trade.
    Fill {
        /// The account.
        account: &'a str,
        /// The fill.
        fill: FillView,
    },
    /// A balance change.
    Balance {
        /// The account.
        account: &'a str,
        /// The ledger entry, with the balance after it.
        entry: LedgerEntryView,
    },
    /// A book's levels when the subscription starts.
    BookSnapshot {
        /// Instrument.
        symbol: &'a str,
        /// The book's sequence number as of the snapshot.
        seq: u64,
        /// `[price, quantity]`, best first.
        bids: Vec<[String; 2]>,
        /// `[price, quantity]`, best first.
        asks: Vec<[String; 2]>,
    },
    /// Changed levels; a quantity of `0` removes the level.
    BookUpdate {
        /// Instrument.
        symbol: &'a str,
        /// The book's sequence number after the change.
        seq: u64,
        /// The `seq` of the previous snapshot or update sent; if it is not the last one seen,
        /// something was missed: subscribe again.
        prev_seq: u64,
        /// Changed bids.
        bids: Vec<[String; 2]>,
        /// Changed asks.
        asks: Vec<[String; 2]>,
    },
    /// A public trade.
    Trade {
        /// Instrument.
        symbol: &'a str,
        /// The trade.
        trade: MarketTradeView,
    },
    /// The ticker (at most once a second per instrument).
    Ticker {
        /// The ticker.
        ticker: TickerView,
    },
}

/// JSON text of a message (serializing these types cannot fail).
pub fn text<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

/// The topic a subscribe or unsubscribe names, or why it names none.
pub fn topic(
    channel: Channel,
    account: Option<String>,
    symbol: Option<String>,
) -> Result<Topic, &'static str> {
    match (channel, account, symbol) {
        (Channel::Orders, Some(account), None) => Ok(Topic::Orders(account.into())),
        (Channel::Fills, Some(account), None) => Ok(Topic::Fills(account.into())),
        (Channel::Balances, Some(account), None) => Ok(Topic::Balances(account.into())),
        (Channel::Book, None, Some(symbol)) => Ok(Topic::Book(symbol.into())),
        (Channel::Trades, None, Some(symbol)) => Ok(Topic::Trades(symbol.into())),
        (Channel::Ticker, None, Some(symbol)) => Ok(Topic::Ticker(symbol.into())),
        (Channel::Orders | Channel::Fills | Channel::Balances, _, _) => {
            Err("orders, fills and balances take an account and no symbol")
        }
        _ => Err("book, trades and ticker take a symbol and no account"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_strictly() {
        let request: Request = serde_json::from_str(
            r#"{"op":"subscribe","id":7,"channel":"orders","account":"alice","cursor":"4"}"#,
        )
        .unwrap();
        let Request::Subscribe {
            id,
            channel,
            account,
            cursor,
            ..
        } = request
        else {
            panic!("not a subscribe: {request:?}");
        };
        assert_eq!(
            (id, channel, account.as_deref(), cursor.as_deref()),
            (Some(7), Channel::Orders, Some("alice"), Some("4"))
        );
        for bad in [
            r#"{"op":"subscribe","channel":"orders","acount":"alice"}"#,
            r#"{"op":"subscribe","channel":"depth","symbol":"BTC-USDT"}"#,
            r#"{"op":"dance"}"#,
            r#"{"channel":"orders"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_topic_needs_the_right_name() {
        assert_eq!(
            topic(Channel::Book, None, Some("BTC-USDT".into())),
            Ok(Topic::Book("BTC-USDT".into()))
        );
        assert!(topic(Channel::Orders, None, Some("BTC-USDT".into())).is_err());
        assert!(topic(Channel::Trades, Some("alice".into()), None).is_err());
        assert!(topic(Channel::Fills, Some("a".into()), Some("B".into())).is_err());
    }
}
