//! The gateway's own answers: its JSON errors, CORS preflights and https redirects, written
//! through a Pingora session by the phases, or as whole HTTP/1.1 bytes by the edge, where no
//! session exists yet. Both start from the same fields ([`error_headers`]).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use crate::limits::caps::IN_FLIGHT_EXHAUSTED;
use crate::runtime::{Runtime, LINGERING_QUIET};
use crate::telemetry::trace::RequestTrace;
use crate::wire::names::{RATELIMIT, RATELIMIT_POLICY, X_REQUEST_ID};
use crate::wire::values::CLOSE;
use crate::wire::GatewayError;
use pingora::protocols::http::date::get_cached_date;

use super::ctx::policy;
use super::ctx::route;
use super::ctx::RequestState;
use super::forward::strip_port;
use super::forward::stripped_target;
use super::Gateway;
use pingora::proxy::FailToProxy;

impl Gateway {
    /// The headers every response gets besides the security defaults (which responses
    /// start from): CORS, RateLimit, X-Request-Id.
    pub(super) fn decorate(&self, headers: &mut HeaderMap, rt: &Runtime, ctx: &RequestState) {
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
        if let (Some(name), Some(trace)) = (
            rt.tracing.as_ref().and_then(|t| t.response_header.as_ref()),
            &ctx.trace,
        ) {
            headers.insert(name.clone(), trace.response_value());
        }
    }

    /// Write one of the gateway's own JSON answers.
    pub(super) async fn answer(
        &self,
        session: &mut Session,
        rt: &Runtime,
        ctx: &mut RequestState,
        err: GatewayError,
    ) -> Result<()> {
        ctx.answered = Some(err);
        let body = err.body();
        let mut parts = response_parts(err.status(), 0);
        parts.headers = error_headers(rt, err, ctx.tls);
        let headers = &mut parts.headers;
        if let Some(challenge) = &ctx.challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        if let (GatewayError::MethodNotAllowed, Some(methods)) =
            (err, route(rt, ctx).and_then(|r| r.methods.as_ref()))
        {
            headers.insert(header::ALLOW, methods.allow.clone());
        }
        let lingers = err == GatewayError::PayloadTooLarge;
        if lingers {
            // the body is still on its way and the connection closes after the answer
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
        if lingers {
            ctx.answered_in = Some(ctx.started.elapsed());
            linger_on_body(session, rt).await;
        }
        Ok(())
    }

    /// The 204 answer to a CORS preflight; it never reaches an upstream or the limiter.
    pub(super) async fn answer_preflight(
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

    /// 308 to the same URL over https: the Host's name, the TLS listener's port.
    pub(super) async fn answer_redirect(
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

/// Seconds a client should wait when an authenticator cannot decide (IdP unreachable).
pub(super) const AUTH_RETRY_AFTER: u32 = 5;

/// Work on a response's headers as a plain `http` map, then hand it back.
///
/// Pingora's `ResponseHeader` keeps a second map with each header name's original case, so
/// every insert through it parses the name and updates two maps. Converting to the plain
/// parts drops the case map: header work becomes one map operation with prebuilt names,
/// and the response goes out with standard names in their usual case and other names in
/// lower case (as HTTP/2 and Envoy send them). The reason phrase becomes the standard one.
pub(super) fn with_plain_headers(
    resp: &mut ResponseHeader,
    f: impl FnOnce(&mut http::response::Parts),
) {
    let placeholder = ResponseHeader::from(response_parts(200, 0));
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    f(&mut parts);
    *resp = ResponseHeader::from(parts);
}

/// Empty response parts with room for `headers` headers.
pub(super) fn response_parts(status: u16, headers: usize) -> http::response::Parts {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if headers > 0 {
        parts.headers.reserve(headers);
    }
    parts
}

/// After a 413, read and drop what the client still sends of its body (nginx's lingering
/// close), so that closing the connection does not reset it before the client reads the
/// answer: Python's http.client, `requests` and most SDKs send the whole body first. For
/// at most `timeouts.lingering` in all, and until nothing arrives for [`LINGERING_QUIET`].
async fn linger_on_body(session: &mut Session, rt: &Runtime) {
    session.set_total_drain_timeout(Some(rt.client.lingering));
    session.set_read_timeout(Some(LINGERING_QUIET));
    if let Err(e) = session.drain_request_body().await {
        log::debug!("lingering after a 413 ended: {e}");
    }
}

/// The fields every one of the gateway's own error answers starts from: the security
/// headers, then the error's own (`Retry-After`, `Allow`...).
pub(crate) fn error_headers(rt: &Runtime, err: GatewayError, tls: bool) -> HeaderMap {
    let mut headers = rt.security.defaults(tls);
    err.add_fields(&mut headers);
    headers
}

/// A refusal written at the edge, where no Pingora session exists yet: a whole HTTP/1.1
/// response for `err`, with the same fields and JSON body as [`Gateway::answer`]'s, the
/// CORS fields for `origin`, and `Connection: close`.
pub(crate) fn refusal_bytes(
    rt: &Runtime,
    err: GatewayError,
    origin: Option<&[u8]>,
    request_id: &HeaderValue,
    head_only: bool,
    tls: bool,
    trace: Option<&RequestTrace>,
) -> BytesMut {
    let body = err.body();
    let mut headers = error_headers(rt, err, tls);
    let mut request = HeaderMap::new();
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_bytes(o).ok()) {
        request.insert(header::ORIGIN, origin);
    }
    rt.cors.apply(&rt.cors.allow_origin(&request), &mut headers);
    headers.insert(X_REQUEST_ID, request_id.clone());
    if let (Some(name), Some(trace)) = (
        rt.tracing.as_ref().and_then(|t| t.response_header.as_ref()),
        trace,
    ) {
        headers.insert(name.clone(), trace.response_value());
    }
    headers.insert(header::CONNECTION, CLOSE);
    headers.insert(header::DATE, get_cached_date());

    let mut out = BytesMut::with_capacity(1024 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(itoa::Buffer::new().format(err.status()).as_bytes());
    out.put_u8(b' ');
    out.put_slice(err.reason().as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    if !head_only {
        out.put_slice(body);
    }
    out
}

impl Gateway {
    /// The one place a proxy failure becomes an answer (`fail_to_proxy`): the gateway's
    /// JSON error when nothing final went out yet; otherwise the stream just ends.
    pub(super) async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        rt: &Runtime,
        ctx: &mut RequestState,
    ) -> FailToProxy {
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
        // stream. After 1xx answers a final one can still follow, but not after a 101: the
        // connection is the upgraded protocol's bytes from then on, and a failure on either
        // side only closes it
        if let Some(sent) = session
            .response_written()
            .filter(|r| !r.status.is_informational() || r.status == StatusCode::SWITCHING_PROTOCOLS)
        {
            return FailToProxy {
                error_code: sent.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        // Pingora closes the client connection after a proxy failure: say so
        session.set_keepalive(None);
        if let Err(write_error) = self.answer(session, rt, ctx, err).await {
            log::debug!("could not send the error answer: {write_error}");
        }
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }
}
