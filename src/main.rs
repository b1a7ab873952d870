//! The `cairn` binary: command-line parsing and dispatch, nothing else. Every flag
//! can also come from the environment variable named in its help (the seed's
//! `LISTEN_ADDRESS`, `STORAGE_ROOT` and `RABBITMQ_SERVER` among them); config is read
//! and validated here once, and the library never reads the environment itself.
//!
//! The flags and the runners live in the binary's `cli` module (`src/cli/`).

mod cli;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use cli::run::{run_api, run_client, run_data, run_dev};
use cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Client(command) = cli.command {
        std::process::exit(run_client(command));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,amqprs=warn,s3s::ops=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let shutdown = CancellationToken::new();
    let signals = TaskTracker::new();
    let result = runtime.block_on(async {
        let shutdown = shutdown.clone();
        signals.spawn(cairn::shutdown::cancel_on_signal(shutdown.clone()));
        signals.close();
        match cli.command {
            Command::Data(args) => run_data(args, shutdown).await,
            Command::Api(args) => run_api(args, shutdown).await,
            Command::Dev(args) => run_dev(args, shutdown).await,
            Command::Admin(args) => Ok(cairn::admin::run(args).await?),
            Command::Client(_) => unreachable!("client commands return above"),
        }
    });
    // The command is over, by a signal or on its own: the signal task has nothing
    // left to cancel.
    shutdown.cancel();
    runtime.block_on(signals.wait());
    result
}
