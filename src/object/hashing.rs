//! SHA-256 on a thread of its own, for the write path (the hash of a streamed body)
//! and the read path (the end-to-end check of a full read).
//!
//! [`PipedHasher::of_stored`] hashes the original bytes of a stored stream: for
//! compressed content the thread decodes (streaming, bounded by the frame size)
//! before hashing, so repair and verification check the same SHA-256 as a read.
//!
//! Hashing is the costliest step per byte (about 2 GB/s per core with SHA-NI), and
//! the async runtime must not spend its threads on it: [`PipedHasher`] feeds chunks
//! through a queue to a blocking thread, so hashing runs beside the coding and the
//! network I/O instead of before them. The queue is bounded in bytes
//! ([`HASH_BUDGET`]), not in chunks: a slow hasher (a loaded machine) holds its
//! feeder back instead of letting 64 streams each queue megabytes.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::content::{ContentHash, Encoding};

/// Bytes queued for one hashing thread at most: two stripes of 4+2.
pub const HASH_BUDGET: usize = 512 * 1024;

/// Bodies up to this size are hashed inline: a thread hop costs more than it saves.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// A running digest `D` computed on a blocking thread: SHA-256 for the content
/// address ([`PipedHasher`]), MD5 for S3's entity tags.
pub struct PipedDigest<D> {
    chunks: mpsc::UnboundedSender<(Bytes, u32)>,
    budget: Arc<Semaphore>,
    hasher: JoinHandle<D>,
}

/// A running SHA-256 computed on a blocking thread.
pub type PipedHasher = PipedDigest<Sha256>;

impl<D: Digest + Send + 'static> PipedDigest<D> {
    /// Starts a digest on a blocking thread, continuing from `state`.
    pub fn start(state: D) -> PipedDigest<D> {
        let (chunks, mut rx) = mpsc::unbounded_channel::<(Bytes, u32)>();
        let budget = Arc::new(Semaphore::new(HASH_BUDGET));
        let returned = budget.clone();
        let hasher = tokio::task::spawn_blocking(move || {
            let mut state = state;
            while let Some((chunk, permits)) = rx.blocking_recv() {
                state.update(&chunk);
                returned.add_permits(permits as usize);
            }
            state
        });
        PipedDigest { chunks, budget, hasher }
    }

    /// Queues `chunk`; waits while [`HASH_BUDGET`] bytes are queued already.
    pub async fn update(&mut self, chunk: Bytes) {
        // A chunk larger than the whole budget waits for an empty queue.
        let permits = chunk.len().min(HASH_BUDGET) as u32;
        match self.budget.clone().acquire_many_owned(permits).await {
            Ok(permit) => permit.forget(),
            Err(_) => return, // never closed; `finish` reports a dead thread
        }
        // A closed queue means the thread died; `finish` reports it.
        let _ = self.chunks.send((chunk, permits));
    }

    /// The digest state after everything queued.
    pub async fn finish_state(self) -> Result<D, HasherFailed> {
        drop(self.chunks);
        self.hasher.await.map_err(|e| HasherFailed(e.to_string()))
    }
}

/// The hashing thread died (it panicked or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the hashing thread failed: {0}")]
pub struct HasherFailed(String);

impl PipedDigest<Sha256> {
    /// Starts hashing, continuing from `state` (what was hashed inline so far).
    pub fn continue_from(state: Sha256) -> PipedHasher {
        PipedDigest::start(state)
    }

    /// Starts hashing from nothing.
    pub fn new() -> PipedHasher {
        PipedHasher::continue_from(Sha256::new())
    }

    /// Starts hashing the original bytes of a stream stored as `encoding`: what is
    /// queued is the stored stream, what is hashed is what it decodes to. A stream
    /// that does not decode hashes to what it decoded to so far followed by a marker
    /// no original can end with at that point, so it never matches the content.
    pub fn of_stored(encoding: Encoding) -> PipedHasher {
        if encoding == Encoding::Identity {
            return PipedHasher::new();
        }
        let (chunks, mut rx) = mpsc::unbounded_channel::<(Bytes, u32)>();
        let budget = Arc::new(Semaphore::new(HASH_BUDGET));
        let returned = budget.clone();
        let hasher = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut decoder = match zstd::stream::write::Decoder::new(HashWriter(Sha256::new())) {
                Ok(d) => d,
                Err(_) => return undecodable(Sha256::new()),
            };
            let mut broken = false;
            while let Some((chunk, permits)) = rx.blocking_recv() {
                if !broken && decoder.write_all(&chunk).is_err() {
                    broken = true;
                }
                returned.add_permits(permits as usize);
            }
            if broken || decoder.flush().is_err() {
                return undecodable(decoder.into_inner().0);
            }
            decoder.into_inner().0
        });
        PipedDigest { chunks, budget, hasher }
    }

    /// The hash of everything queued.
    pub async fn finish(self) -> Result<ContentHash, HasherFailed> {
        let state = self.finish_state().await?;
        Ok(ContentHash::from_bytes(state.finalize().into()))
    }
}

/// Feeds decoded bytes into a running SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The state of a hash over a stream that failed to decode: marked so that it
/// cannot equal the hash of the original.
fn undecodable(mut state: Sha256) -> Sha256 {
    tracing::warn!("stored stream does not decode; its hash cannot match");
    state.update(b"\xffcairn: undecodable stored stream");
    state
}

impl Default for PipedDigest<Sha256> {
    fn default() -> Self {
        PipedHasher::new()
    }
}

/// The SHA-256 of `data`: inline when small, on a blocking thread otherwise.
pub async fn hash_of(data: Bytes) -> Result<ContentHash, HasherFailed> {
    if data.len() <= INLINE_LIMIT {
        return Ok(ContentHash::of(&data));
    }
    tokio::task::spawn_blocking(move || ContentHash::of(&data)).await.map_err(|e| HasherFailed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn piped_hash_equals_the_plain_hash() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut inline = Sha256::new();
        inline.update(&data[..1000]);
        let mut piped = PipedHasher::continue_from(inline);
        for chunk in data[1000..].chunks(7000) {
            piped.update(Bytes::copy_from_slice(chunk)).await;
        }
        assert_eq!(piped.finish().await.unwrap(), ContentHash::of(&data));
        assert_eq!(hash_of(Bytes::from(data.clone())).await.unwrap(), ContentHash::of(&data));
        assert_eq!(hash_of(Bytes::from_static(b"abc")).await.unwrap(), ContentHash::of(b"abc"));
    }
}
