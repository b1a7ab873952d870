//! The seam between the metadata store's one implementation and a database: an
//! [`Executor`] runs closures on a [`Conn`], which runs catalogue statements
//! ([`Sql`]) with [`Value`] parameters and answers [`Row`]s of [`Cell`]s.
//!
//! The store traits are implemented once, in the catalogue's domains (`sql/`),
//! for [`SqlStore`](super::sql::SqlStore) over any executor; the SQLite and the
//! PostgreSQL executors keep only what truly differs: how a connection is found,
//! how a write transaction takes its lock, how writes are grouped, and how their
//! errors are classified.
//!
//! A closure gets `&mut dyn Conn` and answers a boxed future borrowing it
//! ([`Answer`]); everything it uses is owned (`'static`), because the SQLite executor
//! runs it on tokio's blocking pool. There, every `Conn` call completes at once
//! (rusqlite is synchronous), so the future is polled once to its end; the
//! PostgreSQL executor awaits it on the caller's task.

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use std::future::Future;

use super::MetaError;

/// What a job answers: a future borrowing the connection it was given.
pub(crate) type Answer<'c, T> = BoxFuture<'c, Result<T, MetaError>>;

/// A database the store's one implementation runs on.
pub(crate) trait Executor: Send + Sync + 'static {
    /// Runs `f` on a connection that reads, outside any explicit transaction.
    fn run<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static;

    /// Runs `f` on the connection that writes, outside any explicit transaction:
    /// writes of one statement (each commits on its own).
    fn write<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static;

    /// Runs `f` in one write transaction, committed when `f` succeeds and rolled
    /// back when it fails (or the caller goes away). SQLite takes its write lock
    /// first (`BEGIN IMMEDIATE`), so what `f` reads stays true until the commit, in
    /// any process; PostgreSQL runs READ COMMITTED, and `f` takes the row locks its
    /// statements name.
    fn transaction<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static;

    /// Like [`transaction`](Self::transaction), but the transaction may be shared
    /// with other grouped writes, each in a savepoint of its own (one that fails is
    /// rolled back alone) and all answered once the shared commit is durable: the
    /// SQLite executor's group commit, one fsync for a batch of PUTs. PostgreSQL
    /// runs each on its own.
    fn grouped<T, F>(&self, what: &'static str, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> Answer<'c, T> + Send + 'static;
}

/// A connection, or a transaction on one, that runs catalogue statements.
#[async_trait]
pub(crate) trait Conn: Send {
    /// The dialect of this connection's database.
    fn dialect(&self) -> Dialect;

    /// The rows `sql` answers.
    async fn query(&mut self, what: &'static str, sql: Sql, params: &[Value]) -> Result<Vec<Row>, MetaError>;

    /// Runs `sql`; answers how many rows it changed.
    async fn execute(&mut self, what: &'static str, sql: Sql, params: &[Value]) -> Result<u64, MetaError>;
}

impl dyn Conn + '_ {
    /// The first row `sql` answers, if any.
    pub(crate) async fn query_opt(
        &mut self,
        what: &'static str,
        sql: Sql,
        params: &[Value],
    ) -> Result<Option<Row>, MetaError> {
        Ok(self.query(what, sql, params).await?.into_iter().next())
    }

    /// The one row `sql` answers; none is [`MetaError::Corrupt`].
    pub(crate) async fn query_one(&mut self, what: &'static str, sql: Sql, params: &[Value]) -> Result<Row, MetaError> {
        self.query_opt(what, sql, params).await?.ok_or_else(|| MetaError::Corrupt(format!("{what}: no row answered")))
    }
}

/// One statement in both dialects, made by the catalogue's `sql!` (or
/// [`Sql::each`] where the texts differ by more than their placeholders).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sql {
    /// With `?N` placeholders.
    pub(crate) sqlite: &'static str,
    /// With `$N` placeholders, as written.
    pub(crate) postgres: &'static str,
}

/// Which store a statement is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?N` placeholders.
    Sqlite,
    /// `$N` placeholders.
    Postgres,
}

impl Sql {
    /// A statement whose texts differ by more than their placeholders (a lock, the
    /// clock, a function only one database has): both written out, side by side.
    pub(crate) const fn each(sqlite: &'static str, postgres: &'static str) -> Sql {
        Sql { sqlite, postgres }
    }

    /// A statement only PostgreSQL runs (on its `heads`, say); SQLite refuses its
    /// empty text, should it ever be asked to run it.
    pub(crate) const fn postgres_only(postgres: &'static str) -> Sql {
        Sql { sqlite: "", postgres }
    }

    /// A statement only SQLite runs; PostgreSQL refuses its empty text, should it
    /// ever be asked to run it.
    pub(crate) const fn sqlite_only(sqlite: &'static str) -> Sql {
        Sql { sqlite, postgres: "" }
    }

    /// The statement in `dialect`.
    #[cfg(test)]
    pub(crate) const fn of(self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// A statement parameter. Each kind carries its own `NULL`, so that PostgreSQL
/// learns the parameter's type even when it is null.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// `INTEGER` / `BIGINT`.
    Int(Option<i64>),
    /// `TEXT`.
    Text(Option<String>),
    /// `BLOB` / `BYTEA`.
    Bytes(Option<Vec<u8>>),
    /// SQLite `INTEGER` 0 or 1 / PostgreSQL `BOOLEAN`.
    Bool(bool),
    /// A PostgreSQL `TEXT[]` (SQLite has no arrays and refuses one).
    Texts(Vec<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_string()))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(Some(v.clone()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        Value::Text(v.map(str::to_string))
    }
}

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Value {
        Value::Text(v.clone())
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(Some(v.to_vec()))
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(Some(v))
    }
}

impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Value {
        Value::Texts(v)
    }
}

/// The parameters of a statement, each converted into a [`Value`]:
/// `params![bucket, name, limit]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::meta::exec::Value::from($value)),*]
    };
}
pub(crate) use params;

/// A value in an answered row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    /// `NULL`.
    Null,
    /// An integer of any width.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A PostgreSQL `BOOLEAN` (SQLite answers 0 or 1, an [`Int`](Cell::Int)).
    Bool(bool),
}

/// A row of cells, read by position with [`Row::get`].
#[derive(Debug)]
pub(crate) struct Row {
    cells: Vec<Cell>,
    /// The statement's `what`, for errors.
    what: &'static str,
}

impl Row {
    /// A row of `cells` answered for `what`.
    pub(crate) fn new(what: &'static str, cells: Vec<Cell>) -> Row {
        Row { cells, what }
    }

    /// Column `i` as a `T`; a missing column or a value of another type is
    /// [`MetaError::Corrupt`].
    pub(crate) fn get<T: FromCell>(&self, i: usize) -> Result<T, MetaError> {
        let Some(cell) = self.cells.get(i) else {
            return Err(MetaError::Corrupt(format!("{}: the answer has no column {i}", self.what)));
        };
        T::from_cell(cell).ok_or_else(|| {
            MetaError::Corrupt(format!("{}: column {i} holds {cell:?}, not {}", self.what, std::any::type_name::<T>()))
        })
    }
}

/// A Rust type a [`Cell`] converts into.
pub(crate) trait FromCell: Sized {
    /// The value of `cell`, or `None` when it holds another type.
    fn from_cell(cell: &Cell) -> Option<Self>;
}

impl FromCell for i64 {
    fn from_cell(cell: &Cell) -> Option<i64> {
        match cell {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromCell for bool {
    fn from_cell(cell: &Cell) -> Option<bool> {
        match cell {
            Cell::Bool(v) => Some(*v),
            Cell::Int(0) => Some(false),
            Cell::Int(1) => Some(true),
            _ => None,
        }
    }
}

impl FromCell for String {
    fn from_cell(cell: &Cell) -> Option<String> {
        match cell {
            Cell::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromCell for Vec<u8> {
    fn from_cell(cell: &Cell) -> Option<Vec<u8>> {
        match cell {
            Cell::Bytes(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: &Cell) -> Option<Option<T>> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_convert_to_their_own_types_only() {
        let row =
            Row::new("probe", vec![Cell::Int(7), Cell::Null, Cell::Text("a".into()), Cell::Int(1), Cell::Bool(false)]);
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<Option<i64>>(0).unwrap(), Some(7));
        assert_eq!(row.get::<Option<String>>(1).unwrap(), None);
        assert_eq!(row.get::<String>(2).unwrap(), "a");
        assert!(row.get::<bool>(3).unwrap());
        assert!(!row.get::<bool>(4).unwrap());
        for e in [row.get::<String>(0).unwrap_err(), row.get::<i64>(1).unwrap_err(), row.get::<i64>(9).unwrap_err()] {
            assert!(matches!(&e, MetaError::Corrupt(m) if m.starts_with("probe: ")), "{e}");
        }
    }

    #[test]
    fn parameters_keep_their_type_when_null() {
        let p: &[Value] = params![1i64, "b", None::<i64>, None::<&str>, true];
        assert_eq!(p[2], Value::Int(None));
        assert_eq!(p[3], Value::Text(None));
        assert_eq!(p[4], Value::Bool(true));
    }
}
