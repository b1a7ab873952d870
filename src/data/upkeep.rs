//! The data server's background upkeep, as [`Worker`]s beside the scrubber: the
//! [`TempCleaner`] removes stale temp shards and old `garbage/` entries, the
//! [`Compactor`] compacts the volumes that are due. Spawned by [`super::serve`] on
//! the server's [`crate::worker::Workers`], so each has a status, pause, resume and
//! a trigger (`/workers/<name>`, see [`super::admin`]) and the `cairn_worker_*`
//! metrics; the disk work runs on blocking threads ([`super::blocking`]).
//!
//! Both wait a whole period before their first round, as the loops they replace
//! did: the runner runs a first step at once, which only marks the start. A
//! trigger runs a round at any time.

use std::time::Duration;

use async_trait::async_trait;

use super::blocking;
use super::store::{ShardStore, StoreError};
use super::volume;
use super::wire::Compacted;
use crate::worker::{Report, Step, StepError, Worker};

/// The temp cleaner's name in status, metrics and `/workers/<name>`.
pub const TEMP_CLEANER: &str = "temp-cleaner";
/// The compactor's name in status, metrics and `/workers/<name>`.
pub const COMPACTOR: &str = "compactor";

/// Why a round of upkeep failed (it is tried again after a backoff).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpkeepError {
    /// Stale temp shards could not be removed.
    #[error("temp cleaning failed")]
    Temps(#[source] StoreError),
    /// Old `garbage/` entries could not be removed.
    #[error("garbage cleaning failed")]
    Garbage(#[source] StoreError),
    /// The volumes due could not be compacted.
    #[error("compaction failed")]
    Compaction(#[source] StoreError),
}

/// Removes temp shards untouched for longer than the temp TTL and `garbage/`
/// entries older than the garbage TTL, every quarter of the temp TTL (at least a
/// second).
pub struct TempCleaner {
    store: ShardStore,
    ttl: Duration,
    garbage_ttl: Duration,
    /// Whether the first step (which only marks the start) has run.
    started: bool,
    temps_removed: u64,
    garbage_removed: u64,
}

impl TempCleaner {
    /// A cleaner of `store`'s temp shards older than `ttl` and garbage older than
    /// `garbage_ttl`.
    pub fn new(store: ShardStore, ttl: Duration, garbage_ttl: Duration) -> TempCleaner {
        TempCleaner { store, ttl, garbage_ttl, started: false, temps_removed: 0, garbage_removed: 0 }
    }
}

#[async_trait]
impl Worker for TempCleaner {
    fn name(&self) -> &'static str {
        TEMP_CLEANER
    }

    async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
        if !std::mem::replace(&mut self.started, true) {
            return Ok(Step::Idle);
        }
        let (ttl, garbage_ttl) = (self.ttl, self.garbage_ttl);
        // Both every round: a failing temp directory must not keep garbage forever.
        let temps = blocking(self.store.clone(), move |s| s.clean_stale_temps(ttl)).await;
        let garbage = blocking(self.store.clone(), move |s| s.clean_garbage(garbage_ttl)).await;
        if let Some(n) = temps.as_ref().ok().copied().filter(|&n| n > 0) {
            tracing::info!(removed = n, "removed stale temp shards");
            self.temps_removed += n as u64;
        }
        if let Some(n) = garbage.as_ref().ok().copied().filter(|&n| n > 0) {
            tracing::info!(removed = n, "removed old garbage entries");
            self.garbage_removed += n as u64;
        }
        report.info(serde_json::json!({
            "temps_removed": self.temps_removed,
            "garbage_removed": self.garbage_removed,
        }));
        temps.map_err(UpkeepError::Temps)?;
        garbage.map_err(UpkeepError::Garbage)?;
        Ok(Step::Idle)
    }

    fn interval(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_secs(1))
    }
}

/// Compacts the volumes that are due every compaction interval, and checkpoints
/// the index after.
pub struct Compactor {
    store: ShardStore,
    period: Duration,
    /// Whether the first step (which only marks the start) has run.
    started: bool,
    volumes_compacted: u64,
    bytes_freed: u64,
}

impl Compactor {
    /// A compactor of `store`'s volumes, a round every `period`.
    pub fn new(store: ShardStore, period: Duration) -> Compactor {
        Compactor { store, period, started: false, volumes_compacted: 0, bytes_freed: 0 }
    }
}

#[async_trait]
impl Worker for Compactor {
    fn name(&self) -> &'static str {
        COMPACTOR
    }

    async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
        if !std::mem::replace(&mut self.started, true) {
            return Ok(Step::Idle);
        }
        let done = blocking(self.store.clone(), compact_now).await.map_err(UpkeepError::Compaction)?;
        self.volumes_compacted += done.len() as u64;
        self.bytes_freed += done.iter().map(|c| c.freed).sum::<u64>();
        report.info(serde_json::json!({
            "volumes_compacted": self.volumes_compacted,
            "bytes_freed": self.bytes_freed,
        }));
        Ok(Step::Idle)
    }

    fn interval(&self) -> Duration {
        self.period
    }
}

/// One round of compaction: every volume that is due, what was done to each.
pub(super) fn compact_now(store: &ShardStore) -> Result<Vec<Compacted>, StoreError> {
    let Some(volumes) = store.volumes() else { return Ok(Vec::new()) };
    let io = |e: volume::VolumeError| StoreError::Io(std::io::Error::other(e));
    let done = volumes.compact_due().map_err(io)?;
    if !done.is_empty() {
        volumes.checkpoint()?;
    }
    Ok(done.into_iter().map(|(volume, c)| Compacted { volume, moved: c.moved, freed: c.freed }).collect())
}
