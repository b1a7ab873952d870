//! The values a data server reads from its clients' headers and paths: content
//! hashes (`X-Cairn-Hash`, `<hash>.<shard>` in paths), policies
//! (`X-Cairn-Policy: K+M`), shard indices. A hash has one spelling; a parsed
//! policy is plausible and prints back to a policy that parses to itself.
#![no_main]

use cairn::content::{ContentHash, Policy, ShardIndex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(h) = text.parse::<ContentHash>() {
        assert_eq!(h.to_hex(), text);
    }
    if let Some((hash, shard)) = text.split_once('.') {
        if let (Ok(h), Ok(_)) = (hash.parse::<ContentHash>(), shard.parse::<ShardIndex>()) {
            assert!(!h.to_hex().contains(['/', '.']));
        }
    }
    if let Ok(p) = text.parse::<Policy>() {
        assert!(p.k >= 1 && p.shards() <= 32, "{text:?}: {p:?}");
        assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
    }
});
