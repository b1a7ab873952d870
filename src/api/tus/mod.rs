//! Resumable uploads over HTTP: the tus 1.0 protocol (<https://tus.io/protocols/resumable-upload>),
//! core and the extensions creation, creation-with-upload, creation-defer-length,
//! termination, checksum and expiration, so that existing clients (tuspy,
//! tus-js-client) work unchanged. The handlers parse headers and map errors; the
//! upload itself is [`crate::object::resumable`].
//!
//! | request | meaning |
//! |---|---|
//! | `OPTIONS /uploads` | 204: `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`, `Tus-Checksum-Algorithm` |
//! | `POST /uploads` | create: `Upload-Length` or `Upload-Defer-Length: 1`, `Upload-Metadata` (`name` or `filename`, optional `bucket`), optional `Digest`/`Content-Digest` of the whole; 201 + `Location: /uploads/<id>`; a body of type `application/offset+octet-stream` is the first PATCH |
//! | `HEAD /uploads/<id>` | `Upload-Offset`, `Upload-Length` (or `Upload-Defer-Length`), `Upload-Metadata` |
//! | `PATCH /uploads/<id>` | append at `Upload-Offset` (409 elsewhere, 415 without `application/offset+octet-stream`, 460 on an `Upload-Checksum` mismatch); 204 + the new `Upload-Offset`; the last byte makes the version (`x-cairn-version`, `ETag`) |
//! | `DELETE /uploads/<id>` | termination |
//! | `POST /uploads/<id>` + `X-HTTP-Method-Override: PATCH` or `DELETE` | the same, for clients that cannot send those verbs |
//! | `POST /objects/<name>` + `Upload-Length` (or the book's `Size`) | the book's chapter 6 verb: creates an upload for that name (a `Digest` is honoured), answered like `POST /uploads`; continue with `PATCH`/`HEAD` on the `Location` |
//!
//! Every answer carries `Tus-Resumable: 1.0.0`, errors too; every request but
//! `OPTIONS` and the book's `POST /objects/<name>` must carry it (else 412). An
//! upload's id (128 bits from the OS CSPRNG, 32 hex digits) is the only capability
//! that reaches it: anything not of that shape, or not in the store, or expired, is
//! 404, and an id never reaches a file system. `PATCH` and `POST` bodies go through
//! the same admission as `PUT` (a large one takes an upload slot). Every answer
//! carries `Upload-Expires` where an upload is concerned (RFC 7231 date).
//!
//! Access is [`policy`]'s rule on the bucket the upload lands in, asked with the
//! key of each request: at creation ([`Action::TusCreate`]), at every request on
//! an upload (append, status, termination) and, through a [`FinishGate`], again
//! just before the upload becomes a version, with the key looked up afresh. The
//! bucket must exist (404 naming it otherwise).
//!
//! This file holds the routes, handlers and errors; the parsing of the tus
//! request headers is in `headers.rs`.

mod headers;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::{Extension, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::keys::KeyRing;
use super::limits::Door;
use super::policy::{self, Action, Caller, Refusal};
use super::{digest, names, ApiError, UploadLimits, VERSION_HEADER};
use crate::meta::{UploadRecord, DEFAULT_BUCKET};
use crate::object::resumable::{
    ChecksumAlgorithm, FinishGate, NewUpload, Patch, ResumableError, UploadSettings, UploadState,
};
use crate::object::ObjectService;
pub use headers::{checksum, parse_metadata, upload_length};
use headers::{expected_digest, is_offset_stream, number, target, text};

/// The protocol version spoken (and the only one).
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions supported, as `Tus-Extension` lists them.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration";
/// The content type of every PATCH body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Where uploads live.
pub const UPLOADS_PATH: &str = "/uploads";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION_H: HeaderName = HeaderName::from_static("tus-version");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_DEFER: HeaderName = HeaderName::from_static("upload-defer-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// What the tus handlers share: the object paths and the upload settings.
#[derive(Clone)]
pub struct Tus {
    /// The object paths.
    pub service: ObjectService,
    /// The `--upload-*` settings (`max_size`: the largest object).
    pub settings: UploadSettings,
    /// The limits on names and sizes, and their refusal counters.
    pub door: Door,
    /// The access keys, asked again just before an upload becomes a version.
    pub keys: KeyRing,
}

/// Why a tus request is refused before or after the object paths; the status of
/// each is decided in [`TusError`]'s `IntoResponse`, and the object paths' errors
/// by [`ApiError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TusError {
    /// The request lacks `Tus-Resumable: 1.0.0` (412).
    #[error("Tus-Resumable: 1.0.0 required")]
    NotResumable,
    /// A header is malformed or missing (400).
    #[error("{header}: {problem}")]
    BadHeader {
        /// The header.
        header: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// `Upload-Metadata` names no object (`name` or `filename`) (400).
    #[error("Upload-Metadata must name the object (key `name` or `filename`)")]
    NoName,
    /// `Upload-Checksum` names an algorithm not supported (400).
    #[error("Upload-Checksum algorithm {0:?} is not supported (supported: sha1,sha256,md5)")]
    UnsupportedChecksum(String),
    /// A PATCH body not of type `application/offset+octet-stream` (415).
    #[error("PATCH bodies must be of type application/offset+octet-stream")]
    WrongContentType,
    /// The upload would be larger than the largest object (413).
    #[error("the upload's length {length} exceeds the largest object, {max} bytes (--max-object-size)")]
    TooLarge {
        /// The length asked for.
        length: u64,
        /// The largest upload.
        max: u64,
    },
    /// An unsupported `X-HTTP-Method-Override` (405).
    #[error("X-HTTP-Method-Override must be PATCH or DELETE")]
    BadOverride,
    /// The upload paths refused.
    #[error(transparent)]
    Upload(#[from] ResumableError),
    /// Name, digest or object-path errors, mapped as the rest of the API maps them.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let status = match self {
            TusError::NotResumable => {
                let mut r = (StatusCode::PRECONDITION_FAILED, format!("{self}\n")).into_response();
                r.headers_mut().insert(TUS_VERSION_H, HeaderValue::from_static(TUS_VERSION));
                return r;
            }
            // The object paths' and the API's own errors map as everywhere else.
            TusError::Upload(ResumableError::Object(e)) => return ApiError::Object(e).into_response(),
            TusError::Api(e) => return e.into_response(),
            TusError::BadHeader { .. } | TusError::NoName | TusError::UnsupportedChecksum(_) => StatusCode::BAD_REQUEST,
            TusError::WrongContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TusError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            TusError::BadOverride => StatusCode::METHOD_NOT_ALLOWED,
            TusError::Upload(ref e) => match e {
                ResumableError::NoSuchUpload => StatusCode::NOT_FOUND,
                ResumableError::OffsetConflict { .. } => StatusCode::CONFLICT,
                ResumableError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ResumableError::BadLength { .. } | ResumableError::DigestMismatch { .. } => StatusCode::BAD_REQUEST,
                ResumableError::FinishRefused { .. } => StatusCode::FORBIDDEN,
                // tus's checksum extension: 460 Checksum Mismatch.
                ResumableError::ChecksumMismatch { .. } => StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "upload request failed");
        }
        (status, format!("{self}\n")).into_response()
    }
}

impl From<names::BadName> for TusError {
    fn from(e: names::BadName) -> Self {
        TusError::Api(e.into())
    }
}

impl From<Refusal> for TusError {
    fn from(e: Refusal) -> Self {
        TusError::Api(e.into())
    }
}

impl From<digest::BadDigest> for TusError {
    fn from(e: digest::BadDigest) -> Self {
        TusError::Api(e.into())
    }
}

type TusState = State<Arc<Tus>>;

/// The tus routes, for merging into the API router; `admission` is the upload
/// admission `PUT` goes through, so that PATCH and POST bodies share its limits.
pub(crate) fn router<S>(tus: Tus, admission: UploadLimits) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let admit = || middleware::from_fn_with_state(admission.clone(), UploadLimits::admit);
    let uploads: Router<Arc<Tus>> = Router::new()
        .route(UPLOADS_PATH, post(create.layer(admit())).options(options))
        .route(
            "/uploads/{id}",
            MethodRouter::new()
                .head(head_upload)
                .patch(patch_upload.layer(admit()))
                .post(override_upload.layer(admit()))
                .delete(delete_upload)
                .options(options),
        )
        .layer(middleware::from_fn(require_resumable));
    let book: Router<Arc<Tus>> = Router::new().route("/objects/{*name}", post(create_for_name.layer(admit())));
    uploads.merge(book).layer(middleware::map_response(stamp_resumable)).with_state(Arc::new(tus))
}

/// Every answer says which protocol version it speaks.
async fn stamp_resumable(mut response: Response) -> Response {
    response.headers_mut().insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

/// Refuses (412) a request without `Tus-Resumable: 1.0.0`, except `OPTIONS`.
async fn require_resumable(request: Request, next: Next) -> Response {
    let speaks = request.headers().get(TUS_RESUMABLE).is_some_and(|v| v.as_bytes() == TUS_VERSION.as_bytes());
    if request.method() != axum::http::Method::OPTIONS && !speaks {
        return TusError::NotResumable.into_response();
    }
    next.run(request).await
}

async fn options(State(tus): TusState) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(TUS_VERSION_H, HeaderValue::from_static(TUS_VERSION));
    h.insert(HeaderName::from_static("tus-extension"), HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert(HeaderName::from_static("tus-max-size"), HeaderValue::from(tus.settings.max_size));
    h.insert(HeaderName::from_static("tus-checksum-algorithm"), HeaderValue::from_static(ChecksumAlgorithm::ALL));
    response
}

/// `POST /uploads`.
async fn create(
    State(tus): TusState,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let length = upload_length(&headers, tus.settings.max_size).inspect_err(|e| {
        if matches!(e, TusError::TooLarge { .. }) {
            tus.door.count_too_large();
        }
    })?;
    let metadata = text(&headers, &UPLOAD_METADATA).unwrap_or("").to_string();
    let (bucket, name) = target(&parse_metadata(&metadata)?, &tus.door)?;
    policy::authorize(&caller, Action::TusCreate, Some(&bucket))?;
    let expected = expected_digest(&headers)?;
    let new = NewUpload { bucket, name, length, metadata, expected };
    start(&tus, &caller, new, &headers, body).await
}

/// `POST /objects/<name>` with `Upload-Length` or the book's `Size`: an upload of
/// that name, answered like `POST /uploads`.
async fn create_for_name(
    State(tus): TusState,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    policy::authorize(&caller, Action::TusCreate, Some(DEFAULT_BUCKET))?;
    tus.door.new_name(&name)?;
    let size = HeaderName::from_static("size");
    let length = match (number(&headers, &UPLOAD_LENGTH, "Upload-Length")?, number(&headers, &size, "Size")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(TusError::BadHeader { header: "Size", problem: "disagrees with Upload-Length" })
        }
        (Some(l), _) | (None, Some(l)) => Some(l),
        (None, None) => match text(&headers, &UPLOAD_DEFER).map(str::trim) {
            Some("1") => None,
            _ => {
                return Err(TusError::BadHeader {
                    header: "Upload-Length",
                    problem: "required (or Size, or Upload-Defer-Length: 1)",
                })
            }
        },
    };
    if let Some(length) = length.filter(|l| !tus.door.fits(*l, tus.settings.max_size)) {
        return Err(TusError::TooLarge { length, max: tus.settings.max_size });
    }
    let metadata = format!("name {}", STANDARD.encode(name.as_bytes()));
    let new =
        NewUpload { bucket: DEFAULT_BUCKET.to_string(), name, length, metadata, expected: expected_digest(&headers)? };
    start(&tus, &caller, new, &headers, body).await
}

/// Creates the upload and, with a body (creation-with-upload), appends it.
async fn start(
    tus: &Tus,
    caller: &Caller,
    new: NewUpload,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let gate = Reauthorized { keys: &tus.keys, caller };
    let created = tus.service.create_upload(new, &tus.settings, &gate).await?;
    let id = created.upload.id.clone();
    let mut state = created;
    if is_offset_stream(headers) && state.version.is_none() {
        let patch = Patch {
            offset: 0,
            length: None,
            checksum: checksum(headers)?,
            declared: number(headers, &header::CONTENT_LENGTH, "Content-Length")?,
        };
        state = match tus.service.append_to_upload(&id, patch, body.into_data_stream(), &tus.settings, &gate).await {
            Ok(state) => state,
            // A refused finish is the client's to hear, not a resumable hiccup.
            Err(e @ ResumableError::FinishRefused { .. }) => return Err(e.into()),
            // The upload exists: the client learns where it got to and resumes.
            Err(e) => {
                tracing::debug!(error = %e, upload = %id, "creation-with-upload body not fully taken");
                match tus.service.upload_state(&id, &gate).await {
                    Ok(state) => state,
                    Err(_) => return Err(e.into()),
                }
            }
        };
    }
    let mut response = upload_response(tus, StatusCode::CREATED, &state).await;
    if let Ok(v) = HeaderValue::from_str(&format!("{UPLOADS_PATH}/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The upload `id`, once `caller` may do `action` on its bucket: every request
/// on an upload is checked against the bucket the upload lands in, by the key
/// that sends it now (not the one that created it).
async fn authorized_upload(tus: &Tus, caller: &Caller, id: &str, action: Action) -> Result<UploadRecord, TusError> {
    let upload = tus.service.upload_record(id).await?;
    policy::authorize(caller, action, Some(&upload.bucket))?;
    Ok(upload)
}

/// The [`FinishGate`] of a request: the caller is looked up again (a key
/// deleted since the request began is gone; one narrowed is held to its new
/// buckets) and asked for [`Action::TusFinish`] on the upload's bucket.
struct Reauthorized<'a> {
    keys: &'a KeyRing,
    caller: &'a Caller,
}

#[async_trait::async_trait]
impl FinishGate for Reauthorized<'_> {
    async fn may_finish(&self, upload: &UploadRecord) -> Result<(), String> {
        let unreadable = |e: crate::meta::MetaError| format!("cannot check the access key: {e}");
        let now = match self.caller {
            Caller::Open => match self.keys.is_open().await.map_err(unreadable)? {
                true => Caller::Open,
                false => return Err(Refusal::Unsigned.to_string()),
            },
            Caller::Key(key) => match self.keys.lookup(&key.access_key).await.map_err(unreadable)? {
                Some(fresh) if fresh.secret == key.secret => Caller::Key(fresh),
                _ => return Err(Refusal::BadCredentials.to_string()),
            },
        };
        policy::authorize(&now, Action::TusFinish, Some(&upload.bucket)).map_err(|r| r.to_string())
    }
}

/// `HEAD /uploads/<id>`. It may finish an upload whose bytes are all in, so it
/// is asked as an append and the finish is gated.
async fn head_upload(
    State(tus): TusState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, TusError> {
    authorized_upload(&tus, &caller, &id, Action::TusAppend).await?;
    let state = tus.service.upload_state(&id, &Reauthorized { keys: &tus.keys, caller: &caller }).await?;
    let mut response = upload_response(&tus, StatusCode::OK, &state).await;
    let h = response.headers_mut();
    match state.upload.length {
        Some(length) => h.insert(UPLOAD_LENGTH, HeaderValue::from(length)),
        None => h.insert(UPLOAD_DEFER, HeaderValue::from_static("1")),
    };
    if !state.upload.metadata.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&state.upload.metadata) {
            h.insert(UPLOAD_METADATA, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `PATCH /uploads/<id>`.
async fn patch_upload(
    State(tus): TusState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    authorized_upload(&tus, &caller, &id, Action::TusAppend).await?;
    if !is_offset_stream(&headers) {
        return Err(TusError::WrongContentType);
    }
    let offset = number(&headers, &UPLOAD_OFFSET, "Upload-Offset")?
        .ok_or(TusError::BadHeader { header: "Upload-Offset", problem: "required" })?;
    let patch = Patch {
        offset,
        length: number(&headers, &UPLOAD_LENGTH, "Upload-Length")?,
        checksum: checksum(&headers)?,
        declared: number(&headers, &header::CONTENT_LENGTH, "Content-Length")?,
    };
    let gate = Reauthorized { keys: &tus.keys, caller: &caller };
    let appended = tus.service.append_to_upload(&id, patch, body.into_data_stream(), &tus.settings, &gate).await;
    // A deferred-length upload runs into the largest object, not a length of its own.
    if let Err(ResumableError::TooLarge { limit }) = &appended {
        if *limit == tus.settings.max_size {
            tus.door.count_too_large();
        }
    }
    let state = appended?;
    Ok(upload_response(&tus, StatusCode::NO_CONTENT, &state).await)
}

/// `DELETE /uploads/<id>` (termination).
async fn delete_upload(
    State(tus): TusState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, TusError> {
    authorized_upload(&tus, &caller, &id, Action::TusDelete).await?;
    tus.service.terminate_upload(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /uploads/<id>` with `X-HTTP-Method-Override: PATCH | DELETE`.
async fn override_upload(
    state: TusState,
    caller: Extension<Caller>,
    id: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let method = headers.get("x-http-method-override").and_then(|v| v.to_str().ok()).map(str::trim);
    match method {
        Some(m) if m.eq_ignore_ascii_case("PATCH") => patch_upload(state, caller, id, headers, body).await,
        Some(m) if m.eq_ignore_ascii_case("DELETE") => delete_upload(state, caller, id).await,
        _ => Err(TusError::BadOverride),
    }
}

/// The headers every answer about an upload carries: `Upload-Offset`,
/// `Upload-Expires`, and once it is an object, its version and `ETag`.
async fn upload_response(tus: &Tus, status: StatusCode, state: &UploadState) -> Response {
    let upload: &UploadRecord = &state.upload;
    let mut response = status.into_response();
    let h = response.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(upload.offset));
    let expires = UNIX_EPOCH + Duration::from_millis(u64::try_from(upload.expires_ms).unwrap_or(0));
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
        h.insert(UPLOAD_EXPIRES, v);
    }
    if let Some(version) = state.version {
        h.insert(VERSION_HEADER, HeaderValue::from(version));
        let hash = match state.hash {
            Some(hash) => Some(hash),
            None => match tus.service.find(&upload.bucket, &upload.name, Some(version)).await {
                Ok(record) => record.content.map(|c| c.hash),
                Err(_) => None,
            },
        };
        if let Some(v) = hash.and_then(|hash| HeaderValue::from_str(&format!("\"{hash}\"")).ok()) {
            h.insert(header::ETAG, v);
        }
    }
    response
}
