//! The S3 checks of the suite: buckets, versions with attributes, multipart
//! uploads and access keys, and the corrupt S3 rows a store must refuse.

use std::sync::Arc;

use cairn::meta::{
    AccessKey, BucketDeleteOutcome, BucketRecord, CompleteOutcome, ContentState, DeleteOutcome, MetaError, MetaStore,
    MultipartRecord, ObjectAttrs, Precondition, VersionRecord,
};
use futures_util::future::join_all;

use super::{new_bucket, new_multipart, now_ms, numbers, placed, sample_content, unique, unreferenced, DELETED_EMPTY};

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
