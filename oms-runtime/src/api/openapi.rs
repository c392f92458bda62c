//! The OpenAPI document, generated from the handlers and types (utoipa).

use super::{AppState, json};
use super::{cancel_after, funds, handlers, key, manage, market};
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "OMS order API",
        description = "Place, amend, cancel (one, by client order id, or all) and query orders; deposit, withdraw and read balances and the ledger. Writes need an API key and an Idempotency-Key; a 2xx on a write means the command is durable.",
    ),
    paths(
        handlers::place_order,
        handlers::place_batch,
        manage::cancel_order,
        manage::amend_order,
        manage::cancel_all,
        handlers::get_order,
        handlers::list_orders,
        manage::get_by_client_id,
        manage::cancel_by_client_id,
        cancel_after::set,
        cancel_after::get,
        handlers::list_trades,
        market::book,
        market::trades,
        market::ticker,
        market::candles,
        market::instruments,
        market::time,
        funds::balances,
        funds::ledger,
        funds::deposit,
        funds::withdraw,
        funds::get_transfer,
        key::whoami,
    ),
    modifiers(&BearerKey),
)]
struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as a value.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`: the document, with the instruments this system trades listed where a
/// symbol is asked for (so that clients and fuzzers generated from it send ones that exist).
pub async fn document(State(app): State<Arc<AppState>>) -> Response {
    let symbols: Vec<&str> = app.markets.keys().map(|symbol| symbol.as_str()).collect();
    json(with_symbols(spec(), &symbols))
}

/// `document` with `symbols` as the values of every `symbol` parameter and of an order's
/// `symbol` (answers keep theirs: they may name an instrument no longer configured).
fn with_symbols(spec: utoipa::openapi::OpenApi, symbols: &[&str]) -> serde_json::Value {
    let mut document = serde_json::to_value(spec).unwrap_or_default();
    let listed = serde_json::json!(symbols);
    if let Some(symbol) = document.pointer_mut("/components/schemas/OrderRequest/properties/symbol")
    {
        symbol["enum"] = listed.clone();
    }
    let paths = document
        .pointer_mut("/paths")
        .and_then(serde_json::Value::as_object_mut);
    for operation in paths
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let parameters = operation
            .get_mut("parameters")
            .and_then(serde_json::Value::as_array_mut);
        for parameter in parameters.into_iter().flatten() {
            if parameter["name"] == "symbol" {
                parameter["schema"]["enum"] = listed.clone();
            }
        }
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter declared `in: path` is a `{name}` of its path, and every `{name}` is
    /// declared: query strings were once declared as path parameters, which generated clients
    /// (and the fuzzer) then put in the path.
    #[test]
    fn parameters_are_where_the_paths_say() {
        let document = with_symbols(spec(), &["BTC-USDT"]);
        let paths = document["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let parameters = operation["parameters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let in_path: Vec<&str> = parameters
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let templated: Vec<&str> = path
                    .split('/')
                    .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                let mut declared = in_path.clone();
                declared.sort_unstable();
                let mut expected = templated.clone();
                expected.sort_unstable();
                assert_eq!(declared, expected, "{method} {path}");
            }
        }
        let book = &paths["/v1/book/{symbol}"]["get"]["parameters"];
        let depth = book
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "depth")
            .unwrap();
        assert_eq!(depth["in"], "query");
        assert_eq!(depth["schema"]["minimum"], 1);
        assert_eq!(book[0]["schema"]["enum"], serde_json::json!(["BTC-USDT"]));
    }
}
