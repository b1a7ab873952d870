//! A metadata store that fails on command, under a whole in-process cluster: its
//! errors become 503 with a reason, never a panic, and a write whose version could
//! not be recorded leaves no version behind.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn::content::{ContentHash, Placement};
use cairn::dev::{DevCluster, DevConfig};
use cairn::meta::sqlite::SqliteStore;
use cairn::meta::{ContentRecord, DeleteOutcome, MetaError, MetaStore, VersionRecord};

/// Wraps a real store; while `down` is set every call fails as a database that is
/// unreachable would.
struct Flaky {
    inner: SqliteStore,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), MetaError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(MetaError::Unavailable("injected: database down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl MetaStore for Flaky {
    async fn put_version(&self, b: &str, n: &str, c: Option<&ContentRecord>) -> Result<VersionRecord, MetaError> {
        self.check()?;
        self.inner.put_version(b, n, c).await
    }
    async fn delete(&self, b: &str, n: &str) -> Result<DeleteOutcome, MetaError> {
        self.check()?;
        self.inner.delete(b, n).await
    }
    async fn latest(&self, b: &str, n: &str) -> Result<Option<VersionRecord>, MetaError> {
        self.check()?;
        self.inner.latest(b, n).await
    }
    async fn version(&self, b: &str, n: &str, v: u64) -> Result<Option<VersionRecord>, MetaError> {
        self.check()?;
        self.inner.version(b, n, v).await
    }
    async fn versions(&self, b: &str, n: &str, a: u64, l: usize) -> Result<Vec<VersionRecord>, MetaError> {
        self.check()?;
        self.inner.versions(b, n, a, l).await
    }
    async fn content(&self, h: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        self.check()?;
        self.inner.content(h).await
    }
    async fn set_placement(&self, h: &ContentHash, p: &Placement) -> Result<(), MetaError> {
        self.check()?;
        self.inner.set_placement(h, p).await
    }
    async fn list(&self, b: &str, p: &str, a: Option<&str>, l: usize) -> Result<Vec<VersionRecord>, MetaError> {
        self.check()?;
        self.inner.list(b, p, a, l).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_store_that_is_down_gives_503_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("meta.sqlite")).await.unwrap();
    let flaky = Arc::new(Flaky { inner, down: AtomicBool::new(false) });
    let mut config = DevConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.data_addrs = (1..=3).map(|i| format!("127.29.1.{i}:0").parse().unwrap()).collect();
    config.small_policy = "1+2".parse().unwrap();
    config.heartbeat_interval = Duration::from_millis(100);
    let cluster = DevCluster::start_with_meta(config, flaky.clone()).await.unwrap();
    let base = format!("http://{}", cluster.api_addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(common::wait_live(&http, &base, 3).await);

    assert_eq!(http.put(format!("{base}/objects/a")).body("before").send().await.unwrap().status(), 200);
    flaky.down.store(true, Ordering::SeqCst);
    for (method, path) in [("PUT", "/objects/b"), ("GET", "/objects/a"), ("GET", "/versions/a"), ("GET", "/objects/")] {
        let req = match method {
            "PUT" => http.put(format!("{base}{path}")).body("during"),
            _ => http.get(format!("{base}{path}")),
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 503, "{method} {path}");
        assert!(resp.text().await.unwrap().contains("database down"), "{method} {path} says why");
    }
    flaky.down.store(false, Ordering::SeqCst);
    // The PUT that failed left no version: b does not exist.
    assert_eq!(http.get(format!("{base}/objects/b")).send().await.unwrap().status(), 404);
    assert_eq!(http.get(format!("{base}/objects/a")).send().await.unwrap().text().await.unwrap(), "before");
    cluster.shutdown().await;
}
