//! Object name validation: what a client may call an object. A name is an opaque
//! key, never a path, but names that would be dangerous if anything ever treated
//! them as one are refused at the door.

/// The longest name accepted, in bytes (S3's limit).
pub const MAX_NAME_LEN: usize = 1024;

/// Why a name is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadName {
    /// The name is empty.
    #[error("object name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("object name is {0} bytes, the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// A `/`-separated segment is `.` or `..`.
    #[error("object name has a '.' or '..' segment")]
    DotSegment,
    /// The name contains a NUL or another control character.
    #[error("object name contains a control character")]
    ControlCharacter,
}

/// Checks a (percent-decoded) object name.
pub fn validate(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BadName::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(BadName::ControlCharacter);
    }
    if name.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(BadName::DotSegment);
    }
    Ok(())
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
        assert_eq!(validate(&"x".repeat(1025)), Err(BadName::TooLong(1025)));
        assert_eq!(validate(&"x".repeat(1024)), Ok(()));
    }
}
