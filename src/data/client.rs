//! The API server's HTTP client for data servers: the temp + commit protocol and
//! shard reads. One pooled [`reqwest::Client`] per process, so requests reuse
//! keep-alive connections instead of dialling per request. Every step has a
//! deadline ([`DataTimeouts`]); every answer is checked against what the request
//! expects (the shard's length and policy) before anything of it is used. It
//! speaks the protocol of [`super::wire`] only: the same headers and the same typed
//! bodies the data server's handlers build.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use uuid::Uuid;

use super::wire::{
    FindingsPage, PurgeRequest, Purged, ScrubStatus, ShardName, ShardPage, StoreStats, WorkerAction, WorkerReport,
    HASH_HEADER, LENGTH_HEADER, MAX_PAGE, POLICY_HEADER, SHARD_HEADER,
};
use crate::content::{ContentHash, Policy, ShardIndex};
use crate::range::ByteRange;
use crate::report::error_chain;
use crate::secret::ClusterSecret;

/// How long the API server waits on a data server, step by step. Every network
/// step between the tiers has one of these deadlines, so a data server that accepts
/// connections and then stops (SIGSTOP, a hung disk, a dead link without a RST)
/// costs a bounded wait and never hangs a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataTimeouts {
    /// Longest wait for a TCP connection to a data server.
    pub connect: Duration,
    /// Longest wait for progress on an exchange: the answer to a shard read, each
    /// chunk of a shard being read, each block of a shard being written accepted
    /// into the connection, an abort or a quarantine.
    pub io: Duration,
    /// Longest wait for a data server to acknowledge a durable write (the answer to
    /// a streamed shard once its last byte is sent, a commit, a one-shot shard PUT):
    /// these wait for an fsync, which a busy disk can stretch.
    pub sync: Duration,
}

impl Default for DataTimeouts {
    /// 2 s to connect (loopback or a LAN answers in well under a millisecond), 5 s
    /// without progress (a healthy data server answers a read's first block in
    /// ~0.1 ms), 30 s for an fsync (the slowest seen on this VM's shared disk under
    /// 16 writers was ~0.2 s at p99).
    fn default() -> Self {
        DataTimeouts { connect: Duration::from_secs(2), io: Duration::from_secs(5), sync: Duration::from_secs(30) }
    }
}

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
    /// The server made no progress within the deadline of this step.
    #[error("data server {addr} timed out after {after:?} ({step})")]
    TimedOut {
        /// The server.
        addr: String,
        /// What was being waited for.
        step: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The server stored or holds another length than the shard must have.
    #[error("data server {addr} has {actual} bytes of the shard, expected {expected}")]
    WrongLength {
        /// The server.
        addr: String,
        /// The length it reported.
        actual: u64,
        /// The length the shard must have.
        expected: u64,
    },
    /// The server's answer lacks a header the protocol requires, or has it malformed.
    #[error("data server {addr} answered without a valid {header} header")]
    BadAnswer {
        /// The server.
        addr: String,
        /// The header.
        header: &'static str,
    },
}

/// The pooled client for talking to data servers.
///
/// Shard reads go through hyper-util's pooled client directly instead of
/// reqwest's, for one setting reqwest does not expose: the connection's read
/// buffer. hyper's default grows to ~400 KiB per connection, and an API server
/// reading 64 large objects holds 256 shard connections: the buffers and the
/// chunks cut from them, not the data, would fill half a gigabyte. At
/// [`READ_BUF`] the chunks are one shard block each.
#[derive(Clone)]
pub struct DataClient {
    http: reqwest::Client,
    reads: hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>,
    timeouts: DataTimeouts,
    /// Signs every request when the cluster is closed ([`crate::secret`]).
    secret: Option<ClusterSecret>,
}

/// Read buffer of a shard-read connection (one shard block).
pub const READ_BUF: usize = 64 * 1024;

/// The body of a shard being read.
pub type ShardBody = hyper::body::Incoming;

impl Default for DataClient {
    fn default() -> Self {
        Self::new(DataTimeouts::default())
    }
}

impl DataClient {
    /// A client with keep-alive pooling and the given deadlines.
    pub fn new(timeouts: DataTimeouts) -> DataClient {
        // No client-wide read timeout: reqwest's runs from the start of a request
        // to its answer, which for a streamed upload spans the whole upload. Each
        // step gets its own deadline below instead.
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(20))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .expect("static reqwest configuration is valid");
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        let reads = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http1_max_buf_size(READ_BUF)
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_timer(TokioTimer::new())
            .build(connector);
        DataClient { http, reads, timeouts, secret: None }
    }

    /// This client, signing every request with `secret` (a closed cluster's data
    /// servers refuse unsigned ones).
    pub fn with_secret(mut self, secret: Option<ClusterSecret>) -> DataClient {
        self.secret = secret;
        self
    }

    /// Builds `req` and signs it when the cluster has a secret.
    fn build(&self, addr: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Request, DataClientError> {
        let mut req = req
            .build()
            .map_err(|e| DataClientError::Unreachable { addr: addr.to_string(), reason: error_chain(&e) })?;
        if let Some(secret) = &self.secret {
            let url = req.url();
            let target = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            let method = req.method().clone();
            secret.sign_headers(&method, &target, req.headers_mut());
        }
        Ok(req)
    }

    /// The deadlines this client works to.
    pub fn timeouts(&self) -> DataTimeouts {
        self.timeouts
    }

    fn failed(addr: &str, step: &'static str, after: Duration, e: reqwest::Error) -> DataClientError {
        if e.is_timeout() {
            return DataClientError::TimedOut { addr: addr.to_string(), step, after };
        }
        DataClientError::Unreachable { addr: addr.to_string(), reason: error_chain(&e) }
    }

    /// Sends `req` to data server `addr`, waiting at most `after` for the whole
    /// exchange, and turns an error status into an error.
    async fn send(
        &self,
        addr: &str,
        step: &'static str,
        after: Duration,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DataClientError> {
        let req = self.build(addr, req)?;
        let exchange = async {
            let resp = self.http.execute(req).await.map_err(|e| Self::failed(addr, step, after, e))?;
            Self::check(addr, resp).await
        };
        tokio::time::timeout(after, exchange)
            .await
            .unwrap_or_else(|_| Err(DataClientError::TimedOut { addr: addr.to_string(), step, after }))
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
    /// wrote (and fsynced). Has no deadline of its own: the caller bounds both the
    /// feeding of `body` ([`DataTimeouts::io`] per block) and the wait for the
    /// answer once the body has ended ([`DataTimeouts::sync`]).
    pub async fn upload<S>(&self, addr: &str, id: Uuid, policy: Policy, body: S) -> Result<u64, DataClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let req = self
            .http
            .post(format!("http://{addr}/temp/{id}"))
            .header(POLICY_HEADER, policy.to_string())
            .body(reqwest::Body::wrap_stream(body));
        let req = self.build(addr, req)?;
        let resp = self.http.execute(req).await.map_err(|e| Self::failed(addr, "upload", Duration::ZERO, e))?;
        let resp = Self::check(addr, resp).await?;
        length_of(addr, &resp)
    }

    /// Commits temp shard `id` on `addr` as `hash.shard`, `len` bytes long.
    pub async fn commit(
        &self,
        addr: &str,
        id: Uuid,
        hash: &ContentHash,
        shard: ShardIndex,
        policy: Policy,
        len: u64,
    ) -> Result<(), DataClientError> {
        let req = self
            .http
            .put(format!("http://{addr}/temp/{id}"))
            .header(HASH_HEADER, hash.to_hex())
            .header(SHARD_HEADER, shard)
            .header(POLICY_HEADER, policy.to_string())
            .header(LENGTH_HEADER, len);
        self.send(addr, "commit", self.timeouts.sync, req).await.map(drop)
    }

    /// Stores a whole shard `hash.shard` on `addr` in one request (written, fsynced
    /// and committed by the data server before it answers).
    pub async fn put_shard(
        &self,
        addr: &str,
        hash: &ContentHash,
        shard: ShardIndex,
        policy: Policy,
        body: Bytes,
    ) -> Result<(), DataClientError> {
        let expected = body.len() as u64;
        let req = self
            .http
            .put(format!("http://{addr}/objects/{hash}.{shard}"))
            .header(POLICY_HEADER, policy.to_string())
            .body(body);
        let resp = self.send(addr, "shard write", self.timeouts.sync, req).await?;
        match length_of(addr, &resp)? {
            actual if actual == expected => Ok(()),
            actual => Err(DataClientError::WrongLength { addr: addr.to_string(), actual, expected }),
        }
    }

    /// Aborts temp shard `id` on `addr`.
    pub async fn abort(&self, addr: &str, id: Uuid) -> Result<(), DataClientError> {
        self.send(addr, "abort", self.timeouts.io, self.http.delete(format!("http://{addr}/temp/{id}"))).await.map(drop)
    }

    /// Has `addr` move shard `hash.shard` aside (to its `garbage/`), so that it is
    /// neither served nor announced again: for shards that took part in a read whose
    /// content hash did not match.
    pub async fn quarantine(&self, addr: &str, hash: &ContentHash, shard: ShardIndex) -> Result<(), DataClientError> {
        let req = self.http.delete(format!("http://{addr}/objects/{hash}.{shard}"));
        self.send(addr, "quarantine", self.timeouts.io, req).await.map(drop)
    }

    /// Opens shard `hash.shard` on `addr` (the part `range` only, when given),
    /// which must be `shard_len` bytes long under `policy`; the response's body
    /// streams verified bytes. A holder whose shard has another length or policy
    /// (left by another write of the same content) is refused here, before any of
    /// its bytes is used. Waits at most [`DataTimeouts::io`] for the answer; the
    /// caller bounds each chunk of the body the same way.
    pub async fn read(
        &self,
        addr: &str,
        hash: &ContentHash,
        shard: ShardIndex,
        policy: Policy,
        shard_len: u64,
        range: Option<ByteRange>,
    ) -> Result<http::Response<ShardBody>, DataClientError> {
        let unreachable = |reason: String| DataClientError::Unreachable { addr: addr.to_string(), reason };
        let mut req = http::Request::get(format!("http://{addr}/objects/{hash}.{shard}"))
            .header(POLICY_HEADER, policy.to_string())
            .header(LENGTH_HEADER, shard_len);
        if let Some(r) = range {
            req = req.header(http::header::RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        let mut req = req.body(Empty::new()).map_err(|e| unreachable(e.to_string()))?;
        if let Some(secret) = &self.secret {
            let target = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            let method = req.method().clone();
            secret.sign_headers(&method, &target, req.headers_mut());
        }
        let after = self.timeouts.io;
        let exchange = async {
            let resp = self.reads.request(req).await.map_err(|e| unreachable(error_chain(&e)))?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body = String::from_utf8_lossy(&body).chars().take(200).collect();
            Err(DataClientError::Status { addr: addr.to_string(), status, body })
        };
        let resp = tokio::time::timeout(after, exchange)
            .await
            .unwrap_or_else(|_| Err(DataClientError::TimedOut { addr: addr.to_string(), step: "shard read", after }))?;
        match header_u64(resp.headers(), LENGTH_HEADER) {
            Some(actual) if actual == shard_len => Ok(resp),
            Some(actual) => Err(DataClientError::WrongLength { addr: addr.to_string(), actual, expected: shard_len }),
            None => Err(DataClientError::BadAnswer { addr: addr.to_string(), header: LENGTH_HEADER }),
        }
    }
}

/// A header's value as a number.
fn header_u64(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// The shard length a data server's answer announces.
fn length_of(addr: &str, resp: &reqwest::Response) -> Result<u64, DataClientError> {
    header_u64(resp.headers(), LENGTH_HEADER)
        .ok_or_else(|| DataClientError::BadAnswer { addr: addr.to_string(), header: LENGTH_HEADER })
}

/// Longest JSON answer of a maintenance call read from a data server (a page of
/// 1,000 shards is ~150 KB); a longer one is refused, not buffered.
const MAINTENANCE_ANSWER_LIMIT: usize = 4 << 20;

/// Shards sent in one `POST /purge` at most (the data server's own limit).
pub const PURGE_BATCH: usize = MAX_PAGE;

impl DataClient {
    /// Reads a JSON answer of at most [`MAINTENANCE_ANSWER_LIMIT`] bytes.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        step: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, DataClientError> {
        let after = self.timeouts.sync;
        let exchange = async {
            let resp = self.send(addr, step, after, req).await?;
            let mut kept = Vec::new();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                let chunk = chunk.map_err(|e| Self::failed(addr, step, after, e))?;
                if kept.len() + chunk.len() > MAINTENANCE_ANSWER_LIMIT {
                    return Err(DataClientError::BadAnswer { addr: addr.to_string(), header: "body (too long)" });
                }
                kept.extend_from_slice(&chunk);
            }
            serde_json::from_slice(&kept).map_err(|_| DataClientError::BadAnswer {
                addr: addr.to_string(),
                header: "body (not the JSON expected)",
            })
        };
        tokio::time::timeout(after, exchange)
            .await
            .unwrap_or_else(|_| Err(DataClientError::TimedOut { addr: addr.to_string(), step, after }))
    }

    /// Deletes shards `hash.shard` on `addr` for good, freeing their space (the
    /// collector's delete; not a quarantine). Shards the server does not hold count
    /// as deleted. Returns how many it removed.
    pub async fn purge(&self, addr: &str, shards: &[(ContentHash, ShardIndex)]) -> Result<u64, DataClientError> {
        let mut purged = 0;
        for batch in shards.chunks(PURGE_BATCH) {
            let body = PurgeRequest { shards: batch.iter().map(|&(hash, shard)| ShardName { hash, shard }).collect() };
            let req = self.http.post(format!("http://{addr}/purge")).json(&body);
            purged += self.json::<Purged>(addr, "purge", req).await?.purged;
        }
        Ok(purged)
    }

    /// One page of the shards `addr` holds, after `after` (`<hash>.<shard>`).
    pub async fn list_shards(&self, addr: &str, after: Option<&str>) -> Result<ShardPage, DataClientError> {
        // `after` is `<hex>.<digits>` (it came from the same server's `next`, and is
        // checked here), so it needs no percent-encoding.
        let url = match after {
            Some(after) if is_shard_key(after) => format!("http://{addr}/shards?after={after}"),
            Some(_) => {
                return Err(DataClientError::BadAnswer { addr: addr.to_string(), header: "next (not <hash>.<shard>)" })
            }
            None => format!("http://{addr}/shards"),
        };
        self.json(addr, "list shards", self.http.get(url)).await
    }

    /// What `addr`'s scrubber found after `after`.
    pub async fn scrub_findings(&self, addr: &str, after: u64) -> Result<FindingsPage, DataClientError> {
        let req = self.http.get(format!("http://{addr}/scrub/findings?after={after}"));
        self.json(addr, "scrub findings", req).await
    }

    /// `addr`'s scrubber status.
    pub async fn scrub_status(&self, addr: &str) -> Result<ScrubStatus, DataClientError> {
        self.json(addr, "scrub status", self.http.get(format!("http://{addr}/scrub"))).await
    }

    /// Has `addr` start a scrub pass now (unless one runs); returns its status.
    pub async fn scrub_start(&self, addr: &str) -> Result<ScrubStatus, DataClientError> {
        self.json(addr, "scrub start", self.http.post(format!("http://{addr}/scrub"))).await
    }

    /// `addr`'s store figures (`GET /stats`).
    pub async fn stats(&self, addr: &str) -> Result<StoreStats, DataClientError> {
        self.json(addr, "stats", self.http.get(format!("http://{addr}/stats"))).await
    }

    /// The status of every background worker of `addr` (`GET /workers`).
    pub async fn workers(&self, addr: &str) -> Result<Vec<WorkerReport>, DataClientError> {
        self.json(addr, "workers", self.http.get(format!("http://{addr}/workers"))).await
    }

    /// Has `addr` run `action` on its worker `name`; returns the worker's status.
    pub async fn worker_action(
        &self,
        addr: &str,
        name: &str,
        action: WorkerAction,
    ) -> Result<WorkerReport, DataClientError> {
        self.json(addr, "worker action", self.http.post(format!("http://{addr}{}", action.path(name)))).await
    }
}

/// Whether `key` is `<64 hex>.<shard index>`, the form a shard listing pages by.
fn is_shard_key(key: &str) -> bool {
    key.split_once('.')
        .is_some_and(|(hash, shard)| hash.parse::<ContentHash>().is_ok() && shard.parse::<ShardIndex>().is_ok())
}
