//! The S3 traits ([`BucketStore`], [`MultipartStore`], [`KeyStore`]) over any
//! executor, and their statements: buckets, multipart uploads and their parts,
//! access keys.
//!
//! PostgreSQL locks what a change depends on: `delete_bucket` locks the bucket's
//! row `FOR UPDATE` (writes into the bucket share-lock it), then the bucket's
//! uploads; `put_part` share-locks its upload, which an abort or a completion locks
//! exclusively. SQLite's write transaction holds the one write lock from the first
//! read to the commit, to the same effect; its statements are the same without
//! the locks.

use async_trait::async_trait;

use super::content::record_content;
use super::steps::{drop_multipart, drop_upload, remove_batch, share_bucket};
use super::versions::add_version;
use super::SqlStore;
use crate::meta::exec::{params, Executor, Row};
use crate::meta::row::{
    attrs_json, key_buckets_json, sql_limit, Batch, RawAccessKey, RawMultipart, RawMultipartPart, UploadListRange,
};
use crate::meta::row::{key_columns, multipart_columns, multipart_part_columns};
use crate::meta::sql::{sql, Lists};
use crate::meta::{
    AccessKey, BucketDeleteOutcome, BucketRecord, BucketStore, CompleteOutcome, ContentRecord, KeyStore, MetaError,
    MultipartPart, MultipartRecord, MultipartStore, ObjectAttrs,
};

/// `multipart_uploads`, as [`ListStatements`](crate::meta::row::ListStatements)
/// wants it: a range on the index `multipart_uploads_by_name` from (`$2`, `$3`).
macro_rules! select_uploads {
    ($op:literal, $upper:literal, $limit:literal) => {
        concat!(
            "SELECT ",
            multipart_columns!(),
            " FROM multipart_uploads WHERE bucket = $1 AND (name, id) ",
            $op,
            " ($2, $3) ",
            $upper,
            "ORDER BY name, id LIMIT ",
            $limit
        )
    };
}

sql! {
    /// `delete_bucket`'s first statement (PostgreSQL: locks the bucket's row, waiting
    /// for every write into it that holds a share lock).
    LOCK_BUCKET = "SELECT 1 FROM buckets WHERE name = $1", postgres: "FOR UPDATE";

    /// The bucket's tus uploads, and whether each is still open (PostgreSQL: locked
    /// against appends and finishes until the commit, in id order). `uploads` has no
    /// index on the bucket: this scans it, which only a bucket deletion does, and the
    /// table holds only unexpired uploads (the expiry worker removes the rest).
    LOCK_BUCKET_UPLOADS = "SELECT id, finished_version IS NULL FROM uploads WHERE bucket = $1 ORDER BY id",
        postgres: "FOR UPDATE";

    /// The bucket's multipart uploads, a range of `multipart_uploads_by_name`
    /// (PostgreSQL: locked against `put_part` until the commit).
    LOCK_BUCKET_MULTIPART = "SELECT id FROM multipart_uploads WHERE bucket = $1 ORDER BY id", postgres: "FOR UPDATE";

    /// `put_part`'s first statement: the upload (PostgreSQL: share-locked, so that no
    /// abort or completion removes it, and its parts, before this part is in).
    SHARE_MULTIPART = "SELECT 1 FROM multipart_uploads WHERE id = $1", postgres: "FOR SHARE";

    /// An abort's or a completion's upload (PostgreSQL: locked against `put_part`
    /// until the commit).
    LOCK_MULTIPART = "SELECT bucket, name FROM multipart_uploads WHERE id = $1", postgres: "FOR UPDATE";

    /// The bucket of a multipart upload, read before the completion locks it (the
    /// bucket's lock comes first; an upload's bucket never changes).
    MULTIPART_BUCKET = "SELECT bucket FROM multipart_uploads WHERE id = $1";

    CREATE_BUCKET = "INSERT INTO buckets (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

    BUCKET = "SELECT name, created_ms FROM buckets WHERE name = $1";

    BUCKETS = "SELECT name, created_ms FROM buckets ORDER BY name";

    /// A version (tombstones too) is in the bucket: what keeps it from deletion.
    BUCKET_HAS_VERSION = "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket = $1)";

    DROP_BUCKET = "DELETE FROM buckets WHERE name = $1";

    INSERT_MULTIPART = "INSERT INTO multipart_uploads (id, bucket, name, attrs, created_ms) VALUES ($1, $2, $3, $4, $5)";

    MULTIPART = concat!("SELECT ", multipart_columns!(), " FROM multipart_uploads WHERE id = $1");

    MULTIPART_PARTS = concat!(
        "SELECT ",
        multipart_part_columns!(),
        " FROM multipart_parts WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3"
    );

    /// Sets a part, replacing an earlier upload of its number.
    UPSERT_MULTIPART_PART = "INSERT INTO multipart_parts \
         (upload_id, part_number, hash, size, etag, created_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (upload_id, part_number) DO UPDATE SET hash = excluded.hash, size = excluded.size, \
         etag = excluded.etag, created_ms = excluded.created_ms";

    CREATE_KEY = "INSERT INTO access_keys (access_key, secret, buckets, read_only, created_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (access_key) DO NOTHING";

    KEY = concat!("SELECT ", key_columns!(), " FROM access_keys WHERE access_key = $1");

    KEYS = concat!("SELECT ", key_columns!(), " FROM access_keys ORDER BY access_key");

    DELETE_KEY = "DELETE FROM access_keys WHERE access_key = $1";

    UPLOAD_LIST_FROM = select_uploads!(">=", "", "$4");

    UPLOAD_LIST_FROM_UPTO = select_uploads!(">=", "AND name < $4 ", "$5");

    UPLOAD_LIST_AFTER = select_uploads!(">", "", "$4");

    UPLOAD_LIST_AFTER_UPTO = select_uploads!(">", "AND name < $4 ", "$5");
}

/// `multipart_uploads`'s statements.
pub(crate) const UPLOAD_LIST: Lists = Lists {
    from: UPLOAD_LIST_FROM,
    from_upto: UPLOAD_LIST_FROM_UPTO,
    after: UPLOAD_LIST_AFTER,
    after_upto: UPLOAD_LIST_AFTER_UPTO,
};

/// Locks and removes every upload into `bucket`, tus and multipart, with their
/// parts, inside the caller's transaction (which holds the bucket, so no new one
/// comes), as `delete_upload` and `abort_multipart` each remove one; returns how
/// many were open. A finished tus upload goes too (its row only answers a repeated
/// finish) but was not aborted, so it is not counted.
async fn abort_bucket_uploads(
    c: &mut dyn crate::meta::exec::Conn,
    what: &'static str,
    bucket: &str,
) -> Result<u64, MetaError> {
    let tus = c.query(what, LOCK_BUCKET_UPLOADS, params![bucket]).await?;
    let multipart = c.query(what, LOCK_BUCKET_MULTIPART, params![bucket]).await?;
    let mut aborted = 0;
    for row in &tus {
        let (id, open): (String, bool) = (row.get(0)?, row.get(1)?);
        if drop_upload(c, what, &id).await? && open {
            aborted += 1;
        }
    }
    for row in &multipart {
        if drop_multipart(c, what, &row.get::<String>(0)?).await? {
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// A `multipart_uploads` row (columns as [`multipart_columns`]), validated.
fn multipart_row(row: &Row) -> Result<MultipartRecord, MetaError> {
    RawMultipart {
        id: row.get(0)?,
        bucket: row.get(1)?,
        name: row.get(2)?,
        attrs: row.get(3)?,
        created_ms: row.get(4)?,
    }
    .parse()
}

/// An `access_keys` row (columns as [`key_columns`]), validated.
fn key_row(row: &Row) -> Result<AccessKey, MetaError> {
    RawAccessKey {
        access_key: row.get(0)?,
        secret: row.get(1)?,
        buckets: row.get(2)?,
        read_only: row.get(3)?,
        created_ms: row.get(4)?,
    }
    .parse()
}

/// A bucket row (`name, created_ms`).
fn bucket_row(row: &Row) -> Result<BucketRecord, MetaError> {
    Ok(BucketRecord { name: row.get(0)?, created_ms: row.get(1)? })
}

#[async_trait]
impl<E: Executor> BucketStore for SqlStore<E> {
    async fn create_bucket(&self, name: &str, created_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "create_bucket";
        let name = name.to_string();
        self.exec
            .write(WHAT, move |c| {
                Box::pin(async move { Ok(c.execute(WHAT, CREATE_BUCKET, params![name, created_ms]).await? > 0) })
            })
            .await
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, MetaError> {
        const WHAT: &str = "bucket";
        let name = name.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(
                    async move { c.query_opt(WHAT, BUCKET, params![name]).await?.as_ref().map(bucket_row).transpose() },
                )
            })
            .await
    }

    async fn buckets(&self) -> Result<Vec<BucketRecord>, MetaError> {
        const WHAT: &str = "buckets";
        self.exec
            .run(WHAT, |c| Box::pin(async move { c.query(WHAT, BUCKETS, &[]).await?.iter().map(bucket_row).collect() }))
            .await
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeleteOutcome, MetaError> {
        const WHAT: &str = "delete_bucket";
        let name = name.to_string();
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    // PostgreSQL: the exclusive row lock waits for every write into
                    // the bucket holding a share lock on it; the checks and the upload
                    // locks, statements of their own, then see what those committed
                    // (READ COMMITTED), and later writers wait for this transaction
                    // and find no bucket. SQLite: one writer at a time, in any process.
                    if c.query_opt(WHAT, LOCK_BUCKET, params![&name]).await?.is_none() {
                        return Ok(BucketDeleteOutcome::NoSuchBucket);
                    }
                    let has_version: bool = c.query_one(WHAT, BUCKET_HAS_VERSION, params![&name]).await?.get(0)?;
                    if has_version {
                        return Ok(BucketDeleteOutcome::NotEmpty);
                    }
                    let aborted_uploads = abort_bucket_uploads(c, WHAT, &name).await?;
                    c.execute(WHAT, DROP_BUCKET, params![&name]).await?;
                    Ok(BucketDeleteOutcome::Deleted { aborted_uploads })
                })
            })
            .await
    }
}

#[async_trait]
impl<E: Executor> MultipartStore for SqlStore<E> {
    async fn create_multipart(&self, upload: &MultipartRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_multipart";
        let u = upload.clone();
        let attrs = attrs_json(&u.attrs)?;
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    share_bucket(c, WHAT, &u.bucket).await?;
                    let p = params![u.id, &u.bucket, u.name, attrs, u.created_ms];
                    c.execute(WHAT, INSERT_MULTIPART, p).await.map(drop)
                })
            })
            .await
    }

    async fn multipart(&self, id: &str) -> Result<Option<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart";
        let id = id.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    c.query_opt(WHAT, MULTIPART, params![id]).await?.as_ref().map(multipart_row).transpose()
                })
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
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    // An abort or completion of the upload is either before (false)
                    // or after (and removes this part with the others).
                    if c.query_opt(WHAT, SHARE_MULTIPART, params![&id]).await?.is_none() {
                        return Ok(false);
                    }
                    let row = record_content(c, WHAT, &content).await?;
                    let p = params![id, i64::from(part_number), row.hash, row.size, etag, created_ms];
                    c.execute(WHAT, UPSERT_MULTIPART_PART, p).await?;
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
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let rows = c.query(WHAT, MULTIPART_PARTS, params![&id, i64::from(after), limit]).await?;
                    rows.iter()
                        .map(|r| {
                            let raw = RawMultipartPart {
                                part_number: r.get(0)?,
                                hash: r.get(1)?,
                                size: r.get(2)?,
                                etag: r.get(3)?,
                                created_ms: r.get(4)?,
                            };
                            raw.parse(&id)
                        })
                        .collect()
                })
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
        let Some(r) = UploadListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let sql = r.statement(&UPLOAD_LIST);
                    let rows = match r.upper {
                        Some(upper) => c.query(WHAT, sql, params![bucket, r.name, r.id, upper, r.limit]).await?,
                        None => c.query(WHAT, sql, params![bucket, r.name, r.id, r.limit]).await?,
                    };
                    rows.iter().map(multipart_row).collect()
                })
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
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    let Some(row) = c.query_opt(WHAT, MULTIPART_BUCKET, params![&id]).await? else {
                        return Ok(CompleteOutcome::Gone);
                    };
                    // The bucket before the upload.
                    share_bucket(c, WHAT, &row.get::<String>(0)?).await?;
                    let Some(row) = c.query_opt(WHAT, LOCK_MULTIPART, params![&id]).await? else {
                        return Ok(CompleteOutcome::Gone);
                    };
                    let (bucket, name): (String, String) = (row.get(0)?, row.get(1)?);
                    let record = add_version(c, bucket, name, Some(content), Some(attrs)).await?;
                    drop_multipart(c, WHAT, &id).await?;
                    Ok(CompleteOutcome::Completed(record))
                })
            })
            .await
    }

    async fn abort_multipart(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "abort_multipart";
        let id = id.to_string();
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    if c.query_opt(WHAT, LOCK_MULTIPART, params![&id]).await?.is_none() {
                        return Ok(false);
                    }
                    drop_multipart(c, WHAT, &id).await
                })
            })
            .await
    }

    async fn remove_stale_multipart(&self, cutoff_ms: i64, limit: usize) -> Result<usize, MetaError> {
        remove_batch(&self.exec, Batch::StaleMultipart, cutoff_ms, limit).await
    }
}

#[async_trait]
impl<E: Executor> KeyStore for SqlStore<E> {
    async fn create_key(&self, key: &AccessKey) -> Result<bool, MetaError> {
        const WHAT: &str = "create_key";
        let buckets = key_buckets_json(&key.buckets)?;
        let key = key.clone();
        self.exec
            .write(WHAT, move |c| {
                Box::pin(async move {
                    let p = params![key.access_key, key.secret, buckets, key.read_only, key.created_ms];
                    Ok(c.execute(WHAT, CREATE_KEY, p).await? > 0)
                })
            })
            .await
    }

    async fn key(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError> {
        const WHAT: &str = "key";
        let access_key = access_key.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(
                    async move { c.query_opt(WHAT, KEY, params![access_key]).await?.as_ref().map(key_row).transpose() },
                )
            })
            .await
    }

    async fn keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        const WHAT: &str = "keys";
        self.exec
            .run(WHAT, |c| Box::pin(async move { c.query(WHAT, KEYS, &[]).await?.iter().map(key_row).collect() }))
            .await
    }

    async fn delete_key(&self, access_key: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_key";
        let access_key = access_key.to_string();
        self.exec
            .write(WHAT, move |c| {
                Box::pin(async move { Ok(c.execute(WHAT, DELETE_KEY, params![access_key]).await? > 0) })
            })
            .await
    }
}
