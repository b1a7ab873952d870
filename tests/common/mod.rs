//! Test harness: in-process clusters (`cairn dev` in the test's own runtime) and
//! helpers shared by the integration tests.
#![allow(dead_code)]

pub mod pg;
mod second_api;
mod services;
mod wait;

// Not every test binary uses every check.
#[allow(unused_imports)]
pub use second_api::{second_api_config, SecondApi};
#[allow(unused_imports)]
pub use services::{rabbitmq_reachable, services_required, BROKER_URL};
#[allow(unused_imports)]
pub use wait::eventually;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::content::Policy;
use cairn::data::client::{DataClient, DataTimeouts};
use cairn::data::wire::StoreStats;
use cairn::dev::{DevCluster, DevConfig};

/// A running in-process cluster and the temp dir holding its files.
pub struct TestCluster {
    pub cluster: DevCluster,
    pub base: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts a cluster of `data_servers` data servers with `policy`, short heartbeats
/// (100 ms, expiry 600 ms), every part on port 0, and waits until the API server
/// sees every data server live.
/// Objects below 64 KiB take the write path for objects held whole in memory,
/// larger ones the streaming path; both under `policy`.
pub async fn start(policy: &str, data_servers: usize) -> TestCluster {
    start_with(policy, policy, 64 * 1024, data_servers).await
}

/// Like [`start`], with large objects under `policy` and those below `threshold`
/// bytes under `small_policy`.
pub async fn start_with(policy: &str, small_policy: &str, threshold: u64, data_servers: usize) -> TestCluster {
    start_custom(data_servers, |config| {
        config.policy = policy.parse::<Policy>().unwrap();
        config.small_policy = small_policy.parse::<Policy>().unwrap();
        config.small_threshold = threshold;
    })
    .await
}

/// Like [`start`], with every shard a file of its own (no volumes), for tests that
/// look at, damage or move shard files.
pub async fn start_files(policy: &str, data_servers: usize) -> TestCluster {
    start_with_files(policy, policy, 64 * 1024, data_servers).await
}

/// Like [`start_with`], with every shard a file of its own.
pub async fn start_with_files(policy: &str, small_policy: &str, threshold: u64, data_servers: usize) -> TestCluster {
    start_custom(data_servers, |config| {
        config.policy = policy.parse::<Policy>().unwrap();
        config.small_policy = small_policy.parse::<Policy>().unwrap();
        config.small_threshold = threshold;
        config.small_shard_max = 0;
    })
    .await
}

/// A cluster like [`start`]'s with the default policies (4+2, and 1+2 below
/// 64 KiB), after `adjust` has changed its configuration.
pub async fn start_custom(data_servers: usize, adjust: impl FnOnce(&mut DevConfig)) -> TestCluster {
    start_cluster(data_servers, None, adjust).await
}

/// [`start_custom`] on the caller's metadata store.
pub async fn start_custom_with_meta(
    data_servers: usize,
    meta: std::sync::Arc<dyn cairn::meta::MetaStore>,
    adjust: impl FnOnce(&mut DevConfig),
) -> TestCluster {
    start_cluster(data_servers, Some(meta), adjust).await
}

async fn start_cluster(
    data_servers: usize,
    meta: Option<std::sync::Arc<dyn cairn::meta::MetaStore>>,
    adjust: impl FnOnce(&mut DevConfig),
) -> TestCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = DevConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.data_addrs = (1..=data_servers).map(|i| format!("127.29.1.{i}:0").parse().unwrap()).collect();
    config.small_threshold = 64 * 1024;
    // Tests exercise the data path; the cache has tests of its own.
    config.cache_bytes = 0;
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_expiry = Duration::from_millis(600);
    adjust(&mut config);
    let cluster = match meta {
        Some(meta) => DevCluster::start_with_meta(config, meta).await,
        None => DevCluster::start(config).await,
    }
    .expect("dev cluster starts");
    let base = format!("http://{}", cluster.api_addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let t = TestCluster { cluster, base, http, _dir: dir };
    t.wait_live(data_servers).await;
    t
}

impl TestCluster {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Waits (at most 10 s) until `/healthz` reports exactly `n` live data servers.
    pub async fn wait_live(&self, n: usize) {
        assert!(wait_live(&self.http, &self.base, n).await, "API sees no {n} live data servers within 20 s");
    }

    pub async fn put(&self, name: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http.put(self.url(&format!("/objects/{name}"))).body(body).send().await.expect("PUT sent")
    }

    pub async fn get(&self, name: &str) -> reqwest::Response {
        self.http.get(self.url(&format!("/objects/{name}"))).send().await.expect("GET sent")
    }

    /// Every committed shard file under every data server's root.
    pub fn shard_files(&self) -> Vec<PathBuf> {
        self.cluster.data_roots.iter().flat_map(|r| files_under(&r.join("objects"))).collect()
    }

    /// Waits (at most 10 s) until exactly `n` shard files exist: a write is
    /// acknowledged at its quorum, and the rest of its shards land just after.
    pub async fn wait_shard_files(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.shard_files().len() != n {
            assert!(std::time::Instant::now() < deadline, "{} shard files, want {n}", self.shard_files().len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shards stored on every data server: files plus volume records (from each
    /// data server's `GET /stats`).
    pub async fn shard_count(&self) -> usize {
        let client = DataClient::new(DataTimeouts::default());
        let mut records = 0;
        for addr in &self.cluster.data_addrs {
            match client.stats(&addr.to_string()).await.unwrap_or_else(|e| panic!("GET /stats of {addr}: {e}")) {
                StoreStats::Volumes(v) => records += v.shards as usize,
                StoreStats::NoVolumes { .. } => {}
            }
        }
        self.shard_files().len() + records
    }

    /// Every volume file under every data server's root.
    pub fn volume_files(&self) -> Vec<PathBuf> {
        self.cluster
            .data_roots
            .iter()
            .flat_map(|r| files_under(&r.join("volumes")))
            .filter(|p| p.extension().is_some_and(|e| e == "vol"))
            .collect()
    }

    /// Every temp file under every data server's root.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        self.cluster.data_roots.iter().flat_map(|r| files_under(&r.join("temp"))).collect()
    }
}

/// Waits (at most 20 s: a loaded 2-core CI machine starts processes slowly) until
/// the API server at `base` reports `n` live data servers; false if it never does.
pub async fn wait_live(http: &reqwest::Client, base: &str, n: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live = async {
            let v: serde_json::Value = http.get(format!("{base}/healthz")).send().await.ok()?.json().await.ok()?;
            v["live_data_servers"].as_u64()
        }
        .await;
        if live == Some(n as u64) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            eprintln!("API at {base} sees {live:?} live data servers, want {n}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bus messages the process serving `base` dropped on `stream` (`heartbeats`,
/// `locate requests`, `locate replies`), for every reason, from its `/metrics`.
pub async fn bus_dropped(http: &reqwest::Client, base: &str, stream: &str) -> u64 {
    let Ok(resp) = http.get(format!("{base}/metrics")).send().await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    let label = format!("stream=\"{stream}\"");
    text.lines()
        .filter(|l| l.starts_with("cairn_bus_dropped_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A `cairn` child process, killed with SIGKILL when dropped. Its stderr goes to a
/// log file, printed when a test asks for it.
pub struct Proc {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// Starts `cairn ARGS`, logging to `dir/<name>.log`.
    pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env("RUST_LOG", "info,amqprs=warn")
            .env_remove("LISTEN_ADDRESS")
            .env_remove("STORAGE_ROOT")
            .env_remove("RABBITMQ_SERVER")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("cairn binary starts");
        Proc { child, log, name: name.to_string() }
    }

    /// `cairn data` number `n` (1-based) of a multi-process layout: listening on
    /// `listen`, storing under `dir/data<n>`, on the real RabbitMQ, heartbeating
    /// every 200 ms, logging to `dir/data<n>.log`.
    pub fn data_server(dir: &Path, n: usize, listen: &str) -> Proc {
        Proc::data_server_with(dir, n, listen, &[])
    }

    /// [`Proc::data_server`] with `extra` flags after the usual ones.
    pub fn data_server_with(dir: &Path, n: usize, listen: &str, extra: &[&str]) -> Proc {
        let root = dir.join(format!("data{n}"));
        let mut args = vec![
            "data",
            "--listen",
            listen,
            "--root",
            root.to_str().expect("a UTF-8 temp dir"),
            "--bus",
            BROKER_URL,
            "--heartbeat-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        Proc::spawn(dir, &format!("data{n}"), &args)
    }

    /// `cairn api` called `name` of a multi-process layout: listening on `listen`,
    /// on the real RabbitMQ and the metadata store `meta`, forgetting a silent data
    /// server after `expiry`, without a cache, then `extra` flags; logging to
    /// `dir/<name>.log`.
    pub fn api_server(dir: &Path, name: &str, listen: &str, meta: &str, expiry: &str, extra: &[&str]) -> Proc {
        let mut args =
            vec!["api", "--listen", listen, "--bus", BROKER_URL, "--meta", meta, "--heartbeat-expiry", expiry];
        args.extend_from_slice(&["--cache-size", "0"]);
        args.extend_from_slice(extra);
        Proc::spawn(dir, name, &args)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- {} ---\n{}", self.name, lines[lines.len().saturating_sub(15)..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
