//! `cairn-s3-bench`: what the S3 front door costs beside the native API (issue 12's
//! measurement, BENCH.md "S3 beside the native API (issue 12)"). Spawns the release
//! `cairn dev --auth` binary (beside this one, or `--cairn PATH`) as a child process
//! on `--port`, reads the access key it prints, waits for its six data servers, then
//! runs `cairn-bench load` through the library for each cell (GET and PUT of 4 KiB × 16
//! clients and of 64 MiB × 1 client), alternating native and S3 (SigV4-signed with
//! that key) run by run for `--rounds` rounds, so that whatever else the machine does
//! falls on both sides alike. Writes a Markdown section with every run, the means and
//! the ratio S3 ÷ native into `--out` (replacing a section with the same heading, or
//! appended), and prints it.
//!
//! Unlike the compression and re-protection benches, the cluster is its own process:
//! the load generator then competes with the servers for CPU only as any client on
//! the same machine would, not for the same async runtime.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use cairn::size::ByteSize;
use cairn_bench::args::cairn_binary;
use cairn_bench::load::{Api, BenchArgs, BenchReport, Op};
use cairn_bench::machine::{CpuSnapshot, Machine};
use cairn_bench::markdown::{percent, rate};

/// The heading of the section this tool writes.
const HEADING: &str = "## S3 beside the native API (issue 12)";

/// Longest wait for `cairn dev` to print its key, and then for its data servers.
const STARTUP: Duration = Duration::from_secs(30);

/// Compare the S3 front door with the native API on one `cairn dev --auth` cluster.
#[derive(Parser)]
struct Args {
    /// Where the section goes (replacing one with the same heading, else appended).
    #[arg(long, default_value = "BENCH.md")]
    out: PathBuf,
    /// Rounds of each cell; each round runs native, then S3.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Length of each run's timed phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Port of the `cairn dev` API server (a developer's own usually has 12345).
    #[arg(long, default_value_t = 12470)]
    port: u16,
    /// The `cairn` binary to spawn [default: `cairn` beside this binary, as `cargo build` puts it].
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Directory for the cluster's files (removed afterwards) [default: the system temp dir].
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Args {
    /// The shell command that regenerates the section with these flags.
    fn command_line(&self) -> String {
        let mut line = format!("cargo build --release && target/release/cairn-s3-bench --out {}", self.out.display());
        if self.rounds != 2 {
            line.push_str(&format!(" --rounds {}", self.rounds));
        }
        if self.duration != Duration::from_secs(10) {
            line.push_str(&format!(" --duration {}", humantime::format_duration(self.duration)));
        }
        if self.port != 12470 {
            line.push_str(&format!(" --port {}", self.port));
        }
        if let Some(cairn) = &self.cairn {
            line.push_str(&format!(" --cairn {}", cairn.display()));
        }
        if let Some(dir) = &self.dir {
            line.push_str(&format!(" --dir {}", dir.display()));
        }
        line
    }
}

/// One measured workload: an operation, an object size and a number of clients.
struct Cell {
    op: Op,
    size: ByteSize,
    concurrency: u32,
}

impl Cell {
    /// `GET 4 KiB × 16 clients`.
    fn label(&self) -> String {
        let op = if self.op == Op::Get { "GET" } else { "PUT" };
        let clients = if self.concurrency == 1 { "client" } else { "clients" };
        format!("{op} {} × {} {clients}", self.size, self.concurrency)
    }
}

/// The figures of one run that the section shows.
#[derive(Clone, Copy, Default)]
struct Figures {
    ops_per_s: f64,
    mb_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Figures {
    /// The figures of `report`'s timed phase; its errors include the cleanup's.
    fn of(report: &BenchReport) -> Figures {
        let ms = |us: u32| f64::from(us) / 1000.0;
        let latency = report.total.latency_us;
        Figures {
            ops_per_s: report.total.ops_per_s,
            mb_per_s: report.total.mb_per_s,
            p50_ms: latency.map_or(f64::NAN, |l| ms(l.p50_us)),
            p99_ms: latency.map_or(f64::NAN, |l| ms(l.p99_us)),
            errors: report.error_count(),
        }
    }

    /// The mean of each figure over `runs`; errors are summed.
    fn mean(runs: &[Figures]) -> Figures {
        let n = runs.len().max(1) as f64;
        let avg = |f: fn(&Figures) -> f64| runs.iter().map(f).sum::<f64>() / n;
        Figures {
            ops_per_s: avg(|r| r.ops_per_s),
            mb_per_s: avg(|r| r.mb_per_s),
            p50_ms: avg(|r| r.p50_ms),
            p99_ms: avg(|r| r.p99_ms),
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }

    /// One table row, `label` first.
    fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {} | {} | {:.3} | {:.3} | {} |",
            rate(self.ops_per_s),
            rate(self.mb_per_s),
            self.p50_ms,
            self.p99_ms,
            self.errors
        )
    }
}

/// Every run of one cell, in the order they ran.
struct CellResult {
    label: String,
    native: Vec<Figures>,
    s3: Vec<Figures>,
}

/// The `cairn dev --auth` child and the key it printed; killed when dropped.
struct DevProcess {
    child: Child,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cairn_exe = cairn_binary(args.cairn.as_deref())?;
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("cairn-s3-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(cairn::shutdown::cancel_on_signal(stop.clone()));
        run(&args, &cairn_exe, &dir, stop).await
    });
    // The child is dead (killed and reaped) by now, on success and on error.
    let _ = std::fs::remove_dir_all(&dir);
    let (section, errors) = outcome?;
    print!("{section}");
    let old = match std::fs::read_to_string(&args.out) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.out.display())),
    };
    std::fs::write(&args.out, replace_section(&old, HEADING, &section))
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("cairn-s3-bench: wrote {HEADING:?} into {}", args.out.display());
    if errors > 0 {
        bail!("{errors} requests failed (see {})", args.out.display());
    }
    Ok(())
}

/// Starts the cluster, runs every cell and renders the section; also returns the
/// failed requests of all runs together.
async fn run(args: &Args, cairn_exe: &Path, dir: &Path, stop: CancellationToken) -> anyhow::Result<(String, u64)> {
    let mut machine = Machine::describe(dir);
    let cpu_before = CpuSnapshot::now();
    let started = Instant::now();
    let mut dev = DevProcess::start(cairn_exe, args.port, dir).await?;
    // Stopped on error too: a child killed only on drop is not reaped before its files are removed.
    let measured = measure(args, &dev, stop).await;
    dev.stop().await;
    let results = measured?;
    // After the child is reaped, so that its CPU time counts as ours.
    machine.cpu = cpu_before.zip(CpuSnapshot::now()).map(|(before, after)| before.until(&after));
    machine.load_after = cairn_bench::machine::load_average();
    let errors: u64 = results.iter().flat_map(|r| r.native.iter().chain(&r.s3)).map(|f| f.errors).sum();
    Ok((render(args, &machine, started.elapsed(), &results), errors))
}

/// Every cell, native and S3 alternating, `--rounds` times.
async fn measure(args: &Args, dev: &DevProcess, stop: CancellationToken) -> anyhow::Result<Vec<CellResult>> {
    let cells = [
        Cell { op: Op::Get, size: ByteSize(4 << 10), concurrency: 16 },
        Cell { op: Op::Put, size: ByteSize(4 << 10), concurrency: 16 },
        Cell { op: Op::Get, size: ByteSize(64 << 20), concurrency: 1 },
        Cell { op: Op::Put, size: ByteSize(64 << 20), concurrency: 1 },
    ];
    let mut results = Vec::new();
    for cell in &cells {
        let mut result = CellResult { label: cell.label(), native: Vec::new(), s3: Vec::new() };
        for round in 1..=args.rounds {
            for api in [Api::Native, Api::S3] {
                let mut bench = BenchArgs::new(dev.endpoint.clone());
                bench.op = cell.op;
                bench.size = cell.size;
                bench.concurrency = cell.concurrency;
                bench.duration = args.duration;
                bench.api = api;
                bench.access_key = Some(dev.access_key.clone());
                bench.secret_key = Some(dev.secret_key.clone());
                let report = cairn_bench::load::run_until(&bench, stop.clone())
                    .await
                    .with_context(|| format!("{}, {api:?}, round {round}", result.label))?;
                if report.interrupted {
                    bail!("interrupted");
                }
                let figures = Figures::of(&report);
                eprintln!(
                    "{}, {api:?}, round {round}: {} ops/s, {} MB/s, p50 {:.3} ms, p99 {:.3} ms, {} errors {:?}",
                    result.label,
                    rate(figures.ops_per_s),
                    rate(figures.mb_per_s),
                    figures.p50_ms,
                    figures.p99_ms,
                    figures.errors,
                    report.total.first_errors,
                );
                match api {
                    Api::Native => result.native.push(figures),
                    Api::S3 => result.s3.push(figures),
                }
            }
        }
        results.push(result);
    }
    Ok(results)
}

impl DevProcess {
    /// Spawns `cairn dev --auth` on `port` with its files under `dir` (stderr to
    /// `dir/cairn-dev.log`), reads the key it prints and waits until `/healthz`
    /// reports six live data servers.
    async fn start(exe: &Path, port: u16, dir: &Path) -> anyhow::Result<DevProcess> {
        let log_path = dir.join("cairn-dev.log");
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(exe)
            .args(["dev", "--auth", "--listen", &listen, "--root"])
            .arg(dir.join("cluster"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("cairn dev's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut access_key, mut secret_key) = (None, None);
        let read_key = async {
            while access_key.is_none() || secret_key.is_none() {
                let Some(line) = lines.next_line().await? else {
                    bail!("cairn dev exited before printing its key (see {})", log_path.display());
                };
                if let Some(v) = line.strip_prefix("cairn dev: access key") {
                    access_key = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("cairn dev: secret key") {
                    secret_key = Some(v.trim().to_string());
                }
            }
            Ok(())
        };
        tokio::time::timeout(STARTUP, read_key).await.context("cairn dev printed no key in time")??;
        // Nothing else of note goes to stdout; drain it so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let dev = DevProcess {
            child,
            endpoint: format!("http://{listen}"),
            access_key: access_key.unwrap_or_default(),
            secret_key: secret_key.unwrap_or_default(),
        };
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + STARTUP;
        while live(&http, &dev.endpoint).await.unwrap_or(0) < 6 {
            if Instant::now() > deadline {
                bail!("cairn dev's six data servers did not come up (see {})", log_path.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(dev)
    }

    /// Kills the child and waits (boundedly) for it to be reaped.
    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The live data servers the API server's `/healthz` reports.
async fn live(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = http.get(format!("{endpoint}/healthz")).send().await?.json().await?;
    Ok(v["live_data_servers"].as_u64().unwrap_or(0))
}

/// The Markdown section: machine, command, a summary, then every run of each cell.
fn render(args: &Args, machine: &Machine, took: Duration, results: &[CellResult]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_section(&mut out, args, machine, took, results);
    out
}

/// Writes [`render`]'s section into `out`.
fn write_section(
    out: &mut String,
    args: &Args,
    machine: &Machine,
    took: Duration,
    results: &[CellResult],
) -> std::fmt::Result {
    writeln!(out, "{HEADING}")?;
    writeln!(out)?;
    writeln!(
        out,
        "Written by `cairn-s3-bench` on {}; took {}. To regenerate:",
        machine.date,
        humantime::format_duration(Duration::from_secs(took.as_secs()))
    )?;
    writeln!(out)?;
    writeln!(out, "```sh\n{}\n```", args.command_line())?;
    writeln!(out)?;
    let mut facts =
        vec![format!("{}, {} logical cores", machine.cpu_model.as_deref().unwrap_or("unknown CPU"), machine.cores)];
    if let Some(bytes) = machine.memory_bytes {
        facts.push(format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30)));
    }
    if let Some(kernel) = &machine.kernel {
        facts.push(format!("kernel {kernel}"));
    }
    if let Some(fs) = &machine.filesystem {
        facts.push(format!("{} on {}", fs.fstype, fs.device));
    }
    write!(out, "Machine: {}", facts.join(", "))?;
    if let (Some(before), Some(after)) = (&machine.load_before, &machine.load_after) {
        write!(out, "; load average {before} before, {after} after")?;
    }
    if let Some(cpu) = machine.cpu {
        write!(
            out,
            "; CPU time: {} used by this tool and its cluster, {} by other processes (of all cores' time)",
            percent(cpu.our_share()),
            percent(cpu.others_share())
        )?;
    }
    writeln!(out, ".")?;
    writeln!(out)?;
    writeln!(
        out,
        "One `cairn dev --auth` cluster (a child process: six data servers, 4+2, defaults otherwise) \
         serves every run. Each run is `cairn-bench load` (the library, in this tool's process) for {} \
         of load; native and S3 alternate run by run, {} rounds per cell. Native requests carry the \
         key as a bearer token; S3 requests (path-style, bucket `bench`) are SigV4-signed presigned \
         URLs. p50/p99: latency in ms. Errors: failed requests, cleanup included.",
        humantime::format_duration(args.duration),
        args.rounds
    )?;
    writeln!(out)?;
    writeln!(out, "| cell | native ops/s | S3 ops/s | S3 ÷ native ops/s | S3 ÷ native p50 | errors |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for r in results {
        let (native, s3) = (Figures::mean(&r.native), Figures::mean(&r.s3));
        writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2} | {} |",
            r.label,
            rate(native.ops_per_s),
            rate(s3.ops_per_s),
            s3.ops_per_s / native.ops_per_s,
            s3.p50_ms / native.p50_ms,
            native.errors + s3.errors
        )?;
    }
    for r in results {
        writeln!(out)?;
        writeln!(out, "### {}", r.label)?;
        writeln!(out)?;
        writeln!(out, "| run | ops/s | MB/s | p50 ms | p99 ms | errors |")?;
        writeln!(out, "|---|---|---|---|---|---|")?;
        for (i, (native, s3)) in r.native.iter().zip(&r.s3).enumerate() {
            writeln!(out, "{}", native.row(&format!("native, round {}", i + 1)))?;
            writeln!(out, "{}", s3.row(&format!("S3, round {}", i + 1)))?;
        }
        let (native, s3) = (Figures::mean(&r.native), Figures::mean(&r.s3));
        writeln!(out, "{}", native.row("native, mean"))?;
        writeln!(out, "{}", s3.row("S3, mean"))?;
        writeln!(
            out,
            "| **S3 ÷ native** | {:.2} | {:.2} | {:.2} | {:.2} | |",
            s3.ops_per_s / native.ops_per_s,
            s3.mb_per_s / native.mb_per_s,
            s3.p50_ms / native.p50_ms,
            s3.p99_ms / native.p99_ms
        )?;
    }
    Ok(())
}

/// `doc` with the section headed `heading` (from that line to the next `## ` heading
/// or the end) replaced by `section`, or with `section` appended when there is none.
fn replace_section(doc: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end();
    let lines: Vec<&str> = doc.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == heading) else {
        let doc = doc.trim_end();
        return if doc.is_empty() { format!("{section}\n") } else { format!("{doc}\n\n{section}\n") };
    };
    let end = lines[start + 1..].iter().position(|l| l.starts_with("## ")).map_or(lines.len(), |i| start + 1 + i);
    let mut out = lines[..start].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(section);
    out.push('\n');
    if end < lines.len() {
        out.push('\n');
        out.push_str(&lines[end..].join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn a_section_is_replaced_up_to_the_next_heading_or_appended() {
        let doc = "# t\n\n## A\n\nold\n\n## B\n\nb\n";
        assert_eq!(replace_section(doc, "## A", "## A\n\nnew\n"), "# t\n\n## A\n\nnew\n\n## B\n\nb\n");
        assert_eq!(replace_section(doc, "## B", "## B\n\nnew\n"), "# t\n\n## A\n\nold\n\n## B\n\nnew\n");
        assert_eq!(replace_section(doc, "## C", "## C\n\nc\n"), format!("{doc}\n## C\n\nc\n"));
        assert_eq!(replace_section("", "## C", "## C\n"), "## C\n");
    }
}
