//! The API server (`cairn api`): the REST interface clients talk to.
//!
//! | request | meaning |
//! |---|---|
//! | `PUT /objects/<name>` | store a new version (streamed; optional `Digest`/`Content-Digest`) |
//! | `GET`/`HEAD /objects/<name>[?version=N]` | read it (`Range` supported; `Accept-Encoding: zstd` may get compressed content as stored) |
//! | `DELETE /objects/<name>` | add a tombstone version |
//! | `GET /objects/?prefix=P&after=K&limit=M` | list current names, a page at a time |
//! | `GET /versions/<name>[?after=N&limit=M]` | every version, oldest first, one JSON object per line |
//! | `GET /locate/<name>` | where its shards are, asked on the bus |
//! | `GET /healthz` | liveness and how many data servers are live |
//! | `GET /metrics` | the process's metrics, Prometheus text ([`crate::telemetry`]) |
//! | `POST /uploads`, `HEAD`/`PATCH`/`DELETE /uploads/<id>`, `POST /objects/<name>` | resumable uploads, tus 1.0 ([`tus`]) |
//! | anything else | the S3 API ([`s3`]); virtual-host style requests (`<bucket>.<--s3-domain>`) always |
//!
//! Once the cluster has an access key, every request but `/healthz` and
//! `/metrics` must carry one ([`keys`]): S3 requests are signed (SigV4), native
//! ones carry `Authorization: Bearer <id>:<secret>`.
//!
//! Handlers parse the request, call [`ObjectService`], and map its errors to a
//! status in exactly one place ([`ApiError`]'s `IntoResponse`). They never touch
//! files or the bus themselves.
//!
//! This file holds the configuration, [`ApiError`], [`serve`] and the native
//! router; the native object handlers are in `objects.rs`, the S3 side-by-side
//! dispatch and the request limit in `dispatch.rs`, upload admission in
//! `admission.rs`; tus is a directory of its own (`tus/`).

pub mod accept;
pub mod admin;
mod admission;
pub mod digest;
mod dispatch;
pub mod keys;
pub mod limits;
pub mod names;
mod objects;
pub mod policy;
pub mod s3;
pub mod tus;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use admission::UploadLimits;
use dispatch::with_s3;
pub use objects::MAX_PAGE;
use objects::{delete_object, empty_name, get_object, list_objects, locate, put_object, versions, Svc};

use crate::bus::Bus;
use crate::cluster::Membership;
use crate::maintenance::{self, MaintenanceConfig};
use crate::meta::MetaStore;
use crate::object::resumable::UploadSettings;
use crate::object::{FailureKind, ObjectConfig, ObjectError, ObjectService};
use crate::server::{self, HttpTimeouts, ServeOptions};
use crate::telemetry::{self, HttpMetrics, Role, Scope};
use crate::worker::Workers;

/// Header carrying the version a response is about.
pub const VERSION_HEADER: &str = "x-cairn-version";
/// Response header of an object GET/HEAD: bytes the content takes in its stored
/// form (before erasure coding), for operators and tests.
pub const STORED_SIZE_HEADER: &str = "x-cairn-stored-size";

/// How an API server runs.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The object paths: redundancy, cache, locate and data-server deadlines.
    pub object: ObjectConfig,
    /// A data server silent for this long is no longer written to.
    pub heartbeat_expiry: Duration,
    /// How long the server waits on its own clients.
    pub http: HttpTimeouts,
    /// TLS and the request-head bound ([`server::ServeOptions`]).
    pub serve: ServeOptions,
    /// What it takes on: work in flight, object size, name length, request rate.
    pub limits: RequestLimits,
    /// The lifecycle workers' settings (retention, GC, healing).
    pub maintenance: MaintenanceConfig,
    /// Resumable uploads (tus): expiry, part size, largest upload.
    pub uploads: UploadSettings,
    /// The S3 front door.
    pub s3: S3Settings,
}

/// How the S3 front door runs.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// The domain of virtual-host style requests (`<bucket>.<domain>`, with the
    /// port if clients put one in `Host`); `None`: path-style only.
    pub domain: Option<String>,
}

/// What an API server takes on: how much work at once, how large an object, how
/// long a name, how many requests per second of one key ([`limits`]). Past an
/// in-flight limit a request is answered at once with 503 and `Retry-After` (S3:
/// `SlowDown`) instead of queueing: memory and connections to the data tier stay
/// bounded by configuration, and clients (S3 SDKs, rclone, curl --retry) back off
/// and retry on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests being handled at once (an upload counts from its start until its
    /// answer; a read until its answer's headers: its body then streams with
    /// [`READ_AHEAD`](crate::object::read) stripes of memory at most).
    pub requests: usize,
    /// Large uploads (`PUT`) being handled at once: those without a
    /// `Content-Length` or with one of at least the small-object threshold. Each
    /// holds up to the small-object threshold plus a stripe and a few blocks per
    /// shard.
    pub uploads: usize,
    /// Memory for small uploads, by their `Content-Length` (below the small-object
    /// threshold: held whole, so an upload costs about its size). They do not take
    /// one of the [`uploads`](RequestLimits::uploads), so sixty-four clients of 4 KiB
    /// PUTs are not refused because thirty-two large ones would fill memory.
    pub small_upload_bytes: u64,
    /// The largest object (`--max-object-size`): a native PUT, an S3 PutObject or
    /// completed multipart upload (a part: at most [`limits::MAX_PART_SIZE`] too),
    /// a tus upload.
    pub max_object_size: u64,
    /// The longest name a new object may get (`--max-name-length`, at most
    /// [`names::MAX_NAME_LEN`]).
    pub max_name_len: usize,
    /// Requests per second of one access key (`--rate-limit`); `None`: no limit.
    pub rate: Option<limits::Rate>,
}

impl Default for RequestLimits {
    /// 1024 requests and 32 uploads. Measured on the multi-process layout
    /// (`tests/bounded_memory.rs`), a large upload costs an API server ~3 MiB and a
    /// large read ~4 MiB (its decoded stripes, its hash queue and four shard
    /// connections' buffers), so 32 uploads beside 64 large reads stay well under
    /// 512 MiB; small reads and listings cost far less. Small uploads share 64 MiB
    /// (sixteen thousand 4 KiB PUTs, or sixty-four of 1 MiB, before the request limit).
    fn default() -> Self {
        RequestLimits {
            requests: 1024,
            uploads: 32,
            small_upload_bytes: 64 << 20,
            max_object_size: limits::DEFAULT_MAX_OBJECT_SIZE,
            max_name_len: names::MAX_NAME_LEN,
            rate: None,
        }
    }
}

/// Seconds a client is told to wait after a 503 for overload.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Everything a request can fail with, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The object name is refused.
    #[error(transparent)]
    BadName(#[from] names::BadName),
    /// The digest headers are refused.
    #[error(transparent)]
    BadDigest(#[from] digest::BadDigest),
    /// `?version=` is not a positive integer.
    #[error("version must be a positive integer, got {0:?}")]
    BadVersion(String),
    /// A query parameter is malformed.
    #[error("query parameter {key} must be {expected}, got {value:?}")]
    BadQuery {
        /// The parameter.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
        /// Its value.
        value: String,
    },
    /// The body is larger than the largest object.
    #[error("the object is larger than the largest object, {limit} bytes (--max-object-size)")]
    TooLarge {
        /// The largest object.
        limit: u64,
    },
    /// The caller may not do this ([`policy::authorize`]).
    #[error(transparent)]
    Refused(#[from] policy::Refusal),
    /// The object paths failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadName(_) | ApiError::BadDigest(_) | ApiError::BadVersion(_) | ApiError::BadQuery { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Refused(_) => StatusCode::FORBIDDEN,
            ApiError::Object(e) => match e.kind() {
                FailureKind::Missing => StatusCode::NOT_FOUND,
                FailureKind::BadRequest => StatusCode::BAD_REQUEST,
                FailureKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
                FailureKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        (status, format!("{self}\n")).into_response()
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: ApiConfig,
    bus: Bus,
    meta: Arc<dyn MetaStore>,
    shutdown: CancellationToken,
) -> Result<(), crate::bus::BusError> {
    let (ready, _) = tokio::sync::oneshot::channel();
    serve_with_ready(listener, config, bus, meta, shutdown, ready).await
}

/// [`serve`], signalling `ready` once the server is subscribed to heartbeats.
pub async fn serve_with_ready(
    listener: TcpListener,
    config: ApiConfig,
    bus: Bus,
    meta: Arc<dyn MetaStore>,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), crate::bus::BusError> {
    let membership = Membership::new(config.heartbeat_expiry);
    let tasks = TaskTracker::new();
    membership.follow(bus.heartbeats().await?, shutdown.clone(), &tasks);
    tasks.close();
    let _ = ready.send(());
    let object = config.object.clone();
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let scope = Scope::new(Role::Api, &addr);
    let service = ObjectService::new(meta, bus, membership, object.clone(), shutdown.clone(), scope);
    let workers = Workers::new(TaskTracker::new(), shutdown.clone(), service.telemetry_scope().clone());
    let maintenance = maintenance::start(&service, workers.clone(), config.maintenance.clone());
    service.start_repair(&workers);
    tracing::info!(%addr, tls = config.serve.tls.is_some(), policy = %object.policy, small_policy = %object.small_policy, small_threshold = object.small_threshold, "API server listening");
    let refusals = limits::Refusals::new(service.telemetry_scope());
    let door = limits::Door {
        max_object_size: config.limits.max_object_size,
        max_name_len: config.limits.max_name_len,
        refusals: refusals.clone(),
    };
    let mut keys = keys::KeyRing::new(service.meta.clone());
    if let Some(rate) = config.limits.rate {
        keys = keys.with_rate(Arc::new(limits::RateLimiter::new(rate, refusals.clone())));
    }
    match keys.is_open().await {
        Ok(true) => tracing::warn!(
            "NO ACCESS KEYS: anyone who can reach this server can read, overwrite and delete every object \
             (create one with `cairn admin key create`)"
        ),
        Ok(false) => tracing::info!("access keys in force: every request must be signed"),
        Err(e) => tracing::warn!(error = %e, "cannot read the access keys yet"),
    }
    let s3 =
        match s3::service(s3::CairnS3::new(service.clone(), keys.clone(), door.clone()), config.s3.domain.as_deref()) {
            Ok(s3) => s3,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the S3 interface");
                shutdown.cancel();
                return Ok(());
            }
        };
    let admission = UploadLimits::new(config.limits, service.config.small_threshold, refusals.clone());
    // One limit on object size: a tus upload becomes an object like any other.
    let mut uploads = config.uploads;
    uploads.max_size = uploads.max_size.min(config.limits.max_object_size);
    let tus = tus::Tus { service: service.clone(), settings: uploads, door: door.clone(), keys: keys.clone() };
    let native = router(service.clone(), admission.clone(), tus, door)
        .merge(admin::router(admin::Admin { service: service.clone(), maintenance, keys: keys.clone() }))
        .layer(middleware::from_fn_with_state(keys, keys::native_auth));
    let routes = with_s3(native, s3, config.s3.domain, &service, admission, config.limits, refusals);
    let mut options = config.serve;
    options.tls = options.tls.map(|tls| tls.counted(service.telemetry_scope()));
    let served = server::serve_with(listener, routes, config.http, options, shutdown).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "API server failed");
    }
    workers.stopped(Duration::from_secs(10)).await;
    service.stopped(Duration::from_secs(10)).await;
    tasks.wait().await;
    Ok(())
}

/// The native API's routes over `service`, with `admission` for its uploads and
/// `door` for what a request may ask. The tus routes ([`tus`], resumable uploads)
/// are merged in and share the upload admission. The request limit is applied to
/// these and to the S3 routes, over one count ([`with_s3`]).
fn router(service: ObjectService, admission: UploadLimits, tus: tus::Tus, door: limits::Door) -> Router {
    let uploads = middleware::from_fn_with_state(admission.clone(), UploadLimits::admit);
    let tus = tus::router(tus, admission);
    Router::new()
        .route("/objects/", get(list_objects).put(empty_name).delete(empty_name))
        .route("/objects", get(list_objects))
        .route("/versions/{*name}", get(versions))
        .route("/objects/{*name}", get(get_object).put(put_object.layer(uploads)).delete(delete_object))
        .route("/locate/{*name}", get(locate))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(tus)
        .layer(Extension(door))
        .layer(HttpMetrics::new(service.telemetry_scope().clone()))
        .with_state(Arc::new(service))
}

async fn healthz(State(svc): Svc) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "live_data_servers": svc.membership().live().len(),
        "repair": svc.repair_status(),
    }))
}

/// `GET /metrics`: the gauges read from this server's state, then the process's
/// metrics (every server in it: see [`crate::telemetry`]).
async fn metrics(State(svc): Svc) -> Response {
    let scope = svc.telemetry_scope();
    scope.gauge(telemetry::LIVE_DATA_SERVERS).set(svc.membership().live().len() as f64);
    let repair = svc.repair_status();
    scope.gauge(telemetry::REPAIR_QUEUE_DEPTH).set(repair.queued as f64);
    scope.gauge(telemetry::REPAIR_RUNNING).set(repair.running as f64);
    scope.counter(telemetry::REPAIR_FAILED).absolute(repair.failed);
    telemetry::response()
}
