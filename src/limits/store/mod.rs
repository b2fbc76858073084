//! Rate-limit counts shared through Redis (or Valkey): several gateways, one budget.
//!
//! Windows are aligned to the clock (window `n` is `[n·w, (n+1)·w)` in Unix time), so every
//! gateway counts the same window, and a client's count is a sliding window: the previous
//! window's total weighted by how much of it still overlaps the last `w` seconds, plus the
//! current window's ([`window`]). Across a window boundary a client cannot get twice its
//! budget. A refused request is not counted.
//!
//! With `sync` above zero no request waits on the store. Each gateway keeps, per policy
//! and client, the totals it last pulled and what it counted since; a request decides from
//! those, plus what the other gateways are likely to have counted since the pull (their
//! pace between the last two pulls). A background task ([`Store::run`]) syncs every
//! `sync`, and what it sends follows the traffic, not the number of clients ([`sync`]):
//! it pushes only the counts that changed since the last sync (reading the totals back in
//! the same command), pulls the totals only of keys that a request asked about since the
//! last pull, and sends nothing for the rest; with nothing to send at all, one PING a
//! second ([`PROBE_EVERY`]) keeps the store's state known. A key that nobody asked about
//! for a while has old totals: the first request after the pause decides on them, and
//! the next sync (one `sync` later) brings them up to date. The other gateways' requests
//! reach a gateway up to two syncs late, so without the estimate of their pace a budget
//! could be overshot by up to `2 · r · sync · (G-1) / G` requests (`G` gateways taking
//! `r` requests a second of the client in all); with it, by what the pace changed in that
//! time. A pace that drops (a client that stops on one gateway) makes the others refuse
//! early for at most two syncs, until the pulled totals show it.
//!
//! With `sync = "0s"` every request runs one script for its key that counts it only if it
//! fits: exact, at one round trip per request, bounded by `store_timeout`.
//!
//! When the store is slow or gone, no request waits longer than `store_timeout` (and,
//! once a failure is seen, none waits at all): decisions come from this gateway's counts on
//! top of the last totals it pulled, so each gateway still enforces the whole budget by
//! itself. The change of state is logged once, shown as `pylon_rate_limit_store_up` and in
//! the status API; the task connects anew with a backoff (100 ms doubling to 5 s; with
//! Sentinel, to the master the sentinels name then), pushes what was counted meanwhile
//! (for the current and the previous window) and sharing resumes.
//!
//! Store keys are `pylon:rl:{policy:requests:window:client}:index`: two policies never
//! share a counter, a changed policy starts a new one, and a client's two windows share a
//! Redis Cluster hash tag (the `sync = "0s"` script reads both). Each key is made with an
//! expiry of two windows and a second, so it lives through the window after its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora::server::ShutdownWatch;

mod sync;
mod window;

use super::{ClientKey, Verdict};
use crate::config::StoreSpec;
use crate::store::{self as link, Link, Target};
use sync::{Item, Op};
use window::{decide, Entry};

/// Shards of the table of shared counts; a power of two.
const SHARDS: usize = 64;
/// Keys per pipeline at most (one node; a cluster takes a pipeline per client).
const BATCH: usize = 1024;
/// Pipelines in flight at once to a cluster.
const CLUSTER_PIPELINES: usize = 64;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// With nothing to sync, a PING this often tells whether the store still answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often the whole table is swept of keys with nothing left in either window.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A previous window's total is final once every gateway has pushed into it: two syncs
/// after the window turned, and this much more for clocks that differ and slow calls.
const SETTLE_MARGIN_MS: u64 = 1000;
const KEY_PREFIX: &str = "pylon:rl:";

/// Count one request if it fits (ARGV: requests, elapsed part of the window in
/// millionths, ttl): returns admitted (1 or 0), the current total, the previous total.
const ASK_SCRIPT: &str = r"
local curr = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local estimate = prev * (1000000 - tonumber(ARGV[2])) / 1000000 + curr
if estimate + 1 <= tonumber(ARGV[1]) then
  curr = redis.call('INCR', KEYS[1])
  if curr == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return {1, curr, prev}
end
return {0, curr, prev}
";

/// (policy id, client) to what this gateway knows of it.
type Counts = HashMap<(u32, ClientKey), Entry, ahash::RandomState>;

/// One shard of the table: what this gateway knows, and the keys that requests used
/// since the last sync (an entry is in `touched` while its `asked` is set), so that a sync
/// costs what the traffic did, not the number of clients remembered.
#[derive(Default)]
struct Shard {
    counts: Counts,
    touched: HashSet<(u32, ClientKey), ahash::RandomState>,
}

/// Where the store stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StoreState {
    /// Not reached yet.
    Connecting = 0,
    Up = 1,
    Down = 2,
}

/// One policy's part of a key, and its window.
#[derive(Debug, Clone)]
struct Stem {
    key: Arc<str>,
    window_secs: u64,
}

/// A shared store and this gateway's view of it.
pub struct Store {
    target: Target,
    link: tokio::sync::Mutex<Option<Link>>,
    sync: Duration,
    timeout: Duration,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    shards: Box<[Mutex<Shard>]>,
    hasher: ahash::RandomState,
    per_shard: usize,
    stems: Mutex<HashMap<u32, Stem>>,
    ask_script: redis::Script,
    /// Commands sent to the store (a script counted with the commands it runs).
    calls: AtomicU64,
    /// When the store last answered (Unix ms).
    answered_at: AtomicU64,
    /// When the table was last swept of keys with nothing left (Unix ms).
    swept_at: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("servers", &self.target.shown())
            .field("sync", &self.sync)
            .finish()
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StoreState {
    /// As the status API writes it.
    pub fn name(self) -> &'static str {
        match self {
            StoreState::Connecting => "connecting",
            StoreState::Up => "up",
            StoreState::Down => "down",
        }
    }
}

impl Store {
    /// A store as `spec` says (one node, a cluster or Sentinel's master, `rediss://` for
    /// TLS); nothing connects until [`Store::run`].
    pub fn new(
        spec: &StoreSpec,
        sync: Duration,
        timeout: Duration,
        max_clients: usize,
    ) -> Result<Store, String> {
        Ok(Store {
            target: Target::new(spec, timeout)?,
            link: tokio::sync::Mutex::new(None),
            sync,
            timeout,
            state: AtomicU8::new(StoreState::Connecting as u8),
            last_error: Mutex::new(None),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: ahash::RandomState::new(),
            per_shard: (max_clients / SHARDS).max(16),
            stems: Mutex::new(HashMap::new()),
            ask_script: redis::Script::new(ASK_SCRIPT),
            calls: AtomicU64::new(0),
            answered_at: AtomicU64::new(0),
            swept_at: AtomicU64::new(0),
        })
    }

    /// The servers as the status shows them (without passwords).
    pub fn url(&self) -> &str {
        self.target.shown()
    }

    pub fn sync(&self) -> Duration {
        self.sync
    }

    pub fn state(&self) -> StoreState {
        match self.state.load(Ordering::Relaxed) {
            1 => StoreState::Up,
            2 => StoreState::Down,
            _ => StoreState::Connecting,
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Commands sent to the store so far (a script counted with the commands it runs).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Whether a request should ask the store itself (`sync = "0s"` and the store up).
    pub fn asks_each_request(&self) -> bool {
        self.sync.is_zero() && self.state() == StoreState::Up
    }

    /// Make policy `id` known by its identity, which its store keys carry.
    pub(super) fn register(&self, id: u32, name: &str, requests: u32, window: Duration) {
        let key: Arc<str> = Arc::from(format!("{name}:{requests}:{}", window.as_secs()));
        if let Ok(mut stems) = self.stems.lock() {
            stems.insert(
                id,
                Stem {
                    key,
                    window_secs: window.as_secs().max(1),
                },
            );
        }
    }

    fn shard(&self, id: u32, client: ClientKey) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one((id, client)) as usize & (SHARDS - 1)]
    }

    /// Decide from what this gateway knows, and count the request if it fits.
    pub(super) fn check(
        &self,
        id: u32,
        client: ClientKey,
        requests: u32,
        window: Duration,
    ) -> Verdict {
        let w = window.as_secs().max(1);
        let now = unix_ms();
        let index = now / (w * 1000);
        let Ok(mut shard) = self.shard(id, client).lock() else {
            return Verdict::Allowed {
                remaining: requests,
                reset: w as u32,
            };
        };
        let Shard { counts, touched } = &mut *shard;
        if !counts.contains_key(&(id, client)) && counts.len() >= self.per_shard {
            make_room(counts, index, self.per_shard);
        }
        let entry = counts.entry((id, client)).or_default();
        entry.roll(index);
        let others = self.others_since_pull(entry, now);
        let verdict = decide(
            requests,
            w,
            now,
            entry.prev,
            entry.total + entry.pending + others,
        );
        let verdict = match verdict {
            Verdict::Allowed { .. } if !self.my_share_fits(entry, requests, w, now, others) => {
                // the others take the rest: try again once the next sync shows it
                Verdict::Limited {
                    reset: (self.sync.as_secs_f64() * 2.0).ceil().max(1.0) as u32,
                }
            }
            v => v,
        };
        if matches!(verdict, Verdict::Allowed { .. }) {
            entry.pending += 1;
        }
        if !entry.asked {
            entry.asked = true;
            touched.insert((id, client));
        }
        verdict
    }

    /// What the other gateways are likely to have counted since `entry` was pulled: their
    /// last pace over the time since (plus half a sync, the average age of their last
    /// push), at most three syncs' worth; nothing while the store is away.
    fn others_since_pull(&self, entry: &Entry, now: u64) -> u64 {
        if entry.pulled_at == 0 || entry.others_per_ms <= 0.0 || self.state() != StoreState::Up {
            return 0;
        }
        let sync = self.sync.as_millis() as u64;
        let age = (now.saturating_sub(entry.pulled_at) + sync / 2).min(3 * sync);
        (f64::from(entry.others_per_ms) * age as f64).round() as u64
    }

    /// Near the end of a budget, the room left is shared by pace: when the gateways
    /// together could spend it before the next totals arrive (two syncs), this one takes
    /// only its part (its own pace over everyone's), so that the gateways do not all
    /// spend the same last requests. Elsewhere it takes what fits.
    fn my_share_fits(&self, entry: &Entry, requests: u32, w: u64, now: u64, others: u64) -> bool {
        let (own, theirs) = (f64::from(entry.own_per_ms), f64::from(entry.others_per_ms));
        if theirs <= 0.0 || self.state() != StoreState::Up {
            return true;
        }
        let frac = (now % (w * 1000)) as f64 / (w * 1000) as f64;
        let known = entry.prev as f64 * (1.0 - frac) + (entry.total + others) as f64;
        let room = f64::from(requests) - known;
        let horizon = (own + theirs) * 2.0 * self.sync.as_millis() as f64;
        if room >= horizon {
            return true;
        }
        let mine = room * own / (own + theirs);
        (entry.pending as f64) + 1.0 <= mine.ceil()
    }

    /// Ask the store for this request (with `sync = "0s"`), within `store_timeout`;
    /// `None` when it did not answer in time, and then the store counts as down.
    pub(super) async fn ask(&self, id: u32, client: ClientKey, requests: u32) -> Option<Verdict> {
        let stem = self.stems.lock().ok()?.get(&id).cloned()?;
        let w = stem.window_secs;
        let now = unix_ms();
        let index = now / (w * 1000);
        let into = now % (w * 1000);
        let mut link = self.link.lock().await.clone()?;
        let mut invocation = self.ask_script.prepare_invoke();
        invocation
            .key(store_key(&stem.key, client, index))
            .key(store_key(&stem.key, client, index.wrapping_sub(1)))
            .arg(requests)
            .arg(into * 1_000_000 / (w * 1000))
            .arg(ttl_ms(w));
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(u8, u64, u64)>(&mut link),
        )
        .await;
        match answer {
            Ok(Ok((admitted, curr, prev))) => {
                // what the script ran: two GETs, then INCR (and PEXPIRE for a new key)
                let ran = 2 + u64::from(admitted) * (1 + u64::from(curr == 1));
                self.calls.fetch_add(ran, Ordering::Relaxed);
                let verdict = if admitted == 1 {
                    // the count includes this request: decide as if just before it
                    decide(requests, w, now, prev, curr.saturating_sub(1))
                } else {
                    decide(requests, w, now, prev, curr)
                };
                Some(verdict)
            }
            Ok(Err(e)) => {
                self.went_down(&link::explain(&e));
                None
            }
            Err(_) => {
                self.went_down(&format!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    fn went_down(&self, error: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
        let before = self.state.swap(StoreState::Down as u8, Ordering::Relaxed);
        if before != StoreState::Down as u8 {
            log::warn!(
                "rate limit: the store {} is unreachable ({error}); each gateway counts on its own until it is back",
                self.target.shown()
            );
        }
    }

    fn came_up(&self) {
        self.answered_at.store(unix_ms(), Ordering::Relaxed);
        let before = self.state.swap(StoreState::Up as u8, Ordering::Relaxed);
        if before == StoreState::Down as u8 {
            log::info!(
                "rate limit: the store {} is back; counts are shared again",
                self.target.shown()
            );
        } else if before == StoreState::Connecting as u8 {
            log::info!("rate limit: counting in the store {}", self.target.shown());
        }
    }

    /// The sync loop: push and pull every `sync` (every [`PROBE_EVERY`] with `sync = "0s"`),
    /// connect anew with a backoff while the store is away. Ends with `shutdown`.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let wait = match self.sync_once().await {
                Ok(answered) => {
                    if answered {
                        self.came_up();
                    }
                    backoff = BACKOFF_FIRST;
                    if self.sync.is_zero() {
                        PROBE_EVERY
                    } else {
                        self.sync
                    }
                }
                Err(e) => {
                    self.went_down(&e);
                    // the next try connects anew: after a failover, to the new master
                    *self.link.lock().await = None;
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// The connection, made on first use (and again after a failure).
    async fn link(&self) -> Result<Link, String> {
        let mut held = self.link.lock().await;
        if let Some(link) = held.as_ref() {
            return Ok(link.clone());
        }
        let made = self.target.connect(self.timeout).await?;
        *held = Some(made.clone());
        Ok(made)
    }

    /// What this sync sends: for each key that requests used since the last sync, the
    /// counts that changed and the totals they asked for. Every [`SWEEP_EVERY`] the whole
    /// table is swept of keys with nothing left in either window.
    fn plan(&self, stems: &HashMap<u32, Stem>, now: u64) -> Vec<Item> {
        let sweep = now.saturating_sub(self.swept_at.load(Ordering::Relaxed))
            >= SWEEP_EVERY.as_millis() as u64;
        if sweep {
            self.swept_at.store(now, Ordering::Relaxed);
        }
        let index = |id: &u32| {
            stems
                .get(id)
                .map(|stem| (now / (stem.window_secs * 1000), stem))
        };
        let mut items = Vec::new();
        for (s, shard) in self.shards.iter().enumerate() {
            let Ok(mut shard) = shard.lock() else {
                continue;
            };
            let Shard { counts, touched } = &mut *shard;
            if sweep {
                counts.retain(|(id, _), e| {
                    let Some((window, _)) = index(id) else {
                        return false;
                    };
                    e.roll(window);
                    e.is_live() || e.asked
                });
            }
            for key in touched.drain() {
                let (Some(e), Some((window, stem))) = (counts.get_mut(&key), index(&key.0)) else {
                    continue;
                };
                e.roll(window);
                let ops = self.ops(e);
                if ops == [Op::Skip, Op::Skip] {
                    e.asked = false;
                    continue;
                }
                let client = key.1;
                items.push(Item {
                    shard: s,
                    key,
                    window: e.window,
                    ops,
                    keys: [
                        store_key(&stem.key, client, e.window),
                        store_key(&stem.key, client, e.window.wrapping_sub(1)),
                    ],
                    ttl_ms: ttl_ms(stem.window_secs),
                    totals: [None, None],
                });
            }
        }
        items
    }

    /// What a sync does with one key's two windows.
    fn ops(&self, e: &Entry) -> [Op; 2] {
        let add = |n: u64, stored: bool| (n > 0).then_some(Op::Add { n, stored });
        if self.sync.is_zero() {
            // requests count in the store themselves: only what was counted here while
            // it was away is pushed
            return [
                add(e.pending, e.stored).unwrap_or(Op::Skip),
                add(e.prev_pending, e.prev_stored).unwrap_or(Op::Skip),
            ];
        }
        let used = e.asked || e.pending > 0;
        let read = |wanted: bool| if wanted { Op::Read } else { Op::Skip };
        [
            add(e.pending, e.stored).unwrap_or(read(e.asked)),
            add(e.prev_pending, e.prev_stored).unwrap_or(read(used && !e.prev_settled)),
        ]
    }

    /// Push what was counted here and pull the totals that requests asked for; with
    /// nothing to send, PING at most every [`PROBE_EVERY`].
    /// `Ok(true)` when the store answered, `Ok(false)` when nothing was asked of it.
    async fn sync_once(&self) -> Result<bool, String> {
        let mut link = self.link().await?;
        let stems = self.stems.lock().map(|s| s.clone()).unwrap_or_default();
        let mut items = self.plan(&stems, unix_ms());
        if items.is_empty() {
            let quiet = unix_ms().saturating_sub(self.answered_at.load(Ordering::Relaxed));
            if quiet < PROBE_EVERY.as_millis() as u64 && self.state() == StoreState::Up {
                return Ok(false);
            }
            return self.ping(&mut link).await.map(|()| true);
        }
        if link.is_cluster() {
            // commands of one pipeline must share a hash slot: one pipeline per client
            // (its two keys share a hash tag), many at once
            let mut answers = Vec::with_capacity(items.len());
            for group in items.chunks_mut(CLUSTER_PIPELINES) {
                let mut pending = Vec::with_capacity(group.len());
                for item in group.chunks_mut(1) {
                    pending.push(exchange_alone(link.clone(), item, self.timeout));
                }
                answers.extend(futures::future::join_all(pending).await);
            }
            let mut sent = 0;
            let mut failed = None;
            for answer in answers {
                match answer {
                    Ok(n) => sent += n,
                    Err(e) => failed = Some(e),
                }
            }
            self.calls.fetch_add(sent, Ordering::Relaxed);
            if let Some(e) = failed {
                // what did answer is taken; the rest is pushed again next time
                self.apply(&stems, &items);
                return Err(link::explain(&e));
            }
        } else {
            for chunk in items.chunks_mut(BATCH) {
                let exchanged =
                    tokio::time::timeout(self.timeout, sync::exchange(&mut link, chunk)).await;
                let failed = match exchanged {
                    Ok(Ok(n)) => {
                        self.calls.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                    Ok(Err(e)) => link::explain(&e),
                    Err(_) => format!("no answer within {:?}", self.timeout),
                };
                // what did answer is taken; the rest is pushed again next time
                self.apply(&stems, &items);
                return Err(failed);
            }
        }
        self.apply(&stems, &items);
        Ok(true)
    }

    /// Take the totals the store sent back into the table.
    /// A key that was not answered, or counted again meanwhile, waits for the next sync.
    fn apply(&self, stems: &HashMap<u32, Stem>, items: &[Item]) {
        let pulled = unix_ms();
        for item in items {
            let [curr, prev] = item.totals;
            let Ok(mut shard) = self.shards[item.shard].lock() else {
                continue;
            };
            let Shard { counts, touched } = &mut *shard;
            let Some(e) = counts.get_mut(&item.key) else {
                continue;
            };
            let sent = |op: Op| match op {
                Op::Add { n, .. } => n,
                _ => 0,
            };
            let (pending, prev_pending) = (sent(item.ops[0]), sent(item.ops[1]));
            if e.window == item.window {
                if let Some(curr) = curr {
                    if e.pulled_at > 0 && pulled > e.pulled_at {
                        // what the store gained beyond this gateway's own push
                        let others = curr.saturating_sub(e.total + pending);
                        let dt = (pulled - e.pulled_at) as f32;
                        e.others_per_ms = others as f32 / dt;
                        e.own_per_ms = pending as f32 / dt;
                    }
                    e.pulled_at = pulled;
                    e.pending -= pending.min(e.pending);
                    e.total = curr;
                    e.stored |= curr > 0;
                }
                if let Some(prev) = prev {
                    e.prev_pending -= prev_pending.min(e.prev_pending);
                    e.prev = prev + e.prev_pending;
                    e.prev_stored |= prev > 0;
                    let settles = stems.get(&item.key.0).map_or(u64::MAX, |stem| {
                        item.window * stem.window_secs * 1000
                            + 2 * self.sync.as_millis() as u64
                            + SETTLE_MARGIN_MS
                    });
                    e.prev_settled = pulled >= settles;
                }
            } else if e.window == item.window + 1 {
                // the window turned during the call: what was current is the previous
                if let Some(curr) = curr {
                    e.prev_pending -= pending.min(e.prev_pending);
                    e.prev = curr + e.prev_pending;
                    e.prev_stored |= curr > 0;
                }
            }
            let answered = |op: Op, total: Option<u64>| op == Op::Skip || total.is_some();
            let done = answered(item.ops[0], curr)
                && answered(item.ops[1], prev)
                && e.window == item.window
                && e.pending + e.prev_pending == 0;
            e.asked = !done;
            if !done {
                touched.insert(item.key);
            }
        }
    }

    /// Nothing to push: still check that the store answers.
    async fn ping(&self, link: &mut Link) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::timeout(self.timeout, redis::cmd("PING").query_async::<String>(link))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map(drop)
            .map_err(|e| link::explain(&e))
    }
}

/// A full shard (`rate_limit.max_clients`): drop what is older than the window before,
/// then the previous window's, then all of it.
fn make_room(shard: &mut Counts, index: u64, per_shard: usize) {
    shard.retain(|_, e| e.window + 1 >= index);
    if shard.len() >= per_shard {
        shard.retain(|_, e| e.window >= index);
    }
    if shard.len() >= per_shard {
        log::warn!(
            "rate limit: the shared-count table is full (rate_limit.max_clients); a shard starts over"
        );
        shard.clear();
    }
}

/// One pipeline on a connection of its own (a clone of the multiplexed one), within
/// `timeout`.
async fn exchange_alone(
    mut link: Link,
    items: &mut [Item],
    timeout: Duration,
) -> redis::RedisResult<u64> {
    tokio::time::timeout(timeout, sync::exchange(&mut link, items))
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer in time",
            )))
        })
}

/// How long a window's key lives: through the next window, where it is the previous one.
fn ttl_ms(window_secs: u64) -> u64 {
    2 * window_secs * 1000 + 1000
}

/// A client's key of one window. The braces are a Redis Cluster hash tag: both windows
/// of a policy and client live in one slot.
fn store_key(stem: &str, client: ClientKey, index: u64) -> String {
    match client {
        ClientKey::Ip(ip) => format!("{KEY_PREFIX}{{{stem}:{ip}}}:{index}"),
        ClientKey::Identity(hash) => format!("{KEY_PREFIX}{{{stem}:id-{hash:016x}}}:{index}"),
    }
}

/// Stores by identity (servers, CA, sync, timeout), so that a reload keeps the one it names.
#[derive(Default)]
pub struct Stores {
    by_identity: Mutex<HashMap<String, std::sync::Weak<Store>>>,
}

impl Stores {
    /// The store for these settings: the one already running, or a new one.
    pub fn get(
        &self,
        spec: &StoreSpec,
        sync: Duration,
        timeout: Duration,
        max_clients: usize,
    ) -> Result<Arc<Store>, String> {
        let identity = format!("{spec:?} {sync:?} {timeout:?}");
        let mut known = self
            .by_identity
            .lock()
            .map_err(|_| "the store registry is poisoned".to_string())?;
        known.retain(|_, s| s.strong_count() > 0);
        if let Some(store) = known.get(&identity).and_then(std::sync::Weak::upgrade) {
            return Ok(store);
        }
        let store = Arc::new(Store::new(spec, sync, timeout, max_clients)?);
        known.insert(identity, Arc::downgrade(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(sync_ms: u64) -> Store {
        let store = Store::new(
            &StoreSpec::node("redis://127.0.0.1:1/0"),
            Duration::from_millis(sync_ms),
            Duration::from_millis(10),
            1000,
        )
        .unwrap();
        store.register(0, "p", 1000, Duration::from_secs(3600));
        store
    }

    #[test]
    fn keys_of_one_policy_and_client_share_a_hash_tag() {
        let client = ClientKey::Ip("10.0.0.1".parse().unwrap());
        assert_eq!(
            store_key("p:10:60", client, 7),
            "pylon:rl:{p:10:60:10.0.0.1}:7"
        );
        assert_eq!(
            store_key("p:10:60", ClientKey::Identity(0xab), 6),
            "pylon:rl:{p:10:60:id-00000000000000ab}:6"
        );
    }

    #[test]
    fn a_sync_sends_only_what_changed_and_what_was_asked() {
        let store = store(50);
        let stems = store.stems.lock().unwrap().clone();
        let (a, b) = (
            ClientKey::Ip("10.0.0.1".parse().unwrap()),
            ClientKey::Ip("10.0.0.2".parse().unwrap()),
        );
        let window = Duration::from_secs(3600);
        assert!(
            store.plan(&stems, unix_ms()).is_empty(),
            "no client, nothing"
        );
        store.check(0, a, 1000, window);
        store.check(0, b, 1000, window);
        let mut items = store.plan(&stems, unix_ms());
        assert_eq!(items.len(), 2);
        for item in &items {
            // a new key is made with its expiry; the window before is read once
            assert_eq!(
                item.ops,
                [
                    Op::Add {
                        n: 1,
                        stored: false
                    },
                    Op::Read
                ]
            );
        }
        // the store answered for the first client (1, made here; nothing before), not yet
        // for the second
        for item in &mut items {
            if item.key.1 == a {
                item.totals = [Some(1), Some(0)];
            }
        }
        store.apply(&stems, &items);
        // the first client is done until it comes back; the second was not answered
        let items = store.plan(&stems, unix_ms());
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key.1, b);
        let e = *store
            .shard(0, a)
            .lock()
            .unwrap()
            .counts
            .get(&(0, a))
            .unwrap();
        assert_eq!((e.total, e.pending, e.asked, e.stored), (1, 0, false, true));
        // the window before is final once pulled two syncs and a second into this one
        let into_window = unix_ms() % 3_600_000;
        assert_eq!(e.prev_settled, into_window >= 2 * 50 + SETTLE_MARGIN_MS);
    }

    #[test]
    fn a_request_counted_while_a_sync_is_out_goes_with_the_next_one() {
        let store = store(50);
        let stems = store.stems.lock().unwrap().clone();
        let a = ClientKey::Ip("10.0.0.1".parse().unwrap());
        let window = Duration::from_secs(3600);
        store.check(0, a, 1000, window);
        let mut items = store.plan(&stems, unix_ms());
        store.check(0, a, 1000, window);
        items[0].totals = [Some(1), Some(0)];
        store.apply(&stems, &items);
        let items = store.plan(&stems, unix_ms());
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].ops[0], Op::Add { n: 1, stored: true });
        // a sync that failed leaves its keys for the next one
        store.apply(&stems, &items);
        assert_eq!(store.plan(&stems, unix_ms()).len(), 1);
    }

    #[test]
    fn what_a_sync_does_with_each_window() {
        let store = store(50);
        let back = Entry {
            pending: 1,
            stored: true,
            asked: true,
            ..Entry::default()
        };
        assert_eq!(store.ops(&back), [Op::Add { n: 1, stored: true }, Op::Read]);
        let settled = Entry {
            prev_settled: true,
            ..back
        };
        assert_eq!(
            store.ops(&settled),
            [Op::Add { n: 1, stored: true }, Op::Skip]
        );
        let refused = Entry {
            pending: 0,
            ..settled
        };
        assert_eq!(store.ops(&refused), [Op::Read, Op::Skip]);
        let idle = Entry {
            asked: false,
            ..refused
        };
        assert_eq!(store.ops(&idle), [Op::Skip, Op::Skip]);
        let turned = Entry {
            prev_pending: 2,
            prev_stored: true,
            ..idle
        };
        assert_eq!(
            store.ops(&turned),
            [Op::Skip, Op::Add { n: 2, stored: true }]
        );
    }

    #[test]
    fn with_sync_0s_only_counts_made_while_the_store_was_away_are_pushed() {
        let store = store(0);
        let entry = Entry {
            asked: true,
            ..Entry::default()
        };
        assert_eq!(store.ops(&entry), [Op::Skip, Op::Skip]);
        let entry = Entry {
            pending: 3,
            ..entry
        };
        assert_eq!(
            store.ops(&entry),
            [
                Op::Add {
                    n: 3,
                    stored: false
                },
                Op::Skip
            ]
        );
    }

    #[test]
    fn without_a_store_the_gateway_still_enforces_the_whole_budget() {
        let store = Store::new(
            &StoreSpec::node("redis://127.0.0.1:1/0"),
            Duration::from_millis(50),
            Duration::from_millis(10),
            1000,
        )
        .unwrap();
        store.register(0, "p", 5, Duration::from_secs(3600));
        let client = ClientKey::Ip("10.0.0.1".parse().unwrap());
        let passed = (0..8)
            .filter(|_| {
                matches!(
                    store.check(0, client, 5, Duration::from_secs(3600)),
                    Verdict::Allowed { .. }
                )
            })
            .count();
        // a window boundary can fall inside the loop; then the previous count weighs in
        assert!(passed <= 5, "{passed}");
        assert!(passed >= 4, "{passed}");
    }
}
