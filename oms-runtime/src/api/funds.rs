//! Money over HTTP: balances, the ledger, deposits and withdrawals (single-node mode).
//!
//! Deposits and withdrawals are commands like orders: journaled under an idempotency key
//! (`Idempotency-Key`), decided by the engine in journal order, and visible with
//! `Prefer: wait=N` or `GET /v1/transfers/{transfer_id}`. They need a key with the `funds`
//! scope; reads need `read`.

use super::error::{ApiError, ErrorBody};
use super::handlers::{
    account_of, body_error, json_content, limit, now, parse, path_error, query_error,
};
use super::model::{DecimalString, rfc3339};
use super::write::{fingerprint, idempotency_key, prefer_wait};
use super::{AppState, json, require};
use crate::auth::{Principal, Scope};
use crate::store::{Ack, LedgerQuery, Origin};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use oms_core::funds::{Assets, Cause};
use oms_core::{
    Action, Amount, Command, EntryKind, LedgerEntry, RejectReason, Transfer, TransferKind,
    TransferOutcome,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/deposits` and `POST /v1/withdrawals` body.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The account.
    pub account: String,
    /// The asset, such as `USDT`.
    pub asset: String,
    /// How much: a positive decimal string with at most the asset's decimals.
    #[schema(value_type = String, example = "1000.50", pattern = r"^-?[0-9]+(\.[0-9]+)?$", max_length = 40)]
    pub amount: DecimalString,
}

/// Whether a transfer went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// The balance changed.
    Completed,
    /// Refused; nothing changed.
    Rejected,
}

/// A deposit or withdrawal, as decided.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TransferView {
    /// Its id.
    pub transfer_id: String,
    /// Deposit or withdrawal.
    pub kind: TransferKind,
    /// The account.
    pub account: String,
    /// The asset.
    pub asset: String,
    /// The amount.
    pub amount: String,
    /// Completed or rejected.
    pub status: TransferStatus,
    /// Why it was rejected, such as `insufficient_funds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<RejectReason>,
    /// When it was journaled (RFC 3339).
    pub created_at: String,
}

impl TransferView {
    /// The view of a decided transfer.
    pub fn new(outcome: &TransferOutcome, assets: &Assets) -> TransferView {
        let transfer = &outcome.transfer;
        TransferView {
            transfer_id: transfer.transfer_id.to_string(),
            kind: outcome.kind,
            account: transfer.account.to_string(),
            asset: transfer.asset.to_string(),
            amount: assets.decimal(&transfer.asset, transfer.amount).to_string(),
            status: match outcome.reject {
                None => TransferStatus::Completed,
                Some(_) => TransferStatus::Rejected,
            },
            reject_reason: outcome.reject.map(|reject| reject.reason),
            created_at: rfc3339(outcome.ts.0),
        }
    }
}

/// One asset's balance.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BalanceView {
    /// The asset.
    pub asset: String,
    /// Free to trade or withdraw.
    pub available: String,
    /// Held for open orders.
    pub held: String,
    /// Available and held.
    pub total: String,
}

/// An account's balances, one per asset of the configured instruments.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BalanceList {
    /// The account.
    pub account: String,
    /// By asset.
    pub balances: Vec<BalanceView>,
}

/// One change of one balance.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerEntryView {
    /// Position in the ledger; entries of one account are in this order.
    pub seq: u64,
    /// The asset.
    pub asset: String,
    /// Deposit, withdrawal, hold, release, trade or fee.
    pub kind: EntryKind,
    /// Change of `available` (signed decimal).
    pub available_change: String,
    /// Change of `held` (signed decimal).
    pub held_change: String,
    /// `available` after the change.
    pub available: String,
    /// `held` after the change.
    pub held: String,
    /// The order, for holds, releases, trades and fees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The instrument and trade id, for trades and fees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// The trade's id in its book.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_id: Option<u64>,
    /// The deposit or withdrawal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

impl LedgerEntryView {
    pub(crate) fn new(entry: &LedgerEntry, assets: &Assets) -> LedgerEntryView {
        let scale = assets.scale(&entry.asset).unwrap_or(0);
        let signed = |change: i128| {
            Decimal::try_from_i128_with_scale(change, scale)
                .unwrap_or(Decimal::MAX)
                .to_string()
        };
        let amount = |amount: Amount| assets.decimal(&entry.asset, amount).to_string();
        let (order_id, symbol, trade_id, transfer_id) = match &entry.cause {
            Cause::Transfer(id) => (None, None, None, Some(id.to_string())),
            Cause::Order(order_id) => (Some(order_id.to_string()), None, None, None),
            Cause::Trade {
                symbol,
                trade_id,
                order_id,
            } => (
                Some(order_id.to_string()),
                Some(symbol.to_string()),
                Some(*trade_id),
                None,
            ),
        };
        LedgerEntryView {
            seq: entry.seq,
            asset: entry.asset.to_string(),
            kind: entry.kind,
            available_change: signed(entry.available_change),
            held_change: signed(entry.held_change),
            available: amount(entry.balance.available),
            held: amount(entry.balance.held),
            order_id,
            symbol,
            trade_id,
            transfer_id,
            at: rfc3339(entry.ts.0),
        }
    }
}

/// A page of ledger entries.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerList {
    /// Newest first.
    pub entries: Vec<LedgerEntryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/balances` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BalancesQuery {
    /// Account; may be left out when the key has exactly one.
    account: Option<String>,
}

/// An account's balances.
#[utoipa::path(
    get,
    path = "/v1/balances",
    tag = "funds",
    params(BalancesQuery),
    responses(
        (status = 200, description = "One balance per asset", body = BalanceList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account, or no read scope", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn balances(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<BalancesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::Read)?;
    let Query(query) = query.map_err(query_error)?;
    let account = account_of(&principal, query.account)?;
    let balances = balances_of(&app, &account)
        .await?
        .into_iter()
        .map(|(asset, balance)| BalanceView::of(&app.assets, asset, balance))
        .collect();
    Ok(json(BalanceList { account, balances }))
}

/// Every asset's balance of `account`: zero for an asset it never held.
pub(crate) async fn balances_of(
    app: &AppState,
    account: &str,
) -> Result<Vec<(String, oms_core::Balance)>, ApiError> {
    let stored = app
        .guard("funds store", app.funds.balances(account))
        .await?;
    Ok(app
        .assets
        .iter()
        .map(|(asset, _)| {
            let balance = stored
                .iter()
                .find(|(name, _)| name == asset.as_str())
                .map(|(_, balance)| *balance)
                .unwrap_or_default();
            (asset.to_string(), balance)
        })
        .collect())
}

impl BalanceView {
    /// `balance` of `asset` as decimals.
    pub(crate) fn of(assets: &Assets, asset: String, balance: oms_core::Balance) -> BalanceView {
        let decimal = |amount| assets.decimal(&asset, amount).to_string();
        BalanceView {
            available: decimal(balance.available),
            held: decimal(balance.held),
            total: decimal(balance.total()),
            asset,
        }
    }
}

/// `GET /v1/ledger` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LedgerParams {
    /// Account; may be left out when the key has exactly one.
    account: Option<String>,
    /// Only this asset.
    asset: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An account's ledger, newest first: every change of its balances.
#[utoipa::path(
    get,
    path = "/v1/ledger",
    tag = "funds",
    params(LedgerParams),
    responses(
        (status = 200, description = "A page of entries", body = LedgerList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account, or no read scope", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn ledger(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<LedgerParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::Read)?;
    let store = &app.funds;
    let Query(query) = query.map_err(query_error)?;
    let account = account_of(&principal, query.account)?;
    let before = query
        .cursor
        .as_deref()
        .map(|cursor| {
            cursor.parse::<u64>().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "cursor must be a next_cursor")
                    .with_field("cursor")
            })
        })
        .transpose()?;
    let page = app
        .guard(
            "funds store",
            store.ledger(&LedgerQuery {
                account,
                asset: query.asset,
                before,
                limit: limit(query.limit)?,
            }),
        )
        .await?;
    Ok(json(LedgerList {
        entries: page
            .entries
            .iter()
            .map(|entry| LedgerEntryView::new(entry, &app.assets))
            .collect(),
        next_cursor: page.next.map(|seq| seq.to_string()),
    }))
}

/// Deposit into an account.
///
/// Answers 202 once the deposit is durable; with `Prefer: wait=N`, 201 and the transfer once
/// processed.
#[utoipa::path(
    post,
    path = "/v1/deposits",
    tag = "funds",
    request_body = TransferRequest,
    params(
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`"),
    ),
    responses(
        (status = 202, description = "Durable; not processed yet", body = Ack),
        (status = 201, description = "Processed (with Prefer: wait)", body = TransferView),
        (status = 400, description = "Invalid request (unknown_asset, too_precise, ...)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account, or no funds scope", body = ErrorBody),
        (status = 409, description = "Same key still in flight", body = ErrorBody),
        (status = 415, description = "The body is not JSON (Content-Type)", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn deposit(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    transfer(app, principal, headers, body, TransferKind::Deposit).await
}

/// Withdraw from an account: at most what is available (else the transfer is rejected with
/// `insufficient_funds` and nothing changes).
#[utoipa::path(
    post,
    path = "/v1/withdrawals",
    tag = "funds",
    request_body = TransferRequest,
    params(
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`"),
    ),
    responses(
        (status = 202, description = "Durable; not processed yet", body = Ack),
        (status = 201, description = "Processed (with Prefer: wait): completed or rejected", body = TransferView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account, or no funds scope", body = ErrorBody),
        (status = 409, description = "Same key still in flight", body = ErrorBody),
        (status = 415, description = "The body is not JSON (Content-Type)", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn withdraw(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    transfer(app, principal, headers, body, TransferKind::Withdrawal).await
}

async fn transfer(
    app: Arc<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: TransferKind,
) -> Result<Response, ApiError> {
    require(&principal, Scope::Funds)?;
    let key = idempotency_key(&headers)?;
    json_content(&headers)?;
    let body = body.map_err(body_error)?;
    let request: TransferRequest = parse(&body)?;
    if !principal.may_use(&request.account) {
        return Err(ApiError::forbidden(format!(
            "this API key may not use account {:?}",
            request.account
        )));
    }
    let amount = app.assets.amount(&request.asset, request.amount.0)?;
    let transfer = Transfer {
        transfer_id: app.ids.next().0,
        account: request.account.as_str().into(),
        asset: request.asset.as_str().into(),
        amount,
    };
    let path = match kind {
        TransferKind::Deposit => "/v1/deposits",
        TransferKind::Withdrawal => "/v1/withdrawals",
    };
    let origin = Origin {
        principal: principal.id,
        key,
        fingerprint: fingerprint("POST", path, &body),
    };
    let wait = prefer_wait(&headers, app.settings.max_wait);
    let build = async {
        Ok(Command {
            ts: now(),
            action: match kind {
                TransferKind::Deposit => Action::Deposit(transfer),
                TransferKind::Withdrawal => Action::Withdraw(transfer),
            },
        })
    };
    app.write(origin, wait, StatusCode::CREATED, build).await
}

/// One deposit or withdrawal, once processed.
#[utoipa::path(
    get,
    path = "/v1/transfers/{transfer_id}",
    tag = "funds",
    params(("transfer_id" = String, Path, description = "Transfer id")),
    responses(
        (status = 200, description = "The transfer", body = TransferView),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account, or no read scope", body = ErrorBody),
        (status = 404, description = "No such transfer (or not processed yet)", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_transfer(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::Read)?;
    let store = &app.funds;
    let Path(id) = path.map_err(path_error)?;
    let transfer_id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_transfer_id",
            "transfer ids are unsigned 64-bit integers",
        )
        .with_field("transfer_id")
    })?;
    let outcome = app
        .guard("funds store", store.transfer(transfer_id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no transfer {transfer_id}")))?;
    if !principal.may_use(&outcome.transfer.account) {
        return Err(ApiError::forbidden(
            "this transfer belongs to an account of another key",
        ));
    }
    Ok(json(TransferView::new(&outcome, &app.assets)))
}
