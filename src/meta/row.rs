//! Rows as the SQL metadata stores read and write them, their validation, and the
//! checks of the trait's arguments: shared by the SQLite and PostgreSQL
//! implementations, so that both refuse the same corrupt rows and bound the same
//! queries the same way. Each store only maps its own row type onto [`RawVersion`],
//! binds [`ContentRow`], [`VersionsPage`] and [`ListRange`] in its own placeholder
//! syntax, and runs its own statements.

use super::{
    AccessKey, ContentCounts, ContentRecord, ContentState, DeleteOutcome, MetaError, MultipartPart, MultipartRecord,
    ObjectAttrs, UploadPart, UploadRecord, VersionRecord,
};

/// The columns every version query of either store returns, in the order the
/// stores' row mappings read them into [`RawVersion`], and the join that yields
/// them; the caller appends its `WHERE` (in its own placeholder syntax).
macro_rules! select_versions {
    ($($tail:literal),*) => {
        concat!(
            "SELECT v.bucket, v.name, v.version, v.hash, v.size, v.created_ms, ",
            "c.hash, c.size, c.policy, c.placement, c.encoding, c.stored_size, v.attrs ",
            "FROM versions v LEFT JOIN content c ON c.hash = v.hash ",
            $($tail),*
        )
    };
}
use crate::content::{ContentHash, Encoding, Placement, Policy};
pub(crate) use select_versions;

/// The `content.state` values, as the migrations' `CHECK` constraints allow them.
pub(crate) const LIVE: &str = "live";
/// See [`LIVE`].
pub(crate) const DOOMED: &str = "doomed";
/// See [`LIVE`].
pub(crate) const DELETING: &str = "deleting";

/// A limit as an SQL integer, or `None` when it selects nothing (0).
pub(crate) fn sql_limit(limit: usize) -> Option<i64> {
    (limit > 0).then(|| to_sql_int(limit).unwrap_or(i64::MAX))
}

/// The exclusive lower bound of a hash-ordered page: every hash sorts after "".
pub(crate) fn hash_after(after: Option<&ContentHash>) -> String {
    after.map(ContentHash::to_hex).unwrap_or_default()
}

/// A lease's time to live in whole milliseconds: at least 1, and at most a quarter
/// of `i64::MAX`, so that adding it to any clock reading of this era cannot
/// overflow an SQL BIGINT.
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    to_sql_int(ttl.as_millis()).unwrap_or(i64::MAX).clamp(1, i64::MAX / 4)
}

/// Validates a content row's lifecycle columns.
pub(crate) fn parse_state(hash: &str, state: &str, since_ms: Option<i64>) -> Result<ContentState, MetaError> {
    match (state, since_ms) {
        (LIVE, _) => Ok(ContentState::Live),
        (DOOMED, Some(since_ms)) => Ok(ContentState::Doomed { since_ms }),
        (DELETING, _) => Ok(ContentState::Deleting),
        (state, since) => {
            Err(MetaError::Corrupt(format!("content {hash:?}: invalid state {state:?} (doomed since {since:?})")))
        }
    }
}

/// Sums `(state, count)` rows into [`ContentCounts`]; an unknown state or a
/// negative count is `Corrupt`.
pub(crate) fn count_states(rows: impl IntoIterator<Item = (String, i64)>) -> Result<ContentCounts, MetaError> {
    let mut counts = ContentCounts::default();
    for (state, n) in rows {
        let n = u64::try_from(n).map_err(|_| MetaError::Corrupt(format!("negative count {n} of {state:?} rows")))?;
        match state.as_str() {
            LIVE => counts.live += n,
            DOOMED => counts.doomed += n,
            DELETING => counts.deleting += n,
            other => return Err(MetaError::Corrupt(format!("content rows in an invalid state {other:?}"))),
        }
    }
    Ok(counts)
}

/// A count read from the store (shards per server, rows removed), checked.
pub(crate) fn count(n: i64, what: impl FnOnce() -> String) -> Result<u64, MetaError> {
    u64::try_from(n).map_err(|_| MetaError::Corrupt(format!("{}: negative count {n}", what())))
}

/// What `begin_delete` does to a row, given its state and whether a version points
/// at it, both read inside the step's transaction after the row is locked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BeginDelete {
    /// Make it deleting (the call returns true).
    Delete,
    /// A version points at it again: make it live (false).
    Revive,
    /// Leave it (false).
    Leave,
}

/// Step 3 of the GC protocol as a decision.
pub(crate) fn begin_delete_step(state: Option<ContentState>, referenced: bool, cutoff_ms: i64) -> BeginDelete {
    match state {
        Some(ContentState::Doomed { .. }) if referenced => BeginDelete::Revive,
        Some(ContentState::Doomed { since_ms }) if since_ms <= cutoff_ms => BeginDelete::Delete,
        _ => BeginDelete::Leave,
    }
}

/// What `prune` removes from a name, given its newest version (number, tombstone?,
/// created_ms) and the number of the `keep`-th newest version (if it has that many).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Prune {
    /// Nothing.
    Nothing,
    /// Every version numbered below this one.
    Below(i64),
    /// Every version of the name (its newest is an expired tombstone).
    All,
}

/// Retention of one name as a decision; `keep` of `Some(0)` keeps everything.
pub(crate) fn prune_step(
    newest: Option<(i64, bool, i64)>,
    kth_newest: Option<i64>,
    tombstone_cutoff_ms: Option<i64>,
) -> Prune {
    let Some((_, tombstone, created_ms)) = newest else {
        return Prune::Nothing;
    };
    if tombstone && tombstone_cutoff_ms.is_some_and(|cutoff| created_ms <= cutoff) {
        return Prune::All;
    }
    match kth_newest {
        Some(v) => Prune::Below(v),
        None => Prune::Nothing,
    }
}

/// The `OFFSET` that finds the `keep`-th newest version, or `None` when `keep`
/// keeps everything (`None` or `Some(0)`).
pub(crate) fn keep_offset(keep: Option<u64>) -> Option<i64> {
    keep.filter(|k| *k > 0).map(|k| to_sql_int(k - 1).unwrap_or(i64::MAX))
}

/// A version number or count as an SQL BIGINT / INTEGER; `None` beyond `i64::MAX`.
pub(crate) fn to_sql_int<T: TryInto<i64>>(n: T) -> Option<i64> {
    n.try_into().ok()
}

/// A version number read from the store: 1 or more, else `Corrupt`.
fn version_number(n: i64, what: impl FnOnce() -> String) -> Result<u64, MetaError> {
    u64::try_from(n)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| MetaError::Corrupt(format!("{}: invalid version number {n}", what())))
}

/// The number the store handed out for a new version of `bucket/name` (the head's
/// increment, or the highest version plus one), checked.
pub(crate) fn next_version(bucket: &str, name: &str, next: i64) -> Result<u64, MetaError> {
    version_number(next, || format!("{bucket}/{name}: next version"))
}

/// The content of a version as its columns are written: the `content` row, and the
/// hash and size a `versions` row repeats.
pub(crate) struct ContentRow {
    pub(crate) hash: String,
    pub(crate) size: i64,
    pub(crate) policy: String,
    pub(crate) placement: String,
    /// `content.encoding`.
    pub(crate) encoding: &'static str,
    /// `content.stored_size`: NULL when the stored bytes are the original ones.
    pub(crate) stored_size: Option<i64>,
}

impl ContentRow {
    /// Encodes `content` for the store; a size beyond an SQL BIGINT is refused.
    pub(crate) fn encode(content: &ContentRecord) -> Result<ContentRow, MetaError> {
        let size = to_sql_int(content.size).ok_or_else(|| {
            MetaError::Corrupt(format!("content {}: size {} is too large", content.hash, content.size))
        })?;
        let stored_size = content
            .stored_size
            .map(|n| {
                to_sql_int(n).ok_or_else(|| {
                    MetaError::Corrupt(format!("content {}: stored size {n} is too large", content.hash))
                })
            })
            .transpose()?;
        Ok(ContentRow {
            hash: content.hash.to_hex(),
            size,
            policy: content.policy.to_string(),
            placement: placement_json(&content.placement)?,
            encoding: content.encoding.as_str(),
            stored_size,
        })
    }

    /// The `versions` row's hash and size: `(None, 0)` for a tombstone.
    pub(crate) fn version_columns(row: Option<&ContentRow>) -> (Option<&str>, i64) {
        row.map_or((None, 0), |r| (Some(r.hash.as_str()), r.size))
    }

    /// Checks the size the upsert found recorded under this hash: the same SHA-256
    /// with another length means the caller or the store is wrong, and the write
    /// must be rolled back.
    pub(crate) fn check_recorded_size(&self, stored: i64) -> Result<(), MetaError> {
        if stored == self.size {
            return Ok(());
        }
        Err(MetaError::Corrupt(format!("content {}: recorded with size {stored}, now given {}", self.hash, self.size)))
    }
}

/// The arguments of `versions(after, limit)` as SQL integers.
pub(crate) struct VersionsPage {
    pub(crate) after: i64,
    pub(crate) limit: i64,
}

impl VersionsPage {
    /// The page above `after`, at most `limit` long, or `None` when it is empty by
    /// its arguments alone (a limit of 0, or `after` beyond any storable version).
    pub(crate) fn new(after: u64, limit: usize) -> Option<VersionsPage> {
        if limit == 0 {
            return None;
        }
        let after = to_sql_int(after)?;
        Some(VersionsPage { after, limit: to_sql_int(limit).unwrap_or(i64::MAX) })
    }
}

/// The statements a store lists with: one per kind of lower bound (inclusive for a
/// prefix, exclusive for `after`) and per presence of an upper bound, so that the
/// planner always gets plain range constraints on the key and stops at the end of
/// the prefix. Parameters: bucket, lower bound, [upper bound,] limit.
pub(crate) struct ListStatements {
    /// `name >= lower`.
    pub(crate) from: &'static str,
    /// `name >= lower AND name < upper`.
    pub(crate) from_upto: &'static str,
    /// `name > lower`.
    pub(crate) after: &'static str,
    /// `name > lower AND name < upper`.
    pub(crate) after_upto: &'static str,
}

/// The name range and limit of `list(prefix, after, limit)`: the lower bound is the
/// prefix itself (inclusive) or `after` (exclusive), whichever is higher; the upper
/// bound is the prefix's successor, when there is one.
pub(crate) struct ListRange {
    pub(crate) lower: String,
    pub(crate) exclusive: bool,
    pub(crate) upper: Option<String>,
    pub(crate) limit: i64,
}

impl ListRange {
    /// The range, or `None` when the listing is empty by its arguments (a limit of 0).
    pub(crate) fn new(prefix: &str, after: Option<&str>, limit: usize) -> Option<ListRange> {
        if limit == 0 {
            return None;
        }
        let (lower, exclusive) = match after {
            Some(after) if after >= prefix => (after, true),
            _ => (prefix, false),
        };
        Some(ListRange {
            lower: lower.to_string(),
            exclusive,
            upper: prefix_successor(prefix),
            limit: to_sql_int(limit).unwrap_or(i64::MAX),
        })
    }

    /// The statement of `statements` that this range binds.
    pub(crate) fn statement(&self, statements: &ListStatements) -> &'static str {
        match (self.exclusive, self.upper.is_some()) {
            (false, false) => statements.from,
            (false, true) => statements.from_upto,
            (true, false) => statements.after,
            (true, true) => statements.after_upto,
        }
    }
}

/// The smallest string greater than every string starting with `prefix`, or `None`
/// when there is none (empty prefix, or only `char::MAX`es). Code-point order is
/// UTF-8 byte order, which is how both stores compare names (SQLite's `BINARY`,
/// PostgreSQL's `COLLATE "C"`).
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A `versions ⟕ content` (or `heads ⟕ versions ⟕ content`) row as stored, before
/// validation, as every store's queries return it. `size` and `created_ms` are
/// `None` only when a head points at a missing version (PostgreSQL's `heads`).
pub(crate) struct RawVersion {
    pub(crate) bucket: String,
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) hash: Option<String>,
    pub(crate) size: Option<i64>,
    pub(crate) created_ms: Option<i64>,
    pub(crate) content_hash: Option<String>,
    pub(crate) content_size: Option<i64>,
    pub(crate) policy: Option<String>,
    pub(crate) placement: Option<String>,
    pub(crate) encoding: Option<String>,
    pub(crate) stored_size: Option<i64>,
    /// `versions.attrs`: the JSON of [`ObjectAttrs`], NULL for none.
    pub(crate) attrs: Option<String>,
}

impl RawVersion {
    /// Validates the row into a version; anything unreadable is `Corrupt`.
    pub(crate) fn parse(self) -> Result<VersionRecord, MetaError> {
        let at = || format!("version {} of {}/{}", self.version, self.bucket, self.name);
        let version = version_number(self.version, at)?;
        let (Some(size), Some(created_ms)) = (self.size, self.created_ms) else {
            return Err(MetaError::Corrupt(format!("{}: the newest version is missing", at())));
        };
        if size < 0 {
            return Err(MetaError::Corrupt(format!("{}: negative size {size}", at())));
        }
        let content = match &self.hash {
            None => None,
            Some(hash) => {
                match (&self.content_hash, self.content_size, &self.policy, &self.placement, &self.encoding) {
                    (Some(_), Some(size), Some(policy), Some(placement), Some(encoding)) => Some(
                        RawContent {
                            hash: hash.clone(),
                            size,
                            policy: policy.clone(),
                            placement: placement.clone(),
                            encoding: encoding.clone(),
                            stored_size: self.stored_size,
                        }
                        .parse()?,
                    ),
                    _ => {
                        return Err(MetaError::Corrupt(format!("{}: points at unrecorded content {hash:?}", at())));
                    }
                }
            }
        };
        let attrs = self.attrs.as_deref().map(|json| parse_attrs(json, at)).transpose()?;
        Ok(VersionRecord { bucket: self.bucket, name: self.name, version, content, created_ms, attrs })
    }
}

/// The columns of a `content` row (`hash, size, policy, placement, encoding,
/// stored_size`, in this order in every store's queries); the stores read their
/// rows into this, and [`RawContent::parse`] validates it.
pub(crate) struct RawContent {
    pub(crate) hash: String,
    pub(crate) size: i64,
    pub(crate) policy: String,
    pub(crate) placement: String,
    pub(crate) encoding: String,
    pub(crate) stored_size: Option<i64>,
}

impl RawContent {
    /// Validates a content row.
    pub(crate) fn parse(self) -> Result<ContentRecord, MetaError> {
        let RawContent { hash, size, policy, placement, encoding, stored_size } = self;
        let bad = |what: String| MetaError::Corrupt(format!("content {hash:?}: {what}"));
        let parsed_hash: ContentHash = hash.parse().map_err(|e| bad(format!("{e}")))?;
        let size = u64::try_from(size).map_err(|_| bad(format!("negative size {size}")))?;
        let policy: Policy = policy.parse().map_err(|e| bad(format!("{e}")))?;
        let placement: Placement =
            serde_json::from_str(&placement).map_err(|e| bad(format!("placement is not a JSON shard map: {e}")))?;
        let encoding: Encoding = encoding.parse().map_err(|e| bad(format!("{e}")))?;
        let stored_size =
            stored_size.map(|n| u64::try_from(n).map_err(|_| bad(format!("negative stored size {n}")))).transpose()?;
        if encoding != Encoding::Identity && stored_size.is_none() {
            return Err(bad(format!("encoding {encoding} without a stored size")));
        }
        Ok(ContentRecord { hash: parsed_hash, size, policy, placement, encoding, stored_size })
    }
}

/// A placement as stored: a JSON object of shard index → address.
pub(crate) fn placement_json(placement: &Placement) -> Result<String, MetaError> {
    serde_json::to_string(placement).map_err(|e| MetaError::Corrupt(format!("cannot encode a placement: {e}")))
}

/// What a delete does, given the name's newest version as it stands inside the
/// delete's transaction (its number, and whether it is a tombstone): `None` to go on
/// and add the tombstone, or the outcome that refuses it.
pub(crate) fn delete_refused(
    bucket: &str,
    name: &str,
    newest: Option<(i64, bool)>,
) -> Result<Option<DeleteOutcome>, MetaError> {
    match newest {
        None => Ok(Some(DeleteOutcome::NoSuchName)),
        Some((version, true)) => {
            let version = version_number(version, || format!("{bucket}/{name}: newest version"))?;
            Ok(Some(DeleteOutcome::AlreadyDeleted { version }))
        }
        Some((_, false)) => Ok(None),
    }
}

/// The columns of an `uploads` row, in the order both stores select them
/// (a macro, so that the stores' statements can be `concat!`ed constants).
macro_rules! upload_columns {
    () => {
        "id, bucket, name, length, upload_offset, metadata, expected, hasher, created_ms, expires_ms, finished_version"
    };
}
pub(crate) use upload_columns;

/// An `uploads` row as read, before validation.
pub(crate) struct RawUpload {
    pub(crate) id: String,
    pub(crate) bucket: String,
    pub(crate) name: String,
    pub(crate) length: Option<i64>,
    pub(crate) offset: i64,
    pub(crate) metadata: String,
    pub(crate) expected: Option<String>,
    pub(crate) hasher: Vec<u8>,
    pub(crate) created_ms: i64,
    pub(crate) expires_ms: i64,
    pub(crate) finished_version: Option<i64>,
}

impl RawUpload {
    /// Validates the row: non-negative sizes, a hash where one is expected.
    pub(crate) fn parse(self) -> Result<UploadRecord, MetaError> {
        let id = self.id;
        let bad = |what: String| MetaError::Corrupt(format!("upload {id}: {what}"));
        let size = |n: i64, what: &str| u64::try_from(n).map_err(|_| bad(format!("negative {what} {n}")));
        let length = self.length.map(|n| size(n, "length")).transpose()?;
        let offset = size(self.offset, "offset")?;
        let expected = self
            .expected
            .map(|h| h.parse::<ContentHash>().map_err(|e| bad(format!("expected hash: {e}"))))
            .transpose()?;
        let finished_version = self
            .finished_version
            .map(|v| version_number(v, || format!("upload {id}: finished version")))
            .transpose()?;
        Ok(UploadRecord {
            bucket: self.bucket,
            name: self.name,
            length,
            offset,
            metadata: self.metadata,
            expected,
            hasher: self.hasher,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            finished_version,
            id,
        })
    }
}

/// Validates an `upload_parts` row (offset, size, hash).
pub(crate) fn parse_part(id: &str, offset: i64, size: i64, hash: &str) -> Result<UploadPart, MetaError> {
    let bad = |what: String| MetaError::Corrupt(format!("upload {id} part at {offset}: {what}"));
    Ok(UploadPart {
        offset: u64::try_from(offset).map_err(|_| bad("negative offset".into()))?,
        size: u64::try_from(size).map_err(|_| bad(format!("negative size {size}")))?,
        hash: hash.parse().map_err(|e| bad(format!("{e}")))?,
    })
}

/// An upload's numbers as SQL integers; a value beyond BIGINT is refused.
pub(crate) fn upload_int(n: u64, what: &str) -> Result<i64, MetaError> {
    to_sql_int(n).ok_or_else(|| MetaError::Corrupt(format!("upload {what} {n} is too large")))
}

/// [`ObjectAttrs`] as the `attrs` column of a version or a multipart upload stores
/// them: one JSON object.
pub(crate) fn attrs_json(attrs: &ObjectAttrs) -> Result<String, MetaError> {
    serde_json::to_string(attrs).map_err(|e| MetaError::Corrupt(format!("cannot encode object attributes: {e}")))
}

/// Reads an `attrs` column; anything but a JSON object of [`ObjectAttrs`]' fields is
/// `Corrupt` (`at` names the row).
pub(crate) fn parse_attrs(json: &str, at: impl FnOnce() -> String) -> Result<ObjectAttrs, MetaError> {
    serde_json::from_str(json).map_err(|e| MetaError::Corrupt(format!("{}: unreadable attributes: {e}", at())))
}

/// The columns of a `multipart_uploads` row, in the order both stores select them.
macro_rules! multipart_columns {
    () => {
        "id, bucket, name, attrs, created_ms"
    };
}
pub(crate) use multipart_columns;

/// A `multipart_uploads` row as read, before validation.
pub(crate) struct RawMultipart {
    pub(crate) id: String,
    pub(crate) bucket: String,
    pub(crate) name: String,
    pub(crate) attrs: String,
    pub(crate) created_ms: i64,
}

impl RawMultipart {
    /// Validates the row: its attributes must be readable.
    pub(crate) fn parse(self) -> Result<MultipartRecord, MetaError> {
        let attrs = parse_attrs(&self.attrs, || format!("multipart upload {}", self.id))?;
        Ok(MultipartRecord { id: self.id, bucket: self.bucket, name: self.name, attrs, created_ms: self.created_ms })
    }
}

/// The columns of a `multipart_parts` row as both stores select them.
macro_rules! multipart_part_columns {
    () => {
        "part_number, hash, size, etag, created_ms"
    };
}
pub(crate) use multipart_part_columns;

/// A `multipart_parts` row as read, before validation.
pub(crate) struct RawMultipartPart {
    pub(crate) part_number: i64,
    pub(crate) hash: String,
    pub(crate) size: i64,
    pub(crate) etag: String,
    pub(crate) created_ms: i64,
}

impl RawMultipartPart {
    /// Validates the row of upload `id`: a part number that fits in `u32`, a hash,
    /// a non-negative size.
    pub(crate) fn parse(self, id: &str) -> Result<MultipartPart, MetaError> {
        let n = self.part_number;
        let bad = |what: String| MetaError::Corrupt(format!("multipart upload {id} part {n}: {what}"));
        Ok(MultipartPart {
            part_number: u32::try_from(n).map_err(|_| bad("invalid part number".into()))?,
            hash: self.hash.parse().map_err(|e| bad(format!("{e}")))?,
            size: u64::try_from(self.size).map_err(|_| bad(format!("negative size {}", self.size)))?,
            etag: self.etag,
            created_ms: self.created_ms,
        })
    }
}

/// The columns of an `access_keys` row as both stores select them.
macro_rules! key_columns {
    () => {
        "access_key, secret, buckets, read_only, created_ms"
    };
}
pub(crate) use key_columns;

/// An `access_keys` row as read, before validation.
pub(crate) struct RawAccessKey {
    pub(crate) access_key: String,
    pub(crate) secret: String,
    pub(crate) buckets: String,
    pub(crate) read_only: bool,
    pub(crate) created_ms: i64,
}

impl RawAccessKey {
    /// Validates the row: `buckets` must be a JSON array of strings.
    pub(crate) fn parse(self) -> Result<AccessKey, MetaError> {
        let buckets: Vec<String> = serde_json::from_str(&self.buckets).map_err(|e| {
            MetaError::Corrupt(format!("access key {:?}: buckets are not a JSON array of names: {e}", self.access_key))
        })?;
        Ok(AccessKey {
            access_key: self.access_key,
            secret: self.secret,
            buckets,
            read_only: self.read_only,
            created_ms: self.created_ms,
        })
    }
}

/// An access key's buckets as stored: a JSON array of names.
pub(crate) fn key_buckets_json(buckets: &[String]) -> Result<String, MetaError> {
    serde_json::to_string(buckets).map_err(|e| MetaError::Corrupt(format!("cannot encode a bucket list: {e}")))
}

/// The statements of a listing whose lower bound is given by two parameters (two
/// key columns), one per presence of an upper bound on the first. Parameters:
/// bucket, the two lower-bound values, [upper bound,] limit.
pub(crate) struct PairStatements {
    /// No upper bound.
    pub(crate) open: &'static str,
    /// `name < upper`.
    pub(crate) upto: &'static str,
}

/// The range and limit of `list_versions(prefix, after, limit)`, ordered by name
/// ascending then version descending: names from `lower` (inclusive), where the
/// versions of `lower` itself are only those numbered `max_version` or below (the
/// rest of `after`'s name), up to the prefix's successor.
pub(crate) struct VersionListRange {
    pub(crate) lower: String,
    pub(crate) max_version: i64,
    pub(crate) upper: Option<String>,
    pub(crate) limit: i64,
}

impl VersionListRange {
    /// The range, or `None` when the listing is empty by its arguments (a limit of 0).
    pub(crate) fn new(prefix: &str, after: Option<(&str, u64)>, limit: usize) -> Option<VersionListRange> {
        if limit == 0 {
            return None;
        }
        let (lower, max_version) = match after {
            // Strictly after (name, v) is (name, below v), then later names.
            Some((name, v)) if name >= prefix => (name, to_sql_int(v.saturating_sub(1)).unwrap_or(i64::MAX)),
            _ => (prefix, i64::MAX),
        };
        Some(VersionListRange {
            lower: lower.to_string(),
            max_version,
            upper: prefix_successor(prefix),
            limit: to_sql_int(limit).unwrap_or(i64::MAX),
        })
    }

    /// The statement of `statements` that this range binds.
    pub(crate) fn statement(&self, statements: &PairStatements) -> &'static str {
        if self.upper.is_some() {
            statements.upto
        } else {
            statements.open
        }
    }
}

/// The range and limit of `multipart_uploads(prefix, after, limit)`, ordered by
/// (name, id): from `(name, id)` (exclusive or inclusive) up to the prefix's
/// successor.
pub(crate) struct UploadListRange {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) exclusive: bool,
    pub(crate) upper: Option<String>,
    pub(crate) limit: i64,
}

impl UploadListRange {
    /// The range, or `None` when the listing is empty by its arguments (a limit of 0).
    pub(crate) fn new(prefix: &str, after: Option<(&str, &str)>, limit: usize) -> Option<UploadListRange> {
        if limit == 0 {
            return None;
        }
        let (name, id, exclusive) = match after {
            Some((name, id)) if name >= prefix => (name, id, true),
            _ => (prefix, "", false),
        };
        Some(UploadListRange {
            name: name.to_string(),
            id: id.to_string(),
            exclusive,
            upper: prefix_successor(prefix),
            limit: to_sql_int(limit).unwrap_or(i64::MAX),
        })
    }

    /// The statement of `statements` (`from*`: `>=`, `after*`: `>`) that this range
    /// binds.
    pub(crate) fn statement(&self, statements: &ListStatements) -> &'static str {
        match (self.exclusive, self.upper.is_some()) {
            (false, false) => statements.from,
            (false, true) => statements.from_upto,
            (true, false) => statements.after,
            (true, true) => statements.after_upto,
        }
    }
}

/// The uploads the expiry worker removes in batches: tus uploads past their expiry,
/// S3 multipart uploads created before a cutoff. Each store reads a batch's ids
/// with its own statement (PostgreSQL locks them) and drops each upload its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Batch {
    /// tus uploads past their expiry.
    ExpiredUploads,
    /// S3 multipart uploads created at or before a cutoff.
    StaleMultipart,
}

impl Batch {
    /// The method's name, for errors.
    pub(crate) fn what(self) -> &'static str {
        self.pick("remove_expired_uploads", "remove_stale_multipart")
    }

    /// `expired` for a batch of tus uploads, `stale` for one of multipart uploads.
    pub(crate) fn pick<T>(self, expired: T, stale: T) -> T {
        match self {
            Batch::ExpiredUploads => expired,
            Batch::StaleMultipart => stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_count() {
        assert_eq!(parse_state("h", "live", None).unwrap(), ContentState::Live);
        assert_eq!(parse_state("h", "doomed", Some(5)).unwrap(), ContentState::Doomed { since_ms: 5 });
        assert_eq!(parse_state("h", "deleting", None).unwrap(), ContentState::Deleting);
        assert!(matches!(parse_state("h", "doomed", None), Err(MetaError::Corrupt(_))));
        assert!(matches!(parse_state("h", "gone", None), Err(MetaError::Corrupt(_))));
        let rows = [("live".to_string(), 3), ("doomed".to_string(), 2), ("deleting".to_string(), 1)];
        assert_eq!(count_states(rows).unwrap(), ContentCounts { live: 3, doomed: 2, deleting: 1 });
        assert!(count_states([("x".to_string(), 1)]).is_err());
        assert!(count_states([("live".to_string(), -1)]).is_err());
    }

    #[test]
    fn begin_delete_and_prune_decide_as_the_protocol_says() {
        let doomed = Some(ContentState::Doomed { since_ms: 10 });
        assert_eq!(begin_delete_step(doomed, false, 10), BeginDelete::Delete);
        assert_eq!(begin_delete_step(doomed, false, 9), BeginDelete::Leave);
        assert_eq!(begin_delete_step(doomed, true, 10), BeginDelete::Revive);
        assert_eq!(begin_delete_step(doomed, true, 9), BeginDelete::Revive);
        for other in [None, Some(ContentState::Live), Some(ContentState::Deleting)] {
            assert_eq!(begin_delete_step(other, false, i64::MAX), BeginDelete::Leave);
        }
        assert_eq!(prune_step(None, None, Some(0)), Prune::Nothing);
        assert_eq!(prune_step(Some((5, true, 100)), Some(3), Some(100)), Prune::All);
        assert_eq!(prune_step(Some((5, true, 100)), Some(3), Some(99)), Prune::Below(3));
        assert_eq!(prune_step(Some((5, false, 100)), None, Some(1000)), Prune::Nothing);
        assert_eq!(keep_offset(None), None);
        assert_eq!(keep_offset(Some(0)), None);
        assert_eq!(keep_offset(Some(3)), Some(2));
        assert_eq!(sql_limit(0), None);
        assert_eq!(ttl_ms(std::time::Duration::from_micros(10)), 1);
    }

    #[test]
    fn prefix_successor_bounds_exactly_the_prefixed_names() {
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("a/"), Some("a0".to_string()));
        assert_eq!(prefix_successor("a\u{7f}"), Some("a\u{80}".to_string()));
        assert_eq!(prefix_successor("a\u{D7FF}"), Some("a\u{E000}".to_string()));
        assert_eq!(prefix_successor("ab\u{10FFFF}"), Some("ac".to_string()));
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        let prefix = "x\u{7f}";
        let upper = prefix_successor(prefix).unwrap();
        for name in ["x\u{7f}", "x\u{7f}\u{10FFFF}zz", "x\u{7f}\u{0}"] {
            assert!(name >= prefix && name < upper.as_str(), "{name:?}");
        }
        for name in ["x\u{80}", "x\u{7e}\u{10FFFF}", "x", "y"] {
            assert!(!(name >= prefix && name < upper.as_str()), "{name:?}");
        }
    }

    #[test]
    fn list_range_takes_the_higher_lower_bound_and_picks_its_statement() {
        let statements =
            ListStatements { from: "from", from_upto: "from_upto", after: "after", after_upto: "after_upto" };
        assert!(ListRange::new("b/", None, 0).is_none());
        let r = ListRange::new("b/", None, 10).unwrap();
        assert_eq!((r.lower.as_str(), r.exclusive, r.upper.as_deref(), r.limit), ("b/", false, Some("b0"), 10));
        assert_eq!(r.statement(&statements), "from_upto");
        let r = ListRange::new("b/", Some("b/x"), usize::MAX).unwrap();
        assert_eq!((r.lower.as_str(), r.exclusive, r.limit), ("b/x", true, i64::MAX));
        assert_eq!(r.statement(&statements), "after_upto");
        // `after` below the prefix: the prefix is the (inclusive) bound.
        let r = ListRange::new("b/", Some("a"), 1).unwrap();
        assert_eq!((r.lower.as_str(), r.exclusive), ("b/", false));
        assert_eq!(ListRange::new("", None, 1).unwrap().statement(&statements), "from");
        assert_eq!(ListRange::new("", Some("k"), 1).unwrap().statement(&statements), "after");
    }

    #[test]
    fn version_and_upload_listings_start_strictly_after_their_cursor() {
        assert!(VersionListRange::new("p", None, 0).is_none());
        let r = VersionListRange::new("p/", None, 5).unwrap();
        assert_eq!((r.lower.as_str(), r.max_version, r.upper.as_deref(), r.limit), ("p/", i64::MAX, Some("p0"), 5));
        let r = VersionListRange::new("p/", Some(("p/x", 3)), 5).unwrap();
        assert_eq!((r.lower.as_str(), r.max_version), ("p/x", 2));
        // Version 1 (or 0) of a name was its last: nothing of it is left.
        assert_eq!(VersionListRange::new("", Some(("a", 1)), 5).unwrap().max_version, 0);
        assert_eq!(VersionListRange::new("", Some(("a", 0)), 5).unwrap().max_version, 0);
        assert_eq!(VersionListRange::new("", Some(("a", u64::MAX)), 5).unwrap().max_version, i64::MAX);
        // A cursor below the prefix: the prefix is the bound.
        let r = VersionListRange::new("p/", Some(("a", 3)), 5).unwrap();
        assert_eq!((r.lower.as_str(), r.max_version), ("p/", i64::MAX));
        let statements = PairStatements { open: "open", upto: "upto" };
        assert_eq!(r.statement(&statements), "upto");
        assert_eq!(VersionListRange::new("", None, 1).unwrap().statement(&statements), "open");

        let statements =
            ListStatements { from: "from", from_upto: "from_upto", after: "after", after_upto: "after_upto" };
        assert!(UploadListRange::new("", None, 0).is_none());
        let r = UploadListRange::new("p/", Some(("p/x", "id1")), 5).unwrap();
        assert_eq!((r.name.as_str(), r.id.as_str(), r.exclusive), ("p/x", "id1", true));
        assert_eq!(r.statement(&statements), "after_upto");
        let r = UploadListRange::new("p/", Some(("a", "id1")), 5).unwrap();
        assert_eq!((r.name.as_str(), r.id.as_str(), r.exclusive), ("p/", "", false));
        assert_eq!(UploadListRange::new("", None, 5).unwrap().statement(&statements), "from");
    }

    #[test]
    fn attrs_parts_and_keys_refuse_corrupt_rows() {
        let attrs = ObjectAttrs { etag: Some("abc".into()), ..ObjectAttrs::default() };
        let json = attrs_json(&attrs).unwrap();
        assert_eq!(parse_attrs(&json, String::new).unwrap(), attrs);
        assert_eq!(parse_attrs("{}", String::new).unwrap(), ObjectAttrs::default());
        for bad in ["", "[1]", "{\"etag\": 5}", "nope"] {
            assert!(matches!(parse_attrs(bad, String::new), Err(MetaError::Corrupt(_))), "{bad:?}");
        }
        let hash = ContentHash::of(b"x").to_hex();
        let part = |part_number, hash: &str, size| RawMultipartPart {
            part_number,
            hash: hash.to_string(),
            size,
            etag: "e".into(),
            created_ms: 1,
        };
        assert_eq!(part(3, &hash, 5).parse("u").unwrap().part_number, 3);
        assert!(part(-1, &hash, 5).parse("u").is_err());
        assert!(part(i64::from(u32::MAX) + 1, &hash, 5).parse("u").is_err());
        assert!(part(1, "zz", 5).parse("u").is_err());
        assert!(part(1, &hash, -5).parse("u").is_err());
        let key = |buckets: &str| RawAccessKey {
            access_key: "k".into(),
            secret: "s".into(),
            buckets: buckets.into(),
            read_only: true,
            created_ms: 1,
        };
        assert_eq!(key(&key_buckets_json(&["a".into(), "b".into()]).unwrap()).parse().unwrap().buckets, ["a", "b"]);
        assert!(key("[]").parse().unwrap().buckets.is_empty());
        for bad in ["", "{}", "[1]", "\"a\""] {
            assert!(matches!(key(bad).parse(), Err(MetaError::Corrupt(_))), "{bad:?}");
        }
    }

    #[test]
    fn versions_page_is_none_when_its_arguments_select_nothing() {
        assert!(VersionsPage::new(0, 0).is_none());
        assert!(VersionsPage::new(u64::MAX, 10).is_none());
        let page = VersionsPage::new(7, usize::MAX).unwrap();
        assert_eq!((page.after, page.limit), (7, i64::MAX));
    }

    #[test]
    fn version_numbers_from_the_store_are_positive() {
        assert_eq!(next_version("b", "n", 1).unwrap(), 1);
        for bad in [0, -1, i64::MIN] {
            assert!(matches!(next_version("b", "n", bad), Err(MetaError::Corrupt(_))), "{bad}");
        }
        assert_eq!(delete_refused("b", "n", None).unwrap(), Some(DeleteOutcome::NoSuchName));
        assert_eq!(
            delete_refused("b", "n", Some((3, true))).unwrap(),
            Some(DeleteOutcome::AlreadyDeleted { version: 3 })
        );
        assert_eq!(delete_refused("b", "n", Some((3, false))).unwrap(), None);
        assert!(matches!(delete_refused("b", "n", Some((0, true))), Err(MetaError::Corrupt(_))));
    }
}
