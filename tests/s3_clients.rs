//! Real S3 clients against cairn's S3 API, each in a child process bounded in
//! time, signing (SigV4) with a key made through `POST /admin/keys`:
//!
//! - boto3 (`tests/s3/boto3_suite.py`): buckets, attributes, ranges,
//!   conditionals, listings v1/v2 with pagination, versions and delete markers,
//!   copies, batch deletes, multipart (by hand, by copy, aborted, and `upload_file`
//!   of a 100 MiB file in 8 MiB parts), presigned URLs (expired ones refused), and
//!   S3's error codes. Against `cairn dev` in-process, and on the multi-process
//!   layout (six `cairn data`, two `cairn api` on the real RabbitMQ) writing
//!   through one API server and reading through the other; the aws-cli and rclone
//!   scripts below run there too, one through each API server.
//! - aws-cli (`tests/s3/aws_cli.sh`): `s3 cp` (single and multipart), `ls`,
//!   `sync` up and back, `rm --recursive`, `s3api` versions and a multipart upload
//!   by hand.
//! - rclone (`tests/s3/rclone.sh`): `copy`, `ls`, `md5sum`, `check` (which must
//!   pass, and fail on a changed file), `sync`, and a copy back.
//!
//! A missing client or broker skips loudly, or fails under
//! `CAIRN_REQUIRE_SERVICES=1` (`.ci/run` installs them).

mod common;
mod s3;

use std::time::Duration;

use common::{rabbitmq_reachable, wait_live, Proc};
use s3::{assert_checks, create_key, script, Client, Key, BOTO3_CHECKS};
use serde_json::json;

/// The longest one client script may run (the boto3 suite moves 100 MiB up, a
/// second time at completion, and back down, on a debug build).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);

/// The size of the one large `upload_file` per cluster.
const BIG_MIB: &str = "100";

fn boto3_ready(test: &str) -> bool {
    s3::boto3_available() || s3::missing(test, "python3 cannot import boto3 (pip install --target target/s3py boto3)")
}

/// Runs the boto3 suite: writes through `endpoint`, reads through `read_endpoint`.
async fn boto3_suite(endpoint: &str, read_endpoint: &str, key: &Key) -> String {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().display().to_string();
    let args = [
        script("boto3_suite.py"),
        endpoint.to_string(),
        "--read-endpoint".into(),
        read_endpoint.to_string(),
        "--workdir".into(),
        workdir,
        "--big-mib".into(),
        BIG_MIB.into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = Client::new("python3", &args, dir.path()).key(key).run(CLIENT_TIMEOUT).await;
    assert_checks(&out, BOTO3_CHECKS);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_round_trips_objects_listings_versions_multipart_and_presigned_urls() {
    if !boto3_ready("boto3_round_trips_objects_listings_versions_multipart_and_presigned_urls") {
        return;
    }
    let t = common::start_custom(6, |_| {}).await;
    let key = create_key(&t.http, &t.base, json!({"buckets": [], "read_only": false}), None).await;
    boto3_suite(&t.base, &t.base, &key).await;

    // What the suite copied into the bucket `default` is the native API's object.
    let native = t.http.get(t.url("/objects/from-s3/copied")).header("authorization", key.bearer()).send().await;
    let native = native.unwrap();
    assert_eq!(native.status(), 200);
    assert_eq!(native.text().await.unwrap(), "copy me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_copies_syncs_lists_and_removes() {
    let Some(aws) = s3::aws_command() else {
        s3::missing("aws_cli_copies_syncs_lists_and_removes", "no aws-cli (aws, or python3 -m awscli in target/s3py)");
        return;
    };
    let t = common::start_custom(6, |_| {}).await;
    let key = create_key(&t.http, &t.base, json!({}), None).await;
    aws_cli_suite(aws, &t.base, &key).await;
}

/// Runs the aws-cli script against `endpoint` and checks every step said ok.
async fn aws_cli_suite(aws: &str, endpoint: &str, key: &Key) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().display().to_string();
    let out = Client::new("bash", &[&script("aws_cli.sh"), endpoint, &work], dir.path())
        .key(key)
        .env("AWS", aws)
        .run(CLIENT_TIMEOUT)
        .await;
    assert_checks(
        &out,
        &[
            "mb_and_ls_buckets",
            "cp_small",
            "cp_multipart",
            "ls",
            "sync",
            "list_object_versions",
            "multipart_by_hand",
            "rm_recursive",
            "rb_refuses_a_full_bucket",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_copies_syncs_and_checks_md5s() {
    if !s3::rclone_available()
        && !s3::missing("rclone_copies_syncs_and_checks_md5s", "rclone not installed (apt-get install rclone)")
    {
        return;
    }
    let t = common::start_custom(6, |_| {}).await;
    let key = create_key(&t.http, &t.base, json!({}), None).await;
    rclone_suite(&t.base, &key).await;
}

/// Runs the rclone script against `endpoint` and checks every step said ok.
async fn rclone_suite(endpoint: &str, key: &Key) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().display().to_string();
    let out = Client::new("bash", &[&script("rclone.sh"), &work], dir.path())
        .env("RCLONE_CONFIG_CAIRN_TYPE", "s3")
        .env("RCLONE_CONFIG_CAIRN_PROVIDER", "Other")
        .env("RCLONE_CONFIG_CAIRN_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID", &key.id)
        .env("RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY", &key.secret)
        .env("RCLONE_CONFIG_CAIRN_REGION", "us-east-1")
        .env("RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE", "true")
        .run(CLIENT_TIMEOUT)
        .await;
    assert_checks(&out, &["copy", "ls", "check", "check_finds_a_changed_file", "sync", "copy_back"]);
}

/// The layout's addresses: its own, so that it never meets another
/// multi-process test's (`seed_layout`: 127.29.1–2, `tus_interrupted`: 127.29.3–4,
/// `bounded_memory`: 127.29.6–7).
const LAYOUT_API: [&str; 2] = ["127.29.9.1:12345", "127.29.9.2:12345"];

fn layout_data_addr(i: usize) -> String {
    format!("127.29.8.{}:12345", i + 1)
}

/// Six `cairn data` and two `cairn api` processes on the real RabbitMQ, sharing one
/// SQLite file; killed when dropped, after printing their logs' ends if the test
/// is failing.
struct Layout {
    data: Vec<Proc>,
    api: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Layout {
    async fn start(http: &reqwest::Client) -> Layout {
        let dir = tempfile::tempdir().unwrap();
        let data = (0..6).map(|i| Proc::data_server(dir.path(), i + 1, &layout_data_addr(i))).collect();
        let meta = format!("sqlite:{}", dir.path().join("meta.sqlite").display());
        let api = LAYOUT_API
            .iter()
            .enumerate()
            .map(|(i, addr)| Proc::api_server(dir.path(), &format!("api{}", i + 1), addr, &meta, "1s", &[]))
            .collect();
        let layout = Layout { data, api, _dir: dir };
        for addr in LAYOUT_API {
            assert!(wait_live(http, &format!("http://{addr}"), 6).await, "{addr} does not see six data servers");
        }
        layout
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in self.api.iter().chain(&self.data) {
                eprintln!("{}", p.log_tail());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_aws_and_rclone_on_the_multi_process_layout() {
    const TEST: &str = "boto3_aws_and_rclone_on_the_multi_process_layout";
    if !rabbitmq_reachable(TEST).await || !boto3_ready(TEST) {
        return;
    }
    let aws = s3::aws_command();
    if aws.is_none() && !s3::missing(TEST, "no aws-cli (aws, or python3 -m awscli in target/s3py)") {
        return;
    }
    if !s3::rclone_available() && !s3::missing(TEST, "rclone not installed (apt-get install rclone)") {
        return;
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let _layout = Layout::start(&http).await;
    let [writer, reader] = LAYOUT_API.map(|a| format!("http://{a}"));
    // The key is made through the reading server and used at once through the
    // writing one: it is looked up in the shared store, not in a stale snapshot.
    let key = create_key(&http, &reader, json!({}), None).await;
    boto3_suite(&writer, &reader, &key).await;
    // The command-line clients, one through each API server.
    if let Some(aws) = aws {
        aws_cli_suite(aws, &writer, &key).await;
    }
    rclone_suite(&reader, &key).await;
}
