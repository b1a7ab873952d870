//! A closed cluster (`--cluster-secret-file`): data servers take only requests
//! signed with the cluster secret, and the bus only signed messages.
//!
//! - In process: a shard write or read sent to a data server without a signature,
//!   signed with another secret, tampered with, or replayed after capture, is
//!   refused with 401 and stores nothing; the refusals are counted.
//! - On the real RabbitMQ, with `cairn data` and `cairn api` processes sharing a
//!   secret file: a rogue on the broker forges heartbeats (unsigned, signed with
//!   another secret, replays of captured real ones), answers every locate with
//!   forged replies and sends its own locate requests. None of it is taken: the API
//!   server sees only the real members, reads return the right bytes, the rogue's
//!   server is never dialled, data servers never answer the rogue, and
//!   `cairn_bus_dropped_total` counts each kind of forgery.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn::bus::amqp::AmqpTransport;
use cairn::bus::{Delivery, Exchange, Heartbeat, LocateReply, LocateRequest, Transport};
use cairn::data::client::{DataClient, DataTimeouts};
use cairn::secret::{self, ClusterSecret};
use common::{rabbitmq_reachable, wait_live, Proc, BROKER_URL};
use http::{HeaderMap, HeaderValue, Method};
use tokio_util::sync::CancellationToken;

/// The sum of the samples of metric `name` whose labels include every pair of
/// `labels`, in Prometheus text.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn secret_text() -> String {
    secret::generate()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_data_tier_refuses_unsigned_foreign_tampered_and_replayed_requests() {
    let ours = ClusterSecret::from_text(&secret_text()).unwrap();
    let theirs = ClusterSecret::from_text(&secret_text()).unwrap();
    let t = common::start_custom(3, |c| {
        c.policy = "2+1".parse().unwrap();
        c.small_policy = "1+2".parse().unwrap();
        c.cluster_secret = Some(ours.clone());
    })
    .await;
    // The cluster itself works: the API server signs what it sends.
    let body = common::pattern(200_000, 7);
    assert_eq!(t.put("signed", body.clone()).await.status(), 200);
    let got = t.get("signed").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), body);

    let addr = t.cluster.data_addrs[0].to_string();
    let member = DataClient::new(DataTimeouts::default()).with_secret(Some(ours.clone()));
    let held = member.list_shards(&addr, None).await.expect("a member lists shards").shards;
    assert!(!held.is_empty(), "the object put a shard on every server");
    let real = &held[0];
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |path: &str| format!("http://{addr}{path}");

    // Reads of a real shard: unsigned, by another cluster, and with a signature
    // made for another shard are refused, and none of its bytes leave.
    let path = format!("/objects/{}.{}", real.hash, real.shard);
    let resp = http.get(url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.unwrap(), "no cluster signature\n", "the refusal, not the shard");
    let mut foreign = HeaderMap::new();
    theirs.sign_headers(&Method::GET, &path, &mut foreign);
    assert_eq!(http.get(url(&path)).headers(foreign).send().await.unwrap().status(), 401);
    let mut elsewhere = HeaderMap::new();
    ours.sign_headers(&Method::GET, &format!("/objects/{}.{}", real.hash, real.shard + 1), &mut elsewhere);
    assert_eq!(http.get(url(&path)).headers(elsewhere).send().await.unwrap().status(), 401);
    // Listing and maintenance calls are closed too; liveness and metrics are not.
    for (method, path) in [(Method::GET, "/shards"), (Method::GET, "/stats"), (Method::POST, "/scrub")] {
        assert_eq!(http.request(method, url(path)).send().await.unwrap().status(), 401, "{path}");
    }
    assert_eq!(http.get(url("/healthz")).send().await.unwrap().status(), 200);

    // Writes: a forged shard, unsigned or signed by another cluster, is not stored.
    let forged_hash = "ab".repeat(32);
    let forged = format!("/objects/{forged_hash}.0");
    let forged_body = Bytes::from_static(b"a shard nobody in the cluster wrote");
    let resp = http.put(url(&forged)).header("x-cairn-policy", "1+2").body(forged_body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let mut foreign = HeaderMap::new();
    foreign.insert("x-cairn-policy", HeaderValue::from_static("1+2"));
    theirs.sign_headers(&Method::PUT, &forged, &mut foreign);
    assert_eq!(http.put(url(&forged)).headers(foreign).body(forged_body.clone()).send().await.unwrap().status(), 401);
    // A temp-and-commit write: the commit names its hash in a signed header, so a
    // signature moved onto another hash fails.
    let temp = format!("/temp/{}", uuid::Uuid::new_v4());
    assert_eq!(http.post(url(&temp)).body(forged_body.clone()).send().await.unwrap().status(), 401);
    let holds = |shards: &[cairn::data::wire::HeldShard]| shards.iter().any(|s| s.hash.to_hex() == forged_hash);
    assert!(!holds(&member.list_shards(&addr, None).await.unwrap().shards), "nothing forged was stored");

    // A captured signed write: taken once, refused when replayed, even after the
    // shard it wrote is gone.
    let mut captured = HeaderMap::new();
    captured.insert("x-cairn-policy", HeaderValue::from_static("1+2"));
    ours.sign_headers(&Method::PUT, &forged, &mut captured);
    let resp = http.put(url(&forged)).headers(captured.clone()).body(forged_body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a member's signed write is taken");
    assert!(holds(&member.list_shards(&addr, None).await.unwrap().shards));
    let hash: cairn::content::ContentHash = forged_hash.parse().unwrap();
    assert_eq!(member.purge(&addr, &[(hash, 0)]).await.unwrap(), 1);
    let replay = http.put(url(&forged)).headers(captured).body(forged_body).send().await.unwrap();
    assert_eq!(replay.status(), 401);
    assert!(replay.text().await.unwrap().contains("replayed"));
    assert!(!holds(&member.list_shards(&addr, None).await.unwrap().shards), "the replay stored nothing");

    let metrics = http.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    let refused = |reason| metric(&metrics, "cairn_cluster_auth_refused_total", &[("reason", reason)]);
    assert!(refused("unsigned") >= 5.0, "unsigned refusals counted:\n{metrics}");
    assert!(refused("unknown_key") >= 2.0);
    assert!(refused("bad_signature") >= 1.0);
    assert_eq!(refused("replay"), 1.0);
    // And the object is still whole.
    assert_eq!(t.get("signed").await.bytes().await.unwrap(), body);
}

/// The rogue's address block: nothing listens there but the rogue's own server.
const API: &str = "127.29.12.10:12345";
const ROGUE_HTTP: &str = "127.29.12.9:12345";

fn data_addr(i: usize) -> String {
    format!("127.29.12.{}:12345", i + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bus_messages_on_rabbitmq_are_dropped_and_counted() {
    const TEST: &str = "forged_bus_messages_on_rabbitmq_are_dropped_and_counted";
    if !rabbitmq_reachable(TEST).await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("cluster.secret");
    std::fs::write(&secret_file, format!("{}\n", secret_text())).unwrap();
    let secret_arg = secret_file.to_str().unwrap();
    let meta = format!("sqlite:{}", dir.path().join("meta.sqlite").display());
    let secret_flag = ["--cluster-secret-file", secret_arg];
    let mut procs: Vec<Proc> =
        (0..3).map(|i| Proc::data_server_with(dir.path(), i, &data_addr(i), &secret_flag)).collect();
    let api_flags = ["--policy", "2+1", "--small-policy", "1+2", "--cluster-secret-file", secret_arg];
    procs.push(Proc::api_server(dir.path(), "api", API, &meta, "1s", &api_flags));
    let logs = scopeguard(&procs);
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let base = format!("http://{API}");
    assert!(wait_live(&http, &base, 3).await, "the API server sees the three members");

    let small = common::pattern(20_000, 1);
    let large = common::pattern(3 << 20, 2);
    for (name, body) in [("small", &small), ("large", &large)] {
        let resp = http.put(format!("{base}/objects/{name}")).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "PUT {name}");
    }

    // The rogue's own data server: counts every connection made to it.
    let dialled = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind(ROGUE_HTTP).await.unwrap();
    {
        let dialled = dialled.clone();
        tokio::spawn(async move {
            while let Ok((_conn, _)) = listener.accept().await {
                dialled.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let stop = CancellationToken::new();
    let rogue: Arc<dyn Transport> = Arc::new(AmqpTransport::connect(BROKER_URL, stop.clone()).await.unwrap());
    let other = ClusterSecret::from_text(&secret_text()).unwrap();
    let forged_heartbeat =
        serde_json::to_vec(&Heartbeat { addr: ROGUE_HTTP.into(), free: u64::MAX / 2 }).expect("heartbeat JSON");
    let forged_reply = serde_json::to_vec(&LocateReply { addr: ROGUE_HTTP.into(), shards: vec![0, 1, 2] }).unwrap();

    // Heartbeats: forged unsigned, forged under another secret, and replays of
    // our members' real (signed) heartbeats captured off the exchange.
    let mut heartbeats = rogue.subscribe(Exchange::ApiServers).await.unwrap();
    let mut locates = rogue.subscribe(Exchange::DataServers).await.unwrap();
    let mut rogue_replies = rogue.replies().await.unwrap();
    let ours = ClusterSecret::load(&secret_file).unwrap().key_ids().remove(0);
    let forging = {
        let (rogue, stop, hb) = (rogue.clone(), stop.clone(), forged_heartbeat.clone());
        let signed_elsewhere = secret::seal_envelope(&other, &[b"heartbeat"], &hb);
        let ours = format!("CAIRN-SIG {ours}.");
        tokio::spawn(async move {
            let (mut replayed, mut seen) = (0, std::collections::HashSet::new());
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return replayed,
                    _ = tick.tick() => {
                        for body in [Bytes::from(hb.clone()), Bytes::from(signed_elsewhere.clone())] {
                            let _ = rogue.publish(Exchange::ApiServers, Delivery { body, ..Default::default() }).await;
                        }
                    }
                    d = heartbeats.recv() => {
                        let Some(d) = d else { return replayed };
                        // Our members' real heartbeats, each replayed once (other
                        // tests share the broker, and the rogue hears itself).
                        if d.body.starts_with(ours.as_bytes()) && seen.insert(d.body.clone()) {
                            let again = Delivery { body: d.body.clone(), ..Default::default() };
                            if rogue.publish(Exchange::ApiServers, again).await.is_ok() {
                                replayed += 1;
                            }
                        }
                    }
                }
            }
        })
    };
    // Locate replies: every locate the API server sends is answered at once with
    // a forged reply, unsigned and signed under another secret.
    let answering = {
        let (rogue, stop, reply) = (rogue.clone(), stop.clone(), forged_reply.clone());
        let other = other.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return answered,
                    d = locates.recv() => {
                        let Some(d) = d else { return answered };
                        let (Some(to), Some(id)) = (d.reply_to, d.correlation_id) else { continue };
                        let signed = secret::seal_envelope(&other, &[b"locate-reply", id.as_bytes()], &reply);
                        for body in [Bytes::from(reply.clone()), Bytes::from(signed)] {
                            if rogue.send_reply(&to, &id, body).await.is_ok() {
                                answered += 1;
                            }
                        }
                    }
                }
            }
        })
    };

    // Reads while the rogue forges: right bytes every time, members only.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut reads = 0;
    while tokio::time::Instant::now() < deadline {
        for (name, body) in [("small", &small), ("large", &large)] {
            let resp = http.get(format!("{base}/objects/{name}")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "GET {name}");
            assert_eq!(&resp.bytes().await.unwrap()[..], &body[..], "GET {name} returns its bytes");
            reads += 1;
        }
        // A locate always asks the bus (reads use the recorded placement).
        let located = http.get(format!("{base}/locate/small")).send().await.unwrap();
        assert_eq!(located.status(), 200);
        let located = located.text().await.unwrap();
        assert!(!located.contains(ROGUE_HTTP), "a forged reply was taken: {located}");
        assert!(located.contains(&data_addr(0)), "the members answered: {located}");
        let health: serde_json::Value = http.get(format!("{base}/healthz")).send().await.unwrap().json().await.unwrap();
        assert_eq!(health["live_data_servers"], 3, "a forged heartbeat made no member: {health}");
    }
    let resp = http.put(format!("{base}/objects/after")).body(small.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "writes go to members only");

    // The rogue's own locate request: no member answers it.
    let hash: cairn::content::ContentHash = "cd".repeat(32).parse().unwrap();
    let request = serde_json::to_vec(&LocateRequest { hash }).unwrap();
    let asked =
        Delivery { body: request.into(), reply_to: rogue.reply_address(), correlation_id: Some("rogue-locate".into()) };
    rogue.publish(Exchange::DataServers, asked).await.unwrap();
    let members: Vec<String> = (0..3).map(data_addr).collect();
    let quiet = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            _ = &mut quiet => break,
            d = rogue_replies.recv() => {
                let Some(d) = d else { break };
                let text = String::from_utf8_lossy(&d.body);
                assert!(!members.iter().any(|m| text.contains(m.as_str())), "a member answered the rogue: {text}");
            }
        }
    }
    stop.cancel();
    let replayed = forging.await.unwrap();
    let answered = answering.await.unwrap();
    assert!(replayed >= 1 && answered >= 2, "the rogue was busy: {replayed} replays, {answered} forged replies");
    assert!(reads >= 2);
    assert_eq!(dialled.load(Ordering::SeqCst), 0, "nobody dialled the rogue's server");

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let dropped =
        |stream, reason| metric(&metrics, "cairn_bus_dropped_total", &[("stream", stream), ("reason", reason)]);
    assert!(dropped("heartbeats", "unsigned") >= 1.0, "forged heartbeats counted:\n{metrics}");
    assert!(dropped("heartbeats", "unknown_key") >= 1.0);
    assert!(dropped("heartbeats", "replay") >= 1.0);
    assert!(dropped("locate replies", "unsigned") >= 1.0);
    assert!(dropped("locate replies", "unknown_key") >= 1.0);
    let data_metrics = http.get(format!("http://{}/metrics", data_addr(0))).send().await.unwrap().text().await.unwrap();
    assert!(
        metric(&data_metrics, "cairn_bus_dropped_total", &[("stream", "locate requests"), ("reason", "unsigned")])
            >= 1.0
    );
    drop(logs);
}

/// Prints the processes' logs if the test fails while they run.
fn scopeguard(procs: &[Proc]) -> impl Drop + '_ {
    struct Logs<'a>(&'a [Proc]);
    impl Drop for Logs<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                for p in self.0 {
                    eprintln!("{}", p.log_tail());
                }
            }
        }
    }
    Logs(procs)
}

/// Rotation without a restart: the running cluster re-reads its secret file. With
/// the new secret added second, requests signed with either are taken; once the
/// old one is removed, a request signed with it is refused, and the cluster's own
/// traffic never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_rotates_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.secret");
    let (old, new) = (secret_text(), secret_text());
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let loaded = ClusterSecret::load(&file).unwrap();
    // The cluster's own handle on the file: it shows what the cluster signs with.
    let in_use = loaded.clone();
    let t = common::start_custom(3, |c| c.cluster_secret = Some(loaded)).await;
    let addr = t.cluster.data_addrs[0].to_string();
    let signing_with = |text: &str| {
        DataClient::new(DataTimeouts::default()).with_secret(Some(ClusterSecret::from_text(text).unwrap()))
    };
    let (by_old, by_new) = (signing_with(&old), signing_with(&new));
    assert!(by_old.stats(&addr).await.is_ok());
    assert!(matches!(by_new.stats(&addr).await, Err(cairn::data::client::DataClientError::Status { status: 401, .. })));

    // Each step waits for the file to be re-read (every 2 s), writing meanwhile.
    let mut round = 0;
    let mut wait_until = async |want_old: bool, want_new: bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            round += 1;
            let body = common::pattern(10_000, round);
            assert_eq!(t.put(&format!("during-{round}"), body.clone()).await.status(), 200, "writes go on");
            assert_eq!(t.get(&format!("during-{round}")).await.bytes().await.unwrap(), body);
            let (o, n) = (by_old.stats(&addr).await.is_ok(), by_new.stats(&addr).await.is_ok());
            if (o, n) == (want_old, want_new) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "old {o}, new {n}; want {want_old}, {want_new}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // 1: add the new secret second (every process), 2: put it first, 3: drop the old.
    std::fs::write(&file, format!("{old}\n{new}\n")).unwrap();
    wait_until(true, true).await;
    std::fs::write(&file, format!("{new}\n{old}\n")).unwrap();
    let new_id = ClusterSecret::from_text(&new).unwrap().key_ids()[0].clone();
    common::eventually(Duration::from_secs(20), "the new secret signing", || async {
        in_use.key_ids().first() == Some(&new_id)
    })
    .await;
    wait_until(true, true).await;
    std::fs::write(&file, format!("{new}\n")).unwrap();
    wait_until(false, true).await;
    // A broken file keeps what is in use.
    std::fs::write(&file, "too short\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(by_new.stats(&addr).await.is_ok());
    assert!(by_old.stats(&addr).await.is_err());
}
