//! The `cairn-bench-suite` binary: parses [`SuiteArgs`], runs the suite until it ends
//! or Ctrl-C/SIGTERM, writes the report and prints its summary.

use anyhow::{bail, Context};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use cairn_bench::args::{cairn_binary, SuiteArgs};
use cairn_bench::{markdown, suite};

fn main() -> anyhow::Result<()> {
    let args = SuiteArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,amqprs=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cairn_exe = cairn_binary(args.cairn.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cairn::shutdown::cancel_on_signal(shutdown.clone()));
        let config = args.config(cairn_exe, std::env::temp_dir());
        let report = suite::run_suite(&config, shutdown).await?;
        std::fs::write(&args.out, markdown::render(&report))
            .with_context(|| format!("writing {}", args.out.display()))?;
        println!("{}", markdown::render_summary(&report));
        println!("cairn-bench-suite: wrote {}", args.out.display());
        if let Some(why) = report.crash.failure() {
            bail!("{why} (see {})", args.out.display());
        }
        match report.failed_cells() {
            0 => Ok(()),
            n => bail!("{n} cells failed or had failed requests (see {})", args.out.display()),
        }
    })
}
