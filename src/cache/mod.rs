//! The response cache: one in-memory store for the process ([`store::MemStore`], bounded by
//! `[cache] memory` through pingora-cache's LRU eviction manager), the rules of what a
//! route stores ([`rules`]), the key ([`key`]), the `Cache-Status` field ([`status`]) and
//! each route's counts.
//!
//! pingora-cache drives it from the gateway's cache phases: the lookup, one fill per key
//! (its cache lock: the other requests for the key wait for the fill), revalidation of stale
//! entries with the upstream, stale-while-revalidate in the background and stale-if-error.
//! What is made here is made once per process and kept across reloads.

pub mod key;
pub mod rules;
pub mod status;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pingora::cache::eviction::lru::Manager;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::predictor::Predictor;

pub use rules::RouteCache;
use store::MemStore;

/// How long one fill may hold a key before the requests waiting on it compete again.
const LOCK_AGE: Duration = Duration::from_secs(60);

/// The process's cache: the store and what pingora-cache needs beside it.
pub struct Cache {
    pub store: &'static MemStore,
    pub eviction: &'static Manager<16>,
    pub predictor: &'static Predictor<16>,
    pub lock: &'static CacheKeyLockImpl,
    counts: Arc<Registry>,
}

/// Each route's counts, by its prefix (kept across reloads).
#[derive(Default)]
pub struct Registry {
    routes: RwLock<HashMap<Box<str>, Arc<RouteCounts>>>,
}

/// What one route's cache did.
#[derive(Debug, Default)]
pub struct RouteCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Stale entries served (while revalidating, or for an upstream's error).
    pub stale: AtomicU64,
    /// Stale entries the upstream confirmed with a 304.
    pub revalidated: AtomicU64,
    /// Requests that did not use the cache (methods, no-store requests...).
    pub bypass: AtomicU64,
    /// Requests that waited for another's fill of the same key.
    pub lock_waits: AtomicU64,
    /// Bytes stored now, and entries evicted to stay within the budget.
    pub stored_bytes: AtomicU64,
    pub evictions: AtomicU64,
}

impl Registry {
    /// The counts of the route with `prefix`, made if new.
    pub fn route(&self, prefix: &str) -> Arc<RouteCounts> {
        if let Some(c) = self.routes.read().ok().and_then(|m| m.get(prefix).cloned()) {
            return c;
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.entry(Box::from(prefix)).or_default().clone()
    }

    /// Every route's counts, by prefix.
    pub fn all(&self) -> Vec<(Box<str>, Arc<RouteCounts>)> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = routes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl Cache {
    /// The cache of a process whose store may hold `memory` bytes. Made once: what it
    /// holds lives as long as the process.
    pub fn new(memory: u64) -> Cache {
        let counts = Arc::new(Registry::default());
        let limit = usize::try_from(memory).unwrap_or(usize::MAX);
        let store: &'static MemStore = Box::leak(Box::new(MemStore::new(counts.clone())));
        let eviction: &'static Manager<16> =
            Box::leak(Box::new(Manager::with_capacity(limit, 1024)));
        let predictor: &'static Predictor<16> = Box::leak(Box::new(Predictor::new(1024, None)));
        let lock: &'static CacheLock = Box::leak(CacheLock::new_boxed(LOCK_AGE));
        Cache {
            store,
            eviction,
            predictor,
            lock,
            counts,
        }
    }

    /// A reload's `[cache] memory`: the eviction manager makes room at the next fill.
    pub fn set_memory(&self, memory: u64) {
        self.eviction
            .set_weight_limit(usize::try_from(memory).unwrap_or(usize::MAX));
    }

    /// The counts of the route with `prefix`.
    pub fn route_counts(&self, prefix: &str) -> Arc<RouteCounts> {
        self.counts.route(prefix)
    }

    /// Every route's counts.
    pub fn counts(&self) -> Vec<(Box<str>, Arc<RouteCounts>)> {
        self.counts.all()
    }

    /// Bytes stored now, and entries evicted so far, over all routes.
    pub fn totals(&self) -> (u64, u64) {
        (self.store.bytes(), self.store.evictions())
    }

    /// Remove the entry of `key` (its primary slot: its other variants can no longer be
    /// found, and leave with the eviction).
    pub fn invalidate(&self, key: &pingora::cache::CacheKey) {
        use pingora::cache::eviction::{CacheEntryKeyRef, EvictionManager as _};
        use pingora::cache::key::CacheHashKey as _;
        let compact = key.to_compact();
        if self.store.remove_primary(&key.primary_bin()) {
            self.eviction
                .remove(CacheEntryKeyRef::from_entry_id(&compact, None));
        }
    }

    /// Remove every entry whose path is `path` (with any query, host, identity or
    /// variant), or starts with `prefix` on a segment boundary: how many were removed.
    pub fn purge(&self, path: Option<&str>, prefix: Option<&str>) -> usize {
        let removed = self.store.remove_where(|p| {
            path.is_some_and(|want| p == want)
                || prefix.is_some_and(|want| {
                    want == "/"
                        || p == want
                        || p.strip_prefix(want)
                            .is_some_and(|rest| rest.starts_with('/'))
                })
        });
        for key in &removed {
            use pingora::cache::eviction::{CacheEntryKeyRef, EvictionManager as _};
            self.eviction
                .remove(CacheEntryKeyRef::from_entry_id(key, None));
        }
        removed.len()
    }
}

/// Add one to a count.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
