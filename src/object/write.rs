//! The write path: choose data servers, stream the body into a temp shard on each
//! while hashing it, check the client's digest, commit, record the version.
//!
//! Nothing becomes visible unless enough shards are durable and the metadata is
//! committed: a failure at any step aborts the temp shards and answers an error.
//! Memory per request is bounded by [`CHUNK`] × [`IN_FLIGHT`] per shard, whatever the
//! object's size.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::client::DataClientError;
use super::{ObjectError, ObjectService};
use crate::cluster::choose_servers;
use crate::content::{ContentHash, Placement, ShardIndex};
use crate::meta::{ContentRecord, VersionRecord};

/// Bytes gathered from the client before they are sent on to the shards: large
/// enough that per-chunk costs vanish, small enough to keep memory flat.
pub const CHUNK: usize = 128 * 1024;
/// Chunks queued per shard before the write waits for the slowest data server.
pub const IN_FLIGHT: usize = 4;

/// One shard's upload in progress.
struct ShardUpload {
    shard: ShardIndex,
    addr: String,
    id: Uuid,
    sender: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    task: JoinHandle<Result<u64, DataClientError>>,
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
        // Known content is not written again: the body is only hashed, to prove the
        // client really has the bytes its digest names.
        if let Some(expected) = expected {
            if let Some(existing) = self.durable_content(&expected).await? {
                let (hash, _) = hash_only(body).await?;
                if hash != expected {
                    return Err(ObjectError::DigestMismatch { expected, actual: hash });
                }
                return Ok(self.meta.put_version(bucket, name, Some(&existing)).await?);
            }
        }
        let policy = self.config.policy;
        let live = self.membership.live();
        let targets = choose_servers(&live, policy.shards()).ok_or(ObjectError::NotEnoughServers {
            live: live.len(),
            needed: policy.shards(),
            policy,
        })?;
        let mut uploads: Vec<ShardUpload> =
            targets.into_iter().enumerate().map(|(i, addr)| self.start_upload(i as ShardIndex, addr)).collect();

        let (hash, size) = match self.feed(&mut uploads, body, policy.write_quorum()).await {
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

        let mut reasons = Vec::new();
        let mut uploaded = Vec::new();
        for u in uploads {
            let ShardUpload { shard, addr, id, task, .. } = u;
            match task.await {
                Ok(Ok(len)) if len == size => uploaded.push((shard, addr, id)),
                Ok(Ok(len)) => reasons.push(format!("{addr} stored {len} of {size} bytes")),
                Ok(Err(e)) => reasons.push(e.to_string()),
                Err(e) => reasons.push(format!("upload to {addr} failed: {e}")),
            }
        }
        let commits = join_all(uploaded.iter().map(|(shard, addr, id)| async move {
            (*shard, addr.clone(), self.client.commit(addr, *id, &hash, *shard, size).await)
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
        let needed = policy.write_quorum();
        if placement.len() < needed {
            // Shards that did commit hold content no version points at; they are
            // harmless and a later write of the same content reuses them.
            return Err(ObjectError::QuorumNotReached { ok: placement.len(), needed, reasons: reasons.join("; ") });
        }
        if !reasons.is_empty() {
            tracing::warn!(%hash, reasons = %reasons.join("; "), "write acknowledged with fewer shards than the policy");
        }
        let content = ContentRecord { hash, size, policy, placement };
        Ok(self.meta.put_version(bucket, name, Some(&content)).await?)
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

    fn start_upload(&self, shard: ShardIndex, addr: String) -> ShardUpload {
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        let id = Uuid::new_v4();
        let client = self.client.clone();
        let target = addr.clone();
        let task = tokio::spawn(async move {
            client.upload(&target, id, tokio_stream::wrappers::ReceiverStream::new(receiver)).await
        });
        ShardUpload { shard, addr, id, sender: Some(sender), task }
    }

    /// Streams the body to every upload, hashing it; returns its hash and length.
    /// Stops early when fewer than `quorum` uploads are still alive.
    async fn feed<S, E>(
        &self,
        uploads: &mut [ShardUpload],
        mut body: S,
        quorum: usize,
    ) -> Result<(ContentHash, u64), ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut pending = BytesMut::with_capacity(CHUNK);
        loop {
            let next = body.next().await;
            let finished = next.is_none();
            match next {
                Some(Ok(bytes)) => {
                    hasher.update(&bytes);
                    size += bytes.len() as u64;
                    pending.extend_from_slice(&bytes);
                }
                Some(Err(e)) => {
                    let reason = e.to_string();
                    for u in uploads.iter_mut() {
                        if let Some(s) = u.sender.take() {
                            let _ = s.send(Err(std::io::Error::other(reason.clone()))).await;
                        }
                    }
                    return Err(ObjectError::BodyBroken(reason));
                }
                None => {}
            }
            if pending.len() >= CHUNK || (finished && !pending.is_empty()) {
                let chunk = pending.split().freeze();
                pending.reserve(CHUNK);
                for u in uploads.iter_mut() {
                    let Some(sender) = &u.sender else { continue };
                    if sender.send(Ok(chunk.clone())).await.is_err() {
                        tracing::warn!(addr = %u.addr, "shard upload stopped early");
                        u.sender = None;
                    }
                }
                let alive = uploads.iter().filter(|u| u.sender.is_some()).count();
                if alive < quorum {
                    let stopped: Vec<&str> =
                        uploads.iter().filter(|u| u.sender.is_none()).map(|u| u.addr.as_str()).collect();
                    return Err(ObjectError::QuorumNotReached {
                        ok: alive,
                        needed: quorum,
                        reasons: format!("data servers stopped accepting: {}", stopped.join(", ")),
                    });
                }
            }
            if finished {
                for u in uploads.iter_mut() {
                    u.sender = None;
                }
                return Ok((ContentHash::from_bytes(hasher.finalize().into()), size));
            }
        }
    }

    /// Breaks off every upload still streaming, waits for them to end, and removes
    /// every temp shard (best effort: what this misses, the data servers' temp
    /// cleaning removes later).
    async fn abort_all(&self, uploads: &mut [ShardUpload]) {
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

/// Hashes a body without storing it; returns its hash and length.
async fn hash_only<S, E>(mut body: S) -> Result<(ContentHash, u64), ObjectError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Display,
{
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ObjectError::BodyBroken(e.to_string()))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((ContentHash::from_bytes(hasher.finalize().into()), size))
}
