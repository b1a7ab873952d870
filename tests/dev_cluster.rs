//! Integration tests against a whole cluster in this process (`cairn dev`'s wiring):
//! the seed's session, digests, bad input, broken uploads, malformed bus messages,
//! dead and corrupt data servers, ranges and locate fallback.

mod common;

use std::time::Duration;

use base64::Engine;
use cairn::bus::Exchange;
use cairn::content::ContentHash;
use common::{pattern, start, start_files};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn seed_session_put_get_locate_and_fetch_from_the_data_server() {
    let t = start("1+0", 6).await;
    let put = t.put("1234.txt", "add test 123").await;
    assert_eq!(put.status(), 200);
    assert_eq!(put.headers()["x-cairn-version"], "1");

    let got = t.get("1234.txt").await;
    assert_eq!(got.status(), 200);
    let hash = ContentHash::of(b"add test 123");
    assert_eq!(got.headers()["etag"], format!("\"{hash}\""));
    assert_eq!(got.headers()["content-length"], "12");
    assert_eq!(got.text().await.unwrap(), "add test 123");

    let located: serde_json::Value = t.http.get(t.url("/locate/1234.txt")).send().await.unwrap().json().await.unwrap();
    assert_eq!(located["hash"], hash.to_hex());
    assert_eq!(located["size"], 12);
    let holder = located["shards"]["0"].as_str().expect("shard 0 has a holder");
    assert!(t.cluster.data_addrs.iter().any(|a| a.to_string() == holder));

    let direct = t.http.get(format!("http://{holder}/objects/{hash}.0")).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(direct.text().await.unwrap(), "add test 123");

    let head = t.http.head(t.url("/objects/1234.txt")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "12");
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn a_missing_name_is_404_and_locate_of_it_too() {
    let t = start("1+0", 2).await;
    assert_eq!(t.get("nothing-here").await.status(), 404);
    let located = t.http.get(t.url("/locate/nothing-here")).send().await.unwrap();
    assert_eq!(located.status(), 404);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn digest_headers_are_checked_and_a_mismatch_stores_nothing() {
    let t = start("1+0", 3).await;
    let body = b"digest me".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(ContentHash::of(&body).as_bytes());

    let ok = t.http.put(t.url("/objects/d1")).header("Digest", format!("SHA-256={b64}")).body(body.clone());
    assert_eq!(ok.send().await.unwrap().status(), 200);
    let ok = t.http.put(t.url("/objects/d2")).header("Content-Digest", format!("sha-256=:{b64}:")).body(body.clone());
    assert_eq!(ok.send().await.unwrap().status(), 200);
    let shards_before = t.shard_count().await;

    let wrong = base64::engine::general_purpose::STANDARD.encode(ContentHash::of(b"other").as_bytes());
    let bad = t.http.put(t.url("/objects/d3")).header("Digest", format!("SHA-256={wrong}")).body("not it");
    let resp = bad.send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("digest"));
    assert_eq!(t.get("d3").await.status(), 404, "nothing became visible");
    assert_eq!(t.shard_count().await, shards_before, "no shard was committed");
    assert!(t.temp_files().is_empty(), "temp shards were removed");
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn bad_names_are_refused_with_400() {
    let t = start("1+0", 1).await;
    // Sent raw: an HTTP client library would normalise the dot segments away.
    for path in ["/objects/", "/objects/a/../b", "/objects/..", "/objects/./a", "/objects/a%00b", "/objects/x%2F..%2Fy"]
    {
        let mut conn = tokio::net::TcpStream::connect(t.cluster.api_addr).await.unwrap();
        let req = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(t.get("b").await.status(), 404, "nothing was stored under a normalised name");
    let long = "n".repeat(1025);
    assert_eq!(t.put(&long, "x").await.status(), 400);
    assert_eq!(t.put(&"n".repeat(1024), "x").await.status(), 200);
    assert!(t.http.get(t.url("/objects/a?version=0")).send().await.unwrap().status() == 400);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn no_live_data_server_is_503_with_a_reason() {
    let t = start("1+0", 0).await;
    let resp = t.put("x", "body").await;
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("0 live data servers"));
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let t = start("1+1", 2).await;
    let mut conn = tokio::net::TcpStream::connect(t.cluster.api_addr).await.unwrap();
    let head = "PUT /objects/broken HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&pattern(300_000, 1)).await.unwrap();
    conn.flush().await.unwrap();
    // Disconnect once the upload is under way: its first shards are being written.
    common::eventually(Duration::from_secs(20), "the upload's temp files", || async { !t.temp_files().is_empty() })
        .await;
    drop(conn);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !t.temp_files().is_empty() {
        assert!(std::time::Instant::now() < deadline, "temp files left: {:?}", t.temp_files());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.get("broken").await.status(), 404);
    assert_eq!(t.shard_count().await, 0);
    // And the server is fine.
    assert_eq!(t.put("after", "ok").await.status(), 200);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_stores_nothing() {
    let t = start("1+0", 1).await;
    let mut conn = tokio::net::TcpStream::connect(t.cluster.api_addr).await.unwrap();
    conn.write_all(b"PUT /objects/short HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "a short body was acknowledged: {answer}");
    assert_eq!(t.get("short").await.status(), 404);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn malformed_bus_messages_are_dropped_and_every_server_keeps_serving() {
    let t = start("1+0", 6).await;
    let bus = t.cluster.connect_bus().await.unwrap();
    for exchange in [Exchange::ApiServers, Exchange::DataServers] {
        bus.publish_raw(exchange, bytes::Bytes::from_static(b"not-json")).await.unwrap();
        bus.publish_raw(exchange, bytes::Bytes::from_static(b"{\"addr\":1}")).await.unwrap();
        bus.publish_raw(exchange, bytes::Bytes::new()).await.unwrap();
    }
    // Every server has read them: the API server its three heartbeats, each of the
    // six data servers its three locate requests.
    common::eventually(Duration::from_secs(20), "the bad messages dropped", || async {
        common::bus_dropped(&t.http, &t.base, "heartbeats").await >= 3
            && common::bus_dropped(&t.http, &t.base, "locate requests").await >= 3 * 6
    })
    .await;
    t.wait_live(6).await;
    for i in 0..12 {
        assert_eq!(t.put(&format!("o{i}"), format!("body {i}")).await.status(), 200);
    }
    for i in 0..12 {
        assert_eq!(t.get(&format!("o{i}")).await.text().await.unwrap(), format!("body {i}"));
        let located = t.http.get(t.url(&format!("/locate/o{i}"))).send().await.unwrap();
        assert_eq!(located.status(), 200);
    }
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn after_a_data_server_dies_no_put_fails_and_other_objects_still_read() {
    let t = start("1+0", 6).await;
    for i in 0..30 {
        assert_eq!(t.put(&format!("before{i}"), format!("b{i}")).await.status(), 200);
    }
    let dead = t.cluster.data_addrs[2].to_string();
    t.cluster.stop_data_server(2);
    t.wait_live(5).await;
    for i in 0..30 {
        let resp = t.put(&format!("after{i}"), format!("a{i}")).await;
        assert_eq!(resp.status(), 200, "PUT after{i}");
    }
    for i in 0..30 {
        let located: serde_json::Value =
            t.http.get(t.url(&format!("/locate/before{i}"))).send().await.unwrap().json().await.unwrap_or_default();
        let on_dead = located["shards"]["0"].as_str().is_none_or(|a| a == dead);
        let resp = t.get(&format!("before{i}")).await;
        if on_dead {
            // Single copy on the dead server: unavailable, never wrong bytes.
            assert_eq!(resp.status(), 503, "before{i}");
        } else {
            assert_eq!(resp.text().await.unwrap(), format!("b{i}"));
        }
        assert_eq!(t.get(&format!("after{i}")).await.text().await.unwrap(), format!("a{i}"));
    }
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn replicas_serve_when_a_holder_is_gone() {
    let t = start("1+2", 4).await;
    let body = pattern(1_000_000, 7);
    assert_eq!(t.put("big", body.clone()).await.status(), 200);
    assert_eq!(t.shard_files().len(), 3);
    let located: serde_json::Value = t.http.get(t.url("/locate/big")).send().await.unwrap().json().await.unwrap();
    let first = located["shards"]["0"].as_str().unwrap().to_string();
    let index = t.cluster.data_addrs.iter().position(|a| a.to_string() == first).unwrap();
    t.cluster.stop_data_server(index);
    let got = t.get("big").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &body[..]);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_shard_is_never_served() {
    let t = start_files("1+0", 1).await;
    let body = pattern(200_000, 3);
    assert_eq!(t.put("c", body.clone()).await.status(), 200);
    let file = t.shard_files().pop().unwrap();
    let mut raw = std::fs::read(&file).unwrap();
    let at = raw.len() - 100;
    raw[at] ^= 1;
    std::fs::write(&file, raw).unwrap();

    let resp = t.get("c").await;
    // The corrupt block is the last one, so headers may already be out: either an
    // error status or a body that breaks off, never the wrong bytes.
    if resp.status() == 200 {
        assert!(resp.bytes().await.is_err(), "a corrupt shard was served whole");
    } else {
        assert_eq!(resp.status(), 503);
    }
    // The data server moved the shard aside: it is reported missing from now on.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !t.shard_files().is_empty() {
        assert!(std::time::Instant::now() < deadline, "corrupt shard not quarantined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.get("c").await.status(), 503);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_volume_record_is_never_served_and_is_set_aside() {
    let t = start("1+0", 1).await;
    let body = pattern(20_000, 5);
    assert_eq!(t.put("rec", body.clone()).await.status(), 200);
    assert!(t.shard_files().is_empty(), "a 20 kB shard is a volume record");
    assert_eq!(t.shard_count().await, 1);
    // Flip one payload byte of the record, found by its bytes in the volume file.
    let volume = t.volume_files().into_iter().find(|f| std::fs::metadata(f).unwrap().len() > 20_000).unwrap();
    let mut raw = std::fs::read(&volume).unwrap();
    let at = raw.windows(64).position(|w| w == &body[1000..1064]).expect("the record's bytes are in the volume");
    raw[at] ^= 1;
    std::fs::write(&volume, raw).unwrap();
    // A small object is read whole and checked before its first byte: a clean 503.
    assert_eq!(t.get("rec").await.status(), 503);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while t.shard_count().await != 0 {
        assert!(std::time::Instant::now() < deadline, "corrupt record not set aside");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let garbage = common::files_under(&t.cluster.data_roots[0].join("garbage"));
    assert_eq!(garbage.len(), 1, "the record's bytes are kept for an operator");
    assert_eq!(t.get("rec").await.status(), 503);
    // Written again, the content is whole again.
    assert_eq!(t.put("rec2", body.clone()).await.status(), 200);
    assert_eq!(t.get("rec").await.bytes().await.unwrap().as_ref(), &body[..]);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_replica_is_skipped_for_a_good_one() {
    let t = start("1+1", 2).await;
    let body = pattern(300_000, 4);
    assert_eq!(t.put("r", body.clone()).await.status(), 200);
    // Corrupt the first block of every replica but one.
    let files = t.shard_files();
    assert_eq!(files.len(), 2);
    let mut raw = std::fs::read(&files[0]).unwrap();
    raw[40] ^= 0xff;
    std::fs::write(&files[0], raw).unwrap();
    for _ in 0..4 {
        let got = t.get("r").await;
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), &body[..]);
    }
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn range_reads_return_206_and_416() {
    let t = start("1+0", 2).await;
    let body = pattern(500_000, 9);
    assert_eq!(t.put("ranged", body.clone()).await.status(), 200);
    let get = |range: &'static str| t.http.get(t.url("/objects/ranged")).header("Range", range).send();
    let r = get("bytes=1000-1999").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/500000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[1000..2000]);
    let r = get("bytes=-10").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[499_990..]);
    let r = get("bytes=499000-").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[499_000..]);
    assert_eq!(get("bytes=500000-").await.unwrap().status(), 416);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn a_stale_placement_is_repaired_by_locate() {
    let t = start_files("1+0", 2).await;
    assert_eq!(t.put("moved", "moving content").await.status(), 200);
    // Move the shard file to the other data server, as an operator's rebalance might.
    let file = t.shard_files().pop().unwrap();
    let (from, to) = if file.starts_with(&t.cluster.data_roots[0]) { (0, 1) } else { (1, 0) };
    let rel = file.strip_prefix(&t.cluster.data_roots[from]).unwrap().to_path_buf();
    let dest = t.cluster.data_roots[to].join(&rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::rename(&file, &dest).unwrap();

    let got = t.get("moved").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "moving content");
    let located: serde_json::Value = t.http.get(t.url("/locate/moved")).send().await.unwrap().json().await.unwrap();
    assert_eq!(located["shards"]["0"], t.cluster.data_addrs[to].to_string());
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn empty_and_one_byte_objects_round_trip() {
    let t = start("1+1", 2).await;
    assert_eq!(t.put("empty", Vec::<u8>::new()).await.status(), 200);
    assert_eq!(t.put("one", vec![42u8]).await.status(), 200);
    let e = t.get("empty").await;
    assert_eq!(e.status(), 200);
    assert_eq!(e.headers()["content-length"], "0");
    assert!(e.bytes().await.unwrap().is_empty());
    assert_eq!(t.get("one").await.bytes().await.unwrap().as_ref(), &[42u8]);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn hot_small_objects_are_served_from_the_cache_but_deletes_still_win() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cairn::dev::DevConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.data_addrs = (1..=3).map(|i| format!("127.29.1.{i}:0").parse().unwrap()).collect();
    config.heartbeat_interval = Duration::from_millis(100);
    let cluster = cairn::dev::DevCluster::start(config).await.unwrap();
    let base = format!("http://{}", cluster.api_addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(common::wait_live(&http, &base, 3).await);
    let body = pattern(4096, 8);
    assert_eq!(http.put(format!("{base}/objects/hot")).body(body.clone()).send().await.unwrap().status(), 200);
    assert_eq!(http.put(format!("{base}/objects/cold")).body("x").send().await.unwrap().status(), 200);
    assert_eq!(http.delete(format!("{base}/objects/cold")).send().await.unwrap().status(), 200);
    // With every data server gone, the cached object still reads, whole and in part.
    for i in 0..3 {
        cluster.stop_data_server(i);
    }
    let got = http.get(format!("{base}/objects/hot")).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), &body[..]);
    let part = http.get(format!("{base}/objects/hot")).header("Range", "bytes=10-19").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &body[10..20]);
    // A deleted name is refused by the metadata before the cache is asked.
    assert_eq!(http.get(format!("{base}/objects/cold")).send().await.unwrap().status(), 404);
    cluster.shutdown().await;
}
