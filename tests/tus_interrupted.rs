//! The interrupted 256 MiB upload on the multi-process layout: six data servers and
//! two API servers as `cairn` processes on the real RabbitMQ, sharing one SQLite
//! file, and a tuspy client in a child process. The client is killed with SIGKILL
//! several times mid-upload; between kills the API server that started the upload
//! is restarted, and the upload resumes through the other one; midway one data
//! server is killed for good. The object read back must have the source file's
//! SHA-256: the API tier kept nothing, and the acknowledged bytes were redundant.
//!
//! Its addresses (127.29.3.x and 127.29.4.x, port 12345) are its own, so it does
//! not collide with `tests/seed_layout.rs`. Without a broker or tuspy it says
//! SKIPPED, unless `CAIRN_REQUIRE_SERVICES=1` makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{rabbitmq_reachable, services_required, wait_live, Proc, BROKER_URL};
use sha2::{Digest, Sha256};

const API: [&str; 2] = ["127.29.4.1:12345", "127.29.4.2:12345"];
const SIZE: usize = 256 << 20;
/// The longest the whole scenario may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(600);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn api_server(dir: &Path, i: usize, meta: &str, generation: usize) -> Proc {
    Proc::spawn(
        dir,
        &format!("api{}-{generation}", i + 1),
        &[
            "api",
            "--listen",
            API[i],
            "--bus",
            BROKER_URL,
            "--meta",
            meta,
            "--heartbeat-expiry",
            "1s",
            "--cache-size",
            "0",
        ],
    )
}

/// The tuspy client of `tests/tus-py/tuspy_resume.py`, through API server `api`.
fn client(dir: &Path, api: usize, file: &Path, url_file: &Path) -> Child {
    let log = std::fs::File::create(dir.join("client.log")).unwrap();
    Command::new("python3")
        .arg(root().join("tests/tus-py/tuspy_resume.py"))
        .args([format!("http://{}", API[api]).as_str(), file.to_str().unwrap(), url_file.to_str().unwrap(), "big.bin"])
        .env("PYTHONPATH", root().join("target/tuspy"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("python3 starts")
}

/// The upload's offset as API server `api` reports it (None: no answer).
async fn offset(http: &reqwest::Client, api: usize, path: &str) -> Option<u64> {
    let r = http.head(format!("http://{}{path}", API[api])).header("Tus-Resumable", "1.0.0").send().await.ok()?;
    r.headers().get("upload-offset")?.to_str().ok()?.parse().ok()
}

fn upload_path(url_file: &Path) -> Option<String> {
    let url = std::fs::read_to_string(url_file).ok()?;
    Some(format!("/uploads/{}", url.trim().rsplit('/').next()?))
}

/// Waits until the client has the upload past `bytes` (seen through API server
/// `api`), or has exited.
async fn wait_past(
    http: &reqwest::Client,
    api: usize,
    url_file: &Path,
    bytes: u64,
    client: &mut Child,
    start: Instant,
) {
    loop {
        assert!(start.elapsed() < DEADLINE, "the upload did not get past {bytes} bytes in time");
        if let Some(path) = upload_path(url_file) {
            if offset(http, api, &path).await.is_some_and(|o| o >= bytes) {
                return;
            }
        }
        if client.try_wait().unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tuspy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import tusclient"])
        .env("PYTHONPATH", root().join("target/tuspy"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_upload_survives_killed_clients_restarted_api_servers_and_a_lost_data_server() {
    const TEST: &str = "tus_interrupted";
    if !rabbitmq_reachable(TEST).await {
        return;
    }
    if !tuspy_available() {
        assert!(
            !services_required(),
            "{TEST}: python3 with tuspy in target/tuspy missing and CAIRN_REQUIRE_SERVICES=1"
        );
        eprintln!(
            "SKIPPED {TEST}: python3 with tuspy in target/tuspy missing; set CAIRN_REQUIRE_SERVICES=1 to fail instead"
        );
        return;
    }
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = common::pattern(SIZE, 256);
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let sha = hex::encode(Sha256::digest(&data));
    drop(data);
    let url_file = dir.path().join("upload.url");

    let mut data_servers: Vec<Proc> =
        (0..6).map(|i| Proc::data_server(dir.path(), i + 1, &format!("127.29.3.{}:12345", i + 1))).collect();
    let meta = format!("sqlite:{}", dir.path().join("meta.sqlite").display());
    let mut apis = [api_server(dir.path(), 0, &meta, 0), api_server(dir.path(), 1, &meta, 0)];
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let all_live = |n: usize| {
        let http = http.clone();
        async move {
            for api in API {
                if !wait_live(&http, &format!("http://{api}"), n).await {
                    return false;
                }
            }
            true
        }
    };
    let dump = |procs: &[&Proc]| {
        for p in procs {
            eprintln!("{}", p.log_tail());
        }
        eprintln!("{}", std::fs::read_to_string(dir.path().join("client.log")).unwrap_or_default());
    };
    assert!(all_live(6).await, "the layout came up");

    // 1. The client starts the upload through API server 1 and is killed past 40 MiB.
    let mut c = client(dir.path(), 0, &file, &url_file);
    wait_past(&http, 1, &url_file, 40 << 20, &mut c, start).await;
    c.kill().unwrap();
    c.wait().unwrap();
    let path = upload_path(&url_file).expect("the client recorded its upload URL");
    let first = offset(&http, 1, &path).await.expect("HEAD answers");
    assert!(first >= 40 << 20 && first < SIZE as u64, "offset {first}");

    // 2. The API server that started it restarts; the client resumes through the
    //    other one and is killed again past 100 MiB.
    apis[0].kill();
    apis[0] = api_server(dir.path(), 0, &meta, 1);
    let mut c = client(dir.path(), 1, &file, &url_file);
    wait_past(&http, 1, &url_file, 100 << 20, &mut c, start).await;
    c.kill().unwrap();
    c.wait().unwrap();
    let second = offset(&http, 1, &path).await.expect("HEAD answers");
    assert!(second >= first && second < SIZE as u64, "offsets {first} then {second}");

    // 3. A data server dies for good; the first API server restarts once more.
    data_servers[2].kill();
    apis[0].kill();
    apis[0] = api_server(dir.path(), 0, &meta, 2);
    // (wait_live waits for exactly five: the dead one is dropped from both views.)
    assert!(all_live(5).await, "both API servers see the five data servers left");
    let mut c = client(dir.path(), 0, &file, &url_file);
    wait_past(&http, 0, &url_file, 180 << 20, &mut c, start).await;
    c.kill().unwrap();
    c.wait().unwrap();
    let third = offset(&http, 0, &path).await.expect("HEAD answers");
    assert!(third >= second && third < SIZE as u64, "offsets {second} then {third}");
    eprintln!("{TEST}: killed the client at offsets {first}, {second}, {third}");

    // 4. The last resume, through the second API server, runs to the end.
    let mut c = client(dir.path(), 1, &file, &url_file);
    let status = loop {
        assert!(start.elapsed() < DEADLINE, "the upload did not finish in time");
        if let Some(status) = c.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !status.success() {
        dump(&apis.iter().chain(&data_servers).collect::<Vec<_>>());
        panic!("the last client failed: {status}");
    }
    assert_eq!(offset(&http, 0, &path).await, Some(SIZE as u64));

    // The object, read through the restarted API server, is the file.
    let r = http.get(format!("http://{}/objects/big.bin", API[0])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut hasher = Sha256::new();
    let mut body = r.bytes_stream();
    use futures_util::StreamExt;
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the body streams to the end");
        n += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(n, SIZE);
    assert_eq!(hex::encode(hasher.finalize()), sha);
    eprintln!(
        "{TEST}: 256 MiB upload with 3 client kills, 2 API restarts and a lost data server in {:?}",
        start.elapsed()
    );
}
