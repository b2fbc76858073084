//! The Pingora `ProxyHttp` implementation: each phase orchestrates, the components decide.
//!
//! - `request_filter`: who the client is, the request id, then the early answers, in this
//!   order: 400 for a path with dot segments (path rules), 308 to https when asked, 204 for
//!   a CORS preflight, 403 from the route's deny/allow lists, 405 for a method it does not
//!   take, 401/403/503 from its authenticators, 429 when over the limit, 413 for a body
//!   over `max_body`, 404 when no route matches. Refusals by the lists and methods are
//!   still counted by the limiter.
//! - `request_body_filter`: a body without a length is counted against `max_body`.
//! - `upstream_peer`: an instance from the route's pool, with the route's timeouts.
//! - `fail_to_connect`, `error_while_proxy`: passive health, and whether to retry elsewhere.
//! - `upstream_request_filter`: strip the prefix, set Host, X-Forwarded-*, X-Request-Id,
//!   forwarded claims, then the route's `request_headers`.
//! - `response_filter`: the route's `response_headers` on the upstream's headers, those
//!   over the security defaults, CORS and RateLimit headers, X-Request-Id.
//! - `fail_to_proxy`: the one place a failure becomes a 4xx/5xx answer (see [`crate::error`]).
//! - `logging`: metrics, and the access line handed to the background writer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result, RetryType};

use crate::access_log::Entry;
use crate::auth::{Authenticator, Identity, Rejection};
use crate::error::GatewayError;
use crate::forwarding::{acceptable_request_id, appended_forwarded_for, new_request_id};
use crate::headers::names::{
    RATELIMIT, RATELIMIT_POLICY, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP,
    X_REQUEST_ID,
};
use crate::headers::AllowOrigin;
use crate::lifecycle::InFlight;
use crate::limits::caps::{RouteRate, IN_FLIGHT_EXHAUSTED};
use crate::limits::{ClientKey, Policy, Verdict};
use crate::metrics::Observation;
use crate::policy::{Transform, Vars};
use crate::reload::Current;
use crate::router::stripped;
use crate::runtime::{Route, Runtime};
use crate::upstream::{SelectInput, Tried};

/// The gateway service: the runtime in force, which each request loads once.
pub struct Gateway {
    current: Arc<Current>,
}

impl Gateway {
    pub fn new(current: Arc<Current>) -> Gateway {
        Gateway { current }
    }
}

/// The route a request matched.
fn route<'a>(rt: &'a Runtime, ctx: &RequestState) -> Option<&'a Route> {
    ctx.route.and_then(|i| rt.routes.get(i))
}

/// The rate-limit policy that applies: the route's, or the default for unmatched paths.
fn policy<'a>(rt: &'a Runtime, ctx: &RequestState) -> Option<&'a Policy> {
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
    rt: Arc<Runtime>,
    state: Box<RequestState>,
}

impl RequestCtx {
    /// The runtime and the state, borrowed apart, so that a phase can hold a route of
    /// the one while it changes the other.
    fn parts(&mut self) -> (&Runtime, &mut RequestState) {
        (&self.rt, &mut self.state)
    }
}

/// Per-request state, shared across the phases.
pub struct RequestState {
    started: Instant,
    client_ip: Option<IpAddr>,
    peer_trusted: bool,
    /// The client connection is TLS.
    tls: bool,
    request_id: Option<HeaderValue>,
    /// Index into the runtime's routes, and how many path bytes its prefix covers.
    route: Option<usize>,
    matched: usize,
    origin: AllowOrigin,
    verdict: Option<Verdict>,
    /// The upstream instance of the current attempt, as an index into the route's pool.
    upstream: Option<usize>,
    /// Instances this request already tried, and how many attempts it made.
    tried: Tried,
    attempts: u32,
    /// Set when no instance was available: the Retry-After of the 503.
    unavailable: Option<u32>,
    /// When the request went upstream, and how long the upstream took to answer.
    upstream_sent: Option<Instant>,
    upstream_time: Option<std::time::Duration>,
    /// Who the route's authenticators admitted the request as.
    identity: Option<Identity>,
    /// The `WWW-Authenticate` of a 401 or 403.
    challenge: Option<HeaderValue>,
    /// Set when the gateway answered itself.
    answered: Option<GatewayError>,
    /// Informational (1xx) answers relayed so far.
    informational: u8,
    /// A body without a length: the route's limit, and what came of it so far.
    body_limit: Option<u64>,
    body_read: u64,
    /// Counts this request as in flight until the context drops.
    _in_flight: InFlight,
    /// Its place under the route's `max_in_flight`, given back when the context drops.
    in_flight_slot: Option<pingora_limits::inflight::Guard>,
    /// Refused by `max_in_flight`: the RateLimit fields are the cap's.
    capped: bool,
}

/// What the early checks of `request_filter` decided.
enum Early {
    Continue,
    Preflight,
    /// A plain-HTTP request when `redirect_http` is on: 308 to this port over https.
    RedirectToHttps(u16),
    Refuse(GatewayError),
    /// Refused by the route's client lists or methods, but still counted by the limiter.
    RefuseCounted(GatewayError),
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let rt = self.current.load();
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
            identity: None,
            challenge: None,
            answered: None,
            informational: 0,
            body_limit: None,
            body_read: 0,
            _in_flight: rt.shared.life.request(),
            in_flight_slot: None,
            capped: false,
        };
        RequestCtx {
            rt,
            state: Box::new(state),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let (rt, ctx) = ctx.parts();
        self.keepalive(rt, session);
        self.identify(session, rt, ctx);
        let early = match self.screen(session, rt, ctx) {
            Early::Continue => self.admit(session, rt, ctx, None).await,
            Early::RefuseCounted(err) => self.admit(session, rt, ctx, Some(err)).await,
            early => early,
        };
        match early {
            Early::Continue => Ok(false),
            Early::Preflight => {
                self.answer_preflight(session, rt, ctx).await?;
                Ok(true)
            }
            Early::RedirectToHttps(port) => {
                self.answer_redirect(session, rt, ctx, port).await?;
                Ok(true)
            }
            // `admit` has counted a `RefuseCounted` by now
            Early::Refuse(err) | Early::RefuseCounted(err) => {
                self.answer(session, rt, ctx, err).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (rt, ctx) = ctx.parts();
        let route = route(rt, ctx)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let pool = &route.pool;
        // a retry: the previous attempt is over
        if let Some(previous) = ctx.upstream.take() {
            pool.end(previous);
        }
        let req = session.req_header();
        let input = SelectInput {
            client_ip: ctx.client_ip,
            path: req.uri.path(),
            headers: &req.headers,
        };
        let Some(i) = pool.select(&input, &ctx.tried) else {
            ctx.unavailable = Some(pool.retry_after());
            return Error::e_explain(ErrorType::HTTPStatus(503), "no upstream instance available");
        };
        ctx.tried.insert(i);
        ctx.upstream = Some(i);
        ctx.attempts += 1;
        pool.begin(i);
        let mut peer = pool
            .peer(i, &route.timeouts)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "instance vanished"))?;
        if route.http2 {
            // gRPC and friends: HTTP/2 only (h2c to an http upstream)
            peer.options.set_http_version(2, 2);
        }
        if session.is_upgrade_req() {
            // a WebSocket is long-lived: silence is bounded by its own idle timeout
            let idle = route.timeouts.websocket_idle;
            peer.options.read_timeout = Some(idle);
            peer.options.write_timeout = Some(idle);
            session.set_read_timeout(Some(idle));
            session.set_write_timeout(Some(idle));
        }
        Ok(Box::new(peer))
    }

    /// Connecting failed: the request has not been sent, so another instance may take it.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (rt, ctx) = ctx.parts();
        if let (Some(route), Some(i)) = (route(rt, ctx), ctx.upstream) {
            route.pool.report_failure(i);
            e.set_retry(self.may_retry(route, ctx));
        }
        e
    }

    /// Proxying failed after connecting. A stale pooled connection is retried as Pingora
    /// would; otherwise another instance is tried only when replaying the request is safe:
    /// an idempotent method, a body still fully buffered, nothing sent to the client yet.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let (rt, ctx) = ctx.parts();
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        let (Some(route), Some(i)) = (route(rt, ctx), ctx.upstream) else {
            e.set_retry(false);
            return e;
        };
        if matches!(e.retry, RetryType::ReusedOnly) && client_reused {
            // the instance closed an idle connection we reused: not its fault
            ctx.tried.remove(i);
            e.set_retry(replayable);
            return e;
        }
        if *e.esource() == ErrorSource::Upstream {
            route.pool.report_failure(i);
        }
        let retry =
            replayable && *e.esource() == ErrorSource::Upstream && self.may_retry(route, ctx);
        e.set_retry(retry);
        e
    }

    /// A body without a length is counted as it streams: past the route's `max_body` the
    /// upstream request is aborted. The error is the client's, so no instance is blamed.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let ctx = &mut ctx.state;
        if let (Some(limit), Some(chunk)) = (ctx.body_limit, body.as_ref()) {
            ctx.body_read += chunk.len() as u64;
            if ctx.body_read > limit {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the route's max_body",
                )
                .into_down());
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (rt, ctx) = ctx.parts();
        let Some(route) = route(rt, ctx) else {
            return Ok(());
        };
        let req = session.req_header();
        // the upstream always gets an origin-form target: the path, stripped or not, and
        // the query as received
        let matched = if route.strip_prefix { ctx.matched } else { 0 };
        let mut target = stripped_target(req, matched);
        // header work on the plain map (see `with_plain_headers`)
        let mut parts = take_request_parts(upstream);
        // room for the forwarding fields and the route's own, so that the map grows (and
        // rehashes) at most once
        parts
            .headers
            .reserve(FORWARDING_FIELDS + route.request_headers.as_ref().map_or(0, Transform::len));
        if !route.preserve_host {
            if let Some(instance) = ctx.upstream.and_then(|i| route.pool.instance(i)) {
                parts.headers.insert(header::HOST, instance.host.clone());
            }
        }
        self.forwarding_headers(session, &mut parts.headers, ctx);
        if let Some(stripped) = self.identity_headers(route, &mut parts.headers, ctx, &target) {
            target = stripped;
        }
        if let Some(transform) = &route.request_headers {
            transform.apply(&mut parts.headers, &vars(route, req, ctx));
        }
        *upstream = RequestHeader::from(parts);
        if rt.shared.metrics.is_some() {
            ctx.upstream_sent = Some(Instant::now());
        }
        upstream.set_raw_path(&target)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (rt, ctx) = ctx.parts();
        if resp.status.is_informational() && resp.status != StatusCode::SWITCHING_PROTOCOLS {
            // relayed as it came, without the final answer's headers, a bounded number
            ctx.informational += 1;
            if ctx.informational > MAX_INFORMATIONAL {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "the upstream sent more than 16 informational responses",
                )
                .into_up());
            }
            return Ok(());
        }
        self.close_if_draining(rt, session);
        if let (Some(route), Some(i)) = (route(rt, ctx), ctx.upstream) {
            route.pool.report_success(i);
        }
        ctx.upstream_time = ctx.upstream_sent.map(|sent| sent.elapsed());
        let route_transform =
            route(rt, ctx).and_then(|r| r.response_headers.as_ref().map(|t| (r, t)));
        with_plain_headers(resp, |parts| {
            // answer in our own protocol version, whatever the upstream spoke (an HTTP/1.0
            // upstream must not turn the client's keep-alive connection into 1.0)
            if parts.version != Version::HTTP_2 {
                parts.version = Version::HTTP_11;
            }
            let mut upstream = std::mem::take(&mut parts.headers);
            if let Some((route, transform)) = route_transform {
                transform.apply(&mut upstream, &vars(route, session.req_header(), ctx));
            }
            parts.headers = rt.security.merge_upstream(upstream, parts.status, ctx.tls);
            self.decorate(&mut parts.headers, rt, ctx);
        });
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (rt, ctx) = ctx.parts();
        let err = match (GatewayError::from_proxy_error(e), ctx.unavailable) {
            (Some(GatewayError::ServiceUnavailable { .. }), Some(retry_after)) => {
                Some(GatewayError::ServiceUnavailable { retry_after })
            }
            (err, _) => err,
        };
        let Some(err) = err else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        // once the upstream's final header went out, the status is decided: just end the
        // stream (after 1xx answers a final one can still follow)
        if let Some(sent) = session
            .response_written()
            .filter(|r| !r.status.is_informational())
        {
            return FailToProxy {
                error_code: sent.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        // Pingora closes the client connection after a proxy failure: say so in the answer
        session.set_keepalive(None);
        if let Err(write_error) = self.answer(session, rt, ctx, err).await {
            log::debug!("could not send the error answer: {write_error}");
        }
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let (rt, ctx) = ctx.parts();
        let route = route(rt, ctx);
        let instance = route.zip(ctx.upstream).and_then(|(r, i)| {
            r.pool.end(i);
            r.pool.instance(i)
        });
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.answered.map(GatewayError::status))
            .unwrap_or(0);
        let duration = ctx.started.elapsed();
        // the upstream failed the exchange (before or after its answer began); a client's
        // fault never counts here
        let upstream_error = e.is_some_and(|e| {
            matches!(
                GatewayError::from_proxy_error(e),
                Some(GatewayError::BadGateway | GatewayError::GatewayTimeout)
            )
        });
        if let Some(metrics) = &rt.shared.metrics {
            metrics.observe(&Observation {
                route: route.and_then(|r| r.counters.as_deref()),
                status,
                duration,
                upstream_time: ctx.upstream_time,
                answered: ctx.answered,
                upstream_error,
                request_bytes: session.body_bytes_read() as u64,
                response_bytes: session.body_bytes_sent() as u64,
            });
        }
        let log = &rt.shared.access_log;
        if log.is_off() {
            return;
        }
        let req = session.req_header();
        let error = e.map(|e| format!("{} {}", e.esource().as_str(), e.etype().as_str()));
        log.log(&Entry {
            client: ctx.client_ip,
            time: SystemTime::now(),
            method: req.method.as_str(),
            uri: req.raw_path(),
            version: version_str(req.version),
            status,
            body_bytes: session.body_bytes_sent(),
            referer: req.headers.get(header::REFERER).map(HeaderValue::as_bytes),
            user_agent: req
                .headers
                .get(header::USER_AGENT)
                .map(HeaderValue::as_bytes),
            request_id: ctx.request_id.as_ref().map(HeaderValue::as_bytes),
            duration,
            route: route.map(|r| &*r.prefix),
            upstream: instance.map(|u| &*u.authority),
            error: error.as_deref(),
        });
    }
}

impl Gateway {
    /// Bound how long an idle client connection waits for its next request, and close
    /// connections while draining (see [`crate::lifecycle`]).
    fn keepalive(&self, rt: &Runtime, session: &mut Session) {
        if rt.shared.life.is_draining() {
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            session.set_keepalive(Some(rt.client.idle.as_secs().max(1)));
        }
    }

    /// A response written while draining tells the client to close its connection, even
    /// when the request arrived before the drain began.
    fn close_if_draining(&self, rt: &Runtime, session: &mut Session) {
        if rt.shared.life.is_draining() {
            session.set_keepalive(None);
        }
    }

    /// The client's address (through trusted proxies) and the request id.
    fn identify(&self, session: &Session, rt: &Runtime, ctx: &mut RequestState) {
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let req = session.req_header();
        if let Some(peer) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            ctx.peer_trusted = rt.trusted_proxies.contains(peer.to_canonical());
            ctx.client_ip = Some(rt.trusted_proxies.client_ip(peer, &req.headers));
        }
        ctx.request_id = Some(match req.headers.get(X_REQUEST_ID) {
            Some(id) if acceptable_request_id(id) => id.clone(),
            _ => new_request_id(),
        });
        ctx.origin = rt.cors.allow_origin(&req.headers);
    }

    /// May a failed attempt be tried again elsewhere?
    fn may_retry(&self, route: &Route, ctx: &RequestState) -> bool {
        ctx.attempts <= route.pool.retries && route.pool.has_untried(&ctx.tried)
    }

    /// The checks that need nothing but the request line and the client: dot segments,
    /// the redirect to https, CORS preflights (answered for any path, before anything
    /// else, as the tutorial's `cors()` did), the route, its client lists and methods.
    fn screen(&self, session: &Session, rt: &Runtime, ctx: &mut RequestState) -> Early {
        let req = session.req_header();
        let path = req.uri.path();
        if unsafe_path(path) {
            return Early::Refuse(GatewayError::BadRequest);
        }
        if let (Some(port), false) = (rt.redirect_http, ctx.tls) {
            return Early::RedirectToHttps(port);
        }
        if rt.cors.is_preflight(&req.method, &req.headers) {
            return Early::Preflight;
        }
        if let Some(m) = rt.router.lookup(path) {
            ctx.route = Some(*m.value);
            ctx.matched = m.matched;
        }
        let route = route(rt, ctx);
        if let Some(access) = route.and_then(|r| r.access.as_ref()) {
            if !access.admits(ctx.client_ip) {
                return Early::RefuseCounted(GatewayError::Forbidden);
            }
        }
        if let Some(methods) = route.and_then(|r| r.methods.as_ref()) {
            if !methods.allows(&req.method) {
                return Early::RefuseCounted(GatewayError::MethodNotAllowed);
            }
        }
        // TRACE echoes the request, credentials and all, back to whoever can read it
        if req.method == Method::TRACE && !route.is_some_and(|r| r.allow_trace) {
            return Early::RefuseCounted(GatewayError::MethodNotAllowed);
        }
        Early::Continue
    }

    /// Who may pass: the route's authenticators, then the limiter, then the body size, then
    /// the 404 for no route. The limiter counts an authenticated request for its identity
    /// and anything else for the client IP, so guessing credentials is limited too, and so
    /// are requests `screen` refused by the route's lists or methods (`screened`), which
    /// get that answer without being authenticated.
    async fn admit(
        &self,
        session: &mut Session,
        rt: &Runtime,
        ctx: &mut RequestState,
        screened: Option<GatewayError>,
    ) -> Early {
        let authenticating = route(rt, ctx).filter(|r| !r.auth.is_empty() && screened.is_none());
        let unauthenticated = match authenticating {
            None => None,
            Some(route) => {
                match Authenticator::authenticate_any(&route.auth, session.req_header()).await {
                    Ok(identity) => {
                        ctx.identity = Some(identity);
                        None
                    }
                    Err(Rejection::Unauthorized { challenge }) => {
                        ctx.challenge = Some(challenge);
                        Some(GatewayError::Unauthorized)
                    }
                    Err(Rejection::Forbidden { challenge }) => {
                        ctx.challenge = Some(challenge);
                        Some(GatewayError::Forbidden)
                    }
                    Err(Rejection::Unavailable) => Some(GatewayError::ServiceUnavailable {
                        retry_after: AUTH_RETRY_AFTER,
                    }),
                }
            }
        };
        let key = match (&ctx.identity, ctx.client_ip) {
            (Some(identity), _) => Some(ClientKey::identity(&identity.key)),
            (None, Some(ip)) => Some(ClientKey::ip(ip, rt.ipv6_prefix)),
            (None, None) => None,
        };
        if let (Some(policy), Some(key)) = (policy(rt, ctx), key) {
            // with sync = "0s" a shared store decides (one round trip, bounded)
            let verdict = if policy.asks_store() {
                policy.ask(key).await
            } else {
                policy.check(key)
            };
            ctx.verdict = Some(verdict);
            // the route's client lists and methods come before the limit; the limit
            // before authentication's answer
            if let (Verdict::Limited { reset }, None) = (verdict, screened) {
                return Early::Refuse(GatewayError::RateLimited { retry_after: reset });
            }
        }
        if let Some(err) = screened.or(unauthenticated) {
            return Early::Refuse(err);
        }
        let Some(route) = route(rt, ctx) else {
            return Early::Refuse(GatewayError::NotFound);
        };
        if let (Some(cap), Some(key)) = (&route.in_flight, key) {
            match cap.enter(key) {
                Some(guard) => ctx.in_flight_slot = Some(guard),
                None => {
                    ctx.capped = true;
                    return Early::Refuse(GatewayError::RateLimited { retry_after: 1 });
                }
            }
        }
        if let Some(Err(retry_after)) = route.route_rate.as_ref().map(RouteRate::admit) {
            return Early::Refuse(GatewayError::ServiceUnavailable { retry_after });
        }
        // Pingora sets up its body reader here instead of later: a request without a body
        // costs no header lookups
        if let (Some(limit), false) = (route.max_body, session.is_body_empty()) {
            match body_length(session.req_header()) {
                Some(length) if length > limit => {
                    return Early::Refuse(GatewayError::PayloadTooLarge)
                }
                Some(_) => {}
                // chunked (or HTTP/2 without a length): counted as it streams
                None => ctx.body_limit = Some(limit),
            }
        }
        Early::Continue
    }

    /// X-Forwarded-For/-Proto/-Host and X-Request-Id for the upstream.
    fn forwarding_headers(&self, session: &Session, headers: &mut HeaderMap, ctx: &RequestState) {
        let req = session.req_header();
        if let Some(peer) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            headers.insert(X_FORWARDED_FOR, appended_forwarded_for(&req.headers, peer));
        }
        // a trusted proxy's view of the original scheme and host wins over ours
        if !(ctx.peer_trusted && req.headers.contains_key(X_FORWARDED_PROTO)) {
            headers.insert(X_FORWARDED_PROTO, if ctx.tls { HTTPS } else { HTTP });
        }
        if !(ctx.peer_trusted && req.headers.contains_key(X_FORWARDED_HOST)) {
            match req.headers.get(header::HOST) {
                Some(host) => {
                    headers.insert(X_FORWARDED_HOST, host.clone());
                }
                None => {
                    headers.remove(X_FORWARDED_HOST);
                }
            }
        }
        if let Some(id) = &ctx.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
        // many upstreams believe X-Real-IP: only a trusted proxy may set it
        if !ctx.peer_trusted && headers.contains_key(X_REAL_IP) {
            match ctx.client_ip {
                Some(ip) => {
                    headers.insert(X_REAL_IP, ip_value(ip));
                }
                None => {
                    headers.remove(X_REAL_IP);
                }
            }
        }
    }

    /// What an authenticated request tells the upstream: claims forwarded as headers (the
    /// client's own copies removed first), credentials stripped if the authenticator says
    /// so. Returns the target without the credential's query parameter, when it had one.
    fn identity_headers(
        &self,
        route: &Route,
        headers: &mut HeaderMap,
        ctx: &RequestState,
        target: &[u8],
    ) -> Option<Bytes> {
        for name in &route.auth_headers {
            headers.remove(name);
        }
        let identity = ctx.identity.as_ref()?;
        for (name, value) in &identity.forward {
            headers.insert(name.clone(), value.clone());
        }
        let admitted = route
            .auth
            .iter()
            .find(|a| a.name() == &*identity.authenticator)?;
        admitted.strip_credentials(headers);
        admitted.strip_query(target)
    }

    /// The headers every response gets besides the security defaults (which responses
    /// start from): CORS, RateLimit, X-Request-Id.
    fn decorate(&self, headers: &mut HeaderMap, rt: &Runtime, ctx: &RequestState) {
        rt.cors.apply(&ctx.origin, headers);
        let cap = route(rt, ctx)
            .and_then(|r| r.in_flight.as_ref())
            .filter(|_| ctx.capped);
        if let Some(cap) = cap {
            headers.insert(RATELIMIT_POLICY, cap.policy_header.clone());
            headers.insert(RATELIMIT, IN_FLIGHT_EXHAUSTED);
        } else if let (Some(policy), Some(verdict)) = (policy(rt, ctx), ctx.verdict) {
            headers.insert(RATELIMIT_POLICY, policy.policy_header.clone());
            headers.insert(RATELIMIT, policy.rate_limit_header(verdict));
        }
        if let Some(id) = &ctx.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
    }

    /// Write one of the gateway's own JSON answers.
    async fn answer(
        &self,
        session: &mut Session,
        rt: &Runtime,
        ctx: &mut RequestState,
        err: GatewayError,
    ) -> Result<()> {
        ctx.answered = Some(err);
        let body = err.body();
        let mut parts = response_parts(err.status(), 0);
        parts.headers = rt.security.defaults(ctx.tls);
        let headers = &mut parts.headers;
        err.add_fields(headers);
        if let Some(challenge) = &ctx.challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        if let (GatewayError::MethodNotAllowed, Some(methods)) =
            (err, route(rt, ctx).and_then(|r| r.methods.as_ref()))
        {
            headers.insert(header::ALLOW, methods.allow.clone());
        }
        if err == GatewayError::PayloadTooLarge {
            // the body is not read: the connection cannot carry another request
            session.set_keepalive(None);
        }
        self.decorate(headers, rt, ctx);
        self.close_if_draining(rt, session);
        let head_only = session.req_header().method == Method::HEAD;
        session
            .write_response_header(Box::new(ResponseHeader::from(parts)), head_only)
            .await?;
        if !head_only {
            session
                .write_response_body(Some(Bytes::from_static(body)), true)
                .await?;
        }
        Ok(())
    }

    /// The 204 answer to a CORS preflight; it never reaches an upstream or the limiter.
    async fn answer_preflight(
        &self,
        session: &mut Session,
        rt: &Runtime,
        ctx: &mut RequestState,
    ) -> Result<()> {
        let mut parts = response_parts(204, 0);
        parts.headers = rt.security.defaults(ctx.tls);
        let headers = &mut parts.headers;
        rt.cors
            .preflight(&ctx.origin, &session.req_header().headers, headers);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        if let Some(id) = &ctx.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
        self.close_if_draining(rt, session);
        session
            .write_response_header(Box::new(ResponseHeader::from(parts)), true)
            .await
    }
}

const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");
/// Fields `forwarding_headers` may add to a request: X-Forwarded-For, -Proto, -Host,
/// X-Request-Id, X-Real-IP.
const FORWARDING_FIELDS: usize = 5;
/// Informational answers relayed for one request; one more is a 502.
const MAX_INFORMATIONAL: u8 = 16;
/// Seconds a client should wait when an authenticator cannot decide (IdP unreachable).
const AUTH_RETRY_AFTER: u32 = 5;

/// Work on a response's headers as a plain `http` map, then hand it back.
///
/// Pingora's `ResponseHeader` keeps a second map with each header name's original case, so
/// every insert through it parses the name and updates two maps. Converting to the plain
/// parts drops the case map: header work becomes one map operation with prebuilt names,
/// and the response goes out with standard names in their usual case and other names in
/// lower case (as HTTP/2 and Envoy send them). The reason phrase becomes the standard one.
fn with_plain_headers(resp: &mut ResponseHeader, f: impl FnOnce(&mut http::response::Parts)) {
    let placeholder = ResponseHeader::from(response_parts(200, 0));
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    f(&mut parts);
    *resp = ResponseHeader::from(parts);
}

/// The request counterpart of [`with_plain_headers`]; the caller sets the target again.
fn take_request_parts(req: &mut RequestHeader) -> http::request::Parts {
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    http::request::Parts::from(std::mem::replace(req, placeholder))
}

/// Empty response parts with room for `headers` headers.
fn response_parts(status: u16, headers: usize) -> http::response::Parts {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if headers > 0 {
        parts.headers.reserve(headers);
    }
    parts
}

impl Gateway {
    /// 308 to the same URL over https: the Host's name, the TLS listener's port.
    async fn answer_redirect(
        &self,
        session: &mut Session,
        rt: &Runtime,
        ctx: &mut RequestState,
        port: u16,
    ) -> Result<()> {
        let req = session.req_header();
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .unwrap_or("localhost");
        let name = strip_port(host);
        let mut location = BytesMut::with_capacity(name.len() + req.raw_path().len() + 16);
        location.put_slice(b"https://");
        location.put_slice(name.as_bytes());
        if port != 443 {
            location.put_u8(b':');
            location.put_slice(itoa::Buffer::new().format(port).as_bytes());
        }
        let target = stripped_target(req, 0);
        location.put_slice(&target);
        let location = HeaderValue::from_maybe_shared(location.freeze())
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad redirect target"))?;
        let mut parts = response_parts(308, 0);
        parts.headers = rt.security.defaults(ctx.tls);
        parts.headers.insert(header::LOCATION, location);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        if let Some(id) = &ctx.request_id {
            parts.headers.insert(X_REQUEST_ID, id.clone());
        }
        self.close_if_draining(rt, session);
        session
            .write_response_header(Box::new(ResponseHeader::from(parts)), true)
            .await
    }
}

/// The placeholders of a route's header transforms, for one request.
fn vars<'a>(route: &'a Route, req: &'a RequestHeader, ctx: &'a RequestState) -> Vars<'a> {
    Vars {
        client_ip: ctx.client_ip,
        request_id: ctx.request_id.as_ref(),
        route: &route.prefix,
        host: req.headers.get(header::HOST),
    }
}

/// The declared length of a body: `Content-Length`; `None` when the body is chunked (or,
/// in HTTP/2, of unknown length until it ends).
fn body_length(req: &RequestHeader) -> Option<u64> {
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let length = req.headers.get(header::CONTENT_LENGTH)?;
    std::str::from_utf8(length.as_bytes()).ok()?.parse().ok()
}

/// An IP address as a header value.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut text = BytesMut::with_capacity(45);
    crate::forwarding::push_ip(&mut text, ip);
    HeaderValue::from_maybe_shared(text.freeze()).unwrap_or(HeaderValue::from_static("-"))
}

/// A Host value without its port: "a.example:8080" is "a.example", "[::1]:80" is "[::1]".
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The request target with `matched` bytes of prefix removed from its path; the query
/// string is carried over byte for byte.
fn stripped_target(req: &RequestHeader, matched: usize) -> Bytes {
    let path = req.uri.path();
    let rest = stripped(path, matched);
    let raw = req.raw_path();
    let query = raw
        .iter()
        .position(|&b| b == b'?')
        .map_or(&[][..], |i| &raw[i..]);
    let mut target = BytesMut::with_capacity(rest.len() + query.len());
    target.put_slice(rest.as_bytes());
    target.put_slice(query);
    target.freeze()
}

/// A path an upstream could resolve to somewhere the prefix did not allow: a "." or ".."
/// segment, also where the dots or the separators are percent-encoded (`%2e`, `%2f`,
/// `%5c`) or the separator is a backslash (which some servers take for one); or a NUL,
/// raw or as `%00`, which ends the path early in C upstreams.
fn unsafe_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    if !bytes.iter().any(|&b| matches!(b, b'.' | b'%' | b'\\' | 0)) {
        return false;
    }
    // the path with the escapes that matter decoded, and backslashes as slashes
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        let (c, len) = match escaped {
            Some(c @ (b'.' | b'/' | b'\\' | 0)) => (c, 3),
            _ => (b, 1),
        };
        match c {
            0 => return true,
            b'\\' => decoded.push(b'/'),
            c => decoded.push(c),
        }
        i += len;
    }
    decoded
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_spotted_plain_and_encoded() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/..",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/.%2e",
            "/a/..%2fb",
            "/a/..%2Fb",
            "/a/%5c..%5cb",
            "/a\\..\\b",
            "/a/..\\b",
            "/a%00b",
            "/a\0b",
        ] {
            assert!(unsafe_path(bad), "{bad}");
        }
        for good in [
            "/a/b",
            "/a/...",
            "/a/.hidden",
            "/a/b.c",
            "/",
            "/a/%2e%2ex",
            "/a/2e",
            "/a/%2fb",
            "/a\\b",
            "/a%",
            "/a%2",
            "/a/%zz",
            "/a/b%2e",
        ] {
            assert!(!unsafe_path(good), "{good}");
        }
    }

    #[test]
    fn ports_come_off_host_names() {
        assert_eq!(strip_port("api.example:8080"), "api.example");
        assert_eq!(strip_port("api.example"), "api.example");
        assert_eq!(strip_port("[::1]:5000"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn stripping_keeps_the_query_byte_for_byte() {
        let req = RequestHeader::build("GET", b"/users/7?q=a%20b&x=%zz", None).unwrap();
        assert_eq!(&stripped_target(&req, 6)[..], b"/7?q=a%20b&x=%zz");
        let req = RequestHeader::build("GET", b"/users?x", None).unwrap();
        assert_eq!(&stripped_target(&req, 6)[..], b"/?x");
        let req = RequestHeader::build("GET", b"/users", None).unwrap();
        assert_eq!(&stripped_target(&req, 6)[..], b"/");
    }
}
