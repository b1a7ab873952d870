//! The write and read paths of an API server: stream a body into shards on data
//! servers and record it, or find the shards of a version and stream them back.
//!
//! [`ObjectService`] is what HTTP handlers call. It uses the cluster view (who is
//! live, who holds what), the metadata store and the data-server client; it knows
//! nothing of HTTP requests and responses. One mechanism serves replication and
//! erasure coding: a policy k+m with k = 1 is m+1 full copies ([`crate::codec`]).

pub mod cache;
pub mod compress;
pub mod hashing;
pub mod read;
pub mod repair;
pub mod resumable;
pub mod resumable_hash;
pub mod uploads;
pub mod write;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, BusError};
use crate::cluster::{self, Membership};
use crate::codec::CodecError;
use crate::content::{ContentHash, Placement, Policy, ShardIndex};
use crate::data::client::{DataClient, DataTimeouts};
use crate::meta::{ContentRecord, DeleteOutcome, MetaError, MetaStore, VersionRecord};
use crate::telemetry::{self, Scope};
use hashing::HasherFailed;
use uploads::{describe, ShardFailure};

/// Errors of the object paths, each a fact the HTTP layer maps to one status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// No such name, or no such version of it.
    #[error("no such object: {name}")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The version asked for (or the newest) is a delete marker.
    #[error("object {name} was deleted (version {version})")]
    Deleted {
        /// The name.
        name: String,
        /// The tombstone's version.
        version: u64,
    },
    /// Too few live data servers for the policy's write quorum.
    #[error("{live} live data servers, the {policy} policy needs {needed}")]
    NotEnoughServers {
        /// How many are live.
        live: usize,
        /// How many the policy needs.
        needed: usize,
        /// The policy.
        policy: Policy,
    },
    /// The body does not match the digest the client sent.
    #[error("body SHA-256 is {actual}, the request's digest header says {expected}")]
    DigestMismatch {
        /// The client's digest.
        expected: ContentHash,
        /// What the body hashes to.
        actual: ContentHash,
    },
    /// The client's body broke off (disconnect, or shorter than Content-Length).
    #[error("request body broken off: {0}")]
    BodyBroken(String),
    /// Too few shards became durable.
    #[error("only {ok} of {needed} required shards were stored: {}", describe(failures))]
    QuorumNotReached {
        /// Shards durable.
        ok: usize,
        /// Shards required.
        needed: usize,
        /// What went wrong with the others.
        failures: Vec<ShardFailure>,
    },
    /// What the shards of a full read decode to does not hash to the content's
    /// hash: some shard holds well-formed wrong bytes. Nothing wrong was served.
    #[error("content {hash} read back as {actual}: a shard holds wrong bytes")]
    ContentMismatch {
        /// The content asked for.
        hash: ContentHash,
        /// What the bytes read hash to.
        actual: ContentHash,
    },
    /// The erasure codec refused (a bug or corrupt geometry, not a peer's fault).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Hashing failed (its thread died).
    #[error(transparent)]
    Hasher(#[from] HasherFailed),
    /// Compressing failed (libzstd refused, or its thread died).
    #[error(transparent)]
    Compression(#[from] crate::codec::seekable::SeekableError),
    /// No holder of any shard could serve the content.
    #[error("content {hash} is unavailable: {reasons}")]
    Unavailable {
        /// The content.
        hash: ContentHash,
        /// What each attempt ran into.
        reasons: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What kind of failure an [`ObjectError`] is for the client that caused it: the
/// one classification every front door maps to its own words (a native status,
/// an S3 error code), so the doors cannot disagree on which failures are the
/// client's, which are worth a retry, and which are cairn's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// What was asked for is not there (no such name, a deleted one, no such bucket).
    Missing,
    /// The request's body or digest is wrong: the client's to fix.
    BadRequest,
    /// A conditional write's condition no longer held.
    PreconditionFailed,
    /// The cluster cannot serve it now (too few data servers, a lost quorum, a
    /// store or bus that is down, content being collected): retry later.
    Unavailable,
    /// Anything else: a fault of cairn's own.
    Internal,
}

impl ObjectError {
    /// Its [`FailureKind`].
    pub fn kind(&self) -> FailureKind {
        match self {
            ObjectError::NotFound { .. }
            | ObjectError::Deleted { .. }
            | ObjectError::Meta(MetaError::NoSuchBucket { .. }) => FailureKind::Missing,
            ObjectError::DigestMismatch { .. } | ObjectError::BodyBroken(_) => FailureKind::BadRequest,
            ObjectError::Meta(MetaError::PreconditionFailed { .. }) => FailureKind::PreconditionFailed,
            ObjectError::NotEnoughServers { .. }
            | ObjectError::QuorumNotReached { .. }
            | ObjectError::Unavailable { .. }
            | ObjectError::ContentMismatch { .. }
            | ObjectError::Bus(_)
            | ObjectError::Meta(MetaError::Unavailable(_))
            | ObjectError::Meta(MetaError::ContentDeleting { .. }) => FailureKind::Unavailable,
            _ => FailureKind::Internal,
        }
    }
}

/// Settings of the object paths.
#[derive(Clone, Debug)]
pub struct ObjectConfig {
    /// Redundancy for new content of at least `small_threshold` bytes.
    pub policy: Policy,
    /// Redundancy for smaller content, where a stripe per shard would cost more disk
    /// operations than it saves space.
    pub small_policy: Policy,
    /// Objects below this many bytes use `small_policy`.
    pub small_threshold: u64,
    /// How long a locate waits for replies at most.
    pub locate_timeout: Duration,
    /// Bytes of small objects each API server keeps in memory (0: no cache).
    pub cache_bytes: u64,
    /// Deadlines of every exchange with a data server.
    pub data_timeouts: DataTimeouts,
    /// How new content is compressed (README, "Compression").
    pub compression: compress::CompressionConfig,
    /// The cluster secret every request to a data server is signed with; `None`:
    /// an open data tier ([`crate::secret`]).
    pub cluster_secret: Option<crate::secret::ClusterSecret>,
}

/// The object paths of one API server. Cheap to clone.
#[derive(Clone)]
pub struct ObjectService {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) bus: Bus,
    pub(crate) membership: Membership,
    pub(crate) client: DataClient,
    pub(crate) config: ObjectConfig,
    pub(crate) cache: Arc<cache::ContentCache>,
    /// Seek tables of compressed content read lately.
    pub(crate) seek_tables: Arc<cache::SeekTableCache>,
    pub(crate) repairs: repair::RepairQueue,
    /// Owns every background task of the object paths (repairs, write stragglers,
    /// clean-up of abandoned uploads).
    pub(crate) tasks: TaskTracker,
    /// Its metric handles.
    pub(crate) metrics: ObjectMetrics,
    shutdown: CancellationToken,
}

/// The object paths' metric handles, made once from the API server's [`Scope`].
#[derive(Clone, Debug)]
pub(crate) struct ObjectMetrics {
    pub(crate) scope: Scope,
    pub(crate) shards_written: metrics::Counter,
    pub(crate) shards_repaired: metrics::Counter,
    pub(crate) cache_hits: metrics::Counter,
    pub(crate) cache_misses: metrics::Counter,
    pub(crate) uploads_created: metrics::Counter,
    pub(crate) upload_bytes: metrics::Counter,
    pub(crate) uploads_finished: metrics::Counter,
}

impl ObjectMetrics {
    fn new(scope: Scope) -> ObjectMetrics {
        ObjectMetrics {
            shards_written: scope.counter(telemetry::SHARDS_WRITTEN),
            shards_repaired: scope.counter(telemetry::SHARDS_REPAIRED),
            cache_hits: scope.counter(telemetry::CACHE_HITS),
            cache_misses: scope.counter(telemetry::CACHE_MISSES),
            uploads_created: scope.counter(telemetry::UPLOADS_CREATED),
            upload_bytes: scope.counter(telemetry::UPLOAD_BYTES),
            uploads_finished: scope.counter(telemetry::UPLOADS_FINISHED),
            scope,
        }
    }
}

impl ObjectService {
    /// Wires the object paths to their collaborators; background work stops when
    /// `shutdown` is cancelled ([`ObjectService::stopped`] waits for it). Repairs
    /// queue up until [`ObjectService::start_repair`] starts their worker. Metrics
    /// are recorded under `scope` (the API server's labels).
    pub fn new(
        meta: Arc<dyn MetaStore>,
        bus: Bus,
        membership: Membership,
        config: ObjectConfig,
        shutdown: CancellationToken,
        scope: Scope,
    ) -> Self {
        let cache = Arc::new(cache::ContentCache::new(config.cache_bytes));
        let client = DataClient::new(config.data_timeouts).with_secret(config.cluster_secret.clone());
        ObjectService {
            meta,
            bus,
            membership,
            client,
            config,
            cache,
            seek_tables: Arc::new(cache::SeekTableCache::new(cache::SEEK_TABLE_BUDGET)),
            repairs: repair::RepairQueue::default(),
            tasks: TaskTracker::new(),
            metrics: ObjectMetrics::new(scope),
            shutdown,
        }
    }

    /// Waits (at most `grace`) for the background work to stop once the shutdown
    /// token is cancelled.
    pub async fn stopped(&self, grace: Duration) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(tasks = self.tasks.len(), "background work still running at shutdown; dropping it");
        }
    }

    /// How the repair worker is doing.
    pub fn repair_status(&self) -> repair::RepairStatus {
        self.repairs.status()
    }

    /// The labels its metrics are recorded under.
    pub fn telemetry_scope(&self) -> &Scope {
        &self.metrics.scope
    }

    /// The cluster view this service writes by.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The version `version` of `bucket/name`, or its newest; tombstones are errors.
    pub async fn find(&self, bucket: &str, name: &str, version: Option<u64>) -> Result<VersionRecord, ObjectError> {
        let found = match version {
            Some(v) => self.meta.version(bucket, name, v).await?,
            None => self.meta.latest(bucket, name).await?,
        };
        let record = found.ok_or_else(|| ObjectError::NotFound { name: name.to_string() })?;
        if record.is_tombstone() {
            return Err(ObjectError::Deleted { name: name.to_string(), version: record.version });
        }
        Ok(record)
    }

    /// Asks the bus where the shards of `content` are now, and returns one holder per
    /// shard found. Always goes to the bus; the recorded placement is not consulted.
    pub async fn locate(&self, content: &ContentRecord) -> Result<Placement, ObjectError> {
        Ok(first_holders(&self.holders(content).await?))
    }

    /// Asks the bus who holds which shards of `content` now: every live holder of
    /// each shard index inside its policy (repair and the garbage collector need
    /// them all, not one per shard).
    pub async fn holders(&self, content: &ContentRecord) -> Result<cluster::Holders, ObjectError> {
        let n = content.policy.shards();
        Ok(cluster::locate(&self.bus, &self.membership, content.hash, n, self.config.locate_timeout).await?)
    }
}

/// One holder per shard: the first that answered.
fn first_holders(holders: &cluster::Holders) -> Placement {
    holders.iter().filter_map(|(shard, addrs)| Some((*shard as ShardIndex, addrs.first()?.clone()))).collect()
}

impl ObjectService {
    /// Reacts to a read whose bytes did not hash to the content: schedules a
    /// verifying repair, which finds the shard that holds wrong bytes (by reading
    /// the content again without each shard the failed read used, until it hashes
    /// right), has its data server move it aside, and rebuilds it from the others.
    /// Only the bad shard is set aside: with erasure coding a read uses k shards,
    /// and setting all of them aside for one bad one would leave too few to rebuild
    /// from.
    pub(crate) fn reject_read(&self, content: &ContentRecord) {
        tracing::error!(hash = %content.hash, "a read of this content does not match its hash; verifying its shards");
        self.schedule_verify(content.clone());
    }
}

impl ObjectService {
    /// Adds a tombstone version to `bucket/name`; a name that does not exist or is
    /// already deleted is `NotFound` or `Deleted`, checked atomically with the add.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<VersionRecord, ObjectError> {
        match self.meta.delete(bucket, name).await? {
            DeleteOutcome::Deleted(record) => Ok(record),
            DeleteOutcome::NoSuchName => Err(ObjectError::NotFound { name: name.to_string() }),
            DeleteOutcome::AlreadyDeleted { version } => Err(ObjectError::Deleted { name: name.to_string(), version }),
        }
    }
}

impl ObjectService {
    /// Up to `limit` versions of `bucket/name` numbered above `after`, oldest first
    /// (tombstones included).
    pub async fn versions(
        &self,
        bucket: &str,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, ObjectError> {
        Ok(self.meta.versions(bucket, name, after, limit).await?)
    }

    /// Up to `limit` current, non-deleted names of `bucket` starting with `prefix`,
    /// after `after`, in name order.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, ObjectError> {
        Ok(self.meta.list(bucket, prefix, after, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_door_reads_one_classification_of_failures() {
        let name = || "a".to_string();
        assert_eq!(ObjectError::NotFound { name: name() }.kind(), FailureKind::Missing);
        assert_eq!(ObjectError::Meta(MetaError::NoSuchBucket { bucket: name() }).kind(), FailureKind::Missing);
        assert_eq!(ObjectError::BodyBroken("reset".into()).kind(), FailureKind::BadRequest);
        assert_eq!(
            ObjectError::Meta(MetaError::PreconditionFailed { bucket: name(), name: name() }).kind(),
            FailureKind::PreconditionFailed
        );
        assert_eq!(ObjectError::Meta(MetaError::Unavailable("down".into())).kind(), FailureKind::Unavailable);
        assert_eq!(
            ObjectError::Unavailable { hash: ContentHash::of(b"x"), reasons: String::new() }.kind(),
            FailureKind::Unavailable
        );
    }
}
