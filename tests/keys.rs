//! Access keys as an operator and a user meet them: `cairn admin key
//! create|list|delete` (the built binary) against an in-process cluster, and the
//! native API, tus and `/admin` refusing what carries no key, a wrong one, a
//! read-only or a bucket-limited one, while `/healthz` and `/metrics` stay open.
//! (The S3 side of keys, with real S3 clients, is `tests/s3_auth.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::start;

/// Longest any one `cairn` run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the built `cairn` with `args` against `endpoint`, bounded in time, with no
/// credentials from the environment.
async fn cairn(endpoint: &str, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args)
        .env("CAIRN_ENDPOINT", endpoint)
        .env_remove("CAIRN_ACCESS_KEY")
        .env_remove("CAIRN_SECRET_KEY")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("cairn {args:?} ran past {RUN_LIMIT:?}"))
        .expect("cairn runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The id and secret `cairn admin key create` printed.
fn created_key(run: &Run) -> (String, String) {
    assert_eq!(run.code, 0, "key create failed: {}{}", run.stdout, run.stderr);
    let field = |label: &str| {
        run.stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label:?} in {}", run.stdout))
    };
    (field("access key:"), field("secret key:"))
}

fn bearer(id: &str, secret: &str) -> String {
    format!("Bearer {id}:{secret}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_close_the_native_api_and_admin_manages_them() {
    let t = start("4+2", 6).await;
    let endpoint = t.url("");
    let http = reqwest::Client::new();

    // Open: no key, anyone writes.
    let open = http.put(t.url("/objects/open.txt")).body("anyone").send().await.unwrap();
    assert_eq!(open.status(), 200, "an open cluster takes unsigned writes");

    // The first key is created while the cluster is open.
    let (admin_id, admin_secret) = created_key(&cairn(&endpoint, &["admin", "key", "create"]).await);
    assert!(admin_id.starts_with("CK") && admin_id.len() == 20, "{admin_id}");
    assert_eq!(admin_secret.len(), 40);
    let admin = ["--access-key", admin_id.as_str(), "--secret-key", admin_secret.as_str()];

    // From now on an unsigned request is refused and stores nothing.
    let unsigned = http.put(t.url("/objects/x.txt")).body("intruder").send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    assert!(unsigned.text().await.unwrap().contains("requires signed requests"));
    let wrong = http
        .put(t.url("/objects/x.txt"))
        .header("authorization", bearer(&admin_id, "not-the-secret-at-all-not-the-secret-at"))
        .body("intruder")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let unknown = http
        .put(t.url("/objects/x.txt"))
        .header("authorization", bearer("CKNOSUCHKEY234567ABC", &admin_secret))
        .body("intruder")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 403);
    let signed_get = http
        .get(t.url("/objects/x.txt"))
        .header("authorization", bearer(&admin_id, &admin_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_get.status(), 404, "no refused write stored anything");
    for route in ["/objects/open.txt", "/versions/open.txt", "/objects/?prefix=", "/admin/status"] {
        let r = http.get(t.url(route)).send().await.unwrap();
        assert_eq!(r.status(), 403, "unsigned GET {route}");
    }
    let tus = http.post(t.url("/uploads")).header("tus-resumable", "1.0.0").header("upload-length", "5").send();
    assert_eq!(tus.await.unwrap().status(), 403, "tus creation needs a key too");
    for route in ["/healthz", "/metrics"] {
        assert_eq!(http.get(t.url(route)).send().await.unwrap().status(), 200, "{route} stays open for monitors");
    }

    // The client carries the key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, b"hello, keys").unwrap();
    let file = file.to_str().unwrap();
    let put = cairn(&endpoint, &[&["put", file, "hello.txt"][..], &admin[..]].concat()).await;
    assert_eq!(put.code, 0, "{}", put.stderr);
    let refused = cairn(&endpoint, &["stat", "hello.txt"]).await;
    assert_eq!(refused.code, 6, "a client without a key is refused: {}", refused.stderr);
    let got = cairn(&endpoint, &[&["get", "hello.txt", "-"][..], &admin[..]].concat()).await;
    assert_eq!((got.code, got.stdout.as_str()), (0, "hello, keys"), "{}", got.stderr);

    // A read-only key limited to `default` reads and never writes, and may not administer.
    let reader =
        cairn(&endpoint, &[&["admin", "key", "create", "--bucket", "default", "--read-only"][..], &admin[..]].concat())
            .await;
    let (reader_id, reader_secret) = created_key(&reader);
    let read = http
        .get(t.url("/objects/hello.txt"))
        .header("authorization", bearer(&reader_id, &reader_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = http
        .put(t.url("/objects/hello.txt"))
        .header("authorization", bearer(&reader_id, &reader_secret))
        .body("overwrite")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);
    assert!(write.text().await.unwrap().contains("read-only"));
    let still = http
        .get(t.url("/objects/hello.txt"))
        .header("authorization", bearer(&admin_id, &admin_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(still.text().await.unwrap(), "hello, keys", "the refused overwrite stored nothing");
    let reader_admin = ["--access-key", reader_id.as_str(), "--secret-key", reader_secret.as_str()];
    let escalate = cairn(&endpoint, &[&["admin", "key", "create"][..], &reader_admin[..]].concat()).await;
    assert_ne!(escalate.code, 0, "a read-only key cannot mint keys: {}", escalate.stdout);

    // A key limited to another bucket cannot touch the native API's.
    let other = cairn(&endpoint, &[&["admin", "key", "create", "--bucket", "photos"][..], &admin[..]].concat()).await;
    let (other_id, other_secret) = created_key(&other);
    let elsewhere = http
        .get(t.url("/objects/hello.txt"))
        .header("authorization", bearer(&other_id, &other_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    assert!(elsewhere.text().await.unwrap().contains("may not use bucket default"));

    // The list shows ids and limits, never a secret.
    let list = cairn(&endpoint, &[&["admin", "key", "list"][..], &admin[..]].concat()).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    for id in [&admin_id, &reader_id, &other_id] {
        assert!(list.stdout.contains(id.as_str()), "{id} listed: {}", list.stdout);
    }
    for secret in [&admin_secret, &reader_secret, &other_secret] {
        assert!(!list.stdout.contains(secret.as_str()), "a secret leaked into the listing");
    }
    assert!(list.stdout.contains("read-only") && list.stdout.contains("photos"), "{}", list.stdout);

    // A deleted key stops working within the key snapshot's refresh.
    let deleted = cairn(&endpoint, &[&["admin", "key", "delete", &reader_id][..], &admin[..]].concat()).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let since = Instant::now();
    loop {
        let r = http
            .get(t.url("/objects/hello.txt"))
            .header("authorization", bearer(&reader_id, &reader_secret))
            .send()
            .await
            .unwrap();
        if r.status() == 403 {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(5), "a deleted key still works after 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = cairn(&endpoint, &[&["admin", "key", "delete", &reader_id][..], &admin[..]].concat()).await;
    assert_ne!(again.code, 0, "deleting a key twice is an error");
    t.cluster.shutdown().await;
}
