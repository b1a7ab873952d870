//! A fault-injecting [`Transport`] for tests: wraps any transport and, by
//! configuration and a seed, drops, duplicates, delays (and so reorders) and
//! corrupts the messages a part publishes and receives, and forges locate replies
//! that carry shard indices outside any policy and addresses of servers that are
//! not members.
//!
//! The seed fixes every coin flip; the interleaving of tasks still varies, so a
//! seed narrows a failure down rather than replaying it exactly.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn::bus::{BusError, Delivery, Exchange, LocateReply, Transport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

/// How often each fault happens, per message (0.0 to 1.0).
#[derive(Clone, Debug)]
pub struct Faults {
    /// The message vanishes.
    pub drop: f64,
    /// The message is delivered twice.
    pub duplicate: f64,
    /// The message is held back up to `max_delay`, so later ones overtake it.
    pub delay: f64,
    /// Longest hold-back of a delayed message.
    pub max_delay: Duration,
    /// Bytes of the body are flipped, or it is cut short.
    pub corrupt: f64,
    /// A received locate reply is followed by forged ones: the same server
    /// claiming out-of-range indices, and non-members claiming every shard.
    pub forge_reply: f64,
}

impl Faults {
    /// A bus that misbehaves often but still gets most messages through.
    pub fn rough() -> Faults {
        Faults {
            drop: 0.05,
            duplicate: 0.1,
            delay: 0.2,
            max_delay: Duration::from_millis(40),
            corrupt: 0.05,
            forge_reply: 0.5,
        }
    }
}

/// What happened to the messages so far.
#[derive(Clone, Debug, Default)]
pub struct FaultCounts {
    pub passed: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub corrupted: u64,
    pub forged: u64,
}

/// The wrapper. Cheap to share; each wrapped part should get its own seed.
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    faults: Faults,
    rng: Arc<Mutex<StdRng>>,
    counts: Arc<Mutex<FaultCounts>>,
}

impl FaultyTransport {
    pub fn new(inner: Arc<dyn Transport>, faults: Faults, seed: u64) -> FaultyTransport {
        FaultyTransport {
            inner,
            faults,
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            counts: Arc::default(),
        }
    }

    /// What this wrapper did so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts.lock().unwrap().clone()
    }

    /// The shared counters, readable after the wrapper moved into a cluster.
    pub fn counts_handle(&self) -> Arc<Mutex<FaultCounts>> {
        self.counts.clone()
    }

    fn plan(&self, replies: bool) -> Plan {
        plan(&self.faults, &self.rng, &self.counts, replies)
    }

    /// Forwards `raw` into a new receiver with faults applied on the way.
    fn faulty_receiver(&self, mut raw: mpsc::Receiver<Delivery>, replies: bool) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(1024);
        let faults = self.faults.clone();
        let rng = self.rng.clone();
        let counts = self.counts.clone();
        tokio::spawn(async move {
            while let Some(d) = raw.recv().await {
                if tx.is_closed() {
                    return;
                }
                let p = plan(&faults, &rng, &counts, replies);
                for d in p.apply(d) {
                    match p.delay {
                        Some(delay) => {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = tx.send(d).await;
                            });
                        }
                        None => {
                            if tx.send(d).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        rx
    }
}

/// The fate of one message.
struct Plan {
    drop: bool,
    duplicate: bool,
    delay: Option<Duration>,
    /// Index into the body to flip, or where to cut it, as a fraction.
    corrupt: Option<(bool, f64, u8)>,
    forge: Option<u32>,
}

fn plan(faults: &Faults, rng: &Mutex<StdRng>, counts: &Mutex<FaultCounts>, replies: bool) -> Plan {
    let mut rng = rng.lock().unwrap();
    let p = Plan {
        drop: rng.random_bool(faults.drop),
        duplicate: rng.random_bool(faults.duplicate),
        delay: rng.random_bool(faults.delay).then(|| faults.max_delay.mul_f64(rng.random_range(0.0..1.0))),
        corrupt: rng
            .random_bool(faults.corrupt)
            .then(|| (rng.random_bool(0.5), rng.random_range(0.0..1.0), rng.random())),
        forge: (replies && rng.random_bool(faults.forge_reply)).then(|| rng.random()),
    };
    let mut c = counts.lock().unwrap();
    if p.drop {
        c.dropped += 1;
    } else {
        c.passed += 1;
        c.duplicated += p.duplicate as u64;
        c.delayed += p.delay.is_some() as u64;
        c.corrupted += p.corrupt.is_some() as u64;
        c.forged += p.forge.is_some() as u64;
    }
    p
}

impl Plan {
    /// The messages to deliver instead of `d`.
    fn apply(&self, mut d: Delivery) -> Vec<Delivery> {
        if self.drop {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(salt) = self.forge {
            out.extend(forgeries(&d, salt));
        }
        if let Some((cut, at, flip)) = self.corrupt {
            let mut body = d.body.to_vec();
            let i = ((body.len() as f64) * at) as usize;
            if cut {
                body.truncate(i);
            } else if let Some(b) = body.get_mut(i) {
                *b ^= flip | 1;
            }
            d.body = Bytes::from(body);
        }
        if self.duplicate {
            out.push(d.clone());
        }
        out.push(d);
        // Forgeries first or last: both orders happen.
        if self.forge.is_some_and(|s| s % 2 == 0) {
            out.reverse();
        }
        out
    }
}

/// Forged replies modelled on a real one: its server claiming shards outside
/// every policy, and servers that are not members claiming every shard.
fn forgeries(real: &Delivery, salt: u32) -> Vec<Delivery> {
    let Ok(reply) = serde_json::from_slice::<LocateReply>(&real.body) else { return Vec::new() };
    let forged = |addr: String, shards: Vec<u32>| Delivery {
        body: serde_json::to_vec(&LocateReply { addr, shards }).unwrap().into(),
        ..real.clone()
    };
    vec![
        forged(reply.addr.clone(), vec![6 + salt % 200, 255, u32::MAX]),
        // A loopback port nobody listens on, and a name that does not resolve.
        forged("127.0.0.1:9".to_string(), (0..6).collect()),
        forged(format!("ghost-{salt}.invalid:7000"), (0..6).collect()),
    ]
}

#[async_trait]
impl Transport for FaultyTransport {
    async fn publish(&self, exchange: Exchange, msg: Delivery) -> Result<(), BusError> {
        let p = self.plan(false);
        for d in p.apply(msg) {
            match p.delay {
                Some(delay) => {
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = inner.publish(exchange, d).await;
                    });
                }
                None => self.inner.publish(exchange, d).await?,
            }
        }
        Ok(())
    }

    async fn subscribe(&self, exchange: Exchange) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let raw = self.inner.subscribe(exchange).await?;
        Ok(self.faulty_receiver(raw, false))
    }

    async fn replies(&self) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let raw = self.inner.replies().await?;
        Ok(self.faulty_receiver(raw, true))
    }

    fn reply_address(&self) -> Option<String> {
        self.inner.reply_address()
    }

    async fn send_reply(&self, reply_to: &str, correlation_id: &str, body: Bytes) -> Result<(), BusError> {
        let p = self.plan(false);
        let msg = Delivery { body, reply_to: None, correlation_id: Some(correlation_id.to_string()) };
        for d in p.apply(msg) {
            match p.delay {
                Some(delay) => {
                    let inner = self.inner.clone();
                    let (to, id) = (reply_to.to_string(), correlation_id.to_string());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = inner.send_reply(&to, &id, d.body).await;
                    });
                }
                None => self.inner.send_reply(reply_to, correlation_id, d.body).await?,
            }
        }
        Ok(())
    }
}
