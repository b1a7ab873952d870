//! Background workers: the one shape every maintenance job has, on the API servers
//! (retention, garbage collection, re-protection, scrub findings) and on the data
//! servers (the scrubber).
//!
//! A [`Worker`] does its job as a sequence of bounded, uninterruptible steps; the
//! runner ([`Workers::spawn`]) calls them in a loop, and between two steps honours
//! pause, resume, a trigger ("run now") and cancellation. A step says whether there
//! is more to do at once ([`Step::Busy`]) or the worker is caught up
//! ([`Step::Idle`]: the runner waits for the worker's interval or a trigger). A step
//! that fails is counted, its error kept for the status, and retried after a backoff
//! that doubles up to the interval; a worker never dies of an error. Each worker
//! reports its state, progress and worker-specific figures through a [`Report`],
//! which [`WorkerHandle::status`] reads for `/admin/status`, and the runner keeps
//! the `cairn_worker_*` metrics. Progress that must survive a restart is the
//! worker's own business (a checkpoint in the metadata store, say); the runner
//! holds nothing durable.
//!
//! [`RateLimit`] is the shared pacing of byte-heavy workers (scrubbing, rebuilding):
//! a steady rate with a small burst, so background work stays below a configured
//! share of the disk and the network.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::telemetry::{self, Scope};

/// What a step of work found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is more to do now: the next step runs at once.
    Busy,
    /// Caught up: the next step runs after the worker's interval, or when triggered.
    Idle,
}

/// Why a step failed: any error, shown in the worker's status as text.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

/// A background job, done in bounded steps.
#[async_trait]
pub trait Worker: Send + 'static {
    /// The worker's name in status and metrics (`gc`, `scrub`, …).
    fn name(&self) -> &'static str;

    /// One bounded step of work. It is not interrupted: pause and cancellation take
    /// effect between steps, so a step must finish in bounded time (seconds).
    async fn step(&mut self, report: &Report) -> Result<Step, StepError>;

    /// How long the runner waits after an idle step before the next one (a trigger
    /// cuts the wait short). Also the longest backoff after errors.
    fn interval(&self) -> Duration;
}

/// A worker's state, as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Running steps.
    Busy,
    /// Caught up, waiting for its interval or a trigger.
    Idle,
    /// Paused by an operator; resumes on [`WorkerHandle::resume`].
    Paused,
    /// Waiting after a failed step.
    Backoff,
    /// Stopped (shutdown).
    Stopped,
}

impl WorkerState {
    /// Every state, for the state gauge.
    pub const ALL: [WorkerState; 5] =
        [WorkerState::Busy, WorkerState::Idle, WorkerState::Paused, WorkerState::Backoff, WorkerState::Stopped];

    /// The state's name in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Busy => "busy",
            WorkerState::Idle => "idle",
            WorkerState::Paused => "paused",
            WorkerState::Backoff => "backoff",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// What a worker reports about itself.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerStatus {
    /// The worker's name.
    pub name: &'static str,
    /// Its state now.
    pub state: WorkerState,
    /// Items done in the current pass and the pass's total when known (a scrub
    /// pass: shards; a re-protection: contents).
    pub progress: Option<Progress>,
    /// Items waiting (a queue depth), when the worker has a queue.
    pub queued: u64,
    /// Steps run since start.
    pub steps: u64,
    /// Steps that failed since start.
    pub errors: u64,
    /// The last error, with when it happened (ms since the Unix epoch).
    pub last_error: Option<(i64, String)>,
    /// Worker-specific figures (counts of what it did), as JSON.
    pub info: serde_json::Value,
}

/// Progress of a pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Done so far in this pass.
    pub done: u64,
    /// The pass's size, when known.
    pub total: Option<u64>,
}

/// Where a worker writes its progress and figures; cheap to clone.
#[derive(Clone)]
pub struct Report {
    inner: Arc<Shared>,
}

impl Report {
    /// Sets the current pass's progress (`None`: no pass running).
    pub fn progress(&self, progress: Option<Progress>) {
        self.inner.lock().progress = progress;
    }

    /// Sets the queue depth.
    pub fn queued(&self, queued: u64) {
        self.inner.lock().queued = queued;
        self.inner
            .scope
            .gauge_with(telemetry::WORKER_QUEUE_DEPTH, telemetry::WORKER_LABEL, self.inner.name)
            .set(queued as f64);
    }

    /// Replaces the worker-specific figures.
    pub fn info(&self, info: serde_json::Value) {
        self.inner.lock().info = info;
    }
}

struct Shared {
    name: &'static str,
    scope: Scope,
    status: Mutex<WorkerStatus>,
    paused: std::sync::atomic::AtomicBool,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WorkerStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, state: WorkerState) {
        self.lock().state = state;
        self.record_state(state);
    }

    /// `cairn_worker_state{worker, state}`: 1 for the state the worker is in.
    fn record_state(&self, now: WorkerState) {
        for state in WorkerState::ALL {
            let gauge = metrics::gauge!(
                telemetry::WORKER_STATE,
                "role" => self.scope.role().as_str(),
                "server" => self.scope.server().to_string(),
                telemetry::WORKER_LABEL => self.name,
                telemetry::STATE_LABEL => state.as_str(),
            );
            gauge.set(if state == now { 1.0 } else { 0.0 });
        }
    }
}

/// An operator's handle on a running worker; cheap to clone.
#[derive(Clone)]
pub struct WorkerHandle {
    inner: Arc<Shared>,
}

impl WorkerHandle {
    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The worker's status now.
    pub fn status(&self) -> WorkerStatus {
        self.inner.lock().clone()
    }

    /// Where the worker's progress and figures go, for work it does outside its
    /// steps (tasks a step started, requests queued for it).
    pub fn report(&self) -> Report {
        Report { inner: self.inner.clone() }
    }

    /// Runs the next step now instead of after the interval (or the backoff).
    pub fn trigger(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops running steps after the current one, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.inner.paused.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume(&self) {
        self.inner.paused.store(false, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
    }
}

/// The workers of one server: spawns them on its task tracker, stops them on its
/// shutdown token, and lists them for status. Cheap to clone.
#[derive(Clone)]
pub struct Workers {
    handles: Arc<Mutex<Vec<WorkerHandle>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    scope: Scope,
}

/// The first backoff after a failed step; it doubles up to the worker's interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

impl Workers {
    /// Workers owned by `tasks`, stopped when `shutdown` is cancelled, their
    /// metrics labelled with `scope`'s server.
    pub fn new(tasks: TaskTracker, shutdown: CancellationToken, scope: Scope) -> Self {
        Workers { handles: Arc::default(), tasks, shutdown, scope }
    }

    /// Starts `worker`; its first step runs at once.
    pub fn spawn<W: Worker>(&self, worker: W) -> WorkerHandle {
        let name = worker.name();
        let inner = Arc::new(Shared {
            name,
            scope: self.scope.clone(),
            status: Mutex::new(WorkerStatus {
                name,
                state: WorkerState::Idle,
                progress: None,
                queued: 0,
                steps: 0,
                errors: 0,
                last_error: None,
                info: serde_json::Value::Null,
            }),
            paused: Default::default(),
            wake: Notify::new(),
        });
        let handle = WorkerHandle { inner: inner.clone() };
        self.handles.lock().unwrap_or_else(|p| p.into_inner()).push(handle.clone());
        self.tasks.spawn(run(worker, inner, self.shutdown.clone()));
        handle
    }

    /// Every worker's status, in the order they were started.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner()).iter().map(WorkerHandle::status).collect()
    }

    /// Waits (at most `grace`) for every worker to stop once the shutdown token is
    /// cancelled; a step still running then is dropped.
    pub async fn stopped(&self, grace: Duration) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(workers = self.tasks.len(), "workers still running at shutdown; dropping them");
        }
    }

    /// The worker called `name`.
    pub fn get(&self, name: &str) -> Option<WorkerHandle> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|h| h.name() == name).cloned()
    }
}

async fn run<W: Worker>(mut worker: W, shared: Arc<Shared>, shutdown: CancellationToken) {
    let report = Report { inner: shared.clone() };
    let name = shared.name;
    let mut backoff = FIRST_BACKOFF;
    while !shutdown.is_cancelled() {
        if shared.paused.load(std::sync::atomic::Ordering::SeqCst) {
            shared.set_state(WorkerState::Paused);
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        shared.set_state(WorkerState::Busy);
        let outcome = worker.step(&report).await;
        shared.scope.counter_with(telemetry::WORKER_STEPS, telemetry::WORKER_LABEL, name).increment(1);
        let wait = {
            let mut status = shared.lock();
            status.steps += 1;
            match outcome {
                Ok(Step::Busy) => {
                    backoff = FIRST_BACKOFF;
                    None
                }
                Ok(Step::Idle) => {
                    backoff = FIRST_BACKOFF;
                    status.state = WorkerState::Idle;
                    shared.record_state(WorkerState::Idle);
                    Some(worker.interval())
                }
                Err(e) => {
                    shared.scope.counter_with(telemetry::WORKER_ERRORS, telemetry::WORKER_LABEL, name).increment(1);
                    tracing::warn!(worker = name, error = %crate::report::error_chain(&*e), "worker step failed; backing off");
                    status.errors += 1;
                    status.last_error = Some((now_ms(), crate::report::error_chain(&*e)));
                    status.state = WorkerState::Backoff;
                    shared.record_state(WorkerState::Backoff);
                    let wait = backoff.min(worker.interval());
                    backoff = (backoff * 2).min(worker.interval().max(FIRST_BACKOFF));
                    Some(wait)
                }
            }
        };
        match wait {
            None => tokio::task::yield_now().await,
            Some(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.wake.notified() => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    shared.set_state(WorkerState::Stopped);
}

/// Paces byte-heavy background work to `bytes_per_second`, with a burst of one
/// second's worth; `0` means unlimited. Shared by the tasks of one worker.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: u64,
    /// When the work done so far is paid for at the configured rate.
    paid_until: Mutex<Instant>,
}

impl RateLimit {
    /// A limit of `bytes_per_second` (0: none).
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimit { bytes_per_second, paid_until: Mutex::new(Instant::now()) }
    }

    /// The configured rate (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.bytes_per_second
    }

    /// Accounts for `bytes` of work and waits as long as the rate asks.
    pub async fn take(&self, bytes: u64) {
        if let Some(wait) = self.reserve(bytes, Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Books `bytes` at `now` and returns how long to wait before doing them.
    fn reserve(&self, bytes: u64, now: Instant) -> Option<Duration> {
        if self.bytes_per_second == 0 {
            return None;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        let mut paid = self.paid_until.lock().unwrap_or_else(|p| p.into_inner());
        // Idle time builds up at most one second of credit (the burst).
        let start = (*paid).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
        *paid = start + cost;
        paid.checked_duration_since(now + Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    struct Counting {
        steps: Arc<AtomicU64>,
        fail_every: u64,
        busy_until: u64,
    }

    #[async_trait]
    impl Worker for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
            report.progress(Some(Progress { done: n, total: None }));
            if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
                return Err("planned failure".into());
            }
            Ok(if n < self.busy_until { Step::Busy } else { Step::Idle })
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    fn test_scope() -> Scope {
        Scope::new(crate::telemetry::Role::Api, "worker-tests")
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_busy_worker_runs_until_idle_then_waits_for_a_trigger() {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let workers = Workers::new(tasks.clone(), shutdown.clone(), test_scope());
        let steps = Arc::new(AtomicU64::new(0));
        let handle = workers.spawn(Counting { steps: steps.clone(), fail_every: 0, busy_until: 5 });
        eventually("five steps", || steps.load(Ordering::SeqCst) == 5).await;
        eventually("idle", || handle.status().state == WorkerState::Idle).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 5, "an idle worker waits for its interval");
        handle.trigger();
        eventually("a triggered step", || steps.load(Ordering::SeqCst) == 6).await;
        assert_eq!(workers.statuses()[0].progress, Some(Progress { done: 6, total: None }));
        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("worker stops on cancel");
        assert_eq!(handle.status().state, WorkerState::Stopped);
    }

    #[tokio::test]
    async fn a_paused_worker_runs_no_step_until_resumed() {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let workers = Workers::new(tasks.clone(), shutdown.clone(), test_scope());
        let steps = Arc::new(AtomicU64::new(0));
        let handle = workers.spawn(Counting { steps: steps.clone(), fail_every: 0, busy_until: u64::MAX });
        handle.pause();
        eventually("paused", || handle.status().state == WorkerState::Paused).await;
        let at_pause = steps.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(steps.load(Ordering::SeqCst), at_pause);
        handle.resume();
        eventually("steps again", || steps.load(Ordering::SeqCst) > at_pause + 10).await;
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_failing_step_is_counted_and_retried_after_a_backoff() {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let workers = Workers::new(tasks.clone(), shutdown.clone(), test_scope());
        let steps = Arc::new(AtomicU64::new(0));
        let handle = workers.spawn(Counting { steps: steps.clone(), fail_every: 2, busy_until: u64::MAX });
        eventually("a failure", || handle.status().errors == 1).await;
        let status = handle.status();
        assert_eq!(status.state, WorkerState::Backoff);
        assert!(status.last_error.as_ref().is_some_and(|(_, e)| e == "planned failure"), "{status:?}");
        // The backoff (500 ms) has not passed: no third step yet.
        assert_eq!(steps.load(Ordering::SeqCst), 2);
        eventually("the retry", || steps.load(Ordering::SeqCst) >= 3).await;
        shutdown.cancel();
    }

    #[test]
    fn the_rate_limit_allows_a_second_of_burst_then_paces() {
        let limit = RateLimit::new(1000);
        let now = Instant::now();
        assert_eq!(limit.reserve(1000, now), None, "one second's worth is the burst");
        let wait = limit.reserve(500, now).expect("past the burst it waits");
        assert!(wait >= Duration::from_millis(490) && wait <= Duration::from_millis(510), "{wait:?}");
        assert_eq!(RateLimit::new(0).reserve(u64::MAX, now), None, "0 is unlimited");
    }
}
