//! The write path: choose the policy (replication for small objects, the cluster's
//! k+m otherwise), choose distinct data servers, cut the body into stripes as it
//! arrives, encode each stripe and stream shard `i`'s block to server `i`, check the
//! client's digest, commit, record the version.
//!
//! Nothing becomes visible unless at least the policy's write quorum of shards is
//! durable and the metadata is committed: a failure at any step aborts the temp
//! shards and answers an error. Shards that missed the write are rebuilt in the
//! background. Memory per request is bounded by the small-object threshold plus a
//! stripe and [`IN_FLIGHT`] blocks per shard, whatever the object's size.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::client::DataClientError;
use super::{ObjectError, ObjectService};
use crate::cluster::choose_servers;
use crate::codec::{Layout, StripeEncoder};
use crate::content::{ContentHash, Placement, Policy, ShardIndex};
use crate::meta::{ContentRecord, VersionRecord};

/// Blocks queued per shard before the write waits for the slowest data server.
pub const IN_FLIGHT: usize = 4;

/// One shard's upload in progress.
pub(crate) struct ShardUpload {
    pub(crate) shard: ShardIndex,
    pub(crate) addr: String,
    pub(crate) id: Uuid,
    pub(crate) sender: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    pub(crate) task: JoinHandle<Result<u64, DataClientError>>,
}

impl ObjectService {
    /// Stores `body` as the next version of `bucket/name`. When `expected` is given
    /// the body must hash to it, or nothing is stored.
    pub async fn put<S, E>(
        &self,
        bucket: &str,
        name: &str,
        mut body: S,
        expected: Option<ContentHash>,
    ) -> Result<VersionRecord, ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        // Known content is not written again: the body is only hashed, to prove the
        // client really has the bytes its digest names.
        if let Some(expected) = expected {
            if let Some(existing) = self.durable_content(&expected).await? {
                let hash = hash_only(&mut body).await?;
                if hash != expected {
                    return Err(ObjectError::DigestMismatch { expected, actual: hash });
                }
                return Ok(self.meta.put_version(bucket, name, Some(&existing)).await?);
            }
        }

        // Read up to the small-object threshold to learn which policy applies.
        let threshold = self.config.small_threshold;
        let mut head = Head::default();
        let complete = head.fill(&mut body, threshold).await?;
        let policy =
            if complete && (head.buf.len() as u64) < threshold { self.config.small_policy } else { self.config.policy };
        if complete {
            return self.put_whole(bucket, name, head, policy, expected).await;
        }
        let targets = self.choose_targets(policy)?;
        let mut uploads: Vec<ShardUpload> =
            targets.into_iter().enumerate().map(|(i, addr)| self.start_upload(i as ShardIndex, addr)).collect();

        let (hash, size) = match self.feed(&mut uploads, head, complete, body, policy).await {
            Ok(done) => done,
            Err(e) => {
                self.abort_all(&mut uploads).await;
                return Err(e);
            }
        };
        if let Some(expected) = expected.filter(|e| *e != hash) {
            self.abort_all(&mut uploads).await;
            return Err(ObjectError::DigestMismatch { expected, actual: hash });
        }
        // The same content may already be stored (a client that sent no digest): keep
        // the stored shards and drop the new ones.
        if let Some(existing) = self.durable_content(&hash).await? {
            self.abort_all(&mut uploads).await;
            return Ok(self.meta.put_version(bucket, name, Some(&existing)).await?);
        }

        let shard_len = Layout::new(policy, size).shard_len();
        let mut reasons = Vec::new();
        let mut uploaded = Vec::new();
        for u in uploads {
            let ShardUpload { shard, addr, id, task, .. } = u;
            match task.await {
                Ok(Ok(len)) if len == shard_len => uploaded.push((shard, addr, id)),
                Ok(Ok(len)) => reasons.push(format!("{addr} stored {len} of {shard_len} bytes")),
                Ok(Err(e)) => reasons.push(e.to_string()),
                Err(e) => reasons.push(format!("upload to {addr} failed: {e}")),
            }
        }
        let commits = join_all(uploaded.iter().map(|(shard, addr, id)| async move {
            (*shard, addr.clone(), self.client.commit(addr, *id, &hash, *shard, shard_len).await)
        }))
        .await;
        let mut placement = Placement::new();
        for (shard, addr, result) in commits {
            match result {
                Ok(()) => {
                    placement.insert(shard, addr);
                }
                Err(e) => reasons.push(e.to_string()),
            }
        }
        self.record(bucket, name, ContentRecord { hash, size, policy, placement }, reasons, None).await
    }

    /// Stores an object the write path holds whole in memory (it ended below the
    /// small-object threshold): its hash is known before any byte goes out, so a
    /// digest mismatch or known content costs the data servers nothing, and each
    /// shard is written in one request (`PUT /objects/<hash>.<shard>`) instead of
    /// open, stream and commit.
    async fn put_whole(
        &self,
        bucket: &str,
        name: &str,
        mut head: Head,
        policy: Policy,
        expected: Option<ContentHash>,
    ) -> Result<VersionRecord, ObjectError> {
        let hash = head.finish_hash().await?;
        let data = head.buf.freeze();
        if let Some(expected) = expected.filter(|e| *e != hash) {
            return Err(ObjectError::DigestMismatch { expected, actual: hash });
        }
        if let Some(existing) = self.durable_content(&hash).await? {
            return Ok(self.meta.put_version(bucket, name, Some(&existing)).await?);
        }
        let targets = self.choose_targets(policy)?;
        let size = data.len() as u64;
        let layout = Layout::new(policy, size);
        let mut encoder = StripeEncoder::new(layout);
        let mut bodies = vec![BytesMut::new(); policy.shards()];
        for s in 0..layout.stripes() {
            let (a, b) = layout.stripe_span(s);
            let blocks = encoder.encode(data.slice(a as usize..b as usize)).map_err(|e| {
                ObjectError::QuorumNotReached { ok: 0, needed: policy.write_quorum(), reasons: e.to_string() }
            })?;
            for (body, block) in bodies.iter_mut().zip(blocks) {
                body.extend_from_slice(&block);
            }
        }
        // Answer once the write quorum is durable; the remaining shards finish in the
        // background (a failure there schedules a repair), so a PUT waits for its
        // k+1 fastest data servers, not its slowest.
        let quorum = policy.write_quorum();
        let mut writes: FuturesUnordered<_> = targets
            .iter()
            .zip(bodies)
            .enumerate()
            .map(|(i, (addr, body))| {
                let client = self.client.clone();
                let addr = addr.clone();
                tokio::spawn(async move {
                    let result = client.put_shard(&addr, &hash, i as ShardIndex, body.freeze()).await;
                    (i as ShardIndex, addr, result)
                })
            })
            .collect();
        let mut placement = Placement::new();
        let mut failed = std::collections::BTreeSet::new();
        let mut reasons = Vec::new();
        while placement.len() < quorum {
            match writes.next().await {
                Some(Ok((shard, addr, Ok(())))) => {
                    placement.insert(shard, addr);
                }
                Some(Ok((shard, _, Err(e)))) => {
                    failed.insert(shard);
                    reasons.push(e.to_string());
                }
                Some(Err(e)) => reasons.push(format!("shard write task failed: {e}")),
                None => break,
            }
        }
        if placement.len() >= quorum && !writes.is_empty() {
            // The stragglers' targets are recorded too: that is where their shards
            // will be. If one fails, the repair it schedules finds the truth by locate.
            let pending: Placement = targets
                .iter()
                .enumerate()
                .map(|(i, a)| (i as ShardIndex, a.clone()))
                .filter(|(i, _)| !placement.contains_key(i) && !failed.contains(i))
                .collect();
            placement.extend(pending);
            let svc = self.clone();
            let content = ContentRecord { hash, size, policy, placement: placement.clone() };
            tokio::spawn(async move {
                let mut all_stored = true;
                while let Some(done) = writes.next().await {
                    if !matches!(done, Ok((_, _, Ok(())))) {
                        all_stored = false;
                    }
                }
                if !all_stored {
                    svc.schedule_repair(content);
                }
            });
        }
        let cached = self.cache.wants(size).then_some(data);
        self.record(bucket, name, ContentRecord { hash, size, policy, placement }, reasons, cached).await
    }

    /// The end of every write: checks the quorum, records the version, keeps a small
    /// object in the cache, and has shards that missed the write rebuilt.
    async fn record(
        &self,
        bucket: &str,
        name: &str,
        content: ContentRecord,
        reasons: Vec<String>,
        cached: Option<Bytes>,
    ) -> Result<VersionRecord, ObjectError> {
        let needed = content.policy.write_quorum();
        if content.placement.len() < needed {
            // Shards that did commit hold content no version points at; they are
            // harmless and a later write of the same content reuses them.
            return Err(ObjectError::QuorumNotReached {
                ok: content.placement.len(),
                needed,
                reasons: reasons.join("; "),
            });
        }
        let record = self.meta.put_version(bucket, name, Some(&content)).await?;
        if let Some(data) = cached {
            self.cache.insert(content.hash, data);
        }
        if content.placement.len() < content.policy.shards() {
            tracing::warn!(hash = %content.hash, reasons = %reasons.join("; "), "stored with fewer shards than the policy; repairing");
            self.schedule_repair(content);
        }
        Ok(record)
    }

    /// Distinct live data servers for the shards of a new write under `policy`, or
    /// the error that says how many there are and how many it needs.
    fn choose_targets(&self, policy: Policy) -> Result<Vec<String>, ObjectError> {
        let live = self.membership.live();
        choose_servers(&live, policy.shards()).ok_or(ObjectError::NotEnoughServers {
            live: live.len(),
            needed: policy.shards(),
            policy,
        })
    }

    /// The recorded content with this hash, if enough of its shards are still
    /// found on live data servers to count as stored (its write quorum), with the
    /// placement the bus reports now.
    async fn durable_content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, ObjectError> {
        let Some(mut content) = self.meta.content(hash).await? else { return Ok(None) };
        let located = self.locate(&content).await?;
        if located.len() < content.policy.write_quorum() {
            return Ok(None);
        }
        content.placement = located;
        Ok(Some(content))
    }

    /// Starts streaming a new temp shard `shard` to `addr`; blocks are sent through
    /// the returned upload's `sender`.
    pub(crate) fn start_upload(&self, shard: ShardIndex, addr: String) -> ShardUpload {
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        let id = Uuid::new_v4();
        let client = self.client.clone();
        let target = addr.clone();
        let task = tokio::spawn(async move {
            client.upload(&target, id, tokio_stream::wrappers::ReceiverStream::new(receiver)).await
        });
        ShardUpload { shard, addr, id, sender: Some(sender), task }
    }

    /// Streams the body (its first bytes already in `head`) to the uploads stripe by
    /// stripe, hashing it; returns its hash and length. Stops early when fewer uploads
    /// than the write quorum are still alive.
    async fn feed<S, E>(
        &self,
        uploads: &mut [ShardUpload],
        mut head: Head,
        complete: bool,
        mut body: S,
        policy: Policy,
    ) -> Result<(ContentHash, u64), ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let layout = Layout::new(policy, 0);
        let stripe = layout.stripe_data() as usize;
        let mut encoder = StripeEncoder::new(layout);
        let quorum = policy.write_quorum();
        let mut finished = complete;
        head.pipe();
        loop {
            while head.buf.len() >= stripe || (finished && !head.buf.is_empty()) {
                let take = stripe.min(head.buf.len());
                let data = head.buf.split_to(take).freeze();
                let blocks = encoder.encode(data).map_err(|e| ObjectError::QuorumNotReached {
                    ok: 0,
                    needed: quorum,
                    reasons: e.to_string(),
                })?;
                send_blocks(uploads, blocks, quorum).await?;
            }
            if finished {
                for u in uploads.iter_mut() {
                    u.sender = None;
                }
                return Ok((head.finish_hash().await?, head.size));
            }
            match body.next().await {
                Some(Ok(bytes)) => head.push(bytes).await,
                Some(Err(e)) => return Err(ObjectError::BodyBroken(e.to_string())),
                None => finished = true,
            }
        }
    }

    /// Breaks off every upload still streaming, waits for them to end, and removes
    /// every temp shard (best effort: what this misses, the data servers' temp
    /// cleaning removes later).
    pub(crate) async fn abort_all(&self, uploads: &mut [ShardUpload]) {
        for u in uploads.iter_mut() {
            if let Some(s) = u.sender.take() {
                let _ = s.send(Err(std::io::Error::other("write aborted"))).await;
            }
        }
        let _ = join_all(uploads.iter_mut().map(|u| &mut u.task)).await;
        join_all(uploads.iter().map(|u| async move {
            if let Err(e) = self.client.abort(&u.addr, u.id).await {
                tracing::debug!(error = %e, "abort of temp shard failed");
            }
        }))
        .await;
    }
}

/// Sends block `i` to upload `i`; an upload whose server stopped is dropped, and too
/// few left is an error.
async fn send_blocks(uploads: &mut [ShardUpload], blocks: Vec<Bytes>, quorum: usize) -> Result<(), ObjectError> {
    for u in uploads.iter_mut() {
        let Some(sender) = &u.sender else { continue };
        if sender.send(Ok(blocks[u.shard as usize].clone())).await.is_err() {
            tracing::warn!(addr = %u.addr, "shard upload stopped early");
            u.sender = None;
        }
    }
    let alive = uploads.iter().filter(|u| u.sender.is_some()).count();
    if alive < quorum {
        let stopped: Vec<&str> = uploads.iter().filter(|u| u.sender.is_none()).map(|u| u.addr.as_str()).collect();
        return Err(ObjectError::QuorumNotReached {
            ok: alive,
            needed: quorum,
            reasons: format!("data servers stopped accepting: {}", stopped.join(", ")),
        });
    }
    Ok(())
}

/// The body bytes read so far but not yet sent, with the running hash and length.
#[derive(Default)]
struct Head {
    buf: BytesMut,
    hashing: Hashing,
    size: u64,
}

/// Where the running SHA-256 is computed: inline while the body may still turn out
/// small (its hash is needed at once), on a thread of its own once it streams, so
/// that hashing (2 GB/s per core, the costliest step per byte) runs beside the
/// encoding and the sending instead of before them.
enum Hashing {
    Inline(Sha256),
    Piped { chunks: mpsc::Sender<Bytes>, hasher: JoinHandle<Sha256> },
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing::Inline(Sha256::new())
    }
}

/// Chunks queued for the hashing thread.
const HASH_QUEUE: usize = 32;

impl Head {
    async fn push(&mut self, bytes: Bytes) {
        self.size += bytes.len() as u64;
        self.buf.extend_from_slice(&bytes);
        match &mut self.hashing {
            Hashing::Inline(h) => h.update(&bytes),
            // A closed queue means the hashing thread died; `finish_hash` reports it.
            Hashing::Piped { chunks, .. } => drop(chunks.send(bytes).await),
        }
    }

    /// Moves the hashing onto a thread of its own.
    fn pipe(&mut self) {
        if let Hashing::Inline(h) = &mut self.hashing {
            let mut hasher = std::mem::take(h);
            let (chunks, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE);
            let hasher = tokio::task::spawn_blocking(move || {
                while let Some(chunk) = rx.blocking_recv() {
                    hasher.update(&chunk);
                }
                hasher
            });
            self.hashing = Hashing::Piped { chunks, hasher };
        }
    }

    /// The hash of everything pushed.
    async fn finish_hash(&mut self) -> Result<ContentHash, ObjectError> {
        let hasher = match std::mem::take(&mut self.hashing) {
            Hashing::Inline(h) => h,
            Hashing::Piped { chunks, hasher } => {
                drop(chunks);
                hasher.await.map_err(|e| ObjectError::BodyBroken(format!("hashing thread failed: {e}")))?
            }
        };
        Ok(ContentHash::from_bytes(hasher.finalize().into()))
    }

    /// Reads until at least `limit` bytes are buffered or the body ends; true when it
    /// ended.
    async fn fill<S, E>(&mut self, body: &mut S, limit: u64) -> Result<bool, ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        while (self.buf.len() as u64) < limit {
            match body.next().await {
                Some(Ok(bytes)) => self.push(bytes).await,
                Some(Err(e)) => return Err(ObjectError::BodyBroken(e.to_string())),
                None => return Ok(true),
            }
        }
        Ok(false)
    }
}

/// Hashes a body without keeping it.
async fn hash_only<S, E>(body: &mut S) -> Result<ContentHash, ObjectError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Display,
{
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk.map_err(|e| ObjectError::BodyBroken(e.to_string()))?);
    }
    Ok(ContentHash::from_bytes(hasher.finalize().into()))
}
