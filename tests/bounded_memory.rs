//! Memory stays bounded by configuration, not by object size: a 1 GiB PUT and GET
//! through a `cairn dev` process keep its peak resident set under 100 MiB, and 64
//! concurrent 256 MiB PUTs with 64 GETs keep an API server under 512 MiB.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const GIB: usize = 1 << 30;
const CHUNK: usize = 1 << 20;
const LIMIT_KIB: u64 = 100 * 1024;

/// The two heavy tests of this file take turns: each alone is what it measures.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _turn = HEAVY.lock().await;
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

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().expect("df runs");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

/// A streamed body of `len` bytes (a multiple of `CHUNK`) repeating `block`.
fn body_of(block: &bytes::Bytes, len: usize) -> reqwest::Body {
    let block = block.clone();
    reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..len / CHUNK).map(move |_| Ok::<_, std::io::Error>(block.clone())),
    ))
}

/// Starts six `cairn data` processes and one `cairn api` on the real RabbitMQ, on
/// ephemeral ports, and waits until the API server sees all six; returns the
/// processes (API server first) and the API's base URL.
async fn start_layout(dir: &std::path::Path) -> (Vec<common::Proc>, String) {
    let free_port = || std::net::TcpListener::bind("127.29.7.1:0").unwrap().local_addr().unwrap().port();
    let api_addr = format!("127.29.7.1:{}", free_port());
    let meta = format!("sqlite:{}", dir.join("meta.sqlite").display());
    let mut procs = vec![common::Proc::spawn(
        dir,
        "api",
        &["api", "--listen", &api_addr, "--bus", common::BROKER_URL, "--meta", &meta, "--cache-size", "0"],
    )];
    for i in 1..=6 {
        procs.push(common::Proc::data_server(dir, i, &format!("127.29.6.{i}:0")));
    }
    let base = format!("http://{api_addr}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    if !common::wait_live(&http, &base, 6).await {
        for p in &procs {
            eprintln!("{}", p.log_tail());
        }
        panic!("the API server does not see six data servers");
    }
    (procs, base)
}

/// The load on the multi-process layout: 64 concurrent 256 MiB PUTs plus
/// 64 concurrent GETs of 256 MiB objects. Every request succeeds or gets a clean
/// 503 (past the upload limit), and the API server stays under 512 MiB. The
/// objects shrink when the disk has no room for 68 × 256 MiB × 1.5 (said loudly):
/// the bound under test is per request, not per byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_large_puts_and_sixty_four_gets_keep_the_api_server_under_512_mib() {
    const CLIENTS: usize = 64;
    const LIMIT_KIB: u64 = 512 * 1024;
    if !common::rabbitmq_reachable("sixty_four_large_puts_and_sixty_four_gets_keep_the_api_server_under_512_mib").await
    {
        return;
    }
    let _turn = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let room = free_bytes(dir.path()).saturating_sub(8 << 30);
    let mut size = 256 << 20;
    while size > 16 << 20 && (CLIENTS + 4) as u64 * size as u64 * 3 / 2 > room {
        size /= 2;
    }
    if size < 256 << 20 {
        eprintln!("NOTE: {} GiB free; PUTs of {} MiB instead of 256 MiB", room >> 30, size >> 20);
    }
    let (procs, base) = start_layout(dir.path()).await;
    let api_pid = procs[0].child.id();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Four objects for the GETs to read while the PUTs run.
    let mut readable = Vec::new();
    for i in 0..4u64 {
        let block = bytes::Bytes::from(common::pattern(CHUNK, 100 + i));
        let mut digest = Sha256::new();
        for _ in 0..size / CHUNK {
            digest.update(&block);
        }
        let put = http.put(format!("{base}/objects/read{i}")).body(body_of(&block, size)).send().await.unwrap();
        assert_eq!(put.status(), 200);
        readable.push(hex::encode(digest.finalize()));
    }

    // The uploads go through curl, as a real client would send them: with
    // `Expect: 100-continue` (curl's default for bodies over 1 MiB, as S3 SDKs
    // do), so an upload refused at the limit gets its 503 before sending its body.
    // One file serves every upload: each still streams whole (no digest is sent,
    // so dedup happens only once the body is in), which is what memory is about.
    let upload = dir.path().join("upload.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&upload).unwrap());
        let block = common::pattern(CHUNK, 1000);
        for _ in 0..size / CHUNK {
            std::io::Write::write_all(&mut f, &block).unwrap();
        }
    }
    let mut requests = Vec::new();
    for i in 0..CLIENTS {
        let (url, file) = (format!("{base}/objects/load{i}"), upload.clone());
        requests.push(tokio::spawn(async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
                .arg(&file)
                .arg(&url)
                .output()
                .await
                .expect("curl runs");
            let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
            (code, Some(String::from_utf8_lossy(&out.stderr).into_owned()))
        }));
        let (http, base, want) = (http.clone(), base.clone(), readable[i % 4].clone());
        requests.push(tokio::spawn(async move {
            let resp = http.get(format!("{base}/objects/read{}", i % 4)).send().await.unwrap();
            let status = resp.status().as_u16();
            if status != 200 {
                return (status, None);
            }
            let mut digest = Sha256::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                digest.update(chunk.expect("a GET of a stored object streams to its end"));
            }
            assert_eq!(hex::encode(digest.finalize()), want, "GET read{} returned other bytes", i % 4);
            (status, None)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for r in requests {
        let (status, err) = r.await.unwrap();
        match status {
            200 => ok += 1,
            503 => refused += 1,
            other => panic!("a request got {other} ({err:?}); only 200 or a clean 503 is allowed"),
        }
    }
    let peak = peak_rss_kib(api_pid);
    drop(procs);
    eprintln!(
        "API server peak RSS under 64 PUTs of {} MiB + 64 GETs: {} MiB; {ok} of 128 requests answered 200, {refused} 503",
        size >> 20,
        peak / 1024
    );
    assert!(ok >= CLIENTS, "most requests must succeed, {ok} of 128 did");
    assert!(peak < LIMIT_KIB, "peak RSS {} MiB exceeds 512 MiB", peak / 1024);
}
