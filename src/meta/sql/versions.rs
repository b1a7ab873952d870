//! [`VersionStore`] over any executor, and its statements: adding versions and
//! tombstones, reading and paging them, listing them for S3, retention.
//!
//! Where the stores differ, the code says so by dialect, in one place:
//!
//! - **Numbering.** SQLite takes the next number as `MAX(version) + 1` under its
//!   one write lock. PostgreSQL keeps each name's newest number in `heads` and
//!   takes the next with an upsert that row-locks the name's head until the commit,
//!   so writers of one name (on any host) queue there while writers of other names
//!   don't wait; `delete`, `prune` and `delete_version` lock the head first too,
//!   and move or drop it with the versions, so listing never meets a head without
//!   its version.
//! - **The clock.** SQLite stamps `created_ms` with this host's clock (every
//!   process on the file is on one host); PostgreSQL with the database's.
//! - **Listing.** SQLite walks the primary key of `versions` and keeps each name's
//!   newest (one seek each); PostgreSQL walks `heads` and joins its version.
//! - **Grouping.** `put_version`, `put_object` and `delete` are grouped writes
//!   ([`Executor::grouped`]): SQLite's group commit, one fsync for a batch.

use async_trait::async_trait;

use super::content::record_content;
use super::steps::share_bucket;
use super::{Dialect, Lists, Sql, SqlStore};
use crate::clock::now_ms;
use crate::meta::exec::{params, Conn, Executor, Row, Value};
use crate::meta::row::{
    attrs_json, delete_refused, keep_offset, next_version, prune_step, select_versions, sql_limit, to_sql_int,
    ContentRow, ListRange, Prune, RawVersion, VersionListRange, VersionsPage,
};
use crate::meta::sql::{sql, Pair};
use crate::meta::{ContentRecord, DeleteOutcome, MetaError, ObjectAttrs, Precondition, VersionRecord, VersionStore};

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

/// SQLite's listing: range constraints on the primary key of `versions`; the
/// correlated subquery keeps only each name's newest version (one seek per row).
macro_rules! sqlite_list {
    ($lower:literal, $upper:literal, $limit:literal) => {
        select_versions!(
            "WHERE v.bucket = ?1 AND v.name ",
            $lower,
            " ?2 ",
            $upper,
            "AND v.hash IS NOT NULL ",
            "AND v.version = (SELECT m.version FROM versions m ",
            "WHERE m.bucket = v.bucket AND m.name = v.name ORDER BY m.version DESC LIMIT 1) ",
            "ORDER BY v.name LIMIT ",
            $limit
        )
    };
}

/// PostgreSQL's listing: range constraints on the primary key of `heads`. The left
/// join keeps a head whose version row is missing, which [`RawVersion::parse`]
/// reports as corrupt instead of silently skipping the name.
macro_rules! postgres_list {
    ($lower:literal, $upper:literal, $limit:literal) => {
        concat!(
            "SELECT h.bucket, h.name, h.latest, v.hash, v.size, v.created_ms, ",
            "c.hash, c.size, c.policy, c.placement, c.encoding, c.stored_size, v.attrs ",
            "FROM heads h ",
            "LEFT JOIN versions v ON v.bucket = h.bucket AND v.name = h.name AND v.version = h.latest ",
            "LEFT JOIN content c ON c.hash = v.hash ",
            "WHERE h.bucket = $1 AND h.name ",
            $lower,
            " $2 ",
            $upper,
            "AND (v.hash IS NOT NULL OR v.version IS NULL) ",
            "ORDER BY h.name LIMIT ",
            $limit
        )
    };
}

/// `list`'s statements: bucket, lower bound, [upper bound,] limit.
pub(crate) const LIST: Lists = Lists {
    from: Sql::each(sqlite_list!(">=", "", "?3"), postgres_list!(">=", "", "$3")),
    from_upto: Sql::each(sqlite_list!(">=", "AND v.name < ?3 ", "?4"), postgres_list!(">=", "AND h.name < $3 ", "$4")),
    after: Sql::each(sqlite_list!(">", "", "?3"), postgres_list!(">", "", "$3")),
    after_upto: Sql::each(sqlite_list!(">", "AND v.name < ?3 ", "?4"), postgres_list!(">", "AND h.name < $3 ", "$4")),
};

/// The first names with versions, in (bucket, name) order.
const NAMES_FIRST: Sql = Sql::each(
    "SELECT DISTINCT bucket, name FROM versions ORDER BY bucket, name LIMIT ?1",
    "SELECT bucket, name FROM heads ORDER BY bucket, name LIMIT $1",
);

/// The names with versions after ($1, $2).
pub(crate) const NAMES_AFTER: Sql = Sql::each(
    "SELECT DISTINCT bucket, name FROM versions WHERE (bucket, name) > (?1, ?2) ORDER BY bucket, name LIMIT ?3",
    "SELECT bucket, name FROM heads WHERE (bucket, name) > ($1, $2) ORDER BY bucket, name LIMIT $3",
);

/// The name's next version number (PostgreSQL: taken from its head, which stays
/// row-locked until the commit).
const NEXT_VERSION: Sql = Sql::each(
    "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE bucket = ?1 AND name = ?2",
    "INSERT INTO heads (bucket, name, latest) VALUES ($1, $2, 1) \
     ON CONFLICT (bucket, name) DO UPDATE SET latest = heads.latest + 1 RETURNING latest",
);

/// Inserts a version: $1-$6 are bucket, name, version, hash, size, attrs; the
/// creation time is SQLite's ?7 (this host's clock) or PostgreSQL's own clock.
const INSERT_VERSION: Sql = Sql::each(
    "INSERT INTO versions (bucket, name, version, hash, size, created_ms, attrs) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?7, ?6) RETURNING created_ms",
    "INSERT INTO versions (bucket, name, version, hash, size, created_ms, attrs) \
     VALUES ($1, $2, $3, $4, $5, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT, $6) \
     RETURNING created_ms",
);

/// SQLite: the name's newest version and whether it is a tombstone.
const NEWEST: Sql = Sql::sqlite_only(
    "SELECT version, hash IS NULL FROM versions WHERE bucket = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1",
);

/// PostgreSQL: the name's newest version number, row-locking its head.
const LOCK_HEAD: Sql = Sql::postgres_only("SELECT latest FROM heads WHERE bucket = $1 AND name = $2 FOR UPDATE");

/// PostgreSQL: a conditional write's head, so that it can be locked even for a new
/// name (`latest` 0: the next version is 1; rolled back with a failed condition).
const ENSURE_HEAD: Sql = Sql::postgres_only(
    "INSERT INTO heads (bucket, name, latest) VALUES ($1, $2, 0) ON CONFLICT (bucket, name) DO NOTHING",
);

/// PostgreSQL: whether the version a head names is a tombstone.
const IS_TOMBSTONE: Sql =
    Sql::postgres_only("SELECT hash IS NULL FROM versions WHERE bucket = $1 AND name = $2 AND version = $3");

/// PostgreSQL: the newest version left, for the head.
const MAX_VERSION: Sql = Sql::postgres_only("SELECT MAX(version) FROM versions WHERE bucket = $1 AND name = $2");

/// PostgreSQL: moves the head.
const SET_HEAD: Sql = Sql::postgres_only("UPDATE heads SET latest = $3 WHERE bucket = $1 AND name = $2");

/// PostgreSQL: drops the head with the name's last version.
const DROP_HEAD: Sql = Sql::postgres_only("DELETE FROM heads WHERE bucket = $1 AND name = $2");

/// A row of the version queries ([`select_versions`]'s columns), validated.
fn version_row(row: &Row) -> Result<VersionRecord, MetaError> {
    RawVersion {
        bucket: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        hash: row.get(3)?,
        size: row.get(4)?,
        created_ms: row.get(5)?,
        content_hash: row.get(6)?,
        content_size: row.get(7)?,
        policy: row.get(8)?,
        placement: row.get(9)?,
        encoding: row.get(10)?,
        stored_size: row.get(11)?,
        attrs: row.get(12)?,
    }
    .parse()
}

/// The versions a query answers, validated.
async fn query_versions(
    c: &mut dyn Conn,
    what: &'static str,
    sql: Sql,
    p: &[Value],
) -> Result<Vec<VersionRecord>, MetaError> {
    c.query(what, sql, p).await?.iter().map(version_row).collect()
}

/// The version a query answers, if any, validated.
async fn query_version(
    c: &mut dyn Conn,
    what: &'static str,
    sql: Sql,
    p: &[Value],
) -> Result<Option<VersionRecord>, MetaError> {
    c.query_opt(what, sql, p).await?.as_ref().map(version_row).transpose()
}

/// Adds the next version of `bucket/name` inside the caller's write transaction
/// (not committed): upserts the content row, takes the next number (SQLite: under
/// the write lock; PostgreSQL: row-locking the name's head) and inserts the version.
pub(crate) async fn add_version(
    c: &mut dyn Conn,
    bucket: String,
    name: String,
    content: Option<ContentRecord>,
    attrs: Option<ObjectAttrs>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_version";
    let json = attrs.as_ref().map(attrs_json).transpose()?;
    let row = match &content {
        Some(content) => Some(record_content(c, WHAT, content).await?),
        None => None,
    };
    let next: i64 = c.query_one(WHAT, NEXT_VERSION, params![&bucket, &name]).await?.get(0)?;
    let version = next_version(&bucket, &name, next)?;
    let (hash, size) = ContentRow::version_columns(row.as_ref());
    let mut p = vec![Value::from(&bucket), Value::from(&name), next.into(), hash.into(), size.into(), json.into()];
    if c.dialect() == Dialect::Sqlite {
        p.push(now_ms().into());
    }
    let created_ms: i64 = c.query_one(WHAT, INSERT_VERSION, &p).await?.get(0)?;
    Ok(VersionRecord { bucket, name, version, content, created_ms, attrs })
}

/// `put_object` inside the caller's write transaction: the bucket is checked (and
/// on PostgreSQL share-locked) first, so a `delete_bucket` either finished before
/// (no such bucket) or comes after and sees this version. A `condition` is checked
/// with no write of the name possible before the insert: under SQLite's write
/// lock, or with the name's head locked (made, at 0, if the name is new: a
/// concurrent writer of the new name waits on that insert).
async fn add_object(
    c: &mut dyn Conn,
    bucket: String,
    name: String,
    content: ContentRecord,
    attrs: ObjectAttrs,
    condition: Option<Precondition>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_object";
    share_bucket(c, WHAT, &bucket).await?;
    if let Some(condition) = condition {
        if c.dialect() == Dialect::Postgres {
            c.execute(WHAT, ENSURE_HEAD, params![&bucket, &name]).await?;
            c.query_opt(WHAT, LOCK_HEAD, params![&bucket, &name]).await?;
        }
        let latest = query_version(c, WHAT, LATEST, params![&bucket, &name]).await?;
        if !condition.holds(latest.as_ref()) {
            return Err(MetaError::PreconditionFailed { bucket, name });
        }
    }
    add_version(c, bucket, name, Some(content), Some(attrs)).await
}

/// The name's newest version (number, tombstone?) inside the caller's write
/// transaction, with no other write of the name possible until the commit: under
/// SQLite's write lock, or with PostgreSQL's head row-locked.
async fn newest_locked(
    c: &mut dyn Conn,
    what: &'static str,
    bucket: &str,
    name: &str,
) -> Result<Option<(i64, bool)>, MetaError> {
    if c.dialect() == Dialect::Sqlite {
        let Some(row) = c.query_opt(what, NEWEST, params![bucket, name]).await? else {
            return Ok(None);
        };
        return Ok(Some((row.get(0)?, row.get(1)?)));
    }
    let Some(head) = c.query_opt(what, LOCK_HEAD, params![bucket, name]).await? else {
        return Ok(None);
    };
    let latest: i64 = head.get(0)?;
    // A statement of its own, so that it sees the versions committed while this
    // one waited for the lock (READ COMMITTED).
    let Some(row) = c.query_opt(what, IS_TOMBSTONE, params![bucket, name, latest]).await? else {
        return Err(MetaError::Corrupt(format!("{bucket}/{name}: the head names version {latest}, which is missing")));
    };
    Ok(Some((latest, row.get(0)?)))
}

/// Adds a tombstone to `bucket/name` inside the caller's write transaction, unless
/// the name has no version or its newest is a tombstone; of two deletes of one
/// name (in one process or two), only the first finds it live.
async fn delete_in(c: &mut dyn Conn, bucket: String, name: String) -> Result<DeleteOutcome, MetaError> {
    const WHAT: &str = "delete";
    let newest = newest_locked(c, WHAT, &bucket, &name).await?;
    if let Some(refused) = delete_refused(&bucket, &name, newest)? {
        return Ok(refused);
    }
    add_version(c, bucket, name, None, None).await.map(DeleteOutcome::Deleted)
}

/// Retention of `bucket/name` inside the caller's write transaction: no version of
/// the name can be added between the reads and the removal (SQLite's write lock;
/// PostgreSQL's head lock, taken first, and the head dropped with the last
/// version, so the next PUT starts again at 1).
async fn prune_in(
    c: &mut dyn Conn,
    bucket: String,
    name: String,
    keep: Option<u64>,
    tombstone_cutoff_ms: Option<i64>,
) -> Result<u64, MetaError> {
    const WHAT: &str = "prune";
    let postgres = c.dialect() == Dialect::Postgres;
    if postgres && c.query_opt(WHAT, LOCK_HEAD, params![&bucket, &name]).await?.is_none() {
        return Ok(0);
    }
    // Statements of their own, after the lock: they see every version committed
    // while this one waited for it (READ COMMITTED).
    let newest = match c.query_opt(WHAT, NEWEST_FULL, params![&bucket, &name]).await? {
        Some(row) => Some((row.get(0)?, row.get(1)?, row.get(2)?)),
        None => None,
    };
    let kth = match (newest, keep_offset(keep)) {
        (Some(_), Some(offset)) => match c.query_opt(WHAT, KTH_NEWEST, params![&bucket, &name, offset]).await? {
            Some(row) => Some(row.get(0)?),
            None => None,
        },
        _ => None,
    };
    let removed = match prune_step(newest, kth, tombstone_cutoff_ms) {
        Prune::Nothing => 0,
        Prune::Below(v) => c.execute(WHAT, PRUNE_BELOW, params![&bucket, &name, v]).await?,
        Prune::All => {
            let removed = c.execute(WHAT, PRUNE_ALL, params![&bucket, &name]).await?;
            if postgres {
                c.execute(WHAT, DROP_HEAD, params![&bucket, &name]).await?;
            }
            removed
        }
    };
    Ok(removed)
}

/// Removes one version inside the caller's write transaction; on PostgreSQL the
/// head is locked first, as put_version and delete take it, and moved to the
/// newest remaining version (or dropped with the last one, like prune).
async fn delete_version_in(c: &mut dyn Conn, bucket: String, name: String, version: i64) -> Result<bool, MetaError> {
    const WHAT: &str = "delete_version";
    if c.dialect() == Dialect::Sqlite {
        return Ok(c.execute(WHAT, DELETE_VERSION, params![&bucket, &name, version]).await? > 0);
    }
    let Some(head) = c.query_opt(WHAT, LOCK_HEAD, params![&bucket, &name]).await? else {
        return Ok(false);
    };
    let latest: i64 = head.get(0)?;
    if c.execute(WHAT, DELETE_VERSION, params![&bucket, &name, version]).await? == 0 {
        return Ok(false);
    }
    if version == latest {
        let newest: Option<i64> = c.query_one(WHAT, MAX_VERSION, params![&bucket, &name]).await?.get(0)?;
        match newest {
            Some(newest) => c.execute(WHAT, SET_HEAD, params![&bucket, &name, newest]).await?,
            None => c.execute(WHAT, DROP_HEAD, params![&bucket, &name]).await?,
        };
    }
    Ok(true)
}

#[async_trait]
impl<E: Executor> VersionStore for SqlStore<E> {
    async fn put_version(
        &self,
        bucket: &str,
        name: &str,
        content: Option<&ContentRecord>,
    ) -> Result<VersionRecord, MetaError> {
        let (bucket, name, content) = (bucket.to_string(), name.to_string(), content.cloned());
        self.exec.grouped("put_version", move |c| Box::pin(add_version(c, bucket, name, content, None))).await
    }

    async fn delete(&self, bucket: &str, name: &str) -> Result<DeleteOutcome, MetaError> {
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.exec.grouped("delete", move |c| Box::pin(delete_in(c, bucket, name))).await
    }

    async fn latest(&self, bucket: &str, name: &str) -> Result<Option<VersionRecord>, MetaError> {
        const WHAT: &str = "latest";
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.exec
            .run(WHAT, move |c| Box::pin(async move { query_version(c, WHAT, LATEST, params![bucket, name]).await }))
            .await
    }

    async fn version(&self, bucket: &str, name: &str, version: u64) -> Result<Option<VersionRecord>, MetaError> {
        const WHAT: &str = "version";
        let Some(version) = to_sql_int(version) else {
            return Ok(None);
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move { query_version(c, WHAT, VERSION, params![bucket, name, version]).await })
            })
            .await
    }

    async fn versions(
        &self,
        bucket: &str,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        const WHAT: &str = "versions";
        let Some(page) = VersionsPage::new(after, limit) else {
            return Ok(Vec::new());
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    query_versions(c, WHAT, VERSIONS, params![bucket, name, page.after, page.limit]).await
                })
            })
            .await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        const WHAT: &str = "list";
        let Some(range) = ListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let sql = range.statement(&LIST);
                    match range.upper {
                        Some(upper) => {
                            query_versions(c, WHAT, sql, params![bucket, range.lower, upper, range.limit]).await
                        }
                        None => query_versions(c, WHAT, sql, params![bucket, range.lower, range.limit]).await,
                    }
                })
            })
            .await
    }

    async fn prune(
        &self,
        bucket: &str,
        name: &str,
        keep: Option<u64>,
        tombstone_cutoff_ms: Option<i64>,
    ) -> Result<u64, MetaError> {
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.exec.transaction("prune", move |c| Box::pin(prune_in(c, bucket, name, keep, tombstone_cutoff_ms))).await
    }

    async fn names(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<(String, String)>, MetaError> {
        const WHAT: &str = "names";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = after.map(|(b, n)| (b.to_string(), n.to_string()));
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let rows = match after {
                        None => c.query(WHAT, NAMES_FIRST, params![limit]).await?,
                        Some((bucket, name)) => c.query(WHAT, NAMES_AFTER, params![bucket, name, limit]).await?,
                    };
                    rows.iter().map(|row| Ok((row.get(0)?, row.get(1)?))).collect()
                })
            })
            .await
    }

    async fn put_object(
        &self,
        bucket: &str,
        name: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
        condition: Option<&Precondition>,
    ) -> Result<VersionRecord, MetaError> {
        let (bucket, name) = (bucket.to_string(), name.to_string());
        let (content, attrs, condition) = (content.clone(), attrs.clone(), condition.cloned());
        self.exec.grouped("put_object", move |c| Box::pin(add_object(c, bucket, name, content, attrs, condition))).await
    }

    async fn delete_version(&self, bucket: &str, name: &str, version: u64) -> Result<bool, MetaError> {
        let Some(version) = to_sql_int(version) else {
            return Ok(false);
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.exec.transaction("delete_version", move |c| Box::pin(delete_version_in(c, bucket, name, version))).await
    }

    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        const WHAT: &str = "list_versions";
        let Some(r) = VersionListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let sql = r.statement(&VERSION_LIST);
                    match r.upper {
                        Some(upper) => {
                            query_versions(c, WHAT, sql, params![bucket, r.lower, r.max_version, upper, r.limit]).await
                        }
                        None => query_versions(c, WHAT, sql, params![bucket, r.lower, r.max_version, r.limit]).await,
                    }
                })
            })
            .await
    }
}
