//! Transaction steps more than one of the PostgreSQL store's domains takes: a
//! bucket's share lock (versions, tus uploads and multipart uploads all need their
//! bucket to stay), and removing a tus or a multipart upload with its parts (the
//! expiry worker's batches and DeleteBucket both do). They live apart so that the
//! domain files use this one and never each other round a circle.

use super::{Context, PostgresStore};
use crate::meta::row::{sql_limit, Batch};
use crate::meta::sql;
use crate::meta::MetaError;

/// What adds to a bucket (`put_object`, `create_multipart`, `complete_multipart`)
/// share-locks its row until the commit; `delete_bucket` locks it exclusively.
const SQL_SHARE_BUCKET: &str = "SELECT 1 FROM buckets WHERE name = $1 FOR SHARE";

const SQL_STALE_MULTIPART: &str = "SELECT id FROM multipart_uploads WHERE created_ms <= $1 \
     ORDER BY created_ms LIMIT $2 FOR UPDATE SKIP LOCKED";

/// Share-locks the bucket's row inside `tx`; [`MetaError::NoSuchBucket`] when
/// there is none.
pub(super) async fn share_bucket(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    bucket: &str,
) -> Result<(), MetaError> {
    let stmt = tx.prepare_cached(SQL_SHARE_BUCKET).await.context(what)?;
    match tx.query_opt(&stmt, &[&bucket]).await.context(what)? {
        Some(_) => Ok(()),
        None => Err(MetaError::NoSuchBucket { bucket: bucket.to_string() }),
    }
}

/// Removes a multipart upload's part rows and the upload itself inside `tx` (the
/// caller has locked the upload's row); true if the upload existed.
pub(super) async fn drop_multipart(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    id: &str,
) -> Result<bool, MetaError> {
    let stmt = tx.prepare_cached(sql::DROP_MULTIPART_PARTS.postgres).await.context(what)?;
    tx.execute(&stmt, &[&id]).await.context(what)?;
    let stmt = tx.prepare_cached(sql::DROP_MULTIPART.postgres).await.context(what)?;
    Ok(tx.execute(&stmt, &[&id]).await.context(what)? > 0)
}

const SQL_EXPIRED_UPLOADS: &str =
    "SELECT id FROM uploads WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED";

/// Removes one upload of `batch` and its parts inside `tx`.
async fn drop_one(batch: Batch, tx: &deadpool_postgres::Transaction<'_>, id: &str) -> Result<bool, MetaError> {
    match batch {
        Batch::ExpiredUploads => drop_upload(tx, batch.what(), id).await,
        Batch::StaleMultipart => drop_multipart(tx, batch.what(), id).await,
    }
}

impl PostgresStore {
    /// Removes up to `limit` uploads of `batch` due at `at`, in one transaction;
    /// returns how many.
    pub(super) async fn remove_batch(&self, batch: Batch, at: i64, limit: usize) -> Result<usize, MetaError> {
        let what = batch.what();
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        let mut client = self.client(what).await?;
        let tx = client.transaction().await.context(what)?;
        let stmt = tx.prepare_cached(batch.pick(SQL_EXPIRED_UPLOADS, SQL_STALE_MULTIPART)).await.context(what)?;
        let rows = tx.query(&stmt, &[&at, &limit]).await.context(what)?;
        let mut removed = 0;
        for row in rows {
            let id: String = row.try_get(0).context(what)?;
            if drop_one(batch, &tx, &id).await? {
                removed += 1;
            }
        }
        tx.commit().await.context(what)?;
        Ok(removed)
    }
}

/// Removes an upload's part rows and the upload itself inside `tx` (the caller has
/// locked the upload's row); true if the upload existed.
pub(super) async fn drop_upload(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    id: &str,
) -> Result<bool, MetaError> {
    let stmt = tx.prepare_cached(sql::DROP_PARTS.postgres).await.context(what)?;
    tx.execute(&stmt, &[&id]).await.context(what)?;
    let stmt = tx.prepare_cached(sql::DROP_UPLOAD.postgres).await.context(what)?;
    Ok(tx.execute(&stmt, &[&id]).await.context(what)? > 0)
}
