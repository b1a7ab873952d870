//! Test harness: in-process clusters (`cairn dev` in the test's own runtime) and
//! helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::content::Policy;
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
pub async fn start(policy: &str, data_servers: usize) -> TestCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = DevConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.data_addrs.truncate(data_servers);
    config.policy = policy.parse::<Policy>().unwrap();
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_expiry = Duration::from_millis(600);
    let cluster = DevCluster::start(config).await.expect("dev cluster starts");
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
        wait_live(&self.http, &self.base, n).await
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

    /// Every temp file under every data server's root.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        self.cluster.data_roots.iter().flat_map(|r| files_under(&r.join("temp"))).collect()
    }
}

/// Waits (at most 10 s) until the API server at `base` reports `n` live data servers.
pub async fn wait_live(http: &reqwest::Client, base: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let live = async {
            let v: serde_json::Value = http.get(format!("{base}/healthz")).send().await.ok()?.json().await.ok()?;
            v["live_data_servers"].as_u64()
        }
        .await;
        if live == Some(n as u64) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "API at {base} sees {live:?} live data servers, want {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Whether tests must fail (CI) rather than skip when a service is missing.
pub fn services_required() -> bool {
    std::env::var("CAIRN_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}
