//! Which instance takes a request, and what a failed attempt means: passive health, and
//! whether another instance may take it.

use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result, RetryType};

use crate::runtime::Runtime;
use crate::upstream::SelectInput;

use super::ctx::route;
use super::ctx::RequestState;
use super::Gateway;

impl Gateway {
    /// An instance from the route's pool, with the route's timeouts (`upstream_peer`).
    pub(super) fn choose_peer(
        &self,
        session: &mut Session,
        rt: &Runtime,
        ctx: &mut RequestState,
    ) -> Result<Box<HttpPeer>> {
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
        if let (Some(trace), Some(instance)) = (&mut ctx.trace, pool.instance(i)) {
            trace.start_attempt(instance.addr);
        }
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

    /// Connecting failed (`fail_to_connect`): the request has not been sent, so another
    /// instance may take it.
    pub(super) fn connect_failed(
        &self,
        rt: &Runtime,
        ctx: &mut RequestState,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(trace) = &mut ctx.trace {
            trace.end_attempt(None, Some(e.etype().as_str()));
        }
        if let (Some(route), Some(i)) = (route(rt, ctx), ctx.upstream) {
            route.pool.report_failure(i);
            e.set_retry(self.may_retry(route, ctx));
        }
        e
    }

    /// Proxying failed after connecting (`error_while_proxy`). A stale pooled connection
    /// is retried as Pingora would; otherwise another instance is tried only when replaying
    /// the request is safe: an idempotent method, a body still fully buffered, nothing sent
    /// to the client yet.
    pub(super) fn proxy_failed(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        rt: &Runtime,
        ctx: &mut RequestState,
        e: Box<Error>,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if let Some(trace) = &mut ctx.trace {
            trace.end_attempt(None, Some(e.etype().as_str()));
        }
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
}
