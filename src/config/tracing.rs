//! `[tracing]`: W3C trace context, and OpenTelemetry spans exported over OTLP/HTTP.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::values::Timeout;

/// `[tracing]`: with it, every request carries a W3C `traceparent` upstream; sampled
/// requests become spans sent to `endpoint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// An OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// The resource's `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The part of new traces sampled; a client's `traceparent` decides for its trace.
    #[serde(default = "default_sampling")]
    pub sampling: Sampling,
    /// Only the trace context: no span is made or sent.
    #[serde(default)]
    pub propagate_only: bool,
    /// A response field that gives the client the trace context, e.g. `traceresponse`.
    #[serde(default)]
    pub response_header: Option<Spanned<String>>,
    /// Whether spans carry the query string (`url.query`); off, as it may hold secrets.
    #[serde(default)]
    pub record_query: bool,
    /// More resource attributes, e.g. `{ "deployment.environment" = "prod" }`.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// The longest one export may take.
    #[serde(default = "default_export_timeout")]
    pub export_timeout: Timeout,
    /// Spans waiting for export at most; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: SpanQueueSize,
}

fn default_service_name() -> String {
    "pylon".to_string()
}

fn default_sampling() -> Sampling {
    Sampling(0.01)
}

fn default_export_timeout() -> Timeout {
    Timeout(std::time::Duration::from_secs(5))
}

fn default_queue() -> SpanQueueSize {
    SpanQueueSize(8192)
}

/// `tracing.sampling`: a ratio from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling(pub f64);

impl<'de> Deserialize<'de> for Sampling {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if !(0.0..=1.0).contains(&v) {
            return Err(de::Error::custom(format!(
                "sampling is the part of new traces kept, from 0 (none) to 1 (all), not {v}"
            )));
        }
        Ok(Sampling(v))
    }
}

/// `tracing.queue`: 16 to 1,000,000 spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanQueueSize(pub usize);

impl<'de> Deserialize<'de> for SpanQueueSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(16..=1_000_000).contains(&n) {
            return Err(de::Error::custom(format!(
                "queue must be between 16 and 1000000 spans, not {n}"
            )));
        }
        Ok(SpanQueueSize(n as usize))
    }
}
