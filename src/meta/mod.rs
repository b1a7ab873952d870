//! The metadata store: bucket + name → versions → content (hash, size, policy,
//! placement). The API tier's only durable state; data servers never touch it.
//!
//! [`MetaStore`] is the one trait; [`sqlite`] is the embedded implementation (one
//! host, several processes sharing one file) and [`postgres`] the one shared by API
//! servers on several hosts. Every implementation passes the behavioural suite
//! in `tests/common/meta_suite.rs` (test support, not in the library). Content is recorded once per hash (dedup), and a
//! version points at it; a tombstone version points at nothing.

pub mod postgres;
mod row;
pub mod sqlite;

use async_trait::async_trait;

use crate::content::{ContentHash, Placement, Policy};

/// The bucket behind the seed's flat `/objects/<name>` interface.
pub const DEFAULT_BUCKET: &str = "default";

/// A piece of stored content: what a version points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRecord {
    /// The SHA-256 of the content.
    pub hash: ContentHash,
    /// The content's length in bytes.
    pub size: u64,
    /// The redundancy it was written with.
    pub policy: Policy,
    /// Where its shards were written (may be stale).
    pub placement: Placement,
}

/// One version of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    /// The bucket.
    pub bucket: String,
    /// The object's name within the bucket.
    pub name: String,
    /// 1, 2, 3 … in the order the store accepted the writes, without gaps.
    pub version: u64,
    /// The content, or `None` for a tombstone (a delete).
    pub content: Option<ContentRecord>,
    /// When the version was added, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

impl VersionRecord {
    /// Whether this version is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.content.is_none()
    }
}

/// What [`MetaStore::delete`] found, and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The tombstone was added as the name's newest version.
    Deleted(VersionRecord),
    /// The name has no version at all; nothing was added.
    NoSuchName,
    /// The name's newest version is already a tombstone; nothing was added.
    AlreadyDeleted {
        /// The newest version: the tombstone that is already there.
        version: u64,
    },
}

/// Errors of a metadata store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The store cannot be reached or is busy beyond its timeout: retry later (503).
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something this binary cannot read (a corrupt row, a newer
    /// schema): an operator must look (500).
    #[error("metadata store is inconsistent: {0}")]
    Corrupt(String),
    /// Opening or migrating the store failed.
    #[error("cannot open metadata store {url:?}: {reason}")]
    Open {
        /// The store's URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The metadata store. Every method is atomic; a version is visible to every other
/// user of the same store as soon as [`put_version`](MetaStore::put_version)
/// returns (read-after-write across API servers).
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Adds the next version of `bucket/name`, pointing at `content` (recorded or
    /// updated by hash) or, with `None`, a tombstone. Version numbers are assigned by
    /// the store: concurrent writers get distinct, gap-free numbers.
    async fn put_version(
        &self,
        bucket: &str,
        name: &str,
        content: Option<&ContentRecord>,
    ) -> Result<VersionRecord, MetaError>;

    /// Adds a tombstone as the next version of `bucket/name` if and only if the
    /// name exists and its newest version is not a tombstone already. The check and
    /// the insert are one atomic step: of concurrent deletes of one name, through
    /// any number of stores on one database, exactly one adds a tombstone and the
    /// others get [`DeleteOutcome::AlreadyDeleted`].
    async fn delete(&self, bucket: &str, name: &str) -> Result<DeleteOutcome, MetaError>;

    /// The newest version of `bucket/name` (possibly a tombstone), or `None`.
    async fn latest(&self, bucket: &str, name: &str) -> Result<Option<VersionRecord>, MetaError>;

    /// Version `version` of `bucket/name`, or `None`.
    async fn version(&self, bucket: &str, name: &str, version: u64) -> Result<Option<VersionRecord>, MetaError>;

    /// Up to `limit` versions of `bucket/name` numbered above `after`, oldest first.
    async fn versions(
        &self,
        bucket: &str,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError>;

    /// The recorded content with this hash, or `None`.
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError>;

    /// Replaces the recorded placement of `hash` (after a repair or a locate found the
    /// shards elsewhere). Unknown hashes are ignored.
    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError>;

    /// Up to `limit` names of `bucket` starting with `prefix` and sorting after
    /// `after`, in name order, each with its newest version, skipping names whose
    /// newest version is a tombstone.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError>;
}

/// Opens the store named by `url`: `sqlite:PATH` (created when missing), or
/// `postgres://…` / `postgresql://…` (a PostgreSQL database; its cairn-specific
/// `schema=NAME` parameter is described in [`postgres`]).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn MetaStore>, MetaError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let store = sqlite::SqliteStore::open(std::path::Path::new(path)).await?;
        return Ok(std::sync::Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::open(url).await?;
        return Ok(std::sync::Arc::new(store));
    }
    Err(MetaError::Open {
        url: url.to_string(),
        reason: "unsupported scheme (expected sqlite:PATH or postgres://…)".into(),
    })
}
