//! The SQLite store's S3 buckets, multipart uploads and access keys:
//! [`BucketStore`], [`MultipartStore`] and [`KeyStore`] on SQLite.

use crate::meta::sql::{self, Dialect};
use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row};

use super::content::record_content;
use super::steps::{bucket_exists, drop_multipart, drop_upload, require_bucket};
use super::versions::put_object_in;
use super::{immediate, Context, SqliteStore};
use crate::meta::row::{
    attrs_json, key_buckets_json, sql_limit, Batch, ListStatements, RawAccessKey, RawMultipart, RawMultipartPart,
    UploadListRange,
};
use crate::meta::{
    AccessKey, BucketDeleteOutcome, BucketRecord, BucketStore, CompleteOutcome, ContentRecord, KeyStore, MetaError,
    MultipartPart, MultipartRecord, MultipartStore, ObjectAttrs,
};

/// The bucket's tus uploads, and whether each is still open. `uploads` has no
/// index on the bucket: this scans it, which only a bucket deletion does, and the
/// table holds only unexpired uploads (the expiry worker removes the rest).
const SQL_BUCKET_UPLOADS: &str = "SELECT id, finished_version IS NULL FROM uploads WHERE bucket = ?1 ORDER BY id";

/// The bucket's multipart uploads (a range of `multipart_uploads_by_name`).
pub(super) const SQL_BUCKET_MULTIPART: &str = "SELECT id FROM multipart_uploads WHERE bucket = ?1 ORDER BY id";

pub(super) const UPLOAD_LIST_STATEMENTS: ListStatements = sql::UPLOAD_LIST.of(Dialect::Sqlite);

const SQL_MULTIPART_TARGET: &str = "SELECT bucket, name FROM multipart_uploads WHERE id = ?1";

/// Removes every upload into `bucket`, tus and multipart, with their parts, inside
/// the caller's write transaction (as `delete_upload` and `abort_multipart` each
/// remove one); returns how many were open. A finished tus upload goes too (its
/// row only answers a repeated finish) but was not aborted, so it is not counted.
fn abort_bucket_uploads(conn: &Connection, what: &str, bucket: &str) -> Result<u64, MetaError> {
    let tus: Vec<(String, bool)> = {
        let mut stmt = conn.prepare_cached(SQL_BUCKET_UPLOADS).context(what)?;
        let rows = stmt.query_map([bucket], |r| Ok((r.get(0)?, r.get(1)?))).context(what)?;
        rows.map(|r| r.context(what)).collect::<Result<_, _>>()?
    };
    let multipart: Vec<String> = {
        let mut stmt = conn.prepare_cached(SQL_BUCKET_MULTIPART).context(what)?;
        let rows = stmt.query_map([bucket], |r| r.get(0)).context(what)?;
        rows.map(|r| r.context(what)).collect::<Result<_, _>>()?
    };
    let mut aborted = 0;
    for (id, open) in &tus {
        if drop_upload(conn, what, id)? && *open {
            aborted += 1;
        }
    }
    for id in &multipart {
        if drop_multipart(conn, what, id)? {
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Maps a `multipart_uploads` row (columns as [`multipart_columns`]) onto
/// [`RawMultipart`].
fn raw_multipart(row: &Row<'_>) -> rusqlite::Result<RawMultipart> {
    Ok(RawMultipart {
        id: row.get(0)?,
        bucket: row.get(1)?,
        name: row.get(2)?,
        attrs: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

/// Maps an `access_keys` row (columns as [`key_columns`]) onto [`RawAccessKey`].
fn raw_key(row: &Row<'_>) -> rusqlite::Result<RawAccessKey> {
    Ok(RawAccessKey {
        access_key: row.get(0)?,
        secret: row.get(1)?,
        buckets: row.get(2)?,
        read_only: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

#[async_trait]
impl BucketStore for SqliteStore {
    async fn create_bucket(&self, name: &str, created_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "create_bucket";
        let name = name.to_string();
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(sql::CREATE_BUCKET.sqlite)
                .context(WHAT)?
                .execute((&name, created_ms))
                .context(WHAT)?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, MetaError> {
        const WHAT: &str = "bucket";
        let name = name.to_string();
        self.read(move |conn| {
            conn.prepare_cached(sql::BUCKET.sqlite)
                .context(WHAT)?
                .query_row([&name], |r| Ok(BucketRecord { name: r.get(0)?, created_ms: r.get(1)? }))
                .optional()
                .context(WHAT)
        })
        .await
    }

    async fn buckets(&self) -> Result<Vec<BucketRecord>, MetaError> {
        const WHAT: &str = "buckets";
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(sql::BUCKETS.sqlite).context(WHAT)?;
            let rows =
                stmt.query_map([], |r| Ok(BucketRecord { name: r.get(0)?, created_ms: r.get(1)? })).context(WHAT)?;
            rows.map(|r| r.context(WHAT)).collect()
        })
        .await
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeleteOutcome, MetaError> {
        const WHAT: &str = "delete_bucket";
        let name = name.to_string();
        // Under the write lock from the check to the removal, as every write into a
        // bucket is: none can land in between.
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                if !bucket_exists(tx, WHAT, &name)? {
                    return Ok(BucketDeleteOutcome::NoSuchBucket);
                }
                let has_version: bool = tx
                    .prepare_cached(sql::BUCKET_HAS_VERSION.sqlite)
                    .context(WHAT)?
                    .query_row([&name], |r| r.get(0))
                    .context(WHAT)?;
                if has_version {
                    return Ok(BucketDeleteOutcome::NotEmpty);
                }
                let aborted_uploads = abort_bucket_uploads(tx, WHAT, &name)?;
                tx.prepare_cached(sql::DROP_BUCKET.sqlite).context(WHAT)?.execute([&name]).context(WHAT)?;
                Ok(BucketDeleteOutcome::Deleted { aborted_uploads })
            })
        })
        .await
    }
}

#[async_trait]
impl MultipartStore for SqliteStore {
    async fn create_multipart(&self, upload: &MultipartRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_multipart";
        let u = upload.clone();
        let attrs = attrs_json(&u.attrs)?;
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                require_bucket(tx, WHAT, &u.bucket)?;
                tx.prepare_cached(sql::INSERT_MULTIPART.sqlite)
                    .context(WHAT)?
                    .execute((&u.id, &u.bucket, &u.name, &attrs, u.created_ms))
                    .context(WHAT)?;
                Ok(())
            })
        })
        .await
    }

    async fn multipart(&self, id: &str) -> Result<Option<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart";
        let id = id.to_string();
        self.read(move |conn| {
            let raw = conn
                .prepare_cached(sql::MULTIPART.sqlite)
                .context(WHAT)?
                .query_row([&id], raw_multipart)
                .optional()
                .context(WHAT)?;
            raw.map(RawMultipart::parse).transpose()
        })
        .await
    }

    async fn put_part(
        &self,
        id: &str,
        part_number: u32,
        content: &ContentRecord,
        etag: &str,
        created_ms: i64,
    ) -> Result<bool, MetaError> {
        const WHAT: &str = "put_part";
        let (id, content, etag) = (id.to_string(), content.clone(), etag.to_string());
        self.write(move |conn| {
            // Under the write lock: an abort or completion of the upload is either
            // before (false) or after (and removes this part with the others).
            immediate(conn, WHAT, |tx| {
                let exists = tx
                    .prepare_cached(SQL_MULTIPART_TARGET)
                    .context(WHAT)?
                    .query_row([&id], |_| Ok(()))
                    .optional()
                    .context(WHAT)?;
                if exists.is_none() {
                    return Ok(false);
                }
                let row = record_content(tx, WHAT, &content)?;
                tx.prepare_cached(sql::UPSERT_MULTIPART_PART.sqlite)
                    .context(WHAT)?
                    .execute((&id, i64::from(part_number), &row.hash, row.size, &etag, created_ms))
                    .context(WHAT)?;
                Ok(true)
            })
        })
        .await
    }

    async fn parts(&self, id: &str, after: u32, limit: usize) -> Result<Vec<MultipartPart>, MetaError> {
        const WHAT: &str = "parts";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(sql::MULTIPART_PARTS.sqlite).context(WHAT)?;
            let rows = stmt
                .query_map((&id, i64::from(after), limit), |r| {
                    Ok(RawMultipartPart {
                        part_number: r.get(0)?,
                        hash: r.get(1)?,
                        size: r.get(2)?,
                        etag: r.get(3)?,
                        created_ms: r.get(4)?,
                    })
                })
                .context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.context(WHAT)?.parse(&id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart_uploads";
        let Some(range) = UploadListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.read(move |conn| {
            let r = &range;
            let mut stmt = conn.prepare_cached(r.statement(&UPLOAD_LIST_STATEMENTS)).context(WHAT)?;
            let params: Vec<&dyn ToSql> = match &r.upper {
                Some(upper) => vec![&bucket, &r.name, &r.id, upper, &r.limit],
                None => vec![&bucket, &r.name, &r.id, &r.limit],
            };
            let rows = stmt.query_map(params.as_slice(), raw_multipart).context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.context(WHAT)?.parse()?);
            }
            Ok(out)
        })
        .await
    }

    async fn complete_multipart(
        &self,
        id: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
    ) -> Result<CompleteOutcome, MetaError> {
        const WHAT: &str = "complete_multipart";
        let (id, content, attrs) = (id.to_string(), content.clone(), attrs.clone());
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                let target: Option<(String, String)> = tx
                    .prepare_cached(SQL_MULTIPART_TARGET)
                    .context(WHAT)?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .context(WHAT)?;
                let Some((bucket, name)) = target else { return Ok(CompleteOutcome::Gone) };
                let record = put_object_in(tx, bucket, name, content, attrs, None)?;
                drop_multipart(tx, WHAT, &id)?;
                Ok(CompleteOutcome::Completed(record))
            })
        })
        .await
    }

    async fn abort_multipart(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "abort_multipart";
        let id = id.to_string();
        self.write(move |conn| immediate(conn, WHAT, |tx| drop_multipart(tx, WHAT, &id))).await
    }

    async fn remove_stale_multipart(&self, cutoff_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::StaleMultipart, cutoff_ms, limit).await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, key: &AccessKey) -> Result<bool, MetaError> {
        const WHAT: &str = "create_key";
        let key = key.clone();
        let buckets = key_buckets_json(&key.buckets)?;
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(sql::CREATE_KEY.sqlite)
                .context(WHAT)?
                .execute((&key.access_key, &key.secret, &buckets, key.read_only, key.created_ms))
                .context(WHAT)?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn key(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError> {
        const WHAT: &str = "key";
        let access_key = access_key.to_string();
        self.read(move |conn| {
            let raw = conn
                .prepare_cached(sql::KEY.sqlite)
                .context(WHAT)?
                .query_row([&access_key], raw_key)
                .optional()
                .context(WHAT)?;
            raw.map(RawAccessKey::parse).transpose()
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        const WHAT: &str = "keys";
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(sql::KEYS.sqlite).context(WHAT)?;
            let rows = stmt.query_map([], raw_key).context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.context(WHAT)?.parse()?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_key(&self, access_key: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_key";
        let access_key = access_key.to_string();
        self.write(move |conn| {
            Ok(conn.prepare_cached(sql::DELETE_KEY.sqlite).context(WHAT)?.execute([&access_key]).context(WHAT)? > 0)
        })
        .await
    }
}
