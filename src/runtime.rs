//! The compiled form of the configuration: everything a request needs, decided at start.
//!
//! [`Runtime::from_config`] turns the file's structs into a route table, limiter policies and
//! ready-made header values. It is never deserialised; the phases in [`crate::gateway`] only
//! look things up in it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

use crate::access_log::AccessLog;
use crate::admin::AdminSettings;
use crate::auth::{Authenticator, Authenticators};
use crate::config::{
    BalanceKind, ConfigError, FileConfig, HashKeySpec, RouteRateLimit, RouteSection,
    TimeoutsSection,
};
use crate::edge::Connections;
use crate::forwarding::TrustedProxies;
use crate::headers::{static_name, Cors, SecurityHeaders};
use crate::lifecycle::Lifecycle;
use crate::limits::caps::{InFlightCap, RouteRate};
use crate::limits::{Limiter, Policy, PolicyBuilder, Store, Stores, DEFAULT_MAX_CLIENTS};
use crate::metrics::{Metrics, RouteCounters};
use crate::policy::{Access, IpSet, Methods, Op, Transform};
use crate::router::Router;
use crate::tls::{CertStore, CertificateSpec, MinVersion};
use crate::upstream::{
    Balance, HashKey, HealthCheckSpec, InstanceSpec, LiveStates, PassiveSpec, Pool, TlsSpec,
};

const DEFAULT_CONNECT: Duration = Duration::from_secs(2);
const DEFAULT_READ: Duration = Duration::from_secs(15);
const DEFAULT_WEBSOCKET_IDLE: Duration = Duration::from_secs(3600);
const DEFAULT_UPSTREAM_IDLE: Option<Duration> = Some(Duration::from_secs(60));
const DEFAULT_CLIENT_HEADER: Duration = Duration::from_secs(10);
const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(60);

/// Upstream timeouts of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// Silence allowed on an upgraded (WebSocket) connection, both ways.
    pub websocket_idle: Duration,
    /// How long an idle upstream connection stays in the pool; `None`: until the upstream
    /// closes it or the pool evicts it (then no timer is armed for each pooled connection).
    pub upstream_idle: Option<Duration>,
}

impl Timeouts {
    fn resolve(over: &TimeoutsSection, base: Timeouts) -> Timeouts {
        let read = over.read.map_or(base.read, |d| d.0);
        Timeouts {
            connect: over.connect.map_or(base.connect, |d| d.0),
            read,
            // a route that only raises `read` expects writes to get as long
            write: over.write.map_or(
                if over.read.is_some() {
                    read
                } else {
                    base.write
                },
                |d| d.0,
            ),
            websocket_idle: over.websocket_idle.map_or(base.websocket_idle, |d| d.0),
            upstream_idle: over.upstream_idle.map_or(base.upstream_idle, |d| d.0),
        }
    }
}

/// The client side's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// The whole request head must arrive within this.
    pub header: Duration,
    /// A keep-alive connection waits this long for its next request.
    pub idle: Duration,
}

impl ClientTimeouts {
    fn from_config(file: &FileConfig) -> Result<ClientTimeouts, ConfigError> {
        let idle = match (file.timeouts.client_idle, &file.server.keepalive_timeout) {
            (Some(_), Some(old)) => {
                return Err(file.error_at(
                    old.span(),
                    "server.keepalive_timeout".into(),
                    "set both here and as timeouts.client_idle: keep timeouts.client_idle, the newer name"
                        .into(),
                ))
            }
            (Some(t), None) => t.0,
            (None, Some(old)) => old.get_ref().0,
            (None, None) => DEFAULT_CLIENT_IDLE,
        };
        Ok(ClientTimeouts {
            header: file
                .timeouts
                .client_header
                .map_or(DEFAULT_CLIENT_HEADER, |t| t.0),
            idle,
        })
    }
}

/// One route, compiled.
#[derive(Debug)]
pub struct Route {
    pub prefix: Arc<str>,
    /// Its counters in the metrics; `None` when metrics are off.
    pub counters: Option<Arc<RouteCounters>>,
    pub pool: Arc<Pool>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    /// Speak HTTP/2 to the upstream.
    pub http2: bool,
    /// TRACE is proxied (otherwise 405).
    pub allow_trace: bool,
    pub timeouts: Timeouts,
    /// `None`: not limited.
    pub limit: Option<Policy>,
    /// `max_in_flight`: requests one client may have in flight here at once.
    pub in_flight: Option<InFlightCap>,
    /// `route_rate`: the route's requests from all clients together per window.
    pub route_rate: Option<RouteRate>,
    /// Authenticators in order: the first that accepts admits. Empty: no authentication.
    pub auth: Vec<Arc<Authenticator>>,
    /// Headers the chain's authenticators set from claims: a client's own copies are
    /// removed before proxying, so they cannot be forged.
    pub auth_headers: Vec<http::HeaderName>,
    /// Request bodies larger than this are refused with 413; `None`: no limit.
    pub max_body: Option<u64>,
    /// The methods taken; `None`: all.
    pub methods: Option<Methods>,
    /// Client allow and deny lists; `None`: everyone.
    pub access: Option<Access>,
    /// Fields set or removed on the way up, after the gateway's own forwarding fields.
    pub request_headers: Option<Transform>,
    /// Fields set or removed on the upstream's answer, before the security headers.
    pub response_headers: Option<Transform>,
}

/// A route's policies, compiled.
struct RoutePolicies {
    methods: Option<Methods>,
    access: Option<Access>,
    request_headers: Option<Transform>,
    response_headers: Option<Transform>,
}

/// Compile route `i`'s methods, allow and deny lists and header transforms; an error
/// points at the key.
fn compile_policies(
    file: &FileConfig,
    i: usize,
    r: &RouteSection,
    security: &SecurityHeaders,
) -> Result<RoutePolicies, ConfigError> {
    let methods = r
        .methods
        .as_ref()
        .map(|m| {
            Methods::new(m.get_ref())
                .map_err(|e| file.error_at(m.span(), format!("routes[{i}].methods"), e))
        })
        .transpose()?;
    let set = |list: &Option<toml::Spanned<Vec<crate::config::Cidr>>>| {
        list.as_ref()
            .map(|l| IpSet::new(l.get_ref().iter().map(|c| c.0)))
    };
    let access = (r.allow.is_some() || r.deny.is_some()).then(|| Access {
        allow: set(&r.allow),
        deny: set(&r.deny),
    });
    let transform =
        |section: &Option<toml::Spanned<crate::config::HeaderTransformSection>>,
         key: &str,
         refused: &dyn Fn(&http::HeaderName, Op) -> Option<String>| {
            section
                .as_ref()
                .map(|t| {
                    let body = t.get_ref();
                    Transform::compile(
                        body.set.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        body.remove.iter().map(String::as_str),
                        refused,
                    )
                    .map_err(|e| file.error_at(t.span(), format!("routes[{i}].{key}"), e))
                })
                .transpose()
        };
    let request_headers = transform(&r.request_headers, "request_headers", &|name, _| {
        refused_request_field(name)
    })?;
    let response_headers = transform(&r.response_headers, "response_headers", &|name, op| {
        refused_response_field(name, op == Op::Remove && security.sets(name))
    })?;
    Ok(RoutePolicies {
        methods,
        access,
        request_headers,
        response_headers,
    })
}

/// Why a request transform may not touch a field.
fn refused_request_field(name: &http::HeaderName) -> Option<String> {
    use http::header;
    let n = name.as_str();
    if n == "x-forwarded-for"
        || n == "x-forwarded-proto"
        || n == "x-forwarded-host"
        || n == "x-request-id"
    {
        return Some("the gateway sets it, from the client and trusted_proxies".into());
    }
    if *name == header::HOST {
        return Some("the gateway sets it: use preserve_host to keep the client's".into());
    }
    framing_field(name)
}

/// Why a response transform may not touch a field (`security`: a security header it
/// would remove).
fn refused_response_field(name: &http::HeaderName, security: bool) -> Option<String> {
    let n = name.as_str();
    if security {
        return Some("a security header: switch it off in [security_headers]".into());
    }
    if n.starts_with("access-control-") {
        return Some("CORS fields come from [cors]".into());
    }
    if n == "x-request-id" || n == "ratelimit" || n == "ratelimit-policy" {
        return Some("the gateway sets it".into());
    }
    framing_field(name)
}

/// Fields that frame the message or the connection, which the gateway manages.
fn framing_field(name: &http::HeaderName) -> Option<String> {
    use http::header;
    [
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::UPGRADE,
        header::TRAILER,
        crate::headers::names::KEEP_ALIVE,
        crate::headers::names::PROXY_CONNECTION,
    ]
    .contains(name)
    .then(|| "it frames the message or the connection, which the gateway manages".into())
}

/// What outlives a reload: made once per process, from the config loaded at start, and
/// handed to every runtime compiled after it. Each piece is keyed by the identity of what
/// it counts (a policy, a route's instance, a route's prefix), so a new runtime finds the
/// state of whatever it keeps.
pub struct Shared {
    /// The counters of every rate-limit policy, by policy identity.
    pub limiter: Arc<Limiter>,
    /// Health, ejection and load of every instance, by route and URL.
    pub live: LiveStates,
    /// The counters behind /metrics; `None` when no admin or metrics listener is set.
    pub metrics: Option<Metrics>,
    /// Client connections open now, and refused over the cap.
    pub connections: Arc<Connections>,
    /// The proxy's worker threads, for giving freed memory back (see [`crate::memory`]).
    pub workers: Arc<crate::memory::Workers>,
    pub life: Arc<Lifecycle>,
    pub access_log: Arc<AccessLog>,
    /// The certificates the TLS listeners serve: the active runtime's.
    pub certs: Arc<ArcSwapOption<CertStore>>,
    /// Shared rate-limit stores by URL and settings: a reload keeps the one it names.
    pub stores: Stores,
    /// When the process started.
    pub started: SystemTime,
}

impl Shared {
    /// The state for a process that starts with `file`.
    pub fn from_config(file: &FileConfig) -> Result<Shared, ConfigError> {
        let access_log = AccessLog::new(&file.access_log).map_err(|e| {
            file.error_at(
                file.access_log.path.span(),
                "access_log.path".into(),
                format!(
                    "\"{}\" cannot be opened for writing: {e}",
                    file.access_log.path.get_ref()
                ),
            )
        })?;
        Ok(Shared {
            limiter: Arc::new(Limiter::new(max_clients(file))),
            live: LiveStates::default(),
            metrics: (file.admin.is_some() || file.metrics.is_some())
                .then(|| Metrics::new(threads(file))),
            connections: Arc::new(Connections::default()),
            workers: Arc::default(),
            life: Arc::new(Lifecycle::default()),
            access_log: Arc::new(access_log),
            certs: Arc::new(ArcSwapOption::empty()),
            stores: Stores::default(),
            started: SystemTime::now(),
        })
    }
}

fn max_clients(file: &FileConfig) -> usize {
    file.rate_limit
        .as_ref()
        .map_or(DEFAULT_MAX_CLIENTS, |p| p.max_clients.0)
}

fn threads(file: &FileConfig) -> usize {
    file.server.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t.0,
    )
}

/// The settings bound into the listeners and the process when it starts: a reload
/// cannot change them (an upgrade can), so it compares them and says which changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub tls_min_version: Option<MinVersion>,
    pub tls_h2: Option<bool>,
    pub admin_listen: Option<SocketAddr>,
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub h2c: bool,
    pub upstream_keepalive: usize,
    pub access_log: (String, crate::config::LogFormat),
}

impl Pinned {
    /// The config keys whose values differ in `new`.
    pub fn differences(&self, new: &Pinned) -> Vec<&'static str> {
        [
            ("server.listen", self.listen != new.listen),
            ("tls.listen", self.tls_listen != new.tls_listen),
            (
                "tls.min_version",
                self.tls_min_version != new.tls_min_version,
            ),
            ("tls.h2", self.tls_h2 != new.tls_h2),
            ("admin.listen", self.admin_listen != new.admin_listen),
            ("server.threads", self.threads != new.threads),
            ("server.pid_file", self.pid_file != new.pid_file),
            ("server.upgrade_sock", self.upgrade_sock != new.upgrade_sock),
            ("server.error_log", self.error_log != new.error_log),
            ("server.h2c", self.h2c != new.h2c),
            (
                "server.upstream_keepalive",
                self.upstream_keepalive != new.upstream_keepalive,
            ),
            ("access_log", self.access_log != new.access_log),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

/// Everything the gateway needs at run time.
pub struct Runtime {
    pub config_path: PathBuf,
    /// PORT from the environment at start, which replaces the first listener's port;
    /// reloads apply the same.
    port_override: Option<String>,
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
        path: &Path,
        file: &FileConfig,
        port_override: Option<&str>,
        shared: Arc<Shared>,
    ) -> Result<Runtime, ConfigError> {
        let env_error = |message: String| ConfigError::Environment {
            path: path.to_path_buf(),
            message,
        };

        let mut listen: Vec<SocketAddr> =
            file.server.listen.get_ref().iter().map(|l| l.0).collect();
        if let Some(port) = port_override {
            let port: u16 = port.trim().parse().map_err(|_| {
                env_error(format!(
                    "the PORT environment variable ({port:?}) is not a port number"
                ))
            })?;
            match listen.first_mut() {
                Some(first) => first.set_port(port),
                None => listen.push(SocketAddr::from(([0, 0, 0, 0], port))),
            }
        }
        if listen.is_empty() {
            return Err(file.error_at(
                file.server.listen.span(),
                "server.listen".into(),
                "the list is empty: the gateway needs at least one listener, like [\"0.0.0.0:5000\"]"
                    .into(),
            ));
        }
        let client = ClientTimeouts::from_config(file)?;

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

        let store = compile_store(file, &shared)?;
        let mut policies = PolicyBuilder::on(shared.limiter.clone()).with_store(store.clone());
        let default_limit = file
            .rate_limit
            .as_ref()
            .map(|p| policies.policy("default", p.requests.0, p.window.0));
        let ipv6_prefix = file.rate_limit.as_ref().map_or(64, |p| p.ipv6_prefix.0);

        let auth = Authenticators::from_config(&file.auth)
            .map_err(|e| file.error_at(e.span, e.key, e.message))?;
        let security = SecurityHeaders::from_config(&file.security_headers).map_err(env_error)?;
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.iter().enumerate() {
            let prefix: Arc<str> = Arc::from(r.prefix.get_ref().0.as_str());
            let policies_of = compile_policies(file, i, r, &security)?;
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
                timeouts: Timeouts::resolve(&r.timeouts, base),
                limit,
                auth: chain,
                auth_headers,
                max_body: r.max_body.unwrap_or(file.limits.max_body).0,
                methods: policies_of.methods,
                access: policies_of.access,
                request_headers: policies_of.request_headers,
                response_headers: policies_of.response_headers,
            });
        }
        let router = Router::new(
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.prefix.to_string(), i)),
        );

        let tls = compile_tls(file)?;
        let admin = AdminSettings::from_config(file)?;
        let threads = threads(file);
        Ok(Runtime {
            config_path: path.to_path_buf(),
            port_override: port_override.map(str::to_string),
            listen,
            threads,
            pid_file: file.server.pid_file.clone(),
            upgrade_sock: file.server.upgrade_sock.clone(),
            routes,
            router,
            default_limit,
            store,
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
            tls,
            auth,
            trusted_proxies: TrustedProxies::new(file.server.trusted_proxies.iter().map(|c| c.0)),
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

    /// Load, check and compile a configuration file for a new process, taking PORT from
    /// the environment.
    pub fn load(path: &Path) -> Result<Runtime, ConfigError> {
        let file = crate::config::load(path)?;
        let port = std::env::var("PORT").ok();
        let shared = Arc::new(Shared::from_config(&file)?);
        // reloads and upgrades read the file again, maybe after a daemon's chdir("/")
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Runtime::from_config(&path, &file, port.as_deref(), shared)
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

    /// Load and compile the file again, on this runtime's shared state (a reload).
    pub fn recompile(&self) -> Result<Runtime, ConfigError> {
        let file = crate::config::load(&self.config_path)?;
        Runtime::from_config(
            &self.config_path,
            &file,
            self.port_override.as_deref(),
            self.shared.clone(),
        )
    }

    /// Make this runtime the one in force: its limits, certificates and fetched keys take
    /// over from `previous` (the runtime it replaces, if any).
    pub fn activate(&self, previous: Option<&Runtime>) {
        self.shared.limiter.set_max_clients(self.max_clients);
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
fn compile_store(file: &FileConfig, shared: &Shared) -> Result<Option<Arc<Store>>, ConfigError> {
    let Some(section) = &file.rate_limit else {
        return Ok(None);
    };
    let Some(url) = &section.store else {
        return Ok(None);
    };
    shared
        .stores
        .get(
            url.get_ref(),
            section.sync.0,
            section.store_timeout.0,
            section.max_clients.0,
        )
        .map(Some)
        .map_err(|m| file.error_at(url.span(), "rate_limit.store".into(), m))
}

/// TLS listeners: where, which certificates, which versions and protocols.
#[derive(Debug)]
pub struct TlsListeners {
    pub listen: Vec<SocketAddr>,
    pub store: Arc<CertStore>,
    pub min_version: MinVersion,
    pub h2: bool,
}

/// Load and check the certificates of `[tls]`; an error points at the `cert` or `key`
/// entry of the file that is wrong.
fn compile_tls(file: &FileConfig) -> Result<Option<TlsListeners>, ConfigError> {
    let Some(tls) = &file.tls else {
        return Ok(None);
    };
    let entries = tls.certificates.get_ref();
    let specs: Vec<CertificateSpec> = entries
        .iter()
        .map(|c| CertificateSpec {
            cert: c.cert.get_ref().into(),
            key: c.key.get_ref().into(),
        })
        .collect();
    let (store, _warnings) = CertStore::load(&specs).map_err(|e| {
        let bad = e.path();
        let located = entries.iter().enumerate().find_map(|(i, c)| {
            if std::path::Path::new(c.key.get_ref()) == bad
                && !matches!(e, crate::tls::TlsError::KeyMismatch { .. })
            {
                Some((c.key.span(), format!("tls.certificates[{i}].key")))
            } else if std::path::Path::new(c.cert.get_ref()) == bad
                || std::path::Path::new(c.key.get_ref()) == bad
            {
                Some((c.cert.span(), format!("tls.certificates[{i}].cert")))
            } else {
                None
            }
        });
        let (span, key) =
            located.unwrap_or((tls.certificates.span(), "tls.certificates".to_string()));
        file.error_at(span, key, e.to_string())
    })?;
    Ok(Some(TlsListeners {
        listen: tls.listen.iter().map(|l| l.0).collect(),
        store: Arc::new(store),
        min_version: tls.min_version,
        h2: tls.h2,
    }))
}

/// A route's upstream instances with their balancing, checks and TLS settings.
fn compile_pool(r: &RouteSection, live: &LiveStates) -> Result<Pool, String> {
    let specs: Vec<InstanceSpec> = r
        .upstreams
        .get_ref()
        .0
        .iter()
        .map(|u| InstanceSpec {
            addr: u.addr,
            weight: u.weight,
            tls: u.tls,
            host: u.host.clone(),
            authority: u.authority.clone(),
        })
        .collect();
    let balance = match (
        r.balance.get_ref(),
        r.hash_key.as_ref().map(|k| k.get_ref()),
    ) {
        (BalanceKind::RoundRobin, _) => Balance::RoundRobin,
        (BalanceKind::Random, _) => Balance::Random,
        (BalanceKind::LeastRequest, _) => Balance::LeastRequest,
        (BalanceKind::Hash, Some(HashKeySpec::ClientIp)) => Balance::Hash(HashKey::ClientIp),
        (BalanceKind::Hash, Some(HashKeySpec::Path)) => Balance::Hash(HashKey::Path),
        (BalanceKind::Hash, Some(HashKeySpec::Header(name))) => {
            Balance::Hash(HashKey::Header(static_name(name)?))
        }
        (BalanceKind::Hash, None) => return Err("balance = \"hash\" needs a hash_key".into()),
    };
    let health = r.health_check.as_ref().map(|h| HealthCheckSpec {
        interval: h.interval.0,
        timeout: h.timeout.0,
        path: h.path.as_ref().map(|p| p.0.clone()),
        healthy: h.healthy.0,
        unhealthy: h.unhealthy.0,
    });
    let passive = r.passive.map(|p| PassiveSpec {
        failures: p.failures.0,
        cooldown: p.cooldown.0,
    });
    let tls = TlsSpec {
        verify: *r.tls_verify.get_ref(),
        ca: r
            .ca_file
            .as_ref()
            .map(|ca| Arc::new(ca.certificates.clone().into_boxed_slice())),
    };
    Pool::new(
        &specs,
        balance,
        r.retries.0,
        passive,
        health,
        tls,
        (live, &r.prefix.get_ref().0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn compile(text: &str, port: Option<&str>) -> Result<Runtime, ConfigError> {
        let path = Path::new("t.toml");
        let file = config::parse(path, &format!("[access_log]\npath = \"off\"\n{text}")).unwrap();
        let shared = Arc::new(Shared::from_config(&file).unwrap());
        Runtime::from_config(path, &file, port, shared)
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
