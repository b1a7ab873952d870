//! `cairn-bench suite`: the command line, the ceiling
//! measurements on small sizes, the machine parsers, the report and the targets
//! rendered from made-up results, and a tiny suite end to end (a few short cells
//! instead of the standard matrix, which takes too long for a test). No test here
//! asserts a performance figure of this machine.

mod common;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use cairn_bench::args::{cairn_beside, SuiteArgs};
use cairn_bench::ceilings::{self, CeilingSizes, Ceilings, OpsRate, Rate};
use cairn_bench::crash::CrashOutcome;
use cairn_bench::load::{Api, BenchReport, CleanupReport, LatencySummary, Op, OpReport};
use cairn_bench::machine::{self, CpuUse, Machine, Mount};
use cairn_bench::markdown::{self, Verdict};
use cairn_bench::plan::{Cell, Redundancy};
use cairn_bench::probes::{DiskUse, SyncCalls};
use cairn_bench::small_shards::{
    self, CommitDelay, Engine, EngineRun, FsyncCount, FsyncRun, Restart, ScaleReport, ServerMemory, SmallShardReport,
    SpaceUse, SyncCounter,
};
use cairn_bench::suite::{self, CellResult, Layout, LayoutOutcome, LayoutReport, SuiteConfig, SuiteReport};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn the_command_line_describes_the_suite_and_how_to_regenerate_it() {
    let args = SuiteArgs::try_parse_from(["cairn-bench-suite", "--quick"]).unwrap();
    assert!(args.quick);
    assert_eq!(args.out, Path::new("BENCH.md"));
    assert_eq!(args.port, suite::DEFAULT_BASE_PORT);
    assert_eq!(args.cairn, None);
    assert_eq!(args.command_line(), "cargo build --release && target/release/cairn-bench suite --out BENCH.md --quick");

    let config = args.config("/bin/cairn".into(), "/tmp".into());
    assert_eq!(config.cairn_exe.as_deref(), Some(Path::new("/bin/cairn")));
    assert_eq!(config.work_dir, Path::new("/tmp"));
    assert_eq!(config.cell_duration, Duration::from_secs(1));
    assert!(config.cells.iter().all(|c| c.size.bytes() < GIB), "--quick has no 1 GiB cells");
    assert_eq!(config.command, args.command_line());

    let args = SuiteArgs::try_parse_from([
        "cairn-bench-suite",
        "--out",
        "x.md",
        "--broker",
        "amqp://u:secret@127.0.0.1:5672",
        "--port",
        "13000",
        "--cairn",
        "/opt/cairn",
    ])
    .unwrap();
    assert_eq!(
        args.command_line(),
        "cargo build --release && target/release/cairn-bench suite --out x.md --broker amqp://u:***@127.0.0.1:5672 \
         --port 13000 --cairn /opt/cairn"
    );
    assert!(SuiteArgs::try_parse_from(["cairn-bench-suite", "--suite"]).is_err(), "no --suite flag any more");
    assert!(SuiteArgs::try_parse_from(["cairn-bench-suite", "--endpoint", "http://h:1"]).is_err());
}

#[test]
fn the_cairn_binary_is_found_beside_the_suite_or_one_level_up() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    std::fs::create_dir_all(release.join("deps")).unwrap();
    let suite_exe = release.join("cairn-bench");
    let test_exe = release.join("deps").join("bench_suite-0123");
    assert_eq!(cairn_beside(&suite_exe), None, "nothing built yet");
    let cairn = release.join(format!("cairn{}", std::env::consts::EXE_SUFFIX));
    std::fs::write(&cairn, b"").unwrap();
    assert_eq!(cairn_beside(&suite_exe), Some(cairn.clone()));
    assert_eq!(cairn_beside(&test_exe), Some(cairn));
}

#[test]
fn the_standard_matrix_has_every_cell_of_issue_5() {
    let full = suite::standard_cells(false);
    for (op, size, clients) in [
        (Op::Get, 4 * KIB, 1),
        (Op::Get, 4 * KIB, 16),
        (Op::Put, 4 * KIB, 1),
        (Op::Put, 4 * KIB, 16),
        (Op::Put, 4 * KIB, 64),
        (Op::Put, 64 * KIB, 16),
        (Op::Put, 256 * KIB, 16),
        (Op::Get, MIB, 4),
        (Op::Put, MIB, 4),
        (Op::Get, 64 * MIB, 1),
        (Op::Put, 64 * MIB, 1),
        (Op::Get, GIB, 1),
        (Op::Put, GIB, 1),
        (Op::GetMissing, 0, 1),
    ] {
        assert!(full.contains(&Cell::new(op, size, clients)), "{op:?} {size} × {clients} missing");
    }
    assert_eq!(full.len(), 14);
    assert_eq!(suite::standard_cells(true).len(), 12);

    // GET cells prepare at most 256 MiB, and at least one object.
    let args = Cell::new(Op::Get, GIB, 1).bench_args("http://h:1", Duration::from_secs(5));
    assert_eq!((args.objects, args.duration), (Some(1), Duration::from_secs(5)));
    assert_eq!(Cell::new(Op::Get, 64 * MIB, 1).bench_args("http://h:1", Duration::ZERO).objects, Some(4));
    assert_eq!(Cell::new(Op::Get, 4 * KIB, 16).bench_args("http://h:1", Duration::ZERO).objects, Some(64));
    assert_eq!(Cell::new(Op::Put, GIB, 1).bench_args("http://h:1", Duration::ZERO).objects, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceilings_measure_what_they_say_on_small_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let written = ceilings::fsync_write(&file, 3 * MIB + 5).unwrap();
    assert_eq!(written.bytes, 3 * MIB + 5);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 * MIB + 5);
    assert_eq!(ceilings::sequential_read(&file).unwrap().bytes, 3 * MIB + 5);

    let small = ceilings::small_fsyncs(&dir.path().join("small"), 1, Duration::from_millis(20)).unwrap();
    assert!(small.count >= 1 && small.parallel == 1, "{small:?}");
    assert!(!dir.path().join("small").exists(), "small files are removed");
    // At least one per thread, however short the time.
    let small = ceilings::small_fsyncs(&dir.path().join("s2"), 3, Duration::ZERO).unwrap();
    assert_eq!((small.count, small.parallel), (3, 3));
    assert_eq!(small.latency_us.map(|l| l.min_us <= l.max_us), Some(true));

    let requests = ceilings::http_small_requests(2, Duration::ZERO).await.expect("small GETs");
    assert_eq!((requests.count, requests.parallel), (2, 2));

    assert_eq!(ceilings::sha256_speed(MIB + 1).bytes, MIB + 1);

    let (down, up) = ceilings::http_loopback(8 * MIB + 3).await.expect("loopback transfers");
    assert_eq!((down.bytes, up.bytes), (8 * MIB + 3, 8 * MIB + 3));

    let sizes = CeilingSizes { file: 2 * MIB, sha256: MIB, http: 2 * MIB, small_time: Duration::from_millis(20) };
    let all = ceilings::measure(dir.path(), &sizes).await.expect("ceilings measured");
    assert_eq!((all.fsync_write.bytes, all.warm_read.bytes, all.sha256.bytes), (2 * MIB, 2 * MIB, MIB));
    assert_eq!((all.http_download.bytes, all.http_upload.bytes), (2 * MIB, 2 * MIB));
    assert_eq!((all.small_fsync.parallel, all.small_fsync_parallel.parallel), (1, ceilings::PARALLEL));
    assert_eq!((all.http_small.parallel, all.http_small_parallel.parallel), (1, ceilings::PARALLEL));
    assert!(all.small_fsync_parallel.count >= u64::from(ceilings::PARALLEL));
    assert!(!dir.path().join("ceiling.bin").exists(), "the measured file is removed");
}

#[test]
fn machine_facts_are_parsed_from_proc_text() {
    let cpuinfo = "processor\t: 0\nmodel name\t: Intel(R)  Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
    assert_eq!(machine::cpu_model(cpuinfo).as_deref(), Some("Intel(R) Xeon(R) Processor"));
    assert_eq!(machine::cpu_count(cpuinfo), 2);
    assert_eq!(machine::cpu_model("processor : 0\n"), None);

    assert_eq!(machine::mem_total("MemTotal:       24684084 kB\nMemFree: 1 kB\n"), Some(24684084 * 1024));
    assert_eq!(machine::mem_total("MemFree: 1 kB\n"), None);

    let mounts = "/dev/vda / ext4 rw,relatime 0 0\ntmpfs /tmp tmpfs rw 0 0\n/dev/vdb /mnt/my\\040disk xfs rw 0 0\n";
    let tmp = machine::mount_of(mounts, Path::new("/tmp/cairn-bench-1")).unwrap();
    assert_eq!((tmp.fstype.as_str(), tmp.mount_point.as_path()), ("tmpfs", Path::new("/tmp")));
    let root = machine::mount_of(mounts, Path::new("/tmpx/a")).unwrap();
    assert_eq!((root.fstype.as_str(), root.device.as_str()), ("ext4", "/dev/vda"));
    let spaced = machine::mount_of(mounts, Path::new("/mnt/my disk/x")).unwrap();
    assert_eq!(spaced.mount_point, Path::new("/mnt/my disk"));

    let stat = "cpu  100 5 20 800 50 0 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
    assert_eq!(machine::parse_proc_stat(stat), Some((130, 980)));
    let self_stat = "42 (cairn (x) y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 20 0 1";
    assert_eq!(machine::parse_self_stat(self_stat), Some(11 + 12 + 13 + 14));

    let cpu = CpuUse { total: 1000, busy: 600, ours: 200 };
    assert_eq!((cpu.our_share(), cpu.others_share()), (0.2, 0.4));
}

#[test]
fn numbers_are_formatted_for_people() {
    assert_eq!(markdown::thousands(12_345.6), "12,346");
    assert_eq!(markdown::thousands(999.0), "999");
    assert_eq!(markdown::thousands(1_000_000.0), "1,000,000");
    assert_eq!(markdown::rate(1234.6), "1,235");
    assert_eq!(markdown::rate(56.78), "56.8");
    assert_eq!(markdown::rate(0.1234), "0.123");
    assert_eq!(markdown::percent(0.613), "61%");
    assert_eq!(markdown::percent(0.042), "4.2%");
    assert_eq!(markdown::percent(0.0035), "0.35%");
}

// ---- made-up results --------------------------------------------------------------

fn op_report(op: &str, ops_per_s: f64, mb_per_s: f64, p99_us: u32, errors: u64) -> OpReport {
    OpReport {
        op: op.to_string(),
        ops: (ops_per_s * 5.0) as u64,
        errors,
        bytes: (mb_per_s * 5e6) as u64,
        ops_per_s,
        mb_per_s,
        latency_us: Some(LatencySummary {
            min_us: 50,
            mean_us: p99_us / 2,
            p50_us: p99_us / 2,
            p90_us: p99_us * 3 / 4,
            p99_us,
            max_us: p99_us * 2,
        }),
        first_errors: (0..errors.min(2))
            .map(|i| format!("GET x{i}: answered 500 Internal Server Error: boom|pipe"))
            .collect(),
    }
}

fn cell(op: Op, size: u64, clients: u32, ops_per_s: f64, p99_us: u32, errors: u64) -> CellResult {
    let cell = Cell::new(op, size, clients);
    let mb_per_s = ops_per_s * size as f64 / 1e6;
    let label = if op == Op::Put { "PUT" } else { "GET" };
    let figures = op_report(label, ops_per_s, mb_per_s, p99_us, errors);
    let report = BenchReport {
        endpoint: "http://127.0.0.1:1".into(),
        api: Api::Native,
        bucket: None,
        op,
        get_percent: op.get_percent(),
        object_size: size,
        object_size_max: size,
        count: None,
        concurrency: clients,
        duration_s: 5.0,
        elapsed_s: 5.0,
        prefix: "bench-0/".into(),
        prepared_objects: 0,
        live_data_servers: 6,
        interrupted: false,
        total: figures.clone(),
        ops: vec![figures],
        cleanup: Some(CleanupReport {
            attempted: 0,
            deleted: 0,
            not_found: 0,
            errors: 0,
            skipped: 0,
            first_errors: vec![],
            elapsed_s: 0.0,
        }),
    };
    CellResult { cell, result: Ok(report) }
}

fn rate(mb_per_s: f64) -> Rate {
    Rate { bytes: (mb_per_s * 1e6) as u64, seconds: 1.0 }
}

fn ops(parallel: u32, per_s: u64) -> OpsRate {
    OpsRate { parallel, count: per_s, seconds: 1.0, latency_us: None }
}

/// fsync write 900 MB/s (large PUT ceiling 600), loopback GET 2000, warm read 5000;
/// small fsyncs 500/s and 3000/s (×16), loopback 4 KiB GETs 20,000/s and 40,000/s (×16).
fn made_up_report(dev_cells: Vec<CellResult>) -> SuiteReport {
    SuiteReport {
        machine: Machine {
            cpu_model: Some("Test CPU".into()),
            cores: 2,
            memory_bytes: Some(8 * GIB),
            kernel: Some("6.1.0-test".into()),
            filesystem: Some(Mount { device: "/dev/vda".into(), mount_point: "/".into(), fstype: "ext4".into() }),
            date: "2026-01-02T03:04:05Z".into(),
            load_before: Some("0.10 0.20 0.30".into()),
            load_after: Some("1.00 0.50 0.40".into()),
            cpu: Some(CpuUse { total: 1000, busy: 700, ours: 300 }),
        },
        command: "cargo build --release && target/release/cairn-bench suite --out BENCH.md".into(),
        quick: false,
        cell_duration: Duration::from_secs(5),
        redundancy: Redundancy::DEFAULT,
        ceilings: Ceilings {
            fsync_write: rate(900.0),
            small_fsync: ops(1, 500),
            small_fsync_parallel: ops(16, 3000),
            warm_read: rate(5000.0),
            sha256: rate(1500.0),
            http_download: rate(2000.0),
            http_upload: rate(2500.0),
            http_small: ops(1, 20_000),
            http_small_parallel: ops(16, 40_000),
        },
        layouts: vec![
            LayoutReport {
                layout: Layout::Dev,
                description: "cairn dev in this process".into(),
                outcome: LayoutOutcome::Ran(dev_cells),
                notes: vec!["a note\nover two lines".into()],
            },
            LayoutReport {
                layout: Layout::MultiProcess,
                description: "processes".into(),
                outcome: LayoutOutcome::Skipped("RabbitMQ does not answer at 127.0.0.1:5672".into()),
                notes: vec![],
            },
        ],
        crash: CrashOutcome::Skipped("--crash-seconds 0".into()),
        small_shards: None,
        elapsed: Duration::from_secs(95),
    }
}

fn all_cells_meeting_targets() -> Vec<CellResult> {
    vec![
        cell(Op::Get, 4 * KIB, 1, 5000.0, 800, 0),
        cell(Op::Get, 4 * KIB, 16, 12_000.0, 3000, 0),
        cell(Op::Put, 4 * KIB, 16, 2500.0, 9000, 0),
        cell(Op::GetMissing, 0, 1, 9000.0, 300, 0),
        // 0.6 ops/s of 1 GiB = 644 MB/s ≥ 80% of 600.
        cell(Op::Put, GIB, 1, 0.6, 1_700_000, 0),
        cell(Op::Get, GIB, 1, 1.0, 900_000, 0),
    ]
}

#[test]
fn targets_are_met_when_every_figure_is_on_the_right_side() {
    let report = made_up_report(all_cells_meeting_targets());
    let checks = markdown::evaluate_targets(&report);
    assert_eq!(checks.len(), 6, "one check per target for the one layout that ran: {checks:?}");
    for c in &checks {
        assert_eq!(c.verdict, Verdict::Met, "{c:?}");
        assert_eq!(c.layout, Layout::Dev);
    }
    let put = checks.iter().find(|c| c.target.starts_with("PUT 1 GiB")).unwrap();
    assert!(put.target.contains("480 MB/s"), "80% of 900 ÷ 1.5: {}", put.target);
    assert_eq!(put.measured, "644 MB/s");
}

#[test]
fn targets_missed_failed_or_absent_say_so() {
    let cells = vec![
        // Too slow.
        cell(Op::Get, 4 * KIB, 16, 9_999.0, 3000, 0),
        // p99 exactly 1 ms is not below 1 ms.
        cell(Op::Get, 4 * KIB, 1, 5000.0, 1000, 0),
        // Fast enough, but requests failed.
        cell(Op::Put, 4 * KIB, 16, 2500.0, 9000, 3),
        // 0.4 × 1 GiB = 429 MB/s < 480.
        cell(Op::Put, GIB, 1, 0.4, 2_500_000, 0),
        CellResult { cell: Cell::new(Op::Get, GIB, 1), result: Err("prepare failed".into()) },
        // No GET missing cell at all.
    ];
    let report = made_up_report(cells);
    let verdict = |prefix: &str| {
        let c = markdown::evaluate_targets(&report).into_iter().find(|c| c.target.starts_with(prefix)).unwrap();
        (c.verdict, c.measured)
    };
    assert_eq!(verdict("GET 4 KiB at 16"), (Verdict::NotMet, "9,999 ops/s".into()));
    assert_eq!(verdict("GET 4 KiB at 1 "), (Verdict::NotMet, "p99 1.000 ms".into()));
    assert_eq!(verdict("PUT 4 KiB").0, Verdict::NotMet);
    assert!(verdict("PUT 4 KiB").1.contains("3 requests failed"));
    assert_eq!(verdict("PUT 1 GiB"), (Verdict::NotMet, "429 MB/s".into()));
    assert_eq!(verdict("GET 1 GiB").0, Verdict::NotMeasured);
    assert!(verdict("GET 1 GiB").1.contains("prepare failed"));
    assert_eq!(verdict("GET of a missing"), (Verdict::NotMeasured, "not in this run".into()));
}

#[test]
fn the_report_shows_machine_ceilings_every_cell_and_the_targets() {
    let mut cells = all_cells_meeting_targets();
    cells.push(cell(Op::Put, MIB, 4, 100.0, 50_000, 2));
    cells.push(CellResult { cell: Cell::new(Op::Get, 64 * MIB, 1), result: Err("no answer".into()) });
    let report = made_up_report(cells);
    let md = markdown::render(&report);

    for expected in [
        "# cairn benchmarks",
        "2026-01-02T03:04:05Z",
        "```sh\ncargo build --release && target/release/cairn-bench suite --out BENCH.md\n```",
        "| CPU | Test CPU, 2 logical cores |",
        "| memory | 8.0 GiB |",
        "| kernel (`uname -r`) | 6.1.0-test |",
        "ext4 on /dev/vda, mounted at /",
        "0.10 0.20 0.30 before, 1.00 0.50 0.40 after",
        "30% used by the suite and its servers, 40% by other processes",
        "Other processes used a noticeable share",
        "| fsync write | 900000000 B | 1.000 | 900 |",
        "| small fsync | 16 | 3000 | 1.000 | 3,000 | - | - |",
        "÷ 1.5 = 600 MB/s",
        "small fsyncs ÷ 3 shards, at the cell's concurrency: 167 ops/s at one client, 1,000 ops/s at several",
        "- **multi-process**: skipped: RabbitMQ does not answer at 127.0.0.1:5672",
        "  - a note over two lines",
        // 12,000 ops/s of 4 KiB = 49.2 MB/s; against 40,000 loopback 4 KiB GETs at 16 clients: 30%.
        "| dev | GET | 4 KiB | 16 | 12,000 | 49.2 | 1.500 | 2.250 | 3.000 | 6.000 | 0 | loopback 4 KiB GET ×16: 40,000 ops/s | 30% |",
        // 0.6 × 1 GiB = 644 MB/s against 900 ÷ 1.5 = 600: 107%.
        "| dev | PUT | 1 GiB | 1 | 0.600 | 644 | 850.000 | 1275.000 | 1700.000 | 3400.000 | 0 | fsync write ÷ 1.5 (4+2): 600 MB/s | 107% |",
        // 2,500 against 3000 small fsyncs at 16 ÷ 3 shards.
        "| dev | PUT | 4 KiB | 16 | 2,500 | 10.2 | 4.500 | 6.750 | 9.000 | 18.000 | 0 | small fsync ×16 ÷ 3 (1+2): 1,000 ops/s | 250% |",
        "| dev | GET missing | - | 1 | 9,000 | - | 0.150 | 0.225 | 0.300 | 0.600 | 0 | loopback 4 KiB GET: 20,000 ops/s | 45% |",
        "| dev | GET | 64 MiB | 1 | - | - | - | - | - | - | failed | - | - |",
        "| dev | PUT | 1 MiB | 4 | 100 | 105 |",
        "dev GET 64 MiB × 1: no answer",
        "dev PUT 1 MiB × 4: GET x0: answered 500 Internal Server Error: boom|pipe",
        "| GET 4 KiB at 16 clients: ≥ 10,000 ops/s | dev | 12,000 ops/s | met |",
        "6 of 6 checks met.",
        "## How to read this",
    ] {
        assert!(md.contains(expected), "report lacks {expected:?}:\n{md}");
    }
    assert!(!md.contains("| multi-process |"), "a skipped layout has no rows:\n{md}");

    let summary = markdown::render_summary(&report);
    assert!(summary.contains("met           dev           GET 4 KiB at 16 clients"), "{summary}");
    assert!(summary.contains("skipped       multi-process RabbitMQ does not answer"), "{summary}");
    assert_eq!(report.failed_cells(), 2);
}

fn fill_report(op: Op, min: u64, max: u64, clients: u32, ops: u64, seconds: f64) -> BenchReport {
    let CellResult { result, .. } = cell(op, min, clients, ops as f64 / seconds, 4000, 0);
    let mut r = result.unwrap();
    r.object_size_max = max;
    r.elapsed_s = seconds;
    r.ops[0].ops = ops;
    if op == Op::Fill {
        r.count = Some(ops);
        r.duration_s = 0.0;
        r.cleanup = None;
    }
    r
}

#[test]
fn the_small_shard_section_shows_each_measurement_or_why_not() {
    let mut cells = all_cells_meeting_targets();
    cells.push(cell(Op::Put, 4 * KIB, 1, 300.0, 4_900, 0));
    // Requests failed: the target is not met, whatever the figure.
    cells.push(cell(Op::Put, 4 * KIB, 64, 2600.0, 30_000, 5));
    cells.push(cell(Op::Put, 64 * KIB, 16, 900.0, 30_000, 0));
    let mut report = made_up_report(cells);
    let run = |engine, size: u64, ops_per_s: f64| EngineRun {
        engine,
        size,
        result: Ok(fill_report(Op::Put, size, size, 16, (ops_per_s * 5.0) as u64, 5.0)),
    };
    let count = |counter, commit_delay, fsync, fdatasync, puts| FsyncRun {
        counter,
        commit_delay,
        result: Ok(FsyncCount {
            calls: SyncCalls { fsync, fdatasync },
            load: fill_report(Op::Put, 4 * KIB, 4 * KIB, 16, puts, 5.0),
        }),
    };
    report.small_shards = Some(SmallShardReport {
        engine_runs: vec![
            run(Engine::Files, 4 * KIB, 1000.0),
            run(Engine::Volumes, 4 * KIB, 7000.0),
            run(Engine::Volumes, 4 * KIB, 5000.0),
            EngineRun { engine: Engine::Files, size: 4 * KIB, result: Err("did not start".into()) },
            // 64 KiB: 2.5× files, met; 256 KiB: 1.5×, not met.
            run(Engine::Files, 64 * KIB, 400.0),
            run(Engine::Volumes, 64 * KIB, 1000.0),
            run(Engine::Files, 256 * KIB, 200.0),
            run(Engine::Volumes, 256 * KIB, 300.0),
        ],
        fsync: vec![
            // strace: 400 PUTs in 5 s (80 ops/s), 1,200 calls.
            count(SyncCounter::Strace, CommitDelay::Default, 200, 1000, 400),
            // perf: 2,000 PUTs in 5 s (400 ops/s, 5× strace's), 1,800 calls.
            count(SyncCounter::Perf, CommitDelay::Default, 800, 1000, 2000),
            // perf without the delay: 1,000 PUTs, 3,000 calls.
            count(SyncCounter::Perf, CommitDelay::Off, 1000, 2000, 1000),
        ],
        space: Ok(SpaceUse {
            requested: 88_000,
            fill: fill_report(Op::Fill, 64, 64, 16, 88_000, 44.0),
            data: DiskUse { allocated: 88_000 * 900, apparent: 0, files: 60 },
            meta: DiskUse { allocated: 20 * MIB, apparent: 20 * MIB, files: 2 },
        }),
        after_deletes: Err("not in this run (0 objects)".into()),
        scale: Ok(ScaleReport {
            requested: 1_000_000,
            fill: fill_report(Op::Fill, KIB, 8 * KIB, 16, 1_000_000, 500.0),
            servers: vec![
                ServerMemory {
                    name: "data-1".into(),
                    before: 10 * MIB,
                    after: 40 * MIB,
                    shards: Ok(500_000),
                    midpoint: Some((25 * MIB, 250_000)),
                },
                // /stats failed: the estimate, 1,000,000 shards, gives 40 MiB per million.
                ServerMemory {
                    name: "data-2".into(),
                    before: 10 * MIB,
                    after: 50 * MIB,
                    shards: Err("connection refused".into()),
                    midpoint: None,
                },
            ],
            estimated_shards_per_server: 1_000_000.0,
            restart: Ok(Restart { server: "data-1".into(), shard: "ab.2".into(), seconds: 1.5 }),
            notes: vec![],
        }),
    });
    let md = markdown::render(&report);
    for expected in [
        "## Small shards (issue 9)",
        "| PUT 4 KiB at 1 client: p99 < 5 ms | dev | p99 4.900 ms | met |",
        "| PUT 4 KiB at 64 clients: at least the 16-client figure | dev | 2,600 ops/s, but 5 requests failed | **not met** |",
        "| PUT 64 KiB at 16 clients: reported (goal: 2× the figure before the engine) | dev | 900 ops/s, 59.0 MB/s | see files versus volumes below |",
        "| PUT 256 KiB at 16 clients: reported (goal: 2× the figure before the engine) | dev | not in this run |",
        "### Files versus volumes: PUT 4 KiB, 64 KiB and 256 KiB × 16 on `cairn dev`",
        "Below 1 MiB an object is stored as 1+2 (3 whole copies)",
        "| 2 | 4 KiB | volumes | 7,000 |",
        "| 4 | 4 KiB | files | failed: did not start |",
        "| 6 | 64 KiB | volumes | 1,000 | 65.5 |",
        // 4 KiB volumes: 60,000 PUTs in 10 s; files: 5,000 in 5 s; a files run failed.
        "| 4 KiB | 1,000 | 6,000 | 6.00× | volumes ≥ 6,000 ops/s and ahead of files | **not met** |",
        "| 64 KiB | 400 | 1,000 | 2.50× | volumes ÷ files ≥ 2× | met |",
        "| 256 KiB | 200 | 300 | 1.50× | volumes ÷ files ≥ 2× | **not met** |",
        "| strace | default (1ms) | 200 | 1000 | 400 | 80 | 0 | 3.00 | ≤ 1 | **not met** |",
        "| perf | default (1ms) | 800 | 1000 | 2000 | 400 | 0 | 0.90 | ≤ 1 | met |",
        "| perf | `--commit-delay 0s` | 1000 | 2000 | 1000 | 200 | 0 | 3.00 | ≤ 1 | **not met** |",
        "Here the load under strace ran at 80 ops/s, 5.0× slower than under perf (400 ops/s), and counted 3.00 calls per PUT against perf's 0.90.",
        "What the commit delay buys (perf): 0.90 calls per PUT at 400 ops/s with the default delay, 3.00 at 200 ops/s with `--commit-delay 0s`.",
        "| 88,000 (of 88,000) | 2,000 | 75.5 MiB | 60 | 900 B | 20.0 MiB | < 1 KiB | met |",
        "`cairn-bench load --op fill --count 1000000 --size 1KiB --size-max 8KiB --keep`",
        "| data-1 | 10.0 MiB | 25.0 MiB (250,000) | 40.0 MiB | 30.0 MiB | 500,000 | 60.0 MiB | 60.0 MiB |",
        "| data-2 | 10.0 MiB | - | 50.0 MiB | 40.0 MiB | ≈ 1,000,000 (estimate: `/stats` failed) | 40.0 MiB | - |",
        "Mean growth per million shards: 50.0 MiB; mean marginal: -. Goal: < 64.0 MiB (judged on the growth): met.",
        "data-1 killed with SIGKILL and started again with the same flags answered `GET /objects/ab.2`",
        "1.50 s after its spawn. Goal: < 5 s at a million shards (this run: 500,000 shards on data-1",
    ] {
        assert!(md.contains(expected), "report lacks {expected:?}:\n{md}");
    }

    let small = report.small_shards.as_mut().unwrap();
    small.fsync = vec![
        FsyncRun {
            counter: SyncCounter::Strace,
            commit_delay: CommitDelay::Default,
            result: Err("strace is not installed (`apt-get install -y strace`): nothing counted".into()),
        },
        FsyncRun {
            counter: SyncCounter::Perf,
            commit_delay: CommitDelay::Default,
            result: Err(
                "perf could not attach to cairn dev (exit status: 255): No permission | see perf_event_paranoid."
                    .into(),
            ),
        },
        FsyncRun {
            counter: SyncCounter::Perf,
            commit_delay: CommitDelay::Off,
            result: Ok(FsyncCount {
                calls: SyncCalls { fsync: 1, fdatasync: 2 },
                load: fill_report(Op::Put, 4 * KIB, 4 * KIB, 16, 3, 5.0),
            }),
        },
    ];
    small.space = Err("not in this run (0 objects)".into());
    small.scale = Err("RabbitMQ does not answer at 127.0.0.1:5672".into());
    small.engine_runs.clear();
    let md = markdown::render(&report);
    for expected in [
        "| strace | default (1ms) | not measured: strace is not installed (`apt-get install -y strace`): nothing counted | - | - | - | - | - | ≤ 1 | not measured |",
        // A reason with a `|` stays in its cell.
        "| perf | default (1ms) | not measured: perf could not attach to cairn dev (exit status: 255): No permission \\| see perf_event_paranoid | - |",
        "| perf | `--commit-delay 0s` | 1 | 2 | 3 |",
        "Not measured: not in this run (0 objects).",
        "Not measured: RabbitMQ does not answer at 127.0.0.1:5672.",
        "No runs.",
    ] {
        assert!(md.contains(expected), "report lacks {expected:?}:\n{md}");
    }
    // Without two counts to compare, no comparison is made up.
    assert!(!md.contains("the load under strace ran at"), "{md}");
    assert!(!md.contains("What the commit delay buys"), "{md}");
    assert_eq!(small_shards::engine_ops_per_s(&[], Engine::Files, 4 * KIB), None);
}

#[test]
fn the_small_shard_flags_size_the_fills_and_come_back_in_the_command_line() {
    let args = SuiteArgs::try_parse_from([
        "cairn-bench-suite",
        "--quick",
        "--skip-matrix",
        "--space-objects",
        "500",
        "--scale-objects",
        "0",
    ])
    .unwrap();
    let config = args.config("/bin/cairn".into(), "/tmp".into());
    assert!(config.cells.is_empty());
    let small = config.small_shards.expect("measured");
    assert_eq!((small.space_objects, small.scale_objects), (500, 0));
    assert_eq!(
        args.command_line(),
        "cargo build --release && target/release/cairn-bench suite --out BENCH.md --quick --skip-matrix \
         --space-objects 500 --scale-objects 0"
    );
    let config = SuiteArgs::try_parse_from(["cairn-bench-suite"]).unwrap().config("/bin/cairn".into(), "/tmp".into());
    let small = config.small_shards.expect("measured");
    assert_eq!((small.space_objects, small.scale_objects), (88_000, 1_000_000));
    assert_eq!(config.cells.len(), 14);
}

// ---- the suite itself, shrunk -------------------------------------------------------

fn tiny_config(work_dir: &Path, cells: Vec<Cell>) -> SuiteConfig {
    let mut config = SuiteConfig::standard(true, work_dir.to_path_buf());
    config.cells = cells;
    config.cell_duration = Duration::from_millis(300);
    // tests/crash.rs makes a crash run of its own.
    config.crash_duration = Duration::ZERO;
    // The small-shard measurements fill thousands of objects: too long for a test.
    config.small_shards = None;
    config.ceiling_sizes =
        CeilingSizes { file: 4 * MIB, sha256: MIB, http: 4 * MIB, small_time: Duration::from_millis(50) };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_suite_runs_against_cairn_dev_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cells = vec![
        Cell::new(Op::Get, 4 * KIB, 2),
        Cell::new(Op::Put, 4 * KIB, 2),
        Cell::new(Op::GetMissing, 0, 1),
        Cell::new(Op::Put, MIB, 1),
    ];
    let config = tiny_config(dir.path(), cells.clone());
    let report = suite::run_suite(&config, CancellationToken::new()).await.expect("the suite runs");

    assert_eq!(report.layouts.len(), 2);
    let LayoutOutcome::Ran(ran) = &report.layouts[0].outcome else {
        panic!("cairn dev did not run: {:?}", report.layouts[0])
    };
    assert_eq!(ran.iter().map(|c| c.cell).collect::<Vec<_>>(), cells);
    for c in ran {
        let r = c.result.as_ref().expect("cell ran");
        assert_eq!(r.error_count(), 0, "{:?}: {:?}", c.cell, r.total.first_errors);
        assert_eq!(r.live_data_servers, 6);
        assert!(r.total.ops > 0, "{:?}", c.cell);
    }
    assert!(matches!(report.layouts[1].outcome, LayoutOutcome::Skipped(_)), "no binary given");
    assert_eq!(report.failed_cells(), 0);
    assert_eq!(report.ceilings.fsync_write.bytes, 4 * MIB);
    assert!(report.machine.cores >= 1);

    let md = markdown::render(&report);
    assert!(md.contains("| dev | GET missing | - | 1 |"), "{md}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "the suite removes its work directory: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_suite_runs_against_the_multi_process_layout_and_stops_it() {
    if !common::rabbitmq_reachable("a_tiny_suite_runs_against_the_multi_process_layout_and_stops_it").await {
        return;
    }
    // The `cairn` binary belongs to another package, so Cargo gives this test no
    // CARGO_BIN_EXE_cairn; the workspace's `cargo test` builds it into target/<profile>/.
    let Some(cairn_exe) = cairn_beside(&std::env::current_exe().unwrap()) else {
        let why = "no `cairn` binary in this target directory (the workspace's `cargo test` builds it)";
        assert!(!common::services_required(), "{why} and CAIRN_REQUIRE_SERVICES=1");
        eprintln!("SKIPPED a_tiny_suite_runs_against_the_multi_process_layout_and_stops_it: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cells = vec![Cell::new(Op::Put, 4 * KIB, 1), Cell::new(Op::GetMissing, 0, 1)];
    let mut config = tiny_config(dir.path(), cells);
    config.cairn_exe = Some(cairn_exe);
    config.broker_url = common::BROKER_URL.to_string();
    // Away from the real suite's 12400 and a developer's 12345.
    config.base_port = 12_470;
    let report = suite::run_suite(&config, CancellationToken::new()).await.expect("the suite runs");

    let multi = &report.layouts[1];
    let LayoutOutcome::Ran(ran) = &multi.outcome else { panic!("the processes did not run: {multi:?}") };
    assert_eq!(ran.len(), 2);
    for c in ran {
        // Other tests' data servers may heartbeat on the same broker (and die), so
        // only that the cell ran is asserted, not that none of its requests failed.
        let r = c.result.as_ref().expect("cell ran");
        assert!(r.live_data_servers >= 6, "{r:?}");
    }
    // Cells alternate between the two API servers.
    let endpoints: Vec<&str> = ran.iter().map(|c| c.result.as_ref().unwrap().endpoint.as_str()).collect();
    assert_ne!(endpoints[0], endpoints[1]);
    assert!(endpoints.iter().all(|e| e.starts_with("http://127.29.2.")), "{endpoints:?}");

    // Every process was killed: the API servers' ports are free again.
    for e in endpoints {
        let addr: std::net::SocketAddr = e.trim_start_matches("http://").parse().unwrap();
        std::net::TcpListener::bind(addr).unwrap_or_else(|err| panic!("{addr} still taken: {err}"));
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "the suite removes its work directory: {leftovers:?}");
}
