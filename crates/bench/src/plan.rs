//! What the suite's parts share, below all of them: the [`Cell`] a load run is
//! made from, how the layouts store objects ([`Redundancy`]), where child processes
//! come from ([`Spawn`]), how a part of the suite fails ([`SuiteError`]) and how it
//! removes its files (`remove_dir`). The suite, its crash run and its small-shard
//! measurements use it; it uses none of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::content::Policy;
use cairn::dev::{DEFAULT_POLICY, DEFAULT_SMALL_POLICY, DEFAULT_SMALL_THRESHOLD};
use cairn::size::ByteSize;

use crate::ceilings::CeilingError;
use crate::load::{BenchArgs, Op};

/// A cell's GETs read objects prepared for them, at most this many bytes of them
/// (and at least one object), so that preparing 1 GiB cells stays short.
pub const MAX_PREPARED_BYTES: u64 = 256 << 20;
/// Longest wait for one request of a cell (a 1 GiB PUT on a slow disk).
pub const CELL_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// One run of the matrix: what, how big, how many clients at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// `get`, `put` or `get-missing`.
    pub op: Op,
    /// Object size (unused by `get-missing`).
    pub size: ByteSize,
    /// Requests in flight at once.
    pub clients: u32,
}

impl Cell {
    /// A cell.
    pub const fn new(op: Op, size: u64, clients: u32) -> Cell {
        Cell { op, size: ByteSize(size), clients }
    }

    /// The run of this cell against `endpoint` for `duration`.
    pub fn bench_args(&self, endpoint: &str, duration: Duration) -> BenchArgs {
        let mut args = BenchArgs::new(endpoint);
        args.op = self.op;
        args.size = self.size;
        args.concurrency = self.clients;
        args.duration = duration;
        args.timeout = CELL_REQUEST_TIMEOUT;
        if self.op.reads_prepared() {
            let by_bytes = MAX_PREPARED_BYTES.checked_div(self.size.bytes()).unwrap_or(u64::MAX).max(1);
            args.objects = Some(args.objects_to_prepare().min(by_bytes));
        }
        args
    }
}

/// What the suite's parts need to start `cairn` processes: the binary (`None` when
/// a library caller gave none, which skips what needs it), the RabbitMQ of the
/// multi-process layout and the first port tried for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawn<'a> {
    /// The `cairn` binary.
    pub cairn_exe: Option<&'a Path>,
    /// RabbitMQ for the multi-process layout.
    pub broker_url: &'a str,
    /// First port tried for the multi-process layout.
    pub base_port: u16,
}

/// How objects are stored in both layouts (`cairn dev`'s defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redundancy {
    /// Policy of objects of at least `threshold` bytes.
    pub large: Policy,
    /// Policy of smaller ones.
    pub small: Policy,
    /// The size from which `large` applies.
    pub threshold: u64,
}

impl Redundancy {
    /// `cairn dev`'s defaults, which the suite's layouts use.
    pub const DEFAULT: Redundancy =
        Redundancy { large: DEFAULT_POLICY, small: DEFAULT_SMALL_POLICY, threshold: DEFAULT_SMALL_THRESHOLD };

    /// The policy of an object of `size` bytes.
    pub fn policy_for(&self, size: u64) -> Policy {
        if size >= self.threshold {
            self.large
        } else {
            self.small
        }
    }
}

/// The bytes a policy writes per byte of object: (k+m)/k.
pub fn write_amplification(policy: Policy) -> f64 {
    f64::from(policy.k.max(1) + policy.m) / f64::from(policy.k.max(1))
}

/// Why the suite produced no report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuiteError {
    /// The work directory could not be made.
    #[error("cannot make the work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A ceiling could not be measured.
    #[error("measuring the machine's ceilings: {0}")]
    Ceilings(#[from] CeilingError),
    /// Stopped (Ctrl-C / SIGTERM).
    #[error("interrupted; no report written")]
    Interrupted,
}

/// Removes `dir` and everything in it off the async runtime; a failure is logged,
/// since the work directory's own removal tries again.
pub(crate) async fn remove_dir(dir: PathBuf) {
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir).map_err(|e| (dir, e))).await;
    if let Ok(Err((dir, e))) = removed {
        tracing::warn!(dir = %dir.display(), error = %e, "suite: cannot remove a layout's files");
    }
}
