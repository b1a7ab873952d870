//! Object names (`cairn::api::names::validate`): an accepted name is never empty,
//! too long, a path escape (`.`/`..` segment) or a carrier of NUL or another
//! control character.
#![no_main]

use cairn::api::names;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    if names::validate(name).is_ok() {
        assert!(!name.is_empty() && name.len() <= names::MAX_NAME_LEN);
        assert!(!name.chars().any(char::is_control), "control character accepted: {name:?}");
        assert!(name.split('/').all(|s| s != "." && s != ".."), "dot segment accepted: {name:?}");
    }
});
