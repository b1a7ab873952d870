//! Files a running server re-reads when they change (the TLS certificate pair in
//! [`crate::tls`], the cluster secret in [`crate::secret`]): what tells one version
//! of such a file from the next, looked at every few seconds.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// What identifies one version of a file: modification time, size and inode (a
/// file renamed into place has a new inode even within one clock tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// The stamp of the file at `path` now (a `stat`, no read).
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        let meta = std::fs::metadata(path)?;
        Ok(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_or_a_rename_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let first = FileStamp::of(&path).unwrap();
        assert_eq!(FileStamp::of(&path).unwrap(), first, "unchanged");
        // Same length, renamed into place: a new inode even if the clock did not tick.
        let other = dir.path().join("g");
        std::fs::write(&other, "two").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(FileStamp::of(&path).unwrap(), first);
        assert!(FileStamp::of(&dir.path().join("missing")).is_err());
    }
}
