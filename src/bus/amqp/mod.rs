//! The RabbitMQ [`Transport`]: the bus's room for AMQP 0-9-1, over `amqprs`.
//!
//! A process opens exactly one [`AmqpTransport`] (one TCP connection, one channel
//! for its work plus a short-lived one while declaring exchanges) and shares it
//! through [`Bus`](super::Bus); nothing here opens a connection per request. Each
//! connection declares the seed's fanout exchanges `apiServers` and `dataServers`
//! itself, gives every [`subscribe`](Transport::subscribe) an exclusive,
//! auto-delete, server-named queue bound to its exchange, and consumes one more such
//! queue as the process's reply queue. Messages are consumed with auto-ack and
//! copied into bounded in-process queues; a subscriber that falls behind loses
//! messages (with a warning) instead of stalling the connection's reader.
//!
//! The connection is watched by a supervisor task (connection and channel close
//! callbacks, the library's network-failure signal, a periodic `is_open` check and
//! AMQP heartbeats every 10 s). That task, the network-failure watch and the
//! forwarding task of every consumer are owned by the transport's [`TaskTracker`]:
//! they all end once the transport stops, which [`Transport::stopped`] waits for. When it is lost, publishing fails at once with
//! [`BusError::Disconnected`], and the supervisor reconnects with jittered
//! exponential backoff (100 ms doubling to 5 s), declares the exchanges again and
//! re-creates every subscription and the reply queue, forwarding into the same
//! receivers as before. The reply queue gets a new name, which
//! [`reply_address`](Transport::reply_address) reports.
//!
//! Exchanges are declared `fanout`, not durable, not auto-delete. If the broker
//! already has them with other flags (say durable, as `rabbitmqadmin` creates them
//! by default) the declaration is refused; the transport then only checks that they
//! exist (a passive declare) and uses them as they are.
//!
//! Nothing that arrives from the broker can panic this code: bodies are passed on as
//! bytes (the typed layer in [`super`] drops what does not decode) and missing
//! properties become `None`.
//!
//! The room is split by what each part does: this file holds the transport, its
//! shared state and the publishing path; `session.rs` declares the exchanges,
//! watches the connection and reconnects; `consume.rs` sets up queues and forwards
//! what they receive; `address.rs` parses the `amqp://` URL.

mod address;
mod consume;
mod session;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use amqprs::channel::{BasicPublishArguments, Channel};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::BasicProperties;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BusError, Delivery, Exchange, Transport};
use address::BrokerAddress;
use consume::{declare_and_consume, forward, start_subscription};
use session::{declare_exchanges, supervise, watch_network_failure, ChannelWatch, ConnectionWatch};

/// How long opening the connection (TCP, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long any other broker operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// AMQP heartbeat interval asked of the broker, in seconds; two missed heartbeats
/// and the connection counts as lost.
const HEARTBEAT_SECS: u16 = 10;
/// Depth of each in-process queue between the AMQP reader and a receiver.
const QUEUE_DEPTH: usize = 1024;
/// First reconnect delay; doubles on every failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the supervisor checks that the connection and channel are still open,
/// besides listening to the library's close notifications.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// AMQP short strings (queue names, routing keys, reply_to, correlation_id) are at
/// most this many bytes; `amqprs` panics on longer ones, so they are checked first.
const SHORT_STR_MAX: usize = 255;
/// Both exchanges, in the order they are declared.
const EXCHANGES: [Exchange; 2] = [Exchange::ApiServers, Exchange::DataServers];

/// The RabbitMQ implementation of [`Transport`]: one long-lived AMQP connection
/// that reconnects by itself and keeps subscriptions alive across reconnects.
///
/// Made by [`AmqpTransport::connect`]; stops (closing the connection and ending
/// every receiver) when the token given there is cancelled or the transport is
/// dropped.
pub struct AmqpTransport {
    inner: Arc<Inner>,
    /// Child of the caller's shutdown token, cancelled on drop so the supervisor
    /// never outlives the transport.
    stop: CancellationToken,
}

/// What the transport's handle, its supervisor and its forwarding tasks share.
struct Inner {
    args: OpenConnectionArguments,
    /// Where the broker is, for logs (never the password).
    place: String,
    stop: CancellationToken,
    /// The current session, `None` while disconnected.
    live: Mutex<Option<Live>>,
    /// Every subscription to restore after a reconnect. The async lock also
    /// serializes the synchronous AMQP requests (declare, bind, consume, cancel) on
    /// the shared channel, which `amqprs` cannot interleave safely.
    subscriptions: tokio::sync::Mutex<Vec<Subscription>>,
    /// Where reply-queue messages go; set by [`Transport::replies`].
    replies: ReplySlot,
    /// Counts reconnections, once [`AmqpTransport::count_reconnects`] says on what.
    reconnects: std::sync::OnceLock<metrics::Counter>,
    /// Owns the supervisor, the network-failure watches and the forwarding tasks.
    tasks: TaskTracker,
}

type ReplySlot = Arc<Mutex<Option<mpsc::Sender<Delivery>>>>;

/// The parts of the current session that publishers and subscribers need.
#[derive(Clone)]
struct Live {
    channel: Channel,
    reply_queue: String,
    /// Cancelled when the session ends (lost or shut down); its forwarding tasks stop.
    over: CancellationToken,
}

/// One remembered subscription.
struct Subscription {
    exchange: Exchange,
    tx: mpsc::Sender<Delivery>,
}

/// A connection with everything set up on it, owned by the supervisor.
struct Session {
    connection: Connection,
    channel: Channel,
    over: CancellationToken,
}

/// Where a forwarding task puts what its consumer receives.
enum Sink {
    Subscriber(mpsc::Sender<Delivery>),
    Replies(ReplySlot),
}

impl AmqpTransport {
    /// Counts every re-established connection on `reconnects` (the process's
    /// server's [`BUS_RECONNECTS`](crate::telemetry::BUS_RECONNECTS)); the first
    /// call wins.
    pub fn count_reconnects(&self, reconnects: metrics::Counter) {
        let _ = self.inner.reconnects.set(reconnects);
    }

    /// Connects to the broker at `url` (`amqp://user:password@host:port/vhost`;
    /// user and password default to `guest`, the port to 5672, the vhost to `/`,
    /// which may be written `/%2f` or left out), declares the exchanges and the
    /// reply queue, and starts the supervisor that reconnects until `shutdown` is
    /// cancelled.
    ///
    /// Fails within a few seconds with [`BusError::Broker`] if the broker cannot be
    /// reached or refuses the connection, so that a misconfigured process says so
    /// at start, and with [`BusError::BadUrl`] if `url` cannot be understood.
    pub async fn connect(url: &str, shutdown: CancellationToken) -> Result<AmqpTransport, BusError> {
        let address = BrokerAddress::parse(url)?;
        let stop = shutdown.child_token();
        let inner = Arc::new(Inner {
            args: address.connection_arguments(),
            place: address.to_string(),
            stop: stop.clone(),
            live: Mutex::new(None),
            subscriptions: tokio::sync::Mutex::new(Vec::new()),
            replies: Arc::new(Mutex::new(None)),
            reconnects: std::sync::OnceLock::new(),
            tasks: TaskTracker::new(),
        });
        let session = inner.establish().await?;
        tracing::info!(broker = %inner.place, "connected to RabbitMQ");
        inner.tasks.spawn(supervise(inner.clone(), session));
        Ok(AmqpTransport { inner, stop })
    }

    /// How many of the transport's tasks are running now (the supervisor, and per
    /// session a network watch and one forwarding task per consumer); 0 once
    /// [`Transport::stopped`] has returned.
    pub fn running_tasks(&self) -> usize {
        self.inner.tasks.len()
    }
}

impl Drop for AmqpTransport {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    async fn publish(&self, exchange: Exchange, msg: Delivery) -> Result<(), BusError> {
        let properties =
            Properties { reply_to: msg.reply_to.as_deref(), correlation_id: msg.correlation_id.as_deref() };
        self.inner.send("publish", exchange.name(), "", properties, msg.body).await
    }

    /// Remembers the subscription and, when connected, sets it up on the broker at
    /// once; while disconnected (or if setting it up fails, which forces a
    /// reconnect) it starts receiving once the connection is back.
    async fn subscribe(&self, exchange: Exchange) -> Result<mpsc::Receiver<Delivery>, BusError> {
        if self.inner.stop.is_cancelled() {
            return Err(BusError::Closed);
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let mut subscriptions = self.inner.subscriptions.lock().await;
        if let Some(live) = self.inner.live() {
            if let Err(e) = start_subscription(&self.inner, &live, exchange, tx.clone()).await {
                tracing::warn!(
                    exchange = exchange.name(), error = %e,
                    "could not subscribe on the current connection; reconnecting to retry"
                );
                live.over.cancel();
            }
        }
        subscriptions.push(Subscription { exchange, tx });
        Ok(rx)
    }

    /// The reply queue is consumed from the moment of connecting; what arrives
    /// before this is called is dropped. A later call takes the replies over from
    /// an earlier one.
    async fn replies(&self) -> Result<mpsc::Receiver<Delivery>, BusError> {
        if self.inner.stop.is_cancelled() {
            return Err(BusError::Closed);
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        *lock(&self.inner.replies) = Some(tx);
        Ok(rx)
    }

    fn reply_address(&self) -> Option<String> {
        self.inner.live().map(|live| live.reply_queue)
    }

    async fn send_reply(&self, reply_to: &str, correlation_id: &str, body: Bytes) -> Result<(), BusError> {
        if reply_to.is_empty() {
            return Err(BusError::Broker { op: "send reply", reason: "empty reply_to".into() });
        }
        let properties = Properties { reply_to: None, correlation_id: Some(correlation_id) };
        // The default exchange routes by queue name; a reply to a queue that is
        // gone (its asker disconnected) is dropped by the broker, as in the seed.
        self.inner.send("send reply", "", reply_to, properties, body).await
    }

    /// Returns once the supervisor has closed the connection and every forwarding
    /// task has ended: after the shutdown token given to
    /// [`connect`](AmqpTransport::connect) is cancelled, within the broker's close
    /// timeout.
    async fn stopped(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// The AMQP properties cairn sets on a message.
struct Properties<'a> {
    reply_to: Option<&'a str>,
    correlation_id: Option<&'a str>,
}

impl Inner {
    fn live(&self) -> Option<Live> {
        lock(&self.live).clone()
    }

    /// Publishes one message on the current channel, failing at once when there is
    /// none.
    async fn send(
        &self,
        op: &'static str,
        exchange: &str,
        routing_key: &str,
        properties: Properties<'_>,
        body: Bytes,
    ) -> Result<(), BusError> {
        if self.stop.is_cancelled() {
            return Err(BusError::Closed);
        }
        for (what, value) in [
            ("routing key", Some(routing_key)),
            ("reply_to", properties.reply_to),
            ("correlation_id", properties.correlation_id),
        ] {
            if value.is_some_and(|v| v.len() > SHORT_STR_MAX) {
                return Err(BusError::Broker { op, reason: format!("{what} is longer than {SHORT_STR_MAX} bytes") });
            }
        }
        let channel = self.live().map(|live| live.channel).ok_or(BusError::Disconnected)?;
        if !channel.is_connection_open() || !channel.is_open() {
            return Err(BusError::Disconnected);
        }
        let mut props = BasicProperties::default();
        if let Some(reply_to) = properties.reply_to {
            props.with_reply_to(reply_to);
        }
        if let Some(correlation_id) = properties.correlation_id {
            props.with_correlation_id(correlation_id);
        }
        let args = BasicPublishArguments::new(exchange, routing_key);
        match tokio::time::timeout(OP_TIMEOUT, channel.basic_publish(props, body.to_vec(), args)).await {
            Ok(Ok(())) => Ok(()),
            // The connection went away under us: say so the way the trait promises.
            _ if !channel.is_connection_open() || !channel.is_open() => Err(BusError::Disconnected),
            Ok(Err(e)) => Err(BusError::Broker { op, reason: e.to_string() }),
            Err(_) => Err(BusError::Broker { op, reason: no_answer_within(OP_TIMEOUT) }),
        }
    }

    /// Opens a connection and sets up everything on it: exchanges, the reply
    /// queue, every remembered subscription. Becomes the live session on success.
    async fn establish(self: &Arc<Self>) -> Result<Session, BusError> {
        let mut subscriptions = self.subscriptions.lock().await;
        let connection = timed("connect", CONNECT_TIMEOUT, Connection::open(&self.args)).await?;
        let over = CancellationToken::new();
        let set_up = async {
            timed(
                "register connection callback",
                OP_TIMEOUT,
                connection.register_callback(ConnectionWatch { over: over.clone() }),
            )
            .await?;
            watch_network_failure(&self.tasks, connection.clone(), over.clone());
            declare_exchanges(&connection).await?;
            let channel = timed("open channel", OP_TIMEOUT, connection.open_channel(None)).await?;
            timed(
                "register channel callback",
                OP_TIMEOUT,
                channel.register_callback(ChannelWatch { over: over.clone() }),
            )
            .await?;
            let (reply_queue, consumer) = declare_and_consume(&channel, None).await?;
            let live = Live { channel: channel.clone(), reply_queue, over: over.clone() };
            self.tasks.spawn(forward(consumer.messages, Sink::Replies(self.replies.clone()), over.clone(), None));
            subscriptions.retain(|s| !s.tx.is_closed());
            for s in subscriptions.iter() {
                start_subscription(self, &live, s.exchange, s.tx.clone()).await?;
            }
            Ok::<_, BusError>((channel, live))
        };
        match set_up.await {
            Ok((channel, live)) => {
                *lock(&self.live) = Some(live);
                Ok(Session { connection, channel, over })
            }
            Err(e) => {
                over.cancel();
                let _ = tokio::time::timeout(OP_TIMEOUT, connection.close()).await;
                Err(e)
            }
        }
    }

    /// Ends a session: no more publishing on it, its forwarding tasks stop.
    fn end_session(&self, session: &Session) {
        let mut live = lock(&self.live);
        if live.as_ref().is_some_and(|l| l.over == session.over) {
            *live = None;
        }
        drop(live);
        session.over.cancel();
    }
}

/// Runs one broker operation with a deadline, naming it in the error.
async fn timed<T>(
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, amqprs::error::Error>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BusError::Broker { op, reason: e.to_string() }),
        Err(_) => Err(BusError::Broker { op, reason: no_answer_within(limit) }),
    }
}

fn no_answer_within(limit: Duration) -> String {
    format!("no answer from the broker within {limit:?}")
}

/// A lock that shrugs off poisoning: the data behind it stays consistent because
/// every critical section is a single assignment or clone.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
