//! Orders through the facade: place (and test), query, cancel, open orders, all orders.
//!
//! A placed order goes through the OMS's own write path under the idempotency key
//! `binance:<clientOrderId>` of the key's principal: a retry of an order (the same
//! `newClientOrderId`) journals nothing twice and is answered, as Binance answers it, with
//! `-2010 Duplicate order sent.`; so is an order whose client order id is open already.
//! `RESULT` and `FULL` wait for the order to be processed (up to the server's longest wait,
//! at most 10 s); `ACK` answers once the order is durable.

use super::error::rejected_for;
use super::market::market;
use super::params::Params;
use super::view;
use super::{Caller, Error, Signed, now_ms};
use crate::api::handlers::{checked_order, order_command};
use crate::api::manage::cancel_command;
use crate::api::model::{DecimalString, FillView, OrderRequest, OrderView};
use crate::api::write::fingerprint;
use crate::api::{AppState, Market};
use crate::store::{Ack, OrderQuery, Origin};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use oms_core::{
    Action, CancelAll, Command, OrderId, OrderState, OrderStatus, OrderType, SelfTradePrevention,
    Side, TimeInForce,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

type Answer = Result<Response, Error>;

/// Longest wait for a `RESULT` or `FULL` answer, a cancel's or a mass cancel's.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// The parameters of `POST /api/v3/order`.
const ORDER_PARAMS: [&str; 10] = [
    "symbol",
    "side",
    "type",
    "timeInForce",
    "quantity",
    "quoteOrderQty",
    "price",
    "newClientOrderId",
    "newOrderRespType",
    "selfTradePreventionMode",
];

/// Binance's client order ids.
const CLIENT_ORDER_ID: &str = "^[\\.A-Z\\:/a-z0-9_-]{1,36}$";

fn client_order_id(params: &Params, name: &str) -> Result<Option<String>, Error> {
    params
        .get(name)
        .map(|id| {
            let legal = id.len() <= 36
                && id.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-')
                });
            legal
                .then(|| id.to_string())
                .ok_or_else(|| Error::illegal(name, CLIENT_ORDER_ID))
        })
        .transpose()
}

/// How the answer to a new order looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answered {
    Ack,
    Result,
    Full,
}

/// A new order's parameters as the OMS's order request, checked as Binance checks them.
fn order_request(
    market: &Market,
    caller: &Caller,
    params: &Params,
) -> Result<(OrderRequest, Answered), Error> {
    params.only(&ORDER_PARAMS)?;
    let side = match params.choice("side", &["BUY", "SELL"])? {
        Some("BUY") => Side::Buy,
        Some(_) => Side::Sell,
        None => return Err(Error::mandatory("side")),
    };
    let kind = params
        .choice("type", &["LIMIT", "MARKET", "LIMIT_MAKER"])?
        .ok_or_else(|| Error::mandatory("type"))?;
    let time_in_force = match params.choice("timeInForce", &["GTC", "IOC", "FOK"])? {
        Some("GTC") => Some(TimeInForce::Gtc),
        Some("IOC") => Some(TimeInForce::Ioc),
        Some(_) => Some(TimeInForce::Fok),
        None => None,
    };
    let price = params.decimal("price")?;
    let quantity = params.decimal("quantity")?;
    let quote_quantity = params.decimal("quoteOrderQty")?;
    let not_allowed = |name: &str, kind: &str| {
        Error::bad(
            -1106,
            format!("Parameter '{name}' sent when not required by {kind} orders."),
        )
    };
    let (order_type, post_only) = match kind {
        "LIMIT" => {
            params.required("timeInForce")?;
            params.required("price")?;
            params.required("quantity")?;
            if quote_quantity.is_some() {
                return Err(not_allowed("quoteOrderQty", kind));
            }
            (OrderType::Limit, false)
        }
        "LIMIT_MAKER" => {
            params.required("price")?;
            params.required("quantity")?;
            if time_in_force.is_some() {
                return Err(not_allowed("timeInForce", kind));
            }
            (OrderType::Limit, true)
        }
        _ => {
            if price.is_some() {
                return Err(not_allowed("price", kind));
            }
            if time_in_force.is_some() {
                return Err(not_allowed("timeInForce", kind));
            }
            match (quantity, quote_quantity) {
                (None, None) => {
                    return Err(Error::bad(
                        -1102,
                        "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(not_allowed("quoteOrderQty", "MARKET (with quantity)"));
                }
                (None, Some(_)) if side == Side::Sell => {
                    return Err(Error::bad(
                        -1013,
                        "quoteOrderQty is taken for MARKET buys only here.",
                    ));
                }
                _ => {}
            }
            (OrderType::Market, false)
        }
    };
    let self_trade_prevention = match params.choice(
        "selfTradePreventionMode",
        &["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    )? {
        Some("EXPIRE_TAKER") => SelfTradePrevention::ExpireTaker,
        Some("EXPIRE_MAKER") => SelfTradePrevention::ExpireMaker,
        Some("EXPIRE_BOTH") => SelfTradePrevention::ExpireBoth,
        _ => SelfTradePrevention::None,
    };
    let answered = match params.choice("newOrderRespType", &["ACK", "RESULT", "FULL"])? {
        Some("ACK") => Answered::Ack,
        Some("RESULT") => Answered::Result,
        Some(_) => Answered::Full,
        // Binance's defaults: FULL for LIMIT and MARKET, ACK for the rest.
        None if post_only => Answered::Ack,
        None => Answered::Full,
    };
    let request = OrderRequest {
        account: caller.account.clone(),
        symbol: market.instrument.symbol().to_string(),
        side,
        order_type,
        time_in_force,
        price: price.map(DecimalString),
        quantity: quantity.map(DecimalString),
        quote_quantity: quote_quantity.map(DecimalString),
        client_order_id: client_order_id(params, "newClientOrderId")?,
        post_only,
        self_trade_prevention,
    };
    Ok((request, answered))
}

/// What makes two orders "the same request": every parameter but the signing ones, in order.
fn canonical(params: &Params) -> String {
    ORDER_PARAMS
        .iter()
        .map(|name| format!("{name}={}", params.get(name).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST /api/v3/order`.
pub async fn place(State(app): State<Arc<AppState>>, Signed { caller, params }: Signed) -> Answer {
    let market = market(&app, &params)?;
    let (request, answered) = order_request(market, &caller, &params)?;
    let order = checked_order(&app, &caller.principal, request)?;
    let origin = Origin {
        principal: caller.principal.id.clone(),
        key: format!("binance:{}", order.client_order_id),
        fingerprint: fingerprint("POST", "/api/v3/order", canonical(&params).as_bytes()),
    };
    let wait = (answered != Answered::Ack).then(|| app.settings.max_wait.min(MAX_WAIT));
    let client_order_id = order.client_order_id.to_string();
    let response = app
        .write(
            origin,
            wait,
            StatusCode::CREATED,
            order_command(&app, order),
        )
        .await?;
    if response.headers().contains_key("idempotent-replayed") {
        return Err(Error::duplicate());
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .map_err(|_| Error::internal())?;
    let symbol = view::symbol_of(market);
    if status == StatusCode::ACCEPTED {
        let ack: Ack = serde_json::from_slice(&body).map_err(|_| Error::internal())?;
        let order_id = ack
            .order_id
            .and_then(|id| id.parse().ok())
            .unwrap_or_default();
        return Ok(Json(view::ack(
            &symbol,
            order_id,
            &client_order_id,
            now_ms() as u64,
        ))
        .into_response());
    }
    let placed: OrderView = serde_json::from_slice(&body).map_err(|_| Error::internal())?;
    if placed.status == OrderStatus::Rejected {
        let reason = placed
            .reject_reason
            .map(|reason| reason.code())
            .unwrap_or("rejected");
        return Err(rejected_for(reason, &reason.replace('_', " ")));
    }
    let fills = match answered {
        Answered::Full => Some(fills_of(&app, &caller.account, market, &placed).await?),
        _ => None,
    };
    Ok(Json(view::placed(&app.markets, &placed, fills.as_deref())).into_response())
}

/// An order's fills, oldest first. Where the projection writes an order's state before its
/// trades (distributed mode), they are read again until they add up to what the order filled,
/// for at most a second.
async fn fills_of(
    app: &AppState,
    account: &str,
    market: &Market,
    order: &OrderView,
) -> Result<Vec<FillView>, Error> {
    let filled = Decimal::from_str(&order.filled_quantity).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let trades = app
            .guard(
                "order store",
                app.orders.trades(
                    account,
                    Some(market.instrument.symbol().as_str()),
                    None,
                    1000,
                ),
            )
            .await?;
        let fills: Vec<FillView> = trades
            .iter()
            .rev()
            .flat_map(|trade| FillView::of(trade, account, Some(&market.instrument), &app.assets))
            .filter(|fill| fill.order_id == order.order_id)
            .collect();
        let found: Decimal = fills
            .iter()
            .map(|fill| Decimal::from_str(&fill.quantity).unwrap_or_default())
            .sum();
        if found >= filled || tokio::time::Instant::now() >= deadline {
            return Ok(fills);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /api/v3/order/test`: every check of a new order, nothing placed.
pub async fn test(State(app): State<Arc<AppState>>, Signed { caller, params }: Signed) -> Answer {
    let market = market(&app, &params)?;
    let (request, _) = order_request(market, &caller, &params)?;
    checked_order(&app, &caller.principal, request)?;
    Ok(Json(json!({})).into_response())
}

/// The order named by `orderId` or `origClientOrderId`, if it is the caller's and the symbol's.
async fn named_order(
    app: &AppState,
    caller: &Caller,
    market: &Market,
    params: &Params,
) -> Result<Option<OrderState>, Error> {
    let symbol = market.instrument.symbol().as_str();
    let state = if let Some(order_id) = params.integer::<u64>("orderId")? {
        app.guard("order store", app.orders.order(OrderId(order_id)))
            .await?
    } else if let Some(client_order_id) = params.get("origClientOrderId") {
        app.guard(
            "order store",
            app.orders
                .by_client_id(&caller.account, client_order_id, Some(symbol)),
        )
        .await?
    } else {
        return Err(Error::bad(
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        ));
    };
    Ok(state.filter(|state| state.order.account == caller.account && state.order.symbol == symbol))
}

/// `GET /api/v3/order`.
pub async fn query(State(app): State<Arc<AppState>>, Signed { caller, params }: Signed) -> Answer {
    params.only(&["symbol", "orderId", "origClientOrderId"])?;
    let market = market(&app, &params)?;
    let state = named_order(&app, &caller, market, &params)
        .await?
        .ok_or_else(Error::no_such_order)?;
    let order = OrderView::new(&state, Some(&market.instrument));
    Ok(Json(view::order(&app.markets, &order)).into_response())
}

/// The answer to a cancel: the order after it, with the cancel's own client id.
fn canceled(app: &AppState, order: &OrderView, cancel_id: &str) -> Value {
    let mut out = view::order(&app.markets, order);
    if let Value::Object(map) = &mut out {
        map.insert("origClientOrderId".into(), json!(order.client_order_id));
        map.insert("clientOrderId".into(), json!(cancel_id));
        map.insert("transactTime".into(), json!(now_ms()));
        for gone in [
            "time",
            "updateTime",
            "isWorking",
            "stopPrice",
            "icebergQty",
            "workingTime",
        ] {
            map.remove(gone);
        }
    }
    out
}

/// `DELETE /api/v3/order`: cancels, waits for the book, answers the order canceled.
pub async fn cancel(State(app): State<Arc<AppState>>, Signed { caller, params }: Signed) -> Answer {
    params.only(&[
        "symbol",
        "orderId",
        "origClientOrderId",
        "newClientOrderId",
        "cancelRestrictions",
    ])?;
    let market = market(&app, &params)?;
    let cancel_id = client_order_id(&params, "newClientOrderId")?
        .unwrap_or_else(|| format!("cancel-{}", now_ms()));
    let state = named_order(&app, &caller, market, &params)
        .await?
        .filter(|state| state.status.is_open())
        .ok_or_else(Error::unknown_order)?;
    let order_id = state.order.order_id;
    let origin = Origin {
        principal: caller.principal.id.clone(),
        key: format!("binance:cancel:{order_id}"),
        fingerprint: fingerprint("DELETE", "/api/v3/order", order_id.to_string().as_bytes()),
    };
    let wait = Some(app.settings.max_wait.min(MAX_WAIT));
    let command = cancel_command(&state);
    let response = app
        .write(origin, wait, StatusCode::OK, async { Ok(command) })
        .await?;
    if response.headers().contains_key("idempotent-replayed")
        || response.status() == StatusCode::CONFLICT
    {
        return Err(Error::unknown_order());
    }
    let after = app
        .guard("order store", app.orders.order(order_id))
        .await?
        .ok_or_else(Error::unknown_order)?;
    let order = OrderView::new(&after, Some(&market.instrument));
    Ok(Json(canceled(&app, &order, &cancel_id)).into_response())
}

/// Most orders read for one call.
const MAX_ORDERS_READ: usize = 10_000;

/// The caller's orders (of one instrument, or all), oldest first: read newest first, a page at
/// a time, those `keep` takes, for as long as `more` says (given what was kept and the oldest
/// order id read so far).
async fn orders_of(
    app: &AppState,
    caller: &Caller,
    symbol: Option<&str>,
    open_only: bool,
    keep: impl Fn(&OrderState) -> bool,
    more: impl Fn(usize, u64) -> bool,
) -> Result<Vec<OrderState>, Error> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = app
            .guard(
                "order store",
                app.orders.orders(&OrderQuery {
                    account: caller.account.clone(),
                    symbol: symbol.map(str::to_string),
                    open_only,
                    status: None,
                    before,
                    limit: 1000,
                }),
            )
            .await?;
        let oldest = page.orders.last().map_or(0, |state| state.order.order_id.0);
        out.extend(page.orders.into_iter().filter(|state| keep(state)));
        match page.next {
            Some(next) if out.len() < MAX_ORDERS_READ && more(out.len(), oldest) => {
                before = Some(next)
            }
            _ => break,
        }
    }
    out.reverse();
    Ok(out)
}

/// The caller's open orders, of one instrument or all, oldest first.
async fn open_of(
    app: &AppState,
    caller: &Caller,
    symbol: Option<&str>,
) -> Result<Vec<OrderState>, Error> {
    orders_of(app, caller, symbol, true, |_| true, |_, _| true).await
}

fn views(app: &AppState, states: &[OrderState]) -> Vec<Value> {
    states
        .iter()
        .map(|state| {
            let order = OrderView::new(state, app.instrument(&state.order.symbol));
            view::order(&app.markets, &order)
        })
        .collect()
}

/// `GET /api/v3/openOrders`: of one symbol, or all.
pub async fn open_orders(
    State(app): State<Arc<AppState>>,
    Signed { caller, params }: Signed,
) -> Answer {
    params.only(&["symbol"])?;
    let symbol = match params.get("symbol") {
        Some(_) => Some(market(&app, &params)?.instrument.symbol().to_string()),
        None => None,
    };
    let open = open_of(&app, &caller, symbol.as_deref()).await?;
    Ok(Json(views(&app, &open)).into_response())
}

/// `DELETE /api/v3/openOrders`: cancels every open order of the symbol in one journaled mass
/// cancel, waits for the book, answers the orders canceled.
pub async fn cancel_all(
    State(app): State<Arc<AppState>>,
    Signed { caller, params }: Signed,
) -> Answer {
    params.only(&["symbol"])?;
    let market = market(&app, &params)?;
    let symbol = market.instrument.symbol().clone();
    let open = open_of(&app, &caller, Some(symbol.as_str())).await?;
    if open.is_empty() {
        return Err(Error::unknown_order());
    }
    let origin = Origin {
        principal: caller.principal.id.clone(),
        key: format!(
            "binance:cancel-all:{symbol}:{}",
            crate::api::handlers::now().0
        ),
        fingerprint: fingerprint("DELETE", "/api/v3/openOrders", symbol.as_bytes()),
    };
    let command = Command {
        ts: crate::api::handlers::now(),
        action: Action::CancelAll(CancelAll {
            account: caller.account.as_str().into(),
            symbol: Some(symbol.clone()),
        }),
    };
    let wait = Some(app.settings.max_wait.min(MAX_WAIT));
    app.write(origin, wait, StatusCode::OK, async { Ok(command) })
        .await?;
    // Where processing does not notify (distributed mode), the orders are read until the
    // books have ended them, within the wait.
    let deadline = tokio::time::Instant::now() + app.settings.max_wait.min(MAX_WAIT);
    let after = loop {
        let mut after = Vec::with_capacity(open.len());
        for state in &open {
            let read = app
                .guard("order store", app.orders.order(state.order.order_id))
                .await?;
            after.push(read.unwrap_or_else(|| state.clone()));
        }
        if after.iter().all(|state| !state.status.is_open())
            || tokio::time::Instant::now() >= deadline
        {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out: Vec<Value> = after
        .iter()
        .map(|state| {
            let order = OrderView::new(state, Some(&market.instrument));
            canceled(&app, &order, &format!("cancel-{}", now_ms()))
        })
        .collect();
    Ok(Json(out).into_response())
}

/// `GET /api/v3/allOrders`: the symbol's orders, oldest first; from `orderId` on when given,
/// else the latest `limit` (default 500, at most 1000); `startTime`/`endTime` bound their
/// creation time.
pub async fn all_orders(
    State(app): State<Arc<AppState>>,
    Signed { caller, params }: Signed,
) -> Answer {
    params.only(&["symbol", "orderId", "startTime", "endTime", "limit"])?;
    let market = market(&app, &params)?;
    let limit = params.limit(500, 1000)?;
    let from = params.integer::<u64>("orderId")?;
    let start = params.integer::<u64>("startTime")?.unwrap_or(0);
    let end = params.integer::<u64>("endTime")?.unwrap_or(u64::MAX);
    let symbol = market.instrument.symbol().as_str();
    let keep = |state: &OrderState| {
        let created = state.created_at.0 / 1_000_000;
        from.is_none_or(|from| state.order.order_id.0 >= from) && created >= start && created <= end
    };
    let more = |kept: usize, oldest: u64| match from {
        Some(from) => oldest > from,
        None => kept < limit,
    };
    let found = orders_of(&app, &caller, Some(symbol), false, keep, more).await?;
    let chosen: Vec<OrderState> = match from {
        Some(_) => found.into_iter().take(limit).collect(),
        None => {
            let skip = found.len().saturating_sub(limit);
            found.into_iter().skip(skip).collect()
        }
    };
    Ok(Json(views(&app, &chosen)).into_response())
}
