//! One behavioural suite for the bus, run against every [`Transport`]: by
//! `tests/bus_memory.rs` over the in-process broker and by `tests/bus_amqp.rs` over
//! RabbitMQ. Each case plays two or three processes, each with its own transport
//! (made by the caller's [`Connect`]) under a [`Bus`].
//!
//! A real broker's exchanges are shared with anything else using it, so every case
//! recognises its own messages by a unique host name or content hash and ignores
//! the rest.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn::bus::{Bus, Exchange, Heartbeat, IncomingLocate, LocateReply, PendingLocate, Transport};
use cairn::content::ContentHash;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// How long a message that should arrive may take.
pub const ARRIVAL: Duration = Duration::from_secs(5);
/// How long to watch for a message that should not arrive.
pub const QUIET: Duration = Duration::from_millis(300);

/// Makes a new connection to the broker under test (one "process"), which stops
/// when the token is cancelled.
pub type Connect =
    Arc<dyn Fn(CancellationToken) -> Pin<Box<dyn Future<Output = Arc<dyn Transport>> + Send>> + Send + Sync>;

/// One process: its transport and the bus over it.
pub struct Process {
    pub bus: Bus,
    pub transport: Arc<dyn Transport>,
}

pub async fn process(connect: &Connect, shutdown: &CancellationToken) -> Process {
    let transport = connect(shutdown.clone()).await;
    let bus = Bus::new(transport.clone(), shutdown.clone()).await.expect("bus over the transport");
    Process { bus, transport }
}

/// A data server address no one else uses: `ds-<uuid>.test:<port>`.
pub fn unique_addr(port: u16) -> String {
    format!("ds-{}.test:{port}", uuid::Uuid::new_v4().simple())
}

/// Content no one else asks for.
pub fn unique_hash() -> ContentHash {
    ContentHash::of(uuid::Uuid::new_v4().as_bytes())
}

/// Waits for the heartbeat from `addr`, skipping anyone else's.
pub async fn heartbeat_from(rx: &mut mpsc::Receiver<Heartbeat>, addr: &str, within: Duration) -> Option<Heartbeat> {
    timeout(within, async {
        loop {
            let hb = rx.recv().await?;
            if hb.addr == addr {
                return Some(hb);
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Every heartbeat whose address contains `marker` within `within`.
pub async fn heartbeats_marked(rx: &mut mpsc::Receiver<Heartbeat>, marker: &str, within: Duration) -> Vec<Heartbeat> {
    let mut seen = Vec::new();
    let _ = timeout(within, async {
        while let Some(hb) = rx.recv().await {
            if hb.addr.contains(marker) {
                seen.push(hb);
            }
        }
    })
    .await;
    seen
}

/// Answers, as a data server, every locate for `hash` by sending `bodies` raw (in
/// order) through `transport`; ignores other locates (someone else's).
pub fn answer_raw(
    transport: Arc<dyn Transport>,
    mut requests: mpsc::Receiver<IncomingLocate>,
    hash: ContentHash,
    bodies: Vec<Bytes>,
) {
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if request.request.hash != hash {
                continue;
            }
            for body in &bodies {
                if let Err(e) = transport.send_reply(&request.reply_to, &request.correlation_id, body.clone()).await {
                    eprintln!("data server could not reply: {e}");
                }
            }
        }
    });
}

/// Answers, as data server `addr`, every locate for `hash` with `shards`.
pub fn serve_locates(
    bus: Bus,
    mut requests: mpsc::Receiver<IncomingLocate>,
    hash: ContentHash,
    addr: String,
    shards: Vec<u32>,
) {
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if request.request.hash == hash {
                let reply = LocateReply { addr: addr.clone(), shards: shards.clone() };
                if let Err(e) = bus.reply(&request, &reply).await {
                    eprintln!("data server could not reply: {e}");
                }
            }
        }
    });
}

pub fn reply_body(addr: &str, shards: &[u32]) -> Bytes {
    serde_json::to_vec(&LocateReply { addr: addr.into(), shards: shards.to_vec() }).unwrap().into()
}

/// Every reply of `pending` whose address contains `marker`, until `want` such
/// replies or `within`.
pub async fn replies_marked(
    pending: &mut PendingLocate,
    marker: &str,
    want: usize,
    within: Duration,
) -> Vec<LocateReply> {
    let mut seen = Vec::new();
    let _ = timeout(within, async {
        while seen.len() < want {
            match pending.next().await {
                Some(r) if r.addr.contains(marker) => seen.push(r),
                Some(_) => continue,
                None => return,
            }
        }
    })
    .await;
    seen
}

/// Broadcasts a locate for `hash` and waits for the answer from `addr`.
pub async fn locate_answer_from(
    bus: &Bus,
    hash: ContentHash,
    addr: &str,
    within: Duration,
) -> Result<LocateReply, String> {
    let mut pending = bus.broadcast_locate(hash).await.map_err(|e| format!("broadcast: {e}"))?;
    let got = replies_marked(&mut pending, addr, 1, within).await;
    got.into_iter().next().ok_or_else(|| format!("no answer from {addr} within {within:?}"))
}

/// A heartbeat published by one process reaches every subscriber, in every other
/// process and in its own.
pub async fn heartbeats_fan_out_to_every_subscriber(connect: Connect) {
    let shutdown = CancellationToken::new();
    let a = process(&connect, &shutdown).await;
    let b = process(&connect, &shutdown).await;
    let data = process(&connect, &shutdown).await;
    let mut subscribers = [
        a.bus.heartbeats().await.expect("subscribe a"),
        a.bus.heartbeats().await.expect("subscribe a twice"),
        b.bus.heartbeats().await.expect("subscribe b"),
        data.bus.heartbeats().await.expect("subscribe data"),
    ];
    let hb = Heartbeat { addr: unique_addr(7001), free: 123_456_789 };
    data.bus.publish_heartbeat(&hb).await.expect("publish heartbeat");
    for (i, rx) in subscribers.iter_mut().enumerate() {
        assert_eq!(heartbeat_from(rx, &hb.addr, ARRIVAL).await, Some(hb.clone()), "subscriber {i}");
    }
    shutdown.cancel();
}

/// Replies reach the locate whose correlation id they carry and no other: two
/// concurrent locates of one process, and one of another process, each hear only
/// their own answers.
pub async fn locate_replies_are_routed_by_correlation_id(connect: Connect) {
    let shutdown = CancellationToken::new();
    let api = process(&connect, &shutdown).await;
    let other_api = process(&connect, &shutdown).await;
    let data = process(&connect, &shutdown).await;
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let (hash_a, hash_b) = (unique_hash(), unique_hash());
    let addr_a = format!("a-{marker}.test:7002");
    let addr_b = format!("b-{marker}.test:7002");
    serve_locates(data.bus.clone(), data.bus.locate_requests().await.unwrap(), hash_a, addr_a.clone(), vec![0, 3]);
    serve_locates(data.bus.clone(), data.bus.locate_requests().await.unwrap(), hash_b, addr_b.clone(), vec![1]);

    let mut a = api.bus.broadcast_locate(hash_a).await.expect("locate a");
    let mut b = api.bus.broadcast_locate(hash_b).await.expect("locate b");
    let mut other = other_api.bus.broadcast_locate(hash_b).await.expect("locate b elsewhere");
    // Wait for the one expected reply, then a while for strays.
    let mut got_a = replies_marked(&mut a, &marker, 1, ARRIVAL).await;
    got_a.extend(replies_marked(&mut a, &marker, 1, QUIET).await);
    let mut got_b = replies_marked(&mut b, &marker, 1, ARRIVAL).await;
    got_b.extend(replies_marked(&mut b, &marker, 1, QUIET).await);
    let got_other = replies_marked(&mut other, &marker, 1, ARRIVAL).await;
    assert_eq!(got_a, vec![LocateReply { addr: addr_a, shards: vec![0, 3] }]);
    assert_eq!(got_b, vec![LocateReply { addr: addr_b.clone(), shards: vec![1] }]);
    assert_eq!(got_other, vec![LocateReply { addr: addr_b, shards: vec![1] }]);
    shutdown.cancel();
}

/// Garbage on either exchange and on a reply queue is dropped; the good messages
/// after it still arrive, and every raw subscriber saw the bytes untouched.
pub async fn malformed_messages_are_dropped_and_the_next_good_ones_still_arrive(connect: Connect) {
    let shutdown = CancellationToken::new();
    let api = process(&connect, &shutdown).await;
    let data = process(&connect, &shutdown).await;
    let mut heartbeats = api.bus.heartbeats().await.expect("subscribe to heartbeats");
    let mut raw = api.transport.subscribe(Exchange::ApiServers).await.expect("raw subscription");
    let hash = unique_hash();
    let addr = unique_addr(7003);
    let garbage_reply = Bytes::from_static(b"\x00\xffnot json at all");
    answer_raw(
        data.transport.clone(),
        data.bus.locate_requests().await.expect("subscribe to locates"),
        hash,
        vec![garbage_reply, Bytes::from_static(b"{\"addr\":"), reply_body(&addr, &[])],
    );

    let garbage = Bytes::from(format!("not-json {}", uuid::Uuid::new_v4()));
    api.bus.publish_raw(Exchange::DataServers, garbage.clone()).await.expect("publish garbage on dataServers");
    // A locate request without reply_to or correlation_id is garbage too.
    let request = serde_json::json!({ "hash": hash }).to_string();
    api.bus.publish_raw(Exchange::DataServers, request.into()).await.expect("publish a bare locate request");
    data.bus.publish_raw(Exchange::ApiServers, garbage.clone()).await.expect("publish garbage on apiServers");
    let saw_garbage = timeout(ARRIVAL, async {
        while let Some(d) = raw.recv().await {
            if d.body == garbage {
                return Some(d);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the raw subscriber sees the malformed message");
    assert!(saw_garbage.reply_to.is_none() && saw_garbage.correlation_id.is_none());

    let hb = Heartbeat { addr: unique_addr(7003), free: 1 };
    data.bus.publish_heartbeat(&hb).await.expect("publish heartbeat");
    assert_eq!(heartbeat_from(&mut heartbeats, &hb.addr, ARRIVAL).await, Some(hb));
    let reply = locate_answer_from(&api.bus, hash, &addr, ARRIVAL).await.expect("locate answered after garbage");
    assert_eq!(reply, LocateReply { addr, shards: vec![] });
    shutdown.cancel();
}

/// A reply that arrives after its locate finished goes nowhere: not to the next
/// locate of the same process, not to anyone.
pub async fn a_reply_for_a_finished_locate_is_ignored(connect: Connect) {
    let shutdown = CancellationToken::new();
    let api = process(&connect, &shutdown).await;
    let data = process(&connect, &shutdown).await;
    let mut requests = data.bus.locate_requests().await.expect("subscribe to locates");
    let hash = unique_hash();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let (late, fresh) = (format!("late-{marker}.test:7004"), format!("fresh-{marker}.test:7004"));

    let first = api.bus.broadcast_locate(hash).await.expect("first locate");
    let first_request = timeout(ARRIVAL, async {
        loop {
            let r = requests.recv().await.expect("locate requests");
            if r.request.hash == hash {
                return r;
            }
        }
    })
    .await
    .expect("the data server hears the first locate");
    drop(first);
    data.bus.reply(&first_request, &LocateReply { addr: late.clone(), shards: vec![0] }).await.expect("late reply");

    let mut second = api.bus.broadcast_locate(hash).await.expect("second locate");
    let second_request = timeout(ARRIVAL, async {
        loop {
            let r = requests.recv().await.expect("locate requests");
            if r.request.hash == hash {
                return r;
            }
        }
    })
    .await
    .expect("the data server hears the second locate");
    assert_ne!(first_request.correlation_id, second_request.correlation_id);
    // The late reply to the first is sent again now, after the second locate began.
    data.bus.reply(&first_request, &LocateReply { addr: late.clone(), shards: vec![0] }).await.expect("late reply");
    data.bus.reply(&second_request, &LocateReply { addr: fresh.clone(), shards: vec![1] }).await.expect("reply");
    let mut got = replies_marked(&mut second, &marker, 1, ARRIVAL).await;
    got.extend(replies_marked(&mut second, &marker, 1, QUIET).await);
    assert_eq!(got, vec![LocateReply { addr: fresh, shards: vec![1] }]);
    shutdown.cancel();
}

/// Heartbeats and locate replies that name an address that is not `host:port`, or
/// list too many or repeated shards, are dropped; good ones around them arrive.
pub async fn invalid_addresses_and_shard_lists_are_dropped(connect: Connect) {
    let shutdown = CancellationToken::new();
    let api = process(&connect, &shutdown).await;
    let data = process(&connect, &shutdown).await;
    let mut heartbeats = api.bus.heartbeats().await.expect("subscribe to heartbeats");
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let bad_addrs = [
        format!("http://{marker}.test:1/"),
        format!("{marker}.test:1/x"),
        format!("user@{marker}.test:1"),
        format!("{marker}.test"),
        format!("{marker}.test:0"),
        format!("{marker}.test:70000"),
        format!(" {marker}.test:1"),
        format!("{marker}..test:1"),
        format!("{marker}.test:1?q"),
    ];
    for addr in &bad_addrs {
        let body = serde_json::to_vec(&Heartbeat { addr: addr.clone(), free: 1 }).unwrap();
        data.bus.publish_raw(Exchange::ApiServers, body.into()).await.expect("publish bad heartbeat");
    }
    let good = Heartbeat { addr: format!("{marker}.test:7005"), free: 2 };
    data.bus.publish_heartbeat(&good).await.expect("publish heartbeat");
    // Everything marked up to the good one (published last), then a while for strays.
    let mut seen = Vec::new();
    let _ = timeout(ARRIVAL, async {
        while let Some(hb) = heartbeats.recv().await {
            if hb.addr.contains(&marker) {
                seen.push(hb.clone());
            }
            if hb == good {
                return;
            }
        }
    })
    .await;
    seen.extend(heartbeats_marked(&mut heartbeats, &marker, QUIET).await);
    assert_eq!(seen, vec![good]);

    let hash = unique_hash();
    let good_addr = format!("{marker}.test:7006");
    let mut bodies: Vec<Bytes> = bad_addrs.iter().map(|a| reply_body(a, &[0])).collect();
    let too_many: Vec<u32> = (0..=cairn::bus::MAX_REPLY_SHARDS as u32).collect();
    bodies.push(reply_body(&format!("many-{marker}.test:1"), &too_many));
    bodies.push(reply_body(&format!("twice-{marker}.test:1"), &[1, 1]));
    bodies.push(reply_body(&good_addr, &[2]));
    answer_raw(data.transport.clone(), data.bus.locate_requests().await.unwrap(), hash, bodies);
    let mut pending = api.bus.broadcast_locate(hash).await.expect("locate");
    let mut got = replies_marked(&mut pending, &marker, 1, ARRIVAL).await;
    got.extend(replies_marked(&mut pending, &marker, 1, QUIET).await);
    assert_eq!(got, vec![LocateReply { addr: good_addr, shards: vec![2] }]);
    shutdown.cancel();
}
