//! What the S3 client tests (`tests/s3_clients.rs`, `tests/s3_auth.rs`) share:
//! access keys made through `/admin/keys`, the clients found on this machine
//! (boto3 and aws-cli, or their `--target` install in `target/s3py` that `.ci/run`
//! makes when the machine lacks them; rclone), and running one client script as a
//! child process, bounded in time, with the machine's own AWS configuration kept
//! out of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::common::services_required;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `--target` install of boto3 and aws-cli `.ci/run` makes on a machine
/// without them.
pub fn s3py() -> PathBuf {
    root().join("target/s3py")
}

/// A script of `tests/s3/`.
pub fn script(name: &str) -> String {
    root().join("tests/s3").join(name).display().to_string()
}

/// An access key: its id and secret.
#[derive(Clone, Debug)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

impl Key {
    /// `id:secret`, as the scripts take it (and the native API's bearer token).
    pub fn pair(&self) -> String {
        format!("{}:{}", self.id, self.secret)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.pair())
    }
}

/// Creates a key through `POST /admin/keys` of the API server at `base` (`limits`
/// as the route takes them), authorised by `by` once the cluster has keys.
pub async fn create_key(http: &reqwest::Client, base: &str, limits: serde_json::Value, by: Option<&Key>) -> Key {
    let mut req = http.post(format!("{base}/admin/keys")).json(&limits);
    if let Some(by) = by {
        req = req.header("authorization", by.bearer());
    }
    let resp = req.send().await.expect("POST /admin/keys sent");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "POST /admin/keys {limits}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("key JSON");
    Key {
        id: v["access_key"].as_str().expect("access_key").to_string(),
        secret: v["secret_key"].as_str().expect("secret_key").to_string(),
    }
}

/// Skips (or, under CAIRN_REQUIRE_SERVICES=1, fails) with `why`; false, to return on.
pub fn missing(test: &str, why: &str) -> bool {
    if services_required() {
        panic!("{test}: {why} and CAIRN_REQUIRE_SERVICES=1");
    }
    eprintln!("SKIPPED {test}: {why}; set CAIRN_REQUIRE_SERVICES=1 to fail instead");
    false
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .env("PYTHONPATH", s3py())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether python3 can import boto3 (from the machine or `target/s3py`).
pub fn boto3_available() -> bool {
    succeeds("python3", &["-c", "import boto3"])
}

/// How to run aws-cli: `aws`, or `python3 -m awscli` from `target/s3py`; None
/// when neither runs.
pub fn aws_command() -> Option<&'static str> {
    if succeeds("aws", &["--version"]) {
        Some("aws")
    } else if succeeds("python3", &["-m", "awscli", "--version"]) {
        Some("python3 -m awscli")
    } else {
        None
    }
}

pub fn rclone_available() -> bool {
    succeeds("rclone", &["version"])
}

/// A client's child process: its environment is the machine's minus anything
/// that would point it elsewhere (proxies, AWS profiles and config files), plus
/// `PYTHONPATH` for `target/s3py` and the caller's `env`.
pub struct Client {
    cmd: tokio::process::Command,
    label: String,
}

impl Client {
    pub fn new(program: &str, args: &[&str], dir: &Path) -> Client {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CA_BUNDLE",
        ] {
            cmd.env_remove(var);
        }
        // Files that do not exist: no machine-wide profile, region or credentials.
        cmd.env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-aws-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("RCLONE_CONFIG", dir.join("no-rclone.conf"))
            .env("NO_PROXY", "*")
            .env("PYTHONPATH", s3py())
            .env("PYTHONUNBUFFERED", "1");
        Client { cmd, label: format!("{program} {}", args.join(" ")) }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Client {
        self.cmd.env(key, value);
        self
    }

    /// Signs with `key` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    pub fn key(self, key: &Key) -> Client {
        self.env("AWS_ACCESS_KEY_ID", &key.id).env("AWS_SECRET_ACCESS_KEY", &key.secret)
    }

    /// Runs it to the end within `limit`; its stdout (printed too, with the time it
    /// took), or a panic with all its output when it fails or overruns.
    pub async fn run(mut self, limit: Duration) -> String {
        let start = Instant::now();
        let out = match tokio::time::timeout(limit, self.cmd.output()).await {
            Ok(out) => out.unwrap_or_else(|e| panic!("{}: cannot start: {e}", self.label)),
            Err(_) => panic!("{} did not finish within {limit:?} (killed)", self.label),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("--- {} ({:.1}s)\n{stdout}", self.label, start.elapsed().as_secs_f64());
        assert!(out.status.success(), "{} failed ({}):\n{stdout}\n--- stderr\n{stderr}", self.label, out.status);
        stdout
    }
}

/// The boto3 suite's checks, all of which must say ok.
pub const BOTO3_CHECKS: &[&str] = &[
    "buckets",
    "reserved_bucket_names",
    "put_get_metadata",
    "empty_object",
    "ranges",
    "conditional_get",
    "listings",
    "versions",
    "copy",
    "delete_objects",
    "multipart_parts",
    "multipart_abort",
    "multipart_big",
    "presigned",
    "errors",
];

/// Asserts that a script's output says `ok <check>` for each of `checks`: a
/// check the script skipped or never reached fails the test.
pub fn assert_checks(out: &str, checks: &[&str]) {
    for check in checks {
        assert!(
            out.lines().any(|l| l == format!("ok {check}") || l.starts_with(&format!("ok {check} ("))),
            "no 'ok {check}' in:\n{out}"
        );
    }
}
