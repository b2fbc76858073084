//! The command line, the start-up checks and what `-t` prints.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use clap::Parser;

use crate::control::fleet::Origin;
use crate::control::{Document, FileSource, Fleet, Policy};
use crate::runtime::Runtime;

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

/// What a start (or `-t`) loaded: where the config comes from, the runtime compiled from
/// it, its policy document, and the fleet the node follows.
pub struct Started {
    pub source: FileSource,
    pub runtime: Runtime,
    pub document: Document,
    pub fleet: Option<Fleet>,
}

/// Load the configuration and check it, as `-t` does: where it comes from, and the
/// runtime compiled from it. A fleet's node takes its policy document from the store (or,
/// when the store is away, its cache file); `-t` checks the node's own file only.
pub fn check(cli: &Cli) -> Result<Started, StartError> {
    let source = FileSource::from_env(&cli.conf);
    let own = source.load_given(None)?;
    let file = &own.file;
    let address = file
        .admin
        .as_ref()
        .map(|a| a.get_ref().listen.0)
        .or(file.metrics.as_ref().map(|m| m.get_ref().listen.0))
        .or(file.server.listen.get_ref().first().map(|l| l.0))
        .map_or_else(String::new, |a| a.to_string());
    let fleet = Fleet::from_config(file, address).map_err(|message| {
        crate::config::ConfigError::Environment {
            path: source.path().to_path_buf(),
            message: format!("control.store: {message}"),
        }
    })?;
    let Some(fleet) = fleet else {
        let runtime = source.first(&own)?;
        return Ok(Started {
            source,
            runtime,
            document: own.document,
            fleet: None,
        });
    };
    if cli.test {
        // the node's own file only: the fleet's document is checked by each write
        let runtime = source.first(&own)?;
        return Ok(Started {
            source,
            runtime,
            document: own.document,
            fleet: Some(fleet),
        });
    }
    let (fetched, origin) = fleet.first_document();
    let mut candidates = Vec::new();
    candidates.extend(fetched.map(|text| (text, origin)));
    if origin == Origin::Store {
        candidates.extend(fleet.cached().map(|text| (text, Origin::CacheFile)));
    }
    for (text, origin) in candidates {
        let policy = Policy {
            text: &text,
            name: fleet.document_name(),
        };
        let compiled = source
            .load_given(Some(policy))
            .and_then(|loaded| Ok((source.first(&loaded)?, loaded.document)));
        match compiled {
            Ok((runtime, document)) => {
                return Ok(Started {
                    source,
                    runtime,
                    document,
                    fleet: Some(fleet),
                })
            }
            Err(e) => {
                log::error!(
                    "fleet {}: the {} document does not apply on this node: {e}",
                    fleet.name(),
                    if origin == Origin::Store {
                        "store's"
                    } else {
                        "cache file's"
                    }
                );
                fleet.failed_to_apply(crate::config::content_hash(&text), e.to_string());
            }
        }
    }
    log::warn!(
        "fleet {}: starting with an empty policy document (no routes)",
        fleet.name()
    );
    let runtime = source.first(&own)?;
    Ok(Started {
        source,
        runtime,
        document: own.document,
        fleet: Some(fleet),
    })
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
    let proxies: Vec<String> = rt
        .trusted_proxies
        .nets()
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(
        out,
        "trusted proxies: {}",
        if proxies.is_empty() {
            "none".to_string()
        } else {
            proxies.join(", ")
        }
    );
    let _ = writeln!(out, "rate limit: {}", limit(rt.default_limit.as_ref()));
    if let Some(store) = &rt.store {
        let _ = writeln!(
            out,
            "rate limit store: {} (sync {:?})",
            store.url(),
            store.sync()
        );
    }
    if let Some(t) = &rt.tracing {
        let _ = match (&t.endpoint, t.propagate_only) {
            (Some(endpoint), false) => writeln!(
                out,
                "tracing: spans to {endpoint}, {}% of new traces",
                t.sampling * 100.0
            ),
            _ => writeln!(out, "tracing: the trace context only (propagate_only)"),
        };
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
