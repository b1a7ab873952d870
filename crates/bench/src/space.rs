//! Space after deletes, at the storage level: the volume store of one data server
//! ([`cairn::data::volume::VolumeStore`], opened directly in a directory of the
//! suite's) is filled with small shards, 90% of them are deleted, and one round of
//! compaction runs; the report compares the disk the volumes take with the live
//! bytes. No HTTP and no cluster: what is measured is the engine's bookkeeping, not
//! the network.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::content::{ContentHash, Policy};
use cairn::data::volume::{VolumeConfig, VolumeStore};

/// What one run found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpaceAfterDeletes {
    /// Shards written.
    pub shards: u64,
    /// Bytes of each.
    pub size: u64,
    /// Shards deleted.
    pub deleted: u64,
    /// Payload bytes of the shards left.
    pub live_payload: u64,
    /// Allocated bytes of the volumes after writing.
    pub disk_full: u64,
    /// ... after deleting (tombstones appended, nothing freed yet).
    pub disk_deleted: u64,
    /// ... after one round of compaction.
    pub disk_compacted: u64,
    /// Bytes of the index checkpoint after compaction.
    pub index_file: u64,
    /// How long the round of compaction took.
    pub compaction: Duration,
}

impl SpaceAfterDeletes {
    /// Disk after compaction over live payload, minus one: the overhead the target
    /// (15%) bounds.
    pub fn overhead(&self) -> f64 {
        self.disk_compacted as f64 / self.live_payload.max(1) as f64 - 1.0
    }
}

/// Allocated bytes (`st_blocks` × 512, as `du --block-size=1` counts) of the
/// volume files in `dir`.
pub fn volume_disk_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "vol") {
            total += entry.metadata()?.blocks() * 512;
        }
    }
    Ok(total)
}

/// Writes `shards` shards of `size` bytes (16 writers), deletes 9 in 10, compacts
/// once, in a volume store under `dir` (removed after).
pub fn space_after_deletes(dir: &Path, shards: u64, size: usize) -> anyhow::Result<SpaceAfterDeletes> {
    let _ = std::fs::remove_dir_all(dir);
    let store = VolumeStore::open(dir, VolumeConfig::default(), None)?;
    let policy = Some(Policy { k: 1, m: 2 });
    let shard = |i: u64| {
        let mut data = vec![0u8; size];
        for (n, chunk) in data.chunks_mut(8).enumerate() {
            let word = (i << 20 | n as u64).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        (ContentHash::of(&data), Bytes::from(data))
    };
    const WRITERS: u64 = 16;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    for i in (w..shards).step_by(WRITERS as usize) {
                        let (hash, data) = shard(i);
                        store.put_blocking(hash, 0, policy, data)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    let disk_full = volume_disk_bytes(dir)?;
    let mut deleted = 0;
    for i in (0..shards).filter(|i| i % 10 != 0) {
        let (hash, _) = shard(i);
        if store.delete_blocking(&hash, 0)? {
            deleted += 1;
        }
    }
    let disk_deleted = volume_disk_bytes(dir)?;
    let started = Instant::now();
    store.compact_due()?;
    let compaction = started.elapsed();
    store.checkpoint()?;
    let disk_compacted = volume_disk_bytes(dir)?;
    let index_file = std::fs::metadata(dir.join("index")).map(|m| m.len()).unwrap_or(0);
    // Every survivor still reads back.
    for i in (0..shards).step_by(10) {
        let (hash, data) = shard(i);
        let record = store.get(&hash, 0)?.ok_or_else(|| anyhow::anyhow!("shard {i} lost by compaction"))?;
        anyhow::ensure!(record.data == data, "shard {i} reads back wrong after compaction");
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(SpaceAfterDeletes {
        shards,
        size: size as u64,
        deleted,
        live_payload: (shards - deleted) * size as u64,
        disk_full,
        disk_deleted,
        disk_compacted,
        index_file,
        compaction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_compacts_to_near_the_live_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let report = space_after_deletes(&dir.path().join("v"), 2_000, 4096).unwrap();
        assert_eq!(report.deleted, 1_800);
        assert!(report.disk_deleted >= report.disk_full);
        assert!(report.disk_compacted < report.disk_full / 5, "{report:?}");
        assert!(report.overhead() < 0.15, "{report:?}");
    }
}
