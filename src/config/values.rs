//! Values that check themselves: durations, sizes, listen addresses, CIDRs, prefixes,
//! upstream URLs, origins, tokens. Each `Deserialize` refuses a bad value, so the toml crate
//! points at it.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

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
pub(super) const MAX_DURATION_MS: u64 = 365 * 86_400_000;

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
