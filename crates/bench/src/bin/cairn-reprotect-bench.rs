//! `cairn-reprotect-bench`: how long re-protection takes after a data server is
//! gone for good (issue 10's measurement). Starts a `cairn dev` cluster in this
//! process (six data servers, 4+2), fills it with `--gib` GiB of `--object-size`
//! objects through `cairn-bench load --op fill`, stops data server 1 as if its machine
//! died, and times the API server's healer from the moment the server is declared
//! silent (`--reprotect-after`, 1 s here) until no placement names it, with the
//! rebuild rate unlimited (`--rate 0`) or as given. Prints one line of figures.
//! No client reads anything meanwhile.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use cairn::dev::{DevCluster, DevConfig};
use cairn::size::ByteSize;
use cairn_bench::load::{BenchArgs, Op};

/// Measure re-protection after losing one data server of `cairn dev`.
#[derive(Parser)]
struct Args {
    /// GiB of objects to store before the loss.
    #[arg(long, default_value_t = 10)]
    gib: u64,
    /// Size of each object.
    #[arg(long, default_value = "64MiB")]
    object_size: ByteSize,
    /// Re-protection's rebuild rate in bytes/s (0: unlimited).
    #[arg(long, default_value = "0")]
    rate: ByteSize,
    /// Directory for the cluster's files (removed afterwards) [default: the system temp dir].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("cairn-reprotect-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut config = DevConfig::new("127.0.0.1:0".parse()?, dir.clone());
    config.data_addrs = (1..=6).map(|i| format!("127.29.1.{i}:0").parse()).collect::<Result<_, _>>()?;
    config.heartbeat_interval = Duration::from_millis(500);
    config.heartbeat_expiry = Duration::from_secs(2);
    config.maintenance.reprotect_after = Duration::from_secs(1);
    config.maintenance.reprotect_rate = args.rate.0;
    let cluster = DevCluster::start(config).await?;
    let endpoint = format!("http://{}", cluster.api_addr);
    let http = reqwest::Client::builder().no_proxy().build()?;
    while live(&http, &endpoint).await? < 6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let count = (args.gib << 30).div_ceil(args.object_size.0.max(1));
    let mut fill = BenchArgs::new(endpoint.clone());
    fill.op = Op::Fill;
    fill.size = args.object_size;
    fill.count = Some(count);
    fill.concurrency = 4;
    fill.keep = true;
    fill.timeout = Duration::from_secs(600);
    let started = Instant::now();
    let report = cairn_bench::load::run_until(&fill, CancellationToken::new()).await?;
    report.check()?;
    let filled = started.elapsed();
    eprintln!("filled {count} objects ({} GiB) in {:.1} s", args.gib, filled.as_secs_f64());

    let gone = cluster.data_addrs[0].to_string();
    cluster.stop_data_server(0);
    let lost_at = Instant::now();
    let mut declared = None;
    loop {
        let status: serde_json::Value = http.get(format!("{endpoint}/admin/status")).send().await?.json().await?;
        let heal = status["workers"]
            .as_array()
            .and_then(|w| w.iter().find(|w| w["name"] == "heal"))
            .cloned()
            .unwrap_or_default();
        if declared.is_none() && heal["info"]["reprotecting"].as_str() == Some(gone.as_str()) {
            declared = Some(Instant::now());
        }
        if heal["info"]["counts"]["servers_reprotected"].as_u64().unwrap_or(0) >= 1 {
            let done = Instant::now();
            let from = declared.unwrap_or(lost_at);
            let secs = done.duration_since(from).as_secs_f64();
            let counts = &heal["info"]["counts"];
            println!(
                "re-protected {} contents ({} GiB of objects) after losing {gone}: {:.1} s from the start of \
                 re-protection ({:.1} s from the loss), {:.0} MiB/s of objects; failed {}, rate limit {}",
                counts["reprotected"],
                args.gib,
                secs,
                done.duration_since(lost_at).as_secs_f64(),
                (args.gib << 10) as f64 / secs,
                counts["reprotect_failed"],
                if args.rate.0 == 0 { "none".to_string() } else { format!("{} B/s", args.rate.0) },
            );
            break;
        }
        if lost_at.elapsed() > Duration::from_secs(3600) {
            bail!("re-protection did not finish within an hour: {heal}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn live(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = http.get(format!("{endpoint}/healthz")).send().await?.json().await?;
    Ok(v["live_data_servers"].as_u64().unwrap_or(0))
}
