//! The metadata store: bucket + name → versions → content (hash, size, policy,
//! placement). The API tier's only durable state; data servers never touch it.
//!
//! [`MetaStore`] is the one trait; [`sqlite`] is the embedded implementation (one
//! host, several processes sharing one file) and [`postgres`] the one shared by API
//! servers on several hosts. Every implementation passes the behavioural suite
//! in `tests/common/meta_suite/` (test support, not in the library). Content is recorded once per hash (dedup), and a
//! version points at it; a tombstone version points at nothing.
//!
//! # Layout
//!
//! The trait is one per domain, each with its records, in `versions.rs`
//! ([`VersionStore`]), `content.rs` ([`ContentStore`]), `cluster.rs`
//! ([`ClusterStore`]), `uploads.rs` ([`UploadStore`]) and `s3.rs` ([`BucketStore`],
//! [`MultipartStore`], [`KeyStore`]); [`MetaStore`] is all of them, so a component
//! can ask for less. They are implemented once, in the SQL catalogue `sql/`
//! (split by the same domains, each file holding its statements and the trait's
//! implementation over them), for `SqlStore<E>` over any executor `E`
//! (`exec.rs`: run a closure on a connection, in a transaction, or grouped with
//! other writes). Where the two databases differ (row locks against SQLite's one
//! write lock, the database's clock against this host's, PostgreSQL's `heads`,
//! JSON functions), both statement texts stand side by side there, or the code
//! branches on the dialect in one place. The checks both stores make, as pure
//! functions, are in `row/`. Each store's directory keeps only its executor
//! (connections, the group commit, error classes) in `mod.rs` and its migrations
//! (the column types) in `schema.rs`.
//!
//! # Content lifecycle (garbage collection)
//!
//! Every content row has a [`ContentState`]: `live` (what
//! [`put_version`](VersionStore::put_version) always leaves), `doomed(since)` (the
//! collector found no version pointing at it) or `deleting` (the collector has
//! committed to deleting its shards). The collector marks unreferenced rows doomed
//! ([`doom_unreferenced`](ContentStore::doom_unreferenced)); a PUT that dedups onto a
//! doomed row revives it; after a grace period
//! [`begin_delete`](ContentStore::begin_delete) turns a doomed, still unreferenced
//! row into `deleting` in one atomic step with the reference check, against which
//! `put_version` of that content is serialized: it is either seen (the row goes
//! live again) or refused with [`MetaError::ContentDeleting`]. Once the shards are
//! gone [`finish_delete`](ContentStore::finish_delete) removes the row. Orphan shards
//! (no row at all) are claimed with [`claim_orphan`](ContentStore::claim_orphan), which
//! inserts a `deleting` row only where none exists. A collector that dies leaves
//! `deleting` rows, which the next one resumes ([`deleting`](ContentStore::deleting)).
//!
//! # Resumable uploads
//!
//! An upload in progress (tus, [`crate::api::tus`]) is an [`UploadRecord`] and its
//! parts ([`UploadPart`]), each part content like any other: appending parts
//! ([`append_upload`](UploadStore::append_upload)) records their content with the
//! same code `put_version` uses, in the same transaction as the compare-and-set of
//! the upload's offset. Content a part points at counts as referenced for the
//! collector (`doom_unreferenced`, `begin_delete`), so a live upload's bytes are
//! never collected; once the upload is finished or removed its part rows go and
//! the content is collected like any unreferenced content.
//!
//! An upload lands in a bucket that exists: [`create_upload`](UploadStore::create_upload)
//! and [`finish_upload`](UploadStore::finish_upload) check it in their transaction,
//! and [`delete_bucket`](BucketStore::delete_bucket) removes the bucket's open
//! uploads (tus and S3 multipart, with their parts) with the bucket, as S3 aborts
//! a deleted bucket's multipart uploads.
//!
//! Beside that, the stores keep a placement index (server → content, kept in the
//! same transaction as the placement itself), the servers' last sightings, leases
//! (one collector at a time across API servers) and workers' checkpoints.

mod cluster;
mod content;
mod exec;
pub mod postgres;
mod row;
mod s3;
mod sql;
pub mod sqlite;
mod uploads;
mod versions;

pub use cluster::ClusterStore;
pub use content::{ContentCounts, ContentRecord, ContentState, ContentStore};
pub use s3::{
    AccessKey, BucketDeleteOutcome, BucketRecord, BucketStore, CompleteOutcome, KeyStore, MultipartPart,
    MultipartRecord, MultipartStore,
};
pub use uploads::{AppendOutcome, FinishOutcome, UploadAppend, UploadPart, UploadRecord, UploadStore};
pub use versions::{DeleteOutcome, ObjectAttrs, Precondition, VersionRecord, VersionStore};

use crate::content::ContentHash;

/// The bucket behind the seed's flat `/objects/<name>` interface.
pub const DEFAULT_BUCKET: &str = "default";

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
    /// The content is being deleted by the collector: retry once it is gone (503).
    #[error("content {hash} is being garbage-collected; retry")]
    ContentDeleting {
        /// The content's hash.
        hash: ContentHash,
    },
    /// A conditional write's [`Precondition`] did not hold of the name's newest
    /// version when the write was to happen; nothing was added.
    #[error("precondition failed for {bucket}/{name}")]
    PreconditionFailed {
        /// The bucket.
        bucket: String,
        /// The name.
        name: String,
    },
    /// The bucket a version or an upload was to land in does not exist (S3
    /// `NoSuchBucket`); nothing was added.
    #[error("no such bucket: {bucket}")]
    NoSuchBucket {
        /// The bucket.
        bucket: String,
    },
}

/// The metadata store. Every method is atomic; a version is visible to every other
/// user of the same store as soon as [`put_version`](VersionStore::put_version)
/// returns (read-after-write across API servers).
///
/// The methods come in one trait per domain ([`VersionStore`], [`ContentStore`], [`ClusterStore`], [`UploadStore`], [`BucketStore`], [`MultipartStore`], [`KeyStore`]),
/// so that a component can ask for only what it uses; `MetaStore` is all of them,
/// and every type that implements them all is one.
pub trait MetaStore:
    VersionStore + ContentStore + ClusterStore + UploadStore + BucketStore + MultipartStore + KeyStore
{
}

impl<T: VersionStore + ContentStore + ClusterStore + UploadStore + BucketStore + MultipartStore + KeyStore> MetaStore
    for T
{
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
