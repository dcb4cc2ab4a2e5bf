//! The outbox relay: publishes the events a service committed in its outbox, in commit order,
//! with publisher confirms, and marks them published only once the broker has confirmed them.
//! A crash between the confirm and the mark publishes a batch twice; consumers deduplicate by
//! event id, so that costs nothing. Nothing is published before its transaction commits,
//! because the relay only sees committed rows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{Broker, BrokerError, CONTENT_TYPE, envelope};
use crate::shutdown::Shutdown;

/// Key of the PostgreSQL advisory lock that makes one relay per database the publisher, so
/// that replicas of a service never publish one aggregate's events out of order.
const RELAY_LOCK: i64 = 0x7368_6f70_6d65_7368; // "shopmesh"
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest one round (read, publish with confirms, mark) may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// One committed event waiting in an outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingEvent {
    pub id: Uuid,
    pub event_type: String,
    pub aggregate_id: String,
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub correlation_id: String,
    /// AMQP priority (fulfilment events), 0 for the rest.
    pub priority: u8,
    pub occurred_at: DateTime<Utc>,
}

/// Where a producer keeps the events it has committed but not yet published.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Whether this process is the one relay of the store that publishes now.
    async fn lead(&self) -> anyhow::Result<bool> {
        Ok(true)
    }
    /// Up to `limit` unpublished events, oldest first.
    async fn pending(&self, limit: u32) -> anyhow::Result<Vec<OutgoingEvent>>;
    /// Marks events published.
    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()>;
}

/// The `outbox` table of a service's PostgreSQL database (schema in each service's migrations:
/// id, seq, event_type, aggregate_id, payload_type, payload, correlation_id, priority,
/// created_at, published_at).
pub struct PgOutbox {
    pool: PgPool,
    /// The connection holding the relay lock while this process leads.
    leader: Mutex<Option<PgConnection>>,
}

impl PgOutbox {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            leader: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn lead(&self) -> anyhow::Result<bool> {
        let mut leader = self.leader.lock().await;
        if let Some(connection) = leader.as_mut() {
            if sqlx::query("select 1")
                .execute(&mut *connection)
                .await
                .is_ok()
            {
                return Ok(true);
            }
            // The connection died and the lock with it; try again below.
            *leader = None;
        }
        // Detached: the lock lives as long as this connection and never goes back to the pool.
        let mut connection = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut connection)
            .await?;
        if locked {
            *leader = Some(connection);
        }
        Ok(locked)
    }

    async fn pending(&self, limit: u32) -> anyhow::Result<Vec<OutgoingEvent>> {
        let rows: Vec<(
            Uuid,
            String,
            String,
            String,
            Vec<u8>,
            String,
            i16,
            DateTime<Utc>,
        )> = sqlx::query_as(
            "select id, event_type, aggregate_id, payload_type, payload, correlation_id, \
                 priority, created_at from outbox where published_at is null order by seq limit $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    event_type,
                    aggregate_id,
                    payload_type,
                    payload,
                    correlation_id,
                    priority,
                    at,
                )| {
                    OutgoingEvent {
                        id,
                        event_type,
                        aggregate_id,
                        payload_type,
                        payload,
                        correlation_id,
                        priority: u8::try_from(priority.clamp(0, 255)).unwrap_or(0),
                        occurred_at: at,
                    }
                },
            )
            .collect())
    }

    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        sqlx::query("update outbox set published_at = now() where id = any($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// AMQP properties of an event: persistent, typed, with its ids and priority.
pub fn properties(producer: &str, event: &OutgoingEvent) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_message_id(event.id.to_string().into())
        .with_type(event.event_type.clone().into())
        .with_app_id(producer.to_owned().into())
        .with_timestamp(u64::try_from(event.occurred_at.timestamp()).unwrap_or(0))
        .with_headers(FieldTable::default());
    let properties = if event.correlation_id.is_empty() {
        properties
    } else {
        properties.with_correlation_id(event.correlation_id.clone().into())
    };
    if event.priority > 0 {
        properties.with_priority(event.priority)
    } else {
        properties
    }
}

/// Publishes `events` to the exchange on a confirm-mode channel and waits for every confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    producer: &str,
    events: &[OutgoingEvent],
) -> Result<(), BrokerError> {
    let mut confirms = Vec::with_capacity(events.len());
    for event in events {
        let body = envelope(producer, event).encode_to_vec();
        let confirm = channel
            .basic_publish(
                exchange.to_owned().into(),
                event.event_type.clone().into(),
                BasicPublishOptions::default(),
                &body,
                properties(producer, event),
            )
            .await?;
        confirms.push((event.id, confirm));
    }
    for (id, confirm) in confirms {
        match confirm.await? {
            Confirmation::Ack(_) => {}
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                return Err(BrokerError::Nacked(id.to_string()));
            }
        }
    }
    Ok(())
}

/// Runs the relay of `outbox` until shutdown: publishes what is pending, then looks again every
/// `relay_interval`; after a failure it backs off (up to 5 s) and reconnects.
pub async fn run(outbox: Arc<dyn Outbox>, broker: Broker, producer: &'static str, stop: Shutdown) {
    let settings = broker.settings().clone();
    let mut channel: Option<Channel> = None;
    let mut backoff = settings.relay_interval;
    loop {
        if stop.is_triggered() {
            break;
        }
        // A broker that stops answering mid-publish must not hold the relay: the round is
        // abandoned (nothing was marked) and retried on a new connection.
        let round = match tokio::time::timeout(
            ROUND_TIMEOUT,
            relay_round(&*outbox, &broker, producer, &mut channel),
        )
        .await
        {
            Ok(round) => round,
            Err(_) => Err(anyhow::anyhow!(
                "the broker did not confirm within {ROUND_TIMEOUT:?}"
            )),
        };
        let pause = match round {
            Ok(published) if published >= settings.relay_batch as usize => Duration::ZERO,
            Ok(published) => {
                if published > 0 {
                    tracing::debug!(producer, published, "events published");
                }
                backoff = settings.relay_interval;
                settings.relay_interval
            }
            Err(err) => {
                tracing::warn!(producer, error = %err, "publishing events failed; will retry");
                metrics::counter!("shopmesh_outbox_relay_errors_total", "producer" => producer)
                    .increment(1);
                channel = None;
                backoff = (backoff * 2).clamp(settings.relay_interval, MAX_BACKOFF);
                backoff
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                () = stop.clone().wait() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

async fn relay_round(
    outbox: &dyn Outbox,
    broker: &Broker,
    producer: &'static str,
    channel: &mut Option<Channel>,
) -> anyhow::Result<usize> {
    if !outbox.lead().await? {
        return Ok(0);
    }
    let batch = outbox.pending(broker.settings().relay_batch).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    let live = match channel.take().filter(|c| c.status().connected()) {
        Some(live) => live,
        None => broker.publisher().await?,
    };
    publish(&live, &broker.settings().exchange, producer, &batch).await?;
    *channel = Some(live);
    let ids: Vec<Uuid> = batch.iter().map(|event| event.id).collect();
    outbox.mark_published(&ids).await?;
    if let Some(oldest) = batch.first() {
        let lag = (Utc::now() - oldest.occurred_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::gauge!("shopmesh_outbox_lag_seconds", "producer" => producer).set(lag);
    }
    metrics::counter!("shopmesh_events_published_total", "producer" => producer)
        .increment(batch.len() as u64);
    Ok(batch.len())
}
