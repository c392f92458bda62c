//! Rate limits per API key: writes and reads counted apart, in one-second windows.
//!
//! Every authenticated answer carries the IETF headers (draft-ietf-httpapi-ratelimit-headers):
//! `RateLimit-Policy: "writes";q=100;w=1` (the quota per window) and `RateLimit:
//! "writes";r=42;t=1` (what is left, and the seconds until the window resets). A request over
//! the quota gets `429 rate_limited` with `Retry-After` and changes nothing.
//!
//! The counts are per process: each ingest pod limits what reaches it, so a key behind a
//! Service of N pods may do up to N times its quota. A count shared across pods (in Redis)
//! would add a round trip to every request, and the limits are there to keep one client from
//! starving the others of a pod, which a per-pod count does.

use crate::auth::Principal;
use axum::http::{HeaderMap, HeaderValue, Method};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The length of a window.
const WINDOW: Duration = Duration::from_secs(1);

/// What a request is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// GET and HEAD.
    Reads,
    /// Everything else.
    Writes,
}

impl Class {
    /// Its place in a key's windows.
    fn index(self) -> usize {
        match self {
            Class::Reads => 0,
            Class::Writes => 1,
        }
    }

    /// The class of a request method.
    pub fn of(method: &Method) -> Class {
        if method == Method::GET || method == Method::HEAD {
            Class::Reads
        } else {
            Class::Writes
        }
    }

    /// The policy's name in the headers and the metric's label.
    pub fn name(self) -> &'static str {
        match self {
            Class::Reads => "reads",
            Class::Writes => "writes",
        }
    }
}

/// The quotas of a key that sets none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Writes per second.
    pub writes_per_second: u32,
    /// Reads per second.
    pub reads_per_second: u32,
}

/// What the limiter decided about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The class counted.
    pub class: Class,
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests per window.
    pub quota: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Whole seconds until the window resets (at least 1).
    pub reset: u64,
}

impl Verdict {
    /// Adds the `RateLimit-Policy` and `RateLimit` headers (and `Retry-After` when refused).
    pub fn headers(&self, headers: &mut HeaderMap) {
        let name = self.class.name();
        let policy = format!("\"{name}\";q={};w={}", self.quota, WINDOW.as_secs());
        let state = format!("\"{name}\";r={};t={}", self.remaining, self.reset);
        for (header, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(header, value);
            }
        }
        if !self.allowed {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(self.reset),
            );
        }
    }
}

/// One key's current window of one class.
#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    used: u32,
}

/// The counts of every key: its windows by [`Class::index`], under its id (looked up by `&str`,
/// so a request allocates nothing once its key has been seen).
pub struct RateLimiter {
    defaults: Defaults,
    windows: Mutex<HashMap<String, [Window; 2]>>,
}

impl RateLimiter {
    /// A limiter whose keys without limits of their own get `defaults`.
    pub fn new(defaults: Defaults) -> RateLimiter {
        RateLimiter {
            defaults,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `principal` of `class` at `now`, if its quota allows it.
    pub fn check(&self, principal: &Principal, class: Class, now: Instant) -> Verdict {
        let quota = match class {
            Class::Writes => principal
                .rate_limits
                .writes_per_second
                .unwrap_or(self.defaults.writes_per_second),
            Class::Reads => principal
                .rate_limits
                .reads_per_second
                .unwrap_or(self.defaults.reads_per_second),
        };
        let mut windows = match self.windows.lock() {
            Ok(windows) => windows,
            Err(poisoned) => poisoned.into_inner(),
        };
        let window = match windows.get_mut(principal.id.as_str()) {
            Some(key) => &mut key[class.index()],
            None => {
                let fresh = Window {
                    started: now,
                    used: 0,
                };
                &mut windows.entry(principal.id.clone()).or_insert([fresh; 2])[class.index()]
            }
        };
        count(window, class, quota, now)
    }
}

/// Counts a request in `window` if `quota` allows it.
fn count(window: &mut Window, class: Class, quota: u32, now: Instant) -> Verdict {
    if now.duration_since(window.started) >= WINDOW {
        window.started = now;
        window.used = 0;
    }
    let allowed = window.used < quota;
    if allowed {
        window.used += 1;
    }
    let left = WINDOW.saturating_sub(now.duration_since(window.started));
    Verdict {
        class,
        allowed,
        quota,
        remaining: quota - window.used,
        reset: left.as_secs_f64().ceil().max(1.0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{RateLimits, Scope};

    fn principal(limits: RateLimits) -> Principal {
        Principal {
            id: "k".into(),
            accounts: vec!["a".into()],
            scopes: vec![Scope::Read],
            rate_limits: limits,
        }
    }

    #[test]
    fn a_window_allows_its_quota_then_refuses_until_it_resets() {
        let limiter = RateLimiter::new(Defaults {
            writes_per_second: 3,
            reads_per_second: 5,
        });
        let key = principal(RateLimits::default());
        let start = Instant::now();
        for left in [2, 1, 0] {
            let verdict = limiter.check(&key, Class::Writes, start);
            assert!(verdict.allowed);
            assert_eq!((verdict.quota, verdict.remaining), (3, left));
        }
        let refused = limiter.check(&key, Class::Writes, start + Duration::from_millis(400));
        assert!(!refused.allowed);
        assert_eq!((refused.remaining, refused.reset), (0, 1));
        // reads are counted apart
        assert!(limiter.check(&key, Class::Reads, start).allowed);
        // a new window
        let later = limiter.check(&key, Class::Writes, start + Duration::from_millis(1001));
        assert!(later.allowed);
        assert_eq!(later.remaining, 2);
    }

    #[test]
    fn a_key_may_set_its_own_quota_and_headers_say_it() {
        let limiter = RateLimiter::new(Defaults {
            writes_per_second: 3,
            reads_per_second: 5,
        });
        let key = principal(RateLimits {
            writes_per_second: Some(1),
            reads_per_second: None,
        });
        let now = Instant::now();
        assert!(limiter.check(&key, Class::Writes, now).allowed);
        let refused = limiter.check(&key, Class::Writes, now);
        assert!(!refused.allowed);
        let mut headers = HeaderMap::new();
        refused.headers(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"writes\";q=1;w=1");
        assert_eq!(headers["ratelimit"], "\"writes\";r=0;t=1");
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(limiter.check(&key, Class::Reads, now).quota, 5);
    }
}
