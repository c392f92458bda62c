//! Changing open orders: cancel and amend by order id, look up and cancel by client order id,
//! cancel everything of an account (a mass cancel).
//!
//! Each write names an order the read projection knows (or an account), is checked here, and is
//! journaled like a placement; the book decides it. A cancel or amendment the book refuses (the
//! order filled meanwhile, the amendment changes nothing, funds cannot cover it) leaves the order
//! unchanged: with `Prefer: wait` the answer is then `409` with the reason as its code.

use super::error::{ApiError, ErrorBody};
use super::handlers::{account_of, body_error, json_content, now, parse, path_error, query_error};
use super::model::{AmendRequest, MassCancelView, OrderView};
use super::write::{fingerprint, idempotency_key, prefer_wait};
use super::{AppState, json};
use crate::auth::{Principal, Scope};
use crate::store::{Ack, Origin};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use oms_core::{Action, AmendOrder, CancelAll, CancelOrder, Command, OrderId, OrderState, Symbol};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

pub(super) fn order_id(text: &str) -> Result<OrderId, ApiError> {
    text.parse().map(OrderId).map_err(|_| {
        ApiError::bad_request("invalid_order_id", "order ids are unsigned 64-bit integers")
            .with_field("order_id")
    })
}

/// The open order `order_id` of an account of the principal, from the projection.
async fn open_order(
    app: &AppState,
    principal: &Principal,
    order_id: OrderId,
) -> Result<OrderState, ApiError> {
    let state = app
        .guard("order store", app.orders.order(order_id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no order {order_id}")))?;
    owned_and_open(principal, state)
}

fn owned_and_open(principal: &Principal, state: OrderState) -> Result<OrderState, ApiError> {
    if !principal.may_use(&state.order.account) {
        return Err(ApiError::forbidden(
            "this order belongs to an account of another key",
        ));
    }
    if !state.status.is_open() {
        return Err(ApiError::conflict(
            "order_not_open",
            format!("order {} is {:?}", state.order.order_id, state.status).to_lowercase(),
        ));
    }
    Ok(state)
}

pub(crate) fn cancel_command(state: &OrderState) -> Command {
    Command {
        ts: now(),
        action: Action::Cancel(CancelOrder {
            order_id: state.order.order_id,
            account: state.order.account.clone(),
            symbol: state.order.symbol.clone(),
        }),
    }
}

/// Cancel an order.
///
/// Answers 202 once the cancel is durable. With `Prefer: wait=N` it answers 200 with the
/// order's state after the cancel was processed, or 409 if the book refused it (the order had
/// ended meanwhile).
#[utoipa::path(
    delete,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    params(
        ("order_id" = String, Path, description = "Order id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`"),
    ),
    responses(
        (status = 202, description = "Durable; not processed yet", body = Ack),
        (status = 200, description = "Processed (with Prefer: wait)", body = OrderView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's order", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Order not open, refused by the book, or same key in flight", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_order(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Trade)?;
    let Path(id) = path.map_err(path_error)?;
    let key = idempotency_key(&headers)?;
    let order_id = order_id(&id)?;
    let origin = Origin {
        principal: principal.id.clone(),
        key,
        fingerprint: fingerprint("DELETE", &format!("/v1/orders/{order_id}"), b""),
    };
    let wait = prefer_wait(&headers, app.settings.max_wait);
    let build = async {
        let state = open_order(&app, &principal, order_id).await?;
        Ok(cancel_command(&state))
    };
    app.write(origin, wait, StatusCode::OK, build).await
}

/// Amend an order: a new price, a new quantity, or both.
///
/// The order keeps its place in the queue only when its quantity alone goes down; a new price
/// or a larger quantity sends it to the back of its (new) price level, and a price that crosses
/// the book trades at once. A buy's hold is adjusted first: an amendment funds cannot cover is
/// refused and the order is unchanged. Answers 202 once durable; with `Prefer: wait=N`, 200 with
/// the order, or 409 with the reason the book refused it.
#[utoipa::path(
    patch,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    request_body = AmendRequest,
    params(
        ("order_id" = String, Path, description = "Order id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`"),
    ),
    responses(
        (status = 202, description = "Durable; not processed yet", body = Ack),
        (status = 200, description = "Processed (with Prefer: wait)", body = OrderView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's order, or a key without the trade scope", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Order not open, refused by the book, or same key in flight", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON (Content-Type)", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn amend_order(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Trade)?;
    let Path(id) = path.map_err(path_error)?;
    let key = idempotency_key(&headers)?;
    json_content(&headers)?;
    let body = body.map_err(body_error)?;
    let order_id = order_id(&id)?;
    let request: AmendRequest = parse(&body)?;
    if request.price.is_none() && request.quantity.is_none() {
        return Err(ApiError::bad_request(
            "nothing_to_amend",
            "an amendment needs a price, a quantity or both",
        ));
    }
    let origin = Origin {
        principal: principal.id.clone(),
        key,
        fingerprint: fingerprint("PATCH", &format!("/v1/orders/{order_id}"), &body),
    };
    let wait = prefer_wait(&headers, app.settings.max_wait);
    let build = async {
        let state = open_order(&app, &principal, order_id).await?;
        let market = app.markets.get(&state.order.symbol).ok_or_else(|| {
            ApiError::conflict(
                "unknown_symbol",
                format!("{} is no longer configured", state.order.symbol),
            )
        })?;
        let (instrument, checks) = (&market.instrument, &market.checks);
        let price = request
            .price
            .map(|price| instrument.price(price.0))
            .transpose()?;
        if let Some(price) = price {
            checks.price(price)?;
        }
        let quantity = request
            .quantity
            .map(|quantity| instrument.quantity(quantity.0))
            .transpose()?;
        if let Some(quantity) = quantity {
            checks.quantity(quantity)?;
        }
        if let Some(limit) = price.or(state.order.price) {
            checks.notional(limit, quantity.unwrap_or(state.order.quantity))?;
        }
        Ok(Command {
            ts: now(),
            action: Action::Amend(AmendOrder {
                order_id,
                account: state.order.account.clone(),
                symbol: state.order.symbol.clone(),
                price,
                quantity,
            }),
        })
    };
    app.write(origin, wait, StatusCode::OK, build).await
}

/// Which orders a mass cancel or a client order id lookup is about.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountScope {
    /// Account; may be left out when the key has exactly one.
    account: Option<String>,
    /// Only this instrument.
    symbol: Option<String>,
}

impl AccountScope {
    /// The account (one the key may use) and the instrument (a configured one), checked.
    fn resolve(
        self,
        app: &AppState,
        principal: &Principal,
    ) -> Result<(String, Option<Symbol>), ApiError> {
        let account = account_of(principal, self.account)?;
        let symbol = match self.symbol {
            Some(symbol) if app.markets.contains_key(symbol.as_str()) => Some(symbol.into()),
            Some(symbol) => {
                return Err(ApiError::bad_request(
                    "unknown_symbol",
                    format!("unknown symbol {symbol:?}"),
                )
                .with_field("symbol"));
            }
            None => None,
        };
        Ok((account, symbol))
    }

    /// The query as part of a fingerprint.
    fn describe(account: &str, symbol: Option<&Symbol>) -> String {
        format!(
            "account={account}&symbol={}",
            symbol.map_or("", |symbol| symbol.as_str())
        )
    }
}

/// Cancel every open order of an account (a mass cancel), on one instrument or on all.
///
/// Every order the account placed before this request, open when the cancel reaches its book,
/// is canceled and its hold released; orders placed after it are not touched. Answers 202 once
/// durable. With `Prefer: wait=N`, single-node mode answers 200 with the number canceled;
/// distributed mode answers 202 (each book applies the cancel on its own; list the open
/// orders to see them go).
#[utoipa::path(
    delete,
    path = "/v1/orders",
    tag = "orders",
    params(
        AccountScope,
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (single-node mode)"),
    ),
    responses(
        (status = 202, description = "Durable; not processed yet", body = Ack),
        (status = 200, description = "Processed (with Prefer: wait, single-node mode)", body = MassCancelView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account, or a key without the trade scope", body = ErrorBody),
        (status = 409, description = "Same key in flight", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_all(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    query: Result<Query<AccountScope>, QueryRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Trade)?;
    let key = idempotency_key(&headers)?;
    let Query(query) = query.map_err(query_error)?;
    let (account, symbol) = query.resolve(&app, &principal)?;
    let origin = Origin {
        principal: principal.id.clone(),
        key,
        fingerprint: fingerprint(
            "DELETE",
            "/v1/orders",
            AccountScope::describe(&account, symbol.as_ref()).as_bytes(),
        ),
    };
    let wait = prefer_wait(&headers, app.settings.max_wait);
    let build = async {
        Ok(Command {
            ts: now(),
            action: Action::CancelAll(CancelAll {
                account: account.as_str().into(),
                symbol,
            }),
        })
    };
    app.write(origin, wait, StatusCode::OK, build).await
}

/// The newest order of the scope's account with this client order id.
async fn by_client_id(
    app: &AppState,
    principal: &Principal,
    client_order_id: &str,
    scope: AccountScope,
) -> Result<OrderState, ApiError> {
    let (account, symbol) = scope.resolve(app, principal)?;
    app.guard(
        "order store",
        app.orders.by_client_id(
            &account,
            client_order_id,
            symbol.as_ref().map(|symbol| symbol.as_str()),
        ),
    )
    .await?
    .ok_or_else(|| {
        ApiError::not_found(format!(
            "no order of {account:?} with client_order_id {client_order_id:?}"
        ))
    })
}

/// An order by its client order id: the account's newest order with it (on `symbol`, if
/// given; a client order id is unique only among the open orders of one instrument).
#[utoipa::path(
    get,
    path = "/v1/orders/client/{client_order_id}",
    tag = "orders",
    params(
        ("client_order_id" = String, Path, description = "The client order id"),
        AccountScope,
    ),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account", body = ErrorBody),
        (status = 404, description = "No such order (or not processed yet)", body = ErrorBody),
        (status = 503, description = "The order store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_by_client_id(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<AccountScope>, QueryRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Read)?;
    let Path(client_order_id) = path.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let state = by_client_id(&app, &principal, &client_order_id, query).await?;
    Ok(json(OrderView::new(
        &state,
        app.instrument(&state.order.symbol),
    )))
}

/// Cancel an order by its client order id (the account's newest order with it, which must be
/// open). Answers as `DELETE /v1/orders/{order_id}`.
#[utoipa::path(
    delete,
    path = "/v1/orders/client/{client_order_id}",
    tag = "orders",
    params(
        ("client_order_id" = String, Path, description = "The client order id"),
        AccountScope,
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`"),
    ),
    responses(
        (status = 202, description = "Durable; not processed yet", body = Ack),
        (status = 200, description = "Processed (with Prefer: wait)", body = OrderView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Another principal's account", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Order not open, refused by the book, or same key in flight", body = ErrorBody),
        (status = 422, description = "Same key used for a different request", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_by_client_id(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<AccountScope>, QueryRejection>,
) -> Result<Response, ApiError> {
    super::require(&principal, Scope::Trade)?;
    let Path(client_order_id) = path.map_err(path_error)?;
    let key = idempotency_key(&headers)?;
    let Query(query) = query.map_err(query_error)?;
    let origin = Origin {
        principal: principal.id.clone(),
        key,
        fingerprint: fingerprint(
            "DELETE",
            &format!("/v1/orders/client/{client_order_id}"),
            format!(
                "account={}&symbol={}",
                query.account.as_deref().unwrap_or_default(),
                query.symbol.as_deref().unwrap_or_default()
            )
            .as_bytes(),
        ),
    };
    let wait = prefer_wait(&headers, app.settings.max_wait);
    let build = async {
        let state = by_client_id(&app, &principal, &client_order_id, query).await?;
        let state = owned_and_open(&principal, state)?;
        Ok(cancel_command(&state))
    };
    app.write(origin, wait, StatusCode::OK, build).await
}
