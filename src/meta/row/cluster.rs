//! The cluster rows of the SQL stores: lease lengths as stored, and the counts
//! read back (shards per server, rows removed).

use super::to_sql_int;
use crate::meta::MetaError;

/// A lease's time to live in whole milliseconds: at least 1, and at most a quarter
/// of `i64::MAX`, so that adding it to any clock reading of this era cannot
/// overflow an SQL BIGINT.
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    to_sql_int(ttl.as_millis()).unwrap_or(i64::MAX).clamp(1, i64::MAX / 4)
}

/// A count read from the store (shards per server, rows removed), checked.
pub(crate) fn count(n: i64, what: impl FnOnce() -> String) -> Result<u64, MetaError> {
    u64::try_from(n).map_err(|_| MetaError::Corrupt(format!("{}: negative count {n}", what())))
}
