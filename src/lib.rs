//! Pylon: an API gateway on Cloudflare's Pingora.
//!
//! One process in front of many HTTP services: it routes by path prefix, limits each
//! client's rate, answers CORS preflights, adds security headers, maps upstream trouble to
//! JSON 502/504 answers and logs every request.
//!
//! # Layout
//! The modules stand in layers, bottom to top. A module imports from its own layer and the
//! layers below, never above (`tests/layers.rs` reads every `use crate::` and keeps it so);
//! when a lower module needs something from above, the type moves down or the value comes
//! in as a parameter.
//!
//! 1. **Ground**, importing nothing of the crate:
//!    - [`wire`]: HTTP field names and values (interned), and the gateway's own error
//!      answers ([`wire::GatewayError`]: status, fields, JSON body).
//!    - [`traffic`]: open client connections and their cap, requests in flight, draining.
//!    - [`router`]: the prefix table (longest match on segment boundaries).
//!    - `scratch`: reading a socket through one buffer per thread, so that a silent
//!      connection holds none.
//! 2. **File format**: [`config`], the TOML as users write it, one file per section, with
//!    self-checking values and errors that name the file, line and key. Knows no component.
//! 3. **Components**, one concern each, each compiled from its own section:
//!    - `upstream`: a route's instances: balancing, passive ejection, health checks,
//!      timeouts.
//!    - [`limits`]: per-client rate limits, the shared store, in-flight and route caps.
//!    - [`auth`]: named authenticators (JWT, API keys, OAuth2 introspection).
//!    - [`policy`]: what a route applies: methods, client lists, header transforms, CORS and
//!      the security headers.
//!    - [`forwarding`]: client IP through trusted proxies, X-Forwarded-*, request ids.
//!    - `tls`: certificates checked at load, ticket keys, the listeners' settings.
//!    - [`memory`]: giving the allocator's freed pages back once clients leave.
//!    - `cache`: the response cache: its in-memory store, what a route stores, the key
//!      and `Cache-Status`.
//!    - `relay`: the bytes of an upgraded connection (a WebSocket after its 101) between
//!      the client and the upstream, with no buffer while both are silent.
//!    - `store`: the way to Redis (one node, a cluster, Sentinel's master; TLS), for the
//!      shared limits and the fleet's policy document.
//! 4. **Telemetry**: [`telemetry`], counting, the access log, and the one place a finished
//!    request becomes both ([`telemetry::exchange`]).
//! 5. **Runtime**: [`runtime`], the compiled form a request reads, and [`runtime::Shared`],
//!    what outlives a reload. It never reads a file and never serves.
//! 6. **Control**: [`control`], the one swap point ([`control::Current`]), where
//!    configuration comes from ([`control::FileSource`]: the file and SIGHUP) and the
//!    fleet that shares one policy document through a store ([`control::fleet`]).
//! 7. **Planes**, side by side, never importing each other:
//!    - `gateway`: the data plane, Pingora's `ProxyHttp` phases, which orchestrate the
//!      components.
//!    - `admin`: the admin plane: /metrics, /healthz, /readyz, /api/status, a status page.
//! 8. **Edge**: `edge`, the client connection loop in front of Pingora: head timeouts,
//!    screening of malformed heads with the gateway's own answers, pipelining, the cap.
//! 9. **Process**: [`server`], the command line and `-t`, the wiring into a Pingora server,
//!    housekeeping, signals and upgrades; `main.rs` is a thin binary over it.
//!
//! Public modules are the ones `benches/` and `tests/` reach; the rest are the crate's own.

pub(crate) mod admin;
pub mod auth;
pub(crate) mod cache;
pub mod config;
pub mod control;
pub(crate) mod edge;
pub mod forwarding;
pub(crate) mod gateway;
pub mod limits;
pub mod memory;
pub mod policy;
pub(crate) mod relay;
pub mod router;
pub mod runtime;
pub(crate) mod scratch;
pub mod server;
pub(crate) mod store;
pub mod telemetry;
pub(crate) mod tls;
pub mod traffic;
pub(crate) mod upstream;
pub mod wire;
