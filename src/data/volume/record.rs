//! The on-disk format of a volume: a file header, then self-checking records, one
//! after another, each starting at a multiple of 8 bytes.
//!
//! ```text
//! volume header (16 bytes): "CAIRNVL1" | volume id u32 | 0u32
//!
//! record header (64 bytes):
//!    0  magic "CVR1"          4
//!    4  kind u8               1   1 = shard, 2 = tombstone
//!    5  k u8, m u8            2   the shard's redundancy policy (0, 0: unknown)
//!    7  0u8                   1
//!    8  content hash          32  SHA-256 of the whole object
//!   40  shard index u32       4
//!   44  payload length u32    4   0 for a tombstone
//!   48  target volume u32     4   tombstone: where the record it kills lives
//!   52  target offset u32     4   (0 for a shard)
//!   56  crc32c(bytes 0..56)   4   the header's own checksum
//!   60  crc32c(payload)       4
//! payload (length bytes), then zero padding to the next multiple of 8
//! ```
//! All integers little-endian. The header checksum lets a scan trust a record's
//! length before it reads the payload; the payload checksum catches a torn or rotted
//! payload. A record is valid only when both hold, so a read never serves a torn
//! record, and a scan after a crash finds where the valid log ends.
//!
//! Pure functions on byte slices; [`super`] does the I/O.

use crate::content::{ContentHash, Policy, ShardIndex};

/// Magic of a volume file.
pub const VOLUME_MAGIC: &[u8; 8] = b"CAIRNVL1";
/// Length of the volume header; the first record starts here.
pub const VOLUME_HEADER_LEN: u64 = 16;
/// Magic of a record.
const RECORD_MAGIC: &[u8; 4] = b"CVR1";
/// Length of a record header.
pub const HEADER_LEN: usize = 64;
/// Records start at multiples of this.
pub const ALIGN: u64 = 8;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A shard's bytes.
    Shard,
    /// The shard record at (`volume`, `offset`) is deleted.
    Tombstone {
        /// The volume of the record it kills.
        volume: u32,
        /// Its offset there.
        offset: u32,
    },
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Shard or tombstone.
    pub kind: Kind,
    /// The content the shard belongs to.
    pub hash: ContentHash,
    /// Its index.
    pub shard: ShardIndex,
    /// The policy it was cut under (`None`: the writer did not say).
    pub policy: Option<Policy>,
    /// Payload bytes.
    pub len: u32,
    /// The payload's CRC-32C.
    pub payload_crc: u32,
}

impl Header {
    /// Bytes this record takes in its volume, padding included.
    pub fn record_len(&self) -> u64 {
        record_len(self.len)
    }
}

/// Bytes a record with `len` payload bytes takes in its volume, padding included.
pub fn record_len(len: u32) -> u64 {
    (HEADER_LEN as u64 + u64::from(len)).next_multiple_of(ALIGN)
}

/// Why bytes are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No record magic: not a record start (or zeros past the end of the log).
    #[error("no record here")]
    NoMagic,
    /// The header's checksum fails: torn or rotted.
    #[error("record header checksum fails")]
    HeaderChecksum,
    /// The header checksums but says something impossible.
    #[error("record header is implausible: {0}")]
    Implausible(&'static str),
    /// The payload's checksum fails: torn or rotted.
    #[error("record payload checksum fails")]
    PayloadChecksum,
}

/// The volume file header for volume `id`.
pub fn volume_header(id: u32) -> [u8; VOLUME_HEADER_LEN as usize] {
    let mut h = [0u8; VOLUME_HEADER_LEN as usize];
    h[..8].copy_from_slice(VOLUME_MAGIC);
    h[8..12].copy_from_slice(&id.to_le_bytes());
    h
}

/// The volume id a volume header names, if it is one.
pub fn parse_volume_header(h: &[u8]) -> Option<u32> {
    if h.len() < VOLUME_HEADER_LEN as usize || &h[..8] != VOLUME_MAGIC || h[12..16] != [0; 4] {
        return None;
    }
    Some(u32::from_le_bytes(h[8..12].try_into().ok()?))
}

/// Appends a shard record to `out` (which must end at a multiple of [`ALIGN`]).
pub fn encode_shard(out: &mut Vec<u8>, hash: &ContentHash, shard: ShardIndex, policy: Option<Policy>, data: &[u8]) {
    let len = u32::try_from(data.len()).expect("shard records are far below 4 GiB");
    encode(out, 1, hash, shard, policy, len, (0, 0), crc32c::crc32c(data));
    out.extend_from_slice(data);
    pad(out);
}

/// Appends an already-encoded record (a compaction copy) to `out`.
pub fn append_raw(out: &mut Vec<u8>, record: &[u8]) {
    out.extend_from_slice(record);
    pad(out);
}

/// Appends a tombstone for the record of `hash.shard` at (`volume`, `offset`).
pub fn encode_tombstone(out: &mut Vec<u8>, hash: &ContentHash, shard: ShardIndex, volume: u32, offset: u32) {
    encode(out, 2, hash, shard, None, 0, (volume, offset), crc32c::crc32c(&[]));
}

#[allow(clippy::too_many_arguments)]
fn encode(
    out: &mut Vec<u8>,
    kind: u8,
    hash: &ContentHash,
    shard: ShardIndex,
    policy: Option<Policy>,
    len: u32,
    target: (u32, u32),
    payload_crc: u32,
) {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(RECORD_MAGIC);
    h[4] = kind;
    if let Some(p) = policy {
        h[5] = p.k;
        h[6] = p.m;
    }
    h[8..40].copy_from_slice(hash.as_bytes());
    h[40..44].copy_from_slice(&shard.to_le_bytes());
    h[44..48].copy_from_slice(&len.to_le_bytes());
    h[48..52].copy_from_slice(&target.0.to_le_bytes());
    h[52..56].copy_from_slice(&target.1.to_le_bytes());
    let crc = crc32c::crc32c(&h[..56]);
    h[56..60].copy_from_slice(&crc.to_le_bytes());
    h[60..64].copy_from_slice(&payload_crc.to_le_bytes());
    out.extend_from_slice(&h);
}

fn pad(out: &mut Vec<u8>) {
    let padded = (out.len() as u64).next_multiple_of(ALIGN) as usize;
    out.resize(padded, 0);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes and checks a record header (`h` holds at least [`HEADER_LEN`] bytes).
/// The payload is checked separately, by [`check_payload`].
pub fn decode_header(h: &[u8]) -> Result<Header, RecordError> {
    if h.len() < HEADER_LEN || &h[..4] != RECORD_MAGIC {
        return Err(RecordError::NoMagic);
    }
    if u32_at(h, 56) != crc32c::crc32c(&h[..56]) {
        return Err(RecordError::HeaderChecksum);
    }
    let policy = match (h[5], h[6]) {
        (0, 0) => None,
        (k, m) if k > 0 && k as usize + m as usize <= 32 => Some(Policy { k, m }),
        _ => return Err(RecordError::Implausible("redundancy policy")),
    };
    let len = u32_at(h, 44);
    let kind = match h[4] {
        1 => Kind::Shard,
        2 if len == 0 => Kind::Tombstone { volume: u32_at(h, 48), offset: u32_at(h, 52) },
        _ => return Err(RecordError::Implausible("kind")),
    };
    let hash: [u8; 32] = h[8..40].try_into().map_err(|_| RecordError::Implausible("hash"))?;
    Ok(Header {
        kind,
        hash: ContentHash::from_bytes(hash),
        shard: u32_at(h, 40),
        policy,
        len,
        payload_crc: u32_at(h, 60),
    })
}

/// Checks `payload` against the header's checksum.
pub fn check_payload(header: &Header, payload: &[u8]) -> Result<(), RecordError> {
    if payload.len() != header.len as usize || crc32c::crc32c(payload) != header.payload_crc {
        return Err(RecordError::PayloadChecksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Option<Policy> = Some(Policy { k: 1, m: 2 });

    #[test]
    fn a_shard_record_round_trips_and_is_aligned() {
        let hash = ContentHash::of(b"r");
        let mut out = Vec::new();
        encode_shard(&mut out, &hash, 2, P, b"hello");
        assert_eq!(out.len() as u64, record_len(5));
        assert_eq!(out.len() % 8, 0);
        let h = decode_header(&out).unwrap();
        assert_eq!((h.kind, h.hash, h.shard, h.policy, h.len), (Kind::Shard, hash, 2, P, 5));
        check_payload(&h, &out[HEADER_LEN..HEADER_LEN + 5]).unwrap();
    }

    #[test]
    fn a_tombstone_names_its_target() {
        let hash = ContentHash::of(b"t");
        let mut out = Vec::new();
        encode_tombstone(&mut out, &hash, 1, 7, 4096);
        let h = decode_header(&out).unwrap();
        assert_eq!(h.kind, Kind::Tombstone { volume: 7, offset: 4096 });
        assert_eq!(h.record_len(), HEADER_LEN as u64);
        check_payload(&h, &[]).unwrap();
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let hash = ContentHash::of(b"f");
        let mut out = Vec::new();
        encode_shard(&mut out, &hash, 0, P, b"payload!");
        for byte in 0..HEADER_LEN + 8 {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                let ok = decode_header(&bad).and_then(|h| check_payload(&h, &bad[HEADER_LEN..HEADER_LEN + 8]));
                assert!(ok.is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
    }

    #[test]
    fn volume_headers_name_their_volume() {
        assert_eq!(parse_volume_header(&volume_header(42)), Some(42));
        assert_eq!(parse_volume_header(&[0; 16]), None);
        assert_eq!(parse_volume_header(b"CAIRNVL1"), None);
    }
}
