//! The write path: choose the policy (replication for small objects, the cluster's
//! k+m otherwise), choose distinct data servers, cut the body into stripes as it
//! arrives, encode each stripe and stream shard `i`'s block to server `i`, check the
//! client's digest, commit, record the version.
//!
//! Nothing becomes visible unless at least the policy's write quorum of shards is
//! durable and the metadata is committed: a failure at any step aborts the temp
//! shards and answers an error. A cluster with fewer live data servers than k+m but
//! at least the quorum still takes writes, one shard per server (never two on one),
//! and the shards that missed the write are rebuilt in the background. Memory per
//! request is bounded by the small-object threshold plus a stripe and
//! [`IN_FLIGHT`](super::uploads::IN_FLIGHT) blocks per shard, whatever the object's
//! size; a small replicated object is held once, whatever its number of copies.
//!
//! Content is hashed as it arrives (its address is the SHA-256 of the original
//! bytes) and then, when compressing it pays, compressed ([`super::compress`])
//! before it is cut into stripes: the shards code the stored stream, whose encoding
//! and length the content record keeps. Compression adds a frame (256 KiB) per
//! frame in flight to the memory per request.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::compress::{self, Packer};
use super::hashing::PipedHasher;
use super::uploads::{describe, ShardFailure, ShardUploads, Stored};
use super::{ObjectError, ObjectService};
use crate::cluster::choose_servers;
use crate::codec::{Layout, StripeEncoder};
use crate::content::{ContentHash, Encoding, Placement, Policy, ShardIndex};
use crate::meta::{ContentRecord, ContentState, MetaError, VersionRecord};

/// Longest a PUT waits for the collector to finish deleting the content it
/// carries before answering 503: deleting one content's shards takes one request
/// per holder.
pub const GC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a waiting PUT looks again.
const GC_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Content the write path has made durable (or found already stored), not yet
/// pointed at by anything: [`ObjectService::store`]'s result. Its caller records
/// it (a version, an upload's part) and then hands it to
/// [`ObjectService::recorded`]. Left unrecorded, its shards are orphans the
/// collector removes after `--orphan-age`.
#[derive(Debug)]
pub struct StoredContent {
    /// What to record: hash, size, policy, where the shards are.
    pub content: ContentRecord,
    /// The shards that missed the write (repaired once recorded).
    failures: Vec<ShardFailure>,
    /// The bytes of a small object, for the read cache once recorded.
    cached: Option<Bytes>,
}

impl ObjectService {
    /// Stores `body` as the next version of `bucket/name`. When `expected` is given
    /// the body must hash to it, or nothing is stored.
    pub async fn put<S, E>(
        &self,
        bucket: &str,
        name: &str,
        body: S,
        expected: Option<ContentHash>,
    ) -> Result<VersionRecord, ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let stored = self.store(body, expected).await?;
        let record = self.meta.put_version(bucket, name, Some(&stored.content)).await?;
        self.recorded(stored);
        Ok(record)
    }

    /// Makes `body` durable content, to the write quorum, without recording it
    /// anywhere: the part of a PUT before its version. When `expected` is given the
    /// body must hash to it, or nothing is stored. Content already stored (same
    /// hash, its write quorum of shards found) is not written again.
    pub async fn store<S, E>(&self, mut body: S, expected: Option<ContentHash>) -> Result<StoredContent, ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        // Known content is not written again: the body is only hashed, to prove the
        // client really has the bytes its digest names.
        if let Some(expected) = expected {
            if self.durable_content(&expected).await?.is_some() {
                let hash = hash_only(&mut body).await?;
                if hash != expected {
                    return Err(ObjectError::DigestMismatch { expected, actual: hash });
                }
                // Hashing a large body takes long; the collector's grace period
                // protects the content only for so long after the check above, so
                // check again, right before the version that keeps it is recorded.
                let Some(existing) = self.durable_content(&expected).await? else {
                    return Err(MetaError::ContentDeleting { hash }.into());
                };
                return Ok(StoredContent::existing(existing));
            }
        }

        // Read up to the small-object threshold to learn which policy applies.
        let threshold = self.config.small_threshold;
        let mut head = Head::default();
        let complete = head.fill(&mut body, threshold).await?;
        let policy =
            if complete && (head.buf.len() as u64) < threshold { self.config.small_policy } else { self.config.policy };
        if complete {
            return self.store_whole(head, policy, expected).await;
        }
        let targets = self.choose_targets(policy)?;
        let mut uploads = ShardUploads::start(&self.client, &self.tasks, policy, policy.write_quorum(), targets);
        let fed = match self.feed(&mut uploads, head, body, policy).await {
            Ok(done) => done,
            Err(e) => {
                uploads.abort();
                return Err(e);
            }
        };
        let Fed { hash, size, encoding, stored_size } = fed;
        if let Some(expected) = expected.filter(|e| *e != hash) {
            uploads.abort();
            return Err(ObjectError::DigestMismatch { expected, actual: hash });
        }
        // The same content may already be stored (a client that sent no digest): keep
        // the stored shards and drop the new ones.
        let existing = match self.durable_content(&hash).await {
            Ok(existing) => existing,
            Err(e) => {
                uploads.abort();
                return Err(e);
            }
        };
        if let Some(existing) = existing {
            uploads.abort();
            return Ok(StoredContent::existing(existing));
        }
        let shard_len = Layout::new(policy, stored_size).shard_len();
        let stored = uploads.finish(hash, shard_len, policy.write_quorum()).await;
        self.metrics.shards_written.increment(stored.placement.len() as u64);
        let content = ContentRecord::new(hash, size, policy, stored.placement).encoded(encoding, stored_size);
        StoredContent::fresh(content, stored.failures, None)
    }

    /// Stores an object the write path holds whole in memory (it ended below the
    /// small-object threshold): its hash is known before any byte goes out, so a
    /// digest mismatch or known content costs the data servers nothing, and each
    /// shard is written in one request (`PUT /objects/<hash>.<shard>`) instead of
    /// open, stream and commit.
    async fn store_whole(
        &self,
        mut head: Head,
        policy: Policy,
        expected: Option<ContentHash>,
    ) -> Result<StoredContent, ObjectError> {
        let hash = head.finish_hash().await?;
        let data = head.buf.freeze();
        if let Some(expected) = expected.filter(|e| *e != hash) {
            return Err(ObjectError::DigestMismatch { expected, actual: hash });
        }
        if let Some(existing) = self.durable_content(&hash).await? {
            return Ok(StoredContent::existing(existing));
        }
        let targets = self.choose_targets(policy)?;
        let size = data.len() as u64;
        // Compressed when it pays; the cache keeps the original bytes either way.
        let content = ContentRecord::new(hash, size, policy, Placement::new());
        let (content, bodies) = match compress::pack_whole(&self.config.compression, &data).await? {
            Some(packed) => (content.encoded(Encoding::Zstd, packed.len() as u64), encode_whole(&packed, policy)?),
            None => (content, encode_whole(&data, policy)?),
        };
        let stored = self.write_to_quorum(&content, targets, bodies).await;
        let cached = self.cache.wants(size).then_some(data);
        StoredContent::fresh(ContentRecord { placement: stored.placement, ..content }, stored.failures, cached)
    }

    /// What follows recording stored content: a small object goes into the read
    /// cache, and shards that missed the write are rebuilt.
    pub fn recorded(&self, stored: StoredContent) {
        let StoredContent { content, failures, cached } = stored;
        if let Some(data) = cached {
            self.cache.insert(content.hash, data);
        }
        if content.placement.len() < content.policy.shards() {
            tracing::warn!(hash = %content.hash, failures = %describe(&failures), "stored with fewer shards than the policy; repairing");
            self.schedule_repair(content);
        }
    }

    /// Writes each whole shard body to its target in one request and returns once
    /// the write quorum is durable (or every write has ended). The remaining writes
    /// finish in the background — their targets are recorded, since that is where
    /// their shards will be — and a failure there schedules a repair, so a PUT waits
    /// for its k+1 fastest data servers, not its slowest.
    async fn write_to_quorum(
        &self,
        content: &ContentRecord,
        targets: Vec<(ShardIndex, String)>,
        bodies: Vec<Bytes>,
    ) -> Stored {
        let (hash, policy) = (content.hash, content.policy);
        let quorum = policy.write_quorum();
        let mut writes: FuturesUnordered<_> = targets
            .iter()
            .map(|(shard, addr)| {
                let client = self.client.clone();
                let (shard, addr) = (*shard, addr.clone());
                let body = bodies[shard as usize].clone();
                self.tasks.spawn(async move {
                    let result = client.put_shard(&addr, &hash, shard, policy, body).await;
                    (shard, addr, result)
                })
            })
            .collect();
        let mut stored = Stored::default();
        let mut ended = std::collections::BTreeSet::new();
        while stored.placement.len() < quorum {
            match writes.next().await {
                Some(Ok((shard, addr, Ok(())))) => {
                    self.metrics.shards_written.increment(1);
                    ended.insert(shard);
                    stored.placement.insert(shard, addr);
                }
                Some(Ok((shard, _, Err(error)))) => {
                    ended.insert(shard);
                    stored.failures.push(ShardFailure { shard, error });
                }
                Some(Err(e)) => tracing::error!(error = %e, "shard write task failed"),
                None => break,
            }
        }
        if stored.placement.len() >= quorum && !writes.is_empty() {
            let pending: Placement = targets.into_iter().filter(|(i, _)| !ended.contains(i)).collect();
            stored.placement.extend(pending);
            let svc = self.clone();
            let content = ContentRecord { placement: stored.placement.clone(), ..content.clone() };
            self.tasks.spawn(async move {
                let mut all_stored = true;
                while let Some(done) = writes.next().await {
                    if matches!(done, Ok((_, _, Ok(())))) {
                        svc.metrics.shards_written.increment(1);
                    } else {
                        all_stored = false;
                    }
                }
                if !all_stored {
                    svc.schedule_repair(content);
                }
            });
        }
        stored
    }

    /// Distinct live data servers for the shards of a new write under `policy`:
    /// one per shard, or, when fewer are live, one for each of the first shards as
    /// long as they reach the write quorum (the shards left out are the last, parity
    /// first, and repair rebuilds them). Otherwise the error that says how many are
    /// live and how many the policy needs.
    fn choose_targets(&self, policy: Policy) -> Result<Vec<(ShardIndex, String)>, ObjectError> {
        let live = self.membership.live();
        let n = policy.shards().min(live.len());
        if n < policy.write_quorum() {
            return Err(ObjectError::NotEnoughServers { live: live.len(), needed: policy.write_quorum(), policy });
        }
        let chosen = choose_servers(&live, n).ok_or(ObjectError::NotEnoughServers {
            live: live.len(),
            needed: policy.write_quorum(),
            policy,
        })?;
        Ok(chosen.into_iter().enumerate().map(|(i, addr)| (i as ShardIndex, addr)).collect())
    }

    /// The recorded content with this hash, if enough of its shards are still
    /// found on live data servers to count as stored (its write quorum), with the
    /// placement the bus reports now.
    ///
    /// This is the PUT's side of the garbage-collection protocol (README,
    /// "Lifecycle"): content the collector has marked doomed is revived (made live)
    /// before it is reused, so the collector, which deletes only doomed content
    /// after a grace period, cannot take it; content the collector is deleting is
    /// never reused, and no shard of it is written until its deletion is over (we
    /// wait for that, at most [`GC_WAIT`], then answer 503).
    async fn durable_content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, ObjectError> {
        let deadline = tokio::time::Instant::now() + GC_WAIT;
        let mut state = self.meta.content_state(hash).await?;
        loop {
            match state {
                None => return Ok(None),
                Some(ContentState::Live) => break,
                Some(ContentState::Doomed { .. }) => state = self.meta.revive(hash).await?,
                Some(ContentState::Deleting) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(MetaError::ContentDeleting { hash: *hash }.into());
                    }
                    tokio::time::sleep(GC_POLL).await;
                    state = self.meta.content_state(hash).await?;
                }
            }
        }
        let Some(mut content) = self.meta.content(hash).await? else { return Ok(None) };
        let located = self.locate(&content).await?;
        if located.len() < content.policy.write_quorum() {
            return Ok(None);
        }
        content.placement = located;
        Ok(Some(content))
    }

    /// Streams the body (its first bytes already in `head`) to the uploads stripe by
    /// stripe, hashing the original bytes and compressing them when that pays
    /// ([`compress`]); returns what was stored. Stops early when fewer uploads than
    /// the write quorum are still alive.
    async fn feed<S, E>(
        &self,
        uploads: &mut ShardUploads,
        mut head: Head,
        mut body: S,
        policy: Policy,
    ) -> Result<Fed, ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let layout = Layout::new(policy, 0);
        let stripe = layout.stripe_data() as usize;
        let mut encoder = StripeEncoder::new(layout);
        let quorum = policy.write_quorum();
        let mut finished = false;
        let mut packer = Packer::new(&self.config.compression);
        head.pipe();
        loop {
            // Compression sits between the hasher (fed by `head.push`) and the
            // stripes: the stripes take the packer's output, or the original bytes
            // once the sample said compression does not pay.
            if let Some(p) = packer.as_mut() {
                if let Some(declined) = p.feed(&mut head.buf, finished).await? {
                    let mut original = BytesMut::from(declined);
                    original.extend_from_slice(&head.buf);
                    head.buf = original;
                    packer = None;
                }
            }
            let source = match packer.as_mut() {
                Some(p) => &mut p.out,
                None => &mut head.buf,
            };
            while source.len() >= stripe || (finished && !source.is_empty()) {
                let take = stripe.min(source.len());
                let data = source.split_to(take).freeze();
                let blocks = encoder.encode(data)?;
                uploads.send(&blocks).await;
                if uploads.alive() < quorum {
                    return Err(ObjectError::QuorumNotReached {
                        ok: uploads.alive(),
                        needed: quorum,
                        failures: uploads.take_failures(),
                    });
                }
            }
            if finished {
                let (encoding, stored_size) = packer.as_ref().map_or((Encoding::Identity, head.size), Packer::stored);
                return Ok(Fed { hash: head.finish_hash().await?, size: head.size, encoding, stored_size });
            }
            match body.next().await {
                Some(Ok(bytes)) => head.push(bytes).await,
                Some(Err(e)) => return Err(ObjectError::BodyBroken(e.to_string())),
                None => finished = true,
            }
        }
    }
}

impl ObjectService {
    /// The content with this hash if it is already stored (its write quorum of
    /// shards found; doomed content is revived first, as a PUT that dedups does), as
    /// [`store`](ObjectService::store) would return it: for a caller that knows the
    /// hash of bytes it holds elsewhere (a finished resumable upload) and need not
    /// copy them when the content exists.
    pub async fn stored(&self, hash: &ContentHash) -> Result<Option<StoredContent>, ObjectError> {
        Ok(self.durable_content(hash).await?.map(StoredContent::existing))
    }
}

/// What [`ObjectService::feed`] stored: the original bytes' hash and length, and
/// how they are stored.
struct Fed {
    hash: ContentHash,
    size: u64,
    encoding: Encoding,
    stored_size: u64,
}

impl StoredContent {
    /// Content found already stored: recording it is all a write does.
    fn existing(content: ContentRecord) -> StoredContent {
        StoredContent { content, failures: Vec::new(), cached: None }
    }

    /// Content just written: durable only if its write quorum of shards is (the
    /// shards that did commit are then orphans, harmless, and a later write of the
    /// same content reuses them).
    fn fresh(
        content: ContentRecord,
        failures: Vec<ShardFailure>,
        cached: Option<Bytes>,
    ) -> Result<StoredContent, ObjectError> {
        let needed = content.policy.write_quorum();
        if content.placement.len() < needed {
            return Err(ObjectError::QuorumNotReached { ok: content.placement.len(), needed, failures });
        }
        Ok(StoredContent { content, failures, cached })
    }
}

/// The shard bodies of an object held whole: with k = 1 every shard is the object
/// itself (one buffer shared by every copy), otherwise the concatenated blocks of
/// each shard, stripe by stripe.
fn encode_whole(data: &Bytes, policy: Policy) -> Result<Vec<Bytes>, ObjectError> {
    if policy.k == 1 {
        return Ok(vec![data.clone(); policy.shards()]);
    }
    let layout = Layout::new(policy, data.len() as u64);
    let mut encoder = StripeEncoder::new(layout);
    let mut bodies = vec![BytesMut::with_capacity(layout.shard_len() as usize); policy.shards()];
    for s in 0..layout.stripes() {
        let (a, b) = layout.stripe_span(s);
        let blocks = encoder.encode(data.slice(a as usize..b as usize))?;
        for (body, block) in bodies.iter_mut().zip(blocks) {
            body.extend_from_slice(&block);
        }
    }
    Ok(bodies.into_iter().map(BytesMut::freeze).collect())
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
    Piped(PipedHasher),
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing::Inline(Sha256::new())
    }
}

impl Head {
    async fn push(&mut self, bytes: Bytes) {
        self.size += bytes.len() as u64;
        self.buf.extend_from_slice(&bytes);
        match &mut self.hashing {
            Hashing::Inline(h) => h.update(&bytes),
            Hashing::Piped(p) => p.update(bytes).await,
        }
    }

    /// Moves the hashing onto a thread of its own.
    fn pipe(&mut self) {
        if let Hashing::Inline(h) = &mut self.hashing {
            self.hashing = Hashing::Piped(PipedHasher::continue_from(std::mem::take(h)));
        }
    }

    /// The hash of everything pushed.
    async fn finish_hash(&mut self) -> Result<ContentHash, ObjectError> {
        match std::mem::take(&mut self.hashing) {
            Hashing::Inline(h) => Ok(ContentHash::from_bytes(h.finalize().into())),
            Hashing::Piped(p) => Ok(p.finish().await?),
        }
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

/// Hashes a body without keeping it, on a thread of its own like the streamed path.
async fn hash_only<S, E>(body: &mut S) -> Result<ContentHash, ObjectError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Display,
{
    let mut hasher = PipedHasher::new();
    while let Some(chunk) = body.next().await {
        hasher.update(chunk.map_err(|e| ObjectError::BodyBroken(e.to_string()))?).await;
    }
    Ok(hasher.finish().await?)
}
