//! `cairn-bench load --op fill`: its arguments (`--count`, `--size-max`) parse and
//! contradictions are refused before any request; against an in-process cluster a
//! fill stops at exactly `--count` acknowledged objects, each with its own name,
//! content and a size in the range; GETs of objects of varied sizes expect the
//! right length. No test here asserts a performance figure.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use clap::Parser;

use cairn::size::ByteSize;
use cairn_bench::load::{self, BenchArgs, BenchError, Op};

/// `cairn-bench load`'s arguments on their own, as the binary flattens them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
    Cli::try_parse_from(["cairn-bench"].iter().chain(args)).map(|cli| cli.bench)
}

#[test]
fn fill_arguments_parse_and_contradictions_are_refused() {
    let args = parse(&[
        "--endpoint",
        "http://127.0.0.1:9",
        "--op",
        "fill",
        "--count",
        "1000000",
        "--size",
        "1KiB",
        "--size-max",
        "8KiB",
        "--concurrency",
        "32",
    ])
    .expect("fill arguments parse");
    assert_eq!(args.op, Op::Fill);
    assert_eq!(args.count, Some(1_000_000));
    assert_eq!((args.size, args.size_max), (ByteSize(1024), Some(ByteSize(8192))));
    assert_eq!(args.size_range(), (1024, 8192));
    assert_eq!(args.concurrency, 32);
    assert!(args.validate().is_ok());
    assert_eq!(args.objects_to_prepare(), 0, "a fill reads nothing");
    assert!(Op::Fill.writes() && !Op::Fill.reads_prepared());
    assert_eq!(Op::Fill.get_percent(), 0);

    // Without --size-max every object has --size bytes.
    let args = parse(&["--endpoint", "http://h:1", "--op", "put", "--size", "4KiB"]).unwrap();
    assert_eq!((args.size_max, args.size_range()), (None, (4096, 4096)));
    assert!(args.validate().is_ok());

    // A fill has no deadline: --duration 0 is no contradiction for it, only for the timed ops.
    let mut args = parse(&["--endpoint", "http://h:1", "--op", "fill", "--count", "5", "--duration", "0s"]).unwrap();
    assert!(args.validate().is_ok());
    args.op = Op::Put;
    args.count = None;
    assert!(matches!(args.validate(), Err(BenchError::ZeroDuration)));

    let refused = |args: &[&str]| parse(args).expect("parses").validate().expect_err("refused");
    let e = refused(&["--endpoint", "http://h:1", "--op", "fill"]);
    assert!(matches!(e, BenchError::NoCount), "{e}");
    let e = refused(&["--endpoint", "http://h:1", "--op", "fill", "--count", "0"]);
    assert!(matches!(e, BenchError::NoCount), "{e}");
    let e = refused(&["--endpoint", "http://h:1", "--op", "put", "--count", "10"]);
    assert!(matches!(e, BenchError::CountWithoutFill { op: Op::Put }), "{e}");
    let e =
        refused(&["--endpoint", "http://h:1", "--op", "fill", "--count", "1", "--size", "8KiB", "--size-max", "1KiB"]);
    assert!(matches!(e, BenchError::BadSizeRange { min: ByteSize(8192), max: ByteSize(1024) }), "{e}");
    assert!(e.to_string().contains("--size-max 1 KiB is below --size 8 KiB"), "{e}");

    assert!(parse(&["--endpoint", "http://h:1", "--op", "fill", "--count", "-1"]).is_err());
    assert!(parse(&["--endpoint", "http://h:1", "--size-max", "4K"]).is_err(), "bare K is ambiguous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_stops_at_exactly_count_acknowledged_objects_of_sizes_in_the_range() {
    let t = common::start("1+2", 6).await;
    let mut args = BenchArgs::new(&t.base);
    args.op = Op::Fill;
    args.count = Some(60);
    args.size = ByteSize(100);
    args.size_max = Some(ByteSize(300));
    args.concurrency = 8;
    args.keep = true;
    args.prefix = Some("fill/".to_string());
    // A fill ignores the deadline: this one would end the timed ops at once.
    args.duration = Duration::from_millis(1);
    let report = tokio::time::timeout(Duration::from_secs(120), load::run(&args))
        .await
        .expect("a fill of 60 small objects ends within 2 minutes")
        .expect("fill runs");

    assert_eq!(report.op, Op::Fill);
    assert_eq!((report.object_size, report.object_size_max, report.count), (100, 300, Some(60)));
    assert_eq!(report.duration_s, 0.0);
    let kinds: Vec<&str> = report.ops.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(kinds, ["PUT"]);
    let put = &report.ops[0];
    assert_eq!((put.ops, put.errors), (60, 0), "{:?}", put.first_errors);
    assert!(report.cleanup.is_none(), "--keep");
    let table = report.render_table();
    assert!(table.contains("fill of 100 B to 300 B objects, concurrency 8, until 60 are acknowledged"), "{table}");
    assert!(table.contains(&format!("written:   60 objects, {} bytes", put.bytes)), "{table}");

    // Exactly objects 0..60 exist, each with a size in range and its own content.
    let mut bodies = HashSet::new();
    let mut sizes = HashSet::new();
    let mut total = 0;
    for seq in 0..60 {
        let name = load::object_name("fill/", seq);
        let resp = t.get(&name).await;
        assert_eq!(resp.status(), 200, "{name}");
        let body = resp.bytes().await.unwrap();
        assert!((100..=300).contains(&body.len()), "{name}: {} bytes", body.len());
        total += body.len() as u64;
        sizes.insert(body.len());
        assert!(bodies.insert(body), "{name} has the content of another object");
    }
    assert_eq!(total, put.bytes, "bytes written are the bytes stored");
    assert!(sizes.len() > 10, "sizes are drawn, not fixed: {sizes:?}");
    assert_eq!(t.get(&load::object_name("fill/", 60)).await.status(), 404, "no object past the count");

    // GETs of objects of varied sizes expect each one's own length (a wrong one fails).
    let mut args = BenchArgs::new(&t.base);
    args.op = Op::Get;
    args.size = ByteSize(100);
    args.size_max = Some(ByteSize(5000));
    args.concurrency = 4;
    args.objects = Some(20);
    args.duration = Duration::from_millis(500);
    let report = load::run(&args).await.expect("get runs");
    assert!(report.ops[0].ops > 0);
    assert_eq!(report.error_count(), 0, "{:?}", report.ops[0].first_errors);
    let cleanup = report.cleanup.expect("cleanup ran");
    assert_eq!((cleanup.attempted, cleanup.deleted), (20, 20));

    // Without --keep a fill deletes exactly what it wrote.
    let mut args = BenchArgs::new(&t.base);
    args.op = Op::Fill;
    args.count = Some(10);
    args.size = ByteSize(64);
    args.concurrency = 16;
    let report = load::run(&args).await.expect("fill runs");
    assert_eq!(report.ops[0].ops, 10);
    let cleanup = report.cleanup.expect("cleanup ran");
    assert_eq!((cleanup.attempted, cleanup.deleted, cleanup.errors), (10, 10, 0), "{cleanup:?}");
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_whose_puts_all_fail_gives_up_instead_of_retrying_forever() {
    use axum::routing::get;
    // Healthy by /healthz, refusing every PUT.
    let app = axum::Router::new().route("/healthz", get(|| async { r#"{"live_data_servers":6}"# })).route(
        "/objects/{*name}",
        axum::routing::put(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut args = BenchArgs::new(format!("http://{addr}"));
    args.op = Op::Fill;
    args.count = Some(1000);
    args.size = ByteSize(64);
    args.concurrency = 100;
    args.keep = true;
    let report = tokio::time::timeout(Duration::from_secs(60), load::run(&args))
        .await
        .expect("the fill gives up within a minute")
        .expect("a report, with the failures in it");
    let put = &report.ops[0];
    assert_eq!(put.ops, 0);
    assert!(put.errors >= load::MAX_FILL_ERRORS, "{put:?}");
    assert!(put.errors < load::MAX_FILL_ERRORS + 100, "at most one more per worker: {put:?}");
    assert!(put.first_errors[0].contains("500"), "{:?}", put.first_errors);
    assert!(matches!(report.check(), Err(BenchError::RequestsFailed { .. })));
    server.abort();
}
