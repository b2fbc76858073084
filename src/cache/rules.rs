//! What a route stores: RFC 9111 freshness for a shared cache, with the route's `ttl` when
//! the response says nothing, and the cases never stored (a `Set-Cookie`, `Vary: *`, an
//! answer to a request with credentials unless it says `public`, a status not cacheable by
//! default).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header;
use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::filters::calculate_expires_header_time;
use pingora::cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;

use crate::config::RouteCacheSection;

use super::RouteCounts;

/// A route's `cache`, compiled.
#[derive(Debug, Clone)]
pub struct RouteCache {
    pub ttl: Duration,
    pub max_object: usize,
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    pub counts: Arc<RouteCounts>,
}

/// Statuses a shared cache may store without an explicit freshness (RFC 9110 §15.1).
const CACHEABLE_STATUS: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

fn seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

impl RouteCache {
    pub fn from_config(section: &RouteCacheSection, counts: Arc<RouteCounts>) -> RouteCache {
        RouteCache {
            ttl: section.ttl.0,
            max_object: section
                .max_object
                .0
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            stale_while_revalidate: section.stale_while_revalidate.map_or(0, |d| seconds(d.0)),
            stale_if_error: section.stale_if_error.map_or(0, |d| seconds(d.0)),
            counts,
        }
    }

    /// Whether and how long `resp` is stored; `credentials`: the request carried
    /// `Authorization` or `Cookie` and the key holds no identity.
    pub fn cacheable(
        &self,
        resp: &ResponseHeader,
        credentials: bool,
        now: SystemTime,
    ) -> RespCacheable {
        let refuse = |why: &'static str| RespCacheable::Uncacheable(NoCacheReason::Custom(why));
        if !CACHEABLE_STATUS.contains(&resp.status.as_u16()) {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
        if resp.headers.contains_key(header::SET_COOKIE) {
            return refuse("set-cookie");
        }
        let vary_any = resp.headers.get_all(header::VARY).iter().any(|v| {
            v.to_str()
                .map_or(true, |v| v.split(',').any(|name| name.trim() == "*"))
        });
        if vary_any {
            return refuse("vary-star");
        }
        let cc = CacheControl::from_resp_headers(resp);
        if cc
            .as_ref()
            .is_some_and(|cc| cc.is_cacheable() == Cacheable::No)
        {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
        if credentials
            && !cc
                .as_ref()
                .is_some_and(|cc| cc.allow_caching_authorized_req())
        {
            return refuse("credentials");
        }
        // the upstream's Age counts against the lifetime (RFC 9111 §4.2.3)
        let age = resp
            .headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let created = now.checked_sub(age).unwrap_or(now);
        let fresh_until = match cc.as_ref().and_then(|cc| cc.fresh_duration()) {
            Some(lifetime) => created + lifetime,
            None => match calculate_expires_header_time(resp) {
                Some(expires) => expires,
                None => created + self.ttl,
            },
        };
        let no_cache = cc.as_ref().is_some_and(|cc| cc.no_cache());
        let (swr, sie) = match &cc {
            // revalidated on every use: never served stale
            _ if no_cache => (0, 0),
            Some(cc) => (
                cc.serve_stale_while_revalidate_duration()
                    .map_or(self.stale_while_revalidate, seconds),
                cc.serve_stale_if_error_duration()
                    .map_or(self.stale_if_error, seconds),
            ),
            None => (self.stale_while_revalidate, self.stale_if_error),
        };
        let mut stored = resp.clone();
        if let Some(cc) = &cc {
            cc.strip_private_headers(&mut stored);
        }
        // the Age sent on hits is counted from `created`
        stored.remove_header(&header::AGE);
        let mut meta = CacheMeta::new(fresh_until, now, swr, sie, stored);
        if !age.is_zero() {
            meta.set_epoch_override(created);
        }
        RespCacheable::Cacheable(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> RouteCache {
        RouteCache {
            ttl: Duration::from_secs(60),
            max_object: 1 << 20,
            stale_while_revalidate: 30,
            stale_if_error: 300,
            counts: Arc::default(),
        }
    }

    fn resp(status: u16, fields: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in fields {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn fresh_for(r: &ResponseHeader, credentials: bool) -> Option<u64> {
        let now = SystemTime::now();
        match route().cacheable(r, credentials, now) {
            RespCacheable::Cacheable(meta) => Some(
                meta.fresh_until()
                    .duration_since(now)
                    .map_or(0, |d| d.as_secs_f64().round() as u64),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn freshness_comes_from_the_response_then_the_route() {
        assert_eq!(fresh_for(&resp(200, &[]), false), Some(60));
        assert_eq!(
            fresh_for(&resp(200, &[("cache-control", "max-age=10")]), false),
            Some(10)
        );
        assert_eq!(
            fresh_for(
                &resp(200, &[("cache-control", "max-age=10, s-maxage=20")]),
                false
            ),
            Some(20)
        );
        assert_eq!(
            fresh_for(
                &resp(200, &[("cache-control", "max-age=10"), ("age", "4")]),
                false
            ),
            Some(6)
        );
        assert_eq!(
            fresh_for(&resp(200, &[("cache-control", "no-cache")]), false),
            Some(0)
        );
    }

    #[test]
    fn what_is_never_stored() {
        for fields in [
            &[("set-cookie", "a=b")][..],
            &[("vary", "Accept, *")],
            &[("cache-control", "no-store")],
            &[("cache-control", "private")],
        ] {
            assert_eq!(fresh_for(&resp(200, fields), false), None, "{fields:?}");
        }
        assert_eq!(fresh_for(&resp(500, &[]), false), None);
        assert_eq!(fresh_for(&resp(200, &[]), true), None, "credentials");
        assert_eq!(
            fresh_for(&resp(200, &[("cache-control", "public, max-age=5")]), true),
            Some(5)
        );
    }

    #[test]
    fn no_cache_is_never_served_stale() {
        let r = resp(200, &[("cache-control", "no-cache")]);
        let RespCacheable::Cacheable(meta) = route().cacheable(&r, false, SystemTime::now()) else {
            panic!("no-cache is stored");
        };
        assert_eq!(meta.stale_while_revalidate_sec(), 0);
        assert_eq!(meta.stale_if_error_sec(), 0);
        let plain = route().cacheable(&resp(200, &[]), false, SystemTime::now());
        let RespCacheable::Cacheable(meta) = plain else {
            panic!("stored");
        };
        assert_eq!(meta.stale_while_revalidate_sec(), 30);
    }
}
