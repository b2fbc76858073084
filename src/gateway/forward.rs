//! The request as it goes upstream: the prefix stripped, the forwarding and identity
//! headers, and the variables of a route's header transforms.

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::forwarding::appended_forwarded_for;
use crate::policy::Vars;
use crate::router::stripped;
use crate::runtime::{Route, Runtime};
use crate::wire::names::{
    TRACEPARENT, TRACESTATE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP,
    X_REQUEST_ID,
};

use super::ctx::route;
use super::ctx::RequestState;
use super::Gateway;
use crate::policy::Transform;
use pingora::Result;
use std::time::Instant;

impl Gateway {
    /// X-Forwarded-For/-Proto/-Host and X-Request-Id for the upstream.
    pub(super) fn forwarding_headers(
        &self,
        session: &Session,
        headers: &mut HeaderMap,
        ctx: &RequestState,
    ) {
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
        if let Some(trace) = &ctx.trace {
            headers.insert(TRACEPARENT, trace.upstream_traceparent());
            // a tracestate belongs to the traceparent it came with: a trace that starts
            // here has none (W3C Trace Context, processing model)
            if trace.ids.parent.is_none() {
                headers.remove(TRACESTATE);
            }
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
    pub(super) fn identity_headers(
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
}

pub(super) const HTTP: HeaderValue = HeaderValue::from_static("http");

pub(super) const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Fields `forwarding_headers` may add to a request: X-Forwarded-For, -Proto, -Host,
/// X-Request-Id, X-Real-IP, traceparent.
pub(super) const FORWARDING_FIELDS: usize = 6;

/// The placeholders of a route's header transforms, for one request.
pub(super) fn vars<'a>(
    route: &'a Route,
    req: &'a RequestHeader,
    ctx: &'a RequestState,
) -> Vars<'a> {
    Vars {
        client_ip: ctx.client_ip,
        request_id: ctx.request_id.as_ref(),
        route: &route.prefix,
        host: req.headers.get(header::HOST),
    }
}

/// An IP address as a header value.
pub(super) fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut text = BytesMut::with_capacity(45);
    crate::forwarding::push_ip(&mut text, ip);
    HeaderValue::from_maybe_shared(text.freeze()).unwrap_or(HeaderValue::from_static("-"))
}

/// A Host value without its port: "a.example:8080" is "a.example", "[::1]:80" is "[::1]".
pub(super) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The request target with `matched` bytes of prefix removed from its path; the query
/// string is carried over byte for byte.
pub(super) fn stripped_target(req: &RequestHeader, matched: usize) -> Bytes {
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

impl Gateway {
    /// The request as the upstream gets it (`upstream_request_filter`): an origin-form
    /// target, Host, X-Forwarded-*, X-Request-Id, forwarded claims, then the route's
    /// `request_headers`.
    pub(super) fn upstream_request(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        rt: &Runtime,
        ctx: &mut RequestState,
    ) -> Result<()> {
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
        if !route.underscores_in_headers {
            drop_underscored(&mut parts.headers);
        }
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
}

/// Drop the fields whose names hold `_` (`Transfer_Encoding`, `Content_Length`), as nginx
/// does by default: CGI and WSGI stacks read `_` as `-`, so such a field could pose as
/// another behind the gateway's back. A request without one costs a scan of its names.
fn drop_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let names: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// The request counterpart of [`super::answer::with_plain_headers`]: its parts as a plain
/// `http` map; the caller sets the target again.
pub(super) fn take_request_parts(req: &mut RequestHeader) -> http::request::Parts {
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    http::request::Parts::from(std::mem::replace(req, placeholder))
}

#[cfg(test)]
mod tests {
    use super::*;

    use pingora::http::RequestHeader;

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
