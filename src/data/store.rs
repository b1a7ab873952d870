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

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::fs::{FileSystem, RealFs};
use super::shardfile::{ShardFileError, ShardReader, ShardWriter};
use super::volume::{FileProbe, ListedRecord, PutOutcome, Record, VolumeConfig, VolumeError, VolumeStore};
use crate::content::{ContentHash, Policy, ShardIndex};
use bytes::Bytes;

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

/// A stored shard, opened for reading: a verified record from a volume, or a shard
/// file whose blocks are verified as they are read.
pub enum StoredShard {
    /// A small shard, read whole and verified.
    Record(Record),
    /// A shard file, header verified.
    File(ShardReader),
}

impl StoredShard {
    /// The shard's data length in bytes.
    pub fn data_len(&self) -> u64 {
        match self {
            StoredShard::Record(r) => r.data.len() as u64,
            StoredShard::File(f) => f.data_len(),
        }
    }

    /// The policy the shard was cut under, when its writer said.
    pub fn policy(&self) -> Option<Policy> {
        match self {
            StoredShard::Record(r) => r.policy,
            StoredShard::File(f) => f.policy(),
        }
    }

    /// Calls `sink` with the verified bytes of `[start, end)` (see
    /// [`ShardReader::read_range`]); a record's come in one piece.
    pub fn read_range(
        &mut self,
        start: u64,
        end: u64,
        mut sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<(), ShardFileError> {
        match self {
            StoredShard::Record(r) => {
                let end = end.min(r.data.len() as u64);
                if start < end {
                    sink(r.data[start as usize..end as usize].to_vec());
                }
                Ok(())
            }
            StoredShard::File(f) => f.read_range(start, end, sink),
        }
    }
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
        if outcome == PutOutcome::ReplacedFile {
            let store = self.clone();
            let moved = tokio::task::spawn_blocking(move || store.quarantine_file(&hash, shard)).await;
            if let Ok(Err(e)) = moved {
                tracing::warn!(%hash, shard, error = %e, "replaced shard file not moved aside");
            }
        }
        if outcome == PutOutcome::AlreadyStored && !self.refresh_record(&hash, shard) {
            // The shard kept is a file (the volume store found it by its probe).
            let store = self.clone();
            let _ = tokio::task::spawn_blocking(move || store.touch_file(&hash, shard)).await;
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
        if outcome == PutOutcome::ReplacedFile {
            if let Err(e) = self.quarantine_file(hash, shard) {
                tracing::warn!(%hash, shard, error = %e, "replaced shard file not moved aside");
            }
        }
        if outcome == PutOutcome::AlreadyStored && !self.refresh_record(hash, shard) {
            self.touch_file(hash, shard);
        }
        Ok(committed(outcome))
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

    /// Opens a committed shard for reading: a volume record read whole and verified,
    /// or a shard file with its header verified.
    pub fn open_shard(&self, hash: &ContentHash, shard: ShardIndex) -> Result<StoredShard, StoreError> {
        if let Some(volumes) = &self.small {
            match volumes.get(hash, shard) {
                Ok(Some(record)) => return Ok(StoredShard::Record(record)),
                Ok(None) => {}
                Err(source) => return Err(StoreError::Volume { hash: *hash, shard, source }),
            }
        }
        self.open_file(hash, shard).map(StoredShard::File)
    }

    /// Opens a committed shard file for reading, verifying its header.
    fn open_file(&self, hash: &ContentHash, shard: ShardIndex) -> Result<ShardReader, StoreError> {
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
    fn quarantine_file(&self, hash: &ContentHash, shard: ShardIndex) -> Result<(), StoreError> {
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
        let mut shards = self.small.as_ref().map(|v| v.shards_of(hash)).unwrap_or_default();
        let entries = match fs::read_dir(self.fanout_dir(hash)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(shards),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(index) = name.strip_prefix(&prefix).and_then(|s| s.parse::<ShardIndex>().ok()) {
                shards.push(index);
            }
        }
        shards.sort_unstable();
        shards.dedup();
        Ok(shards)
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

    /// Up to `limit` shard names after `after` (exclusive; `None`: from the start)
    /// in (hash, shard) order, over both homes, each name once (a name in both homes,
    /// mid-move, is listed as the record reads see). Memory is bounded by the page:
    /// the volume index is already sorted ([`VolumeStore::records_after`]), and the
    /// fan-out directories are walked in sorted order from `after`'s, one directory
    /// read (and sorted) at a time, stopping once `limit` files are found.
    pub fn names_after(
        &self,
        after: Option<(ContentHash, ShardIndex)>,
        limit: usize,
    ) -> Result<Vec<Named>, StoreError> {
        let records = match &self.small {
            Some(v) => v.records_after(after.as_ref().map(|(h, s)| (h, *s)), limit),
            None => Vec::new(),
        };
        let files = self.files_after(after, limit)?;
        let mut out = Vec::with_capacity(limit.min(records.len() + files.len()));
        let (mut r, mut f) = (records.into_iter().peekable(), files.into_iter().peekable());
        while out.len() < limit {
            let (rec_key, file_key) = (r.peek().map(|rec| (rec.hash, rec.shard)), f.peek().copied());
            let take_record = match (rec_key, file_key) {
                (None, None) => break,
                (Some(rk), Some(fk)) if rk == fk => {
                    // In both homes (mid-move): listed once, as the record reads see.
                    f.next();
                    true
                }
                (Some(rk), Some(fk)) => rk < fk,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_record {
                let Some(rec) = r.next() else { break };
                out.push(Named { hash: rec.hash, shard: rec.shard, home: Home::Record(rec) });
            } else {
                let Some((hash, shard)) = f.next() else { break };
                out.push(Named { hash, shard, home: Home::File });
            }
        }
        Ok(out)
    }

    /// Up to `limit` shard files after `after`, in (hash, shard) order.
    fn files_after(
        &self,
        after: Option<(ContentHash, ShardIndex)>,
        limit: usize,
    ) -> io::Result<Vec<(ContentHash, ShardIndex)>> {
        let objects = self.root.join("objects");
        let from = after.map(|(h, _)| {
            let hex = h.to_hex();
            (hex[0..2].to_string(), hex[2..4].to_string())
        });
        let mut out = Vec::new();
        for top in sorted_fanout(&objects)? {
            if from.as_ref().is_some_and(|(t, _)| top < *t) {
                continue;
            }
            for sub in sorted_fanout(&objects.join(&top))? {
                if from.as_ref().is_some_and(|(t, s)| top == *t && sub < *s) {
                    continue;
                }
                let entries = match fs::read_dir(objects.join(&top).join(&sub)) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let mut names = Vec::new();
                for entry in entries {
                    let name = entry?.file_name();
                    let Some(parsed) = name.to_str().and_then(parse_shard_file_name) else { continue };
                    if after.is_none_or(|a| parsed > a) {
                        names.push(parsed);
                    }
                }
                names.sort_unstable();
                names.truncate(limit - out.len());
                out.extend(names);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// A page of the listing for the orphan collector: up to `limit` shards after
    /// `after` ([`names_after`](ShardStore::names_after)) with their length, policy
    /// and age. The age never overstates how long ago the shard was committed here:
    /// a file's is its mtime's (a dedup commit onto it touches it); a record's is
    /// the latest of its volume file's mtime (no record in a volume is younger than
    /// the volume's last write), the last dedup commit onto it in this process, and
    /// the process start (dedup refreshes are kept in memory only, so after a
    /// restart every record counts as committed at the start at the earliest).
    /// `next` is the last name listed when the page is full, else `None`.
    pub fn list(
        &self,
        after: Option<(ContentHash, ShardIndex)>,
        limit: usize,
    ) -> Result<(Vec<ListedShard>, Option<ShardName>), StoreError> {
        let names = self.names_after(after, limit)?;
        let next = (names.len() >= limit).then(|| names.last().map(|n| (n.hash, n.shard))).flatten();
        let now = SystemTime::now();
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default().as_secs();
        let mut volume_times = std::collections::HashMap::new();
        let (refreshed, floor) = {
            let r = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            let at: Vec<Option<SystemTime>> = names.iter().map(|n| r.at.get(&(n.hash, n.shard)).copied()).collect();
            (at, r.floor)
        };
        let mut out = Vec::with_capacity(names.len());
        for (name, refreshed) in names.into_iter().zip(refreshed) {
            let (len, policy, committed) = match name.home {
                Home::Record(rec) => {
                    let volume_time = *volume_times.entry(rec.volume).or_insert_with(|| {
                        self.small.as_ref().and_then(|v| v.volume_modified(rec.volume)).unwrap_or(now)
                    });
                    let t = volume_time.max(floor).max(refreshed.unwrap_or(floor));
                    (rec.len, rec.policy, t)
                }
                Home::File => {
                    let path = self.shard_path(&name.hash, name.shard);
                    let modified = match fs::metadata(&path) {
                        Ok(m) => m.modified().unwrap_or(now),
                        // Gone since the walk: deleted, not listed.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    match ShardReader::open(&path) {
                        Ok(r) => (r.data_len(), r.policy(), modified),
                        Err(ShardFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                        // A bad header: listed with the file's size and no policy.
                        Err(_) => (fs::metadata(&path).map(|m| m.len()).unwrap_or(0), None, modified),
                    }
                }
            };
            out.push(ListedShard { hash: name.hash, shard: name.shard, len, policy, age_s: age(committed) });
        }
        Ok((out, next))
    }

    /// Reads and verifies a shard file's data from `start`, about `max_bytes` of it
    /// (whole blocks), for the scrubber.
    pub fn verify_file(
        &self,
        hash: &ContentHash,
        shard: ShardIndex,
        start: u64,
        max_bytes: u64,
    ) -> Result<FileCheck, StoreError> {
        let mut reader = match self.open_file(hash, shard) {
            Ok(r) => r,
            Err(StoreError::NoSuchShard { .. }) => return Ok(FileCheck::Gone),
            Err(StoreError::Corrupt { source, .. }) => return Ok(FileCheck::Corrupt(source.to_string())),
            Err(e) => return Err(e),
        };
        let data_len = reader.data_len();
        let end = start.saturating_add(max_bytes.max(1)).min(data_len);
        match reader.read_range(start, end, |_| true) {
            Ok(()) => Ok(FileCheck::Good { data_len, end }),
            Err(ShardFileError::Io(e)) if e.kind() != io::ErrorKind::UnexpectedEof => Err(e.into()),
            Err(e) => Ok(FileCheck::Corrupt(e.to_string())),
        }
    }

    /// Reads and verifies a volume record (header, hash, both checksums), for the
    /// scrubber.
    pub fn verify_record(&self, hash: &ContentHash, shard: ShardIndex) -> Result<RecordCheck, StoreError> {
        let Some(volumes) = &self.small else { return Ok(RecordCheck::Gone) };
        match volumes.get(hash, shard) {
            Ok(Some(r)) => Ok(RecordCheck::Good { len: r.data.len() as u64 }),
            Ok(None) => Ok(RecordCheck::Gone),
            Err(e @ (VolumeError::Corrupt { .. } | VolumeError::Misplaced { .. })) => {
                Ok(RecordCheck::Corrupt(e.to_string()))
            }
            Err(source) => Err(StoreError::Volume { hash: *hash, shard, source }),
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

    /// Free bytes on the file system holding the root, as an unprivileged user sees it.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// A shard's name: its content hash and index.
pub type ShardName = (ContentHash, ShardIndex);

/// Where a listed shard lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// A shard file in the fan-out directories.
    File,
    /// A volume record, as the index lists it.
    Record(ListedRecord),
}

/// A shard name and its home ([`ShardStore::names_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named {
    /// The content hash.
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
    /// Where it lives.
    pub home: Home,
}

/// One entry of the listing ([`ShardStore::list`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedShard {
    /// The content hash.
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
    /// The shard's data length.
    pub len: u64,
    /// Its policy, when known.
    pub policy: Option<Policy>,
    /// Seconds since it was committed here, at most (never more).
    pub age_s: u64,
}

/// What verifying part of a shard file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileCheck {
    /// `[start, end)` checks; the shard holds `data_len` bytes.
    Good {
        /// The shard's data length.
        data_len: u64,
        /// Verified up to here.
        end: u64,
    },
    /// The header or a block fails its check: why.
    Corrupt(String),
    /// No such file (deleted or moved since it was listed).
    Gone,
}

/// What verifying a volume record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordCheck {
    /// It checks; `len` bytes.
    Good {
        /// Its data length.
        len: u64,
    },
    /// It fails a check: why.
    Corrupt(String),
    /// Not in the index (deleted since it was listed).
    Gone,
}

/// Parses a shard file name, `<sha256-hex>.<shard>`.
pub fn parse_shard_file_name(name: &str) -> Option<(ContentHash, ShardIndex)> {
    let (hash, shard) = name.split_once('.')?;
    if shard.is_empty() || !shard.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((hash.parse().ok()?, shard.parse().ok()?))
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

/// The fan-out directory names (two lowercase hex digits) in `dir`, sorted; none
/// when `dir` is missing.
fn sorted_fanout(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(n) =
            name.to_str().filter(|n| n.len() == 2 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            names.push(n.to_string());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Checks a stored shard against what a reader expects: the same data length when
/// `expected_len` is given, the same policy when both sides know it.
pub fn check_identity(
    hash: &ContentHash,
    shard: ShardIndex,
    stored: &StoredShard,
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

fn committed(outcome: PutOutcome) -> Committed {
    match outcome {
        PutOutcome::New => Committed::New,
        PutOutcome::AlreadyStored => Committed::AlreadyStored,
        PutOutcome::Replaced | PutOutcome::ReplacedFile => Committed::Replaced,
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
mod tests {
    use super::*;

    /// A store keeping every shard a file: the file layout's own tests.
    fn store() -> (tempfile::TempDir, ShardStore) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ShardStore::open_with(dir.path(), StoreConfig { small_shard_max: 0, ..StoreConfig::default() }).unwrap();
        (dir, store)
    }

    /// A store with small shards (up to 16 bytes here) in volumes.
    fn mixed_store(dir: &Path) -> ShardStore {
        ShardStore::open_with(dir, StoreConfig { small_shard_max: 16, ..StoreConfig::default() }).unwrap()
    }

    fn read(store: &ShardStore, hash: &ContentHash, shard: ShardIndex) -> Vec<u8> {
        let mut r = store.open_shard(hash, shard).unwrap();
        let mut data = Vec::new();
        r.read_range(0, u64::MAX, |b| {
            data.extend(b);
            true
        })
        .unwrap();
        data
    }

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
        let mut data = Vec::new();
        r.read_range(0, 4, |b| {
            data.extend(b);
            true
        })
        .unwrap();
        assert_eq!(data, b"good");
    }

    #[test]
    fn quarantine_of_an_absent_shard_says_so() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"none");
        assert!(matches!(store.quarantine(&hash, 0), Err(StoreError::NoSuchShard { shard: 0, .. })));
    }

    #[test]
    fn names_come_in_hash_shard_order_across_both_homes() {
        let dir = tempfile::tempdir().unwrap();
        let store = mixed_store(dir.path());
        let mut hashes: Vec<ContentHash> = (0..6u8).map(|i| ContentHash::of(&[i])).collect();
        hashes.sort();
        let mut want = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            // Records (small) and files (large, one with an index no record can have).
            let (shard, data): (ShardIndex, &[u8]) =
                if i % 2 == 0 { (5, b"tiny") } else { (300, b"a shard longer than sixteen bytes") };
            let id = write_temp(&store, data);
            store.commit(id, h, shard, data.len() as u64, None).unwrap();
            want.push((*h, shard, shard == 5));
            let id = write_temp(&store, b"more than sixteen bytes here");
            store.commit(id, h, 7, 28, None).unwrap();
            want.push((*h, 7, false));
        }
        want.sort_by_key(|&(h, s, _)| (h, s));
        let all: Vec<_> = store
            .names_after(None, 100)
            .unwrap()
            .into_iter()
            .map(|n| (n.hash, n.shard, matches!(n.home, Home::Record(_))))
            .collect();
        assert_eq!(all, want);
        // Paging from every name gives the rest, whatever home the cursor was in.
        for (at, (h, s, _)) in want.iter().enumerate() {
            let rest: Vec<_> =
                store.names_after(Some((*h, *s)), 3).unwrap().into_iter().map(|n| (n.hash, n.shard)).collect();
            let expected: Vec<_> = want[at + 1..].iter().take(3).map(|&(h, s, _)| (h, s)).collect();
            assert_eq!(rest, expected, "after {h}.{s}");
        }
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
