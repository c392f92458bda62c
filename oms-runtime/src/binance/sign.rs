//! Binance's request signing: HMAC-SHA256 with the key's secret over the request's parameters
//! exactly as sent (the query string, then the body, with the `signature` parameter taken
//! out), a `timestamp` within `recvWindow` of the server's clock, and (the OMS's addition) no
//! signature accepted twice.
//!
//! Pure: the clock is an argument.

use super::Error;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;

/// `recvWindow` when the request sets none, milliseconds.
pub const DEFAULT_RECV_WINDOW_MS: u64 = 5_000;
/// The largest `recvWindow` taken.
pub const MAX_RECV_WINDOW_MS: u64 = 60_000;
/// How far a timestamp may be ahead of the server's clock.
pub const MAX_AHEAD_MS: i64 = 1_000;

/// The signed text of a request and the signature it carries: Binance's `totalParams`, the
/// query string followed directly by the body, without the `signature` parameter.
pub fn split(query: &str, body: &str) -> (String, Option<String>) {
    let mut signature = None;
    let mut out = String::with_capacity(query.len() + body.len());
    for text in [query, body] {
        let mut first = true;
        for part in text.split('&').filter(|part| !part.is_empty()) {
            if let Some(value) = part.strip_prefix("signature=") {
                signature = Some(value.to_string());
                continue;
            }
            if !first {
                out.push('&');
            }
            out.push_str(part);
            first = false;
        }
    }
    (out, signature)
}

/// The signature of `payload` with `secret`, hex.
pub fn sign(secret: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The signature's 32 bytes if it is `payload`'s with `secret` (compared in constant time).
pub fn verify(secret: &str, payload: &str, signature: &str) -> Result<[u8; 32], Error> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(signature, &mut bytes).map_err(|_| Error::signature())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(payload.as_bytes());
    mac.verify_slice(&bytes).map_err(|_| Error::signature())?;
    Ok(bytes)
}

/// What a replay is recognised by: the call (method and path, or the WebSocket API's method)
/// and the signature.
pub fn seen_as(call: &str, signature: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = Sha256::new();
    hash.update(call.as_bytes());
    hash.update([0]);
    hash.update(signature);
    hash.finalize().into()
}

/// Checks `timestamp` (ms) against the server's `now` (ms): not more than
/// [`MAX_AHEAD_MS`] ahead, not older than `recv_window`.
pub fn window(timestamp: i64, recv_window: u64, now: i64) -> Result<(), Error> {
    if recv_window == 0 || recv_window > MAX_RECV_WINDOW_MS {
        return Err(Error::bad(
            -1131,
            format!("recvWindow must be 1 to {MAX_RECV_WINDOW_MS}."),
        ));
    }
    if timestamp > now + MAX_AHEAD_MS {
        return Err(Error::timestamp(true));
    }
    if now - timestamp > recv_window as i64 {
        return Err(Error::timestamp(false));
    }
    Ok(())
}

/// Signatures seen recently. A signature is kept until its request's window has passed: after
/// that, its timestamp refuses it anyway. This process's memory only: in distributed mode a
/// replay that reaches another pod is caught there only for orders (the client order id), which
/// is where a replay could do harm.
#[derive(Default)]
pub struct Replays {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    until: HashMap<[u8; 32], i64>,
    /// Size after the last sweep: the next sweep comes when the map has doubled.
    swept: usize,
}

/// Most signatures kept; at 60 s windows this is a thousand signed requests a second.
const MAX_KEPT: usize = 1_000_000;

impl Replays {
    /// Records `signature`, valid until `until` (ms); false if it was seen before (a replay), or
    /// if the table is full of unexpired signatures.
    pub fn first_use(&self, signature: [u8; 32], until: i64, now: i64) -> Result<(), Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.until.len() >= (2 * seen.swept).max(1024) {
            seen.until.retain(|_, kept| *kept >= now);
            seen.swept = seen.until.len();
        }
        if seen.until.len() >= MAX_KEPT {
            return Err(Error::rate_limited());
        }
        match seen.until.insert(signature, until) {
            Some(previous) if previous >= now => Err(Error::replayed()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of Binance's documentation (SIGNED endpoint security, HMAC).
    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    const QUERY: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    const SIGNATURE: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";

    #[test]
    fn binance_documentation_example_verifies() {
        assert_eq!(sign(SECRET, QUERY), SIGNATURE);
        let (payload, signature) = split(&format!("{QUERY}&signature={SIGNATURE}"), "");
        assert_eq!(payload, QUERY);
        assert!(verify(SECRET, &payload, &signature.unwrap()).is_ok());
    }

    #[test]
    fn query_and_body_are_concatenated_as_binance_does() {
        // Binance's "mixed query string and request body" example.
        let (payload, signature) = split(
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC",
            "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559&signature=abc",
        );
        assert_eq!(
            payload,
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTCquantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
        );
        assert_eq!(signature.as_deref(), Some("abc"));
    }

    #[test]
    fn a_wrong_secret_or_a_changed_parameter_is_refused() {
        let wrong = "x".repeat(64);
        assert_eq!(verify(&wrong, QUERY, SIGNATURE).unwrap_err().code(), -1022);
        let changed = QUERY.replace("quantity=1", "quantity=2");
        assert_eq!(
            verify(SECRET, &changed, SIGNATURE).unwrap_err().code(),
            -1022
        );
        assert_eq!(verify(SECRET, QUERY, "not hex").unwrap_err().code(), -1022);
        assert_eq!(
            verify(SECRET, QUERY, &SIGNATURE[..10]).unwrap_err().code(),
            -1022
        );
        // Either case of hex digits, as clients differ.
        assert!(verify(SECRET, QUERY, &SIGNATURE.to_uppercase()).is_ok());
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let now = 1_700_000_000_000;
        assert!(window(now, 5_000, now).is_ok());
        assert!(window(now - 5_000, 5_000, now).is_ok());
        assert_eq!(window(now - 5_001, 5_000, now).unwrap_err().code(), -1021);
        assert!(window(now + 1_000, 5_000, now).is_ok());
        assert_eq!(window(now + 1_001, 5_000, now).unwrap_err().code(), -1021);
        assert_eq!(window(now, 60_001, now).unwrap_err().code(), -1131);
        assert_eq!(window(now, 0, now).unwrap_err().code(), -1131);
    }

    #[test]
    fn a_signature_is_taken_once_within_its_window() {
        let replays = Replays::default();
        let now = 1_000;
        replays.first_use([1; 32], now + 5_000, now).unwrap();
        assert_eq!(
            replays
                .first_use([1; 32], now + 5_000, now + 10)
                .unwrap_err()
                .code(),
            -1022
        );
        replays.first_use([2; 32], now + 5_000, now).unwrap();
        // Past its window the timestamp check refuses the request before this table sees it.
        replays
            .first_use([1; 32], now + 20_000, now + 10_000)
            .unwrap();
        // Expired signatures are swept as the table grows.
        for i in 0..3_000u32 {
            let mut signature = [9u8; 32];
            signature[..4].copy_from_slice(&i.to_be_bytes());
            replays
                .first_use(
                    signature,
                    now + 30_000 + i64::from(i),
                    now + 30_000 + i64::from(i),
                )
                .unwrap();
        }
        assert!(replays.seen.lock().unwrap().until.len() < 3_000);
    }
}
