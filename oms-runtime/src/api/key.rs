//! `GET /v1/key`: what the calling key is and may do, so a client (the web UI) can offer the
//! accounts it may use without a configuration of its own.

use super::error::ErrorBody;
use super::json;
use crate::auth::{Principal, Scope};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

/// The calling key.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// The key's id (never the key).
    pub id: String,
    /// Accounts it may use.
    pub accounts: Vec<String>,
    /// What it may do: `read`, `trade`, `funds`.
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
}

/// The calling key's id, accounts and scopes.
#[utoipa::path(
    get,
    path = "/v1/key",
    tag = "keys",
    responses(
        (status = 200, description = "The calling key", body = KeyView),
        (status = 401, description = "No valid API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn whoami(principal: Principal) -> Response {
    json(KeyView {
        id: principal.id,
        accounts: principal.accounts,
        scopes: principal.scopes,
    })
}
