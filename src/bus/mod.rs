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

pub mod amqp;
pub mod memory;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::content::{ContentHash, ShardIndex};

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
}

/// A data server's periodic "I am alive", published on `apiServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The data server's HTTP address (`host:port`), as API servers should dial it.
    pub addr: String,
    /// Free bytes on its storage root, used to weight placement.
    pub free: u64,
}

/// "Who holds shards of this content?", published on `dataServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateRequest {
    /// The content asked for.
    pub hash: ContentHash,
}

/// A data server's answer to a [`LocateRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateReply {
    /// The answering data server's HTTP address.
    pub addr: String,
    /// The shard indices of the content it holds; empty when it holds none.
    pub shards: Vec<ShardIndex>,
}

/// A locate request as a data server receives it, with what it needs to answer.
#[derive(Clone, Debug)]
pub struct IncomingLocate {
    /// The request.
    pub request: LocateRequest,
    /// The asker's reply queue.
    pub reply_to: String,
    /// The asker's correlation id, echoed in the reply.
    pub correlation_id: String,
}

/// Which pending locate each correlation id belongs to.
type PendingLocates = Arc<Mutex<HashMap<String, mpsc::Sender<LocateReply>>>>;

/// The typed bus: heartbeats, locate requests and replies over any [`Transport`].
/// Cheap to clone; one per process, sharing the transport's one connection.
#[derive(Clone)]
pub struct Bus {
    transport: Arc<dyn Transport>,
    pending: PendingLocates,
}

impl Bus {
    /// Wraps `transport` and starts routing locate replies to their askers until
    /// `shutdown` is cancelled.
    pub async fn new(transport: Arc<dyn Transport>, shutdown: CancellationToken) -> Result<Bus, BusError> {
        let pending: PendingLocates = Arc::default();
        let mut replies = transport.replies().await?;
        let routes = pending.clone();
        tokio::spawn(async move {
            loop {
                let delivery = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    d = replies.recv() => match d { Some(d) => d, None => return },
                };
                let Some(id) = delivery.correlation_id.as_deref() else {
                    tracing::warn!("dropping a locate reply without correlation_id");
                    continue;
                };
                let reply: LocateReply = match serde_json::from_slice(&delivery.body) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, len = delivery.body.len(), "dropping a malformed locate reply");
                        continue;
                    }
                };
                let sender = routes.lock().expect("pending locates lock").get(id).cloned();
                // A reply for a locate that already finished is normal (late answerers).
                if let Some(sender) = sender {
                    let _ = sender.try_send(reply);
                }
            }
        });
        Ok(Bus { transport, pending })
    }

    /// Publishes a heartbeat on `apiServers`.
    pub async fn publish_heartbeat(&self, hb: &Heartbeat) -> Result<(), BusError> {
        let body = serde_json::to_vec(hb).expect("heartbeat serializes");
        self.transport.publish(Exchange::ApiServers, Delivery { body: body.into(), ..Default::default() }).await
    }

    /// Every well-formed heartbeat from now on; malformed ones are logged and dropped.
    pub async fn heartbeats(&self) -> Result<mpsc::Receiver<Heartbeat>, BusError> {
        let raw = self.transport.subscribe(Exchange::ApiServers).await?;
        Ok(decode_stream(raw, |d| serde_json::from_slice::<Heartbeat>(&d.body).map_err(|e| e.to_string())))
    }

    /// Every well-formed locate request from now on (data server side); malformed
    /// ones, and ones without `reply_to` or `correlation_id`, are logged and dropped.
    pub async fn locate_requests(&self) -> Result<mpsc::Receiver<IncomingLocate>, BusError> {
        let raw = self.transport.subscribe(Exchange::DataServers).await?;
        Ok(decode_stream(raw, |d| {
            let request: LocateRequest = serde_json::from_slice(&d.body).map_err(|e| e.to_string())?;
            let reply_to = d.reply_to.clone().ok_or("no reply_to")?;
            let correlation_id = d.correlation_id.clone().ok_or("no correlation_id")?;
            Ok(IncomingLocate { request, reply_to, correlation_id })
        }))
    }

    /// Answers a locate request.
    pub async fn reply(&self, to: &IncomingLocate, reply: &LocateReply) -> Result<(), BusError> {
        let body = serde_json::to_vec(reply).expect("locate reply serializes");
        self.transport.send_reply(&to.reply_to, &to.correlation_id, body.into()).await
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
        let body = serde_json::to_vec(&LocateRequest { hash }).expect("locate request serializes");
        self.transport
            .publish(
                Exchange::DataServers,
                Delivery { body: body.into(), reply_to: Some(reply_to), correlation_id: Some(correlation_id) },
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

/// Decodes a raw stream into typed messages on a task of its own, logging and
/// dropping what does not decode. Ends when either side goes away.
fn decode_stream<T, F>(mut raw: mpsc::Receiver<Delivery>, decode: F) -> mpsc::Receiver<T>
where
    T: Send + 'static,
    F: Fn(&Delivery) -> Result<T, String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(d) = raw.recv().await {
            match decode(&d) {
                Ok(msg) => {
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Err(reason) => {
                    let preview = String::from_utf8_lossy(&d.body[..d.body.len().min(64)]).into_owned();
                    tracing::warn!(%reason, %preview, "dropping a malformed bus message");
                }
            }
        }
    });
    rx
}
