//! The response cache's phases: whether a request uses the cache, its key, whether an
//! answer is stored, its variants, when a stale entry may be served, and the
//! `Cache-Status` of the answer. The rules are the cache component's
//! ([`crate::cache::rules`]); pingora-cache does the lookups, the one fill per key, the
//! revalidations and the background refreshes.

use std::time::SystemTime;

use http::{header, Method};
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, CacheOptionOverrides, RespCacheable, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource};

use crate::runtime::Runtime;

use super::ctx::{route, RequestState};
use super::Gateway;

impl Gateway {
    /// A GET or HEAD on a route with `cache`, not an upgrade: the cache is on for it.
    pub(super) fn use_cache(&self, session: &mut Session, rt: &Runtime, ctx: &mut RequestState) {
        let Some(route) = route(rt, ctx) else {
            return;
        };
        let Some(cache) = &route.cache else {
            return;
        };
        let req = session.req_header();
        if !matches!(req.method, Method::GET | Method::HEAD) || session.is_upgrade_req() {
            return;
        }
        ctx.credentials = ctx.identity.is_none()
            && (req.headers.contains_key(header::AUTHORIZATION)
                || req.headers.contains_key(header::COOKIE));
        let shared = &rt.shared.cache;
        let mut overrides = CacheOptionOverrides::default();
        // a request waiting on another's fill gives up when the fill would have timed out
        overrides.wait_timeout = Some(route.timeouts.read);
        session.cache.enable(
            shared.store,
            Some(shared.eviction),
            Some(shared.predictor),
            Some(shared.lock),
            Some(overrides),
        );
        session.cache.set_max_file_size_bytes(cache.max_object);
    }

    /// The key: host, path and query (HEAD as GET), and the caller on a route with
    /// authenticators.
    pub(super) fn cache_key(
        &self,
        session: &Session,
        rt: &Runtime,
        ctx: &RequestState,
    ) -> CacheKey {
        let req = session.req_header();
        let host = req
            .uri
            .host()
            .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
            .unwrap_or_default();
        let prefix = route(rt, ctx).map_or("", |r| &*r.prefix);
        crate::cache::key::key(
            &host,
            req.uri.path(),
            req.uri.query(),
            ctx.identity.as_ref().map(|i| i.key.as_str()),
            prefix,
        )
    }

    /// Whether the upstream's answer is stored, and until when it is fresh.
    pub(super) fn cacheable(
        &self,
        resp: &ResponseHeader,
        rt: &Runtime,
        ctx: &RequestState,
    ) -> RespCacheable {
        match route(rt, ctx).and_then(|r| r.cache.as_ref()) {
            Some(cache) => cache.cacheable(resp, ctx.credentials, SystemTime::now()),
            None => RespCacheable::Uncacheable(pingora::cache::NoCacheReason::NeverEnabled),
        }
    }

    /// The `Cache-Status` of an answer of a cached route, counted.
    pub(super) fn cache_status(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        rt: &Runtime,
        ctx: &RequestState,
    ) {
        let Some(cache) = route(rt, ctx).and_then(|r| r.cache.as_ref()) else {
            return;
        };
        let (value, count) =
            crate::cache::status::describe(&session.cache, resp.status.as_u16(), &cache.counts);
        // a background refresh counts as what it did: a revalidation, not a client's miss
        let count = if session.subrequest_ctx.is_some() {
            Some(&cache.counts.revalidated)
        } else {
            count
        };
        if let Some(count) = count {
            crate::cache::bump(count);
        }
        if session.cache.lock_duration().is_some() {
            crate::cache::bump(&cache.counts.lock_waits);
        }
        let _ = resp.insert_header("cache-status", value);
    }
}

impl Gateway {
    /// A successful unsafe request (POST, PUT, DELETE...) on a cached route invalidates the
    /// entry of its URI (RFC 9111 §4.4): the next GET goes upstream.
    pub(super) fn invalidate_after_write(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        rt: &Runtime,
        ctx: &RequestState,
    ) {
        let method = &session.req_header().method;
        let safe = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let succeeded = resp.status.is_success() || resp.status.is_redirection();
        if safe || !succeeded || route(rt, ctx).is_none_or(|r| r.cache.is_none()) {
            return;
        }
        rt.shared
            .cache
            .invalidate(&self.cache_key(session, rt, ctx));
    }
}

/// The variant of a stored answer a request asks for: the values of the request fields
/// its `Vary` names.
pub(super) fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = meta
        .headers()
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut variance = VarianceBuilder::new();
    for name in names {
        let values: Vec<&str> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        variance.add_owned_name_value(name, values.join(", ").into_bytes());
    }
    variance.finalize()
}

/// Whether a stale entry may be served: while one request refreshes it (no error; the
/// entry's own window decides), or instead of an upstream's failure (any failure but the
/// client's own).
pub(super) fn serve_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() != &ErrorSource::Downstream)
}
