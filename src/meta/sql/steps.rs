//! Transaction steps more than one domain takes: a bucket's check (versions, tus
//! uploads and multipart uploads all need their bucket to stay), and removing a
//! tus or a multipart upload with its parts (the expiry worker's batches and
//! DeleteBucket both do). They live apart so that the domain files use this one
//! and never each other round a circle.
//!
//! SQLite checks the bucket under the write transaction's one lock; PostgreSQL
//! share-locks the bucket's row until the commit (`delete_bucket` locks it
//! exclusively), and its batches skip rows another transaction holds.

use crate::meta::exec::{params, Conn, Executor};
use crate::meta::row::{sql_limit, Batch};
use crate::meta::sql::sql;
use crate::meta::MetaError;

sql! {
    /// The bucket's row (PostgreSQL: share-locked until the commit).
    SHARE_BUCKET = "SELECT 1 FROM buckets WHERE name = $1", postgres: "FOR SHARE";

    /// Up to $2 multipart uploads begun at or before $1.
    STALE_MULTIPART = "SELECT id FROM multipart_uploads WHERE created_ms <= $1 ORDER BY created_ms LIMIT $2",
        postgres: "FOR UPDATE SKIP LOCKED";

    /// Up to $2 tus uploads expired at $1.
    EXPIRED_UPLOADS = "SELECT id FROM uploads WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2",
        postgres: "FOR UPDATE SKIP LOCKED";

    DROP_MULTIPART_PARTS = "DELETE FROM multipart_parts WHERE upload_id = $1";

    DROP_MULTIPART = "DELETE FROM multipart_uploads WHERE id = $1";

    DROP_PARTS = "DELETE FROM upload_parts WHERE id = $1";

    DROP_UPLOAD = "DELETE FROM uploads WHERE id = $1";
}

/// Checks (PostgreSQL: share-locks) the bucket's row inside the caller's
/// transaction; [`MetaError::NoSuchBucket`] when there is none.
pub(crate) async fn share_bucket(c: &mut dyn Conn, what: &'static str, bucket: &str) -> Result<(), MetaError> {
    match c.query_opt(what, SHARE_BUCKET, params![bucket]).await? {
        Some(_) => Ok(()),
        None => Err(MetaError::NoSuchBucket { bucket: bucket.to_string() }),
    }
}

/// Removes a multipart upload's part rows and the upload itself inside the
/// caller's transaction (which has locked the upload's row); true if it existed.
pub(crate) async fn drop_multipart(c: &mut dyn Conn, what: &'static str, id: &str) -> Result<bool, MetaError> {
    c.execute(what, DROP_MULTIPART_PARTS, params![id]).await?;
    Ok(c.execute(what, DROP_MULTIPART, params![id]).await? > 0)
}

/// Removes a tus upload's part rows and the upload itself inside the caller's
/// transaction (which has locked the upload's row); true if it existed.
pub(crate) async fn drop_upload(c: &mut dyn Conn, what: &'static str, id: &str) -> Result<bool, MetaError> {
    c.execute(what, DROP_PARTS, params![id]).await?;
    Ok(c.execute(what, DROP_UPLOAD, params![id]).await? > 0)
}

/// Removes up to `limit` uploads of `batch` due at `at`, in one transaction;
/// returns how many.
pub(crate) async fn remove_batch<E: Executor>(
    exec: &E,
    batch: Batch,
    at: i64,
    limit: usize,
) -> Result<usize, MetaError> {
    let Some(limit) = sql_limit(limit) else {
        return Ok(0);
    };
    exec.transaction(batch.what(), move |c| {
        Box::pin(async move {
            let what = batch.what();
            let rows = c.query(what, batch.pick(EXPIRED_UPLOADS, STALE_MULTIPART), params![at, limit]).await?;
            let mut removed = 0;
            for row in rows {
                let id: String = row.get(0)?;
                let dropped = match batch {
                    Batch::ExpiredUploads => drop_upload(c, what, &id).await?,
                    Batch::StaleMultipart => drop_multipart(c, what, &id).await?,
                };
                removed += usize::from(dropped);
            }
            Ok(removed)
        })
    })
    .await
}
