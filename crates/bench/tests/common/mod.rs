//! What the bench crate's tests need of a test harness: an in-process cluster for
//! the load generator to load ([`start`]), and whether RabbitMQ answers, skipping
//! loudly when it does not (failing under `CAIRN_REQUIRE_SERVICES=1`). The service
//! checks are the cairn package's own (`tests/common/services.rs`), included by
//! path; the cluster is started here, since the rest of that harness spawns
//! `CARGO_BIN_EXE_cairn`, which Cargo defines only for the cairn package's tests.
#![allow(dead_code)]

#[path = "../../../../tests/common/services.rs"]
mod services;

use std::time::Duration;

use cairn::content::Policy;
use cairn::dev::{DevCluster, DevConfig};

// Not every test binary uses every check.
#[allow(unused_imports)]
pub use services::{rabbitmq_reachable, services_required, BROKER_URL};

/// A running in-process cluster and the temp dir holding its files.
pub struct TestCluster {
    pub cluster: DevCluster,
    pub base: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts `cairn dev` in this process with `data_servers` data servers and `policy`
/// for every object, short heartbeats (100 ms, expiry 600 ms), no cache, every part
/// on port 0, and waits until the API server sees every data server live.
pub async fn start(policy: &str, data_servers: usize) -> TestCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = DevConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.data_addrs = (1..=data_servers).map(|i| format!("127.29.1.{i}:0").parse().unwrap()).collect();
    config.policy = policy.parse::<Policy>().unwrap();
    config.small_policy = policy.parse::<Policy>().unwrap();
    config.small_threshold = 64 * 1024;
    config.cache_bytes = 0;
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_expiry = Duration::from_millis(600);
    let cluster = DevCluster::start(config).await.expect("dev cluster starts");
    let base = format!("http://{}", cluster.api_addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let t = TestCluster { cluster, base, http, _dir: dir };
    assert!(
        wait_live(&t.http, &t.base, data_servers).await,
        "API sees no {data_servers} live data servers within 20 s"
    );
    t
}

impl TestCluster {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, name: &str) -> reqwest::Response {
        self.http.get(self.url(&format!("/objects/{name}"))).send().await.expect("GET sent")
    }
}

/// Waits (at most 20 s: a loaded 2-core CI machine starts slowly) until the API
/// server at `base` reports `n` live data servers; false if it never does.
async fn wait_live(http: &reqwest::Client, base: &str, n: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live = async {
            let resp = http.get(format!("{base}/healthz")).send().await.ok()?;
            let health: serde_json::Value = resp.json().await.ok()?;
            health["live_data_servers"].as_u64()
        };
        if live.await == Some(n as u64) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
