//! Public market data: depth, recent trades, the ticker, candles, instruments and the clock. No
//! key needed; nothing here names an account or an order.

use super::error::{ApiError, ErrorBody};
use super::handlers::{limit, now, path_error, query_error};
use super::model::{BookView, CandleView, MarketTradeView, TickerView, rfc3339};
use super::{AppState, json};
use crate::processing::DepthSource;
use crate::store::{Candle, OrderStore, StoreError};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use oms_core::{Instrument, InstrumentSpec};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

/// Minutes in the ticker's window.
const DAY_MINUTES: u64 = 24 * 60;

/// The configured instrument `symbol`, or 404.
fn instrument<'a>(app: &'a AppState, symbol: &str) -> Result<&'a Instrument, ApiError> {
    app.instrument(symbol)
        .ok_or_else(|| ApiError::not_found(format!("unknown symbol {symbol:?}")))
}

/// Depth query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BookQuery {
    /// Levels per side, 1 to 1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    depth: Option<usize>,
}

/// Aggregated order book depth. Public market data: no key needed.
#[utoipa::path(
    get,
    path = "/v1/book/{symbol}",
    tag = "market data",
    params(("symbol" = String, Path, description = "Instrument"), BookQuery),
    responses(
        (status = 200, description = "Depth", body = BookView),
        (status = 400, description = "Invalid depth", body = ErrorBody),
        (status = 404, description = "Unknown symbol", body = ErrorBody),
        (status = 503, description = "The book is not running", body = ErrorBody),
    )
)]
pub async fn book(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BookQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(symbol) = path.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let levels = match query.depth.unwrap_or(20) {
        depth @ 1..=1000 => depth,
        _ => {
            return Err(
                ApiError::bad_request("invalid_depth", "depth must be 1 to 1000")
                    .with_field("depth"),
            );
        }
    };
    let instrument = instrument(&app, &symbol)?;
    let depth = app
        .guard("book depth", app.depth.depth(&symbol, levels))
        .await?
        .unwrap_or(oms_core::Depth {
            seq: 0,
            bids: Vec::new(),
            asks: Vec::new(),
        });
    let side = |levels: Vec<(oms_core::Price, oms_core::Quantity)>| {
        levels
            .into_iter()
            .map(|(price, quantity)| {
                [
                    instrument.price_decimal(price).to_string(),
                    instrument.quantity_decimal(quantity).to_string(),
                ]
            })
            .collect()
    };
    Ok(json(BookView {
        symbol,
        seq: depth.seq,
        bids: side(depth.bids),
        asks: side(depth.asks),
    }))
}

/// The server's clock.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TimeView {
    /// Now, RFC 3339 (UTC).
    pub now: String,
    /// Now, milliseconds since the Unix epoch.
    pub epoch_ms: u64,
}

/// The server's time: for clients that stamp or compare times (the cancel-after deadline,
/// trade times). Public: no key needed.
#[utoipa::path(
    get,
    path = "/v1/time",
    tag = "market data",
    responses((status = 200, description = "Now", body = TimeView))
)]
pub async fn time() -> Response {
    let nanos = now().0;
    json(TimeView {
        now: super::model::rfc3339(nanos),
        epoch_ms: nanos / 1_000_000,
    })
}

/// The tradable instruments. Public: no key needed.
#[utoipa::path(
    get,
    path = "/v1/instruments",
    tag = "market data",
    responses((status = 200, description = "Instruments", body = Vec<InstrumentSpec>))
)]
pub async fn instruments(State(app): State<Arc<AppState>>) -> Response {
    let specs: Vec<&InstrumentSpec> = app
        .markets
        .values()
        .map(|market| market.instrument.spec())
        .collect();
    json(specs)
}

/// How many trades.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TradesQuery {
    /// Most trades returned, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Recent public trades of an instrument, newest first: price, quantity and the taker's side,
/// never an account or an order.
#[utoipa::path(
    get,
    path = "/v1/markets/{symbol}/trades",
    tag = "market data",
    params(("symbol" = String, Path, description = "Instrument"), TradesQuery),
    responses(
        (status = 200, description = "Trades, newest first", body = Vec<MarketTradeView>),
        (status = 400, description = "Invalid limit", body = ErrorBody),
        (status = 404, description = "Unknown symbol", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
pub async fn trades(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TradesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(symbol) = path.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let instrument = instrument(&app, &symbol)?;
    let limit = limit(query.limit)?;
    let trades = app
        .guard("order store", app.orders.market_trades(&symbol, limit))
        .await?;
    let views: Vec<MarketTradeView> = trades
        .iter()
        .map(|trade| MarketTradeView::new(trade, instrument))
        .collect();
    Ok(json(views))
}

/// The ticker of an instrument: the last price, the best bid and ask with their sizes, and the
/// open, high, low and volumes of the last 24 hours (of whole minutes, the current one
/// included).
#[utoipa::path(
    get,
    path = "/v1/markets/{symbol}/ticker",
    tag = "market data",
    params(("symbol" = String, Path, description = "Instrument")),
    responses(
        (status = 200, description = "The ticker", body = TickerView),
        (status = 404, description = "Unknown symbol", body = ErrorBody),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub async fn ticker(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(symbol) = path.map_err(path_error)?;
    let instrument = instrument(&app, &symbol)?;
    let view = app
        .guard(
            "market data",
            ticker_view(&*app.orders, &*app.depth, instrument),
        )
        .await?;
    Ok(json(view))
}

/// An instrument's ticker: the last 24 hours of candles, the last trade, the top of the book.
pub(crate) async fn ticker_view(
    orders: &dyn OrderStore,
    depth: &dyn DepthSource,
    instrument: &Instrument,
) -> Result<TickerView, StoreError> {
    let symbol = instrument.symbol().as_str();
    let at = now().0;
    let from = Candle::minute_of(at).saturating_sub(DAY_MINUTES - 1);
    let (candles, last, top) = tokio::join!(
        orders.candles(symbol, from, DAY_MINUTES as usize),
        orders.market_trades(symbol, 1),
        depth.depth(symbol, 1),
    );
    let (candles, last, top) = (candles?, last?, top?);
    Ok(TickerView::new(
        instrument,
        last.first(),
        top.as_ref(),
        Candle::merged(&candles).as_ref(),
        rfc3339(from * 60_000_000_000),
        rfc3339(at),
    ))
}

/// The ticker as the streams make it.
pub fn ticker_source(
    orders: Arc<dyn OrderStore>,
    depth: Arc<dyn DepthSource>,
) -> crate::streams::market::TickerFn {
    Arc::new(move |instrument: Instrument| {
        let (orders, depth) = (orders.clone(), depth.clone());
        Box::pin(async move { ticker_view(&*orders, &*depth, &instrument).await })
    })
}

/// Which candles.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CandlesQuery {
    /// The last this many minutes, 1 to 1440 (default 60), the current one included.
    #[param(minimum = 1, maximum = 1440)]
    minutes: Option<u64>,
}

/// One-minute candles of an instrument, oldest first; minutes without a trade are left out.
#[utoipa::path(
    get,
    path = "/v1/markets/{symbol}/candles",
    tag = "market data",
    params(("symbol" = String, Path, description = "Instrument"), CandlesQuery),
    responses(
        (status = 200, description = "Candles, oldest first", body = Vec<CandleView>),
        (status = 400, description = "Invalid minutes", body = ErrorBody),
        (status = 404, description = "Unknown symbol", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
pub async fn candles(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<CandlesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(symbol) = path.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let instrument = instrument(&app, &symbol)?;
    let minutes = match query.minutes.unwrap_or(60) {
        minutes @ 1..=DAY_MINUTES => minutes,
        _ => {
            return Err(
                ApiError::bad_request("invalid_minutes", "minutes must be 1 to 1440")
                    .with_field("minutes"),
            );
        }
    };
    let from = Candle::minute_of(now().0).saturating_sub(minutes - 1);
    let candles = app
        .guard(
            "order store",
            app.orders.candles(&symbol, from, minutes as usize),
        )
        .await?;
    let views: Vec<CandleView> = candles
        .iter()
        .map(|candle| CandleView::new(candle, instrument))
        .collect();
    Ok(json(views))
}
