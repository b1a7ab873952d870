//! `cairn dev`: a whole cluster in one process — an API server, several data servers
//! on their own loopback addresses, the in-process bus and the embedded metadata
//! store — so that a newcomer can try cairn with one command and tests can start a
//! cluster without any external service.

use crate::object::resumable::UploadSettings;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiConfig, RequestLimits};
use crate::bus::memory::MemoryBroker;
use crate::bus::{Bus, BusError, Transport};
use crate::content::Policy;
use crate::data::client::DataTimeouts;
use crate::data::store::StoreConfig;
use crate::data::volume::VolumeConfig;
use crate::data::{self, DataConfig};
use crate::maintenance::MaintenanceConfig;
use crate::meta::{self, MetaError, MetaStore};
use crate::object::compress::CompressionConfig;
use crate::object::ObjectConfig;
use crate::secret::ClusterSecret;
use crate::server::{HttpTimeouts, ServeOptions};

/// The default redundancy of large objects: the book's RS(4,2), any two of six
/// data servers can be lost.
pub const DEFAULT_POLICY: Policy = Policy { k: 4, m: 2 };
/// The default redundancy of small objects: three full copies, which also survive
/// the loss of any two servers.
pub const DEFAULT_SMALL_POLICY: Policy = Policy { k: 1, m: 2 };
/// Objects below this size are replicated instead of striped (see README,
/// "Small objects").
pub const DEFAULT_SMALL_THRESHOLD: u64 = 1024 * 1024;
/// Shards of at most this many bytes are volume records (see
/// [`crate::data::store::DEFAULT_SMALL_SHARD_MAX`]).
pub const DEFAULT_SMALL_SHARD_MAX: u64 = crate::data::store::DEFAULT_SMALL_SHARD_MAX;
/// Memory each API server gives to its small-object cache.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How `cairn dev` lays out its cluster.
#[derive(Clone, Debug)]
pub struct DevConfig {
    /// Where the API server listens.
    pub listen: SocketAddr,
    /// Directory holding every data server's root and the metadata file.
    pub root: PathBuf,
    /// Addresses the data servers listen on (port 0: any free port).
    pub data_addrs: Vec<SocketAddr>,
    /// Redundancy for new content of at least `small_threshold` bytes.
    pub policy: Policy,
    /// Redundancy for smaller content.
    pub small_policy: Policy,
    /// Objects below this many bytes use `small_policy`.
    pub small_threshold: u64,
    /// Bytes of small objects the API server keeps in memory (0: no cache).
    pub cache_bytes: u64,
    /// How the API server compresses new content.
    pub compression: CompressionConfig,
    /// How often data servers heartbeat.
    pub heartbeat_interval: Duration,
    /// When API servers forget a silent data server.
    pub heartbeat_expiry: Duration,
    /// The metadata store URL; `None` for `sqlite:<root>/meta.sqlite`.
    pub meta_url: Option<String>,
    /// Deadlines of the API server's exchanges with data servers.
    pub data_timeouts: DataTimeouts,
    /// How long every server waits on its clients.
    pub http: HttpTimeouts,
    /// The API server's TLS and request-head bound (data servers stay plain HTTP).
    pub serve: ServeOptions,
    /// How much work the API server takes on at once.
    pub limits: RequestLimits,
    /// Data servers keep shards of at most this many bytes in volumes; 0: every
    /// shard a file.
    pub small_shard_max: u64,
    /// Size at which a data server seals a volume and starts the next.
    pub volume_size: u64,
    /// How often data servers look for volumes to compact.
    pub compact_interval: Duration,
    /// Data servers' group-commit delay per waiting writer
    /// ([`VolumeConfig::commit_delay`]).
    pub commit_delay: Duration,
    /// The API server's lifecycle workers (its `holder` is filled in with the
    /// API server's address when empty, its heartbeat expiry from this config).
    pub maintenance: MaintenanceConfig,
    /// Resumable uploads (tus): expiry, part size, largest upload.
    pub uploads: UploadSettings,
    /// The S3 front door.
    pub s3: crate::api::S3Settings,
    /// Bytes per second each data server's scrubber reads at most (0: unlimited).
    pub scrub_rate: u64,
    /// How long after a finished scrub pass the next starts (zero: only on request).
    pub scrub_interval: Duration,
    /// The cluster secret every part signs with and checks ([`crate::secret`]);
    /// `None`: an open data tier and bus. `cairn dev` keeps one in its root.
    pub cluster_secret: Option<ClusterSecret>,
}

impl DevConfig {
    /// The API on `listen` and six data servers on 127.29.1.1–6 with the same port
    /// (the seed's layout: `127.0.0.1:12345` gives data servers at
    /// `127.29.1.N:12345`; port 0 gives each part any free port), all kept under
    /// `root`.
    pub fn new(listen: SocketAddr, root: PathBuf) -> DevConfig {
        let data_addrs =
            (1..=6).map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 29, 1, i)), listen.port())).collect();
        DevConfig {
            listen,
            root,
            data_addrs,
            policy: DEFAULT_POLICY,
            small_policy: DEFAULT_SMALL_POLICY,
            small_threshold: DEFAULT_SMALL_THRESHOLD,
            cache_bytes: DEFAULT_CACHE_BYTES,
            compression: CompressionConfig::default(),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_expiry: Duration::from_secs(10),
            meta_url: None,
            data_timeouts: DataTimeouts::default(),
            http: HttpTimeouts::default(),
            serve: ServeOptions::default(),
            limits: RequestLimits::default(),
            small_shard_max: DEFAULT_SMALL_SHARD_MAX,
            volume_size: VolumeConfig::default().volume_size,
            compact_interval: Duration::from_secs(60),
            commit_delay: VolumeConfig::default().commit_delay,
            maintenance: MaintenanceConfig::new(String::new()),
            uploads: UploadSettings::default(),
            s3: crate::api::S3Settings::default(),
            scrub_rate: crate::data::scrub::DEFAULT_SCRUB_RATE,
            scrub_interval: crate::data::scrub::DEFAULT_SCRUB_INTERVAL,
            cluster_secret: None,
        }
    }
}

/// Why `cairn dev` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metadata store could not be opened.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Which part of a dev cluster a bus connection is for, as told to a
/// [`TransportWrap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevPart {
    /// The API server.
    Api,
    /// Data server `n` (0-based).
    Data(usize),
}

/// Wraps each part's connection to the in-process broker, for tests that put a
/// fault-injecting transport between a part and the bus.
pub type TransportWrap = Arc<dyn Fn(DevPart, Arc<dyn Transport>) -> Arc<dyn Transport> + Send + Sync>;

/// A running in-process cluster.
pub struct DevCluster {
    /// Where the API server listens.
    pub api_addr: SocketAddr,
    /// Where each data server listens.
    pub data_addrs: Vec<SocketAddr>,
    /// Each data server's storage root.
    pub data_roots: Vec<PathBuf>,
    data_stops: Vec<CancellationToken>,
    broker: MemoryBroker,
    secret: Option<ClusterSecret>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, DevError> {
    TcpListener::bind(addr).await.map_err(|source| DevError::Bind { addr, source })
}

impl DevCluster {
    /// Starts every part and returns once all listen. Data servers have sent their
    /// first heartbeat by the time the API server answers `/healthz` with all of
    /// them live (within moments).
    pub async fn start(config: DevConfig) -> Result<DevCluster, DevError> {
        let meta_url =
            config.meta_url.clone().unwrap_or_else(|| format!("sqlite:{}", config.root.join("meta.sqlite").display()));
        let meta = meta::open(&meta_url).await?;
        DevCluster::start_with_meta(config, meta).await
    }

    /// [`start`](DevCluster::start) with a metadata store of the caller's: for tests
    /// that inject faults into it. `config.meta_url` is ignored.
    pub async fn start_with_meta(config: DevConfig, meta: Arc<dyn MetaStore>) -> Result<DevCluster, DevError> {
        DevCluster::start_with_transports(config, meta, Arc::new(|_, transport| transport)).await
    }

    /// [`start_with_meta`](DevCluster::start_with_meta) with every part's bus
    /// connection passed through `wrap` first: for tests that inject faults into
    /// the bus.
    pub async fn start_with_transports(
        config: DevConfig,
        meta: Arc<dyn MetaStore>,
        wrap: TransportWrap,
    ) -> Result<DevCluster, DevError> {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let broker = MemoryBroker::new();

        // The API server subscribes to heartbeats before any data server sends one.
        let api_listener = bind(config.listen).await?;
        let api_addr = api_listener.local_addr().map_err(|source| DevError::Bind { addr: config.listen, source })?;
        let secret = config.cluster_secret.clone();
        let api_bus =
            Bus::with_secret(wrap(DevPart::Api, Arc::new(broker.connect())), secret.clone(), shutdown.clone()).await?;
        let api_config = ApiConfig {
            object: ObjectConfig {
                policy: config.policy,
                small_policy: config.small_policy,
                small_threshold: config.small_threshold,
                locate_timeout: Duration::from_secs(1),
                cache_bytes: config.cache_bytes,
                data_timeouts: config.data_timeouts,
                compression: config.compression,
                cluster_secret: secret.clone(),
            },
            heartbeat_expiry: config.heartbeat_expiry,
            http: config.http,
            serve: config.serve.clone(),
            limits: config.limits,
            maintenance: MaintenanceConfig {
                holder: if config.maintenance.holder.is_empty() {
                    format!("api@{api_addr}#{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
                } else {
                    config.maintenance.holder.clone()
                },
                heartbeat_expiry: config.heartbeat_expiry,
                ..config.maintenance.clone()
            },
            uploads: config.uploads,
            s3: config.s3.clone(),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        {
            let shutdown = shutdown.clone();
            let meta = meta.clone();
            tasks.spawn(async move {
                let served = api::serve_with_ready(api_listener, api_config, api_bus, meta, shutdown.clone(), ready_tx);
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "API server stopped");
                    shutdown.cancel();
                }
            });
        }
        let _ = ready_rx.await;

        let mut data_addrs = Vec::new();
        let mut data_roots = Vec::new();
        let mut data_stops = Vec::new();
        for (i, addr) in config.data_addrs.iter().enumerate() {
            let listener = bind(*addr).await?;
            let bound = listener.local_addr().map_err(|source| DevError::Bind { addr: *addr, source })?;
            let root = config.root.join(format!("data-{}", i + 1));
            let stop = shutdown.child_token();
            let bus =
                Bus::with_secret(wrap(DevPart::Data(i), Arc::new(broker.connect())), secret.clone(), stop.clone())
                    .await?;
            let data_config = DataConfig {
                advertise: bound.to_string(),
                root: root.clone(),
                heartbeat_interval: config.heartbeat_interval,
                temp_ttl: Duration::from_secs(3600),
                http: config.http,
                store: StoreConfig {
                    small_shard_max: config.small_shard_max,
                    volumes: VolumeConfig {
                        volume_size: config.volume_size,
                        commit_delay: config.commit_delay,
                        ..VolumeConfig::default()
                    },
                },
                compact_interval: config.compact_interval,
                scrub_rate: config.scrub_rate,
                scrub_interval: config.scrub_interval,
                garbage_ttl: crate::data::DEFAULT_GARBAGE_TTL,
                cluster_secret: secret.clone(),
            };
            let token = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = data::serve(listener, data_config, bus, token).await {
                    tracing::error!(error = %e, addr = %bound, "data server stopped");
                }
            });
            data_addrs.push(bound);
            data_roots.push(root);
            data_stops.push(stop);
        }
        tasks.close();
        if let Some(secret) = &secret {
            secret.watch(shutdown.clone());
        }
        Ok(DevCluster { api_addr, data_addrs, data_roots, data_stops, broker, secret, shutdown, tasks })
    }

    /// Stops data server `index` (0-based) as if its process died: it stops serving
    /// and heartbeating; its files stay.
    pub fn stop_data_server(&self, index: usize) {
        if let Some(stop) = self.data_stops.get(index) {
            stop.cancel();
        }
    }

    /// A token that is cancelled when the cluster shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every part and waits for them, the cluster secret's file watch too.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
        if let Some(secret) = &self.secret {
            secret.stopped().await;
        }
    }
}

impl DevCluster {
    /// A fresh connection to the cluster's in-process bus, as another process on the
    /// same broker would have: for tests that inject messages.
    pub async fn connect_bus(&self) -> Result<Bus, BusError> {
        Bus::with_secret(self.connect_transport(), self.secret.clone(), self.shutdown.clone()).await
    }

    /// A fresh raw connection to the cluster's in-process broker: for tests that
    /// send bytes no [`Bus`] would (a rogue participant).
    pub fn connect_transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.broker.connect())
    }
}
