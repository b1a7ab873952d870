//! The `cairn bench` command line: one run against an endpoint ([`BenchArgs`]), or
//! with `--suite` the standard matrix against clusters the bench starts itself
//! ([`SuiteArgs`]).
//!
//! Both share one flag namespace, so [`BenchCommand`] implements clap's traits by
//! hand: `--endpoint` is required unless `--suite` is given, and the matches become
//! whichever of the two the command line asked for.

use std::path::PathBuf;

use clap::{ArgMatches, Args, FromArgMatches};

use super::suite::{SuiteConfig, DEFAULT_BASE_PORT, DEFAULT_BROKER};
use super::BenchArgs;

/// What `cairn bench` was asked to do.
#[derive(Clone, Debug, PartialEq)]
pub enum BenchCommand {
    /// One run against `--endpoint`.
    Run(BenchArgs),
    /// The standard matrix (`--suite`).
    Suite(SuiteArgs),
}

/// The flags of `cairn bench --suite`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct SuiteArgs {
    /// Run the standard matrix against clusters started here (cairn dev in this process, and six `cairn data` + two `cairn api` processes when RabbitMQ answers), measure the machine's ceilings and write a Markdown report. The flags of a single run are ignored.
    #[arg(long)]
    pub suite: bool,
    /// With --suite: where the report goes.
    #[arg(long, default_value = "BENCH.md")]
    pub out: PathBuf,
    /// With --suite: ~1 s per cell instead of ~5 s, 256 MiB ceiling measurements, no 1 GiB cells.
    #[arg(long)]
    pub quick: bool,
    /// With --suite: directory for the clusters' files and the disk measurements [default: the system temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// With --suite: RabbitMQ for the multi-process layout (skipped when it does not answer).
    #[arg(long, default_value = DEFAULT_BROKER)]
    pub broker: String,
    /// With --suite: first port tried for the multi-process layout (a developer's `cairn dev` usually has 12345).
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub port: u16,
}

impl SuiteArgs {
    /// The suite these flags describe. `cairn_exe` is the binary spawned for the
    /// multi-process layout; `temp_dir` is used when `--dir` is not given.
    pub fn config(&self, cairn_exe: PathBuf, temp_dir: PathBuf) -> SuiteConfig {
        let mut config = SuiteConfig::standard(self.quick, self.dir.clone().unwrap_or(temp_dir));
        config.cairn_exe = Some(cairn_exe);
        config.broker_url = self.broker.clone();
        config.base_port = self.port;
        config.command = self.command_line();
        config
    }

    /// The shell command that regenerates the report with these flags.
    pub fn command_line(&self) -> String {
        let mut line =
            format!("cargo build --release && target/release/cairn bench --suite --out {}", self.out.display());
        if self.quick {
            line.push_str(" --quick");
        }
        if let Some(dir) = &self.dir {
            line.push_str(&format!(" --dir {}", dir.display()));
        }
        if self.broker != DEFAULT_BROKER {
            line.push_str(&format!(" --broker {}", redact_password(&self.broker)));
        }
        if self.port != DEFAULT_BASE_PORT {
            line.push_str(&format!(" --port {}", self.port));
        }
        line
    }
}

/// `amqp://user:pass@host` without the password (`amqp://user:…@host`), so that a
/// report never carries one.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let Some(at) = url.rfind('@').filter(|&at| at > scheme_end) else { return url.to_string() };
    match url[scheme_end..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:…{}", &url[..scheme_end], &url[at..]),
        None => url.to_string(),
    }
}

impl FromArgMatches for BenchCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        if matches.get_flag("suite") {
            Ok(BenchCommand::Suite(SuiteArgs::from_arg_matches(matches)?))
        } else {
            Ok(BenchCommand::Run(BenchArgs::from_arg_matches(matches)?))
        }
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = BenchCommand::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for BenchCommand {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = SuiteArgs::augment_args(BenchArgs::augment_args(cmd));
        cmd.mut_arg("endpoint", |a| a.required(false).required_unless_present("suite"))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        BenchCommand::augment_args(cmd)
    }
}
