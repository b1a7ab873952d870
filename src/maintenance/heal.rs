//! Healing without a reader: a worker that (a) rebuilds the shards data servers'
//! scrubbers found corrupt and set aside (it polls each live server's
//! `GET /scrub/findings`), and (b) re-protects every content that had a shard on a
//! data server that has been silent for longer than `--reprotect-after`, read or
//! not, by walking the metadata store's placement-by-server index.
//!
//! The metadata store keeps when each data server was last seen live (written by
//! the lease holder every few seconds), so a silence is measured across API server
//! restarts; a server that comes back before the deadline costs nothing. The walk
//! over a silent server's contents is paced by `--reprotect-rate` (bytes of
//! content read to rebuild), checkpointed in the store after each page so another
//! API server (or this one after a restart) resumes where it stopped, and ends when
//! no placement names the server any more: each repair records the placement it
//! found or rebuilt, which names live servers only. Then the server is forgotten.
//! Only the holder of the `heal` lease heals; the others stand by.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;

use super::MaintenanceConfig;
use crate::clock::now_ms;
use crate::content::ContentHash;
use crate::object::ObjectService;
use crate::telemetry;
use crate::worker::{Progress, RateLimit, Report, Step, StepError, Worker};

/// The lease's name in the metadata store.
pub const LEASE: &str = "heal";
/// Contents re-protected per step.
const PAGE: usize = 10;
/// How often the holder records which data servers are live, and polls findings.
const TICK: Duration = Duration::from_secs(2);
/// How often, at most, the holder asks the store for silent servers (a count over
/// the placement index, whose cost grows with the store): every 30 s, or every
/// `--reprotect-after` when that is shorter.
const SILENT_CHECK: Duration = Duration::from_secs(30);

/// A re-protection in progress.
#[derive(Clone, Debug)]
struct Reprotection {
    server: String,
    after: Option<ContentHash>,
    done: u64,
    total: u64,
    failed: u64,
}

/// What the healer did since start.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Counts {
    findings: u64,
    repairs_queued: u64,
    reprotected: u64,
    reprotect_failed: u64,
    servers_reprotected: u64,
}

/// The healer.
pub struct Healer {
    svc: ObjectService,
    config: MaintenanceConfig,
    started: Instant,
    holding: bool,
    /// Per data server: its findings epoch and the last sequence number handled.
    findings: HashMap<String, (String, u64)>,
    rate: RateLimit,
    current: Option<Reprotection>,
    counts: Counts,
    last_error: Option<String>,
    last_tick: Option<Instant>,
    /// When the store was last asked which servers are silent.
    last_silent_check: Option<Instant>,
}

impl Healer {
    /// A healer for `svc`.
    pub fn new(svc: ObjectService, config: MaintenanceConfig) -> Self {
        let rate = RateLimit::new(config.reprotect_rate);
        Healer {
            svc,
            config,
            started: Instant::now(),
            holding: false,
            findings: HashMap::new(),
            rate,
            current: None,
            counts: Counts::default(),
            last_error: None,
            last_tick: None,
            last_silent_check: None,
        }
    }

    fn cursor_name(server: &str) -> String {
        format!("heal:{server}")
    }

    fn report(&self, report: &Report) {
        report.progress(self.current.as_ref().map(|r| Progress { done: r.done, total: Some(r.total) }));
        report.info(json!({
            "lease": if self.holding { "held" } else { "standby" },
            "reprotect_after_s": self.config.reprotect_after.as_secs(),
            "reprotecting": self.current.as_ref().map(|r| &r.server),
            "counts": self.counts,
            "last_repair_error": self.last_error,
        }));
    }

    /// Asks every live data server for what its scrubber set aside since last time,
    /// and queues a repair of each content that is still recorded.
    async fn poll_findings(&mut self) {
        for server in self.svc.membership.live() {
            let addr = server.addr;
            let (epoch, after) = self.findings.get(&addr).cloned().unwrap_or_default();
            let found = match self.svc.client.scrub_findings(&addr, after).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cannot poll scrub findings");
                    continue;
                }
            };
            if found.epoch != epoch {
                // The server restarted (its numbers start over; it re-seeds what
                // it still has in garbage/): read its list from the start.
                self.findings.insert(addr, (found.epoch, 0));
                continue;
            }
            let mut last = after;
            let mut seen = HashSet::new();
            for finding in found.findings {
                last = last.max(finding.seq);
                self.counts.findings += 1;
                if !seen.insert(finding.hash) {
                    continue;
                }
                match self.svc.meta.content(&finding.hash).await {
                    Ok(Some(content)) => {
                        self.counts.repairs_queued += 1;
                        tracing::info!(hash = %finding.hash, shard = finding.shard, %addr, "scrub set a shard aside; rebuilding it");
                        self.svc.schedule_repair(content);
                    }
                    Ok(None) => {} // garbage by now
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look up a scrub finding's content; asking again later");
                        last = finding.seq.saturating_sub(1).min(last);
                        break;
                    }
                }
            }
            self.findings.insert(addr, (epoch, last));
        }
    }

    /// The data server to re-protect next, if any has been silent long enough.
    async fn next_silent(&self) -> Result<Option<Reprotection>, StepError> {
        let meta = &self.svc.meta;
        let now = now_ms();
        let sightings: HashMap<String, i64> = meta.server_sightings().await?.into_iter().collect();
        let placed = meta.placement_servers().await?;
        // Servers named by placements but never sighted (a store older than
        // sightings): their silence is measured from now.
        let unsighted: Vec<String> =
            placed.iter().filter(|(s, _)| !sightings.contains_key(s)).map(|(s, _)| s.clone()).collect();
        if !unsighted.is_empty() {
            meta.saw_servers(&unsighted, now).await?;
        }
        let deadline = self.config.reprotect_after.as_millis() as i64;
        for (server, count) in placed {
            let silent = sightings.get(&server).is_some_and(|seen| now - seen > deadline);
            if !silent || self.svc.membership.is_live(&server) {
                continue;
            }
            let after = match meta.worker_cursor(&Self::cursor_name(&server)).await? {
                Some(hex) => hex.parse::<ContentHash>().ok(),
                None => None,
            };
            tracing::warn!(%server, shards = count, "data server silent past --reprotect-after; rebuilding what it held");
            return Ok(Some(Reprotection { server, after, done: 0, total: count, failed: 0 }));
        }
        // Silent servers no placement names any more need no work: forget them.
        for (server, seen) in sightings {
            if now - seen > deadline && !self.svc.membership.is_live(&server) {
                meta.forget_server(&server).await?;
            }
        }
        Ok(None)
    }

    /// One page of a re-protection.
    async fn reprotect(&mut self, mut job: Reprotection) -> Result<Option<Reprotection>, StepError> {
        let meta = self.svc.meta.clone();
        let page = meta.contents_on(&job.server, job.after.as_ref(), PAGE).await?;
        for content in &page {
            if self.svc.membership.is_live(&job.server) {
                tracing::info!(server = %job.server, "data server is back; re-protection stops");
                return Ok(None);
            }
            self.rate.take(content.stored_len()).await;
            match self.svc.repair(content).await {
                Ok(rebuilt) => {
                    job.done += 1;
                    self.counts.reprotected += 1;
                    self.svc.telemetry_scope().counter(telemetry::REPROTECT_CONTENTS).increment(1);
                    tracing::debug!(hash = %content.hash, ?rebuilt, "re-protected");
                }
                Err(e) => {
                    job.failed += 1;
                    self.counts.reprotect_failed += 1;
                    self.last_error = Some(format!("{}: {e}", content.hash));
                    tracing::warn!(hash = %content.hash, error = %e, "re-protection of a content failed; retried next pass");
                }
            }
        }
        job.after = page.last().map(|c| c.hash).or(job.after);
        let cursor = job.after.map(|h| h.to_hex());
        meta.set_worker_cursor(&Self::cursor_name(&job.server), cursor.as_deref()).await?;
        if page.len() == PAGE {
            return Ok(Some(job));
        }
        // The end of the index: the next pass starts over (what failed is still
        // listed), and once nothing names the server it is done.
        meta.set_worker_cursor(&Self::cursor_name(&job.server), None).await?;
        let left = meta.placement_servers().await?.into_iter().find(|(s, _)| *s == job.server).map_or(0, |(_, n)| n);
        if left == 0 {
            self.counts.servers_reprotected += 1;
            tracing::info!(server = %job.server, contents = job.done, "re-protection complete");
            meta.forget_server(&job.server).await?;
        } else {
            tracing::warn!(server = %job.server, left, failed = job.failed, "re-protection pass ended with contents left; retrying");
        }
        Ok(None)
    }
}

#[async_trait]
impl Worker for Healer {
    fn name(&self) -> &'static str {
        "heal"
    }

    fn interval(&self) -> Duration {
        if self.holding {
            TICK
        } else {
            self.config.lease_ttl
        }
    }

    async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
        let meta = self.svc.meta.clone();
        self.holding = meta.acquire_lease(LEASE, &self.config.holder, self.config.lease_ttl).await?;
        if !self.holding {
            self.current = None;
            self.report(report);
            return Ok(Step::Idle);
        }
        if self.last_tick.is_none_or(|t| t.elapsed() >= TICK) || self.current.is_none() {
            self.last_tick = Some(Instant::now());
            let live: Vec<String> = self.svc.membership.live().into_iter().map(|s| s.addr).collect();
            if !live.is_empty() {
                meta.saw_servers(&live, now_ms()).await?;
            }
            self.poll_findings().await;
        }
        // Until this server has heard every live data server's heartbeat, every
        // server would look silent.
        if self.started.elapsed() < self.config.heartbeat_expiry * 2 {
            self.report(report);
            return Ok(Step::Idle);
        }
        let check_every = SILENT_CHECK.min(self.config.reprotect_after);
        let job = match self.current.take() {
            Some(job) => Some(job),
            None if self.last_silent_check.is_none_or(|t| t.elapsed() >= check_every) => {
                self.last_silent_check = Some(Instant::now());
                self.next_silent().await?
            }
            None => None,
        };
        let step = match job {
            Some(job) => {
                // Shown while the page is rebuilt, not only after it.
                self.current = Some(job.clone());
                self.report(report);
                self.current = self.reprotect(job).await?;
                if self.current.is_some() {
                    Step::Busy
                } else {
                    Step::Idle
                }
            }
            None => Step::Idle,
        };
        self.report(report);
        Ok(step)
    }
}
