//! The compiled form of the configuration: everything a request needs, decided at start.
//!
//! [`Runtime::from_config`] turns the file's structs into a route table, limiter policies and
//! ready-made header values. It is never deserialised; the phases in the gateway only
//! look things up in it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Authenticator, Authenticators};
use crate::cache::RouteCache;
use crate::config::{ConfigError, FileConfig, LocatedError, RouteRateLimit, TopRateLimit};
use crate::forwarding::TrustedProxies;
use crate::limits::caps::{InFlightCap, RouteRate};
use crate::limits::{Policy, PolicyBuilder, Store};
use crate::policy::{Cors, SecurityHeaders};
use crate::router::Router;
use crate::telemetry::trace::Tracing;
use crate::upstream::{Pool, Timeouts};

mod route;
mod settings;
mod shared;

pub use route::Route;
use route::{compile_policies, compile_pool};
use settings::compile_tls;
pub use settings::{AdminSettings, ClientTimeouts, Pinned, TlsListeners, LINGERING_QUIET};
pub use shared::Shared;
use shared::{cache_memory, max_clients, threads};

const DEFAULT_CONNECT: Duration = Duration::from_secs(2);
const DEFAULT_READ: Duration = Duration::from_secs(15);
const DEFAULT_WEBSOCKET_IDLE: Duration = Duration::from_secs(3600);
const DEFAULT_UPSTREAM_IDLE: Option<Duration> = Some(Duration::from_secs(60));
const DEFAULT_CLIENT_HEADER: Duration = Duration::from_secs(10);
const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(60);
/// nginx's `lingering_time`.
const DEFAULT_LINGERING: Duration = Duration::from_secs(30);

/// Everything the gateway needs at run time.
pub struct Runtime {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub routes: Vec<Route>,
    /// Prefix -> index into `routes`.
    pub router: Router<usize>,
    /// The `[rate_limit]` policy, also applied to requests that match no route.
    pub default_limit: Option<Policy>,
    /// The shared store every policy counts in, with `rate_limit.store`.
    pub store: Option<Arc<Store>>,
    /// `[tracing]`: trace context, sampling, where spans go.
    pub tracing: Option<Arc<Tracing>>,
    /// `[cache] memory`: the response cache's budget.
    pub cache_memory: u64,
    /// `rate_limit.max_clients`, applied to the shared limiter when this runtime activates.
    max_clients: usize,
    /// IPv6 clients are counted by this prefix of their address.
    pub ipv6_prefix: u8,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    /// How long a client may take to send a head, and stay idle between requests.
    pub client: ClientTimeouts,
    /// Client connections held at most; more are closed at once.
    pub max_connections: usize,
    pub error_log: Option<String>,
    /// The admin listener (metrics, health, status); `None` without `[admin]`.
    pub admin: Option<AdminSettings>,
    /// With `redirect_http`, the port plain requests are redirected to.
    pub redirect_http: Option<u16>,
    /// Cleartext HTTP/2 on the plain listeners.
    pub h2c: bool,
    /// Idle upstream connections kept for reuse.
    pub upstream_keepalive: usize,
    /// Requests one client connection carries before it is closed.
    pub keepalive_requests: u32,
    /// TLS listeners and their certificates; `None` without `[tls]`.
    pub tls: Option<TlsListeners>,
    pub auth: Authenticators,
    pub trusted_proxies: TrustedProxies,
    pub security: SecurityHeaders,
    pub cors: Cors,
    /// `access_log.path` and `format`: fixed at start, the log belongs to [`Shared`].
    pub access_log: (String, crate::config::LogFormat),
    /// The state this runtime shares with those before and after it.
    pub shared: Arc<Shared>,
}

impl Runtime {
    /// Compile a loaded config. `port_override` is the PORT environment variable, which
    /// replaces the port of the first listener.
    pub fn from_config(
        file: &FileConfig,
        port_override: Option<&str>,
        shared: Arc<Shared>,
    ) -> Result<Runtime, ConfigError> {
        let env_error = |message: String| ConfigError::Environment {
            path: file.policy_path().to_path_buf(),
            message,
        };
        // each compiler takes its own section and says which value is wrong; here, once,
        // that becomes the file, line and column
        let locate = |e: LocatedError| file.locate(e);

        let mut listen: Vec<SocketAddr> =
            file.server.listen.get_ref().iter().map(|l| l.0).collect();
        if let Some(port) = port_override {
            let port: u16 = port.trim().parse().map_err(|_| ConfigError::Environment {
                path: file.source.path.clone(),
                message: format!("the PORT environment variable ({port:?}) is not a port number"),
            })?;
            match listen.first_mut() {
                Some(first) => first.set_port(port),
                None => listen.push(SocketAddr::from(([0, 0, 0, 0], port))),
            }
        }
        if listen.is_empty() {
            return Err(locate(LocatedError::new(
                file.server.listen.span(),
                "server.listen",
                "the list is empty: the gateway needs at least one listener, like [\"0.0.0.0:5000\"]",
            )));
        }
        let client = ClientTimeouts::from_config(&file.timeouts, &file.server).map_err(locate)?;

        let base = Timeouts::resolve(
            &file.timeouts.upstream(),
            Timeouts {
                connect: DEFAULT_CONNECT,
                read: DEFAULT_READ,
                write: DEFAULT_READ,
                websocket_idle: DEFAULT_WEBSOCKET_IDLE,
                upstream_idle: DEFAULT_UPSTREAM_IDLE,
            },
        );

        let store = compile_store(file.rate_limit.as_ref(), &shared).map_err(locate)?;
        let mut policies = PolicyBuilder::on(shared.limiter.clone()).with_store(store.clone());
        let default_limit = file
            .rate_limit
            .as_ref()
            .map(|p| policies.policy("default", p.requests.0, p.window.0));
        let ipv6_prefix = file.rate_limit.as_ref().map_or(64, |p| p.ipv6_prefix.0);

        let auth = Authenticators::from_config(&file.auth).map_err(locate)?;
        let security = SecurityHeaders::from_config(&file.security_headers).map_err(env_error)?;
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.iter().enumerate() {
            let prefix: Arc<str> = Arc::from(r.prefix.get_ref().0.as_str());
            let policies_of = compile_policies(i, r, &security).map_err(locate)?;
            let limit = match r.rate_limit {
                None | Some(RouteRateLimit::Default) => default_limit.clone(),
                Some(RouteRateLimit::Off) => None,
                Some(RouteRateLimit::Own(p)) => {
                    Some(policies.policy(&prefix, p.requests.0, p.window.0))
                }
            };
            let pool = compile_pool(r, &shared.live)
                .map_err(|m| env_error(format!("routes \"{prefix}\": {m}")))?;
            let chain: Vec<Arc<Authenticator>> = r
                .auth
                .iter()
                .flat_map(|names| names.get_ref().0.iter())
                .filter_map(|name| auth.get(name))
                .collect();
            let mut auth_headers: Vec<http::HeaderName> = Vec::new();
            for name in chain.iter().flat_map(|a| a.forwarded_header_names()) {
                if !auth_headers.contains(name) {
                    auth_headers.push(name.clone());
                }
            }
            let cache = r
                .cache
                .as_ref()
                .map(|c| RouteCache::from_config(c.get_ref(), shared.cache.route_counts(&prefix)));
            routes.push(Route {
                in_flight: r.max_in_flight.map(|n| InFlightCap::new(n.0)),
                route_rate: r
                    .route_rate
                    .map(|p| RouteRate::new(p.requests.0, p.window.0)),
                counters: shared.metrics.as_ref().map(|m| m.route(&prefix)),
                prefix,
                pool: Arc::new(pool),
                strip_prefix: r.strip_prefix,
                preserve_host: r.preserve_host,
                http2: r.http2,
                allow_trace: r.allow_trace,
                underscores_in_headers: r.underscores_in_headers,
                timeouts: Timeouts::resolve(&r.timeouts, base),
                limit,
                auth: chain,
                auth_headers,
                max_body: r.max_body.unwrap_or(file.limits.max_body).0,
                methods: policies_of.methods,
                access: policies_of.access,
                request_headers: policies_of.request_headers,
                response_headers: policies_of.response_headers,
                cache,
            });
        }
        let router = Router::new(
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.prefix.to_string(), i)),
        );

        let trusted_proxies = TrustedProxies::new(file.server.trusted_proxies.iter().map(|c| c.0));
        for net in trusted_proxies.everyone() {
            log::warn!(
                "server.trusted_proxies holds {net}: every client is then a trusted proxy and may set its own address in X-Forwarded-For"
            );
        }
        let tls = compile_tls(file.tls.as_ref()).map_err(locate)?;
        let tracing = match &file.tracing {
            Some(section) => Some(Arc::new(
                Tracing::from_config(section.get_ref(), section.span()).map_err(locate)?,
            )),
            None => None,
        };
        let admin = AdminSettings::from_config(file.admin.as_ref(), file.metrics.as_ref())
            .map_err(locate)?;
        let threads = threads(file);
        Ok(Runtime {
            listen,
            threads,
            pid_file: file.server.pid_file.clone(),
            upgrade_sock: file.server.upgrade_sock.clone(),
            routes,
            router,
            default_limit,
            store,
            tracing,
            cache_memory: cache_memory(file),
            max_clients: max_clients(file),
            ipv6_prefix,
            grace_period: file.server.grace_period.0,
            graceful_shutdown_timeout: file.server.graceful_shutdown_timeout.0,
            client,
            max_connections: file.server.max_connections.0,
            error_log: file.server.error_log.clone(),
            admin,
            redirect_http: file
                .tls
                .as_ref()
                .filter(|t| t.redirect_http)
                .and_then(|t| t.listen.first())
                .map(|l| l.0.port()),
            h2c: file.server.h2c,
            upstream_keepalive: file.server.upstream_keepalive.0,
            keepalive_requests: file.server.keepalive_requests.0,
            tls,
            auth,
            trusted_proxies,
            security,
            cors: Cors::from_config(&file.cors).map_err(env_error)?,
            access_log: (
                file.access_log.path.get_ref().clone(),
                file.access_log.format,
            ),
            shared,
        })
    }

    /// Every route's pool, for the health checks.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.routes.iter().map(|r| r.pool.clone()).collect()
    }

    /// What of this runtime a reload cannot change.
    pub fn pinned(&self) -> Pinned {
        Pinned {
            listen: self.listen.clone(),
            tls_listen: self
                .tls
                .iter()
                .flat_map(|t| t.listen.iter().copied())
                .collect(),
            tls_min_version: self.tls.as_ref().map(|t| t.min_version),
            tls_h2: self.tls.as_ref().map(|t| t.h2),
            admin_listen: self.admin.as_ref().map(|a| a.listen),
            threads: self.threads,
            pid_file: self.pid_file.clone(),
            upgrade_sock: self.upgrade_sock.clone(),
            error_log: self.error_log.clone(),
            h2c: self.h2c,
            upstream_keepalive: self.upstream_keepalive,
            access_log: self.access_log.clone(),
        }
    }

    /// Make this runtime the one in force: its limits, certificates and fetched keys take
    /// over from `previous` (the runtime it replaces, if any).
    pub fn activate(&self, previous: Option<&Runtime>) {
        self.shared.limiter.set_max_clients(self.max_clients);
        self.shared.cache.set_memory(self.cache_memory);
        if let Some(tls) = &self.tls {
            self.shared.certs.store(Some(tls.store.clone()));
        }
        if let Some(previous) = previous {
            self.auth.adopt_keys(&previous.auth);
        }
    }
}

/// `rate_limit.store`: the shared store of this config (the running one when a reload
/// names the same), or none.
fn compile_store(
    section: Option<&TopRateLimit>,
    shared: &Shared,
) -> Result<Option<Arc<Store>>, LocatedError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let Some(spec) = &section.store else {
        return Ok(None);
    };
    shared
        .stores
        .get(
            spec.get_ref(),
            section.sync.0,
            section.store_timeout.0,
            section.max_clients.0,
        )
        .map(Some)
        .map_err(|m| LocatedError::new(spec.span(), "rate_limit.store", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::ConfigError;

    use crate::config;

    fn compile(text: &str, port: Option<&str>) -> Result<Runtime, ConfigError> {
        let path = Path::new("t.toml");
        let file = config::parse(path, &format!("[access_log]\npath = \"off\"\n{text}")).unwrap();
        let shared = Arc::new(Shared::from_config(&file).unwrap());
        Runtime::from_config(&file, port, shared)
    }

    #[test]
    fn port_replaces_the_first_listener_only() {
        let rt = compile(
            "[server]\nlisten = [\"127.0.0.1:5000\", \"127.0.0.1:5001\"]\n",
            Some("8080"),
        )
        .unwrap();
        assert_eq!(rt.listen[0], "127.0.0.1:8080".parse().unwrap());
        assert_eq!(rt.listen[1], "127.0.0.1:5001".parse().unwrap());
        let e = compile("", Some("http")).err().unwrap().to_string();
        assert!(e.contains("PORT"), "{e}");
    }

    #[test]
    fn route_timeouts_override_the_defaults() {
        let rt = compile(
            "[timeouts]\nconnect = \"1s\"\n[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\ntimeouts = { read = \"30s\" }\n[[routes]]\nprefix = \"/b\"\nupstreams = [\"127.0.0.1:1\"]\n",
            None,
        )
        .unwrap();
        let a = &rt.routes[0].timeouts;
        assert_eq!(
            (a.connect, a.read, a.write),
            (
                Duration::from_secs(1),
                Duration::from_secs(30),
                Duration::from_secs(30)
            )
        );
        let b = &rt.routes[1].timeouts;
        assert_eq!(
            (b.connect, b.read, b.write),
            (Duration::from_secs(1), DEFAULT_READ, DEFAULT_READ)
        );
    }

    #[test]
    fn routes_share_the_default_policy_or_have_their_own() {
        let rt = compile(
            "[rate_limit]\nrequests = 20\nwindow = \"1m\"\n[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\n[[routes]]\nprefix = \"/b\"\nupstreams = [\"127.0.0.1:1\"]\nrate_limit = false\n[[routes]]\nprefix = \"/c\"\nupstreams = [\"127.0.0.1:1\"]\nrate_limit = { requests = 5, window = \"10s\" }\n",
            None,
        )
        .unwrap();
        assert_eq!(rt.routes[0].limit.as_ref().unwrap().name(), "default");
        assert!(rt.routes[1].limit.is_none());
        let c = rt.routes[2].limit.as_ref().unwrap();
        assert_eq!(c.policy_header, "\"/c\";q=5;w=10");
        assert_eq!(rt.router.lookup("/c/x").map(|m| *m.value), Some(2));
    }
}
