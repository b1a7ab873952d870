//! `cairn-bench suite`: the standard matrix of runs against clusters the suite
//! starts itself, beside the machine's ceilings, as one [`SuiteReport`] that
//! [`crate::markdown`] renders.
//!
//! In order: describe the machine, measure the ceilings ([`crate::ceilings`]) in a
//! fresh work directory, then for each layout (`layout.rs`: `cairn dev` in this
//! process; the multi-process layout when RabbitMQ answers and a `cairn` binary is
//! given) start it, make one [`run`](crate::load::run_until) per [`Cell`], stop it and
//! delete its files. A cell that fails is recorded and the next one runs; a layout
//! that does not start is recorded and the next one starts. Then issue 9's
//! small-shard measurements ([`crate::small_shards`]), each in a cluster of its own.
//! Only an interruption (Ctrl-C) or a failed ceiling measurement ends the suite
//! without a report.
//!
//! Other clusters' data servers heartbeating on the same RabbitMQ (the exchanges
//! have fixed names) are counted live by our API servers and may be given shards;
//! before each cell the suite waits a little for such strangers to expire, and
//! the report names the cells that still saw them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ceilings::{self, CeilingSizes, Ceilings};
use crate::crash::{self, CrashOutcome};
use crate::layout;
use crate::load::{run_until, BenchReport, Op};
use crate::machine::{self, CpuSnapshot, Machine};
use crate::plan::{remove_dir, Cell, Redundancy, Spawn, SuiteError};
use crate::small_shards::{self, SmallShardConfig, SmallShardReport};

/// The RabbitMQ the multi-process layout uses unless told otherwise.
pub const DEFAULT_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672";
/// The first port tried for the multi-process layout: away from `cairn dev`'s 12345.
pub const DEFAULT_BASE_PORT: u16 = 12400;
/// Longest wait before a cell for its API server to count exactly six live data
/// servers: a stopped data server is forgotten after 10 s of silence.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The standard matrix: GET and PUT of 4 KiB at 1 and 16 clients, PUT of 4 KiB at
/// 64 and of 64 KiB and 256 KiB at 16 (issue 9's small shards), GET and PUT of 1 MiB
/// at 4, of 64 MiB and 1 GiB at 1 (no 1 GiB cells when `quick`), and GETs of missing
/// names at 1.
pub fn standard_cells(quick: bool) -> Vec<Cell> {
    let mut cells = vec![
        Cell::new(Op::Get, 4 * KIB, 1),
        Cell::new(Op::Get, 4 * KIB, 16),
        Cell::new(Op::Put, 4 * KIB, 1),
        Cell::new(Op::Put, 4 * KIB, 16),
        Cell::new(Op::Put, 4 * KIB, 64),
        Cell::new(Op::Put, 64 * KIB, 16),
        Cell::new(Op::Put, 256 * KIB, 16),
        Cell::new(Op::GetMissing, 0, 1),
        Cell::new(Op::Get, MIB, 4),
        Cell::new(Op::Put, MIB, 4),
        Cell::new(Op::Get, 64 * MIB, 1),
        Cell::new(Op::Put, 64 * MIB, 1),
    ];
    if !quick {
        cells.extend([Cell::new(Op::Get, GIB, 1), Cell::new(Op::Put, GIB, 1)]);
    }
    cells
}

/// What the suite does.
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteConfig {
    /// `--quick`.
    pub quick: bool,
    /// The runs, in order, for each layout.
    pub cells: Vec<Cell>,
    /// How long each cell's load phase lasts.
    pub cell_duration: Duration,
    /// How much the ceiling measurements move.
    pub ceiling_sizes: CeilingSizes,
    /// Where the suite makes its work directory (on the file system measured).
    pub work_dir: PathBuf,
    /// The `cairn` binary for the multi-process layout; `None` skips that layout.
    pub cairn_exe: Option<PathBuf>,
    /// RabbitMQ for the multi-process layout.
    pub broker_url: String,
    /// First port tried for the multi-process layout.
    pub base_port: u16,
    /// How long the crash run's load lasts ([`crate::crash`]); zero skips it.
    pub crash_duration: Duration,
    /// The command that regenerates the report, for the report.
    pub command: String,
    /// Issue 9's small-shard measurements; `None` skips them.
    pub small_shards: Option<SmallShardConfig>,
}

impl SuiteConfig {
    /// The standard suite (`quick`: ~1 s cells, smaller ceilings, no 1 GiB cells),
    /// working under `work_dir`, without the multi-process layout until
    /// `cairn_exe` is set.
    pub fn standard(quick: bool, work_dir: PathBuf) -> SuiteConfig {
        SuiteConfig {
            quick,
            cells: standard_cells(quick),
            cell_duration: Duration::from_secs(if quick { 1 } else { 5 }),
            ceiling_sizes: CeilingSizes::standard(quick),
            work_dir,
            cairn_exe: None,
            broker_url: DEFAULT_BROKER.to_string(),
            base_port: DEFAULT_BASE_PORT,
            crash_duration: default_crash_duration(quick),
            command: format!(
                "cargo build --release && target/release/cairn-bench suite --out BENCH.md{}",
                if quick { " --quick" } else { "" }
            ),
            small_shards: Some(SmallShardConfig::standard(quick)),
        }
    }

    /// Where the suite's child processes come from, for the parts that start them.
    pub fn spawn(&self) -> Spawn<'_> {
        Spawn { cairn_exe: self.cairn_exe.as_deref(), broker_url: &self.broker_url, base_port: self.base_port }
    }
}

/// The crash run's load phase unless `--crash-seconds` says otherwise.
pub fn default_crash_duration(quick: bool) -> Duration {
    Duration::from_secs(if quick { 20 } else { 120 })
}

/// Which cluster a layout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `cairn dev` in the suite's process.
    Dev,
    /// Six `cairn data` and two `cairn api` processes on RabbitMQ.
    MultiProcess,
}

impl Layout {
    /// Its short name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Dev => "dev",
            Layout::MultiProcess => "multi-process",
        }
    }
}

/// What happened to one layout.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutReport {
    /// Which.
    pub layout: Layout,
    /// How it was laid out, for people.
    pub description: String,
    /// Its cells, or why it has none.
    pub outcome: LayoutOutcome,
    /// Things worth knowing about the run (a server that exited, extra data servers).
    pub notes: Vec<String>,
}

/// Whether a layout ran.
#[derive(Clone, Debug, PartialEq)]
pub enum LayoutOutcome {
    /// It started; every cell's result, in order.
    Ran(Vec<CellResult>),
    /// It was not tried, for this reason.
    Skipped(String),
    /// It did not start, for this reason.
    Failed(String),
}

/// One cell's run.
#[derive(Clone, Debug, PartialEq)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// What it measured, or why it could not.
    pub result: Result<BenchReport, String>,
}

impl CellResult {
    /// Failed requests of the run (cleanup included); `None` when it did not run.
    pub fn errors(&self) -> Option<u64> {
        self.result.as_ref().ok().map(BenchReport::error_count)
    }
}

/// Everything the suite measured.
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteReport {
    /// Where it ran.
    pub machine: Machine,
    /// The command that regenerates it.
    pub command: String,
    /// Whether it was `--quick`.
    pub quick: bool,
    /// Each cell's load phase.
    pub cell_duration: Duration,
    /// How objects were stored.
    pub redundancy: Redundancy,
    /// The machine's ceilings.
    pub ceilings: Ceilings,
    /// Each layout, `dev` first.
    pub layouts: Vec<LayoutReport>,
    /// The crash run on the multi-process layout.
    pub crash: CrashOutcome,
    /// Issue 9's small-shard measurements; `None` when not run.
    pub small_shards: Option<SmallShardReport>,
    /// How long the whole suite took.
    pub elapsed: Duration,
}

impl SuiteReport {
    /// Cells that did not run or had failed requests.
    pub fn failed_cells(&self) -> usize {
        self.layouts
            .iter()
            .filter_map(|l| match &l.outcome {
                LayoutOutcome::Ran(cells) => Some(cells),
                _ => None,
            })
            .flatten()
            .filter(|c| c.errors() != Some(0))
            .count()
    }

    /// Every cell of every layout that ran, with its layout.
    pub fn cells(&self) -> impl Iterator<Item = (Layout, &CellResult)> {
        self.layouts.iter().flat_map(|l| {
            let cells: &[CellResult] = match &l.outcome {
                LayoutOutcome::Ran(cells) => cells,
                _ => &[],
            };
            cells.iter().map(move |c| (l.layout, c))
        })
    }
}

/// A directory of the suite's own, removed (with everything in it) when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(parent: &Path) -> Result<WorkDir, SuiteError> {
        let path = parent.join(format!("cairn-bench-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&path).map_err(|source| SuiteError::WorkDir { path: path.clone(), source })?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the suite as `config` says. Prints nothing (progress goes to `tracing`).
/// `stop` (Ctrl-C) ends it early with [`SuiteError::Interrupted`], after stopping
/// whatever it started.
pub async fn run_suite(config: &SuiteConfig, stop: CancellationToken) -> Result<SuiteReport, SuiteError> {
    let started = Instant::now();
    let cpu_before = CpuSnapshot::now();
    let work = WorkDir::create(&config.work_dir)?;
    let mut machine = Machine::describe(&work.0);

    tracing::info!(dir = %work.0.display(), "suite: measuring the machine's ceilings");
    let ceilings = tokio::select! {
        measured = ceilings::measure(&work.0, &config.ceiling_sizes) => measured?,
        _ = stop.cancelled() => return Err(SuiteError::Interrupted),
    };

    let mut layouts = Vec::new();
    if config.cells.is_empty() {
        for layout in [Layout::Dev, Layout::MultiProcess] {
            layouts.push(LayoutReport {
                layout,
                description: String::new(),
                outcome: LayoutOutcome::Skipped("no cells in this run (--skip-matrix)".into()),
                notes: Vec::new(),
            });
        }
    } else {
        layouts.push(run_dev(config, &work.0.join("dev"), &stop).await?);
        layouts.push(run_processes(config, &work.0.join("multi-process"), &stop).await?);
    }
    let small_shards = match &config.small_shards {
        Some(small) => Some(small_shards::run(config.spawn(), small, &work.0.join("small-shards"), &stop).await?),
        None => None,
    };
    let crash = crash::run_in_suite(
        config.cairn_exe.as_deref(),
        &work.0,
        &config.broker_url,
        config.base_port,
        config.crash_duration,
        &stop,
    )
    .await
    .map_err(|_| SuiteError::Interrupted)?;

    machine.load_after = machine::load_average();
    machine.cpu = cpu_before.zip(CpuSnapshot::now()).map(|(before, after)| before.until(&after));
    Ok(SuiteReport {
        machine,
        command: config.command.clone(),
        quick: config.quick,
        cell_duration: config.cell_duration,
        redundancy: Redundancy::DEFAULT,
        ceilings,
        layouts,
        crash,
        small_shards,
        elapsed: started.elapsed(),
    })
}

/// The `cairn dev` layout: start, run every cell, stop, delete its files.
async fn run_dev(config: &SuiteConfig, root: &Path, stop: &CancellationToken) -> Result<LayoutReport, SuiteError> {
    tracing::info!("suite: starting cairn dev in this process");
    let started = layout::start_dev(root).await;
    let mut report = LayoutReport {
        layout: Layout::Dev,
        description: String::new(),
        outcome: LayoutOutcome::Skipped(String::new()),
        notes: Vec::new(),
    };
    match started {
        Err(e) => report.outcome = LayoutOutcome::Failed(e.to_string()),
        Ok(dev) => {
            report.description = dev.description;
            let cells =
                run_cells(Layout::Dev, config, std::slice::from_ref(&dev.endpoint), stop, &mut report.notes).await;
            dev.cluster.shutdown().await;
            report.outcome = LayoutOutcome::Ran(cells?);
        }
    }
    remove_dir(root.to_path_buf()).await;
    Ok(report)
}

/// The multi-process layout, when a binary is given and RabbitMQ answers: start,
/// run every cell, kill the processes, delete their files.
async fn run_processes(
    config: &SuiteConfig,
    root: &Path,
    stop: &CancellationToken,
) -> Result<LayoutReport, SuiteError> {
    let mut report = LayoutReport {
        layout: Layout::MultiProcess,
        description: "six `cairn data` and two `cairn api` processes on RabbitMQ".to_string(),
        outcome: LayoutOutcome::Skipped(String::new()),
        notes: Vec::new(),
    };
    let Some(exe) = &config.cairn_exe else {
        report.outcome = LayoutOutcome::Skipped("no `cairn` binary to start (library call)".into());
        return Ok(report);
    };
    if let Err(why) = layout::broker_answers(&config.broker_url).await {
        tracing::warn!("suite: skipping the multi-process layout: {why}");
        report.outcome = LayoutOutcome::Skipped(why);
        return Ok(report);
    }
    tracing::info!(exe = %exe.display(), "suite: starting the multi-process layout");
    let started = tokio::select! {
        started = layout::start_processes(exe, root, &config.broker_url, config.base_port) => started,
        // Dropping the start kills whatever it had spawned.
        _ = stop.cancelled() => {
            remove_dir(root.to_path_buf()).await;
            return Err(SuiteError::Interrupted);
        }
    };
    match started {
        Err(e) => report.outcome = LayoutOutcome::Failed(e.to_string()),
        Ok(mut running) => {
            report.description = running.description.clone();
            let cells = run_cells(Layout::MultiProcess, config, &running.endpoints, stop, &mut report.notes).await;
            if let Some((name, status, log_tail)) = running.processes.exited() {
                report.notes.push(format!("{name} exited during the run ({status}); its last log lines:\n{log_tail}"));
            }
            // Kills and reaps every process before their files go.
            drop(running);
            report.outcome = LayoutOutcome::Ran(cells?);
        }
    }
    remove_dir(root.to_path_buf()).await;
    Ok(report)
}

/// Runs every cell in order, cell `i` against `endpoints[i % len]`. Before each,
/// waits (up to [`SETTLE_TIMEOUT`]) until its API server counts exactly six live
/// data servers; a cell that starts or ends with another count gets a note.
async fn run_cells(
    layout: Layout,
    config: &SuiteConfig,
    endpoints: &[String],
    stop: &CancellationToken,
    notes: &mut Vec<String>,
) -> Result<Vec<CellResult>, SuiteError> {
    let want = u64::from(layout::DATA_SERVERS);
    let mut odd = Vec::new();
    let mut results = Vec::new();
    for (i, cell) in config.cells.iter().enumerate() {
        let endpoint = &endpoints[i % endpoints.len()];
        tracing::info!(
            layout = layout.name(),
            op = ?cell.op,
            size = %cell.size,
            clients = cell.clients,
            %endpoint,
            "suite: cell {} of {}",
            i + 1,
            config.cells.len()
        );
        let before = tokio::select! {
            live = layout::settle(endpoint, want, SETTLE_TIMEOUT) => live,
            _ = stop.cancelled() => return Err(SuiteError::Interrupted),
        };
        let result = run_until(&cell.bench_args(endpoint, config.cell_duration), stop.clone()).await;
        if stop.is_cancelled() {
            return Err(SuiteError::Interrupted);
        }
        let after = layout::live_count(endpoint).await;
        if before != Some(want) || after != Some(want) {
            let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
            odd.push(format!("{} ({} before, {} after)", cell_label(cell), count(before), count(after)));
        }
        if let Err(e) = &result {
            tracing::warn!(layout = layout.name(), error = %e, "suite: cell failed");
        }
        results.push(CellResult { cell: *cell, result: result.map_err(|e| e.to_string()) });
    }
    if !odd.is_empty() {
        notes.push(format!(
            "cells whose API server counted another number of live data servers than {want} (data servers of another \
             cluster heartbeating on the same broker: they may be given shards of this run, and fail it when they \
             stop): {}",
            odd.join("; ")
        ));
    }
    Ok(results)
}

/// `PUT 4 KiB × 16`, `GET missing × 1`.
pub fn cell_label(cell: &Cell) -> String {
    match cell.op {
        Op::GetMissing => format!("GET missing × {}", cell.clients),
        op => format!("{} {} × {}", format!("{op:?}").to_uppercase(), cell.size, cell.clients),
    }
}
