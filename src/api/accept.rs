//! `Accept-Encoding` negotiation for object reads: whether a client takes the
//! stored zstd stream as it is (`Content-Encoding: zstd`). A pure function over the
//! header values, like [`super::digest`].
//!
//! Only zstd is ever sent encoded: content is stored as zstd, and re-compressing it
//! to gzip for clients that accept only gzip would spend the CPU this passthrough
//! saves, so those clients (and every range request) get the original bytes.

/// Whether the `Accept-Encoding` values accept `zstd`: a `zstd` entry with a
/// non-zero q-value, or, with no `zstd` entry, a `*` with a non-zero q-value
/// (RFC 9110 §12.5.3). Codings are case-insensitive; a malformed q-value counts
/// as a refusal (never send an encoding the client may not have asked for).
pub fn accepts_zstd<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    let mut star = None;
    for value in values {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let mut q = Some(1.0f32);
            for param in parts {
                let Some((key, val)) = param.split_once('=') else { continue };
                if key.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(val.trim());
                }
            }
            let accepted = q.is_some_and(|q| q > 0.0);
            if coding.eq_ignore_ascii_case("zstd") {
                return accepted;
            }
            if coding == "*" {
                star = Some(accepted);
            }
        }
    }
    star.unwrap_or(false)
}

/// A q-value: `0`, `1`, or `0.` / `1.` with up to three digits.
fn parse_q(text: &str) -> Option<f32> {
    let valid = match text.as_bytes() {
        [b'0' | b'1'] => true,
        [b'0' | b'1', b'.', rest @ ..] => rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let q: f32 = text.parse().ok().filter(|_| valid)?;
    (q <= 1.0).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::accepts_zstd;

    #[test]
    fn q_values_decide() {
        let yes = ["zstd", "gzip, zstd", "ZSTD;q=0.5", "br;q=1, zstd;q=0.001", "*", "gzip;q=1, *;q=0.1", "zstd; q=1"];
        for h in yes {
            assert!(accepts_zstd([h]), "{h}");
        }
        let no = [
            "",
            "gzip",
            "gzip, deflate, br",
            "zstd;q=0",
            "zstd;q=0.000",
            "*;q=0",
            "zstd;q=0, *",
            "zstd;q=2",
            "zstd;q=abc",
            "identity",
        ];
        for h in no {
            assert!(!accepts_zstd([h]), "{h}");
        }
        assert!(accepts_zstd(["gzip", "zstd"]), "several header lines");
        assert!(!accepts_zstd(["*", "zstd;q=0"]), "an explicit refusal beats *");
    }
}
