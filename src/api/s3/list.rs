//! The S3 door's listings: ListBuckets, ListObjects, ListObjectsV2 and
//! ListObjectVersions, with S3's delimiter (keys rolled up into common
//! prefixes), markers and continuation tokens over the store's pages.

use s3s::dto::{self, ETag};
use s3s::{s3_error, S3Result};

use super::attrs::timestamp;
use super::error::object_error;
use super::{CairnS3, MAX_KEYS};
use crate::meta::VersionRecord;

/// The common prefix `key` rolls up into under `delimiter`, if any.
pub(super) fn common_prefix<'a>(key: &'a str, prefix: &str, delimiter: Option<&str>) -> Option<&'a str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    Some(&key[..prefix.len() + at + delimiter.len()])
}

/// The smallest string above every key that starts with `prefix` (for skipping a
/// rolled-up common prefix): `prefix` followed by the highest scalar value.
pub(super) fn past(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

/// One page of a listing with S3's delimiter: keys and common prefixes in order.
pub(super) struct Listed {
    pub(super) objects: Vec<VersionRecord>,
    pub(super) prefixes: Vec<String>,
    /// The last key or prefix returned, when more follow.
    pub(super) next: Option<String>,
}

impl CairnS3 {
    /// Current keys of `bucket` under `prefix` after `after`, at most `max` keys
    /// and common prefixes together, rolling keys up at `delimiter`.
    pub(super) async fn list_page(
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
pub(super) fn last_listed(listed: &Listed) -> Option<String> {
    let key = listed.objects.last().map(|r| r.name.clone());
    let prefix = listed.prefixes.last().cloned();
    key.max(prefix)
}

/// Where a listing resumes: after a key, or past a rolled-up common prefix.
pub(super) fn resume_after(marker: Option<String>, delimiter: Option<&str>) -> Option<String> {
    let marker = marker.filter(|m| !m.is_empty())?;
    match delimiter.filter(|d| !d.is_empty()) {
        Some(d) if marker.ends_with(d) => Some(past(&marker)),
        _ => Some(marker),
    }
}

pub(super) fn object_entry(record: &VersionRecord) -> dto::Object {
    dto::Object {
        key: Some(record.name.clone()),
        e_tag: Some(ETag::Strong(record.etag())),
        last_modified: Some(timestamp(record.created_ms)),
        size: Some(record.content.as_ref().map_or(0, |c| c.size) as i64),
        storage_class: Some(dto::ObjectStorageClass::from_static(dto::ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

pub(super) fn common_prefixes(prefixes: Vec<String>) -> Option<Vec<dto::CommonPrefix>> {
    Some(prefixes.into_iter().map(|p| dto::CommonPrefix { prefix: Some(p) }).collect())
}

pub(super) fn max_keys(asked: Option<i32>) -> usize {
    asked.map_or(MAX_KEYS, |m| usize::try_from(m).unwrap_or(0).min(MAX_KEYS))
}

/// A continuation token: the key to continue after, base64url (opaque to clients,
/// safe in a query string).
pub(super) fn encode_token(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

pub(super) fn decode_token(token: &str) -> S3Result<String> {
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
    fn past_a_prefix_sorts_after_every_key_under_it() {
        let p = past("a/");
        assert!(p.as_str() > "a/zzzz" && p.as_str() > "a/\u{FFFF}" && p.as_str() < "b");
    }

    #[test]
    fn tokens_round_trip_any_key() {
        for key in ["a", "photos/2024/ü.jpg", "x y+z"] {
            assert_eq!(decode_token(&encode_token(key)).ok().as_deref(), Some(key));
        }
        assert!(decode_token("!!").is_err());
    }

    #[test]
    fn resuming_after_a_common_prefix_skips_its_keys() {
        assert_eq!(resume_after(Some("a/".into()), Some("/")), Some(past("a/")));
        assert_eq!(resume_after(Some("a/b".into()), Some("/")), Some("a/b".into()));
        assert_eq!(resume_after(Some(String::new()), None), None);
    }
}
