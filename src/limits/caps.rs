//! Two caps on pingora-limits, both with few keys (so its estimators are exact here):
//!
//! - [`InFlightCap`] (`max_in_flight` on a route): requests one client has in flight on
//!   the route at once, counted with `pingora_limits::inflight::Inflight`; one more gets
//!   429 with the RateLimit fields in the IETF draft's `concurrent-requests` quota unit.
//! - [`RouteRate`] (`route_rate` on a route): the route's requests from all clients
//!   together per window, with `pingora_limits::rate::Rate`; over it, 503 with
//!   Retry-After, which protects the upstream rather than judging a client.

use std::time::Duration;

use http::HeaderValue;
use pingora_limits::inflight::{Guard, Inflight};
use pingora_limits::rate::Rate;

use super::ClientKey;
use crate::wire::static_value;

/// The per-client cap on requests in flight.
pub struct InFlightCap {
    max: u32,
    inflight: Inflight,
    /// `RateLimit-Policy` of a refusal: `"inflight";q=N;qu="concurrent-requests"`.
    pub policy_header: HeaderValue,
}

impl std::fmt::Debug for InFlightCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightCap")
            .field("max", &self.max)
            .finish()
    }
}

/// The `RateLimit` field of a refusal by the in-flight cap: none left.
pub const IN_FLIGHT_EXHAUSTED: HeaderValue = HeaderValue::from_static("\"inflight\";r=0");

impl InFlightCap {
    pub fn new(max: u32) -> InFlightCap {
        InFlightCap {
            max,
            inflight: Inflight::new(),
            policy_header: static_value(&format!(
                "\"inflight\";q={max};qu=\"concurrent-requests\""
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("\"inflight\"")),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Count a request of `client` in flight until the guard drops; `None` (and nothing
    /// counted) when it already has `max` in flight.
    pub fn enter(&self, client: ClientKey) -> Option<Guard> {
        let (guard, now) = self.inflight.incr(client, 1);
        if now > i64::from(self.max) as isize {
            // dropping the guard counts the request out again
            drop(guard);
            return None;
        }
        Some(guard)
    }
}

/// The route-wide request-rate cap.
pub struct RouteRate {
    requests: u32,
    window: Duration,
    rate: Rate,
}

impl std::fmt::Debug for RouteRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRate")
            .field("requests", &self.requests)
            .field("window", &self.window)
            .finish()
    }
}

impl RouteRate {
    /// `requests` per `window` (whole seconds, at least one: the config checks).
    pub fn new(requests: u32, window: Duration) -> RouteRate {
        RouteRate {
            requests,
            window,
            rate: Rate::new(window),
        }
    }

    pub fn requests(&self) -> u32 {
        self.requests
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Count one request; `Err(retry_after)` in seconds when the window is full.
    pub fn admit(&self) -> Result<(), u32> {
        let seen = self.rate.observe(&(), 1);
        if seen > i64::from(self.requests) as isize {
            return Err(self.window.as_secs().max(1) as u32);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_capped_per_client_and_freed_when_done() {
        let cap = InFlightCap::new(2);
        let a = ClientKey::Ip("10.0.0.1".parse().unwrap());
        let b = ClientKey::Ip("10.0.0.2".parse().unwrap());
        let first = cap.enter(a).unwrap();
        let _second = cap.enter(a).unwrap();
        assert!(cap.enter(a).is_none(), "a third at once is refused");
        assert!(cap.enter(a).is_none(), "a refusal is not counted");
        assert!(cap.enter(b).is_some(), "another client has its own");
        drop(first);
        assert!(cap.enter(a).is_some(), "one finished: room for one");
        assert_eq!(
            cap.policy_header,
            "\"inflight\";q=2;qu=\"concurrent-requests\""
        );
    }

    #[test]
    fn the_route_rate_lets_exactly_its_requests_through_a_window() {
        let cap = RouteRate::new(5, Duration::from_secs(60));
        let passed = (0..20).filter(|_| cap.admit().is_ok()).count();
        assert_eq!(passed, 5);
        assert_eq!(cap.admit(), Err(60));
    }
}
