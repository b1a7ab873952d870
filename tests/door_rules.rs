//! The rules every door shares, beyond the access matrix (`tests/access_matrix.rs`):
//! buckets are real (nothing is written into one that does not exist, and deleting
//! one ends the uploads into it), a tus upload is held to its key until it becomes
//! a version, and a signature means what it says (its scope names this server's
//! service and region; a presigned URL lives at most a week).

mod common;

use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode, Url};

use common::TestCluster;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn cluster() -> TestCluster {
    common::start_custom(2, |c| {
        c.policy = "1+1".parse().unwrap();
        c.small_policy = "1+1".parse().unwrap();
    })
    .await
}

fn bearer(key: &(String, String)) -> String {
    format!("Bearer {}:{}", key.0, key.1)
}

async fn create_key(t: &TestCluster, admin: Option<&(String, String)>, body: &str) -> (String, String) {
    let mut request = t.http.post(t.url("/admin/keys")).body(body.to_string());
    if let Some(admin) = admin {
        request = request.header("authorization", bearer(admin));
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let v: serde_json::Value = answer.json().await.unwrap();
    (v["access_key"].as_str().unwrap().to_string(), v["secret_key"].as_str().unwrap().to_string())
}

/// `POST /uploads` into `bucket`, as `key` (unsigned without one).
async fn tus_create(t: &TestCluster, key: Option<&(String, String)>, bucket: &str, length: u64) -> reqwest::Response {
    let mut request = t
        .http
        .post(t.url("/uploads"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .header("upload-metadata", format!("name {},bucket {}", b64("up.bin"), b64(bucket)));
    if let Some(key) = key {
        request = request.header("authorization", bearer(key));
    }
    request.send().await.unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn patch(
    t: &TestCluster,
    key: Option<&(String, String)>,
    at: &str,
    offset: u64,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = t
        .http
        .patch(t.url(at))
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(body);
    if let Some(key) = key {
        request = request.header("authorization", bearer(key));
    }
    request.send().await.unwrap()
}

async fn s3(t: &TestCluster, method: Method, path: &str) -> reqwest::Response {
    t.http.request(method, t.url(path)).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_door_writes_into_a_bucket_that_does_not_exist() {
    let t = cluster().await;
    let shards = t.shard_count().await;

    let tus = tus_create(&t, None, "never-made", 5).await;
    assert_eq!(tus.status(), StatusCode::NOT_FOUND, "tus creation into a missing bucket");
    assert!(tus.text().await.unwrap().contains("never-made"), "the answer names the bucket");

    let put = t.http.put(t.url("/never-made/a.txt")).body("bytes").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::NOT_FOUND);
    assert!(put.text().await.unwrap().contains("NoSuchBucket"));
    let mp = s3(&t, Method::POST, "/never-made/a.txt?uploads").await;
    assert_eq!(mp.status(), StatusCode::NOT_FOUND);

    assert_eq!(t.shard_count().await, shards, "no refused write stored a shard");
    let later = s3(&t, Method::PUT, "/never-made").await;
    assert_eq!(later.status(), StatusCode::OK);
    let listed = s3(&t, Method::GET, "/never-made?list-type=2").await.text().await.unwrap();
    assert!(!listed.contains("<Key>"), "a bucket made later holds nothing written before it: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_bucket_ends_its_open_uploads_on_every_door() {
    let t = cluster().await;
    assert_eq!(s3(&t, Method::PUT, "/scratch").await.status(), StatusCode::OK);
    let created = tus_create(&t, None, "scratch", 10).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let upload = location(&created);
    assert_eq!(patch(&t, None, &upload, 0, "hello").await.status(), StatusCode::NO_CONTENT);
    let mp = s3(&t, Method::POST, "/scratch/big.bin?uploads").await;
    assert_eq!(mp.status(), StatusCode::OK);

    // Only uploads are open: the bucket goes, and they go with it.
    let deleted = s3(&t, Method::DELETE, "/scratch").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT, "{}", deleted.text().await.unwrap());
    let rest = patch(&t, None, &upload, 5, "world").await;
    assert_eq!(rest.status(), StatusCode::NOT_FOUND, "the tus upload ended with its bucket");
    let head = t.http.head(t.url(&upload)).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);

    // Made again, the bucket is empty: nothing of the upload became a version.
    assert_eq!(s3(&t, Method::PUT, "/scratch").await.status(), StatusCode::OK);
    let listed = s3(&t, Method::GET, "/scratch?list-type=2").await.text().await.unwrap();
    assert!(!listed.contains("<Key>"), "{listed}");
    let uploads = s3(&t, Method::GET, "/scratch?uploads").await.text().await.unwrap();
    assert!(!uploads.contains("<UploadId>"), "{uploads}");

    // A version still keeps a bucket.
    assert_eq!(t.http.put(t.url("/scratch/kept.txt")).body("x").send().await.unwrap().status(), StatusCode::OK);
    let refused = s3(&t, Method::DELETE, "/scratch").await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(refused.text().await.unwrap().contains("BucketNotEmpty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_mid_upload_can_neither_continue_nor_finish_it() {
    let t = cluster().await;
    let admin = create_key(&t, None, "{}").await;
    let key = create_key(&t, Some(&admin), "{}").await;

    // Between two PATCHes.
    let created = tus_create(&t, Some(&key), "default", 10).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let upload = location(&created);
    assert_eq!(patch(&t, Some(&key), &upload, 0, "hello").await.status(), StatusCode::NO_CONTENT);

    // During the PATCH that would finish it: the body streams while the key goes.
    let second = tus_create(&t, Some(&key), "default", 10).await;
    let streaming = location(&second);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let in_flight = {
        let (http, url, auth) = (t.http.clone(), t.url(&streaming), bearer(&key));
        tokio::spawn(async move {
            http.patch(url)
                .header("authorization", auth)
                .header("tus-resumable", "1.0.0")
                .header("upload-offset", "0")
                .header("content-type", "application/offset+octet-stream")
                .body(body)
                .send()
                .await
        })
    };
    tx.send(Ok(b"hello".to_vec())).await.unwrap();

    let gone = t.http.delete(t.url(&format!("/admin/keys/{}", key.0))).header("authorization", bearer(&admin)).send();
    assert!(gone.await.unwrap().status().is_success());

    tx.send(Ok(b"world".to_vec())).await.unwrap();
    drop(tx);
    let finished = tokio::time::timeout(Duration::from_secs(30), in_flight).await.unwrap().unwrap().unwrap();
    assert_eq!(finished.status(), StatusCode::FORBIDDEN, "the finish is checked again, after the body");
    assert!(!finished.headers().contains_key("x-cairn-version"));

    let rest = patch(&t, Some(&key), &upload, 5, "world").await;
    assert_eq!(rest.status(), StatusCode::FORBIDDEN, "a deleted key continues nothing");
    let read = t.http.get(t.url("/objects/up.bin")).header("authorization", bearer(&admin)).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::NOT_FOUND, "neither upload became a version");
}

/// A presigned GET of `/default/x`, signed for `region` and valid `expires` s.
fn presigned(t: &TestCluster, key: &(String, String), region: &str, expires: u64) -> Url {
    rusty_s3::signing::sign(
        &jiff::Timestamp::now(),
        rusty_s3::Method::Get,
        Url::parse(&t.url("/default/x")).unwrap(),
        &key.0,
        &key.1,
        None,
        region,
        expires,
        std::iter::empty(),
        std::iter::empty(),
    )
}

fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_string(), if k == name { value.to_string() } else { v.into_owned() }))
        .collect();
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_names_this_service_and_region_and_lives_at_most_a_week() {
    let t = cluster().await;
    let key = create_key(&t, None, "{}").await;
    let put = t.http.put(t.url("/objects/x")).header("authorization", bearer(&key)).body("x").send();
    assert_eq!(put.await.unwrap().status(), StatusCode::OK);

    let week = presigned(&t, &key, "us-east-1", 604_800);
    assert_eq!(t.http.get(week.clone()).send().await.unwrap().status(), StatusCode::OK, "a week is allowed");

    let century = presigned(&t, &key, "us-east-1", 100 * 365 * 86_400);
    let (status, body) = error_of(t.http.get(century).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("AuthorizationQueryParametersError") && body.contains("604800"), "{body}");

    let negative = with_param(&week, "X-Amz-Expires", "-1");
    let (status, body) = error_of(t.http.get(negative).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("AuthorizationQueryParametersError") && body.contains("non-negative"), "{body}");

    let elsewhere = presigned(&t, &key, "eu-west-1", 60);
    let (status, body) = error_of(t.http.get(elsewhere).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("AuthorizationQueryParametersError") && body.contains("eu-west-1"), "{body}");

    let credential: String = week.query_pairs().find(|(k, _)| k == "X-Amz-Credential").unwrap().1.into_owned();
    let sts = with_param(&week, "X-Amz-Credential", &credential.replace("/s3/", "/sts/"));
    let (status, body) = error_of(t.http.get(sts).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("AuthorizationQueryParametersError") && body.contains("sts"), "{body}");

    // A legacy SigV2 presigned URL (boto3's default) names an instant: at most a
    // week ahead. Refused before its signature is looked at.
    let century_v2 = format!(
        "/default/x?AWSAccessKeyId={}&Signature=c2lnbmF0dXJl&Expires={}",
        key.0,
        jiff::Timestamp::now().as_second() + 100 * 365 * 86_400
    );
    let (status, body) = error_of(t.http.get(t.url(&century_v2)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("AuthorizationQueryParametersError") && body.contains("a week"), "{body}");

    // The same scopes in an Authorization header.
    for (scope, word) in [("eu-west-1/s3", "eu-west-1"), ("us-east-1/sts", "sts")] {
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/20261206/{scope}/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
            key.0,
            "0".repeat(64)
        );
        let answer = t
            .http
            .get(t.url("/default/x"))
            .header("authorization", authorization)
            .header("x-amz-date", "20261206T000000Z")
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(answer).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{scope}");
        assert!(body.contains("AuthorizationHeaderMalformed") && body.contains(word), "{body}");
    }
}
