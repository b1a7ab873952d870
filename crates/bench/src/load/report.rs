//! What a run measured, as data ([`BenchReport`], serializable) and as a table for
//! people ([`BenchReport::render_table`]). Nothing here prints: the caller decides.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::latency::LatencySummary;
use super::schedule::{Tally, KEPT_ERRORS};
use super::{Api, BenchError, Op};
use cairn::size::ByteSize;

/// Everything one run measured, with the parameters it ran with. See the module
/// documentation of [`crate::load`] for the JSON form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The API server loaded.
    pub endpoint: String,
    /// The interface loaded.
    #[serde(default)]
    pub api: Api,
    /// The bucket of an S3 run; `None` for the native API.
    #[serde(default)]
    pub bucket: Option<String>,
    /// The operation mix.
    pub op: Op,
    /// Percentage of requests that were meant to be GETs (100, 0, or the mixed share).
    pub get_percent: u32,
    /// Object size in bytes (the smallest, with `--size-max`).
    pub object_size: u64,
    /// The largest object size in bytes: `object_size` unless `--size-max` was given.
    #[serde(default)]
    pub object_size_max: u64,
    /// The objects a fill was to get acknowledged; `None` for other ops.
    #[serde(default)]
    pub count: Option<u64>,
    /// Workers issuing requests at once.
    pub concurrency: u32,
    /// The requested length of the timed phase, in seconds; 0 for a fill (no deadline).
    pub duration_s: f64,
    /// How long the timed phase took, in seconds, until the last in-flight request
    /// ended; rates are per this time.
    pub elapsed_s: f64,
    /// The name prefix of every object written.
    pub prefix: String,
    /// Objects written before the timed phase for GETs to read (0 for `put`).
    pub prepared_objects: u64,
    /// Live data servers the API server reported before the run.
    pub live_data_servers: u64,
    /// Whether the timed phase was cut short (Ctrl-C / SIGTERM).
    pub interrupted: bool,
    /// All requests of the timed phase together.
    pub total: OpReport,
    /// One entry per request kind that ran (`GET`, `PUT`), in that order.
    pub ops: Vec<OpReport>,
    /// The deletion of what the run wrote; `None` with `--keep`.
    pub cleanup: Option<CleanupReport>,
}

/// The figures of one kind of request (or of all of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// `GET`, `PUT` or `total`.
    pub op: String,
    /// Successful requests.
    pub ops: u64,
    /// Failed requests: unexpected status, wrong length, transport error, timeout.
    pub errors: u64,
    /// Object bytes moved by the successful requests.
    pub bytes: u64,
    /// Successful requests per second of `elapsed_s`.
    pub ops_per_s: f64,
    /// Decimal megabytes (10^6 bytes) of object data per second of `elapsed_s`.
    pub mb_per_s: f64,
    /// Latency of the successful requests, from sending the request to the last byte
    /// of the answer; `None` when there were none.
    pub latency_us: Option<LatencySummary>,
    /// The first few error messages (at most five), in no particular order.
    pub first_errors: Vec<String>,
}

/// What deleting the run's objects did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Names the run tried to write (prepared and PUT), all of which it deletes.
    pub attempted: u64,
    /// Names deleted.
    pub deleted: u64,
    /// Names that did not exist (their PUT failed or never finished).
    pub not_found: u64,
    /// Deletions that failed.
    pub errors: u64,
    /// Names not tried because the cleanup gave up after too many failures.
    pub skipped: u64,
    /// The first few deletion errors.
    pub first_errors: Vec<String>,
    /// How long the cleanup took, in seconds.
    pub elapsed_s: f64,
}

impl OpReport {
    /// The figures of `tally` over `elapsed`; sorts its latencies.
    pub(crate) fn from_tally(op: &str, tally: &mut Tally, elapsed: Duration) -> OpReport {
        let secs = elapsed.as_secs_f64();
        let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let ops = tally.latencies_us.len() as u64;
        OpReport {
            op: op.to_string(),
            ops,
            errors: tally.errors,
            bytes: tally.bytes,
            ops_per_s: per_s(ops as f64),
            mb_per_s: per_s(tally.bytes as f64 / 1e6),
            latency_us: LatencySummary::from_samples(&mut tally.latencies_us),
            first_errors: tally.first_errors.clone(),
        }
    }
}

impl BenchReport {
    /// Failed requests in the timed phase and the cleanup together.
    pub fn error_count(&self) -> u64 {
        self.total.errors + self.cleanup.as_ref().map_or(0, |c| c.errors)
    }

    /// `Err(`[`BenchError::RequestsFailed`]`)` when any request failed, so that a
    /// script running the bench notices.
    pub fn check(&self) -> Result<(), BenchError> {
        match self.error_count() {
            0 => Ok(()),
            errors => Err(BenchError::RequestsFailed { errors }),
        }
    }

    /// The report as a table for a terminal (lines, no final newline).
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut out);
        out.truncate(out.trim_end().len());
        out
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        let mix = match self.op {
            Op::Mixed => format!("mixed ({}% GET / {}% PUT)", self.get_percent, 100 - self.get_percent.min(100)),
            Op::Get => "get".to_string(),
            Op::Put => "put".to_string(),
            Op::GetMissing => "get-missing (names never written, 404 expected)".to_string(),
            Op::Fill => "fill".to_string(),
        };
        let sizes = if self.object_size_max > self.object_size {
            format!("{} to {}", ByteSize(self.object_size), ByteSize(self.object_size_max))
        } else {
            ByteSize(self.object_size).to_string()
        };
        let until = match self.count {
            Some(count) => format!("until {count} are acknowledged"),
            None => {
                format!("for {}", humantime::format_duration(Duration::from_millis((self.duration_s * 1000.0) as u64)))
            }
        };
        writeln!(
            out,
            "cairn-bench load: {mix} of {sizes} objects, concurrency {}, {until} (ran {:.3} s){}",
            self.concurrency,
            self.elapsed_s,
            if self.interrupted { ", interrupted" } else { "" },
        )?;
        let interface = match (self.api, &self.bucket) {
            (Api::S3, Some(bucket)) => format!("S3, bucket {bucket}"),
            (Api::S3, None) => "S3".to_string(),
            (Api::Native, _) => "native API".to_string(),
        };
        writeln!(out, "endpoint:  {} ({interface}, {} live data servers)", self.endpoint, self.live_data_servers)?;
        writeln!(out, "objects:   prefix {}, {} prepared for GET", self.prefix, self.prepared_objects)?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<6} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "op", "ops", "ops/s", "MB/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        )?;
        let rows: Vec<&OpReport> = if self.ops.len() > 1 {
            self.ops.iter().chain(std::iter::once(&self.total)).collect()
        } else {
            self.ops.iter().collect()
        };
        for r in rows {
            let ms = |pick: fn(&LatencySummary) -> u32| {
                r.latency_us.as_ref().map_or_else(|| "-".to_string(), |l| format!("{:.3}", f64::from(pick(l)) / 1000.0))
            };
            writeln!(
                out,
                "{:<6} {:>9} {:>10.1} {:>10.2} {:>9} {:>9} {:>9} {:>9} {:>7}",
                r.op,
                r.ops,
                r.ops_per_s,
                r.mb_per_s,
                ms(|l| l.p50_us),
                ms(|l| l.p90_us),
                ms(|l| l.p99_us),
                ms(|l| l.max_us),
                r.errors,
            )?;
        }
        writeln!(out)?;
        if let Some(put) = self.ops.iter().find(|r| r.op == "PUT") {
            writeln!(out, "written:   {} objects, {} bytes of object data", put.ops, put.bytes)?;
        }
        writeln!(out, "MB/s is decimal megabytes (10^6 bytes) of object data per second of the run.")?;
        writeln!(out, "Latency runs from sending a request to the last byte of its answer; successful requests only.")?;
        match &self.cleanup {
            None => writeln!(out, "cleanup:   kept every object (--keep)")?,
            Some(c) => writeln!(
                out,
                "cleanup:   deleted {} of {} names written ({} not found, {} skipped), {} errors, {:.2} s",
                c.deleted, c.attempted, c.not_found, c.skipped, c.errors, c.elapsed_s
            )?,
        }
        let errors = self.error_count();
        if errors == 0 {
            writeln!(out, "errors:    none")?;
        } else {
            writeln!(out, "errors:    {errors}; the first ones:")?;
            let cleanup_errors = self.cleanup.iter().flat_map(|c| c.first_errors.iter());
            for e in self.total.first_errors.iter().chain(cleanup_errors).take(2 * KEPT_ERRORS) {
                writeln!(out, "  {e}")?;
            }
        }
        Ok(())
    }
}
