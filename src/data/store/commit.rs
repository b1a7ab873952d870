//! The shard store's write path: temp shards being written, the commit that turns
//! one into a committed shard (a file in its fan-out directory, or a volume record
//! when it is small), and small shards put straight into the volume store. Part of
//! [`super`]; the data server's PUT and commit handlers call it.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

use super::{create_dir_if_missing, ShardStore, StoreError, MAX_REFRESHED};
use crate::content::{ContentHash, Policy, ShardIndex};
use crate::data::shardfile::{ShardFileError, ShardReader, ShardWriter};
use crate::data::volume::{PutOutcome, VolumeStore};

/// What a successful [`ShardStore::commit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// The shard was not stored before; now it is.
    New,
    /// The same shard (same length, same or no announced policy) was already stored;
    /// it was kept and the temp dropped.
    AlreadyStored,
    /// Another shard under that name (another length or policy, or a corrupt file)
    /// was moved to `garbage/` and the new one took its place.
    Replaced,
}

impl ShardStore {
    /// Stores a small shard (see [`is_small`](ShardStore::is_small)) in the volume
    /// store, returning once it is durable. For async callers.
    pub async fn put_small(
        &self,
        hash: ContentHash,
        shard: ShardIndex,
        policy: Option<Policy>,
        data: Bytes,
    ) -> Result<Committed, StoreError> {
        let volumes = self
            .volume_for(data.len() as u64)
            .ok_or_else(|| StoreError::Io(io::Error::new(io::ErrorKind::InvalidInput, "not a small shard")))?;
        let outcome = volumes.put(hash, shard, policy, data).await.map_err(|source| StoreError::Volume {
            hash,
            shard,
            source,
        })?;
        if self.file_work_after(&hash, shard, outcome) {
            let store = self.clone();
            let _ = tokio::task::spawn_blocking(move || store.do_file_work(&hash, shard, outcome)).await;
        }
        Ok(committed(outcome))
    }

    /// [`put_small`](ShardStore::put_small) for blocking threads.
    fn put_small_blocking(
        &self,
        volumes: &VolumeStore,
        hash: &ContentHash,
        shard: ShardIndex,
        policy: Option<Policy>,
        data: Bytes,
    ) -> Result<Committed, StoreError> {
        let outcome = volumes.put_blocking(*hash, shard, policy, data).map_err(|source| StoreError::Volume {
            hash: *hash,
            shard,
            source,
        })?;
        if self.file_work_after(hash, shard, outcome) {
            self.do_file_work(hash, shard, outcome);
        }
        Ok(committed(outcome))
    }

    /// Whether a small put the volume store answered with `outcome` leaves work on
    /// a shard file ([`do_file_work`](ShardStore::do_file_work)); a record kept
    /// as it was has its age started over here, in memory.
    fn file_work_after(&self, hash: &ContentHash, shard: ShardIndex, outcome: PutOutcome) -> bool {
        match outcome {
            PutOutcome::ReplacedFile => true,
            // No record kept: the shard kept is a file (the volume store found it by its probe).
            PutOutcome::AlreadyStored => !self.refresh_record(hash, shard),
            PutOutcome::New | PutOutcome::Replaced => false,
        }
    }

    /// The file work a small put leaves (see [`file_work_after`](ShardStore::file_work_after)):
    /// moves the file the new record replaced aside, or starts a kept file's age over.
    /// For blocking threads.
    fn do_file_work(&self, hash: &ContentHash, shard: ShardIndex, outcome: PutOutcome) {
        match outcome {
            PutOutcome::ReplacedFile => {
                if let Err(e) = self.quarantine_file(hash, shard) {
                    tracing::warn!(%hash, shard, error = %e, "replaced shard file not moved aside");
                }
            }
            PutOutcome::AlreadyStored => self.touch_file(hash, shard),
            PutOutcome::New | PutOutcome::Replaced => {}
        }
    }

    /// Starts a temp shard cut under `policy` (`None`: the writer did not say).
    pub fn create_temp(&self, id: Uuid, policy: Option<Policy>) -> Result<ShardWriter, StoreError> {
        ShardWriter::create_on(self.fs.clone(), &self.temp_path(id), policy).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StoreError::TempExists(id),
            _ => StoreError::Io(e),
        })
    }

    /// Removes a temp shard; removing one that is gone is not an error.
    pub fn abort(&self, id: Uuid) -> Result<(), StoreError> {
        match self.fs.remove_file(&self.temp_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Makes temp shard `id` the committed shard `hash.shard`, after checking that it
    /// is complete, `expected_len` long and, when `policy` is given, written under
    /// that policy (a mismatch removes the temp). When a shard of that name is
    /// already stored: the same length and policy keep it and drop the temp; another
    /// length, another known policy, or a file that fails to open is replaced.
    /// Returns only once the shard is durable under its name.
    pub fn commit(
        &self,
        id: Uuid,
        hash: &ContentHash,
        shard: ShardIndex,
        expected_len: u64,
        policy: Option<Policy>,
    ) -> Result<Committed, StoreError> {
        let temp = self.temp_path(id);
        let written = match ShardReader::open(&temp) {
            Ok(r) => r,
            Err(ShardFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchTemp(id))
            }
            Err(source) => {
                let _ = self.fs.remove_file(&temp);
                return Err(StoreError::Corrupt { hash: *hash, shard, source });
            }
        };
        let (actual, written) = (written.data_len(), written.policy());
        if actual != expected_len {
            let _ = self.fs.remove_file(&temp);
            return Err(StoreError::LengthMismatch { id, expected: expected_len, actual });
        }
        if let Some(announced) = policy.filter(|p| Some(*p) != written) {
            let _ = self.fs.remove_file(&temp);
            return Err(StoreError::PolicyMismatch { id, announced, written });
        }
        if let Some(volumes) = self.volume_for(actual) {
            let mut data = Vec::with_capacity(actual as usize);
            let read = ShardReader::open(&temp).and_then(|mut r| {
                r.read_range(0, actual, |block| {
                    data.extend_from_slice(&block);
                    true
                })
            });
            if let Err(source) = read {
                let _ = self.fs.remove_file(&temp);
                return Err(StoreError::Corrupt { hash: *hash, shard, source });
            }
            let outcome = self.put_small_blocking(volumes, hash, shard, written, Bytes::from(data));
            let _ = self.fs.remove_file(&temp);
            return outcome;
        }
        // A large shard under a name a volume record holds: the same one is kept,
        // another is tombstoned once the file is in place.
        let in_volume = self.small.as_ref().and_then(|v| v.identity(hash, shard).map(|id| (v, id)));
        if let Some((_, (len, stored))) = in_volume {
            if len == actual && (written.is_none() || stored == written) {
                self.fs.remove_file(&temp)?;
                self.refresh_record(hash, shard);
                return Ok(Committed::AlreadyStored);
            }
        }
        let dir = self.durable_fanout_dir(hash)?;
        let target = self.shard_path(hash, shard);
        let outcome = match ShardReader::open(&target) {
            Ok(existing) if existing.data_len() == actual && (written.is_none() || existing.policy() == written) => {
                // Whoever renamed it in may not have synced the directory yet.
                self.fs.sync_dir(&dir)?;
                self.fs.remove_file(&temp)?;
                // A write relies on it now: its age (the listing's mtime) starts over.
                self.touch_file(hash, shard);
                return Ok(Committed::AlreadyStored);
            }
            Err(ShardFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Committed::New,
            Err(ShardFileError::Io(e)) => return Err(e.into()),
            // Another identity, or corrupt: keep it aside for an operator; the rename
            // below replaces it atomically, so a crash leaves the old or the new one.
            Ok(_) | Err(_) => match self.fs.hard_link(&target, &self.garbage_path(hash, shard)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => Committed::Replaced,
            },
        };
        self.fs.rename(&temp, &target)?;
        // Makes the new name durable. The temp directory is not synced: if a crash
        // brings the old temp name back, the data server removes it at start.
        self.fs.sync_dir(&dir)?;
        if let Some((volumes, _)) = in_volume {
            volumes.delete_blocking(hash, shard).map_err(|source| StoreError::Volume { hash: *hash, shard, source })?;
            return Ok(Committed::Replaced);
        }
        Ok(outcome)
    }

    /// The fan-out directory of `hash`, created if missing, with its entry and its
    /// parent's entry durable.
    fn durable_fanout_dir(&self, hash: &ContentHash) -> io::Result<PathBuf> {
        let dir = self.fanout_dir(hash);
        let b = hash.as_bytes();
        let key = u16::from_be_bytes([b[0], b[1]]);
        if self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return Ok(dir);
        }
        let top = dir.parent().expect("fan-out dir has a parent");
        create_dir_if_missing(&*self.fs, top)?;
        create_dir_if_missing(&*self.fs, &dir)?;
        self.fs.sync_dir(top)?;
        self.fs.sync_dir(&self.root.join("objects"))?;
        self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
        Ok(dir)
    }

    /// Notes that a dedup commit relied on record `hash.shard` now; false when the
    /// volume store does not hold it.
    fn refresh_record(&self, hash: &ContentHash, shard: ShardIndex) -> bool {
        if self.small.as_ref().and_then(|v| v.identity(hash, shard)).is_none() {
            return false;
        }
        let now = SystemTime::now();
        let mut refreshed = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        if refreshed.at.len() >= MAX_REFRESHED {
            refreshed.at.clear();
            refreshed.floor = now;
        }
        refreshed.at.insert((*hash, shard), now);
        true
    }

    /// Sets a shard file's modification time to now (best effort: a file that is
    /// gone needs no age).
    fn touch_file(&self, hash: &ContentHash, shard: ShardIndex) {
        let path = self.shard_path(hash, shard);
        let touched = fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
        match touched {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(%hash, shard, error = %e, "cannot refresh a kept shard's mtime");
            }
            _ => {}
        }
    }
}

fn committed(outcome: PutOutcome) -> Committed {
    match outcome {
        PutOutcome::New => Committed::New,
        PutOutcome::AlreadyStored => Committed::AlreadyStored,
        PutOutcome::Replaced | PutOutcome::ReplacedFile => Committed::Replaced,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{garbage_count, mixed_store, read, store, write_temp, write_temp_as, P12, P42};
    use super::super::{StoreConfig, StoredShard};
    use super::*;

    #[test]
    fn small_shards_become_records_and_large_ones_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = mixed_store(dir.path());
        let (small, large) = (ContentHash::of(b"small"), ContentHash::of(b"large"));
        let id = write_temp_as(&store, b"tiny", Some(P12));
        assert_eq!(store.commit(id, &small, 1, 4, Some(P12)).unwrap(), Committed::New);
        let id = write_temp_as(&store, b"more than sixteen bytes", Some(P12));
        assert_eq!(store.commit(id, &large, 1, 23, Some(P12)).unwrap(), Committed::New);
        assert!(matches!(store.open_shard(&small, 1).unwrap(), StoredShard::Record(_)));
        assert!(matches!(store.open_shard(&large, 1).unwrap(), StoredShard::File(_)));
        assert!(!store.shard_path(&small, 1).exists(), "a small shard has no file");
        assert_eq!(read(&store, &small, 1), b"tiny");
        assert_eq!(read(&store, &large, 1), b"more than sixteen bytes");
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
        // Committing the same small shard again keeps it.
        let id = write_temp_as(&store, b"tiny", Some(P12));
        assert_eq!(store.commit(id, &small, 1, 4, Some(P12)).unwrap(), Committed::AlreadyStored);
        store.quarantine(&small, 1).unwrap();
        assert!(matches!(store.open_shard(&small, 1), Err(StoreError::NoSuchShard { .. })));
        assert!(store.shards_of(&small).unwrap().is_empty());
        assert_eq!(garbage_count(&store), 1, "the record's bytes are kept for an operator");
        assert!(matches!(store.quarantine(&small, 1), Err(StoreError::NoSuchShard { .. })));
    }

    #[test]
    fn a_name_lives_in_one_home_when_the_threshold_changes() {
        let dir = tempfile::tempdir().unwrap();
        let hash = ContentHash::of(b"moving");
        {
            // Written as a file by a server that kept every shard a file.
            let files = ShardStore::open_with(dir.path(), StoreConfig { small_shard_max: 0, ..StoreConfig::default() })
                .unwrap();
            let id = write_temp_as(&files, b"old", Some(P12));
            files.commit(id, &hash, 0, 3, Some(P12)).unwrap();
        }
        let store = mixed_store(dir.path());
        // The same shard again: the file is kept, no record written.
        let id = write_temp_as(&store, b"old", Some(P12));
        assert_eq!(store.commit(id, &hash, 0, 3, Some(P12)).unwrap(), Committed::AlreadyStored);
        assert!(matches!(store.open_shard(&hash, 0).unwrap(), StoredShard::File(_)));
        // Another identity: a record replaces the file, which goes to garbage.
        let id = write_temp_as(&store, b"new!", Some(P12));
        assert_eq!(store.commit(id, &hash, 0, 4, Some(P12)).unwrap(), Committed::Replaced);
        assert!(!store.shard_path(&hash, 0).exists());
        assert_eq!(read(&store, &hash, 0), b"new!");
        assert_eq!(garbage_count(&store), 1);
        // A large shard under the name tombstones the record.
        let id = write_temp_as(&store, b"now it is longer than 16", Some(P12));
        assert_eq!(store.commit(id, &hash, 0, 24, Some(P12)).unwrap(), Committed::Replaced);
        assert!(matches!(store.open_shard(&hash, 0).unwrap(), StoredShard::File(_)));
        assert_eq!(store.shards_of(&hash).unwrap(), vec![0]);
        assert!(store.volumes().unwrap().get(&hash, 0).unwrap().is_none());
    }

    #[test]
    fn commit_makes_a_shard_visible_and_locatable() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"add test 123");
        assert_eq!(store.shards_of(&hash).unwrap(), Vec::<u32>::new());
        let id = write_temp(&store, b"add test 123");
        store.commit(id, &hash, 0, 12, None).unwrap();
        assert_eq!(store.shards_of(&hash).unwrap(), vec![0]);
        assert!(store.shard_path(&hash, 0).ends_with(format!(
            "objects/{}/{}/{}.0",
            &hash.to_hex()[..2],
            &hash.to_hex()[2..4],
            hash
        )));
        assert_eq!(store.open_shard(&hash, 0).unwrap().data_len(), 12);
        assert!(matches!(store.commit(id, &hash, 0, 12, None), Err(StoreError::NoSuchTemp(_))));
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
    }

    #[test]
    fn a_short_temp_is_refused_and_removed() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"abc");
        let id = write_temp(&store, b"ab");
        assert!(matches!(store.commit(id, &hash, 0, 3, None), Err(StoreError::LengthMismatch { actual: 2, .. })));
        assert!(store.shards_of(&hash).unwrap().is_empty());
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
    }

    #[test]
    fn committing_content_twice_keeps_one_shard() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"same");
        for _ in 0..2 {
            let id = write_temp(&store, b"same");
            store.commit(id, &hash, 0, 4, None).unwrap();
        }
        assert_eq!(store.shards_of(&hash).unwrap(), vec![0]);
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
    }

    #[test]
    fn a_commit_announcing_another_policy_is_refused() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"p");
        for written in [None, Some(P12)] {
            let id = write_temp_as(&store, b"abc", written);
            let err = store.commit(id, &hash, 0, 3, Some(P42)).unwrap_err();
            assert!(
                matches!(err, StoreError::PolicyMismatch { announced: P42, written: w, .. } if w == written),
                "{err}"
            );
            assert!(store.shards_of(&hash).unwrap().is_empty());
        }
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
        let id = write_temp_as(&store, b"abc", Some(P42));
        assert_eq!(store.commit(id, &hash, 0, 3, Some(P42)).unwrap(), Committed::New);
        assert_eq!(store.open_shard(&hash, 0).unwrap().policy(), Some(P42));
    }

    #[test]
    fn a_stored_shard_is_kept_only_when_length_and_policy_match() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"identity");
        let commit = |data: &[u8], policy| {
            let id = write_temp_as(&store, data, policy);
            store.commit(id, &hash, 1, data.len() as u64, policy).unwrap()
        };
        assert_eq!(commit(b"four", Some(P42)), Committed::New);
        assert_eq!(commit(b"four", Some(P42)), Committed::AlreadyStored);
        // A writer that does not say its policy does not displace one that did.
        assert_eq!(commit(b"FOUR", None), Committed::AlreadyStored);
        assert_eq!(garbage_count(&store), 0);
        assert_eq!(commit(b"four", Some(P12)), Committed::Replaced);
        assert_eq!(store.open_shard(&hash, 1).unwrap().policy(), Some(P12));
        assert_eq!(commit(b"longer", Some(P12)), Committed::Replaced);
        let r = store.open_shard(&hash, 1).unwrap();
        assert_eq!((r.data_len(), r.policy()), (6, Some(P12)));
        assert_eq!(garbage_count(&store), 2, "replaced shards are kept for an operator");
        assert_eq!(store.shards_of(&hash).unwrap(), vec![1]);
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_stored_shard_is_replaced_not_adopted() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"c");
        let id = write_temp_as(&store, b"good", None);
        store.commit(id, &hash, 0, 4, None).unwrap();
        let path = store.shard_path(&hash, 0);
        let mut raw = fs::read(&path).unwrap();
        raw.pop();
        fs::write(&path, raw).unwrap();
        let id = write_temp_as(&store, b"good", None);
        assert_eq!(store.commit(id, &hash, 0, 4, None).unwrap(), Committed::Replaced);
        let mut r = store.open_shard(&hash, 0).unwrap();
        let mut data = Vec::new();
        r.read_range(0, 4, |b| {
            data.extend(b);
            true
        })
        .unwrap();
        assert_eq!(data, b"good");
    }
}
