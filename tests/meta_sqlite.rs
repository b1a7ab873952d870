//! The SQLite metadata store: the shared behavioural suite, several stores (and
//! several processes) on one file, schema versions, corrupt rows, a busy database.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::content::ContentHash;
use cairn::meta::sqlite::{SqliteStore, MIGRATIONS, SCHEMA_VERSION};
use cairn::meta::{BucketStore, ClusterStore, ContentStore, VersionStore};
use cairn::meta::{ContentCounts, ContentState, MetaError, MetaStore};

#[path = "common/meta_suite/mod.rs"]
mod meta_suite;

fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet: open creates it.
    let store = SqliteStore::open(&dir.path().join("nested/dir/meta.db")).await.unwrap();
    meta_suite::run_all_shared(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_s3_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).await.unwrap();
    meta_suite::an_upload_left_in_a_missing_bucket_cannot_finish(&store, |id, bucket| async move {
        let n = raw(&path)
            .execute(
                "INSERT INTO uploads (id, bucket, name, length, upload_offset, metadata, hasher, created_ms, expires_ms) \
                 VALUES (?1, ?2, 'obj', 10, 10, '', X'01', 0, ?3)",
                rusqlite::params![id, bucket, i64::MAX],
            )
            .unwrap();
        assert_eq!(n, 1);
    })
    .await;
    meta_suite::run_s3_shared(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_lifecycle_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).await.unwrap();
    meta_suite::begin_delete_revives_a_referenced_doomed_row(&store, |hex| async move {
        let n = raw(&path)
            .execute("UPDATE content SET state = 'doomed', doomed_since_ms = 0 WHERE hash = ?1", [hex])
            .unwrap();
        assert_eq!(n, 1);
    })
    .await;
    meta_suite::run_lifecycle_shared(Arc::new(store)).await;
}

/// A lease taken through one store is refused through another on the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_share_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let a: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    meta_suite::leases_are_exclusive_across_stores(a, b).await;
}

/// A file written by the first schema (before the content lifecycle) is upgraded
/// in place: its data stays, every row is live, and the placement index is filled
/// from the placement JSON (an unreadable placement is skipped, and still reported
/// as corrupt when read).
#[tokio::test]
async fn a_version_1_file_is_migrated_and_its_placement_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let good = ContentHash::of(b"v1 content");
    let bad = ContentHash::of(b"v1 bad placement");
    {
        let conn = raw(&path);
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(&format!(
            r#"INSERT INTO content VALUES ('{good}', 5, '2+1', '{{"0":"s1:1","1":"s2:1","2":"s1:1"}}');
               INSERT INTO content VALUES ('{bad}', 5, '1+0', '[1,2');
               INSERT INTO versions VALUES ('bk', 'n', 1, '{good}', 5, 7);
               INSERT INTO versions VALUES ('bk', 'n', 2, NULL, 0, 8);"#
        ))
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let version: u32 = raw(&path).pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let v1 = store.version("bk", "n", 1).await.unwrap().unwrap();
    let content = v1.content.clone().unwrap();
    assert_eq!((content.hash, content.size, content.placement.len()), (good, 5, 3));
    assert!(store.latest("bk", "n").await.unwrap().unwrap().is_tombstone());
    assert_eq!(store.content_state(&good).await.unwrap(), Some(ContentState::Live));
    assert_eq!(store.content_state(&bad).await.unwrap(), Some(ContentState::Live));
    assert_eq!(store.contents_on("s1:1", None, 10).await.unwrap(), vec![content.clone()]);
    assert_eq!(store.contents_on("s2:1", None, 10).await.unwrap(), vec![content]);
    assert_eq!(store.placement_servers().await.unwrap(), vec![("s1:1".to_string(), 2), ("s2:1".to_string(), 1)]);
    assert!(matches!(store.content(&bad).await, Err(MetaError::Corrupt(_))));
    assert_eq!(store.content_counts().await.unwrap(), ContentCounts { live: 2, doomed: 0, deleting: 0 });
    assert_eq!(store.names(None, 10).await.unwrap(), vec![("bk".to_string(), "n".to_string())]);
    assert_eq!(store.put_version("bk", "n", None).await.unwrap().version, 3);
    // Migration 4: the native bucket, and one for each bucket with versions.
    let buckets: Vec<String> = store.buckets().await.unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(buckets, ["bk", "default"]);
    assert_eq!(store.version("bk", "n", 1).await.unwrap().unwrap().attrs, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_url_and_reopen_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    meta_suite::reopen_by_url(&format!("sqlite:{}", dir.path().join("meta.db").display())).await;
    assert!(matches!(cairn::meta::open("postgres://x").await, Err(MetaError::Open { .. })));
}

/// Two stores on one file stand in for two API servers on one host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_share_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let a: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    meta_suite::two_stores_share_one_database(a, b).await;
}

const CHILD_PATH: &str = "CAIRN_META_TEST_CHILD_PATH";

/// The writer half of [`two_processes_share_one_file`]: a no-op unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_writer() {
    let Ok(path) = std::env::var(CHILD_PATH) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path)).await.unwrap();
    let c = meta_suite::content_of("processes");
    for i in 0..100 {
        let content = if i % 4 == 3 { None } else { Some(&c) };
        store.put_version("bk", "proc", content).await.unwrap();
    }
}

/// Two real processes writing the same name at once get 1..=200 between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_process_writer", "--test-threads=1", "--quiet"])
                .env(CHILD_PATH, &path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
        assert!(status.success(), "child writer failed: {status}");
    }
    let stored: Vec<u64> = store.versions("bk", "proc", 0, 500).await.unwrap().iter().map(|v| v.version).collect();
    assert_eq!(stored, (1..=200).collect::<Vec<u64>>());
    assert_eq!(store.latest("bk", "proc").await.unwrap().unwrap().version, 200);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(SqliteStore::open(&path).await.unwrap());
    raw(&path).pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    match SqliteStore::open(&path).await {
        Err(MetaError::Open { url, reason }) => {
            assert!(url.contains("meta.db"), "{url}");
            assert!(reason.contains("newer"), "{reason}");
        }
        other => panic!("expected an Open error, got {other:?}"),
    }
}

#[tokio::test]
async fn migration_records_the_schema_version_and_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let conn = raw(&path);
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    // Opening again is a no-op.
    drop(SqliteStore::open(&path).await.unwrap());
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    assert!(matches!(SqliteStore::open(&path).await, Err(MetaError::Open { .. })));
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let good = meta_suite::content_of("good");
    store.put_version("bk", "good", Some(&good)).await.unwrap();

    let conn = raw(&path);
    // Another tool (or a disk fault) wrote these; it did not check references.
    conn.pragma_update(None, "foreign_keys", false).unwrap();
    let bad_policy = ContentHash::of(b"bad policy").to_hex();
    let bad_placement = ContentHash::of(b"bad placement").to_hex();
    let bad_size = ContentHash::of(b"bad size").to_hex();
    let dangling = ContentHash::of(b"dangling").to_hex();
    conn.execute_batch(&format!(
        "INSERT INTO content (hash, size, policy, placement) VALUES ('NOT-A-HASH', 1, '1+0', '{{}}');
         INSERT INTO content (hash, size, policy, placement) VALUES ('{bad_policy}', 1, '0+9', '{{}}');
         INSERT INTO content (hash, size, policy, placement) VALUES ('{bad_placement}', 1, '1+0', '[1,2');
         INSERT INTO content (hash, size, policy, placement) VALUES ('{bad_size}', -5, '1+0', '{{}}');
         INSERT INTO versions (bucket, name, version, hash, size, created_ms) VALUES ('bk', 'bad-hash', 1, 'NOT-A-HASH', 1, 0);
         INSERT INTO versions (bucket, name, version, hash, size, created_ms) VALUES ('bk', 'bad-policy', 1, '{bad_policy}', 1, 0);
         INSERT INTO versions (bucket, name, version, hash, size, created_ms) VALUES ('bk', 'bad-placement', 1, '{bad_placement}', 1, 0);
         INSERT INTO versions (bucket, name, version, hash, size, created_ms) VALUES ('bk', 'bad-size', 1, '{bad_size}', 1, 0);
         INSERT INTO versions (bucket, name, version, hash, size, created_ms) VALUES ('bk', 'dangling', 1, '{dangling}', 1, 0);
         INSERT INTO versions (bucket, name, version, hash, size, created_ms) VALUES ('bk', 'bad-version', -1, NULL, 0, 0);
         INSERT INTO versions (bucket, name, version, hash, size, created_ms) VALUES ('bk', 'negative', 1, NULL, -1, 0);"
    ))
    .unwrap();
    conn.execute_batch(&meta_suite::corrupt_s3_rows(&good.hash.to_hex())).unwrap();

    for name in ["bad-hash", "bad-policy", "bad-placement", "bad-size", "dangling", "bad-version", "negative"] {
        match store.latest("bk", name).await {
            Err(MetaError::Corrupt(reason)) => assert!(!reason.is_empty()),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
    }
    assert!(matches!(store.version("bk", "bad-policy", 1).await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.versions("bk", "bad-placement", 0, 10).await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.list("bk", "", None, 100).await, Err(MetaError::Corrupt(_))));
    for hash in [&bad_policy, &bad_placement, &bad_size] {
        let hash: ContentHash = hash.parse().unwrap();
        assert!(matches!(store.content(&hash).await, Err(MetaError::Corrupt(_))), "{hash}");
    }
    meta_suite::corrupt_s3_rows_are_errors(&store).await;
    // Good rows stay readable, and the store keeps working.
    assert_eq!(store.latest("bk", "good").await.unwrap().unwrap().content, Some(good.clone()));
    assert_eq!(store.list("bk", "go", None, 10).await.unwrap().len(), 1);
    assert_eq!(store.put_version("bk", "good", None).await.unwrap().version, 2);
}

/// While another process holds the write lock, reads go on (WAL) and a write gives
/// up after the busy timeout with `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_unavailable_for_writes_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let c = meta_suite::content_of("locked");
    store.put_version("bk", "n", Some(&c)).await.unwrap();

    let conn = raw(&path);
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    assert_eq!(store.latest("bk", "n").await.unwrap().unwrap().version, 1);
    assert!(started.elapsed() < Duration::from_secs(2), "reads must not wait for the writer");
    match store.put_version("bk", "n", None).await {
        Err(MetaError::Unavailable(reason)) => {
            assert!(reason.contains("locked") || reason.contains("busy"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(4), "a writer waits for the busy timeout first");
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.put_version("bk", "n", None).await.unwrap().version, 2);
}

/// Two API server processes starting at once on a new file must both open it
/// (switching a new file to WAL mode once failed with "database is locked" for
/// the second). Each `cairn api` opens the store before it dials the bus, so a bus
/// on a closed port makes each exit right after: with the bus's error, never the
/// store's.
#[test]
fn two_api_processes_opening_a_new_file_at_once_both_succeed() {
    for round in 0..100 {
        let dir = tempfile::tempdir().unwrap();
        let meta = format!("sqlite:{}", dir.path().join("meta.sqlite").display());
        let children: Vec<_> = (1..=2)
            .map(|i| {
                std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
                    .args([
                        "api",
                        "--listen",
                        &format!("127.29.3.{i}:0"),
                        "--bus",
                        "amqp://127.0.0.1:1",
                        "--meta",
                        &meta,
                    ])
                    .env("RUST_LOG", "error")
                    .env_remove("RUST_BACKTRACE")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("metadata store"), "round {round}: {err}");
            assert!(err.contains("RabbitMQ"), "round {round}: exited for another reason: {err}");
        }
    }
}
