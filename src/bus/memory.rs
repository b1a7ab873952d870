//! The in-process [`Transport`]: the same fanout and request/reply semantics as
//! RabbitMQ, for `cairn dev` and tests, with nothing to install.
//!
//! One [`MemoryBroker`] stands for the broker; every part of a process (API server,
//! data servers) gets its own [`MemoryTransport`] from it, so each has its own reply
//! queue just as separate processes would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{BusError, Delivery, Exchange, Transport};

/// Queue depth per subscriber. A subscriber that falls this far behind loses
/// messages rather than stalling the publisher, as a full AMQP queue with a length
/// limit would.
const QUEUE_DEPTH: usize = 1024;

#[derive(Default)]
struct BrokerState {
    bindings: HashMap<Exchange, Vec<mpsc::Sender<Delivery>>>,
    reply_queues: HashMap<String, mpsc::Sender<Delivery>>,
}

/// An in-process broker shared by every [`MemoryTransport`] made from it.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<BrokerState>>,
}

impl MemoryBroker {
    /// A broker with no queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection to this broker with its own reply queue.
    pub fn connect(&self) -> MemoryTransport {
        MemoryTransport { broker: self.clone(), reply_queue: format!("amq.gen-{}", uuid::Uuid::new_v4()) }
    }
}

/// One process part's connection to a [`MemoryBroker`].
pub struct MemoryTransport {
    broker: MemoryBroker,
    reply_queue: String,
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn publish(&self, exchange: Exchange, msg: Delivery) -> Result<(), BusError> {
        let mut state = self.broker.state.lock().expect("memory broker lock");
        let queues = state.bindings.entry(exchange).or_default();
        // Deliver to every bound queue; forget queues whose consumer has gone.
        queues.retain(|q| match q.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(exchange = exchange.name(), "in-process queue full, message dropped");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        Ok(())
    }

    async fn subscribe(&self, exchange: Exchange) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        self.broker.state.lock().expect("memory broker lock").bindings.entry(exchange).or_default().push(tx);
        Ok(rx)
    }

    async fn replies(&self) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        self.broker.state.lock().expect("memory broker lock").reply_queues.insert(self.reply_queue.clone(), tx);
        Ok(rx)
    }

    fn reply_address(&self) -> Option<String> {
        Some(self.reply_queue.clone())
    }

    async fn send_reply(&self, reply_to: &str, correlation_id: &str, body: Bytes) -> Result<(), BusError> {
        let queue = self.broker.state.lock().expect("memory broker lock").reply_queues.get(reply_to).cloned();
        // Like AMQP's default exchange: a reply to a queue that no longer exists is dropped.
        if let Some(queue) = queue {
            let _ = queue.try_send(Delivery { body, reply_to: None, correlation_id: Some(correlation_id.to_string()) });
        }
        Ok(())
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        if let Ok(mut state) = self.broker.state.lock() {
            state.reply_queues.remove(&self.reply_queue);
        }
    }
}
