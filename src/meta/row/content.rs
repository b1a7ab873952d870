//! The content rows of the SQL stores: the columns a version's content is written
//! as, their validation into [`ContentRecord`], and the lifecycle states and the
//! garbage collector's `begin_delete` decision.

use super::to_sql_int;
use crate::content::{ContentHash, Encoding, Placement, Policy};
use crate::meta::{ContentCounts, ContentRecord, ContentState, MetaError};

/// The `content.state` values, as the migrations' `CHECK` constraints allow them.
pub(crate) const LIVE: &str = "live";
/// See [`LIVE`].
pub(crate) const DOOMED: &str = "doomed";
/// See [`LIVE`].
pub(crate) const DELETING: &str = "deleting";

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
}
