//! The access matrix: every kind of principal × every door × every operation,
//! each answered as the access rule says (allowed: the operation's success
//! status; refused: 403), and after every refusal nothing in the metadata store
//! or on the data servers changed (every row of the tables that hold names,
//! versions, content, placement, buckets, uploads and keys, hashed, and the data
//! servers' shard counts, before and after).
//!
//! The expected answer of each cell comes from this file's own oracle
//! ([`expected`]), written from the rules as the README states them, not from
//! `cairn::api::policy`, so a door that disagrees with the rule fails here.
//!
//! One cluster serves both phases: first open (no key: every cell allowed,
//! unsigned), then closed by a first key, with the principals full, read-only,
//! limited to the bucket `default`, a deleted key, a wrong secret, and no key.
//! S3 requests are presigned with SigV4 (`rusty_s3::signing::sign`, as
//! `cairn-bench load --api s3` signs), so the test needs no outside client.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use cairn::content::Policy;
use reqwest::{Method, StatusCode, Url};
use sha2::Digest as _;

use common::TestCluster;

/// The two buckets bucket-scoped operations run on: the limited key's own and another.
const OWN: &str = "default";
const OTHER: &str = "photos";

/// What an operation needs, as the README's access rule says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Any valid key.
    Signed,
    /// A key that may use the bucket.
    Read,
    /// A key that may use the bucket and write.
    Write,
    /// An unrestricted read-write key.
    Cluster,
}

/// The kinds of principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    Full,
    ReadOnly,
    /// Limited to [`OWN`].
    Limited,
    Deleted,
    WrongSecret,
    Unsigned,
}

/// The oracle: is `kind` allowed an operation that needs `need` on `buckets`
/// (every bucket it touches; a copy touches two)?
fn expected(kind: Kind, need: &[(Need, &str)]) -> bool {
    need.iter().all(|&(need, bucket)| match kind {
        Kind::Open | Kind::Full => true,
        Kind::ReadOnly => matches!(need, Need::Signed | Need::Read),
        Kind::Limited => match need {
            Need::Signed => true,
            Need::Read | Need::Write => bucket == OWN,
            Need::Cluster => false,
        },
        Kind::Deleted | Kind::WrongSecret | Kind::Unsigned => false,
    })
}

#[derive(Clone, Debug)]
struct Principal {
    kind: Kind,
    key: Option<(String, String)>,
}

/// The doors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Door {
    Native,
    Tus,
    S3,
    Admin,
}

/// Every operation of every door, with the buckets it is tried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    NativeGet,
    NativeHead,
    NativeVersions,
    NativeLocate,
    NativeList,
    NativePut,
    NativeDelete,
    TusCreate,
    TusCreateForName,
    TusAppend,
    TusHead,
    TusFinish,
    TusDelete,
    S3ListBuckets,
    S3CreateBucket,
    S3DeleteBucket,
    S3HeadBucket,
    S3GetBucketVersioning,
    S3PutBucketVersioning,
    S3ListObjects,
    S3GetObject,
    S3HeadObject,
    S3PutObject,
    S3DeleteObject,
    S3DeleteObjects,
    S3CopyObject,
    S3CopyFromOther,
    S3CreateMultipart,
    S3UploadPart,
    S3UploadPartCopy,
    S3CompleteMultipart,
    S3AbortMultipart,
    S3ListParts,
    S3ListMultipartUploads,
    AdminStatus,
    AdminKeys,
    AdminExpireUploads,
}

const OPS: &[Op] = &[
    Op::NativeGet,
    Op::NativeHead,
    Op::NativeVersions,
    Op::NativeLocate,
    Op::NativeList,
    Op::NativePut,
    Op::NativeDelete,
    Op::TusCreate,
    Op::TusCreateForName,
    Op::TusAppend,
    Op::TusHead,
    Op::TusFinish,
    Op::TusDelete,
    Op::S3ListBuckets,
    Op::S3CreateBucket,
    Op::S3DeleteBucket,
    Op::S3HeadBucket,
    Op::S3GetBucketVersioning,
    Op::S3PutBucketVersioning,
    Op::S3ListObjects,
    Op::S3GetObject,
    Op::S3HeadObject,
    Op::S3PutObject,
    Op::S3DeleteObject,
    Op::S3DeleteObjects,
    Op::S3CopyObject,
    Op::S3CopyFromOther,
    Op::S3CreateMultipart,
    Op::S3UploadPart,
    Op::S3UploadPartCopy,
    Op::S3CompleteMultipart,
    Op::S3AbortMultipart,
    Op::S3ListParts,
    Op::S3ListMultipartUploads,
    Op::AdminStatus,
    Op::AdminKeys,
    Op::AdminExpireUploads,
];

impl Op {
    fn door(self) -> Door {
        let name = format!("{self:?}");
        if name.starts_with("Native") {
            Door::Native
        } else if name.starts_with("Tus") {
            Door::Tus
        } else if name.starts_with("S3") {
            Door::S3
        } else {
            Door::Admin
        }
    }

    /// The buckets the operation is tried on: the native door is the bucket
    /// `default`; cluster-wide operations are tried once.
    fn buckets(self) -> &'static [&'static str] {
        match self.door() {
            Door::Native | Door::Admin => &[OWN],
            _ => match self {
                Op::TusCreateForName
                | Op::S3ListBuckets
                | Op::S3CreateBucket
                | Op::S3DeleteBucket
                | Op::S3CopyFromOther => &[OWN],
                _ => &[OWN, OTHER],
            },
        }
    }

    /// What it needs, on which buckets, when tried on `bucket`.
    fn needs(self, bucket: &'static str) -> Vec<(Need, &'static str)> {
        use Op::*;
        match self {
            NativeGet | NativeHead | NativeVersions | NativeLocate | NativeList => vec![(Need::Read, bucket)],
            NativePut | NativeDelete => vec![(Need::Write, bucket)],
            TusCreate | TusCreateForName | TusAppend | TusHead | TusFinish | TusDelete => vec![(Need::Write, bucket)],
            S3ListBuckets => vec![(Need::Signed, bucket)],
            // A new bucket's name is in no key's list, and it needs an unrestricted key anyway.
            S3CreateBucket | S3DeleteBucket => vec![(Need::Cluster, bucket)],
            S3HeadBucket
            | S3GetBucketVersioning
            | S3ListObjects
            | S3GetObject
            | S3HeadObject
            | S3ListParts
            | S3ListMultipartUploads => vec![(Need::Read, bucket)],
            S3PutBucketVersioning
            | S3PutObject
            | S3DeleteObject
            | S3DeleteObjects
            | S3CreateMultipart
            | S3UploadPart
            | S3CompleteMultipart
            | S3AbortMultipart => vec![(Need::Write, bucket)],
            S3CopyObject | S3UploadPartCopy => vec![(Need::Read, bucket), (Need::Write, bucket)],
            S3CopyFromOther => vec![(Need::Read, OTHER), (Need::Write, bucket)],
            AdminStatus | AdminKeys | AdminExpireUploads => vec![(Need::Cluster, bucket)],
        }
    }
}

/// The cluster, its store's file and the key the test sets things up with.
struct World {
    t: TestCluster,
    db: PathBuf,
    admin: Option<(String, String)>,
    n: AtomicUsize,
    /// While a refusal is watched: the fingerprint taken just before the
    /// principal's own request (after the set-up requests of its cell).
    watch: std::sync::Mutex<Option<Option<(String, usize)>>>,
}

/// An answer: status and body.
struct Answer {
    status: StatusCode,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl World {
    fn fresh(&self, what: &str) -> String {
        format!("{what}-{}", self.n.fetch_add(1, Ordering::Relaxed))
    }

    /// A native, tus or admin request as `key` (a bearer token) or unsigned.
    async fn native(
        &self,
        key: Option<&(String, String)>,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Answer {
        self.before_principal(key).await;
        let mut request = self.t.http.request(method, self.t.url(path)).body(body);
        if let Some((id, secret)) = key {
            request = request.header("authorization", format!("Bearer {id}:{secret}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        answer(request).await
    }

    /// An S3 request, presigned with `key` (unsigned without one). `path` is
    /// percent-encoded already; `query` sorted by name; `signed` headers sorted
    /// and lowercase (signed and sent), `unsigned` sent as they are.
    #[allow(clippy::too_many_arguments)]
    async fn s3(
        &self,
        key: Option<&(String, String)>,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        signed: &[(&str, &str)],
        unsigned: &[(&str, String)],
        body: Vec<u8>,
    ) -> Answer {
        self.before_principal(key).await;
        let base = Url::parse(&self.t.url(path)).expect("URL");
        let url = match key {
            Some((id, secret)) => {
                let rusty = match method.as_str() {
                    "GET" => rusty_s3::Method::Get,
                    "HEAD" => rusty_s3::Method::Head,
                    "PUT" => rusty_s3::Method::Put,
                    "POST" => rusty_s3::Method::Post,
                    _ => rusty_s3::Method::Delete,
                };
                rusty_s3::signing::sign(
                    &jiff::Timestamp::now(),
                    rusty,
                    base,
                    id,
                    secret,
                    None,
                    "us-east-1",
                    300,
                    query.iter().copied(),
                    signed.iter().copied(),
                )
            }
            None => {
                let mut url = base;
                if !query.is_empty() {
                    url.query_pairs_mut().extend_pairs(query.iter().copied());
                }
                url
            }
        };
        let mut request = self.t.http.request(method, url).body(body);
        for (name, value) in signed {
            request = request.header(*name, *value);
        }
        for (name, value) in unsigned {
            request = request.header(*name, value);
        }
        answer(request).await
    }

    /// Takes the cell's "before" fingerprint when a refusal is watched and this
    /// request is the principal's own (not one of the set-up key's).
    async fn before_principal(&self, key: Option<&(String, String)>) {
        let wanted = key != self.admin.as_ref() && matches!(*self.watch.lock().unwrap(), Some(None));
        if wanted {
            let before = self.fingerprint().await;
            *self.watch.lock().unwrap() = Some(Some(before));
        }
    }

    /// A small object `name` in `bucket`, written as the set-up key.
    async fn seed_object(&self, bucket: &str, name: &str) {
        let a = self
            .s3(self.admin.as_ref(), Method::PUT, &format!("/{bucket}/{name}"), &[], &[], &[], b"seed".to_vec())
            .await;
        assert_eq!(a.status, StatusCode::OK, "seeding {bucket}/{name}: {}", a.body);
    }

    /// A tus upload of `length` bytes into `bucket`, created as the set-up key.
    async fn seed_upload(&self, bucket: &str, length: u64) -> String {
        let name = self.fresh("tus");
        let metadata = format!("name {},bucket {}", b64(&name), b64(bucket));
        let a = self
            .native(
                self.admin.as_ref(),
                Method::POST,
                "/uploads",
                &[
                    ("tus-resumable", "1.0.0".into()),
                    ("upload-length", length.to_string()),
                    ("upload-metadata", metadata),
                ],
                Vec::new(),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "seeding a tus upload into {bucket}: {}", a.body);
        let location = a.headers.get("location").and_then(|v| v.to_str().ok()).expect("Location").to_string();
        location.rsplit('/').next().unwrap().to_string()
    }

    /// A multipart upload of `bucket/key` created as the set-up key, with part 1
    /// uploaded when `with_part`; its id and the part's ETag.
    async fn seed_multipart(&self, bucket: &str, key: &str, with_part: bool) -> (String, Option<String>) {
        let path = format!("/{bucket}/{key}");
        let a = self.s3(self.admin.as_ref(), Method::POST, &path, &[("uploads", "")], &[], &[], Vec::new()).await;
        assert_eq!(a.status, StatusCode::OK, "seeding a multipart upload: {}", a.body);
        let id = between(&a.body, "<UploadId>", "</UploadId>").expect("UploadId").to_string();
        if !with_part {
            return (id, None);
        }
        let query = [("partNumber", "1"), ("uploadId", id.as_str())];
        let a = self.s3(self.admin.as_ref(), Method::PUT, &path, &query, &[], &[], b"part one".to_vec()).await;
        assert_eq!(a.status, StatusCode::OK, "seeding a part: {}", a.body);
        let etag = a.headers.get("etag").and_then(|v| v.to_str().ok()).expect("ETag").to_string();
        (id, Some(etag))
    }

    /// Everything a refused request must leave as it was: every row of the
    /// store's tables of names, versions, content, placement, buckets, uploads
    /// and keys, hashed, and each data server's shard count.
    async fn fingerprint(&self) -> (String, usize) {
        let db = self.db.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open the store read-only");
            let mut hasher = sha2::Sha256::new();
            for table in [
                "content",
                "versions",
                "placements",
                "uploads",
                "upload_parts",
                "buckets",
                "multipart_uploads",
                "multipart_parts",
                "access_keys",
            ] {
                // Some tables are WITHOUT ROWID: sort the rows here.
                let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).expect(table);
                let columns = stmt.column_count();
                let mut rows = stmt.query([]).expect(table);
                let mut lines = Vec::new();
                while let Some(row) = rows.next().expect(table) {
                    let mut line = String::new();
                    for i in 0..columns {
                        let value: rusqlite::types::Value = row.get(i).expect("a value");
                        line.push_str(&format!("{value:?}|"));
                    }
                    lines.push(line);
                }
                lines.sort();
                let count = lines.len();
                for line in lines {
                    hasher.update(line.as_bytes());
                }
                hasher.update(format!("{table}={count};").as_bytes());
            }
            hex::encode(hasher.finalize())
        })
        .await
        .expect("fingerprint");
        (rows, self.t.shard_count().await)
    }

    /// Runs `op` on `bucket` as `who` (after setting up what it needs as the
    /// set-up key) and says whether it was allowed; panics on an answer that is
    /// neither the operation's success nor a refusal.
    async fn run(&self, op: Op, bucket: &'static str, who: &Principal) -> Result<bool, String> {
        let key = who.key.as_ref();
        let obj = self.fresh("obj");
        let answer = match op {
            Op::NativeGet | Op::NativeHead | Op::NativeVersions | Op::NativeLocate | Op::NativeDelete => {
                self.seed_object(bucket, &obj).await;
                let (method, path) = match op {
                    Op::NativeGet => (Method::GET, format!("/objects/{obj}")),
                    Op::NativeHead => (Method::HEAD, format!("/objects/{obj}")),
                    Op::NativeVersions => (Method::GET, format!("/versions/{obj}")),
                    Op::NativeLocate => (Method::GET, format!("/locate/{obj}")),
                    _ => (Method::DELETE, format!("/objects/{obj}")),
                };
                self.native(key, method, &path, &[], Vec::new()).await
            }
            Op::NativeList => self.native(key, Method::GET, "/objects/?prefix=obj", &[], Vec::new()).await,
            Op::NativePut => self.native(key, Method::PUT, &format!("/objects/{obj}"), &[], b"new".to_vec()).await,
            Op::TusCreate => {
                let metadata = format!("name {},bucket {}", b64(&obj), b64(bucket));
                let headers =
                    [("tus-resumable", "1.0.0".into()), ("upload-length", "5".into()), ("upload-metadata", metadata)];
                self.native(key, Method::POST, "/uploads", &headers, Vec::new()).await
            }
            Op::TusCreateForName => {
                let headers = [("tus-resumable", "1.0.0".into()), ("upload-length", "5".into())];
                self.native(key, Method::POST, &format!("/objects/{obj}"), &headers, Vec::new()).await
            }
            Op::TusAppend | Op::TusFinish => {
                let length = if op == Op::TusFinish { 5 } else { 10 };
                let id = self.seed_upload(bucket, length).await;
                let headers = [
                    ("tus-resumable", "1.0.0".into()),
                    ("upload-offset", "0".into()),
                    ("content-type", "application/offset+octet-stream".into()),
                ];
                let a = self.native(key, Method::PATCH, &format!("/uploads/{id}"), &headers, b"hello".to_vec()).await;
                if op == Op::TusFinish && a.status == StatusCode::NO_CONTENT {
                    assert!(a.headers.contains_key("x-cairn-version"), "a finishing PATCH names its version");
                }
                a
            }
            Op::TusHead | Op::TusDelete => {
                let id = self.seed_upload(bucket, 10).await;
                let method = if op == Op::TusHead { Method::HEAD } else { Method::DELETE };
                let headers = [("tus-resumable", "1.0.0".into())];
                self.native(key, method, &format!("/uploads/{id}"), &headers, Vec::new()).await
            }
            Op::S3ListBuckets => self.s3(key, Method::GET, "/", &[], &[], &[], Vec::new()).await,
            Op::S3CreateBucket => {
                let name = self.fresh("new");
                self.s3(key, Method::PUT, &format!("/{name}"), &[], &[], &[], Vec::new()).await
            }
            Op::S3DeleteBucket => {
                let name = self.fresh("gone");
                let a = self.s3(self.admin.as_ref(), Method::PUT, &format!("/{name}"), &[], &[], &[], Vec::new()).await;
                assert_eq!(a.status, StatusCode::OK, "seeding bucket {name}: {}", a.body);
                self.s3(key, Method::DELETE, &format!("/{name}"), &[], &[], &[], Vec::new()).await
            }
            Op::S3HeadBucket => self.s3(key, Method::HEAD, &format!("/{bucket}"), &[], &[], &[], Vec::new()).await,
            Op::S3GetBucketVersioning => {
                let q = [("versioning", "")];
                self.s3(key, Method::GET, &format!("/{bucket}"), &q, &[], &[], Vec::new()).await
            }
            Op::S3PutBucketVersioning => {
                let body = b"<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>".to_vec();
                let q = [("versioning", "")];
                self.s3(key, Method::PUT, &format!("/{bucket}"), &q, &[], &[], body).await
            }
            Op::S3ListObjects => {
                let q = [("list-type", "2")];
                self.s3(key, Method::GET, &format!("/{bucket}"), &q, &[], &[], Vec::new()).await
            }
            Op::S3GetObject | Op::S3HeadObject | Op::S3DeleteObject => {
                self.seed_object(bucket, &obj).await;
                let method = match op {
                    Op::S3GetObject => Method::GET,
                    Op::S3HeadObject => Method::HEAD,
                    _ => Method::DELETE,
                };
                self.s3(key, method, &format!("/{bucket}/{obj}"), &[], &[], &[], Vec::new()).await
            }
            Op::S3PutObject => {
                self.s3(key, Method::PUT, &format!("/{bucket}/{obj}"), &[], &[], &[], b"new".to_vec()).await
            }
            Op::S3DeleteObjects => {
                self.seed_object(bucket, &obj).await;
                let body =
                    format!("<Delete><Object><Key>{obj}</Key></Object><Quiet>true</Quiet></Delete>").into_bytes();
                let md5 = base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(&body));
                let q = [("delete", "")];
                let unsigned = [("content-md5", md5)];
                self.s3(key, Method::POST, &format!("/{bucket}"), &q, &[], &unsigned, body).await
            }
            Op::S3CopyObject | Op::S3CopyFromOther => {
                let source_bucket = if op == Op::S3CopyFromOther { OTHER } else { bucket };
                self.seed_object(source_bucket, &obj).await;
                let source = format!("/{source_bucket}/{obj}");
                let signed = [("x-amz-copy-source", source.as_str())];
                let path = format!("/{bucket}/{}", self.fresh("copy"));
                self.s3(key, Method::PUT, &path, &[], &signed, &[], Vec::new()).await
            }
            Op::S3CreateMultipart => {
                let q = [("uploads", "")];
                self.s3(key, Method::POST, &format!("/{bucket}/{obj}"), &q, &[], &[], Vec::new()).await
            }
            Op::S3UploadPart | Op::S3UploadPartCopy => {
                let (id, _) = self.seed_multipart(bucket, &obj, false).await;
                let q = [("partNumber", "1"), ("uploadId", id.as_str())];
                let path = format!("/{bucket}/{obj}");
                let a = if op == Op::S3UploadPart {
                    self.s3(key, Method::PUT, &path, &q, &[], &[], b"part".to_vec()).await
                } else {
                    let source = self.fresh("src");
                    self.seed_object(bucket, &source).await;
                    let source = format!("/{bucket}/{source}");
                    self.s3(key, Method::PUT, &path, &q, &[("x-amz-copy-source", source.as_str())], &[], Vec::new())
                        .await
                };
                a
            }
            Op::S3CompleteMultipart => {
                let (id, etag) = self.seed_multipart(bucket, &obj, true).await;
                let body = format!(
                    "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
                    etag.unwrap_or_default()
                )
                .into_bytes();
                let q = [("uploadId", id.as_str())];
                self.s3(key, Method::POST, &format!("/{bucket}/{obj}"), &q, &[], &[], body).await
            }
            Op::S3AbortMultipart | Op::S3ListParts => {
                let (id, _) = self.seed_multipart(bucket, &obj, op == Op::S3ListParts).await;
                let q = [("uploadId", id.as_str())];
                let method = if op == Op::S3ListParts { Method::GET } else { Method::DELETE };
                self.s3(key, method, &format!("/{bucket}/{obj}"), &q, &[], &[], Vec::new()).await
            }
            Op::S3ListMultipartUploads => {
                let q = [("uploads", "")];
                self.s3(key, Method::GET, &format!("/{bucket}"), &q, &[], &[], Vec::new()).await
            }
            Op::AdminStatus => self.native(key, Method::GET, "/admin/status", &[], Vec::new()).await,
            Op::AdminKeys => self.native(key, Method::GET, "/admin/keys", &[], Vec::new()).await,
            Op::AdminExpireUploads => self.native(key, Method::POST, "/admin/uploads/expire", &[], Vec::new()).await,
        };
        match answer.status {
            s if s.is_success() => Ok(true),
            StatusCode::FORBIDDEN => Ok(false),
            s => Err(format!("{s}: {}", answer.body.trim())),
        }
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(30), request.send())
        .await
        .expect("an answer within 30 s")
        .expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Answer { status, body, headers }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// Runs every cell for `who`; returns the wrong cells, and counts the cells run.
async fn sweep(world: &World, who: &Principal, cells: &mut usize, per_door: &mut BTreeMap<Door, usize>) -> Vec<String> {
    let mut wrong = Vec::new();
    for &op in OPS {
        for &bucket in op.buckets() {
            let want = expected(who.kind, &op.needs(bucket));
            *world.watch.lock().unwrap() = if want { None } else { Some(None) };
            *cells += 1;
            *per_door.entry(op.door()).or_default() += 1;
            match world.run(op, bucket, who).await {
                Ok(got) if got == want => {}
                Ok(got) => wrong.push(format!(
                    "{:?} {op:?} on {bucket}: {} (want {})",
                    who.kind,
                    if got { "allowed" } else { "refused" },
                    if want { "allowed" } else { "refused" }
                )),
                Err(e) => wrong.push(format!("{:?} {op:?} on {bucket}: unexpected answer {e}", who.kind)),
            }
            let watched = world.watch.lock().unwrap().take();
            if let Some(before) = watched {
                let before = before.expect("the principal's request was sent");
                let after = world.fingerprint().await;
                if after != before {
                    wrong.push(format!(
                        "{:?} {op:?} on {bucket}: should be refused, yet the store or the data servers changed ({before:?} -> {after:?})",
                        who.kind
                    ));
                }
            }
        }
    }
    wrong
}

/// Creates a key through `/admin/keys` (as `admin`, or unsigned while open).
async fn create_key(world: &World, admin: Option<&(String, String)>, body: &str) -> (String, String) {
    let a = world
        .native(admin, Method::POST, "/admin/keys", &[("content-type", "application/json".into())], body.into())
        .await;
    assert_eq!(a.status, StatusCode::OK, "creating a key: {}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("key JSON");
    (v["access_key"].as_str().unwrap().to_string(), v["secret_key"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_principal_door_and_operation_is_answered_as_the_rule_says_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meta.db");
    let meta = cairn::meta::open(&format!("sqlite:{}", db.display())).await.expect("store");
    let t = common::start_custom_with_meta(2, meta, |c| {
        c.policy = "1+1".parse::<Policy>().unwrap();
        c.small_policy = "1+1".parse::<Policy>().unwrap();
        // No background worker changes the store while a refusal is watched.
        let hour = Duration::from_secs(3600);
        c.maintenance.gc_interval = hour;
        c.maintenance.retention_interval = hour;
        c.maintenance.orphan_interval = hour;
    })
    .await;
    let mut world = World { t, db, admin: None, n: AtomicUsize::new(0), watch: std::sync::Mutex::new(None) };
    let a = world.s3(None, Method::PUT, &format!("/{OTHER}"), &[], &[], &[], Vec::new()).await;
    assert_eq!(a.status, StatusCode::OK, "creating {OTHER}: {}", a.body);

    let mut cells = 0;
    let mut per_door = BTreeMap::new();
    // Open: everything, unsigned.
    let mut wrong = sweep(&world, &Principal { kind: Kind::Open, key: None }, &mut cells, &mut per_door).await;

    // Closed by a first key; then the others.
    let full = create_key(&world, None, "{}").await;
    world.admin = Some(full.clone());
    let read_only = create_key(&world, Some(&full), r#"{"read_only": true}"#).await;
    let limited = create_key(&world, Some(&full), &format!(r#"{{"buckets": ["{OWN}"]}}"#)).await;
    let deleted = create_key(&world, Some(&full), "{}").await;
    let gone = world.native(Some(&full), Method::DELETE, &format!("/admin/keys/{}", deleted.0), &[], Vec::new()).await;
    assert!(gone.status.is_success(), "deleting a key: {}", gone.body);
    let wrong_secret = (full.0.clone(), "not-the-secret-not-the-secret-not-the-se".to_string());
    let principals = [
        Principal { kind: Kind::Full, key: Some(full.clone()) },
        Principal { kind: Kind::ReadOnly, key: Some(read_only) },
        Principal { kind: Kind::Limited, key: Some(limited) },
        Principal { kind: Kind::Deleted, key: Some(deleted) },
        Principal { kind: Kind::WrongSecret, key: Some(wrong_secret) },
        Principal { kind: Kind::Unsigned, key: None },
    ];
    for who in &principals {
        wrong.extend(sweep(&world, who, &mut cells, &mut per_door).await);
    }
    eprintln!("access matrix: {cells} cells ({per_door:?}), {} wrong", wrong.len());
    assert!(wrong.is_empty(), "{} of {cells} cells wrong:\n{}", wrong.len(), wrong.join("\n"));
}
