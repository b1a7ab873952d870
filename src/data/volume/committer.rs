//! The volume store's committer: the one thread that writes. It gathers waiting
//! ops into a batch (waiting a little more when many writers are about), encodes
//! them into one buffer, writes it with one `pwrite` and one `fdatasync`, and only
//! then updates the index and answers every op (see "Group commit" in [`super`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::index::{Key, Loc};
use super::read::read_up_to;
use super::record::{self, RecordError, HEADER_LEN, VOLUME_HEADER_LEN};
use super::{
    sync_dir, volume_path, FileProbe, PutOutcome, Shared, State, Volume, VolumeError, COMMIT_SIBLINGS, MAX_COMMIT_DELAY,
};
use crate::content::{ContentHash, Policy, ShardIndex};

/// A change for the committer.
pub(super) enum Op {
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

pub(super) type Reply<T> = oneshot::Sender<Result<T, VolumeError>>;

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Put { data, .. } => data.len() + HEADER_LEN,
            Op::Move { raw, .. } | Op::CopyTombstone { raw, .. } => raw.len(),
            Op::Delete { .. } | Op::Roll { .. } => HEADER_LEN,
        }
    }
}

impl Shared {
    /// Starts a new active volume: header written and synced, directory synced.
    pub(super) fn roll(&self) -> io::Result<()> {
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
    pub(super) fn run(self: Arc<Shared>, mut rx: mpsc::Receiver<Op>) {
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
}

/// How long a batch waits for more ops when `writers` ops came in this batch or the
/// last (the larger): none for up to [`COMMIT_SIBLINGS`], else `per_writer` for each
/// beyond the first, at most [`MAX_COMMIT_DELAY`].
pub(super) fn commit_delay(per_writer: Duration, writers: usize) -> Option<Duration> {
    if writers <= COMMIT_SIBLINGS || per_writer.is_zero() {
        return None;
    }
    let others = u32::try_from(writers - 1).unwrap_or(u32::MAX);
    Some(per_writer.checked_mul(others).map_or(MAX_COMMIT_DELAY, |d| d.min(MAX_COMMIT_DELAY)))
}

/// Cuts a volume whose batch failed back to the end of its valid log, so that a
/// restart's scan does not index records whose writers were told they failed
/// (after a delete of the same shard elsewhere, they would come back). Best effort:
/// the disk just failed.
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
        match self {
            Answer::Put(reply, _) => drop(reply.send(Err(failed(e)))),
            Answer::Flag(reply, _) => drop(reply.send(Err(failed(e)))),
        }
    }
}

fn fail_all(batch: Vec<Op>, e: &io::Error) {
    for op in batch {
        match op {
            Op::Put { reply, .. } => drop(reply.send(Err(failed(e)))),
            Op::Delete { reply, .. }
            | Op::Move { reply, .. }
            | Op::CopyTombstone { reply, .. }
            | Op::Roll { reply } => drop(reply.send(Err(failed(e)))),
        }
    }
}

/// The error each op of a failed batch is answered with: its own copy of the
/// write's error (an `io::Error` cannot be cloned), same kind and message.
fn failed(e: &io::Error) -> VolumeError {
    VolumeError::Io(io::Error::new(e.kind(), e.to_string()))
}
