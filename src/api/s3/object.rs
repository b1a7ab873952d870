//! The S3 door's object operations: PutObject, GetObject, HeadObject,
//! DeleteObject and DeleteObjects, with the lookup of the version a request
//! names (by key, or by version id) that the copy operations use too.

use s3s::dto::{self, ETag, StreamingBlob};
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::attrs::{
    attrs_of, check_conditions, parse_expires, timestamp, user_metadata, version_id, write_condition, VersionId,
};
use super::error::{meta_error, name_error, object_error};
use super::{CairnS3, MAX_KEYS};
use crate::api::names;
use crate::meta::VersionRecord;
use crate::object::ObjectError;
use crate::range::ByteRange;

/// PutObject: the body stored as content, then recorded as a new version
/// (conditionally, when asked).
pub(super) async fn put_object(
    s3: &CairnS3,
    req: S3Request<dto::PutObjectInput>,
) -> S3Result<S3Response<dto::PutObjectOutput>> {
    let input = req.input;
    s3.check_new_key(&input.key)?;
    let limit = s3.door.max_object_size;
    s3.check_length("object", input.content_length, limit)?;
    // Checked again in the version's transaction; here so that a PUT into a
    // bucket that does not exist stores no byte.
    s3.require_bucket(&input.bucket).await?;
    let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    if let Some(condition) = &condition {
        // Checked once before the body is stored, so a failing write costs no
        // bytes, and again in the version's transaction, so it is atomic.
        let latest = s3.svc.meta.latest(&input.bucket, &input.key).await.map_err(meta_error)?;
        if !condition.holds(latest.as_ref()) {
            return Err(s3_error!(PreconditionFailed, "the PUT's precondition does not hold"));
        }
    }
    let (stored, md5) = s3.store_body("object", input.body, limit, input.content_md5.as_ref()).await?;
    let mut attrs = attrs_of!(input);
    attrs.etag = Some(md5.clone());
    let record = s3
        .svc
        .meta
        .put_object(&input.bucket, &input.key, &stored.content, &attrs, condition.as_ref())
        .await
        .map_err(meta_error)?;
    s3.svc.recorded(stored);
    Ok(S3Response::new(dto::PutObjectOutput {
        e_tag: Some(ETag::Strong(md5)),
        version_id: Some(version_id(&record)),
        ..Default::default()
    }))
}

/// GetObject: a version (or a range of it), with its attributes, after the
/// conditional-read checks.
pub(super) async fn get_object(
    s3: &CairnS3,
    req: S3Request<dto::GetObjectInput>,
) -> S3Result<S3Response<dto::GetObjectOutput>> {
    let input = req.input;
    let record = s3.find(&input.bucket, &input.key, input.version_id.as_deref()).await?;
    check_conditions(
        &record,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    let content = record.content.as_ref().ok_or_else(|| s3_error!(NoSuchKey))?;
    let size = content.size;
    let (range, content_range) = match &input.range {
        None => (ByteRange { start: 0, end: size }, None),
        Some(r) => {
            let r = r.check(size).map_err(|_| {
                let mut err = s3_error!(InvalidRange, "the range is outside the object's {size} bytes");
                let mut headers = http::HeaderMap::new();
                if let Ok(v) = format!("bytes */{size}").parse() {
                    headers.insert(http::header::CONTENT_RANGE, v);
                }
                err.set_headers(headers);
                err
            })?;
            let range = ByteRange { start: r.start, end: r.end };
            (range, Some(range.content_range(size)))
        }
    };
    let body = s3.svc.read(content, range).await.map_err(object_error)?;
    let attrs = record.attrs.clone().unwrap_or_default();
    let output = dto::GetObjectOutput {
        body: Some(StreamingBlob::wrap(body)),
        content_length: Some(range.len() as i64),
        content_range,
        accept_ranges: Some("bytes".into()),
        e_tag: Some(ETag::Strong(record.etag())),
        last_modified: Some(timestamp(record.created_ms)),
        version_id: Some(version_id(&record)),
        content_type: Some(
            input.response_content_type.or(attrs.content_type.clone()).unwrap_or("binary/octet-stream".into()),
        ),
        content_encoding: input.response_content_encoding.or(attrs.content_encoding.clone()),
        cache_control: input.response_cache_control.or(attrs.cache_control.clone()),
        content_disposition: input.response_content_disposition.or(attrs.content_disposition.clone()),
        content_language: input.response_content_language.or(attrs.content_language.clone()),
        expires: input.response_expires.or_else(|| parse_expires(attrs.expires.as_ref())),
        metadata: user_metadata(&attrs),
        ..Default::default()
    };
    let mut response = S3Response::new(output);
    if input.range.is_some() {
        response.status = Some(http::StatusCode::PARTIAL_CONTENT);
    }
    Ok(response)
}

/// HeadObject: a version's attributes, after the conditional-read checks.
pub(super) async fn head_object(
    s3: &CairnS3,
    req: S3Request<dto::HeadObjectInput>,
) -> S3Result<S3Response<dto::HeadObjectOutput>> {
    let input = req.input;
    let record = s3.find(&input.bucket, &input.key, input.version_id.as_deref()).await?;
    check_conditions(
        &record,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    let size = record.content.as_ref().map_or(0, |c| c.size);
    let attrs = record.attrs.clone().unwrap_or_default();
    Ok(S3Response::new(dto::HeadObjectOutput {
        content_length: Some(size as i64),
        accept_ranges: Some("bytes".into()),
        e_tag: Some(ETag::Strong(record.etag())),
        last_modified: Some(timestamp(record.created_ms)),
        version_id: Some(version_id(&record)),
        content_type: Some(attrs.content_type.clone().unwrap_or("binary/octet-stream".into())),
        content_encoding: attrs.content_encoding.clone(),
        cache_control: attrs.cache_control.clone(),
        content_disposition: attrs.content_disposition.clone(),
        content_language: attrs.content_language.clone(),
        expires: parse_expires(attrs.expires.as_ref()),
        metadata: user_metadata(&attrs),
        ..Default::default()
    }))
}

/// DeleteObject: a delete marker, or one version removed for good.
pub(super) async fn delete_object(
    s3: &CairnS3,
    req: S3Request<dto::DeleteObjectInput>,
) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let (marker, version) = s3.delete_one(&input.bucket, &input.key, input.version_id.as_deref()).await?;
    let mut response = S3Response::new(dto::DeleteObjectOutput {
        delete_marker: marker.then_some(true),
        version_id: version,
        ..Default::default()
    });
    response.status = Some(http::StatusCode::NO_CONTENT);
    Ok(response)
}

/// DeleteObjects: up to [`MAX_KEYS`] keys or versions, each answered on its own.
pub(super) async fn delete_objects(
    s3: &CairnS3,
    req: S3Request<dto::DeleteObjectsInput>,
) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
    let input = req.input;
    if input.delete.objects.len() > MAX_KEYS {
        return Err(s3_error!(MalformedXML, "at most {MAX_KEYS} keys per DeleteObjects"));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for object in input.delete.objects {
        let result = match check_key(&object.key) {
            Ok(()) => s3.delete_one(&input.bucket, &object.key, object.version_id.as_deref()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok((marker, version)) => {
                if !quiet {
                    deleted.push(dto::DeletedObject {
                        key: Some(object.key),
                        version_id: object.version_id.clone(),
                        delete_marker: marker.then_some(true),
                        delete_marker_version_id: if marker { version } else { None },
                    })
                }
            }
            Err(e) => errors.push(dto::Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(object.key),
                message: e.message().map(str::to_string),
                version_id: object.version_id,
            }),
        }
    }
    Ok(S3Response::new(dto::DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
}

/// A key must be a valid cairn name (no `..` segment, no control character,
/// bounded length).
pub(super) fn check_key(key: &str) -> S3Result<()> {
    names::validate(key).map_err(name_error)
}

impl CairnS3 {
    /// A key an object or upload is about to get: a valid name within
    /// `--max-name-length`.
    pub(super) fn check_new_key(&self, key: &str) -> S3Result<()> {
        self.door.new_name(key).map_err(name_error)
    }

    /// The version asked for; a missing key in a missing bucket is `NoSuchBucket`.
    pub(super) async fn find(&self, bucket: &str, key: &str, version: Option<&str>) -> S3Result<VersionRecord> {
        check_key(key)?;
        let Some(id) = version else {
            return match self.svc.find(bucket, key, None).await {
                Ok(record) => Ok(record),
                Err(ObjectError::NotFound { .. }) => {
                    self.require_bucket(bucket).await?;
                    Err(s3_error!(NoSuchKey, "no such key: {key}"))
                }
                Err(e) => Err(object_error(e)),
            };
        };
        let wanted = VersionId::parse(id)?;
        let found = self.svc.meta.version(bucket, key, wanted.version).await.map_err(meta_error)?;
        match found.filter(|r| wanted.names(r)) {
            None => {
                self.require_bucket(bucket).await?;
                Err(s3_error!(NoSuchVersion, "{key} has no version {id}"))
            }
            Some(record) if record.is_tombstone() => {
                // A delete marker asked for by version: 405 in S3.
                let mut err = s3_error!(MethodNotAllowed, "version {id} of {key} is a delete marker");
                let mut headers = http::HeaderMap::new();
                headers.insert("x-amz-delete-marker", http::HeaderValue::from_static("true"));
                err.set_headers(headers);
                Err(err)
            }
            Some(record) => Ok(record),
        }
    }

    /// Deletes one key (a delete marker) or one version of it (for good). S3
    /// answers a delete of what does not exist with success. Returns whether a
    /// delete marker is involved and the version id concerned.
    pub(super) async fn delete_one(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<(bool, Option<String>)> {
        match version {
            Some(id) => {
                let wanted = VersionId::parse(id)?;
                let found = self.svc.meta.version(bucket, key, wanted.version).await.map_err(meta_error)?;
                match found.filter(|r| wanted.names(r)) {
                    Some(record) => {
                        self.svc.meta.delete_version(bucket, key, record.version).await.map_err(meta_error)?;
                        Ok((record.is_tombstone(), Some(id.to_string())))
                    }
                    None => {
                        self.require_bucket(bucket).await?;
                        Ok((false, Some(id.to_string())))
                    }
                }
            }
            None => match self.svc.delete(bucket, key).await {
                Ok(record) => Ok((true, Some(version_id(&record)))),
                Err(ObjectError::NotFound { .. }) => {
                    self.require_bucket(bucket).await?;
                    Ok((false, None))
                }
                // Already a delete marker: S3 would add another; cairn keeps the one.
                Err(ObjectError::Deleted { version, .. }) => {
                    let marker = self.svc.meta.version(bucket, key, version).await.map_err(meta_error)?;
                    Ok((true, marker.as_ref().map(version_id)))
                }
                Err(e) => Err(object_error(e)),
            },
        }
    }
}
