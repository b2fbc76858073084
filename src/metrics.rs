//! Prometheus metrics: counted on the request path into per-thread counters, summed and
//! written as Prometheus text only when `/metrics` is scraped.
//!
//! Every worker thread writes its own block of counters (a thread is given a shard the
//! first time it counts), so counting is a few uncontended relaxed atomic adds: no lock,
//! no shared cache line. Labels stay low-cardinality: the route prefix (never the raw
//! path), a status class, an error code, an upstream instance.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::error::GatewayError;
use crate::runtime::Runtime;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket counters per histogram: the bounds above and +Inf, then the sum in microseconds.
const HISTOGRAM: usize = BUCKETS.len() + 2;

/// The gateway's own answers that are counted, in this order.
const ERRORS: [u16; 15] = [
    400, 401, 403, 404, 405, 408, 413, 414, 429, 431, 500, 501, 502, 503, 504,
];

/// Counter offsets inside one route's block.
const STATUS: usize = 0; // 1xx..5xx, then "other" (no response)
const REQUEST_TIME: usize = STATUS + 6;
const UPSTREAM_TIME: usize = REQUEST_TIME + HISTOGRAM;
const GATEWAY_ERRORS: usize = UPSTREAM_TIME + HISTOGRAM;
const UPSTREAM_ERRORS: usize = GATEWAY_ERRORS + ERRORS.len();
const PER_ROUTE: usize = UPSTREAM_ERRORS + 1;
/// Where 429 sits in `ERRORS`.
const RATE_LIMITED: usize = 8;

/// What one finished request contributes.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// Index of the route, or `None` when no route matched.
    pub route: Option<usize>,
    /// Status sent to the client (0 when none was).
    pub status: u16,
    pub duration: Duration,
    /// From sending the request upstream to its response header.
    pub upstream_time: Option<Duration>,
    /// Set when the gateway answered itself.
    pub answered: Option<GatewayError>,
    /// The upstream failed the exchange: refused, reset, timed out, cut its answer short.
    pub upstream_error: bool,
}

struct Shard {
    counters: Box<[AtomicU64]>,
}

/// All counters: one block per route plus one for requests that matched no route, in
/// one shard per worker thread.
pub struct Metrics {
    routes: usize,
    shards: Box<[Shard]>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counters for `routes` routes, sharded for `threads` worker threads.
    pub fn new(routes: usize, threads: usize) -> Metrics {
        let shards = (threads + 2).next_power_of_two();
        let per_shard = (routes + 1) * PER_ROUTE;
        Metrics {
            routes,
            shards: (0..shards)
                .map(|_| Shard {
                    counters: (0..per_shard).map(|_| AtomicU64::new(0)).collect(),
                })
                .collect(),
        }
    }

    fn block(&self, route: Option<usize>) -> (&[AtomicU64], usize) {
        let shard = THREAD_INDEX.with(|i| *i) & (self.shards.len() - 1);
        let route = route.filter(|&r| r < self.routes).unwrap_or(self.routes);
        (&self.shards[shard].counters, route * PER_ROUTE)
    }

    /// Count one finished request.
    pub fn observe(&self, o: &Observation) {
        let (c, base) = self.block(o.route);
        let class = match o.status {
            100..=599 => usize::from(o.status / 100 - 1),
            _ => 5,
        };
        c[base + STATUS + class].fetch_add(1, Ordering::Relaxed);
        record(c, base + REQUEST_TIME, o.duration);
        if let Some(t) = o.upstream_time {
            record(c, base + UPSTREAM_TIME, t);
        }
        if let Some(err) = o.answered {
            if let Some(i) = ERRORS.iter().position(|&code| code == err.status()) {
                c[base + GATEWAY_ERRORS + i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if o.upstream_error {
            c[base + UPSTREAM_ERRORS].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One counter summed over every shard.
    fn total(&self, route: usize, offset: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.counters[route * PER_ROUTE + offset].load(Ordering::Relaxed))
            .sum()
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

/// A label value with Prometheus' escaping.
fn label(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The Prometheus text for a runtime.
pub fn render(rt: &Runtime, metrics: &Metrics) -> String {
    let mut out = String::with_capacity(4096 + rt.routes.len() * 2048);
    let route_label = |i: usize| -> &str { rt.routes.get(i).map_or("", |r| &r.prefix) };
    let all_routes = 0..=metrics.routes;

    out.push_str("# HELP pylon_build_info Pylon's version.\n# TYPE pylon_build_info gauge\n");
    let _ = writeln!(
        out,
        "pylon_build_info{{version=\"{}\",pingora=\"0.9\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    out.push_str("# HELP pylon_requests_total Requests answered, by route prefix (\"\" when none matched) and status class.\n# TYPE pylon_requests_total counter\n");
    for r in all_routes.clone() {
        for (class, name) in ["1xx", "2xx", "3xx", "4xx", "5xx", "none"]
            .iter()
            .enumerate()
        {
            let n = metrics.total(r, STATUS + class);
            if n > 0 {
                out.push_str("pylon_requests_total{route=\"");
                label(&mut out, route_label(r));
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
        for r in all_routes.clone() {
            let counts: Vec<u64> = (0..=BUCKETS.len())
                .map(|b| metrics.total(r, offset + b))
                .collect();
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (b, n) in counts.iter().enumerate() {
                cumulative += n;
                let le = BUCKETS.get(b).map_or("+Inf".to_string(), |v| v.to_string());
                let _ = write!(out, "{name}_bucket{{route=\"");
                label(&mut out, route_label(r));
                let _ = writeln!(out, "\",le=\"{le}\"}} {cumulative}");
            }
            let sum = metrics.total(r, offset + HISTOGRAM - 1) as f64 / 1e6;
            let _ = write!(out, "{name}_sum{{route=\"");
            label(&mut out, route_label(r));
            let _ = writeln!(out, "\"}} {sum}");
            let _ = write!(out, "{name}_count{{route=\"");
            label(&mut out, route_label(r));
            let _ = writeln!(out, "\"}} {count}");
        }
    }

    out.push_str("# HELP pylon_gateway_errors_total Answers the gateway made itself, by route prefix and status code.\n# TYPE pylon_gateway_errors_total counter\n");
    for r in all_routes.clone() {
        for (i, code) in ERRORS.iter().enumerate() {
            let n = metrics.total(r, GATEWAY_ERRORS + i);
            if n > 0 {
                out.push_str("pylon_gateway_errors_total{route=\"");
                label(&mut out, route_label(r));
                let _ = writeln!(out, "\",code=\"{code}\"}} {n}");
            }
        }
    }

    out.push_str("# HELP pylon_rate_limited_total Requests refused with 429, by route prefix.\n# TYPE pylon_rate_limited_total counter\n");
    for r in all_routes.clone() {
        let n = metrics.total(r, GATEWAY_ERRORS + RATE_LIMITED);
        if n > 0 {
            out.push_str("pylon_rate_limited_total{route=\"");
            label(&mut out, route_label(r));
            let _ = writeln!(out, "\"}} {n}");
        }
    }

    out.push_str("# HELP pylon_upstream_errors_total Exchanges the upstream failed (refused, reset, timed out, answer cut short), by route prefix.\n# TYPE pylon_upstream_errors_total counter\n");
    for r in all_routes {
        let n = metrics.total(r, UPSTREAM_ERRORS);
        if n > 0 {
            out.push_str("pylon_upstream_errors_total{route=\"");
            label(&mut out, route_label(r));
            let _ = writeln!(out, "\"}} {n}");
        }
    }

    out.push_str("# HELP pylon_upstream_healthy Whether an upstream instance takes traffic (1) or not (0).\n# TYPE pylon_upstream_healthy gauge\n");
    for route in &rt.routes {
        for (i, inst) in route.pool.instances().iter().enumerate() {
            out.push_str("pylon_upstream_healthy{route=\"");
            label(&mut out, &route.prefix);
            out.push_str("\",upstream=\"");
            label(&mut out, &inst.authority);
            let _ = writeln!(out, "\"}} {}", u8::from(route.pool.is_available(i)));
        }
    }

    out.push_str("# HELP pylon_downstream_connections Open client connections.\n# TYPE pylon_downstream_connections gauge\n");
    let _ = writeln!(
        out,
        "pylon_downstream_connections {}",
        rt.connections.open()
    );
    out.push_str("# HELP pylon_downstream_connections_refused_total Client connections closed at once because server.max_connections were open.\n# TYPE pylon_downstream_connections_refused_total counter\n");
    let _ = writeln!(
        out,
        "pylon_downstream_connections_refused_total {}",
        rt.connections.refused()
    );

    out.push_str("# HELP pylon_rate_limit_clients Rate-limit counters held (per policy and client).\n# TYPE pylon_rate_limit_clients gauge\n");
    let _ = writeln!(out, "pylon_rate_limit_clients {}", rt.limiter.len());
    out.push_str("# HELP pylon_rate_limit_evicted_total Rate-limit counters dropped to stay within rate_limit.max_clients.\n# TYPE pylon_rate_limit_evicted_total counter\n");
    let _ = writeln!(
        out,
        "pylon_rate_limit_evicted_total {}",
        rt.limiter.evicted()
    );

    out.push_str("# HELP pylon_access_log_dropped_total Access-log lines lost to a full queue.\n# TYPE pylon_access_log_dropped_total counter\n");
    let _ = writeln!(
        out,
        "pylon_access_log_dropped_total {}",
        rt.access_log.dropped()
    );
    out
}

/// The `/metrics` endpoint.
pub struct MetricsApp {
    rt: Arc<Runtime>,
}

impl MetricsApp {
    pub fn new(rt: Arc<Runtime>) -> MetricsApp {
        MetricsApp { rt }
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, body, content_type) = match (path, &self.rt.metrics) {
            ("/metrics", Some(metrics)) => (
                200,
                render(&self.rt, metrics).into_bytes(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            _ => (404, b"not found\n".to_vec(), "text/plain"),
        };
        Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .header("Content-Length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_route_and_class() {
        let m = Metrics::new(2, 2);
        let obs = |route, status| Observation {
            route,
            status,
            duration: Duration::from_millis(3),
            upstream_time: Some(Duration::from_millis(2)),
            answered: None,
            upstream_error: status == 503,
        };
        m.observe(&obs(Some(0), 200));
        m.observe(&obs(Some(0), 204));
        m.observe(&obs(Some(1), 503));
        m.observe(&Observation {
            answered: Some(GatewayError::NotFound),
            upstream_time: None,
            ..obs(None, 404)
        });
        assert_eq!(m.total(0, STATUS + 1), 2);
        assert_eq!(m.total(1, STATUS + 4), 1);
        assert_eq!(
            m.total(2, STATUS + 3),
            1,
            "unmatched requests have their own block"
        );
        assert_eq!(m.total(2, GATEWAY_ERRORS + 3), 1);
        assert_eq!(m.total(1, UPSTREAM_ERRORS), 1);
        assert_eq!(m.total(0, UPSTREAM_ERRORS), 0);
        assert_eq!(ERRORS[RATE_LIMITED], 429);
        // 3ms falls in the 5ms bucket
        assert_eq!(m.total(0, REQUEST_TIME + 2), 2);
        assert_eq!(m.total(0, REQUEST_TIME + HISTOGRAM - 1), 6000);
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let m = Arc::new(Metrics::new(1, 2));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.observe(&Observation {
                            route: Some(0),
                            status: 200,
                            duration: Duration::from_micros(10),
                            upstream_time: None,
                            answered: None,
                            upstream_error: false,
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.total(0, STATUS + 1), 8000);
    }

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        label(&mut s, "a\"b\\c");
        assert_eq!(s, "a\\\"b\\\\c");
    }
}
