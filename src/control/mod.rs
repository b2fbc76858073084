//! Reloading the configuration in place: the one swap point.
//!
//! [`Current`] holds the compiled [`Runtime`] behind an `ArcSwap`. A request loads it once,
//! when its context is made, and keeps that runtime to its end, so requests in flight
//! finish on the config they started with while new ones see the new one. A reload (SIGHUP)
//! parses, validates and compiles the file on disk against the process's [`Shared`] state
//! (rate-limit counters, instance health, metric series, connections), then swaps; a file
//! that does not load is refused with the same file:line:key message as at start and the
//! old runtime keeps serving.
//!
//! What only an upgrade (`pylon -u`) can change, because it is bound into the listeners or
//! the process (addresses, threads, TLS versions, the pid file...), is compared and each
//! difference logged; the rest of the new config applies.
//!
//! [`Shared`]: crate::runtime::Shared

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::ConfigError;
use crate::runtime::Runtime;

mod source;

pub use source::FileSource;

/// The runtime in force, and the history of reloads.
pub struct Current {
    runtime: ArcSwap<Runtime>,
    /// Where the configuration comes from, for reloads.
    source: FileSource,
    status: Mutex<Status>,
    /// The generation in force, for background work that follows the runtime (health
    /// checks, JWKS refreshes): they restart on the new one.
    generation: watch::Sender<u64>,
}

/// What `/api/status` says about the loaded config.
#[derive(Debug, Clone)]
pub struct Status {
    /// 1 for the config loaded at start, one more for each successful reload.
    pub generation: u64,
    /// When the config in force was loaded.
    pub loaded_at: SystemTime,
    /// The last reload, if any: when, and its error when it was refused.
    pub last_reload: Option<Attempt>,
}

/// One reload.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: SystemTime,
    pub error: Option<String>,
    /// Settings that changed in the file but need an upgrade.
    pub not_applied: Vec<&'static str>,
}

impl Current {
    /// The runtime loaded at start (generation 1), made active.
    pub fn new(rt: Runtime, source: FileSource) -> Arc<Current> {
        rt.activate(None);
        let (generation, _) = watch::channel(1);
        Arc::new(Current {
            runtime: ArcSwap::from_pointee(rt),
            source,
            status: Mutex::new(Status {
                generation: 1,
                loaded_at: SystemTime::now(),
                last_reload: None,
            }),
            generation,
        })
    }

    /// The runtime for a new request (or connection, or scrape).
    pub fn load(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The runtime for a short look that holds no reference across an await (no
    /// reference count is touched).
    pub fn peek(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Where the configuration comes from.
    pub fn source(&self) -> &FileSource {
        &self.source
    }

    /// Follow the generation in force.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Load the config file again and swap it in; on an error the old one stays.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let started = Instant::now();
        let old = self.load();
        let result = self.source.recompile(old.shared.clone());
        let at = SystemTime::now();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let counts = old.shared.metrics.as_ref().map(|m| &m.reloads);
        match result {
            Ok(new) => {
                let not_applied = old.pinned().differences(&new.pinned());
                for key in &not_applied {
                    log::warn!(
                        "reload: {key} changed in {}, but only an upgrade (pylon -u) can apply it; it keeps its old value",
                        self.source.path().display()
                    );
                }
                new.activate(Some(&old));
                self.runtime.store(Arc::new(new));
                status.generation += 1;
                status.loaded_at = at;
                status.last_reload = Some(Attempt {
                    at,
                    error: None,
                    not_applied,
                });
                if let Some(c) = counts {
                    c.success.fetch_add(1, Ordering::Relaxed);
                }
                self.generation.send_replace(status.generation);
                log::info!(
                    "reload: {} loaded as generation {} in {:?}",
                    self.source.path().display(),
                    status.generation,
                    started.elapsed()
                );
                Ok(status.generation)
            }
            Err(e) => {
                log::error!("reload refused, the running config stays: {e}");
                status.last_reload = Some(Attempt {
                    at,
                    error: Some(e.to_string()),
                    not_applied: Vec::new(),
                });
                if let Some(c) = counts {
                    c.failure.fetch_add(1, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}
