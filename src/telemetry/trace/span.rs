//! What a sampled request leaves behind: its SERVER span, one CLIENT span per upstream
//! attempt, and the events of what the gateway decided.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;

use super::context::{new_span_id, traceparent, TraceIds};

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// A named value on a span or an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub key: &'static str,
    pub value: Value,
}

impl Attr {
    pub fn str(key: &'static str, value: impl Into<String>) -> Attr {
        Attr {
            key,
            value: Value::Str(value.into()),
        }
    }

    pub fn int(key: &'static str, value: i64) -> Attr {
        Attr {
            key,
            value: Value::Int(value),
        }
    }
}

/// Something the gateway decided, at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub name: &'static str,
    pub at_ns: u64,
    pub attrs: Vec<Attr>,
}

/// One upstream attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub span_id: [u8; 8],
    pub start_ns: u64,
    /// 0 while it runs.
    pub end_ns: u64,
    pub address: String,
    pub port: u16,
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// A finished span, waiting for export.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub trace_state: String,
    pub sampled: bool,
    pub name: String,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Vec<Attr>,
    pub events: Vec<SpanEvent>,
    pub error: bool,
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A request's trace while it runs: its ids, the span id the upstream's `traceparent`
/// names as its parent, and, when the request is recorded, the attempts and events so far.
///
/// A recorded request names its current attempt's CLIENT span. One that is not recorded
/// makes no span for the upstream to hang from, so it passes the client's span id on
/// unchanged (W3C's rule for a participant that does not record), or its own new id when
/// the trace starts here.
#[derive(Debug)]
pub struct RequestTrace {
    pub ids: TraceIds,
    attempt: [u8; 8],
    /// Set when spans are made (sampled, and not `propagate_only`): boxed, so that a
    /// request that is not recorded carries and drops one pointer.
    record: Option<Box<Recorded>>,
}

/// What a recorded request gathers for its spans.
#[derive(Debug, Default)]
pub struct Recorded {
    pub attempts: Vec<Attempt>,
    pub events: Vec<SpanEvent>,
}

impl RequestTrace {
    pub fn new(ids: TraceIds, recorded: bool) -> RequestTrace {
        RequestTrace {
            ids,
            attempt: match (recorded, ids.parent) {
                (false, Some(client)) => client,
                _ => ids.span_id,
            },
            record: recorded.then(Box::default),
        }
    }

    /// Whether spans are made.
    pub fn recorded(&self) -> bool {
        self.record.is_some()
    }

    /// The attempts and events so far, when recorded.
    pub fn record(&self) -> Option<&Recorded> {
        self.record.as_deref()
    }

    /// An upstream attempt begins, to this instance.
    pub fn start_attempt(&mut self, instance: SocketAddr) {
        if let Some(record) = &mut self.record {
            self.attempt = new_span_id();
            record.attempts.push(Attempt {
                span_id: self.attempt,
                start_ns: unix_ns(SystemTime::now()),
                end_ns: 0,
                address: instance.ip().to_string(),
                port: instance.port(),
                status: None,
                error: None,
            });
        }
    }

    /// The current attempt ended: with an answer's status, or failed (`error`, e.g.
    /// `ConnectRefused`).
    pub fn end_attempt(&mut self, status: Option<u16>, error: Option<&str>) {
        let last = self.record.as_mut().and_then(|r| r.attempts.last_mut());
        if let Some(last) = last.filter(|a| a.end_ns == 0) {
            last.end_ns = unix_ns(SystemTime::now());
            last.status = status;
            last.error = error.map(str::to_string);
        }
    }

    /// Note a decision of the gateway on the SERVER span.
    pub fn event(&mut self, name: &'static str, attrs: impl FnOnce() -> Vec<Attr>) {
        if let Some(record) = &mut self.record {
            record.events.push(SpanEvent {
                name,
                at_ns: unix_ns(SystemTime::now()),
                attrs: attrs(),
            });
        }
    }

    /// The `traceparent` for the upstream.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        traceparent(&self.ids.trace_id, &self.attempt, self.ids.sampled)
    }

    /// The context returned to the client: the gateway's SERVER span.
    pub fn response_value(&self) -> HeaderValue {
        traceparent(&self.ids.trace_id, &self.ids.span_id, self.ids.sampled)
    }
}
