//! Version retention: a worker that walks every name of the metadata store, a page
//! at a time, and prunes each with [`VersionStore::prune`](crate::meta::VersionStore::prune):
//! the versions beyond the newest `--keep-versions` go (tombstones count as
//! versions), and a name whose newest version is a tombstone older than
//! `--tombstone-ttl` goes entirely. Content that no version points at any more is
//! then the garbage collector's ([`super::gc`]).
//!
//! A pass that is cut short (a restart) starts over at the next one: passes are
//! cheap (one read of a page of names and one small transaction per name), and a
//! name pruned twice is pruned once.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::MaintenanceConfig;
use crate::clock::now_ms;
use crate::object::ObjectService;
use crate::telemetry;
use crate::worker::{Progress, Report, Step, StepError, Worker};

/// Names pruned per step.
const PAGE: usize = 200;

/// The retention worker.
pub struct Retention {
    svc: ObjectService,
    config: MaintenanceConfig,
    /// Where the current pass is: the last (bucket, name) pruned.
    after: Option<(String, String)>,
    names_this_pass: u64,
    passes: u64,
    pruned: u64,
}

impl Retention {
    /// A retention worker for `svc`'s metadata store.
    pub fn new(svc: ObjectService, config: MaintenanceConfig) -> Self {
        Retention { svc, config, after: None, names_this_pass: 0, passes: 0, pruned: 0 }
    }

    fn report(&self, report: &Report) {
        report.info(json!({
            "keep_versions": self.config.keep_versions,
            "tombstone_ttl_s": self.config.tombstone_ttl.map(|t| t.as_secs()),
            "passes": self.passes,
            "versions_pruned": self.pruned,
        }));
    }
}

#[async_trait]
impl Worker for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }

    fn interval(&self) -> Duration {
        self.config.retention_interval
    }

    async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
        let keep = self.config.keep_versions;
        let cutoff = self.config.tombstone_ttl.map(|ttl| now_ms() - ttl.as_millis() as i64);
        if keep.is_none() && cutoff.is_none() {
            self.report(report);
            return Ok(Step::Idle);
        }
        let meta = &self.svc.meta;
        let after = self.after.as_ref().map(|(b, n)| (b.as_str(), n.as_str()));
        let names = meta.names(after, PAGE).await?;
        for (bucket, name) in &names {
            let removed = meta.prune(bucket, name, keep, cutoff).await?;
            if removed > 0 {
                self.svc.telemetry_scope().counter(telemetry::RETENTION_VERSIONS_PRUNED).increment(removed);
                tracing::debug!(%bucket, %name, removed, "pruned versions");
            }
            self.pruned += removed;
        }
        self.names_this_pass += names.len() as u64;
        report.progress(Some(Progress { done: self.names_this_pass, total: None }));
        let done = names.len() < PAGE;
        self.after = if done { None } else { names.into_iter().last() };
        if done {
            self.passes += 1;
            self.names_this_pass = 0;
            report.progress(None);
        }
        self.report(report);
        Ok(if done { Step::Idle } else { Step::Busy })
    }
}
