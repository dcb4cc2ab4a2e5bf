//! The consumer runtime: one durable queue per consumer, inbox deduplication, bounded retries
//! through a delay queue, and a dead-letter queue for what still fails.
//!
//! A message is handled in one PostgreSQL transaction that first records its event id in the
//! `inbox` table (`primary key (consumer, event_id)`) and then applies the handler's effect;
//! the message is acknowledged only after the commit. A redelivery finds its id in the inbox
//! and is acknowledged without a second effect. Messages of one aggregate are handled in the
//! order they arrive; different aggregates in parallel lanes.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::events::v1::EventEnvelope;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{Broker, BrokerError, EventSettings};
use crate::shutdown::Shutdown;

/// Header names the consumer sets on a dead letter.
pub const ERROR_HEADER: &str = "x-shopmesh-error";
pub const ATTEMPTS_HEADER: &str = "x-shopmesh-attempts";
pub const DEAD_AT_HEADER: &str = "x-shopmesh-dead-at";
/// Longest error text kept on a dead letter.
const MAX_ERROR_LEN: usize = 1_000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest the consumer waits for the broker while it sets up its channel and queues.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a message waits before it is handed back when the database is unreachable.
const STORE_DOWN_PAUSE: Duration = Duration::from_secs(1);
/// How often a consumer checks that its channel is still connected: a consumer stream is not
/// guaranteed to end when the connection under it dies, and a consumer that waits on it forever
/// leaves its queue without a consumer.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);
/// Longest the lanes may take to finish what they hold after the channel is gone (an ack on a
/// dead channel must not hold the reconnect); what they had not acknowledged is redelivered.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest closing a channel may take (a dead connection never answers the close).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a consumer listens to.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Consumer name: its queue (with the prefix) and its rows in the inbox.
    pub consumer: &'static str,
    /// Routing-key patterns bound to the exchange (`order.*`, `user.registered` …).
    pub bindings: Vec<&'static str>,
    /// `x-max-priority` of the queue: set for fulfilment queues, whose messages carry priority.
    pub max_priority: Option<u8>,
    /// Overrides the prefetch of the settings (a priority queue needs a small one for priority
    /// to matter).
    pub prefetch: Option<u16>,
    /// Overrides the number of parallel lanes.
    pub lanes: Option<usize>,
}

impl Subscription {
    pub fn new(consumer: &'static str, bindings: &[&'static str]) -> Self {
        Self {
            consumer,
            bindings: bindings.to_vec(),
            max_priority: None,
            prefetch: None,
            lanes: None,
        }
    }
}

/// One received event.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: Uuid,
    pub envelope: EventEnvelope,
    /// The AMQP priority it was published with.
    pub priority: u8,
    /// 1 on the first delivery, counting retries.
    pub attempt: u32,
}

impl Event {
    pub fn event_type(&self) -> &str {
        &self.envelope.r#type
    }

    /// The payload as message `M`; a payload that does not decode fails for good.
    pub fn payload<M: Message + Default>(&self) -> Result<M, HandlerError> {
        let any = self
            .envelope
            .payload
            .as_ref()
            .ok_or_else(|| HandlerError::Permanent("the event has no payload".into()))?;
        M::decode(any.value.as_slice()).map_err(|err| {
            HandlerError::Permanent(format!("payload {} does not decode: {err}", any.type_url))
        })
    }
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt later (a dependency is down, a prerequisite has not arrived yet).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed as is: dead-letter it now.
    #[error("{0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        HandlerError::Retry(format!("database: {err}"))
    }
}

/// Applies events. Everything it writes through `tx` commits together with the inbox row.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError>;

    /// Runs after the effect of `event` committed (waking a worker, say).
    async fn committed(&self, event: &Event) {
        let _ = event;
    }
}

fn long(value: i64) -> AMQPValue {
    AMQPValue::LongLongInt(value)
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.to_owned()))
}

fn expires(settings: &EventSettings, args: &mut FieldTable) {
    if let Some(expires) = settings.queue_expires {
        args.insert("x-expires".into(), long(expires.as_millis() as i64));
    }
}

/// Arguments of a consumer's dead-letter queue (also declared by the admin tools).
pub fn dead_letter_queue_args(settings: &EventSettings) -> FieldTable {
    let mut args = FieldTable::default();
    expires(settings, &mut args);
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the exchange, the consumer's queue with its bindings, its retry queue and its
/// dead-letter queue. Idempotent.
pub async fn declare(
    broker: &Broker,
    channel: &Channel,
    subscription: &Subscription,
) -> Result<(), BrokerError> {
    let settings = broker.settings();
    broker.declare_exchange(channel).await?;
    let queue = settings.queue(subscription.consumer);
    let retry = settings.retry_queue(subscription.consumer);
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(&retry));
    if let Some(max) = subscription.max_priority {
        args.insert("x-max-priority".into(), long(i64::from(max)));
    }
    expires(settings, &mut args);
    channel
        .queue_declare(queue.clone().into(), durable(), args)
        .await?;
    let mut retry_args = FieldTable::default();
    retry_args.insert(
        "x-message-ttl".into(),
        long(settings.retry_delay.as_millis() as i64),
    );
    retry_args.insert("x-dead-letter-exchange".into(), text(""));
    retry_args.insert("x-dead-letter-routing-key".into(), text(&queue));
    expires(settings, &mut retry_args);
    channel
        .queue_declare(retry.into(), durable(), retry_args)
        .await?;
    channel
        .queue_declare(
            settings.dead_letter_queue(subscription.consumer).into(),
            durable(),
            dead_letter_queue_args(settings),
        )
        .await?;
    for binding in &subscription.bindings {
        channel
            .queue_bind(
                queue.clone().into(),
                settings.exchange.clone().into(),
                (*binding).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Times RabbitMQ dead-lettered the message from `queue` because a handler rejected it.
pub fn rejections(properties: &BasicProperties, queue: &str) -> u32 {
    let Some(headers) = properties.headers() else {
        return 0;
    };
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get(&ShortString::from("x-death"))
    else {
        return 0;
    };
    let field = |table: &FieldTable, key: &str| table.inner().get(&ShortString::from(key)).cloned();
    let as_text = |value: Option<AMQPValue>| match value {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    };
    deaths
        .as_slice()
        .iter()
        .filter_map(|death| match death {
            AMQPValue::FieldTable(table) => Some(table),
            _ => None,
        })
        .filter(|table| {
            as_text(field(table, "queue")) == queue && as_text(field(table, "reason")) == "rejected"
        })
        .map(|table| match field(table, "count") {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongUInt(n)) => n,
            _ => 0,
        })
        .sum()
}

/// The headers of `properties` without RabbitMQ's and the consumer's own bookkeeping: what a
/// re-driven or dead-lettered copy starts from.
pub fn clean_headers(properties: &BasicProperties) -> FieldTable {
    let mut clean = FieldTable::default();
    if let Some(headers) = properties.headers() {
        for (key, value) in headers.inner() {
            let name = key.as_str();
            if !name.starts_with("x-death")
                && !name.starts_with("x-first-death")
                && !name.starts_with("x-last-death")
                && !name.starts_with("x-shopmesh-")
            {
                clean.insert(key.clone(), value.clone());
            }
        }
    }
    clean
}

/// Publishes `body` to `queue` through the default exchange and waits for the confirm.
pub async fn publish_to_queue(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BrokerError> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.to_owned().into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(_) => Ok(()),
        _ => Err(BrokerError::Nacked(format!("to {queue}"))),
    }
}

struct Worker {
    consumer: &'static str,
    queue: String,
    dead_letter_queue: String,
    max_attempts: u32,
    handler: Arc<dyn Handler>,
    pool: PgPool,
    publisher: Channel,
}

/// Runs `subscription` until shutdown, reconnecting (with backoff up to 5 s) whenever the
/// broker goes away.
pub async fn run(
    subscription: Subscription,
    handler: Arc<dyn Handler>,
    pool: PgPool,
    broker: Broker,
    stop: Shutdown,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_triggered() {
        match consume(&subscription, &handler, &pool, &broker, &stop).await {
            Ok(()) => break,
            Err(err) => {
                tracing::warn!(consumer = subscription.consumer, error = %err,
                    "event consumer lost the broker; reconnecting");
                tokio::select! {
                    () = stop.clone().wait() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn consume(
    subscription: &Subscription,
    handler: &Arc<dyn Handler>,
    pool: &PgPool,
    broker: &Broker,
    stop: &Shutdown,
) -> Result<(), BrokerError> {
    let settings = broker.settings();
    let prefetch = subscription.prefetch.unwrap_or(settings.prefetch);
    // Setting up talks to the broker several times; a broker that stopped answering mid-way
    // must not hold the consumer forever.
    let (channel, worker, mut deliveries) = tokio::time::timeout(SETUP_TIMEOUT, async {
        let channel = broker.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        declare(broker, &channel, subscription).await?;
        let worker = Arc::new(Worker {
            consumer: subscription.consumer,
            queue: settings.queue(subscription.consumer),
            dead_letter_queue: settings.dead_letter_queue(subscription.consumer),
            max_attempts: settings.max_attempts,
            handler: handler.clone(),
            pool: pool.clone(),
            publisher: broker.publisher().await?,
        });
        let deliveries = channel
            .basic_consume(
                worker.queue.clone().into(),
                format!("{}-{}", subscription.consumer, Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, BrokerError>((channel, worker, deliveries))
    })
    .await
    .map_err(|_| BrokerError::Timeout(SETUP_TIMEOUT))??;
    tracing::info!(consumer = subscription.consumer, queue = %worker.queue, "consuming events");
    let lanes = subscription.lanes.unwrap_or(settings.lanes).max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = JoinSet::new();
    for _ in 0..lanes {
        let (tx, mut rx) = mpsc::channel::<Delivery>(usize::from(prefetch).max(1));
        senders.push(tx);
        let worker = worker.clone();
        workers.spawn(async move {
            while let Some(delivery) = rx.recv().await {
                worker.process(delivery).await;
            }
        });
    }
    let result = loop {
        tokio::select! {
            () = stop.clone().wait() => break Ok(()),
            () = disconnected(&channel) => break Err(BrokerError::Closed),
            next = deliveries.next() => match next {
                None => break Err(BrokerError::Closed),
                Some(Err(err)) => break Err(err.into()),
                Some(Ok(delivery)) => {
                    let lane = lane_of(&delivery, lanes);
                    // A full lane stuck on a dead channel must not hold the loop either.
                    tokio::select! {
                        sent = senders[lane].send(delivery) => if sent.is_err() {
                            break Err(BrokerError::Closed);
                        },
                        () = disconnected(&channel) => break Err(BrokerError::Closed),
                    }
                }
            },
        }
    };
    // The lanes finish what they hold; what was prefetched but not handed out goes back to the
    // queue when the channel closes.
    drop(senders);
    let drained = tokio::time::timeout(TEARDOWN_TIMEOUT, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            consumer = subscription.consumer,
            "event lanes did not finish in time; abandoning them (unacknowledged events are redelivered)"
        );
        workers.abort_all();
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "bye".into())).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, worker.publisher.close(200, "bye".into())).await;
    result
}

/// Resolves once `channel` is no longer connected, checking every [`LIVENESS_CHECK`].
async fn disconnected(channel: &Channel) {
    while channel.status().connected() {
        tokio::time::sleep(LIVENESS_CHECK).await;
    }
}

/// The lane of a message: by aggregate, so that one aggregate's events stay in order.
fn lane_of(delivery: &Delivery, lanes: usize) -> usize {
    if lanes == 1 {
        return 0;
    }
    let aggregate = EventEnvelope::decode(delivery.data.as_slice())
        .map(|envelope| envelope.aggregate_id)
        .unwrap_or_default();
    let mut hasher = DefaultHasher::new();
    aggregate.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

enum Outcome {
    Done,
    Duplicate,
    Failed(HandlerError),
    /// The database could not be reached: hand the message back untouched.
    StoreDown(String),
}

impl Worker {
    async fn process(&self, delivery: Delivery) {
        let attempt = rejections(&delivery.properties, &self.queue) + 1;
        let envelope = match EventEnvelope::decode(delivery.data.as_slice()) {
            Ok(envelope) => envelope,
            Err(err) => {
                let error = format!("the message is not an EventEnvelope: {err}");
                return self.dead_letter(delivery, &error, attempt).await;
            }
        };
        let Ok(id) = Uuid::parse_str(&envelope.event_id) else {
            let error = format!("event id {:?} is not a UUID", envelope.event_id);
            return self.dead_letter(delivery, &error, attempt).await;
        };
        let span = tracing::info_span!(
            "event",
            consumer = self.consumer,
            event_type = %envelope.r#type,
            event_id = %envelope.event_id,
            correlation_id = %envelope.correlation_id,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        if crate::telemetry::exporting() {
            span.record("otel.name", format!("consume {}", envelope.r#type));
            span.record("otel.kind", "consumer");
            // The event joins the trace of the request that caused it.
            crate::telemetry::continue_from_request_id(&span, &envelope.correlation_id);
        }
        let event = Event {
            id,
            envelope,
            priority: delivery.properties.priority().unwrap_or(0),
            attempt,
        };
        self.settle(delivery, event).instrument(span).await;
    }

    /// Applies a decoded event and acknowledges, retries or parks it.
    async fn settle(&self, delivery: Delivery, event: Event) {
        let attempt = event.attempt;
        let labels = [
            ("consumer", self.consumer.to_owned()),
            ("type", event.envelope.r#type.clone()),
        ];
        match self.apply(&event).await {
            Outcome::Done => {
                self.handler.committed(&event).await;
                metrics::counter!("shopmesh_events_consumed_total", &labels).increment(1);
                self.ack(&delivery).await;
            }
            Outcome::Duplicate => {
                metrics::counter!("shopmesh_events_duplicates_total", &labels).increment(1);
                self.ack(&delivery).await;
            }
            Outcome::StoreDown(error) => {
                tracing::warn!(consumer = self.consumer, event_id = %event.id, %error,
                    "database unavailable; handing the event back");
                tokio::time::sleep(STORE_DOWN_PAUSE).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
            }
            Outcome::Failed(HandlerError::Retry(error)) if attempt < self.max_attempts => {
                tracing::warn!(consumer = self.consumer, event_id = %event.id,
                    event_type = %event.envelope.r#type, attempt, %error, "event failed; will retry");
                metrics::counter!("shopmesh_events_retried_total", &labels).increment(1);
                // Dead-lettered by RabbitMQ to the retry queue, back here after the delay.
                let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            }
            Outcome::Failed(error) => {
                self.dead_letter(delivery, &error.to_string(), attempt)
                    .await;
            }
        }
    }

    async fn apply(&self, event: &Event) -> Outcome {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(err) => return Outcome::StoreDown(err.to_string()),
        };
        let fresh = sqlx::query(
            "insert into inbox (consumer, event_id, event_type) values ($1, $2, $3) \
             on conflict do nothing",
        )
        .bind(self.consumer)
        .bind(event.id)
        .bind(&event.envelope.r#type)
        .execute(&mut *tx)
        .await;
        match fresh {
            Ok(done) if done.rows_affected() == 0 => return Outcome::Duplicate,
            Ok(_) => {}
            Err(err) => return Outcome::StoreDown(err.to_string()),
        }
        if let Err(err) = self.handler.handle(event, &mut tx).await {
            return Outcome::Failed(err);
        }
        match tx.commit().await {
            Ok(()) => Outcome::Done,
            Err(err) => Outcome::StoreDown(err.to_string()),
        }
    }

    async fn ack(&self, delivery: &Delivery) {
        // A lost ack means a redelivery, which the inbox absorbs.
        if let Err(err) = delivery.ack(BasicAckOptions::default()).await {
            tracing::warn!(consumer = self.consumer, error = %err, "acknowledging an event failed");
        }
    }

    /// Parks the message in the dead-letter queue with its error, then acknowledges it.
    async fn dead_letter(&self, delivery: Delivery, error: &str, attempts: u32) {
        let mut error = error.to_owned();
        if error.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        tracing::error!(consumer = self.consumer, attempts, %error, "event dead-lettered");
        let mut headers = clean_headers(&delivery.properties);
        headers.insert(ERROR_HEADER.into(), text(&error));
        headers.insert(ATTEMPTS_HEADER.into(), long(i64::from(attempts)));
        headers.insert(
            DEAD_AT_HEADER.into(),
            long(chrono::Utc::now().timestamp_millis()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        match publish_to_queue(
            &self.publisher,
            &self.dead_letter_queue,
            &delivery.data,
            properties,
        )
        .await
        {
            Ok(()) => {
                metrics::counter!("shopmesh_events_dead_lettered_total", "consumer" => self.consumer)
                    .increment(1);
                self.ack(&delivery).await;
            }
            Err(err) => {
                // Keep it: back to the queue, to be tried again.
                tracing::warn!(consumer = self.consumer, error = %err, "dead-lettering failed");
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
            }
        }
    }
}
