//! Running the binary's commands: the client's exit code, connecting to the bus,
//! and the data, API and dev servers with their wind-down.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cairn::api::{self, ApiConfig};
use cairn::bus::amqp::AmqpTransport;
use cairn::bus::Bus;
use cairn::data::{self, DataConfig};
use cairn::dev::{DevCluster, DevConfig};
use cairn::object::ObjectConfig;
use cairn::secret::ClusterSecret;
use cairn::telemetry::{self, Role, Scope};

use super::{ApiArgs, DataArgs, DevArgs};

/// Runs a client command and returns its exit code (`cairn help put` lists them),
/// after printing any error as one `cairn: ...` line on stderr. No log output: a
/// client's stderr is for its progress bars, hints and errors.
pub(crate) fn run_client(command: cairn::client::ClientCommand) -> i32 {
    let state_dir = cairn::client::state::default_dir(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn: starting the async runtime: {e}");
            return 1;
        }
    };
    let code = match runtime.block_on(cairn::client::run(command, state_dir)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cairn: {e}");
            e.exit_code()
        }
    };
    // A blocked stdin/stdout task must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Connects to RabbitMQ, counting reconnections under the labels of `scope` (the
/// one server this process runs).
async fn connect_bus(
    url: &str,
    secret: Option<ClusterSecret>,
    shutdown: &CancellationToken,
    scope: &Scope,
) -> anyhow::Result<Bus> {
    if !url.starts_with("amqp://") {
        bail!("--bus must be an amqp:// URL (cairn dev runs an in-process bus instead), got {url:?}");
    }
    let transport = AmqpTransport::connect(url, shutdown.clone())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", cairn::report::redact_url(url)))?;
    transport.count_reconnects(scope.counter(telemetry::BUS_RECONNECTS));
    Ok(Bus::with_secret(Arc::new(transport), secret, shutdown.clone()).await?)
}

pub(crate) async fn run_data(args: DataArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr()?;
    if bound.ip().is_unspecified() && args.advertise.is_none() {
        bail!("listening on {bound}: give --advertise with the address API servers should dial");
    }
    let advertise = args.advertise.unwrap_or_else(|| bound.to_string());
    let secret = args.cluster.load(&shutdown)?;
    let bus = connect_bus(&args.bus, secret.clone(), &shutdown, &Scope::new(Role::Data, &advertise)).await?;
    let config = DataConfig {
        advertise,
        root: args.root,
        heartbeat_interval: args.heartbeat_interval,
        temp_ttl: args.temp_ttl,
        http: args.http.timeouts(),
        store: args.storage.config(),
        compact_interval: args.storage.compact_interval,
        scrub_rate: args.storage.scrub_rate.0,
        scrub_interval: args.storage.scrub_interval,
        garbage_ttl: args.garbage_ttl,
        cluster_secret: secret.clone(),
    };
    let served = data::serve(listener, config, bus.clone(), shutdown.clone()).await;
    wind_down(&shutdown, &bus, secret.as_ref()).await;
    Ok(served?)
}

pub(crate) async fn run_api(args: ApiArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let meta = cairn::meta::open(&args.meta).await?;
    let scope = Scope::new(Role::Api, &listener.local_addr()?.to_string());
    let secret = args.cluster.load(&shutdown)?;
    let bus = connect_bus(&args.bus, secret.clone(), &shutdown, &scope).await?;
    let config = ApiConfig {
        object: ObjectConfig {
            policy: args.redundancy.policy,
            small_policy: args.redundancy.small_policy,
            small_threshold: args.redundancy.small_threshold.0,
            cache_bytes: args.redundancy.cache_size.0,
            locate_timeout: args.locate_timeout,
            data_timeouts: args.data_timeouts.timeouts(),
            compression: args.compression.config()?,
            cluster_secret: secret.clone(),
        },
        heartbeat_expiry: args.heartbeat_expiry,
        http: args.http.timeouts(),
        serve: args.serve.options().await?,
        limits: args.limits.limits(),
        // Unique per process: two API servers on different hosts may both listen on
        // 0.0.0.0:12345, and a lease holder's name must tell them apart.
        maintenance: args.maintenance.config(
            format!("api@{}#{}", args.listen, &uuid::Uuid::new_v4().simple().to_string()[..8]),
            args.heartbeat_expiry,
        ),
        uploads: args.uploads.settings(),
        s3: args.s3.settings(),
    };
    let served = api::serve(listener, config, bus.clone(), meta, shutdown.clone()).await;
    wind_down(&shutdown, &bus, secret.as_ref()).await;
    Ok(served?)
}

/// How long a server's process waits, once the server has returned, for the tasks
/// of the bus and of the secret file watch.
const WIND_DOWN: Duration = Duration::from_secs(5);

/// Once a server has returned (shut down or failed): stops what it shared with
/// the process (the bus connection, the secret file watch) and waits for their
/// tasks, at most [`WIND_DOWN`].
async fn wind_down(shutdown: &CancellationToken, bus: &Bus, secret: Option<&ClusterSecret>) {
    shutdown.cancel();
    let stopped = async {
        bus.stopped().await;
        if let Some(secret) = secret {
            secret.stopped().await;
        }
    };
    if tokio::time::timeout(WIND_DOWN, stopped).await.is_err() {
        tracing::warn!("bus or cluster-secret tasks still running after {WIND_DOWN:?}; exiting without them");
    }
}

pub(crate) async fn run_dev(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.root).with_context(|| format!("creating {}", args.root.display()))?;
    let mut config = DevConfig::new(args.listen, args.root.clone());
    config.policy = args.redundancy.policy;
    config.small_policy = args.redundancy.small_policy;
    config.small_threshold = args.redundancy.small_threshold.0;
    config.cache_bytes = args.redundancy.cache_size.0;
    config.compression = args.compression.config()?;
    config.data_timeouts = args.data_timeouts.timeouts();
    config.http = args.http.timeouts();
    config.serve = args.serve.options().await?;
    config.limits = args.limits.limits();
    config.small_shard_max = args.storage.small_shard_max.0;
    config.volume_size = args.storage.volume_size.0;
    config.compact_interval = args.storage.compact_interval;
    config.commit_delay = args.storage.commit_delay;
    config.maintenance = args.maintenance.config(String::new(), config.heartbeat_expiry);
    config.scrub_rate = args.storage.scrub_rate.0;
    config.scrub_interval = args.storage.scrub_interval;
    config.uploads = args.uploads.settings();
    config.s3 = args.s3.settings();
    let secret_path = args.cluster.cluster_secret_file.clone().unwrap_or_else(|| args.root.join("cluster.secret"));
    config.cluster_secret = Some(ClusterSecret::load_or_create(&secret_path)?);
    let meta_url = format!("sqlite:{}", args.root.join("meta.sqlite").display());
    let meta = cairn::meta::open(&meta_url).await?;
    let key = if args.auth { Some(dev_key(meta.as_ref()).await?) } else { None };
    let scheme = if config.serve.tls.is_some() { "https" } else { "http" };
    let cluster = DevCluster::start_with_meta(config, meta).await?;
    println!("cairn dev: API server    {scheme}://{}", cluster.api_addr);
    for (addr, root) in cluster.data_addrs.iter().zip(&cluster.data_roots) {
        println!("cairn dev: data server   http://{addr}   ({})", root.display());
    }
    println!("cairn dev: metadata      sqlite:{}", args.root.join("meta.sqlite").display());
    let r = &args.redundancy;
    println!(
        "cairn dev: bus           in-process; policy {} ({} below {}); Ctrl-C to stop",
        r.policy, r.small_policy, r.small_threshold
    );
    println!("cairn dev: S3            {scheme}://{}   (path-style, region us-east-1)", cluster.api_addr);
    println!(
        "cairn dev: cluster secret {}   (data servers and the bus take signed requests only)",
        secret_path.display()
    );
    match key {
        Some(key) => {
            println!("cairn dev: access key    {}", key.access_key);
            println!("cairn dev: secret key    {}", key.secret);
            println!(
                "cairn dev: every request must be signed (S3: SigV4; native: Authorization: Bearer <key>:<secret>)"
            );
        }
        None => println!("cairn dev: no access keys: anyone who can reach the API server can read and write (--auth)"),
    }
    let stopped = cluster.shutdown_token();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = stopped.cancelled() => {}
    }
    cluster.shutdown().await;
    println!("cairn dev: stopped");
    Ok(())
}

/// `cairn dev --auth`'s key: the first unrestricted read-write key in the store, or
/// a new one.
async fn dev_key(meta: &dyn cairn::meta::MetaStore) -> anyhow::Result<cairn::meta::AccessKey> {
    let keys = meta.keys().await?;
    if let Some(key) = keys.into_iter().find(|k| k.buckets.is_empty() && !k.read_only) {
        return Ok(key);
    }
    let (access_key, secret) = cairn::api::keys::generate_key();
    let key = cairn::meta::AccessKey {
        access_key,
        secret,
        buckets: Vec::new(),
        read_only: false,
        created_ms: cairn::clock::now_ms(),
    };
    anyhow::ensure!(meta.create_key(&key).await?, "access key id clash; run again");
    Ok(key)
}
