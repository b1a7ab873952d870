//! The S3 door's bucket operations: CreateBucket, DeleteBucket, HeadBucket,
//! GetBucketLocation and the bucket versioning cairn always has on, and the
//! check that a bucket an operation names exists.

use s3s::dto;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::error::meta_error;
use super::{CairnS3, REGION, RESERVED_BUCKETS};
use crate::clock::now_ms;
use crate::meta::{BucketDeleteOutcome, DEFAULT_BUCKET};

/// CreateBucket: refused for a name the native API's paths take, or one that exists.
pub(super) async fn create_bucket(
    s3: &CairnS3,
    req: S3Request<dto::CreateBucketInput>,
) -> S3Result<S3Response<dto::CreateBucketOutput>> {
    let bucket = req.input.bucket;
    if RESERVED_BUCKETS.contains(&bucket.as_str()) {
        return Err(s3_error!(InvalidBucketName, "{bucket} is reserved for cairn's native API"));
    }
    if !s3.svc.meta.create_bucket(&bucket, now_ms()).await.map_err(meta_error)? {
        return Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {bucket} exists"));
    }
    tracing::info!(%bucket, "bucket created");
    Ok(S3Response::new(dto::CreateBucketOutput { location: Some(format!("/{bucket}")) }))
}

/// DeleteBucket: only an empty bucket (delete markers count), never the native API's.
pub(super) async fn delete_bucket(
    s3: &CairnS3,
    req: S3Request<dto::DeleteBucketInput>,
) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
    let bucket = req.input.bucket;
    if bucket == DEFAULT_BUCKET {
        return Err(s3_error!(AccessDenied, "the bucket {DEFAULT_BUCKET} is the native API's and stays"));
    }
    match s3.svc.meta.delete_bucket(&bucket).await.map_err(meta_error)? {
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

/// HeadBucket: whether the bucket exists, and its region.
pub(super) async fn head_bucket(
    s3: &CairnS3,
    req: S3Request<dto::HeadBucketInput>,
) -> S3Result<S3Response<dto::HeadBucketOutput>> {
    s3.require_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(dto::HeadBucketOutput { bucket_region: Some(REGION.into()), ..Default::default() }))
}

/// GetBucketLocation: the empty constraint, which is us-east-1.
pub(super) async fn get_bucket_location(
    s3: &CairnS3,
    req: S3Request<dto::GetBucketLocationInput>,
) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
    s3.require_bucket(&req.input.bucket).await?;
    // us-east-1 is the empty constraint.
    Ok(S3Response::new(dto::GetBucketLocationOutput { location_constraint: None }))
}

/// GetBucketVersioning: always `Enabled`.
pub(super) async fn get_bucket_versioning(
    s3: &CairnS3,
    req: S3Request<dto::GetBucketVersioningInput>,
) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
    s3.require_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(dto::GetBucketVersioningOutput {
        status: Some(dto::BucketVersioningStatus::from_static(dto::BucketVersioningStatus::ENABLED)),
        ..Default::default()
    }))
}

/// PutBucketVersioning: `Enabled` is accepted, anything else refused.
pub(super) async fn put_bucket_versioning(
    s3: &CairnS3,
    req: S3Request<dto::PutBucketVersioningInput>,
) -> S3Result<S3Response<dto::PutBucketVersioningOutput>> {
    s3.require_bucket(&req.input.bucket).await?;
    match req.input.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
        Some(dto::BucketVersioningStatus::ENABLED) | None => Ok(S3Response::new(dto::PutBucketVersioningOutput {})),
        Some(other) => Err(s3_error!(
            NotImplemented,
            "cairn always keeps versions (status Enabled); {other} is not supported: prune with --keep-versions"
        )),
    }
}

impl CairnS3 {
    /// `bucket` must exist (for operations that name one and find nothing else).
    pub(super) async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.svc.meta.bucket(bucket).await.map_err(meta_error)? {
            Some(_) => Ok(()),
            None => Err(s3_error!(NoSuchBucket, "no such bucket: {bucket}")),
        }
    }
}
