//! A request's own state, from `new_ctx` to `logging`, and the connection-level answers
//! (keep-alive, draining) the phases share.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::auth::Identity;
use crate::limits::{Policy, Verdict};
use crate::policy::AllowOrigin;
use crate::runtime::{Route, Runtime};
use crate::traffic::InFlight;
use crate::upstream::Tried;
use crate::wire::GatewayError;

use super::Gateway;
use crate::telemetry::access_log::Entry;
use crate::telemetry::exchange::Exchange;
use crate::telemetry::trace::{RequestTrace, Traced};
use crate::wire::names::TRACESTATE;
use bytes::Bytes;
use http::header;
use http::Version;
use pingora::Error;
use pingora::Result;
use pingora::{ErrorSource, ErrorType};
use std::time::SystemTime;

impl Gateway {
    /// Bound how long an idle client connection waits for its next request, and close
    /// connections while draining (see [`crate::server::signals`]).
    pub(super) fn keepalive(&self, rt: &Runtime, session: &mut Session) {
        if rt.shared.life.is_draining() {
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            session.set_keepalive(Some(rt.client.idle.as_secs().max(1)));
        }
    }

    /// A response written while draining tells the client to close its connection, even
    /// when the request arrived before the drain began.
    pub(super) fn close_if_draining(&self, rt: &Runtime, session: &mut Session) {
        if rt.shared.life.is_draining() {
            session.set_keepalive(None);
        }
    }
}

/// The route a request matched.
pub(crate) fn route<'a>(rt: &'a Runtime, ctx: &RequestState) -> Option<&'a Route> {
    ctx.route.and_then(|i| rt.routes.get(i))
}

/// The rate-limit policy that applies: the route's, or the default for unmatched paths.
pub(crate) fn policy<'a>(rt: &'a Runtime, ctx: &RequestState) -> Option<&'a Policy> {
    match route(rt, ctx) {
        Some(route) => route.limit.as_ref(),
        None => rt.default_limit.as_ref(),
    }
}

/// Per-request context: the runtime the request started on (a reload does not change
/// it), and the state the phases share. The state is boxed: Pingora keeps the context
/// inside the request's future, which it moves into a box of its own for every request,
/// so 16 bytes here instead of ~440 make that copy smaller.
pub struct RequestCtx {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) state: Box<RequestState>,
}

impl RequestCtx {
    /// The runtime and the state, borrowed apart, so that a phase can hold a route of
    /// the one while it changes the other.
    pub(crate) fn parts(&mut self) -> (&Runtime, &mut RequestState) {
        (&self.rt, &mut self.state)
    }
}

/// Per-request state, shared across the phases.
pub struct RequestState {
    pub(crate) started: Instant,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) peer_trusted: bool,
    /// The client connection is TLS.
    pub(crate) tls: bool,
    pub(crate) request_id: Option<HeaderValue>,
    /// Index into the runtime's routes, and how many path bytes its prefix covers.
    pub(crate) route: Option<usize>,
    pub(crate) matched: usize,
    pub(crate) origin: AllowOrigin,
    pub(crate) verdict: Option<Verdict>,
    /// The upstream instance of the current attempt, as an index into the route's pool.
    pub(crate) upstream: Option<usize>,
    /// Instances this request already tried, and how many attempts it made.
    pub(crate) tried: Tried,
    pub(crate) attempts: u32,
    /// Set when no instance was available: the Retry-After of the 503.
    pub(crate) unavailable: Option<u32>,
    /// When the request went upstream, and how long the upstream took to answer.
    pub(crate) upstream_sent: Option<Instant>,
    pub(crate) upstream_time: Option<std::time::Duration>,
    /// Who the route's authenticators admitted the request as.
    pub(crate) identity: Option<Identity>,
    /// The `WWW-Authenticate` of a 401 or 403.
    pub(crate) challenge: Option<HeaderValue>,
    /// Set when the gateway answered itself.
    pub(crate) answered: Option<GatewayError>,
    /// Informational (1xx) answers relayed so far.
    pub(crate) informational: u8,
    /// Set when the answer went out before the request's end (a 413 then lingers over the
    /// rest of the body): the time the log and the metrics report.
    pub(crate) answered_in: Option<std::time::Duration>,
    /// A body without a length: the route's limit, and what came of it so far.
    pub(crate) body_limit: Option<u64>,
    pub(crate) body_read: u64,
    /// Counts this request as in flight until the context drops.
    pub(crate) _in_flight: InFlight,
    /// Its place under the route's `max_in_flight`, given back when the context drops.
    pub(crate) in_flight_slot: Option<pingora_limits::inflight::Guard>,
    /// Refused by `max_in_flight`: the RateLimit fields are the cap's.
    pub(crate) capped: bool,
    /// With `[tracing]`: the request's trace.
    pub(crate) trace: Option<RequestTrace>,
    /// The request carries `Authorization` or `Cookie` and its cache key holds no
    /// identity: only an answer that says it is shared (`public`) is stored.
    pub(crate) credentials: bool,
    /// The request's state went to the task that relays its upgraded connection, which
    /// records it when the connection ends: `logging` has nothing left to record.
    pub(crate) handed_off: bool,
    /// Bytes the client sent right after its upgrade request's head, which the edge kept
    /// (see [`super::HeldBack`]).
    pub(crate) held_back: Option<Bytes>,
}

/// What the early checks of `request_filter` decided.
pub(crate) enum Early {
    Continue,
    Preflight,
    /// A plain-HTTP request when `redirect_http` is on: 308 to this port over https.
    RedirectToHttps(u16),
    Refuse(GatewayError),
    /// Refused by the route's client lists or methods, but still counted by the limiter.
    RefuseCounted(GatewayError),
}

impl RequestCtx {
    /// A new request's context, on the runtime in force now, counted in flight until it
    /// drops.
    pub(crate) fn new(rt: Arc<Runtime>) -> RequestCtx {
        let state = RequestState {
            started: Instant::now(),
            client_ip: None,
            peer_trusted: false,
            tls: false,
            request_id: None,
            route: None,
            matched: 0,
            origin: AllowOrigin::Off,
            verdict: None,
            upstream: None,
            tried: Tried::default(),
            attempts: 0,
            unavailable: None,
            upstream_sent: None,
            upstream_time: None,
            credentials: false,
            identity: None,
            challenge: None,
            answered: None,
            informational: 0,
            answered_in: None,
            body_limit: None,
            body_read: 0,
            _in_flight: rt.shared.life.request(),
            in_flight_slot: None,
            capped: false,
            trace: None,
            handed_off: false,
            held_back: None,
        };
        RequestCtx {
            rt,
            state: Box::new(state),
        }
    }

    /// Take the request's state away for a task of its own, leaving a state that says so.
    pub(crate) fn hand_off(&mut self) -> (Arc<Runtime>, Box<RequestState>) {
        let mut left = RequestCtx::new(self.rt.clone()).state;
        left.handed_off = true;
        (self.rt.clone(), std::mem::replace(&mut self.state, left))
    }
}

/// What the client side of a finished exchange saw: its request, the status that went out,
/// and the body bytes each way.
pub(super) struct Seen<'a> {
    pub(super) req: &'a RequestHeader,
    pub(super) status: Option<u16>,
    pub(super) body_sent: usize,
    pub(super) body_read: usize,
}

impl<'a> Seen<'a> {
    pub(super) fn of(session: &'a Session) -> Seen<'a> {
        Seen {
            req: session.req_header(),
            status: session.response_written().map(|r| r.status.as_u16()),
            body_sent: session.body_bytes_sent(),
            body_read: session.body_bytes_read(),
        }
    }
}

/// Who failed a finished exchange, and how, in the access line's words.
#[derive(Default)]
pub(super) struct Failure<'a> {
    pub(super) error: Option<&'a str>,
    /// The upstream failed it: refused, reset, timed out, cut its answer short.
    pub(super) upstream: bool,
    /// The client failed it (closed, reset or stalled its side).
    pub(super) client: bool,
}

impl<'a> Failure<'a> {
    /// A proxy error as the log and the counters tell it.
    pub(super) fn of(e: Option<&Error>, error: Option<&'a str>) -> Failure<'a> {
        Failure {
            error,
            upstream: e.is_some_and(|e| {
                matches!(
                    GatewayError::from_proxy_error(e),
                    Some(GatewayError::BadGateway | GatewayError::GatewayTimeout)
                )
            }),
            client: e.is_some_and(client_fault),
        }
    }
}

/// What a finished request tells the telemetry (`logging`): its access line and counts.
pub(super) fn finish<'a>(
    seen: Seen<'a>,
    failure: Failure<'a>,
    rt: &'a Runtime,
    ctx: &'a RequestState,
) -> Exchange<'a> {
    let route = route(rt, ctx);
    let instance = route.zip(ctx.upstream).and_then(|(r, i)| {
        r.pool.end(i);
        r.pool.instance(i)
    });
    let status = seen
        .status
        .or(ctx.answered.map(GatewayError::status))
        .unwrap_or(0);
    let duration = ctx.answered_in.unwrap_or_else(|| ctx.started.elapsed());
    let req = seen.req;
    Exchange {
        entry: Entry {
            client: ctx.client_ip,
            time: SystemTime::now(),
            method: req.method.as_str(),
            uri: req.raw_path(),
            version: version_str(req.version),
            status,
            body_bytes: seen.body_sent,
            referer: req.headers.get(header::REFERER).map(HeaderValue::as_bytes),
            user_agent: req
                .headers
                .get(header::USER_AGENT)
                .map(HeaderValue::as_bytes),
            request_id: ctx.request_id.as_ref().map(HeaderValue::as_bytes),
            duration,
            route: route.map(|r| &*r.prefix),
            upstream: instance.map(|u| &*u.authority),
            error: failure.error,
            trace: ctx.trace.as_ref().map(|t| t.ids),
        },
        // spans only for a recorded request: the others need nothing more of it
        trace: ctx
            .trace
            .as_ref()
            .filter(|t| t.recorded())
            .zip(rt.tracing.as_deref())
            .map(|(trace, tracing)| Traced {
                trace,
                tracestate: req.headers.get(TRACESTATE).map(HeaderValue::as_bytes),
                // HTTP/2 names the host in :authority, HTTP/1 in Host
                host: req
                    .headers
                    .get(header::HOST)
                    .map(HeaderValue::as_bytes)
                    .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes())),
                tracing,
                queue: &rt.shared.spans,
            }),
        counters: route.and_then(|r| r.counters.as_deref()),
        upstream_time: ctx.upstream_time,
        answered: ctx.answered,
        // the upstream failed the exchange (before or after its answer began); a client's
        // fault never counts there
        upstream_error: failure.upstream,
        client_error: failure.client,
        request_bytes: seen.body_read as u64,
    }
}

impl RequestState {
    /// A body without a length is counted as it streams (`request_body_filter`): past the
    /// route's `max_body` the upstream request is aborted. The error is the client's, so
    /// no instance is blamed.
    pub(crate) fn count_body(&mut self, chunk: Option<&Bytes>) -> Result<()> {
        if let (Some(limit), Some(chunk)) = (self.body_limit, chunk) {
            self.body_read += chunk.len() as u64;
            if self.body_read > limit {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the route's max_body",
                )
                .into_down());
            }
        }
        Ok(())
    }
}

/// Whether the client's side failed the exchange (a close, a reset, a timeout reading
/// from it, a malformed body), rather than the gateway or an upstream.
pub(super) fn client_fault(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
}

pub(super) fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}
