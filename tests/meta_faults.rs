//! A metadata store that fails on command, under a whole in-process cluster: its
//! errors become 503 with a reason, never a panic, and a write whose version could
//! not be recorded leaves no version behind.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn::content::{ContentHash, Placement, Policy};
use cairn::dev::{DevCluster, DevConfig};
use cairn::meta::sqlite::SqliteStore;
use cairn::meta::{
    AccessKey, AppendOutcome, BucketDeleteOutcome, BucketRecord, BucketStore, ClusterStore, CompleteOutcome,
    ContentCounts, ContentRecord, ContentState, ContentStore, DeleteOutcome, FinishOutcome, KeyStore, MetaError,
    MultipartPart, MultipartRecord, MultipartStore, ObjectAttrs, Precondition, UploadAppend, UploadPart, UploadRecord,
    UploadStore, VersionRecord, VersionStore,
};

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
impl VersionStore for Flaky {
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

    async fn list(&self, b: &str, p: &str, a: Option<&str>, l: usize) -> Result<Vec<VersionRecord>, MetaError> {
        self.check()?;
        self.inner.list(b, p, a, l).await
    }

    async fn prune(&self, b: &str, n: &str, k: Option<u64>, t: Option<i64>) -> Result<u64, MetaError> {
        self.check()?;
        self.inner.prune(b, n, k, t).await
    }

    async fn names(&self, a: Option<(&str, &str)>, l: usize) -> Result<Vec<(String, String)>, MetaError> {
        self.check()?;
        self.inner.names(a, l).await
    }

    async fn put_object(
        &self,
        b: &str,
        n: &str,
        c: &ContentRecord,
        attrs: &ObjectAttrs,
        condition: Option<&Precondition>,
    ) -> Result<VersionRecord, MetaError> {
        self.check()?;
        self.inner.put_object(b, n, c, attrs, condition).await
    }

    async fn delete_version(&self, b: &str, n: &str, v: u64) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.delete_version(b, n, v).await
    }

    async fn list_versions(
        &self,
        b: &str,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        self.check()?;
        self.inner.list_versions(b, prefix, after, limit).await
    }
}

#[async_trait]
impl ContentStore for Flaky {
    async fn content(&self, h: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        self.check()?;
        self.inner.content(h).await
    }

    async fn content_state(&self, h: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        self.check()?;
        self.inner.content_state(h).await
    }

    async fn revive(&self, h: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        self.check()?;
        self.inner.revive(h).await
    }

    async fn doom_unreferenced(&self, now: i64, l: usize) -> Result<usize, MetaError> {
        self.check()?;
        self.inner.doom_unreferenced(now, l).await
    }

    async fn doomed_before(&self, c: i64, a: Option<&ContentHash>, l: usize) -> Result<Vec<ContentRecord>, MetaError> {
        self.check()?;
        self.inner.doomed_before(c, a, l).await
    }

    async fn begin_delete(&self, h: &ContentHash, c: i64) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.begin_delete(h, c).await
    }

    async fn claim_orphan(&self, h: &ContentHash, p: Policy) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.claim_orphan(h, p).await
    }

    async fn deleting(&self, a: Option<&ContentHash>, l: usize) -> Result<Vec<ContentRecord>, MetaError> {
        self.check()?;
        self.inner.deleting(a, l).await
    }

    async fn finish_delete(&self, h: &ContentHash) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.finish_delete(h).await
    }

    async fn content_counts(&self) -> Result<ContentCounts, MetaError> {
        self.check()?;
        self.inner.content_counts().await
    }
}

#[async_trait]
impl ClusterStore for Flaky {
    async fn set_placement(&self, h: &ContentHash, p: &Placement) -> Result<(), MetaError> {
        self.check()?;
        self.inner.set_placement(h, p).await
    }

    async fn contents_on(&self, s: &str, a: Option<&ContentHash>, l: usize) -> Result<Vec<ContentRecord>, MetaError> {
        self.check()?;
        self.inner.contents_on(s, a, l).await
    }

    async fn placement_servers(&self) -> Result<Vec<(String, u64)>, MetaError> {
        self.check()?;
        self.inner.placement_servers().await
    }

    async fn saw_servers(&self, s: &[String], now: i64) -> Result<(), MetaError> {
        self.check()?;
        self.inner.saw_servers(s, now).await
    }

    async fn server_sightings(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.check()?;
        self.inner.server_sightings().await
    }

    async fn forget_server(&self, s: &str) -> Result<(), MetaError> {
        self.check()?;
        self.inner.forget_server(s).await
    }

    async fn acquire_lease(&self, n: &str, h: &str, ttl: Duration) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.acquire_lease(n, h, ttl).await
    }

    async fn release_lease(&self, n: &str, h: &str) -> Result<(), MetaError> {
        self.check()?;
        self.inner.release_lease(n, h).await
    }

    async fn lease_holder(&self, n: &str) -> Result<Option<String>, MetaError> {
        self.check()?;
        self.inner.lease_holder(n).await
    }

    async fn worker_cursor(&self, n: &str) -> Result<Option<String>, MetaError> {
        self.check()?;
        self.inner.worker_cursor(n).await
    }

    async fn set_worker_cursor(&self, n: &str, v: Option<&str>) -> Result<(), MetaError> {
        self.check()?;
        self.inner.set_worker_cursor(n, v).await
    }
}

#[async_trait]
impl UploadStore for Flaky {
    async fn create_upload(&self, u: &UploadRecord) -> Result<(), MetaError> {
        self.check()?;
        self.inner.create_upload(u).await
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        self.check()?;
        self.inner.upload(id).await
    }

    async fn append_upload(&self, id: &str, a: UploadAppend<'_>) -> Result<AppendOutcome, MetaError> {
        self.check()?;
        self.inner.append_upload(id, a).await
    }

    async fn upload_parts(&self, id: &str, from: u64, limit: usize) -> Result<Vec<UploadPart>, MetaError> {
        self.check()?;
        self.inner.upload_parts(id, from, limit).await
    }

    async fn finish_upload(&self, id: &str, c: &ContentRecord) -> Result<FinishOutcome, MetaError> {
        self.check()?;
        self.inner.finish_upload(id, c).await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.delete_upload(id).await
    }

    async fn remove_expired_uploads(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.check()?;
        self.inner.remove_expired_uploads(now_ms, limit).await
    }
}

#[async_trait]
impl BucketStore for Flaky {
    async fn create_bucket(&self, name: &str, created_ms: i64) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.create_bucket(name, created_ms).await
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, MetaError> {
        self.check()?;
        self.inner.bucket(name).await
    }

    async fn buckets(&self) -> Result<Vec<BucketRecord>, MetaError> {
        self.check()?;
        self.inner.buckets().await
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeleteOutcome, MetaError> {
        self.check()?;
        self.inner.delete_bucket(name).await
    }
}

#[async_trait]
impl MultipartStore for Flaky {
    async fn create_multipart(&self, upload: &MultipartRecord) -> Result<(), MetaError> {
        self.check()?;
        self.inner.create_multipart(upload).await
    }

    async fn multipart(&self, id: &str) -> Result<Option<MultipartRecord>, MetaError> {
        self.check()?;
        self.inner.multipart(id).await
    }

    async fn put_part(&self, id: &str, n: u32, c: &ContentRecord, etag: &str, at: i64) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.put_part(id, n, c, etag, at).await
    }

    async fn parts(&self, id: &str, after: u32, limit: usize) -> Result<Vec<MultipartPart>, MetaError> {
        self.check()?;
        self.inner.parts(id, after, limit).await
    }

    async fn multipart_uploads(
        &self,
        b: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartRecord>, MetaError> {
        self.check()?;
        self.inner.multipart_uploads(b, prefix, after, limit).await
    }

    async fn complete_multipart(
        &self,
        id: &str,
        c: &ContentRecord,
        attrs: &ObjectAttrs,
    ) -> Result<CompleteOutcome, MetaError> {
        self.check()?;
        self.inner.complete_multipart(id, c, attrs).await
    }

    async fn abort_multipart(&self, id: &str) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.abort_multipart(id).await
    }

    async fn remove_stale_multipart(&self, cutoff_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.check()?;
        self.inner.remove_stale_multipart(cutoff_ms, limit).await
    }
}

#[async_trait]
impl KeyStore for Flaky {
    async fn create_key(&self, key: &AccessKey) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.create_key(key).await
    }

    async fn key(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError> {
        self.check()?;
        self.inner.key(access_key).await
    }

    async fn keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        self.check()?;
        self.inner.keys().await
    }

    async fn delete_key(&self, access_key: &str) -> Result<bool, MetaError> {
        self.check()?;
        self.inner.delete_key(access_key).await
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
