//! The Pingora `ProxyHttp` implementation: each phase orchestrates, the components decide.
//!
//! - `request_filter`: who the client is, the request id, then the early answers, in this
//!   order: 400 for a path with dot segments (path rules), 308 to https when asked, 204 for
//!   a CORS preflight, 403 from the route's deny/allow lists, 405 for a method it does not
//!   take, 401/403/503 from its authenticators, 429 when over the limit, 413 for a body
//!   over `max_body`, 404 when no route matches. Refusals by the lists and methods are
//!   still counted by the limiter.
//!   An admitted HTTP/1.1 upgrade (a WebSocket) is then asked of the instance by the
//!   gateway itself, and after a 101 relayed in a task of its own ([`upgrade`]).
//! - `request_body_filter`: a body without a length is counted against `max_body`.
//! - `upstream_peer`: an instance from the route's pool, with the route's timeouts.
//! - `fail_to_connect`, `error_while_proxy`: passive health, and whether to retry elsewhere.
//! - `upstream_request_filter`: strip the prefix, set Host, X-Forwarded-*, X-Request-Id,
//!   forwarded claims, then the route's `request_headers`.
//! - `response_filter`: the route's `response_headers` on the upstream's headers, those
//!   over the security defaults, CORS and RateLimit headers, X-Request-Id.
//! - the cache phases (`request_cache_filter`, `cache_key_callback`,
//!   `response_cache_filter`, `cache_vary_filter`, `should_serve_stale`): a cached route's
//!   GET and HEAD use the response cache after every policy has run; `response_filter`
//!   adds its `Cache-Status`.
//! - `fail_to_proxy`: the one place a failure becomes a 4xx/5xx answer (see [`crate::wire::GatewayError`]).
//! - `logging`: metrics, and the access line handed to the background writer.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, RespCacheable};
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::{Error, Result};

use crate::control::Current;

mod admit;
pub(crate) mod answer;
mod cache;
mod ctx;
mod forward;
mod peer;
mod respond;
mod upgrade;

pub use ctx::RequestCtx;
use ctx::*;
pub(crate) use upgrade::HeldBack;

/// The gateway service: the runtime in force, which each request loads once, and the
/// connector for the upgrades it relays itself (see [`upgrade`]).
pub struct Gateway {
    current: Arc<Current>,
    /// Made at the first upgrade: making one loads the system's CA store (about 400
    /// million instructions), which a gateway without WebSockets never needs.
    connector: OnceLock<TransportConnector>,
    connector_options: ConnectorOptions,
}

impl Gateway {
    /// `conf` is the server's, whose upstream TLS settings Pingora's proxy uses too.
    pub fn new(current: Arc<Current>, conf: &ServerConf) -> Gateway {
        Gateway {
            current,
            connector: OnceLock::new(),
            connector_options: ConnectorOptions::from_server_conf(conf),
        }
    }

    fn connector(&self) -> &TransportConnector {
        self.connector
            .get_or_init(|| TransportConnector::new(Some(self.connector_options.clone())))
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.current.load())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let (rt, state) = ctx.parts();
        self.keepalive(rt, session);
        self.identify(session, rt, state);
        let early = match self.screen(session, rt, state) {
            Early::Continue => self.admit(session, rt, state, None).await,
            Early::RefuseCounted(err) => self.admit(session, rt, state, Some(err)).await,
            early => early,
        };
        match early {
            Early::Continue if Self::relays(session, rt, state) => {
                self.upgrade(session, ctx).await?;
                Ok(true)
            }
            Early::Continue => Ok(false),
            Early::Preflight => {
                self.answer_preflight(session, rt, state).await?;
                Ok(true)
            }
            Early::RedirectToHttps(port) => {
                self.answer_redirect(session, rt, state, port).await?;
                Ok(true)
            }
            // `admit` has counted a `RefuseCounted` by now
            Early::Refuse(err) | Early::RefuseCounted(err) => {
                self.answer(session, rt, state, err).await?;
                Ok(true)
            }
        }
    }

    /// The edge lends the bytes that followed an upgrade request's head (see [`HeldBack`]).
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        lent: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(held) = lent.downcast::<HeldBack>() {
            ctx.state.held_back = Some(held.0);
        }
    }

    /// A GET or HEAD on a route with `cache` uses the response cache; every policy of
    /// `request_filter` has run by now.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let (rt, ctx) = ctx.parts();
        self.use_cache(session, rt, ctx);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let (rt, ctx) = ctx.parts();
        Ok(self.cache_key(session, rt, ctx))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let (rt, ctx) = ctx.parts();
        Ok(self.cacheable(resp, rt, ctx))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        cache::variance(meta, req)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        cache::serve_stale(error)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (rt, ctx) = ctx.parts();
        self.choose_peer(session, rt, ctx)
    }

    /// Connecting failed: the request has not been sent, so another instance may take it.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        let (rt, ctx) = ctx.parts();
        self.connect_failed(rt, ctx, e)
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
        self.proxy_failed(peer, session, rt, ctx, e, client_reused)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.state.count_body(body.as_ref())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (rt, ctx) = ctx.parts();
        self.upstream_request(session, upstream, rt, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (rt, ctx) = ctx.parts();
        self.upstream_response(session, resp, rt, ctx)?;
        self.cache_status(session, resp, rt, ctx);
        self.invalidate_after_write(session, resp, rt, ctx);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (rt, ctx) = ctx.parts();
        self.answer_failure(session, e, rt, ctx).await
    }

    /// A failure the client caused (it closed, reset or stalled its side) is the client's
    /// business, not the operator's: at debug level, so that no client fills the error log
    /// at will. ERROR stays for the gateway's and the upstreams' faults.
    fn suppress_error_log(&self, session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        let client = client_fault(e);
        if client {
            log::debug!(
                "client failed the exchange: {e}, {}",
                session.request_summary()
            );
        }
        client
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // a cache's background refresh is no client's request: its answer goes to the store;
        // a relayed upgrade is recorded by its relay when the connection ends
        if session.subrequest_ctx.is_some() || ctx.state.handed_off {
            return;
        }
        let (rt, ctx) = ctx.parts();
        let error = e.map(|e| format!("{} {}", e.esource().as_str(), e.etype().as_str()));
        finish(Seen::of(session), Failure::of(e, error.as_deref()), rt, ctx)
            .record(rt.shared.metrics.as_ref(), &rt.shared.access_log);
    }
}
