//! The shard store's `garbage/` and `temp/` directories: shards moved aside
//! (quarantined, replaced) for an operator, shards purged for good, and the cleaning
//! of old garbage and abandoned temp shards. Part of [`super`]; the data server's
//! admin handlers and its cleaning loops call it.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{ShardStore, StoreError};
use crate::content::{ContentHash, ShardIndex};
use crate::data::volume::VolumeStore;

impl ShardStore {
    pub(super) fn garbage_path(&self, hash: &ContentHash, shard: ShardIndex) -> PathBuf {
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let name = format!("{}.{}.{}.{:09}", hash.to_hex(), shard, stamp.as_secs(), stamp.subsec_nanos());
        self.root.join("garbage").join(name)
    }

    /// Moves a shard into `garbage/` (it failed verification, or an API server found
    /// it holds the wrong content), so it is no longer served or announced, but kept
    /// for an operator to look at. [`StoreError::NoSuchShard`] when it is not here.
    pub fn quarantine(&self, hash: &ContentHash, shard: ShardIndex) -> Result<(), StoreError> {
        let in_volume = match &self.small {
            Some(volumes) => self.quarantine_record(volumes, hash, shard)?,
            None => false,
        };
        let moved = match self.quarantine_file(hash, shard) {
            Err(StoreError::NoSuchShard { .. }) if in_volume => Ok(()),
            other => other,
        };
        if moved.is_ok() {
            self.quarantined.increment(1);
        }
        moved
    }

    /// Copies a volume record's raw bytes (checked or not) into `garbage/`, then
    /// tombstones it. False when the volume store does not hold it.
    fn quarantine_record(
        &self,
        volumes: &VolumeStore,
        hash: &ContentHash,
        shard: ShardIndex,
    ) -> Result<bool, StoreError> {
        let volume_error = |source| StoreError::Volume { hash: *hash, shard, source };
        let Some(raw) = volumes.raw(hash, shard).map_err(volume_error)? else { return Ok(false) };
        // For an operator to look at, like a quarantined file: not fsynced (losing it
        // in a crash loses no data anyone relies on).
        fs::write(self.garbage_path(hash, shard), raw)?;
        volumes.delete_blocking(hash, shard).map_err(volume_error)
    }

    /// Moves a shard file into `garbage/`.
    pub(super) fn quarantine_file(&self, hash: &ContentHash, shard: ShardIndex) -> Result<(), StoreError> {
        let from = self.shard_path(hash, shard);
        match self.fs.rename(&from, &self.garbage_path(hash, shard)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NoSuchShard { hash: *hash, shard }),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(()),
        }
    }

    /// Deletes a shard for good, freeing its space: a file is unlinked and its
    /// directory fsynced; a record gets a durable tombstone (its bytes come back
    /// when compaction rewrites its volume). [`StoreError::NoSuchShard`] when
    /// neither home holds it.
    pub fn purge(&self, hash: &ContentHash, shard: ShardIndex) -> Result<(), StoreError> {
        let in_volume = match &self.small {
            Some(v) => {
                v.delete_blocking(hash, shard).map_err(|source| StoreError::Volume { hash: *hash, shard, source })?
            }
            None => false,
        };
        match self.fs.remove_file(&self.shard_path(hash, shard)) {
            Ok(()) => {
                self.fs.sync_dir(&self.fanout_dir(hash))?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && in_volume => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NoSuchShard { hash: *hash, shard }),
            Err(e) => Err(e.into()),
        }
    }

    /// Every `garbage/` entry moved aside at or after `since`, oldest first, with
    /// when (ms since the Unix epoch; from its name, see `garbage_path`).
    pub fn garbage_since(&self, since: SystemTime) -> Result<Vec<(ContentHash, ShardIndex, i64)>, StoreError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(self.root.join("garbage"))? {
            let name = entry?.file_name();
            let Some((hash, shard, at)) = name.to_str().and_then(parse_garbage_name) else { continue };
            if at >= since {
                found.push((at, hash, shard));
            }
        }
        // In the order they were moved, to the nanosecond their names carry: two
        // moved within one millisecond keep their order too.
        found.sort();
        let ms = |at: SystemTime| at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Ok(found.into_iter().map(|(at, hash, shard)| (hash, shard, ms(at))).collect())
    }

    /// Removes `garbage/` entries moved aside more than `ttl` ago (by the time in
    /// their name; entries not named by the store, by their mtime). Returns how many.
    pub fn clean_garbage(&self, ttl: Duration) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("garbage"))? {
            let entry = entry?;
            let at = match entry.file_name().to_str().and_then(parse_garbage_name) {
                Some((_, _, at)) => at,
                None => entry.metadata().and_then(|m| m.modified()).unwrap_or(now),
            };
            if now.duration_since(at).unwrap_or_default() > ttl && self.fs.remove_file(&entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes temp shards last modified more than `ttl` ago (writes that a crash or
    /// a vanished client abandoned). Returns how many were removed.
    pub fn clean_stale_temps(&self, ttl: Duration) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("temp"))? {
            let entry = entry?;
            let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() > ttl && self.fs.remove_file(&entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Parses a `garbage/` entry's name (`<hash>.<shard>.<secs>.<nanos>`, see
/// `garbage_path`): what was moved aside, and when.
pub fn parse_garbage_name(name: &str) -> Option<(ContentHash, ShardIndex, SystemTime)> {
    let mut parts = name.split('.');
    let hash = parts.next()?.parse().ok()?;
    let shard = parts.next()?.parse().ok()?;
    let secs: u64 = parts.next()?.parse().ok()?;
    let nanos: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || nanos >= 1_000_000_000 {
        return None;
    }
    Some((hash, shard, SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{garbage_count, store, write_temp};
    use super::*;

    #[test]
    fn stale_temps_are_cleaned_and_fresh_ones_kept() {
        let (_dir, store) = store();
        write_temp(&store, b"x");
        assert_eq!(store.clean_stale_temps(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(store.clean_stale_temps(Duration::ZERO).unwrap(), 1);
    }

    #[test]
    fn quarantine_hides_a_shard() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"q");
        let id = write_temp(&store, b"q");
        store.commit(id, &hash, 2, 1, None).unwrap();
        store.quarantine(&hash, 2).unwrap();
        assert!(store.shards_of(&hash).unwrap().is_empty());
        assert!(matches!(store.open_shard(&hash, 2), Err(StoreError::NoSuchShard { .. })));
        assert_eq!(fs::read_dir(store.root().join("garbage")).unwrap().count(), 1);
    }

    #[test]
    fn quarantine_of_an_absent_shard_says_so() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"none");
        assert!(matches!(store.quarantine(&hash, 0), Err(StoreError::NoSuchShard { shard: 0, .. })));
    }

    #[test]
    fn garbage_names_carry_what_and_when_and_old_ones_go() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"g");
        let id = write_temp(&store, b"g");
        store.commit(id, &hash, 3, 1, None).unwrap();
        let before = SystemTime::now() - Duration::from_secs(1);
        store.quarantine(&hash, 3).unwrap();
        let listed = store.garbage_since(before).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0, listed[0].1), (hash, 3));
        assert!(store.garbage_since(SystemTime::now() + Duration::from_secs(60)).unwrap().is_empty());
        assert_eq!(parse_garbage_name("nothex.1.2.3"), None);
        assert_eq!(store.clean_garbage(Duration::from_secs(3600)).unwrap(), 0, "young entries stay");
        assert_eq!(store.clean_garbage(Duration::ZERO).unwrap(), 1);
        assert_eq!(garbage_count(&store), 0);
        assert!(matches!(store.purge(&hash, 3), Err(StoreError::NoSuchShard { .. })));
    }

    #[test]
    fn garbage_is_listed_in_the_order_its_names_stamp_to_the_nanosecond() {
        let (_dir, store) = store();
        let (late, early) = (ContentHash::of(b"late"), ContentHash::of(b"early"));
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        // Within one millisecond, and the later one with the smaller hash.
        let (first, second) = if late < early { (early, late) } else { (late, early) };
        std::fs::write(store.root.join("garbage").join(format!("{first}.1.{now}.000000100")), b"x").unwrap();
        std::fs::write(store.root.join("garbage").join(format!("{second}.2.{now}.000000200")), b"x").unwrap();
        let since = SystemTime::now() - Duration::from_secs(60);
        let order: Vec<_> = store.garbage_since(since).unwrap().into_iter().map(|(h, s, _)| (h, s)).collect();
        assert_eq!(order, vec![(first, 1), (second, 2)]);
    }
}
