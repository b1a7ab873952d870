//! Client-supplied content digests: `Digest: SHA-256=<base64>` (RFC 3230) and
//! `Content-Digest: sha-256=:<base64>:` (RFC 9530). Parsing only; the write path
//! compares.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::content::ContentHash;

/// Why the digest headers are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadDigest {
    /// A SHA-256 digest that is not 32 bytes of base64.
    #[error("{header} header: SHA-256 value is not 32 bytes of base64")]
    Malformed {
        /// Which header.
        header: &'static str,
    },
    /// The two headers name different digests.
    #[error("Digest and Content-Digest headers disagree")]
    Conflict,
}

fn decode(value: &str, header: &'static str) -> Result<ContentHash, BadDigest> {
    let bytes = STANDARD.decode(value.trim()).map_err(|_| BadDigest::Malformed { header })?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| BadDigest::Malformed { header })?;
    Ok(ContentHash::from_bytes(bytes))
}

/// The SHA-256 in a `Digest` header value (`SHA-256=<b64>`, possibly among other
/// algorithms, which are ignored), if any.
pub fn from_digest(value: &str) -> Result<Option<ContentHash>, BadDigest> {
    for item in value.split(',') {
        if let Some((alg, v)) = item.trim().split_once('=') {
            if alg.trim().eq_ignore_ascii_case("sha-256") {
                return decode(v, "Digest").map(Some);
            }
        }
    }
    Ok(None)
}

/// The SHA-256 in a `Content-Digest` header value (`sha-256=:<b64>:`, a structured
/// field dictionary), if any.
pub fn from_content_digest(value: &str) -> Result<Option<ContentHash>, BadDigest> {
    for item in value.split(',') {
        if let Some((alg, v)) = item.trim().split_once('=') {
            if alg.trim().eq_ignore_ascii_case("sha-256") {
                let v = v.trim();
                let inner = v
                    .strip_prefix(':')
                    .and_then(|v| v.strip_suffix(':'))
                    .ok_or(BadDigest::Malformed { header: "Content-Digest" })?;
                return decode(inner, "Content-Digest").map(Some);
            }
        }
    }
    Ok(None)
}

/// The digest a request asks for, from either header; both must agree if both are
/// present.
pub fn expected(digest: Option<&str>, content_digest: Option<&str>) -> Result<Option<ContentHash>, BadDigest> {
    let a = digest.map(from_digest).transpose()?.flatten();
    let b = content_digest.map(from_content_digest).transpose()?.flatten();
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(BadDigest::Conflict),
        (a, b) => Ok(a.or(b)),
    }
}

/// The base64 form of a hash, as the digest headers carry it.
pub fn to_base64(hash: &ContentHash) -> String {
    STANDARD.encode(hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_header_forms_parse() {
        let h = ContentHash::of(b"add test 123");
        let b64 = to_base64(&h);
        assert_eq!(from_digest(&format!("SHA-256={b64}")), Ok(Some(h)));
        assert_eq!(from_digest(&format!("md5=abc, sha-256={b64}")), Ok(Some(h)));
        assert_eq!(from_content_digest(&format!("sha-256=:{b64}:")), Ok(Some(h)));
        assert_eq!(from_digest("md5=abc"), Ok(None));
        assert_eq!(expected(None, None), Ok(None));
        assert_eq!(expected(Some(&format!("SHA-256={b64}")), Some(&format!("sha-256=:{b64}:"))), Ok(Some(h)));
    }

    #[test]
    fn malformed_and_conflicting_digests_are_refused() {
        assert!(from_digest("SHA-256=not base64!").is_err());
        assert!(from_digest("SHA-256=AAAA").is_err());
        let b64 = to_base64(&ContentHash::of(b"x"));
        assert!(from_content_digest(&format!("sha-256={b64}")).is_err());
        let other = to_base64(&ContentHash::of(b"y"));
        assert_eq!(
            expected(Some(&format!("SHA-256={b64}")), Some(&format!("sha-256=:{other}:"))),
            Err(BadDigest::Conflict)
        );
    }
}
