//! Per-client rate limits on pingora-limits' [`Rate`], and the IETF RateLimit header fields.
//!
//! Each policy is `requests` per `window`, counted per client key (the client IP). Policies
//! with the same window share one [`Rate`]; a policy's id is part of the key, so their counts
//! stay apart while memory stays flat in the number of routes. A `Rate` counts in fixed
//! windows with a count-min sketch: cost and memory do not grow with the number of clients,
//! and an estimate can only err upwards (see [`SKETCH_SLOTS`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::HeaderValue;
use pingora_limits::rate::Rate;

use crate::headers::static_value;

/// Counters per hash row of each window's sketch. With 4 rows of 32,768 counters a `Rate`
/// holds 2 x 1 MiB. Estimates are exact until the counts of many clients share a counter in
/// every row: with up to about 30,000 requests per window across all clients a client is
/// practically never refused before its limit; beyond that a client close to its limit can
/// be refused a few requests early, never late.
pub const SKETCH_SLOTS: usize = 32_768;
const SKETCH_HASHES: usize = 4;

/// One configured limit, compiled.
#[derive(Clone)]
pub struct Policy {
    id: u32,
    requests: u32,
    window: Duration,
    rate: Arc<Rate>,
    /// `RateLimit-Policy` value, e.g. `"default";q=20;w=60`, built once.
    pub policy_header: HeaderValue,
    name: Arc<str>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("requests", &self.requests)
            .field("window", &self.window)
            .finish()
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: `remaining` more requests fit before the window resets in `reset` s.
    Allowed { remaining: u32, reset: u32 },
    /// Over the limit until the window resets in `reset` seconds.
    Limited { reset: u32 },
}

impl Verdict {
    pub fn reset(self) -> u32 {
        match self {
            Verdict::Allowed { reset, .. } | Verdict::Limited { reset } => reset,
        }
    }

    pub fn remaining(self) -> u32 {
        match self {
            Verdict::Allowed { remaining, .. } => remaining,
            Verdict::Limited { .. } => 0,
        }
    }
}

/// Builds policies so that those with the same window share a [`Rate`].
#[derive(Default)]
pub struct PolicyBuilder {
    rates: HashMap<Duration, Arc<Rate>>,
    next_id: u32,
}

impl PolicyBuilder {
    pub fn policy(&mut self, name: &str, requests: u32, window: Duration) -> Policy {
        let rate = self
            .rates
            .entry(window)
            .or_insert_with(|| {
                Arc::new(Rate::new_with_estimator_config(
                    window,
                    SKETCH_HASHES,
                    SKETCH_SLOTS,
                ))
            })
            .clone();
        let id = self.next_id;
        self.next_id += 1;
        let header = format!("\"{}\";q={};w={}", name, requests, window.as_secs());
        Policy {
            id,
            requests,
            window,
            rate,
            // names come from config prefixes, which are plain visible ASCII
            policy_header: static_value(&header)
                .unwrap_or_else(|_| HeaderValue::from_static("\"route\"")),
            name: Arc::from(name),
        }
    }
}

impl Policy {
    pub fn requests(&self) -> u32 {
        self.requests
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Count one request from `client` and say whether it may pass.
    pub fn check<K: Hash>(&self, client: &K) -> Verdict {
        let count = self.rate.observe(&(self.id, client), 1);
        let reset = self.seconds_to_reset();
        if count > self.requests as isize {
            Verdict::Limited { reset }
        } else {
            Verdict::Allowed {
                remaining: self.requests - count.max(0) as u32,
                reset,
            }
        }
    }

    /// Whole seconds until the current window ends, at least 1. The `Rate` knows where its
    /// window started; asking it about the unit key reads that without a second count.
    fn seconds_to_reset(&self) -> u32 {
        let fraction = self
            .rate
            .rate_with(&(), |c| c.current_interval_fraction)
            .clamp(0.0, 1.0);
        let left = self.window.as_secs_f64() * (1.0 - fraction);
        (left.ceil() as u32).max(1)
    }

    /// The `RateLimit` field for a verdict, e.g. `"default";r=7;t=41`: one allocation,
    /// no formatting machinery.
    pub fn rate_limit_header(&self, verdict: Verdict) -> HeaderValue {
        let mut numbers = itoa::Buffer::new();
        let mut buf = BytesMut::with_capacity(self.name.len() + 28);
        buf.put_u8(b'"');
        buf.put_slice(self.name.as_bytes());
        buf.put_slice(b"\";r=");
        buf.put_slice(numbers.format(verdict.remaining()).as_bytes());
        buf.put_slice(b";t=");
        buf.put_slice(numbers.format(verdict.reset()).as_bytes());
        HeaderValue::from_maybe_shared(buf.freeze())
            .unwrap_or_else(|_| HeaderValue::from_static("\"route\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_request_after_the_limit_is_refused() {
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 3, Duration::from_secs(60));
        let c = ip("10.0.0.1");
        assert!(matches!(p.check(&c), Verdict::Allowed { remaining: 2, .. }));
        assert!(matches!(p.check(&c), Verdict::Allowed { remaining: 1, .. }));
        assert!(matches!(p.check(&c), Verdict::Allowed { remaining: 0, .. }));
        assert!(matches!(p.check(&c), Verdict::Limited { .. }));
        // another client has its own budget
        assert!(matches!(
            p.check(&ip("10.0.0.2")),
            Verdict::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn policies_sharing_a_window_count_apart() {
        let mut b = PolicyBuilder::default();
        let a = b.policy("a", 1, Duration::from_secs(60));
        let z = b.policy("z", 1, Duration::from_secs(60));
        assert!(Arc::ptr_eq(&a.rate, &z.rate));
        let c = ip("10.0.0.1");
        assert!(matches!(a.check(&c), Verdict::Allowed { .. }));
        assert!(matches!(z.check(&c), Verdict::Allowed { .. }));
        assert!(matches!(a.check(&c), Verdict::Limited { .. }));
    }

    #[test]
    fn reset_is_within_the_window() {
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 20, Duration::from_secs(60));
        let v = p.check(&ip("10.0.0.1"));
        assert!((1..=60).contains(&v.reset()), "{v:?}");
    }

    #[test]
    fn header_fields_follow_the_draft() {
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 20, Duration::from_secs(60));
        assert_eq!(p.policy_header, "\"default\";q=20;w=60");
        let v = Verdict::Allowed {
            remaining: 7,
            reset: 41,
        };
        assert_eq!(p.rate_limit_header(v), "\"default\";r=7;t=41");
        assert_eq!(
            p.rate_limit_header(Verdict::Limited { reset: 5 }),
            "\"default\";r=0;t=5"
        );
    }

    #[test]
    fn a_crowd_of_light_clients_does_not_push_one_over_early() {
        // 20,000 clients with one request each, then one client uses its whole budget of 20:
        // every one of its 20 requests must pass.
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 20, Duration::from_secs(3600));
        for i in 0..20_000u32 {
            let c = IpAddr::from(i.to_be_bytes());
            assert!(matches!(p.check(&c), Verdict::Allowed { .. }));
        }
        let me = ip("192.168.1.1");
        for n in 1..=20 {
            assert!(
                matches!(p.check(&me), Verdict::Allowed { .. }),
                "request {n} refused early"
            );
        }
        assert!(matches!(p.check(&me), Verdict::Limited { .. }));
    }
}
