//! The `cairn` client (put, get, ls, rm, versions, stat) as a user runs it: the
//! built binary as a child process against an in-process cluster, through a TCP
//! proxy that breaks or slows connections, and against a fake server that lies.
//! Large puts go through the API server's own tus endpoints (`/uploads`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::content::ContentHash;
use common::{pattern, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any one `cairn` run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// The result of one `cairn` run.
struct Run {
    code: i32,
    stdout: String,
    stdout_bytes: Vec<u8>,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// A `cairn` command with the test's state dir and no proxy from the environment.
fn command(state: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args)
        .env("CAIRN_STATE_DIR", state)
        .env_remove("CAIRN_ENDPOINT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cairn ARGS` to its end (bounded by [`RUN_LIMIT`]).
async fn cairn(state: &Path, args: &[&str]) -> Run {
    let out = tokio::time::timeout(RUN_LIMIT, command(state, args).output())
        .await
        .unwrap_or_else(|_| panic!("cairn {args:?} ran past {RUN_LIMIT:?}"))
        .expect("cairn runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stdout_bytes: out.stdout.clone(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("cairn {args:?} -> {}\n{}", run.code, run.stderr.trim_end());
    run
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn hex_of(bytes: &[u8]) -> String {
    ContentHash::of(bytes).to_hex()
}

// ---------------------------------------------------------------------------
// A TCP proxy that counts, cuts and slows.

/// How the proxy mistreats connections.
#[derive(Default)]
struct Plan {
    /// The first `cut_connections` connections are cut after this many bytes
    /// client → server ...
    cut_up_after: Option<u64>,
    /// ... or server → client.
    cut_down_after: Option<u64>,
    cut_connections: usize,
}

/// A proxy on loopback forwarding to `upstream`, its tasks aborted when dropped.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
    /// Bytes client → server on each connection, in the order they were accepted.
    up_by_connection: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
    /// Bytes server → client on each connection.
    down_by_connection: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
    /// Bytes per second in each direction; 0: unlimited. Changeable while running.
    rate: Arc<AtomicU64>,
    _tasks: tokio::task::JoinSet<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, plan: Plan) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let connections = Arc::new(AtomicUsize::new(0));
        let rate = Arc::new(AtomicU64::new(0));
        let up_by_connection = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        let (u, d, c, r) = (up.clone(), down.clone(), connections.clone(), rate.clone());
        let down_by_connection = Arc::new(std::sync::Mutex::new(Vec::new()));
        let per = up_by_connection.clone();
        let per_down = down_by_connection.clone();
        tasks.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let cut = n < plan.cut_connections;
                let (up_limit, down_limit) = if cut { (plan.cut_up_after, plan.cut_down_after) } else { (None, None) };
                let (u, d, r) = (u.clone(), d.clone(), r.clone());
                let mine = Arc::new(AtomicU64::new(0));
                per.lock().unwrap().push(mine.clone());
                let mine_down = Arc::new(AtomicU64::new(0));
                per_down.lock().unwrap().push(mine_down.clone());
                conns.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, up_limit, vec![u, mine], r.clone()) => {}
                        _ = pump(sr, cw, down_limit, vec![d, mine_down], r) => {}
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Proxy { addr, up, down, connections, up_by_connection, down_by_connection, rate, _tasks: tasks }
    }

    /// Bytes client → server on the connections accepted from the `first`th on.
    fn up_since_connection(&self, first: usize) -> u64 {
        self.up_by_connection.lock().unwrap().iter().skip(first).map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Bytes server → client on the connections accepted from the `first`th on.
    fn down_since_connection(&self, first: usize) -> u64 {
        self.down_by_connection.lock().unwrap().iter().skip(first).map(|c| c.load(Ordering::SeqCst)).sum()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copies `from` to `to`, counting, until EOF or `limit` bytes (then the
/// connection is dropped: a cut), at most `rate` bytes a second.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    limit: Option<u64>,
    counters: Vec<Arc<AtomicU64>>,
    rate: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        let r = rate.load(Ordering::SeqCst);
        let want = if r > 0 { buf.len().min((r / 20).max(1) as usize) } else { buf.len() };
        let Ok(n) = from.read(&mut buf[..want]).await else { return };
        if n == 0 {
            return;
        }
        let n = match limit {
            Some(l) if sent + n as u64 >= l => (l - sent) as usize,
            _ => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        sent += n as u64;
        for counter in &counters {
            counter.fetch_add(n as u64, Ordering::SeqCst);
        }
        if limit.is_some_and(|l| sent >= l) {
            return;
        }
        if r > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / r as f64)).await;
        }
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_stat_ls_versions_rm_as_a_script_sees_them() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ep = ["--endpoint", &t.base];
    let body = pattern(100_000, 1);
    let file = write_file(dir.path(), "doc.bin", &body);

    let put = cairn(&state, &[&["put", s(&file), "docs/a.bin", "--json"][..], &ep].concat()).await;
    assert_eq!(put.code, 0);
    let put = put.json();
    assert_eq!(put["version"], 1);
    assert_eq!(put["size"], 100_000);
    assert_eq!(put["hash"], hex_of(&body));

    let out = dir.path().join("out.bin");
    let get = cairn(&state, &[&["get", "docs/a.bin", s(&out)][..], &ep].concat()).await;
    assert_eq!(get.code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), body);
    assert!(!dir.path().join("out.bin.partial").exists() && !dir.path().join("out.bin.partial.json").exists());
    // A relative FILE: the partial file, its sidecar and the rename live in the
    // current directory.
    let mut relative = command(&state, &[&["get", "docs/a.bin", "rel.bin"][..], &ep].concat());
    let rel = tokio::time::timeout(RUN_LIMIT, relative.current_dir(dir.path()).output()).await.unwrap().unwrap();
    assert!(rel.status.success(), "{}", String::from_utf8_lossy(&rel.stderr));
    assert_eq!(std::fs::read(dir.path().join("rel.bin")).unwrap(), body);
    let to_stdout = cairn(&state, &[&["get", "docs/a.bin"][..], &ep].concat()).await;
    assert_eq!(to_stdout.code, 0);
    assert_eq!(to_stdout.stdout_bytes, body, "the object on stdout");

    let stat = cairn(&state, &[&["stat", "docs/a.bin", "--json"][..], &ep].concat()).await;
    assert_eq!(stat.code, 0);
    assert_eq!(stat.json(), put, "stat describes the version put made");

    // Five names under docs/, listed two a page: the client follows every page.
    for name in ["docs/b", "docs/c", "docs/d", "other/x"] {
        let put = cairn(&state, &[&["put", s(&file), name, "--quiet"][..], &ep].concat()).await;
        assert_eq!(put.code, 0);
    }
    let small = write_file(dir.path(), "v2", b"second");
    assert_eq!(cairn(&state, &[&["put", s(&small), "docs/d"][..], &ep].concat()).await.code, 0);
    let ls = cairn(&state, &[&["ls", "docs/", "--json", "--page-size", "2"][..], &ep].concat()).await;
    assert_eq!(ls.code, 0);
    let names: Vec<String> = ls.json().as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().into()).collect();
    assert_eq!(names, ["docs/a.bin", "docs/b", "docs/c", "docs/d"]);
    let table = cairn(&state, &[&["ls"][..], &ep].concat()).await;
    assert_eq!(table.stdout.lines().count(), 6, "a header and five names:\n{}", table.stdout);

    let versions = cairn(&state, &[&["versions", "docs/d", "--json"][..], &ep].concat()).await;
    assert_eq!(versions.code, 0);
    let v = versions.json();
    let sizes: Vec<u64> = v.as_array().unwrap().iter().map(|o| o["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [100_000, 6], "oldest first");

    let rm = cairn(&state, &[&["rm", "docs/d", "--json"][..], &ep].concat()).await;
    assert_eq!(rm.code, 0);
    assert_eq!(rm.json()["version"], 3);
    assert_eq!(rm.json()["deleted"], true);
    let gone = cairn(&state, &[&["get", "docs/d", s(&dir.path().join("d"))][..], &ep].concat()).await;
    assert_eq!(gone.code, 3, "a deleted name is not found");
    assert!(gone.stderr.starts_with("cairn: ") && gone.stderr.contains("docs/d"), "{}", gone.stderr);
    assert!(!dir.path().join("d").exists() && !dir.path().join("d.partial").exists());
    let old = cairn(&state, &[&["get", "docs/d", "--version", "2"][..], &ep].concat()).await;
    assert_eq!((old.code, old.stdout.as_str()), (0, "second"), "old versions stay readable");
    assert_eq!(cairn(&state, &[&["rm", "docs/d"][..], &ep].concat()).await.code, 3, "already deleted");
    assert_eq!(cairn(&state, &[&["stat", "never"][..], &ep].concat()).await.code, 3);
    assert_eq!(cairn(&state, &[&["versions", "never"][..], &ep].concat()).await.code, 3);
    assert_eq!(cairn(&state, &[&["get", "never"][..], &ep].concat()).await.code, 3);
    let bad = cairn(&state, &[&["stat", "a/../b"][..], &ep].concat()).await;
    assert_eq!(bad.code, 2, "a name no server accepts: {}", bad.stderr);
    assert_eq!(cairn(&state, &["get"]).await.code, 2, "usage");
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = format!("http://127.0.0.1:{port}");
    let file = write_file(dir.path(), "f", b"x");
    for args in [
        vec!["ls", "--endpoint", &ep, "--retries", "2"],
        vec!["get", "n", "--endpoint", &ep, "--retries", "2"],
        vec!["put", s(&file), "n", "--endpoint", &ep, "--retries", "2"],
    ] {
        let run = cairn(dir.path(), &args).await;
        assert_eq!(run.code, 5, "{args:?}");
        assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_goes_through_tus_and_reads_back() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let body = pattern(1_000_000, 2);
    let file = write_file(dir.path(), "big.bin", &body);
    // A proxy that only counts: the upload is several PATCHes on it.
    let proxy = Proxy::start(t.cluster.api_addr, Plan::default()).await;
    let ep = proxy.url();
    let args =
        ["put", s(&file), "big", "--json", "--resumable-above", "64KiB", "--chunk-size", "256KiB", "--endpoint", &ep];
    let put = cairn(&state, &args).await;
    assert_eq!(put.code, 0);
    assert_eq!(put.json()["hash"], hex_of(&body));
    assert_eq!(put.json()["size"], 1_000_000);
    assert!(cairn_state_files(&state).is_empty(), "success removes the state file");
    let out = dir.path().join("big.out");
    assert_eq!(cairn(&state, &["get", "big", s(&out), "--endpoint", &t.base]).await.code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), body);
    t.cluster.shutdown().await;
}

/// Every upload state file under the state dir.
fn cairn_state_files(state: &Path) -> Vec<PathBuf> {
    common::files_under(&state.join("uploads")).into_iter().filter(|p| !p.to_string_lossy().ends_with(".tmp")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_a_cut_connection_resumes_by_itself_without_starting_over() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let size = 2 << 20;
    let body = pattern(size, 3);
    let file = write_file(dir.path(), "big.bin", &body);
    let plan = Plan { cut_up_after: Some(900 << 10), cut_connections: 1, ..Plan::default() };
    let proxy = Proxy::start(t.cluster.api_addr, plan).await;
    let ep = proxy.url();
    let args =
        ["put", s(&file), "cut", "--json", "--resumable-above", "64KiB", "--chunk-size", "256KiB", "--endpoint", &ep];
    let put = cairn(&state, &args).await;
    assert_eq!(put.code, 0);
    assert_eq!(put.json()["hash"], hex_of(&body));
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2, "the cut connection was replaced");
    let sent = proxy.up.load(Ordering::SeqCst);
    // Starting over would send the first 900 KiB twice; resuming resends at most
    // the chunk that was cut (plus headers).
    assert!(sent < size as u64 + (256 << 10) + (64 << 10), "{sent} bytes sent for {size}");
    let out = dir.path().join("cut.out");
    assert_eq!(cairn(&state, &["get", "cut", s(&out), "--endpoint", &t.base]).await.code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), body);
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_through_a_cut_connection_resumes_with_a_range_and_verifies() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 2 << 20;
    let body = pattern(size, 4);
    assert_eq!(t.put("cut-get", body.clone()).await.status(), 200);
    let plan = Plan { cut_down_after: Some(700 << 10), cut_connections: 1, ..Plan::default() };
    let proxy = Proxy::start(t.cluster.api_addr, plan).await;
    let out = dir.path().join("got.bin");
    let get = cairn(dir.path(), &["get", "cut-get", s(&out), "--json", "--endpoint", &proxy.url()]).await;
    assert_eq!(get.code, 0);
    assert_eq!(get.json()["hash"], hex_of(&body));
    assert_eq!(std::fs::read(&out).unwrap(), body);
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2);
    let received = proxy.down.load(Ordering::SeqCst);
    assert!(received < size as u64 + (64 << 10), "{received} bytes received for {size}: a range, not a restart");
    t.cluster.shutdown().await;
}

/// The offset in a "resuming … at byte N" hint.
fn resume_offset(stderr: &str) -> u64 {
    stderr
        .split("at byte ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume offset in {stderr}"))
}

/// Waits (at most 60 s) until `ready` holds.
async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_put_is_finished_by_put_resume() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let size = 4 << 20;
    let body = pattern(size, 5);
    let file = write_file(dir.path(), "big.bin", &body);
    let proxy = Proxy::start(t.cluster.api_addr, Plan::default()).await;
    proxy.rate.store(2 << 20, Ordering::SeqCst);
    let ep = proxy.url();
    let args = ["put", s(&file), "killed", "--resumable-above", "64KiB", "--chunk-size", "128KiB", "--endpoint", &ep];
    let mut child = command(&state, &args).spawn().unwrap();
    wait_until("a state file and 1 MiB sent", || {
        !cairn_state_files(&state).is_empty() && proxy.up.load(Ordering::SeqCst) > 1 << 20
    })
    .await;
    child.kill().await.unwrap();
    proxy.rate.store(0, Ordering::SeqCst);
    let killed_connections = proxy.connections.load(Ordering::SeqCst);

    let resumed = cairn(&state, &[&args[..], &["--resume", "--json"]].concat()).await;
    assert_eq!(resumed.code, 0);
    assert_eq!(resumed.json()["hash"], hex_of(&body));
    let at = resume_offset(&resumed.stderr);
    assert!(at >= 128 << 10, "resumed at {at}, after the chunks the killed client sent");
    let resent = proxy.up_since_connection(killed_connections);
    assert!(resent < size as u64 - at + (64 << 10), "the resume sent {resent} bytes: only the rest");
    assert!(cairn_state_files(&state).is_empty());
    let out = dir.path().join("killed.out");
    assert_eq!(cairn(&state, &["get", "killed", s(&out), "--endpoint", &t.base]).await.code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), body);
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_without_resume_hints_at_the_saved_upload_and_starts_afresh() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let body = pattern(300_000, 6);
    let file = write_file(dir.path(), "f.bin", &body);
    let proxy = Proxy::start(t.cluster.api_addr, Plan::default()).await;
    proxy.rate.store(200_000, Ordering::SeqCst);
    let ep = proxy.url();
    let args = ["put", s(&file), "hinted", "--resumable-above", "64KiB", "--chunk-size", "64KiB", "--endpoint", &ep];
    let mut child = command(&state, &args).spawn().unwrap();
    wait_until("a state file", || !cairn_state_files(&state).is_empty()).await;
    child.kill().await.unwrap();
    proxy.rate.store(0, Ordering::SeqCst);
    let again = cairn(&state, &args).await;
    assert_eq!(again.code, 0);
    assert!(again.stderr.contains("--resume continues it"), "{}", again.stderr);
    assert!(cairn_state_files(&state).is_empty());
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_get_is_finished_by_get_resume() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 4 << 20;
    let body = pattern(size, 7);
    assert_eq!(t.put("slow-get", body.clone()).await.status(), 200);
    let proxy = Proxy::start(t.cluster.api_addr, Plan::default()).await;
    proxy.rate.store(2 << 20, Ordering::SeqCst);
    let out = dir.path().join("slow.bin");
    let partial = dir.path().join("slow.bin.partial");
    let args = ["get", "slow-get", s(&out), "--endpoint", &proxy.url()];
    let mut child = command(dir.path(), &args).spawn().unwrap();
    wait_until("1 MiB in the partial file", || std::fs::metadata(&partial).is_ok_and(|m| m.len() > 1 << 20)).await;
    child.kill().await.unwrap();
    proxy.rate.store(0, Ordering::SeqCst);
    assert!(!out.exists());
    assert!(dir.path().join("slow.bin.partial.json").exists(), "the version is pinned next to the partial file");
    // A new version in between: the resume still finishes the pinned one.
    assert_eq!(t.put("slow-get", "newer").await.status(), 200);
    let killed_connections = proxy.connections.load(Ordering::SeqCst);
    let resumed = cairn(dir.path(), &[&args[..], &["--resume"]].concat()).await;
    assert_eq!(resumed.code, 0);
    assert!(resumed.stderr.contains("resuming slow-get version 1 at byte"), "{}", resumed.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), body);
    let at = resume_offset(&resumed.stderr);
    assert!(at > 1 << 20, "resumed at {at}");
    let fetched = proxy.down_since_connection(killed_connections);
    assert!(fetched < size as u64 - at + (16 << 10), "the resume fetched {fetched} bytes: only the rest");
    assert!(!partial.exists() && !dir.path().join("slow.bin.partial.json").exists());
    t.cluster.shutdown().await;
}

/// A server whose ETag does not match the bytes it sends.
async fn lying_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::routing::get;
    let lie = ContentHash::of(b"something else").to_hex();
    let app = axum::Router::new().route(
        "/objects/{*name}",
        get(move || async move {
            ([("x-cairn-version", "1".to_string()), ("etag", format!("\"{lie}\""))], "the bytes actually sent")
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

#[tokio::test]
async fn a_get_whose_bytes_do_not_match_the_etag_exits_4_and_leaves_no_file() {
    let (addr, server) = lying_server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lie.bin");
    let get = cairn(dir.path(), &["get", "lie", s(&out), "--endpoint", &format!("http://{addr}")]).await;
    assert_eq!(get.code, 4);
    assert!(get.stderr.contains("integrity"), "{}", get.stderr);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file, no partial, no sidecar");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_put_of_a_file_changed_behind_its_mtime_exits_4_and_stores_nothing() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let size = 1 << 20;
    let file = write_file(dir.path(), "f.bin", &pattern(size, 8));
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let proxy = Proxy::start(t.cluster.api_addr, Plan::default()).await;
    proxy.rate.store(512 << 10, Ordering::SeqCst);
    let ep = proxy.url();
    let args = ["put", s(&file), "changed", "--resumable-above", "64KiB", "--chunk-size", "64KiB", "--endpoint", &ep];
    let mut child = command(&state, &args).spawn().unwrap();
    wait_until("a state file", || !cairn_state_files(&state).is_empty()).await;
    child.kill().await.unwrap();
    proxy.rate.store(0, Ordering::SeqCst);
    // The last byte changes; size and mtime stay, so the state file still matches.
    let mut changed = std::fs::read(&file).unwrap();
    *changed.last_mut().unwrap() ^= 0xff;
    std::fs::write(&file, &changed).unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(mtime).unwrap();
    let resumed = cairn(&state, &[&args[..], &["--resume"]].concat()).await;
    assert_eq!(resumed.code, 4, "{}", resumed.stderr);
    assert!(resumed.stderr.contains("changed"), "names the object: {}", resumed.stderr);
    assert!(cairn_state_files(&state).is_empty(), "a refused upload is not resumed again");
    assert_eq!(cairn(&state, &["stat", "changed", "--endpoint", &t.base]).await.code, 3, "nothing stored");
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_resume_of_an_upload_the_server_dropped_starts_afresh_and_says_so() {
    let t = start("1+1", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let body = pattern(600_000, 9);
    let file = write_file(dir.path(), "f.bin", &body);
    let proxy = Proxy::start(t.cluster.api_addr, Plan::default()).await;
    proxy.rate.store(200_000, Ordering::SeqCst);
    let ep = proxy.url();
    let args = ["put", s(&file), "dropped", "--resumable-above", "64KiB", "--chunk-size", "64KiB", "--endpoint", &ep];
    let mut child = command(&state, &args).spawn().unwrap();
    wait_until("a state file", || !cairn_state_files(&state).is_empty()).await;
    child.kill().await.unwrap();
    proxy.rate.store(0, Ordering::SeqCst);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cairn_state_files(&state)[0]).unwrap()).unwrap();
    let url = saved["upload_url"].as_str().unwrap();
    let terminated = t.http.delete(url).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(terminated.status(), 204);
    let resumed = cairn(&state, &[&args[..], &["--resume", "--json"]].concat()).await;
    assert_eq!(resumed.code, 0);
    assert!(resumed.stderr.contains("gone from the server; starting afresh"), "{}", resumed.stderr);
    assert_eq!(resumed.json()["hash"], hex_of(&body));
    assert!(cairn_state_files(&state).is_empty());
    t.cluster.shutdown().await;
}
