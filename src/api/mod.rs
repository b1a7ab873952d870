//! The API server (`cairn api`): the REST interface clients talk to.
//!
//! | request | meaning |
//! |---|---|
//! | `PUT /objects/<name>` | store a new version (streamed; optional `Digest`/`Content-Digest`) |
//! | `GET`/`HEAD /objects/<name>[?version=N]` | read it (`Range` supported) |
//! | `DELETE /objects/<name>` | add a tombstone version |
//! | `GET /locate/<name>` | where its shards are, asked on the bus |
//! | `GET /healthz` | liveness and how many data servers are live |
//!
//! Handlers parse the request, call [`ObjectService`], and map its errors to a
//! status in exactly one place ([`ApiError`]'s `IntoResponse`). They never touch
//! files or the bus themselves.

pub mod digest;
pub mod names;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::cluster::Membership;
use crate::content::Policy;
use crate::meta::{MetaError, MetaStore, VersionRecord, DEFAULT_BUCKET};
use crate::object::{ObjectConfig, ObjectError, ObjectService};
use crate::range::{self, ByteRange, RangeRequest};

/// Header carrying the version a response is about.
pub const VERSION_HEADER: &str = "x-cairn-version";

/// How an API server runs.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Redundancy for new content.
    pub policy: Policy,
    /// A data server silent for this long is no longer written to.
    pub heartbeat_expiry: Duration,
    /// How long a locate waits for replies at most.
    pub locate_timeout: Duration,
}

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
    /// The object paths failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadName(_) | ApiError::BadDigest(_) | ApiError::BadVersion(_) => StatusCode::BAD_REQUEST,
            ApiError::Object(e) => match e {
                ObjectError::NotFound { .. } | ObjectError::Deleted { .. } => StatusCode::NOT_FOUND,
                ObjectError::DigestMismatch { .. } | ObjectError::BodyBroken(_) => StatusCode::BAD_REQUEST,
                ObjectError::NotEnoughServers { .. }
                | ObjectError::QuorumNotReached { .. }
                | ObjectError::Unavailable { .. }
                | ObjectError::Bus(_)
                | ObjectError::Meta(MetaError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
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
    membership.follow(bus.heartbeats().await?, shutdown.clone());
    let _ = ready.send(());
    let service = ObjectService::new(
        meta,
        bus,
        membership,
        ObjectConfig { policy: config.policy, locate_timeout: config.locate_timeout },
    );
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, policy = %config.policy, "API server listening");
    let served =
        axum::serve(listener, router(service)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "API server failed");
    }
    Ok(())
}

/// The API's routes over `service`.
pub fn router(service: ObjectService) -> Router {
    Router::new()
        .route("/objects/", get(empty_name).put(empty_name).delete(empty_name))
        .route("/objects/{*name}", get(get_object).put(put_object).delete(delete_object))
        .route("/locate/{*name}", get(locate))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(service))
}

type Svc = State<Arc<ObjectService>>;

async fn empty_name() -> ApiError {
    ApiError::BadName(names::BadName::Empty)
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

async fn put_object(
    State(svc): Svc,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    names::validate(&name)?;
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let expected = digest::expected(text("digest"), text("content-digest"))?;
    let record = svc.put(DEFAULT_BUCKET, &name, body.into_data_stream(), expected).await?;
    Ok(version_headers(&record, Json(version_json(&record))))
}

async fn get_object(
    State(svc): Svc,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
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
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{size}"))])
                    .into_response())
            }
        },
    };
    let body = if method == Method::HEAD { Body::empty() } else { Body::from_stream(svc.read(content, range).await?) };
    let mut response = version_headers(&record, (status, [(header::CONTENT_LENGTH, range.len().to_string())], body));
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("static header"));
    h.insert(header::CONTENT_TYPE, "application/octet-stream".parse().expect("static header"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = range.content_range(size).parse() {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

async fn delete_object(State(svc): Svc, Path(name): Path<String>) -> Result<Response, ApiError> {
    names::validate(&name)?;
    // Deleting what does not exist (or is already deleted) is a 404, not a new tombstone.
    svc.find(DEFAULT_BUCKET, &name, None).await?;
    let record = svc.delete(DEFAULT_BUCKET, &name).await?;
    Ok(version_headers(&record, Json(version_json(&record))))
}

async fn locate(State(svc): Svc, Path(name): Path<String>) -> Result<Response, ApiError> {
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

async fn healthz(State(svc): Svc) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "live_data_servers": svc.membership().live().len() }))
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
