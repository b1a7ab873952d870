//! TLS on the API server, through the real binary: `cairn dev --tls-cert
//! --tls-key` with a self-signed certificate each test makes (rcgen) for
//! `localhost` and 127.29.10.1, the loopback address this file's API servers
//! listen on (data servers: 127.29.1.x on ephemeral ports, as `cairn dev` puts
//! them).
//!
//! - boto3 and aws-cli run their suites over https, verifying the certificate
//!   (`AWS_CA_BUNDLE`);
//! - ALPN gives HTTP/2 to a client offering `h2` and HTTP/1.1 to one offering
//!   `http/1.1` or nothing;
//! - a certificate replaced on disk is what new connections get, without a
//!   restart; a broken replacement leaves the previous one in use, and is counted;
//! - plain HTTP to the TLS port gets a plain-text 400, silent connections are
//!   closed after the header timeout, and neither holds up a real client;
//! - a request head past `--max-header-size` is answered 431, over HTTP/1.1
//!   (plain and TLS) and HTTP/2.
//!
//! The clients here are hyper over tokio-rustls: the test's own, so that the
//! negotiated protocol and the served certificate can be looked at.

mod common;
mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use s3::{assert_checks, script, Client, Key, BOTO3_CHECKS};

/// This file's loopback address (its block is 127.29.10.x).
const HOST: &str = "127.29.10.1";

/// The longest one client script may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);

/// A self-signed certificate and its key, as PEM.
struct Pem {
    cert: String,
    key: String,
}

fn self_signed(name: &str) -> Pem {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), HOST.to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pem { cert: cert.pem(), key: key.serialize_pem() }
}

fn der(pem: &Pem) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()
}

/// A `cairn dev` process serving TLS with the certificate files in its directory;
/// killed when dropped (its log printed if the test is failing).
struct Dev {
    child: Child,
    /// `host:port` of the API server.
    addr: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    log: PathBuf,
    // Kept open: `cairn dev` prints a last line at exit.
    _stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
}

impl Dev {
    /// Starts `cairn dev` on HOST:0 with `pem` (when given) as its certificate and
    /// `extra` arguments; returns once its first line names the API server.
    fn start(pem: Option<&Pem>, extra: &[&str]) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        let root = dir.path().join("root");
        let listen = format!("{HOST}:0");
        let mut args = vec!["dev", "--listen", &listen, "--root", root.to_str().unwrap()];
        if let Some(pem) = pem {
            std::fs::write(&cert_file, &pem.cert).unwrap();
            std::fs::write(&key_file, &pem.key).unwrap();
            args.extend(["--tls-cert", cert_file.to_str().unwrap(), "--tls-key", key_file.to_str().unwrap()]);
        }
        args.extend(extra);
        let log = dir.path().join("dev.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(&args)
            .env("RUST_LOG", "info,cairn::server=debug")
            .env_remove("LISTEN_ADDRESS")
            .env_remove("STORAGE_ROOT")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cairn binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let scheme = if pem.is_some() { "https://" } else { "http://" };
        let Some(addr) = first.trim().strip_prefix("cairn dev: API server    ").and_then(|u| u.strip_prefix(scheme))
        else {
            let _ = child.kill();
            panic!("first line {first:?}, log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        let addr = addr.to_string();
        Dev { child, addr, cert_file, key_file, log, _stdout: stdout, dir }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- cairn dev log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// A client configuration trusting `roots`, offering `alpn`.
fn client_config(roots: &[&Pem], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let pem: String = roots.iter().map(|p| p.cert.as_str()).collect();
    let mut config = cairn::tls::client_config(pem.as_bytes(), Path::new("roots")).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every connection a full handshake: a resumed session reports the
    // certificate of the session it resumes, not the one the server has now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A finished TLS handshake with the server at `addr`.
async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(HOST).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// What one request got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    version: http::Version,
    body: Bytes,
}

/// Sends `request` on `tls` with HTTP/2 or HTTP/1.1, whichever ALPN chose.
async fn send(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    request: http::Request<Full<Bytes>>,
) -> Result<Answer, hyper::Error> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    };
    let status = response.status().as_u16();
    let version = response.version();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer { status, version, body })
}

fn get(path: &str, h2: bool) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::get(path);
    if h2 {
        request = request.uri(format!("https://{HOST}{path}")).version(http::Version::HTTP_2);
    } else {
        request = request.header("host", HOST);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

/// GET `path` over a new TLS connection offering `alpn`.
async fn get_over(addr: &str, config: Arc<rustls::ClientConfig>, path: &str) -> Answer {
    let tls = connect(addr, config).await.expect("TLS handshake");
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    send(tls, get(path, h2)).await.expect("request answered")
}

/// Waits (at most 30 s) until the API server at `addr` sees six data servers.
async fn wait_live(addr: &str, config: Arc<rustls::ClientConfig>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(tls) = connect(addr, config.clone()).await {
            if let Ok(answer) = send(tls, get("/healthz", false)).await {
                let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
                if v["live_data_servers"].as_u64() == Some(6) {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "the API server at {addr} never saw six data servers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leaf certificate the server presents to a new connection.
async fn served_certificate(addr: &str, config: Arc<rustls::ClientConfig>) -> CertificateDer<'static> {
    let tls = connect(addr, config).await.expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_aws_cli_work_over_https_with_a_self_signed_certificate() {
    const TEST: &str = "boto3_and_aws_cli_work_over_https_with_a_self_signed_certificate";
    // Each client missing skips its half loudly (fails under CAIRN_REQUIRE_SERVICES=1).
    let boto3 = s3::boto3_available()
        || s3::missing(TEST, "python3 cannot import boto3 (pip install --target target/s3py boto3)");
    let aws = s3::aws_command();
    if aws.is_none() {
        s3::missing(TEST, "no aws-cli (aws, or python3 -m awscli in target/s3py)");
    }
    if !boto3 && aws.is_none() {
        return;
    }
    let pem = self_signed("cairn test");
    let dev = Dev::start(Some(&pem), &[]);
    let config = client_config(&[&pem], &[b"http/1.1"]);
    wait_live(&dev.addr, config.clone()).await;

    // A key through the open cluster's /admin/keys, over TLS.
    let tls = connect(&dev.addr, config.clone()).await.unwrap();
    let request = http::Request::post("/admin/keys")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let answer = send(tls, request).await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let key = Key {
        id: v["access_key"].as_str().unwrap().to_string(),
        secret: v["secret_key"].as_str().unwrap().to_string(),
    };
    let endpoint = format!("https://{}", dev.addr);
    let bundle = dev.cert_file.clone();

    if boto3 {
        let work = tempfile::tempdir().unwrap();
        let workdir = work.path().display().to_string();
        let args =
            [script("boto3_suite.py"), endpoint.clone(), "--workdir".into(), workdir, "--big-mib".into(), "24".into()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = Client::new("python3", &args, work.path())
            .key(&key)
            .env("AWS_CA_BUNDLE", &bundle)
            .run(CLIENT_TIMEOUT)
            .await;
        assert_checks(&out, BOTO3_CHECKS);
    }
    if let Some(aws) = aws {
        let work = tempfile::tempdir().unwrap();
        let workdir = work.path().display().to_string();
        let out = Client::new("bash", &[&script("aws_cli.sh"), &endpoint, &workdir], work.path())
            .key(&key)
            .env("AWS", aws)
            .env("AWS_CA_BUNDLE", &bundle)
            .run(CLIENT_TIMEOUT)
            .await;
        assert_checks(&out, &["mb_and_ls_buckets", "cp_small", "cp_multipart", "ls", "sync", "rm_recursive"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_gives_http2_to_h2_clients_and_http11_to_the_others() {
    let pem = self_signed("cairn test");
    let dev = Dev::start(Some(&pem), &[]);
    wait_live(&dev.addr, client_config(&[&pem], &[])).await;

    let h2 = get_over(&dev.addr, client_config(&[&pem], &[b"h2", b"http/1.1"]), "/healthz").await;
    assert_eq!((h2.status, h2.version), (200, http::Version::HTTP_2));
    let h1 = get_over(&dev.addr, client_config(&[&pem], &[b"http/1.1"]), "/healthz").await;
    assert_eq!((h1.status, h1.version), (200, http::Version::HTTP_11));
    let none = connect(&dev.addr, client_config(&[&pem], &[])).await.unwrap();
    assert_eq!(none.get_ref().1.alpn_protocol(), None);
    let none = send(none, get("/healthz", false)).await.unwrap();
    assert_eq!((none.status, none.version), (200, http::Version::HTTP_11));
    // A client that offers only protocols the server does not speak is refused.
    assert!(connect(&dev.addr, client_config(&[&pem], &[b"h3"])).await.is_err());
    // A client that does not trust the certificate is refused (by itself).
    let stranger = self_signed("someone else");
    assert!(connect(&dev.addr, client_config(&[&stranger], &[])).await.is_err());

    // Many streams on one HTTP/2 connection: each object written and read back.
    let tls = connect(&dev.addr, client_config(&[&pem], &[b"h2"])).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let body = common::pattern(100_000 + i * 1000, i as u64);
            let uri = format!("https://{HOST}/objects/h2/{i}");
            let put = http::Request::put(&uri).body(Full::new(Bytes::from(body.clone()))).unwrap();
            let put = sender.send_request(put).await.unwrap();
            assert_eq!(put.status(), 200);
            let got = sender.send_request(http::Request::get(&uri).body(Full::new(Bytes::new())).unwrap());
            let got = got.await.unwrap();
            assert_eq!(got.version(), http::Version::HTTP_2);
            assert_eq!(got.into_body().collect().await.unwrap().to_bytes(), body);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_reaches_new_connections_and_a_broken_one_is_ignored() {
    let first = self_signed("first");
    let second = self_signed("second");
    let dev = Dev::start(Some(&first), &[]);
    let both = client_config(&[&first, &second], &[b"http/1.1"]);
    wait_live(&dev.addr, both.clone()).await;
    assert_eq!(served_certificate(&dev.addr, both.clone()).await, der(&first));
    // A connection made now keeps working across the change.
    let kept = connect(&dev.addr, both.clone()).await.unwrap();

    // Key first, then the certificate, as the module docs ask.
    std::fs::write(&dev.key_file, &second.key).unwrap();
    std::fs::write(&dev.cert_file, &second.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while served_certificate(&dev.addr, both.clone()).await != der(&second) {
        assert!(Instant::now() < deadline, "the new certificate is not served within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(send(kept, get("/healthz", false)).await.unwrap().status, 200);

    // A broken certificate (half written) is not taken: the second stays.
    std::fs::write(&dev.cert_file, &second.cert[..second.cert.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = get_over(&dev.addr, both.clone(), "/metrics").await;
        let text = String::from_utf8_lossy(&metrics.body).to_string();
        let failures = text
            .lines()
            .find(|l| l.starts_with("cairn_tls_cert_reload_failures_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if failures >= 1.0 {
            assert!(
                text.lines().any(|l| l.starts_with("cairn_tls_cert_reloads_total{") && l.ends_with(" 1")),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no reload failure counted within 15 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served_certificate(&dev.addr, both.clone()).await, der(&second));
    let log = std::fs::read_to_string(&dev.log).unwrap();
    assert!(log.contains("still serving the previous one"), "no warning in the log:\n{log}");

    // Fixed again: the first certificate comes back.
    std::fs::write(&dev.key_file, &first.key).unwrap();
    std::fs::write(&dev.cert_file, &first.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while served_certificate(&dev.addr, both.clone()).await != der(&first) {
        assert!(Instant::now() < deadline, "the repaired certificate is not served within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_silent_clients_on_the_tls_port_fail_cleanly() {
    let pem = self_signed("cairn test");
    let dev = Dev::start(Some(&pem), &["--header-timeout", "2s"]);
    let config = client_config(&[&pem], &[b"h2", b"http/1.1"]);
    wait_live(&dev.addr, config.clone()).await;

    // Silent clients: some send nothing, some a TLS record header and stop.
    let mut silent = Vec::new();
    for i in 0..20 {
        let mut tcp = TcpStream::connect(&dev.addr).await.unwrap();
        if i % 2 == 1 {
            tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        }
        silent.push(tcp);
    }
    let started = Instant::now();
    // A plain-HTTP request is told what the port speaks.
    let mut plain = TcpStream::connect(&dev.addr).await.unwrap();
    plain.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(answer.contains("HTTPS"), "{answer:?}");
    // A real client is served at once, silent ones or not.
    let h2 = get_over(&dev.addr, config.clone(), "/healthz").await;
    assert_eq!(h2.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "served in {:?}", started.elapsed());

    // The silent connections are closed by the server after the header timeout.
    for mut tcp in silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        match read {
            Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => panic!("a silent connection is still open {:?} after it was made", started.elapsed()),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed before the header timeout");

    // An idle HTTP/2 connection is closed too (GOAWAY), like an idle HTTP/1.1 one.
    let tls = connect(&dev.addr, config.clone()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(sender.send_request(get("/healthz", true)).await.unwrap().status(), 200);
    let idle_since = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), conn).await.expect("idle HTTP/2 connection closed").unwrap().ok();
    assert!(idle_since.elapsed() >= Duration::from_millis(1500), "closed after {:?}", idle_since.elapsed());
    // And the server still serves.
    assert_eq!(get_over(&dev.addr, config, "/healthz").await.status, 200);
}

/// A GET of /healthz with one `x-padding` header of `len` bytes.
fn padded(len: usize, h2: bool) -> http::Request<Full<Bytes>> {
    let mut request = get("/healthz", h2);
    request.headers_mut().insert("x-padding", "a".repeat(len).parse().unwrap());
    request
}

/// The status line a plain-HTTP GET of /healthz with a `len`-byte header gets. The
/// server may close before reading all of a head it refuses: what it answered
/// before counts, a reset after it does not.
async fn raw_status(addr: &str, len: usize) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nX-Padding: {}\r\n\r\n", "a".repeat(len));
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.expect("an answer") {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_past_max_header_size_are_answered_431() {
    // Plain HTTP/1.1 with the default bound (64 KiB), through a raw socket.
    let plain = Dev::start(None, &[]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(common::wait_live(&http, &format!("http://{}", plain.addr), 6).await);
    assert!(raw_status(&plain.addr, 60 * 1024).await.starts_with("HTTP/1.1 200 "));
    let refused = raw_status(&plain.addr, 70 * 1024).await;
    assert!(refused.starts_with("HTTP/1.1 431 "), "{refused:?}");

    // TLS with --max-header-size 16KiB: HTTP/1.1 and HTTP/2.
    let pem = self_signed("cairn test");
    let dev = Dev::start(Some(&pem), &["--max-header-size", "16KiB"]);
    let h1 = client_config(&[&pem], &[b"http/1.1"]);
    let h2 = client_config(&[&pem], &[b"h2"]);
    wait_live(&dev.addr, h1.clone()).await;
    for (config, is_h2) in [(h1, false), (h2, true)] {
        let small = send(connect(&dev.addr, config.clone()).await.unwrap(), padded(12 * 1024, is_h2)).await;
        assert_eq!(small.unwrap().status, 200, "12 KiB head, h2: {is_h2}");
        let big = send(connect(&dev.addr, config.clone()).await.unwrap(), padded(20 * 1024, is_h2)).await;
        assert_eq!(big.unwrap().status, 431, "20 KiB head, h2: {is_h2}");
    }

    // Out of range: refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--listen", &format!("{HOST}:0"), "--max-header-size", "4KiB", "--root"])
        .arg(plain.dir.path().join("unused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-header-size"), "{out:?}");
}

#[test]
fn tls_cert_without_tls_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--listen", &format!("{HOST}:0"), "--tls-cert", "cert.pem", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"), "{out:?}");
    // A key that does not load is refused at start, naming the file.
    let pem = self_signed("cairn test");
    std::fs::write(dir.path().join("cert.pem"), &pem.cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--listen", &format!("{HOST}:0"), "--root"])
        .arg(dir.path().join("root"))
        .arg("--tls-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key.pem"), "{out:?}");
}
