//! A SHA-256 whose running state can be written down and picked up again: the
//! hash of a resumable (tus) upload, computed one PATCH at a time, possibly by a
//! different API server each time.
//!
//! `sha2::Sha256` does not expose its state, so this keeps its own: the eight-word
//! midstate, the number of bytes hashed and the (< 64-byte) tail not yet
//! compressed. Whole blocks go through `sha2::compress256` (the same SHA-NI/AVX
//! code `Sha256` uses); the padding of FIPS 180-4 §5.1.1 is written here. The
//! state is serialised into `uploads.hasher` in the same metadata transaction as
//! each append, so the hash always covers exactly the bytes the offset
//! acknowledges. Used by [`crate::object::resumable`]; a unit proptest checks it
//! against `sha2::Sha256` for random splits and round trips.

use sha2::digest::generic_array::GenericArray;

use crate::content::ContentHash;

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// Bytes of a serialised state before its tail: eight words and a length.
const FIXED: usize = 32 + 8;

/// A running SHA-256 that can be serialised between updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, tail included.
    len: u64,
    /// Bytes not yet compressed, always fewer than 64.
    tail: Vec<u8>,
}

/// A serialised state that cannot be one: wrong length or a tail that does not
/// agree with the byte count.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a resumable SHA-256 state of {0} bytes is malformed")]
pub struct BadHashState(pub usize);

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256::new()
    }
}

impl ResumableSha256 {
    /// The state before any byte.
    pub fn new() -> ResumableSha256 {
        ResumableSha256 { state: H0, len: 0, tail: Vec::with_capacity(64) }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (64 - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < 64 {
                return;
            }
            let block = GenericArray::clone_from_slice(&self.tail);
            sha2::compress256(&mut self.state, &[block]);
            self.tail.clear();
        }
        let whole = data.len() / 64 * 64;
        // Block by block, borrowed in place: no copy of the data.
        for block in data[..whole].chunks_exact(64) {
            sha2::compress256(&mut self.state, std::slice::from_ref(GenericArray::from_slice(block)));
        }
        self.tail.extend_from_slice(&data[whole..]);
    }

    /// The hash of everything hashed so far (the state is left as it is).
    pub fn finish(&self) -> ContentHash {
        let mut state = self.state;
        let mut last = self.tail.clone();
        last.push(0x80);
        while last.len() % 64 != 56 {
            last.push(0);
        }
        last.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        let blocks: Vec<GenericArray<u8, _>> = last.chunks_exact(64).map(GenericArray::clone_from_slice).collect();
        sha2::compress256(&mut state, &blocks);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        ContentHash::from_bytes(out)
    }

    /// The state as bytes: eight big-endian words, the byte count (big-endian
    /// u64), the tail.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + self.tail.len());
        for word in self.state {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.tail);
        out
    }

    /// Reads a state written by [`to_bytes`](ResumableSha256::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<ResumableSha256, BadHashState> {
        let bad = || BadHashState(bytes.len());
        if bytes.len() < FIXED || bytes.len() >= FIXED + 64 {
            return Err(bad());
        }
        let mut state = [0u32; 8];
        for (word, chunk) in state.iter_mut().zip(bytes[..32].chunks_exact(4)) {
            *word = u32::from_be_bytes(chunk.try_into().map_err(|_| bad())?);
        }
        let len = u64::from_be_bytes(bytes[32..FIXED].try_into().map_err(|_| bad())?);
        let tail = bytes[FIXED..].to_vec();
        if (len % 64) as usize != tail.len() {
            return Err(bad());
        }
        Ok(ResumableSha256 { state, len, tail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn reference(data: &[u8]) -> ContentHash {
        ContentHash::from_bytes(Sha256::digest(data).into())
    }

    #[test]
    fn empty_and_known_vectors() {
        let empty = ResumableSha256::new().finish();
        assert_eq!(empty.to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let mut h = ResumableSha256::new();
        h.update(b"abc");
        assert_eq!(h.finish().to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn malformed_states_are_refused() {
        assert_eq!(ResumableSha256::from_bytes(&[0; 3]), Err(BadHashState(3)));
        let mut bytes = ResumableSha256::new().to_bytes();
        bytes.push(7); // a tail byte the count does not account for
        assert!(ResumableSha256::from_bytes(&bytes).is_err());
        assert!(ResumableSha256::from_bytes(&[0; FIXED + 64]).is_err());
    }

    proptest! {
        /// Any split of any input, with a serialise/deserialise round trip between
        /// the pieces, hashes like one `Sha256` over the whole.
        #[test]
        fn random_splits_hash_like_sha256(data in proptest::collection::vec(any::<u8>(), 0..1000),
                                          cuts in proptest::collection::vec(0usize..1000, 0..8)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut h = ResumableSha256::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                h.update(&data[at..cut]);
                at = cut;
                h = ResumableSha256::from_bytes(&h.to_bytes()).unwrap();
                prop_assert_eq!(h.finish(), reference(&data[..at]));
            }
            prop_assert_eq!(h.len(), data.len() as u64);
        }
    }
}
