//! The caller's account: balances and commission rates, and its trades.

use super::market::market;
use super::view;
use super::{Error, Signed, now_ms};
use crate::api::AppState;
use crate::api::funds::{BalanceView, balances_of};
use crate::api::model::FillView;
use crate::auth::Scope;
use crate::store::TradeCursor;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::sync::Arc;

type Answer = Result<Response, Error>;

/// A rate in basis points as Binance's decimal fraction: 10 bps is `0.001`.
fn rate(bps: u32) -> String {
    (Decimal::from(bps) / Decimal::from(10_000))
        .normalize()
        .to_string()
}

/// `GET /api/v3/account`: free (available) and locked (held) per asset, and the commission
/// rates (the highest of the instruments, where they differ; `account/commission` has each).
pub async fn account(
    State(app): State<Arc<AppState>>,
    Signed { caller, params }: Signed,
) -> Answer {
    params.only(&["omitZeroBalances"])?;
    let omit_zero = params.get("omitZeroBalances") == Some("true");
    let balances: Vec<Value> = balances_of(&app, &caller.account)
        .await?
        .into_iter()
        .filter(|(_, balance)| !omit_zero || balance.total() != 0)
        .map(|(asset, balance)| {
            let view = BalanceView::of(&app.assets, asset, balance);
            json!({"asset": view.asset, "free": view.available, "locked": view.held})
        })
        .collect();
    let specs = app.markets.values().map(|market| market.instrument.spec());
    let maker = specs
        .clone()
        .map(|spec| spec.maker_fee_bps)
        .max()
        .unwrap_or(0);
    let taker = specs.map(|spec| spec.taker_fee_bps).max().unwrap_or(0);
    let trading = caller.principal.can(Scope::Trade);
    let funds = caller.principal.can(Scope::Funds);
    Ok(Json(json!({
        "makerCommission": maker,
        "takerCommission": taker,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate(maker), "taker": rate(taker), "buyer": "0", "seller": "0"},
        "canTrade": trading,
        "canWithdraw": funds,
        "canDeposit": funds,
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": now_ms(),
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": 0,
    }))
    .into_response())
}

/// `GET /api/v3/account/commission`: one symbol's maker and taker rates.
pub async fn commission(State(app): State<Arc<AppState>>, Signed { params, .. }: Signed) -> Answer {
    params.only(&["symbol"])?;
    let market = market(&app, &params)?;
    let spec = market.instrument.spec();
    let none = json!({"maker": "0", "taker": "0", "buyer": "0", "seller": "0"});
    Ok(Json(json!({
        "symbol": view::symbol_of(market),
        "standardCommission": {
            "maker": rate(spec.maker_fee_bps),
            "taker": rate(spec.taker_fee_bps),
            "buyer": "0",
            "seller": "0",
        },
        "specialCommission": none,
        "taxCommission": none,
        "discount": {"enabledForAccount": false, "enabledForSymbol": false, "discountAsset": "", "discount": "0"},
    }))
    .into_response())
}

/// Most trades read for one `myTrades` call.
const MAX_SCANNED: usize = 10_000;

/// `GET /api/v3/myTrades`: the caller's trades of a symbol, oldest first: of one order
/// (`orderId`), from a trade id on (`fromId`), or the latest `limit` (default 500, at most
/// 1000), within `startTime`/`endTime`.
pub async fn my_trades(
    State(app): State<Arc<AppState>>,
    Signed { caller, params }: Signed,
) -> Answer {
    params.only(&[
        "symbol",
        "orderId",
        "startTime",
        "endTime",
        "fromId",
        "limit",
    ])?;
    let market = market(&app, &params)?;
    let limit = params.limit(500, 1000)?;
    let order_id = params.integer::<u64>("orderId")?.map(|id| id.to_string());
    let from = params.integer::<u64>("fromId")?;
    let start = params.integer::<u64>("startTime")?.unwrap_or(0);
    let end = params.integer::<u64>("endTime")?.unwrap_or(u64::MAX);
    let symbol = market.instrument.symbol().as_str();
    let mut fills: Vec<FillView> = Vec::new();
    let mut before: Option<TradeCursor> = None;
    let mut scanned = 0;
    loop {
        let page = app
            .guard(
                "order store",
                app.orders
                    .trades(&caller.account, Some(symbol), before.as_ref(), 1000),
            )
            .await?;
        scanned += page.len();
        let done = page.len() < 1000
            || scanned >= MAX_SCANNED
            || page.last().is_some_and(|trade| {
                trade.ts / 1_000_000 < start || from.is_some_and(|from| trade.seq < from)
            });
        before = page.last().map(TradeCursor::after);
        for trade in &page {
            let ms = trade.ts / 1_000_000;
            if ms < start || ms > end || from.is_some_and(|from| trade.seq < from) {
                continue;
            }
            fills.extend(
                FillView::of(
                    trade,
                    &caller.account,
                    Some(&market.instrument),
                    &app.assets,
                )
                .into_iter()
                .filter(|fill| order_id.as_ref().is_none_or(|id| *id == fill.order_id)),
            );
        }
        let enough = from.is_none() && order_id.is_none() && fills.len() >= limit;
        if done || enough {
            break;
        }
    }
    fills.reverse();
    let chosen: Vec<Value> = if from.is_some() {
        fills
            .iter()
            .take(limit)
            .map(|fill| view::my_trade(&app.markets, fill))
            .collect()
    } else {
        let skip = fills.len().saturating_sub(limit);
        fills
            .iter()
            .skip(skip)
            .map(|fill| view::my_trade(&app.markets, fill))
            .collect()
    };
    Ok(Json(chosen).into_response())
}
