//! The PostgreSQL store's resumable uploads: [`UploadStore`] on PostgreSQL, and
//! the expiry worker's batches (`Batch`), which S3's stale multipart uploads share.

use crate::meta::sql;
use async_trait::async_trait;
use tokio_postgres::Row;

use super::content::record_content;
use super::steps::{drop_upload, share_bucket};
use super::versions::add_version;
use super::{Context, PostgresStore};
use crate::meta::row::{next_version, parse_part, sql_limit, to_sql_int, upload_int, Batch, RawUpload};
use crate::meta::{
    AppendOutcome, ContentRecord, FinishOutcome, MetaError, UploadAppend, UploadPart, UploadRecord, UploadStore,
};

/// `append_upload`'s first statement: row-locks the upload until the commit, so of
/// two appends at one offset the second waits and then sees the first's offset.
/// `delete_upload` takes the same lock before it removes the parts.
const SQL_LOCK_UPLOAD: &str =
    "SELECT upload_offset, finished_version IS NOT NULL FROM uploads WHERE id = $1 FOR UPDATE";

/// The bucket of an upload, read before its row is locked: the bucket's lock comes
/// first (see the module docs), and an upload's bucket never changes.
pub(super) const SQL_UPLOAD_BUCKET: &str = "SELECT bucket FROM uploads WHERE id = $1";

const SQL_LOCK_UPLOAD_TARGET: &str = "SELECT bucket, name, finished_version FROM uploads WHERE id = $1 FOR UPDATE";

/// Maps an `uploads` row (columns as [`upload_columns`]) onto [`RawUpload`].
fn raw_upload(row: &Row) -> Result<RawUpload, tokio_postgres::Error> {
    Ok(RawUpload {
        id: row.try_get(0)?,
        bucket: row.try_get(1)?,
        name: row.try_get(2)?,
        length: row.try_get(3)?,
        offset: row.try_get(4)?,
        metadata: row.try_get(5)?,
        expected: row.try_get(6)?,
        hasher: row.try_get(7)?,
        created_ms: row.try_get(8)?,
        expires_ms: row.try_get(9)?,
        finished_version: row.try_get(10)?,
    })
}

#[async_trait]
impl UploadStore for PostgresStore {
    async fn create_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_upload";
        let u = upload;
        let length = u.length.map(|l| upload_int(l, "length")).transpose()?;
        let offset = upload_int(u.offset, "offset")?;
        let expected = u.expected.map(|h| h.to_hex());
        let finished = u.finished_version.map(|v| upload_int(v, "version")).transpose()?;
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        share_bucket(&tx, WHAT, &u.bucket).await?;
        let stmt = tx.prepare_cached(sql::INSERT_UPLOAD.postgres).await.context(WHAT)?;
        tx.execute(
            &stmt,
            &[
                &u.id,
                &u.bucket,
                &u.name,
                &length,
                &offset,
                &u.metadata,
                &expected,
                &u.hasher,
                &u.created_ms,
                &u.expires_ms,
                &finished,
            ],
        )
        .await
        .context(WHAT)?;
        tx.commit().await.context(WHAT)
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        const WHAT: &str = "upload";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::UPLOAD.postgres).await.context(WHAT)?;
        let row = client.query_opt(&stmt, &[&id]).await.context(WHAT)?;
        row.map(|row| raw_upload(&row).context(WHAT)?.parse()).transpose()
    }

    async fn append_upload(&self, id: &str, append: UploadAppend<'_>) -> Result<AppendOutcome, MetaError> {
        const WHAT: &str = "append_upload";
        let length = append.length.map(|l| upload_int(l, "length")).transpose()?;
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_UPLOAD).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(AppendOutcome::Gone);
        };
        let (offset, finished): (i64, bool) = (row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?);
        let offset = u64::try_from(offset).map_err(|_| MetaError::Corrupt(format!("upload {id}: offset")))?;
        if finished || offset != append.expected_offset {
            return Ok(AppendOutcome::Conflict { offset });
        }
        let mut at = offset;
        for part in append.parts {
            let row = record_content(&tx, WHAT, part).await?;
            let stmt = tx.prepare_cached(sql::INSERT_PART.postgres).await.context(WHAT)?;
            tx.execute(&stmt, &[&id, &upload_int(at, "offset")?, &row.size, &row.hash]).await.context(WHAT)?;
            at += part.size;
        }
        let stmt = tx.prepare_cached(sql::ADVANCE_UPLOAD.postgres).await.context(WHAT)?;
        let hasher = append.hasher;
        tx.execute(&stmt, &[&id, &upload_int(at, "offset")?, &hasher, &append.expires_ms, &length])
            .await
            .context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(AppendOutcome::Appended { offset: at })
    }

    async fn upload_parts(&self, id: &str, from: u64, limit: usize) -> Result<Vec<UploadPart>, MetaError> {
        const WHAT: &str = "upload_parts";
        let (Some(limit), Some(from)) = (sql_limit(limit), to_sql_int(from)) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::UPLOAD_PARTS.postgres).await.context(WHAT)?;
        let rows = client.query(&stmt, &[&id, &from, &limit]).await.context(WHAT)?;
        rows.iter()
            .map(|r| {
                let (offset, size, hash): (i64, i64, String) =
                    (r.try_get(0).context(WHAT)?, r.try_get(1).context(WHAT)?, r.try_get(2).context(WHAT)?);
                parse_part(id, offset, size, &hash)
            })
            .collect()
    }

    async fn finish_upload(&self, id: &str, content: &ContentRecord) -> Result<FinishOutcome, MetaError> {
        const WHAT: &str = "finish_upload";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_UPLOAD_BUCKET).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(FinishOutcome::Gone);
        };
        let bucket: String = row.try_get(0).context(WHAT)?;
        // Missing only when a delete_bucket committed since the read above (and
        // removed the upload with it), or for an upload stored before uploads
        // needed their bucket.
        share_bucket(&tx, WHAT, &bucket).await?;
        let stmt = tx.prepare_cached(SQL_LOCK_UPLOAD_TARGET).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(FinishOutcome::Gone);
        };
        let (bucket, name, finished): (String, String, Option<i64>) =
            (row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?, row.try_get(2).context(WHAT)?);
        if let Some(version) = finished {
            return Ok(FinishOutcome::AlreadyFinished { version: next_version(&bucket, &name, version)? });
        }
        let record = add_version(&tx, &bucket, &name, Some(content), None).await?;
        let version = upload_int(record.version, "version")?;
        let stmt = tx.prepare_cached(sql::FINISH_UPLOAD.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&id, &version]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(sql::DROP_PARTS.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&id]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(FinishOutcome::Finished(record))
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_upload";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The upload's row first, as every other remover and appender locks it:
        // deleting the parts first would take their locks in the other order.
        let stmt = tx.prepare_cached(SQL_LOCK_UPLOAD).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&id]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let existed = drop_upload(&tx, WHAT, id).await?;
        tx.commit().await.context(WHAT)?;
        Ok(existed)
    }

    async fn remove_expired_uploads(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::ExpiredUploads, now_ms, limit).await
    }
}
