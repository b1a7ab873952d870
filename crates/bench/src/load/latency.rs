//! Latency samples and their percentiles: pure arithmetic, no I/O.
//!
//! Every successful request's latency is kept, in microseconds, in a `Vec<u32>`
//! per worker (4 bytes a request: ten million requests take 40 MB), so the
//! percentiles are exact rather than read off a histogram's buckets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency percentiles of one kind of request, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Fastest request.
    pub min_us: u32,
    /// Arithmetic mean.
    pub mean_us: u32,
    /// Median (nearest rank).
    pub p50_us: u32,
    /// 90th percentile (nearest rank).
    pub p90_us: u32,
    /// 99th percentile (nearest rank).
    pub p99_us: u32,
    /// Slowest request.
    pub max_us: u32,
}

impl LatencySummary {
    /// Summarises `samples` (microseconds), sorting them in place; `None` when there
    /// are none.
    pub fn from_samples(samples: &mut [u32]) -> Option<LatencySummary> {
        samples.sort_unstable();
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        let mean = sum / u64::try_from(samples.len()).ok().filter(|&n| n > 0)?;
        Some(LatencySummary {
            min_us: *samples.first()?,
            mean_us: u32::try_from(mean).unwrap_or(u32::MAX),
            p50_us: percentile(samples, 50.0)?,
            p90_us: percentile(samples, 90.0)?,
            p99_us: percentile(samples, 99.0)?,
            max_us: *samples.last()?,
        })
    }
}

/// The `p`-th percentile (0–100) of `sorted` by the nearest-rank method: the
/// smallest sample such that at least `p` % of the samples are at or below it.
/// `None` for no samples; `p` outside 0–100 is clamped.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let p = if p.is_nan() { 100.0 } else { p.clamp(0.0, 100.0) };
    // p × n first: exact for whole-number percentiles, so p99 of 100 samples is rank 99.
    let rank = (p * sorted.len() as f64 / 100.0).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// `elapsed` in whole microseconds, saturating at `u32::MAX` (71 minutes).
pub fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}
