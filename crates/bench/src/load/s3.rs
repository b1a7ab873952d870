//! The URLs of `cairn-bench load --api s3`: path-style (`<endpoint>/<bucket>/<key>`), and
//! with an access key presigned with SigV4 by the `rusty-s3` crate, as any S3 client
//! would sign them; [`super::http`] sends them.
//!
//! Presigned URLs (query-string signing) are SigV4 like signed headers are: the
//! server checks the same HMAC over the method, path, query and `host` header, and
//! the same key. The payload is `UNSIGNED-PAYLOAD` (as most S3 clients send over
//! TLS), so a 64 MiB PUT is not hashed twice on the client and the figures are the
//! server's. Every request is signed just before it is sent: signing is part of
//! what a real client pays per request, and it costs microseconds.

use std::time::Duration;

use reqwest::Method;
use reqwest::Url;
use rusty_s3::actions::{CreateBucket, DeleteObject, GetObject, HeadBucket, PutObject};
use rusty_s3::{Bucket, BucketError, Credentials, S3Action, UrlStyle};

/// The region requests are signed for (cairn's; `s3s` accepts any region in a
/// signature's scope).
pub const REGION: &str = "us-east-1";

/// How long a presigned URL stays valid. It is used at once, so this only has to
/// cover the clock difference between the bench and the server (15 minutes is the
/// skew S3 tolerates for signed headers).
pub const SIGNATURE_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What a request does to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectRequest {
    /// GetObject.
    Get,
    /// PutObject.
    Put,
    /// DeleteObject.
    Delete,
}

impl ObjectRequest {
    /// The HTTP method it is sent with.
    pub fn method(self) -> Method {
        match self {
            ObjectRequest::Get => Method::GET,
            ObjectRequest::Put => Method::PUT,
            ObjectRequest::Delete => Method::DELETE,
        }
    }
}

/// One bucket of an S3 endpoint, and the key (if any) its requests are signed with.
#[derive(Clone, Debug)]
pub struct S3Bucket {
    bucket: Bucket,
    credentials: Option<Credentials>,
}

impl S3Bucket {
    /// The bucket `name` at `endpoint` (an `http://` URL); requests are signed with
    /// `key` (access key id and secret) when given, else sent unsigned.
    pub fn new(endpoint: &str, name: &str, key: Option<(&str, &str)>) -> Result<S3Bucket, BucketError> {
        let endpoint = Url::parse(endpoint).map_err(BucketError::ParseError)?;
        let bucket = Bucket::new(endpoint, UrlStyle::Path, name.to_string(), REGION)?;
        let credentials = key.map(|(id, secret)| Credentials::new(id, secret));
        Ok(S3Bucket { bucket, credentials })
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        self.bucket.name()
    }

    /// The URL of a HeadBucket.
    pub fn head_bucket_url(&self) -> Url {
        HeadBucket::new(&self.bucket, self.credentials.as_ref()).sign(SIGNATURE_LIFETIME)
    }

    /// The URL of a CreateBucket (a PUT with an empty body: in `us-east-1` there is
    /// no location constraint to send).
    pub fn create_bucket_url(&self) -> Url {
        match &self.credentials {
            Some(credentials) => CreateBucket::new(&self.bucket, credentials).sign(SIGNATURE_LIFETIME),
            None => self.bucket.base_url().clone(),
        }
    }

    /// The URL of `request` on the object `key` (percent-encoded by `rusty-s3`).
    pub fn object_url(&self, request: ObjectRequest, key: &str) -> Url {
        let credentials = self.credentials.as_ref();
        match request {
            ObjectRequest::Get => GetObject::new(&self.bucket, credentials, key).sign(SIGNATURE_LIFETIME),
            ObjectRequest::Put => PutObject::new(&self.bucket, credentials, key).sign(SIGNATURE_LIFETIME),
            ObjectRequest::Delete => DeleteObject::new(&self.bucket, credentials, key).sign(SIGNATURE_LIFETIME),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_are_path_style_presigned_for_the_key() {
        let b = S3Bucket::new("http://127.0.0.1:9000", "bench", Some(("AKID", "secret"))).unwrap();
        let url = b.object_url(ObjectRequest::Put, "bench-1/0000000042");
        assert_eq!(url.path(), "/bench/bench-1/0000000042");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| query.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str());
        assert_eq!(get("X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
        assert!(get("X-Amz-Credential").is_some_and(|c| c.starts_with("AKID/") && c.contains("/us-east-1/s3/")));
        assert_eq!(get("X-Amz-Expires"), Some("900"));
        assert_eq!(get("X-Amz-SignedHeaders"), Some("host"));
        assert!(get("X-Amz-Signature").is_some_and(|s| s.len() == 64));
        assert_eq!(b.create_bucket_url().path(), "/bench/");
    }

    #[test]
    fn unsigned_urls_carry_no_query() {
        let b = S3Bucket::new("http://127.0.0.1:9000/", "bench", None).unwrap();
        let url = b.object_url(ObjectRequest::Get, "a b/c");
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/bench/a%20b/c");
        assert_eq!(b.create_bucket_url().as_str(), "http://127.0.0.1:9000/bench/");
    }
}
