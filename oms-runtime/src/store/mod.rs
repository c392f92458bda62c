//! The runtime's storage seams: the journal, the idempotency store, the order store (the read
//! projection) and book snapshots.
//!
//! Handlers and processing code see only these traits, so the single-node mode and the
//! production backends run the same pipeline. [`embedded`] implements all four on one redb file.

pub mod embedded;
pub mod kafka;
pub(crate) mod legacy;
pub mod mongo;
pub mod redis;

use async_trait::async_trait;
use oms_core::{
    Amount, Balance, BookSnapshot, Command, EngineSnapshot, LedgerEntry, OrderId, OrderState,
    OrderStatus, Price, Quantity, Side, TransferOutcome,
};
use serde::{Deserialize, Serialize};

/// A place in the single-node journal; positions start at 1 and never repeat.
pub type Position = u64;

/// Where an append landed: a partition of the command log and the offset in it. The single-node
/// journal has one partition, 0, whose offsets are its positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPosition {
    /// Partition of the command log.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

/// The backend a storage failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The single-node database (redb).
    Embedded,
    /// Redis (ElastiCache).
    Redis,
    /// MongoDB (DocumentDB).
    Mongodb,
    /// Kafka (MSK).
    Kafka,
}

impl Backend {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Redis => "redis",
            Backend::Mongodb => "mongodb",
            Backend::Kafka => "kafka",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Embedded => "embedded database",
            other => other.label(),
        })
    }
}

/// A storage failure. Every variant means "the dependency failed", which the API turns into a
/// 503; data never causes one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A backend failed or did not answer in time.
    #[error("{backend}: {message}")]
    Unavailable {
        /// Which one.
        backend: Backend,
        /// What it said.
        message: String,
    },
    /// A value could not be encoded for storage (a bug, never input).
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What.
        what: &'static str,
        /// What the encoder said.
        message: String,
    },
    /// Stored bytes could not be decoded.
    #[error("corrupt record in {table}: {message}")]
    Corrupt {
        /// Where.
        table: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// The store is shutting down or its writer stopped.
    #[error("store is closed")]
    Closed,
    /// The stored data was written by a version this one cannot continue from.
    #[error("{0}")]
    Incompatible(String),
}

/// Stable labels for metrics.
impl StoreError {
    /// A fixed label for this kind of failure.
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::Unavailable { backend, .. } => backend.label(),
            StoreError::Encode { .. } => "encode",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Closed => "closed",
            StoreError::Incompatible(_) => "incompatible",
        }
    }

    /// `backend` failed with `message`.
    pub fn unavailable(backend: Backend, message: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            backend,
            message: message.to_string(),
        }
    }
}

/// postcard bytes of one of our records; an error names what could not be encoded.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|error| StoreError::Encode {
        what,
        message: error.to_string(),
    })
}

/// JSON of one of our values; an error names what could not be encoded.
pub fn encode_json<T: Serialize>(what: &'static str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|error| StoreError::Encode {
        what,
        message: error.to_string(),
    })
}

/// Result of storage operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which request put a command in the journal: the principal and its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The authenticated principal (API key id).
    pub principal: String,
    /// The client's idempotency key.
    pub key: String,
    /// SHA-256 of method, path and body, hex.
    pub fingerprint: String,
}

/// One journaled command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The command, scaled and stamped.
    pub command: Command,
    /// The request that wrote it.
    pub origin: Origin,
}

/// The append-only command log, as the write path sees it.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Appends an entry and returns where it landed once it is durable (fsynced, or
    /// acknowledged by every in-sync replica).
    async fn append(&self, entry: JournalEntry) -> Result<LogPosition>;

    /// Appends entries together and returns where each landed once all are durable: one
    /// commit (single node), or records produced together and acknowledged by every in-sync
    /// replica (Kafka).
    async fn append_batch(&self, entries: Vec<JournalEntry>) -> Result<Vec<LogPosition>>;

    /// Whether the log answers; for readiness.
    async fn ping(&self) -> Result<()>;
}

/// Reading the single-node journal in order (Kafka processors consume their partitions
/// directly).
#[async_trait]
pub trait JournalReader: Send + Sync + 'static {
    /// Up to `max` entries from `from` on, waiting until at least one exists.
    async fn read(&self, from: Position, max: usize) -> Result<Vec<(Position, JournalEntry)>>;
}

/// The durable acknowledgement of a write request: the body of a 202.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ack {
    /// The order the command is about (order commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The deposit or withdrawal (funds commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    /// The client's reference, for new orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_order_id: Option<String>,
    /// Always `pending`: durable, not processed yet.
    pub status: String,
    /// Where the command is in the command log.
    pub position: LogPosition,
}

impl Ack {
    /// The acknowledgement of `entry` journaled at `position`.
    pub fn new(entry: &JournalEntry, position: LogPosition) -> Ack {
        let (order_id, client_order_id, transfer_id) = match &entry.command.action {
            oms_core::Action::New(order) => (
                Some(order.order_id),
                Some(order.client_order_id.to_string()),
                None,
            ),
            oms_core::Action::Cancel(cancel) => (Some(cancel.order_id), None, None),
            oms_core::Action::Amend(amend) => (Some(amend.order_id), None, None),
            oms_core::Action::CancelAll(_) => (None, None, None),
            oms_core::Action::Deposit(transfer) | oms_core::Action::Withdraw(transfer) => {
                (None, None, Some(transfer.transfer_id))
            }
        };
        Ack {
            order_id: order_id.map(|id| id.to_string()),
            transfer_id: transfer_id.map(|id| id.to_string()),
            client_order_id,
            status: "pending".into(),
            position,
        }
    }

    /// As a stored 202 response.
    pub fn response(&self) -> Result<StoredResponse> {
        Ok(StoredResponse {
            status: 202,
            body: encode_json("acknowledgement", self)?,
        })
    }
}

/// A response stored under an idempotency key, replayed byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// What reserving an idempotency key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The key is new and now reserved for this request.
    Reserved,
    /// Another request with this key is still being handled.
    InFlight,
    /// The key was used for a request with another fingerprint.
    Mismatch,
    /// The key's request completed; here is its response.
    Completed(StoredResponse),
}

/// Idempotency keys: at most one request per key does the work; the others see its response.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Reserves `origin.key` for `origin.principal`, or says why not.
    async fn reserve(&self, origin: &Origin) -> Result<Reservation>;
    /// Stores the response for a reserved key; it expires after the configured time to live.
    async fn complete(&self, origin: &Origin, response: &StoredResponse) -> Result<()>;
    /// Gives up a reservation whose request failed before anything was journaled, so the client
    /// may retry with the same key.
    async fn release(&self, origin: &Origin) -> Result<()>;
}

/// Cancel-after deadlines (the dead man's switch): per account, the time after which its open
/// orders are canceled unless the deadline moves first. Kept where every ingest process sees
/// them and a restart keeps them: Redis in distributed mode, the embedded database in
/// single-node mode.
#[async_trait]
pub trait Deadlines: Send + Sync + 'static {
    /// Sets or moves `account`'s deadline (milliseconds since the epoch); `None` clears it.
    async fn set_deadline(&self, account: &str, deadline_ms: Option<u64>) -> Result<()>;
    /// `account`'s deadline, if it has one.
    async fn deadline(&self, account: &str) -> Result<Option<u64>>;
    /// Claims up to `max` deadlines at or before `now_ms`: each moves to `claimed_until_ms`,
    /// so no other process takes it meanwhile, and comes back (due again) if the claimer dies
    /// before [`Deadlines::finish`]. Gives each account with the deadline it had.
    async fn claim_due(
        &self,
        now_ms: u64,
        claimed_until_ms: u64,
        max: usize,
    ) -> Result<Vec<(String, u64)>>;
    /// Removes a deadline whose cancel is journaled, unless the account set a new one since the
    /// claim (it is then no longer `claimed_until_ms`).
    async fn finish(&self, account: &str, claimed_until_ms: u64) -> Result<()>;
}

/// A trade as the read API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRecord {
    /// The book's sequence number of the trade: its id within the symbol.
    pub seq: u64,
    /// Instrument.
    pub symbol: String,
    /// Price in ticks.
    pub price: Price,
    /// Quantity in lots.
    pub quantity: Quantity,
    /// The taker's side.
    pub taker_side: Side,
    /// Taker order and account.
    pub taker_order_id: OrderId,
    /// Taker account.
    pub taker_account: String,
    /// Maker order.
    pub maker_order_id: OrderId,
    /// Maker account.
    pub maker_account: String,
    /// Nanoseconds since the epoch.
    pub ts: u64,
    /// The taker's fee: asset and amount in its units (none without funds, or at a zero rate).
    /// (No `skip_serializing_if`: trades are stored with postcard, which needs every field.)
    #[serde(default)]
    pub taker_fee: Option<(String, Amount)>,
    /// The maker's fee.
    #[serde(default)]
    pub maker_fee: Option<(String, Amount)>,
}

impl TradeRecord {
    /// A trade event as it is stored; `fee(maker)` gives each side's fee.
    pub fn of(
        record: &oms_core::EventRecord,
        trade: &oms_core::Trade,
        fee: impl Fn(bool) -> Option<(String, Amount)>,
    ) -> TradeRecord {
        TradeRecord {
            seq: record.seq,
            symbol: record.symbol.to_string(),
            price: trade.price,
            quantity: trade.quantity,
            taker_side: trade.taker.side,
            taker_order_id: trade.taker.order_id,
            taker_account: trade.taker.account.to_string(),
            maker_order_id: trade.maker.order_id,
            maker_account: trade.maker.account.to_string(),
            ts: record.ts.0,
            taker_fee: fee(false),
            maker_fee: fee(true),
        }
    }
}

/// Where a page of an account's trades ends: the last trade's time, symbol and sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeCursor {
    /// Command time of the trade, nanoseconds.
    pub ts: u64,
    /// Its instrument.
    pub symbol: String,
    /// Its sequence number.
    pub seq: u64,
}

impl TradeCursor {
    /// The cursor after `trade`.
    pub fn after(trade: &TradeRecord) -> TradeCursor {
        TradeCursor {
            ts: trade.ts,
            symbol: trade.symbol.clone(),
            seq: trade.seq,
        }
    }

    /// Reads a cursor written by [`std::fmt::Display`].
    pub fn parse(text: &str) -> Option<TradeCursor> {
        let mut parts = text.splitn(3, '.');
        let ts = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let symbol = parts.next()?.to_string();
        Some(TradeCursor { ts, symbol, seq })
    }
}

impl std::fmt::Display for TradeCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.ts, self.seq, self.symbol)
    }
}

/// Nanoseconds in a minute.
const MINUTE_NS: u64 = 60_000_000_000;

/// One minute of one instrument's trades: the read model behind the ticker (and charts). Built
/// from trades by the projection, in the same write as the trades.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    /// Instrument.
    pub symbol: String,
    /// Minutes since the Unix epoch (of the trades' command times).
    pub minute: u64,
    /// First trade's price, in ticks.
    pub open: Price,
    /// Highest price.
    pub high: Price,
    /// Lowest price.
    pub low: Price,
    /// Last trade's price.
    pub close: Price,
    /// Base traded, in lots.
    pub volume: u128,
    /// Quote traded, in notional units (ticks × lots).
    pub quote_volume: u128,
    /// Number of trades.
    pub trades: u64,
    /// The sequence number of the last trade folded in: the trades of a symbol come in
    /// sequence order, so one at or below it was counted already (a replay).
    pub last_seq: u64,
}

impl Candle {
    /// The minute of a command time.
    pub fn minute_of(ts: u64) -> u64 {
        ts / MINUTE_NS
    }

    /// A candle of one trade.
    pub fn of(trade: &TradeRecord) -> Candle {
        Candle {
            symbol: trade.symbol.clone(),
            minute: Candle::minute_of(trade.ts),
            open: trade.price,
            high: trade.price,
            low: trade.price,
            close: trade.price,
            volume: u128::from(trade.quantity.0),
            quote_volume: u128::from(trade.price.0) * u128::from(trade.quantity.0),
            trades: 1,
            last_seq: trade.seq,
        }
    }

    /// The candle of a run of candles (in minute order) taken as one: the first's open, the
    /// last's close, the extremes and the sums; none without a candle. Its `minute` is the
    /// first's.
    pub fn merged(candles: &[Candle]) -> Option<Candle> {
        let (first, rest) = candles.split_first()?;
        Some(rest.iter().fold(first.clone(), |mut merged, candle| {
            merged.high = merged.high.max(candle.high);
            merged.low = merged.low.min(candle.low);
            merged.close = candle.close;
            merged.volume += candle.volume;
            merged.quote_volume += candle.quote_volume;
            merged.trades += candle.trades;
            merged.last_seq = merged.last_seq.max(candle.last_seq);
            merged
        }))
    }

    /// Folds in a trade of its minute; a trade already folded changes nothing.
    pub fn add(&mut self, trade: &TradeRecord) {
        if trade.seq <= self.last_seq {
            return;
        }
        self.high = self.high.max(trade.price);
        self.low = self.low.min(trade.price);
        self.close = trade.price;
        self.volume += u128::from(trade.quantity.0);
        self.quote_volume += u128::from(trade.price.0) * u128::from(trade.quantity.0);
        self.trades += 1;
        self.last_seq = trade.seq;
    }
}

/// Folds `trades` (of any symbols, each symbol's in sequence order) into the candles they
/// change; `stored` gives a candle as the store has it.
pub fn fold_candles(
    trades: &[TradeRecord],
    mut stored: impl FnMut(&str, u64) -> Result<Option<Candle>>,
) -> Result<Vec<Candle>> {
    let mut changed: std::collections::BTreeMap<(String, u64), Candle> =
        std::collections::BTreeMap::new();
    for trade in trades {
        let key = (trade.symbol.clone(), Candle::minute_of(trade.ts));
        if let Some(candle) = changed.get_mut(&key) {
            candle.add(trade);
            continue;
        }
        let candle = match stored(&key.0, key.1)? {
            Some(mut candle) => {
                candle.add(trade);
                candle
            }
            None => Candle::of(trade),
        };
        changed.insert(key, candle);
    }
    Ok(changed.into_values().collect())
}

/// The changes one processed command makes to the projection.
#[derive(Clone, Debug, Default)]
pub struct ProjectionBatch {
    /// New states of every order touched.
    pub orders: Vec<OrderState>,
    /// New trades.
    pub trades: Vec<TradeRecord>,
    /// Book snapshots whose events are all in this batch or earlier ones.
    pub snapshots: Vec<(Position, BookSnapshot)>,
    /// Balance changes, in ledger order (single-node mode).
    pub ledger: Vec<LedgerEntry>,
    /// Deposits and withdrawals decided (single-node mode).
    pub transfers: Vec<TransferOutcome>,
    /// The engine's state at a journal position, once every output before it is in this batch
    /// or earlier ones (single-node mode). Shared: it is encoded off the async workers, and a
    /// snapshot holds every resting order.
    pub engine: Option<(Position, std::sync::Arc<EngineSnapshot>)>,
}

/// A page of orders, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderPage {
    /// The orders.
    pub orders: Vec<OrderState>,
    /// Pass as `before` to get the next page.
    pub next: Option<OrderId>,
}

/// What to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderQuery {
    /// Owning account.
    pub account: String,
    /// Only this instrument.
    pub symbol: Option<String>,
    /// Only orders that can still trade.
    pub open_only: bool,
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// Only orders older than this id (the cursor).
    pub before: Option<OrderId>,
    /// Page size.
    pub limit: usize,
}

/// What part of an account's ledger to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerQuery {
    /// The account.
    pub account: String,
    /// Only this asset.
    pub asset: Option<String>,
    /// Only entries before this sequence number (the cursor).
    pub before: Option<u64>,
    /// Page size.
    pub limit: usize,
}

/// A page of ledger entries, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerPage {
    /// The entries.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `before` to get the next page.
    pub next: Option<u64>,
}

/// The read side of money (single-node mode; the distributed funds stage is issue 15).
#[async_trait]
pub trait FundsStore: Send + Sync + 'static {
    /// Every balance of `account` that ever changed, by asset.
    async fn balances(&self, account: &str) -> Result<Vec<(String, Balance)>>;
    /// Ledger entries of an account, newest first.
    async fn ledger(&self, query: &LedgerQuery) -> Result<LedgerPage>;
    /// One deposit or withdrawal, once decided.
    async fn transfer(&self, transfer_id: u64) -> Result<Option<TransferOutcome>>;
}

/// The read projection: orders and trades folded from events.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Writes a batch of projection changes, idempotently. By reference: a failed write is
    /// retried with the same batch.
    async fn apply(&self, batch: &ProjectionBatch) -> Result<()>;
    /// One order.
    async fn order(&self, order_id: OrderId) -> Result<Option<OrderState>>;
    /// Orders of an account, newest first.
    async fn orders(&self, query: &OrderQuery) -> Result<OrderPage>;
    /// Trades of an account, newest first (by time, then symbol and sequence number); only
    /// those after `before` (a previous page's last) when given.
    async fn trades(
        &self,
        account: &str,
        symbol: Option<&str>,
        before: Option<&TradeCursor>,
        limit: usize,
    ) -> Result<Vec<TradeRecord>>;
    /// The newest trades of an instrument (public market data), newest first.
    async fn market_trades(&self, symbol: &str, limit: usize) -> Result<Vec<TradeRecord>>;
    /// The candles of an instrument from minute `from` on, oldest first (at most `limit`).
    async fn candles(&self, symbol: &str, from: u64, limit: usize) -> Result<Vec<Candle>>;
    /// The open order of `account` on `symbol` with this client order id, if the store can
    /// tell cheaply and exactly; `None` otherwise (the book enforces uniqueness regardless).
    async fn open_by_client_id(
        &self,
        account: &str,
        symbol: &str,
        client_order_id: &str,
    ) -> Result<Option<OrderId>>;
    /// The newest order of `account` with this client order id (on `symbol`, if given): a
    /// client order id is unique among an account's open orders on an instrument, so older
    /// orders, or orders on other instruments, may share it.
    async fn by_client_id(
        &self,
        account: &str,
        client_order_id: &str,
        symbol: Option<&str>,
    ) -> Result<Option<OrderState>>;
    /// The latest snapshot of each book, with the journal position it includes.
    async fn snapshots(&self) -> Result<Vec<(Position, BookSnapshot)>>;
    /// Whether the store answers; for readiness.
    async fn ping(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(seq: u64, ts_s: u64, price: u64, quantity: u64) -> TradeRecord {
        TradeRecord {
            seq,
            symbol: "BTC-USDT".into(),
            price: Price(price),
            quantity: Quantity(quantity),
            taker_side: Side::Buy,
            taker_order_id: OrderId(1),
            taker_account: "a".into(),
            maker_order_id: OrderId(2),
            maker_account: "b".into(),
            ts: ts_s * 1_000_000_000,
            taker_fee: None,
            maker_fee: None,
        }
    }

    #[test]
    fn candles_fold_trades_once_per_minute() {
        let trades = [
            trade(1, 60, 100, 2),
            trade(2, 70, 120, 1),
            trade(3, 80, 90, 1),
            trade(4, 125, 95, 3),
        ];
        let candles = fold_candles(&trades, |_, _| Ok(None)).unwrap();
        assert_eq!(candles.len(), 2);
        let first = &candles[0];
        assert_eq!(
            (first.minute, first.open, first.high, first.low, first.close),
            (1, Price(100), Price(120), Price(90), Price(90))
        );
        assert_eq!(
            (first.volume, first.quote_volume, first.trades),
            (4, 410, 3)
        );
        // replayed with the stored candles: nothing counted twice, a new trade added
        let stored = candles.clone();
        let again = fold_candles(&[trades[2].clone(), trade(5, 126, 97, 1)], |_, minute| {
            Ok(stored.iter().find(|c| c.minute == minute).cloned())
        })
        .unwrap();
        assert_eq!(again[0], candles[0]);
        assert_eq!(
            (again[1].trades, again[1].close, again[1].last_seq),
            (2, Price(97), 5)
        );
        let day = Candle::merged(&[again[0].clone(), again[1].clone()]).unwrap();
        assert_eq!(
            (day.open, day.high, day.low, day.close),
            (Price(100), Price(120), Price(90), Price(97))
        );
        assert_eq!((day.volume, day.trades), (8, 5));
        assert_eq!(Candle::merged(&[]), None);
    }

    #[test]
    fn failures_name_their_backend() {
        let redis = StoreError::unavailable(Backend::Redis, "connection refused");
        assert_eq!(redis.to_string(), "redis: connection refused");
        assert_eq!(redis.label(), "redis");
        let embedded = StoreError::unavailable(Backend::Embedded, "disk full");
        assert_eq!(embedded.to_string(), "embedded database: disk full");
        let labels: std::collections::BTreeSet<&str> = [
            Backend::Embedded,
            Backend::Redis,
            Backend::Mongodb,
            Backend::Kafka,
        ]
        .into_iter()
        .map(|backend| StoreError::unavailable(backend, "x").label())
        .collect();
        assert_eq!(labels.len(), 4, "one label per backend");
    }

    #[test]
    fn an_encoding_failure_is_an_error_not_empty_bytes() {
        // JSON maps need string keys: a map keyed by tuples cannot be encoded
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let error = encode_json("test map", &map).unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Encode {
                    what: "test map",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(error.label(), "encode");
    }
}
