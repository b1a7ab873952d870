//! The PostgreSQL store's versions: [`VersionStore`] on PostgreSQL, with the
//! head-locking writes (`add_version`, `add_object`) and retention.

use crate::meta::sql::{self, Dialect};
use async_trait::async_trait;
use tokio_postgres::Row;

use super::content::record_content;
use super::steps::share_bucket;
use super::{Context, PostgresStore};
use crate::meta::row::{
    attrs_json, delete_refused, keep_offset, next_version, prune_step, sql_limit, to_sql_int, ContentRow, ListRange,
    ListStatements, PairStatements, Prune, RawVersion, VersionListRange, VersionsPage,
};
use crate::meta::{ContentRecord, DeleteOutcome, MetaError, ObjectAttrs, Precondition, VersionRecord, VersionStore};

/// Listing, as [`ListStatements`] wants it: range constraints on the primary key of
/// `heads`. The left join keeps a head whose
/// version row is missing, which [`RawVersion::parse`] reports as corrupt instead of
/// silently skipping the name.
macro_rules! select_list {
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

const LIST_STATEMENTS: ListStatements = ListStatements {
    from: select_list!(">=", "", "$3"),
    from_upto: select_list!(">=", "AND h.name < $3 ", "$4"),
    after: select_list!(">", "", "$3"),
    after_upto: select_list!(">", "AND h.name < $3 ", "$4"),
};

const SQL_DROP_HEAD: &str = "DELETE FROM heads WHERE bucket = $1 AND name = $2";

const SQL_NAMES_FIRST: &str = "SELECT bucket, name FROM heads ORDER BY bucket, name LIMIT $1";

const SQL_NAMES_AFTER: &str =
    "SELECT bucket, name FROM heads WHERE (bucket, name) > ($1, $2) ORDER BY bucket, name LIMIT $3";

/// Takes the name's next version number and row-locks its head until commit.
const SQL_NEXT_VERSION: &str = "INSERT INTO heads (bucket, name, latest) VALUES ($1, $2, 1) \
     ON CONFLICT (bucket, name) DO UPDATE SET latest = heads.latest + 1 \
     RETURNING latest";

const SQL_INSERT_VERSION: &str = "INSERT INTO versions (bucket, name, version, hash, size, created_ms, attrs) \
     VALUES ($1, $2, $3, $4, $5, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT, $6) \
     RETURNING created_ms";

/// A delete's check: the name's newest version number, row-locking its head.
const SQL_LOCK_HEAD: &str = "SELECT latest FROM heads WHERE bucket = $1 AND name = $2 FOR UPDATE";

/// A conditional write's head row, so that it can be locked even for a new name
/// (`latest` 0: the next version is 1; rolled back with a failed condition).
const SQL_ENSURE_HEAD: &str =
    "INSERT INTO heads (bucket, name, latest) VALUES ($1, $2, 0) ON CONFLICT (bucket, name) DO NOTHING";

const SQL_IS_TOMBSTONE: &str = "SELECT hash IS NULL FROM versions WHERE bucket = $1 AND name = $2 AND version = $3";

const SQL_MAX_VERSION: &str = "SELECT MAX(version) FROM versions WHERE bucket = $1 AND name = $2";

const SQL_SET_HEAD: &str = "UPDATE heads SET latest = $3 WHERE bucket = $1 AND name = $2";

const VERSION_LIST_STATEMENTS: PairStatements = sql::VERSION_LIST.of(Dialect::Postgres);

/// Adds the next version of `bucket/name` inside `tx` (not committed): upserts the
/// content row, takes the next number from the name's head (row-locking it until
/// the commit) and inserts the version.
pub(super) async fn add_version(
    tx: &deadpool_postgres::Transaction<'_>,
    bucket: &str,
    name: &str,
    content: Option<&ContentRecord>,
    attrs: Option<&ObjectAttrs>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_version";
    let json = attrs.map(attrs_json).transpose()?;
    let row = match content {
        Some(c) => Some(record_content(tx, WHAT, c).await?),
        None => None,
    };
    let stmt = tx.prepare_cached(SQL_NEXT_VERSION).await.context(WHAT)?;
    let next: i64 = tx.query_one(&stmt, &[&bucket, &name]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
    let version = next_version(bucket, name, next)?;
    let (hash, size) = ContentRow::version_columns(row.as_ref());
    let stmt = tx.prepare_cached(SQL_INSERT_VERSION).await.context(WHAT)?;
    let created_ms: i64 = tx
        .query_one(&stmt, &[&bucket, &name, &next, &hash, &size, &json])
        .await
        .and_then(|r| r.try_get(0))
        .context(WHAT)?;
    Ok(VersionRecord {
        bucket: bucket.to_string(),
        name: name.to_string(),
        version,
        content: content.cloned(),
        created_ms,
        attrs: attrs.cloned(),
    })
}

/// `put_object` inside `tx`: the bucket's row is share-locked first (until the
/// commit), so a `delete_bucket` either finished before (no such bucket) or waits
/// and then sees this version. A `condition` is checked with the name's head row
/// locked (made, at 0, if the name is new: a concurrent writer of the new name waits
/// on that insert), so no write of the name comes between the check and the insert.
pub(super) async fn add_object(
    tx: &deadpool_postgres::Transaction<'_>,
    bucket: &str,
    name: &str,
    content: &ContentRecord,
    attrs: &ObjectAttrs,
    condition: Option<&Precondition>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_object";
    share_bucket(tx, WHAT, bucket).await?;
    if let Some(condition) = condition {
        let stmt = tx.prepare_cached(SQL_ENSURE_HEAD).await.context(WHAT)?;
        tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
        tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(sql::LATEST.postgres).await.context(WHAT)?;
        let latest = match tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)? {
            Some(row) => Some(raw_version(&row).context(WHAT)?.parse()?),
            None => None,
        };
        if !condition.holds(latest.as_ref()) {
            return Err(MetaError::PreconditionFailed { bucket: bucket.to_string(), name: name.to_string() });
        }
    }
    add_version(tx, bucket, name, Some(content), Some(attrs)).await
}

/// Retention of `bucket/name` inside `tx`: the head is row-locked first, so a
/// concurrent put_version or delete of the name waits for this to commit (and one
/// that finds the head gone starts the name again at version 1).
async fn prune_in(
    tx: &deadpool_postgres::Transaction<'_>,
    bucket: &str,
    name: &str,
    keep: Option<u64>,
    tombstone_cutoff_ms: Option<i64>,
) -> Result<u64, MetaError> {
    const WHAT: &str = "prune";
    let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
    if tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)?.is_none() {
        return Ok(0);
    }
    // Statements of their own, after the lock: they see every version committed
    // while this one waited for it (READ COMMITTED).
    let stmt = tx.prepare_cached(sql::NEWEST_FULL.postgres).await.context(WHAT)?;
    let newest = match tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)? {
        None => None,
        Some(row) => Some((
            row.try_get::<_, i64>(0).context(WHAT)?,
            row.try_get::<_, bool>(1).context(WHAT)?,
            row.try_get::<_, i64>(2).context(WHAT)?,
        )),
    };
    let kth = match (newest, keep_offset(keep)) {
        (Some(_), Some(offset)) => {
            let stmt = tx.prepare_cached(sql::KTH_NEWEST.postgres).await.context(WHAT)?;
            match tx.query_opt(&stmt, &[&bucket, &name, &offset]).await.context(WHAT)? {
                Some(row) => Some(row.try_get::<_, i64>(0).context(WHAT)?),
                None => None,
            }
        }
        _ => None,
    };
    let removed = match prune_step(newest, kth, tombstone_cutoff_ms) {
        Prune::Nothing => 0,
        Prune::Below(v) => {
            let stmt = tx.prepare_cached(sql::PRUNE_BELOW.postgres).await.context(WHAT)?;
            tx.execute(&stmt, &[&bucket, &name, &v]).await.context(WHAT)?
        }
        Prune::All => {
            let stmt = tx.prepare_cached(sql::PRUNE_ALL.postgres).await.context(WHAT)?;
            let removed = tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
            let stmt = tx.prepare_cached(SQL_DROP_HEAD).await.context(WHAT)?;
            tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
            removed
        }
    };
    Ok(removed)
}

/// Maps a row of the version queries onto [`RawVersion`].
pub(super) fn raw_version(row: &Row) -> Result<RawVersion, tokio_postgres::Error> {
    Ok(RawVersion {
        bucket: row.try_get(0)?,
        name: row.try_get(1)?,
        version: row.try_get(2)?,
        hash: row.try_get(3)?,
        size: row.try_get(4)?,
        created_ms: row.try_get(5)?,
        content_hash: row.try_get(6)?,
        content_size: row.try_get(7)?,
        policy: row.try_get(8)?,
        placement: row.try_get(9)?,
        encoding: row.try_get(10)?,
        stored_size: row.try_get(11)?,
        attrs: row.try_get(12)?,
    })
}

#[async_trait]
impl VersionStore for PostgresStore {
    async fn put_version(
        &self,
        bucket: &str,
        name: &str,
        content: Option<&ContentRecord>,
    ) -> Result<VersionRecord, MetaError> {
        const WHAT: &str = "put_version";
        let mut client = self.client(WHAT).await?;
        // Dropping the transaction unfinished (an error below, or the caller giving
        // up) rolls it back.
        let tx = client.transaction().await.context(WHAT)?;
        let record = add_version(&tx, bucket, name, content, None).await?;
        tx.commit().await.context(WHAT)?;
        Ok(record)
    }

    async fn delete(&self, bucket: &str, name: &str) -> Result<DeleteOutcome, MetaError> {
        const WHAT: &str = "delete";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The head's row lock, held to the commit, makes the check and the insert
        // one step: a concurrent delete (or put) of the name waits here, and then
        // reads the head this transaction leaves.
        let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
        let head = tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)?;
        let newest = match head {
            None => None,
            Some(head) => {
                let latest: i64 = head.try_get(0).context(WHAT)?;
                // A statement of its own, so that it sees the versions committed
                // while this one waited for the lock (READ COMMITTED).
                let stmt = tx.prepare_cached(SQL_IS_TOMBSTONE).await.context(WHAT)?;
                let row = tx.query_opt(&stmt, &[&bucket, &name, &latest]).await.context(WHAT)?;
                let Some(row) = row else {
                    return Err(MetaError::Corrupt(format!(
                        "{bucket}/{name}: the head names version {latest}, which is missing"
                    )));
                };
                Some((latest, row.try_get::<_, bool>(0).context(WHAT)?))
            }
        };
        if let Some(refused) = delete_refused(bucket, name, newest)? {
            return Ok(refused);
        }
        let record = add_version(&tx, bucket, name, None, None).await?;
        tx.commit().await.context(WHAT)?;
        Ok(DeleteOutcome::Deleted(record))
    }

    async fn latest(&self, bucket: &str, name: &str) -> Result<Option<VersionRecord>, MetaError> {
        self.query_version("latest", sql::LATEST.postgres, &[&bucket, &name]).await
    }

    async fn version(&self, bucket: &str, name: &str, version: u64) -> Result<Option<VersionRecord>, MetaError> {
        let Some(version) = to_sql_int(version) else {
            return Ok(None);
        };
        self.query_version("version", sql::VERSION.postgres, &[&bucket, &name, &version]).await
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
        self.query_versions("versions", sql::VERSIONS.postgres, &[&bucket, &name, &page.after, &page.limit]).await
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
        let sql = range.statement(&LIST_STATEMENTS);
        match &range.upper {
            Some(upper) => self.query_versions("list", sql, &[&bucket, &range.lower, upper, &range.limit]).await,
            None => self.query_versions("list", sql, &[&bucket, &range.lower, &range.limit]).await,
        }
    }

    async fn prune(
        &self,
        bucket: &str,
        name: &str,
        keep: Option<u64>,
        tombstone_cutoff_ms: Option<i64>,
    ) -> Result<u64, MetaError> {
        const WHAT: &str = "prune";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let removed = prune_in(&tx, bucket, name, keep, tombstone_cutoff_ms).await?;
        tx.commit().await.context(WHAT)?;
        Ok(removed)
    }

    async fn names(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<(String, String)>, MetaError> {
        const WHAT: &str = "names";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let rows = match after {
            None => {
                let stmt = client.prepare_cached(SQL_NAMES_FIRST).await.context(WHAT)?;
                client.query(&stmt, &[&limit]).await.context(WHAT)?
            }
            Some((bucket, name)) => {
                let stmt = client.prepare_cached(SQL_NAMES_AFTER).await.context(WHAT)?;
                client.query(&stmt, &[&bucket, &name, &limit]).await.context(WHAT)?
            }
        };
        rows.iter().map(|row| Ok((row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?))).collect()
    }

    async fn put_object(
        &self,
        bucket: &str,
        name: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
        condition: Option<&Precondition>,
    ) -> Result<VersionRecord, MetaError> {
        const WHAT: &str = "put_object";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let record = add_object(&tx, bucket, name, content, attrs, condition).await?;
        tx.commit().await.context(WHAT)?;
        Ok(record)
    }

    async fn delete_version(&self, bucket: &str, name: &str, version: u64) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_version";
        let Some(version) = to_sql_int(version) else {
            return Ok(false);
        };
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The head's lock, as put_version and delete take it: the head is moved to
        // the newest remaining version (or dropped with the last one, like prune)
        // with no write of the name in between.
        let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
        let Some(head) = tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)? else {
            return Ok(false);
        };
        let latest: i64 = head.try_get(0).context(WHAT)?;
        let stmt = tx.prepare_cached(sql::DELETE_VERSION.postgres).await.context(WHAT)?;
        if tx.execute(&stmt, &[&bucket, &name, &version]).await.context(WHAT)? == 0 {
            return Ok(false);
        }
        if version == latest {
            let stmt = tx.prepare_cached(SQL_MAX_VERSION).await.context(WHAT)?;
            let newest: Option<i64> =
                tx.query_one(&stmt, &[&bucket, &name]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
            match newest {
                Some(newest) => {
                    let stmt = tx.prepare_cached(SQL_SET_HEAD).await.context(WHAT)?;
                    tx.execute(&stmt, &[&bucket, &name, &newest]).await.context(WHAT)?;
                }
                None => {
                    let stmt = tx.prepare_cached(SQL_DROP_HEAD).await.context(WHAT)?;
                    tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
                }
            }
        }
        tx.commit().await.context(WHAT)?;
        Ok(true)
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
        let sql = r.statement(&VERSION_LIST_STATEMENTS);
        match &r.upper {
            Some(upper) => self.query_versions(WHAT, sql, &[&bucket, &r.lower, &r.max_version, upper, &r.limit]).await,
            None => self.query_versions(WHAT, sql, &[&bucket, &r.lower, &r.max_version, &r.limit]).await,
        }
    }
}
