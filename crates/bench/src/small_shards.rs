//! Issue 9's measurements of small-shard storage, run after the matrix of
//! [`crate::suite`], each in a cluster of its own that is stopped and deleted
//! afterwards, and reported by [`crate::markdown`]:
//!
//! 1. **Files versus volumes** ([`EngineRun`]): `PUT 4 KiB × 16`, `PUT 64 KiB × 16`
//!    and `PUT 256 KiB × 16` on `cairn dev` with every shard a file
//!    (`small_shard_max` 0) and with the small-shard engine (its default
//!    threshold), alternating per size (files, volumes, volumes, files in the full
//!    suite) so that a drift of the shared disk's speed hits both alike.
//! 2. **fsync calls per acknowledged PUT** ([`FsyncRun`]): a fresh `cairn dev` child
//!    process (spawned from the `cairn` binary) per count, loaded with `PUT 4 KiB ×
//!    16` while a counter is attached to it: `strace -f -c -e trace=fsync,fdatasync
//!    -p <pid>` (issue 9's count), and `perf stat -e` of the `sys_enter_fsync` and
//!    `sys_enter_fdatasync` tracepoints with `cairn dev`'s default commit delay and
//!    with `--commit-delay 0s`. Each is stopped with SIGINT so that it writes its
//!    counts. strace stops every traced call in its one process, which slows `cairn
//!    dev` several times over and so shrinks its commit batches; perf counts in
//!    the kernel at full speed.
//! 3. **Disk per 64-byte object** ([`SpaceUse`]): `cairn dev` filled with N
//!    64-byte objects, then the allocated blocks of the data servers' roots (like
//!    `du`), with the metadata database counted apart.
//! 4. **Scale** ([`ScaleReport`]): the multi-process layout filled with N objects
//!    of 1–8 KiB; each data server process's resident memory before and after,
//!    divided by the shards its `GET /stats` counts after the fill (an estimate
//!    from the object count where that fails), then one data server killed with SIGKILL, started again with the same flags,
//!    and the time until it serves a shard it holds.
//!
//! A measurement that cannot be made (no `strace`, ptrace refused, no RabbitMQ, not
//! enough disk) is reported with the reason instead of a number; the others still
//! run. Every fill is bounded in time ([`SmallShardConfig::fill_timeout`]); a fill
//! cut short reports per object it did store.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load::{self, run_until, BenchArgs, BenchReport, Op};
use cairn::data::volume::DEFAULT_COMMIT_DELAY;
use cairn::dev::DEFAULT_SMALL_SHARD_MAX;
use cairn::size::ByteSize;

use crate::layout::{self, ProcessLayout, Processes};
use crate::plan::{remove_dir, Cell, Redundancy, Spawn, SuiteError};
use crate::probes::{self, DiskUse, SyncCalls};

const KIB: u64 = 1 << 10;
const GIB: u64 = 1 << 30;

/// Issue 9's goal: one fsync (or fdatasync) covers at least one acknowledged PUT.
pub const GOAL_FSYNCS_PER_PUT: f64 = 1.0;
/// Issue 9's goal for `PUT 4 KiB × 16` with the small-shard engine, in ops/s.
pub const GOAL_SMALL_PUT_OPS: f64 = 6000.0;
/// Issue 9's goal for disk per 64-byte object at three copies, in bytes.
pub const GOAL_BYTES_PER_SMALL_OBJECT: f64 = 1024.0;
/// Issue 9's goal for data server memory per million small shards, in bytes.
pub const GOAL_RSS_PER_MILLION_SHARDS: f64 = 64.0 * (1 << 20) as f64;
/// Issue 9's goal for a restarted data server to serve (at a million shards), in seconds.
pub const GOAL_RESTART_SECONDS: f64 = 5.0;
/// The size of the space measurement's objects.
pub const SPACE_OBJECT_SIZE: u64 = 64;
/// Disk the scale fill leaves free at least, beyond its estimated need.
pub const DISK_RESERVE: u64 = 5 * GIB;
/// The load of the fsync count and of the files-versus-volumes runs.
pub const SMALL_PUT: Cell = Cell::new(Op::Put, 4 * KIB, 16);
/// The object sizes of the files-versus-volumes runs: 4 KiB (issue 9's ops/s
/// goal) and two larger ones whose shards are still records at the default
/// threshold (256 KiB is that threshold; below 1 MiB an object is three copies).
pub const ENGINE_SIZES: [u64; 3] = [4 * KIB, 64 * KIB, 256 * KIB];
/// Issue 9's goal for `PUT 64 KiB × 16` and `PUT 256 KiB × 16`: the small-shard
/// engine at least this many times the files' PUT rate.
pub const GOAL_VOLUMES_OVER_FILES: f64 = 2.0;

/// The load of a files-versus-volumes run of objects of `size`: 16 clients.
pub const fn engine_cell(size: u64) -> Cell {
    Cell::new(Op::Put, size, SMALL_PUT.clients)
}

/// How a data server keeps small shards, as `cairn dev --small-shard-max` chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Every shard a file of its own (`--small-shard-max 0`), as before issue 9.
    Files,
    /// Shards up to the default threshold in the small-shard engine's volumes.
    Volumes,
}

impl Engine {
    /// The `small_shard_max` that selects it.
    pub fn small_shard_max(self) -> u64 {
        match self {
            Engine::Files => 0,
            Engine::Volumes => DEFAULT_SMALL_SHARD_MAX,
        }
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Files => "files",
            Engine::Volumes => "volumes",
        }
    }
}

/// What counts a `cairn dev` child's fsync and fdatasync calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncCounter {
    /// `strace -f -c -e trace=fsync,fdatasync -p <pid>`, issue 9's count. With `-p`
    /// every system call of every thread stops in the one strace process (not even
    /// `--seccomp-bpf` filters an attached process), so `cairn dev` runs several
    /// times slower while counted.
    Strace,
    /// `perf stat -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p
    /// <pid>`: the kernel's tracepoint counters, which leave the process at full
    /// speed.
    Perf,
}

impl SyncCounter {
    /// Its program, and its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            SyncCounter::Strace => "strace",
            SyncCounter::Perf => "perf",
        }
    }

    /// Where to install it from, for the report when it is missing.
    fn install_hint(self) -> &'static str {
        match self {
            SyncCounter::Strace => "`apt-get install -y strace`",
            SyncCounter::Perf => "`apt-get install -y linux-perf` on Debian, `linux-tools-$(uname -r)` on Ubuntu",
        }
    }
}

/// The group-commit delay of the `cairn dev` whose fsync calls are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitDelay {
    /// No `--commit-delay`: `cairn dev`'s default ([`DEFAULT_COMMIT_DELAY`] per
    /// waiting writer).
    Default,
    /// `--commit-delay 0s`: each batch written at once, without waiting for more.
    Off,
}

impl CommitDelay {
    /// The flags it adds to `cairn dev`.
    pub fn dev_args(self) -> Vec<String> {
        match self {
            CommitDelay::Default => Vec::new(),
            CommitDelay::Off => vec!["--commit-delay".into(), "0s".into()],
        }
    }

    /// As the report shows it.
    pub fn label(self) -> String {
        match self {
            CommitDelay::Default => format!("default ({})", humantime::format_duration(DEFAULT_COMMIT_DELAY)),
            CommitDelay::Off => "`--commit-delay 0s`".to_string(),
        }
    }
}

/// What the small-shard measurements do.
#[derive(Clone, Debug, PartialEq)]
pub struct SmallShardConfig {
    /// The engines of the files-versus-volumes runs of each size, in order.
    pub engine_runs: Vec<Engine>,
    /// The object sizes of those runs ([`ENGINE_SIZES`]); each size runs every
    /// engine of `engine_runs` before the next size starts.
    pub engine_sizes: Vec<u64>,
    /// How long each of those runs' load lasts.
    pub engine_run_duration: Duration,
    /// The fsync counts, in order: each a fresh `cairn dev` under its counter.
    pub fsync_runs: Vec<(SyncCounter, CommitDelay)>,
    /// How long the load of each fsync count lasts.
    pub fsync_duration: Duration,
    /// 64-byte objects filled for the space measurement; 0 skips it.
    pub space_objects: u64,
    /// Objects filled for the scale measurement; 0 skips it.
    pub scale_objects: u64,
    /// Smallest and largest size of the scale fill's objects.
    pub scale_sizes: (u64, u64),
    /// Clients of every fill.
    pub fill_clients: u32,
    /// Longest a fill may take; one cut there reports per object it stored.
    pub fill_timeout: Duration,
    /// Longest wait for a restarted data server to serve.
    pub restart_timeout: Duration,
}

impl SmallShardConfig {
    /// The suite's: 88,000 objects for the space and a million for the scale, or
    /// 2,000 and 20,000 when `quick`.
    pub fn standard(quick: bool) -> SmallShardConfig {
        let seconds = |s| Duration::from_secs(s);
        SmallShardConfig {
            engine_runs: if quick {
                vec![Engine::Files, Engine::Volumes]
            } else {
                vec![Engine::Files, Engine::Volumes, Engine::Volumes, Engine::Files]
            },
            engine_sizes: ENGINE_SIZES.to_vec(),
            engine_run_duration: seconds(if quick { 2 } else { 5 }),
            fsync_runs: vec![
                (SyncCounter::Strace, CommitDelay::Default),
                (SyncCounter::Perf, CommitDelay::Default),
                (SyncCounter::Perf, CommitDelay::Off),
            ],
            fsync_duration: seconds(if quick { 2 } else { 5 }),
            space_objects: if quick { 2_000 } else { 88_000 },
            scale_objects: if quick { 20_000 } else { 1_000_000 },
            scale_sizes: (KIB, 8 * KIB),
            fill_clients: 16,
            fill_timeout: seconds(if quick { 300 } else { 3600 }),
            restart_timeout: seconds(120),
        }
    }
}

/// Everything the small-shard measurements found; each part is its figures or
/// why there are none.
#[derive(Clone, Debug, PartialEq)]
pub struct SmallShardReport {
    /// The files-versus-volumes runs, in order.
    pub engine_runs: Vec<EngineRun>,
    /// fsync calls per acknowledged PUT, one count per [`SmallShardConfig::fsync_runs`].
    pub fsync: Vec<FsyncRun>,
    /// Disk per small object.
    pub space: Result<SpaceUse, String>,
    /// Memory and restart at scale.
    pub scale: Result<ScaleReport, String>,
    /// Space after deleting 90% at the storage level and compacting.
    pub after_deletes: Result<crate::space::SpaceAfterDeletes, String>,
}

/// One `PUT <size> × 16` run with one engine.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineRun {
    /// Which.
    pub engine: Engine,
    /// The objects' size in bytes.
    pub size: u64,
    /// What it measured, or why it could not.
    pub result: Result<BenchReport, String>,
}

/// The PUT rate of `engine` with objects of `size` over all its runs that went:
/// acknowledged PUTs over their time together; `None` without one.
pub fn engine_ops_per_s(runs: &[EngineRun], engine: Engine, size: u64) -> Option<f64> {
    let (ops, seconds) = runs
        .iter()
        .filter(|r| r.engine == engine && r.size == size)
        .filter_map(|r| r.result.as_ref().ok())
        .filter_map(|r| Some((r.ops.first()?.ops, r.elapsed_s)))
        .fold((0u64, 0f64), |(o, s), (ops, secs)| (o + ops, s + secs));
    (seconds > 0.0).then(|| ops as f64 / seconds)
}

/// One count of fsync calls: which counter, on which `cairn dev`, and what it
/// found or why it could not.
#[derive(Clone, Debug, PartialEq)]
pub struct FsyncRun {
    /// What counted.
    pub counter: SyncCounter,
    /// The `cairn dev`'s group-commit delay.
    pub commit_delay: CommitDelay,
    /// The count, or why there is none.
    pub result: Result<FsyncCount, String>,
}

/// fsync calls counted during a load of small PUTs.
#[derive(Clone, Debug, PartialEq)]
pub struct FsyncCount {
    /// What the counter counted, from attaching to its SIGINT.
    pub calls: SyncCalls,
    /// The load while it counted.
    pub load: BenchReport,
}

impl FsyncCount {
    /// Acknowledged PUTs of the load.
    pub fn puts(&self) -> u64 {
        self.load.ops.first().map_or(0, |r| r.ops)
    }

    /// The load's PUT rate, in ops/s.
    pub fn ops_per_s(&self) -> f64 {
        self.load.ops.first().map_or(0.0, |r| r.ops_per_s)
    }

    /// Calls per acknowledged PUT; `None` without one.
    pub fn per_put(&self) -> Option<f64> {
        let puts = self.puts();
        (puts > 0).then(|| self.calls.total() as f64 / puts as f64)
    }
}

/// Disk taken by a fill of small objects.
#[derive(Clone, Debug, PartialEq)]
pub struct SpaceUse {
    /// Objects asked for.
    pub requested: u64,
    /// The fill (its PUTs are the objects stored).
    pub fill: BenchReport,
    /// The data servers' roots together.
    pub data: DiskUse,
    /// The metadata database (`meta.sqlite` and its journal files).
    pub meta: DiskUse,
}

impl SpaceUse {
    /// Objects stored.
    pub fn objects(&self) -> u64 {
        self.fill.ops.first().map_or(0, |r| r.ops)
    }

    /// Allocated data-server bytes per object stored; `None` without one.
    pub fn per_object(&self) -> Option<f64> {
        let n = self.objects();
        (n > 0).then(|| self.data.allocated as f64 / n as f64)
    }
}

/// Data servers' memory after a large fill, and a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleReport {
    /// Objects asked for.
    pub requested: u64,
    /// The fill (its PUTs are the objects stored).
    pub fill: BenchReport,
    /// Each data server process's resident memory and shards.
    pub servers: Vec<ServerMemory>,
    /// Shards each data server holds, estimated as shards per object × objects ÷
    /// data servers: used only for a server whose `GET /stats` failed.
    pub estimated_shards_per_server: f64,
    /// The restart of one data server.
    pub restart: Result<Restart, String>,
    /// Things worth knowing about the run.
    pub notes: Vec<String>,
}

/// One data server process's resident memory (`VmRSS`), in bytes, and the shards
/// it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerMemory {
    /// Its name (`data-N`).
    pub name: String,
    /// Before the fill.
    pub before: u64,
    /// After it.
    pub after: u64,
    /// The shards its `GET /stats` counted after the fill, or why there is no count.
    pub shards: Result<u64, String>,
    /// Its resident memory and shards when the data servers together first held
    /// half the fill's shards (sampled during the fill), when that sample was taken.
    pub midpoint: Option<(u64, u64)>,
}

impl ServerMemory {
    /// The shards it holds: its own count, else `estimate`.
    pub fn shards_or(&self, estimate: f64) -> f64 {
        self.shards.as_ref().map_or(estimate, |&n| n as f64)
    }

    /// Growth per million shards held, in bytes; `None` when it holds none.
    pub fn per_million(&self, shards: f64) -> Option<f64> {
        (shards > 0.0).then(|| (self.after as f64 - self.before as f64) / (shards / 1e6))
    }

    /// Growth per million shards from the midpoint sample to the end, in bytes:
    /// the cost of each further shard, without the warm-up (allocator arenas,
    /// connections, buffers) the first shards pay. `None` without a midpoint or a
    /// count, or when no shard came after the midpoint.
    pub fn marginal_per_million(&self) -> Option<f64> {
        let (rss, shards) = self.midpoint?;
        let end = *self.shards.as_ref().ok()?;
        (end > shards).then(|| (self.after as f64 - rss as f64) / ((end - shards) as f64 / 1e6))
    }
}

/// A data server killed and started again.
#[derive(Clone, Debug, PartialEq)]
pub struct Restart {
    /// Which (`data-N`).
    pub server: String,
    /// The shard asked for, `<hash>.<index>`.
    pub shard: String,
    /// From spawning the new process to the first complete answer, in seconds.
    pub seconds: f64,
}

/// Runs the measurements `small` describes under `dir`, in the order of their
/// value: engines, fsync count, space, scale. Only an interruption ends them early.
pub(crate) async fn run(
    spawn: Spawn<'_>,
    small: &SmallShardConfig,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<SmallShardReport, SuiteError> {
    let interrupted = || if stop.is_cancelled() { Err(SuiteError::Interrupted) } else { Ok(()) };
    tracing::info!("suite: files versus volumes");
    let engine_runs = engine_runs(small, &dir.join("engines"), stop).await;
    interrupted()?;

    let mut fsync = Vec::new();
    for (i, &(counter, commit_delay)) in small.fsync_runs.iter().enumerate() {
        tracing::info!(counter = counter.name(), ?commit_delay, "suite: fsync calls per PUT");
        let root = dir.join(format!("fsync-{}-{}", i + 1, counter.name()));
        let result = fsync_count(spawn, counter, commit_delay, small.fsync_duration, &root, stop).await;
        remove_dir(root).await;
        fsync.push(FsyncRun { counter, commit_delay, result });
        interrupted()?;
    }

    let space = if small.space_objects == 0 {
        Err("not in this run (0 objects)".to_string())
    } else {
        tracing::info!(objects = small.space_objects, "suite: disk per 64-byte object");
        let root = dir.join("space");
        let space = space_use(small, &root, stop).await;
        remove_dir(root).await;
        space
    };
    interrupted()?;

    let scale = if small.scale_objects == 0 {
        Err("not in this run (0 objects)".to_string())
    } else {
        tracing::info!(objects = small.scale_objects, "suite: memory and restart at scale");
        let root = dir.join("scale");
        let scale = scale(spawn, small, &root, stop).await;
        remove_dir(root).await;
        scale
    };
    interrupted()?;

    let after_deletes = if small.space_objects == 0 {
        Err("not in this run (0 objects)".to_string())
    } else {
        // 100,000 shards of 4 KiB in the full suite; the space fill's count with --quick.
        let shards = small.space_objects.min(100_000);
        tracing::info!(shards, "suite: space after deletes, storage level");
        let dir = dir.join("after-deletes");
        tokio::task::spawn_blocking(move || crate::space::space_after_deletes(&dir, shards, 4096))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    interrupted()?;
    Ok(SmallShardReport { engine_runs, fsync, space, scale, after_deletes })
}

/// `PUT <size> × 16` on a fresh `cairn dev` per engine in `small.engine_runs`, for
/// each size in `small.engine_sizes`.
async fn engine_runs(small: &SmallShardConfig, dir: &Path, stop: &CancellationToken) -> Vec<EngineRun> {
    let mut runs = Vec::new();
    let plan = small.engine_sizes.iter().flat_map(|&size| small.engine_runs.iter().map(move |&engine| (size, engine)));
    for (i, (size, engine)) in plan.enumerate() {
        let root = dir.join(format!("{}-{}-{}", i + 1, size, engine.name()));
        let result = match layout::start_dev_with(&root, |c| c.small_shard_max = engine.small_shard_max()).await {
            Err(e) => Err(e.to_string()),
            Ok(dev) => {
                let args = engine_cell(size).bench_args(&dev.endpoint, small.engine_run_duration);
                let result = run_until(&args, stop.clone()).await.map_err(|e| e.to_string());
                dev.cluster.shutdown().await;
                result
            }
        };
        remove_dir(root).await;
        runs.push(EngineRun { engine, size, result });
        if stop.is_cancelled() {
            break;
        }
    }
    runs
}

/// A fill of `count` objects of `sizes` into `endpoint`, kept, cut at `timeout`.
async fn bounded_fill(
    endpoint: &str,
    count: u64,
    (min, max): (u64, u64),
    small: &SmallShardConfig,
    stop: &CancellationToken,
) -> Result<BenchReport, String> {
    let mut args = BenchArgs::new(endpoint);
    args.op = Op::Fill;
    args.count = Some(count);
    args.size = ByteSize(min);
    args.size_max = (max > min).then_some(ByteSize(max));
    args.concurrency = small.fill_clients;
    args.keep = true;
    let cut = stop.child_token();
    let timer = {
        let cut = cut.clone();
        let timeout = small.fill_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            cut.cancel();
        })
    };
    let filled = run_until(&args, cut).await;
    timer.abort();
    filled.map_err(|e| format!("the fill failed: {e}"))
}

/// One fsync count: a fresh `cairn dev` child with `commit_delay`, `counter`
/// attached to it while it is loaded with small PUTs.
async fn fsync_count(
    spawn: Spawn<'_>,
    counter: SyncCounter,
    commit_delay: CommitDelay,
    duration: Duration,
    root: &Path,
    stop: &CancellationToken,
) -> Result<FsyncCount, String> {
    let Some(exe) = spawn.cairn_exe else {
        return Err("no `cairn` binary to run `cairn dev` from (library call)".into());
    };
    let name = counter.name();
    let version_flag = match counter {
        SyncCounter::Strace => "-V",
        SyncCounter::Perf => "--version",
    };
    match std::process::Command::new(name).arg(version_flag).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{name} is not installed ({}): nothing counted", counter.install_hint()))
        }
        Err(e) => return Err(format!("cannot run {name}: {e}")),
        // Ubuntu's `perf` is a wrapper that fails when no perf matches the kernel.
        Ok(out) if !out.status.success() => {
            let said = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr });
            return Err(format!("{name} {version_flag} failed ({}): {}", out.status, one_line(&said)));
        }
        Ok(_) => {}
    }
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    // `cairn dev` puts its data servers on 127.29.1.1-6 with the API server's port.
    let ips: Vec<IpAddr> = std::iter::once(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .chain((1..=layout::DATA_SERVERS).map(|n| IpAddr::V4(Ipv4Addr::new(127, 29, 1, n))))
        .collect();
    let port = layout::free_port(&ips, spawn.base_port).map_err(|e| e.to_string())?;
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let endpoint = format!("http://{listen}");
    // Both killed (cairn dev, then the counter) when dropped, whatever happens below.
    let mut processes = Processes::new();
    let dev_args: Vec<String> =
        ["dev".to_string(), "--listen".into(), listen.to_string(), "--root".into(), path_arg(&root.join("dev"))]
            .into_iter()
            .chain(commit_delay.dev_args())
            .collect();
    processes.spawn(exe, root, "cairn-dev".into(), &dev_args).map_err(|e| e.to_string())?;
    layout::wait_live(&endpoint, u64::from(layout::DATA_SERVERS), || processes.check_running())
        .await
        .map_err(|e| e.to_string())?;
    let pid = processes.pid("cairn-dev").ok_or("cairn dev has no process id")?;

    let output = root.join(format!("{name}-counts.txt"));
    let counter_args = counter_args(counter, &output, pid);
    processes.spawn(Path::new(name), root, name.into(), &counter_args).map_err(|e| e.to_string())?;
    // Attaching to every thread takes a moment; strace exits at once when ptrace is
    // refused, perf when the tracepoints cannot be opened.
    if let Some(status) = processes.wait_exit(name, Duration::from_secs(1)).await {
        return Err(format!(
            "{name} could not attach to cairn dev ({status}): {}",
            one_line(&processes.log_tail(name))
        ));
    }
    let mut args = SMALL_PUT.bench_args(&endpoint, duration);
    // No DELETEs in the count; the directory goes afterwards anyway.
    args.keep = true;
    let load = run_until(&args, stop.clone()).await.map_err(|e| format!("the load failed: {e}"))?;
    // SIGINT makes strace detach and write its summary, perf stop and print its counts.
    let counter_pid = processes.pid(name).ok_or_else(|| format!("{name} has no process id"))?;
    let signalled = std::process::Command::new("kill").args(["-INT", &counter_pid.to_string()]).status();
    if !signalled.as_ref().is_ok_and(|s| s.success()) {
        return Err(format!("cannot send SIGINT to {name} ({signalled:?})"));
    }
    if processes.wait_exit(name, Duration::from_secs(30)).await.is_none() {
        return Err(format!("{name} did not stop within 30 s of SIGINT"));
    }
    let text = std::fs::read_to_string(&output).map_err(|e| format!("{}: {e}", output.display()))?;
    let calls = match counter {
        SyncCounter::Strace => probes::parse_strace_summary(&text).map_err(|e| e.to_string()),
        SyncCounter::Perf => probes::parse_perf_stat(&text).map_err(|e| e.to_string()),
    };
    let calls = calls.map_err(|e| match one_line(&processes.log_tail(name)) {
        log if log.is_empty() => e,
        log => format!("{e}; {name} said: {log}"),
    })?;
    Ok(FsyncCount { calls, load })
}

/// The command line of `counter` attached to process `pid`, writing its counts to
/// `output` when it gets SIGINT.
pub fn counter_args(counter: SyncCounter, output: &Path, pid: u32) -> Vec<String> {
    let flags: &[&str] = match counter {
        SyncCounter::Strace => &["-f", "-c", "-e", "trace=fsync,fdatasync"],
        // --no-big-num: plain digits whatever the locale's grouping.
        SyncCounter::Perf => &["stat", "--no-big-num", "-e", "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"],
    };
    flags.iter().map(|f| f.to_string()).chain(["-o".into(), path_arg(output), "-p".into(), pid.to_string()]).collect()
}

/// The space measurement: `cairn dev` filled with 64-byte objects, then its disk.
async fn space_use(small: &SmallShardConfig, root: &Path, stop: &CancellationToken) -> Result<SpaceUse, String> {
    let dev = layout::start_dev(root).await.map_err(|e| e.to_string())?;
    let sizes = (SPACE_OBJECT_SIZE, SPACE_OBJECT_SIZE);
    let filled = bounded_fill(&dev.endpoint, small.space_objects, sizes, small, stop).await;
    let counted = match filled {
        Err(e) => Err(e),
        Ok(fill) => {
            let data_roots = dev.cluster.data_roots.clone();
            let meta_dir = root.to_path_buf();
            let counted = tokio::task::spawn_blocking(move || count_space(&data_roots, &meta_dir))
                .await
                .map_err(|e| format!("counting the disk use failed: {e}"))
                .and_then(|r| r.map_err(|e| format!("counting the disk use: {e}")));
            counted.map(|(data, meta)| SpaceUse { requested: small.space_objects, fill, data, meta })
        }
    };
    dev.cluster.shutdown().await;
    counted
}

/// The disk use of the data servers' roots together, and of the metadata files
/// (`meta.sqlite*`) in `meta_dir`.
fn count_space(data_roots: &[PathBuf], meta_dir: &Path) -> std::io::Result<(DiskUse, DiskUse)> {
    let mut data = DiskUse::default();
    for root in data_roots {
        data = data.plus(probes::disk_use(root, &|_| false)?);
    }
    let mut meta = DiskUse::default();
    for entry in std::fs::read_dir(meta_dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("meta.sqlite") {
            meta = meta.plus(probes::disk_use(&entry.path(), &|_| false)?);
        }
    }
    Ok((data, meta))
}

/// Disk a fill of `count` objects of `sizes` may take at `shards` copies: each
/// shard of the mean size rounded up to 4 KiB blocks, plus 1 KiB of overhead
/// (inode, directory entry, record header), as files take it.
pub fn fill_disk_estimate(count: u64, (min, max): (u64, u64), shards: usize) -> u64 {
    let mean = (min + max) / 2;
    let per_shard = mean.div_ceil(4 * KIB) * 4 * KIB + KIB;
    count.saturating_mul(per_shard).saturating_mul(shards as u64)
}

/// The scale measurement on a fresh multi-process layout.
async fn scale(
    spawn: Spawn<'_>,
    small: &SmallShardConfig,
    root: &Path,
    stop: &CancellationToken,
) -> Result<ScaleReport, String> {
    let Some(exe) = spawn.cairn_exe else {
        return Err("no `cairn` binary to start the multi-process layout from (library call)".into());
    };
    layout::broker_answers(spawn.broker_url).await?;
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let policy = Redundancy::DEFAULT.policy_for(small.scale_sizes.1);
    let need = fill_disk_estimate(small.scale_objects, small.scale_sizes, policy.shards());
    let free = probes::free_bytes(root).map_err(|e| format!("free space of {}: {e}", root.display()))?;
    if free < need.saturating_add(DISK_RESERVE) {
        return Err(format!(
            "not run: the fill may take about {} of disk and {} are free (the suite leaves {} free); fewer \
             objects with --scale-objects",
            gib(need),
            gib(free),
            gib(DISK_RESERVE)
        ));
    }
    let mut running = layout::start_processes(exe, root, spawn.broker_url, spawn.base_port)
        .await
        .map_err(|e| format!("the multi-process layout did not start: {e}"))?;
    let endpoint = running.endpoints[0].clone();
    let mut notes = Vec::new();
    let before = resident_memory(&running)?;
    let client = local_client()?;
    let (sampler, sampling) = {
        let servers = running
            .data_servers
            .iter()
            .map(|(name, addr)| {
                Ok((running.processes.pid(name).ok_or_else(|| format!("{name} has no process"))?, *addr))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let half = policy.shards() as u64 * small.scale_objects / 2;
        let done = stop.child_token();
        (tokio::spawn(sample_at(client.clone(), servers, half, done.clone())), done)
    };
    let fill = bounded_fill(&endpoint, small.scale_objects, small.scale_sizes, small, stop).await;
    sampling.cancel();
    let midpoints = sampler.await.ok().flatten();
    let fill = fill?;
    let after = resident_memory(&running)?;
    if midpoints.is_none() {
        notes.push("no midpoint sample was taken (the fill ended first or `/stats` failed): no marginal figure".into());
    }
    let objects = fill.ops.first().map_or(0, |r| r.ops);
    let estimated_shards_per_server = (policy.shards() as u64 * objects) as f64 / f64::from(layout::DATA_SERVERS);
    let mut servers: Vec<ServerMemory> = Vec::new();
    for (i, ((name, addr), (before, after))) in
        running.data_servers.iter().zip(before.into_iter().zip(after)).enumerate()
    {
        let shards = stats_shards(&client, *addr).await;
        if let Err(e) = &shards {
            notes.push(format!(
                "{name}'s `GET /stats` failed ({e}): its memory per million shards uses the estimate of {} shards",
                estimated_shards_per_server.round()
            ));
        }
        let midpoint = midpoints.as_ref().and_then(|m| m.get(i).copied());
        servers.push(ServerMemory { name: name.clone(), before, after, shards, midpoint });
    }
    if fill.live_data_servers != u64::from(layout::DATA_SERVERS) {
        notes.push(format!(
            "the API server counted {} live data servers before the fill (others on the same broker may hold \
             some shards): the per-server shard estimate (used only where `/stats` failed) assumes {}",
            fill.live_data_servers,
            layout::DATA_SERVERS
        ));
    }
    let restart = if stop.is_cancelled() {
        Err("interrupted".to_string())
    } else {
        restart_one(&mut running, &endpoint, &fill.prefix, objects, small.restart_timeout).await
    };
    if let Some((name, status, log_tail)) = running.processes.exited() {
        notes.push(format!("{name} exited during the run ({status}); its last log lines:\n{log_tail}"));
    }
    Ok(ScaleReport { requested: small.scale_objects, fill, servers, estimated_shards_per_server, restart, notes })
}

/// Each data server's resident memory and shard count, taken once their shards
/// together first reach `total` (polled every 2 s); `None` when `done` comes first
/// or a count or memory reading fails.
async fn sample_at(
    client: reqwest::Client,
    servers: Vec<(u32, SocketAddr)>,
    total: u64,
    done: CancellationToken,
) -> Option<Vec<(u64, u64)>> {
    loop {
        let mut counts = Vec::with_capacity(servers.len());
        for (_, addr) in &servers {
            counts.push(stats_shards(&client, *addr).await.ok()?);
        }
        if counts.iter().sum::<u64>() >= total {
            let memory = servers.iter().map(|(pid, _)| probes::process_rss(*pid).ok()).collect::<Option<Vec<u64>>>()?;
            return Some(memory.into_iter().zip(counts).collect());
        }
        tokio::select! {
            _ = done.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The shards the data server at `addr` holds, from its `GET /stats`.
async fn stats_shards(client: &reqwest::Client, addr: SocketAddr) -> Result<u64, String> {
    let answer = client
        .get(format!("http://{addr}/stats"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    parse_stats_shards(&answer).ok_or_else(|| {
        let start = String::from_utf8_lossy(&answer[..answer.len().min(100)]).into_owned();
        format!("no shard count in its answer {start:?}")
    })
}

/// The `shards` of a data server's `GET /stats` answer (`{"shards": N,
/// "index_bytes": N, "syncs": N, "synced_ops": N, "volumes": [...]}`): the shards
/// its small-shard engine holds. `None` without it, as when the engine is off
/// (`{"volumes": null}`), since then no count covers the shards.
pub fn parse_stats_shards(answer: &[u8]) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_slice(answer).ok()?;
    json.get("shards")?.as_u64()
}

/// An HTTP client for the suite's own servers on loopback, with short timeouts.
fn local_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}

/// Each data server's resident memory now, in the order of `data_servers`.
fn resident_memory(running: &ProcessLayout) -> Result<Vec<u64>, String> {
    running
        .data_servers
        .iter()
        .map(|(name, _)| {
            let pid = running.processes.pid(name).ok_or_else(|| format!("{name} has no process"))?;
            probes::process_rss(pid).map_err(|e| format!("memory of {name} (pid {pid}): {e}"))
        })
        .collect()
}

/// Finds a data server holding a shard of the fill's first object, kills it with
/// SIGKILL, starts it again and times it until it serves that shard.
async fn restart_one(
    running: &mut ProcessLayout,
    endpoint: &str,
    prefix: &str,
    objects: u64,
    timeout: Duration,
) -> Result<Restart, String> {
    if objects == 0 {
        return Err("the fill stored nothing".into());
    }
    let client = local_client()?;
    let name = load::object_name(prefix, 0);
    let located = client
        .get(format!("{endpoint}/locate/{}", cairn::api::names::encode_path(&name)))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("locating {name}: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("locating {name}: {e}"))?;
    let (hash, shards) = parse_locate(&located).ok_or_else(|| format!("unexpected locate answer for {name}"))?;
    let (shard, server, addr) = shards
        .iter()
        .find_map(|(shard, at)| {
            let (server, addr) = running.data_servers.iter().find(|(_, a)| a.to_string() == *at)?;
            Some((shard.clone(), server.clone(), *addr))
        })
        .ok_or_else(|| format!("no shard of {name} is on this layout's data servers ({shards:?})"))?;
    let shard_name = format!("{hash}.{shard}");
    let url = format!("http://{addr}/objects/{shard_name}");
    fetch(&client, &url).await.map_err(|e| format!("{server} does not serve {shard_name} before the restart: {e}"))?;

    running.processes.kill(&server);
    let spawned = Instant::now();
    running.processes.restart(&server).map_err(|e| e.to_string())?;
    let mut last = String::new();
    while spawned.elapsed() < timeout {
        match fetch(&client, &url).await {
            Ok(()) => return Ok(Restart { server, shard: shard_name, seconds: spawned.elapsed().as_secs_f64() }),
            Err(e) => last = e,
        }
        if let Some(status) = running.processes.wait_exit(&server, Duration::ZERO).await {
            let log = one_line(&running.processes.log_tail(&server));
            return Err(format!("{server} exited after its restart ({status}): {log}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "{server} did not serve {shard_name} within {} of its restart (last: {last})",
        humantime::format_duration(timeout)
    ))
}

/// The content hash and `(shard index, data server address)` pairs of a `GET
/// /locate/<name>` answer: `{"hash": "...", "size": N, "shards": {"0": "host:port"}}`.
pub fn parse_locate(answer: &[u8]) -> Option<(String, Vec<(String, String)>)> {
    let json: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let hash = json.get("hash")?.as_str()?.to_string();
    let shards = json
        .get("shards")?
        .as_object()?
        .iter()
        .map(|(shard, addr)| Some((shard.clone(), addr.as_str()?.to_string())))
        .collect::<Option<Vec<_>>>()?;
    Some((hash, shards))
}

/// `GET url` answered 200 with its whole body.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("answered {}", resp.status()));
    }
    resp.bytes().await.map(|_| ()).map_err(|e| e.to_string())
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locate_answer_gives_the_hash_and_where_each_shard_is() {
        let answer = br#"{"hash":"ab12","size":3000,"shards":{"0":"127.29.1.3:12400","2":"127.29.1.5:12400"}}"#;
        let (hash, shards) = parse_locate(answer).unwrap();
        assert_eq!(hash, "ab12");
        assert_eq!(
            shards,
            [("0".to_string(), "127.29.1.3:12400".to_string()), ("2".to_string(), "127.29.1.5:12400".to_string())]
        );
        assert_eq!(parse_locate(b"no data server holds ab12\n"), None);
        assert_eq!(parse_locate(br#"{"hash":"ab12","shards":{"0":7}}"#), None);
    }

    #[test]
    fn a_stats_answer_gives_the_small_shard_count() {
        let answer = br#"{"shards":166667,"index_bytes":9000000,"syncs":120,"synced_ops":5000,"volumes":[]}"#;
        assert_eq!(parse_stats_shards(answer), Some(166_667));
        // The engine off: no count of the shards (they are files).
        assert_eq!(parse_stats_shards(br#"{"volumes":null}"#), None);
        assert_eq!(parse_stats_shards(br#"{"shards":-1}"#), None);
        assert_eq!(parse_stats_shards(b"Not Found"), None);
    }

    #[test]
    fn a_server_without_its_own_count_falls_back_to_the_estimate() {
        let counted = ServerMemory {
            name: "data-1".into(),
            before: 10 << 20,
            after: 40 << 20,
            shards: Ok(500_000),
            midpoint: Some((25 << 20, 250_000)),
        };
        assert_eq!(counted.marginal_per_million(), Some(60.0 * (1 << 20) as f64));
        let early = ServerMemory { midpoint: Some((38 << 20, 300_000)), ..counted.clone() };
        assert_eq!(early.marginal_per_million(), Some(10.0 * (1 << 20) as f64), "2 MiB over 200,000 shards");
        assert_eq!(ServerMemory { midpoint: None, ..counted.clone() }.marginal_per_million(), None);
        assert_eq!(counted.shards_or(1e6), 500_000.0);
        assert_eq!(counted.per_million(counted.shards_or(1e6)), Some(60.0 * (1 << 20) as f64));
        let failed = ServerMemory { shards: Err("connection refused".into()), ..counted };
        assert_eq!(failed.shards_or(1e6), 1e6);
        assert_eq!(failed.per_million(0.0), None);
    }

    #[test]
    fn the_counters_attach_to_the_pid_and_write_where_they_are_told() {
        let out = Path::new("/tmp/x/perf-counts.txt");
        assert_eq!(
            counter_args(SyncCounter::Perf, out, 42),
            [
                "stat",
                "--no-big-num",
                "-e",
                "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync",
                "-o",
                "/tmp/x/perf-counts.txt",
                "-p",
                "42"
            ]
        );
        assert_eq!(
            counter_args(SyncCounter::Strace, out, 42),
            ["-f", "-c", "-e", "trace=fsync,fdatasync", "-o", "/tmp/x/perf-counts.txt", "-p", "42"]
        );
        assert_eq!(CommitDelay::Off.dev_args(), ["--commit-delay", "0s"]);
        assert!(CommitDelay::Default.dev_args().is_empty());
        assert_eq!(CommitDelay::Default.label(), "default (1ms)");
    }

    #[test]
    fn the_disk_estimate_rounds_shards_to_blocks_and_adds_one() {
        // 1-8 KiB: mean 4.5 KiB, two blocks and 1 KiB, three copies.
        assert_eq!(fill_disk_estimate(1_000_000, (KIB, 8 * KIB), 3), 1_000_000 * 3 * 9 * KIB);
        assert_eq!(fill_disk_estimate(10, (64, 64), 3), 10 * 3 * 5 * KIB);
        assert_eq!(fill_disk_estimate(u64::MAX, (64, 64), 3), u64::MAX, "saturates");
    }

    #[test]
    fn the_quick_config_is_smaller_and_alternates_engines_in_the_full_one() {
        let full = SmallShardConfig::standard(false);
        let quick = SmallShardConfig::standard(true);
        assert_eq!((full.space_objects, full.scale_objects), (88_000, 1_000_000));
        assert!(quick.scale_objects <= 20_000 && quick.space_objects < full.space_objects);
        assert_eq!(full.engine_runs, [Engine::Files, Engine::Volumes, Engine::Volumes, Engine::Files]);
        assert_eq!(quick.engine_runs, [Engine::Files, Engine::Volumes]);
        assert_eq!(full.engine_sizes, [4 * KIB, 64 * KIB, 256 * KIB]);
        assert_eq!(quick.engine_sizes, full.engine_sizes);
        // A 256 KiB object's shards are whole copies at the threshold: records, not files.
        assert!(full.engine_sizes.iter().all(|&s| s <= DEFAULT_SMALL_SHARD_MAX));
        assert_eq!(
            full.fsync_runs,
            [
                (SyncCounter::Strace, CommitDelay::Default),
                (SyncCounter::Perf, CommitDelay::Default),
                (SyncCounter::Perf, CommitDelay::Off)
            ]
        );
        assert_eq!(Engine::Files.small_shard_max(), 0);
        assert_eq!(Engine::Volumes.small_shard_max(), DEFAULT_SMALL_SHARD_MAX);
    }
}
