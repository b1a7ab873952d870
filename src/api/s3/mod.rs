//! The S3 front door of an API server: the S3 REST API (path-style, and
//! virtual-host style under `--s3-domain`) over the same object paths as the
//! native API, whose objects are the bucket `default`.
//!
//! Routing, XML, SigV4 (headers, presigned URLs, `aws-chunked` bodies with their
//! chunk signatures) and the S3 error codes are the `s3s` crate's; this module
//! implements its [`S3`] trait with cairn's semantics underneath: every PUT is a
//! new version (versioning is always on), content is stored once per SHA-256
//! (a CopyObject is a metadata write), erasure-coded and repaired as any other.
//! Keys are [`super::keys`]'s; what each may do is [`super::policy`]'s one rule.
//!
//! S3's entity tag is the MD5 of the body (computed as the body streams by) or,
//! for a multipart upload, the MD5 of its parts' MD5s followed by `-<parts>`; it is
//! kept with the version ([`ObjectAttrs`]), beside the SHA-256 that stays the
//! content's address. An object stored through the native API has no MD5: its S3
//! ETag is its SHA-256 as hex. A version id is cairn's version number.
//!
//! A multipart upload's parts are content like any other (durable, redundant,
//! counted as referenced by the collector while the upload lives); completing it
//! reads the chosen parts back in order into one content (a second write of the
//! bytes, once; the parts are then collected), because a version is one content
//! in this design. Uploads not completed within `--multipart-expiry` are removed
//! by the uploads worker.

pub mod scope;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, ETag, ETagCondition, StreamingBlob, Timestamp};
use s3s::path::S3Path;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use super::keys::KeyRing;
use super::limits::{self, Door};
use super::names;
use super::policy::{self, Action, Caller, Refusal};
use crate::clock::now_ms;
use crate::meta::{
    BucketDeleteOutcome, CompleteOutcome, ContentRecord, MetaError, MultipartRecord, ObjectAttrs, Precondition,
    VersionRecord, DEFAULT_BUCKET,
};
use crate::object::hashing::{PipedDigest, INLINE_LIMIT};
use crate::object::{FailureKind, ObjectError, ObjectService};
use crate::range::ByteRange;

/// Bucket names the native API's paths take, refused by CreateBucket so that a
/// path-style S3 request can never be mistaken for a native one.
pub const RESERVED_BUCKETS: &[&str] = &["objects", "versions", "locate", "uploads", "admin", "healthz", "metrics"];

/// Most keys, versions, parts or uploads one listing answers.
pub const MAX_KEYS: usize = 1000;

/// A completion of at least this many bytes is answered 200 at once, its result
/// following in the body after whitespace keep-alives (S3's own way), since
/// copying its parts takes long enough for a client to time out.
pub const COMPLETE_KEEP_ALIVE_ABOVE: u64 = 64 << 20;

/// Most parts one multipart upload may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

/// The region cairn answers GetBucketLocation with and expects in signatures
/// (s3s accepts any region in a signature's scope).
pub const REGION: &str = "us-east-1";

/// The S3 interface over one API server's object paths.
#[derive(Clone)]
pub struct CairnS3 {
    svc: ObjectService,
    keys: KeyRing,
    door: Door,
}

impl CairnS3 {
    /// The S3 operations over `svc`, authorised by `keys`, within `door`'s limits.
    pub fn new(svc: ObjectService, keys: KeyRing, door: Door) -> CairnS3 {
        CairnS3 { svc, keys, door }
    }
}

/// `s3s`'s service over cairn: the S3 operations, the key lookup for SigV4, the
/// per-request authorisation, and virtual-host addressing under `domain`.
pub fn service(s3: CairnS3, domain: Option<&str>) -> Result<s3s::service::S3Service, String> {
    let mut builder = s3s::service::S3ServiceBuilder::new(s3.clone());
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(limits()))));
    builder.set_auth(KeyAuth(s3.keys.clone()));
    builder.set_access(KeyAccess(s3.keys.clone()));
    if let Some(domain) = domain {
        let host = s3s::host::SingleDomain::new(domain).map_err(|e| format!("--s3-domain {domain:?}: {e}"))?;
        builder.set_host(host);
    }
    Ok(builder.build())
}

/// Most bytes of an XML request body s3s reads into memory (a completion of
/// 10,000 parts or a DeleteObjects of 1,000 keys is about 1 MiB).
pub const XML_MAX_BODY: usize = 4 << 20;

/// s3s's limits on what it holds in memory before cairn sees a request. POST
/// object (browser form uploads, not supported) would be read whole into memory
/// while it is routed, before any signature is checked, so its file may be 0
/// bytes and its form fields small: an unauthenticated form cannot buffer more
/// than a few KiB.
fn limits() -> s3s::config::S3Config {
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = XML_MAX_BODY;
    config.post_object_max_file_size = 0;
    config.form_max_field_size = 16 << 10;
    config.form_max_fields_size = 64 << 10;
    config.form_max_parts = 64;
    config
}

/// SigV4's secret lookup: the key's secret from the key ring.
struct KeyAuth(KeyRing);

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.lookup(access_key).await {
            Ok(Some(key)) => Ok(SecretKey::from(key.secret)),
            Ok(None) => Err(s3_error!(InvalidAccessKeyId, "no such access key")),
            Err(e) => Err(meta_error(e)),
        }
    }
}

/// Who may do what: every request, signed or not, is checked here (s3s has
/// verified the signature of a signed one already), as the action its operation
/// is in [`policy`]'s vocabulary, on the bucket it names.
struct KeyAccess(KeyRing);

#[async_trait::async_trait]
impl S3Access for KeyAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let caller = match cx.credentials() {
            None => match self.0.is_open().await {
                Ok(true) => Caller::Open,
                Ok(false) => return Err(refusal(Refusal::Unsigned)),
                Err(e) => return Err(meta_error(e)),
            },
            Some(credentials) => match self.0.lookup(&credentials.access_key).await {
                Ok(Some(key)) => Caller::Key(key),
                Ok(None) => return Err(s3_error!(InvalidAccessKeyId, "no such access key")),
                Err(e) => return Err(meta_error(e)),
            },
        };
        let action = Action::of_s3(cx.s3_op().name());
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
        };
        policy::authorize(&caller, action, bucket).map_err(refusal)?;
        self.0.admit(&caller).map_err(slow_down)?;
        cx.extensions_mut().insert(caller);
        Ok(())
    }
}

/// S3's answer to a key over its request rate: `SlowDown` (503) with
/// `Retry-After`, what AWS answers and SDKs back off from.
fn slow_down(wait: Duration) -> S3Error {
    let mut err =
        S3Error::with_message(S3ErrorCode::SlowDown, "this access key is over its request rate (--rate-limit)");
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(limits::retry_after_secs(wait)));
    // The error's headers replace the answer's, XML type included.
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    err.set_headers(headers);
    err
}

fn refusal(reason: Refusal) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, reason.to_string())
}

/// The caller [`KeyAccess`] let through (open when auth did not run).
fn caller_of<T>(req: &S3Request<T>) -> Caller {
    req.extensions.get::<Caller>().cloned().unwrap_or(Caller::Open)
}

/// An S3 error for a metadata store failure, classified as every failure of
/// the object paths is ([`object_error`]).
fn meta_error(e: MetaError) -> S3Error {
    object_error(ObjectError::Meta(e))
}

/// An S3 error for a failure of the object paths: its [`FailureKind`] (the
/// classification the native API's statuses come from too) in S3's codes, with
/// the code that names the fact where S3 has one. Failures of cairn's own and
/// of the cluster (5xx) are logged here: s3s's own log of every refused request
/// (`s3s::ops`, at ERROR for a bad signature too) is off by default, or any
/// client could flood the log.
fn object_error(e: ObjectError) -> S3Error {
    match e.kind() {
        FailureKind::Unavailable => {
            tracing::warn!(error = %e, "S3 request failed");
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, e.to_string())
        }
        FailureKind::Missing | FailureKind::BadRequest | FailureKind::PreconditionFailed => match e {
            ObjectError::NotFound { name } => s3_error!(NoSuchKey, "no such key: {name}"),
            ObjectError::Deleted { name, version } => {
                let mut err = s3_error!(NoSuchKey, "key {name} was deleted (version {version})");
                let mut headers = http::HeaderMap::new();
                headers.insert("x-amz-delete-marker", http::HeaderValue::from_static("true"));
                if let Ok(v) = version.to_string().parse() {
                    headers.insert("x-amz-version-id", v);
                }
                err.set_headers(headers);
                err
            }
            ObjectError::DigestMismatch { .. } => S3Error::with_message(S3ErrorCode::BadDigest, e.to_string()),
            ObjectError::BodyBroken(_) => S3Error::with_message(S3ErrorCode::IncompleteBody, e.to_string()),
            ObjectError::Meta(MetaError::NoSuchBucket { bucket }) => {
                s3_error!(NoSuchBucket, "no such bucket: {bucket}")
            }
            ObjectError::Meta(MetaError::PreconditionFailed { .. }) => {
                s3_error!(PreconditionFailed, "the PUT's precondition no longer held when its version was added")
            }
            e => internal(e),
        },
        FailureKind::Internal => internal(e),
    }
}

fn internal(e: ObjectError) -> S3Error {
    tracing::warn!(error = %e, "S3 request failed");
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

/// A key must be a valid cairn name (no `..` segment, no control character,
/// bounded length).
fn check_key(key: &str) -> S3Result<()> {
    names::validate(key).map_err(name_error)
}

fn name_error(e: names::BadName) -> S3Error {
    match e {
        names::BadName::TooLong { .. } => S3Error::with_message(S3ErrorCode::KeyTooLongError, e.to_string()),
        e => S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()),
    }
}

/// S3's answer to a body, part or completion past a size limit (S3 answers 400).
fn entity_too_large(what: &str, limit: u64) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::EntityTooLarge,
        format!("the {what} is larger than the largest allowed, {limit} bytes (--max-object-size)"),
    )
}

/// A version id as S3 clients see it: cairn's version number and the version's
/// creation time in ms, `<version>.<created>`. The store may hand a number out
/// again once the newest version was removed for good (DeleteObject with a
/// version id, then a PUT); the time tells the two apart, so an id never names
/// another object than the one it was given for.
fn version_id(record: &VersionRecord) -> String {
    format!("{}.{}", record.version, record.created_ms)
}

/// A version id from a client: `<version>.<created>` as [`version_id`] makes it,
/// or a bare version number (cairn's native `?version=N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VersionId {
    version: u64,
    created_ms: Option<i64>,
}

impl VersionId {
    fn parse(id: &str) -> S3Result<VersionId> {
        let (version, created) = match id.split_once('.') {
            Some((v, c)) => (v, Some(c)),
            None => (id, None),
        };
        let version = version.parse::<u64>().ok().filter(|v| *v > 0);
        let created_ms = created.map(|c| c.parse::<i64>().ok()).unwrap_or(Some(0));
        match (version, created_ms) {
            (Some(version), Some(_)) => Ok(VersionId { version, created_ms: created.and(created_ms) }),
            _ => Err(s3_error!(NoSuchVersion, "no such version: {id}")),
        }
    }

    /// Whether `record` is the version this id was given for.
    fn names(&self, record: &VersionRecord) -> bool {
        record.version == self.version && self.created_ms.is_none_or(|c| c == record.created_ms)
    }
}

fn timestamp(ms: i64) -> Timestamp {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    Timestamp::from(at)
}

/// Seconds since the epoch of an HTTP date (the precision conditionals compare at).
fn seconds(ts: &Timestamp) -> i64 {
    let at: time::OffsetDateTime = ts.clone().into();
    at.unix_timestamp()
}

/// The precondition of a conditional PUT, as S3 has them: `If-None-Match: *`
/// (create only) or `If-Match: <etag>` (replace only that version), one at a time.
fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Option<Precondition>> {
    match (if_match, if_none_match) {
        (None, None) => Ok(None),
        (None, Some(ETagCondition::Any)) => Ok(Some(Precondition::Absent)),
        (Some(ETagCondition::ETag(tag)), None) => Ok(Some(Precondition::Matches(tag.value().to_string()))),
        _ => {
            Err(s3_error!(NotImplemented, "a conditional PUT takes If-None-Match: * or If-Match: <etag>, one of them"))
        }
    }
}

/// Whether an `If-Match` / `If-None-Match` condition holds for `etag`.
fn condition_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == etag,
    }
}

/// S3's conditional reads: `If-Match` and `If-Unmodified-Since` failing is 412,
/// `If-None-Match` matching or `If-Modified-Since` not passed is 304 (RFC 7232's
/// order: If-None-Match decides before If-Modified-Since).
fn check_conditions(
    record: &VersionRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let etag = record.etag();
    let modified = record.created_ms.div_euclid(1000);
    match if_match {
        Some(c) if !condition_matches(c, &etag) => return Err(s3_error!(PreconditionFailed, "If-Match failed")),
        None if if_unmodified_since.is_some_and(|t| modified > seconds(t)) => {
            return Err(s3_error!(PreconditionFailed, "modified since If-Unmodified-Since"))
        }
        _ => {}
    }
    match if_none_match {
        Some(c) if condition_matches(c, &etag) => Err(not_modified(&etag)),
        None if if_modified_since.is_some_and(|t| modified <= seconds(t)) => Err(not_modified(&etag)),
        _ => Ok(()),
    }
}

fn not_modified(etag: &str) -> S3Error {
    let mut err = S3Error::new(S3ErrorCode::NotModified);
    err.set_status_code(http::StatusCode::NOT_MODIFIED);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = format!("\"{etag}\"").parse() {
        headers.insert(http::header::ETAG, v);
    }
    err.set_headers(headers);
    err
}

/// The attributes the input of a PUT, a CopyObject with `REPLACE` or a
/// CreateMultipartUpload sets: s3s gives the three their own types with the same
/// fields.
macro_rules! attrs_of {
    ($input:expr) => {
        attrs_from(
            $input.content_type,
            $input.content_encoding,
            $input.cache_control,
            $input.content_disposition,
            $input.content_language,
            $input.expires.as_ref(),
            $input.metadata,
        )
    };
}

/// A request's `Content-Encoding` as S3 stores it: without `aws-chunked`, which
/// names the request body's framing, not the object's (boto3 sends
/// `gzip,aws-chunked` for a gzip object over https, where it streams checksums in
/// trailers); `None` when nothing else is left.
fn without_aws_chunked(encoding: &str) -> Option<String> {
    let kept: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// The attributes of [`attrs_of`], from their fields.
fn attrs_from(
    content_type: Option<String>,
    content_encoding: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    expires: Option<&Timestamp>,
    metadata: Option<dto::Metadata>,
) -> ObjectAttrs {
    let expires = expires.and_then(|t| {
        let mut out = Vec::new();
        t.format(dto::TimestampFormat::HttpDate, &mut out).ok()?;
        String::from_utf8(out).ok()
    });
    ObjectAttrs {
        etag: None,
        content_type,
        content_encoding: content_encoding.and_then(|e| without_aws_chunked(&e)),
        cache_control,
        content_disposition,
        content_language,
        expires,
        user: metadata.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
    }
}

fn parse_expires(value: Option<&String>) -> Option<Timestamp> {
    Timestamp::parse(dto::TimestampFormat::HttpDate, value?).ok()
}

fn user_metadata(attrs: &ObjectAttrs) -> Option<dto::Metadata> {
    (!attrs.user.is_empty()).then(|| attrs.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A request body on its way to the write path: its MD5 computed as it passes
/// (inline for the first [`INLINE_LIMIT`] bytes, then on a blocking thread beside
/// the write path's SHA-256, so a large body's MD5 does not hold up its coding and
/// sending), and its first error kept as the S3 error it is (a chunk signature
/// that does not match is `SignatureDoesNotMatch`, not a broken body).
struct Md5Body {
    md5: tokio::sync::oneshot::Receiver<Md5State>,
    error: Arc<Mutex<Option<S3Error>>>,
}

/// The running MD5 of a body.
enum Md5State {
    Inline(Md5, usize),
    Piped(PipedDigest<Md5>),
}

impl Md5State {
    async fn update(&mut self, bytes: &Bytes) {
        match self {
            Md5State::Inline(md5, seen) if *seen + bytes.len() <= INLINE_LIMIT => {
                md5.update(bytes);
                *seen += bytes.len();
            }
            Md5State::Inline(md5, _) => {
                let mut piped = PipedDigest::start(std::mem::take(md5));
                piped.update(bytes.clone()).await;
                *self = Md5State::Piped(piped);
            }
            Md5State::Piped(piped) => piped.update(bytes.clone()).await,
        }
    }

    async fn hex(self) -> S3Result<String> {
        let md5 = match self {
            Md5State::Inline(md5, _) => md5,
            Md5State::Piped(piped) => piped.finish_state().await.map_err(|e| s3_error!(InternalError, "{e}"))?,
        };
        Ok(hex::encode(md5.finalize()))
    }
}

impl Md5Body {
    fn wrap<B>(body: B) -> (Md5Body, BodyStream)
    where
        B: Stream<Item = Result<Bytes, s3s::StdError>> + Send + Unpin + 'static,
    {
        let (done, md5) = tokio::sync::oneshot::channel();
        let error = Arc::new(Mutex::new(None));
        let first_error = Arc::clone(&error);
        let start = (body, Md5State::Inline(Md5::new(), 0), Some(done));
        let stream = futures_util::stream::unfold(start, move |(mut body, mut state, mut done)| {
            let first_error = Arc::clone(&first_error);
            async move {
                match body.next().await {
                    Some(Ok(bytes)) => {
                        state.update(&bytes).await;
                        Some((Ok(bytes), (body, state, done)))
                    }
                    Some(Err(err)) => {
                        let s3 = match err.downcast_ref::<S3Error>() {
                            Some(s3) => {
                                S3Error::with_message(s3.code().clone(), s3.message().unwrap_or("").to_string())
                            }
                            None => S3Error::with_message(S3ErrorCode::IncompleteBody, err.to_string()),
                        };
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(s3);
                        Some((Err(std::io::Error::other(err.to_string())), (body, state, done)))
                    }
                    None => {
                        if let Some(done) = done.take() {
                            let _ = done.send(state);
                        }
                        None
                    }
                }
            }
        });
        (Md5Body { md5, error }, Box::pin(stream))
    }

    /// The MD5 of the whole body, as hex (once the write path has read it all).
    async fn hex(self) -> S3Result<String> {
        match self.md5.await {
            Ok(state) => state.hex().await,
            Err(_) => Err(s3_error!(InternalError, "the body was not read to its end")),
        }
    }

    /// The S3 error for a failed write: the body's own error when it broke.
    fn error(&self, e: ObjectError) -> S3Error {
        match (self.error.lock().unwrap_or_else(|p| p.into_inner()).take(), &e) {
            (Some(body), ObjectError::BodyBroken(_)) => body,
            _ => object_error(e),
        }
    }
}

/// Checks a `Content-MD5` header (base64 of the MD5) against what arrived.
fn check_content_md5(expected: Option<&String>, actual_hex: &str) -> S3Result<()> {
    use base64::Engine;
    let Some(expected) = expected else { return Ok(()) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(expected.trim())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
    if hex::encode(decoded) != actual_hex {
        return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
    }
    Ok(())
}

/// A body that is missing counts as empty.
fn body_or_empty(body: Option<StreamingBlob>) -> StreamingBlob {
    body.unwrap_or_else(|| StreamingBlob::wrap(futures_util::stream::empty::<Result<Bytes, std::io::Error>>()))
}

impl CairnS3 {
    /// The largest part: S3's 5 GiB, or the largest object when that is smaller.
    fn part_limit(&self) -> u64 {
        self.door.max_object_size.min(limits::MAX_PART_SIZE)
    }

    /// A key an object or upload is about to get: a valid name within
    /// `--max-name-length`.
    fn check_new_key(&self, key: &str) -> S3Result<()> {
        self.door.new_name(key).map_err(name_error)
    }

    /// Refuses a declared body (`what`) longer than `limit`, before it is read.
    fn check_length(&self, what: &str, declared: Option<i64>, limit: u64) -> S3Result<()> {
        match declared.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if !self.door.fits(n, limit) => Err(entity_too_large(what, limit)),
            _ => Ok(()),
        }
    }

    /// Stores a request body (`what`: an object, a part) as content (not yet
    /// recorded), with its MD5 as hex. A body past `limit` bytes is cut there and
    /// refused with `EntityTooLarge`; nothing of it is kept.
    async fn store_body(
        &self,
        what: &'static str,
        body: Option<StreamingBlob>,
        limit: u64,
        content_md5: Option<&String>,
    ) -> S3Result<(crate::object::write::StoredContent, String)> {
        let cap = limits::SizeCap::new(limit);
        let capped =
            cap.wrap(body_or_empty(body), move || -> s3s::StdError { Box::new(entity_too_large(what, limit)) });
        let (md5, stream) = Md5Body::wrap(capped);
        let stored = self.svc.store(stream, None).await.map_err(|e| {
            if cap.exceeded() {
                self.door.count_too_large();
            }
            md5.error(e)
        })?;
        let hex = md5.hex().await?;
        // The bytes are durable but not recorded: a mismatch leaves orphans that the
        // collector removes after --orphan-age, and nothing visible.
        check_content_md5(content_md5, &hex)?;
        Ok((stored, hex))
    }

    /// `bucket` must exist (for operations that name one and find nothing else).
    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.svc.meta.bucket(bucket).await.map_err(meta_error)? {
            Some(_) => Ok(()),
            None => Err(s3_error!(NoSuchBucket, "no such bucket: {bucket}")),
        }
    }

    /// The version asked for; a missing key in a missing bucket is `NoSuchBucket`.
    async fn find(&self, bucket: &str, key: &str, version: Option<&str>) -> S3Result<VersionRecord> {
        check_key(key)?;
        let Some(id) = version else {
            return match self.svc.find(bucket, key, None).await {
                Ok(record) => Ok(record),
                Err(ObjectError::NotFound { .. }) => {
                    self.require_bucket(bucket).await?;
                    Err(s3_error!(NoSuchKey, "no such key: {key}"))
                }
                Err(e) => Err(object_error(e)),
            };
        };
        let wanted = VersionId::parse(id)?;
        let found = self.svc.meta.version(bucket, key, wanted.version).await.map_err(meta_error)?;
        match found.filter(|r| wanted.names(r)) {
            None => {
                self.require_bucket(bucket).await?;
                Err(s3_error!(NoSuchVersion, "{key} has no version {id}"))
            }
            Some(record) if record.is_tombstone() => {
                // A delete marker asked for by version: 405 in S3.
                let mut err = s3_error!(MethodNotAllowed, "version {id} of {key} is a delete marker");
                let mut headers = http::HeaderMap::new();
                headers.insert("x-amz-delete-marker", http::HeaderValue::from_static("true"));
                err.set_headers(headers);
                Err(err)
            }
            Some(record) => Ok(record),
        }
    }

    /// The source of a CopyObject or UploadPartCopy, which the caller must be
    /// allowed to read.
    async fn copy_source(&self, source: &dto::CopySource, caller: &Caller) -> S3Result<VersionRecord> {
        let dto::CopySource::Bucket { bucket, key, version_id } = source else {
            return Err(s3_error!(NotImplemented, "access point copy sources are not supported"));
        };
        policy::authorize(caller, Action::CopySource, Some(bucket)).map_err(refusal)?;
        self.find(bucket, key, version_id.as_deref()).await
    }

    /// A multipart upload of `bucket/key`, or `NoSuchUpload`.
    async fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<MultipartRecord> {
        match self.svc.meta.multipart(id).await.map_err(meta_error)? {
            Some(upload) if upload.bucket == bucket && upload.name == key => Ok(upload),
            _ => Err(s3_error!(NoSuchUpload, "no such upload: {id}")),
        }
    }
}

/// The common prefix `key` rolls up into under `delimiter`, if any.
fn common_prefix<'a>(key: &'a str, prefix: &str, delimiter: Option<&str>) -> Option<&'a str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    Some(&key[..prefix.len() + at + delimiter.len()])
}

/// The smallest string above every key that starts with `prefix` (for skipping a
/// rolled-up common prefix): `prefix` followed by the highest scalar value.
fn past(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

/// One page of a listing with S3's delimiter: keys and common prefixes in order.
struct Listed {
    objects: Vec<VersionRecord>,
    prefixes: Vec<String>,
    /// The last key or prefix returned, when more follow.
    next: Option<String>,
}

impl CairnS3 {
    /// Current keys of `bucket` under `prefix` after `after`, at most `max` keys
    /// and common prefixes together, rolling keys up at `delimiter`.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<String>,
        max: usize,
    ) -> S3Result<Listed> {
        let mut listed = Listed { objects: Vec::new(), prefixes: Vec::new(), next: None };
        let mut cursor = after;
        if max == 0 {
            return Ok(listed);
        }
        loop {
            let page = self.svc.list(bucket, prefix, cursor.as_deref(), MAX_KEYS + 1).await.map_err(object_error)?;
            let exhausted = page.len() <= MAX_KEYS;
            let mut skipped_to = None;
            for record in page.into_iter().take(MAX_KEYS) {
                if listed.objects.len() + listed.prefixes.len() == max {
                    listed.next = cursor;
                    return Ok(listed);
                }
                if let Some(cp) = common_prefix(&record.name, prefix, delimiter) {
                    if listed.prefixes.last().map(String::as_str) != Some(cp) {
                        listed.prefixes.push(cp.to_string());
                    }
                    cursor = Some(cp.to_string());
                    skipped_to = Some(past(cp));
                    break;
                }
                cursor = Some(record.name.clone());
                listed.objects.push(record);
            }
            match skipped_to {
                Some(past_prefix) => cursor = Some(past_prefix),
                None if exhausted => return Ok(listed),
                None => {}
            }
            // The cursor of a rolled-up prefix is reported as the prefix itself.
            if listed.objects.len() + listed.prefixes.len() == max {
                let more = !self.svc.list(bucket, prefix, cursor.as_deref(), 1).await.map_err(object_error)?.is_empty();
                if more {
                    listed.next = last_listed(&listed);
                }
                return Ok(listed);
            }
        }
    }
}

/// The greater of the last key and the last common prefix of a page.
fn last_listed(listed: &Listed) -> Option<String> {
    let key = listed.objects.last().map(|r| r.name.clone());
    let prefix = listed.prefixes.last().cloned();
    key.max(prefix)
}

/// Where a listing resumes: after a key, or past a rolled-up common prefix.
fn resume_after(marker: Option<String>, delimiter: Option<&str>) -> Option<String> {
    let marker = marker.filter(|m| !m.is_empty())?;
    match delimiter.filter(|d| !d.is_empty()) {
        Some(d) if marker.ends_with(d) => Some(past(&marker)),
        _ => Some(marker),
    }
}

fn object_entry(record: &VersionRecord) -> dto::Object {
    dto::Object {
        key: Some(record.name.clone()),
        e_tag: Some(ETag::Strong(record.etag())),
        last_modified: Some(timestamp(record.created_ms)),
        size: Some(record.content.as_ref().map_or(0, |c| c.size) as i64),
        storage_class: Some(dto::ObjectStorageClass::from_static(dto::ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

fn common_prefixes(prefixes: Vec<String>) -> Option<Vec<dto::CommonPrefix>> {
    Some(prefixes.into_iter().map(|p| dto::CommonPrefix { prefix: Some(p) }).collect())
}

fn max_keys(asked: Option<i32>) -> usize {
    asked.map_or(MAX_KEYS, |m| usize::try_from(m).unwrap_or(0).min(MAX_KEYS))
}

/// The MD5 ETag of a multipart object: the MD5 of the parts' binary MD5s, `-N`.
pub fn multipart_etag(part_md5s: &[String]) -> Option<String> {
    let mut md5 = Md5::new();
    for part in part_md5s {
        md5.update(hex::decode(part).ok()?);
    }
    Some(format!("{}-{}", hex::encode(md5.finalize()), part_md5s.len()))
}

/// The bytes of `contents` one after the other, each read (and verified) through
/// the read path in turn.
fn concatenated(svc: ObjectService, contents: Vec<ContentRecord>) -> BodyStream {
    let stream = futures_util::stream::iter(contents)
        .then(move |content| {
            let svc = svc.clone();
            async move {
                let range = ByteRange { start: 0, end: content.size };
                match svc.read(&content, range).await {
                    Ok(stream) => stream.left_stream(),
                    Err(e) => futures_util::stream::once(async move { Err(std::io::Error::other(e.to_string())) })
                        .right_stream(),
                }
            }
        })
        .flatten();
    Box::pin(stream)
}

fn part_number(n: i32) -> S3Result<u32> {
    match u32::try_from(n) {
        Ok(n) if (1..=MAX_PARTS).contains(&n) => Ok(n),
        _ => Err(s3_error!(InvalidArgument, "part number must be between 1 and {MAX_PARTS}, got {n}")),
    }
}

/// The range of a `CopySourceRange` header (`bytes=a-b`) within `size` bytes.
fn copy_range(header: Option<&String>, size: u64) -> S3Result<ByteRange> {
    let Some(header) = header else { return Ok(ByteRange { start: 0, end: size }) };
    let range = dto::Range::parse(header).map_err(|_| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?;
    let r = range.check(size).map_err(|_| s3_error!(InvalidRange, "copy source range outside the object"))?;
    Ok(ByteRange { start: r.start, end: r.end })
}

#[async_trait::async_trait]
impl S3 for CairnS3 {
    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let caller = caller_of(&req);
        let buckets = self.svc.meta.buckets().await.map_err(meta_error)?;
        let prefix = req.input.prefix.unwrap_or_default();
        let buckets = buckets
            .into_iter()
            .filter(|b| caller.sees(&b.name) && b.name.starts_with(&prefix))
            .map(|b| dto::Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(REGION.to_string()),
            })
            .collect();
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(dto::Owner { display_name: Some("cairn".into()), id: Some("cairn".into()) }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        let bucket = req.input.bucket;
        if RESERVED_BUCKETS.contains(&bucket.as_str()) {
            return Err(s3_error!(InvalidBucketName, "{bucket} is reserved for cairn's native API"));
        }
        if !self.svc.meta.create_bucket(&bucket, now_ms()).await.map_err(meta_error)? {
            return Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {bucket} exists"));
        }
        tracing::info!(%bucket, "bucket created");
        Ok(S3Response::new(dto::CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        if bucket == DEFAULT_BUCKET {
            return Err(s3_error!(AccessDenied, "the bucket {DEFAULT_BUCKET} is the native API's and stays"));
        }
        match self.svc.meta.delete_bucket(&bucket).await.map_err(meta_error)? {
            BucketDeleteOutcome::Deleted { aborted_uploads } => {
                if aborted_uploads > 0 {
                    tracing::info!(%bucket, aborted_uploads, "bucket deleted with its open uploads");
                }
                Ok(S3Response::new(dto::DeleteBucketOutput {}))
            }
            BucketDeleteOutcome::NoSuchBucket => Err(s3_error!(NoSuchBucket, "no such bucket: {bucket}")),
            BucketDeleteOutcome::NotEmpty => {
                Err(s3_error!(BucketNotEmpty, "bucket {bucket} holds versions (delete markers count)"))
            }
        }
    }

    async fn head_bucket(&self, req: S3Request<dto::HeadBucketInput>) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(dto::HeadBucketOutput { bucket_region: Some(REGION.into()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        // us-east-1 is the empty constraint.
        Ok(S3Response::new(dto::GetBucketLocationOutput { location_constraint: None }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(dto::GetBucketVersioningOutput {
            status: Some(dto::BucketVersioningStatus::from_static(dto::BucketVersioningStatus::ENABLED)),
            ..Default::default()
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<dto::PutBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::PutBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        match req.input.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
            Some(dto::BucketVersioningStatus::ENABLED) | None => Ok(S3Response::new(dto::PutBucketVersioningOutput {})),
            Some(other) => Err(s3_error!(
                NotImplemented,
                "cairn always keeps versions (status Enabled); {other} is not supported: prune with --keep-versions"
            )),
        }
    }

    async fn put_object(&self, req: S3Request<dto::PutObjectInput>) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let input = req.input;
        self.check_new_key(&input.key)?;
        let limit = self.door.max_object_size;
        self.check_length("object", input.content_length, limit)?;
        // Checked again in the version's transaction; here so that a PUT into a
        // bucket that does not exist stores no byte.
        self.require_bucket(&input.bucket).await?;
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        if let Some(condition) = &condition {
            // Checked once before the body is stored, so a failing write costs no
            // bytes, and again in the version's transaction, so it is atomic.
            let latest = self.svc.meta.latest(&input.bucket, &input.key).await.map_err(meta_error)?;
            if !condition.holds(latest.as_ref()) {
                return Err(s3_error!(PreconditionFailed, "the PUT's precondition does not hold"));
            }
        }
        let (stored, md5) = self.store_body("object", input.body, limit, input.content_md5.as_ref()).await?;
        let mut attrs = attrs_of!(input);
        attrs.etag = Some(md5.clone());
        let record = self
            .svc
            .meta
            .put_object(&input.bucket, &input.key, &stored.content, &attrs, condition.as_ref())
            .await
            .map_err(meta_error)?;
        self.svc.recorded(stored);
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(ETag::Strong(md5)),
            version_id: Some(version_id(&record)),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<dto::GetObjectInput>) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let input = req.input;
        let record = self.find(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let content = record.content.as_ref().ok_or_else(|| s3_error!(NoSuchKey))?;
        let size = content.size;
        let (range, content_range) = match &input.range {
            None => (ByteRange { start: 0, end: size }, None),
            Some(r) => {
                let r = r.check(size).map_err(|_| {
                    let mut err = s3_error!(InvalidRange, "the range is outside the object's {size} bytes");
                    let mut headers = http::HeaderMap::new();
                    if let Ok(v) = format!("bytes */{size}").parse() {
                        headers.insert(http::header::CONTENT_RANGE, v);
                    }
                    err.set_headers(headers);
                    err
                })?;
                let range = ByteRange { start: r.start, end: r.end };
                (range, Some(range.content_range(size)))
            }
        };
        let body = self.svc.read(content, range).await.map_err(object_error)?;
        let attrs = record.attrs.clone().unwrap_or_default();
        let output = dto::GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(range.len() as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(record.etag())),
            last_modified: Some(timestamp(record.created_ms)),
            version_id: Some(version_id(&record)),
            content_type: Some(
                input.response_content_type.or(attrs.content_type.clone()).unwrap_or("binary/octet-stream".into()),
            ),
            content_encoding: input.response_content_encoding.or(attrs.content_encoding.clone()),
            cache_control: input.response_cache_control.or(attrs.cache_control.clone()),
            content_disposition: input.response_content_disposition.or(attrs.content_disposition.clone()),
            content_language: input.response_content_language.or(attrs.content_language.clone()),
            expires: input.response_expires.or_else(|| parse_expires(attrs.expires.as_ref())),
            metadata: user_metadata(&attrs),
            ..Default::default()
        };
        let mut response = S3Response::new(output);
        if input.range.is_some() {
            response.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(response)
    }

    async fn head_object(&self, req: S3Request<dto::HeadObjectInput>) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let input = req.input;
        let record = self.find(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let size = record.content.as_ref().map_or(0, |c| c.size);
        let attrs = record.attrs.clone().unwrap_or_default();
        Ok(S3Response::new(dto::HeadObjectOutput {
            content_length: Some(size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(record.etag())),
            last_modified: Some(timestamp(record.created_ms)),
            version_id: Some(version_id(&record)),
            content_type: Some(attrs.content_type.clone().unwrap_or("binary/octet-stream".into())),
            content_encoding: attrs.content_encoding.clone(),
            cache_control: attrs.cache_control.clone(),
            content_disposition: attrs.content_disposition.clone(),
            content_language: attrs.content_language.clone(),
            expires: parse_expires(attrs.expires.as_ref()),
            metadata: user_metadata(&attrs),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        let (marker, version) = self.delete_one(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        let mut response = S3Response::new(dto::DeleteObjectOutput {
            delete_marker: marker.then_some(true),
            version_id: version,
            ..Default::default()
        });
        response.status = Some(http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > MAX_KEYS {
            return Err(s3_error!(MalformedXML, "at most {MAX_KEYS} keys per DeleteObjects"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            let result = match check_key(&object.key) {
                Ok(()) => self.delete_one(&input.bucket, &object.key, object.version_id.as_deref()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok((marker, version)) => {
                    if !quiet {
                        deleted.push(dto::DeletedObject {
                            key: Some(object.key),
                            version_id: object.version_id.clone(),
                            delete_marker: marker.then_some(true),
                            delete_marker_version_id: if marker { version } else { None },
                        })
                    }
                }
                Err(e) => errors.push(dto::Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(object.key),
                    message: e.message().map(str::to_string),
                    version_id: object.version_id,
                }),
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<dto::CopyObjectInput>) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let caller = caller_of(&req);
        let input = req.input;
        self.check_new_key(&input.key)?;
        let source = self.copy_source(&input.copy_source, &caller).await?;
        check_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| if *e.code() == S3ErrorCode::NotModified { s3_error!(PreconditionFailed) } else { e })?;
        let content = source.content.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
        // An object stored before the limit was lowered is not copied past it.
        if !self.door.fits(content.size, self.door.max_object_size) {
            return Err(entity_too_large("object", self.door.max_object_size));
        }
        let etag = source.etag();
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == "REPLACE");
        let mut attrs = if replace { attrs_of!(input) } else { source.attrs.clone().unwrap_or_default() };
        attrs.etag = Some(etag.clone());
        // Same bytes, same content: a copy is one metadata write, whatever its size.
        let record =
            self.svc.meta.put_object(&input.bucket, &input.key, &content, &attrs, None).await.map_err(meta_error)?;
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp(record.created_ms)),
                ..Default::default()
            }),
            copy_source_version_id: Some(version_id(&source)),
            version_id: Some(version_id(&record)),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let after = resume_after(input.marker.clone(), input.delimiter.as_deref());
        let listed = self.list_page(&input.bucket, &prefix, input.delimiter.as_deref(), after, max).await?;
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            marker: input.marker,
            max_keys: Some(max as i32),
            delimiter: input.delimiter.clone(),
            is_truncated: Some(listed.next.is_some()),
            next_marker: if input.delimiter.is_some() { listed.next.clone() } else { None },
            contents: Some(listed.objects.iter().map(object_entry).collect()),
            common_prefixes: common_prefixes(listed.prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let token = match &input.continuation_token {
            Some(t) => Some(decode_token(t)?),
            None => None,
        };
        let after = token.or_else(|| input.start_after.clone());
        let after = resume_after(after, input.delimiter.as_deref());
        let listed = self.list_page(&input.bucket, &prefix, input.delimiter.as_deref(), after, max).await?;
        let key_count = (listed.objects.len() + listed.prefixes.len()) as i32;
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(listed.next.is_some()),
            next_continuation_token: listed.next.as_deref().map(encode_token),
            delimiter: input.delimiter,
            contents: Some(listed.objects.iter().map(object_entry).collect()),
            common_prefixes: common_prefixes(listed.prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        // A key marker alone continues after every version of that key.
        let mut cursor: Option<(String, u64)> = match (&input.key_marker, &input.version_id_marker) {
            (Some(k), Some(v)) if !k.is_empty() && !v.is_empty() => Some((k.clone(), VersionId::parse(v)?.version)),
            (Some(k), _) if !k.is_empty() => Some((k.clone(), 0)),
            _ => None,
        };
        if let (Some((key, _)), Some(d)) = (&cursor, delimiter) {
            if key.ends_with(d) {
                cursor = Some((past(key), u64::MAX));
            }
        }
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut latest_of: Option<String> = None;
        let mut count = 0usize;
        let mut truncated = false;
        let mut next: Option<(String, Option<String>)> = None;
        'pages: loop {
            let after = cursor.as_ref().map(|(k, v)| (k.as_str(), *v));
            let page =
                self.svc.meta.list_versions(&input.bucket, &prefix, after, MAX_KEYS).await.map_err(meta_error)?;
            if page.is_empty() {
                break;
            }
            let full = page.len() == MAX_KEYS;
            for record in page {
                if count == max {
                    truncated = true;
                    break 'pages;
                }
                if let Some(cp) = common_prefix(&record.name, &prefix, delimiter) {
                    if prefixes.last().map(String::as_str) != Some(cp) {
                        prefixes.push(cp.to_string());
                        count += 1;
                        next = Some((cp.to_string(), None));
                    }
                    cursor = Some((past(cp), u64::MAX));
                    continue 'pages;
                }
                // Versions come newest first within a key: the first seen is the latest,
                // unless the page began in the middle of the key's versions.
                let is_latest = latest_of.as_deref() != Some(record.name.as_str())
                    && !cursor.as_ref().is_some_and(|(k, v)| *k == record.name && *v != 0);
                latest_of = Some(record.name.clone());
                cursor = Some((record.name.clone(), record.version));
                next = Some((record.name.clone(), Some(version_id(&record))));
                count += 1;
                let owner = dto::Owner { display_name: Some("cairn".into()), id: Some("cairn".into()) };
                if record.is_tombstone() {
                    markers.push(dto::DeleteMarkerEntry {
                        key: Some(record.name.clone()),
                        version_id: Some(version_id(&record)),
                        is_latest: Some(is_latest),
                        last_modified: Some(timestamp(record.created_ms)),
                        owner: Some(owner),
                    });
                } else {
                    versions.push(dto::ObjectVersion {
                        key: Some(record.name.clone()),
                        version_id: Some(version_id(&record)),
                        is_latest: Some(is_latest),
                        last_modified: Some(timestamp(record.created_ms)),
                        e_tag: Some(ETag::Strong(record.etag())),
                        size: Some(record.content.as_ref().map_or(0, |c| c.size) as i64),
                        storage_class: Some(dto::ObjectVersionStorageClass::from_static(
                            dto::ObjectVersionStorageClass::STANDARD,
                        )),
                        owner: Some(owner),
                        ..Default::default()
                    });
                }
            }
            if !full {
                break;
            }
        }
        if truncated {
            // Whether anything follows at all was shown by the record that did not fit.
        } else {
            next = None;
        }
        Ok(S3Response::new(dto::ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            version_id_marker: input.version_id_marker,
            max_keys: Some(max as i32),
            delimiter: input.delimiter,
            is_truncated: Some(truncated),
            next_key_marker: next.as_ref().map(|(k, _)| k.clone()),
            next_version_id_marker: next.as_ref().and_then(|(_, v)| v.clone()),
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: common_prefixes(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let input = req.input;
        self.check_new_key(&input.key)?;
        let attrs = attrs_of!(input);
        let upload = MultipartRecord {
            id: crate::object::resumable::new_upload_id(),
            bucket: input.bucket.clone(),
            name: input.key.clone(),
            attrs,
            created_ms: now_ms(),
        };
        self.svc.meta.create_multipart(&upload).await.map_err(meta_error)?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<dto::UploadPartInput>) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let input = req.input;
        let number = part_number(input.part_number)?;
        let limit = self.part_limit();
        self.check_length("part", input.content_length, limit)?;
        self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let (stored, md5) = self.store_body("part", input.body, limit, input.content_md5.as_ref()).await?;
        let recorded = self
            .svc
            .meta
            .put_part(&input.upload_id, number, &stored.content, &md5, now_ms())
            .await
            .map_err(meta_error)?;
        if !recorded {
            return Err(s3_error!(NoSuchUpload, "upload {} ended while the part arrived", input.upload_id));
        }
        self.svc.recorded(stored);
        Ok(S3Response::new(dto::UploadPartOutput { e_tag: Some(ETag::Strong(md5)), ..Default::default() }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        let caller = caller_of(&req);
        let input = req.input;
        let number = part_number(input.part_number)?;
        self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let source = self.copy_source(&input.copy_source, &caller).await?;
        check_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| if *e.code() == S3ErrorCode::NotModified { s3_error!(PreconditionFailed) } else { e })?;
        let content = source.content.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
        let range = copy_range(input.copy_source_range.as_ref(), content.size)?;
        let limit = self.part_limit();
        if !self.door.fits(range.len(), limit) {
            return Err(entity_too_large("part", limit));
        }
        let body = self.svc.read(&content, range).await.map_err(object_error)?;
        let (stored, md5) = self.store_body("part", Some(StreamingBlob::wrap(body)), limit, None).await?;
        let recorded = self
            .svc
            .meta
            .put_part(&input.upload_id, number, &stored.content, &md5, now_ms())
            .await
            .map_err(meta_error)?;
        if !recorded {
            return Err(s3_error!(NoSuchUpload, "upload {} ended while the part was copied", input.upload_id));
        }
        self.svc.recorded(stored);
        Ok(S3Response::new(dto::UploadPartCopyOutput {
            copy_part_result: Some(dto::CopyPartResult {
                e_tag: Some(ETag::Strong(md5)),
                last_modified: Some(timestamp(now_ms())),
                ..Default::default()
            }),
            copy_source_version_id: Some(version_id(&source)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let asked = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(MalformedXML, "a completion names at least one part"));
        }
        // Every stored part, by number (at most MAX_PARTS of them).
        let mut stored = std::collections::BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self.svc.meta.parts(&upload.id, after, MAX_KEYS).await.map_err(meta_error)?;
            let Some(last) = page.last() else { break };
            after = last.part_number;
            stored.extend(page.into_iter().map(|p| (p.part_number, p)));
        }
        let mut contents = Vec::with_capacity(asked.len());
        let mut md5s = Vec::with_capacity(asked.len());
        let mut previous = 0;
        for (i, part) in asked.iter().enumerate() {
            let number = part_number(part.part_number.unwrap_or(0))?;
            if number <= previous {
                return Err(s3_error!(InvalidPartOrder, "parts must be listed in ascending order"));
            }
            previous = number;
            let found = stored.get(&number).ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded"))?;
            if let Some(etag) = &part.e_tag {
                if etag.value() != found.etag {
                    return Err(s3_error!(InvalidPart, "part {number}'s ETag is {}, not {}", found.etag, etag.value()));
                }
            }
            if i + 1 < asked.len() && found.size < 5 << 20 {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {number} is {} bytes; all but the last need 5 MiB",
                    found.size
                ));
            }
            let content =
                self.svc.meta.content(&found.hash).await.map_err(meta_error)?.ok_or_else(|| {
                    s3_error!(InternalError, "part {number}'s content {} is not recorded", found.hash)
                })?;
            contents.push(content);
            md5s.push(found.etag.clone());
        }
        let etag = multipart_etag(&md5s).ok_or_else(|| s3_error!(InternalError, "a part's ETag is not hex"))?;
        let total: u64 = contents.iter().map(|c| c.size).sum();
        if !self.door.fits(total, self.door.max_object_size) {
            return Err(entity_too_large("completed object", self.door.max_object_size));
        }
        let (svc, bucket, key) = (self.svc.clone(), input.bucket, input.key);
        let finish = async move {
            let whole = svc.store(concatenated(svc.clone(), contents), None).await.map_err(object_error)?;
            if whole.content.size != total {
                return Err(s3_error!(
                    InternalError,
                    "the parts read back as {} bytes, not {total}",
                    whole.content.size
                ));
            }
            let mut attrs = upload.attrs.clone();
            attrs.etag = Some(etag.clone());
            let record =
                match svc.meta.complete_multipart(&upload.id, &whole.content, &attrs).await.map_err(meta_error)? {
                    CompleteOutcome::Completed(record) => record,
                    CompleteOutcome::Gone => {
                        return Err(s3_error!(NoSuchUpload, "upload {} ended meanwhile", upload.id))
                    }
                };
            svc.recorded(whole);
            Ok(dto::CompleteMultipartUploadOutput {
                location: Some(format!("/{bucket}/{key}")),
                bucket: Some(bucket),
                key: Some(key),
                e_tag: Some(ETag::Strong(etag)),
                version_id: Some(version_id(&record)),
                ..Default::default()
            })
        };
        if total < COMPLETE_KEEP_ALIVE_ABOVE {
            return Ok(S3Response::new(finish.await?));
        }
        // Copying the parts takes a while for a large object: answer 200 at once and
        // keep the connection alive with whitespace until the result (or an error)
        // follows in the body, as S3 itself does, so no client times out waiting.
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput { future: Some(Box::pin(finish)), ..Default::default() }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        if !self.svc.meta.abort_multipart(&upload.id).await.map_err(meta_error)? {
            return Err(s3_error!(NoSuchUpload, "no such upload: {}", upload.id));
        }
        let mut response = S3Response::new(dto::AbortMultipartUploadOutput::default());
        response.status = Some(http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn list_parts(&self, req: S3Request<dto::ListPartsInput>) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let max = max_keys(input.max_parts);
        let after = input.part_number_marker.map_or(0, |m| u32::try_from(m).unwrap_or(0));
        let mut parts = self.svc.meta.parts(&upload.id, after, max + 1).await.map_err(meta_error)?;
        let truncated = parts.len() > max;
        parts.truncate(max);
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            is_truncated: Some(truncated),
            next_part_number_marker: parts.last().filter(|_| truncated).map(|p| p.part_number as i32),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| dto::Part {
                        part_number: Some(p.part_number as i32),
                        e_tag: Some(ETag::Strong(p.etag)),
                        size: Some(p.size as i64),
                        last_modified: Some(timestamp(p.created_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_uploads);
        let after = match (&input.key_marker, &input.upload_id_marker) {
            (Some(k), Some(u)) => Some((k.clone(), u.clone())),
            // A key marker alone continues after every upload of that key.
            (Some(k), None) => Some((k.clone(), "~".to_string())),
            _ => None,
        };
        let mut uploads = self
            .svc
            .meta
            .multipart_uploads(&input.bucket, &prefix, after.as_ref().map(|(k, u)| (k.as_str(), u.as_str())), max + 1)
            .await
            .map_err(meta_error)?;
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        let last = uploads.last().filter(|_| truncated).map(|u| (u.name.clone(), u.id.clone()));
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().map(|(k, _)| k.clone()),
            next_upload_id_marker: last.map(|(_, u)| u),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| dto::MultipartUpload {
                        key: Some(u.name),
                        upload_id: Some(u.id),
                        initiated: Some(timestamp(u.created_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

impl CairnS3 {
    /// Deletes one key (a delete marker) or one version of it (for good). S3
    /// answers a delete of what does not exist with success. Returns whether a
    /// delete marker is involved and the version id concerned.
    async fn delete_one(&self, bucket: &str, key: &str, version: Option<&str>) -> S3Result<(bool, Option<String>)> {
        match version {
            Some(id) => {
                let wanted = VersionId::parse(id)?;
                let found = self.svc.meta.version(bucket, key, wanted.version).await.map_err(meta_error)?;
                match found.filter(|r| wanted.names(r)) {
                    Some(record) => {
                        self.svc.meta.delete_version(bucket, key, record.version).await.map_err(meta_error)?;
                        Ok((record.is_tombstone(), Some(id.to_string())))
                    }
                    None => {
                        self.require_bucket(bucket).await?;
                        Ok((false, Some(id.to_string())))
                    }
                }
            }
            None => match self.svc.delete(bucket, key).await {
                Ok(record) => Ok((true, Some(version_id(&record)))),
                Err(ObjectError::NotFound { .. }) => {
                    self.require_bucket(bucket).await?;
                    Ok((false, None))
                }
                // Already a delete marker: S3 would add another; cairn keeps the one.
                Err(ObjectError::Deleted { version, .. }) => {
                    let marker = self.svc.meta.version(bucket, key, version).await.map_err(meta_error)?;
                    Ok((true, marker.as_ref().map(version_id)))
                }
                Err(e) => Err(object_error(e)),
            },
        }
    }
}

/// A continuation token: the key to continue after, base64url (opaque to clients,
/// safe in a query string).
fn encode_token(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_token(token: &str) -> S3Result<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| s3_error!(InvalidArgument, "invalid continuation token"))?;
    String::from_utf8(bytes).map_err(|_| s3_error!(InvalidArgument, "invalid continuation token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roll_up_at_the_delimiter_after_the_prefix() {
        assert_eq!(common_prefix("photos/2024/a.jpg", "photos/", Some("/")), Some("photos/2024/"));
        assert_eq!(common_prefix("photos/a.jpg", "photos/", Some("/")), None);
        assert_eq!(common_prefix("a/b", "", Some("/")), Some("a/"));
        assert_eq!(common_prefix("a/b", "", None), None);
        assert_eq!(common_prefix("a/b", "", Some("")), None);
    }

    #[test]
    fn aws_chunked_is_the_body_framing_and_is_not_stored() {
        assert_eq!(without_aws_chunked("gzip,aws-chunked").as_deref(), Some("gzip"));
        assert_eq!(without_aws_chunked("aws-chunked"), None);
        assert_eq!(without_aws_chunked("aws-chunked, br").as_deref(), Some("br"));
        assert_eq!(without_aws_chunked("gzip").as_deref(), Some("gzip"));
    }

    #[test]
    fn past_a_prefix_sorts_after_every_key_under_it() {
        let p = past("a/");
        assert!(p.as_str() > "a/zzzz" && p.as_str() > "a/\u{FFFF}" && p.as_str() < "b");
    }

    #[test]
    fn the_multipart_etag_is_the_md5_of_the_part_md5s() {
        // Two parts whose MD5s are those of "a" and "b".
        let a = hex::encode(Md5::digest(b"a"));
        let b = hex::encode(Md5::digest(b"b"));
        let mut both = Md5::digest(b"a").to_vec();
        both.extend_from_slice(&Md5::digest(b"b"));
        assert_eq!(multipart_etag(&[a, b]), Some(format!("{}-2", hex::encode(Md5::digest(&both)))));
        assert_eq!(multipart_etag(&["zz".into()]), None);
    }

    #[test]
    fn tokens_round_trip_any_key() {
        for key in ["a", "photos/2024/ü.jpg", "x y+z"] {
            assert_eq!(decode_token(&encode_token(key)).ok().as_deref(), Some(key));
        }
        assert!(decode_token("!!").is_err());
    }

    #[test]
    fn content_md5_is_checked() {
        use base64::Engine;
        let md5 = Md5::digest(b"hello");
        let header = base64::engine::general_purpose::STANDARD.encode(md5);
        assert!(check_content_md5(Some(&header), &hex::encode(md5)).is_ok());
        assert!(check_content_md5(Some(&header), &hex::encode(Md5::digest(b"other"))).is_err());
        assert!(check_content_md5(Some(&"%%".to_string()), "00").is_err());
    }

    #[test]
    fn version_ids_name_one_version_for_good() {
        let record = VersionRecord {
            bucket: "b".into(),
            name: "k".into(),
            version: 3,
            content: None,
            created_ms: 1_700_000_000_123,
            attrs: None,
        };
        let id = version_id(&record);
        assert_eq!(id, "3.1700000000123");
        assert!(VersionId::parse(&id).unwrap().names(&record));
        // The same number given out again later is another version.
        let later = VersionRecord { created_ms: 1_700_000_999_000, ..record.clone() };
        assert!(!VersionId::parse(&id).unwrap().names(&later));
        // A bare number (the native API's) names whatever holds it now.
        assert!(VersionId::parse("3").unwrap().names(&later));
        for bad in ["0", "x", "3.x", "-1", "", "null"] {
            assert!(VersionId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resuming_after_a_common_prefix_skips_its_keys() {
        assert_eq!(resume_after(Some("a/".into()), Some("/")), Some(past("a/")));
        assert_eq!(resume_after(Some("a/b".into()), Some("/")), Some("a/b".into()));
        assert_eq!(resume_after(Some(String::new()), None), None);
    }
}
