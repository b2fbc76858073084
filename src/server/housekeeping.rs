//! Everything that runs beside the proxy, on one background runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::control::Current;
use crate::server::signals::ExitWhenIdle;
use crate::telemetry::history;
use crate::tls::TicketKeys;
use crate::upstream::HealthChecks;

/// Everything that runs beside the proxy, on one background runtime (a thread) rather than
/// one each: the access-log writer, reloads on SIGHUP, the work that follows the runtime
/// in force (health checks, JWKS refreshes), the TLS ticket key rotation, the routes' history
/// for the status page, giving freed memory back, following the fleet's policy document, and
/// the exit once idle. It starts in the serving process, after any daemon fork.
pub(super) struct Housekeeping {
    pub current: Arc<Current>,
    /// A daemon's diagnostics file, reopened on SIGHUP.
    pub error_log: Option<PathBuf>,
    pub ticket_keys: Arc<TicketKeys>,
    pub exit: ExitWhenIdle,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, shutdown: ShutdownWatch) {
        if let Err(e) = self.current.peek().shared.access_log.start_writer() {
            log::error!("access log: cannot start the writer: {e}");
        }
        futures::join!(
            self.follow_runtime(shutdown.clone()),
            self.reload_on_hangup(shutdown.clone()),
            self.ticket_keys.rotate_on_schedule(shutdown.clone()),
            self.return_freed_memory(shutdown.clone()),
            self.sample_history(shutdown.clone()),
            self.exit.start(shutdown.clone()),
            self.current.follow_fleet(shutdown.clone()),
        );
    }
}

impl Housekeeping {
    /// Run the health checks, JWKS refreshes and the rate-limit store's sync of the runtime
    /// in force; after a reload,
    /// stop them and start those of the new one (instance health itself is kept, see
    /// [`crate::upstream::LiveStates`]).
    async fn follow_runtime(&self, mut shutdown: ShutdownWatch) {
        let mut generation = self.current.subscribe();
        loop {
            let rt = self.current.load();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let health_checks = HealthChecks::new(rt.pools());
            let jwks = rt.auth.fetches_jwks().then(|| rt.auth.refresher());
            let store = rt.store.clone();
            let tracing = rt.tracing.clone();
            let shared = rt.shared.clone();
            drop(rt);
            let work = async {
                let jwks = async {
                    if let Some(jwks) = &jwks {
                        jwks.start(stopped.clone()).await;
                    }
                };
                let store = async {
                    if let Some(store) = &store {
                        store.run(stopped.clone()).await;
                    }
                };
                let spans = async {
                    if let Some(tracing) = &tracing {
                        shared.spans.run(tracing, stopped.clone()).await;
                    }
                };
                futures::join!(health_checks.start(stopped.clone()), jwks, store, spans);
                // nothing left to run: wait for a reload or the end
                std::future::pending::<()>().await;
            };
            let next = tokio::select! {
                _ = work => false,
                changed = generation.changed() => changed.is_ok(),
                _ = shutdown.changed() => false,
            };
            let _ = stop.send(true);
            if !next || *shutdown.borrow() {
                return;
            }
        }
    }

    /// Every step, read each route's counters into its history (`GET /api/history`). The
    /// first reading is taken at start, so the first points come one step later.
    async fn sample_history(&self, mut shutdown: ShutdownWatch) {
        if self.current.peek().shared.history.is_none() {
            return;
        }
        let mut every = tokio::time::interval(history::STEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let rt = self.current.peek();
                    if let Some(history) = &rt.shared.history {
                        let routes = rt.routes.iter().filter_map(|r| Some((&*r.prefix, r.counters.as_deref()?)));
                        history.sample(Instant::now(), SystemTime::now(), routes);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Give freed memory back, with the workers of the process's proxy runtime.
    async fn return_freed_memory(&self, shutdown: ShutdownWatch) {
        let rt = self.current.peek();
        let (connections, workers, threads) = (
            rt.shared.connections.clone(),
            rt.shared.workers.clone(),
            rt.threads,
        );
        drop(rt);
        crate::memory::return_freed_memory(connections, workers, threads, shutdown).await;
    }

    /// SIGHUP: reopen the access log, then reload the config file.
    async fn reload_on_hangup(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot watch SIGHUP, so reloads are off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    log::info!("SIGHUP: reopening the access log and reloading the config");
                    self.current.peek().shared.access_log.reopen();
                    if let Some(path) = &self.error_log {
                        crate::server::signals::reopen_error_log(path);
                    }
                    // the outcome is logged and kept for /api/status
                    let _ = self.current.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
