//! Issue 13's limits against `cairn dev` in-process, each answered as its client
//! expects: the largest object (native 413, S3 `EntityTooLarge`, tus 413), the
//! longest name (native 400, S3 `KeyTooLongError`), requests and uploads in flight
//! (native 503, S3 `SlowDown`, both with `Retry-After`) and the request rate of a
//! key (native 429, S3 `SlowDown`). Every refused write leaves no version and no
//! shard behind, and every refusal is counted in `cairn_api_refused_total`.
//! Spoken with plain reqwest (S3 unsigned, in an open cluster) and a raw socket
//! where a client must not send its body; boto3 (when present) hears them too.
//! Data servers on 127.29.11.x.

mod common;
mod s3;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::dev::DevConfig;
use common::{pattern, TestCluster};
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest object in these clusters: above S3's 5 MiB smallest part, so that
/// a completion of two parts can pass it.
const LIMIT: u64 = 6 << 20;

/// Six data servers on this file's loopback block, `adjust`ed.
async fn cluster(adjust: impl FnOnce(&mut DevConfig)) -> TestCluster {
    common::start_custom(6, |c| {
        c.data_addrs = (1..=6).map(|i| format!("127.29.11.{i}:0").parse().unwrap()).collect();
        adjust(c);
    })
    .await
}

/// `cairn_api_refused_total{limit="<limit>"}` as `/metrics` shows it.
async fn refused(t: &TestCluster, limit: &str) -> u64 {
    let text = t.http.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let server = t.base.trim_start_matches("http://");
    text.lines()
        .filter(|l| l.starts_with("cairn_api_refused_total{"))
        .filter(|l| l.contains(&format!("limit=\"{limit}\"")) && l.contains(&format!("server=\"{server}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or_else(|| panic!("no cairn_api_refused_total for {limit} in\n{text}"), |v| v as u64)
}

/// Nothing of a refused write is on any data server: no shard (files or volume
/// records), and its temp files gone (within 10 s: an aborted stream's temp file
/// goes when the data server sees the break).
async fn assert_nothing_stored(t: &TestCluster) {
    assert_eq!(t.shard_count().await, 0, "shards stored");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.temp_files().is_empty() {
        assert!(Instant::now() < deadline, "temp files left: {:?}", t.temp_files());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A body that arrives in 64 KiB chunks without a `Content-Length`.
fn chunked(data: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// Sends a request head (no body at all, whatever it declares) on a raw
/// connection and returns the answer's status and text, read within 10 s: the
/// server must answer without waiting for the body.
async fn head_only(t: &TestCluster, head: &str) -> (u16, String) {
    let addr = t.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((headers, body)) = text.split_once("\r\n\r\n") {
                let length = headers
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok());
                if n == 0 || length.is_some_and(|len| body.len() >= len) {
                    break;
                }
            } else if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("answered without the body");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The text between `<tag>` and `</tag>`.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", r.headers()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_puts_past_the_largest_object_are_refused_413_and_store_nothing() {
    let t = cluster(|c| c.limits.max_object_size = LIMIT).await;

    // A declared length past the limit is answered before a byte of the body.
    let (status, text) =
        head_only(&t, &format!("PUT /objects/declared HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", LIMIT + 1))
            .await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("--max-object-size"), "{text}");

    // A body without a length is cut where it passes the limit (its last chunk
    // here, so the client has sent it all by the answer), after its first stripes
    // went out to the data servers.
    let r = t.http.put(t.url("/objects/streamed")).body(chunked(pattern(LIMIT as usize + 1, 2))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text().await.unwrap_or_default());
    for name in ["declared", "streamed"] {
        assert_eq!(t.get(name).await.status(), StatusCode::NOT_FOUND, "{name} has a version");
    }
    assert_nothing_stored(&t).await;
    assert_eq!(refused(&t, "object_size").await, 2);

    // At the limit, with or without a length, is fine.
    let data = pattern(LIMIT as usize, 3);
    assert_eq!(t.put("exact", data.clone()).await.status(), StatusCode::OK);
    let r = t.http.put(t.url("/objects/exact-streamed")).body(chunked(data.clone())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(t.get("exact-streamed").await.bytes().await.unwrap().len(), data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_writes_past_the_largest_object_are_entity_too_large_and_store_nothing() {
    let t = cluster(|c| c.limits.max_object_size = LIMIT).await;
    let s3 = |path: &str| t.url(&format!("/default/{path}"));

    // PutObject, declared past the limit: refused before the body.
    let (status, text) =
        head_only(&t, &format!("PUT /default/declared HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", LIMIT + 1))
            .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(xml_field(&text, "Code").as_deref(), Some("EntityTooLarge"), "{text}");

    // A multipart upload: a part past the limit, then parts that sum past it.
    let r = t.http.post(s3("parts?uploads")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = xml_field(&r.text().await.unwrap(), "UploadId").expect("an upload id");
    let part = |n: u32| s3(&format!("parts?partNumber={n}&uploadId={id}"));
    let (status, text) = head_only(
        &t,
        &format!(
            "PUT /default/parts?partNumber=1&uploadId={id} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            LIMIT + 1
        ),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(xml_field(&text, "Code").as_deref(), Some("EntityTooLarge"), "{text}");
    let mut etags = Vec::new();
    for (n, len) in [(1, 5 << 20), (2, 2 << 20)] {
        let r = t.http.put(part(n)).body(pattern(len, 6 + u64::from(n))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "part {n}");
        etags.push(r.headers()["etag"].to_str().unwrap().to_string());
    }
    let parts: String = etags
        .iter()
        .enumerate()
        .map(|(i, e)| format!("<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>", i + 1))
        .collect();
    let complete = format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>");
    let r = t.http.post(s3(&format!("parts?uploadId={id}"))).body(complete).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(xml_field(&text, "Code").as_deref(), Some("EntityTooLarge"), "{text}");
    for key in ["declared", "parts"] {
        assert_eq!(t.http.head(s3(key)).send().await.unwrap().status(), StatusCode::NOT_FOUND, "{key}");
    }
    assert_eq!(refused(&t, "object_size").await, 3);
    // Aborted, the upload's parts go too: nothing of any of it stays.
    let r = t.http.delete(s3(&format!("parts?uploadId={id}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Within the limit, S3 writes work.
    let r = t.http.put(s3("fits")).body(pattern(LIMIT as usize, 9)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tus_upload_past_the_largest_object_is_413() {
    let t = cluster(|c| c.limits.max_object_size = LIMIT).await;
    let r = t.http.request(reqwest::Method::OPTIONS, t.url("/uploads")).send().await.unwrap();
    assert_eq!(r.headers()["tus-max-size"].to_str().unwrap(), LIMIT.to_string());
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", (LIMIT + 1).to_string())
        .header("Upload-Metadata", "filename YmlnLmlzbw==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refused(&t, "object_size").await, 1);

    // A deferred length runs into the largest object as its bytes arrive.
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", "filename ZGVmZXJyZWQ=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = t
        .http
        .patch(t.url(&location))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(chunked(pattern(LIMIT as usize + 1, 10)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refused(&t, "object_size").await, 2);
    assert_eq!(t.get("deferred").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_past_the_longest_are_refused_in_each_clients_words() {
    let t = cluster(|c| c.limits.max_name_len = 100).await;
    let long = "n".repeat(101);

    let r = t.put(&long, "x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(text.contains("101 bytes") && text.contains("limit is 100"), "{text}");

    let r = t.http.put(t.url(&format!("/default/{long}"))).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(xml_field(&r.text().await.unwrap(), "Code").as_deref(), Some("KeyTooLongError"));

    use base64::Engine;
    let r = t
        .http
        .post(t.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1")
        .header("Upload-Metadata", format!("filename {}", base64::engine::general_purpose::STANDARD.encode(&long)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    assert_eq!(t.get(&long).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(refused(&t, "name_length").await, 3);
    // At the limit, a name is fine.
    assert_eq!(t.put(&"n".repeat(100), "x").await.status(), StatusCode::OK);
}

/// A PUT held open: its body sends one chunk and then waits until the sender is
/// dropped, so it holds its request (and upload) slot meanwhile.
fn held_put(t: &TestCluster, name: &str) -> (tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let first = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"first")) });
    let rest = futures_util::stream::once(async move {
        let _ = released.await;
        Ok::<_, std::io::Error>(Bytes::from_static(b" and last"))
    });
    let request = t.http.put(t.url(&format!("/objects/{name}"))).body(reqwest::Body::wrap_stream(first.chain(rest)));
    let task = tokio::spawn(async move {
        let _ = request.send().await;
    });
    (task, release)
}

/// Sends `request` until it is answered `refusal`, which must come within
/// `tries`; every answer before it is 404 (the name does not exist).
async fn first_refusal<F, Fut>(tries: usize, request: F, refusal: StatusCode) -> reqwest::Response
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    for _ in 0..tries {
        let r = request().await;
        if r.status() == refusal {
            return r;
        }
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    panic!("never refused with {refusal} within {tries} requests");
}

/// Waits (at most 10 s) until `probe` is shed with 503.
async fn wait_until_shed(t: &TestCluster, probe: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.http.get(t.url(probe)).send().await.unwrap().status() != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "the held request never filled the limit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_get_503_natively_and_slow_down_on_s3() {
    let t = cluster(|c| c.limits.requests = 1).await;
    let (task, release) = held_put(&t, "holder");
    // The held PUT first, so that no probe takes its place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_until_shed(&t, "/healthz").await;

    let r = t.get("anything").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&r) >= 1);
    assert!(r.text().await.unwrap().contains("too many requests in flight"));

    let r = t.http.get(t.url("/default/anything")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&r) >= 1);
    assert_eq!(xml_field(&r.text().await.unwrap(), "Code").as_deref(), Some("SlowDown"));

    drop(release);
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("the held PUT ends").unwrap();
    assert_eq!(t.get("holder").await.status(), StatusCode::OK, "the held PUT was not refused");
    assert!(refused(&t, "requests").await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_in_flight_limit_get_503_natively_and_slow_down_on_s3() {
    let t = cluster(|c| c.limits.uploads = 1).await;
    let (task, release) = held_put(&t, "holder");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A large upload (no length) is now one too many.
    let deadline = Instant::now() + Duration::from_secs(10);
    let native = loop {
        let r = t.http.put(t.url("/objects/second")).body(chunked(vec![7; 1000])).send().await.unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(native.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&native) >= 1);

    let r = t.http.put(t.url("/default/third")).body(chunked(vec![7; 1000])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&r) >= 1);
    assert_eq!(xml_field(&r.text().await.unwrap(), "Code").as_deref(), Some("SlowDown"));

    drop(release);
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("the held PUT ends").unwrap();
    assert_eq!(t.http.head(t.url("/default/third")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(t.get("second").await.status(), StatusCode::NOT_FOUND);
    assert!(refused(&t, "uploads").await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_request_rate_answered_429_natively_and_slow_down_on_s3() {
    use cairn::api::limits::Rate;
    let t = cluster(|c| c.limits.rate = Some(Rate { per_second: 1, burst: 3 })).await;

    // Open cluster: every unsigned caller shares one allowance, native and S3.
    // The burst of three goes (a fourth when a slow machine lets a second pass),
    // then the native API answers 429 and S3 SlowDown.
    let r = first_refusal(5, || t.get("nothing"), StatusCode::TOO_MANY_REQUESTS).await;
    assert!(retry_after(&r) >= 1);
    // The same allowance: S3 is refused at once (or after one token came back).
    let s3 = || async { t.http.get(t.url("/default/nothing")).send().await.unwrap() };
    let r = first_refusal(2, s3, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(retry_after(&r) >= 1);
    assert_eq!(xml_field(&r.text().await.unwrap(), "Code").as_deref(), Some("SlowDown"));
    // Liveness and metrics are never limited.
    assert_eq!(t.http.get(t.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);

    // Keyed: each key its own bucket. The key is made once the open allowance is back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let make_key = |by: Option<String>| {
        let request = t.http.post(t.url("/admin/keys")).json(&serde_json::json!({}));
        let request = match by {
            Some(bearer) => request.header("authorization", bearer),
            None => request,
        };
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let v: serde_json::Value = r.json().await.unwrap();
            format!("Bearer {}:{}", v["access_key"].as_str().unwrap(), v["secret_key"].as_str().unwrap())
        }
    };
    let a = make_key(None).await;
    let b = make_key(Some(a.clone())).await;
    let get_as = |bearer: &str| t.http.get(t.url("/objects/nothing")).header("authorization", bearer).send();
    // a has spent one of its three on making b: refused by the third (or, on a
    // slow machine, a little later).
    let r = first_refusal(4, || async { get_as(&a).await.unwrap() }, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(retry_after(&r) >= 1);
    assert_eq!(get_as(&b).await.unwrap().status(), StatusCode::NOT_FOUND, "b has its own allowance");
    // A forged key is refused as before, and takes nobody's allowance.
    let r = get_as("Bearer CKFORGED:nope").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // After a second, a has one request again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_as(&a).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert!(refused(&t, "rate").await >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_sdk_hears_each_refusal_in_its_own_words() {
    let test = "an_s3_sdk_hears_each_refusal_in_its_own_words";
    if !(s3::boto3_available() || s3::missing(test, "python3 cannot import boto3")) {
        return;
    }
    use cairn::api::limits::Rate;
    let t = cluster(|c| {
        c.limits.max_object_size = LIMIT;
        c.limits.max_name_len = 100;
        c.limits.rate = Some(Rate { per_second: 2, burst: 4 });
    })
    .await;
    let a = s3::create_key(&t.http, &t.base, serde_json::json!({}), None).await;
    let b = s3::create_key(&t.http, &t.base, serde_json::json!({}), Some(&a)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = s3::Client::new("python3", &[&s3::script("limits_checks.py"), &t.base], dir.path())
        .env("KEY_A", a.pair())
        .env("KEY_B", b.pair())
        .run(Duration::from_secs(90))
        .await;
    s3::assert_checks(
        &out,
        &["a_long_key_is_key_too_long", "a_large_object_is_entity_too_large", "a_key_over_its_rate_hears_slow_down"],
    );
    assert!(refused(&t, "rate").await >= 1);
    assert_eq!(refused(&t, "object_size").await, 1);
    assert_eq!(refused(&t, "name_length").await, 1);
    assert_nothing_stored(&t).await;
}
