//! The S3 door's copies: CopyObject (a metadata write, the content being the
//! same) and UploadPartCopy (a range of the source read back as a new part),
//! with the copy source, which the caller must be allowed to read, and its range.

use s3s::dto::{self, ETag, ETagCondition, StreamingBlob, Timestamp};
use s3s::{s3_error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::attrs::{attrs_of, check_conditions, timestamp, version_id};
use super::auth::caller_of;
use super::error::{entity_too_large, meta_error, object_error, refusal};
use super::multipart::part_number;
use super::CairnS3;
use crate::api::policy::{self, Action, Caller};
use crate::clock::now_ms;
use crate::meta::VersionRecord;
use crate::range::ByteRange;

/// CopyObject: a new version of the same content, with the source's attributes
/// or new ones (`REPLACE`).
pub(super) async fn copy_object(
    s3: &CairnS3,
    req: S3Request<dto::CopyObjectInput>,
) -> S3Result<S3Response<dto::CopyObjectOutput>> {
    let caller = caller_of(&req);
    let input = req.input;
    s3.check_new_key(&input.key)?;
    let source = s3.copy_source(&input.copy_source, &caller).await?;
    check_source_conditions(
        &source,
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )?;
    let content = source.content.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
    // An object stored before the limit was lowered is not copied past it.
    if !s3.door.fits(content.size, s3.door.max_object_size) {
        return Err(entity_too_large("object", s3.door.max_object_size));
    }
    let etag = source.etag();
    let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == "REPLACE");
    let mut attrs = if replace { attrs_of!(input) } else { source.attrs.clone().unwrap_or_default() };
    attrs.etag = Some(etag.clone());
    // Same bytes, same content: a copy is one metadata write, whatever its size.
    let record = s3.svc.meta.put_object(&input.bucket, &input.key, &content, &attrs, None).await.map_err(meta_error)?;
    Ok(S3Response::new(dto::CopyObjectOutput {
        copy_object_result: Some(dto::CopyObjectResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(record.created_ms)),
            ..Default::default()
        }),
        copy_source_version_id: Some(version_id(&source)),
        version_id: Some(version_id(&record)),
        ..Default::default()
    }))
}

/// UploadPartCopy: a range of the copy source read back and stored as one part.
pub(super) async fn upload_part_copy(
    s3: &CairnS3,
    req: S3Request<dto::UploadPartCopyInput>,
) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
    let caller = caller_of(&req);
    let input = req.input;
    let number = part_number(input.part_number)?;
    s3.upload(&input.upload_id, &input.bucket, &input.key).await?;
    let source = s3.copy_source(&input.copy_source, &caller).await?;
    check_source_conditions(
        &source,
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )?;
    let content = source.content.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
    let range = copy_range(input.copy_source_range.as_ref(), content.size)?;
    let limit = s3.part_limit();
    if !s3.door.fits(range.len(), limit) {
        return Err(entity_too_large("part", limit));
    }
    let body = s3.svc.read(&content, range).await.map_err(object_error)?;
    let (stored, md5) = s3.store_body("part", Some(StreamingBlob::wrap(body)), limit, None).await?;
    let recorded =
        s3.svc.meta.put_part(&input.upload_id, number, &stored.content, &md5, now_ms()).await.map_err(meta_error)?;
    if !recorded {
        return Err(s3_error!(NoSuchUpload, "upload {} ended while the part was copied", input.upload_id));
    }
    s3.svc.recorded(stored);
    Ok(S3Response::new(dto::UploadPartCopyOutput {
        copy_part_result: Some(dto::CopyPartResult {
            e_tag: Some(ETag::Strong(md5)),
            last_modified: Some(timestamp(now_ms())),
            ..Default::default()
        }),
        copy_source_version_id: Some(version_id(&source)),
        ..Default::default()
    }))
}

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

/// The `x-amz-copy-source-if-*` conditions: a GET's conditions on the source,
/// except that one a GET would answer 304 fails the copy with 412, as in S3.
fn check_source_conditions(
    source: &VersionRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    check_conditions(source, if_match, if_none_match, if_modified_since, if_unmodified_since).map_err(|e| {
        if *e.code() == S3ErrorCode::NotModified {
            s3_error!(PreconditionFailed)
        } else {
            e
        }
    })
}

/// The range of a `CopySourceRange` header (`bytes=a-b`) within `size` bytes.
pub(super) fn copy_range(header: Option<&String>, size: u64) -> S3Result<ByteRange> {
    let Some(header) = header else { return Ok(ByteRange { start: 0, end: size }) };
    let range = dto::Range::parse(header).map_err(|_| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?;
    let r = range.check(size).map_err(|_| s3_error!(InvalidRange, "copy source range outside the object"))?;
    Ok(ByteRange { start: r.start, end: r.end })
}
