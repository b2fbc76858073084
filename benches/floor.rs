//! The floor: a bare Pingora proxy that does nothing but pick its one upstream, built with
//! Pylon's allocator setup and release profile. What it costs per request is what the
//! engine costs; what Pylon costs above it is Pylon's own work (issue 14). The benchmarks
//! run it beside Pylon and nginx (`benches/instructions.sh`, `benches/load.py`,
//! `benches/idle_connections.py`).
//!
//! ```text
//! pylon-floor --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--threads 1]
//!             [--tls-listen 127.0.0.1:8443 --cert cert.pem --key key.pem]
//! ```
//!
//! Its server settings are the ones Pylon would use for the same job (threads, the
//! upstream keep-alive pool, which timer long timeouts run on); its listeners are Pingora's
//! defaults (TLS: the intermediate profile, with HTTP/2 offered).

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[used]
#[link_section = ".init_array"]
static MIMALLOC_LAZY_COMMIT: extern "C" fn() = pylon::memory::mimalloc_lazy_commit;

#[derive(Parser)]
struct Args {
    /// plain HTTP listener
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TLS listener (needs --cert and --key)
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// the one upstream every request goes to
    #[arg(long)]
    upstream: SocketAddr,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// idle upstream connections kept for reuse (Pylon's default)
    #[arg(long, default_value_t = 1024)]
    upstream_keepalive: usize,
}

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    if !pylon::memory::openssl_uses_mimalloc() {
        eprintln!("pylon-floor: OpenSSL had allocated before its allocator could be set");
    }
    let args = Args::parse();
    if args.listen.is_none() && args.tls_listen.is_none() {
        eprintln!("pylon-floor: give --listen, --tls-listen or both");
        std::process::exit(2);
    }
    let conf = ServerConf {
        threads: args.threads,
        upstream_keepalive_pool_size: args.upstream_keepalive,
        fast_timeout_to_tokio_threshold_seconds: pylon::memory::TOKIO_TIMEOUTS_ABOVE_SECONDS,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: false,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let mut proxy = http_proxy_service(
        &server.configuration,
        Floor {
            upstream: args.upstream,
        },
    );
    if let Some(addr) = args.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(addr) = args.tls_listen {
        let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
            eprintln!("pylon-floor: --tls-listen needs --cert and --key");
            std::process::exit(2);
        };
        // Pingora's intermediate profile, with HTTP/2 offered by ALPN as Pylon's `h2` does
        let mut tls = match TlsSettings::intermediate(cert, key) {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("pylon-floor: TLS listener {addr}: {e}");
                std::process::exit(1);
            }
        };
        tls.enable_h2();
        proxy.add_tls_with_settings(&addr.to_string(), None, tls);
    }
    server.add_service(proxy);
    server.run_forever();
}
