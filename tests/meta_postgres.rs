//! The PostgreSQL metadata store against a real server: the shared behavioural
//! suite, two stores standing in for two API hosts, schema versions and migration,
//! corrupt rows, a busy pool, killed connections and an unreachable server.
//!
//! The server is `postgres://root@127.0.0.1:5432/test` unless
//! `CAIRN_TEST_POSTGRES_URL` names another (trust auth, no TLS). When it cannot be
//! reached the tests that need it print `SKIPPED: …` and pass, unless
//! `CAIRN_REQUIRE_SERVICES=1`, which makes that a failure. Every test works in a
//! fresh schema `cairn_test_<random>` and drops it at the end, even when it fails.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::content::ContentHash;
use cairn::meta::postgres::{PostgresStore, MIGRATIONS, POOL_WAIT, SCHEMA_VERSION};
use cairn::meta::{BucketStore, ClusterStore, ContentStore, VersionStore};
use cairn::meta::{ContentCounts, ContentState, MetaError, MetaStore};
use common::pg::TestSchema;

#[path = "common/meta_suite/mod.rs"]
mod meta_suite;

/// A schema of the test's own, or return (skipped) when there is no server.
macro_rules! test_schema {
    () => {
        match TestSchema::new().await {
            Some(schema) => schema,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_suite() {
    let schema = test_schema!();
    let store = schema.open().await;
    meta_suite::run_all_shared(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_s3_suite() {
    let schema = test_schema!();
    let store = schema.open().await;
    let raw = &schema.raw;
    meta_suite::an_upload_left_in_a_missing_bucket_cannot_finish(&store, |id, bucket| async move {
        let n = raw
            .execute(
                "INSERT INTO uploads (id, bucket, name, length, upload_offset, metadata, hasher, created_ms, expires_ms) \
                 VALUES ($1, $2, 'obj', 10, 10, '', '\\x01'::bytea, 0, $3)",
                &[&id, &bucket, &i64::MAX],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    })
    .await;
    meta_suite::run_s3_shared(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_lifecycle_suite() {
    let schema = test_schema!();
    let store = schema.open().await;
    let raw = &schema.raw;
    meta_suite::begin_delete_revives_a_referenced_doomed_row(&store, |hex| async move {
        let n = raw
            .execute("UPDATE content SET state = 'doomed', doomed_since_ms = 0 WHERE hash = $1", &[&hex])
            .await
            .unwrap();
        assert_eq!(n, 1);
    })
    .await;
    meta_suite::run_lifecycle_shared(Arc::new(store)).await;
}

/// Leases through two stores on one schema (two API hosts): one holder at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_schema_share_leases() {
    let schema = test_schema!();
    let a: Arc<dyn MetaStore> = Arc::new(schema.open().await);
    let b: Arc<dyn MetaStore> = Arc::new(schema.open().await);
    meta_suite::leases_are_exclusive_across_stores(a, b).await;
}

/// Many writers deduplicating onto a few hashes through two stores, against a
/// collector running doom → begin_delete → finish_delete with the cutoff at now:
/// no acknowledged version ever points at deleted or deleting content.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_collector_never_deletes_content_of_an_acknowledged_version() {
    let schema = test_schema!();
    let store: Arc<dyn MetaStore> = Arc::new(schema.open().await);
    meta_suite::no_acknowledged_version_loses_its_content(store, 12, 60).await;
}

/// A store written by the first schema is upgraded in place: its data stays,
/// every row is live, and the placement index is filled from the placement JSON
/// (an unreadable placement is skipped, and still reported as corrupt when read).
#[tokio::test]
async fn a_version_1_schema_is_migrated_and_its_placement_indexed() {
    let schema = test_schema!();
    let good = ContentHash::of(b"v1 content");
    let bad = ContentHash::of(b"v1 bad placement");
    schema
        .raw
        .batch_execute(&format!(
            r#"CREATE SCHEMA {name};
               CREATE TABLE schema_version (
                   version    INTEGER     NOT NULL PRIMARY KEY,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
               );
               {v1}
               INSERT INTO schema_version (version) VALUES (1);
               INSERT INTO content VALUES ('{good}', 5, '2+1', '{{"0":"s1:1","1":"s2:1","2":"s1:1"}}');
               INSERT INTO content VALUES ('{bad}', 5, '1+0', '[1,2');
               INSERT INTO versions VALUES ('bk', 'n', 1, '{good}', 5, 7);
               INSERT INTO versions VALUES ('bk', 'n', 2, NULL, 0, 8);
               INSERT INTO heads VALUES ('bk', 'n', 2);"#,
            name = schema.name,
            v1 = MIGRATIONS[0],
        ))
        .await
        .unwrap();
    let store = schema.open().await;
    let versions: Vec<i32> = schema
        .raw
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=i32::try_from(SCHEMA_VERSION).unwrap()).collect::<Vec<_>>());
    let content = store.version("bk", "n", 1).await.unwrap().unwrap().content.unwrap();
    assert_eq!((content.hash, content.size, content.placement.len()), (good, 5, 3));
    assert_eq!(store.content_state(&good).await.unwrap(), Some(ContentState::Live));
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
    let schema = test_schema!();
    meta_suite::reopen_by_url(&schema.url()).await;
    // Both spellings of the scheme name the same store.
    let other = schema.url().replacen("postgres://", "postgresql://", 1);
    assert!(other.starts_with("postgresql://"), "{other}");
    meta_suite::reopen_by_url(&other).await;
}

/// Two stores on one schema stand in for API servers on two hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_schema_share_versions() {
    let schema = test_schema!();
    let a: Arc<dyn MetaStore> = Arc::new(schema.open().await);
    let b: Arc<dyn MetaStore> = Arc::new(schema.open().await);
    meta_suite::two_stores_share_one_database(a, b).await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let schema = test_schema!();
    drop(schema.open().await);
    let newer = i32::try_from(SCHEMA_VERSION + 1).unwrap();
    schema.raw.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&newer]).await.unwrap();
    match PostgresStore::open(&schema.url()).await {
        Err(MetaError::Open { url, reason }) => {
            assert!(url.contains(&schema.name), "{url}");
            assert!(reason.contains("newer"), "{reason}");
        }
        other => panic!("expected an Open error, got {other:?}"),
    }
}

/// Several API servers starting at once on a fresh schema migrate it exactly once;
/// opening it again changes nothing and keeps the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_is_applied_once_and_reopening_is_a_no_op() {
    let schema = test_schema!();
    let url = schema.url();
    let opens: Vec<_> = (0..4).map(|_| PostgresStore::open(&url)).collect();
    let stores: Vec<PostgresStore> =
        futures_util::future::join_all(opens).await.into_iter().collect::<Result<_, _>>().expect("every open");
    assert!(stores.iter().all(|s| s.schema() == schema.name));

    let applied = || async {
        let rows = schema
            .raw
            .query("SELECT version, applied_at::text FROM schema_version ORDER BY version", &[])
            .await
            .unwrap();
        rows.iter().map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1))).collect::<Vec<_>>()
    };
    let first = applied().await;
    let versions: Vec<i32> = first.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=i32::try_from(SCHEMA_VERSION).unwrap()).collect::<Vec<_>>());
    let tables: Vec<String> = schema
        .raw
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&schema.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "access_keys",
            "buckets",
            "content",
            "heads",
            "leases",
            "multipart_parts",
            "multipart_uploads",
            "placements",
            "schema_version",
            "server_sightings",
            "upload_parts",
            "uploads",
            "versions",
            "worker_cursors"
        ]
    );

    let c = meta_suite::content_of("migrate");
    stores[0].put_version("bk", "n", Some(&c)).await.unwrap();
    drop(stores);
    let store = schema.open().await;
    assert_eq!(applied().await, first, "reopening applies nothing");
    assert_eq!(store.latest("bk", "n").await.unwrap().unwrap().content, Some(c));
    assert_eq!(store.put_version("bk", "n", None).await.unwrap().version, 2);
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let schema = test_schema!();
    let store = schema.open().await;
    let good = meta_suite::content_of("good");
    store.put_version("bk", "good", Some(&good)).await.unwrap();

    // Another tool (or an operator) wrote these; it checked nothing.
    let bad_policy = ContentHash::of(b"bad policy").to_hex();
    let bad_placement = ContentHash::of(b"bad placement").to_hex();
    let bad_size = ContentHash::of(b"bad size").to_hex();
    let dangling = ContentHash::of(b"dangling").to_hex();
    schema
        .raw
        .batch_execute(&format!(
            "INSERT INTO content (hash, size, policy, placement) VALUES ('NOT-A-HASH', 1, '1+0', '{{}}');
             INSERT INTO content (hash, size, policy, placement) VALUES ('{bad_policy}', 1, '0+9', '{{}}');
             INSERT INTO content (hash, size, policy, placement) VALUES ('{bad_placement}', 1, '1+0', '[1,2');
             INSERT INTO content (hash, size, policy, placement) VALUES ('{bad_size}', -5, '1+0', '{{}}');
             INSERT INTO versions VALUES ('bk', 'bad-hash', 1, 'NOT-A-HASH', 1, 0);
             INSERT INTO versions VALUES ('bk', 'bad-policy', 1, '{bad_policy}', 1, 0);
             INSERT INTO versions VALUES ('bk', 'bad-placement', 1, '{bad_placement}', 1, 0);
             INSERT INTO versions VALUES ('bk', 'bad-size', 1, '{bad_size}', 1, 0);
             INSERT INTO versions VALUES ('bk', 'bad-version', -1, NULL, 0, 0);
             INSERT INTO versions VALUES ('bk', 'negative', 1, NULL, -1, 0);
             INSERT INTO versions VALUES ('bk', 'no-head', 1, NULL, 0, 0);
             INSERT INTO heads VALUES ('bk', 'bad-hash', 1), ('bk', 'bad-policy', 1), ('bk', 'bad-placement', 1),
                                      ('bk', 'bad-size', 1), ('bk', 'bad-version', -1), ('bk', 'negative', 1),
                                      ('bk', 'headless', 3);"
        ))
        .await
        .unwrap();
    // A version pointing at content that was never recorded: only possible with
    // the foreign key switched off (a superuser, a restore gone wrong).
    let dangling_inserted = schema
        .raw
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             INSERT INTO versions VALUES ('bk', 'dangling', 1, '{dangling}', 1, 0);
             INSERT INTO heads VALUES ('bk', 'dangling', 1);
             SET session_replication_role = origin;"
        ))
        .await
        .is_ok();

    let mut corrupt = vec!["bad-hash", "bad-policy", "bad-placement", "bad-size", "bad-version", "negative"];
    if dangling_inserted {
        corrupt.push("dangling");
    } else {
        eprintln!("not checking a dangling content reference: cannot switch off foreign keys as this user");
    }
    for name in &corrupt {
        match store.latest("bk", name).await {
            Err(MetaError::Corrupt(reason)) => assert!(!reason.is_empty()),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        // Listing skips tombstones unread, so only names with content fail it.
        if !["bad-version", "negative"].contains(name) {
            match store.list("bk", name, None, 10).await {
                Err(MetaError::Corrupt(_)) => {}
                other => panic!("list {name}: expected Corrupt, got {other:?}"),
            }
        }
    }
    assert!(matches!(store.version("bk", "bad-policy", 1).await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.versions("bk", "bad-placement", 0, 10).await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.list("bk", "", None, 100).await, Err(MetaError::Corrupt(_))));
    schema.raw.batch_execute(&meta_suite::corrupt_s3_rows(&good.hash.to_hex())).await.unwrap();
    meta_suite::corrupt_s3_rows_are_errors(&store).await;
    // A head whose version row is gone is reported, not silently skipped.
    assert!(matches!(store.list("bk", "headless", None, 10).await, Err(MetaError::Corrupt(_))));
    // Versions without a head: the next number collides with a stored version.
    assert!(matches!(store.put_version("bk", "no-head", None).await, Err(MetaError::Corrupt(_))));
    for hash in [&bad_policy, &bad_placement, &bad_size] {
        let hash: ContentHash = hash.parse().unwrap();
        assert!(matches!(store.content(&hash).await, Err(MetaError::Corrupt(_))), "{hash}");
    }
    // Good rows stay readable, and the store keeps working.
    assert_eq!(store.latest("bk", "good").await.unwrap().unwrap().content, Some(good.clone()));
    assert_eq!(store.list("bk", "go", None, 10).await.unwrap().len(), 1);
    assert_eq!(store.put_version("bk", "good", None).await.unwrap().version, 2);
}

/// A server that is not there fails the open at once, not after a long hang, and
/// the error does not leak the password.
#[tokio::test]
async fn an_unreachable_server_fails_fast() {
    let started = Instant::now();
    let url = "postgres://root:hunter2@127.0.0.1:1/test?schema=cairn_nowhere";
    let opened = tokio::time::timeout(Duration::from_secs(15), PostgresStore::open(url)).await;
    match opened.expect("open must not hang") {
        Err(MetaError::Open { url, reason }) => {
            assert!(!url.contains("hunter2") && !reason.contains("hunter2"), "{url}: {reason}");
            assert!(url.contains("127.0.0.1:1"), "{url}");
            eprintln!("unreachable server: {reason}");
        }
        other => panic!("expected an Open error, got {other:?}"),
    }
    let by_url = tokio::time::timeout(Duration::from_secs(15), cairn::meta::open(url)).await;
    assert!(matches!(by_url.expect("open must not hang"), Err(MetaError::Open { .. })));
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn invalid_schema_names_are_refused_before_connecting() {
    for bad in ["Upper", "1digit", "semi;colon", "pg_catalog", "dash-ed", "", &"x".repeat(64)] {
        let url = format!("postgres://root@127.0.0.1:1/test?schema={bad}");
        match PostgresStore::open(&url).await {
            Err(MetaError::Open { reason, .. }) => assert!(reason.contains("schema"), "{bad:?}: {reason}"),
            other => panic!("{bad:?}: expected an Open error, got {other:?}"),
        }
    }
    let twice = "postgres://root@127.0.0.1:1/test?schema=a&schema=b";
    assert!(matches!(PostgresStore::open(twice).await, Err(MetaError::Open { .. })));
}

/// When every connection is stuck (here: writers queued behind a row lock held by
/// another client), a call gives up with `Unavailable` after the pool's wait
/// timeout instead of hanging; once the lock goes, the queued writers finish with
/// consecutive versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_is_unavailable_after_the_wait_timeout() {
    let schema = test_schema!();
    let store = Arc::new(schema.open().await);
    let c = meta_suite::content_of("busy");
    store.put_version("bk", "n", Some(&c)).await.unwrap();

    schema
        .raw
        .batch_execute("BEGIN; SELECT latest FROM heads WHERE bucket = 'bk' AND name = 'n' FOR UPDATE")
        .await
        .unwrap();
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (store, c) = (Arc::clone(&store), c.clone());
            tokio::spawn(async move { store.put_version("bk", "n", Some(&c)).await.map(|v| v.version) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await; // let them take every connection
    let started = Instant::now();
    let waited = tokio::time::timeout(POOL_WAIT * 3, store.latest("bk", "n")).await.expect("must not hang");
    let elapsed = started.elapsed();
    match waited {
        Err(MetaError::Unavailable(reason)) => eprintln!("busy pool after {elapsed:?}: {reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed >= POOL_WAIT - Duration::from_millis(500), "gave up too early: {elapsed:?}");

    schema.raw.batch_execute("ROLLBACK").await.unwrap();
    let mut got = Vec::new();
    for w in writers {
        got.push(w.await.unwrap().expect("queued writer"));
    }
    got.sort_unstable();
    assert_eq!(got, (2..=17).collect::<Vec<u64>>());
    assert_eq!(store.latest("bk", "n").await.unwrap().unwrap().version, 17);
}

/// Connections killed by the server (an administrator, a failover) make calls
/// `Unavailable` at worst, never `Corrupt`, and the pool replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_unavailable_then_replaced() {
    let schema = test_schema!();
    let store = Arc::new(schema.open().await);
    let c = meta_suite::content_of("killed");
    let reads: Vec<_> = (0..8)
        .map(|i| {
            let (store, c) = (Arc::clone(&store), c.clone());
            tokio::spawn(async move { store.put_version("bk", &format!("n{i}"), Some(&c)).await.map(|_| ()) })
        })
        .collect();
    for r in reads {
        r.await.unwrap().unwrap();
    }

    let killed: i64 = schema
        .raw
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed > 0, "the store's connections are visible by application_name");

    let mut recovered = false;
    for _ in 0..50 {
        match store.latest("bk", "n0").await {
            Ok(Some(v)) => {
                assert_eq!(v.version, 1);
                recovered = true;
                break;
            }
            Ok(None) => panic!("n0 vanished"),
            Err(MetaError::Unavailable(reason)) => eprintln!("after the kill: {reason}"),
            Err(other) => panic!("a killed connection must be Unavailable, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the pool never replaced the killed connections");
    assert_eq!(store.put_version("bk", "n0", None).await.unwrap().version, 2);
    assert_eq!(store.list("bk", "n", None, 100).await.unwrap().len(), 7);
}
