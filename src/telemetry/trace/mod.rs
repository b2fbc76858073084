//! Tracing: W3C Trace Context on every request, and OpenTelemetry spans for the sampled
//! ones, exported over OTLP/HTTP.
//!
//! - [`context`]: `traceparent` read and written, the sampling decision (a client's
//!   `traceparent` decides for its trace; new traces by `sampling`, a ratio);
//! - [`span`]: a request's trace while it runs ([`RequestTrace`]): the span of each
//!   upstream attempt and the events of the gateway's decisions;
//! - [`export`]: the bounded queue and the task that sends batches to the collector.
//!
//! A finished request becomes its spans in [`Traced::spans`], called from the one place a
//! request is recorded ([`crate::telemetry::exchange`]), for proxied requests and edge
//! refusals alike. Without `[tracing]` nothing here runs; with it but a request not
//! sampled, the request gets its ids and the upstream its `traceparent`, and no span is
//! made.

pub mod context;
pub mod export;
pub mod span;

use std::time::{Duration, SystemTime};

use http::header::HeaderName;

use crate::config::{LocatedError, TracingSection};
pub use context::{traceparent, Sampler, TraceIds};
pub use export::SpanQueue;
use span::{Attempt, Kind, Recorded, SpanEvent, SpanRecord};
pub use span::{Attr, RequestTrace};

/// `[tracing]`, compiled.
#[derive(Debug)]
pub struct Tracing {
    pub sampler: Sampler,
    /// The part of new traces sampled, as configured.
    pub sampling: f64,
    pub propagate_only: bool,
    pub response_header: Option<HeaderName>,
    pub record_query: bool,
    /// Where spans go; `None` with `propagate_only`.
    pub endpoint: Option<String>,
    /// `service.name` first, then the config's own.
    pub resource: Vec<(String, String)>,
    pub export_timeout: Duration,
    pub queue: usize,
}

impl Tracing {
    /// `span` is the section's, for what is missing from it.
    pub fn from_config(
        section: &TracingSection,
        span: std::ops::Range<usize>,
    ) -> Result<Tracing, LocatedError> {
        let endpoint = match (&section.endpoint, section.propagate_only) {
            (Some(url), _) => {
                let text = url.get_ref();
                match reqwest::Url::parse(text) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                    _ => {
                        return Err(LocatedError::new(
                            url.span(),
                            "tracing.endpoint",
                            format!("\"{text}\" is not an OTLP/HTTP URL: write http://HOST:4318/v1/traces"),
                        ))
                    }
                }
                Some(text.clone())
            }
            (None, true) => None,
            (None, false) => {
                return Err(LocatedError::new(
                    span,
                    "tracing.endpoint",
                    "spans need a collector: set endpoint = \"http://HOST:4318/v1/traces\", or propagate_only = true for the trace context alone".to_string(),
                ))
            }
        };
        let response_header = match &section.response_header {
            Some(name) => Some(HeaderName::from_bytes(name.get_ref().as_bytes()).map_err(
                |_| {
                    LocatedError::new(
                        name.span(),
                        "tracing.response_header",
                        format!("\"{}\" is not a header name", name.get_ref()),
                    )
                },
            )?),
            None => None,
        };
        let mut resource = vec![("service.name".to_string(), section.service_name.clone())];
        resource.extend(
            section
                .resource
                .iter()
                .filter(|(k, _)| *k != "service.name")
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        Ok(Tracing {
            sampler: Sampler::new(section.sampling.0),
            sampling: section.sampling.0,
            propagate_only: section.propagate_only,
            response_header,
            record_query: section.record_query,
            endpoint,
            resource,
            export_timeout: section.export_timeout.0,
            queue: section.queue.0,
        })
    }

    /// A request's trace, from its `traceparent` if it sent a valid one.
    pub fn begin(&self, traceparent: Option<&[u8]>) -> RequestTrace {
        let ids = self.sampler.begin(traceparent);
        RequestTrace::new(ids, ids.sampled && !self.propagate_only)
    }
}

/// A finished request, as its spans need it (the rest is in its access line).
pub struct Traced<'a> {
    pub trace: &'a RequestTrace,
    pub tracestate: Option<&'a [u8]>,
    /// The `Host` the client asked for.
    pub host: Option<&'a [u8]>,
    pub tracing: &'a Tracing,
    pub queue: &'a SpanQueue,
}

/// What the SERVER span takes from the access line.
pub struct Finished<'a> {
    pub method: &'a str,
    pub uri: &'a [u8],
    pub version: &'a str,
    pub status: u16,
    pub client: Option<std::net::IpAddr>,
    pub user_agent: Option<&'a [u8]>,
    pub route: Option<&'a str>,
    pub end: SystemTime,
    pub duration: Duration,
}

impl Traced<'_> {
    /// Queue the request's spans, when it is recorded.
    pub fn record(&self, done: &Finished) {
        if let Some(record) = self.trace.record() {
            let spans = self.spans(record, done);
            self.queue.push(spans, self.tracing.queue);
        }
    }

    /// The SERVER span, named `METHOD /route-prefix`, and a CLIENT span for each attempt.
    fn spans(&self, record: &Recorded, done: &Finished) -> Vec<SpanRecord> {
        let ids = self.trace.ids;
        let end_ns = span::unix_ns(done.end);
        let start_ns = end_ns.saturating_sub(done.duration.as_nanos() as u64);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (path, query) = match done.uri.iter().position(|&b| b == b'?') {
            Some(at) => (&done.uri[..at], Some(&done.uri[at + 1..])),
            None => (done.uri, None),
        };
        let mut attrs = vec![
            Attr::str("http.request.method", done.method),
            Attr::str("url.path", text(path)),
            Attr::int("http.response.status_code", i64::from(done.status)),
            Attr::str(
                "network.protocol.version",
                match done.version {
                    "HTTP/1.0" => "1.0",
                    "HTTP/2.0" => "2",
                    _ => "1.1",
                },
            ),
        ];
        if let (true, Some(query)) = (self.tracing.record_query, query) {
            attrs.push(Attr::str("url.query", text(query)));
        }
        if let Some(route) = done.route {
            attrs.push(Attr::str("http.route", route));
        }
        if let Some(host) = self.host {
            attrs.push(Attr::str("server.address", text(host_only(host))));
        }
        if let Some(client) = done.client {
            attrs.push(Attr::str("client.address", client.to_string()));
        }
        if let Some(ua) = done.user_agent {
            attrs.push(Attr::str("user_agent.original", text(ua)));
        }
        // a client's tracestate goes with its traceparent only
        let trace_state = self
            .tracestate
            .filter(|_| ids.parent.is_some())
            .map(text)
            .unwrap_or_default();
        let mut spans = Vec::with_capacity(1 + record.attempts.len());
        spans.push(SpanRecord {
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            parent: ids.parent,
            trace_state: trace_state.clone(),
            sampled: true,
            name: match done.route {
                Some(route) => format!("{} {route}", done.method),
                None => done.method.to_string(),
            },
            kind: Kind::Server,
            start_ns,
            end_ns,
            attrs,
            events: record.events.clone(),
            error: done.status >= 500,
        });
        for a in &record.attempts {
            spans.push(attempt_span(a, &ids, done.method, &trace_state, end_ns));
        }
        spans
    }
}

fn attempt_span(
    a: &Attempt,
    ids: &TraceIds,
    method: &str,
    trace_state: &str,
    end_ns: u64,
) -> SpanRecord {
    let mut attrs = vec![
        Attr::str("http.request.method", method),
        Attr::str("server.address", a.address.clone()),
        Attr::int("server.port", i64::from(a.port)),
    ];
    if let Some(status) = a.status {
        attrs.push(Attr::int("http.response.status_code", i64::from(status)));
    }
    if let Some(error) = &a.error {
        attrs.push(Attr::str("error.type", error.clone()));
    }
    SpanRecord {
        trace_id: ids.trace_id,
        span_id: a.span_id,
        parent: Some(ids.span_id),
        trace_state: trace_state.to_string(),
        sampled: true,
        name: method.to_string(),
        kind: Kind::Client,
        start_ns: a.start_ns,
        end_ns: if a.end_ns == 0 { end_ns } else { a.end_ns },
        attrs,
        events: Vec::<SpanEvent>::new(),
        error: a.error.is_some() || a.status.is_some_and(|s| s >= 500),
    }
}

/// A Host field without its port.
fn host_only(host: &[u8]) -> &[u8] {
    if host.starts_with(b"[") {
        return host
            .iter()
            .position(|&b| b == b']')
            .map_or(host, |end| &host[..=end]);
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(at) => &host[..at],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Sampling, SpanQueueSize, Timeout};
    use std::collections::BTreeMap;

    fn tracing(sampling: f64) -> Tracing {
        let section = TracingSection {
            endpoint: None,
            service_name: "gw".into(),
            sampling: Sampling(sampling),
            propagate_only: true,
            response_header: None,
            record_query: false,
            resource: BTreeMap::from([
                ("service.name".into(), "ignored".into()),
                ("env".into(), "test".into()),
            ]),
            export_timeout: Timeout(Duration::from_secs(1)),
            queue: SpanQueueSize(16),
        };
        let mut t = Tracing::from_config(&section, 0..0).unwrap();
        t.propagate_only = false;
        t
    }

    const CLIENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_request_becomes_a_server_span_and_a_client_span_per_attempt() {
        let t = tracing(0.0);
        assert_eq!(t.resource[0], ("service.name".into(), "gw".into()));
        assert_eq!(
            t.resource.len(),
            2,
            "the config cannot name service.name twice"
        );
        let mut trace = t.begin(Some(CLIENT));
        assert!(trace.recorded());
        trace.start_attempt("127.0.0.1:1".parse().unwrap());
        let first = trace.upstream_traceparent();
        trace.end_attempt(None, Some("ConnectRefused"));
        trace.start_attempt("127.0.0.1:2".parse().unwrap());
        assert_ne!(
            trace.upstream_traceparent(),
            first,
            "each attempt is its own parent"
        );
        trace.end_attempt(Some(200), None);
        trace.event("rate_limited", Vec::new);
        let queue = SpanQueue::default();
        let traced = Traced {
            trace: &trace,
            tracestate: Some(b"k=v"),
            host: Some(b"api.example:8080"),
            tracing: &t,
            queue: &queue,
        };
        let spans = traced.spans(
            trace.record().unwrap(),
            &Finished {
                method: "GET",
                uri: b"/users/1?token=secret",
                version: "HTTP/1.1",
                status: 200,
                client: Some("10.0.0.1".parse().unwrap()),
                user_agent: Some(b"curl/8"),
                route: Some("/users"),
                end: SystemTime::now(),
                duration: Duration::from_millis(3),
            },
        );
        assert_eq!(spans.len(), 3);
        let server = &spans[0];
        assert_eq!(server.name, "GET /users");
        assert_eq!(hex(&server.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            server.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(server.trace_state, "k=v");
        let attr = |key: &str| {
            server
                .attrs
                .iter()
                .find(|a| a.key == key)
                .map(|a| a.value.clone())
        };
        assert_eq!(attr("url.path"), Some(span::Value::Str("/users/1".into())));
        assert_eq!(attr("url.query"), None, "no query unless asked");
        assert_eq!(
            attr("server.address"),
            Some(span::Value::Str("api.example".into()))
        );
        assert_eq!(
            attr("http.response.status_code"),
            Some(span::Value::Int(200))
        );
        assert_eq!(server.events[0].name, "rate_limited");
        for client in &spans[1..] {
            assert_eq!(client.parent, Some(server.span_id));
            assert_eq!(client.kind, Kind::Client);
        }
        assert!(spans[1].error && !spans[2].error);
        assert!(first.to_str().unwrap().contains(&hex(&spans[1].span_id)));
    }

    #[test]
    fn unsampled_requests_make_no_span_but_carry_the_context() {
        let t = tracing(0.0);
        let mut trace = t.begin(None);
        assert!(!trace.recorded() && !trace.ids.sampled);
        trace.start_attempt("127.0.0.1:1".parse().unwrap());
        trace.event("auth.accepted", || {
            unreachable!("not built when not recorded")
        });
        assert!(trace.record().is_none());
        // not recorded: the client's span stays the upstream's parent
        let unsampled_client = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut passed = t.begin(Some(unsampled_client));
        passed.start_attempt("127.0.0.1:1".parse().unwrap());
        assert_eq!(passed.upstream_traceparent().as_bytes(), unsampled_client);
        assert!(trace
            .upstream_traceparent()
            .to_str()
            .unwrap()
            .ends_with("-00"));
    }

    #[test]
    fn the_queue_drops_and_counts_beyond_its_bound() {
        let t = tracing(1.0);
        let queue = SpanQueue::default();
        let trace = t.begin(None);
        let traced = Traced {
            trace: &trace,
            tracestate: None,
            host: None,
            tracing: &t,
            queue: &queue,
        };
        let done = Finished {
            method: "GET",
            uri: b"/",
            version: "HTTP/2.0",
            status: 502,
            client: None,
            user_agent: None,
            route: None,
            end: SystemTime::now(),
            duration: Duration::ZERO,
        };
        let spans = traced.spans(trace.record().unwrap(), &done);
        assert_eq!(spans[0].name, "GET");
        assert!(spans[0].error, "5xx is an error");
        for _ in 0..20 {
            traced.record(&done);
        }
        assert_eq!(queue.dropped(), 4, "16 kept");
    }

    #[test]
    fn host_fields_lose_their_port() {
        assert_eq!(host_only(b"a.example:80"), b"a.example");
        assert_eq!(host_only(b"[::1]:80"), b"[::1]");
        assert_eq!(host_only(b"a.example"), b"a.example");
    }

    fn hex<const N: usize>(b: &[u8; N]) -> String {
        context::hex(b)
    }
}
