//! The behavioural suite every [`MetaStore`] must pass, whatever its backend (the
//! SQLite and the PostgreSQL store): test support, so it lives with the tests and
//! stays out of the release binary. Included by the metadata tests with
//! `#[path = "common/meta_suite/mod.rs"] mod meta_suite;`.
//!
//! The checks are split by the trait's domains, mirroring `src/meta/`:
//! `versions.rs`, `content.rs`, `cluster.rs`, `uploads.rs` and `s3.rs`; this file
//! holds the runners that call them in order and the helpers several domains
//! share, and re-exports every check so callers name them as `meta_suite::…`.
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

use std::sync::Arc;

use cairn::clock::now_ms;
use cairn::content::{ContentHash, Placement, Policy};
use cairn::meta::{
    BucketDeleteOutcome, ContentRecord, DeleteOutcome, MetaStore, MultipartRecord, ObjectAttrs, VersionRecord,
};

mod cluster;
mod content;
mod s3;
mod uploads;
mod versions;

pub use cluster::{
    leases_are_exclusive_across_stores, leases_are_exclusive_expire_and_renew, placement_index_follows_the_placement,
    sightings_keep_the_latest, worker_cursors_are_set_and_cleared,
};
pub use content::{
    begin_delete_revives_a_referenced_doomed_row, claim_orphan_only_where_no_row_is, content_is_recorded_once_per_hash,
    encoding_and_stored_size_round_trip, gc_transitions, no_acknowledged_version_loses_its_content,
    revive_and_begin_delete_in_one_task_agree, revive_and_put_race_begin_delete,
    same_hash_with_another_size_is_refused,
};
pub use s3::{
    a_bucket_in_use_is_not_deleted, access_keys_are_created_read_listed_and_deleted,
    attrs_round_trip_through_every_read, buckets_are_created_listed_and_deleted,
    conditional_put_object_adds_only_while_its_condition_holds, corrupt_s3_rows, corrupt_s3_rows_are_errors,
    delete_bucket_is_atomic_against_put_object, delete_version_removes_exactly_one,
    list_versions_orders_filters_and_pages, multipart_parts_are_referenced_for_the_collector,
    multipart_parts_replace_page_and_complete, multipart_uploads_list_by_name_and_id, put_object_needs_its_bucket,
    racing_creates_of_one_name_add_one_version, stale_multipart_uploads_are_removed,
};
pub use uploads::{
    a_bucket_with_a_version_is_not_deleted_and_its_uploads_survive,
    an_upload_cannot_finish_after_its_bucket_is_deleted, an_upload_into_a_missing_bucket_is_refused,
    an_upload_left_in_a_missing_bucket_cannot_finish, deleting_a_bucket_aborts_its_open_uploads_and_keeps_nothing,
    deleting_a_bucket_is_atomic_against_uploads_into_it, expired_uploads_are_removed,
    finishing_an_upload_is_atomic_and_idempotent, upload_parts_are_referenced_for_the_collector,
    uploads_append_by_compare_and_set,
};
pub use versions::{
    concurrent_deletes_add_one_tombstone, concurrent_deletes_in_one_task_add_one_tombstone,
    concurrent_tasks_get_distinct_gap_free_versions, concurrent_writes_get_distinct_gap_free_versions,
    delete_adds_a_tombstone_only_to_a_live_name, expired_tombstones_remove_the_name, latest_and_exact_versions,
    latest_is_fast, list_filters_orders_and_pages, list_prefix_is_literal, list_prefix_works_beyond_ascii,
    list_skips_tombstoned_names, names_walk_every_name_with_versions, prune_keeps_the_newest,
    tombstones_hide_nothing_older, two_stores_share_one_database, versions_count_from_one, versions_page_oldest_first,
};

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

fn servers(store_servers: Vec<(String, u64)>, mine: &[&str]) -> Vec<(String, u64)> {
    store_servers.into_iter().filter(|(s, _)| mine.contains(&s.as_str())).collect()
}

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

fn new_multipart(bucket: &str, name: &str, created_ms: i64) -> MultipartRecord {
    MultipartRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        bucket: bucket.to_string(),
        name: name.to_string(),
        attrs: ObjectAttrs { content_type: Some("application/x-big".into()), ..ObjectAttrs::default() },
        created_ms,
    }
}

/// What deleting a bucket with nothing in it answers.
const DELETED_EMPTY: BucketDeleteOutcome = BucketDeleteOutcome::Deleted { aborted_uploads: 0 };
