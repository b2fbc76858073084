//! Prometheus metrics: counted on the request path into per-thread counters, summed and
//! written as Prometheus text only when the admin listener's `/metrics` is scraped.
//!
//! Every worker thread writes its own block of counters (a thread is given a shard the
//! first time it counts), so counting is a few uncontended relaxed atomic adds: no lock,
//! no shared cache line. Labels stay low-cardinality: the route prefix (never the raw
//! path), a status class, an error code, an upstream instance.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::wire::GatewayError;

/// Histogram bucket bounds, in seconds.
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket counters per histogram: the bounds above and +Inf, then the sum in microseconds.
const HISTOGRAM: usize = BUCKETS.len() + 2;

/// The gateway's own answers that are counted, in this order.
const ERRORS: [u16; 16] = [
    400, 401, 403, 404, 405, 408, 413, 414, 417, 429, 431, 500, 501, 502, 503, 504,
];

/// Counter offsets inside one route's block.
const STATUS: usize = 0; // 1xx..5xx, then "other" (no response)
const REQUEST_TIME: usize = STATUS + 6;
const UPSTREAM_TIME: usize = REQUEST_TIME + HISTOGRAM;
const GATEWAY_ERRORS: usize = UPSTREAM_TIME + HISTOGRAM;
const UPSTREAM_ERRORS: usize = GATEWAY_ERRORS + ERRORS.len();
const CLIENT_ERRORS: usize = UPSTREAM_ERRORS + 1;
const REQUEST_BYTES: usize = CLIENT_ERRORS + 1;
const RESPONSE_BYTES: usize = REQUEST_BYTES + 1;
const PER_ROUTE: usize = RESPONSE_BYTES + 1;
/// Status classes in the order of the counters.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Where 429 sits in `ERRORS`.
const RATE_LIMITED: usize = {
    let mut i = 0;
    while ERRORS[i] != 429 {
        i += 1;
    }
    i
};

/// What one finished request contributes.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The route's counters, or `None` when no route matched.
    pub route: Option<&'a RouteCounters>,
    /// Status sent to the client (0 when none was).
    pub status: u16,
    pub duration: Duration,
    /// From sending the request upstream to its response header.
    pub upstream_time: Option<Duration>,
    /// Set when the gateway answered itself.
    pub answered: Option<GatewayError>,
    /// The upstream failed the exchange: refused, reset, timed out, cut its answer short.
    pub upstream_error: bool,
    /// The client failed the exchange: closed, reset or stalled its side.
    pub client_error: bool,
    /// Body bytes read from the client and sent to it.
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// One route's counters, in one block per worker-thread shard. A reload that keeps the
/// route (the same prefix) keeps them.
pub struct RouteCounters {
    shards: Box<[Box<[AtomicU64]>]>,
}

impl std::fmt::Debug for RouteCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteCounters")
    }
}

impl RouteCounters {
    fn new(shards: usize) -> RouteCounters {
        RouteCounters {
            shards: (0..shards)
                .map(|_| (0..PER_ROUTE).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        }
    }

    fn block(&self) -> &[AtomicU64] {
        let shard = THREAD_INDEX.with(|i| *i) & (self.shards.len() - 1);
        &self.shards[shard]
    }

    /// One counter summed over every shard.
    fn total(&self, offset: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s[offset].load(Ordering::Relaxed))
            .sum()
    }

    /// Requests answered, by status class ("1xx".."5xx", "none"), for the status API.
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CLASSES
            .iter()
            .enumerate()
            .map(|(i, &class)| (class, self.total(STATUS + i)))
    }

    /// The gateway's own answers, by status code (only those that happened).
    pub fn gateway_errors(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        ERRORS
            .iter()
            .enumerate()
            .map(|(i, &code)| (code, self.total(GATEWAY_ERRORS + i)))
            .filter(|&(_, n)| n > 0)
    }

    pub fn upstream_errors(&self) -> u64 {
        self.total(UPSTREAM_ERRORS)
    }

    /// Requests by their time to the end of the response: a count per bound of
    /// [`BUCKETS`], then the count above the last (not cumulative).
    pub fn request_times(&self) -> [u64; BUCKETS.len() + 1] {
        std::array::from_fn(|b| self.total(REQUEST_TIME + b))
    }
}

/// All counters: a block per route prefix, and one for requests that matched no route.
pub struct Metrics {
    shards: usize,
    pub(crate) unmatched: RouteCounters,
    by_prefix: Mutex<HashMap<Arc<str>, Weak<RouteCounters>>>,
    /// Configurations loaded by SIGHUP, and those refused.
    pub reloads: ReloadCounts,
}

/// Outcomes of config reloads.
#[derive(Default)]
pub struct ReloadCounts {
    pub success: AtomicU64,
    pub failure: AtomicU64,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counters sharded for `threads` worker threads.
    pub fn new(threads: usize) -> Metrics {
        let shards = (threads + 2).next_power_of_two();
        Metrics {
            shards,
            unmatched: RouteCounters::new(shards),
            by_prefix: Mutex::new(HashMap::new()),
            reloads: ReloadCounts::default(),
        }
    }

    /// The counters of the route at `prefix`: those it had before a reload, or new ones.
    pub fn route(&self, prefix: &str) -> Arc<RouteCounters> {
        let Ok(mut by_prefix) = self.by_prefix.lock() else {
            return Arc::new(RouteCounters::new(self.shards));
        };
        by_prefix.retain(|_, c| c.strong_count() > 0);
        if let Some(c) = by_prefix.get(prefix).and_then(Weak::upgrade) {
            return c;
        }
        let c = Arc::new(RouteCounters::new(self.shards));
        by_prefix.insert(Arc::from(prefix), Arc::downgrade(&c));
        c
    }

    /// Count one finished request.
    pub fn observe(&self, o: &Observation) {
        let c = o.route.unwrap_or(&self.unmatched).block();
        let class = match o.status {
            100..=599 => usize::from(o.status / 100 - 1),
            _ => 5,
        };
        c[STATUS + class].fetch_add(1, Ordering::Relaxed);
        record(c, REQUEST_TIME, o.duration);
        if let Some(t) = o.upstream_time {
            record(c, UPSTREAM_TIME, t);
        }
        if let Some(err) = o.answered {
            if let Some(i) = ERRORS.iter().position(|&code| code == err.status()) {
                c[GATEWAY_ERRORS + i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if o.client_error {
            c[CLIENT_ERRORS].fetch_add(1, Ordering::Relaxed);
        }
        if o.upstream_error {
            c[UPSTREAM_ERRORS].fetch_add(1, Ordering::Relaxed);
        }
        if o.request_bytes > 0 {
            c[REQUEST_BYTES].fetch_add(o.request_bytes, Ordering::Relaxed);
        }
        if o.response_bytes > 0 {
            c[RESPONSE_BYTES].fetch_add(o.response_bytes, Ordering::Relaxed);
        }
    }

    /// The counters of requests that matched no route.
    pub fn unmatched(&self) -> &RouteCounters {
        &self.unmatched
    }
}

fn record(c: &[AtomicU64], at: usize, d: Duration) {
    let secs = d.as_secs_f64();
    let bucket = BUCKETS
        .iter()
        .position(|&bound| secs <= bound)
        .unwrap_or(BUCKETS.len());
    c[at + bucket].fetch_add(1, Ordering::Relaxed);
    c[at + HISTOGRAM - 1].fetch_add(d.as_micros() as u64, Ordering::Relaxed);
}

/// Seconds since the Unix epoch, with milliseconds.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

/// A label value with Prometheus' escaping.
pub fn label(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The counters' own series (requests, durations, the gateway's answers, bytes), for the
/// routes given by prefix ("" for requests that matched none). The scrape around them, with
/// the gauges read from the runtime, is the admin plane's (`crate::admin`).
pub fn write_series(out: &mut String, blocks: &[(&str, &RouteCounters)]) {
    out.push_str("# HELP pylon_requests_total Requests answered, by route prefix (\"\" when none matched) and status class.\n# TYPE pylon_requests_total counter\n");
    for &(route, c) in blocks {
        for (class, name) in CLASSES.iter().enumerate() {
            let n = c.total(STATUS + class);
            if n > 0 {
                out.push_str("pylon_requests_total{route=\"");
                label(out, route);
                let _ = writeln!(out, "\",status=\"{name}\"}} {n}");
            }
        }
    }

    for (name, help, offset) in [
        (
            "pylon_request_duration_seconds",
            "Time from the request to the end of the response, by route prefix.",
            REQUEST_TIME,
        ),
        (
            "pylon_upstream_response_seconds",
            "Time from sending a request upstream to its response header, by route prefix.",
            UPSTREAM_TIME,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for &(route, c) in blocks {
            let counts: Vec<u64> = (0..=BUCKETS.len()).map(|b| c.total(offset + b)).collect();
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (b, n) in counts.iter().enumerate() {
                cumulative += n;
                let le = BUCKETS.get(b).map_or("+Inf".to_string(), |v| v.to_string());
                let _ = write!(out, "{name}_bucket{{route=\"");
                label(out, route);
                let _ = writeln!(out, "\",le=\"{le}\"}} {cumulative}");
            }
            let sum = c.total(offset + HISTOGRAM - 1) as f64 / 1e6;
            let _ = write!(out, "{name}_sum{{route=\"");
            label(out, route);
            let _ = writeln!(out, "\"}} {sum}");
            let _ = write!(out, "{name}_count{{route=\"");
            label(out, route);
            let _ = writeln!(out, "\"}} {count}");
        }
    }

    out.push_str("# HELP pylon_gateway_errors_total Answers the gateway made itself, by route prefix and status code.\n# TYPE pylon_gateway_errors_total counter\n");
    for &(route, c) in blocks {
        for (i, code) in ERRORS.iter().enumerate() {
            let n = c.total(GATEWAY_ERRORS + i);
            if n > 0 {
                out.push_str("pylon_gateway_errors_total{route=\"");
                label(out, route);
                let _ = writeln!(out, "\",code=\"{code}\"}} {n}");
            }
        }
    }

    // the per-route counters with one series each
    for (name, help, offset) in [
        (
            "pylon_rate_limited_total",
            "Requests refused with 429, by route prefix.",
            GATEWAY_ERRORS + RATE_LIMITED,
        ),
        (
            "pylon_upstream_errors_total",
            "Exchanges the upstream failed (refused, reset, timed out, answer cut short), by route prefix.",
            UPSTREAM_ERRORS,
        ),
        (
            "pylon_client_errors_total",
            "Exchanges the client failed (closed, reset or stalled its side), by route prefix; logged at debug level, never as errors.",
            CLIENT_ERRORS,
        ),
        (
            "pylon_request_bytes_total",
            "Request body bytes read from clients, by route prefix.",
            REQUEST_BYTES,
        ),
        (
            "pylon_response_bytes_total",
            "Response body bytes sent to clients, by route prefix.",
            RESPONSE_BYTES,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for &(route, c) in blocks {
            let n = c.total(offset);
            if n > 0 {
                let _ = write!(out, "{name}{{route=\"");
                label(out, route);
                let _ = writeln!(out, "\"}} {n}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_route_and_class() {
        let m = Metrics::new(2);
        let (a, b) = (m.route("/a"), m.route("/b"));
        let obs = |route, status| Observation {
            route,
            status,
            duration: Duration::from_millis(3),
            upstream_time: Some(Duration::from_millis(2)),
            answered: None,
            upstream_error: status == 503,
            client_error: false,
            request_bytes: 0,
            response_bytes: 0,
        };
        m.observe(&obs(Some(&a), 200));
        m.observe(&obs(Some(&a), 204));
        m.observe(&obs(Some(&b), 503));
        m.observe(&Observation {
            answered: Some(GatewayError::NotFound),
            upstream_time: None,
            ..obs(None, 404)
        });
        assert_eq!(a.total(STATUS + 1), 2);
        assert_eq!(b.total(STATUS + 4), 1);
        assert_eq!(
            m.unmatched.total(STATUS + 3),
            1,
            "unmatched requests have their own block"
        );
        assert_eq!(m.unmatched.total(GATEWAY_ERRORS + 3), 1);
        assert_eq!(b.total(UPSTREAM_ERRORS), 1);
        assert_eq!(a.total(UPSTREAM_ERRORS), 0);
        assert_eq!(ERRORS[RATE_LIMITED], 429);
        // 3ms falls in the 5ms bucket
        assert_eq!(a.total(REQUEST_TIME + 2), 2);
        assert_eq!(a.total(REQUEST_TIME + HISTOGRAM - 1), 6000);
    }

    #[test]
    fn a_route_kept_by_a_reload_keeps_its_counts() {
        let m = Metrics::new(2);
        let before = m.route("/a");
        m.observe(&Observation {
            route: Some(&before),
            status: 200,
            duration: Duration::from_millis(1),
            upstream_time: None,
            answered: None,
            upstream_error: false,
            client_error: false,
            request_bytes: 0,
            response_bytes: 0,
        });
        let after = m.route("/a");
        assert_eq!(after.total(STATUS + 1), 1);
        drop((before, after));
        assert_eq!(
            m.route("/a").total(STATUS + 1),
            0,
            "a removed route starts over"
        );
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let m = Arc::new(Metrics::new(2));
        let route = m.route("/");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (m, route) = (m.clone(), route.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.observe(&Observation {
                            route: Some(&route),
                            status: 200,
                            duration: Duration::from_micros(10),
                            upstream_time: None,
                            answered: None,
                            upstream_error: false,
                            client_error: false,
                            request_bytes: 0,
                            response_bytes: 0,
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(route.total(STATUS + 1), 8000);
    }

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        label(&mut s, "a\"b\\c");
        assert_eq!(s, "a\\\"b\\\\c");
    }
}
