//! Consuming: declaring a server-named queue per subscription (and one for
//! replies), and the forwarding tasks that copy what it receives into bounded
//! in-process queues.

use std::sync::Arc;

use amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, Channel, ConsumerMessage, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::BasicProperties;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{lock, timed, Inner, Live, Sink, OP_TIMEOUT, QUEUE_DEPTH};
use crate::bus::{BusError, Delivery, Exchange};

/// A consumer on a fresh queue.
pub(super) struct Consumer {
    tag: String,
    pub(super) messages: mpsc::UnboundedReceiver<ConsumerMessage>,
}

/// Declares an exclusive, auto-delete, server-named queue, binds it to `exchange`
/// if one is given, and consumes it with auto-ack. Returns the queue's name.
pub(super) async fn declare_and_consume(
    channel: &Channel,
    exchange: Option<Exchange>,
) -> Result<(String, Consumer), BusError> {
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
pub(super) async fn start_subscription(
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
pub(super) struct CancelOnDrop {
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
pub(super) async fn forward(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
