//! `cairn-bench load`: a load generator for a cairn API server, in the spirit of MinIO's
//! `warp`. It talks HTTP to the one endpoint it is given and to nothing else (no
//! proxy, no redirects, no retries), and uses no other part of cairn than the object
//! name rules of [`cairn::api::names`], the bucket names [`cairn::api::s3`] reserves,
//! the bearer header of [`cairn::api::keys::Credentials`] and the sizes of
//! [`cairn::size`]; nothing in the servers depends on it.
//!
//! # The two interfaces
//!
//! `--api native` (the default) loads the native API: `PUT`, `GET` and `DELETE
//! /objects/<name>`. `--api s3` loads the S3 front door on the same port,
//! path-style: PutObject, GetObject and DeleteObject of `/<bucket>/<name>` in
//! `--bucket` (default `bench`), which the run creates if HeadBucket does not find
//! it (CreateBucket). The bucket stays after the run: with versioning always on,
//! its delete markers keep it from being empty.
//!
//! With `--access-key` and `--secret-key` (needed once the cluster has keys) S3
//! requests are signed with AWS Signature Version 4 as presigned URLs (query-string
//! signing, `UNSIGNED-PAYLOAD`), made by the `rusty-s3` crate (`s3.rs`): a
//! well-kept, I/O-free signer rather than a hand-written SigV4; it signs query
//! strings only, which `s3s` checks exactly as it checks signed headers. The native
//! ones carry `Authorization: Bearer <key>:<secret>`. Without a key, requests go
//! unsigned, as an open cluster (no key at all) serves them. The same names, sizes,
//! bodies, checks and report serve both interfaces, so their figures compare.
//!
//! One run ([`run`]) goes through four phases and returns a [`BenchReport`]; it
//! prints nothing, so that a caller can render one report or tabulate many.
//!
//! 1. **Check**: `GET /healthz` must answer; its live data server count is reported.
//!    With `--api s3`, the bucket is then created if missing.
//! 2. **Prepare** (`get`, `mixed`): PUT [`BenchArgs::objects_to_prepare`] objects of
//!    the given size, `concurrency` at a time. Any failure here ends the run with
//!    [`BenchError::PrepareFailed`] (after the cleanup), since GETs of missing
//!    objects would measure nothing.
//! 3. **Load**: `concurrency` workers issue requests back to back until `duration`
//!    has passed. Then no new request starts; one in flight may finish within
//!    [`GRACE`], after which it is abandoned and counted as an error.
//!    - `put`: every request writes a new name.
//!    - `get`: every request reads a prepared object picked at random, and checks
//!      the status (200) and the byte count.
//!    - `mixed`: every request is a GET as above with probability
//!      [`MIXED_GET_PERCENT`] % (70 %), otherwise a PUT of a new name.
//!    - `get-missing`: every request reads a name no run writes
//!      ([`missing_name`]); the expected answer is 404, counted as a success (the
//!      cost of a miss: name lookup and error path, no data server involved).
//!    - `fill`: like `put`, but with no deadline: the workers write new names until
//!      exactly `--count` objects are acknowledged, then stop (a failed PUT gives
//!      its turn back, so another name is tried in its place). It is how a store
//!      is filled to a given number of objects before measuring its disk use,
//!      memory or restart time. `--duration` does not apply; Ctrl-C ends it, and so
//!      do [`MAX_FILL_ERRORS`] failed PUTs (a dead server is not retried forever).
//! 4. **Cleanup** (unless `keep`): DELETE every name the run tried to write. A
//!    DELETE adds a tombstone (an S3 delete marker); reclaiming the shards is the
//!    store's business. A name that was never written is counted as not found: a
//!    404 from the native API, a 204 without `x-amz-delete-marker` from S3.
//!
//! Objects are named `<prefix><10-digit number>`, numbered from 0 in the order the
//! run claims them; the prefix defaults to `bench-<8 random hex digits>/`. Every
//! object has `--size` bytes, or with `--size-max` a size drawn uniformly from
//! `[size, size-max]` by its number (so a GET knows the length to expect). The
//! bodies are random bytes (so compression cannot flatter the figures) with a
//! unique 16-byte head per object (so content addressing cannot deduplicate them),
//! streamed from one shared block of at most 1 MiB: memory stays bounded for any
//! object size. GET bodies are counted as they arrive and never kept.
//!
//! A request fails when it gets another status than expected, a GET body of the
//! wrong length, a transport error, or no complete answer within `timeout`. Failed
//! requests are counted (and their first messages kept), never retried, and are not
//! in the latency or throughput figures. After one, its worker pauses (10 ms,
//! doubling up to 1 s while failures continue) so that a dead server is not hammered.
//!
//! # The suite
//!
//! The standard matrix of such runs, the machine's ceilings and the Markdown report
//! (`BENCH.md`) are the rest of this crate ([`crate::suite`], `cairn-bench suite`),
//! which calls [`run_until`] cell by cell; nothing here knows of it. Neither is in
//! the server binary: this crate depends on cairn's library, never the reverse.
//!
//! # The JSON report
//!
//! `cairn-bench load --json` prints [`BenchReport`] as one JSON object:
//!
//! | field | meaning |
//! |---|---|
//! | `endpoint`, `op`, `object_size` (bytes), `concurrency`, `duration_s`, `prefix` | the parameters (`duration_s` is 0 for `fill`, which has no deadline) |
//! | `api`, `bucket` | `native` (`bucket` is `null`) or `s3` and its bucket |
//! | `object_size_max` | the largest object size (bytes): `object_size` unless `--size-max` was given |
//! | `count` | `--count`: the objects a `fill` has acknowledged before it stops; `null` for other ops |
//! | `get_percent` | share of requests meant to be GETs: 100 (`get`, `get-missing`), 0 (`put`, `fill`), 70 (`mixed`) |
//! | `elapsed_s` | how long the load phase took, until the last request ended; rates are per this |
//! | `prepared_objects` | objects written before the load phase for GETs to read |
//! | `live_data_servers` | as `/healthz` reported before the run |
//! | `interrupted` | the load phase was cut short by Ctrl-C or SIGTERM |
//! | `total` | an op report over all requests of the load phase |
//! | `ops` | an op report per request kind that ran: `GET` first, then `PUT` |
//! | `cleanup` | `null` with `--keep`, else `attempted`, `deleted`, `not_found`, `errors`, `skipped`, `first_errors`, `elapsed_s` |
//!
//! An op report has `op` (`GET`, `PUT` or `total`), `ops` (successful requests),
//! `errors` (failed ones), `bytes` (object bytes moved by the successful ones),
//! `ops_per_s`, `mb_per_s` (decimal megabytes, 10^6 bytes, per second),
//! `latency_us` (`null` without successes, else `min_us`, `mean_us`, `p50_us`,
//! `p90_us`, `p99_us`, `max_us`, in microseconds, from sending the request to the
//! last byte of the answer) and `first_errors` (at most five messages).

mod http;
mod latency;
mod payload;
mod report;
mod s3;
mod schedule;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use cairn::api::keys::Credentials;
use cairn::api::names::{self, BadName};
use cairn::api::s3::RESERVED_BUCKETS;
use cairn::size::ByteSize;
use schedule::{Limit, Quota, Schedule, Shared, Tally};

pub use http::{read_capped, Endpoint, Interface, OpError};
pub use latency::{micros, percentile, LatencySummary};
pub use payload::{Chunks, Payload, BLOCK, TAG_LEN};
pub use report::{BenchReport, CleanupReport, OpReport};
pub use s3::{ObjectRequest, S3Bucket, REGION, SIGNATURE_LIFETIME};

/// Share of GETs in `--op mixed`, in percent; the other requests are PUTs.
pub const MIXED_GET_PERCENT: u32 = 70;
/// How long requests in flight at the end of the load phase may still take.
pub const GRACE: Duration = Duration::from_secs(30);
/// By default a run prepares this many objects per worker…
pub const OBJECTS_PER_WORKER: u64 = 4;
/// …but not more than this many…
pub const MAX_DEFAULT_OBJECTS: u64 = 1000;
/// …nor more bytes than this (4 GiB); at least one object in any case.
pub const MAX_DEFAULT_PREPARED_BYTES: u64 = 4 << 30;
/// The cleanup gives up after this many failed deletions, so that a dead server
/// does not keep it busy for hours; the names left are reported as skipped.
pub const MAX_CLEANUP_ERRORS: u64 = 100;
/// A `fill` stops after this many failed PUTs, acknowledged objects or not.
pub const MAX_FILL_ERRORS: u64 = 100;
/// Longest wait for a TCP connection (or the request timeout, if shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The bucket `--api s3` uses without `--bucket`.
pub const DEFAULT_BUCKET: &str = "bench";

/// The interface a run loads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// cairn's own API: `/objects/<name>`.
    #[default]
    Native,
    /// The S3 API, path-style: `/<bucket>/<name>`.
    S3,
}

/// The requests a run makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Every request writes a new object.
    Put,
    /// Every request reads a prepared object.
    Get,
    /// 70 % GETs of prepared objects, 30 % PUTs of new ones.
    Mixed,
    /// Every request reads a name never written: 404 is the expected answer.
    #[serde(rename = "get-missing")]
    GetMissing,
    /// Every request writes a new object, until `count` are acknowledged.
    Fill,
}

impl Op {
    /// Percentage of requests that are GETs.
    pub fn get_percent(self) -> u32 {
        match self {
            Op::Put | Op::Fill => 0,
            Op::Get | Op::GetMissing => 100,
            Op::Mixed => MIXED_GET_PERCENT,
        }
    }

    /// Whether the run reads objects it prepared before the load phase.
    pub fn reads_prepared(self) -> bool {
        matches!(self, Op::Get | Op::Mixed)
    }

    /// Whether the run writes new objects during the load phase.
    pub fn writes(self) -> bool {
        matches!(self, Op::Put | Op::Mixed | Op::Fill)
    }
}

/// The parameters of one run: the `cairn-bench load` command line.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct BenchArgs {
    /// API server to load, e.g. http://127.0.0.1:12345 (plain HTTP).
    #[arg(long, env = "CAIRN_ENDPOINT")]
    pub endpoint: String,
    /// Requests to make: put (new objects), get (prepared objects), mixed (70% GET, 30% PUT), get-missing (names never written; 404 expected), fill (new objects until --count are acknowledged).
    #[arg(long, value_enum, env = "CAIRN_BENCH_OP", default_value = "mixed")]
    pub op: Op,
    /// Object size: 4KiB, 64MiB, 1GiB (binary units), 4KB, 1MB (decimal units) or bytes.
    #[arg(long, env = "CAIRN_BENCH_SIZE", default_value = "1MiB")]
    pub size: ByteSize,
    /// Largest object size: with it, each object's size is drawn uniformly from [--size, --size-max].
    #[arg(long, env = "CAIRN_BENCH_SIZE_MAX")]
    pub size_max: Option<ByteSize>,
    /// Objects a fill writes (acknowledged ones); only with --op fill, which needs it.
    #[arg(long, env = "CAIRN_BENCH_COUNT")]
    pub count: Option<u64>,
    /// Requests in flight at once (one worker each).
    #[arg(long, env = "CAIRN_BENCH_CONCURRENCY", default_value = "16", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// How long to issue requests, e.g. 10s, 2m (not for fill, which runs until --count).
    #[arg(long, env = "CAIRN_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Objects to prepare for get and mixed [default: concurrency × 4, at most 1000 and 4 GiB in all].
    #[arg(long, env = "CAIRN_BENCH_OBJECTS")]
    pub objects: Option<u64>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long, env = "CAIRN_BENCH_JSON")]
    pub json: bool,
    /// Leave the objects written in place instead of deleting them afterwards.
    #[arg(long, env = "CAIRN_BENCH_KEEP")]
    pub keep: bool,
    /// Prefix of every object name [default: bench-RANDOM/]. Names PREFIX followed by 10 digits under it are overwritten and deleted.
    #[arg(long, env = "CAIRN_BENCH_PREFIX")]
    pub prefix: Option<String>,
    /// Longest wait for one request, answer body included.
    #[arg(long, env = "CAIRN_BENCH_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Interface to load: native (/objects/NAME) or s3 (path-style /BUCKET/NAME on the same port; SigV4-signed with --access-key).
    #[arg(long, value_enum, env = "CAIRN_BENCH_API", default_value = "native")]
    pub api: Api,
    /// Bucket of --api s3, created if missing [default: bench]; only with --api s3.
    #[arg(long, env = "CAIRN_BENCH_BUCKET")]
    pub bucket: Option<String>,
    /// Access key id, needed once the cluster has keys: S3 requests are signed with it (SigV4, presigned URLs), native ones carry it as a bearer token.
    #[arg(long, env = "CAIRN_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// Secret key of --access-key.
    #[arg(long, env = "CAIRN_SECRET_KEY", requires = "access_key", hide_env_values = true)]
    pub secret_key: Option<String>,
}

impl BenchArgs {
    /// The command line's defaults, loading `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> BenchArgs {
        BenchArgs {
            endpoint: endpoint.into(),
            op: Op::Mixed,
            size: ByteSize(1 << 20),
            size_max: None,
            count: None,
            concurrency: 16,
            duration: Duration::from_secs(10),
            objects: None,
            json: false,
            keep: false,
            prefix: None,
            timeout: Duration::from_secs(60),
            api: Api::Native,
            bucket: None,
            access_key: None,
            secret_key: None,
        }
    }

    /// The bucket of an S3 run (`--bucket` or [`DEFAULT_BUCKET`]); `None` for the
    /// native API.
    pub fn s3_bucket(&self) -> Option<&str> {
        match self.api {
            Api::Native => None,
            Api::S3 => Some(self.bucket.as_deref().unwrap_or(DEFAULT_BUCKET)),
        }
    }

    /// The access key and its secret, when both are given.
    pub fn key(&self) -> Option<(&str, &str)> {
        self.access_key.as_deref().zip(self.secret_key.as_deref())
    }

    /// How many objects the prepare phase writes: 0 for `put` and `get-missing`,
    /// else `objects` or the default (see [`OBJECTS_PER_WORKER`]).
    pub fn objects_to_prepare(&self) -> u64 {
        if !self.op.reads_prepared() {
            return 0;
        }
        if let Some(n) = self.objects {
            return n;
        }
        let by_count = (u64::from(self.concurrency) * OBJECTS_PER_WORKER).min(MAX_DEFAULT_OBJECTS);
        let by_bytes = MAX_DEFAULT_PREPARED_BYTES.checked_div(self.size_range().1).unwrap_or(u64::MAX);
        by_count.min(by_bytes).max(1)
    }

    /// The smallest and largest object size: `(size, size_max)`, or `size` twice
    /// without `--size-max`.
    pub fn size_range(&self) -> (u64, u64) {
        (self.size.bytes(), self.size_max.map_or(self.size.bytes(), ByteSize::bytes))
    }

    /// The arguments' own consistency, checked before any request: `Ok` or the
    /// first contradiction.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.concurrency == 0 {
            return Err(BenchError::ZeroConcurrency);
        }
        if self.op != Op::Fill && self.duration.is_zero() {
            return Err(BenchError::ZeroDuration);
        }
        match (self.op, self.count) {
            (Op::Fill, None | Some(0)) => return Err(BenchError::NoCount),
            (Op::Fill, Some(_)) | (_, None) => {}
            (op, Some(_)) => return Err(BenchError::CountWithoutFill { op }),
        }
        let (min, max) = self.size_range();
        if max < min {
            return Err(BenchError::BadSizeRange { min: ByteSize(min), max: ByteSize(max) });
        }
        if self.op.reads_prepared() && self.objects_to_prepare() == 0 {
            return Err(BenchError::NoObjects);
        }
        if self.access_key.is_some() != self.secret_key.is_some() {
            return Err(BenchError::HalfAKey);
        }
        match (self.api, self.bucket.as_deref()) {
            (Api::Native, Some(bucket)) => return Err(BenchError::BucketWithoutS3 { bucket: bucket.to_string() }),
            (Api::S3, Some(bucket)) if bucket.is_empty() || bucket.contains('/') => {
                return Err(BenchError::BadBucket { bucket: bucket.to_string(), reason: "not a bucket name" })
            }
            // A path-style request to these is the native API's.
            (Api::S3, Some(bucket)) if RESERVED_BUCKETS.contains(&bucket) => {
                return Err(BenchError::BadBucket { bucket: bucket.to_string(), reason: "reserved for the native API" })
            }
            (Api::Native, None) | (Api::S3, _) => {}
        }
        Ok(())
    }
}

/// Why a run could not be made or did not go cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The endpoint is not a plain `http://` URL of a host.
    #[error("endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `concurrency` is 0.
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
    /// `duration` is 0.
    #[error("duration must be more than 0")]
    ZeroDuration,
    /// `get` or `mixed` with `objects` 0: nothing to read.
    #[error("--op get and --op mixed need at least one object to read")]
    NoObjects,
    /// `fill` without a `count` (or with 0).
    #[error("--op fill needs --count of at least 1")]
    NoCount,
    /// A `count` for another op than `fill`, which would ignore it.
    #[error("--count is for --op fill only, not --op {op:?}")]
    CountWithoutFill {
        /// The op given.
        op: Op,
    },
    /// `size_max` below `size`.
    #[error("--size-max {max} is below --size {min}")]
    BadSizeRange {
        /// `--size`.
        min: ByteSize,
        /// `--size-max`.
        max: ByteSize,
    },
    /// `--access-key` without `--secret-key` or the other way round.
    #[error("--access-key and --secret-key go together")]
    HalfAKey,
    /// The key holds a character no HTTP header can carry (the native API's bearer token).
    #[error("the access key cannot be sent: {reason}")]
    BadKey {
        /// Why.
        reason: String,
    },
    /// A `bucket` for the native API, whose objects are the bucket `default`.
    #[error("--bucket {bucket:?} is for --api s3 only")]
    BucketWithoutS3 {
        /// The bucket given.
        bucket: String,
    },
    /// A bucket name the run cannot use.
    #[error("bucket {bucket:?}: {reason}")]
    BadBucket {
        /// The bucket given.
        bucket: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The bucket is neither there (HeadBucket) nor could be created (CreateBucket).
    #[error("bucket {bucket} is not usable: {source}")]
    BucketUnavailable {
        /// The bucket.
        bucket: String,
        /// How it failed.
        source: OpError,
    },
    /// The prefix makes names the API server would refuse.
    #[error("prefix {prefix:?} makes object names the server refuses: {source}")]
    BadPrefix {
        /// The prefix.
        prefix: String,
        /// Why the names are refused.
        source: BadName,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// `GET /healthz` failed.
    #[error("{endpoint} is not answering /healthz: {source}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// How it failed.
        source: OpError,
    },
    /// Some objects could not be prepared.
    #[error("{failed} of {total} objects could not be prepared; first error: {first}")]
    PrepareFailed {
        /// Failed PUTs.
        failed: u64,
        /// Objects to prepare.
        total: u64,
        /// The first failure's message.
        first: String,
    },
    /// Stopped (Ctrl-C / SIGTERM) before the load phase began.
    #[error("interrupted while preparing objects")]
    Interrupted,
    /// The run completed but requests failed; see its report.
    #[error("{errors} requests failed (see the report)")]
    RequestsFailed {
        /// Failed requests, cleanup included.
        errors: u64,
    },
}

/// The name of object number `seq` under `prefix`.
pub fn object_name(prefix: &str, seq: u64) -> String {
    format!("{prefix}{seq:010}")
}

/// A name under `prefix` that no run writes (`--op get-missing` reads these): object
/// names are digits only after the prefix, this one is not.
pub fn missing_name(prefix: &str, n: u64) -> String {
    format!("{prefix}missing-{n:016x}")
}

/// Makes one run as `args` say and reports what it measured. Prints nothing.
pub async fn run(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    run_until(args, CancellationToken::new()).await
}

/// [`run`], with a load phase that also ends when `stop` is cancelled; the cleanup
/// still runs, and the report says `interrupted`.
pub async fn run_until(args: &BenchArgs, stop: CancellationToken) -> Result<BenchReport, BenchError> {
    let base = check_endpoint(&args.endpoint)?;
    args.validate()?;
    let prepared = args.objects_to_prepare();
    let (size_min, size_max) = args.size_range();
    let prefix = args.prefix.clone().unwrap_or_else(|| format!("bench-{:08x}/", rand::random::<u32>()));
    names::validate(&object_name(&prefix, u64::MAX))
        .map_err(|source| BenchError::BadPrefix { prefix: prefix.clone(), source })?;

    // The native API's bearer token rides in every request; S3 requests are signed
    // one by one and must not carry an Authorization header beside their signature.
    let headers = match args.api {
        Api::Native => Credentials { access_key: args.access_key.clone(), secret_key: args.secret_key.clone() }
            .headers()
            .map_err(|reason| BenchError::BadKey { reason })?,
        Api::S3 => reqwest::header::HeaderMap::new(),
    };
    let interface = match args.s3_bucket() {
        None => Interface::Native,
        Some(bucket) => {
            let s3 = S3Bucket::new(&base, bucket, args.key()).map_err(|_| BenchError::BadBucket {
                bucket: bucket.to_string(),
                reason: "makes no URL with the endpoint",
            })?;
            Interface::S3(Box::new(s3))
        }
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency as usize)
        .connect_timeout(CONNECT_TIMEOUT.min(args.timeout))
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .build()
        .map_err(BenchError::Client)?;
    let endpoint = Endpoint { client, base, interface };
    let live_data_servers = Limit::new(args.timeout, None)
        .apply(endpoint.health())
        .await
        .map_err(|source| BenchError::Unreachable { endpoint: endpoint.base.clone(), source })?;
    if let Some(bucket) = args.s3_bucket() {
        let created = Limit::new(args.timeout, None)
            .apply(endpoint.ensure_bucket())
            .await
            .map_err(|source| BenchError::BucketUnavailable { bucket: bucket.to_string(), source })?;
        tracing::info!(bucket, created, "bench: S3 bucket ready");
    }

    let shared = Arc::new(Shared {
        endpoint,
        prefix: prefix.clone(),
        payload: Payload::new(size_max, rand::random()),
        size_min,
        nonce: rand::random(),
        next_seq: AtomicU64::new(0),
        timeout: args.timeout,
    });

    if prepared > 0 {
        tracing::info!(objects = prepared, size = %args.size, %prefix, "bench: preparing objects");
        if let Err(e) = prepare(&shared, prepared, args.concurrency, &stop).await {
            if !args.keep {
                let cleanup = cleanup(&shared, args.concurrency).await;
                if cleanup.errors > 0 || cleanup.skipped > 0 {
                    tracing::warn!(?cleanup, "bench: cleanup after a failed preparation was incomplete");
                }
            }
            return Err(e);
        }
    }

    match args.count {
        Some(count) => tracing::info!(op = ?args.op, concurrency = args.concurrency, count, "bench: load phase"),
        None => {
            tracing::info!(op = ?args.op, concurrency = args.concurrency, duration = ?args.duration, "bench: load phase")
        }
    }
    let schedule = Schedule {
        op: args.op,
        concurrency: args.concurrency,
        prepared,
        duration: args.duration,
        grace: GRACE,
        stop: stop.clone(),
        quota: match (args.op, args.count) {
            (Op::Fill, Some(count)) => Some(Arc::new(Quota::new(count, MAX_FILL_ERRORS))),
            _ => None,
        },
    };
    let (mut tallies, elapsed) = schedule::run_load(&shared, &schedule).await;
    let interrupted = stop.is_cancelled();

    let mut ops = Vec::new();
    if args.op.get_percent() > 0 {
        ops.push(OpReport::from_tally("GET", &mut tallies.get, elapsed));
    }
    if args.op.writes() {
        ops.push(OpReport::from_tally("PUT", &mut tallies.put, elapsed));
    }
    let mut all = tallies.get;
    all.merge(tallies.put);
    let total = OpReport::from_tally("total", &mut all, elapsed);

    let cleanup = if args.keep {
        None
    } else {
        tracing::info!(names = shared.attempted(), "bench: deleting what the run wrote");
        Some(cleanup(&shared, args.concurrency).await)
    };

    Ok(BenchReport {
        endpoint: shared.endpoint.base.clone(),
        api: args.api,
        bucket: args.s3_bucket().map(str::to_string),
        op: args.op,
        get_percent: args.op.get_percent(),
        object_size: size_min,
        object_size_max: size_max,
        count: args.count.filter(|_| args.op == Op::Fill),
        concurrency: args.concurrency,
        duration_s: if args.op == Op::Fill { 0.0 } else { args.duration.as_secs_f64() },
        elapsed_s: elapsed.as_secs_f64(),
        prefix,
        prepared_objects: prepared,
        live_data_servers,
        interrupted,
        total,
        ops,
        cleanup,
    })
}

/// The endpoint without a trailing slash, if it is a plain `http://` URL of a host.
fn check_endpoint(endpoint: &str) -> Result<String, BenchError> {
    let bad = |reason| BenchError::BadEndpoint { endpoint: endpoint.to_string(), reason };
    let url = reqwest::Url::parse(endpoint).map_err(|_| bad("not a URL"))?;
    if url.scheme() != "http" {
        return Err(bad("only http:// is supported"));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Writes objects `0..count`, `concurrency` at a time.
async fn prepare(
    shared: &Arc<Shared>,
    count: u64,
    concurrency: u32,
    stop: &CancellationToken,
) -> Result<(), BenchError> {
    // Claimed up front, so the cleanup covers every one even if this is cut short.
    shared.next_seq.store(count, std::sync::atomic::Ordering::Relaxed);
    let mut puts = futures_util::stream::iter(0..count)
        .map(|seq| {
            let shared = Arc::clone(shared);
            let stop = stop.clone();
            async move {
                if stop.is_cancelled() {
                    return None;
                }
                Some((seq, shared.put_seq(seq, Limit::new(shared.timeout, None)).await))
            }
        })
        .buffer_unordered(concurrency as usize);
    let mut failures = Tally::default();
    while let Some(done) = puts.next().await {
        if let Some((seq, Err(e))) = done {
            failures.failure(|| format!("PUT {}: {e}", object_name(&shared.prefix, seq)));
        }
    }
    if failures.errors > 0 {
        return Err(BenchError::PrepareFailed {
            failed: failures.errors,
            total: count,
            first: failures.first_errors.into_iter().next().unwrap_or_default(),
        });
    }
    if stop.is_cancelled() {
        return Err(BenchError::Interrupted);
    }
    Ok(())
}

/// Deletes every name the run tried to write, `concurrency` at a time.
async fn cleanup(shared: &Arc<Shared>, concurrency: u32) -> CleanupReport {
    let started = Instant::now();
    let attempted = shared.attempted();
    let mut deletes = futures_util::stream::iter(0..attempted)
        .map(|seq| {
            let shared = Arc::clone(shared);
            async move {
                let name = object_name(&shared.prefix, seq);
                let deleted = Limit::new(shared.timeout, None).apply(shared.endpoint.delete(&name)).await;
                (name, deleted)
            }
        })
        .buffer_unordered(concurrency as usize);
    let (mut deleted, mut not_found) = (0, 0);
    let mut failures = Tally::default();
    while let Some((name, result)) = deletes.next().await {
        match result {
            Ok(true) => deleted += 1,
            Ok(false) => not_found += 1,
            Err(e) => {
                failures.failure(|| format!("DELETE {name}: {e}"));
                if failures.errors >= MAX_CLEANUP_ERRORS {
                    break;
                }
            }
        }
    }
    CleanupReport {
        attempted,
        deleted,
        not_found,
        errors: failures.errors,
        skipped: attempted - deleted - not_found - failures.errors,
        first_errors: failures.first_errors,
        elapsed_s: started.elapsed().as_secs_f64(),
    }
}
