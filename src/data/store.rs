//! A data server's storage root: committed shards addressed by content hash, temp
//! shards being written, and the commit that turns one into the other.
//!
//! ```text
//! ROOT/objects/ab/cd/<sha256-hex>.<shard>   committed shards (fan-out dirs, like git)
//! ROOT/temp/<uuid>                          shards being written
//! ROOT/garbage/                             corrupt, replaced or deleted shards, for an operator
//! ```
//! A temp shard is written and fsynced by [`ShardWriter`]; commit renames it into
//! place and fsyncs the directory, so a crash leaves either no shard or a whole one.
//! Temp names are UUIDs and hashes are validated [`ContentHash`]es, so nothing from
//! the network reaches the file system as a path. Synchronous code: the HTTP layer
//! calls it on blocking threads. Every change to the disk goes through a
//! [`FileSystem`], so tests can fail any step or simulate a crash.
//!
//! **Fan-out directories.** A rename into `objects/ab/cd/` is only durable if the
//! directory's own entry (in `objects/ab/`, and `ab`'s in `objects/`) is. The store
//! keeps in memory the set of fan-out directories it has itself created-or-found
//! *and then fsynced the parents of*; a commit into a directory not in the set
//! creates what is missing, fsyncs both parents, and only then adds it. A directory
//! that merely exists proves nothing (another thread may have created it and not
//! synced yet, or a previous process may have died before syncing), so existence is
//! never a reason to skip the fsyncs. The cost is two directory fsyncs for the first
//! commit into each of the 65,536 directories per process lifetime, then a set
//! lookup, which replaces the `stat` every commit used to make. Creating all 65,536
//! directories at open was the alternative; it costs 65,536 `mkdir`s plus 257 fsyncs
//! on a new root (seconds on a slow disk), 65,536 inodes forever, and still needs
//! the same fsyncs at every start to be sure of a root a crash interrupted.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::fs::{FileSystem, RealFs};
use super::shardfile::{ShardFileError, ShardReader, ShardWriter};
use crate::content::{ContentHash, Policy, ShardIndex};

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
    /// The commit announced another redundancy policy than the temp shard was
    /// written under.
    #[error("temp shard {id} was written under policy {}, commit announced {announced}", show_policy(*written))]
    PolicyMismatch {
        /// The temp shard.
        id: Uuid,
        /// The policy the committer announced.
        announced: Policy,
        /// The policy in the temp shard's header (`None`: not given when written).
        written: Option<Policy>,
    },
    /// The stored shard is not the one the reader expects: another length, or
    /// another (known) redundancy policy.
    #[error(
        "shard {hash}.{shard} holds {stored_len} bytes under policy {}, the request expected {} under {}",
        show_policy(*stored_policy),
        expected_len.map_or("any length".to_string(), |l| format!("{l} bytes")),
        expected_policy.map_or("any policy".to_string(), |p| p.to_string()),
    )]
    IdentityMismatch {
        /// Its content hash.
        hash: ContentHash,
        /// Its index.
        shard: ShardIndex,
        /// The stored data length.
        stored_len: u64,
        /// The stored policy (`None`: unknown).
        stored_policy: Option<Policy>,
        /// The length the reader expects, if it said.
        expected_len: Option<u64>,
        /// The policy the reader expects, if it said.
        expected_policy: Option<Policy>,
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

fn show_policy(p: Option<Policy>) -> String {
    p.map_or("unknown".to_string(), |p| p.to_string())
}

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

/// The shard store rooted at one directory.
#[derive(Clone, Debug)]
pub struct ShardStore {
    root: PathBuf,
    fs: Arc<dyn FileSystem>,
    /// Fan-out directories (first two hash bytes) whose entries are known durable.
    durable_dirs: Arc<Mutex<HashSet<u16>>>,
}

impl ShardStore {
    /// Opens (creating when missing) the store at `root`.
    pub fn open(root: &Path) -> io::Result<ShardStore> {
        ShardStore::open_on(root, Arc::new(RealFs))
    }

    /// Like [`open`](ShardStore::open), changing the disk only through `fs`.
    pub fn open_on(root: &Path, fs: Arc<dyn FileSystem>) -> io::Result<ShardStore> {
        if !root.is_dir() {
            fs::create_dir_all(root)?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs.sync_dir(parent)?;
            }
        }
        for dir in ["objects", "temp", "garbage"] {
            create_dir_if_missing(&*fs, &root.join(dir))?;
        }
        fs.sync_dir(root)?;
        Ok(ShardStore { root: root.to_path_buf(), fs, durable_dirs: Arc::default() })
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
        let dir = self.durable_fanout_dir(hash)?;
        let target = self.shard_path(hash, shard);
        let outcome = match ShardReader::open(&target) {
            Ok(existing) if existing.data_len() == actual && (written.is_none() || existing.policy() == written) => {
                // Whoever renamed it in may not have synced the directory yet.
                self.fs.sync_dir(&dir)?;
                self.fs.remove_file(&temp)?;
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

    /// Opens a committed shard for reading, verifying its header.
    pub fn open_shard(&self, hash: &ContentHash, shard: ShardIndex) -> Result<ShardReader, StoreError> {
        ShardReader::open(&self.shard_path(hash, shard)).map_err(|source| match source {
            ShardFileError::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                StoreError::NoSuchShard { hash: *hash, shard }
            }
            source => StoreError::Corrupt { hash: *hash, shard, source },
        })
    }

    fn garbage_path(&self, hash: &ContentHash, shard: ShardIndex) -> PathBuf {
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let name = format!("{}.{}.{}.{:09}", hash.to_hex(), shard, stamp.as_secs(), stamp.subsec_nanos());
        self.root.join("garbage").join(name)
    }

    /// Moves a shard into `garbage/` (it failed verification, or an API server found
    /// it holds the wrong content), so it is no longer served or announced, but kept
    /// for an operator to look at. [`StoreError::NoSuchShard`] when it is not here.
    pub fn quarantine(&self, hash: &ContentHash, shard: ShardIndex) -> Result<(), StoreError> {
        let from = self.shard_path(hash, shard);
        match self.fs.rename(&from, &self.garbage_path(hash, shard)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NoSuchShard { hash: *hash, shard }),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(()),
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
            if now.duration_since(modified).unwrap_or_default() > ttl && self.fs.remove_file(&entry.path()).is_ok() {
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

/// Checks a stored shard against what a reader expects: the same data length when
/// `expected_len` is given, the same policy when both sides know it.
pub fn check_identity(
    hash: &ContentHash,
    shard: ShardIndex,
    stored: &ShardReader,
    expected_len: Option<u64>,
    expected_policy: Option<Policy>,
) -> Result<(), StoreError> {
    let len_differs = expected_len.is_some_and(|l| l != stored.data_len());
    let policy_differs = matches!((expected_policy, stored.policy()), (Some(e), Some(s)) if e != s);
    if len_differs || policy_differs {
        return Err(StoreError::IdentityMismatch {
            hash: *hash,
            shard,
            stored_len: stored.data_len(),
            stored_policy: stored.policy(),
            expected_len,
            expected_policy,
        });
    }
    Ok(())
}

/// Creates `dir` unless it exists.
fn create_dir_if_missing(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    match fs.create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
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
        let mut w = store.create_temp(id, None).unwrap();
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

    fn write_temp_as(store: &ShardStore, data: &[u8], policy: Option<Policy>) -> Uuid {
        let id = Uuid::new_v4();
        let mut w = store.create_temp(id, policy).unwrap();
        w.write(data).unwrap();
        w.finish().unwrap();
        id
    }

    const P42: Policy = Policy { k: 4, m: 2 };
    const P12: Policy = Policy { k: 1, m: 2 };

    fn garbage_count(store: &ShardStore) -> usize {
        fs::read_dir(store.root().join("garbage")).unwrap().count()
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
        assert_eq!(r.read_block(0).unwrap(), b"good");
    }

    #[test]
    fn quarantine_of_an_absent_shard_says_so() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"none");
        assert!(matches!(store.quarantine(&hash, 0), Err(StoreError::NoSuchShard { shard: 0, .. })));
    }

    #[test]
    fn identity_checks_compare_what_both_sides_know() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"id");
        let id = write_temp_as(&store, b"12345", Some(P42));
        store.commit(id, &hash, 0, 5, Some(P42)).unwrap();
        let r = store.open_shard(&hash, 0).unwrap();
        assert!(check_identity(&hash, 0, &r, None, None).is_ok());
        assert!(check_identity(&hash, 0, &r, Some(5), Some(P42)).is_ok());
        let err = check_identity(&hash, 0, &r, Some(6), None).unwrap_err();
        assert!(err.to_string().contains("5 bytes") && err.to_string().contains("6 bytes"), "{err}");
        let err = check_identity(&hash, 0, &r, Some(5), Some(P12)).unwrap_err();
        assert!(err.to_string().contains("4+2") && err.to_string().contains("1+2"), "{err}");
        // A shard that does not know its policy matches any.
        let id = write_temp_as(&store, b"12345", None);
        store.commit(id, &hash, 1, 5, None).unwrap();
        let r = store.open_shard(&hash, 1).unwrap();
        assert!(check_identity(&hash, 1, &r, Some(5), Some(P12)).is_ok());
    }
}
