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
//! Uses hyper directly (HTTP/1.1, the protocol of both tiers) with tower-http's
//! per-frame body timeout; the routes stay axum `Router`s.

use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;

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
pub const MAX_BUF: usize = 64 * 1024;

/// How long the graceful shutdown waits for requests in flight before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish (up to [`SHUTDOWN_GRACE`]). Returns an error only when the listener
/// itself fails for good.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let service = tower::ServiceBuilder::new().layer(RequestBodyTimeoutLayer::new(timeouts.body)).service(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(timeouts.header).max_buf_size(MAX_BUF);
    let graceful = GracefulShutdown::new();
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
        let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service.clone()));
        let conn = graceful.watch(conn);
        // Owned by `graceful`, which waits for every connection at shutdown.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after the shutdown grace; dropping them");
    }
    Ok(())
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}
