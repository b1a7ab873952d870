//! Versions, tombstones, listing with pagination, and dedup, over HTTP against an
//! in-process cluster.

mod common;

use base64::Engine;
use cairn::content::ContentHash;
use common::{start, start_files};

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect()
}

#[tokio::test]
async fn every_put_adds_a_version_and_old_ones_stay_readable() {
    let t = start("1+0", 3).await;
    for body in ["one", "two", "three"] {
        assert_eq!(t.put("doc", body).await.status(), 200);
    }
    assert_eq!(t.get("doc").await.text().await.unwrap(), "three");
    let v1 = t.http.get(t.url("/objects/doc?version=1")).send().await.unwrap();
    assert_eq!(v1.headers()["x-cairn-version"], "1");
    assert_eq!(v1.text().await.unwrap(), "one");
    assert_eq!(t.http.get(t.url("/objects/doc?version=9")).send().await.unwrap().status(), 404);
    for bad in ["abc", "-1", "0", "1.5", ""] {
        let r = t.http.get(t.url(&format!("/objects/doc?version={bad}"))).send().await.unwrap();
        assert_eq!(r.status(), 400, "version={bad}");
    }
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn delete_adds_a_tombstone_that_hides_only_the_current_version() {
    let t = start("1+0", 3).await;
    assert_eq!(t.put("gone", "v1").await.status(), 200);
    assert_eq!(t.put("gone", "v2").await.status(), 200);
    let del = t.http.delete(t.url("/objects/gone")).send().await.unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(del.headers()["x-cairn-version"], "3");
    assert_eq!(t.get("gone").await.status(), 404);
    assert_eq!(t.http.head(t.url("/objects/gone")).send().await.unwrap().status(), 404);
    assert_eq!(t.http.get(t.url("/objects/gone?version=2")).send().await.unwrap().text().await.unwrap(), "v2");
    assert_eq!(t.http.get(t.url("/objects/gone?version=3")).send().await.unwrap().status(), 404);
    assert_eq!(t.http.delete(t.url("/objects/gone")).send().await.unwrap().status(), 404, "already deleted");
    assert_eq!(t.http.delete(t.url("/objects/never")).send().await.unwrap().status(), 404);
    // A new PUT brings the name back as version 4.
    assert_eq!(t.put("gone", "back").await.headers()["x-cairn-version"], "4");
    assert_eq!(t.get("gone").await.text().await.unwrap(), "back");

    let text = t.http.get(t.url("/versions/gone")).send().await.unwrap().text().await.unwrap();
    let versions = lines(&text);
    let numbers: Vec<u64> = versions.iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(versions[2]["deleted"], true);
    assert_eq!(versions[1]["deleted"], false);
    assert_eq!(versions[1]["hash"], ContentHash::of(b"v2").to_hex());
    assert_eq!(versions[1]["size"], 2);
    assert_eq!(versions[1]["name"], "gone");
    assert!(versions[1]["created"].as_i64().unwrap() > 1_700_000_000_000);
    t.cluster.shutdown().await;
}

/// Racing DELETEs of one name add one tombstone: one answers 200, the rest 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_of_one_name_add_one_tombstone() {
    let t = start("1+0", 2).await;
    assert_eq!(t.put("race", "live").await.status(), 200);
    let deletes = (0..16).map(|_| t.http.delete(t.url("/objects/race")).send());
    let statuses: Vec<u16> =
        futures_util::future::join_all(deletes).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), 15, "{statuses:?}");
    let text = t.http.get(t.url("/versions/race")).send().await.unwrap().text().await.unwrap();
    let deleted: Vec<bool> = lines(&text).iter().map(|v| v["deleted"].as_bool().unwrap()).collect();
    assert_eq!(deleted, [false, true], "one version, one tombstone");
    t.cluster.shutdown().await;
}

/// `limit=0` asks for a page of nothing: a bad query (400), whether or not the name
/// exists, not a missing name (404).
#[tokio::test]
async fn a_versions_limit_of_zero_is_a_bad_query() {
    let t = start("1+0", 2).await;
    assert_eq!(t.put("some", "body").await.status(), 200);
    for path in ["/versions/some?limit=0", "/versions/nobody?limit=0", "/versions/some?after=1&limit=0"] {
        let r = t.http.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert!(r.text().await.unwrap().contains("limit"), "{path}: the reason names the parameter");
    }
    assert_eq!(t.http.get(t.url("/versions/some?limit=1")).send().await.unwrap().status(), 200);
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn versions_page_with_after_and_limit_and_stream_past_one_step() {
    let t = start("1+0", 2).await;
    // Same content every time: after the first, each PUT is a dedup (fast).
    for _ in 0..620 {
        assert_eq!(t.put("many", "same").await.status(), 200);
    }
    let page = t.http.get(t.url("/versions/many?after=600&limit=5")).send().await.unwrap().text().await.unwrap();
    let numbers: Vec<u64> = lines(&page).iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [601, 602, 603, 604, 605]);
    let all = t.http.get(t.url("/versions/many")).send().await.unwrap().text().await.unwrap();
    let numbers: Vec<u64> = lines(&all).iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=620).collect::<Vec<_>>());
    assert_eq!(t.http.get(t.url("/versions/nobody")).send().await.unwrap().status(), 404);
    assert_eq!(t.http.get(t.url("/versions/many?limit=x")).send().await.unwrap().status(), 400);
    assert_eq!(t.shard_count().await, 1, "620 versions of one content are one shard");
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn listing_filters_by_prefix_skips_deleted_names_and_pages() {
    let t = start("1+0", 2).await;
    for name in ["photos/a.jpg", "photos/b.jpg", "photos/c.jpg", "docs/x.txt", "photos_old/z"] {
        assert_eq!(t.put(name, name).await.status(), 200);
    }
    assert_eq!(t.put("photos/b.jpg", "newer").await.status(), 200);
    assert_eq!(t.http.delete(t.url("/objects/photos/c.jpg")).send().await.unwrap().status(), 200);

    let t = &t;
    let list = |q: &'static str| async move {
        let v: serde_json::Value =
            t.http.get(t.url(&format!("/objects/{q}"))).send().await.unwrap().json().await.unwrap();
        v
    };
    let all = list("").await;
    let names: Vec<&str> = all["objects"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["docs/x.txt", "photos/a.jpg", "photos/b.jpg", "photos_old/z"]);
    assert_eq!(all["truncated"], false);
    assert_eq!(all["objects"][2]["version"], 2);
    assert_eq!(all["objects"][2]["size"], 5);

    let photos = list("?prefix=photos/").await;
    let names: Vec<&str> = photos["objects"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["photos/a.jpg", "photos/b.jpg"]);

    let first = list("?prefix=photos&limit=2").await;
    assert_eq!(first["truncated"], true);
    assert_eq!(first["next"], "photos/b.jpg");
    let second = list("?prefix=photos&limit=2&after=photos/b.jpg").await;
    let names: Vec<&str> = second["objects"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["photos_old/z"]);
    assert_eq!(second["truncated"], false);
    assert_eq!(t.http.get(t.url("/objects/?limit=-1")).send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn a_put_of_stored_content_writes_no_shard_data() {
    let t = start("1+1", 3).await;
    let body = common::pattern(700_000, 5);
    assert_eq!(t.put("original", body.clone()).await.status(), 200);
    let files = t.shard_files();
    assert_eq!(files.len(), 2);

    // Without a digest the body is streamed, then recognised and dropped.
    assert_eq!(t.put("copy-no-digest", body.clone()).await.status(), 200);
    // With a digest nothing is sent to any data server at all.
    let b64 = base64::engine::general_purpose::STANDARD.encode(ContentHash::of(&body).as_bytes());
    let with_digest =
        t.http.put(t.url("/objects/copy-digest")).header("Digest", format!("SHA-256={b64}")).body(body.clone());
    assert_eq!(with_digest.send().await.unwrap().status(), 200);
    // A digest naming stored content, with other bytes, is still refused.
    let liar = t.http.put(t.url("/objects/liar")).header("Digest", format!("SHA-256={b64}")).body("other bytes");
    assert_eq!(liar.send().await.unwrap().status(), 400);
    assert_eq!(t.get("liar").await.status(), 404);

    assert_eq!(t.shard_files(), files, "no new shard file appeared");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !t.temp_files().is_empty() {
        assert!(std::time::Instant::now() < deadline, "temp shards left behind");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for name in ["original", "copy-no-digest", "copy-digest"] {
        assert_eq!(t.get(name).await.bytes().await.unwrap().as_ref(), &body[..], "{name}");
    }
    t.cluster.shutdown().await;
}

#[tokio::test]
async fn content_whose_shards_are_gone_is_written_again() {
    let t = start_files("1+0", 1).await;
    assert_eq!(t.put("a", "precious").await.status(), 200);
    for f in t.shard_files() {
        std::fs::remove_file(f).unwrap();
    }
    assert_eq!(t.put("b", "precious").await.status(), 200);
    assert_eq!(t.shard_files().len(), 1, "the lost shard was written anew");
    assert_eq!(t.get("a").await.text().await.unwrap(), "precious");
    t.cluster.shutdown().await;
}
