//! A second API server beside a [`TestCluster`]'s own, in the test's runtime: the
//! same bus and data servers, its own process state and its own handle on the
//! metadata store, for what several API servers share (leases, resumable uploads).

use std::sync::Arc;
use std::time::Duration;

use cairn::api::ApiConfig;
use cairn::bus::BusError;
use cairn::maintenance::MaintenanceConfig;
use cairn::meta::MetaStore;
use cairn::object::ObjectConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TestCluster;

/// A second API server's configuration, set like the test cluster's (heartbeat
/// expiry 600 ms, no cache, 1 s locates): large objects under `policy`, those
/// below 64 KiB under `small_policy`, its workers run by `maintenance`.
pub fn second_api_config(policy: &str, small_policy: &str, maintenance: MaintenanceConfig) -> ApiConfig {
    ApiConfig {
        object: ObjectConfig {
            policy: policy.parse().unwrap(),
            small_policy: small_policy.parse().unwrap(),
            small_threshold: 64 * 1024,
            locate_timeout: Duration::from_secs(1),
            cache_bytes: 0,
            data_timeouts: Default::default(),
            compression: Default::default(),
            cluster_secret: None,
        },
        heartbeat_expiry: Duration::from_millis(600),
        http: Default::default(),
        serve: Default::default(),
        limits: Default::default(),
        maintenance,
        uploads: Default::default(),
        s3: Default::default(),
    }
}

/// A running second API server.
pub struct SecondApi {
    /// Where it listens, `http://127.0.0.1:port`.
    pub base: String,
    /// Cancelled to shut it down.
    pub stop: CancellationToken,
    /// The server's task, ended once `stop` is cancelled.
    pub server: JoinHandle<Result<(), BusError>>,
}

impl SecondApi {
    /// Starts an API server with `config` on port 0, on the bus of `t`, with `meta`.
    pub async fn start(t: &TestCluster, meta: Arc<dyn MetaStore>, config: ApiConfig) -> SecondApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let bus = t.cluster.connect_bus().await.unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(cairn::api::serve(listener, config, bus, meta, stop.clone()));
        SecondApi { base, stop, server }
    }

    /// Shuts it down and waits (at most 15 s) for it to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.server).await;
    }
}
