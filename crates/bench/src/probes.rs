//! What the suite reads from the system about the servers it runs, beside their
//! HTTP answers: `strace -c` summaries and `perf stat` counts (fsync calls), the disk blocks a directory
//! holds (like `du --block-size=1`), a process's resident memory (`VmRSS` in
//! `/proc/<pid>/status`) and a file system's free space. The parsers are pure
//! functions of the text, so tests reach them without a process or a tracer;
//! [`crate::small_shards`] uses them.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The `fsync` and `fdatasync` calls an `strace -c -e trace=fsync,fdatasync`
/// summary or a `perf stat` of their `sys_enter` tracepoints counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCalls {
    /// `fsync` calls.
    pub fsync: u64,
    /// `fdatasync` calls.
    pub fdatasync: u64,
}

impl SyncCalls {
    /// Both together: the calls that make data durable.
    pub fn total(&self) -> u64 {
        self.fsync + self.fdatasync
    }
}

/// Why an `strace -c` summary could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SummaryError {
    /// The text has lines but no table header (`calls` ... `syscall`).
    #[error("no strace -c table in its output (first line: {first_line:?})")]
    NoTable {
        /// The first line, to show what came instead.
        first_line: String,
    },
    /// A row of the table does not have a count where `calls` is.
    #[error("strace -c row {row:?} has no call count")]
    BadRow {
        /// The row.
        row: String,
    },
}

/// The `fsync` and `fdatasync` calls in the summary table `strace -c -o FILE` writes:
///
/// ```text
/// % time     seconds  usecs/call     calls    errors syscall
/// ------ ----------- ----------- --------- --------- ----------------
///  99.80    0.123456          19      6472           fsync
/// ------ ----------- ----------- --------- --------- ----------------
/// 100.00    0.123456          19      6472           total
/// ```
///
/// `calls` is the fourth column whether `errors` is filled or not. strace leaves a
/// syscall that was never called out of the table, and writes nothing at all when
/// none of the traced ones was: empty text is zero calls.
pub fn parse_strace_summary(text: &str) -> Result<SyncCalls, SummaryError> {
    let mut calls = SyncCalls::default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(first) = lines.first() else { return Ok(calls) };
    let header = lines.iter().position(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.contains(&"calls") && words.last() == Some(&"syscall")
    });
    let Some(header) = header else { return Err(SummaryError::NoTable { first_line: first.trim().to_string() }) };
    for line in &lines[header + 1..] {
        let words: Vec<&str> = line.split_whitespace().collect();
        let slot = match words.last() {
            Some(&"fsync") => &mut calls.fsync,
            Some(&"fdatasync") => &mut calls.fdatasync,
            _ => continue,
        };
        let count = words.get(3).and_then(|w| w.parse::<u64>().ok());
        *slot += count.ok_or_else(|| SummaryError::BadRow { row: line.trim().to_string() })?;
    }
    Ok(calls)
}

/// The `perf stat` event that counts `fsync` calls.
pub const PERF_FSYNC_EVENT: &str = "syscalls:sys_enter_fsync";
/// The `perf stat` event that counts `fdatasync` calls.
pub const PERF_FDATASYNC_EVENT: &str = "syscalls:sys_enter_fdatasync";

/// Why a `perf stat` output could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PerfStatError {
    /// No line names the event: perf wrote something else (or nothing).
    #[error("perf stat printed no count of {event} (first line: {first_line:?})")]
    MissingEvent {
        /// The event.
        event: &'static str,
        /// The first non-empty line, to show what came instead.
        first_line: String,
    },
    /// perf printed `<not counted>` or `<not supported>` instead of a count.
    #[error("perf stat did not count {event}: {reason}")]
    NotCounted {
        /// The event.
        event: &'static str,
        /// What perf printed in place of the count.
        reason: String,
    },
    /// The event's line has something that is not a count where the count is.
    #[error("perf stat line {line:?} has no count")]
    BadCount {
        /// The line.
        line: String,
    },
}

/// The `fsync` and `fdatasync` calls in what `perf stat -e
/// syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -o FILE` writes:
///
/// ```text
/// # started on Thu Nov 26 02:21:36 2026
///
///  Performance counter stats for process id '13789':
///
///               2057      syscalls:sys_enter_fsync
///               2813      syscalls:sys_enter_fdatasync
///
///        3.461457839 seconds time elapsed
/// ```
///
/// Each event's line is its count, then its name. The count may be grouped with
/// commas (perf's `--big-num` in a locale that groups); a count perf could not
/// make is `<not counted>` or `<not supported>` in its place, which is an error,
/// not zero: the calls were not counted, not absent. Both events must be there.
pub fn parse_perf_stat(text: &str) -> Result<SyncCalls, PerfStatError> {
    let count = |event: &'static str| -> Result<u64, PerfStatError> {
        let line = text.lines().find(|l| l.split_whitespace().any(|w| w == event)).ok_or_else(|| {
            let first_line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_string();
            PerfStatError::MissingEvent { event, first_line }
        })?;
        let before = line.trim_start();
        if let Some(rest) = before.strip_prefix('<') {
            let reason = rest.split('>').next().unwrap_or_default();
            return Err(PerfStatError::NotCounted { event, reason: format!("<{reason}>") });
        }
        let first = before.split_whitespace().next().unwrap_or_default();
        let digits: String = first.chars().filter(|&c| c != ',').collect();
        digits.parse::<u64>().map_err(|_| PerfStatError::BadCount { line: line.trim().to_string() })
    };
    Ok(SyncCalls { fsync: count(PERF_FSYNC_EVENT)?, fdatasync: count(PERF_FDATASYNC_EVENT)? })
}

/// Disk space a directory tree takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUse {
    /// Allocated bytes (`st_blocks` × 512) of every file and directory, the top one
    /// included, each hard-linked inode once: what `du --block-size=1` says.
    pub allocated: u64,
    /// The files' lengths added up (`du --apparent-size` without directories).
    pub apparent: u64,
    /// Regular files.
    pub files: u64,
}

impl DiskUse {
    /// Both added up.
    pub fn plus(self, other: DiskUse) -> DiskUse {
        DiskUse {
            allocated: self.allocated + other.allocated,
            apparent: self.apparent + other.apparent,
            files: self.files + other.files,
        }
    }
}

/// The disk use of `root` and everything under it, skipping entries whose file
/// name `skip` accepts (and, for a directory, all it holds). Symbolic links are
/// counted as themselves, never followed. Blocking: call it off the async runtime.
/// A file removed while it walks is not an error (a server may delete temp files).
pub fn disk_use(root: &Path, skip: &dyn Fn(&str) -> bool) -> io::Result<DiskUse> {
    let mut seen = HashSet::new();
    let mut total = DiskUse::default();
    let mut pending = vec![root.to_path_buf()];
    let mut top = true;
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !top => continue,
            Err(e) => return Err(e),
        };
        top = false;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total.allocated += meta.blocks() * 512;
        if meta.is_file() {
            total.apparent += meta.len();
            total.files += 1;
        }
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if !skip(&entry.file_name().to_string_lossy()) {
                    pending.push(entry.path());
                }
            }
        }
    }
    Ok(total)
}

/// Resident memory in bytes from the text of `/proc/<pid>/status` (its `VmRSS:`
/// line, in kB, which the kernel means as KiB); `None` without one (a kernel
/// thread, a zombie).
pub fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(kib * 1024),
        _ => None,
    }
}

/// Resident memory of process `pid` now, in bytes.
pub fn process_rss(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    vm_rss_bytes(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/status has no VmRSS line")))
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_strace_summary_gives_fsync_and_fdatasync_calls() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 91.38    2.000265         309      6472           fsync
  8.62    0.000025          25        12         3 fdatasync
------ ----------- ----------- --------- --------- ----------------
100.00    2.000290         308      6484         3 total
";
        let calls = parse_strace_summary(text).unwrap();
        assert_eq!(calls, SyncCalls { fsync: 6472, fdatasync: 12 });
        assert_eq!(calls.total(), 6484);
    }

    #[test]
    fn a_syscall_strace_never_saw_is_zero_and_an_empty_summary_is_no_calls() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.000290         145         2           fdatasync
------ ----------- ----------- --------- --------- ----------------
100.00    0.000290         145         2           total
";
        assert_eq!(parse_strace_summary(text).unwrap(), SyncCalls { fsync: 0, fdatasync: 2 });
        // strace -c writes nothing when no traced call happened.
        assert_eq!(parse_strace_summary("").unwrap(), SyncCalls::default());
        assert_eq!(parse_strace_summary("\n\n").unwrap(), SyncCalls::default());
    }

    #[test]
    fn text_that_is_not_a_summary_is_refused() {
        let e =
            parse_strace_summary("strace: attach: ptrace(PTRACE_SEIZE, 12): Operation not permitted\n").unwrap_err();
        assert!(
            matches!(e, SummaryError::NoTable { ref first_line } if first_line.contains("Operation not permitted"))
        );
        let text = "% time     seconds  usecs/call     calls    errors syscall\n 91.38 2.0 309 many fsync\n";
        assert!(matches!(parse_strace_summary(text), Err(SummaryError::BadRow { .. })));
    }

    #[test]
    fn a_perf_stat_output_gives_fsync_and_fdatasync_calls() {
        // As perf 6.1 writes it with -o, cairn dev under 16 clients of 4 KiB PUTs.
        let text = "# started on Thu Nov 26 02:21:36 2026


 Performance counter stats for process id '13789':

              2057      syscalls:sys_enter_fsync                                           
              2813      syscalls:sys_enter_fdatasync                                       

       3.461457839 seconds time elapsed

";
        let calls = parse_perf_stat(text).unwrap();
        assert_eq!(calls, SyncCalls { fsync: 2057, fdatasync: 2813 });
        assert_eq!(calls.total(), 4870);
        // Grouped digits (--big-num in a grouping locale), zero, events in either order.
        let text = "     0      syscalls:sys_enter_fsync\n 1,234,567      syscalls:sys_enter_fdatasync\n";
        assert_eq!(parse_perf_stat(text).unwrap(), SyncCalls { fsync: 0, fdatasync: 1_234_567 });
        let text = "  12      syscalls:sys_enter_fdatasync\n  3      syscalls:sys_enter_fsync\n";
        assert_eq!(parse_perf_stat(text).unwrap(), SyncCalls { fsync: 3, fdatasync: 12 });
    }

    #[test]
    fn a_perf_event_not_counted_or_missing_is_an_error_not_zero() {
        let text = "
 Performance counter stats for process id '13789':

     <not counted>      syscalls:sys_enter_fsync
              2813      syscalls:sys_enter_fdatasync
";
        assert_eq!(
            parse_perf_stat(text),
            Err(PerfStatError::NotCounted { event: PERF_FSYNC_EVENT, reason: "<not counted>".into() })
        );
        let text = "  9914      syscalls:sys_enter_fsync\n   <not supported>      syscalls:sys_enter_fdatasync\n";
        let e = parse_perf_stat(text).unwrap_err();
        assert_eq!(e, PerfStatError::NotCounted { event: PERF_FDATASYNC_EVENT, reason: "<not supported>".into() });
        assert_eq!(e.to_string(), "perf stat did not count syscalls:sys_enter_fdatasync: <not supported>");
        // perf's own complaint instead of counts, and nothing at all.
        let text = "event syntax error: 'syscalls:sys_enter_fsnyc'\n                     \\___ unknown tracepoint\n";
        assert!(matches!(
            parse_perf_stat(text),
            Err(PerfStatError::MissingEvent { event: PERF_FSYNC_EVENT, ref first_line }) if first_line.starts_with("event syntax error")
        ));
        assert!(matches!(parse_perf_stat(""), Err(PerfStatError::MissingEvent { .. })));
        let text = "  lots      syscalls:sys_enter_fsync\n  1      syscalls:sys_enter_fdatasync\n";
        assert!(matches!(parse_perf_stat(text), Err(PerfStatError::BadCount { .. })));
    }

    #[test]
    fn rss_is_read_from_proc_status_in_bytes() {
        let status = "Name:\tcairn\nVmPeak:\t  900000 kB\nVmRSS:\t   51200 kB\nRssAnon:\t 40000 kB\n";
        assert_eq!(vm_rss_bytes(status), Some(51200 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tkthreadd\nState:\tS (sleeping)\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\t12 MB\n"), None, "an unknown unit is not guessed");
        let ours = process_rss(std::process::id()).unwrap();
        assert!(ours > 1 << 20, "this test process holds more than 1 MiB: {ours}");
    }

    #[test]
    fn disk_use_counts_allocated_blocks_like_du_and_skips_what_it_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/small"), [7u8; 64]).unwrap();
        std::fs::write(root.join("a/b/big"), vec![1u8; 100_000]).unwrap();
        std::fs::write(root.join("meta.sqlite"), vec![2u8; 50_000]).unwrap();
        // A sparse file: long, with nothing allocated.
        std::fs::File::create(root.join("sparse")).unwrap().set_len(10 << 20).unwrap();
        // A hard link is one inode: counted once.
        std::fs::hard_link(root.join("a/b/big"), root.join("a/big-again")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("link")).unwrap();

        let all = disk_use(root, &|_| false).unwrap();
        let data = disk_use(root, &|name| name.starts_with("meta.sqlite")).unwrap();
        assert_eq!(all.files, 4, "small, big (once for both names), meta, sparse: {all:?}");
        assert_eq!(data.files, 3);
        assert_eq!(all.apparent, 64 + 100_000 + 50_000 + (10 << 20));
        // Every non-empty file takes at least one block, the big ones their length
        // rounded up; the sparse one next to nothing; directories a block each.
        assert!(data.allocated >= 4096 + 100_000, "{data:?}");
        assert!(data.allocated < 1 << 20, "the sparse file's 10 MiB are not allocated: {data:?}");
        assert!(all.allocated >= data.allocated + 50_000, "{all:?} vs {data:?}");
        let du = std::process::Command::new("du").args(["-s", "--block-size=1"]).arg(root).output();
        if let Some(out) = du.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            let du_bytes: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
            assert_eq!(all.allocated, du_bytes, "du says {text}");
        }
        assert!(disk_use(&root.join("missing"), &|_| false).is_err(), "a missing root is an error");
        assert!(free_bytes(root).unwrap() > 0);
    }
}
