//! The on-disk format of one shard file: a header, then the shard's bytes cut into
//! blocks, each followed by its CRC-32C, so that a read verifies exactly the blocks
//! it serves without re-hashing the whole file.
//!
//! ```text
//! header (32 bytes): "CAIRNSH1" | block_size u32 | k u8 | m u8 | 0u16 | data_len u64 | crc32c(previous 24) u32 | 0u32
//! block i:           data (block_size bytes, the last one shorter) | crc32c(data) u32
//! ```
//! All integers little-endian. `k`/`m` are the redundancy policy the shard was cut
//! under, part of its identity together with `data_len`: shard 1 of some content
//! under 4+2 and under 1+2 are different bytes. `k = 0` means "unknown", which is what
//! files written before the policy was recorded say, so they still open.
//!
//! Pure synchronous code; the data server runs it on blocking threads. CRC-32C
//! (hardware-accelerated through the `crc32c` crate) catches bit rot and torn blocks;
//! it is not meant to resist anyone who can write to the disk. A well-formed shard
//! holding the wrong content (a bug, a stale replica, a hostile peer) passes every
//! block check; the API server's end-to-end SHA-256 check of full-object reads is
//! what catches that.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use super::fs::{FileSystem, RealFs};
use crate::content::Policy;

/// Bytes of shard data per checksummed block.
pub const BLOCK_SIZE: u32 = 64 * 1024;
const MAGIC: &[u8; 8] = b"CAIRNSH1";
/// Length of the file header.
pub const HEADER_LEN: u64 = 32;
const CRC_LEN: u64 = 4;

/// What can be wrong with a shard file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardFileError {
    /// The header is not a cairn shard header, or its checksum fails.
    #[error("shard header is corrupt: {0}")]
    BadHeader(&'static str),
    /// The file's length does not match what its header promises (truncated or
    /// extended).
    #[error("shard file is {actual} bytes, its header says {expected}")]
    BadLength {
        /// The length the header implies.
        expected: u64,
        /// The file's real length.
        actual: u64,
    },
    /// Block `block`'s data does not match its checksum.
    #[error("shard block {block} fails its checksum")]
    BlockCorrupt {
        /// The block's index.
        block: u64,
    },
    /// A read or write failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// File length for a shard of `data_len` bytes; `None` when that is past `u64`,
/// which only a corrupt or forged header can ask for.
pub fn file_len(data_len: u64, block_size: u32) -> Option<u64> {
    let bs = block_size as u64;
    let blocks = data_len.div_ceil(bs);
    HEADER_LEN.checked_add(data_len)?.checked_add(blocks.checked_mul(CRC_LEN)?)
}

/// What a shard file's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    block_size: u32,
    policy: Option<Policy>,
    data_len: u64,
}

fn encode_header(header: &Header) -> [u8; HEADER_LEN as usize] {
    let Header { block_size, policy, data_len } = *header;
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&block_size.to_le_bytes());
    if let Some(p) = policy {
        h[12] = p.k;
        h[13] = p.m;
    }
    h[16..24].copy_from_slice(&data_len.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn decode_header(h: &[u8; HEADER_LEN as usize]) -> Result<Header, ShardFileError> {
    if &h[..8] != MAGIC {
        return Err(ShardFileError::BadHeader("wrong magic"));
    }
    let crc = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&h[..24]) {
        return Err(ShardFileError::BadHeader("header checksum fails"));
    }
    let block_size = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if block_size == 0 || block_size > 64 * 1024 * 1024 {
        return Err(ShardFileError::BadHeader("implausible block size"));
    }
    let policy = match (h[12], h[13]) {
        (0, 0) => None,
        (k, m) if k > 0 && k as usize + m as usize <= 32 => Some(Policy { k, m }),
        _ => return Err(ShardFileError::BadHeader("implausible redundancy policy")),
    };
    if h[14..16] != [0, 0] {
        return Err(ShardFileError::BadHeader("reserved header bytes are not zero"));
    }
    let data_len = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    Ok(Header { block_size, policy, data_len })
}

/// Writes a new shard file block by block. Nothing is durable until
/// [`finish`](ShardWriter::finish) returns.
pub struct ShardWriter {
    fs: Arc<dyn FileSystem>,
    /// Unbuffered: each block goes out in one write straight from `block`, so the
    /// bytes are not copied once more into a buffer of the writer's own.
    out: File,
    block: Vec<u8>,
    block_size: usize,
    data_len: u64,
    policy: Option<Policy>,
}

impl ShardWriter {
    /// Creates `path`, which must not exist yet, for a shard cut under `policy`
    /// (`None`: not known, as with clients that do not say).
    pub fn create(path: &Path, policy: Option<Policy>) -> io::Result<ShardWriter> {
        ShardWriter::create_on(Arc::new(RealFs), path, policy)
    }

    /// Like [`create`](ShardWriter::create), doing every write and sync through `fs`.
    pub fn create_on(fs: Arc<dyn FileSystem>, path: &Path, policy: Option<Policy>) -> io::Result<ShardWriter> {
        let mut out = fs.create_new(path)?;
        // Placeholder header: a crash before `finish` leaves a file whose header fails.
        fs.write(&mut out, &[0u8; HEADER_LEN as usize])?;
        Ok(ShardWriter {
            fs,
            out,
            block: Vec::with_capacity(BLOCK_SIZE as usize + CRC_LEN as usize),
            block_size: BLOCK_SIZE as usize,
            data_len: 0,
            policy,
        })
    }

    /// Appends shard bytes.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.data_len += data.len() as u64;
        while !data.is_empty() {
            let room = self.block_size - self.block.len();
            let take = room.min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.block.len() == self.block_size {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let crc = crc32c::crc32c(&self.block);
        self.block.extend_from_slice(&crc.to_le_bytes());
        self.fs.write(&mut self.out, &self.block)?;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block and the real header, and fsyncs the file. Returns the
    /// shard's data length.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_block()?;
        let header = Header { block_size: self.block_size as u32, policy: self.policy, data_len: self.data_len };
        let mut file = self.out;
        file.seek(SeekFrom::Start(0))?;
        self.fs.write(&mut file, &encode_header(&header))?;
        self.fs.sync_file(&file)?;
        Ok(self.data_len)
    }
}

/// An open, header-verified shard file.
pub struct ShardReader {
    file: File,
    block_size: u32,
    data_len: u64,
    policy: Option<Policy>,
}

impl ShardReader {
    /// Opens `path` and checks its header and length.
    pub fn open(path: &Path) -> Result<ShardReader, ShardFileError> {
        let mut file = File::open(path)?;
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut h).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ShardFileError::BadHeader("file shorter than its header"),
            _ => ShardFileError::Io(e),
        })?;
        let Header { block_size, policy, data_len } = decode_header(&h)?;
        let expected = file_len(data_len, block_size).ok_or(ShardFileError::BadHeader("implausible data length"))?;
        let actual = file.metadata()?.len();
        if actual != expected {
            return Err(ShardFileError::BadLength { expected, actual });
        }
        Ok(ShardReader { file, block_size, data_len, policy })
    }

    /// The shard's data length in bytes.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The redundancy policy the shard was cut under; `None` for files that do not
    /// say (written before the policy was recorded, or by a client that did not say).
    pub fn policy(&self) -> Option<Policy> {
        self.policy
    }

    /// Reads and verifies block `index`, returning its data.
    pub fn read_block(&mut self, index: u64) -> Result<Vec<u8>, ShardFileError> {
        let bs = self.block_size as u64;
        let start = index * bs;
        if start >= self.data_len {
            return Ok(Vec::new());
        }
        let len = bs.min(self.data_len - start) as usize;
        self.file.seek(SeekFrom::Start(HEADER_LEN + index * (bs + CRC_LEN)))?;
        let mut buf = vec![0u8; len + CRC_LEN as usize];
        self.file.read_exact(&mut buf)?;
        let crc = u32::from_le_bytes(buf[len..].try_into().expect("4 bytes"));
        buf.truncate(len);
        if crc32c::crc32c(&buf) != crc {
            return Err(ShardFileError::BlockCorrupt { block: index });
        }
        Ok(buf)
    }

    /// Calls `sink` with the verified bytes of `[start, end)` of the shard data, one
    /// block (or part of one) at a time, stopping at the first error — a corrupt
    /// block is never passed on. `sink` returns `false` to stop early.
    pub fn read_range(
        &mut self,
        start: u64,
        end: u64,
        mut sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<(), ShardFileError> {
        let end = end.min(self.data_len);
        let bs = self.block_size as u64;
        let mut pos = start;
        while pos < end {
            let index = pos / bs;
            let mut block = self.read_block(index)?;
            let block_start = index * bs;
            let from = (pos - block_start) as usize;
            let to = ((end - block_start) as usize).min(block.len());
            if from > 0 {
                block.drain(..from);
            }
            block.truncate(to - from);
            pos = block_start + to as u64;
            if !sink(block) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_shard(dir: &Path, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join("s");
        let mut w = ShardWriter::create(&path, None).unwrap();
        for chunk in data.chunks(7001) {
            w.write(chunk).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        path
    }

    fn read_all(path: &Path, start: u64, end: u64) -> Result<Vec<u8>, ShardFileError> {
        let mut r = ShardReader::open(path)?;
        let mut out = Vec::new();
        r.read_range(start, end, |b| {
            out.extend_from_slice(&b);
            true
        })?;
        Ok(out)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let bs = BLOCK_SIZE as usize;
        for len in [0, 1, bs - 1, bs, bs + 1, 3 * bs + 17] {
            let data = pattern(len);
            let path = write_shard(dir.path(), &data);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), file_len(len as u64, BLOCK_SIZE).unwrap());
            assert_eq!(read_all(&path, 0, u64::MAX).unwrap(), data, "len {len}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn ranges_cross_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 * BLOCK_SIZE as usize + 5);
        let path = write_shard(dir.path(), &data);
        let bs = BLOCK_SIZE as u64;
        for (a, b) in [(0, 1), (bs - 1, bs + 1), (5, 2 * bs + 3), (3 * bs, 3 * bs + 5), (10, 10)] {
            assert_eq!(read_all(&path, a, b).unwrap(), &data[a as usize..b as usize]);
        }
    }

    #[test]
    fn a_flipped_byte_is_reported_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(2 * BLOCK_SIZE as usize);
        let path = write_shard(dir.path(), &data);
        let mut raw = std::fs::read(&path).unwrap();
        let in_block_1 = (HEADER_LEN + BLOCK_SIZE as u64 + CRC_LEN + 100) as usize;
        raw[in_block_1] ^= 0x40;
        std::fs::write(&path, raw).unwrap();
        // Block 0 is still fine on its own.
        assert_eq!(read_all(&path, 0, 10).unwrap(), &data[..10]);
        let mut served = Vec::new();
        let err = ShardReader::open(&path)
            .unwrap()
            .read_range(0, u64::MAX, |b| {
                served.extend_from_slice(&b);
                true
            })
            .unwrap_err();
        assert!(matches!(err, ShardFileError::BlockCorrupt { block: 1 }), "{err}");
        assert_eq!(served.len(), BLOCK_SIZE as usize, "only the good block was passed on");
    }

    #[test]
    fn truncated_and_unfinished_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_shard(dir.path(), &pattern(1000));
        let raw = std::fs::read(&path).unwrap();
        std::fs::write(&path, &raw[..raw.len() - 1]).unwrap();
        assert!(matches!(ShardReader::open(&path), Err(ShardFileError::BadLength { .. })));
        std::fs::write(&path, &raw[..10]).unwrap();
        assert!(matches!(ShardReader::open(&path), Err(ShardFileError::BadHeader(_))));
        // A writer that never finished leaves a zeroed header.
        let unfinished = dir.path().join("u");
        let mut w = ShardWriter::create(&unfinished, None).unwrap();
        w.write(&pattern(10)).unwrap();
        drop(w);
        assert!(matches!(ShardReader::open(&unfinished), Err(ShardFileError::BadHeader(_))));
    }

    #[test]
    fn a_header_whose_length_overflows_is_refused() {
        // Found by tests/fuzz_parsers.rs: a checksummed header claiming a data length
        // near 2^64 overflowed the expected file length (a panic in debug builds, a
        // wrapped comparison in release).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o");
        let header = Header { block_size: 1, policy: None, data_len: u64::MAX };
        std::fs::write(&path, encode_header(&header)).unwrap();
        assert!(matches!(ShardReader::open(&path), Err(ShardFileError::BadHeader(_))));
        assert_eq!(file_len(u64::MAX - HEADER_LEN, u32::MAX), None);
        assert_eq!(file_len(0, 1), Some(HEADER_LEN));
    }

    #[test]
    fn the_policy_is_kept_in_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let policy = Policy { k: 4, m: 2 };
        let mut w = ShardWriter::create(&path, Some(policy)).unwrap();
        w.write(&pattern(100)).unwrap();
        w.finish().unwrap();
        let r = ShardReader::open(&path).unwrap();
        assert_eq!((r.policy(), r.data_len()), (Some(policy), 100));
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[12..16], &[4, 2, 0, 0]);
    }

    #[test]
    fn a_header_written_before_policies_opens_as_unknown() {
        // The layout of the first format, built by hand: 12..16 are zero.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        let data = pattern(10);
        let mut raw = Vec::new();
        raw.extend_from_slice(b"CAIRNSH1");
        raw.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
        raw.extend_from_slice(&[0; 4]);
        raw.extend_from_slice(&10u64.to_le_bytes());
        raw.extend_from_slice(&crc32c::crc32c(&raw[..24]).to_le_bytes());
        raw.extend_from_slice(&[0; 4]);
        raw.extend_from_slice(&data);
        raw.extend_from_slice(&crc32c::crc32c(&data).to_le_bytes());
        std::fs::write(&path, &raw).unwrap();
        let r = ShardReader::open(&path).unwrap();
        assert_eq!((r.policy(), r.data_len()), (None, 10));
        assert_eq!(read_all(&path, 0, 10).unwrap(), data);
    }

    #[test]
    fn an_implausible_policy_is_a_bad_header() {
        for (k, m) in [(0u8, 2u8), (30, 3)] {
            let mut h = encode_header(&Header { block_size: BLOCK_SIZE, policy: None, data_len: 0 });
            h[12] = k;
            h[13] = m;
            let crc = crc32c::crc32c(&h[..24]);
            h[24..28].copy_from_slice(&crc.to_le_bytes());
            assert!(matches!(decode_header(&h), Err(ShardFileError::BadHeader(_))), "{k}+{m}");
        }
    }
}
