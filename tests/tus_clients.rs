//! The reference tus clients, for real, against `cairn dev` in-process: tuspy
//! (Python, installed by `.ci/run` into `target/tuspy`) and tus-js-client (npm,
//! `npm ci` in `tests/tus-js`). Each uploads a file whole, then an interrupted
//! upload that it resumes; tuspy also sends `Upload-Checksum` and, patched to send
//! a wrong one, must see 460. Every object is read back and its SHA-256 compared
//! with the file's. A missing interpreter or package skips loudly, or fails under
//! `CAIRN_REQUIRE_SERVICES=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{pattern, services_required, TestCluster};
use sha2::Digest;

/// The longest a client script may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skips (or, under CAIRN_REQUIRE_SERVICES=1, fails) with `why`.
fn missing(test: &str, why: &str) -> bool {
    if services_required() {
        panic!("{test}: {why} and CAIRN_REQUIRE_SERVICES=1");
    }
    eprintln!("SKIPPED {test}: {why}; set CAIRN_REQUIRE_SERVICES=1 to fail instead");
    false
}

/// Runs `program args` in `dir` with `env`, bounded in time; its stdout, or a
/// panic with its output when it fails.
async fn run(program: &str, args: &[&str], dir: &Path, env: &[(&str, String)]) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out =
        tokio::time::timeout(CLIENT_TIMEOUT, cmd.output()).await.expect("client finished in time").expect("spawn");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn stored_sha256(t: &TestCluster, name: &str) -> String {
    let r = t.get(name).await;
    assert_eq!(r.status(), 200, "GET {name}");
    hex::encode(sha2::Sha256::digest(r.bytes().await.unwrap()))
}

/// A 1.5 MB file (not a multiple of any chunk size), and its SHA-256.
fn source_file(dir: &Path) -> (PathBuf, String) {
    let data = pattern(1_500_007, 77);
    let path = dir.join("source.bin");
    std::fs::write(&path, &data).unwrap();
    (path, hex::encode(sha2::Sha256::digest(&data)))
}

fn tuspy_available() -> bool {
    let deps = root().join("target/tuspy");
    std::process::Command::new("python3")
        .args(["-c", "import tusclient"])
        .env("PYTHONPATH", &deps)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn tuspy_uploads_resumes_and_checksums() {
    if !tuspy_available()
        && !missing("tuspy", "python3 with tuspy in target/tuspy not found (pip install --target target/tuspy tuspy)")
    {
        return;
    }
    let t = common::start_custom(6, |c| c.uploads.part_size = 128 * 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = source_file(dir.path());
    let script = root().join("tests/tus-py/tuspy_check.py");
    let env = [("PYTHONPATH", root().join("target/tuspy").display().to_string())];
    let out = run("python3", &[script.to_str().unwrap(), &t.base, file.to_str().unwrap()], dir.path(), &env).await;
    assert!(out.contains("mismatch 460"), "{out}");
    for name in ["py-full", "py-resumed", "py-checked"] {
        assert_eq!(stored_sha256(&t, name).await, sha, "{name}");
    }
    assert_eq!(t.get("py-bad").await.status(), 404, "the mismatched upload made no object");
}

#[tokio::test]
async fn tus_js_client_uploads_and_resumes() {
    let js = root().join("tests/tus-js");
    let node_ok =
        std::process::Command::new("node").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if (!node_ok || !js.join("node_modules/tus-js-client").is_dir())
        && !missing("tus-js-client", "node or tests/tus-js/node_modules missing (npm ci in tests/tus-js)")
    {
        return;
    }
    let t = common::start_custom(6, |c| c.uploads.part_size = 128 * 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = source_file(dir.path());
    let out = run("node", &["upload.js", &t.base, file.to_str().unwrap()], &js, &[]).await;
    assert!(out.contains("resumed"), "{out}");
    for name in ["js-full", "js-resumed"] {
        assert_eq!(stored_sha256(&t, name).await, sha, "{name}");
    }
}
