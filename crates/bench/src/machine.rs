//! What machine a suite ran on, read from `/proc` (Linux); anything that cannot be
//! read is left out rather than guessed. The parsers are pure functions of the
//! files' text, so that tests reach them without the files.
//!
//! Besides the hardware, it records how busy the machine was: the load average
//! before and after, and the CPU time used during the suite by this process and its
//! children versus by everything else (other people's compilers, say), since a
//! benchmark on a shared machine is only as good as what else ran beside it.
//!
//! Why not `procfs` or `sysinfo`: the parsing here is about a hundred lines with no
//! dependency. `procfs` 0.18 (the lightest, sharing our `rustix` 1) would add
//! `procfs` and `procfs-core` yet still leave the kernel release (it keeps only
//! major.minor.patch) and the load average (floats, not the text `/proc` prints) to
//! us; `sysinfo` is larger still. Neither is lighter than what is here.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The machine a suite ran on.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// `model name` of the first processor in `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Logical processors.
    pub cores: usize,
    /// `MemTotal` of `/proc/meminfo`, in bytes.
    pub memory_bytes: Option<u64>,
    /// The kernel release, as `uname -r` prints it.
    pub kernel: Option<String>,
    /// The file system holding the suite's files.
    pub filesystem: Option<Mount>,
    /// When the suite started, RFC 3339 in UTC.
    pub date: String,
    /// `/proc/loadavg`'s three averages when the suite started.
    pub load_before: Option<String>,
    /// The same when it ended.
    pub load_after: Option<String>,
    /// CPU time used while the suite ran; `None` if `/proc` could not tell.
    pub cpu: Option<CpuUse>,
}

/// One line of `/proc/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted (`/dev/vda`, `tmpfs`).
    pub device: String,
    /// Where.
    pub mount_point: PathBuf,
    /// The file system type (`ext4`, `tmpfs`).
    pub fstype: String,
}

/// CPU time spent while the suite ran, in clock ticks (`USER_HZ`) as `/proc` counts
/// them; only ratios of these are meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuUse {
    /// Ticks every CPU together could have run.
    pub total: u64,
    /// Ticks some CPU was busy (not idle, not waiting for I/O).
    pub busy: u64,
    /// Ticks this process and its reaped children ran.
    pub ours: u64,
}

impl CpuUse {
    /// The share of the machine's CPU time that went to other processes, 0–1.
    pub fn others_share(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(self.ours) as f64 / self.total as f64
    }

    /// The share of the machine's CPU time that went to this process and its
    /// children, 0–1.
    pub fn our_share(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.ours.min(self.busy) as f64 / self.total as f64
    }
}

/// The CPU counters at one moment, to subtract from a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// From `/proc/stat`'s `cpu` line: (busy, total).
    machine: (u64, u64),
    /// From `/proc/self/stat`: utime + stime + cutime + cstime.
    ours: u64,
}

impl CpuSnapshot {
    /// Reads the counters now; `None` where `/proc` is missing or unreadable.
    pub fn now() -> Option<CpuSnapshot> {
        let machine = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let ours = parse_self_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        Some(CpuSnapshot { machine, ours })
    }

    /// What was used from `self` until `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUse {
        CpuUse {
            busy: later.machine.0.saturating_sub(self.machine.0),
            total: later.machine.1.saturating_sub(self.machine.1),
            ours: later.ours.saturating_sub(self.ours),
        }
    }
}

impl Machine {
    /// Describes this machine, with `dir` the directory the suite works in.
    /// `cpu` and `load_after` are left for the end of the suite.
    pub fn describe(dir: &Path) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let cpuinfo = read("/proc/cpuinfo");
        let cores_listed = cpuinfo.as_deref().map_or(0, cpu_count);
        let cores =
            if cores_listed > 0 { cores_listed } else { std::thread::available_parallelism().map_or(1, usize::from) };
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        Machine {
            cpu_model: cpuinfo.as_deref().and_then(cpu_model),
            cores,
            memory_bytes: read("/proc/meminfo").as_deref().and_then(mem_total),
            // The same string `uname -r` prints, without starting a process.
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            filesystem: read("/proc/mounts").and_then(|m| mount_of(&m, &dir)),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            load_before: load_average(),
            load_after: None,
            cpu: None,
        }
    }
}

/// `/proc/loadavg`'s three averages (`0.52 0.31 0.20`).
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

/// The first `model name` in `/proc/cpuinfo`'s text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|v| !v.is_empty())
}

/// How many `processor` entries `/proc/cpuinfo`'s text lists.
pub fn cpu_count(cpuinfo: &str) -> usize {
    cpuinfo.lines().filter_map(|line| line.split_once(':')).filter(|(key, _)| key.trim() == "processor").count()
}

/// `MemTotal` of `/proc/meminfo`'s text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The mount of `/proc/mounts`'s text that holds `path` (absolute, symlinks
/// resolved): the one with the longest mount point that is a prefix of it; the
/// last such line wins, as the last mount on a point hides earlier ones.
pub fn mount_of(mounts: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, mount_point, fstype, ..] = fields[..] else { continue };
        let mount_point = PathBuf::from(unescape_mount(mount_point));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let longer = best.as_ref().is_none_or(|b| mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if longer {
            best = Some(Mount { device: unescape_mount(device), mount_point, fstype: fstype.to_string() });
        }
    }
    best
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape_mount(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (busy, total) ticks from the `cpu` line of `/proc/stat`'s text. Busy is
/// everything but `idle` and `iowait`; `guest` time is already inside `user`.
pub fn parse_proc_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let counted = &values[..values.len().min(8)];
    if counted.len() < 4 {
        return None;
    }
    let total: u64 = counted.iter().sum();
    let idle = counted[3] + counted.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// utime + stime + cutime + cstime from `/proc/self/stat`'s text.
pub fn parse_self_stat(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields are
    // counted from the last ')'. Field 3 (state) is then index 0, utime (14) index 11.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields.get(11..15)?.iter().map(|v| v.parse::<u64>().ok()).sum()
}
