//! Lingering close: how an HTTP/1.x connection ends while the client may still be
//! sending.
//!
//! A connection closed after an early answer (`early.rs`) usually has body
//! bytes of the client's in flight or unread. Closing a socket with unread bytes
//! makes the kernel answer with a TCP reset, and a reset that reaches the client
//! before it has read the answer throws the answer away with the connection: the
//! client sees "connection reset" instead of the 413 that says why. So hyper's
//! shutdown of a [`Lingering`] stream first ends the sending side (FIN; over TLS a
//! `close_notify` first), and then keeps reading and discarding what arrives until
//! the client ends its side too, or fails, or [`LINGER_TIME`] has passed; only
//! then does hyper drop the socket (the `lingering_close` of Apache and nginx).
//!
//! hyper calls this shutdown once, when it is done with a connection for good, so
//! it costs nothing while requests are served. A client that already left costs one
//! read that returns at once; one that ignores the end of the stream holds its task
//! for [`LINGER_TIME`] at most, and the server's hard stop cuts that short too.
//! Connections that end in an error (a malformed head, the header timeout) are
//! dropped by hyper without a shutdown, as before.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Longest a closing connection keeps reading what the client still sends. A
/// client reads the answer in one round trip once it arrives; 2 s covers a slow
/// link's round trips many times over and ties up a closing connection briefly.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// An I/O stream whose shutdown lingers (module docs).
#[derive(Debug)]
pub struct Lingering<T> {
    io: T,
    /// How long the shutdown lingers at most ([`LINGER_TIME`] but in tests).
    linger: Duration,
    /// Set once the sending side has been shut down: the end of the linger.
    until: Option<Pin<Box<Sleep>>>,
}

impl<T> Lingering<T> {
    /// Wraps `io`; nothing changes until its shutdown, which lingers for
    /// `linger` at most.
    pub fn new(io: T, linger: Duration) -> Lingering<T> {
        Lingering { io, linger, until: None }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let until = match &mut this.until {
            Some(until) => until,
            None => {
                ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                this.until.insert(Box::pin(tokio::time::sleep(this.linger)))
            }
        };
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut discard = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.io).poll_read(cx, &mut discard)) {
                // The tokio I/O budget turns a client that never stops into a
                // Pending now and then, so this loop does not hog the worker.
                Ok(()) if !discard.filled().is_empty() => continue,
                // The client's end, or its reset: nothing left to protect.
                Ok(()) | Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn shutdown_ends_the_stream_and_reads_until_the_client_ends_its_side() {
        // A pipe far smaller than what the client sends: only a reading server
        // lets the client's writes through.
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = Lingering::new(server, Duration::from_secs(60));
        // Owned through its handle, which the test awaits below.
        let shutdown = tokio::spawn(async move { server.shutdown().await });
        let mut end = [0u8; 8];
        assert_eq!(client.read(&mut end).await.unwrap(), 0, "the client sees the end of the stream");
        client.write_all(&[7u8; 64 * 1024]).await.expect("the rest of a body is taken in, not refused");
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(10), shutdown).await;
        ended.expect("the shutdown ends with the client's side").unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_lingering_after_its_time() {
        let (server, _client) = tokio::io::duplex(64);
        let linger = Duration::from_millis(50);
        let mut server = Lingering::new(server, linger);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await.expect("bounded").unwrap();
        assert!(started.elapsed() >= linger, "lingered {:?}", started.elapsed());
    }
}
