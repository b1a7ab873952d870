//! The PostgreSQL store's S3 buckets, multipart uploads and access keys:
//! [`BucketStore`], [`MultipartStore`] and [`KeyStore`] on PostgreSQL.

use crate::meta::sql::{self, Dialect};
use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::content::record_content;
use super::steps::{drop_multipart, drop_upload, share_bucket};
use super::versions::add_object;
use super::{Context, PostgresStore};
use crate::meta::row::{
    attrs_json, key_buckets_json, sql_limit, Batch, ListStatements, RawAccessKey, RawMultipart, RawMultipartPart,
    UploadListRange,
};
use crate::meta::{
    AccessKey, BucketDeleteOutcome, BucketRecord, BucketStore, CompleteOutcome, ContentRecord, KeyStore, MetaError,
    MultipartPart, MultipartRecord, MultipartStore, ObjectAttrs,
};

const SQL_LOCK_BUCKET: &str = "SELECT 1 FROM buckets WHERE name = $1 FOR UPDATE";

/// The bucket's tus uploads, and whether each is still open, locked against
/// appends and finishes until the commit (in id order). `uploads` has no index on
/// the bucket: this scans it, which only a bucket deletion does, and the table
/// holds only unexpired uploads (the expiry worker removes the rest).
const SQL_LOCK_BUCKET_UPLOADS: &str =
    "SELECT id, finished_version IS NULL FROM uploads WHERE bucket = $1 ORDER BY id FOR UPDATE";

/// The bucket's multipart uploads, locked against `put_part` until the commit.
const SQL_LOCK_BUCKET_MULTIPART: &str = "SELECT id FROM multipart_uploads WHERE bucket = $1 ORDER BY id FOR UPDATE";

const UPLOAD_LIST_STATEMENTS: ListStatements = sql::UPLOAD_LIST.of(Dialect::Postgres);

/// `put_part`'s first statement: the upload, share-locked so that no abort or
/// completion removes it (and its parts) before this part is in.
const SQL_SHARE_MULTIPART: &str = "SELECT 1 FROM multipart_uploads WHERE id = $1 FOR SHARE";

/// An abort's or completion's first lock: the upload, locked against `put_part`
/// until the commit.
const SQL_LOCK_MULTIPART: &str = "SELECT bucket, name FROM multipart_uploads WHERE id = $1 FOR UPDATE";

/// The bucket of a multipart upload, read before the completion locks it (as
/// [`SQL_UPLOAD_BUCKET`]).
const SQL_MULTIPART_BUCKET: &str = "SELECT bucket FROM multipart_uploads WHERE id = $1";

/// Locks and removes every upload into `bucket`, tus and multipart, with their
/// parts, inside `tx` (the caller holds the bucket's row lock, so no new one
/// comes), as `delete_upload` and `abort_multipart` each remove one; returns how
/// many were open. A finished tus upload goes too (its row only answers a repeated
/// finish) but was not aborted, so it is not counted.
async fn abort_bucket_uploads(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    bucket: &str,
) -> Result<u64, MetaError> {
    let stmt = tx.prepare_cached(SQL_LOCK_BUCKET_UPLOADS).await.context(what)?;
    let tus = tx.query(&stmt, &[&bucket]).await.context(what)?;
    let stmt = tx.prepare_cached(SQL_LOCK_BUCKET_MULTIPART).await.context(what)?;
    let multipart = tx.query(&stmt, &[&bucket]).await.context(what)?;
    let mut aborted = 0;
    for row in &tus {
        let (id, open): (String, bool) = (row.try_get(0).context(what)?, row.try_get(1).context(what)?);
        if drop_upload(tx, what, &id).await? && open {
            aborted += 1;
        }
    }
    for row in &multipart {
        let id: String = row.try_get(0).context(what)?;
        if drop_multipart(tx, what, &id).await? {
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Maps a `multipart_uploads` row (columns as [`multipart_columns`]) onto
/// [`RawMultipart`].
fn raw_multipart(row: &Row) -> Result<RawMultipart, tokio_postgres::Error> {
    Ok(RawMultipart {
        id: row.try_get(0)?,
        bucket: row.try_get(1)?,
        name: row.try_get(2)?,
        attrs: row.try_get(3)?,
        created_ms: row.try_get(4)?,
    })
}

/// Maps an `access_keys` row (columns as [`key_columns`]) onto [`RawAccessKey`].
fn raw_key(row: &Row) -> Result<RawAccessKey, tokio_postgres::Error> {
    Ok(RawAccessKey {
        access_key: row.try_get(0)?,
        secret: row.try_get(1)?,
        buckets: row.try_get(2)?,
        read_only: row.try_get(3)?,
        created_ms: row.try_get(4)?,
    })
}

/// A bucket row (`name, created_ms`).
fn bucket_row(row: &Row, what: &str) -> Result<BucketRecord, MetaError> {
    Ok(BucketRecord { name: row.try_get(0).context(what)?, created_ms: row.try_get(1).context(what)? })
}

#[async_trait]
impl BucketStore for PostgresStore {
    async fn create_bucket(&self, name: &str, created_ms: i64) -> Result<bool, MetaError> {
        Ok(self.execute("create_bucket", sql::CREATE_BUCKET.postgres, &[&name, &created_ms]).await? > 0)
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, MetaError> {
        const WHAT: &str = "bucket";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::BUCKET.postgres).await.context(WHAT)?;
        client.query_opt(&stmt, &[&name]).await.context(WHAT)?.map(|row| bucket_row(&row, WHAT)).transpose()
    }

    async fn buckets(&self) -> Result<Vec<BucketRecord>, MetaError> {
        const WHAT: &str = "buckets";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::BUCKETS.postgres).await.context(WHAT)?;
        client.query(&stmt, &[]).await.context(WHAT)?.iter().map(|row| bucket_row(row, WHAT)).collect()
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeleteOutcome, MetaError> {
        const WHAT: &str = "delete_bucket";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The exclusive row lock waits for every write into the bucket holding a
        // share lock on it; the checks and the upload locks, statements of their
        // own, then see what those committed (READ COMMITTED), and later writers
        // wait for this transaction and find no bucket.
        let stmt = tx.prepare_cached(SQL_LOCK_BUCKET).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&name]).await.context(WHAT)?.is_none() {
            return Ok(BucketDeleteOutcome::NoSuchBucket);
        }
        let stmt = tx.prepare_cached(sql::BUCKET_HAS_VERSION.postgres).await.context(WHAT)?;
        let has_version: bool = tx.query_one(&stmt, &[&name]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
        if has_version {
            return Ok(BucketDeleteOutcome::NotEmpty);
        }
        let aborted_uploads = abort_bucket_uploads(&tx, WHAT, name).await?;
        let stmt = tx.prepare_cached(sql::DROP_BUCKET.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&name]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(BucketDeleteOutcome::Deleted { aborted_uploads })
    }
}

#[async_trait]
impl MultipartStore for PostgresStore {
    async fn create_multipart(&self, upload: &MultipartRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_multipart";
        let u = upload;
        let attrs = attrs_json(&u.attrs)?;
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        share_bucket(&tx, WHAT, &u.bucket).await?;
        let stmt = tx.prepare_cached(sql::INSERT_MULTIPART.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&u.id, &u.bucket, &u.name, &attrs, &u.created_ms]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)
    }

    async fn multipart(&self, id: &str) -> Result<Option<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::MULTIPART.postgres).await.context(WHAT)?;
        let row = client.query_opt(&stmt, &[&id]).await.context(WHAT)?;
        row.map(|row| raw_multipart(&row).context(WHAT)?.parse()).transpose()
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
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_SHARE_MULTIPART).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&id]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let row = record_content(&tx, WHAT, content).await?;
        let stmt = tx.prepare_cached(sql::UPSERT_MULTIPART_PART.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&id, &i64::from(part_number), &row.hash, &row.size, &etag, &created_ms])
            .await
            .context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(true)
    }

    async fn parts(&self, id: &str, after: u32, limit: usize) -> Result<Vec<MultipartPart>, MetaError> {
        const WHAT: &str = "parts";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::MULTIPART_PARTS.postgres).await.context(WHAT)?;
        let rows = client.query(&stmt, &[&id, &i64::from(after), &limit]).await.context(WHAT)?;
        rows.iter()
            .map(|r| {
                let raw = RawMultipartPart {
                    part_number: r.try_get(0).context(WHAT)?,
                    hash: r.try_get(1).context(WHAT)?,
                    size: r.try_get(2).context(WHAT)?,
                    etag: r.try_get(3).context(WHAT)?,
                    created_ms: r.try_get(4).context(WHAT)?,
                };
                raw.parse(id)
            })
            .collect()
    }

    async fn multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart_uploads";
        let Some(r) = UploadListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(r.statement(&UPLOAD_LIST_STATEMENTS)).await.context(WHAT)?;
        let rows = match &r.upper {
            Some(upper) => client.query(&stmt, &[&bucket, &r.name, &r.id, upper, &r.limit]).await,
            None => client.query(&stmt, &[&bucket, &r.name, &r.id, &r.limit]).await,
        }
        .context(WHAT)?;
        rows.iter().map(|row| raw_multipart(row).context(WHAT)?.parse()).collect()
    }

    async fn complete_multipart(
        &self,
        id: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
    ) -> Result<CompleteOutcome, MetaError> {
        const WHAT: &str = "complete_multipart";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_MULTIPART_BUCKET).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(CompleteOutcome::Gone);
        };
        let bucket: String = row.try_get(0).context(WHAT)?;
        // The bucket before the upload (add_object share-locks it again, a no-op).
        share_bucket(&tx, WHAT, &bucket).await?;
        let stmt = tx.prepare_cached(SQL_LOCK_MULTIPART).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(CompleteOutcome::Gone);
        };
        let (bucket, name): (String, String) = (row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?);
        let record = add_object(&tx, &bucket, &name, content, attrs, None).await?;
        drop_multipart(&tx, WHAT, id).await?;
        tx.commit().await.context(WHAT)?;
        Ok(CompleteOutcome::Completed(record))
    }

    async fn abort_multipart(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "abort_multipart";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_MULTIPART).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&id]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let existed = drop_multipart(&tx, WHAT, id).await?;
        tx.commit().await.context(WHAT)?;
        Ok(existed)
    }

    async fn remove_stale_multipart(&self, cutoff_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::StaleMultipart, cutoff_ms, limit).await
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_key(&self, key: &AccessKey) -> Result<bool, MetaError> {
        let buckets = key_buckets_json(&key.buckets)?;
        let params: [&(dyn ToSql + Sync); 5] =
            [&key.access_key, &key.secret, &buckets, &key.read_only, &key.created_ms];
        Ok(self.execute("create_key", sql::CREATE_KEY.postgres, &params).await? > 0)
    }

    async fn key(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError> {
        const WHAT: &str = "key";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::KEY.postgres).await.context(WHAT)?;
        let row = client.query_opt(&stmt, &[&access_key]).await.context(WHAT)?;
        row.map(|row| raw_key(&row).context(WHAT)?.parse()).transpose()
    }

    async fn keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        const WHAT: &str = "keys";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::KEYS.postgres).await.context(WHAT)?;
        let rows = client.query(&stmt, &[]).await.context(WHAT)?;
        rows.iter().map(|row| raw_key(row).context(WHAT)?.parse()).collect()
    }

    async fn delete_key(&self, access_key: &str) -> Result<bool, MetaError> {
        Ok(self.execute("delete_key", sql::DELETE_KEY.postgres, &[&access_key]).await? > 0)
    }
}
