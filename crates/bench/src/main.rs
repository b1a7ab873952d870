//! The `cairn-bench` binary: cairn's measurement machinery on the command line,
//! parsing and dispatch only. `cairn-bench load` loads one API server with the load
//! generator ([`cairn_bench::load`]) and prints its report; `cairn-bench suite` runs
//! the standard matrix ([`cairn_bench::suite`]) until it ends or Ctrl-C/SIGTERM,
//! writes the report and prints its summary.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use cairn_bench::args::{cairn_binary, SuiteArgs};
use cairn_bench::load::BenchArgs;
use cairn_bench::{markdown, suite};

/// cairn's load generator and benchmark suite.
#[derive(Parser)]
#[command(name = "cairn-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load an API server with PUTs and/or GETs for a while and report throughput and
    /// latency (like MinIO's warp); deletes what it wrote unless --keep.
    Load(BenchArgs),
    /// Run the standard matrix of load runs against clusters started here, measure
    /// the machine's ceilings, make the crash run and write the report (BENCH.md).
    Suite(SuiteArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The suite's in-process clusters log their S3 operations as `cairn dev` would;
    // the load generator alone has none of its own to show.
    let default_filter = match cli.command {
        Command::Load(_) => "info,amqprs=warn,s3s::ops=off",
        Command::Suite(_) => "info,amqprs=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cairn::shutdown::cancel_on_signal(shutdown.clone()));
        match cli.command {
            Command::Load(args) => load(&args, shutdown).await,
            Command::Suite(args) => run_suite(&args, shutdown).await,
        }
    })
}

/// One load run: its report as a table or, with `--json`, as one JSON object; an
/// error when a request failed.
async fn load(args: &BenchArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let report = cairn_bench::load::run_until(args, shutdown).await?;
    println!("{}", if args.json { serde_json::to_string(&report)? } else { report.render_table() });
    Ok(report.check()?)
}

/// The suite: the report written to `--out`, its summary printed; an error when the
/// crash run or a cell failed.
async fn run_suite(args: &SuiteArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cairn_exe = cairn_binary(args.cairn.as_deref())?;
    let config = args.config(cairn_exe, std::env::temp_dir());
    let report = suite::run_suite(&config, shutdown).await?;
    std::fs::write(&args.out, markdown::render(&report)).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", markdown::render_summary(&report));
    println!("cairn-bench suite: wrote {}", args.out.display());
    if let Some(why) = report.crash.failure() {
        bail!("{why} (see {})", args.out.display());
    }
    match report.failed_cells() {
        0 => Ok(()),
        n => bail!("{n} cells failed or had failed requests (see {})", args.out.display()),
    }
}
