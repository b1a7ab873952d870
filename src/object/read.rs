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

use std::collections::BTreeSet;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{ObjectError, ObjectService};
use crate::codec::{self, Layout};
use crate::content::{Placement, ShardIndex};
use crate::meta::ContentRecord;
use crate::range::ByteRange;

/// Stripes buffered between the shard readers and the client.
const READ_AHEAD: usize = 4;

/// The verified bytes of a read, as they arrive.
pub type ObjectStream = tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>>;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// One shard being read: a response body cut into blocks on demand.
struct OpenShard {
    shard: ShardIndex,
    addr: String,
    body: ByteStream,
    buf: BytesMut,
}

impl OpenShard {
    /// The next `n` bytes of the shard.
    async fn read_exact(&mut self, n: usize) -> Result<Bytes, String> {
        while self.buf.len() < n {
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(super::client::error_chain(&e)),
                None => return Err(format!("stream ended {} bytes short", n - self.buf.len())),
            }
        }
        Ok(self.buf.split_to(n).freeze())
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
    located: bool,
    last_stripe: u64,
    /// Stripes rebuilt ahead of the caller by a degraded run.
    ready: std::collections::VecDeque<(u64, Bytes)>,
}

impl StripeReader {
    /// Prepares to read stripes of `content` up to `last` (nothing is opened yet).
    pub(crate) fn new(svc: &ObjectService, content: &ContentRecord, last: u64) -> StripeReader {
        let layout = Layout::new(content.policy, content.size);
        let candidates = svc.ordered(&content.placement, content.policy.k as usize);
        StripeReader {
            svc: svc.clone(),
            content: content.clone(),
            layout,
            candidates,
            open: Vec::new(),
            failures: Vec::new(),
            degraded: false,
            located: false,
            last_stripe: last,
            ready: Default::default(),
        }
    }

    /// Whether the read had to do without some shard (a repair is due).
    pub(crate) fn degraded(&self) -> bool {
        self.degraded
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
            let whole = range.start == 0 && range.end == self.layout.shard_len();
            let hash = self.content.hash;
            let client = &self.svc.client;
            let opened = join_all(batch.into_iter().map(|(shard, addr)| async move {
                let result = client.read(&addr, &hash, shard, (!whole).then_some(range)).await;
                (shard, addr, result)
            }))
            .await;
            for (shard, addr, result) in opened {
                match result {
                    Ok(resp) => self.open.push(OpenShard {
                        shard,
                        addr,
                        body: Box::pin(resp.bytes_stream()),
                        buf: BytesMut::new(),
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
        self.candidates = self.svc.ordered(&fresh, self.content.policy.k as usize);
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
            let reads = join_all(pending.into_iter().map(|o| async move {
                let r = o.read_exact(len).await;
                (o.shard, o.addr.clone(), r)
            }))
            .await;
            for (shard, addr, r) in reads {
                match r {
                    Ok(b) => blocks[shard as usize] = Some(b),
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

/// Full stripes rebuilt per decoder call while a data shard is missing: 4 stripes
/// of 4+2 are 1 MiB of data, where the library's per-call cost is amortized and its
/// working set still fits in a core's L2 cache (BENCH-codec.md).
pub const DEGRADED_RUN: u64 = 4;

impl ObjectService {
    /// Streams bytes `range` of `content`.
    ///
    /// Fails before the first byte when k shards cannot be opened; after that a
    /// broken read ends with an error item.
    pub async fn read(&self, content: &ContentRecord, range: ByteRange) -> Result<ObjectStream, ObjectError> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        // A shard whose recorded holder stopped heartbeating is due for a rebuild,
        // whether or not this read needs it.
        let shards = content.policy.shards();
        if content.placement.len() < shards || content.placement.values().any(|a| !self.membership.is_live(a)) {
            self.schedule_repair(content.clone());
        }
        if range.is_empty() {
            return Ok(ObjectStream::new(rx));
        }
        if let Some(data) = self.cache.get(&content.hash) {
            let part = data.slice(range.start as usize..range.end as usize);
            let _ = tx.try_send(Ok(part));
            return Ok(ObjectStream::new(rx));
        }
        let mut keep = (self.cache.wants(content.size) && range.start == 0 && range.end == content.size)
            .then(|| BytesMut::with_capacity(content.size as usize));
        let layout = Layout::new(content.policy, content.size);
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
        tokio::spawn(async move {
            let mut data = head;
            let mut s = first;
            loop {
                let (start, end) = layout.stripe_span(s);
                let from = range.start.max(start) - start;
                let to = range.end.min(end) - start;
                let part = data.slice(from as usize..to as usize);
                if let Some(keep) = keep.as_mut() {
                    keep.extend_from_slice(&part);
                }
                if tx.send(Ok(part)).await.is_err() {
                    return; // the client went away
                }
                if s == last {
                    if let Some(keep) = keep.take() {
                        svc.cache.insert(content.hash, keep.freeze());
                    }
                    break;
                }
                s += 1;
                let was_degraded = reader.degraded();
                match reader.stripe(s).await {
                    Ok(d) => data = d,
                    Err(e) => {
                        tracing::error!(error = %e, "read failed mid-stream");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
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

    /// Holders in the order to try them (the last is tried first): data shards on
    /// live servers, then parity shards on live servers, then the rest.
    pub(crate) fn ordered(&self, placement: &Placement, k: usize) -> Vec<(ShardIndex, String)> {
        let mut all: Vec<(ShardIndex, String)> = placement.iter().map(|(s, a)| (*s, a.clone())).collect();
        all.sort_by_key(|(s, a)| (!self.membership.is_live(a), (*s as usize) >= k, *s));
        all.reverse();
        all
    }
}
