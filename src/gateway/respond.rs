//! The upstream's answer on its way to the client (`response_filter`): informational
//! answers relayed as they came, the rest with the route's `response_headers`, the security
//! defaults, CORS, RateLimit and X-Request-Id.

use http::{StatusCode, Version};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use crate::runtime::Runtime;

use super::answer::with_plain_headers;
use super::ctx::route;
use super::ctx::RequestState;
use super::forward::vars;
use super::Gateway;

/// Informational answers relayed for one request; one more is a 502.
const MAX_INFORMATIONAL: u8 = 16;

impl Gateway {
    pub(super) fn upstream_response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        rt: &Runtime,
        ctx: &mut RequestState,
    ) -> Result<()> {
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
        if let Some(trace) = &mut ctx.trace {
            trace.end_attempt(Some(resp.status.as_u16()), None);
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
}
