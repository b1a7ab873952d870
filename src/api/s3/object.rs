//! The S3 door's object operations: PutObject, GetObject, HeadObject,
//! DeleteObject and DeleteObjects, with the lookup of the version a request
//! names (by key, or by version id) that the copy operations use too.

use s3s::{s3_error, S3Result};

use super::attrs::{version_id, VersionId};
use super::error::{meta_error, name_error, object_error};
use super::CairnS3;
use crate::api::names;
use crate::meta::VersionRecord;
use crate::object::ObjectError;

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
