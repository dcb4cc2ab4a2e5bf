//! Domain events over RabbitMQ: the envelope, the broker connection, the transactional-outbox
//! relay that publishes what services commit, and the consumer runtime (inbox deduplication,
//! bounded retries through a delay queue, a dead-letter queue with re-drive).
//!
//! Topology, for an exchange `E` (default `shopmesh.events`) and a consumer `c` with queue
//! prefix `P`:
//! - `E`: a durable topic exchange; routing key = event type (`order.paid` …).
//! - `Pc`: the consumer's durable queue, bound to `E` with its patterns. A message its handler
//!   fails on is rejected, and RabbitMQ dead-letters it to `Pc.retry`.
//! - `Pc.retry`: holds it for the retry delay (`x-message-ttl`), then dead-letters it back to
//!   `Pc`. RabbitMQ's `x-death` header counts the attempts, across consumer restarts.
//! - `Pc.dead-letter`: after the last attempt the consumer parks the message here with its
//!   error in headers; [`dead_letters`] lists and re-drives them; [`depth`] counts what waits
//!   in each of the three queues.
//!
//! Delivery is at least once at every hop; effects are exactly once because a consumer records
//! the event id in its inbox table in the transaction of the event's effect.

pub mod broker;
pub mod consumer;
pub mod dead_letters;
pub mod depth;
pub mod relay;

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::events::v1::EventEnvelope;
use uuid::Uuid;

use crate::settings::{Env, Secret, SettingsError};

pub use broker::{Broker, BrokerError};
pub use consumer::{Event, Handler, HandlerError, Subscription};
pub use relay::{Outbox, OutgoingEvent, PgOutbox};

/// Content type of every event body: one encoded [`EventEnvelope`].
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Version of the payload schemas.
pub const SCHEMA_VERSION: u32 = 1;
/// AMQP priorities of fulfilment messages (`order.paid`, `shipment.created`).
pub const PRIORITY_VIP: u8 = 9;
pub const PRIORITY_STANDARD: u8 = 1;
/// `x-max-priority` of fulfilment queues.
pub const MAX_PRIORITY: u8 = 10;

/// Where events go and how they are relayed and consumed; every process reads the same keys.
#[derive(Clone, Debug)]
pub struct EventSettings {
    pub amqp_url: Secret,
    pub exchange: String,
    /// Prepended to every queue name (tests isolate themselves with it).
    pub queue_prefix: String,
    /// How often an idle relay looks for new outbox rows.
    pub relay_interval: Duration,
    pub relay_batch: u32,
    /// Attempts of a handler on one message, the first included, before it is dead-lettered.
    pub max_attempts: u32,
    /// How long a failed message waits in the retry queue.
    pub retry_delay: Duration,
    /// Unacknowledged messages a consumer holds at once.
    pub prefetch: u16,
    /// Messages of different aggregates a consumer handles in parallel (one aggregate's events
    /// are always handled in order).
    pub lanes: usize,
    /// `x-expires` of every queue: a queue unused this long is deleted. Unset in production;
    /// tests set it so their queues do not pile up.
    pub queue_expires: Option<Duration>,
}

impl EventSettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let expires = env.millis("EVENTS_QUEUE_EXPIRES_MS", "0")?;
        let prefetch = env.positive("EVENTS_PREFETCH", "32")?;
        Ok(Self {
            amqp_url: env.store_url("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")?,
            exchange: env.string("EVENTS_EXCHANGE", "shopmesh.events"),
            queue_prefix: env.string("EVENTS_QUEUE_PREFIX", ""),
            relay_interval: env.millis("EVENTS_RELAY_INTERVAL_MS", "100")?,
            relay_batch: env.positive("EVENTS_RELAY_BATCH", "200")?,
            max_attempts: env.positive("EVENTS_MAX_ATTEMPTS", "5")?,
            retry_delay: env.millis("EVENTS_RETRY_DELAY_MS", "1000")?,
            prefetch: u16::try_from(prefetch)
                .map_err(|_| SettingsError::new("EVENTS_PREFETCH", "at most 65535"))?,
            lanes: env.positive("EVENTS_CONSUMER_LANES", "8")? as usize,
            queue_expires: (!expires.is_zero()).then_some(expires),
        })
    }

    /// The queue of consumer `consumer`.
    pub fn queue(&self, consumer: &str) -> String {
        format!("{}{consumer}", self.queue_prefix)
    }

    pub fn retry_queue(&self, consumer: &str) -> String {
        format!("{}{consumer}.retry", self.queue_prefix)
    }

    pub fn dead_letter_queue(&self, consumer: &str) -> String {
        format!("{}{consumer}.dead-letter", self.queue_prefix)
    }
}

/// The relay of `outbox` as a service task: publishes until shutdown, then closes the broker.
pub fn relay_task(
    outbox: std::sync::Arc<dyn Outbox>,
    broker: Broker,
    producer: &'static str,
) -> crate::mesh::Task {
    Box::new(move |stop| {
        Box::pin(async move {
            relay::run(outbox, broker.clone(), producer, stop).await;
            broker.close().await;
        })
    })
}

/// A consumer as a service task: handles `subscription` until shutdown. Its queues are
/// declared first (waiting up to 5 s for the broker), so that events published once the
/// service is up wait for it even before the task runs; a broker that is down leaves that to
/// the task, which declares them when it connects.
pub async fn consumer_task(
    subscription: Subscription,
    handler: std::sync::Arc<dyn Handler>,
    pool: sqlx::PgPool,
    broker: Broker,
) -> crate::mesh::Task {
    let declared = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let channel = broker.channel().await?;
        consumer::declare(&broker, &channel, &subscription).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok::<(), BrokerError>(())
    })
    .await;
    match declared {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(consumer = subscription.consumer, error = %err,
            "could not declare the event queues yet; the consumer will"),
        Err(_) => tracing::warn!(
            consumer = subscription.consumer,
            "the broker did not answer; the consumer will declare its queues when it connects"
        ),
    }
    Box::new(move |stop| {
        Box::pin(async move {
            consumer::run(subscription, handler, pool, broker.clone(), stop).await;
            broker.close().await;
        })
    })
}

/// Declares the exchange and every queue of `subscriptions` (idempotent), within 15 s: what
/// `shopmesh migrate` does, so that events published before a consumer first starts wait in its
/// queue instead of being dropped as unroutable.
pub async fn declare_queues(
    settings: &EventSettings,
    subscriptions: &[Subscription],
) -> anyhow::Result<()> {
    let broker = Broker::new(settings.clone(), "migrate");
    let declared = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        let channel = broker.channel().await?;
        for subscription in subscriptions {
            consumer::declare(&broker, &channel, subscription).await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok::<(), BrokerError>(())
    })
    .await;
    broker.close().await;
    match declared {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(anyhow::anyhow!("the broker refused: {err}")),
        Err(_) => Err(anyhow::anyhow!("the broker did not answer within 15 s")),
    }
}

/// The envelope of an event as it leaves its producer.
pub fn envelope(producer: &str, event: &OutgoingEvent) -> EventEnvelope {
    EventEnvelope {
        event_id: event.id.to_string(),
        r#type: event.event_type.clone(),
        occurred_at: Some(crate::time::timestamp(event.occurred_at)),
        correlation_id: event.correlation_id.clone(),
        producer: producer.to_owned(),
        aggregate_id: event.aggregate_id.clone(),
        schema_version: SCHEMA_VERSION,
        payload: Some(prost_types::Any {
            type_url: event.payload_type.clone(),
            value: event.payload.clone(),
        }),
    }
}

/// Type URL of the payload message `name` of `shopmesh.events.v1`.
pub fn payload_type(name: &str) -> String {
    format!("type.googleapis.com/shopmesh.events.v1.{name}")
}

/// An envelope built by hand (tests, tools): a fresh UUIDv7 event id, occurred now; `name` is
/// the payload message's name in `shopmesh.events.v1`.
pub fn new_envelope<M: Message>(
    producer: &str,
    aggregate_id: &str,
    event_type: &str,
    name: &str,
    payload: &M,
) -> EventEnvelope {
    envelope(
        producer,
        &OutgoingEvent {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            payload_type: payload_type(name),
            payload: payload.encode_to_vec(),
            correlation_id: String::new(),
            priority: 0,
            occurred_at: Utc::now(),
        },
    )
}

/// When an envelope's change committed.
pub fn occurred_at(envelope: &EventEnvelope) -> Option<DateTime<Utc>> {
    envelope
        .occurred_at
        .as_ref()
        .and_then(|ts| crate::time::from_timestamp(*ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn queue_names_carry_the_prefix() {
        let env = Env::from_map(HashMap::from([(
            "EVENTS_QUEUE_PREFIX".to_owned(),
            "t1.".to_owned(),
        )]))
        .unwrap();
        let s = EventSettings::from_env(&env).unwrap();
        assert_eq!(s.queue("notification"), "t1.notification");
        assert_eq!(s.retry_queue("notification"), "t1.notification.retry");
        assert_eq!(
            s.dead_letter_queue("notification"),
            "t1.notification.dead-letter"
        );
        assert_eq!(s.exchange, "shopmesh.events");
        assert_eq!(s.queue_expires, None);
    }
}
