//! The embedded metadata store: SQLite through rusqlite, enough for one host and
//! several processes (e.g. two API servers) sharing one database file. Beyond one
//! host, use a networked store behind the same [`MetaStore`] trait.
//!
//! # Schema
//!
//! ```sql
//! content(hash TEXT PRIMARY KEY,      -- 64 lowercase hex digits
//!         size INTEGER,               -- bytes
//!         policy TEXT,                -- "K+M", e.g. "4+2"
//!         placement TEXT)             -- JSON object {"0":"host:port",...}
//! versions(bucket TEXT, name TEXT, version INTEGER,
//!          hash TEXT NULL,            -- NULL = tombstone
//!          size INTEGER,              -- content size, 0 for a tombstone
//!          created_ms INTEGER,        -- ms since the Unix epoch
//!          PRIMARY KEY (bucket, name, version))  -- clustered (WITHOUT ROWID)
//! ```
//!
//! The primary key of `versions` serves `latest` (one seek, `ORDER BY version DESC
//! LIMIT 1`), exact versions, version paging and listing in name order; a partial
//! index on `versions(hash)` finds the versions that still use a piece of content.
//! Both tables are `STRICT`, so SQLite itself refuses a value of the wrong type.
//! Names compare byte-wise (SQLite's `BINARY` collation), which is also the order of
//! Rust's `str`; a list prefix becomes the range `[prefix, successor(prefix))`, so
//! `%` and `_` need no escaping. Listing walks the versions of the names in range
//! (checking each is its name's newest with one seek), and stops at `limit`.
//!
//! Content is one row per hash. Writing a hash that is already recorded replaces its
//! policy and placement together (the new write's shards are where its placement
//! says, under its policy; a placement means nothing without its policy); the same
//! hash with another size is refused as [`MetaError::Corrupt`].
//!
//! # Migrations
//!
//! The schema version is `PRAGMA user_version`. [`MIGRATIONS`] is the ordered list
//! of schema changes; opening a store applies, inside one `BEGIN IMMEDIATE`
//! transaction, every migration above the file's version and records the new
//! version ([`SCHEMA_VERSION`]), so concurrent openers migrate once. Migrations are
//! only ever appended to, never edited. A file whose version is newer than this
//! binary knows (written by a newer cairn) is refused with [`MetaError::Open`]
//! rather than misread.
//!
//! # Several processes, one file
//!
//! The file is in WAL mode, so readers never wait for the writer; every connection
//! has a 5 s `busy_timeout`; `synchronous=FULL`, so a write is acknowledged only
//! once it is durable. [`put_version`](MetaStore::put_version) runs in a
//! `BEGIN IMMEDIATE` transaction (take the write lock first, then read the highest
//! version, insert the next one and upsert the content row), so writers in
//! different processes get consecutive versions with no gap and no duplicate, and a
//! version is visible to every process as soon as the call returns.
//! [`delete`](MetaStore::delete) reads the newest version and adds the tombstone in
//! the same transaction, under the same lock, so two deletes of one name (in one
//! process or two) cannot both find it live. Concurrent writers of one process
//! share a transaction (group commit, one fsync for the batch), each in a
//! savepoint of its own.
//!
//! Within a process, rusqlite is synchronous: every call runs on tokio's blocking
//! pool (`spawn_blocking`). There is one writer connection behind a mutex and a
//! small pool of reader connections, so reads don't queue behind writes; every
//! query is prepared once per connection and cached (`prepare_cached`).
//!
//! # Errors
//!
//! A busy or locked database, an I/O failure, a full disk or a failed worker task is
//! [`MetaError::Unavailable`] (retry later); a row this binary cannot read (bad hash,
//! policy, placement JSON, negative number, dangling content reference) or any other
//! unexpected SQLite error is [`MetaError::Corrupt`]. Nothing read from the file can
//! make the store panic.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use super::row::{
    delete_refused, next_version, parse_content, placement_json, select_versions, to_sql_int, ContentRow, ListRange,
    ListStatements, RawVersion, VersionsPage,
};
use super::{ContentRecord, DeleteOutcome, MetaError, MetaStore, VersionRecord};
use crate::content::{ContentHash, Placement};

/// The schema changes, in order: migration `i` takes a file from schema version `i`
/// to `i + 1`. Append only; never edit a released migration.
pub const MIGRATIONS: &[&str] = &[
    // 1: content and versions.
    "CREATE TABLE content (
         hash      TEXT    NOT NULL PRIMARY KEY,
         size      INTEGER NOT NULL,
         policy    TEXT    NOT NULL,
         placement TEXT    NOT NULL
     ) STRICT;
     CREATE TABLE versions (
         bucket     TEXT    NOT NULL,
         name       TEXT    NOT NULL,
         version    INTEGER NOT NULL,
         hash       TEXT    NULL REFERENCES content (hash),
         size       INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         PRIMARY KEY (bucket, name, version)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX versions_by_hash ON versions (hash) WHERE hash IS NOT NULL;",
];

/// The schema version this binary writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a connection waits for another connection's lock before giving up with
/// [`MetaError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections per store.
const READERS: usize = 4;

/// Prepared statements cached per connection (more than the store uses).
const STATEMENT_CACHE: usize = 32;

const SQL_LATEST: &str = select_versions!("WHERE v.bucket = ?1 AND v.name = ?2 ORDER BY v.version DESC LIMIT 1");
const SQL_VERSION: &str = select_versions!("WHERE v.bucket = ?1 AND v.name = ?2 AND v.version = ?3");
const SQL_VERSIONS: &str =
    select_versions!("WHERE v.bucket = ?1 AND v.name = ?2 AND v.version > ?3 ORDER BY v.version LIMIT ?4");

/// Listing, as [`ListStatements`] wants it: range constraints on the primary key.
/// The correlated subquery keeps only each name's newest version (one seek per row).
macro_rules! select_list {
    ($lower:literal, $upper:literal, $limit:literal) => {
        select_versions!(
            "WHERE v.bucket = ?1 AND v.name ",
            $lower,
            " ?2 ",
            $upper,
            "AND v.hash IS NOT NULL ",
            "AND v.version = (SELECT m.version FROM versions m ",
            "WHERE m.bucket = v.bucket AND m.name = v.name ORDER BY m.version DESC LIMIT 1) ",
            "ORDER BY v.name LIMIT ",
            $limit
        )
    };
}

const LIST_STATEMENTS: ListStatements = ListStatements {
    from: select_list!(">=", "", "?3"),
    from_upto: select_list!(">=", "AND v.name < ?3 ", "?4"),
    after: select_list!(">", "", "?3"),
    after_upto: select_list!(">", "AND v.name < ?3 ", "?4"),
};

const SQL_CONTENT: &str = "SELECT hash, size, policy, placement FROM content WHERE hash = ?1";
const SQL_UPSERT_CONTENT: &str = "INSERT INTO content (hash, size, policy, placement) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (hash) DO UPDATE SET policy = excluded.policy, placement = excluded.placement \
     RETURNING size";
const SQL_NEWEST: &str =
    "SELECT version, hash IS NULL FROM versions WHERE bucket = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1";
const SQL_NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE bucket = ?1 AND name = ?2";
const SQL_INSERT_VERSION: &str = "INSERT INTO versions (bucket, name, version, hash, size, created_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SQL_SET_PLACEMENT: &str = "UPDATE content SET placement = ?2 WHERE hash = ?1";

/// A [`MetaStore`] in one SQLite file, shareable by several processes on one host.
///
/// Cheap to share: wrap it in an `Arc`. Dropping the last handle closes its
/// connections.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The only connection that writes, so writes from this process queue here
    /// instead of spinning on SQLite's lock.
    writer: Mutex<Connection>,
    /// Read-only connections, handed out round-robin.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Writes (`put_version`, `delete`) waiting for the next group commit.
    pending: Mutex<Vec<PendingWrite>>,
}

/// Where a queued write's caller waits for its answer.
type Reply<T> = tokio::sync::oneshot::Sender<Result<T, MetaError>>;

/// One write waiting to be committed with others.
struct PendingWrite {
    bucket: String,
    name: String,
    op: WriteOp,
}

/// What a queued write does, and who waits for it.
enum WriteOp {
    /// `put_version`: add a version unconditionally.
    Put { content: Option<ContentRecord>, reply: Reply<VersionRecord> },
    /// `delete`: add a tombstone unless there is no live version.
    Delete { reply: Reply<DeleteOutcome> },
}

/// A write done in its savepoint, its answer held until the batch commits.
enum Done {
    Put(Reply<VersionRecord>, Result<VersionRecord, MetaError>),
    Delete(Reply<DeleteOutcome>, Result<DeleteOutcome, MetaError>),
}

impl PendingWrite {
    /// Does the write in a savepoint of `tx` of its own, so that one that fails is
    /// rolled back alone.
    fn apply(self, tx: &mut rusqlite::Transaction<'_>) -> Done {
        let PendingWrite { bucket, name, op } = self;
        match op {
            WriteOp::Put { content, reply } => {
                Done::Put(reply, in_savepoint(tx, |sp| put_version_in(sp, bucket, name, content)))
            }
            WriteOp::Delete { reply } => Done::Delete(reply, in_savepoint(tx, |sp| delete_in(sp, bucket, name))),
        }
    }

    /// Answers `e` without having run.
    fn fail(self, e: &MetaError) {
        match self.op {
            WriteOp::Put { reply, .. } => drop(reply.send(Err(same_error(e)))),
            WriteOp::Delete { reply } => drop(reply.send(Err(same_error(e)))),
        }
    }
}

impl Done {
    /// Answers the caller once the batch is committed.
    fn send(self) {
        match self {
            Done::Put(reply, outcome) => drop(reply.send(outcome)),
            Done::Delete(reply, outcome) => drop(reply.send(outcome)),
        }
    }

    /// Answers `e`: the batch did not commit, so neither did this write.
    fn fail(self, e: &MetaError) {
        match self {
            Done::Put(reply, _) => drop(reply.send(Err(same_error(e)))),
            Done::Delete(reply, _) => drop(reply.send(Err(same_error(e)))),
        }
    }
}

/// Runs `f` in a savepoint of `tx`, released when `f` succeeds and rolled back
/// when it fails.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, MetaError>,
) -> Result<T, MetaError> {
    let sp = tx.savepoint().context("savepoint")?;
    let out = f(&sp)?;
    sp.commit().context("release savepoint")?;
    Ok(out)
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("readers", &self.inner.readers.len()).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (and its parent directory) when
    /// missing and migrating its schema to [`SCHEMA_VERSION`].
    ///
    /// Fails with [`MetaError::Open`] when the file cannot be created or opened, is
    /// not a SQLite database, cannot use WAL mode, has a schema newer than this
    /// binary knows, or a migration fails.
    pub async fn open(path: &Path) -> Result<SqliteStore, MetaError> {
        let path = path.to_path_buf();
        let url = format!("sqlite:{}", path.display());
        let opened = tokio::task::spawn_blocking(move || open_blocking(&path)).await;
        match opened {
            Ok(Ok(inner)) => Ok(SqliteStore { inner: Arc::new(inner) }),
            Ok(Err(reason)) => Err(MetaError::Open { url, reason }),
            Err(e) => Err(MetaError::Open { url, reason: format!("open task failed: {e}") }),
        }
    }

    /// Queues a write for the next group commit and runs a commit on the blocking
    /// pool (which may find the write already taken by an earlier one).
    async fn queue(&self, bucket: &str, name: &str, op: WriteOp) -> Result<(), MetaError> {
        let write = PendingWrite { bucket: bucket.to_string(), name: name.to_string(), op };
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).push(write);
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            flush_writes(&inner);
            Ok(())
        })
        .await
    }

    /// Runs `f` with a reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, MetaError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || f(&inner.reader())).await
    }

    /// Runs `f` with the writer connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, MetaError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || f(&mut inner.writer())).await
    }
}

/// Runs `f` on tokio's blocking pool; a failed task (a panic) is `Unavailable`.
async fn blocking<T, F>(f: F) -> Result<T, MetaError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, MetaError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| MetaError::Unavailable(format!("metadata task failed: {e}")))?
}

impl Inner {
    fn writer(&self) -> MutexGuard<'_, Connection> {
        let conn = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !conn.is_autocommit() {
            // A task died inside a transaction; undo it before anyone else writes.
            let _ = conn.execute_batch("ROLLBACK");
        }
        conn
    }

    /// A free reader if there is one, else waits for the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(conn) => return conn,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn open_blocking(path: &Path) -> Result<Inner, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let mut writer = connect(path).map_err(|e| format!("cannot open: {e}"))?;
    // Switching a new file to WAL takes an exclusive lock, and SQLite does not wait
    // for it through the busy handler when another process opens the same new file
    // at the same moment (two API servers starting together): retry for as long as
    // the busy timeout.
    let started = std::time::Instant::now();
    let mode: String = loop {
        match writer.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get::<_, String>(0)) {
            Ok(mode) => break mode,
            Err(e)
                if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot switch to WAL mode: {e}")),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("cannot switch to WAL mode (journal mode stays {mode:?})"));
    }
    writer.pragma_update(None, "synchronous", "FULL").map_err(|e| format!("cannot set synchronous=FULL: {e}"))?;
    migrate(&mut writer)?;
    let readers = (0..READERS)
        .map(|_| {
            let conn = connect(path).map_err(|e| format!("cannot open a reader: {e}"))?;
            conn.pragma_update(None, "query_only", true).map_err(|e| format!("cannot set query_only: {e}"))?;
            Ok(Mutex::new(conn))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Inner { writer: Mutex::new(writer), readers, next_reader: AtomicUsize::new(0), pending: Mutex::default() })
}

/// A connection with the settings every connection needs.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, or refuses a newer one.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot begin the migration: {e}"))?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| format!("cannot read the schema version: {e}"))?;
    let known = i64::from(SCHEMA_VERSION);
    if found > known {
        return Err(format!(
            "schema version {found} is newer than this binary knows ({known}): upgrade cairn to use this store"
        ));
    }
    if found < 0 {
        return Err(format!("invalid schema version {found}"));
    }
    if found == known {
        return Ok(()); // dropping the transaction ends it; nothing was written
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql).map_err(|e| format!("migration to schema version {} failed: {e}", i + 1))?;
    }
    tx.pragma_update(None, "user_version", known).map_err(|e| format!("cannot record the schema version: {e}"))?;
    tx.commit().map_err(|e| format!("cannot commit the migration: {e}"))
}

/// Classifies a SQLite error: transient conditions are `Unavailable`, everything
/// else (unreadable values, a malformed file, unexpected failures) is `Corrupt`.
fn sql_error(what: &str, e: rusqlite::Error) -> MetaError {
    let transient = match &e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OperationInterrupted
        ),
        _ => false,
    };
    if transient {
        MetaError::Unavailable(format!("{what}: {e}"))
    } else {
        MetaError::Corrupt(format!("{what}: {e}"))
    }
}

/// Attaches what was being done to a rusqlite error and classifies it.
trait Context<T> {
    fn context(self, what: &str) -> Result<T, MetaError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, what: &str) -> Result<T, MetaError> {
        self.map_err(|e| sql_error(what, e))
    }
}

fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Maps a row of the version queries onto [`RawVersion`].
fn raw_version(row: &Row<'_>) -> rusqlite::Result<RawVersion> {
    Ok(RawVersion {
        bucket: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        hash: row.get(3)?,
        size: Some(row.get(4)?),
        created_ms: Some(row.get(5)?),
        content_hash: row.get(6)?,
        content_size: row.get(7)?,
        policy: row.get(8)?,
        placement: row.get(9)?,
    })
}

fn query_versions(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<VersionRecord>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let rows = stmt.query_map(params, raw_version).context(what)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.context(what)?.parse()?);
    }
    Ok(out)
}

fn query_version(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Option<VersionRecord>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let raw = stmt.query_row(params, raw_version).optional().context(what)?;
    raw.map(RawVersion::parse).transpose()
}

/// Adds the next version of `bucket/name` on `conn`, which is inside the caller's
/// write transaction (taken with `BEGIN IMMEDIATE`, so no other connection in any
/// process can insert between reading the highest version and inserting the next).
fn put_version_in(
    conn: &Connection,
    bucket: String,
    name: String,
    content: Option<ContentRecord>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_version";
    let row = content.as_ref().map(ContentRow::encode).transpose()?;
    if let Some(row) = &row {
        let stored: i64 = conn
            .prepare_cached(SQL_UPSERT_CONTENT)
            .context(WHAT)?
            .query_row((&row.hash, row.size, &row.policy, &row.placement), |r| r.get(0))
            .context(WHAT)?;
        row.check_recorded_size(stored)?;
    }
    let next: i64 =
        conn.prepare_cached(SQL_NEXT_VERSION).context(WHAT)?.query_row((&bucket, &name), |r| r.get(0)).context(WHAT)?;
    let version = next_version(&bucket, &name, next)?;
    let (hash, size) = ContentRow::version_columns(row.as_ref());
    let created_ms = now_ms();
    conn.prepare_cached(SQL_INSERT_VERSION)
        .context(WHAT)?
        .execute((&bucket, &name, next, &hash, size, created_ms))
        .context(WHAT)?;
    Ok(VersionRecord { bucket, name, version, content, created_ms })
}

/// Adds a tombstone to `bucket/name` on `conn`, inside the caller's write
/// transaction, unless the name has no version or its newest is a tombstone: the
/// write lock is held from the check to the commit, so no other delete (in this
/// batch or any process) can slip in between.
fn delete_in(conn: &Connection, bucket: String, name: String) -> Result<DeleteOutcome, MetaError> {
    const WHAT: &str = "delete";
    let newest: Option<(i64, bool)> = conn
        .prepare_cached(SQL_NEWEST)
        .context(WHAT)?
        .query_row((&bucket, &name), |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .context(WHAT)?;
    if let Some(refused) = delete_refused(&bucket, &name, newest)? {
        return Ok(refused);
    }
    put_version_in(conn, bucket, name, None).map(DeleteOutcome::Deleted)
}

/// Group commit: takes the writer, then every write queued so far, and commits
/// them in one transaction, each in a savepoint of its own (one that fails is
/// rolled back alone). With `synchronous=FULL` every commit costs an fsync; writers
/// that arrive while one batch is committing wait for the writer and are committed
/// together by the next, so N concurrent writes cost about one fsync, not N.
/// Callers are answered only after the commit is durable.
fn flush_writes(inner: &Inner) {
    const WHAT: &str = "commit";
    let mut conn = inner.writer();
    let batch = std::mem::take(&mut *inner.pending.lock().unwrap_or_else(|p| p.into_inner()));
    if batch.is_empty() {
        return; // an earlier flush took this caller's request
    }
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate).context(WHAT) {
        Ok(tx) => tx,
        Err(e) => {
            batch.into_iter().for_each(|p| p.fail(&e));
            return;
        }
    };
    let done: Vec<Done> = batch.into_iter().map(|p| p.apply(&mut tx)).collect();
    match tx.commit().context(WHAT) {
        Ok(()) => done.into_iter().for_each(Done::send),
        Err(e) => done.into_iter().for_each(|d| d.fail(&e)),
    }
}

/// A copy of `e` for each caller of a failed batch.
fn same_error(e: &MetaError) -> MetaError {
    match e {
        MetaError::Unavailable(m) => MetaError::Unavailable(m.clone()),
        MetaError::Open { url, reason } => MetaError::Open { url: url.clone(), reason: reason.clone() },
        other => MetaError::Corrupt(other.to_string()),
    }
}

fn list_blocking(conn: &Connection, bucket: &str, range: &ListRange) -> Result<Vec<VersionRecord>, MetaError> {
    let sql = range.statement(&LIST_STATEMENTS);
    match &range.upper {
        Some(upper) => query_versions(conn, "list", sql, &[&bucket, &range.lower, upper, &range.limit]),
        None => query_versions(conn, "list", sql, &[&bucket, &range.lower, &range.limit]),
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn put_version(
        &self,
        bucket: &str,
        name: &str,
        content: Option<&ContentRecord>,
    ) -> Result<VersionRecord, MetaError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue(bucket, name, WriteOp::Put { content: content.cloned(), reply }).await?;
        answer.await.map_err(|_| MetaError::Unavailable("metadata writer stopped before answering".into()))?
    }

    async fn delete(&self, bucket: &str, name: &str) -> Result<DeleteOutcome, MetaError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue(bucket, name, WriteOp::Delete { reply }).await?;
        answer.await.map_err(|_| MetaError::Unavailable("metadata writer stopped before answering".into()))?
    }

    async fn latest(&self, bucket: &str, name: &str) -> Result<Option<VersionRecord>, MetaError> {
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.read(move |conn| query_version(conn, "latest", SQL_LATEST, &[&bucket, &name])).await
    }

    async fn version(&self, bucket: &str, name: &str, version: u64) -> Result<Option<VersionRecord>, MetaError> {
        let Some(version) = to_sql_int(version) else {
            return Ok(None);
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.read(move |conn| query_version(conn, "version", SQL_VERSION, &[&bucket, &name, &version])).await
    }

    async fn versions(
        &self,
        bucket: &str,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        let Some(page) = VersionsPage::new(after, limit) else {
            return Ok(Vec::new());
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.read(move |conn| {
            query_versions(conn, "versions", SQL_VERSIONS, &[&bucket, &name, &page.after, &page.limit])
        })
        .await
    }

    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        let hex = hash.to_hex();
        self.read(move |conn| {
            const WHAT: &str = "content";
            let mut stmt = conn.prepare_cached(SQL_CONTENT).context(WHAT)?;
            let raw = stmt
                .query_row([&hex], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .optional()
                .context(WHAT)?;
            raw.map(|(hash, size, policy, placement)| parse_content(&hash, size, &policy, &placement)).transpose()
        })
        .await
    }

    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError> {
        let hex = hash.to_hex();
        let json = placement_json(placement)?;
        self.write(move |conn| {
            conn.prepare_cached(SQL_SET_PLACEMENT)
                .context("set_placement")?
                .execute((&hex, &json))
                .context("set_placement")?;
            Ok(())
        })
        .await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        let Some(range) = ListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.read(move |conn| list_blocking(conn, &bucket, &range)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot paths must be index seeks and range scans in primary-key order: no
    /// table scan, no sort.
    #[test]
    fn hot_queries_use_the_primary_key_without_sorting() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        let plan = |sql: &str, n: usize| -> String {
            let params: Vec<&dyn ToSql> = vec![&"b" as &dyn ToSql; n];
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(params.as_slice(), |row| row.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
        };
        for (sql, n) in [
            (SQL_LATEST, 2),
            (SQL_VERSION, 3),
            (SQL_VERSIONS, 4),
            (LIST_STATEMENTS.from, 3),
            (LIST_STATEMENTS.from_upto, 4),
            (LIST_STATEMENTS.after, 3),
            (LIST_STATEMENTS.after_upto, 4),
        ] {
            let plan = plan(sql, n);
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
            assert!(!plan.contains("SCAN v\n") && !plan.ends_with("SCAN v"), "{sql}\n{plan}");
            assert!(plan.contains("SEARCH v USING PRIMARY KEY"), "{sql}\n{plan}");
        }
    }

    #[test]
    fn busy_and_io_errors_are_unavailable_everything_else_corrupt() {
        let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error { code, extended_code: 0 }, None);
        assert!(matches!(sql_error("x", failure(ErrorCode::DatabaseBusy)), MetaError::Unavailable(_)));
        assert!(matches!(sql_error("x", failure(ErrorCode::DatabaseLocked)), MetaError::Unavailable(_)));
        assert!(matches!(sql_error("x", failure(ErrorCode::SystemIoFailure)), MetaError::Unavailable(_)));
        assert!(matches!(sql_error("x", failure(ErrorCode::DatabaseCorrupt)), MetaError::Corrupt(_)));
        assert!(matches!(
            sql_error("x", rusqlite::Error::InvalidColumnType(0, "hash".into(), rusqlite::types::Type::Integer)),
            MetaError::Corrupt(_)
        ));
    }
}
