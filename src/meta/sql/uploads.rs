//! The statements of [`UploadStore`](crate::meta::UploadStore) that both stores
//! run alike: uploads, their parts and their offsets.

use crate::meta::row::upload_columns;
use crate::meta::sql::sql;

sql! {
    INSERT_UPLOAD = "INSERT INTO uploads (id, bucket, name, length, upload_offset, metadata, expected, \
         hasher, created_ms, expires_ms, finished_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

    UPLOAD = concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = $1");

    INSERT_PART = "INSERT INTO upload_parts (id, part_offset, size, hash) VALUES ($1, $2, $3, $4)";

    ADVANCE_UPLOAD = "UPDATE uploads SET upload_offset = $2, hasher = $3, expires_ms = $4, \
         length = COALESCE(length, $5) WHERE id = $1";

    UPLOAD_PARTS = "SELECT part_offset, size, hash FROM upload_parts \
         WHERE id = $1 AND part_offset >= $2 ORDER BY part_offset LIMIT $3";

    FINISH_UPLOAD = "UPDATE uploads SET finished_version = $2 WHERE id = $1";

    DROP_PARTS = "DELETE FROM upload_parts WHERE id = $1";

    DROP_UPLOAD = "DELETE FROM uploads WHERE id = $1";
}
