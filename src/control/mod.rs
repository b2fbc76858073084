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
//! The policy document in force ([`Document`]) is what `PUT /config` replaces ([`Current::write`]):
//! in the node's file without a store, rewritten in place with the node's sections kept as
//! written; with a store, in the fleet's document ([`fleet`]), which every node follows.
//!
//! [`Shared`]: crate::runtime::Shared

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, ConfigError};
use crate::runtime::Runtime;

pub mod fleet;
mod source;
mod write;

pub use fleet::Fleet;
pub use source::{FileSource, Loaded, Policy};
pub use write::{WriteError, Written};

/// The name errors in a document sent to the admin API are located by.
pub const SENT_DOCUMENT: &str = "(sent document)";

/// A policy document: its text and its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: Arc<str>,
    pub hash: Arc<str>,
}

impl Document {
    pub fn new(text: String) -> Document {
        let hash = config::content_hash(&text);
        Document {
            text: Arc::from(text),
            hash: Arc::from(hash),
        }
    }
}

/// The runtime in force, and the history of reloads.
pub struct Current {
    runtime: ArcSwap<Runtime>,
    /// Where the configuration comes from, for reloads.
    source: FileSource,
    status: Mutex<Status>,
    /// The generation in force, for background work that follows the runtime (health
    /// checks, JWKS refreshes): they restart on the new one.
    generation: watch::Sender<u64>,
    /// One compile-and-swap at a time (a reload, a write, a fleet's change).
    swapping: Mutex<()>,
    /// One write at a time, from its check to its swap.
    writing: tokio::sync::Mutex<()>,
    /// The fleet this node follows, with `[control] store`.
    fleet: Option<Fleet>,
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
    /// The policy document in force.
    pub document: Document,
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
    /// The runtime loaded at start (generation 1), made active, with the policy document it
    /// was compiled from and the fleet it follows, if any.
    pub fn new(
        rt: Runtime,
        source: FileSource,
        document: Document,
        fleet: Option<Fleet>,
    ) -> Arc<Current> {
        rt.activate(None);
        let (generation, _) = watch::channel(1);
        Arc::new(Current {
            runtime: ArcSwap::from_pointee(rt),
            source,
            status: Mutex::new(Status {
                generation: 1,
                loaded_at: SystemTime::now(),
                last_reload: None,
                document,
            }),
            generation,
            swapping: Mutex::new(()),
            writing: tokio::sync::Mutex::new(()),
            fleet,
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

    /// The policy document in force.
    pub fn document(&self) -> Document {
        self.status().document
    }

    /// Where the configuration comes from.
    pub fn source(&self) -> &FileSource {
        &self.source
    }

    /// The fleet this node follows, if it is in one.
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// Follow the generation in force.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Load the config file again and swap it in; on an error the old one stays. A fleet's
    /// node keeps the policy document it follows and reloads its own sections.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let started = Instant::now();
        let document = self.document();
        let policy = self.fleet.as_ref().map(|fleet| Policy {
            text: &document.text,
            name: fleet.document_name(),
        });
        let result = self.source.load(policy);
        let counts = |ok: bool| {
            if let Some(m) = &self.peek().shared.metrics {
                let c = if ok {
                    &m.reloads.success
                } else {
                    &m.reloads.failure
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
        };
        let result = result.and_then(|loaded| {
            let control_changed = self.control_changed(&loaded.file);
            let (generation, mut not_applied) = self.install(loaded)?;
            if control_changed {
                log::warn!(
                    "reload: [control] changed in {}, but the fleet a node follows is chosen at start: restart to apply it",
                    self.source.path().display()
                );
                not_applied.push("control");
            }
            Ok((generation, not_applied))
        });
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((generation, not_applied)) => {
                status.last_reload = Some(Attempt {
                    at: SystemTime::now(),
                    error: None,
                    not_applied,
                });
                counts(true);
                if let Some(fleet) = &self.fleet {
                    fleet.retry();
                }
                log::info!(
                    "reload: {} loaded as generation {generation} in {:?}",
                    self.source.path().display(),
                    started.elapsed()
                );
                Ok(generation)
            }
            Err(e) => {
                log::error!("reload refused, the running config stays: {e}");
                status.last_reload = Some(Attempt {
                    at: SystemTime::now(),
                    error: Some(e.to_string()),
                    not_applied: Vec::new(),
                });
                counts(false);
                Err(e)
            }
        }
    }

    /// Whether a reloaded file names another fleet (or store, or node) than the one this
    /// process follows, or a fleet where there was none or none where there was one.
    fn control_changed(&self, file: &crate::config::FileConfig) -> bool {
        match (&self.fleet, file.fleet()) {
            (None, None) => false,
            (Some(fleet), Some(control)) => {
                let named = |n: &Option<toml::Spanned<crate::config::Name>>| {
                    n.as_ref().map(|n| n.get_ref().0.clone())
                };
                named(&control.fleet).as_deref() != Some(fleet.name())
                    || named(&control.node).is_some_and(|n| n != fleet.node())
                    || !fleet.uses(control)
            }
            _ => true,
        }
    }

    /// Compile a loaded config on the running process's state and swap it in, with its
    /// policy document: the new generation, and the settings that changed but need an
    /// upgrade (logged, kept at their old values).
    pub(crate) fn install(&self, loaded: Loaded) -> Result<(u64, Vec<&'static str>), ConfigError> {
        let _one = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load();
        let new = self.source.compile(&loaded, old.shared.clone())?;
        let not_applied = old.pinned().differences(&new.pinned());
        for key in &not_applied {
            log::warn!(
                "reload: {key} changed in {}, but only an upgrade (pylon -u) can apply it; it keeps its old value",
                self.source.path().display()
            );
        }
        new.activate(Some(&old));
        self.runtime.store(Arc::new(new));
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.generation += 1;
        status.loaded_at = SystemTime::now();
        status.document = loaded.document;
        self.generation.send_replace(status.generation);
        Ok((status.generation, not_applied))
    }

    /// Check a policy document as a write would, applying nothing: its hash, or every
    /// error with its line and key.
    pub fn check(&self, text: &str) -> Result<String, ConfigError> {
        Ok(self.checked(text)?.document.hash.to_string())
    }

    /// The node's file with a sent document as its policy, loaded and compiled on the
    /// running state (the runtime made is dropped: a check, not a swap).
    fn checked(&self, text: &str) -> Result<Loaded, ConfigError> {
        let loaded = self.load_policy(text, Path::new(SENT_DOCUMENT))?;
        self.source.compile(&loaded, self.peek().shared.clone())?;
        Ok(loaded)
    }

    /// The node's file with `text` as its policy document.
    fn load_policy(&self, text: &str, name: &Path) -> Result<Loaded, ConfigError> {
        self.source.load(Some(Policy { text, name }))
    }
}
