//! The SQL catalogue: every statement the SQLite and the PostgreSQL stores run
//! alike, written once, and the schema both stores keep, described once. Each
//! store keeps next to its executor only what truly differs: its migrations (the
//! types), its locks, its clock and the statements built on them.
//!
//! A statement is written once in PostgreSQL's form, with `$N` placeholders, by
//! [`sql!`]; the SQLite form (`?N`, the same numbers) is made from it at compile
//! time by [`to_sqlite`], which rewrites every `$` before a digit and nothing else.
//! Both forms have the same length, so the rewrite is a byte array in a `const`,
//! checked to be UTF-8 at compile time too: a statement costs nothing at run time
//! and cannot differ between the stores but for its placeholders.
//!
//! The catalogue is split by domain as the stores are (`versions`, `content`,
//! `cluster`, `uploads`, `s3`), so `sql/content.rs`, `sqlite/content.rs` and
//! `postgres/content.rs` read side by side.
//!
//! # Schema
//!
//! Both stores keep the same tables, columns and indexes; the column types are
//! each database's own (SQLite: `TEXT`, `INTEGER`, `BLOB`, `STRICT` tables;
//! PostgreSQL: `TEXT COLLATE "C"` keys, `BIGINT`, `BYTEA`, `BOOLEAN`). Names
//! compare byte-wise in both (SQLite's `BINARY` collation, PostgreSQL's `"C"`),
//! which is also the order of Rust's `str`.
//!
//! ```sql
//! content(hash TEXT PRIMARY KEY,             -- 64 lowercase hex digits
//!         size INTEGER,                      -- bytes
//!         policy TEXT,                       -- "K+M", e.g. "4+2"
//!         placement TEXT,                    -- JSON object {"0":"host:port",...}
//!         state TEXT,                        -- 'live' | 'doomed' | 'deleting' (schema 2)
//!         doomed_since_ms INTEGER NULL,      -- when found unreferenced (doomed only)
//!         encoding TEXT,                     -- how the bytes are stored (schema 3)
//!         stored_size INTEGER NULL)          -- the stored stream's length, NULL: size
//!   -- indexed by (state, hash) where state <> 'live': the collector's scans
//! versions(bucket TEXT, name TEXT, version INTEGER,
//!          hash TEXT NULL REFERENCES content, -- NULL = tombstone
//!          size INTEGER,                     -- content size, 0 for a tombstone
//!          created_ms INTEGER,               -- ms since the Unix epoch
//!          attrs TEXT NULL,                  -- JSON of ObjectAttrs; NULL = none (schema 4)
//!          PRIMARY KEY (bucket, name, version))  -- indexed by hash
//! placements(server TEXT, hash TEXT REFERENCES content, shard INTEGER,
//!            PRIMARY KEY (server, hash, shard))  -- the placement index (schema 2)
//! server_sightings(server TEXT PRIMARY KEY, last_seen_ms INTEGER)
//! leases(name TEXT PRIMARY KEY, holder TEXT, expires_ms INTEGER)
//! worker_cursors(name TEXT PRIMARY KEY, value TEXT)
//! -- schema 3 (tus):
//! uploads(id TEXT PRIMARY KEY, bucket, name, length NULL, upload_offset, metadata,
//!         expected NULL, hasher BLOB, created_ms, expires_ms, finished_version NULL)
//!   -- indexed by expires_ms
//! upload_parts(id REFERENCES uploads, part_offset, size, hash REFERENCES content,
//!              PRIMARY KEY (id, part_offset))  -- indexed by hash
//! -- schema 4 (S3):
//! buckets(name TEXT PRIMARY KEY, created_ms INTEGER)  -- 'default' + every bucket with versions
//! multipart_uploads(id TEXT PRIMARY KEY, bucket TEXT REFERENCES buckets, name TEXT,
//!                   attrs TEXT, created_ms INTEGER)  -- indexed by (bucket, name, id), created_ms
//! multipart_parts(upload_id TEXT REFERENCES multipart_uploads, part_number INTEGER,
//!                 hash TEXT REFERENCES content, size INTEGER, etag TEXT, created_ms INTEGER,
//!                 PRIMARY KEY (upload_id, part_number))  -- indexed by hash
//! access_keys(access_key TEXT PRIMARY KEY, secret TEXT, buckets TEXT,  -- JSON array
//!             read_only, created_ms INTEGER)
//! ```
//!
//! What each store adds or does its own way is in its docs ([`sqlite`](super::sqlite),
//! [`postgres`](super::postgres)): PostgreSQL keeps each name's newest version in
//! `heads` and its schema version in `schema_version`, stores a worker checkpoint
//! as `BYTEA` (it may hold NUL) and stamps `created_ms` with the database clock;
//! SQLite keeps its schema version in `PRAGMA user_version`.
//!
//! `placements` repeats each content row's placement JSON as one row per shard,
//! so that [`contents_on`](super::ClusterStore::contents_on) is a range scan of its
//! primary key; `put_version` and `set_placement` rewrite a hash's rows and
//! `finish_delete` removes them, each in the same transaction as the placement
//! or row itself. A list prefix becomes the range `[prefix, successor(prefix))` on
//! a primary key, never a `LIKE` pattern, so `%` and `_` need no escaping.
//!
//! Content is one row per hash. Writing a hash that is already recorded replaces
//! its policy and placement together (the new write's shards are where its
//! placement says, under its policy; a placement means nothing without its
//! policy); the same hash with another size is refused as
//! [`MetaError::Corrupt`](super::MetaError::Corrupt).

mod cluster;
mod content;
mod s3;
mod steps;
mod uploads;
mod versions;

// The statements the SQLite store's query-plan tests look at.
#[cfg(test)]
pub(crate) use cluster::CONTENTS_ON;
#[cfg(test)]
pub(crate) use content::{DELETING_ROWS, DOOM, DOOMED_BEFORE, REFERENCED};
#[cfg(test)]
pub(crate) use s3::{BUCKET_HAS_VERSION, LOCK_BUCKET_MULTIPART, MULTIPART_PARTS, UPLOAD_LIST};
#[cfg(test)]
pub(crate) use steps::STALE_MULTIPART;
#[cfg(test)]
pub(crate) use versions::{LATEST, LIST, NAMES_AFTER, VERSION, VERSIONS, VERSION_LIST};

use super::row::{ListStatements, PairStatements};

/// The metadata store, written once over an [`Executor`](super::exec::Executor): every store trait
/// ([`MetaStore`](super::MetaStore) and its parts) is implemented for it in this
/// catalogue's domain files, next to the statements it runs. [`SqliteStore`](super::sqlite::SqliteStore)
/// and [`PostgresStore`](super::postgres::PostgresStore) are this over their executors.
pub struct SqlStore<E> {
    pub(crate) exec: E,
}

impl<E> SqlStore<E> {
    /// The store over `exec`.
    pub(crate) fn new(exec: E) -> SqlStore<E> {
        SqlStore { exec }
    }
}

impl<E: std::fmt::Debug> std::fmt::Debug for SqlStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.exec.fmt(f)
    }
}

pub(crate) use super::exec::{Dialect, Sql};

/// The four statements of a listing ([`ListStatements`]) in both dialects.
pub(crate) type Lists = ListStatements<Sql>;

impl Lists {
    /// The listing's statements in `dialect`.
    #[cfg(test)]
    pub(crate) const fn of(self, dialect: Dialect) -> ListStatements {
        ListStatements {
            from: self.from.of(dialect),
            from_upto: self.from_upto.of(dialect),
            after: self.after.of(dialect),
            after_upto: self.after_upto.of(dialect),
        }
    }
}

/// The two statements of a paged listing ([`PairStatements`]) in both dialects.
pub(crate) type Pair = PairStatements<Sql>;

impl Pair {
    /// The listing's statements in `dialect`.
    #[cfg(test)]
    pub(crate) const fn of(self, dialect: Dialect) -> PairStatements {
        PairStatements { open: self.open.of(dialect), upto: self.upto.of(dialect) }
    }
}

/// `postgres` with every placeholder `$N` written `?N`, byte for byte (`N` is
/// the output's length, which is the input's). A `$` before anything but a digit
/// is left alone; the catalogue has none (no dollar quoting, no `$` in a string).
pub(crate) const fn to_sqlite<const N: usize>(postgres: &str) -> [u8; N] {
    let bytes = postgres.as_bytes();
    assert!(bytes.len() == N, "to_sqlite: the output length must be the statement's");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        let placeholder = bytes[i] == b'$' && i + 1 < N && bytes[i + 1].is_ascii_digit();
        out[i] = if placeholder { b'?' } else { bytes[i] };
        i += 1;
    }
    out
}

/// `a` then `b`, byte for byte (`N` is the sum of their lengths).
pub(crate) const fn join<const N: usize>(a: &str, b: &str) -> [u8; N] {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    assert!(a.len() + b.len() == N, "join: the output length must be the sum of the inputs'");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}

/// Defines a [`Sql`] constant from its PostgreSQL text (any constant `&str`
/// expression: a literal, `concat!`, a column macro), with its SQLite text made at
/// compile time by [`to_sqlite`]. A statement that PostgreSQL must run with a row
/// lock (`FOR UPDATE`, `FOR SHARE`, `FOR UPDATE SKIP LOCKED`) names it after
/// `postgres:`: the lock is appended to PostgreSQL's text only, because SQLite's
/// write transaction already holds its one write lock.
macro_rules! sql {
    ($($(#[$attr:meta])* $name:ident = $text:expr $(, postgres: $lock:literal)?;)+) => {
        $(
            $(#[$attr])*
            pub(crate) const $name: $crate::meta::sql::Sql = {
                const BASE: &str = $text;
                const LOCK: &str = concat!("" $(, " ", $lock)?);
                const SQLITE: &[u8; BASE.len()] = &$crate::meta::sql::to_sqlite(BASE);
                const POSTGRES: &[u8; BASE.len() + LOCK.len()] = &$crate::meta::sql::join(BASE, LOCK);
                match (std::str::from_utf8(SQLITE), std::str::from_utf8(POSTGRES)) {
                    (Ok(sqlite), Ok(postgres)) => $crate::meta::sql::Sql { sqlite, postgres },
                    // Unreachable: only ASCII bytes are rewritten, to ASCII, and
                    // whole strings joined.
                    _ => panic!("a statement's text is not UTF-8"),
                }
            };
        )+

        /// Every statement defined here, by name, with PostgreSQL's lock, for the
        /// catalogue's tests.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, $crate::meta::sql::Sql, &str)] =
            &[$((stringify!($name), $name, concat!("" $(, " ", $lock)?))),+];
    };
}
pub(crate) use sql;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_and_nothing_else() {
        const PG: &str = "SELECT a FROM t WHERE x = $1 AND y > $12 AND z = '$' || $3 LIMIT $4";
        let sqlite: [u8; PG.len()] = to_sqlite(PG);
        assert_eq!(
            std::str::from_utf8(&sqlite).unwrap(),
            "SELECT a FROM t WHERE x = ?1 AND y > ?12 AND z = '$' || ?3 LIMIT ?4"
        );
        sql! {
            PROBE = concat!("DELETE FROM t WHERE a = $1", " AND b = $2");
            LOCKED = "SELECT a FROM t WHERE x = $1", postgres: "FOR UPDATE";
        }
        assert_eq!(PROBE.postgres, "DELETE FROM t WHERE a = $1 AND b = $2");
        assert_eq!(PROBE.sqlite, "DELETE FROM t WHERE a = ?1 AND b = ?2");
        assert_eq!(PROBE.of(Dialect::Sqlite), PROBE.sqlite);
        assert_eq!(PROBE.of(Dialect::Postgres), PROBE.postgres);
        assert_eq!(LOCKED.sqlite, "SELECT a FROM t WHERE x = ?1");
        assert_eq!(LOCKED.postgres, "SELECT a FROM t WHERE x = $1 FOR UPDATE");
        assert_eq!(ALL.len(), 2);
        assert_eq!(ALL[1].2, " FOR UPDATE");
    }

    /// No `$` survives in a SQLite statement and no `?N` is in a PostgreSQL one;
    /// the two differ only where the placeholders are, and by PostgreSQL's lock.
    #[test]
    fn every_statement_differs_only_by_its_placeholders() {
        let all = [cluster::ALL, content::ALL, s3::ALL, steps::ALL, uploads::ALL, versions::ALL].concat();
        assert!(all.len() >= 50, "{} statements", all.len());
        for (name, sql, lock) in all {
            assert!(!sql.sqlite.contains('$'), "{name}: {}", sql.sqlite);
            let pg = sql.postgres.as_bytes();
            let question_digit = pg.windows(2).any(|w| w[0] == b'?' && w[1].is_ascii_digit());
            assert!(!question_digit, "{name}: {}", sql.postgres);
            assert_eq!(format!("{}{lock}", sql.sqlite.replace('?', "$")), sql.postgres, "{name}");
        }
    }
}
