//! The write path shared by placing, amending, canceling (one order or all of an account's),
//! depositing and withdrawing: idempotency, durability, optional wait. A batch of orders
//! ([`AppState::write_batch`]) takes the same steps for several commands in one append.
//!
//! ```text
//! reserve key ─▶ build command (may refuse: key released) ─▶ append, durable ─▶ store response
//!      │                                                          │
//!      ├─ completed earlier: replay its response                  └─ Prefer: wait=N: wait for
//!      ├─ in flight: 409                                             processing, answer 201/200
//!      └─ other body: 422                                            with the order
//! ```
//! Every await on a dependency is bounded by the dependency timeout ([`AppState::guard`], a 503
//! after it; the waits of `Prefer: wait` by the wait). Once a key is reserved, the append and the
//! storing (or releasing) of the key run in their own task: a client that hangs up, or a request
//! that times out with a 503, can never leave a key reserved forever or half-written.

use super::AppState;
use super::error::ApiError;
use super::funds::TransferView;
use super::model::{MassCancelView, OrderView};
use crate::metrics::OutcomeLabels;
use crate::processing::Outcome;
use crate::store::{
    Ack, IdempotencyStore, Journal, JournalEntry, LogPosition, Origin, Reservation, StoreError,
    StoredResponse,
};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use oms_core::{Command, OrderId};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Longest idempotency key.
pub const MAX_KEY_LENGTH: usize = 255;

/// The `Idempotency-Key` header: required, 1 to 255 printable ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Err(ApiError::bad_request(
            "missing_idempotency_key",
            "write requests need an Idempotency-Key header",
        )
        .with_field("Idempotency-Key"));
    };
    let key = value.to_str().unwrap_or_default();
    let printable = key.bytes().all(|b| (0x20..0x7f).contains(&b));
    if key.is_empty() || key.len() > MAX_KEY_LENGTH || !printable {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"),
        )
        .with_field("Idempotency-Key"));
    }
    Ok(key.to_string())
}

/// SHA-256 over method, path and body: what "the same request" means for a key.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    hex::encode(hash.finalize())
}

/// `Prefer: wait=N` (RFC 7240), capped at `max`; `None` when absent or zero.
pub fn prefer_wait(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            let (name, value) = preference.split(';').next()?.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("wait"))
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())?
        })
        .next()
        .filter(|seconds| *seconds > 0)
        .map(|seconds| Duration::from_secs(seconds).min(max))
}

fn stored(response: &StoredResponse, replayed: bool) -> Response {
    let mut out = Response::new(Body::from(response.body.clone()));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let headers = out.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    out
}

impl AppState {
    /// Runs one write request under `origin`'s idempotency key. `build` runs only for a new key
    /// and produces the command (or refuses, which releases the key). A waited-for outcome is
    /// answered with `waited_status` and the order's state.
    pub async fn write(
        &self,
        origin: Origin,
        wait: Option<Duration>,
        waited_status: StatusCode,
        build: impl Future<Output = Result<Command, ApiError>>,
    ) -> Result<Response, ApiError> {
        if let Some(replayed) = self.reserve(&origin).await? {
            return Ok(replayed);
        }
        let command = match build.await {
            Ok(command) => command,
            Err(error) => {
                self.release(&origin).await;
                return Err(error);
            }
        };
        let subject = Subject::of(&command);
        let entry = JournalEntry {
            command,
            origin: origin.clone(),
        };
        let waiter = wait
            .and(self.waiters.as_ref())
            .map(|waiters| waiters.register(&origin));
        // Without in-process notification, waiting means watching the order's version move.
        let version_before = match (wait, &waiter, &subject) {
            (Some(_), None, Subject::Order(order_id)) => self.current_version(*order_id).await,
            _ => 0,
        };
        let started = std::time::Instant::now();
        let task = tokio::spawn(append_and_store(
            self.journal.clone(),
            self.idempotency.clone(),
            entry,
        ));
        let ack = match tokio::time::timeout(self.settings.dependency_timeout, task).await {
            Ok(Ok(Ok(ack))) => ack,
            failed => {
                self.forget(&origin);
                return Err(match failed {
                    Err(_) => self.unavailable("journal", "append timed out"),
                    Ok(Err(join)) => ApiError::internal(join),
                    Ok(Ok(Err(store))) => self.unavailable("journal", store),
                    Ok(Ok(Ok(_))) => unreachable!("handled above"),
                });
            }
        };
        self.metrics
            .ingest
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        let Some(wait) = wait else {
            return Ok(stored(&ack, false));
        };
        let processed = match (waiter, &subject) {
            (Some(waiter), _) => tokio::time::timeout(wait, waiter)
                .await
                .ok()
                .and_then(Result::ok),
            (None, Subject::Order(order_id)) => {
                tokio::time::timeout(wait, self.poll_version(*order_id, version_before))
                    .await
                    .is_ok_and(|seen| seen)
                    .then(Outcome::default)
            }
            (None, Subject::Transfer(transfer_id)) => {
                tokio::time::timeout(wait, self.poll_transfer(*transfer_id))
                    .await
                    .ok()
                    .map(|()| Outcome::default())
            }
            // The projection cannot tell when every book has applied a mass cancel: durable is
            // all this mode says.
            (None, Subject::Account(_)) => None,
        };
        let Some(processed) = processed else {
            self.forget(&origin);
            return Ok(stored(&ack, false));
        };
        let Some(response) = self.outcome(&subject, processed, waited_status).await? else {
            return Ok(stored(&ack, false));
        };
        // Stored before answering, so a retry that follows this answer replays it. Failing to
        // store it only means retries get the 202 instead.
        if let Err(error) = self
            .guard(
                "idempotency store",
                self.idempotency.complete(&origin, &response),
            )
            .await
        {
            tracing::warn!(code = error.code(), "could not store the waited response");
        }
        let mut out = stored(&response, false);
        out.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
                .unwrap_or(HeaderValue::from_static("wait")),
        );
        Ok(out)
    }

    /// Reserves `origin`'s key: `None` when this request may go on, the stored answer when
    /// the key's request completed, an error when it is in flight or was another request.
    async fn reserve(&self, origin: &Origin) -> Result<Option<Response>, ApiError> {
        let reservation = self
            .guard("idempotency store", self.idempotency.reserve(origin))
            .await?;
        let outcome = match &reservation {
            Reservation::Reserved => "reserved",
            Reservation::Completed(_) => "replayed",
            Reservation::InFlight => "in_flight",
            Reservation::Mismatch => "mismatch",
        };
        self.metrics
            .ingest
            .idempotency
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        match reservation {
            Reservation::Reserved => Ok(None),
            Reservation::Completed(response) => Ok(Some(stored(&response, true))),
            Reservation::InFlight => Err(ApiError::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            )),
            Reservation::Mismatch => Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )),
        }
    }

    /// The processed outcome of a command as a response: the state of the order or transfer it
    /// was about, the count of a mass cancel, or the refusal of a cancel or amendment. None if
    /// the store cannot say.
    async fn outcome(
        &self,
        subject: &Subject,
        processed: Outcome,
        waited_status: StatusCode,
    ) -> Result<Option<StoredResponse>, ApiError> {
        if let Some(reject) = processed.refused {
            let error = ApiError::refused(reject);
            return Ok(Some(StoredResponse {
                status: error.status().as_u16(),
                body: error.body(),
            }));
        }
        let body = match subject {
            Subject::Order(order_id) => {
                let Ok(Some(state)) = self
                    .guard("order store", self.orders.order(*order_id))
                    .await
                else {
                    return Ok(None);
                };
                serde_json::to_string(&OrderView::new(
                    &state,
                    self.instrument(&state.order.symbol),
                ))
            }
            Subject::Transfer(transfer_id) => {
                let Ok(Some(outcome)) = self
                    .guard("funds store", self.funds.transfer(*transfer_id))
                    .await
                else {
                    return Ok(None);
                };
                serde_json::to_string(&TransferView::new(&outcome, &self.assets))
            }
            Subject::Account(cancel) => serde_json::to_string(&MassCancelView {
                account: cancel.account.to_string(),
                symbol: cancel.symbol.as_ref().map(ToString::to_string),
                canceled: processed.canceled,
            }),
        };
        Ok(Some(StoredResponse {
            status: waited_status.as_u16(),
            body: body.map_err(ApiError::internal)?,
        }))
    }

    fn forget(&self, origin: &Origin) {
        if let Some(waiters) = &self.waiters {
            waiters.forget(origin);
        }
    }

    /// The order's version before the command, or `u64::MAX` when the projection cannot say
    /// (waiting would not see anything then).
    async fn current_version(&self, order_id: OrderId) -> u64 {
        match self.guard("order store", self.orders.order(order_id)).await {
            Ok(state) => state.map_or(0, |state| state.version),
            Err(_) => u64::MAX,
        }
    }

    /// Polls the projection until the order's version moves past `before`; each read is bounded
    /// by the dependency timeout, the whole by the caller's wait. False if it cannot tell.
    async fn poll_version(&self, order_id: OrderId, before: u64) -> bool {
        if before == u64::MAX {
            return false;
        }
        loop {
            let read = self.orders.order(order_id);
            if let Ok(Ok(Some(state))) =
                tokio::time::timeout(self.settings.dependency_timeout, read).await
                && state.version > before
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls the funds projection until the transfer is decided; each read is bounded by the
    /// dependency timeout, the whole by the caller's wait.
    async fn poll_transfer(&self, transfer_id: u64) {
        loop {
            let read = self.funds.transfer(transfer_id);
            if let Ok(Ok(Some(_))) =
                tokio::time::timeout(self.settings.dependency_timeout, read).await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn release(&self, origin: &Origin) {
        // A key left reserved expires with its lease; the client's error is what matters here.
        if let Err(error) = self
            .guard("idempotency store", self.idempotency.release(origin))
            .await
        {
            tracing::warn!(code = error.code(), "could not release an idempotency key");
        }
    }
}

/// What a command is about: the order, the transfer or the account whose state a waiting
/// request gets.
#[derive(Clone, Debug)]
enum Subject {
    Order(OrderId),
    Transfer(u64),
    Account(oms_core::CancelAll),
}

impl Subject {
    fn of(command: &Command) -> Subject {
        match &command.action {
            oms_core::Action::New(order) => Subject::Order(order.order_id),
            oms_core::Action::Cancel(cancel) => Subject::Order(cancel.order_id),
            oms_core::Action::Amend(amend) => Subject::Order(amend.order_id),
            oms_core::Action::Deposit(transfer) | oms_core::Action::Withdraw(transfer) => {
                Subject::Transfer(transfer.transfer_id)
            }
            oms_core::Action::CancelAll(cancel) => Subject::Account(cancel.clone()),
        }
    }
}

/// One order of a batch as the edge judged it: its command, or why it was refused.
pub type BatchItem = Result<Command, ApiError>;

/// The answer to a batch: one result per order, in the request's order.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BatchResponse {
    /// For each order: its acknowledgement (`status: pending`), or `{"error": ...}` with why it
    /// was refused (nothing of it journaled).
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<serde_json::Value>,
}

impl AppState {
    /// Runs a batch of writes under `origin`'s idempotency key: the valid commands are journaled
    /// in one append, each under a key of its own (`<key>#<index>`), so that a retry after a
    /// crash journals none twice. The whole answer is stored under the batch's key.
    pub async fn write_batch(
        &self,
        origin: Origin,
        items: Vec<BatchItem>,
    ) -> Result<Response, ApiError> {
        if let Some(replayed) = self.reserve(&origin).await? {
            return Ok(replayed);
        }
        let refused = |error: &ApiError| serde_json::from_str(&error.body()).unwrap_or_default();
        let mut results = vec![serde_json::Value::Null; items.len()];
        let mut pending = Vec::new();
        let mut reserved = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let command = match item {
                Ok(command) => command,
                Err(error) => {
                    results[index] = refused(&error);
                    continue;
                }
            };
            let one = Origin {
                key: format!("{}#{index}", origin.key),
                ..origin.clone()
            };
            match self
                .guard("idempotency store", self.idempotency.reserve(&one))
                .await
            {
                Ok(Reservation::Reserved) => {
                    reserved.push(one.clone());
                    pending.push((
                        index,
                        JournalEntry {
                            command,
                            origin: one,
                        },
                    ));
                }
                // Journaled by an earlier attempt that died before answering.
                Ok(Reservation::Completed(response)) => {
                    results[index] = serde_json::from_str(&response.body).unwrap_or_default();
                }
                Ok(Reservation::InFlight | Reservation::Mismatch) => {
                    results[index] = refused(&ApiError::conflict(
                        "idempotency_key_in_use",
                        "an earlier attempt at this batch is still journaling this order",
                    ));
                }
                Err(error) => {
                    for one in reserved.iter().chain([&origin]) {
                        self.release(one).await;
                    }
                    return Err(error);
                }
            }
        }
        let started = std::time::Instant::now();
        let task = tokio::spawn(append_batch_and_store(
            self.journal.clone(),
            self.idempotency.clone(),
            origin,
            pending,
            results,
        ));
        let response = match tokio::time::timeout(self.settings.dependency_timeout, task).await {
            Ok(Ok(Ok(response))) => response,
            Err(_) => return Err(self.unavailable("journal", "append timed out")),
            Ok(Err(join)) => return Err(ApiError::internal(join)),
            Ok(Ok(Err(store))) => return Err(self.unavailable("journal", store)),
        };
        self.metrics
            .ingest
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(stored(&response, false))
    }
}

/// Appends a batch's commands in one append, stores each one's acknowledgement under its own
/// key and the whole answer under the batch's; on a failed append releases them all. Runs to
/// the end even when the request that started it is gone.
async fn append_batch_and_store(
    journal: Arc<dyn Journal>,
    idempotency: Arc<dyn IdempotencyStore>,
    origin: Origin,
    pending: Vec<(usize, JournalEntry)>,
    mut results: Vec<serde_json::Value>,
) -> Result<StoredResponse, StoreError> {
    let (indexes, entries): (Vec<usize>, Vec<JournalEntry>) = pending.into_iter().unzip();
    let acks: Vec<(Origin, Ack)> = entries
        .iter()
        .map(|entry| {
            (
                entry.origin.clone(),
                Ack::new(
                    entry,
                    LogPosition {
                        partition: 0,
                        offset: 0,
                    },
                ),
            )
        })
        .collect();
    let positions = match journal.append_batch(entries).await {
        Ok(positions) => positions,
        Err(error) => {
            for one in acks.iter().map(|(one, _)| one).chain([&origin]) {
                if let Err(error) = idempotency.release(one).await {
                    tracing::warn!(%error, "could not release an idempotency key");
                }
            }
            return Err(error);
        }
    };
    for ((index, (one, ack)), position) in indexes.into_iter().zip(acks).zip(positions) {
        let ack = Ack { position, ..ack };
        let response = ack.response()?;
        if let Err(error) = idempotency.complete(&one, &response).await {
            tracing::error!(%error, "journaled, but an order's response could not be stored");
        }
        results[index] = serde_json::to_value(&ack).map_err(|error| StoreError::Encode {
            what: "acknowledgement",
            message: error.to_string(),
        })?;
    }
    let response = StoredResponse {
        status: 202,
        body: crate::store::encode_json("batch answer", &BatchResponse { results })?,
    };
    if let Err(error) = idempotency.complete(&origin, &response).await {
        tracing::error!(%error, "journaled, but the batch's response could not be stored");
    }
    Ok(response)
}

/// Appends and then stores the acknowledgement under the key, or releases the key if the
/// append failed. Runs to the end even when the request that started it is gone. Gives the
/// acknowledgement as the 202 response.
async fn append_and_store(
    journal: Arc<dyn Journal>,
    idempotency: Arc<dyn IdempotencyStore>,
    entry: JournalEntry,
) -> Result<StoredResponse, StoreError> {
    let origin = entry.origin.clone();
    let ack = Ack::new(
        &entry,
        crate::store::LogPosition {
            partition: 0,
            offset: 0,
        },
    );
    match journal.append(entry).await {
        Ok(position) => {
            let response = Ack { position, ..ack }.response()?;
            if let Err(error) = idempotency.complete(&origin, &response).await {
                // The command is durable; only the stored answer is missing. How a retry fares
                // depends on the backend (the embedded one stored it with the append).
                tracing::error!(%error, "journaled, but the response could not be stored");
            }
            Ok(response)
        }
        Err(error) => {
            if let Err(error) = idempotency.release(&origin).await {
                tracing::warn!(%error, "could not release an idempotency key");
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn prefer_wait_is_parsed_and_capped() {
        let max = Duration::from_secs(10);
        assert_eq!(
            prefer_wait(&headers(&[("prefer", "wait=5")]), max),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            prefer_wait(&headers(&[("prefer", "respond-async, wait=100")]), max),
            Some(max)
        );
        assert_eq!(prefer_wait(&headers(&[("prefer", "wait=0")]), max), None);
        assert_eq!(prefer_wait(&headers(&[("prefer", "wait=x")]), max), None);
        assert_eq!(prefer_wait(&headers(&[]), max), None);
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(idempotency_key(&headers(&[("idempotency-key", "abc-123")])).is_ok());
        assert!(idempotency_key(&headers(&[])).is_err());
        let long = "k".repeat(256);
        assert!(idempotency_key(&headers(&[("idempotency-key", &long)])).is_err());
        assert!(idempotency_key(&headers(&[("idempotency-key", "")])).is_err());
    }

    #[test]
    fn fingerprints_differ_by_method_path_and_body() {
        let a = fingerprint("POST", "/v1/orders", b"{}");
        assert_eq!(a, fingerprint("POST", "/v1/orders", b"{}"));
        assert_ne!(a, fingerprint("POST", "/v1/orders", b"{ }"));
        assert_ne!(a, fingerprint("DELETE", "/v1/orders", b"{}"));
    }
}
