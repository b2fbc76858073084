//! `[rate_limit]` and a route's `rate_limit` / `route_rate`: per-client budgets and the
//! shared store.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::values::parse_duration;
use super::values::Count;
use super::values::Timeout;
use super::values::Window;

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
    /// A Redis (or Valkey) node, cluster or Sentinel-watched master: then every policy
    /// is counted there, shared by every gateway that names the same store.
    #[serde(default)]
    pub store: Option<Spanned<StoreSpec>>,
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

/// `rate_limit.store`: where the shared counts live.
///
/// - `"redis://host:port"` (or `rediss://` for TLS): one node;
/// - `{ url = "rediss://host:port", ca = "ca.pem" }`: one node, trusting the CA in that file;
/// - `{ cluster = ["redis://h1:p1", ...] }`: a Redis Cluster, found from these nodes;
/// - `{ sentinels = ["redis://h1:26379", ...], master = "NAME" }`: the master that these
///   sentinels name, followed across failovers.
///
/// The table forms take `ca` too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub servers: StoreServers,
    /// A PEM file of the CAs to trust for `rediss://` instead of the system's.
    pub ca: Option<String>,
}

impl StoreSpec {
    /// One node at `url`, trusting the system's CAs.
    pub fn node(url: impl Into<String>) -> StoreSpec {
        StoreSpec {
            servers: StoreServers::Node(url.into()),
            ca: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreServers {
    Node(String),
    Cluster(Vec<String>),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// The table form of `rate_limit.store`, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreTable {
    url: Option<String>,
    cluster: Option<Vec<String>>,
    sentinels: Option<Vec<String>>,
    master: Option<String>,
    ca: Option<String>,
}

impl StoreTable {
    fn check(self) -> Result<StoreSpec, String> {
        let servers = match (self.url, self.cluster, self.sentinels, self.master) {
            (Some(url), None, None, None) => StoreServers::Node(url),
            (None, Some(nodes), None, None) if !nodes.is_empty() => StoreServers::Cluster(nodes),
            (None, None, Some(sentinels), Some(master)) if !sentinels.is_empty() => {
                StoreServers::Sentinel { sentinels, master }
            }
            (None, None, Some(_), None) => {
                return Err("sentinels need the name of the master they watch: add master = \"NAME\"".into())
            }
            (None, None, None, Some(_)) => {
                return Err("master names the master of a Sentinel setup: add sentinels = [\"redis://HOST:26379\"]".into())
            }
            (None, Some(_), None, None) | (None, None, Some(_), Some(_)) => {
                return Err("the list of servers is empty".into())
            }
            (None, None, None, None) => {
                return Err("say where the store is: url = \"redis://HOST:PORT\", cluster = [...] or sentinels = [...] with master".into())
            }
            _ => {
                return Err("give one of url, cluster or sentinels (with master), not several".into())
            }
        };
        Ok(StoreSpec {
            servers,
            ca: self.ca,
        })
    }
}

impl<'de> Deserialize<'de> for StoreSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StoreSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Redis URL, or a table with url, cluster or sentinels and master")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StoreSpec::node(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                StoreTable::deserialize(de::value::MapAccessDeserializer::new(map))?
                    .check()
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn default_sync() -> SyncInterval {
    SyncInterval(Duration::from_millis(50))
}

pub(super) fn default_store_timeout() -> Timeout {
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

pub(super) fn default_ipv6_prefix() -> Ipv6Prefix {
    Ipv6Prefix(64)
}

pub(super) fn default_max_clients() -> MaxClients {
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
