//! Handlers of the v1 API. Bad input is refused here, before anything touches a store.

use super::error::{ApiError, ErrorBody};
use super::manage::order_id;
use super::model::{FillView, OrderList, OrderRequest, OrderView, TradeList};
use super::write::{fingerprint, idempotency_key, prefer_wait};
use super::{AppState, MAX_BODY_BYTES, json};
use crate::auth::{Principal, Scope};
use crate::store::{Ack, OrderQuery, Origin, TradeCursor};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use oms_core::{Action, Command, NewOrder, OrderStatus, Timestamp};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use utoipa::IntoParams;

/// Now, as a command's timestamp: the edge stamps commands, so the core never reads a clock.
pub(crate) fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    )
}

pub(super) fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(MAX_BODY_BYTES)
    } else {
        ApiError::bad_request("unreadable_body", rejection.body_text())
    }
}

pub(super) fn query_error(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", rejection.body_text())
}

pub(super) fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request("invalid_path", rejection.body_text())
}

/// A body must be JSON: a `Content-Type` naming anything else is refused (none means JSON).
pub(super) fn json_content(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

/// Parses a JSON object body; errors name the field at fault.
pub(super) fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    // Derived deserializers also accept arrays for structs; an API body is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the body must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_data() {
            let error = ApiError::bad_request("invalid_field", inner.to_string());
            if path == "." {
                error
            } else {
                error.with_field(path)
            }
        } else {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            )
        }
    })?;
    deserializer.end().map_err(|_| {
        ApiError::bad_request("malformed_json", "trailing characters after the JSON body")
    })?;
    Ok(value)
}

/// A new order, checked against its instrument and the key's accounts.
pub(crate) fn checked_order(
    app: &AppState,
    principal: &Principal,
    request: OrderRequest,
) -> Result<NewOrder, ApiError> {
    let market = app.markets.get(request.symbol.as_str()).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_symbol",
            format!("unknown symbol {:?}", request.symbol),
        )
        .with_field("symbol")
    })?;
    if !principal.may_use(&request.account) {
        return Err(ApiError::forbidden(format!(
            "this API key may not trade account {:?}",
            request.account
        )));
    }
    request.to_order(app.ids.next(), &market.instrument, &market.checks)
}

/// The command placing `order`, unless the account has an order open on the instrument with
/// its client order id: a fast 409 where the store can tell. The book enforces the rule exactly
/// regardless (the order is then rejected with duplicate_client_order_id), so while the read
/// store is down orders still go in.
pub(crate) async fn order_command(app: &AppState, order: NewOrder) -> Result<Command, ApiError> {
    match app
        .guard(
            "order store",
            app.orders
                .open_by_client_id(&order.account, &order.symbol, &order.client_order_id),
        )
        .await
    {
        Ok(Some(existing)) => {
            return Err(ApiError::conflict(
                "duplicate_client_order_id",
                format!("order {existing} of this account is open with the same client_order_id"),
            )
            .with_field("client_order_id"));
        }
        Ok(None) => {}
        Err(_) => tracing::warn!("client order id not checked: the order store is unavailable"),
    }
    Ok(Command {
        ts: now(),
        action: Action::New(order),
    })
}

/// Place an order.
///
/// Answers 202 once the order is durable in the journal. With `Prefer: wait=N` it waits up to N
/// seconds for the order to be processed and answers 201 with the order's state.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    request_body = OrderRequest,
    params(
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters; retries with the same key and body replay the first answer"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds for the processing outcome"),
    ),
    responses(
        (status = 202, description = "Durable; not processed yet", body = Ack),
        (status = 201, description = "Processed (with Prefer: wait)", body = OrderView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not trade this account", body = ErrorBody),
        (status = 409, description = "Same key still in flight, or client_order_id already open", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON (Content-Type)", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable; retry after Retry-After", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn place_order(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Trade)?;
    let key = idempotency_key(&headers)?;
    json_content(&headers)?;
    let body = body.map_err(body_error)?;
    let request: OrderRequest = parse(&body)?;
    let order = checked_order(&app, &principal, request)?;
    let origin = Origin {
        principal: principal.id.clone(),
        key,
        fingerprint: fingerprint("POST", "/v1/orders", &body),
    };
    let wait = prefer_wait(&headers, app.settings.max_wait);
    let build = order_command(&app, order);
    app.write(origin, wait, StatusCode::CREATED, build).await
}

/// Most orders in one batch.
pub const MAX_BATCH: usize = 20;

/// `POST /v1/orders/batch` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 20 orders, each as the body of `POST /v1/orders` (see `OrderRequest`). Each is
    /// checked on its own: an object that is not a valid order is refused in its result, not
    /// with the request (anything but an object makes the whole request a 400).
    #[schema(value_type = Vec<Object>)]
    orders: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Place up to 20 orders in one request.
///
/// Each order is checked on its own: the valid ones are journaled together in one durable
/// append, the others refused with their error; the answer (202) has one result per order, in
/// order. The batch's `Idempotency-Key` covers the whole: a retry gets the same answer and
/// journals nothing twice. Processing is as for single orders; follow each with
/// `GET /v1/orders/{order_id}`.
#[utoipa::path(
    post,
    path = "/v1/orders/batch",
    tag = "orders",
    request_body = BatchRequest,
    params(
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters; covers the whole batch"),
    ),
    responses(
        (status = 202, description = "The valid orders are durable; one result per order", body = super::write::BatchResponse),
        (status = 400, description = "Not a batch (malformed, empty, more than 20 orders)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "A key without the trade scope", body = ErrorBody),
        (status = 409, description = "Same key still in flight", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON (Content-Type)", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable; retry after Retry-After", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn place_batch(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Trade)?;
    let key = idempotency_key(&headers)?;
    json_content(&headers)?;
    let body = body.map_err(body_error)?;
    let request: BatchRequest = parse(&body)?;
    if request.orders.is_empty() || request.orders.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("a batch has 1 to {MAX_BATCH} orders"),
        )
        .with_field("orders"));
    }
    let origin = Origin {
        principal: principal.id.clone(),
        key,
        fingerprint: fingerprint("POST", "/v1/orders/batch", &body),
    };
    let mut items = Vec::with_capacity(request.orders.len());
    for order in request.orders {
        let parsed = serde_json::to_vec(&order)
            .map_err(ApiError::internal)
            .and_then(|bytes| parse::<OrderRequest>(&bytes));
        // No early duplicate_client_order_id here: a retry of a batch whose first attempt
        // journaled some orders must find those by their keys, not refuse them as duplicates.
        // The book enforces the rule.
        let order = parsed.and_then(|request| checked_order(&app, &principal, request));
        items.push(order.map(|order| Command {
            ts: now(),
            action: Action::New(order),
        }));
    }
    app.write_batch(origin, items).await
}

/// One order.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "Invalid order id", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's order", body = ErrorBody),
        (status = 404, description = "No such order (or not processed yet)", body = ErrorBody),
        (status = 503, description = "The order store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_order(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Read)?;
    let Path(id) = path.map_err(path_error)?;
    let order_id = order_id(&id)?;
    let state = app
        .guard("order store", app.orders.order(order_id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no order {order_id}")))?;
    if !principal.may_use(&state.order.account) {
        return Err(ApiError::forbidden(
            "this order belongs to an account of another key",
        ));
    }
    Ok(json(OrderView::new(
        &state,
        app.instrument(&state.order.symbol),
    )))
}

/// Filters of `GET /v1/orders`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListOrders {
    /// Account; may be left out when the key has exactly one.
    account: Option<String>,
    /// Only this instrument.
    symbol: Option<String>,
    /// `open` (new or partially filled) or one status.
    status: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

pub(super) fn account_of(
    principal: &Principal,
    account: Option<String>,
) -> Result<String, ApiError> {
    let account = match (account, principal.accounts.as_slice()) {
        (Some(account), _) => account,
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ApiError::bad_request(
                "missing_account",
                "this key has several accounts; name one with ?account=",
            )
            .with_field("account"));
        }
    };
    if principal.may_use(&account) {
        Ok(account)
    } else {
        Err(ApiError::forbidden(format!(
            "this API key may not read account {account:?}"
        )))
    }
}

pub(super) fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(100) {
        limit @ 1..=1000 => Ok(limit),
        _ => Err(
            ApiError::bad_request("invalid_limit", "limit must be 1 to 1000").with_field("limit"),
        ),
    }
}

/// Orders of an account, newest first.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    params(ListOrders),
    responses(
        (status = 200, description = "A page of orders", body = OrderList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account", body = ErrorBody),
        (status = 503, description = "The order store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_orders(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<ListOrders>, QueryRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Read)?;
    let Query(query) = query.map_err(query_error)?;
    let account = account_of(&principal, query.account)?;
    let (open_only, status) = match query.status.as_deref() {
        None => (false, None),
        Some("open") => (true, None),
        Some(other) => {
            let status: OrderStatus = serde_json::from_value(other.into()).map_err(|_| {
                ApiError::bad_request(
                    "invalid_status",
                    "status must be open, new, partially_filled, filled, canceled, rejected or expired",
                )
                .with_field("status")
            })?;
            (status.is_open(), Some(status))
        }
    };
    let before = query.cursor.as_deref().map(order_id).transpose()?;
    let page = app
        .guard(
            "order store",
            app.orders.orders(&OrderQuery {
                account,
                symbol: query.symbol,
                open_only,
                status,
                before,
                limit: limit(query.limit)?,
            }),
        )
        .await?;
    Ok(json(OrderList {
        orders: page
            .orders
            .iter()
            .map(|state| OrderView::new(state, app.instrument(&state.order.symbol)))
            .collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// Filters of `GET /v1/trades`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListTrades {
    /// Account; may be left out when the key has exactly one.
    account: Option<String>,
    /// Only this instrument.
    symbol: Option<String>,
    /// Most trades returned, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The account's fills, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/trades",
    tag = "orders",
    params(ListTrades),
    responses(
        (status = 200, description = "Trades", body = TradeList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account", body = ErrorBody),
        (status = 503, description = "The order store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_trades(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<ListTrades>, QueryRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Read)?;
    let Query(query) = query.map_err(query_error)?;
    let account = account_of(&principal, query.account)?;
    let before = match query.cursor.as_deref() {
        Some(text) => Some(TradeCursor::parse(text).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "cursor must be a next_cursor of a page")
                .with_field("cursor")
        })?),
        None => None,
    };
    let limit = limit(query.limit)?;
    let mut trades = app
        .guard(
            "order store",
            app.orders.trades(
                &account,
                query.symbol.as_deref(),
                before.as_ref(),
                limit + 1,
            ),
        )
        .await?;
    let more = trades.len() > limit;
    trades.truncate(limit);
    Ok(json(TradeList {
        trades: trades
            .iter()
            .flat_map(|trade| {
                FillView::of(trade, &account, app.instrument(&trade.symbol), &app.assets)
            })
            .collect(),
        next_cursor: more
            .then(|| {
                trades
                    .last()
                    .map(|trade| TradeCursor::after(trade).to_string())
            })
            .flatten(),
    }))
}
