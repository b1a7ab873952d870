//! The HTTP serving loop shared by API servers and data servers: accept, serve each
//! connection with hyper, shut down gracefully.
//!
//! It exists because `axum::serve` exposes no timeouts, and a server that waits
//! forever on a peer can be held open by anyone: a client that opens a connection
//! and sends nothing, or sends its headers a byte a minute, or starts a body and
//! stops (slowloris), each pins a connection and a task. Here:
//! - a connection that has not sent a complete request head within
//!   [`HttpTimeouts::header`] is closed — this also closes idle keep-alive
//!   connections, since hyper starts that clock as soon as it waits for the next
//!   request;
//! - a request body that produces no bytes for [`HttpTimeouts::body`] fails, which
//!   the handlers see as a broken body (nothing is stored);
//! - accept errors (out of file descriptors) back off instead of spinning.
//!
//! With a [`TlsServer`] (`--tls-cert`/`--tls-key`, [`crate::tls`]) each connection
//! first does a rustls handshake, bounded by [`HttpTimeouts::header`] too, so a
//! silent client holds its task no longer than on plain HTTP; a plain-HTTP request
//! to the TLS port gets a `400` in plain text saying so, and the connection closes.
//! ALPN then picks the protocol: `h2` is served as HTTP/2 with the limits named in
//! [`Http2Limits`], anything else (`http/1.1`, or no ALPN) as HTTP/1.1. An HTTP/2
//! connection with no request in flight for [`HttpTimeouts::header`] is closed
//! (GOAWAY), the counterpart of HTTP/1.1's idle keep-alive rule. Plain HTTP is
//! HTTP/1.1 only (no h2c), as before.
//!
//! The request head is bounded by [`ServeOptions::max_header_size`]: past it
//! HTTP/1.1 answers `431 Request Header Fields Too Large` and closes, and HTTP/2
//! (where it is `SETTINGS_MAX_HEADER_LIST_SIZE`) answers the stream `431` and
//! resets it.
//!
//! A request answered before its body was read to the end leaves that body, or the
//! lack of it, on an HTTP/1.1 connection: `early.rs` drains what is left (at most
//! [`DRAIN_MAX_BYTES`] within [`DRAIN_MAX_TIME`]) before the answer goes out, or
//! closes the connection after the answer when it cannot (a `100 Continue` never
//! sent, a larger or slower rest), and `linger.rs` keeps a closing connection
//! reading for [`LINGER_TIME`] so that the answer is not lost to a TCP reset.
//!
//! Uses hyper's own HTTP/1.1 and HTTP/2 connection builders (not hyper-util's
//! `auto` builder, which cannot bound the HTTP/1.1 head apart from the read buffer
//! and, without ALPN, sniffs the first bytes with no deadline), tower-http's
//! per-frame body timeout, and a task tracker that owns every connection; the
//! routes stay axum `Router`s.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::{RequestBodyTimeout, RequestBodyTimeoutLayer};

use crate::tls::TlsServer;

mod early;
mod linger;

pub use early::{DRAIN_MAX_BYTES, DRAIN_MAX_TIME};
pub use linger::LINGER_TIME;

/// How long a server waits on a client before giving up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Longest wait for a complete request head, counted from when the connection
    /// starts waiting for it: a slow header sender or an idle keep-alive connection
    /// is closed after this long.
    pub header: Duration,
    /// Longest wait for the next bytes of a request body.
    pub body: Duration,
}

impl Default for HttpTimeouts {
    /// 30 s for a request head (idle keep-alive connections included) and 30 s of
    /// silence inside a body: generous for a client on a slow link, short enough that
    /// a stalled client's connection and upload slot come back within a minute.
    fn default() -> Self {
        HttpTimeouts { header: Duration::from_secs(30), body: Duration::from_secs(30) }
    }
}

/// Largest read buffer of a connection, which bounds both a request's head (its
/// headers must fit) and the chunks a body arrives in. hyper's default (~400 KiB)
/// let each of thousands of shard uploads hold that much; 64 KiB is a shard block.
/// It is also the default [`ServeOptions::max_header_size`].
pub const MAX_BUF: usize = 64 * 1024;

/// The smallest `--max-header-size`: hyper's HTTP/1.1 read buffer cannot be
/// smaller, and a request line plus a SigV4 `Authorization` needs a few KiB.
pub const MIN_HEADER_SIZE: usize = 8 * 1024;

/// The largest `--max-header-size`: every connection may buffer this much.
pub const MAX_HEADER_SIZE: usize = 1024 * 1024;

/// How long the graceful shutdown waits for requests in flight before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long an HTTP/2 connection closed for idleness may take to say goodbye
/// (GOAWAY and its ping) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a plain-HTTP request to a TLS port is answered (the first byte of a TLS
/// connection is 0x16, a handshake record; anything else is not TLS).
const NOT_TLS_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 42\r\n\
Connection: close\r\n\r\nthis port speaks HTTPS; use https:// URLs\n";

/// The HTTP/2 limits of a TLS server: each bounds what one connection can make the
/// server hold or do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Limits {
    /// Requests (streams) one connection may have open at once; more are refused
    /// with `REFUSED_STREAM` for the client to retry. The API server's own request
    /// limit (503 past `--max-requests`) still counts each stream.
    pub max_concurrent_streams: u32,
    /// How many request-body bytes one stream may send before the handler reads
    /// them (its flow-control window).
    pub stream_window: u32,
    /// How many request-body bytes one connection may have sent and unread in all:
    /// the memory a connection's uploads can pin.
    pub connection_window: u32,
    /// Response bytes buffered per stream ahead of the client.
    pub max_send_buf: usize,
    /// Streams a client may open and reset before the server reads them, after
    /// which the connection is closed (the HTTP/2 "rapid reset" attack, CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for a client's protocol errors before it
    /// closes the connection.
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Limits {
    /// 128 streams; 256 KiB per stream and 1 MiB per connection of unread upload;
    /// 64 KiB of response per stream; 20 pending and 1024 local resets (hyper's
    /// own defaults for the two reset limits, named here so they are seen).
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 128,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            max_send_buf: MAX_BUF,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
        }
    }
}

/// How a server meets its clients beyond the timeouts: the bound on a request
/// head and, optionally, TLS.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Largest request head (request line and headers; for HTTP/2 the decoded
    /// header list) in bytes, between [`MIN_HEADER_SIZE`] and [`MAX_HEADER_SIZE`];
    /// past it the request is answered 431. It is also the HTTP/1.1 read buffer.
    pub max_header_size: usize,
    /// Serve TLS (HTTP/1.1 and HTTP/2 by ALPN) instead of plain HTTP/1.1.
    pub tls: Option<TlsServer>,
    /// HTTP/2's limits, when TLS is on.
    pub http2: Http2Limits,
}

impl Default for ServeOptions {
    /// Plain HTTP, heads up to [`MAX_BUF`].
    fn default() -> Self {
        ServeOptions { max_header_size: MAX_BUF, tls: None, http2: Http2Limits::default() }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish (up to [`SHUTDOWN_GRACE`]). Returns an error only when the listener
/// itself fails for good. Plain HTTP/1.1 with heads up to [`MAX_BUF`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with(listener, app, timeouts, ServeOptions::default(), shutdown).await
}

/// [`serve`] with `options`: TLS and the head bound. With TLS, the certificate
/// files are watched for changes while the server runs.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let service = tower::ServiceBuilder::new().layer(RequestBodyTimeoutLayer::new(timeouts.body)).service(app);
    let protocols = Arc::new(Protocols::new(timeouts, &options));
    let connections = TaskTracker::new();
    // Cancelled when the grace is over: connections still open are dropped.
    let hard_stop = CancellationToken::new();
    if let Some(tls) = &options.tls {
        connections.spawn(tls.clone().watch(shutdown.clone()));
    }
    let tls = options.tls.map(|tls| (tls.acceptor(), tls));
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: wait for some to come back
                    // rather than spin on the error.
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Responses must not wait for the client's delayed ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            service: service.clone(),
            protocols: protocols.clone(),
            idle: timeouts.header,
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        };
        match &tls {
            None => connections.spawn(conn.serve(tcp, Protocol::Http1)),
            Some((acceptor, tls)) => connections.spawn(conn.serve_tls(tcp, acceptor.clone(), tls.clone())),
        };
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await.is_err() {
        tracing::warn!("requests still in flight after the shutdown grace; dropping them");
        hard_stop.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

/// The routes behind the body timeout, as every connection serves them.
type AppService = RequestBodyTimeout<Router>;

/// Which protocol a connection speaks after its (optional) handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The two connection builders, configured once per server.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(timeouts: HttpTimeouts, options: &ServeOptions) -> Protocols {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .max_header_size(options.max_header_size)
            .max_buf_size(options.max_header_size.max(MAX_BUF));
        let limits = options.http2;
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(options.max_header_size).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(limits.stream_window)
            .initial_connection_window_size(limits.connection_window)
            .max_send_buf_size(limits.max_send_buf)
            .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.max_local_error_reset_streams);
        Protocols { http1, http2 }
    }
}

/// One accepted connection and what it needs to serve itself.
struct Connection {
    service: AppService,
    protocols: Arc<Protocols>,
    /// An HTTP/2 connection with no request in flight this long is closed.
    idle: Duration,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

impl Connection {
    /// Shakes hands (within the header timeout), then serves what ALPN chose.
    async fn serve_tls(self, tcp: TcpStream, acceptor: tokio_rustls::TlsAcceptor, tls: TlsServer) {
        let handshake = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            done = tokio::time::timeout(self.idle, handshake(tcp, &acceptor)) => done,
        };
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                tls.handshake_failed();
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake not finished within the header timeout; closing");
                tls.handshake_failed();
                return;
            }
        };
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(crate::tls::ALPN_H2) => Protocol::Http2,
            _ => Protocol::Http1,
        };
        self.serve(stream, protocol).await
    }

    /// Serves HTTP on `io` until the client leaves, the connection fails, it idles
    /// (HTTP/2), or the server shuts down (gracefully, then at the hard stop).
    async fn serve<I>(self, io: I, protocol: Protocol)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service = counted(self.service.clone(), activity.clone());
        let ended = match protocol {
            Protocol::Http1 => {
                let io = TokioIo::new(linger::Lingering::new(io, LINGER_TIME));
                let conn = self.protocols.http1.serve_connection(io, service);
                drive(conn, |c| c.graceful_shutdown(), None, &self.shutdown, &self.hard_stop).await
            }
            Protocol::Http2 => {
                let conn = self.protocols.http2.serve_connection(TokioIo::new(io), service);
                let idle = Some((activity.as_ref(), self.idle));
                drive(conn, |c| c.graceful_shutdown(), idle, &self.shutdown, &self.hard_stop).await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Reads the first byte before handing the connection to rustls: a plain-HTTP
/// request is answered in plain text instead of a TLS alert no HTTP client shows.
async fn handshake(
    mut tcp: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != 0x16 {
        let _ = tcp.write_all(NOT_TLS_ANSWER).await;
        let _ = tcp.shutdown().await;
        return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP on the TLS port"));
    }
    acceptor.accept(tcp).await
}

/// Runs `conn` to its end. On shutdown, or when `idle` says the connection has had
/// no request in flight for its duration, asks it to close gracefully (`close`);
/// at the hard stop, or [`IDLE_CLOSE_GRACE`] after an idle close, drops it.
async fn drive<C>(
    conn: C,
    close: impl Fn(Pin<&mut C>),
    idle: Option<(&Activity, Duration)>,
    shutdown: &CancellationToken,
    hard_stop: &CancellationToken,
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    let mut conn = pin!(conn);
    let mut closing = false;
    let mut give_up = None;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = shutdown.cancelled(), if !closing => {
                close(conn.as_mut());
                closing = true;
            }
            _ = idle_for(idle), if !closing => {
                close(conn.as_mut());
                closing = true;
                give_up = Some(Instant::now() + IDLE_CLOSE_GRACE);
            }
            _ = sleep_until(give_up) => return Ok(()),
            _ = hard_stop.cancelled() => return Ok(()),
        }
    }
}

async fn idle_for(idle: Option<(&Activity, Duration)>) {
    match idle {
        Some((activity, limit)) => activity.idle_for(limit).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Requests in flight on one connection (a request counts until its response body
/// is dropped), and since when there are none.
struct Activity {
    state: Mutex<(usize, Instant)>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity { state: Mutex::new((0, Instant::now())), changed: Notify::new() }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
        InFlight(self.clone())
    }

    /// Returns once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            let (in_flight, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if in_flight > 0 {
                changed.await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(since + limit) => {
                    let (in_flight, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    if in_flight == 0 && since + limit <= Instant::now() {
                        return;
                    }
                }
                _ = changed => {}
            }
        }
    }
}

/// One request in flight; dropping it ends it.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = state.0.saturating_sub(1);
        if state.0 == 0 {
            state.1 = Instant::now();
            drop(state);
            self.0.changed.notify_waiters();
        }
    }
}

/// `service` as hyper calls it: each request's body watched for what its handler
/// leaves unread (`early.rs`), each request counted in `activity` until its
/// response body is done.
fn counted(
    service: AppService,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<Body>, Infallible>> + Send + 'static,
> + Clone
       + Send
       + 'static {
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = activity.begin();
        let (request, unsettled) = early::track(request);
        let response = service.clone().oneshot(request);
        async move {
            let mut response = response.await?;
            if let Some(unsettled) = unsettled {
                response = unsettled.settle(response).await;
            }
            // The guard lives in the body: dropped when hyper is done with it.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = &in_flight;
                    frame
                }))
            }))
        }
    })
}
