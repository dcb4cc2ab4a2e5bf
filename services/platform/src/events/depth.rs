//! How many messages wait in a consumer's queues: its main queue (and how many consumers read
//! it), its retry queue and its dead-letter queue, read with passive declares so that looking
//! never creates or changes a queue.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, ErrorKind};

use super::{Broker, BrokerError};

/// Longest one consumer's three queues take to read.
const DEPTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The depth of one consumer's queues.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub consumer: String,
    /// The main queue's name.
    pub queue: String,
    /// Ready messages in the main queue (unacknowledged deliveries are not counted).
    pub messages: u32,
    /// Consumers reading the main queue.
    pub consumers: u32,
    /// Messages waiting out the retry delay.
    pub retry_messages: u32,
    /// Messages parked after their last attempt.
    pub dead_letters: u32,
}

/// A queue's message and consumer counts; `None` when it does not exist. The broker closes a
/// channel whose passive declare names a missing queue, so `channel` is replaced then.
async fn peek(
    broker: &Broker,
    channel: &mut Channel,
    queue: &str,
) -> Result<Option<(u32, u32)>, BrokerError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
    {
        Ok(declared) => Ok(Some((declared.message_count(), declared.consumer_count()))),
        Err(err) if not_found(&err) => {
            *channel = broker.channel().await?;
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

fn not_found(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// The depth of `consumer`'s queues; a queue that does not exist yet counts 0.
pub async fn depth(broker: &Broker, consumer: &str) -> Result<QueueDepth, BrokerError> {
    let settings = broker.settings();
    let queue = settings.queue(consumer);
    let read = async {
        let mut channel = broker.channel().await?;
        let main = peek(broker, &mut channel, &queue)
            .await?
            .unwrap_or_default();
        let retry = peek(broker, &mut channel, &settings.retry_queue(consumer))
            .await?
            .unwrap_or_default();
        let dead = peek(broker, &mut channel, &settings.dead_letter_queue(consumer))
            .await?
            .unwrap_or_default();
        let _ = channel.close(200, "read".into()).await;
        Ok::<_, BrokerError>(QueueDepth {
            consumer: consumer.to_owned(),
            queue: queue.clone(),
            messages: main.0,
            consumers: main.1,
            retry_messages: retry.0,
            dead_letters: dead.0,
        })
    };
    tokio::time::timeout(DEPTH_TIMEOUT, read)
        .await
        .map_err(|_| BrokerError::Timeout(DEPTH_TIMEOUT))?
}
