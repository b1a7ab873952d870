//! The completion of a resumable upload: once its last byte is in, its parts are
//! read back in order into one new content and the upload becomes a version.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{FinishGate, ResumableError, UploadState, PARTS_STEP};
use crate::meta::{FinishOutcome, UploadRecord};
use crate::object::read::ObjectStream;
use crate::object::resumable_hash::ResumableSha256;
use crate::object::ObjectService;
use crate::range::ByteRange;

impl ObjectService {
    /// Finishes the upload if all its bytes are in and it is not finished yet.
    pub(super) async fn settle(
        &self,
        upload: UploadRecord,
        gate: &dyn FinishGate,
    ) -> Result<UploadState, ResumableError> {
        if upload.finished_version.is_some() || upload.length != Some(upload.offset) {
            return Ok(UploadState::of(upload));
        }
        gate.may_finish(&upload).await.map_err(|reason| ResumableError::FinishRefused { reason })?;
        let hasher = ResumableSha256::from_bytes(&upload.hasher)
            .map_err(|source| ResumableError::BadState { id: upload.id.clone(), source })?;
        let hash = hasher.finish();
        if let Some(expected) = upload.expected.filter(|e| *e != hash) {
            self.meta.delete_upload(&upload.id).await?;
            return Err(ResumableError::DigestMismatch { expected, actual: hash });
        }
        let stored = match self.stored(&hash).await? {
            Some(stored) => stored,
            None => self.store(self.read_parts(upload.id.clone()), Some(hash)).await?,
        };
        let version = match self.meta.finish_upload(&upload.id, &stored.content).await? {
            FinishOutcome::Finished(record) => {
                self.recorded(stored);
                self.metrics.uploads_finished.increment(1);
                record.version
            }
            FinishOutcome::AlreadyFinished { version } => version,
            FinishOutcome::Gone => return Err(ResumableError::NoSuchUpload),
        };
        let mut upload = upload;
        upload.finished_version = Some(version);
        Ok(UploadState { upload, version: Some(version), hash: Some(hash) })
    }

    /// The bytes of an upload's parts, in order, read through the read path one
    /// part at a time (each verified against its hash).
    fn read_parts(&self, id: String) -> Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>> {
        let reader = PartsReader { svc: self.clone(), id, next: 0, queue: VecDeque::new(), current: None, done: false };
        Box::pin(futures_util::stream::unfold(reader, |mut reader| async move {
            let item = reader.next_chunk().await?;
            if item.is_err() {
                reader.done = true;
                reader.queue.clear();
                reader.current = None;
            }
            Some((item, reader))
        }))
    }
}

/// The state of [`ObjectService::read_parts`].
struct PartsReader {
    svc: ObjectService,
    id: String,
    /// The offset the next part must start at.
    next: u64,
    queue: VecDeque<crate::meta::UploadPart>,
    current: Option<ObjectStream>,
    /// No more parts in the store (or an error ended the stream).
    done: bool,
}

impl PartsReader {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(stream) = self.current.as_mut() {
                match stream.next().await {
                    Some(item) => return Some(item),
                    None => self.current = None,
                }
            }
            if self.queue.is_empty() && !self.done {
                match self.svc.meta.upload_parts(&self.id, self.next, PARTS_STEP).await {
                    Ok(page) if page.is_empty() => self.done = true,
                    Ok(page) => self.queue.extend(page),
                    Err(e) => return Some(Err(std::io::Error::other(e))),
                }
            }
            let part = self.queue.pop_front()?;
            if part.offset != self.next {
                let gap = format!("upload {}: a part starts at {}, expected {}", self.id, part.offset, self.next);
                return Some(Err(std::io::Error::other(gap)));
            }
            self.next = part.offset + part.size;
            let content = match self.svc.meta.content(&part.hash).await {
                Ok(Some(content)) => content,
                Ok(None) => return Some(Err(std::io::Error::other(format!("part content {} missing", part.hash)))),
                Err(e) => return Some(Err(std::io::Error::other(e))),
            };
            match self.svc.read(&content, ByteRange { start: 0, end: part.size.min(content.size) }).await {
                Ok(stream) => self.current = Some(stream),
                Err(e) => return Some(Err(std::io::Error::other(e))),
            }
        }
    }
}
