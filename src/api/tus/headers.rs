//! The tus request headers, parsed: `Upload-Length` / `Upload-Defer-Length`,
//! `Upload-Metadata` and the target it names, `Upload-Checksum`, the whole
//! upload's digest and the PATCH content type.

use axum::http::{header, HeaderMap, HeaderName};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{TusError, OFFSET_OCTET_STREAM, UPLOAD_CHECKSUM, UPLOAD_DEFER, UPLOAD_LENGTH};
use crate::api::limits::Door;
use crate::api::{digest, names};
use crate::meta::DEFAULT_BUCKET;
use crate::object::resumable::{Checksum, ChecksumAlgorithm};

pub(super) fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A non-negative decimal header, if present.
pub(super) fn number(headers: &HeaderMap, name: &HeaderName, header: &'static str) -> Result<Option<u64>, TusError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(TusError::BadHeader { header, problem: "must be a non-negative integer" }),
    }
}

/// `Upload-Length` / `Upload-Defer-Length: 1`: exactly one of them, the length at
/// most `max`. `None`: deferred. Public for the fuzz targets (`fuzz/`).
pub fn upload_length(headers: &HeaderMap, max: u64) -> Result<Option<u64>, TusError> {
    let length = number(headers, &UPLOAD_LENGTH, "Upload-Length")?;
    let deferred = match text(headers, &UPLOAD_DEFER).map(str::trim) {
        None => false,
        Some("1") => true,
        Some(_) => return Err(TusError::BadHeader { header: "Upload-Defer-Length", problem: "must be 1" }),
    };
    match (length, deferred) {
        (Some(_), true) => {
            Err(TusError::BadHeader { header: "Upload-Length", problem: "cannot be sent with Upload-Defer-Length" })
        }
        (None, false) => {
            Err(TusError::BadHeader { header: "Upload-Length", problem: "required (or Upload-Defer-Length: 1)" })
        }
        (Some(length), false) if length > max => Err(TusError::TooLarge { length, max }),
        (length, _) => Ok(length),
    }
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (a key may come
/// without a value). Keys must be unique and non-empty.
pub fn parse_metadata(value: &str) -> Result<Vec<(String, Vec<u8>)>, TusError> {
    let bad = |problem| TusError::BadHeader { header: "Upload-Metadata", problem };
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut words = item.split(' ').filter(|w| !w.is_empty());
        let key = words.next().ok_or(bad("empty key"))?;
        let value = match words.next() {
            None => Vec::new(),
            Some(v) => STANDARD.decode(v).map_err(|_| bad("a value is not base64"))?,
        };
        if words.next().is_some() {
            return Err(bad("a pair has more than a key and a value"));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(bad("a key appears twice"));
        }
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

/// The bucket and name an upload's metadata asks for.
pub(super) fn target(metadata: &[(String, Vec<u8>)], door: &Door) -> Result<(String, String), TusError> {
    let get = |key: &str| metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice());
    let name = get("name").or_else(|| get("filename")).filter(|n| !n.is_empty()).ok_or(TusError::NoName)?;
    let name = String::from_utf8(name.to_vec())
        .map_err(|_| TusError::BadHeader { header: "Upload-Metadata", problem: "the name is not UTF-8" })?;
    door.new_name(&name)?;
    let bucket = match get("bucket") {
        None => DEFAULT_BUCKET.to_string(),
        Some(b) => String::from_utf8(b.to_vec())
            .map_err(|_| TusError::BadHeader { header: "Upload-Metadata", problem: "the bucket is not UTF-8" })?,
    };
    names::validate(&bucket)?;
    Ok((bucket, name))
}

/// The digest of the whole upload from `Digest` / `Content-Digest`.
pub(super) fn expected_digest(headers: &HeaderMap) -> Result<Option<crate::content::ContentHash>, TusError> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    Ok(digest::expected(get("digest"), get("content-digest"))?)
}

pub(super) fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// `Upload-Checksum: <algorithm> <base64>`, if sent. Public for the fuzz targets
/// (`fuzz/`).
pub fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, TusError> {
    let Some(value) = headers.get(UPLOAD_CHECKSUM) else { return Ok(None) };
    let bad = TusError::BadHeader { header: "Upload-Checksum", problem: "must be `<algorithm> <base64 digest>`" };
    let value = value.to_str().map_err(|_| bad)?;
    let (name, digest) = value
        .trim()
        .split_once(' ')
        .ok_or(TusError::BadHeader { header: "Upload-Checksum", problem: "must be `<algorithm> <base64 digest>`" })?;
    let algorithm = ChecksumAlgorithm::from_name(name).ok_or_else(|| TusError::UnsupportedChecksum(name.into()))?;
    let digest = STANDARD
        .decode(digest.trim())
        .map_err(|_| TusError::BadHeader { header: "Upload-Checksum", problem: "the digest is not base64" })?;
    Ok(Some(Checksum { algorithm, digest }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;
    use axum::http::HeaderValue;

    fn door_with(max_name_len: usize) -> Door {
        let scope = crate::telemetry::Scope::new(crate::telemetry::Role::Api, "tus-test");
        Door { max_object_size: 1 << 40, max_name_len, refusals: crate::api::limits::Refusals::new(&scope) }
    }

    #[test]
    fn metadata_pairs_parse_and_name_the_object() {
        let door = door_with(1024);
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential").unwrap();
        assert_eq!(pairs[0], ("filename".to_string(), b"world_domination_plan.pdf".to_vec()));
        assert_eq!(pairs[1], ("is_confidential".to_string(), Vec::new()));
        assert_eq!(target(&pairs, &door).unwrap(), ("default".to_string(), "world_domination_plan.pdf".to_string()));
        assert!(parse_metadata("name !!!").is_err());
        assert!(parse_metadata("name YQ==,name Yg==").is_err());
        assert!(matches!(target(&parse_metadata("other YQ==").unwrap(), &door), Err(TusError::NoName)));
        let dotdot = parse_metadata(&format!("name {}", STANDARD.encode("a/../b"))).unwrap();
        assert!(target(&dotdot, &door).is_err());
        // A name past --max-name-length is refused as too long.
        let long = parse_metadata(&format!("name {}", STANDARD.encode("x".repeat(20)))).unwrap();
        assert!(matches!(
            target(&long, &door_with(10)),
            Err(TusError::Api(ApiError::BadName(names::BadName::TooLong { .. })))
        ));
    }

    #[test]
    fn exactly_one_of_length_and_deferral() {
        let mut h = HeaderMap::new();
        assert!(upload_length(&h, 10).is_err());
        h.insert(UPLOAD_LENGTH, HeaderValue::from(5u64));
        assert_eq!(upload_length(&h, 10).unwrap(), Some(5));
        assert!(matches!(upload_length(&h, 4), Err(TusError::TooLarge { .. })));
        h.insert(UPLOAD_DEFER, HeaderValue::from_static("1"));
        assert!(upload_length(&h, 10).is_err());
        h.remove(UPLOAD_LENGTH);
        assert_eq!(upload_length(&h, 10).unwrap(), None);
        h.insert(UPLOAD_DEFER, HeaderValue::from_static("2"));
        assert!(upload_length(&h, 10).is_err());
    }
}
