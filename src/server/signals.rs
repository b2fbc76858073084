//! How a running gateway hands over and ends: signals, draining, and the exit.
//!
//! - SIGHUP: reload the config in place and reopen the log files (see [`crate::control`]).
//! - SIGUSR2 (a binary upgrade started by the running process): it starts its own binary,
//!   from the path it was started by, as `pylon -u -d -c CONFIG`, and once that process
//!   waits for the sockets goes on as for SIGQUIT. The new process is this one's child, so
//!   it stays in the same service (a systemd unit's cgroup).
//! - SIGQUIT (an upgrade, `pylon -u` waiting for the sockets): Pylon first checks that a new
//!   process is listening on the upgrade socket. If none shows up within 15 s the signal is
//!   ignored and this process keeps serving, so a new process that died on start never
//!   costs the listeners. Otherwise the sockets are handed over and this process drains.
//! - SIGTERM: this process drains for `grace_period` while still accepting, then stops
//!   listening.
//! - Draining: every response carries `Connection: close`, so keep-alive clients move to the
//!   new process (or away) between requests instead of being cut off.
//! - After the listeners close, requests in flight get up to `graceful_shutdown_timeout`;
//!   the process exits 0 as soon as none is left.
//! - SIGINT: immediate exit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

use crate::telemetry::access_log::AccessLog;
use crate::traffic::Lifecycle;

/// How long SIGQUIT waits for a new process to listen on the upgrade socket.
const UPGRADE_WAIT: Duration = Duration::from_secs(15);
/// Pylon's answer to Pingora's signal handling (see the module docs).
pub struct Signals {
    /// The runtime in force: `server.grace_period` is read from it when SIGTERM comes.
    pub current: Arc<crate::control::Current>,
    pub upgrade_sock: String,
    /// This binary's path, taken at start (an install may replace the file later).
    pub exe: Option<PathBuf>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut usr2)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined2()),
        ) else {
            log::error!("cannot watch signals; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = usr2.recv() => {
                    if self.start_new_process().await
                        && wait_for_listener(&self.upgrade_sock, UPGRADE_WAIT).await
                    {
                        log::info!("SIGUSR2: handing the listening sockets to the new process");
                        self.current.peek().shared.life.start_draining();
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    log::error!("SIGUSR2: the upgrade did not start; serving on");
                }
                _ = quit.recv() => {
                    if wait_for_listener(&self.upgrade_sock, UPGRADE_WAIT).await {
                        log::info!("SIGQUIT: handing the listening sockets to the new process");
                        self.current.peek().shared.life.start_draining();
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    log::error!(
                        "SIGQUIT: no new process is listening on {} after {:?}; keeping the sockets and serving on",
                        self.upgrade_sock,
                        UPGRADE_WAIT
                    );
                }
                _ = term.recv() => {
                    let (grace_period, life) = {
                        let rt = self.current.peek();
                        (rt.grace_period, rt.shared.life.clone())
                    };
                    log::info!("SIGTERM: draining for {grace_period:?}, then stopping");
                    life.start_draining();
                    tokio::select! {
                        _ = tokio::time::sleep(grace_period) => {}
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    }
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

impl Signals {
    /// Start `pylon -u -d -c CONFIG` from this binary's path and wait for it to return
    /// (it does once it waits for the sockets); true when it did so successfully.
    async fn start_new_process(&self) -> bool {
        let Some(exe) = &self.exe else {
            log::error!("SIGUSR2: this binary's path is unknown");
            return false;
        };
        let config = self.current.source().path().to_path_buf();
        log::info!(
            "SIGUSR2: starting {} -u -d -c {}",
            exe.display(),
            config.display()
        );
        let status = tokio::process::Command::new(exe)
            .arg("-u")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .status()
            .await;
        match status {
            Ok(s) if s.success() => true,
            Ok(s) => {
                log::error!("SIGUSR2: the new process exited with {s}");
                false
            }
            Err(e) => {
                log::error!("SIGUSR2: cannot start {}: {e}", exe.display());
                false
            }
        }
    }
}

/// Wait until a process listens on the Unix socket at `path` (seen in /proc/net/unix, so
/// nothing connects to it: the new process expects exactly one connection, the handoff).
async fn wait_for_listener(path: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if unix_socket_is_listening(path) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Is a listening Unix socket bound at `path`?
pub fn unix_socket_is_listening(path: &str) -> bool {
    const ACCEPTCON: u32 = 0x0001_0000; // __SO_ACCEPTCON: the socket listens
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        f.len() >= 8
            && f[7] == path
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & ACCEPTCON != 0)
    })
}

/// Ends the process once the listeners are closed and no request is left in flight (or
/// `graceful_shutdown_timeout` has passed), after writing out the access log.
///
/// Runs as a background service so that it lives in the serving process, after any
/// daemon fork.
pub struct ExitWhenIdle {
    pub life: Arc<Lifecycle>,
    pub access_log: Arc<AccessLog>,
    pub timeout: Duration,
    phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl ExitWhenIdle {
    pub fn new(
        life: Arc<Lifecycle>,
        access_log: Arc<AccessLog>,
        timeout: Duration,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> ExitWhenIdle {
        ExitWhenIdle {
            life,
            access_log,
            timeout,
            phases: std::sync::Mutex::new(Some(phases)),
        }
    }
}

#[async_trait]
impl BackgroundService for ExitWhenIdle {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            match phases.recv().await {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(ExecutionPhase::Terminated) | Err(broadcast::error::RecvError::Closed) => return,
                _ => {}
            }
        }
        let deadline = Instant::now() + self.timeout;
        while self.life.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let left = self.life.in_flight();
        if left > 0 {
            log::warn!(
                "{left} requests still in flight after {:?}; exiting",
                self.timeout
            );
        } else {
            log::info!("no request in flight; exiting");
        }
        self.access_log.close();
        std::process::exit(0);
    }
}

/// Set when this process received SIGUSR1 before anyone was waiting for it.
static EARLY_READY: AtomicBool = AtomicBool::new(false);

/// Make `-d`'s wait for the daemon's readiness reliable.
///
/// With `daemon_wait_for_ready`, Pingora's parent process registers its SIGUSR1 listener
/// only after the fork, while the daemon may already send SIGUSR1 by then: SIGUSR1's
/// default action would kill the parent (and fail the start or the reload). Before the
/// fork this installs a handler that only notes the early signal, and a thread (which
/// stays in the parent: a fork copies only the forking thread) that raises SIGUSR1 again
/// every 50ms once one was noted, until Pingora's listener takes it and the parent exits.
pub fn catch_early_readiness_signal() -> std::io::Result<()> {
    // SAFETY: the action only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal_hook_registry::register(libc::SIGUSR1, || {
            EARLY_READY.store(true, Ordering::SeqCst);
        })?;
    }
    std::thread::Builder::new()
        .name("pylon-ready-relay".into())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_millis(50));
            if EARLY_READY.load(Ordering::SeqCst) {
                // SAFETY: kill(2) on our own pid with a signal we handle.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGUSR1);
                }
            }
        })?;
    Ok(())
}

/// Point stderr (the daemon's diagnostics) at `path` again, after logrotate moved the file.
pub fn reopen_error_log(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // SAFETY: dup2 onto fd 2 with a descriptor that stays open for the call; the
        // file's own descriptor is closed when `file` drops, fd 2 keeps the file open.
        Ok(file) => unsafe {
            libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO);
        },
        Err(e) => log::error!("cannot reopen the error log {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_unix_socket_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let text = path.to_str().unwrap().to_string();
        assert!(!unix_socket_is_listening(&text));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(unix_socket_is_listening(&text));
        drop(listener);
        assert!(!unix_socket_is_listening(&text));
    }
}
