//! Memory stays bounded by configuration, not by object size: a 1 GiB PUT and GET
//! through a `cairn dev` process keep its peak resident set under 100 MiB.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const GIB: usize = 1 << 30;
const CHUNK: usize = 1 << 20;
const LIMIT_KIB: u64 = 100 * 1024;

/// Peak resident set size of `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_put_and_get_through_cairn_dev_stay_under_100_mib() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--listen", "127.0.0.1:0", "--root", dir.path().to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let api = first.rsplit("http://").next().unwrap().trim().to_string();
    let base = format!("http://{api}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(common::wait_live(&http, &base, 6).await);

    // A 1 GiB body generated on the fly from a 1 MiB pattern.
    let block = bytes::Bytes::from(common::pattern(CHUNK, 11));
    let mut expected = Sha256::new();
    for _ in 0..GIB / CHUNK {
        expected.update(&block);
    }
    let expected = hex::encode(expected.finalize());
    let body = futures_util::stream::iter((0..GIB / CHUNK).map(move |_| Ok::<_, std::io::Error>(block.clone())));
    let put = http.put(format!("{base}/objects/big")).body(reqwest::Body::wrap_stream(body)).send().await.unwrap();
    assert_eq!(put.status(), 200, "{:?}", put.text().await);

    let got = http.get(format!("{base}/objects/big")).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-length"], GIB.to_string().as_str());
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut stream = got.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(len, GIB);
    assert_eq!(hex::encode(hasher.finalize()), expected, "the bytes read back are the bytes written");

    let peak = peak_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("cairn dev peak RSS over a 1 GiB PUT + GET: {} MiB", peak / 1024);
    assert!(peak < LIMIT_KIB, "peak RSS {} MiB exceeds 100 MiB", peak / 1024);
}
