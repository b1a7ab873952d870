//! Resumable uploads (tus 1.0) against `cairn dev` in-process: the protocol's
//! core and extensions, spoken with plain reqwest so every header is visible.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use cairn::content::ContentHash;
use cairn::meta::sqlite::SqliteStore;
use cairn::meta::{ContentStore, UploadStore};
use common::{eventually, pattern, TestCluster};
use reqwest::{Method, Response, StatusCode};
use sha2::Digest;

const TUS: &str = "1.0.0";
const OCTETS: &str = "application/offset+octet-stream";

/// A cluster of six data servers (4+2, replication below 64 KiB) storing PATCH
/// bodies as parts of `part_size`, on a metadata store the test can look into.
async fn cluster(part_size: u64, expiry: Duration) -> (TestCluster, Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(SqliteStore::open(&dir.path().join("meta.sqlite")).await.unwrap());
    let t = common::start_custom_with_meta(6, meta.clone(), |c| {
        c.uploads.part_size = part_size;
        c.uploads.expiry = expiry;
    })
    .await;
    (t, meta, dir)
}

fn metadata(name: &str) -> String {
    format!("filename {},kind {}", STANDARD.encode(name), STANDARD.encode("test"))
}

async fn create(t: &TestCluster, length: u64, name: &str) -> String {
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", metadata(name))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(r.headers()["tus-resumable"], TUS);
    assert!(r.headers().contains_key("upload-expires"));
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/uploads/"), "{location}");
    location
}

async fn patch(t: &TestCluster, location: &str, offset: u64, body: impl Into<reqwest::Body>) -> Response {
    t.http
        .patch(t.url(location))
        .header("Tus-Resumable", TUS)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", OCTETS)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn head(t: &TestCluster, location: &str) -> Response {
    t.http.head(t.url(location)).header("Tus-Resumable", TUS).send().await.unwrap()
}

fn offset_of(r: &Response) -> u64 {
    r.headers()["upload-offset"].to_str().unwrap().parse().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

async fn get_body(t: &TestCluster, name: &str) -> Vec<u8> {
    let r = t.get(name).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn options_advertise_the_protocol_and_its_extensions() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let r = t.http.request(Method::OPTIONS, t.url("/uploads")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let h = r.headers();
    assert_eq!(h["tus-resumable"], TUS);
    assert_eq!(h["tus-version"], TUS);
    let extensions = h["tus-extension"].to_str().unwrap();
    for e in ["creation", "creation-with-upload", "creation-defer-length", "termination", "checksum", "expiration"] {
        assert!(extensions.split(',').any(|x| x == e), "{e} missing from {extensions}");
    }
    assert_eq!(h["tus-max-size"], (5u64 << 40).to_string().as_str());
    assert_eq!(h["tus-checksum-algorithm"], "sha1,sha256,md5");
}

#[tokio::test]
async fn an_upload_in_several_patches_becomes_the_object() {
    // 100 KiB parts: each PATCH below is cut into several, on the streaming path.
    let (t, meta, _dir) = cluster(100 * 1024, Duration::from_secs(3600)).await;
    let data = pattern(1_000_000, 11);
    let location = create(&t, data.len() as u64, "movie.bin").await;
    let r = head(&t, &location).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(offset_of(&r), 0);
    assert_eq!(r.headers()["upload-length"], "1000000");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["upload-metadata"], metadata("movie.bin").as_str());
    let mut offset = 0;
    for chunk in data.chunks(300_000) {
        let r = patch(&t, &location, offset, chunk.to_vec()).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
        offset += chunk.len() as u64;
        assert_eq!(offset_of(&r), offset);
        assert!(r.headers().contains_key("upload-expires"));
        if offset == data.len() as u64 {
            assert_eq!(r.headers()["x-cairn-version"], "1");
            assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{}\"", sha256_hex(&data)));
        } else {
            assert!(!r.headers().contains_key("x-cairn-version"));
        }
    }
    let r = head(&t, &location).await;
    assert_eq!(offset_of(&r), data.len() as u64);
    let got = get_body(&t, "movie.bin").await;
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    assert!(got == data);
    // The finished upload keeps its row (HEAD answers) but no part rows.
    let id = location.trim_start_matches("/uploads/");
    assert!(meta.upload_parts(id, 0, 100).await.unwrap().is_empty());
    assert_eq!(meta.upload(id).await.unwrap().unwrap().finished_version, Some(1));
    assert_eq!(api_metric(&t, cairn::telemetry::UPLOADS_CREATED).await, 1.0);
    assert_eq!(api_metric(&t, cairn::telemetry::UPLOAD_BYTES).await, data.len() as f64);
    assert_eq!(api_metric(&t, cairn::telemetry::UPLOADS_FINISHED).await, 1.0);
}

#[tokio::test]
async fn wrong_offset_type_or_protocol_are_refused() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let location = create(&t, 10, "o").await;
    let r = patch(&t, &location, 3, b"abc".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers()["tus-resumable"], TUS);
    let r = t
        .http
        .patch(t.url(&location))
        .header("Tus-Resumable", TUS)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = t
        .http
        .patch(t.url(&location))
        .header("Upload-Offset", "0")
        .header("Content-Type", OCTETS)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.headers()["tus-version"], TUS);
    assert_eq!(r.headers()["tus-resumable"], TUS);
    // A body past the length: refused up front by its Content-Length.
    let r = patch(&t, &location, 0, vec![1u8; 11]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset_of(&head(&t, &location).await), 0);
    // Creation without a length, with both, or without a name.
    for (k, v) in [("X-None", "1"), ("Upload-Defer-Length", "2")] {
        let r = t.http.post(t.url("/uploads")).header("Tus-Resumable", TUS).header(k, v).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", "5")
        .header("Upload-Metadata", format!("other {}", STANDARD.encode("x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", (6u64 << 40).to_string())
        .header("Upload-Metadata", metadata("big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn an_altered_or_unknown_id_reaches_nothing() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let location = create(&t, 10, "secret").await;
    let id = location.trim_start_matches("/uploads/");
    assert_eq!(id.len(), 32);
    // Flip the last hex digit, drop one, add one, and a path-like id.
    let last = id.chars().last().unwrap();
    let flipped = format!("{}{}", &id[..31], if last == '0' { '1' } else { '0' });
    for forged in [flipped, id[..31].to_string(), format!("{id}0"), "..%2F..%2Fmeta.sqlite".to_string()] {
        let r = head(&t, &format!("/uploads/{forged}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{forged}");
        let r = patch(&t, &format!("/uploads/{forged}"), 0, b"0123456789".to_vec()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{forged}");
    }
    assert_eq!(offset_of(&head(&t, &location).await), 0);
}

#[tokio::test]
async fn a_bad_checksum_is_460_and_keeps_the_offset() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let data = pattern(200_000, 3);
    let location = create(&t, data.len() as u64, "checked").await;
    let send = |offset: u64, body: Vec<u8>, checksum: String| {
        let t = &t;
        let location = location.clone();
        async move {
            t.http
                .patch(t.url(&location))
                .header("Tus-Resumable", TUS)
                .header("Upload-Offset", offset.to_string())
                .header("Content-Type", OCTETS)
                .header("Upload-Checksum", checksum)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let (a, rest) = data.split_at(70_000);
    let (b, c) = rest.split_at(70_000);
    let wrong = format!("sha1 {}", STANDARD.encode(sha1::Sha1::digest(b"something else")));
    let r = send(0, a.to_vec(), wrong).await;
    assert_eq!(r.status().as_u16(), 460);
    assert_eq!(r.headers()["tus-resumable"], TUS);
    assert_eq!(offset_of(&head(&t, &location).await), 0);
    let r = send(0, a.to_vec(), "crc32 AAAA".into()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Each algorithm, one chunk each.
    let r = send(0, a.to_vec(), format!("sha1 {}", STANDARD.encode(sha1::Sha1::digest(a)))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), a.len() as u64);
    let r = send(70_000, b.to_vec(), format!("md5 {}", STANDARD.encode(md5::Md5::digest(b)))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = send(140_000, c.to_vec(), format!("sha256 {}", STANDARD.encode(sha2::Sha256::digest(c)))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["x-cairn-version"], "1");
    assert!(get_body(&t, "checked").await == data);
}

#[tokio::test]
async fn a_deferred_length_is_given_later() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", metadata("deferred"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = head(&t, &location).await;
    assert_eq!(r.headers()["upload-defer-length"], "1");
    assert!(!r.headers().contains_key("upload-length"));
    let data = pattern(150_000, 5);
    let r = patch(&t, &location, 0, data[..100_000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The length, with the last chunk; a second, different length is refused.
    let last = |length: u64| {
        t.http
            .patch(t.url(&location))
            .header("Tus-Resumable", TUS)
            .header("Upload-Offset", "100000")
            .header("Upload-Length", length.to_string())
            .header("Content-Type", OCTETS)
            .body(data[100_000..].to_vec())
            .send()
    };
    let r = last(150_000).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_eq!(r.headers()["x-cairn-version"], "1");
    let r = head(&t, &location).await;
    assert_eq!(r.headers()["upload-length"], "150000");
    assert_eq!(offset_of(&r), 150_000);
    assert!(get_body(&t, "deferred").await == data);
}

#[tokio::test]
async fn creation_with_upload_and_an_empty_upload() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let data = pattern(90_000, 8);
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", "120000")
        .header("Upload-Metadata", metadata("early"))
        .header("Content-Type", OCTETS)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(offset_of(&r), 90_000);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let rest = pattern(30_000, 9);
    let r = patch(&t, &location, 90_000, rest.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(get_body(&t, "early").await == [data, rest].concat());

    let location = create(&t, 0, "empty").await;
    let r = head(&t, &location).await;
    assert_eq!(offset_of(&r), 0);
    assert_eq!(r.headers()["upload-length"], "0");
    assert!(get_body(&t, "empty").await.is_empty());
}

#[tokio::test]
async fn termination_removes_the_upload() {
    let (t, meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let location = create(&t, 100_000, "gone").await;
    let r = patch(&t, &location, 0, pattern(50_000, 1)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = t.http.delete(t.url(&location)).header("Tus-Resumable", TUS).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&t, &location).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(patch(&t, &location, 50_000, vec![0u8; 10]).await.status(), StatusCode::NOT_FOUND);
    let id = location.trim_start_matches("/uploads/");
    assert!(meta.upload(id).await.unwrap().is_none());
    assert!(meta.upload_parts(id, 0, 10).await.unwrap().is_empty());
    // The method override, as tus-js-client sends it.
    let location = create(&t, 10, "gone2").await;
    let r = t
        .http
        .post(t.url(&location))
        .header("Tus-Resumable", TUS)
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&t, &location).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_books_post_creates_an_upload_for_the_name() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let data = pattern(80_000, 4);
    let digest = STANDARD.encode(sha2::Sha256::digest(&data));
    let r = t
        .http
        .post(t.url("/objects/book.bin"))
        .header("Size", data.len().to_string())
        .header("Digest", format!("SHA-256={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = patch(&t, &location, 0, data.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(get_body(&t, "book.bin").await == data);
}

#[tokio::test]
async fn a_digest_given_at_creation_that_does_not_match_leaves_no_version() {
    let (t, _meta, _dir) = cluster(64 * 1024, Duration::from_secs(3600)).await;
    let data = pattern(70_000, 6);
    let wrong = ContentHash::of(b"not this");
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", metadata("digested"))
        .header("Digest", format!("SHA-256={}", STANDARD.encode(wrong.as_bytes())))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = patch(&t, &location, 0, data.clone()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let reason = r.text().await.unwrap();
    assert!(reason.contains(&wrong.to_hex()) && reason.contains(&sha256_hex(&data)), "{reason}");
    assert_eq!(t.get("digested").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(head(&t, &location).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_patches_at_one_offset_one_wins() {
    // Small parts, so both PATCHes store parts and race on the append.
    let (t, _meta, _dir) = cluster(16 * 1024, Duration::from_secs(3600)).await;
    let data = pattern(200_000, 12);
    let location = create(&t, data.len() as u64, "raced").await;
    let (a, b) = tokio::join!(
        patch(&t, &location, 0, data[..100_000].to_vec()),
        patch(&t, &location, 0, data[..100_000].to_vec())
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::NO_CONTENT, StatusCode::CONFLICT]);
    let offset = offset_of(&head(&t, &location).await);
    assert_eq!(offset, 100_000);
    let r = patch(&t, &location, offset, data[100_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(get_body(&t, "raced").await == data);
}

#[tokio::test]
async fn a_broken_patch_keeps_the_bytes_received() {
    let (t, _meta, _dir) = cluster(32 * 1024, Duration::from_secs(3600)).await;
    let data = pattern(400_000, 13);
    let location = create(&t, data.len() as u64, "broken").await;
    // A body that sends 150 000 bytes and then fails: reqwest aborts the request.
    let first = Bytes::from(data[..150_000].to_vec());
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(first.slice(..100_000)), Ok(first.slice(100_000..)), Err(std::io::Error::other("cut"))];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c
    }));
    let sent = t
        .http
        .patch(t.url(&location))
        .header("Tus-Resumable", TUS)
        .header("Upload-Offset", "0")
        .header("Content-Type", OCTETS)
        .body(body)
        .send()
        .await;
    assert!(sent.is_err() || !sent.unwrap().status().is_success());
    // The server sees the break and appends the last, short part too.
    let mut offset = 0;
    for _ in 0..100 {
        offset = offset_of(&head(&t, &location).await);
        if offset == 150_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(offset > 0 && offset <= 150_000, "offset {offset}");
    let r = patch(&t, &location, offset, data[offset as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(get_body(&t, "broken").await == data);
}

use futures_util::StreamExt;

async fn gc_passes(t: &TestCluster) -> u64 {
    let s: serde_json::Value = t.http.get(t.url("/admin/status")).send().await.unwrap().json().await.unwrap();
    let gc = s["workers"].as_array().unwrap().iter().find(|w| w["name"] == "gc").unwrap().clone();
    gc["info"]["counts"]["passes"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn an_expired_upload_is_404_and_the_worker_removes_its_rows() {
    let (t, meta, _dir) = cluster(32 * 1024, Duration::from_millis(300)).await;
    let location = create(&t, 200_000, "abandoned").await;
    let r = patch(&t, &location, 0, pattern(100_000, 2)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let expires = httpdate::parse_http_date(r.headers()["upload-expires"].to_str().unwrap()).unwrap();
    assert!(expires > std::time::SystemTime::now() - Duration::from_secs(2));
    let id = location.trim_start_matches("/uploads/").to_string();
    assert!(!meta.upload_parts(&id, 0, 100).await.unwrap().is_empty());
    eventually(Duration::from_secs(10), "the upload expired", || async {
        head(&t, &location).await.status() == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(patch(&t, &location, 100_000, vec![0u8; 10]).await.status(), StatusCode::NOT_FOUND);
    let r = t.http.post(t.url("/admin/uploads/expire")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    eventually(Duration::from_secs(10), "the expiry worker removed the rows", || async {
        meta.upload(&id).await.unwrap().is_none()
    })
    .await;
    assert!(meta.upload_parts(&id, 0, 100).await.unwrap().is_empty());
    // What the operator sees of it: one upload created, its acknowledged bytes,
    // none finished, one expired.
    assert_eq!(api_metric(&t, cairn::telemetry::UPLOADS_CREATED).await, 1.0);
    assert_eq!(api_metric(&t, cairn::telemetry::UPLOAD_BYTES).await, 100_000.0);
    assert_eq!(api_metric(&t, cairn::telemetry::UPLOADS_FINISHED).await, 0.0);
    assert_eq!(api_metric(&t, cairn::telemetry::UPLOADS_EXPIRED).await, 1.0);
}

/// The sum of this cluster's API server's samples of the counter `name` in its
/// `/metrics` (0 when it has none).
async fn api_metric(t: &TestCluster, name: &str) -> f64 {
    let text = t.http.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let server = format!("server=\"{}\"", t.cluster.api_addr);
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("role=\"api\"") && l.contains(&server))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn gc_keeps_a_live_uploads_parts_and_collects_them_once_it_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(SqliteStore::open(&dir.path().join("meta.sqlite")).await.unwrap());
    let t = common::start_custom_with_meta(6, meta.clone(), |c| {
        c.uploads.part_size = 32 * 1024;
        c.maintenance.gc_interval = Duration::from_millis(100);
        c.maintenance.gc_grace = Duration::ZERO;
        c.maintenance.orphan_interval = Duration::from_secs(3600);
    })
    .await;
    let data = pattern(300_000, 21);
    let location = create(&t, data.len() as u64, "collected").await;
    assert_eq!(patch(&t, &location, 0, data[..100_000].to_vec()).await.status(), StatusCode::NO_CONTENT);
    let id = location.trim_start_matches("/uploads/").to_string();
    let parts = meta.upload_parts(&id, 0, 100).await.unwrap();
    assert_eq!(parts.len(), 4, "{parts:?}");
    // Two full passes of a collector with no grace period at all.
    let before = gc_passes(&t).await;
    eventually(Duration::from_secs(20), "two GC passes", || async { gc_passes(&t).await >= before + 2 }).await;
    for part in &parts {
        assert_eq!(meta.content_state(&part.hash).await.unwrap(), Some(cairn::meta::ContentState::Live));
    }
    assert_eq!(patch(&t, &location, 100_000, data[100_000..].to_vec()).await.status(), StatusCode::NO_CONTENT);
    assert!(get_body(&t, "collected").await == data);
    // Finished: the parts are unreferenced and go.
    eventually(Duration::from_secs(20), "the parts collected", || async {
        let mut gone = true;
        for part in &parts {
            gone &= meta.content_state(&part.hash).await.unwrap().is_none();
        }
        gone
    })
    .await;
    assert!(get_body(&t, "collected").await == data);
}

#[tokio::test]
async fn an_upload_resumes_through_a_second_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.sqlite");
    let meta = Arc::new(SqliteStore::open(&path).await.unwrap());
    let t = common::start_custom_with_meta(6, meta.clone(), |c| c.uploads.part_size = 64 * 1024).await;
    // A second API server: its own process state, the same bus and metadata file.
    let second_meta = Arc::new(SqliteStore::open(&path).await.unwrap());
    let mut config =
        common::second_api_config("4+2", "1+2", cairn::maintenance::MaintenanceConfig::new("second".into()));
    config.uploads = cairn::object::resumable::UploadSettings { part_size: 64 * 1024, ..Default::default() };
    let second_api = common::SecondApi::start(&t, second_meta, config).await;
    let second = second_api.base.clone();
    assert!(common::wait_live(&t.http, &second, 6).await, "the second API server sees the data servers");

    let data = pattern(500_000, 31);
    let location = create(&t, data.len() as u64, "travelled").await;
    assert_eq!(patch(&t, &location, 0, data[..200_000].to_vec()).await.status(), StatusCode::NO_CONTENT);
    let on_second = |path: &str| format!("{second}{path}");
    let r = t.http.head(on_second(&location)).header("Tus-Resumable", TUS).send().await.unwrap();
    assert_eq!(offset_of(&r), 200_000);
    let r = t
        .http
        .patch(on_second(&location))
        .header("Tus-Resumable", TUS)
        .header("Upload-Offset", "200000")
        .header("Content-Type", OCTETS)
        .body(data[200_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["x-cairn-version"], "1");
    assert!(get_body(&t, "travelled").await == data);
    second_api.shutdown().await;
}
