//! The `cairn` binary's command line (not part of the library): the clap
//! definitions of every server command's flags, and in `run` the runners that
//! turn them into a running data server, API server or dev cluster. Every flag
//! can also come from the environment variable named in its help (the seed's
//! `LISTEN_ADDRESS`, `STORAGE_ROOT` and `RABBITMQ_SERVER` among them); config is
//! read and validated here once, and the library never reads the environment
//! itself.

pub(crate) mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use cairn::api::limits::Rate;
use cairn::api::RequestLimits;
use cairn::codec::seekable::MAX_FRAME_LEN;
use cairn::content::Policy;
use cairn::data::client::DataTimeouts;
use cairn::data::store::StoreConfig;
use cairn::data::volume::VolumeConfig;
use cairn::maintenance::MaintenanceConfig;
use cairn::object::compress::{CompressionConfig, CompressionMode};
use cairn::object::resumable::UploadSettings;
use cairn::secret::ClusterSecret;
use cairn::server::{HttpTimeouts, ServeOptions, MAX_HEADER_SIZE, MIN_HEADER_SIZE};
use cairn::size::ByteSize;
use cairn::tls::{CertFiles, TlsServer};

#[derive(Parser)]
#[command(name = "cairn", version, about = "A distributed object store")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a data server: keeps shards on one disk, answers locates, heartbeats.
    Data(DataArgs),
    /// Run an API server: the REST interface clients use.
    Api(ApiArgs),
    /// Run a whole cluster in this process (API server, six data servers, in-process
    /// bus, embedded metadata store); no external service needed.
    Dev(DevArgs),
    /// Operate a running cluster through an API server: status, scrub, gc, repair,
    /// pause and resume its workers.
    Admin(cairn::admin::AdminArgs),
    /// The client: put, get, ls, rm, versions, stat (see `cairn help put`).
    #[command(flatten)]
    Client(cairn::client::ClientCommand),
}

#[derive(Args)]
pub(crate) struct DataArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDRESS")]
    listen: SocketAddr,
    /// Storage root (created when missing).
    #[arg(long, env = "STORAGE_ROOT")]
    root: PathBuf,
    /// RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672
    #[arg(long, env = "RABBITMQ_SERVER")]
    bus: String,
    /// Address API servers should dial (default: the listen address).
    #[arg(long, env = "CAIRN_ADVERTISE")]
    advertise: Option<String>,
    /// How often to heartbeat.
    #[arg(long, env = "CAIRN_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Remove temp shards untouched for this long.
    #[arg(long, env = "CAIRN_TEMP_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    temp_ttl: Duration,
    /// Remove garbage/ entries (quarantined or replaced shards) older than this.
    #[arg(long, env = "CAIRN_GARBAGE_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    garbage_ttl: Duration,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The lifecycle workers of an API server (README, "Lifecycle").
#[derive(Args)]
pub(crate) struct MaintenanceArgs {
    /// Keep the newest N versions of each name (tombstones count); older ones are
    /// pruned. Unset: keep every version.
    #[arg(long, env = "CAIRN_KEEP_VERSIONS", value_parser = clap::value_parser!(u64).range(1..))]
    keep_versions: Option<u64>,
    /// A name whose newest version is a delete older than this disappears with all
    /// its versions (its content then goes to garbage collection); `off`: never.
    #[arg(long, env = "CAIRN_TOMBSTONE_TTL", default_value = "30d")]
    tombstone_ttl: DurationOrOff,
    /// Pause between retention passes over every name.
    #[arg(long, env = "CAIRN_RETENTION_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    retention_interval: Duration,
    /// Pause between garbage-collection passes.
    #[arg(long, env = "CAIRN_GC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    gc_interval: Duration,
    /// How long unreferenced content stays revivable by a PUT of the same bytes
    /// before its shards are deleted.
    #[arg(long, env = "CAIRN_GC_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    gc_grace: Duration,
    /// Shards no content row knows (left by failed writes) are deleted at this age.
    #[arg(long, env = "CAIRN_ORPHAN_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    orphan_age: Duration,
    /// Pause between orphan sweeps (each lists every data server's shards).
    #[arg(long, env = "CAIRN_ORPHAN_INTERVAL", default_value = "6h", value_parser = humantime::parse_duration)]
    orphan_interval: Duration,
    /// A data server silent this long has everything it held rebuilt elsewhere.
    #[arg(long, env = "CAIRN_REPROTECT_AFTER", default_value = "30m", value_parser = humantime::parse_duration)]
    reprotect_after: Duration,
    /// Bytes per second re-protection may read to rebuild content (0: unlimited).
    #[arg(long, env = "CAIRN_REPROTECT_RATE", default_value = "64MiB")]
    reprotect_rate: ByteSize,
    /// Lifetime of the GC and heal leases without renewal.
    #[arg(long, env = "CAIRN_LEASE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// An S3 multipart upload not completed this long after its creation is
    /// removed with its parts.
    #[arg(long, env = "CAIRN_MULTIPART_EXPIRY", default_value = "7d", value_parser = humantime::parse_duration)]
    multipart_expiry: Duration,
}

impl MaintenanceArgs {
    fn config(&self, holder: String, heartbeat_expiry: Duration) -> MaintenanceConfig {
        MaintenanceConfig {
            keep_versions: self.keep_versions,
            tombstone_ttl: self.tombstone_ttl.0,
            retention_interval: self.retention_interval,
            gc_interval: self.gc_interval,
            gc_grace: self.gc_grace,
            orphan_age: self.orphan_age,
            orphan_interval: self.orphan_interval,
            reprotect_after: self.reprotect_after,
            reprotect_rate: self.reprotect_rate.0,
            lease_ttl: self.lease_ttl,
            holder,
            heartbeat_expiry,
            multipart_expiry: self.multipart_expiry,
        }
    }
}

/// A duration, or `off`/`never` for none. (A newtype: clap reads an `Option`
/// field as "flag may be absent", not as the parser's own `Option`.)
#[derive(Clone, Copy, Debug)]
struct DurationOrOff(Option<Duration>);

impl std::str::FromStr for DurationOrOff {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" | "never" => Ok(DurationOrOff(None)),
            t => humantime::parse_duration(t).map(|d| DurationOrOff(Some(d))).map_err(|e| e.to_string()),
        }
    }
}

/// How data servers keep shards.
#[derive(Args)]
pub(crate) struct StorageArgs {
    /// Shards of at most this size are appended to volumes, many per fsync (group
    /// commit); larger ones are a file each. 0 keeps every shard a file.
    #[arg(long, env = "CAIRN_SMALL_SHARD_MAX", default_value = "256KiB")]
    small_shard_max: ByteSize,
    /// A volume is sealed and a new one started at this size (at most 3GiB).
    #[arg(long, env = "CAIRN_VOLUME_SIZE", default_value = "256MiB")]
    volume_size: ByteSize,
    /// How often sealed volumes that are half dead (or small) are compacted.
    #[arg(long, env = "CAIRN_COMPACT_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    compact_interval: Duration,
    /// Group commit: when many small writes arrive at once (a batch of three or
    /// more), wait this long per writer in it (at most 4ms) for more to share the
    /// fsync. 0 writes each batch at once.
    #[arg(long, env = "CAIRN_COMMIT_DELAY", default_value = "1ms", value_parser = humantime::parse_duration)]
    commit_delay: Duration,
    /// The scrubber reads and verifies at most this many bytes per second (0: unlimited).
    #[arg(long, env = "CAIRN_SCRUB_RATE", default_value = "16MiB")]
    scrub_rate: ByteSize,
    /// A scrub pass starts this long after the last one finished; 0s: only on POST /scrub.
    #[arg(long, env = "CAIRN_SCRUB_INTERVAL", default_value = "7d", value_parser = humantime::parse_duration)]
    scrub_interval: Duration,
}

impl StorageArgs {
    fn config(&self) -> StoreConfig {
        let volumes = VolumeConfig {
            volume_size: self.volume_size.0,
            commit_delay: self.commit_delay,
            ..VolumeConfig::default()
        };
        StoreConfig { small_shard_max: self.small_shard_max.0, volumes }
    }
}

/// The cluster secret ([`cairn::secret`]).
#[derive(Args)]
pub(crate) struct ClusterArgs {
    /// File holding the cluster secret, the same on every process (one per line,
    /// at least 32 bytes; the first signs, every one verifies; re-read when it
    /// changes). Data-server requests and bus messages are then signed and checked;
    /// without it, anyone who reaches a data server or the broker is trusted.
    #[arg(long, env = "CAIRN_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
}

impl ClusterArgs {
    /// The secret, watched for changes until `shutdown`; warns loudly without one.
    fn load(&self, shutdown: &CancellationToken) -> anyhow::Result<Option<ClusterSecret>> {
        let Some(path) = &self.cluster_secret_file else {
            tracing::warn!(
                "no --cluster-secret-file: data servers and the bus trust anyone who can reach them; \
                 keep them on a private network (README, \"Security\")"
            );
            return Ok(None);
        };
        let secret = ClusterSecret::load(path)?;
        secret.watch(shutdown.clone());
        tracing::info!(keys = ?secret.key_ids(), "cluster secret loaded: data-server requests and bus messages are signed");
        Ok(Some(secret))
    }
}

#[derive(Args)]
pub(crate) struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDRESS")]
    listen: SocketAddr,
    /// RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672
    #[arg(long, env = "RABBITMQ_SERVER")]
    bus: String,
    /// Metadata store: sqlite:PATH
    #[arg(long, env = "CAIRN_META")]
    meta: String,
    /// Forget a data server this long after its last heartbeat.
    #[arg(long, env = "CAIRN_HEARTBEAT_EXPIRY", default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_expiry: Duration,
    #[command(flatten)]
    redundancy: RedundancyArgs,
    #[command(flatten)]
    compression: CompressionArgs,
    /// Longest wait for locate replies.
    #[arg(long, env = "CAIRN_LOCATE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    locate_timeout: Duration,
    #[command(flatten)]
    data_timeouts: DataTimeoutArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    maintenance: MaintenanceArgs,
    #[command(flatten)]
    uploads: UploadArgs,
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How an API server meets its clients: TLS and the request-head bound.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Serve HTTPS (HTTP/1.1 and HTTP/2) with this PEM certificate chain, leaf
    /// first; needs --tls-key. Reloaded when the file changes.
    #[arg(long, env = "CAIRN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1). Reloaded when
    /// the file changes.
    #[arg(long, env = "CAIRN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest request head (request line and headers) accepted; past it the
    /// request is answered 431 (8KiB to 1MiB).
    #[arg(long, env = "CAIRN_MAX_HEADER_SIZE", default_value = "64KiB")]
    max_header_size: ByteSize,
}

impl ServeArgs {
    async fn options(&self) -> anyhow::Result<ServeOptions> {
        let size = self.max_header_size.0;
        if !(MIN_HEADER_SIZE as u64..=MAX_HEADER_SIZE as u64).contains(&size) {
            bail!("--max-header-size must be between 8KiB and 1MiB, got {}", self.max_header_size);
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let files = CertFiles { cert: cert.clone(), key: key.clone() };
                Some(TlsServer::load(files).await.context("loading --tls-cert and --tls-key")?)
            }
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        Ok(ServeOptions { max_header_size: size as usize, tls, ..ServeOptions::default() })
    }
}

/// The S3 interface.
#[derive(Args)]
pub(crate) struct S3Args {
    /// Serve virtual-host style S3 requests (`<bucket>.<DOMAIN>`) too; include the
    /// port when clients put it in `Host` (e.g. `s3.localhost:12345`).
    #[arg(long, env = "CAIRN_S3_DOMAIN")]
    s3_domain: Option<String>,
}

impl S3Args {
    fn settings(&self) -> cairn::api::S3Settings {
        cairn::api::S3Settings { domain: self.s3_domain.clone() }
    }
}

/// Resumable uploads (tus 1.0 at /uploads).
#[derive(Args)]
pub(crate) struct UploadArgs {
    /// An upload untouched (no PATCH) for this long expires and is removed.
    #[arg(long, env = "CAIRN_UPLOAD_EXPIRY", default_value = "24h", value_parser = humantime::parse_duration)]
    upload_expiry: Duration,
    /// PATCH bodies are stored as parts of at most this size (what a broken
    /// connection can cost at most with Upload-Checksum; without it, nothing).
    #[arg(long, env = "CAIRN_UPLOAD_PART_SIZE", default_value = "16MiB")]
    upload_part_size: ByteSize,
    /// A smaller largest resumable upload than --max-object-size (which also
    /// bounds tus uploads: Tus-Max-Size is the smaller of the two). Kept for
    /// configurations from before --max-object-size.
    #[arg(long, env = "CAIRN_MAX_UPLOAD_SIZE")]
    max_upload_size: Option<ByteSize>,
}

impl UploadArgs {
    fn settings(&self) -> UploadSettings {
        UploadSettings {
            expiry: self.upload_expiry,
            part_size: self.upload_part_size.0.max(1),
            max_size: self.max_upload_size.map_or(u64::MAX, |s| s.0),
        }
    }
}

/// How long a server waits on its own clients.
#[derive(Args)]
pub(crate) struct HttpArgs {
    /// Close a connection that has not sent a complete request head for this long
    /// (slow headers, and idle keep-alive connections).
    #[arg(long, env = "CAIRN_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Fail a request whose body sends nothing for this long (slowloris).
    #[arg(long, env = "CAIRN_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
}

impl HttpArgs {
    fn timeouts(&self) -> HttpTimeouts {
        HttpTimeouts { header: self.header_timeout, body: self.body_timeout }
    }
}

/// How long an API server waits on a data server.
#[derive(Args)]
pub(crate) struct DataTimeoutArgs {
    /// Longest wait to connect to a data server.
    #[arg(long, env = "CAIRN_DATA_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    data_connect_timeout: Duration,
    /// Longest wait for progress from a data server (an answer to a read, the next
    /// chunk of a shard, room for the next block of an upload); past it the data
    /// server counts as stalled and another shard is used.
    #[arg(long, env = "CAIRN_DATA_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    data_timeout: Duration,
    /// Longest wait for a data server to acknowledge a durable write (fsync).
    #[arg(long, env = "CAIRN_DATA_SYNC_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    data_sync_timeout: Duration,
}

impl DataTimeoutArgs {
    fn timeouts(&self) -> DataTimeouts {
        DataTimeouts { connect: self.data_connect_timeout, io: self.data_timeout, sync: self.data_sync_timeout }
    }
}

/// How much work an API server takes on at once (past it: 503 with Retry-After).
#[derive(Args)]
pub(crate) struct LimitArgs {
    /// Requests in flight at most.
    #[arg(long, env = "CAIRN_MAX_REQUESTS", default_value_t = RequestLimits::default().requests, value_parser = at_least_one)]
    max_requests: usize,
    /// Large uploads (PUTs of unknown length or of at least --small-threshold) in
    /// flight at most.
    #[arg(long, env = "CAIRN_MAX_UPLOADS", default_value_t = RequestLimits::default().uploads, value_parser = at_least_one)]
    max_uploads: usize,
    /// Memory for small uploads in flight (PUTs with a Content-Length below
    /// --small-threshold, counted by their length).
    #[arg(long, env = "CAIRN_SMALL_UPLOAD_MEMORY", default_value = "64MiB")]
    small_upload_memory: ByteSize,
    /// The largest object: a native PUT, an S3 PutObject or completed multipart
    /// upload, a tus upload (past it: 413, S3 EntityTooLarge).
    #[arg(long, env = "CAIRN_MAX_OBJECT_SIZE", default_value = "5TiB")]
    max_object_size: ByteSize,
    /// The longest name a new object may get, in bytes (at most 1024; past it:
    /// 400, S3 KeyTooLongError).
    #[arg(long, env = "CAIRN_MAX_NAME_LENGTH", default_value_t = cairn::api::names::MAX_NAME_LEN, value_parser = name_length)]
    max_name_length: usize,
    /// Requests per second each access key may make (unsigned callers of an open
    /// cluster share one allowance); past it: 429, S3 SlowDown. Off by default.
    #[arg(long, env = "CAIRN_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: Option<u32>,
    /// Requests a key that has been quiet may make at once under --rate-limit
    /// (default: one second's worth).
    #[arg(long, env = "CAIRN_RATE_BURST", requires = "rate_limit", value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: Option<u32>,
}

/// A name length from 1 to the absolute limit.
fn name_length(text: &str) -> Result<usize, String> {
    let max = cairn::api::names::MAX_NAME_LEN;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a length from 1 to {max}, got {text:?}")),
    }
}

/// A count of at least one (a limit of zero would refuse everything).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {text:?}")),
    }
}

impl LimitArgs {
    fn limits(&self) -> RequestLimits {
        RequestLimits {
            requests: self.max_requests,
            uploads: self.max_uploads,
            small_upload_bytes: self.small_upload_memory.0,
            max_object_size: self.max_object_size.0,
            max_name_len: self.max_name_length,
            rate: self.rate_limit.map(|per_second| Rate { per_second, burst: self.rate_burst.unwrap_or(per_second) }),
        }
    }
}

#[derive(Args)]
pub(crate) struct DevArgs {
    /// Address the API server listens on.
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "127.0.0.1:12345")]
    listen: SocketAddr,
    /// Directory for every data server's storage and the metadata file.
    #[arg(long, env = "STORAGE_ROOT", default_value = "./cairn-dev")]
    root: PathBuf,
    #[command(flatten)]
    redundancy: RedundancyArgs,
    #[command(flatten)]
    compression: CompressionArgs,
    #[command(flatten)]
    data_timeouts: DataTimeoutArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    maintenance: MaintenanceArgs,
    #[command(flatten)]
    uploads: UploadArgs,
    #[command(flatten)]
    s3: S3Args,
    /// Require signed requests: create an access key (or reuse the first one in
    /// the store) and print it.
    #[arg(long)]
    auth: bool,
    /// `cairn dev`'s cluster secret: this file (made when missing), or
    /// `<root>/cluster.secret` by default.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How new objects are stored (the policy is recorded with each object, so changing
/// it never breaks old ones).
#[derive(Args)]
pub(crate) struct RedundancyArgs {
    /// Redundancy of large objects: K+M (K data shards, M parity shards, each on its
    /// own data server; 1+M is M+1 full copies).
    #[arg(long, env = "CAIRN_POLICY", default_value = "4+2")]
    policy: Policy,
    /// Redundancy of objects smaller than --small-threshold.
    #[arg(long, env = "CAIRN_SMALL_POLICY", default_value = "1+2")]
    small_policy: Policy,
    /// Objects below this size use --small-policy (e.g. 1MiB, 0 to stripe everything).
    #[arg(long, env = "CAIRN_SMALL_THRESHOLD", default_value = "1MiB")]
    small_threshold: ByteSize,
    /// Memory for the cache of small objects (up to 256 KiB each) in the API server;
    /// 0 disables it.
    #[arg(long, env = "CAIRN_CACHE_SIZE", default_value = "64MiB")]
    cache_size: ByteSize,
}

/// Transparent compression of new content (README, "Compression"); content is
/// always addressed by the SHA-256 of its original bytes, and reads decode it.
#[derive(Args)]
pub(crate) struct CompressionArgs {
    /// auto: compress an object with zstd when its first frame shrinks by at least
    /// an eighth; off: store everything as it is.
    #[arg(long, env = "CAIRN_COMPRESSION", default_value = "auto")]
    compression: CompressionMode,
    /// zstd level (1 to 19; negative levels are faster still).
    #[arg(long, env = "CAIRN_COMPRESSION_LEVEL", default_value_t = cairn::object::compress::DEFAULT_LEVEL, allow_negative_numbers = true)]
    compression_level: i32,
    /// Original bytes per zstd frame: the unit a range read decodes (at most 8MiB).
    #[arg(long, env = "CAIRN_COMPRESSION_FRAME", default_value = "256KiB")]
    compression_frame: ByteSize,
    /// Objects below this size are never compressed.
    #[arg(long, env = "CAIRN_COMPRESSION_MIN", default_value = "4KiB")]
    compression_min: ByteSize,
}

impl CompressionArgs {
    fn config(&self) -> anyhow::Result<CompressionConfig> {
        let frame = self.compression_frame.0;
        if frame == 0 || frame > MAX_FRAME_LEN as u64 {
            bail!("--compression-frame must be between 1 byte and 8MiB, got {}", self.compression_frame);
        }
        let (min, max) = (zstd::zstd_safe::min_c_level(), zstd::zstd_safe::max_c_level());
        if !(min..=max).contains(&self.compression_level) || self.compression_level == 0 {
            bail!("--compression-level must be between {min} and {max} and not 0, got {}", self.compression_level);
        }
        Ok(CompressionConfig {
            mode: self.compression,
            level: self.compression_level,
            frame: frame as usize,
            min: self.compression_min.0,
        })
    }
}
