//! A data server's storage root: committed shards addressed by content hash, temp
//! shards being written, and the commit that turns one into the other.
//!
//! ```text
//! ROOT/objects/ab/cd/<sha256-hex>.<shard>   committed shards (fan-out dirs, like git)
//! ROOT/temp/<uuid>                          shards being written
//! ROOT/garbage/                             corrupt shards moved aside, for an operator
//! ```
//! A temp shard is written and fsynced by [`ShardWriter`]; commit renames it into
//! place and fsyncs the directory, so a crash leaves either no shard or a whole one.
//! Temp names are UUIDs and hashes are validated [`ContentHash`]es, so nothing from
//! the network reaches the file system as a path. Synchronous code: the HTTP layer
//! calls it on blocking threads.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::shardfile::{ShardFileError, ShardReader, ShardWriter};
use crate::content::{ContentHash, ShardIndex};

/// Errors of the shard store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No temp shard with this id (never created, aborted, or already committed).
    #[error("no temp shard {0}")]
    NoSuchTemp(Uuid),
    /// A temp shard with this id is already being written.
    #[error("temp shard {0} already exists")]
    TempExists(Uuid),
    /// The committed shard's length differs from what the committer expected.
    #[error("temp shard {id} holds {actual} bytes, commit expected {expected}")]
    LengthMismatch {
        /// The temp shard.
        id: Uuid,
        /// The length the committer announced.
        expected: u64,
        /// The length that was written.
        actual: u64,
    },
    /// The requested shard is not stored here.
    #[error("shard {hash}.{shard} not found")]
    NoSuchShard {
        /// Its content hash.
        hash: ContentHash,
        /// Its index.
        shard: ShardIndex,
    },
    /// The shard file fails verification.
    #[error("shard {hash}.{shard} is corrupt: {source}")]
    Corrupt {
        /// Its content hash.
        hash: ContentHash,
        /// Its index.
        shard: ShardIndex,
        /// What is wrong.
        source: ShardFileError,
    },
    /// The disk failed.
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// The shard store rooted at one directory.
#[derive(Clone, Debug)]
pub struct ShardStore {
    root: PathBuf,
}

impl ShardStore {
    /// Opens (creating when missing) the store at `root`.
    pub fn open(root: &Path) -> io::Result<ShardStore> {
        for dir in ["objects", "temp", "garbage"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(ShardStore { root: root.to_path_buf() })
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn temp_path(&self, id: Uuid) -> PathBuf {
        self.root.join("temp").join(id.hyphenated().to_string())
    }

    fn fanout_dir(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join("objects").join(&hex[0..2]).join(&hex[2..4])
    }

    /// Where shard `shard` of `hash` lives once committed.
    pub fn shard_path(&self, hash: &ContentHash, shard: ShardIndex) -> PathBuf {
        self.fanout_dir(hash).join(format!("{}.{}", hash.to_hex(), shard))
    }

    /// Starts a temp shard.
    pub fn create_temp(&self, id: Uuid) -> Result<ShardWriter, StoreError> {
        ShardWriter::create(&self.temp_path(id)).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StoreError::TempExists(id),
            _ => StoreError::Io(e),
        })
    }

    /// Removes a temp shard; removing one that is gone is not an error.
    pub fn abort(&self, id: Uuid) -> Result<(), StoreError> {
        match fs::remove_file(self.temp_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Makes temp shard `id` the committed shard `hash.shard`, after checking that it
    /// is complete and `expected_len` long. If that shard is already stored (the same
    /// content written before), the temp is dropped and the existing one kept.
    pub fn commit(&self, id: Uuid, hash: &ContentHash, shard: ShardIndex, expected_len: u64) -> Result<(), StoreError> {
        let temp = self.temp_path(id);
        let actual = match ShardReader::open(&temp) {
            Ok(r) => r.data_len(),
            Err(ShardFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchTemp(id))
            }
            Err(source) => {
                let _ = fs::remove_file(&temp);
                return Err(StoreError::Corrupt { hash: *hash, shard, source });
            }
        };
        if actual != expected_len {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::LengthMismatch { id, expected: expected_len, actual });
        }
        let dir = self.fanout_dir(hash);
        let target = dir.join(format!("{}.{}", hash.to_hex(), shard));
        if ShardReader::open(&target).is_ok() {
            fs::remove_file(&temp)?;
            return Ok(());
        }
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            // The new fan-out directories must survive a crash too.
            sync_dir(dir.parent().expect("fan-out dir has a parent"))?;
            sync_dir(&self.root.join("objects"))?;
        }
        fs::rename(&temp, &target)?;
        // Makes the new name durable. The temp directory is not synced: if a crash
        // brings the old temp name back, the data server removes it at start.
        sync_dir(&dir)?;
        Ok(())
    }

    /// Opens a committed shard for reading, verifying its header.
    pub fn open_shard(&self, hash: &ContentHash, shard: ShardIndex) -> Result<ShardReader, StoreError> {
        ShardReader::open(&self.shard_path(hash, shard)).map_err(|source| match source {
            ShardFileError::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                StoreError::NoSuchShard { hash: *hash, shard }
            }
            source => StoreError::Corrupt { hash: *hash, shard, source },
        })
    }

    /// Moves a shard that failed verification into `garbage/`, so it is no longer
    /// served or announced, but kept for an operator to look at.
    pub fn quarantine(&self, hash: &ContentHash, shard: ShardIndex) -> Result<(), StoreError> {
        let from = self.shard_path(hash, shard);
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let to = self.root.join("garbage").join(format!("{}.{}.{}", hash.to_hex(), shard, stamp));
        match fs::rename(&from, &to) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The shard indices of `hash` stored here, in order.
    pub fn shards_of(&self, hash: &ContentHash) -> Result<Vec<ShardIndex>, StoreError> {
        let prefix = format!("{}.", hash.to_hex());
        let entries = match fs::read_dir(self.fanout_dir(hash)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut shards = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(index) = name.strip_prefix(&prefix).and_then(|s| s.parse::<ShardIndex>().ok()) {
                shards.push(index);
            }
        }
        shards.sort_unstable();
        Ok(shards)
    }

    /// Removes temp shards last modified more than `ttl` ago (writes that a crash or
    /// a vanished client abandoned). Returns how many were removed.
    pub fn clean_stale_temps(&self, ttl: Duration) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("temp"))? {
            let entry = entry?;
            let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() > ttl && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Free bytes on the file system holding the root, as an unprivileged user sees it.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// fsyncs a directory, making renames and creations inside it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ShardStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn write_temp(store: &ShardStore, data: &[u8]) -> Uuid {
        let id = Uuid::new_v4();
        let mut w = store.create_temp(id).unwrap();
        w.write(data).unwrap();
        w.finish().unwrap();
        id
    }

    #[test]
    fn commit_makes_a_shard_visible_and_locatable() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"add test 123");
        assert_eq!(store.shards_of(&hash).unwrap(), Vec::<u32>::new());
        let id = write_temp(&store, b"add test 123");
        store.commit(id, &hash, 0, 12).unwrap();
        assert_eq!(store.shards_of(&hash).unwrap(), vec![0]);
        assert!(store.shard_path(&hash, 0).ends_with(format!(
            "objects/{}/{}/{}.0",
            &hash.to_hex()[..2],
            &hash.to_hex()[2..4],
            hash
        )));
        assert_eq!(store.open_shard(&hash, 0).unwrap().data_len(), 12);
        assert!(matches!(store.commit(id, &hash, 0, 12), Err(StoreError::NoSuchTemp(_))));
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
    }

    #[test]
    fn a_short_temp_is_refused_and_removed() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"abc");
        let id = write_temp(&store, b"ab");
        assert!(matches!(store.commit(id, &hash, 0, 3), Err(StoreError::LengthMismatch { actual: 2, .. })));
        assert!(store.shards_of(&hash).unwrap().is_empty());
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
    }

    #[test]
    fn committing_content_twice_keeps_one_shard() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"same");
        for _ in 0..2 {
            let id = write_temp(&store, b"same");
            store.commit(id, &hash, 0, 4).unwrap();
        }
        assert_eq!(store.shards_of(&hash).unwrap(), vec![0]);
        assert_eq!(fs::read_dir(store.root().join("temp")).unwrap().count(), 0);
    }

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
        store.commit(id, &hash, 2, 1).unwrap();
        store.quarantine(&hash, 2).unwrap();
        assert!(store.shards_of(&hash).unwrap().is_empty());
        assert!(matches!(store.open_shard(&hash, 2), Err(StoreError::NoSuchShard { .. })));
        assert_eq!(fs::read_dir(store.root().join("garbage")).unwrap().count(), 1);
    }
}
