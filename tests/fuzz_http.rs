//! Property tests of the HTTP front doors (issue 13): arbitrary methods, paths,
//! queries, headers and bodies sent to a live in-process cluster's API server (the
//! native routes, tus, the admin routes and every S3 request s3s routes to cairn)
//! and to one of its data servers. Whatever arrives, the server answers: never a
//! dropped connection (a panicking handler), never a 500 (a client's mistake is a
//! 4xx; nothing else goes wrong in a healthy cluster), and it still answers
//! `/healthz` afterwards.
//!
//! Requests are built from the tokens the routers and parsers look for, so that
//! most of them get past the first check. The coverage-guided twin is the `http`
//! cargo-fuzz target in `fuzz/` (`tools/fuzz.sh`). Bounded: a fixed number of
//! cases, each request with a deadline, the whole run cut off after 60 s.
//!
//! The cluster listens on 127.0.0.1, port 0 for every part. `POST /admin/keys` is
//! left out: the first key closes the cluster, and every later request would be
//! refused before reaching anything worth fuzzing.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};

/// One request, before it is sent.
#[derive(Clone, Debug)]
struct Fuzzed {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "GET", "PUT", "POST"];
const API_SEGMENTS: &[&str] = &[
    "objects",
    "objects",
    "uploads",
    "uploads",
    "versions",
    "locate",
    "healthz",
    "metrics",
    "admin",
    "status",
    "repair",
    "workers",
    "gc",
    "scrub",
    "heal",
    "pause",
    "resume",
    "expire",
    "keys",
    "bucket",
    "fuzz-b",
    "default",
    "key",
    "a",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "%E6%97%A5",
    "a%20b",
    "0123456789abcdef0123456789abcdef",
];
const DATA_SEGMENTS: &[&str] = &[
    "temp",
    "objects",
    "purge",
    "shards",
    "scrub",
    "findings",
    "pause",
    "stats",
    "compact",
    "healthz",
    "6f4a2b1c-0d3e-4f5a-8b9c-0123456789ab",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.0",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.4294967296",
    "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855.1",
    "..",
    "x.1",
    "",
];
const QUERY_KEYS: &[&str] = &[
    "version",
    "after",
    "limit",
    "prefix",
    "purge",
    "uploads",
    "uploadId",
    "partNumber",
    "versionId",
    "versions",
    "list-type",
    "delimiter",
    "max-keys",
    "max-uploads",
    "max-parts",
    "part-number-marker",
    "continuation-token",
    "start-after",
    "marker",
    "key-marker",
    "version-id-marker",
    "delete",
    "tagging",
    "acl",
    "location",
    "encoding-type",
    "x-id",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "response-content-type",
];
const QUERY_VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "2",
    "-1",
    "1000",
    "1001",
    "18446744073709551616",
    "abc",
    "a/b",
    "url",
    "AWS4-HMAC-SHA256",
    "AKIA/20260101/us-east-1/s3/aws4_request",
    "20260101T000000Z",
    "604801",
    "host",
    "0123456789abcdef0123456789abcdef",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.0",
    "%00",
    "%ff",
];

fn header_values(name: &'static str) -> BoxedStrategy<String> {
    let pick = |v: &'static [&'static str]| prop::sample::select(v).prop_map(str::to_string).boxed();
    let numbers = prop_oneof![any::<u64>().prop_map(|n| n.to_string()), (0u64..70000).prop_map(|n| n.to_string())];
    match name {
        "range" => prop_oneof![
            pick(&["bytes=0-0", "bytes=-1", "bytes=5-", "bytes=0-1,2-3", "bytes=x", "items=0-1"]),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
            (0u64..100, 0u64..100).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        ]
        .boxed(),
        "upload-length" | "upload-offset" | "size" | "x-cairn-length" | "x-amz-decoded-content-length" => {
            prop_oneof![numbers, pick(&["-1", "", "1.5", " 3 "])].boxed()
        }
        "x-cairn-shard" => prop_oneof![numbers, pick(&["-1", "4294967296"])].boxed(),
        _ => pick(match name {
            "tus-resumable" => &["1.0.0", "1.0.0", "0.2.2"],
            "upload-defer-length" => &["1", "0", "yes"],
            "upload-metadata" => &[
                "name YQ==",
                "filename Yi9j",
                "name YQ==,bucket ZnV6ei1i",
                "name Li4=",
                "name !!",
                "name",
                "name YQ==,name YQ==",
            ],
            "upload-checksum" => &[
                "sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
                "sha256 AAAA",
                "md5 1B2M2Y8AsgTpgAmY7PhCfg==",
                "crc32 AAAA",
                "sha1",
                "sha1 !!",
            ],
            "content-type" => {
                &["application/offset+octet-stream", "application/xml", "text/plain", "multipart/form-data; boundary=x"]
            }
            "x-http-method-override" => &["PATCH", "DELETE", "GET"],
            "digest" => &["SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "SHA-256=AAAA", "md5=x, sha-256=!"],
            "content-digest" => {
                &["sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:", "sha-256=:AAAA:", "sha-256=x"]
            }
            "accept-encoding" => &["zstd", "gzip, zstd;q=0", "*", "zstd;q=abc"],
            "if-match" | "if-none-match" => {
                &["*", "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"", "\"x\"", "W/\"x\""]
            }
            "if-modified-since" | "if-unmodified-since" => {
                &["Sun, 06 Nov 1994 08:49:37 GMT", "Thu, 01 Jan 2099 00:00:00 GMT", "yesterday"]
            }
            "x-amz-content-sha256" => &[
                "UNSIGNED-PAYLOAD",
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "zz",
            ],
            "x-amz-date" => &["20260101T000000Z", "2026", ""],
            "authorization" => &[
                "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
                "Bearer a:b",
                "Bearer",
                "AWS a:b",
                "x",
            ],
            "content-md5" => &["1B2M2Y8AsgTpgAmY7PhCfg==", "AAAA", "!"],
            "x-amz-copy-source" => &["/fuzz-b/a", "fuzz-b/a?versionId=1", "default/a", "/", "%ff"],
            "x-amz-copy-source-range" => &["bytes=0-0", "bytes=5-1", "x"],
            "x-amz-meta-a" => &["1", "", "é"],
            "x-amz-tagging" => &["a=b", "=", "&&"],
            "x-amz-storage-class" => &["STANDARD", "GLACIER"],
            "x-cairn-hash" => &["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "00", ""],
            "x-cairn-policy" => &["4+2", "1+2", "0+1", "33+0", "a+b", "+"],
            "content-encoding" => &["aws-chunked", "zstd", "gzip"],
            "content-language" | "cache-control" | "content-disposition" | "expires" => {
                &["x", "", "Thu, 01 Jan 2099 00:00:00 GMT"]
            }
            _ => &["", "x"],
        }),
    }
}

const HEADER_NAMES: &[&str] = &[
    "range",
    "upload-length",
    "upload-offset",
    "size",
    "x-cairn-length",
    "x-amz-decoded-content-length",
    "x-cairn-shard",
    "tus-resumable",
    "tus-resumable",
    "upload-defer-length",
    "upload-metadata",
    "upload-checksum",
    "content-type",
    "x-http-method-override",
    "digest",
    "content-digest",
    "accept-encoding",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "x-amz-content-sha256",
    "x-amz-date",
    "authorization",
    "content-md5",
    "x-amz-copy-source",
    "x-amz-copy-source-range",
    "x-amz-meta-a",
    "x-amz-tagging",
    "x-amz-storage-class",
    "x-cairn-hash",
    "x-cairn-policy",
    "content-encoding",
    "content-language",
    "cache-control",
];

fn header() -> impl Strategy<Value = (String, String)> {
    prop::sample::select(HEADER_NAMES)
        .prop_flat_map(|name| header_values(name).prop_map(move |v| (name.to_string(), v)))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        vec(any::<u8>(), 0..200),
        prop::sample::select(&[
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload></CompleteMultipartUpload>",
            "<Delete><Object><Key>a</Key></Object><Object><Key>../x</Key></Object></Delete>",
            "<Delete><Quiet>true</Quiet></Delete>",
            "<CreateBucketConfiguration><LocationConstraint>x</LocationConstraint></CreateBucketConfiguration>",
            "<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>",
            "<not xml",
            "{\"shards\":[{\"hash\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"shard\":0}]}",
            "{\"shards\":[{\"hash\":\"zz\",\"shard\":-1}]}",
            "{\"buckets\":[\"..\"],\"read_only\":\"yes\"}",
            "1a;chunk-signature=00\r\nabc\r\n0;chunk-signature=00\r\n\r\n",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// The API server's routes; `*` stands for one or more segments.
const API_ROUTES: &[&str] = &[
    "/objects/*",
    "/objects/",
    "/objects",
    "/uploads",
    "/uploads/*",
    "/versions/*",
    "/locate/*",
    "/fuzz-b",
    "/fuzz-b/*",
    "/default/*",
    "/*",
    "/admin/status",
    "/admin/repair/*",
    "/admin/workers/*",
    "/admin/keys/*",
];
/// A data server's routes.
const DATA_ROUTES: &[&str] =
    &["/temp/*", "/objects/*", "/purge", "/shards", "/scrub", "/scrub/*", "/stats", "/compact", "/healthz", "/metrics"];

fn requests(segments: &'static [&'static str], routes: &'static [&'static str]) -> impl Strategy<Value = Fuzzed> {
    let method = prop_oneof![9 => prop::sample::select(METHODS).prop_map(str::to_string), 1 => "[A-Z]{1,7}"];
    let segment =
        prop_oneof![8 => prop::sample::select(segments).prop_map(str::to_string), 1 => "[a-zA-Z0-9._~-]{0,12}"];
    let path = prop_oneof![
        3 => (prop::sample::select(routes), vec(segment.clone(), 1..4))
            .prop_map(|(route, s)| route.replace('*', &s.join("/"))),
        1 => vec(segment, 0..5).prop_map(|s| format!("/{}", s.join("/"))),
    ];
    let query = vec((prop::sample::select(QUERY_KEYS), prop::sample::select(QUERY_VALUES)), 0..4)
        .prop_map(|q| q.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    (method, path, query, vec(header(), 0..6), body()).prop_map(|(method, path, query, headers, body)| Fuzzed {
        method,
        path,
        query,
        headers,
        body,
    })
}

impl Fuzzed {
    /// The request's target, with the query spelled as given (already
    /// percent-encoded where a value needs it).
    fn url(&self, base: &str) -> String {
        let query: Vec<String> =
            self.query.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
        if query.is_empty() {
            format!("{base}{}", self.path)
        } else {
            format!("{base}{}?{}", self.path, query.join("&"))
        }
    }

    /// A request that would create an access key (see the module doc).
    fn creates_a_key(&self) -> bool {
        let path = self.path.trim_end_matches('/');
        path == "/admin/keys" && self.method != "GET"
    }
}

/// Sends `req` and checks the answer; `Ok` also for a request no client could
/// send (a header value reqwest refuses).
async fn check(http: &reqwest::Client, base: &str, req: &Fuzzed) -> Result<Option<u16>, TestCaseError> {
    let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else { return Ok(None) };
    let mut builder = http.request(method, req.url(base)).timeout(Duration::from_secs(20));
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    let request = match builder.body(req.body.clone()).build() {
        Ok(request) => request,
        Err(_) => return Ok(None),
    };
    let response = http
        .execute(request)
        .await
        .map_err(|e| TestCaseError::fail(format!("no answer (a panic in a handler?): {e}")))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::INTERNAL_SERVER_ERROR {
        return Err(TestCaseError::fail(format!("500: {}", text.trim())));
    }
    Ok(Some(status.as_u16()))
}

/// Runs `cases` fuzzed requests against `base`, for at most `budget`; returns
/// how many were sent, by the status of their answer.
fn fuzz(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    base: &str,
    (segments, routes): (&'static [&'static str], &'static [&'static str]),
    cases: u32,
    budget: Duration,
) -> BTreeMap<u16, usize> {
    let config =
        ProptestConfig { cases, failure_persistence: None, max_shrink_iters: 200, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let deadline = Instant::now() + budget;
    let statuses = RefCell::new(BTreeMap::new());
    let result = runner.run(&requests(segments, routes), |req| {
        if Instant::now() > deadline || req.creates_a_key() {
            return Ok(());
        }
        if let Some(status) = rt.block_on(check(http, base, &req))? {
            *statuses.borrow_mut().entry(status).or_default() += 1;
        }
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, req)) => panic!("{why}\nrequest: {req:#?}\nurl: {}", req.url(base)),
        Err(e) => panic!("{e}"),
    }
    statuses.into_inner()
}

#[test]
fn arbitrary_requests_get_an_answer_and_never_a_500() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let t = rt.block_on(common::start_custom(3, |config| {
        config.data_addrs = vec!["127.0.0.1:0".parse().unwrap(); 3];
        config.policy = "2+1".parse().unwrap();
        config.small_policy = "1+2".parse().unwrap();
    }));
    // Something to read, list, copy and range over.
    rt.block_on(async {
        assert!(t.put("a", "hello fuzz").await.status().is_success());
        let bucket = t.http.put(t.url("/fuzz-b")).send().await.unwrap();
        assert!(bucket.status().is_success(), "{}", bucket.status());
        let object = t.http.put(t.url("/fuzz-b/a")).body("in a bucket").send().await.unwrap();
        assert!(object.status().is_success(), "{}", object.status());
    });
    let api = fuzz(&rt, &t.http, &t.base, (API_SEGMENTS, API_ROUTES), 3000, Duration::from_secs(40));
    let data_base = format!("http://{}", t.cluster.data_addrs[0]);
    let data = fuzz(&rt, &t.http, &data_base, (DATA_SEGMENTS, DATA_ROUTES), 1000, Duration::from_secs(20));
    eprintln!("answers by status: API server {api:?}, data server {data:?}");
    let (api, data) = (api.values().sum::<usize>(), data.values().sum::<usize>());
    assert!(api > 500 && data > 200, "too few requests went out in the time: {api} and {data}");
    rt.block_on(async {
        for base in [&t.base, &data_base] {
            let health = t.http.get(format!("{base}/healthz")).send().await.expect("still answering");
            assert!(health.status().is_success(), "{base}: {}", health.status());
        }
        t.cluster.shutdown().await;
    });
}
