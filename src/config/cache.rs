//! `[cache]` and a route's `cache`: the response cache's memory and what a route stores.

use std::time::Duration;

use serde::Deserialize;

use super::values::{BodySize, DurationValue, Timeout};

/// `[cache]`: the one in-memory store every cached route shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// The store's byte budget: bodies, headers and keys of every entry.
    #[serde(default = "default_memory")]
    pub memory: BodySize,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            memory: default_memory(),
        }
    }
}

/// 256 MiB.
pub const DEFAULT_CACHE_MEMORY: u64 = 256 << 20;

fn default_memory() -> BodySize {
    BodySize(Some(DEFAULT_CACHE_MEMORY))
}

/// A route's `cache`: its answers are stored and served from the store.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSection {
    /// How long a response that says nothing of its freshness stays fresh.
    #[serde(default = "default_ttl")]
    pub ttl: Timeout,
    /// The largest body stored; larger ones are served, not stored.
    #[serde(default = "default_max_object")]
    pub max_object: BodySize,
    /// How long after its freshness ends a stale entry is served while one request
    /// refreshes it in the background.
    #[serde(default)]
    pub stale_while_revalidate: Option<DurationValue>,
    /// How long after its freshness ends a stale entry is served when the upstream fails.
    #[serde(default)]
    pub stale_if_error: Option<DurationValue>,
}

fn default_ttl() -> Timeout {
    Timeout(Duration::from_secs(60))
}

fn default_max_object() -> BodySize {
    BodySize(Some(1 << 20))
}
