//! Repair: rebuild the shards of a piece of content that no live data server holds
//! any more, onto live data servers that hold none of its shards, through the same
//! upload-to-quorum piece as writes ([`super::uploads`]), and record the new
//! placement.
//!
//! Repair is a [`Worker`] of the shared shape ([`Repairer`], called `repair`, with
//! status, pause and trigger on `/admin/status` and `/admin/workers/repair/…`) fed
//! by a queue: reads that had to route around a shard, writes that stored fewer
//! than all shards, and reads whose bytes did not match their hash enqueue the
//! content ([`ObjectService::schedule_repair`]), which wakes the worker. Each step
//! starts one repair when one of [`REPAIR_CONCURRENCY`] slots is free, so up to that
//! many run at a time, at most one per content, on the object service's task
//! tracker; the queue and last error are reported ([`RepairStatus`], on `/healthz`
//! and as the worker's figures). The queue is bounded ([`MAX_QUEUED`]): past it new
//! requests are dropped with a warning (a later read asks again). The shards still held are found by asking the bus, so a
//! shard that is merely slow is not rebuilt, and a corrupt one (which its data
//! server moved aside) is. What is rebuilt is verified against the content's
//! SHA-256 before any rebuilt shard is committed, so a repair never copies wrong
//! bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::hashing::PipedHasher;
use super::uploads::ShardUploads;
use super::{ObjectError, ObjectService};
use crate::cluster::{self, choose_servers, LiveServer};
use crate::codec::{Layout, StripeEncoder};
use crate::content::{ContentHash, Placement, ShardIndex};
use crate::meta::ContentRecord;
use crate::worker::{Report, Step, StepError, Worker, WorkerHandle, Workers};

/// How long after a failed repair of a content the next one may start.
pub const REPAIR_COOLDOWN: Duration = Duration::from_secs(5);
/// Repairs running at once in one API server: each reads k shards and writes the
/// missing ones, so a few keep a degraded cluster busy without starving clients.
pub const REPAIR_CONCURRENCY: usize = 2;
/// Contents waiting for repair at most; past it, requests are dropped.
pub const MAX_QUEUED: usize = 10_000;
/// The repair worker's name in status, metrics and the admin routes.
pub const NAME: &str = "repair";
/// How long an idle repair worker waits before looking at its queue again; every
/// request wakes it at once, so this only bounds a missed wake-up.
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// What the repair worker is doing, for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepairStatus {
    /// Contents waiting.
    pub queued: usize,
    /// Repairs running now.
    pub running: usize,
    /// Repairs that finished (including ones that found nothing missing).
    pub done: u64,
    /// Repairs that failed.
    pub failed: u64,
    /// Requests dropped because the queue was full.
    pub dropped: u64,
    /// The last failure, with its content hash.
    pub last_error: Option<String>,
}

/// The repair worker's queue and books. Cheap to clone.
#[derive(Clone, Default)]
pub struct RepairQueue {
    inner: Arc<Mutex<QueueState>>,
    /// The worker that drains the queue, woken by every request; set once it runs.
    worker: Arc<OnceLock<WorkerHandle>>,
}

#[derive(Default)]
struct QueueState {
    /// Contents waiting, each with whether its shards must be verified too.
    waiting: VecDeque<(ContentRecord, bool)>,
    /// Content queued or running (`None`), or whose repair failed recently (when).
    known: HashMap<ContentHash, Option<Instant>>,
    status: RepairStatus,
}

impl RepairQueue {
    /// The worker's status now.
    pub fn status(&self) -> RepairStatus {
        let state = self.inner.lock().expect("repair queue lock");
        RepairStatus { queued: state.waiting.len(), ..state.status.clone() }
    }

    /// Queues `content` (to be `verify`-ed too) unless it is queued, running,
    /// recently failed, or the queue is full. Returns whether it was queued.
    fn push(&self, content: ContentRecord, verify: bool) -> bool {
        let mut state = self.inner.lock().expect("repair queue lock");
        let now = Instant::now();
        state.known.retain(|_, failed| failed.is_none_or(|t| now.duration_since(t) < REPAIR_COOLDOWN));
        if state.known.contains_key(&content.hash) {
            // Already waiting: make sure it is verified if that is asked for now.
            if let Some(entry) = state.waiting.iter_mut().find(|(c, _)| c.hash == content.hash) {
                entry.1 |= verify;
            }
            return false;
        }
        if state.waiting.len() >= MAX_QUEUED {
            state.status.dropped += 1;
            drop(state);
            tracing::warn!(hash = %content.hash, "repair queue full; dropping the request (a later read asks again)");
            self.publish();
            return false;
        }
        state.known.insert(content.hash, None);
        state.waiting.push_back((content, verify));
        drop(state);
        self.publish();
        if let Some(worker) = self.worker.get() {
            worker.trigger();
        }
        true
    }

    /// Has every later request wake `worker`, and wakes it now for what is queued.
    fn attach(&self, worker: WorkerHandle) {
        let _ = self.worker.set(worker);
        self.publish();
        if let Some(worker) = self.worker.get() {
            worker.trigger();
        }
    }

    /// Copies the books into the worker's status (queue depth and figures).
    fn publish(&self) {
        let Some(worker) = self.worker.get() else { return };
        let status = self.status();
        let report = worker.report();
        report.queued(status.queued as u64);
        report.info(serde_json::to_value(&status).unwrap_or_default());
    }

    fn pop(&self) -> Option<(ContentRecord, bool)> {
        let mut state = self.inner.lock().expect("repair queue lock");
        let next = state.waiting.pop_front()?;
        state.status.running += 1;
        drop(state);
        self.publish();
        Some(next)
    }

    fn done(&self, hash: ContentHash, result: &Result<Vec<ShardIndex>, ObjectError>) {
        let mut state = self.inner.lock().expect("repair queue lock");
        state.status.running -= 1;
        match result {
            Ok(_) => {
                // A complete repair needs no cooldown: the next loss may come any time.
                state.known.remove(&hash);
                state.status.done += 1;
            }
            Err(e) => {
                state.known.insert(hash, Some(Instant::now()));
                state.status.failed += 1;
                state.status.last_error = Some(format!("{hash}: {e}"));
            }
        }
        drop(state);
        self.publish();
    }
}

/// The repair worker: each step waits for one of [`REPAIR_CONCURRENCY`] slots,
/// takes a content off the queue and starts its repair on the object service's
/// task tracker. The step itself is short (bounded by the repair holding the slot,
/// which the deadlines of its locate and uploads bound); pause and trigger act
/// between steps, and a repair already started runs to its end (or shutdown).
pub struct Repairer {
    svc: ObjectService,
    slots: Arc<Semaphore>,
}

impl Repairer {
    /// The worker that repairs what `svc` queues.
    pub fn new(svc: ObjectService) -> Self {
        Repairer { svc, slots: Arc::new(Semaphore::new(REPAIR_CONCURRENCY)) }
    }
}

#[async_trait]
impl Worker for Repairer {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn step(&mut self, _: &Report) -> Result<Step, StepError> {
        let svc = &self.svc;
        // A slot first, so that a content stays queued (and counted so) until a
        // repair can take it.
        let permit = tokio::select! {
            _ = svc.shutdown.cancelled() => return Ok(Step::Idle),
            p = self.slots.clone().acquire_owned() => p?,
        };
        let Some((content, verify)) = svc.repairs.pop() else {
            return Ok(Step::Idle);
        };
        let worker = svc.clone();
        svc.tasks.spawn(async move {
            let result = tokio::select! {
                r = worker.repair_with(&content, verify) => r,
                _ = worker.shutdown.cancelled() => Err(ObjectError::Unavailable {
                    hash: content.hash,
                    reasons: "shutting down".into(),
                }),
            };
            match &result {
                Ok(rebuilt) if !rebuilt.is_empty() => {
                    tracing::info!(hash = %content.hash, shards = ?rebuilt, "repaired lost shards")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(hash = %content.hash, error = %e, "repair failed; a later read retries"),
            }
            worker.repairs.done(content.hash, &result);
            drop(permit);
        });
        Ok(if svc.repairs.status().queued > 0 { Step::Busy } else { Step::Idle })
    }

    fn interval(&self) -> Duration {
        IDLE_RECHECK
    }
}

impl ObjectService {
    /// Starts the repair worker on `workers` (the API server's, so that it shows
    /// and is paused with the others); until then requests only queue up.
    pub fn start_repair(&self, workers: &Workers) -> WorkerHandle {
        let handle = workers.spawn(Repairer::new(self.clone()));
        self.repairs.attach(handle.clone());
        handle
    }

    /// Has whatever shards of `content` are missing rebuilt in the background. At
    /// most one repair of a content is queued or runs at a time, and none starts
    /// within [`REPAIR_COOLDOWN`] of a failed one, so a read-heavy object on a
    /// degraded cluster does not cost a locate per read.
    pub fn schedule_repair(&self, content: ContentRecord) {
        self.repairs.push(content, false);
    }

    /// Like [`schedule_repair`](ObjectService::schedule_repair), and checks that
    /// the shards still held read back as the content, setting aside the one that
    /// does not: for content a read found not matching its hash.
    pub fn schedule_verify(&self, content: ContentRecord) {
        self.repairs.push(content, true);
    }

    /// Where each missing shard is rebuilt: on the live server that held it before
    /// when it holds no other shard of the content (a shard lost to corruption goes
    /// back where it was, keeping every shard on its own server); otherwise on a live
    /// server holding no shard of the content (weighted by free space); and when
    /// there are too few of those, on the live servers holding the fewest, so that a
    /// shrunken cluster still gets its redundancy back against corruption, if not
    /// against the loss of a server.
    fn repair_targets(
        &self,
        content: &ContentRecord,
        holders: &cluster::Holders,
        missing: &[ShardIndex],
    ) -> Vec<(ShardIndex, String)> {
        let mut load: HashMap<String, usize> = HashMap::new();
        for addrs in holders.values() {
            for a in addrs {
                *load.entry(a.clone()).or_default() += 1;
            }
        }
        let mut targets = Vec::new();
        let mut rest = Vec::new();
        for shard in missing {
            match content.placement.get(shard) {
                Some(addr) if self.membership.is_live(addr) && !load.contains_key(addr) => {
                    load.insert(addr.clone(), 1);
                    targets.push((*shard, addr.clone()));
                }
                _ => rest.push(*shard),
            }
        }
        let live = self.membership.live();
        let spare: Vec<LiveServer> = live.iter().filter(|s| !load.contains_key(&s.addr)).cloned().collect();
        let chosen = choose_servers(&spare, rest.len().min(spare.len())).unwrap_or_default();
        let mut rest = rest.into_iter();
        for addr in chosen {
            if let Some(shard) = rest.next() {
                *load.entry(addr.clone()).or_default() += 1;
                targets.push((shard, addr));
            }
        }
        for shard in rest {
            let Some(least) =
                live.iter().min_by_key(|s| (load.get(&s.addr).copied().unwrap_or(0), std::cmp::Reverse(s.free)))
            else {
                break;
            };
            *load.entry(least.addr.clone()).or_default() += 1;
            targets.push((shard, least.addr.clone()));
        }
        targets
    }

    /// Rebuilds the shards of `content` no live data server holds; returns their
    /// indices (empty when nothing was missing). The content is read from k of the
    /// shards still held, checked against its hash, re-encoded, and only the missing
    /// shards are written.
    pub async fn repair(&self, content: &ContentRecord) -> Result<Vec<ShardIndex>, ObjectError> {
        self.repair_with(content, false).await
    }

    /// [`repair`](ObjectService::repair); with `verify`, first reads the content
    /// back from the shards held and, when it does not hash right, finds the one
    /// shard without which it does, has it moved aside and rebuilds it.
    pub async fn repair_with(&self, content: &ContentRecord, verify: bool) -> Result<Vec<ShardIndex>, ObjectError> {
        let policy = content.policy;
        let n = policy.shards();
        let holders = self.holders(content).await?;
        let mut placement = Placement::new();
        for (shard, addrs) in &holders {
            if let Some(addr) = addrs.iter().find(|a| self.membership.is_live(a)) {
                if (*shard as usize) < n {
                    placement.insert(*shard, addr.clone());
                }
            }
        }
        let mut missing: Vec<ShardIndex> = (0..n as ShardIndex).filter(|s| !placement.contains_key(s)).collect();
        if verify && placement.len() >= policy.k as usize {
            if let Some((shard, addr)) = self.find_bad_shard(content, &placement).await? {
                self.client.quarantine(&addr, &content.hash, shard).await.map_err(|e| ObjectError::Unavailable {
                    hash: content.hash,
                    reasons: format!("shard {shard} holds wrong bytes and could not be set aside: {e}"),
                })?;
                tracing::warn!(hash = %content.hash, shard, %addr, "shard held wrong bytes; set aside, rebuilding it");
                placement.remove(&shard);
                missing.push(shard);
                missing.sort_unstable();
            }
        }
        if missing.is_empty() {
            if placement != content.placement {
                self.meta.set_placement(&content.hash, &placement).await?;
            }
            return Ok(Vec::new());
        }
        if placement.len() < policy.k as usize {
            return Err(ObjectError::Unavailable {
                hash: content.hash,
                reasons: format!("{} shards found, {} needed to rebuild the others", placement.len(), policy.k),
            });
        }
        let targets = self.repair_targets(content, &holders, &missing);
        if targets.is_empty() {
            return Err(ObjectError::NotEnoughServers { live: self.membership.live().len(), needed: n, policy });
        }
        let wanted = targets.len();
        let mut uploads = ShardUploads::start(&self.client, &self.tasks, policy, 1, targets);
        let layout = Layout::new(policy, content.stored_len());
        let source = ContentRecord { placement: placement.clone(), ..content.clone() };
        let stripes = layout.stripes();
        let mut reader = super::read::StripeReader::new(self, &source, stripes.saturating_sub(1));
        let mut encoder = StripeEncoder::new(layout);
        let mut hasher = PipedHasher::of_stored(content.encoding);
        for s in 0..stripes {
            let data = match reader.stripe(s).await {
                Ok(d) => d,
                Err(e) => {
                    uploads.abort();
                    return Err(e);
                }
            };
            hasher.update(data.clone()).await;
            let blocks = match encoder.encode(data) {
                Ok(b) => b,
                Err(e) => {
                    uploads.abort();
                    return Err(e.into());
                }
            };
            uploads.send(&blocks).await;
            if uploads.alive() == 0 {
                let failures = uploads.take_failures();
                uploads.abort();
                return Err(ObjectError::QuorumNotReached { ok: 0, needed: wanted, failures });
            }
        }
        let actual = hasher.finish().await?;
        if actual != content.hash {
            uploads.abort();
            if !verify {
                self.reject_read(content);
            }
            return Err(ObjectError::ContentMismatch { hash: content.hash, actual });
        }
        let stored = uploads.finish(content.hash, layout.shard_len(), wanted).await;
        for failure in &stored.failures {
            tracing::warn!(%failure, "rebuilt shard not stored");
        }
        let rebuilt: Vec<ShardIndex> = stored.placement.keys().copied().collect();
        self.metrics.shards_repaired.increment(rebuilt.len() as u64);
        placement.extend(stored.placement);
        self.meta.set_placement(&content.hash, &placement).await?;
        Ok(rebuilt)
    }

    /// Reads `content` from exactly the holders in `placement` and says whether it
    /// hashes right, with the holders whose blocks were used.
    async fn reads_back(
        &self,
        content: &ContentRecord,
        placement: &Placement,
    ) -> Result<(ContentHash, Vec<(ShardIndex, String)>), ObjectError> {
        let source = ContentRecord { placement: placement.clone(), ..content.clone() };
        let layout = Layout::new(content.policy, content.stored_len());
        let mut reader = super::read::StripeReader::pinned(self, &source, layout.stripes().saturating_sub(1));
        let mut hasher = PipedHasher::of_stored(content.encoding);
        for s in 0..layout.stripes() {
            hasher.update(reader.stripe(s).await?).await;
        }
        Ok((hasher.finish().await?, reader.used()))
    }

    /// `None` when `content` reads back right from `placement`; otherwise the one
    /// holder without which it does (tried for each shard the failing read used:
    /// at most k more reads, only after a mismatch). Fails when no single shard
    /// explains the mismatch.
    async fn find_bad_shard(
        &self,
        content: &ContentRecord,
        placement: &Placement,
    ) -> Result<Option<(ShardIndex, String)>, ObjectError> {
        let (actual, used) = self.reads_back(content, placement).await?;
        if actual == content.hash {
            return Ok(None);
        }
        for (shard, addr) in used {
            let mut trial = placement.clone();
            trial.remove(&shard);
            if trial.len() < content.policy.k as usize {
                continue;
            }
            if matches!(self.reads_back(content, &trial).await, Ok((h, _)) if h == content.hash) {
                return Ok(Some((shard, addr)));
            }
        }
        Err(ObjectError::ContentMismatch { hash: content.hash, actual })
    }
}
