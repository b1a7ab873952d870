//! What S3 says about a version beside its bytes: version ids as clients see
//! them, timestamps, the conditions of conditional reads and writes, and the
//! attributes (content type, cache control, user metadata, ...) a PUT, a
//! CopyObject with `REPLACE` or a CreateMultipartUpload sets and a GET answers.

use std::time::{Duration, UNIX_EPOCH};

use s3s::dto::{self, ETagCondition, Timestamp};
use s3s::{s3_error, S3Result};

use super::error::not_modified;
use crate::meta::{ObjectAttrs, Precondition, VersionRecord};

/// A version id as S3 clients see it: cairn's version number and the version's
/// creation time in ms, `<version>.<created>`. The store may hand a number out
/// again once the newest version was removed for good (DeleteObject with a
/// version id, then a PUT); the time tells the two apart, so an id never names
/// another object than the one it was given for.
pub(super) fn version_id(record: &VersionRecord) -> String {
    format!("{}.{}", record.version, record.created_ms)
}

/// A version id from a client: `<version>.<created>` as [`version_id`] makes it,
/// or a bare version number (cairn's native `?version=N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VersionId {
    pub(super) version: u64,
    pub(super) created_ms: Option<i64>,
}

impl VersionId {
    pub(super) fn parse(id: &str) -> S3Result<VersionId> {
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
    pub(super) fn names(&self, record: &VersionRecord) -> bool {
        record.version == self.version && self.created_ms.is_none_or(|c| c == record.created_ms)
    }
}

pub(super) fn timestamp(ms: i64) -> Timestamp {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    Timestamp::from(at)
}

/// Seconds since the epoch of an HTTP date (the precision conditionals compare at).
pub(super) fn seconds(ts: &Timestamp) -> i64 {
    let at: time::OffsetDateTime = ts.clone().into();
    at.unix_timestamp()
}

/// The precondition of a conditional PUT, as S3 has them: `If-None-Match: *`
/// (create only) or `If-Match: <etag>` (replace only that version), one at a time.
pub(super) fn write_condition(
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
pub(super) fn condition_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == etag,
    }
}

/// S3's conditional reads: `If-Match` and `If-Unmodified-Since` failing is 412,
/// `If-None-Match` matching or `If-Modified-Since` not passed is 304 (RFC 7232's
/// order: If-None-Match decides before If-Modified-Since).
pub(super) fn check_conditions(
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
/// The attributes the input of a PUT, a CopyObject with `REPLACE` or a
/// CreateMultipartUpload sets: s3s gives the three their own types with the same
/// fields.
macro_rules! attrs_of {
    ($input:expr) => {
        $crate::api::s3::attrs::attrs_from(
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
pub(super) use attrs_of;

/// A request's `Content-Encoding` as S3 stores it: without `aws-chunked`, which
/// names the request body's framing, not the object's (boto3 sends
/// `gzip,aws-chunked` for a gzip object over https, where it streams checksums in
/// trailers); `None` when nothing else is left.
pub(super) fn without_aws_chunked(encoding: &str) -> Option<String> {
    let kept: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// The attributes of [`attrs_of`], from their fields.
pub(super) fn attrs_from(
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

pub(super) fn parse_expires(value: Option<&String>) -> Option<Timestamp> {
    Timestamp::parse(dto::TimestampFormat::HttpDate, value?).ok()
}

pub(super) fn user_metadata(attrs: &ObjectAttrs) -> Option<dto::Metadata> {
    (!attrs.user.is_empty()).then(|| attrs.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_is_the_body_framing_and_is_not_stored() {
        assert_eq!(without_aws_chunked("gzip,aws-chunked").as_deref(), Some("gzip"));
        assert_eq!(without_aws_chunked("aws-chunked"), None);
        assert_eq!(without_aws_chunked("aws-chunked, br").as_deref(), Some("br"));
        assert_eq!(without_aws_chunked("gzip").as_deref(), Some("gzip"));
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
}
