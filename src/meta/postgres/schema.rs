//! The PostgreSQL store's schema: its migrations, applied under an advisory lock
//! when a store is opened (see "Migrations" in [the store's docs](super)).

use deadpool_postgres::Object;

use super::describe;

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

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, under an advisory
/// lock so that concurrent openers migrate once, or refuses a newer schema.
pub(super) async fn migrate(client: &mut Object, schema: &str) -> Result<(), String> {
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
