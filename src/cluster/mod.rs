//! Who is alive and who holds what, as an API server sees it.
//!
//! [`Membership`] keeps the live data servers from their heartbeats (a server silent
//! for longer than the expiry is dropped) and chooses where a write goes.
//! [`locate`] asks the bus who holds the shards of a piece of content and stops
//! listening as soon as the answer is complete. Uses the bus; knows nothing of HTTP
//! or the metadata store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError, Heartbeat};
use crate::content::{ContentHash, ShardIndex};

/// A live data server as the last heartbeat described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveServer {
    /// Its HTTP address.
    pub addr: String,
    /// Free bytes it announced.
    pub free: u64,
}

struct Member {
    free: u64,
    last_seen: Instant,
}

/// The set of live data servers, fed by heartbeats. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    members: Arc<RwLock<HashMap<String, Member>>>,
    expiry: Duration,
}

impl Membership {
    /// An empty membership that forgets a server `expiry` after its last heartbeat.
    pub fn new(expiry: Duration) -> Membership {
        Membership { members: Arc::default(), expiry }
    }

    /// Records heartbeats from `heartbeats` until `shutdown` is cancelled.
    pub fn follow(&self, mut heartbeats: mpsc::Receiver<Heartbeat>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    hb = heartbeats.recv() => match hb {
                        Some(hb) => this.record(&hb),
                        None => return,
                    },
                }
            }
        });
    }

    /// Records one heartbeat.
    pub fn record(&self, hb: &Heartbeat) {
        let mut members = self.members.write().expect("membership lock");
        let now = Instant::now();
        if members.insert(hb.addr.clone(), Member { free: hb.free, last_seen: now }).is_none() {
            tracing::info!(addr = %hb.addr, "data server joined");
        }
        // Forget long-dead servers so the map does not grow without bound.
        members.retain(|_, m| now.duration_since(m.last_seen) < self.expiry * 10);
    }

    /// The servers heard from within the expiry, in address order.
    pub fn live(&self) -> Vec<LiveServer> {
        let now = Instant::now();
        let members = self.members.read().expect("membership lock");
        let mut live: Vec<LiveServer> = members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) < self.expiry)
            .map(|(addr, m)| LiveServer { addr: addr.clone(), free: m.free })
            .collect();
        live.sort_by(|a, b| a.addr.cmp(&b.addr));
        live
    }

    /// Whether `addr` heartbeated within the expiry.
    pub fn is_live(&self, addr: &str) -> bool {
        let members = self.members.read().expect("membership lock");
        members.get(addr).is_some_and(|m| m.last_seen.elapsed() < self.expiry)
    }
}

/// Chooses `n` distinct servers for a write, at random with probability weighted by
/// free space, so that fuller disks fill more slowly and equal ones share evenly.
/// `None` when fewer than `n` are live.
pub fn choose_servers(live: &[LiveServer], n: usize) -> Option<Vec<String>> {
    if live.len() < n {
        return None;
    }
    // +1: a server reporting 0 free (or failing to read it) is unlikely, not impossible.
    let chosen = live
        .choose_multiple_weighted(&mut rand::rng(), n, |s| s.free as f64 + 1.0)
        .ok()?
        .map(|s| s.addr.clone())
        .collect::<Vec<_>>();
    (chosen.len() == n).then_some(chosen)
}

/// Where the bus says the shards of some content are: shard index → the servers
/// holding it, in reply order.
pub type Holders = BTreeMap<ShardIndex, Vec<String>>;

/// Asks the bus who holds shards `0..shards` of `hash`. Finishes as soon as every
/// shard has a holder or every live server has answered, and otherwise after
/// `timeout`.
pub async fn locate(
    bus: &Bus,
    membership: &Membership,
    hash: ContentHash,
    shards: usize,
    timeout: Duration,
) -> Result<Holders, BusError> {
    let live: HashSet<String> = membership.live().into_iter().map(|s| s.addr).collect();
    let mut holders = Holders::new();
    if live.is_empty() {
        return Ok(holders);
    }
    let mut pending = bus.broadcast_locate(hash).await?;
    let mut answered = HashSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let reply = match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(reply)) => reply,
            Ok(None) | Err(_) => break,
        };
        for shard in reply.shards {
            holders.entry(shard).or_default().push(reply.addr.clone());
        }
        answered.insert(reply.addr);
        let complete = (0..shards as ShardIndex).all(|s| holders.contains_key(&s));
        if complete || live.is_subset(&answered) {
            break;
        }
    }
    Ok(holders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<LiveServer> {
        (0..n).map(|i| LiveServer { addr: format!("127.0.0.{i}:1"), free: 1 << 30 }).collect()
    }

    #[test]
    fn choose_gives_distinct_servers_or_none() {
        let live = servers(6);
        for _ in 0..100 {
            let chosen = choose_servers(&live, 6).unwrap();
            let distinct: HashSet<_> = chosen.iter().collect();
            assert_eq!(distinct.len(), 6);
        }
        assert!(choose_servers(&live, 7).is_none());
        assert_eq!(choose_servers(&live, 0), Some(vec![]));
    }

    #[test]
    fn choose_prefers_free_space() {
        let mut live = servers(2);
        live[0].free = 1000;
        live[1].free = 1_000_000;
        let picks = (0..1000).filter(|_| choose_servers(&live, 1).unwrap()[0] == live[1].addr).count();
        assert!(picks > 950, "the emptier server got {picks} of 1000");
    }

    #[test]
    fn silent_servers_expire() {
        let m = Membership::new(Duration::from_millis(50));
        m.record(&Heartbeat { addr: "a:1".into(), free: 1 });
        assert!(m.is_live("a:1"));
        assert_eq!(m.live().len(), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!m.is_live("a:1"));
        assert!(m.live().is_empty());
    }
}
