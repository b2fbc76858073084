//! A route's upstream instances: which one a request goes to, and which ones are fit.
//!
//! Selection is done here rather than in pingora-load-balancing's `LoadBalancer`, so that a
//! request costs one atomic add (round robin) or a few arithmetic steps and never allocates:
//! weighted round robin walks a precomputed smooth schedule, random draws from cumulative
//! weights, hash walks a ketama ring (pingora-ketama) and least-request compares the
//! in-flight counts of two random instances. Pingora's load-balancing crate does the active
//! checking ([`TcpHealthCheck`], [`HttpHealthCheck`]) from [`HealthChecks`], a single
//! background service for every route; thresholds are applied here.
//!
//! An instance is *available* when its active checks say healthy and it is not ejected by
//! passive checks (too many consecutive proxy failures).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderValue;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::x509::X509;
use pingora_ketama::{Bucket, Continuum};

use crate::config::TimeoutsSection;

/// How requests are spread over instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    Hash(HashKey),
    LeastRequest,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Path,
    Header(http::HeaderName),
}

/// Active health checking of a route's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub interval: Duration,
    pub timeout: Duration,
    /// `None`: a TCP (or TLS) connect check; `Some`: `GET path` must answer 2xx or 3xx.
    pub path: Option<String>,
    pub healthy: u32,
    pub unhealthy: u32,
}

/// Passive checking: `failures` consecutive proxy failures eject an instance for `cooldown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveSpec {
    pub failures: u32,
    pub cooldown: Duration,
}

/// TLS to https upstreams.
#[derive(Clone, Default)]
pub struct TlsSpec {
    pub verify: bool,
    /// Extra trust anchors; `None` uses the system store.
    pub ca: Option<Arc<Box<[X509]>>>,
}

impl std::fmt::Debug for TlsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSpec")
            .field("verify", &self.verify)
            .field("ca_certificates", &self.ca.as_ref().map_or(0, |c| c.len()))
            .finish()
    }
}

/// What the compiler of a pool is given for one instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub addr: SocketAddr,
    pub weight: u32,
    pub tls: bool,
    /// The host name as written (SNI and certificate name for https).
    pub host: String,
    /// "host:port", the Host header upstreams get unless the route preserves it.
    pub authority: String,
}

impl InstanceSpec {
    /// Its identity across reloads: the URL, `http://host:port`, with the address it
    /// resolved to when the name is not one.
    pub fn identity(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.authority == self.addr.to_string() {
            format!("{scheme}://{}", self.authority)
        } else {
            format!("{scheme}://{} ({})", self.authority, self.addr)
        }
    }
}

/// One upstream instance and its live state.
#[derive(Debug)]
pub struct Instance {
    pub addr: SocketAddr,
    pub weight: u32,
    pub tls: bool,
    pub sni: String,
    pub host: HeaderValue,
    pub authority: Arc<str>,
    live: Arc<Live>,
}

/// What an instance has been through: its health and its load. It outlives a reload that
/// keeps the instance (same route, same URL), see [`LiveStates`].
#[derive(Debug)]
struct Live {
    /// Active health, as decided by the checker with its thresholds.
    healthy: AtomicBool,
    /// Consecutive check results against the current state (checker task only).
    streak: AtomicU32,
    /// Consecutive proxy failures (passive).
    failures: AtomicU32,
    /// Ejected until this many ms after the [`LiveStates`] epoch; 0 = not ejected.
    ejected_until: AtomicU64,
    in_flight: AtomicUsize,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            healthy: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }
}

/// The live state of every instance by route prefix and URL, for the life of the process:
/// a reload that keeps an instance keeps its health, ejection and requests in flight.
/// Entries go when no pool holds them any more.
pub struct LiveStates {
    epoch: Instant,
    by_key: Mutex<HashMap<String, Weak<Live>>>,
}

impl Default for LiveStates {
    fn default() -> Self {
        LiveStates {
            epoch: Instant::now(),
            by_key: Mutex::new(HashMap::new()),
        }
    }
}

impl LiveStates {
    /// The state of `url` under `route`: the one already held, or a fresh one.
    fn get(&self, route: &str, url: &str) -> Arc<Live> {
        let Ok(mut by_key) = self.by_key.lock() else {
            return Arc::new(Live::default());
        };
        by_key.retain(|_, live| live.strong_count() > 0);
        let key = format!("{route} {url}");
        if let Some(live) = by_key.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let live = Arc::new(Live::default());
        by_key.insert(key, Arc::downgrade(&live));
        live
    }
}

impl Instance {
    pub fn is_healthy(&self) -> bool {
        self.live.healthy.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.live.in_flight.load(Ordering::Relaxed)
    }

    /// The instance as the config writes it: `http://host:port` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// The instances that a request may not go to (again): the ones it already tried.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    low: u64,
    more: Vec<usize>,
}

impl Tried {
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.low |= 1 << i;
        } else if !self.more.contains(&i) {
            self.more.push(i);
        }
    }

    pub fn remove(&mut self, i: usize) {
        if i < 64 {
            self.low &= !(1 << i);
        } else {
            self.more.retain(|&x| x != i);
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            self.more.contains(&i)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.more.is_empty()
    }
}

/// What the balancer may look at for a request.
pub struct SelectInput<'a> {
    pub client_ip: Option<IpAddr>,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// A route's instances with the balancing and checking around them.
pub struct Pool {
    instances: Vec<Instance>,
    balance: Balance,
    /// Smooth weighted round-robin order of instance indexes.
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    /// Running sums of weights, for weighted random draws.
    cumulative: Vec<u64>,
    ring: Option<Continuum>,
    by_addr: HashMap<SocketAddr, usize>,
    pub retries: u32,
    passive: Option<PassiveSpec>,
    health: Option<HealthCheckSpec>,
    tls: TlsSpec,
    epoch: Instant,
    /// True when nothing can make an instance unavailable: selection skips the checks.
    always_available: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("instances", &self.instances)
            .field("balance", &self.balance)
            .field("retries", &self.retries)
            .field("passive", &self.passive)
            .field("health", &self.health)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Pool {
    pub fn new(
        specs: &[InstanceSpec],
        balance: Balance,
        retries: u32,
        passive: Option<PassiveSpec>,
        health: Option<HealthCheckSpec>,
        tls: TlsSpec,
        live: (&LiveStates, &str),
    ) -> Result<Pool, String> {
        let (live, route) = live;
        if specs.is_empty() {
            return Err("a route needs at least one upstream".into());
        }
        let mut instances = Vec::with_capacity(specs.len());
        let mut by_addr = HashMap::new();
        for (i, s) in specs.iter().enumerate() {
            if by_addr.insert(s.addr, i).is_some() {
                return Err(format!(
                    "upstream {} ({}) is listed twice; give it a weight instead",
                    s.authority, s.addr
                ));
            }
            let sni = if s.tls { s.host.clone() } else { String::new() };
            instances.push(Instance {
                addr: s.addr,
                weight: s.weight,
                tls: s.tls,
                sni,
                host: crate::wire::static_value(&s.authority)?,
                authority: Arc::from(s.authority.as_str()),
                live: live.get(route, &s.identity()),
            });
        }
        let weights: Vec<u32> = instances.iter().map(|i| i.weight).collect();
        let schedule = smooth_schedule(&weights);
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        let ring = matches!(balance, Balance::Hash(_)).then(|| {
            let buckets: Vec<Bucket> = instances
                .iter()
                .map(|i| Bucket::new(i.addr, i.weight))
                .collect();
            Continuum::new(&buckets)
        });
        let always_available = passive.is_none() && health.is_none();
        Ok(Pool {
            instances,
            balance,
            schedule,
            cursor: AtomicUsize::new(0),
            cumulative,
            ring,
            by_addr,
            retries,
            passive,
            health,
            tls,
            epoch: live.epoch,
            always_available,
        })
    }

    /// The balance's name as the config writes it.
    pub fn balance_name(&self) -> &'static str {
        match self.balance {
            Balance::RoundRobin => "round_robin",
            Balance::Random => "random",
            Balance::LeastRequest => "least_request",
            Balance::Hash(_) => "hash",
        }
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn instance(&self, i: usize) -> Option<&Instance> {
        self.instances.get(i)
    }

    pub fn health_check(&self) -> Option<&HealthCheckSpec> {
        self.health.as_ref()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Fit for traffic: healthy by the active checks and not ejected by the passive ones.
    pub fn is_available(&self, i: usize) -> bool {
        if self.always_available {
            return i < self.instances.len();
        }
        let Some(inst) = self.instances.get(i) else {
            return false;
        };
        if !inst.live.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = inst.live.ejected_until.load(Ordering::Relaxed);
        until == 0 || self.now_ms() >= until
    }

    /// Is there an available instance this request has not tried yet?
    pub fn has_untried(&self, tried: &Tried) -> bool {
        (0..self.instances.len()).any(|i| !tried.contains(i) && self.is_available(i))
    }

    /// Choose an instance for a request, skipping unavailable and already tried ones.
    pub fn select(&self, input: &SelectInput, tried: &Tried) -> Option<usize> {
        let n = self.instances.len();
        if n == 1 {
            return (!tried.contains(0) && self.is_available(0)).then_some(0);
        }
        let ok = |i: usize| !tried.contains(i) && self.is_available(i);
        match &self.balance {
            Balance::RoundRobin => self.round_robin(ok),
            Balance::Random => self.random(ok),
            Balance::LeastRequest => self.least_request(ok),
            Balance::Hash(key) => match self.hash_input(key, input) {
                Some(bytes) => self.by_hash(&bytes, ok),
                // nothing to hash (a missing header): spread like round robin
                None => self.round_robin(ok),
            },
        }
    }

    fn round_robin(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|step| self.schedule[(start + step) % len] as usize)
            .find(|&i| ok(i))
    }

    fn random(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total > 0 {
            let pick = self.weighted_draw(total);
            if ok(pick) {
                return Some(pick);
            }
        }
        // the draw hit an unfit instance: take the next fit one from a random start
        let n = self.instances.len();
        let start = fastrand::usize(..n);
        (0..n).map(|s| (start + s) % n).find(|&i| ok(i))
    }

    fn weighted_draw(&self, total: u64) -> usize {
        let r = fastrand::u64(..total);
        self.cumulative.partition_point(|&sum| sum <= r)
    }

    fn least_request(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.instances.len();
        let a = fastrand::usize(..n);
        let b = (a + 1 + fastrand::usize(..n - 1)) % n;
        match (ok(a), ok(b)) {
            (true, true) => {
                let load = |i: usize| self.instances[i].live.in_flight.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
            (true, false) => Some(a),
            (false, true) => Some(b),
            (false, false) => {
                // both unfit: the least loaded of the fit ones
                (0..n)
                    .filter(|&i| ok(i))
                    .min_by_key(|&i| self.instances[i].live.in_flight.load(Ordering::Relaxed))
            }
        }
    }

    fn hash_input(&self, key: &HashKey, input: &SelectInput) -> Option<Vec<u8>> {
        match key {
            HashKey::ClientIp => input.client_ip.map(|ip| match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            }),
            HashKey::Path => Some(input.path.as_bytes().to_vec()),
            HashKey::Header(name) => input.headers.get(name).map(|v| v.as_bytes().to_vec()),
        }
    }

    /// The ketama ring's instance for `key`, walking on past unfit ones so that only
    /// their keys move.
    fn by_hash(&self, key: &[u8], ok: impl Fn(usize) -> bool) -> Option<usize> {
        let ring = self.ring.as_ref()?;
        for addr in ring.node_iter(key).take(self.instances.len() * 160 + 1) {
            if let Some(&i) = self.by_addr.get(addr) {
                if ok(i) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The Pingora peer for an instance, with the route's timeouts.
    pub fn peer(&self, i: usize, timeouts: &Timeouts) -> Option<HttpPeer> {
        let inst = self.instances.get(i)?;
        let mut peer = HttpPeer::new(inst.addr, inst.tls, inst.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(timeouts.connect);
        o.read_timeout = Some(timeouts.read);
        o.write_timeout = Some(timeouts.write);
        o.idle_timeout = timeouts.upstream_idle;
        if inst.tls {
            // the TLS handshake counts against the connect timeout too
            o.total_connection_timeout = Some(timeouts.connect);
            o.verify_cert = self.tls.verify;
            o.verify_hostname = self.tls.verify;
            o.ca = self.tls.ca.clone();
        }
        Some(peer)
    }

    /// A request is going to instance `i` (for least-request).
    pub fn begin(&self, i: usize) {
        // counted under every balance: least_request reads it, the status API shows it,
        // and a reload that changes the balance must find it right
        if let Some(inst) = self.instances.get(i) {
            inst.live.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request to instance `i` is over.
    pub fn end(&self, i: usize) {
        if let Some(inst) = self.instances.get(i) {
            inst.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The instance answered: its run of failures is over.
    pub fn report_success(&self, i: usize) {
        if self.passive.is_none() {
            return;
        }
        if let Some(inst) = self.instances.get(i) {
            // read first: an instance that is doing fine is never written to
            if inst.live.failures.load(Ordering::Relaxed) != 0 {
                inst.live.failures.store(0, Ordering::Relaxed);
            }
        }
    }

    /// The instance failed a proxied request (refused, reset, timed out). Returns true
    /// when this failure ejected it.
    pub fn report_failure(&self, i: usize) -> bool {
        let (Some(passive), Some(inst)) = (self.passive, self.instances.get(i)) else {
            return false;
        };
        let failures = inst.live.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < passive.failures {
            return false;
        }
        inst.live.failures.store(0, Ordering::Relaxed);
        let until = self.now_ms() + passive.cooldown.as_millis() as u64;
        inst.live
            .ejected_until
            .store(until.max(1), Ordering::Relaxed);
        log::warn!(
            "upstream {} ejected for {:?} after {} consecutive failures",
            inst.authority,
            passive.cooldown,
            passive.failures
        );
        true
    }

    /// Seconds a client should wait when no instance is available: until the first
    /// ejection ends, or one health-check interval.
    pub fn retry_after(&self) -> u32 {
        let now = self.now_ms();
        let ejection = self
            .instances
            .iter()
            .filter(|i| i.live.healthy.load(Ordering::Relaxed))
            .map(|i| i.live.ejected_until.load(Ordering::Relaxed))
            .filter(|&until| until > now)
            .min()
            .map(|until| until - now);
        let interval = self.health.as_ref().map(|h| h.interval.as_millis() as u64);
        let ms = ejection.or(interval).unwrap_or(1000);
        (ms.div_ceil(1000) as u32).max(1)
    }

    /// Record one active check result for instance `i`, applying the thresholds.
    fn record_check(&self, i: usize, passed: bool, spec: &HealthCheckSpec) {
        let Some(inst) = self.instances.get(i) else {
            return;
        };
        let healthy = inst.live.healthy.load(Ordering::Relaxed);
        if passed == healthy {
            inst.live.streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = inst.live.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if passed { spec.healthy } else { spec.unhealthy };
        if streak >= needed {
            inst.live.healthy.store(passed, Ordering::Relaxed);
            inst.live.streak.store(0, Ordering::Relaxed);
            if passed {
                log::info!("upstream {} is healthy again", inst.authority);
            } else {
                log::warn!(
                    "upstream {} failed {} health checks in a row: taken out",
                    inst.authority,
                    needed
                );
            }
        }
    }

    /// The checker for instance `i`, built from Pingora's load-balancing crate.
    fn checker(
        &self,
        i: usize,
        spec: &HealthCheckSpec,
    ) -> Option<Box<dyn HealthCheck + Send + Sync>> {
        let inst = self.instances.get(i)?;
        // thresholds are applied by `record_check`, so each check counts once here
        Some(match &spec.path {
            None => {
                let mut tcp = if inst.tls {
                    TcpHealthCheck::new_tls(&inst.sni)
                } else {
                    TcpHealthCheck::new()
                };
                tcp.peer_template.options.connection_timeout = Some(spec.timeout);
                tcp.peer_template.options.total_connection_timeout = Some(spec.timeout);
                tcp.peer_template.options.verify_cert = self.tls.verify;
                tcp.peer_template.options.verify_hostname = self.tls.verify;
                tcp.peer_template.options.ca = self.tls.ca.clone();
                tcp
            }
            Some(path) => {
                let mut hc = HttpHealthCheck::new(&inst.authority, inst.tls);
                hc.req.set_raw_path(path.as_bytes()).ok()?;
                hc.peer_template.sni = inst.sni.clone();
                let o = &mut hc.peer_template.options;
                o.connection_timeout = Some(spec.timeout);
                o.total_connection_timeout = Some(spec.timeout);
                o.read_timeout = Some(spec.timeout);
                o.write_timeout = Some(spec.timeout);
                o.verify_cert = self.tls.verify;
                o.verify_hostname = self.tls.verify;
                o.ca = self.tls.ca.clone();
                hc.validator = Some(Box::new(|resp| {
                    if resp.status.is_success() || resp.status.is_redirection() {
                        Ok(())
                    } else {
                        pingora::Error::e_explain(
                            pingora::ErrorType::HTTPStatus(resp.status.as_u16()),
                            "health check answered an error status",
                        )
                    }
                }));
                Box::new(hc)
            }
        })
    }

    /// Check every instance once, in parallel, each bounded by the check timeout.
    async fn check_all(
        &self,
        checkers: &[(usize, Box<dyn HealthCheck + Send + Sync>)],
        spec: &HealthCheckSpec,
    ) {
        let checks = checkers.iter().map(|(i, checker)| async move {
            let backend = Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(self.instances[*i].addr),
                weight: 1,
                ext: Default::default(),
            };
            let passed = matches!(
                tokio::time::timeout(spec.timeout, checker.check(&backend)).await,
                Ok(Ok(()))
            );
            (*i, passed)
        });
        for (i, passed) in futures::future::join_all(checks).await {
            self.record_check(i, passed, spec);
        }
    }

    /// Run this pool's active checks until shutdown.
    pub async fn run_health_checks(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        let Some(spec) = self.health.clone() else {
            return;
        };
        let checkers: Vec<_> = (0..self.instances.len())
            .filter_map(|i| self.checker(i, &spec).map(|c| (i, c)))
            .collect();
        loop {
            self.check_all(&checkers, &spec).await;
            tokio::select! {
                _ = tokio::time::sleep(spec.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The smooth weighted round-robin order (nginx's algorithm) over one full cycle:
/// weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / g)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One background service that runs the active health checks of every route.
pub struct HealthChecks {
    pools: Vec<Arc<Pool>>,
}

impl HealthChecks {
    pub fn new(pools: Vec<Arc<Pool>>) -> HealthChecks {
        HealthChecks {
            pools: pools.into_iter().filter(|p| p.health.is_some()).collect(),
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks = self
            .pools
            .iter()
            .map(|p| tokio::spawn(p.clone().run_health_checks(shutdown.clone())));
        futures::future::join_all(tasks).await;
    }
}

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
    pub fn resolve(over: &TimeoutsSection, base: Timeouts) -> Timeouts {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16, weight: u32) -> InstanceSpec {
        InstanceSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            tls: false,
            host: "127.0.0.1".into(),
            authority: format!("127.0.0.1:{port}"),
        }
    }

    fn pool(weights: &[u32], balance: Balance, passive: Option<PassiveSpec>) -> Pool {
        let specs: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| spec(7000 + i as u16, w))
            .collect();
        Pool::new(
            &specs,
            balance,
            2,
            passive,
            None,
            TlsSpec::default(),
            (&LiveStates::default(), "/"),
        )
        .unwrap()
    }

    fn input(headers: &http::HeaderMap) -> SelectInput<'_> {
        SelectInput {
            client_ip: Some("10.0.0.1".parse().unwrap()),
            path: "/x",
            headers,
        }
    }

    fn counts(p: &Pool, n: usize) -> Vec<usize> {
        let h = http::HeaderMap::new();
        let mut c = vec![0; p.instances.len()];
        for _ in 0..n {
            c[p.select(&input(&h), &Tried::default()).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[2, 2]), vec![0, 1]);
        assert_eq!(smooth_schedule(&[1]), vec![0]);
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let p = pool(&[1, 1, 2], Balance::RoundRobin, None);
        assert_eq!(counts(&p, 4000), vec![1000, 1000, 2000]);
    }

    #[test]
    fn random_follows_weights_roughly() {
        let p = pool(&[1, 3], Balance::Random, None);
        let c = counts(&p, 40_000);
        let share = c[1] as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&share), "{c:?}");
    }

    #[test]
    fn tried_instances_are_skipped() {
        let p = pool(&[1, 1, 1], Balance::RoundRobin, None);
        let h = http::HeaderMap::new();
        let mut tried = Tried::default();
        tried.insert(0);
        tried.insert(2);
        for _ in 0..10 {
            assert_eq!(p.select(&input(&h), &tried), Some(1));
        }
        tried.insert(1);
        assert_eq!(p.select(&input(&h), &tried), None);
        assert!(!p.has_untried(&tried));
    }

    #[test]
    fn passive_failures_eject_then_cooldown_restores() {
        let passive = PassiveSpec {
            failures: 2,
            cooldown: Duration::from_millis(200),
        };
        let p = pool(&[1, 1], Balance::RoundRobin, Some(passive));
        assert!(!p.report_failure(0));
        p.report_success(0);
        assert!(!p.report_failure(0), "a success reset the run");
        assert!(p.report_failure(0));
        assert!(!p.is_available(0));
        assert_eq!(counts(&p, 10), vec![0, 10]);
        std::thread::sleep(Duration::from_millis(250));
        assert!(p.is_available(0));
    }

    #[test]
    fn hash_keeps_keys_and_moves_only_the_lost_instances_keys() {
        let passive = PassiveSpec {
            failures: 1,
            cooldown: Duration::from_secs(60),
        };
        let p = pool(&[1, 1, 1], Balance::Hash(HashKey::Path), Some(passive));
        let h = http::HeaderMap::new();
        let pick = |path: &str| {
            p.select(
                &SelectInput {
                    client_ip: None,
                    path,
                    headers: &h,
                },
                &Tried::default(),
            )
            .unwrap()
        };
        let keys: Vec<String> = (0..3000).map(|k| format!("/k{k}")).collect();
        let before: Vec<usize> = keys.iter().map(|k| pick(k)).collect();
        assert_eq!(before, keys.iter().map(|k| pick(k)).collect::<Vec<_>>());
        p.report_failure(1);
        let after: Vec<usize> = keys.iter().map(|k| pick(k)).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*b, 1, "only keys of the lost instance move");
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.2..0.47).contains(&share), "moved {share}");
    }

    #[test]
    fn least_request_prefers_the_idle_instance() {
        let p = pool(&[1, 1], Balance::LeastRequest, None);
        for _ in 0..5 {
            p.begin(0);
        }
        assert_eq!(counts(&p, 20), vec![0, 20]);
        for _ in 0..5 {
            p.end(0);
        }
        assert_eq!(p.instances[0].in_flight(), 0);
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let specs = [spec(7000, 1)];
        let hc = HealthCheckSpec {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            path: None,
            healthy: 2,
            unhealthy: 3,
        };
        let p = Pool::new(
            &specs,
            Balance::RoundRobin,
            0,
            None,
            Some(hc.clone()),
            TlsSpec::default(),
            (&LiveStates::default(), "/"),
        )
        .unwrap();
        p.record_check(0, false, &hc);
        p.record_check(0, false, &hc);
        p.record_check(0, true, &hc);
        p.record_check(0, false, &hc);
        assert!(p.is_available(0), "failures were not consecutive");
        p.record_check(0, false, &hc);
        p.record_check(0, false, &hc);
        assert!(!p.is_available(0));
        p.record_check(0, true, &hc);
        assert!(!p.is_available(0));
        p.record_check(0, true, &hc);
        assert!(p.is_available(0));
    }

    #[test]
    fn duplicate_instances_are_refused() {
        let specs = [spec(7000, 1), spec(7000, 2)];
        assert!(Pool::new(
            &specs,
            Balance::RoundRobin,
            0,
            None,
            None,
            TlsSpec::default(),
            (&LiveStates::default(), "/"),
        )
        .is_err());
    }

    #[test]
    fn a_rebuilt_pool_keeps_the_state_of_the_instances_it_keeps() {
        let live = LiveStates::default();
        let passive = Some(PassiveSpec {
            failures: 1,
            cooldown: Duration::from_secs(30),
        });
        let build = |ports: &[u16], route: &str| {
            let specs: Vec<_> = ports.iter().map(|&p| spec(p, 1)).collect();
            Pool::new(
                &specs,
                Balance::RoundRobin,
                0,
                passive,
                None,
                TlsSpec::default(),
                (&live, route),
            )
            .unwrap()
        };
        let old = build(&[7000, 7001], "/a");
        old.begin(1);
        assert!(old.report_failure(0), "ejected");
        let new = build(&[7002, 7000, 7001], "/a");
        assert!(new.is_available(0), "a new instance starts fresh");
        assert!(!new.is_available(1), "the ejection survives");
        assert_eq!(new.instances[2].in_flight(), 1, "so do requests in flight");
        old.end(1);
        assert_eq!(new.instances[2].in_flight(), 0);
        let other_route = build(&[7000], "/b");
        assert!(other_route.is_available(0), "another route counts apart");
    }
}
