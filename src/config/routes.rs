//! `[[routes]]`: a prefix, its upstreams and how they are balanced, checked and reached,
//! and the route's own policies.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::default_true;
use super::files::read_capped;
use super::files::MAX_SIDE_FILE;
use super::rate_limit::RateLimitPolicy;
use super::rate_limit::RouteRateLimit;
use super::server::TimeoutsSection;
use super::values::parse_duration;
use super::values::BodySize;
use super::values::Cidr;
use super::values::Count;
use super::values::Prefix;
use super::values::Timeout;
use super::values::Token;
use super::values::Upstreams;

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
    /// Forward request header fields whose names hold `_` (nginx's
    /// `underscores_in_headers`); by default they are dropped, since CGI and WSGI stacks
    /// read `_` as `-` (`Content_Length` would become `Content-Length`).
    #[serde(default)]
    pub underscores_in_headers: bool,
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
    /// Store this route's answers (GET and HEAD) in the response cache.
    #[serde(default)]
    pub cache: Option<Spanned<super::cache::RouteCacheSection>>,
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

pub(super) fn default_balance() -> Spanned<BalanceKind> {
    Spanned::new(0..0, BalanceKind::RoundRobin)
}

pub(super) fn default_retries() -> Retries {
    Retries(2)
}

pub(super) fn default_tls_verify() -> Spanned<bool> {
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

pub(super) fn default_hc_interval() -> Interval {
    Interval(Duration::from_secs(5))
}

pub(super) fn default_hc_timeout() -> Timeout {
    Timeout(Duration::from_secs(1))
}

pub(super) fn default_healthy() -> Threshold {
    Threshold(2)
}

pub(super) fn default_unhealthy() -> Threshold {
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

pub(super) fn default_cooldown() -> Cooldown {
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
