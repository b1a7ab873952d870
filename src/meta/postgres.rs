//! The networked metadata store: PostgreSQL through `tokio-postgres`, for API
//! servers on several hosts sharing one store. It mirrors the SQLite store's
//! tables, migrations and error classes behind the same [`MetaStore`] trait, so the
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
//! ```sql
//! content(hash TEXT PRIMARY KEY,            -- 64 lowercase hex digits
//!         size BIGINT,                      -- bytes
//!         policy TEXT,                      -- "K+M", e.g. "4+2"
//!         placement TEXT)                   -- JSON object {"0":"host:port",...}
//! versions(bucket TEXT, name TEXT, version BIGINT,
//!          hash TEXT NULL REFERENCES content,  -- NULL = tombstone
//!          size BIGINT,                     -- content size, 0 for a tombstone
//!          created_ms BIGINT,               -- ms since the Unix epoch, database clock
//!          PRIMARY KEY (bucket, name, version))
//! heads(bucket TEXT, name TEXT, latest BIGINT,  -- each name's newest version
//!       PRIMARY KEY (bucket, name))
//! schema_version(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)
//! -- schema 2:
//! content.state TEXT                        -- 'live' | 'doomed' | 'deleting'
//! content.doomed_since_ms BIGINT NULL       -- when found unreferenced (doomed only)
//! placements(server TEXT, hash TEXT REFERENCES content, shard BIGINT,
//!            PRIMARY KEY (server, hash, shard))  -- the placement index
//! server_sightings(server TEXT PRIMARY KEY, last_seen_ms BIGINT)
//! leases(name TEXT PRIMARY KEY, holder TEXT, expires_ms BIGINT)  -- database clock
//! worker_cursors(name TEXT PRIMARY KEY, value BYTEA)  -- UTF-8; BYTEA holds NUL
//! -- schema 3: content.encoding, content.stored_size, uploads, upload_parts (tus)
//! -- schema 4 (S3), as in the SQLite store:
//! buckets(name TEXT PRIMARY KEY, created_ms BIGINT)  -- 'default' + every bucket with versions
//! versions.attrs TEXT NULL                  -- JSON of ObjectAttrs; NULL = none
//! multipart_uploads(id, bucket REFERENCES buckets, name, attrs, created_ms)
//! multipart_parts(upload_id REFERENCES multipart_uploads, part_number, hash REFERENCES content,
//!                 size, etag, created_ms, PRIMARY KEY (upload_id, part_number))
//! access_keys(access_key TEXT PRIMARY KEY, secret, buckets TEXT,  -- JSON array
//!             read_only BOOLEAN, created_ms)
//! ```
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
//! [`put_version`](VersionStore::put_version) runs in one READ COMMITTED transaction:
//! upsert the content row, then `INSERT INTO heads … ON CONFLICT DO UPDATE SET
//! latest = heads.latest + 1 RETURNING latest`, then insert that version. The upsert
//! row-locks the name's head until commit, so writers of one name (on any host)
//! queue there and get consecutive numbers, while writers of other names don't wait;
//! a failed write rolls back its increment, so there are no gaps. Every transaction
//! takes at most one content lock and then one head lock, always in that order, so
//! writers cannot deadlock. [`delete`](VersionStore::delete) row-locks the head first
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
//! and the whole transaction rolled back). [`begin_delete`](ContentStore::begin_delete)
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

use std::error::Error as _;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

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
use crate::content::{ContentHash, Placement, Policy};
use crate::report::redact_url;

/// The schema changes, in order: migration `i` takes a store from schema version `i`
/// to `i + 1`. Append only; never edit a released migration. Each runs with
/// `search_path` set to the store's schema.
pub const MIGRATIONS: &[&str] = &[
    // 1: content, versions and each name's newest version.
    r#"CREATE TABLE content (
         hash      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         size      BIGINT NOT NULL,
         policy    TEXT   NOT NULL,
         placement TEXT   NOT NULL
     );
     CREATE TABLE versions (
         bucket     TEXT COLLATE "C" NOT NULL,
         name       TEXT COLLATE "C" NOT NULL,
         version    BIGINT NOT NULL,
         hash       TEXT COLLATE "C" NULL REFERENCES content (hash),
         size       BIGINT NOT NULL,
         created_ms BIGINT NOT NULL,
         PRIMARY KEY (bucket, name, version)
     );
     CREATE INDEX versions_by_hash ON versions (hash) WHERE hash IS NOT NULL;
     CREATE TABLE heads (
         bucket TEXT COLLATE "C" NOT NULL,
         name   TEXT COLLATE "C" NOT NULL,
         latest BIGINT NOT NULL,
         PRIMARY KEY (bucket, name)
     );"#,
    // 2: the content lifecycle (GC), the placement index (backfilled from the
    // placement JSON; an unreadable placement is left out, and reported when read),
    // server sightings, leases and worker checkpoints.
    r#"ALTER TABLE content ADD COLUMN state TEXT NOT NULL DEFAULT 'live'
         CHECK (state IN ('live', 'doomed', 'deleting'));
     ALTER TABLE content ADD COLUMN doomed_since_ms BIGINT NULL;
     CREATE INDEX content_by_state ON content (state, hash) WHERE state <> 'live';
     CREATE TABLE placements (
         server TEXT COLLATE "C" NOT NULL,
         hash   TEXT COLLATE "C" NOT NULL REFERENCES content (hash),
         shard  BIGINT NOT NULL,
         PRIMARY KEY (server, hash, shard)
     );
     CREATE INDEX placements_by_hash ON placements (hash);
     DO $backfill$
     DECLARE r RECORD;
     BEGIN
         FOR r IN SELECT hash, placement FROM content LOOP
             BEGIN
                 INSERT INTO placements (server, hash, shard)
                     SELECT j.value, r.hash, j.key::BIGINT FROM json_each_text(r.placement::json) j
                     ON CONFLICT DO NOTHING;
             EXCEPTION WHEN OTHERS THEN
                 NULL;
             END;
         END LOOP;
     END
     $backfill$;
     CREATE TABLE server_sightings (
         server       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         last_seen_ms BIGINT NOT NULL
     );
     CREATE TABLE leases (
         name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         holder     TEXT   NOT NULL,
         expires_ms BIGINT NOT NULL
     );
     CREATE TABLE worker_cursors (
         name  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         value BYTEA NOT NULL
     );"#,
    // 3: transparent compression (how the content's bytes are stored, and how many
    // bytes that is; NULL: as many as `size`), and resumable uploads (tus): each
    // upload, and the parts its bytes were stored as so far, in offset order. A
    // part points at content, so the collector leaves it alone while the upload
    // lives.
    r#"ALTER TABLE content ADD COLUMN encoding TEXT NOT NULL DEFAULT 'identity';
     ALTER TABLE content ADD COLUMN stored_size BIGINT NULL;
     CREATE TABLE uploads (
         id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         bucket           TEXT COLLATE "C" NOT NULL,
         name             TEXT COLLATE "C" NOT NULL,
         length           BIGINT NULL,
         upload_offset    BIGINT NOT NULL DEFAULT 0,
         metadata         TEXT   NOT NULL,
         expected         TEXT   NULL,
         hasher           BYTEA  NOT NULL,
         created_ms       BIGINT NOT NULL,
         expires_ms       BIGINT NOT NULL,
         finished_version BIGINT NULL
     );
     CREATE INDEX uploads_by_expiry ON uploads (expires_ms);
     CREATE TABLE upload_parts (
         id          TEXT COLLATE "C" NOT NULL REFERENCES uploads (id),
         part_offset BIGINT NOT NULL,
         size        BIGINT NOT NULL,
         hash        TEXT COLLATE "C" NOT NULL REFERENCES content (hash),
         PRIMARY KEY (id, part_offset)
     );
     CREATE INDEX upload_parts_by_hash ON upload_parts (hash);"#,
    // 4: S3. Buckets (`default`, the native API's, and one for every bucket that
    // already has versions, so existing data stays reachable); a version's S3
    // attributes (JSON, NULL for none); multipart uploads and their parts (a part
    // points at content, so the collector leaves it alone while the upload lives);
    // access keys.
    r#"CREATE TABLE buckets (
         name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         created_ms BIGINT NOT NULL
     );
     INSERT INTO buckets (name, created_ms)
         SELECT b.name, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
         FROM (SELECT 'default' AS name UNION SELECT bucket FROM versions) b;
     ALTER TABLE versions ADD COLUMN attrs TEXT NULL;
     CREATE TABLE multipart_uploads (
         id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         bucket     TEXT COLLATE "C" NOT NULL REFERENCES buckets (name),
         name       TEXT COLLATE "C" NOT NULL,
         attrs      TEXT   NOT NULL,
         created_ms BIGINT NOT NULL
     );
     CREATE INDEX multipart_uploads_by_name ON multipart_uploads (bucket, name, id);
     CREATE INDEX multipart_uploads_by_age ON multipart_uploads (created_ms);
     CREATE TABLE multipart_parts (
         upload_id   TEXT COLLATE "C" NOT NULL REFERENCES multipart_uploads (id),
         part_number BIGINT NOT NULL,
         hash        TEXT COLLATE "C" NOT NULL REFERENCES content (hash),
         size        BIGINT NOT NULL,
         etag        TEXT   NOT NULL,
         created_ms  BIGINT NOT NULL,
         PRIMARY KEY (upload_id, part_number)
     );
     CREATE INDEX multipart_parts_by_hash ON multipart_parts (hash);
     CREATE TABLE access_keys (
         access_key TEXT COLLATE "C" NOT NULL PRIMARY KEY,
         secret     TEXT    NOT NULL,
         buckets    TEXT    NOT NULL,
         read_only  BOOLEAN NOT NULL,
         created_ms BIGINT  NOT NULL
     );"#,
];

/// The schema version this binary writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

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

const SQL_LATEST: &str = select_versions!("WHERE v.bucket = $1 AND v.name = $2 ORDER BY v.version DESC LIMIT 1");
const SQL_VERSION: &str = select_versions!("WHERE v.bucket = $1 AND v.name = $2 AND v.version = $3");
const SQL_VERSIONS: &str =
    select_versions!("WHERE v.bucket = $1 AND v.name = $2 AND v.version > $3 ORDER BY v.version LIMIT $4");

/// Listing, as [`ListStatements`] wants it: range constraints on the primary key of
/// `heads`. The left join keeps a head whose
/// version row is missing, which [`RawVersion::parse`] reports as corrupt instead of
/// silently skipping the name.
macro_rules! select_list {
    ($lower:literal, $upper:literal, $limit:literal) => {
        concat!(
            "SELECT h.bucket, h.name, h.latest, v.hash, v.size, v.created_ms, ",
            "c.hash, c.size, c.policy, c.placement, c.encoding, c.stored_size, v.attrs ",
            "FROM heads h ",
            "LEFT JOIN versions v ON v.bucket = h.bucket AND v.name = h.name AND v.version = h.latest ",
            "LEFT JOIN content c ON c.hash = v.hash ",
            "WHERE h.bucket = $1 AND h.name ",
            $lower,
            " $2 ",
            $upper,
            "AND (v.hash IS NOT NULL OR v.version IS NULL) ",
            "ORDER BY h.name LIMIT ",
            $limit
        )
    };
}

const LIST_STATEMENTS: ListStatements = ListStatements {
    from: select_list!(">=", "", "$3"),
    from_upto: select_list!(">=", "AND h.name < $3 ", "$4"),
    after: select_list!(">", "", "$3"),
    after_upto: select_list!(">", "AND h.name < $3 ", "$4"),
};

const SQL_CONTENT: &str = "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE hash = $1";
/// Records content and makes it live, row-locking it; returns no row when it is
/// deleting.
const SQL_UPSERT_CONTENT: &str = "INSERT INTO content (hash, size, policy, placement, encoding, stored_size) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (hash) DO UPDATE SET policy = excluded.policy, placement = excluded.placement, \
     encoding = excluded.encoding, stored_size = excluded.stored_size, \
     state = 'live', doomed_since_ms = NULL WHERE content.state <> 'deleting' \
     RETURNING size";
/// The database clock in ms since the Unix epoch.
macro_rules! db_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}
/// The placement index of one hash: cleared, then filled from its placement JSON.
const SQL_INDEX_CLEAR: &str = "DELETE FROM placements WHERE hash = $1";
const SQL_INDEX_FILL: &str = "INSERT INTO placements (server, hash, shard) \
     SELECT j.value, $1, j.key::BIGINT FROM json_each_text($2::TEXT::json) j ON CONFLICT DO NOTHING";
const SQL_STATE: &str = "SELECT state, doomed_since_ms FROM content WHERE hash = $1";
/// `begin_delete`'s first statement: the row's state, row-locking it until commit.
const SQL_LOCK_STATE: &str = "SELECT state, doomed_since_ms FROM content WHERE hash = $1 FOR UPDATE";
const SQL_REVIVE: &str =
    "UPDATE content SET state = 'live', doomed_since_ms = NULL WHERE hash = $1 AND state = 'doomed'";
const SQL_DOOM: &str = "UPDATE content SET state = 'doomed', doomed_since_ms = $1 WHERE state = 'live' AND hash IN \
     (SELECT c.hash FROM content c WHERE c.state = 'live' \
      AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM upload_parts p WHERE p.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM multipart_parts m WHERE m.hash = c.hash) LIMIT $2 FOR UPDATE SKIP LOCKED)";
/// (`state <> 'live'`, implied by the state asked for, lets the planner use the
/// partial index `content_by_state`.)
const SQL_DOOMED_BEFORE: &str = "SELECT hash, size, policy, placement, encoding, stored_size FROM content \
     WHERE state = 'doomed' AND state <> 'live' AND doomed_since_ms <= $1 AND hash > $2 ORDER BY hash LIMIT $3";
/// A version, an upload's part or a multipart upload's part points at it.
const SQL_REFERENCED: &str = "SELECT EXISTS (SELECT 1 FROM versions WHERE hash = $1) \
     OR EXISTS (SELECT 1 FROM upload_parts WHERE hash = $1) \
     OR EXISTS (SELECT 1 FROM multipart_parts WHERE hash = $1)";
const SQL_INSERT_UPLOAD: &str = "INSERT INTO uploads (id, bucket, name, length, upload_offset, metadata, expected, \
     hasher, created_ms, expires_ms, finished_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const SQL_UPLOAD: &str = concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = $1");
/// `append_upload`'s first statement: row-locks the upload until the commit, so of
/// two appends at one offset the second waits and then sees the first's offset.
/// `delete_upload` takes the same lock before it removes the parts.
const SQL_LOCK_UPLOAD: &str =
    "SELECT upload_offset, finished_version IS NOT NULL FROM uploads WHERE id = $1 FOR UPDATE";
const SQL_INSERT_PART: &str = "INSERT INTO upload_parts (id, part_offset, size, hash) VALUES ($1, $2, $3, $4)";
const SQL_ADVANCE_UPLOAD: &str = "UPDATE uploads SET upload_offset = $2, hasher = $3, expires_ms = $4, \
     length = COALESCE(length, $5) WHERE id = $1";
const SQL_UPLOAD_PARTS: &str = "SELECT part_offset, size, hash FROM upload_parts \
     WHERE id = $1 AND part_offset >= $2 ORDER BY part_offset LIMIT $3";
/// The bucket of an upload, read before its row is locked: the bucket's lock comes
/// first (see the module docs), and an upload's bucket never changes.
const SQL_UPLOAD_BUCKET: &str = "SELECT bucket FROM uploads WHERE id = $1";
const SQL_LOCK_UPLOAD_TARGET: &str = "SELECT bucket, name, finished_version FROM uploads WHERE id = $1 FOR UPDATE";
const SQL_FINISH_UPLOAD: &str = "UPDATE uploads SET finished_version = $2 WHERE id = $1";
const SQL_DROP_PARTS: &str = "DELETE FROM upload_parts WHERE id = $1";
const SQL_DROP_UPLOAD: &str = "DELETE FROM uploads WHERE id = $1";
const SQL_EXPIRED_UPLOADS: &str =
    "SELECT id FROM uploads WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED";
const SQL_SET_STATE: &str = "UPDATE content SET state = $2, doomed_since_ms = NULL WHERE hash = $1";
const SQL_CLAIM: &str = "INSERT INTO content (hash, size, policy, placement, state) \
     VALUES ($1, 0, $2, '{}', 'deleting') ON CONFLICT (hash) DO NOTHING";
const SQL_DELETING: &str =
    "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE state = 'deleting' AND state <> 'live' AND hash > $1 ORDER BY hash LIMIT $2";
const SQL_LOCK_DELETING: &str = "SELECT 1 FROM content WHERE hash = $1 AND state = 'deleting' FOR UPDATE";
const SQL_FINISH: &str = "DELETE FROM content WHERE hash = $1 AND state = 'deleting'";
const SQL_COUNTS: &str = "SELECT state, count(*) FROM content GROUP BY state";
const SQL_NEWEST_FULL: &str = "SELECT version, hash IS NULL, created_ms FROM versions \
     WHERE bucket = $1 AND name = $2 ORDER BY version DESC LIMIT 1";
const SQL_KTH_NEWEST: &str =
    "SELECT version FROM versions WHERE bucket = $1 AND name = $2 ORDER BY version DESC LIMIT 1 OFFSET $3";
const SQL_PRUNE_BELOW: &str = "DELETE FROM versions WHERE bucket = $1 AND name = $2 AND version < $3";
const SQL_PRUNE_ALL: &str = "DELETE FROM versions WHERE bucket = $1 AND name = $2";
const SQL_DROP_HEAD: &str = "DELETE FROM heads WHERE bucket = $1 AND name = $2";
const SQL_NAMES_FIRST: &str = "SELECT bucket, name FROM heads ORDER BY bucket, name LIMIT $1";
const SQL_NAMES_AFTER: &str =
    "SELECT bucket, name FROM heads WHERE (bucket, name) > ($1, $2) ORDER BY bucket, name LIMIT $3";
const SQL_CONTENTS_ON: &str = "SELECT c.hash, c.size, c.policy, c.placement, c.encoding, c.stored_size FROM \
     (SELECT DISTINCT hash FROM placements WHERE server = $1 AND hash > $2 ORDER BY hash LIMIT $3) p \
     JOIN content c ON c.hash = p.hash ORDER BY c.hash";
const SQL_PLACEMENT_SERVERS: &str = "SELECT server, count(*) FROM placements GROUP BY server ORDER BY server";
/// Records sightings of distinct servers (an array of them, sorted so that
/// concurrent callers lock rows in one order).
const SQL_SAW: &str = "INSERT INTO server_sightings (server, last_seen_ms) SELECT s, $2 FROM unnest($1::TEXT[]) s \
     ON CONFLICT (server) DO UPDATE SET last_seen_ms = GREATEST(server_sightings.last_seen_ms, excluded.last_seen_ms)";
const SQL_SIGHTINGS: &str = "SELECT server, last_seen_ms FROM server_sightings ORDER BY server";
const SQL_FORGET: &str = "DELETE FROM server_sightings WHERE server = $1";
/// Takes the lease for $3 ms of the database's clock if it is free, expired or the
/// holder's already: one statement, atomic against every other store.
const SQL_ACQUIRE: &str = concat!(
    "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, ",
    db_now_ms!(),
    " + $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms ",
    "WHERE leases.holder = excluded.holder OR leases.expires_ms <= ",
    db_now_ms!()
);
const SQL_RELEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";
const SQL_HOLDER: &str = concat!("SELECT holder FROM leases WHERE name = $1 AND expires_ms > ", db_now_ms!());
const SQL_CURSOR: &str = "SELECT value FROM worker_cursors WHERE name = $1";
const SQL_SET_CURSOR: &str = "INSERT INTO worker_cursors (name, value) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value";
const SQL_CLEAR_CURSOR: &str = "DELETE FROM worker_cursors WHERE name = $1";
/// Takes the name's next version number and row-locks its head until commit.
const SQL_NEXT_VERSION: &str = "INSERT INTO heads (bucket, name, latest) VALUES ($1, $2, 1) \
     ON CONFLICT (bucket, name) DO UPDATE SET latest = heads.latest + 1 \
     RETURNING latest";
const SQL_INSERT_VERSION: &str = "INSERT INTO versions (bucket, name, version, hash, size, created_ms, attrs) \
     VALUES ($1, $2, $3, $4, $5, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT, $6) \
     RETURNING created_ms";
const SQL_SET_PLACEMENT: &str = "UPDATE content SET placement = $2 WHERE hash = $1";
/// A delete's check: the name's newest version number, row-locking its head.
const SQL_LOCK_HEAD: &str = "SELECT latest FROM heads WHERE bucket = $1 AND name = $2 FOR UPDATE";
/// A conditional write's head row, so that it can be locked even for a new name
/// (`latest` 0: the next version is 1; rolled back with a failed condition).
const SQL_ENSURE_HEAD: &str =
    "INSERT INTO heads (bucket, name, latest) VALUES ($1, $2, 0) ON CONFLICT (bucket, name) DO NOTHING";
const SQL_IS_TOMBSTONE: &str = "SELECT hash IS NULL FROM versions WHERE bucket = $1 AND name = $2 AND version = $3";
const SQL_CREATE_BUCKET: &str = "INSERT INTO buckets (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const SQL_BUCKET: &str = "SELECT name, created_ms FROM buckets WHERE name = $1";
const SQL_BUCKETS: &str = "SELECT name, created_ms FROM buckets ORDER BY name";
/// What adds to a bucket (`put_object`, `create_multipart`, `complete_multipart`)
/// share-locks its row until the commit; `delete_bucket` locks it exclusively.
const SQL_SHARE_BUCKET: &str = "SELECT 1 FROM buckets WHERE name = $1 FOR SHARE";
const SQL_LOCK_BUCKET: &str = "SELECT 1 FROM buckets WHERE name = $1 FOR UPDATE";
/// A version (tombstones too) is in the bucket: what keeps it from deletion.
const SQL_BUCKET_HAS_VERSION: &str = "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket = $1)";
/// The bucket's tus uploads, and whether each is still open, locked against
/// appends and finishes until the commit (in id order). `uploads` has no index on
/// the bucket: this scans it, which only a bucket deletion does, and the table
/// holds only unexpired uploads (the expiry worker removes the rest).
const SQL_LOCK_BUCKET_UPLOADS: &str =
    "SELECT id, finished_version IS NULL FROM uploads WHERE bucket = $1 ORDER BY id FOR UPDATE";
/// The bucket's multipart uploads, locked against `put_part` until the commit.
const SQL_LOCK_BUCKET_MULTIPART: &str = "SELECT id FROM multipart_uploads WHERE bucket = $1 ORDER BY id FOR UPDATE";
const SQL_DROP_BUCKET: &str = "DELETE FROM buckets WHERE name = $1";
const SQL_DELETE_VERSION: &str = "DELETE FROM versions WHERE bucket = $1 AND name = $2 AND version = $3";
const SQL_MAX_VERSION: &str = "SELECT MAX(version) FROM versions WHERE bucket = $1 AND name = $2";
const SQL_SET_HEAD: &str = "UPDATE heads SET latest = $3 WHERE bucket = $1 AND name = $2";

/// `list_versions`, as [`PairStatements`] wants it: a range on the primary key of
/// `versions` from `$2` (whose own versions count only up to `$3`), newest
/// version first within a name (an incremental sort, a name at a time).
macro_rules! select_version_list {
    ($upper:literal, $limit:literal) => {
        select_versions!(
            "WHERE v.bucket = $1 AND v.name >= $2 AND (v.name > $2 OR v.version <= $3) ",
            $upper,
            "ORDER BY v.name, v.version DESC LIMIT ",
            $limit
        )
    };
}

const VERSION_LIST_STATEMENTS: PairStatements =
    PairStatements { open: select_version_list!("", "$4"), upto: select_version_list!("AND v.name < $4 ", "$5") };

/// `multipart_uploads`, as [`ListStatements`] wants it: a range on the index
/// `multipart_uploads_by_name` from (`$2`, `$3`).
macro_rules! select_uploads {
    ($op:literal, $upper:literal, $limit:literal) => {
        concat!(
            "SELECT ",
            multipart_columns!(),
            " FROM multipart_uploads WHERE bucket = $1 AND (name, id) ",
            $op,
            " ($2, $3) ",
            $upper,
            "ORDER BY name, id LIMIT ",
            $limit
        )
    };
}

const UPLOAD_LIST_STATEMENTS: ListStatements = ListStatements {
    from: select_uploads!(">=", "", "$4"),
    from_upto: select_uploads!(">=", "AND name < $4 ", "$5"),
    after: select_uploads!(">", "", "$4"),
    after_upto: select_uploads!(">", "AND name < $4 ", "$5"),
};

const SQL_INSERT_MULTIPART: &str =
    "INSERT INTO multipart_uploads (id, bucket, name, attrs, created_ms) VALUES ($1, $2, $3, $4, $5)";
const SQL_MULTIPART: &str = concat!("SELECT ", multipart_columns!(), " FROM multipart_uploads WHERE id = $1");
/// `put_part`'s first statement: the upload, share-locked so that no abort or
/// completion removes it (and its parts) before this part is in.
const SQL_SHARE_MULTIPART: &str = "SELECT 1 FROM multipart_uploads WHERE id = $1 FOR SHARE";
/// An abort's or completion's first lock: the upload, locked against `put_part`
/// until the commit.
const SQL_LOCK_MULTIPART: &str = "SELECT bucket, name FROM multipart_uploads WHERE id = $1 FOR UPDATE";
/// The bucket of a multipart upload, read before the completion locks it (as
/// [`SQL_UPLOAD_BUCKET`]).
const SQL_MULTIPART_BUCKET: &str = "SELECT bucket FROM multipart_uploads WHERE id = $1";
/// Sets a part, replacing an earlier upload of its number.
const SQL_UPSERT_MULTIPART_PART: &str = "INSERT INTO multipart_parts \
     (upload_id, part_number, hash, size, etag, created_ms) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (upload_id, part_number) DO UPDATE SET hash = excluded.hash, size = excluded.size, \
     etag = excluded.etag, created_ms = excluded.created_ms";
const SQL_MULTIPART_PARTS: &str = concat!(
    "SELECT ",
    multipart_part_columns!(),
    " FROM multipart_parts WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3"
);
const SQL_DROP_MULTIPART_PARTS: &str = "DELETE FROM multipart_parts WHERE upload_id = $1";
const SQL_DROP_MULTIPART: &str = "DELETE FROM multipart_uploads WHERE id = $1";
const SQL_STALE_MULTIPART: &str = "SELECT id FROM multipart_uploads WHERE created_ms <= $1 \
     ORDER BY created_ms LIMIT $2 FOR UPDATE SKIP LOCKED";
const SQL_CREATE_KEY: &str = "INSERT INTO access_keys (access_key, secret, buckets, read_only, created_ms) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (access_key) DO NOTHING";
const SQL_KEY: &str = concat!("SELECT ", key_columns!(), " FROM access_keys WHERE access_key = $1");
const SQL_KEYS: &str = concat!("SELECT ", key_columns!(), " FROM access_keys ORDER BY access_key");
const SQL_DELETE_KEY: &str = "DELETE FROM access_keys WHERE access_key = $1";

/// A [`MetaStore`] in a PostgreSQL schema, shareable by API servers on any number
/// of hosts.
///
/// Holds a pool of up to 16 connections; cheap to share (wrap it in an `Arc`).
/// Dropping it closes the connections.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
}

impl std::fmt::Debug for PostgresStore {
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
        Ok(PostgresStore { pool, schema: target.schema })
    }

    /// The PostgreSQL schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A pooled connection, or `Unavailable` after [`POOL_WAIT`].
    async fn client(&self, what: &str) -> Result<Object, MetaError> {
        self.pool.get().await.map_err(|e| MetaError::Unavailable(format!("{what}: {}", describe_pool(&e))))
    }

    async fn query_versions(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<VersionRecord>, MetaError> {
        let client = self.client(what).await?;
        let stmt = client.prepare_cached(sql).await.context(what)?;
        let rows = client.query(&stmt, params).await.context(what)?;
        rows.iter().map(|row| raw_version(row).context(what)?.parse()).collect()
    }

    async fn query_version(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<VersionRecord>, MetaError> {
        let client = self.client(what).await?;
        let stmt = client.prepare_cached(sql).await.context(what)?;
        let row = client.query_opt(&stmt, params).await.context(what)?;
        row.map(|row| raw_version(&row).context(what)?.parse()).transpose()
    }
}

impl PostgresStore {
    /// Content rows of a query, validated.
    async fn query_contents(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<ContentRecord>, MetaError> {
        let client = self.client(what).await?;
        let stmt = client.prepare_cached(sql).await.context(what)?;
        let rows = client.query(&stmt, params).await.context(what)?;
        rows.iter().map(|row| content_row(row, what)).collect()
    }

    /// `(text, bigint)` rows of a query.
    async fn query_pairs(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<(String, i64)>, MetaError> {
        let client = self.client(what).await?;
        let stmt = client.prepare_cached(sql).await.context(what)?;
        let rows = client.query(&stmt, params).await.context(what)?;
        rows.iter().map(|row| Ok((row.try_get(0).context(what)?, row.try_get(1).context(what)?))).collect()
    }

    /// Runs one statement; returns how many rows it changed.
    async fn execute(&self, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, MetaError> {
        let client = self.client(what).await?;
        let stmt = client.prepare_cached(sql).await.context(what)?;
        client.execute(&stmt, params).await.context(what)
    }

    /// The first column of the one row a query returns, if any.
    async fn query_text(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<String>, MetaError> {
        let client = self.client(what).await?;
        let stmt = client.prepare_cached(sql).await.context(what)?;
        match client.query_opt(&stmt, params).await.context(what)? {
            Some(row) => Ok(Some(row.try_get(0).context(what)?)),
            None => Ok(None),
        }
    }
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

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, under an advisory
/// lock so that concurrent openers migrate once, or refuses a newer schema.
async fn migrate(client: &mut Object, schema: &str) -> Result<(), String> {
    let failed = |what: &str, e: tokio_postgres::Error| format!("{what}: {}", describe(&e));
    let tx = client.transaction().await.map_err(|e| failed("cannot begin the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("cairn schema {schema}")])
        .await
        .map_err(|e| failed("cannot take the migration lock", e))?;
    // Look before creating: CREATE SCHEMA needs the CREATE privilege on the database
    // even when the schema exists, and an operator may have created it for us.
    let exists = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&schema])
        .await
        .map_err(|e| failed("cannot look up the schema", e))?
        .try_get::<_, bool>(0)
        .map_err(|e| failed("cannot look up the schema", e))?;
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .map_err(|e| failed(&format!("cannot create schema {schema}"), e))?;
    }
    tx.batch_execute(&format!(
        "SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER     NOT NULL PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(|e| failed("cannot create the schema_version table", e))?;
    let found: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| failed("cannot read the schema version", e))?;
    let known = i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX);
    if found > known {
        return Err(format!(
            "schema version {found} is newer than this binary knows ({known}): upgrade cairn to use this store"
        ));
    }
    let Ok(found) = usize::try_from(found) else {
        return Err(format!("invalid schema version {found}"));
    };
    if found == MIGRATIONS.len() {
        // Nothing to do; ending the transaction releases the lock.
        return tx.rollback().await.map_err(|e| failed("cannot end the migration check", e));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).await.map_err(|e| failed(&format!("migration to schema version {version} failed"), e))?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&version])
            .await
            .map_err(|e| failed("cannot record the schema version", e))?;
    }
    tx.commit().await.map_err(|e| failed("cannot commit the migration", e))
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

/// Adds the next version of `bucket/name` inside `tx` (not committed): upserts the
/// content row, takes the next number from the name's head (row-locking it until
/// the commit) and inserts the version.
async fn add_version(
    tx: &deadpool_postgres::Transaction<'_>,
    bucket: &str,
    name: &str,
    content: Option<&ContentRecord>,
    attrs: Option<&ObjectAttrs>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_version";
    let json = attrs.map(attrs_json).transpose()?;
    let row = match content {
        Some(c) => Some(record_content(tx, WHAT, c).await?),
        None => None,
    };
    let stmt = tx.prepare_cached(SQL_NEXT_VERSION).await.context(WHAT)?;
    let next: i64 = tx.query_one(&stmt, &[&bucket, &name]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
    let version = next_version(bucket, name, next)?;
    let (hash, size) = ContentRow::version_columns(row.as_ref());
    let stmt = tx.prepare_cached(SQL_INSERT_VERSION).await.context(WHAT)?;
    let created_ms: i64 = tx
        .query_one(&stmt, &[&bucket, &name, &next, &hash, &size, &json])
        .await
        .and_then(|r| r.try_get(0))
        .context(WHAT)?;
    Ok(VersionRecord {
        bucket: bucket.to_string(),
        name: name.to_string(),
        version,
        content: content.cloned(),
        created_ms,
        attrs: attrs.cloned(),
    })
}

/// `put_object` inside `tx`: the bucket's row is share-locked first (until the
/// commit), so a `delete_bucket` either finished before (no such bucket) or waits
/// and then sees this version. A `condition` is checked with the name's head row
/// locked (made, at 0, if the name is new: a concurrent writer of the new name waits
/// on that insert), so no write of the name comes between the check and the insert.
async fn add_object(
    tx: &deadpool_postgres::Transaction<'_>,
    bucket: &str,
    name: &str,
    content: &ContentRecord,
    attrs: &ObjectAttrs,
    condition: Option<&Precondition>,
) -> Result<VersionRecord, MetaError> {
    const WHAT: &str = "put_object";
    share_bucket(tx, WHAT, bucket).await?;
    if let Some(condition) = condition {
        let stmt = tx.prepare_cached(SQL_ENSURE_HEAD).await.context(WHAT)?;
        tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
        tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LATEST).await.context(WHAT)?;
        let latest = match tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)? {
            Some(row) => Some(raw_version(&row).context(WHAT)?.parse()?),
            None => None,
        };
        if !condition.holds(latest.as_ref()) {
            return Err(MetaError::PreconditionFailed { bucket: bucket.to_string(), name: name.to_string() });
        }
    }
    add_version(tx, bucket, name, Some(content), Some(attrs)).await
}

/// Share-locks the bucket's row inside `tx`; [`MetaError::NoSuchBucket`] when
/// there is none.
async fn share_bucket(tx: &deadpool_postgres::Transaction<'_>, what: &str, bucket: &str) -> Result<(), MetaError> {
    let stmt = tx.prepare_cached(SQL_SHARE_BUCKET).await.context(what)?;
    match tx.query_opt(&stmt, &[&bucket]).await.context(what)? {
        Some(_) => Ok(()),
        None => Err(MetaError::NoSuchBucket { bucket: bucket.to_string() }),
    }
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

    /// The ids of up to `$2` uploads due at `$1`.
    fn due(self) -> &'static str {
        match self {
            Batch::ExpiredUploads => SQL_EXPIRED_UPLOADS,
            Batch::StaleMultipart => SQL_STALE_MULTIPART,
        }
    }

    /// Removes one upload and its parts inside `tx`.
    async fn drop(self, tx: &deadpool_postgres::Transaction<'_>, id: &str) -> Result<bool, MetaError> {
        match self {
            Batch::ExpiredUploads => drop_upload(tx, self.what(), id).await,
            Batch::StaleMultipart => drop_multipart(tx, self.what(), id).await,
        }
    }
}

impl PostgresStore {
    /// Removes up to `limit` uploads of `batch` due at `at`, in one transaction;
    /// returns how many.
    async fn remove_batch(&self, batch: Batch, at: i64, limit: usize) -> Result<usize, MetaError> {
        let what = batch.what();
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        let mut client = self.client(what).await?;
        let tx = client.transaction().await.context(what)?;
        let stmt = tx.prepare_cached(batch.due()).await.context(what)?;
        let rows = tx.query(&stmt, &[&at, &limit]).await.context(what)?;
        let mut removed = 0;
        for row in rows {
            let id: String = row.try_get(0).context(what)?;
            if batch.drop(&tx, &id).await? {
                removed += 1;
            }
        }
        tx.commit().await.context(what)?;
        Ok(removed)
    }
}

/// Locks and removes every upload into `bucket`, tus and multipart, with their
/// parts, inside `tx` (the caller holds the bucket's row lock, so no new one
/// comes), as `delete_upload` and `abort_multipart` each remove one; returns how
/// many were open. A finished tus upload goes too (its row only answers a repeated
/// finish) but was not aborted, so it is not counted.
async fn abort_bucket_uploads(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    bucket: &str,
) -> Result<u64, MetaError> {
    let stmt = tx.prepare_cached(SQL_LOCK_BUCKET_UPLOADS).await.context(what)?;
    let tus = tx.query(&stmt, &[&bucket]).await.context(what)?;
    let stmt = tx.prepare_cached(SQL_LOCK_BUCKET_MULTIPART).await.context(what)?;
    let multipart = tx.query(&stmt, &[&bucket]).await.context(what)?;
    let mut aborted = 0;
    for row in &tus {
        let (id, open): (String, bool) = (row.try_get(0).context(what)?, row.try_get(1).context(what)?);
        if drop_upload(tx, what, &id).await? && open {
            aborted += 1;
        }
    }
    for row in &multipart {
        let id: String = row.try_get(0).context(what)?;
        if drop_multipart(tx, what, &id).await? {
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Removes a multipart upload's part rows and the upload itself inside `tx` (the
/// caller has locked the upload's row); true if the upload existed.
async fn drop_multipart(tx: &deadpool_postgres::Transaction<'_>, what: &str, id: &str) -> Result<bool, MetaError> {
    let stmt = tx.prepare_cached(SQL_DROP_MULTIPART_PARTS).await.context(what)?;
    tx.execute(&stmt, &[&id]).await.context(what)?;
    let stmt = tx.prepare_cached(SQL_DROP_MULTIPART).await.context(what)?;
    Ok(tx.execute(&stmt, &[&id]).await.context(what)? > 0)
}

/// Maps a `multipart_uploads` row (columns as [`multipart_columns`]) onto
/// [`RawMultipart`].
fn raw_multipart(row: &Row) -> Result<RawMultipart, tokio_postgres::Error> {
    Ok(RawMultipart {
        id: row.try_get(0)?,
        bucket: row.try_get(1)?,
        name: row.try_get(2)?,
        attrs: row.try_get(3)?,
        created_ms: row.try_get(4)?,
    })
}

/// Maps an `access_keys` row (columns as [`key_columns`]) onto [`RawAccessKey`].
fn raw_key(row: &Row) -> Result<RawAccessKey, tokio_postgres::Error> {
    Ok(RawAccessKey {
        access_key: row.try_get(0)?,
        secret: row.try_get(1)?,
        buckets: row.try_get(2)?,
        read_only: row.try_get(3)?,
        created_ms: row.try_get(4)?,
    })
}

/// A bucket row (`name, created_ms`).
fn bucket_row(row: &Row, what: &str) -> Result<BucketRecord, MetaError> {
    Ok(BucketRecord { name: row.try_get(0).context(what)?, created_ms: row.try_get(1).context(what)? })
}

/// Records `content` (inserted, or updated and made live, row-locking it) and its
/// placement index inside `tx`: the one content insert of this store, used by
/// `put_version` and by an upload's appended parts. Content the collector is
/// deleting is refused with [`MetaError::ContentDeleting`].
async fn record_content(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    content: &ContentRecord,
) -> Result<ContentRow, MetaError> {
    let row = ContentRow::encode(content)?;
    let stmt = tx.prepare_cached(SQL_UPSERT_CONTENT).await.context(what)?;
    let stored = tx
        .query_opt(&stmt, &[&row.hash, &row.size, &row.policy, &row.placement, &row.encoding, &row.stored_size])
        .await
        .context(what)?;
    let Some(stored) = stored else {
        return Err(MetaError::ContentDeleting { hash: content.hash });
    };
    row.check_recorded_size(stored.try_get(0).context(what)?)?;
    reindex(tx, what, &row.hash, &row.placement).await?;
    Ok(row)
}

/// Maps an `uploads` row (columns as [`upload_columns`]) onto [`RawUpload`].
fn raw_upload(row: &Row) -> Result<RawUpload, tokio_postgres::Error> {
    Ok(RawUpload {
        id: row.try_get(0)?,
        bucket: row.try_get(1)?,
        name: row.try_get(2)?,
        length: row.try_get(3)?,
        offset: row.try_get(4)?,
        metadata: row.try_get(5)?,
        expected: row.try_get(6)?,
        hasher: row.try_get(7)?,
        created_ms: row.try_get(8)?,
        expires_ms: row.try_get(9)?,
        finished_version: row.try_get(10)?,
    })
}

/// Removes an upload's part rows and the upload itself inside `tx` (the caller has
/// locked the upload's row); true if the upload existed.
async fn drop_upload(tx: &deadpool_postgres::Transaction<'_>, what: &str, id: &str) -> Result<bool, MetaError> {
    let stmt = tx.prepare_cached(SQL_DROP_PARTS).await.context(what)?;
    tx.execute(&stmt, &[&id]).await.context(what)?;
    let stmt = tx.prepare_cached(SQL_DROP_UPLOAD).await.context(what)?;
    Ok(tx.execute(&stmt, &[&id]).await.context(what)? > 0)
}

/// Replaces the placement index rows of `hash` by those of `placement` (JSON),
/// inside `tx`.
async fn reindex(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    hash: &str,
    placement: &str,
) -> Result<(), MetaError> {
    let stmt = tx.prepare_cached(SQL_INDEX_CLEAR).await.context(what)?;
    tx.execute(&stmt, &[&hash]).await.context(what)?;
    let stmt = tx.prepare_cached(SQL_INDEX_FILL).await.context(what)?;
    tx.execute(&stmt, &[&hash, &placement]).await.context(what)?;
    Ok(())
}

/// The state in a `(state, doomed_since_ms)` row of the row of `hex`.
fn state_row(hex: &str, row: Option<Row>, what: &str) -> Result<Option<ContentState>, MetaError> {
    let Some(row) = row else {
        return Ok(None);
    };
    let (state, since): (String, Option<i64>) = (row.try_get(0).context(what)?, row.try_get(1).context(what)?);
    parse_state(hex, &state, since).map(Some)
}

/// A content row ([`RawContent`]'s columns), validated.
fn content_row(row: &Row, what: &str) -> Result<ContentRecord, MetaError> {
    let read = |row: &Row| -> Result<RawContent, tokio_postgres::Error> {
        Ok(RawContent {
            hash: row.try_get(0)?,
            size: row.try_get(1)?,
            policy: row.try_get(2)?,
            placement: row.try_get(3)?,
            encoding: row.try_get(4)?,
            stored_size: row.try_get(5)?,
        })
    };
    read(row).context(what)?.parse()
}

/// Retention of `bucket/name` inside `tx`: the head is row-locked first, so a
/// concurrent put_version or delete of the name waits for this to commit (and one
/// that finds the head gone starts the name again at version 1).
async fn prune_in(
    tx: &deadpool_postgres::Transaction<'_>,
    bucket: &str,
    name: &str,
    keep: Option<u64>,
    tombstone_cutoff_ms: Option<i64>,
) -> Result<u64, MetaError> {
    const WHAT: &str = "prune";
    let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
    if tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)?.is_none() {
        return Ok(0);
    }
    // Statements of their own, after the lock: they see every version committed
    // while this one waited for it (READ COMMITTED).
    let stmt = tx.prepare_cached(SQL_NEWEST_FULL).await.context(WHAT)?;
    let newest = match tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)? {
        None => None,
        Some(row) => Some((
            row.try_get::<_, i64>(0).context(WHAT)?,
            row.try_get::<_, bool>(1).context(WHAT)?,
            row.try_get::<_, i64>(2).context(WHAT)?,
        )),
    };
    let kth = match (newest, keep_offset(keep)) {
        (Some(_), Some(offset)) => {
            let stmt = tx.prepare_cached(SQL_KTH_NEWEST).await.context(WHAT)?;
            match tx.query_opt(&stmt, &[&bucket, &name, &offset]).await.context(WHAT)? {
                Some(row) => Some(row.try_get::<_, i64>(0).context(WHAT)?),
                None => None,
            }
        }
        _ => None,
    };
    let removed = match prune_step(newest, kth, tombstone_cutoff_ms) {
        Prune::Nothing => 0,
        Prune::Below(v) => {
            let stmt = tx.prepare_cached(SQL_PRUNE_BELOW).await.context(WHAT)?;
            tx.execute(&stmt, &[&bucket, &name, &v]).await.context(WHAT)?
        }
        Prune::All => {
            let stmt = tx.prepare_cached(SQL_PRUNE_ALL).await.context(WHAT)?;
            let removed = tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
            let stmt = tx.prepare_cached(SQL_DROP_HEAD).await.context(WHAT)?;
            tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
            removed
        }
    };
    Ok(removed)
}

/// Maps a row of the version queries onto [`RawVersion`].
fn raw_version(row: &Row) -> Result<RawVersion, tokio_postgres::Error> {
    Ok(RawVersion {
        bucket: row.try_get(0)?,
        name: row.try_get(1)?,
        version: row.try_get(2)?,
        hash: row.try_get(3)?,
        size: row.try_get(4)?,
        created_ms: row.try_get(5)?,
        content_hash: row.try_get(6)?,
        content_size: row.try_get(7)?,
        policy: row.try_get(8)?,
        placement: row.try_get(9)?,
        encoding: row.try_get(10)?,
        stored_size: row.try_get(11)?,
        attrs: row.try_get(12)?,
    })
}

#[async_trait]
impl VersionStore for PostgresStore {
    async fn put_version(
        &self,
        bucket: &str,
        name: &str,
        content: Option<&ContentRecord>,
    ) -> Result<VersionRecord, MetaError> {
        const WHAT: &str = "put_version";
        let mut client = self.client(WHAT).await?;
        // Dropping the transaction unfinished (an error below, or the caller giving
        // up) rolls it back.
        let tx = client.transaction().await.context(WHAT)?;
        let record = add_version(&tx, bucket, name, content, None).await?;
        tx.commit().await.context(WHAT)?;
        Ok(record)
    }

    async fn delete(&self, bucket: &str, name: &str) -> Result<DeleteOutcome, MetaError> {
        const WHAT: &str = "delete";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The head's row lock, held to the commit, makes the check and the insert
        // one step: a concurrent delete (or put) of the name waits here, and then
        // reads the head this transaction leaves.
        let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
        let head = tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)?;
        let newest = match head {
            None => None,
            Some(head) => {
                let latest: i64 = head.try_get(0).context(WHAT)?;
                // A statement of its own, so that it sees the versions committed
                // while this one waited for the lock (READ COMMITTED).
                let stmt = tx.prepare_cached(SQL_IS_TOMBSTONE).await.context(WHAT)?;
                let row = tx.query_opt(&stmt, &[&bucket, &name, &latest]).await.context(WHAT)?;
                let Some(row) = row else {
                    return Err(MetaError::Corrupt(format!(
                        "{bucket}/{name}: the head names version {latest}, which is missing"
                    )));
                };
                Some((latest, row.try_get::<_, bool>(0).context(WHAT)?))
            }
        };
        if let Some(refused) = delete_refused(bucket, name, newest)? {
            return Ok(refused);
        }
        let record = add_version(&tx, bucket, name, None, None).await?;
        tx.commit().await.context(WHAT)?;
        Ok(DeleteOutcome::Deleted(record))
    }

    async fn latest(&self, bucket: &str, name: &str) -> Result<Option<VersionRecord>, MetaError> {
        self.query_version("latest", SQL_LATEST, &[&bucket, &name]).await
    }

    async fn version(&self, bucket: &str, name: &str, version: u64) -> Result<Option<VersionRecord>, MetaError> {
        let Some(version) = to_sql_int(version) else {
            return Ok(None);
        };
        self.query_version("version", SQL_VERSION, &[&bucket, &name, &version]).await
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
        self.query_versions("versions", SQL_VERSIONS, &[&bucket, &name, &page.after, &page.limit]).await
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
        let sql = range.statement(&LIST_STATEMENTS);
        match &range.upper {
            Some(upper) => self.query_versions("list", sql, &[&bucket, &range.lower, upper, &range.limit]).await,
            None => self.query_versions("list", sql, &[&bucket, &range.lower, &range.limit]).await,
        }
    }

    async fn prune(
        &self,
        bucket: &str,
        name: &str,
        keep: Option<u64>,
        tombstone_cutoff_ms: Option<i64>,
    ) -> Result<u64, MetaError> {
        const WHAT: &str = "prune";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let removed = prune_in(&tx, bucket, name, keep, tombstone_cutoff_ms).await?;
        tx.commit().await.context(WHAT)?;
        Ok(removed)
    }

    async fn names(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<(String, String)>, MetaError> {
        const WHAT: &str = "names";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let rows = match after {
            None => {
                let stmt = client.prepare_cached(SQL_NAMES_FIRST).await.context(WHAT)?;
                client.query(&stmt, &[&limit]).await.context(WHAT)?
            }
            Some((bucket, name)) => {
                let stmt = client.prepare_cached(SQL_NAMES_AFTER).await.context(WHAT)?;
                client.query(&stmt, &[&bucket, &name, &limit]).await.context(WHAT)?
            }
        };
        rows.iter().map(|row| Ok((row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?))).collect()
    }

    async fn put_object(
        &self,
        bucket: &str,
        name: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
        condition: Option<&Precondition>,
    ) -> Result<VersionRecord, MetaError> {
        const WHAT: &str = "put_object";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let record = add_object(&tx, bucket, name, content, attrs, condition).await?;
        tx.commit().await.context(WHAT)?;
        Ok(record)
    }

    async fn delete_version(&self, bucket: &str, name: &str, version: u64) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_version";
        let Some(version) = to_sql_int(version) else {
            return Ok(false);
        };
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The head's lock, as put_version and delete take it: the head is moved to
        // the newest remaining version (or dropped with the last one, like prune)
        // with no write of the name in between.
        let stmt = tx.prepare_cached(SQL_LOCK_HEAD).await.context(WHAT)?;
        let Some(head) = tx.query_opt(&stmt, &[&bucket, &name]).await.context(WHAT)? else {
            return Ok(false);
        };
        let latest: i64 = head.try_get(0).context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_DELETE_VERSION).await.context(WHAT)?;
        if tx.execute(&stmt, &[&bucket, &name, &version]).await.context(WHAT)? == 0 {
            return Ok(false);
        }
        if version == latest {
            let stmt = tx.prepare_cached(SQL_MAX_VERSION).await.context(WHAT)?;
            let newest: Option<i64> =
                tx.query_one(&stmt, &[&bucket, &name]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
            match newest {
                Some(newest) => {
                    let stmt = tx.prepare_cached(SQL_SET_HEAD).await.context(WHAT)?;
                    tx.execute(&stmt, &[&bucket, &name, &newest]).await.context(WHAT)?;
                }
                None => {
                    let stmt = tx.prepare_cached(SQL_DROP_HEAD).await.context(WHAT)?;
                    tx.execute(&stmt, &[&bucket, &name]).await.context(WHAT)?;
                }
            }
        }
        tx.commit().await.context(WHAT)?;
        Ok(true)
    }

    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        const WHAT: &str = "list_versions";
        let Some(r) = VersionListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let sql = r.statement(&VERSION_LIST_STATEMENTS);
        match &r.upper {
            Some(upper) => self.query_versions(WHAT, sql, &[&bucket, &r.lower, &r.max_version, upper, &r.limit]).await,
            None => self.query_versions(WHAT, sql, &[&bucket, &r.lower, &r.max_version, &r.limit]).await,
        }
    }
}

#[async_trait]
impl ContentStore for PostgresStore {
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        const WHAT: &str = "content";
        let hex = hash.to_hex();
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_CONTENT).await.context(WHAT)?;
        let Some(row) = client.query_opt(&stmt, &[&hex]).await.context(WHAT)? else {
            return Ok(None);
        };
        content_row(&row, WHAT).map(Some)
    }

    async fn content_state(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "content_state";
        let hex = hash.to_hex();
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_STATE).await.context(WHAT)?;
        state_row(&hex, client.query_opt(&stmt, &[&hex]).await.context(WHAT)?, WHAT)
    }

    async fn revive(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "revive";
        let hex = hash.to_hex();
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_REVIVE).await.context(WHAT)?;
        tx.execute(&stmt, &[&hex]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_STATE).await.context(WHAT)?;
        let state = state_row(&hex, tx.query_opt(&stmt, &[&hex]).await.context(WHAT)?, WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(state)
    }

    async fn doom_unreferenced(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        let doomed = self.execute("doom_unreferenced", SQL_DOOM, &[&now_ms, &limit]).await?;
        Ok(usize::try_from(doomed).unwrap_or(usize::MAX))
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
        self.query_contents("doomed_before", SQL_DOOMED_BEFORE, &[&cutoff_ms, &after, &limit]).await
    }

    async fn begin_delete(&self, hash: &ContentHash, cutoff_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "begin_delete";
        let hex = hash.to_hex();
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // Lock the content row first: a put_version of this content upserts (so
        // locks) the same row, so it has either committed (its version is seen by
        // the next statement, which reads anew under READ COMMITTED) or waits for
        // this step and then finds the row deleting.
        let stmt = tx.prepare_cached(SQL_LOCK_STATE).await.context(WHAT)?;
        let state = state_row(&hex, tx.query_opt(&stmt, &[&hex]).await.context(WHAT)?, WHAT)?;
        if !matches!(state, Some(ContentState::Doomed { .. })) {
            return Ok(false);
        }
        let stmt = tx.prepare_cached(SQL_REFERENCED).await.context(WHAT)?;
        let referenced: bool = tx.query_one(&stmt, &[&hex]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
        let (new_state, claimed) = match begin_delete_step(state, referenced, cutoff_ms) {
            BeginDelete::Delete => (DELETING, true),
            BeginDelete::Revive => (LIVE, false),
            BeginDelete::Leave => return Ok(false),
        };
        let stmt = tx.prepare_cached(SQL_SET_STATE).await.context(WHAT)?;
        tx.execute(&stmt, &[&hex, &new_state]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(claimed)
    }

    async fn claim_orphan(&self, hash: &ContentHash, policy: Policy) -> Result<bool, MetaError> {
        let (hex, policy) = (hash.to_hex(), policy.to_string());
        Ok(self.execute("claim_orphan", SQL_CLAIM, &[&hex, &policy]).await? > 0)
    }

    async fn deleting(&self, after: Option<&ContentHash>, limit: usize) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.query_contents("deleting", SQL_DELETING, &[&after, &limit]).await
    }

    async fn finish_delete(&self, hash: &ContentHash) -> Result<bool, MetaError> {
        const WHAT: &str = "finish_delete";
        let hex = hash.to_hex();
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_DELETING).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&hex]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let stmt = tx.prepare_cached(SQL_INDEX_CLEAR).await.context(WHAT)?;
        tx.execute(&stmt, &[&hex]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_FINISH).await.context(WHAT)?;
        let removed = tx.execute(&stmt, &[&hex]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(removed > 0)
    }

    async fn content_counts(&self) -> Result<ContentCounts, MetaError> {
        count_states(self.query_pairs("content_counts", SQL_COUNTS, &[]).await?)
    }
}

#[async_trait]
impl ClusterStore for PostgresStore {
    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError> {
        const WHAT: &str = "set_placement";
        let (hex, json) = (hash.to_hex(), placement_json(placement)?);
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_SET_PLACEMENT).await.context(WHAT)?;
        if tx.execute(&stmt, &[&hex, &json]).await.context(WHAT)? > 0 {
            reindex(&tx, WHAT, &hex, &json).await?;
        }
        tx.commit().await.context(WHAT)
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
        let after = hash_after(after);
        self.query_contents("contents_on", SQL_CONTENTS_ON, &[&server, &after, &limit]).await
    }

    async fn placement_servers(&self) -> Result<Vec<(String, u64)>, MetaError> {
        const WHAT: &str = "placement_servers";
        let rows = self.query_pairs(WHAT, SQL_PLACEMENT_SERVERS, &[]).await?;
        rows.into_iter().map(|(server, n)| Ok((server.clone(), count(n, || format!("{WHAT} {server}"))?))).collect()
    }

    async fn saw_servers(&self, servers: &[String], now_ms: i64) -> Result<(), MetaError> {
        let distinct: Vec<&str> =
            servers.iter().map(String::as_str).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        if distinct.is_empty() {
            return Ok(());
        }
        self.execute("saw_servers", SQL_SAW, &[&distinct, &now_ms]).await.map(drop)
    }

    async fn server_sightings(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.query_pairs("server_sightings", SQL_SIGHTINGS, &[]).await
    }

    async fn forget_server(&self, server: &str) -> Result<(), MetaError> {
        self.execute("forget_server", SQL_FORGET, &[&server]).await.map(drop)
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, MetaError> {
        Ok(self.execute("acquire_lease", SQL_ACQUIRE, &[&name, &holder, &ttl_ms(ttl)]).await? > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        self.execute("release_lease", SQL_RELEASE, &[&name, &holder]).await.map(drop)
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>, MetaError> {
        self.query_text("lease_holder", SQL_HOLDER, &[&name]).await
    }

    async fn worker_cursor(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "worker_cursor";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_CURSOR).await.context(WHAT)?;
        let Some(row) = client.query_opt(&stmt, &[&name]).await.context(WHAT)? else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row.try_get(0).context(WHAT)?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| MetaError::Corrupt(format!("{WHAT} {name:?}: the checkpoint is not UTF-8: {e}")))
    }

    async fn set_worker_cursor(&self, name: &str, value: Option<&str>) -> Result<(), MetaError> {
        match value {
            // Bytes, not TEXT: a checkpoint is opaque, and TEXT cannot hold NUL.
            Some(value) => self.execute("set_worker_cursor", SQL_SET_CURSOR, &[&name, &value.as_bytes()]).await,
            None => self.execute("set_worker_cursor", SQL_CLEAR_CURSOR, &[&name]).await,
        }
        .map(drop)
    }
}

#[async_trait]
impl UploadStore for PostgresStore {
    async fn create_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_upload";
        let u = upload;
        let length = u.length.map(|l| upload_int(l, "length")).transpose()?;
        let offset = upload_int(u.offset, "offset")?;
        let expected = u.expected.map(|h| h.to_hex());
        let finished = u.finished_version.map(|v| upload_int(v, "version")).transpose()?;
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        share_bucket(&tx, WHAT, &u.bucket).await?;
        let stmt = tx.prepare_cached(SQL_INSERT_UPLOAD).await.context(WHAT)?;
        tx.execute(
            &stmt,
            &[
                &u.id,
                &u.bucket,
                &u.name,
                &length,
                &offset,
                &u.metadata,
                &expected,
                &u.hasher,
                &u.created_ms,
                &u.expires_ms,
                &finished,
            ],
        )
        .await
        .context(WHAT)?;
        tx.commit().await.context(WHAT)
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        const WHAT: &str = "upload";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_UPLOAD).await.context(WHAT)?;
        let row = client.query_opt(&stmt, &[&id]).await.context(WHAT)?;
        row.map(|row| raw_upload(&row).context(WHAT)?.parse()).transpose()
    }

    async fn append_upload(&self, id: &str, append: UploadAppend<'_>) -> Result<AppendOutcome, MetaError> {
        const WHAT: &str = "append_upload";
        let length = append.length.map(|l| upload_int(l, "length")).transpose()?;
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_UPLOAD).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(AppendOutcome::Gone);
        };
        let (offset, finished): (i64, bool) = (row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?);
        let offset = u64::try_from(offset).map_err(|_| MetaError::Corrupt(format!("upload {id}: offset")))?;
        if finished || offset != append.expected_offset {
            return Ok(AppendOutcome::Conflict { offset });
        }
        let mut at = offset;
        for part in append.parts {
            let row = record_content(&tx, WHAT, part).await?;
            let stmt = tx.prepare_cached(SQL_INSERT_PART).await.context(WHAT)?;
            tx.execute(&stmt, &[&id, &upload_int(at, "offset")?, &row.size, &row.hash]).await.context(WHAT)?;
            at += part.size;
        }
        let stmt = tx.prepare_cached(SQL_ADVANCE_UPLOAD).await.context(WHAT)?;
        let hasher = append.hasher;
        tx.execute(&stmt, &[&id, &upload_int(at, "offset")?, &hasher, &append.expires_ms, &length])
            .await
            .context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(AppendOutcome::Appended { offset: at })
    }

    async fn upload_parts(&self, id: &str, from: u64, limit: usize) -> Result<Vec<UploadPart>, MetaError> {
        const WHAT: &str = "upload_parts";
        let (Some(limit), Some(from)) = (sql_limit(limit), to_sql_int(from)) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_UPLOAD_PARTS).await.context(WHAT)?;
        let rows = client.query(&stmt, &[&id, &from, &limit]).await.context(WHAT)?;
        rows.iter()
            .map(|r| {
                let (offset, size, hash): (i64, i64, String) =
                    (r.try_get(0).context(WHAT)?, r.try_get(1).context(WHAT)?, r.try_get(2).context(WHAT)?);
                parse_part(id, offset, size, &hash)
            })
            .collect()
    }

    async fn finish_upload(&self, id: &str, content: &ContentRecord) -> Result<FinishOutcome, MetaError> {
        const WHAT: &str = "finish_upload";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_UPLOAD_BUCKET).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(FinishOutcome::Gone);
        };
        let bucket: String = row.try_get(0).context(WHAT)?;
        // Missing only when a delete_bucket committed since the read above (and
        // removed the upload with it), or for an upload stored before uploads
        // needed their bucket.
        share_bucket(&tx, WHAT, &bucket).await?;
        let stmt = tx.prepare_cached(SQL_LOCK_UPLOAD_TARGET).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(FinishOutcome::Gone);
        };
        let (bucket, name, finished): (String, String, Option<i64>) =
            (row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?, row.try_get(2).context(WHAT)?);
        if let Some(version) = finished {
            return Ok(FinishOutcome::AlreadyFinished { version: next_version(&bucket, &name, version)? });
        }
        let record = add_version(&tx, &bucket, &name, Some(content), None).await?;
        let version = upload_int(record.version, "version")?;
        let stmt = tx.prepare_cached(SQL_FINISH_UPLOAD).await.context(WHAT)?;
        tx.execute(&stmt, &[&id, &version]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_DROP_PARTS).await.context(WHAT)?;
        tx.execute(&stmt, &[&id]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(FinishOutcome::Finished(record))
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "delete_upload";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The upload's row first, as every other remover and appender locks it:
        // deleting the parts first would take their locks in the other order.
        let stmt = tx.prepare_cached(SQL_LOCK_UPLOAD).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&id]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let existed = drop_upload(&tx, WHAT, id).await?;
        tx.commit().await.context(WHAT)?;
        Ok(existed)
    }

    async fn remove_expired_uploads(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::ExpiredUploads, now_ms, limit).await
    }
}

#[async_trait]
impl BucketStore for PostgresStore {
    async fn create_bucket(&self, name: &str, created_ms: i64) -> Result<bool, MetaError> {
        Ok(self.execute("create_bucket", SQL_CREATE_BUCKET, &[&name, &created_ms]).await? > 0)
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, MetaError> {
        const WHAT: &str = "bucket";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_BUCKET).await.context(WHAT)?;
        client.query_opt(&stmt, &[&name]).await.context(WHAT)?.map(|row| bucket_row(&row, WHAT)).transpose()
    }

    async fn buckets(&self) -> Result<Vec<BucketRecord>, MetaError> {
        const WHAT: &str = "buckets";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_BUCKETS).await.context(WHAT)?;
        client.query(&stmt, &[]).await.context(WHAT)?.iter().map(|row| bucket_row(row, WHAT)).collect()
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeleteOutcome, MetaError> {
        const WHAT: &str = "delete_bucket";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // The exclusive row lock waits for every write into the bucket holding a
        // share lock on it; the checks and the upload locks, statements of their
        // own, then see what those committed (READ COMMITTED), and later writers
        // wait for this transaction and find no bucket.
        let stmt = tx.prepare_cached(SQL_LOCK_BUCKET).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&name]).await.context(WHAT)?.is_none() {
            return Ok(BucketDeleteOutcome::NoSuchBucket);
        }
        let stmt = tx.prepare_cached(SQL_BUCKET_HAS_VERSION).await.context(WHAT)?;
        let has_version: bool = tx.query_one(&stmt, &[&name]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
        if has_version {
            return Ok(BucketDeleteOutcome::NotEmpty);
        }
        let aborted_uploads = abort_bucket_uploads(&tx, WHAT, name).await?;
        let stmt = tx.prepare_cached(SQL_DROP_BUCKET).await.context(WHAT)?;
        tx.execute(&stmt, &[&name]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(BucketDeleteOutcome::Deleted { aborted_uploads })
    }
}

#[async_trait]
impl MultipartStore for PostgresStore {
    async fn create_multipart(&self, upload: &MultipartRecord) -> Result<(), MetaError> {
        const WHAT: &str = "create_multipart";
        let u = upload;
        let attrs = attrs_json(&u.attrs)?;
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        share_bucket(&tx, WHAT, &u.bucket).await?;
        let stmt = tx.prepare_cached(SQL_INSERT_MULTIPART).await.context(WHAT)?;
        tx.execute(&stmt, &[&u.id, &u.bucket, &u.name, &attrs, &u.created_ms]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)
    }

    async fn multipart(&self, id: &str) -> Result<Option<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_MULTIPART).await.context(WHAT)?;
        let row = client.query_opt(&stmt, &[&id]).await.context(WHAT)?;
        row.map(|row| raw_multipart(&row).context(WHAT)?.parse()).transpose()
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
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_SHARE_MULTIPART).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&id]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let row = record_content(&tx, WHAT, content).await?;
        let stmt = tx.prepare_cached(SQL_UPSERT_MULTIPART_PART).await.context(WHAT)?;
        tx.execute(&stmt, &[&id, &i64::from(part_number), &row.hash, &row.size, &etag, &created_ms])
            .await
            .context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(true)
    }

    async fn parts(&self, id: &str, after: u32, limit: usize) -> Result<Vec<MultipartPart>, MetaError> {
        const WHAT: &str = "parts";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_MULTIPART_PARTS).await.context(WHAT)?;
        let rows = client.query(&stmt, &[&id, &i64::from(after), &limit]).await.context(WHAT)?;
        rows.iter()
            .map(|r| {
                let raw = RawMultipartPart {
                    part_number: r.try_get(0).context(WHAT)?,
                    hash: r.try_get(1).context(WHAT)?,
                    size: r.try_get(2).context(WHAT)?,
                    etag: r.try_get(3).context(WHAT)?,
                    created_ms: r.try_get(4).context(WHAT)?,
                };
                raw.parse(id)
            })
            .collect()
    }

    async fn multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartRecord>, MetaError> {
        const WHAT: &str = "multipart_uploads";
        let Some(r) = UploadListRange::new(prefix, after, limit) else {
            return Ok(Vec::new());
        };
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(r.statement(&UPLOAD_LIST_STATEMENTS)).await.context(WHAT)?;
        let rows = match &r.upper {
            Some(upper) => client.query(&stmt, &[&bucket, &r.name, &r.id, upper, &r.limit]).await,
            None => client.query(&stmt, &[&bucket, &r.name, &r.id, &r.limit]).await,
        }
        .context(WHAT)?;
        rows.iter().map(|row| raw_multipart(row).context(WHAT)?.parse()).collect()
    }

    async fn complete_multipart(
        &self,
        id: &str,
        content: &ContentRecord,
        attrs: &ObjectAttrs,
    ) -> Result<CompleteOutcome, MetaError> {
        const WHAT: &str = "complete_multipart";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_MULTIPART_BUCKET).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(CompleteOutcome::Gone);
        };
        let bucket: String = row.try_get(0).context(WHAT)?;
        // The bucket before the upload (add_object share-locks it again, a no-op).
        share_bucket(&tx, WHAT, &bucket).await?;
        let stmt = tx.prepare_cached(SQL_LOCK_MULTIPART).await.context(WHAT)?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await.context(WHAT)? else {
            return Ok(CompleteOutcome::Gone);
        };
        let (bucket, name): (String, String) = (row.try_get(0).context(WHAT)?, row.try_get(1).context(WHAT)?);
        let record = add_object(&tx, &bucket, &name, content, attrs, None).await?;
        drop_multipart(&tx, WHAT, id).await?;
        tx.commit().await.context(WHAT)?;
        Ok(CompleteOutcome::Completed(record))
    }

    async fn abort_multipart(&self, id: &str) -> Result<bool, MetaError> {
        const WHAT: &str = "abort_multipart";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_MULTIPART).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&id]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let existed = drop_multipart(&tx, WHAT, id).await?;
        tx.commit().await.context(WHAT)?;
        Ok(existed)
    }

    async fn remove_stale_multipart(&self, cutoff_ms: i64, limit: usize) -> Result<usize, MetaError> {
        self.remove_batch(Batch::StaleMultipart, cutoff_ms, limit).await
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_key(&self, key: &AccessKey) -> Result<bool, MetaError> {
        let buckets = key_buckets_json(&key.buckets)?;
        let params: [&(dyn ToSql + Sync); 5] =
            [&key.access_key, &key.secret, &buckets, &key.read_only, &key.created_ms];
        Ok(self.execute("create_key", SQL_CREATE_KEY, &params).await? > 0)
    }

    async fn key(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError> {
        const WHAT: &str = "key";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_KEY).await.context(WHAT)?;
        let row = client.query_opt(&stmt, &[&access_key]).await.context(WHAT)?;
        row.map(|row| raw_key(&row).context(WHAT)?.parse()).transpose()
    }

    async fn keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        const WHAT: &str = "keys";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(SQL_KEYS).await.context(WHAT)?;
        let rows = client.query(&stmt, &[]).await.context(WHAT)?;
        rows.iter().map(|row| raw_key(row).context(WHAT)?.parse()).collect()
    }

    async fn delete_key(&self, access_key: &str) -> Result<bool, MetaError> {
        Ok(self.execute("delete_key", SQL_DELETE_KEY, &[&access_key]).await? > 0)
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
