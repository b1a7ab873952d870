//! The SQLite store's resumable uploads: [`UploadStore`] on SQLite, and the
//! expiry worker's batches (`Batch`), which S3's stale multipart uploads share.

use crate::meta::sql;
use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row};

use super::content::record_content;
use super::steps::{drop_upload, require_bucket};
use super::versions::put_version_in;
use super::{immediate, Context, SqliteStore};
use crate::meta::row::{next_version, parse_part, sql_limit, to_sql_int, upload_int, Batch, RawUpload};
use crate::meta::{
    AppendOutcome, ContentRecord, FinishOutcome, MetaError, UploadAppend, UploadPart, UploadRecord, UploadStore,
};

const SQL_UPLOAD_AT: &str = "SELECT upload_offset, finished_version IS NOT NULL FROM uploads WHERE id = ?1";

const SQL_UPLOAD_TARGET: &str = "SELECT bucket, name, finished_version FROM uploads WHERE id = ?1";

/// Maps an `uploads` row (columns as [`upload_columns`]) onto [`RawUpload`].
fn raw_upload(row: &Row<'_>) -> rusqlite::Result<RawUpload> {
    Ok(RawUpload {
        id: row.get(0)?,
        bucket: row.get(1)?,
        name: row.get(2)?,
        length: row.get(3)?,
        offset: row.get(4)?,
        metadata: row.get(5)?,
        expected: row.get(6)?,
        hasher: row.get(7)?,
        created_ms: row.get(8)?,
        expires_ms: row.get(9)?,
        finished_version: row.get(10)?,
    })
}

#[async_trait]
impl UploadStore for SqliteStore {
    async fn create_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_upload";
        let u = upload.clone();
        let length = u.length.map(|l| upload_int(l, "length")).transpose()?;
        let offset = upload_int(u.offset, "offset")?;
        let expected = u.expected.map(|h| h.to_hex());
        let finished = u.finished_version.map(|v| upload_int(v, "version")).transpose()?;
        self.write(move |conn| {
            // The bucket check and the insert under one write lock: no
            // delete_bucket, in any process, comes between.
            immediate(conn, WHAT, |tx| {
                require_bucket(tx, WHAT, &u.bucket)?;
                tx.prepare_cached(sql::INSERT_UPLOAD.sqlite)
                    .context(WHAT)?
                    .execute(rusqlite::params![
                        u.id,
                        u.bucket,
                        u.name,
                        length,
                        offset,
                        u.metadata,
                        expected,
                        u.hasher,
                        u.created_ms,
                        u.expires_ms,
                        finished
                    ])
                    .context(WHAT)?;
                Ok(())
            })
        })
        .await
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        const WHAT: &str = "upload";
        let id = id.to_string();
        self.read(move |conn| {
            let raw = conn
                .prepare_cached(sql::UPLOAD.sqlite)
                .context(WHAT)?
                .query_row([&id], raw_upload)
                .optional()
                .context(WHAT)?;
            raw.map(RawUpload::parse).transpose()
        })
        .await
    }

    async fn append_upload(&self, id: &str, append: UploadAppend<'_>) -> Result<AppendOutcome, MetaError> {
        const WHAT: &str = "append_upload";
        let id = id.to_string();
        let parts = append.parts.to_vec();
        let hasher = append.hasher.to_vec();
        let (expected_offset, length, expires_ms) = (append.expected_offset, append.length, append.expires_ms);
        let length = length.map(|l| upload_int(l, "length")).transpose()?;
        self.write(move |conn| {
            // Under the write lock from the offset check to the commit: of two
            // appends at one offset, in any process, the second sees the first's.
            immediate(conn, WHAT, |tx| {
                let at: Option<(i64, bool)> = tx
                    .prepare_cached(SQL_UPLOAD_AT)
                    .context(WHAT)?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .context(WHAT)?;
                let Some((offset, finished)) = at else { return Ok(AppendOutcome::Gone) };
                let offset = u64::try_from(offset).map_err(|_| MetaError::Corrupt(format!("upload {id}: offset")))?;
                if finished || offset != expected_offset {
                    return Ok(AppendOutcome::Conflict { offset });
                }
                let mut at = offset;
                for part in &parts {
                    let row = record_content(tx, WHAT, part)?;
                    tx.prepare_cached(sql::INSERT_PART.sqlite)
                        .context(WHAT)?
                        .execute((&id, upload_int(at, "offset")?, row.size, &row.hash))
                        .context(WHAT)?;
                    at += part.size;
                }
                tx.prepare_cached(sql::ADVANCE_UPLOAD.sqlite)
                    .context(WHAT)?
                    .execute((&id, upload_int(at, "offset")?, &hasher, expires_ms, length))
                    .context(WHAT)?;
                Ok(AppendOutcome::Appended { offset: at })
            })
        })
        .await
    }

    async fn upload_parts(&self, id: &str, from: u64, limit: usize) -> Result<Vec<UploadPart>, MetaError> {
        const WHAT: &str = "upload_parts";
        let (Some(limit), Some(from)) = (sql_limit(limit), to_sql_int(from)) else {
            return Ok(Vec::new());
        };
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(sql::UPLOAD_PARTS.sqlite).context(WHAT)?;
            let rows = stmt
                .query_map((&id, from, limit), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                let (offset, size, hash) = row.context(WHAT)?;
                out.push(parse_part(&id, offset, size, &hash)?);
            }
            Ok(out)
        })
        .await
    }

    async fn finish_upload(&self, id: &str, content: &ContentRecord) -> Result<FinishOutcome, MetaError> {
        const WHAT: &str = "finish_upload";
        let (id, content) = (id.to_string(), content.clone());
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                let target: Option<(String, String, Option<i64>)> = tx
                    .prepare_cached(SQL_UPLOAD_TARGET)
                    .context(WHAT)?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .context(WHAT)?;
                let Some((bucket, name, finished)) = target else { return Ok(FinishOutcome::Gone) };
                // delete_bucket removes a bucket's uploads with it, so the bucket
                // is missing only for an upload stored before uploads needed their
                // bucket. Checked before `finished`, in the order the PostgreSQL
                // store's locks impose, so both stores answer alike.
                require_bucket(tx, WHAT, &bucket)?;
                if let Some(version) = finished {
                    let version = next_version(&bucket, &name, version)?;
                    return Ok(FinishOutcome::AlreadyFinished { version });
                }
                let record = put_version_in(tx, bucket, name, Some(content), None)?;
                let version = upload_int(record.version, "version")?;
                tx.prepare_cached(sql::FINISH_UPLOAD.sqlite).context(WHAT)?.execute((&id, version)).context(WHAT)?;
                tx.prepare_cached(sql::DROP_PARTS.sqlite).context(WHAT)?.execute([&id]).context(WHAT)?;
                Ok(FinishOutcome::Finished(record))
            })
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_upload";
        let id = id.to_string();
        self.write(move |conn| immediate(conn, WHAT, |tx| drop_upload(tx, WHAT, &id))).await
    }

    async fn remove_expired_uploads(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::ExpiredUploads, now_ms, limit).await
    }
}
