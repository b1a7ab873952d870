//! The behavioural suite every [`MetaStore`] must pass, whatever its backend (the
//! SQLite and the PostgreSQL store): test support, so it lives with the tests and
//! stays out of the release binary. Included by the metadata tests with
//! `#[path = "common/meta_suite.rs"] mod meta_suite;`.
//!
//! Each check panics (asserts) on a violation. Every check works under its own
//! freshly generated bucket and content hashes, so the suite can run against a
//! database shared with other runs or other data. Call [`run_all`] with a store, or
//! [`run_all_shared`] when the store is in an `Arc` (which adds checks with
//! concurrent tokio tasks; they need a multi-threaded runtime to be meaningful),
//! [`two_stores_share_one_database`] with two stores on one database (two API
//! servers), and [`reopen_by_url`] with a store's URL. [`run_s3`] (or
//! [`run_s3_shared`]) checks the S3 part: buckets, versions with attributes,
//! multipart uploads and access keys.
//!
//! Name order is byte-wise (that of Rust's `str`), and a list prefix is literal:
//! `%` and `_` are ordinary characters.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::content::{ContentHash, Encoding, Placement, Policy};
use cairn::meta::{
    AccessKey, AppendOutcome, BucketDeleteOutcome, BucketRecord, CompleteOutcome, ContentRecord, ContentState,
    DeleteOutcome, FinishOutcome, MetaError, MetaStore, MultipartRecord, ObjectAttrs, Precondition, UploadAppend,
    UploadRecord, VersionRecord,
};
use futures_util::future::join_all;

/// How far a store's `created_ms` may be from this process's clock (a networked
/// store may stamp versions with its own clock).
const CLOCK_SLACK_MS: i64 = 60_000;

/// Runs every check against `store`.
pub async fn run_all(store: &dyn MetaStore) {
    versions_count_from_one(store).await;
    latest_and_exact_versions(store).await;
    tombstones_hide_nothing_older(store).await;
    versions_page_oldest_first(store).await;
    content_is_recorded_once_per_hash(store).await;
    encoding_and_stored_size_round_trip(store).await;
    list_filters_orders_and_pages(store).await;
    list_skips_tombstoned_names(store).await;
    list_prefix_is_literal(store).await;
    list_prefix_works_beyond_ascii(store).await;
    concurrent_writes_get_distinct_gap_free_versions(store).await;
    delete_adds_a_tombstone_only_to_a_live_name(store).await;
    concurrent_deletes_in_one_task_add_one_tombstone(store).await;
    same_hash_with_another_size_is_refused(store).await;
}

/// Runs every check, including the one that needs to share the store between
/// spawned tokio tasks.
pub async fn run_all_shared(store: Arc<dyn MetaStore>) {
    run_all(store.as_ref()).await;
    concurrent_tasks_get_distinct_gap_free_versions(Arc::clone(&store)).await;
    concurrent_deletes_add_one_tombstone(&[Arc::clone(&store)]).await;
    latest_is_fast(store).await;
}

/// A bucket (or any name) no other run uses.
fn unique(label: &str) -> String {
    format!("suite-{label}-{}", uuid::Uuid::new_v4().simple())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Content with a hash no other run uses.
fn sample_content(size: u64, policy: &str, holders: &[&str]) -> ContentRecord {
    let placement: Placement = holders.iter().enumerate().map(|(i, h)| (i as u32, h.to_string())).collect();
    ContentRecord::new(
        ContentHash::of(uuid::Uuid::new_v4().as_bytes()),
        size,
        policy.parse::<Policy>().expect("policy"),
        placement,
    )
}

/// Content with a fixed hash (that of `seed`), of `seed`'s length, 2+1 on three
/// holders: for tests that need the same content in several places.
pub fn content_of(seed: &str) -> ContentRecord {
    ContentRecord::new(
        ContentHash::of(seed.as_bytes()),
        seed.len() as u64,
        Policy { k: 2, m: 1 },
        Placement::from([(0, "a:1".to_string()), (1, "b:1".to_string()), (2, "c:1".to_string())]),
    )
}

fn numbers(records: &[VersionRecord]) -> Vec<u64> {
    records.iter().map(|r| r.version).collect()
}

fn names(records: &[VersionRecord]) -> Vec<&str> {
    records.iter().map(|r| r.name.as_str()).collect()
}

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

/// Content is recorded once per hash: names sharing a hash share its record, a new
/// placement (by `set_placement` or by writing the hash again) is seen through every
/// name, and unknown hashes are absent.
pub async fn content_is_recorded_once_per_hash(store: &dyn MetaStore) {
    let bucket = unique("dedup");
    let c = sample_content(4096, "4+2", &["a:1", "b:1", "c:1", "d:1", "e:1", "f:1"]);
    store.put_version(&bucket, "one", Some(&c)).await.expect("put one");
    store.put_version(&bucket, "two", Some(&c)).await.expect("put two");
    assert_eq!(store.content(&c.hash).await.expect("content"), Some(c.clone()));

    let moved: Placement = (0..6u32).map(|i| (i, format!("moved-{i}:7000"))).collect();
    store.set_placement(&c.hash, &moved).await.expect("set_placement");
    let expected = ContentRecord { placement: moved.clone(), ..c.clone() };
    assert_eq!(store.content(&c.hash).await.expect("content").as_ref(), Some(&expected));
    for name in ["one", "two"] {
        let latest = store.latest(&bucket, name).await.expect("latest").expect("some");
        assert_eq!(latest.content.as_ref(), Some(&expected), "{name}");
    }

    // Writing the same content again records where its shards now are.
    let rewritten = ContentRecord { placement: (0..6u32).map(|i| (i, format!("new-{i}:7000"))).collect(), ..c.clone() };
    store.put_version(&bucket, "three", Some(&rewritten)).await.expect("put three");
    let one = store.version(&bucket, "one", 1).await.expect("version").expect("some");
    assert_eq!(one.content.as_ref(), Some(&rewritten));

    let unknown = ContentHash::of(uuid::Uuid::new_v4().as_bytes());
    assert!(store.content(&unknown).await.expect("unknown content").is_none());
    store.set_placement(&unknown, &moved).await.expect("set_placement of an unknown hash is ignored");
    assert!(store.content(&unknown).await.expect("still unknown").is_none());
}

/// How content is stored (its encoding and stored length) comes back as written,
/// through `content`, a version and a listing; rewriting the content (new shards)
/// records the new form with the new placement.
pub async fn encoding_and_stored_size_round_trip(store: &dyn MetaStore) {
    let bucket = unique("encoding");
    let plain = sample_content(1 << 20, "4+2", &["a:1", "b:1", "c:1", "d:1", "e:1", "f:1"]);
    assert_eq!((plain.encoding, plain.stored_size, plain.stored_len()), (Encoding::Identity, None, 1 << 20));
    let packed =
        sample_content(1 << 20, "4+2", &["a:1", "b:1", "c:1", "d:1", "e:1", "f:1"]).encoded(Encoding::Zstd, 77_777);
    assert_eq!((packed.stored_size, packed.stored_len()), (Some(77_777), 77_777));
    store.put_version(&bucket, "plain", Some(&plain)).await.expect("put plain");
    store.put_version(&bucket, "packed", Some(&packed)).await.expect("put packed");
    assert_eq!(store.content(&plain.hash).await.expect("content"), Some(plain.clone()));
    assert_eq!(store.content(&packed.hash).await.expect("content"), Some(packed.clone()));
    let latest = store.latest(&bucket, "packed").await.expect("latest").expect("some");
    assert_eq!(latest.content.as_ref(), Some(&packed));
    let listed = store.list(&bucket, "", None, 10).await.expect("list");
    let found: Vec<_> = listed.iter().filter_map(|v| v.content.clone()).collect();
    assert!(found.contains(&plain) && found.contains(&packed), "{found:?}");
    // Stored again as it is (another API server's config): the new shards' form wins.
    let unpacked = ContentRecord::new(packed.hash, packed.size, packed.policy, plain.placement.clone());
    store.put_version(&bucket, "again", Some(&unpacked)).await.expect("put again");
    assert_eq!(store.content(&packed.hash).await.expect("content"), Some(unpacked));
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

/// A piece of content recorded under one hash with one size is refused under
/// another size (`Corrupt`), and the refused write leaves nothing: no version, no
/// listed name, the content row unchanged, and no gap in the numbering.
pub async fn same_hash_with_another_size_is_refused(store: &dyn MetaStore) {
    let bucket = unique("sized");
    let c = sample_content(100, "2+1", &["a:1", "b:1", "c:1"]);
    store.put_version(&bucket, "a", Some(&c)).await.expect("put");
    let lying = ContentRecord { size: c.size + 1, ..c.clone() };
    match store.put_version(&bucket, "b", Some(&lying)).await {
        Err(MetaError::Corrupt(_)) => {}
        other => panic!("same hash, another size: expected Corrupt, got {other:?}"),
    }
    assert!(store.latest(&bucket, "b").await.expect("latest").is_none());
    assert!(store.list(&bucket, "b", None, 10).await.expect("list").is_empty());
    assert_eq!(store.content(&c.hash).await.expect("content"), Some(c.clone()));
    assert_eq!(store.put_version(&bucket, "b", Some(&c)).await.expect("put b").version, 1, "no gap");
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

/// A store opened by `url` through [`cairn::meta::open`] keeps what it recorded
/// when opened again.
pub async fn reopen_by_url(url: &str) {
    let bucket = unique("reopen");
    let c = sample_content(9, "1+0", &["h:1"]);
    {
        let store = cairn::meta::open(url).await.expect("open");
        store.put_version(&bucket, "n", Some(&c)).await.expect("put");
        assert!(matches!(store.delete(&bucket, "n").await.expect("delete"), DeleteOutcome::Deleted(_)));
    }
    let store = cairn::meta::open(url).await.expect("open again");
    assert!(store.latest(&bucket, "n").await.expect("latest").expect("some").is_tombstone());
    assert_eq!(store.version(&bucket, "n", 1).await.expect("version").expect("some").content, Some(c));
    assert_eq!(store.put_version(&bucket, "n", None).await.expect("put").version, 3);
}

/// Runs every check of the content lifecycle, retention, the placement index,
/// sightings, leases and worker cursors against `store` (sequentially).
pub async fn run_lifecycle(store: &dyn MetaStore) {
    gc_transitions(store).await;
    revive_and_begin_delete_in_one_task_agree(store).await;
    claim_orphan_only_where_no_row_is(store).await;
    prune_keeps_the_newest(store).await;
    expired_tombstones_remove_the_name(store).await;
    names_walk_every_name_with_versions(store).await;
    placement_index_follows_the_placement(store).await;
    sightings_keep_the_latest(store).await;
    leases_are_exclusive_expire_and_renew(store).await;
    worker_cursors_are_set_and_cleared(store).await;
    uploads_append_by_compare_and_set(store).await;
    upload_parts_are_referenced_for_the_collector(store).await;
    finishing_an_upload_is_atomic_and_idempotent(store).await;
    expired_uploads_are_removed(store).await;
}

/// Like [`run_lifecycle`], plus the races between spawned tasks.
pub async fn run_lifecycle_shared(store: Arc<dyn MetaStore>) {
    run_lifecycle(store.as_ref()).await;
    revive_and_put_race_begin_delete(Arc::clone(&store)).await;
    no_acknowledged_version_loses_its_content(store, 4, 40).await;
}

/// A content record with `placement` and a hash no other run uses.
fn placed(placement: &[(u32, &str)]) -> ContentRecord {
    ContentRecord::new(
        ContentHash::of(uuid::Uuid::new_v4().as_bytes()),
        10,
        Policy { k: 2, m: 1 },
        placement.iter().map(|(i, s)| (*i, s.to_string())).collect(),
    )
}

/// Makes `c` unreferenced: one version of a name of its own, then a tombstone, then
/// the version pruned away.
async fn unreferenced(store: &dyn MetaStore, c: &ContentRecord) {
    let bucket = unique("unref");
    store.put_version(&bucket, "n", Some(c)).await.expect("put");
    store.put_version(&bucket, "n", None).await.expect("tombstone");
    assert_eq!(store.prune(&bucket, "n", Some(1), None).await.expect("prune"), 1);
}

/// Every transition of the GC protocol, one at a time.
pub async fn gc_transitions(store: &dyn MetaStore) {
    let bucket = unique("gc");
    let c = sample_content(77, "2+1", &["a:1", "b:1", "c:1"]);
    let unknown = ContentHash::of(uuid::Uuid::new_v4().as_bytes());
    assert_eq!(store.content_state(&unknown).await.expect("state"), None);
    assert_eq!(store.revive(&unknown).await.expect("revive"), None);
    assert!(!store.begin_delete(&unknown, i64::MAX).await.expect("begin_delete unknown"));
    assert!(!store.finish_delete(&unknown).await.expect("finish unknown"));

    store.put_version(&bucket, "x", Some(&c)).await.expect("put");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));
    assert_eq!(store.revive(&c.hash).await.expect("revive live"), Some(ContentState::Live));
    store.doom_unreferenced(now_ms(), 1_000_000).await.expect("doom");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live), "referenced");
    assert!(!store.begin_delete(&c.hash, i64::MAX).await.expect("begin_delete live"));
    assert!(!store.finish_delete(&c.hash).await.expect("finish live"));
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));

    // Unreferenced: doomed since the given time, not twice.
    store.put_version(&bucket, "x", None).await.expect("tombstone");
    assert_eq!(store.prune(&bucket, "x", Some(1), None).await.expect("prune"), 1);
    let t0 = now_ms() - 10_000;
    assert_eq!(store.doom_unreferenced(t0, 0).await.expect("doom none"), 0);
    assert!(store.doom_unreferenced(t0, 1_000_000).await.expect("doom") >= 1);
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { since_ms: t0 }));
    store.doom_unreferenced(t0 + 5, 1_000_000).await.expect("doom again");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { since_ms: t0 }));
    let hashes = |rows: Vec<ContentRecord>| rows.into_iter().map(|r| r.hash).collect::<Vec<_>>();
    let before = hashes(store.doomed_before(t0 - 1, None, 1_000_000).await.expect("doomed_before"));
    assert!(!before.contains(&c.hash), "doomed after the cutoff");
    let doomed = store.doomed_before(t0, None, 1_000_000).await.expect("doomed_before");
    assert!(doomed.contains(&c), "{doomed:?}");
    assert!(store.doomed_before(t0, None, 0).await.expect("limit 0").is_empty());
    let after = hashes(store.doomed_before(t0, Some(&c.hash), 1_000_000).await.expect("after"));
    assert!(after.iter().all(|h| h > &c.hash));

    // Revive, doom again, too young to delete, then deleting.
    assert_eq!(store.revive(&c.hash).await.expect("revive"), Some(ContentState::Live));
    let t1 = now_ms() - 5_000;
    store.doom_unreferenced(t1, 1_000_000).await.expect("doom");
    assert!(!store.begin_delete(&c.hash, t1 - 1).await.expect("too young"));
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { since_ms: t1 }));
    let counts = store.content_counts().await.expect("counts");
    assert!(store.begin_delete(&c.hash, t1).await.expect("begin_delete"));
    let now_counts = store.content_counts().await.expect("counts");
    assert_eq!((now_counts.doomed + 1, now_counts.deleting), (counts.doomed, counts.deleting + 1));
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Deleting));
    assert!(store.deleting(None, 1_000_000).await.expect("deleting").contains(&c));
    assert!(!hashes(store.deleting(Some(&c.hash), 1_000_000).await.expect("deleting")).contains(&c.hash));
    assert_eq!(store.revive(&c.hash).await.expect("revive deleting"), Some(ContentState::Deleting));
    assert!(!store.begin_delete(&c.hash, i64::MAX).await.expect("begin_delete deleting"));
    store.doom_unreferenced(now_ms(), 1_000_000).await.expect("doom");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Deleting));

    // A PUT of deleting content is refused and adds nothing; concurrent writes of
    // other content (committed together with it, in a store that batches) are not
    // affected.
    let other = sample_content(78, "1+0", &["h:1"]);
    let (refused, fine, tomb) = futures_util::join!(
        store.put_version(&bucket, "again", Some(&c)),
        store.put_version(&bucket, "other", Some(&other)),
        store.put_version(&bucket, "gone", None),
    );
    match refused {
        Err(MetaError::ContentDeleting { hash }) => assert_eq!(hash, c.hash),
        other => panic!("put of deleting content: {other:?}"),
    }
    assert_eq!(fine.expect("put of other content").version, 1);
    assert_eq!(tomb.expect("tombstone").version, 1);
    assert!(store.latest(&bucket, "again").await.expect("latest").is_none());
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Deleting));
    assert_eq!(store.content_state(&other.hash).await.expect("state"), Some(ContentState::Live));
    assert_eq!(store.put_version(&bucket, "again", None).await.expect("tombstone").version, 1);

    assert!(store.finish_delete(&c.hash).await.expect("finish"));
    assert_eq!(store.content_state(&c.hash).await.expect("state"), None);
    assert_eq!(store.content(&c.hash).await.expect("content"), None);
    assert!(!store.finish_delete(&c.hash).await.expect("finish again"));
    assert!(!store.deleting(None, 1_000_000).await.expect("deleting").contains(&c));
    // Once gone, the content can be written again: a new, live row.
    assert_eq!(store.put_version(&bucket, "again", Some(&c)).await.expect("put again").version, 2);
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));
}

/// A doomed row that a version points at (a doom that raced a PUT) goes live on
/// `begin_delete` instead of deleting. `force_doomed` marks the row of the given
/// hash doomed behind the store's back (raw SQL in the store's own test).
pub async fn begin_delete_revives_a_referenced_doomed_row<F, Fut>(store: &dyn MetaStore, force_doomed: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let bucket = unique("gcref");
    let c = sample_content(5, "1+0", &["h:1"]);
    store.put_version(&bucket, "x", Some(&c)).await.expect("put");
    force_doomed(c.hash.to_hex()).await;
    assert!(matches!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { .. })));
    assert!(!store.begin_delete(&c.hash, i64::MAX).await.expect("begin_delete"));
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));
    assert_eq!(store.latest(&bucket, "x").await.expect("latest").expect("some").content, Some(c));
}

/// `revive` and `begin_delete` of one doomed row as concurrent futures: they agree
/// on who was first.
pub async fn revive_and_begin_delete_in_one_task_agree(store: &dyn MetaStore) {
    for _ in 0..10 {
        let c = sample_content(3, "1+0", &["h:1"]);
        unreferenced(store, &c).await;
        let now = now_ms();
        store.doom_unreferenced(now, 1_000_000).await.expect("doom");
        let (revived, began) = futures_util::join!(store.revive(&c.hash), store.begin_delete(&c.hash, now));
        check_revive_race(store, &c, revived.expect("revive"), began.expect("begin_delete")).await;
    }
}

async fn check_revive_race(store: &dyn MetaStore, c: &ContentRecord, revived: Option<ContentState>, began: bool) {
    let state = store.content_state(&c.hash).await.expect("state");
    if began {
        assert_eq!((revived, state), (Some(ContentState::Deleting), Some(ContentState::Deleting)));
        assert!(store.finish_delete(&c.hash).await.expect("finish"));
    } else {
        assert_eq!((revived, state), (Some(ContentState::Live), Some(ContentState::Live)));
    }
}

/// The same races between spawned tasks: `revive` vs `begin_delete`, and
/// `put_version` (dedup onto the doomed row) vs `begin_delete`: exactly one wins,
/// and a PUT that lost added nothing.
pub async fn revive_and_put_race_begin_delete(store: Arc<dyn MetaStore>) {
    let bucket = unique("gcrace");
    let (mut deleted, mut kept) = (0, 0);
    for round in 0..20 {
        let c = sample_content(3, "1+0", &["h:1"]);
        unreferenced(store.as_ref(), &c).await;
        let now = now_ms();
        store.doom_unreferenced(now, 1_000_000).await.expect("doom");
        let collector = {
            let (store, hash) = (Arc::clone(&store), c.hash);
            tokio::spawn(async move { store.begin_delete(&hash, now).await.expect("begin_delete") })
        };
        let name = format!("n{round}");
        if round % 2 == 0 {
            let revived = {
                let (store, hash) = (Arc::clone(&store), c.hash);
                tokio::spawn(async move { store.revive(&hash).await.expect("revive") })
            };
            let (revived, began) = (revived.await.expect("revive task"), collector.await.expect("collector"));
            check_revive_race(store.as_ref(), &c, revived, began).await;
            if began {
                deleted += 1;
            } else {
                kept += 1;
            }
            continue;
        }
        let put = {
            let (store, bucket, name, c) = (Arc::clone(&store), bucket.clone(), name.clone(), c.clone());
            tokio::spawn(async move { store.put_version(&bucket, &name, Some(&c)).await })
        };
        let (put, began) = (put.await.expect("put task"), collector.await.expect("collector"));
        let state = store.content_state(&c.hash).await.expect("state");
        match put {
            Ok(v) => {
                assert!(!began, "a version was acknowledged for content being deleted");
                assert_eq!(state, Some(ContentState::Live));
                assert_eq!(store.latest(&bucket, &name).await.expect("latest"), Some(v));
                kept += 1;
            }
            Err(MetaError::ContentDeleting { hash }) => {
                assert_eq!(hash, c.hash);
                assert!(began);
                assert_eq!(state, Some(ContentState::Deleting));
                assert!(store.latest(&bucket, &name).await.expect("latest").is_none(), "the refused PUT added nothing");
                assert!(store.finish_delete(&c.hash).await.expect("finish"));
                deleted += 1;
            }
            Err(e) => panic!("put racing begin_delete: {e}"),
        }
    }
    eprintln!("revive/put vs begin_delete: {deleted} deleted, {kept} kept");
}

/// `claim_orphan` inserts a deleting row only where there is no row at all.
pub async fn claim_orphan_only_where_no_row_is(store: &dyn MetaStore) {
    let bucket = unique("orphan");
    let orphan = ContentHash::of(uuid::Uuid::new_v4().as_bytes());
    let policy = Policy { k: 4, m: 2 };
    let counts = store.content_counts().await.expect("counts");
    assert!(store.claim_orphan(&orphan, policy).await.expect("claim"));
    assert_eq!(store.content_counts().await.expect("counts").deleting, counts.deleting + 1);
    assert_eq!(store.content_state(&orphan).await.expect("state"), Some(ContentState::Deleting));
    let expected = ContentRecord::new(orphan, 0, policy, Placement::new());
    assert_eq!(store.content(&orphan).await.expect("content"), Some(expected.clone()));
    assert!(store.deleting(None, 1_000_000).await.expect("deleting").contains(&expected));
    assert!(!store.claim_orphan(&orphan, policy).await.expect("claim again"));
    // A PUT racing the orphan collector is refused.
    let same = ContentRecord::new(orphan, 0, policy, Placement::from([(0, "h:1".to_string())]));
    assert!(matches!(
        store.put_version(&bucket, "late", Some(&same)).await,
        Err(MetaError::ContentDeleting { hash }) if hash == orphan
    ));
    assert!(store.latest(&bucket, "late").await.expect("latest").is_none());
    assert!(store.finish_delete(&orphan).await.expect("finish"));
    assert_eq!(store.put_version(&bucket, "late", Some(&same)).await.expect("put after").version, 1);
    // A hash with a row, in any state, is not an orphan.
    let live = sample_content(9, "1+0", &["h:1"]);
    store.put_version(&bucket, "live", Some(&live)).await.expect("put");
    assert!(!store.claim_orphan(&live.hash, policy).await.expect("claim live"));
    assert_eq!(store.content_state(&live.hash).await.expect("state"), Some(ContentState::Live));
    assert_eq!(store.content(&live.hash).await.expect("content"), Some(live));
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

fn servers(store_servers: Vec<(String, u64)>, mine: &[&str]) -> Vec<(String, u64)> {
    store_servers.into_iter().filter(|(s, _)| mine.contains(&s.as_str())).collect()
}

/// The placement index follows put_version, set_placement and finish_delete.
pub async fn placement_index_follows_the_placement(store: &dyn MetaStore) {
    let bucket = unique("index");
    let s: Vec<String> = (0..6).map(|i| unique(&format!("srv{i}"))).collect();
    let s: Vec<&str> = s.iter().map(String::as_str).collect();
    let c = placed(&[(0, s[0]), (1, s[1]), (2, s[0])]);
    store.put_version(&bucket, "x", Some(&c)).await.expect("put");
    assert_eq!(store.contents_on(s[0], None, 10).await.expect("on s0"), vec![c.clone()], "once, however many shards");
    assert_eq!(store.contents_on(s[1], None, 10).await.expect("on s1"), vec![c.clone()]);
    assert!(store.contents_on(s[0], None, 0).await.expect("limit 0").is_empty());
    assert!(store.contents_on(s[0], Some(&c.hash), 10).await.expect("after").is_empty());
    let all = store.placement_servers().await.expect("servers");
    assert_eq!(servers(all, &s), vec![(s[0].to_string(), 2), (s[1].to_string(), 1)]);

    let moved: Placement = Placement::from([(0, s[2].to_string())]);
    store.set_placement(&c.hash, &moved).await.expect("set_placement");
    assert!(store.contents_on(s[0], None, 10).await.expect("on s0").is_empty());
    let on_s2 = store.contents_on(s[2], None, 10).await.expect("on s2");
    assert_eq!(on_s2, vec![ContentRecord { placement: moved, ..c.clone() }]);
    assert_eq!(servers(store.placement_servers().await.expect("servers"), &s), vec![(s[2].to_string(), 1)]);

    let rewritten =
        ContentRecord { placement: Placement::from([(0, s[3].to_string()), (1, s[3].to_string())]), ..c.clone() };
    store.put_version(&bucket, "y", Some(&rewritten)).await.expect("put again");
    assert!(store.contents_on(s[2], None, 10).await.expect("on s2").is_empty());
    assert_eq!(store.contents_on(s[3], None, 10).await.expect("on s3"), vec![rewritten.clone()]);
    assert_eq!(servers(store.placement_servers().await.expect("servers"), &s), vec![(s[3].to_string(), 2)]);

    // Pages in hash order.
    let mut many: Vec<ContentRecord> =
        (0..5).map(|i| placed(&[(0, s[4]), (1, if i % 2 == 0 { s[4] } else { s[5] })])).collect();
    for (i, m) in many.iter().enumerate() {
        store.put_version(&bucket, &format!("m{i}"), Some(m)).await.expect("put");
    }
    many.sort_by_key(|m| m.hash);
    let first = store.contents_on(s[4], None, 2).await.expect("page 1");
    let second = store.contents_on(s[4], Some(&first[1].hash), 2).await.expect("page 2");
    let third = store.contents_on(s[4], Some(&second[1].hash), 2).await.expect("page 3");
    let walked: Vec<ContentRecord> = first.into_iter().chain(second).chain(third).collect();
    assert_eq!(walked, many);
    assert_eq!(
        servers(store.placement_servers().await.expect("servers"), &s[4..]),
        vec![(s[4].to_string(), 8), (s[5].to_string(), 2)]
    );

    // Deleted content leaves the index.
    for name in ["x", "y"] {
        store.put_version(&bucket, name, None).await.expect("tombstone");
        assert_eq!(store.prune(&bucket, name, Some(1), None).await.expect("prune"), 1);
    }
    let now = now_ms();
    store.doom_unreferenced(now, 1_000_000).await.expect("doom");
    assert!(store.begin_delete(&rewritten.hash, now).await.expect("begin_delete"));
    assert_eq!(store.contents_on(s[3], None, 10).await.expect("on s3 while deleting").len(), 1);
    assert!(store.finish_delete(&rewritten.hash).await.expect("finish"));
    assert!(store.contents_on(s[3], None, 10).await.expect("on s3").is_empty());
    assert!(servers(store.placement_servers().await.expect("servers"), &s[..4]).is_empty());
}

/// Sightings keep each server's latest time; forgetting removes one.
pub async fn sightings_keep_the_latest(store: &dyn MetaStore) {
    let (a, b) = (unique("seen-a"), unique("seen-b"));
    let mine = |all: Vec<(String, i64)>| -> Vec<(String, i64)> {
        all.into_iter().filter(|(s, _)| *s == a || *s == b).collect()
    };
    store.saw_servers(&[], 5).await.expect("nothing seen");
    store.saw_servers(&[a.clone(), b.clone()], 100).await.expect("saw");
    store.saw_servers(std::slice::from_ref(&a), 50).await.expect("saw older");
    let mut expected = vec![(a.clone(), 100), (b.clone(), 100)];
    expected.sort();
    assert_eq!(mine(store.server_sightings().await.expect("sightings")), expected);
    store.saw_servers(&[a.clone(), a.clone(), b.clone()], 200).await.expect("saw twice in one call");
    let mut expected = vec![(a.clone(), 200), (b.clone(), 200)];
    expected.sort();
    assert_eq!(mine(store.server_sightings().await.expect("sightings")), expected);
    store.forget_server(&a).await.expect("forget");
    store.forget_server(&a).await.expect("forget again");
    assert_eq!(mine(store.server_sightings().await.expect("sightings")), vec![(b.clone(), 200)]);
}

/// One holder at a time; renewing extends; releasing by another is a no-op; an
/// expired lease can be taken.
pub async fn leases_are_exclusive_expire_and_renew(store: &dyn MetaStore) {
    let lease = unique("lease");
    let long = Duration::from_secs(30);
    assert_eq!(store.lease_holder(&lease).await.expect("holder"), None);
    assert!(store.acquire_lease(&lease, "h1", long).await.expect("acquire"));
    assert_eq!(store.lease_holder(&lease).await.expect("holder").as_deref(), Some("h1"));
    assert!(!store.acquire_lease(&lease, "h2", long).await.expect("taken"));
    assert!(store.acquire_lease(&lease, "h1", long).await.expect("renew"));
    store.release_lease(&lease, "h2").await.expect("release by another");
    assert_eq!(store.lease_holder(&lease).await.expect("holder").as_deref(), Some("h1"));
    store.release_lease(&lease, "h1").await.expect("release");
    assert_eq!(store.lease_holder(&lease).await.expect("holder"), None);
    assert!(store.acquire_lease(&lease, "h2", long).await.expect("free again"));
    assert!(store.acquire_lease(&unique("lease-other"), "h1", long).await.expect("another lease"));

    let short = unique("lease-short");
    let ttl = Duration::from_millis(1000);
    assert!(store.acquire_lease(&short, "h1", ttl).await.expect("acquire"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.acquire_lease(&short, "h1", ttl).await.expect("renew"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    // 1.2 s after the first take, but 0.6 s after the renewal.
    assert_eq!(store.lease_holder(&short).await.expect("holder").as_deref(), Some("h1"), "renewal extends");
    assert!(!store.acquire_lease(&short, "h2", ttl).await.expect("still held"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.lease_holder(&short).await.expect("holder"), None, "expired");
    assert!(store.acquire_lease(&short, "h2", ttl).await.expect("take the expired lease"));
    assert_eq!(store.lease_holder(&short).await.expect("holder").as_deref(), Some("h2"));
}

/// Worker checkpoints: absent, set, replaced, cleared.
pub async fn worker_cursors_are_set_and_cleared(store: &dyn MetaStore) {
    let worker = unique("worker");
    assert_eq!(store.worker_cursor(&worker).await.expect("cursor"), None);
    store.set_worker_cursor(&worker, None).await.expect("clear nothing");
    store.set_worker_cursor(&worker, Some("bucket\u{0}name é")).await.expect("set");
    assert_eq!(store.worker_cursor(&worker).await.expect("cursor").as_deref(), Some("bucket\u{0}name é"));
    store.set_worker_cursor(&worker, Some("")).await.expect("replace");
    assert_eq!(store.worker_cursor(&worker).await.expect("cursor").as_deref(), Some(""));
    assert_eq!(store.worker_cursor(&unique("worker-other")).await.expect("other"), None);
    store.set_worker_cursor(&worker, None).await.expect("clear");
    assert_eq!(store.worker_cursor(&worker).await.expect("cursor"), None);
}

/// Leases through two stores on one database (two API servers): one holder at a
/// time, even when every holder of both stores asks at once.
pub async fn leases_are_exclusive_across_stores(a: Arc<dyn MetaStore>, b: Arc<dyn MetaStore>) {
    let lease = unique("shared-lease");
    let ttl = Duration::from_secs(30);
    assert!(a.acquire_lease(&lease, "api-a", ttl).await.expect("a takes"));
    assert!(!b.acquire_lease(&lease, "api-b", ttl).await.expect("b refused"));
    assert_eq!(b.lease_holder(&lease).await.expect("holder").as_deref(), Some("api-a"));
    a.release_lease(&lease, "api-a").await.expect("release");
    assert!(b.acquire_lease(&lease, "api-b", ttl).await.expect("b takes"));
    b.release_lease(&lease, "api-b").await.expect("release");
    for round in 0..3 {
        let race = unique(&format!("race-lease{round}"));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, race) = (Arc::clone(if i % 2 == 0 { &a } else { &b }), race.clone());
                tokio::spawn(async move { store.acquire_lease(&race, &format!("h{i}"), ttl).await.expect("acquire") })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.expect("lease task"));
        }
        assert_eq!(winners, 1, "exactly one holder");
        let holder = a.lease_holder(&race).await.expect("holder").expect("held");
        assert_eq!(b.lease_holder(&race).await.expect("holder"), Some(holder));
    }
}

/// `writers` tasks PUT content with a few shared hashes (dedup) and then prune their
/// versions away, while a collector loops doom → begin_delete → finish_delete with
/// the cutoff at now. A PUT either fails with `ContentDeleting` or is acknowledged;
/// right after an acknowledged PUT, and at the end for every version left, the
/// version's content row exists and is not deleting.
pub async fn no_acknowledged_version_loses_its_content(store: Arc<dyn MetaStore>, writers: usize, rounds: usize) {
    let bucket = unique("gcload");
    let contents: Vec<ContentRecord> = (0..3).map(|_| sample_content(8, "2+1", &["a:1", "b:1", "c:1"])).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut deleted = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let now = now_ms();
                store.doom_unreferenced(now, 1000).await.expect("doom");
                for c in store.doomed_before(now, None, 1000).await.expect("doomed_before") {
                    if store.begin_delete(&c.hash, now).await.expect("begin_delete") {
                        // The shards would be deleted here.
                        tokio::task::yield_now().await;
                        assert!(store.finish_delete(&c.hash).await.expect("finish"));
                        deleted += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            deleted
        })
    };
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, bucket, contents) = (Arc::clone(&store), bucket.clone(), contents.clone());
            tokio::spawn(async move {
                let (mut acked, mut refused) = (0u64, 0u64);
                let name = format!("w{w}");
                for i in 0..rounds {
                    let c = &contents[(w + i) % contents.len()];
                    match store.put_version(&bucket, &name, Some(c)).await {
                        Ok(v) => {
                            acked += 1;
                            let state = store.content_state(&c.hash).await.expect("state");
                            assert!(
                                matches!(state, Some(ContentState::Live | ContentState::Doomed { .. })),
                                "version {} acknowledged, its content is {state:?}",
                                v.version
                            );
                        }
                        Err(MetaError::ContentDeleting { .. }) => refused += 1,
                        Err(e) => panic!("put: {e}"),
                    }
                    if i % 2 == 1 {
                        store.put_version(&bucket, &name, None).await.expect("tombstone");
                        store.prune(&bucket, &name, Some(1), None).await.expect("prune");
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    let (mut acked, mut refused) = (0, 0);
    for task in tasks {
        let (a, r) = task.await.expect("writer task");
        acked += a;
        refused += r;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let deleted = collector.await.expect("collector task");
    eprintln!("gc under load: {acked} PUTs acknowledged, {refused} refused, {deleted} contents deleted");
    assert!(acked > 0);
    for w in 0..writers {
        for v in store.versions(&bucket, &format!("w{w}"), 0, 10_000).await.expect("versions") {
            if let Some(c) = &v.content {
                let state = store.content_state(&c.hash).await.expect("state");
                assert!(
                    matches!(state, Some(ContentState::Live | ContentState::Doomed { .. })),
                    "w{w} v{} points at content that is {state:?}",
                    v.version
                );
            }
        }
    }
}

/// A new upload of `length` (None: deferred) under a bucket of its own, created
/// (an upload's bucket must exist).
async fn new_upload(store: &dyn MetaStore, length: Option<u64>, expires_ms: i64) -> UploadRecord {
    let bucket = new_bucket(store, "upload").await;
    upload_into(&bucket, length, expires_ms)
}

/// A new upload of `length` (None: deferred) into `bucket`, which this does not
/// create.
fn upload_into(bucket: &str, length: Option<u64>, expires_ms: i64) -> UploadRecord {
    UploadRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        bucket: bucket.to_string(),
        name: "obj".into(),
        length,
        offset: 0,
        metadata: "filename b2Jq".into(),
        expected: None,
        hasher: vec![1, 2, 3],
        created_ms: now_ms(),
        expires_ms,
        finished_version: None,
    }
}

fn append<'a>(at: u64, parts: &'a [ContentRecord], length: Option<u64>) -> UploadAppend<'a> {
    UploadAppend { expected_offset: at, parts, hasher: &[9, 9], length, expires_ms: now_ms() + 3_600_000 }
}

/// Appends advance the offset only from the offset they expect; of two at one
/// offset exactly one wins; a deferred length is set once.
pub async fn uploads_append_by_compare_and_set(store: &dyn MetaStore) {
    let u = new_upload(store, None, now_ms() + 3_600_000).await;
    store.create_upload(&u).await.expect("create");
    assert!(store.create_upload(&u).await.is_err(), "an id is unique");
    assert_eq!(store.upload(&u.id).await.expect("upload"), Some(u.clone()));
    assert_eq!(store.upload("no-such-id").await.expect("upload"), None);
    let (a, b) = (placed(&[(0, "a:1")]), placed(&[(0, "b:1")]));
    let outcome = store.append_upload(&u.id, append(0, &[a.clone(), b.clone()], None)).await.expect("append");
    assert_eq!(outcome, AppendOutcome::Appended { offset: 20 });
    let (x, y) = futures_util::join!(
        store.append_upload(&u.id, append(20, std::slice::from_ref(&a), Some(40))),
        store.append_upload(&u.id, append(20, std::slice::from_ref(&b), Some(50))),
    );
    let mut outcomes = [x.expect("append"), y.expect("append")];
    outcomes.sort_by_key(|o| matches!(o, AppendOutcome::Conflict { .. }));
    assert_eq!(outcomes, [AppendOutcome::Appended { offset: 30 }, AppendOutcome::Conflict { offset: 30 }]);
    let now = store.upload(&u.id).await.expect("upload").expect("exists");
    assert_eq!(now.offset, 30);
    assert!(now.length == Some(40) || now.length == Some(50), "{:?}", now.length);
    assert_eq!(now.hasher, vec![9, 9]);
    // The length is kept once set.
    assert_eq!(
        store.append_upload(&u.id, append(30, &[], Some(99))).await.expect("append"),
        AppendOutcome::Appended { offset: 30 }
    );
    assert_eq!(store.upload(&u.id).await.expect("upload").expect("exists").length, now.length);
    let parts = store.upload_parts(&u.id, 0, 100).await.expect("parts");
    assert_eq!(parts.iter().map(|p| (p.offset, p.size)).collect::<Vec<_>>(), [(0, 10), (10, 10), (20, 10)]);
    assert_eq!(parts[0].hash, a.hash);
    assert_eq!(store.upload_parts(&u.id, 10, 1).await.expect("parts").len(), 1);
    assert_eq!(store.upload_parts(&u.id, 11, 100).await.expect("parts").len(), 1);
    assert_eq!(store.append_upload("no-such-id", append(0, &[], None)).await.expect("append"), AppendOutcome::Gone);
    assert!(store.delete_upload(&u.id).await.expect("delete"));
    assert!(!store.delete_upload(&u.id).await.expect("delete again"));
    assert!(store.upload_parts(&u.id, 0, 100).await.expect("parts").is_empty());
}

/// Content an upload's part points at is never doomed nor deleted; once the
/// upload is gone it is collected like any unreferenced content.
pub async fn upload_parts_are_referenced_for_the_collector(store: &dyn MetaStore) {
    let c = placed(&[(0, "a:1"), (1, "b:1"), (2, "c:1")]);
    unreferenced(store, &c).await;
    store.doom_unreferenced(now_ms() - 10_000, 1_000_000).await.expect("doom");
    assert!(matches!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { .. })));
    let u = new_upload(store, Some(100), now_ms() + 3_600_000).await;
    store.create_upload(&u).await.expect("create");
    // Appending records the content as put_version does: live again.
    store.append_upload(&u.id, append(0, std::slice::from_ref(&c), None)).await.expect("append");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));
    store.doom_unreferenced(now_ms(), 1_000_000).await.expect("doom");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live), "a part points at it");
    assert!(!store.begin_delete(&c.hash, i64::MAX).await.expect("begin_delete"));
    assert!(store.delete_upload(&u.id).await.expect("delete"));
    let t0 = now_ms() - 1_000;
    store.doom_unreferenced(t0, 1_000_000).await.expect("doom");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { since_ms: t0 }));
    assert!(store.begin_delete(&c.hash, t0).await.expect("begin_delete"));
    // A deleting content cannot be appended: nothing changes.
    let u = new_upload(store, Some(100), now_ms() + 3_600_000).await;
    store.create_upload(&u).await.expect("create");
    match store.append_upload(&u.id, append(0, std::slice::from_ref(&c), None)).await {
        Err(MetaError::ContentDeleting { hash }) => assert_eq!(hash, c.hash),
        other => panic!("append of deleting content: {other:?}"),
    }
    assert_eq!(store.upload(&u.id).await.expect("upload").expect("exists").offset, 0);
    assert!(store.finish_delete(&c.hash).await.expect("finish"));
    store.delete_upload(&u.id).await.expect("delete");
}

/// Finishing adds the version, marks the upload and drops its parts in one step;
/// a second finish changes nothing.
pub async fn finishing_an_upload_is_atomic_and_idempotent(store: &dyn MetaStore) {
    let u = new_upload(store, Some(10), now_ms() + 3_600_000).await;
    store.create_upload(&u).await.expect("create");
    let part = placed(&[(0, "a:1")]);
    store.append_upload(&u.id, append(0, std::slice::from_ref(&part), None)).await.expect("append");
    let whole = placed(&[(0, "b:1"), (1, "c:1")]);
    let record = match store.finish_upload(&u.id, &whole).await.expect("finish") {
        FinishOutcome::Finished(record) => record,
        other => panic!("finish: {other:?}"),
    };
    assert_eq!((record.bucket.as_str(), record.name.as_str(), record.version), (u.bucket.as_str(), "obj", 1));
    let latest = store.latest(&u.bucket, "obj").await.expect("latest").expect("a version");
    assert_eq!(latest.content, Some(whole.clone()));
    let now = store.upload(&u.id).await.expect("upload").expect("kept");
    assert_eq!(now.finished_version, Some(1));
    assert!(store.upload_parts(&u.id, 0, 100).await.expect("parts").is_empty());
    assert_eq!(store.finish_upload(&u.id, &whole).await.expect("again"), FinishOutcome::AlreadyFinished { version: 1 });
    assert_eq!(store.versions(&u.bucket, "obj", 0, 10).await.expect("versions").len(), 1);
    assert!(matches!(
        store.append_upload(&u.id, append(10, &[], None)).await.expect("append"),
        AppendOutcome::Conflict { offset: 10 }
    ));
    assert_eq!(store.finish_upload("no-such-id", &whole).await.expect("gone"), FinishOutcome::Gone);
    store.delete_upload(&u.id).await.expect("delete");
}

/// Expired uploads go with their parts, a batch at a time; others stay.
pub async fn expired_uploads_are_removed(store: &dyn MetaStore) {
    let now = now_ms();
    // Far in the past: no other check's uploads expire before these.
    let bucket = new_bucket(store, "expiry").await;
    let old: Vec<UploadRecord> = (0..3).map(|_| upload_into(&bucket, Some(100), now - 86_400_000 * 365 * 40)).collect();
    let young = upload_into(&bucket, Some(100), now + 3_600_000);
    for u in old.iter().chain([&young]) {
        store.create_upload(u).await.expect("create");
        let parts = [placed(&[(0, "a:1")])];
        let keep_expiry = UploadAppend { expires_ms: u.expires_ms, ..append(0, &parts, None) };
        store.append_upload(&u.id, keep_expiry).await.expect("append");
    }
    assert_eq!(store.remove_expired_uploads(now, 0).await.expect("limit 0"), 0);
    let cutoff = now - 86_400_000 * 365 * 39;
    assert_eq!(store.remove_expired_uploads(cutoff, 2).await.expect("first batch"), 2);
    assert_eq!(store.remove_expired_uploads(cutoff, 2).await.expect("second batch"), 1);
    assert_eq!(store.remove_expired_uploads(cutoff, 2).await.expect("nothing left"), 0);
    for u in &old {
        assert_eq!(store.upload(&u.id).await.expect("upload"), None);
        assert!(store.upload_parts(&u.id, 0, 10).await.expect("parts").is_empty());
    }
    assert!(store.upload(&young.id).await.expect("upload").is_some());
    store.delete_upload(&young.id).await.expect("delete");
}

// ---- S3: buckets, versions with attributes, multipart uploads, access keys ----

/// Runs every check of the S3 part of the trait against `store` (sequentially).
pub async fn run_s3(store: &dyn MetaStore) {
    buckets_are_created_listed_and_deleted(store).await;
    a_bucket_in_use_is_not_deleted(store).await;
    put_object_needs_its_bucket(store).await;
    conditional_put_object_adds_only_while_its_condition_holds(store).await;
    attrs_round_trip_through_every_read(store).await;
    delete_version_removes_exactly_one(store).await;
    list_versions_orders_filters_and_pages(store).await;
    multipart_parts_replace_page_and_complete(store).await;
    multipart_uploads_list_by_name_and_id(store).await;
    stale_multipart_uploads_are_removed(store).await;
    multipart_parts_are_referenced_for_the_collector(store).await;
    an_upload_into_a_missing_bucket_is_refused(store).await;
    an_upload_cannot_finish_after_its_bucket_is_deleted(store).await;
    deleting_a_bucket_aborts_its_open_uploads_and_keeps_nothing(store).await;
    a_bucket_with_a_version_is_not_deleted_and_its_uploads_survive(store).await;
    access_keys_are_created_read_listed_and_deleted(store).await;
}

/// Like [`run_s3`], plus the races of `delete_bucket` with writers into it.
pub async fn run_s3_shared(store: Arc<dyn MetaStore>) {
    run_s3(store.as_ref()).await;
    delete_bucket_is_atomic_against_put_object(Arc::clone(&store)).await;
    deleting_a_bucket_is_atomic_against_uploads_into_it(Arc::clone(&store)).await;
    racing_creates_of_one_name_add_one_version(store).await;
}

/// A bucket of its own, created.
async fn new_bucket(store: &dyn MetaStore, label: &str) -> String {
    let bucket = unique(label);
    assert!(store.create_bucket(&bucket, now_ms()).await.expect("create bucket"));
    bucket
}

/// Attributes with every field set.
fn full_attrs(etag: &str) -> ObjectAttrs {
    ObjectAttrs {
        etag: Some(etag.to_string()),
        content_type: Some("text/plain; charset=utf-8".into()),
        content_encoding: Some("gzip".into()),
        cache_control: Some("max-age=60".into()),
        content_disposition: Some("attachment; filename=\"a b.txt\"".into()),
        content_language: Some("fr".into()),
        expires: Some("Thu, 01 Dec 1994 16:00:00 GMT".into()),
        user: [("colour".to_string(), "blue".to_string()), ("note".to_string(), "é \"quoted\"".to_string())]
            .into_iter()
            .collect(),
    }
}

fn new_multipart(bucket: &str, name: &str, created_ms: i64) -> MultipartRecord {
    MultipartRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        bucket: bucket.to_string(),
        name: name.to_string(),
        attrs: ObjectAttrs { content_type: Some("application/x-big".into()), ..ObjectAttrs::default() },
        created_ms,
    }
}

fn name_versions(records: &[VersionRecord]) -> Vec<(&str, u64)> {
    records.iter().map(|r| (r.name.as_str(), r.version)).collect()
}

/// A bucket is created once, read back, listed in name order and deleted once;
/// `default` exists from the migration.
pub async fn buckets_are_created_listed_and_deleted(store: &dyn MetaStore) {
    let bucket = unique("bkt");
    assert_eq!(store.bucket(&bucket).await.expect("bucket"), None);
    assert!(store.create_bucket(&bucket, 5).await.expect("create"));
    assert!(!store.create_bucket(&bucket, 6).await.expect("create again"), "a bucket is created once");
    let record = BucketRecord { name: bucket.clone(), created_ms: 5 };
    assert_eq!(store.bucket(&bucket).await.expect("bucket"), Some(record.clone()), "the first creation stays");
    let all = store.buckets().await.expect("buckets");
    assert!(all.contains(&record), "{all:?}");
    assert!(all.iter().any(|b| b.name == cairn::meta::DEFAULT_BUCKET), "{all:?}");
    assert!(all.windows(2).all(|w| w[0].name < w[1].name), "name order: {all:?}");
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete"), DELETED_EMPTY);
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete again"), BucketDeleteOutcome::NoSuchBucket);
    assert_eq!(store.bucket(&bucket).await.expect("bucket"), None);
    assert!(!store.buckets().await.expect("buckets").contains(&record));
    assert!(store.create_bucket(&bucket, 7).await.expect("create after delete"));
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete"), DELETED_EMPTY);
}

/// What deleting a bucket with nothing in it answers.
const DELETED_EMPTY: BucketDeleteOutcome = BucketDeleteOutcome::Deleted { aborted_uploads: 0 };

/// A version (a tombstone too) keeps a bucket; once the versions are gone it can
/// be deleted, and an upload in progress does not keep it.
pub async fn a_bucket_in_use_is_not_deleted(store: &dyn MetaStore) {
    let c = sample_content(3, "1+0", &["h:1"]);
    let bucket = new_bucket(store, "inuse").await;
    store.put_object(&bucket, "x", &c, &ObjectAttrs::default(), None).await.expect("put");
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete"), BucketDeleteOutcome::NotEmpty);
    assert!(store.bucket(&bucket).await.expect("bucket").is_some(), "nothing removed");
    assert_eq!(store.latest(&bucket, "x").await.expect("latest").expect("kept").version, 1);
    assert!(store.delete_version(&bucket, "x", 1).await.expect("delete version"));
    // A tombstone alone holds it too.
    store.put_version(&bucket, "t", None).await.expect("tombstone");
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete"), BucketDeleteOutcome::NotEmpty);
    assert!(store.delete_version(&bucket, "t", 1).await.expect("delete version"));
    // An upload in progress is aborted with the bucket.
    let upload = new_multipart(&bucket, "big", now_ms());
    store.create_multipart(&upload).await.expect("create multipart");
    assert_eq!(
        store.delete_bucket(&bucket).await.expect("delete"),
        BucketDeleteOutcome::Deleted { aborted_uploads: 1 }
    );
    assert_eq!(store.multipart(&upload.id).await.expect("multipart"), None);
    // Creating an upload into the deleted bucket is refused.
    match store.create_multipart(&new_multipart(&bucket, "big", now_ms())).await {
        Err(MetaError::NoSuchBucket { bucket: b }) => assert_eq!(b, bucket),
        other => panic!("create_multipart into a deleted bucket: {other:?}"),
    }
}

/// `put_object` and `create_multipart` into a missing bucket are refused and add
/// nothing, not even the content row.
pub async fn put_object_needs_its_bucket(store: &dyn MetaStore) {
    let bucket = unique("missing");
    let c = sample_content(11, "1+0", &["h:1"]);
    match store.put_object(&bucket, "x", &c, &full_attrs("e"), None).await {
        Err(MetaError::NoSuchBucket { bucket: b }) => assert_eq!(b, bucket),
        other => panic!("put_object into a missing bucket: {other:?}"),
    }
    assert_eq!(store.latest(&bucket, "x").await.expect("latest"), None);
    assert!(store.list_versions(&bucket, "", None, 10).await.expect("list_versions").is_empty());
    assert_eq!(store.content(&c.hash).await.expect("content"), None, "no content row either");
    let upload = new_multipart(&bucket, "x", now_ms());
    assert!(matches!(store.create_multipart(&upload).await, Err(MetaError::NoSuchBucket { .. })));
    assert_eq!(store.multipart(&upload.id).await.expect("multipart"), None);
    // The same call succeeds once the bucket exists; put_version never asks.
    assert!(store.create_bucket(&bucket, now_ms()).await.expect("create"));
    assert_eq!(store.put_object(&bucket, "x", &c, &full_attrs("e"), None).await.expect("put").version, 1);
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));
    assert_eq!(store.put_version(&unique("nobucket"), "x", Some(&c)).await.expect("put_version").version, 1);
}

/// `put_object` with a precondition: `Absent` adds only to a name with no live
/// version, `Matches` only over the version with that entity tag; a refusal adds
/// nothing.
pub async fn conditional_put_object_adds_only_while_its_condition_holds(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "cond").await;
    let (a, b) = (sample_content(61, "1+0", &["h:1"]), sample_content(62, "1+0", &["h:1"]));
    let absent = Precondition::Absent;
    let v1 = store.put_object(&bucket, "k", &a, &full_attrs("etag-a"), Some(&absent)).await.expect("create");
    assert_eq!(v1.version, 1);
    assert_eq!(v1.etag(), "etag-a");
    match store.put_object(&bucket, "k", &b, &full_attrs("etag-b"), Some(&absent)).await {
        Err(MetaError::PreconditionFailed { bucket: got, name }) => {
            assert_eq!((got, name.as_str()), (bucket.clone(), "k"))
        }
        other => panic!("a second create: {other:?}"),
    }
    let stale = Precondition::Matches("etag-b".into());
    assert!(matches!(
        store.put_object(&bucket, "k", &b, &full_attrs("etag-b"), Some(&stale)).await,
        Err(MetaError::PreconditionFailed { .. })
    ));
    assert_eq!(store.latest(&bucket, "k").await.expect("latest").map(|r| r.version), Some(1), "refusals add nothing");
    let current = Precondition::Matches("etag-a".into());
    let v2 = store.put_object(&bucket, "k", &b, &full_attrs("etag-b"), Some(&current)).await.expect("replace");
    assert_eq!(v2.version, 2);
    // A delete marker is no live version: a create succeeds over it, a match does not.
    assert!(matches!(store.delete(&bucket, "k").await.expect("delete"), DeleteOutcome::Deleted(_)));
    let over_marker = Precondition::Matches("etag-b".into());
    assert!(matches!(
        store.put_object(&bucket, "k", &a, &full_attrs("etag-a"), Some(&over_marker)).await,
        Err(MetaError::PreconditionFailed { .. })
    ));
    let v4 = store.put_object(&bucket, "k", &a, &full_attrs("etag-a"), Some(&absent)).await.expect("recreate");
    assert_eq!(v4.version, 4);
    // A version written without attributes matches by its SHA-256.
    store.put_version(&bucket, "native", Some(&a)).await.expect("put_version");
    let by_hash = Precondition::Matches(a.hash.to_hex());
    assert_eq!(
        store.put_object(&bucket, "native", &b, &full_attrs("x"), Some(&by_hash)).await.expect("match").version,
        2
    );
}

/// Many writers creating one new name at once with `Absent`: exactly one adds a
/// version, the others are refused.
pub async fn racing_creates_of_one_name_add_one_version(store: Arc<dyn MetaStore>) {
    let bucket = new_bucket(store.as_ref(), "create-race").await;
    for round in 0..10 {
        let name = format!("lock-{round}");
        let writers: Vec<_> = (0..6u8)
            .map(|i| {
                let (store, bucket, name) = (Arc::clone(&store), bucket.clone(), name.clone());
                tokio::spawn(async move {
                    let c = sample_content(70 + u64::from(i), "1+0", &["h:1"]);
                    store.put_object(&bucket, &name, &c, &ObjectAttrs::default(), Some(&Precondition::Absent)).await
                })
            })
            .collect();
        let mut created = 0;
        for w in join_all(writers).await {
            match w.expect("join") {
                Ok(_) => created += 1,
                Err(MetaError::PreconditionFailed { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(created, 1, "round {round}: exactly one create wins");
        let versions = store.versions(&bucket, &name, 0, 10).await.expect("versions");
        assert_eq!(versions.len(), 1, "round {round}: one version");
    }
}

/// Attributes come back unchanged from every read that returns versions;
/// `put_version` leaves none, and empty attributes are not none.
pub async fn attrs_round_trip_through_every_read(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "attrs").await;
    let c = sample_content(21, "2+1", &["a:1", "b:1", "c:1"]);
    let attrs = full_attrs("0123456789abcdef0123456789abcdef");
    let put = store.put_object(&bucket, "o", &c, &attrs, None).await.expect("put");
    assert_eq!((put.version, put.attrs.as_ref(), put.content.as_ref()), (1, Some(&attrs), Some(&c)));
    assert_eq!(store.latest(&bucket, "o").await.expect("latest"), Some(put.clone()));
    assert_eq!(store.version(&bucket, "o", 1).await.expect("version"), Some(put.clone()));
    assert_eq!(store.versions(&bucket, "o", 0, 10).await.expect("versions"), vec![put.clone()]);
    assert_eq!(store.list(&bucket, "", None, 10).await.expect("list"), vec![put.clone()]);
    assert_eq!(store.list_versions(&bucket, "", None, 10).await.expect("list_versions"), vec![put.clone()]);
    let empty = store.put_object(&bucket, "e", &c, &ObjectAttrs::default(), None).await.expect("put empty");
    assert_eq!(empty.attrs, Some(ObjectAttrs::default()));
    assert_eq!(store.latest(&bucket, "e").await.expect("latest").expect("some").attrs, Some(ObjectAttrs::default()));
    let native = store.put_version(&bucket, "o", Some(&c)).await.expect("put_version");
    assert_eq!(native.attrs, None);
    assert_eq!(store.latest(&bucket, "o").await.expect("latest").expect("some").attrs, None);
    assert_eq!(store.version(&bucket, "o", 1).await.expect("version").expect("some").attrs, Some(attrs));
    let tomb = match store.delete(&bucket, "o").await.expect("delete") {
        DeleteOutcome::Deleted(tomb) => tomb,
        other => panic!("delete: {other:?}"),
    };
    assert_eq!(tomb.attrs, None);
}

/// `delete_version` removes that one version for good, tombstones too; the others
/// keep their numbers, and removing the newest makes the next newest the latest
/// (listed again), the name's next version following it.
pub async fn delete_version_removes_exactly_one(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "delver").await;
    let c = sample_content(31, "1+0", &["h:1"]);
    for _ in 0..3 {
        store.put_object(&bucket, "n", &c, &ObjectAttrs::default(), None).await.expect("put");
    }
    store.put_object(&bucket, "other", &c, &ObjectAttrs::default(), None).await.expect("put other");
    assert!(store.delete_version(&bucket, "n", 2).await.expect("delete 2"));
    assert!(!store.delete_version(&bucket, "n", 2).await.expect("delete 2 again"));
    assert!(!store.delete_version(&bucket, "n", 0).await.expect("delete 0"));
    assert!(!store.delete_version(&bucket, "n", u64::MAX).await.expect("delete max"));
    assert!(!store.delete_version(&bucket, "none", 1).await.expect("delete of no name"));
    assert_eq!(numbers(&store.versions(&bucket, "n", 0, 10).await.expect("versions")), vec![1, 3]);
    assert_eq!(store.latest(&bucket, "other").await.expect("latest").expect("untouched").version, 1);
    // The newest goes: version 1 is the latest and listed.
    assert!(store.delete_version(&bucket, "n", 3).await.expect("delete 3"));
    assert_eq!(store.latest(&bucket, "n").await.expect("latest").expect("some").version, 1);
    assert_eq!(name_versions(&store.list(&bucket, "n", None, 10).await.expect("list")), vec![("n", 1)]);
    assert_eq!(store.put_object(&bucket, "n", &c, &ObjectAttrs::default(), None).await.expect("put").version, 2);
    // A tombstone can be removed like any version, which makes the name live again.
    let tomb = store.put_version(&bucket, "n", None).await.expect("tombstone");
    assert!(store.list(&bucket, "n", None, 10).await.expect("list").is_empty());
    assert!(store.delete_version(&bucket, "n", tomb.version).await.expect("delete tombstone"));
    assert_eq!(name_versions(&store.list(&bucket, "n", None, 10).await.expect("list")), vec![("n", 2)]);
    // The last versions go: the name is gone, and starts again at 1.
    assert!(store.delete_version(&bucket, "n", 1).await.expect("delete 1"));
    assert!(store.delete_version(&bucket, "n", 2).await.expect("delete 2"));
    assert_eq!(store.latest(&bucket, "n").await.expect("latest"), None);
    assert_eq!(name_versions(&store.list(&bucket, "", None, 10).await.expect("list")), vec![("other", 1)]);
    let names = store.names(Some((&bucket, "")), 10).await.expect("names");
    assert_eq!(names.first().map(|(b, n)| (b.as_str(), n.as_str())), Some((bucket.as_str(), "other")));
    assert_eq!(store.put_version(&bucket, "n", None).await.expect("put").version, 1);
}

/// `list_versions` is ordered by name, newest version first within a name,
/// tombstones included; the prefix is a literal range; `after` continues with the
/// rest of that name's versions, then later names.
pub async fn list_versions_orders_filters_and_pages(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "lv").await;
    let c = sample_content(41, "1+0", &["h:1"]);
    let a = ObjectAttrs::default();
    for (name, versions) in [("b/1", 2), ("a", 3), ("c", 1), ("b0", 1), ("b/2", 1), ("b%", 1)] {
        for v in 1..=versions {
            if name == "a" && v == 2 {
                store.put_version(&bucket, name, None).await.expect("tombstone");
            } else {
                store.put_object(&bucket, name, &c, &a, None).await.expect("put");
            }
        }
    }
    let all = store.list_versions(&bucket, "", None, 100).await.expect("all");
    let expected =
        vec![("a", 3), ("a", 2), ("a", 1), ("b%", 1), ("b/1", 2), ("b/1", 1), ("b/2", 1), ("b0", 1), ("c", 1)];
    assert_eq!(name_versions(&all), expected);
    assert!(all[1].is_tombstone() && !all[0].is_tombstone());
    let page = |prefix: &'static str, after: Option<(&'static str, u64)>, limit| {
        let bucket = bucket.clone();
        async move { store.list_versions(&bucket, prefix, after, limit).await.expect("list_versions") }
    };
    assert_eq!(name_versions(&page("b/", None, 100).await), vec![("b/1", 2), ("b/1", 1), ("b/2", 1)]);
    assert_eq!(name_versions(&page("b%", None, 100).await), vec![("b%", 1)], "a prefix is literal");
    assert_eq!(name_versions(&page("a", Some(("a", 3)), 2).await), vec![("a", 2), ("a", 1)]);
    assert_eq!(name_versions(&page("", Some(("a", 2)), 1).await), vec![("a", 1)]);
    assert_eq!(name_versions(&page("", Some(("a", 1)), 1).await), vec![("b%", 1)]);
    assert_eq!(name_versions(&page("b/", Some(("b/1", 2)), 100).await), vec![("b/1", 1), ("b/2", 1)]);
    assert_eq!(name_versions(&page("b/", Some(("a", 9)), 1).await), vec![("b/1", 2)], "after before the prefix");
    assert!(page("b/", Some(("b/2", 1)), 100).await.is_empty());
    assert!(page("", None, 0).await.is_empty());
    assert!(page("zzz", None, 10).await.is_empty());
    // Walking pages of 2 yields the whole listing once, in order.
    let mut walked: Vec<VersionRecord> = Vec::new();
    loop {
        let after = walked.last().map(|r| (r.name.as_str(), r.version));
        let next = store.list_versions(&bucket, "", after, 2).await.expect("walk");
        if next.is_empty() {
            break;
        }
        walked.extend(next);
    }
    assert_eq!(walked, all);
}

/// Parts are set by number (a new upload of a number replaces it), paged in
/// number order; completing adds the version with its attributes and removes the
/// upload and its parts; a second completion, or a part for a gone upload, finds
/// nothing.
pub async fn multipart_parts_replace_page_and_complete(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "mpu").await;
    let upload = new_multipart(&bucket, "big", now_ms());
    store.create_multipart(&upload).await.expect("create");
    assert!(store.create_multipart(&upload).await.is_err(), "an id is unique");
    assert_eq!(store.multipart(&upload.id).await.expect("multipart"), Some(upload.clone()));
    assert_eq!(store.multipart("no-such-upload").await.expect("multipart"), None);
    let (p1, p2, p1b) = (placed(&[(0, "a:1")]), placed(&[(0, "b:1")]), placed(&[(0, "c:1")]));
    assert!(store.put_part(&upload.id, 2, &p2, "e2", 20).await.expect("part 2"));
    assert!(store.put_part(&upload.id, 1, &p1, "e1", 10).await.expect("part 1"));
    assert!(store.put_part(&upload.id, 1, &p1b, "e1b", 30).await.expect("part 1 again"));
    let parts = store.parts(&upload.id, 0, 100).await.expect("parts");
    let seen: Vec<_> = parts.iter().map(|p| (p.part_number, p.hash, p.size, p.etag.as_str(), p.created_ms)).collect();
    assert_eq!(seen, vec![(1, p1b.hash, 10, "e1b", 30), (2, p2.hash, 10, "e2", 20)]);
    assert_eq!(store.parts(&upload.id, 1, 100).await.expect("after 1").len(), 1);
    assert_eq!(store.parts(&upload.id, 0, 1).await.expect("limit 1")[0].part_number, 1);
    assert!(store.parts(&upload.id, 2, 100).await.expect("after 2").is_empty());
    assert!(store.parts(&upload.id, 0, 0).await.expect("limit 0").is_empty());
    // A part for an upload that does not exist records nothing.
    let stray = placed(&[(0, "d:1")]);
    assert!(!store.put_part("no-such-upload", 1, &stray, "e", 1).await.expect("stray part"));
    assert_eq!(store.content(&stray.hash).await.expect("content"), None);

    let whole = placed(&[(0, "a:1"), (1, "b:1")]);
    let attrs = ObjectAttrs { etag: Some("abc-2".into()), ..upload.attrs.clone() };
    let record = match store.complete_multipart(&upload.id, &whole, &attrs).await.expect("complete") {
        CompleteOutcome::Completed(record) => record,
        other => panic!("complete: {other:?}"),
    };
    assert_eq!((record.bucket.as_str(), record.name.as_str(), record.version), (bucket.as_str(), "big", 1));
    assert_eq!((record.content.as_ref(), record.attrs.as_ref()), (Some(&whole), Some(&attrs)));
    assert_eq!(store.latest(&bucket, "big").await.expect("latest"), Some(record));
    assert_eq!(store.multipart(&upload.id).await.expect("multipart"), None);
    assert!(store.parts(&upload.id, 0, 100).await.expect("parts").is_empty());
    assert_eq!(store.complete_multipart(&upload.id, &whole, &attrs).await.expect("again"), CompleteOutcome::Gone);
    assert_eq!(store.versions(&bucket, "big", 0, 10).await.expect("versions").len(), 1);
    assert!(!store.put_part(&upload.id, 3, &p2, "e3", 40).await.expect("part after completion"));
    assert!(!store.abort_multipart(&upload.id).await.expect("abort after completion"));

    // Abort removes the upload and its parts, once.
    let other = new_multipart(&bucket, "big", now_ms());
    store.create_multipart(&other).await.expect("create");
    assert!(store.put_part(&other.id, 1, &p1, "e1", 10).await.expect("part"));
    assert!(store.abort_multipart(&other.id).await.expect("abort"));
    assert!(!store.abort_multipart(&other.id).await.expect("abort again"));
    assert_eq!(store.multipart(&other.id).await.expect("multipart"), None);
    assert!(store.parts(&other.id, 0, 100).await.expect("parts").is_empty());
    assert_eq!(store.versions(&bucket, "big", 0, 10).await.expect("versions").len(), 1, "abort adds nothing");
}

/// Uploads of a bucket list by (name, id), strictly after the cursor, within a
/// literal prefix.
pub async fn multipart_uploads_list_by_name_and_id(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "mpl").await;
    let mut made = Vec::new();
    for name in ["b/x", "a", "b/x", "b0", "c", "a"] {
        let upload = new_multipart(&bucket, name, now_ms());
        store.create_multipart(&upload).await.expect("create");
        made.push(upload);
    }
    made.sort_by(|x, y| (&x.name, &x.id).cmp(&(&y.name, &y.id)));
    let other = new_bucket(store, "mpl2").await;
    store.create_multipart(&new_multipart(&other, "a", now_ms())).await.expect("create elsewhere");
    let all = store.multipart_uploads(&bucket, "", None, 100).await.expect("all");
    assert_eq!(all, made);
    let b: Vec<_> = made.iter().filter(|u| u.name.starts_with("b/")).cloned().collect();
    assert_eq!(store.multipart_uploads(&bucket, "b/", None, 100).await.expect("prefix"), b);
    let after = store.multipart_uploads(&bucket, "", Some((&made[0].name, &made[0].id)), 100).await.expect("after");
    assert_eq!(after, made[1..].to_vec());
    let after = store.multipart_uploads(&bucket, "b/", Some((&b[0].name, &b[0].id)), 100).await.expect("after");
    assert_eq!(after, b[1..].to_vec());
    let after = store.multipart_uploads(&bucket, "b/", Some(("a", "zzz")), 1).await.expect("after before");
    assert_eq!(after, b[..1].to_vec());
    assert!(store.multipart_uploads(&bucket, "", None, 0).await.expect("limit 0").is_empty());
    let mut walked: Vec<MultipartRecord> = Vec::new();
    loop {
        let after = walked.last().map(|u| (u.name.as_str(), u.id.as_str()));
        let next = store.multipart_uploads(&bucket, "", after, 4).await.expect("walk");
        if next.is_empty() {
            break;
        }
        walked.extend(next);
    }
    assert_eq!(walked, made);
    for upload in made {
        assert!(store.abort_multipart(&upload.id).await.expect("abort"));
    }
}

/// Uploads created at or before the cutoff go with their parts, a batch at a
/// time; younger ones stay.
pub async fn stale_multipart_uploads_are_removed(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "stale").await;
    let now = now_ms();
    // Far in the past: no other check's uploads are this old.
    let long_ago = now - 86_400_000 * 365 * 40;
    let old: Vec<MultipartRecord> = (0..3).map(|i| new_multipart(&bucket, "o", long_ago + i)).collect();
    let young = new_multipart(&bucket, "o", now);
    for u in old.iter().chain([&young]) {
        store.create_multipart(u).await.expect("create");
        assert!(store.put_part(&u.id, 1, &placed(&[(0, "a:1")]), "e", now).await.expect("part"));
    }
    let cutoff = long_ago + 2;
    assert_eq!(store.remove_stale_multipart(cutoff, 0).await.expect("limit 0"), 0);
    assert_eq!(store.remove_stale_multipart(cutoff, 2).await.expect("first batch"), 2);
    assert_eq!(store.remove_stale_multipart(cutoff, 2).await.expect("second batch"), 1);
    assert_eq!(store.remove_stale_multipart(cutoff, 2).await.expect("nothing left"), 0);
    for u in &old {
        assert_eq!(store.multipart(&u.id).await.expect("multipart"), None);
        assert!(store.parts(&u.id, 0, 10).await.expect("parts").is_empty());
    }
    assert!(store.multipart(&young.id).await.expect("multipart").is_some());
    assert_eq!(store.parts(&young.id, 0, 10).await.expect("parts").len(), 1);
    assert!(store.abort_multipart(&young.id).await.expect("abort"));
}

/// Content a multipart part points at is never doomed nor deleted while its
/// upload exists; once the upload is aborted it is collected like any
/// unreferenced content, and a part of deleting content is refused.
pub async fn multipart_parts_are_referenced_for_the_collector(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "mpgc").await;
    let c = placed(&[(0, "a:1"), (1, "b:1"), (2, "c:1")]);
    unreferenced(store, &c).await;
    store.doom_unreferenced(now_ms() - 10_000, 1_000_000).await.expect("doom");
    assert!(matches!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { .. })));
    let upload = new_multipart(&bucket, "big", now_ms());
    store.create_multipart(&upload).await.expect("create");
    // Putting a part records the content as put_version does: live again.
    assert!(store.put_part(&upload.id, 1, &c, "e1", now_ms()).await.expect("part"));
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live));
    store.doom_unreferenced(now_ms(), 1_000_000).await.expect("doom");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live), "a part points at it");
    assert!(!store.begin_delete(&c.hash, i64::MAX).await.expect("begin_delete"));
    assert!(store.abort_multipart(&upload.id).await.expect("abort"));
    let t0 = now_ms() - 1_000;
    store.doom_unreferenced(t0, 1_000_000).await.expect("doom");
    assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { since_ms: t0 }));
    assert!(store.begin_delete(&c.hash, t0).await.expect("begin_delete"));
    let upload = new_multipart(&bucket, "big", now_ms());
    store.create_multipart(&upload).await.expect("create");
    match store.put_part(&upload.id, 1, &c, "e1", now_ms()).await {
        Err(MetaError::ContentDeleting { hash }) => assert_eq!(hash, c.hash),
        other => panic!("part of deleting content: {other:?}"),
    }
    assert!(store.parts(&upload.id, 0, 10).await.expect("parts").is_empty());
    // Neither does completing with it add a version.
    assert!(matches!(
        store.complete_multipart(&upload.id, &c, &ObjectAttrs::default()).await,
        Err(MetaError::ContentDeleting { .. })
    ));
    assert!(store.multipart(&upload.id).await.expect("multipart").is_some(), "the upload stays");
    assert_eq!(store.latest(&bucket, "big").await.expect("latest"), None);
    assert!(store.finish_delete(&c.hash).await.expect("finish"));
    assert!(store.abort_multipart(&upload.id).await.expect("abort"));
}

/// An access key is created once, read back (buckets and read-only flag
/// included), listed in id order and deleted once.
pub async fn access_keys_are_created_read_listed_and_deleted(store: &dyn MetaStore) {
    let key = AccessKey {
        access_key: unique("AK").to_uppercase(),
        secret: "s3cr3t/with+chars=".into(),
        buckets: vec!["photos".into(), "logs-2024".into()],
        read_only: true,
        created_ms: 42,
    };
    let open = AccessKey {
        access_key: unique("AK").to_uppercase(),
        secret: "other".into(),
        buckets: Vec::new(),
        read_only: false,
        created_ms: 43,
    };
    assert_eq!(store.key(&key.access_key).await.expect("key"), None);
    assert!(store.create_key(&key).await.expect("create"));
    assert!(store.create_key(&open).await.expect("create open"));
    let clash = AccessKey { secret: "replaced?".into(), read_only: false, ..key.clone() };
    assert!(!store.create_key(&clash).await.expect("create again"), "an id is created once");
    assert_eq!(store.key(&key.access_key).await.expect("key"), Some(key.clone()), "the first stays");
    assert_eq!(store.key(&open.access_key).await.expect("key"), Some(open.clone()));
    let all = store.keys().await.expect("keys");
    assert!(all.contains(&key) && all.contains(&open), "{all:?}");
    assert!(all.windows(2).all(|w| w[0].access_key < w[1].access_key), "id order");
    assert!(store.delete_key(&key.access_key).await.expect("delete"));
    assert!(!store.delete_key(&key.access_key).await.expect("delete again"));
    assert_eq!(store.key(&key.access_key).await.expect("key"), None);
    assert!(!store.keys().await.expect("keys").contains(&key));
    assert!(store.delete_key(&open.access_key).await.expect("delete open"));
}

/// `delete_bucket` racing `put_object`s into the bucket from other tasks: either
/// it deletes the bucket and every put is refused with `NoSuchBucket`, or it finds
/// it not empty; never a deleted bucket holding a version.
pub async fn delete_bucket_is_atomic_against_put_object(store: Arc<dyn MetaStore>) {
    let c = sample_content(51, "1+0", &["h:1"]);
    let (mut deleted, mut kept) = (0, 0);
    for round in 0..20 {
        let bucket = new_bucket(store.as_ref(), "race").await;
        let puts: Vec<_> = (0..3)
            .map(|i| {
                let (store, bucket, c) = (Arc::clone(&store), bucket.clone(), c.clone());
                tokio::spawn(async move {
                    if i as usize % 3 == round % 3 {
                        tokio::task::yield_now().await;
                    }
                    store.put_object(&bucket, &format!("n{i}"), &c, &ObjectAttrs::default(), None).await
                })
            })
            .collect();
        let del = {
            let (store, bucket) = (Arc::clone(&store), bucket.clone());
            tokio::spawn(async move { store.delete_bucket(&bucket).await })
        };
        let outcome = del.await.expect("join").expect("delete_bucket");
        let mut stored = 0;
        for put in join_all(puts).await {
            match put.expect("join") {
                Ok(_) => stored += 1,
                Err(MetaError::NoSuchBucket { .. }) => {}
                Err(e) => panic!("put_object: {e}"),
            }
        }
        let listed = store.list_versions(&bucket, "", None, 10).await.expect("list_versions").len();
        assert_eq!(listed, stored, "round {round}: every acknowledged put is there");
        match outcome {
            BucketDeleteOutcome::Deleted { aborted_uploads } => {
                assert_eq!(aborted_uploads, 0, "round {round}: there was no upload");
                deleted += 1;
                assert_eq!(stored, 0, "round {round}: a deleted bucket took a version");
                assert_eq!(store.bucket(&bucket).await.expect("bucket"), None);
            }
            BucketDeleteOutcome::NotEmpty => {
                kept += 1;
                assert!(stored > 0, "round {round}: not empty, yet nothing was stored");
                assert!(store.bucket(&bucket).await.expect("bucket").is_some());
            }
            BucketDeleteOutcome::NoSuchBucket => panic!("round {round}: the bucket existed"),
        }
    }
    assert_eq!(deleted + kept, 20);
}

// ---- Buckets and the uploads into them (tus and multipart) ----

/// An upload into a bucket that was never created, or was deleted, is refused
/// with `NoSuchBucket` and nothing is stored; the same upload is taken once the
/// bucket exists, and `default` always takes uploads.
pub async fn an_upload_into_a_missing_bucket_is_refused(store: &dyn MetaStore) {
    let expires = now_ms() + 3_600_000;
    let missing = unique("nobucket");
    let u = upload_into(&missing, Some(10), expires);
    match store.create_upload(&u).await {
        Err(MetaError::NoSuchBucket { bucket }) => assert_eq!(bucket, missing),
        other => panic!("create_upload into a missing bucket: {other:?}"),
    }
    assert_eq!(store.upload(&u.id).await.expect("upload"), None, "nothing stored");
    assert_eq!(store.bucket(&missing).await.expect("bucket"), None, "nor a bucket made");

    let deleted = new_bucket(store, "gone").await;
    assert_eq!(store.delete_bucket(&deleted).await.expect("delete"), DELETED_EMPTY);
    let u = upload_into(&deleted, Some(10), expires);
    match store.create_upload(&u).await {
        Err(MetaError::NoSuchBucket { bucket }) => assert_eq!(bucket, deleted),
        other => panic!("create_upload into a deleted bucket: {other:?}"),
    }
    assert_eq!(store.upload(&u.id).await.expect("upload"), None, "nothing stored");

    assert!(store.create_bucket(&deleted, now_ms()).await.expect("create"));
    store.create_upload(&u).await.expect("create once the bucket exists");
    assert_eq!(store.upload(&u.id).await.expect("upload"), Some(u.clone()));
    let native = UploadRecord { name: unique("native"), ..upload_into(cairn::meta::DEFAULT_BUCKET, Some(10), expires) };
    store.create_upload(&native).await.expect("create into default");
    assert_eq!(store.upload(&native.id).await.expect("upload"), Some(native.clone()));
    assert!(store.delete_upload(&native.id).await.expect("delete"));
    assert!(store.delete_upload(&u.id).await.expect("delete"));
    assert_eq!(store.delete_bucket(&deleted).await.expect("delete"), DELETED_EMPTY);
}

/// An upload whose bucket is deleted before it finishes is aborted with the
/// bucket: finishing it then finds nothing and adds no version, nor any content,
/// not even into a bucket of the same name made again.
pub async fn an_upload_cannot_finish_after_its_bucket_is_deleted(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "finishgone").await;
    let u = upload_into(&bucket, Some(10), now_ms() + 3_600_000);
    store.create_upload(&u).await.expect("create");
    let part = placed(&[(0, "a:1")]);
    store.append_upload(&u.id, append(0, std::slice::from_ref(&part), None)).await.expect("append");
    assert_eq!(
        store.delete_bucket(&bucket).await.expect("delete"),
        BucketDeleteOutcome::Deleted { aborted_uploads: 1 }
    );
    let whole = placed(&[(0, "b:1"), (1, "c:1")]);
    assert_eq!(store.finish_upload(&u.id, &whole).await.expect("finish"), FinishOutcome::Gone);
    assert_eq!(store.latest(&bucket, "obj").await.expect("latest"), None);
    assert!(store.list_versions(&bucket, "", None, 10).await.expect("list_versions").is_empty());
    assert_eq!(store.content(&whole.hash).await.expect("content"), None, "no content row either");
    assert_eq!(store.append_upload(&u.id, append(10, &[], None)).await.expect("append"), AppendOutcome::Gone);
    assert!(store.create_bucket(&bucket, now_ms()).await.expect("create again"));
    assert_eq!(store.finish_upload(&u.id, &whole).await.expect("finish"), FinishOutcome::Gone);
    assert_eq!(store.latest(&bucket, "obj").await.expect("latest"), None);
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete"), DELETED_EMPTY);
}

/// An upload row left in a bucket that does not exist (stored before uploads
/// needed their bucket, or by another tool) cannot finish: `NoSuchBucket`, with no
/// version nor content added and the upload left unfinished. `insert_upload(id,
/// bucket)` stores such a row with raw SQL: name `obj`, length and offset 10, no
/// part, not expired.
pub async fn an_upload_left_in_a_missing_bucket_cannot_finish<F, Fut>(store: &dyn MetaStore, insert_upload: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let bucket = unique("legacy");
    let id = uuid::Uuid::new_v4().simple().to_string();
    insert_upload(id.clone(), bucket.clone()).await;
    assert_eq!(store.upload(&id).await.expect("upload").expect("inserted").bucket, bucket);
    let whole = placed(&[(0, "a:1")]);
    match store.finish_upload(&id, &whole).await {
        Err(MetaError::NoSuchBucket { bucket: b }) => assert_eq!(b, bucket),
        other => panic!("finish_upload into a missing bucket: {other:?}"),
    }
    assert_eq!(store.latest(&bucket, "obj").await.expect("latest"), None);
    assert_eq!(store.content(&whole.hash).await.expect("content"), None, "no content row either");
    assert_eq!(store.upload(&id).await.expect("upload").expect("kept").finished_version, None);
    assert!(store.delete_upload(&id).await.expect("delete"));
}

/// Deleting a bucket whose only contents are uploads in progress removes them
/// with it, in one step: tus and multipart uploads with their parts (counted),
/// and a finished tus upload's row (not counted: there was nothing to abort).
/// What their parts pointed at is then collected as after an abort, while content
/// another bucket's upload points at stays live.
pub async fn deleting_a_bucket_aborts_its_open_uploads_and_keeps_nothing(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "abort").await;
    let expires = now_ms() + 3_600_000;
    let (t1, t2, m1, m2) = (placed(&[(0, "a:1")]), placed(&[(0, "b:1")]), placed(&[(0, "c:1")]), placed(&[(0, "d:1")]));
    let shared = placed(&[(0, "e:1")]);
    let with_parts = upload_into(&bucket, Some(30), expires);
    let empty = upload_into(&bucket, None, expires);
    let finished = UploadRecord { name: "done".into(), ..upload_into(&bucket, Some(10), expires) };
    for u in [&with_parts, &empty, &finished] {
        store.create_upload(u).await.expect("create");
    }
    let tus_parts = [t1.clone(), t2.clone(), shared.clone()];
    assert_eq!(
        store.append_upload(&with_parts.id, append(0, &tus_parts, None)).await.expect("append"),
        AppendOutcome::Appended { offset: 30 }
    );
    let done = placed(&[(0, "f:1")]);
    assert!(matches!(store.finish_upload(&finished.id, &done).await.expect("finish"), FinishOutcome::Finished(_)));
    assert!(store.delete_version(&bucket, "done", 1).await.expect("delete version"));
    let big = new_multipart(&bucket, "big", now_ms());
    let bare = new_multipart(&bucket, "bare", now_ms());
    for u in [&big, &bare] {
        store.create_multipart(u).await.expect("create multipart");
    }
    assert!(store.put_part(&big.id, 1, &m1, "e1", now_ms()).await.expect("part"));
    assert!(store.put_part(&big.id, 2, &m2, "e2", now_ms()).await.expect("part"));
    let elsewhere = new_upload(store, Some(10), expires).await;
    store.create_upload(&elsewhere).await.expect("create");
    assert_eq!(
        store.append_upload(&elsewhere.id, append(0, std::slice::from_ref(&shared), None)).await.expect("append"),
        AppendOutcome::Appended { offset: 10 }
    );

    assert_eq!(store.upload_parts(&with_parts.id, 0, 100).await.expect("parts").len(), 3);
    assert_eq!(store.parts(&big.id, 0, 100).await.expect("parts").len(), 2);
    assert_eq!(store.multipart_uploads(&bucket, "", None, 100).await.expect("list").len(), 2);
    assert_eq!(store.upload(&finished.id).await.expect("upload").expect("kept").finished_version, Some(1));
    store.doom_unreferenced(now_ms(), 1_000_000).await.expect("doom");
    for c in [&t1, &t2, &m1, &m2, &shared] {
        assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live), "a part points at it");
    }

    assert_eq!(
        store.delete_bucket(&bucket).await.expect("delete"),
        BucketDeleteOutcome::Deleted { aborted_uploads: 4 }
    );

    assert_eq!(store.bucket(&bucket).await.expect("bucket"), None);
    for u in [&with_parts, &empty, &finished] {
        assert_eq!(store.upload(&u.id).await.expect("upload"), None);
        assert!(store.upload_parts(&u.id, 0, 100).await.expect("parts").is_empty());
    }
    for u in [&big, &bare] {
        assert_eq!(store.multipart(&u.id).await.expect("multipart"), None);
        assert!(store.parts(&u.id, 0, 100).await.expect("parts").is_empty());
    }
    assert!(store.multipart_uploads(&bucket, "", None, 100).await.expect("list").is_empty());
    // What the uploads' clients try next finds nothing, and adds nothing.
    assert_eq!(store.append_upload(&with_parts.id, append(30, &[], None)).await.expect("append"), AppendOutcome::Gone);
    assert_eq!(store.finish_upload(&empty.id, &done).await.expect("finish"), FinishOutcome::Gone);
    assert!(!store.put_part(&bare.id, 1, &m1, "e1", now_ms()).await.expect("part"));
    assert_eq!(
        store.complete_multipart(&big.id, &m1, &ObjectAttrs::default()).await.expect("complete"),
        CompleteOutcome::Gone
    );
    assert!(store.list_versions(&bucket, "", None, 10).await.expect("list_versions").is_empty());
    let t0 = now_ms() - 1_000;
    store.doom_unreferenced(t0, 1_000_000).await.expect("doom");
    for c in [&t1, &t2, &m1, &m2] {
        assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Doomed { since_ms: t0 }));
        assert!(store.begin_delete(&c.hash, t0).await.expect("begin_delete"));
        assert!(store.finish_delete(&c.hash).await.expect("finish_delete"));
    }
    assert_eq!(
        store.content_state(&shared.hash).await.expect("state"),
        Some(ContentState::Live),
        "another bucket's upload points at it"
    );
    assert_eq!(store.upload_parts(&elsewhere.id, 0, 100).await.expect("parts").len(), 1);
    assert!(store.delete_upload(&elsewhere.id).await.expect("delete"));
}

/// A bucket that holds a version (a tombstone too) is not deleted, and its
/// uploads in progress, tus and multipart, stay with their parts, their content
/// live; once the versions are gone, deleting it aborts them.
pub async fn a_bucket_with_a_version_is_not_deleted_and_its_uploads_survive(store: &dyn MetaStore) {
    let bucket = new_bucket(store, "keeps").await;
    let (t, m) = (placed(&[(0, "a:1")]), placed(&[(0, "b:1")]));
    let tus = upload_into(&bucket, Some(20), now_ms() + 3_600_000);
    store.create_upload(&tus).await.expect("create");
    store.append_upload(&tus.id, append(0, std::slice::from_ref(&t), None)).await.expect("append");
    let multipart = new_multipart(&bucket, "big", now_ms());
    store.create_multipart(&multipart).await.expect("create multipart");
    assert!(store.put_part(&multipart.id, 1, &m, "e1", now_ms()).await.expect("part"));

    let c = sample_content(4, "1+0", &["h:1"]);
    store.put_object(&bucket, "x", &c, &ObjectAttrs::default(), None).await.expect("put");
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete"), BucketDeleteOutcome::NotEmpty);
    uploads_survive(store, &bucket, &tus, &multipart, &[&t, &m]).await;
    assert!(store.delete_version(&bucket, "x", 1).await.expect("delete version"));
    store.put_version(&bucket, "t", None).await.expect("tombstone");
    assert_eq!(store.delete_bucket(&bucket).await.expect("delete"), BucketDeleteOutcome::NotEmpty);
    uploads_survive(store, &bucket, &tus, &multipart, &[&t, &m]).await;

    assert!(store.delete_version(&bucket, "t", 1).await.expect("delete version"));
    assert_eq!(
        store.delete_bucket(&bucket).await.expect("delete"),
        BucketDeleteOutcome::Deleted { aborted_uploads: 2 }
    );
    assert_eq!(store.upload(&tus.id).await.expect("upload"), None);
    assert_eq!(store.multipart(&multipart.id).await.expect("multipart"), None);
}

/// The bucket, the tus upload (at offset 10, one part) and the multipart upload
/// (one part) are all still there, and the parts' `contents` stay live.
async fn uploads_survive(
    store: &dyn MetaStore,
    bucket: &str,
    tus: &UploadRecord,
    multipart: &MultipartRecord,
    contents: &[&ContentRecord],
) {
    assert!(store.bucket(bucket).await.expect("bucket").is_some(), "the bucket stays");
    assert_eq!(store.upload(&tus.id).await.expect("upload").expect("the tus upload stays").offset, 10);
    assert_eq!(store.upload_parts(&tus.id, 0, 100).await.expect("parts").len(), 1);
    assert!(store.multipart(&multipart.id).await.expect("multipart").is_some(), "the multipart upload stays");
    assert_eq!(store.parts(&multipart.id, 0, 100).await.expect("parts").len(), 1);
    store.doom_unreferenced(now_ms(), 1_000_000).await.expect("doom");
    for c in contents {
        assert_eq!(store.content_state(&c.hash).await.expect("state"), Some(ContentState::Live), "a part points at it");
    }
}

/// `delete_bucket` racing, from other tasks, a tus upload and a multipart upload
/// being created in the bucket and a tus upload in it being finished: either the
/// bucket goes with every upload that got in (counted) and the finish adds
/// nothing, or the finished version got in first and the bucket keeps them all.
pub async fn deleting_a_bucket_is_atomic_against_uploads_into_it(store: Arc<dyn MetaStore>) {
    let (mut deleted, mut kept) = (0, 0);
    for round in 0..20 {
        let bucket = new_bucket(store.as_ref(), "uprace").await;
        let expires = now_ms() + 3_600_000;
        let pending = upload_into(&bucket, Some(10), expires);
        store.create_upload(&pending).await.expect("create");
        store.append_upload(&pending.id, append(0, &[placed(&[(0, "a:1")])], None)).await.expect("append");
        let tus = upload_into(&bucket, Some(10), expires);
        let multipart = new_multipart(&bucket, "big", now_ms());
        // Each round lets a different one of the four start last.
        let late = move |i: usize| async move {
            if round % 4 == i {
                tokio::task::yield_now().await;
            }
        };
        let create_tus = {
            let (store, u) = (Arc::clone(&store), tus.clone());
            tokio::spawn(async move {
                late(0).await;
                store.create_upload(&u).await
            })
        };
        let create_multipart = {
            let (store, u) = (Arc::clone(&store), multipart.clone());
            tokio::spawn(async move {
                late(1).await;
                store.create_multipart(&u).await
            })
        };
        let finish = {
            let (store, id, whole) = (Arc::clone(&store), pending.id.clone(), placed(&[(0, "b:1")]));
            tokio::spawn(async move {
                late(2).await;
                store.finish_upload(&id, &whole).await
            })
        };
        let delete = {
            let (store, bucket) = (Arc::clone(&store), bucket.clone());
            tokio::spawn(async move {
                late(3).await;
                store.delete_bucket(&bucket).await
            })
        };
        let tus_in = got_in(create_tus.await.expect("join"), round, "create_upload");
        let multipart_in = got_in(create_multipart.await.expect("join"), round, "create_multipart");
        let finished = match finish.await.expect("join") {
            Ok(FinishOutcome::Finished(_)) => true,
            Ok(FinishOutcome::Gone) | Err(MetaError::NoSuchBucket { .. }) => false,
            other => panic!("round {round}: finish_upload: {other:?}"),
        };
        let versions = store.list_versions(&bucket, "", None, 10).await.expect("list_versions").len();
        match delete.await.expect("join").expect("delete_bucket") {
            BucketDeleteOutcome::Deleted { aborted_uploads } => {
                deleted += 1;
                assert!(!finished && versions == 0, "round {round}: a deleted bucket took a version");
                let got_in = 1 + u64::from(tus_in) + u64::from(multipart_in);
                assert_eq!(aborted_uploads, got_in, "round {round}: every upload that got in is aborted");
                assert_eq!(store.bucket(&bucket).await.expect("bucket"), None);
                assert_eq!(store.upload(&pending.id).await.expect("upload"), None, "round {round}");
                assert_eq!(store.upload(&tus.id).await.expect("upload"), None, "round {round}");
                assert_eq!(store.multipart(&multipart.id).await.expect("multipart"), None, "round {round}");
            }
            BucketDeleteOutcome::NotEmpty => {
                kept += 1;
                assert!(finished && versions == 1, "round {round}: not empty, yet nothing was finished");
                assert!(tus_in && multipart_in, "round {round}: the bucket stayed, so every create got in");
                assert!(store.upload(&tus.id).await.expect("upload").is_some(), "round {round}");
                assert!(store.multipart(&multipart.id).await.expect("multipart").is_some(), "round {round}");
            }
            BucketDeleteOutcome::NoSuchBucket => panic!("round {round}: the bucket existed"),
        }
    }
    assert_eq!(deleted + kept, 20);
}

/// Whether a create racing `delete_bucket` got in (refused only as `NoSuchBucket`).
fn got_in(created: Result<(), MetaError>, round: usize, what: &str) -> bool {
    match created {
        Ok(()) => true,
        Err(MetaError::NoSuchBucket { .. }) => false,
        Err(e) => panic!("round {round}: {what}: {e}"),
    }
}

/// Rows of the S3 tables that no store writes (for a store's corrupt-row test to
/// insert with raw SQL, the same in both dialects); `good` is the hash of recorded
/// content. [`corrupt_s3_rows_are_errors`] reads them back.
pub fn corrupt_s3_rows(good: &str) -> String {
    format!(
        r#"INSERT INTO versions (bucket, name, version, hash, size, created_ms, attrs)
               VALUES ('bk', 'bad-attrs', 1, NULL, 0, 0, '{{"etag": 5}}');
           INSERT INTO multipart_uploads (id, bucket, name, attrs, created_ms)
               VALUES ('bad-attrs-upload', 'default', 'n', 'not json', 0),
                      ('bad-part-upload', 'default', 'n', '{{}}', 0);
           INSERT INTO multipart_parts (upload_id, part_number, hash, size, etag, created_ms)
               VALUES ('bad-part-upload', 1, '{good}', -1, 'e', 0);
           INSERT INTO access_keys (access_key, secret, buckets, read_only, created_ms)
               VALUES ('BADKEY', 's', '{{"a": 1}}', TRUE, 0);"#
    )
}

/// The rows of [`corrupt_s3_rows`] are `Corrupt` errors, not panics nor defaults.
pub async fn corrupt_s3_rows_are_errors(store: &dyn MetaStore) {
    match store.latest("bk", "bad-attrs").await {
        Err(MetaError::Corrupt(reason)) => assert!(reason.contains("attributes"), "{reason}"),
        other => panic!("a version with unreadable attributes: {other:?}"),
    }
    assert!(matches!(store.multipart("bad-attrs-upload").await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.multipart_uploads("default", "", None, 100).await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.parts("bad-part-upload", 0, 10).await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.key("BADKEY").await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.keys().await, Err(MetaError::Corrupt(_))));
}
