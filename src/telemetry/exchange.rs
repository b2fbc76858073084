//! One finished request, refused at the edge or proxied, becomes its metrics observation
//! and its access line here, and nowhere else. The edge and the gateway's `logging` phase
//! each describe what happened as an [`Exchange`]; [`Exchange::record`] tells the counters
//! and the log, and, with tracing, queues its spans.

use std::time::Duration;

use crate::telemetry::access_log::{AccessLog, Entry};
use crate::telemetry::metrics::{Metrics, Observation, RouteCounters};
use crate::telemetry::trace::{Finished, Traced};
use crate::wire::GatewayError;

/// What one finished request tells: its access line, and what only the counters need.
pub struct Exchange<'a> {
    /// The access line's fields; its status, duration and body bytes feed the counters too.
    pub entry: Entry<'a>,
    /// The matched route's counters, or `None` (no route matched, or metrics are off).
    pub counters: Option<&'a RouteCounters>,
    /// From sending the request upstream to its response header.
    pub upstream_time: Option<Duration>,
    /// Set when the gateway answered itself.
    pub answered: Option<GatewayError>,
    /// The upstream failed the exchange: refused, reset, timed out, cut its answer short.
    pub upstream_error: bool,
    /// The client failed the exchange.
    pub client_error: bool,
    /// Body bytes read from the client.
    pub request_bytes: u64,
    /// With tracing: the request's trace, whose spans end here.
    pub trace: Option<Traced<'a>>,
}

impl Exchange<'_> {
    /// Count the request and write its access line (unless the log is off).
    pub fn record(&self, metrics: Option<&Metrics>, log: &AccessLog) {
        if let Some(metrics) = metrics {
            metrics.observe(&Observation {
                route: self.counters,
                status: self.entry.status,
                duration: self.entry.duration,
                upstream_time: self.upstream_time,
                answered: self.answered,
                upstream_error: self.upstream_error,
                client_error: self.client_error,
                request_bytes: self.request_bytes,
                response_bytes: self.entry.body_bytes as u64,
            });
        }
        if !log.is_off() {
            log.log(&self.entry);
        }
        if let Some(trace) = &self.trace {
            let e = &self.entry;
            trace.record(&Finished {
                method: e.method,
                uri: e.uri,
                version: e.version,
                status: e.status,
                client: e.client,
                user_agent: e.user_agent,
                route: e.route,
                end: e.time,
                duration: e.duration,
            });
        }
    }
}
