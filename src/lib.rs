//! Pylon: an API gateway on Cloudflare's Pingora.
//!
//! One process in front of many HTTP services: it routes by path prefix, limits each
//! client's rate, answers CORS preflights, adds security headers, maps upstream trouble to
//! JSON 502/504 answers and logs every request.
//!
//! # Layout
//! - [`config`]: the TOML file's structs and [`config::load`]; errors name file, line and key.
//! - [`runtime`]: the compiled form the proxy reads (routes, policies, header values), and
//!   the state that outlives a reload.
//! - [`reload`]: the one swap point: the runtime in force, replaced in place on SIGHUP.
//! - [`router`]: the prefix table (longest match on segment boundaries).
//! - [`edge`]: the client connection loop in front of Pingora: head timeouts, screening of
//!   malformed heads with the gateway's own answers, pipelining, the connection cap.
//! - [`gateway`]: the Pingora `ProxyHttp` phases, which orchestrate the components below.
//! - [`limits`]: per-client rate limits on pingora-limits and the RateLimit header fields.
//! - [`headers`]: helmet's security headers and CORS.
//! - [`policy`]: route policies: methods, client allow/deny lists, body size, header
//!   transforms.
//! - [`forwarding`]: client IP through trusted proxies, X-Forwarded-*, request ids.
//! - [`access_log`]: combined/JSON lines, formatted on the request path, written off it.
//! - [`error`]: the gateway's own answers and the mapping from failures to them.
//! - [`upstream`]: a route's instances: balancing, passive ejection, active health checks.
//! - [`auth`]: named authenticators (JWT, API keys, OAuth2 introspection) that routes reference.
//! - [`metrics`]: per-thread counters and the Prometheus text at /metrics.
//! - [`admin`]: the admin listener: /metrics, /healthz, /readyz, /api/status, a status page.
//! - [`lifecycle`]: signals, draining, in-flight requests and the exit.
//! - [`memory`]: giving the allocator's freed pages back to the system once clients leave.
//! - [`server`]: the command line and the wiring into a Pingora server.
//! - [`tls`]: TLS termination: certificates checked at load, chosen per handshake by SNI.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod config;
pub mod edge;
pub mod error;
pub mod forwarding;
pub mod gateway;
pub mod headers;
pub mod lifecycle;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod upstream;
