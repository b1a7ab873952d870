//! The S3 door's copies: CopyObject (a metadata write, the content being the
//! same) and UploadPartCopy (a range of the source read back as a new part),
//! with the copy source, which the caller must be allowed to read, and its range.

use s3s::dto;
use s3s::{s3_error, S3Result};

use super::error::refusal;
use super::CairnS3;
use crate::api::policy::{self, Action, Caller};
use crate::meta::VersionRecord;
use crate::range::ByteRange;

impl CairnS3 {
    /// The source of a CopyObject or UploadPartCopy, which the caller must be
    /// allowed to read.
    pub(super) async fn copy_source(&self, source: &dto::CopySource, caller: &Caller) -> S3Result<VersionRecord> {
        let dto::CopySource::Bucket { bucket, key, version_id } = source else {
            return Err(s3_error!(NotImplemented, "access point copy sources are not supported"));
        };
        policy::authorize(caller, Action::CopySource, Some(bucket)).map_err(refusal)?;
        self.find(bucket, key, version_id.as_deref()).await
    }
}

/// The range of a `CopySourceRange` header (`bytes=a-b`) within `size` bytes.
pub(super) fn copy_range(header: Option<&String>, size: u64) -> S3Result<ByteRange> {
    let Some(header) = header else { return Ok(ByteRange { start: 0, end: size }) };
    let range = dto::Range::parse(header).map_err(|_| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?;
    let r = range.check(size).map_err(|_| s3_error!(InvalidRange, "copy source range outside the object"))?;
    Ok(ByteRange { start: r.start, end: r.end })
}
