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
//!         placement TEXT,             -- JSON object {"0":"host:port",...}
//!         state TEXT,                 -- 'live' | 'doomed' | 'deleting' (schema 2)
//!         doomed_since_ms INTEGER NULL)  -- when found unreferenced (doomed only)
//! versions(bucket TEXT, name TEXT, version INTEGER,
//!          hash TEXT NULL,            -- NULL = tombstone
//!          size INTEGER,              -- content size, 0 for a tombstone
//!          created_ms INTEGER,        -- ms since the Unix epoch
//!          PRIMARY KEY (bucket, name, version))  -- clustered (WITHOUT ROWID)
//! placements(server TEXT, hash TEXT REFERENCES content, shard INTEGER,
//!            PRIMARY KEY (server, hash, shard))  -- the placement index (schema 2)
//! server_sightings(server TEXT PRIMARY KEY, last_seen_ms INTEGER)
//! leases(name TEXT PRIMARY KEY, holder TEXT, expires_ms INTEGER)
//! worker_cursors(name TEXT PRIMARY KEY, value TEXT)
//! -- schema 3: content.encoding, content.stored_size, uploads, upload_parts (tus)
//! -- schema 4 (S3):
//! buckets(name TEXT PRIMARY KEY, created_ms INTEGER)  -- 'default' + every bucket with versions
//! versions.attrs TEXT NULL            -- JSON of ObjectAttrs; NULL = none (put_version)
//! multipart_uploads(id TEXT PRIMARY KEY, bucket TEXT REFERENCES buckets, name TEXT,
//!                   attrs TEXT, created_ms INTEGER)  -- indexed by (bucket, name, id), created_ms
//! multipart_parts(upload_id TEXT REFERENCES multipart_uploads, part_number INTEGER,
//!                 hash TEXT REFERENCES content, size INTEGER, etag TEXT, created_ms INTEGER,
//!                 PRIMARY KEY (upload_id, part_number))  -- indexed by hash
//! access_keys(access_key TEXT PRIMARY KEY, secret TEXT, buckets TEXT,  -- JSON array
//!             read_only INTEGER, created_ms INTEGER)
//! ```
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
//! so that [`contents_on`](ClusterStore::contents_on) is a range scan of its primary
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
//! [`begin_delete`](ContentStore::begin_delete) reads the state and whether a version
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
//! once it is durable. [`put_version`](VersionStore::put_version) runs in a
//! `BEGIN IMMEDIATE` transaction (take the write lock first, then read the highest
//! version, insert the next one and upsert the content row), so writers in
//! different processes get consecutive versions with no gap and no duplicate, and a
//! version is visible to every process as soon as the call returns.
//! [`delete`](VersionStore::delete) reads the newest version and adds the tombstone in
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
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use super::row::{
    attrs_json, begin_delete_step, count, count_states, delete_refused, hash_after, keep_offset, key_buckets_json,
    key_columns, multipart_columns, multipart_part_columns, next_version, parse_part, parse_state, placement_json,
    prune_step, select_versions, sql_limit, to_sql_int, ttl_ms, upload_columns, upload_int, BeginDelete, ContentRow,
    ListRange, ListStatements, PairStatements, Prune, RawAccessKey, RawContent, RawMultipart, RawMultipartPart,
    RawUpload, RawVersion, UploadListRange, VersionListRange, VersionsPage, DELETING, LIVE,
};
use super::{
    AccessKey, AppendOutcome, BucketDeleteOutcome, BucketRecord, BucketStore, ClusterStore, CompleteOutcome,
    ContentCounts, ContentRecord, ContentState, ContentStore, DeleteOutcome, FinishOutcome, KeyStore, MetaError,
    MetaStore, MultipartPart, MultipartRecord, MultipartStore, ObjectAttrs, Precondition, UploadAppend, UploadPart,
    UploadRecord, UploadStore, VersionRecord, VersionStore,
};
use crate::clock::now_ms;
use crate::content::{ContentHash, Placement, Policy};

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

/// How long a connection waits for another connection's lock before giving up with
/// [`MetaError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections per store.
const READERS: usize = 4;

/// Prepared statements cached per connection (more than the store uses: about 80).
const STATEMENT_CACHE: usize = 128;

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

const SQL_CONTENT: &str = "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE hash = ?1";
/// Records content and makes it live; returns no row when it is deleting.
const SQL_UPSERT_CONTENT: &str = "INSERT INTO content (hash, size, policy, placement, encoding, stored_size) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (hash) DO UPDATE SET policy = excluded.policy, placement = excluded.placement, \
     encoding = excluded.encoding, stored_size = excluded.stored_size, \
     state = 'live', doomed_since_ms = NULL WHERE content.state <> 'deleting' \
     RETURNING size";
/// The placement index of one hash: cleared, then filled from its placement JSON.
const SQL_INDEX_CLEAR: &str = "DELETE FROM placements WHERE hash = ?1";
const SQL_INDEX_FILL: &str = "INSERT OR IGNORE INTO placements (server, hash, shard) \
     SELECT value, ?1, CAST(key AS INTEGER) FROM json_each(?2) WHERE type = 'text'";
const SQL_STATE: &str = "SELECT state, doomed_since_ms FROM content WHERE hash = ?1";
const SQL_REVIVE: &str =
    "UPDATE content SET state = 'live', doomed_since_ms = NULL WHERE hash = ?1 AND state = 'doomed'";
const SQL_DOOM: &str = "UPDATE content SET state = 'doomed', doomed_since_ms = ?1 WHERE hash IN \
     (SELECT c.hash FROM content c WHERE c.state = 'live' \
      AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM upload_parts p WHERE p.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM multipart_parts m WHERE m.hash = c.hash) LIMIT ?2)";
/// (`state <> 'live'`, implied by the state asked for, lets the planner use the
/// partial index `content_by_state`.)
const SQL_DOOMED_BEFORE: &str = "SELECT hash, size, policy, placement, encoding, stored_size FROM content \
     WHERE state = 'doomed' AND state <> 'live' AND doomed_since_ms <= ?1 AND hash > ?2 ORDER BY hash LIMIT ?3";
/// A version, an upload's part or a multipart upload's part points at it.
const SQL_REFERENCED: &str = "SELECT EXISTS (SELECT 1 FROM versions WHERE hash = ?1) \
     OR EXISTS (SELECT 1 FROM upload_parts WHERE hash = ?1) \
     OR EXISTS (SELECT 1 FROM multipart_parts WHERE hash = ?1)";
const SQL_SET_STATE: &str = "UPDATE content SET state = ?2, doomed_since_ms = NULL WHERE hash = ?1";
const SQL_CLAIM: &str = "INSERT INTO content (hash, size, policy, placement, state) \
     VALUES (?1, 0, ?2, '{}', 'deleting') ON CONFLICT (hash) DO NOTHING";
const SQL_DELETING: &str =
    "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE state = 'deleting' AND state <> 'live' AND hash > ?1 ORDER BY hash LIMIT ?2";
const SQL_FINISH_INDEX: &str = "DELETE FROM placements WHERE hash = ?1 \
     AND EXISTS (SELECT 1 FROM content WHERE hash = ?1 AND state = 'deleting')";
const SQL_FINISH: &str = "DELETE FROM content WHERE hash = ?1 AND state = 'deleting'";
const SQL_COUNTS: &str = "SELECT state, count(*) FROM content GROUP BY state";
const SQL_NEWEST_FULL: &str = "SELECT version, hash IS NULL, created_ms FROM versions \
     WHERE bucket = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1";
const SQL_KTH_NEWEST: &str =
    "SELECT version FROM versions WHERE bucket = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1 OFFSET ?3";
const SQL_PRUNE_BELOW: &str = "DELETE FROM versions WHERE bucket = ?1 AND name = ?2 AND version < ?3";
const SQL_PRUNE_ALL: &str = "DELETE FROM versions WHERE bucket = ?1 AND name = ?2";
const SQL_NAMES_FIRST: &str = "SELECT DISTINCT bucket, name FROM versions ORDER BY bucket, name LIMIT ?1";
const SQL_NAMES_AFTER: &str =
    "SELECT DISTINCT bucket, name FROM versions WHERE (bucket, name) > (?1, ?2) ORDER BY bucket, name LIMIT ?3";
const SQL_CONTENTS_ON: &str = "SELECT c.hash, c.size, c.policy, c.placement, c.encoding, c.stored_size FROM \
     (SELECT DISTINCT hash FROM placements WHERE server = ?1 AND hash > ?2 ORDER BY hash LIMIT ?3) p \
     JOIN content c ON c.hash = p.hash ORDER BY c.hash";
const SQL_PLACEMENT_SERVERS: &str = "SELECT server, count(*) FROM placements GROUP BY server ORDER BY server";
const SQL_SAW: &str = "INSERT INTO server_sightings (server, last_seen_ms) VALUES (?1, ?2) \
     ON CONFLICT (server) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)";
const SQL_SIGHTINGS: &str = "SELECT server, last_seen_ms FROM server_sightings ORDER BY server";
const SQL_FORGET: &str = "DELETE FROM server_sightings WHERE server = ?1";
/// Takes the lease (?3: when it expires, ?4: now) if it is free, expired or the
/// holder's already: one statement, so one step under SQLite's write lock.
const SQL_ACQUIRE: &str = "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4";
const SQL_RELEASE: &str = "DELETE FROM leases WHERE name = ?1 AND holder = ?2";
const SQL_HOLDER: &str = "SELECT holder FROM leases WHERE name = ?1 AND expires_ms > ?2";
const SQL_CURSOR: &str = "SELECT value FROM worker_cursors WHERE name = ?1";
const SQL_SET_CURSOR: &str = "INSERT INTO worker_cursors (name, value) VALUES (?1, ?2) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value";
const SQL_CLEAR_CURSOR: &str = "DELETE FROM worker_cursors WHERE name = ?1";
const SQL_NEWEST: &str =
    "SELECT version, hash IS NULL FROM versions WHERE bucket = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1";
const SQL_NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE bucket = ?1 AND name = ?2";
const SQL_INSERT_VERSION: &str = "INSERT INTO versions (bucket, name, version, hash, size, created_ms, attrs) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const SQL_SET_PLACEMENT: &str = "UPDATE content SET placement = ?2 WHERE hash = ?1";
const SQL_INSERT_UPLOAD: &str = "INSERT INTO uploads (id, bucket, name, length, upload_offset, metadata, expected, \
     hasher, created_ms, expires_ms, finished_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const SQL_UPLOAD: &str = concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = ?1");
const SQL_UPLOAD_AT: &str = "SELECT upload_offset, finished_version IS NOT NULL FROM uploads WHERE id = ?1";
const SQL_INSERT_PART: &str = "INSERT INTO upload_parts (id, part_offset, size, hash) VALUES (?1, ?2, ?3, ?4)";
const SQL_ADVANCE_UPLOAD: &str = "UPDATE uploads SET upload_offset = ?2, hasher = ?3, expires_ms = ?4, \
     length = COALESCE(length, ?5) WHERE id = ?1";
const SQL_UPLOAD_PARTS: &str = "SELECT part_offset, size, hash FROM upload_parts \
     WHERE id = ?1 AND part_offset >= ?2 ORDER BY part_offset LIMIT ?3";
const SQL_UPLOAD_TARGET: &str = "SELECT bucket, name, finished_version FROM uploads WHERE id = ?1";
const SQL_FINISH_UPLOAD: &str = "UPDATE uploads SET finished_version = ?2 WHERE id = ?1";
const SQL_DROP_PARTS: &str = "DELETE FROM upload_parts WHERE id = ?1";
const SQL_DROP_UPLOAD: &str = "DELETE FROM uploads WHERE id = ?1";
const SQL_EXPIRED_UPLOADS: &str = "SELECT id FROM uploads WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2";
const SQL_CREATE_BUCKET: &str = "INSERT INTO buckets (name, created_ms) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING";
const SQL_BUCKET: &str = "SELECT name, created_ms FROM buckets WHERE name = ?1";
const SQL_BUCKETS: &str = "SELECT name, created_ms FROM buckets ORDER BY name";
/// A version (tombstones too) is in the bucket: what keeps it from deletion.
const SQL_BUCKET_HAS_VERSION: &str = "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket = ?1)";
/// The bucket's tus uploads, and whether each is still open. `uploads` has no
/// index on the bucket: this scans it, which only a bucket deletion does, and the
/// table holds only unexpired uploads (the expiry worker removes the rest).
const SQL_BUCKET_UPLOADS: &str = "SELECT id, finished_version IS NULL FROM uploads WHERE bucket = ?1 ORDER BY id";
/// The bucket's multipart uploads (a range of `multipart_uploads_by_name`).
const SQL_BUCKET_MULTIPART: &str = "SELECT id FROM multipart_uploads WHERE bucket = ?1 ORDER BY id";
const SQL_DROP_BUCKET: &str = "DELETE FROM buckets WHERE name = ?1";
const SQL_DELETE_VERSION: &str = "DELETE FROM versions WHERE bucket = ?1 AND name = ?2 AND version = ?3";

/// `list_versions`, as [`PairStatements`] wants it: a range on the primary key from
/// `?2` (whose own versions count only up to `?3`), newest version first within a
/// name. The versions of one name are sorted apart (SQLite's "right part of ORDER
/// BY"), a name at a time, so the scan still stops at the limit.
macro_rules! select_version_list {
    ($upper:literal, $limit:literal) => {
        select_versions!(
            "WHERE v.bucket = ?1 AND v.name >= ?2 AND (v.name > ?2 OR v.version <= ?3) ",
            $upper,
            "ORDER BY v.name, v.version DESC LIMIT ",
            $limit
        )
    };
}

const VERSION_LIST_STATEMENTS: PairStatements =
    PairStatements { open: select_version_list!("", "?4"), upto: select_version_list!("AND v.name < ?4 ", "?5") };

/// `multipart_uploads`, as [`ListStatements`] wants it: a range on the index
/// `multipart_uploads_by_name` from (`?2`, `?3`).
macro_rules! select_uploads {
    ($op:literal, $upper:literal, $limit:literal) => {
        concat!(
            "SELECT ",
            multipart_columns!(),
            " FROM multipart_uploads WHERE bucket = ?1 AND (name, id) ",
            $op,
            " (?2, ?3) ",
            $upper,
            "ORDER BY name, id LIMIT ",
            $limit
        )
    };
}

const UPLOAD_LIST_STATEMENTS: ListStatements = ListStatements {
    from: select_uploads!(">=", "", "?4"),
    from_upto: select_uploads!(">=", "AND name < ?4 ", "?5"),
    after: select_uploads!(">", "", "?4"),
    after_upto: select_uploads!(">", "AND name < ?4 ", "?5"),
};

const SQL_INSERT_MULTIPART: &str =
    "INSERT INTO multipart_uploads (id, bucket, name, attrs, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)";
const SQL_MULTIPART: &str = concat!("SELECT ", multipart_columns!(), " FROM multipart_uploads WHERE id = ?1");
const SQL_MULTIPART_TARGET: &str = "SELECT bucket, name FROM multipart_uploads WHERE id = ?1";
/// Sets a part, replacing an earlier upload of its number.
const SQL_UPSERT_MULTIPART_PART: &str = "INSERT INTO multipart_parts \
     (upload_id, part_number, hash, size, etag, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (upload_id, part_number) DO UPDATE SET hash = excluded.hash, size = excluded.size, \
     etag = excluded.etag, created_ms = excluded.created_ms";
const SQL_MULTIPART_PARTS: &str = concat!(
    "SELECT ",
    multipart_part_columns!(),
    " FROM multipart_parts WHERE upload_id = ?1 AND part_number > ?2 ORDER BY part_number LIMIT ?3"
);
const SQL_DROP_MULTIPART_PARTS: &str = "DELETE FROM multipart_parts WHERE upload_id = ?1";
const SQL_DROP_MULTIPART: &str = "DELETE FROM multipart_uploads WHERE id = ?1";
const SQL_STALE_MULTIPART: &str =
    "SELECT id FROM multipart_uploads WHERE created_ms <= ?1 ORDER BY created_ms LIMIT ?2";
const SQL_CREATE_KEY: &str = "INSERT INTO access_keys (access_key, secret, buckets, read_only, created_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (access_key) DO NOTHING";
const SQL_KEY: &str = concat!("SELECT ", key_columns!(), " FROM access_keys WHERE access_key = ?1");
const SQL_KEYS: &str = concat!("SELECT ", key_columns!(), " FROM access_keys ORDER BY access_key");
const SQL_DELETE_KEY: &str = "DELETE FROM access_keys WHERE access_key = ?1";

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
    /// `put_object`: add a version with attributes if the bucket exists.
    PutObject {
        content: ContentRecord,
        // Boxed: the other writes queue in less than half the room.
        attrs: Box<ObjectAttrs>,
        condition: Option<Precondition>,
        reply: Reply<VersionRecord>,
    },
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
                Done::Put(reply, in_savepoint(tx, |sp| put_version_in(sp, bucket, name, content, None)))
            }
            WriteOp::PutObject { content, attrs, condition, reply } => Done::Put(
                reply,
                in_savepoint(tx, |sp| put_object_in(sp, bucket, name, content, *attrs, condition.as_ref())),
            ),
            WriteOp::Delete { reply } => Done::Delete(reply, in_savepoint(tx, |sp| delete_in(sp, bucket, name))),
        }
    }

    /// Answers `e` without having run.
    fn fail(self, e: &MetaError) {
        match self.op {
            WriteOp::Put { reply, .. } | WriteOp::PutObject { reply, .. } => drop(reply.send(Err(same_error(e)))),
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
        encoding: row.get(10)?,
        stored_size: row.get(11)?,
        attrs: row.get(12)?,
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
    attrs: Option<ObjectAttrs>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_version";
    let json = attrs.as_ref().map(attrs_json).transpose()?;
    let row = content.as_ref().map(|c| record_content(conn, WHAT, c)).transpose()?;
    let next: i64 =
        conn.prepare_cached(SQL_NEXT_VERSION).context(WHAT)?.query_row((&bucket, &name), |r| r.get(0)).context(WHAT)?;
    let version = next_version(&bucket, &name, next)?;
    let (hash, size) = ContentRow::version_columns(row.as_ref());
    let created_ms = now_ms();
    conn.prepare_cached(SQL_INSERT_VERSION)
        .context(WHAT)?
        .execute((&bucket, &name, next, &hash, size, created_ms, &json))
        .context(WHAT)?;
    Ok(VersionRecord { bucket, name, version, content, created_ms, attrs })
}

/// `put_object` on `conn`, inside the caller's write transaction: the bucket check
/// and the insert under one write lock, so no `delete_bucket` comes between.
fn put_object_in(
    conn: &Connection,
    bucket: String,
    name: String,
    content: ContentRecord,
    attrs: ObjectAttrs,
    condition: Option<&Precondition>,
) -> Result<VersionRecord, MetaError> {
    require_bucket(conn, "put_object", &bucket)?;
    if let Some(condition) = condition {
        // Inside the writer's transaction: no other write of the name can come
        // between this read and the insert.
        let latest = query_version(conn, "put_object", SQL_LATEST, &[&bucket, &name])?;
        if !condition.holds(latest.as_ref()) {
            return Err(MetaError::PreconditionFailed { bucket, name });
        }
    }
    put_version_in(conn, bucket, name, Some(content), Some(attrs))
}

/// Whether `bucket` exists (read on `conn`, inside the caller's transaction).
fn bucket_exists(conn: &Connection, what: &str, bucket: &str) -> Result<bool, MetaError> {
    let found =
        conn.prepare_cached(SQL_BUCKET).context(what)?.query_row([bucket], |_| Ok(())).optional().context(what)?;
    Ok(found.is_some())
}

/// [`MetaError::NoSuchBucket`] unless `bucket` exists (read on `conn`, inside the
/// caller's transaction).
fn require_bucket(conn: &Connection, what: &str, bucket: &str) -> Result<(), MetaError> {
    if bucket_exists(conn, what, bucket)? {
        return Ok(());
    }
    Err(MetaError::NoSuchBucket { bucket: bucket.to_string() })
}

/// The uploads the expiry worker removes in batches: tus uploads past their expiry,
/// S3 multipart uploads created before a cutoff.
#[derive(Clone, Copy)]
enum Batch {
    ExpiredUploads,
    StaleMultipart,
}

impl Batch {
    /// The method's name, for errors.
    fn what(self) -> &'static str {
        match self {
            Batch::ExpiredUploads => "remove_expired_uploads",
            Batch::StaleMultipart => "remove_stale_multipart",
        }
    }

    /// The ids of up to `?2` uploads due at `?1`.
    fn due(self) -> &'static str {
        match self {
            Batch::ExpiredUploads => SQL_EXPIRED_UPLOADS,
            Batch::StaleMultipart => SQL_STALE_MULTIPART,
        }
    }

    /// Removes one upload and its parts inside the caller's transaction.
    fn drop(self, conn: &Connection, id: &str) -> Result<bool, MetaError> {
        match self {
            Batch::ExpiredUploads => drop_upload(conn, self.what(), id),
            Batch::StaleMultipart => drop_multipart(conn, self.what(), id),
        }
    }
}

impl SqliteStore {
    /// Removes up to `limit` uploads of `batch` due at `at`, in one transaction;
    /// returns how many.
    async fn remove_batch(&self, batch: Batch, at: i64, limit: usize) -> Result<usize, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        self.write(move |conn| {
            immediate(conn, batch.what(), |tx| {
                let ids: Vec<String> = {
                    let mut stmt = tx.prepare_cached(batch.due()).context(batch.what())?;
                    let rows = stmt.query_map((at, limit), |r| r.get(0)).context(batch.what())?;
                    rows.map(|r| r.context(batch.what())).collect::<Result<_, _>>()?
                };
                for id in &ids {
                    batch.drop(tx, id)?;
                }
                Ok(ids.len())
            })
        })
        .await
    }
}

/// Removes every upload into `bucket`, tus and multipart, with their parts, inside
/// the caller's write transaction (as `delete_upload` and `abort_multipart` each
/// remove one); returns how many were open. A finished tus upload goes too (its
/// row only answers a repeated finish) but was not aborted, so it is not counted.
fn abort_bucket_uploads(conn: &Connection, what: &str, bucket: &str) -> Result<u64, MetaError> {
    let tus: Vec<(String, bool)> = {
        let mut stmt = conn.prepare_cached(SQL_BUCKET_UPLOADS).context(what)?;
        let rows = stmt.query_map([bucket], |r| Ok((r.get(0)?, r.get(1)?))).context(what)?;
        rows.map(|r| r.context(what)).collect::<Result<_, _>>()?
    };
    let multipart: Vec<String> = {
        let mut stmt = conn.prepare_cached(SQL_BUCKET_MULTIPART).context(what)?;
        let rows = stmt.query_map([bucket], |r| r.get(0)).context(what)?;
        rows.map(|r| r.context(what)).collect::<Result<_, _>>()?
    };
    let mut aborted = 0;
    for (id, open) in &tus {
        if drop_upload(conn, what, id)? && *open {
            aborted += 1;
        }
    }
    for id in &multipart {
        if drop_multipart(conn, what, id)? {
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Removes a multipart upload's part rows and the upload itself, inside the
/// caller's transaction; true if the upload existed.
fn drop_multipart(conn: &Connection, what: &str, id: &str) -> Result<bool, MetaError> {
    conn.prepare_cached(SQL_DROP_MULTIPART_PARTS).context(what)?.execute([id]).context(what)?;
    Ok(conn.prepare_cached(SQL_DROP_MULTIPART).context(what)?.execute([id]).context(what)? > 0)
}

/// Maps a `multipart_uploads` row (columns as [`multipart_columns`]) onto
/// [`RawMultipart`].
fn raw_multipart(row: &Row<'_>) -> rusqlite::Result<RawMultipart> {
    Ok(RawMultipart {
        id: row.get(0)?,
        bucket: row.get(1)?,
        name: row.get(2)?,
        attrs: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

/// Maps an `access_keys` row (columns as [`key_columns`]) onto [`RawAccessKey`].
fn raw_key(row: &Row<'_>) -> rusqlite::Result<RawAccessKey> {
    Ok(RawAccessKey {
        access_key: row.get(0)?,
        secret: row.get(1)?,
        buckets: row.get(2)?,
        read_only: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

/// Records `content` (inserted, or updated and made live) and its placement index
/// on `conn`, inside the caller's write transaction: the one content insert of this
/// store, used by `put_version` and by an upload's appended parts. Content the
/// collector is deleting is refused with [`MetaError::ContentDeleting`].
fn record_content(conn: &Connection, what: &str, content: &ContentRecord) -> Result<ContentRow, MetaError> {
    let row = ContentRow::encode(content)?;
    let stored: Option<i64> = conn
        .prepare_cached(SQL_UPSERT_CONTENT)
        .context(what)?
        .query_row((&row.hash, row.size, &row.policy, &row.placement, row.encoding, row.stored_size), |r| r.get(0))
        .optional()
        .context(what)?;
    let Some(stored) = stored else {
        return Err(MetaError::ContentDeleting { hash: content.hash });
    };
    row.check_recorded_size(stored)?;
    reindex(conn, what, &row.hash, &row.placement)?;
    Ok(row)
}

/// Maps an `uploads` row (columns as [`upload_columns`]) onto [`RawUpload`].
fn raw_upload(row: &Row<'_>) -> rusqlite::Result<RawUpload> {
    Ok(RawUpload {
        id: row.get(0)?,
        bucket: row.get(1)?,
        name: row.get(2)?,
        length: row.get(3)?,
        offset: row.get(4)?,
        metadata: row.get(5)?,
        expected: row.get(6)?,
        hasher: row.get(7)?,
        created_ms: row.get(8)?,
        expires_ms: row.get(9)?,
        finished_version: row.get(10)?,
    })
}

/// Removes an upload's part rows and the upload itself, inside the caller's
/// transaction; true if the upload existed.
fn drop_upload(conn: &Connection, what: &str, id: &str) -> Result<bool, MetaError> {
    conn.prepare_cached(SQL_DROP_PARTS).context(what)?.execute([id]).context(what)?;
    Ok(conn.prepare_cached(SQL_DROP_UPLOAD).context(what)?.execute([id]).context(what)? > 0)
}

/// Replaces the placement index rows of `hash` by those of `placement` (JSON), on
/// `conn` inside the caller's transaction.
fn reindex(conn: &Connection, what: &str, hash: &str, placement: &str) -> Result<(), MetaError> {
    conn.prepare_cached(SQL_INDEX_CLEAR).context(what)?.execute([hash]).context(what)?;
    conn.prepare_cached(SQL_INDEX_FILL).context(what)?.execute((hash, placement)).context(what)?;
    Ok(())
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer: the write lock is
/// taken first, so what `f` reads stays true until it commits, in any process.
fn immediate<T>(
    conn: &mut Connection,
    what: &str,
    f: impl FnOnce(&Connection) -> Result<T, MetaError>,
) -> Result<T, MetaError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(what)?;
    let out = f(&tx)?;
    tx.commit().context(what)?;
    Ok(out)
}

/// The state of the row of `hash` on `conn`, or `None`.
fn state_of(conn: &Connection, what: &str, hex: &str) -> Result<Option<ContentState>, MetaError> {
    let raw: Option<(String, Option<i64>)> = conn
        .prepare_cached(SQL_STATE)
        .context(what)?
        .query_row([hex], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .context(what)?;
    raw.map(|(state, since)| parse_state(hex, &state, since)).transpose()
}

/// Content rows ([`RawContent`]'s columns) of a query, validated.
fn query_contents(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<ContentRecord>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let rows = stmt.query_map(params, raw_content).context(what)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.context(what)?.parse()?);
    }
    Ok(out)
}

/// A content row as stored, before validation.
fn raw_content(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawContent> {
    Ok(RawContent {
        hash: row.get(0)?,
        size: row.get(1)?,
        policy: row.get(2)?,
        placement: row.get(3)?,
        encoding: row.get(4)?,
        stored_size: row.get(5)?,
    })
}

/// `(text, integer)` rows of a query.
fn query_pairs(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<(String, i64)>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let rows = stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?))).context(what)?;
    rows.map(|row| row.context(what)).collect()
}

/// Retention of `bucket/name` on `conn`, inside the caller's write transaction.
fn prune_in(
    conn: &Connection,
    bucket: &str,
    name: &str,
    keep: Option<u64>,
    tombstone_cutoff_ms: Option<i64>,
) -> Result<u64, MetaError> {
    const WHAT: &str = "prune";
    let newest: Option<(i64, bool, i64)> = conn
        .prepare_cached(SQL_NEWEST_FULL)
        .context(WHAT)?
        .query_row((bucket, name), |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()
        .context(WHAT)?;
    let kth = match (newest, keep_offset(keep)) {
        (Some(_), Some(offset)) => conn
            .prepare_cached(SQL_KTH_NEWEST)
            .context(WHAT)?
            .query_row((bucket, name, offset), |row| row.get(0))
            .optional()
            .context(WHAT)?,
        _ => None,
    };
    let removed = match prune_step(newest, kth, tombstone_cutoff_ms) {
        Prune::Nothing => 0,
        Prune::Below(v) => {
            conn.prepare_cached(SQL_PRUNE_BELOW).context(WHAT)?.execute((bucket, name, v)).context(WHAT)?
        }
        Prune::All => conn.prepare_cached(SQL_PRUNE_ALL).context(WHAT)?.execute((bucket, name)).context(WHAT)?,
    };
    Ok(removed as u64)
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
    put_version_in(conn, bucket, name, None, None).map(DeleteOutcome::Deleted)
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
        MetaError::ContentDeleting { hash } => MetaError::ContentDeleting { hash: *hash },
        MetaError::NoSuchBucket { bucket } => MetaError::NoSuchBucket { bucket: bucket.clone() },
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
impl VersionStore for SqliteStore {
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

    async fn prune(
        &self,
        bucket: &str,
        name: &str,
        keep: Option<u64>,
        tombstone_cutoff_ms: Option<i64>,
    ) -> Result<u64, MetaError> {
        let (bucket, name) = (bucket.to_string(), name.to_string());
        // Under the write lock, like put_version and delete: no version of the name
        // can be added between the reads and the removal.
        self.write(move |conn| immediate(conn, "prune", |tx| prune_in(tx, &bucket, &name, keep, tombstone_cutoff_ms)))
            .await
    }

    async fn names(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<(String, String)>, MetaError> {
        const WHAT: &str = "names";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = after.map(|(b, n)| (b.to_string(), n.to_string()));
        self.read(move |conn| {
            let (sql, params): (&str, Vec<&dyn ToSql>) = match &after {
                None => (SQL_NAMES_FIRST, vec![&limit]),
                Some((bucket, name)) => (SQL_NAMES_AFTER, vec![bucket, name, &limit]),
            };
            let mut stmt = conn.prepare_cached(sql).context(WHAT)?;
            let rows = stmt.query_map(params.as_slice(), |row| Ok((row.get(0)?, row.get(1)?))).context(WHAT)?;
            rows.map(|row| row.context(WHAT)).collect()
        })
        .await
    }

    async fn put_object(
        &self,
        bucket: &str,
        name: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
        condition: Option<&Precondition>,
    ) -> Result<VersionRecord, MetaError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op = WriteOp::PutObject {
            content: content.clone(),
            attrs: Box::new(attrs.clone()),
            condition: condition.cloned(),
            reply,
        };
        self.queue(bucket, name, op).await?;
        answer.await.map_err(|_| MetaError::Unavailable("metadata writer stopped before answering".into()))?
    }

    async fn delete_version(&self, bucket: &str, name: &str, version: u64) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_version";
        let Some(version) = to_sql_int(version) else {
            return Ok(false);
        };
        let (bucket, name) = (bucket.to_string(), name.to_string());
        self.write(move |conn| {
            let removed = conn
                .prepare_cached(SQL_DELETE_VERSION)
                .context(WHAT)?
                .execute((&bucket, &name, version))
                .context(WHAT)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        const WHAT: &str = "list_versions";
        let Some(range) = VersionListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.read(move |conn| {
            let sql = range.statement(&VERSION_LIST_STATEMENTS);
            let r = &range;
            match &r.upper {
                Some(upper) => query_versions(conn, WHAT, sql, &[&bucket, &r.lower, &r.max_version, upper, &r.limit]),
                None => query_versions(conn, WHAT, sql, &[&bucket, &r.lower, &r.max_version, &r.limit]),
            }
        })
        .await
    }
}

#[async_trait]
impl ContentStore for SqliteStore {
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        let hex = hash.to_hex();
        self.read(move |conn| {
            const WHAT: &str = "content";
            let mut stmt = conn.prepare_cached(SQL_CONTENT).context(WHAT)?;
            let raw = stmt.query_row([&hex], raw_content).optional().context(WHAT)?;
            raw.map(RawContent::parse).transpose()
        })
        .await
    }

    async fn content_state(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        let hex = hash.to_hex();
        self.read(move |conn| state_of(conn, "content_state", &hex)).await
    }

    async fn revive(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "revive";
        let hex = hash.to_hex();
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                tx.prepare_cached(SQL_REVIVE).context(WHAT)?.execute([&hex]).context(WHAT)?;
                state_of(tx, WHAT, &hex)
            })
        })
        .await
    }

    async fn doom_unreferenced(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        const WHAT: &str = "doom_unreferenced";
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        self.write(move |conn| conn.prepare_cached(SQL_DOOM).context(WHAT)?.execute((now_ms, limit)).context(WHAT))
            .await
    }

    async fn doomed_before(
        &self,
        cutoff_ms: i64,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.read(move |conn| query_contents(conn, "doomed_before", SQL_DOOMED_BEFORE, &[&cutoff_ms, &after, &limit]))
            .await
    }

    async fn begin_delete(&self, hash: &ContentHash, cutoff_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "begin_delete";
        let hex = hash.to_hex();
        self.write(move |conn| {
            // The write lock, held from the reads to the commit, orders this step and
            // every put_version of the content (in any process) one after the other.
            immediate(conn, WHAT, |tx| {
                let state = state_of(tx, WHAT, &hex)?;
                let referenced: bool =
                    tx.prepare_cached(SQL_REFERENCED).context(WHAT)?.query_row([&hex], |r| r.get(0)).context(WHAT)?;
                let (new_state, claimed) = match begin_delete_step(state, referenced, cutoff_ms) {
                    BeginDelete::Delete => (DELETING, true),
                    BeginDelete::Revive => (LIVE, false),
                    BeginDelete::Leave => return Ok(false),
                };
                tx.prepare_cached(SQL_SET_STATE).context(WHAT)?.execute((&hex, new_state)).context(WHAT)?;
                Ok(claimed)
            })
        })
        .await
    }

    async fn claim_orphan(&self, hash: &ContentHash, policy: Policy) -> Result<bool, MetaError> {
        const WHAT: &str = "claim_orphan";
        let (hex, policy) = (hash.to_hex(), policy.to_string());
        self.write(move |conn| {
            let inserted = conn.prepare_cached(SQL_CLAIM).context(WHAT)?.execute((&hex, &policy)).context(WHAT)?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn deleting(&self, after: Option<&ContentHash>, limit: usize) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.read(move |conn| query_contents(conn, "deleting", SQL_DELETING, &[&after, &limit])).await
    }

    async fn finish_delete(&self, hash: &ContentHash) -> Result<bool, MetaError> {
        const WHAT: &str = "finish_delete";
        let hex = hash.to_hex();
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                tx.prepare_cached(SQL_FINISH_INDEX).context(WHAT)?.execute([&hex]).context(WHAT)?;
                let removed = tx.prepare_cached(SQL_FINISH).context(WHAT)?.execute([&hex]).context(WHAT)?;
                Ok(removed > 0)
            })
        })
        .await
    }

    async fn content_counts(&self) -> Result<ContentCounts, MetaError> {
        self.read(|conn| count_states(query_pairs(conn, "content_counts", SQL_COUNTS, &[])?)).await
    }
}

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError> {
        let hex = hash.to_hex();
        let json = placement_json(placement)?;
        self.write(move |conn| {
            const WHAT: &str = "set_placement";
            immediate(conn, WHAT, |tx| {
                let changed =
                    tx.prepare_cached(SQL_SET_PLACEMENT).context(WHAT)?.execute((&hex, &json)).context(WHAT)?;
                if changed > 0 {
                    reindex(tx, WHAT, &hex, &json)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn contents_on(
        &self,
        server: &str,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let (server, after) = (server.to_string(), hash_after(after));
        self.read(move |conn| query_contents(conn, "contents_on", SQL_CONTENTS_ON, &[&server, &after, &limit])).await
    }

    async fn placement_servers(&self) -> Result<Vec<(String, u64)>, MetaError> {
        const WHAT: &str = "placement_servers";
        self.read(|conn| {
            let rows = query_pairs(conn, WHAT, SQL_PLACEMENT_SERVERS, &[])?;
            rows.into_iter().map(|(server, n)| Ok((server.clone(), count(n, || format!("{WHAT} {server}"))?))).collect()
        })
        .await
    }

    async fn saw_servers(&self, servers: &[String], now_ms: i64) -> Result<(), MetaError> {
        const WHAT: &str = "saw_servers";
        if servers.is_empty() {
            return Ok(());
        }
        let servers = servers.to_vec();
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                let mut stmt = tx.prepare_cached(SQL_SAW).context(WHAT)?;
                for server in &servers {
                    stmt.execute((server, now_ms)).context(WHAT)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn server_sightings(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.read(|conn| query_pairs(conn, "server_sightings", SQL_SIGHTINGS, &[])).await
    }

    async fn forget_server(&self, server: &str) -> Result<(), MetaError> {
        const WHAT: &str = "forget_server";
        let server = server.to_string();
        self.write(move |conn| {
            conn.prepare_cached(SQL_FORGET).context(WHAT)?.execute([&server]).context(WHAT)?;
            Ok(())
        })
        .await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, MetaError> {
        const WHAT: &str = "acquire_lease";
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            let now = now_ms();
            let expires = now.saturating_add(ttl_ms(ttl));
            let changed = conn
                .prepare_cached(SQL_ACQUIRE)
                .context(WHAT)?
                .execute((&name, &holder, expires, now))
                .context(WHAT)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        const WHAT: &str = "release_lease";
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            conn.prepare_cached(SQL_RELEASE).context(WHAT)?.execute((&name, &holder)).context(WHAT)?;
            Ok(())
        })
        .await
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "lease_holder";
        let name = name.to_string();
        self.read(move |conn| {
            conn.prepare_cached(SQL_HOLDER)
                .context(WHAT)?
                .query_row((&name, now_ms()), |row| row.get(0))
                .optional()
                .context(WHAT)
        })
        .await
    }

    async fn worker_cursor(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "worker_cursor";
        let name = name.to_string();
        self.read(move |conn| {
            conn.prepare_cached(SQL_CURSOR).context(WHAT)?.query_row([&name], |row| row.get(0)).optional().context(WHAT)
        })
        .await
    }

    async fn set_worker_cursor(&self, name: &str, value: Option<&str>) -> Result<(), MetaError> {
        const WHAT: &str = "set_worker_cursor";
        let (name, value) = (name.to_string(), value.map(str::to_string));
        self.write(move |conn| {
            match &value {
                Some(value) => conn.prepare_cached(SQL_SET_CURSOR).context(WHAT)?.execute((&name, value)),
                None => conn.prepare_cached(SQL_CLEAR_CURSOR).context(WHAT)?.execute([&name]),
            }
            .context(WHAT)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl UploadStore for SqliteStore {
    async fn create_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_upload";
        let u = upload.clone();
        let length = u.length.map(|l| upload_int(l, "length")).transpose()?;
        let offset = upload_int(u.offset, "offset")?;
        let expected = u.expected.map(|h| h.to_hex());
        let finished = u.finished_version.map(|v| upload_int(v, "version")).transpose()?;
        self.write(move |conn| {
            // The bucket check and the insert under one write lock: no
            // delete_bucket, in any process, comes between.
            immediate(conn, WHAT, |tx| {
                require_bucket(tx, WHAT, &u.bucket)?;
                tx.prepare_cached(SQL_INSERT_UPLOAD)
                    .context(WHAT)?
                    .execute(rusqlite::params![
                        u.id,
                        u.bucket,
                        u.name,
                        length,
                        offset,
                        u.metadata,
                        expected,
                        u.hasher,
                        u.created_ms,
                        u.expires_ms,
                        finished
                    ])
                    .context(WHAT)?;
                Ok(())
            })
        })
        .await
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        const WHAT: &str = "upload";
        let id = id.to_string();
        self.read(move |conn| {
            let raw =
                conn.prepare_cached(SQL_UPLOAD).context(WHAT)?.query_row([&id], raw_upload).optional().context(WHAT)?;
            raw.map(RawUpload::parse).transpose()
        })
        .await
    }

    async fn append_upload(&self, id: &str, append: UploadAppend<'_>) -> Result<AppendOutcome, MetaError> {
        const WHAT: &str = "append_upload";
        let id = id.to_string();
        let parts = append.parts.to_vec();
        let hasher = append.hasher.to_vec();
        let (expected_offset, length, expires_ms) = (append.expected_offset, append.length, append.expires_ms);
        let length = length.map(|l| upload_int(l, "length")).transpose()?;
        self.write(move |conn| {
            // Under the write lock from the offset check to the commit: of two
            // appends at one offset, in any process, the second sees the first's.
            immediate(conn, WHAT, |tx| {
                let at: Option<(i64, bool)> = tx
                    .prepare_cached(SQL_UPLOAD_AT)
                    .context(WHAT)?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .context(WHAT)?;
                let Some((offset, finished)) = at else { return Ok(AppendOutcome::Gone) };
                let offset = u64::try_from(offset).map_err(|_| MetaError::Corrupt(format!("upload {id}: offset")))?;
                if finished || offset != expected_offset {
                    return Ok(AppendOutcome::Conflict { offset });
                }
                let mut at = offset;
                for part in &parts {
                    let row = record_content(tx, WHAT, part)?;
                    tx.prepare_cached(SQL_INSERT_PART)
                        .context(WHAT)?
                        .execute((&id, upload_int(at, "offset")?, row.size, &row.hash))
                        .context(WHAT)?;
                    at += part.size;
                }
                tx.prepare_cached(SQL_ADVANCE_UPLOAD)
                    .context(WHAT)?
                    .execute((&id, upload_int(at, "offset")?, &hasher, expires_ms, length))
                    .context(WHAT)?;
                Ok(AppendOutcome::Appended { offset: at })
            })
        })
        .await
    }

    async fn upload_parts(&self, id: &str, from: u64, limit: usize) -> Result<Vec<UploadPart>, MetaError> {
        const WHAT: &str = "upload_parts";
        let (Some(limit), Some(from)) = (sql_limit(limit), to_sql_int(from)) else {
            return Ok(Vec::new());
        };
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(SQL_UPLOAD_PARTS).context(WHAT)?;
            let rows = stmt
                .query_map((&id, from, limit), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                let (offset, size, hash) = row.context(WHAT)?;
                out.push(parse_part(&id, offset, size, &hash)?);
            }
            Ok(out)
        })
        .await
    }

    async fn finish_upload(&self, id: &str, content: &ContentRecord) -> Result<FinishOutcome, MetaError> {
        const WHAT: &str = "finish_upload";
        let (id, content) = (id.to_string(), content.clone());
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                let target: Option<(String, String, Option<i64>)> = tx
                    .prepare_cached(SQL_UPLOAD_TARGET)
                    .context(WHAT)?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .context(WHAT)?;
                let Some((bucket, name, finished)) = target else { return Ok(FinishOutcome::Gone) };
                // delete_bucket removes a bucket's uploads with it, so the bucket
                // is missing only for an upload stored before uploads needed their
                // bucket. Checked before `finished`, in the order the PostgreSQL
                // store's locks impose, so both stores answer alike.
                require_bucket(tx, WHAT, &bucket)?;
                if let Some(version) = finished {
                    let version = next_version(&bucket, &name, version)?;
                    return Ok(FinishOutcome::AlreadyFinished { version });
                }
                let record = put_version_in(tx, bucket, name, Some(content), None)?;
                let version = upload_int(record.version, "version")?;
                tx.prepare_cached(SQL_FINISH_UPLOAD).context(WHAT)?.execute((&id, version)).context(WHAT)?;
                tx.prepare_cached(SQL_DROP_PARTS).context(WHAT)?.execute([&id]).context(WHAT)?;
                Ok(FinishOutcome::Finished(record))
            })
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_upload";
        let id = id.to_string();
        self.write(move |conn| immediate(conn, WHAT, |tx| drop_upload(tx, WHAT, &id))).await
    }

    async fn remove_expired_uploads(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::ExpiredUploads, now_ms, limit).await
    }
}

#[async_trait]
impl BucketStore for SqliteStore {
    async fn create_bucket(&self, name: &str, created_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "create_bucket";
        let name = name.to_string();
        self.write(move |conn| {
            let inserted =
                conn.prepare_cached(SQL_CREATE_BUCKET).context(WHAT)?.execute((&name, created_ms)).context(WHAT)?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, MetaError> {
        const WHAT: &str = "bucket";
        let name = name.to_string();
        self.read(move |conn| {
            conn.prepare_cached(SQL_BUCKET)
                .context(WHAT)?
                .query_row([&name], |r| Ok(BucketRecord { name: r.get(0)?, created_ms: r.get(1)? }))
                .optional()
                .context(WHAT)
        })
        .await
    }

    async fn buckets(&self) -> Result<Vec<BucketRecord>, MetaError> {
        const WHAT: &str = "buckets";
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(SQL_BUCKETS).context(WHAT)?;
            let rows =
                stmt.query_map([], |r| Ok(BucketRecord { name: r.get(0)?, created_ms: r.get(1)? })).context(WHAT)?;
            rows.map(|r| r.context(WHAT)).collect()
        })
        .await
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeleteOutcome, MetaError> {
        const WHAT: &str = "delete_bucket";
        let name = name.to_string();
        // Under the write lock from the check to the removal, as every write into a
        // bucket is: none can land in between.
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                if !bucket_exists(tx, WHAT, &name)? {
                    return Ok(BucketDeleteOutcome::NoSuchBucket);
                }
                let has_version: bool = tx
                    .prepare_cached(SQL_BUCKET_HAS_VERSION)
                    .context(WHAT)?
                    .query_row([&name], |r| r.get(0))
                    .context(WHAT)?;
                if has_version {
                    return Ok(BucketDeleteOutcome::NotEmpty);
                }
                let aborted_uploads = abort_bucket_uploads(tx, WHAT, &name)?;
                tx.prepare_cached(SQL_DROP_BUCKET).context(WHAT)?.execute([&name]).context(WHAT)?;
                Ok(BucketDeleteOutcome::Deleted { aborted_uploads })
            })
        })
        .await
    }
}

#[async_trait]
impl MultipartStore for SqliteStore {
    async fn create_multipart(&self, upload: &MultipartRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_multipart";
        let u = upload.clone();
        let attrs = attrs_json(&u.attrs)?;
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                require_bucket(tx, WHAT, &u.bucket)?;
                tx.prepare_cached(SQL_INSERT_MULTIPART)
                    .context(WHAT)?
                    .execute((&u.id, &u.bucket, &u.name, &attrs, u.created_ms))
                    .context(WHAT)?;
                Ok(())
            })
        })
        .await
    }

    async fn multipart(&self, id: &str) -> Result<Option<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart";
        let id = id.to_string();
        self.read(move |conn| {
            let raw = conn
                .prepare_cached(SQL_MULTIPART)
                .context(WHAT)?
                .query_row([&id], raw_multipart)
                .optional()
                .context(WHAT)?;
            raw.map(RawMultipart::parse).transpose()
        })
        .await
    }

    async fn put_part(
        &self,
        id: &str,
        part_number: u32,
        content: &ContentRecord,
        etag: &str,
        created_ms: i64,
    ) -> Result<bool, MetaError> {
        const WHAT: &str = "put_part";
        let (id, content, etag) = (id.to_string(), content.clone(), etag.to_string());
        self.write(move |conn| {
            // Under the write lock: an abort or completion of the upload is either
            // before (false) or after (and removes this part with the others).
            immediate(conn, WHAT, |tx| {
                let exists = tx
                    .prepare_cached(SQL_MULTIPART_TARGET)
                    .context(WHAT)?
                    .query_row([&id], |_| Ok(()))
                    .optional()
                    .context(WHAT)?;
                if exists.is_none() {
                    return Ok(false);
                }
                let row = record_content(tx, WHAT, &content)?;
                tx.prepare_cached(SQL_UPSERT_MULTIPART_PART)
                    .context(WHAT)?
                    .execute((&id, i64::from(part_number), &row.hash, row.size, &etag, created_ms))
                    .context(WHAT)?;
                Ok(true)
            })
        })
        .await
    }

    async fn parts(&self, id: &str, after: u32, limit: usize) -> Result<Vec<MultipartPart>, MetaError> {
        const WHAT: &str = "parts";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(SQL_MULTIPART_PARTS).context(WHAT)?;
            let rows = stmt
                .query_map((&id, i64::from(after), limit), |r| {
                    Ok(RawMultipartPart {
                        part_number: r.get(0)?,
                        hash: r.get(1)?,
                        size: r.get(2)?,
                        etag: r.get(3)?,
                        created_ms: r.get(4)?,
                    })
                })
                .context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.context(WHAT)?.parse(&id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart_uploads";
        let Some(range) = UploadListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let bucket = bucket.to_string();
        self.read(move |conn| {
            let r = &range;
            let mut stmt = conn.prepare_cached(r.statement(&UPLOAD_LIST_STATEMENTS)).context(WHAT)?;
            let params: Vec<&dyn ToSql> = match &r.upper {
                Some(upper) => vec![&bucket, &r.name, &r.id, upper, &r.limit],
                None => vec![&bucket, &r.name, &r.id, &r.limit],
            };
            let rows = stmt.query_map(params.as_slice(), raw_multipart).context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.context(WHAT)?.parse()?);
            }
            Ok(out)
        })
        .await
    }

    async fn complete_multipart(
        &self,
        id: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
    ) -> Result<CompleteOutcome, MetaError> {
        const WHAT: &str = "complete_multipart";
        let (id, content, attrs) = (id.to_string(), content.clone(), attrs.clone());
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                let target: Option<(String, String)> = tx
                    .prepare_cached(SQL_MULTIPART_TARGET)
                    .context(WHAT)?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .context(WHAT)?;
                let Some((bucket, name)) = target else { return Ok(CompleteOutcome::Gone) };
                let record = put_object_in(tx, bucket, name, content, attrs, None)?;
                drop_multipart(tx, WHAT, &id)?;
                Ok(CompleteOutcome::Completed(record))
            })
        })
        .await
    }

    async fn abort_multipart(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "abort_multipart";
        let id = id.to_string();
        self.write(move |conn| immediate(conn, WHAT, |tx| drop_multipart(tx, WHAT, &id))).await
    }

    async fn remove_stale_multipart(&self, cutoff_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::StaleMultipart, cutoff_ms, limit).await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, key: &AccessKey) -> Result<bool, MetaError> {
        const WHAT: &str = "create_key";
        let key = key.clone();
        let buckets = key_buckets_json(&key.buckets)?;
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(SQL_CREATE_KEY)
                .context(WHAT)?
                .execute((&key.access_key, &key.secret, &buckets, key.read_only, key.created_ms))
                .context(WHAT)?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn key(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError> {
        const WHAT: &str = "key";
        let access_key = access_key.to_string();
        self.read(move |conn| {
            let raw = conn
                .prepare_cached(SQL_KEY)
                .context(WHAT)?
                .query_row([&access_key], raw_key)
                .optional()
                .context(WHAT)?;
            raw.map(RawAccessKey::parse).transpose()
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        const WHAT: &str = "keys";
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(SQL_KEYS).context(WHAT)?;
            let rows = stmt.query_map([], raw_key).context(WHAT)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.context(WHAT)?.parse()?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_key(&self, access_key: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_key";
        let access_key = access_key.to_string();
        self.write(move |conn| {
            Ok(conn.prepare_cached(SQL_DELETE_KEY).context(WHAT)?.execute([&access_key]).context(WHAT)? > 0)
        })
        .await
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
        let on = plan(SQL_CONTENTS_ON, &[&"s", &"", &10]);
        assert!(on.contains("SEARCH placements USING PRIMARY KEY (server=? AND hash>?)"), "{on}");
        assert!(on.contains("SEARCH c USING INDEX sqlite_autoindex_content_1 (hash=?)"), "{on}");
        for (sql, params) in
            [(SQL_DOOMED_BEFORE, vec![&0 as &dyn ToSql, &"", &10]), (SQL_DELETING, vec![&"" as &dyn ToSql, &10])]
        {
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
        let parts = plan(SQL_MULTIPART_PARTS, &[&"u", &0, &10]);
        assert!(parts.contains("SEARCH multipart_parts USING PRIMARY KEY (upload_id=? AND part_number>?)"), "{parts}");
        assert!(!parts.contains("TEMP B-TREE"), "{parts}");
        let stale = plan(SQL_STALE_MULTIPART, &[&0, &10]);
        assert!(stale.contains("multipart_uploads_by_age (created_ms<?)"), "{stale}");
        for (sql, params) in [(SQL_REFERENCED, vec![&"h" as &dyn ToSql]), (SQL_DOOM, vec![&0 as &dyn ToSql, &10])] {
            let plan = plan(sql, &params);
            assert!(plan.contains("multipart_parts_by_hash (hash=?)"), "{sql}\n{plan}");
        }
        let has_version = plan(SQL_BUCKET_HAS_VERSION, &[&"b"]);
        assert!(has_version.contains("SEARCH versions USING PRIMARY KEY (bucket=?)"), "{has_version}");
        let multipart = plan(SQL_BUCKET_MULTIPART, &[&"b"]);
        assert!(multipart.contains("multipart_uploads_by_name (bucket=?)"), "{multipart}");
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
