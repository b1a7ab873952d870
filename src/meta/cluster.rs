//! What the cluster's background work keeps in the metadata store:
//! [`ClusterStore`], the placements and their index by server, the data servers'
//! sightings, leases and workers' checkpoints. The stores implement it once, in `sql/cluster.rs`, over either executor.

use async_trait::async_trait;

use super::{ContentRecord, MetaError};
use crate::content::{ContentHash, Placement};

/// What the cluster's workers keep: placements and the placement index, the data
/// servers' sightings, leases and workers' checkpoints.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Replaces the recorded placement of `hash` (after a repair or a locate found the
    /// shards elsewhere), and its placement index rows with it. Unknown hashes are
    /// ignored.
    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError>;

    /// Placement by server: contents whose recorded placement names `server`, hash
    /// order after `after`, at most `limit`. Kept by put_version / set_placement /
    /// finish_delete in the same transaction as the placement itself.
    async fn contents_on(
        &self,
        server: &str,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError>;

    /// Every server named in some placement, with how many shards it is recorded to
    /// hold, in server order.
    async fn placement_servers(&self) -> Result<Vec<(String, u64)>, MetaError>;

    /// Records that `servers` were seen live at `now_ms` (last_seen = max(old, now)).
    async fn saw_servers(&self, servers: &[String], now_ms: i64) -> Result<(), MetaError>;

    /// Every server ever recorded with its last-seen time (ms), in server order.
    async fn server_sightings(&self) -> Result<Vec<(String, i64)>, MetaError>;

    /// Forgets a server's sighting (after it is re-protected and no placement names
    /// it).
    async fn forget_server(&self, server: &str) -> Result<(), MetaError>;

    /// Takes or renews the lease `name` for `holder` for `ttl`: true when `holder`
    /// holds it after the call (it was free, expired, or already `holder`'s). Atomic
    /// across every store on one database (PostgreSQL: the database's clock).
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool, MetaError>;

    /// Gives the lease up if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError>;

    /// The lease's holder now, if any holds it unexpired (for status).
    async fn lease_holder(&self, name: &str) -> Result<Option<String>, MetaError>;

    /// A worker's checkpoint (resumable work): an opaque string by worker name.
    async fn worker_cursor(&self, name: &str) -> Result<Option<String>, MetaError>;

    /// Sets (`Some`) or clears (`None`) a worker's checkpoint.
    async fn set_worker_cursor(&self, name: &str, value: Option<&str>) -> Result<(), MetaError>;
}
