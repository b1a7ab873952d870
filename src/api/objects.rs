//! The native object handlers: `PUT`/`GET`/`HEAD`/`DELETE /objects/<name>`, the
//! listing of names (`/objects/`), of versions (`/versions/<name>`) and
//! `/locate/<name>`, and the version headers and JSON they answer with.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::policy::{self, Action, Caller};
use super::{accept, digest, limits, names, ApiError, STORED_SIZE_HEADER, VERSION_HEADER};
use crate::content::Encoding;
use crate::meta::{VersionRecord, DEFAULT_BUCKET};
use crate::object::{ObjectError, ObjectService};
use crate::range::{self, ByteRange, RangeRequest};

pub(super) type Svc = State<Arc<ObjectService>>;

pub(super) async fn empty_name() -> ApiError {
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
pub(super) async fn put_object(
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

pub(super) async fn get_object(
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

pub(super) async fn delete_object(
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

pub(super) async fn locate(
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
pub(super) async fn versions(
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
pub(super) async fn list_objects(
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
