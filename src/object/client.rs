//! The API server's HTTP client for data servers: the temp + commit protocol and
//! shard reads. One pooled [`reqwest::Client`] per process, so requests reuse
//! keep-alive connections instead of dialling per request.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use uuid::Uuid;

use crate::content::{ContentHash, ShardIndex};
use crate::data::{HASH_HEADER, LENGTH_HEADER, SHARD_HEADER};
use crate::range::ByteRange;

/// A failed exchange with one data server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataClientError {
    /// The server could not be reached or the connection broke.
    #[error("data server {addr} unreachable: {reason}")]
    Unreachable {
        /// The server.
        addr: String,
        /// What the client said.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("data server {addr} answered {status}: {body}")]
    Status {
        /// The server.
        addr: String,
        /// The status.
        status: u16,
        /// Its reason text.
        body: String,
    },
}

/// The pooled client for talking to data servers.
#[derive(Clone)]
pub struct DataClient {
    http: reqwest::Client,
}

impl Default for DataClient {
    fn default() -> Self {
        Self::new()
    }
}

impl DataClient {
    /// A client with keep-alive pooling and bounded connect and idle-read waits.
    pub fn new() -> DataClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // A data server that stops sending for this long is treated as dead.
            .read_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .expect("static reqwest configuration is valid");
        DataClient { http }
    }

    fn unreachable(addr: &str, e: reqwest::Error) -> DataClientError {
        DataClientError::Unreachable { addr: addr.to_string(), reason: error_chain(&e) }
    }

    /// Sends `req` to data server `addr` and turns an error status into an error.
    async fn send(&self, addr: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, DataClientError> {
        let resp = req.send().await.map_err(|e| Self::unreachable(addr, e))?;
        Self::check(addr, resp).await
    }

    async fn check(addr: &str, resp: reqwest::Response) -> Result<reqwest::Response, DataClientError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(DataClientError::Status { addr: addr.to_string(), status, body: body.chars().take(200).collect() })
    }

    /// Streams `body` into temp shard `id` on `addr`; returns the length the server
    /// wrote (and fsynced).
    pub async fn upload<S>(&self, addr: &str, id: Uuid, body: S) -> Result<u64, DataClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let resp = self
            .send(addr, self.http.post(format!("http://{addr}/temp/{id}")).body(reqwest::Body::wrap_stream(body)))
            .await?;
        let len = resp.headers().get(LENGTH_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        len.ok_or_else(|| DataClientError::Status {
            addr: addr.to_string(),
            status: 200,
            body: "upload answer lacks its length".into(),
        })
    }

    /// Commits temp shard `id` on `addr` as `hash.shard`, `len` bytes long.
    pub async fn commit(
        &self,
        addr: &str,
        id: Uuid,
        hash: &ContentHash,
        shard: ShardIndex,
        len: u64,
    ) -> Result<(), DataClientError> {
        let req = self
            .http
            .put(format!("http://{addr}/temp/{id}"))
            .header(HASH_HEADER, hash.to_hex())
            .header(SHARD_HEADER, shard)
            .header(LENGTH_HEADER, len);
        self.send(addr, req).await.map(drop)
    }

    /// Stores a whole shard `hash.shard` on `addr` in one request (written, fsynced
    /// and committed by the data server before it answers).
    pub async fn put_shard(
        &self,
        addr: &str,
        hash: &ContentHash,
        shard: ShardIndex,
        body: Bytes,
    ) -> Result<(), DataClientError> {
        self.send(addr, self.http.put(format!("http://{addr}/objects/{hash}.{shard}")).body(body)).await.map(drop)
    }

    /// Aborts temp shard `id` on `addr`.
    pub async fn abort(&self, addr: &str, id: Uuid) -> Result<(), DataClientError> {
        self.send(addr, self.http.delete(format!("http://{addr}/temp/{id}"))).await.map(drop)
    }

    /// Opens shard `hash.shard` on `addr` (the part `range` only, when given); the
    /// response's body streams verified bytes.
    pub async fn read(
        &self,
        addr: &str,
        hash: &ContentHash,
        shard: ShardIndex,
        range: Option<ByteRange>,
    ) -> Result<reqwest::Response, DataClientError> {
        let mut req = self.http.get(format!("http://{addr}/objects/{hash}.{shard}"));
        if let Some(r) = range {
            req = req.header(reqwest::header::RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        self.send(addr, req).await
    }
}

/// The error and its sources in one line: reqwest's top-level message alone hides
/// the cause ("error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
