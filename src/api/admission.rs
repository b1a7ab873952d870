//! Admission of uploads ([`UploadLimits`]) and the answers past an in-flight
//! limit, in the native API's words and in S3's.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::{limits, RequestLimits, RETRY_AFTER_SECS};

/// Admission of uploads: a large one takes one of [`RequestLimits::uploads`]
/// slots, a small one (declared below the small-object threshold) its size in KiB
/// of [`RequestLimits::small_upload_bytes`]. Past either: 503 at once, not a queue.
#[derive(Clone)]
pub(crate) struct UploadLimits {
    slots: Arc<Semaphore>,
    /// In KiB.
    small: Arc<Semaphore>,
    small_kib: u64,
    small_threshold: u64,
    refusals: limits::Refusals,
}

impl UploadLimits {
    pub(super) fn new(limits: RequestLimits, small_threshold: u64, refusals: limits::Refusals) -> UploadLimits {
        let small_kib = (limits.small_upload_bytes / 1024).min(Semaphore::MAX_PERMITS as u64);
        UploadLimits {
            slots: Arc::new(Semaphore::new(limits.uploads)),
            small: Arc::new(Semaphore::new(small_kib as usize)),
            small_kib,
            small_threshold,
            refusals,
        }
    }

    /// Holds a permit from the request's head until its answer (an upload's body is
    /// read whole before it is answered).
    pub(crate) async fn admit(State(limits): State<UploadLimits>, request: Request, next: Next) -> Response {
        match limits.permit(request.headers()) {
            Some(_permit) => next.run(request).await,
            None => overloaded("uploads"),
        }
    }

    /// The permit of an upload with these headers, or `None` (counted) when its
    /// kind of upload is at its limit.
    pub(super) fn permit(&self, headers: &HeaderMap) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let needed_kib = declared.filter(|&n| n < self.small_threshold).map(|n| n.div_ceil(1024).max(1));
        let permit = match needed_kib.filter(|&kib| kib <= self.small_kib) {
            // At most the budget, which fits the semaphore, so in u32 unless the
            // budget is above 4 TiB.
            Some(kib) => match u32::try_from(kib) {
                Ok(kib) => Arc::clone(&self.small).try_acquire_many_owned(kib),
                Err(_) => Arc::clone(&self.slots).try_acquire_owned(),
            },
            None => Arc::clone(&self.slots).try_acquire_owned(),
        };
        if permit.is_err() {
            self.refusals.count(limits::Limit::Uploads);
        }
        permit.ok()
    }
}

/// The native answer past an in-flight limit: 503 with `Retry-After`.
pub(super) fn overloaded(what: &'static str) -> Response {
    tracing::debug!(what, "over the limit; refusing a request");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        format!("too many {what} in flight; retry shortly\n"),
    )
        .into_response()
}

/// The S3 answer past an in-flight limit: 503 `SlowDown` with `Retry-After`.
pub(super) fn s3_overloaded(what: &'static str) -> Response {
    tracing::debug!(what, "over the limit; refusing an S3 request");
    limits::slow_down(Duration::from_secs(RETRY_AFTER_SECS), &format!("too many {what} in flight; retry shortly"))
}
