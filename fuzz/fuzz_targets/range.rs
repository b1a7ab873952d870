//! `Range` headers (`cairn::range::parse`): the first 8 bytes are the object's
//! length, the rest the header. A partial answer lies inside the object, and the
//! range it names, spelled back as a header, parses to itself.
#![no_main]

use cairn::range::{self, RangeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap());
    let Ok(header) = std::str::from_utf8(&data[8..]) else { return };
    if let RangeRequest::Partial(r) = range::parse(header, len) {
        assert!(r.start < r.end && r.end <= len, "{header:?} of {len}: {r:?}");
        let again = range::parse(&format!("bytes={}-{}", r.start, r.end - 1), len);
        assert_eq!(again, RangeRequest::Partial(r));
    }
});
