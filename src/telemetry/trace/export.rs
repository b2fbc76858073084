//! The way out: a bounded queue of finished spans, and the task that sends them in
//! batches as OTLP/HTTP (protobuf, the official `opentelemetry-proto` types) to the
//! collector. A full queue drops and counts; a slow or dead collector costs an export its
//! timeout, never a request anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost_otlp::Message;
use tokio::sync::{watch, Notify};

use super::span::{Attr, Kind, SpanRecord, Value};
use super::Tracing;

/// Spans per export at most.
const BATCH: usize = 512;
/// How long a span may wait for a full batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Finished spans waiting for export, shared by every runtime of the process (a reload
/// loses none), and what became of them.
#[derive(Default)]
pub struct SpanQueue {
    spans: Mutex<Vec<SpanRecord>>,
    wake: Notify,
    dropped: AtomicU64,
    exported: AtomicU64,
    failed_exports: AtomicU64,
}

impl SpanQueue {
    /// Queue spans, up to `cap` waiting; the rest are dropped and counted.
    pub fn push(&self, spans: impl IntoIterator<Item = SpanRecord>, cap: usize) {
        let Ok(mut queue) = self.spans.lock() else {
            return;
        };
        let mut dropped = 0;
        for span in spans {
            if queue.len() < cap {
                queue.push(span);
            } else {
                dropped += 1;
            }
        }
        let full = queue.len() >= BATCH;
        drop(queue);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if full {
            self.wake.notify_one();
        }
    }

    /// Spans dropped: the queue was full, or their export failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    pub fn failed_exports(&self) -> u64 {
        self.failed_exports.load(Ordering::Relaxed)
    }

    fn take(&self) -> Vec<SpanRecord> {
        let Ok(mut queue) = self.spans.lock() else {
            return Vec::new();
        };
        let n = queue.len().min(BATCH);
        queue.drain(..n).collect()
    }

    /// Send batches to `tracing`'s collector: when a batch is full, and at least every
    /// second; until `stop`, then what is left once.
    pub async fn run(&self, tracing: &Tracing, mut stop: watch::Receiver<bool>) {
        let Some(endpoint) = tracing.endpoint.as_deref() else {
            return;
        };
        // made with the first batch: loading the system's CAs is work that a gateway
        // whose requests are not sampled never needs
        let mut client: Option<reqwest::Client> = None;
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => false,
                () = self.wake.notified() => false,
                changed = stop.changed() => changed.is_err() || *stop.borrow(),
            };
            loop {
                let batch = self.take();
                if batch.is_empty() {
                    break;
                }
                if client.is_none() {
                    match reqwest::Client::builder()
                        .timeout(tracing.export_timeout)
                        .build()
                    {
                        Ok(made) => client = Some(made),
                        Err(e) => {
                            log::error!("tracing: no HTTP client for the exports: {e}");
                            self.dropped
                                .fetch_add(batch.len() as u64, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                if let Some(client) = &client {
                    self.export(client, endpoint, tracing, batch).await;
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn export(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        tracing: &Tracing,
        batch: Vec<SpanRecord>,
    ) {
        let n = batch.len() as u64;
        let body = encode(tracing, batch);
        let sent = client
            .post(endpoint)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("the collector answered {}", answer.status())),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                self.exported.fetch_add(n, Ordering::Relaxed);
            }
            Some(why) => {
                // logged on the first failure and every hundredth after
                let failed = self.failed_exports.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(n, Ordering::Relaxed);
                if failed % 100 == 0 {
                    log::warn!("tracing: {n} spans not exported to {endpoint}: {why}");
                }
            }
        }
    }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

fn any(value: Value) -> AnyValue {
    AnyValue {
        value: Some(match value {
            Value::Str(s) => any_value::Value::StringValue(s),
            Value::Int(i) => any_value::Value::IntValue(i),
        }),
    }
}

fn attributes(attrs: Vec<Attr>) -> Vec<KeyValue> {
    attrs
        .into_iter()
        .map(|a| key_value(a.key, any(a.value)))
        .collect()
}

/// One OTLP request: the resource, Pylon as the instrumentation scope, the spans.
fn encode(tracing: &Tracing, batch: Vec<SpanRecord>) -> Vec<u8> {
    let resource = Resource {
        attributes: tracing
            .resource
            .iter()
            .map(|(k, v)| key_value(k, any(Value::Str(v.clone()))))
            .collect(),
        ..Default::default()
    };
    let spans = batch.into_iter().map(otlp_span).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "pylon".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn otlp_span(s: SpanRecord) -> Span {
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state,
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(s.sampled),
        name: s.name,
        kind: match s.kind {
            Kind::Server => span::SpanKind::Server,
            Kind::Client => span::SpanKind::Client,
        } as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes: attributes(s.attrs),
        events: s
            .events
            .into_iter()
            .map(|e| span::Event {
                time_unix_nano: e.at_ns,
                name: e.name.to_string(),
                attributes: attributes(e.attrs),
                ..Default::default()
            })
            .collect(),
        status: Some(Status {
            code: if s.error {
                status::StatusCode::Error
            } else {
                status::StatusCode::Unset
            } as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::span::SpanEvent;

    #[test]
    fn a_batch_is_an_otlp_request_with_the_resource_and_the_spans() {
        let tracing = Tracing {
            sampler: crate::telemetry::trace::Sampler::new(1.0),
            sampling: 1.0,
            propagate_only: false,
            response_header: None,
            record_query: false,
            endpoint: Some("http://127.0.0.1:4318/v1/traces".into()),
            resource: vec![("service.name".into(), "pylon".into())],
            export_timeout: Duration::from_secs(1),
            queue: 16,
        };
        let span = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            trace_state: String::new(),
            sampled: true,
            name: "GET /".into(),
            kind: Kind::Server,
            start_ns: 1,
            end_ns: 2,
            attrs: vec![Attr::int("http.response.status_code", 503)],
            events: vec![SpanEvent {
                name: "rate_limited",
                at_ns: 1,
                attrs: Vec::new(),
            }],
            error: true,
        };
        let bytes = encode(&tracing, vec![span]);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &decoded.resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, vec![1; 16]);
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(s.events[0].name, "rate_limited");
        assert_eq!(
            s.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(503))
        );
    }
}
