//! The stored form of compressed content: the zstd seekable format (facebook/zstd,
//! `contrib/seekable_format`). Pure functions and types, no I/O: the write path
//! compresses frames with [`FrameCompressor`] and appends the [`SeekTable`]; the read
//! path parses the table from the stored stream's tail, maps a range of original
//! bytes to the frames that hold it ([`SeekTable::span`]) and decodes only those
//! ([`decode_frame`]).
//!
//! The stream is a sequence of independent, standard zstd frames, each of a fixed
//! number of original bytes (the last one shorter), each with its content size and
//! its content checksum (XXH64) set, followed by one skippable frame (magic
//! `0x184D2A5E`) holding the seek table: per frame its compressed and decompressed
//! size (u32 little-endian, no per-entry checksum: the frames carry their own), then
//! the footer (frame count u32, descriptor byte, magic `0x8F92EAB1`). Any zstd
//! decoder reads the whole stream as the original bytes (skippable frames are
//! skipped), which is what lets the API server hand it out as `Content-Encoding:
//! zstd` unchanged. The per-frame checksum flag is off in the table because the
//! frames themselves are checked when decoded.
//!
//! Everything read from disk is checked before it is used: a table whose magic,
//! descriptor, length or sums do not fit the content is a [`SeekableError`], never a
//! panic, and a frame never decodes to more than its table entry allows (at most
//! [`MAX_FRAME_LEN`]), so a corrupt table cannot make the reader allocate without
//! bound.

use crate::range::ByteRange;

/// The skippable-frame magic number the seekable format uses for its seek table.
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// The magic number that ends a seek table (and so the stored stream).
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Length of the seek table footer: frame count, descriptor, magic.
pub const FOOTER_LEN: usize = 9;
/// Length of a skippable frame's header: magic and frame size.
const SKIPPABLE_HEADER_LEN: usize = 8;
/// Length of a seek table entry without checksum (as we write them).
const ENTRY_LEN: usize = 8;
/// Length of a seek table entry with the optional checksum (which other writers
/// may set; we read and ignore it).
const ENTRY_LEN_CHECKED: usize = 12;
/// The descriptor bit that says entries carry a checksum.
const CHECKSUM_FLAG: u8 = 0x80;
/// The descriptor bits the format reserves (must be zero).
const RESERVED_BITS: u8 = 0x7C;
/// The largest frame (in original bytes) this reader accepts, and so the largest
/// `--compression-frame`: bounds what one decode may allocate.
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// Errors of compressing, or of reading back, the seekable format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeekableError {
    /// libzstd refused to compress (it only does on an invalid parameter).
    #[error("zstd compression failed: {reason}")]
    Compress {
        /// libzstd's error text.
        reason: String,
    },
    /// The stored stream is too short for the seek table it must end with.
    #[error("stored stream of {len} bytes is too short for its seek table ({need} bytes)")]
    Truncated {
        /// Stored length.
        len: u64,
        /// Bytes the table needs.
        need: u64,
    },
    /// The footer or the skippable header does not carry the format's magic number.
    #[error("seek table: magic {found:#010x}, expected {expected:#010x}")]
    BadMagic {
        /// What was found.
        found: u32,
        /// What the format says.
        expected: u32,
    },
    /// The descriptor sets reserved bits, or the skippable frame's size does not
    /// match the frame count.
    #[error("seek table: malformed ({what})")]
    Malformed {
        /// What does not fit.
        what: &'static str,
    },
    /// A frame's decompressed size is 0 (for a frame other than the only one) or
    /// above [`MAX_FRAME_LEN`].
    #[error("seek table: frame {frame} claims {len} original bytes")]
    FrameSize {
        /// The frame.
        frame: usize,
        /// Its claimed length.
        len: u64,
    },
    /// The table's sums do not match the content it is recorded for.
    #[error("seek table covers {original} original and {stored} stored bytes, the content has {want_original} and {want_stored}")]
    Mismatch {
        /// Original bytes the table covers.
        original: u64,
        /// Stored bytes of its frames plus the table itself.
        stored: u64,
        /// The content's size.
        want_original: u64,
        /// The content's stored size.
        want_stored: u64,
    },
    /// A frame does not decode to the bytes its entry says (corrupt, or its
    /// checksum fails).
    #[error("frame {frame} does not decode: {reason}")]
    Frame {
        /// The frame.
        frame: usize,
        /// libzstd's error text, or the length mismatch.
        reason: String,
    },
}

/// A zstd compression context set up for seekable frames (content size and
/// checksum in every frame header). One per compressing thread; reused across
/// frames, so its tables are allocated once.
pub struct FrameCompressor {
    inner: zstd::bulk::Compressor<'static>,
}

impl FrameCompressor {
    /// A compressor at zstd level `level`.
    pub fn new(level: i32) -> Result<FrameCompressor, SeekableError> {
        let fail = |e: std::io::Error| SeekableError::Compress { reason: e.to_string() };
        let mut inner = zstd::bulk::Compressor::new(level).map_err(fail)?;
        inner.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true)).map_err(fail)?;
        inner.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true)).map_err(fail)?;
        Ok(FrameCompressor { inner })
    }

    /// One standard zstd frame holding `original`.
    pub fn compress(&mut self, original: &[u8]) -> Result<Vec<u8>, SeekableError> {
        self.inner.compress(original).map_err(|e| SeekableError::Compress { reason: e.to_string() })
    }
}

/// Whether compressing `original` bytes into `compressed` bytes pays: it must save at
/// least an eighth. Below that the CPU of decoding every read buys too little disk
/// and network (and data that compresses this badly is already compressed).
pub fn pays(original: usize, compressed: usize) -> bool {
    compressed <= original - original / 8
}

/// One frame as the seek table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameEntry {
    /// Bytes of the frame in the stored stream.
    pub stored: u32,
    /// Original bytes it decodes to.
    pub original: u32,
}

/// The frames of a seekable stream, with their offsets in the original and in the
/// stored bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeekTable {
    entries: Vec<FrameEntry>,
    /// Original offset of the end of frame i.
    original_ends: Vec<u64>,
    /// Stored offset of the end of frame i.
    stored_ends: Vec<u64>,
}

/// The frames that hold a range of original bytes: what a range read fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpan {
    /// First frame.
    pub first: usize,
    /// Last frame (inclusive).
    pub last: usize,
    /// The stored bytes of frames `first..=last`.
    pub stored: ByteRange,
    /// The original offset where frame `first` starts.
    pub original_start: u64,
}

impl SeekTable {
    /// Appends a frame.
    pub fn push(&mut self, entry: FrameEntry) {
        let original = self.original_len() + u64::from(entry.original);
        let stored = self.frames_len() + u64::from(entry.stored);
        self.entries.push(entry);
        self.original_ends.push(original);
        self.stored_ends.push(stored);
    }

    /// The frames.
    pub fn entries(&self) -> &[FrameEntry] {
        &self.entries
    }

    /// Original bytes the frames decode to.
    pub fn original_len(&self) -> u64 {
        self.original_ends.last().copied().unwrap_or(0)
    }

    /// Stored bytes of the frames (without the table).
    pub fn frames_len(&self) -> u64 {
        self.stored_ends.last().copied().unwrap_or(0)
    }

    /// Bytes of the table as [`SeekTable::encode`] writes it.
    pub fn encoded_len(&self) -> usize {
        SKIPPABLE_HEADER_LEN + ENTRY_LEN * self.entries.len() + FOOTER_LEN
    }

    /// Bytes this table holds in memory (for a cache bounded in bytes).
    pub fn memory(&self) -> usize {
        std::mem::size_of::<SeekTable>() + self.entries.len() * (std::mem::size_of::<FrameEntry>() + 16)
    }

    /// The table as the skippable frame that ends the stored stream.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        let body = (self.encoded_len() - SKIPPABLE_HEADER_LEN) as u32;
        out.extend_from_slice(&body.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.stored.to_le_bytes());
            out.extend_from_slice(&e.original.to_le_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.push(0);
        out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        out
    }

    /// The whole table's length, from the stream's last [`FOOTER_LEN`] bytes: how
    /// much of the tail to read next.
    pub fn table_len(footer: &[u8]) -> Result<usize, SeekableError> {
        let footer: &[u8; FOOTER_LEN] =
            footer.try_into().map_err(|_| SeekableError::Malformed { what: "footer length" })?;
        let magic = u32::from_le_bytes([footer[5], footer[6], footer[7], footer[8]]);
        if magic != SEEKABLE_MAGIC {
            return Err(SeekableError::BadMagic { found: magic, expected: SEEKABLE_MAGIC });
        }
        let descriptor = footer[4];
        if descriptor & RESERVED_BITS != 0 {
            return Err(SeekableError::Malformed { what: "reserved descriptor bits set" });
        }
        let frames = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]) as usize;
        let entry = if descriptor & CHECKSUM_FLAG != 0 { ENTRY_LEN_CHECKED } else { ENTRY_LEN };
        frames
            .checked_mul(entry)
            .and_then(|n| n.checked_add(SKIPPABLE_HEADER_LEN + FOOTER_LEN))
            .ok_or(SeekableError::Malformed { what: "frame count" })
    }

    /// Parses a whole table (the skippable frame, footer included).
    pub fn parse(table: &[u8]) -> Result<SeekTable, SeekableError> {
        if table.len() < SKIPPABLE_HEADER_LEN + FOOTER_LEN {
            return Err(SeekableError::Malformed { what: "shorter than a footer" });
        }
        let footer = &table[table.len() - FOOTER_LEN..];
        if SeekTable::table_len(footer)? != table.len() {
            return Err(SeekableError::Malformed { what: "length does not match the frame count" });
        }
        let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let magic = le(&table[0..4]);
        if magic != SKIPPABLE_MAGIC {
            return Err(SeekableError::BadMagic { found: magic, expected: SKIPPABLE_MAGIC });
        }
        if le(&table[4..8]) as usize != table.len() - SKIPPABLE_HEADER_LEN {
            return Err(SeekableError::Malformed { what: "skippable frame size" });
        }
        let frames = le(&footer[0..4]) as usize;
        let entry = if footer[4] & CHECKSUM_FLAG != 0 { ENTRY_LEN_CHECKED } else { ENTRY_LEN };
        let body = &table[SKIPPABLE_HEADER_LEN..table.len() - FOOTER_LEN];
        let mut out = SeekTable::default();
        for (i, e) in body.chunks_exact(entry).enumerate() {
            let entry = FrameEntry { stored: le(&e[0..4]), original: le(&e[4..8]) };
            if entry.original as usize > MAX_FRAME_LEN || (entry.original == 0 && frames > 1) {
                return Err(SeekableError::FrameSize { frame: i, len: u64::from(entry.original) });
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Checks that the table describes content of `size` original bytes stored in
    /// `stored_len` bytes (its frames, then itself).
    pub fn check(&self, size: u64, stored_len: u64) -> Result<(), SeekableError> {
        let stored = self.frames_len() + self.encoded_len() as u64;
        if self.original_len() != size || stored != stored_len {
            return Err(SeekableError::Mismatch {
                original: self.original_len(),
                stored,
                want_original: size,
                want_stored: stored_len,
            });
        }
        Ok(())
    }

    /// The stored bytes of frame `i` and the original bytes it decodes to.
    pub fn frame(&self, i: usize) -> (ByteRange, ByteRange) {
        let stored_start = if i == 0 { 0 } else { self.stored_ends[i - 1] };
        let original_start = if i == 0 { 0 } else { self.original_ends[i - 1] };
        (
            ByteRange { start: stored_start, end: self.stored_ends[i] },
            ByteRange { start: original_start, end: self.original_ends[i] },
        )
    }

    /// The frames holding the non-empty `range` of original bytes (within
    /// [`SeekTable::original_len`]).
    pub fn span(&self, range: ByteRange) -> FrameSpan {
        // The first frame whose end lies beyond the offset holds it.
        let find = |offset: u64| self.original_ends.partition_point(|end| *end <= offset).min(self.entries.len() - 1);
        let first = find(range.start);
        let last = find(range.end.saturating_sub(1)).max(first);
        let (stored_first, original_first) = self.frame(first);
        let (stored_last, _) = self.frame(last);
        FrameSpan {
            first,
            last,
            stored: ByteRange { start: stored_first.start, end: stored_last.end },
            original_start: original_first.start,
        }
    }
}

/// Decodes frame `index` (its stored bytes) into exactly `original` bytes; anything
/// else is an error (a frame that would decode to more is cut off by the output
/// buffer's size, never allocated).
pub fn decode_frame(index: usize, stored: &[u8], original: usize) -> Result<Vec<u8>, SeekableError> {
    let decoded = zstd::bulk::decompress(stored, original)
        .map_err(|e| SeekableError::Frame { frame: index, reason: e.to_string() })?;
    if decoded.len() != original {
        return Err(SeekableError::Frame {
            frame: index,
            reason: format!("{} bytes decoded, the table says {original}", decoded.len()),
        });
    }
    Ok(decoded)
}

/// Compresses `data` whole into the seekable format in frames of `frame_len`
/// original bytes, or `None` when its first frame does not [`pays`] (nothing more is
/// compressed then).
pub fn compress_whole(
    data: &[u8],
    frame_len: usize,
    compressor: &mut FrameCompressor,
) -> Result<Option<Vec<u8>>, SeekableError> {
    let mut out = Vec::new();
    let mut table = SeekTable::default();
    for (i, frame) in data.chunks(frame_len.max(1)).enumerate() {
        let packed = compressor.compress(frame)?;
        if i == 0 && !pays(frame.len(), packed.len()) {
            return Ok(None);
        }
        table.push(FrameEntry { stored: packed.len() as u32, original: frame.len() as u32 });
        out.extend_from_slice(&packed);
    }
    out.extend_from_slice(&table.encode());
    Ok(Some(out))
}

/// Decodes a whole seekable stream (stored bytes, table included) whose original
/// length is `size`: for objects read whole (below the small-object threshold).
pub fn decode_whole(stored: &[u8], size: u64) -> Result<Vec<u8>, SeekableError> {
    let tail = stored
        .len()
        .checked_sub(FOOTER_LEN)
        .ok_or(SeekableError::Truncated { len: stored.len() as u64, need: FOOTER_LEN as u64 })?;
    let table_len = SeekTable::table_len(&stored[tail..])?;
    let start = stored
        .len()
        .checked_sub(table_len)
        .ok_or(SeekableError::Truncated { len: stored.len() as u64, need: table_len as u64 })?;
    let table = SeekTable::parse(&stored[start..])?;
    table.check(size, stored.len() as u64)?;
    let mut out = Vec::with_capacity(size as usize);
    for i in 0..table.entries().len() {
        let (s, o) = table.frame(i);
        out.extend_from_slice(&decode_frame(i, &stored[s.start as usize..s.end as usize], o.len() as usize)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Text-like bytes that compress, deterministic.
    fn text(len: usize) -> Vec<u8> {
        let words = ["cairn ", "object ", "store ", "shard ", "stripe ", "frame\n", "seek ", "table "];
        let mut out = Vec::with_capacity(len + 8);
        let mut x: u32 = 12345;
        while out.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            out.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
        }
        out.truncate(len);
        out
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        use rand::{RngCore, SeedableRng};
        let mut out = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
        out
    }

    fn stored_and_table(data: &[u8], frame: usize) -> (Vec<u8>, SeekTable) {
        let mut c = FrameCompressor::new(1).unwrap();
        let stored = compress_whole(data, frame, &mut c).unwrap().expect("text pays");
        let tail = &stored[stored.len() - FOOTER_LEN..];
        let len = SeekTable::table_len(tail).unwrap();
        let table = SeekTable::parse(&stored[stored.len() - len..]).unwrap();
        table.check(data.len() as u64, stored.len() as u64).unwrap();
        (stored, table)
    }

    /// Decodes `range` of the original through the table, as the read path does.
    fn read_range(stored: &[u8], table: &SeekTable, range: ByteRange) -> Vec<u8> {
        let span = table.span(range);
        let mut out = Vec::new();
        let mut at = span.original_start;
        for i in span.first..=span.last {
            let (s, o) = table.frame(i);
            assert!(s.start >= span.stored.start && s.end <= span.stored.end);
            let frame = decode_frame(i, &stored[s.start as usize..s.end as usize], o.len() as usize).unwrap();
            let from = range.start.max(at) - at;
            let to = range.end.min(at + frame.len() as u64) - at;
            out.extend_from_slice(&frame[from as usize..to as usize]);
            at += frame.len() as u64;
        }
        out
    }

    #[test]
    fn a_stored_stream_is_a_standard_zstd_stream() {
        let data = text(1_000_000);
        let (stored, table) = stored_and_table(&data, 64 * 1024);
        assert_eq!(table.entries().len(), 16);
        assert!(stored.len() < data.len() / 3, "{} of {}", stored.len(), data.len());
        // A plain decoder, knowing nothing of seek tables, reads the original.
        assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), data);
        assert_eq!(decode_whole(&stored, data.len() as u64).unwrap(), data);
    }

    #[test]
    fn ranges_across_frame_boundaries_decode_to_slices() {
        let data = text(300_000);
        let frame = 65_536;
        let (stored, table) = stored_and_table(&data, frame);
        let f = frame as u64;
        let n = data.len() as u64;
        for (a, b) in [(0, 1), (0, n), (f - 1, f + 1), (f, f + 1), (f - 1, f), (n - 1, n), (10, 3 * f + 7), (2 * f, n)]
        {
            let range = ByteRange { start: a, end: b };
            assert_eq!(read_range(&stored, &table, range), &data[a as usize..b as usize], "{a}..{b}");
        }
        let span = table.span(ByteRange { start: f, end: f + 1 });
        assert_eq!((span.first, span.last, span.original_start), (1, 1, f));
    }

    #[test]
    fn incompressible_data_does_not_pay_and_is_left_alone() {
        let mut c = FrameCompressor::new(3).unwrap();
        assert_eq!(compress_whole(&random(200_000, 7), 65_536, &mut c).unwrap(), None);
        assert!(pays(1000, 875) && !pays(1000, 876));
    }

    #[test]
    fn a_corrupt_seek_table_is_a_clean_error() {
        let data = text(200_000);
        let (stored, _) = stored_and_table(&data, 65_536);
        let size = data.len() as u64;
        // Every single-byte change of the table (or the last frame's end) is caught
        // by the table's checks, the frame checksums, or the length check: none panics.
        let table_len = SeekTable::table_len(&stored[stored.len() - FOOTER_LEN..]).unwrap();
        for pos in stored.len() - table_len - 4..stored.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = stored.clone();
                bad[pos] ^= flip;
                if let Ok(out) = decode_whole(&bad, size) {
                    assert_eq!(out, data, "byte {pos} ^ {flip:#x} decoded to other bytes");
                }
            }
        }
        assert!(matches!(decode_whole(&stored[..5], size), Err(SeekableError::Truncated { .. })));
        assert!(matches!(decode_whole(&stored, size + 1), Err(SeekableError::Mismatch { .. })));
        assert!(SeekTable::parse(&[0u8; 3]).is_err());
        let mut huge = SeekTable::default();
        huge.push(FrameEntry { stored: 10, original: u32::MAX });
        huge.push(FrameEntry { stored: 10, original: 1 });
        assert!(matches!(SeekTable::parse(&huge.encode()), Err(SeekableError::FrameSize { frame: 0, .. })));
        // A footer claiming 2^32 - 1 frames is refused by length, not allocated.
        let mut footer = [0xFFu8; FOOTER_LEN];
        footer[4] = 0;
        footer[5..].copy_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        let mut lying = stored.clone();
        let end = lying.len();
        lying[end - FOOTER_LEN..].copy_from_slice(&footer);
        assert!(decode_whole(&lying, size).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn any_range_of_any_size_reads_back(len in 2_000usize..200_000, frame in 1_000usize..70_000, a in 0.0f64..1.0, b in 0.0f64..1.0) {
            let data = text(len);
            let (stored, table) = stored_and_table(&data, frame);
            prop_assert_eq!(table.entries().len(), len.div_ceil(frame));
            let (x, y) = ((a * len as f64) as u64, (b * len as f64) as u64);
            let range = ByteRange { start: x.min(y), end: (x.max(y) + 1).min(len as u64) };
            prop_assert_eq!(read_range(&stored, &table, range), &data[range.start as usize..range.end as usize]);
            prop_assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), data);
        }
    }
}
