//! `Cache-Status` (RFC 9211) for an answer of a cached route, from where the cache stood
//! when the answer went out, and the count it adds to.

use std::time::SystemTime;

use pingora::cache::{CachePhase, HttpCache, NoCacheReason};

use super::RouteCounts;

/// The field's value, and the route's count this answer adds to.
pub fn describe<'a>(
    cache: &HttpCache,
    status: u16,
    counts: &'a RouteCounts,
) -> (String, Option<&'a std::sync::atomic::AtomicU64>) {
    let collapsed = if cache.lock_duration().is_some() {
        "; collapsed"
    } else {
        ""
    };
    let stored = if cache.enabled() { "; stored" } else { "" };
    match cache.phase() {
        CachePhase::Hit => {
            let ttl = cache
                .maybe_cache_meta()
                .and_then(|m| m.fresh_until().duration_since(SystemTime::now()).ok())
                .map_or(0, |d| d.as_secs());
            (
                format!("pylon; hit; ttl={ttl}{collapsed}"),
                Some(&counts.hits),
            )
        }
        CachePhase::StaleUpdating => (
            format!("pylon; hit; detail=stale-while-revalidate{collapsed}"),
            Some(&counts.stale),
        ),
        // a stale entry served because the upstream failed
        CachePhase::Stale => (
            "pylon; hit; fwd=stale; detail=stale-if-error".to_string(),
            Some(&counts.stale),
        ),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => (
            format!("pylon; fwd=stale; fwd-status=304{collapsed}"),
            Some(&counts.revalidated),
        ),
        CachePhase::Expired => (
            format!("pylon; fwd=stale; fwd-status={status}{stored}{collapsed}"),
            Some(&counts.misses),
        ),
        CachePhase::Miss => (
            format!("pylon; fwd=miss{stored}{collapsed}"),
            Some(&counts.misses),
        ),
        CachePhase::Disabled(
            NoCacheReason::CacheLockTimeout | NoCacheReason::CacheLockRetryLimit,
        ) => (
            "pylon; fwd=miss; detail=lock-timeout".to_string(),
            Some(&counts.misses),
        ),
        CachePhase::Disabled(
            NoCacheReason::OriginNotCache
            | NoCacheReason::ResponseTooLarge
            | NoCacheReason::PredictedResponseTooLarge
            | NoCacheReason::CacheLockGiveUp
            | NoCacheReason::Custom(_),
        ) => (format!("pylon; fwd=miss{collapsed}"), Some(&counts.misses)),
        CachePhase::Disabled(NoCacheReason::NeverEnabled) => {
            ("pylon; fwd=method".to_string(), Some(&counts.bypass))
        }
        _ => ("pylon; fwd=bypass".to_string(), Some(&counts.bypass)),
    }
}
