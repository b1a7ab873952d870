//! [`UploadStore`] over any executor, and its statements: resumable (tus)
//! uploads and their parts.
//!
//! PostgreSQL row-locks an upload (`FOR UPDATE`) before it appends to it,
//! finishes or removes it, so of two appends at one offset the second waits and
//! then sees the first's offset; SQLite's write transaction holds the one write
//! lock from the offset check to the commit, to the same effect.

use async_trait::async_trait;

use super::content::record_content;
use super::steps::{drop_upload, remove_batch, share_bucket, DROP_PARTS};
use super::versions::add_version;
use super::SqlStore;
use crate::meta::exec::{params, Executor, Row};
use crate::meta::row::upload_columns;
use crate::meta::row::{next_version, parse_part, sql_limit, to_sql_int, upload_int, Batch, RawUpload};
use crate::meta::sql::sql;
use crate::meta::{
    AppendOutcome, ContentRecord, FinishOutcome, MetaError, UploadAppend, UploadPart, UploadRecord, UploadStore,
};

sql! {
    /// `append_upload`'s and `delete_upload`'s first statement (PostgreSQL: row-locks
    /// the upload until the commit).
    LOCK_UPLOAD = "SELECT upload_offset, finished_version IS NOT NULL FROM uploads WHERE id = $1",
        postgres: "FOR UPDATE";

    /// The bucket of an upload, read before its row is locked: the bucket's lock comes
    /// first (see the PostgreSQL store's docs), and an upload's bucket never changes.
    UPLOAD_BUCKET = "SELECT bucket FROM uploads WHERE id = $1";

    /// What `finish_upload` writes to (PostgreSQL: row-locking the upload).
    LOCK_UPLOAD_TARGET = "SELECT bucket, name, finished_version FROM uploads WHERE id = $1", postgres: "FOR UPDATE";

    INSERT_UPLOAD = "INSERT INTO uploads (id, bucket, name, length, upload_offset, metadata, expected, \
         hasher, created_ms, expires_ms, finished_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

    UPLOAD = concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = $1");

    INSERT_PART = "INSERT INTO upload_parts (id, part_offset, size, hash) VALUES ($1, $2, $3, $4)";

    ADVANCE_UPLOAD = "UPDATE uploads SET upload_offset = $2, hasher = $3, expires_ms = $4, \
         length = COALESCE(length, $5) WHERE id = $1";

    UPLOAD_PARTS = "SELECT part_offset, size, hash FROM upload_parts \
         WHERE id = $1 AND part_offset >= $2 ORDER BY part_offset LIMIT $3";

    FINISH_UPLOAD = "UPDATE uploads SET finished_version = $2 WHERE id = $1";
}

/// An `uploads` row (columns as [`upload_columns`]), validated.
fn upload_row(row: &Row) -> Result<UploadRecord, MetaError> {
    RawUpload {
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
    }
    .parse()
}

#[async_trait]
impl<E: Executor> UploadStore for SqlStore<E> {
    async fn create_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_upload";
        let u = upload.clone();
        let length = u.length.map(|l| upload_int(l, "length")).transpose()?;
        let offset = upload_int(u.offset, "offset")?;
        let expected = u.expected.map(|h| h.to_hex());
        let finished = u.finished_version.map(|v| upload_int(v, "version")).transpose()?;
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    // The bucket's check and the insert in one transaction: no
                    // delete_bucket, in any process, comes between.
                    share_bucket(c, WHAT, &u.bucket).await?;
                    let p = params![
                        u.id,
                        &u.bucket,
                        u.name,
                        length,
                        offset,
                        u.metadata,
                        expected,
                        u.hasher,
                        u.created_ms,
                        u.expires_ms,
                        finished
                    ];
                    c.execute(WHAT, INSERT_UPLOAD, p).await.map(drop)
                })
            })
            .await
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        const WHAT: &str = "upload";
        let id = id.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(
                    async move { c.query_opt(WHAT, UPLOAD, params![id]).await?.map(|r| upload_row(&r)).transpose() },
                )
            })
            .await
    }

    async fn append_upload(&self, id: &str, append: UploadAppend<'_>) -> Result<AppendOutcome, MetaError> {
        const WHAT: &str = "append_upload";
        let id = id.to_string();
        let parts = append.parts.to_vec();
        let hasher = append.hasher.to_vec();
        let (expected_offset, expires_ms) = (append.expected_offset, append.expires_ms);
        let length = append.length.map(|l| upload_int(l, "length")).transpose()?;
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    let Some(row) = c.query_opt(WHAT, LOCK_UPLOAD, params![&id]).await? else {
                        return Ok(AppendOutcome::Gone);
                    };
                    let (offset, finished): (i64, bool) = (row.get(0)?, row.get(1)?);
                    let offset =
                        u64::try_from(offset).map_err(|_| MetaError::Corrupt(format!("upload {id}: offset")))?;
                    if finished || offset != expected_offset {
                        return Ok(AppendOutcome::Conflict { offset });
                    }
                    let mut at = offset;
                    for part in &parts {
                        let row = record_content(c, WHAT, part).await?;
                        c.execute(WHAT, INSERT_PART, params![&id, upload_int(at, "offset")?, row.size, row.hash])
                            .await?;
                        at += part.size;
                    }
                    let p = params![&id, upload_int(at, "offset")?, hasher, expires_ms, length];
                    c.execute(WHAT, ADVANCE_UPLOAD, p).await?;
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
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let rows = c.query(WHAT, UPLOAD_PARTS, params![&id, from, limit]).await?;
                    rows.iter().map(|r| parse_part(&id, r.get(0)?, r.get(1)?, &r.get::<String>(2)?)).collect()
                })
            })
            .await
    }

    async fn finish_upload(&self, id: &str, content: &ContentRecord) -> Result<FinishOutcome, MetaError> {
        const WHAT: &str = "finish_upload";
        let (id, content) = (id.to_string(), content.clone());
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    let Some(row) = c.query_opt(WHAT, UPLOAD_BUCKET, params![&id]).await? else {
                        return Ok(FinishOutcome::Gone);
                    };
                    // Missing only when a delete_bucket committed since the read
                    // above (and removed the upload with it), or for an upload stored
                    // before uploads needed their bucket.
                    share_bucket(c, WHAT, &row.get::<String>(0)?).await?;
                    let Some(row) = c.query_opt(WHAT, LOCK_UPLOAD_TARGET, params![&id]).await? else {
                        return Ok(FinishOutcome::Gone);
                    };
                    let (bucket, name, finished): (String, String, Option<i64>) =
                        (row.get(0)?, row.get(1)?, row.get(2)?);
                    if let Some(version) = finished {
                        return Ok(FinishOutcome::AlreadyFinished { version: next_version(&bucket, &name, version)? });
                    }
                    let record = add_version(c, bucket, name, Some(content), None).await?;
                    let version = upload_int(record.version, "version")?;
                    c.execute(WHAT, FINISH_UPLOAD, params![&id, version]).await?;
                    c.execute(WHAT, DROP_PARTS, params![&id]).await?;
                    Ok(FinishOutcome::Finished(record))
                })
            })
            .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_upload";
        let id = id.to_string();
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    // The upload's row first, as every other remover and appender
                    // locks it: deleting the parts first would take their locks in the
                    // other order.
                    if c.query_opt(WHAT, LOCK_UPLOAD, params![&id]).await?.is_none() {
                        return Ok(false);
                    }
                    drop_upload(c, WHAT, &id).await
                })
            })
            .await
    }

    async fn remove_expired_uploads(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        remove_batch(&self.exec, Batch::ExpiredUploads, now_ms, limit).await
    }
}
