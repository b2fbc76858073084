//! Wiring: from a compiled [`Runtime`] and the command line to a running Pingora server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::edge::Edge;
use crate::gateway::Gateway;
use crate::server::signals::{ExitWhenIdle, Signals};

mod cli;
mod housekeeping;
pub mod signals;

use crate::control::Current;
use crate::runtime::Runtime;
use crate::tls::{listener_settings, TicketKeys, TICKET_KEY_ROTATION};
pub use cli::{check, check_listeners, summary, Cli, StartError, Started};
use housekeeping::Housekeeping;

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
    let mut gateway = HttpProxy::new(
        Gateway::new(current.clone(), &server.configuration),
        server.configuration.clone(),
    );
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
pub fn run(started: Started, cli: &Cli) -> i32 {
    let Started {
        source,
        runtime: rt,
        document,
        fleet,
    } = started;
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
        if let Err(e) = crate::server::signals::catch_early_readiness_signal() {
            log::warn!("cannot guard the daemon's readiness signal: {e}");
        }
    }
    ignore_hangup_until_watched();
    log::info!(
        "pylon: {} routes, listening on {:?}, config {}",
        rt.routes.len(),
        rt.listen,
        source.path().display()
    );
    // Once per process (a reload keeps them); made before any daemon fork, rotated after it.
    let ticket_keys = match TicketKeys::new(TICKET_KEY_ROTATION) {
        Ok(keys) => Arc::new(keys),
        Err(e) => {
            eprintln!("pylon: {e}");
            return 1;
        }
    };
    let current = Current::new(rt, source, document, fleet);
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
