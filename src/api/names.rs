//! Object name validation: what a client may call an object. A name is an opaque
//! key, never a path, but names that would be dangerous if anything ever treated
//! them as one are refused at the door.
//!
//! A new name (a PUT, a copy's target, an upload's name) must also fit the
//! server's `--max-name-length` ([`validate_new`]); a name is read or deleted by
//! the absolute limit alone, so lowering the setting never strands what exists.
//!
//! A name goes into a URL path as [`encode_path`] writes it; every client of the
//! native API (`cairn put` and friends, `cairn admin`, the load generator) uses that
//! one encoding.

/// The longest name accepted, in bytes (S3's limit), and the most
/// `--max-name-length` may be.
pub const MAX_NAME_LEN: usize = 1024;

/// Why a name is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadName {
    /// The name is empty.
    #[error("object name is empty")]
    Empty,
    /// The name is longer than the limit (at most [`MAX_NAME_LEN`]).
    #[error("object name is {len} bytes, the limit is {limit} (--max-name-length)")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// The longest name accepted.
        limit: usize,
    },
    /// A `/`-separated segment is `.` or `..`.
    #[error("object name has a '.' or '..' segment")]
    DotSegment,
    /// The name contains a NUL or another control character.
    #[error("object name contains a control character")]
    ControlCharacter,
}

/// Checks a (percent-decoded) object name.
pub fn validate(name: &str) -> Result<(), BadName> {
    validate_new(name, MAX_NAME_LEN)
}

/// Checks a (percent-decoded) name an object is about to get: as [`validate`],
/// and at most `limit` bytes (itself at most [`MAX_NAME_LEN`]).
pub fn validate_new(name: &str, limit: usize) -> Result<(), BadName> {
    let limit = limit.min(MAX_NAME_LEN);
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > limit {
        return Err(BadName::TooLong { len: name.len(), limit });
    }
    if name.chars().any(char::is_control) {
        return Err(BadName::ControlCharacter);
    }
    if name.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(BadName::DotSegment);
    }
    Ok(())
}

/// `name` percent-encoded for a URL path: unreserved characters and `/` stay,
/// every other byte becomes `%XX`.
pub fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in ["1234.txt", "a/b/c.jpg", "..hidden", "x..y", "日本語", "a b"] {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn dangerous_names_are_refused() {
        assert_eq!(validate(""), Err(BadName::Empty));
        assert_eq!(validate(".."), Err(BadName::DotSegment));
        assert_eq!(validate("a/../b"), Err(BadName::DotSegment));
        assert_eq!(validate("a/./b"), Err(BadName::DotSegment));
        assert_eq!(validate("../etc/passwd"), Err(BadName::DotSegment));
        assert_eq!(validate("a\0b"), Err(BadName::ControlCharacter));
        assert_eq!(validate("a\nb"), Err(BadName::ControlCharacter));
        assert_eq!(validate(&"x".repeat(1025)), Err(BadName::TooLong { len: 1025, limit: 1024 }));
        assert_eq!(validate(&"x".repeat(1024)), Ok(()));
    }

    #[test]
    fn new_names_fit_the_configured_length() {
        assert_eq!(validate_new(&"x".repeat(100), 100), Ok(()));
        assert_eq!(validate_new(&"x".repeat(101), 100), Err(BadName::TooLong { len: 101, limit: 100 }));
        // The setting never raises the absolute limit.
        assert_eq!(validate_new(&"x".repeat(1025), 4096), Err(BadName::TooLong { len: 1025, limit: 1024 }));
        assert_eq!(validate_new("a/../b", 100), Err(BadName::DotSegment));
    }
}
