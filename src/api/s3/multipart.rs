//! The S3 door's multipart uploads: CreateMultipartUpload, UploadPart,
//! CompleteMultipartUpload (the parts read back in order into one content),
//! AbortMultipartUpload, ListParts and ListMultipartUploads, with the part
//! numbers, sizes and the multipart ETag S3 defines.

use md5::{Digest, Md5};
use s3s::{s3_error, S3Result};

use super::error::meta_error;
use super::{CairnS3, MAX_PARTS};
use crate::api::limits;
use crate::meta::MultipartRecord;

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
