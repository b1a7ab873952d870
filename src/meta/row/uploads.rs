//! The upload rows of the SQL stores: tus `uploads` and `upload_parts` rows and
//! their validation, and the batches the expiry worker removes (tus and S3
//! multipart uploads alike).

use super::{to_sql_int, version_number};
use crate::content::ContentHash;
use crate::meta::{MetaError, UploadPart, UploadRecord};

/// The columns of an `uploads` row, in the order both stores select them
/// (a macro, so that the stores' statements can be `concat!`ed constants).
macro_rules! upload_columns {
    () => {
        "id, bucket, name, length, upload_offset, metadata, expected, hasher, created_ms, expires_ms, finished_version"
    };
}
pub(crate) use upload_columns;

/// An `uploads` row as read, before validation.
pub(crate) struct RawUpload {
    pub(crate) id: String,
    pub(crate) bucket: String,
    pub(crate) name: String,
    pub(crate) length: Option<i64>,
    pub(crate) offset: i64,
    pub(crate) metadata: String,
    pub(crate) expected: Option<String>,
    pub(crate) hasher: Vec<u8>,
    pub(crate) created_ms: i64,
    pub(crate) expires_ms: i64,
    pub(crate) finished_version: Option<i64>,
}

impl RawUpload {
    /// Validates the row: non-negative sizes, a hash where one is expected.
    pub(crate) fn parse(self) -> Result<UploadRecord, MetaError> {
        let id = self.id;
        let bad = |what: String| MetaError::Corrupt(format!("upload {id}: {what}"));
        let size = |n: i64, what: &str| u64::try_from(n).map_err(|_| bad(format!("negative {what} {n}")));
        let length = self.length.map(|n| size(n, "length")).transpose()?;
        let offset = size(self.offset, "offset")?;
        let expected = self
            .expected
            .map(|h| h.parse::<ContentHash>().map_err(|e| bad(format!("expected hash: {e}"))))
            .transpose()?;
        let finished_version = self
            .finished_version
            .map(|v| version_number(v, || format!("upload {id}: finished version")))
            .transpose()?;
        Ok(UploadRecord {
            bucket: self.bucket,
            name: self.name,
            length,
            offset,
            metadata: self.metadata,
            expected,
            hasher: self.hasher,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            finished_version,
            id,
        })
    }
}

/// Validates an `upload_parts` row (offset, size, hash).
pub(crate) fn parse_part(id: &str, offset: i64, size: i64, hash: &str) -> Result<UploadPart, MetaError> {
    let bad = |what: String| MetaError::Corrupt(format!("upload {id} part at {offset}: {what}"));
    Ok(UploadPart {
        offset: u64::try_from(offset).map_err(|_| bad("negative offset".into()))?,
        size: u64::try_from(size).map_err(|_| bad(format!("negative size {size}")))?,
        hash: hash.parse().map_err(|e| bad(format!("{e}")))?,
    })
}

/// An upload's numbers as SQL integers; a value beyond BIGINT is refused.
pub(crate) fn upload_int(n: u64, what: &str) -> Result<i64, MetaError> {
    to_sql_int(n).ok_or_else(|| MetaError::Corrupt(format!("upload {what} {n} is too large")))
}

/// The uploads the expiry worker removes in batches: tus uploads past their expiry,
/// S3 multipart uploads created before a cutoff. Each store reads a batch's ids
/// with its own statement (PostgreSQL locks them) and drops each upload its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Batch {
    /// tus uploads past their expiry.
    ExpiredUploads,
    /// S3 multipart uploads created at or before a cutoff.
    StaleMultipart,
}

impl Batch {
    /// The method's name, for errors.
    pub(crate) fn what(self) -> &'static str {
        self.pick("remove_expired_uploads", "remove_stale_multipart")
    }

    /// `expired` for a batch of tus uploads, `stale` for one of multipart uploads.
    pub(crate) fn pick<T>(self, expired: T, stale: T) -> T {
        match self {
            Batch::ExpiredUploads => expired,
            Batch::StaleMultipart => stale,
        }
    }
}
