//! HTTP byte ranges (RFC 9110 §14): parsing a `Range` header against a known length.
//! Pure arithmetic, shared by the data servers (ranges of a shard) and the API
//! servers (ranges of an object).

/// A satisfiable range: bytes `start..end` (end exclusive) of a representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    /// The `Content-Range` value for this range of a `total`-byte representation.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, total)
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty (never true for a parsed range).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// What a `Range` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole representation with 200. RFC 9110 lets a
    /// server ignore a header it does not understand, and several ranges at once
    /// (multipart answers) are not supported, so both land here.
    Full,
    /// Serve this part with 206.
    Partial(ByteRange),
    /// No byte of the range exists: answer 416.
    Unsatisfiable,
}

/// Parses `header` (the `Range` value) against a representation of `len` bytes.
/// Understands `bytes=a-b`, `bytes=a-` and `bytes=-n`.
pub fn parse(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeRequest::Full };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeRequest::Full,
        // bytes=-n: the last n bytes.
        (true, false) => {
            let Some(n) = num(b) else { return RangeRequest::Full };
            if n == 0 || len == 0 {
                return RangeRequest::Unsatisfiable;
            }
            ByteRange { start: len.saturating_sub(n), end: len }
        }
        (false, true) => {
            let Some(start) = num(a) else { return RangeRequest::Full };
            ByteRange { start, end: len }
        }
        (false, false) => {
            let (Some(start), Some(last)) = (num(a), num(b)) else { return RangeRequest::Full };
            if last < start {
                return RangeRequest::Full;
            }
            ByteRange { start, end: last.saturating_add(1).min(len) }
        }
    };
    if range.start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn the_three_forms() {
        assert_eq!(parse("bytes=0-9", 100), part(0, 10));
        assert_eq!(parse("bytes=90-", 100), part(90, 100));
        assert_eq!(parse("bytes=-10", 100), part(90, 100));
        assert_eq!(parse("bytes=-1000", 100), part(0, 100));
        assert_eq!(parse("bytes=95-1000", 100), part(95, 100));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=5-1", 100), RangeRequest::Full);
        assert_eq!(parse("items=0-1", 100), RangeRequest::Full);
        assert_eq!(parse("bytes=0-1,5-6", 100), RangeRequest::Full);
        assert_eq!(parse("bytes=x-1", 100), RangeRequest::Full);
    }

    #[test]
    fn content_range_is_inclusive() {
        assert_eq!(ByteRange { start: 0, end: 10 }.content_range(100), "bytes 0-9/100");
    }
}
