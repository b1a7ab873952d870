//! The read path: stream bytes of a piece of content from any k of its shards,
//! stripe by stripe, replacing a shard that fails (missing, unreachable, corrupt) by
//! another one — a parity shard or another replica — in the same read.
//!
//! Data shards are preferred, so a healthy read needs no decoding. The recorded
//! placement is tried first (no bus traffic on the normal path); only when it cannot
//! supply k shards does the read ask the bus, and then it records what it found. A
//! read that had to route around a shard asks for a background repair. A read never
//! serves wrong bytes: data servers verify every block, and when fewer than k good
//! shards remain the read fails (before the first byte: 503 naming what is missing;
//! after it: the response is cut off).
//!
//! Block checksums catch bit rot, not a shard that is well-formed but holds another
//! object's bytes, so a full read also checks the content's SHA-256 end to end: an
//! object below the small-object threshold is read whole and checked before the
//! first byte goes out (a mismatch is a clean 503); a larger one streams while a
//! thread hashes it, and its last bytes are held back until the hash matches, so a
//! mismatch breaks the response instead of ending it cleanly. Either way the shard
//! set that was read is set aside and the content repaired. Range reads rely on the
//! block checksums and on each shard's identity (policy and length), checked when
//! it is opened. Every wait on a data server has a deadline.
//!
//! The shards code the stored stream ([`ContentRecord::stored_len`]). For
//! compressed content ([`Encoding::Zstd`]) a read maps the range of original bytes
//! to frames through the seek table (read from the stream's tail, then kept in a
//! cache bounded in bytes), reads only those frames' stored bytes, decodes each on a
//! blocking thread and slices; a whole read hashes the decoded bytes. A frame that
//! does not decode is treated like a hash mismatch. [`ObjectService::read_stored`]
//! hands the stored stream out as it is (`Content-Encoding: zstd`).
//!
//! This file holds the streams a read hands out and their verification; the
//! reading of stripes from shards (`StripeReader`) is in `stripes.rs`.

mod stripes;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::hashing::{hash_of, PipedHasher};
use super::{ObjectError, ObjectService};
use crate::codec::seekable::{self, SeekTable};
use crate::codec::Layout;
use crate::content::{Encoding, Placement, Policy, ShardIndex};
use crate::meta::ContentRecord;
use crate::range::ByteRange;
pub(crate) use stripes::StripeReader;

/// Stripes buffered between the shard readers and the client: two keep the
/// readers busy while the client takes the last one, and bound a large read to
/// about 0.5 MiB of decoded data beside its shard connections.
const READ_AHEAD: usize = 2;

/// The verified bytes of a read, as they arrive.
pub type ObjectStream = tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>>;

/// A stream of one chunk already in memory.
fn one_chunk(data: Bytes) -> ObjectStream {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Ok(data));
    ObjectStream::new(rx)
}

/// Where a read's bytes go out: to the client's channel, hashed on the way when the
/// read is whole, with the last part held back until the hash matches (a client
/// must see a broken transfer, never a clean end of wrong bytes).
struct Outlet {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    hasher: Option<PipedHasher>,
    svc: ObjectService,
    content: ContentRecord,
}

impl Outlet {
    /// Sends `part` (the read's last when `last`); false when the read is over
    /// (the client went away, or the hash did not match and the response broke).
    async fn send(&mut self, part: Bytes, last: bool) -> bool {
        if let Some(h) = self.hasher.as_mut() {
            h.update(part.clone()).await;
        }
        if last {
            if let Some(h) = self.hasher.take() {
                let verdict = match h.finish().await {
                    Ok(actual) if actual == self.content.hash => Ok(()),
                    Ok(actual) => Err(ObjectError::ContentMismatch { hash: self.content.hash, actual }),
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = verdict {
                    tracing::error!(error = %e, "full read does not match its hash; breaking the response");
                    let _ = self.tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    if matches!(e, ObjectError::ContentMismatch { .. }) {
                        self.svc.reject_read(&self.content);
                    }
                    return false;
                }
            }
        }
        self.tx.send(Ok(part)).await.is_ok()
    }

    /// Breaks the response with `reason`.
    async fn fail(&mut self, reason: String) {
        let _ = self.tx.send(Err(std::io::Error::other(reason))).await;
    }
}

/// Full stripes rebuilt per decoder call while a data shard is missing: 4 stripes
/// of 4+2 are 1 MiB of data, where the library's per-call cost is amortized and its
/// working set still fits in a core's L2 cache (BENCH-codec.md).
pub const DEGRADED_RUN: u64 = 4;

impl ObjectService {
    /// Streams bytes `range` of `content` (original bytes: compressed content is
    /// decoded, reading only the frames that hold the range).
    ///
    /// Fails before the first byte when k shards cannot be opened, or, for an
    /// object below the small-object threshold read whole, when its bytes do not
    /// hash to the content; after that a broken read ends with an error item.
    pub async fn read(&self, content: &ContentRecord, range: ByteRange) -> Result<ObjectStream, ObjectError> {
        // A shard whose recorded holder stopped heartbeating is due for a rebuild,
        // whether or not this read needs it.
        let shards = content.policy.shards();
        if content.placement.len() < shards || content.placement.values().any(|a| !self.membership.is_live(a)) {
            self.schedule_repair(content.clone());
        }
        if range.is_empty() {
            return Ok(ObjectStream::new(mpsc::channel(1).1));
        }
        let cached = self.cache.get(&content.hash);
        if self.cache.wants(content.size) {
            let counter = if cached.is_some() { &self.metrics.cache_hits } else { &self.metrics.cache_misses };
            counter.increment(1);
        }
        if let Some(data) = cached {
            return Ok(one_chunk(data.slice(range.start as usize..range.end as usize)));
        }
        let whole = range.start == 0 && range.end == content.size;
        // Objects below the small-object threshold, and any the cache would keep, are
        // read whole and checked before the first byte.
        if whole && (content.size < self.config.small_threshold || self.cache.wants(content.size)) {
            let data = self.read_verified(content).await?;
            if self.cache.wants(content.size) {
                self.cache.insert(content.hash, data.clone());
            }
            return Ok(one_chunk(data));
        }
        match content.encoding {
            Encoding::Identity => self.stream_stored(content, range, whole).await,
            Encoding::Zstd => self.stream_decoded(content, range, whole).await,
        }
    }

    /// Streams the whole stored stream of `content` as it is (for compressed
    /// content: its zstd frames and seek table, which any zstd decoder reads). The
    /// end-to-end SHA-256 cannot be checked without decoding: the data servers'
    /// block checksums and the frames' own checksums cover these bytes.
    pub async fn read_stored(&self, content: &ContentRecord) -> Result<ObjectStream, ObjectError> {
        let range = ByteRange { start: 0, end: content.stored_len() };
        if range.is_empty() {
            return Ok(ObjectStream::new(mpsc::channel(1).1));
        }
        self.stream_stored(content, range, false).await
    }

    /// Streams bytes `range` of the stored stream of `content`, stripe by stripe;
    /// with `verify` (a whole identity read) the bytes are hashed on the way and
    /// the last ones held back until the hash matches.
    async fn stream_stored(
        &self,
        content: &ContentRecord,
        range: ByteRange,
        verify: bool,
    ) -> Result<ObjectStream, ObjectError> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let layout = Layout::new(content.policy, content.stored_len());
        let (first, last) = (layout.stripe_of(range.start), layout.stripe_of(range.end - 1));
        let mut reader = StripeReader::new(self, content, last);
        // The first stripe is read before answering, so that an unreadable object
        // gets a proper status instead of a cut-off body.
        let head = reader.stripe(first).await;
        if reader.degraded() {
            self.schedule_repair(content.clone());
        }
        let head = head?;
        let svc = self.clone();
        let content = content.clone();
        self.tasks.spawn(async move {
            let mut outlet =
                Outlet { tx, hasher: verify.then(PipedHasher::new), svc: svc.clone(), content: content.clone() };
            let mut data = head;
            let mut s = first;
            loop {
                let (start, end) = layout.stripe_span(s);
                let from = range.start.max(start) - start;
                let to = range.end.min(end) - start;
                let part = data.slice(from as usize..to as usize);
                if !outlet.send(part, s == last).await || s == last {
                    return;
                }
                s += 1;
                let was_degraded = reader.degraded();
                match reader.stripe(s).await {
                    Ok(d) => data = d,
                    Err(e) => {
                        tracing::error!(error = %e, "read failed mid-stream");
                        outlet.fail(e.to_string()).await;
                        svc.schedule_repair(content);
                        return;
                    }
                }
                if reader.degraded() && !was_degraded {
                    svc.schedule_repair(content.clone());
                }
            }
        });
        Ok(ObjectStream::new(rx))
    }

    /// Streams bytes `range` of compressed `content`: maps the range to frames
    /// through the seek table, reads only those frames' stored bytes, decodes them
    /// (off the runtime) and slices. With `whole`, the decoded bytes are hashed and
    /// the last ones held back until the hash matches, as for identity content.
    async fn stream_decoded(
        &self,
        content: &ContentRecord,
        range: ByteRange,
        whole: bool,
    ) -> Result<ObjectStream, ObjectError> {
        let table = self.seek_table(content).await?;
        let span = table.span(range);
        let mut stored = self.stream_stored(content, span.stored, false).await?;
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let svc = self.clone();
        let content = content.clone();
        self.tasks.spawn(async move {
            let mut outlet = Outlet { tx, hasher: whole.then(PipedHasher::new), svc: svc.clone(), content: content.clone() };
            let mut buf = BytesMut::new();
            for i in span.first..=span.last {
                let (s, o) = table.frame(i);
                let need = s.len() as usize;
                while buf.len() < need {
                    match stored.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => return outlet.fail(e.to_string()).await,
                        None => return outlet.fail(format!("stored stream ended inside frame {i}")).await,
                    }
                }
                let frame = buf.split_to(need).freeze();
                let original = o.len() as usize;
                let decoded = match tokio::task::spawn_blocking(move || seekable::decode_frame(i, &frame, original)).await {
                    Ok(Ok(d)) => Bytes::from(d),
                    Ok(Err(e)) => {
                        // The block checksums passed, so a shard holds well-formed
                        // wrong bytes: the same case as a hash mismatch.
                        tracing::error!(error = %e, hash = %content.hash, "stored frame does not decode; breaking the response");
                        svc.reject_read(&content);
                        return outlet.fail(e.to_string()).await;
                    }
                    Err(e) => return outlet.fail(format!("decoding thread failed: {e}")).await,
                };
                let from = range.start.max(o.start) - o.start;
                let to = range.end.min(o.end) - o.start;
                if !outlet.send(decoded.slice(from as usize..to as usize), i == span.last).await {
                    return;
                }
            }
        });
        Ok(ObjectStream::new(rx))
    }

    /// The seek table of compressed `content`: from the API server's cache of seek
    /// tables, or read from the stored stream's tail (one read of the size the
    /// table should have at the configured frame size, a second when it is longer)
    /// and checked against the content's sizes.
    pub(crate) async fn seek_table(&self, content: &ContentRecord) -> Result<Arc<SeekTable>, ObjectError> {
        if let Some(table) = self.seek_tables.get(&content.hash) {
            return Ok(table);
        }
        let stored_len = content.stored_len();
        let bad = |e: seekable::SeekableError| ObjectError::Unavailable {
            hash: content.hash,
            reasons: format!("seek table: {e}"),
        };
        let frames = content.size.div_ceil(self.config.compression.frame.max(1) as u64);
        let guess = (frames * 8 + 8 + seekable::FOOTER_LEN as u64).min(stored_len);
        let mut tail =
            self.read_stored_bytes(content, ByteRange { start: stored_len - guess, end: stored_len }).await?;
        if tail.len() < seekable::FOOTER_LEN {
            return Err(bad(seekable::SeekableError::Truncated { len: stored_len, need: seekable::FOOTER_LEN as u64 }));
        }
        let table_len = SeekTable::table_len(&tail[tail.len() - seekable::FOOTER_LEN..]).map_err(bad)? as u64;
        if table_len > stored_len {
            return Err(bad(seekable::SeekableError::Truncated { len: stored_len, need: table_len }));
        }
        if table_len > tail.len() as u64 {
            tail =
                self.read_stored_bytes(content, ByteRange { start: stored_len - table_len, end: stored_len }).await?;
        }
        let table = SeekTable::parse(&tail[tail.len() - table_len as usize..]).map_err(bad)?;
        table.check(content.size, stored_len).map_err(bad)?;
        let table = Arc::new(table);
        self.seek_tables.insert(content.hash, table.clone());
        Ok(table)
    }

    /// Bytes `range` of the stored stream of `content`, collected (small ranges only:
    /// a seek table).
    async fn read_stored_bytes(&self, content: &ContentRecord, range: ByteRange) -> Result<Bytes, ObjectError> {
        let mut stream = self.stream_stored(content, range, false).await?;
        let mut buf = BytesMut::with_capacity(range.len() as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ObjectError::Unavailable { hash: content.hash, reasons: e.to_string() })?;
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads `content` whole (its stored stream, decoded when compressed) and
    /// checks it against its hash before returning it; a mismatch sets the shards
    /// read aside.
    async fn read_verified(&self, content: &ContentRecord) -> Result<Bytes, ObjectError> {
        let layout = Layout::new(content.policy, content.stored_len());
        let last = layout.stripes().saturating_sub(1);
        let mut reader = StripeReader::new(self, content, last);
        let mut buf = BytesMut::with_capacity(content.stored_len() as usize);
        let mut failed = None;
        for s in 0..=last {
            match reader.stripe(s).await {
                Ok(data) => buf.extend_from_slice(&data),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if reader.degraded() {
            self.schedule_repair(content.clone());
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let stored = buf.freeze();
        let data = match content.encoding {
            Encoding::Identity => stored,
            Encoding::Zstd => {
                let size = content.size;
                match tokio::task::spawn_blocking(move || seekable::decode_whole(&stored, size)).await {
                    Ok(Ok(d)) => Bytes::from(d),
                    Ok(Err(e)) => {
                        tracing::error!(hash = %content.hash, error = %e, "stored stream does not decode; answering 503");
                        self.reject_read(content);
                        return Err(ObjectError::Unavailable { hash: content.hash, reasons: e.to_string() });
                    }
                    Err(e) => {
                        return Err(ObjectError::Compression(seekable::SeekableError::Compress {
                            reason: e.to_string(),
                        }))
                    }
                }
            }
        };
        let actual = hash_of(data.clone()).await?;
        if actual != content.hash {
            tracing::error!(hash = %content.hash, %actual, "read does not match its hash; answering 503");
            self.reject_read(content);
            return Err(ObjectError::ContentMismatch { hash: content.hash, actual });
        }
        Ok(data)
    }

    /// Holders in the order to try them (the last is tried first): data shards on
    /// live servers, then parity shards on live servers, then the rest.
    pub(crate) fn ordered(&self, placement: &Placement, policy: Policy) -> Vec<(ShardIndex, String)> {
        let k = policy.k as usize;
        // A placement recorded by an older, less careful version may name a shard
        // outside the policy: it can only be a mistake, never read.
        let mut all: Vec<(ShardIndex, String)> =
            placement.iter().filter(|(s, _)| (**s as usize) < policy.shards()).map(|(s, a)| (*s, a.clone())).collect();
        all.sort_by_key(|(s, a)| (!self.membership.is_live(a), (*s as usize) >= k, *s));
        all.reverse();
        all
    }
}
