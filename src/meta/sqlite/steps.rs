//! Transaction steps more than one of the SQLite store's domains takes: a bucket's
//! existence check (versions, tus uploads and multipart uploads all need their
//! bucket), and removing a tus or a multipart upload with its parts (the expiry
//! worker's batches and DeleteBucket both do). They live apart so that the domain
//! files use this one and never each other round a circle.

use rusqlite::{Connection, OptionalExtension};

use super::{immediate, Context, SqliteStore};
use crate::meta::row::{sql_limit, Batch};
use crate::meta::sql;
use crate::meta::MetaError;

pub(super) const SQL_STALE_MULTIPART: &str =
    "SELECT id FROM multipart_uploads WHERE created_ms <= ?1 ORDER BY created_ms LIMIT ?2";

/// Whether `bucket` exists (read on `conn`, inside the caller's transaction).
pub(super) fn bucket_exists(conn: &Connection, what: &str, bucket: &str) -> Result<bool, MetaError> {
    let found = conn
        .prepare_cached(sql::BUCKET.sqlite)
        .context(what)?
        .query_row([bucket], |_| Ok(()))
        .optional()
        .context(what)?;
    Ok(found.is_some())
}

/// [`MetaError::NoSuchBucket`] unless `bucket` exists (read on `conn`, inside the
/// caller's transaction).
pub(super) fn require_bucket(conn: &Connection, what: &str, bucket: &str) -> Result<(), MetaError> {
    if bucket_exists(conn, what, bucket)? {
        return Ok(());
    }
    Err(MetaError::NoSuchBucket { bucket: bucket.to_string() })
}

/// Removes a multipart upload's part rows and the upload itself, inside the
/// caller's transaction; true if the upload existed.
pub(super) fn drop_multipart(conn: &Connection, what: &str, id: &str) -> Result<bool, MetaError> {
    conn.prepare_cached(sql::DROP_MULTIPART_PARTS.sqlite).context(what)?.execute([id]).context(what)?;
    Ok(conn.prepare_cached(sql::DROP_MULTIPART.sqlite).context(what)?.execute([id]).context(what)? > 0)
}

const SQL_EXPIRED_UPLOADS: &str = "SELECT id FROM uploads WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2";

/// Removes one upload of `batch` and its parts inside the caller's transaction.
fn drop_one(batch: Batch, conn: &Connection, id: &str) -> Result<bool, MetaError> {
    let drop: fn(&Connection, &str, &str) -> Result<bool, MetaError> = batch.pick(drop_upload, drop_multipart);
    drop(conn, batch.what(), id)
}

impl SqliteStore {
    /// Removes up to `limit` uploads of `batch` due at `at`, in one transaction;
    /// returns how many.
    pub(super) async fn remove_batch(&self, batch: Batch, at: i64, limit: usize) -> Result<usize, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        self.write(move |conn| {
            immediate(conn, batch.what(), |tx| {
                let ids: Vec<String> = {
                    let mut stmt = tx
                        .prepare_cached(batch.pick(SQL_EXPIRED_UPLOADS, SQL_STALE_MULTIPART))
                        .context(batch.what())?;
                    let rows = stmt.query_map((at, limit), |r| r.get(0)).context(batch.what())?;
                    rows.map(|r| r.context(batch.what())).collect::<Result<_, _>>()?
                };
                for id in &ids {
                    drop_one(batch, tx, id)?;
                }
                Ok(ids.len())
            })
        })
        .await
    }
}

/// Removes an upload's part rows and the upload itself, inside the caller's
/// transaction; true if the upload existed.
pub(super) fn drop_upload(conn: &Connection, what: &str, id: &str) -> Result<bool, MetaError> {
    conn.prepare_cached(sql::DROP_PARTS.sqlite).context(what)?.execute([id]).context(what)?;
    Ok(conn.prepare_cached(sql::DROP_UPLOAD.sqlite).context(what)?.execute([id]).context(what)? > 0)
}
