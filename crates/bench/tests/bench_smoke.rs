//! `cairn-bench load` against an in-process cluster: a short run goes cleanly, reports
//! every figure and leaves nothing behind; `--op get-missing`; the S3 interface,
//! unsigned on an open cluster and signed (SigV4) once it has a key, whose wrong
//! secret fails every request; plus the pure pieces (size parsing, percentiles,
//! payload chunking). No test here asserts a performance figure.

mod common;

use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;

use cairn::size::{self, ByteSize};
use cairn_bench::load::{
    self, percentile, Api, BenchArgs, BenchError, BenchReport, Endpoint, Interface, LatencySummary, Op, OpError,
    OpReport, Payload, S3Bucket,
};

fn args(base: &str, op: Op, size: &str, concurrency: u32, duration: Duration) -> BenchArgs {
    let mut args = BenchArgs::new(base);
    args.op = op;
    args.size = size.parse().expect("size parses");
    args.concurrency = concurrency;
    args.duration = duration;
    args
}

fn assert_figures_sane(r: &OpReport) {
    assert!(r.ops > 0, "{}: no successful requests: {r:?}", r.op);
    assert_eq!(r.errors, 0, "{}: errors: {:?}", r.op, r.first_errors);
    assert!(r.first_errors.is_empty(), "{}: {:?}", r.op, r.first_errors);
    assert!(r.bytes > 0 && r.ops_per_s > 0.0 && r.mb_per_s > 0.0, "{r:?}");
    let l = r.latency_us.expect("latency summary present");
    assert!(l.min_us <= l.p50_us && l.p50_us <= l.p90_us && l.p90_us <= l.p99_us && l.p99_us <= l.max_us, "{l:?}");
    assert!(l.min_us <= l.mean_us && l.mean_us <= l.max_us, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_run_is_clean_reports_every_figure_and_deletes_its_objects() {
    let t = common::start("1+0", 6).await;
    let args = args(&t.base, Op::Mixed, "4KiB", 4, Duration::from_secs(2));
    let report = load::run(&args).await.expect("bench runs");

    assert_eq!(report.op, Op::Mixed);
    assert_eq!(report.get_percent, 70);
    assert_eq!(report.object_size, 4096);
    assert_eq!(report.concurrency, 4);
    assert_eq!(report.duration_s, 2.0);
    assert!(report.elapsed_s >= 2.0, "{}", report.elapsed_s);
    assert_eq!(report.live_data_servers, 6);
    assert_eq!(report.prepared_objects, args.objects_to_prepare());
    assert_eq!(report.prepared_objects, 16);
    assert!(report.prefix.starts_with("bench-") && report.prefix.ends_with('/'), "{}", report.prefix);
    assert!(!report.interrupted);

    let kinds: Vec<&str> = report.ops.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(kinds, ["GET", "PUT"]);
    for r in report.ops.iter().chain([&report.total]) {
        assert_figures_sane(r);
    }
    assert_eq!(report.total.ops, report.ops[0].ops + report.ops[1].ops);
    assert_eq!(report.total.bytes, report.total.ops * 4096);
    assert_eq!(report.check().ok(), Some(()));

    // Every name written (prepared ones and the PUTs) was deleted, none missed.
    let cleanup = report.cleanup.clone().expect("cleanup ran");
    let written = report.prepared_objects + report.ops[1].ops;
    assert_eq!((cleanup.attempted, cleanup.deleted), (written, written), "{cleanup:?}");
    assert_eq!((cleanup.not_found, cleanup.errors, cleanup.skipped), (0, 0, 0), "{cleanup:?}");
    let statuses: Vec<(String, u16)> = futures_util::stream::iter(0..written)
        .map(|seq| {
            let name = load::object_name(&report.prefix, seq);
            let t = &t;
            async move {
                let status = t.get(&name).await.status().as_u16();
                (name, status)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (name, status) in statuses {
        assert_eq!(status, 404, "{name} is still readable after the cleanup");
    }

    // The JSON form has every documented field.
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "endpoint",
        "op",
        "get_percent",
        "object_size",
        "concurrency",
        "duration_s",
        "elapsed_s",
        "prefix",
        "prepared_objects",
        "live_data_servers",
        "interrupted",
        "total",
        "ops",
        "cleanup",
    ] {
        assert!(json.get(key).is_some(), "JSON report lacks {key}: {json}");
    }
    assert_eq!(json["op"], "mixed");
    for key in ["op", "ops", "errors", "bytes", "ops_per_s", "mb_per_s", "first_errors"] {
        assert!(json["total"].get(key).is_some(), "op report lacks {key}");
    }
    for key in ["min_us", "mean_us", "p50_us", "p90_us", "p99_us", "max_us"] {
        assert!(json["total"]["latency_us"][key].is_u64(), "latency lacks {key}");
    }

    let table = report.render_table();
    for needle in ["GET", "PUT", "total", "p99 ms", "MB/s", "errors:    none", "cleanup:   deleted"] {
        assert!(table.contains(needle), "table lacks {needle:?}:\n{table}");
    }
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_run_with_keep_leaves_its_objects_readable() {
    let t = common::start("1+0", 6).await;
    let mut args = args(&t.base, Op::Put, "1000", 2, Duration::from_millis(500));
    args.keep = true;
    args.prefix = Some("kept run/".to_string());
    let report = load::run(&args).await.expect("bench runs");
    assert_figures_sane(&report.total);
    assert_eq!(report.prepared_objects, 0);
    assert!(report.cleanup.is_none());
    let first = t.get("kept run/0000000000").await;
    assert_eq!(first.status(), 200);
    let body = first.bytes().await.unwrap();
    assert_eq!(body.len(), 1000);
    let last = load::object_name("kept run/", report.total.ops - 1);
    assert_eq!(t.get(&last).await.bytes().await.unwrap().len(), 1000);
    // Objects differ (content addressing must not deduplicate them) and are not zeros.
    assert_ne!(body, t.get(&last).await.bytes().await.unwrap());
    assert!(body.iter().filter(|&&b| b == 0).count() < 100);
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_missing_counts_404_as_success_and_writes_nothing() {
    let t = common::start("1+0", 6).await;
    let mut args = BenchArgs::new(&t.base);
    args.op = Op::GetMissing;
    args.concurrency = 2;
    args.duration = Duration::from_millis(500);
    let report = load::run(&args).await.expect("bench runs");

    assert_eq!(report.prepared_objects, 0);
    assert_eq!(report.get_percent, 100);
    let kinds: Vec<&str> = report.ops.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(kinds, ["GET"]);
    let get = &report.ops[0];
    assert!(get.ops > 0, "{get:?}");
    assert_eq!((get.errors, get.bytes), (0, 0), "{:?}", get.first_errors);
    assert!(get.latency_us.is_some());
    let cleanup = report.cleanup.expect("cleanup ran");
    assert_eq!((cleanup.attempted, cleanup.deleted), (0, 0));
}

/// A clean run that wrote (prepared and PUT) objects, and deleted every one.
fn assert_clean_and_cleaned_up(report: &BenchReport) {
    for r in report.ops.iter().chain([&report.total]) {
        assert_figures_sane(r);
    }
    let puts = report.ops.iter().find(|r| r.op == "PUT").map_or(0, |r| r.ops);
    let written = report.prepared_objects + puts;
    let cleanup = report.cleanup.clone().expect("cleanup ran");
    assert_eq!((cleanup.attempted, cleanup.deleted), (written, written), "{cleanup:?}");
    assert_eq!((cleanup.not_found, cleanup.errors, cleanup.skipped), (0, 0, 0), "{cleanup:?}");
}

fn s3_args(base: &str, op: Op, key: Option<(&str, &str)>) -> BenchArgs {
    let mut a = args(base, op, "4KiB", 4, Duration::from_millis(700));
    a.api = Api::S3;
    a.access_key = key.map(|(id, _)| id.to_string());
    a.secret_key = key.map(|(_, secret)| secret.to_string());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_runs_unsigned_when_open_and_signed_once_the_cluster_has_a_key() {
    let t = common::start("1+0", 6).await;

    // No key in the cluster: unsigned S3 requests are served; the bucket is created.
    let report = load::run(&s3_args(&t.base, Op::Mixed, None)).await.expect("unsigned S3 bench runs");
    assert_eq!((report.api, report.bucket.as_deref()), (Api::S3, Some(load::DEFAULT_BUCKET)));
    assert_eq!(report.ops.len(), 2, "{report:?}");
    assert_clean_and_cleaned_up(&report);
    assert!(report.render_table().contains("(S3, bucket bench, 6 live data servers)"), "{}", report.render_table());
    // Its objects were /bench/<name>, not the native API's.
    assert_eq!(t.get(&load::object_name(&report.prefix, 0)).await.status(), 404);

    let answer = t.http.post(t.url("/admin/keys")).body(r#"{"buckets":[],"read_only":false}"#).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    let (id, secret) = (answer["access_key"].as_str().unwrap(), answer["secret_key"].as_str().unwrap());

    // Signed: every op, in a bucket the run creates.
    for op in [Op::Put, Op::Get, Op::GetMissing] {
        let mut a = s3_args(&t.base, op, Some((id, secret)));
        a.bucket = Some("signed".to_string());
        let report = load::run(&a).await.unwrap_or_else(|e| panic!("signed S3 {op:?}: {e}"));
        assert_eq!(report.bucket.as_deref(), Some("signed"));
        if op == Op::GetMissing {
            assert_eq!((report.total.ops > 0, report.total.errors), (true, 0), "{:?}", report.total);
        } else {
            assert_clean_and_cleaned_up(&report);
        }
    }
    let mut a = s3_args(&t.base, Op::Fill, Some((id, secret)));
    a.count = Some(20);
    let report = load::run(&a).await.expect("signed S3 fill runs");
    assert_eq!((report.total.ops, report.total.errors), (20, 0), "{:?}", report.total.first_errors);
    assert_clean_and_cleaned_up(&report);

    // The native API with the same key as a bearer token.
    let mut a = args(&t.base, Op::Mixed, "4KiB", 4, Duration::from_millis(700));
    (a.access_key, a.secret_key) = (Some(id.to_string()), Some(secret.to_string()));
    let report = load::run(&a).await.expect("native bench with a key runs");
    assert_eq!((report.api, report.bucket.as_deref()), (Api::Native, None));
    assert_clean_and_cleaned_up(&report);

    // A wrong secret, or none: the bucket check is refused, with the S3 error that
    // says why, so the run never starts.
    let wrong = format!("{secret}x");
    for (key, code) in [(Some((id, wrong.as_str())), "SignatureDoesNotMatch"), (None, "AccessDenied")] {
        match load::run(&s3_args(&t.base, Op::Put, key)).await {
            Err(BenchError::BucketUnavailable { source: OpError::Status { status, body }, .. }) => {
                assert_eq!(status, 403, "key {key:?}");
                assert!(body.contains(&format!("<Code>{code}</Code>")), "key {key:?}: {body}");
            }
            other => panic!("key {key:?}: expected a refused bucket, got {other:?}"),
        }
    }
    // And every object request signed with it is refused, where the right key's pass.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let endpoint = |secret: &str| Endpoint {
        client: client.clone(),
        base: t.base.clone(),
        interface: Interface::S3(Box::new(S3Bucket::new(&t.base, load::DEFAULT_BUCKET, Some((id, secret))).unwrap())),
    };
    let (good, bad) = (endpoint(secret), endpoint(&wrong));
    let payload = Payload::new(100, 1);
    let refused = |result: Result<_, OpError>| match result {
        Err(OpError::Status { status, body }) => status == 403 && body.contains("SignatureDoesNotMatch"),
        _ => false,
    };
    assert!(refused(bad.put("signed-check", &payload, 1).await.map(|_| ())));
    assert_eq!(good.put("signed-check", &payload, 1).await.expect("signed PUT"), 100);
    assert!(refused(bad.get("signed-check", 100).await.map(|_| ())));
    assert!(refused(bad.get_missing("never-written").await.map(|_| ())));
    assert!(refused(bad.delete("signed-check").await.map(|_| ())));
    assert_eq!(good.get("signed-check", 100).await.expect("signed GET"), 100);
    assert!(good.delete("signed-check").await.expect("signed DELETE"));
    assert!(!good.delete("never-written").await.expect("signed DELETE of nothing"));
    // The native API wants the key too.
    let report = load::run(&args(&t.base, Op::Put, "4KiB", 1, Duration::from_millis(200))).await.unwrap();
    assert_eq!(report.total.ops, 0);
    assert!(report.total.errors > 0 && report.total.first_errors[0].contains("403"), "{:?}", report.total);
    t.cluster.shutdown().await;
}

#[test]
fn s3_parameters_are_checked_before_any_request() {
    let mut a = args("http://127.0.0.1:9", Op::Put, "1", 1, Duration::from_secs(1));
    a.bucket = Some("b".to_string());
    assert!(matches!(a.validate(), Err(BenchError::BucketWithoutS3 { .. })));
    a.api = Api::S3;
    assert!(a.validate().is_ok());
    for bad in ["objects", "healthz", "", "a/b"] {
        a.bucket = Some(bad.to_string());
        assert!(matches!(a.validate(), Err(BenchError::BadBucket { .. })), "{bad}");
    }
    a.bucket = None;
    a.access_key = Some("id".to_string());
    assert!(matches!(a.validate(), Err(BenchError::HalfAKey)));
}

#[tokio::test]
async fn unreachable_endpoint_is_an_error_not_a_report() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let args = args(&format!("http://{addr}"), Op::Get, "4KiB", 1, Duration::from_secs(1));
    match load::run(&args).await {
        Err(BenchError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_parameters_are_refused_before_any_request() {
    let refused = |args: BenchArgs| async move { load::run(&args).await.unwrap_err() };
    let base = "http://127.0.0.1:9";
    let e = refused(args("https://127.0.0.1:9", Op::Put, "1", 1, Duration::from_secs(1))).await;
    assert!(matches!(e, BenchError::BadEndpoint { .. }), "{e}");
    let e = refused(args("127.0.0.1:9", Op::Put, "1", 1, Duration::from_secs(1))).await;
    assert!(matches!(e, BenchError::BadEndpoint { .. }), "{e}");
    let e = refused(args(base, Op::Put, "1", 0, Duration::from_secs(1))).await;
    assert!(matches!(e, BenchError::ZeroConcurrency), "{e}");
    let e = refused(args(base, Op::Put, "1", 1, Duration::ZERO)).await;
    assert!(matches!(e, BenchError::ZeroDuration), "{e}");
    let mut a = args(base, Op::Get, "1", 1, Duration::from_secs(1));
    a.objects = Some(0);
    assert!(matches!(refused(a).await, BenchError::NoObjects));
    let mut a = args(base, Op::Put, "1", 1, Duration::from_secs(1));
    a.prefix = Some("../".to_string());
    assert!(matches!(refused(a).await, BenchError::BadPrefix { .. }));
}

#[test]
fn sizes_parse_with_binary_and_decimal_units() {
    let ok = |s: &str| s.parse::<ByteSize>().unwrap_or_else(|e| panic!("{s}: {e}")).bytes();
    assert_eq!(ok("4096"), 4096);
    assert_eq!(ok("0"), 0);
    assert_eq!(ok("17B"), 17);
    assert_eq!(ok("4KiB"), 4096);
    assert_eq!(ok("4 KiB"), 4096);
    assert_eq!(ok(" 4kib "), 4096);
    assert_eq!(ok("1MiB"), 1 << 20);
    assert_eq!(ok("64MiB"), 64 << 20);
    assert_eq!(ok("1GiB"), 1 << 30);
    assert_eq!(ok("2TiB"), 2 << 40);
    assert_eq!(ok("4KB"), 4000);
    assert_eq!(ok("4kB"), 4000);
    assert_eq!(ok("1MB"), 1_000_000);
    assert_eq!(ok("3GB"), 3_000_000_000);
    assert_eq!(ok("1.5KiB"), 1536);
    assert_eq!(ok("0.5MiB"), 512 << 10);
    assert_eq!(ok(".25KiB"), 256);
    assert_eq!(ok("2.50MB"), 2_500_000);
    assert_eq!(ok("18446744073709551615"), u64::MAX);

    let bad = |s: &str| s.parse::<ByteSize>().expect_err(s);
    assert_eq!(bad(""), size::BadSize::Empty);
    for s in ["KiB", "-1", "1.2.3", ".", "x4"] {
        assert!(matches!(bad(s), size::BadSize::NoNumber(_)), "{s}: {:?}", bad(s));
    }
    for s in ["4K", "4M", "4 G", "4 kibibytes", "4Ki", "4iB"] {
        assert!(matches!(bad(s), size::BadSize::UnknownUnit { .. }), "{s}: {:?}", bad(s));
    }
    for s in ["0.3KiB", "1.5", "0.0001KB"] {
        assert!(matches!(bad(s), size::BadSize::Fractional(_)), "{s}: {:?}", bad(s));
    }
    for s in ["18446744073709551616", "16EiB", "17000000TiB", "99999999999999999999999999999999999999999"] {
        let e = bad(s);
        assert!(matches!(e, size::BadSize::TooLarge(_) | size::BadSize::UnknownUnit { .. }), "{s}: {e:?}");
    }
    assert!(matches!(bad("17000000TiB"), size::BadSize::TooLarge(_)));
}

#[test]
fn sizes_display_in_the_largest_exact_binary_unit_and_parse_back() {
    for (bytes, text) in
        [(0, "0 B"), (1000, "1000 B"), (1536, "1536 B"), (4096, "4 KiB"), (64 << 20, "64 MiB"), (1 << 30, "1 GiB")]
    {
        assert_eq!(ByteSize(bytes).to_string(), text);
        assert_eq!(text.parse::<ByteSize>().unwrap(), ByteSize(bytes));
    }
}

#[test]
fn percentiles_use_the_nearest_rank() {
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&[7], 0.0), Some(7));
    assert_eq!(percentile(&[7], 99.0), Some(7));
    let hundred: Vec<u32> = (1..=100).collect();
    assert_eq!(percentile(&hundred, 50.0), Some(50));
    assert_eq!(percentile(&hundred, 90.0), Some(90));
    assert_eq!(percentile(&hundred, 99.0), Some(99));
    assert_eq!(percentile(&hundred, 99.5), Some(100));
    assert_eq!(percentile(&hundred, 100.0), Some(100));
    assert_eq!(percentile(&hundred, 0.0), Some(1));
    assert_eq!(percentile(&hundred, 150.0), Some(100));
    let ten: Vec<u32> = (1..=10).map(|i| i * 10).collect();
    assert_eq!(percentile(&ten, 50.0), Some(50));
    assert_eq!(percentile(&ten, 51.0), Some(60));
    assert_eq!(percentile(&ten, 90.0), Some(90));
    assert_eq!(percentile(&ten, 99.0), Some(100));
    assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
}

#[test]
fn latency_summary_sorts_and_orders_its_figures() {
    assert_eq!(LatencySummary::from_samples(&mut []), None);
    let mut samples: Vec<u32> = (1..=1000).rev().collect();
    let l = LatencySummary::from_samples(&mut samples).unwrap();
    assert_eq!((l.min_us, l.p50_us, l.p90_us, l.p99_us, l.max_us), (1, 500, 900, 990, 1000));
    assert_eq!(l.mean_us, 500);
    assert!(samples.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn payload_chunks_add_up_to_the_size_and_stay_small() {
    for size in [0u64, 1, 15, 16, 17, 4096, load::BLOCK as u64, load::BLOCK as u64 + 1, 3 * load::BLOCK as u64 + 5] {
        let payload = Payload::new(size, 42);
        let chunks: Vec<_> = payload.chunks(7).collect();
        assert_eq!(chunks.iter().map(|c| c.len() as u64).sum::<u64>(), size, "size {size}");
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= load::BLOCK));
    }
    let payload = Payload::new(3 * load::BLOCK as u64, 42);
    let a: Vec<u8> = payload.chunks(1).flatten().collect();
    let b: Vec<u8> = payload.chunks(2).flatten().collect();
    assert_ne!(a[..load::TAG_LEN], b[..load::TAG_LEN], "tags differ");
    assert_eq!(a[load::TAG_LEN..], b[load::TAG_LEN..]);
    assert_eq!(a[load::TAG_LEN..load::BLOCK], a[load::BLOCK + load::TAG_LEN..2 * load::BLOCK]);
    assert!(a.iter().filter(|&&x| x == 0).count() < a.len() / 100, "random, not zeros");
}

#[test]
fn object_names_are_percent_encoded_in_urls() {
    assert_eq!(load::object_name("bench-1/", 42), "bench-1/0000000042");
    assert_eq!(cairn::api::names::encode_path("a b/c%d?e#f_~.-"), "a%20b/c%25d%3Fe%23f_~.-");
    assert_eq!(cairn::api::names::encode_path("日"), "%E6%97%A5");
}

#[test]
fn defaults_match_the_command_line() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }
    let parsed = Cli::try_parse_from(["cairn", "--endpoint", "http://127.0.0.1:1"]).unwrap().bench;
    assert_eq!(parsed, BenchArgs::new("http://127.0.0.1:1"));
    let parsed = Cli::try_parse_from([
        "cairn",
        "--endpoint",
        "http://h:1",
        "--op",
        "get",
        "--size",
        "64MiB",
        "--concurrency",
        "8",
        "--duration",
        "1m",
        "--objects",
        "3",
        "--json",
        "--keep",
        "--prefix",
        "p/",
    ])
    .unwrap()
    .bench;
    assert_eq!((parsed.op, parsed.size, parsed.concurrency), (Op::Get, ByteSize(64 << 20), 8));
    assert_eq!(
        (parsed.duration, parsed.objects, parsed.json, parsed.keep),
        (Duration::from_secs(60), Some(3), true, true)
    );
    let parsed = Cli::try_parse_from([
        "cairn",
        "--endpoint",
        "http://h:1",
        "--api",
        "s3",
        "--bucket",
        "b1",
        "--access-key",
        "K",
        "--secret-key",
        "S",
    ])
    .unwrap()
    .bench;
    assert_eq!((parsed.api, parsed.s3_bucket(), parsed.key()), (Api::S3, Some("b1"), Some(("K", "S"))));
    assert!(Cli::try_parse_from(["cairn", "--endpoint", "http://h:1", "--access-key", "K"]).is_err());
    assert!(Cli::try_parse_from(["cairn", "--endpoint", "http://h:1", "--concurrency", "0"]).is_err());
    assert!(Cli::try_parse_from(["cairn", "--endpoint", "http://h:1", "--size", "4K"]).is_err());
}

#[test]
fn default_object_count_is_bounded_by_count_and_bytes() {
    let mut a = BenchArgs::new("http://h:1");
    a.op = Op::Get;
    a.concurrency = 4;
    a.size = ByteSize(4096);
    assert_eq!(a.objects_to_prepare(), 16);
    a.concurrency = 1000;
    assert_eq!(a.objects_to_prepare(), load::MAX_DEFAULT_OBJECTS);
    a.concurrency = 16;
    a.size = ByteSize(1 << 30);
    assert_eq!(a.objects_to_prepare(), 4);
    a.size = ByteSize(u64::MAX);
    assert_eq!(a.objects_to_prepare(), 1);
    a.size = ByteSize(0);
    assert_eq!(a.objects_to_prepare(), 64);
    a.objects = Some(5000);
    assert_eq!(a.objects_to_prepare(), 5000);
    a.op = Op::Put;
    assert_eq!(a.objects_to_prepare(), 0);
}
