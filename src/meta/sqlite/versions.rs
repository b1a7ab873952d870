//! The SQLite store's versions: [`VersionStore`] on SQLite, with the group
//! commit's writes (`put_version_in`, `put_object_in`, `delete_in`) and retention.

use crate::meta::sql::{self, Dialect};
use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row};

use super::content::record_content;
use super::steps::require_bucket;
use super::{immediate, Context, SqliteStore, WriteOp};
use crate::clock::now_ms;
use crate::meta::row::{
    attrs_json, delete_refused, keep_offset, next_version, prune_step, select_versions, sql_limit, to_sql_int,
    ContentRow, ListRange, ListStatements, PairStatements, Prune, RawVersion, VersionListRange, VersionsPage,
};
use crate::meta::{ContentRecord, DeleteOutcome, MetaError, ObjectAttrs, Precondition, VersionRecord, VersionStore};

/// Listing, as [`ListStatements`] wants it: range constraints on the primary key.
/// The correlated subquery keeps only each name's newest version (one seek per row).
macro_rules! select_list {
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

pub(super) const LIST_STATEMENTS: ListStatements = ListStatements {
    from: select_list!(">=", "", "?3"),
    from_upto: select_list!(">=", "AND v.name < ?3 ", "?4"),
    after: select_list!(">", "", "?3"),
    after_upto: select_list!(">", "AND v.name < ?3 ", "?4"),
};

const SQL_NAMES_FIRST: &str = "SELECT DISTINCT bucket, name FROM versions ORDER BY bucket, name LIMIT ?1";

pub(super) const SQL_NAMES_AFTER: &str =
    "SELECT DISTINCT bucket, name FROM versions WHERE (bucket, name) > (?1, ?2) ORDER BY bucket, name LIMIT ?3";

const SQL_NEWEST: &str =
    "SELECT version, hash IS NULL FROM versions WHERE bucket = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1";

const SQL_NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE bucket = ?1 AND name = ?2";

const SQL_INSERT_VERSION: &str = "INSERT INTO versions (bucket, name, version, hash, size, created_ms, attrs) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

pub(super) const VERSION_LIST_STATEMENTS: PairStatements = sql::VERSION_LIST.of(Dialect::Sqlite);

/// Maps a row of the version queries onto [`RawVersion`].
fn raw_version(row: &Row<'_>) -> rusqlite::Result<RawVersion> {
    Ok(RawVersion {
        bucket: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        hash: row.get(3)?,
        size: Some(row.get(4)?),
        created_ms: Some(row.get(5)?),
        content_hash: row.get(6)?,
        content_size: row.get(7)?,
        policy: row.get(8)?,
        placement: row.get(9)?,
        encoding: row.get(10)?,
        stored_size: row.get(11)?,
        attrs: row.get(12)?,
    })
}

fn query_versions(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<VersionRecord>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let rows = stmt.query_map(params, raw_version).context(what)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.context(what)?.parse()?);
    }
    Ok(out)
}

fn query_version(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Option<VersionRecord>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let raw = stmt.query_row(params, raw_version).optional().context(what)?;
    raw.map(RawVersion::parse).transpose()
}

/// Adds the next version of `bucket/name` on `conn`, which is inside the caller's
/// write transaction (taken with `BEGIN IMMEDIATE`, so no other connection in any
/// process can insert between reading the highest version and inserting the next).
pub(super) fn put_version_in(
    conn: &Connection,
    bucket: String,
    name: String,
    content: Option<ContentRecord>,
    attrs: Option<ObjectAttrs>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_version";
    let json = attrs.as_ref().map(attrs_json).transpose()?;
    let row = content.as_ref().map(|c| record_content(conn, WHAT, c)).transpose()?;
    let next: i64 =
        conn.prepare_cached(SQL_NEXT_VERSION).context(WHAT)?.query_row((&bucket, &name), |r| r.get(0)).context(WHAT)?;
    let version = next_version(&bucket, &name, next)?;
    let (hash, size) = ContentRow::version_columns(row.as_ref());
    let created_ms = now_ms();
    conn.prepare_cached(SQL_INSERT_VERSION)
        .context(WHAT)?
        .execute((&bucket, &name, next, &hash, size, created_ms, &json))
        .context(WHAT)?;
    Ok(VersionRecord { bucket, name, version, content, created_ms, attrs })
}

/// `put_object` on `conn`, inside the caller's write transaction: the bucket check
/// and the insert under one write lock, so no `delete_bucket` comes between.
pub(super) fn put_object_in(
    conn: &Connection,
    bucket: String,
    name: String,
    content: ContentRecord,
    attrs: ObjectAttrs,
    condition: Option<&Precondition>,
) -> Result<VersionRecord, MetaError> {
    require_bucket(conn, "put_object", &bucket)?;
    if let Some(condition) = condition {
        // Inside the writer's transaction: no other write of the name can come
        // between this read and the insert.
        let latest = query_version(conn, "put_object", sql::LATEST.sqlite, &[&bucket, &name])?;
        if !condition.holds(latest.as_ref()) {
            return Err(MetaError::PreconditionFailed { bucket, name });
        }
    }
    put_version_in(conn, bucket, name, Some(content), Some(attrs))
}

/// Retention of `bucket/name` on `conn`, inside the caller's write transaction.
fn prune_in(
    conn: &Connection,
    bucket: &str,
    name: &str,
    keep: Option<u64>,
    tombstone_cutoff_ms: Option<i64>,
) -> Result<u64, MetaError> {
    const WHAT: &str = "prune";
    let newest: Option<(i64, bool, i64)> = conn
        .prepare_cached(sql::NEWEST_FULL.sqlite)
        .context(WHAT)?
        .query_row((bucket, name), |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()
        .context(WHAT)?;
    let kth = match (newest, keep_offset(keep)) {
        (Some(_), Some(offset)) => conn
            .prepare_cached(sql::KTH_NEWEST.sqlite)
            .context(WHAT)?
            .query_row((bucket, name, offset), |row| row.get(0))
            .optional()
            .context(WHAT)?,
        _ => None,
    };
    let removed = match prune_step(newest, kth, tombstone_cutoff_ms) {
        Prune::Nothing => 0,
        Prune::Below(v) => {
            conn.prepare_cached(sql::PRUNE_BELOW.sqlite).context(WHAT)?.execute((bucket, name, v)).context(WHAT)?
        }
        Prune::All => {
            conn.prepare_cached(sql::PRUNE_ALL.sqlite).context(WHAT)?.execute((bucket, name)).context(WHAT)?
        }
    };
    Ok(removed as u64)
}

/// Adds a tombstone to `bucket/name` on `conn`, inside the caller's write
/// transaction, unless the name has no version or its newest is a tombstone: the
/// write lock is held from the check to the commit, so no other delete (in this
/// batch or any process) can slip in between.
pub(super) fn delete_in(conn: &Connection, bucket: String, name: String) -> Result<DeleteOutcome, MetaError> {
    const WHAT: &str = "delete";
    let newest: Option<(i64, bool)> = conn
        .prepare_cached(SQL_NEWEST)
        .context(WHAT)?
        .query_row((&bucket, &name), |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .context(WHAT)?;
    if let Some(refused) = delete_refused(&bucket, &name, newest)? {
        return Ok(refused);
    }
    put_version_in(conn, bucket, name, None, None).map(DeleteOutcome::Deleted)
}

fn list_blocking(conn: &Connection, bucket: &str, range: &ListRange) -> Result<Vec<VersionRecord>, MetaError> {
    let sql = range.statement(&LIST_STATEMENTS);
    match &range.upper {
        Some(upper) => query_versions(conn, "list", sql, &[&bucket, &range.lower, upper, &range.limit]),
        None => query_versions(conn, "list", sql, &[&bucket, &range.lower, &range.limit]),
    }
}

#[async_trait]
impl VersionStore for SqliteStore {
    async fn put_version(
        &self,
        bucket: &str,
        name: &str,
        content: Option<&ContentRecord>,
    ) -> Result<VersionRecord, MetaError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue(bucket, name, WriteOp::Put { content: content.cloned(), reply }).await?;
        answer.await.map_err(|_| MetaError::Unavailable("metadata writer stopped before answering".into()))?
    }

    async fn delete(&self, bucket: &str, name: &str) -> Result<DeleteOutcome, MetaError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue(bucket, name, WriteOp::Delete { reply }).await?;
        answer.await.map_err(|_| MetaError::Unavailable("metadata writer stopped before answering".into()))?
    }

    async fn latest(&self, bucket: &str, name: &str) -> Result<Option<VersionRecord>, MetaError> {
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.read(move |conn| query_version(conn, "latest", sql::LATEST.sqlite, &[&bucket, &name])).await
    }

    async fn version(&self, bucket: &str, name: &str, version: u64) -> Result<Option<VersionRecord>, MetaError> {
        let Some(version) = to_sql_int(version) else {
            return Ok(None);
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.read(move |conn| query_version(conn, "version", sql::VERSION.sqlite, &[&bucket, &name, &version])).await
    }

    async fn versions(
        &self,
        bucket: &str,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        let Some(page) = VersionsPage::new(after, limit) else {
            return Ok(Vec::new());
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.read(move |conn| {
            query_versions(conn, "versions", sql::VERSIONS.sqlite, &[&bucket, &name, &page.after, &page.limit])
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
        let Some(range) = ListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.read(move |conn| list_blocking(conn, &bucket, &range)).await
    }

    async fn prune(
        &self,
        bucket: &str,
        name: &str,
        keep: Option<u64>,
        tombstone_cutoff_ms: Option<i64>,
    ) -> Result<u64, MetaError> {
        let (bucket, name) = (bucket.to_string(), name.to_string());
        // Under the write lock, like put_version and delete: no version of the name
        // can be added between the reads and the removal.
        self.write(move |conn| immediate(conn, "prune", |tx| prune_in(tx, &bucket, &name, keep, tombstone_cutoff_ms)))
            .await
    }

    async fn names(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<(String, String)>, MetaError> {
        const WHAT: &str = "names";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = after.map(|(b, n)| (b.to_string(), n.to_string()));
        self.read(move |conn| {
            let (sql, params): (&str, Vec<&dyn ToSql>) = match &after {
                None => (SQL_NAMES_FIRST, vec![&limit]),
                Some((bucket, name)) => (SQL_NAMES_AFTER, vec![bucket, name, &limit]),
            };
            let mut stmt = conn.prepare_cached(sql).context(WHAT)?;
            let rows = stmt.query_map(params.as_slice(), |row| Ok((row.get(0)?, row.get(1)?))).context(WHAT)?;
            rows.map(|row| row.context(WHAT)).collect()
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
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op = WriteOp::PutObject {
            content: content.clone(),
            attrs: Box::new(attrs.clone()),
            condition: condition.cloned(),
            reply,
        };
        self.queue(bucket, name, op).await?;
        answer.await.map_err(|_| MetaError::Unavailable("metadata writer stopped before answering".into()))?
    }

    async fn delete_version(&self, bucket: &str, name: &str, version: u64) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_version";
        let Some(version) = to_sql_int(version) else {
            return Ok(false);
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.write(move |conn| {
            let removed = conn
                .prepare_cached(sql::DELETE_VERSION.sqlite)
                .context(WHAT)?
                .execute((&bucket, &name, version))
                .context(WHAT)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        const WHAT: &str = "list_versions";
        let Some(range) = VersionListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.read(move |conn| {
            let sql = range.statement(&VERSION_LIST_STATEMENTS);
            let r = &range;
            match &r.upper {
                Some(upper) => query_versions(conn, WHAT, sql, &[&bucket, &r.lower, &r.max_version, upper, &r.limit]),
                None => query_versions(conn, WHAT, sql, &[&bucket, &r.lower, &r.max_version, &r.limit]),
            }
        })
        .await
    }
}
