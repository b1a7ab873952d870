//! `cairn get NAME [FILE]`: a download that is verified before anyone sees it.
//!
//! The bytes stream into `FILE.partial` while being hashed; only when their SHA-256
//! equals the server's ETag is the partial file fsynced and renamed to `FILE` (then
//! the directory fsynced), so `FILE` is either absent, the old file, or the whole
//! verified object. A mismatch removes the partial file and exits 4.
//!
//! The first answer's `x-cairn-version` pins the version: every later request asks
//! for `?version=N`, so a resume cannot splice two versions together. A broken
//! connection (or a timeout, or a 5xx) is retried with `Range: bytes=<have>-`,
//! hashing on from where it stopped; a 200 to a range request starts over. The pin
//! is written atomically to `FILE.partial.json` as soon as it is known, so
//! `--resume` after a killed client re-hashes what `FILE.partial` holds and asks for
//! the rest of the same version. A failure before the first answer, or a pinned
//! version that is gone (404), leaves no partial file behind. To stdout (`FILE` absent or `-`) the bytes are
//! written as they come (a resume still works inside the run); a mismatch then
//! still exits 4, but what was written cannot be taken back.

use std::path::{Path, PathBuf};

use sha2::Digest;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::state::{self, DownloadState};
use super::{
    hint, human_bytes, print_json, progress_bar, reason, refused_or_unavailable, Backoff, ClientError, Failure, Server,
};
use crate::api::VERSION_HEADER;
use crate::content::ContentHash;
use crate::report::error_chain;

/// `cairn get NAME [FILE]`.
#[derive(Clone, Debug, clap::Args)]
pub struct GetArgs {
    /// The object's name.
    pub name: String,
    /// Where to write it (absent or `-`: stdout).
    pub file: Option<PathBuf>,
    /// That version instead of the current one.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub version: Option<u64>,
    /// Continue the FILE.partial a killed `cairn get` left (its version is pinned in
    /// FILE.partial.json).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub options: super::ClientOptions,
}

/// Where the bytes go.
enum Sink {
    Stdout(tokio::io::Stdout),
    File { file: tokio::io::BufWriter<tokio::fs::File>, partial: PathBuf, sidecar: PathBuf, target: PathBuf },
}

impl Sink {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match self {
            Sink::Stdout(out) => out.write_all(bytes).await.map_err(ClientError::local(Path::new("stdout"))),
            Sink::File { file, partial, .. } => file.write_all(bytes).await.map_err(ClientError::local(&*partial)),
        }
    }

    /// Throws away what was written (a 200 where a 206 was asked for).
    async fn restart(&mut self) -> Result<(), ClientError> {
        match self {
            Sink::Stdout(_) => Err(ClientError::BadAnswer {
                what: "stdout".into(),
                detail: "the server ignored the range of a resumed download to stdout".into(),
            }),
            Sink::File { file, partial, .. } => {
                let local = ClientError::local(&*partial);
                async {
                    file.flush().await?;
                    file.get_mut().set_len(0).await?;
                    file.get_mut().seek(std::io::SeekFrom::Start(0)).await.map(drop)
                }
                .await
                .map_err(local)
            }
        }
    }
}

/// Removes a partial file that no sidecar pins yet (a failure before the first
/// answer leaves nothing behind: there is nothing to resume).
struct Unpinned(Option<PathBuf>);

impl Drop for Unpinned {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The partial file and its sidecar for `target`.
fn partial_paths(target: &Path) -> (PathBuf, PathBuf) {
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let mut sidecar = partial.clone();
    sidecar.push(".json");
    (PathBuf::from(partial), PathBuf::from(sidecar))
}

/// Downloads, verifies and places one object.
pub async fn run(args: GetArgs) -> Result<(), ClientError> {
    super::check_name(&args.name)?;
    let server = Server::new(&args.options)?;
    let name = args.name.clone();
    let target = args.file.clone().filter(|f| f.as_os_str() != "-");
    let mut hasher = sha2::Sha256::new();
    let mut have = 0u64;
    let mut pinned: Option<DownloadState> = None;
    let mut unpinned = Unpinned(None);
    let mut sink = match &target {
        None => {
            if args.resume {
                hint(&args.options, "--resume needs a FILE (a download to stdout leaves nothing to resume)");
            }
            Sink::Stdout(tokio::io::stdout())
        }
        Some(target) => {
            let (partial, sidecar) = partial_paths(target);
            let saved = state::load::<DownloadState>(&sidecar).filter(|s| {
                s.name == name
                    && s.endpoint.trim_end_matches('/') == server.endpoint.trim_end_matches('/')
                    && args.version.is_none_or(|v| v == s.version)
            });
            let exists = tokio::fs::try_exists(&partial).await.unwrap_or(false);
            match (args.resume, saved, exists) {
                (true, Some(saved), true) => {
                    let (len, digest) = rehash(&partial, &hasher).await?;
                    if len <= saved.size {
                        hint(
                            &args.options,
                            &format!("resuming {name} version {} at byte {len} of {}", saved.version, saved.size),
                        );
                        have = len;
                        hasher = digest;
                        pinned = Some(saved);
                    }
                }
                (true, _, _) => hint(&args.options, &format!("no download of {name} to resume; starting afresh")),
                (false, _, true) => hint(
                    &args.options,
                    &format!("{} exists; starting afresh (--resume continues it)", partial.display()),
                ),
                (false, _, false) => {}
            }
            if pinned.is_none() {
                state::remove(&sidecar);
                unpinned.0 = Some(partial.clone());
            }
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&partial)
                .await
                .map_err(ClientError::local(&partial))?;
            let local = ClientError::local(&partial);
            async {
                file.set_len(have).await?;
                file.seek(std::io::SeekFrom::Start(have)).await.map(drop)
            }
            .await
            .map_err(local)?;
            Sink::File {
                file: tokio::io::BufWriter::with_capacity(1 << 20, file),
                partial,
                sidecar,
                target: target.clone(),
            }
        }
    };
    let mut bar = progress_bar(&args.options, pinned.as_ref().map_or(0, |p| p.size), have, "get");
    let mut backoff = Backoff::new(server.retries);
    loop {
        if let Some(p) = &pinned {
            if have >= p.size {
                break;
            }
        }
        let url = server.object_url(&name, pinned.as_ref().map(|p| p.version).or(args.version));
        let mut req = server.http.get(&url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let failure = match Failure::of(req.send().await).await {
            Err(failure) => failure,
            Ok(resp) => {
                let status = resp.status();
                if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::PARTIAL_CONTENT {
                    if let (reqwest::StatusCode::NOT_FOUND, Sink::File { partial, sidecar, .. }) = (status, &sink) {
                        // The pinned version is gone (pruned): nothing left to resume.
                        state::remove(sidecar);
                        unpinned.0 = Some(partial.clone());
                    }
                    return Err(refused_or_unavailable(&server, &name, status, reason(resp).await));
                }
                let answer = describe_answer(&name, &resp)?;
                if status == reqwest::StatusCode::OK && have > 0 {
                    sink.restart().await?;
                    hasher = sha2::Sha256::new();
                    have = 0;
                    bar.set_position(0);
                }
                if status == reqwest::StatusCode::PARTIAL_CONTENT && answer.start != have {
                    return Err(ClientError::BadAnswer {
                        what: name,
                        detail: format!("asked for bytes from {have}, got a range from {}", answer.start),
                    });
                }
                match &pinned {
                    Some(p) if p.version != answer.version || p.sha256 != answer.sha256 || p.size != answer.size => {
                        return Err(ClientError::BadAnswer {
                            what: name,
                            detail: format!(
                                "asked for version {}, got version {} ({} bytes, {})",
                                p.version, answer.version, answer.size, answer.sha256
                            ),
                        });
                    }
                    Some(_) => {}
                    None => {
                        let pin = DownloadState {
                            endpoint: server.endpoint.clone(),
                            name: name.clone(),
                            version: answer.version,
                            size: answer.size,
                            sha256: answer.sha256.clone(),
                        };
                        if let Sink::File { sidecar, .. } = &sink {
                            state::save(sidecar, &pin)?;
                            unpinned.0 = None;
                        }
                        bar = progress_bar(&args.options, pin.size, have, "get");
                        pinned = Some(pin);
                    }
                }
                match stream_body(resp, &mut sink, &mut hasher, &mut have, &mut backoff, &bar).await? {
                    None => continue,
                    Some(failure) => failure,
                }
            }
        };
        backoff.wait(&server, &name, failure).await?;
    }
    bar.finish_and_clear();
    let pinned = pinned.expect("the loop ends once a version is pinned");
    let actual = hex::encode(hasher.finalize());
    match sink {
        Sink::Stdout(mut out) => {
            out.flush().await.map_err(ClientError::local(Path::new("stdout")))?;
            if actual != pinned.sha256 {
                return Err(mismatch(&name, &pinned, &actual));
            }
        }
        Sink::File { mut file, partial, sidecar, target } => {
            let local = ClientError::local(&partial);
            async {
                file.flush().await?;
                file.get_mut().sync_all().await
            }
            .await
            .map_err(local)?;
            drop(file);
            if actual != pinned.sha256 {
                let _ = tokio::fs::remove_file(&partial).await;
                state::remove(&sidecar);
                return Err(mismatch(&name, &pinned, &actual));
            }
            tokio::fs::rename(&partial, &target).await.map_err(ClientError::local(&target))?;
            let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            state::sync_dir(dir).map_err(ClientError::local(dir))?;
            state::remove(&sidecar);
            if args.options.json {
                print_json(&serde_json::json!({
                    "name": name,
                    "version": pinned.version,
                    "size": pinned.size,
                    "hash": pinned.sha256,
                    "file": target,
                }));
            } else if !args.options.quiet {
                eprintln!(
                    "cairn: {name} version {} ({}, sha256 {}) -> {}",
                    pinned.version,
                    human_bytes(pinned.size),
                    &pinned.sha256[..16],
                    target.display()
                );
            }
        }
    }
    Ok(())
}

fn mismatch(name: &str, pinned: &DownloadState, actual: &str) -> ClientError {
    ClientError::Integrity {
        name: name.to_string(),
        detail: format!(
            "version {} received bytes hash to {actual}, the server's ETag says {}",
            pinned.version, pinned.sha256
        ),
    }
}

/// Streams a body into the sink; `None` when it ended complete, else the failure
/// that broke it (to retry from `have`).
async fn stream_body(
    mut resp: reqwest::Response,
    sink: &mut Sink,
    hasher: &mut sha2::Sha256,
    have: &mut u64,
    backoff: &mut Backoff,
    bar: &indicatif::ProgressBar,
) -> Result<Option<Failure>, ClientError> {
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                hasher.update(&bytes);
                sink.write(&bytes).await?;
                *have += bytes.len() as u64;
                bar.inc(bytes.len() as u64);
                backoff.progressed();
            }
            Ok(None) => return Ok(None),
            Err(e) => return Ok(Some(Failure { cause: error_chain(&e), wait: None })),
        }
    }
}

/// What an answer says about the object: version, size, hash, and where the bytes
/// it carries start.
struct Answer {
    version: u64,
    size: u64,
    sha256: String,
    start: u64,
}

fn describe_answer(name: &str, resp: &reqwest::Response) -> Result<Answer, ClientError> {
    let bad = |detail: &str| ClientError::BadAnswer { what: name.to_string(), detail: detail.to_string() };
    let version = header_version(resp).ok_or_else(|| bad("no x-cairn-version header"))?;
    let sha256 = etag_hash(resp).ok_or_else(|| bad("no ETag with a SHA-256"))?;
    let text = |h: reqwest::header::HeaderName| resp.headers().get(h).and_then(|v| v.to_str().ok());
    let (start, size) = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        let range = text(reqwest::header::CONTENT_RANGE).ok_or_else(|| bad("a 206 without Content-Range"))?;
        content_range(range).ok_or_else(|| bad("a malformed Content-Range"))?
    } else {
        let len = text(reqwest::header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
        (0, len.ok_or_else(|| bad("no Content-Length"))?)
    };
    Ok(Answer { version, size, sha256, start })
}

/// `x-cairn-version` as a number.
pub(crate) fn header_version(resp: &reqwest::Response) -> Option<u64> {
    resp.headers().get(VERSION_HEADER)?.to_str().ok()?.trim().parse().ok().filter(|&v| v > 0)
}

/// The SHA-256 (lowercase hex) in an `ETag: "<hex>"`.
pub(crate) fn etag_hash(resp: &reqwest::Response) -> Option<String> {
    let tag = resp.headers().get(reqwest::header::ETAG)?.to_str().ok()?.trim();
    let hex = tag.strip_prefix('"')?.strip_suffix('"')?;
    hex.parse::<ContentHash>().ok().map(|h| h.to_hex())
}

/// `bytes START-END/TOTAL` as (START, TOTAL).
fn content_range(text: &str) -> Option<(u64, u64)> {
    let rest = text.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total) = (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?, total.parse::<u64>().ok()?);
    (start <= end && end < total).then_some((start, total))
}

/// The length of `path` and a hasher that has seen its bytes (a resume continues
/// from both). Runs off the async runtime.
async fn rehash(path: &Path, hasher: &sha2::Sha256) -> Result<(u64, sha2::Sha256), ClientError> {
    let path = path.to_path_buf();
    let mut hasher = hasher.clone();
    let local = ClientError::local(&path);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok((len, hasher));
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_read_strictly() {
        assert_eq!(content_range("bytes 10-19/20"), Some((10, 20)));
        assert_eq!(content_range("bytes 0-0/1"), Some((0, 1)));
        for bad in ["bytes 10-9/20", "bytes 10-20/20", "bytes */20", "items 0-1/2", "bytes 0-1"] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_partial_and_its_sidecar_sit_next_to_the_target() {
        let (p, s) = partial_paths(Path::new("dir/out.bin"));
        assert_eq!(p, PathBuf::from("dir/out.bin.partial"));
        assert_eq!(s, PathBuf::from("dir/out.bin.partial.json"));
    }
}
