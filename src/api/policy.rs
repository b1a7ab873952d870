//! Who may do what, for every front door: the one answer to "may this principal do
//! this action on this bucket?" ([`authorize`]), beside the key model
//! ([`super::keys`], which proves who the principal is).
//!
//! The native REST API, tus, S3 and `/admin` each name the [`Action`] of every
//! operation they serve and ask [`authorize`] before they touch the metadata
//! store or a data server; none keeps an access rule of its own. The vocabulary
//! lists, for each action, the operations of each door it covers
//! ([`Action::operations`]), so the S3 door finds its operation's action here
//! ([`Action::of_s3`]) and the README's access table is made from the same list
//! ([`access_table`], checked against the README by a test).
//!
//! The rules, by what an action needs ([`Need`]):
//! - an open cluster (no key exists) allows everything;
//! - [`Need::Read`]: a key that may use the bucket (an unrestricted key, or one
//!   whose bucket list names it), read-only or not;
//! - [`Need::Write`]: the same, and not read-only;
//! - [`Need::Cluster`]: an unrestricted read-write key (bucket creation and
//!   deletion, the admin routes);
//! - [`Need::Signed`]: any valid key (listing buckets, which shows each key only
//!   the buckets it may use, [`Caller::sees`]).
//!
//! A copy is two actions: [`Action::CopySource`] (a read) on the source bucket and
//! [`Action::CopyDestination`] (a write) on the destination. A tus upload is
//! checked on its own bucket at creation, at every request on it and again just
//! before it becomes a version, so a key deleted or narrowed mid-upload can
//! neither continue nor finish it. Requests that carry no key, a key that does not
//! exist (or was deleted) or a wrong secret never reach this module: they have no
//! principal, and the doors refuse them when they authenticate.

use crate::meta::AccessKey;

/// Who a request acts as, once its credentials are proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The cluster has no key: anyone may do anything.
    Open,
    /// A request signed with this key.
    Key(AccessKey),
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No credentials, in a cluster that has keys.
    #[error("this cluster requires signed requests (an access key)")]
    Unsigned,
    /// The key id is unknown or the secret does not match it.
    #[error("unknown access key or wrong secret")]
    BadCredentials,
    /// The key may not use this bucket.
    #[error("access key {key} may not use bucket {bucket}")]
    BucketNotAllowed {
        /// The key id.
        key: String,
        /// The bucket.
        bucket: String,
    },
    /// The key may only read.
    #[error("access key {key} is read-only")]
    ReadOnly {
        /// The key id.
        key: String,
    },
    /// The key is limited to buckets and the request is cluster-wide (creating
    /// buckets, the admin routes).
    #[error("access key {key} is limited to buckets; this needs an unrestricted key")]
    NotUnrestricted {
        /// The key id.
        key: String,
    },
}

/// What an action needs of the principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any valid key.
    Signed,
    /// A key that may use the bucket.
    Read,
    /// A key that may use the bucket and is not read-only.
    Write,
    /// An unrestricted read-write key.
    Cluster,
}

/// A front door of the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// The native REST API (`/objects/`, `/versions/`, `/locate/`): the bucket `default`.
    Native,
    /// Resumable uploads, tus 1.0 (`/uploads`).
    Tus,
    /// The S3 API.
    S3,
    /// The operator's routes (`/admin/`).
    Admin,
}

impl Door {
    /// Its name in the access table.
    pub fn name(self) -> &'static str {
        match self {
            Door::Native => "native",
            Door::Tus => "tus",
            Door::S3 => "S3",
            Door::Admin => "admin",
        }
    }
}

/// Everything a request can do, on any door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read an object's bytes, head or versions, or where its shards are.
    Read,
    /// List the names of a bucket (or their versions).
    List,
    /// Store a new version of a name.
    Write,
    /// Delete a name (a tombstone) or one of its versions.
    Delete,
    /// Read the source of a copy.
    CopySource,
    /// Write the destination of a copy.
    CopyDestination,
    /// Start an S3 multipart upload.
    MultipartCreate,
    /// Upload (or copy into) one part of a multipart upload.
    MultipartPart,
    /// Complete a multipart upload into a version.
    MultipartComplete,
    /// Abort a multipart upload.
    MultipartAbort,
    /// List multipart uploads or one upload's parts.
    MultipartList,
    /// Create a tus upload.
    TusCreate,
    /// Append to a tus upload, or ask where it stands.
    TusAppend,
    /// Turn a tus upload whose bytes are all in into a version.
    TusFinish,
    /// Terminate a tus upload.
    TusDelete,
    /// See that a bucket exists and how it is set (region, versioning).
    BucketRead,
    /// Change a bucket's settings (versioning).
    BucketConfigure,
    /// List the buckets (each key sees the ones it may use).
    BucketList,
    /// Create a bucket.
    BucketCreate,
    /// Delete a bucket (aborting its open uploads).
    BucketDelete,
    /// The operator's routes: status, workers, repairs, keys.
    Admin,
}

impl Action {
    /// Every action, in the access table's order.
    pub const ALL: [Action; 21] = [
        Action::Read,
        Action::List,
        Action::Write,
        Action::Delete,
        Action::CopySource,
        Action::CopyDestination,
        Action::MultipartCreate,
        Action::MultipartPart,
        Action::MultipartComplete,
        Action::MultipartAbort,
        Action::MultipartList,
        Action::TusCreate,
        Action::TusAppend,
        Action::TusFinish,
        Action::TusDelete,
        Action::BucketRead,
        Action::BucketConfigure,
        Action::BucketList,
        Action::BucketCreate,
        Action::BucketDelete,
        Action::Admin,
    ];

    /// Its name in the access table and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::List => "list",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::CopySource => "copy source",
            Action::CopyDestination => "copy destination",
            Action::MultipartCreate => "multipart create",
            Action::MultipartPart => "multipart part",
            Action::MultipartComplete => "multipart complete",
            Action::MultipartAbort => "multipart abort",
            Action::MultipartList => "multipart list",
            Action::TusCreate => "tus create",
            Action::TusAppend => "tus append",
            Action::TusFinish => "tus finish",
            Action::TusDelete => "tus delete",
            Action::BucketRead => "bucket read",
            Action::BucketConfigure => "bucket configure",
            Action::BucketList => "bucket list",
            Action::BucketCreate => "bucket create",
            Action::BucketDelete => "bucket delete",
            Action::Admin => "admin",
        }
    }

    /// What it needs of the principal.
    pub fn need(self) -> Need {
        match self {
            Action::Read | Action::List | Action::CopySource | Action::MultipartList | Action::BucketRead => Need::Read,
            Action::Write
            | Action::Delete
            | Action::CopyDestination
            | Action::MultipartCreate
            | Action::MultipartPart
            | Action::MultipartComplete
            | Action::MultipartAbort
            | Action::TusCreate
            | Action::TusAppend
            | Action::TusFinish
            | Action::TusDelete
            | Action::BucketConfigure => Need::Write,
            Action::BucketList => Need::Signed,
            Action::BucketCreate | Action::BucketDelete | Action::Admin => Need::Cluster,
        }
    }

    /// The operations of each door this action covers. The S3 door looks its
    /// operations up here ([`Action::of_s3`]); the other doors name their action
    /// in each handler, as listed.
    pub fn operations(self) -> &'static [(Door, &'static str)] {
        use Door::{Admin, Native, Tus, S3};
        match self {
            Action::Read => &[
                (Native, "GET/HEAD /objects/<name>"),
                (Native, "GET /versions/<name>"),
                (Native, "GET /locate/<name>"),
                (S3, "GetObject"),
                (S3, "HeadObject"),
            ],
            Action::List => {
                &[(Native, "GET /objects/"), (S3, "ListObjects"), (S3, "ListObjectsV2"), (S3, "ListObjectVersions")]
            }
            Action::Write => &[(Native, "PUT /objects/<name>"), (S3, "PutObject")],
            Action::Delete => &[(Native, "DELETE /objects/<name>"), (S3, "DeleteObject"), (S3, "DeleteObjects")],
            Action::CopySource => &[(S3, "CopyObject (source)"), (S3, "UploadPartCopy (source)")],
            Action::CopyDestination => &[(S3, "CopyObject")],
            Action::MultipartCreate => &[(S3, "CreateMultipartUpload")],
            Action::MultipartPart => &[(S3, "UploadPart"), (S3, "UploadPartCopy")],
            Action::MultipartComplete => &[(S3, "CompleteMultipartUpload")],
            Action::MultipartAbort => &[(S3, "AbortMultipartUpload")],
            Action::MultipartList => &[(S3, "ListParts"), (S3, "ListMultipartUploads")],
            Action::TusCreate => &[(Tus, "POST /uploads"), (Tus, "POST /objects/<name>")],
            Action::TusAppend => &[(Tus, "PATCH /uploads/<id>"), (Tus, "HEAD /uploads/<id>")],
            Action::TusFinish => &[(Tus, "the PATCH (or HEAD) that completes an upload")],
            Action::TusDelete => &[(Tus, "DELETE /uploads/<id>")],
            Action::BucketRead => &[(S3, "HeadBucket"), (S3, "GetBucketLocation"), (S3, "GetBucketVersioning")],
            Action::BucketConfigure => &[(S3, "PutBucketVersioning")],
            Action::BucketList => &[(S3, "ListBuckets")],
            Action::BucketCreate => &[(S3, "CreateBucket")],
            Action::BucketDelete => &[(S3, "DeleteBucket")],
            Action::Admin => &[(Admin, "every /admin/ route"), (S3, "any other S3 operation")],
        }
    }

    /// The action of an S3 operation, by its name as `s3s` gives it. An operation
    /// the vocabulary does not list (one cairn does not implement) is taken as
    /// [`Action::Admin`]: only an unrestricted read-write key gets as far as
    /// hearing `NotImplemented`.
    pub fn of_s3(operation: &str) -> Action {
        Action::ALL
            .into_iter()
            .find(|action| action.operations().iter().any(|&(door, op)| door == Door::S3 && op == operation))
            .unwrap_or(Action::Admin)
    }
}

/// May `caller` do `action` on `bucket` (`None` for an action on the whole
/// cluster)? The one access rule of every door; see the module docs.
pub fn authorize(caller: &Caller, action: Action, bucket: Option<&str>) -> Result<(), Refusal> {
    let Caller::Key(key) = caller else { return Ok(()) };
    match action.need() {
        Need::Signed => Ok(()),
        Need::Read => in_bucket(key, bucket),
        Need::Write => writer(key).and_then(|()| in_bucket(key, bucket)),
        Need::Cluster => writer(key).and_then(|()| unrestricted(key)),
    }
}

/// The key may use `bucket`; an action of a bucket asked with none is one on
/// every bucket, which only an unrestricted key may do.
fn in_bucket(key: &AccessKey, bucket: Option<&str>) -> Result<(), Refusal> {
    match bucket {
        None => unrestricted(key),
        Some(bucket) if may_use(key, bucket) => Ok(()),
        Some(bucket) => Err(Refusal::BucketNotAllowed { key: key.access_key.clone(), bucket: bucket.to_string() }),
    }
}

fn writer(key: &AccessKey) -> Result<(), Refusal> {
    match key.read_only {
        true => Err(Refusal::ReadOnly { key: key.access_key.clone() }),
        false => Ok(()),
    }
}

fn unrestricted(key: &AccessKey) -> Result<(), Refusal> {
    match key.buckets.is_empty() {
        true => Ok(()),
        false => Err(Refusal::NotUnrestricted { key: key.access_key.clone() }),
    }
}

fn may_use(key: &AccessKey, bucket: &str) -> bool {
    key.buckets.is_empty() || key.buckets.iter().any(|b| b == bucket)
}

impl Caller {
    /// Whether this caller may see `bucket` in a listing of buckets.
    pub fn sees(&self, bucket: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => may_use(key, bucket),
        }
    }
}

/// The principals of the access table's columns, with the bucket each is asked
/// about: a key limited to bucket `photos` is asked once about `photos` and once
/// about another bucket.
fn columns() -> Vec<(&'static str, Caller, &'static str)> {
    let key = |buckets: &[&str], read_only| {
        Caller::Key(AccessKey {
            access_key: "CKTABLE".into(),
            secret: String::new(),
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            read_only,
            created_ms: 0,
        })
    };
    vec![
        ("open cluster", Caller::Open, "photos"),
        ("full key", key(&[], false), "photos"),
        ("read-only key", key(&[], true), "photos"),
        ("key for `photos`, on `photos`", key(&["photos"], false), "photos"),
        ("key for `photos`, elsewhere", key(&["photos"], false), "other"),
    ]
}

/// The README's access table: one row per action, the operations of each door
/// it covers, and what each kind of principal gets (computed by [`authorize`]).
/// Requests with no key, a deleted key or a wrong secret are refused by every
/// door before any action is considered, as the table's last column says.
pub fn access_table() -> String {
    let columns = columns();
    let mut table = String::from("| action | operations |");
    for (title, _, _) in &columns {
        table.push_str(&format!(" {title} |"));
    }
    table.push_str(" no key, deleted key, wrong secret |\n|---|---|");
    table.push_str(&"---|".repeat(columns.len() + 1));
    table.push('\n');
    for action in Action::ALL {
        let operations: Vec<String> = action.operations().iter().map(|&(door, op)| operation_cell(door, op)).collect();
        table.push_str(&format!("| {} | {} |", action.name(), operations.join(", ")));
        for (_, caller, bucket) in &columns {
            let cell = match authorize(caller, action, Some(bucket)) {
                Ok(()) => "yes",
                Err(_) => "no",
            };
            table.push_str(&format!(" {cell} |"));
        }
        table.push_str(" no |\n");
    }
    table
}

/// One operation in the access table: its code in backticks, a qualifier or a
/// description (lowercase) as text.
fn operation_cell(door: Door, op: &str) -> String {
    let door = door.name();
    if op.starts_with(char::is_lowercase) {
        return format!("{door}: {op}");
    }
    match op.split_once(" (") {
        Some((code, rest)) => format!("{door} `{code}` ({rest}"),
        None => format!("{door} `{op}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(buckets: &[&str], read_only: bool) -> Caller {
        Caller::Key(AccessKey {
            access_key: "CKTEST".into(),
            secret: "s".into(),
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            read_only,
            created_ms: 0,
        })
    }

    #[test]
    fn a_restricted_key_uses_only_its_buckets() {
        let k = key(&["photos"], false);
        assert_eq!(authorize(&k, Action::Write, Some("photos")), Ok(()));
        assert_eq!(authorize(&k, Action::TusCreate, Some("photos")), Ok(()));
        assert!(matches!(authorize(&k, Action::Read, Some("default")), Err(Refusal::BucketNotAllowed { .. })));
        assert!(matches!(authorize(&k, Action::TusCreate, Some("other")), Err(Refusal::BucketNotAllowed { .. })));
        assert!(matches!(authorize(&k, Action::Admin, None), Err(Refusal::NotUnrestricted { .. })));
        assert!(matches!(authorize(&k, Action::BucketCreate, Some("photos")), Err(Refusal::NotUnrestricted { .. })));
        assert_eq!(authorize(&k, Action::BucketList, None), Ok(()));
        assert!(k.sees("photos") && !k.sees("default"));
    }

    #[test]
    fn a_read_only_key_reads_and_never_writes() {
        let k = key(&[], true);
        assert_eq!(authorize(&k, Action::Read, Some("any")), Ok(()));
        assert_eq!(authorize(&k, Action::CopySource, Some("any")), Ok(()));
        for action in Action::ALL.into_iter().filter(|a| matches!(a.need(), Need::Write | Need::Cluster)) {
            assert!(matches!(authorize(&k, action, Some("any")), Err(Refusal::ReadOnly { .. })), "{action:?}");
        }
        assert_eq!(authorize(&Caller::Open, Action::Admin, None), Ok(()));
    }

    #[test]
    fn every_s3_operation_cairn_serves_has_its_action() {
        assert_eq!(Action::of_s3("PutObject"), Action::Write);
        assert_eq!(Action::of_s3("UploadPartCopy"), Action::MultipartPart);
        assert_eq!(Action::of_s3("ListBuckets"), Action::BucketList);
        assert_eq!(Action::of_s3("PutBucketPolicy"), Action::Admin, "an unlisted operation needs the most");
        // Each S3 operation names one action only.
        let mut seen = std::collections::HashSet::new();
        for action in Action::ALL {
            for (door, op) in action.operations() {
                if *door == Door::S3 && !op.contains(' ') {
                    assert!(seen.insert(*op), "{op} is listed twice");
                }
            }
        }
    }

    #[test]
    fn the_readme_shows_the_access_table_as_the_policy_decides_it() {
        let readme = include_str!("../../README.md");
        let table = access_table();
        assert!(
            readme.contains(&table),
            "README.md's access table differs from the policy; paste this in its place:\n{table}"
        );
    }
}
