//! The append path of a resumable upload: a PATCH body cut into parts
//! ([`ObjectService::append_to_upload`]), each stored and appended to the upload's
//! record, with the running hash and the PATCH's checksum updated as bytes pass.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::digest::DynDigest;

use super::{expiry_after, FinishGate, Patch, ResumableError, UploadSettings, UploadState};
use crate::clock::now_ms;
use crate::meta::UploadAppend;
use crate::object::resumable_hash::ResumableSha256;
use crate::object::write::StoredContent;
use crate::object::{ObjectError, ObjectService};

impl ObjectService {
    /// Appends `body` to the upload `id` at `patch.offset` (see the module docs),
    /// and finishes the upload when it is complete.
    pub async fn append_to_upload<S, E>(
        &self,
        id: &str,
        patch: Patch,
        body: S,
        settings: &UploadSettings,
        gate: &dyn FinishGate,
    ) -> Result<UploadState, ResumableError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.live_upload(id).await?;
        if upload.offset != patch.offset {
            return Err(ResumableError::OffsetConflict { offset: upload.offset, asked: patch.offset });
        }
        let new_length = match (upload.length, patch.length) {
            (_, None) => None,
            (Some(l), Some(asked)) if l == asked => None,
            (Some(_), Some(asked)) => {
                return Err(ResumableError::BadLength { asked, why: "the upload's length is already set" })
            }
            (None, Some(asked)) if asked < upload.offset => {
                return Err(ResumableError::BadLength { asked, why: "below the bytes already received" })
            }
            (None, Some(asked)) if asked > settings.max_size => {
                return Err(ResumableError::TooLarge { limit: settings.max_size })
            }
            (None, Some(asked)) => Some(asked),
        };
        let length = upload.length.or(new_length);
        let limit = length.unwrap_or(settings.max_size);
        if patch.declared.is_some_and(|n| n > limit.saturating_sub(upload.offset)) {
            return Err(ResumableError::TooLarge { limit });
        }
        let hasher = ResumableSha256::from_bytes(&upload.hasher)
            .map_err(|source| ResumableError::BadState { id: id.to_string(), source })?;
        let mut source = Source {
            body,
            pending: None,
            room: limit.saturating_sub(upload.offset),
            limit,
            hasher,
            checksum: patch.checksum.as_ref().map(|c| c.algorithm.hasher()),
            broken: None,
            overrun: false,
            ended: false,
        };
        let mut at = upload.offset;
        let mut held: Vec<StoredContent> = Vec::new();
        let mut length_to_set = new_length;
        while source.has_more().await {
            let part = Part { source: &mut source, left: settings.part_size.max(1) };
            let stored = match self.store(part, None).await {
                Ok(stored) => stored,
                Err(_) if source.overrun => return Err(ResumableError::TooLarge { limit: source.limit }),
                Err(e) => return Err(e.into()),
            };
            if patch.checksum.is_some() {
                held.push(stored);
                continue;
            }
            let append = UploadAppend {
                expected_offset: at,
                parts: std::slice::from_ref(&stored.content),
                hasher: &source.hasher.to_bytes(),
                length: length_to_set.take(),
                expires_ms: expiry_after(settings, now_ms()),
            };
            at = self.append(id, append, patch.offset).await?;
            self.recorded(stored);
        }
        if let Some(reason) = source.broken.take() {
            // Without a checksum the parts received are appended already.
            return Err(ObjectError::BodyBroken(reason).into());
        }
        if let Some(checksum) = &patch.checksum {
            let digest = source.checksum.take().map(|h| h.finalize().to_vec()).unwrap_or_default();
            if digest != checksum.digest {
                return Err(ResumableError::ChecksumMismatch { algorithm: checksum.algorithm });
            }
        }
        if !held.is_empty() || length_to_set.is_some() || at == upload.offset {
            let parts: Vec<_> = held.iter().map(|s| s.content.clone()).collect();
            let append = UploadAppend {
                expected_offset: at,
                parts: &parts,
                hasher: &source.hasher.to_bytes(),
                length: length_to_set.take(),
                expires_ms: expiry_after(settings, now_ms()),
            };
            self.append(id, append, patch.offset).await?;
            held.into_iter().for_each(|s| self.recorded(s));
        }
        let upload = self.live_upload(id).await?;
        self.settle(upload, gate).await
    }
}

/// A PATCH body being cut into parts: the body, the bytes read but not yet given
/// to a part, and what every byte passes through (the upload's running hash, the
/// PATCH's checksum).
struct Source<S> {
    body: S,
    pending: Option<Bytes>,
    /// Bytes the upload may still take.
    room: u64,
    /// The length (or largest upload) `room` counts down to.
    limit: u64,
    hasher: ResumableSha256,
    checksum: Option<Box<dyn DynDigest + Send>>,
    /// The body broke off, with this reason.
    broken: Option<String>,
    /// The body ran past `room`.
    overrun: bool,
    ended: bool,
}

impl<S, E> Source<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// Whether another byte is to come (reading ahead to know).
    async fn has_more(&mut self) -> bool {
        while self.pending.is_none() && !self.ended {
            match self.body.next().await {
                None => self.ended = true,
                Some(Err(e)) => {
                    self.broken = Some(e.to_string());
                    self.ended = true;
                }
                Some(Ok(bytes)) if bytes.is_empty() => {}
                Some(Ok(bytes)) => self.pending = Some(bytes),
            }
        }
        self.pending.is_some()
    }
}

/// One part of a PATCH body: at most `left` more bytes of the source. A body that
/// breaks off ends the part (what arrived is kept); one that runs past the
/// upload's length fails it.
struct Part<'a, S> {
    source: &'a mut Source<S>,
    left: u64,
}

/// Why a part's stream failed.
#[derive(Debug)]
struct Overrun;

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the body runs past the upload's length")
    }
}

impl<S, E> Stream for Part<'_, S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, Overrun>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let source = &mut *this.source;
        let mut chunk = loop {
            if let Some(chunk) = source.pending.take() {
                break chunk;
            }
            if source.ended {
                return Poll::Ready(None);
            }
            match source.body.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => source.ended = true,
                Poll::Ready(Some(Err(e))) => {
                    source.broken = Some(e.to_string());
                    source.ended = true;
                }
                Poll::Ready(Some(Ok(bytes))) if bytes.is_empty() => {}
                Poll::Ready(Some(Ok(bytes))) => source.pending = Some(bytes),
            }
        };
        if chunk.len() as u64 > source.room {
            source.overrun = true;
            source.ended = true;
            return Poll::Ready(Some(Err(Overrun)));
        }
        let take = (chunk.len() as u64).min(this.left) as usize;
        let rest = chunk.split_off(take);
        if !rest.is_empty() {
            source.pending = Some(rest);
        }
        source.room -= take as u64;
        this.left -= take as u64;
        source.hasher.update(&chunk);
        if let Some(checksum) = source.checksum.as_mut() {
            checksum.update(&chunk);
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ContentHash;

    #[tokio::test]
    async fn a_body_is_cut_into_parts_and_a_break_keeps_what_arrived() {
        let chunks: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from_static(b"hello ")), Ok(Bytes::from_static(b"world")), Err("reset".into())];
        let mut source = Source {
            body: futures_util::stream::iter(chunks),
            pending: None,
            room: 100,
            limit: 100,
            hasher: ResumableSha256::new(),
            checksum: None,
            broken: None,
            overrun: false,
            ended: false,
        };
        let mut parts = Vec::new();
        while source.has_more().await {
            let part = Part { source: &mut source, left: 4 };
            let bytes: Vec<Bytes> = part.map(|b| b.unwrap()).collect().await;
            parts.push(bytes.concat());
        }
        // Parts are exactly `left` long across chunk boundaries; the last is what
        // arrived before the break.
        assert_eq!(parts, vec![b"hell".to_vec(), b"o wo".to_vec(), b"rld".to_vec()]);
        assert_eq!(source.broken.as_deref(), Some("reset"));
        assert_eq!(source.hasher.finish(), ContentHash::of(b"hello world"));
    }

    #[tokio::test]
    async fn a_body_past_the_length_fails_its_part() {
        let chunks: Vec<Result<Bytes, String>> = vec![Ok(Bytes::from_static(b"abc")), Ok(Bytes::from_static(b"def"))];
        let mut source = Source {
            body: futures_util::stream::iter(chunks),
            pending: None,
            room: 4,
            limit: 4,
            hasher: ResumableSha256::new(),
            checksum: None,
            broken: None,
            overrun: false,
            ended: false,
        };
        assert!(source.has_more().await);
        let items: Vec<_> = Part { source: &mut source, left: 100 }.collect().await;
        assert!(items[0].is_ok() && items[1].is_err());
        assert!(source.overrun);
    }
}
