//! The statements of [`VersionStore`](crate::meta::VersionStore) that both stores
//! run alike: reading and paging versions, listing them for S3, retention.

use crate::meta::row::select_versions;
use crate::meta::sql::{sql, Pair};

/// `list_versions`, as [`PairStatements`](crate::meta::row::PairStatements) wants
/// it: a range on the primary key of `versions` from `$2` (whose own versions count
/// only up to `$3`), newest version first within a name. The versions of one name
/// are sorted apart, a name at a time (SQLite's "right part of ORDER BY",
/// PostgreSQL's incremental sort), so the scan still stops at the limit.
macro_rules! select_version_list {
    ($upper:literal, $limit:literal) => {
        select_versions!(
            "WHERE v.bucket = $1 AND v.name >= $2 AND (v.name > $2 OR v.version <= $3) ",
            $upper,
            "ORDER BY v.name, v.version DESC LIMIT ",
            $limit
        )
    };
}

sql! {
    LATEST = select_versions!("WHERE v.bucket = $1 AND v.name = $2 ORDER BY v.version DESC LIMIT 1");

    VERSION = select_versions!("WHERE v.bucket = $1 AND v.name = $2 AND v.version = $3");

    VERSIONS = select_versions!("WHERE v.bucket = $1 AND v.name = $2 AND v.version > $3 ORDER BY v.version LIMIT $4");

    NEWEST_FULL = "SELECT version, hash IS NULL, created_ms FROM versions \
         WHERE bucket = $1 AND name = $2 ORDER BY version DESC LIMIT 1";

    KTH_NEWEST = "SELECT version FROM versions WHERE bucket = $1 AND name = $2 ORDER BY version DESC LIMIT 1 OFFSET $3";

    PRUNE_BELOW = "DELETE FROM versions WHERE bucket = $1 AND name = $2 AND version < $3";

    PRUNE_ALL = "DELETE FROM versions WHERE bucket = $1 AND name = $2";

    DELETE_VERSION = "DELETE FROM versions WHERE bucket = $1 AND name = $2 AND version = $3";

    VERSION_LIST_OPEN = select_version_list!("", "$4");

    VERSION_LIST_UPTO = select_version_list!("AND v.name < $4 ", "$5");
}

/// `list_versions`'s statements.
pub(crate) const VERSION_LIST: Pair = Pair { open: VERSION_LIST_OPEN, upto: VERSION_LIST_UPTO };
