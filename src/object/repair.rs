//! Repair: rebuild the shards of a piece of content that no live data server holds
//! any more, onto live data servers that hold none of its shards, through the normal
//! temp + commit protocol, and record the new placement.
//!
//! Reads that had to route around a shard and writes that stored fewer than all
//! shards schedule a repair in the background; at most one repair per content runs
//! at a time in one API server. The shards still held are found by asking the bus,
//! so a shard that is merely slow is not rebuilt, and a corrupt one (which its data
//! server moved aside) is.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::write::ShardUpload;
use super::{ObjectError, ObjectService};
use crate::cluster::{self, choose_servers, LiveServer};
use crate::codec::{Layout, StripeEncoder};
use crate::content::{Placement, ShardIndex};
use crate::meta::ContentRecord;

/// How long after a failed repair of a content the next one may start.
pub const REPAIR_COOLDOWN: Duration = Duration::from_secs(5);

impl ObjectService {
    /// Rebuilds, in the background, whatever shards of `content` are missing. At most
    /// one repair of a content runs at a time, and none starts within
    /// [`REPAIR_COOLDOWN`] of the last one, so a read-heavy object on a degraded
    /// cluster does not cost a locate per read.
    pub fn schedule_repair(&self, content: ContentRecord) {
        {
            let mut repairs = self.repairs.lock().expect("repairs lock");
            let now = Instant::now();
            repairs.retain(|_, done| done.is_none_or(|t| now.duration_since(t) < REPAIR_COOLDOWN));
            if repairs.contains_key(&content.hash) {
                return;
            }
            repairs.insert(content.hash, None);
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let result = svc.repair(&content).await;
            let finished = match &result {
                // A complete repair needs no cooldown: the next loss may come any time.
                Ok(_) => None,
                Err(_) => Some(Instant::now()),
            };
            let mut repairs = svc.repairs.lock().expect("repairs lock");
            match finished {
                Some(t) => repairs.insert(content.hash, Some(t)),
                None => repairs.remove(&content.hash),
            };
            drop(repairs);
            match result {
                Ok(rebuilt) if !rebuilt.is_empty() => {
                    tracing::info!(hash = %content.hash, shards = ?rebuilt, "repaired lost shards")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(hash = %content.hash, error = %e, "repair failed; a later read retries"),
            }
        });
    }

    /// Where each missing shard is rebuilt: on the live server that held it before
    /// when it holds no other shard of the content (a shard lost to corruption goes
    /// back where it was, keeping every shard on its own server); otherwise on a live
    /// server holding no shard of the content (weighted by free space); and when
    /// there are too few of those, on the live servers holding the fewest, so that a
    /// shrunken cluster still gets its redundancy back against corruption, if not
    /// against the loss of a server.
    fn repair_targets(
        &self,
        content: &ContentRecord,
        holders: &cluster::Holders,
        missing: &[ShardIndex],
    ) -> Vec<(ShardIndex, String)> {
        let mut load: HashMap<String, usize> = HashMap::new();
        for addrs in holders.values() {
            for a in addrs {
                *load.entry(a.clone()).or_default() += 1;
            }
        }
        let mut targets = Vec::new();
        let mut rest = Vec::new();
        for shard in missing {
            match content.placement.get(shard) {
                Some(addr) if self.membership.is_live(addr) && !load.contains_key(addr) => {
                    load.insert(addr.clone(), 1);
                    targets.push((*shard, addr.clone()));
                }
                _ => rest.push(*shard),
            }
        }
        let live = self.membership.live();
        let spare: Vec<LiveServer> = live.iter().filter(|s| !load.contains_key(&s.addr)).cloned().collect();
        let chosen = choose_servers(&spare, rest.len().min(spare.len())).unwrap_or_default();
        let mut rest = rest.into_iter();
        for addr in chosen {
            if let Some(shard) = rest.next() {
                *load.entry(addr.clone()).or_default() += 1;
                targets.push((shard, addr));
            }
        }
        for shard in rest {
            let Some(least) =
                live.iter().min_by_key(|s| (load.get(&s.addr).copied().unwrap_or(0), std::cmp::Reverse(s.free)))
            else {
                break;
            };
            *load.entry(least.addr.clone()).or_default() += 1;
            targets.push((shard, least.addr.clone()));
        }
        targets
    }

    /// Rebuilds the shards of `content` no live data server holds; returns their
    /// indices (empty when nothing was missing).
    pub async fn repair(&self, content: &ContentRecord) -> Result<Vec<ShardIndex>, ObjectError> {
        let policy = content.policy;
        let n = policy.shards();
        let holders = cluster::locate(&self.bus, &self.membership, content.hash, n, self.config.locate_timeout).await?;
        let mut placement = Placement::new();
        for (shard, addrs) in &holders {
            if let Some(addr) = addrs.iter().find(|a| self.membership.is_live(a)) {
                if (*shard as usize) < n {
                    placement.insert(*shard, addr.clone());
                }
            }
        }
        let missing: Vec<ShardIndex> = (0..n as ShardIndex).filter(|s| !placement.contains_key(s)).collect();
        if missing.is_empty() {
            if placement != content.placement {
                self.meta.set_placement(&content.hash, &placement).await?;
            }
            return Ok(Vec::new());
        }
        if placement.len() < policy.k as usize {
            return Err(ObjectError::Unavailable {
                hash: content.hash,
                reasons: format!("{} shards found, {} needed to rebuild the others", placement.len(), policy.k),
            });
        }
        let targets = self.repair_targets(content, &holders, &missing);
        if targets.is_empty() {
            return Err(ObjectError::NotEnoughServers { live: self.membership.live().len(), needed: n, policy });
        }
        let mut uploads: Vec<ShardUpload> =
            targets.into_iter().map(|(shard, addr)| self.start_upload(shard, addr)).collect();

        let layout = Layout::new(policy, content.size);
        let source = ContentRecord { placement: placement.clone(), ..content.clone() };
        let stripes = layout.stripes();
        let mut reader = super::read::StripeReader::new(self, &source, stripes.saturating_sub(1));
        let mut encoder = StripeEncoder::new(layout);
        for s in 0..stripes {
            let rebuilt = async {
                let data = reader.stripe(s).await?;
                encoder
                    .encode(data)
                    .map_err(|e| ObjectError::Unavailable { hash: content.hash, reasons: e.to_string() })
            };
            let blocks = match rebuilt.await {
                Ok(b) => b,
                Err(e) => {
                    self.abort_all(&mut uploads).await;
                    return Err(e);
                }
            };
            for u in uploads.iter_mut() {
                if let Some(sender) = &u.sender {
                    if sender.send(Ok(blocks[u.shard as usize].clone())).await.is_err() {
                        u.sender = None;
                    }
                }
            }
        }
        for u in uploads.iter_mut() {
            u.sender = None;
        }
        let want = layout.shard_len();
        let mut rebuilt = Vec::new();
        let results = join_all(uploads.into_iter().map(|u| async move {
            let stored = match u.task.await {
                Ok(Ok(len)) if len == want => self.client.commit(&u.addr, u.id, &content.hash, u.shard, want).await,
                Ok(Ok(len)) => Err(super::client::DataClientError::Status {
                    addr: u.addr.clone(),
                    status: 200,
                    body: format!("stored {len} of {want} bytes"),
                }),
                Ok(Err(e)) => Err(e),
                Err(e) => {
                    Err(super::client::DataClientError::Unreachable { addr: u.addr.clone(), reason: e.to_string() })
                }
            };
            (u.shard, u.addr, stored)
        }))
        .await;
        for (shard, addr, stored) in results {
            match stored {
                Ok(()) => {
                    placement.insert(shard, addr);
                    rebuilt.push(shard);
                }
                Err(e) => tracing::warn!(shard, error = %e, "rebuilt shard not stored"),
            }
        }
        self.meta.set_placement(&content.hash, &placement).await?;
        Ok(rebuilt)
    }
}
