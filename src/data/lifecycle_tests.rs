//! Tests of the data server's lifecycle routes over HTTP: purge, the listing, the
//! scrubber and its findings, each against one data server on a loopback port.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::store::StoreConfig;
use super::{serve, DataConfig, DEFAULT_GARBAGE_TTL};
use crate::bus::Bus;
use crate::content::ContentHash;

struct Server {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn put(&self, hash: &ContentHash, shard: u32, body: Vec<u8>) {
        let r = self.http.put(format!("{}/objects/{hash}.{shard}", self.base)).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }

    async fn status(&self, hash: &ContentHash, shard: u32) -> StatusCode {
        self.http.get(format!("{}/objects/{hash}.{shard}", self.base)).send().await.unwrap().status()
    }

    async fn json(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    async fn post(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// Starts a pass and waits (at most 20 s) until pass `n` has finished.
    async fn scrub_pass(&self, n: u64) -> Value {
        let (status, _) = self.post("/scrub").await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.json("/scrub").await;
            if s["pass"].as_u64() >= Some(n) && s["running"] == false {
                return s;
            }
            assert!(Instant::now() < deadline, "scrub pass {n} did not finish: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running).await.expect("data server stops").unwrap();
    }
}

/// A data server on `root` (small shards up to 1 KiB in volumes), scrubbing only on
/// request, after `adjust`.
async fn start_on(root: &Path, adjust: impl FnOnce(&mut DataConfig)) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let broker = crate::bus::memory::MemoryBroker::new();
    let bus = Bus::new(Arc::new(broker.connect()), stop.clone()).await.unwrap();
    let mut config = DataConfig {
        advertise: addr.to_string(),
        root: root.to_path_buf(),
        heartbeat_interval: Duration::from_secs(60),
        temp_ttl: Duration::from_secs(3600),
        http: crate::server::HttpTimeouts::default(),
        store: StoreConfig { small_shard_max: 1024, ..StoreConfig::default() },
        compact_interval: Duration::from_secs(3600),
        scrub_rate: 0,
        scrub_interval: Duration::ZERO,
        garbage_ttl: DEFAULT_GARBAGE_TTL,
        cluster_secret: None,
    };
    adjust(&mut config);
    let token = stop.clone();
    let running = tokio::spawn(async move {
        serve(listener, config, bus, token).await.expect("data server serves");
    });
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    Server { base: format!("http://{addr}"), http, stop, running }
}

fn hash(i: usize) -> ContentHash {
    ContentHash::of(format!("content {i}").as_bytes())
}

fn file_path(root: &Path, h: &ContentHash, shard: u32) -> PathBuf {
    let hex = h.to_hex();
    root.join("objects").join(&hex[0..2]).join(&hex[2..4]).join(format!("{hex}.{shard}"))
}

fn volume_files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vol"))
        .collect();
    v.sort();
    v
}

fn volume_bytes(root: &Path) -> u64 {
    volume_files(root).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

fn garbage(root: &Path) -> usize {
    std::fs::read_dir(root.join("garbage")).unwrap().count()
}

/// Flips one byte of the first occurrence of `needle` in a volume file.
fn rot_record(root: &Path, needle: &[u8]) {
    for path in volume_files(root) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + needle.len() / 2] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("record payload not found in any volume");
}

/// Flips one byte of a shard file's data (past its 32-byte header).
fn rot_file(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[32 + at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_scrub_pass_finds_a_corrupt_file_and_a_corrupt_record_nobody_reads() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_on(dir.path(), |_| {}).await;
    for i in 0..10 {
        t.put(&hash(i), 0, vec![i as u8; 300]).await; // records
        t.put(&hash(100 + i), 1, vec![i as u8; 200_000]).await; // files, four blocks
    }
    let (bad_record, bad_file) = (hash(1000), hash(1001));
    let payload: Vec<u8> = b"the record that rots ".iter().copied().cycle().take(600).collect();
    t.put(&bad_record, 2, payload.clone()).await;
    t.put(&bad_file, 3, vec![7u8; 150_000]).await;
    rot_record(dir.path(), &payload);
    rot_file(&file_path(dir.path(), &bad_file, 3), 140_000);

    let s = t.scrub_pass(1).await;
    assert_eq!(s["corrupt_found"], 2, "{s}");
    assert_eq!(s["shards_done"], 20, "the good shards are verified: {s}");
    assert!(s["bytes_done"].as_u64().unwrap() >= 10 * 200_000 + 10 * 300, "{s}");
    assert!(s["last_pass_finished_ms"].as_i64().is_some(), "{s}");
    assert_eq!(t.status(&bad_record, 2).await, StatusCode::NOT_FOUND, "quarantined");
    assert_eq!(t.status(&bad_file, 3).await, StatusCode::NOT_FOUND, "quarantined");
    assert_eq!(t.status(&hash(3), 0).await, StatusCode::OK);
    assert_eq!(garbage(dir.path()), 2);
    let f = t.json("/scrub/findings").await;
    let found: Vec<(String, u64, u64)> = f["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["hash"].as_str().unwrap().to_string(), x["shard"].as_u64().unwrap(), x["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(found.len(), 2, "{f}");
    assert!(found.contains(&(bad_record.to_hex(), 2, 1)) || found.contains(&(bad_record.to_hex(), 2, 2)), "{f}");
    assert!(found.iter().any(|(h, s, _)| *h == bad_file.to_hex() && *s == 3), "{f}");
    assert!(uuid::Uuid::parse_str(f["epoch"].as_str().unwrap()).is_ok());
    let later = t.json("/scrub/findings?after=1").await;
    assert_eq!(later["findings"].as_array().unwrap().len(), 1, "after=SEQ skips what was seen");
    // A second pass finds nothing new.
    let s = t.scrub_pass(2).await;
    assert_eq!((s["corrupt_found"].as_u64(), s["shards_done"].as_u64()), (Some(0), Some(20)), "{s}");
    t.shutdown().await;
}

#[tokio::test]
async fn the_scrubber_keeps_to_its_rate_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 256 * 1024;
    let t = start_on(dir.path(), |c| c.scrub_rate = rate).await;
    for i in 0..24 {
        t.put(&hash(i), 0, vec![i as u8; 64 * 1024]).await;
    }
    let started = Instant::now();
    t.post("/scrub").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let s = t.json("/scrub").await;
    let elapsed = started.elapsed().as_secs_f64();
    let done = s["bytes_done"].as_u64().unwrap() as f64;
    // A second of burst, the elapsed time at the rate, and one step's batch.
    let most = rate as f64 * (elapsed + 1.0) + 64.0 * 1024.0;
    assert!(done <= most, "{done} bytes in {elapsed:.2} s at {rate} B/s: {s}");
    assert!(done >= rate as f64 * 0.5, "it progresses: {s}");
    assert_eq!(s["running"], true);

    let (status, _) = t.post("/scrub/pause").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.json("/scrub").await["state"] != "paused" {
        assert!(Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_pause = t.json("/scrub").await["bytes_done"].clone();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = t.json("/scrub").await;
    assert_eq!(s["bytes_done"], at_pause, "no progress while paused: {s}");
    assert_eq!(s["state"], "paused");
    t.post("/scrub/resume").await;
    // 1.5 MiB at 256 KiB/s: about six seconds in all.
    let s = t.scrub_pass(1).await;
    assert_eq!(s["shards_done"], 24, "{s}");
    assert!(started.elapsed() >= Duration::from_secs(4), "the whole pass is paced: {:?}", started.elapsed());
    t.shutdown().await;
}

#[tokio::test]
async fn purge_frees_a_file_and_a_record_and_compaction_shrinks_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_on(dir.path(), |_| {}).await;
    let (file, record) = (hash(1), hash(2));
    t.put(&file, 0, vec![1u8; 5000]).await;
    t.put(&record, 0, vec![2u8; 500]).await;
    let path = file_path(dir.path(), &file, 0);
    assert!(path.exists());
    for h in [&file, &record] {
        let url = format!("{}/objects/{h}.0?purge=1", t.base);
        assert_eq!(t.http.delete(&url).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_eq!(t.http.delete(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(t.status(h, 0).await, StatusCode::NOT_FOUND);
    }
    assert!(!path.exists(), "the file is unlinked");
    assert_eq!(garbage(dir.path()), 0, "a purge keeps nothing aside");
    let bad = format!("{}/objects/{file}.0?purge=maybe", t.base);
    assert_eq!(t.http.delete(&bad).send().await.unwrap().status(), StatusCode::BAD_REQUEST);

    // Many records in one request; then compaction gives their space back.
    let n = 1500;
    for i in 0..n {
        t.put(&hash(10 + i), 1, vec![i as u8; 1000]).await;
    }
    let before = volume_bytes(dir.path());
    assert!(before > n as u64 * 1000, "{before}");
    let mut names: Vec<Value> = (0..n).map(|i| serde_json::json!({"hash": hash(10 + i), "shard": 1})).collect();
    names.push(serde_json::json!({"hash": hash(99_999), "shard": 0}));
    for chunk in names.chunks(1000) {
        let r = t
            .http
            .post(format!("{}/purge", t.base))
            .json(&serde_json::json!({ "shards": chunk }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        let want = if chunk.len() == 1000 {
            serde_json::json!({"purged": 1000, "missing": 0})
        } else {
            serde_json::json!({"purged": n - 1000, "missing": 1})
        };
        assert_eq!(v, want);
    }
    let too_many: Vec<Value> = (0..1001).map(|i| serde_json::json!({"hash": hash(i), "shard": 0})).collect();
    let r =
        t.http.post(format!("{}/purge", t.base)).json(&serde_json::json!({ "shards": too_many })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(t.status(&hash(10), 1).await, StatusCode::NOT_FOUND);
    let (status, done) = t.post("/compact").await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let after = volume_bytes(dir.path());
    assert!(after < before / 4, "compaction gave the purged records' space back: {before} -> {after} ({done})");
    t.shutdown().await;
}

#[tokio::test]
async fn the_listing_pages_through_both_homes_in_order_with_ages() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_on(dir.path(), |_| {}).await;
    let mut want = Vec::new();
    for i in 0..40 {
        let (shard, len) = (i as u32 % 3, if i % 2 == 0 { 100 } else { 3000 });
        t.put(&hash(i), shard, vec![i as u8; len]).await;
        want.push((hash(i).to_hex(), shard as u64, len as u64));
    }
    want.sort();
    // One file an hour old.
    let old = hash(1);
    let old_path = file_path(dir.path(), &old, 1);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&old_path).unwrap().set_modified(hour_ago).unwrap();

    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = t.json(&format!("/shards?limit=7&after={after}")).await;
        pages += 1;
        for s in page["shards"].as_array().unwrap() {
            let age = s["age_s"].as_u64().unwrap();
            let key =
                (s["hash"].as_str().unwrap().to_string(), s["shard"].as_u64().unwrap(), s["len"].as_u64().unwrap());
            if key.0 == old.to_hex() {
                assert!((3599..3700).contains(&age), "the file's mtime is its age: {s}");
            } else {
                assert!(age < 120, "just written: {s}");
            }
            assert!(s["policy"].is_null(), "{s}");
            seen.push(key);
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
        assert!(pages < 20, "the listing does not end");
    }
    assert_eq!(seen, want, "every shard once, in (hash, shard) order");
    assert_eq!(pages, 6, "40 shards in pages of 7");
    // A dedup commit refreshes the age.
    t.put(&old, 1, vec![1u8; 3000]).await;
    let page = t
        .json(&format!("/shards?limit=1&after={}", {
            let prev = want.iter().rev().find(|w| w.0 < old.to_hex()).map(|w| format!("{}.{}", w.0, w.1));
            prev.unwrap_or_default()
        }))
        .await;
    assert_eq!(page["shards"][0]["hash"], old.to_hex());
    assert!(page["shards"][0]["age_s"].as_u64().unwrap() < 120, "refreshed: {page}");
    for bad in ["/shards?limit=0", "/shards?limit=1001", "/shards?after=nothex.1"] {
        let r = t.http.get(format!("{}{bad}", t.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    t.shutdown().await;
}

#[tokio::test]
async fn findings_and_the_last_pass_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_on(dir.path(), |_| {}).await;
    let (asked, rotten) = (hash(1), hash(2));
    t.put(&asked, 0, vec![1u8; 200]).await;
    t.put(&rotten, 4, vec![2u8; 5000]).await;
    // An API server's repair moves one aside; the scrubber finds the other.
    let r = t.http.delete(format!("{}/objects/{asked}.0", t.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    rot_file(&file_path(dir.path(), &rotten, 4), 10);
    let s = t.scrub_pass(1).await;
    assert_eq!(s["corrupt_found"], 1);
    let before = t.json("/scrub/findings").await;
    assert_eq!(before["findings"].as_array().unwrap().len(), 2, "{before}");
    let finished = s["last_pass_finished_ms"].clone();
    t.shutdown().await;

    let t = start_on(dir.path(), |_| {}).await;
    let after = t.json("/scrub/findings").await;
    assert_ne!(after["epoch"], before["epoch"], "a new epoch per start");
    let found: Vec<(String, u64, u64)> = after["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["hash"].as_str().unwrap().to_string(), x["shard"].as_u64().unwrap(), x["seq"].as_u64().unwrap()))
        .collect();
    // Re-seeded from garbage/ in the order of the times their names carry (which
    // `store::garbage::tests` checks), numbered as listed: which came first here is up to
    // this VM's wall clock, which has been seen to step.
    let mut seeded: Vec<(String, u64)> = found.iter().map(|(h, s, _)| (h.clone(), *s)).collect();
    seeded.sort();
    let mut expected = vec![(asked.to_hex(), 0), (rotten.to_hex(), 4)];
    expected.sort();
    assert_eq!(seeded, expected, "both re-seeded from garbage/");
    assert_eq!(found.iter().map(|f| f.2).collect::<Vec<_>>(), vec![1, 2], "numbered in the order listed");
    let s = t.json("/scrub").await;
    assert_eq!((s["pass"].as_u64(), &s["last_pass_finished_ms"]), (Some(1), &finished), "the pass state is kept: {s}");
    t.shutdown().await;
}

#[tokio::test]
async fn old_garbage_is_removed_by_the_cleaning_loop() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_on(dir.path(), |c| {
        c.temp_ttl = Duration::from_secs(2);
        c.garbage_ttl = Duration::from_millis(200);
    })
    .await;
    t.put(&hash(1), 0, vec![1u8; 2000]).await;
    t.http.delete(format!("{}/objects/{}.0", t.base, hash(1))).send().await.unwrap();
    assert_eq!(garbage(dir.path()), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while garbage(dir.path()) > 0 {
        assert!(Instant::now() < deadline, "old garbage is never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.shutdown().await;
}

#[tokio::test]
async fn a_restarted_server_resumes_its_pass_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 256 * 1024;
    let t = start_on(dir.path(), |c| c.scrub_rate = rate).await;
    for i in 0..24 {
        t.put(&hash(i), 0, vec![i as u8; 64 * 1024]).await;
    }
    t.post("/scrub").await;
    // Past the first state write (every 2 s), well before the end (about 6 s).
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let mid = t.json("/scrub").await;
    assert_eq!(mid["running"], true, "{mid}");
    t.shutdown().await;
    let saved: Value = serde_json::from_slice(&std::fs::read(dir.path().join("scrub.json")).unwrap()).unwrap();
    assert_eq!(saved["running"], true, "{saved}");
    assert!(saved["cursor"].is_string() && saved["shards_done"].as_u64() > Some(0), "{saved}");

    // No request and no interval: only the saved pass can run, and it finishes
    // with every shard counted once.
    let t = start_on(dir.path(), |c| c.scrub_rate = 0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = t.json("/scrub").await;
        if s["running"] == false {
            break s;
        }
        assert!(Instant::now() < deadline, "the resumed pass never finishes: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s["pass"], 1, "resumed, not a new pass: {s}");
    assert_eq!(s["shards_done"], 24, "{s}");
    assert_eq!(s["bytes_done"], 24 * 64 * 1024, "{s}");
    assert!(s["last_pass_finished_ms"].is_i64(), "{s}");
    t.shutdown().await;
}

/// Waits (at most 10 s) until the worker called `name`, as `GET /workers` lists it,
/// passes `check`; returns that status.
async fn worker_until(t: &Server, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = t.json("/workers").await;
        let status = all.as_array().unwrap().iter().find(|w| w["name"] == name).cloned().unwrap_or(Value::Null);
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{name}: never {what}: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_temp_cleaner_and_the_compactor_are_workers_an_operator_can_trigger_and_pause() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_on(dir.path(), |_| {}).await;
    let names: Vec<Value> = t.json("/workers").await.as_array().unwrap().iter().map(|w| w["name"].clone()).collect();
    assert_eq!(names, ["scrub", "temp-cleaner", "compactor"], "every background job is a worker");

    // A stale temp shard (two hours untouched, the TTL is one) and a fresh one: the
    // period is 15 minutes, so only a trigger removes the stale one now.
    let (stale, fresh) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for id in [stale, fresh] {
        let r = t.http.post(format!("{}/temp/{id}", t.base)).body("abc").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let stale_path = dir.path().join("temp").join(stale.to_string());
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options().write(true).open(&stale_path).unwrap().set_modified(two_hours_ago).unwrap();
    worker_until(&t, "temp-cleaner", "idle after its first step", |w| w["state"] == "idle" && w["steps"] == 1).await;
    assert!(stale_path.exists(), "nothing is cleaned before the first period");
    let (status, answer) = t.post("/workers/temp-cleaner").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["name"], "temp-cleaner", "{answer}");
    let w = worker_until(&t, "temp-cleaner", "removes the stale temp", |w| w["info"]["temps_removed"] == 1).await;
    assert_eq!(w["errors"], 0, "{w}");
    assert!(!stale_path.exists());
    assert!(dir.path().join("temp").join(fresh.to_string()).exists(), "a fresh temp shard stays");

    // The compactor runs a round on a trigger, and none while paused.
    worker_until(&t, "compactor", "idle after its first step", |w| w["state"] == "idle").await;
    let (status, _) = t.post("/workers/compactor").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let w = worker_until(&t, "compactor", "runs a round", |w| w["steps"] == 2 && w["state"] == "idle").await;
    assert_eq!(w["info"]["volumes_compacted"], 0, "nothing is due on a fresh store: {w}");
    let (status, _) = t.post("/workers/compactor/pause").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    worker_until(&t, "compactor", "paused", |w| w["state"] == "paused").await;
    t.post("/workers/compactor").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(worker_until(&t, "compactor", "paused", |w| w["state"] == "paused").await["steps"], 2);
    let (status, _) = t.post("/workers/compactor/resume").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    worker_until(&t, "compactor", "resumed", |w| w["state"] == "idle").await;

    let (status, _) = t.post("/workers/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.shutdown().await;
}
