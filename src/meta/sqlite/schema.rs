//! The SQLite store's schema: its migrations, applied when a store is opened
//! (see "Migrations" in [the store's docs](super)).

use rusqlite::{Connection, TransactionBehavior};

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
    // 2: the content lifecycle (GC), the placement index (backfilled from the
    // placement JSON; an unreadable placement is left out, and reported when read),
    // server sightings, leases and worker checkpoints.
    "ALTER TABLE content ADD COLUMN state TEXT NOT NULL DEFAULT 'live'
         CHECK (state IN ('live', 'doomed', 'deleting'));
     ALTER TABLE content ADD COLUMN doomed_since_ms INTEGER NULL;
     CREATE INDEX content_by_state ON content (state, hash) WHERE state <> 'live';
     CREATE TABLE placements (
         server TEXT    NOT NULL,
         hash   TEXT    NOT NULL REFERENCES content (hash),
         shard  INTEGER NOT NULL,
         PRIMARY KEY (server, hash, shard)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX placements_by_hash ON placements (hash);
     INSERT OR IGNORE INTO placements (server, hash, shard)
         SELECT j.value, c.hash, CAST(j.key AS INTEGER)
         FROM content c,
              json_each(CASE WHEN json_valid(c.placement) AND json_type(c.placement) = 'object'
                             THEN c.placement ELSE '{}' END) j
         WHERE j.type = 'text';
     CREATE TABLE server_sightings (
         server       TEXT    NOT NULL PRIMARY KEY,
         last_seen_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE leases (
         name       TEXT    NOT NULL PRIMARY KEY,
         holder     TEXT    NOT NULL,
         expires_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE worker_cursors (
         name  TEXT NOT NULL PRIMARY KEY,
         value TEXT NOT NULL
     ) STRICT;",
    // 3: transparent compression (how the content's bytes are stored, and how many
    // bytes that is; NULL: as many as `size`), and resumable uploads (tus): each
    // upload, and the parts its bytes were stored as so far, in offset order. A
    // part points at content, so the collector leaves it alone while the upload
    // lives.
    "ALTER TABLE content ADD COLUMN encoding TEXT NOT NULL DEFAULT 'identity';
     ALTER TABLE content ADD COLUMN stored_size INTEGER NULL;
     CREATE TABLE uploads (
         id               TEXT    NOT NULL PRIMARY KEY,
         bucket           TEXT    NOT NULL,
         name             TEXT    NOT NULL,
         length           INTEGER NULL,
         upload_offset    INTEGER NOT NULL DEFAULT 0,
         metadata         TEXT    NOT NULL,
         expected         TEXT    NULL,
         hasher           BLOB    NOT NULL,
         created_ms       INTEGER NOT NULL,
         expires_ms       INTEGER NOT NULL,
         finished_version INTEGER NULL
     ) STRICT;
     CREATE INDEX uploads_by_expiry ON uploads (expires_ms);
     CREATE TABLE upload_parts (
         id          TEXT    NOT NULL REFERENCES uploads (id),
         part_offset INTEGER NOT NULL,
         size        INTEGER NOT NULL,
         hash        TEXT    NOT NULL REFERENCES content (hash),
         PRIMARY KEY (id, part_offset)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX upload_parts_by_hash ON upload_parts (hash);",
    // 4: S3. Buckets (`default`, the native API's, and one for every bucket that
    // already has versions, so existing data stays reachable); a version's S3
    // attributes (JSON, NULL for none); multipart uploads and their parts (a part
    // points at content, so the collector leaves it alone while the upload lives);
    // access keys.
    "CREATE TABLE buckets (
         name       TEXT    NOT NULL PRIMARY KEY,
         created_ms INTEGER NOT NULL
     ) STRICT;
     INSERT INTO buckets (name, created_ms)
         SELECT b.name, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
         FROM (SELECT 'default' AS name UNION SELECT bucket FROM versions) b;
     ALTER TABLE versions ADD COLUMN attrs TEXT NULL;
     CREATE TABLE multipart_uploads (
         id         TEXT    NOT NULL PRIMARY KEY,
         bucket     TEXT    NOT NULL REFERENCES buckets (name),
         name       TEXT    NOT NULL,
         attrs      TEXT    NOT NULL,
         created_ms INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX multipart_uploads_by_name ON multipart_uploads (bucket, name, id);
     CREATE INDEX multipart_uploads_by_age ON multipart_uploads (created_ms);
     CREATE TABLE multipart_parts (
         upload_id   TEXT    NOT NULL REFERENCES multipart_uploads (id),
         part_number INTEGER NOT NULL,
         hash        TEXT    NOT NULL REFERENCES content (hash),
         size        INTEGER NOT NULL,
         etag        TEXT    NOT NULL,
         created_ms  INTEGER NOT NULL,
         PRIMARY KEY (upload_id, part_number)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX multipart_parts_by_hash ON multipart_parts (hash);
     CREATE TABLE access_keys (
         access_key TEXT    NOT NULL PRIMARY KEY,
         secret     TEXT    NOT NULL,
         buckets    TEXT    NOT NULL,
         read_only  INTEGER NOT NULL CHECK (read_only IN (0, 1)),
         created_ms INTEGER NOT NULL
     ) STRICT;",
];

/// The schema version this binary writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, or refuses a newer one.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::row::{ListStatements, PairStatements};
    use crate::meta::sql::{self, Dialect};

    const LIST_STATEMENTS: ListStatements = sql::LIST.of(Dialect::Sqlite);
    const VERSION_LIST_STATEMENTS: PairStatements = sql::VERSION_LIST.of(Dialect::Sqlite);
    const UPLOAD_LIST_STATEMENTS: ListStatements = sql::UPLOAD_LIST.of(Dialect::Sqlite);
    const SQL_NAMES_AFTER: &str = sql::NAMES_AFTER.sqlite;
    const SQL_DOOM: &str = sql::DOOM.sqlite;
    const SQL_STALE_MULTIPART: &str = sql::STALE_MULTIPART.sqlite;
    const SQL_BUCKET_MULTIPART: &str = sql::LOCK_BUCKET_MULTIPART.sqlite;
    use rusqlite::types::ToSql;

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
            (sql::LATEST.sqlite, 2),
            (sql::VERSION.sqlite, 3),
            (sql::VERSIONS.sqlite, 4),
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

    /// The collector's and the repair worker's pages are index range scans: the
    /// placement index by server, the partial state index by state.
    #[test]
    fn gc_and_placement_pages_use_their_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        let plan = |sql: &str, params: &[&dyn ToSql]| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(params, |row| row.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
        };
        let on = plan(sql::CONTENTS_ON.sqlite, &[&"s", &"", &10]);
        assert!(on.contains("SEARCH placements USING PRIMARY KEY (server=? AND hash>?)"), "{on}");
        assert!(on.contains("SEARCH c USING INDEX sqlite_autoindex_content_1 (hash=?)"), "{on}");
        for (sql, params) in [
            (sql::DOOMED_BEFORE.sqlite, vec![&0 as &dyn ToSql, &"", &10]),
            (sql::DELETING_ROWS.sqlite, vec![&"" as &dyn ToSql, &10]),
        ] {
            let plan = plan(sql, &params);
            assert!(plan.contains("USING INDEX content_by_state (state=? AND hash>?)"), "{sql}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
        }
        let names = plan(SQL_NAMES_AFTER, &[&"b", &"n", &10]);
        assert!(names.contains("SEARCH versions USING PRIMARY KEY"), "{names}");
        assert!(!names.contains("TEMP B-TREE"), "{names}");
    }

    /// The S3 listings are range scans of their indexes (versions sorted newest
    /// first a name at a time, never the whole range), and the collector's and
    /// the stale-upload worker's lookups of multipart uploads use indexes.
    #[test]
    fn s3_queries_use_their_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        let plan = |sql: &str, params: &[&dyn ToSql]| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(params, |row| row.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
        };
        for (sql, params) in [
            (VERSION_LIST_STATEMENTS.open, vec![&"b" as &dyn ToSql, &"n", &5, &10]),
            (VERSION_LIST_STATEMENTS.upto, vec![&"b" as &dyn ToSql, &"n", &5, &"o", &10]),
        ] {
            let plan = plan(sql, &params);
            assert!(plan.contains("SEARCH v USING PRIMARY KEY (bucket=? AND name>?"), "{sql}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{sql}\n{plan}");
        }
        for (sql, params) in [
            (UPLOAD_LIST_STATEMENTS.from, vec![&"b" as &dyn ToSql, &"n", &"", &10]),
            (UPLOAD_LIST_STATEMENTS.from_upto, vec![&"b" as &dyn ToSql, &"n", &"", &"o", &10]),
            (UPLOAD_LIST_STATEMENTS.after, vec![&"b" as &dyn ToSql, &"n", &"i", &10]),
            (UPLOAD_LIST_STATEMENTS.after_upto, vec![&"b" as &dyn ToSql, &"n", &"i", &"o", &10]),
        ] {
            let plan = plan(sql, &params);
            assert!(plan.contains("USING INDEX multipart_uploads_by_name (bucket=? AND (name,id)>"), "{sql}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
        }
        let parts = plan(sql::MULTIPART_PARTS.sqlite, &[&"u", &0, &10]);
        assert!(parts.contains("SEARCH multipart_parts USING PRIMARY KEY (upload_id=? AND part_number>?)"), "{parts}");
        assert!(!parts.contains("TEMP B-TREE"), "{parts}");
        let stale = plan(SQL_STALE_MULTIPART, &[&0, &10]);
        assert!(stale.contains("multipart_uploads_by_age (created_ms<?)"), "{stale}");
        for (sql, params) in
            [(sql::REFERENCED.sqlite, vec![&"h" as &dyn ToSql]), (SQL_DOOM, vec![&0 as &dyn ToSql, &10])]
        {
            let plan = plan(sql, &params);
            assert!(plan.contains("multipart_parts_by_hash (hash=?)"), "{sql}\n{plan}");
        }
        let has_version = plan(sql::BUCKET_HAS_VERSION.sqlite, &[&"b"]);
        assert!(has_version.contains("SEARCH versions USING PRIMARY KEY (bucket=?)"), "{has_version}");
        let multipart = plan(SQL_BUCKET_MULTIPART, &[&"b"]);
        assert!(multipart.contains("multipart_uploads_by_name (bucket=?)"), "{multipart}");
    }
}
