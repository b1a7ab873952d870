//! The upload checks of the suite: tus uploads (compare-and-set appends, parts
//! the collector must see, finishing, expiry), and uploads into buckets that are
//! missing or deleted (tus and multipart).

use std::sync::Arc;

use cairn::meta::{
    AppendOutcome, BucketDeleteOutcome, CompleteOutcome, ContentRecord, ContentState, FinishOutcome, MetaError,
    MetaStore, MultipartRecord, ObjectAttrs, UploadAppend, UploadRecord,
};

use super::{new_bucket, new_multipart, now_ms, placed, sample_content, unique, unreferenced, DELETED_EMPTY};

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
