//! The content checks of the suite: one record per hash, encodings, and every
//! step of the content lifecycle (doom, revive, `begin_delete`, orphans), with its
//! races against PUTs.

use std::sync::Arc;
use std::time::Duration;

use cairn::content::{ContentHash, Encoding, Placement, Policy};
use cairn::meta::{ContentRecord, ContentState, MetaError, MetaStore};

use super::{now_ms, sample_content, unique, unreferenced};

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
