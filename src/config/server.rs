//! `[server]`, `[timeouts]`, `[limits]`, `[access_log]` and `[admin]`: the process, its
//! listeners, its clients' timeouts and its log.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::values::BodySize;
use super::values::Cidr;
use super::values::DurationValue;
use super::values::IdleTimeout;
use super::values::Listen;
use super::values::Threads;
use super::values::Timeout;

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
    /// Requests one client connection carries before the gateway closes it (nginx's
    /// `keepalive_requests`): HTTP/1.1's last answer says `Connection: close`, HTTP/2 sends
    /// GOAWAY and lets the open streams finish.
    #[serde(default = "default_keepalive_requests")]
    pub keepalive_requests: KeepaliveRequests,
}

pub(super) fn default_upstream_keepalive() -> KeepaliveCount {
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

pub(super) fn default_keepalive_requests() -> KeepaliveRequests {
    KeepaliveRequests(1000)
}

/// Requests per client connection: 1 to 4,294,967,295.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveRequests(pub u32);

impl<'de> Deserialize<'de> for KeepaliveRequests {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(n) if n >= 1 => Ok(KeepaliveRequests(n)),
            _ => Err(de::Error::custom(format!(
                "keepalive_requests must be between 1 and 4294967295, not {n}"
            ))),
        }
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
            keepalive_requests: default_keepalive_requests(),
        }
    }
}

pub(super) fn default_grace_period() -> DurationValue {
    DurationValue(Duration::ZERO)
}

pub(super) fn default_graceful_shutdown_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(30))
}

pub(super) fn default_max_connections() -> MaxConnections {
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

/// `[metrics]`: the older name of `[admin]`, which serves /metrics and more.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Listen,
}

/// `[admin]`: the admin listener (metrics, health, status API and page; the policy document's
/// API, which writes with its own token).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_listen")]
    pub listen: Listen,
    /// The environment variable that holds a bearer token; then everything but /healthz
    /// and /readyz needs `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token_env: Option<Spanned<String>>,
    /// The environment variable that holds the write token: `PUT /config` and
    /// `POST /config/validate` need `Authorization: Bearer <it>`. Without it, writes are off.
    #[serde(default)]
    pub write_token_env: Option<Spanned<String>>,
}

pub(super) fn default_admin_listen() -> Listen {
    Listen(SocketAddr::from(([127, 0, 0, 1], 9180)))
}

pub(super) fn default_listen() -> Spanned<Vec<Listen>> {
    Spanned::new(0..0, vec![Listen(SocketAddr::from(([0, 0, 0, 0], 5000)))])
}

pub(super) fn default_pid_file() -> String {
    "/tmp/pylon.pid".to_string()
}

pub(super) fn default_upgrade_sock() -> String {
    "/tmp/pylon_upgrade.sock".to_string()
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

pub(super) fn default_log_path() -> Spanned<String> {
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
    /// After a refusal that leaves the client's body unread (413, or the edge's own 4xx),
    /// the rest is read and dropped for at most this long in all ("30s"), so that a
    /// client that sends its whole body before reading gets the answer.
    pub lingering: Option<Timeout>,
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

pub(super) fn default_max_body() -> BodySize {
    BodySize(Some(16 << 20))
}
