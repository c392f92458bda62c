//! The OpenAPI document, generated from the handlers and types (utoipa).

use super::json;
use super::{cancel_after, funds, handlers, manage, market};
use axum::response::Response;
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

/// `GET /openapi.json`.
pub async fn document() -> Response {
    json(spec())
}
