//! What the bench writes: random bytes generated once, streamed as many times as
//! needed, with a few bytes per object that make every object's content different.
//!
//! Random (not zero) bytes keep a compressing layer from making writes look cheaper
//! than they are. The per-object tag matters because cairn stores content by its
//! hash: objects with the same bytes would share one set of shards, and every PUT
//! after the first would skip the durable commit a real write pays for.
//!
//! Memory stays bounded whatever the object size: one block of at most [`BLOCK`]
//! bytes is shared by every request (slices of a [`Bytes`] are reference counted,
//! not copied), and a request body is a stream of slices of it.

use std::convert::Infallible;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// The largest block kept in memory; larger objects repeat it.
pub const BLOCK: usize = 1 << 20;
/// Bytes at the start of every object that make it unique.
pub const TAG_LEN: usize = 16;

/// The body of every object a run writes, generated once.
#[derive(Clone, Debug)]
pub struct Payload {
    block: Bytes,
    size: u64,
}

impl Payload {
    /// Random bytes from `seed` for objects of `size` bytes; holds
    /// `min(size, BLOCK)` bytes.
    pub fn new(size: u64, seed: u64) -> Payload {
        let len = usize::try_from(size).map_or(BLOCK, |s| s.min(BLOCK));
        let mut block = vec![0u8; len];
        SmallRng::seed_from_u64(seed).fill_bytes(&mut block);
        Payload { block: Bytes::from(block), size }
    }

    /// The object size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The same bytes for objects of `size` bytes: shares the block, copies nothing.
    /// Objects longer than the block repeat it, as always.
    pub fn resized(&self, size: u64) -> Payload {
        Payload { block: self.block.clone(), size }
    }

    /// The chunks of the object tagged `tag`: its first [`TAG_LEN`] bytes are `tag`
    /// (big-endian, cut short for smaller objects), every other byte at offset `i`
    /// is the block's byte `i % BLOCK`. The chunks add up to exactly [`size`](Self::size) bytes.
    pub fn chunks(&self, tag: u128) -> Chunks {
        Chunks { block: self.block.clone(), size: self.size, tag: tag.to_be_bytes(), pos: 0 }
    }

    /// A request body streaming [`chunks`](Self::chunks)`(tag)`. The caller sets
    /// `Content-Length` to [`size`](Self::size), since a stream has no length of its own.
    pub fn body(&self, tag: u128) -> reqwest::Body {
        reqwest::Body::wrap_stream(futures_util::stream::iter(self.chunks(tag).map(Ok::<Bytes, Infallible>)))
    }
}

/// The chunks of one object's body; see [`Payload::chunks`].
#[derive(Clone, Debug)]
pub struct Chunks {
    block: Bytes,
    size: u64,
    tag: [u8; TAG_LEN],
    pos: u64,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.pos >= self.size {
            return None;
        }
        if self.pos == 0 {
            // size > 0, so the block is not empty either.
            let len = usize::try_from(self.size).map_or(TAG_LEN, |s| s.min(TAG_LEN));
            self.pos = len as u64;
            return Some(Bytes::copy_from_slice(&self.tag[..len]));
        }
        let block_len = self.block.len() as u64;
        let offset = self.pos % block_len;
        let len = (block_len - offset).min(self.size - self.pos);
        self.pos += len;
        // Both are below BLOCK, so they fit a usize.
        Some(self.block.slice(offset as usize..(offset + len) as usize))
    }
}
