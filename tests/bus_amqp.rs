//! The RabbitMQ transport against the real broker at 127.0.0.1:5672 (guest/guest).
//!
//! Each test plays two or three processes, each with its own [`AmqpTransport`]
//! under a [`Bus`]. The broker's `apiServers` and `dataServers` exchanges are
//! shared with anything else using it, so every test recognises its own messages
//! by a unique address or hash and ignores the rest. The tests are serialized: one
//! of them makes the broker drop every connection.
//!
//! Without a broker the tests say SKIPPED and pass, unless
//! `CAIRN_REQUIRE_SERVICES=1`, which makes a missing broker a failure.
//!
//! The behaviour every transport shares (fan-out, reply routing, malformed and
//! invalid messages) is the suite in `tests/common/bus_suite.rs`, run here over
//! RabbitMQ; the cases below it are RabbitMQ's own (reconnects, shutdown, URLs).

#[path = "common/bus_suite.rs"]
mod bus_suite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_suite::{heartbeat_from, locate_answer_from, serve_locates, unique_addr, unique_hash, Connect, ARRIVAL};
use cairn::bus::amqp::AmqpTransport;
use cairn::bus::{Bus, BusError, Exchange, Heartbeat, LocateReply, Transport};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const BROKER: &str = "127.0.0.1:5672";
/// Every suite case is bounded: a hung bus fails the test instead of the run.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// One broker test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn services_required() -> bool {
    std::env::var("CAIRN_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether the broker answers on its port; says loudly when it does not.
async fn broker_reachable(test: &str) -> bool {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("cairn=debug").try_init();
    match timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(BROKER)).await {
        Ok(Ok(_)) => true,
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 1 s".to_string(),
            };
            assert!(
                !services_required(),
                "{test}: RabbitMQ not reachable at {BROKER} ({why}) and CAIRN_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED {test}: RabbitMQ not reachable at {BROKER} ({why}); set CAIRN_REQUIRE_SERVICES=1 to fail instead");
            false
        }
    }
}

/// One process's bus over its own connection.
async fn process(shutdown: &CancellationToken) -> (Bus, Arc<AmqpTransport>) {
    let transport = Arc::new(AmqpTransport::connect(URL, shutdown.clone()).await.expect("connect to RabbitMQ"));
    let bus = Bus::new(transport.clone(), shutdown.clone()).await.expect("bus over RabbitMQ");
    (bus, transport)
}

/// New AMQP connections to the real broker, one per "process".
fn amqp() -> Connect {
    Arc::new(|shutdown| {
        Box::pin(async move {
            let transport: Arc<dyn Transport> =
                Arc::new(AmqpTransport::connect(URL, shutdown).await.expect("connect to RabbitMQ"));
            transport
        })
    })
}

/// Runs one suite case against the broker, or skips loudly without one.
macro_rules! suite_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let _serial = SERIAL.lock().await;
            if !broker_reachable(stringify!($name)).await {
                return;
            }
            timeout(CASE_LIMIT, bus_suite::$name(amqp())).await.expect("the case finishes in time");
        }
    };
}

suite_case!(heartbeats_fan_out_to_every_subscriber);
suite_case!(locate_replies_are_routed_by_correlation_id);
suite_case!(malformed_messages_are_dropped_and_the_next_good_ones_still_arrive);
suite_case!(a_reply_for_a_finished_locate_is_ignored);
suite_case!(invalid_addresses_and_shard_lists_are_dropped);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_reply_queue_survive_the_broker_dropping_every_connection() {
    const TEST: &str = "subscriptions_and_reply_queue_survive_the_broker_dropping_every_connection";
    let _serial = SERIAL.lock().await;
    if !broker_reachable(TEST).await {
        return;
    }
    let shutdown = CancellationToken::new();
    let (api, api_transport) = process(&shutdown).await;
    let (data, data_transport) = process(&shutdown).await;
    let mut heartbeats = api.heartbeats().await.expect("subscribe to heartbeats");
    let hash = unique_hash();
    let addr = unique_addr(7004);
    serve_locates(
        data.clone(),
        data.locate_requests().await.expect("subscribe to locates"),
        hash,
        addr.clone(),
        vec![1],
    );

    let before = Heartbeat { addr: unique_addr(7004), free: 1 };
    data.publish_heartbeat(&before).await.expect("publish heartbeat");
    assert_eq!(heartbeat_from(&mut heartbeats, &before.addr, ARRIVAL).await, Some(before));
    locate_answer_from(&api, hash, &addr, ARRIVAL).await.expect("locate before the drop");
    let old_reply_queue = api_transport.reply_address().expect("connected, so a reply queue");

    let closed = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl").args(["close_all_connections", "test"]).output()
    })
    .await
    .expect("rabbitmqctl task");
    match closed {
        Ok(out) if out.status.success() => {}
        outcome => {
            let why = match outcome {
                Ok(out) => format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
                Err(e) => e.to_string(),
            };
            assert!(!services_required(), "{TEST}: rabbitmqctl close_all_connections failed ({why})");
            eprintln!("SKIPPED {TEST}: rabbitmqctl close_all_connections failed ({why})");
            shutdown.cancel();
            return;
        }
    }

    // Heartbeats flow again once both processes are back; until then publishing
    // fails fast (or lands before the subscriber's queue exists), so keep trying.
    let after = Heartbeat { addr: unique_addr(7004), free: 2 };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut disconnected_seen = false;
    let mut arrived = false;
    while Instant::now() < deadline {
        let started = Instant::now();
        match data.publish_heartbeat(&after).await {
            Ok(()) => {}
            Err(BusError::Disconnected) => disconnected_seen = true,
            Err(e) => eprintln!("publish during reconnect: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "publishing hung for {:?}", started.elapsed());
        if heartbeat_from(&mut heartbeats, &after.addr, Duration::from_millis(300)).await.is_some() {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "no heartbeat reached the subscriber within 15 s of the broker dropping connections");
    eprintln!("heartbeats resumed (a publish saw Disconnected: {disconnected_seen})");

    let mut answered = None;
    while Instant::now() < deadline + Duration::from_secs(5) {
        match locate_answer_from(&api, hash, &addr, Duration::from_millis(500)).await {
            Ok(reply) => {
                answered = Some(reply);
                break;
            }
            Err(e) => eprintln!("locate during reconnect: {e}"),
        }
    }
    assert_eq!(answered, Some(LocateReply { addr, shards: vec![1] }), "locate round trip after reconnect");
    let new_reply_queue = api_transport.reply_address().expect("reconnected, so a reply queue");
    assert_ne!(old_reply_queue, new_reply_queue, "the reply queue is new after a reconnect");
    assert!(data_transport.reply_address().is_some());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_receivers_and_refuses_to_publish() {
    let _serial = SERIAL.lock().await;
    if !broker_reachable("shutdown_ends_receivers_and_refuses_to_publish").await {
        return;
    }
    let shutdown = CancellationToken::new();
    let transport = AmqpTransport::connect(URL, shutdown.clone()).await.expect("connect to RabbitMQ");
    let mut raw = transport.subscribe(Exchange::ApiServers).await.expect("subscribe");
    shutdown.cancel();
    let ended = timeout(ARRIVAL, async {
        // Foreign heartbeats may still be queued; the receiver must end after them.
        while raw.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the subscription ends after shutdown");
    let err =
        transport.publish(Exchange::ApiServers, Default::default()).await.expect_err("no publishing after shutdown");
    assert!(matches!(err, BusError::Closed), "{err}");
    assert!(transport.reply_address().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_leaves_no_task_of_the_bus_or_its_transport_running() {
    let _serial = SERIAL.lock().await;
    if !broker_reachable("shutting_down_leaves_no_task_of_the_bus_or_its_transport_running").await {
        return;
    }
    let shutdown = CancellationToken::new();
    let (bus, transport) = process(&shutdown).await;
    let _heartbeats = bus.heartbeats().await.expect("subscribe to heartbeats");
    let _locates = bus.locate_requests().await.expect("subscribe to locates");
    // The supervisor, the network watch, the reply queue's forwarder and one
    // forwarder per subscription.
    assert_eq!(transport.running_tasks(), 5, "the transport's tasks while connected");
    shutdown.cancel();
    timeout(Duration::from_secs(10), bus.stopped()).await.expect("the bus and its transport stop after shutdown");
    assert_eq!(transport.running_tasks(), 0, "no transport task outlives the shutdown");
    timeout(Duration::from_secs(1), transport.stopped()).await.expect("a stopped transport stays stopped");
}

#[tokio::test]
async fn an_unreachable_broker_is_reported_at_once() {
    // Nothing listens on port 1; the process should learn it at start, not hang.
    let started = Instant::now();
    let result = timeout(
        Duration::from_secs(10),
        AmqpTransport::connect("amqp://guest:guest@127.0.0.1:1/", CancellationToken::new()),
    )
    .await
    .expect("connect gives up within seconds");
    assert!(matches!(result, Err(BusError::Broker { .. } | BusError::Disconnected)), "{:?}", result.err());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_url_that_is_not_amqp_is_refused() {
    for url in ["http://127.0.0.1:5672", "amqp://guest:guest@127.0.0.1:port", "127.0.0.1:5672"] {
        let result = AmqpTransport::connect(url, CancellationToken::new()).await;
        assert!(matches!(result, Err(BusError::BadUrl { .. })), "{url}: {:?}", result.err());
    }
}

/// A TCP proxy in front of the broker that the test can cut (every connection
/// dropped, new ones refused after accepting) and restore, to play a broker that
/// is away for a while without disturbing the real one.
struct CuttableProxy {
    port: u16,
    down: tokio::sync::watch::Sender<bool>,
}

impl CuttableProxy {
    async fn start(stop: CancellationToken) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (down, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                };
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let mut watch = watch.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(BROKER).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = watch.wait_for(|down| *down) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        CuttableProxy { port, down }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/", self.port)
    }

    fn cut(&self) {
        let _ = self.down.send(true);
    }

    fn restore(&self) {
        let _ = self.down.send(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cut_off_from_the_broker_for_seconds_reconnects_with_backoff() {
    let _serial = SERIAL.lock().await;
    if !broker_reachable("a_process_cut_off_from_the_broker_for_seconds_reconnects_with_backoff").await {
        return;
    }
    let shutdown = CancellationToken::new();
    let proxy = CuttableProxy::start(shutdown.clone()).await;
    // The API process sits behind the proxy; the data server talks to the broker directly.
    let cut_off = Arc::new(AmqpTransport::connect(&proxy.url(), shutdown.clone()).await.expect("connect via proxy"));
    let api = Bus::new(cut_off.clone(), shutdown.clone()).await.expect("bus via proxy");
    let (data, _) = process(&shutdown).await;
    let mut heartbeats = api.heartbeats().await.expect("subscribe to heartbeats");
    let hash = unique_hash();
    let addr = unique_addr(7005);
    serve_locates(
        data.clone(),
        data.locate_requests().await.expect("subscribe to locates"),
        hash,
        addr.clone(),
        vec![2],
    );
    locate_answer_from(&api, hash, &addr, ARRIVAL).await.expect("locate before the cut");
    let old_reply_queue = cut_off.reply_address().expect("connected, so a reply queue");

    proxy.cut();
    // The lost connection is noticed at once (the socket closes); publishing then
    // fails fast instead of queueing or hanging.
    let noticed = timeout(ARRIVAL, async {
        while cut_off.reply_address().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(noticed.is_ok(), "the transport noticed the lost connection");
    let started = Instant::now();
    let err = api.publish_heartbeat(&Heartbeat { addr: addr.clone(), free: 0 }).await.expect_err("disconnected");
    assert!(matches!(err, BusError::Disconnected), "{err}");
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert!(matches!(api.broadcast_locate(hash).await.err(), Some(BusError::Disconnected)));
    // Several reconnect attempts fail meanwhile (100 ms, 200 ms, 400 ms, ...).
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();

    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered.is_none() && Instant::now() < deadline {
        match locate_answer_from(&api, hash, &addr, Duration::from_millis(500)).await {
            Ok(reply) => answered = Some(reply),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answered, Some(LocateReply { addr: addr.clone(), shards: vec![2] }), "locate after the cut");
    assert_ne!(cut_off.reply_address(), Some(old_reply_queue), "a new reply queue after reconnecting");
    let hb = Heartbeat { addr: unique_addr(7005), free: 5 };
    data.publish_heartbeat(&hb).await.expect("publish heartbeat");
    assert_eq!(heartbeat_from(&mut heartbeats, &hb.addr, ARRIVAL).await, Some(hb), "heartbeats after the cut");
    shutdown.cancel();
}
