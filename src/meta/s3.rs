//! What only S3 needs of the metadata store: buckets ([`BucketRecord`],
//! [`BucketStore`]), multipart uploads ([`MultipartRecord`], [`MultipartPart`],
//! [`MultipartStore`]) and access keys ([`AccessKey`], [`KeyStore`]). The stores
//! implement them once, in `sql/s3.rs`, over either executor.

use async_trait::async_trait;

use super::{ContentRecord, MetaError, ObjectAttrs, VersionRecord};
use crate::content::ContentHash;

/// A bucket: a namespace of object names. `default` (the native API's) always
/// exists and cannot be deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRecord {
    /// Its name.
    pub name: String,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
}

/// What [`BucketStore::delete_bucket`] found, and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketDeleteOutcome {
    /// The bucket was removed, and with it every upload into it.
    Deleted {
        /// How many open uploads (S3 multipart and tus together) were aborted
        /// with it.
        aborted_uploads: u64,
    },
    /// There is no such bucket.
    NoSuchBucket,
    /// It still holds a version (a tombstone counts); nothing was removed, its
    /// open uploads neither.
    NotEmpty,
}

/// An S3 multipart upload in progress: where it will land and the attributes the
/// finished object gets. Its parts are [`MultipartPart`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartRecord {
    /// Its id: 128 random bits as hex.
    pub id: String,
    /// The bucket.
    pub bucket: String,
    /// The object's name.
    pub name: String,
    /// What the finished object gets (its `etag` is set at completion).
    pub attrs: ObjectAttrs,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
}

/// One uploaded part of a multipart upload, stored as content like any other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartPart {
    /// 1 to 10,000, as the client numbered it.
    pub part_number: u32,
    /// The content holding its bytes.
    pub hash: ContentHash,
    /// Its length.
    pub size: u64,
    /// The MD5 of its bytes as hex (its S3 ETag, without quotes).
    pub etag: String,
    /// When it was (last) uploaded, ms since the Unix epoch.
    pub created_ms: i64,
}

/// What [`MultipartStore::complete_multipart`] found, and did.
#[derive(Clone, Debug, PartialEq, Eq)]
// A store call's answer, moved once: its size does not matter, and boxing the
// record would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum CompleteOutcome {
    /// The version was added and the upload and its parts removed.
    Completed(VersionRecord),
    /// No such upload (completed, aborted or expired already).
    Gone,
}

/// An access key: the id a client signs with, the secret the server checks its
/// signatures with (SigV4 needs the server to know it), and what it may do.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The access key id (public).
    pub access_key: String,
    /// The secret key.
    pub secret: String,
    /// The buckets it may use; empty means every bucket (and creating buckets).
    pub buckets: Vec<String>,
    /// Whether it may only read (GET, HEAD, listings).
    pub read_only: bool,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
}

impl std::fmt::Debug for AccessKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key", &self.access_key)
            .field("buckets", &self.buckets)
            .field("read_only", &self.read_only)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// S3 buckets.
#[async_trait]
pub trait BucketStore: Send + Sync + 'static {
    /// Creates the bucket; false (and nothing changed) when it exists already.
    async fn create_bucket(&self, name: &str, created_ms: i64) -> Result<bool, MetaError>;

    /// The bucket, or `None`.
    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, MetaError>;

    /// Every bucket, in name order.
    async fn buckets(&self) -> Result<Vec<BucketRecord>, MetaError>;

    /// Removes the bucket if it holds no version (tombstones count), and in the same
    /// transaction every upload into it: S3 multipart uploads and tus uploads, with
    /// their parts, whose content then counts as unreferenced for the collector as
    /// after [`abort_multipart`](MultipartStore::abort_multipart) or
    /// [`delete_upload`](super::UploadStore::delete_upload). Atomic against every write into
    /// the bucket ([`put_object`](super::VersionStore::put_object),
    /// [`create_multipart`](MultipartStore::create_multipart),
    /// [`complete_multipart`](MultipartStore::complete_multipart),
    /// [`create_upload`](super::UploadStore::create_upload),
    /// [`finish_upload`](super::UploadStore::finish_upload)): each lands before (and is
    /// seen: a version makes it [`BucketDeleteOutcome::NotEmpty`], an upload is
    /// aborted) or after (and finds no bucket). A bucket with a version keeps its
    /// uploads.
    async fn delete_bucket(&self, name: &str) -> Result<BucketDeleteOutcome, MetaError>;
}

/// S3 multipart uploads and their parts.
#[async_trait]
pub trait MultipartStore: Send + Sync + 'static {
    /// Records a new multipart upload (its id must be new); its bucket must exist
    /// ([`MetaError::NoSuchBucket`]).
    async fn create_multipart(&self, upload: &MultipartRecord) -> Result<(), MetaError>;

    /// The multipart upload with this id, or `None`.
    async fn multipart(&self, id: &str) -> Result<Option<MultipartRecord>, MetaError>;

    /// In one transaction: if the upload exists, records `content` (as
    /// `put_version` does: live, refused with [`MetaError::ContentDeleting`]) and
    /// sets part `part_number` to it, replacing an earlier upload of that number.
    /// False (nothing recorded) when the upload is gone. A part's content counts as
    /// referenced for the collector while its upload exists.
    async fn put_part(
        &self,
        id: &str,
        part_number: u32,
        content: &ContentRecord,
        etag: &str,
        created_ms: i64,
    ) -> Result<bool, MetaError>;

    /// Up to `limit` parts of the upload numbered above `after`, ascending.
    async fn parts(&self, id: &str, after: u32, limit: usize) -> Result<Vec<MultipartPart>, MetaError>;

    /// Up to `limit` multipart uploads of `bucket` whose name starts with `prefix`,
    /// ordered by (name, id), strictly after `after`.
    async fn multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartRecord>, MetaError>;

    /// In one transaction: adds `content` with `attrs` as the next version of the
    /// upload's name (as [`put_object`](super::VersionStore::put_object), so
    /// [`MetaError::NoSuchBucket`] if its bucket went), and removes the upload and
    /// its part rows. [`CompleteOutcome::Gone`] if there is no such upload.
    async fn complete_multipart(
        &self,
        id: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
    ) -> Result<CompleteOutcome, MetaError>;

    /// Removes the upload and its part rows; true if it existed.
    async fn abort_multipart(&self, id: &str) -> Result<bool, MetaError>;

    /// Removes up to `limit` multipart uploads created at or before `cutoff_ms`,
    /// with their parts; returns how many.
    async fn remove_stale_multipart(&self, cutoff_ms: i64, limit: usize) -> Result<usize, MetaError>;
}

/// S3 access keys.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Records a new access key; false (nothing changed) when the id exists.
    async fn create_key(&self, key: &AccessKey) -> Result<bool, MetaError>;

    /// The access key with this id, or `None`.
    async fn key(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError>;

    /// Every access key, in id order.
    async fn keys(&self) -> Result<Vec<AccessKey>, MetaError>;

    /// Removes the access key; true if it existed.
    async fn delete_key(&self, access_key: &str) -> Result<bool, MetaError>;
}
