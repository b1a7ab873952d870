//! Rows as the SQL metadata stores read them, and their validation: shared by the
//! SQLite and PostgreSQL implementations, so that both refuse the same corrupt
//! rows the same way. Each store only maps its own row type onto [`RawVersion`].

use super::{ContentRecord, DeleteOutcome, MetaError, VersionRecord};

/// The columns every version query of either store returns, in the order the
/// stores' row mappings read them into [`RawVersion`], and the join that yields
/// them; the caller appends its `WHERE` (in its own placeholder syntax).
macro_rules! select_versions {
    ($($tail:literal),*) => {
        concat!(
            "SELECT v.bucket, v.name, v.version, v.hash, v.size, v.created_ms, ",
            "c.hash, c.size, c.policy, c.placement ",
            "FROM versions v LEFT JOIN content c ON c.hash = v.hash ",
            $($tail),*
        )
    };
}
use crate::content::{ContentHash, Placement, Policy};
pub(crate) use select_versions;

/// A version number or count as an SQL BIGINT / INTEGER; `None` beyond `i64::MAX`.
pub(crate) fn to_sql_int<T: TryInto<i64>>(n: T) -> Option<i64> {
    n.try_into().ok()
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
}

impl RawVersion {
    /// Validates the row into a version; anything unreadable is `Corrupt`.
    pub(crate) fn parse(self) -> Result<VersionRecord, MetaError> {
        let at = || format!("version {} of {}/{}", self.version, self.bucket, self.name);
        let version = u64::try_from(self.version)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| MetaError::Corrupt(format!("{}: invalid version number", at())))?;
        let (Some(size), Some(created_ms)) = (self.size, self.created_ms) else {
            return Err(MetaError::Corrupt(format!("{}: the newest version is missing", at())));
        };
        if size < 0 {
            return Err(MetaError::Corrupt(format!("{}: negative size {size}", at())));
        }
        let content = match &self.hash {
            None => None,
            Some(hash) => match (&self.content_hash, self.content_size, &self.policy, &self.placement) {
                (Some(_), Some(size), Some(policy), Some(placement)) => {
                    Some(parse_content(hash, size, policy, placement)?)
                }
                _ => {
                    return Err(MetaError::Corrupt(format!("{}: points at unrecorded content {hash:?}", at())));
                }
            },
        };
        Ok(VersionRecord { bucket: self.bucket, name: self.name, version, content, created_ms })
    }
}

/// Validates a content row.
pub(crate) fn parse_content(hash: &str, size: i64, policy: &str, placement: &str) -> Result<ContentRecord, MetaError> {
    let bad = |what: String| MetaError::Corrupt(format!("content {hash:?}: {what}"));
    let parsed_hash: ContentHash = hash.parse().map_err(|e| bad(format!("{e}")))?;
    let size = u64::try_from(size).map_err(|_| bad(format!("negative size {size}")))?;
    let policy: Policy = policy.parse().map_err(|e| bad(format!("{e}")))?;
    let placement: Placement =
        serde_json::from_str(placement).map_err(|e| bad(format!("placement is not a JSON shard map: {e}")))?;
    Ok(ContentRecord { hash: parsed_hash, size, policy, placement })
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
            let version = u64::try_from(version)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| MetaError::Corrupt(format!("{bucket}/{name}: invalid newest version {version}")))?;
            Ok(Some(DeleteOutcome::AlreadyDeleted { version }))
        }
        Some((_, false)) => Ok(None),
    }
}
