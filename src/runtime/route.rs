//! One route, compiled: its pool of instances, its policies, its limits and its counters.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::cache::RouteCache;
use crate::config::{BalanceKind, HashKeySpec, LocatedError, RouteSection};
use crate::limits::caps::{InFlightCap, RouteRate};
use crate::limits::Policy;
use crate::policy::{Access, IpSet, Methods, Op, SecurityHeaders, Transform};
use crate::telemetry::metrics::RouteCounters;
use crate::upstream::{
    Balance, HashKey, HealthCheckSpec, InstanceSpec, LiveStates, PassiveSpec, Pool, Timeouts,
    TlsSpec,
};
use crate::wire::static_name;

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
    /// Forward header fields with `_` in their names (otherwise dropped).
    pub underscores_in_headers: bool,
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
    /// What the route stores in the response cache; `None`: nothing.
    pub cache: Option<RouteCache>,
}

/// A route's policies, compiled.
pub(super) struct RoutePolicies {
    pub methods: Option<Methods>,
    pub access: Option<Access>,
    pub request_headers: Option<Transform>,
    pub response_headers: Option<Transform>,
}

/// Compile route `i`'s methods, allow and deny lists and header transforms; an error
/// points at the key.
pub(super) fn compile_policies(
    i: usize,
    r: &RouteSection,
    security: &SecurityHeaders,
) -> Result<RoutePolicies, LocatedError> {
    let methods = r
        .methods
        .as_ref()
        .map(|m| {
            Methods::new(m.get_ref())
                .map_err(|e| LocatedError::new(m.span(), format!("routes[{i}].methods"), e))
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
                    .map_err(|e| LocatedError::new(t.span(), format!("routes[{i}].{key}"), e))
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
        crate::wire::names::KEEP_ALIVE,
        crate::wire::names::PROXY_CONNECTION,
    ]
    .contains(name)
    .then(|| "it frames the message or the connection, which the gateway manages".into())
}

/// A route's upstream instances with their balancing, checks and TLS settings.
pub(super) fn compile_pool(r: &RouteSection, live: &LiveStates) -> Result<Pool, String> {
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
