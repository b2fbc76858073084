//! What `request_filter` decides before any upstream is asked: who the client is, whether
//! the request is one the gateway takes at all, and whether this client may send it
//! (lists, methods, authentication, limits, body size).

use http::header::{self};
use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::auth::{Authenticator, Rejection};
use crate::forwarding::{acceptable_request_id, new_request_id};
use crate::limits::caps::RouteRate;
use crate::limits::{ClientKey, Verdict};
use crate::runtime::{Route, Runtime};
use crate::telemetry::trace::Attr;
use crate::wire::names::{TRACEPARENT, X_REQUEST_ID};
use crate::wire::GatewayError;

use super::answer::AUTH_RETRY_AFTER;
use super::ctx::policy;
use super::ctx::route;
use super::ctx::Early;
use super::ctx::RequestState;
use super::Gateway;

impl Gateway {
    /// The client's address (through trusted proxies) and the request id.
    pub(super) fn identify(&self, session: &Session, rt: &Runtime, ctx: &mut RequestState) {
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
        if let Some(tracing) = &rt.tracing {
            ctx.trace = Some(tracing.begin(req.headers.get(TRACEPARENT).map(|v| v.as_bytes())));
        }
    }

    /// May a failed attempt be tried again elsewhere?
    pub(super) fn may_retry(&self, route: &Route, ctx: &RequestState) -> bool {
        ctx.attempts <= route.pool.retries && route.pool.has_untried(&ctx.tried)
    }

    /// The checks that need nothing but the request line and the client: dot segments,
    /// the redirect to https, CORS preflights (answered for any path, before anything
    /// else, as the tutorial's `cors()` did), the route, its client lists and methods.
    pub(super) fn screen(&self, session: &Session, rt: &Runtime, ctx: &mut RequestState) -> Early {
        let req = session.req_header();
        let path = req.uri.path();
        if unsafe_path(path) || !upper_case_method(&req.method) {
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
        // a cache is purged through the admin API with its token, never by any client
        if req.method.as_str() == "PURGE" && route.is_some_and(|r| r.cache.is_some()) {
            return Early::RefuseCounted(GatewayError::MethodNotAllowed);
        }
        Early::Continue
    }

    /// Who may pass: the route's authenticators, then the limiter, then the body size, then
    /// the 404 for no route. The limiter counts an authenticated request for its identity
    /// and anything else for the client IP, so guessing credentials is limited too, and so
    /// are requests `screen` refused by the route's lists or methods (`screened`), which
    /// get that answer without being authenticated.
    pub(super) async fn admit(
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
                        if let Some(trace) = &mut ctx.trace {
                            trace.event("auth.accepted", || {
                                vec![Attr::str("pylon.auth.name", &*identity.authenticator)]
                            });
                        }
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
        if let (Some(trace), Some(err)) = (&mut ctx.trace, unauthenticated) {
            trace.event("auth.refused", || {
                vec![Attr::int(
                    "http.response.status_code",
                    i64::from(err.status()),
                )]
            });
        }
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
                if let Some(trace) = &mut ctx.trace {
                    trace.event("rate_limited", || {
                        vec![Attr::str("pylon.rate_limit.policy", policy.name())]
                    });
                }
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
}

/// The declared length of a body: `Content-Length`; `None` when the body is chunked (or,
/// in HTTP/2, of unknown length until it ends).
pub(super) fn body_length(req: &RequestHeader) -> Option<u64> {
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let length = req.headers.get(header::CONTENT_LENGTH)?;
    std::str::from_utf8(length.as_bytes()).ok()?.parse().ok()
}

/// A path an upstream could resolve to somewhere the prefix did not allow: a "." or ".."
/// segment, also where the dots or the separators are percent-encoded (`%2e`, `%2f`,
/// `%5c`) or the separator is a backslash (which some servers take for one); or a NUL,
/// raw or as `%00`, which ends the path early in C upstreams.
pub(super) fn unsafe_path(path: &str) -> bool {
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

/// nginx's rule for a method: upper-case letters, `_` and `-`. Upstreams disagree about
/// the rest (`get`, or `helloGET` left over when a body's length header was misspelt):
/// aiohttp and gunicorn answer 400, tornado 405, uvicorn, hypercorn and twisted accept them;
/// the gateway refuses them with its own 400 instead of forwarding them. No route can take
/// one: `methods` takes upper-case names only.
pub(super) fn upper_case_method(method: &Method) -> bool {
    method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_must_be_upper_case_tokens() {
        for good in ["GET", "POST", "PROPFIND", "M-SEARCH", "VERSION_CONTROL"] {
            assert!(
                upper_case_method(&Method::from_bytes(good.as_bytes()).unwrap()),
                "{good}"
            );
        }
        for bad in ["get", "Get", "helloGET", "GET1", "PATCH!"] {
            assert!(
                !upper_case_method(&Method::from_bytes(bad.as_bytes()).unwrap()),
                "{bad}"
            );
        }
    }

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
}
