//! The machine's ceilings: how fast the pieces a cairn request is made of go on
//! their own, so that the suite can say how close cairn comes to them.
//!
//! - **fsync write**: a file written sequentially in 1 MiB blocks, then fsynced, the
//!   time including the fsync (what `dd bs=1M conv=fsync` measures). Every durable
//!   PUT pays for this on every shard it writes.
//! - **small fsync**: create a file, write 4 KiB, fsync, one after another, and the
//!   same from [`PARALLEL`] threads at once: the floor under a small PUT (each of its
//!   replicas is such a write) at one client and at many.
//! - **warm read**: the same file read back sequentially right after it was written,
//!   so from the page cache, as the suite's GETs of objects it just wrote are.
//! - **SHA-256**: one core hashing in memory; every PUT hashes its whole body.
//! - **loopback HTTP**: an in-process axum server streaming a body from a repeated
//!   buffer to a reqwest client over 127.0.0.1, and the client uploading one to it:
//!   the most HTTP alone moves, with no disk and no hashing. And small GETs (4 KiB
//!   answers) back to back from one client and from [`PARALLEL`] at once: the most
//!   requests per second HTTP alone serves.
//!
//! File work runs on the blocking pool; random bytes keep a compressing file system
//! from flattering the figures. Files are removed afterwards.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::load::{micros, LatencySummary, Payload};

/// Block size of the sequential file measurements.
pub const FILE_BLOCK: usize = 1 << 20;
/// Bytes written per file in the small-fsync measurement.
pub const SMALL_WRITE: usize = 4096;
/// Longest a loopback transfer may take (a whole GiB at under 2 MB/s is a broken
/// machine, not a measurement).
const HTTP_TIMEOUT: Duration = Duration::from_secs(600);

/// Threads or clients of the parallel small-operation measurements, as many as
/// the suite's busiest small-object cells have clients.
pub const PARALLEL: u32 = 16;

/// How much each measurement moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CeilingSizes {
    /// Bytes of the file written, fsynced and read back.
    pub file: u64,
    /// Bytes hashed.
    pub sha256: u64,
    /// Bytes sent each way over loopback HTTP.
    pub http: u64,
    /// How long each small-operation measurement lasts (at least one operation
    /// per thread or client).
    pub small_time: Duration,
}

impl CeilingSizes {
    /// The suite's sizes: 1 GiB files and HTTP transfers (256 MiB when `quick`),
    /// 256 MiB hashed, 1 s of small operations (0.5 s when `quick`).
    pub fn standard(quick: bool) -> CeilingSizes {
        let big = if quick { 256 << 20 } else { 1 << 30 };
        CeilingSizes {
            file: big,
            sha256: 256 << 20,
            http: big,
            small_time: if quick { Duration::from_millis(500) } else { Duration::from_secs(1) },
        }
    }
}

/// Bytes moved in some time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
}

impl Rate {
    /// `bytes` moved since `started`.
    pub fn since(bytes: u64, started: Instant) -> Rate {
        Rate { bytes, seconds: started.elapsed().as_secs_f64() }
    }

    /// Decimal megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }
}

/// Small operations (fsynced writes, HTTP requests) back to back from one or more
/// threads or clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpsRate {
    /// Threads or clients at once.
    pub parallel: u32,
    /// Operations done.
    pub count: u64,
    /// Seconds all of them took.
    pub seconds: f64,
    /// Latency of one.
    pub latency_us: Option<LatencySummary>,
}

impl OpsRate {
    /// Operations per second.
    pub fn per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.count as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn from_latencies(parallel: u32, mut latencies: Vec<u32>, started: Instant) -> OpsRate {
        let seconds = started.elapsed().as_secs_f64();
        OpsRate {
            parallel,
            count: latencies.len() as u64,
            seconds,
            latency_us: LatencySummary::from_samples(&mut latencies),
        }
    }
}

/// Every ceiling the suite measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Ceilings {
    /// Sequential 1 MiB writes then fsync, fsync included.
    pub fsync_write: Rate,
    /// Create + 4 KiB write + fsync, one file at a time.
    pub small_fsync: OpsRate,
    /// The same from [`PARALLEL`] threads at once.
    pub small_fsync_parallel: OpsRate,
    /// Reading the fsynced file back at once (page cache).
    pub warm_read: Rate,
    /// SHA-256 on one core.
    pub sha256: Rate,
    /// HTTP GET of a streamed body over loopback (server to client).
    pub http_download: Rate,
    /// HTTP PUT of a streamed body over loopback (client to server).
    pub http_upload: Rate,
    /// HTTP GETs of 4 KiB over loopback, one client.
    pub http_small: OpsRate,
    /// The same from [`PARALLEL`] clients at once.
    pub http_small_parallel: OpsRate,
}

/// Why a ceiling could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeilingError {
    /// A file could not be written, synced, read or removed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A blocking measurement's thread died.
    #[error("measurement thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
    /// The loopback server could not listen.
    #[error("loopback HTTP server cannot listen: {0}")]
    Listen(std::io::Error),
    /// A loopback request failed.
    #[error("loopback HTTP {direction}: {source}")]
    Http {
        /// `download` or `upload`.
        direction: &'static str,
        /// What failed.
        source: reqwest::Error,
    },
    /// A loopback transfer moved another number of bytes than sent.
    #[error("loopback HTTP {direction} moved {got} bytes, expected {expected}")]
    HttpLength {
        /// `download` or `upload`.
        direction: &'static str,
        /// Bytes sent.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
}

/// Measures every ceiling, with files in `dir` (which must exist; the files are
/// removed afterwards).
pub async fn measure(dir: &Path, sizes: &CeilingSizes) -> Result<Ceilings, CeilingError> {
    let small_time = sizes.small_time;
    let small_fsync = {
        let dir = dir.join("small-fsync");
        tokio::task::spawn_blocking(move || small_fsyncs(&dir, 1, small_time)).await??
    };
    let small_fsync_parallel = {
        let dir = dir.join("small-fsync");
        tokio::task::spawn_blocking(move || small_fsyncs(&dir, PARALLEL, small_time)).await??
    };
    let file = dir.join("ceiling.bin");
    let (fsync_write, warm_read) = {
        let (file, size) = (file.clone(), sizes.file);
        tokio::task::spawn_blocking(move || {
            let written = fsync_write(&file, size);
            let read = written.as_ref().ok().map(|_| sequential_read(&file));
            let removed = std::fs::remove_file(&file).map_err(|source| CeilingError::File { path: file, source });
            let (written, read) = (written?, read.transpose()?);
            removed?;
            Ok::<_, CeilingError>((written, read.unwrap_or(Rate { bytes: 0, seconds: 0.0 })))
        })
        .await??
    };
    let sha256 = {
        let size = sizes.sha256;
        tokio::task::spawn_blocking(move || sha256_speed(size)).await?
    };
    let loopback = Loopback::start(sizes.http).await?;
    let measured = async {
        let (http_download, http_upload) = loopback.transfer().await?;
        let http_small = loopback.small_requests(1, small_time).await?;
        let http_small_parallel = loopback.small_requests(PARALLEL, small_time).await?;
        Ok::<_, CeilingError>((http_download, http_upload, http_small, http_small_parallel))
    }
    .await;
    loopback.stop().await;
    let (http_download, http_upload, http_small, http_small_parallel) = measured?;
    Ok(Ceilings {
        fsync_write,
        small_fsync,
        small_fsync_parallel,
        warm_read,
        sha256,
        http_download,
        http_upload,
        http_small,
        http_small_parallel,
    })
}

/// Random bytes for the file measurements.
fn random_block(len: usize) -> Vec<u8> {
    let mut block = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut block);
    block
}

/// Writes `size` bytes to a new file at `path` in [`FILE_BLOCK`] blocks, then
/// fsyncs it; the rate includes the fsync. Blocking. The file is left in place.
pub fn fsync_write(path: &Path, size: u64) -> Result<Rate, CeilingError> {
    let err = |source| CeilingError::File { path: path.to_path_buf(), source };
    let block = random_block(FILE_BLOCK);
    let started = Instant::now();
    let mut file = std::fs::File::create(path).map_err(err)?;
    let mut left = size;
    while left > 0 {
        // left < FILE_BLOCK fits a usize.
        let n = left.min(FILE_BLOCK as u64) as usize;
        file.write_all(&block[..n]).map_err(err)?;
        left -= n as u64;
    }
    file.sync_all().map_err(err)?;
    Ok(Rate::since(size, started))
}

/// Reads the file at `path` to the end in [`FILE_BLOCK`] reads. Blocking.
pub fn sequential_read(path: &Path) -> Result<Rate, CeilingError> {
    let err = |source| CeilingError::File { path: path.to_path_buf(), source };
    let mut block = vec![0u8; FILE_BLOCK];
    let started = Instant::now();
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut total = 0u64;
    loop {
        match file.read(&mut block) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(Rate::since(total, started))
}

/// From each of `threads` threads at once, creates files in `dir` (created here,
/// removed afterwards), each written with [`SMALL_WRITE`] bytes and fsynced, one
/// after another, until `time` has passed (at least one per thread). Blocking.
pub fn small_fsyncs(dir: &Path, threads: u32, time: Duration) -> Result<OpsRate, CeilingError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CeilingError::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let block = random_block(SMALL_WRITE);
    let started = Instant::now();
    let results: Vec<Result<Vec<u32>, CeilingError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|t| {
                let block = &block;
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    for i in 0u64.. {
                        if i > 0 && started.elapsed() >= time {
                            break;
                        }
                        let path = dir.join(format!("{t:03}-{i:07}"));
                        let one = Instant::now();
                        let mut file = std::fs::File::create(&path).map_err(err(&path))?;
                        file.write_all(block).map_err(err(&path))?;
                        file.sync_all().map_err(err(&path))?;
                        latencies.push(micros(one.elapsed()));
                    }
                    Ok(latencies)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let elapsed_until = Instant::now();
    let removed = std::fs::remove_dir_all(dir).map_err(err(dir));
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    removed?;
    let mut rate = OpsRate::from_latencies(threads.max(1), latencies, started);
    rate.seconds = elapsed_until.duration_since(started).as_secs_f64();
    Ok(rate)
}

/// Hashes `size` bytes (a random 1 MiB block over and over) with SHA-256 on the
/// calling thread. Blocking.
pub fn sha256_speed(size: u64) -> Rate {
    let block = random_block(FILE_BLOCK);
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(FILE_BLOCK as u64) as usize;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    std::hint::black_box(hasher.finalize());
    Rate::since(size, started)
}

/// An in-process HTTP server on 127.0.0.1 and a client for it.
struct Loopback {
    client: reqwest::Client,
    base: String,
    size: u64,
    payload: Payload,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Loopback {
    /// Starts the server: `GET /blob` streams `size` bytes, `PUT /blob` counts what
    /// it is sent, `GET /small` answers [`SMALL_WRITE`] bytes.
    async fn start(size: u64) -> Result<Loopback, CeilingError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|source| CeilingError::Http { direction: "client", source })?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(CeilingError::Listen)?;
        let addr = listener.local_addr().map_err(CeilingError::Listen)?;
        let payload = Payload::new(size, rand::random());
        let small = Bytes::from(random_block(SMALL_WRITE));
        let app = Router::new()
            .route("/blob", get(serve_blob).put(count_upload))
            .with_state(payload.clone())
            .route("/small", get(move || std::future::ready(small.clone())));
        let stop = CancellationToken::new();
        let server = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
            })
        };
        Ok(Loopback { client, base: format!("http://{addr}"), size, payload, stop, server })
    }

    /// Streams the blob down, then up: (download, upload).
    async fn transfer(&self) -> Result<(Rate, Rate), CeilingError> {
        let url = format!("{}/blob", self.base);
        let err = |direction| move |source| CeilingError::Http { direction, source };
        let started = Instant::now();
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(err("download"))?;
        let mut got = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            got += chunk.map_err(err("download"))?.len() as u64;
        }
        let download = Rate::since(got, started);
        if got != self.size {
            return Err(CeilingError::HttpLength { direction: "download", expected: self.size, got });
        }

        let started = Instant::now();
        let resp = self
            .client
            .put(&url)
            .header(reqwest::header::CONTENT_LENGTH, self.size)
            .body(self.payload.body(0))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(err("upload"))?;
        let counted = resp.text().await.map_err(err("upload"))?;
        let upload = Rate::since(self.size, started);
        let got = counted.trim().parse::<u64>().unwrap_or(0);
        if got != self.size {
            return Err(CeilingError::HttpLength { direction: "upload", expected: self.size, got });
        }
        Ok((download, upload))
    }

    /// `GET /small` back to back from `clients` clients (tasks) until `time` has
    /// passed, at least once each.
    async fn small_requests(&self, clients: u32, time: Duration) -> Result<OpsRate, CeilingError> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients.max(1) {
            let (client, url) = (self.client.clone(), format!("{}/small", self.base));
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                while latencies.is_empty() || started.elapsed() < time {
                    let one = Instant::now();
                    let resp = client.get(&url).send().await.and_then(reqwest::Response::error_for_status)?;
                    let body = resp.bytes().await?;
                    std::hint::black_box(body);
                    latencies.push(micros(one.elapsed()));
                }
                Ok::<_, reqwest::Error>(latencies)
            });
        }
        let mut latencies = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(l)) => latencies.extend(l),
                Ok(Err(source)) => return Err(CeilingError::Http { direction: "small GET", source }),
                Err(e) => return Err(CeilingError::Thread(e)),
            }
        }
        Ok(OpsRate::from_latencies(clients.max(1), latencies, started))
    }

    async fn stop(self) {
        drop(self.client);
        self.stop.cancel();
        let _ = self.server.await;
    }
}

/// Streams `size` bytes from an in-process HTTP server to a client over
/// 127.0.0.1, then `size` bytes from the client to the server: (download, upload).
pub async fn http_loopback(size: u64) -> Result<(Rate, Rate), CeilingError> {
    let loopback = Loopback::start(size).await?;
    let transferred = loopback.transfer().await;
    loopback.stop().await;
    transferred
}

/// 4 KiB GETs from an in-process HTTP server over 127.0.0.1, back to back from
/// `clients` clients until `time` has passed.
pub async fn http_small_requests(clients: u32, time: Duration) -> Result<OpsRate, CeilingError> {
    let loopback = Loopback::start(0).await?;
    let measured = loopback.small_requests(clients, time).await;
    loopback.stop().await;
    measured
}

/// The whole payload, streamed from its shared block.
async fn serve_blob(State(payload): State<Payload>) -> Body {
    Body::from_stream(futures_util::stream::iter(payload.chunks(0).map(Ok::<Bytes, Infallible>)))
}

/// Reads the request body to the end and answers how many bytes it had.
async fn count_upload(body: Body) -> String {
    let mut got = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got += c.len() as u64,
            Err(_) => break,
        }
    }
    got.to_string()
}
