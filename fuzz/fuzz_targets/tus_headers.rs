//! tus headers (`cairn::api::tus`): `Upload-Metadata`, `Upload-Checksum`,
//! `Upload-Length` with `Upload-Defer-Length`. The input's lines are the header
//! values, in that order. Parsed metadata has unique, non-empty keys; a length is
//! never above the maximum.
#![no_main]

use std::collections::HashSet;

use cairn::api::tus;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn map(pairs: &[(&'static str, Option<&str>)]) -> Option<HeaderMap> {
    let mut m = HeaderMap::new();
    for (name, value) in pairs {
        if let Some(v) = value {
            m.insert(HeaderName::from_static(name), HeaderValue::from_str(v).ok()?);
        }
    }
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let metadata = lines.next().unwrap_or("");
    if let Ok(pairs) = tus::parse_metadata(metadata) {
        let keys: HashSet<&String> = pairs.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), pairs.len());
        assert!(pairs.iter().all(|(k, _)| !k.is_empty() && !k.contains([' ', ','])));
    }
    if let Some(m) = map(&[("upload-checksum", lines.next())]) {
        let _ = tus::checksum(&m);
    }
    let (length, defer) = (lines.next(), lines.next());
    let max = 1 << 40;
    if let Some(m) = map(&[("upload-length", length), ("upload-defer-length", defer)]) {
        match tus::upload_length(&m, max) {
            Ok(Some(n)) => assert!(n <= max),
            Ok(None) => assert_eq!(defer.map(str::trim), Some("1")),
            Err(_) => {}
        }
    }
});
