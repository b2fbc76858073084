//! The last 15 minutes of each route, for the status page's charts (`GET /api/history`).
//!
//! Every [`STEP`] the housekeeping reads each route's counters ([`RouteCounters`]) and
//! keeps, per route prefix, what changed over the step: requests per second, the median
//! and 99th percentile of the request time (estimated from the histogram's bucket counts
//! of the step alone, as Prometheus' `histogram_quantile` does over a `rate`), and the
//! 4xx and 5xx answers. Memory is bounded: a ring of [`STEPS`] points per route, and a
//! route that leaves the config leaves the history at the next step.
//!
//! The request path never sees this: it only adds to the counters, which are read here
//! under one lock, taken every few seconds by one task and by the admin listener.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::telemetry::metrics::{unix_seconds, RouteCounters, BUCKETS};

/// How often the counters are read: one point per route per step.
pub const STEP: Duration = Duration::from_secs(5);
/// Points kept per route: 15 minutes of steps.
pub const STEPS: usize = 180;

/// Counts per latency bucket: one per bound of [`BUCKETS`], then one above the last.
type Buckets = [u64; BUCKETS.len() + 1];

/// What one route did over one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When the step ended, in seconds since the Unix epoch.
    pub t: f64,
    /// Requests answered per second over the step.
    pub rps: f64,
    /// Median and 99th percentile of the request time, in milliseconds; `None` for a step
    /// without a request.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Answers with a 4xx and a 5xx status over the step.
    pub c4xx: u64,
    pub c5xx: u64,
}

/// One route's counters as read at one moment (totals since they were made).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Reading {
    requests: u64,
    c4xx: u64,
    c5xx: u64,
    times: Buckets,
}

impl Reading {
    fn of(c: &RouteCounters) -> Reading {
        let mut r = Reading {
            times: c.request_times(),
            ..Reading::default()
        };
        for (class, n) in c.requests() {
            r.requests += n;
            match class {
                "4xx" => r.c4xx = n,
                "5xx" => r.c5xx = n,
                _ => {}
            }
        }
        r
    }

    /// What was counted since `before`. Counters only grow, unless a route was removed and
    /// added again between two readings: then they started over, and all they hold is new.
    fn since(&self, before: &Reading) -> Reading {
        let grew = self.requests >= before.requests
            && self.c4xx >= before.c4xx
            && self.c5xx >= before.c5xx
            && self.times.iter().zip(&before.times).all(|(a, b)| a >= b);
        if !grew {
            return *self;
        }
        Reading {
            requests: self.requests - before.requests,
            c4xx: self.c4xx - before.c4xx,
            c5xx: self.c5xx - before.c5xx,
            times: std::array::from_fn(|b| self.times[b] - before.times[b]),
        }
    }
}

/// The time under which a fraction `q` (0 < q <= 1) of the counted requests fell, in
/// seconds: the bucket holding that rank, interpolated linearly inside it. A rank in the
/// last bucket (above the highest bound) is given that bound, as nothing tells how far
/// above it lies. `None` when nothing was counted.
fn quantile(counts: &Buckets, q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (b, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = BUCKETS.get(b) else {
                return BUCKETS.last().copied();
            };
            let lower = if b == 0 { 0.0 } else { BUCKETS[b - 1] };
            return Some(lower + (upper - lower) * (rank - below as f64) / n as f64);
        }
        below += n;
    }
    BUCKETS.last().copied()
}

/// The last [`STEPS`] points, oldest overwritten first.
#[derive(Debug)]
struct Ring {
    points: Vec<Point>,
    /// Where the next point goes once the ring is full (the oldest one).
    next: usize,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            points: Vec::with_capacity(STEPS),
            next: 0,
        }
    }

    fn push(&mut self, p: Point) {
        if self.points.len() < STEPS {
            self.points.push(p);
        } else {
            self.points[self.next] = p;
            self.next = (self.next + 1) % STEPS;
        }
    }

    /// Oldest first.
    fn iter(&self) -> impl Iterator<Item = &Point> {
        let (newer, older) = self.points.split_at(self.next);
        older.iter().chain(newer)
    }
}

/// One route's ring and the reading its next point starts from.
#[derive(Debug)]
struct Track {
    prefix: Arc<str>,
    last: Reading,
    ring: Ring,
}

/// The history of every route in the config, in the config's order.
#[derive(Debug, Default)]
pub struct History {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tracks: Vec<Track>,
    /// When the counters were last read.
    last: Option<Instant>,
}

impl History {
    /// Read the counters of the routes in force at `now` (`wall` on the clock): each route
    /// read before gains a point for what it did since, one new to the history gets its
    /// first reading, and a route no longer given is forgotten.
    pub fn sample<'a>(
        &self,
        now: Instant,
        wall: SystemTime,
        routes: impl IntoIterator<Item = (&'a str, &'a RouteCounters)>,
    ) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let elapsed = state
            .last
            .map(|last| now.saturating_duration_since(last).as_secs_f64());
        state.last = Some(now);
        let t = unix_seconds(wall);
        let mut before = std::mem::take(&mut state.tracks);
        for (prefix, counters) in routes {
            let reading = Reading::of(counters);
            let track = match before.iter().position(|k| &*k.prefix == prefix) {
                Some(i) => {
                    let mut track = before.swap_remove(i);
                    let step = reading.since(&track.last);
                    track.ring.push(Point {
                        t,
                        rps: match elapsed {
                            Some(secs) if secs > 0.0 => step.requests as f64 / secs,
                            _ => 0.0,
                        },
                        p50_ms: quantile(&step.times, 0.5).map(|s| s * 1000.0),
                        p99_ms: quantile(&step.times, 0.99).map(|s| s * 1000.0),
                        c4xx: step.c4xx,
                        c5xx: step.c5xx,
                    });
                    track.last = reading;
                    track
                }
                None => Track {
                    prefix: Arc::from(prefix),
                    last: reading,
                    ring: Ring::new(),
                },
            };
            state.tracks.push(track);
        }
    }

    /// Each route's points, oldest first, in the config's order.
    pub fn routes(&self) -> Vec<(Arc<str>, Vec<Point>)> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .tracks
            .iter()
            .map(|k| (k.prefix.clone(), k.ring.iter().copied().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{Metrics, Observation};

    fn request(m: &Metrics, route: &RouteCounters, status: u16, millis: u64) {
        m.observe(&Observation {
            route: Some(route),
            status,
            duration: Duration::from_millis(millis),
            upstream_time: None,
            answered: None,
            upstream_error: false,
            client_error: false,
            request_bytes: 0,
            response_bytes: 0,
        });
    }

    fn buckets(pairs: &[(usize, u64)]) -> Buckets {
        let mut b = Buckets::default();
        for &(i, n) in pairs {
            b[i] = n;
        }
        b
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn a_quantile_is_interpolated_inside_its_bucket() {
        // ten requests between 2.5 and 5 ms
        let ten = buckets(&[(2, 10)]);
        assert!(close(quantile(&ten, 0.5), 0.00375));
        assert!(close(quantile(&ten, 0.99), 0.004975));
        // the first bucket starts at 0
        assert!(close(quantile(&buckets(&[(0, 4)]), 0.5), 0.0005));
        // 90 fast, 10 slow: the median is among the fast, p99 among the slow
        let mixed = buckets(&[(0, 90), (7, 10)]);
        assert!(close(quantile(&mixed, 0.5), 0.001 * 50.0 / 90.0));
        assert!(close(quantile(&mixed, 0.99), 0.1 + 0.15 * 0.9));
        // empty buckets between are skipped, never interpolated into
        let gap = buckets(&[(1, 1), (9, 1)]);
        assert!(close(quantile(&gap, 0.5), 0.0025));
        assert!(close(quantile(&gap, 0.99), 0.5 + 0.5 * 0.98));
        // above the highest bound: that bound
        assert!(close(quantile(&buckets(&[(13, 3)]), 0.5), 10.0));
        assert_eq!(quantile(&Buckets::default(), 0.5), None);
    }

    #[test]
    fn a_point_holds_only_what_its_step_counted() {
        let m = Metrics::new(1);
        let a = m.route("/a");
        let h = History::default();
        let (start, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
        // counted before the first reading: not in any point
        for _ in 0..7 {
            request(&m, &a, 200, 400);
        }
        h.sample(start, wall, [("/a", &*a)]);
        assert!(h.routes()[0].1.is_empty(), "the first reading is a start");
        for _ in 0..8 {
            request(&m, &a, 200, 3);
        }
        request(&m, &a, 404, 3);
        request(&m, &a, 502, 3);
        h.sample(start + STEP, wall + STEP, [("/a", &*a)]);
        h.sample(start + STEP * 2, wall + STEP * 2, [("/a", &*a)]);
        let points = &h.routes()[0].1;
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].t, 5.0);
        assert!((points[0].rps - 2.0).abs() < 1e-9, "10 requests in 5 s");
        assert!(close(points[0].p50_ms, 3.75));
        assert!(close(points[0].p99_ms, 4.975));
        assert_eq!((points[0].c4xx, points[0].c5xx), (1, 1));
        assert_eq!(
            points[1],
            Point {
                t: 10.0,
                rps: 0.0,
                p50_ms: None,
                p99_ms: None,
                c4xx: 0,
                c5xx: 0,
            },
            "a quiet step is a point of nothing"
        );
    }

    #[test]
    fn the_ring_keeps_the_last_steps_in_order() {
        let mut ring = Ring::new();
        let point = |t| Point {
            t,
            rps: 0.0,
            p50_ms: None,
            p99_ms: None,
            c4xx: 0,
            c5xx: 0,
        };
        for i in 0..STEPS + 7 {
            ring.push(point(i as f64));
        }
        assert_eq!(ring.points.len(), STEPS);
        assert_eq!(ring.points.capacity(), STEPS, "never grows past its steps");
        let ts: Vec<f64> = ring.iter().map(|p| p.t).collect();
        let want: Vec<f64> = (7..STEPS + 7).map(|i| i as f64).collect();
        assert_eq!(ts, want);
    }

    #[test]
    fn a_route_gone_from_the_config_is_dropped_and_a_new_one_starts_empty() {
        let m = Metrics::new(1);
        let (a, b, c) = (m.route("/a"), m.route("/b"), m.route("/c"));
        let h = History::default();
        let (start, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
        h.sample(start, wall, [("/a", &*a), ("/b", &*b)]);
        h.sample(start + STEP, wall + STEP, [("/a", &*a), ("/b", &*b)]);
        h.sample(
            start + STEP * 2,
            wall + STEP * 2,
            [("/c", &*c), ("/a", &*a)],
        );
        let routes = h.routes();
        let names: Vec<&str> = routes.iter().map(|(p, _)| &**p).collect();
        assert_eq!(names, ["/c", "/a"], "in the config's order, /b gone");
        assert_eq!(routes[0].1.len(), 0);
        assert_eq!(routes[1].1.len(), 2);
    }

    #[test]
    fn counters_that_started_over_count_from_zero() {
        let m = Metrics::new(1);
        let a = m.route("/a");
        for _ in 0..5 {
            request(&m, &a, 200, 1);
        }
        let h = History::default();
        let (start, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
        h.sample(start, wall, [("/a", &*a)]);
        // the route was removed and added again: new counters under the same prefix
        drop(a);
        let again = m.route("/a");
        request(&m, &again, 200, 1);
        h.sample(start + STEP, wall + STEP, [("/a", &*again)]);
        assert!((h.routes()[0].1[0].rps - 0.2).abs() < 1e-9);
    }
}
