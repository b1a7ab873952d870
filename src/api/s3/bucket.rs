//! The S3 door's bucket operations: CreateBucket, DeleteBucket, HeadBucket,
//! GetBucketLocation and the bucket versioning cairn always has on, and the
//! check that a bucket an operation names exists.

use s3s::{s3_error, S3Result};

use super::error::meta_error;
use super::CairnS3;

impl CairnS3 {
    /// `bucket` must exist (for operations that name one and find nothing else).
    pub(super) async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.svc.meta.bucket(bucket).await.map_err(meta_error)? {
            Some(_) => Ok(()),
            None => Err(s3_error!(NoSuchBucket, "no such bucket: {bucket}")),
        }
    }
}
