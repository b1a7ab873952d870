//! Transparent compression through a whole in-process cluster: text is stored as
//! zstd seekable frames, incompressible data as it is; reads (whole, ranges across
//! frames, `Accept-Encoding: zstd` passthrough) return the original bytes or their
//! zstd stream; dedup, digests and repair are unaffected.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use cairn::content::ContentHash;
use cairn::object::compress::CompressionConfig;
use common::{pattern, start_custom, TestCluster};

/// Text-like bytes (a seeded stream of words and numbers): compresses about 4×.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "the ",
        "object ",
        "store ",
        "keeps ",
        "shards ",
        "of ",
        "content ",
        "on ",
        "data ",
        "servers, ",
        "and ",
        "every ",
        "stripe ",
        "is ",
        "coded. ",
        "Reed-Solomon ",
        "parity ",
        "repairs ",
        "what ",
        "was ",
        "lost.\n",
    ];
    let noise = pattern(len / 4 + 16, seed);
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0;
    while out.len() < len {
        let r = noise[i % noise.len()] as usize;
        out.extend_from_slice(words[r % words.len()].as_bytes());
        if r.is_multiple_of(7) {
            out.extend_from_slice(format!("{} ", noise[(i + 1) % noise.len()]).as_bytes());
        }
        i += 1;
    }
    out.truncate(len);
    out
}

/// A 4+2 cluster (1+2 below 64 KiB), every shard a file, compression as given.
async fn cluster(compression: CompressionConfig) -> TestCluster {
    start_custom(6, |c| {
        c.small_shard_max = 0;
        c.compression = compression;
    })
    .await
}

fn stored_size(resp: &reqwest::Response) -> u64 {
    resp.headers()["x-cairn-stored-size"].to_str().unwrap().parse().unwrap()
}

fn shard_bytes(t: &TestCluster) -> u64 {
    t.shard_files().iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
}

async fn get_range(t: &TestCluster, name: &str, range: &str) -> (u16, Vec<u8>) {
    let resp = t.http.get(t.url(&format!("/objects/{name}"))).header("Range", range).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_stored_compressed_and_reads_back_whole_in_ranges_and_as_zstd() {
    let t = cluster(CompressionConfig::default()).await;
    let body = text(3 * 1024 * 1024 + 12_345, 1);
    let n = body.len() as u64;
    assert_eq!(t.put("book.txt", body.clone()).await.status(), 200);

    let head = t.http.head(t.url("/objects/book.txt")).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], n.to_string());
    assert_eq!(head.headers()["vary"], "accept-encoding");
    let stored = stored_size(&head);
    assert!(stored < n / 2, "stored {stored} of {n}");
    t.wait_shard_files(6).await;
    // Six shards of 4+2 hold 1.5× the stored stream (plus block checksums).
    let on_disk = shard_bytes(&t);
    assert!(on_disk < n, "{on_disk} bytes of shards for {n} bytes of text");

    let got = t.get("book.txt").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["etag"], format!("\"{}\"", ContentHash::of(&body)));
    assert!(got.headers().get("content-encoding").is_none());
    assert_eq!(got.bytes().await.unwrap(), body);

    // Ranges: frames are 256 KiB of original bytes.
    let f = 256 * 1024u64;
    for (a, b) in [(0, 0), (n - 1, n - 1), (f - 1, f), (f, f), (f - 10, 3 * f + 10), (5, n - 1), (2 * f + 1, 2 * f + 2)]
    {
        let (status, bytes) = get_range(&t, "book.txt", &format!("bytes={a}-{b}")).await;
        assert_eq!(status, 206, "{a}-{b}");
        assert_eq!(bytes, &body[a as usize..=b as usize], "{a}-{b}");
    }
    let (status, bytes) = get_range(&t, "book.txt", "bytes=-1000").await;
    assert_eq!((status, bytes.as_slice()), (206, &body[body.len() - 1000..]));
    let (status, bytes) = get_range(&t, "book.txt", &format!("bytes={}-", n - 77)).await;
    assert_eq!((status, bytes.as_slice()), (206, &body[body.len() - 77..]));

    // A client that takes zstd gets the stored stream, which any zstd decoder reads.
    let zstd =
        t.http.get(t.url("/objects/book.txt")).header("Accept-Encoding", "gzip, zstd;q=0.9").send().await.unwrap();
    assert_eq!(zstd.status(), 200);
    assert_eq!(zstd.headers()["content-encoding"], "zstd");
    assert_eq!(zstd.headers()["content-length"], stored.to_string());
    assert_eq!(zstd.headers()["vary"], "accept-encoding");
    assert_eq!(zstd.headers()["etag"], format!("\"{}-zstd\"", ContentHash::of(&body)));
    let packed = zstd.bytes().await.unwrap();
    assert_eq!(packed.len() as u64, stored);
    assert_eq!(zstd::stream::decode_all(&packed[..]).unwrap(), body);
    let head = t.http.head(t.url("/objects/book.txt")).header("Accept-Encoding", "zstd").send().await.unwrap();
    assert_eq!(head.headers()["content-length"], stored.to_string());
    assert_eq!(head.headers()["content-encoding"], "zstd");

    // gzip only, zstd refused, or a range: the original bytes.
    for accept in ["gzip", "zstd;q=0, *", "identity"] {
        let resp = t.http.get(t.url("/objects/book.txt")).header("Accept-Encoding", accept).send().await.unwrap();
        assert!(resp.headers().get("content-encoding").is_none(), "{accept}");
        assert_eq!(resp.bytes().await.unwrap(), body, "{accept}");
    }
    let ranged = t
        .http
        .get(t.url("/objects/book.txt"))
        .header("Accept-Encoding", "zstd")
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert!(ranged.headers().get("content-encoding").is_none());
    assert_eq!(ranged.bytes().await.unwrap(), &body[10..20]);

    // Dedup is by the original bytes' hash: the same text again stores nothing.
    assert_eq!(t.put("copy.txt", body.clone()).await.status(), 200);
    assert_eq!(t.shard_files().len(), 6);
    // A digest names the original bytes.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(ContentHash::of(b).as_bytes());
    let other = text(500_000, 2);
    let ok =
        t.http.put(t.url("/objects/d.txt")).header("Digest", format!("SHA-256={}", b64(&other))).body(other.clone());
    assert_eq!(ok.send().await.unwrap().status(), 200);
    let bad =
        t.http.put(t.url("/objects/e.txt")).header("Digest", format!("SHA-256={}", b64(b"x"))).body(text(500_000, 3));
    assert_eq!(bad.send().await.unwrap().status(), 400);
    assert_eq!(t.get("d.txt").await.bytes().await.unwrap(), other);
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_data_and_tiny_objects_are_stored_as_they_are() {
    let t = cluster(CompressionConfig::default()).await;
    let random = pattern(2 * 1024 * 1024 + 3, 9);
    assert_eq!(t.put("noise.bin", random.clone()).await.status(), 200);
    let zstd = t.http.get(t.url("/objects/noise.bin")).header("Accept-Encoding", "zstd").send().await.unwrap();
    assert_eq!(stored_size(&zstd), random.len() as u64);
    assert!(zstd.headers().get("content-encoding").is_none());
    assert_eq!(zstd.bytes().await.unwrap(), random);

    // Held whole (below 64 KiB): compressed when it pays, unless below 4 KiB.
    let small = text(40_000, 4);
    assert_eq!(t.put("small.txt", small.clone()).await.status(), 200);
    let got = t.get("small.txt").await;
    assert!(stored_size(&got) < small.len() as u64 / 2, "{}", stored_size(&got));
    assert_eq!(got.bytes().await.unwrap(), small);
    let (status, part) = get_range(&t, "small.txt", "bytes=39000-39999").await;
    assert_eq!((status, part.as_slice()), (206, &small[39_000..]));
    let tiny = text(3000, 5);
    assert_eq!(t.put("tiny.txt", tiny.clone()).await.status(), 200);
    let got = t.get("tiny.txt").await;
    assert_eq!(stored_size(&got), 3000);
    assert_eq!(got.bytes().await.unwrap(), tiny);
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_off_stores_text_as_it_is() {
    let t = cluster(CompressionConfig::off()).await;
    let body = text(1024 * 1024, 6);
    assert_eq!(t.put("plain.txt", body.clone()).await.status(), 200);
    let got = t.http.get(t.url("/objects/plain.txt")).header("Accept-Encoding", "zstd").send().await.unwrap();
    assert_eq!(stored_size(&got), body.len() as u64);
    assert!(got.headers().get("content-encoding").is_none());
    assert_eq!(got.bytes().await.unwrap(), body);
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_object_missing_a_shard_file_reads_right_and_is_repaired() {
    let t = cluster(CompressionConfig::default()).await;
    let body = text(2 * 1024 * 1024, 7);
    assert_eq!(t.put("lost.txt", body.clone()).await.status(), 200);
    t.wait_shard_files(6).await;
    // Lose a data shard: the read must rebuild stripes from parity before decoding.
    let victim = t.shard_files().into_iter().find(|p| p.to_string_lossy().ends_with(".0")).expect("shard 0 file");
    std::fs::remove_file(&victim).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = t.get("lost.txt").await;
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap(), body);
        let (status, part) = get_range(&t, "lost.txt", "bytes=300000-1300000").await;
        assert_eq!((status, part.as_slice()), (206, &body[300_000..=1_300_000]));
        if t.shard_files().len() == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "shard not rebuilt: {} files", t.shard_files().len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rebuilt shard serves too: reads right with another shard gone.
    let other = t.shard_files().into_iter().find(|p| p.to_string_lossy().ends_with(".1")).expect("shard 1 file");
    std::fs::remove_file(&other).unwrap();
    let zstd = t.http.get(t.url("/objects/lost.txt")).header("Accept-Encoding", "zstd").send().await.unwrap();
    assert_eq!(zstd::stream::decode_all(&zstd.bytes().await.unwrap()[..]).unwrap(), body);
    t.cluster.shutdown().await;
}
