//! Waiting for an event in a test: poll its condition until it holds, with a
//! deadline that fails the test with what was awaited. Tests use this instead of
//! a fixed sleep that hopes the event has happened by then.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it holds; fails the test after `limit`, naming
/// `what` it waited for. The limit should be generous (10-30 s): a loaded 2-core
/// machine runs many test binaries at once, and a passing test never waits it out.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}
