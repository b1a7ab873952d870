//! The `cairn` command-line client: `put`, `get`, `ls`, `rm`, `versions` and `stat`,
//! subcommands of the same binary that talk to an API server over its native HTTP
//! interface ([`crate::api`]) and, for large puts, its tus 1.0 endpoints
//! (`/uploads`). It sits beside [`crate::admin`] at the top of the house: it uses
//! nothing of the server but the names of headers and the shape of its JSON.
//!
//! Rooms: [`put`] (one PUT, or a resumable tus upload with a state file in
//! [`state`]), [`get`] (a verified download to `FILE.partial`, renamed into place),
//! [`list`] (`ls`, `versions`, `stat`, `rm`), and this file: the flags every
//! subcommand shares, the one error type and its exit codes, retries with backoff,
//! and progress bars.
//!
//! Choices: every request that can be retried is retried on a broken connection, a
//! timeout or a 5xx (503's `Retry-After` honoured, capped), with exponential
//! backoff from 200 ms doubling to 5 s, and at most `--retries` attempts in a row
//! that make no progress (a chunk that goes through resets the count). A `DELETE`
//! is retried only when the request never reached the server (a connect error) or
//! the server said 503, since a second tombstone attempt after a lost answer would
//! report a misleading 404. The client sends no `Accept-Encoding` (reqwest is built
//! without its compression features), so the server never compresses what `get`
//! hashes. Hashing runs inline on the async runtime in 64 KiB steps (microseconds
//! each): a client process has nothing else to keep responsive.

pub mod get;
pub mod list;
pub mod put;
pub mod state;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::api::names::encode_path;
use crate::report::error_chain;

/// The exit codes, as `--help` and the README list them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error (local file, malformed answer)
  2  usage error (a bad flag, or a name no server accepts)
  3  not found (no such object or version, or deleted)
  4  integrity: the bytes do not match their SHA-256
  5  cannot reach the server, or it stayed unavailable after --retries attempts
  6  refused by the server (a 4xx other than 404)";

/// Flags shared by every client subcommand.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientOptions {
    /// API server to talk to.
    #[arg(long, env = "CAIRN_ENDPOINT", default_value = "http://127.0.0.1:12345")]
    pub endpoint: String,
    /// Print JSON for scripts instead of a human summary or table.
    #[arg(long)]
    pub json: bool,
    /// Draw progress bars even when stderr is not a terminal or the transfer is small.
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,
    /// No progress bars and no hints on stderr (errors are still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Give up after this many attempts in a row that make no progress (broken
    /// connections, timeouts, 5xx answers); backoff doubles from 200 ms to 5 s.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub retries: u32,
    /// Give up on a connection that sends or receives nothing for this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The access key the requests carry (README, "Keys").
    #[command(flatten)]
    pub credentials: crate::api::keys::Credentials,
}

/// A client subcommand (top-level subcommands of the `cairn` binary).
#[derive(Clone, Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Store FILE as a new version of NAME; large files go through the resumable
    /// (tus) upload and resume by themselves after a broken connection.
    #[command(after_help = EXIT_CODES)]
    Put(put::PutArgs),
    /// Fetch NAME into FILE (or stdout), verifying its SHA-256; resumes a broken
    /// download with a range.
    #[command(after_help = EXIT_CODES)]
    Get(get::GetArgs),
    /// List the current objects whose names start with PREFIX (every page).
    #[command(after_help = EXIT_CODES)]
    Ls(list::LsArgs),
    /// Delete NAME (adds a tombstone version; old versions stay readable).
    #[command(after_help = EXIT_CODES)]
    Rm(list::NameArgs),
    /// Every version of NAME, oldest first.
    #[command(after_help = EXIT_CODES)]
    Versions(list::NameArgs),
    /// The current version of NAME (or --version N): size, hash, created.
    #[command(after_help = EXIT_CODES)]
    Stat(list::StatArgs),
}

/// Why a client command failed; each variant has its exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The object (or that version of it) does not exist or is deleted.
    #[error("{name}: not found")]
    NotFound {
        /// The object's name.
        name: String,
    },
    /// The bytes do not hash to what they should.
    #[error("{name}: integrity check failed: {detail}")]
    Integrity {
        /// The object's name.
        name: String,
        /// What did not match.
        detail: String,
    },
    /// The name is one no server accepts (checked before sending: a URL parser
    /// would silently resolve a `..` segment into another name).
    #[error("{name:?}: {source}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it is refused.
        source: crate::api::names::BadName,
    },
    /// The server could not be reached, or stayed unavailable, within the retries.
    #[error("{what}: cannot reach {endpoint} after {attempts} attempt(s): {cause}")]
    Unreachable {
        /// What was being done (usually the object's name).
        what: String,
        /// The API server.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        cause: String,
    },
    /// The server refused the request (a 4xx other than 404).
    #[error("{what}: refused by the server ({status}): {reason}")]
    Refused {
        /// What was being done.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's reason.
        reason: String,
    },
    /// The server answered something the client cannot use.
    #[error("{what}: unexpected answer from the server: {detail}")]
    BadAnswer {
        /// What was being done.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The endpoint is not a usable URL, or the HTTP client could not start.
    #[error("bad endpoint {endpoint:?}: {detail}")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it is refused.
        detail: String,
    },
}

impl ClientError {
    /// The process exit code a script can rely on (see [`EXIT_CODES`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::BadName { .. } => 2,
            ClientError::NotFound { .. } => 3,
            ClientError::Integrity { .. } => 4,
            ClientError::Unreachable { .. } => 5,
            ClientError::Refused { .. } => 6,
            ClientError::BadAnswer { .. } | ClientError::Local { .. } | ClientError::BadEndpoint { .. } => 1,
        }
    }

    pub(crate) fn local(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ClientError + use<> {
        let path = path.to_path_buf();
        move |source| ClientError::Local { path, source }
    }
}

/// Runs one client command; the error carries the exit code. `state_dir` is where
/// resumable uploads keep their state (the binary resolves it: see
/// [`state::default_dir`]).
pub async fn run(command: ClientCommand, state_dir: PathBuf) -> Result<(), ClientError> {
    match command {
        ClientCommand::Put(args) => put::run(args, state_dir).await,
        ClientCommand::Get(args) => get::run(args).await,
        ClientCommand::Ls(args) => list::ls(args).await,
        ClientCommand::Rm(args) => list::rm(args).await,
        ClientCommand::Versions(args) => list::versions(args).await,
        ClientCommand::Stat(args) => list::stat(args).await,
    }
}

/// An API server as the client sees it: the HTTP client, the base URL, and the
/// retry budget.
pub(crate) struct Server {
    pub http: reqwest::Client,
    pub base: reqwest::Url,
    pub endpoint: String,
    pub retries: u32,
}

impl Server {
    pub fn new(options: &ClientOptions) -> Result<Server, ClientError> {
        let bad = |detail: String| ClientError::BadEndpoint { endpoint: options.endpoint.clone(), detail };
        let base = reqwest::Url::parse(options.endpoint.trim_end_matches('/')).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https".into()));
        }
        let http = reqwest::Client::builder()
            .default_headers(options.credentials.headers().map_err(&bad)?)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .read_timeout(options.timeout)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Server { http, base, endpoint: options.endpoint.clone(), retries: options.retries })
    }

    /// The URL of `path` (already encoded, starting with `/`) on this server.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path_and_query)
    }

    /// `/objects/<name>` with the name percent-encoded segment-wise.
    pub fn object_url(&self, name: &str, version: Option<u64>) -> String {
        let mut url = self.url(&format!("/objects/{}", encode_path(name)));
        if let Some(v) = version {
            url.push_str(&format!("?version={v}"));
        }
        url
    }

    /// The error for giving up after `attempts` on `cause`.
    pub fn unreachable(&self, what: &str, attempts: u32, cause: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            what: what.to_string(),
            endpoint: self.endpoint.clone(),
            attempts,
            cause: cause.to_string(),
        }
    }

    /// Sends the request `build` makes until it gets an answer that is not a 5xx,
    /// within the retry budget. `resend_after_send_error`: whether a request that
    /// may have reached the server can be sent again (false for `DELETE`).
    pub async fn send(
        &self,
        what: &str,
        resend_after_send_error: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let mut backoff = Backoff::new(self.retries);
        loop {
            let failure = match build().send().await {
                Ok(resp) if resp.status().is_server_error() => {
                    let wait = retry_after(&resp);
                    let status = resp.status();
                    let reason = reason(resp).await;
                    if status != reqwest::StatusCode::SERVICE_UNAVAILABLE && !resend_after_send_error {
                        return Err(refused_or_unavailable(self, what, status, reason));
                    }
                    Failure { cause: format!("{status}: {reason}"), wait }
                }
                Ok(resp) => return Ok(resp),
                Err(e) if resend_after_send_error || e.is_connect() => Failure { cause: error_chain(&e), wait: None },
                Err(e) => return Err(self.unreachable(what, backoff.attempts + 1, error_chain(&e))),
            };
            backoff.wait(self, what, failure).await?;
        }
    }
}

/// One failed attempt: why, and how long the server asked us to wait.
pub(crate) struct Failure {
    pub cause: String,
    pub wait: Option<Duration>,
}

impl Failure {
    /// What a sent request came to: its answer, unless the connection failed or the
    /// server answered 5xx, which are failures worth retrying (after the server's
    /// `Retry-After`, when it gave one).
    pub(crate) async fn of(sent: reqwest::Result<reqwest::Response>) -> Result<reqwest::Response, Failure> {
        match sent {
            Err(e) => Err(Failure { cause: error_chain(&e), wait: None }),
            Ok(resp) if resp.status().is_server_error() => {
                let wait = retry_after(&resp);
                let status = resp.status();
                Err(Failure { cause: format!("{status}: {}", reason(resp).await), wait })
            }
            Ok(resp) => Ok(resp),
        }
    }
}

/// Exponential backoff with a budget of attempts without progress.
pub(crate) struct Backoff {
    pub attempts: u32,
    budget: u32,
    delay: Duration,
}

/// The first pause after a failure.
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest pause between attempts (also caps a server's `Retry-After`).
const MAX_DELAY: Duration = Duration::from_secs(5);

impl Backoff {
    pub fn new(budget: u32) -> Backoff {
        Backoff { attempts: 0, budget, delay: FIRST_DELAY }
    }

    /// Progress was made: the budget starts over.
    pub fn progressed(&mut self) {
        self.attempts = 0;
        self.delay = FIRST_DELAY;
    }

    /// Counts a failed attempt and sleeps before the next, or gives up when the
    /// budget is spent.
    pub async fn wait(&mut self, server: &Server, what: &str, failure: Failure) -> Result<(), ClientError> {
        self.attempts += 1;
        if self.attempts >= self.budget {
            return Err(server.unreachable(what, self.attempts, failure.cause));
        }
        let pause = failure.wait.unwrap_or(self.delay).min(MAX_DELAY);
        self.delay = (self.delay * 2).min(MAX_DELAY);
        tokio::time::sleep(pause).await;
        Ok(())
    }
}

/// The `Retry-After` of a 503, in seconds.
pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The server's plain-text reason, on one line and bounded.
pub(crate) async fn reason(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(300).collect()
}

/// The error for a final non-success `status`.
pub(crate) fn refused_or_unavailable(
    server: &Server,
    what: &str,
    status: reqwest::StatusCode,
    reason: String,
) -> ClientError {
    if status == reqwest::StatusCode::NOT_FOUND {
        ClientError::NotFound { name: what.to_string() }
    } else if status.is_server_error() {
        server.unreachable(what, 1, format!("{status}: {reason}"))
    } else {
        ClientError::Refused { what: what.to_string(), status: status.as_u16(), reason }
    }
}

/// Refuses a name the server would refuse, before it is put in a URL.
pub(crate) fn check_name(name: &str) -> Result<(), ClientError> {
    crate::api::names::validate(name).map_err(|source| ClientError::BadName { name: name.to_string(), source })
}

/// The JSON the server describes one version with (`PUT`, `DELETE`, listings).
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// The object's name.
    pub name: String,
    /// Its version number.
    pub version: u64,
    /// Its size in bytes (0 for a tombstone).
    pub size: u64,
    /// SHA-256 in lowercase hex (none for a tombstone).
    pub hash: Option<String>,
    /// When it was created, milliseconds since the Unix epoch.
    pub created: i64,
    /// Whether it is a tombstone.
    pub deleted: bool,
}

/// Whether and how to draw a progress bar for a transfer of `len` bytes: on
/// stderr, when it is a terminal and the transfer is above [`PROGRESS_MIN`], or
/// always with `--progress`; never with `--quiet`. It starts at `start` (a resumed
/// transfer), and its rate and ETA count only what this run moves.
pub(crate) fn progress_bar(options: &ClientOptions, len: u64, start: u64, what: &str) -> ProgressBar {
    let show = !options.quiet && (options.progress || (len > PROGRESS_MIN && std::io::stderr().is_terminal()));
    if !show {
        return ProgressBar::hidden();
    }
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        // indicatif draws nothing on a non-terminal; `--progress` asked for it anyway.
        ProgressDrawTarget::term_like_with_hz(Box::new(PlainStderr), 2)
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    // The estimator learns `start` at a tick and forgets the jump at the reset.
    bar.set_position(start);
    bar.tick();
    bar.reset_eta();
    bar.set_draw_target(target);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Transfers above this size get a progress bar on a terminal.
pub const PROGRESS_MIN: u64 = 4 << 20;

/// A line-at-a-time stderr for `--progress` when stderr is not a terminal: each
/// redraw is a new line, no cursor movement.
#[derive(Debug)]
struct PlainStderr;

impl TermLike for PlainStderr {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        use std::io::Write;
        if s.trim().is_empty() {
            return Ok(());
        }
        writeln!(std::io::stderr(), "{s}")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().flush()
    }
}

/// A hint on stderr, unless `--quiet`.
pub(crate) fn hint(options: &ClientOptions, text: &str) {
    if !options.quiet {
        eprintln!("cairn: {text}");
    }
}

/// Prints `value` as JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// Bytes as people read them (`1.5 MiB`).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A millisecond Unix time as UTC `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn human_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.trim_end_matches('Z').replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_gives_up_after_the_budget_and_progress_resets_it() {
        let mut b = Backoff::new(3);
        b.attempts = 2;
        b.progressed();
        assert_eq!(b.attempts, 0);
        assert_eq!(b.delay, FIRST_DELAY);
    }

    #[test]
    fn times_and_sizes_read_as_people_write_them() {
        assert_eq!(human_time(0), "1970-01-01 00:00:00");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let nf = ClientError::NotFound { name: "a".into() };
        assert_eq!(nf.exit_code(), 3);
        let i = ClientError::Integrity { name: "a".into(), detail: String::new() };
        assert_eq!(i.exit_code(), 4);
        let r = ClientError::Refused { what: "a".into(), status: 400, reason: String::new() };
        assert_eq!(r.exit_code(), 6);
        assert!(EXIT_CODES.contains("3  not found"));
    }
}
