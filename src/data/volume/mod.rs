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

pub mod index;
pub mod record;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::content::{ContentHash, Policy, ShardIndex};
use index::{Index, Key, Loc};
use record::{Kind, RecordError, HEADER_LEN, VOLUME_HEADER_LEN};

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

/// A change for the committer.
enum Op {
    Put {
        hash: ContentHash,
        shard: ShardIndex,
        policy: Option<Policy>,
        data: Bytes,
        reply: Reply<PutOutcome>,
    },
    Delete {
        hash: ContentHash,
        shard: ShardIndex,
        reply: Reply<bool>,
    },
    /// Copy a live record (raw bytes) from `from` unless the index moved on.
    Move {
        key: Key,
        from: (u32, u32),
        header: record::Header,
        raw: Vec<u8>,
        reply: Reply<bool>,
    },
    /// Copy a tombstone whose target volume may still exist.
    CopyTombstone {
        target: u32,
        raw: Vec<u8>,
        reply: Reply<bool>,
    },
    /// Seal the active volume and start a new one.
    Roll {
        reply: Reply<bool>,
    },
}

type Reply<T> = oneshot::Sender<Result<T, VolumeError>>;

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Put { data, .. } => data.len() + HEADER_LEN,
            Op::Move { raw, .. } | Op::CopyTombstone { raw, .. } => raw.len(),
            Op::Delete { .. } | Op::Roll { .. } => HEADER_LEN,
        }
    }
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

    /// [`put`](VolumeStore::put) for a blocking thread (never call it from async code).
    pub fn put_blocking(
        &self,
        hash: ContentHash,
        shard: ShardIndex,
        policy: Option<Policy>,
        data: Bytes,
    ) -> Result<PutOutcome, VolumeError> {
        let (reply, answer) = oneshot::channel();
        self.ops.blocking_send(Op::Put { hash, shard, policy, data, reply }).map_err(|_| VolumeError::Stopped)?;
        answer.blocking_recv().map_err(|_| VolumeError::Stopped)?
    }

    /// Deletes `hash.shard` (appends a durable tombstone); false when it is not
    /// stored here. For blocking threads.
    pub fn delete_blocking(&self, hash: &ContentHash, shard: ShardIndex) -> Result<bool, VolumeError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Delete { hash: *hash, shard, reply };
        self.ops.blocking_send(op).map_err(|_| VolumeError::Stopped)?;
        answer.blocking_recv().map_err(|_| VolumeError::Stopped)?
    }

    /// Whether `hash.shard` is stored here, and its length and policy.
    pub fn identity(&self, hash: &ContentHash, shard: ShardIndex) -> Option<(u64, Option<Policy>)> {
        let key = Key::new(hash, shard)?;
        self.shared.read().index.get(&key).map(|loc| (u64::from(loc.data_len()), loc.policy()))
    }

    /// Reads and verifies `hash.shard`; `Ok(None)` when it is not stored here.
    pub fn get(&self, hash: &ContentHash, shard: ShardIndex) -> Result<Option<Record>, VolumeError> {
        let Some(key) = Key::new(hash, shard) else { return Ok(None) };
        // A compaction may retire the volume between the lookup and the read; the
        // index then already points at the copy, so look again.
        for _ in 0..4 {
            let Some((loc, volume)) = self.lookup(&key) else { return Ok(None) };
            let Some(volume) = volume else { continue };
            return read_record(&volume, loc, hash, shard).map(Some);
        }
        Ok(None)
    }

    /// The raw bytes of `hash.shard`'s record (header included), whether or not they
    /// check: what quarantine keeps for an operator.
    pub fn raw(&self, hash: &ContentHash, shard: ShardIndex) -> Result<Option<Vec<u8>>, VolumeError> {
        let Some(key) = Key::new(hash, shard) else { return Ok(None) };
        let Some((loc, Some(volume))) = self.lookup(&key) else { return Ok(None) };
        let mut buf = vec![0u8; loc.record_len() as usize];
        let n = read_up_to(&volume.file, &mut buf, u64::from(loc.offset()))?;
        buf.truncate(n);
        Ok(Some(buf))
    }

    /// Where `key`'s record lives and its volume (`None` when a compaction just
    /// retired that volume), under one read lock.
    fn lookup(&self, key: &Key) -> Option<(Loc, Option<Arc<Volume>>)> {
        let state = self.shared.read();
        let loc = state.index.get(key)?;
        Some((loc, state.volumes.get(&loc.volume()).cloned()))
    }

    /// The shard indices of `hash` stored here, in order.
    pub fn shards_of(&self, hash: &ContentHash) -> Vec<ShardIndex> {
        self.shared.read().index.shards_of(hash)
    }

    /// Up to `limit` records after `after` (exclusive; `None`: from the start) in
    /// (hash, shard) order: the listing and the scrubber's walk. The index's ordered
    /// map is the sorted view, so a page costs a range lookup under the read lock
    /// plus one 64-byte header read per record (outside the lock) for the full hash,
    /// which the index does not keep. A record whose header does not check is listed
    /// with its 16-byte hash prefix padded with zeros and `header_ok` false: a delete
    /// or quarantine under that name finds it (the index keys on the prefix).
    pub fn records_after(&self, after: Option<(&ContentHash, ShardIndex)>, limit: usize) -> Vec<ListedRecord> {
        let (entries, volumes) = {
            let state = self.shared.read();
            let entries = state.index.range_after(after.map(|(h, s)| Key::at_or_before(h, s)), limit);
            let volumes: HashMap<u32, Arc<Volume>> = entries
                .iter()
                .filter_map(|(_, loc)| state.volumes.get(&loc.volume()).map(|v| (loc.volume(), v.clone())))
                .collect();
            (entries, volumes)
        };
        entries
            .into_iter()
            .map(|(key, loc)| {
                let header = volumes.get(&loc.volume()).and_then(|v| {
                    let mut h = [0u8; HEADER_LEN];
                    match read_up_to(&v.file, &mut h, u64::from(loc.offset())) {
                        Ok(HEADER_LEN) => record::decode_header(&h).ok(),
                        _ => None,
                    }
                });
                let (hash, header_ok) = match header {
                    Some(h)
                        if h.kind == Kind::Shard
                            && h.shard == key.shard()
                            && h.hash.as_bytes()[..16] == key.prefix()[..] =>
                    {
                        (h.hash, true)
                    }
                    _ => {
                        let mut bytes = [0u8; 32];
                        bytes[..16].copy_from_slice(key.prefix());
                        (ContentHash::from_bytes(bytes), false)
                    }
                };
                ListedRecord {
                    hash,
                    shard: key.shard(),
                    len: u64::from(loc.data_len()),
                    policy: loc.policy(),
                    volume: loc.volume(),
                    header_ok,
                }
            })
            .collect()
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

    /// Compacts every sealed volume whose dead share reaches
    /// [`VolumeConfig::compact_dead_ratio`], or that is smaller than an eighth of a
    /// volume (what restarts leave behind), oldest first. An active volume that is
    /// itself that dead (after many deletes it is mostly tombstones) and holds at
    /// least [`ROLL_DEAD_BYTES`] (or an eighth of a volume) of dead bytes is sealed first, so that it is
    /// compacted in the same round: its tombstones go once the volumes they point
    /// into are gone. Returns what was done, per volume.
    pub fn compact_due(&self) -> Result<Vec<(u32, Compaction)>, VolumeError> {
        let ratio = self.shared.config.compact_dead_ratio;
        let dead = |state: &State, id: u32, size: u64| {
            let records = size.saturating_sub(VOLUME_HEADER_LEN);
            let dead = records.saturating_sub(state.index.live(id).bytes);
            (dead, dead as f64 >= ratio * records as f64)
        };
        let roll_active = {
            let state = self.shared.read();
            let size = state.ends.get(&state.active).copied().unwrap_or(0);
            let (bytes, mostly) = dead(&state, state.active, size);
            mostly && bytes >= ROLL_DEAD_BYTES.min(self.shared.config.volume_size / 8)
        };
        if roll_active {
            // Through the committer, so that no batch is being written meanwhile.
            let (reply, answer) = oneshot::channel();
            self.ops.blocking_send(Op::Roll { reply }).map_err(|_| VolumeError::Stopped)?;
            answer.blocking_recv().map_err(|_| VolumeError::Stopped)??;
        }
        let due: Vec<u32> = {
            let state = self.shared.read();
            let small = self.shared.config.volume_size / 8;
            state
                .ends
                .iter()
                .filter(|(&id, _)| id != state.active)
                .filter(|(&id, &size)| size < small || dead(&state, id, size).1)
                .map(|(&id, _)| id)
                .collect()
        };
        let mut done = Vec::new();
        for id in due {
            done.push((id, self.compact(id)?));
        }
        Ok(done)
    }

    /// Copies the live records of sealed volume `id` into the active volume and
    /// removes it. Safe against concurrent reads, writes and a crash at any point
    /// (see the module doc). For blocking threads.
    pub fn compact(&self, id: u32) -> Result<Compaction, VolumeError> {
        let _one = self.shared.compacting.lock().unwrap_or_else(|e| e.into_inner());
        let (volume, end) = {
            let state = self.shared.read();
            if id == state.active {
                return Err(VolumeError::Io(io::Error::new(io::ErrorKind::InvalidInput, "the active volume")));
            }
            match (state.volumes.get(&id), state.ends.get(&id)) {
                (Some(v), Some(&end)) => (v.clone(), end),
                _ => return Ok(Compaction::default()),
            }
        };
        let mut done = Compaction::default();
        let mut waiting = Vec::new();
        let mut waiting_bytes = 0usize;
        let flush = |waiting: &mut Vec<(bool, oneshot::Receiver<Result<bool, VolumeError>>)>,
                     done: &mut Compaction|
         -> Result<(), VolumeError> {
            for (is_move, answer) in waiting.drain(..) {
                if answer.blocking_recv().map_err(|_| VolumeError::Stopped)?? {
                    if is_move {
                        done.moved += 1;
                    } else {
                        done.tombstones += 1;
                    }
                }
            }
            Ok(())
        };
        let mut scan_error = None;
        scan(&volume.file, id, VOLUME_HEADER_LEN, end, |header, offset, raw| {
            if scan_error.is_some() {
                return;
            }
            let (reply, answer) = oneshot::channel();
            let op = match header.kind {
                Kind::Shard => {
                    let Some(key) = Key::new(&header.hash, header.shard) else { return };
                    let live = self.shared.read().index.get(&key);
                    match live {
                        Some(loc) if loc.volume() == id && u64::from(loc.offset()) == offset => {
                            Op::Move { key, from: (id, loc.offset()), header, raw: raw.to_vec(), reply }
                        }
                        _ => return,
                    }
                }
                Kind::Tombstone { volume: target, .. } => {
                    if target == id || !self.shared.read().volumes.contains_key(&target) {
                        return;
                    }
                    Op::CopyTombstone { target, raw: raw.to_vec(), reply }
                }
            };
            waiting_bytes += raw.len();
            let is_move = matches!(op, Op::Move { .. });
            if self.ops.blocking_send(op).is_err() {
                scan_error = Some(VolumeError::Stopped);
                return;
            }
            waiting.push((is_move, answer));
            if waiting_bytes >= self.shared.config.max_batch_bytes {
                waiting_bytes = 0;
                if let Err(e) = flush(&mut waiting, &mut done) {
                    scan_error = Some(e);
                }
            }
        })?;
        if let Some(e) = scan_error {
            return Err(e);
        }
        flush(&mut waiting, &mut done)?;
        {
            let mut state = self.shared.write();
            let left = state.index.live(id).records;
            if left > 0 {
                // Records the scan could not read (rot in the middle of a sealed
                // volume): keep the volume, so that nothing is lost silently.
                tracing::error!(volume = id, left, "compaction left live records behind; volume kept");
                return Ok(done);
            }
            state.volumes.remove(&id);
            state.ends.remove(&id);
        }
        fs::remove_file(&volume.path)?;
        sync_dir(&self.shared.dir)?;
        done.freed = end;
        tracing::info!(volume = id, moved = done.moved, tombstones = done.tombstones, freed = end, "volume compacted");
        Ok(done)
    }
}

/// Reads and checks the record `loc` of `hash.shard` in `volume`.
fn read_record(volume: &Volume, loc: Loc, hash: &ContentHash, shard: ShardIndex) -> Result<Record, VolumeError> {
    let corrupt = |reason| VolumeError::Corrupt { volume: loc.volume(), offset: loc.offset(), reason };
    let mut buf = vec![0u8; HEADER_LEN + loc.data_len() as usize];
    let n = read_up_to(&volume.file, &mut buf, u64::from(loc.offset()))?;
    if n < buf.len() {
        return Err(corrupt(RecordError::PayloadChecksum));
    }
    let header = record::decode_header(&buf).map_err(corrupt)?;
    if header.kind != Kind::Shard || header.hash != *hash || header.shard != shard || header.len != loc.data_len() {
        return Err(VolumeError::Misplaced {
            volume: loc.volume(),
            offset: loc.offset(),
            wanted: format!("{hash}.{shard} ({} bytes)", loc.data_len()),
            found: format!("{}.{} ({} bytes, {:?})", header.hash, header.shard, header.len, header.kind),
        });
    }
    let mut data = Bytes::from(buf);
    let data = data.split_off(HEADER_LEN);
    record::check_payload(&header, &data).map_err(corrupt)?;
    Ok(Record { data, policy: header.policy })
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns the
/// bytes read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Bytes a scan reads at a time.
const SCAN_WINDOW: usize = 4 << 20;

/// Walks the records of volume `id` from `from` to at most `limit`, calling `apply`
/// with each valid record (header, offset, raw bytes without padding) in order,
/// skipping over damaged stretches (see the module doc). Returns the end of the
/// valid log: just past the last valid record, or `from`.
fn scan(
    file: &File,
    id: u32,
    from: u64,
    limit: u64,
    mut apply: impl FnMut(record::Header, u64, &[u8]),
) -> io::Result<u64> {
    let limit = limit.min(file.metadata()?.len());
    let mut window = Window { file, start: from, buf: Vec::new() };
    let mut pos = from;
    let mut end = from;
    let mut damaged_at = None;
    while pos + HEADER_LEN as u64 <= limit {
        match window.record_at(pos, limit)? {
            Ok((header, raw)) => {
                if let Some(at) = damaged_at.take() {
                    tracing::error!(volume = id, from = at, to = pos, "skipped a damaged stretch of a volume");
                }
                apply(header, pos, raw);
                pos += header.record_len();
                end = pos;
            }
            Err(_) => {
                damaged_at.get_or_insert(pos);
                pos += record::ALIGN;
            }
        }
    }
    if let Some(at) = damaged_at {
        if at < limit {
            tracing::info!(volume = id, at, bytes = limit - at, "volume log ends before its file does (torn tail)");
        }
    }
    Ok(end)
}

/// A sliding read buffer over a volume file, for scans.
struct Window<'a> {
    file: &'a File,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// `len` bytes at `pos`, or fewer at the end of the file.
    fn bytes(&mut self, pos: u64, len: usize, limit: u64) -> io::Result<&[u8]> {
        let have = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let want = len.max(SCAN_WINDOW).min(limit.saturating_sub(pos) as usize);
            self.buf.resize(want, 0);
            let n = read_up_to(self.file, &mut self.buf, pos)?;
            self.buf.truncate(n);
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (from + len).min(self.buf.len());
        Ok(&self.buf[from..to])
    }

    /// The valid record at `pos`, or why there is none.
    fn record_at(&mut self, pos: u64, limit: u64) -> io::Result<Result<(record::Header, &[u8]), RecordError>> {
        let header = match record::decode_header(self.bytes(pos, HEADER_LEN, limit)?) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let total = HEADER_LEN + header.len as usize;
        if pos + total as u64 > limit {
            return Ok(Err(RecordError::PayloadChecksum));
        }
        let raw = self.bytes(pos, total, limit)?;
        if raw.len() < total {
            return Ok(Err(RecordError::PayloadChecksum));
        }
        if let Err(e) = record::check_payload(&header, &raw[HEADER_LEN..]) {
            return Ok(Err(e));
        }
        Ok(Ok((header, raw)))
    }
}

/// Applies one valid record to the index during recovery.
fn replay(index: &mut Index, volume: u32, offset: u64, header: &record::Header) {
    let Some(key) = Key::new(&header.hash, header.shard) else { return };
    match header.kind {
        Kind::Shard => {
            if let Ok(offset) = u32::try_from(offset) {
                index.insert(key, Loc::new(volume, offset, header.len, header.policy));
            }
        }
        Kind::Tombstone { volume, offset } => {
            index.remove_at(&key, volume, offset);
        }
    }
}

/// Rebuilds the state from the checkpoint and the volumes (see the module doc).
fn recover(dir: &Path) -> io::Result<State> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".vol").and_then(|n| n.parse::<u32>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut volumes = BTreeMap::new();
    let mut sizes = HashMap::new();
    for &id in &ids {
        let path = volume_path(dir, id);
        let file = File::options().read(true).write(true).open(&path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; VOLUME_HEADER_LEN as usize];
        let whole = len >= VOLUME_HEADER_LEN && (&file).read_exact(&mut head).is_ok();
        if !whole {
            // A crash while the volume was being created: it never held a record.
            tracing::info!(volume = id, "removing a volume file that was never finished");
            drop(file);
            fs::remove_file(&path)?;
            continue;
        }
        if record::parse_volume_header(&head) != Some(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not volume {id} (bad header); move it away to start", path.display()),
            ));
        }
        sizes.insert(id, len);
        volumes.insert(id, Arc::new(Volume { file, path }));
    }
    let checkpoint = match File::open(dir.join(CHECKPOINT)) {
        Ok(f) => Index::read_checkpoint(f)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // A checkpoint is usable only if every volume it covers is at least as long as
    // it says (else someone cut a file short, and only a full scan is safe).
    let checkpoint = checkpoint.filter(|(_, scanned)| {
        let ok = scanned.iter().all(|(id, &end)| sizes.get(id).is_none_or(|&len| len >= end));
        if !ok {
            tracing::error!("volume files are shorter than the checkpoint says; scanning every volume");
        }
        ok
    });
    let (mut index, scanned) = checkpoint.unwrap_or_default();
    let mut ends = BTreeMap::new();
    for (&id, volume) in &volumes {
        let from = scanned.get(&id).copied().unwrap_or(VOLUME_HEADER_LEN).max(VOLUME_HEADER_LEN);
        let end = scan(&volume.file, id, from, u64::MAX, |header, offset, _| {
            replay(&mut index, id, offset, &header);
        })?;
        ends.insert(id, end);
    }
    // Entries into volumes that are gone (an operator removed a file) cannot be served.
    let gone: Vec<u32> = scanned.keys().filter(|id| !volumes.contains_key(id)).copied().collect();
    for id in gone {
        let dropped = index.drop_volume(id);
        if dropped > 0 {
            tracing::error!(volume = id, dropped, "volume file missing; its shards are lost here");
        }
    }
    let active = ids.last().copied().unwrap_or(0);
    Ok(State { index, volumes, ends, active, poisoned: true, appended_since_checkpoint: 0 })
}

const CHECKPOINT: &str = "index";

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new active volume: header written and synced, directory synced.
    fn roll(&self) -> io::Result<()> {
        let id = self.read().volumes.keys().next_back().copied().unwrap_or(0) + 1;
        let path = volume_path(&self.dir, id);
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        file.write_all_at(&record::volume_header(id), 0)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        let mut state = self.write();
        state.volumes.insert(id, Arc::new(Volume { file, path }));
        state.ends.insert(id, VOLUME_HEADER_LEN);
        state.active = id;
        state.poisoned = false;
        Ok(())
    }

    /// The committer: gathers every waiting op into a batch and commits it.
    fn run(self: Arc<Shared>, mut rx: mpsc::Receiver<Op>) {
        // A timer for the commit delay: the committer sleeps in epoll until an op
        // arrives or the delay is over, never polls.
        let timer = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(error = %e, "no timer for the commit delay; committing at once");
                None
            }
        };
        let mut last_batch = 0;
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.bytes();
            let mut batch = vec![first];
            while bytes < self.config.max_batch_bytes {
                match rx.try_recv() {
                    Ok(op) => {
                        bytes += op.bytes();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            // Many writers lately: wait a little for more.
            let delay = commit_delay(self.config.commit_delay, batch.len().max(last_batch));
            if let (Some(timer), Some(delay)) = (timer.as_ref(), delay) {
                let deadline = tokio::time::Instant::now() + delay;
                timer.block_on(async {
                    while bytes < self.config.max_batch_bytes {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(op)) => {
                                bytes += op.bytes();
                                batch.push(op);
                            }
                            _ => break,
                        }
                    }
                });
            }
            last_batch = batch.len();
            self.commit(batch);
        }
    }

    /// Encodes, writes, syncs and applies one batch, then answers each op. A roll
    /// splits the batch: what came before it goes to the old volume.
    fn commit(self: &Arc<Shared>, mut batch: Vec<Op>) {
        while let Some(at) = batch.iter().position(|op| matches!(op, Op::Roll { .. })) {
            let mut rest = batch.split_off(at);
            let Op::Roll { reply } = rest.remove(0) else { unreachable!("position found a roll") };
            if !batch.is_empty() {
                self.commit_batch(std::mem::take(&mut batch));
            }
            let _ = reply.send(self.roll().map(|()| true).map_err(VolumeError::Io));
            batch = rest;
        }
        if !batch.is_empty() {
            self.commit_batch(batch);
        }
    }

    /// Commits a batch without rolls.
    fn commit_batch(self: &Arc<Shared>, batch: Vec<Op>) {
        let needs_roll = {
            let state = self.read();
            state.poisoned || state.ends.get(&state.active).is_none_or(|&end| end >= self.config.volume_size)
        };
        if needs_roll {
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "cannot start a new volume");
                fail_all(batch, &e);
                return;
            }
        }
        let (active, volume, start) = {
            let state = self.read();
            let active = state.active;
            (active, state.volumes[&active].clone(), state.ends[&active])
        };
        let mut buf = Vec::with_capacity(batch.iter().map(Op::bytes).sum::<usize>() + batch.len() * 8);
        let mut changes: Vec<Change> = Vec::new();
        let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
        // What this batch did so far to each key, on top of the index.
        let mut pending: HashMap<Key, Option<(Loc, ContentHash)>> = HashMap::new();
        {
            let state = self.read();
            let current = |pending: &HashMap<Key, Option<(Loc, ContentHash)>>, key: &Key| match pending.get(key) {
                Some(p) => p.map(|(loc, hash)| (loc, Some(hash))),
                None => state.index.get(key).map(|loc| (loc, None)),
            };
            for op in batch {
                let offset = start + buf.len() as u64;
                let at = |len: u32, policy| Loc::new(active, offset as u32, len, policy);
                match op {
                    Op::Put { hash, shard, policy, data, reply } => {
                        let Some(key) = Key::new(&hash, shard) else {
                            let _ = reply.send(Err(VolumeError::ShardIndex(shard)));
                            continue;
                        };
                        let len = data.len() as u32;
                        let outcome = match current(&pending, &key) {
                            Some((loc, known)) => {
                                let stored_hash = match known {
                                    Some(h) => Ok(h),
                                    None => stored_hash(&state, loc),
                                };
                                match stored_hash {
                                    Ok(h) if h != hash => {
                                        let _ = reply.send(Err(VolumeError::Collision { hash, shard }));
                                        continue;
                                    }
                                    Ok(_) if loc.data_len() == len && (policy.is_none() || loc.policy() == policy) => {
                                        answers.push(Answer::Put(reply, Ok(PutOutcome::AlreadyStored)));
                                        continue;
                                    }
                                    // Another identity, or a record that does not check: replace.
                                    _ => PutOutcome::Replaced,
                                }
                            }
                            None => match self.probe.as_ref().map(|p| p(&hash, shard, u64::from(len), policy)) {
                                Some(FileProbe::Same) => {
                                    answers.push(Answer::Put(reply, Ok(PutOutcome::AlreadyStored)));
                                    continue;
                                }
                                Some(FileProbe::Other) => PutOutcome::ReplacedFile,
                                Some(FileProbe::Absent) | None => PutOutcome::New,
                            },
                        };
                        let loc = at(len, policy);
                        record::encode_shard(&mut buf, &hash, shard, policy, &data);
                        pending.insert(key, Some((loc, hash)));
                        changes.push(Change::Insert(key, loc));
                        answers.push(Answer::Put(reply, Ok(outcome)));
                    }
                    Op::Delete { hash, shard, reply } => {
                        let Some(key) = Key::new(&hash, shard) else {
                            answers.push(Answer::Flag(reply, Ok(false)));
                            continue;
                        };
                        match current(&pending, &key) {
                            Some((loc, _)) => {
                                record::encode_tombstone(&mut buf, &hash, shard, loc.volume(), loc.offset());
                                pending.insert(key, None);
                                changes.push(Change::Remove(key, loc.volume(), loc.offset()));
                                answers.push(Answer::Flag(reply, Ok(true)));
                            }
                            None => answers.push(Answer::Flag(reply, Ok(false))),
                        }
                    }
                    Op::Move { key, from, header, raw, reply } => match current(&pending, &key) {
                        Some((loc, _)) if (loc.volume(), loc.offset()) == from => {
                            let loc = at(header.len, header.policy);
                            record::append_raw(&mut buf, &raw);
                            pending.insert(key, Some((loc, header.hash)));
                            changes.push(Change::Insert(key, loc));
                            answers.push(Answer::Flag(reply, Ok(true)));
                        }
                        _ => answers.push(Answer::Flag(reply, Ok(false))),
                    },
                    Op::Roll { reply } => answers.push(Answer::Flag(reply, Ok(false))),
                    Op::CopyTombstone { target, raw, reply } => {
                        if state.volumes.contains_key(&target) {
                            record::append_raw(&mut buf, &raw);
                            answers.push(Answer::Flag(reply, Ok(true)));
                        } else {
                            answers.push(Answer::Flag(reply, Ok(false)));
                        }
                    }
                }
            }
        }
        if !buf.is_empty() {
            #[cfg(test)]
            if self.fail_next_write.swap(false, Ordering::Relaxed) {
                // Half the batch reaches the file, then the disk is full.
                let _ = volume.file.write_all_at(&buf[..buf.len() / 2], start);
                self.write().poisoned = true;
                cut_back(&volume.file, active, start);
                let e = io::Error::new(io::ErrorKind::StorageFull, "injected: no space left on device");
                answers.into_iter().for_each(|a| a.fail(&e));
                return;
            }
            let written = volume
                .file
                .write_all_at(&buf, start)
                .and_then(|()| rustix::fs::fdatasync(&volume.file).map_err(io::Error::from));
            if let Err(e) = written {
                // After a failed write or sync the file's state is unknown: never
                // append to it again.
                tracing::error!(volume = active, error = %e, "volume write failed; starting a new volume");
                self.write().poisoned = true;
                cut_back(&volume.file, active, start);
                for answer in answers {
                    answer.fail(&e);
                }
                return;
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
            self.synced_ops.fetch_add(answers.len() as u64, Ordering::Relaxed);
            let mut state = self.write();
            for change in changes {
                match change {
                    Change::Insert(key, loc) => {
                        state.index.insert(key, loc);
                    }
                    Change::Remove(key, volume, offset) => {
                        state.index.remove_at(&key, volume, offset);
                    }
                }
            }
            state.ends.insert(active, start + buf.len() as u64);
            state.appended_since_checkpoint += buf.len() as u64;
            // A checkpoint rewrites the whole index (31 bytes a shard): at most a
            // quarter as many bytes as were appended since the last, so that its
            // cost stays a fraction of the writes it covers, and the tail a restart
            // scans stays at most four times the checkpoint's size.
            let due = self.config.checkpoint_every.max(state.index.len() as u64 * 31 * 4);
            if state.appended_since_checkpoint >= due {
                state.appended_since_checkpoint = 0;
                let me = self.clone();
                let spawned = std::thread::Builder::new().name("cairn-checkpoint".into()).spawn(move || {
                    if let Err(e) = me.checkpoint() {
                        tracing::warn!(error = %e, "index checkpoint failed; a restart will scan more");
                    }
                });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start the checkpoint thread");
                }
            }
        }
        for answer in answers {
            answer.send();
        }
    }

    /// Writes the checkpoint: snapshot under the read lock, then sync and rename.
    fn checkpoint(&self) -> io::Result<()> {
        let Ok(_one) = self.checkpointing.try_lock() else { return Ok(()) };
        let tmp = self.dir.join("index.tmp");
        let file = File::create(&tmp)?;
        {
            let state = self.read();
            state.index.write_checkpoint(&state.ends, &file)?;
        }
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(CHECKPOINT))?;
        sync_dir(&self.dir)
    }
}

/// Cuts a volume whose batch failed back to the end of its valid log, so that a
/// restart's scan does not index records whose writers were told they failed
/// (after a delete of the same shard elsewhere, they would come back). Best effort:
/// the disk just failed.
/// How long a batch waits for more ops when `writers` ops came in this batch or the
/// last (the larger): none for up to [`COMMIT_SIBLINGS`], else `per_writer` for each
/// beyond the first, at most [`MAX_COMMIT_DELAY`].
fn commit_delay(per_writer: Duration, writers: usize) -> Option<Duration> {
    if writers <= COMMIT_SIBLINGS || per_writer.is_zero() {
        return None;
    }
    let others = u32::try_from(writers - 1).unwrap_or(u32::MAX);
    Some(per_writer.checked_mul(others).map_or(MAX_COMMIT_DELAY, |d| d.min(MAX_COMMIT_DELAY)))
}

fn cut_back(file: &File, volume: u32, end: u64) {
    if let Err(e) = file.set_len(end).and_then(|()| file.sync_all()) {
        tracing::error!(volume, error = %e, "cannot cut a failed batch off its volume; a restart may index its records");
    }
}

/// The full hash of the record at `loc` (from its header).
fn stored_hash(state: &State, loc: Loc) -> Result<ContentHash, VolumeError> {
    let volume = state.volumes.get(&loc.volume()).ok_or(VolumeError::Stopped)?;
    let mut h = [0u8; HEADER_LEN];
    if read_up_to(&volume.file, &mut h, u64::from(loc.offset()))? < HEADER_LEN {
        return Err(VolumeError::Corrupt {
            volume: loc.volume(),
            offset: loc.offset(),
            reason: RecordError::HeaderChecksum,
        });
    }
    record::decode_header(&h).map(|h| h.hash).map_err(|reason| VolumeError::Corrupt {
        volume: loc.volume(),
        offset: loc.offset(),
        reason,
    })
}

/// An index change a batch makes once durable.
enum Change {
    Insert(Key, Loc),
    Remove(Key, u32, u32),
}

/// An answer a batch gives once durable.
enum Answer {
    Put(Reply<PutOutcome>, Result<PutOutcome, VolumeError>),
    Flag(Reply<bool>, Result<bool, VolumeError>),
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Put(reply, result) => drop(reply.send(result)),
            Answer::Flag(reply, result) => drop(reply.send(result)),
        }
    }

    fn fail(self, e: &io::Error) {
        let err = || VolumeError::Io(io::Error::new(e.kind(), e.to_string()));
        match self {
            Answer::Put(reply, _) => drop(reply.send(Err(err()))),
            Answer::Flag(reply, _) => drop(reply.send(Err(err()))),
        }
    }
}

fn fail_all(batch: Vec<Op>, e: &io::Error) {
    let err = || VolumeError::Io(io::Error::new(e.kind(), e.to_string()));
    for op in batch {
        match op {
            Op::Put { reply, .. } => drop(reply.send(Err(err()))),
            Op::Delete { reply, .. }
            | Op::Move { reply, .. }
            | Op::CopyTombstone { reply, .. }
            | Op::Roll { reply } => drop(reply.send(Err(err()))),
        }
    }
}
