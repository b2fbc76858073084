//! Wiring: from a compiled [`Runtime`] and the command line to a running Pingora server.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use clap::Parser;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::AdminApp;
use crate::edge::Edge;
use crate::gateway::Gateway;
use crate::lifecycle::{ExitWhenIdle, Signals};
use crate::reload::Current;
use crate::runtime::Runtime;
use crate::tls::{listener_settings, TicketKeys, TICKET_KEY_ROTATION};
use crate::upstream::HealthChecks;

/// Pylon, an API gateway on Pingora.
#[derive(Debug, Parser)]
#[command(name = "pylon", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long = "conf", default_value = "/etc/pylon/pylon.toml")]
    pub conf: PathBuf,
    /// Check the configuration and exit: 0 when it is valid, 1 otherwise.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Take over the listening sockets of a running instance (zero-downtime upgrade).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
}

/// Load the configuration and check it, as `-t` does.
pub fn check(cli: &Cli) -> Result<Runtime, StartError> {
    Ok(Runtime::load(&cli.conf)?)
}

/// What `-t` prints when the file is valid: what was loaded, one line per thing.
pub fn summary(rt: &Runtime) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "listen: {} (http)", list(&rt.listen));
    if let Some(tls) = &rt.tls {
        let names: Vec<&str> = tls
            .store
            .certificates()
            .iter()
            .flat_map(|c| c.names().iter().map(String::as_str))
            .collect();
        let _ = writeln!(
            out,
            "listen: {} (https, TLS {}+, certificates for {})",
            list(&tls.listen),
            tls.min_version,
            names.join(", ")
        );
    }
    if let Some(admin) = &rt.admin {
        let guard = if admin.has_token() { ", token" } else { "" };
        let _ = writeln!(out, "admin: {}{guard}", admin.listen);
    }
    let limit = |p: Option<&crate::limits::Policy>| {
        p.map_or("none".to_string(), |p| {
            format!(
                "\"{}\" {} per {} s",
                p.name(),
                p.requests(),
                p.window().as_secs()
            )
        })
    };
    let _ = writeln!(out, "rate limit: {}", limit(rt.default_limit.as_ref()));
    if let Some(store) = &rt.store {
        let _ = writeln!(
            out,
            "rate limit store: {} (sync {:?})",
            store.url(),
            store.sync()
        );
    }
    let auth: Vec<String> = rt
        .auth
        .names()
        .filter_map(|n| rt.auth.get(n))
        .map(|a| format!("{} ({})", a.name(), a.kind()))
        .collect();
    if !auth.is_empty() {
        let _ = writeln!(out, "auth: {}", auth.join(", "));
    }
    let _ = writeln!(out, "routes: {}", rt.routes.len());
    for r in &rt.routes {
        let upstreams: Vec<String> = r.pool.instances().iter().map(|i| i.url()).collect();
        let names: Vec<&str> = r.auth.iter().map(|a| a.name()).collect();
        let _ = writeln!(
            out,
            "  {} -> {} ({}); auth: {}; rate limit: {}",
            r.prefix,
            upstreams.join(", "),
            r.pool.balance_name(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
            limit(r.limit.as_ref())
        );
    }
    out
}

/// Bind each listen address once and let it go, so that a port in use or a missing
/// address is reported before the server starts (and before it daemonizes). Pingora would
/// otherwise fail the listener inside a service thread and leave the process up without it.
pub fn check_listeners(listen: &[SocketAddr]) -> Result<(), StartError> {
    for &addr in listen.iter() {
        TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
    }
    Ok(())
}

/// Build the Pingora server for the runtime in force, with the signal handling that goes
/// with it. `ticket_keys` belong to the process, not to the runtime: every TLS listener
/// shares them, housekeeping rotates them, and a reload keeps them, so that clients resume
/// their sessions across it.
pub fn build(
    current: Arc<Current>,
    cli: &Cli,
    ticket_keys: Arc<TicketKeys>,
) -> Result<(Server, RunArgs), StartError> {
    let rt = current.load();
    let error_log = daemon_error_log(&rt, cli);
    let conf = ServerConf {
        threads: rt.threads,
        pid_file: rt.pid_file.clone(),
        upgrade_sock: rt.upgrade_sock.clone(),
        daemon: cli.daemon,
        error_log: error_log.as_ref().map(|p| p.to_string_lossy().into_owned()),
        // with -d, the starting process exits only once the new one is ready to serve:
        // systemd's reload goes on to the old process only then
        daemon_wait_for_ready: true,
        daemon_ready_timeout_seconds: std::num::NonZeroU64::new(60),
        // the longest the runtimes stay up for requests in flight once the listeners
        // closed; `ExitWhenIdle` ends the process as soon as none is left
        grace_period_seconds: Some(rt.graceful_shutdown_timeout.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        // idle upstream connections kept for reuse, across all upstreams: with Pingora's
        // 128, a thousand concurrent requests reopened ~2,000 upstream connections in a
        // 6 s run instead of reusing them
        upstream_keepalive_pool_size: rt.upstream_keepalive,
        // long timeouts on tokio's timer, which forgets a wait that ended (see `memory`)
        fast_timeout_to_tokio_threshold_seconds: crate::memory::TOKIO_TIMEOUTS_ABOVE_SECONDS,
        // a daemon stays in the caller's directory, so that relative paths in the config
        // (certificates, keys, logs) mean the same at a reload as at the start
        working_directory: std::env::current_dir().ok(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // bootstrap (taking over the old process's sockets with -u) runs as a service, after
    // any daemon fork, so that it can tell the waiting parent when it starts
    let bootstrap = server.bootstrap_as_a_service();

    let mut options = HttpServerOptions::default();
    options.h2c = rt.h2c;
    let mut gateway = HttpProxy::new(Gateway::new(current.clone()), server.configuration.clone());
    gateway.server_options = Some(options);
    gateway.handle_init_modules();
    let mut proxy = Service::new("pylon".to_string(), Edge::new(gateway, current.clone()));
    for addr in &rt.listen {
        proxy.add_listener(client_listener(addr));
    }
    if let Some(tls) = &rt.tls {
        for addr in &tls.listen {
            // one settings object per listener: Pingora takes it by value
            let settings = listener_settings(
                rt.shared.certs.clone(),
                tls.min_version,
                tls.h2,
                ticket_keys.clone(),
            )
            .map_err(|e| StartError::Tls(format!("TLS listener {addr}: {e}")))?;
            proxy.add_listener(client_listener(addr).tls(settings));
        }
    }
    server.add_service(proxy).add_dependency(&bootstrap);
    if let Some(admin) = &rt.admin {
        let mut service = Service::new("admin".to_string(), AdminApp::new(current.clone()));
        service.add_tcp(&admin.listen.to_string());
        service.threads = Some(1);
        server.add_service(service).add_dependency(&bootstrap);
    }
    let exit = ExitWhenIdle::new(
        rt.shared.life.clone(),
        rt.shared.access_log.clone(),
        rt.graceful_shutdown_timeout,
        server.watch_execution_phase(),
    );
    server.add_service(background_service(
        "housekeeping",
        Housekeeping {
            current: current.clone(),
            error_log,
            ticket_keys,
            exit,
        },
    ));
    let signals = Signals {
        current,
        upgrade_sock: rt.upgrade_sock.clone(),
        exe: std::env::current_exe().ok(),
    };
    Ok((
        server,
        RunArgs {
            shutdown_signal: Box::new(signals),
        },
    ))
}

/// A client listener. Its streams get no L4 read buffer: Pingora's default is 64 KiB per
/// connection, kept for the connection's life, and was most of what an idle keep-alive
/// connection cost (issue 16). Nothing reads through it in small pieces: the edge reads
/// request heads through a buffer per thread, Pingora reads bodies 64 KiB at a time, and
/// OpenSSL reads ahead into a buffer of its own that it frees once drained (see
/// [`crate::tls`]). The write side keeps Pingora's 1,460 bytes, which join a response's head
/// and a small body into one send.
fn client_listener(addr: &SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(CLIENT_L4_BUFFERS)
}

const CLIENT_L4_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: None,
};

/// Where a daemon writes its diagnostics: `server.error_log`, or `pylon.error.log` next to
/// the pid file. A daemon lets go of its caller's stdout and stderr, so that a script that
/// captures them (`out=$(pylon -d -c F)`) is not left waiting. `None` in the foreground.
fn daemon_error_log(rt: &Runtime, cli: &Cli) -> Option<PathBuf> {
    if !cli.daemon {
        return None;
    }
    Some(match &rt.error_log {
        Some(path) => PathBuf::from(path),
        None => std::path::Path::new(&rt.pid_file).with_file_name("pylon.error.log"),
    })
}

/// Everything that runs beside the proxy, on one background runtime (a thread) rather than
/// one each: the access-log writer, reloads on SIGHUP, the work that follows the runtime
/// in force (health checks, JWKS refreshes), the TLS ticket key rotation, giving freed
/// memory back, and the exit once idle. It starts in the serving process, after any daemon fork.
struct Housekeeping {
    current: Arc<Current>,
    /// A daemon's diagnostics file, reopened on SIGHUP.
    error_log: Option<PathBuf>,
    ticket_keys: Arc<TicketKeys>,
    exit: ExitWhenIdle,
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
            self.exit.start(shutdown.clone()),
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
                futures::join!(health_checks.start(stopped.clone()), jwks, store);
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
                        crate::lifecycle::reopen_error_log(path);
                    }
                    // the outcome is logged and kept for /api/status
                    let _ = self.current.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A listener that fails to build panics inside Pingora's service thread; end the process
/// instead of serving on without it.
fn exit_when_a_listener_fails() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Failed to build listeners") {
            eprintln!("pylon: a listener could not be started; exiting");
            std::process::exit(1);
        }
    }));
}

/// Run until shut down; returns the process exit code.
pub fn run(rt: Runtime, cli: &Cli) -> i32 {
    if !cli.upgrade {
        let all: Vec<SocketAddr> = rt
            .listen
            .iter()
            .copied()
            .chain(rt.tls.iter().flat_map(|t| t.listen.iter().copied()))
            .chain(rt.admin.as_ref().map(|a| a.listen))
            .collect();
        if let Err(e) = check_listeners(&all) {
            eprintln!("pylon: {e}");
            return 1;
        }
    }
    exit_when_a_listener_fails();
    if cli.daemon && rt.access_log.0 == "-" {
        log::warn!(
            "access_log.path = \"-\" with -d: a daemon has no stdout, so the access log goes nowhere; set a file"
        );
    }
    if cli.daemon {
        if let Err(e) = crate::lifecycle::catch_early_readiness_signal() {
            log::warn!("cannot guard the daemon's readiness signal: {e}");
        }
    }
    ignore_hangup_until_watched();
    log::info!(
        "pylon: {} routes, listening on {:?}, config {}",
        rt.routes.len(),
        rt.listen,
        rt.config_path.display()
    );
    // Once per process (a reload keeps them); made before any daemon fork, rotated after it.
    let ticket_keys = match TicketKeys::new(TICKET_KEY_ROTATION) {
        Ok(keys) => Arc::new(keys),
        Err(e) => {
            eprintln!("pylon: {e}");
            return 1;
        }
    };
    let current = Current::new(rt);
    let (server, run_args) = match build(current.clone(), cli, ticket_keys) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("pylon: {e}");
            return 1;
        }
    };
    server.run(run_args);
    current.peek().shared.access_log.close();
    0
}

/// SIGHUP ends a process by default: ignore it until the housekeeping task watches it (a
/// reload sent while the gateway starts is lost, not fatal).
fn ignore_hangup_until_watched() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code and is
    // valid at any time; tokio replaces it with its own handler when it starts watching.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}
