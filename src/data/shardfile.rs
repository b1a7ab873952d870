//! The on-disk format of one shard file: a header, then the shard's bytes cut into
//! blocks, each followed by its CRC-32C, so that a read verifies exactly the blocks
//! it serves without re-hashing the whole file.
//!
//! ```text
//! header (32 bytes): "CAIRNSH1" | block_size u32 | 0u32 | data_len u64 | crc32c(previous 24) u32 | 0u32
//! block i:           data (block_size bytes, the last one shorter) | crc32c(data) u32
//! ```
//! All integers little-endian. Pure synchronous code over `std::fs`; the data server
//! runs it on blocking threads. CRC-32C (hardware-accelerated through the `crc32c`
//! crate) detects bit rot and torn blocks; it is not meant to resist an attacker
//! with write access to the disk, which SHA-256 content addressing covers end to
//! end.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

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

/// File length for a shard of `data_len` bytes.
pub fn file_len(data_len: u64, block_size: u32) -> u64 {
    let bs = block_size as u64;
    let blocks = data_len.div_ceil(bs);
    HEADER_LEN + data_len + blocks * CRC_LEN
}

fn encode_header(block_size: u32, data_len: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&block_size.to_le_bytes());
    h[16..24].copy_from_slice(&data_len.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn decode_header(h: &[u8; HEADER_LEN as usize]) -> Result<(u32, u64), ShardFileError> {
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
    let data_len = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    Ok((block_size, data_len))
}

/// Writes a new shard file block by block. Nothing is durable until
/// [`finish`](ShardWriter::finish) returns.
pub struct ShardWriter {
    /// Unbuffered: each block goes out in one write straight from `block`, so the
    /// bytes are not copied once more into a buffer of the writer's own.
    out: File,
    block: Vec<u8>,
    block_size: usize,
    data_len: u64,
}

impl ShardWriter {
    /// Creates `path`, which must not exist yet.
    pub fn create(path: &Path) -> io::Result<ShardWriter> {
        let file = File::options().write(true).create_new(true).open(path)?;
        let mut out = file;
        // Placeholder header: a crash before `finish` leaves a file whose header fails.
        out.write_all(&[0u8; HEADER_LEN as usize])?;
        Ok(ShardWriter {
            out,
            block: Vec::with_capacity(BLOCK_SIZE as usize + CRC_LEN as usize),
            block_size: BLOCK_SIZE as usize,
            data_len: 0,
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
        self.out.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block and the real header, and fsyncs the file. Returns the
    /// shard's data length.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_block()?;
        let mut file = self.out;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&encode_header(self.block_size as u32, self.data_len))?;
        file.sync_all()?;
        Ok(self.data_len)
    }
}

/// An open, header-verified shard file.
pub struct ShardReader {
    file: File,
    block_size: u32,
    data_len: u64,
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
        let (block_size, data_len) = decode_header(&h)?;
        let expected = file_len(data_len, block_size);
        let actual = file.metadata()?.len();
        if actual != expected {
            return Err(ShardFileError::BadLength { expected, actual });
        }
        Ok(ShardReader { file, block_size, data_len })
    }

    /// The shard's data length in bytes.
    pub fn data_len(&self) -> u64 {
        self.data_len
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
        let mut w = ShardWriter::create(&path).unwrap();
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
            assert_eq!(std::fs::metadata(&path).unwrap().len(), file_len(len as u64, BLOCK_SIZE));
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
        let mut w = ShardWriter::create(&unfinished).unwrap();
        w.write(&pattern(10)).unwrap();
        drop(w);
        assert!(matches!(ShardReader::open(&unfinished), Err(ShardFileError::BadHeader(_))));
    }
}
