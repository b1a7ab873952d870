//! Request bodies of the S3 door on their way to the write path: capped at their
//! limit, their MD5 computed as they pass ([`Md5Body`]) and checked against a
//! `Content-MD5`, and stored as content not yet recorded ([`CairnS3::store_body`]);
//! and the stream of several contents one after the other that completes a
//! multipart upload.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::dto::StreamingBlob;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

use super::error::{entity_too_large, object_error};
use super::CairnS3;
use crate::api::limits;
use crate::meta::ContentRecord;
use crate::object::hashing::{PipedDigest, INLINE_LIMIT};
use crate::object::{ObjectError, ObjectService};
use crate::range::ByteRange;

pub(super) type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A request body on its way to the write path: its MD5 computed as it passes
/// (inline for the first [`INLINE_LIMIT`] bytes, then on a blocking thread beside
/// the write path's SHA-256, so a large body's MD5 does not hold up its coding and
/// sending), and its first error kept as the S3 error it is (a chunk signature
/// that does not match is `SignatureDoesNotMatch`, not a broken body).
pub(super) struct Md5Body {
    md5: tokio::sync::oneshot::Receiver<Md5State>,
    error: Arc<Mutex<Option<S3Error>>>,
}

/// The running MD5 of a body.
pub(super) enum Md5State {
    Inline(Md5, usize),
    Piped(PipedDigest<Md5>),
}

impl Md5State {
    pub(super) async fn update(&mut self, bytes: &Bytes) {
        match self {
            Md5State::Inline(md5, seen) if *seen + bytes.len() <= INLINE_LIMIT => {
                md5.update(bytes);
                *seen += bytes.len();
            }
            Md5State::Inline(md5, _) => {
                let mut piped = PipedDigest::start(std::mem::take(md5));
                piped.update(bytes.clone()).await;
                *self = Md5State::Piped(piped);
            }
            Md5State::Piped(piped) => piped.update(bytes.clone()).await,
        }
    }

    pub(super) async fn hex(self) -> S3Result<String> {
        let md5 = match self {
            Md5State::Inline(md5, _) => md5,
            Md5State::Piped(piped) => piped.finish_state().await.map_err(|e| s3_error!(InternalError, "{e}"))?,
        };
        Ok(hex::encode(md5.finalize()))
    }
}

impl Md5Body {
    pub(super) fn wrap<B>(body: B) -> (Md5Body, BodyStream)
    where
        B: Stream<Item = Result<Bytes, s3s::StdError>> + Send + Unpin + 'static,
    {
        let (done, md5) = tokio::sync::oneshot::channel();
        let error = Arc::new(Mutex::new(None));
        let first_error = Arc::clone(&error);
        let start = (body, Md5State::Inline(Md5::new(), 0), Some(done));
        let stream = futures_util::stream::unfold(start, move |(mut body, mut state, mut done)| {
            let first_error = Arc::clone(&first_error);
            async move {
                match body.next().await {
                    Some(Ok(bytes)) => {
                        state.update(&bytes).await;
                        Some((Ok(bytes), (body, state, done)))
                    }
                    Some(Err(err)) => {
                        let s3 = match err.downcast_ref::<S3Error>() {
                            Some(s3) => {
                                S3Error::with_message(s3.code().clone(), s3.message().unwrap_or("").to_string())
                            }
                            None => S3Error::with_message(S3ErrorCode::IncompleteBody, err.to_string()),
                        };
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(s3);
                        Some((Err(std::io::Error::other(err.to_string())), (body, state, done)))
                    }
                    None => {
                        if let Some(done) = done.take() {
                            let _ = done.send(state);
                        }
                        None
                    }
                }
            }
        });
        (Md5Body { md5, error }, Box::pin(stream))
    }

    /// The MD5 of the whole body, as hex (once the write path has read it all).
    pub(super) async fn hex(self) -> S3Result<String> {
        match self.md5.await {
            Ok(state) => state.hex().await,
            Err(_) => Err(s3_error!(InternalError, "the body was not read to its end")),
        }
    }

    /// The S3 error for a failed write: the body's own error when it broke.
    pub(super) fn error(&self, e: ObjectError) -> S3Error {
        match (self.error.lock().unwrap_or_else(|p| p.into_inner()).take(), &e) {
            (Some(body), ObjectError::BodyBroken(_)) => body,
            _ => object_error(e),
        }
    }
}

/// Checks a `Content-MD5` header (base64 of the MD5) against what arrived.
pub(super) fn check_content_md5(expected: Option<&String>, actual_hex: &str) -> S3Result<()> {
    use base64::Engine;
    let Some(expected) = expected else { return Ok(()) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(expected.trim())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
    if hex::encode(decoded) != actual_hex {
        return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
    }
    Ok(())
}

/// A body that is missing counts as empty.
pub(super) fn body_or_empty(body: Option<StreamingBlob>) -> StreamingBlob {
    body.unwrap_or_else(|| StreamingBlob::wrap(futures_util::stream::empty::<Result<Bytes, std::io::Error>>()))
}

impl CairnS3 {
    /// Refuses a declared body (`what`) longer than `limit`, before it is read.
    pub(super) fn check_length(&self, what: &str, declared: Option<i64>, limit: u64) -> S3Result<()> {
        match declared.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if !self.door.fits(n, limit) => Err(entity_too_large(what, limit)),
            _ => Ok(()),
        }
    }

    /// Stores a request body (`what`: an object, a part) as content (not yet
    /// recorded), with its MD5 as hex. A body past `limit` bytes is cut there and
    /// refused with `EntityTooLarge`; nothing of it is kept.
    pub(super) async fn store_body(
        &self,
        what: &'static str,
        body: Option<StreamingBlob>,
        limit: u64,
        content_md5: Option<&String>,
    ) -> S3Result<(crate::object::write::StoredContent, String)> {
        let cap = limits::SizeCap::new(limit);
        let capped =
            cap.wrap(body_or_empty(body), move || -> s3s::StdError { Box::new(entity_too_large(what, limit)) });
        let (md5, stream) = Md5Body::wrap(capped);
        let stored = self.svc.store(stream, None).await.map_err(|e| {
            if cap.exceeded() {
                self.door.count_too_large();
            }
            md5.error(e)
        })?;
        let hex = md5.hex().await?;
        // The bytes are durable but not recorded: a mismatch leaves orphans that the
        // collector removes after --orphan-age, and nothing visible.
        check_content_md5(content_md5, &hex)?;
        Ok((stored, hex))
    }
}

/// The bytes of `contents` one after the other, each read (and verified) through
/// the read path in turn.
pub(super) fn concatenated(svc: ObjectService, contents: Vec<ContentRecord>) -> BodyStream {
    let stream = futures_util::stream::iter(contents)
        .then(move |content| {
            let svc = svc.clone();
            async move {
                let range = ByteRange { start: 0, end: content.size };
                match svc.read(&content, range).await {
                    Ok(stream) => stream.left_stream(),
                    Err(e) => futures_util::stream::once(async move { Err(std::io::Error::other(e.to_string())) })
                        .right_stream(),
                }
            }
        })
        .flatten();
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_is_checked() {
        use base64::Engine;
        let md5 = Md5::digest(b"hello");
        let header = base64::engine::general_purpose::STANDARD.encode(md5);
        assert!(check_content_md5(Some(&header), &hex::encode(md5)).is_ok());
        assert!(check_content_md5(Some(&header), &hex::encode(Md5::digest(b"other"))).is_err());
        assert!(check_content_md5(Some(&"%%".to_string()), "00").is_err());
    }
}
