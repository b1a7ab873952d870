//! The data server's operator routes: the store's figures (`GET /stats`), its
//! metrics (`GET /metrics`), compaction on demand (`POST /compact`) and the
//! scrubber's status, pause, resume and findings (`/scrub…`), and every background
//! worker's status, trigger, pause and resume (`/workers…`). Routed by
//! [`super::serve`]; answers are [`super::wire`] types.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::handlers::store_error;
use super::store::StoreError;
use super::upkeep::compact_now;
use super::wire::{
    FindingsPage, FindingsQuery, ScrubStatus, StoreStats, VolumeFigures, VolumeStats, WorkerProgress, WorkerReport,
};
use super::{blocking, volume, DataState};
use crate::telemetry;
use crate::worker::{WorkerHandle, WorkerStatus};

/// `GET /stats`: the volume store's figures.
pub(super) async fn stats(State(state): State<Arc<DataState>>) -> Response {
    let stats = match state.store.volumes() {
        Some(v) => StoreStats::Volumes(volume_stats(v.stats())),
        None => StoreStats::NoVolumes { volumes: () },
    };
    axum::Json(stats).into_response()
}

/// The volume store's figures as the protocol names them.
pub(super) fn volume_stats(stats: volume::Stats) -> VolumeStats {
    let volumes = stats
        .volumes
        .into_iter()
        .map(|v| VolumeFigures {
            id: v.id,
            size: v.size,
            live_records: v.live_records,
            live_bytes: v.live_bytes,
            active: v.active,
        })
        .collect();
    VolumeStats {
        shards: stats.shards,
        index_bytes: stats.index_bytes,
        syncs: stats.syncs,
        synced_ops: stats.synced_ops,
        volumes,
    }
}

/// `GET /metrics`: the gauges read from this server's store (volume figures, free
/// space), then the process's metrics (every server in it: see [`crate::telemetry`]).
pub(super) async fn metrics(State(state): State<Arc<DataState>>) -> Response {
    let scope = &state.scope;
    if let Some(v) = state.store.volumes() {
        let stats = v.stats();
        scope.gauge(telemetry::SHARDS_STORED).set(stats.shards as f64);
        scope.gauge(telemetry::VOLUMES).set(stats.volumes.len() as f64);
        scope.gauge(telemetry::VOLUME_BYTES).set(stats.volumes.iter().map(|v| v.size).sum::<u64>() as f64);
        scope.gauge(telemetry::VOLUME_LIVE_BYTES).set(stats.volumes.iter().map(|v| v.live_bytes).sum::<u64>() as f64);
        scope.counter(telemetry::VOLUME_SYNCS).absolute(stats.syncs);
    }
    match blocking(state.store.clone(), |s| s.free_bytes().map_err(StoreError::Io)).await {
        Ok(free) => scope.gauge(telemetry::DISK_FREE_BYTES).set(free as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read free space for /metrics"),
    }
    telemetry::response()
}

/// `POST /compact`: compacts the volumes that are due, now.
pub(super) async fn compact(State(state): State<Arc<DataState>>) -> Response {
    match blocking(state.store.clone(), compact_now).await {
        Ok(done) => axum::Json(done).into_response(),
        Err(e) => store_error(e),
    }
}

/// The scrubber's status: the pass's state and the worker's.
pub(super) fn scrub_json(state: &DataState) -> ScrubStatus {
    let (worker, pass) = (state.scrub.status(), state.scrub_shared.state());
    ScrubStatus {
        state: worker.state.as_str().to_string(),
        pass: pass.pass,
        running: pass.running,
        pass_started_ms: pass.pass_started_ms,
        shards_done: pass.shards_done,
        bytes_done: pass.bytes_done,
        shards_total: pass.shards_total.max(pass.shards_done),
        corrupt_found: pass.corrupt_found,
        last_pass_finished_ms: pass.last_pass_finished_ms,
        last_error: worker.last_error.map(|(_, e)| e),
        cursor: pass.cursor,
        rate: state.scrub_rate,
        interval_s: state.scrub_interval.as_secs(),
    }
}

/// `GET /scrub`: the scrubber's status.
pub(super) async fn scrub_status(State(state): State<Arc<DataState>>) -> Response {
    axum::Json(scrub_json(&state)).into_response()
}

/// `POST /scrub`: starts a pass now unless one runs.
pub(super) async fn scrub_start(State(state): State<Arc<DataState>>) -> Response {
    state.scrub_shared.request_pass();
    state.scrub.trigger();
    (StatusCode::ACCEPTED, axum::Json(scrub_json(&state))).into_response()
}

/// `POST /scrub/pause`.
pub(super) async fn scrub_pause(State(state): State<Arc<DataState>>) -> Response {
    state.scrub.pause();
    (StatusCode::ACCEPTED, axum::Json(scrub_json(&state))).into_response()
}

/// `POST /scrub/resume`.
pub(super) async fn scrub_resume(State(state): State<Arc<DataState>>) -> Response {
    state.scrub.resume();
    (StatusCode::ACCEPTED, axum::Json(scrub_json(&state))).into_response()
}

/// `GET /scrub/findings?after=SEQ`.
pub(super) async fn scrub_findings(
    State(state): State<Arc<DataState>>,
    Query(query): Query<FindingsQuery>,
) -> Response {
    let findings = state.findings.after(query.after.unwrap_or(0));
    axum::Json(FindingsPage { epoch: state.findings.epoch().to_string(), findings }).into_response()
}

/// A worker's status as the protocol names it.
fn worker_report(status: WorkerStatus) -> WorkerReport {
    WorkerReport {
        name: status.name.to_string(),
        state: status.state.as_str().to_string(),
        progress: status.progress.map(|p| WorkerProgress { done: p.done, total: p.total }),
        queued: status.queued,
        steps: status.steps,
        errors: status.errors,
        last_error: status.last_error,
        info: status.info,
    }
}

/// `GET /workers`: every background worker's status, in the order they started.
pub(super) async fn worker_statuses(State(state): State<Arc<DataState>>) -> Response {
    let reports: Vec<WorkerReport> = state.workers.statuses().into_iter().map(worker_report).collect();
    axum::Json(reports).into_response()
}

/// Runs `act` on the worker called `name`; 202 with its status, or 404.
fn on_worker(state: &DataState, name: &str, act: impl FnOnce(&WorkerHandle)) -> Response {
    match state.workers.get(name) {
        Some(handle) => {
            act(&handle);
            (StatusCode::ACCEPTED, axum::Json(worker_report(handle.status()))).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no worker named {name:?}")).into_response(),
    }
}

/// `POST /workers/<name>`: runs the worker's next round now.
pub(super) async fn worker_trigger(State(state): State<Arc<DataState>>, Path(name): Path<String>) -> Response {
    on_worker(&state, &name, WorkerHandle::trigger)
}

/// `POST /workers/<name>/pause`.
pub(super) async fn worker_pause(State(state): State<Arc<DataState>>, Path(name): Path<String>) -> Response {
    on_worker(&state, &name, WorkerHandle::pause)
}

/// `POST /workers/<name>/resume`.
pub(super) async fn worker_resume(State(state): State<Arc<DataState>>, Path(name): Path<String>) -> Response {
    on_worker(&state, &name, WorkerHandle::resume)
}
