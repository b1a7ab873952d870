//! The version rows of the SQL stores: the columns every version query returns,
//! their validation into [`VersionRecord`], the bounds of `versions`, `list` and
//! `list_versions`, and the decisions of `delete` and `prune`.

use super::{parse_attrs, prefix_successor, to_sql_int, version_number, ListStatements, PairStatements, RawContent};
use crate::meta::{DeleteOutcome, MetaError, VersionRecord};

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
pub(crate) use select_versions;

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

/// The number the store handed out for a new version of `bucket/name` (the head's
/// increment, or the highest version plus one), checked.
pub(crate) fn next_version(bucket: &str, name: &str, next: i64) -> Result<u64, MetaError> {
    version_number(next, || format!("{bucket}/{name}: next version"))
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
    pub(crate) fn statement<S: Copy>(&self, statements: &ListStatements<S>) -> S {
        match (self.exclusive, self.upper.is_some()) {
            (false, false) => statements.from,
            (false, true) => statements.from_upto,
            (true, false) => statements.after,
            (true, true) => statements.after_upto,
        }
    }
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
    pub(crate) fn statement<S: Copy>(&self, statements: &PairStatements<S>) -> S {
        if self.upper.is_some() {
            statements.upto
        } else {
            statements.open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
