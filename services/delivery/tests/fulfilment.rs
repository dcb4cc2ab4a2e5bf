//! The packing station against the real RabbitMQ and PostgreSQL: order.paid reaches the
//! `fulfilment` consumer through a priority queue, so VIP orders overtake a backlog of standard
//! ones; each order is packed once however often its event arrives, and an order.paid that
//! overtook its shipment is retried until the shipment exists. The courier picks up only
//! fulfilled shipments.
//!
//! Every test gets its own database, run directory, exchange and queue prefix (TestEnv), and
//! publishes order.paid itself, as the order service's relay would (priority 9 VIP, 1 standard,
//! publisher confirms).

// The helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use shopmesh_contracts::pb::shopmesh::delivery::v1 as pb;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_client::DeliveryServiceClient;
use shopmesh_contracts::pb::shopmesh::events::v1::OrderPaid;
use shopmesh_contracts::pb::shopmesh::user::v1::Tier as PbTier;
use shopmesh_delivery::{Delivery, DeliveryConfig, fulfilment};
use shopmesh_platform::events::relay::{self, OutgoingEvent};
use shopmesh_platform::events::{
    Broker, PRIORITY_STANDARD, PRIORITY_VIP, consumer, dead_letters, payload_type,
};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::{NotStarted, PgDatabase, TestEnv, TestMesh, with_bearer};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

/// Nothing listens on port 1: the order service is down (no test here needs it).
const ORDER_DOWN: &str = "http://127.0.0.1:1";

struct App {
    database: PgDatabase,
    mesh: TestMesh,
    channel: Channel,
    db: PgPool,
    broker: Broker,
    /// A confirm-mode channel with the exchange declared: where the test publishes order.paid.
    publisher: lapin::Channel,
    user_id: String,
}

/// No courier unless a test wants one; `packing` per order.
fn config(packing_ms: u64) -> DeliveryConfig {
    DeliveryConfig {
        courier_enabled: false,
        packing: Duration::from_millis(packing_ms),
        ..DeliveryConfig::with_courier_step(Duration::from_millis(100))
    }
}

async fn spawn(config: DeliveryConfig, extra: &[(&str, &str)]) -> App {
    let database = PgDatabase::new("delivery_fulfilment_test");
    let mut env = TestEnv::new("delivery-fulfilment")
        .serve("delivery")
        .database("delivery", database.url())
        .set("ORDER_GRPC_URL", ORDER_DOWN);
    for (key, value) in extra {
        env = env.set(key, *value);
    }
    let services = Mesh::new(vec![
        Arc::new(Delivery::with_config(config)) as Arc<dyn Service>,
        Arc::new(NotStarted::like(
            "order",
            50054,
            &["shopmesh.order.v1.OrderService"],
        )),
    ]);
    let mesh = TestMesh::start(&env, &services, &["delivery"], &[]).await;
    let channel = mesh.channel("delivery").await;
    let db = database.pool().await;
    let broker = Broker::new(mesh.settings.events.clone(), "fulfilment-test");
    let publisher = broker.publisher().await.expect("a publisher channel");
    // The consumer declares its queue when it connects, which may be after this returns; the
    // test declares it too (same arguments, idempotent) so nothing it publishes is unrouted.
    consumer::declare(&broker, &publisher, &fulfilment::subscription())
        .await
        .expect("the fulfilment queue");
    let user_id = mesh.users.customer().id;
    App {
        database,
        mesh,
        channel,
        db,
        broker,
        publisher,
        user_id,
    }
}

fn address() -> PostalAddress {
    PostalAddress {
        recipient: "Ada Lovelace".into(),
        line1: "1 Analytical Way".into(),
        city: "Leipzig".into(),
        postal_code: "04109".into(),
        country: "DE".into(),
        ..PostalAddress::default()
    }
}

/// An order.paid of `order_id` as the order service's relay publishes it.
fn order_paid(order_id: Uuid, shipment_id: &str, user_id: &str, tier: PbTier) -> OutgoingEvent {
    OutgoingEvent {
        id: Uuid::now_v7(),
        event_type: "order.paid".into(),
        aggregate_id: order_id.to_string(),
        payload_type: payload_type("OrderPaid"),
        payload: OrderPaid {
            order_id: order_id.to_string(),
            user_id: user_id.to_owned(),
            tier: tier.into(),
            shipment_id: shipment_id.to_owned(),
            ..OrderPaid::default()
        }
        .encode_to_vec(),
        correlation_id: format!("req-{order_id}"),
        priority: match tier {
            PbTier::Vip => PRIORITY_VIP,
            _ => PRIORITY_STANDARD,
        },
        occurred_at: Utc::now(),
    }
}

impl App {
    fn client(&self) -> DeliveryServiceClient<Channel> {
        DeliveryServiceClient::new(self.channel.clone())
    }

    /// Creates the shipment of `order_id` as the order service.
    async fn ship_order(&self, order_id: Uuid, tier: PbTier) -> pb::Shipment {
        let request = pb::CreateShipmentRequest {
            order_id: order_id.to_string(),
            user_id: self.user_id.clone(),
            tier: tier.into(),
            address: Some(address()),
            lines: vec![pb::ShipmentLine {
                product_id: Uuid::now_v7().to_string(),
                sku: "KB-1".into(),
                product_name: "Keyboard".into(),
                quantity: 1,
            }],
        };
        self.client()
            .create_shipment(self.mesh.as_service("order", request))
            .await
            .expect("shipment created")
            .into_inner()
            .shipment
            .expect("shipment")
    }

    async fn ship(&self, tier: PbTier) -> pb::Shipment {
        self.ship_order(Uuid::now_v7(), tier).await
    }

    /// The order.paid of `shipment`'s order.
    fn paid(&self, shipment: &pb::Shipment) -> OutgoingEvent {
        order_paid(
            Uuid::parse_str(&shipment.order_id).unwrap(),
            &shipment.id,
            &self.user_id,
            shipment.tier(),
        )
    }

    /// Publishes `events` in this order, with confirms.
    async fn publish(&self, events: &[OutgoingEvent]) {
        relay::publish(
            &self.publisher,
            &self.broker.settings().exchange,
            "order",
            events,
        )
        .await
        .expect("order.paid published");
    }

    async fn fulfilled_at(&self, shipment_id: &str) -> Option<DateTime<Utc>> {
        sqlx::query_scalar("select fulfilled_at from shipments where id = $1")
            .bind(Uuid::parse_str(shipment_id).unwrap())
            .fetch_one(&self.db)
            .await
            .expect("the shipment row")
    }

    /// Waits until every shipment of `ids` is fulfilled; their fulfilled_at, by id.
    async fn wait_fulfilled(
        &self,
        ids: &[&str],
        within: Duration,
    ) -> HashMap<String, DateTime<Utc>> {
        let started = Instant::now();
        loop {
            let mut done = HashMap::new();
            for id in ids {
                if let Some(at) = self.fulfilled_at(id).await {
                    done.insert((*id).to_owned(), at);
                }
            }
            if done.len() == ids.len() {
                return done;
            }
            assert!(
                started.elapsed() < within,
                "{} of {} shipments fulfilled after {within:?}",
                done.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn get(&self, id: &str) -> pb::Shipment {
        let admin = self.mesh.users.admin();
        self.client()
            .get_shipment(with_bearer(
                pb::GetShipmentRequest {
                    shipment_id: id.into(),
                },
                &admin.token,
            ))
            .await
            .expect("shipment")
            .into_inner()
            .shipment
            .expect("shipment")
    }

    /// The inbox rows of the fulfilment consumer.
    async fn inbox(&self) -> Vec<Uuid> {
        sqlx::query_scalar("select event_id from inbox where consumer = 'fulfilment'")
            .fetch_all(&self.db)
            .await
            .expect("inbox rows")
    }

    async fn teardown(self) {
        let _ = self.publisher.close(200, "bye".into()).await;
        self.broker.close().await;
        drop(self.channel);
        self.mesh.stop().await;
        self.db.close().await;
        self.database.drop().await;
    }
}

fn statuses(shipment: &pb::Shipment) -> Vec<pb::ShipmentStatus> {
    shipment.events.iter().map(|e| e.status()).collect()
}

#[tokio::test]
async fn vip_orders_overtake_a_backlog_of_standard_orders() {
    // 50 ms per order: the 25 orders take over a second to pack, and the VIP ones arrive when
    // the standard ones are already queued.
    let app = spawn(config(50), &[]).await;
    let mut standard = Vec::new();
    for _ in 0..20 {
        standard.push(app.ship(PbTier::Standard).await);
    }
    let mut vip = Vec::new();
    for _ in 0..5 {
        vip.push(app.ship(PbTier::Vip).await);
    }
    // The backlog first, then the VIP orders.
    let backlog: Vec<OutgoingEvent> = standard.iter().map(|s| app.paid(s)).collect();
    app.publish(&backlog).await;
    let vips: Vec<OutgoingEvent> = vip.iter().map(|s| app.paid(s)).collect();
    app.publish(&vips).await;

    let ids: Vec<&str> = standard.iter().chain(&vip).map(|s| s.id.as_str()).collect();
    let fulfilled = app.wait_fulfilled(&ids, Duration::from_secs(30)).await;
    let at = |s: &pb::Shipment| fulfilled[&s.id];
    let mut standard_times: Vec<DateTime<Utc>> = standard.iter().map(at).collect();
    let vip_times: Vec<DateTime<Utc>> = vip.iter().map(at).collect();
    // Within a tier, first come first served.
    assert!(standard_times.is_sorted(), "{standard_times:?}");
    assert!(vip_times.is_sorted(), "{vip_times:?}");
    standard_times.sort();
    let last_vip = *vip_times.iter().max().unwrap();
    let standard_before = standard_times.iter().filter(|t| **t < last_vip).count();
    // Every VIP order was packed while at least half the backlog still waited (in practice
    // after the one or two standard orders already in hand).
    assert!(
        last_vip < standard_times[9],
        "{standard_before} standard orders were packed before the last VIP one: \
         VIP {vip_times:?}, standard {standard_times:?}"
    );
    // Packing takes its time: one order after another, each at least the packing time apart.
    let mut all: Vec<DateTime<Utc>> = fulfilled.values().copied().collect();
    all.sort();
    for pair in all.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::milliseconds(45),
            "{pair:?}"
        );
    }
    // Nothing moved: packing a LABEL_CREATED shipment records no tracking event.
    let one = app.get(&vip[0].id).await;
    assert_eq!(one.status(), pb::ShipmentStatus::LabelCreated);
    assert_eq!(one.events.len(), 1);
    assert_eq!(app.inbox().await.len(), 25);
    app.teardown().await;
}

#[tokio::test]
async fn a_redelivered_order_paid_packs_once() {
    let app = spawn(config(20), &[]).await;
    // A shipment the warehouse reports on (PENDING): packing moves it to PACKED.
    let shipment = app.ship(PbTier::Standard).await;
    let admin = app.mesh.users.admin();
    app.client()
        .advance_shipment(with_bearer(
            pb::AdvanceShipmentRequest {
                shipment_id: shipment.id.clone(),
                status: pb::ShipmentStatus::Pending.into(),
                ..pb::AdvanceShipmentRequest::default()
            },
            &admin.token,
        ))
        .await
        .unwrap();
    let paid = app.paid(&shipment);
    app.publish(std::slice::from_ref(&paid)).await;
    let first = app
        .wait_fulfilled(&[&shipment.id], Duration::from_secs(10))
        .await[&shipment.id];
    let packed = app.get(&shipment.id).await;
    assert_eq!(packed.status(), pb::ShipmentStatus::Packed);
    assert_eq!(
        statuses(&packed),
        [
            pb::ShipmentStatus::LabelCreated,
            pb::ShipmentStatus::Pending,
            pb::ShipmentStatus::Packed
        ]
    );
    assert_eq!(packed.events[2].location, "Warehouse");

    // The same event again (a relay that crashed before marking it), and a second order.paid
    // of the same order under another event id; then a sentinel order, packed after both (one
    // message at a time, first come first served at one priority).
    let again = OutgoingEvent {
        id: Uuid::now_v7(),
        ..paid.clone()
    };
    let sentinel = app.ship(PbTier::Standard).await;
    app.publish(&[paid.clone(), again.clone(), app.paid(&sentinel)])
        .await;
    app.wait_fulfilled(&[&sentinel.id], Duration::from_secs(10))
        .await;

    assert_eq!(app.fulfilled_at(&shipment.id).await, Some(first));
    let after = app.get(&shipment.id).await;
    assert_eq!(after.events.len(), 3, "{:?}", statuses(&after));
    // One PACKED status change in the outbox, with the order's correlation id.
    let changes: Vec<String> = sqlx::query_scalar(
        "select correlation_id from outbox where aggregate_id = $1 \
             and event_type = 'shipment.status_changed' order by seq",
    )
    .bind(&shipment.id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(changes.len(), 2, "PENDING and PACKED: {changes:?}");
    assert_eq!(changes[1], paid.correlation_id);
    // The redelivery was absorbed by the inbox; the second event id was applied (as nothing).
    let inbox = app.inbox().await;
    assert_eq!(inbox.len(), 3, "{inbox:?}");
    assert!(inbox.contains(&paid.id) && inbox.contains(&again.id));
    app.teardown().await;
}

#[tokio::test]
async fn an_order_paid_that_overtook_its_shipment_is_retried_until_it_exists() {
    // Retries every 200 ms (TestEnv), up to 50 attempts: well past the wait below.
    let app = spawn(config(0), &[("EVENTS_MAX_ATTEMPTS", "50")]).await;
    let order_id = Uuid::now_v7();
    let early = order_paid(order_id, "", &app.user_id, PbTier::Vip);
    app.publish(std::slice::from_ref(&early)).await;
    // Attempts fail while the order has no shipment: nothing recorded, nothing dead-lettered.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(app.inbox().await.is_empty());
    let parked = dead_letters::list(&app.broker, fulfilment::CONSUMER, 10)
        .await
        .unwrap();
    assert_eq!(parked.total, 0);

    let shipment = app.ship_order(order_id, PbTier::Vip).await;
    assert!(app.fulfilled_at(&shipment.id).await.is_none());
    let fulfilled = app
        .wait_fulfilled(&[&shipment.id], Duration::from_secs(10))
        .await;
    assert!(fulfilled[&shipment.id] > early.occurred_at);
    assert_eq!(app.inbox().await, [early.id]);
    app.teardown().await;
}

#[tokio::test]
async fn the_courier_picks_up_only_fulfilled_shipments() {
    let app = spawn(
        DeliveryConfig {
            courier_enabled: true,
            ..config(0)
        },
        &[],
    )
    .await;
    let shipment = app.ship(PbTier::Standard).await;
    // Several courier steps (100 ms) pass: nothing moves before packing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = app.get(&shipment.id).await;
    assert_eq!(waiting.status(), pb::ShipmentStatus::LabelCreated);
    assert_eq!(waiting.events.len(), 1);

    app.publish(&[app.paid(&shipment)]).await;
    let fulfilled_at = app
        .wait_fulfilled(&[&shipment.id], Duration::from_secs(10))
        .await[&shipment.id];
    let started = Instant::now();
    let delivered = loop {
        let now = app.get(&shipment.id).await;
        if now.status() == pb::ShipmentStatus::Delivered {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            statuses(&now)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        statuses(&delivered),
        [
            pb::ShipmentStatus::LabelCreated,
            pb::ShipmentStatus::InTransit,
            pb::ShipmentStatus::OutForDelivery,
            pb::ShipmentStatus::Delivered
        ]
    );
    // Picked up one courier step after it was packed.
    let picked_up = delivered.events[1].event_time.unwrap();
    let picked_up = DateTime::from_timestamp(picked_up.seconds, picked_up.nanos as u32).unwrap();
    assert!(
        picked_up - fulfilled_at >= chrono::Duration::milliseconds(90),
        "packed at {fulfilled_at}, picked up at {picked_up}"
    );
    app.teardown().await;
}
