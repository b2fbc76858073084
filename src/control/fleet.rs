//! A fleet: gateways that share one policy document through a Redis store.
//!
//! In the store, under the fleet's hash tag (one cluster slot):
//! - `{pylon:fleet:NAME}:doc`, a hash: `text`, `hash`, `version` (one more on each write);
//! - `{pylon:fleet:NAME}:changed`, the channel a write publishes the new hash on;
//! - `{pylon:fleet:NAME}:node:NODE`, each node's state as JSON, expiring after
//!   [`NODE_TTL`] unless the node writes it again (every [`BEAT`]);
//! - `{pylon:fleet:NAME}:nodes`, a sorted set of node names by when each was last seen, so
//!   that a node whose state expired is shown as gone (for an hour, then forgotten).
//!
//! A write is a compare-and-set on the document's hash (a script), then a publish. Each
//! node subscribes to the channel and, on a message, compares the store's hash with the
//! one it applied; it compares every [`BEAT`] too, and again after any reconnection, so a
//! node that missed messages catches up without trusting that it saw them all. A document
//! that does not compile on a node is not applied there: the node keeps its config and
//! reports the error in its state. The last document applied is kept in `cache_file`, to
//! start from when the store is away.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use pingora::server::ShutdownWatch;
use redis::AsyncCommands as _;

use crate::config::{ControlSection, FileConfig};
use crate::store::{Link, Target};

use super::{Current, WriteError, Written};

/// A purge of the response cache: one path, or every path under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    Path(String),
    Prefix(String),
}

impl Purge {
    /// As published: `path /x/1` or `prefix /x`.
    fn to_message(&self) -> String {
        match self {
            Purge::Path(p) => format!("path {p}"),
            Purge::Prefix(p) => format!("prefix {p}"),
        }
    }

    fn parse(message: &str) -> Option<Purge> {
        match message.split_once(' ')? {
            ("path", p) if p.starts_with('/') => Some(Purge::Path(p.to_string())),
            ("prefix", p) if p.starts_with('/') => Some(Purge::Prefix(p.to_string())),
            _ => None,
        }
    }

    /// Purge it from this node's cache: the entries removed.
    pub fn run(&self, cache: &crate::cache::Cache) -> usize {
        match self {
            Purge::Path(p) => cache.purge(Some(p), None),
            Purge::Prefix(p) => cache.purge(None, Some(p)),
        }
    }
}

/// How often a node writes its state and compares hashes.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a node's state lives in the store without a new beat.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// How long a gone node is still listed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Reconnection waits at most this long (with jitter).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A write: the document's hash must be the expected one (or any, with `*`); the same text
/// changes nothing; otherwise the text, its hash and one more version, and a publish.
/// Returns {outcome, hash before, version}: outcome 0 stale, 1 written, 2 unchanged.
const COMPARE_AND_SET: &str = r"
local current = redis.call('HGET', KEYS[1], 'hash') or ARGV[5]
if ARGV[1] ~= '*' and ARGV[1] ~= current then
  return {0, current, tonumber(redis.call('HGET', KEYS[1], 'version') or '0')}
end
if ARGV[2] == current then
  return {2, current, tonumber(redis.call('HGET', KEYS[1], 'version') or '0')}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'text', ARGV[3], 'hash', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return {1, current, version}
";

/// This node in its fleet.
pub struct Fleet {
    target: Target,
    fleet: String,
    node: String,
    /// Where this node's admin API (or first listener) is, as the fleet view shows it.
    address: String,
    cache_file: Option<PathBuf>,
    timeout: Duration,
    keys: Keys,
    /// The name errors in the fleet's document are located by.
    document_name: PathBuf,
    link: tokio::sync::Mutex<Option<Link>>,
    state: Mutex<State>,
    /// A message on the channel, or a write here: compare now.
    wake: tokio::sync::Notify,
}

struct Keys {
    doc: String,
    nodes: String,
    node_prefix: String,
    channel: String,
    /// The cache's purges, for every node.
    purges: String,
}

/// What this node knows of its fleet.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Whether the store answered the last call.
    pub store_up: bool,
    /// The store's last error.
    pub store_error: Option<String>,
    /// The version of the fleet's document applied here.
    pub applied_version: Option<u64>,
    /// The document in the store, as last read: its hash and version.
    pub stored: Option<(String, u64)>,
    /// A document of the store's that does not compile here: its hash and the error.
    pub failed: Option<(String, String)>,
    /// Every node's state, as last read.
    pub nodes: Vec<Node>,
}

/// A node's state as it writes it to the store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    pub address: String,
    /// The hash of the document it applied.
    pub hash: String,
    pub generation: u64,
    /// Why the store's document does not apply there.
    pub error: Option<String>,
    /// When it last wrote its state (Unix ms).
    pub seen_ms: u64,
    /// Whether its state is still in the store (false: gone).
    #[serde(skip)]
    pub alive: bool,
}

/// Where a node stands against the store's document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Current,
    Behind,
    Failed,
    Gone,
}

impl Standing {
    pub const ALL: [Standing; 4] = [
        Standing::Current,
        Standing::Behind,
        Standing::Failed,
        Standing::Gone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Standing::Current => "current",
            Standing::Behind => "behind",
            Standing::Failed => "failed",
            Standing::Gone => "gone",
        }
    }
}

impl Node {
    /// Where it stands against the store's document `stored` (its hash).
    pub fn standing(&self, stored: Option<&str>) -> Standing {
        match (self.alive, &self.error, stored) {
            (false, _, _) => Standing::Gone,
            (true, Some(_), _) => Standing::Failed,
            (true, None, Some(hash)) if hash != self.hash => Standing::Behind,
            _ => Standing::Current,
        }
    }
}

/// Where a node's first policy document came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Store,
    CacheFile,
    /// Nothing to start from: no document in the store (or no store) and no cache.
    Empty,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fleet {
    /// The fleet a config's `[control]` names, or `None` without a store. `fallback_node`
    /// names the node when `node` is absent; `address` is where it is reached.
    pub fn from_config(file: &FileConfig, address: String) -> Result<Option<Fleet>, String> {
        let Some(control) = file.fleet() else {
            return Ok(None);
        };
        Fleet::new(control, &file.server.listen.get_ref()[..], address).map(Some)
    }

    fn new(
        control: &ControlSection,
        listen: &[crate::config::Listen],
        address: String,
    ) -> Result<Fleet, String> {
        let (Some(store), Some(fleet)) = (&control.store, &control.fleet) else {
            return Err("[control] needs store and fleet".into());
        };
        let timeout = control.store_timeout.0;
        let target = Target::new(store.get_ref(), timeout)?;
        let fleet = fleet.get_ref().0.clone();
        let node = match &control.node {
            Some(node) => node.get_ref().0.clone(),
            None => {
                let host = hostname();
                match listen.first() {
                    Some(l) => format!("{host}:{}", l.0.port()),
                    None => host,
                }
            }
        };
        let tag = format!("{{pylon:fleet:{fleet}}}");
        Ok(Fleet {
            keys: Keys {
                doc: format!("{tag}:doc"),
                nodes: format!("{tag}:nodes"),
                node_prefix: format!("{tag}:node:"),
                channel: format!("{tag}:changed"),
                purges: format!("{tag}:purge"),
            },
            document_name: PathBuf::from(format!("fleet {fleet}'s policy document")),
            target,
            fleet,
            node,
            address,
            cache_file: control
                .cache_file
                .as_ref()
                .map(|f| PathBuf::from(f.get_ref())),
            timeout,
            link: tokio::sync::Mutex::new(None),
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.fleet
    }

    /// Whether `control` names this fleet's store (as logs show it).
    pub fn uses(&self, control: &ControlSection) -> bool {
        control
            .store
            .as_ref()
            .and_then(|s| Target::new(s.get_ref(), self.timeout).ok())
            .is_some_and(|t| t.shown() == self.target.shown())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The store, as logs and the status show it (no password).
    pub fn store(&self) -> &str {
        self.target.shown()
    }

    /// The name errors in the fleet's document are located by.
    pub fn document_name(&self) -> &Path {
        &self.document_name
    }

    pub fn state(&self) -> State {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
    }

    /// The document to start from, before the server runs: the store's; when the store
    /// cannot be reached (or holds none yet), the cache file's; else an empty one. Each
    /// case is logged.
    pub fn first_document(&self) -> (Option<String>, Origin) {
        let fetched = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(async {
                    let fetched = self.fetch().await;
                    // the link lives on this runtime, which ends here: the server makes its own
                    *self.link.lock().await = None;
                    fetched
                })
            });
        let from_cache = |why: &str| match self.cached() {
            Some(text) => {
                log::warn!(
                    "fleet {}: {why}: starting from the cache file {} (document {})",
                    self.fleet,
                    self.cache_file
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display(),
                    crate::config::content_hash(&text)
                );
                (Some(text), Origin::CacheFile)
            }
            None => {
                log::error!(
                    "fleet {}: {why}, and there is no cache file to start from: starting with no routes until the store has a document",
                    self.fleet
                );
                (None, Origin::Empty)
            }
        };
        match fetched {
            Ok(Some((text, version))) => {
                log::info!(
                    "fleet {}: node {} starts from the store's document version {version} ({})",
                    self.fleet,
                    self.node,
                    crate::config::content_hash(&text)
                );
                self.update(|s| {
                    s.store_up = true;
                    s.stored = Some((crate::config::content_hash(&text), version));
                });
                (Some(text), Origin::Store)
            }
            Ok(None) => from_cache(&format!(
                "the store {} holds no policy document yet (PUT one to /config)",
                self.store()
            )),
            Err(e) => {
                self.update(|s| s.store_error = Some(e.clone()));
                from_cache(&format!("the store {} is unreachable ({e})", self.store()))
            }
        }
    }

    /// The cache file's document, if there is one.
    pub fn cached(&self) -> Option<String> {
        let path = self.cache_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                log::error!(
                    "fleet {}: cannot read the cache file {}: {e}",
                    self.fleet,
                    path.display()
                );
                None
            }
        }
    }

    /// Try the store's document again at the next beat, even one that failed here (after
    /// a reload of the node's file, which may have fixed what it lacked).
    pub fn retry(&self) {
        self.update(|s| s.failed = None);
        self.wake.notify_one();
    }

    /// A document of the store's that does not compile here.
    pub fn failed_to_apply(&self, hash: String, error: String) {
        self.update(|s| s.failed = Some((hash, error)));
    }

    /// A link to the store, made if there is none.
    async fn link(&self) -> Result<Link, String> {
        let mut held = self.link.lock().await;
        if let Some(link) = held.as_ref() {
            return Ok(link.clone());
        }
        let link = self.target.connect(self.timeout).await?;
        *held = Some(link.clone());
        Ok(link)
    }

    /// After an error: the next call connects again.
    async fn went_down(&self, error: &str) {
        *self.link.lock().await = None;
        let was_up = self.state().store_up;
        self.update(|s| {
            s.store_up = false;
            s.store_error = Some(error.to_string());
        });
        if was_up {
            log::error!(
                "fleet {}: the store {} went away: {error}",
                self.fleet,
                self.store()
            );
        }
    }

    fn came_back(&self) {
        let was_down = !self.state().store_up;
        self.update(|s| {
            s.store_up = true;
            s.store_error = None;
        });
        if was_down {
            log::info!("fleet {}: the store {} answers", self.fleet, self.store());
        }
    }

    /// The store's document and its version, or `None` when it has none.
    async fn fetch(&self) -> Result<Option<(String, u64)>, String> {
        let mut link = self.link().await?;
        let got: Result<(Option<String>, Option<u64>), _> = tokio::time::timeout(
            self.timeout,
            redis::cmd("HMGET")
                .arg(&self.keys.doc)
                .arg("text")
                .arg("version")
                .query_async(&mut link),
        )
        .await
        .map_err(|_| format!("no answer within {:?}", self.timeout))?;
        match got {
            Ok((Some(text), version)) => Ok(Some((text, version.unwrap_or(0)))),
            Ok((None, _)) => Ok(None),
            Err(e) => Err(crate::store::explain(&e)),
        }
    }

    /// A write through the store: checked here first, then a compare-and-set, a
    /// notification, and the document applied here at once.
    pub(super) async fn write(
        &self,
        current: &Current,
        text: &str,
        if_match: &str,
        hash: String,
    ) -> Result<Written, WriteError> {
        current.checked(text).map_err(WriteError::Invalid)?;
        let expected = match if_match.trim() {
            "*" => "*",
            list => super::write::entity_tag(list.split(',').next().unwrap_or("")),
        };
        let outcome = self.compare_and_set(expected, text, &hash).await;
        let (code, before, version) = match outcome {
            Ok(answer) => {
                self.came_back();
                answer
            }
            Err(e) => {
                self.went_down(&e).await;
                return Err(WriteError::StoreUnavailable(e));
            }
        };
        match code {
            0 => Err(WriteError::Stale {
                given: if_match.to_string(),
                current: before,
            }),
            2 => Ok(Written::Unchanged {
                hash,
                generation: current.status().generation,
            }),
            _ => {
                let generation = self
                    .apply(current, text, version)
                    .map_err(WriteError::Invalid)?;
                self.wake.notify_one();
                Ok(Written::Applied {
                    hash,
                    previous: before,
                    generation,
                })
            }
        }
    }

    async fn compare_and_set(
        &self,
        expected: &str,
        text: &str,
        hash: &str,
    ) -> Result<(u8, String, u64), String> {
        let mut link = self.link().await?;
        let script = redis::Script::new(COMPARE_AND_SET);
        let mut invocation = script.key(&self.keys.doc);
        invocation
            .arg(expected)
            .arg(hash)
            .arg(text)
            .arg(&self.keys.channel)
            .arg(crate::config::content_hash(""));
        tokio::time::timeout(self.timeout, invocation.invoke_async(&mut link))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| crate::store::explain(&e))
    }

    /// Apply the fleet's document `version` here, unless a newer one is applied already.
    fn apply(
        &self,
        current: &Current,
        text: &str,
        version: u64,
    ) -> Result<u64, crate::config::ConfigError> {
        let hash = crate::config::content_hash(text);
        if *current.document().hash == hash {
            // in force already (a write here, then its own notification)
            self.update(|s| s.applied_version = s.applied_version.max(Some(version)));
            return Ok(current.status().generation);
        }
        let loaded = current.load_policy(text, &self.document_name)?;
        match current.install(loaded) {
            Ok((generation, _)) => {
                self.update(|s| {
                    s.applied_version = Some(version);
                    s.failed = None;
                });
                log::info!(
                    "fleet {}: document version {version} ({hash}) applied as generation {generation}",
                    self.fleet
                );
                self.keep(text);
                Ok(generation)
            }
            Err(e) => {
                log::error!(
                    "fleet {}: document version {version} ({hash}) does not apply on node {}, which keeps its config: {e}",
                    self.fleet,
                    self.node
                );
                self.update(|s| s.failed = Some((hash, e.to_string())));
                Err(e)
            }
        }
    }

    /// Keep the applied document in the cache file (written beside it, then renamed).
    fn keep(&self, text: &str) {
        let Some(path) = &self.cache_file else {
            return;
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let written =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path));
        if let Err(e) = written {
            log::error!(
                "fleet {}: cannot write the cache file {}: {e}",
                self.fleet,
                path.display()
            );
        }
    }

    /// Follow the fleet until shutdown: the subscription, and a beat that writes this
    /// node's state and compares hashes.
    pub async fn run(&self, current: &Current, mut shutdown: ShutdownWatch) {
        let beats = async {
            let mut failures = 0u32;
            loop {
                let wait = match self.beat(current).await {
                    Ok(()) => {
                        failures = 0;
                        BEAT
                    }
                    Err(e) => {
                        self.went_down(&e).await;
                        failures = failures.saturating_add(1);
                        backoff(failures)
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                }
            }
        };
        let messages = async {
            let mut failures = 0u32;
            loop {
                match self.listen(current).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        log::debug!("fleet {}: subscription: {e}", self.fleet);
                        failures = failures.saturating_add(1);
                    }
                }
                tokio::time::sleep(backoff(failures.max(1))).await;
            }
        };
        tokio::select! {
            _ = beats => {}
            _ = messages => {}
            _ = shutdown.changed() => {}
        }
    }

    /// Subscribe to the document's channel and the cache's purges: wake the beat on each
    /// change and once subscribed (a reconnection compares hashes at once), purge this
    /// node's cache on each purge; returns when the subscription ends.
    async fn listen(&self, current: &Current) -> Result<(), String> {
        use futures::StreamExt as _;
        let mut pubsub = self.target.pubsub(self.timeout).await?;
        for channel in [&self.keys.channel, &self.keys.purges] {
            pubsub
                .subscribe(channel)
                .await
                .map_err(|e| crate::store::explain(&e))?;
        }
        self.wake.notify_one();
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            if message.get_channel_name() != self.keys.purges {
                self.wake.notify_one();
                continue;
            }
            let payload: String = message.get_payload().unwrap_or_default();
            match Purge::parse(&payload) {
                Some(purge) => {
                    let n = purge.run(&current.peek().shared.cache);
                    log::info!(
                        "fleet {}: purge {payload} from the fleet: {n} entries here",
                        self.fleet
                    );
                }
                None => log::warn!(
                    "fleet {}: a purge message not understood: {payload:?}",
                    self.fleet
                ),
            }
        }
        Err("the subscription ended".into())
    }

    /// Tell every node of the fleet to purge (this one too, again: a purge is idempotent).
    pub async fn publish_purge(&self, purge: &Purge) -> Result<(), String> {
        let mut link = self.link().await?;
        let sent: Result<u64, _> = tokio::time::timeout(
            self.timeout,
            redis::cmd("PUBLISH")
                .arg(&self.keys.purges)
                .arg(purge.to_message())
                .query_async(&mut link),
        )
        .await
        .map_err(|_| format!("no answer within {:?}", self.timeout))?;
        sent.map(|_| ()).map_err(|e| crate::store::explain(&e))
    }

    /// One beat: write this node's state, read the store's document hash and every node's
    /// state, and apply the store's document when it is not the one applied here.
    async fn beat(&self, current: &Current) -> Result<(), String> {
        let started = Instant::now();
        let mut link = self.link().await?;
        let now = unix_ms(SystemTime::now());
        let status = current.status();
        let state = self.state();
        let stored_hash = state.stored.as_ref().map(|(h, _)| h.clone());
        let me = Node {
            name: self.node.clone(),
            address: self.address.clone(),
            hash: status.document.hash.to_string(),
            generation: status.generation,
            error: state
                .failed
                .as_ref()
                .filter(|(hash, _)| Some(hash) == stored_hash.as_ref())
                .map(|(_, e)| e.clone()),
            seen_ms: now,
            alive: true,
        };
        let json = serde_json::to_string(&me).map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{}{}", self.keys.node_prefix, self.node))
            .arg(json)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(&self.keys.nodes)
            .arg(now)
            .arg(&self.node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&self.keys.nodes)
            .arg("-inf")
            .arg(now.saturating_sub(FORGET_AFTER.as_millis() as u64))
            .ignore()
            .cmd("HMGET")
            .arg(&self.keys.doc)
            .arg("hash")
            .arg("version")
            .cmd("ZRANGE")
            .arg(&self.keys.nodes)
            .arg(0)
            .arg(-1);
        /// The document's hash and version, and the names of the fleet's nodes.
        type Answer = ((Option<String>, Option<u64>), Vec<String>);
        let answer: Result<Answer, _> =
            tokio::time::timeout(self.timeout, pipe.query_async(&mut link))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?;
        let ((hash, version), names) = answer.map_err(|e| crate::store::explain(&e))?;
        let states: Vec<Option<String>> = if names.is_empty() {
            Vec::new()
        } else {
            let keys: Vec<String> = names
                .iter()
                .map(|n| format!("{}{n}", self.keys.node_prefix))
                .collect();
            tokio::time::timeout(self.timeout, link.mget(keys))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| crate::store::explain(&e))?
        };
        self.came_back();
        let nodes = names
            .iter()
            .zip(states.iter().chain(std::iter::repeat(&None)))
            .map(|(name, state)| {
                state
                    .as_deref()
                    .and_then(|s| serde_json::from_str::<Node>(s).ok())
                    .map(|n| Node { alive: true, ..n })
                    .unwrap_or_else(|| Node {
                        name: name.clone(),
                        address: String::new(),
                        hash: String::new(),
                        generation: 0,
                        error: None,
                        seen_ms: 0,
                        alive: false,
                    })
            })
            .collect();
        let stored = hash.clone().map(|h| (h, version.unwrap_or(0)));
        self.update(|s| {
            s.stored = stored.clone();
            s.nodes = nodes;
        });
        log::trace!("fleet {}: beat in {:?}", self.fleet, started.elapsed());
        let Some((hash, version)) = stored else {
            return Ok(());
        };
        let failed_here = state.failed.as_ref().is_some_and(|(h, _)| *h == hash);
        if hash != *status.document.hash && !failed_here {
            if let Some((text, version)) = self.fetch().await? {
                // the outcome is logged and shown in the node's state
                let _ = self.apply(current, &text, version);
                // tell the fleet at once
                self.wake.notify_one();
            }
        } else if hash == *status.document.hash && state.applied_version != Some(version) {
            self.update(|s| s.applied_version = Some(version));
        }
        Ok(())
    }
}

/// The wait before the `failures`-th reconnection: doubling from 250 ms up to
/// [`MAX_BACKOFF`], each between half and all of it, so that nodes do not call together.
fn backoff(failures: u32) -> Duration {
    let full = Duration::from_millis(250)
        .saturating_mul(1u32 << failures.min(6))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf, which outlives the call
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "pylon".to_string(),
    }
}

impl Current {
    /// With a fleet, follow it until shutdown; without, return at once.
    pub async fn follow_fleet(&self, shutdown: ShutdownWatch) {
        if let Some(fleet) = &self.fleet {
            fleet.run(self, shutdown).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(alive: bool, hash: &str, error: Option<&str>) -> Node {
        Node {
            name: "n".into(),
            address: String::new(),
            hash: hash.into(),
            generation: 1,
            error: error.map(str::to_string),
            seen_ms: 0,
            alive,
        }
    }

    #[test]
    fn a_node_stands_current_behind_failed_or_gone() {
        assert_eq!(node(true, "a", None).standing(Some("a")), Standing::Current);
        assert_eq!(node(true, "a", None).standing(Some("b")), Standing::Behind);
        assert_eq!(
            node(true, "a", Some("x")).standing(Some("b")),
            Standing::Failed
        );
        assert_eq!(node(false, "a", None).standing(Some("a")), Standing::Gone);
        assert_eq!(node(true, "a", None).standing(None), Standing::Current);
    }

    #[test]
    fn the_backoff_doubles_with_jitter_up_to_its_cap() {
        for failures in 1..20 {
            let full = Duration::from_millis(250)
                .saturating_mul(1 << failures.min(6))
                .min(MAX_BACKOFF);
            let wait = backoff(failures);
            assert!(wait >= full / 2 && wait <= full, "{failures}: {wait:?}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    #[test]
    fn purges_round_trip_as_messages() {
        for purge in [Purge::Path("/x/1 a".into()), Purge::Prefix("/x".into())] {
            assert_eq!(Purge::parse(&purge.to_message()), Some(purge));
        }
        assert_eq!(Purge::parse("path x"), None);
        assert_eq!(Purge::parse("drop /x"), None);
    }

    #[test]
    fn a_node_state_round_trips_as_json() {
        let n = node(true, "abc", Some("e"));
        let json = serde_json::to_string(&n).unwrap();
        let back: Node = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Node { alive: false, ..n });
    }
}
