//! Early answers on a kept-alive HTTP/1.1 connection, seen from a raw socket.
//!
//! A request answered before its body was read (412 for a conditional PUT on a
//! taken name, 403 without the right key, 413 past the largest object, 412 from
//! tus without `Tus-Resumable`, 401 from a closed data tier) must leave the
//! connection either ready for the next request or closed after saying so
//! (`Connection: close`): never with the unread body, or the lack of it, mistaken
//! for the next request. For every such answer, on every door:
//!
//! 1. the body sent with the head, a `GET /healthz` pipelined behind it: both are
//!    answered, the second with the health report;
//! 2. `Expect: 100-continue`, the client waits for the answer (sending the body
//!    only if told to continue), then asks `GET /healthz`: the health report, or
//!    the early answer said `Connection: close` and the socket ends;
//! 3. `Expect: 100-continue` and an impatient client that sends the body at once,
//!    with a `GET /healthz` pipelined behind it: the same rule as 2;
//! 4. 64 MiB announced, 2 MiB of it sent: the answer says `Connection: close`
//!    and the socket ends, within bounded time.
//!
//! A body read to its end changes nothing: the answer keeps the connection. And on
//! HTTP/2 (over TLS), where each request is its own stream, an early answer leaves
//! the connection serving the next request.
//!
//! Every read and write has a deadline: a probe that would hang fails instead.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The longest any one read or write of a probe may take.
const IO_LIMIT: Duration = Duration::from_secs(10);

/// The longest a probe's socket may take to end after an answer that closes it.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// What probe 4 announces, and what it sends of it.
const HUGE_DECLARED: usize = 64 * 1024 * 1024;
const HUGE_SENT: usize = 2 * 1024 * 1024;

/// The largest object of the cluster that answers 413.
const SMALL_MAX_OBJECT: u64 = 100_000;

/// One answer the server gives before reading the body, and how to provoke it.
struct Early {
    name: &'static str,
    addr: SocketAddr,
    /// Request line, without the protocol.
    line: String,
    /// Headers beside `Host`, `Content-Length` and `Expect`, each ending in CRLF.
    headers: String,
    /// The body length of probes 1–3.
    body_len: usize,
    /// The early answer's status.
    status: u16,
    /// What the health report of `addr` contains.
    healthy: &'static str,
    /// The answer must keep the connection (a request whose body is read).
    keeps: bool,
}

impl Early {
    fn head(&self, content_length: usize, expect: bool) -> String {
        let expect = if expect { "Expect: 100-continue\r\n" } else { "" };
        format!(
            "{} HTTP/1.1\r\nHost: {}\r\n{}Content-Length: {content_length}\r\n{expect}\r\n",
            self.line, self.addr, self.headers
        )
    }

    fn healthz(&self) -> String {
        format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr)
    }

    fn body(&self) -> Vec<u8> {
        common::pattern(self.body_len, 7)
    }

    fn check_early(&self, answer: &Answer) -> Result<(), String> {
        if answer.status != self.status {
            return Err(format!("the early answer is {} (want {}): {}", answer.status, self.status, answer.text()));
        }
        if self.keeps && answer.closes() {
            return Err(format!("the answer closes the connection: {:?}", answer.headers));
        }
        Ok(())
    }

    fn check_health(&self, answer: &Answer) -> Result<(), String> {
        if answer.status != 200 || !answer.text().contains(self.healthy) {
            return Err(format!("GET /healthz got {} {:?}", answer.status, answer.text()));
        }
        Ok(())
    }

    /// After the early answer: the health report, or (when the early answer
    /// closed the connection) the end of the stream.
    async fn check_next(&self, conn: &mut Conn, early: &Answer) -> Result<(), String> {
        match conn.next().await {
            Next::Answer(next) => self.check_health(&next),
            Next::Eof if early.closes() => Ok(()),
            Next::Eof => Err("the socket ended after an answer without Connection: close".into()),
            Next::Failed(e) => Err(format!("after the early answer (closes: {}): {e}", early.closes())),
        }
    }
}

/// A response as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What came next on a socket.
#[derive(Debug)]
enum Next {
    Answer(Answer),
    /// The server ended the stream before any byte of an answer.
    Eof,
    /// A reset, a timeout, or bytes that are no HTTP answer.
    Failed(String),
}

/// A raw HTTP/1.1 client connection: bytes out, answers parsed in.
struct Conn {
    read: OwnedReadHalf,
    /// `None` once a probe has taken it to write from a task of its own.
    write: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let tcp = tokio::time::timeout(IO_LIMIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        tcp.set_nodelay(true).unwrap();
        let (read, write) = tcp.into_split();
        Conn { read, write: Some(write), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let write = self.write.as_mut().ok_or("the write half is elsewhere")?;
        match tokio::time::timeout(IO_LIMIT, write.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err(format!("write of {} bytes timed out", bytes.len())),
        }
    }

    /// Reads more into the buffer; `Ok(false)` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(IO_LIMIT, self.read.read(&mut chunk)).await {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) => Err(format!("read: {e}")),
            Err(_) => Err(format!("no answer within {IO_LIMIT:?}")),
        }
    }

    /// The next answer, interim (1xx) ones included.
    async fn next(&mut self) -> Next {
        match self.read_answer().await {
            Ok(Some(answer)) => Next::Answer(answer),
            Ok(None) => Next::Eof,
            Err(e) => Next::Failed(e),
        }
    }

    /// The next final answer, past any interim (1xx) ones.
    async fn final_answer(&mut self) -> Result<Answer, String> {
        loop {
            match self.next().await {
                Next::Answer(a) if a.status < 200 => {}
                Next::Answer(a) => return Ok(a),
                Next::Eof => return Err("the socket ended before the answer".into()),
                Next::Failed(e) => return Err(e),
            }
        }
    }

    async fn read_answer(&mut self) -> Result<Option<Answer>, String> {
        let end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            if !self.fill().await? {
                return if self.buf.is_empty() { Ok(None) } else { Err("the stream ended inside a head".into()) };
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut answer = Answer { status, headers, body: Vec::new() };
        if status < 200 || status == 204 || status == 304 {
            return Ok(Some(answer));
        }
        if answer.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            answer.body = self.read_chunked().await?;
        } else if let Some(len) = answer.header("content-length") {
            let len: usize = len.parse().map_err(|_| format!("Content-Length {len:?}"))?;
            answer.body = self.take(len).await?;
        } else {
            while self.fill().await? {}
            answer.body = std::mem::take(&mut self.buf);
        }
        Ok(Some(answer))
    }

    async fn take(&mut self, len: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < len {
            if !self.fill().await? {
                return Err(format!("the stream ended {} bytes into a {len}-byte body", self.buf.len()));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buf, b"\r\n") {
                    break at;
                }
                if !self.fill().await? {
                    return Err("the stream ended inside a chunked body".into());
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("chunk size {size_text:?}"))?;
            if size == 0 {
                // No trailers from these servers: the last chunk ends with CRLF.
                self.take(2).await?;
                return Ok(body);
            }
            body.extend(self.take(size + 2).await?.into_iter().take(size));
        }
    }

    /// Waits for the end of the stream, reading and dropping whatever comes.
    async fn ends(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + CLOSE_LIMIT;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.read.read(&mut chunk)).await {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("reset instead of an orderly end: {e}")),
                Err(_) => return Err(format!("the socket was still open {CLOSE_LIMIT:?} after the answer")),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Probe 1: body with the head, `GET /healthz` pipelined behind it.
async fn body_then_pipelined_get(case: &Early) -> Result<(), String> {
    let mut conn = Conn::open(case.addr).await;
    let mut bytes = case.head(case.body_len, false).into_bytes();
    bytes.extend(case.body());
    bytes.extend(case.healthz().into_bytes());
    conn.send(&bytes).await?;
    let early = conn.final_answer().await?;
    case.check_early(&early)?;
    match conn.next().await {
        Next::Answer(next) => case.check_health(&next),
        other => Err(format!("the pipelined GET got no answer: {other:?} (early answer closes: {})", early.closes())),
    }
}

/// Probe 2: `Expect: 100-continue`, a patient client, then `GET /healthz`.
async fn expect_then_wait(case: &Early) -> Result<(), String> {
    let mut conn = Conn::open(case.addr).await;
    conn.send(case.head(case.body_len, true).as_bytes()).await?;
    let early = match conn.next().await {
        Next::Answer(a) if a.status == 100 => {
            // Told to continue: a client sends the body, then hears the answer.
            conn.send(&case.body()).await?;
            conn.final_answer().await?
        }
        Next::Answer(a) => a,
        other => return Err(format!("no early answer: {other:?}")),
    };
    case.check_early(&early)?;
    if let Err(e) = conn.send(case.healthz().as_bytes()).await {
        return if early.closes() { Ok(()) } else { Err(e) };
    }
    case.check_next(&mut conn, &early).await
}

/// Probe 3: `Expect: 100-continue` with the body sent at once anyway, and a
/// `GET /healthz` pipelined behind it.
async fn expect_but_impatient(case: &Early) -> Result<(), String> {
    let mut conn = Conn::open(case.addr).await;
    let mut bytes = case.head(case.body_len, true).into_bytes();
    bytes.extend(case.body());
    bytes.extend(case.healthz().into_bytes());
    conn.send(&bytes).await?;
    let early = conn.final_answer().await?;
    case.check_early(&early)?;
    case.check_next(&mut conn, &early).await
}

/// Probe 4: far more body announced than a server drains; part of it sent while
/// the answer is read. The answer closes the connection, and not with a reset the
/// client would meet while still sending (the server lingers).
async fn huge_body(case: &Early) -> Result<(), String> {
    let mut conn = Conn::open(case.addr).await;
    let mut write = conn.write.take().unwrap_or_else(|| unreachable!());
    let head = case.head(HUGE_DECLARED, false);
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..HUGE_SENT / chunk.len() {
            write.write_all(&chunk).await?;
        }
        // Kept open: the server, not this client, ends the exchange.
        Ok::<_, std::io::Error>(write)
    });
    let answered = async {
        let early = conn.final_answer().await?;
        case.check_early(&early)?;
        if !early.closes() {
            return Err(format!("the answer to a {HUGE_DECLARED}-byte body keeps the connection: {:?}", early.headers));
        }
        conn.ends().await
    }
    .await;
    let sent = match tokio::time::timeout(IO_LIMIT, writer).await {
        Ok(Ok(Ok(_write))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("sending the {HUGE_SENT} bytes after the head failed: {e}")),
        Ok(Err(e)) => Err(format!("the writer task: {e}")),
        Err(_) => Err(format!("sending {HUGE_SENT} bytes took over {IO_LIMIT:?}")),
    };
    answered.and(sent)
}

/// Runs every probe on every case; the failures, one line each.
async fn probe_all(cases: &[Early]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let probes = [
            ("1 body + pipelined GET", body_then_pipelined_get(case).await),
            ("2 Expect, patient", expect_then_wait(case).await),
            ("3 Expect, impatient + pipelined GET", expect_but_impatient(case).await),
            ("4 64 MiB announced", huge_body(case).await),
        ];
        for (probe, outcome) in probes {
            match outcome {
                Ok(()) => eprintln!("ok   {}: probe {probe}", case.name),
                Err(e) => {
                    eprintln!("FAIL {}: probe {probe}: {e}", case.name);
                    failures.push(format!("{}: probe {probe}: {e}", case.name));
                }
            }
        }
    }
    failures
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} probes failed:\n{}", failures.len(), failures.join("\n"));
}

/// A cluster of three data servers (2+1, small objects 1+2).
async fn small_cluster(adjust: impl FnOnce(&mut cairn::dev::DevConfig)) -> common::TestCluster {
    common::start_custom(3, |c| {
        c.policy = "2+1".parse().unwrap();
        c.small_policy = "1+2".parse().unwrap();
        adjust(c);
    })
    .await
}

/// A probe case on the API server at `addr`.
fn api(addr: SocketAddr, name: &'static str, line: &str, headers: &str, body_len: usize, status: u16) -> Early {
    Early {
        name,
        addr,
        line: line.to_string(),
        headers: headers.to_string(),
        body_len,
        status,
        healthy: "live_data_servers",
        keeps: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_of_an_open_cluster_leave_the_connection_usable_or_close_it() {
    let t = small_cluster(|_| {}).await;
    let addr = t.cluster.api_addr;
    // A taken S3 name, for the conditional PUT.
    assert_eq!(t.http.put(t.url("/early")).send().await.unwrap().status(), 200, "CreateBucket");
    assert_eq!(t.http.put(t.url("/early/taken")).body("here").send().await.unwrap().status(), 200, "PutObject");
    let tus_post = "Upload-Length: 4096\r\nContent-Type: application/offset+octet-stream\r\n";
    let tus_patch = "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n";
    let cases = [
        api(addr, "tus POST without Tus-Resumable", "POST /uploads", tus_post, 4096, 412),
        api(addr, "tus PATCH without Tus-Resumable", "PATCH /uploads/0123456789abcdef", tus_patch, 4096, 412),
        api(addr, "S3 PUT If-None-Match: * on a taken name", "PUT /early/taken", "If-None-Match: *\r\n", 4096, 412),
    ];
    assert_no_failures(probe_all(&cases).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_to_its_end_keeps_the_connection_alive() {
    let t = small_cluster(|_| {}).await;
    let stored = Early { keeps: true, ..api(t.cluster.api_addr, "native PUT", "PUT /objects/fine", "", 4096, 200) };
    let mut failures = Vec::new();
    let probes = [
        ("1 body + pipelined GET", body_then_pipelined_get(&stored).await),
        ("2 Expect, patient", expect_then_wait(&stored).await),
        ("3 Expect, impatient + pipelined GET", expect_but_impatient(&stored).await),
    ];
    for (probe, outcome) in probes {
        if let Err(e) = outcome {
            failures.push(format!("{}: probe {probe}: {e}", stored.name));
        }
    }
    assert_no_failures(failures);
    let got = t.get("fine").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), stored.body(), "the last PUT stored its body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_past_the_largest_object_leave_the_connection_usable_or_close_it() {
    let t = small_cluster(|c| c.limits.max_object_size = SMALL_MAX_OBJECT).await;
    let addr = t.cluster.api_addr;
    assert_eq!(t.http.put(t.url("/early")).send().await.unwrap().status(), 200, "CreateBucket");
    let past = 2 * SMALL_MAX_OBJECT as usize;
    let cases = [
        api(addr, "native PUT past the largest object", "PUT /objects/too-big", "", past, 413),
        // S3 says EntityTooLarge with a 400.
        api(addr, "S3 PUT past the largest object", "PUT /early/too-big", "", past, 400),
    ];
    assert_no_failures(probe_all(&cases).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_of_a_keyed_cluster_leave_the_connection_usable_or_close_it() {
    let t = small_cluster(|_| {}).await;
    let addr = t.cluster.api_addr;
    let key = t.http.post(t.url("/admin/keys")).json(&json!({"buckets": [], "read_only": false})).send();
    assert_eq!(key.await.unwrap().status(), 200, "the first key");
    // Until every API server's snapshot of the keys is reloaded, the cluster may
    // still look open.
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.http.put(t.url("/objects/probe")).body("x").send().await.unwrap().status() != 403 {
        assert!(Instant::now() < deadline, "unsigned PUTs still taken 20 s after the first key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cases = [
        api(addr, "native PUT without a key", "PUT /objects/refused", "", 4096, 403),
        api(addr, "S3 PUT without a key", "PUT /early/refused", "", 4096, 403),
        api(addr, "admin POST without a key", "POST /admin/keys", "", 64, 403),
    ];
    assert_no_failures(probe_all(&cases).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_data_tiers_refusals_leave_the_connection_usable_or_close_it() {
    let secret = cairn::secret::ClusterSecret::from_text(&cairn::secret::generate()).unwrap();
    let t = small_cluster(|c| c.cluster_secret = Some(secret)).await;
    let addr = t.cluster.data_addrs[0];
    let hash = "ab".repeat(32);
    let data = |name, line: String| Early {
        name,
        addr,
        line,
        headers: String::new(),
        body_len: 4096,
        status: 401,
        healthy: "ok",
        keeps: false,
    };
    let cases = [
        data("data PUT of a shard without a signature", format!("PUT /objects/{hash}.0")),
        data("data POST of a temp shard without a signature", "POST /temp/0123456789abcdef".to_string()),
    ];
    assert_no_failures(probe_all(&cases).await);
}

/// An HTTP/2 client over TLS to a cluster whose API server speaks TLS.
mod h2 {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;
    use cairn::dev::{DevCluster, DevConfig};
    use cairn::tls::{CertFiles, TlsServer};
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http2::SendRequest;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::ServerName;
    use tokio::net::TcpStream;

    use super::{Duration, Instant, IO_LIMIT};

    /// What the certificate names, and where the API server listens.
    pub const HOST: &str = "127.0.0.1";

    /// A cluster of three data servers whose API server serves TLS with a
    /// self-signed certificate (its PEM returned), and what `adjust` changes.
    pub async fn tls_cluster(dir: &Path, adjust: impl FnOnce(&mut DevConfig)) -> (DevCluster, String) {
        let mut params = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "cairn early answers");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CertFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        let mut config = DevConfig::new(format!("{HOST}:0").parse().unwrap(), dir.join("root"));
        config.data_addrs = (1..=3).map(|i| format!("127.29.1.{i}:0").parse().unwrap()).collect();
        config.policy = "2+1".parse().unwrap();
        config.small_policy = "1+2".parse().unwrap();
        config.cache_bytes = 0;
        config.heartbeat_interval = Duration::from_millis(100);
        config.heartbeat_expiry = Duration::from_millis(600);
        config.serve.tls = Some(TlsServer::load(files).await.expect("the certificate loads"));
        adjust(&mut config);
        (DevCluster::start(config).await.expect("the TLS cluster starts"), cert.pem())
    }

    /// An HTTP/2 connection (ALPN `h2`) to `addr`, trusting `pem`.
    pub async fn connect(addr: std::net::SocketAddr, pem: &str) -> SendRequest<Full<Bytes>> {
        let mut config = cairn::tls::client_config(pem.as_bytes(), Path::new("cert.pem")).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from(HOST).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose HTTP/2");
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        sender
    }

    /// Status and body of `request` on `sender`, within [`IO_LIMIT`].
    pub async fn send(
        sender: &mut SendRequest<Full<Bytes>>,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(u16, String), String> {
        let exchange = async {
            let response = sender.send_request(request).await.map_err(|e| format!("send: {e}"))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(IO_LIMIT, exchange).await.map_err(|_| format!("no answer within {IO_LIMIT:?}"))?
    }

    pub fn request(method: http::Method, path: &str, body: Vec<u8>) -> http::Request<Full<Bytes>> {
        http::Request::builder()
            .method(method)
            .uri(format!("https://{HOST}{path}"))
            .version(http::Version::HTTP_2)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    /// Waits (at most 20 s) until the API server behind `sender` sees `n` data
    /// servers live.
    pub async fn wait_live(sender: &mut SendRequest<Full<Bytes>>, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = send(sender, request(http::Method::GET, "/healthz", Vec::new())).await {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if v["live_data_servers"].as_u64() == Some(n) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the TLS API server never saw {n} data servers live");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_on_http2_leaves_the_connection_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, pem) = h2::tls_cluster(dir.path(), |c| c.limits.max_object_size = SMALL_MAX_OBJECT).await;
    let mut sender = h2::connect(cluster.api_addr, &pem).await;
    h2::wait_live(&mut sender, 3).await;
    // More than a stream's flow-control window (256 KiB): the server cannot have
    // taken it all in before answering.
    let too_big = common::pattern(4 * SMALL_MAX_OBJECT as usize, 3);
    for round in 0..3 {
        let early = h2::send(&mut sender, h2::request(http::Method::PUT, "/objects/too-big", too_big.clone())).await;
        assert_eq!(early.as_ref().map(|a| a.0), Ok(413), "round {round}: {early:?}");
        let next = h2::send(&mut sender, h2::request(http::Method::GET, "/healthz", Vec::new())).await;
        let next = next.unwrap_or_else(|e| panic!("round {round}: GET /healthz after a 413: {e}"));
        assert_eq!(next.0, 200, "round {round}: {next:?}");
        assert!(next.1.contains("live_data_servers"), "round {round}: {next:?}");
    }
}
