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

use s3s::dto;
use s3s::{S3Request, S3Response, S3Result, S3};

use super::keys::KeyRing;
use super::limits::Door;
use crate::object::ObjectService;
use auth::{KeyAccess, KeyAuth};

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
        list::list_buckets(self, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await
    }

    async fn head_bucket(&self, req: S3Request<dto::HeadBucketInput>) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        bucket::get_bucket_versioning(self, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<dto::PutBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::PutBucketVersioningOutput>> {
        bucket::put_bucket_versioning(self, req).await
    }

    async fn put_object(&self, req: S3Request<dto::PutObjectInput>) -> S3Result<S3Response<dto::PutObjectOutput>> {
        object::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<dto::GetObjectInput>) -> S3Result<S3Response<dto::GetObjectOutput>> {
        object::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<dto::HeadObjectInput>) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        object::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        object::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        object::delete_objects(self, req).await
    }

    async fn copy_object(&self, req: S3Request<dto::CopyObjectInput>) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        copy::copy_object(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        list::list_objects(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<dto::UploadPartInput>) -> S3Result<S3Response<dto::UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        copy::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(&self, req: S3Request<dto::ListPartsInput>) -> S3Result<S3Response<dto::ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }
}
