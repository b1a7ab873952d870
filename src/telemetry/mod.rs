//! The operator's view: counters, gauges and histograms recorded where things
//! happen, rendered in the Prometheus text format by every server's `GET /metrics`.
//!
//! This room sits beside [`server`](crate::server) at the HTTP edge and below
//! everything that records: [`api`](crate::api), [`data`](crate::data),
//! [`object`](crate::object) and [`bus`](crate::bus) record through the `metrics`
//! facade by the names defined here ([`SHARDS_WRITTEN`], …), and nothing here
//! knows their types. The recorder is `metrics-exporter-prometheus`'s, installed
//! once per process ([`install`], idempotent) with no HTTP listener of its own: our
//! axum servers serve [`render`]'s text.
//!
//! Every series carries two labels, `role` (`api` or `data`) and `server` (the
//! server's listen address for an API server, its advertised address for a data
//! server), held by a [`Scope`]. The recorder is process-wide, so where several
//! servers share a process (`cairn dev`, the tests' in-process clusters) `/metrics`
//! on any of them shows the whole process, every server's series told apart by
//! these labels; a production process runs one server and shows only its own.
//!
//! [`HttpMetrics`] is the HTTP middleware (a tower layer) both routers use: requests by route template
//! (axum's `MatchedPath`, `unmatched` for the rest, so label values stay bounded),
//! their latency until the response body is done, and body bytes counted frame by
//! frame as they flow (bodies are wrapped, never buffered).
//!
//! The room is split in two files: this one holds the metric names, the recorder
//! and [`Scope`]; `http.rs` holds the HTTP middleware.

mod http;

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// --- HTTP (both roles), recorded by [`track`] ---

/// Counter: requests answered, labels `route`, `method`, `status`.
pub const HTTP_REQUESTS: &str = "cairn_http_requests_total";
/// Histogram (seconds): from a request's arrival until its response body is done
/// (or abandoned), labels `route`, `method`.
pub const HTTP_REQUEST_DURATION: &str = "cairn_http_request_duration_seconds";
/// Counter: request body bytes received, as they arrive; labels `route`, `method`.
pub const HTTP_REQUEST_BODY_BYTES: &str = "cairn_http_request_body_bytes_total";
/// Counter: response body bytes handed to the connection, as they flow; labels
/// `route`, `method`.
pub const HTTP_RESPONSE_BODY_BYTES: &str = "cairn_http_response_body_bytes_total";

// --- API servers ---

/// Counter: requests refused at the door by a limit, label `limit` (`object_size`,
/// `name_length`, `requests`, `uploads`, `rate`: [`crate::api::limits::Limit`]).
pub const API_REFUSED: &str = "cairn_api_refused_total";
/// Gauge: data servers this API server sees live (heartbeats), updated on scrape.
pub const LIVE_DATA_SERVERS: &str = "cairn_live_data_servers";
/// Counter: shards written for clients' PUTs (API: acknowledged by a data server
/// and committed) and, on a data server, shards committed there (every writer).
pub const SHARDS_WRITTEN: &str = "cairn_shards_written_total";
/// Counter: shards rebuilt and stored by the repair worker.
pub const SHARDS_REPAIRED: &str = "cairn_shards_repaired_total";
/// Gauge: contents waiting for repair, updated on scrape.
pub const REPAIR_QUEUE_DEPTH: &str = "cairn_repair_queue_depth";
/// Gauge: repairs running now, updated on scrape.
pub const REPAIR_RUNNING: &str = "cairn_repair_running";
/// Counter: repairs that failed.
pub const REPAIR_FAILED: &str = "cairn_repair_failed_total";
/// Counter: times the RabbitMQ connection was re-established after a loss.
pub const BUS_RECONNECTS: &str = "cairn_bus_reconnects_total";
/// Counter: bus messages dropped, by `stream` (heartbeats, locate requests, locate
/// replies) and `reason` (`malformed`, or a [`crate::secret::Refusal`]'s label).
pub const BUS_DROPPED: &str = "cairn_bus_dropped_total";
/// Counter: requests a closed data tier refused, by `reason` (a
/// [`crate::secret::Refusal`]'s label).
pub const CLUSTER_AUTH_REFUSED: &str = "cairn_cluster_auth_refused_total";
/// Counter: small-object reads answered from the cache.
pub const CACHE_HITS: &str = "cairn_cache_hits_total";
/// Counter: small-object reads the cache could have answered but did not hold.
pub const CACHE_MISSES: &str = "cairn_cache_misses_total";

// --- data servers ---

/// Gauge: small shards stored as volume records, updated on scrape (shard files
/// are not counted: that would walk the disk).
pub const SHARDS_STORED: &str = "cairn_shards_stored";
/// Gauge: volumes (sealed and active), updated on scrape.
pub const VOLUMES: &str = "cairn_volumes";
/// Gauge: bytes in volume files, updated on scrape.
pub const VOLUME_BYTES: &str = "cairn_volume_bytes";
/// Gauge: bytes of live records in volumes, updated on scrape.
pub const VOLUME_LIVE_BYTES: &str = "cairn_volume_live_bytes";
/// Counter: `fdatasync` batches of the volume store since it opened.
pub const VOLUME_SYNCS: &str = "cairn_volume_syncs_total";
/// Gauge: free bytes on the storage root's file system, updated on scrape.
pub const DISK_FREE_BYTES: &str = "cairn_disk_free_bytes";
/// Counter: shards moved to `garbage/` (corrupt, or on an API server's request).
pub const SHARDS_QUARANTINED: &str = "cairn_shards_quarantined_total";

// --- background workers (recorded by the scrub, GC and worker code) ---

/// Counter: shards the scrubber verified.
pub const SCRUB_SHARDS: &str = "cairn_scrub_shards_total";
/// Counter: bytes the scrubber read and verified.
pub const SCRUB_BYTES: &str = "cairn_scrub_bytes_total";
/// Counter: shards the scrubber found corrupt.
pub const SCRUB_CORRUPT: &str = "cairn_scrub_corrupt_total";
/// Gauge (0..1): how far the current scrub pass is.
pub const SCRUB_PASS_PROGRESS: &str = "cairn_scrub_pass_progress_ratio";
/// Counter: shards deleted for good (garbage collection, orphans).
pub const SHARDS_PURGED: &str = "cairn_shards_purged_total";
/// Counter: content rows the collector deleted (with their shards).
pub const GC_CONTENTS_DELETED: &str = "cairn_gc_contents_deleted_total";
/// Counter: orphan contents (shards with no content row) the collector deleted.
pub const GC_ORPHANS_DELETED: &str = "cairn_gc_orphans_deleted_total";
/// Counter: versions removed by retention.
pub const RETENTION_VERSIONS_PRUNED: &str = "cairn_retention_versions_pruned_total";
/// Counter: contents re-protected after a data server was lost.
pub const REPROTECT_CONTENTS: &str = "cairn_reprotect_contents_total";
/// Counter: resumable (tus) uploads created.
pub const UPLOADS_CREATED: &str = "cairn_uploads_created_total";
/// Counter: bytes appended to resumable uploads (acknowledged by an offset).
pub const UPLOAD_BYTES: &str = "cairn_upload_bytes_total";
/// Counter: resumable uploads finished into a version.
pub const UPLOADS_FINISHED: &str = "cairn_uploads_finished_total";
/// Counter: resumable uploads removed because they expired.
pub const UPLOADS_EXPIRED: &str = "cairn_uploads_expired_total";
/// Gauge: work waiting for a worker, label [`WORKER_LABEL`].
pub const WORKER_QUEUE_DEPTH: &str = "cairn_worker_queue_depth";
/// Gauge: 1 for a worker's current state, 0 for the others; labels
/// [`WORKER_LABEL`] and [`STATE_LABEL`].
pub const WORKER_STATE: &str = "cairn_worker_state";
/// Counter: steps a worker completed, label [`WORKER_LABEL`].
pub const WORKER_STEPS: &str = "cairn_worker_steps_total";
/// Counter: steps a worker failed, label [`WORKER_LABEL`].
pub const WORKER_ERRORS: &str = "cairn_worker_errors_total";

/// The label naming a worker (`gc`, `retention`, `scrub`, …).
pub const WORKER_LABEL: &str = "worker";
/// The label naming a worker's state.
pub const STATE_LABEL: &str = "state";

/// Upper bounds (seconds) of the latency histograms' buckets: 100 µs to 10 s, a
/// 1-2.5-5 ladder, so a cached 4 KiB GET and a 64 MiB PUT both land mid-range.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder unless it is installed, and returns its
/// handle. Safe to call from any number of servers and threads: the first call
/// installs, every call returns the same handle. If another recorder was set
/// first (not ours), nothing is recorded here and `/metrics` shows nothing.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

/// The process's metrics in the Prometheus text format (installing the recorder
/// if nothing has yet).
pub fn render() -> String {
    install().render()
}

/// The `GET /metrics` answer: [`render`] with [`CONTENT_TYPE`].
pub fn response() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], render()).into_response()
}

/// The `# HELP` lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "HTTP request time until the response body is done");
    describe_counter!(HTTP_REQUEST_BODY_BYTES, Unit::Bytes, "HTTP request body bytes received");
    describe_counter!(HTTP_RESPONSE_BODY_BYTES, Unit::Bytes, "HTTP response body bytes sent");
    describe_gauge!(LIVE_DATA_SERVERS, "data servers seen live by heartbeat");
    describe_counter!(SHARDS_WRITTEN, "shards written (API: for PUTs; data: committed here)");
    describe_counter!(SHARDS_REPAIRED, "shards rebuilt by the repair worker");
    describe_gauge!(REPAIR_QUEUE_DEPTH, "contents waiting for repair");
    describe_gauge!(REPAIR_RUNNING, "repairs running");
    describe_counter!(REPAIR_FAILED, "repairs that failed");
    describe_counter!(BUS_RECONNECTS, "RabbitMQ reconnections after a lost connection");
    describe_counter!(BUS_DROPPED, "bus messages dropped: malformed, unsigned or badly signed, stale or replayed");
    describe_counter!(CLUSTER_AUTH_REFUSED, "data-server requests refused for a missing or bad cluster signature");
    describe_counter!(CACHE_HITS, "small-object reads answered from the cache");
    describe_counter!(CACHE_MISSES, "small-object reads not in the cache");
    describe_gauge!(SHARDS_STORED, "small shards stored in volumes");
    describe_gauge!(VOLUMES, "volumes");
    describe_gauge!(VOLUME_BYTES, Unit::Bytes, "bytes in volume files");
    describe_gauge!(VOLUME_LIVE_BYTES, Unit::Bytes, "bytes of live volume records");
    describe_counter!(VOLUME_SYNCS, "volume store fdatasync batches");
    describe_gauge!(DISK_FREE_BYTES, Unit::Bytes, "free bytes on the storage root's file system");
    describe_counter!(SHARDS_QUARANTINED, "shards moved to garbage/");
    describe_counter!(SCRUB_SHARDS, "shards verified by the scrubber");
    describe_counter!(SCRUB_BYTES, Unit::Bytes, "bytes verified by the scrubber");
    describe_counter!(SCRUB_CORRUPT, "corrupt shards found by the scrubber");
    describe_gauge!(SCRUB_PASS_PROGRESS, "progress of the current scrub pass (0..1)");
    describe_counter!(SHARDS_PURGED, "shards deleted for good");
    describe_counter!(GC_CONTENTS_DELETED, "contents deleted by the collector");
    describe_counter!(GC_ORPHANS_DELETED, "orphan contents deleted by the collector");
    describe_counter!(RETENTION_VERSIONS_PRUNED, "versions removed by retention");
    describe_counter!(REPROTECT_CONTENTS, "contents re-protected after a server loss");
    describe_gauge!(WORKER_QUEUE_DEPTH, "work waiting for a worker");
    describe_gauge!(WORKER_STATE, "1 for a worker's current state");
    describe_counter!(WORKER_STEPS, "worker steps completed");
    describe_counter!(WORKER_ERRORS, "worker steps failed");
}

/// Which tier a server belongs to: the `role` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An API server.
    Api,
    /// A data server.
    Data,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Data => "data",
        }
    }
}

/// One server's labels (`role`, `server`), from which its metric handles are made.
/// Cheap to clone; making a handle installs the recorder first, so handles made
/// early (at start) are live. Keep the handles: recording through a kept handle is
/// an atomic add, making one looks the series up.
#[derive(Clone, Debug)]
pub struct Scope {
    role: Role,
    server: SharedString,
}

impl Scope {
    /// The labels of the server `server` (its listen or advertised address) in `role`.
    pub fn new(role: Role, server: &str) -> Scope {
        install();
        Scope { role, server: SharedString::from(Arc::<str>::from(server)) }
    }

    /// The `role` label.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The `server` label.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The counter `name` of this server.
    pub fn counter(&self, name: &'static str) -> Counter {
        metrics::counter!(name, "role" => self.role.as_str(), "server" => self.server.clone())
    }

    /// The gauge `name` of this server.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        metrics::gauge!(name, "role" => self.role.as_str(), "server" => self.server.clone())
    }

    /// The histogram `name` of this server.
    pub fn histogram(&self, name: &'static str) -> Histogram {
        metrics::histogram!(name, "role" => self.role.as_str(), "server" => self.server.clone())
    }

    /// The counter `name` of this server with one more label (a worker's name).
    pub fn counter_with(&self, name: &'static str, key: &'static str, value: impl Into<SharedString>) -> Counter {
        metrics::counter!(name, "role" => self.role.as_str(), "server" => self.server.clone(), key => value.into())
    }

    /// The gauge `name` of this server with one more label (a worker's name).
    pub fn gauge_with(&self, name: &'static str, key: &'static str, value: impl Into<SharedString>) -> Gauge {
        metrics::gauge!(name, "role" => self.role.as_str(), "server" => self.server.clone(), key => value.into())
    }
}

pub use http::{HttpMetrics, Tracked, Tracking, S3_ROUTE};

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `text` that mention every one of `needles`.
    pub(super) fn lines_with<'a>(text: &'a str, needles: &[&str]) -> Vec<&'a str> {
        text.lines().filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n))).collect()
    }

    #[test]
    fn install_is_idempotent_and_scopes_label_their_series() {
        let first: *const PrometheusHandle = install();
        assert!(std::ptr::eq(first, install()));
        let scope = Scope::new(Role::Data, "127.0.0.1:1");
        scope.counter(SHARDS_QUARANTINED).increment(3);
        scope.gauge_with(WORKER_QUEUE_DEPTH, WORKER_LABEL, "scrub").set(7.0);
        let text = render();
        let found = lines_with(&text, &[SHARDS_QUARANTINED, "role=\"data\"", "server=\"127.0.0.1:1\""]);
        assert_eq!(found.len(), 1, "{text}");
        assert!(found[0].ends_with(" 3"), "{}", found[0]);
        let found = lines_with(&text, &[WORKER_QUEUE_DEPTH, "worker=\"scrub\"", "server=\"127.0.0.1:1\""]);
        assert_eq!(found.len(), 1, "{text}");
        assert!(found[0].ends_with(" 7"), "{}", found[0]);
    }
}
