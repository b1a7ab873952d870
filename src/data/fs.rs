//! The file-system operations that decide what survives a crash, behind one small
//! trait, so that tests can fail any one of them or simulate power loss
//! (`src/data/crash.rs`) while the data server uses the real calls.
//!
//! Only operations that change what is on disk go through [`FileSystem`]: creating,
//! writing, syncing, renaming, linking and removing. Reads (`ShardReader`, directory
//! listings) use `std::fs` directly. The real implementation, [`RealFs`], makes
//! exactly the system calls the store made before the trait existed; the store holds
//! it as an `Arc<dyn FileSystem>`, one indirect call per block written.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The mutating file-system operations of the shard store and the shard writer.
///
/// Contract: each method is one step whose durability the caller reasons about.
/// [`sync_file`](FileSystem::sync_file) makes a file's bytes durable,
/// [`sync_dir`](FileSystem::sync_dir) makes the creations, renames and removals of
/// names inside that directory durable; nothing else is promised to survive a crash.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `path`, which must not exist yet, open for writing.
    fn create_new(&self, path: &Path) -> io::Result<File>;
    /// Writes all of `buf` at the file's current position.
    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_file(&self, file: &File) -> io::Result<()>;
    /// Renames `from` to `to`, atomically replacing `to` when it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the names inside directory `dir` durable (`fsync` of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Gives the file at `original` a second name, `link` (for keeping a replaced
    /// shard in `garbage/` while its successor atomically takes its name).
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates the directory `path`, whose parent must exist.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
}

/// The operating system's file system: the implementation the data server runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl FileSystem for RealFs {
    fn create_new(&self, path: &Path) -> io::Result<File> {
        File::options().write(true).create_new(true).open(path)
    }

    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        file.write_all(buf)
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        std::fs::hard_link(original, link)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
}
