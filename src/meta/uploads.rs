//! Resumable (tus) uploads in the metadata store: an upload ([`UploadRecord`]),
//! its parts ([`UploadPart`]), an append ([`UploadAppend`]) and what appending and
//! finishing found ([`AppendOutcome`], [`FinishOutcome`]), and [`UploadStore`],
//! their methods (see "Resumable uploads" in [the module docs](super)). The
//! stores implement it once, in `sql/uploads.rs`, over either executor.

use async_trait::async_trait;

use super::{ContentRecord, MetaError, VersionRecord};
use crate::content::ContentHash;

/// A resumable upload: where it will land, how far it got, and the running hash
/// of what it received (the API tier keeps nothing of it in memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    /// Its id: 128 random bits as hex, the only capability that reaches it.
    pub id: String,
    /// The bucket the finished object lands in.
    pub bucket: String,
    /// The object's name.
    pub name: String,
    /// The upload's length, `None` while deferred.
    pub length: Option<u64>,
    /// Bytes received and recorded as parts so far.
    pub offset: u64,
    /// The `Upload-Metadata` header as the client sent it at creation.
    pub metadata: String,
    /// The SHA-256 the client announced at creation, if any.
    pub expected: Option<ContentHash>,
    /// The serialised running SHA-256 of the first `offset` bytes
    /// ([`crate::object::resumable_hash::ResumableSha256`]).
    pub hasher: Vec<u8>,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
    /// When it expires, ms since the Unix epoch.
    pub expires_ms: i64,
    /// The version it became, once finished.
    pub finished_version: Option<u64>,
}

/// One part of an upload: `size` bytes at `offset`, stored as the content `hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadPart {
    /// Where in the upload the part starts.
    pub offset: u64,
    /// Its length.
    pub size: u64,
    /// The content holding its bytes.
    pub hash: ContentHash,
}

/// An append to an upload ([`UploadStore::append_upload`]).
#[derive(Clone, Copy, Debug)]
pub struct UploadAppend<'a> {
    /// The offset the upload must be at (compare-and-set).
    pub expected_offset: u64,
    /// The parts, in order, starting at `expected_offset`.
    pub parts: &'a [ContentRecord],
    /// The running hash state after the parts.
    pub hasher: &'a [u8],
    /// A length to set on a deferred upload (ignored when one is set).
    pub length: Option<u64>,
    /// The new expiry.
    pub expires_ms: i64,
}

/// What [`UploadStore::append_upload`] found, and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The parts were appended; the upload is now at `offset`.
    Appended {
        /// The new offset.
        offset: u64,
    },
    /// The upload is not at the expected offset (another PATCH won) or is
    /// finished; nothing was appended.
    Conflict {
        /// Where the upload is.
        offset: u64,
    },
    /// No such upload (terminated or expired and removed).
    Gone,
}

/// What [`UploadStore::finish_upload`] found, and did.
#[derive(Clone, Debug, PartialEq, Eq)]
// A store call's answer, moved once: its size does not matter, and boxing the
// record would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum FinishOutcome {
    /// The version was added and the upload marked finished.
    Finished(VersionRecord),
    /// An earlier call finished it already, as this version.
    AlreadyFinished {
        /// The version it became.
        version: u64,
    },
    /// No such upload.
    Gone,
}

/// Resumable (tus) uploads and their parts.
#[async_trait]
pub trait UploadStore: Send + Sync + 'static {
    /// Records a new upload (its id must be new: a clash is an error) into a
    /// bucket that must exist ([`MetaError::NoSuchBucket`] otherwise, checked in
    /// the insert's transaction, atomically against
    /// [`delete_bucket`](super::BucketStore::delete_bucket); nothing is recorded).
    async fn create_upload(&self, upload: &UploadRecord) -> Result<(), MetaError>;

    /// The upload with this id, expired or not, or `None`.
    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError>;

    /// In one transaction: if the upload is unfinished and at
    /// `append.expected_offset`, records each part's content (as `put_version`
    /// does: refused with [`MetaError::ContentDeleting`] while the collector deletes
    /// it), adds the part rows, advances the offset, and stores the hash state,
    /// length and expiry.
    async fn append_upload(&self, id: &str, append: UploadAppend<'_>) -> Result<AppendOutcome, MetaError>;

    /// Up to `limit` parts of the upload starting at or after `from`, in offset
    /// order.
    async fn upload_parts(&self, id: &str, from: u64, limit: usize) -> Result<Vec<UploadPart>, MetaError>;

    /// In one transaction: adds the upload's content as the next version of its
    /// name, marks the upload finished and removes its part rows. Idempotent: a
    /// finished upload answers [`FinishOutcome::AlreadyFinished`]. The upload's
    /// bucket must still exist ([`MetaError::NoSuchBucket`], nothing added); since
    /// deleting a bucket removes its uploads, a finish after that is
    /// [`FinishOutcome::Gone`].
    async fn finish_upload(&self, id: &str, content: &ContentRecord) -> Result<FinishOutcome, MetaError>;

    /// Removes the upload and its part rows (termination, a failed completion);
    /// true if it existed.
    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError>;

    /// Removes up to `limit` uploads that expired at or before `now_ms`, with their
    /// parts; returns how many.
    async fn remove_expired_uploads(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError>;
}
