//! `GET /api/history`: each route's last 15 minutes, one point per step, for the status
//! page's charts (see [`crate::telemetry::history`]).

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::telemetry::history::{History, Point, STEP, STEPS};
use crate::telemetry::metrics::unix_seconds;

/// The history document: `step_s` and `window_s` in seconds, `now` and each point's `t`
/// (the end of its step) in seconds since the Unix epoch, points oldest first, routes in
/// the config's order. A step without a request has `null` percentiles. No history (no
/// admin listener counting) is an empty list of routes.
pub fn render(history: Option<&History>, now: SystemTime) -> Vec<u8> {
    let routes: Vec<Value> = history
        .map(History::routes)
        .unwrap_or_default()
        .into_iter()
        .map(|(prefix, points)| {
            json!({
                "prefix": &*prefix,
                "points": points.iter().map(point).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({
        "step_s": STEP.as_secs(),
        "window_s": STEP.as_secs() * STEPS as u64,
        "now": unix_seconds(now),
        "routes": routes,
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn point(p: &Point) -> Value {
    json!({
        "t": p.t,
        "rps": round(p.rps, 100.0),
        "p50_ms": p.p50_ms.map(|v| round(v, 1000.0)),
        "p99_ms": p.p99_ms.map(|v| round(v, 1000.0)),
        "c4xx": p.c4xx,
        "c5xx": p.c5xx,
    })
}

/// To a fixed number of decimals (`scale` 100: two), enough for a chart, short to send.
fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_document_has_the_steps_and_each_route() {
        let metrics = crate::telemetry::metrics::Metrics::new(1);
        let a = metrics.route("/a");
        let h = History::default();
        let (start, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
        h.sample(start, wall, [("/a", &*a)]);
        h.sample(start + STEP, wall + STEP, [("/a", &*a)]);
        let doc: Value =
            serde_json::from_slice(&render(Some(&h), wall + Duration::from_millis(5500))).unwrap();
        assert_eq!(
            doc,
            json!({
                "step_s": 5,
                "window_s": 900,
                "now": 5.5,
                "routes": [{"prefix": "/a", "points": [
                    {"t": 5.0, "rps": 0.0, "p50_ms": null, "p99_ms": null, "c4xx": 0, "c5xx": 0}
                ]}],
            })
        );
        let none: Value = serde_json::from_slice(&render(None, wall)).unwrap();
        assert_eq!(none["routes"], json!([]));
    }
}
