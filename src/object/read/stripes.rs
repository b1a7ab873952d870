//! The stripe reader of the read path: k shards of one piece of content open at a
//! time, block by block, a failing shard replaced by the next holder in the same
//! read, and a degraded run rebuilding several stripes per decoder call.

use std::collections::BTreeSet;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;

use super::DEGRADED_RUN;
use crate::codec::{self, Layout};
use crate::content::{Placement, ShardIndex};
use crate::meta::ContentRecord;
use crate::object::{ObjectError, ObjectService};
use crate::range::ByteRange;

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
