//! Public market data in Binance's shapes: ping, time, exchange information, depth, recent
//! trades and tickers. No key needed.

use super::params::Params;
use super::view::{self, market_of, symbol_of};
use super::{Error, now_ms};
use crate::api::market::ticker_view;
use crate::api::model::TickerView;
use crate::api::{AppState, Market};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::Arc;

type Answer = Result<Response, Error>;

fn params(query: &Option<String>) -> Result<Params, Error> {
    Params::parse(query.as_deref().unwrap_or_default(), &HeaderMap::new(), b"")
}

/// The market a required `symbol` names.
pub(super) fn market<'a>(app: &'a AppState, params: &Params) -> Result<&'a Market, Error> {
    market_of(&app.markets, params.required("symbol")?).ok_or_else(Error::symbol)
}

/// The markets of an optional `symbol` (or `symbols`, a JSON array): all when absent.
fn markets<'a>(app: &'a AppState, params: &Params) -> Result<(Vec<&'a Market>, bool), Error> {
    if let Some(symbol) = params.get("symbol") {
        return Ok((
            vec![market_of(&app.markets, symbol).ok_or_else(Error::symbol)?],
            true,
        ));
    }
    if let Some(list) = params.get("symbols") {
        let names: Vec<String> = serde_json::from_str(list)
            .map_err(|_| Error::illegal("symbols", "[\"BTCUSDT\",...]"))?;
        let found = names
            .iter()
            .map(|name| market_of(&app.markets, name).ok_or_else(Error::symbol))
            .collect::<Result<_, _>>()?;
        return Ok((found, false));
    }
    Ok((app.markets.values().collect(), false))
}

/// One answer for a single symbol, a list otherwise.
fn one_or_all(mut items: Vec<Value>, single: bool) -> Response {
    match (single, items.pop()) {
        (true, Some(item)) => Json(item).into_response(),
        (_, last) => {
            items.extend(last);
            Json(Value::Array(items)).into_response()
        }
    }
}

/// `GET /api/v3/ping`.
pub async fn ping() -> Response {
    Json(json!({})).into_response()
}

/// `GET /api/v3/time`.
pub async fn time() -> Response {
    Json(json!({ "serverTime": now_ms() })).into_response()
}

/// A decimal as text; `0` for none.
fn text(value: Option<Decimal>) -> String {
    value.map_or_else(|| "0".into(), |value| value.normalize().to_string())
}

fn symbol_info(app: &AppState, market: &Market) -> Value {
    let spec = market.instrument.spec();
    let scale = |asset: &str| app.assets.scale(asset).unwrap_or(8);
    let trading = market.instrument.is_trading();
    json!({
        "symbol": symbol_of(market),
        "status": if trading { "TRADING" } else { "HALT" },
        "baseAsset": spec.base,
        "baseAssetPrecision": scale(&spec.base),
        "quoteAsset": spec.quote,
        "quotePrecision": scale(&spec.quote),
        "quoteAssetPrecision": scale(&spec.quote),
        "baseCommissionPrecision": scale(&spec.base),
        "quoteCommissionPrecision": scale(&spec.quote),
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": false,
        "ocoAllowed": false,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": false,
        "amendAllowed": false,
        "pegInstructionsAllowed": false,
        "isSpotTradingAllowed": trading,
        "isMarginTradingAllowed": false,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": text(Some(spec.tick_size)),
                "maxPrice": text(spec.max_price),
                "tickSize": text(Some(spec.tick_size)),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": text(Some(spec.min_quantity)),
                "maxQty": text(Some(spec.max_quantity)),
                "stepSize": text(Some(spec.lot_size)),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": text(Some(spec.min_quantity)),
                "maxQty": text(Some(spec.max_quantity)),
                "stepSize": text(Some(spec.lot_size)),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": text(Some(spec.min_notional)),
                "applyMinToMarket": true,
                "maxNotional": "9000000000",
                "applyMaxToMarket": false,
                "avgPriceMins": 0,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

/// `GET /api/v3/exchangeInfo`: the instruments as Binance symbols with their filters, and the
/// rate limits of a key that sets none.
pub async fn exchange_info(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(&query)?;
    params.only(&[
        "symbol",
        "symbols",
        "permissions",
        "showPermissionSets",
        "symbolStatus",
    ])?;
    let (markets, _) = markets(&app, &params)?;
    let limits = app.settings.rate_limits;
    Ok(Json(json!({
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 1, "limit": limits.reads_per_second},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1, "limit": limits.writes_per_second},
        ],
        "exchangeFilters": [],
        "symbols": markets.iter().map(|market| symbol_info(&app, market)).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /api/v3/depth`: the book's best `limit` levels a side (default 100, at most 5000).
pub async fn depth(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(&query)?;
    params.only(&["symbol", "limit"])?;
    let market = market(&app, &params)?;
    let levels = params.limit(100, 5000)?;
    let symbol = market.instrument.symbol().as_str();
    let depth = app
        .guard("book depth", app.depth.depth(symbol, levels))
        .await?
        .unwrap_or(oms_core::Depth {
            seq: 0,
            bids: Vec::new(),
            asks: Vec::new(),
        });
    let instrument = &market.instrument;
    let side = |levels: &[(oms_core::Price, oms_core::Quantity)]| -> Vec<[String; 2]> {
        levels
            .iter()
            .map(|(price, quantity)| {
                [
                    instrument.price_decimal(*price).to_string(),
                    instrument.quantity_decimal(*quantity).to_string(),
                ]
            })
            .collect()
    };
    Ok(Json(json!({
        "lastUpdateId": depth.seq,
        "bids": side(&depth.bids),
        "asks": side(&depth.asks),
    }))
    .into_response())
}

/// `GET /api/v3/trades`: the latest trades, oldest first (default 500, at most 1000).
pub async fn trades(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(&query)?;
    params.only(&["symbol", "limit"])?;
    let market = market(&app, &params)?;
    let limit = params.limit(500, 1000)?;
    let instrument = &market.instrument;
    let trades = app
        .guard(
            "order store",
            app.orders.market_trades(instrument.symbol(), limit),
        )
        .await?;
    let out: Vec<Value> = trades
        .iter()
        .rev()
        .map(|trade| {
            let price = instrument.price_decimal(trade.price);
            let quantity = instrument.quantity_decimal(trade.quantity);
            json!({
                "id": trade.seq,
                "price": price.to_string(),
                "qty": quantity.to_string(),
                "quoteQty": (price * quantity).normalize().to_string(),
                "time": trade.ts / 1_000_000,
                "isBuyerMaker": trade.taker_side == oms_core::Side::Sell,
                "isBestMatch": true,
            })
        })
        .collect();
    Ok(Json(out).into_response())
}

async fn tickers(app: &AppState, markets: &[&Market]) -> Result<Vec<(String, TickerView)>, Error> {
    let mut out = Vec::with_capacity(markets.len());
    for market in markets {
        let ticker = app
            .guard(
                "market data",
                ticker_view(&*app.orders, &*app.depth, &market.instrument),
            )
            .await?;
        out.push((symbol_of(market), ticker));
    }
    Ok(out)
}

/// `GET /api/v3/ticker/price`: the last price of one symbol or all.
pub async fn price(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(&query)?;
    params.only(&["symbol", "symbols"])?;
    let (markets, single) = markets(&app, &params)?;
    let items = tickers(&app, &markets)
        .await?
        .into_iter()
        .map(|(symbol, ticker)| {
            json!({"symbol": symbol, "price": ticker.last_price.unwrap_or_else(|| "0".into())})
        })
        .collect();
    Ok(one_or_all(items, single))
}

fn level(level: &Option<crate::api::model::LevelView>) -> (String, String) {
    level.as_ref().map_or_else(
        || ("0".into(), "0".into()),
        |level| (level.price.clone(), level.quantity.clone()),
    )
}

/// `GET /api/v3/ticker/bookTicker`: the best bid and ask.
pub async fn book_ticker(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(&query)?;
    params.only(&["symbol", "symbols"])?;
    let (markets, single) = markets(&app, &params)?;
    let items = tickers(&app, &markets)
        .await?
        .into_iter()
        .map(|(symbol, ticker)| {
            let (bid, bid_qty) = level(&ticker.best_bid);
            let (ask, ask_qty) = level(&ticker.best_ask);
            json!({"symbol": symbol, "bidPrice": bid, "bidQty": bid_qty, "askPrice": ask, "askQty": ask_qty})
        })
        .collect();
    Ok(one_or_all(items, single))
}

/// `GET /api/v3/ticker/24hr`: the last 24 hours (of whole minutes) of one symbol or all.
pub async fn day(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(&query)?;
    params.only(&["symbol", "symbols", "type"])?;
    let (markets, single) = markets(&app, &params)?;
    let now = now_ms();
    let items = tickers(&app, &markets)
        .await?
        .into_iter()
        .map(|(symbol, ticker)| day_view(&symbol, &ticker, now))
        .collect();
    Ok(one_or_all(items, single))
}

fn day_view(symbol: &str, ticker: &TickerView, now: i64) -> Value {
    let number = |text: &Option<String>| text.as_deref().and_then(|t| Decimal::from_str(t).ok());
    let last = number(&ticker.last_price);
    let open = number(&ticker.open);
    let volume = Decimal::from_str(&ticker.volume).unwrap_or_default();
    let quote_volume = Decimal::from_str(&ticker.quote_volume).unwrap_or_default();
    let change = match (last, open) {
        (Some(last), Some(open)) => last - open,
        _ => Decimal::ZERO,
    };
    let percent = match open {
        Some(open) if !open.is_zero() => (change * Decimal::ONE_HUNDRED / open).round_dp(3),
        _ => Decimal::ZERO,
    };
    let average = if volume.is_zero() {
        Decimal::ZERO
    } else {
        (quote_volume / volume).round_dp(8)
    };
    let (bid, bid_qty) = level(&ticker.best_bid);
    let (ask, ask_qty) = level(&ticker.best_ask);
    json!({
        "symbol": symbol,
        "priceChange": change.normalize().to_string(),
        "priceChangePercent": percent.normalize().to_string(),
        "weightedAvgPrice": average.normalize().to_string(),
        "prevClosePrice": text(open),
        "lastPrice": text(last),
        "lastQty": "0",
        "bidPrice": bid,
        "bidQty": bid_qty,
        "askPrice": ask,
        "askQty": ask_qty,
        "openPrice": text(open),
        "highPrice": ticker.high.clone().unwrap_or_else(|| "0".into()),
        "lowPrice": ticker.low.clone().unwrap_or_else(|| "0".into()),
        "volume": ticker.volume,
        "quoteVolume": ticker.quote_volume,
        "openTime": view::millis(&ticker.window_start),
        "closeTime": now,
        "firstId": -1,
        "lastId": -1,
        "count": ticker.trades,
    })
}

/// Kline intervals and their length in minutes.
const INTERVALS: [(&str, u64); 12] = [
    ("1m", 1),
    ("3m", 3),
    ("5m", 5),
    ("15m", 15),
    ("30m", 30),
    ("1h", 60),
    ("2h", 120),
    ("4h", 240),
    ("6h", 360),
    ("8h", 480),
    ("12h", 720),
    ("1d", 1440),
];

/// Most one-minute candles read for one `klines` call.
const MAX_CANDLES_READ: usize = 50_000;

/// `GET /api/v3/klines`: candles of `interval` built from the OMS's one-minute candles, oldest
/// first: from `startTime` on, or the latest `limit` (default 500, at most 1000) up to
/// `endTime` (or now). Intervals without a trade are left out (Binance repeats the last close).
pub async fn klines(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(&query)?;
    params.only(&["symbol", "interval", "startTime", "endTime", "limit"])?;
    let market = market(&app, &params)?;
    let interval = params.required("interval")?;
    let minutes = INTERVALS
        .iter()
        .find(|(name, _)| *name == interval)
        .map(|(_, minutes)| *minutes)
        .ok_or_else(|| Error::bad(-1120, "Invalid interval."))?;
    let limit = params.limit(500, 1000)? as u64;
    let start = params.integer::<u64>("startTime")?;
    let end = params.integer::<u64>("endTime")?.unwrap_or(now_ms() as u64) / 60_000;
    let bucket = |minute: u64| minute / minutes * minutes;
    let from = match start {
        Some(start) => bucket(start / 60_000),
        None => bucket(end).saturating_sub((limit - 1) * minutes),
    };
    let to = end.min(from + limit * minutes - 1);
    if to < from {
        return Ok(Json(Value::Array(Vec::new())).into_response());
    }
    let span = usize::try_from(to - from + 1).unwrap_or(usize::MAX);
    let symbol = market.instrument.symbol().as_str();
    let candles = app
        .guard(
            "order store",
            app.orders.candles(symbol, from, span.min(MAX_CANDLES_READ)),
        )
        .await?;
    let instrument = &market.instrument;
    let mut out = Vec::new();
    for group in candles
        .iter()
        .filter(|candle| candle.minute <= to)
        .collect::<Vec<_>>()
        .chunk_by(|a, b| bucket(a.minute) == bucket(b.minute))
    {
        let owned: Vec<_> = group.iter().map(|candle| (*candle).clone()).collect();
        let Some(merged) = crate::store::Candle::merged(&owned) else {
            continue;
        };
        let view = crate::api::model::CandleView::new(&merged, instrument);
        let open_time = bucket(merged.minute) * 60_000;
        out.push(json!([
            open_time,
            view.open,
            view.high,
            view.low,
            view.close,
            view.volume,
            open_time + minutes * 60_000 - 1,
            view.quote_volume,
            view.trades,
            "0",
            "0",
            "0",
        ]));
    }
    Ok(Json(Value::Array(out)).into_response())
}
