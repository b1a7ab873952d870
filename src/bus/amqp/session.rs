//! The AMQP connection's life: declaring the exchanges on a fresh connection,
//! watching it through the library's callbacks and network-failure signal, and the
//! supervisor that reconnects with jittered backoff when it is lost.

use std::sync::Arc;
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{Channel, ExchangeDeclareArguments};
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use async_trait::async_trait;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{lock, timed, Inner, Session, BACKOFF_MAX, BACKOFF_MIN, EXCHANGES, HEALTH_CHECK_INTERVAL, OP_TIMEOUT};
use crate::bus::BusError;

/// Keeps the connection alive: waits for it to be lost, then reconnects with
/// backoff, until the transport stops.
pub(super) async fn supervise(inner: Arc<Inner>, mut session: Session) {
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
pub(super) fn watch_network_failure(tasks: &TaskTracker, connection: Connection, over: CancellationToken) {
    tasks.spawn(async move {
        tokio::select! {
            _ = connection.listen_network_io_failure() => over.cancel(),
            _ = over.cancelled() => {}
        }
    });
}

/// Declares both exchanges on a channel of their own: a refused declaration closes
/// the channel it was made on, and the working channel must not be that one.
pub(super) async fn declare_exchanges(connection: &Connection) -> Result<(), BusError> {
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

/// Ends the session when the broker closes the connection (e.g. `rabbitmqctl
/// close_connection`, a broker shutting down).
pub(super) struct ConnectionWatch {
    pub(super) over: CancellationToken,
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
pub(super) struct ChannelWatch {
    pub(super) over: CancellationToken,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(300) && d <= Duration::from_millis(500), "{d:?}");
        }
    }
}
