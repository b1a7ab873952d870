//! The version checks of the suite: numbering, `latest`, tombstones, paging,
//! `list`, concurrent writers and deletes, retention (`prune`, expired tombstones,
//! `names`), and two stores on one database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::content::Placement;
use cairn::meta::{ContentRecord, ContentState, DeleteOutcome, MetaStore, VersionRecord};
use futures_util::future::join_all;

use super::{names, now_ms, numbers, sample_content, unique, CLOCK_SLACK_MS};

/// The first version of a name is 1, the next 2; a version records its bucket, name,
/// content and creation time.
pub async fn versions_count_from_one(store: &dyn MetaStore) {
    let bucket = unique("count");
    let c = sample_content(1234, "4+2", &["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]);
    let before = now_ms();
    let v1 = store.put_version(&bucket, "a/b.txt", Some(&c)).await.expect("put 1");
    let after = now_ms();
    assert_eq!(v1.version, 1);
    assert_eq!((v1.bucket.as_str(), v1.name.as_str()), (bucket.as_str(), "a/b.txt"));
    assert_eq!(v1.content.as_ref(), Some(&c));
    assert!(!v1.is_tombstone());
    assert!(
        v1.created_ms >= before - CLOCK_SLACK_MS && v1.created_ms <= after + CLOCK_SLACK_MS,
        "created_ms {} is not near now ({before}..{after})",
        v1.created_ms
    );
    let v2 = store.put_version(&bucket, "a/b.txt", Some(&c)).await.expect("put 2");
    assert_eq!(v2.version, 2);
    assert!(v2.created_ms >= v1.created_ms);
    // Another name, and the same name in another bucket, count on their own.
    let other = store.put_version(&bucket, "a/c.txt", None).await.expect("put other");
    assert_eq!(other.version, 1);
    let elsewhere = store.put_version(&unique("count2"), "a/b.txt", Some(&c)).await.expect("put elsewhere");
    assert_eq!(elsewhere.version, 1);
}

/// `latest` is the newest version; `version(n)` is exactly version n or `None`.
pub async fn latest_and_exact_versions(store: &dyn MetaStore) {
    let bucket = unique("latest");
    assert!(store.latest(&bucket, "x").await.expect("latest of nothing").is_none());
    assert!(store.version(&bucket, "x", 1).await.expect("version of nothing").is_none());
    let contents: Vec<ContentRecord> = (0..3).map(|i| sample_content(100 + i, "1+2", &["h:1", "h:2", "h:3"])).collect();
    let mut put = Vec::new();
    for c in &contents {
        put.push(store.put_version(&bucket, "x", Some(c)).await.expect("put"));
    }
    let latest = store.latest(&bucket, "x").await.expect("latest").expect("some latest");
    assert_eq!(latest, put[2]);
    for (i, expected) in put.iter().enumerate() {
        let got = store.version(&bucket, "x", i as u64 + 1).await.expect("version").expect("some version");
        assert_eq!(&got, expected);
        assert_eq!(got.content.as_ref(), Some(&contents[i]));
    }
    assert!(store.version(&bucket, "x", 0).await.expect("version 0").is_none());
    assert!(store.version(&bucket, "x", 4).await.expect("version 4").is_none());
    assert!(store.version(&bucket, "x", u64::MAX).await.expect("version max").is_none());
    assert!(store.latest(&bucket, "y").await.expect("latest of other").is_none());
    assert!(store.latest(&unique("latest2"), "x").await.expect("latest elsewhere").is_none());
}

/// A tombstone is the newest version, and the versions before it stay readable.
pub async fn tombstones_hide_nothing_older(store: &dyn MetaStore) {
    let bucket = unique("tomb");
    let c = sample_content(7, "1+0", &["h:1"]);
    store.put_version(&bucket, "gone", Some(&c)).await.expect("put");
    let tomb = store.put_version(&bucket, "gone", None).await.expect("delete");
    assert_eq!(tomb.version, 2);
    assert!(tomb.is_tombstone());
    let latest = store.latest(&bucket, "gone").await.expect("latest").expect("some latest");
    assert!(latest.is_tombstone());
    assert_eq!(latest, tomb);
    let old = store.version(&bucket, "gone", 1).await.expect("version 1").expect("some version 1");
    assert_eq!(old.content, Some(c.clone()));
    assert_eq!(store.content(&c.hash).await.expect("content"), Some(c.clone()));
    // Writing again after a delete continues the numbering.
    let back = store.put_version(&bucket, "gone", Some(&c)).await.expect("put again");
    assert_eq!(back.version, 3);
    assert!(!store.latest(&bucket, "gone").await.expect("latest").expect("some").is_tombstone());
}

/// `versions` pages oldest first, numbered above `after`, at most `limit` each.
pub async fn versions_page_oldest_first(store: &dyn MetaStore) {
    let bucket = unique("page");
    let c = sample_content(9, "2+1", &["h:1", "h:2", "h:3"]);
    for i in 1..=7u64 {
        let content = if i == 4 { None } else { Some(&c) };
        store.put_version(&bucket, "p", content).await.expect("put");
    }
    let all = store.versions(&bucket, "p", 0, 100).await.expect("all");
    assert_eq!(numbers(&all), (1..=7).collect::<Vec<_>>());
    assert!(all[3].is_tombstone() && !all[2].is_tombstone());
    assert_eq!(numbers(&store.versions(&bucket, "p", 0, 3).await.expect("page 1")), vec![1, 2, 3]);
    assert_eq!(numbers(&store.versions(&bucket, "p", 3, 3).await.expect("page 2")), vec![4, 5, 6]);
    assert_eq!(numbers(&store.versions(&bucket, "p", 6, 3).await.expect("page 3")), vec![7]);
    assert!(store.versions(&bucket, "p", 7, 3).await.expect("past the end").is_empty());
    assert!(store.versions(&bucket, "p", 0, 0).await.expect("limit 0").is_empty());
    assert!(store.versions(&bucket, "p", u64::MAX, 10).await.expect("after max").is_empty());
    assert!(store.versions(&bucket, "none", 0, 10).await.expect("no such name").is_empty());
    // Walking the pages yields every version once, in order.
    let mut walked = Vec::new();
    let mut after = 0;
    loop {
        let page = store.versions(&bucket, "p", after, 2).await.expect("walk");
        let Some(last) = page.last() else { break };
        after = last.version;
        walked.extend(page);
    }
    assert_eq!(walked, all);
}

/// `list`: prefix, `after` (exclusive), `limit`, name order, the newest version of
/// each name.
pub async fn list_filters_orders_and_pages(store: &dyn MetaStore) {
    let bucket = unique("list");
    let c = sample_content(1, "1+0", &["h:1"]);
    // Inserted out of order; "b/" names around the prefix boundaries.
    let all = ["b/2", "a/1", "b/1", "b/10", "b", "b0", "b/", "c/1", "b/3/x"];
    for name in all {
        store.put_version(&bucket, name, Some(&c)).await.expect("put");
    }
    store.put_version(&bucket, "b/2", Some(&c)).await.expect("put b/2 again");

    let everything = store.list(&bucket, "", None, 100).await.expect("list all");
    let mut sorted: Vec<&str> = all.to_vec();
    sorted.sort();
    assert_eq!(names(&everything), sorted);

    let b = store.list(&bucket, "b/", None, 100).await.expect("list b/");
    assert_eq!(names(&b), vec!["b/", "b/1", "b/10", "b/2", "b/3/x"]);
    let b2 = &b[3];
    assert_eq!(b2.version, 2, "list gives each name's newest version");
    assert_eq!(b2, &store.latest(&bucket, "b/2").await.expect("latest").expect("some"));

    let after = store.list(&bucket, "b/", Some("b/10"), 100).await.expect("after");
    assert_eq!(names(&after), vec!["b/2", "b/3/x"]);
    let after_missing = store.list(&bucket, "b/", Some("b/15"), 100).await.expect("after a missing name");
    assert_eq!(names(&after_missing), vec!["b/2", "b/3/x"]);
    let before_prefix = store.list(&bucket, "b/", Some("a"), 100).await.expect("after before the prefix");
    assert_eq!(names(&before_prefix), names(&b));
    assert!(store.list(&bucket, "b/", Some("b0"), 100).await.expect("after the prefix").is_empty());
    let limited = store.list(&bucket, "b/", None, 2).await.expect("limit");
    assert_eq!(names(&limited), vec!["b/", "b/1"]);
    assert!(store.list(&bucket, "b/", None, 0).await.expect("limit 0").is_empty());
    assert!(store.list(&bucket, "zzz", None, 10).await.expect("no match").is_empty());
    assert!(store.list(&unique("list2"), "", None, 10).await.expect("empty bucket").is_empty());

    // Paging through with `after` = the last name of the previous page visits every
    // name once, in order.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(&bucket, "", cursor.as_deref(), 2).await.expect("page");
        let Some(last) = page.last() else { break };
        cursor = Some(last.name.clone());
        walked.extend(page.into_iter().map(|r| r.name));
    }
    assert_eq!(walked, sorted);
}

/// A name whose newest version is a tombstone is not listed; it is again once
/// written after the delete. A tombstone in the middle of the history doesn't matter.
pub async fn list_skips_tombstoned_names(store: &dyn MetaStore) {
    let bucket = unique("listtomb");
    let c = sample_content(1, "1+0", &["h:1"]);
    for name in ["k1", "k2", "k3", "k4", "k5"] {
        store.put_version(&bucket, name, Some(&c)).await.expect("put");
    }
    store.put_version(&bucket, "k2", None).await.expect("delete k2");
    store.put_version(&bucket, "k3", None).await.expect("delete k3");
    store.put_version(&bucket, "k3", Some(&c)).await.expect("restore k3");
    store.put_version(&bucket, "k4", None).await.expect("delete k4");
    store.put_version(&bucket, "only-deleted", None).await.expect("tombstone only");

    let listed = store.list(&bucket, "", None, 100).await.expect("list");
    assert_eq!(names(&listed), vec!["k1", "k3", "k5"]);
    assert_eq!(listed[1].version, 3);
    assert!(listed.iter().all(|r| !r.is_tombstone()));
    // The limit counts listed names, not skipped ones.
    assert_eq!(names(&store.list(&bucket, "k", None, 2).await.expect("limit")), vec!["k1", "k3"]);
    assert_eq!(names(&store.list(&bucket, "k", Some("k1"), 1).await.expect("after")), vec!["k3"]);
}

/// `%`, `_` and `\` in a prefix are literal characters, not patterns.
pub async fn list_prefix_is_literal(store: &dyn MetaStore) {
    let bucket = unique("wild");
    let c = sample_content(1, "1+0", &["h:1"]);
    let all = ["a%b", "axb", "a_c", "abc", "a\\d", "a\\\\d", "a%", "a_"];
    for name in all {
        store.put_version(&bucket, name, Some(&c)).await.expect("put");
    }
    let list = |prefix: &'static str| list_names(store, &bucket, prefix);
    assert_eq!(list("a%").await, vec!["a%", "a%b"]);
    assert_eq!(list("a_").await, vec!["a_", "a_c"]);
    assert_eq!(list("a\\").await, vec!["a\\\\d", "a\\d"]);
    assert_eq!(list("a%b").await, vec!["a%b"]);
    assert!(list("%").await.is_empty());
    assert!(list("_").await.is_empty());
    assert_eq!(list("a").await.len(), all.len());
}

/// The names `list` gives for `prefix`, without `after` or a tight limit.
async fn list_names(store: &dyn MetaStore, bucket: &str, prefix: &str) -> Vec<String> {
    let got = store.list(bucket, prefix, None, 1000).await.expect("list");
    got.into_iter().map(|r| r.name).collect()
}

/// Prefixes and order hold for names beyond ASCII, where byte order and code-point
/// order must agree (no locale collation).
pub async fn list_prefix_works_beyond_ascii(store: &dyn MetaStore) {
    let bucket = unique("utf8");
    let c = sample_content(1, "1+0", &["h:1"]);
    let all =
        ["é/1", "é/2", "ê", "e/1", "E/1", "日本/1", "日本語", "z\u{7f}x", "z\u{80}y", "\u{10FFFF}a", "\u{10FFFF}"];
    for name in all {
        store.put_version(&bucket, name, Some(&c)).await.expect("put");
    }
    let listed = store.list(&bucket, "", None, 100).await.expect("list");
    let mut sorted = all.to_vec();
    sorted.sort();
    assert_eq!(names(&listed), sorted, "byte-wise name order");
    let list = |prefix: &'static str| list_names(store, &bucket, prefix);
    assert_eq!(list("é").await, vec!["é/1", "é/2"]);
    assert_eq!(list("日本").await, vec!["日本/1", "日本語"]);
    assert_eq!(list("z\u{7f}").await, vec!["z\u{7f}x"]);
    assert_eq!(list("\u{10FFFF}").await, vec!["\u{10FFFF}", "\u{10FFFF}a"]);
    assert_eq!(list("e").await, vec!["e/1"]);
}

/// 8 concurrent writers × 25 versions of one name get exactly versions 1..=200, each
/// writer's in increasing order. The writers are concurrent futures in one task.
pub async fn concurrent_writes_get_distinct_gap_free_versions(store: &dyn MetaStore) {
    let bucket = unique("race");
    let c = sample_content(11, "2+1", &["h:1", "h:2", "h:3"]);
    let writers = (0..8).map(|w| {
        let (bucket, c) = (bucket.clone(), c.clone());
        async move {
            let mut got = Vec::new();
            for i in 0..25 {
                let content = if (w + i) % 5 == 0 { None } else { Some(&c) };
                got.push(store.put_version(&bucket, "hot", content).await.expect("concurrent put").version);
            }
            got
        }
    });
    check_race(store, &bucket, join_all(writers).await).await;
}

/// Like [`concurrent_writes_get_distinct_gap_free_versions`], with each writer a
/// spawned tokio task sharing the store.
pub async fn concurrent_tasks_get_distinct_gap_free_versions(store: Arc<dyn MetaStore>) {
    let bucket = unique("tasks");
    let c = sample_content(12, "2+1", &["h:1", "h:2", "h:3"]);
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (store, bucket, c) = (Arc::clone(&store), bucket.clone(), c.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..25 {
                    let content = if (w + i) % 5 == 0 { None } else { Some(&c) };
                    got.push(store.put_version(&bucket, "hot", content).await.expect("concurrent put").version);
                }
                got
            })
        })
        .collect();
    let mut per_writer = Vec::new();
    for task in tasks {
        per_writer.push(task.await.expect("writer task"));
    }
    check_race(store.as_ref(), &bucket, per_writer).await;
}

async fn check_race(store: &dyn MetaStore, bucket: &str, per_writer: Vec<Vec<u64>>) {
    for got in &per_writer {
        assert!(got.windows(2).all(|w| w[0] < w[1]), "a writer's versions went backwards: {got:?}");
    }
    let mut all: Vec<u64> = per_writer.into_iter().flatten().collect();
    all.sort_unstable();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "duplicate versions");
    assert_eq!(all, (1..=200).collect::<Vec<_>>(), "versions must be exactly 1..=200");
    let stored = store.versions(bucket, "hot", 0, 1000).await.expect("versions");
    assert_eq!(numbers(&stored), (1..=200).collect::<Vec<_>>());
    assert_eq!(store.latest(bucket, "hot").await.expect("latest").expect("some").version, 200);
}

/// `delete` adds a tombstone to a name whose newest version is live, and nothing
/// to a name that does not exist or whose newest version is a tombstone.
pub async fn delete_adds_a_tombstone_only_to_a_live_name(store: &dyn MetaStore) {
    let bucket = unique("delete");
    let c = sample_content(5, "1+0", &["h:1"]);
    assert_eq!(store.delete(&bucket, "x").await.expect("delete nothing"), DeleteOutcome::NoSuchName);
    assert!(store.latest(&bucket, "x").await.expect("latest").is_none(), "a refused delete adds nothing");

    store.put_version(&bucket, "x", Some(&c)).await.expect("put");
    let tomb = match store.delete(&bucket, "x").await.expect("delete") {
        DeleteOutcome::Deleted(tomb) => tomb,
        other => panic!("deleting a live name: {other:?}"),
    };
    assert_eq!((tomb.bucket.as_str(), tomb.name.as_str(), tomb.version), (bucket.as_str(), "x", 2));
    assert!(tomb.is_tombstone());
    assert_eq!(store.latest(&bucket, "x").await.expect("latest"), Some(tomb));
    assert_eq!(store.delete(&bucket, "x").await.expect("delete again"), DeleteOutcome::AlreadyDeleted { version: 2 });
    assert_eq!(numbers(&store.versions(&bucket, "x", 0, 10).await.expect("versions")), vec![1, 2]);

    // A new version brings the name back, and it can be deleted again.
    store.put_version(&bucket, "x", Some(&c)).await.expect("put again");
    assert!(matches!(store.delete(&bucket, "x").await.expect("delete"), DeleteOutcome::Deleted(t) if t.version == 4));

    // A tombstone added by put_version counts as deleted too.
    store.put_version(&bucket, "only", None).await.expect("tombstone only");
    assert_eq!(store.delete(&bucket, "only").await.expect("delete"), DeleteOutcome::AlreadyDeleted { version: 1 });
    // Another bucket's name of the same spelling is another name.
    assert_eq!(store.delete(&unique("delete2"), "x").await.expect("elsewhere"), DeleteOutcome::NoSuchName);
}

/// 16 deletes of one live name as concurrent futures in one task: exactly one
/// adds a tombstone.
pub async fn concurrent_deletes_in_one_task_add_one_tombstone(store: &dyn MetaStore) {
    let bucket = unique("delfutures");
    let c = sample_content(6, "1+0", &["h:1"]);
    let live = store.put_version(&bucket, "hot", Some(&c)).await.expect("put");
    let outcomes = join_all((0..16).map(|_| store.delete(&bucket, "hot"))).await;
    let outcomes = outcomes.into_iter().map(|o| o.expect("concurrent delete")).collect();
    check_one_tombstone(store, &bucket, live.version, outcomes).await;
}

/// 16 deletes of one live name as spawned tasks, spread round-robin over `stores`
/// (one store, or several on one database standing in for several API servers),
/// three rounds: each round exactly one adds a tombstone, the others are told the
/// name is already deleted, at that tombstone's version.
pub async fn concurrent_deletes_add_one_tombstone(stores: &[Arc<dyn MetaStore>]) {
    let bucket = unique("deltasks");
    let c = sample_content(7, "1+0", &["h:1"]);
    for _round in 0..3 {
        let live = stores[0].put_version(&bucket, "hot", Some(&c)).await.expect("put");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, bucket) = (Arc::clone(&stores[i % stores.len()]), bucket.clone());
                tokio::spawn(async move { store.delete(&bucket, "hot").await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("delete task").expect("concurrent delete"));
        }
        for store in stores {
            check_one_tombstone(store.as_ref(), &bucket, live.version, outcomes.clone()).await;
        }
    }
    // A name that never existed stays absent, however many delete it at once.
    let absent = join_all((0..16).map(|i| stores[i % stores.len()].delete(&bucket, "never"))).await;
    assert!(absent.into_iter().all(|o| o.expect("delete") == DeleteOutcome::NoSuchName));
    assert!(stores[0].latest(&bucket, "never").await.expect("latest").is_none());
}

/// Of `outcomes` (deletes of `bucket/hot` whose newest version was `live`), exactly
/// one added the tombstone `live + 1`, the others saw it, and it is the newest.
async fn check_one_tombstone(store: &dyn MetaStore, bucket: &str, live: u64, outcomes: Vec<DeleteOutcome>) {
    let tomb = live + 1;
    let added: Vec<&VersionRecord> = outcomes
        .iter()
        .filter_map(|o| match o {
            DeleteOutcome::Deleted(record) => Some(record),
            _ => None,
        })
        .collect();
    assert_eq!(added.len(), 1, "exactly one delete adds a tombstone: {outcomes:?}");
    assert_eq!(added[0].version, tomb);
    assert!(added[0].is_tombstone());
    let already = outcomes.iter().filter(|o| **o == DeleteOutcome::AlreadyDeleted { version: tomb }).count();
    assert_eq!(already, outcomes.len() - 1, "the others are told it is already deleted: {outcomes:?}");
    let newest = store.latest(bucket, "hot").await.expect("latest").expect("some");
    assert_eq!(&newest, added[0]);
    assert!(store.versions(bucket, "hot", tomb, 10).await.expect("versions").is_empty(), "no second tombstone");
}

/// `latest` is the hot path; a smoke check that it is far from slow: 2000 calls
/// from 4 tasks within 10 s.
pub async fn latest_is_fast(store: Arc<dyn MetaStore>) {
    let bucket = unique("fast");
    let c = sample_content(3, "1+0", &["h:1"]);
    for i in 0..20 {
        store.put_version(&bucket, &format!("n{i}"), Some(&c)).await.expect("put");
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (store, bucket) = (Arc::clone(&store), bucket.clone());
            tokio::spawn(async move {
                for i in 0..500 {
                    let name = format!("n{}", (i + t) % 20);
                    assert!(store.latest(&bucket, &name).await.expect("latest").is_some());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("reader task");
    }
    let elapsed = started.elapsed();
    eprintln!("2000 latest() calls in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "2000 latest() took {elapsed:?}");
}

/// Two stores on one database stand in for two API servers: each sees the other's
/// writes as soon as they return (versions, placements, deletes), 2 × 100
/// concurrent writers of one name get exactly 1..=200 with read-after-write through
/// the other store, and deletes racing through both add one tombstone.
pub async fn two_stores_share_one_database(a: Arc<dyn MetaStore>, b: Arc<dyn MetaStore>) {
    let bucket = unique("shared");
    let c = sample_content(8, "2+1", &["a:1", "b:1", "c:1"]);
    let v1 = a.put_version(&bucket, "obj", Some(&c)).await.expect("put");
    assert_eq!(b.latest(&bucket, "obj").await.expect("latest"), Some(v1.clone()));
    let v2 = b.put_version(&bucket, "obj", None).await.expect("tombstone");
    assert_eq!(v2.version, 2);
    assert_eq!(a.latest(&bucket, "obj").await.expect("latest"), Some(v2));
    let moved = Placement::from([(0, "z:9".to_string())]);
    a.set_placement(&c.hash, &moved).await.expect("set_placement");
    assert_eq!(b.content(&c.hash).await.expect("content").expect("some").placement, moved);
    assert!(b.list(&bucket, "", None, 10).await.expect("list").is_empty(), "obj is deleted");

    let mut tasks = Vec::new();
    for (mine, theirs) in [(&a, &b), (&b, &a)] {
        for i in 0..100 {
            let (mine, theirs, bucket, c) = (Arc::clone(mine), Arc::clone(theirs), bucket.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                let content = if i % 3 == 0 { None } else { Some(&c) };
                let put = mine.put_version(&bucket, "race", content).await.expect("concurrent put");
                let seen = theirs.latest(&bucket, "race").await.expect("latest").expect("the other store sees it");
                assert!(seen.version >= put.version, "wrote {}, the other store sees {}", put.version, seen.version);
                let exact = theirs.version(&bucket, "race", put.version).await.expect("version");
                assert_eq!(exact.as_ref(), Some(&put));
                put.version
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("writer task"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>(), "distinct, gap-free versions");
    for store in [&a, &b] {
        assert_eq!(numbers(&store.versions(&bucket, "race", 0, 500).await.expect("versions")), all);
        assert_eq!(store.latest(&bucket, "race").await.expect("latest").expect("some").version, 200);
    }
    concurrent_deletes_add_one_tombstone(&[a, b]).await;
}

/// `prune(keep)` removes the versions below the newest `keep`, tombstones
/// included; the numbering goes on.
pub async fn prune_keeps_the_newest(store: &dyn MetaStore) {
    let bucket = unique("prune");
    let c = sample_content(4, "1+0", &["h:1"]);
    for i in 1..=5 {
        store.put_version(&bucket, "p", if i == 2 { None } else { Some(&c) }).await.expect("put");
    }
    assert_eq!(store.prune(&bucket, "p", None, None).await.expect("keep all"), 0);
    assert_eq!(store.prune(&bucket, "p", Some(0), None).await.expect("keep 0 keeps all"), 0);
    assert_eq!(store.prune(&bucket, "p", Some(10), None).await.expect("keep more than there are"), 0);
    assert_eq!(store.prune(&bucket, "p", Some(2), Some(0)).await.expect("keep 2"), 3);
    assert_eq!(numbers(&store.versions(&bucket, "p", 0, 100).await.expect("versions")), vec![4, 5]);
    assert_eq!(store.prune(&bucket, "p", Some(2), None).await.expect("again"), 0);
    assert_eq!(store.put_version(&bucket, "p", Some(&c)).await.expect("put").version, 6);
    assert_eq!(store.prune(&bucket, "p", Some(1), None).await.expect("keep 1"), 2);
    assert_eq!(numbers(&store.versions(&bucket, "p", 0, 100).await.expect("versions")), vec![6]);
    assert_eq!(store.version(&bucket, "p", 6).await.expect("version").expect("some").content, Some(c.clone()));
    // A live newest version is never removed by the tombstone cutoff.
    assert_eq!(store.prune(&bucket, "p", None, Some(i64::MAX)).await.expect("live newest"), 0);
    assert_eq!(store.prune(&bucket, "none", Some(1), Some(i64::MAX)).await.expect("no such name"), 0);
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));
}

/// A name whose newest version is a tombstone old enough loses every version, and
/// a later PUT starts at version 1.
pub async fn expired_tombstones_remove_the_name(store: &dyn MetaStore) {
    let bucket = unique("tombexp");
    let c = sample_content(4, "1+0", &["h:1"]);
    for _ in 0..3 {
        store.put_version(&bucket, "t", Some(&c)).await.expect("put");
    }
    let DeleteOutcome::Deleted(tomb) = store.delete(&bucket, "t").await.expect("delete") else {
        panic!("delete of a live name")
    };
    assert_eq!(store.prune(&bucket, "t", None, Some(tomb.created_ms - 1)).await.expect("too young"), 0);
    assert_eq!(store.versions(&bucket, "t", 0, 100).await.expect("versions").len(), 4);
    assert_eq!(store.prune(&bucket, "t", Some(1), Some(tomb.created_ms)).await.expect("expired"), 4);
    assert!(store.latest(&bucket, "t").await.expect("latest").is_none());
    assert!(store.versions(&bucket, "t", 0, 100).await.expect("versions").is_empty());
    assert_eq!(store.delete(&bucket, "t").await.expect("delete"), DeleteOutcome::NoSuchName);
    assert!(store.names(Some((&bucket, "")), 10).await.expect("names").iter().all(|(b, _)| b != &bucket));
    let again = store.put_version(&bucket, "t", Some(&c)).await.expect("put again");
    assert_eq!(again.version, 1, "a name that disappeared starts again at 1");
    assert_eq!(store.put_version(&bucket, "t", None).await.expect("put").version, 2);
}

/// `names` walks every (bucket, name) with a version, tombstoned ones too, in
/// byte order, page by page.
pub async fn names_walk_every_name_with_versions(store: &dyn MetaStore) {
    let bucket = unique("names");
    let c = sample_content(4, "1+0", &["h:1"]);
    for name in ["b/x", "a", "é", "c"] {
        store.put_version(&bucket, name, Some(&c)).await.expect("put");
    }
    store.put_version(&bucket, "c", None).await.expect("tombstone");
    store.put_version(&bucket, "d", None).await.expect("tombstone only");
    assert!(store.names(None, 0).await.expect("limit 0").is_empty());
    assert!(!store.names(None, 1).await.expect("first").is_empty());
    let mut walked = Vec::new();
    let mut cursor = (bucket.clone(), String::new());
    loop {
        let page = store.names(Some((&cursor.0, &cursor.1)), 2).await.expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last().cloned() else { break };
        let done = page.iter().any(|(b, _)| b != &bucket);
        walked.extend(page.into_iter().filter(|(b, _)| b == &bucket).map(|(_, n)| n));
        if done {
            break;
        }
        cursor = last;
    }
    assert_eq!(walked, ["a", "b/x", "c", "d", "é"]);
}
