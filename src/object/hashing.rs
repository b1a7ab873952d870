//! SHA-256 on a thread of its own, for the write path (the hash of a streamed body)
//! and the read path (the end-to-end check of a full read).
//!
//! Hashing is the costliest step per byte (about 2 GB/s per core with SHA-NI), and
//! the async runtime must not spend its threads on it: [`PipedHasher`] feeds chunks
//! through a bounded queue to a blocking thread, so hashing runs beside the coding
//! and the network I/O instead of before them, and a slow hasher holds its feeder
//! back instead of buffering without bound.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::content::ContentHash;

/// Chunks queued for the hashing thread.
const HASH_QUEUE: usize = 32;

/// Bodies up to this size are hashed inline: a thread hop costs more than it saves.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// A running SHA-256 computed on a blocking thread.
pub struct PipedHasher {
    chunks: mpsc::Sender<Bytes>,
    hasher: JoinHandle<Sha256>,
}

/// The hashing thread died (it panicked or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the hashing thread failed: {0}")]
pub struct HasherFailed(String);

impl PipedHasher {
    /// Starts hashing, continuing from `state` (what was hashed inline so far).
    pub fn continue_from(state: Sha256) -> PipedHasher {
        let (chunks, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut state = state;
            while let Some(chunk) = rx.blocking_recv() {
                state.update(&chunk);
            }
            state
        });
        PipedHasher { chunks, hasher }
    }

    /// Starts hashing from nothing.
    pub fn new() -> PipedHasher {
        PipedHasher::continue_from(Sha256::new())
    }

    /// Queues `chunk`; waits while the queue is full.
    pub async fn update(&mut self, chunk: Bytes) {
        // A closed queue means the thread died; `finish` reports it.
        let _ = self.chunks.send(chunk).await;
    }

    /// The hash of everything queued.
    pub async fn finish(self) -> Result<ContentHash, HasherFailed> {
        drop(self.chunks);
        let state = self.hasher.await.map_err(|e| HasherFailed(e.to_string()))?;
        Ok(ContentHash::from_bytes(state.finalize().into()))
    }
}

impl Default for PipedHasher {
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
