//! The S3 door's listings: ListBuckets, ListObjects, ListObjectsV2 and
//! ListObjectVersions, with S3's delimiter (keys rolled up into common
//! prefixes), markers and continuation tokens over the store's pages.

use s3s::dto::{self, ETag};
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::attrs::{timestamp, version_id, VersionId};
use super::auth::caller_of;
use super::error::{meta_error, object_error};
use super::{CairnS3, MAX_KEYS, REGION};
use crate::meta::VersionRecord;

/// ListBuckets: the buckets the caller may see, under the asked prefix.
pub(super) async fn list_buckets(
    s3: &CairnS3,
    req: S3Request<dto::ListBucketsInput>,
) -> S3Result<S3Response<dto::ListBucketsOutput>> {
    let caller = caller_of(&req);
    let buckets = s3.svc.meta.buckets().await.map_err(meta_error)?;
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

/// ListObjects (V1): current keys after a marker.
pub(super) async fn list_objects(
    s3: &CairnS3,
    req: S3Request<dto::ListObjectsInput>,
) -> S3Result<S3Response<dto::ListObjectsOutput>> {
    let input = req.input;
    s3.require_bucket(&input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = max_keys(input.max_keys);
    let after = resume_after(input.marker.clone(), input.delimiter.as_deref());
    let listed = s3.list_page(&input.bucket, &prefix, input.delimiter.as_deref(), after, max).await?;
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

/// ListObjectsV2: current keys after a continuation token or a start key.
pub(super) async fn list_objects_v2(
    s3: &CairnS3,
    req: S3Request<dto::ListObjectsV2Input>,
) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
    let input = req.input;
    s3.require_bucket(&input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = max_keys(input.max_keys);
    let token = match &input.continuation_token {
        Some(t) => Some(decode_token(t)?),
        None => None,
    };
    let after = token.or_else(|| input.start_after.clone());
    let after = resume_after(after, input.delimiter.as_deref());
    let listed = s3.list_page(&input.bucket, &prefix, input.delimiter.as_deref(), after, max).await?;
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

/// ListObjectVersions: every version and delete marker, newest first within a key.
pub(super) async fn list_object_versions(
    s3: &CairnS3,
    req: S3Request<dto::ListObjectVersionsInput>,
) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
    let input = req.input;
    s3.require_bucket(&input.bucket).await?;
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
        let page = s3.svc.meta.list_versions(&input.bucket, &prefix, after, MAX_KEYS).await.map_err(meta_error)?;
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
