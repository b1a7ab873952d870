//! A rogue bus participant: a task subscribed to `dataServers` like a data server,
//! answering every locate with garbage (non-JSON, indices outside the policy, huge
//! index lists, addresses that are not `host:port`, addresses of servers that do
//! not exist, valid-looking addresses of non-members, and real members' addresses
//! with impossible indices). While the real holders of two objects are gone, their
//! GETs answer 503 — never a panic, never wrong bytes — `/locate` finds nobody,
//! and the API server keeps serving every other object.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cairn::bus::LocateReply;

fn garbage(members: &[String]) -> Vec<Bytes> {
    let json = |addr: &str, shards: Vec<u32>| -> Bytes {
        serde_json::to_vec(&LocateReply { addr: addr.to_string(), shards }).unwrap().into()
    };
    let mut out = vec![
        Bytes::from_static(b"not json"),
        Bytes::from_static(b"\xff\xfe\x00"),
        Bytes::from_static(b"{\"addr\":\"127.0.0.1:1\",\"shards\":[-1]}"),
        Bytes::from_static(b"{\"addr\":\"127.0.0.1:1\",\"shards\":[4294967296]}"),
        Bytes::from(vec![b'['; 100_000]),
        json("127.0.0.1:1", (0..100_000).collect()),
        json("127.0.0.1:1", vec![0, 0, 0]),
        json("http://127.0.0.1:1/", vec![0]),
        json("127.0.0.1:1/objects", vec![0]),
        json("user@127.0.0.1:1", vec![0]),
        json("127.0.0.1", vec![0]),
        json("", vec![0]),
        json(&"a".repeat(10_000), vec![0]),
        // Valid-looking, but nobody listens there / not a member.
        json("127.0.0.1:9", (0..6).collect()),
        json("127.29.1.200:12345", (0..6).collect()),
        json("nowhere.invalid:7000", (0..6).collect()),
    ];
    // Real members claiming impossible shards.
    for m in members {
        out.push(json(m, vec![6, 7, 255, u32::MAX]));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_answering_every_locate_cannot_break_reads() {
    let run = async {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("cairn=warn").try_init();
        let t = common::start_with_files("4+2", "1+2", 1024 * 1024, 6).await;
        let members: Vec<String> = t.cluster.data_addrs.iter().map(|a| a.to_string()).collect();
        let small = common::pattern(20_000, 1);
        let large = common::pattern(3 * 1024 * 1024, 2);
        let other_small = common::pattern(5_000, 3);
        let other_large = common::pattern(3 * 1024 * 1024 + 17, 4);
        for (name, body) in
            [("small", &small), ("large", &large), ("other-small", &other_small), ("other-large", &other_large)]
        {
            let resp = t.put(name, body.clone()).await;
            assert_eq!(resp.status(), 200, "PUT {name}");
        }
        t.wait_shard_files(3 + 6 + 3 + 6).await;

        // The rogue joins the bus.
        let rogue_bus = t.cluster.connect_bus().await.expect("rogue bus");
        let rogue = t.cluster.connect_transport();
        let mut requests = rogue_bus.locate_requests().await.expect("rogue subscribes");
        let bodies = garbage(&members);
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Some(req) = requests.recv().await {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for body in &bodies {
                    let _ = rogue.send_reply(&req.reply_to, &req.correlation_id, body.clone()).await;
                }
            }
        });

        // The holders of "small" and "large" lose their shards: every copy of the
        // small one, four of the six shards of the large one (k = 4).
        let hash_of = |body: &[u8]| cairn::content::ContentHash::of(body).to_string();
        let (small_hash, large_hash) = (hash_of(&small), hash_of(&large));
        let mut removed = 0;
        for f in t.shard_files() {
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            let doomed = name.starts_with(&small_hash)
                || (name.starts_with(&large_hash) && [".0", ".1", ".2", ".3"].iter().any(|s| name.ends_with(s)));
            if doomed {
                std::fs::remove_file(&f).unwrap();
                removed += 1;
            }
        }
        assert_eq!(removed, 3 + 4);

        for round in 0..3 {
            for name in ["small", "large"] {
                let resp = t.get(name).await;
                assert_eq!(resp.status(), 503, "round {round}: GET {name} of lost content");
                let located = t.http.get(t.url(&format!("/locate/{name}"))).send().await.expect("locate sent");
                let status = located.status();
                let text = located.text().await.unwrap_or_default();
                if name == "small" {
                    assert_eq!(status, 404, "round {round}: /locate/{name} found someone: {text}");
                } else {
                    // Two parity shards are still on their members; nothing else.
                    let left: Vec<_> =
                        t.shard_files().into_iter().filter(|f| f.to_string_lossy().contains(&large_hash)).collect();
                    assert_eq!(status, 200, "round {round}: {text}; shard files left: {left:?}");
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let shards = v["shards"].as_object().unwrap();
                    assert_eq!(shards.keys().cloned().collect::<Vec<_>>(), vec!["4", "5"], "{text}");
                    assert!(shards.values().all(|a| members.contains(&a.as_str().unwrap().to_string())), "{text}");
                }
            }
            for (name, body) in [("other-small", &other_small), ("other-large", &other_large)] {
                let resp = t.get(name).await;
                assert_eq!(resp.status(), 200, "round {round}: GET {name}");
                let got = resp.bytes().await.expect("body");
                assert!(got[..] == body[..], "round {round}: GET {name} returned wrong bytes");
            }
        }
        assert!(answered.load(std::sync::atomic::Ordering::Relaxed) > 0, "the rogue was asked and answered");
        let health = t.http.get(t.url("/healthz")).send().await.expect("healthz");
        assert_eq!(health.status(), 200);
        t.cluster.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(180), run).await.expect("the test finishes in time");
}
