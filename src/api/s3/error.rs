//! The S3 errors of the S3 door: cairn's failures in S3's codes ([`object_error`],
//! from the same [`FailureKind`] the native API's statuses come from), and the
//! refusals of the door's own rules (access, rate, names, sizes, conditional
//! reads) as S3 answers them.

use std::time::Duration;

use s3s::{s3_error, S3Error, S3ErrorCode};

use crate::api::limits;
use crate::api::names;
use crate::api::policy::Refusal;
use crate::meta::MetaError;
use crate::object::{FailureKind, ObjectError};

/// S3's answer to a key over its request rate: `SlowDown` (503) with
/// `Retry-After`, what AWS answers and SDKs back off from.
pub(super) fn slow_down(wait: Duration) -> S3Error {
    let mut err =
        S3Error::with_message(S3ErrorCode::SlowDown, "this access key is over its request rate (--rate-limit)");
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(limits::retry_after_secs(wait)));
    // The error's headers replace the answer's, XML type included.
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    err.set_headers(headers);
    err
}

pub(super) fn refusal(reason: Refusal) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, reason.to_string())
}
/// An S3 error for a metadata store failure, classified as every failure of
/// the object paths is ([`object_error`]).
pub(super) fn meta_error(e: MetaError) -> S3Error {
    object_error(ObjectError::Meta(e))
}

/// An S3 error for a failure of the object paths: its [`FailureKind`] (the
/// classification the native API's statuses come from too) in S3's codes, with
/// the code that names the fact where S3 has one. Failures of cairn's own and
/// of the cluster (5xx) are logged here: s3s's own log of every refused request
/// (`s3s::ops`, at ERROR for a bad signature too) is off by default, or any
/// client could flood the log.
pub(super) fn object_error(e: ObjectError) -> S3Error {
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

pub(super) fn internal(e: ObjectError) -> S3Error {
    tracing::warn!(error = %e, "S3 request failed");
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}
pub(super) fn name_error(e: names::BadName) -> S3Error {
    match e {
        names::BadName::TooLong { .. } => S3Error::with_message(S3ErrorCode::KeyTooLongError, e.to_string()),
        e => S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()),
    }
}

/// S3's answer to a body, part or completion past a size limit (S3 answers 400).
pub(super) fn entity_too_large(what: &str, limit: u64) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::EntityTooLarge,
        format!("the {what} is larger than the largest allowed, {limit} bytes (--max-object-size)"),
    )
}
pub(super) fn not_modified(etag: &str) -> S3Error {
    let mut err = S3Error::new(S3ErrorCode::NotModified);
    err.set_status_code(http::StatusCode::NOT_MODIFIED);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = format!("\"{etag}\"").parse() {
        headers.insert(http::header::ETAG, v);
    }
    err.set_headers(headers);
    err
}
