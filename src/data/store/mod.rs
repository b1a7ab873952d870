//! A data server's storage root: committed shards addressed by content hash, temp
//! shards being written, and the commit that turns one into the other.
//!
//! ```text
//! ROOT/objects/ab/cd/<sha256-hex>.<shard>   committed shards (fan-out dirs, like git)
//! ROOT/temp/<uuid>                          shards being written
//! ROOT/garbage/                             corrupt, replaced or quarantined shards, for an operator
//!                                           (removed after --garbage-ttl; purged shards never land here)
//! ROOT/scrub.json                           the scrubber's pass state (see super::scrub)
//! ```
//! A temp shard is written and fsynced by [`ShardWriter`]; commit renames it into
//! place and fsyncs the directory, so a crash leaves either no shard or a whole one.
//! Temp names are UUIDs and hashes are validated [`ContentHash`]es, so nothing from
//! the network reaches the file system as a path. Synchronous code: the HTTP layer
//! calls it on blocking threads. Every change to the disk goes through a
//! [`FileSystem`], so tests can fail any step or simulate a crash.
//!
//! [`ShardWriter`]: super::shardfile::ShardWriter
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
//!
//! **Two homes for a shard.** Shards up to [`StoreConfig::small_shard_max`] bytes
//! live as records in the volume store ([`super::volume`], `ROOT/volumes/`), where
//! one fsync covers a batch of them; larger ones are a file each, as above. A name
//! lives in one home at a time: a small write finds a file of the same identity and
//! keeps it, or replaces a file of another identity (moving it to `garbage/`), and a
//! large commit tombstones a record of the same name. Reads look in the volume index
//! (memory) first, then for a file; locate answers list both. Shards written before
//! volumes existed, or under a lower threshold, stay files and are served as before.
//!
//! **Rooms.** This file holds the store itself (errors, config, opening a root, the
//! paths); the operations live by kind in its children: `commit` (temp shards,
//! commit, small-shard puts), `verify` (opening a shard to read, the scrubber's
//! checks, identity), `listing` (which shards are here, paged, with their age) and
//! `garbage` (quarantine, purge, and cleaning `garbage/` and `temp/`).

mod commit;
mod garbage;
mod listing;
mod verify;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use uuid::Uuid;

use super::fs::{FileSystem, RealFs};
use super::shardfile::{ShardFileError, ShardReader};
use super::volume::{FileProbe, VolumeConfig, VolumeError, VolumeStore};
use crate::content::{ContentHash, Policy, ShardIndex};

pub use commit::Committed;
pub use garbage::parse_garbage_name;
pub use listing::{parse_shard_file_name, Home, ListedShard, Named, ShardName};
pub use verify::{check_identity, FileCheck, RecordCheck, StoredShard};

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
    /// The volume store failed to read or write a small shard.
    #[error("small shard {hash}.{shard}: {source}")]
    Volume {
        /// Its content hash.
        hash: ContentHash,
        /// Its index.
        shard: ShardIndex,
        /// What failed.
        source: VolumeError,
    },
    /// The disk failed.
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// Whether the stored shard itself is bad (and should be moved aside), rather
    /// than the request or the disk.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::Volume { source: VolumeError::Corrupt { .. } | VolumeError::Misplaced { .. }, .. }
        )
    }
}

/// How a data server keeps its shards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoreConfig {
    /// Shards of at most this many bytes go to the volume store; 0 keeps every shard
    /// a file of its own (the layout before volumes).
    pub small_shard_max: u64,
    /// How the volume store behaves.
    pub volumes: VolumeConfig,
}

/// Default for [`StoreConfig::small_shard_max`]: 256 KiB, so that objects up to
/// 256 KiB (replicated whole) and the shards of objects up to 1 MiB under 4+2 are
/// records; a record is read whole into memory before it is served, which is what
/// bounds it (the README's storage section has the measurements behind it).
pub const DEFAULT_SMALL_SHARD_MAX: u64 = 256 * 1024;

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig { small_shard_max: DEFAULT_SMALL_SHARD_MAX, volumes: VolumeConfig::default() }
    }
}

fn show_policy(p: Option<Policy>) -> String {
    p.map_or("unknown".to_string(), |p| p.to_string())
}

/// The shard store rooted at one directory.
#[derive(Clone, Debug)]
pub struct ShardStore {
    root: PathBuf,
    fs: Arc<dyn FileSystem>,
    /// Fan-out directories (first two hash bytes) whose entries are known durable.
    durable_dirs: Arc<Mutex<HashSet<u16>>>,
    /// The volume store for small shards, unless switched off.
    small: Option<VolumeStore>,
    small_max: u64,
    /// Counts shards moved to `garbage/` ([`crate::telemetry::SHARDS_QUARANTINED`]).
    quarantined: metrics::Counter,
    /// Records a dedup commit relied on, for their age (see [`ShardStore::list`]).
    refreshed: Arc<Mutex<Refreshed>>,
}

/// When records were last relied on by a dedup commit, this process lifetime.
#[derive(Debug)]
struct Refreshed {
    at: std::collections::HashMap<(ContentHash, ShardIndex), SystemTime>,
    /// No record is listed as committed before this: the process start (refreshes
    /// before it were not kept), or the last time `at` overflowed and was cleared.
    floor: SystemTime,
}

/// Most records [`Refreshed`] remembers; past it, it forgets them all and raises
/// its floor to now (ages are understated, never overstated).
const MAX_REFRESHED: usize = 100_000;

impl ShardStore {
    /// Opens (creating when missing) the store at `root`, small shards in volumes.
    pub fn open(root: &Path) -> io::Result<ShardStore> {
        ShardStore::open_with(root, StoreConfig::default())
    }

    /// Opens the store at `root` as `config` says (recovering the volume store,
    /// which scans what its checkpoint does not cover: call it on a blocking thread).
    pub fn open_with(root: &Path, config: StoreConfig) -> io::Result<ShardStore> {
        let files = ShardStore::open_on(root, Arc::new(RealFs))?;
        if config.small_shard_max == 0 {
            return Ok(files);
        }
        let probe_files = files.clone();
        let probe = Arc::new(move |hash: &ContentHash, shard, len, policy: Option<Policy>| {
            match ShardReader::open(&probe_files.shard_path(hash, shard)) {
                Ok(r) if r.data_len() == len && (policy.is_none() || r.policy() == policy) => FileProbe::Same,
                Err(ShardFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => FileProbe::Absent,
                _ => FileProbe::Other,
            }
        });
        let small = VolumeStore::open(&root.join("volumes"), config.volumes, Some(probe))?;
        Ok(ShardStore { small: Some(small), small_max: config.small_shard_max, ..files })
    }

    /// Like [`open`](ShardStore::open), every shard a file, changing the disk only
    /// through `fs`.
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
        let refreshed = Refreshed { at: Default::default(), floor: SystemTime::now() };
        Ok(ShardStore {
            root: root.to_path_buf(),
            fs,
            durable_dirs: Arc::default(),
            small: None,
            small_max: 0,
            quarantined: metrics::Counter::noop(),
            refreshed: Arc::new(Mutex::new(refreshed)),
        })
    }

    /// The store, counting every shard it moves to `garbage/` on `quarantined`
    /// (a data server's [`SHARDS_QUARANTINED`](crate::telemetry::SHARDS_QUARANTINED)).
    pub fn counting_quarantines(self, quarantined: metrics::Counter) -> ShardStore {
        ShardStore { quarantined, ..self }
    }

    /// The volume store, when small shards go to volumes.
    pub fn volumes(&self) -> Option<&VolumeStore> {
        self.small.as_ref()
    }

    /// The volume store, if a shard of `len` bytes belongs there.
    fn volume_for(&self, len: u64) -> Option<&VolumeStore> {
        self.small.as_ref().filter(|_| len <= self.small_max)
    }

    /// Whether a shard of `len` bytes is stored as a volume record.
    pub fn is_small(&self, len: u64) -> bool {
        self.volume_for(len).is_some()
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

    /// Free bytes on the file system holding the root, as an unprivileged user sees it.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// Creates `dir` unless it exists.
fn create_dir_if_missing(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    match fs.create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod test_support {
    //! Stores and temp shards for the rooms' unit tests.

    use super::*;

    /// A store keeping every shard a file: the file layout's own tests.
    pub(super) fn store() -> (tempfile::TempDir, ShardStore) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ShardStore::open_with(dir.path(), StoreConfig { small_shard_max: 0, ..StoreConfig::default() }).unwrap();
        (dir, store)
    }

    /// A store with small shards (up to 16 bytes here) in volumes.
    pub(super) fn mixed_store(dir: &Path) -> ShardStore {
        ShardStore::open_with(dir, StoreConfig { small_shard_max: 16, ..StoreConfig::default() }).unwrap()
    }

    pub(super) fn read(store: &ShardStore, hash: &ContentHash, shard: ShardIndex) -> Vec<u8> {
        let mut r = store.open_shard(hash, shard).unwrap();
        let mut data = Vec::new();
        r.read_range(0, u64::MAX, |b| {
            data.extend(b);
            true
        })
        .unwrap();
        data
    }

    pub(super) fn write_temp(store: &ShardStore, data: &[u8]) -> Uuid {
        write_temp_as(store, data, None)
    }

    pub(super) fn write_temp_as(store: &ShardStore, data: &[u8], policy: Option<Policy>) -> Uuid {
        let id = Uuid::new_v4();
        let mut w = store.create_temp(id, policy).unwrap();
        w.write(data).unwrap();
        w.finish().unwrap();
        id
    }

    pub(super) const P42: Policy = Policy { k: 4, m: 2 };
    pub(super) const P12: Policy = Policy { k: 1, m: 2 };

    pub(super) fn garbage_count(store: &ShardStore) -> usize {
        fs::read_dir(store.root().join("garbage")).unwrap().count()
    }
}
