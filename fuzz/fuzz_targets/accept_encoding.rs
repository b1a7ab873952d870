//! `Accept-Encoding` (`cairn::api::accept::accepts_zstd`): one header line per
//! input line. Never panics; an input with no `zstd` and no `*` accepts nothing.
#![no_main]

use cairn::api::accept;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let accepted = accept::accepts_zstd(text.lines());
    let lower = text.to_ascii_lowercase();
    if accepted {
        assert!(lower.contains("zstd") || text.contains('*'), "{text:?}");
    }
});
