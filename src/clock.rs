//! The wall clock as cairn records it: milliseconds since the Unix epoch, the
//! unit of every timestamp in the metadata store and the bus. A leaf: it uses
//! nothing of cairn.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (negative for a clock set before 1970,
/// saturating at `i64`'s bounds).
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}
