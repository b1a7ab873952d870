//! Garbage collection: content that no version points at is deleted from the data
//! servers and its space comes back; shards that no content row knows (orphans:
//! left by failed writes and crashes) are deleted once they are old.
//!
//! The protocol that keeps it from racing a PUT that dedups onto the same bytes is
//! in the README ("Lifecycle"); in short, a content row is `live`, `doomed` (no
//! version pointed at it when the collector looked) or `deleting`. A pass:
//!
//! 1. resumes the deletions a collector that died left `deleting`;
//! 2. marks unreferenced live content doomed;
//! 3. for each content doomed longer than the grace period, moves it to
//!    `deleting` in one atomic step that re-checks that no version points at it
//!    (a PUT that revived it in the meantime wins), deletes its shards from every
//!    live holder (found on the bus), and removes the row;
//! 4. every `--orphan-interval` (or when asked), lists every live data server's
//!    shards and, for each shard older than `--orphan-age` whose hash has no row,
//!    claims the hash (a `deleting` row, inserted only if none exists), deletes the
//!    shards and removes the row.
//!
//! A PUT never reuses `deleting` content and writes no shard of it until the row is
//! gone, so the collector never deletes bytes an acknowledged version relies on. A
//! holder that cannot be reached keeps its copy; the row is removed anyway once the
//! reachable ones are gone, and what the unreachable one kept is an orphan when it
//! comes back. Only the holder of the `gc` lease collects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;

use super::MaintenanceConfig;
use crate::clock::now_ms;
use crate::content::{ContentHash, Policy, ShardIndex};
use crate::meta::ContentRecord;
use crate::object::ObjectService;
use crate::telemetry;
use crate::worker::{Report, Step, StepError, Worker};

/// Contents handled per step: each costs a locate and a purge per holder, so a step
/// stays well inside the lease's lifetime.
const BATCH: usize = 20;
/// Contents marked doomed per step.
const MARK_BATCH: usize = 1000;
/// The lease's name in the metadata store.
pub const LEASE: &str = "gc";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Resume { after: Option<ContentHash> },
    Mark,
    Sweep { after: Option<ContentHash> },
    Orphans { servers: Vec<String>, after: Option<String> },
}

/// What the collector did since start.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Counts {
    passes: u64,
    marked: u64,
    deleted: u64,
    revived: u64,
    orphans_deleted: u64,
    shards_purged: u64,
    orphan_sweeps: u64,
}

/// The garbage collector.
pub struct Collector {
    svc: ObjectService,
    config: MaintenanceConfig,
    orphans_now: Arc<AtomicBool>,
    phase: Phase,
    last_orphan_sweep: Option<Instant>,
    counts: Counts,
    holding: bool,
}

impl Collector {
    /// A collector for `svc`; `orphans_now` asks for an orphan sweep in the next pass.
    pub fn new(svc: ObjectService, config: MaintenanceConfig, orphans_now: Arc<AtomicBool>) -> Self {
        Collector {
            svc,
            config,
            orphans_now,
            phase: Phase::Resume { after: None },
            last_orphan_sweep: None,
            counts: Counts::default(),
            holding: false,
        }
    }

    fn report(&self, report: &Report) {
        let phase = match &self.phase {
            Phase::Resume { .. } => "resume",
            Phase::Mark => "mark",
            Phase::Sweep { .. } => "sweep",
            Phase::Orphans { .. } => "orphans",
        };
        report.info(json!({
            "lease": if self.holding { "held" } else { "standby" },
            "phase": phase,
            "grace_s": self.config.gc_grace.as_secs(),
            "orphan_age_s": self.config.orphan_age.as_secs(),
            "counts": self.counts,
        }));
    }

    fn orphans_due(&self) -> bool {
        self.orphans_now.load(Ordering::SeqCst)
            || self.last_orphan_sweep.is_none_or(|t| t.elapsed() >= self.config.orphan_interval)
    }

    /// Deletes every shard of `content` that a live data server holds. Fails when a
    /// holder that answered the locate refuses or cannot be reached (the row stays
    /// `deleting`; the next pass retries).
    async fn delete_shards(&mut self, content: &ContentRecord) -> Result<(), StepError> {
        let svc = &self.svc;
        let holders = svc.holders(content).await?;
        let mut by_server: BTreeMap<String, Vec<(ContentHash, ShardIndex)>> = BTreeMap::new();
        for (shard, addrs) in holders {
            for addr in addrs {
                by_server.entry(addr).or_default().push((content.hash, shard));
            }
        }
        for (addr, shards) in by_server {
            let purged = svc.client.purge(&addr, &shards).await?;
            self.counts.shards_purged += purged;
        }
        Ok(())
    }

    /// Deletes a content the store has in `deleting`, then its row.
    async fn finish(&mut self, content: &ContentRecord) -> Result<(), StepError> {
        self.delete_shards(content).await?;
        self.svc.meta.finish_delete(&content.hash).await?;
        Ok(())
    }

    async fn resume(&mut self, after: Option<ContentHash>) -> Result<Phase, StepError> {
        let page = self.svc.meta.deleting(after.as_ref(), BATCH).await?;
        for content in &page {
            self.finish(content).await?;
            self.counts.deleted += 1;
            self.svc.telemetry_scope().counter(telemetry::GC_CONTENTS_DELETED).increment(1);
        }
        Ok(match page.last() {
            Some(last) if page.len() == BATCH => Phase::Resume { after: Some(last.hash) },
            _ => Phase::Mark,
        })
    }

    async fn mark(&mut self) -> Result<Phase, StepError> {
        let marked = self.svc.meta.doom_unreferenced(now_ms(), MARK_BATCH).await?;
        self.counts.marked += marked as u64;
        Ok(if marked == MARK_BATCH { Phase::Mark } else { Phase::Sweep { after: None } })
    }

    async fn sweep(&mut self, after: Option<ContentHash>) -> Result<Option<Phase>, StepError> {
        let cutoff = now_ms() - self.config.gc_grace.as_millis() as i64;
        let page = self.svc.meta.doomed_before(cutoff, after.as_ref(), BATCH).await?;
        for content in &page {
            if !self.svc.meta.begin_delete(&content.hash, cutoff).await? {
                self.counts.revived += 1;
                continue;
            }
            self.finish(content).await?;
            self.counts.deleted += 1;
            self.svc.telemetry_scope().counter(telemetry::GC_CONTENTS_DELETED).increment(1);
            tracing::debug!(hash = %content.hash, "collected content no version points at");
        }
        if let Some(last) = page.last().filter(|_| page.len() == BATCH) {
            return Ok(Some(Phase::Sweep { after: Some(last.hash) }));
        }
        if self.orphans_due() {
            self.orphans_now.store(false, Ordering::SeqCst);
            let servers = self.svc.membership.live().into_iter().map(|s| s.addr).collect();
            return Ok(Some(Phase::Orphans { servers, after: None }));
        }
        Ok(None)
    }

    /// One page of one data server's listing: deletes the old shards whose hash has
    /// no content row.
    async fn orphans(&mut self, mut servers: Vec<String>, after: Option<String>) -> Result<Option<Phase>, StepError> {
        let Some(addr) = servers.first().cloned() else {
            self.last_orphan_sweep = Some(Instant::now());
            self.counts.orphan_sweeps += 1;
            return Ok(None);
        };
        let page = match self.svc.client.list_shards(&addr, after.as_deref()).await {
            Ok(page) => page,
            Err(e) => {
                // One unreachable server does not stop the sweep of the others.
                tracing::warn!(%addr, error = %e, "orphan sweep: cannot list shards; skipping the server");
                servers.remove(0);
                return Ok(Some(Phase::Orphans { servers, after: None }));
            }
        };
        let age = self.config.orphan_age.as_secs();
        let mut old: BTreeMap<ContentHash, Vec<(ShardIndex, Option<Policy>)>> = BTreeMap::new();
        for held in page.shards.iter().filter(|s| s.age_s >= age) {
            old.entry(held.hash).or_default().push((held.shard, held.policy.as_deref().and_then(|p| p.parse().ok())));
        }
        for (hash, shards) in old {
            if self.svc.meta.content_state(&hash).await?.is_some() {
                continue;
            }
            let policy = shards.iter().find_map(|(_, p)| *p).unwrap_or(Policy::SINGLE);
            if !self.svc.meta.claim_orphan(&hash, policy).await? {
                continue; // a PUT recorded it in the meantime
            }
            let purge: Vec<(ContentHash, ShardIndex)> = shards.iter().map(|(s, _)| (hash, *s)).collect();
            let purged = self.svc.client.purge(&addr, &purge).await;
            // The row goes whether or not the purge worked: the shards are orphans
            // either way, and the next sweep finds them again.
            self.svc.meta.finish_delete(&hash).await?;
            let purged = purged?;
            self.counts.shards_purged += purged;
            self.counts.orphans_deleted += purged;
            self.svc.telemetry_scope().counter(telemetry::GC_ORPHANS_DELETED).increment(purged);
            tracing::info!(%hash, %addr, shards = purged, "deleted orphan shards");
        }
        match page.next {
            Some(next) => Ok(Some(Phase::Orphans { servers, after: Some(next) })),
            None => {
                servers.remove(0);
                Ok(Some(Phase::Orphans { servers, after: None }))
            }
        }
    }
}

#[async_trait]
impl Worker for Collector {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn interval(&self) -> Duration {
        // On standby, look again within the lease's lifetime, so that a holder that
        // died is replaced within about two lease periods.
        if self.holding {
            self.config.gc_interval
        } else {
            self.config.lease_ttl
        }
    }

    async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
        let meta = &self.svc.meta;
        self.holding = meta.acquire_lease(LEASE, &self.config.holder, self.config.lease_ttl).await?;
        if !self.holding {
            self.report(report);
            return Ok(Step::Idle);
        }
        let next = match std::mem::replace(&mut self.phase, Phase::Mark) {
            Phase::Resume { after } => Some(self.resume(after).await),
            Phase::Mark => Some(self.mark().await),
            Phase::Sweep { after } => self.sweep(after).await.transpose(),
            Phase::Orphans { servers, after } => self.orphans(servers, after).await.transpose(),
        };
        let step = match next {
            Some(Ok(phase)) => {
                self.phase = phase;
                Step::Busy
            }
            None => {
                self.counts.passes += 1;
                self.phase = Phase::Resume { after: None };
                Step::Idle
            }
            Some(Err(e)) => {
                // Start the pass over after the backoff: every phase is safe to redo.
                self.phase = Phase::Resume { after: None };
                self.report(report);
                return Err(e);
            }
        };
        self.report(report);
        Ok(step)
    }
}
