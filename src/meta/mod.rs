//! The metadata store: bucket + name → versions → content (hash, size, policy,
//! placement). The API tier's only durable state; data servers never touch it.
//!
//! [`MetaStore`] is the one trait; [`sqlite`] is the embedded implementation (one
//! host, several processes sharing one file) and [`postgres`] the one shared by API
//! servers on several hosts. Every implementation passes the behavioural suite
//! in `tests/common/meta_suite.rs` (test support, not in the library). Content is recorded once per hash (dedup), and a
//! version points at it; a tombstone version points at nothing.
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

pub mod postgres;
mod row;
pub mod sqlite;

use async_trait::async_trait;

use crate::content::{ContentHash, Encoding, Placement, Policy};

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
    /// How its bytes are stored: the shards code the stored stream, which is the
    /// original bytes ([`Encoding::Identity`]) or their compressed form.
    pub encoding: Encoding,
    /// The stored stream's length, when it differs from `size` (`None`: the stored
    /// bytes are the original ones). Use [`ContentRecord::stored_len`].
    pub stored_size: Option<u64>,
}

impl ContentRecord {
    /// Content stored as it is (identity encoding).
    pub fn new(hash: ContentHash, size: u64, policy: Policy, placement: Placement) -> ContentRecord {
        ContentRecord { hash, size, policy, placement, encoding: Encoding::Identity, stored_size: None }
    }

    /// The same content, stored as `encoding` in a stream of `stored_size` bytes.
    pub fn encoded(self, encoding: Encoding, stored_size: u64) -> ContentRecord {
        let stored_size = (encoding != Encoding::Identity || stored_size != self.size).then_some(stored_size);
        ContentRecord { encoding, stored_size, ..self }
    }

    /// The length of the stored stream, which the shards code: what every
    /// [`Layout`](crate::codec::Layout) of this content is computed from.
    pub fn stored_len(&self) -> u64 {
        self.stored_size.unwrap_or(self.size)
    }
}

/// What S3 keeps beside an object's bytes: its S3 entity tag and the headers a
/// client set when it stored the object, returned on every GET and HEAD of that
/// version. Stored as one JSON column of the version (and of a multipart upload,
/// until it becomes one). A version written through the native API has none.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectAttrs {
    /// The S3 ETag without quotes: the MD5 of the body as hex for a single-part
    /// upload, `<md5 of the parts' MD5s>-<parts>` for a multipart one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `Content-Encoding` as the client set it (cairn's own compression is not this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// `Cache-Control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// `Content-Disposition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `Expires`, as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The `x-amz-meta-*` headers, by the name after the prefix (lowercase).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub user: std::collections::BTreeMap<String, String>,
}

/// What must hold of a name's newest version for a conditional write
/// ([`VersionStore::put_object`]) to add its version: checked in the same
/// transaction as the insert, so of racing conditional writes at most the ones it
/// still holds for succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The name has no live version: none at all, or its newest is a tombstone
    /// (S3's `If-None-Match: *`).
    Absent,
    /// The newest version is live and its entity tag ([`VersionRecord::etag`]) is
    /// this one (S3's `If-Match`).
    Matches(String),
}

impl Precondition {
    /// Whether the precondition holds when `latest` is the name's newest version.
    pub fn holds(&self, latest: Option<&VersionRecord>) -> bool {
        let live = latest.filter(|r| !r.is_tombstone());
        match self {
            Precondition::Absent => live.is_none(),
            Precondition::Matches(etag) => live.is_some_and(|r| r.etag() == *etag),
        }
    }
}

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
    /// Its S3 attributes (ETag, content headers, user metadata), if it was stored
    /// with any ([`VersionStore::put_object`], [`MultipartStore::complete_multipart`]).
    pub attrs: Option<ObjectAttrs>,
}

impl VersionRecord {
    /// Whether this version is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.content.is_none()
    }

    /// Its entity tag as S3 clients see it (unquoted): the MD5 kept in its
    /// attributes, else its content's SHA-256 as hex (a version written through the
    /// native API); empty for a tombstone.
    pub fn etag(&self) -> String {
        match (&self.attrs, &self.content) {
            (Some(ObjectAttrs { etag: Some(etag), .. }), _) => etag.clone(),
            (_, Some(content)) => content.hash.to_hex(),
            (_, None) => String::new(),
        }
    }
}

/// The lifecycle state of a content row (the GC protocol, see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentState {
    /// Referenced, or at least not yet found unreferenced: what `put_version` leaves.
    Live,
    /// Found with no version pointing at it.
    Doomed {
        /// When the collector found it unreferenced, in ms since the Unix epoch.
        since_ms: i64,
    },
    /// The collector is deleting its shards; no PUT may reuse it until it is gone.
    Deleting,
}

/// Counts of content rows by state, for operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContentCounts {
    /// Rows in state [`ContentState::Live`].
    pub live: u64,
    /// Rows in state [`ContentState::Doomed`].
    pub doomed: u64,
    /// Rows in state [`ContentState::Deleting`].
    pub deleting: u64,
}

/// What [`VersionStore::delete`] found, and did.
#[derive(Clone, Debug, PartialEq, Eq)]
// A store call's answer, moved once: its size does not matter, and boxing the
// record would only add an allocation.
#[allow(clippy::large_enum_variant)]
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
pub trait MetaStore: VersionStore + ContentStore + ClusterStore + UploadStore + BucketStore + MultipartStore + KeyStore {}

impl<T: VersionStore + ContentStore + ClusterStore + UploadStore + BucketStore + MultipartStore + KeyStore> MetaStore for T {}

/// Versions of names: adding (plain, with S3 attributes, conditional), deleting,
/// reading, listing and pruning them.
#[async_trait]
pub trait VersionStore: Send + Sync + 'static {
    /// Adds the next version of `bucket/name`, pointing at `content` (recorded or
    /// updated by hash, and set [`ContentState::Live`] in the same transaction) or,
    /// with `None`, a tombstone. Version numbers are assigned by the store:
    /// concurrent writers get distinct, gap-free numbers. Content whose row is
    /// [`ContentState::Deleting`] is refused with [`MetaError::ContentDeleting`] and
    /// nothing is added.
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

    /// Retention of one name, atomic against put_version/delete of that name:
    /// removes the versions below the newest `keep` (None: keep all; Some(0) is
    /// refused by the caller, and keeps all here), tombstones included; and when the
    /// newest version is a tombstone created at or before `tombstone_cutoff_ms`
    /// (None: never), every version of the name. Returns how many versions were
    /// removed. After a name disappears entirely, a later PUT starts at version 1.
    async fn prune(
        &self,
        bucket: &str,
        name: &str,
        keep: Option<u64>,
        tombstone_cutoff_ms: Option<i64>,
    ) -> Result<u64, MetaError>;

    /// Every (bucket, name) that has at least one version, tombstoned ones too, in
    /// (bucket, name) byte order after `after`, at most `limit`: the retention
    /// worker's pass.
    async fn names(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<(String, String)>, MetaError>;

    /// [`put_version`](VersionStore::put_version) of `content` with S3 attributes, into
    /// a bucket that must exist ([`MetaError::NoSuchBucket`] otherwise, checked in
    /// the same transaction), and, given a `condition`, only if it holds of the
    /// name's newest version in that transaction ([`MetaError::PreconditionFailed`]
    /// otherwise).
    async fn put_object(
        &self,
        bucket: &str,
        name: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
        condition: Option<&Precondition>,
    ) -> Result<VersionRecord, MetaError>;

    /// Removes one version of a name for good (S3 `DeleteObject` with a
    /// `versionId`; a tombstone too). True if it existed. The other versions keep
    /// their numbers.
    async fn delete_version(&self, bucket: &str, name: &str, version: u64) -> Result<bool, MetaError>;

    /// Every version of every name of `bucket` starting with `prefix` (tombstones
    /// too), ordered by name ascending and, within a name, version descending (the
    /// newest first, as S3's ListObjectVersions); strictly after `after` =
    /// (name, version) in that order; at most `limit`.
    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError>;
}

/// Content rows and their lifecycle: the garbage-collection protocol of the
/// module docs (doom, begin and finish a delete, claim orphans, revive).
#[async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// The recorded content with this hash, or `None`.
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError>;

    /// The lifecycle state of the content row of `hash`, or `None` (no row).
    async fn content_state(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError>;

    /// doomed → live; returns the state after the call (None: no row). live and
    /// deleting unchanged.
    async fn revive(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError>;

    /// Marks up to `limit` live rows that no version points at as doomed since
    /// `now_ms`; returns how many.
    async fn doom_unreferenced(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError>;

    /// Doomed rows with since_ms <= cutoff_ms, hash order after `after`, at most
    /// `limit`.
    async fn doomed_before(
        &self,
        cutoff_ms: i64,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError>;

    /// In one atomic step against `put_version` of the same content: a row doomed
    /// since `cutoff_ms` or earlier that no version points at becomes deleting
    /// (true); a doomed row that a version points at becomes live (false); anything
    /// else is left as it is (false).
    async fn begin_delete(&self, hash: &ContentHash, cutoff_ms: i64) -> Result<bool, MetaError>;

    /// Claims orphan shards: inserts a deleting row for a hash that has no row (size
    /// 0, the given policy, empty placement); true when claimed, false when a row
    /// exists (whatever its state).
    async fn claim_orphan(&self, hash: &ContentHash, policy: Policy) -> Result<bool, MetaError>;

    /// Rows in state deleting (hash order after `after`), at most `limit`.
    async fn deleting(&self, after: Option<&ContentHash>, limit: usize) -> Result<Vec<ContentRecord>, MetaError>;

    /// Removes the row if it is deleting (and its placement index rows); true if
    /// removed.
    async fn finish_delete(&self, hash: &ContentHash) -> Result<bool, MetaError>;

    /// How many content rows are in each state.
    async fn content_counts(&self) -> Result<ContentCounts, MetaError>;
}

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

/// Resumable (tus) uploads and their parts.
#[async_trait]
pub trait UploadStore: Send + Sync + 'static {
    /// Records a new upload (its id must be new: a clash is an error) into a
    /// bucket that must exist ([`MetaError::NoSuchBucket`] otherwise, checked in
    /// the insert's transaction, atomically against
    /// [`delete_bucket`](BucketStore::delete_bucket); nothing is recorded).
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
    /// [`delete_upload`](UploadStore::delete_upload). Atomic against every write into
    /// the bucket ([`put_object`](VersionStore::put_object),
    /// [`create_multipart`](MultipartStore::create_multipart),
    /// [`complete_multipart`](MultipartStore::complete_multipart),
    /// [`create_upload`](UploadStore::create_upload),
    /// [`finish_upload`](UploadStore::finish_upload)): each lands before (and is
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
    /// upload's name (as [`put_object`](VersionStore::put_object), so
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
