//! The data server's background upkeep: removing stale temp shards and old
//! `garbage/` entries, and compacting the volumes that are due. Started by
//! [`super::serve`]; the disk work runs on blocking threads ([`super::blocking`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::blocking;
use super::store::{ShardStore, StoreError};
use super::volume;
use super::wire::Compacted;

/// Compacts the volumes that are due every `period`, and checkpoints after.
pub(super) async fn compact_volumes(store: ShardStore, period: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = blocking(store.clone(), compact_now).await {
            tracing::warn!(error = %e, "compaction failed; will try again");
        }
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

/// Removes stale temp shards (older than `ttl`) and old `garbage/` entries (older
/// than `garbage_ttl`), every quarter of `ttl`.
pub(super) async fn clean_temps(store: ShardStore, ttl: Duration, garbage_ttl: Duration, shutdown: CancellationToken) {
    let period = (ttl / 4).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match blocking(store.clone(), move |s| s.clean_stale_temps(ttl)).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "removed stale temp shards"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "temp cleaning failed"),
        }
        match blocking(store.clone(), move |s| s.clean_garbage(garbage_ttl)).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "removed old garbage entries"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "garbage cleaning failed"),
        }
    }
}
