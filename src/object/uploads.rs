//! Uploading a set of shards to their data servers, to a quorum: the one piece the
//! write path and repair share.
//!
//! [`ShardUploads`] streams one temp shard per target (`POST /temp/<uuid>`), is fed
//! block by block, and at the end commits every shard that arrived whole. Every
//! wait on a data server has a deadline ([`DataTimeouts`]): a target that takes no
//! block for `io` while the others keep up is abandoned (its temp removed in the
//! background) and the others go on; when all are slow alike (a busy disk) the
//! wait is bounded by `sync`; once the quorum is committed the stragglers get `io`
//! more and are then abandoned too, so a stalled data server (SIGSTOP) costs a
//! write a bounded wait, never a hang, and a loaded one does not lose its shards. What is abandoned is reported as a
//! [`ShardFailure`], and the caller decides what a shortfall means (a write below
//! quorum fails; a write at quorum is recorded and repaired).

use std::fmt;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::content::{ContentHash, Placement, Policy, ShardIndex};
use crate::data::client::{DataClient, DataClientError, DataTimeouts};

/// Blocks queued per shard before the feeder waits for that shard's data server.
pub const IN_FLIGHT: usize = 4;

/// Why one shard was not stored.
#[derive(Debug)]
pub struct ShardFailure {
    /// The shard.
    pub shard: ShardIndex,
    /// What its data server did.
    pub error: DataClientError,
}

impl fmt::Display for ShardFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}: {}", self.shard, self.error)
    }
}

/// Failures as one line, for error messages and logs.
pub fn describe(failures: &[ShardFailure]) -> String {
    if failures.is_empty() {
        return "no shard failed".to_string();
    }
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

type Chunk = Result<Bytes, std::io::Error>;

struct Upload {
    shard: ShardIndex,
    addr: String,
    id: Uuid,
    sender: Option<mpsc::Sender<Chunk>>,
    task: JoinHandle<Result<u64, DataClientError>>,
}

/// The shards that made it: where each committed shard is, and why the others did not.
#[derive(Debug, Default)]
pub struct Stored {
    /// Committed shards.
    pub placement: Placement,
    /// The shards that were started and not stored.
    pub failures: Vec<ShardFailure>,
}

/// Temp shards streaming to their data servers.
pub struct ShardUploads {
    client: DataClient,
    tasks: TaskTracker,
    policy: Policy,
    keep: usize,
    uploads: Vec<Upload>,
    failures: Vec<ShardFailure>,
}

impl ShardUploads {
    /// Opens temp shard `shard` on `addr` for each target. A straggler is
    /// abandoned early only while more than `keep` uploads are alive. Background
    /// clean-up of abandoned uploads runs on `tasks`.
    pub fn start(
        client: &DataClient,
        tasks: &TaskTracker,
        policy: Policy,
        keep: usize,
        targets: impl IntoIterator<Item = (ShardIndex, String)>,
    ) -> ShardUploads {
        let uploads = targets
            .into_iter()
            .map(|(shard, addr)| {
                let (sender, receiver) = mpsc::channel(IN_FLIGHT);
                let id = Uuid::new_v4();
                let client = client.clone();
                let target = addr.clone();
                let task = tasks.spawn(async move {
                    client.upload(&target, id, policy, tokio_stream::wrappers::ReceiverStream::new(receiver)).await
                });
                Upload { shard, addr, id, sender: Some(sender), task }
            })
            .collect();
        ShardUploads { client: client.clone(), tasks: tasks.clone(), policy, keep, uploads, failures: Vec::new() }
    }

    /// Uploads still being fed.
    pub fn alive(&self) -> usize {
        self.uploads.iter().filter(|u| u.sender.is_some()).count()
    }

    /// Takes the failures so far (the uploads are being given up).
    pub fn take_failures(&mut self) -> Vec<ShardFailure> {
        std::mem::take(&mut self.failures)
    }

    /// Sends block `u.shard` of `blocks` to every upload still alive. An upload
    /// whose data server has taken no block for the `io` deadline while another
    /// upload keeps up is a straggler: it is abandoned when enough others remain
    /// (`keep` given at start). When every upload is slow alike (a busy disk, not a
    /// stalled server) the wait goes on up to the `sync` deadline. An upload whose
    /// request already ended is dropped with its error.
    pub async fn send(&mut self, blocks: &[Bytes]) {
        let DataTimeouts { io, sync, .. } = self.client.timeouts();
        for i in 0..self.uploads.len() {
            let Some(block) = self.uploads[i].sender.as_ref().and(blocks.get(self.uploads[i].shard as usize)) else {
                continue;
            };
            let started = tokio::time::Instant::now();
            loop {
                let Some(sender) = self.uploads[i].sender.clone() else { break };
                match tokio::time::timeout(io, sender.reserve_owned()).await {
                    Ok(Ok(permit)) => {
                        permit.send(Ok(block.clone()));
                        break;
                    }
                    Ok(Err(_)) => {
                        self.ended_early(i).await;
                        break;
                    }
                    Err(_) => {
                        let others_keep_up = self
                            .uploads
                            .iter()
                            .enumerate()
                            .any(|(j, o)| j != i && o.sender.as_ref().is_some_and(|s| s.capacity() > 0));
                        let waited = started.elapsed();
                        if (others_keep_up && self.alive() > self.keep) || waited >= sync {
                            let u = &self.uploads[i];
                            tracing::warn!(addr = %u.addr, shard = u.shard, ?waited, "data server stalled; abandoning its shard");
                            let error =
                                DataClientError::TimedOut { addr: u.addr.clone(), step: "shard upload", after: waited };
                            self.failures.push(ShardFailure { shard: u.shard, error });
                            self.abandon(i);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Upload `i`'s request ended before its body did: keeps why.
    async fn ended_early(&mut self, i: usize) {
        let u = &mut self.uploads[i];
        u.sender = None;
        let error = match (&mut u.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => DataClientError::Unreachable {
                addr: u.addr.clone(),
                reason: "answered before the shard was complete".into(),
            },
            Err(e) => DataClientError::Unreachable { addr: u.addr.clone(), reason: e.to_string() },
        };
        tracing::warn!(addr = %u.addr, shard = u.shard, %error, "shard upload stopped early");
        self.failures.push(ShardFailure { shard: u.shard, error });
    }

    /// Stops upload `i` and removes its temp shard in the background.
    fn abandon(&mut self, i: usize) {
        let u = &mut self.uploads[i];
        u.sender = None;
        u.task.abort();
        let (client, addr, id) = (self.client.clone(), u.addr.clone(), u.id);
        self.tasks.spawn(async move {
            if let Err(e) = client.abort(&addr, id).await {
                tracing::debug!(error = %e, "abort of an abandoned temp shard failed; its temp cleaning removes it");
            }
        });
    }

    /// Breaks off every upload and removes every temp shard, in the background
    /// (what this misses, the data servers' temp cleaning removes later).
    pub fn abort(mut self) {
        for u in &mut self.uploads {
            if let Some(s) = u.sender.take() {
                // Tells a data server still reading that the body is broken.
                let _ = s.try_send(Err(std::io::Error::other("write aborted")));
            }
        }
        for i in 0..self.uploads.len() {
            self.abandon(i);
        }
    }

    /// Ends every upload's body, waits for the data servers' answers, and commits
    /// each shard that arrived whole (`shard_len` bytes) as `hash`. Returns once
    /// every upload has ended, or `quorum` shards are committed and the others had
    /// `io` more to finish; an upload whose data server does not answer within
    /// `sync` of its body's end is abandoned.
    pub async fn finish(mut self, hash: ContentHash, shard_len: u64, quorum: usize) -> Stored {
        let DataTimeouts { io, sync, .. } = self.client.timeouts();
        let policy = self.policy;
        let mut stored = Stored { placement: Placement::new(), failures: std::mem::take(&mut self.failures) };
        let mut pending = FuturesUnordered::new();
        let mut aborts: Vec<(ShardIndex, String, Uuid, AbortHandle)> = Vec::new();
        for u in self.uploads.drain(..) {
            let Upload { shard, addr, id, sender, task } = u;
            if sender.is_none() {
                continue; // already abandoned and reported
            }
            drop(sender);
            aborts.push((shard, addr.clone(), id, task.abort_handle()));
            let client = self.client.clone();
            pending.push(async move {
                let uploaded = match tokio::time::timeout(sync, task).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(DataClientError::Unreachable { addr: addr.clone(), reason: e.to_string() }),
                    Err(_) => Err(DataClientError::TimedOut { addr: addr.clone(), step: "shard upload", after: sync }),
                };
                let result = match uploaded {
                    Ok(len) if len == shard_len => client.commit(&addr, id, &hash, shard, policy, shard_len).await,
                    Ok(len) => {
                        Err(DataClientError::WrongLength { addr: addr.clone(), actual: len, expected: shard_len })
                    }
                    Err(e) => Err(e),
                };
                (shard, addr, result)
            });
        }
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let next = match grace {
                Some(deadline) => match tokio::time::timeout_at(deadline, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => pending.next().await,
            };
            let Some((shard, addr, result)) = next else { break };
            aborts.retain(|(s, ..)| *s != shard);
            match result {
                Ok(()) => {
                    stored.placement.insert(shard, addr);
                }
                Err(error) => stored.failures.push(ShardFailure { shard, error }),
            }
            if grace.is_none() && stored.placement.len() >= quorum {
                grace = Some(tokio::time::Instant::now() + io);
            }
        }
        // Stragglers past the grace: abandoned, and repaired like any missing shard.
        drop(pending);
        for (shard, addr, id, handle) in aborts {
            handle.abort();
            tracing::warn!(%addr, shard, "data server too slow to store its shard; abandoning it");
            stored.failures.push(ShardFailure {
                shard,
                error: DataClientError::TimedOut { addr: addr.clone(), step: "shard store", after: io },
            });
            let client = self.client.clone();
            self.tasks.spawn(async move {
                let _ = client.abort(&addr, id).await;
            });
        }
        stored
    }
}
