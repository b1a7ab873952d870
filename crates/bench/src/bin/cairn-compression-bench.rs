//! `cairn-compression-bench`: what transparent compression costs and saves (issue
//! 11's measurement, BENCH.md "Compression"). For each payload (a text corpus and
//! random bytes) and each setting (`--compression auto` and `off`, plus the level
//! and frame variants asked for), starts a `cairn dev` cluster in this process (six
//! data servers, 4+2, defaults otherwise), PUTs `--runs` objects of `--size`, GETs
//! each back whole (decoded) and, when stored compressed, as its zstd stream
//! (`Accept-Encoding: zstd`), then times `--ranges` random 4 KiB range reads. Prints
//! one Markdown table row per cell.
//!
//! The text corpus is deterministic and present on any machine that built cairn:
//! the `.rs` and `.md` files of the crates in cairn's Cargo.lock, as unpacked under
//! `~/.cargo/registry/src`, concatenated in sorted path order (repeated when
//! shorter than `--size`). Random data is a seeded PRNG. Each run's object starts
//! with a line naming the run, so no two runs dedup.
//!
//! CPU is the whole process's user+sys time (`/proc/self/stat`) around the PUTs and
//! around the GETs, per GB of original bytes: API server, data servers and the
//! client together, since they share this process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use rand::{RngCore, SeedableRng};

use cairn::dev::{DevCluster, DevConfig};
use cairn::object::compress::{CompressionConfig, CompressionMode};
use cairn::size::ByteSize;

/// Measure compression's ratio, throughput and CPU through `cairn dev`.
#[derive(Parser)]
struct Args {
    /// Size of each object.
    #[arg(long, default_value = "64MiB")]
    size: ByteSize,
    /// Objects PUT and read back per cell.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Random 4 KiB range reads timed per cell.
    #[arg(long, default_value_t = 200)]
    ranges: usize,
    /// zstd levels to measure with compression auto (on text only beyond the first).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    levels: Vec<i32>,
    /// Frame sizes to measure with compression auto (on text only beyond the first).
    #[arg(long, value_delimiter = ',', default_value = "256KiB,1MiB")]
    frames: Vec<ByteSize>,
    /// Where Cargo unpacked the registry's crates [default: ~/.cargo/registry/src].
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Directory for the clusters' files (removed afterwards) [default: the system temp dir].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One measured configuration.
struct Cell {
    payload: &'static str,
    compression: CompressionConfig,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let size = usize::try_from(args.size.0).context("--size")?;
    let text = text_corpus(args.registry.clone(), size)?;
    let mut random = vec![0u8; size];
    rand::rngs::StdRng::seed_from_u64(11).fill_bytes(&mut random);
    let off = CompressionConfig::off();
    let auto = |level: i32, frame: ByteSize| CompressionConfig {
        mode: CompressionMode::Auto,
        level,
        frame: frame.0 as usize,
        ..CompressionConfig::default()
    };
    let (level0, frame0) = (args.levels[0], args.frames[0]);
    let mut cells = vec![
        Cell { payload: "text", compression: off },
        Cell { payload: "text", compression: auto(level0, frame0) },
        Cell { payload: "random", compression: off },
        Cell { payload: "random", compression: auto(level0, frame0) },
    ];
    for level in args.levels.iter().skip(1) {
        cells.push(Cell { payload: "text", compression: auto(*level, frame0) });
    }
    for frame in args.frames.iter().skip(1) {
        cells.push(Cell { payload: "text", compression: auto(level0, *frame) });
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    println!(
        "| payload | compression | level | frame | ratio | PUT MB/s | GET MB/s | GET zstd MB/s | PUT CPU s/GB | GET CPU s/GB | 4 KiB range ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for cell in cells {
        let data = if cell.payload == "text" { &text } else { &random };
        let row = runtime.block_on(measure(&args, &cell, data))?;
        println!("{row}");
    }
    Ok(())
}

/// The text corpus: sources and docs of the crates in Cargo.lock, sorted by path.
fn text_corpus(registry: Option<PathBuf>, size: usize) -> anyhow::Result<Vec<u8>> {
    let registry = match registry {
        Some(r) => r,
        None => PathBuf::from(std::env::var("HOME").context("HOME")?).join(".cargo/registry/src"),
    };
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock"))
        .context("reading Cargo.lock")?;
    let mut locked = BTreeSet::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            locked.insert(format!("{n}-{}", v.trim_matches('"')));
        }
    }
    let mut files = Vec::new();
    for index in std::fs::read_dir(&registry).with_context(|| format!("reading {}", registry.display()))? {
        for krate in std::fs::read_dir(index?.path())? {
            let krate = krate?.path();
            if krate.file_name().and_then(|n| n.to_str()).is_some_and(|n| locked.contains(n)) {
                collect(&krate, &mut files)?;
            }
        }
    }
    files.sort();
    let mut corpus = Vec::new();
    for f in &files {
        corpus.extend_from_slice(&std::fs::read(f)?);
    }
    if corpus.is_empty() {
        bail!("no .rs or .md files of Cargo.lock's crates under {}", registry.display());
    }
    eprintln!("text corpus: {} files, {} bytes", files.len(), corpus.len());
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let take = (size - out.len()).min(corpus.len());
        out.extend_from_slice(&corpus[..take]);
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs" || e == "md") {
            out.push(path);
        }
    }
    Ok(())
}

/// The live data servers the API server's `/healthz` reports.
async fn live(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = http.get(format!("{endpoint}/healthz")).send().await?.json().await?;
    Ok(v["live_data_servers"].as_u64().unwrap_or(0))
}

/// This process's user+sys CPU seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / rustix::param::clock_ticks_per_second() as f64
}

async fn measure(args: &Args, cell: &Cell, data: &[u8]) -> anyhow::Result<String> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("cairn-compression-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut config = DevConfig::new("127.0.0.1:0".parse()?, dir.clone());
    config.data_addrs = (1..=6).map(|i| format!("127.29.1.{i}:0").parse()).collect::<Result<_, _>>()?;
    config.compression = cell.compression;
    let cluster = DevCluster::start(config).await?;
    let endpoint = format!("http://{}", cluster.api_addr);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while live(&http, &endpoint).await.unwrap_or(0) < 6 {
        if Instant::now() > deadline {
            bail!("the dev cluster's data servers did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bodies: Vec<Bytes> = (0..args.runs)
        .map(|i| {
            let mut b = format!("run {i} of {}\n", cell.payload).into_bytes();
            b.extend_from_slice(&data[b.len()..]);
            Bytes::from(b)
        })
        .collect();
    let total = (data.len() * args.runs) as f64;

    let (cpu, started) = (cpu_seconds(), Instant::now());
    for (i, body) in bodies.iter().enumerate() {
        let resp = http.put(format!("{endpoint}/objects/bench-{i}")).body(body.clone()).send().await?;
        if !resp.status().is_success() {
            bail!("PUT: {}", resp.status());
        }
    }
    let put = total / started.elapsed().as_secs_f64() / 1e6;
    let put_cpu = (cpu_seconds() - cpu) / (total / 1e9);

    let (cpu, started) = (cpu_seconds(), Instant::now());
    let mut stored = 0u64;
    for (i, body) in bodies.iter().enumerate() {
        let resp = http.get(format!("{endpoint}/objects/bench-{i}")).send().await?;
        stored += resp.headers()["x-cairn-stored-size"].to_str()?.parse::<u64>()?;
        if resp.bytes().await? != body {
            bail!("GET bench-{i}: other bytes");
        }
    }
    let get = total / started.elapsed().as_secs_f64() / 1e6;
    let get_cpu = (cpu_seconds() - cpu) / (total / 1e9);
    let ratio = total / stored as f64;

    let zstd = if stored < total as u64 {
        let started = Instant::now();
        for i in 0..bodies.len() {
            let resp =
                http.get(format!("{endpoint}/objects/bench-{i}")).header("accept-encoding", "zstd").send().await?;
            if resp.headers().get("content-encoding").is_none() {
                bail!("GET bench-{i} with zstd: not encoded");
            }
            resp.bytes().await?;
        }
        format!("{:.0}", total / started.elapsed().as_secs_f64() / 1e6)
    } else {
        "-".to_string()
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let started = Instant::now();
    for _ in 0..args.ranges {
        let start = rng.next_u64() % (data.len() as u64 - 4096);
        let resp = http
            .get(format!("{endpoint}/objects/bench-0"))
            .header("range", format!("bytes={start}-{}", start + 4095))
            .send()
            .await?;
        let got = resp.bytes().await?;
        if got[..] != bodies[0][start as usize..start as usize + 4096] {
            bail!("range at {start}: other bytes");
        }
    }
    let range_ms = started.elapsed().as_secs_f64() * 1e3 / args.ranges.max(1) as f64;

    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let c = cell.compression;
    let mode = if c.mode == CompressionMode::Off { "off" } else { "auto" };
    let (level, frame) = if c.mode == CompressionMode::Off {
        ("-".into(), "-".into())
    } else {
        (c.level.to_string(), ByteSize(c.frame as u64).to_string())
    };
    Ok(format!(
        "| {} | {mode} | {level} | {frame} | {ratio:.2} | {put:.0} | {get:.0} | {zstd} | {put_cpu:.2} | {get_cpu:.2} | {range_ms:.2} |",
        cell.payload
    ))
}
