//! The facade's one error shape, Binance's: `{"code": -1121, "msg": "Invalid symbol."}` with
//! Binance's HTTP statuses (4xx for the caller's mistakes, 401 for keys, 429 for limits, 5xx for
//! the server). Errors of the OMS's own API are translated here, in one place.

use crate::api::error::ApiError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer of the Binance-compatible API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: StatusCode,
    code: i32,
    msg: String,
}

/// The JSON body.
#[derive(Serialize)]
struct Body<'a> {
    code: i32,
    msg: &'a str,
}

impl Error {
    /// An error with Binance's code and message.
    pub fn new(status: StatusCode, code: i32, msg: impl Into<String>) -> Error {
        Error {
            status,
            code,
            msg: msg.into(),
        }
    }

    /// 400 with a code.
    pub fn bad(code: i32, msg: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, code, msg)
    }

    /// Binance's code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Binance's message.
    pub fn msg(&self) -> &str {
        &self.msg
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// -2014: no `X-MBX-APIKEY`, or not shaped like a key.
    pub fn key_format() -> Error {
        Error::new(StatusCode::UNAUTHORIZED, -2014, "API-key format invalid.")
    }

    /// -2015: an unknown key, or one without the permission the call needs.
    pub fn key_refused() -> Error {
        Error::new(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )
    }

    /// -1022: the signature does not match.
    pub fn signature() -> Error {
        Error::bad(-1022, "Signature for this request is not valid.")
    }

    /// -1022: the same signed request again.
    pub fn replayed() -> Error {
        Error::bad(
            -1022,
            "Signature for this request is not valid: this signed request was already received.",
        )
    }

    /// -1021: the timestamp is outside the receive window.
    pub fn timestamp(ahead: bool) -> Error {
        if ahead {
            Error::bad(
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            )
        } else {
            Error::bad(
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            )
        }
    }

    /// -1102: a mandatory parameter is missing or empty.
    pub fn mandatory(name: &str) -> Error {
        Error::bad(
            -1102,
            format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        )
    }

    /// -1100: a parameter that does not parse.
    pub fn illegal(name: &str, legal: &str) -> Error {
        Error::bad(
            -1100,
            format!("Illegal characters found in parameter '{name}'; legal range is '{legal}'."),
        )
    }

    /// -1130: a value the call does not take.
    pub fn invalid(name: &str) -> Error {
        Error::bad(
            -1130,
            format!("Data sent for parameter '{name}' is not valid."),
        )
    }

    /// -1121.
    pub fn symbol() -> Error {
        Error::bad(-1121, "Invalid symbol.")
    }

    /// -2013: no such order (queries).
    pub fn no_such_order() -> Error {
        Error::bad(-2013, "Order does not exist.")
    }

    /// -2011: the order to cancel does not exist or is not open.
    pub fn unknown_order() -> Error {
        Error::bad(-2011, "Unknown order sent.")
    }

    /// -2010: the order was refused.
    pub fn rejected(msg: impl Into<String>) -> Error {
        Error::bad(-2010, msg)
    }

    /// -2010: the client order id is in use.
    pub fn duplicate() -> Error {
        Error::rejected("Duplicate order sent.")
    }

    /// -1003: over the key's rate limit.
    pub fn rate_limited() -> Error {
        Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            -1003,
            "Too many requests; current limit of this API key is exceeded.",
        )
    }

    /// -1001: a dependency is unavailable; retry.
    pub fn unavailable() -> Error {
        Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            -1001,
            "Internal error; unable to process your request. Please try again.",
        )
    }

    /// -1000.
    pub fn internal() -> Error {
        Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1000,
            "An unknown error occurred while processing the request.",
        )
    }

    /// The body as JSON text.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            code: self.code,
            msg: &self.msg,
        })
        .unwrap_or_default()
    }
}

/// The message of an order refused for `reason` (an OMS reject code), as Binance words it.
pub fn rejected_for(reason: &str, detail: &str) -> Error {
    match reason {
        "insufficient_funds" => {
            Error::rejected("Account has insufficient balance for requested action.")
        }
        "post_only_would_take" => Error::rejected("Order would immediately match and take."),
        "duplicate_client_order_id" | "duplicate_order_id" => Error::duplicate(),
        "unknown_symbol" => Error::symbol(),
        "instrument_halted" => Error::rejected("Market is closed."),
        "too_many_open_orders" => Error::rejected("Too many open orders."),
        _ => match filter(reason) {
            Some(name) => Error::bad(-1013, format!("Filter failure: {name} ({detail})")),
            None => Error::rejected(format!("Order rejected: {detail}")),
        },
    }
}

/// The exchange-info filter an OMS reject code stands for.
fn filter(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "off_tick" | "price_above_max" | "price_outside_band" => "PRICE_FILTER",
        "off_lot" | "quantity_below_min" | "quantity_above_max" | "not_positive" | "too_large" => {
            "LOT_SIZE"
        }
        "notional_below_min" | "notional_above_max" => "NOTIONAL",
        _ => return None,
    })
}

impl From<ApiError> for Error {
    fn from(error: ApiError) -> Error {
        match error.status().as_u16() {
            401 | 403 => Error::key_refused(),
            404 => Error::no_such_order(),
            429 => Error::rate_limited(),
            503 | 504 => Error::unavailable(),
            500..=599 => Error::internal(),
            _ => match error.code() {
                "idempotency_key_in_use" | "idempotency_key_reused" => Error::duplicate(),
                "order_not_open" | "unknown_order" => Error::unknown_order(),
                "price_required" | "price_not_allowed" | "invalid_time_in_force" => Error::bad(
                    -1106,
                    format!("Parameter not allowed or missing: {}", error.message()),
                ),
                code => rejected_for(code, error.message()),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                code: self.code,
                msg: &self.msg,
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oms_errors_become_binance_codes() {
        let cases = [
            (
                ApiError::bad_request("unknown_symbol", "unknown symbol"),
                -1121,
            ),
            (
                ApiError::bad_request("off_tick", "price is not a multiple"),
                -1013,
            ),
            (
                ApiError::conflict("duplicate_client_order_id", "open"),
                -2010,
            ),
            (ApiError::conflict("insufficient_funds", "no money"), -2010),
            (
                ApiError::conflict("order_not_open", "order 1 is filled"),
                -2011,
            ),
            (ApiError::not_found("no order 7"), -2013),
            (ApiError::unauthorized(), -2015),
            (ApiError::rate_limited("writes"), -1003),
            (ApiError::unavailable("journal", "down"), -1001),
            (ApiError::internal("boom"), -1000),
        ];
        for (error, code) in cases {
            assert_eq!(Error::from(error).code(), code);
        }
        let filter = Error::from(ApiError::bad_request("quantity_below_min", "too small"));
        assert_eq!(filter.msg(), "Filter failure: LOT_SIZE (too small)");
    }

    #[test]
    fn the_body_is_code_and_msg() {
        assert_eq!(
            Error::symbol().body(),
            r#"{"code":-1121,"msg":"Invalid symbol."}"#
        );
        assert_eq!(
            Error::unavailable().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
