//! The clusters the suite loads, started and stopped by the suite itself.
//!
//! - [`start_dev`]: `cairn dev` in this process ([`DevCluster`]) with its real
//!   defaults (policies, heartbeats), the API server and the data servers on any
//!   free port.
//! - [`start_processes`]: the seed's multi-process layout: two `cairn api` and six
//!   `cairn data` processes on RabbitMQ, each spawned from the `cairn` binary. They
//!   live in a [`Processes`], which kills and reaps every one of them when dropped,
//!   so that neither an error nor a panic leaves servers behind. One of them can
//!   also be killed (`kill -9`) and started again with the same flags, files and
//!   address ([`Processes::kill`], [`Processes::restart`]): the crash run's faults.
//!
//! Either is ready when its API servers' `/healthz` count six live data servers.
//!
//! A [`Processes`] can also kill one of its servers and start it again with the
//! same flags (the restart measurement), and hold other children the suite spawns
//! (a `cairn dev` child, the `strace` attached to it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::load::Endpoint;
use cairn::dev::{DevCluster, DevConfig, DevError, DEFAULT_POLICY, DEFAULT_SMALL_POLICY, DEFAULT_SMALL_THRESHOLD};
use cairn::size::ByteSize;

/// Data servers in either layout.
pub const DATA_SERVERS: u8 = 6;
/// API servers in the multi-process layout.
pub const API_SERVERS: u8 = 2;
/// How long a layout may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports from the base port are tried for the multi-process layout.
const PORT_TRIES: u16 = 100;

/// Why a layout could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The in-process cluster did not start.
    #[error("cairn dev did not start: {0}")]
    Dev(#[from] DevError),
    /// A directory or log file could not be made.
    #[error("{path}: {source}")]
    File {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The `cairn` binary could not be started.
    #[error("cannot start {exe}: {source}")]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// No port in the range was free on every address of the layout.
    #[error("no port in {from}..{to} is free on 127.29.1.1-6 and 127.29.2.1-2")]
    NoFreePort {
        /// First port tried.
        from: u16,
        /// One past the last.
        to: u16,
    },
    /// A server process ended while the layout was starting.
    #[error("{name} exited ({status}) while starting:\n{log_tail}")]
    Exited {
        /// Which process.
        name: String,
        /// How it ended.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// An API server did not see the data servers in time.
    #[error("{endpoint} did not report {want} live data servers in time (last answer: {last})")]
    NotLive {
        /// The API server.
        endpoint: String,
        /// Live data servers wanted.
        want: u64,
        /// What it last answered.
        last: String,
    },
}

/// The `cairn dev` the suite starts: its address and description.
pub(crate) struct DevLayout {
    pub cluster: DevCluster,
    pub endpoint: String,
    pub description: String,
}

/// Starts `cairn dev` with its defaults under `root` on any free ports, and waits
/// until its API server sees all six data servers.
pub(crate) async fn start_dev(root: &Path) -> Result<DevLayout, LayoutError> {
    start_dev_with(root, |_| {}).await
}

/// [`start_dev`] after `adjust` has changed the defaults (the small-shard engine's
/// threshold of the files-versus-volumes runs).
pub(crate) async fn start_dev_with(root: &Path, adjust: impl FnOnce(&mut DevConfig)) -> Result<DevLayout, LayoutError> {
    std::fs::create_dir_all(root).map_err(|source| LayoutError::File { path: root.to_path_buf(), source })?;
    let mut config = DevConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), root.to_path_buf());
    adjust(&mut config);
    let description = format!(
        "`cairn dev` in this process (it shares the bench's async runtime): API server on 127.0.0.1, six data \
         servers on 127.29.1.1-6 (free ports), in-process bus, SQLite metadata; policy {} ({} below {}), \
         heartbeat every {}, small shards up to {} in the small-shard engine",
        config.policy,
        config.small_policy,
        ByteSize(config.small_threshold),
        humantime::format_duration(config.heartbeat_interval),
        ByteSize(config.small_shard_max),
    );
    let cluster = DevCluster::start(config).await?;
    let endpoint = format!("http://{}", cluster.api_addr);
    if let Err(e) = wait_live(&endpoint, u64::from(DATA_SERVERS), || Ok(())).await {
        cluster.shutdown().await;
        return Err(e);
    }
    Ok(DevLayout { cluster, endpoint, description })
}

/// `cairn` server processes, each killed (SIGKILL) and reaped when this is dropped.
pub(crate) struct Processes {
    children: Vec<ServerProcess>,
}

struct ServerProcess {
    name: String,
    child: Child,
    log: PathBuf,
    /// How it was started, to start it again.
    exe: PathBuf,
    args: Vec<String>,
}

/// Starts `exe ARGS`, its stderr appended to `log`.
fn spawn_logged(exe: &Path, args: &[String], log: &Path) -> Result<Child, LayoutError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| LayoutError::File { path: log.to_path_buf(), source })?;
    Command::new(exe)
        .args(args)
        // Flags override the environment, except for this one, which is not given.
        .env_remove("CAIRN_ADVERTISE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|source| LayoutError::Spawn { exe: exe.to_path_buf(), source })
}

impl Processes {
    /// None yet.
    pub fn new() -> Processes {
        Processes { children: Vec::new() }
    }

    /// Starts `exe ARGS` as `name`, its stderr going to `log_dir/<name>.log`.
    pub fn spawn(&mut self, exe: &Path, log_dir: &Path, name: String, args: &[String]) -> Result<(), LayoutError> {
        let log = log_dir.join(format!("{name}.log"));
        let child = spawn_logged(exe, args, &log)?;
        self.children.push(ServerProcess { name, child, log, exe: exe.to_path_buf(), args: args.to_vec() });
        Ok(())
    }

    /// The process id of `name`, if there is such a process.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.iter().find(|p| p.name == name).map(|p| p.child.id())
    }

    /// Kills `name` with SIGKILL (as `kill -9`) and reaps it; `false` when there is
    /// no such process.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(p) = self.children.iter_mut().find(|p| p.name == name) else { return false };
        let _ = p.child.kill();
        let _ = p.child.wait();
        true
    }

    /// Starts `name` again with the flags, files and address it had, its stderr
    /// appended to the same log (so that what it wrote before the kill stays); the
    /// process it replaces should be dead ([`kill`](Self::kill)). `Ok(false)` when
    /// no process has that name.
    pub fn restart(&mut self, name: &str) -> Result<bool, LayoutError> {
        let Some(p) = self.children.iter_mut().find(|p| p.name == name) else { return Ok(false) };
        p.child = spawn_logged(&p.exe, &p.args, &p.log)?;
        Ok(true)
    }

    /// Every process's name and log file, in the order they were started.
    pub fn logs(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.children.iter().map(|p| (p.name.as_str(), p.log.as_path()))
    }

    /// Waits up to `timeout` for `name` to exit by itself; its status, or `None`
    /// when it is still running (or there is no such process).
    pub async fn wait_exit(&mut self, name: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.children.iter_mut().find(|p| p.name == name)?;
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of `name`'s log.
    pub fn log_tail(&self, name: &str) -> String {
        self.children.iter().find(|p| p.name == name).map_or_else(String::new, |p| log_tail(&p.log))
    }

    /// The first process found to have exited: its name, status and log tail.
    pub fn exited(&mut self) -> Option<(String, ExitStatus, String)> {
        self.children.iter_mut().find_map(|p| {
            let status = p.child.try_wait().ok().flatten()?;
            Some((p.name.clone(), status, log_tail(&p.log)))
        })
    }

    /// `Err` naming the first process found to have exited.
    pub fn check_running(&mut self) -> Result<(), LayoutError> {
        match self.exited() {
            Some((name, status, log_tail)) => Err(LayoutError::Exited { name, status, log_tail }),
            None => Ok(()),
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.children {
            let _ = p.child.kill();
        }
        for p in &mut self.children {
            let _ = p.child.wait();
        }
    }
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The multi-process layout, running.
pub(crate) struct ProcessLayout {
    pub processes: Processes,
    /// The API servers, `http://127.29.2.N:port`.
    pub endpoints: Vec<String>,
    /// The data servers' process names (`data-N`) and addresses.
    pub data_servers: Vec<(String, SocketAddr)>,
    pub description: String,
}

/// The process name of the `n`-th data server (1-based) of the multi-process layout.
pub(crate) fn data_name(n: u8) -> String {
    format!("data-{n}")
}

/// The address of the `n`-th data server (1-based) of the multi-process layout.
fn data_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 29, 1, n))
}

/// The address of the `n`-th API server (1-based) of the multi-process layout.
fn api_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 29, 2, n))
}

/// The first port from `from` (of [`PORT_TRIES`]) that every address in `ips` can
/// bind now. Racy by nature (someone may take it next), but a collision only makes
/// a server fail to start, which is reported.
pub(crate) fn free_port(ips: &[IpAddr], from: u16) -> Result<u16, LayoutError> {
    let to = from.saturating_add(PORT_TRIES);
    (from..to)
        .find(|&port| ips.iter().all(|&ip| std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok()))
        .ok_or(LayoutError::NoFreePort { from, to })
}

/// Starts two `cairn api` and six `cairn data` processes from `exe`, on RabbitMQ at
/// `broker`, keeping their files and logs under `root`, and waits until both API
/// servers see six live data servers.
pub(crate) async fn start_processes(
    exe: &Path,
    root: &Path,
    broker: &str,
    base_port: u16,
) -> Result<ProcessLayout, LayoutError> {
    start_processes_with(exe, root, broker, base_port, &[]).await
}

/// [`start_processes`], with `api_args` added to each `cairn api`'s flags.
pub(crate) async fn start_processes_with(
    exe: &Path,
    root: &Path,
    broker: &str,
    base_port: u16,
    api_args: &[String],
) -> Result<ProcessLayout, LayoutError> {
    std::fs::create_dir_all(root).map_err(|source| LayoutError::File { path: root.to_path_buf(), source })?;
    let ips: Vec<IpAddr> = (1..=DATA_SERVERS).map(data_ip).chain((1..=API_SERVERS).map(api_ip)).collect();
    let port = free_port(&ips, base_port)?;
    let mut processes = Processes::new();
    let dev = DevConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), root.to_path_buf());
    let meta = format!("sqlite:{}", root.join("meta.sqlite").display());
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    // API servers first, so that they hear the data servers' first heartbeats
    // instead of waiting a whole interval for the second ones.
    for n in 1..=API_SERVERS {
        let args = [
            "api".to_string(),
            "--listen".into(),
            SocketAddr::new(api_ip(n), port).to_string(),
            "--bus".into(),
            broker.into(),
            "--meta".into(),
            meta.clone(),
            "--policy".into(),
            DEFAULT_POLICY.to_string(),
            "--small-policy".into(),
            DEFAULT_SMALL_POLICY.to_string(),
            "--small-threshold".into(),
            DEFAULT_SMALL_THRESHOLD.to_string(),
            "--heartbeat-expiry".into(),
            duration(dev.heartbeat_expiry),
        ];
        let args: Vec<String> = args.into_iter().chain(api_args.iter().cloned()).collect();
        processes.spawn(exe, root, format!("api-{n}"), &args)?;
    }
    let endpoints: Vec<String> =
        (1..=API_SERVERS).map(|n| format!("http://{}", SocketAddr::new(api_ip(n), port))).collect();
    for endpoint in &endpoints {
        wait_live_at_least(endpoint, 0, &mut processes).await?;
    }
    let mut data_servers = Vec::new();
    for n in 1..=DATA_SERVERS {
        data_servers.push((format!("data-{n}"), SocketAddr::new(data_ip(n), port)));
        let data_root = root.join(format!("data-{n}"));
        let args = [
            "data".to_string(),
            "--listen".into(),
            SocketAddr::new(data_ip(n), port).to_string(),
            "--root".into(),
            data_root.display().to_string(),
            "--bus".into(),
            broker.into(),
            "--heartbeat-interval".into(),
            duration(dev.heartbeat_interval),
        ];
        processes.spawn(exe, root, data_name(n), &args)?;
    }
    let data_servers = (1..=DATA_SERVERS).map(|n| (data_name(n), SocketAddr::new(data_ip(n), port))).collect();
    for endpoint in &endpoints {
        wait_live_at_least(endpoint, u64::from(DATA_SERVERS), &mut processes).await?;
    }
    let description = format!(
        "six `cairn data` processes on 127.29.1.1-6:{port} and two `cairn api` processes on \
         127.29.2.1-2:{port}, RabbitMQ at {}, one SQLite file; policy {DEFAULT_POLICY} ({DEFAULT_SMALL_POLICY} \
         below {}), heartbeat every {}; the cells alternate between the two API servers (each cell loads one)",
        broker_addr(broker).unwrap_or_else(|| "?".into()),
        ByteSize(DEFAULT_SMALL_THRESHOLD),
        duration(dev.heartbeat_interval),
    );
    Ok(ProcessLayout { processes, endpoints, data_servers, description })
}

/// Waits until `endpoint` reports exactly `want` live data servers; `alive` is
/// asked between polls whether the servers are still running.
pub(crate) async fn wait_live(
    endpoint: &str,
    want: u64,
    alive: impl FnMut() -> Result<(), LayoutError>,
) -> Result<(), LayoutError> {
    wait_live_with(endpoint, |live| live == want, want, START_TIMEOUT, alive).await
}

/// Waits until `endpoint` reports at least `want` live data servers (more when
/// someone else's data servers heartbeat on the same broker).
pub(crate) async fn wait_live_at_least(
    endpoint: &str,
    want: u64,
    processes: &mut Processes,
) -> Result<(), LayoutError> {
    wait_live_with(endpoint, |live| live >= want, want, START_TIMEOUT, || processes.check_running()).await
}

/// Live data servers `endpoint` reports now; `None` when it does not answer.
pub(crate) async fn live_count(endpoint: &str) -> Option<u64> {
    health_client(endpoint).ok()?.health().await.ok()
}

/// Waits up to `timeout` until `endpoint` reports exactly `want` live data servers,
/// as when another cluster's data servers on the same broker have just stopped and
/// are not yet expired; the count it last reported.
pub(crate) async fn settle(endpoint: &str, want: u64, timeout: Duration) -> Option<u64> {
    match wait_live_with(endpoint, |live| live == want, want, timeout, || Ok(())).await {
        Ok(()) => Some(want),
        Err(_) => live_count(endpoint).await,
    }
}

fn health_client(endpoint: &str) -> Result<Endpoint, reqwest::Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()?;
    Ok(Endpoint::native(client, endpoint.to_string()))
}

async fn wait_live_with(
    endpoint: &str,
    enough: impl Fn(u64) -> bool,
    want: u64,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), LayoutError>,
) -> Result<(), LayoutError> {
    let api = health_client(endpoint).map_err(|e| LayoutError::NotLive {
        endpoint: endpoint.to_string(),
        want,
        last: e.to_string(),
    })?;
    let deadline = Instant::now() + timeout;
    loop {
        alive()?;
        let last = match api.health().await {
            Ok(live) if enough(live) => return Ok(()),
            Ok(live) => format!("{live} live"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(LayoutError::NotLive { endpoint: endpoint.to_string(), want, last });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `host:port` of an `amqp://[user[:pass]@]host[:port][/vhost]` URL, 5672 when no
/// port is given; `None` when it is not such a URL.
pub fn broker_addr(url: &str) -> Option<String> {
    let rest = url.strip_prefix("amqp://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    let has_port =
        host_port.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    Some(if has_port { host_port.to_string() } else { format!("{host_port}:5672") })
}

/// `Ok` when something accepts TCP connections at `broker`'s address within a
/// second; else why not.
pub(crate) async fn broker_answers(broker: &str) -> Result<(), String> {
    let addr = broker_addr(broker).ok_or_else(|| format!("{broker:?} is not an amqp:// URL"))?;
    match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("RabbitMQ does not answer at {addr}: {e}")),
        Err(_) => Err(format!("RabbitMQ does not answer at {addr}: connect timed out")),
    }
}
