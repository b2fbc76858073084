//! The configuration file as users write it: serde structs that mirror the TOML, and [`load`].
//!
//! Every table denies unknown keys, and every value that can be wrong on its own (a duration,
//! an upstream URL, a prefix, a CIDR) is a small type whose `Deserialize` checks it, so the
//! toml crate points at the offending value. Checks that span several values (duplicate
//! prefixes, credentials with a wildcard origin) run after parsing on [`Spanned`] values.
//! Either way the error names the file, the line, the column and the key path.
//!
//! Nothing here is used per request: [`crate::runtime`] compiles this into the form the
//! proxy reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A value deserialised from a string through its `FromStr`, with the parse error as the
/// message; the toml crate adds where it was.
macro_rules! from_string {
    ($t:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// A problem that belongs to the environment rather than to a line of the file.
    #[error("{path}: {message}")]
    Environment { path: PathBuf, message: String },
    /// Several problems, in file order, one per line.
    #[error("{}", list(.0))]
    Many(Vec<ConfigError>),
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    #[serde(default)]
    pub timeouts: TopTimeoutsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// The default per-client limit; absent means routes are not limited unless they say so.
    #[serde(default)]
    pub rate_limit: Option<TopRateLimit>,
    #[serde(default)]
    pub cors: CorsSection,
    #[serde(default)]
    pub security_headers: SecurityHeadersSection,
    #[serde(default)]
    pub admin: Option<Spanned<AdminSection>>,
    /// The older name of `[admin]`, with only `listen`.
    #[serde(default)]
    pub metrics: Option<Spanned<MetricsSection>>,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Named authenticators that routes reference.
    #[serde(default)]
    pub auth: BTreeMap<String, Spanned<crate::auth::AuthSection>>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Where the config came from, to locate errors found after parsing.
    #[serde(skip)]
    pub source: Source,
}

/// A configuration file's name and text.
#[derive(Debug, Default, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl FileConfig {
    /// An error about the value at `span` of this file.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        key: String,
        message: String,
    ) -> ConfigError {
        let (line, column) = line_column(&self.source.text, span.start);
        ConfigError::Invalid {
            path: self.source.path.clone(),
            line,
            column,
            key,
            message,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: Spanned<Vec<Listen>>,
    /// Worker threads; the number of CPUs when absent.
    #[serde(default)]
    pub threads: Option<Threads>,
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// After SIGTERM, keep serving (and accepting) this long, telling keep-alive clients
    /// to close, before the listeners close.
    #[serde(default = "default_grace_period")]
    pub grace_period: DurationValue,
    /// Once the listeners close, how long requests in flight may take before the exit.
    #[serde(default = "default_graceful_shutdown_timeout")]
    pub graceful_shutdown_timeout: DurationValue,
    /// The older name of `timeouts.client_idle`.
    #[serde(default)]
    pub keepalive_timeout: Option<Spanned<Timeout>>,
    /// Client connections one process holds at most; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: MaxConnections,
    /// With -d, diagnostics go to this file; otherwise they stay on stderr (journald).
    #[serde(default)]
    pub error_log: Option<String>,
    /// Accept cleartext HTTP/2 (prior knowledge) on the plain listeners too.
    #[serde(default)]
    pub h2c: bool,
    /// Idle upstream connections kept for reuse, across all upstreams.
    #[serde(default = "default_upstream_keepalive")]
    pub upstream_keepalive: KeepaliveCount,
}

fn default_upstream_keepalive() -> KeepaliveCount {
    KeepaliveCount(1024)
}

/// A connection count: 0 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveCount(pub usize);

impl<'de> Deserialize<'de> for KeepaliveCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(0..=1_000_000).contains(&n) {
            return Err(de::Error::custom(format!(
                "upstream_keepalive must be between 0 and 1000000, not {n}"
            )));
        }
        Ok(KeepaliveCount(n as usize))
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            threads: None,
            pid_file: default_pid_file(),
            upgrade_sock: default_upgrade_sock(),
            trusted_proxies: Vec::new(),
            grace_period: default_grace_period(),
            graceful_shutdown_timeout: default_graceful_shutdown_timeout(),
            keepalive_timeout: None,
            max_connections: default_max_connections(),
            error_log: None,
            h2c: false,
            upstream_keepalive: default_upstream_keepalive(),
        }
    }
}

fn default_grace_period() -> DurationValue {
    DurationValue(Duration::ZERO)
}
fn default_graceful_shutdown_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(30))
}
fn default_max_connections() -> MaxConnections {
    MaxConnections(10_000)
}

/// A connection cap: 1 to 10,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxConnections(pub usize);

impl<'de> Deserialize<'de> for MaxConnections {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=10_000_000).contains(&n) {
            return Err(de::Error::custom(format!(
                "max_connections must be between 1 and 10000000, not {n}"
            )));
        }
        Ok(MaxConnections(n as usize))
    }
}

/// `[tls]`: TLS listeners and their certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Vec<Listen>,
    #[serde(default)]
    pub min_version: crate::tls::MinVersion,
    /// The plain listeners answer 308 to the https URL instead of proxying.
    #[serde(default)]
    pub redirect_http: bool,
    /// Offer HTTP/2 by ALPN.
    #[serde(default = "default_true")]
    pub h2: bool,
    pub certificates: Spanned<Vec<CertificateSection>>,
}

/// One `[[tls.certificates]]`: a PEM chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[metrics]`: the older name of `[admin]`, which serves /metrics and more.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Listen,
}

/// `[admin]`: the admin listener (metrics, health, status API and page), read-only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_listen")]
    pub listen: Listen,
    /// The environment variable that holds a bearer token; then everything but /healthz
    /// and /readyz needs `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token_env: Option<Spanned<String>>,
}

fn default_admin_listen() -> Listen {
    Listen(SocketAddr::from(([127, 0, 0, 1], 9180)))
}

fn default_listen() -> Spanned<Vec<Listen>> {
    Spanned::new(0..0, vec![Listen(SocketAddr::from(([0, 0, 0, 0], 5000)))])
}
fn default_pid_file() -> String {
    "/tmp/pylon.pid".to_string()
}
fn default_upgrade_sock() -> String {
    "/tmp/pylon_upgrade.sock".to_string()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// "-" for stdout, "off", or a file path.
    #[serde(default = "default_log_path")]
    pub path: Spanned<String>,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for AccessLogSection {
    fn default() -> Self {
        AccessLogSection {
            path: default_log_path(),
            format: LogFormat::default(),
        }
    }
}

fn default_log_path() -> Spanned<String> {
    Spanned::new(0..0, "-".to_string())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Apache combined, as morgan's "combined" writes it.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// A route's upstream timeouts: absent keys take the top-level values.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    pub connect: Option<Timeout>,
    pub read: Option<Timeout>,
    pub write: Option<Timeout>,
    /// An upgraded connection (WebSocket) may stay silent this long; default "1h".
    pub websocket_idle: Option<Timeout>,
    /// An idle pooled upstream connection is closed after this, or "off"; default "60s".
    pub upstream_idle: Option<IdleTimeout>,
}

/// `[timeouts]`: the upstream timeouts every route starts from (absent keys take the
/// defaults: connect 2s, read 15s, write = read), and the client-side ones.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopTimeoutsSection {
    pub connect: Option<Timeout>,
    pub read: Option<Timeout>,
    pub write: Option<Timeout>,
    pub websocket_idle: Option<Timeout>,
    pub upstream_idle: Option<IdleTimeout>,
    /// The whole request head must arrive within this (default "10s"); then 408.
    pub client_header: Option<Timeout>,
    /// A keep-alive connection with no request in flight is closed after this ("60s").
    pub client_idle: Option<Timeout>,
}

impl TopTimeoutsSection {
    /// The upstream part, which routes override.
    pub fn upstream(&self) -> TimeoutsSection {
        TimeoutsSection {
            connect: self.connect,
            read: self.read,
            write: self.write,
            websocket_idle: self.websocket_idle,
            upstream_idle: self.upstream_idle,
        }
    }
}

/// `requests` per `window`, counted per client.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    pub requests: Count,
    pub window: Window,
}

/// `[rate_limit]`: the default policy, and how clients are told apart and remembered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopRateLimit {
    pub requests: Count,
    pub window: Window,
    /// A Redis (or Valkey) URL: then every policy is counted there, shared by every
    /// gateway that names the same store.
    #[serde(default)]
    pub store: Option<Spanned<String>>,
    /// How often a gateway pushes its new counts and pulls the totals; "0s": ask the store
    /// on every request.
    #[serde(default = "default_sync")]
    pub sync: SyncInterval,
    /// The longest a request (with sync = "0s") or a sync waits for the store.
    #[serde(default = "default_store_timeout")]
    pub store_timeout: Timeout,
    /// An IPv6 client is counted by this prefix of its address (one /64 is one client).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: Ipv6Prefix,
    /// Clients remembered at most; beyond it the least recently seen are dropped.
    #[serde(default = "default_max_clients")]
    pub max_clients: MaxClients,
}

fn default_sync() -> SyncInterval {
    SyncInterval(Duration::from_millis(50))
}
fn default_store_timeout() -> Timeout {
    Timeout(Duration::from_millis(100))
}

/// `rate_limit.sync`: 0 (every request asks the store) up to 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncInterval(pub Duration);

impl FromStr for SyncInterval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d > Duration::from_secs(10) {
            return Err(format!(
                "sync \"{s}\" is too long: gateways would drift apart by that much; at most \"10s\""
            ));
        }
        if !d.is_zero() && d < Duration::from_millis(10) {
            return Err(format!(
                "sync \"{s}\" is too short: use \"0s\" to ask the store on every request, or at least \"10ms\""
            ));
        }
        Ok(SyncInterval(d))
    }
}
from_string!(SyncInterval, "a duration string like \"50ms\"");

fn default_ipv6_prefix() -> Ipv6Prefix {
    Ipv6Prefix(64)
}
fn default_max_clients() -> MaxClients {
    MaxClients(1_000_000)
}

/// An IPv6 prefix length: 1 to 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Prefix(pub u8);

impl<'de> Deserialize<'de> for Ipv6Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=128).contains(&n) {
            return Err(de::Error::custom(format!(
                "ipv6_prefix must be between 1 and 128 (64: a client is its /64; 128: each address), not {n}"
            )));
        }
        Ok(Ipv6Prefix(n as u8))
    }
}

/// A count of remembered clients: 1,000 to 100,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxClients(pub usize);

impl<'de> Deserialize<'de> for MaxClients {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1_000..=100_000_000).contains(&n) {
            return Err(de::Error::custom(format!(
                "max_clients must be between 1000 and 100000000, not {n}"
            )));
        }
        Ok(MaxClients(n as usize))
    }
}

/// A route's `rate_limit`: `false`, `true` (the default policy) or its own table.
#[derive(Debug, Clone, Copy)]
pub enum RouteRateLimit {
    Default,
    Off,
    Own(RateLimitPolicy),
}

impl<'de> Deserialize<'de> for RouteRateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteRateLimit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("false, true, or a table like { requests = 100, window = \"1m\" }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(if v {
                    RouteRateLimit::Default
                } else {
                    RouteRateLimit::Off
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RateLimitPolicy::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RouteRateLimit::Own)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `["*"]` or a list of origins such as `"https://app.example.com"`.
    #[serde(default = "default_origins")]
    pub allow_origins: Spanned<Vec<Origin>>,
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<Token>,
    /// Absent: a preflight's Access-Control-Request-Headers are allowed as asked.
    #[serde(default)]
    pub allow_headers: Option<Vec<Token>>,
    /// Absent: the gateway's own fields (X-Request-Id, the RateLimit fields, Retry-After),
    /// so that scripts in a browser can read them; `[]`: none.
    #[serde(default)]
    pub expose_headers: Option<Vec<Token>>,
    #[serde(default = "no_credentials")]
    pub allow_credentials: Spanned<bool>,
    #[serde(default)]
    pub max_age: Option<MaxAge>,
}

impl Default for CorsSection {
    fn default() -> Self {
        CorsSection {
            enabled: true,
            allow_origins: default_origins(),
            allow_methods: default_methods(),
            allow_headers: None,
            expose_headers: None,
            allow_credentials: no_credentials(),
            max_age: None,
        }
    }
}

fn default_origins() -> Spanned<Vec<Origin>> {
    Spanned::new(0..0, vec![Origin::Any])
}

fn no_credentials() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

fn default_methods() -> Vec<Token> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
        .into_iter()
        .map(|m| Token(m.to_string()))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Headers stripped from upstream responses.
    #[serde(default = "default_remove")]
    pub remove: Vec<Token>,
    /// Replace the value of a default header (an empty value leaves that header out) or add one.
    #[serde(default)]
    pub set: BTreeMap<Token, HeaderText>,
}

impl Default for SecurityHeadersSection {
    fn default() -> Self {
        SecurityHeadersSection {
            enabled: true,
            remove: default_remove(),
            set: BTreeMap::new(),
        }
    }
}

fn default_remove() -> Vec<Token> {
    vec![
        Token("Server".to_string()),
        Token("X-Powered-By".to_string()),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub prefix: Spanned<Prefix>,
    pub upstreams: Spanned<Upstreams>,
    #[serde(default = "default_true")]
    pub strip_prefix: bool,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// Absent: the default policy from `[rate_limit]`, if any.
    #[serde(default)]
    pub rate_limit: Option<RouteRateLimit>,
    /// Requests one client may have in flight on this route at once; more get 429.
    #[serde(default)]
    pub max_in_flight: Option<Count>,
    /// A cap on the route's requests from all clients together; over it: 503.
    #[serde(default)]
    pub route_rate: Option<RateLimitPolicy>,
    /// Authenticators, by name: the first that accepts admits the request.
    #[serde(default)]
    pub auth: Option<Spanned<AuthNames>>,
    #[serde(default = "default_balance")]
    pub balance: Spanned<BalanceKind>,
    #[serde(default)]
    pub hash_key: Option<Spanned<HashKeySpec>>,
    /// Further instances a failed request may try; default 2.
    #[serde(default = "default_retries")]
    pub retries: Retries,
    #[serde(default)]
    pub health_check: Option<HealthCheckSection>,
    #[serde(default)]
    pub passive: Option<PassiveSection>,
    /// https upstreams: check the certificate and the host name.
    #[serde(default = "default_tls_verify")]
    pub tls_verify: Spanned<bool>,
    /// https upstreams: trust these CA certificates (PEM) too.
    #[serde(default)]
    pub ca_file: Option<CaFile>,
    /// Speak HTTP/2 to the upstream (h2c on http upstreams, ALPN h2 on https): for gRPC.
    #[serde(default)]
    pub http2: bool,
    /// Proxy TRACE requests (otherwise 405: TRACE echoes credentials back).
    #[serde(default)]
    pub allow_trace: bool,
    /// This route's request body limit; absent: `[limits] max_body`.
    #[serde(default)]
    pub max_body: Option<BodySize>,
    /// The methods the route takes; absent: all.
    #[serde(default)]
    pub methods: Option<Spanned<Vec<String>>>,
    /// Only these clients (after trusted_proxies), when set.
    #[serde(default)]
    pub allow: Option<Spanned<Vec<Cidr>>>,
    /// Never these clients; checked first.
    #[serde(default)]
    pub deny: Option<Spanned<Vec<Cidr>>>,
    #[serde(default)]
    pub request_headers: Option<Spanned<HeaderTransformSection>>,
    #[serde(default)]
    pub response_headers: Option<Spanned<HeaderTransformSection>>,
}

/// `request_headers` / `response_headers`: fields to set (values may hold placeholders)
/// and fields to remove.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderTransformSection {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `[limits]`: what every route takes at most.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default = "default_max_body")]
    pub max_body: BodySize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_body: default_max_body(),
        }
    }
}

fn default_max_body() -> BodySize {
    BodySize(Some(16 << 20))
}

/// A request body limit in bytes: `"16m"`, `"512k"`, `"1g"`, a number of bytes, or `"0"`
/// / `0` / `false` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySize(pub Option<u64>);

impl FromStr for BodySize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid size \"{s}\": write a whole number with k, m or g (KiB, MiB, GiB), like \"16m\", or \"0\" for no limit")
        };
        let t = s.trim().to_ascii_lowercase();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, unit) = t.split_at(digits);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        let bytes = n.checked_mul(scale).ok_or_else(bad)?;
        Ok(BodySize((bytes > 0).then_some(bytes)))
    }
}

impl<'de> Deserialize<'de> for BodySize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BodySize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"16m\", a number of bytes, or false")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BodySize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BodySize, E> {
                u64::try_from(v)
                    .map(|n| BodySize((n > 0).then_some(n)))
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<BodySize, E> {
                if v {
                    Err(E::custom(
                        "true is not a size: write one like \"16m\", or false for no limit",
                    ))
                } else {
                    Ok(BodySize(None))
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn default_balance() -> Spanned<BalanceKind> {
    Spanned::new(0..0, BalanceKind::RoundRobin)
}

fn default_retries() -> Retries {
    Retries(2)
}

fn default_tls_verify() -> Spanned<bool> {
    Spanned::new(0..0, true)
}

/// A route's `auth`: one name or a non-empty list of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthNames(pub Vec<String>);

impl<'de> Deserialize<'de> for AuthNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AuthNames;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an authenticator name or a list of names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AuthNames, E> {
                Ok(AuthNames(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<AuthNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                if names.is_empty() {
                    return Err(de::Error::custom("the list of authenticators is empty"));
                }
                Ok(AuthNames(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// `balance`: how requests spread over a route's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceKind {
    #[default]
    RoundRobin,
    Random,
    Hash,
    LeastRequest,
}

/// `hash_key`: "client_ip", "path" or "header:NAME".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKeySpec {
    ClientIp,
    Path,
    Header(String),
}

impl FromStr for HashKeySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client_ip" => Ok(HashKeySpec::ClientIp),
            "path" => Ok(HashKeySpec::Path),
            _ => match s.strip_prefix("header:") {
                Some(name) if name.parse::<Token>().is_ok() => {
                    Ok(HashKeySpec::Header(name.to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "unknown hash_key \"{s}\": write \"client_ip\", \"path\" or \"header:NAME\""
                )),
            },
        }
    }
}
from_string!(HashKeySpec, "\"client_ip\", \"path\" or \"header:NAME\"");

/// `retries`: 0 to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries(pub u32);

impl<'de> Deserialize<'de> for Retries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(0..=10).contains(&n) {
            return Err(de::Error::custom(format!(
                "retries must be between 0 and 10, not {n}"
            )));
        }
        Ok(Retries(n as u32))
    }
}

/// `health_check = { interval, timeout, path, healthy, unhealthy }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    #[serde(default = "default_hc_interval")]
    pub interval: Interval,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Timeout,
    /// Absent: a TCP connect check.
    #[serde(default)]
    pub path: Option<CheckPath>,
    #[serde(default = "default_healthy")]
    pub healthy: Threshold,
    #[serde(default = "default_unhealthy")]
    pub unhealthy: Threshold,
}

fn default_hc_interval() -> Interval {
    Interval(Duration::from_secs(5))
}
fn default_hc_timeout() -> Timeout {
    Timeout(Duration::from_secs(1))
}
fn default_healthy() -> Threshold {
    Threshold(2)
}
fn default_unhealthy() -> Threshold {
    Threshold(3)
}

/// A health-check interval: at least 100ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d < Duration::from_millis(100) {
            return Err(format!(
                "interval \"{s}\" is too short: health checks run at most every 100ms"
            ));
        }
        Ok(Interval(d))
    }
}
from_string!(Interval, "a duration like \"5s\"");

/// A health-check path: starts with '/'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPath(pub String);

impl FromStr for CheckPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') || s.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "health check path \"{s}\" must start with '/' and hold no spaces"
            ));
        }
        Ok(CheckPath(s.to_string()))
    }
}
from_string!(CheckPath, "a path like \"/healthz\"");

/// A consecutive-results threshold: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold(pub u32);

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=100).contains(&n) {
            return Err(de::Error::custom(format!(
                "a threshold must be between 1 and 100, not {n}"
            )));
        }
        Ok(Threshold(n as u32))
    }
}

/// `passive = { failures, cooldown }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveSection {
    #[serde(default = "default_unhealthy")]
    pub failures: Threshold,
    #[serde(default = "default_cooldown")]
    pub cooldown: Cooldown,
}

fn default_cooldown() -> Cooldown {
    Cooldown(Duration::from_secs(10))
}

/// A passive-check cooldown: at least 100ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown(pub Duration);

impl FromStr for Cooldown {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d < Duration::from_millis(100) {
            return Err(format!(
                "cooldown \"{s}\" is too short: the smallest is 100ms"
            ));
        }
        Ok(Cooldown(d))
    }
}
from_string!(Cooldown, "a duration like \"10s\"");

/// A PEM file of CA certificates, read and parsed when the config is loaded.
#[derive(Clone)]
pub struct CaFile {
    pub path: String,
    pub certificates: Vec<pingora::tls::x509::X509>,
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CaFile({}, {} certificates)",
            self.path,
            self.certificates.len()
        )
    }
}

impl FromStr for CaFile {
    type Err = String;
    fn from_str(path: &str) -> Result<Self, String> {
        let pem = read_capped(path, MAX_SIDE_FILE)
            .map_err(|e| format!("cannot read the CA file \"{path}\": {e}"))?;
        let certificates = pingora::tls::x509::X509::stack_from_pem(&pem)
            .map_err(|_| format!("the CA file \"{path}\" is not PEM certificates"))?;
        if certificates.is_empty() {
            return Err(format!("the CA file \"{path}\" holds no certificate"));
        }
        Ok(CaFile {
            path: path.to_string(),
            certificates,
        })
    }
}
from_string!(CaFile, "a path to a PEM file");

// ---------------------------------------------------------------------------------------------
// Values that check themselves
// ---------------------------------------------------------------------------------------------

/// A duration written as a string: "500ms", "15s", "1m", "1h".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl FromStr for DurationValue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(DurationValue)
    }
}

/// Parse "500ms", "15s", "1m", "1h" or "1d": a whole number and one unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration \"{s}\": write a whole number and a unit (ms, s, m, h, d), like \"500ms\", \"15s\" or \"1m\""
        )
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let (number, unit) = s.split_at(digits);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if ms > MAX_DURATION_MS {
        return Err(format!(
            "duration \"{s}\" is too large: the longest that means anything here is 365d"
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// The longest duration any key takes: a year.
const MAX_DURATION_MS: u64 = 365 * 86_400_000;

from_string!(DurationValue, "a duration string like \"15s\"");

/// A timeout: a duration above zero (zero would switch the timeout off, which no key means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl FromStr for Timeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d.is_zero() {
            return Err(format!(
                "timeout \"{s}\" must be above zero: a timeout of zero would never let anything finish"
            ));
        }
        Ok(Timeout(d))
    }
}
from_string!(Timeout, "a duration string like \"15s\"");

/// A timeout that can be turned off: a duration above zero, or "off" (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimeout(pub Option<Duration>);

impl FromStr for IdleTimeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(IdleTimeout(None));
        }
        s.parse::<Timeout>()
            .map(|t| IdleTimeout(Some(t.0)))
            .map_err(|e| format!("{e}, or \"off\""))
    }
}
from_string!(IdleTimeout, "a duration string like \"60s\", or \"off\"");

/// A rate-limit window: at least one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(pub Duration);

impl FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d < Duration::from_secs(1) {
            return Err(format!(
                "window \"{s}\" is too short: the smallest window is 1s"
            ));
        }
        if d.subsec_millis() != 0 {
            return Err(format!(
                "window \"{s}\" must be a whole number of seconds (RateLimit headers count in seconds)"
            ));
        }
        Ok(Window(d))
    }
}
from_string!(Window, "a duration string like \"1m\"");

/// A positive request count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if n < 1 || n > i64::from(u32::MAX) {
            return Err(de::Error::custom(format!(
                "requests must be between 1 and {}, not {n}",
                u32::MAX
            )));
        }
        Ok(Count(n as u32))
    }
}

/// A worker-thread count: 1 to 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads(pub usize);

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=1024).contains(&n) {
            return Err(de::Error::custom(format!(
                "threads must be between 1 and 1024, not {n}"
            )));
        }
        Ok(Threads(n as usize))
    }
}

/// A listen address: "0.0.0.0:5000" or "[::]:5000".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub SocketAddr);

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Listen).map_err(|_| {
            format!(
                "invalid listen address \"{s}\": write an IP address and a port, like \"0.0.0.0:5000\" or \"[::]:5000\""
            )
        })
    }
}
from_string!(Listen, "a listen address like \"0.0.0.0:5000\"");

/// A network in CIDR notation, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| {
                format!("invalid CIDR \"{s}\": write a network like \"10.0.0.0/8\" or an address")
            })
    }
}
from_string!(Cidr, "a CIDR like \"10.0.0.0/8\"");

/// A route prefix: starts with '/', no query, no dot segments, no empty segments.
/// Stored without its trailing slash ("/users/" is "/users"), except the root "/".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(pub String);

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("prefix \"{s}\" must start with '/'"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| matches!(c, '?' | '#' | '%') || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "prefix \"{s}\" contains {c:?}: a prefix is a plain path, without query, fragment or escapes"
            ));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii()) {
            return Err(format!(
                "prefix \"{s}\" contains {c:?}: clients send such characters percent-encoded, so a prefix is written in ASCII"
            ));
        }
        let trimmed = if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            s
        };
        if trimmed.is_empty() {
            return Err(format!("prefix \"{s}\" is all slashes: write \"/\""));
        }
        if trimmed.len() > 1 {
            for segment in trimmed[1..].split('/') {
                if segment.is_empty() || segment == "." || segment == ".." {
                    return Err(format!(
                        "prefix \"{s}\" has an empty or dot segment: write each segment once, like \"/api/users\""
                    ));
                }
            }
        }
        Ok(Prefix(trimmed.to_string()))
    }
}
from_string!(Prefix, "a path prefix like \"/users\"");

/// How to reach one upstream instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The address it resolved to when the configuration was loaded (IPv4 preferred).
    pub addr: SocketAddr,
    /// "host:port" as written, for the Host header and logs.
    pub authority: String,
    /// The host name (or address) without the port.
    pub host: String,
    pub tls: bool,
    pub weight: u32,
}

impl FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid upstream \"{s}\": {why}; write \"http://host:port\", \"https://host:port\" or \"host:port\"")
        };
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("http://{s}")
        };
        let uri: http::Uri = with_scheme.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("an upstream has no path or query"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (bare_host, port)
            .to_socket_addrs()
            .map_err(|e| format!("upstream \"{s}\": cannot resolve \"{bare_host}\": {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("upstream \"{s}\": \"{bare_host}\" has no address"))?;
        let authority = if authority.port().is_some() {
            authority.as_str().to_string()
        } else {
            format!("{host}:{port}")
        };
        Ok(Upstream {
            addr,
            authority,
            host: bare_host.to_string(),
            tls,
            weight: 1,
        })
    }
}
from_string!(Upstream, "an upstream URL like \"http://127.0.0.1:7002\"");

/// One entry of `upstreams`: a URL, or `{ url = "...", weight = 2 }`.
#[derive(Debug, Clone)]
pub struct UpstreamEntry(pub Upstream);

impl<'de> Deserialize<'de> for UpstreamEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Weighted {
            url: Upstream,
            weight: Weight,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UpstreamEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an upstream URL or a table like { url = \"http://host:port\", weight = 2 }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map(UpstreamEntry).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let w = Weighted::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut upstream = w.url;
                upstream.weight = w.weight.0;
                Ok(UpstreamEntry(upstream))
            }
        }
        d.deserialize_any(V)
    }
}

/// An instance weight: 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight(pub u32);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=1000).contains(&n) {
            return Err(de::Error::custom(format!(
                "weight must be between 1 and 1000, not {n}"
            )));
        }
        Ok(Weight(n as u32))
    }
}

/// A non-empty list of upstreams.
#[derive(Debug, Clone)]
pub struct Upstreams(pub Vec<Upstream>);

impl<'de> Deserialize<'de> for Upstreams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<UpstreamEntry>::deserialize(d)?;
        if list.is_empty() {
            return Err(de::Error::custom(
                "the upstream list is empty: a route needs at least one upstream",
            ));
        }
        Ok(Upstreams(list.into_iter().map(|e| e.0).collect()))
    }
}

/// A CORS origin: "*" or "scheme://host[:port]".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Any,
    Exact(String),
}

impl FromStr for Origin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Origin::Any);
        }
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .ok_or_else(|| {
                format!("invalid origin \"{s}\": write \"*\" or an origin like \"https://app.example.com\"")
            })?;
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '*']) {
            return Err(format!(
                "invalid origin \"{s}\": an origin is scheme://host[:port], without a path or trailing slash"
            ));
        }
        Ok(Origin::Exact(s.to_ascii_lowercase()))
    }
}
from_string!(Origin, "an origin like \"https://app.example.com\"");

/// An HTTP token: a header name or a method.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Token(pub String);

impl FromStr for Token {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if s.is_empty() || !s.bytes().all(is_tchar) {
            return Err(format!(
                "\"{s}\" is not a valid HTTP token (a header name or method, like \"X-Api-Key\")"
            ));
        }
        Ok(Token(s.to_string()))
    }
}
from_string!(Token, "a header name or method");

/// A header value: visible ASCII and spaces only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderText(pub String);

impl FromStr for HeaderText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.bytes()
            .any(|b| !(b == b' ' || b == b'\t' || b.is_ascii_graphic()))
        {
            return Err(format!(
                "header value {s:?} may hold only visible ASCII characters and spaces"
            ));
        }
        Ok(HeaderText(s.to_string()))
    }
}
from_string!(HeaderText, "a header value");

/// `Access-Control-Max-Age`: a duration string or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge(pub u64);

impl<'de> Deserialize<'de> for MaxAge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaxAge;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"10m\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxAge, E> {
                u64::try_from(v)
                    .map(MaxAge)
                    .map_err(|_| E::custom("max_age cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxAge, E> {
                parse_duration(v)
                    .map(|d| MaxAge(d.as_secs()))
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// The largest key, certificate, CA or JWKS file read.
pub const MAX_SIDE_FILE: u64 = 1 << 20;
/// The largest configuration file read (100,000 routes fit).
const MAX_CONFIG_FILE: u64 = 64 << 20;

/// Read a whole file of at most `limit` bytes: a larger one (or `/dev/zero`) is an
/// error at once rather than a read without end.
pub fn read_capped(path: impl AsRef<Path>, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB", limit / 1024),
        ));
    }
    Ok(bytes)
}

/// Read and check a configuration file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_capped(path, MAX_CONFIG_FILE).map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })?;
    parse(path, &text)
}

/// Parse and check configuration text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let located = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
        let (line, column) = line_column(text, span.map_or(0, |s| s.start));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            key,
            message,
        }
    };
    let root = toml::de::DeTable::parse(text)
        .map_err(|e| located(e.span(), "(syntax)".to_string(), e.message().to_string()))?;
    // each section, route and authenticator on its own first, so that one run reports
    // every mistake of the file instead of the first
    let mut errors: Vec<(Option<std::ops::Range<usize>>, String, String)> = section_errors(&root);
    if !errors.is_empty() {
        errors.sort_by_key(|(span, _, _)| span.as_ref().map_or(0, |s| s.start));
        let mut all: Vec<ConfigError> = errors
            .into_iter()
            .map(|(span, key, message)| located(span, key, message))
            .collect();
        return Err(if all.len() == 1 {
            all.remove(0)
        } else {
            ConfigError::Many(all)
        });
    }
    let config: FileConfig = serde_path_to_error::deserialize(toml::Deserializer::from(root))
        .map_err(|e| {
            let key = key_of(&e.path().to_string(), e.inner().message());
            located(e.inner().span(), key, e.inner().message().to_string())
        })?;
    check(&config).map_err(|(span, key, message)| located(Some(span), key, message))?;
    let mut config = config;
    config.source = Source {
        path: path.to_path_buf(),
        text: text.to_string(),
    };
    Ok(config)
}

type Located = (std::ops::Range<usize>, String, String);

/// The errors of each top-level section, each `[[routes]]` entry and each `[auth.NAME]`
/// deserialized apart (spans stay those of the whole text): (span, key, message).
fn section_errors(
    root: &toml::Spanned<toml::de::DeTable<'_>>,
) -> Vec<(Option<std::ops::Range<usize>>, String, String)> {
    use toml::de::{DeString, DeTable, DeValue};
    let span = root.span();
    let alone = |key: &toml::Spanned<DeString<'_>>, value: DeValue<'_>, index: Option<String>| {
        let mut table = DeTable::new();
        table.insert(key.clone(), toml::Spanned::new(span.clone(), value));
        let de = toml::Deserializer::from(toml::Spanned::new(span.clone(), table));
        serde_path_to_error::deserialize::<_, FileConfig>(de)
            .err()
            .map(|e| {
                let mut key = key_of(&e.path().to_string(), e.inner().message());
                if let Some(index) = &index {
                    // the entry was alone at [0]: give it its place in the file
                    key = key.replacen("routes[0]", index, 1);
                }
                (e.inner().span(), key, e.inner().message().to_string())
            })
    };
    let mut errors = Vec::new();
    for (key, value) in root.get_ref().iter() {
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("routes", DeValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let mut one = toml::de::DeArray::new();
                    one.push(item.clone());
                    let one = DeValue::Array(one);
                    errors.extend(alone(key, one, Some(format!("routes[{i}]"))));
                }
            }
            ("auth", DeValue::Table(named)) => {
                for (name, section) in named.iter() {
                    let mut one = DeTable::new();
                    one.insert(name.clone(), section.clone());
                    errors.extend(alone(key, DeValue::Table(one), None));
                }
            }
            _ => errors.extend(alone(key, value.get_ref().clone(), None)),
        }
    }
    errors
}

/// The checks that look at more than one value.
fn check(config: &FileConfig) -> Result<(), Located> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let prefix = &route.prefix.get_ref().0;
        if let Some(first) = seen.insert(prefix, i) {
            return Err((
                route.prefix.span(),
                format!("routes[{i}].prefix"),
                format!("duplicate prefix \"{prefix}\": routes[{first}] already has it"),
            ));
        }
    }
    for (i, route) in config.routes.iter().enumerate() {
        check_route(i, route)?;
        if let Some(names) = &route.auth {
            for name in &names.get_ref().0 {
                if !config.auth.contains_key(name) {
                    let known: Vec<&str> = config.auth.keys().map(String::as_str).collect();
                    return Err((
                        names.span(),
                        format!("routes[{i}].auth"),
                        format!(
                            "unknown authenticator \"{name}\": define [auth.{name}] (defined: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
    }
    if let Some(tls) = &config.tls {
        if tls.listen.is_empty() {
            return Err((
                tls.certificates.span(),
                "tls.listen".to_string(),
                "[tls] needs at least one listen address".to_string(),
            ));
        }
        if tls.certificates.get_ref().is_empty() {
            return Err((
                tls.certificates.span(),
                "tls.certificates".to_string(),
                "[tls] needs at least one [[tls.certificates]]".to_string(),
            ));
        }
    }
    let cors = &config.cors;
    if *cors.allow_credentials.get_ref() && cors.allow_origins.get_ref().contains(&Origin::Any) {
        return Err((
            cors.allow_credentials.span(),
            "cors.allow_credentials".to_string(),
            "allow_credentials = true needs a list of origins: browsers refuse credentials with \"*\""
                .to_string(),
        ));
    }
    Ok(())
}

/// A route's balancing and TLS settings must fit together.
fn check_route(i: usize, route: &RouteSection) -> Result<(), Located> {
    let upstreams = &route.upstreams.get_ref().0;
    let mut seen = HashMap::new();
    for (j, u) in upstreams.iter().enumerate() {
        if let Some(first) = seen.insert(u.addr, j) {
            return Err((
                route.upstreams.span(),
                format!("routes[{i}].upstreams[{j}]"),
                format!(
                    "{} ({}) is already upstreams[{first}]: list an instance once and give it a weight",
                    u.authority, u.addr
                ),
            ));
        }
    }
    let hashing = *route.balance.get_ref() == BalanceKind::Hash;
    match (&route.hash_key, hashing) {
        (Some(key), false) => {
            return Err((
                key.span(),
                format!("routes[{i}].hash_key"),
                "hash_key is used only with balance = \"hash\"".to_string(),
            ))
        }
        (None, true) => {
            return Err((
                route.balance.span(),
                format!("routes[{i}].balance"),
                "balance = \"hash\" needs a hash_key: \"client_ip\", \"path\" or \"header:NAME\""
                    .to_string(),
            ))
        }
        _ => {}
    }
    if *route.tls_verify.get_ref() {
        if let Some(u) = upstreams
            .iter()
            .find(|u| u.tls && u.host.parse::<IpAddr>().is_ok())
        {
            return Err((
                route.upstreams.span(),
                format!("routes[{i}].upstreams"),
                format!(
                    "https upstream {} is an IP address: its certificate is checked against a host name, so write https://NAME:PORT, or set tls_verify = false",
                    u.authority
                ),
            ));
        }
    }
    Ok(())
}

/// The key path of an error: serde's path without toml's internal span markers, plus the
/// field a "missing field" message names.
fn key_of(path: &str, message: &str) -> String {
    let path = path.replace(".$__serde_spanned_private_value", "");
    let path = if path == "." { String::new() } else { path };
    let field = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|lead| message.strip_prefix(lead))
        .and_then(|rest| rest.split('`').next())
        .filter(|f| !path.ends_with(&format!(".{f}")) && path != *f);
    match (path.is_empty(), field) {
        (true, Some(f)) => f.to_string(),
        (false, Some(f)) => format!("{path}.{f}"),
        (true, None) => "(top level)".to_string(),
        (false, None) => path,
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<FileConfig, ConfigError> {
        parse(Path::new("test.toml"), text)
    }

    fn error_of(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    const ROUTE: &str = "[[routes]]\nprefix = \"/users\"\nupstreams = [\"127.0.0.1:7002\"]\n";

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "15",
            "s",
            "1.5s",
            "-1s",
            "15x",
            " 15s",
            "15 s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn an_idle_timeout_is_a_duration_or_off() {
        assert_eq!("off".parse(), Ok(IdleTimeout(None)));
        assert_eq!(
            "90s".parse(),
            Ok(IdleTimeout(Some(Duration::from_secs(90))))
        );
        for bad in ["0s", "Off", "none", "", "15"] {
            assert!(
                bad.parse::<IdleTimeout>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let err = error_of(&format!("[timeouts]\nupstream_idle = \"0s\"\n{ROUTE}"));
        assert!(
            err.contains("test.toml:2") && err.contains("timeouts.upstream_idle"),
            "{err}"
        );
        assert!(err.contains("or \"off\""), "{err}");
    }

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!("/users/".parse::<Prefix>().unwrap().0, "/users");
        assert_eq!("/".parse::<Prefix>().unwrap().0, "/");
        assert_eq!("/a/b".parse::<Prefix>().unwrap().0, "/a/b");
        assert!("/é".parse::<Prefix>().unwrap_err().contains("ASCII"));
        for bad in [
            "users", "/a//b", "/a/../b", "/a/./b", "/a?x=1", "/a b", "/a%2F", "",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn upstreams_accept_url_or_host_port() {
        let u: Upstream = "http://127.0.0.1:7002".parse().unwrap();
        assert_eq!(u.addr, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(u.authority, "127.0.0.1:7002");
        let u: Upstream = "127.0.0.1:7002".parse().unwrap();
        assert_eq!(u.authority, "127.0.0.1:7002");
        let u: Upstream = "http://[::1]:8080".parse().unwrap();
        assert_eq!(u.addr, "[::1]:8080".parse().unwrap());
        let u: Upstream = "http://127.0.0.1".parse().unwrap();
        assert_eq!(u.authority, "127.0.0.1:80");
        for bad in [
            "ftp://x:1",
            "http://",
            "http://127.0.0.1:7002/api",
            "http://a@b:1",
            "::",
        ] {
            assert!(
                bad.parse::<Upstream>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse_str(
            r#"
[server]
listen = ["0.0.0.0:5000"]
threads = 2
trusted_proxies = ["10.0.0.0/8", "127.0.0.1"]
[access_log]
format = "json"
[timeouts]
connect = "2s"
read = "15s"
[rate_limit]
requests = 20
window = "1m"
[cors]
allow_origins = ["https://a.example"]
allow_credentials = true
max_age = 600
[security_headers]
remove = ["Server"]
set = { "Content-Security-Policy" = "default-src 'none'" }
[[routes]]
prefix = "/users"
upstreams = ["http://127.0.0.1:7002"]
timeouts = { read = "30s" }
rate_limit = { requests = 100, window = "1m" }
[[routes]]
prefix = "/orders"
upstreams = ["127.0.0.1:7003"]
rate_limit = false
"#,
        )
        .unwrap();
        assert_eq!(c.routes.len(), 2);
        assert!(matches!(c.routes[1].rate_limit, Some(RouteRateLimit::Off)));
        assert!(matches!(
            c.routes[0].rate_limit,
            Some(RouteRateLimit::Own(RateLimitPolicy {
                requests: Count(100),
                ..
            }))
        ));
        assert_eq!(c.access_log.format, LogFormat::Json);
        assert_eq!(c.cors.max_age, Some(MaxAge(600)));
        assert_eq!(c.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = error_of(&format!("{ROUTE}strip_prefx = true\n"));
        assert!(e.starts_with("test.toml:4:1:"), "{e}");
        assert!(e.contains("key `routes[0].strip_prefx`"), "{e}");
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e = error_of("[timeouts]\nconnect = \"2s\"\nread = \"15x\"\n");
        assert!(e.starts_with("test.toml:3:8:"), "{e}");
        assert!(e.contains("key `timeouts.read`"), "{e}");
        assert!(e.contains("invalid duration \"15x\""), "{e}");
    }

    #[test]
    fn bad_upstream_names_line_and_key() {
        let e =
            error_of("[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\", \"ftp://x\"]\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("key `routes[0].upstreams[1]`"), "{e}");
        assert!(e.contains("invalid upstream \"ftp://x\""), "{e}");
    }

    #[test]
    fn empty_upstream_list_names_line_and_key() {
        let e = error_of("[[routes]]\nprefix = \"/a\"\nupstreams = []\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("key `routes[0].upstreams`"), "{e}");
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn duplicate_prefix_names_the_second_one() {
        let e = error_of(&format!("{ROUTE}{ROUTE}"));
        assert!(e.starts_with("test.toml:5:10:"), "{e}");
        assert!(e.contains("key `routes[1].prefix`"), "{e}");
        assert!(e.contains("routes[0] already has it"), "{e}");
    }

    #[test]
    fn duplicate_prefix_is_found_after_normalisation() {
        let text =
            format!("{ROUTE}[[routes]]\nprefix = \"/users/\"\nupstreams = [\"127.0.0.1:1\"]\n");
        assert!(error_of(&text).contains("duplicate prefix"));
    }

    #[test]
    fn missing_upstreams_is_named() {
        let e = error_of("[[routes]]\nprefix = \"/a\"\n");
        assert!(e.contains("key `routes[0].upstreams`"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = error_of("[server\nlisten = 1\n");
        assert!(e.starts_with("test.toml:1:"), "{e}");
    }

    #[test]
    fn wrong_types_and_ranges_are_refused() {
        for (text, key) in [
            ("[server]\nthreads = 0\n", "server.threads"),
            ("[server]\nlisten = [\"localhost\"]\n", "server.listen[0]"),
            ("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "server.trusted_proxies[0]"),
            ("[rate_limit]\nrequests = 0\nwindow = \"1m\"\n", "rate_limit.requests"),
            ("[rate_limit]\nrequests = 5\nwindow = \"500ms\"\n", "rate_limit.window"),
            ("[access_log]\nformat = \"xml\"\n", "access_log.format"),
            ("[cors]\nallow_origins = [\"https://a.example/\"]\n", "cors.allow_origins[0]"),
            ("[security_headers]\nremove = [\"Bad Header\"]\n", "security_headers.remove[0]"),
            (
                "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nrate_limit = \"yes\"\n",
                "routes[0].rate_limit",
            ),
        ] {
            let e = error_of(text);
            assert!(e.contains(&format!("key `{key}`")), "{text:?} gave {e}");
        }
    }

    #[test]
    fn weighted_upstreams_and_balancing_parse() {
        let c = parse_str(
            "[[routes]]\nprefix = \"/u\"\nupstreams = [\"127.0.0.1:1\", { url = \"http://127.0.0.1:2\", weight = 3 }]\nbalance = \"hash\"\nhash_key = \"header:X-User\"\nretries = 1\nhealth_check = { interval = \"1s\", path = \"/healthz\" }\npassive = { failures = 2, cooldown = \"5s\" }\n",
        )
        .unwrap();
        let r = &c.routes[0];
        let weights: Vec<u32> = r.upstreams.get_ref().0.iter().map(|u| u.weight).collect();
        assert_eq!(weights, vec![1, 3]);
        assert_eq!(*r.balance.get_ref(), BalanceKind::Hash);
        assert_eq!(
            r.hash_key.as_ref().map(|k| k.get_ref().clone()),
            Some(HashKeySpec::Header("x-user".into()))
        );
        assert_eq!(r.retries, Retries(1));
        let hc = r.health_check.as_ref().unwrap();
        assert_eq!((hc.healthy.0, hc.unhealthy.0), (2, 3));
        assert_eq!(hc.timeout, Timeout(Duration::from_secs(1)));
        assert_eq!(r.passive.unwrap().failures, Threshold(2));
    }

    #[test]
    fn balancing_settings_must_fit_together() {
        let route = "[[routes]]\nprefix = \"/u\"\nupstreams = [\"127.0.0.1:1\"]\n";
        for (extra, key) in [
            ("hash_key = \"path\"\n", "routes[0].hash_key"),
            ("balance = \"hash\"\n", "routes[0].balance"),
            ("retries = 11\n", "routes[0].retries"),
            (
                "passive = { cooldown = \"10ms\" }\n",
                "routes[0].passive.cooldown",
            ),
            (
                "health_check = { path = \"healthz\" }\n",
                "routes[0].health_check.path",
            ),
            (
                "health_check = { healthy = 0 }\n",
                "routes[0].health_check.healthy",
            ),
        ] {
            let e = error_of(&format!("{route}{extra}"));
            assert!(e.contains(&format!("key `{key}`")), "{extra:?} gave {e}");
        }
        let twice =
            "[[routes]]\nprefix = \"/u\"\nupstreams = [\"127.0.0.1:1\", \"http://127.0.0.1:1\"]\n";
        assert!(error_of(twice).contains("already upstreams[0]"));
        let ip_tls = "[[routes]]\nprefix = \"/u\"\nupstreams = [\"https://127.0.0.1:1\"]\n";
        assert!(error_of(ip_tls).contains("tls_verify = false"));
        let ip_tls_unverified = format!("{ip_tls}tls_verify = false\n");
        assert!(parse_str(&ip_tls_unverified).is_ok());
    }

    #[test]
    fn credentials_with_wildcard_origin_are_refused() {
        let e = error_of("[cors]\nallow_credentials = true\n");
        assert!(e.contains("key `cors.allow_credentials`"), "{e}");
        assert!(e.starts_with("test.toml:2:"), "{e}");
    }

    #[test]
    fn an_empty_file_is_a_valid_config() {
        let c = parse_str("").unwrap();
        assert!(c.routes.is_empty());
        assert!(c.rate_limit.is_none());
        assert_eq!(c.server.listen.get_ref(), default_listen().get_ref());
    }
}
