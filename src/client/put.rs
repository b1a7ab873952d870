//! `cairn put FILE NAME`: one PUT for a small file, a resumable tus 1.0 upload for a
//! large one.
//!
//! Both hash the file first (a read pass: the server then refuses any body that
//! does not match, so a file changed under the client is never stored as if it
//! were whole). A file of at most `--resumable-above` goes in one `PUT` with
//! `Content-Digest`, streamed from the file; a failure before the answer sends it
//! again whole (content is deduplicated, so a PUT whose answer was lost costs one
//! extra version at most).
//!
//! A larger file is a tus upload (`POST /uploads` with `Upload-Length`,
//! `Upload-Metadata: name …,filename …` and the whole file's `Content-Digest`).
//! Its URL is saved at once in a state file ([`super::state`]); then the file goes
//! in `PATCH`es of `--chunk-size`, each with `Upload-Checksum: sha256 …` of its
//! bytes (hashed in a first read of the chunk, then streamed from the file in a
//! second: memory stays at a few buffers whatever the chunk size). After a broken
//! connection, a timeout or a 5xx the client backs off, asks the upload's offset
//! (`HEAD`) and continues from there; 409 (offset mismatch) does the same, 460
//! (checksum mismatch) sends the chunk again. A chunk that goes through resets the
//! retry budget. The last PATCH answers once the object is stored; its version is
//! then described by the server (`HEAD` + its line of `/versions/`) and its hash
//! checked against the file's. If that last answer is lost and `HEAD` shows the
//! upload complete, the current version of the name is described instead (the one
//! the upload just made, unless another writer raced it). Success removes the state
//! file; a failure leaves it for `--resume`.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use base64::Engine;
use futures_util::StreamExt;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::state::{self, UploadKey, UploadState};
use super::{
    hint, human_bytes, print_json, progress_bar, reason, refused_or_unavailable, retry_after, Backoff, ClientError,
    ClientOptions, Failure, Server, VersionInfo,
};
use crate::report::error_chain;
use crate::size::ByteSize;

/// The tus protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// tus's status for a chunk whose `Upload-Checksum` does not match.
const CHECKSUM_MISMATCH: u16 = 460;

/// `cairn put FILE NAME`.
#[derive(Clone, Debug, clap::Args)]
pub struct PutArgs {
    /// The file to store.
    pub file: PathBuf,
    /// The object's name.
    pub name: String,
    /// Files larger than this go through the resumable (tus) upload.
    #[arg(long, default_value = "8MiB")]
    pub resumable_above: ByteSize,
    /// Bytes per PATCH of a resumable upload (at least 1).
    #[arg(long, default_value = "16MiB")]
    pub chunk_size: ByteSize,
    /// Continue the upload a killed `cairn put` of the same file to the same name left.
    #[arg(long)]
    pub resume: bool,
    /// Where resumable uploads keep their state (default: $XDG_STATE_HOME/cairn,
    /// else ~/.local/state/cairn).
    #[arg(long, env = "CAIRN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// Stores the file and prints the version made.
pub async fn run(args: PutArgs, default_state_dir: PathBuf) -> Result<(), ClientError> {
    super::check_name(&args.name)?;
    let server = Server::new(&args.options)?;
    let path = tokio::fs::canonicalize(&args.file).await.map_err(ClientError::local(&args.file))?;
    let meta = tokio::fs::metadata(&path).await.map_err(ClientError::local(&path))?;
    if !meta.is_file() {
        return Err(ClientError::Local { path, source: std::io::Error::other("not a regular file") });
    }
    let size = meta.len();
    let info = if size > args.resumable_above.0 {
        let mtime_ns =
            meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i128);
        let key = UploadKey { endpoint: server.endpoint.clone(), name: args.name.clone(), path, size, mtime_ns };
        let state_dir = args.state_dir.clone().unwrap_or(default_state_dir);
        put_resumable(&server, &args, key, &state_dir).await?
    } else {
        put_whole(&server, &args, &path, size).await?
    };
    if args.options.json {
        print_json(&info);
    } else {
        println!(
            "stored {} version {} ({}, sha256 {})",
            info.name,
            info.version,
            human_bytes(info.size),
            info.hash.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `sha-256=:<base64>:` (RFC 9530).
fn content_digest(hash: &[u8; 32]) -> String {
    format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(hash))
}

/// One PUT of the whole file, streamed, sent again after a retryable failure.
async fn put_whole(server: &Server, args: &PutArgs, path: &Path, size: u64) -> Result<VersionInfo, ClientError> {
    let name = &args.name;
    let hashing = progress_bar(&args.options, size, 0, "hashing");
    let hash = hash_range(path, 0, size, &hashing).await?;
    hashing.finish_and_clear();
    let url = server.object_url(name, None);
    let bar = progress_bar(&args.options, size, 0, "put");
    let mut backoff = Backoff::new(server.retries);
    loop {
        bar.set_position(0);
        let body = file_body(path, 0, size, &bar).await?;
        let sent = server
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header("content-digest", content_digest(&hash))
            .body(body)
            .send()
            .await;
        let failure = match Failure::of(sent).await {
            Err(failure) => failure,
            Ok(resp) => {
                bar.finish_and_clear();
                return finished(server, name, resp, &hash).await;
            }
        };
        backoff.wait(server, name, failure).await?;
    }
}

/// The version a successful PUT answered with; a refused digest is an integrity
/// failure (the file changed while it was read).
async fn finished(
    server: &Server,
    name: &str,
    resp: reqwest::Response,
    hash: &[u8; 32],
) -> Result<VersionInfo, ClientError> {
    let status = resp.status();
    if status == reqwest::StatusCode::BAD_REQUEST {
        let why = reason(resp).await;
        if why.contains("digest") {
            return Err(ClientError::Integrity {
                name: name.to_string(),
                detail: format!("the server refused the bytes ({why}); did the file change while being sent?"),
            });
        }
        return Err(ClientError::Refused { what: name.to_string(), status: 400, reason: why });
    }
    let info: VersionInfo = super::list::json_answer(server, name, resp).await?;
    check_hash(name, &info, hash)?;
    Ok(info)
}

fn check_hash(name: &str, info: &VersionInfo, hash: &[u8; 32]) -> Result<(), ClientError> {
    let want = hex::encode(hash);
    if info.hash.as_deref() != Some(want.as_str()) {
        return Err(ClientError::Integrity {
            name: name.to_string(),
            detail: format!("stored version {} has hash {:?}, the file's is {want}", info.version, info.hash),
        });
    }
    Ok(())
}

/// The file's bytes `[start, start+len)` as a streamed request body, counted on `bar`.
async fn file_body(
    path: &Path,
    start: u64,
    len: u64,
    bar: &indicatif::ProgressBar,
) -> Result<reqwest::Body, ClientError> {
    let mut file = tokio::fs::File::open(path).await.map_err(ClientError::local(path))?;
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(ClientError::local(path))?;
    let bar = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10).inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            bar.inc(bytes.len() as u64);
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// SHA-256 of the file's bytes `[start, start+len)`, read off the async runtime.
async fn hash_range(path: &Path, start: u64, len: u64, bar: &indicatif::ProgressBar) -> Result<[u8; 32], ClientError> {
    let owned = path.to_path_buf();
    let bar = bar.clone();
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(&owned)?;
        file.seek(std::io::SeekFrom::Start(start))?;
        let mut file = file.take(len);
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut seen = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            seen += n as u64;
            bar.inc(n as u64);
        }
        if seen != len {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while being read"));
        }
        Ok(hasher.finalize().into())
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    hashed.map_err(ClientError::local(path))
}

/// A resumable upload, resumed from its state file with `--resume`.
async fn put_resumable(
    server: &Server,
    args: &PutArgs,
    key: UploadKey,
    state_dir: &Path,
) -> Result<VersionInfo, ClientError> {
    let name = &args.name;
    let shown = key.path.display().to_string();
    let state_path = key.file(state_dir);
    let saved = state::load::<UploadState>(&state_path)
        .filter(|s| s.name == key.name && s.path == key.path && s.size == key.size && s.mtime_ns == key.mtime_ns);
    let mut resumed = None;
    match (saved, args.resume) {
        (Some(saved), true) => match upload_offset(server, name, &saved.upload_url).await? {
            Some(offset) if offset <= saved.size => {
                hint(
                    &args.options,
                    &format!("resuming the upload of {shown} to {name} at byte {offset} of {}", saved.size),
                );
                resumed = Some((saved, offset));
            }
            _ => hint(&args.options, &format!("the saved upload of {shown} is gone from the server; starting afresh")),
        },
        (Some(_), false) => hint(
            &args.options,
            &format!("an interrupted upload of {shown} to {name} exists; starting a new one (--resume continues it)"),
        ),
        (None, true) => hint(&args.options, &format!("no saved upload of {shown} to {name}; starting a new one")),
        (None, false) => {}
    }
    let (upload, mut offset) = match resumed {
        Some(r) => r,
        None => {
            let hashing = progress_bar(&args.options, key.size, 0, "hashing");
            let hash = hash_range(&key.path, 0, key.size, &hashing).await?;
            hashing.finish_and_clear();
            let upload_url = create(server, &key, &hash).await?;
            let upload = UploadState {
                endpoint: key.endpoint.clone(),
                name: key.name.clone(),
                path: key.path.clone(),
                size: key.size,
                mtime_ns: key.mtime_ns,
                upload_url,
                sha256: hex::encode(hash),
            };
            state::save(&state_path, &upload)?;
            (upload, 0)
        }
    };
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&upload.sha256, &mut hash).map_err(|_| ClientError::Local {
        path: state_path.clone(),
        source: std::io::Error::other("the state file's sha256 is not hex"),
    })?;
    let size = upload.size;
    let chunk_size = args.chunk_size.0.max(1);
    let bar = progress_bar(&args.options, size, offset, "put");
    let mut backoff = Backoff::new(server.retries);
    let mut version: Option<u64> = None;
    while version.is_none() {
        if offset >= size {
            // Complete, but the answer carrying its version was lost.
            break;
        }
        let len = chunk_size.min(size - offset);
        let chunk_hash = hash_range(&upload.path, offset, len, &indicatif::ProgressBar::hidden()).await?;
        bar.set_position(offset);
        let body = file_body(&upload.path, offset, len, &bar).await?;
        let sent = server
            .http
            .patch(&upload.upload_url)
            .header("tus-resumable", TUS_VERSION)
            .header(reqwest::header::CONTENT_TYPE, "application/offset+octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header("upload-offset", offset)
            .header(
                "upload-checksum",
                format!("sha256 {}", base64::engine::general_purpose::STANDARD.encode(chunk_hash)),
            )
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Err(e) => Failure { cause: error_chain(&e), wait: None },
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    let next = header_u64(&resp, "upload-offset").filter(|&n| n > offset && n <= size);
                    let Some(next) = next else {
                        return Err(ClientError::BadAnswer {
                            what: name.clone(),
                            detail: format!("a PATCH at {offset} answered without a usable Upload-Offset"),
                        });
                    };
                    offset = next;
                    backoff.progressed();
                    if offset == size {
                        version = super::get::header_version(&resp);
                        break;
                    }
                    continue;
                }
                let wait = retry_after(&resp);
                let why = reason(resp).await;
                match status.as_u16() {
                    409 => Failure { cause: format!("offset {offset} refused (409): {why}"), wait: None },
                    CHECKSUM_MISMATCH => {
                        Failure { cause: format!("chunk at {offset} arrived damaged (460)"), wait: None }
                    }
                    404 | 410 => {
                        state::remove(&state_path);
                        return Err(ClientError::Refused {
                            what: name.clone(),
                            status: status.as_u16(),
                            reason: format!("the upload is gone from the server (expired or terminated): {why}"),
                        });
                    }
                    _ if status.is_server_error() => Failure { cause: format!("{status}: {why}"), wait },
                    400 if why.contains("digest") => {
                        state::remove(&state_path);
                        return Err(ClientError::Integrity {
                            name: name.clone(),
                            detail: format!("the server refused the upload ({why}); did the file change?"),
                        });
                    }
                    _ => return Err(refused_or_unavailable(server, name, status, why)),
                }
            }
        };
        backoff.wait(server, name, failure).await?;
        // Where the server stands now (HEAD, itself retried).
        match upload_offset(server, name, &upload.upload_url).await? {
            Some(now) if now <= size => {
                if now > offset {
                    backoff.progressed();
                }
                offset = now;
            }
            Some(now) => {
                return Err(ClientError::BadAnswer {
                    what: name.clone(),
                    detail: format!("the upload's offset {now} is past its length {size}"),
                })
            }
            None => {
                state::remove(&state_path);
                return Err(ClientError::Refused {
                    what: name.clone(),
                    status: 404,
                    reason: "the upload is gone from the server (expired or terminated)".into(),
                });
            }
        }
    }
    bar.finish_and_clear();
    let info = super::list::describe(server, name, version).await?;
    check_hash(name, &info, &hash)?;
    state::remove(&state_path);
    Ok(info)
}

/// `POST /uploads`: a new upload of the file, its URL (absolute).
async fn create(server: &Server, key: &UploadKey, hash: &[u8; 32]) -> Result<String, ClientError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let filename = key.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let metadata = format!("name {},filename {}", b64(&key.name), b64(&filename));
    let url = server.url("/uploads");
    let name = &key.name;
    let resp = server
        .send(name, true, || {
            server
                .http
                .post(&url)
                .header("tus-resumable", TUS_VERSION)
                .header("upload-length", key.size)
                .header("upload-metadata", &metadata)
                .header("content-digest", content_digest(hash))
                .header(reqwest::header::CONTENT_LENGTH, 0)
        })
        .await?;
    let resp = super::list::success(server, name, resp).await?;
    let location =
        resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            ClientError::BadAnswer { what: name.clone(), detail: "a new upload without Location".into() }
        })?;
    let joined = server
        .base
        .join(location)
        .map_err(|e| ClientError::BadAnswer { what: name.clone(), detail: format!("Location {location:?}: {e}") })?;
    Ok(joined.to_string())
}

/// `HEAD` of an upload: its offset, or `None` when it is gone (404, 410, 403).
async fn upload_offset(server: &Server, name: &str, url: &str) -> Result<Option<u64>, ClientError> {
    let resp = server.send(name, true, || server.http.head(url).header("tus-resumable", TUS_VERSION)).await?;
    match resp.status().as_u16() {
        200 | 204 => header_u64(&resp, "upload-offset").map(Some).ok_or_else(|| ClientError::BadAnswer {
            what: name.to_string(),
            detail: "an upload's HEAD without Upload-Offset".into(),
        }),
        403 | 404 | 410 => Ok(None),
        _ => {
            let status = resp.status();
            Err(refused_or_unavailable(server, name, status, reason(resp).await))
        }
    }
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_digest_is_rfc_9530() {
        let hash: [u8; 32] = sha2::Sha256::digest(b"").into();
        assert_eq!(content_digest(&hash), "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
    }
}
