//! Rows as the SQL metadata stores read and write them, their validation, and the
//! checks of the trait's arguments: shared by the SQLite and PostgreSQL
//! implementations, so that both refuse the same corrupt rows and bound the same
//! queries the same way. Each store only maps its own row type onto [`RawVersion`],
//! binds [`ContentRow`], [`VersionsPage`] and [`ListRange`] in its own placeholder
//! syntax, and runs its own statements.
//!
//! The shared bounds and conversions are here; the rows and checks of each domain
//! are beside them, mirroring the trait's files: `versions.rs` (version rows,
//! listings, delete and retention decisions), `content.rs` (content rows and their
//! lifecycle), `cluster.rs` (leases and counts), `uploads.rs` (tus upload rows and
//! the expiry batches) and `s3.rs` (multipart uploads and access keys). Everything
//! is re-exported here, so the stores name it all as `row::…`.

mod cluster;
mod content;
mod s3;
mod uploads;
mod versions;

pub(crate) use cluster::{count, ttl_ms};
pub(crate) use content::{
    begin_delete_step, count_states, parse_state, placement_json, BeginDelete, ContentRow, RawContent, DELETING, LIVE,
};
pub(crate) use s3::{
    key_buckets_json, key_columns, multipart_columns, multipart_part_columns, RawAccessKey, RawMultipart,
    RawMultipartPart, UploadListRange,
};
pub(crate) use uploads::{parse_part, upload_columns, upload_int, Batch, RawUpload};
pub(crate) use versions::{
    delete_refused, keep_offset, next_version, prune_step, select_versions, ListRange, Prune, RawVersion,
    VersionListRange, VersionsPage,
};

use super::{MetaError, ObjectAttrs};
use crate::content::ContentHash;

/// A limit as an SQL integer, or `None` when it selects nothing (0).
pub(crate) fn sql_limit(limit: usize) -> Option<i64> {
    (limit > 0).then(|| to_sql_int(limit).unwrap_or(i64::MAX))
}

/// The exclusive lower bound of a hash-ordered page: every hash sorts after "".
pub(crate) fn hash_after(after: Option<&ContentHash>) -> String {
    after.map(ContentHash::to_hex).unwrap_or_default()
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

/// The statements a store lists with: one per kind of lower bound (inclusive for a
/// prefix, exclusive for `after`) and per presence of an upper bound, so that the
/// planner always gets plain range constraints on the key and stops at the end of
/// the prefix. Parameters: bucket, lower bound, [upper bound,] limit.
/// `S` is a statement: its text, or both dialects' texts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListStatements<S = &'static str> {
    /// `name >= lower`.
    pub(crate) from: S,
    /// `name >= lower AND name < upper`.
    pub(crate) from_upto: S,
    /// `name > lower`.
    pub(crate) after: S,
    /// `name > lower AND name < upper`.
    pub(crate) after_upto: S,
}

/// The statements of a listing whose lower bound is given by two parameters (two
/// key columns), one per presence of an upper bound on the first. Parameters:
/// bucket, the two lower-bound values, [upper bound,] limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PairStatements<S = &'static str> {
    /// No upper bound.
    pub(crate) open: S,
    /// `name < upper`.
    pub(crate) upto: S,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ContentState;

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
}
