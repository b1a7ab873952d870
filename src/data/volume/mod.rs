//! The small-shard engine of a data server: shards up to a threshold are appended as
//! self-checking records to volume files, many at a time, and made durable by one
//! `fdatasync` per batch (group commit), in the way of Haystack's and SeaweedFS's
//! volumes. Larger shards stay a file each ([`super::store`]).
//!
//! ```text
//! ROOT/volumes/0000000001.vol   sealed volumes (append-only, then read-only)
//! ROOT/volumes/0000000007.vol   the active volume: the only one appended to
//! ROOT/volumes/index            checkpoint of the index (see [`index`])
//! ```
//!
//! **Group commit.** Every change (a shard put, a delete, a compaction's move) is an
//! op sent to one committer thread. The committer takes every op waiting, encodes
//! their records into one buffer, writes it at the end of the active volume with one
//! `pwrite`, calls `fdatasync` once, and only then updates the index and answers each
//! op. While one batch is syncing the next one gathers, so N concurrent writers pay
//! about one fsync, not N, and no writer is acknowledged before its record is
//! durable. A batch holds at most [`VolumeConfig::max_batch_bytes`].
//!
//! **Reads** look up the index (a read lock), `pread` the whole record and check its
//! header, full hash, shard index and both checksums before a byte is served: a torn
//! or rotted record is an error ([`VolumeError::Corrupt`]), never data.
//!
//! **Crash story.** A crash can leave the active volume with a torn last batch (some
//! records whole, some not, possibly out of order). At open the store loads the
//! checkpoint and scans each volume from the offset the checkpoint covers: record by
//! record while they check; at the first one that does not, it looks further on (at
//! every 8-byte boundary) for another whole record, so that one rotted record in the
//! middle does not hide the ones after it; when none follows, that is where the log
//! ends. A record whose checksums hold is the bytes some writer sent, acknowledged
//! or not, so indexing it is safe. After a restart the store never appends to an old
//! volume: it starts a new one, so a torn tail is never followed by new records.
//!
//! **Deletes** append a tombstone naming the exact (volume, offset) of the record
//! they kill, so replaying the log in order (volume by volume, offset by offset)
//! rebuilds the same index whatever was deleted, re-put or moved since.
//!
//! **Compaction** of a sealed volume reads it front to back and sends each record the
//! index still points at (and each tombstone whose target volume still exists) to
//! the committer as a move: the committer appends the copy to the active volume only
//! if the index still points at the original (a concurrent delete or replace wins),
//! so compaction is just more writes through the same door. Once every move is
//! durable and no index entry points into the old volume, the volume leaves the
//! table and its file is unlinked (readers that already hold it keep their open file
//! until they finish), then the directory is fsynced. A crash at any point leaves
//! either the old volume (moves replayed later win, being later in the log) or both,
//! never neither.
//!
//! Synchronous code on its own thread (the committer) and the caller's (reads,
//! compaction); the async data server awaits the committer's answers.
//!
//! **Rooms.** This file holds the store's types, its shared state and the calls
//! that hand ops to the committer; its children hold the rest by operation:
//! `committer` (group commit: batching, the commit delay, write and fsync, rolling
//! to a new volume), `read` (looking up, reading and checking records, the
//! listing's walk), `recovery` (scanning volumes, replaying them into the index,
//! the checkpoint) and `compaction`; [`index`] and [`record`] are the in-memory
//! index and the on-disk record format.

mod committer;
mod compaction;
pub mod index;
mod read;
pub mod record;
mod recovery;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::content::{ContentHash, Policy, ShardIndex};
use committer::{Op, Reply};
use index::{Index, Key};
use record::RecordError;
use recovery::recover;

/// How the volume store behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolumeConfig {
    /// The active volume is sealed, and a new one started, once it reaches this many
    /// bytes. At most [`MAX_VOLUME_SIZE`] (record offsets are 32-bit).
    pub volume_size: u64,
    /// Most bytes of records one batch writes (one `pwrite`, one `fdatasync`).
    pub max_batch_bytes: usize,
    /// A checkpoint of the index is written after this many bytes were appended
    /// since the last one (or four times the checkpoint's own size, when that is
    /// more), and at clean shutdown.
    pub checkpoint_every: u64,
    /// A sealed volume is compacted once this share of its bytes is dead.
    pub compact_dead_ratio: f64,
    /// Ops that may wait for the committer; senders wait beyond that.
    pub queue: usize,
    /// The commit delay per waiting writer (PostgreSQL's `commit_delay`, scaled):
    /// when this batch or the last held n > [`COMMIT_SIBLINGS`] ops, the committer
    /// waits up to min((n − 1) × this, [`MAX_COMMIT_DELAY`]) for more before it
    /// writes, so one fsync covers more of many concurrent writers. Zero commits
    /// whatever is waiting at once.
    pub commit_delay: Duration,
}

/// [`VolumeConfig::commit_delay`] by default: measured on 2 cores with `cairn dev`,
/// 4 KiB PUTs, it takes 16 clients from about 2 fsync calls per PUT to under 1 at the
/// same throughput, and costs 1 and 4 clients little or nothing (README,
/// "Group commit").
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(1);

/// Batches of at most this many ops (and after such a batch) are written at once:
/// one or two writers never wait for others.
pub const COMMIT_SIBLINGS: usize = 2;

/// The longest a batch waits for more ops.
pub const MAX_COMMIT_DELAY: Duration = Duration::from_millis(4);

/// Dead bytes an active volume must hold before compaction seals it early.
pub const ROLL_DEAD_BYTES: u64 = 1 << 20;

/// Largest allowed volume size: offsets are `u32`, and a batch may overshoot the
/// size by [`VolumeConfig::max_batch_bytes`] plus one record.
pub const MAX_VOLUME_SIZE: u64 = 3 << 30;

impl Default for VolumeConfig {
    fn default() -> VolumeConfig {
        VolumeConfig {
            volume_size: 256 << 20,
            max_batch_bytes: 16 << 20,
            checkpoint_every: 64 << 20,
            compact_dead_ratio: 0.5,
            queue: 4096,
            commit_delay: DEFAULT_COMMIT_DELAY,
        }
    }
}

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The disk failed.
    #[error("volume I/O failed: {0}")]
    Io(#[from] io::Error),
    /// A record fails its checks.
    #[error("record at volume {volume} offset {offset} is corrupt: {reason}")]
    Corrupt {
        /// The volume.
        volume: u32,
        /// The record's offset.
        offset: u32,
        /// What is wrong.
        reason: RecordError,
    },
    /// The record the index names is whole but holds another shard: the index and
    /// the volume disagree.
    #[error("record at volume {volume} offset {offset} holds {found}, the index says {wanted}")]
    Misplaced {
        /// The volume.
        volume: u32,
        /// The record's offset.
        offset: u32,
        /// What the index says is there.
        wanted: String,
        /// What is there.
        found: String,
    },
    /// Another content with the same 128-bit hash prefix and shard is stored (see
    /// [`index`]); the write is refused rather than shadow it.
    #[error("shard {hash}.{shard} shares its index key with another stored content")]
    Collision {
        /// The content refused.
        hash: ContentHash,
        /// Its shard.
        shard: ShardIndex,
    },
    /// A shard index above 255 (no policy has one).
    #[error("shard index {0} cannot be stored in a volume")]
    ShardIndex(ShardIndex),
    /// The committer is gone (the store is shutting down, or it panicked).
    #[error("the volume committer stopped")]
    Stopped,
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The shard is now stored.
    New,
    /// The same shard (length and policy) was already stored, in a volume or as a
    /// file; nothing was written.
    AlreadyStored,
    /// Another shard under the same name (another length or known policy) was
    /// stored in a volume; the new record replaced it.
    Replaced,
    /// A file of another identity held the name; the new record is durable and the
    /// caller should move the file aside.
    ReplacedFile,
}

/// What the file store holds under a shard's name, asked by the committer when the
/// index has nothing for it, so that a shard is not stored twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileProbe {
    /// No file.
    Absent,
    /// A file of the same length and (known) policy.
    Same,
    /// A file of another identity, or one that fails to open.
    Other,
}

/// Answers [`FileProbe`] for (hash, shard, length, policy).
pub type Probe = Arc<dyn Fn(&ContentHash, ShardIndex, u64, Option<Policy>) -> FileProbe + Send + Sync>;

/// A verified small shard read from a volume.
#[derive(Clone, Debug)]
pub struct Record {
    /// The shard's bytes.
    pub data: Bytes,
    /// The policy it was cut under, when its writer said.
    pub policy: Option<Policy>,
}

/// A record as the listing sees it ([`VolumeStore::records_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedRecord {
    /// The content hash (from the record's header; see `header_ok`).
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
    /// The shard's length.
    pub len: u64,
    /// Its policy, when its writer said.
    pub policy: Option<Policy>,
    /// The volume holding it.
    pub volume: u32,
    /// Whether the record's header checked; when not, `hash` is only the index's
    /// 16-byte prefix padded with zeros.
    pub header_ok: bool,
}

/// One volume's figures, for operators and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStat {
    /// Its id.
    pub id: u32,
    /// Bytes in its file up to the end of its valid log.
    pub size: u64,
    /// Live shard records in it.
    pub live_records: u64,
    /// Their bytes (headers and padding included).
    pub live_bytes: u64,
    /// Whether it is the one being appended to.
    pub active: bool,
}

/// The store's figures.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Small shards stored.
    pub shards: u64,
    /// Estimated heap bytes of the index.
    pub index_bytes: u64,
    /// Batches made durable (one `fdatasync` each) since the store opened.
    pub syncs: u64,
    /// Ops those batches answered.
    pub synced_ops: u64,
    /// Every volume.
    pub volumes: Vec<VolumeStat>,
}

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Live records copied out.
    pub moved: u64,
    /// Tombstones copied out (their target volume still exists).
    pub tombstones: u64,
    /// Bytes of the volume removed.
    pub freed: u64,
}

/// An open volume file.
#[derive(Debug)]
struct Volume {
    file: File,
    path: PathBuf,
}

/// What readers and the committer share.
#[derive(Debug)]
struct State {
    index: Index,
    volumes: BTreeMap<u32, Arc<Volume>>,
    /// For each volume, the end of its valid log: what the index reflects.
    ends: BTreeMap<u32, u64>,
    active: u32,
    /// The active volume failed a write or sync: start a new one before the next batch.
    poisoned: bool,
    appended_since_checkpoint: u64,
}

struct Shared {
    dir: PathBuf,
    config: VolumeConfig,
    state: RwLock<State>,
    probe: Option<Probe>,
    checkpointing: Mutex<()>,
    compacting: Mutex<()>,
    syncs: AtomicU64,
    synced_ops: AtomicU64,
    /// Tests: the next batch's write fails as a full disk would.
    #[cfg(test)]
    fail_next_write: std::sync::atomic::AtomicBool,
}

/// The volume store of one data server: cheap to clone; the committer thread stops
/// once every clone is dropped.
#[derive(Clone)]
pub struct VolumeStore {
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
}

impl std::fmt::Debug for VolumeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeStore").field("dir", &self.shared.dir).finish_non_exhaustive()
    }
}

fn volume_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.vol"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl VolumeStore {
    /// Opens (creating when missing) the volume store in `dir`: loads the checkpoint,
    /// scans what it does not cover, starts a new active volume and the committer.
    /// `probe` answers whether the file store holds a shard the index lacks.
    pub fn open(dir: &Path, config: VolumeConfig, probe: Option<Probe>) -> io::Result<VolumeStore> {
        if config.volume_size > MAX_VOLUME_SIZE || config.volume_size < 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("volume size must be between 4 KiB and {MAX_VOLUME_SIZE} bytes"),
            ));
        }
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let state = recover(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            state: RwLock::new(state),
            probe,
            checkpointing: Mutex::new(()),
            compacting: Mutex::new(()),
            syncs: AtomicU64::new(0),
            synced_ops: AtomicU64::new(0),
            #[cfg(test)]
            fail_next_write: Default::default(),
        });
        shared.roll()?;
        let (ops, rx) = mpsc::channel(config.queue.max(1));
        let committer = shared.clone();
        std::thread::Builder::new().name("cairn-volumes".into()).spawn(move || committer.run(rx))?;
        Ok(VolumeStore { shared, ops })
    }

    /// The directory of the volumes.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stores `data` as `hash.shard`, returning once it is durable (or was already
    /// stored). For async callers.
    pub async fn put(
        &self,
        hash: ContentHash,
        shard: ShardIndex,
        policy: Option<Policy>,
        data: Bytes,
    ) -> Result<PutOutcome, VolumeError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(Op::Put { hash, shard, policy, data, reply }).await.map_err(|_| VolumeError::Stopped)?;
        answer.await.map_err(|_| VolumeError::Stopped)?
    }

    /// Hands the op `op` builds around its reply channel to the committer and waits
    /// for the answer, on a blocking thread: every blocking call to the committer.
    fn ask_blocking<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, VolumeError> {
        let (reply, answer) = oneshot::channel();
        self.ops.blocking_send(op(reply)).map_err(|_| VolumeError::Stopped)?;
        answer.blocking_recv().map_err(|_| VolumeError::Stopped)?
    }

    /// [`put`](VolumeStore::put) for a blocking thread (never call it from async code).
    pub fn put_blocking(
        &self,
        hash: ContentHash,
        shard: ShardIndex,
        policy: Option<Policy>,
        data: Bytes,
    ) -> Result<PutOutcome, VolumeError> {
        self.ask_blocking(|reply| Op::Put { hash, shard, policy, data, reply })
    }

    /// Deletes `hash.shard` (appends a durable tombstone); false when it is not
    /// stored here. For blocking threads.
    pub fn delete_blocking(&self, hash: &ContentHash, shard: ShardIndex) -> Result<bool, VolumeError> {
        self.ask_blocking(|reply| Op::Delete { hash: *hash, shard, reply })
    }

    /// Whether `hash.shard` is stored here, and its length and policy.
    pub fn identity(&self, hash: &ContentHash, shard: ShardIndex) -> Option<(u64, Option<Policy>)> {
        let key = Key::new(hash, shard)?;
        self.shared.read().index.get(&key).map(|loc| (u64::from(loc.data_len()), loc.policy()))
    }

    /// The shard indices of `hash` stored here, in order.
    pub fn shards_of(&self, hash: &ContentHash) -> Vec<ShardIndex> {
        self.shared.read().index.shards_of(hash)
    }

    /// When volume `id`'s file was last written: no record in it was written later,
    /// so it bounds a record's age from above without ever overstating it.
    pub fn volume_modified(&self, id: u32) -> Option<std::time::SystemTime> {
        let volume = self.shared.read().volumes.get(&id).cloned()?;
        volume.file.metadata().and_then(|m| m.modified()).ok()
    }

    /// The store's figures.
    pub fn stats(&self) -> Stats {
        let state = self.shared.read();
        let volumes = state
            .ends
            .iter()
            .map(|(&id, &size)| {
                let live = state.index.live(id);
                VolumeStat { id, size, live_records: live.records, live_bytes: live.bytes, active: id == state.active }
            })
            .collect();
        let shards = state.index.len() as u64;
        Stats {
            shards,
            index_bytes: shards * index::BYTES_PER_ENTRY,
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            synced_ops: self.shared.synced_ops.load(Ordering::Relaxed),
            volumes,
        }
    }

    /// Writes a checkpoint of the index now (see [`index`]).
    pub fn checkpoint(&self) -> io::Result<()> {
        self.shared.checkpoint()
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}
