//! The S3 door's multipart uploads: CreateMultipartUpload, UploadPart,
//! CompleteMultipartUpload (the parts read back in order into one content),
//! AbortMultipartUpload, ListParts and ListMultipartUploads, with the part
//! numbers, sizes and the multipart ETag S3 defines.

use md5::{Digest, Md5};
use s3s::dto::{self, ETag};
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::attrs::{attrs_of, timestamp, version_id};
use super::body::concatenated;
use super::error::{entity_too_large, meta_error, object_error};
use super::list::max_keys;
use super::{CairnS3, COMPLETE_KEEP_ALIVE_ABOVE, MAX_KEYS, MAX_PARTS};
use crate::api::limits;
use crate::clock::now_ms;
use crate::meta::{CompleteOutcome, MultipartRecord};

/// CreateMultipartUpload: a new upload, with the attributes its object will get.
pub(super) async fn create_multipart_upload(
    s3: &CairnS3,
    req: S3Request<dto::CreateMultipartUploadInput>,
) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
    let input = req.input;
    s3.check_new_key(&input.key)?;
    let attrs = attrs_of!(input);
    let upload = MultipartRecord {
        id: crate::object::resumable::new_upload_id(),
        bucket: input.bucket.clone(),
        name: input.key.clone(),
        attrs,
        created_ms: now_ms(),
    };
    s3.svc.meta.create_multipart(&upload).await.map_err(meta_error)?;
    Ok(S3Response::new(dto::CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload.id),
        ..Default::default()
    }))
}

/// UploadPart: the body stored as one part of an open upload.
pub(super) async fn upload_part(
    s3: &CairnS3,
    req: S3Request<dto::UploadPartInput>,
) -> S3Result<S3Response<dto::UploadPartOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
    let limit = s3.part_limit();
    s3.check_length("part", input.content_length, limit)?;
    s3.upload(&input.upload_id, &input.bucket, &input.key).await?;
    let (stored, md5) = s3.store_body("part", input.body, limit, input.content_md5.as_ref()).await?;
    let recorded =
        s3.svc.meta.put_part(&input.upload_id, number, &stored.content, &md5, now_ms()).await.map_err(meta_error)?;
    if !recorded {
        return Err(s3_error!(NoSuchUpload, "upload {} ended while the part arrived", input.upload_id));
    }
    s3.svc.recorded(stored);
    Ok(S3Response::new(dto::UploadPartOutput { e_tag: Some(ETag::Strong(md5)), ..Default::default() }))
}

/// CompleteMultipartUpload: the named parts read back in order into one
/// content, recorded as a new version.
pub(super) async fn complete_multipart_upload(
    s3: &CairnS3,
    req: S3Request<dto::CompleteMultipartUploadInput>,
) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
    let input = req.input;
    let upload = s3.upload(&input.upload_id, &input.bucket, &input.key).await?;
    let asked = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    if asked.is_empty() {
        return Err(s3_error!(MalformedXML, "a completion names at least one part"));
    }
    // Every stored part, by number (at most MAX_PARTS of them).
    let mut stored = std::collections::BTreeMap::new();
    let mut after = 0;
    loop {
        let page = s3.svc.meta.parts(&upload.id, after, MAX_KEYS).await.map_err(meta_error)?;
        let Some(last) = page.last() else { break };
        after = last.part_number;
        stored.extend(page.into_iter().map(|p| (p.part_number, p)));
    }
    let mut contents = Vec::with_capacity(asked.len());
    let mut md5s = Vec::with_capacity(asked.len());
    let mut previous = 0;
    for (i, part) in asked.iter().enumerate() {
        let number = part_number(part.part_number.unwrap_or(0))?;
        if number <= previous {
            return Err(s3_error!(InvalidPartOrder, "parts must be listed in ascending order"));
        }
        previous = number;
        let found = stored.get(&number).ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded"))?;
        if let Some(etag) = &part.e_tag {
            if etag.value() != found.etag {
                return Err(s3_error!(InvalidPart, "part {number}'s ETag is {}, not {}", found.etag, etag.value()));
            }
        }
        if i + 1 < asked.len() && found.size < 5 << 20 {
            return Err(s3_error!(
                EntityTooSmall,
                "part {number} is {} bytes; all but the last need 5 MiB",
                found.size
            ));
        }
        let content = s3
            .svc
            .meta
            .content(&found.hash)
            .await
            .map_err(meta_error)?
            .ok_or_else(|| s3_error!(InternalError, "part {number}'s content {} is not recorded", found.hash))?;
        contents.push(content);
        md5s.push(found.etag.clone());
    }
    let etag = multipart_etag(&md5s).ok_or_else(|| s3_error!(InternalError, "a part's ETag is not hex"))?;
    let total: u64 = contents.iter().map(|c| c.size).sum();
    if !s3.door.fits(total, s3.door.max_object_size) {
        return Err(entity_too_large("completed object", s3.door.max_object_size));
    }
    let (svc, bucket, key) = (s3.svc.clone(), input.bucket, input.key);
    let finish = async move {
        let whole = svc.store(concatenated(svc.clone(), contents), None).await.map_err(object_error)?;
        if whole.content.size != total {
            return Err(s3_error!(InternalError, "the parts read back as {} bytes, not {total}", whole.content.size));
        }
        let mut attrs = upload.attrs.clone();
        attrs.etag = Some(etag.clone());
        let record = match svc.meta.complete_multipart(&upload.id, &whole.content, &attrs).await.map_err(meta_error)? {
            CompleteOutcome::Completed(record) => record,
            CompleteOutcome::Gone => return Err(s3_error!(NoSuchUpload, "upload {} ended meanwhile", upload.id)),
        };
        svc.recorded(whole);
        Ok(dto::CompleteMultipartUploadOutput {
            location: Some(format!("/{bucket}/{key}")),
            bucket: Some(bucket),
            key: Some(key),
            e_tag: Some(ETag::Strong(etag)),
            version_id: Some(version_id(&record)),
            ..Default::default()
        })
    };
    if total < COMPLETE_KEEP_ALIVE_ABOVE {
        return Ok(S3Response::new(finish.await?));
    }
    // Copying the parts takes a while for a large object: answer 200 at once and
    // keep the connection alive with whitespace until the result (or an error)
    // follows in the body, as S3 itself does, so no client times out waiting.
    Ok(S3Response::new(dto::CompleteMultipartUploadOutput { future: Some(Box::pin(finish)), ..Default::default() }))
}

/// AbortMultipartUpload: the upload and its parts dropped (the collector
/// removes their content).
pub(super) async fn abort_multipart_upload(
    s3: &CairnS3,
    req: S3Request<dto::AbortMultipartUploadInput>,
) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
    let input = req.input;
    let upload = s3.upload(&input.upload_id, &input.bucket, &input.key).await?;
    if !s3.svc.meta.abort_multipart(&upload.id).await.map_err(meta_error)? {
        return Err(s3_error!(NoSuchUpload, "no such upload: {}", upload.id));
    }
    let mut response = S3Response::new(dto::AbortMultipartUploadOutput::default());
    response.status = Some(http::StatusCode::NO_CONTENT);
    Ok(response)
}

/// ListParts: an upload's parts in number order.
pub(super) async fn list_parts(
    s3: &CairnS3,
    req: S3Request<dto::ListPartsInput>,
) -> S3Result<S3Response<dto::ListPartsOutput>> {
    let input = req.input;
    let upload = s3.upload(&input.upload_id, &input.bucket, &input.key).await?;
    let max = max_keys(input.max_parts);
    let after = input.part_number_marker.map_or(0, |m| u32::try_from(m).unwrap_or(0));
    let mut parts = s3.svc.meta.parts(&upload.id, after, max + 1).await.map_err(meta_error)?;
    let truncated = parts.len() > max;
    parts.truncate(max);
    Ok(S3Response::new(dto::ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload.id),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        is_truncated: Some(truncated),
        next_part_number_marker: parts.last().filter(|_| truncated).map(|p| p.part_number as i32),
        parts: Some(
            parts
                .into_iter()
                .map(|p| dto::Part {
                    part_number: Some(p.part_number as i32),
                    e_tag: Some(ETag::Strong(p.etag)),
                    size: Some(p.size as i64),
                    last_modified: Some(timestamp(p.created_ms)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

/// ListMultipartUploads: a bucket's open uploads by key, then upload id.
pub(super) async fn list_multipart_uploads(
    s3: &CairnS3,
    req: S3Request<dto::ListMultipartUploadsInput>,
) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
    let input = req.input;
    s3.require_bucket(&input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = max_keys(input.max_uploads);
    let after = match (&input.key_marker, &input.upload_id_marker) {
        (Some(k), Some(u)) => Some((k.clone(), u.clone())),
        // A key marker alone continues after every upload of that key.
        (Some(k), None) => Some((k.clone(), "~".to_string())),
        _ => None,
    };
    let mut uploads = s3
        .svc
        .meta
        .multipart_uploads(&input.bucket, &prefix, after.as_ref().map(|(k, u)| (k.as_str(), u.as_str())), max + 1)
        .await
        .map_err(meta_error)?;
    let truncated = uploads.len() > max;
    uploads.truncate(max);
    let last = uploads.last().filter(|_| truncated).map(|u| (u.name.clone(), u.id.clone()));
    Ok(S3Response::new(dto::ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: last.as_ref().map(|(k, _)| k.clone()),
        next_upload_id_marker: last.map(|(_, u)| u),
        uploads: Some(
            uploads
                .into_iter()
                .map(|u| dto::MultipartUpload {
                    key: Some(u.name),
                    upload_id: Some(u.id),
                    initiated: Some(timestamp(u.created_ms)),
                    ..Default::default()
                })
                .collect(),
        ),
        delimiter: input.delimiter,
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// The MD5 ETag of a multipart object: the MD5 of the parts' binary MD5s, `-N`.
pub fn multipart_etag(part_md5s: &[String]) -> Option<String> {
    let mut md5 = Md5::new();
    for part in part_md5s {
        md5.update(hex::decode(part).ok()?);
    }
    Some(format!("{}-{}", hex::encode(md5.finalize()), part_md5s.len()))
}

pub(super) fn part_number(n: i32) -> S3Result<u32> {
    match u32::try_from(n) {
        Ok(n) if (1..=MAX_PARTS).contains(&n) => Ok(n),
        _ => Err(s3_error!(InvalidArgument, "part number must be between 1 and {MAX_PARTS}, got {n}")),
    }
}

impl CairnS3 {
    /// The largest part: S3's 5 GiB, or the largest object when that is smaller.
    pub(super) fn part_limit(&self) -> u64 {
        self.door.max_object_size.min(limits::MAX_PART_SIZE)
    }

    /// A multipart upload of `bucket/key`, or `NoSuchUpload`.
    pub(super) async fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<MultipartRecord> {
        match self.svc.meta.multipart(id).await.map_err(meta_error)? {
            Some(upload) if upload.bucket == bucket && upload.name == key => Ok(upload),
            _ => Err(s3_error!(NoSuchUpload, "no such upload: {id}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multipart_etag_is_the_md5_of_the_part_md5s() {
        // Two parts whose MD5s are those of "a" and "b".
        let a = hex::encode(Md5::digest(b"a"));
        let b = hex::encode(Md5::digest(b"b"));
        let mut both = Md5::digest(b"a").to_vec();
        both.extend_from_slice(&Md5::digest(b"b"));
        assert_eq!(multipart_etag(&[a, b]), Some(format!("{}-2", hex::encode(Md5::digest(&both)))));
        assert_eq!(multipart_etag(&["zz".into()]), None);
    }
}
