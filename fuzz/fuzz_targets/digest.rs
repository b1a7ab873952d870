//! `Digest` and `Content-Digest` headers (`cairn::api::digest`): the input is the
//! two header values, split at the first newline. A digest found is spelled in
//! its header (base64 decoding is canonical), and `expected` agrees with the two
//! parsers.
#![no_main]

use cairn::api::digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let da = digest::from_digest(a);
    let db = digest::from_content_digest(b);
    if let Ok(Some(h)) = &da {
        assert!(a.contains(&digest::to_base64(h)));
    }
    if let Ok(Some(h)) = &db {
        assert!(b.contains(&format!(":{}:", digest::to_base64(h))));
    }
    match (da, db, digest::expected(Some(a), Some(b))) {
        (Ok(Some(x)), Ok(Some(y)), Ok(got)) => assert!(x == y && got == Some(x)),
        (Ok(Some(x)), Ok(Some(y)), Err(_)) => assert_ne!(x, y),
        (Ok(x), Ok(y), got) => assert_eq!(got, Ok(x.or(y))),
        (_, _, got) => assert!(got.is_err()),
    }
});
