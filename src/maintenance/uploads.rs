//! Expiry of resumable uploads (tus, [`crate::object::resumable`]): a worker that
//! removes uploads whose `Upload-Expires` has passed (abandoned, or finished and
//! kept only so that a late HEAD still answers), with their part rows, a bounded
//! batch per step ([`UploadStore::remove_expired_uploads`](crate::meta::UploadStore::remove_expired_uploads)).
//! The parts' content is then unreferenced, and the garbage collector
//! ([`super::gc`]) removes it after its grace period.
//!
//! The same worker removes S3 multipart uploads not completed within
//! `--multipart-expiry` of their creation
//! ([`MultipartStore::remove_stale_multipart`](crate::meta::MultipartStore::remove_stale_multipart)).
//!
//! Each batch is one transaction, so a restart loses nothing and two API servers
//! running it at once remove each upload once. Until the worker gets to an expired
//! upload, the upload paths already answer 404 for it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::clock::now_ms;
use crate::object::ObjectService;
use crate::telemetry;
use crate::worker::{Report, Step, StepError, Worker};

/// Uploads removed per step.
const BATCH: usize = 100;

/// Pause between two sweeps when nothing is left to remove.
pub const INTERVAL: Duration = Duration::from_secs(300);

/// The upload expiry worker.
pub struct UploadExpiry {
    svc: ObjectService,
    multipart_expiry: Duration,
    removed: u64,
    multipart_removed: u64,
}

impl UploadExpiry {
    /// An expiry worker for `svc`'s metadata store; multipart uploads expire
    /// `multipart_expiry` after their creation.
    pub fn new(svc: ObjectService, multipart_expiry: Duration) -> Self {
        UploadExpiry { svc, multipart_expiry, removed: 0, multipart_removed: 0 }
    }
}

#[async_trait]
impl Worker for UploadExpiry {
    fn name(&self) -> &'static str {
        "uploads"
    }

    fn interval(&self) -> Duration {
        INTERVAL
    }

    async fn step(&mut self, report: &Report) -> Result<Step, StepError> {
        let removed = self.svc.meta.remove_expired_uploads(now_ms(), BATCH).await?;
        if removed > 0 {
            tracing::debug!(removed, "removed expired uploads");
        }
        self.removed += removed as u64;
        self.svc.telemetry_scope().counter(telemetry::UPLOADS_EXPIRED).increment(removed as u64);
        let expiry = i64::try_from(self.multipart_expiry.as_millis()).unwrap_or(i64::MAX);
        let stale = self.svc.meta.remove_stale_multipart(now_ms().saturating_sub(expiry), BATCH).await?;
        if stale > 0 {
            tracing::debug!(removed = stale, "removed stale multipart uploads");
        }
        self.multipart_removed += stale as u64;
        report.info(
            json!({ "expired_uploads_removed": self.removed, "stale_multipart_removed": self.multipart_removed }),
        );
        Ok(if removed == BATCH || stale == BATCH { Step::Busy } else { Step::Idle })
    }
}
