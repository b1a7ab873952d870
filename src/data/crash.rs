//! Crash consistency of the shard store, tested the way redb's
//! `tests/crash_consistency.rs` does: a [`FileSystem`] that fails the N-th operation
//! (optionally tearing a write) and then simulates power loss, run for every N a
//! workload reaches, then the store reopened on the real file system and checked.
//!
//! The power-loss model is the pessimistic one: what was not explicitly made durable
//! is lost. A file's bytes written since its last `sync_file` are lost (the file is
//! truncated to nothing); a name created or renamed into a directory since that
//! directory's last `sync_dir` disappears (a renamed file goes back to its old name,
//! a created directory goes with everything in it). Removals are not undone: the
//! store only removes temp files, which a restart cleans anyway.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::fs::FileSystem;
use super::shardfile::BLOCK_SIZE;
use super::store::{Committed, ShardStore};
use crate::content::{ContentHash, Policy, ShardIndex};

/// A change to a directory that a crash undoes unless the directory was synced.
#[derive(Debug)]
enum Pending {
    /// `path` was created (file or directory) in `dir`.
    Created { dir: PathBuf, path: PathBuf },
    /// `from` was renamed (or linked) to `to`, in `dir`; what `to` named before is
    /// kept at `replaced`.
    Renamed { dir: PathBuf, from: PathBuf, to: PathBuf, linked: bool, replaced: Option<PathBuf> },
}

impl Pending {
    fn dir(&self) -> &Path {
        match self {
            Pending::Created { dir, .. } | Pending::Renamed { dir, .. } => dir,
        }
    }

    fn name(&self) -> &Path {
        match self {
            Pending::Created { path, .. } => path,
            Pending::Renamed { to, .. } => to,
        }
    }
}

/// Which operation fails, and how.
#[derive(Clone, Copy, Debug)]
struct Fault {
    /// Index of the failing operation (0-based, counted from when it was armed).
    at: u64,
    /// The failing write writes the first half of its buffer first.
    torn: bool,
    /// After the failure every operation fails (the process is gone), instead of
    /// the store carrying on with its error handling.
    crash: bool,
}

#[derive(Debug, Default)]
struct State {
    ops: u64,
    fault: Option<Fault>,
    fired: bool,
    crashed: bool,
    pending: Vec<Pending>,
    /// Inodes with bytes written since their last sync.
    dirty: HashSet<u64>,
}

/// What a test hook sees: the operation that just succeeded and its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    CreateDir,
    SyncDir,
    Rename,
}

type Hook = Box<dyn Fn(Op, &Path) + Send + Sync>;

/// The fault-injecting, crash-simulating [`FileSystem`] over a real directory.
pub(crate) struct CrashFs {
    root: PathBuf,
    state: Mutex<State>,
    hook: Option<Hook>,
}

impl std::fmt::Debug for CrashFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashFs").field("root", &self.root).field("state", &self.state).finish()
    }
}

enum Go {
    Ahead,
    Tear,
}

impl CrashFs {
    pub(crate) fn new(root: &Path) -> CrashFs {
        CrashFs { root: root.to_path_buf(), state: Mutex::default(), hook: None }
    }

    /// Calls `hook` after every successful create_dir, sync_dir and rename.
    pub(crate) fn with_hook(mut self, hook: impl Fn(Op, &Path) + Send + Sync + 'static) -> CrashFs {
        self.hook = Some(Box::new(hook));
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arm(&self, fault: Fault) {
        let mut s = self.state();
        s.fault = Some(Fault { at: s.ops + fault.at, ..fault });
    }

    fn fired(&self) -> bool {
        self.state().fired
    }

    fn step(&self) -> io::Result<()> {
        self.step_or_tear(false).map(|_| ())
    }

    fn step_or_tear(&self, can_tear: bool) -> io::Result<Go> {
        let mut s = self.state();
        if s.crashed {
            return Err(io::Error::other("simulated crash: the process is gone"));
        }
        let n = s.ops;
        s.ops += 1;
        match s.fault {
            Some(f) if f.at == n => {
                s.fired = true;
                s.crashed = f.crash;
                if f.torn && can_tear {
                    Ok(Go::Tear)
                } else {
                    Err(injected())
                }
            }
            _ => Ok(Go::Ahead),
        }
    }

    fn hook(&self, op: Op, path: &Path) {
        if let Some(h) = &self.hook {
            h(op, path);
        }
    }

    /// Whether `path` would survive a crash now: its data synced, and its name and
    /// every ancestor's name under the root synced into their directories.
    pub(crate) fn is_durable(&self, path: &Path) -> bool {
        let s = self.state();
        if path.metadata().is_ok_and(|m| s.dirty.contains(&m.ino())) {
            return false;
        }
        path.ancestors().take_while(|a| a.starts_with(&self.root)).all(|a| s.pending.iter().all(|p| p.name() != a))
    }

    /// Power loss: undoes everything not made durable, and fails every later call.
    pub(crate) fn crash(&self) {
        let mut s = self.state();
        s.crashed = true;
        while let Some(p) = s.pending.pop() {
            match p {
                Pending::Created { path, .. } => {
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
                Pending::Renamed { from, to, linked, replaced, .. } => {
                    if linked || from.exists() || !from.parent().is_some_and(Path::exists) {
                        let _ = std::fs::remove_file(&to);
                    } else {
                        let _ = std::fs::rename(&to, &from);
                    }
                    if let Some(old) = replaced {
                        let _ = std::fs::rename(old, &to);
                    }
                }
            }
        }
        let dirty = std::mem::take(&mut s.dirty);
        truncate_dirty(&self.root, &dirty);
    }
}

fn injected() -> io::Error {
    io::Error::other("injected fault")
}

fn truncate_dirty(dir: &Path, dirty: &HashSet<u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            truncate_dirty(&entry.path(), dirty);
        } else if dirty.contains(&meta.ino()) {
            let _ = File::options().write(true).open(entry.path()).and_then(|f| f.set_len(0));
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().expect("store paths have parents").to_path_buf()
}

impl FileSystem for CrashFs {
    fn create_new(&self, path: &Path) -> io::Result<File> {
        self.step()?;
        let file = File::options().write(true).create_new(true).open(path)?;
        let mut s = self.state();
        s.pending.push(Pending::Created { dir: parent(path), path: path.to_path_buf() });
        s.dirty.insert(file.metadata()?.ino());
        Ok(file)
    }

    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        let go = self.step_or_tear(true);
        self.state().dirty.insert(file.metadata()?.ino());
        match go? {
            Go::Ahead => file.write_all(buf),
            Go::Tear => {
                file.write_all(&buf[..buf.len() / 2])?;
                Err(injected())
            }
        }
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.step()?;
        // No real fsync: durability is what this type models.
        self.state().dirty.remove(&file.metadata()?.ino());
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        // Keep what `to` named, so that a crash before `sync_dir` can bring it back.
        let stash = self.root.join(format!("stash-{}", Uuid::new_v4()));
        let replaced = std::fs::hard_link(to, &stash).is_ok().then_some(stash);
        std::fs::rename(from, to)?;
        self.state().pending.push(Pending::Renamed {
            dir: parent(to),
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            linked: false,
            replaced,
        });
        self.hook(Op::Rename, to);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        self.state().pending.retain(|p| p.dir() != dir);
        self.hook(Op::SyncDir, dir);
        Ok(())
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        self.step()?;
        std::fs::hard_link(original, link)?;
        self.state().pending.push(Pending::Renamed {
            dir: parent(link),
            from: original.to_path_buf(),
            to: link.to_path_buf(),
            linked: true,
            replaced: None,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        std::fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        std::fs::create_dir(path)?;
        self.state().pending.push(Pending::Created { dir: parent(path), path: path.to_path_buf() });
        self.hook(Op::CreateDir, path);
        Ok(())
    }
}

/// One shard write of the crash workload.
#[derive(Clone, Debug)]
struct ShardWrite {
    hash: ContentHash,
    shard: ShardIndex,
    policy: Option<Policy>,
    data: Vec<u8>,
}

fn hash_in_dir(first: u8, second: u8, tag: u8) -> ContentHash {
    let mut b = [tag; 32];
    b[0] = first;
    b[1] = second;
    ContentHash::from_bytes(b)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// New directories (one sharing its parent with another), a multi-block shard, an
/// empty one, a replacement (another policy and length under the same name) and,
/// last, a dedup against it: the dedup must not return before the shard it found is
/// durable, even when the commit that put it there failed before its fsync.
fn workload() -> Vec<ShardWrite> {
    let a = hash_in_dir(0xab, 0xcd, 1);
    let b = hash_in_dir(0x12, 0x34, 2);
    let c = hash_in_dir(0xab, 0xce, 3);
    let p21 = Some(Policy { k: 2, m: 1 });
    vec![
        ShardWrite { hash: a, shard: 0, policy: Some(Policy { k: 1, m: 2 }), data: pattern(10, 1) },
        ShardWrite {
            hash: b,
            shard: 1,
            policy: Some(Policy { k: 4, m: 2 }),
            data: pattern(2 * BLOCK_SIZE as usize + 17, 2),
        },
        ShardWrite { hash: c, shard: 0, policy: None, data: Vec::new() },
        ShardWrite { hash: a, shard: 0, policy: p21, data: pattern(20, 4) },
        ShardWrite { hash: a, shard: 0, policy: p21, data: pattern(20, 4) },
    ]
}

/// Writes and commits `w` the way the HTTP handlers do (abort on any failure).
fn write_and_commit(store: &ShardStore, w: &ShardWrite) -> Result<Committed, super::store::StoreError> {
    let id = Uuid::new_v4();
    let result = (|| {
        let mut writer = store.create_temp(id, w.policy)?;
        for chunk in w.data.chunks(40_000) {
            writer.write(chunk)?;
        }
        let len = writer.finish()?;
        store.commit(id, &w.hash, w.shard, len, w.policy)
    })();
    if result.is_err() {
        let _ = store.abort(id);
    }
    result
}

fn read_whole(store: &ShardStore, hash: &ContentHash, shard: ShardIndex) -> (Option<Policy>, Vec<u8>) {
    let mut r = store.open_shard(hash, shard).unwrap_or_else(|e| panic!("{hash}.{shard} does not open: {e}"));
    let mut out = Vec::new();
    r.read_range(0, u64::MAX, |b| {
        out.extend_from_slice(&b);
        true
    })
    .unwrap_or_else(|e| panic!("{hash}.{shard} does not verify: {e}"));
    assert_eq!(out.len() as u64, r.data_len());
    (r.policy(), out)
}

/// Runs the workload with `fault`, crashes, reopens and checks. Returns whether the
/// fault fired (false once `fault.at` is past the workload's last operation).
fn run_once(fault: Fault) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let fs = Arc::new(CrashFs::new(dir.path()));
    let store = ShardStore::open_on(&root, fs.clone()).unwrap();
    fs.arm(fault);
    let writes = workload();
    // For each name: the index of the last acknowledged write, if any.
    let mut acked: BTreeMap<(ContentHash, ShardIndex), usize> = BTreeMap::new();
    let mut failed = 0;
    for (i, w) in writes.iter().enumerate() {
        match write_and_commit(&store, w) {
            Ok(_) => {
                acked.insert((w.hash, w.shard), i);
            }
            Err(_) => failed += 1,
        }
    }
    let fired = fs.fired();
    if !fault.crash {
        assert_eq!(failed, usize::from(fired), "{fault:?}: one fault fails one write, no more");
    } else if !fired {
        assert_eq!(failed, 0, "{fault:?}");
    }
    fs.crash();
    drop(store);

    let store = ShardStore::open(&root).unwrap();
    store.clean_stale_temps(Duration::ZERO).unwrap();
    assert_eq!(std::fs::read_dir(root.join("temp")).unwrap().count(), 0, "{fault:?}: temp cleaned at open");
    let names: HashSet<(ContentHash, ShardIndex)> = writes.iter().map(|w| (w.hash, w.shard)).collect();
    for (hash, shard) in names {
        // What may be visible: the last acknowledged write or any attempted after it.
        let since = acked.get(&(hash, shard)).copied().unwrap_or(0);
        let candidates: Vec<&ShardWrite> = writes
            .iter()
            .enumerate()
            .filter(|(i, w)| *i >= since && (w.hash, w.shard) == (hash, shard))
            .map(|(_, w)| w)
            .collect();
        let listed = store.shards_of(&hash).unwrap().contains(&shard);
        if acked.contains_key(&(hash, shard)) {
            assert!(listed, "{fault:?}: acknowledged {hash}.{shard} lost");
        }
        if listed {
            let (policy, data) = read_whole(&store, &hash, shard);
            assert!(
                candidates.iter().any(|w| w.policy == policy && w.data == data),
                "{fault:?}: {hash}.{shard} holds bytes no write since the last acknowledged one sent"
            );
        }
    }
    fired
}

#[test]
fn every_acknowledged_shard_survives_a_fault_at_any_step() {
    for (torn, crash) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut at = 0;
        while run_once(Fault { at, torn, crash }) {
            at += 1;
        }
        // Open's syncs are not counted; five writes and commits are at least this many.
        assert!(at > 40, "the workload performed only {at} operations");
    }
}

#[test]
fn no_fault_then_power_loss_keeps_everything() {
    // Past the end: the fault never fires, yet the simulated power loss still
    // undoes anything not synced, so this checks the store's own fsync ordering.
    assert!(!run_once(Fault { at: u64::MAX / 2, torn: false, crash: false }));
}

#[test]
fn concurrent_commits_into_a_new_directory_each_wait_for_its_fsync() {
    // Thread A creates the fan-out directory and is held right there, before
    // syncing its parents; thread B commits into the now existing directory. B
    // must not return before the directory's entry is durable.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (created_tx, created_rx) = std::sync::mpsc::channel::<()>();
    let hold = Mutex::new(Some((hold_rx, created_tx)));
    let leaf = root.join("objects").join("ab").join("cd");
    let hook_leaf = leaf.clone();
    let fs = Arc::new(CrashFs::new(dir.path()).with_hook(move |op, path| {
        if op == Op::CreateDir && path == hook_leaf {
            let taken = hold.lock().unwrap().take();
            if let Some((rx, created)) = taken {
                created.send(()).unwrap();
                rx.recv_timeout(Duration::from_secs(10)).unwrap();
            }
        }
    }));
    let store = ShardStore::open_on(&root, fs.clone()).unwrap();
    let a = ShardWrite { hash: hash_in_dir(0xab, 0xcd, 1), shard: 0, policy: None, data: pattern(5, 1) };
    let b = ShardWrite { hash: hash_in_dir(0xab, 0xcd, 2), shard: 0, policy: None, data: pattern(7, 2) };
    let (store_a, fs_a, a_path) = (store.clone(), fs.clone(), store.shard_path(&a.hash, 0));
    let thread_a = std::thread::spawn(move || {
        write_and_commit(&store_a, &a).unwrap();
        fs_a.is_durable(&a_path)
    });
    created_rx.recv_timeout(Duration::from_secs(10)).expect("thread A creates the directory");
    assert!(leaf.is_dir() && !fs.is_durable(&leaf), "A created the directory and has not synced it");
    write_and_commit(&store, &b).unwrap();
    assert!(fs.is_durable(&store.shard_path(&b.hash, 0)), "B returned before its directory was durable");
    hold_tx.send(()).unwrap();
    assert!(thread_a.join().unwrap(), "A returned before its shard was durable");
}
