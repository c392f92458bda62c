//! Cancel-after, the dead man's switch: an account sets a timeout and refreshes it; if it
//! lapses, every open order of the account is canceled through the ordinary journaled path (a
//! mass cancel).
//!
//! The deadline lives in the [`Deadlines`] store, not in the process that took the request:
//! every API process sweeps the store ([`sweep`]) and the first to find a deadline past takes
//! it and journals the cancel, so it fires even when the process that set it died (single-node
//! mode: when the process is back). The core stays without a clock: the cancel is a command
//! like any other, stamped by the sweeping process.

use super::error::{ApiError, ErrorBody};
use super::handlers::{account_of, body_error, json_content, now, parse, query_error};
use super::model::rfc3339;
use super::{AppState, json};
use crate::auth::{Principal, Scope};
use crate::metrics::Metrics;
use crate::store::{Deadlines, Journal, JournalEntry, Origin};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use oms_core::{Action, CancelAll, Command};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Longest timeout.
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;
/// Deadlines fired per sweep at most (the rest wait for the next).
const SWEEP_BATCH: usize = 100;
/// How long a claimed deadline is held by the process that claimed it: if that process dies
/// before journaling the cancel, another fires it after this.
const CLAIM: Duration = Duration::from_secs(10);
/// The principal the cancels are journaled under.
const PRINCIPAL: &str = "system.cancel-after";

/// `POST /v1/cancel-after` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelAfterRequest {
    /// Account; may be left out when the key has exactly one.
    #[serde(default)]
    account: Option<String>,
    /// Seconds from now until every open order of the account is canceled, 1 to 86,400; 0
    /// turns the switch off.
    timeout_seconds: u64,
}

/// An account's switch.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CancelAfterView {
    /// The account.
    pub account: String,
    /// When its open orders are canceled unless the deadline moves (RFC 3339); none when off.
    pub deadline: Option<String>,
}

fn view(account: String, deadline_ms: Option<u64>) -> CancelAfterView {
    CancelAfterView {
        account,
        deadline: deadline_ms.map(|ms| rfc3339(ms * 1_000_000)),
    }
}

/// Set, refresh or clear the account's cancel-after deadline.
///
/// Each call replaces the deadline with now + `timeout_seconds` (0 clears it). Calling again
/// with the same body moves the deadline, which is the point; no Idempotency-Key is needed.
#[utoipa::path(
    post,
    path = "/v1/cancel-after",
    tag = "orders",
    request_body = CancelAfterRequest,
    responses(
        (status = 200, description = "The deadline now", body = CancelAfterView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account, or a key without the trade scope", body = ErrorBody),
        (status = 415, description = "The body is not JSON (Content-Type)", body = ErrorBody),
        (status = 503, description = "The deadline store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn set(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Trade)?;
    json_content(&headers)?;
    let body = body.map_err(body_error)?;
    let request: CancelAfterRequest = parse(&body)?;
    let account = account_of(&principal, request.account)?;
    let deadline = match request.timeout_seconds {
        0 => None,
        seconds @ 1..=MAX_TIMEOUT_SECONDS => Some(now().0 / 1_000_000 + seconds * 1_000),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_timeout",
                format!("timeout_seconds must be 0 (off) to {MAX_TIMEOUT_SECONDS}"),
            )
            .with_field("timeout_seconds"));
        }
    };
    app.guard(
        "deadline store",
        app.deadlines.set_deadline(&account, deadline),
    )
    .await?;
    Ok(json(view(account, deadline)))
}

/// Whose switch.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Account; may be left out when the key has exactly one.
    account: Option<String>,
}

/// The account's cancel-after deadline.
#[utoipa::path(
    get,
    path = "/v1/cancel-after",
    tag = "orders",
    params(AccountQuery),
    responses(
        (status = 200, description = "The deadline", body = CancelAfterView),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account", body = ErrorBody),
        (status = 503, description = "The deadline store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Read)?;
    let Query(query) = query.map_err(query_error)?;
    let account = account_of(&principal, query.account)?;
    let deadline = app
        .guard("deadline store", app.deadlines.deadline(&account))
        .await?;
    Ok(json(view(account, deadline)))
}

/// Journals the mass cancel of every account whose deadline is past; gives how many fired.
///
/// A deadline is claimed before its cancel is journaled and removed after: a process that dies
/// in between leaves it claimed for [`CLAIM`], and then another fires it. The cancel may so be
/// journaled twice, which cancels nothing more than once would have, unless the account placed
/// orders in between without setting a new deadline (a new deadline ends the claim).
pub async fn fire_due(
    journal: &dyn Journal,
    deadlines: &dyn Deadlines,
    metrics: &Metrics,
) -> crate::store::Result<usize> {
    let stamp = now();
    let now_ms = stamp.0 / 1_000_000;
    let claimed_until = now_ms + CLAIM.as_millis() as u64;
    let due = deadlines
        .claim_due(now_ms, claimed_until, SWEEP_BATCH)
        .await?;
    let mut fired = 0;
    for (account, deadline) in due {
        let entry = JournalEntry {
            command: Command {
                ts: stamp,
                action: Action::CancelAll(CancelAll {
                    account: account.as_str().into(),
                    symbol: None,
                }),
            },
            origin: Origin {
                principal: PRINCIPAL.into(),
                key: format!("{account}/{deadline}"),
                fingerprint: "cancel-after".into(),
            },
        };
        match journal.append(entry).await {
            Ok(position) => {
                fired += 1;
                metrics.ingest.cancel_after_fired.inc();
                tracing::info!(%account, deadline, partition = position.partition, offset = position.offset, "cancel-after fired");
                deadlines.finish(&account, claimed_until).await?;
            }
            // Still claimed: fired again once the claim runs out.
            Err(error) => tracing::warn!(%account, %error, "cancel-after could not be journaled"),
        }
    }
    Ok(fired)
}

/// Sweeps the deadlines every `every` for as long as the process runs.
pub fn sweep(
    journal: Arc<dyn Journal>,
    deadlines: Arc<dyn Deadlines>,
    metrics: Arc<Metrics>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = fire_due(journal.as_ref(), deadlines.as_ref(), &metrics).await {
                tracing::warn!(%error, "cancel-after sweep failed");
            }
        }
    })
}
