//! Access keys at the door, with a real S3 client (boto3, `tests/s3/auth_checks.py`)
//! and the native API's bearer token: once a key exists, an unsigned request, a
//! wrong secret, an unknown key, an expired or forged presigned URL, a key used
//! outside its bucket and a read-only key's write are refused, and each refused
//! write leaves no version behind (checked with an unrestricted key); allowed
//! requests still work. A deleted key stops working. With no key at all the
//! cluster is open. A missing boto3 skips the S3 half loudly, or fails under
//! `CAIRN_REQUIRE_SERVICES=1`.

mod common;
mod s3;

use std::time::Duration;

use cairn::api::keys::KEY_REFRESH;
use common::TestCluster;
use s3::{assert_checks, create_key, script, Client, Key};
use serde_json::json;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// Past this, every API server's snapshot of the keys has been reloaded.
fn after_refresh() -> Duration {
    KEY_REFRESH + Duration::from_millis(500)
}

/// The three keys of the keyed scenarios: the first made while the cluster was
/// open, the others with its authority.
struct Keys {
    admin: Key,
    bucket: Key,
    read: Key,
}

async fn keyed_cluster() -> (TestCluster, Keys) {
    let t = common::start_custom(6, |_| {}).await;
    let admin = create_key(&t.http, &t.base, json!({"buckets": [], "read_only": false}), None).await;
    let bucket = create_key(&t.http, &t.base, json!({"buckets": ["granted"]}), Some(&admin)).await;
    let read = create_key(&t.http, &t.base, json!({"read_only": true}), Some(&admin)).await;
    // In force once the API server's snapshot has the last key and no longer
    // takes unsigned requests.
    common::eventually(after_refresh() * 10, "the keys in force", || async {
        let unsigned = native(&t, reqwest::Method::GET, "/objects/absent", None, "").await.0;
        let by_read = native(&t, reqwest::Method::GET, "/objects/absent", Some(read.bearer()), "").await.0;
        unsigned == 403 && by_read == 404
    })
    .await;
    (t, Keys { admin, bucket, read })
}

/// Runs `auth_checks.py SCENARIO` against `t` with `keys`.
async fn auth_checks(t: &TestCluster, scenario: &str, keys: Option<&Keys>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut client = Client::new("python3", &[&script("auth_checks.py"), &t.base, scenario], dir.path());
    if let Some(keys) = keys {
        client = client
            .env("ADMIN_KEY", keys.admin.pair())
            .env("BUCKET_KEY", keys.bucket.pair())
            .env("READ_KEY", keys.read.pair());
    }
    client.run(CLIENT_TIMEOUT).await
}

fn boto3_ready(test: &str) -> bool {
    s3::boto3_available() || s3::missing(test, "python3 cannot import boto3 (pip install --target target/s3py boto3)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_requests_without_the_right_key_are_refused_and_store_nothing() {
    if !boto3_ready("s3_requests_without_the_right_key_are_refused_and_store_nothing") {
        return;
    }
    let (t, keys) = keyed_cluster().await;
    let out = auth_checks(&t, "keyed", Some(&keys)).await;
    assert_checks(
        &out,
        &[
            "setup",
            "unsigned_requests_are_refused",
            "a_wrong_secret_or_unknown_key_is_refused",
            "expired_and_forged_presigned_urls_are_refused",
            "a_bucket_key_stays_in_its_bucket",
            "a_read_only_key_only_reads",
        ],
    );

    let deleted = t.http.delete(t.url(&format!("/admin/keys/{}", keys.read.id)));
    let deleted = deleted.header("authorization", keys.admin.bearer()).send().await.unwrap();
    assert_eq!(deleted.status(), 200, "DELETE /admin/keys/{}", keys.read.id);
    common::eventually(after_refresh() * 10, "the deleted key refused", || async {
        native(&t, reqwest::Method::GET, "/objects/absent", Some(keys.read.bearer()), "").await.0 == 403
    })
    .await;
    let out = auth_checks(&t, "deleted-key", Some(&keys)).await;
    assert_checks(&out, &["a_deleted_key_is_refused"]);
}

/// The native API's answer to `method path` with `authorization` (None: none).
async fn native(
    t: &TestCluster,
    method: reqwest::Method,
    path: &str,
    authorization: Option<String>,
    body: &str,
) -> (u16, String) {
    let mut req = t.http.request(method.clone(), t.url(path)).body(body.to_string());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_requests_need_a_bearer_token_once_keys_exist() {
    use reqwest::Method;
    let (t, keys) = keyed_cluster().await;
    let admin = Some(keys.admin.bearer());
    let get = |auth: Option<String>| native(&t, Method::GET, "/objects/native/x", auth, "");
    let put = |auth: Option<String>, body: &'static str| native(&t, Method::PUT, "/objects/native/x", auth, body);

    let (status, why) = put(None, "unsigned").await;
    assert_eq!(status, 403, "unsigned PUT: {why}");
    assert_eq!(get(admin.clone()).await.0, 404, "the unsigned PUT stored nothing");

    assert_eq!(put(admin.clone(), "signed").await.0, 200);
    assert_eq!(get(admin.clone()).await, (200, "signed".to_string()));
    assert_eq!(get(None).await.0, 403, "unsigned GET");

    let wrong = format!("Bearer {}:{}x", keys.admin.id, &keys.admin.secret[1..]);
    assert_eq!(put(Some(wrong.clone()), "forged").await.0, 403, "wrong secret");
    assert_eq!(get(Some(wrong)).await.0, 403, "GET with a wrong secret");
    assert_eq!(put(Some(format!("Bearer CKNOSUCHKEY:{}", keys.admin.secret)), "stranger").await.0, 403);
    assert_eq!(put(Some(format!("Basic {}", keys.admin.pair())), "basic").await.0, 403, "not a bearer token");
    assert_eq!(put(Some(format!("Bearer {}", keys.admin.id)), "no secret").await.0, 403);

    let read_only = Some(keys.read.bearer());
    assert_eq!(put(read_only.clone(), "read-only").await.0, 403, "a read-only key's PUT");
    assert_eq!(get(read_only.clone()).await, (200, "signed".to_string()), "a read-only key's GET");
    let (status, _) = native(&t, Method::DELETE, "/objects/native/x", read_only, "").await;
    assert_eq!(status, 403, "a read-only key's DELETE");
    let (status, _) = native(&t, Method::DELETE, "/objects/native/x", None, "").await;
    assert_eq!(status, 403, "an unsigned DELETE");

    // The native API is the bucket `default`: a key limited to another bucket has no
    // business there, one limited to `default` has.
    assert_eq!(put(Some(keys.bucket.bearer()), "elsewhere").await.0, 403, "a key of another bucket");
    assert_eq!(get(Some(keys.bucket.bearer())).await.0, 403, "a key of another bucket reads");
    let default_key = create_key(&t.http, &t.base, json!({"buckets": ["default"]}), Some(&keys.admin)).await;
    assert_eq!(put(Some(default_key.bearer()), "by the default key").await.0, 200);
    assert_eq!(get(admin.clone()).await, (200, "by the default key".to_string()), "nothing refused was stored");

    // The admin routes: an unrestricted read-write key only.
    for (who, auth) in
        [("unsigned", None), ("read-only", Some(keys.read.bearer())), ("bucket", Some(default_key.bearer()))]
    {
        assert_eq!(native(&t, Method::GET, "/admin/status", auth.clone(), "").await.0, 403, "{who} /admin/status");
        let (status, _) = native(&t, Method::POST, "/admin/keys", auth, "{}").await;
        assert_eq!(status, 403, "{who} creates a key");
    }
    assert_eq!(native(&t, Method::GET, "/admin/status", admin.clone(), "").await.0, 200);
    let (status, listed) = native(&t, Method::GET, "/admin/keys", admin, "").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listed).unwrap()["keys"].as_array().unwrap().len(), 4);
    assert!(!listed.contains(&keys.admin.secret), "the key listing shows no secret");

    // Monitors need no key.
    assert_eq!(native(&t, Method::GET, "/healthz", None, "").await.0, 200);
    assert_eq!(native(&t, Method::GET, "/metrics", None, "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_key_closes_the_cluster_at_once() {
    use reqwest::Method;
    let t = common::start_custom(6, |_| {}).await;
    assert_eq!(t.put("before", "open").await.status(), 200, "open before any key");
    let admin = create_key(&t.http, &t.base, json!({}), None).await;
    // At once, on the server that made the key: no snapshot of "no keys" may
    // still let strangers in, least of all to make themselves a key.
    let (status, _) = native(&t, Method::POST, "/admin/keys", None, "{}").await;
    assert_eq!(status, 403, "an unsigned POST /admin/keys right after the first key");
    let (status, _) = native(&t, Method::PUT, "/objects/window", None, "x").await;
    assert_eq!(status, 403, "an unsigned native PUT right after the first key");
    let (status, _) = native(&t, Method::PUT, "/default/window-s3", None, "x").await;
    assert_eq!(status, 403, "an unsigned S3 PUT right after the first key");
    let (status, listed) = native(&t, Method::GET, "/admin/keys", Some(admin.bearer()), "").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listed).unwrap()["keys"].as_array().unwrap().len(), 1);
    for name in ["window", "window-s3"] {
        let (status, _) = native(&t, Method::GET, &format!("/objects/{name}"), Some(admin.bearer()), "").await;
        assert_eq!(status, 404, "{name} was not stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_cluster_is_open() {
    let t = common::start_custom(6, |_| {}).await;
    assert_eq!(t.put("open/x", "anyone").await.status(), 200);
    assert_eq!(t.get("open/x").await.text().await.unwrap(), "anyone");
    let listed = t.http.get(t.url("/admin/keys")).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.json::<serde_json::Value>().await.unwrap()["keys"], json!([]));

    if !boto3_ready("without_keys_the_cluster_is_open (S3)") {
        return;
    }
    let out = auth_checks(&t, "open", None).await;
    assert_checks(&out, &["unsigned_requests_work_without_keys", "a_signed_request_with_an_unknown_key_is_refused"]);
    assert_eq!(t.get("from-s3").await.text().await.unwrap(), "s3 in the native bucket");
}
