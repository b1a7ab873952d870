//! The versions of names, as the metadata store records them: what a version
//! is ([`VersionRecord`], with its S3 attributes [`ObjectAttrs`]), what must
//! hold for a conditional write ([`Precondition`]), and [`VersionStore`], the
//! methods that add, delete, read, list and prune versions. Part of the
//! metadata store's trait (see [the module docs](super)); the stores implement
//! it once, in `sql/versions.rs`, over either executor.

use async_trait::async_trait;

use super::{ContentRecord, MetaError};

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
    /// with any ([`VersionStore::put_object`], [`MultipartStore::complete_multipart`](super::MultipartStore::complete_multipart)).
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

/// Versions of names: adding (plain, with S3 attributes, conditional), deleting,
/// reading, listing and pruning them.
#[async_trait]
pub trait VersionStore: Send + Sync + 'static {
    /// Adds the next version of `bucket/name`, pointing at `content` (recorded or
    /// updated by hash, and set [`ContentState::Live`](super::ContentState::Live) in the same transaction) or,
    /// with `None`, a tombstone. Version numbers are assigned by the store:
    /// concurrent writers get distinct, gap-free numbers. Content whose row is
    /// [`ContentState::Deleting`](super::ContentState::Deleting) is refused with [`MetaError::ContentDeleting`] and
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
