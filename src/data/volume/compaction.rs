//! Compaction of sealed volumes: each record the index still points at (and each
//! tombstone whose target still exists) is sent to the committer as a move, then
//! the emptied volume is removed (see "Compaction" in [`super`]).

use std::fs;
use std::io;

use tokio::sync::oneshot;

use super::committer::Op;
use super::index::Key;
use super::record::{Kind, VOLUME_HEADER_LEN};
use super::recovery::scan;
use super::{sync_dir, Compaction, State, VolumeError, VolumeStore, ROLL_DEAD_BYTES};

impl VolumeStore {
    /// Compacts every sealed volume whose dead share reaches
    /// [`VolumeConfig::compact_dead_ratio`], or that is smaller than an eighth of a
    /// volume (what restarts leave behind), oldest first. An active volume that is
    /// itself that dead (after many deletes it is mostly tombstones) and holds at
    /// least [`ROLL_DEAD_BYTES`] (or an eighth of a volume) of dead bytes is sealed first, so that it is
    /// compacted in the same round: its tombstones go once the volumes they point
    /// into are gone. Returns what was done, per volume.
    ///
    /// [`VolumeConfig::compact_dead_ratio`]: super::VolumeConfig::compact_dead_ratio
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
            self.ask_blocking(|reply| Op::Roll { reply })?;
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
