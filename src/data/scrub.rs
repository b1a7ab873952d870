//! The data server's scrubber: a background [`Worker`] (named `scrub`) that reads and
//! verifies every shard this server holds, so that rot is found without any client
//! read, and the findings that tell API servers what to rebuild.
//!
//! **A pass** walks the shards in (hash, shard) order with a cursor, the way the
//! listing does ([`ShardStore::names_after`]): never the whole list in memory. Each
//! step verifies a bounded batch (at most [`BATCH_SHARDS`] shards, or about a
//! quarter second's worth of bytes at the configured rate, at most [`BATCH_BYTES`]),
//! so pause and shutdown take effect promptly; a large shard file is verified a
//! chunk per step. Files are checked block by block through the shard reader (every
//! block's CRC-32C, the header and the file length); records through the volume
//! store's read (header, full hash, both checksums). Bytes are paced by a
//! [`RateLimit`] (`--scrub-rate`).
//!
//! **A corrupt shard** is verified a second time (a shard replaced meanwhile is not
//! quarantined for its predecessor's rot), then moved to `garbage/`
//! ([`ShardStore::quarantine`]) and appended to the [`Findings`]. Shards deleted or
//! replaced during the pass are skipped, not reported.
//!
//! **When.** A pass starts every `--scrub-interval` after the last one finished
//! (`0s`: never by itself), at once on a server that never finished one, and on
//! `POST /scrub` unless one runs. The pass's state (its number, cursor and figures)
//! is kept in `ROOT/scrub.json`, rewritten by rename at most every
//! [`PERSIST_EVERY`] and at the start and end of a pass, so a restarted server
//! resumes its pass from the cursor (the shard being verified then is verified again
//! from its start).
//!
//! **Findings** (`GET /scrub/findings`) are kept in memory: the last
//! [`MAX_FINDINGS`], older ones dropped first; each has a sequence number increasing
//! from 1 within an epoch, a UUID new at every process start, so that a reader can
//! tell a restart from a gap. At start they are re-seeded from the `garbage/`
//! entries younger than [`RESEED_AGE`] (their names carry hash, shard and time), so
//! a restart between a quarantine and its rebuild does not lose the report; that
//! includes shards moved aside because a write replaced them (a rebuild of a shard
//! that is there again costs the API server a check, nothing more).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::store::{FileCheck, Home, RecordCheck, ShardStore, StoreError};
use crate::clock::now_ms;
use crate::content::{ContentHash, ShardIndex};
use crate::worker::{Progress, RateLimit, Report, Step, StepError, Worker};

/// Default `--scrub-rate`: 16 MiB/s per data server, a 256 MiB share in 16 s.
/// Measured on a release `cairn dev` (six data servers on one 2-core machine, so
/// 96 MiB/s of scrubbing in all; ~1.5 GB of shards, page-cached), 4 KiB GETs at
/// concurrency 4 with the API cache off: p99 883 µs paused vs 1122 µs scrubbing,
/// and 952 vs 1074 µs in an interleaved rerun, within the 748–1113 µs spread of
/// paused runs on that shared machine; throughput 11–16 % lower while scrubbing
/// (at 4 MiB/s: p99 748 vs 1133 µs, so the cost is not proportional to the rate).
/// One data server per disk sees a sixth of that load.
pub const DEFAULT_SCRUB_RATE: u64 = 16 << 20;
/// Default `--scrub-interval`: a pass a week.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most shards one step verifies.
pub const BATCH_SHARDS: usize = 64;
/// Most bytes one step verifies.
pub const BATCH_BYTES: u64 = 4 << 20;
/// Findings kept in memory; older ones are dropped first.
pub const MAX_FINDINGS: usize = 10_000;
/// `garbage/` entries younger than this re-seed the findings at start.
pub const RESEED_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a running pass's state is written to `scrub.json`.
pub const PERSIST_EVERY: Duration = Duration::from_secs(2);
/// The file holding the pass's state, in the storage root.
pub const STATE_FILE: &str = "scrub.json";

pub use super::wire::Finding;

/// The findings of one process lifetime (see the module doc); shared by the
/// scrubber and the read path.
#[derive(Debug)]
pub struct Findings {
    epoch: Uuid,
    inner: Mutex<(u64, VecDeque<Finding>)>,
}

impl Default for Findings {
    fn default() -> Self {
        Findings { epoch: Uuid::new_v4(), inner: Mutex::new((0, VecDeque::new())) }
    }
}

impl Findings {
    /// This process's epoch.
    pub fn epoch(&self) -> Uuid {
        self.epoch
    }

    /// Appends a finding; the oldest is dropped beyond [`MAX_FINDINGS`].
    pub fn push(&self, hash: ContentHash, shard: ShardIndex, at_ms: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 += 1;
        let seq = inner.0;
        inner.1.push_back(Finding { seq, hash, shard, at_ms });
        while inner.1.len() > MAX_FINDINGS {
            inner.1.pop_front();
        }
    }

    /// The findings with a sequence number above `after`, in order.
    pub fn after(&self, after: u64) -> Vec<Finding> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.1.iter().filter(|f| f.seq > after).copied().collect()
    }

    /// Re-seeds from `garbage/` (see the module doc). For a blocking thread.
    pub fn reseed(&self, store: &ShardStore) -> Result<usize, StoreError> {
        let since = SystemTime::now().checked_sub(RESEED_AGE).unwrap_or(SystemTime::UNIX_EPOCH);
        let entries = store.garbage_since(since)?;
        let skip = entries.len().saturating_sub(MAX_FINDINGS);
        let n = entries.len() - skip;
        for (hash, shard, at_ms) in entries.into_iter().skip(skip) {
            self.push(hash, shard, at_ms);
        }
        Ok(n)
    }
}

/// A pass's state, as `scrub.json` keeps it and `GET /scrub` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassState {
    /// The number of the current (or last) pass; 0 before the first.
    pub pass: u64,
    /// Whether a pass is running.
    pub running: bool,
    /// When the current (or last) pass started, ms since the Unix epoch.
    pub pass_started_ms: Option<i64>,
    /// The last shard the pass verified, `<hash>.<shard>`.
    pub cursor: Option<String>,
    /// Shards verified in this pass.
    pub shards_done: u64,
    /// Bytes verified in this pass.
    pub bytes_done: u64,
    /// An estimate of the pass's shards: the volume records when it started plus the
    /// files the last whole pass saw (never below `shards_done`).
    pub shards_total: u64,
    /// Corrupt shards found (and quarantined) in this pass.
    pub corrupt_found: u64,
    /// When the last whole pass finished.
    pub last_pass_finished_ms: Option<i64>,
    /// Shard files seen by this pass so far.
    pub files_seen: u64,
    /// Shard files the last whole pass saw.
    pub last_pass_files: u64,
}

/// What the scrubber and the HTTP routes share.
#[derive(Debug, Default)]
pub struct ScrubShared {
    state: Mutex<PassState>,
    requested: AtomicBool,
}

impl ScrubShared {
    /// The pass's state now.
    pub fn state(&self) -> PassState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks for a pass to start at the next step, unless one runs; whether it asked.
    pub fn request_pass(&self) -> bool {
        let running = self.state.lock().unwrap_or_else(|p| p.into_inner()).running;
        if !running {
            self.requested.store(true, Ordering::SeqCst);
        }
        !running
    }

    fn set(&self, state: PassState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// The scrubber of one data server.
pub struct Scrubber {
    store: ShardStore,
    rate: RateLimit,
    interval: Duration,
    shared: Arc<ScrubShared>,
    findings: Arc<Findings>,
    server: String,
    state_path: PathBuf,
    last_persist: Instant,
    /// A shard file verified part way: (hash, shard, its length, verified up to).
    partial: Option<(ContentHash, ShardIndex, u64, u64)>,
}

/// Far enough to mean never.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Scrubber {
    /// A scrubber of `store` at `rate` bytes/s (0: unlimited), a pass every
    /// `interval` (zero: only on request), resuming the pass `scrub.json` records.
    /// `server` labels its metrics. Reads the state file: call it on a blocking
    /// thread.
    pub fn new(
        store: ShardStore,
        rate: u64,
        interval: Duration,
        shared: Arc<ScrubShared>,
        findings: Arc<Findings>,
        server: String,
    ) -> Scrubber {
        let state_path = store.root().join(STATE_FILE);
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice::<PassState>(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable scrub state; starting afresh");
                PassState::default()
            }),
            Err(_) => PassState::default(),
        };
        if state.running {
            tracing::info!(pass = state.pass, cursor = ?state.cursor, "resuming the scrub pass");
        }
        shared.set(state);
        Scrubber {
            store,
            rate: RateLimit::new(rate),
            interval,
            shared,
            findings,
            server,
            state_path,
            last_persist: Instant::now(),
            partial: None,
        }
    }

    /// Bytes one step verifies at most: a quarter second at the rate, within
    /// 64 KiB..[`BATCH_BYTES`].
    fn batch_bytes(&self) -> u64 {
        match self.rate.rate() {
            0 => BATCH_BYTES,
            r => (r / 4).clamp(64 << 10, BATCH_BYTES),
        }
    }

    async fn persist(&mut self, state: &PassState) -> Result<(), StepError> {
        let (path, bytes) = (self.state_path.clone(), serde_json::to_vec(state)?);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = path.with_extension("json.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await??;
        self.last_persist = Instant::now();
        Ok(())
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [("server", self.server.clone()), ("role", "data".to_string())]
    }

    /// Handles a shard that failed verification: checked again, then quarantined
    /// and reported. True when it was quarantined.
    async fn corrupt(&self, hash: ContentHash, shard: ShardIndex, file: bool, why: String) -> Result<bool, StepError> {
        let store = self.store.clone();
        let again = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            let still = if file {
                matches!(store.verify_file(&hash, shard, 0, u64::MAX)?, FileCheck::Corrupt(_))
            } else {
                matches!(store.verify_record(&hash, shard)?, RecordCheck::Corrupt(_))
            };
            if !still {
                return Ok(false);
            }
            match store.quarantine(&hash, shard) {
                Ok(()) => Ok(true),
                Err(StoreError::NoSuchShard { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await??;
        if again {
            tracing::error!(%hash, shard, reason = %why, "scrub found a corrupt shard; moved to garbage");
            self.findings.push(hash, shard, now_ms());
            metrics::counter!(crate::telemetry::SCRUB_CORRUPT, &self.labels()).increment(1);
        }
        Ok(again)
    }
}

#[async_trait]
impl Worker for Scrubber {
    fn name(&self) -> &'static str {
        "scrub"
    }

    fn interval(&self) -> Duration {
        if self.interval.is_zero() {
            return NEVER;
        }
        let last = self.shared.state().last_pass_finished_ms.unwrap_or(0);
        let since = Duration::from_millis(now_ms().saturating_sub(last).max(0) as u64);
        self.interval.saturating_sub(since).max(Duration::from_secs(1))
    }

    async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
        let mut state = self.shared.state();
        if !state.running {
            let requested = self.shared.requested.swap(false, Ordering::SeqCst);
            let due = !self.interval.is_zero()
                && state.last_pass_finished_ms.is_none_or(|t| {
                    now_ms().saturating_sub(t) >= self.interval.as_millis().min(i64::MAX as u128) as i64
                });
            if !(requested || due) {
                report.progress(None);
                return Ok(Step::Idle);
            }
            let records = self.store.volumes().map_or(0, |v| v.stats().shards);
            state = PassState {
                pass: state.pass + 1,
                running: true,
                pass_started_ms: Some(now_ms()),
                shards_total: records + state.last_pass_files,
                last_pass_finished_ms: state.last_pass_finished_ms,
                last_pass_files: state.last_pass_files,
                ..PassState::default()
            };
            self.partial = None;
            tracing::info!(pass = state.pass, "scrub pass started");
            self.shared.set(state.clone());
            self.persist(&state).await?;
        }
        let budget = self.batch_bytes();
        let mut bytes = 0u64;
        let mut shards = 0u64;
        let before_corrupt = state.corrupt_found;
        // A shard file verified part way first.
        if let Some((hash, shard, len, from)) = self.partial.take() {
            let store = self.store.clone();
            let checked = tokio::task::spawn_blocking(move || store.verify_file(&hash, shard, from, budget)).await??;
            match checked {
                FileCheck::Good { data_len, end } if data_len == len => {
                    bytes += end - from;
                    self.rate.take(end - from).await;
                    if end < data_len {
                        self.partial = Some((hash, shard, len, end));
                    } else {
                        shards += 1;
                        state.cursor = Some(format!("{hash}.{shard}"));
                    }
                }
                FileCheck::Corrupt(why) => {
                    if self.corrupt(hash, shard, true, why).await? {
                        state.corrupt_found += 1;
                    }
                    state.cursor = Some(format!("{hash}.{shard}"));
                }
                // Replaced (another length) or deleted meanwhile: skipped.
                FileCheck::Good { .. } | FileCheck::Gone => state.cursor = Some(format!("{hash}.{shard}")),
            }
        }
        let mut finished = false;
        if self.partial.is_none() && bytes < budget {
            let after = state.cursor.as_deref().and_then(super::store::parse_shard_file_name);
            let store = self.store.clone();
            let names = tokio::task::spawn_blocking(move || store.names_after(after, BATCH_SHARDS)).await??;
            finished = names.is_empty();
            for name in names {
                if bytes >= budget {
                    break;
                }
                let (hash, shard) = (name.hash, name.shard);
                let store = self.store.clone();
                let cursor = Some(format!("{hash}.{shard}"));
                match name.home {
                    Home::Record(_) => {
                        let checked = tokio::task::spawn_blocking(move || store.verify_record(&hash, shard)).await??;
                        match checked {
                            RecordCheck::Good { len } => {
                                bytes += len;
                                shards += 1;
                                self.rate.take(len).await;
                            }
                            RecordCheck::Corrupt(why) => {
                                if self.corrupt(hash, shard, false, why).await? {
                                    state.corrupt_found += 1;
                                }
                            }
                            RecordCheck::Gone => {}
                        }
                        state.cursor = cursor;
                    }
                    Home::File => {
                        state.files_seen += 1;
                        let left = budget - bytes;
                        let checked =
                            tokio::task::spawn_blocking(move || store.verify_file(&hash, shard, 0, left)).await??;
                        match checked {
                            FileCheck::Good { data_len, end } => {
                                bytes += end;
                                self.rate.take(end).await;
                                if end < data_len {
                                    // Continued next step; the cursor stays before it.
                                    self.partial = Some((hash, shard, data_len, end));
                                    break;
                                }
                                shards += 1;
                            }
                            FileCheck::Corrupt(why) => {
                                if self.corrupt(hash, shard, true, why).await? {
                                    state.corrupt_found += 1;
                                }
                            }
                            FileCheck::Gone => {}
                        }
                        state.cursor = cursor;
                    }
                }
            }
        }
        state.shards_done += shards;
        state.bytes_done += bytes;
        state.shards_total = state.shards_total.max(state.shards_done);
        let labels = self.labels();
        metrics::counter!(crate::telemetry::SCRUB_SHARDS, &labels).increment(shards);
        metrics::counter!(crate::telemetry::SCRUB_BYTES, &labels).increment(bytes);
        let ratio = if finished { 1.0 } else { state.shards_done as f64 / state.shards_total.max(1) as f64 };
        metrics::gauge!(crate::telemetry::SCRUB_PASS_PROGRESS, &labels).set(ratio.min(1.0));
        if finished {
            state.running = false;
            state.cursor = None;
            state.last_pass_finished_ms = Some(now_ms());
            state.last_pass_files = state.files_seen;
            tracing::info!(
                pass = state.pass,
                shards = state.shards_done,
                bytes = state.bytes_done,
                corrupt = state.corrupt_found,
                "scrub pass finished"
            );
        }
        report.progress(state.running.then_some(Progress { done: state.shards_done, total: Some(state.shards_total) }));
        report.info(serde_json::json!({
            "pass": state.pass,
            "bytes_done": state.bytes_done,
            "corrupt_found": state.corrupt_found,
            "new_corrupt": state.corrupt_found - before_corrupt,
        }));
        self.shared.set(state.clone());
        if finished || self.last_persist.elapsed() >= PERSIST_EVERY {
            self.persist(&state).await?;
        }
        Ok(if finished { Step::Idle } else { Step::Busy })
    }
}
