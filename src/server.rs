//! Wiring: from a compiled [`Runtime`] and the command line to a running Pingora server.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use clap::Parser;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::access_log::AccessLog;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
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
}

/// Load the configuration and check it, as `-t` does.
pub fn check(cli: &Cli) -> Result<Runtime, StartError> {
    Ok(Runtime::load(&cli.conf)?)
}

/// Bind each listen address once and let it go, so that a port in use or a missing
/// address is reported before the server starts (and before it daemonizes). Pingora would
/// otherwise fail the listener inside a service thread and leave the process up without it.
pub fn check_listeners(listen: &[SocketAddr]) -> Result<(), StartError> {
    for &addr in listen {
        TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
    }
    Ok(())
}

/// Build the Pingora server for a runtime.
pub fn build(rt: Arc<Runtime>, cli: &Cli) -> Server {
    let conf = ServerConf {
        threads: rt.threads,
        pid_file: rt.pid_file.clone(),
        upgrade_sock: rt.upgrade_sock.clone(),
        daemon: cli.daemon,
        // Pingora's default grace period is five minutes; in-flight requests get 5 s here
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(5),
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
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(rt.clone()),
        "pylon",
    );
    for addr in &rt.listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    server.add_service(background_service(
        "access log writer",
        LogWriter(rt.access_log.clone()),
    ));
    let health_checks = HealthChecks::new(rt.pools());
    if !health_checks.is_empty() {
        server.add_service(background_service("health checks", health_checks));
    }
    server
}

/// Starts the access-log writer thread inside the serving process, after any daemon fork.
struct LogWriter(Arc<AccessLog>);

#[async_trait]
impl BackgroundService for LogWriter {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if let Err(e) = self.0.start_writer() {
            log::error!("access log: cannot start the writer: {e}");
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
        if let Err(e) = check_listeners(&rt.listen) {
            eprintln!("pylon: {e}");
            return 1;
        }
    }
    exit_when_a_listener_fails();
    let rt = Arc::new(rt);
    log::info!(
        "pylon: {} routes, listening on {:?}, config {}",
        rt.routes.len(),
        rt.listen,
        rt.config_path.display()
    );
    let server = build(rt.clone(), cli);
    server.run(RunArgs::default());
    rt.access_log.close();
    0
}
