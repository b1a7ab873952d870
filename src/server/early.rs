//! Early answers: what the serving loop does about a request body its handler
//! answered without reading to the end.
//!
//! Handlers answer before the body whenever the head decides (412 for
//! `If-None-Match: *` on a taken name, 403 without the right key, 413 past the
//! largest object, 401 without a cluster signature, 503 past a limit) and drop the
//! body wherever they like. On HTTP/1.1 the unread body still stands on the wire in
//! front of the client's next request, and hyper, left to itself, gets it wrong
//! both ways:
//! - with `Expect: 100-continue` and no `100 Continue` sent yet, a compliant client
//!   sends no body after a final answer, but hyper, seeing the body dropped, reads
//!   it anyway: the client's next request is taken for body bytes, loses its first
//!   bytes and is answered `400`;
//! - otherwise hyper keeps only what one read brings in and closes the connection
//!   when more is to come, losing the requests pipelined behind a small body.
//!
//! So the serving loop gives every HTTP/1.x handler a [`RequestBody`] that notes
//! whether it was ever polled and whether it was read to its end, and that hands
//! hyper's body back to its [`Unsettled`] when dropped early. Once the handler has
//! answered, [`Unsettled::settle`] decides before the answer goes out:
//! - the body read to its end, or none at all: the answer goes out unchanged (the
//!   common case costs one `Arc` per request with a body, nothing per frame but a
//!   flag);
//! - `Expect: 100-continue` and the body never polled: no `100 Continue` went out,
//!   so what follows the head may be the body (an impatient client) or the next
//!   request (a compliant one), and nothing tells them apart: the answer gets
//!   `Connection: close`, and the connection closes after it;
//! - otherwise the rest of the body is read and thrown away, at most
//!   [`DRAIN_MAX_BYTES`] within [`DRAIN_MAX_TIME`], and the answer goes out on a
//!   connection kept alive; past either bound it gets `Connection: close` instead.
//!   The drain runs before the answer is sent, so it delays it by at most
//!   [`DRAIN_MAX_TIME`], and only for a request whose body was left unread.
//!
//! A body its handler still holds when it answers (moved into a task of its own)
//! cannot be drained here: the answer closes the connection, and hyper keeps it
//! until that body is dropped.
//!
//! HTTP/2 needs none of this: each request is a stream of its own, and hyper
//! resets a stream whose body was dropped unread without touching the others, so
//! its requests pass through untracked. What a connection closed here does with the
//! bytes the client is still sending is `linger.rs`'s concern.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, EXPECT};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Most body bytes left unread that are drained to keep a connection alive; past
/// it the connection is closed instead. 1 MiB is a few milliseconds of a LAN, and
/// sixteen of the client's writes at our 64 KiB read buffer: a refused small upload
/// (a tus chunk, a small object) is drained, while a refused large one, which costs
/// the client far more to send than a new connection costs, is not.
pub const DRAIN_MAX_BYTES: u64 = 1024 * 1024;

/// Longest wait for the unread rest of a body before the connection is closed
/// instead. The answer waits for the drain, so this is also the most an early
/// answer is delayed: 2 s gives a client on a slow link time to finish a body of
/// [`DRAIN_MAX_BYTES`] (4 Mbit/s), yet keeps a refusal prompt.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// A request body as the handlers see it: hyper's, watched (HTTP/1.x with a body)
/// or passed through (no body, or HTTP/2).
#[derive(Debug)]
pub struct RequestBody {
    /// `None` only once dropped (its body handed back).
    inner: Option<Incoming>,
    watch: Option<Arc<Watch>>,
    /// This body has been polled (mirrored into `watch` once).
    polled: bool,
}

/// What a watched body tells its [`Unsettled`].
#[derive(Debug, Default)]
struct Watch {
    /// The handler asked for body bytes: for `Expect: 100-continue`, hyper has sent
    /// or will send the `100 Continue`.
    polled: AtomicBool,
    /// The body was read to its end.
    ended: AtomicBool,
    /// The body, handed back when dropped before its end.
    returned: Mutex<Option<Incoming>>,
}

/// A request whose body may still stand on the wire when its answer is ready.
#[derive(Debug)]
pub struct Unsettled {
    watch: Arc<Watch>,
    /// The request asked for a `100 Continue` before its body.
    expects_continue: bool,
}

/// Why an answer closes its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// `Expect: 100-continue` and no `100 Continue` sent: body and next request
    /// cannot be told apart.
    Unasked,
    /// More than [`DRAIN_MAX_BYTES`] left unread.
    TooLarge,
    /// The rest did not arrive within [`DRAIN_MAX_TIME`].
    TooSlow,
    /// The rest failed to arrive (the connection broke).
    Broken,
    /// The handler still holds the body.
    Held,
}

/// Wraps `request`'s body for the handlers; the [`Unsettled`] is for the answer,
/// `None` when nothing can be left on the wire (no body, or HTTP/2).
pub fn track(request: Request<Incoming>) -> (Request<RequestBody>, Option<Unsettled>) {
    let watched = request.version() <= Version::HTTP_11 && !request.body().is_end_stream();
    if !watched {
        return (request.map(|inner| RequestBody { inner: Some(inner), watch: None, polled: false }), None);
    }
    // HTTP/1.0 has no interim answers: hyper ignores `Expect` there.
    let expects_continue = request.version() == Version::HTTP_11
        && request.headers().get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let watch = Arc::new(Watch::default());
    let unsettled = Unsettled { watch: watch.clone(), expects_continue };
    (request.map(|inner| RequestBody { inner: Some(inner), watch: Some(watch), polled: false }), Some(unsettled))
}

impl Unsettled {
    /// `response`, once what is left of the request's body is off the wire, or
    /// with `Connection: close` when it cannot be (module docs).
    pub async fn settle<B>(self, mut response: Response<B>) -> Response<B> {
        if self.watch.ended.load(Ordering::Acquire) {
            return response;
        }
        let returned = self.watch.returned.lock().unwrap_or_else(PoisonError::into_inner).take();
        let closing = match returned {
            None => Some(Closing::Held),
            Some(_) if self.expects_continue && !self.watch.polled.load(Ordering::Acquire) => Some(Closing::Unasked),
            Some(body) => drain(body).await.err(),
        };
        if let Some(why) = closing {
            tracing::debug!(?why, status = %response.status(), "request body left on the wire; closing after the answer");
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Reads `body` to its end within the bounds, throwing its bytes away.
async fn drain(mut body: Incoming) -> Result<(), Closing> {
    if body.size_hint().exact().is_some_and(|left| left > DRAIN_MAX_BYTES) {
        return Err(Closing::TooLarge);
    }
    let read = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Closing::Broken)?;
            seen += frame.data_ref().map_or(0, |data| data.len() as u64);
            // Chunked bodies announce nothing: counted as they come.
            if seen > DRAIN_MAX_BYTES {
                return Err(Closing::TooLarge);
            }
        }
        Ok(())
    };
    tokio::time::timeout(DRAIN_MAX_TIME, read).await.unwrap_or(Err(Closing::TooSlow))
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let Some(watch) = &this.watch else {
            return Pin::new(inner).poll_frame(cx);
        };
        if !this.polled {
            this.polled = true;
            watch.polled.store(true, Ordering::Release);
        }
        let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
        let ended = match &frame {
            None => true,
            // hyper counts a declared length down: the last frame ends it.
            Some(Ok(_)) => inner.is_end_stream(),
            Some(Err(_)) => false,
        };
        if ended {
            watch.ended.store(true, Ordering::Release);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let (Some(watch), Some(inner)) = (&self.watch, self.inner.take()) else {
            return;
        };
        if !watch.ended.load(Ordering::Acquire) {
            *watch.returned.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        }
    }
}
