//! Admin access to a consumer's dead-letter queue: list what is parked there (without taking it
//! away) and re-drive one message to the consumer's queue for a fresh round of attempts.

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, ShortString};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::events::v1::EventEnvelope;

use super::consumer::{
    ATTEMPTS_HEADER, DEAD_AT_HEADER, ERROR_HEADER, clean_headers, dead_letter_queue_args,
    publish_to_queue,
};
use super::{Broker, BrokerError};

/// Most messages a listing looks at.
pub const MAX_LIST: usize = 500;

/// One parked message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub consumer: String,
    /// Empty when the message was not an event envelope.
    pub event_id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub producer: String,
    pub correlation_id: String,
    pub error: String,
    pub attempts: u32,
    pub dead_at: Option<DateTime<Utc>>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// A page of a dead-letter queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetters {
    pub items: Vec<DeadLetter>,
    /// Messages in the queue in all.
    pub total: u32,
}

fn header(delivery: &Delivery, key: &str) -> Option<AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from(key)).cloned())
}

fn describe(consumer: &str, delivery: &Delivery) -> DeadLetter {
    let envelope = EventEnvelope::decode(delivery.data.as_slice()).unwrap_or_default();
    let error = match header(delivery, ERROR_HEADER) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => String::new(),
    };
    let number = |key| match header(delivery, key) {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        _ => 0,
    };
    DeadLetter {
        consumer: consumer.to_owned(),
        occurred_at: super::occurred_at(&envelope),
        event_id: envelope.event_id,
        event_type: envelope.r#type,
        aggregate_id: envelope.aggregate_id,
        producer: envelope.producer,
        correlation_id: envelope.correlation_id,
        error,
        attempts: u32::try_from(number(ATTEMPTS_HEADER)).unwrap_or(0),
        dead_at: DateTime::from_timestamp_millis(number(DEAD_AT_HEADER)),
    }
}

/// Up to `limit` dead letters of `consumer`, oldest first. They stay in the queue: the listing
/// takes them unacknowledged and hands them all back.
pub async fn list(
    broker: &Broker,
    consumer: &str,
    limit: usize,
) -> Result<DeadLetters, BrokerError> {
    let settings = broker.settings();
    let queue = settings.dead_letter_queue(consumer);
    let channel = broker.channel().await?;
    let declared = channel
        .queue_declare(
            queue.clone().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            dead_letter_queue_args(settings),
        )
        .await?;
    let mut page = DeadLetters {
        items: Vec::new(),
        total: declared.message_count(),
    };
    let mut last = None;
    while page.items.len() < limit.min(MAX_LIST) {
        let Some(message) = channel
            .basic_get(queue.clone().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        page.items.push(describe(consumer, &message.delivery));
        last = Some(message.delivery.delivery_tag);
    }
    if let Some(tag) = last {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
    }
    let _ = channel.close(200, "listed".into()).await;
    Ok(page)
}

/// Moves the dead letter of `event_id` back to `consumer`'s queue as a first attempt. `false`
/// when no such dead letter is parked.
pub async fn redrive(broker: &Broker, consumer: &str, event_id: &str) -> Result<bool, BrokerError> {
    let settings = broker.settings();
    let queue = settings.dead_letter_queue(consumer);
    let channel = broker.publisher().await?;
    let mut last = None;
    let mut found = false;
    for _ in 0..MAX_LIST * 20 {
        let Some(message) = channel
            .basic_get(queue.clone().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let envelope = EventEnvelope::decode(delivery.data.as_slice()).unwrap_or_default();
        if envelope.event_id == event_id {
            let properties = delivery
                .properties
                .clone()
                .with_headers(clean_headers(&delivery.properties));
            publish_to_queue(
                &channel,
                &settings.queue(consumer),
                &delivery.data,
                properties,
            )
            .await?;
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await?;
            found = true;
            break;
        }
        last = Some(delivery.delivery_tag);
    }
    if let Some(tag) = last {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
    }
    let _ = channel.close(200, "redriven".into()).await;
    Ok(found)
}
