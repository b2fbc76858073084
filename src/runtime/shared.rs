//! What outlives a reload: made once per process and handed to every runtime after it.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::cache::Cache;
use crate::config::{ConfigError, FileConfig, LocatedError};
use crate::limits::{Limiter, Stores, DEFAULT_MAX_CLIENTS};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::history::History;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::SpanQueue;
use crate::tls::CertStore;
use crate::traffic::{Connections, Lifecycle};
use crate::upstream::LiveStates;

/// What outlives a reload: made once per process, from the config loaded at start, and
/// handed to every runtime compiled after it. Each piece is keyed by the identity of what
/// it counts (a policy, a route's instance, a route's prefix), so a new runtime finds the
/// state of whatever it keeps.
pub struct Shared {
    /// The counters of every rate-limit policy, by policy identity.
    pub limiter: Arc<Limiter>,
    /// Health, ejection and load of every instance, by route and URL.
    pub live: LiveStates,
    /// The counters behind /metrics; `None` when no admin or metrics listener is set.
    pub metrics: Option<Metrics>,
    /// Each route's last 15 minutes, read from `metrics` by the housekeeping; `None` with it.
    pub history: Option<History>,
    /// Client connections open now, and refused over the cap.
    pub connections: Arc<Connections>,
    /// The proxy's worker threads, for giving freed memory back (see [`crate::memory`]).
    pub workers: Arc<crate::memory::Workers>,
    pub life: Arc<Lifecycle>,
    pub access_log: Arc<AccessLog>,
    /// The certificates the TLS listeners serve: the active runtime's.
    pub certs: Arc<ArcSwapOption<CertStore>>,
    /// Shared rate-limit stores by URL and settings: a reload keeps the one it names.
    pub stores: Stores,
    /// Finished spans waiting for export, kept across reloads.
    pub spans: SpanQueue,
    /// The response cache: its store and each route's counts, kept across reloads.
    pub cache: Cache,
    /// When the process started.
    pub started: SystemTime,
}

impl Shared {
    /// The state for a process that starts with `file`.
    pub fn from_config(file: &FileConfig) -> Result<Shared, ConfigError> {
        let access_log = AccessLog::new(&file.access_log).map_err(|e| {
            file.locate(LocatedError::new(
                file.access_log.path.span(),
                "access_log.path",
                format!(
                    "\"{}\" cannot be opened for writing: {e}",
                    file.access_log.path.get_ref()
                ),
            ))
        })?;
        Ok(Shared {
            limiter: Arc::new(Limiter::new(max_clients(file))),
            live: LiveStates::default(),
            metrics: (file.admin.is_some() || file.metrics.is_some())
                .then(|| Metrics::new(threads(file))),
            history: (file.admin.is_some() || file.metrics.is_some()).then(History::default),
            connections: Arc::new(Connections::default()),
            workers: Arc::default(),
            life: Arc::new(Lifecycle::default()),
            access_log: Arc::new(access_log),
            certs: Arc::new(ArcSwapOption::empty()),
            stores: Stores::default(),
            spans: SpanQueue::default(),
            cache: Cache::new(cache_memory(file)),
            started: SystemTime::now(),
        })
    }
}

pub(super) fn max_clients(file: &FileConfig) -> usize {
    file.rate_limit
        .as_ref()
        .map_or(DEFAULT_MAX_CLIENTS, |p| p.max_clients.0)
}

/// `[cache] memory`; "0" is the default.
pub(super) fn cache_memory(file: &FileConfig) -> u64 {
    file.cache
        .memory
        .0
        .unwrap_or(crate::config::DEFAULT_CACHE_MEMORY)
}

pub(super) fn threads(file: &FileConfig) -> usize {
    file.server.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t.0,
    )
}
