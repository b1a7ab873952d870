//! The requests a run makes, one function each, and what counts as their failure,
//! through either interface: the native API (`/objects/<name>`) or S3 (the URLs of
//! [`super::s3`]).
//!
//! Everything read from the server is bounded: object bodies are counted chunk by
//! chunk and never kept, other answers are read up to a few KiB. Nothing here
//! retries; a failed request is a failure to report.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::CONTENT_LENGTH;
use reqwest::{Client, Response, StatusCode};

use super::payload::Payload;
use super::s3::{ObjectRequest, S3Bucket};
use cairn::api::names::encode_path;
use cairn::report::error_chain;

/// How much of an error answer is kept for the report.
const ERROR_BODY_LIMIT: usize = 300;
/// S3's answer header that says a DeleteObject added a delete marker.
const DELETE_MARKER: &str = "x-amz-delete-marker";
/// How much of a `/healthz` answer is read.
const HEALTH_BODY_LIMIT: usize = 64 * 1024;

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The server answered with an unexpected status.
    #[error("answered {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the answer's body.
        body: String,
    },
    /// A GET's body had another length than the object written.
    #[error("body was {got} bytes, expected {expected}")]
    WrongLength {
        /// The object size.
        expected: u64,
        /// The bytes received.
        got: u64,
    },
    /// Connecting, sending or receiving failed.
    #[error("{}", error_chain(.0))]
    Transport(reqwest::Error),
    /// No complete answer within the per-request timeout.
    #[error("no complete answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// Still running when the run's grace period after `--duration` ran out.
    #[error("still unanswered {} after the run ended", humantime::format_duration(*.0))]
    Unfinished(Duration),
    /// `/healthz` answered something that is not its JSON.
    #[error("/healthz answer is not JSON with live_data_servers")]
    BadHealth,
}

impl From<reqwest::Error> for OpError {
    /// Drops the URL from the message: the report names the object already.
    fn from(e: reqwest::Error) -> OpError {
        OpError::Transport(e.without_url())
    }
}

/// Where the objects live on one API server, and how to reach it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The HTTP client every request goes through.
    pub client: Client,
    /// The endpoint without a trailing slash.
    pub base: String,
    /// The interface the object requests go through.
    pub interface: Interface,
}

/// The interface a run loads.
#[derive(Clone, Debug)]
pub enum Interface {
    /// `/objects/<name>`. An access key, if any, is the client's default
    /// `Authorization: Bearer` header.
    Native,
    /// `/<bucket>/<name>`, presigned when an access key is given.
    S3(Box<S3Bucket>),
}

impl Endpoint {
    /// The native API at `base` (no trailing slash) through `client`.
    pub fn native(client: Client, base: String) -> Endpoint {
        Endpoint { client, base, interface: Interface::Native }
    }

    /// `request` on the object `name`, not yet sent.
    fn object(&self, request: ObjectRequest, name: &str) -> reqwest::RequestBuilder {
        match &self.interface {
            Interface::Native => {
                self.client.request(request.method(), format!("{}/objects/{}", self.base, encode_path(name)))
            }
            Interface::S3(bucket) => self.client.request(request.method(), bucket.object_url(request, name)),
        }
    }

    /// `GET /healthz`: the number of live data servers it reports.
    pub async fn health(&self) -> Result<u64, OpError> {
        let resp = self.client.get(format!("{}/healthz", self.base)).send().await?;
        let resp = expect_status(resp, StatusCode::OK).await?;
        let body = read_capped(resp, HEALTH_BODY_LIMIT).await?;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| OpError::BadHealth)?;
        json.get("live_data_servers").and_then(serde_json::Value::as_u64).ok_or(OpError::BadHealth)
    }

    /// Makes sure S3's bucket exists: HeadBucket, and CreateBucket unless that
    /// answered 200; `true` when this created it. A bucket that exists is used as
    /// it is (a key limited to it may not create buckets), and so is one created
    /// meanwhile by someone else (409 `BucketAlreadyOwnedByYou`). Nothing to do for
    /// the native API, whose objects are the bucket `default`: `false`.
    ///
    /// Any HEAD answer but 200 leads to the CreateBucket, not only a 404: a HEAD
    /// answer has no body, so a refusal (a wrong secret, say) would be a bare 403,
    /// where CreateBucket's says which S3 error it is.
    pub async fn ensure_bucket(&self) -> Result<bool, OpError> {
        let Interface::S3(bucket) = &self.interface else {
            return Ok(false);
        };
        let resp = self.client.head(bucket.head_bucket_url()).send().await?;
        let exists = resp.status() == StatusCode::OK;
        read_capped(resp, ERROR_BODY_LIMIT).await?;
        if exists {
            return Ok(false);
        }
        let resp = self.client.put(bucket.create_bucket_url()).header(CONTENT_LENGTH, 0).send().await?;
        if resp.status() == StatusCode::CONFLICT {
            let body = read_capped(resp, ERROR_BODY_LIMIT).await?;
            let body = String::from_utf8_lossy(&body).trim().to_string();
            if body.contains("<Code>BucketAlreadyOwnedByYou</Code>") {
                return Ok(false);
            }
            return Err(OpError::Status { status: StatusCode::CONFLICT, body });
        }
        let resp = expect_status(resp, StatusCode::OK).await?;
        read_capped(resp, ERROR_BODY_LIMIT).await?;
        Ok(true)
    }

    /// PUT the object `name` with `payload` tagged `tag`; the bytes sent.
    pub async fn put(&self, name: &str, payload: &Payload, tag: u128) -> Result<u64, OpError> {
        let resp = self
            .object(ObjectRequest::Put, name)
            .header(CONTENT_LENGTH, payload.size())
            .body(payload.body(tag))
            .send()
            .await?;
        let resp = expect_status(resp, StatusCode::OK).await?;
        // Read the small answer (JSON; S3's is empty) to the end so the connection
        // goes back to the pool.
        read_capped(resp, ERROR_BODY_LIMIT).await?;
        Ok(payload.size())
    }

    /// GET the object `name`, counting the body without keeping it; the bytes read,
    /// which must be `expected`.
    pub async fn get(&self, name: &str, expected: u64) -> Result<u64, OpError> {
        let resp = self.object(ObjectRequest::Get, name).send().await?;
        let resp = expect_status(resp, StatusCode::OK).await?;
        let mut got = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            got += chunk?.len() as u64;
        }
        if got != expected {
            return Err(OpError::WrongLength { expected, got });
        }
        Ok(got)
    }

    /// GET of a name that must not exist: a 404 (its short body read to the end) is
    /// the success; 0 bytes of object data.
    pub async fn get_missing(&self, name: &str) -> Result<u64, OpError> {
        let resp = self.object(ObjectRequest::Get, name).send().await?;
        let resp = expect_status(resp, StatusCode::NOT_FOUND).await?;
        read_capped(resp, ERROR_BODY_LIMIT).await?;
        Ok(0)
    }

    /// DELETE the object `name`: `true` when deleted, `false` when there was nothing
    /// to delete (its PUT failed or never finished).
    ///
    /// The native API says so with 404. S3's DeleteObject answers 204 either way;
    /// cairn adds a delete marker (`x-amz-delete-marker: true`) only where there was
    /// an object, so a 204 without one is a name that was not there.
    pub async fn delete(&self, name: &str) -> Result<bool, OpError> {
        let resp = self.object(ObjectRequest::Delete, name).send().await?;
        let deleted = match self.interface {
            Interface::Native if resp.status() == StatusCode::NOT_FOUND => {
                read_capped(resp, ERROR_BODY_LIMIT).await?;
                return Ok(false);
            }
            Interface::Native => expect_status(resp, StatusCode::OK).await?,
            Interface::S3(_) => expect_status(resp, StatusCode::NO_CONTENT).await?,
        };
        let marker = deleted.headers().get(DELETE_MARKER).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        read_capped(deleted, ERROR_BODY_LIMIT).await?;
        Ok(match self.interface {
            Interface::Native => true,
            Interface::S3(_) => marker,
        })
    }
}

/// `resp` when its status is `want`, else an [`OpError::Status`] with the start of
/// its body.
async fn expect_status(resp: Response, want: StatusCode) -> Result<Response, OpError> {
    let status = resp.status();
    if status == want {
        return Ok(resp);
    }
    let body = read_capped(resp, ERROR_BODY_LIMIT).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).trim().to_string();
    Err(OpError::Status { status, body })
}

/// Reads `resp`'s body to the end, keeping at most its first `limit` bytes.
pub async fn read_capped(resp: Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut kept = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(kept)
}
