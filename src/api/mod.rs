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

pub mod accept;
pub mod admin;
pub mod digest;
pub mod keys;
pub mod limits;
pub mod names;
pub mod policy;
pub mod s3;
pub mod tus;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Extension, Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;

use crate::bus::Bus;
use crate::cluster::Membership;
use crate::content::Encoding;
use crate::maintenance::{self, MaintenanceConfig};
use crate::meta::{MetaStore, VersionRecord, DEFAULT_BUCKET};
use crate::object::resumable::UploadSettings;
use crate::object::{FailureKind, ObjectConfig, ObjectError, ObjectService};
use crate::range::{self, ByteRange, RangeRequest};
use crate::server::{self, HttpTimeouts, ServeOptions};
use crate::telemetry::{self, HttpMetrics, Role, Scope};
use crate::worker::Workers;
use policy::{Action, Caller};

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

/// The native routes with the S3 API beside them: a request is S3's when it is
/// virtual-host style (`Host` under `domain`) or its path is not a native route.
/// S3 uploads (PUT, POST) share the native uploads' admission; every request is
/// counted by the metrics. The request limit covers both with one count: tower's
/// semaphore (`GlobalConcurrencyLimit`) behind load shedding, so a request past
/// the limit is refused at once, not queued. It is applied to each side on its
/// own (to the native routes that matched, and to the S3 service) so that each
/// refuses in its client's words: 503 with `Retry-After`, and S3's `SlowDown`.
fn with_s3(
    native: Router,
    s3: s3s::service::S3Service,
    domain: Option<String>,
    service: &ObjectService,
    admission: UploadLimits,
    limits: RequestLimits,
    refusals: limits::Refusals,
) -> Router {
    let in_flight = Arc::new(Semaphore::new(limits.requests));
    let counted = refusals.clone();
    let native_requests = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: BoxError| {
            counted.count(limits::Limit::Requests);
            async { overloaded("requests") }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(&in_flight)));
    let s3_requests = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: BoxError| {
            refusals.count(limits::Limit::Requests);
            async { s3_overloaded("requests") }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight));
    let s3_service = tower::service_fn(move |request: Request| {
        let s3 = s3.clone();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if let Err((signed, e)) = s3::scope::check(request.uri().query(), request.headers(), s3::REGION, now) {
                return Ok(s3::scope::refused(signed, &e));
            }
            // HTTP/1.1: without Content-Length or Transfer-Encoding there is no body.
            // s3s needs to know it is empty (it checks a signed payload's length),
            // which a wrapped body no longer tells.
            let bodiless = !request.headers().contains_key(header::CONTENT_LENGTH)
                && !request.headers().contains_key(header::TRANSFER_ENCODING);
            let request =
                if bodiless { request.map(|_| s3s::Body::empty()) } else { request.map(s3s::Body::http_body_unsync) };
            Ok::<_, std::convert::Infallible>(match s3.call(request).await {
                Ok(response) => response.map(Body::new),
                Err(e) => {
                    tracing::warn!(error = ?e, "S3 request failed");
                    (StatusCode::INTERNAL_SERVER_ERROR, "S3 request failed\n").into_response()
                }
            })
        }
    });
    let s3_routes = Router::new()
        .fallback_service(s3_service)
        .layer(middleware::from_fn_with_state(admission, admit_s3_uploads))
        .layer(HttpMetrics::for_route(service.telemetry_scope().clone(), telemetry::S3_ROUTE))
        .layer(s3_requests);
    let dispatch_s3 = s3_routes.clone();
    native
        .route_layer(native_requests)
        .fallback_service(s3_routes)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let s3 = dispatch_s3.clone();
            let virtual_host =
                domain.as_deref().is_some_and(|d| is_virtual_host(&request, d)) || is_reserved_bucket_request(&request);
            async move {
                if virtual_host {
                    use tower::ServiceExt;
                    match s3.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                } else {
                    next.run(request).await
                }
            }
        }))
        .layer(middleware::from_fn(close_after_unanswered_expect))
}

/// A CreateBucket or DeleteBucket of a name the native API's paths take (`PUT
/// /objects`): S3's, so the client hears `InvalidBucketName` (or `NoSuchBucket`)
/// in S3's words, not a native 405.
fn is_reserved_bucket_request(request: &Request) -> bool {
    let name = request.uri().path().strip_prefix('/').unwrap_or("");
    matches!(*request.method(), Method::PUT | Method::DELETE) && s3::RESERVED_BUCKETS.contains(&name)
}

/// A request with `Expect: 100-continue` and an empty body is answered without a
/// `100 Continue` (there is nothing to continue), which botocore (boto/botocore#3755)
/// mistakes for the interim answer: it then reads the next answer on the
/// connection as this one's and stalls until the idle timeout. Closing such a
/// connection after its answer costs one reconnect and keeps every client right.
async fn close_after_unanswered_expect(request: Request, next: Next) -> Response {
    let expects = request
        .headers()
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let empty = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::trim) == Some("0");
    let mut response = next.run(request).await;
    if expects && empty {
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

/// Whether `request` addresses a bucket by host name under `domain`.
fn is_virtual_host(request: &Request, domain: &str) -> bool {
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    host.len() > domain.len() + 1 && host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.')
}

/// S3 writes (PUT and POST: objects, parts, completions) take an upload slot as
/// native PUTs do; refused, they hear S3's `SlowDown`.
async fn admit_s3_uploads(State(limits): State<UploadLimits>, request: Request, next: Next) -> Response {
    if request.method() != Method::PUT && request.method() != Method::POST {
        return next.run(request).await;
    }
    match limits.permit(request.headers()) {
        Some(_permit) => next.run(request).await,
        None => s3_overloaded("uploads"),
    }
}

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
    fn new(limits: RequestLimits, small_threshold: u64, refusals: limits::Refusals) -> UploadLimits {
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
    fn permit(&self, headers: &HeaderMap) -> Option<tokio::sync::OwnedSemaphorePermit> {
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
fn overloaded(what: &'static str) -> Response {
    tracing::debug!(what, "over the limit; refusing a request");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        format!("too many {what} in flight; retry shortly\n"),
    )
        .into_response()
}

/// The S3 answer past an in-flight limit: 503 `SlowDown` with `Retry-After`.
fn s3_overloaded(what: &'static str) -> Response {
    tracing::debug!(what, "over the limit; refusing an S3 request");
    limits::slow_down(Duration::from_secs(RETRY_AFTER_SECS), &format!("too many {what} in flight; retry shortly"))
}

type Svc = State<Arc<ObjectService>>;

async fn empty_name() -> ApiError {
    ApiError::BadName(names::BadName::Empty)
}

/// Most names or versions one listing request returns.
pub const MAX_PAGE: usize = 1000;

/// Versions fetched from the store per step while streaming `/versions/<name>`.
const VERSIONS_STEP: usize = 500;

fn parse_number(query: &HashMap<String, String>, key: &'static str) -> Result<Option<u64>, ApiError> {
    query
        .get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| ApiError::BadQuery {
                key,
                expected: "a non-negative integer",
                value: v.clone(),
            })
        })
        .transpose()
}

fn parse_version(query: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match query.get("version") {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(ApiError::BadVersion(v.clone())),
        },
    }
}

/// `PUT /objects/<name>`. A `Content-Length` over the largest object is refused
/// before any byte of the body is read; a body without one is cut where it passes
/// the limit, and the write path then stores nothing.
async fn put_object(
    State(svc): Svc,
    Extension(door): Extension<limits::Door>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    policy::authorize(&caller, Action::Write, Some(DEFAULT_BUCKET))?;
    door.new_name(&name)?;
    let limit = door.max_object_size;
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(declared) = text(header::CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok()) {
        if !door.fits(declared, limit) {
            return Err(ApiError::TooLarge { limit });
        }
    }
    let expected = digest::expected(text("digest"), text("content-digest"))?;
    let cap = limits::SizeCap::new(limit);
    let body = cap.wrap(body.into_data_stream(), || axum::Error::new(ApiError::TooLarge { limit }));
    let record = match svc.put(DEFAULT_BUCKET, &name, body, expected).await {
        Ok(record) => record,
        Err(ObjectError::BodyBroken(_)) if cap.exceeded() => {
            door.count_too_large();
            return Err(ApiError::TooLarge { limit });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(version_headers(&record, Json(version_json(&record))))
}

async fn get_object(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    policy::authorize(&caller, Action::Read, Some(DEFAULT_BUCKET))?;
    names::validate(&name)?;
    let version = parse_version(&query)?;
    let record = svc.find(DEFAULT_BUCKET, &name, version).await?;
    let content = record.content.as_ref().expect("find returns no tombstones");
    let size = content.size;
    let full = ByteRange { start: 0, end: size };
    let (status, range) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => (StatusCode::OK, full),
        Some(h) => match range::parse(h, size) {
            RangeRequest::Full => (StatusCode::OK, full),
            RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
            RangeRequest::Unsatisfiable => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}")), (header::VARY, "accept-encoding".to_string())],
                )
                    .into_response())
            }
        },
    };
    // Compressed content goes out as stored to a client that takes zstd, for a
    // whole-object request only (a range is of the original bytes).
    let passthrough = content.encoding == Encoding::Zstd
        && !headers.contains_key(header::RANGE)
        && accept::accepts_zstd(headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()));
    let length = if passthrough { content.stored_len() } else { range.len() };
    let body = match (method == Method::HEAD, passthrough) {
        (true, _) => Body::empty(),
        (false, true) => Body::from_stream(svc.read_stored(content).await?),
        (false, false) => Body::from_stream(svc.read(content, range).await?),
    };
    let mut response = version_headers(&record, (status, [(header::CONTENT_LENGTH, length.to_string())], body));
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("static header"));
    h.insert(header::CONTENT_TYPE, "application/octet-stream".parse().expect("static header"));
    h.insert(header::VARY, "accept-encoding".parse().expect("static header"));
    h.insert(STORED_SIZE_HEADER, content.stored_len().into());
    if passthrough {
        h.insert(header::CONTENT_ENCODING, "zstd".parse().expect("static header"));
        // Another representation, so another entity tag.
        if let Ok(v) = format!("\"{}-zstd\"", content.hash).parse() {
            h.insert(header::ETAG, v);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = range.content_range(size).parse() {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

async fn delete_object(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    policy::authorize(&caller, Action::Delete, Some(DEFAULT_BUCKET))?;
    names::validate(&name)?;
    // Deleting what does not exist (or is already deleted) is a 404, not a new tombstone.
    let record = svc.delete(DEFAULT_BUCKET, &name).await?;
    Ok(version_headers(&record, Json(version_json(&record))))
}

async fn locate(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    policy::authorize(&caller, Action::Read, Some(DEFAULT_BUCKET))?;
    names::validate(&name)?;
    let record = svc.find(DEFAULT_BUCKET, &name, None).await?;
    let content = record.content.as_ref().expect("find returns no tombstones");
    let placement = svc.locate(content).await?;
    if placement.is_empty() {
        return Ok((StatusCode::NOT_FOUND, format!("no data server holds {}\n", content.hash)).into_response());
    }
    let shards: serde_json::Map<String, serde_json::Value> =
        placement.into_iter().map(|(shard, addr)| (shard.to_string(), addr.into())).collect();
    Ok(Json(json!({ "hash": content.hash, "size": content.size, "shards": shards })).into_response())
}

/// `GET /versions/<name>`: one JSON object per line, oldest first. Without `limit`
/// every version is streamed, fetched from the store a step at a time so memory
/// stays flat however many versions a name has; with `limit` (at most
/// [`MAX_PAGE`]) one page, continued with `after=<last version seen>`.
async fn versions(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    policy::authorize(&caller, Action::Read, Some(DEFAULT_BUCKET))?;
    names::validate(&name)?;
    let after = parse_number(&query, "after")?.unwrap_or(0);
    let limit = parse_number(&query, "limit")?.map(|l| (l as usize).min(MAX_PAGE));
    if limit == Some(0) {
        // A page of nothing is a malformed request, not a missing name.
        let value = query.get("limit").cloned().unwrap_or_default();
        return Err(ApiError::BadQuery { key: "limit", expected: "a positive integer", value });
    }
    let step = limit.unwrap_or(VERSIONS_STEP).min(VERSIONS_STEP);
    let first = svc.versions(DEFAULT_BUCKET, &name, after, step).await?;
    if first.is_empty() && after == 0 {
        return Err(ObjectError::NotFound { name }.into());
    }
    let lines = futures_util::stream::unfold(
        (Some(first), after, limit.unwrap_or(usize::MAX), svc, name),
        |(page, after, left, svc, name)| async move {
            if left == 0 {
                return None;
            }
            let page = match page {
                Some(p) => p,
                None => match svc.versions(DEFAULT_BUCKET, &name, after, left.min(VERSIONS_STEP)).await {
                    Ok(p) => p,
                    Err(e) => {
                        let err = std::io::Error::other(e.to_string());
                        return Some((Err(err), (Some(Vec::new()), after, 0, svc, name)));
                    }
                },
            };
            let last = page.last()?.version;
            let taken = page.len().min(left);
            let mut text = String::new();
            for record in page.iter().take(taken) {
                text.push_str(&version_json(record).to_string());
                text.push('\n');
            }
            Some((Ok::<_, std::io::Error>(text), (None, last, left - taken, svc, name)))
        },
    );
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// `GET /objects/?prefix=P&after=K&limit=M`: the current, non-deleted names in name
/// order, as `{"objects": [...], "truncated": bool, "next": K}`; pass `next` as
/// `after` for the following page.
async fn list_objects(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    policy::authorize(&caller, Action::List, Some(DEFAULT_BUCKET))?;
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    let after = query.get("after").map(String::as_str);
    let limit = parse_number(&query, "limit")?.map_or(MAX_PAGE, |l| (l as usize).clamp(1, MAX_PAGE));
    // One more than asked tells whether another page exists.
    let mut page = svc.list(DEFAULT_BUCKET, prefix, after, limit + 1).await?;
    let truncated = page.len() > limit;
    page.truncate(limit);
    let next = if truncated { page.last().map(|r| r.name.clone()) } else { None };
    let objects: Vec<serde_json::Value> = page.iter().map(version_json).collect();
    Ok(Json(json!({ "objects": objects, "truncated": truncated, "next": next })).into_response())
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

/// The JSON description of one version.
fn version_json(record: &VersionRecord) -> serde_json::Value {
    json!({
        "name": record.name,
        "version": record.version,
        "size": record.content.as_ref().map_or(0, |c| c.size),
        "hash": record.content.as_ref().map(|c| c.hash.to_hex()),
        "created": record.created_ms,
        "deleted": record.is_tombstone(),
    })
}

fn version_headers(record: &VersionRecord, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let h = response.headers_mut();
    if let Ok(v) = record.version.to_string().parse() {
        h.insert(VERSION_HEADER, v);
    }
    if let Some(c) = &record.content {
        if let Ok(v) = format!("\"{}\"", c.hash).parse() {
            h.insert(header::ETAG, v);
        }
    }
    response
}
