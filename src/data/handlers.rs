//! The data server's shard routes: the temp + commit protocol (`/temp/<uuid>`), a
//! whole shard in one request, verified reads, deletes and purges
//! (`/objects/<hash>.<shard>`, `POST /purge`) and the listing (`GET /shards`), as
//! the [`super`] module doc describes them. Handlers parse the request, run the
//! disk work on a blocking thread ([`super::blocking`]) and map
//! [`StoreError`]s to a status in one place ([`store_error`]).

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::store::{self, ShardStore, StoreError, StoredShard};
use super::wire::{
    DeleteQuery, HeldShard, ListQuery, PurgeRequest, Purged, ShardPage, Written, HASH_HEADER, LENGTH_HEADER, MAX_PAGE,
    POLICY_HEADER, SHARD_HEADER,
};
use super::{blocking, volume, DataState};
use crate::content::{ContentHash, Policy, ShardIndex};
use crate::range::{self, RangeRequest};
use crate::telemetry;

pub(super) fn reason(status: StatusCode, text: impl ToString) -> Response {
    (status, text.to_string()).into_response()
}

pub(super) fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::NoSuchTemp(_) | StoreError::NoSuchShard { .. } => StatusCode::NOT_FOUND,
        StoreError::TempExists(_)
        | StoreError::LengthMismatch { .. }
        | StoreError::PolicyMismatch { .. }
        | StoreError::IdentityMismatch { .. } => StatusCode::CONFLICT,
        StoreError::Volume { source: volume::VolumeError::Collision { .. }, .. } => StatusCode::CONFLICT,
        StoreError::Volume { source: volume::VolumeError::ShardIndex(_), .. } => StatusCode::BAD_REQUEST,
        StoreError::Corrupt { .. } | StoreError::Volume { .. } | StoreError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "storage error");
    }
    reason(status, e)
}

/// A request the data server refuses, with the reason (400).
pub(super) struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        reason(StatusCode::BAD_REQUEST, self.0)
    }
}

pub(super) fn parse_id(id: &str) -> Result<Uuid, BadRequest> {
    Uuid::parse_str(id).map_err(|_| BadRequest(format!("temp id must be a UUID: {id:?}")))
}

/// The answer to a shard written (and fsynced): its length, in a header and as JSON.
pub(super) fn written(len: u64) -> Response {
    (StatusCode::OK, [(LENGTH_HEADER, len.to_string())], axum::Json(Written { len })).into_response()
}

/// A chunk for the blocking temp writer, or the order to give up.
pub(super) type TempChunk = Result<Bytes, ()>;

pub(super) async fn post_temp(
    State(state): State<Arc<DataState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (id, policy) = match parse_id(&id).and_then(|id| Ok((id, optional_header::<Policy>(&headers, POLICY_HEADER)?)))
    {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match receive(&state.store, id, policy, body, None).await {
        Ok(len) => written(len),
        Err(r) => r,
    }
}

/// `PUT /objects/<hash>.<shard>`: a whole shard in one request — written to a temp
/// file, fsynced and committed like the temp protocol does in three. For shards the
/// API server has whole in memory (small objects), whose hash it already knows.
pub(super) async fn put_shard(
    State(state): State<Arc<DataState>>,
    Path(file): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((hash, shard)) = parse_shard_name(&file) else {
        return reason(StatusCode::BAD_REQUEST, format!("expected <sha256-hex>.<shard>, got {file:?}"));
    };
    let policy = match optional_header::<Policy>(&headers, POLICY_HEADER) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let id = Uuid::new_v4();
    // From the header, not the body's size hint: the body-timeout layer's wrapper
    // does not pass the hint on, which sent every shard down the streaming path.
    let known_len = match optional_header::<u64>(&headers, header::CONTENT_LENGTH.as_str()) {
        Ok(len) => len.or(body.size_hint().exact()),
        Err(r) => return r.into_response(),
    };
    let _buffer_permit = match known_len.filter(|&n| n <= SMALL_SHARD) {
        Some(n) => match state.buffered.clone().acquire_many_owned(n.div_ceil(1024).max(1) as u32).await {
            Ok(permit) => Some(permit),
            Err(_) => return reason(StatusCode::SERVICE_UNAVAILABLE, "data server shutting down"),
        },
        None => None,
    };
    if known_len.is_some_and(|n| state.store.is_small(n)) {
        // A small shard: a record in the active volume, group-committed.
        let stored = match axum::body::to_bytes(body, SMALL_SHARD as usize).await {
            Ok(bytes) => state.store.put_small(hash, shard, policy, bytes).await.map_err(store_error),
            Err(e) => Err(reason(StatusCode::BAD_REQUEST, format!("upload broken off: {e}"))),
        };
        return match stored {
            Ok(_) => {
                state.shards_written.increment(1);
                written(known_len.unwrap_or_default())
            }
            Err(r) => r,
        };
    }
    let small = known_len.is_some_and(|n| n <= SMALL_SHARD);
    let stored = if small {
        // Small and of known length: gather it here and write, fsync and commit in
        // one blocking job, without a channel hop per chunk.
        match axum::body::to_bytes(body, SMALL_SHARD as usize).await {
            Ok(bytes) => blocking(state.store.clone(), move |s| {
                let written = (|| {
                    let mut w = s.create_temp(id, policy)?;
                    w.write(&bytes)?;
                    let len = w.finish()?;
                    s.commit(id, &hash, shard, len, policy)?;
                    Ok(len)
                })();
                if written.is_err() {
                    // The id is fresh, so whatever temp file exists under it is ours.
                    let _ = s.abort(id);
                }
                written
            })
            .await
            .map_err(store_error),
            Err(e) => Err(reason(StatusCode::BAD_REQUEST, format!("upload broken off: {e}"))),
        }
    } else {
        receive(&state.store, id, policy, body, Some((hash, shard))).await
    };
    match stored {
        Ok(len) => {
            state.shards_written.increment(1);
            written(len)
        }
        Err(r) => r,
    }
}

/// Shards up to this size, sent with a known length, are gathered in memory before
/// they are written (`PUT /objects/<hash>.<shard>`).
pub(super) const SMALL_SHARD: u64 = 1024 * 1024;

/// Streams `body` into temp shard `id` (cut under `policy`) and fsyncs it, then, with `commit_as`,
/// commits it under that name in the same blocking job. Returns the shard's length;
/// on any failure (a broken body, a disk error) the temp file is gone.
pub(super) async fn receive(
    store: &ShardStore,
    id: Uuid,
    policy: Option<Policy>,
    body: Body,
    commit_as: Option<(ContentHash, ShardIndex)>,
) -> Result<u64, Response> {
    let (tx, mut rx) = mpsc::channel::<TempChunk>(4);
    // Spawned now (not lazily on first poll, as `blocking` would be): it must drain
    // the channel while the body is still arriving.
    let writer_store = store.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Option<u64>, StoreError> {
        let mut w = writer_store.create_temp(id, policy)?;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Ok(bytes) => w.write(&bytes)?,
                Err(()) => return Ok(None),
            }
        }
        let len = w.finish()?;
        if let Some((hash, shard)) = commit_as {
            writer_store.commit(id, &hash, shard, len, policy)?;
        }
        Ok(Some(len))
    });
    let writer = async move { writer.await.unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e)))) };
    let mut body = body.into_data_stream();
    let mut client_failed = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => Ok(c),
            Err(e) => {
                client_failed = Some(e);
                Err(())
            }
        };
        let stop = chunk.is_err();
        // The writer stopped (disk error): its result says why.
        if tx.send(chunk).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    match writer.await {
        Ok(Some(len)) if client_failed.is_none() => Ok(len),
        Ok(_) => {
            let _ = blocking(store.clone(), move |s| s.abort(id)).await;
            let why = client_failed.map(|e| e.to_string()).unwrap_or_default();
            tracing::info!(%id, %why, "upload broken off; temp shard removed");
            Err(reason(StatusCode::BAD_REQUEST, format!("upload broken off: {why}")))
        }
        Err(e @ StoreError::TempExists(_)) => Err(store_error(e)),
        Err(e) => {
            let _ = blocking(store.clone(), move |s| s.abort(id)).await;
            Err(store_error(e))
        }
    }
}

pub(super) fn header_value<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<T, BadRequest> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BadRequest(format!("missing or malformed {name} header")))
}

/// An optional header: `None` when absent, 400 when present and malformed.
pub(super) fn optional_header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<Option<T>, BadRequest> {
    let Some(value) = headers.get(name) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| BadRequest(format!("malformed {name} header")))
}

pub(super) async fn commit_temp(
    State(state): State<Arc<DataState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let parsed = (|| {
        Ok::<_, BadRequest>((
            parse_id(&id)?,
            header_value::<ContentHash>(&headers, HASH_HEADER)?,
            header_value::<ShardIndex>(&headers, SHARD_HEADER)?,
            header_value::<u64>(&headers, LENGTH_HEADER)?,
            optional_header::<Policy>(&headers, POLICY_HEADER)?,
        ))
    })();
    let (id, hash, shard, len, policy) = match parsed {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match blocking(state.store.clone(), move |s| s.commit(id, &hash, shard, len, policy)).await {
        Ok(_) => {
            state.shards_written.increment(1);
            StatusCode::OK.into_response()
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn abort_temp(State(state): State<Arc<DataState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match blocking(state.store.clone(), move |s| s.abort(id)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

/// `DELETE /objects/<hash>.<shard>`: moves the shard to `garbage/` (an API server
/// found that it holds the wrong content), or with `?purge=1` deletes it for good
/// (the garbage collector). 204, or 404 when it is not here.
pub(super) async fn delete_shard(
    State(state): State<Arc<DataState>>,
    Path(file): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Response {
    let Some((hash, shard)) = parse_shard_name(&file) else {
        return reason(StatusCode::BAD_REQUEST, format!("expected <sha256-hex>.<shard>, got {file:?}"));
    };
    let purge = match query.purge.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(other) => return reason(StatusCode::BAD_REQUEST, format!("purge must be 1 or 0, got {other:?}")),
    };
    if purge {
        return match blocking(state.store.clone(), move |s| s.purge(&hash, shard)).await {
            Ok(()) => {
                purged_metric(&state, 1);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => store_error(e),
        };
    }
    match blocking(state.store.clone(), move |s| s.quarantine(&hash, shard)).await {
        Ok(()) => {
            tracing::warn!(%hash, shard, "shard moved to garbage on request");
            state.findings.push(hash, shard, crate::clock::now_ms());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_error(e),
    }
}

pub(super) fn purged_metric(state: &DataState, n: u64) {
    state.scope.counter(telemetry::SHARDS_PURGED).increment(n);
}

/// `POST /purge`: purges every shard named (see the module doc), in one blocking
/// job; `{"purged":N,"missing":M}`.
pub(super) async fn purge_many(State(state): State<Arc<DataState>>, body: Bytes) -> Response {
    let body: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return reason(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"shards\":[{{\"hash\":..,\"shard\":N}}]}}: {e}"),
            )
        }
    };
    if body.shards.len() > MAX_PAGE {
        return reason(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_PAGE} shards per request, got {}", body.shards.len()),
        );
    }
    let done = blocking(state.store.clone(), move |s| {
        let (mut purged, mut missing) = (0u64, 0u64);
        for item in body.shards {
            match s.purge(&item.hash, item.shard) {
                Ok(()) => purged += 1,
                Err(StoreError::NoSuchShard { .. }) => missing += 1,
                Err(e) => return Err(e),
            }
        }
        Ok((purged, missing))
    })
    .await;
    match done {
        Ok((purged, missing)) => {
            purged_metric(&state, purged);
            axum::Json(Purged { purged, missing }).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `GET /shards`: a page of the shards held here (see the module doc).
pub(super) async fn list_shards(State(state): State<Arc<DataState>>, Query(query): Query<ListQuery>) -> Response {
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(a) => match parse_shard_name(a) {
            Some(a) => Some(a),
            None => return reason(StatusCode::BAD_REQUEST, format!("after must be <sha256-hex>.<shard>, got {a:?}")),
        },
    };
    let limit = query.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return reason(StatusCode::BAD_REQUEST, format!("limit must be 1..={MAX_PAGE}"));
    }
    match blocking(state.store.clone(), move |s| s.list(after, limit)).await {
        Ok((shards, next)) => {
            let shards = shards
                .into_iter()
                .map(|s| HeldShard {
                    hash: s.hash,
                    shard: s.shard,
                    len: s.len,
                    policy: s.policy.map(|p| p.to_string()),
                    age_s: s.age_s,
                })
                .collect();
            let next = next.map(|(h, s)| format!("{h}.{s}"));
            axum::Json(ShardPage { shards, next }).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// Parses `<hash>.<shard>`.
pub(super) fn parse_shard_name(file: &str) -> Option<(ContentHash, ShardIndex)> {
    let (hash, shard) = file.split_once('.')?;
    Some((hash.parse().ok()?, shard.parse().ok()?))
}

/// Blocks of verified shard bytes in flight between the disk reader and the socket.
pub(super) const READ_AHEAD: usize = 4;

pub(super) async fn get_shard(
    State(state): State<Arc<DataState>>,
    Path(file): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some((hash, shard)) = parse_shard_name(&file) else {
        return reason(StatusCode::BAD_REQUEST, format!("expected <sha256-hex>.<shard>, got {file:?}"));
    };
    let expected = optional_header::<u64>(&headers, LENGTH_HEADER)
        .and_then(|len| Ok((len, optional_header::<Policy>(&headers, POLICY_HEADER)?)));
    let (expected_len, expected_policy) = match expected {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let reader = match blocking(state.store.clone(), move |s| s.open_shard(&hash, shard)).await {
        Ok(r) => r,
        Err(e) => {
            if e.is_corrupt() && blocking(state.store.clone(), move |s| s.quarantine(&hash, shard)).await.is_ok() {
                state.findings.push(hash, shard, crate::clock::now_ms());
            }
            return store_error(e);
        }
    };
    // Not quarantined on a mismatch: the reader's record may be the stale side.
    if let Err(e) = store::check_identity(&hash, shard, &reader, expected_len, expected_policy) {
        return store_error(e);
    }
    let total = reader.data_len();
    let (status, range) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => (StatusCode::OK, range::ByteRange { start: 0, end: total }),
        Some(h) => match range::parse(h, total) {
            RangeRequest::Full => (StatusCode::OK, range::ByteRange { start: 0, end: total }),
            RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
            RangeRequest::Unsatisfiable => {
                return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{total}"))])
                    .into_response()
            }
        },
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, range.len())
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
        .header(LENGTH_HEADER, total);
    if let Some(policy) = reader.policy() {
        builder = builder.header(POLICY_HEADER, policy.to_string());
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(header::CONTENT_RANGE, range.content_range(total));
    }
    if method == Method::HEAD || range.is_empty() {
        return builder.body(Body::empty()).unwrap_or_else(|e| reason(StatusCode::INTERNAL_SERVER_ERROR, e));
    }
    let reader = match reader {
        // Read whole and verified already.
        StoredShard::Record(record) => {
            let body = record.data.slice(range.start as usize..range.end as usize);
            return builder.body(Body::from(body)).unwrap_or_else(|e| reason(StatusCode::INTERNAL_SERVER_ERROR, e));
        }
        StoredShard::File(reader) => reader,
    };

    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD);
    let store = state.store.clone();
    let findings = state.findings.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let result =
            reader.read_range(range.start, range.end, |block| tx.blocking_send(Ok(Bytes::from(block))).is_ok());
        if let Err(source) = result {
            // Never serve the bad block: end the stream with an error, which aborts the
            // response, and move the shard aside so it is neither served nor announced.
            tracing::error!(%hash, shard, error = %source, "corrupt shard detected while serving");
            if store.quarantine(&hash, shard).is_ok() {
                findings.push(hash, shard, crate::clock::now_ms());
            }
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("shard {hash}.{shard}: {source}"))));
        }
    });
    // Look at the first block before committing to a 200, so that a shard whose
    // start is corrupt gets a proper error status.
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => return reason(StatusCode::INTERNAL_SERVER_ERROR, e),
        None => return reason(StatusCode::INTERNAL_SERVER_ERROR, "shard reader stopped"),
    };
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
    let stream = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    builder.body(Body::from_stream(stream)).unwrap_or_else(|e| reason(StatusCode::INTERNAL_SERVER_ERROR, e))
}
