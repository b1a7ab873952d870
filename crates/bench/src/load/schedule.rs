//! The timed phase of a run: `concurrency` workers issue requests back to back until
//! the deadline, each keeping its own tally, merged when all have stopped.
//!
//! Workers are tasks owned by one [`JoinSet`] (dropping the run aborts them). At the
//! deadline no new request starts; one in flight may finish within the grace period,
//! after which it is abandoned and counted as an error. So the phase always ends by
//! deadline + grace.
//!
//! A fill has no deadline: its workers share a [`Quota`] of objects still to be
//! acknowledged and stop when it is used up.

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
    /// The bytes of every object, made for the largest size.
    pub payload: Payload,
    /// The smallest object size; the largest is the payload's.
    pub size_min: u64,
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

    /// The size of object `seq`: drawn uniformly from `[size_min, payload size]`
    /// by a hash of the run's nonce and `seq`, so every request for it agrees.
    pub fn size_of(&self, seq: u64) -> u64 {
        let max = self.payload.size();
        if self.size_min >= max {
            return max;
        }
        match (max - self.size_min).checked_add(1) {
            Some(span) => self.size_min + mix(self.nonce ^ seq) % span,
            // [0, u64::MAX]: every value is in range.
            None => mix(self.nonce ^ seq),
        }
    }

    /// Writes object `seq`, giving up at `limit`.
    pub async fn put_seq(&self, seq: u64, limit: Limit) -> Result<u64, OpError> {
        let name = object_name(&self.prefix, seq);
        let payload = self.payload.resized(self.size_of(seq));
        limit.apply(self.endpoint.put(&name, &payload, self.tag(seq))).await
    }
}

/// SplitMix64's finaliser: consecutive numbers give unrelated ones.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The objects a fill still has to get acknowledged, shared by its workers.
///
/// A worker takes one before each PUT; an acknowledged PUT uses it up, a failed one
/// gives it back, so exactly `count` are acknowledged in the end (unless the fill
/// is stopped or gives up after `max_errors` failures).
#[derive(Debug)]
pub(crate) struct Quota {
    count: u64,
    /// Neither acknowledged nor being written.
    left: AtomicU64,
    acknowledged: AtomicU64,
    errors: AtomicU64,
    max_errors: u64,
}

impl Quota {
    pub fn new(count: u64, max_errors: u64) -> Quota {
        Quota {
            count,
            left: AtomicU64::new(count),
            acknowledged: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_errors,
        }
    }

    /// Takes one object to write; `false` when all are acknowledged or being
    /// written, or too many PUTs have failed.
    pub fn take(&self) -> bool {
        if self.errors.load(Ordering::Relaxed) >= self.max_errors {
            return false;
        }
        self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// The object taken was acknowledged; logs progress at every tenth of a large fill.
    pub fn acknowledged(&self) {
        let done = self.acknowledged.fetch_add(1, Ordering::Relaxed) + 1;
        if self.count >= 10_000 && done.is_multiple_of(self.count / 10) {
            tracing::info!(acknowledged = done, of = self.count, "bench: fill progress");
        }
    }

    /// The object taken failed: it is given back for another name.
    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.left.fetch_add(1, Ordering::AcqRel);
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
    /// A fill's objects to acknowledge; with one, `duration` and `grace` do not apply.
    pub quota: Option<Arc<Quota>>,
}

/// Runs the timed phase; the merged tallies and how long it took (until the last
/// worker stopped).
pub(crate) async fn run_load(shared: &Arc<Shared>, schedule: &Schedule) -> (Tallies, Duration) {
    let started = Instant::now();
    let (deadline, hard_end) = match schedule.quota {
        Some(_) => (None, None),
        None => {
            let deadline = started + schedule.duration;
            (Some(deadline), Some((deadline + schedule.grace, schedule.grace)))
        }
    };
    let mut workers = JoinSet::new();
    for _ in 0..schedule.concurrency {
        let worker = Worker {
            shared: Arc::clone(shared),
            op: schedule.op,
            prepared: schedule.prepared,
            deadline,
            hard_end,
            quota: schedule.quota.clone(),
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
    /// No new request from then on; `None` for a fill.
    deadline: Option<Instant>,
    /// Requests in flight are given up then (and how long after the deadline that is).
    hard_end: Option<(Instant, Duration)>,
    quota: Option<Arc<Quota>>,
    stop: CancellationToken,
    rng: SmallRng,
}

impl Worker {
    async fn run(mut self) -> Tallies {
        let mut tallies = Tallies::default();
        let mut backoff = Duration::ZERO;
        while !self.stop.is_cancelled() {
            let go_on = match (&self.quota, self.deadline) {
                (Some(quota), _) => quota.take(),
                (None, Some(deadline)) => Instant::now() < deadline,
                (None, None) => false,
            };
            if !go_on {
                break;
            }
            let request = match self.op {
                Op::Get => Request::Get,
                Op::GetMissing => Request::GetMissing,
                Op::Put | Op::Fill => Request::Put,
                Op::Mixed if self.rng.random_range(0..100u32) < MIXED_GET_PERCENT => Request::Get,
                Op::Mixed => Request::Put,
            };
            let started = Instant::now();
            let limit = Limit::new(self.shared.timeout, self.hard_end);
            let ok = match request {
                Request::Get => {
                    // prepared is never 0 for get and mixed; max(1) only keeps a bug from panicking.
                    let seq = self.rng.random_range(0..self.prepared.max(1));
                    let name = object_name(&self.shared.prefix, seq);
                    let size = self.shared.size_of(seq);
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
            if let Some(quota) = &self.quota {
                if ok {
                    quota.acknowledged();
                } else {
                    quota.failed();
                }
            }
            if ok {
                backoff = Duration::ZERO;
            } else {
                // A refused connection fails in microseconds: without a pause a dead
                // server would get a tight loop of requests (and the cleanup a
                // mountain of names that were never written).
                backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep_until(self.deadline.map_or(Instant::now() + backoff, |d| d.min(Instant::now() + backoff))) => {}
                    _ = self.stop.cancelled() => {}
                }
            }
        }
        tallies
    }
}
