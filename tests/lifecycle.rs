//! The lifecycle workers end to end on an in-process cluster: deleted data gives
//! its space back, garbage collection racing dedup loses no version, the scrubber
//! finds and rebuilds a corrupt shard nobody reads, a data server gone for good is
//! re-protected without any read, retention keeps the newest versions, and the
//! operator's view (`/admin/status`, `cairn admin`) shows it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::content::ContentHash;
use cairn::dev::DevConfig;
use common::{eventually, TestCluster};
use serde_json::Value;

/// Lifecycle settings that make every worker act within a fraction of a second.
fn fast_lifecycle(config: &mut DevConfig) {
    let m = &mut config.maintenance;
    m.tombstone_ttl = Some(Duration::ZERO);
    m.retention_interval = Duration::from_millis(100);
    m.gc_interval = Duration::from_millis(100);
    m.gc_grace = Duration::ZERO;
    m.orphan_interval = Duration::from_secs(3600);
    m.lease_ttl = Duration::from_secs(5);
}

/// Bytes of every shard file and volume file under the data servers' roots.
fn stored_bytes(t: &TestCluster) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    t.shard_files().iter().map(|p| size(p)).sum::<u64>() + t.volume_files().iter().map(|p| size(p)).sum::<u64>()
}

async fn admin(t: &TestCluster, path: &str) -> Value {
    let resp = t.http.post(t.url(path)).send().await.expect("admin request sent");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("admin JSON")
}

async fn status(t: &TestCluster) -> Value {
    t.http.get(t.url("/admin/status")).send().await.unwrap().json().await.unwrap()
}

async fn compact_all(t: &TestCluster) {
    for addr in &t.cluster.data_addrs {
        let resp = t.http.post(format!("http://{addr}/compact")).send().await.unwrap();
        assert!(resp.status().is_success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_objects_give_their_disk_space_back() {
    let t = common::start_custom(6, |config| {
        fast_lifecycle(config);
        config.volume_size = 1 << 20;
        config.compact_interval = Duration::from_secs(3600); // compacted by hand below
    })
    .await;
    // Small objects become volume records (three copies), large ones shard files (4+2).
    for i in 0..64 {
        assert_eq!(t.put(&format!("small/{i}"), common::pattern(16 * 1024, i)).await.status(), 200);
    }
    for i in 0..4 {
        assert_eq!(t.put(&format!("large/{i}"), common::pattern(300 * 1024, 1000 + i)).await.status(), 200);
    }
    eventually(Duration::from_secs(10), "every shard written", || async { t.shard_count().await == 64 * 3 + 4 * 6 })
        .await;
    let before = stored_bytes(&t);
    assert!(before > 64 * 16 * 1024 * 3, "{before} bytes stored");

    for i in 0..64 {
        assert_eq!(t.http.delete(t.url(&format!("/objects/small/{i}"))).send().await.unwrap().status(), 200);
    }
    for i in 0..4 {
        assert_eq!(t.http.delete(t.url(&format!("/objects/large/{i}"))).send().await.unwrap().status(), 200);
    }
    // Retention removes the deleted names (tombstone TTL 0), the collector their
    // content; every shard goes.
    eventually(Duration::from_secs(30), "every shard collected", || async {
        admin(&t, "/admin/gc").await;
        t.shard_count().await == 0
    })
    .await;
    assert!(t.shard_files().is_empty(), "shard files left: {:?}", t.shard_files());
    // The volumes' dead records go at compaction.
    eventually(Duration::from_secs(20), "volumes compacted", || async {
        compact_all(&t).await;
        stored_bytes(&t) < before / 20
    })
    .await;
    let after = stored_bytes(&t);
    eprintln!("stored bytes: {before} before the deletes, {after} after GC and compaction");
    let counts = &status(&t).await["contents"];
    assert_eq!(
        (counts["live"].as_u64(), counts["doomed"].as_u64(), counts["deleting"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(t.get("small/1").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_dedup_puts_and_deletes_loses_no_version() {
    let t = Arc::new(
        common::start_custom(6, |config| {
            fast_lifecycle(config);
            config.maintenance.gc_interval = Duration::from_millis(10);
            config.maintenance.retention_interval = Duration::from_millis(10);
            // Content nothing points at is deleted 30 ms after it is noticed, so
            // PUTs of the same bytes race its deletion all the time.
            config.maintenance.gc_grace = Duration::from_millis(30);
            config.maintenance.keep_versions = Some(1);
        })
        .await,
    );
    // A few contents shared by every client: small ones (volume records, whole in
    // memory) and one streamed large one.
    // Eight small ones and two streamed large ones; more contents than names,
    // and one version kept per name, so contents lose their last version often.
    let payloads: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..10u64).map(|i| common::pattern(if i < 8 { 1024 * (i as usize + 1) } else { 100 * 1024 }, i)).collect(),
    );
    let hashes: Vec<ContentHash> = payloads.iter().map(|p| ContentHash::of(p)).collect();
    let stop = Instant::now() + Duration::from_secs(30);
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..6u64 {
        let (t, payloads, acked, refused, failures) =
            (t.clone(), payloads.clone(), acked.clone(), refused.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut n = c;
            while Instant::now() < stop {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let name = format!("race/{}", (n >> 33) % 4);
                let which = ((n >> 40) % payloads.len() as u64) as usize;
                match (n >> 50) % 4 {
                    0 => {
                        let _ = t.http.delete(t.url(&format!("/objects/{name}"))).send().await;
                    }
                    k => {
                        let mut req = t.http.put(t.url(&format!("/objects/{name}"))).body(payloads[which].clone());
                        if k == 1 {
                            // The digest path: dedup decided before the body is read.
                            use base64::Engine;
                            let digest = base64::engine::general_purpose::STANDARD
                                .encode(ContentHash::of(&payloads[which]).as_bytes());
                            req = req.header("Digest", format!("SHA-256={digest}"));
                        }
                        let resp = req.send().await.expect("PUT sent");
                        match resp.status().as_u16() {
                            200 => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            503 => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            s => {
                                let text = resp.text().await.unwrap_or_default();
                                failures.lock().unwrap().push(format!("PUT {name}: {s} {text}"));
                            }
                        }
                    }
                }
                // The newest version still listed must read back as its content;
                // a read that fails counts as a loss if the version is still
                // listed afterwards (retention never brings a version back).
                if let Some(listed_version) = newest_live_version(&t, &name).await {
                    let (version, want) = (listed_version.version, listed_version.hash.unwrap());
                    let resp = t.http.get(t.url(&format!("/objects/{name}?version={version}"))).send().await.unwrap();
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap_or_default();
                    let good = status == 200 && ContentHash::of(&body) == want;
                    if !good && listed(&t, &name, &listed_version).await {
                        failures.lock().unwrap().push(format!("{name} v{version}: {status}, {} bytes", body.len()));
                    }
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    // Let the collector finish whatever it was doing (the step under way, and one
    // begun after the race), then check every version that exists, old ones
    // included: each must read back as its content.
    let gc_steps = || async {
        let s = status(&t).await;
        s["workers"].as_array().unwrap().iter().find(|w| w["name"] == "gc").unwrap()["steps"].as_u64().unwrap()
    };
    let steps_at_the_end = gc_steps().await;
    eventually(Duration::from_secs(30), "two more collector steps", || async {
        gc_steps().await >= steps_at_the_end + 2
    })
    .await;
    let mut checked = 0;
    for i in 0..4 {
        let name = format!("race/{i}");
        for listed_version in versions_of(&t, &name).await {
            let (version, Some(want)) = (listed_version.version, listed_version.hash) else { continue }; // a tombstone
            let resp = t.http.get(t.url(&format!("/objects/{name}?version={version}"))).send().await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            assert!(hashes.contains(&want));
            if status != 200 || ContentHash::of(&body) != want {
                failures.lock().unwrap().push(format!("{name} v{version}: {status}, {} bytes", body.len()));
            }
            checked += 1;
        }
    }
    let gc = status(&t).await["workers"].as_array().unwrap().iter().find(|w| w["name"] == "gc").unwrap().clone();
    eprintln!(
        "30 s of races: {} PUTs acknowledged, {} refused with 503, {checked} versions checked at the end; gc: {}",
        acked.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        gc["info"]["counts"]
    );
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} lost or wrong reads: {:#?}", failures.len(), &failures[..failures.len().min(20)]);
    assert!(acked.load(Ordering::Relaxed) > 100, "the race ran");
    let deleted = gc["info"]["counts"]["deleted"].as_u64().unwrap_or(0);
    let revived = gc["info"]["counts"]["revived"].as_u64().unwrap_or(0);
    assert!(deleted > 10, "the collector deleted content during the race ({deleted})");
    eprintln!("collector: {deleted} contents deleted, {revived} revived before deletion");
}

/// One version of a name as `/versions` lists it. Names vanish and come back
/// (tombstone TTL 0), so a version number alone does not identify a version; with
/// its creation time it does.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    version: u64,
    created: i64,
    hash: Option<ContentHash>,
}

async fn versions_of(t: &TestCluster, name: &str) -> Vec<Listed> {
    let text = t.http.get(t.url(&format!("/versions/{name}"))).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| Listed {
            version: v["version"].as_u64().unwrap(),
            created: v["created"].as_i64().unwrap(),
            hash: v["hash"].as_str().map(|h| h.parse().unwrap()),
        })
        .collect()
}

async fn newest_live_version(t: &TestCluster, name: &str) -> Option<Listed> {
    versions_of(t, name).await.into_iter().rev().find(|l| l.hash.is_some())
}

async fn listed(t: &TestCluster, name: &str, version: &Listed) -> bool {
    versions_of(t, name).await.contains(version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shard_nobody_reads_is_found_by_the_scrubber_and_rebuilt() {
    let t = common::start_files("4+2", 6).await;
    let body = common::pattern(256 * 1024, 7);
    assert_eq!(t.put("scrub/me", body.clone()).await.status(), 200);
    t.wait_shard_files(6).await;
    // Damage one shard file in the middle of its data, where only a full read (or
    // a scrub) would see it.
    let victim = t.shard_files().into_iter().next().unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let root = t.cluster.data_roots.iter().find(|r| victim.starts_with(r)).unwrap().clone();

    let started = admin(&t, "/admin/scrub").await;
    assert_eq!(started["data_servers"].as_array().unwrap().len(), 6);
    // The scrubber sets it aside (into garbage/), the healer rebuilds it: the
    // file is back, whole, and nobody read the object.
    eventually(Duration::from_secs(30), "the corrupt shard set aside and rebuilt", || async {
        let quarantined = !common::files_under(&root.join("garbage")).is_empty();
        let rebuilt = std::fs::read(&victim).is_ok_and(|now| now != bytes);
        quarantined && rebuilt && t.shard_files().len() == 6
    })
    .await;
    let s = status(&t).await;
    let heal = s["workers"].as_array().unwrap().iter().find(|w| w["name"] == "heal").unwrap();
    assert!(heal["info"]["counts"]["repairs_queued"].as_u64().unwrap() >= 1, "{heal}");
    // Every shard verifies now: a GET with a degraded read would also pass, so ask
    // each data server for its shard directly.
    let hash = ContentHash::of(&body);
    for addr in &t.cluster.data_addrs {
        for shard in 0..6 {
            let resp = t.http.get(format!("http://{addr}/objects/{hash}.{shard}")).send().await.unwrap();
            if resp.status() == 200 {
                resp.bytes().await.expect("a held shard reads whole and verified");
            }
        }
    }
    assert_eq!(t.get("scrub/me").await.bytes().await.unwrap(), body);
}

/// Distinct shard indices the bus finds for `name` now, and on which servers.
async fn located(t: &TestCluster, name: &str) -> BTreeMap<String, String> {
    let v: Value = t.http.get(t.url(&format!("/locate/{name}"))).send().await.unwrap().json().await.unwrap();
    v["shards"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_server_gone_for_good_is_reprotected_without_any_read() {
    let t = common::start_custom(6, |config| {
        config.maintenance.reprotect_after = Duration::from_secs(1);
        config.maintenance.reprotect_rate = 0;
    })
    .await;
    let mut names = HashMap::new();
    for i in 0..8u64 {
        let size = if i % 2 == 0 { 10 * 1024 } else { 200 * 1024 };
        let name = format!("keep/{i}");
        assert_eq!(t.put(&name, common::pattern(size, 50 + i)).await.status(), 200);
        names.insert(name, if i % 2 == 0 { 3 } else { 6 });
    }
    eventually(Duration::from_secs(10), "every shard written", || async { t.shard_count().await == 4 * 3 + 4 * 6 })
        .await;
    let gone = t.cluster.data_addrs[0].to_string();
    t.cluster.stop_data_server(0);
    t.wait_live(5).await;
    // No client reads: the healer notices the silence (1 s) and rebuilds.
    eventually(Duration::from_secs(60), "every object fully protected on live servers", || async {
        for (name, shards) in &names {
            let found = located(&t, name).await;
            if found.len() != *shards || found.values().any(|addr| *addr == gone) {
                return false;
            }
        }
        true
    })
    .await;
    let s = status(&t).await;
    let heal = s["workers"].as_array().unwrap().iter().find(|w| w["name"] == "heal").unwrap();
    // Every large object had a shard on it (4+2 over six servers).
    assert!(heal["info"]["counts"]["reprotected"].as_u64().unwrap() >= 4, "{heal}");
    for name in names.keys() {
        assert_eq!(t.get(name).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_versions_and_frees_the_rest() {
    let t = common::start_custom(6, |config| {
        fast_lifecycle(config);
        config.maintenance.keep_versions = Some(2);
    })
    .await;
    for v in 0..5u64 {
        assert_eq!(t.put("kept", common::pattern(8 * 1024, v)).await.status(), 200);
    }
    eventually(Duration::from_secs(20), "old versions pruned and their content collected", || async {
        let text = t.http.get(t.url("/versions/kept")).send().await.unwrap().text().await.unwrap();
        let versions: Vec<u64> =
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?["version"].as_u64()).collect();
        versions == vec![4, 5] && t.shard_count().await == 2 * 3
    })
    .await;
    assert_eq!(t.get("kept").await.bytes().await.unwrap(), common::pattern(8 * 1024, 4));
    assert_eq!(t.http.get(t.url("/objects/kept?version=1")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_status_and_the_cli_show_servers_and_workers() {
    let t = common::start("4+2", 6).await;
    assert_eq!(t.put("seen", "x").await.status(), 200);
    let s = status(&t).await;
    let servers = s["data_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 6);
    assert!(servers.iter().all(|d| d["live"] == true && d["free_bytes"].as_u64().unwrap() > 0));
    let workers: Vec<&str> = s["workers"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(workers, ["retention", "gc", "heal", "uploads", "repair"]);
    assert_eq!(s["contents"]["live"], 1);

    let base = t.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["admin", "--endpoint", &base, "status"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cairn admin status failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("DATA SERVER") && text.contains("WORKER"), "{text}");
    for addr in &t.cluster.data_addrs {
        assert!(text.contains(&addr.to_string()), "{addr} missing from:\n{text}");
    }
    assert!(text.contains("gc") && text.contains("heal") && text.contains("retention"), "{text}");

    // Pause and resume through the CLI.
    let base = t.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["admin", "--endpoint", &base, "pause", "gc"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    eventually(Duration::from_secs(5), "gc paused", || async {
        status(&t).await["workers"].as_array().unwrap().iter().any(|w| w["name"] == "gc" && w["state"] == "paused")
    })
    .await;
    let unknown = t.http.post(t.url("/admin/workers/nope/pause")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

/// The data servers' workers (scrub, temp cleaning, compaction) show on
/// `/admin/status` under each data server, and `/admin/workers/<name>/<action>`
/// passes pause, resume and trigger on to every live data server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_servers_workers_show_on_admin_status_and_take_admin_actions() {
    let t = common::start("4+2", 6).await;
    let data_workers = |s: &Value, addr: &str| -> Vec<(String, String)> {
        let server = s["data_servers"].as_array().unwrap().iter().find(|d| d["addr"] == addr).unwrap();
        server["workers"]
            .as_array()
            .unwrap_or_else(|| panic!("no workers for {addr}: {server}"))
            .iter()
            .map(|w| (w["name"].as_str().unwrap().to_string(), w["state"].as_str().unwrap().to_string()))
            .collect()
    };
    let s = status(&t).await;
    let addrs: Vec<String> =
        s["data_servers"].as_array().unwrap().iter().map(|d| d["addr"].as_str().unwrap().to_string()).collect();
    assert_eq!(addrs.len(), 6);
    for addr in &addrs {
        let names: Vec<String> = data_workers(&s, addr).into_iter().map(|(n, _)| n).collect();
        assert!(
            names.contains(&"scrub".to_string()) && names.contains(&"temp-cleaner".to_string()),
            "{addr}: {names:?}"
        );
    }

    let paused: Value =
        t.http.post(t.url("/admin/workers/temp-cleaner/pause")).send().await.unwrap().json().await.unwrap();
    let answers = paused["data_servers"].as_array().unwrap();
    assert_eq!(answers.len(), 6, "{paused}");
    assert!(answers.iter().all(|a| a["worker"]["name"] == "temp-cleaner"), "{paused}");
    // A worker takes its pause at its next turn, as the API server's do.
    eventually(Duration::from_secs(10), "temp-cleaner paused on every data server", || async {
        let s = status(&t).await;
        addrs.iter().all(|addr| data_workers(&s, addr).contains(&("temp-cleaner".into(), "paused".into())))
    })
    .await;
    let resumed: Value =
        t.http.post(t.url("/admin/workers/temp-cleaner/resume")).send().await.unwrap().json().await.unwrap();
    assert_eq!(resumed["data_servers"].as_array().unwrap().len(), 6, "{resumed}");
    eventually(Duration::from_secs(10), "temp-cleaner running again on every data server", || async {
        let s = status(&t).await;
        addrs
            .iter()
            .all(|addr| data_workers(&s, addr).iter().any(|(n, state)| n == "temp-cleaner" && state != "paused"))
    })
    .await;
    let triggered = t.http.post(t.url("/admin/workers/scrub/trigger")).send().await.unwrap();
    assert_eq!(triggered.status(), 200);
    let wrong = t.http.post(t.url("/admin/workers/compactor/explode")).send().await.unwrap();
    assert_eq!(wrong.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_shards_are_removed_after_their_age_and_known_ones_stay() {
    let t = common::start_custom(3, |config| {
        fast_lifecycle(config);
        config.maintenance.orphan_age = Duration::ZERO;
    })
    .await;
    let known = common::pattern(5000, 1);
    assert_eq!(t.put("known", known.clone()).await.status(), 200);
    eventually(Duration::from_secs(10), "the known object's copies", || async { t.shard_count().await == 3 }).await;
    // A shard no metadata knows, as a write that crashed before recording its
    // version leaves behind.
    let orphan = common::pattern(6000, 2);
    let hash = ContentHash::of(&orphan);
    let addr = t.cluster.data_addrs[0];
    let url = format!("http://{addr}/objects/{hash}.0");
    let stored = t.http.put(&url).header("x-cairn-policy", "1+2").body(orphan).send().await.unwrap();
    assert!(stored.status().is_success(), "{}", stored.status());
    assert_eq!(t.http.get(&url).send().await.unwrap().status(), 200);

    admin(&t, "/admin/gc").await;
    eventually(Duration::from_secs(20), "the orphan removed", || async {
        t.http.get(&url).send().await.unwrap().status() == 404
    })
    .await;
    assert_eq!(t.shard_count().await, 3, "the known object's shards stay");
    assert_eq!(t.get("known").await.bytes().await.unwrap(), known);
    assert_eq!(status(&t).await["contents"]["deleting"], 0, "the orphan's claim is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_died_mid_deletion_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn cairn::meta::MetaStore> =
        Arc::new(cairn::meta::sqlite::SqliteStore::open(&dir.path().join("meta.sqlite")).await.unwrap());
    // Default lifecycle settings: nothing would be collected on its own for an hour.
    let t = common::start_custom_with_meta(3, meta.clone(), |_| {}).await;
    let body = common::pattern(5000, 3);
    let hash = ContentHash::of(&body);
    assert_eq!(t.put("doomed", body).await.status(), 200);
    eventually(Duration::from_secs(10), "the copies", || async { t.shard_count().await == 3 }).await;
    // What a collector does up to its death: the name pruned, the content doomed
    // long ago, then moved to `deleting`; its shards are still on the data servers.
    assert_eq!(meta.delete("default", "doomed").await.map(|_| ()).ok(), Some(()));
    let now = cairn::clock::now_ms() + 1;
    assert_eq!(meta.prune("default", "doomed", None, Some(now)).await.unwrap(), 2);
    assert_eq!(meta.doom_unreferenced(now - 7_200_000, 100).await.unwrap(), 1);
    assert!(meta.begin_delete(&hash, now - 3_600_000).await.unwrap());
    assert_eq!(meta.content_state(&hash).await.unwrap(), Some(cairn::meta::ContentState::Deleting));
    assert_eq!(t.shard_count().await, 3);

    // The next pass resumes the deletion: shards and row go.
    admin(&t, "/admin/gc").await;
    eventually(Duration::from_secs(20), "the deletion finished", || async {
        t.shard_count().await == 0 && meta.content_state(&hash).await.unwrap().is_none()
    })
    .await;
    // A PUT of the same bytes afterwards stores them anew.
    assert_eq!(t.put("again", common::pattern(5000, 3)).await.status(), 200);
    assert_eq!(t.get("again").await.bytes().await.unwrap(), common::pattern(5000, 3));
}

/// Two API servers on one metadata store: one collector at a time, and when it
/// stops renewing its lease the other takes over.
async fn one_collector_between_two_api_servers(url: String) {
    let meta = cairn::meta::open(&url).await.unwrap();
    let t = common::start_custom_with_meta(3, meta, |config| {
        config.maintenance.lease_ttl = Duration::from_secs(1);
        config.maintenance.gc_interval = Duration::from_millis(200);
    })
    .await;
    let second_meta = cairn::meta::open(&url).await.unwrap();
    let mut maintenance = cairn::maintenance::MaintenanceConfig::new("second".into());
    maintenance.lease_ttl = Duration::from_secs(1);
    maintenance.gc_interval = Duration::from_millis(200);
    let config = common::second_api_config("1+2", "1+2", maintenance);
    let second_api = common::SecondApi::start(&t, second_meta, config).await;
    let second = second_api.base.clone();

    let gc_of = |base: String| {
        let http = t.http.clone();
        async move {
            let s: Value = http.get(format!("{base}/admin/status")).send().await.unwrap().json().await.unwrap();
            let gc = s["workers"].as_array().unwrap().iter().find(|w| w["name"] == "gc").unwrap().clone();
            (gc["info"]["lease"].as_str().unwrap_or("").to_string(), s["leases"]["gc"].clone())
        }
    };
    eventually(Duration::from_secs(10), "both collectors report", || async {
        let (a, _) = gc_of(t.base.clone()).await;
        let (b, _) = gc_of(second.clone()).await;
        !a.is_empty() && !b.is_empty()
    })
    .await;
    for _ in 0..10 {
        let (a, holder_a) = gc_of(t.base.clone()).await;
        let (b, holder_b) = gc_of(second.clone()).await;
        assert_eq!(holder_a, holder_b, "both see one holder");
        assert!(!(a == "held" && b == "held"), "two collectors at once");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Pause whichever holds the lease: it stops renewing, and the other takes over.
    let (a, _) = gc_of(t.base.clone()).await;
    let (holder, other) = if a == "held" { (t.base.clone(), second.clone()) } else { (second.clone(), t.base.clone()) };
    let paused = t.http.post(format!("{holder}/admin/workers/gc/pause")).send().await.unwrap();
    assert!(paused.status().is_success());
    eventually(Duration::from_secs(10), "the other API server takes the lease", || async {
        gc_of(other.clone()).await.0 == "held"
    })
    .await;
    second_api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_at_a_time_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    one_collector_between_two_api_servers(format!("sqlite:{}", dir.path().join("meta.sqlite").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_at_a_time_on_postgres() {
    let Some(schema) = common::pg::TestSchema::new().await else { return };
    one_collector_between_two_api_servers(schema.url()).await;
}
