//! The in-memory store: sharded maps from a key's hash to an entry whose body is one
//! `Bytes` (a hit hands out a reference, never a copy). The store counts what it holds;
//! pingora-cache's LRU manager decides what leaves when the budget is full, and has the
//! store purge it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeTarget, PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, PurgeOutcome};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::Registry;

const SHARDS: usize = 16;
/// What an entry costs beyond its body and header: the key, the map's slot, the Arc.
const ENTRY_OVERHEAD: usize = 160;

/// One stored response.
struct Entry {
    /// The meta as pingora-cache serializes it: its internal part and the header.
    internal: Vec<u8>,
    header: Vec<u8>,
    /// The same meta ready to be made again without deserializing (a fifth of a hit's
    /// instructions, most of them decompressing the header), when `CacheMeta::new` and its
    /// setters make it exactly: never revalidated into a new provenance.
    parts: Option<Parts>,
    body: Bytes,
    /// The request path it answers, for purges by path and prefix.
    path: Box<str>,
    key: CompactCacheKey,
    weight: usize,
}

/// What a meta made by `CacheMeta::new` holds.
struct Parts {
    fresh_until: SystemTime,
    created: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<HashBinary>,
    epoch_override: Option<SystemTime>,
    header: ResponseHeader,
}

impl Parts {
    /// The parts of `meta`, when remaking it from them gives it back exactly.
    fn of(meta: &CacheMeta) -> Option<Parts> {
        let created = meta.created();
        (meta.updated() == created && meta.provenance() == created).then(|| Parts {
            fresh_until: meta.fresh_until(),
            created,
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            variance: meta.variance(),
            epoch_override: meta.epoch_override(),
            header: meta.response_header_copy(),
        })
    }

    /// About what the kept header takes in memory: its fields, and a map slot each.
    fn size(&self) -> usize {
        64 + self
            .header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum::<usize>()
    }

    fn meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        if let Some(epoch) = self.epoch_override {
            meta.set_epoch_override(epoch);
        }
        meta
    }
}

pub struct MemStore {
    shards: Vec<RwLock<HashMap<HashBinary, Arc<Entry>>>>,
    bytes: AtomicU64,
    evictions: AtomicU64,
    counts: Arc<Registry>,
}

impl MemStore {
    pub(super) fn new(counts: Arc<Registry>) -> MemStore {
        MemStore {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            bytes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            counts,
        }
    }

    fn shard(&self, hash: &HashBinary) -> &RwLock<HashMap<HashBinary, Arc<Entry>>> {
        &self.shards[hash[0] as usize % SHARDS]
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Put an entry in, in place of any with its hash.
    fn insert(&self, hash: HashBinary, entry: Arc<Entry>) {
        self.account(&entry, true);
        let old = self
            .shard(&hash)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, entry);
        if let Some(old) = old {
            self.account(&old, false);
        }
    }

    /// Take an entry out; whether there was one.
    fn remove(&self, hash: &HashBinary, evicted: bool) -> bool {
        let old = self
            .shard(hash)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(hash);
        match old {
            Some(old) => {
                self.account(&old, false);
                if evicted {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                    super::bump(&self.counts.route(&old.key.user_tag).evictions);
                }
                true
            }
            None => false,
        }
    }

    /// Take out the entry stored under a key's primary hash (a write invalidated it).
    pub(super) fn remove_primary(&self, hash: &HashBinary) -> bool {
        self.remove(hash, false)
    }

    fn account(&self, entry: &Entry, added: bool) {
        let weight = entry.weight as u64;
        let route = self.counts.route(&entry.key.user_tag);
        if added {
            self.bytes.fetch_add(weight, Ordering::Relaxed);
            route.stored_bytes.fetch_add(weight, Ordering::Relaxed);
        } else {
            self.bytes.fetch_sub(weight, Ordering::Relaxed);
            route.stored_bytes.fetch_sub(weight, Ordering::Relaxed);
        }
    }

    /// Remove every entry whose path `matches`: their keys.
    pub(super) fn remove_where(&self, matches: impl Fn(&str) -> bool) -> Vec<CompactCacheKey> {
        let mut removed = Vec::new();
        for shard in &self.shards {
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, entry| {
                let keep = !matches(&entry.path);
                if !keep {
                    removed.push(entry.clone());
                }
                keep
            });
        }
        for entry in &removed {
            self.account(entry, false);
        }
        removed.into_iter().map(|e| e.key.clone()).collect()
    }
}

fn storage_error(what: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, what)
}

#[async_trait]
impl Storage for MemStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let entry = self
            .shard(&hash)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        let Some(entry) = entry else {
            return Ok(None);
        };
        let meta = match &entry.parts {
            Some(parts) => parts.meta(),
            None => CacheMeta::deserialize(&entry.internal, &entry.header)?,
        };
        let len = entry.body.len();
        let hit = Hit {
            body: entry.body.clone(),
            range: 0..len,
            done: false,
            weight: entry.weight,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let (internal, header) = meta.serialize()?;
        let path = super::key::path_of(key.primary_key()).unwrap_or_default();
        Ok(Box::new(Miss {
            store: self,
            parts: Parts::of(meta),
            hash: key.combined_bin(),
            key: key.to_compact(),
            path: Box::from(path),
            internal,
            header,
            body: BytesMut::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        kind: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        let evicted = matches!(kind, PurgeType::Eviction);
        Ok(if self.remove(&hash, evicted) {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let (internal, header) = meta.serialize()?;
        let mut map = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
        // gone meanwhile (purged, evicted): nothing to update, never a panic
        let Some(old) = map.get(&hash).cloned() else {
            return Ok(false);
        };
        // the weight the eviction manager knows it by stays
        let weight = old.weight;
        let entry = Arc::new(Entry {
            internal,
            header,
            parts: Parts::of(meta),
            body: old.body.clone(),
            path: old.path.clone(),
            key: old.key.clone(),
            weight,
        });
        map.insert(hash, entry.clone());
        drop(map);
        self.account(&old, false);
        self.account(&entry, true);
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A hit: the stored body, or the part of it a range asked for.
struct Hit {
    body: Bytes,
    range: std::ops::Range<usize>,
    done: bool,
    weight: usize,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.clone())))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.map_or(len, |e| e.min(len));
        if start > end {
            return Err(storage_error("range outside the stored body"));
        }
        self.range = start..end;
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill: the body gathered, then stored whole at `finish` (a fill dropped unfinished
/// stores nothing).
struct Miss {
    store: &'static MemStore,
    parts: Option<Parts>,
    hash: HashBinary,
    key: CompactCacheKey,
    path: Box<str>,
    internal: Vec<u8>,
    header: Vec<u8>,
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let weight = self.body.len()
            + self.internal.len()
            + self.header.len()
            + self.parts.as_ref().map_or(0, Parts::size)
            + self.path.len()
            + ENTRY_OVERHEAD;
        let entry = Arc::new(Entry {
            internal: self.internal,
            header: self.header,
            parts: self.parts,
            body: self.body.freeze(),
            path: self.path,
            key: self.key,
            weight,
        });
        self.store.insert(self.hash, entry);
        Ok(MissFinishType::Created(weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meta_made_again_from_its_parts_is_the_one_stored() {
        let now = SystemTime::now();
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.append_header("etag", "\"v1\"").unwrap();
        let mut meta = CacheMeta::new(
            now + std::time::Duration::from_secs(60),
            now,
            30,
            300,
            header,
        );
        meta.set_variance([7; 16]);
        meta.set_epoch_override(now - std::time::Duration::from_secs(5));
        let again = Parts::of(&meta).expect("a new meta").meta();
        assert_eq!(again.serialize().unwrap(), meta.serialize().unwrap());
        // revalidated: its freshness was updated later than it was made
        meta.update_freshness(now + std::time::Duration::from_secs(120), 30, 300);
        assert!(Parts::of(&meta).is_none());
    }
}
