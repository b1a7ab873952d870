//! Erasure coding: how an object is cut into stripes and each stripe into k data
//! blocks and m parity blocks, one per shard. Pure functions, no I/O; the write path
//! feeds stripes in, the read path and repair take blocks out.
//!
//! Layout: stripe `s` covers object bytes `[s·k·B, (s+1)·k·B)`; its k data blocks are
//! consecutive B-byte slices of it, and shard `i` stores block `i` of every stripe,
//! back to back, so shard `i`'s block of stripe `s` starts at byte `s·B` of the shard.
//! The last stripe may be short: its blocks are `ceil(rest / k)` bytes rounded up to
//! an even number (the Reed-Solomon library works on 2-byte symbols), the data
//! zero-padded. With k = 1 (replication) every shard is a full copy and there is no
//! padding, so a shard is the object itself.
//!
//! Parity comes from `reed-solomon-simd` (O(n log n) Leopard-style codec with AVX2,
//! SSSE3 and NEON kernels, any k + m up to 65535): chosen over `reed-solomon-erasure`
//! for speed at k + m ≤ 32 and for having no C dependency.
//!
//! [`seekable`] is the other pure transform of stored bytes: compressed content is
//! stored as zstd seekable frames, and it is that stream the stripes above code.

pub mod seekable;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::content::Policy;

/// Bytes of one shard per stripe with k > 1 (the "stripe unit"): a stripe of a 4+2
/// object holds 4 × 64 KiB = 256 KiB of data. Part of the on-disk layout: changing it
/// needs recording it per object.
pub const EC_BLOCK: u64 = 64 * 1024;

/// Bytes per stripe with k = 1, where the stripe is only a unit of transfer (every
/// shard is the object), so any size is compatible with stored data.
pub const REPLICA_BLOCK: u64 = 256 * 1024;

/// Errors of the codec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer than k blocks of a stripe are available.
    #[error("stripe {stripe}: {have} of the {need} blocks needed are available")]
    TooFewBlocks {
        /// The stripe.
        stripe: u64,
        /// Blocks available.
        have: usize,
        /// Blocks needed (k).
        need: usize,
    },
    /// A block has the wrong length for its stripe.
    #[error("stripe {stripe}: shard {shard} block is {got} bytes, expected {want}")]
    BadBlock {
        /// The stripe.
        stripe: u64,
        /// The shard.
        shard: usize,
        /// Its length.
        got: usize,
        /// The expected length.
        want: usize,
    },
    /// The Reed-Solomon library refused.
    #[error("reed-solomon: {0}")]
    Rs(String),
}

/// The stripe geometry of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The redundancy.
    pub policy: Policy,
    /// The object's size.
    pub size: u64,
    /// Bytes per shard per full stripe.
    pub block: u64,
}

impl Layout {
    /// The layout of a `size`-byte object under `policy`.
    pub fn new(policy: Policy, size: u64) -> Layout {
        let block = if policy.k == 1 { REPLICA_BLOCK } else { EC_BLOCK };
        Layout { policy, size, block }
    }

    fn k(&self) -> u64 {
        self.policy.k as u64
    }

    /// Object bytes per full stripe.
    pub fn stripe_data(&self) -> u64 {
        self.k() * self.block
    }

    /// Number of stripes (0 for an empty object).
    pub fn stripes(&self) -> u64 {
        self.size.div_ceil(self.stripe_data())
    }

    /// Object bytes `[start, end)` stripe `s` covers.
    pub fn stripe_span(&self, s: u64) -> (u64, u64) {
        let start = s * self.stripe_data();
        (start, (start + self.stripe_data()).min(self.size))
    }

    /// The stripe holding object byte `pos`.
    pub fn stripe_of(&self, pos: u64) -> u64 {
        pos / self.stripe_data()
    }

    /// Bytes each shard holds for stripe `s`.
    pub fn block_len(&self, s: u64) -> u64 {
        let (start, end) = self.stripe_span(s);
        let data = end - start;
        if data == self.stripe_data() {
            self.block
        } else if self.policy.k == 1 {
            data
        } else {
            data.div_ceil(self.k()).next_multiple_of(2)
        }
    }

    /// Where stripe `s`'s block starts within every shard.
    pub fn shard_offset(&self, s: u64) -> u64 {
        s * self.block
    }

    /// Length of every shard of the object.
    pub fn shard_len(&self) -> u64 {
        match self.stripes() {
            0 => 0,
            n => self.shard_offset(n - 1) + self.block_len(n - 1),
        }
    }
}

/// Encodes stripes into k + m blocks, reusing its working space between stripes.
pub struct StripeEncoder {
    layout: Layout,
    rs: Option<ReedSolomonEncoder>,
}

impl StripeEncoder {
    /// An encoder for objects laid out as `layout` (its size is ignored: a streamed
    /// object's size is known only at the end).
    pub fn new(layout: Layout) -> StripeEncoder {
        StripeEncoder { layout, rs: None }
    }

    /// The k + m blocks of one stripe whose data is `data` (a full stripe, or the
    /// last, shorter one). Data blocks are slices of `data` where no padding is
    /// needed; parity blocks are new.
    pub fn encode(&mut self, data: Bytes) -> Result<Vec<Bytes>, CodecError> {
        let policy = self.layout.policy;
        let (k, m) = (policy.k as usize, policy.m as usize);
        if k == 1 {
            return Ok(vec![data; 1 + m]);
        }
        let full = self.layout.stripe_data() as usize;
        let block = if data.len() == full {
            self.layout.block as usize
        } else {
            data.len().div_ceil(k).next_multiple_of(2).max(2)
        };
        let data = if data.len() == block * k {
            data
        } else {
            let mut padded = BytesMut::zeroed(block * k);
            padded[..data.len()].copy_from_slice(&data);
            padded.freeze()
        };
        let mut blocks: Vec<Bytes> = (0..k).map(|i| data.slice(i * block..(i + 1) * block)).collect();
        if m == 0 {
            return Ok(blocks);
        }
        let rs = match &mut self.rs {
            Some(rs) => {
                rs.reset(k, m, block).map_err(|e| CodecError::Rs(e.to_string()))?;
                rs
            }
            None => self.rs.insert(ReedSolomonEncoder::new(k, m, block).map_err(|e| CodecError::Rs(e.to_string()))?),
        };
        for b in &blocks {
            rs.add_original_shard(b).map_err(|e| CodecError::Rs(e.to_string()))?;
        }
        let result = rs.encode().map_err(|e| CodecError::Rs(e.to_string()))?;
        blocks.extend(result.recovery_iter().map(Bytes::copy_from_slice));
        Ok(blocks)
    }
}

/// Rebuilds the data of stripe `s` from any k of its blocks. `blocks[i]` is shard
/// `i`'s block, or `None` when unavailable. Returns the stripe's data bytes (without
/// padding). Needs no decoding when all k data blocks are present.
pub fn decode_stripe(layout: &Layout, s: u64, blocks: &[Option<Bytes>]) -> Result<Bytes, CodecError> {
    let k = layout.policy.k as usize;
    let want = layout.block_len(s) as usize;
    let (start, end) = layout.stripe_span(s);
    let data_len = (end - start) as usize;
    for (i, b) in blocks.iter().enumerate() {
        if let Some(b) = b {
            if b.len() != want {
                return Err(CodecError::BadBlock { stripe: s, shard: i, got: b.len(), want });
            }
        }
    }
    if k == 1 {
        return blocks.iter().flatten().next().cloned().ok_or(CodecError::TooFewBlocks { stripe: s, have: 0, need: 1 });
    }
    let parts = reconstruct(layout.policy, s, blocks)?;
    Ok(join_data(parts.iter(), data_len))
}

/// The k data blocks from any k of the k + m blocks in `blocks` (all of one
/// length; `None` where unavailable). The blocks may be several stripes' blocks
/// laid end to end: Reed-Solomon works column by column, so one call rebuilds them
/// all, which matters because each call has a fixed cost (~180 µs, see
/// BENCH-codec.md) whatever the length. `stripe` only labels errors.
pub fn reconstruct(policy: Policy, stripe: u64, blocks: &[Option<Bytes>]) -> Result<Vec<Bytes>, CodecError> {
    let (k, m) = (policy.k as usize, policy.m as usize);
    let have = blocks.iter().take(k + m).filter(|b| b.is_some()).count();
    if blocks.iter().take(k).all(Option::is_some) {
        return Ok(blocks.iter().take(k).flatten().cloned().collect());
    }
    if have < k {
        return Err(CodecError::TooFewBlocks { stripe, have, need: k });
    }
    let len = blocks.iter().flatten().next().map_or(0, |b| b.len());
    let mut rs = ReedSolomonDecoder::new(k, m, len).map_err(|e| CodecError::Rs(e.to_string()))?;
    for (i, b) in blocks.iter().enumerate().take(k + m) {
        if let Some(b) = b {
            if i < k { rs.add_original_shard(i, b) } else { rs.add_recovery_shard(i - k, b) }
                .map_err(|e| CodecError::Rs(e.to_string()))?;
        }
    }
    let result = rs.decode().map_err(|e| CodecError::Rs(e.to_string()))?;
    let restored: HashMap<usize, Bytes> =
        result.restored_original_iter().map(|(i, b)| (i, Bytes::copy_from_slice(b))).collect();
    let mut parts = Vec::with_capacity(k);
    for (i, b) in blocks.iter().enumerate().take(k) {
        match b.as_ref().or_else(|| restored.get(&i)) {
            Some(b) => parts.push(b.clone()),
            None => return Err(CodecError::TooFewBlocks { stripe, have, need: k }),
        }
    }
    Ok(parts)
}

/// Concatenates data blocks and cuts the padding off.
fn join_data<'a>(blocks: impl Iterator<Item = &'a Bytes>, data_len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(data_len);
    for b in blocks {
        let room = data_len - out.len();
        out.extend_from_slice(&b[..b.len().min(room)]);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(s: &str) -> Policy {
        s.parse().unwrap()
    }

    fn pattern(len: usize, seed: u8) -> Bytes {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<_>>().into()
    }

    /// Encodes `data` stripe by stripe, as the write path does.
    fn encode_all(layout: &Layout, data: &Bytes) -> Vec<Vec<u8>> {
        let n = layout.policy.shards();
        let mut shards = vec![Vec::new(); n];
        let mut enc = StripeEncoder::new(*layout);
        for s in 0..layout.stripes() {
            let (a, b) = layout.stripe_span(s);
            for (i, block) in enc.encode(data.slice(a as usize..b as usize)).unwrap().into_iter().enumerate() {
                shards[i].extend_from_slice(&block);
            }
        }
        shards
    }

    fn decode_all(layout: &Layout, shards: &[Option<Vec<u8>>]) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        for s in 0..layout.stripes() {
            let (off, len) = (layout.shard_offset(s) as usize, layout.block_len(s) as usize);
            let blocks: Vec<Option<Bytes>> =
                shards.iter().map(|sh| sh.as_ref().map(|v| Bytes::copy_from_slice(&v[off..off + len]))).collect();
            out.extend_from_slice(&decode_stripe(layout, s, &blocks)?);
        }
        Ok(out)
    }

    #[test]
    fn layout_arithmetic() {
        let l = Layout::new(policy("4+2"), 4 * EC_BLOCK * 2 + 10);
        assert_eq!(l.stripes(), 3);
        assert_eq!(l.block_len(0), EC_BLOCK);
        assert_eq!(l.block_len(2), 4, "10 bytes over 4 shards: 3 each, rounded up to even");
        assert_eq!(l.shard_len(), 2 * EC_BLOCK + 4);
        let r = Layout::new(policy("1+2"), 1000);
        assert_eq!((r.stripes(), r.shard_len()), (1, 1000), "a replica is the object, unpadded");
        assert_eq!(Layout::new(policy("4+2"), 0).shard_len(), 0);
        assert_eq!(Layout::new(policy("4+2"), 1).shard_len(), 2);
    }

    #[test]
    fn all_data_blocks_need_no_decoding_and_lost_ones_are_rebuilt() {
        let l = Layout::new(policy("4+2"), 700_001);
        let data = pattern(700_001, 3);
        let shards = encode_all(&l, &data);
        assert!(shards.iter().all(|s| s.len() as u64 == l.shard_len()));
        let all: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        assert_eq!(decode_all(&l, &all).unwrap(), data);
        for lost in [[0, 1], [2, 5], [4, 5], [0, 3]] {
            let mut some = all.clone();
            for i in lost {
                some[i] = None;
            }
            assert_eq!(decode_all(&l, &some).unwrap(), data, "lost {lost:?}");
        }
        let mut three = all.clone();
        for i in [0, 1, 2] {
            three[i] = None;
        }
        assert!(matches!(decode_all(&l, &three), Err(CodecError::TooFewBlocks { have: 3, need: 4, .. })));
    }

    #[test]
    fn several_stripes_rebuild_in_one_call() {
        let l = Layout::new(policy("4+2"), 4 * 4 * EC_BLOCK);
        let data = pattern(l.size as usize, 9);
        let shards = encode_all(&l, &data);
        // Shards 0 and 2 lost; the four stripes' blocks of each other shard end to end.
        let blocks: Vec<Option<Bytes>> =
            shards.iter().enumerate().map(|(i, sh)| (i != 0 && i != 2).then(|| Bytes::copy_from_slice(sh))).collect();
        let parts = reconstruct(l.policy, 0, &blocks).unwrap();
        assert_eq!(parts.len(), 4);
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.as_ref(), &shards[i][..], "data shard {i}");
        }
    }

    fn sizes() -> impl Strategy<Value = usize> {
        let stripe = (4 * EC_BLOCK) as usize;
        prop_oneof![
            Just(0usize),
            Just(1),
            Just(stripe - 1),
            Just(stripe),
            Just(stripe + 1),
            Just(2 * stripe - 1),
            0usize..3 * stripe,
            (8usize << 20)..(9usize << 20),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn decode_of_encode_is_identity_with_up_to_m_lost(
            size in sizes(),
            which in prop::sample::select(vec!["4+2", "2+1", "3+3", "1+2", "6+0"]),
            lost_seed in any::<u64>(),
            seed in any::<u8>(),
        ) {
            let p = policy(which);
            let l = Layout::new(p, size as u64);
            let data = pattern(size, seed);
            let shards = encode_all(&l, &data);
            let n = p.shards();
            let mut order: Vec<usize> = (0..n).collect();
            let mut x = lost_seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let lose = (lost_seed % (p.m as u64 + 1)) as usize;
            let mut some: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
            for &i in order.iter().take(lose) {
                some[i] = None;
            }
            prop_assert_eq!(decode_all(&l, &some).unwrap(), data.to_vec());
        }
    }
}
