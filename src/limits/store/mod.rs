//! Rate-limit counts shared through Redis (or Valkey): several gateways, one budget.
//!
//! Windows are aligned to the clock (window `n` is `[n·w, (n+1)·w)` in Unix time), so every
//! gateway counts the same window, and a client's count is a sliding window: the previous
//! window's total weighted by how much of it still overlaps the last `w` seconds, plus the
//! current window's. Across a window boundary a client cannot get twice its budget. A
//! refused request is not counted.
//!
//! With `sync` above zero no request waits on the store. Each gateway keeps, per policy
//! and client, the totals it last pulled and what it counted since; a request decides from
//! those, plus what the other gateways are likely to have counted since the pull (their
//! pace between the last two pulls). A background task ([`Store::run`]) pushes the new
//! counts and pulls the totals of every active key in one script call (one round trip,
//! one command) per sync. The other gateways' requests reach a gateway up to two syncs
//! late, so without the estimate of their pace a budget could be overshot by up to
//! `2 · r · sync · (G-1) / G` requests (`G` gateways taking `r` requests a second of the
//! client in all); with it, by what the pace changed in that time. A pace that drops
//! (a client that stops on one gateway) makes the others refuse early for at most two
//! syncs, until the pulled totals show it.
//!
//! With `sync = "0s"` every request runs one script for its key that counts it only if it
//! fits: exact, at one round trip per request, bounded by `store_timeout`.
//!
//! When the store is slow or gone, no request waits longer than `store_timeout` (and,
//! once a failure is seen, none waits at all): decisions come from this gateway's counts on
//! top of the last totals it pulled, so each gateway still enforces the whole budget by
//! itself. The change of state is logged once, shown as `pylon_rate_limit_store_up` and in
//! the status API; the task reconnects with a backoff (100 ms doubling to 5 s), pushes what
//! was counted meanwhile (for the current and the previous window) and sharing resumes.
//!
//! Store keys are `pylon:rl:{policy}:{requests}:{window}:{window index}:{client}`, so two
//! policies never share a counter and a changed policy starts a new one; each expires two
//! windows after its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora::server::ShutdownWatch;
use redis::aio::ConnectionManager;

use super::{ClientKey, Verdict};

/// Shards of the table of shared counts; a power of two.
const SHARDS: usize = 64;
/// Keys per script call at most.
const BATCH: usize = 512;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// With `sync = "0s"` the task only pushes what was counted while the store was away, and
/// checks that it is back: this often.
const PROBE_EVERY: Duration = Duration::from_millis(500);
const KEY_PREFIX: &str = "pylon:rl:";

/// Push each pair's new counts (ARGV: ttl, then per pair current and previous), return
/// each pair's totals (current, previous).
const SYNC_SCRIPT: &str = r"
local ttl = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS, 2 do
  local i = k + 1
  local n = tonumber(ARGV[i])
  local np = tonumber(ARGV[i + 1])
  local curr
  if n > 0 then
    curr = redis.call('INCRBY', KEYS[k], n)
    redis.call('PEXPIRE', KEYS[k], ttl)
  else
    curr = tonumber(redis.call('GET', KEYS[k]) or '0')
  end
  local prev
  if np > 0 then
    prev = redis.call('INCRBY', KEYS[k + 1], np)
    redis.call('PEXPIRE', KEYS[k + 1], ttl)
  else
    prev = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
  end
  out[#out + 1] = curr
  out[#out + 1] = prev
end
return out
";

/// Count one request if it fits (ARGV: requests, elapsed part of the window in
/// millionths, ttl): returns admitted (1 or 0), the current total, the previous total.
const ASK_SCRIPT: &str = r"
local curr = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local estimate = prev * (1000000 - tonumber(ARGV[2])) / 1000000 + curr
if estimate + 1 <= tonumber(ARGV[1]) then
  curr = redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, curr, prev}
end
return {0, curr, prev}
";

/// One shard of the table: (policy id, client) to what this gateway knows.
type Counts = HashMap<(u32, ClientKey), Entry, ahash::RandomState>;

/// One key of a sync: where it lives, which window, what to push for it and the one before.
struct Push {
    shard: usize,
    key: (u32, ClientKey),
    window: u64,
    pending: u64,
    prev_pending: u64,
}

/// What this gateway knows of one policy and client.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The window these counts are for, as an index of the clock.
    window: u64,
    /// The store's total for `window` when last pulled (what this gateway pushed included).
    total: u64,
    /// Counted here for `window` and not pushed yet.
    pending: u64,
    /// The total of the window before (the store's, or this gateway's best guess).
    prev: u64,
    /// Counted here for the window before and not pushed yet.
    prev_pending: u64,
    /// When `total` was pulled (Unix ms; 0: never).
    pulled_at: u64,
    /// How fast the other gateways' counts of this key grew between the last two pulls,
    /// per ms: between syncs their requests are assumed to go on at that pace.
    others_per_ms: f32,
    /// This gateway's own pace over the same time.
    own_per_ms: f32,
}

impl Entry {
    /// Move to window `now`, if it is a later one.
    fn roll(&mut self, now: u64) {
        if self.window == now {
            return;
        }
        if self.window + 1 == now {
            *self = Entry {
                window: now,
                total: 0,
                pending: 0,
                prev: self.total + self.pending,
                prev_pending: self.pending,
                pulled_at: 0,
                others_per_ms: self.others_per_ms,
                own_per_ms: self.own_per_ms,
            };
        } else if self.window < now {
            *self = Entry {
                window: now,
                ..Entry::default()
            };
        }
    }
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
    /// The URL as the status shows it (without a password).
    shown: String,
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    sync: Duration,
    timeout: Duration,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    shards: Box<[Mutex<Counts>]>,
    hasher: ahash::RandomState,
    per_shard: usize,
    stems: Mutex<HashMap<u32, Stem>>,
    sync_script: redis::Script,
    ask_script: redis::Script,
    /// Script calls made (each one command on the store).
    calls: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.shown)
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

/// The URL without its password, for logs and the status.
fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
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
    /// A store at `url` (`redis://`, `rediss://`, with a password and a database if
    /// wanted); nothing connects until [`Store::run`].
    pub fn new(
        url: &str,
        sync: Duration,
        timeout: Duration,
        max_clients: usize,
    ) -> Result<Store, String> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "\"{}\" is not a Redis URL: write redis://HOST:PORT/DB or rediss:// for TLS",
                shown_url(url)
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| format!("\"{}\" is not a usable Redis URL: {e}", shown_url(url)))?;
        Ok(Store {
            shown: shown_url(url),
            client,
            connection: tokio::sync::Mutex::new(None),
            sync,
            timeout,
            state: AtomicU8::new(StoreState::Connecting as u8),
            last_error: Mutex::new(None),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: ahash::RandomState::new(),
            per_shard: (max_clients / SHARDS).max(16),
            stems: Mutex::new(HashMap::new()),
            sync_script: redis::Script::new(SYNC_SCRIPT),
            ask_script: redis::Script::new(ASK_SCRIPT),
            calls: AtomicU64::new(0),
        })
    }

    pub fn url(&self) -> &str {
        &self.shown
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

    /// Script calls made so far (one store command each).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Whether a request should ask the store itself (`sync = "0s"` and the store up).
    pub fn asks_each_request(&self) -> bool {
        self.sync.is_zero() && self.state() == StoreState::Up
    }

    /// Make policy `id` known by its identity, which its store keys carry.
    pub(super) fn register(&self, id: u32, name: &str, requests: u32, window: Duration) {
        let key: Arc<str> = Arc::from(format!(
            "{KEY_PREFIX}{name}:{requests}:{}",
            window.as_secs()
        ));
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

    fn shard(&self, id: u32, client: ClientKey) -> &Mutex<Counts> {
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
        if !shard.contains_key(&(id, client)) && shard.len() >= self.per_shard {
            make_room(&mut shard, index, self.per_shard);
        }
        let entry = shard.entry((id, client)).or_default();
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
        let mut connection = self.connection.lock().await.clone()?;
        let mut invocation = self.ask_script.prepare_invoke();
        invocation
            .key(store_key(&stem.key, index, client))
            .key(store_key(&stem.key, index.wrapping_sub(1), client))
            .arg(requests)
            .arg(into * 1_000_000 / (w * 1000))
            .arg(ttl_ms(w));
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(u8, u64, u64)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok((admitted, curr, prev))) => {
                let verdict = if admitted == 1 {
                    // the count includes this request: decide as if just before it
                    decide(requests, w, now, prev, curr.saturating_sub(1))
                } else {
                    decide(requests, w, now, prev, curr)
                };
                Some(verdict)
            }
            Ok(Err(e)) => {
                self.went_down(&e.to_string());
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
                self.shown
            );
        }
    }

    fn came_up(&self) {
        let before = self.state.swap(StoreState::Up as u8, Ordering::Relaxed);
        if before == StoreState::Down as u8 {
            log::info!(
                "rate limit: the store {} is back; counts are shared again",
                self.shown
            );
        } else if before == StoreState::Connecting as u8 {
            log::info!("rate limit: counting in the store {}", self.shown);
        }
    }

    /// The sync loop: push and pull every `sync` (probe every 500 ms with `sync = "0s"`),
    /// reconnect with a backoff while the store is away. Ends with `shutdown`.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let wait = match self.sync_once().await {
                Ok(()) => {
                    self.came_up();
                    backoff = BACKOFF_FIRST;
                    if self.sync.is_zero() {
                        PROBE_EVERY
                    } else {
                        self.sync
                    }
                }
                Err(e) => {
                    self.went_down(&e);
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

    /// A connection, made on first use (and again after one could not be made).
    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut held = self.connection.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let made = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| format!("cannot connect within {:?}", self.timeout * 2))?
        .map_err(|e| e.to_string())?;
        *held = Some(made.clone());
        Ok(made)
    }

    /// Push what was counted here and pull the totals, for every key active in this
    /// window or the one before.
    async fn sync_once(&self) -> Result<(), String> {
        let mut connection = self.connection().await?;
        let stems = self.stems.lock().map(|s| s.clone()).unwrap_or_default();
        let now = unix_ms();
        // what to send: (shard, key, window, pending, prev_pending)
        let mut batch: Vec<Push> = Vec::new();
        for (s, shard) in self.shards.iter().enumerate() {
            let Ok(mut shard) = shard.lock() else {
                continue;
            };
            shard.retain(|(id, _), e| {
                let Some(stem) = stems.get(id) else {
                    return false;
                };
                let index = now / (stem.window_secs * 1000);
                e.roll(index);
                // a key with nothing in this window or the one before is done
                e.total + e.pending + e.prev + e.prev_pending > 0
            });
            for (key, e) in shard.iter() {
                batch.push(Push {
                    shard: s,
                    key: *key,
                    window: e.window,
                    pending: e.pending,
                    prev_pending: e.prev_pending,
                });
            }
        }
        // with sync = "0s" the request path counts in the store itself: only what was
        // counted here while it was away needs pushing
        if self.sync.is_zero() {
            batch.retain(|b| b.pending + b.prev_pending > 0);
        }
        if batch.is_empty() {
            return self.ping(&mut connection).await;
        }
        for chunk in batch.chunks(BATCH) {
            let mut invocation = self.sync_script.prepare_invoke();
            // one ttl for the call, first: the longest window's
            let ttl = chunk
                .iter()
                .filter_map(|b| stems.get(&b.key.0))
                .map(|stem| ttl_ms(stem.window_secs))
                .max()
                .unwrap_or(0);
            invocation.arg(ttl);
            for b in chunk {
                let (id, client) = b.key;
                let Some(stem) = stems.get(&id) else {
                    continue;
                };
                invocation
                    .key(store_key(&stem.key, b.window, client))
                    .key(store_key(&stem.key, b.window.wrapping_sub(1), client))
                    .arg(b.pending)
                    .arg(b.prev_pending);
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let totals: Vec<u64> =
                tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                    .await
                    .map_err(|_| format!("no answer within {:?}", self.timeout))?
                    .map_err(|e| e.to_string())?;
            for (i, b) in chunk.iter().enumerate() {
                let (window, pending, prev_pending) = (b.window, b.pending, b.prev_pending);
                let (Some(&curr), Some(&prev)) = (totals.get(2 * i), totals.get(2 * i + 1)) else {
                    break;
                };
                let Ok(mut shard) = self.shards[b.shard].lock() else {
                    continue;
                };
                let Some(e) = shard.get_mut(&b.key) else {
                    continue;
                };
                if e.window == window {
                    let pulled = unix_ms();
                    if e.pulled_at > 0 && pulled > e.pulled_at {
                        // what the store gained beyond this gateway's own push
                        let others = curr.saturating_sub(e.total + pending);
                        let dt = (pulled - e.pulled_at) as f32;
                        e.others_per_ms = others as f32 / dt;
                        e.own_per_ms = pending as f32 / dt;
                    }
                    e.pulled_at = pulled;
                    e.pending -= pending.min(e.pending);
                    e.prev_pending -= prev_pending.min(e.prev_pending);
                    e.total = curr;
                    e.prev = prev;
                } else if e.window == window + 1 {
                    // the window turned during the call: what was current is the previous
                    e.prev_pending -= pending.min(e.prev_pending);
                    e.prev = curr + e.prev_pending;
                }
            }
        }
        Ok(())
    }

    /// Nothing to push: still check that the store answers.
    async fn ping(&self, connection: &mut ConnectionManager) -> Result<(), String> {
        tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(connection),
        )
        .await
        .map_err(|_| format!("no answer within {:?}", self.timeout))?
        .map(drop)
        .map_err(|e| e.to_string())
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

/// How long a window's key lives: through the next window, where it is the previous one.
fn ttl_ms(window_secs: u64) -> u64 {
    2 * window_secs * 1000 + 1000
}

fn store_key(stem: &str, index: u64, client: ClientKey) -> String {
    match client {
        ClientKey::Ip(ip) => format!("{stem}:{index}:{ip}"),
        ClientKey::Identity(hash) => format!("{stem}:{index}:id-{hash:016x}"),
    }
}

/// The sliding-window decision for a count `count` in the current window and `prev` in
/// the one before, at `now_ms`: room for one more request, and when there is room again.
fn decide(requests: u32, window_secs: u64, now_ms: u64, prev: u64, count: u64) -> Verdict {
    let w_ms = window_secs * 1000;
    let into = now_ms % w_ms;
    let frac = into as f64 / w_ms as f64;
    let estimate = prev as f64 * (1.0 - frac) + count as f64;
    let q = f64::from(requests);
    let to_end = (w_ms - into) as f64 / 1000.0;
    if estimate + 1.0 <= q {
        return Verdict::Allowed {
            remaining: (q - estimate - 1.0).floor().max(0.0) as u32,
            reset: to_end.ceil().max(1.0) as u32,
        };
    }
    // when the weighted total leaves room for one: later in this window if the current
    // count alone does, else in the next window once enough of this one has slid out
    let w = window_secs as f64;
    let wait = if (count as f64) + 1.0 <= q && prev > 0 {
        let needed = 1.0 - (q - 1.0 - count as f64) / prev as f64;
        (needed - frac).max(0.0) * w
    } else {
        let needed = if count > 0 {
            (1.0 - (q - 1.0) / count as f64).max(0.0)
        } else {
            0.0
        };
        to_end + needed * w
    };
    Verdict::Limited {
        reset: wait.ceil().max(1.0) as u32,
    }
}

/// Stores by identity (URL, sync, timeout), so that a reload keeps the one it names.
#[derive(Default)]
pub struct Stores {
    by_identity: Mutex<HashMap<String, std::sync::Weak<Store>>>,
}

impl Stores {
    /// The store for these settings: the one already running, or a new one.
    pub fn get(
        &self,
        url: &str,
        sync: Duration,
        timeout: Duration,
        max_clients: usize,
    ) -> Result<Arc<Store>, String> {
        let identity = format!("{url} {sync:?} {timeout:?}");
        let mut known = self
            .by_identity
            .lock()
            .map_err(|_| "the store registry is poisoned".to_string())?;
        known.retain(|_, s| s.strong_count() > 0);
        if let Some(store) = known.get(&identity).and_then(std::sync::Weak::upgrade) {
            return Ok(store);
        }
        let store = Arc::new(Store::new(url, sync, timeout, max_clients)?);
        known.insert(identity, Arc::downgrade(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_window_weighs_by_how_much_of_it_still_overlaps() {
        // 10 per 10 s; 8 in the previous window, 1 s into this one: 8·0.9 + 0 = 7.2
        let v = decide(10, 10, 1_000, 8, 0);
        assert_eq!(
            v,
            Verdict::Allowed {
                remaining: 1,
                reset: 9
            }
        );
        // 9 s in: 8·0.1 + 8 = 8.8, and one more makes 9.8
        assert!(matches!(
            decide(10, 10, 9_000, 8, 8),
            Verdict::Allowed { .. }
        ));
        // at the boundary a client that used its budget gets none at once
        let v = decide(10, 10, 0, 10, 0);
        assert!(matches!(v, Verdict::Limited { reset: 1 }), "{v:?}");
    }

    #[test]
    fn limited_says_when_there_is_room_again() {
        // 10 in the current window (full), 2 s left: the next window needs 10% of it gone
        let v = decide(10, 10, 8_000, 0, 10);
        assert_eq!(v, Verdict::Limited { reset: 3 });
        // the current count leaves room, the previous window's weight does not yet:
        // 5 now, 10 before, 0.5 in: 5 + 10·0.5 = 10; room once 10·(1-f) <= 4, at f = 0.6
        let v = decide(10, 10, 5_000, 10, 5);
        assert_eq!(v, Verdict::Limited { reset: 1 });
    }

    #[test]
    fn an_entry_rolls_its_counts_into_the_previous_window() {
        let mut e = Entry {
            window: 5,
            total: 7,
            pending: 2,
            prev: 1,
            ..Entry::default()
        };
        e.roll(6);
        assert_eq!(
            (e.window, e.total, e.pending, e.prev, e.prev_pending),
            (6, 0, 0, 9, 2)
        );
        e.roll(9);
        assert_eq!(
            (e.window, e.prev),
            (9, 0),
            "two windows on, nothing is left"
        );
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            shown_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(shown_url("redis://127.0.0.1/1"), "redis://127.0.0.1/1");
        assert!(Store::new("http://x", Duration::ZERO, Duration::from_millis(1), 1000).is_err());
    }

    #[test]
    fn without_a_store_the_gateway_still_enforces_the_whole_budget() {
        let store = Store::new(
            "redis://127.0.0.1:1/0",
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
