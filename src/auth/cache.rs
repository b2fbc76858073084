//! A bounded cache keyed by SHA-256 digests, split into independently locked shards so
//! worker threads rarely meet on the same lock. Entries expire at a time given on insert;
//! a full shard first drops what has expired, then an arbitrary entry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

const SHARDS: usize = 64;
/// A full shard looks for expired entries at most this often (ms); in between it evicts
/// one arbitrary entry per insert, so an insert never scans the shard twice in a row.
const PURGE_EVERY_MS: u64 = 1_000;

pub(crate) type Digest = [u8; 32];

struct Entry<V> {
    expires_ms: u64,
    value: V,
}

struct Shard<V> {
    map: HashMap<Digest, Entry<V>, ahash::RandomState>,
    last_purge_ms: u64,
}

pub(crate) struct ShardedCache<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
}

impl<V: Clone> ShardedCache<V> {
    /// A cache of at most about `capacity` entries.
    pub fn new(capacity: usize) -> ShardedCache<V> {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_hasher(ahash::RandomState::new()),
                    last_purge_ms: 0,
                })
            })
            .collect();
        ShardedCache { shards, per_shard }
    }

    fn shard(&self, key: &Digest) -> &Mutex<Shard<V>> {
        // digests are uniform: their first byte spreads keys evenly
        &self.shards[key[0] as usize % SHARDS]
    }

    /// The value, unless absent or expired at `now_ms`.
    pub fn get(&self, key: &Digest, now_ms: u64) -> Option<V> {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.map.get(key) {
            Some(e) if e.expires_ms > now_ms => Some(e.value.clone()),
            Some(_) => {
                shard.map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: Digest, value: V, expires_ms: u64, now_ms: u64) {
        if expires_ms <= now_ms {
            return;
        }
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.map.len() >= self.per_shard && !shard.map.contains_key(&key) {
            if now_ms >= shard.last_purge_ms.saturating_add(PURGE_EVERY_MS) {
                shard.last_purge_ms = now_ms;
                shard.map.retain(|_, e| e.expires_ms > now_ms);
            }
            if shard.map.len() >= self.per_shard {
                if let Some(victim) = shard.map.keys().next().copied() {
                    shard.map.remove(&victim);
                }
            }
        }
        shard.map.insert(key, Entry { expires_ms, value });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Digest {
        let d = ring::digest::digest(&ring::digest::SHA256, &i.to_le_bytes());
        d.as_ref().try_into().unwrap()
    }

    #[test]
    fn entries_expire() {
        let c = ShardedCache::new(100);
        c.insert(key(1), "a", 1_000, 0);
        assert_eq!(c.get(&key(1), 999), Some("a"));
        assert_eq!(c.get(&key(1), 1_000), None);
        assert_eq!(c.len(), 0);
        c.insert(key(2), "b", 5, 5);
        assert_eq!(
            c.get(&key(2), 0),
            None,
            "already expired entries are not stored"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = ShardedCache::new(1_000);
        for i in 0..20_000 {
            c.insert(key(i), i, u64::MAX, 0);
        }
        assert!(c.len() <= 1_000 + SHARDS, "{}", c.len());
        assert!(c.len() >= 900, "{}", c.len());
        // the newest entry is always kept
        assert_eq!(c.get(&key(19_999), 0), Some(19_999));
    }

    #[test]
    fn expired_entries_make_room_first() {
        let c = ShardedCache::new(SHARDS * 8);
        for i in 0..10_000 {
            c.insert(key(i), i, 10, 0);
        }
        let live: Vec<u32> = (100_000..100_100).collect();
        for &i in &live {
            c.insert(key(i), i, 1_000_000, 5_000);
        }
        let kept = live
            .iter()
            .filter(|&&i| c.get(&key(i), 5_000).is_some())
            .count();
        assert_eq!(kept, 100);
    }

    #[test]
    fn shards_are_shared_across_threads() {
        let c = std::sync::Arc::new(ShardedCache::new(10_000));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let k = key(t * 10_000 + i);
                        c.insert(k, i, u64::MAX, 0);
                        assert_eq!(c.get(&k, 0), Some(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.len(), 8_000);
    }
}
