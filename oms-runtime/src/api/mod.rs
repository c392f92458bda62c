//! The v1 HTTP API (see `docs/api.md` and `GET /openapi.json`).

pub mod cancel_after;
pub mod error;
pub(crate) mod funds;
pub(crate) mod handlers;
mod key;
pub mod limits;
pub(crate) mod manage;
pub(crate) mod market;
pub mod model;
mod openapi;
pub mod write;

use crate::auth::{KeyRing, Principal};
use crate::ids::OrderIds;
use crate::metrics::{Metrics, OutcomeLabels, RouteLabels};
use crate::processing::{DepthSource, Waiters};
use crate::store::{Deadlines, FundsStore, IdempotencyStore, Journal, OrderStore, StoreError};
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use oms_core::{Checks, Instrument, Symbol};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Limits of the API.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Longest `Prefer: wait`.
    pub max_wait: Duration,
    /// How long a dependency may take before the request gets a 503.
    pub dependency_timeout: Duration,
    /// How long a request body may take to arrive before the request gets a 408.
    pub body_timeout: Duration,
    /// Rate limits of keys that set none.
    pub rate_limits: limits::Defaults,
    /// Limits of the WebSocket streams.
    pub streams: crate::streams::Limits,
    /// Whether the Binance-compatible API is served.
    pub binance_api: bool,
}

/// An instrument with its scaled limits.
pub struct Market {
    /// The instrument.
    pub instrument: Instrument,
    /// What the edge checks before journaling.
    pub checks: Checks,
}

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Configured instruments.
    pub markets: Arc<BTreeMap<Symbol, Market>>,
    /// The assets of the instruments, with their decimals.
    pub assets: Arc<oms_core::funds::Assets>,
    /// Known API keys, reloaded when their file changes.
    pub keys: Arc<KeyRing>,
    /// Requests per key.
    pub limiter: Arc<limits::RateLimiter>,
    /// Where writes go.
    pub journal: Arc<dyn Journal>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The read projection.
    pub orders: Arc<dyn OrderStore>,
    /// Balances, ledger and transfers.
    pub funds: Arc<dyn FundsStore>,
    /// Cancel-after deadlines.
    pub deadlines: Arc<dyn Deadlines>,
    /// Book depth.
    pub depth: Arc<dyn DepthSource>,
    /// In-process notification of processed commands (single-node mode); without it,
    /// `Prefer: wait` polls the read projection.
    pub waiters: Option<Waiters>,
    /// Order id generator.
    pub ids: Arc<OrderIds>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub settings: Settings,
    /// WebSocket stream connections and subscriptions.
    pub streams: Arc<crate::streams::Hub>,
    /// The Binance-compatible API's own state.
    pub binance: Arc<crate::binance::Facade>,
}

impl AppState {
    /// A configured instrument.
    pub fn instrument(&self, symbol: &str) -> Option<&Instrument> {
        self.markets.get(symbol).map(|market| &market.instrument)
    }

    /// Awaits a dependency within the configured timeout; a failure or timeout is a 503.
    pub async fn guard<T>(
        &self,
        dependency: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.settings.dependency_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.unavailable(dependency, error)),
            Err(_) => Err(self.unavailable(dependency, "timed out")),
        }
    }

    pub(crate) fn unavailable(
        &self,
        dependency: &'static str,
        cause: impl std::fmt::Display,
    ) -> ApiError {
        self.metrics
            .ingest
            .unavailable
            .get_or_create(&OutcomeLabels {
                outcome: dependency,
            })
            .inc();
        ApiError::unavailable(dependency, cause)
    }
}

/// Refuses a principal without `scope`.
pub(crate) fn require(principal: &Principal, scope: crate::auth::Scope) -> Result<(), ApiError> {
    if principal.can(scope) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this API key lacks the {} scope",
            scope.name()
        )))
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ApiError> {
        // The rate limiter authenticated the request already.
        if let Some(principal) = parts.extensions.remove::<Principal>() {
            return Ok(principal);
        }
        bearer(&parts.headers)
            .and_then(|key| app.keys.authenticate(key))
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The key of `Authorization: Bearer <key>`.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Counts every request with a valid key against its quota (see [`limits`]): over it, `429`
/// before the body is read; within it, the quota's headers on the answer. Requests without a
/// valid key go on to be refused (or served, if public) by their handler.
async fn limit(State(app): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let Some(principal) = bearer(request.headers()).and_then(|key| app.keys.authenticate(key))
    else {
        return next.run(request).await;
    };
    let class = limits::Class::of(request.method());
    let verdict = app.limiter.check(&principal, class, Instant::now());
    if !verdict.allowed {
        app.metrics
            .ingest
            .rate_limited
            .get_or_create(&OutcomeLabels {
                outcome: class.name(),
            })
            .inc();
        let mut response = ApiError::rate_limited(class.name()).into_response();
        verdict.headers(response.headers_mut());
        return response;
    }
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    verdict.headers(response.headers_mut());
    response
}

/// The API router. The state is shared behind one `Arc`: every request clones it, and a clone
/// of a dozen `Arc` fields cost a few percent of the single node's CPU.
pub fn router(app: AppState) -> Router {
    let app = Arc::new(app);
    let binance = if app.settings.binance_api {
        crate::binance::routes()
    } else {
        Router::new()
    };
    Router::new()
        .route(
            "/v1/orders",
            post(handlers::place_order)
                .get(handlers::list_orders)
                .delete(manage::cancel_all),
        )
        .route(
            "/v1/orders/{order_id}",
            get(handlers::get_order)
                .delete(manage::cancel_order)
                .patch(manage::amend_order),
        )
        .route("/v1/orders/batch", post(handlers::place_batch))
        .route(
            "/v1/orders/client/{client_order_id}",
            get(manage::get_by_client_id).delete(manage::cancel_by_client_id),
        )
        .route("/v1/time", get(market::time))
        .route("/v1/key", get(key::whoami))
        .route(
            "/v1/cancel-after",
            post(cancel_after::set).get(cancel_after::get),
        )
        .route("/v1/trades", get(handlers::list_trades))
        .route("/v1/balances", get(funds::balances))
        .route("/v1/ledger", get(funds::ledger))
        .route("/v1/deposits", post(funds::deposit))
        .route("/v1/withdrawals", post(funds::withdraw))
        .route("/v1/transfers/{transfer_id}", get(funds::get_transfer))
        .route("/v1/book/{symbol}", get(market::book))
        .route("/v1/markets/{symbol}/trades", get(market::trades))
        .route("/v1/markets/{symbol}/ticker", get(market::ticker))
        .route("/v1/markets/{symbol}/candles", get(market::candles))
        .route("/v1/instruments", get(market::instruments))
        .route("/v1/ws", get(crate::streams::socket::upgrade))
        .route("/openapi.json", get(openapi::document))
        .merge(binance)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(app.clone(), read_body))
        .layer(middleware::from_fn_with_state(app.clone(), limit))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .with_state(app)
}

/// Records every request's route, status and latency.
async fn observe(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = crate::metrics::method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let response = next.run(request).await;
    let labels = RouteLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    app.metrics.http.requests.get_or_create(&labels).inc();
    app.metrics
        .http
        .seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Reads the whole body, at most [`MAX_BODY_BYTES`], within the body timeout, before anything
/// else looks at the request: a client sending a byte a second is answered 408 and its
/// connection closed, instead of holding it for as long as it likes.
async fn read_body(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = app.settings.body_timeout;
    let bytes = match tokio::time::timeout(limit, collect(body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(Unread::TooLarge)) => return close(ApiError::too_large(MAX_BODY_BYTES)),
        Ok(Err(Unread::Broken)) => {
            return close(ApiError::bad_request(
                "unreadable_body",
                "the request body could not be read",
            ));
        }
        Err(_) => return close(ApiError::body_timeout(limit)),
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Why a body was not read.
enum Unread {
    TooLarge,
    Broken,
}

/// The body, if it is at most [`MAX_BODY_BYTES`] long.
async fn collect(body: axum::body::Body) -> Result<bytes::Bytes, Unread> {
    use futures::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| Unread::Broken)?;
        if out.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Unread::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// An error after which the connection is closed: the rest of the body is not worth reading.
fn close(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// JSON with a status, for handler results.
pub(crate) fn json<T: serde::Serialize>(value: T) -> Response {
    Json(value).into_response()
}
