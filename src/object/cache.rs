//! A bounded cache of small whole objects by content hash, in each API server.
//!
//! Content is immutable under its SHA-256, so a cached copy can never be stale: a
//! new version is a new hash, and a deleted name is refused by the metadata lookup
//! before the cache is asked. Only objects up to [`ContentCache::max_object`] bytes
//! are kept, only after their SHA-256 was checked against the hash they are kept
//! under, and the total is bounded by the configured budget (least recently used
//! first out), so memory stays bounded by configuration. A hit skips the data
//! servers entirely: for hot small objects the GET path is one metadata lookup.
//!
//! [`SeekTableCache`] keeps the seek tables of compressed content the same way (by
//! hash, immutable, least recently used out, bounded in bytes), so that a series of
//! range reads of one object reads its table from the data servers once.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::codec::seekable::SeekTable;
use crate::content::ContentHash;

/// Bytes of seek tables each API server keeps: at 256 KiB frames a table is 32 KiB
/// per GiB of original bytes, so this covers the tables of about 256 GiB of
/// compressed content.
pub const SEEK_TABLE_BUDGET: usize = 8 * 1024 * 1024;

/// The seek tables of compressed content, by hash, bounded in bytes.
pub struct SeekTableCache {
    budget: usize,
    inner: Mutex<(LruCache<ContentHash, Arc<SeekTable>>, usize)>,
}

impl SeekTableCache {
    /// A cache of at most `budget` bytes of tables (a larger table is not kept).
    pub fn new(budget: usize) -> SeekTableCache {
        SeekTableCache { budget, inner: Mutex::new((LruCache::unbounded(), 0)) }
    }

    /// The table of `hash`, if kept.
    pub fn get(&self, hash: &ContentHash) -> Option<Arc<SeekTable>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.get(hash).cloned()
    }

    /// Keeps `table` as the table of `hash`, dropping the least recently used ones
    /// beyond the budget.
    pub fn insert(&self, hash: ContentHash, table: Arc<SeekTable>) {
        let size = table.memory();
        if size > self.budget {
            return;
        }
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (entries, bytes) = &mut *guard;
        if let Some(old) = entries.put(hash, table) {
            *bytes -= old.memory();
        }
        *bytes += size;
        while *bytes > self.budget {
            match entries.pop_lru() {
                Some((_, old)) => *bytes -= old.memory(),
                None => break,
            }
        }
    }

    /// Bytes of tables kept.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// Largest object the cache keeps.
pub const MAX_OBJECT: u64 = 256 * 1024;

/// The cache; `budget` 0 disables it.
pub struct ContentCache {
    budget: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<ContentHash, Bytes>,
    bytes: u64,
}

impl ContentCache {
    /// A cache holding at most `budget` bytes of object data.
    pub fn new(budget: u64) -> ContentCache {
        ContentCache { budget, inner: Mutex::new(Inner { entries: LruCache::unbounded(), bytes: 0 }) }
    }

    /// The largest object worth keeping: [`MAX_OBJECT`], or less in a small cache so
    /// that one object never takes more than a sixteenth of it.
    pub fn max_object(&self) -> u64 {
        MAX_OBJECT.min(self.budget / 16)
    }

    /// Whether an object of `size` bytes would be kept.
    pub fn wants(&self, size: u64) -> bool {
        size <= self.max_object() && self.budget > 0
    }

    /// The object with this hash, if cached.
    pub fn get(&self, hash: &ContentHash) -> Option<Bytes> {
        if self.budget == 0 {
            return None;
        }
        self.inner.lock().expect("cache lock").entries.get(hash).cloned()
    }

    /// Keeps `data` under `hash` if it is small enough and really hashes to `hash`;
    /// evicts the least recently used objects to stay within the budget.
    pub fn insert(&self, hash: ContentHash, data: Bytes) {
        if !self.wants(data.len() as u64) {
            return;
        }
        let actual: [u8; 32] = Sha256::digest(&data).into();
        if actual != *hash.as_bytes() {
            tracing::error!(%hash, "bytes read do not match their content hash; not cached");
            return;
        }
        let mut inner = self.inner.lock().expect("cache lock");
        let size = data.len() as u64;
        if let Some(old) = inner.entries.put(hash, data) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.budget {
            match inner.entries.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(len: usize, seed: u8) -> (ContentHash, Bytes) {
        let data: Bytes = (0..len).map(|i| (i as u8).wrapping_add(seed)).collect::<Vec<_>>().into();
        (ContentHash::of(&data), data)
    }

    #[test]
    fn keeps_verified_small_objects_within_the_budget() {
        let cache = ContentCache::new(64 * 1024);
        assert_eq!(cache.max_object(), 4096);
        let (h1, d1) = object(4000, 1);
        cache.insert(h1, d1.clone());
        assert_eq!(cache.get(&h1), Some(d1));
        let (h2, d2) = object(5000, 2);
        cache.insert(h2, d2);
        assert_eq!(cache.get(&h2), None, "too large for this cache");
        // Bytes that do not match their hash are refused.
        let (h3, _) = object(100, 3);
        cache.insert(h3, Bytes::from_static(b"not the content"));
        assert_eq!(cache.get(&h3), None);
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let cache = ContentCache::new(16 * 4096);
        let objects: Vec<_> = (0..17).map(|i| object(4096, i)).collect();
        for (h, d) in objects.iter().take(16) {
            cache.insert(*h, d.clone());
        }
        assert!(cache.get(&objects[0].0).is_some()); // 0 is now the most recent
        cache.insert(objects[16].0, objects[16].1.clone());
        assert!(cache.get(&objects[0].0).is_some());
        assert!(cache.get(&objects[1].0).is_none(), "the least recently used went");
        assert!(cache.get(&objects[16].0).is_some());
    }

    #[test]
    fn seek_tables_stay_within_their_budget() {
        use crate::codec::seekable::FrameEntry;
        let table = |frames: usize| {
            let mut t = SeekTable::default();
            for _ in 0..frames {
                t.push(FrameEntry { stored: 10, original: 20 });
            }
            Arc::new(t)
        };
        let one = table(100).memory();
        let cache = SeekTableCache::new(one * 2 + one / 2);
        let (a, b, c) = (ContentHash::of(b"a"), ContentHash::of(b"b"), ContentHash::of(b"c"));
        cache.insert(a, table(100));
        cache.insert(b, table(100));
        assert!(cache.get(&a).is_some()); // a is now the most recent
        cache.insert(c, table(100));
        assert!(cache.get(&b).is_none() && cache.get(&a).is_some() && cache.get(&c).is_some());
        assert!(cache.bytes() <= one * 2 + one / 2);
        cache.insert(b, table(10_000));
        assert!(cache.get(&b).is_none(), "a table above the budget is not kept");
    }

    #[test]
    fn a_zero_budget_disables_it() {
        let cache = ContentCache::new(0);
        let (h, d) = object(10, 0);
        cache.insert(h, d);
        assert_eq!(cache.get(&h), None);
    }
}
