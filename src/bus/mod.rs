//! The bus between the API tier and the data tier: the seed's two fanout exchanges.
//!
//! Data servers publish [`Heartbeat`]s on `apiServers`; API servers publish
//! [`LocateRequest`]s on `dataServers`, each carrying `reply_to` (the asker's own
//! reply queue) and a fresh `correlation_id`, and every data server answers with a
//! [`LocateReply`] naming the shards it holds (an empty list when it holds none, so
//! that the asker can stop as soon as every live server has answered).
//!
//! A [`Transport`] moves raw bytes: [`amqp`] over RabbitMQ, [`memory`] inside one
//! process. [`Bus`] sits on top of either and is the only thing the rest of cairn
//! uses: it encodes and decodes the JSON messages (a malformed message is logged and
//! dropped, never fatal) and routes replies to the locate that asked for them. The
//! rest of the code cannot tell the transports apart.
//!
//! With a cluster secret ([`crate::secret`], [`Bus::with_secret`]) every message
//! is signed: its body is `CAIRN-SIG <signature>\n<json>`, the signature covering
//! the message's kind, its `reply_to` and `correlation_id` and the JSON. A bus with
//! a secret drops (and counts, [`crate::telemetry::BUS_DROPPED`]) every message
//! that is unsigned, signed with another secret, outside the clock window, or a
//! replay. A bus without one ignores signed messages: they come from a closed
//! cluster whose data servers would refuse its unsigned requests anyway, so two
//! clusters on one broker, one closed and one open, never mix.
//!
//! Nothing from the bus is trusted. Every message is checked once, where it is
//! decoded ([`decode_heartbeat`], [`decode_locate_reply`]): a data server's address
//! must be `host:port` ([`validate_addr`]), a locate reply lists at most
//! [`MAX_REPLY_SHARDS`] distinct shard indices. What fails is dropped with a short
//! warning (at most one line a second per stream, with a count of what was
//! suppressed). Whether an address belongs to a live member, and whether an index
//! lies inside the content's policy, is for the asker to check (it knows both; see
//! `cluster::locate`).
//!
//! The messages' types and their decoding live in `message.rs`, the address check
//! in `addr.rs`; this file holds the [`Transport`] trait and [`Bus`].

mod addr;
pub mod amqp;
pub mod memory;
mod message;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use addr::{validate_addr, InvalidAddr, MAX_HOST_LEN};
use message::decode_locate_request;
pub use message::{
    authenticate, decode_heartbeat, decode_locate_reply, DecodeError, Heartbeat, IncomingLocate, LocateReply,
    LocateRequest, MessageKind,
};

use crate::content::ContentHash;
use crate::secret::{self, ClusterSecret, Verifier};

/// The most shard indices one locate reply may list. No policy has more shards
/// than this ([`crate::content::Policy`] keeps `k + m` far below it); a longer list
/// is a broken or hostile peer and the whole reply is dropped.
pub const MAX_REPLY_SHARDS: usize = 256;

/// The two fanout exchanges of the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exchange {
    /// `apiServers`: heartbeats from data servers to every API server.
    ApiServers,
    /// `dataServers`: locate requests from API servers to every data server.
    DataServers,
}

impl Exchange {
    /// The exchange's name on the broker, kept from the seed.
    pub fn name(self) -> &'static str {
        match self {
            Exchange::ApiServers => "apiServers",
            Exchange::DataServers => "dataServers",
        }
    }
}

/// One message as it crosses a transport: the body and the two AMQP properties the
/// request/reply pattern needs.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// The message body (JSON for every message cairn itself sends).
    pub body: Bytes,
    /// Where the receiver should send its answer (a reply queue name).
    pub reply_to: Option<String>,
    /// Which request an answer belongs to.
    pub correlation_id: Option<String>,
}

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The broker is unreachable right now; the transport keeps reconnecting.
    #[error("bus is disconnected from the broker")]
    Disconnected,
    /// The broker refused or failed an operation.
    #[error("bus operation {op} failed: {reason}")]
    Broker {
        /// What was being done.
        op: &'static str,
        /// What the client library said.
        reason: String,
    },
    /// The bus URL could not be understood.
    #[error("bad bus URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The process is shutting down.
    #[error("bus is shut down")]
    Closed,
}

/// Moves raw messages over one kind of broker. Implementations keep their
/// subscriptions alive across reconnects: a receiver returned by [`subscribe`] or
/// [`replies`] keeps receiving after the broker comes back.
///
/// [`subscribe`]: Transport::subscribe
/// [`replies`]: Transport::replies
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes `msg` on the fanout `exchange`. Fails with
    /// [`BusError::Disconnected`] while the broker is away (the caller decides whether
    /// to retry); never blocks for long.
    async fn publish(&self, exchange: Exchange, msg: Delivery) -> Result<(), BusError>;

    /// Receives every message published on `exchange` from now on, through a queue of
    /// this process's own bound to it.
    async fn subscribe(&self, exchange: Exchange) -> Result<mpsc::Receiver<Delivery>, BusError>;

    /// Receives the messages sent to this process's own reply queue. Called once.
    async fn replies(&self) -> Result<mpsc::Receiver<Delivery>, BusError>;

    /// The name of this process's reply queue right now, to put in `reply_to`; `None`
    /// while disconnected. It may change after a reconnect.
    fn reply_address(&self) -> Option<String>;

    /// Sends `body` to the reply queue `reply_to`, tagged with `correlation_id`.
    async fn send_reply(&self, reply_to: &str, correlation_id: &str, body: Bytes) -> Result<(), BusError>;

    /// Waits until the transport's own tasks have ended, once its shutdown token is
    /// cancelled; a transport without tasks of its own returns at once.
    async fn stopped(&self) {}
}

/// Keeps the warnings about dropped messages to one line a second per stream, so
/// a peer that floods the bus with garbage cannot flood the log too.
struct DropWarnings {
    stream: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl DropWarnings {
    const EVERY: Duration = Duration::from_secs(1);

    fn new(stream: &'static str) -> DropWarnings {
        DropWarnings { stream, last: None, suppressed: 0 }
    }

    fn dropped(&mut self, reason: &DecodeError, body: &[u8]) {
        metrics::counter!(crate::telemetry::BUS_DROPPED, "stream" => self.stream, "reason" => reason.label())
            .increment(1);
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        let preview = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
        tracing::warn!(
            stream = self.stream, %reason, %preview, len = body.len(), suppressed = self.suppressed,
            "dropping a bad bus message"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Which pending locate each correlation id belongs to.
type PendingLocates = Arc<Mutex<HashMap<String, mpsc::Sender<LocateReply>>>>;

/// The typed bus: heartbeats, locate requests and replies over any [`Transport`].
/// Cheap to clone; one per process, sharing the transport's one connection.
///
/// Its own tasks (the reply router, one decoder per subscription) are owned by a
/// [`TaskTracker`] and end when the `shutdown` token given to [`Bus::new`] is
/// cancelled; [`Bus::stopped`] waits for them and for the transport's.
#[derive(Clone)]
pub struct Bus {
    transport: Arc<dyn Transport>,
    /// Signs what this bus sends and requires signatures on what it receives.
    secret: Option<ClusterSecret>,
    pending: PendingLocates,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Bus {
    /// Wraps `transport` and starts routing locate replies to their askers until
    /// `shutdown` is cancelled.
    pub async fn new(transport: Arc<dyn Transport>, shutdown: CancellationToken) -> Result<Bus, BusError> {
        Bus::with_secret(transport, None, shutdown).await
    }

    /// [`Bus::new`], signing every message with `secret` and dropping every received
    /// message not signed with it (`None`: an open bus).
    pub async fn with_secret(
        transport: Arc<dyn Transport>,
        secret: Option<ClusterSecret>,
        shutdown: CancellationToken,
    ) -> Result<Bus, BusError> {
        let pending: PendingLocates = Arc::default();
        let replies = transport.replies().await?;
        let tasks = TaskTracker::new();
        let verifier = secret.clone().map(Verifier::new);
        tasks.spawn(route_replies(replies, pending.clone(), verifier, shutdown.clone()));
        Ok(Bus { transport, secret, pending, tasks, shutdown })
    }

    /// `json` as the body of a message of `kind`: sealed with the secret's
    /// signature when the bus has one, as it is otherwise.
    fn seal(&self, kind: MessageKind, reply_to: Option<&str>, correlation_id: Option<&str>, json: Vec<u8>) -> Bytes {
        match &self.secret {
            Some(secret) => secret::seal_envelope(secret, &kind.parts(reply_to, correlation_id), &json).into(),
            None => json.into(),
        }
    }

    /// Waits until every task of this bus and of its transport has ended: after
    /// the `shutdown` token is cancelled (or every receiver is gone), promptly.
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.transport.stopped().await;
    }

    /// Publishes a heartbeat on `apiServers`.
    pub async fn publish_heartbeat(&self, hb: &Heartbeat) -> Result<(), BusError> {
        let body = self.seal(MessageKind::Heartbeat, None, None, serde_json::to_vec(hb).expect("heartbeat serializes"));
        self.transport.publish(Exchange::ApiServers, Delivery { body, ..Default::default() }).await
    }

    /// Every well-formed heartbeat from now on; malformed ones, and ones whose address
    /// is not `host:port`, are logged and dropped.
    pub async fn heartbeats(&self) -> Result<mpsc::Receiver<Heartbeat>, BusError> {
        let raw = self.transport.subscribe(Exchange::ApiServers).await?;
        Ok(self.decode_stream("heartbeats", MessageKind::Heartbeat, raw, |_, json| decode_heartbeat(json)))
    }

    /// Every well-formed locate request from now on (data server side); malformed
    /// ones, and ones without `reply_to` or `correlation_id`, are logged and dropped.
    pub async fn locate_requests(&self) -> Result<mpsc::Receiver<IncomingLocate>, BusError> {
        let raw = self.transport.subscribe(Exchange::DataServers).await?;
        Ok(self.decode_stream("locate requests", MessageKind::LocateRequest, raw, decode_locate_request))
    }

    /// Answers a locate request.
    pub async fn reply(&self, to: &IncomingLocate, reply: &LocateReply) -> Result<(), BusError> {
        let json = serde_json::to_vec(reply).expect("locate reply serializes");
        let body = self.seal(MessageKind::LocateReply, None, Some(&to.correlation_id), json);
        self.transport.send_reply(&to.reply_to, &to.correlation_id, body).await
    }

    /// Broadcasts a locate for `hash` and returns the replies as they arrive. The
    /// caller decides when it has heard enough; dropping the [`PendingLocate`] stops
    /// listening.
    pub async fn broadcast_locate(&self, hash: ContentHash) -> Result<PendingLocate, BusError> {
        let reply_to = self.transport.reply_address().ok_or(BusError::Disconnected)?;
        let correlation_id = uuid::Uuid::new_v4().to_string();
        // Room for every answer of a large cluster; extra answers are dropped, not blocked on.
        let (tx, rx) = mpsc::channel(1024);
        self.pending.lock().expect("pending locates lock").insert(correlation_id.clone(), tx);
        let pending = PendingLocate { id: correlation_id.clone(), replies: rx, routes: self.pending.clone() };
        let json = serde_json::to_vec(&LocateRequest { hash }).expect("locate request serializes");
        let body = self.seal(MessageKind::LocateRequest, Some(&reply_to), Some(&correlation_id), json);
        self.transport
            .publish(
                Exchange::DataServers,
                Delivery { body, reply_to: Some(reply_to), correlation_id: Some(correlation_id) },
            )
            .await?;
        Ok(pending)
    }

    /// Publishes raw bytes on an exchange, bypassing encoding: for tests that check
    /// every server survives a malformed message.
    pub async fn publish_raw(&self, exchange: Exchange, body: Bytes) -> Result<(), BusError> {
        self.transport.publish(exchange, Delivery { body, ..Default::default() }).await
    }
}

/// The replies to one locate broadcast, in arrival order. Unregisters itself on drop.
pub struct PendingLocate {
    id: String,
    replies: mpsc::Receiver<LocateReply>,
    routes: PendingLocates,
}

impl PendingLocate {
    /// The next reply, or `None` if the bus shut down.
    pub async fn next(&mut self) -> Option<LocateReply> {
        self.replies.recv().await
    }
}

impl Drop for PendingLocate {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&self.id);
        }
    }
}

/// Routes each reply to the locate that asked for it, dropping what does not decode
/// or check out, and replies for locates that already finished.
async fn route_replies(
    mut replies: mpsc::Receiver<Delivery>,
    routes: PendingLocates,
    verifier: Option<Verifier>,
    shutdown: CancellationToken,
) {
    let mut warnings = DropWarnings::new("locate replies");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return,
            d = replies.recv() => match d { Some(d) => d, None => return },
        };
        let routed = delivery.correlation_id.as_deref().ok_or(DecodeError::NoCorrelationId).and_then(|id| {
            let json = authenticate(verifier.as_ref(), MessageKind::LocateReply, &delivery)?;
            let reply = decode_locate_reply(json)?;
            Ok((id, reply))
        });
        let (id, reply) = match routed {
            Ok(r) => r,
            Err(reason) => {
                warnings.dropped(&reason, &delivery.body);
                continue;
            }
        };
        let sender = routes.lock().expect("pending locates lock").get(id).cloned();
        // A reply for a locate that already finished is normal (late answerers); a
        // full queue means a flood, and the asker has heard plenty.
        if let Some(sender) = sender {
            let _ = sender.try_send(reply);
        }
    }
}

impl Bus {
    /// Decodes a raw stream into typed messages on a task of this bus's own,
    /// dropping (with a rate-limited warning) what does not decode. Ends when either
    /// side goes away or the bus shuts down.
    fn decode_stream<T, F>(
        &self,
        stream: &'static str,
        kind: MessageKind,
        mut raw: mpsc::Receiver<Delivery>,
        decode: F,
    ) -> mpsc::Receiver<T>
    where
        T: Send + 'static,
        F: Fn(&Delivery, &[u8]) -> Result<T, DecodeError> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(256);
        let shutdown = self.shutdown.clone();
        // Each subscription remembers its own nonces: a fanout message reaches
        // every subscriber once.
        let verifier = self.secret.clone().map(Verifier::new);
        self.tasks.spawn(async move {
            let mut warnings = DropWarnings::new(stream);
            loop {
                let d = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    d = raw.recv() => match d { Some(d) => d, None => return },
                };
                match authenticate(verifier.as_ref(), kind, &d).and_then(|json| decode(&d, json)) {
                    Ok(msg) => {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            sent = tx.send(msg) => if sent.is_err() { return },
                        }
                    }
                    Err(reason) => warnings.dropped(&reason, &d.body),
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ShardIndex;
    use crate::secret::Refusal;

    #[test]
    fn heartbeats_with_good_addresses_decode() {
        let hb = decode_heartbeat(br#"{"addr":"127.29.1.1:12345","free":7}"#).unwrap();
        assert_eq!(hb, Heartbeat { addr: "127.29.1.1:12345".into(), free: 7 });
    }

    #[test]
    fn heartbeats_that_are_not_json_or_name_a_bad_address_are_refused() {
        assert!(matches!(decode_heartbeat(b"not-json"), Err(DecodeError::Json(_))));
        assert!(matches!(decode_heartbeat(br#"{"addr":"a:1"}"#), Err(DecodeError::Json(_))));
        for addr in ["http://a:1/", "a:1/x", "u@a:1", "a", "a:0", " a:1"] {
            let body = serde_json::to_vec(&Heartbeat { addr: addr.into(), free: 1 }).unwrap();
            assert!(matches!(decode_heartbeat(&body), Err(DecodeError::BadAddr(_))), "{addr}");
        }
    }

    #[test]
    fn locate_replies_are_bounded_and_free_of_duplicates() {
        let body = |addr: &str, shards: Vec<ShardIndex>| serde_json::to_vec(&LocateReply { addr: addr.into(), shards });
        let ok = decode_locate_reply(&body("[::1]:9", vec![5, 0, 3]).unwrap()).unwrap();
        assert_eq!(ok.shards, vec![5, 0, 3]);
        assert!(decode_locate_reply(&body("h:1", vec![]).unwrap()).unwrap().shards.is_empty());
        let max: Vec<ShardIndex> = (0..MAX_REPLY_SHARDS as ShardIndex).collect();
        assert!(decode_locate_reply(&body("h:1", max).unwrap()).is_ok());
        let over: Vec<ShardIndex> = (0..=MAX_REPLY_SHARDS as ShardIndex).collect();
        assert!(matches!(
            decode_locate_reply(&body("h:1", over).unwrap()),
            Err(DecodeError::TooManyShards { count }) if count == MAX_REPLY_SHARDS + 1
        ));
        assert!(matches!(
            decode_locate_reply(&body("h:1", vec![1, 2, 1]).unwrap()),
            Err(DecodeError::DuplicateShard { shard: 1 })
        ));
        assert!(matches!(decode_locate_reply(&body("h:1/x", vec![0]).unwrap()), Err(DecodeError::BadAddr(_))));
        assert!(matches!(decode_locate_reply(br#"{"addr":"h:1","shards":[-1]}"#), Err(DecodeError::Json(_))));
        assert!(matches!(decode_locate_reply(b"\xff\xfe"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn a_closed_bus_takes_only_messages_signed_for_their_kind_and_properties() {
        let secret = ClusterSecret::from_text("a cluster secret of thirty-two bytes at least").unwrap();
        let verifier = Verifier::new(secret.clone());
        let json = br#"{"addr":"127.29.1.1:12345","free":7}"#;
        let sealed = |kind: MessageKind, reply_to: Option<&str>, id: Option<&str>| Delivery {
            body: secret::seal_envelope(&secret, &kind.parts(reply_to, id), json).into(),
            reply_to: reply_to.map(String::from),
            correlation_id: id.map(String::from),
        };
        let hb = sealed(MessageKind::Heartbeat, None, None);
        assert_eq!(authenticate(Some(&verifier), MessageKind::Heartbeat, &hb).unwrap(), json);
        assert!(matches!(
            authenticate(Some(&verifier), MessageKind::Heartbeat, &hb),
            Err(DecodeError::Unauthenticated(Refusal::Replay))
        ));
        let hb = sealed(MessageKind::Heartbeat, None, None);
        assert!(matches!(
            authenticate(Some(&verifier), MessageKind::LocateReply, &hb),
            Err(DecodeError::Unauthenticated(Refusal::BadSignature))
        ));
        let mut request = sealed(MessageKind::LocateRequest, Some("q1"), Some("c1"));
        request.reply_to = Some("attacker-queue".into());
        assert!(matches!(
            authenticate(Some(&verifier), MessageKind::LocateRequest, &request),
            Err(DecodeError::Unauthenticated(Refusal::BadSignature))
        ));
        let plain = Delivery { body: Bytes::from_static(json), ..Default::default() };
        let e = authenticate(Some(&verifier), MessageKind::Heartbeat, &plain).unwrap_err();
        assert_eq!(e.label(), "unsigned");
        assert_eq!(authenticate(None, MessageKind::Heartbeat, &plain).unwrap(), json);
        let signed = sealed(MessageKind::Heartbeat, None, None);
        assert!(matches!(authenticate(None, MessageKind::Heartbeat, &signed), Err(DecodeError::SignedElsewhere)));
    }

    #[test]
    fn drop_warnings_are_rate_limited() {
        let mut w = DropWarnings::new("test");
        let reason = DecodeError::NoReplyTo;
        w.dropped(&reason, b"x");
        assert!(w.last.is_some() && w.suppressed == 0);
        for _ in 0..10 {
            w.dropped(&reason, b"x");
        }
        assert_eq!(w.suppressed, 10);
        w.last = Some(Instant::now() - DropWarnings::EVERY);
        w.dropped(&reason, b"x");
        assert_eq!(w.suppressed, 0);
    }
}
