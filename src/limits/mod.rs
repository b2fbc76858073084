//! Per-client rate limits, counted exactly in fixed windows, and the IETF RateLimit fields.
//!
//! - this module: the policies, counted in this process (fixed windows, exact);
//! - [`store`]: the same policies counted in Redis, shared by several gateways (sliding
//!   windows aligned to the clock);
//! - [`caps`]: a per-client cap on requests in flight and a route-wide request-rate cap,
//!   on pingora-limits.
//!
//! Each policy is `requests` per `window`, counted per client key (the client IP, or the
//! authenticated identity). All policies share one [`Limiter`]: a table of counters split
//! into shards behind their own locks, so the two worker threads rarely meet. A counter
//! remembers the window it counts; a request in a newer window starts it again, and stale
//! counters are swept as the table grows, so memory follows the clients seen in the last
//! window. The table is bounded (`rate_limit.max_clients`): when a shard is full even after
//! dropping stale counters, the least recently seen eighth of it is dropped, with a warning
//! (at most once a minute) and a count in the metrics.
//!
//! The limiter outlives a config reload: a policy is known by its identity (name,
//! requests, window), so a reloaded policy that keeps all three keeps its counters, and
//! one that changes any of them starts from zero.
//!
//! An IPv6 client is counted by its /64 (`rate_limit.ipv6_prefix`): whoever holds one /64
//! holds 2^64 addresses, and per-address budgets would give them as many budgets.
//!
//! Why not pingora-limits' `Rate`: it estimates counts with a count-min sketch, whose
//! estimates grow with the total traffic in a window. With 20,000 requests from other
//! clients in a window of its 32,768-counter sketch, a client sending exactly its budget
//! was refused early in about 1 run in 25 (the test `a_crowd_of_light_clients_...` below
//! failed that way). A gateway must not refuse request `n <= requests`, so counts here are
//! exact.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use http::HeaderValue;

use crate::wire::static_value;

pub mod caps;
pub mod store;

pub use store::{Store, StoreState, Stores};

/// Shards of the counter table; a power of two.
const SHARDS: usize = 64;
/// A shard sweeps stale counters when it holds this many more than after its last sweep.
const SWEEP_SLACK: usize = 1024;

/// Whom a request is counted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Ip(IpAddr),
    /// A hash of an authenticated identity.
    Identity(u64),
}

impl ClientKey {
    /// The key for a client address: IPv4 as it is (also when written IPv4-mapped),
    /// IPv6 cut to its first `ipv6_prefix` bits.
    pub fn ip(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V6(v6) if ipv6_prefix < 128 => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(ipv6_prefix))
                    .unwrap_or(0);
                ClientKey::Ip(IpAddr::V6(Ipv6Addr::from(bits & mask)))
            }
            canonical => ClientKey::Ip(canonical),
        }
    }

    /// The key for an authenticated identity such as "users:alice".
    pub fn identity(name: &str) -> ClientKey {
        ClientKey::Identity(IDENTITY_HASHER.hash_one(name))
    }
}

/// A fixed-seed hasher for identities: the same name always gives the same key.
static IDENTITY_HASHER: ahash::RandomState = ahash::RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// The window this count belongs to, as an index since the limiter's epoch.
    window: u64,
    /// When that window ends, in seconds since the epoch (for sweeping).
    ends: u64,
    /// When the client was last counted, in seconds since the epoch (for eviction).
    seen: u64,
    count: u32,
}

#[derive(Default)]
struct Shard {
    counters: HashMap<(u32, ClientKey), Counter, ahash::RandomState>,
    swept_len: usize,
}

/// What makes two policies the same: name, requests, window in ms.
type PolicyIdentity = (Arc<str>, u32, u128);

/// The counters of every policy.
pub struct Limiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: ahash::RandomState,
    epoch: Instant,
    /// Counters one shard holds at most.
    per_shard: AtomicUsize,
    /// The id of each policy identity (name, requests, window in ms) ever built.
    ids: Mutex<HashMap<PolicyIdentity, u32>>,
    evicted: AtomicU64,
    /// When eviction was last logged, in seconds since the epoch (plus one; 0: never).
    warned: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(DEFAULT_MAX_CLIENTS)
    }
}

/// The default of `rate_limit.max_clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 1_000_000;
/// How often at most an eviction is logged.
const WARN_EVERY: u64 = 60;

impl Limiter {
    /// A table for about `max_clients` counters (per policy and client).
    pub fn new(max_clients: usize) -> Limiter {
        Limiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: ahash::RandomState::new(),
            epoch: Instant::now(),
            per_shard: AtomicUsize::new(Self::per_shard(max_clients)),
            ids: Mutex::new(HashMap::new()),
            evicted: AtomicU64::new(0),
            warned: AtomicU64::new(0),
        }
    }

    fn per_shard(max_clients: usize) -> usize {
        (max_clients / SHARDS).max(16)
    }

    /// Change the bound (a reload); shards over it shrink as they next take a client.
    pub fn set_max_clients(&self, max_clients: usize) {
        self.per_shard
            .store(Self::per_shard(max_clients), Ordering::Relaxed);
    }

    /// The id of a policy identity: the same one for the same name, requests and window,
    /// a new one otherwise.
    fn id_of(&self, name: &str, requests: u32, window: Duration) -> u32 {
        let Ok(mut ids) = self.ids.lock() else {
            return u32::MAX;
        };
        let next = ids.len() as u32;
        *ids.entry((Arc::from(name), requests, window.as_millis()))
            .or_insert(next)
    }

    /// Counters dropped to stay within `max_clients`.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Make room in a full shard: stale counters go first, then the least recently seen
    /// eighth.
    fn make_room(&self, shard: &mut Shard, now_secs: u64) {
        shard.counters.retain(|_, c| c.ends > now_secs);
        if shard.counters.len() >= self.per_shard.load(Ordering::Relaxed) {
            let mut seen: Vec<u64> = shard.counters.values().map(|c| c.seen).collect();
            let nth = seen.len() / 8;
            let (_, &mut cut, _) = seen.select_nth_unstable(nth);
            let before = shard.counters.len();
            shard.counters.retain(|_, c| c.seen > cut);
            let dropped = (before - shard.counters.len()) as u64;
            self.evicted.fetch_add(dropped, Ordering::Relaxed);
            let last = self.warned.load(Ordering::Relaxed);
            if last == 0 || now_secs + 1 >= last + WARN_EVERY {
                self.warned.store(now_secs + 1, Ordering::Relaxed);
                log::warn!(
                    "rate limit: the client table is full (rate_limit.max_clients): the {dropped} least recently seen clients of a shard were dropped and start a new count"
                );
            }
        }
        shard.swept_len = shard.counters.len();
    }

    /// Counters currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.counters.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Count one request of `key` under policy `id` and return the new count and the
    /// seconds until the window ends.
    fn count(&self, id: u32, key: ClientKey, window: Duration, now: Duration) -> (u32, u32) {
        let window_secs = window.as_secs().max(1);
        let now_secs = now.as_secs();
        let index = now_secs / window_secs;
        let ends = (index + 1) * window_secs;
        let reset = (ends as f64 - now.as_secs_f64()).ceil().max(1.0) as u32;
        let shard = self.hasher.hash_one((id, key)) as usize & (SHARDS - 1);
        let Ok(mut shard) = self.shards[shard].lock() else {
            // a thread panicked while counting: let traffic through rather than refuse all
            return (0, reset);
        };
        let fresh = Counter {
            window: index,
            ends,
            seen: now_secs,
            count: 1,
        };
        if let Some(counter) = shard.counters.get_mut(&(id, key)) {
            if counter.window == index {
                counter.count = counter.count.saturating_add(1);
                counter.seen = now_secs;
            } else {
                *counter = fresh;
            }
            return (counter.count, reset);
        }
        // a client not in the table
        if shard.counters.len() >= self.per_shard.load(Ordering::Relaxed) {
            self.make_room(&mut shard, now_secs);
        } else if shard.counters.len() > shard.swept_len + SWEEP_SLACK {
            shard.counters.retain(|_, c| c.ends > now_secs);
            shard.swept_len = shard.counters.len();
        }
        shard.counters.insert((id, key), fresh);
        (1, reset)
    }
}

/// One configured limit, compiled.
#[derive(Clone)]
pub struct Policy {
    id: u32,
    requests: u32,
    window: Duration,
    limiter: Arc<Limiter>,
    /// Counted in a shared store (sliding windows aligned to the clock), not locally.
    store: Option<Arc<Store>>,
    /// `RateLimit-Policy` value, e.g. `"default";q=20;w=60`, built once.
    pub policy_header: HeaderValue,
    name: Arc<str>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("requests", &self.requests)
            .field("window", &self.window)
            .finish()
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: `remaining` more requests fit before the window resets in `reset` s.
    Allowed { remaining: u32, reset: u32 },
    /// Over the limit until the window resets in `reset` seconds.
    Limited { reset: u32 },
}

impl Verdict {
    pub fn reset(self) -> u32 {
        match self {
            Verdict::Allowed { reset, .. } | Verdict::Limited { reset } => reset,
        }
    }

    pub fn remaining(self) -> u32 {
        match self {
            Verdict::Allowed { remaining, .. } => remaining,
            Verdict::Limited { .. } => 0,
        }
    }
}

/// Builds the policies of one configuration on one shared [`Limiter`].
#[derive(Default)]
pub struct PolicyBuilder {
    limiter: Arc<Limiter>,
    store: Option<Arc<Store>>,
}

impl PolicyBuilder {
    /// Policies sharing a new table of about `max_clients` counters.
    pub fn new(max_clients: usize) -> PolicyBuilder {
        PolicyBuilder::on(Arc::new(Limiter::new(max_clients)))
    }

    /// Policies on an existing table (a reload): a policy with the identity of an earlier
    /// one shares its counters.
    pub fn on(limiter: Arc<Limiter>) -> PolicyBuilder {
        PolicyBuilder {
            limiter,
            store: None,
        }
    }

    /// Count every policy built from here on in a shared store.
    pub fn with_store(mut self, store: Option<Arc<Store>>) -> PolicyBuilder {
        self.store = store;
        self
    }

    pub fn policy(&mut self, name: &str, requests: u32, window: Duration) -> Policy {
        let id = self.limiter.id_of(name, requests, window);
        if let Some(store) = &self.store {
            store.register(id, name, requests, window);
        }
        let header = format!("\"{}\";q={};w={}", name, requests, window.as_secs());
        Policy {
            id,
            requests,
            window,
            limiter: self.limiter.clone(),
            store: self.store.clone(),
            // names come from config prefixes, which are plain visible ASCII
            policy_header: static_value(&header)
                .unwrap_or_else(|_| HeaderValue::from_static("\"route\"")),
            name: Arc::from(name),
        }
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

impl Policy {
    pub fn requests(&self) -> u32 {
        self.requests
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Count one request from `client` and say whether it may pass: request number
    /// `requests + 1` in a window is the first one refused.
    pub fn check(&self, client: ClientKey) -> Verdict {
        if let Some(store) = &self.store {
            return store.check(self.id, client, self.requests, self.window);
        }
        self.check_at(client, self.limiter.epoch.elapsed())
    }

    /// Whether [`Policy::ask`] should be used: the store is asked on every request
    /// (`sync = "0s"`) and is up.
    pub fn asks_store(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.asks_each_request())
    }

    /// Ask the shared store about this request; when it does not answer in time, decide
    /// from this gateway's counts as [`Policy::check`] does.
    pub async fn ask(&self, client: ClientKey) -> Verdict {
        if let Some(store) = &self.store {
            if let Some(verdict) = store.ask(self.id, client, self.requests).await {
                return verdict;
            }
        }
        self.check(client)
    }

    /// The shared store this policy counts in, if any.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    fn check_at(&self, client: ClientKey, now: Duration) -> Verdict {
        let (count, reset) = self.limiter.count(self.id, client, self.window, now);
        if count > self.requests {
            Verdict::Limited { reset }
        } else {
            Verdict::Allowed {
                remaining: self.requests - count,
                reset,
            }
        }
    }

    /// The `RateLimit` field for a verdict, e.g. `"default";r=7;t=41`: one allocation,
    /// no formatting machinery.
    pub fn rate_limit_header(&self, verdict: Verdict) -> HeaderValue {
        let mut numbers = itoa::Buffer::new();
        let mut buf = BytesMut::with_capacity(self.name.len() + 28);
        buf.put_u8(b'"');
        buf.put_slice(self.name.as_bytes());
        buf.put_slice(b"\";r=");
        buf.put_slice(numbers.format(verdict.remaining()).as_bytes());
        buf.put_slice(b";t=");
        buf.put_slice(numbers.format(verdict.reset()).as_bytes());
        HeaderValue::from_maybe_shared(buf.freeze())
            .unwrap_or_else(|_| HeaderValue::from_static("\"route\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> ClientKey {
        ClientKey::Ip(s.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_are_their_prefix_and_ipv4_stays_whole() {
        let key = |s: &str, prefix| ClientKey::ip(s.parse().unwrap(), prefix);
        assert_eq!(
            key("2001:db8:1:2:aaaa::1", 64),
            key("2001:db8:1:2:bbbb::9", 64)
        );
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 64), ip("2001:db8:1:2::"));
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8:ff::1", 32), key("2001:db8:ee::2", 32));
        assert_eq!(key("10.0.0.1", 64), ip("10.0.0.1"));
        assert_ne!(key("10.0.0.1", 64), key("10.0.0.2", 64));
        assert_eq!(key("::ffff:10.0.0.1", 64), ip("10.0.0.1"));
    }

    #[test]
    fn a_full_table_drops_the_least_recently_seen_and_stays_bounded() {
        let mut b = PolicyBuilder::new(1_000);
        let p = b.policy("default", 5, Duration::from_secs(3600));
        let at = |s: u64| Duration::from_secs(s);
        // an old client, used up its budget long ago, then a flood of new ones
        let old = ip("192.0.2.1");
        for _ in 0..6 {
            p.check_at(old, at(1));
        }
        assert!(matches!(p.check_at(old, at(1)), Verdict::Limited { .. }));
        // a regular client, seen throughout
        let regular = ip("192.0.2.2");
        for _ in 0..5 {
            p.check_at(regular, at(2));
        }
        for i in 0..50_000u32 {
            let flood = ClientKey::Ip(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            p.check_at(flood, at(10 + u64::from(i / 1000)));
            if i % 1000 == 0 {
                p.check_at(regular, at(10 + u64::from(i / 1000)));
            }
        }
        let limiter = b.limiter();
        assert!(
            limiter.len() <= 1_024 + SHARDS,
            "{} counters",
            limiter.len()
        );
        assert!(limiter.evicted() >= 48_000, "{}", limiter.evicted());
        // the old client was dropped: it starts a new count
        assert!(matches!(
            p.check_at(old, at(100)),
            Verdict::Allowed { remaining: 4, .. }
        ));
    }

    #[test]
    fn the_request_after_the_limit_is_refused() {
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 3, Duration::from_secs(60));
        let c = ip("10.0.0.1");
        assert!(matches!(p.check(c), Verdict::Allowed { remaining: 2, .. }));
        assert!(matches!(p.check(c), Verdict::Allowed { remaining: 1, .. }));
        assert!(matches!(p.check(c), Verdict::Allowed { remaining: 0, .. }));
        assert!(matches!(p.check(c), Verdict::Limited { .. }));
        // another client has its own budget
        assert!(matches!(
            p.check(ip("10.0.0.2")),
            Verdict::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn policies_count_apart() {
        let mut b = PolicyBuilder::default();
        let a = b.policy("a", 1, Duration::from_secs(60));
        let z = b.policy("z", 1, Duration::from_secs(60));
        let c = ip("10.0.0.1");
        assert!(matches!(a.check(c), Verdict::Allowed { .. }));
        assert!(matches!(z.check(c), Verdict::Allowed { .. }));
        assert!(matches!(a.check(c), Verdict::Limited { .. }));
    }

    #[test]
    fn a_rebuilt_policy_keeps_its_counts_only_with_the_same_identity() {
        let limiter = Arc::new(Limiter::default());
        let c = ip("10.0.0.1");
        let first = PolicyBuilder::on(limiter.clone()).policy("/a", 2, Duration::from_secs(60));
        assert!(matches!(
            first.check(c),
            Verdict::Allowed { remaining: 1, .. }
        ));
        // a reload builds the policies again on the same table
        let mut again = PolicyBuilder::on(limiter.clone());
        let same = again.policy("/a", 2, Duration::from_secs(60));
        let more = again.policy("/a", 3, Duration::from_secs(60));
        let longer = again.policy("/a", 2, Duration::from_secs(120));
        assert!(matches!(
            same.check(c),
            Verdict::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(same.check(c), Verdict::Limited { .. }));
        assert!(matches!(
            more.check(c),
            Verdict::Allowed { remaining: 2, .. }
        ));
        assert!(matches!(
            longer.check(c),
            Verdict::Allowed { remaining: 1, .. }
        ));
    }

    #[test]
    fn a_new_window_starts_a_new_count_and_reset_counts_down() {
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 2, Duration::from_secs(60));
        let c = ip("10.0.0.1");
        let at = |s: f64| Duration::from_secs_f64(s);
        assert_eq!(
            p.check_at(c, at(0.5)),
            Verdict::Allowed {
                remaining: 1,
                reset: 60
            }
        );
        assert_eq!(
            p.check_at(c, at(19.2)),
            Verdict::Allowed {
                remaining: 0,
                reset: 41
            }
        );
        assert_eq!(p.check_at(c, at(59.9)), Verdict::Limited { reset: 1 });
        assert_eq!(
            p.check_at(c, at(60.0)),
            Verdict::Allowed {
                remaining: 1,
                reset: 60
            }
        );
    }

    #[test]
    fn identities_are_keys_of_their_own() {
        assert_eq!(
            ClientKey::identity("users:alice"),
            ClientKey::identity("users:alice")
        );
        assert_ne!(
            ClientKey::identity("users:alice"),
            ClientKey::identity("users:bob")
        );
    }

    #[test]
    fn header_fields_follow_the_draft() {
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 20, Duration::from_secs(60));
        assert_eq!(p.policy_header, "\"default\";q=20;w=60");
        let v = Verdict::Allowed {
            remaining: 7,
            reset: 41,
        };
        assert_eq!(p.rate_limit_header(v), "\"default\";r=7;t=41");
        assert_eq!(
            p.rate_limit_header(Verdict::Limited { reset: 5 }),
            "\"default\";r=0;t=5"
        );
    }

    #[test]
    fn a_crowd_of_light_clients_does_not_push_one_over_early() {
        // 50,000 clients with one request each, then one client uses its whole budget of
        // 20: every one of its 20 requests must pass, and the 21st must not.
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 20, Duration::from_secs(3600));
        for i in 0..50_000u32 {
            let c = ClientKey::Ip(IpAddr::from(i.to_be_bytes()));
            assert!(matches!(p.check(c), Verdict::Allowed { .. }));
        }
        let me = ip("192.168.1.1");
        for n in 1..=20 {
            assert!(
                matches!(p.check(me), Verdict::Allowed { .. }),
                "request {n} refused early"
            );
        }
        assert!(matches!(p.check(me), Verdict::Limited { .. }));
    }

    #[test]
    fn stale_counters_are_swept() {
        let mut b = PolicyBuilder::default();
        let p = b.policy("default", 5, Duration::from_secs(1));
        for i in 0..20_000u32 {
            p.check_at(
                ClientKey::Ip(IpAddr::from(i.to_be_bytes())),
                Duration::from_millis(100),
            );
        }
        assert_eq!(b.limiter().len(), 20_000);
        // windows later, new clients (about 3,000 per shard) push every old counter out
        for i in 0..200_000u32 {
            let c = ClientKey::Ip(IpAddr::from((i + 1_000_000).to_be_bytes()));
            p.check_at(c, Duration::from_secs(5));
        }
        assert_eq!(b.limiter().len(), 200_000);
    }
}
