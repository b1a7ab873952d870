//! The `cairn-bench suite` command line ([`SuiteArgs`]) and the suite it describes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::report::redact_url;

use crate::suite::{default_crash_duration, SuiteConfig, DEFAULT_BASE_PORT, DEFAULT_BROKER};

/// Run the standard matrix of `cairn-bench load` runs against clusters started here
/// (`cairn dev` in this process, and six `cairn data` + two `cairn api` processes when
/// RabbitMQ answers), measure the machine's ceilings and write a Markdown report.
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(version)]
pub struct SuiteArgs {
    /// Where the report goes.
    #[arg(long, default_value = "BENCH.md")]
    pub out: PathBuf,
    /// ~1 s per cell instead of ~5 s, 256 MiB ceiling measurements, no 1 GiB cells.
    #[arg(long)]
    pub quick: bool,
    /// Directory for the clusters' files and the disk measurements [default: the system temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// RabbitMQ for the multi-process layout (skipped when it does not answer).
    #[arg(long, default_value = DEFAULT_BROKER)]
    pub broker: String,
    /// First port tried for the multi-process layout (a developer's `cairn dev` usually has 12345).
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub port: u16,
    /// The `cairn` binary the multi-process layout spawns [default: `cairn` beside this binary, as `cargo build` puts it].
    #[arg(long)]
    pub cairn: Option<PathBuf>,
    /// Seconds of the crash run (`kill -9` data servers under small PUTs, then read back every acknowledged object); 0 skips it [default: 120, 20 with --quick].
    #[arg(long)]
    pub crash_seconds: Option<u64>,
    /// Only the ceilings and the small-shard measurements: no matrix of cells, neither layout started for it.
    #[arg(long)]
    pub skip_matrix: bool,
    /// 64-byte objects filled for the disk-per-object measurement [default: 88000, 2000 with --quick]; 0 skips it.
    #[arg(long)]
    pub space_objects: Option<u64>,
    /// 1-8 KiB objects filled for the memory and restart measurement [default: 1000000, 20000 with --quick]; 0 skips it.
    #[arg(long)]
    pub scale_objects: Option<u64>,
}

impl SuiteArgs {
    /// The suite these flags describe. `cairn_exe` is the binary spawned for the
    /// multi-process layout; `temp_dir` is used when `--dir` is not given.
    pub fn config(&self, cairn_exe: PathBuf, temp_dir: PathBuf) -> SuiteConfig {
        let mut config = SuiteConfig::standard(self.quick, self.dir.clone().unwrap_or(temp_dir));
        config.cairn_exe = Some(cairn_exe);
        config.broker_url = self.broker.clone();
        config.base_port = self.port;
        config.crash_duration = self.crash_seconds.map_or(default_crash_duration(self.quick), Duration::from_secs);
        config.command = self.command_line();
        if self.skip_matrix {
            config.cells.clear();
        }
        if let Some(small) = &mut config.small_shards {
            small.space_objects = self.space_objects.unwrap_or(small.space_objects);
            small.scale_objects = self.scale_objects.unwrap_or(small.scale_objects);
        }
        config
    }

    /// The shell command that regenerates the report with these flags.
    pub fn command_line(&self) -> String {
        let mut line =
            format!("cargo build --release && target/release/cairn-bench suite --out {}", self.out.display());
        if self.quick {
            line.push_str(" --quick");
        }
        if let Some(dir) = &self.dir {
            line.push_str(&format!(" --dir {}", dir.display()));
        }
        if self.broker != DEFAULT_BROKER {
            line.push_str(&format!(" --broker {}", redact_url(&self.broker)));
        }
        if self.port != DEFAULT_BASE_PORT {
            line.push_str(&format!(" --port {}", self.port));
        }
        if let Some(cairn) = &self.cairn {
            line.push_str(&format!(" --cairn {}", cairn.display()));
        }
        if let Some(seconds) = self.crash_seconds {
            line.push_str(&format!(" --crash-seconds {seconds}"));
        }
        if self.skip_matrix {
            line.push_str(" --skip-matrix");
        }
        if let Some(n) = self.space_objects {
            line.push_str(&format!(" --space-objects {n}"));
        }
        if let Some(n) = self.scale_objects {
            line.push_str(&format!(" --scale-objects {n}"));
        }
        line
    }
}

/// The `cairn` binary beside `exe` (`target/release/cairn` for
/// `target/release/cairn-bench`, and for a test binary in
/// `target/debug/deps/` the `target/debug/cairn` that `cargo test` builds for the
/// workspace), if it is there.
pub fn cairn_beside(exe: &Path) -> Option<PathBuf> {
    let name = format!("cairn{}", std::env::consts::EXE_SUFFIX);
    let dir = exe.parent()?;
    [dir.join(&name), dir.parent()?.join(&name)].into_iter().find(|p| p.is_file())
}

/// The `cairn` binary a benchmark runs: `--cairn PATH` when given (it must be a
/// file), else the one [`cairn_beside`] this binary.
pub fn cairn_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    match given {
        Some(path) if path.is_file() => Ok(path.to_path_buf()),
        Some(path) => anyhow::bail!("--cairn {}: no such file", path.display()),
        None => {
            let exe = std::env::current_exe().context("finding this binary's directory")?;
            cairn_beside(&exe).with_context(|| {
                format!(
                    "no `cairn` binary beside {}: build the workspace (cargo build --release) or give --cairn PATH",
                    exe.display()
                )
            })
        }
    }
}
