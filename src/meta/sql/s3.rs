//! The statements of the S3 traits ([`BucketStore`](crate::meta::BucketStore),
//! [`MultipartStore`](crate::meta::MultipartStore), [`KeyStore`](crate::meta::KeyStore))
//! that both stores run alike.

use crate::meta::row::{key_columns, multipart_columns, multipart_part_columns};
use crate::meta::sql::{sql, Lists};

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

    DROP_MULTIPART_PARTS = "DELETE FROM multipart_parts WHERE upload_id = $1";

    DROP_MULTIPART = "DELETE FROM multipart_uploads WHERE id = $1";

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
