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

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::hashing::{hash_of, PipedHasher};
use super::{ObjectError, ObjectService};
use crate::codec::seekable::{self, SeekTable};
use crate::codec::{self, Layout};
use crate::content::{Encoding, Placement, Policy, ShardIndex};
use crate::meta::ContentRecord;
use crate::range::ByteRange;

/// Stripes buffered between the shard readers and the client: two keep the
/// readers busy while the client takes the last one, and bound a large read to
/// about 0.5 MiB of decoded data beside its shard connections.
const READ_AHEAD: usize = 2;

/// The verified bytes of a read, as they arrive.
pub type ObjectStream = tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>>;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

/// One shard being read: a response body cut into blocks on demand.
///
/// Each block is a buffer of its own, exactly as long as asked; what is left of a
/// chunk stays a slice of it, which keeps at most one connection read buffer
/// ([`READ_BUF`](crate::data::client::READ_BUF), 64 KiB) alive per open shard.
struct OpenShard {
    shard: ShardIndex,
    addr: String,
    body: ByteStream,
    rest: Bytes,
}

impl OpenShard {
    /// The next `n` bytes of the shard, waiting at most `io` for each chunk.
    async fn read_exact(&mut self, n: usize, io: std::time::Duration) -> Result<Bytes, String> {
        if self.rest.len() >= n {
            return Ok(self.rest.split_to(n));
        }
        let mut block = BytesMut::with_capacity(n);
        block.extend_from_slice(&std::mem::take(&mut self.rest));
        while block.len() < n {
            match tokio::time::timeout(io, self.body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let take = (n - block.len()).min(chunk.len());
                    block.extend_from_slice(&chunk[..take]);
                    if take < chunk.len() {
                        self.rest = chunk.slice(take..);
                    }
                }
                Ok(Some(Err(e))) => return Err(crate::report::error_chain(&e)),
                Ok(None) => return Err(format!("stream ended {} bytes short", n - block.len())),
                Err(_) => return Err(format!("no bytes for {io:?}: data server stalled")),
            }
        }
        Ok(block.freeze())
    }
}

/// Reads the stripes of one piece of content from k shards at a time.
pub(crate) struct StripeReader {
    svc: ObjectService,
    content: ContentRecord,
    layout: Layout,
    /// Holders not tried yet, best last (popped).
    candidates: Vec<(ShardIndex, String)>,
    open: Vec<OpenShard>,
    /// Shards that failed in this read, with why.
    failures: Vec<String>,
    /// Whether some shard had to be routed around.
    degraded: bool,
    /// The holders whose blocks went into what was returned.
    used: BTreeSet<(ShardIndex, String)>,
    located: bool,
    last_stripe: u64,
    /// Stripes rebuilt ahead of the caller by a degraded run.
    ready: std::collections::VecDeque<(u64, Bytes)>,
}

impl StripeReader {
    /// Prepares to read stripes of `content` up to `last` (nothing is opened yet).
    pub(crate) fn new(svc: &ObjectService, content: &ContentRecord, last: u64) -> StripeReader {
        let layout = Layout::new(content.policy, content.stored_len());
        let candidates = svc.ordered(&content.placement, content.policy);
        StripeReader {
            svc: svc.clone(),
            content: content.clone(),
            layout,
            candidates,
            open: Vec::new(),
            failures: Vec::new(),
            degraded: false,
            used: BTreeSet::new(),
            located: false,
            last_stripe: last,
            ready: Default::default(),
        }
    }

    /// Like [`StripeReader::new`], reading only the holders in `content`'s
    /// placement and never asking the bus for others: for reads that must use a
    /// chosen set of shards.
    pub(crate) fn pinned(svc: &ObjectService, content: &ContentRecord, last: u64) -> StripeReader {
        let mut reader = StripeReader::new(svc, content, last);
        reader.located = true;
        reader
    }

    /// Whether the read had to do without some shard (a repair is due).
    pub(crate) fn degraded(&self) -> bool {
        self.degraded
    }

    /// The holders whose blocks went into the stripes returned so far.
    pub(crate) fn used(&self) -> Vec<(ShardIndex, String)> {
        self.used.iter().cloned().collect()
    }

    /// Opens shards until k distinct ones are open, reading from stripe `from` on.
    async fn fill(&mut self, from: u64) -> Result<(), ObjectError> {
        let k = self.content.policy.k as usize;
        let start = self.layout.shard_offset(from);
        let end = self.layout.shard_offset(self.last_stripe) + self.layout.block_len(self.last_stripe);
        let range = ByteRange { start, end };
        loop {
            if self.open.len() >= k {
                return Ok(());
            }
            let busy: BTreeSet<ShardIndex> = self.open.iter().map(|o| o.shard).collect();
            self.candidates.retain(|(s, _)| !busy.contains(s));
            // The best holders (at the back) of distinct shards, as many as are missing.
            let mut batch: Vec<(ShardIndex, String)> = Vec::new();
            let mut i = self.candidates.len();
            while i > 0 && batch.len() < k - self.open.len() {
                i -= 1;
                let shard = self.candidates[i].0;
                if !batch.iter().any(|(b, _)| *b == shard) {
                    batch.push(self.candidates.remove(i));
                }
            }
            if batch.is_empty() {
                if !self.located {
                    self.located = true;
                    self.relocate(&busy).await?;
                    continue;
                }
                let found: Vec<String> = self.open.iter().map(|o| o.shard.to_string()).collect();
                let mut reasons = std::mem::take(&mut self.failures);
                reasons.insert(
                    0,
                    format!("{} good shards of the {} needed (open: [{}])", self.open.len(), k, found.join(", ")),
                );
                return Err(ObjectError::Unavailable { hash: self.content.hash, reasons: reasons.join("; ") });
            }
            let shard_len = self.layout.shard_len();
            let whole = range.start == 0 && range.end == shard_len;
            let (hash, policy) = (self.content.hash, self.content.policy);
            let client = &self.svc.client;
            let opened = join_all(batch.into_iter().map(|(shard, addr)| async move {
                let result = client.read(&addr, &hash, shard, policy, shard_len, (!whole).then_some(range)).await;
                (shard, addr, result)
            }))
            .await;
            for (shard, addr, result) in opened {
                match result {
                    Ok(resp) => self.open.push(OpenShard {
                        shard,
                        addr,
                        body: Box::pin(resp.into_body().into_data_stream()),
                        rest: Bytes::new(),
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, shard, "shard unavailable; reading another");
                        self.failures.push(format!("shard {shard}: {e}"));
                        self.degraded = true;
                    }
                }
            }
        }
    }

    /// Asks the bus who holds the shards now, records it, and makes the holders not
    /// yet tried the new candidates.
    async fn relocate(&mut self, busy: &BTreeSet<ShardIndex>) -> Result<(), ObjectError> {
        let located = self.svc.locate(&self.content).await?;
        if !located.is_empty() && located != self.content.placement {
            if let Err(e) = self.svc.meta.set_placement(&self.content.hash, &located).await {
                tracing::warn!(error = %e, hash = %self.content.hash, "could not record the located placement");
            }
        }
        let tried: BTreeSet<(ShardIndex, String)> = self.content.placement.clone().into_iter().collect();
        let fresh: Placement =
            located.into_iter().filter(|(s, a)| !busy.contains(s) && !tried.contains(&(*s, a.clone()))).collect();
        self.candidates = self.svc.ordered(&fresh, self.content.policy);
        Ok(())
    }

    /// Reads stripe `s` (stripes must be read in order) and returns its data.
    ///
    /// While a data shard is missing, blocks of up to [`DEGRADED_RUN`] full stripes
    /// are read and rebuilt in one decoder call (its fixed cost dominates a single
    /// stripe's), and the stripes after `s` are kept for the next calls.
    pub(crate) async fn stripe(&mut self, s: u64) -> Result<Bytes, ObjectError> {
        while let Some((ready, data)) = self.ready.pop_front() {
            if ready == s {
                return Ok(data);
            }
        }
        let k = self.content.policy.k as usize;
        let n = self.content.policy.shards();
        self.fill(s).await?;
        let data_missing = (0..k as ShardIndex).any(|i| !self.open.iter().any(|o| o.shard == i));
        let run = if k > 1 && data_missing {
            (s..=self.last_stripe.min(s + DEGRADED_RUN - 1))
                .take_while(|t| self.layout.block_len(*t) == self.layout.block)
                .count()
                .max(1) as u64
        } else {
            1
        };
        let len = (self.layout.block_len(s) * run) as usize;
        let mut blocks: Vec<Option<Bytes>> = vec![None; n];
        loop {
            // Replacements for failed shards are opened from this stripe on; shards that
            // already gave their block for it are not read again.
            self.fill(s).await?;
            let pending: Vec<&mut OpenShard> =
                self.open.iter_mut().filter(|o| blocks[o.shard as usize].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let io = self.svc.client.timeouts().io;
            let reads = join_all(pending.into_iter().map(|o| async move {
                let r = o.read_exact(len, io).await;
                (o.shard, o.addr.clone(), r)
            }))
            .await;
            for (shard, addr, r) in reads {
                match r {
                    Ok(b) => {
                        blocks[shard as usize] = Some(b);
                        self.used.insert((shard, addr));
                    }
                    Err(e) => {
                        tracing::warn!(shard, %addr, error = %e, stripe = s, "shard stream broke; switching shard");
                        self.failures.push(format!("shard {shard} at {addr}: {e}"));
                        self.open.retain(|o| o.shard != shard);
                        self.degraded = true;
                    }
                }
            }
        }
        let unavailable =
            |e: codec::CodecError| ObjectError::Unavailable { hash: self.content.hash, reasons: e.to_string() };
        if run == 1 {
            return codec::decode_stripe(&self.layout, s, &blocks).map_err(unavailable);
        }
        let parts = codec::reconstruct(self.content.policy, s, &blocks).map_err(unavailable)?;
        let block = self.layout.block as usize;
        for j in 0..run as usize {
            let mut data = BytesMut::with_capacity(block * k);
            for part in &parts {
                data.extend_from_slice(&part[j * block..(j + 1) * block]);
            }
            self.ready.push_back((s + j as u64, data.freeze()));
        }
        Ok(self.ready.pop_front().map(|(_, d)| d).unwrap_or_default())
    }
}

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
