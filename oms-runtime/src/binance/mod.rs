//! A Binance-compatible API on the API port: the Spot REST paths under `/api/v3`, and the user
//! data stream (a listen key's WebSocket at `/ws/<listenKey>`, and the WebSocket API's
//! `userDataStream.subscribe.signature` at `/ws-api/v3`), so that trading tools written for
//! Binance (CCXT, python-binance, bots built on them) trade against the OMS with a changed base
//! URL. See `docs/binance.md`.
//!
//! The facade is a translation, not a second engine: every call becomes the OMS's own (the same
//! checks, idempotency, journal, projection and streams), and every answer is the OMS's view in
//! Binance's shape ([`view`]) or Binance's `{code, msg}` error ([`Error`]).
//!
//! ```text
//! X-MBX-APIKEY + signature ─▶ signed(): key, rate limit, timestamp, HMAC, replay ─▶ Params
//!        ─▶ OMS call (OrderRequest, cancel, store reads) ─▶ view::* (Binance JSON)
//! ```
//! A key works here only with Binance credentials (`oms-runtime keygen --binance`); it trades
//! the first account it is bound to.

mod account;
pub mod error;
mod market;
pub mod params;
pub mod sign;
pub mod stream;
mod trade;
pub mod view;

pub use error::Error;

use crate::api::AppState;
use crate::api::limits::Class;
use crate::auth::{Principal, Scope};
use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method};
use axum::routing::{get, post};
use params::Params;
use std::sync::Arc;
use std::time::Instant;

/// What the facade keeps in one process.
#[derive(Default)]
pub struct Facade {
    /// Signatures seen within their windows.
    pub replays: sign::Replays,
}

/// The facade's routes, merged into the API router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v3/ping", get(market::ping))
        .route("/api/v3/time", get(market::time))
        .route("/api/v3/exchangeInfo", get(market::exchange_info))
        .route("/api/v3/depth", get(market::depth))
        .route("/api/v3/trades", get(market::trades))
        .route("/api/v3/klines", get(market::klines))
        .route("/api/v3/ticker/price", get(market::price))
        .route("/api/v3/ticker/bookTicker", get(market::book_ticker))
        .route("/api/v3/ticker/24hr", get(market::day))
        .route(
            "/api/v3/order",
            post(trade::place).get(trade::query).delete(trade::cancel),
        )
        .route("/api/v3/order/test", post(trade::test))
        .route(
            "/api/v3/openOrders",
            get(trade::open_orders).delete(trade::cancel_all),
        )
        .route("/api/v3/allOrders", get(trade::all_orders))
        .route("/api/v3/myTrades", get(account::my_trades))
        .route("/api/v3/account", get(account::account))
        .route("/api/v3/account/commission", get(account::commission))
        .route(
            "/api/v3/userDataStream",
            post(stream::create)
                .put(stream::keep_alive)
                .delete(stream::keep_alive),
        )
        .route("/ws/{listen_key}", get(stream::listen))
        .route("/ws-api/v3", get(stream::ws_api))
}

/// Now, milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    (crate::api::handlers::now().0 / 1_000_000) as i64
}

/// A caller proven by its signature.
pub(crate) struct Caller {
    /// The key's principal.
    pub principal: Principal,
    /// The account it trades: the first it is bound to.
    pub account: String,
}

/// The principal and secret of the `X-MBX-APIKEY` header, and the key.
fn api_key(app: &AppState, headers: &HeaderMap) -> Result<(Principal, String, String), Error> {
    let key = headers
        .get("x-mbx-apikey")
        .and_then(|value| value.to_str().ok())
        .filter(|key| !key.is_empty() && key.len() <= 64)
        .ok_or_else(Error::key_format)?;
    let (principal, secret) = app.keys.binance(key).ok_or_else(Error::key_refused)?;
    Ok((principal, secret, key.to_string()))
}

/// Counts the call against the key's rate limit.
fn limit(app: &AppState, principal: &Principal, method: &Method) -> Result<(), Error> {
    let verdict = app
        .limiter
        .check(principal, Class::of(method), Instant::now());
    if verdict.allowed {
        Ok(())
    } else {
        Err(Error::rate_limited())
    }
}

/// A call with only the API key (the listen key's calls): the caller and its listen key.
pub(crate) fn keyed(
    app: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<(Caller, String), Error> {
    let (principal, secret, key) = api_key(app, headers)?;
    limit(app, &principal, method)?;
    Ok((
        caller(principal, Scope::Read)?,
        stream::listen_key(&key, &secret),
    ))
}

/// The caller of a principal that needs `scope`.
pub(crate) fn caller(principal: Principal, scope: Scope) -> Result<Caller, Error> {
    if !principal.can(scope) {
        return Err(Error::key_refused());
    }
    let account = principal
        .accounts
        .first()
        .cloned()
        .ok_or_else(Error::key_refused)?;
    Ok(Caller { principal, account })
}

/// A signed request, proven: its caller and parameters. A `GET` needs the key's `read` scope,
/// any other method its `trade` scope.
pub(crate) struct Signed {
    /// Who.
    pub caller: Caller,
    /// What.
    pub params: Params,
}

impl FromRequest<Arc<AppState>> for Signed {
    type Rejection = Error;

    async fn from_request(request: Request, app: &Arc<AppState>) -> Result<Signed, Error> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, crate::api::MAX_BODY_BYTES)
            .await
            .map_err(|_| Error::bad(-1100, "The request body could not be read."))?;
        let scope = if parts.method == Method::GET {
            Scope::Read
        } else {
            Scope::Trade
        };
        let (caller, params) = signed(
            app,
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            parts.uri.query(),
            &body,
            scope,
        )?;
        Ok(Signed { caller, params })
    }
}

/// A signed call: the key, its rate limit, the timestamp within the window, the signature over
/// the parameters as sent, and the signature not seen before. Gives the caller and its
/// parameters.
fn signed(
    app: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    scope: Scope,
) -> Result<(Caller, Params), Error> {
    let (principal, secret, _) = api_key(app, headers)?;
    limit(app, &principal, method)?;
    let query = query.unwrap_or_default();
    let params = Params::parse(query, headers, body)?;
    let body = std::str::from_utf8(body).map_err(|_| Error::signature())?;
    let (payload, signature) = sign::split(query, body);
    let signature = signature
        .filter(|signature| !signature.is_empty())
        .ok_or_else(|| Error::mandatory("signature"))?;
    let call = format!("{method} {path}");
    check_signature(app, &call, &secret, &payload, &signature, &params)?;
    Ok((caller(principal, scope)?, params))
}

/// Checks a signed payload: `timestamp` within `recvWindow`, the signature `payload`'s with
/// `secret`, and not seen before for this `call` (method and path: Binance's signature covers
/// the parameters only, and the same parameters in the same millisecond may go to two paths).
pub(crate) fn check_signature(
    app: &AppState,
    call: &str,
    secret: &str,
    payload: &str,
    signature: &str,
    params: &Params,
) -> Result<(), Error> {
    let timestamp: i64 = params
        .integer("timestamp")?
        .ok_or_else(|| Error::mandatory("timestamp"))?;
    let recv_window = params
        .integer::<u64>("recvWindow")?
        .unwrap_or(sign::DEFAULT_RECV_WINDOW_MS);
    let now = now_ms();
    sign::window(timestamp, recv_window, now)?;
    let digest = sign::verify(secret, payload, signature)?;
    app.binance.replays.first_use(
        sign::seen_as(call, &digest),
        timestamp + recv_window as i64 + sign::MAX_AHEAD_MS,
        now,
    )
}
