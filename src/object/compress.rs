//! Transparent compression on the write path: between the hasher (which always
//! sees the original bytes, so the content address, dedup and digests are those of
//! the original) and the stripe encoder (which codes the stored stream).
//!
//! Whether an object is compressed is decided from a sample, its first frame: the
//! frame is compressed at the configured level, and unless that saves at least an
//! eighth ([`seekable::pays`]) the object is stored as it is and no further
//! compression work is done (incompressible data — JPEG, video, archives, random
//! bytes — costs one frame's compression, about 1 ms, and nothing else). Objects
//! below `--compression-min` are never compressed: a zstd frame and a seek table
//! cost about 30 bytes, and the decode on every read buys nothing measurable there.
//!
//! `Packer` compresses a streamed body frame by frame on blocking threads (at most
//! [`IN_FLIGHT`] frames at once, each thread with a reused zstd context), so
//! hashing, compressing, erasure coding and sending overlap. Its memory is bounded
//! by the frame size: the partial frame being filled, the frames in flight and the
//! compressed bytes not yet cut into stripes; the seek table grows by 8 bytes per
//! frame (32 KiB per GiB at 256 KiB frames).

use std::collections::VecDeque;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::ObjectError;
use crate::codec::seekable::{self, FrameCompressor, FrameEntry, SeekTable, SeekableError};
use crate::content::Encoding;

/// Original bytes per zstd frame by default: the unit a range read decodes. 256 KiB
/// frames store text 6% larger than 1 MiB frames (4.88× against 5.16×) but read
/// and decode a quarter as much for a small range, and hold a quarter as much
/// memory per frame in flight (BENCH.md, "Compression").
pub const DEFAULT_FRAME: usize = 256 * 1024;
/// zstd level by default (see [`CompressionConfig::level`]).
pub const DEFAULT_LEVEL: i32 = 1;
/// Objects below this many bytes are never compressed by default.
pub const DEFAULT_MIN: u64 = 4 * 1024;
/// Frames of one body compressed at once: two keep both cores of a small machine
/// busy beside the hasher without letting one PUT take them all.
pub const IN_FLIGHT: usize = 2;

/// Whether new content is compressed at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompressionMode {
    /// Compressed when its first frame shows it pays.
    #[default]
    Auto,
    /// Always stored as it is.
    Off,
}

impl FromStr for CompressionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CompressionMode::Auto),
            "off" => Ok(CompressionMode::Off),
            other => Err(format!("expected auto or off, got {other:?}")),
        }
    }
}

/// How new content is compressed (`--compression*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Whether at all.
    pub mode: CompressionMode,
    /// The zstd level. Level 1 by default: on a 2-core API server that also hashes
    /// and erasure-codes, level 3 PUTs text about a quarter slower and costs 1–2 CPU
    /// seconds more per GB for 6% more ratio (BENCH.md, "Compression").
    pub level: i32,
    /// Original bytes per frame (at most [`seekable::MAX_FRAME_LEN`]).
    pub frame: usize,
    /// Objects below this many bytes are stored as they are.
    pub min: u64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig { mode: CompressionMode::Auto, level: DEFAULT_LEVEL, frame: DEFAULT_FRAME, min: DEFAULT_MIN }
    }
}

impl CompressionConfig {
    /// Compression off.
    pub fn off() -> CompressionConfig {
        CompressionConfig { mode: CompressionMode::Off, ..CompressionConfig::default() }
    }

    /// Whether content of `size` bytes is a candidate (then its sample decides).
    pub fn considers(&self, size: u64) -> bool {
        self.mode == CompressionMode::Auto && size >= self.min.max(1)
    }
}

/// The stored form of an object held whole: its seekable stream when compressing
/// it pays, `None` when it is to be stored as it is.
pub(crate) async fn pack_whole(config: &CompressionConfig, data: &Bytes) -> Result<Option<Bytes>, ObjectError> {
    if !config.considers(data.len() as u64) {
        return Ok(None);
    }
    let (config, data) = (*config, data.clone());
    let packed = tokio::task::spawn_blocking(move || {
        let mut compressor = FrameCompressor::new(config.level)?;
        seekable::compress_whole(&data, config.frame, &mut compressor)
    })
    .await
    .map_err(|e| ObjectError::Compression(SeekableError::Compress { reason: e.to_string() }))??;
    Ok(packed.map(Bytes::from))
}

/// A frame being compressed on a blocking thread: its compressor comes back with
/// the result, for the next frame.
type FrameJob = JoinHandle<(FrameCompressor, Result<(Vec<u8>, usize), SeekableError>)>;

/// Compresses a streamed body into the seekable format, frame by frame, off the
/// async runtime; declines (gives the first frame's original bytes back) when the
/// first frame does not pay.
pub(crate) struct Packer {
    config: CompressionConfig,
    /// Compressed bytes ready to be cut into stripes.
    pub(crate) out: BytesMut,
    in_flight: VecDeque<FrameJob>,
    idle: Vec<FrameCompressor>,
    table: SeekTable,
    /// The first frame's original bytes, kept until its result decides.
    sample: Option<Bytes>,
    /// Whether the first frame paid (`None`: not known yet).
    pays: Option<bool>,
    /// Stored bytes produced so far (frames and, once finished, the table).
    stored: u64,
    finished: bool,
}

impl Packer {
    /// A packer for a body of at least `config.min` bytes, or `None` when
    /// compression is off.
    pub(crate) fn new(config: &CompressionConfig) -> Option<Packer> {
        (config.mode == CompressionMode::Auto).then(|| Packer {
            config: *config,
            out: BytesMut::new(),
            in_flight: VecDeque::new(),
            idle: Vec::new(),
            table: SeekTable::default(),
            sample: None,
            pays: None,
            stored: 0,
            finished: false,
        })
    }

    /// Takes whole frames out of `original` (and the rest too once `end`) into
    /// compression, and collects finished frames into [`Packer::out`]; once `end`,
    /// waits for every frame and appends the seek table. Returns the original bytes
    /// of the first frame when it did not pay: the body is then to be stored as it
    /// is, starting with those bytes, and this packer is done.
    pub(crate) async fn feed(&mut self, original: &mut BytesMut, end: bool) -> Result<Option<Bytes>, ObjectError> {
        let frame = self.config.frame.clamp(1, seekable::MAX_FRAME_LEN);
        while original.len() >= frame || (end && !original.is_empty()) {
            if self.pays.is_none() && self.sample.is_some() {
                // Nothing more is compressed before the sample has decided.
                if let Some(declined) = self.collect_one().await? {
                    return Ok(Some(declined));
                }
            }
            if self.in_flight.len() >= IN_FLIGHT {
                self.collect_one().await?;
            }
            let take = frame.min(original.len());
            let data = original.split_to(take).freeze();
            if self.sample.is_none() && self.pays.is_none() {
                if !self.config.considers(data.len() as u64) {
                    // The whole object is a single frame below the minimum.
                    self.pays = Some(false);
                    return Ok(Some(data));
                }
                self.sample = Some(data.clone());
            }
            self.submit(data)?;
        }
        if end {
            while !self.in_flight.is_empty() {
                if let Some(declined) = self.collect_one().await? {
                    return Ok(Some(declined));
                }
            }
            if !self.finished {
                self.finished = true;
                let table = self.table.encode();
                self.stored += table.len() as u64;
                self.out.extend_from_slice(&table);
            }
        }
        Ok(None)
    }

    /// The encoding and length of the stored stream, once [`Packer::feed`] ended.
    pub(crate) fn stored(&self) -> (Encoding, u64) {
        (Encoding::Zstd, self.stored)
    }

    fn submit(&mut self, data: Bytes) -> Result<(), ObjectError> {
        let compressor = match self.idle.pop() {
            Some(c) => c,
            None => FrameCompressor::new(self.config.level)?,
        };
        let mut compressor = compressor;
        self.in_flight.push_back(tokio::task::spawn_blocking(move || {
            let result = compressor.compress(&data).map(|packed| (packed, data.len()));
            (compressor, result)
        }));
        Ok(())
    }

    /// Waits for the oldest frame in flight and appends it to `out`; when it is
    /// the sample and did not pay, returns the sample's original bytes instead.
    async fn collect_one(&mut self) -> Result<Option<Bytes>, ObjectError> {
        let Some(job) = self.in_flight.pop_front() else { return Ok(None) };
        let (compressor, result) =
            job.await.map_err(|e| ObjectError::Compression(SeekableError::Compress { reason: e.to_string() }))?;
        self.idle.push(compressor);
        let (packed, original) = result?;
        if self.pays.is_none() {
            let pays = seekable::pays(original, packed.len());
            self.pays = Some(pays);
            let sample = self.sample.take();
            if !pays {
                return Ok(Some(sample.unwrap_or_default()));
            }
        }
        self.table.push(FrameEntry { stored: packed.len() as u32, original: original as u32 });
        self.stored += packed.len() as u64;
        self.out.extend_from_slice(&packed);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(frame: usize) -> CompressionConfig {
        CompressionConfig { frame, ..CompressionConfig::default() }
    }

    /// Feeds `data` in chunks of `chunk` as the write path does; returns what the
    /// stripes would get and whether the packer declined.
    async fn pack(data: &[u8], chunk: usize, frame: usize) -> (Vec<u8>, bool) {
        let mut packer = Packer::new(&config(frame)).expect("auto");
        let mut original = BytesMut::new();
        let mut out = Vec::new();
        let mut chunks = data.chunks(chunk).peekable();
        while let Some(c) = chunks.next() {
            original.extend_from_slice(c);
            let end = chunks.peek().is_none();
            if let Some(declined) = packer.feed(&mut original, end).await.unwrap() {
                // Stored as it is: what the packer gave back, then the rest.
                let mut stored = declined.to_vec();
                stored.extend_from_slice(&original);
                for c in chunks {
                    stored.extend_from_slice(c);
                }
                return (stored, true);
            }
            out.extend_from_slice(&packer.out.split());
        }
        assert_eq!(packer.stored(), (Encoding::Zstd, out.len() as u64));
        (out, false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn text_streams_into_a_seekable_stream_and_random_bytes_are_declined_whole() {
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("line {} of the corpus\n", i % 977).into_bytes())
            .take(1_000_003)
            .collect();
        let (stored, declined) = pack(&text, 70_001, 65_536).await;
        assert!(!declined);
        assert!(stored.len() < text.len() / 4);
        assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), text);
        assert_eq!(seekable::decode_whole(&stored, text.len() as u64).unwrap(), text);

        use rand::{RngCore, SeedableRng};
        let mut random = vec![0u8; 500_000];
        rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut random);
        let (stored, declined) = pack(&random, 33_333, 65_536).await;
        assert!(declined);
        assert_eq!(stored, random, "a declined body is stored byte for byte");

        // A body that is one frame below the minimum is never compressed.
        let (stored, declined) = pack(&text[..1000], 400, 65_536).await;
        assert!(declined);
        assert_eq!(stored, &text[..1000]);
        assert!(Packer::new(&CompressionConfig::off()).is_none());
    }
}
