//! The cluster checks of the suite: the placement index, sightings, leases (also
//! across two stores) and worker cursors.

use std::sync::Arc;
use std::time::Duration;

use cairn::content::Placement;
use cairn::meta::{ContentRecord, MetaStore};

use super::{now_ms, placed, servers, unique};

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
