//! The embedded metadata store: SQLite through rusqlite, enough for one host and
//! several processes (e.g. two API servers) sharing one database file. Beyond one
//! host, use a networked store behind the same [`MetaStore`](crate::meta::MetaStore) trait.
//!
//! # Schema
//!
//! The tables are described once, in the SQL catalogue (`meta/sql/mod.rs`), which
//! also holds every statement this store shares with the PostgreSQL one. Here they
//! are `STRICT` tables (SQLite itself refuses a value of the wrong type) of
//! `TEXT`, `INTEGER` and `BLOB` columns; `versions`, `placements`, `upload_parts`
//! and `multipart_parts` are `WITHOUT ROWID` (clustered by their primary key);
//! `access_keys.read_only` is an `INTEGER` 0 or 1; the schema version is
//! `PRAGMA user_version`. The store traits are implemented once, over this
//! executor and the PostgreSQL one, in the catalogue's domain files; what differs
//! from the PostgreSQL store is described below (locking: one writer at a time,
//! in any process; this host's clock), and written there beside PostgreSQL's
//! statement or branch. This module keeps the executor: the connections, the
//! write transaction (`BEGIN IMMEDIATE`), the group commit and the error classes.
//!
//! Writes into a bucket (`put_object`, through the group commit like
//! `put_version`; `create_multipart`; `complete_multipart`; `create_upload`;
//! `finish_upload`) check that the bucket exists in the insert's transaction,
//! under the write lock that `delete_bucket` also takes for its emptiness check,
//! the removal of the bucket's uploads and of the bucket itself: SQLite has one
//! writer at a time, in any process, so no write comes between, and a bucket is
//! never deleted with a version in it nor leaves an upload behind. A multipart
//! part's content counts as referenced for the collector exactly like a tus
//! part's. `list_versions` is a range of the primary key of `versions` (name
//! ascending), each name's versions sorted newest first on their own;
//! `multipart_uploads` a range of `multipart_uploads (bucket, name, id)`.
//!
//! `placements` repeats each content row's placement JSON as one row per shard,
//! so that [`contents_on`](crate::meta::ClusterStore::contents_on) is a range scan of its primary
//! key; `put_version` and `set_placement` rewrite a hash's rows (with SQLite's
//! `json_each`) and `finish_delete` removes them, each in the same transaction as
//! the placement or row itself. A partial index on `content(state, hash)` where
//! the state is not live serves the collector's scans of doomed and deleting rows.
//! Migration 2 added the state columns (every existing row is live) and backfilled
//! `placements` from the existing placement JSON (an unreadable placement is left
//! out of the index, and still reported as corrupt when read).
//!
//! # The GC protocol's atomicity
//!
//! Every step that changes a content row's state runs on the writer under SQLite's
//! write lock (`BEGIN IMMEDIATE`, or a single statement), and so does every
//! `put_version`, so they are totally ordered across every process on the file.
//! `put_version`'s content upsert sets the row live unless it is deleting
//! (`ON CONFLICT … DO UPDATE … WHERE state <> 'deleting' RETURNING size`: no row
//! returned means deleting, answered with [`MetaError::ContentDeleting`] and only
//! that write's savepoint rolled back, the rest of its group commit going on).
//! [`begin_delete`](crate::meta::ContentStore::begin_delete) reads the state and whether a version
//! points at the row, and changes it, in one immediate transaction; likewise
//! `revive`, `finish_delete` (index rows, then the row, only if deleting) and
//! `prune` (the newest version, the `keep`-th newest, then the removal). A lease
//! is one upsert whose `WHERE` accepts only a free, expired or own lease, judged by
//! this host's clock (every store on one file is on one host).
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
//! once it is durable. [`put_version`](crate::meta::VersionStore::put_version) runs in a
//! `BEGIN IMMEDIATE` transaction (take the write lock first, then read the highest
//! version, insert the next one and upsert the content row), so writers in
//! different processes get consecutive versions with no gap and no duplicate, and a
//! version is visible to every process as soon as the call returns.
//! [`delete`](crate::meta::VersionStore::delete) reads the newest version and adds the tombstone in
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

mod schema;

pub use schema::{MIGRATIONS, SCHEMA_VERSION};

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode};
use std::future::Future;

use super::exec::{Answer, Cell, Conn, Executor, Row, Value};
use super::sql::{Dialect, Sql, SqlStore};
use super::MetaError;
use schema::migrate;

/// How long a connection waits for another connection's lock before giving up with
/// [`MetaError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections per store.
const READERS: usize = 4;

/// Prepared statements cached per connection (more than the store uses: about 80).
const STATEMENT_CACHE: usize = 128;

/// The SQLite executor: one writer connection and a few readers on one file, on
/// tokio's blocking pool, with the group commit. [`SqliteStore`] is the metadata
/// store over it.
///
/// Cheap to share: wrap the store in an `Arc`. Dropping the last handle closes its
/// connections.
pub struct Sqlite {
    inner: Arc<Inner>,
}

/// A [`MetaStore`](crate::meta::MetaStore) in one SQLite file, shareable by several
/// processes on one host.
pub type SqliteStore = SqlStore<Sqlite>;

struct Inner {
    /// The only connection that writes, so writes from this process queue here
    /// instead of spinning on SQLite's lock.
    writer: Mutex<Connection>,
    /// Read-only connections, handed out round-robin.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Grouped writes (`put_version`, `put_object`, `delete`) waiting for the next
    /// group commit.
    pending: Mutex<Vec<Box<dyn GroupedWrite>>>,
}

/// A grouped write waiting for its batch.
trait GroupedWrite: Send {
    /// Does the write in a savepoint of the batch's transaction of its own, so that
    /// one that fails is rolled back alone; answers once the batch has committed.
    fn apply(self: Box<Self>, conn: &mut Connection) -> Box<dyn Committed>;

    /// Answers `e` without having run.
    fn fail(self: Box<Self>, e: &MetaError);
}

/// A grouped write done in its savepoint, its answer held until the batch commits.
trait Committed: Send {
    /// Answers the caller: the write's own outcome if the batch committed, the
    /// commit's error if it did not (then neither did this write).
    fn send(self: Box<Self>, commit: Result<(), &MetaError>);
}

/// A queued job and where its caller waits.
struct Queued<T, F> {
    what: &'static str,
    job: F,
    reply: Reply<T>,
}

/// Where a queued write's caller waits for its answer.
type Reply<T> = tokio::sync::oneshot::Sender<Result<T, MetaError>>;

impl<T, F> GroupedWrite for Queued<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
{
    fn apply(self: Box<Self>, conn: &mut Connection) -> Box<dyn Committed> {
        let Queued { what, job, reply } = *self;
        let outcome = in_savepoint(conn, what, job);
        Box::new(Done { reply, outcome })
    }

    fn fail(self: Box<Self>, e: &MetaError) {
        drop(self.reply.send(Err(same_error(e))));
    }
}

/// A write's outcome, waiting for its batch's commit.
struct Done<T> {
    reply: Reply<T>,
    outcome: Result<T, MetaError>,
}

impl<T: Send> Committed for Done<T> {
    fn send(self: Box<Self>, commit: Result<(), &MetaError>) {
        let answer = match commit {
            Ok(()) => self.outcome,
            Err(e) => Err(same_error(e)),
        };
        drop(self.reply.send(answer));
    }
}

/// Runs `job` in a savepoint of the transaction open on `conn`, released when the
/// job succeeds and rolled back when it fails.
fn in_savepoint<T>(
    conn: &mut Connection,
    what: &str,
    job: impl for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T>,
) -> Result<T, MetaError> {
    conn.execute_batch("SAVEPOINT grouped").context(what)?;
    match run_now(conn, what, job) {
        Ok(out) => {
            conn.execute_batch("RELEASE grouped").context(what)?;
            Ok(out)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO grouped; RELEASE grouped").context(what)?;
            Err(e)
        }
    }
}

/// Runs `job` on `conn` to its end, here: every statement of a [`SqliteConn`]
/// completes at once, so its future is ready when first polled.
fn run_now<T>(
    conn: &mut Connection,
    what: &str,
    job: impl for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T>,
) -> Result<T, MetaError> {
    let mut conn = SqliteConn { conn };
    job(&mut conn)
        .now_or_never()
        .unwrap_or_else(|| Err(MetaError::Corrupt(format!("{what}: a SQLite job waited on something else"))))
}

/// Runs `job` in a `BEGIN IMMEDIATE` transaction on `conn` (the writer): the write
/// lock is taken first, so what the job reads stays true until it commits, in any
/// process.
fn immediate<T>(
    conn: &mut Connection,
    what: &str,
    job: impl for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T>,
) -> Result<T, MetaError> {
    conn.execute_batch("BEGIN IMMEDIATE").context(what)?;
    match run_now(conn, what, job) {
        Ok(out) => {
            conn.execute_batch("COMMIT").context(what)?;
            Ok(out)
        }
        Err(e) => {
            // A failed rollback leaves the transaction open; the next use of the
            // writer undoes it (Inner::writer).
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A SQLite connection as the store's one implementation sees it.
struct SqliteConn<'a> {
    conn: &'a mut Connection,
}

#[async_trait]
impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn query(&mut self, what: &'static str, sql: Sql, params: &[Value]) -> Result<Vec<Row>, MetaError> {
        let mut stmt = self.conn.prepare_cached(sql.sqlite).context(what)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(SqliteValue))).context(what)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().context(what)? {
            let cells = (0..columns).map(|i| row.get_ref(i).map(cell)).collect::<rusqlite::Result<_>>();
            out.push(Row::new(what, cells.context(what)?));
        }
        Ok(out)
    }

    async fn execute(&mut self, what: &'static str, sql: Sql, params: &[Value]) -> Result<u64, MetaError> {
        let mut stmt = self.conn.prepare_cached(sql.sqlite).context(what)?;
        let changed = stmt.execute(rusqlite::params_from_iter(params.iter().map(SqliteValue))).context(what)?;
        Ok(changed as u64)
    }
}

/// A SQLite value as a [`Cell`].
fn cell(value: ValueRef<'_>) -> Cell {
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(v) => Cell::Int(v),
        // No column of the schema is REAL; keep the value to report it.
        ValueRef::Real(v) => Cell::Text(v.to_string()),
        ValueRef::Text(v) => match std::str::from_utf8(v) {
            Ok(text) => Cell::Text(text.to_string()),
            Err(_) => Cell::Bytes(v.to_vec()),
        },
        ValueRef::Blob(v) => Cell::Bytes(v.to_vec()),
    }
}

/// A [`Value`] as rusqlite binds it.
struct SqliteValue<'a>(&'a Value);

impl ToSql for SqliteValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Int(Some(v)) => ToSqlOutput::from(*v),
            Value::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Bytes(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Value::Int(None) | Value::Text(None) | Value::Bytes(None) => {
                ToSqlOutput::Owned(rusqlite::types::Value::Null)
            }
            Value::Bool(v) => ToSqlOutput::from(*v),
            Value::Texts(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure("SQLite has no array parameters".into()))
            }
        })
    }
}

impl std::fmt::Debug for Sqlite {
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
            Ok(Ok(inner)) => Ok(SqlStore::new(Sqlite { inner: Arc::new(inner) })),
            Ok(Err(reason)) => Err(MetaError::Open { url, reason }),
            Err(e) => Err(MetaError::Open { url, reason: format!("open task failed: {e}") }),
        }
    }
}

impl Executor for Sqlite {
    /// On a reader connection (a read-only one: SQLite refuses a write there).
    fn run<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || run_now(&mut inner.reader(), what, f))
    }

    fn write<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || run_now(&mut inner.writer(), what, f))
    }

    fn transaction<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || immediate(&mut inner.writer(), what, f))
    }

    /// Queues the write for the next group commit and runs a commit on the blocking
    /// pool (which may find the write already taken by an earlier one).
    fn grouped<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let write: Box<dyn GroupedWrite> = Box::new(Queued { what, job: f, reply });
        let inner = Arc::clone(&self.inner);
        async move {
            inner.pending.lock().unwrap_or_else(|p| p.into_inner()).push(write);
            blocking(move || {
                flush_writes(&inner);
                Ok(())
            })
            .await?;
            answer.await.map_err(|_| MetaError::Unavailable("metadata writer stopped before answering".into()))?
        }
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
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE").context(WHAT) {
        batch.into_iter().for_each(|write| write.fail(&e));
        return;
    }
    let done: Vec<Box<dyn Committed>> = batch.into_iter().map(|write| write.apply(&mut conn)).collect();
    match conn.execute_batch("COMMIT").context(WHAT) {
        Ok(()) => done.into_iter().for_each(|d| d.send(Ok(()))),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            done.into_iter().for_each(|d| d.send(Err(&e)));
        }
    }
}

/// A copy of `e` for each caller of a failed batch.
fn same_error(e: &MetaError) -> MetaError {
    match e {
        MetaError::Unavailable(m) => MetaError::Unavailable(m.clone()),
        MetaError::Open { url, reason } => MetaError::Open { url: url.clone(), reason: reason.clone() },
        MetaError::ContentDeleting { hash } => MetaError::ContentDeleting { hash: *hash },
        MetaError::NoSuchBucket { bucket } => MetaError::NoSuchBucket { bucket: bucket.clone() },
        other => MetaError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
