//! Wiring: from a compiled [`Runtime`] and the command line to a running Pingora server.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use clap::Parser;
use pingora::apps::HttpServerOptions;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::auth::JwksRefresher;
use crate::edge::Edge;
use crate::gateway::Gateway;
use crate::lifecycle::{ExitWhenIdle, Signals};
use crate::metrics::MetricsApp;
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

/// Bind each listen address once and let it go, so that a port in use or a missing
/// address is reported before the server starts (and before it daemonizes). Pingora would
/// otherwise fail the listener inside a service thread and leave the process up without it.
pub fn check_listeners(listen: &[SocketAddr]) -> Result<(), StartError> {
    for &addr in listen.iter() {
        TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
    }
    Ok(())
}

/// Build the Pingora server for a runtime, with the signal handling that goes with it.
/// `ticket_keys` belong to the process, not to the runtime: every TLS listener shares them,
/// housekeeping rotates them, and a rebuild from a new configuration keeps them, so that
/// clients resume their sessions across it.
pub fn build(
    rt: Arc<Runtime>,
    cli: &Cli,
    ticket_keys: Arc<TicketKeys>,
) -> Result<(Server, RunArgs), StartError> {
    let conf = ServerConf {
        threads: rt.threads,
        pid_file: rt.pid_file.clone(),
        upgrade_sock: rt.upgrade_sock.clone(),
        daemon: cli.daemon,
        error_log: rt.error_log.clone(),
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
    let mut gateway = HttpProxy::new(Gateway::new(rt.clone()), server.configuration.clone());
    gateway.server_options = Some(options);
    gateway.handle_init_modules();
    let mut proxy = Service::new("pylon".to_string(), Edge::new(gateway, rt.clone()));
    for addr in &rt.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(tls) = &rt.tls {
        for addr in &tls.listen {
            // one settings object per listener: Pingora takes it by value
            let settings = listener_settings(
                tls.store.clone(),
                tls.min_version,
                tls.h2,
                ticket_keys.clone(),
            )
            .map_err(|e| StartError::Tls(format!("TLS listener {addr}: {e}")))?;
            proxy.add_tls_with_settings(&addr.to_string(), None, settings);
        }
    }
    server.add_service(proxy).add_dependency(&bootstrap);
    if let Some(addr) = rt.metrics_listen {
        let mut metrics = Service::new("metrics".to_string(), MetricsApp::new(rt.clone()));
        metrics.add_tcp(&addr.to_string());
        metrics.threads = Some(1);
        server.add_service(metrics).add_dependency(&bootstrap);
    }
    let exit = ExitWhenIdle::new(
        rt.life.clone(),
        rt.access_log.clone(),
        rt.graceful_shutdown_timeout,
        server.watch_execution_phase(),
    );
    let health_checks = HealthChecks::new(rt.pools());
    let jwks = rt.auth.fetches_jwks().then(|| rt.auth.refresher());
    server.add_service(background_service(
        "housekeeping",
        Housekeeping {
            access_log: rt.access_log.clone(),
            health_checks,
            jwks,
            ticket_keys,
            exit,
        },
    ));
    let signals = Signals {
        life: rt.life.clone(),
        grace_period: rt.grace_period,
        upgrade_sock: rt.upgrade_sock.clone(),
    };
    Ok((
        server,
        RunArgs {
            shutdown_signal: Box::new(signals),
        },
    ))
}

/// Everything that runs beside the proxy, on one background runtime (a thread) rather than
/// one each: the access-log writer, health checks, JWKS refreshes, the TLS ticket key
/// rotation, and the exit once idle. It starts in the serving process, after any daemon
/// fork.
struct Housekeeping {
    access_log: Arc<AccessLog>,
    health_checks: HealthChecks,
    jwks: Option<JwksRefresher>,
    ticket_keys: Arc<TicketKeys>,
    exit: ExitWhenIdle,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, shutdown: ShutdownWatch) {
        if let Err(e) = self.access_log.start_writer() {
            log::error!("access log: cannot start the writer: {e}");
        }
        let jwks = async {
            if let Some(jwks) = &self.jwks {
                jwks.start(shutdown.clone()).await;
            }
        };
        futures::join!(
            self.health_checks.start(shutdown.clone()),
            jwks,
            self.ticket_keys.rotate_on_schedule(shutdown.clone()),
            self.exit.start(shutdown.clone()),
        );
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
            .chain(rt.metrics_listen)
            .collect();
        if let Err(e) = check_listeners(&all) {
            eprintln!("pylon: {e}");
            return 1;
        }
    }
    exit_when_a_listener_fails();
    if cli.daemon {
        if let Err(e) = crate::lifecycle::catch_early_readiness_signal() {
            log::warn!("cannot guard the daemon's readiness signal: {e}");
        }
    }
    let rt = Arc::new(rt);
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
    let (server, run_args) = match build(rt.clone(), cli, ticket_keys) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("pylon: {e}");
            return 1;
        }
    };
    server.run(run_args);
    rt.access_log.close();
    0
}
