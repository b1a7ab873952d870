//! The S3 rows of the SQL stores: multipart uploads, their parts and access keys,
//! their validation, and the bounds of `multipart_uploads`.

use super::{parse_attrs, prefix_successor, to_sql_int, ListStatements};
use crate::meta::{AccessKey, MetaError, MultipartPart, MultipartRecord};

/// The columns of a `multipart_uploads` row, in the order both stores select them.
macro_rules! multipart_columns {
    () => {
        "id, bucket, name, attrs, created_ms"
    };
}
pub(crate) use multipart_columns;

/// A `multipart_uploads` row as read, before validation.
pub(crate) struct RawMultipart {
    pub(crate) id: String,
    pub(crate) bucket: String,
    pub(crate) name: String,
    pub(crate) attrs: String,
    pub(crate) created_ms: i64,
}

impl RawMultipart {
    /// Validates the row: its attributes must be readable.
    pub(crate) fn parse(self) -> Result<MultipartRecord, MetaError> {
        let attrs = parse_attrs(&self.attrs, || format!("multipart upload {}", self.id))?;
        Ok(MultipartRecord { id: self.id, bucket: self.bucket, name: self.name, attrs, created_ms: self.created_ms })
    }
}

/// The columns of a `multipart_parts` row as both stores select them.
macro_rules! multipart_part_columns {
    () => {
        "part_number, hash, size, etag, created_ms"
    };
}
pub(crate) use multipart_part_columns;

/// A `multipart_parts` row as read, before validation.
pub(crate) struct RawMultipartPart {
    pub(crate) part_number: i64,
    pub(crate) hash: String,
    pub(crate) size: i64,
    pub(crate) etag: String,
    pub(crate) created_ms: i64,
}

impl RawMultipartPart {
    /// Validates the row of upload `id`: a part number that fits in `u32`, a hash,
    /// a non-negative size.
    pub(crate) fn parse(self, id: &str) -> Result<MultipartPart, MetaError> {
        let n = self.part_number;
        let bad = |what: String| MetaError::Corrupt(format!("multipart upload {id} part {n}: {what}"));
        Ok(MultipartPart {
            part_number: u32::try_from(n).map_err(|_| bad("invalid part number".into()))?,
            hash: self.hash.parse().map_err(|e| bad(format!("{e}")))?,
            size: u64::try_from(self.size).map_err(|_| bad(format!("negative size {}", self.size)))?,
            etag: self.etag,
            created_ms: self.created_ms,
        })
    }
}

/// The columns of an `access_keys` row as both stores select them.
macro_rules! key_columns {
    () => {
        "access_key, secret, buckets, read_only, created_ms"
    };
}
pub(crate) use key_columns;

/// An `access_keys` row as read, before validation.
pub(crate) struct RawAccessKey {
    pub(crate) access_key: String,
    pub(crate) secret: String,
    pub(crate) buckets: String,
    pub(crate) read_only: bool,
    pub(crate) created_ms: i64,
}

impl RawAccessKey {
    /// Validates the row: `buckets` must be a JSON array of strings.
    pub(crate) fn parse(self) -> Result<AccessKey, MetaError> {
        let buckets: Vec<String> = serde_json::from_str(&self.buckets).map_err(|e| {
            MetaError::Corrupt(format!("access key {:?}: buckets are not a JSON array of names: {e}", self.access_key))
        })?;
        Ok(AccessKey {
            access_key: self.access_key,
            secret: self.secret,
            buckets,
            read_only: self.read_only,
            created_ms: self.created_ms,
        })
    }
}

/// An access key's buckets as stored: a JSON array of names.
pub(crate) fn key_buckets_json(buckets: &[String]) -> Result<String, MetaError> {
    serde_json::to_string(buckets).map_err(|e| MetaError::Corrupt(format!("cannot encode a bucket list: {e}")))
}

/// The range and limit of `multipart_uploads(prefix, after, limit)`, ordered by
/// (name, id): from `(name, id)` (exclusive or inclusive) up to the prefix's
/// successor.
pub(crate) struct UploadListRange {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) exclusive: bool,
    pub(crate) upper: Option<String>,
    pub(crate) limit: i64,
}

impl UploadListRange {
    /// The range, or `None` when the listing is empty by its arguments (a limit of 0).
    pub(crate) fn new(prefix: &str, after: Option<(&str, &str)>, limit: usize) -> Option<UploadListRange> {
        if limit == 0 {
            return None;
        }
        let (name, id, exclusive) = match after {
            Some((name, id)) if name >= prefix => (name, id, true),
            _ => (prefix, "", false),
        };
        Some(UploadListRange {
            name: name.to_string(),
            id: id.to_string(),
            exclusive,
            upper: prefix_successor(prefix),
            limit: to_sql_int(limit).unwrap_or(i64::MAX),
        })
    }

    /// The statement of `statements` (`from*`: `>=`, `after*`: `>`) that this range
    /// binds.
    pub(crate) fn statement<S: Copy>(&self, statements: &ListStatements<S>) -> S {
        match (self.exclusive, self.upper.is_some()) {
            (false, false) => statements.from,
            (false, true) => statements.from_upto,
            (true, false) => statements.after,
            (true, true) => statements.after_upto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::attrs_json;
    use super::*;
    use crate::content::ContentHash;
    use crate::meta::ObjectAttrs;

    #[test]
    fn attrs_parts_and_keys_refuse_corrupt_rows() {
        let attrs = ObjectAttrs { etag: Some("abc".into()), ..ObjectAttrs::default() };
        let json = attrs_json(&attrs).unwrap();
        assert_eq!(parse_attrs(&json, String::new).unwrap(), attrs);
        assert_eq!(parse_attrs("{}", String::new).unwrap(), ObjectAttrs::default());
        for bad in ["", "[1]", "{\"etag\": 5}", "nope"] {
            assert!(matches!(parse_attrs(bad, String::new), Err(MetaError::Corrupt(_))), "{bad:?}");
        }
        let hash = ContentHash::of(b"x").to_hex();
        let part = |part_number, hash: &str, size| RawMultipartPart {
            part_number,
            hash: hash.to_string(),
            size,
            etag: "e".into(),
            created_ms: 1,
        };
        assert_eq!(part(3, &hash, 5).parse("u").unwrap().part_number, 3);
        assert!(part(-1, &hash, 5).parse("u").is_err());
        assert!(part(i64::from(u32::MAX) + 1, &hash, 5).parse("u").is_err());
        assert!(part(1, "zz", 5).parse("u").is_err());
        assert!(part(1, &hash, -5).parse("u").is_err());
        let key = |buckets: &str| RawAccessKey {
            access_key: "k".into(),
            secret: "s".into(),
            buckets: buckets.into(),
            read_only: true,
            created_ms: 1,
        };
        assert_eq!(key(&key_buckets_json(&["a".into(), "b".into()]).unwrap()).parse().unwrap().buckets, ["a", "b"]);
        assert!(key("[]").parse().unwrap().buckets.is_empty());
        for bad in ["", "{}", "[1]", "\"a\""] {
            assert!(matches!(key(bad).parse(), Err(MetaError::Corrupt(_))), "{bad:?}");
        }
    }
}
