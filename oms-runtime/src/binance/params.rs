//! A request's parameters as Binance takes them: form-encoded, in the query string, the body
//! (`application/x-www-form-urlencoded`), or both.

use super::Error;
use axum::http::{HeaderMap, header};
use rust_decimal::Decimal;
use std::str::FromStr;

/// Parameters every signed call takes besides its own.
const SIGNING: [&str; 3] = ["timestamp", "recvWindow", "signature"];

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses the query string and a form body. A body of another type, or a parameter given
    /// twice, is refused.
    pub fn parse(query: &str, headers: &HeaderMap, body: &[u8]) -> Result<Params, Error> {
        if !body.is_empty() {
            let form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_none_or(|value| {
                    value
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                });
            if !form {
                return Err(Error::bad(
                    -1100,
                    "Parameters go in the query string or an application/x-www-form-urlencoded body.",
                ));
            }
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in
            form_urlencoded::parse(query.as_bytes()).chain(form_urlencoded::parse(body))
        {
            if pairs.iter().any(|(known, _)| *known == name) {
                return Err(Error::bad(
                    -1101,
                    format!("Duplicate values for parameter '{name}'."),
                ));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Params { pairs })
    }

    /// From name-value pairs (the WebSocket API's `params`).
    pub fn of(pairs: Vec<(String, String)>) -> Params {
        Params { pairs }
    }

    /// Refuses any parameter not in `allowed` (nor one of signing's).
    pub fn only(&self, allowed: &[&str]) -> Result<(), Error> {
        match self.pairs.iter().find(|(name, _)| {
            !allowed.contains(&name.as_str()) && !SIGNING.contains(&name.as_str())
        }) {
            Some((name, _)) => Err(Error::bad(
                -1104,
                format!(
                    "Not all sent parameters were read: '{name}' is not a parameter of this call."
                ),
            )),
            None => Ok(()),
        }
    }

    /// A parameter's value; an empty one counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// A parameter that must be there.
    pub fn required(&self, name: &str) -> Result<&str, Error> {
        self.get(name).ok_or_else(|| Error::mandatory(name))
    }

    /// A decimal parameter such as a price.
    pub fn decimal(&self, name: &str) -> Result<Option<Decimal>, Error> {
        self.get(name)
            .map(|text| {
                let plain = text.len() <= 40
                    && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && text.bytes().filter(|b| *b == b'.').count() <= 1;
                plain
                    .then(|| Decimal::from_str(text).ok())
                    .flatten()
                    .ok_or_else(|| Error::illegal(name, "^([0-9]{1,20})(\\.[0-9]{1,20})?$"))
            })
            .transpose()
    }

    /// An integer parameter such as an order id or a limit.
    pub fn integer<T: FromStr>(&self, name: &str) -> Result<Option<T>, Error> {
        self.get(name)
            .map(|text| text.parse().map_err(|_| Error::illegal(name, "an integer")))
            .transpose()
    }

    /// A parameter that must be one of `allowed` (upper case, as Binance spells them).
    pub fn choice(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, Error> {
        self.get(name)
            .map(|text| {
                allowed
                    .iter()
                    .copied()
                    .find(|choice| *choice == text)
                    .ok_or_else(|| match name {
                        "side" => Error::bad(-1117, "Invalid side."),
                        "type" => Error::bad(-1116, "Invalid orderType."),
                        "timeInForce" => Error::bad(-1115, "Invalid timeInForce."),
                        _ => Error::invalid(name),
                    })
            })
            .transpose()
    }

    /// `limit`, from 1 to `max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, Error> {
        match self.integer::<usize>("limit")? {
            None => Ok(default),
            Some(limit) if (1..=max).contains(&limit) => Ok(limit),
            Some(_) => Err(Error::bad(
                -1130,
                format!("Data sent for parameter 'limit' is not valid: 1 to {max}."),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers
    }

    #[test]
    fn query_and_body_together() {
        let params = Params::parse(
            "symbol=BTCUSDT&side=BUY",
            &form(),
            b"quantity=0.5&price=60000.10",
        )
        .unwrap();
        assert_eq!(params.get("symbol"), Some("BTCUSDT"));
        assert_eq!(
            params.decimal("price").unwrap(),
            Some(Decimal::new(6_000_010, 2))
        );
        assert_eq!(
            params.choice("side", &["BUY", "SELL"]).unwrap(),
            Some("BUY")
        );
        params
            .only(&["symbol", "side", "quantity", "price"])
            .unwrap();
        assert_eq!(params.only(&["symbol"]).unwrap_err().code(), -1104);
    }

    #[test]
    fn bad_parameters_get_binance_codes() {
        let headers = HeaderMap::new();
        let twice = Params::parse("symbol=A&symbol=B", &headers, b"").unwrap_err();
        assert_eq!(twice.code(), -1101);
        let params = Params::parse(
            "price=1e5&side=UP&type=STOP&limit=0&n=x&empty=",
            &headers,
            b"",
        )
        .unwrap();
        assert_eq!(params.decimal("price").unwrap_err().code(), -1100);
        assert_eq!(
            params.choice("side", &["BUY", "SELL"]).unwrap_err().code(),
            -1117
        );
        assert_eq!(params.choice("type", &["LIMIT"]).unwrap_err().code(), -1116);
        assert_eq!(params.limit(500, 1000).unwrap_err().code(), -1130);
        assert_eq!(params.integer::<u64>("n").unwrap_err().code(), -1100);
        assert_eq!(params.required("empty").unwrap_err().code(), -1102);
        assert_eq!(params.required("absent").unwrap_err().code(), -1102);
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(Params::parse("", &json, b"{}").unwrap_err().code(), -1100);
    }
}
