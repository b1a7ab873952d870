//! The crash run of issue 9, short: data servers of the multi-process layout are
//! killed with `kill -9` during a 16-client small-PUT load and started again, and
//! every acknowledged object must read back byte-identical. Also the report's
//! rendering, from made-up figures.

mod common;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use cairn_bench::args::cairn_beside;
use cairn_bench::crash::{self, CopyCheck, CrashConfig, CrashOutcome, CrashReport};

/// Away from the suite's 12400, its tiny test's 12470 and a developer's 12345.
const BASE_PORT: u16 = 12_600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_data_servers_under_small_puts_and_read_back_every_acknowledged_object() {
    let test = "kill_9_data_servers_under_small_puts_and_read_back_every_acknowledged_object";
    if !common::rabbitmq_reachable(test).await {
        return;
    }
    // The `cairn` binary belongs to another package, so Cargo gives this test no
    // CARGO_BIN_EXE_cairn; the workspace's `cargo test` builds it into target/<profile>/.
    let Some(cairn_exe) = cairn_beside(&std::env::current_exe().unwrap()) else {
        let why = "no `cairn` binary in this target directory (`cargo build --bin cairn` builds it)";
        assert!(!common::services_required(), "{why} and CAIRN_REQUIRE_SERVICES=1");
        eprintln!("SKIPPED {test}: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        CrashConfig::new(cairn_exe, dir.path().to_path_buf(), common::BROKER_URL, BASE_PORT, Duration::from_secs(20));
    // A kill about every 4-5 s (3 s, 1 s dead, the restart): 3 to 5 in 20 s.
    config.kill_every = Duration::from_secs(3);
    config.down_for = Duration::from_secs(1);
    let run = crash::run_crash(&config, CancellationToken::new());
    let report = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the crash run ends within 4 minutes")
        .expect("the crash run runs");
    let outcome = CrashOutcome::Ran(Box::new(report.clone()));
    let mut md = String::new();
    crash::write_markdown(&mut md, &outcome).unwrap();
    eprintln!("{md}");

    assert!((3..=6).contains(&report.kills), "{md}");
    assert_eq!(report.restarts, report.kills, "every killed data server came back: {md}");
    assert!(report.acknowledged_after_kill > 0, "PUTs were acknowledged after the kills began: {md}");
    assert_eq!(report.mismatches, 0, "acknowledged objects changed: {md}");
    assert_eq!(report.unreadable, 0, "acknowledged objects lost: {md}");
    assert_eq!(report.verified, report.acknowledged, "{md}");
    let copies = report.copies.as_ref().expect("the small policy is full copies");
    assert_eq!(copies.served_wrong, 0, "a data server served a copy with other bytes: {md}");
    assert_eq!(copies.under_replicated, 0, "acknowledged objects with fewer than k+1 good copies: {md}");
    assert_eq!(copies.unlocated, 0, "{md}");
    assert!(report.failures().is_empty(), "{md}");
    assert_eq!(outcome.failure(), None);
    assert!(report.panic_log_lines.is_empty(), "a server panicked: {md}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "the run removes its directory: {leftovers:?}");
}

fn made_up_report() -> CrashReport {
    CrashReport {
        description: "six processes".into(),
        elapsed: Duration::from_secs(120),
        kills: 24,
        restarts: 24,
        slowest_restart: Some(Duration::from_millis(450)),
        acknowledged: 60_000,
        acknowledged_after_kill: 57_000,
        failed_puts: 12,
        put_errors: vec!["PUT crash-1/00-0000000007: answered 503 Service Unavailable: no\nquorum".into()],
        verified: 60_000,
        mismatches: 0,
        unreadable: 0,
        lost: vec![],
        copies: Some(CopyCheck { copies: 3, needed: 2, good: 179_999, missing: 1, ..CopyCheck::default() }),
        corrupt_log_lines: vec![],
        panic_log_lines: vec![],
        notes: vec![],
    }
}

#[test]
fn a_clean_crash_run_renders_its_figures_and_passes() {
    let outcome = CrashOutcome::Ran(Box::new(made_up_report()));
    let mut md = String::new();
    crash::write_markdown(&mut md, &outcome).unwrap();
    assert!(md.starts_with("## Crash"), "{md}");
    assert!(md.contains("Every acknowledged object read back byte-identical; no data server"), "{md}");
    assert!(md.contains("| data servers killed (SIGKILL) | 24 |"), "{md}");
    assert!(md.contains("| acknowledged PUTs | 60000 (500/s) |"), "{md}");
    assert!(md.contains("| copies read from their data servers byte-identical | 179999 of 180000 |"), "{md}");
    assert!(md.contains("| … that no data server holds | 1 |"), "{md}");
    assert!(md.contains("| slowest restart, start to answering `/healthz` | 0.5 s |"), "{md}");
    assert!(md.contains("- PUT crash-1/00-0000000007: answered 503 Service Unavailable: no quorum\n"), "{md}");
    assert_eq!(outcome.failure(), None);
    assert!(crash::summary_line(&outcome).starts_with("met "), "{}", crash::summary_line(&outcome));
}

#[test]
fn a_lost_object_fails_the_run_and_corruption_in_a_log_is_shown() {
    let mut report = made_up_report();
    report.verified -= 3;
    report.mismatches = 1;
    report.unreadable = 2;
    report.lost = vec!["crash-1/03-0000000042: answered 503".into()];
    report.corrupt_log_lines = vec!["data-2: ERROR corrupt shard detected while serving".into()];
    assert_eq!(report.failures().len(), 2, "{:?}", report.failures());
    let copies = report.copies.as_mut().unwrap();
    copies.served_wrong = 1;
    copies.under_replicated = 1;
    copies.problems = vec!["crash-1/03-0000000042 shard 2 on 127.29.1.4:12600: served 10 bytes of 4096".into()];
    assert_eq!(report.failures().len(), 4, "{:?}", report.failures());
    let outcome = CrashOutcome::Ran(Box::new(report));
    let mut md = String::new();
    crash::write_markdown(&mut md, &outcome).unwrap();
    assert!(md.contains("**Failed**: 1 acknowledged objects read back with other bytes; 2 acknowledged"), "{md}");
    assert!(md.contains("| … unreadable | 2 |"), "{md}");
    assert!(md.contains("| data-server log lines with \"corrupt\" | 1 |"), "{md}");
    assert!(md.contains("- data-2: ERROR corrupt shard detected while serving"), "{md}");
    assert!(md.contains("| … served with other bytes | 1 |"), "{md}");
    assert!(md.contains("| objects with fewer than 2 good copies | 1 |"), "{md}");
    assert!(md.contains("- crash-1/03-0000000042 shard 2 on 127.29.1.4:12600: served 10 bytes of 4096"), "{md}");
    assert!(outcome.failure().is_some_and(|f| f.contains("2 acknowledged objects could not be read back")));
    assert!(crash::summary_line(&outcome).starts_with("NOT MET"));

    let skipped = CrashOutcome::Skipped("--crash-seconds 0".into());
    let mut md = String::new();
    crash::write_markdown(&mut md, &skipped).unwrap();
    assert!(md.contains("Skipped: --crash-seconds 0"), "{md}");
    assert_eq!(skipped.failure(), None);
    assert!(CrashOutcome::Failed("no port".into()).failure().is_some());
}

#[test]
fn log_lines_lose_their_colours() {
    assert_eq!(
        crash::strip_ansi("\u{1b}[2m2026-01-01\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m corrupt shard"),
        "2026-01-01 ERROR corrupt shard"
    );
    assert_eq!(crash::strip_ansi("plain"), "plain");
}

#[test]
fn crash_seconds_sets_the_suite_s_crash_run() {
    use cairn_bench::args::SuiteArgs;
    use clap::Parser;

    let config = |flags: &[&str]| {
        let args =
            SuiteArgs::try_parse_from(std::iter::once("cairn-bench-suite").chain(flags.iter().copied())).unwrap();
        (args.config("/bin/cairn".into(), "/tmp".into()), args.command_line())
    };
    assert_eq!(config(&[]).0.crash_duration, Duration::from_secs(120));
    assert_eq!(config(&["--quick"]).0.crash_duration, Duration::from_secs(20));
    let (zero, line) = config(&["--crash-seconds", "0"]);
    assert_eq!(zero.crash_duration, Duration::ZERO);
    assert!(line.ends_with(" --crash-seconds 0"), "{line}");
    assert_eq!(config(&["--quick", "--crash-seconds", "300"]).0.crash_duration, Duration::from_secs(300));
}
