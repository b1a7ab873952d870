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
use tokio_util::task::TaskTracker;

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

/// A data server as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its HTTP address.
    pub addr: String,
    /// Free bytes it announced last.
    pub free: u64,
    /// Time since its last heartbeat.
    pub age: Duration,
    /// Whether it counts as live (heard within the expiry).
    pub live: bool,
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

    /// Records heartbeats from `heartbeats` until `shutdown` is cancelled, on a
    /// task owned by `tasks`.
    pub fn follow(&self, mut heartbeats: mpsc::Receiver<Heartbeat>, shutdown: CancellationToken, tasks: &TaskTracker) {
        let this = self.clone();
        tasks.spawn(async move {
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

    /// Every data server heard from recently (live or not, the dead ones until
    /// they are forgotten at ten times the expiry), in address order: for status.
    pub fn members(&self) -> Vec<MemberStatus> {
        let members = self.members.read().expect("membership lock");
        let mut out: Vec<MemberStatus> = members
            .iter()
            .map(|(addr, m)| {
                let age = m.last_seen.elapsed();
                MemberStatus { addr: addr.clone(), free: m.free, age, live: age < self.expiry }
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
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
///
/// Only what can be true reaches the answer: a reply from an address that is not a
/// live member (heartbeating now) is dropped and does not count as an answer; so
/// is a reply listing any shard index outside `0..shards` (the content's `k + m`:
/// no honest holder sends one); each (shard, server) pair is kept once. What was
/// dropped is logged in one line.
///
/// Until bus messages are authenticated, a participant that sends valid-looking
/// replies under a member's address can still end a locate early or point at
/// shards the member does not hold; the read path then finds them missing and
/// answers 503, never wrong bytes.
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
    let mut dropped = Dropped::default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let reply = match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(reply)) => reply,
            Ok(None) | Err(_) => break,
        };
        if !live.contains(&reply.addr) {
            dropped.non_members += 1;
            dropped.example.get_or_insert_with(|| reply.addr.clone());
            continue;
        }
        // An honest holder never lists an index outside the content's policy (the
        // policy is fixed per content), so such a reply is not from an honest
        // member: none of it is believed, and it is not that member's answer.
        if let Some(bad) = reply.shards.iter().find(|s| **s as usize >= shards) {
            dropped.out_of_range += 1;
            dropped.example.get_or_insert_with(|| format!("{} for shard {bad}", reply.addr));
            continue;
        }
        for shard in reply.shards {
            let addrs = holders.entry(shard).or_default();
            if !addrs.contains(&reply.addr) {
                addrs.push(reply.addr.clone());
            }
        }
        answered.insert(reply.addr);
        let complete = (0..shards as ShardIndex).all(|s| holders.contains_key(&s));
        if complete || live.is_subset(&answered) {
            break;
        }
    }
    if dropped.non_members + dropped.out_of_range > 0 {
        tracing::warn!(
            %hash, non_members = dropped.non_members, out_of_range = dropped.out_of_range,
            example = dropped.example.as_deref().unwrap_or(""), shards,
            "dropped locate replies from non-members or naming shards outside the policy"
        );
    }
    Ok(holders)
}

/// What one locate threw away, for its one warning.
#[derive(Default)]
struct Dropped {
    non_members: usize,
    out_of_range: usize,
    example: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBroker;
    use crate::bus::{LocateReply, Transport};

    /// An asking bus, and a responder on the same broker that answers every locate
    /// with `bodies`, in order, straight through the transport (so nothing checks
    /// them on the way out).
    async fn asker_and_responder(bodies: Vec<Vec<u8>>, shutdown: &CancellationToken) -> Bus {
        let broker = MemoryBroker::new();
        let asker = Bus::new(Arc::new(broker.connect()), shutdown.clone()).await.unwrap();
        let transport: Arc<dyn Transport> = Arc::new(broker.connect());
        let responder = Bus::new(transport.clone(), shutdown.clone()).await.unwrap();
        let mut requests = responder.locate_requests().await.unwrap();
        tokio::spawn(async move {
            while let Some(req) = requests.recv().await {
                for body in &bodies {
                    transport.send_reply(&req.reply_to, &req.correlation_id, body.clone().into()).await.unwrap();
                }
            }
        });
        asker
    }

    fn reply(addr: &str, shards: &[ShardIndex]) -> Vec<u8> {
        serde_json::to_vec(&LocateReply { addr: addr.into(), shards: shards.to_vec() }).unwrap()
    }

    fn members(addrs: &[&str]) -> Membership {
        let m = Membership::new(Duration::from_secs(60));
        for addr in addrs {
            m.record(&Heartbeat { addr: addr.to_string(), free: 1 });
        }
        m
    }

    #[tokio::test]
    async fn locate_keeps_only_members_in_range_once_each() {
        let shutdown = CancellationToken::new();
        let (m1, m2) = ("127.0.0.1:1", "127.0.0.1:2");
        let bus = asker_and_responder(
            vec![
                reply("10.9.9.9:1", &[0, 1, 2]),
                reply("127.0.0.1:3", &[3]),
                reply(m1, &[0, 5, 6, 1000, u32::MAX]),
                reply(m1, &[0, 6]),
                reply(m1, &[0, 5]),
                reply(m1, &[0]),
                b"not-json".to_vec(),
                reply("http://127.0.0.1:2/", &[1]),
                reply(m2, &[1, 1]),
                reply(m2, &[1, 2]),
            ],
            &shutdown,
        )
        .await;
        let started = std::time::Instant::now();
        let holders =
            locate(&bus, &members(&[m1, m2]), ContentHash::of(b"x"), 6, Duration::from_secs(5)).await.unwrap();
        // Both members answered, so the locate ends long before its timeout.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let want: Holders = [
            (0, vec![m1.to_string()]),
            (1, vec![m2.to_string()]),
            (2, vec![m2.to_string()]),
            (5, vec![m1.to_string()]),
        ]
        .into_iter()
        .collect();
        assert_eq!(holders, want);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn answers_from_non_members_do_not_end_a_locate() {
        let shutdown = CancellationToken::new();
        // Every shard "found", but only by strangers: the locate waits for the member.
        let bus =
            asker_and_responder(vec![reply("10.0.0.1:1", &[0, 1]), reply("10.0.0.2:1", &[0, 1])], &shutdown).await;
        let timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let holders = locate(&bus, &members(&["127.0.0.1:1"]), ContentHash::of(b"y"), 2, timeout).await.unwrap();
        assert!(holders.is_empty(), "{holders:?}");
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_reply_naming_a_shard_outside_the_policy_is_not_believed_nor_an_answer() {
        let shutdown = CancellationToken::new();
        let m1 = "127.0.0.1:1";
        // The first "answer" from m1 would complete the locate if any of it counted.
        let bus = asker_and_responder(vec![reply(m1, &[0, 1, 2]), reply(m1, &[1])], &shutdown).await;
        let started = std::time::Instant::now();
        let holders = locate(&bus, &members(&[m1]), ContentHash::of(b"z"), 2, Duration::from_secs(5)).await.unwrap();
        assert_eq!(holders, [(1, vec![m1.to_string()])].into_iter().collect::<Holders>());
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        shutdown.cancel();
    }

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
