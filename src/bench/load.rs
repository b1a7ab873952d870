//! The timed phase of a run: `concurrency` workers issue requests back to back until
//! the deadline, each keeping its own tally, merged when all have stopped.
//!
//! Workers are tasks owned by one [`JoinSet`] (dropping the run aborts them). At the
//! deadline no new request starts; one in flight may finish within the grace period,
//! after which it is abandoned and counted as an error. So the phase always ends by
//! deadline + grace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::{Endpoint, OpError};
use super::latency::micros;
use super::payload::Payload;
use super::{missing_name, object_name, Op, MIXED_GET_PERCENT};

/// How many error messages each tally keeps; the rest are only counted.
pub(crate) const KEPT_ERRORS: usize = 5;
/// A worker pauses after a failed request, from this long…
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// …doubling up to this long while requests keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What every worker shares.
pub(crate) struct Shared {
    pub endpoint: Endpoint,
    pub prefix: String,
    pub payload: Payload,
    /// Makes tags differ between runs that use the same prefix.
    pub nonce: u64,
    /// The next object number to write; every number below it was attempted.
    pub next_seq: AtomicU64,
    pub timeout: Duration,
}

impl Shared {
    /// Claims a fresh object number.
    pub fn claim_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The numbers attempted so far: `0..attempted()`.
    pub fn attempted(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    /// The body tag of object `seq`.
    pub fn tag(&self, seq: u64) -> u128 {
        (u128::from(self.nonce) << 64) | u128::from(seq)
    }

    /// Writes object `seq`, giving up at `limit`.
    pub async fn put_seq(&self, seq: u64, limit: Limit) -> Result<u64, OpError> {
        let name = object_name(&self.prefix, seq);
        limit.apply(self.endpoint.put(&name, &self.payload, self.tag(seq))).await
    }
}

/// When one request is given up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limit {
    at: Instant,
    /// What giving up at `at` means.
    cause: Expiry,
}

#[derive(Clone, Copy, Debug)]
enum Expiry {
    /// The per-request timeout, this long, ran out.
    Timeout(Duration),
    /// The grace period, this long, after the run's deadline ran out.
    RunEnded(Duration),
}

impl Limit {
    /// Starting now: the request timeout, or the run's hard end if that is sooner.
    pub fn new(timeout: Duration, hard_end: Option<(Instant, Duration)>) -> Limit {
        let timed_out = Limit { at: Instant::now() + timeout, cause: Expiry::Timeout(timeout) };
        match hard_end {
            Some((end, grace)) if end < timed_out.at => Limit { at: end, cause: Expiry::RunEnded(grace) },
            _ => timed_out,
        }
    }

    pub async fn apply<T>(self, request: impl std::future::Future<Output = Result<T, OpError>>) -> Result<T, OpError> {
        match tokio::time::timeout_at(self.at, request).await {
            Ok(result) => result,
            Err(_) => Err(match self.cause {
                Expiry::Timeout(d) => OpError::TimedOut(d),
                Expiry::RunEnded(d) => OpError::Unfinished(d),
            }),
        }
    }
}

/// One kind of request as it went: latencies of the successes, bytes moved, errors.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub latencies_us: Vec<u32>,
    pub bytes: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
}

impl Tally {
    /// Counts a success; `true`.
    fn success(&mut self, latency: Duration, bytes: u64) -> bool {
        self.latencies_us.push(micros(latency));
        self.bytes += bytes;
        true
    }

    /// Counts a failure, keeping its message while fewer than [`KEPT_ERRORS`] are;
    /// `false`.
    pub fn failure(&mut self, message: impl FnOnce() -> String) -> bool {
        self.errors += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(message());
        }
        false
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.bytes += other.bytes;
        self.errors += other.errors;
        let room = KEPT_ERRORS.saturating_sub(self.first_errors.len());
        self.first_errors.extend(other.first_errors.into_iter().take(room));
    }
}

/// The GET and PUT tallies of a worker, or of all of them.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    pub get: Tally,
    pub put: Tally,
}

/// When and how the timed phase runs.
pub(crate) struct Schedule {
    pub op: Op,
    pub concurrency: u32,
    /// GETs pick among objects `0..prepared`.
    pub prepared: u64,
    pub duration: Duration,
    pub grace: Duration,
    /// Ends the phase early (Ctrl-C), like reaching the deadline.
    pub stop: CancellationToken,
}

/// Runs the timed phase; the merged tallies and how long it took (until the last
/// worker stopped).
pub(crate) async fn run_load(shared: &Arc<Shared>, schedule: &Schedule) -> (Tallies, Duration) {
    let started = Instant::now();
    let deadline = started + schedule.duration;
    let hard_end = deadline + schedule.grace;
    let mut workers = JoinSet::new();
    for _ in 0..schedule.concurrency {
        let worker = Worker {
            shared: Arc::clone(shared),
            op: schedule.op,
            prepared: schedule.prepared,
            deadline,
            hard_end: (hard_end, schedule.grace),
            stop: schedule.stop.clone(),
            rng: SmallRng::from_rng(&mut rand::rng()),
        };
        workers.spawn(worker.run());
    }
    let mut all = Tallies::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(t) => {
                all.get.merge(t.get);
                all.put.merge(t.put);
            }
            // A worker panicked: never expected, never hidden.
            Err(e) => {
                all.get.failure(|| format!("worker task failed: {e}"));
            }
        }
    }
    (all, started.elapsed())
}

/// What one request of a worker does.
enum Request {
    /// Reads a prepared object.
    Get,
    /// Reads a name never written, expecting 404.
    GetMissing,
    /// Writes a new object.
    Put,
}

struct Worker {
    shared: Arc<Shared>,
    op: Op,
    prepared: u64,
    deadline: Instant,
    hard_end: (Instant, Duration),
    stop: CancellationToken,
    rng: SmallRng,
}

impl Worker {
    async fn run(mut self) -> Tallies {
        let mut tallies = Tallies::default();
        let mut backoff = Duration::ZERO;
        while Instant::now() < self.deadline && !self.stop.is_cancelled() {
            let request = match self.op {
                Op::Get => Request::Get,
                Op::GetMissing => Request::GetMissing,
                Op::Put => Request::Put,
                Op::Mixed if self.rng.random_range(0..100u32) < MIXED_GET_PERCENT => Request::Get,
                Op::Mixed => Request::Put,
            };
            let started = Instant::now();
            let limit = Limit::new(self.shared.timeout, Some(self.hard_end));
            let ok = match request {
                Request::Get => {
                    // prepared is never 0 for get and mixed; max(1) only keeps a bug from panicking.
                    let seq = self.rng.random_range(0..self.prepared.max(1));
                    let name = object_name(&self.shared.prefix, seq);
                    let size = self.shared.payload.size();
                    match limit.apply(self.shared.endpoint.get(&name, size)).await {
                        Ok(bytes) => tallies.get.success(started.elapsed(), bytes),
                        Err(e) => tallies.get.failure(|| format!("GET {name}: {e}")),
                    }
                }
                Request::GetMissing => {
                    let name = missing_name(&self.shared.prefix, self.rng.random());
                    match limit.apply(self.shared.endpoint.get_missing(&name)).await {
                        Ok(bytes) => tallies.get.success(started.elapsed(), bytes),
                        Err(e) => tallies.get.failure(|| format!("GET {name}: {e}")),
                    }
                }
                Request::Put => {
                    let seq = self.shared.claim_seq();
                    match self.shared.put_seq(seq, limit).await {
                        Ok(bytes) => tallies.put.success(started.elapsed(), bytes),
                        Err(e) => tallies.put.failure(|| format!("PUT {}: {e}", object_name(&self.shared.prefix, seq))),
                    }
                }
            };
            if ok {
                backoff = Duration::ZERO;
            } else {
                // A refused connection fails in microseconds: without a pause a dead
                // server would get a tight loop of requests (and the cleanup a
                // mountain of names that were never written).
                backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep_until((Instant::now() + backoff).min(self.deadline)) => {}
                    _ = self.stop.cancelled() => {}
                }
            }
        }
        tallies
    }
}
