//! Whole HTTP requests to a live in-process cluster (started once per fuzzing
//! process on 127.0.0.1, port 0 for every part): its API server (native routes,
//! tus, admin, and every S3 request s3s routes to cairn) or one of its data
//! servers. The input is a request built from the tokens the routers and parsers
//! look for, or raw text where the fuzzer finds better. Every request is answered
//! (a panicking handler aborts the process, which libFuzzer reports), and never
//! with 500: a client's mistake is a 4xx, and nothing else fails in a healthy
//! cluster. `POST /admin/keys` is skipped: the first key closes the cluster.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use cairn::dev::{DevCluster, DevConfig};
use libfuzzer_sys::fuzz_target;

const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"];
const SEGMENTS: &[&str] = &[
    "objects",
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
    "fuzz-b",
    "default",
    "a",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "a%20b",
    "0123456789abcdef0123456789abcdef",
    "temp",
    "purge",
    "shards",
    "findings",
    "stats",
    "compact",
    "6f4a2b1c-0d3e-4f5a-8b9c-0123456789ab",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.0",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.4294967296",
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
];
const HEADERS: &[&str] = &[
    "range",
    "upload-length",
    "upload-offset",
    "size",
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
    "x-amz-content-sha256",
    "x-amz-date",
    "authorization",
    "content-md5",
    "x-amz-copy-source",
    "x-amz-copy-source-range",
    "x-amz-meta-a",
    "x-amz-decoded-content-length",
    "x-cairn-hash",
    "x-cairn-shard",
    "x-cairn-length",
    "x-cairn-policy",
    "content-encoding",
    "x-amz-tagging",
];
const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "18446744073709551616",
    "1.0.0",
    "bytes=0-0",
    "bytes=-1",
    "bytes=5-",
    "bytes=0-1,2-3",
    "name YQ==",
    "name YQ==,bucket ZnV6ei1i",
    "name Li4=",
    "sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
    "md5 AAAA",
    "application/offset+octet-stream",
    "application/xml",
    "PATCH",
    "DELETE",
    "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
    "zstd",
    "*",
    "\"x\"",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "UNSIGNED-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "20260101T000000Z",
    "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
    "Bearer a:b",
    "1B2M2Y8AsgTpgAmY7PhCfg==",
    "/fuzz-b/a",
    "default/a?versionId=1",
    "4+2",
    "1+2",
    "33+0",
    "aws-chunked",
    "0123456789abcdef0123456789abcdef",
    "a/b",
    "1000",
    "url",
];

#[derive(Arbitrary, Debug)]
enum Token {
    Known(u8),
    Raw(String),
}

impl Token {
    fn text(&self, table: &[&str]) -> String {
        match self {
            Token::Known(i) => table[*i as usize % table.len()].to_string(),
            Token::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    to_data_server: bool,
    method: Token,
    segments: Vec<Token>,
    query: Vec<(Token, Token)>,
    headers: Vec<(u8, Token)>,
    body: Vec<u8>,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    api: String,
    data: String,
    http: reqwest::Client,
    _cluster: DevCluster,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = DevConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.data_addrs = vec!["127.0.0.1:0".parse().unwrap(); 3];
        config.policy = "2+1".parse().unwrap();
        config.small_policy = "1+2".parse().unwrap();
        config.small_threshold = 64 * 1024;
        config.cache_bytes = 0;
        config.heartbeat_interval = Duration::from_millis(100);
        config.heartbeat_expiry = Duration::from_secs(5);
        let cluster = rt.block_on(DevCluster::start(config)).expect("cluster starts");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let api = format!("http://{}", cluster.api_addr);
        let data = format!("http://{}", cluster.data_addrs[0]);
        rt.block_on(async {
            for _ in 0..200 {
                let live = async {
                    let v: serde_json::Value =
                        http.get(format!("{api}/healthz")).send().await.ok()?.json().await.ok()?;
                    v["live_data_servers"].as_u64()
                };
                if live.await == Some(3) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = http.put(format!("{api}/objects/a")).body("hello fuzz").send().await;
            let _ = http.put(format!("{api}/fuzz-b")).send().await;
            let _ = http.put(format!("{api}/fuzz-b/a")).body("in a bucket").send().await;
        });
        Harness { rt, api, data, http, _cluster: cluster, _dir: dir }
    })
}

fuzz_target!(|input: Input| {
    let h = harness();
    let method = input.method.text(METHODS);
    let path: Vec<String> = input.segments.iter().take(6).map(|s| s.text(SEGMENTS)).collect();
    let path = format!("/{}", path.join("/"));
    if path.trim_end_matches('/') == "/admin/keys" && method != "GET" {
        return;
    }
    let query: Vec<String> =
        input.query.iter().take(4).map(|(k, v)| format!("{}={}", k.text(QUERY_KEYS), v.text(VALUES))).collect();
    let base = if input.to_data_server { &h.data } else { &h.api };
    let url = if query.is_empty() { format!("{base}{path}") } else { format!("{base}{path}?{}", query.join("&")) };
    let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else { return };
    let mut builder = h.http.request(method, &url).timeout(Duration::from_secs(20));
    for (name, value) in input.headers.iter().take(8) {
        builder = builder.header(HEADERS[*name as usize % HEADERS.len()], value.text(VALUES));
    }
    let Ok(request) = builder.body(input.body.clone()).build() else { return };
    h.rt.block_on(async {
        let response = h.http.execute(request).await.unwrap_or_else(|e| panic!("no answer to {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_ne!(status, reqwest::StatusCode::INTERNAL_SERVER_ERROR, "{url}: {}", text.trim());
    });
});
