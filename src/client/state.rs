//! What the client remembers between runs, so that a killed `cairn put` or
//! `cairn get` can be picked up with `--resume`: a state file per resumable upload,
//! and the sidecar next to a download's `FILE.partial`. Both are small JSON files
//! written atomically (a temp file in the same directory, fsynced, renamed over the
//! old one), so a kill at any moment leaves the old state or the new one.
//!
//! Upload state lives in `$XDG_STATE_HOME/cairn/uploads/` (else
//! `~/.local/state/cairn/uploads/`; `CAIRN_STATE_DIR` or `--state-dir` overrides
//! both), one file per (endpoint, name, absolute path, size, mtime), named by the
//! SHA-256 of those five: the same file put to the same name again finds its upload,
//! and a file that changed since (size or mtime) does not.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::ClientError;

/// Where upload state goes when no `--state-dir` is given: `$XDG_STATE_HOME/cairn`,
/// else `$HOME/.local/state/cairn`, else `./.cairn-state` (no home at all). The
/// binary passes the environment in; the library reads none.
pub fn default_dir(xdg_state_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    match (xdg_state_home.filter(|x| Path::new(x).is_absolute()), home.filter(|h| !h.is_empty())) {
        (Some(xdg), _) => PathBuf::from(xdg).join("cairn"),
        (None, Some(home)) => PathBuf::from(home).join(".local/state/cairn"),
        (None, None) => PathBuf::from(".cairn-state"),
    }
}

/// A resumable upload in progress, as saved on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadState {
    /// The API server.
    pub endpoint: String,
    /// The object's name.
    pub name: String,
    /// The file's absolute path.
    pub path: PathBuf,
    /// Its size when the upload started.
    pub size: u64,
    /// Its modification time then, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// The upload's URL (absolute).
    pub upload_url: String,
    /// The file's SHA-256 (lowercase hex), so a resume need not hash it again.
    pub sha256: String,
}

/// Identifies a file for [`UploadState`]: what the state file is named by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadKey {
    /// The API server.
    pub endpoint: String,
    /// The object's name.
    pub name: String,
    /// The file's absolute path.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl UploadKey {
    /// The state file's path under `state_dir`.
    pub fn file(&self, state_dir: &Path) -> PathBuf {
        let mut h = sha2::Sha256::new();
        for part in [
            self.endpoint.trim_end_matches('/').as_bytes(),
            self.name.as_bytes(),
            self.path.as_os_str().as_encoded_bytes(),
            self.size.to_string().as_bytes(),
            self.mtime_ns.to_string().as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let digest = hex::encode(h.finalize());
        state_dir.join("uploads").join(format!("{}.json", &digest[..32]))
    }
}

/// Reads the state file at `path`; `None` when it is missing or unreadable (a
/// damaged state file only costs a fresh upload).
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes `value` to `path` atomically: a temp file beside it, fsynced, renamed
/// over, and the directory fsynced.
pub fn save(path: &Path, value: &impl Serialize) -> Result<(), ClientError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(ClientError::local(dir))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| ClientError::Local { path: path.to_path_buf(), source: std::io::Error::other(e) })?;
    let written = (|| {
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(ClientError::local(path))
}

/// Removes a state file; a missing one is fine.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// fsyncs a directory, so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// What `cairn get` pins next to `FILE.partial` (as `FILE.partial.json`): the
/// version being downloaded, so a `--resume` cannot mix two versions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DownloadState {
    /// The API server.
    pub endpoint: String,
    /// The object's name.
    pub name: String,
    /// The version pinned.
    pub version: u64,
    /// Its size.
    pub size: u64,
    /// Its SHA-256 (lowercase hex), from the server's ETag.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> UploadKey {
        UploadKey {
            endpoint: "http://127.0.0.1:12345".into(),
            name: "a/b".into(),
            path: "/tmp/f".into(),
            size: 10,
            mtime_ns: 5,
        }
    }

    #[test]
    fn the_state_file_name_changes_with_each_part_of_the_key() {
        let dir = Path::new("/s");
        let base = key().file(dir);
        assert!(base.starts_with("/s/uploads"));
        assert_eq!(key().file(dir), base, "stable");
        let mut k = key();
        k.endpoint.push('/');
        assert_eq!(k.file(dir), base, "a trailing slash is the same server");
        for change in [
            |k: &mut UploadKey| k.name.push('x'),
            |k: &mut UploadKey| k.path.push("x"),
            |k: &mut UploadKey| k.size += 1,
            |k: &mut UploadKey| k.mtime_ns += 1,
        ] {
            let mut k = key();
            change(&mut k);
            assert_ne!(k.file(dir), base);
        }
    }

    #[test]
    fn default_dir_follows_xdg_then_home() {
        assert_eq!(default_dir(Some("/x".into()), Some("/h".into())), PathBuf::from("/x/cairn"));
        assert_eq!(default_dir(Some("rel".into()), Some("/h".into())), PathBuf::from("/h/.local/state/cairn"));
        assert_eq!(default_dir(None, Some("/h".into())), PathBuf::from("/h/.local/state/cairn"));
        assert_eq!(default_dir(None, None), PathBuf::from(".cairn-state"));
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads").join("s.json");
        let state = DownloadState { endpoint: "e".into(), name: "n".into(), version: 3, size: 4, sha256: "ab".into() };
        save(&path, &state).unwrap();
        assert_eq!(load::<DownloadState>(&path), Some(state));
        assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 1);
        std::fs::write(&path, b"{broken").unwrap();
        assert_eq!(load::<DownloadState>(&path), None);
    }
}
