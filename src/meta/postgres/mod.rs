//! The networked metadata store: PostgreSQL through `tokio-postgres`, for API
//! servers on several hosts sharing one store. It mirrors the SQLite store's
//! tables, migrations and error classes behind the same [`MetaStore`](crate::meta::MetaStore) trait, so the
//! API tier cannot tell them apart; only the URL differs.
//!
//! # URL
//!
//! `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMS]` (or `postgresql://`),
//! with every parameter `tokio-postgres` understands (`connect_timeout`,
//! `application_name`, `options`, …) plus cairn's own `schema=NAME`: the PostgreSQL
//! schema that holds cairn's tables, `public` when absent. NAME must match
//! `[a-z_][a-z0-9_]{0,62}` and not start with `pg_`; it is created when missing, and
//! every pooled connection starts with `search_path` set to it (through the
//! connection's startup `options`), so several cairn clusters, or test runs, can
//! share one database without seeing each other. `schema` is removed before the URL
//! reaches `tokio-postgres`. Passwords are masked in error messages.
//!
//! # Schema
//!
//! The tables are described once, in the SQL catalogue (`meta/sql/mod.rs`), which
//! also holds every statement this store shares with the SQLite one. Here every
//! text key column is `TEXT COLLATE "C"`, numbers are `BIGINT`, an upload's hash
//! state is `BYTEA`, `access_keys.read_only` is a `BOOLEAN`, and
//! `worker_cursors.value` is `BYTEA` (UTF-8; `TEXT` cannot hold NUL). This store
//! adds two tables:
//!
//! ```sql
//! heads(bucket TEXT, name TEXT, latest BIGINT,  -- each name's newest version
//!       PRIMARY KEY (bucket, name))
//! schema_version(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)
//! ```
//!
//! The store traits are implemented once, over this executor and the SQLite one,
//! in the catalogue's domain files; what differs from the SQLite store is
//! described below (row locks, the database's clock for `created_ms` and leases,
//! `heads`) and written there beside SQLite's statement or branch. This module
//! keeps the executor: the pool, transactions and the error classes.
//!
//! `put_object`, `create_multipart`, `complete_multipart`, `create_upload` and
//! `finish_upload` share-lock the bucket's row (`FOR SHARE`) before they insert;
//! `delete_bucket` locks it `FOR UPDATE` and only then checks, in a statement of
//! its own, that no version is in it, and locks and removes the bucket's uploads:
//! a concurrent writer has either committed (and is seen: its version keeps the
//! bucket, its upload is aborted) or waits and then finds no bucket. `put_part`
//! share-locks its upload's row and `abort_multipart` / `complete_multipart` /
//! `remove_stale_multipart` / `delete_bucket` lock it `FOR UPDATE` before removing
//! the parts, so no part lands after its upload is gone; `append_upload`,
//! `finish_upload`, `delete_upload`, `remove_expired_uploads` and `delete_bucket`
//! lock a tus upload's row `FOR UPDATE` the same way. Locks are taken bucket
//! first, then upload, then content and head (`finish_upload` and
//! `complete_multipart` read the upload's bucket unlocked, lock the bucket, then
//! the upload: its bucket never changes), so none of these can deadlock.
//! `delete_version` locks the name's head and moves it to the newest remaining
//! version (dropping it with the last one, as `prune` does), so listing never
//! meets a head without its version.
//!
//! `placements` repeats each content row's placement JSON as one row per shard
//! (`contents_on` is a range scan of its primary key); `put_version` and
//! `set_placement` rewrite a hash's rows (`json_each_text`) and `finish_delete`
//! removes them, each in the same transaction as the placement or row itself. A
//! partial index on `content(state, hash)` where the state is not live serves the
//! collector's scans. `names` walks `heads` (one row per name with versions).
//! Migration 2 added the state columns (every existing row is live) and backfilled
//! `placements` from the existing placement JSON, row by row (an unreadable
//! placement is left out of the index, and still reported as corrupt when read).
//!
//! Every text key column is `COLLATE "C"`: names compare byte-wise, as in the
//! SQLite store and Rust's `str`, whatever the database's locale, and a list
//! prefix becomes the index range `[prefix, successor(prefix))`, so `%` and `_` need
//! no escaping. `latest`, exact versions and version paging are seeks on the primary
//! key of `versions`. `heads` holds one row per name; listing walks it in name
//! order, joins each name's newest version (one seek each), skips tombstones and
//! stops at `LIMIT`, so it never loads every name. The database clock stamps
//! `created_ms`, so versions written through different hosts share one clock.
//!
//! Content is one row per hash. Writing a hash that is already recorded replaces its
//! policy and placement together; the same hash with another size is refused as
//! [`MetaError::Corrupt`] and the whole write is rolled back.
//!
//! # Concurrent writers on several hosts
//!
//! [`put_version`](crate::meta::VersionStore::put_version) runs in one READ COMMITTED transaction:
//! upsert the content row, then `INSERT INTO heads … ON CONFLICT DO UPDATE SET
//! latest = heads.latest + 1 RETURNING latest`, then insert that version. The upsert
//! row-locks the name's head until commit, so writers of one name (on any host)
//! queue there and get consecutive numbers, while writers of other names don't wait;
//! a failed write rolls back its increment, so there are no gaps. Every transaction
//! takes at most one content lock and then one head lock, always in that order, so
//! writers cannot deadlock. [`delete`](crate::meta::VersionStore::delete) row-locks the head first
//! (`SELECT … FOR UPDATE`), then reads whether that newest version is a tombstone
//! and adds its own under the same lock, so concurrent deletes of one name queue on
//! the head and only the first finds the name live. The commit is durable (the server's default
//! `synchronous_commit`) and visible to every host before the call returns.
//!
//! # The GC protocol's atomicity
//!
//! `put_version`'s content upsert row-locks the content row and sets it live,
//! unless it is deleting (`ON CONFLICT … DO UPDATE … WHERE state <> 'deleting'`:
//! no row returned means deleting, answered with [`MetaError::ContentDeleting`]
//! and the whole transaction rolled back). [`begin_delete`](crate::meta::ContentStore::begin_delete)
//! first locks the same row (`SELECT … FOR UPDATE`), then, in a later statement
//! (which under READ COMMITTED sees everything committed while it waited), checks
//! whether a version points at it, and changes the state under the lock. So a
//! concurrent `put_version` of that content has either committed (its version is
//! seen, and the row is live anyway) or waits for the lock and then finds the row
//! deleting. `revive` and `finish_delete` change the row only in the expected
//! state, under its lock. `doom_unreferenced` skips rows locked by a writer
//! (`FOR UPDATE SKIP LOCKED`); a doom that still races a PUT is harmless, since
//! `begin_delete` checks the references again. `prune` locks the name's head
//! first, like `put_version` and `delete`, and drops the head with the last
//! version, so the next PUT starts at 1. A lease is one upsert judged by the
//! database's clock, atomic across every store on the database.
//!
//! # Migrations
//!
//! [`MIGRATIONS`] is the ordered, append-only list of schema changes and
//! `schema_version` has one row per applied migration. Opening a store takes
//! `pg_advisory_xact_lock` on the schema's name, creates the schema when missing,
//! and in that one transaction applies every migration above the recorded version,
//! so API servers starting at once migrate exactly once, and a newer binary upgrades
//! an older store in place. A store whose version is newer than this binary knows is
//! refused with [`MetaError::Open`] rather than misread.
//!
//! # Pool
//!
//! `deadpool-postgres`: a small, maintained pool built for `tokio-postgres` that
//! adds only `deadpool` itself to the dependency tree, with wait, create and recycle
//! timeouts and a per-connection prepared-statement cache (`prepare_cached`), which
//! every query here uses. A hand-written pool would have to redo exactly that.
//! Waiting for a connection is bounded by [`POOL_WAIT`] and connecting by
//! [`CONNECT_TIMEOUT`], so a database that is down makes calls fail in seconds
//! (503), not hang. No TLS: metadata traffic stays inside the cluster network.
//!
//! # Errors
//!
//! Refused or broken connections, pool timeouts, server shutdown, serialization
//! failures and deadlocks, lack of resources (disk, memory, connections), a
//! cancelled statement or a read-only (standby) server are
//! [`MetaError::Unavailable`] (retry later); a row this binary cannot read (bad
//! hash, policy, placement JSON, negative number, dangling reference) or any other
//! unexpected database error is [`MetaError::Corrupt`]. Nothing read from the
//! database can make the store panic.

mod schema;

pub use schema::{MIGRATIONS, SCHEMA_VERSION};

use std::error::Error as _;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use std::future::Future;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use super::exec::{Answer, Cell, Conn, Executor, Row, Value};
use super::sql::{Dialect, Sql, SqlStore};
use super::MetaError;
use crate::report::redact_url;
use schema::migrate;

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "public";

/// How long a call waits for a free pooled connection (or for a new one to be
/// made) before failing with [`MetaError::Unavailable`].
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// How long connecting to the server may take, unless the URL's `connect_timeout`
/// says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long sent data may stay unacknowledged before the connection is dropped
/// (`TCP_USER_TIMEOUT`), unless the URL says otherwise: a host that vanished
/// without closing its sockets fails the call instead of hanging it.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections per store (per API server).
const POOL_SIZE: usize = 16;

/// The PostgreSQL executor: a pool of up to 16 connections to one schema.
/// [`PostgresStore`] is the metadata store over it.
///
/// Cheap to share: wrap the store in an `Arc`. Dropping it closes the connections.
pub struct Postgres {
    pool: Pool,
    schema: String,
}

/// A [`MetaStore`](crate::meta::MetaStore) in a PostgreSQL schema, shareable by API
/// servers on any number of hosts.
pub type PostgresStore = SqlStore<Postgres>;

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Opens the store at `url` (see the [module docs](self) for its form), creating
    /// its schema when missing and migrating it to [`SCHEMA_VERSION`].
    ///
    /// Fails with [`MetaError::Open`] when the URL is malformed or names an invalid
    /// schema, the server cannot be reached within [`CONNECT_TIMEOUT`] or refuses
    /// the login, the store's schema is newer than this binary knows, or a migration
    /// fails.
    pub async fn open(url: &str) -> Result<PostgresStore, MetaError> {
        let open_error = |reason: String| MetaError::Open { url: redact_url(url), reason };
        let target = Target::parse(url).map_err(open_error)?;
        let pool = build_pool(&target).map_err(open_error)?;
        let mut client = pool.get().await.map_err(|e| open_error(format!("cannot connect: {}", describe_pool(&e))))?;
        migrate(&mut client, &target.schema).await.map_err(open_error)?;
        Ok(SqlStore::new(Postgres { pool, schema: target.schema }))
    }

    /// The PostgreSQL schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.exec.schema
    }
}

impl Postgres {
    /// A pooled connection, or `Unavailable` after [`POOL_WAIT`].
    async fn client(&self, what: &str) -> Result<Object, MetaError> {
        self.pool.get().await.map_err(|e| MetaError::Unavailable(format!("{what}: {}", describe_pool(&e))))
    }
}

impl Executor for Postgres {
    async fn run<T, F>(&self, what: &'static str, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        let client = self.client(what).await?;
        f(&mut PgConn::Client(&client)).await
    }

    fn write<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        self.run(what, f)
    }

    /// Dropping the transaction unfinished (an error, or the caller giving up)
    /// rolls it back.
    async fn transaction<T, F>(&self, what: &'static str, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        let mut client = self.client(what).await?;
        let tx = client.transaction().await.context(what)?;
        let out = f(&mut PgConn::Tx(&tx)).await?;
        tx.commit().await.context(what)?;
        Ok(out)
    }

    /// Each write is a transaction of its own: the server already flushes the WAL
    /// of concurrent commits together.
    fn grouped<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static,
    {
        self.transaction(what, f)
    }
}

/// A pooled connection, or a transaction on one, as the store's one
/// implementation sees it.
enum PgConn<'a> {
    Client(&'a Object),
    Tx(&'a deadpool_postgres::Transaction<'a>),
}

impl PgConn<'_> {
    async fn prepare(&self, what: &str, sql: Sql) -> Result<tokio_postgres::Statement, MetaError> {
        match self {
            PgConn::Client(c) => c.prepare_cached(sql.postgres).await,
            PgConn::Tx(t) => t.prepare_cached(sql.postgres).await,
        }
        .context(what)
    }
}

#[async_trait]
impl Conn for PgConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn query(&mut self, what: &'static str, sql: Sql, params: &[Value]) -> Result<Vec<Row>, MetaError> {
        let stmt = self.prepare(what, sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(pg_value).collect();
        let rows = match self {
            PgConn::Client(c) => c.query(&stmt, &params).await,
            PgConn::Tx(t) => t.query(&stmt, &params).await,
        }
        .context(what)?;
        rows.iter().map(|row| pg_row(what, row)).collect()
    }

    async fn execute(&mut self, what: &'static str, sql: Sql, params: &[Value]) -> Result<u64, MetaError> {
        let stmt = self.prepare(what, sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(pg_value).collect();
        match self {
            PgConn::Client(c) => c.execute(&stmt, &params).await,
            PgConn::Tx(t) => t.execute(&stmt, &params).await,
        }
        .context(what)
    }
}

/// A [`Value`] as `tokio-postgres` binds it (which checks its type against the
/// parameter's).
fn pg_value(value: &Value) -> &(dyn ToSql + Sync) {
    match value {
        Value::Int(v) => v,
        Value::Text(v) => v,
        Value::Bytes(v) => v,
        Value::Bool(v) => v,
        Value::Texts(v) => v,
    }
}

/// A row as cells, by each column's type; a type the schema does not use is
/// [`MetaError::Corrupt`].
fn pg_row(what: &'static str, row: &tokio_postgres::Row) -> Result<Row, MetaError> {
    let cells = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let ty = column.type_();
            let cell = if *ty == Type::INT8 {
                row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))
            } else if *ty == Type::INT4 {
                row.try_get::<_, Option<i32>>(i).map(|v| v.map(|v| Cell::Int(v.into())))
            } else if *ty == Type::INT2 {
                row.try_get::<_, Option<i16>>(i).map(|v| v.map(|v| Cell::Int(v.into())))
            } else if *ty == Type::BOOL {
                row.try_get::<_, Option<bool>>(i).map(|v| v.map(Cell::Bool))
            } else if *ty == Type::BYTEA {
                row.try_get::<_, Option<Vec<u8>>>(i).map(|v| v.map(Cell::Bytes))
            } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
                row.try_get::<_, Option<String>>(i).map(|v| v.map(Cell::Text))
            } else {
                return Err(MetaError::Corrupt(format!("{what}: column {} has type {ty}", column.name())));
            };
            Ok(cell.context(what)?.unwrap_or(Cell::Null))
        })
        .collect::<Result<_, MetaError>>()?;
    Ok(Row::new(what, cells))
}

/// A parsed store URL: what `tokio-postgres` gets, and cairn's schema.
struct Target {
    /// The URL without cairn's own parameters.
    url: String,
    schema: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut schema = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != "schema" {
                rest.push(pair);
            } else if schema.replace(value).is_some() {
                return Err("the schema parameter is given twice".into());
            }
        }
        let schema = schema.unwrap_or(DEFAULT_SCHEMA);
        if !valid_schema_name(schema) {
            return Err(format!(
                "invalid schema name {schema:?}: expected [a-z_][a-z0-9_]{{0,62}}, not starting with pg_"
            ));
        }
        let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        Ok(Target { url, schema: schema.to_string() })
    }
}

/// `[a-z_][a-z0-9_]{0,62}`, and not PostgreSQL's reserved `pg_` prefix: safe to put
/// in SQL and in `search_path` without quoting rules.
fn valid_schema_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || *first == b'_')
                && rest.len() <= 62
                && rest.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                && !name.starts_with("pg_")
        }
        None => false,
    }
}

fn build_pool(target: &Target) -> Result<Pool, String> {
    let mut config = tokio_postgres::Config::from_str(&target.url)
        .map_err(|e| format!("invalid PostgreSQL URL: {}", describe(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("cairn");
    }
    // Startup options apply to the whole session, so every pooled connection (and
    // every reconnection) resolves table names in the store's schema.
    let search_path = format!("-c search_path={}", target.schema);
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {search_path}"),
        _ => search_path,
    };
    config.options(options);
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

/// Whether a server error is a condition that passes: the connection, the server or
/// its resources, or a conflict with a concurrent transaction.
fn transient_state(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: disk, memory, connections
        || code.starts_with("57P") // admin or crash shutdown, cannot connect now
        || code.starts_with("58") // system error: I/O
        || matches!(
            code,
            "40001" // serialization failure
                | "40P01" // deadlock detected
                | "40003" // statement completion unknown
                | "55P03" // lock not available
                | "57014" // query canceled (statement timeout)
                | "25006" // read-only transaction: a standby after a failover
        )
}

/// Classifies a client error: transient conditions are `Unavailable`, everything
/// else (unreadable values, unexpected failures) is `Corrupt`.
fn pg_error(what: &str, e: &tokio_postgres::Error) -> MetaError {
    let transient = match e.code() {
        Some(code) => transient_state(code),
        // No server error: the connection failed (I/O, closed, timed out) or a value
        // could not be converted.
        None => {
            e.is_closed()
                || e.source().is_some_and(|s| s.is::<std::io::Error>())
                || e.to_string().starts_with("timeout")
        }
    };
    if transient {
        MetaError::Unavailable(format!("{what}: {}", describe(e)))
    } else {
        MetaError::Corrupt(format!("{what}: {}", describe(e)))
    }
}

/// A client error with its cause: `tokio-postgres` alone says only "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), e.source()) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Timeout(_) => format!("no database connection within {POOL_WAIT:?}"),
        PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// Attaches what was being done to a client error and classifies it.
trait Context<T> {
    fn context(self, what: &str) -> Result<T, MetaError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: &str) -> Result<T, MetaError> {
        self.map_err(|e| pg_error(what, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_split_off_and_validated() {
        let t = Target::parse("postgres://root@h:5432/test?schema=cairn_a1&connect_timeout=3").unwrap();
        assert_eq!((t.url.as_str(), t.schema.as_str()), ("postgres://root@h:5432/test?connect_timeout=3", "cairn_a1"));
        let t = Target::parse("postgresql://root@h/test?schema=_x").unwrap();
        assert_eq!((t.url.as_str(), t.schema.as_str()), ("postgresql://root@h/test", "_x"));
        let t = Target::parse("postgres://h/test").unwrap();
        assert_eq!((t.url.as_str(), t.schema.as_str()), ("postgres://h/test", DEFAULT_SCHEMA));
        let longest = format!("a{}", "b".repeat(62));
        assert!(Target::parse(&format!("postgres://h/t?schema={longest}")).is_ok());
        for bad in ["", "Abc", "1abc", "a-b", "a;drop", "pg_x", "a%20b", "é", &format!("{longest}c")] {
            assert!(Target::parse(&format!("postgres://h/t?schema={bad}")).is_err(), "{bad:?}");
        }
        assert!(Target::parse("postgres://h/t?schema=a&schema=b").is_err());
        assert!(Target::parse("postgres://h/t?schema").is_err());
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db?schema=s"), "postgres://u:***@h:5432/db?schema=s");
        assert_eq!(redact_url("postgres://u@h/db?password=secret&x=1"), "postgres://u@h/db?password=***&x=1");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn connection_and_conflict_states_are_transient() {
        for state in [
            SqlState::CONNECTION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::DISK_FULL,
            SqlState::QUERY_CANCELED,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ] {
            assert!(transient_state(&state), "{state:?}");
        }
        for state in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::UNDEFINED_TABLE,
            SqlState::SYNTAX_ERROR,
            SqlState::DATA_CORRUPTED,
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
        ] {
            assert!(!transient_state(&state), "{state:?}");
        }
    }
}
