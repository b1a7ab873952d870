//! The object layer over a bus that misbehaves: every part of a dev cluster talks
//! to the in-process broker through a [`FaultyTransport`] that drops, duplicates,
//! delays, reorders and corrupts messages and forges locate replies (indices
//! outside the policy, non-member addresses). With the recorded placement made
//! stale, so that reads must locate shards on that bus, every GET returns exactly
//! the bytes or a clean 503: never a panic, never wrong bytes, never a placement
//! that names a non-member or an impossible shard.

mod common;
#[path = "common/faulty_bus.rs"]
mod faulty_bus;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::bus::Transport;
use cairn::content::Policy;
use cairn::dev::{DevCluster, DevConfig, DevPart};
use faulty_bus::{FaultCounts, Faults, FaultyTransport};

const SMALL: usize = 40 * 1024;
const LARGE: usize = 3 * 1024 * 1024;

/// The seed of the run, from `CAIRN_FAULT_SEED` or fixed.
fn seed() -> u64 {
    std::env::var("CAIRN_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_ca12)
}

/// Every committed shard file of content `hash`, by data server index.
fn shard_files_of(roots: &[PathBuf], hash: &str) -> Vec<(usize, PathBuf)> {
    roots
        .iter()
        .enumerate()
        .flat_map(|(i, r)| common::files_under(&r.join("objects")).into_iter().map(move |p| (i, p)))
        .filter(|(_, p)| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(hash)))
        .collect()
}

/// Moves the shard files of `hash` so that no recorded holder still has its shard:
/// every server's files go to the next server of the ring that holds none of
/// this content, or, when all hold some (k + m = servers), are swapped in pairs.
fn scramble(roots: &[PathBuf], hash: &str) {
    let files = shard_files_of(roots, hash);
    let holders: Vec<usize> = files.iter().map(|(i, _)| *i).collect();
    let dest = |from: usize, p: &PathBuf| {
        let rel = p.strip_prefix(&roots[from]).unwrap().to_path_buf();
        move |to: usize| roots[to].join(&rel)
    };
    let free: Vec<usize> = (0..roots.len()).filter(|i| !holders.contains(i)).collect();
    if free.len() >= files.len() {
        for ((from, p), to) in files.iter().zip(free) {
            let target = dest(*from, p)(to);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::rename(p, target).unwrap();
        }
        return;
    }
    for pair in files.chunks(2) {
        if let [(a, pa), (b, pb)] = pair {
            let (ta, tb) = (dest(*a, pa)(*b), dest(*b, pb)(*a));
            std::fs::create_dir_all(ta.parent().unwrap()).unwrap();
            std::fs::create_dir_all(tb.parent().unwrap()).unwrap();
            std::fs::rename(pa, &ta).unwrap();
            std::fs::rename(pb, &tb).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_over_a_faulty_bus_give_the_bytes_or_a_clean_503() {
    let run = async {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("cairn=warn").try_init();
        let seed = seed();
        eprintln!("fault seed {seed} (set CAIRN_FAULT_SEED to change it)");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = DevConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.data_addrs = (1..=6).map(|i| format!("127.29.1.{i}:0").parse().unwrap()).collect();
        config.policy = "4+2".parse::<Policy>().unwrap();
        config.small_policy = "1+2".parse::<Policy>().unwrap();
        config.small_threshold = 1024 * 1024;
        config.cache_bytes = 0;
        config.heartbeat_interval = Duration::from_millis(100);
        // Dropped heartbeats must not make members flap.
        config.heartbeat_expiry = Duration::from_secs(2);
        let counts: Arc<Mutex<Vec<Arc<Mutex<FaultCounts>>>>> = Arc::default();
        let record = counts.clone();
        let wrap = Arc::new(move |part: DevPart, inner: Arc<dyn Transport>| -> Arc<dyn Transport> {
            let part_seed = seed
                ^ match part {
                    DevPart::Api => 0xa91,
                    DevPart::Data(n) => n as u64 + 1,
                };
            let faulty = FaultyTransport::new(inner, Faults::rough(), part_seed);
            record.lock().unwrap().push(faulty.counts_handle());
            Arc::new(faulty)
        });
        let meta = cairn::meta::open(&format!("sqlite:{}", dir.path().join("meta.sqlite").display()))
            .await
            .expect("metadata store");
        let cluster = DevCluster::start_with_transports(config, meta, wrap).await.expect("dev cluster starts");
        let base = format!("http://{}", cluster.api_addr);
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        assert!(common::wait_live(&http, &base, 6).await, "six live data servers over the faulty bus");
        let members: Vec<String> = cluster.data_addrs.iter().map(|a| a.to_string()).collect();

        let mut objects = BTreeMap::new();
        for i in 0..12u64 {
            let len = match i % 4 {
                0 => 0,
                1 => 1 + i as usize,
                2 => SMALL,
                _ => LARGE,
            };
            objects.insert(format!("obj-{i}"), common::pattern(len, seed ^ i));
        }
        let mut hashes = BTreeMap::new();
        for (name, body) in &objects {
            // A write needs six live members; the faulty bus may hide one for a moment.
            let mut status = None;
            for _ in 0..5 {
                let resp = http.put(format!("{base}/objects/{name}")).body(body.clone()).send().await.expect("PUT");
                status = Some(resp.status());
                if resp.status() == 200 {
                    let etag = resp.headers()["etag"].to_str().unwrap().trim_matches('"').to_string();
                    hashes.insert(name.clone(), etag);
                    break;
                }
                assert_eq!(resp.status(), 503, "PUT {name}: {}", resp.text().await.unwrap_or_default());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert_eq!(status, Some(reqwest::StatusCode::OK), "PUT {name} never succeeded");
        }
        // Let every shard land (a write is acknowledged at its quorum): three copies
        // of each small object, six shards of each large one. Then make the recorded
        // placement wrong for every object with content.
        let shards: usize = objects
            .values()
            .map(|b| {
                if b.is_empty() {
                    0
                } else if b.len() < LARGE {
                    3
                } else {
                    6
                }
            })
            .sum();
        common::eventually(Duration::from_secs(30), "every shard stored", || async {
            let mut stored: usize =
                cluster.data_roots.iter().map(|r| common::files_under(&r.join("objects")).len()).sum();
            for addr in &cluster.data_addrs {
                let stats: serde_json::Value = match http.get(format!("http://{addr}/stats")).send().await {
                    Ok(resp) => resp.json().await.unwrap_or_default(),
                    Err(_) => return false,
                };
                stored += stats["shards"].as_u64().unwrap_or(0) as usize;
            }
            stored >= shards
        })
        .await;
        for (name, hash) in &hashes {
            if !objects[name].is_empty() {
                scramble(&cluster.data_roots, hash);
            }
        }

        let (mut ok, mut unavailable) = (0, 0);
        for round in 0..2 {
            for (name, body) in &objects {
                let resp = http.get(format!("{base}/objects/{name}")).send().await.expect("GET sent");
                match resp.status().as_u16() {
                    200 => {
                        let got = resp.bytes().await.expect("a 200 body arrives whole");
                        assert!(got[..] == body[..], "round {round}: GET {name} returned wrong bytes");
                        ok += 1;
                    }
                    503 => unavailable += 1,
                    other => panic!("round {round}: GET {name}: {other} {}", resp.text().await.unwrap_or_default()),
                }
                let located = http.get(format!("{base}/locate/{name}")).send().await.expect("locate sent");
                if located.status() == 200 {
                    let v: serde_json::Value = located.json().await.expect("locate JSON");
                    for (shard, addr) in v["shards"].as_object().expect("shards map") {
                        let shard: u32 = shard.parse().expect("numeric shard");
                        let n = if objects[name].len() >= 1024 * 1024 { 6 } else { 3 };
                        assert!(shard < n, "{name}: located shard {shard} outside its policy");
                        assert!(
                            members.contains(&addr.as_str().unwrap().to_string()),
                            "{name}: located non-member {addr}"
                        );
                    }
                }
            }
        }
        let total: FaultCounts = counts.lock().unwrap().iter().fold(FaultCounts::default(), |mut t, c| {
            let c = c.lock().unwrap();
            t.passed += c.passed;
            t.dropped += c.dropped;
            t.duplicated += c.duplicated;
            t.delayed += c.delayed;
            t.corrupted += c.corrupted;
            t.forged += c.forged;
            t
        });
        eprintln!("GETs: {ok} exact, {unavailable} unavailable; faults: {total:?}");
        assert!(total.forged > 0 && total.dropped > 0 && total.corrupted > 0, "the bus misbehaved: {total:?}");
        // A faulty bus may cost a read, not most of them: locate retries nothing, but
        // most locates still hear every holder.
        assert!(ok >= objects.len(), "only {ok} of {} GETs returned the bytes", 2 * objects.len());
        cluster.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(240), run).await.expect("the test finishes in time");
}
