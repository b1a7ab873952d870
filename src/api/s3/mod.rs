//! The S3 front door of an API server: the S3 REST API (path-style, and
//! virtual-host style under `--s3-domain`) over the same object paths as the
//! native API, whose objects are the bucket `default`.
//!
//! Routing, XML, SigV4 (headers, presigned URLs, `aws-chunked` bodies with their
//! chunk signatures) and the S3 error codes are the `s3s` crate's; this module
//! implements its [`S3`] trait with cairn's semantics underneath: every PUT is a
//! new version (versioning is always on), content is stored once per SHA-256
//! (a CopyObject is a metadata write), erasure-coded and repaired as any other.
//! Keys are [`super::keys`]'s; what each may do is [`super::policy`]'s one rule.
//!
//! S3's entity tag is the MD5 of the body (computed as the body streams by) or,
//! for a multipart upload, the MD5 of its parts' MD5s followed by `-<parts>`; it is
//! kept with the version ([`ObjectAttrs`](crate::meta::ObjectAttrs)), beside the
//! SHA-256 that stays the content's address. An object stored through the native
//! API has no MD5: its S3 ETag is its SHA-256 as hex. A version id is cairn's
//! version number.
//!
//! A multipart upload's parts are content like any other (durable, redundant,
//! counted as referenced by the collector while the upload lives); completing it
//! reads the chosen parts back in order into one content (a second write of the
//! bytes, once; the parts are then collected), because a version is one content
//! in this design. Uploads not completed within `--multipart-expiry` are removed
//! by the uploads worker.
//!
//! This file holds the service's construction, its limits and the `impl S3`
//! that hands each operation to the room it belongs to:
//!
//! | room | what it holds |
//! |---|---|
//! | `scope.rs` | the SigV4 credential scope and presigned lifetime, checked before `s3s` ([`scope`]) |
//! | `auth.rs` | the key lookup for SigV4 and the authorisation of every request |
//! | `error.rs` | S3 errors for cairn's failures, refusals and limits |
//! | `attrs.rs` | version ids, timestamps, conditions and the attributes an object keeps |
//! | `body.rs` | request bodies on their way to the write path, with their MD5 |
//! | `bucket.rs` | CreateBucket, DeleteBucket, HeadBucket, location and versioning |
//! | `object.rs` | PutObject, GetObject, HeadObject, DeleteObject(s) |
//! | `copy.rs` | CopyObject and UploadPartCopy: the copy source and its range |
//! | `list.rs` | ListBuckets, ListObjects(V2), ListObjectVersions |
//! | `multipart.rs` | the multipart upload: create, parts, complete, abort, listings |

mod attrs;
mod auth;
mod body;
mod bucket;
mod copy;
mod error;
mod list;
mod multipart;
mod object;
pub mod scope;

pub use multipart::multipart_etag;

use std::sync::Arc;

use s3s::dto::{self, ETag, StreamingBlob};
use s3s::{s3_error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use super::keys::KeyRing;
use super::limits::Door;
use crate::clock::now_ms;
use crate::meta::{BucketDeleteOutcome, CompleteOutcome, MultipartRecord, DEFAULT_BUCKET};
use crate::object::ObjectService;
use crate::range::ByteRange;
use attrs::{
    attrs_of, check_conditions, parse_expires, timestamp, user_metadata, version_id, write_condition, VersionId,
};
use auth::{caller_of, KeyAccess, KeyAuth};
use body::concatenated;
use copy::copy_range;
use error::{entity_too_large, meta_error, object_error};
use list::{common_prefix, common_prefixes, decode_token, encode_token, max_keys, object_entry, past, resume_after};
use multipart::part_number;
use object::check_key;

/// Bucket names the native API's paths take, refused by CreateBucket so that a
/// path-style S3 request can never be mistaken for a native one.
pub const RESERVED_BUCKETS: &[&str] = &["objects", "versions", "locate", "uploads", "admin", "healthz", "metrics"];

/// Most keys, versions, parts or uploads one listing answers.
pub const MAX_KEYS: usize = 1000;

/// A completion of at least this many bytes is answered 200 at once, its result
/// following in the body after whitespace keep-alives (S3's own way), since
/// copying its parts takes long enough for a client to time out.
pub const COMPLETE_KEEP_ALIVE_ABOVE: u64 = 64 << 20;

/// Most parts one multipart upload may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

/// The region cairn answers GetBucketLocation with and expects in signatures
/// (s3s accepts any region in a signature's scope).
pub const REGION: &str = "us-east-1";

/// The S3 interface over one API server's object paths.
#[derive(Clone)]
pub struct CairnS3 {
    svc: ObjectService,
    keys: KeyRing,
    door: Door,
}

impl CairnS3 {
    /// The S3 operations over `svc`, authorised by `keys`, within `door`'s limits.
    pub fn new(svc: ObjectService, keys: KeyRing, door: Door) -> CairnS3 {
        CairnS3 { svc, keys, door }
    }
}

/// `s3s`'s service over cairn: the S3 operations, the key lookup for SigV4, the
/// per-request authorisation, and virtual-host addressing under `domain`.
pub fn service(s3: CairnS3, domain: Option<&str>) -> Result<s3s::service::S3Service, String> {
    let mut builder = s3s::service::S3ServiceBuilder::new(s3.clone());
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(limits()))));
    builder.set_auth(KeyAuth(s3.keys.clone()));
    builder.set_access(KeyAccess(s3.keys.clone()));
    if let Some(domain) = domain {
        let host = s3s::host::SingleDomain::new(domain).map_err(|e| format!("--s3-domain {domain:?}: {e}"))?;
        builder.set_host(host);
    }
    Ok(builder.build())
}

/// Most bytes of an XML request body s3s reads into memory (a completion of
/// 10,000 parts or a DeleteObjects of 1,000 keys is about 1 MiB).
pub const XML_MAX_BODY: usize = 4 << 20;

/// s3s's limits on what it holds in memory before cairn sees a request. POST
/// object (browser form uploads, not supported) would be read whole into memory
/// while it is routed, before any signature is checked, so its file may be 0
/// bytes and its form fields small: an unauthenticated form cannot buffer more
/// than a few KiB.
fn limits() -> s3s::config::S3Config {
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = XML_MAX_BODY;
    config.post_object_max_file_size = 0;
    config.form_max_field_size = 16 << 10;
    config.form_max_fields_size = 64 << 10;
    config.form_max_parts = 64;
    config
}

#[async_trait::async_trait]
impl S3 for CairnS3 {
    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let caller = caller_of(&req);
        let buckets = self.svc.meta.buckets().await.map_err(meta_error)?;
        let prefix = req.input.prefix.unwrap_or_default();
        let buckets = buckets
            .into_iter()
            .filter(|b| caller.sees(&b.name) && b.name.starts_with(&prefix))
            .map(|b| dto::Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(REGION.to_string()),
            })
            .collect();
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(dto::Owner { display_name: Some("cairn".into()), id: Some("cairn".into()) }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        let bucket = req.input.bucket;
        if RESERVED_BUCKETS.contains(&bucket.as_str()) {
            return Err(s3_error!(InvalidBucketName, "{bucket} is reserved for cairn's native API"));
        }
        if !self.svc.meta.create_bucket(&bucket, now_ms()).await.map_err(meta_error)? {
            return Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {bucket} exists"));
        }
        tracing::info!(%bucket, "bucket created");
        Ok(S3Response::new(dto::CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        if bucket == DEFAULT_BUCKET {
            return Err(s3_error!(AccessDenied, "the bucket {DEFAULT_BUCKET} is the native API's and stays"));
        }
        match self.svc.meta.delete_bucket(&bucket).await.map_err(meta_error)? {
            BucketDeleteOutcome::Deleted { aborted_uploads } => {
                if aborted_uploads > 0 {
                    tracing::info!(%bucket, aborted_uploads, "bucket deleted with its open uploads");
                }
                Ok(S3Response::new(dto::DeleteBucketOutput {}))
            }
            BucketDeleteOutcome::NoSuchBucket => Err(s3_error!(NoSuchBucket, "no such bucket: {bucket}")),
            BucketDeleteOutcome::NotEmpty => {
                Err(s3_error!(BucketNotEmpty, "bucket {bucket} holds versions (delete markers count)"))
            }
        }
    }

    async fn head_bucket(&self, req: S3Request<dto::HeadBucketInput>) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(dto::HeadBucketOutput { bucket_region: Some(REGION.into()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        // us-east-1 is the empty constraint.
        Ok(S3Response::new(dto::GetBucketLocationOutput { location_constraint: None }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(dto::GetBucketVersioningOutput {
            status: Some(dto::BucketVersioningStatus::from_static(dto::BucketVersioningStatus::ENABLED)),
            ..Default::default()
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<dto::PutBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::PutBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        match req.input.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
            Some(dto::BucketVersioningStatus::ENABLED) | None => Ok(S3Response::new(dto::PutBucketVersioningOutput {})),
            Some(other) => Err(s3_error!(
                NotImplemented,
                "cairn always keeps versions (status Enabled); {other} is not supported: prune with --keep-versions"
            )),
        }
    }

    async fn put_object(&self, req: S3Request<dto::PutObjectInput>) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let input = req.input;
        self.check_new_key(&input.key)?;
        let limit = self.door.max_object_size;
        self.check_length("object", input.content_length, limit)?;
        // Checked again in the version's transaction; here so that a PUT into a
        // bucket that does not exist stores no byte.
        self.require_bucket(&input.bucket).await?;
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        if let Some(condition) = &condition {
            // Checked once before the body is stored, so a failing write costs no
            // bytes, and again in the version's transaction, so it is atomic.
            let latest = self.svc.meta.latest(&input.bucket, &input.key).await.map_err(meta_error)?;
            if !condition.holds(latest.as_ref()) {
                return Err(s3_error!(PreconditionFailed, "the PUT's precondition does not hold"));
            }
        }
        let (stored, md5) = self.store_body("object", input.body, limit, input.content_md5.as_ref()).await?;
        let mut attrs = attrs_of!(input);
        attrs.etag = Some(md5.clone());
        let record = self
            .svc
            .meta
            .put_object(&input.bucket, &input.key, &stored.content, &attrs, condition.as_ref())
            .await
            .map_err(meta_error)?;
        self.svc.recorded(stored);
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(ETag::Strong(md5)),
            version_id: Some(version_id(&record)),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<dto::GetObjectInput>) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let input = req.input;
        let record = self.find(&input.bucket, &input.key, input.version_id.as_deref()).await?;
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
        let body = self.svc.read(content, range).await.map_err(object_error)?;
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

    async fn head_object(&self, req: S3Request<dto::HeadObjectInput>) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let input = req.input;
        let record = self.find(&input.bucket, &input.key, input.version_id.as_deref()).await?;
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

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        let (marker, version) = self.delete_one(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        let mut response = S3Response::new(dto::DeleteObjectOutput {
            delete_marker: marker.then_some(true),
            version_id: version,
            ..Default::default()
        });
        response.status = Some(http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn delete_objects(
        &self,
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
                Ok(()) => self.delete_one(&input.bucket, &object.key, object.version_id.as_deref()).await,
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
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<dto::CopyObjectInput>) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let caller = caller_of(&req);
        let input = req.input;
        self.check_new_key(&input.key)?;
        let source = self.copy_source(&input.copy_source, &caller).await?;
        check_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| if *e.code() == S3ErrorCode::NotModified { s3_error!(PreconditionFailed) } else { e })?;
        let content = source.content.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
        // An object stored before the limit was lowered is not copied past it.
        if !self.door.fits(content.size, self.door.max_object_size) {
            return Err(entity_too_large("object", self.door.max_object_size));
        }
        let etag = source.etag();
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == "REPLACE");
        let mut attrs = if replace { attrs_of!(input) } else { source.attrs.clone().unwrap_or_default() };
        attrs.etag = Some(etag.clone());
        // Same bytes, same content: a copy is one metadata write, whatever its size.
        let record =
            self.svc.meta.put_object(&input.bucket, &input.key, &content, &attrs, None).await.map_err(meta_error)?;
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

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let after = resume_after(input.marker.clone(), input.delimiter.as_deref());
        let listed = self.list_page(&input.bucket, &prefix, input.delimiter.as_deref(), after, max).await?;
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            marker: input.marker,
            max_keys: Some(max as i32),
            delimiter: input.delimiter.clone(),
            is_truncated: Some(listed.next.is_some()),
            next_marker: if input.delimiter.is_some() { listed.next.clone() } else { None },
            contents: Some(listed.objects.iter().map(object_entry).collect()),
            common_prefixes: common_prefixes(listed.prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let token = match &input.continuation_token {
            Some(t) => Some(decode_token(t)?),
            None => None,
        };
        let after = token.or_else(|| input.start_after.clone());
        let after = resume_after(after, input.delimiter.as_deref());
        let listed = self.list_page(&input.bucket, &prefix, input.delimiter.as_deref(), after, max).await?;
        let key_count = (listed.objects.len() + listed.prefixes.len()) as i32;
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(listed.next.is_some()),
            next_continuation_token: listed.next.as_deref().map(encode_token),
            delimiter: input.delimiter,
            contents: Some(listed.objects.iter().map(object_entry).collect()),
            common_prefixes: common_prefixes(listed.prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        // A key marker alone continues after every version of that key.
        let mut cursor: Option<(String, u64)> = match (&input.key_marker, &input.version_id_marker) {
            (Some(k), Some(v)) if !k.is_empty() && !v.is_empty() => Some((k.clone(), VersionId::parse(v)?.version)),
            (Some(k), _) if !k.is_empty() => Some((k.clone(), 0)),
            _ => None,
        };
        if let (Some((key, _)), Some(d)) = (&cursor, delimiter) {
            if key.ends_with(d) {
                cursor = Some((past(key), u64::MAX));
            }
        }
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut latest_of: Option<String> = None;
        let mut count = 0usize;
        let mut truncated = false;
        let mut next: Option<(String, Option<String>)> = None;
        'pages: loop {
            let after = cursor.as_ref().map(|(k, v)| (k.as_str(), *v));
            let page =
                self.svc.meta.list_versions(&input.bucket, &prefix, after, MAX_KEYS).await.map_err(meta_error)?;
            if page.is_empty() {
                break;
            }
            let full = page.len() == MAX_KEYS;
            for record in page {
                if count == max {
                    truncated = true;
                    break 'pages;
                }
                if let Some(cp) = common_prefix(&record.name, &prefix, delimiter) {
                    if prefixes.last().map(String::as_str) != Some(cp) {
                        prefixes.push(cp.to_string());
                        count += 1;
                        next = Some((cp.to_string(), None));
                    }
                    cursor = Some((past(cp), u64::MAX));
                    continue 'pages;
                }
                // Versions come newest first within a key: the first seen is the latest,
                // unless the page began in the middle of the key's versions.
                let is_latest = latest_of.as_deref() != Some(record.name.as_str())
                    && !cursor.as_ref().is_some_and(|(k, v)| *k == record.name && *v != 0);
                latest_of = Some(record.name.clone());
                cursor = Some((record.name.clone(), record.version));
                next = Some((record.name.clone(), Some(version_id(&record))));
                count += 1;
                let owner = dto::Owner { display_name: Some("cairn".into()), id: Some("cairn".into()) };
                if record.is_tombstone() {
                    markers.push(dto::DeleteMarkerEntry {
                        key: Some(record.name.clone()),
                        version_id: Some(version_id(&record)),
                        is_latest: Some(is_latest),
                        last_modified: Some(timestamp(record.created_ms)),
                        owner: Some(owner),
                    });
                } else {
                    versions.push(dto::ObjectVersion {
                        key: Some(record.name.clone()),
                        version_id: Some(version_id(&record)),
                        is_latest: Some(is_latest),
                        last_modified: Some(timestamp(record.created_ms)),
                        e_tag: Some(ETag::Strong(record.etag())),
                        size: Some(record.content.as_ref().map_or(0, |c| c.size) as i64),
                        storage_class: Some(dto::ObjectVersionStorageClass::from_static(
                            dto::ObjectVersionStorageClass::STANDARD,
                        )),
                        owner: Some(owner),
                        ..Default::default()
                    });
                }
            }
            if !full {
                break;
            }
        }
        if truncated {
            // Whether anything follows at all was shown by the record that did not fit.
        } else {
            next = None;
        }
        Ok(S3Response::new(dto::ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            version_id_marker: input.version_id_marker,
            max_keys: Some(max as i32),
            delimiter: input.delimiter,
            is_truncated: Some(truncated),
            next_key_marker: next.as_ref().map(|(k, _)| k.clone()),
            next_version_id_marker: next.as_ref().and_then(|(_, v)| v.clone()),
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: common_prefixes(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let input = req.input;
        self.check_new_key(&input.key)?;
        let attrs = attrs_of!(input);
        let upload = MultipartRecord {
            id: crate::object::resumable::new_upload_id(),
            bucket: input.bucket.clone(),
            name: input.key.clone(),
            attrs,
            created_ms: now_ms(),
        };
        self.svc.meta.create_multipart(&upload).await.map_err(meta_error)?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<dto::UploadPartInput>) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let input = req.input;
        let number = part_number(input.part_number)?;
        let limit = self.part_limit();
        self.check_length("part", input.content_length, limit)?;
        self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let (stored, md5) = self.store_body("part", input.body, limit, input.content_md5.as_ref()).await?;
        let recorded = self
            .svc
            .meta
            .put_part(&input.upload_id, number, &stored.content, &md5, now_ms())
            .await
            .map_err(meta_error)?;
        if !recorded {
            return Err(s3_error!(NoSuchUpload, "upload {} ended while the part arrived", input.upload_id));
        }
        self.svc.recorded(stored);
        Ok(S3Response::new(dto::UploadPartOutput { e_tag: Some(ETag::Strong(md5)), ..Default::default() }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        let caller = caller_of(&req);
        let input = req.input;
        let number = part_number(input.part_number)?;
        self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let source = self.copy_source(&input.copy_source, &caller).await?;
        check_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| if *e.code() == S3ErrorCode::NotModified { s3_error!(PreconditionFailed) } else { e })?;
        let content = source.content.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
        let range = copy_range(input.copy_source_range.as_ref(), content.size)?;
        let limit = self.part_limit();
        if !self.door.fits(range.len(), limit) {
            return Err(entity_too_large("part", limit));
        }
        let body = self.svc.read(&content, range).await.map_err(object_error)?;
        let (stored, md5) = self.store_body("part", Some(StreamingBlob::wrap(body)), limit, None).await?;
        let recorded = self
            .svc
            .meta
            .put_part(&input.upload_id, number, &stored.content, &md5, now_ms())
            .await
            .map_err(meta_error)?;
        if !recorded {
            return Err(s3_error!(NoSuchUpload, "upload {} ended while the part was copied", input.upload_id));
        }
        self.svc.recorded(stored);
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

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let asked = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(MalformedXML, "a completion names at least one part"));
        }
        // Every stored part, by number (at most MAX_PARTS of them).
        let mut stored = std::collections::BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self.svc.meta.parts(&upload.id, after, MAX_KEYS).await.map_err(meta_error)?;
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
            let content =
                self.svc.meta.content(&found.hash).await.map_err(meta_error)?.ok_or_else(|| {
                    s3_error!(InternalError, "part {number}'s content {} is not recorded", found.hash)
                })?;
            contents.push(content);
            md5s.push(found.etag.clone());
        }
        let etag = multipart_etag(&md5s).ok_or_else(|| s3_error!(InternalError, "a part's ETag is not hex"))?;
        let total: u64 = contents.iter().map(|c| c.size).sum();
        if !self.door.fits(total, self.door.max_object_size) {
            return Err(entity_too_large("completed object", self.door.max_object_size));
        }
        let (svc, bucket, key) = (self.svc.clone(), input.bucket, input.key);
        let finish = async move {
            let whole = svc.store(concatenated(svc.clone(), contents), None).await.map_err(object_error)?;
            if whole.content.size != total {
                return Err(s3_error!(
                    InternalError,
                    "the parts read back as {} bytes, not {total}",
                    whole.content.size
                ));
            }
            let mut attrs = upload.attrs.clone();
            attrs.etag = Some(etag.clone());
            let record =
                match svc.meta.complete_multipart(&upload.id, &whole.content, &attrs).await.map_err(meta_error)? {
                    CompleteOutcome::Completed(record) => record,
                    CompleteOutcome::Gone => {
                        return Err(s3_error!(NoSuchUpload, "upload {} ended meanwhile", upload.id))
                    }
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

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        if !self.svc.meta.abort_multipart(&upload.id).await.map_err(meta_error)? {
            return Err(s3_error!(NoSuchUpload, "no such upload: {}", upload.id));
        }
        let mut response = S3Response::new(dto::AbortMultipartUploadOutput::default());
        response.status = Some(http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn list_parts(&self, req: S3Request<dto::ListPartsInput>) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let max = max_keys(input.max_parts);
        let after = input.part_number_marker.map_or(0, |m| u32::try_from(m).unwrap_or(0));
        let mut parts = self.svc.meta.parts(&upload.id, after, max + 1).await.map_err(meta_error)?;
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

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_uploads);
        let after = match (&input.key_marker, &input.upload_id_marker) {
            (Some(k), Some(u)) => Some((k.clone(), u.clone())),
            // A key marker alone continues after every upload of that key.
            (Some(k), None) => Some((k.clone(), "~".to_string())),
            _ => None,
        };
        let mut uploads = self
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
}
