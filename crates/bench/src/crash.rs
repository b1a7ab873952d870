//! The crash run of issue 9: `kill -9` data servers under a small-PUT load and
//! check afterwards that nothing acknowledged was lost or changed.
//!
//! It talks to cairn over HTTP and signals only, so it checks whatever store the
//! data servers use (files per shard today, the small-shard engine once merged).
//! [`run_crash`] starts the multi-process layout (`layout.rs`: six `cairn data`
//! and two `cairn api` processes on RabbitMQ), the API servers with their object
//! cache off so that every read goes to the data servers. Then, for
//! [`CrashConfig::duration`]:
//!
//! - [`CrashConfig::clients`] clients PUT new objects back to back, each 1–8 KiB of
//!   random bytes with a unique head (no two alike, so content addressing cannot
//!   share shards between them), half of the clients through each API server. A
//!   PUT answered 2xx is *acknowledged*: its name and SHA-256 are kept. A PUT that
//!   fails is not acknowledged, which is expected while a data server is down;
//!   the client pauses a little and goes on.
//! - Every [`CrashConfig::kill_every`], one data server (round robin) is killed
//!   with SIGKILL, left dead for [`CrashConfig::down_for`], started again with its
//!   flags, files and address, and waited for until it answers `/healthz`.
//!
//! Then the load stops (PUTs in flight finish or time out; only answered ones
//! count), every data server is made sure to be running, answering and counted
//! live, and every acknowledged object is read back through the API servers
//! ([`VERIFY_CONCURRENCY`] at a time) and compared by SHA-256. Since an API server
//! needs only one good copy to answer, a copy lost or torn on a killed server would
//! not show there; so each copy is also checked where it lives: the API server's
//! `/locate` names the holder of each shard (asking the data servers on the bus
//! what they hold now) and each holder's `GET /objects/<hash>.<shard>` must serve
//! the object's bytes (objects below the small threshold are 1+M full copies). Last,
//! every data server's log is searched for "corrupt" and every log for "panicked".
//!
//! A [`CrashReport`] says what happened. It fails ([`CrashReport::failures`]) when
//! an acknowledged object reads back with other bytes or not at all, when a data
//! server serves a copy with other bytes, or when an object has fewer good copies
//! than a PUT waits for (k+1); the log lines found are listed.
//!
//! The suite ([`crate::suite`]) makes one long run of it ([`run_in_suite`]) and
//! [`write_markdown`] renders it as a section of `BENCH.md`; `tests/crash.rs`
//! makes a short one.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::report::error_chain;
use futures_util::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::layout::{self, LayoutError, Processes};
use crate::plan::Redundancy;

/// Acknowledged objects read back at once after the load.
pub const VERIFY_CONCURRENCY: usize = 16;
/// Times an acknowledged object is asked for before it counts as unreadable.
pub const READ_ATTEMPTS: u32 = 3;
/// Longest wait for a restarted data server to answer `/healthz`, and for the API
/// servers to count every data server live at the end.
pub const UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Failure messages of each kind kept for the report.
const KEPT_MESSAGES: usize = 10;
/// Bytes at the head of every object that make it unique: run, client, number.
const HEAD_LEN: usize = 16;

/// What a crash run does.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashConfig {
    /// The `cairn` binary the layout is started from.
    pub cairn_exe: PathBuf,
    /// Where the run makes its directory (removed at the end).
    pub work_dir: PathBuf,
    /// RabbitMQ for the layout.
    pub broker_url: String,
    /// First port tried for the layout.
    pub base_port: u16,
    /// How long the load (and the killing) lasts.
    pub duration: Duration,
    /// Time between a restarted data server answering and the next kill.
    pub kill_every: Duration,
    /// How long a killed data server stays dead.
    pub down_for: Duration,
    /// PUTs in flight at once.
    pub clients: u32,
    /// Smallest object, in bytes (at least 16, the unique head).
    pub min_size: usize,
    /// Largest object, in bytes.
    pub max_size: usize,
    /// Longest wait for one PUT or GET.
    pub request_timeout: Duration,
}

impl CrashConfig {
    /// Issue 9's run for `duration`: 16 clients of 1–8 KiB objects, a data server
    /// killed every 4 s and restarted after 1 s.
    pub fn new(cairn_exe: PathBuf, work_dir: PathBuf, broker_url: &str, base_port: u16, duration: Duration) -> Self {
        CrashConfig {
            cairn_exe,
            work_dir,
            broker_url: broker_url.to_string(),
            base_port,
            duration,
            kill_every: Duration::from_secs(4),
            down_for: Duration::from_secs(1),
            clients: 16,
            min_size: 1024,
            max_size: 8192,
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// What a crash run found.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashReport {
    /// The layout and the load, for people.
    pub description: String,
    /// How long the load phase lasted.
    pub elapsed: Duration,
    /// Data servers killed with SIGKILL.
    pub kills: u32,
    /// Of those, started again and answering `/healthz` in time.
    pub restarts: u32,
    /// The longest time from a restart to its `/healthz` answering.
    pub slowest_restart: Option<Duration>,
    /// PUTs answered 2xx.
    pub acknowledged: u64,
    /// Of those, the ones sent after the first kill.
    pub acknowledged_after_kill: u64,
    /// PUTs that failed (not acknowledged).
    pub failed_puts: u64,
    /// The first failed PUTs' messages.
    pub put_errors: Vec<String>,
    /// Acknowledged objects read back byte-identical.
    pub verified: u64,
    /// Acknowledged objects read back with other bytes.
    pub mismatches: u64,
    /// Acknowledged objects that could not be read back at all.
    pub unreadable: u64,
    /// The first mismatched or unreadable objects: name and what was wrong.
    pub lost: Vec<String>,
    /// The check of every copy where it lives; `None` when the objects' policy is
    /// not full copies (k = 1), so that a shard is not the object.
    pub copies: Option<CopyCheck>,
    /// Lines of the data servers' logs with "corrupt" in them, `name: line`.
    pub corrupt_log_lines: Vec<String>,
    /// Lines of any server's log with "panicked" in them, `name: line`.
    pub panic_log_lines: Vec<String>,
    /// Things that went wrong around the load: a restart that did not come up,
    /// a process that exited by itself, data servers of another cluster counted live.
    pub notes: Vec<String>,
}

impl CrashReport {
    /// Why the run fails issue 9's crash target; empty when it does not: an
    /// acknowledged object read back with other bytes, or not at all. Log lines
    /// about corruption or panics are reported beside these, not counted here: a
    /// store may rightly say it found (and did not serve) a torn record.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.mismatches > 0 {
            failures.push(format!("{} acknowledged objects read back with other bytes", self.mismatches));
        }
        if self.unreadable > 0 {
            failures.push(format!("{} acknowledged objects could not be read back", self.unreadable));
        }
        if let Some(copies) = &self.copies {
            if copies.served_wrong > 0 {
                failures.push(format!("data servers served {} copies with other bytes", copies.served_wrong));
            }
            if copies.under_replicated > 0 {
                failures.push(format!(
                    "{} acknowledged objects have fewer than {} good copies",
                    copies.under_replicated, copies.needed
                ));
            }
        }
        failures
    }
}

/// Every acknowledged object's copies, each read from the data server that holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopyCheck {
    /// Copies of each object (k+m of the small policy).
    pub copies: u32,
    /// Good copies a PUT waits for before it answers (k+1).
    pub needed: u32,
    /// Copies served byte-identical.
    pub good: u64,
    /// Copies that no data server reported holding.
    pub missing: u64,
    /// Copies a holder did not serve (an error status, a broken body).
    pub unreadable: u64,
    /// Copies a holder served with other bytes.
    pub served_wrong: u64,
    /// Objects with fewer than `needed` good copies.
    pub under_replicated: u64,
    /// Objects the locate of which did not answer.
    pub unlocated: u64,
    /// The first problems: object, shard, what was wrong.
    pub problems: Vec<String>,
}

/// Why a crash run has no report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrashError {
    /// The run's directory could not be made.
    #[error("cannot make the work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The multi-process layout did not start.
    #[error("the multi-process layout did not start: {0}")]
    Layout(#[source] LayoutError),
    /// The HTTP client could not be made.
    #[error("cannot make an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Stopped (Ctrl-C / SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

/// A directory of the run's own, removed (with everything in it) when dropped.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the crash run `config` describes (see the module's doc). `stop` (Ctrl-C)
/// ends it with [`CrashError::Interrupted`] after killing what it started.
pub async fn run_crash(config: &CrashConfig, stop: CancellationToken) -> Result<CrashReport, CrashError> {
    let tag = rand::random::<u32>();
    let dir = RunDir(config.work_dir.join(format!("cairn-crash-{tag:08x}")));
    std::fs::create_dir_all(&dir.0).map_err(|source| CrashError::WorkDir { path: dir.0.clone(), source })?;
    // Without the cache an API server reads every object from the data servers,
    // which is what is checked.
    let api_args = ["--cache-size".to_string(), "0".to_string()];
    let started = tokio::select! {
        started = layout::start_processes_with(
            &config.cairn_exe, &dir.0, &config.broker_url, config.base_port, &api_args
        ) => started.map_err(CrashError::Layout)?,
        // Dropping the start kills whatever it had spawned.
        _ = stop.cancelled() => return Err(CrashError::Interrupted),
    };
    let http = Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2).min(config.request_timeout))
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.clients as usize)
        .build()
        .map_err(CrashError::Client)?;
    let mut crash = Crash { config, http, layout: started, notes: Vec::new(), most_live: 0 };
    let report = crash.run(tag, &stop).await;
    // Kill every process before its files go; a long run leaves some 150,000 shard
    // files, whose removal takes minutes on a busy disk: off the async runtime.
    drop(crash);
    let _ = tokio::task::spawn_blocking(move || drop(dir)).await;
    report
}

/// One object that was acknowledged.
struct Acknowledged {
    name: String,
    size: usize,
    sha256: [u8; 32],
}

/// What one client did.
#[derive(Default)]
struct ClientTally {
    acknowledged: Vec<Acknowledged>,
    after_kill: u64,
    failed: u64,
    errors: Vec<String>,
}

/// What the kills did.
#[derive(Default)]
struct Kills {
    kills: u32,
    restarts: u32,
    slowest: Option<Duration>,
}

/// What reading one acknowledged object back found.
enum ReadBack {
    Identical,
    Mismatch(String),
    Unreadable(String),
}

/// A crash run in progress: the layout and what has been noticed.
struct Crash<'a> {
    config: &'a CrashConfig,
    http: Client,
    layout: layout::ProcessLayout,
    notes: Vec<String>,
    /// The most live data servers an API server reported (strangers on the broker).
    most_live: u64,
}

impl Crash<'_> {
    async fn run(&mut self, tag: u32, stop: &CancellationToken) -> Result<CrashReport, CrashError> {
        self.count_live().await;
        let load_stop = stop.child_token();
        let killed = Arc::new(AtomicBool::new(false));
        let mut clients = JoinSet::new();
        let smallest = self.config.min_size.max(HEAD_LEN);
        let sizes = (smallest, self.config.max_size.max(smallest));
        for id in 0..self.config.clients {
            let endpoint = self.layout.endpoints[id as usize % self.layout.endpoints.len()].clone();
            let job = PutClient {
                http: self.http.clone(),
                endpoint,
                prefix: format!("crash-{tag:08x}/{id:02}-"),
                head: (u64::from(tag) << 32) | u64::from(id),
                sizes,
                killed: killed.clone(),
            };
            clients.spawn(job.run(load_stop.clone()));
        }
        let started = Instant::now();
        let kills = self.kill_until(started + self.config.duration, &killed, stop).await;
        load_stop.cancel();
        let mut tally = ClientTally::default();
        while let Some(joined) = clients.join_next().await {
            match joined {
                Ok(t) => {
                    tally.acknowledged.extend(t.acknowledged);
                    tally.after_kill += t.after_kill;
                    tally.failed += t.failed;
                    keep_some(&mut tally.errors, t.errors);
                }
                Err(e) => self.notes.push(format!("a client task ended abnormally: {e}")),
            }
        }
        let elapsed = started.elapsed();
        if stop.is_cancelled() {
            return Err(CrashError::Interrupted);
        }

        self.all_up().await;
        let (verified, mismatches, unreadable, lost) = tokio::select! {
            read = self.read_back(&tally.acknowledged) => read,
            _ = stop.cancelled() => return Err(CrashError::Interrupted),
        };
        let small = Redundancy::DEFAULT.small;
        // Below the threshold (always, for the sizes of this run) every shard is a copy.
        let copies = if small.k == 1 && (self.config.max_size as u64) < Redundancy::DEFAULT.threshold {
            let check =
                CopyCheck { copies: 1 + u32::from(small.m), needed: u32::from(small.k) + 1, ..CopyCheck::default() };
            tokio::select! {
                check = self.check_copies(&tally.acknowledged, check) => Some(check),
                _ = stop.cancelled() => return Err(CrashError::Interrupted),
            }
        } else {
            None
        };
        if let Some((name, status, tail)) = self.layout.processes.exited() {
            self.notes.push(format!("{name} exited by itself ({status}); its last log lines:\n{tail}"));
        }
        let (corrupt_log_lines, panic_log_lines) = scan_logs(&self.layout.processes).await;
        let want = u64::from(layout::DATA_SERVERS);
        if self.most_live > want {
            self.notes.push(format!(
                "the API servers counted up to {} live data servers, not {want}: data servers of another cluster \
                 heartbeating on the same broker were given shards of this run",
                self.most_live
            ));
        }
        let c = self.config;
        Ok(CrashReport {
            description: format!(
                "six `cairn data` and two `cairn api` processes on RabbitMQ (the API servers with `--cache-size 0`, \
                 so that every read goes to the data servers), `cairn dev`'s policies and heartbeats otherwise; {} \
                 clients PUT objects of {}–{} random bytes, half through each API server; every {} after the last restart a \
                 data server (round robin) is killed with SIGKILL and started again {} later",
                c.clients,
                c.min_size,
                c.max_size,
                humantime::format_duration(c.kill_every),
                humantime::format_duration(c.down_for),
            ),
            elapsed,
            kills: kills.kills,
            restarts: kills.restarts,
            slowest_restart: kills.slowest,
            acknowledged: tally.acknowledged.len() as u64,
            acknowledged_after_kill: tally.after_kill,
            failed_puts: tally.failed,
            put_errors: tally.errors,
            verified,
            mismatches,
            unreadable,
            lost,
            copies,
            corrupt_log_lines,
            panic_log_lines,
            notes: std::mem::take(&mut self.notes),
        })
    }

    /// Until `deadline` (or `stop`): wait, kill a data server, wait, restart it,
    /// wait for it to answer. A killed server is always started again. `killed` is
    /// set at the first kill.
    async fn kill_until(&mut self, deadline: Instant, killed: &AtomicBool, stop: &CancellationToken) -> Kills {
        let mut kills = Kills::default();
        let mut next = 0;
        loop {
            let wake = Instant::now() + self.config.kill_every;
            tokio::select! {
                _ = tokio::time::sleep_until(wake.min(deadline)) => {}
                _ = stop.cancelled() => return kills,
            }
            if wake >= deadline {
                return kills;
            }
            let (name, addr) = self.layout.data_servers[next % self.layout.data_servers.len()].clone();
            next += 1;
            tracing::info!(data_server = %name, "crash: kill -9");
            self.layout.processes.kill(&name);
            killed.store(true, Ordering::Relaxed);
            kills.kills += 1;
            tokio::time::sleep(self.config.down_for).await;
            let restarted = Instant::now();
            if self.restart(&name, addr).await {
                kills.restarts += 1;
                let took = restarted.elapsed();
                kills.slowest = Some(kills.slowest.map_or(took, |s| s.max(took)));
            }
            self.count_live().await;
        }
    }

    /// Starts `name` again and waits until it answers; `false` (with a note) when
    /// it could not be started or does not answer in time.
    async fn restart(&mut self, name: &str, addr: SocketAddr) -> bool {
        if let Err(e) = self.layout.processes.restart(name) {
            self.notes.push(format!("{name} could not be started again: {e}"));
            return false;
        }
        if answers(&self.http, addr, UP_TIMEOUT).await {
            return true;
        }
        self.notes.push(format!("{name} did not answer /healthz within {} of its restart", secs(UP_TIMEOUT)));
        false
    }

    /// After the load: every data server running (started again if it exited by
    /// itself), answering, and counted live by both API servers.
    async fn all_up(&mut self) {
        while let Some((name, status, tail)) = self.layout.processes.exited() {
            self.notes.push(format!("{name} exited by itself ({status}); its last log lines:\n{tail}"));
            let addr = self.layout.data_servers.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
            let Some(addr) = addr else {
                // An API server: reading back through it will say what that costs.
                break;
            };
            if !self.restart(&name, addr).await {
                break;
            }
        }
        for (name, addr) in self.layout.data_servers.clone() {
            if !answers(&self.http, addr, UP_TIMEOUT).await {
                self.notes.push(format!("{name} did not answer /healthz before the read-back"));
            }
        }
        let want = u64::from(layout::DATA_SERVERS);
        for endpoint in self.layout.endpoints.clone() {
            if let Err(e) = layout::wait_live_at_least(&endpoint, want, &mut self.layout.processes).await {
                self.notes.push(format!("before the read-back: {e}"));
            }
        }
        self.count_live().await;
    }

    /// Notes the API servers' live counts.
    async fn count_live(&mut self) {
        for endpoint in &self.layout.endpoints {
            if let Some(live) = layout::live_count(endpoint).await {
                self.most_live = self.most_live.max(live);
            }
        }
    }

    /// Reads every acknowledged object back; (identical, mismatched, unreadable,
    /// the first failures' descriptions).
    async fn read_back(&self, objects: &[Acknowledged]) -> (u64, u64, u64, Vec<String>) {
        let endpoints = &self.layout.endpoints;
        let mut reads = futures_util::stream::iter(objects.iter().enumerate())
            .map(|(i, object)| read_back(&self.http, &endpoints[i % endpoints.len()], object))
            .buffer_unordered(VERIFY_CONCURRENCY);
        let (mut identical, mut mismatched, mut unreadable) = (0, 0, 0);
        let mut lost = Vec::new();
        while let Some(read) = reads.next().await {
            match read {
                ReadBack::Identical => identical += 1,
                ReadBack::Mismatch(why) => {
                    mismatched += 1;
                    keep_some(&mut lost, [why]);
                }
                ReadBack::Unreadable(why) => {
                    unreadable += 1;
                    keep_some(&mut lost, [why]);
                }
            }
        }
        (identical, mismatched, unreadable, lost)
    }
}

impl Crash<'_> {
    /// Reads every copy of every object from its holder, adding to `check`.
    async fn check_copies(&self, objects: &[Acknowledged], mut check: CopyCheck) -> CopyCheck {
        let endpoints = &self.layout.endpoints;
        let copies = check.copies;
        let mut checks = futures_util::stream::iter(objects.iter().enumerate())
            .map(|(i, object)| object_copies(&self.http, &endpoints[i % endpoints.len()], object, copies))
            .buffer_unordered(VERIFY_CONCURRENCY);
        while let Some(found) = checks.next().await {
            let Some(copies) = found.copies else {
                check.unlocated += 1;
                keep_some(&mut check.problems, found.problems);
                continue;
            };
            let good = copies.iter().filter(|c| matches!(c, Copy::Good)).count() as u64;
            check.good += good;
            for copy in &copies {
                match copy {
                    Copy::Good => {}
                    Copy::Missing => check.missing += 1,
                    Copy::Unreadable => check.unreadable += 1,
                    Copy::Wrong => check.served_wrong += 1,
                }
            }
            if good < u64::from(check.needed) {
                check.under_replicated += 1;
            }
            keep_some(&mut check.problems, found.problems);
        }
        check
    }
}

/// What one copy's holder served.
enum Copy {
    Good,
    Missing,
    Unreadable,
    Wrong,
}

/// One object's copies: each copy's state (`None` when the object could not be
/// located), and the problems in words.
struct ObjectCopies {
    copies: Option<Vec<Copy>>,
    problems: Vec<String>,
}

/// Locates `object` through `endpoint` (again, up to [`READ_ATTEMPTS`] times, while
/// fewer than all `copies` are found: a data server may answer the bus late) and
/// reads each copy from its holder.
async fn object_copies(http: &Client, endpoint: &str, object: &Acknowledged, copies: u32) -> ObjectCopies {
    let mut located = Err(String::new());
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        located = locate(http, endpoint, &object.name).await;
        if located.as_ref().is_ok_and(|(_, holders)| holders.len() >= copies as usize) {
            break;
        }
    }
    let (hash, holders) = match located {
        Ok(found) => found,
        Err(why) => return ObjectCopies { copies: None, problems: vec![format!("locate {}: {why}", object.name)] },
    };
    let mut states = Vec::new();
    let mut problems = Vec::new();
    for shard in 0..copies {
        let Some((_, holder)) = holders.iter().find(|(s, _)| *s == shard) else {
            states.push(Copy::Missing);
            problems.push(format!("{} shard {shard}: no data server holds it", object.name));
            continue;
        };
        let url = format!("http://{holder}/objects/{hash}.{shard}");
        let served = match http.get(&url).send().await {
            Ok(resp) => {
                let status = resp.status();
                match crate::load::read_capped(resp, object.size + 1).await {
                    Ok(body) if status == StatusCode::OK => Ok(body),
                    Ok(_) => Err(format!("answered {status}")),
                    Err(e) => Err(format!("answered {status}, then the body broke off: {}", error_chain(&e))),
                }
            }
            Err(e) => Err(error_chain(&e)),
        };
        match served {
            Ok(body) if <[u8; 32]>::from(Sha256::digest(&body)) == object.sha256 => states.push(Copy::Good),
            Ok(body) => {
                states.push(Copy::Wrong);
                problems.push(format!(
                    "{} shard {shard} on {holder}: served {} bytes of {}, other SHA-256",
                    object.name,
                    body.len(),
                    object.size
                ));
            }
            Err(why) => {
                states.push(Copy::Unreadable);
                problems.push(format!("{} shard {shard} on {holder}: {why}", object.name));
            }
        }
    }
    ObjectCopies { copies: Some(states), problems }
}

/// `GET /locate/<name>`: the content hash and the holder of each shard found.
async fn locate(http: &Client, endpoint: &str, name: &str) -> Result<(String, Vec<(u32, String)>), String> {
    let url = format!("{endpoint}/locate/{}", cairn::api::names::encode_path(name));
    let resp = http.get(url).send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let body = crate::load::read_capped(resp, 64 * 1024).await.map_err(|e| error_chain(&e))?;
    if status == StatusCode::NOT_FOUND {
        // No data server holds any shard of it.
        let hash = String::new();
        return Ok((hash, Vec::new()));
    }
    if status != StatusCode::OK {
        return Err(format!("answered {status}: {}", String::from_utf8_lossy(&body).trim()));
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
    let hash = json.get("hash").and_then(serde_json::Value::as_str).ok_or("no hash in the answer")?;
    let shards = json.get("shards").and_then(serde_json::Value::as_object).ok_or("no shards in the answer")?;
    let mut holders = Vec::new();
    for (shard, holder) in shards {
        let shard = shard.parse::<u32>().map_err(|_| format!("shard {shard:?} is not a number"))?;
        let holder = holder.as_str().ok_or("a holder is not a string")?;
        holders.push((shard, holder.to_string()));
    }
    Ok((hash.to_string(), holders))
}

/// One PUT client of the load.
struct PutClient {
    http: Client,
    endpoint: String,
    /// Object names are this and a number.
    prefix: String,
    /// The first 8 bytes of every object's head (run and client).
    head: u64,
    /// Smallest and largest object.
    sizes: (usize, usize),
    /// Set once a data server has been killed.
    killed: Arc<AtomicBool>,
}

impl PutClient {
    /// PUTs new objects back to back until `stop`; a PUT in flight then is
    /// finished (or times out), not abandoned, so that an acknowledgement is never
    /// missed.
    async fn run(self, stop: CancellationToken) -> ClientTally {
        let mut tally = ClientTally::default();
        let mut rng = SmallRng::seed_from_u64(self.head);
        let mut pause = Duration::from_millis(10);
        let mut number: u64 = 0;
        while !stop.is_cancelled() {
            let size = rng.random_range(self.sizes.0..=self.sizes.1);
            let mut body = vec![0u8; size];
            body[..8].copy_from_slice(&self.head.to_be_bytes());
            body[8..HEAD_LEN].copy_from_slice(&number.to_be_bytes());
            rng.fill_bytes(&mut body[HEAD_LEN..]);
            let sha256: [u8; 32] = Sha256::digest(&body).into();
            let name = format!("{}{number:010}", self.prefix);
            number += 1;
            let after_kill = self.killed.load(Ordering::Relaxed);
            match put(&self.http, &self.endpoint, &name, body).await {
                Ok(()) => {
                    tally.acknowledged.push(Acknowledged { name, size, sha256 });
                    tally.after_kill += u64::from(after_kill);
                    pause = Duration::from_millis(10);
                }
                Err(why) => {
                    tally.failed += 1;
                    keep_some(&mut tally.errors, [format!("PUT {name}: {why}")]);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => {}
                    }
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
        tally
    }
}

/// `PUT /objects/<name>`; `Ok` when answered 2xx.
async fn put(http: &Client, endpoint: &str, name: &str, body: Vec<u8>) -> Result<(), String> {
    let resp = http.put(object_url(endpoint, name)).body(body).send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    // Read the small answer to the end so the connection goes back to the pool.
    let answer = crate::load::read_capped(resp, 300).await;
    if status.is_success() {
        return Ok(());
    }
    Err(format!("answered {status}: {}", String::from_utf8_lossy(&answer.unwrap_or_default()).trim()))
}

/// Reads `object` back through `endpoint`, up to [`READ_ATTEMPTS`] times while it
/// cannot be read (a mismatch is not retried: bytes served are bytes served).
async fn read_back(http: &Client, endpoint: &str, object: &Acknowledged) -> ReadBack {
    let mut why = String::new();
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let resp = match http.get(object_url(endpoint, &object.name)).send().await {
            Ok(resp) => resp,
            Err(e) => {
                why = error_chain(&e);
                continue;
            }
        };
        let status = resp.status();
        // One byte more than the object shows a body that is too long.
        let body = match crate::load::read_capped(resp, object.size + 1).await {
            Ok(body) => body,
            Err(e) => {
                why = format!("answered {status}, then the body broke off: {}", error_chain(&e));
                continue;
            }
        };
        if status != StatusCode::OK {
            why = format!("answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]).trim());
            continue;
        }
        let digest: [u8; 32] = Sha256::digest(&body).into();
        if digest == object.sha256 {
            return ReadBack::Identical;
        }
        return ReadBack::Mismatch(format!(
            "{}: {} bytes read, {} written, other SHA-256",
            object.name,
            body.len(),
            object.size
        ));
    }
    ReadBack::Unreadable(format!("{}: {why} ({READ_ATTEMPTS} attempts)", object.name))
}

/// Whether `addr`'s `/healthz` answers 200 within `timeout`.
async fn answers(http: &Client, addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let url = format!("http://{addr}/healthz");
    loop {
        let answer = http.get(&url).timeout(Duration::from_secs(1)).send().await;
        if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lines of the data servers' logs that mention corruption and the lines of
/// every log that report a panic, each as `name: line`.
async fn scan_logs(processes: &Processes) -> (Vec<String>, Vec<String>) {
    let mut corrupt = Vec::new();
    let mut panics = Vec::new();
    for (name, log) in processes.logs() {
        // A log that cannot be read has nothing to say; the run goes on.
        let text = tokio::fs::read(log).await.unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            let line = strip_ansi(line);
            if name.starts_with("data-") && line.to_lowercase().contains("corrupt") {
                corrupt.push(format!("{name}: {line}"));
            }
            if line.contains("panicked") {
                panics.push(format!("{name}: {line}"));
            }
        }
    }
    (corrupt, panics)
}

/// `line` without terminal colour sequences (`ESC [ … letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn object_url(endpoint: &str, name: &str) -> String {
    format!("{endpoint}/objects/{}", cairn::api::names::encode_path(name))
}

/// Adds `more` to `kept` up to [`KEPT_MESSAGES`].
fn keep_some(kept: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    let room = KEPT_MESSAGES.saturating_sub(kept.len());
    kept.extend(more.into_iter().take(room));
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---- in the suite -----------------------------------------------------------------

/// Whether the suite's crash run ran.
#[derive(Clone, Debug, PartialEq)]
pub enum CrashOutcome {
    /// It ran; what it found.
    Ran(Box<CrashReport>),
    /// It was not tried, for this reason.
    Skipped(String),
    /// It could not run, for this reason.
    Failed(String),
}

impl CrashOutcome {
    /// Why the suite should fail because of it: a run that found acknowledged
    /// objects lost, or that could not run. `None` when it passed or was skipped.
    pub fn failure(&self) -> Option<String> {
        match self {
            CrashOutcome::Ran(report) => {
                let failures = report.failures();
                (!failures.is_empty()).then(|| format!("crash run: {}", failures.join("; ")))
            }
            CrashOutcome::Skipped(_) => None,
            CrashOutcome::Failed(why) => Some(format!("crash run failed: {why}")),
        }
    }
}

/// The suite's crash run of `duration` (zero skips it), from `cairn_exe` (none
/// skips it) on `broker` (skipped when it does not answer), under `work_dir`.
/// Only an interruption is an error; a run that cannot start is an outcome.
pub async fn run_in_suite(
    cairn_exe: Option<&Path>,
    work_dir: &Path,
    broker: &str,
    base_port: u16,
    duration: Duration,
    stop: &CancellationToken,
) -> Result<CrashOutcome, CrashError> {
    if duration.is_zero() {
        return Ok(CrashOutcome::Skipped("--crash-seconds 0".into()));
    }
    let Some(exe) = cairn_exe else {
        return Ok(CrashOutcome::Skipped("no `cairn` binary to start (library call)".into()));
    };
    if let Err(why) = layout::broker_answers(broker).await {
        tracing::warn!("suite: skipping the crash run: {why}");
        return Ok(CrashOutcome::Skipped(why));
    }
    tracing::info!(seconds = duration.as_secs(), "suite: crash run (kill -9 data servers under PUT load)");
    let config = CrashConfig::new(exe.to_path_buf(), work_dir.to_path_buf(), broker, base_port, duration);
    match run_crash(&config, stop.clone()).await {
        Ok(report) => Ok(CrashOutcome::Ran(Box::new(report))),
        Err(CrashError::Interrupted) => Err(CrashError::Interrupted),
        Err(e) => Ok(CrashOutcome::Failed(e.to_string())),
    }
}

/// The crash section of `BENCH.md`.
pub fn write_markdown(out: &mut String, outcome: &CrashOutcome) -> std::fmt::Result {
    writeln!(out, "## Crash: `kill -9` data servers under small PUTs")?;
    writeln!(out)?;
    let report = match outcome {
        CrashOutcome::Ran(report) => report,
        CrashOutcome::Skipped(why) => return writeln!(out, "Skipped: {}\n", one_line(why)),
        CrashOutcome::Failed(why) => return writeln!(out, "**Did not run**: {}\n", one_line(why)),
    };
    writeln!(out, "{}.", report.description)?;
    writeln!(out)?;
    let failures = report.failures();
    if failures.is_empty() {
        write!(out, "Every acknowledged object read back byte-identical")?;
        match (report.corrupt_log_lines.len(), report.panic_log_lines.len()) {
            (0, 0) => writeln!(out, "; no data server reported a corrupt record, no process panicked.")?,
            (corrupt, panics) => writeln!(
                out,
                "; but the logs have {corrupt} lines about corruption and {panics} about panics (below)."
            )?,
        }
    } else {
        writeln!(out, "**Failed**: {}.", failures.join("; "))?;
    }
    writeln!(out)?;
    let per_s = |n: u64| n as f64 / report.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    writeln!(out, "| figure | value |\n|---|---:|")?;
    writeln!(out, "| load phase | {} |", secs(report.elapsed))?;
    writeln!(out, "| data servers killed (SIGKILL) | {} |", report.kills)?;
    writeln!(out, "| … restarted and answering | {} |", report.restarts)?;
    let slowest = report.slowest_restart.map_or("-".to_string(), secs);
    writeln!(out, "| slowest restart, start to answering `/healthz` | {slowest} |")?;
    writeln!(out, "| acknowledged PUTs | {} ({:.0}/s) |", report.acknowledged, per_s(report.acknowledged))?;
    writeln!(out, "| … of which sent after the first kill | {} |", report.acknowledged_after_kill)?;
    writeln!(out, "| failed PUTs (not acknowledged) | {} |", report.failed_puts)?;
    writeln!(out, "| acknowledged objects read back byte-identical | {} |", report.verified)?;
    writeln!(out, "| … read back with other bytes | {} |", report.mismatches)?;
    writeln!(out, "| … unreadable | {} |", report.unreadable)?;
    if let Some(c) = &report.copies {
        let objects = report.acknowledged;
        writeln!(
            out,
            "| copies read from their data servers byte-identical | {} of {} |",
            c.good,
            objects * u64::from(c.copies)
        )?;
        writeln!(out, "| … that no data server holds | {} |", c.missing)?;
        writeln!(out, "| … not served (an error) | {} |", c.unreadable)?;
        writeln!(out, "| … served with other bytes | {} |", c.served_wrong)?;
        writeln!(out, "| objects with fewer than {} good copies | {} |", c.needed, c.under_replicated)?;
        if c.unlocated > 0 {
            writeln!(out, "| objects that could not be located | {} |", c.unlocated)?;
        }
    }
    writeln!(out, "| data-server log lines with \"corrupt\" | {} |", report.corrupt_log_lines.len())?;
    writeln!(out, "| log lines with \"panicked\" | {} |", report.panic_log_lines.len())?;
    writeln!(out)?;
    let copy_problems = report.copies.as_ref().map_or(&[][..], |c| &c.problems[..]);
    let lists: [(&str, &[String]); 6] = [
        ("Lost or changed objects (the first)", &report.lost),
        ("Copies missing, unreadable or wrong (the first)", copy_problems),
        ("Corruption in the data servers' logs", &report.corrupt_log_lines),
        ("Panics in the logs", &report.panic_log_lines),
        ("Failed PUTs (the first)", &report.put_errors),
        ("Notes", &report.notes),
    ];
    for (title, lines) in lists {
        if lines.is_empty() {
            continue;
        }
        writeln!(out, "{title}:")?;
        writeln!(out)?;
        for line in lines.iter().take(KEPT_MESSAGES) {
            writeln!(out, "- {}", one_line(line))?;
        }
        if lines.len() > KEPT_MESSAGES {
            writeln!(out, "- … and {} more", lines.len() - KEPT_MESSAGES)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The crash run in one line for the terminal.
pub fn summary_line(outcome: &CrashOutcome) -> String {
    match outcome {
        CrashOutcome::Ran(r) => {
            let verdict = if r.failures().is_empty() { "met" } else { "NOT MET" };
            format!(
                "{verdict:<13} {:<13} crash: {} kills, {} acknowledged PUTs, {} read back identical, {} mismatched, \
                 {} unreadable, {} corrupt log lines",
                "multi-process",
                r.kills,
                r.acknowledged,
                r.verified,
                r.mismatches,
                r.unreadable,
                r.corrupt_log_lines.len()
            )
        }
        CrashOutcome::Skipped(why) => format!("skipped       {:<13} crash: {}", "multi-process", one_line(why)),
        CrashOutcome::Failed(why) => format!("FAILED        {:<13} crash: {}", "multi-process", one_line(why)),
    }
}

/// Text for one Markdown line: newlines become spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
