//! The event plumbing against the real RabbitMQ and PostgreSQL: the relay publishes committed
//! outbox rows in order with confirms; consumers apply each event once, retry, dead-letter and
//! re-drive. Every test uses its own exchange, queue prefix and database.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use prost::Message;
use shopmesh_contracts::pb::shopmesh::events::v1::{EventEnvelope, UserRegistered};
use shopmesh_platform::Env;
use shopmesh_platform::events::relay::{self, OutgoingEvent};
use shopmesh_platform::events::{
    Broker, Event, EventSettings, Handler, HandlerError, PgOutbox, Subscription, consumer,
    dead_letters, new_envelope,
};
use shopmesh_platform::shutdown;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

const PG: &str = "postgres://postgres@127.0.0.1:5432";

struct Db {
    name: String,
    pool: PgPool,
}

impl Db {
    async fn new() -> Self {
        let name = format!("platform_events_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{PG}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let pool = PgPool::connect(&format!("{PG}/{name}")).await.unwrap();
        for statement in [
            "create table outbox (id uuid primary key, seq bigint generated always as identity \
             unique, event_type text not null, aggregate_id text not null, payload_type text not \
             null, payload bytea not null, correlation_id text not null default '', priority \
             smallint not null default 0, created_at timestamptz not null default now(), \
             published_at timestamptz)",
            "create table inbox (consumer text not null, event_id uuid not null, event_type text \
             not null, received_at timestamptz not null default now(), primary key (consumer, \
             event_id))",
            "create table effects (event_id uuid not null, user_id text not null)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        Self { name, pool }
    }

    async fn drop(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&format!("{PG}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("drop database {} with (force)", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    async fn effects(&self) -> Vec<String> {
        sqlx::query_scalar("select user_id from effects order by user_id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

fn settings() -> EventSettings {
    let id = Uuid::new_v4().simple().to_string();
    let env = Env::from_map(HashMap::from([
        ("EVENTS_EXCHANGE".to_owned(), format!("test.events.{id}")),
        ("EVENTS_QUEUE_PREFIX".to_owned(), format!("test.{id}.")),
        ("EVENTS_QUEUE_EXPIRES_MS".to_owned(), "120000".to_owned()),
        ("EVENTS_RETRY_DELAY_MS".to_owned(), "100".to_owned()),
        ("EVENTS_MAX_ATTEMPTS".to_owned(), "3".to_owned()),
        ("EVENTS_RELAY_INTERVAL_MS".to_owned(), "20".to_owned()),
    ]))
    .unwrap();
    EventSettings::from_env(&env).unwrap()
}

fn registered(user_id: &str) -> UserRegistered {
    UserRegistered {
        user_id: user_id.to_owned(),
        email: format!("{user_id}@example.com"),
        ..UserRegistered::default()
    }
}

async fn insert_outbox(conn: &mut PgConnection, user_id: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into outbox (id, event_type, aggregate_id, payload_type, payload, correlation_id) \
         values ($1, 'user.registered', $2, $3, $4, 'req-1')",
    )
    .bind(id)
    .bind(user_id)
    .bind("type.googleapis.com/shopmesh.events.v1.UserRegistered")
    .bind(registered(user_id).encode_to_vec())
    .execute(conn)
    .await
    .unwrap();
    id
}

/// A queue of the test's own bound to every event of the exchange.
async fn tap(broker: &Broker) -> lapin::Consumer {
    let channel = broker.channel().await.unwrap();
    broker.declare_exchange(&channel).await.unwrap();
    let queue = format!("{}tap", broker.settings().queue_prefix);
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        lapin::types::AMQPValue::LongLongInt(120_000),
    );
    channel
        .queue_declare(queue.clone().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.clone().into(),
            broker.settings().exchange.clone().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_consume(
            queue.into(),
            "tap".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

async fn next_envelope(tap: &mut lapin::Consumer) -> (EventEnvelope, lapin::BasicProperties) {
    let delivery = tokio::time::timeout(Duration::from_secs(10), tap.next())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    (
        EventEnvelope::decode(delivery.data.as_slice()).unwrap(),
        delivery.properties,
    )
}

#[tokio::test]
async fn the_relay_publishes_committed_events_in_order_and_marks_them() {
    let db = Db::new().await;
    let broker = Broker::new(settings(), "relay-test");
    let mut tap = tap(&broker).await;

    // Committed before the relay starts, and one held in an open transaction.
    let mut conn = db.pool.acquire().await.unwrap();
    let first = insert_outbox(&mut conn, "u1").await;
    let second = insert_outbox(&mut conn, "u2").await;
    let mut open = db.pool.begin().await.unwrap();
    let uncommitted = insert_outbox(&mut open, "u3").await;

    let (trigger, stop) = shutdown::channel();
    let relay = tokio::spawn(relay::run(
        Arc::new(PgOutbox::new(db.pool.clone())),
        broker.clone(),
        "user",
        stop,
    ));
    let (one, properties) = next_envelope(&mut tap).await;
    let (two, _) = next_envelope(&mut tap).await;
    assert_eq!(one.event_id, first.to_string());
    assert_eq!(two.event_id, second.to_string());
    assert_eq!(one.r#type, "user.registered");
    assert_eq!(one.producer, "user");
    assert_eq!(one.aggregate_id, "u1");
    assert_eq!(one.correlation_id, "req-1");
    assert_eq!(one.schema_version, 1);
    let payload = UserRegistered::decode(one.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(payload.email, "u1@example.com");
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some(first.to_string().as_str())
    );
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/x-protobuf")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));

    // The open transaction's event is not out; once it commits, it is.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), tap.next())
            .await
            .is_err(),
        "an uncommitted event was published"
    );
    open.commit().await.unwrap();
    let (three, _) = next_envelope(&mut tap).await;
    assert_eq!(three.event_id, uncommitted.to_string());

    // Marked once confirmed.
    eventually("every row marked published", || async {
        let unpublished: i64 =
            sqlx::query_scalar("select count(*) from outbox where published_at is null")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        unpublished == 0
    })
    .await;
    // Nothing is published twice.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), tap.next())
            .await
            .is_err(),
        "an event was published twice"
    );
    trigger.trigger();
    relay.await.unwrap();
    broker.close().await;
    drop(conn);
    db.drop().await;
}

/// Records each user.registered in `effects`; fails (retryably) for users while `broken` says so.
struct Recorder {
    broken: AtomicBool,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let user: UserRegistered = event.payload()?;
        if user.user_id.starts_with("poison") && self.broken.load(Ordering::SeqCst) {
            return Err(HandlerError::Retry(format!(
                "cannot handle {}",
                user.user_id
            )));
        }
        sqlx::query("insert into effects (event_id, user_id) values ($1, $2)")
            .bind(event.id)
            .bind(&user.user_id)
            .execute(tx)
            .await?;
        Ok(())
    }
}

async fn publish(broker: &Broker, envelope: &EventEnvelope) {
    let channel = broker.publisher().await.unwrap();
    let event = OutgoingEvent {
        id: envelope.event_id.parse().unwrap(),
        event_type: envelope.r#type.clone(),
        aggregate_id: envelope.aggregate_id.clone(),
        payload_type: envelope.payload.as_ref().unwrap().type_url.clone(),
        payload: envelope.payload.as_ref().unwrap().value.clone(),
        correlation_id: String::new(),
        priority: 0,
        occurred_at: chrono::Utc::now(),
    };
    relay::publish(&channel, &broker.settings().exchange, "test", &[event])
        .await
        .unwrap();
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn consumers_apply_once_retry_dead_letter_and_redrive() {
    let db = Db::new().await;
    let broker = Broker::new(settings(), "consumer-test");
    let recorder = Arc::new(Recorder {
        broken: AtomicBool::new(true),
    });
    let subscription = Subscription::new("recorder", &["user.*"]);
    let channel = broker.channel().await.unwrap();
    consumer::declare(&broker, &channel, &subscription)
        .await
        .unwrap();
    let (trigger, stop) = shutdown::channel();
    let running = tokio::spawn(consumer::run(
        subscription,
        recorder.clone(),
        db.pool.clone(),
        broker.clone(),
        stop,
    ));

    // The same event twice (a relay that crashed before marking): one effect.
    let twice = new_envelope(
        "user",
        "u1",
        "user.registered",
        "UserRegistered",
        &registered("u1"),
    );
    publish(&broker, &twice).await;
    publish(&broker, &twice).await;
    // A poison message among healthy ones does not hold them up.
    let poison = new_envelope(
        "user",
        "poison-1",
        "user.registered",
        "UserRegistered",
        &registered("poison-1"),
    );
    publish(&broker, &poison).await;
    let after = new_envelope(
        "user",
        "u2",
        "user.registered",
        "UserRegistered",
        &registered("u2"),
    );
    publish(&broker, &after).await;
    // Garbage is parked at once.
    let garbage = new_envelope(
        "user",
        "u3",
        "user.registered",
        "UserRegistered",
        &registered("u3"),
    );
    let mut broken_payload = garbage.clone();
    broken_payload.payload.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
    publish(&broker, &broken_payload).await;

    eventually("u1 and u2 applied", || async {
        db.effects().await == ["u1", "u2"]
    })
    .await;
    eventually("two dead letters", || async {
        dead_letters::list(&broker, "recorder", 10)
            .await
            .unwrap()
            .items
            .len()
            == 2
    })
    .await;
    let parked = dead_letters::list(&broker, "recorder", 10).await.unwrap();
    assert_eq!(parked.total, 2);
    let poisoned = parked
        .items
        .iter()
        .find(|d| d.event_id == poison.event_id)
        .expect("the poison message is parked");
    assert_eq!(poisoned.attempts, 3, "{poisoned:?}");
    assert_eq!(poisoned.error, "cannot handle poison-1");
    assert_eq!(poisoned.event_type, "user.registered");
    assert_eq!(poisoned.aggregate_id, "poison-1");
    assert!(poisoned.dead_at.is_some());
    let undecodable = parked
        .items
        .iter()
        .find(|d| d.event_id == garbage.event_id)
        .expect("the undecodable payload is parked");
    assert_eq!(undecodable.attempts, 1);
    assert!(
        undecodable.error.contains("does not decode"),
        "{undecodable:?}"
    );
    // Listing does not take them away.
    assert_eq!(
        dead_letters::list(&broker, "recorder", 10)
            .await
            .unwrap()
            .total,
        2
    );

    // After the fix, a re-drive applies it; re-driving again finds nothing.
    recorder.broken.store(false, Ordering::SeqCst);
    assert!(
        dead_letters::redrive(&broker, "recorder", &poison.event_id)
            .await
            .unwrap()
    );
    eventually("the re-driven event applied", || async {
        db.effects().await == ["poison-1", "u1", "u2"]
    })
    .await;
    assert!(
        !dead_letters::redrive(&broker, "recorder", &poison.event_id)
            .await
            .unwrap()
    );
    let left = dead_letters::list(&broker, "recorder", 10).await.unwrap();
    assert_eq!(left.total, 1);
    assert_eq!(left.items[0].event_id, garbage.event_id);

    // A redelivery of an applied event, even after the re-drive, changes nothing.
    publish(&broker, &twice).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.effects().await, ["poison-1", "u1", "u2"]);

    trigger.trigger();
    running.await.unwrap();
    broker.close().await;
    db.drop().await;
}
