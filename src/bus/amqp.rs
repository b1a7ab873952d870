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

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, BasicPublishArguments, Channel, ConsumerMessage,
    ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BusError, Delivery, Exchange, Transport};

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

/// Keeps the connection alive: waits for it to be lost, then reconnects with
/// backoff, until the transport stops.
async fn supervise(inner: Arc<Inner>, mut session: Session) {
    loop {
        let stopping = loop {
            tokio::select! {
                _ = inner.stop.cancelled() => break true,
                _ = session.over.cancelled() => break false,
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {
                    if !session.connection.is_open() || !session.channel.is_open() {
                        break false;
                    }
                }
            }
        };
        inner.end_session(&session);
        let Session { connection, channel, .. } = session;
        if stopping {
            // Dropping the senders ends every receiver, telling their readers the
            // bus is gone.
            inner.subscriptions.lock().await.clear();
            *lock(&inner.replies) = None;
            drop(channel);
            let _ = tokio::time::timeout(OP_TIMEOUT, connection.close()).await;
            tracing::info!(broker = %inner.place, "closed the RabbitMQ connection");
            return;
        }
        tracing::warn!(broker = %inner.place, "lost the RabbitMQ connection; reconnecting");
        drop(channel);
        // Usually already closed; if only the channel broke, this closes the rest.
        let _ = tokio::time::timeout(OP_TIMEOUT, connection.close()).await;

        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        session = loop {
            tokio::select! {
                _ = inner.stop.cancelled() => {
                    inner.subscriptions.lock().await.clear();
                    *lock(&inner.replies) = None;
                    return;
                }
                _ = tokio::time::sleep(jittered(backoff)) => {}
            }
            match inner.establish().await {
                Ok(session) => {
                    if let Some(reconnects) = inner.reconnects.get() {
                        reconnects.increment(1);
                    }
                    tracing::info!(
                        broker = %inner.place, failed_attempts = failures,
                        "reconnected to RabbitMQ; exchanges, subscriptions and reply queue restored"
                    );
                    break session;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(
                        broker = %inner.place, error = %e, attempt = failures,
                        "reconnecting to RabbitMQ failed; retrying"
                    );
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
    }
}

/// `delay` plus or minus up to a quarter, so that many processes cut off by one
/// broker restart do not all come back in the same instant.
fn jittered(delay: Duration) -> Duration {
    let quarter = delay.as_millis() as u64 / 4;
    let offset = rand::rng().random_range(0..=2 * quarter);
    Duration::from_millis(delay.as_millis() as u64 - quarter + offset)
}

/// Ends the session when the library reports a network failure of `connection`,
/// on a task of `tasks` that ends with the session.
fn watch_network_failure(tasks: &TaskTracker, connection: Connection, over: CancellationToken) {
    tasks.spawn(async move {
        tokio::select! {
            _ = connection.listen_network_io_failure() => over.cancel(),
            _ = over.cancelled() => {}
        }
    });
}

/// Declares both exchanges on a channel of their own: a refused declaration closes
/// the channel it was made on, and the working channel must not be that one.
async fn declare_exchanges(connection: &Connection) -> Result<(), BusError> {
    let mut channel: Option<Channel> = None;
    for exchange in EXCHANGES {
        let name = exchange.name();
        let ch = match channel.take() {
            Some(ch) if ch.is_open() => ch,
            _ => timed("open channel", OP_TIMEOUT, connection.open_channel(None)).await?,
        };
        let declare = ExchangeDeclareArguments::new(name, "fanout");
        match timed("declare exchange", OP_TIMEOUT, ch.exchange_declare(declare)).await {
            Ok(()) => channel = Some(ch),
            Err(refused) => {
                drop(ch);
                let ch = timed("open channel", OP_TIMEOUT, connection.open_channel(None)).await?;
                let passive = ExchangeDeclareArguments::new(name, "fanout").passive(true).finish();
                timed("declare exchange", OP_TIMEOUT, ch.exchange_declare(passive)).await.map_err(|missing| {
                    BusError::Broker {
                        op: "declare exchange",
                        reason: format!("{name}: {refused}; and it does not exist: {missing}"),
                    }
                })?;
                tracing::warn!(
                    exchange = name, reason = %refused,
                    "exchange exists with other properties than cairn's; using it as it is"
                );
                channel = Some(ch);
            }
        }
    }
    if let Some(ch) = channel {
        let _ = tokio::time::timeout(OP_TIMEOUT, ch.close()).await;
    }
    Ok(())
}

/// A consumer on a fresh queue.
struct Consumer {
    tag: String,
    messages: mpsc::UnboundedReceiver<ConsumerMessage>,
}

/// Declares an exclusive, auto-delete, server-named queue, binds it to `exchange`
/// if one is given, and consumes it with auto-ack. Returns the queue's name.
async fn declare_and_consume(channel: &Channel, exchange: Option<Exchange>) -> Result<(String, Consumer), BusError> {
    let declare = QueueDeclareArguments::exclusive_server_named().auto_delete(true).finish();
    let (queue, _, _) = timed("declare queue", OP_TIMEOUT, channel.queue_declare(declare))
        .await?
        .ok_or_else(|| BusError::Broker { op: "declare queue", reason: "no queue name returned".into() })?;
    if let Some(exchange) = exchange {
        let bind = QueueBindArguments::new(&queue, exchange.name(), "");
        timed("bind queue", OP_TIMEOUT, channel.queue_bind(bind)).await?;
    }
    let consume = BasicConsumeArguments::new(&queue, "").auto_ack(true).exclusive(true).finish();
    let (tag, messages) = timed("consume", OP_TIMEOUT, channel.basic_consume_rx(consume)).await?;
    Ok((queue, Consumer { tag, messages }))
}

/// Sets up one subscription on the live session and starts forwarding it. The
/// caller holds the subscriptions lock.
async fn start_subscription(
    inner: &Arc<Inner>,
    live: &Live,
    exchange: Exchange,
    tx: mpsc::Sender<Delivery>,
) -> Result<(), BusError> {
    let (_, consumer) = declare_and_consume(&live.channel, Some(exchange)).await?;
    let cancel = CancelOnDrop { inner: Arc::downgrade(inner), channel: live.channel.clone(), tag: consumer.tag };
    inner.tasks.spawn(forward(consumer.messages, Sink::Subscriber(tx), live.over.clone(), Some(cancel)));
    Ok(())
}

/// What a subscription's forwarding task needs to cancel its consumer once the
/// receiver is dropped, so the broker stops sending (and deletes the queue).
struct CancelOnDrop {
    inner: std::sync::Weak<Inner>,
    channel: Channel,
    tag: String,
}

impl CancelOnDrop {
    async fn cancel(self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let mut subscriptions = inner.subscriptions.lock().await;
        subscriptions.retain(|s| !s.tx.is_closed());
        if self.channel.is_open() {
            let args = BasicCancelArguments::new(&self.tag);
            if let Err(e) = timed("cancel consumer", OP_TIMEOUT, self.channel.basic_cancel(args)).await {
                tracing::debug!(error = %e, "could not cancel the consumer of a dropped subscription");
            }
        }
    }
}

/// Copies what a consumer receives into its sink until the session ends or the
/// sink's receiver is dropped. Never waits on the sink: a full queue drops.
async fn forward(
    mut messages: mpsc::UnboundedReceiver<ConsumerMessage>,
    sink: Sink,
    over: CancellationToken,
    on_receiver_dropped: Option<CancelOnDrop>,
) {
    let receiver_gone = async {
        match &sink {
            Sink::Subscriber(tx) => tx.closed().await,
            Sink::Replies(_) => std::future::pending().await,
        }
    };
    tokio::pin!(receiver_gone);
    loop {
        let message = tokio::select! {
            _ = over.cancelled() => return,
            _ = &mut receiver_gone => {
                if let Some(cancel) = on_receiver_dropped {
                    cancel.cancel().await;
                }
                return;
            }
            m = messages.recv() => match m {
                Some(m) => m,
                // The channel closed; the supervisor notices and reconnects.
                None => return,
            },
        };
        let delivery = to_delivery(message.basic_properties, message.content);
        let tx = match &sink {
            Sink::Subscriber(tx) => Some(tx.clone()),
            Sink::Replies(slot) => lock(slot).clone(),
        };
        let Some(tx) = tx else {
            tracing::debug!("dropping a reply that arrived before anyone asked for replies");
            continue;
        };
        match tx.try_send(delivery) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("bus receiver is {QUEUE_DEPTH} messages behind; message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The transport's view of a consumed message; anything missing is empty or `None`.
fn to_delivery(properties: Option<BasicProperties>, content: Option<Vec<u8>>) -> Delivery {
    Delivery {
        body: Bytes::from(content.unwrap_or_default()),
        reply_to: properties.as_ref().and_then(|p| p.reply_to().cloned()),
        correlation_id: properties.as_ref().and_then(|p| p.correlation_id().cloned()),
    }
}

/// Ends the session when the broker closes the connection (e.g. `rabbitmqctl
/// close_connection`, a broker shutting down).
struct ConnectionWatch {
    over: CancellationToken,
}

#[async_trait]
impl ConnectionCallback for ConnectionWatch {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        tracing::warn!(code = close.reply_code(), reason = %close.reply_text(), "RabbitMQ closed the connection");
        self.over.cancel();
        Ok(())
    }

    async fn blocked(&mut self, _: &Connection, reason: String) {
        tracing::warn!(%reason, "RabbitMQ blocked publishing on this connection");
    }

    async fn unblocked(&mut self, _: &Connection) {
        tracing::info!("RabbitMQ unblocked publishing on this connection");
    }

    async fn secret_updated(&mut self, _: &Connection) {}
}

/// Ends the session when the broker closes the working channel or cancels one of
/// its consumers (its queue was deleted): reconnecting re-creates everything.
struct ChannelWatch {
    over: CancellationToken,
}

#[async_trait]
impl ChannelCallback for ChannelWatch {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        tracing::warn!(code = close.reply_code(), reason = %close.reply_text(), "RabbitMQ closed the channel");
        self.over.cancel();
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, cancel: Cancel) -> Result<(), amqprs::error::Error> {
        tracing::warn!(consumer = %cancel.consumer_tag(), "RabbitMQ cancelled a consumer");
        self.over.cancel();
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, _: Ack) {}

    async fn publish_nack(&mut self, _: &Channel, _: Nack) {}

    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
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

/// A parsed `amqp://` URL.
#[derive(Clone, PartialEq, Eq)]
struct BrokerAddress {
    host: String,
    port: u16,
    user: String,
    password: String,
    vhost: String,
    heartbeat: u16,
}

impl std::fmt::Display for BrokerAddress {
    /// `host:port/vhost`, without credentials, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} vhost {}", self.host, self.port, self.vhost)
    }
}

impl std::fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "amqp://{}:***@{}", self.user, self)
    }
}

impl BrokerAddress {
    /// Parses `amqp://[user[:password]@]host[:port][/vhost][?heartbeat=N]`, with the
    /// AMQP URI spec's defaults (guest, guest, 5672, `/`). The vhost is
    /// percent-decoded (`%2f` is `/`); an empty vhost (a trailing `/`) means `/`
    /// too, as most clients read it. Other query parameters are ignored.
    fn parse(url: &str) -> Result<BrokerAddress, BusError> {
        let bad = |reason: &str| BusError::BadUrl { url: crate::report::redact_url(url), reason: reason.to_string() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected amqp://host"))?;
        if scheme.eq_ignore_ascii_case("amqps") {
            return Err(bad("amqps (TLS) is not supported; use amqp://"));
        }
        if !scheme.eq_ignore_ascii_case("amqp") {
            return Err(bad("the scheme must be amqp://"));
        }
        if rest.contains('#') {
            return Err(bad("a fragment (#) has no meaning here"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => ("guest".to_string(), "guest".to_string()),
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                (percent_decode(user).map_err(|r| bad(&r))?, percent_decode(password).map_err(|r| bad(&r))?)
            }
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (inside, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (format!("[{inside}]"), port)
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            }
        };
        let host =
            if host.is_empty() { "localhost".to_string() } else { percent_decode(&host).map_err(|r| bad(&r))? };
        let port = match port {
            None => 5672,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let vhost = match path {
            None | Some("") => "/".to_string(),
            Some(p) if p.contains('/') => return Err(bad("the vhost is one path segment (write / as %2f)")),
            Some(p) => percent_decode(p).map_err(|r| bad(&r))?,
        };
        let mut heartbeat = HEARTBEAT_SECS;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "heartbeat" {
                heartbeat = value.parse().map_err(|_| bad("heartbeat must be a number of seconds"))?;
            } else {
                tracing::warn!(parameter = key, "ignoring an unknown parameter of the bus URL");
            }
        }
        Ok(BrokerAddress { host, port, user, password, vhost, heartbeat })
    }

    fn connection_arguments(&self) -> OpenConnectionArguments {
        OpenConnectionArguments::new(&self.host, self.port, &self.user, &self.password)
            .virtual_host(&self.vhost)
            .heartbeat(self.heartbeat)
            .connection_name(&format!("cairn pid {}", std::process::id()))
            .finish()
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad % escape in {s:?}"))?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| format!("bad % escape in {s:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> BrokerAddress {
        match BrokerAddress::parse(url) {
            Ok(a) => a,
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn url_with_everything() {
        let a = parse("amqp://alice:s%40cret@rabbit.example:5673/prod?heartbeat=30");
        assert_eq!(
            a,
            BrokerAddress {
                host: "rabbit.example".into(),
                port: 5673,
                user: "alice".into(),
                password: "s@cret".into(),
                vhost: "prod".into(),
                heartbeat: 30,
            }
        );
    }

    #[test]
    fn default_vhost_written_three_ways() {
        for url in [
            "amqp://guest:guest@127.0.0.1:5672",
            "amqp://guest:guest@127.0.0.1:5672/",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://guest:guest@127.0.0.1:5672/%2F",
        ] {
            let a = parse(url);
            assert_eq!((a.host.as_str(), a.port, a.vhost.as_str()), ("127.0.0.1", 5672, "/"), "{url}");
            assert_eq!(a.heartbeat, HEARTBEAT_SECS);
        }
    }

    #[test]
    fn defaults_for_missing_parts() {
        let a = parse("amqp://rabbit");
        assert_eq!((a.user.as_str(), a.password.as_str(), a.port), ("guest", "guest", 5672));
        assert_eq!(parse("amqp://[::1]:5000").host, "[::1]");
        assert_eq!(parse("amqp://[::1]").port, 5672);
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        for url in [
            "http://rabbit",
            "amqps://rabbit",
            "rabbit:5672",
            "amqp://u:pw@rabbit:notaport",
            "amqp://u:pw@rabbit:0",
            "amqp://u:pw@rabbit/a/b",
            "amqp://u:pw@rabbit/%zz",
            "amqp://u:pw@[::1",
            "amqp://u:pw@rabbit?heartbeat=soon",
        ] {
            match BrokerAddress::parse(url) {
                Err(BusError::BadUrl { url: shown, .. }) => {
                    assert!(!shown.contains(":pw@"), "{shown}")
                }
                other => panic!("{url}: expected BadUrl, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_properties_and_body_become_none_and_empty() {
        let d = to_delivery(None, None);
        assert!(d.body.is_empty() && d.reply_to.is_none() && d.correlation_id.is_none());
        let mut props = BasicProperties::default();
        props.with_reply_to("amq.gen-1").with_correlation_id("c-1");
        let d = to_delivery(Some(props), Some(b"not-json".to_vec()));
        assert_eq!(&d.body[..], b"not-json");
        assert_eq!(d.reply_to.as_deref(), Some("amq.gen-1"));
        assert_eq!(d.correlation_id.as_deref(), Some("c-1"));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(300) && d <= Duration::from_millis(500), "{d:?}");
        }
    }
}
