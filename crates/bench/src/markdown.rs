//! The suite's report as Markdown (`BENCH.md`) and the evaluation of issue 5's
//! targets: pure functions of a [`SuiteReport`], so that tests can render a made-up
//! one. Every number in the report comes from the report; nothing is written by hand.
//!
//! Tables are written row by row with `writeln!`, not with a table crate: `tabled`
//! without default features adds four crates (`tabled`, `papergrid`, `bytecount`,
//! `unicode-width`) for what is a header line and a `|`-joined row here, and its
//! Markdown style pads every column to its widest cell, which would change the
//! layout of every `BENCH.md` for no gain in what it says.

use std::fmt::Write as _;

use crate::load::{BenchReport, LatencySummary, Op, OpReport};
use cairn::size::ByteSize;

use crate::ceilings::OpsRate;
use cairn::dev::{DEFAULT_SMALL_POLICY, DEFAULT_SMALL_THRESHOLD};

use crate::plan::{write_amplification, Cell};
use crate::small_shards::{
    engine_ops_per_s, CommitDelay, Engine, SmallShardReport, SyncCounter, GOAL_BYTES_PER_SMALL_OBJECT,
    GOAL_FSYNCS_PER_PUT, GOAL_RESTART_SECONDS, GOAL_RSS_PER_MILLION_SHARDS, GOAL_SMALL_PUT_OPS,
    GOAL_VOLUMES_OVER_FILES,
};
use crate::suite::{cell_label, CellResult, Layout, LayoutOutcome, SuiteReport};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Whether a target is met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The figure is on the right side of the bound, without failed requests.
    Met,
    /// It is not (or requests failed).
    NotMet,
    /// There is no figure: the cell was not in the run or did not run.
    NotMeasured,
}

impl Verdict {
    /// As shown in the report.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One target of issue 5 against one layout's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetCheck {
    /// The target, in words.
    pub target: String,
    /// Whose figures.
    pub layout: Layout,
    /// What was measured, or why nothing was.
    pub measured: String,
    /// Where it stands.
    pub verdict: Verdict,
}

/// Which figure of a run a target bounds.
#[derive(Clone, Copy)]
enum Figure {
    OpsPerS,
    P99Ms,
    MbPerS,
}

impl Figure {
    fn of(self, r: &BenchReport) -> Option<f64> {
        let op = r.ops.first()?;
        match self {
            Figure::OpsPerS => Some(op.ops_per_s),
            Figure::MbPerS => Some(op.mb_per_s),
            Figure::P99Ms => op.latency_us.map(|l| f64::from(l.p99_us) / 1000.0),
        }
    }

    fn show(self, value: f64) -> String {
        match self {
            Figure::OpsPerS => format!("{} ops/s", thousands(value)),
            Figure::P99Ms => format!("p99 {value:.3} ms"),
            Figure::MbPerS => format!("{} MB/s", rate(value)),
        }
    }
}

/// A bound on a figure.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    Below(f64),
}

impl Bound {
    fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtLeast(b) => value >= b,
            Bound::Below(b) => value < b,
        }
    }
}

/// Issue 5's targets, each checked against every layout that ran. The 1 GiB PUT
/// target depends on the measured fsync write speed.
pub fn evaluate_targets(report: &SuiteReport) -> Vec<TargetCheck> {
    let fsync = report.ceilings.fsync_write.mb_per_s();
    let amplification = write_amplification(report.redundancy.policy_for(GIB));
    let put_bound = 0.8 * fsync / amplification;
    let targets: [(String, Cell, Figure, Bound); 6] = [
        (
            "GET 4 KiB at 16 clients: ≥ 10,000 ops/s".into(),
            Cell::new(Op::Get, 4096, 16),
            Figure::OpsPerS,
            Bound::AtLeast(10_000.0),
        ),
        ("GET 4 KiB at 1 client: p99 < 1 ms".into(), Cell::new(Op::Get, 4096, 1), Figure::P99Ms, Bound::Below(1.0)),
        (
            "PUT 4 KiB (fsynced, replicated) at 16 clients: ≥ 2,000 ops/s".into(),
            Cell::new(Op::Put, 4096, 16),
            Figure::OpsPerS,
            Bound::AtLeast(2_000.0),
        ),
        (
            format!(
                "PUT 1 GiB (erasure coded, fsynced): ≥ 80% of fsync write ÷ {} = {} MB/s",
                trim_float(amplification),
                rate(put_bound)
            ),
            Cell::new(Op::Put, GIB, 1),
            Figure::MbPerS,
            Bound::AtLeast(put_bound),
        ),
        ("GET 1 GiB (warm): ≥ 1 GB/s".into(), Cell::new(Op::Get, GIB, 1), Figure::MbPerS, Bound::AtLeast(1000.0)),
        ("GET of a missing name: p99 < 1 ms".into(), Cell::new(Op::GetMissing, 0, 1), Figure::P99Ms, Bound::Below(1.0)),
    ];
    let mut checks = Vec::new();
    for layout in &report.layouts {
        let LayoutOutcome::Ran(cells) = &layout.outcome else { continue };
        for (target, cell, figure, bound) in &targets {
            let found = cells.iter().find(|c| c.cell == *cell);
            let (measured, verdict) = match found.map(|c| &c.result) {
                None if report.quick && cell.size.bytes() >= GIB => {
                    ("not in a --quick run".to_string(), Verdict::NotMeasured)
                }
                None => ("not in this run".to_string(), Verdict::NotMeasured),
                Some(Err(e)) => (format!("the cell failed: {}", one_line(e)), Verdict::NotMeasured),
                Some(Ok(r)) => match figure.of(r) {
                    None => ("no successful request".to_string(), Verdict::NotMet),
                    Some(value) => {
                        let shown = figure.show(value);
                        match r.error_count() {
                            0 if bound.holds(value) => (shown, Verdict::Met),
                            0 => (shown, Verdict::NotMet),
                            errors => (format!("{shown}, but {errors} requests failed"), Verdict::NotMet),
                        }
                    }
                },
            };
            checks.push(TargetCheck { target: target.clone(), layout: layout.layout, measured, verdict });
        }
    }
    checks
}

/// What a cell's figure is compared with.
#[derive(Clone, Debug, PartialEq)]
pub struct Ceiling {
    /// Which measurement, and how it was scaled (`fsync write ÷ 1.5 (4+2)`).
    pub name: String,
    /// Its value, in `unit`.
    pub value: f64,
    /// What it counts.
    pub unit: Unit,
}

/// The unit of a [`Ceiling`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Decimal megabytes per second: large objects, where bytes are the cost.
    MbPerS,
    /// Requests per second: small objects, where each request is the cost.
    OpsPerS,
}

impl Ceiling {
    /// The cell's figure in this ceiling's unit, as a share of it.
    pub fn share(&self, figures: &OpReport) -> Option<f64> {
        let figure = match self.unit {
            Unit::MbPerS => figures.mb_per_s,
            Unit::OpsPerS => figures.ops_per_s,
        };
        (self.value > 0.0).then(|| figure / self.value)
    }

    fn show(&self) -> String {
        match self.unit {
            Unit::MbPerS => format!("{}: {} MB/s", self.name, rate(self.value)),
            Unit::OpsPerS => format!("{}: {} ops/s", self.name, thousands(self.value)),
        }
    }
}

/// The ceiling a cell is compared with. Objects of the large policy are measured
/// in MB/s: PUTs against the fsync write speed ÷ (k+m)/k (every shard lands on this
/// one disk), GETs against the lower of loopback HTTP and warm read. Smaller ones
/// are measured in requests per second: PUTs against small fsyncs (at one or at
/// [`PARALLEL`](crate::ceilings::PARALLEL) at once, as the cell has one client or
/// more) ÷ shards, GETs and GETs of missing names against loopback 4 KiB GETs at
/// the same concurrency. `None` for mixed runs.
pub fn ceiling_for(cell: &Cell, report: &SuiteReport) -> Option<Ceiling> {
    let c = &report.ceilings;
    let policy = report.redundancy.policy_for(cell.size.bytes());
    let small = cell.op == Op::GetMissing || cell.size.bytes() < report.redundancy.threshold;
    let at_once = |one: &OpsRate, many: &OpsRate| {
        let picked = if cell.clients <= 1 { *one } else { *many };
        let times = if picked.parallel > 1 { format!(" ×{}", picked.parallel) } else { String::new() };
        (picked, times)
    };
    Some(match cell.op {
        Op::Put if small => {
            let (fsyncs, times) = at_once(&c.small_fsync, &c.small_fsync_parallel);
            let shards = policy.shards();
            Ceiling {
                name: format!("small fsync{times} ÷ {shards} ({policy})"),
                value: fsyncs.per_s() / shards as f64,
                unit: Unit::OpsPerS,
            }
        }
        Op::Put => {
            let amplification = write_amplification(policy);
            Ceiling {
                name: format!("fsync write ÷ {} ({policy})", trim_float(amplification)),
                value: c.fsync_write.mb_per_s() / amplification,
                unit: Unit::MbPerS,
            }
        }
        Op::Get | Op::GetMissing if small => {
            let (requests, times) = at_once(&c.http_small, &c.http_small_parallel);
            Ceiling { name: format!("loopback 4 KiB GET{times}"), value: requests.per_s(), unit: Unit::OpsPerS }
        }
        Op::Get | Op::GetMissing => {
            let (http, read) = (c.http_download.mb_per_s(), c.warm_read.mb_per_s());
            let (name, value) = if http <= read { ("loopback HTTP GET", http) } else { ("warm read", read) };
            Ceiling { name: name.into(), value, unit: Unit::MbPerS }
        }
        Op::Mixed | Op::Fill => return None,
    })
}

/// The whole report.
pub fn render(report: &SuiteReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, report);
    out
}

/// A few lines for the terminal: the targets and where they stand.
pub fn render_summary(report: &SuiteReport) -> String {
    let mut out = String::new();
    for check in evaluate_targets(report) {
        let verdict = match check.verdict {
            Verdict::Met => "met",
            Verdict::NotMet => "NOT MET",
            Verdict::NotMeasured => "not measured",
        };
        let _ = writeln!(out, "{:<13} {:<13} {}: {}", verdict, check.layout.name(), check.target, check.measured);
    }
    for layout in &report.layouts {
        match &layout.outcome {
            LayoutOutcome::Ran(_) => {}
            LayoutOutcome::Skipped(why) => {
                let _ = writeln!(out, "skipped       {:<13} {}", layout.layout.name(), one_line(why));
            }
            LayoutOutcome::Failed(why) => {
                let _ = writeln!(out, "FAILED        {:<13} {}", layout.layout.name(), one_line(why));
            }
        }
    }
    let _ = writeln!(out, "{}", crate::crash::summary_line(&report.crash));
    out.truncate(out.trim_end().len());
    out
}

fn write_report(out: &mut String, report: &SuiteReport) -> std::fmt::Result {
    let m = &report.machine;
    writeln!(out, "# cairn benchmarks")?;
    writeln!(out)?;
    writeln!(
        out,
        "Written by `cairn-bench suite` on {}; every figure below comes from that run. To regenerate:",
        m.date
    )?;
    writeln!(out)?;
    writeln!(out, "```sh\n{}\n```", report.command)?;
    writeln!(out)?;

    writeln!(out, "## Machine")?;
    writeln!(out)?;
    writeln!(out, "| | |\n|---|---|")?;
    writeln!(out, "| CPU | {}, {} logical cores |", cell_text(m.cpu_model.as_deref().unwrap_or("unknown")), m.cores)?;
    let memory = m.memory_bytes.map_or("unknown".to_string(), |b| format!("{:.1} GiB", b as f64 / GIB as f64));
    writeln!(out, "| memory | {memory} |")?;
    writeln!(out, "| kernel (`uname -r`) | {} |", cell_text(m.kernel.as_deref().unwrap_or("unknown")))?;
    let fs = m.filesystem.as_ref().map_or("unknown".to_string(), |f| {
        format!("{} on {}, mounted at {}", f.fstype, f.device, f.mount_point.display())
    });
    writeln!(out, "| file system of the work directory | {} |", cell_text(&fs))?;
    writeln!(
        out,
        "| load average (1, 5, 15 min) | {} before, {} after |",
        m.load_before.as_deref().unwrap_or("unknown"),
        m.load_after.as_deref().unwrap_or("unknown")
    )?;
    if let Some(cpu) = &m.cpu {
        writeln!(
            out,
            "| CPU time during the suite | {} used by the suite and its servers, {} by other processes (of all cores' time) |",
            percent(cpu.our_share()),
            percent(cpu.others_share())
        )?;
    }
    writeln!(
        out,
        "| suite | {}: {} s per cell; took {} |",
        if report.quick { "quick (`--quick`)" } else { "full" },
        trim_float(report.cell_duration.as_secs_f64()),
        humantime::format_duration(std::time::Duration::from_secs(report.elapsed.as_secs()))
    )?;
    writeln!(out)?;
    if m.cpu.is_some_and(|c| c.others_share() >= 0.1) {
        writeln!(
            out,
            "Other processes used a noticeable share of the CPU while the suite ran: the figures may be lower than \
             on an idle machine."
        )?;
        writeln!(out)?;
    }

    write_ceilings(out, report)?;
    write_results(out, report)?;
    write_targets(out, report)?;
    crate::crash::write_markdown(out, &report.crash)?;
    write_small_shards(out, report)?;

    writeln!(out, "## How to read this")?;
    writeln!(out)?;
    writeln!(out, "- MB/s is decimal megabytes (10^6 bytes) of object data per second; a PUT's MB/s counts the object once, not its redundancy.")?;
    writeln!(out, "- Latency runs from sending a request to the last byte of its answer, successful requests only; p50/p90/p99 are nearest-rank percentiles. Cells with few requests (the large objects) have few samples.")?;
    writeln!(out, "- Each cell is one `cairn-bench load` run: GET cells first write the objects they read (at most {} MiB of them), so GETs read from a warm page cache; every cell deletes what it wrote.", crate::plan::MAX_PREPARED_BYTES / MIB)?;
    writeln!(out, "- GET missing reads names never written; the expected 404 counts as a success.")?;
    writeln!(out, "- The \"of ceiling\" column compares large objects in MB/s and small ones (and missing names) in requests per second; see Ceilings for which measurement each is compared with. A large GET crosses HTTP twice (data servers to API server, API server to client); a small GET may be answered from the API server's cache.")?;
    writeln!(out, "- The fsync write is one stream, while the data servers each write a shard at once, which a disk (a virtual one especially) may serve faster: a PUT above 100% of its ceiling says that, not that the ceiling is wrong. A PUT is acknowledged once k+1 shards are durable, the last one still landing.")?;
    writeln!(out, "- The load generator, the servers and the ceiling measurements all run on this one machine and share its cores.")?;
    Ok(())
}

fn write_ceilings(out: &mut String, report: &SuiteReport) -> std::fmt::Result {
    let c = &report.ceilings;
    writeln!(out, "## Ceilings")?;
    writeln!(out)?;
    writeln!(out, "| measurement | bytes | seconds | MB/s | how |\n|---|---|---:|---:|---|")?;
    let rows = [
        ("fsync write", &c.fsync_write, "sequential 1 MiB writes to a new file, then fsync; the time includes the fsync (like `dd bs=1M conv=fsync`)"),
        ("warm read", &c.warm_read, "the same file read back sequentially right after writing it: from the page cache, not the disk"),
        ("SHA-256", &c.sha256, "one core hashing in memory (sha2 crate)"),
        ("loopback HTTP GET", &c.http_download, "in-process axum server streaming a repeated buffer to a reqwest client over 127.0.0.1"),
        ("loopback HTTP PUT", &c.http_upload, "the same, reqwest client uploading to the server"),
    ];
    for (name, r, how) in rows {
        writeln!(out, "| {name} | {} | {:.3} | {} | {how} |", ByteSize(r.bytes), r.seconds, rate(r.mb_per_s()))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "| measurement | at once | operations | seconds | ops/s | p50 ms | p99 ms | how |\n|---|---:|---:|---:|---:|---:|---:|---|"
    )?;
    let rows = [
        ("small fsync", &c.small_fsync, "create a file, write 4 KiB, fsync; each thread one after another"),
        ("small fsync", &c.small_fsync_parallel, "the same from several threads at once"),
        (
            "loopback 4 KiB GET",
            &c.http_small,
            "reqwest client GETting a 4 KiB answer from the in-process axum server, back to back",
        ),
        ("loopback 4 KiB GET", &c.http_small_parallel, "the same from several clients at once"),
    ];
    for (name, r, how) in rows {
        let latency = |pick: fn(&LatencySummary) -> u32| r.latency_us.as_ref().map_or("-".into(), |l| ms(pick(l)));
        writeln!(
            out,
            "| {name} | {} | {} | {:.3} | {} | {} | {} | {how} |",
            r.parallel,
            r.count,
            r.seconds,
            thousands(r.per_s()),
            latency(|l| l.p50_us),
            latency(|l| l.p99_us),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "The ceilings the results are compared with:")?;
    writeln!(out)?;
    let red = report.redundancy;
    let a = write_amplification(red.large);
    writeln!(
        out,
        "- PUT of objects of {} or more ({}): fsync write ÷ (k+m)/k = ÷ {} = {} MB/s, since every shard lands on this one disk",
        ByteSize(red.threshold),
        red.large,
        trim_float(a),
        rate(c.fsync_write.mb_per_s() / a)
    )?;
    let shards = red.small.shards();
    writeln!(
        out,
        "- PUT of objects below {} ({}): small fsyncs ÷ {shards} shards, at the cell's concurrency: {} ops/s at one client, {} ops/s at several",
        ByteSize(red.threshold),
        red.small,
        thousands(c.small_fsync.per_s() / shards as f64),
        thousands(c.small_fsync_parallel.per_s() / shards as f64),
    )?;
    writeln!(
        out,
        "- GET of objects of {} or more: the lower of loopback HTTP GET ({} MB/s) and warm read ({} MB/s)",
        ByteSize(red.threshold),
        rate(c.http_download.mb_per_s()),
        rate(c.warm_read.mb_per_s())
    )?;
    writeln!(
        out,
        "- GET of smaller objects, and of missing names: loopback 4 KiB GETs at the cell's concurrency ({} ops/s at one client, {} at several)",
        thousands(c.http_small.per_s()),
        thousands(c.http_small_parallel.per_s())
    )?;
    writeln!(out)?;
    Ok(())
}

fn write_results(out: &mut String, report: &SuiteReport) -> std::fmt::Result {
    writeln!(out, "## Results")?;
    writeln!(out)?;
    for layout in &report.layouts {
        let what = match &layout.outcome {
            LayoutOutcome::Ran(_) => layout.description.clone(),
            LayoutOutcome::Skipped(why) => format!("skipped: {why}"),
            LayoutOutcome::Failed(why) => format!("did not start: {why}"),
        };
        writeln!(out, "- **{}**: {}", layout.layout.name(), one_line(&what))?;
        for note in &layout.notes {
            writeln!(out, "  - {}", one_line(note))?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "| layout | op | size | clients | ops/s | MB/s | p50 ms | p90 ms | p99 ms | max ms | errors | ceiling | of ceiling |"
    )?;
    writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")?;
    let mut failures = Vec::new();
    for (layout, c) in report.cells() {
        let op = op_label(c.cell.op);
        let size = if c.cell.op == Op::GetMissing { "-".to_string() } else { c.cell.size.to_string() };
        let head = format!("| {} | {op} | {size} | {} |", layout.name(), c.cell.clients);
        let r = match &c.result {
            Ok(r) => r,
            Err(e) => {
                writeln!(out, "{head} - | - | - | - | - | - | failed | - | - |")?;
                failures.push(format!("{} {}: {e}", layout.name(), cell_label(&c.cell)));
                continue;
            }
        };
        let Some(figures) = r.ops.first() else { continue };
        let latency =
            |pick: fn(&LatencySummary) -> u32| figures.latency_us.as_ref().map_or("-".into(), |l| ms(pick(l)));
        let (ceiling, share) = match ceiling_for(&c.cell, report) {
            Some(ceiling) => (ceiling.show(), ceiling.share(figures).map_or("-".into(), percent)),
            None => ("-".into(), "-".into()),
        };
        let mb_per_s = if c.cell.op == Op::GetMissing { "-".to_string() } else { rate(figures.mb_per_s) };
        writeln!(
            out,
            "{head} {} | {mb_per_s} | {} | {} | {} | {} | {} | {ceiling} | {share} |",
            rate(figures.ops_per_s),
            latency(|l| l.p50_us),
            latency(|l| l.p90_us),
            latency(|l| l.p99_us),
            latency(|l| l.max_us),
            r.error_count(),
        )?;
        let cleanup_errors = r.cleanup.iter().flat_map(|cl| cl.first_errors.iter());
        for e in r.total.first_errors.iter().chain(cleanup_errors).take(3) {
            failures.push(format!("{} {}: {e}", layout.name(), cell_label(&c.cell)));
        }
    }
    writeln!(out)?;
    if !failures.is_empty() {
        writeln!(out, "Failures (the first few of each cell):")?;
        writeln!(out)?;
        writeln!(out, "```text")?;
        for f in failures {
            writeln!(out, "{}", one_line(&f))?;
        }
        writeln!(out, "```")?;
        writeln!(out)?;
    }
    Ok(())
}

fn write_targets(out: &mut String, report: &SuiteReport) -> std::fmt::Result {
    writeln!(out, "## Targets")?;
    writeln!(out)?;
    writeln!(out, "Issue 5's targets, checked against each layout that ran. A cell with failed requests does not meet its target.")?;
    writeln!(out)?;
    let checks = evaluate_targets(report);
    if checks.is_empty() {
        writeln!(out, "No layout ran: nothing to check.")?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "| target | layout | measured | verdict |\n|---|---|---|---|")?;
    for c in &checks {
        writeln!(out, "| {} | {} | {} | {} |", c.target, c.layout.name(), cell_text(&c.measured), c.verdict.label())?;
    }
    writeln!(out)?;
    let met = checks.iter().filter(|c| c.verdict == Verdict::Met).count();
    writeln!(out, "{met} of {} checks met.", checks.len())?;
    writeln!(out)?;
    Ok(())
}

fn op_label(op: Op) -> &'static str {
    match op {
        Op::Get => "GET",
        Op::Put => "PUT",
        Op::Mixed => "mixed",
        Op::GetMissing => "GET missing",
        Op::Fill => "fill",
    }
}

/// `text` on one line, safe inside a Markdown table cell.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell_text(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// Microseconds as milliseconds with three decimals.
fn ms(us: u32) -> String {
    format!("{:.3}", f64::from(us) / 1000.0)
}

/// A rate with precision fitting its size: 1234, 56.7, 8.90, 0.123.
pub fn rate(value: f64) -> String {
    if value >= 1000.0 {
        thousands(value)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A number rounded to a whole, with thousands separated by commas: 12,345.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if value < 0.0 && digits != "0" {
        grouped.insert(0, '-');
    }
    grouped
}

/// A share (0–1) as a percentage with precision fitting its size: 61%, 4.2%, 0.35%.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p >= 10.0 {
        format!("{p:.0}%")
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// A float without trailing zeros: 1.5, 3, 0.25.
fn trim_float(value: f64) -> String {
    let s = format!("{value:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A verdict on a measured value: met when `holds`.
fn verdict(holds: bool) -> Verdict {
    if holds {
        Verdict::Met
    } else {
        Verdict::NotMet
    }
}

/// Bytes as MiB with one decimal.
fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB as f64)
}

/// The first figures of a cell's run in `cells`, when it ran without failures;
/// else what to show instead and the verdict: not met when requests failed (as
/// for issue 5's targets), not measured when the cell did not run.
fn clean_figures<'a>(cells: &'a [CellResult], cell: &Cell) -> Result<&'a OpReport, (String, Verdict)> {
    let not_measured = |why: String| (why, Verdict::NotMeasured);
    let found = cells.iter().find(|c| c.cell == *cell).ok_or_else(|| not_measured("not in this run".into()))?;
    let r = found.result.as_ref().map_err(|e| not_measured(format!("the cell failed: {}", one_line(e))))?;
    let figures = r.ops.first().ok_or_else(|| not_measured("no figures".into()))?;
    match r.error_count() {
        0 => Ok(figures),
        n => Err((format!("{} ops/s, but {n} requests failed", thousands(figures.ops_per_s)), Verdict::NotMet)),
    }
}

/// Issue 9: its targets on the matrix's cells, then the measurements of
/// [`small_shards`], each with what it is and how it was made.
fn write_small_shards(out: &mut String, report: &SuiteReport) -> std::fmt::Result {
    writeln!(out, "## Small shards (issue 9)")?;
    writeln!(out)?;
    writeln!(out, "Issue 9's targets for small writes on the matrix's cells above, then its own measurements, each in a cluster of its own started after the matrix.")?;
    writeln!(out)?;
    let put = |size: u64, clients: u32| Cell::new(Op::Put, size, clients);
    if report.layouts.iter().all(|l| !matches!(l.outcome, LayoutOutcome::Ran(_))) {
        writeln!(out, "No layout ran the matrix: nothing to check.")?;
    } else {
        writeln!(out, "| target | layout | measured | verdict |\n|---|---|---|---|")?;
    }
    for layout in &report.layouts {
        let LayoutOutcome::Ran(cells) = &layout.outcome else { continue };
        let name = layout.layout.name();
        let (text, v) = match clean_figures(cells, &put(4096, 1)) {
            Ok(f) => match f.latency_us {
                Some(l) => (format!("p99 {} ms", ms(l.p99_us)), verdict(f64::from(l.p99_us) < 5000.0)),
                None => ("no latency".to_string(), Verdict::NotMeasured),
            },
            Err(shown) => shown,
        };
        writeln!(out, "| PUT 4 KiB at 1 client: p99 < 5 ms | {name} | {} | {} |", cell_text(&text), v.label())?;
        let (text, v) = match (clean_figures(cells, &put(4096, 64)), clean_figures(cells, &put(4096, 16))) {
            (Ok(at64), Ok(at16)) => (
                format!("{} ops/s at 64, {} at 16", thousands(at64.ops_per_s), thousands(at16.ops_per_s)),
                verdict(at64.ops_per_s >= at16.ops_per_s),
            ),
            (Err(shown), _) | (_, Err(shown)) => shown,
        };
        writeln!(
            out,
            "| PUT 4 KiB at 64 clients: at least the 16-client figure | {name} | {} | {} |",
            cell_text(&text),
            v.label()
        )?;
        for size in [64 * 1024, 256 * 1024] {
            let text = match clean_figures(cells, &put(size, 16)) {
                Ok(f) => format!("{} ops/s, {} MB/s", rate(f.ops_per_s), rate(f.mb_per_s)),
                Err((shown, _)) => shown,
            };
            writeln!(
                out,
                "| PUT {} at 16 clients: reported (goal: 2× the figure before the engine) | {name} | {} | see files versus volumes below |",
                ByteSize(size),
                cell_text(&text)
            )?;
        }
    }
    writeln!(out)?;
    let Some(small) = &report.small_shards else {
        writeln!(out, "The small-shard measurements were not part of this run.")?;
        writeln!(out)?;
        return Ok(());
    };
    write_engines(out, small)?;
    write_fsync_count(out, small)?;
    write_space(out, small)?;
    write_scale(out, small)?;
    write_after_deletes(out, &small.after_deletes)?;
    Ok(())
}

fn write_engines(out: &mut String, small: &SmallShardReport) -> std::fmt::Result {
    writeln!(out, "### Files versus volumes: PUT 4 KiB, 64 KiB and 256 KiB × 16 on `cairn dev`")?;
    writeln!(out)?;
    writeln!(
        out,
        "`cairn dev` with every shard a file (`--small-shard-max 0`, as before issue 9) and with the small-shard engine (`--small-shard-max {}`, the default), a fresh cluster for each run, in this order: alternating within each size, so that a change in the shared disk's speed touches both. Below {} an object is stored as {} ({} whole copies), so each shard is as large as the object: a 256 KiB object's shards are at the threshold, records in a volume like the smaller ones, not files.",
        ByteSize(Engine::Volumes.small_shard_max()),
        ByteSize(DEFAULT_SMALL_THRESHOLD),
        DEFAULT_SMALL_POLICY,
        DEFAULT_SMALL_POLICY.shards(),
    )?;
    writeln!(out)?;
    if small.engine_runs.is_empty() {
        writeln!(out, "No runs.")?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "| run | size | engine | ops/s | MB/s | p50 ms | p99 ms | errors |\n|---:|---|---|---:|---:|---:|---:|---:|"
    )?;
    for (i, run) in small.engine_runs.iter().enumerate() {
        let head = format!("| {} | {} | {} |", i + 1, ByteSize(run.size), run.engine.name());
        match &run.result {
            Err(e) => writeln!(out, "{head} failed: {} | - | - | - | - |", cell_text(e))?,
            Ok(r) => {
                let Some(f) = r.ops.first() else { continue };
                let lat = |pick: fn(&LatencySummary) -> u32| f.latency_us.as_ref().map_or("-".into(), |l| ms(pick(l)));
                writeln!(
                    out,
                    "{head} {} | {} | {} | {} | {} |",
                    thousands(f.ops_per_s),
                    rate(f.mb_per_s),
                    lat(|l| l.p50_us),
                    lat(|l| l.p99_us),
                    r.error_count()
                )?;
            }
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "Per size, each engine's acknowledged PUTs over its runs' time together. A size with a failed run or failed requests does not meet its goal."
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| size | files ops/s | volumes ops/s | volumes ÷ files | goal | verdict |\n|---|---:|---:|---:|---|---|"
    )?;
    let mut sizes: Vec<u64> = Vec::new();
    for run in &small.engine_runs {
        if !sizes.contains(&run.size) {
            sizes.push(run.size);
        }
    }
    let show = |v: Option<f64>| v.map_or("-".to_string(), thousands);
    for size in sizes {
        let runs = || small.engine_runs.iter().filter(|r| r.size == size);
        let files = engine_ops_per_s(&small.engine_runs, Engine::Files, size);
        let volumes = engine_ops_per_s(&small.engine_runs, Engine::Volumes, size);
        let errors: u64 = runs().filter_map(|r| r.result.as_ref().ok()).map(BenchReport::error_count).sum();
        let failed = runs().any(|r| r.result.is_err());
        // Issue 9 sets an absolute rate for 4 KiB and a ratio for the larger sizes.
        let absolute = size <= 4 * 1024;
        let goal = if absolute {
            format!("volumes ≥ {} ops/s and ahead of files", thousands(GOAL_SMALL_PUT_OPS))
        } else {
            format!("volumes ÷ files ≥ {}×", trim_float(GOAL_VOLUMES_OVER_FILES))
        };
        let holds =
            |f: f64, v: f64| if absolute { v >= GOAL_SMALL_PUT_OPS && v > f } else { v >= GOAL_VOLUMES_OVER_FILES * f };
        let (ratio, v) = match (files, volumes) {
            (Some(f), Some(v)) if f > 0.0 => {
                let met = if errors > 0 || failed { Verdict::NotMet } else { verdict(holds(f, v)) };
                (format!("{:.2}×", v / f), met)
            }
            _ => ("-".to_string(), Verdict::NotMeasured),
        };
        writeln!(
            out,
            "| {} | {} | {} | {ratio} | {goal} | {} |",
            ByteSize(size),
            show(files),
            show(volumes),
            v.label()
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn write_fsync_count(out: &mut String, small: &SmallShardReport) -> std::fmt::Result {
    writeln!(out, "### fsync calls per acknowledged PUT")?;
    writeln!(out)?;
    let seconds = small
        .fsync
        .iter()
        .find_map(|r| r.result.as_ref().ok())
        .map_or(String::new(), |f| format!(" --duration {}s", trim_float(f.load.duration_s)));
    writeln!(
        out,
        "A fresh `cairn dev` child process (the `cairn` binary, default engine) per count, loaded with `cairn-bench load --op put --size 4KiB --concurrency 16{seconds}` while a counter is attached to it, then stopped with SIGINT, which makes it write its counts; its fsync and fdatasync calls divided by the PUTs acknowledged. Two counters:"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "- **strace** (issue 9's count): `strace -f -c -e trace=fsync,fdatasync -p <pid>`. Attached with `-p`, every system call of every thread stops in the one strace process (not only the traced ones: `--seccomp-bpf` cannot filter an attached process), so `cairn dev` runs several times slower. Fewer writers then wait at each group commit, the batches shrink and each fsync covers fewer PUTs: this count is higher than the same server's at full speed."
    )?;
    writeln!(
        out,
        "- **perf**: `perf stat -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p <pid>`, the kernel's own tracepoint counters, which do not stop the process: the count at full speed. Measured twice, with `cairn dev`'s default group-commit delay and with `--commit-delay 0s`, which shows what the delay buys."
    )?;
    writeln!(out)?;
    if small.fsync.is_empty() {
        writeln!(out, "No counts.")?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "| counter | commit delay | fsync | fdatasync | acknowledged PUTs | PUT ops/s | errors | calls per PUT | goal | verdict |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|---|")?;
    let goal = format!("≤ {}", trim_float(GOAL_FSYNCS_PER_PUT));
    for run in &small.fsync {
        let head = format!("| {} | {} |", run.counter.name(), run.commit_delay.label());
        let f = match &run.result {
            Err(why) => {
                writeln!(
                    out,
                    "{head} not measured: {} | - | - | - | - | - | {goal} | {} |",
                    cell_text(why.trim_end_matches('.')),
                    Verdict::NotMeasured.label()
                )?;
                continue;
            }
            Ok(f) => f,
        };
        let (per_put, v) = match f.per_put() {
            Some(p) if f.load.error_count() == 0 => (format!("{p:.2}"), verdict(p <= GOAL_FSYNCS_PER_PUT)),
            Some(p) => (format!("{p:.2}"), Verdict::NotMet),
            None => ("-".to_string(), Verdict::NotMeasured),
        };
        writeln!(
            out,
            "{head} {} | {} | {} | {} | {} | {per_put} | {goal} | {} |",
            f.calls.fsync,
            f.calls.fdatasync,
            f.puts(),
            thousands(f.ops_per_s()),
            f.load.error_count(),
            v.label()
        )?;
    }
    writeln!(out)?;
    let counted = |counter: SyncCounter, delay: CommitDelay| {
        let run = small.fsync.iter().find(|r| r.counter == counter && r.commit_delay == delay)?;
        let f = run.result.as_ref().ok()?;
        Some((f.per_put()?, f.ops_per_s()))
    };
    let strace = counted(SyncCounter::Strace, CommitDelay::Default);
    let perf = counted(SyncCounter::Perf, CommitDelay::Default);
    if let (Some((strace_per, strace_ops)), Some((perf_per, perf_ops))) = (strace, perf) {
        if strace_ops > 0.0 {
            writeln!(
                out,
                "Here the load under strace ran at {} ops/s, {:.1}× slower than under perf ({} ops/s), and counted {strace_per:.2} calls per PUT against perf's {perf_per:.2}.",
                thousands(strace_ops),
                perf_ops / strace_ops,
                thousands(perf_ops),
            )?;
            writeln!(out)?;
        }
    }
    let off = counted(SyncCounter::Perf, CommitDelay::Off);
    if let (Some((with_per, with_ops)), Some((off_per, off_ops))) = (perf, off) {
        writeln!(
            out,
            "What the commit delay buys (perf): {with_per:.2} calls per PUT at {} ops/s with the default delay, {off_per:.2} at {} ops/s with `--commit-delay 0s`.",
            thousands(with_ops),
            thousands(off_ops),
        )?;
        writeln!(out)?;
    }
    Ok(())
}

fn write_space(out: &mut String, small: &SmallShardReport) -> std::fmt::Result {
    writeln!(out, "### Disk per 64-byte object (three copies)")?;
    writeln!(out)?;
    writeln!(
        out,
        "`cairn dev` (default engine) filled with distinct 64-byte objects (`cairn-bench load --op fill --count N --size 64 --keep`, 16 clients), then the allocated blocks (st_blocks × 512, as `du --block-size=1` counts) of the six data servers' roots added up and divided by the objects stored. The SQLite metadata (`meta.sqlite*`) is counted apart."
    )?;
    writeln!(out)?;
    match &small.space {
        Err(why) => writeln!(out, "Not measured: {}.", one_line(why.trim_end_matches('.')))?,
        Ok(s) => {
            writeln!(out, "| objects stored (of N) | fill ops/s | data servers' disk | files | per object | metadata DB | goal | verdict |")?;
            writeln!(out, "|---:|---:|---:|---:|---:|---:|---|---|")?;
            let (per, v) = match s.per_object() {
                Some(p) if s.fill.error_count() == 0 => {
                    (format!("{} B", thousands(p)), verdict(p < GOAL_BYTES_PER_SMALL_OBJECT))
                }
                Some(p) => (format!("{} B", thousands(p)), Verdict::NotMet),
                None => ("-".to_string(), Verdict::NotMeasured),
            };
            writeln!(
                out,
                "| {} (of {}) | {} | {} | {} | {per} | {} | < {} | {} |",
                thousands(s.objects() as f64),
                thousands(s.requested as f64),
                thousands(s.fill.ops.first().map_or(0.0, |r| r.ops_per_s)),
                mib(s.data.allocated as f64),
                thousands(s.data.files as f64),
                mib(s.meta.allocated as f64),
                ByteSize(GOAL_BYTES_PER_SMALL_OBJECT as u64),
                v.label()
            )?;
            if s.fill.interrupted || s.fill.error_count() > 0 {
                writeln!(out)?;
                writeln!(
                    out,
                    "The fill stopped early or had {} failed PUTs; the figure is per object stored.",
                    s.fill.error_count()
                )?;
            }
        }
    }
    writeln!(out)?;
    Ok(())
}

fn write_scale(out: &mut String, small: &SmallShardReport) -> std::fmt::Result {
    writeln!(out, "### Memory and restart at scale (multi-process layout)")?;
    writeln!(out)?;
    let s = match &small.scale {
        Err(why) => {
            writeln!(out, "Not measured: {}.", one_line(why.trim_end_matches('.')))?;
            writeln!(out)?;
            return Ok(());
        }
        Ok(s) => s,
    };
    let fill = s.fill.ops.first();
    writeln!(
        out,
        "A fresh multi-process layout filled with {} of {} objects of {} to {} (`cairn-bench load --op fill --count {} --size {} --size-max {} --keep`, {} clients) in {:.0} s ({} objects/s, {} failed PUTs{}). Resident memory (`VmRSS` in `/proc/<pid>/status`) of each data server process before and after the fill, and the shards it holds as its `GET /stats` counts them after the fill (its small-shard engine's `shards`: every shard of this fill is below the {} threshold); the growth per million shards is each server's growth ÷ its own shards. Where `/stats` failed, the row says so and uses the estimate {} copies × objects ÷ 6 data servers = {} instead. With far fewer than a million shards the growth is mostly the allocator's and the runtime's warm-up, not a cost per shard: the per-million figure then overstates it. So the memory and shards of each server are also sampled during the fill, once the servers together hold half its shards (`GET /stats` polled every 2 s), and the *marginal* figure is the growth from that sample to the end ÷ the shards added since: what each further shard costs, without the warm-up. The goal is judged on the marginal figure when every server has one, else on the growth.",
        thousands(fill.map_or(0.0, |r| r.ops as f64)),
        thousands(s.requested as f64),
        ByteSize(s.fill.object_size),
        ByteSize(s.fill.object_size_max),
        s.requested,
        ByteSize(s.fill.object_size).to_string().replace(' ', ""),
        ByteSize(s.fill.object_size_max).to_string().replace(' ', ""),
        s.fill.concurrency,
        s.fill.elapsed_s,
        thousands(fill.map_or(0.0, |r| r.ops_per_s)),
        s.fill.error_count(),
        if s.fill.interrupted { "; cut short by the time limit" } else { "" },
        ByteSize(Engine::Volumes.small_shard_max()),
        crate::plan::Redundancy::DEFAULT.policy_for(s.fill.object_size_max).shards(),
        thousands(s.estimated_shards_per_server),
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| data server | RSS before | RSS at half (shards) | RSS after | growth | shards | growth per million shards | marginal per million shards |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let mut per_million = Vec::new();
    let mut marginal = Vec::new();
    for m in &s.servers {
        let shards = m.shards_or(s.estimated_shards_per_server);
        let per = m.per_million(shards);
        per_million.extend(per);
        let margin = m.marginal_per_million();
        marginal.push(margin);
        let half = m.midpoint.map_or("-".into(), |(rss, n)| format!("{} ({})", mib(rss as f64), thousands(n as f64)));
        let shown = match &m.shards {
            Ok(n) => thousands(*n as f64),
            Err(_) => format!("≈ {} (estimate: `/stats` failed)", thousands(shards)),
        };
        writeln!(
            out,
            "| {} | {} | {half} | {} | {} | {shown} | {} | {} |",
            m.name,
            mib(m.before as f64),
            mib(m.after as f64),
            mib(m.after as f64 - m.before as f64),
            per.map_or("-".into(), mib),
            margin.map_or("-".into(), mib)
        )?;
    }
    writeln!(out)?;
    let average = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let mean = average(&per_million);
    // Only when every server has one.
    let marginal: Option<Vec<f64>> = marginal.into_iter().collect();
    let mean_marginal = marginal.as_deref().and_then(average);
    let judged = mean_marginal.or(mean);
    let v = match judged {
        Some(m) => verdict(m < GOAL_RSS_PER_MILLION_SHARDS),
        None => Verdict::NotMeasured,
    };
    writeln!(
        out,
        "Mean growth per million shards: {}; mean marginal: {}. Goal: < {} ({}): {}.",
        mean.map_or("-".into(), mib),
        mean_marginal.map_or("-".into(), mib),
        mib(GOAL_RSS_PER_MILLION_SHARDS),
        if mean_marginal.is_some() { "judged on the marginal figure" } else { "judged on the growth" },
        v.label()
    )?;
    writeln!(out)?;
    match &s.restart {
        Err(why) => writeln!(out, "Restart: not measured: {}.", one_line(why.trim_end_matches('.')))?,
        Ok(r) => {
            let held = s
                .servers
                .iter()
                .find(|m| m.name == r.server)
                .map_or(s.estimated_shards_per_server, |m| m.shards_or(s.estimated_shards_per_server));
            let scale_note = if held < 1e6 {
                format!(" (this run: {} shards on {}, the goal is for a million)", thousands(held), r.server)
            } else {
                String::new()
            };
            writeln!(
                out,
                "Restart: {} killed with SIGKILL and started again with the same flags answered `GET /objects/{}` (a shard it holds, found with `GET /locate/<name>`) {:.2} s after its spawn. Goal: < {} s at a million shards{scale_note}: {}.",
                r.server,
                r.shard,
                r.seconds,
                trim_float(GOAL_RESTART_SECONDS),
                verdict(r.seconds < GOAL_RESTART_SECONDS).label()
            )?;
        }
    }
    for note in &s.notes {
        writeln!(out)?;
        writeln!(out, "Note: {}", one_line(note))?;
    }
    writeln!(out)?;
    Ok(())
}

/// The space-after-deletes measurement ([`crate::space`]).
fn write_after_deletes(out: &mut String, result: &Result<crate::space::SpaceAfterDeletes, String>) -> std::fmt::Result {
    writeln!(out, "### Space after deletes (storage level)")?;
    writeln!(out)?;
    let r = match result {
        Ok(r) => r,
        Err(why) => return writeln!(out, "Not measured: {}\n", one_line(why)),
    };
    writeln!(
        out,
        "A volume store opened directly (no HTTP): {} shards of {} bytes written by 16 threads, {} deleted \
         (tombstones), then one round of compaction ({:.2} s). Disk counts allocated blocks of the volume files.\n",
        r.shards,
        r.size,
        r.deleted,
        r.compaction.as_secs_f64()
    )?;
    writeln!(
        out,
        "| written | after deletes | after compaction | live payload | overhead | index checkpoint | goal | verdict |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | within 15% of live | {} |\n",
        mib(r.disk_full),
        mib(r.disk_deleted),
        mib(r.disk_compacted),
        mib(r.live_payload),
        percent(r.overhead()),
        mib(r.index_file),
        if r.overhead() <= 0.15 { "met" } else { "**not met**" }
    )
}
