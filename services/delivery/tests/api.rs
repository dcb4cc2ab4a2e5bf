//! Integration tests of the delivery service over gRPC, against the local PostgreSQL. Every test
//! gets a fresh database named by a UUID, its own run directory (service identity keys) and its
//! own server on a free port, started through the platform's `Mesh`.
//!
//! The order service does not run here. Its identity is in the trust bundle, so the tests call
//! as it; its address is either a port nobody listens on (the order service is down) or a
//! stand-in UpdateOrderStatus server that records what delivery sends it. The courier picks up
//! only shipments the packing station has fulfilled, so the tests that follow the courier
//! publish the order's order.paid themselves, as the order service's relay would (packing takes
//! no time here; tests/fulfilment.rs covers the packing station).

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use shopmesh_contracts::pb::shopmesh::delivery::v1 as pb;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_client::DeliveryServiceClient;
use shopmesh_contracts::pb::shopmesh::events::v1 as events_pb;
use shopmesh_contracts::pb::shopmesh::order::v1 as order_pb;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_server::{
    OrderService, OrderServiceServer,
};
use shopmesh_contracts::pb::shopmesh::user::v1::Tier as PbTier;
use shopmesh_delivery::{Delivery, DeliveryConfig, fulfilment};
use shopmesh_platform::events::relay::{self, OutgoingEvent};
use shopmesh_platform::events::{Broker, PRIORITY_STANDARD, PRIORITY_VIP, consumer, payload_type};
use shopmesh_platform::identity::{SERVICE_TOKEN, ServiceVerifier};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::TestUser as User;
use shopmesh_testkit::{NotStarted, PgDatabase, TestEnv, TestMesh, connect, with_bearer};
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

/// Where the order service is "reachable" when it is down: nothing listens on port 1.
const ORDER_DOWN: &str = "http://127.0.0.1:1";

struct TestApp {
    database: PgDatabase,
    /// The environment of the instances; a test may change it before it starts another one.
    env: TestEnv,
    /// The first instance, and `others` on the same database.
    mesh: TestMesh,
    channel: Channel,
    /// Direct access for assertions on rows the API does not expose (order updates owed).
    db: PgPool,
    /// Publishes order.paid as the order service would (a confirm-mode channel of `broker`).
    broker: Broker,
    publisher: lapin::Channel,
    admin: User,
    alice: User,
    bob: User,
}

/// A short courier step, packing at once and quick order-sync retries.
fn fast(step_ms: u64) -> DeliveryConfig {
    DeliveryConfig {
        packing: Duration::ZERO,
        sync_poll: Duration::from_millis(50),
        sync_backoff_base: Duration::from_millis(50),
        sync_backoff_max: Duration::from_millis(200),
        track_poll: Duration::from_millis(100),
        ..DeliveryConfig::with_courier_step(Duration::from_millis(step_ms))
    }
}

/// No courier: tests drive every transition themselves.
fn no_courier() -> DeliveryConfig {
    DeliveryConfig {
        courier_enabled: false,
        ..fast(100)
    }
}

fn mesh(config: DeliveryConfig) -> Mesh {
    Mesh::new(vec![
        Arc::new(Delivery::with_config(config)) as Arc<dyn Service>,
        // Stands in for the order service in the mesh's list, so that the delivery service
        // knows its address; it is never started here.
        Arc::new(NotStarted::like(
            "order",
            50054,
            &["shopmesh.order.v1.OrderService"],
        )),
    ])
}

async fn spawn_app(config: DeliveryConfig) -> TestApp {
    spawn_app_with(config, |_| ORDER_DOWN.to_owned()).await
}

/// Starts the delivery service; `order_url` gets the installation's identity verifier (for a
/// stand-in order service that checks who calls it) and says where the order service is.
async fn spawn_app_with(
    config: DeliveryConfig,
    order_url: impl FnOnce(ServiceVerifier) -> String,
) -> TestApp {
    let database = PgDatabase::new("delivery_test");
    let env = TestEnv::new("delivery")
        .serve("delivery")
        .database("delivery", database.url());
    let services = mesh(config);
    // The identity keys (the order service's included) are generated before the start, so a
    // stand-in order service can verify the delivery service's tokens.
    let keys = services.keys(&env.settings()).expect("identity keys");
    let env = env.set("ORDER_GRPC_URL", order_url(keys.verifier().clone()));
    // The delivery service creates its database itself (through the maintenance database).
    let mesh = TestMesh::start(&env, &services, &["delivery"], &[]).await;
    let channel = mesh.channel("delivery").await;
    let db = database.pool().await;
    let broker = Broker::new(mesh.settings.events.clone(), "delivery-test");
    let publisher = broker.publisher().await.expect("a publisher channel");
    // The consumer declares its queue once it has connected; declared here too (idempotent),
    // nothing the test publishes is unrouted.
    consumer::declare(&broker, &publisher, &fulfilment::subscription())
        .await
        .expect("the fulfilment queue");
    TestApp {
        admin: mesh.users.admin(),
        alice: mesh.users.customer(),
        bob: mesh.users.customer(),
        database,
        env,
        mesh,
        channel,
        db,
        broker,
        publisher,
    }
}

fn address() -> PostalAddress {
    PostalAddress {
        recipient: "Ada Lovelace".into(),
        line1: "1 Analytical Way".into(),
        line2: String::new(),
        city: "Leipzig".into(),
        region: String::new(),
        postal_code: "04109".into(),
        country: "DE".into(),
        phone: String::new(),
    }
}

fn create_request(order_id: Uuid, user_id: &str, tier: PbTier) -> pb::CreateShipmentRequest {
    pb::CreateShipmentRequest {
        order_id: order_id.to_string(),
        user_id: user_id.to_owned(),
        tier: tier.into(),
        address: Some(address()),
        lines: vec![pb::ShipmentLine {
            product_id: Uuid::now_v7().to_string(),
            sku: "KB-1".into(),
            product_name: "Keyboard".into(),
            quantity: 2,
        }],
    }
}

fn statuses(shipment: &pb::Shipment) -> Vec<pb::ShipmentStatus> {
    shipment.events.iter().map(|e| e.status()).collect()
}

fn event_millis(event: &pb::TrackingEvent) -> i64 {
    let t = event.event_time.expect("event time");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

const COURIER_PATH: [pb::ShipmentStatus; 4] = [
    pb::ShipmentStatus::LabelCreated,
    pb::ShipmentStatus::InTransit,
    pb::ShipmentStatus::OutForDelivery,
    pb::ShipmentStatus::Delivered,
];

impl TestApp {
    fn client(&self) -> DeliveryServiceClient<Channel> {
        DeliveryServiceClient::new(self.channel.clone())
    }

    fn admin<T>(&self, message: T) -> Request<T> {
        with_bearer(message, &self.admin.token)
    }

    /// A call as the order service (its service token, no user token).
    fn order<T>(&self, message: T) -> Request<T> {
        self.mesh.as_service("order", message)
    }

    /// Creates a shipment of a new order of `user` as the order service.
    async fn ship(&self, user: &User, tier: PbTier) -> pb::Shipment {
        self.create(create_request(Uuid::now_v7(), &user.id, tier))
            .await
            .expect("shipment created")
    }

    /// Creates a shipment of a new order of `user` and has it packed: the order's order.paid
    /// is published and the packing station records the shipment fulfilled, which makes it due
    /// for the courier.
    async fn ship_paid(&self, user: &User, tier: PbTier) -> pb::Shipment {
        let shipment = self.ship(user, tier).await;
        self.pay(&[&shipment]).await;
        shipment
    }

    /// Publishes the order.paid of each shipment (priority by tier) and waits until all are
    /// fulfilled.
    async fn pay(&self, shipments: &[&pb::Shipment]) {
        let events: Vec<OutgoingEvent> = shipments
            .iter()
            .map(|shipment| OutgoingEvent {
                id: Uuid::now_v7(),
                event_type: "order.paid".into(),
                aggregate_id: shipment.order_id.clone(),
                payload_type: payload_type("OrderPaid"),
                payload: events_pb::OrderPaid {
                    order_id: shipment.order_id.clone(),
                    user_id: shipment.user_id.clone(),
                    tier: shipment.tier,
                    shipment_id: shipment.id.clone(),
                    ..events_pb::OrderPaid::default()
                }
                .encode_to_vec(),
                correlation_id: String::new(),
                priority: if shipment.tier() == PbTier::Vip {
                    PRIORITY_VIP
                } else {
                    PRIORITY_STANDARD
                },
                occurred_at: chrono::Utc::now(),
            })
            .collect();
        relay::publish(
            &self.publisher,
            &self.broker.settings().exchange,
            "order",
            &events,
        )
        .await
        .expect("order.paid published");
        let started = Instant::now();
        for shipment in shipments {
            loop {
                let fulfilled: bool = sqlx::query_scalar(
                    "select fulfilled_at is not null from shipments where id = $1",
                )
                .bind(Uuid::parse_str(&shipment.id).unwrap())
                .fetch_one(&self.db)
                .await
                .expect("shipment row");
                if fulfilled {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "shipment {} not fulfilled",
                    shipment.id
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn create(&self, request: pb::CreateShipmentRequest) -> Result<pb::Shipment, Status> {
        self.client()
            .create_shipment(self.order(request))
            .await
            .map(|r| r.into_inner().shipment.expect("shipment"))
    }

    async fn get(&self, id: &str, token: &str) -> Result<pb::Shipment, Status> {
        self.client()
            .get_shipment(with_bearer(
                pb::GetShipmentRequest {
                    shipment_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().shipment.expect("shipment"))
    }

    async fn by_order(&self, order_id: &str, token: &str) -> Result<pb::Shipment, Status> {
        self.client()
            .get_shipment_by_order(with_bearer(
                pb::GetShipmentByOrderRequest {
                    order_id: order_id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().shipment.expect("shipment"))
    }

    async fn advance(
        &self,
        id: &str,
        status: pb::ShipmentStatus,
        location: &str,
    ) -> Result<pb::Shipment, Status> {
        self.client()
            .advance_shipment(self.admin(advance_request(id, status, location)))
            .await
            .map(|r| r.into_inner().shipment.expect("shipment"))
    }

    /// Polls until the shipment reaches `status` (admin view), failing after `within`.
    async fn wait_for(
        &self,
        id: &str,
        status: pb::ShipmentStatus,
        within: Duration,
    ) -> pb::Shipment {
        let started = Instant::now();
        loop {
            let shipment = self.get(id, &self.admin.token).await.expect("shipment");
            if shipment.status() == status {
                return shipment;
            }
            assert!(
                started.elapsed() < within,
                "shipment still {:?} after {within:?}, events {:?}",
                shipment.status(),
                statuses(&shipment)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (order status, state, attempts, has an error) of the order updates a shipment owes.
    async fn syncs(&self, shipment_id: &str) -> Vec<(String, String, i32, bool)> {
        sqlx::query_as(
            "select order_status, state, attempts, last_error is not null from order_sync \
             where shipment_id = $1 order by id",
        )
        .bind(Uuid::parse_str(shipment_id).unwrap())
        .fetch_all(&self.db)
        .await
        .expect("order syncs")
    }

    /// The outbox rows of a shipment, in publication order.
    async fn outbox(&self, shipment_id: &str) -> Vec<OutboxRow> {
        sqlx::query_as(
            "select id, seq, event_type, payload_type, payload, correlation_id, priority, \
                 published_at is null as pending from outbox where aggregate_id = $1 order by seq",
        )
        .bind(shipment_id)
        .fetch_all(&self.db)
        .await
        .expect("outbox rows")
    }

    /// The shipment.status_changed payloads of a shipment, in publication order.
    async fn status_changes(&self, shipment_id: &str) -> Vec<events_pb::ShipmentStatusChanged> {
        self.outbox(shipment_id)
            .await
            .iter()
            .filter(|row| row.event_type == "shipment.status_changed")
            .map(OutboxRow::status_changed)
            .collect()
    }

    /// Starts another instance on the same database and keys.
    async fn start_instance(&mut self, config: DeliveryConfig) -> Channel {
        let env = self.env.env();
        let started = self
            .mesh
            .start_more(&env, &mesh(config), &["delivery"])
            .await;
        connect(started, "delivery").await
    }

    /// Stops the servers, drops the database and removes the run directory.
    async fn teardown(self) {
        let _ = self.publisher.close(200, "bye".into()).await;
        self.broker.close().await;
        drop(self.channel);
        self.mesh.stop().await;
        self.db.close().await;
        self.database.drop().await;
    }
}

/// One row of the delivery service's outbox.
#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    id: Uuid,
    seq: i64,
    event_type: String,
    payload_type: String,
    payload: Vec<u8>,
    correlation_id: String,
    priority: i16,
    /// Not published yet.
    pending: bool,
}

impl OutboxRow {
    fn created(&self) -> events_pb::ShipmentCreated {
        assert_eq!(self.event_type, "shipment.created");
        assert_eq!(
            self.payload_type,
            "type.googleapis.com/shopmesh.events.v1.ShipmentCreated"
        );
        events_pb::ShipmentCreated::decode(self.payload.as_slice()).expect("ShipmentCreated")
    }

    fn status_changed(&self) -> events_pb::ShipmentStatusChanged {
        assert_eq!(self.event_type, "shipment.status_changed");
        assert_eq!(
            self.payload_type,
            "type.googleapis.com/shopmesh.events.v1.ShipmentStatusChanged"
        );
        assert_eq!(self.priority, 0, "only fulfilment events are prioritised");
        events_pb::ShipmentStatusChanged::decode(self.payload.as_slice())
            .expect("ShipmentStatusChanged")
    }
}

/// `request` with an `x-request-id`, as the gateway forwards it.
fn with_request_id<T>(mut request: Request<T>, request_id: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

/// (from, to) of each status change.
fn moves(
    changes: &[events_pb::ShipmentStatusChanged],
) -> Vec<(pb::ShipmentStatus, pb::ShipmentStatus)> {
    changes
        .iter()
        .map(|c| (c.from_status(), c.to_status()))
        .collect()
}

fn advance_request(
    id: &str,
    status: pb::ShipmentStatus,
    location: &str,
) -> pb::AdvanceShipmentRequest {
    pb::AdvanceShipmentRequest {
        shipment_id: id.into(),
        status: status.into(),
        location: location.into(),
        note: "scanned".into(),
        carrier: String::new(),
        tracking_number: String::new(),
    }
}

#[tokio::test]
async fn create_shipment_labels_the_parcel_and_is_idempotent_per_order() {
    let app = spawn_app(no_courier()).await;
    let order_id = Uuid::now_v7();
    let first = app
        .create(create_request(order_id, &app.alice.id, PbTier::Vip))
        .await
        .unwrap();
    assert_eq!(first.status(), pb::ShipmentStatus::LabelCreated);
    assert_eq!(first.order_id, order_id.to_string());
    assert_eq!(first.user_id, app.alice.id);
    assert_eq!(first.tier(), PbTier::Vip);
    assert_eq!(first.carrier, "SimPost");
    assert!(
        first.tracking_number.starts_with("SIM"),
        "{}",
        first.tracking_number
    );
    assert_eq!(first.tracking_number.len(), 15);
    assert_eq!(first.lines.len(), 1);
    assert_eq!(first.lines[0].quantity, 2);
    assert_eq!(first.address, Some(address()));
    assert_eq!(statuses(&first), [pb::ShipmentStatus::LabelCreated]);

    // A repeat, even with other content, returns the shipment the order has.
    let mut repeat = create_request(order_id, &app.alice.id, PbTier::Standard);
    repeat.lines[0].quantity = 9;
    let again = app.create(repeat).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.tracking_number, first.tracking_number);
    assert_eq!(again.lines[0].quantity, 2);
    assert_eq!(again.events.len(), 1);

    // Ten concurrent creates of a new order: one shipment, one label event.
    let concurrent = Uuid::now_v7();
    let results = futures::future::join_all(
        (0..10).map(|_| app.create(create_request(concurrent, &app.bob.id, PbTier::Standard))),
    )
    .await;
    let ids: HashSet<String> = results.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let shipment = app
        .by_order(&concurrent.to_string(), &app.admin.token)
        .await
        .unwrap();
    assert!(ids.contains(&shipment.id));
    assert_eq!(statuses(&shipment), [pb::ShipmentStatus::LabelCreated]);
    let rows: i64 = sqlx::query_scalar("select count(*) from shipments where order_id = $1")
        .bind(concurrent)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    app.teardown().await;
}

#[tokio::test]
async fn only_the_order_service_creates_shipments() {
    let app = spawn_app(no_courier()).await;
    let request = || create_request(Uuid::now_v7(), &app.alice.id, PbTier::Standard);
    let customer = app
        .client()
        .create_shipment(with_bearer(request(), &app.alice.token))
        .await
        .unwrap_err();
    assert_eq!(customer.code(), Code::PermissionDenied);
    let admin = app
        .client()
        .create_shipment(app.admin(request()))
        .await
        .unwrap_err();
    assert_eq!(admin.code(), Code::PermissionDenied);
    let anonymous = app
        .client()
        .create_shipment(Request::new(request()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let none: i64 = sqlx::query_scalar("select count(*) from shipments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(none, 0);
    app.teardown().await;
}

#[tokio::test]
async fn invalid_shipments_name_every_field() {
    let app = spawn_app(no_courier()).await;
    let mut request = create_request(Uuid::now_v7(), &app.alice.id, PbTier::Standard);
    request.order_id = "not-a-uuid".into();
    request.address.as_mut().unwrap().country = "Germany".into();
    request.lines[0].quantity = 0;
    let status = app.create(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["order_id", "address.country", "lines[0].quantity"]);
    app.teardown().await;
}

#[tokio::test]
async fn the_courier_delivers_a_shipment_with_every_tracking_event() {
    let app = spawn_app(fast(100)).await;
    let created = app.ship_paid(&app.alice, PbTier::Standard).await;
    let delivered = app
        .wait_for(
            &created.id,
            pb::ShipmentStatus::Delivered,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(statuses(&delivered), COURIER_PATH);
    let ids: Vec<&str> = delivered.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids[0], created.events[0].id);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4);
    // One step per courier step (100 ms), never two at once.
    for pair in delivered.events.windows(2) {
        let gap = event_millis(&pair[1]) - event_millis(&pair[0]);
        assert!(gap >= 90, "steps {gap} ms apart: {:?}", delivered.events);
    }
    assert_eq!(delivered.events[1].location, "SimPost sorting centre");
    assert_eq!(delivered.events[3].location, "Leipzig");
    // The customer sees the same history.
    let own = app.get(&created.id, &app.alice.token).await.unwrap();
    assert_eq!(statuses(&own), COURIER_PATH);
    // Nothing happens after DELIVERED.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = app.get(&created.id, &app.admin.token).await.unwrap();
    assert_eq!(later.events.len(), 4);
    app.teardown().await;
}

#[tokio::test]
async fn the_courier_serves_vip_shipments_first() {
    // This instance only creates: both shipments wait for a courier.
    let mut app = spawn_app(no_courier()).await;
    let standard_1 = app.ship_paid(&app.alice, PbTier::Standard).await;
    let standard_2 = app.ship_paid(&app.bob, PbTier::Standard).await;
    let vip = app.ship_paid(&app.bob, PbTier::Vip).await;
    // All three are due (the first step was due 100 ms after packing) when a courier that
    // takes one step per pass starts.
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.start_instance(DeliveryConfig {
        courier_batch: 1,
        courier_poll: Duration::from_millis(40),
        ..fast(100)
    })
    .await;
    let mut delivered = Vec::new();
    for shipment in [&vip, &standard_1, &standard_2] {
        delivered.push(
            app.wait_for(
                &shipment.id,
                pb::ShipmentStatus::Delivered,
                Duration::from_secs(10),
            )
            .await,
        );
    }
    let picked_up = |s: &pb::Shipment| event_millis(&s.events[1]);
    assert!(
        picked_up(&delivered[0]) < picked_up(&delivered[1])
            && picked_up(&delivered[0]) < picked_up(&delivered[2]),
        "VIP picked up at {}, standard at {} and {}",
        picked_up(&delivered[0]),
        picked_up(&delivered[1]),
        picked_up(&delivered[2]),
    );
    // Among standard shipments, the one waiting longest goes first.
    assert!(picked_up(&delivered[1]) < picked_up(&delivered[2]));
    for shipment in &delivered {
        assert_eq!(statuses(shipment), COURIER_PATH);
    }
    app.teardown().await;
}

#[tokio::test]
async fn couriers_of_several_instances_take_each_step_once() {
    let mut app = spawn_app(fast(100)).await;
    app.start_instance(fast(100)).await;
    app.start_instance(fast(100)).await;
    let mut shipments = Vec::new();
    for i in 0..12 {
        let user = if i % 2 == 0 { &app.alice } else { &app.bob };
        let tier = if i % 3 == 0 {
            PbTier::Vip
        } else {
            PbTier::Standard
        };
        shipments.push(app.ship(user, tier).await);
    }
    app.pay(&shipments.iter().collect::<Vec<_>>()).await;
    for shipment in &shipments {
        let delivered = app
            .wait_for(
                &shipment.id,
                pb::ShipmentStatus::Delivered,
                Duration::from_secs(15),
            )
            .await;
        assert_eq!(statuses(&delivered), COURIER_PATH, "{}", shipment.id);
        // One SHIPPED and one COMPLETED owed to the order service, however many couriers.
        let owed: Vec<String> = app
            .syncs(&shipment.id)
            .await
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(owed, ["SHIPPED", "COMPLETED"]);
        // One event per step, however many couriers.
        assert_eq!(
            moves(&app.status_changes(&shipment.id).await),
            courier_moves(),
            "{}",
            shipment.id
        );
    }
    app.teardown().await;
}

/// Reads the next message of a tracking stream, failing after a few seconds.
async fn next_event(
    stream: &mut tonic::Streaming<pb::TrackShipmentResponse>,
) -> Option<pb::TrackingEvent> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a tracking message in time")
        .expect("a healthy stream")
        .map(|m| m.event.expect("event"))
}

#[tokio::test]
async fn track_shipment_streams_the_history_then_live_events_and_ends() {
    // The database is not polled within this test's time: the live events come from the
    // transitions of this instance, as they are recorded.
    let app = spawn_app(DeliveryConfig {
        track_poll: Duration::from_secs(60),
        ..no_courier()
    })
    .await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    app.advance(&shipment.id, pb::ShipmentStatus::InTransit, "Leipzig hub")
        .await
        .unwrap();
    let track = |token: &str, after: &str| {
        let mut client = app.client();
        let request = with_bearer(
            pb::TrackShipmentRequest {
                shipment_id: shipment.id.clone(),
                after_event_id: after.into(),
            },
            token,
        );
        async move { client.track_shipment(request).await }
    };
    let mut stream = track(&app.alice.token, "").await.unwrap().into_inner();
    let first = next_event(&mut stream).await.unwrap();
    assert_eq!(first.status(), pb::ShipmentStatus::LabelCreated);
    let second = next_event(&mut stream).await.unwrap();
    assert_eq!(second.status(), pb::ShipmentStatus::InTransit);
    assert_eq!(second.location, "Leipzig hub");

    // Live: each new event arrives as it is recorded.
    let started = Instant::now();
    app.advance(&shipment.id, pb::ShipmentStatus::OutForDelivery, "Depot")
        .await
        .unwrap();
    let third = next_event(&mut stream).await.unwrap();
    assert_eq!(third.status(), pb::ShipmentStatus::OutForDelivery);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    app.advance(&shipment.id, pb::ShipmentStatus::Delivered, "Front door")
        .await
        .unwrap();
    let last = next_event(&mut stream).await.unwrap();
    assert_eq!(last.status(), pb::ShipmentStatus::Delivered);
    assert_eq!(last.location, "Front door");
    // DELIVERED ends the stream.
    assert!(next_event(&mut stream).await.is_none());

    // Resuming after an event sends only the later ones; after the last one, nothing.
    let mut resumed = track(&app.alice.token, &second.id)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_event(&mut resumed).await.unwrap().id, third.id);
    assert_eq!(next_event(&mut resumed).await.unwrap().id, last.id);
    assert!(next_event(&mut resumed).await.is_none());
    let mut ended = track(&app.alice.token, &last.id)
        .await
        .unwrap()
        .into_inner();
    assert!(next_event(&mut ended).await.is_none());
    let unknown = track(&app.alice.token, &Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);

    // Another customer cannot track it.
    let other = track(&app.bob.token, "").await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    app.teardown().await;
}

#[tokio::test]
async fn track_shipment_follows_the_courier_of_another_instance() {
    // The tracked instance runs no courier: the events come from the other one's database
    // writes, which the stream finds by polling.
    let mut app = spawn_app(no_courier()).await;
    app.start_instance(fast(150)).await;
    let shipment = app.ship_paid(&app.alice, PbTier::Vip).await;
    let mut stream = app
        .client()
        .track_shipment(with_bearer(
            pb::TrackShipmentRequest {
                shipment_id: shipment.id.clone(),
                after_event_id: String::new(),
            },
            &app.alice.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = next_event(&mut stream).await {
        seen.push(event.status());
    }
    assert_eq!(seen, COURIER_PATH);
    app.teardown().await;
}

/// The `delivery_tracking_streams` gauge of this process (each test binary runs one server).
fn open_streams() -> f64 {
    shopmesh_platform::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix("delivery_tracking_streams "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_client_that_goes_away_is_no_longer_followed() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    let mut stream = app
        .client()
        .track_shipment(with_bearer(
            pb::TrackShipmentRequest {
                shipment_id: shipment.id.clone(),
                after_event_id: String::new(),
            },
            &app.alice.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(next_event(&mut stream).await.is_some());
    assert_eq!(open_streams(), 1.0);
    drop(stream);
    let started = Instant::now();
    while open_streams() > 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the server still follows a stream nobody reads"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn open_streams_end_at_shutdown_with_unavailable() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    let mut stream = app
        .client()
        .track_shipment(with_bearer(
            pb::TrackShipmentRequest {
                shipment_id: shipment.id.clone(),
                after_event_id: String::new(),
            },
            &app.alice.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(next_event(&mut stream).await.is_some());
    let started = Instant::now();
    let stopping = tokio::spawn(app.teardown());
    let status = tokio::time::timeout(Duration::from_secs(4), stream.message())
        .await
        .expect("the stream ends before the grace period")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(stream);
    stopping.await.unwrap();
    // The server did not wait out its 5 s grace period for the stream.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn illegal_transitions_fail_precondition() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    let refused = |result: Result<pb::Shipment, Status>| {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        status.message().to_owned()
    };
    let message = refused(
        app.advance(&shipment.id, pb::ShipmentStatus::Delivered, "")
            .await,
    );
    assert_eq!(
        message,
        "a shipment cannot go from LABEL_CREATED to DELIVERED"
    );
    refused(
        app.advance(&shipment.id, pb::ShipmentStatus::LabelCreated, "")
            .await,
    );
    app.advance(&shipment.id, pb::ShipmentStatus::InTransit, "Hub")
        .await
        .unwrap();
    // A new scan in transit is a transition of its own; cancelling after pick-up is not.
    app.advance(&shipment.id, pb::ShipmentStatus::InTransit, "Next hub")
        .await
        .unwrap();
    refused(
        app.advance(&shipment.id, pb::ShipmentStatus::Cancelled, "")
            .await,
    );
    app.advance(&shipment.id, pb::ShipmentStatus::Returned, "Warehouse")
        .await
        .unwrap();
    for status in [
        pb::ShipmentStatus::InTransit,
        pb::ShipmentStatus::Delivered,
        pb::ShipmentStatus::Cancelled,
    ] {
        refused(app.advance(&shipment.id, status, "").await);
    }
    let after = app.get(&shipment.id, &app.admin.token).await.unwrap();
    assert_eq!(
        statuses(&after),
        [
            pb::ShipmentStatus::LabelCreated,
            pb::ShipmentStatus::InTransit,
            pb::ShipmentStatus::InTransit,
            pb::ShipmentStatus::Returned,
        ]
    );

    // No status at all is invalid input; an unknown shipment is not found.
    let missing = app
        .advance(&shipment.id, pb::ShipmentStatus::Unspecified, "")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    let unknown = app
        .advance(
            &Uuid::now_v7().to_string(),
            pb::ShipmentStatus::InTransit,
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.teardown().await;
}

#[tokio::test]
async fn a_hand_over_replaces_the_carrier_and_tracking_number() {
    let app = spawn_app(no_courier()).await;
    let first = app.ship(&app.alice, PbTier::Standard).await;
    let second = app.ship(&app.bob, PbTier::Standard).await;
    let hand_over = |id: &str, tracking: &str| {
        let mut client = app.client();
        let request = app.admin(pb::AdvanceShipmentRequest {
            carrier: "ParcelCo".into(),
            tracking_number: tracking.into(),
            ..advance_request(id, pb::ShipmentStatus::Shipped, "Warehouse gate")
        });
        async move { client.advance_shipment(request).await }
    };
    let shipped = hand_over(&first.id, "PC-1")
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    assert_eq!(shipped.status(), pb::ShipmentStatus::Shipped);
    assert_eq!(
        (shipped.carrier.as_str(), shipped.tracking_number.as_str()),
        ("ParcelCo", "PC-1")
    );
    // SHIPPED already means the order has shipped.
    assert_eq!(app.syncs(&first.id).await[0].0, "SHIPPED");
    // A tracking number is unique per carrier; the refused hand-over changes nothing.
    let taken = hand_over(&second.id, "PC-1").await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let unchanged = app.get(&second.id, &app.admin.token).await.unwrap();
    assert_eq!(unchanged.status(), pb::ShipmentStatus::LabelCreated);
    assert_eq!(unchanged.carrier, "SimPost");
    app.teardown().await;
}

#[tokio::test]
async fn concurrent_advances_apply_once() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    let results = futures::future::join_all((0..10).map(|i| {
        let (app, id) = (&app, &shipment.id);
        async move {
            app.advance(
                id,
                pb::ShipmentStatus::OutForDelivery,
                &format!("courier {i}"),
            )
            .await
        }
    }))
    .await;
    // OUT_FOR_DELIVERY is not reachable from LABEL_CREATED: all refused.
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap_err().code() == Code::FailedPrecondition)
    );

    let results = futures::future::join_all((0..10).map(|i| {
        let (app, id) = (&app, &shipment.id);
        async move {
            app.advance(id, pb::ShipmentStatus::Packed, &format!("bench {i}"))
                .await
        }
    }))
    .await;
    let applied = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(applied, 1, "{results:?}");
    for result in &results {
        if let Err(status) = result {
            // A loser either saw the winner's state (PACKED -> PACKED is illegal) or lost the
            // race for the conditional update.
            assert!(
                matches!(status.code(), Code::FailedPrecondition | Code::Aborted),
                "{status:?}"
            );
        }
    }
    let after = app.get(&shipment.id, &app.admin.token).await.unwrap();
    assert_eq!(
        statuses(&after),
        [pb::ShipmentStatus::LabelCreated, pb::ShipmentStatus::Packed]
    );
    // The one applied transition is the one event; refused and lost ones wrote nothing.
    assert_eq!(
        moves(&app.status_changes(&shipment.id).await),
        [(pb::ShipmentStatus::LabelCreated, pb::ShipmentStatus::Packed)]
    );
    app.teardown().await;
}

#[tokio::test]
async fn customers_see_only_their_own_shipments() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    assert_eq!(
        app.get(&shipment.id, &app.alice.token).await.unwrap().id,
        shipment.id
    );
    assert_eq!(
        app.by_order(&shipment.order_id, &app.alice.token)
            .await
            .unwrap()
            .id,
        shipment.id
    );
    let by_id = app.get(&shipment.id, &app.bob.token).await.unwrap_err();
    assert_eq!(by_id.code(), Code::NotFound);
    let by_order = app
        .by_order(&shipment.order_id, &app.bob.token)
        .await
        .unwrap_err();
    assert_eq!(by_order.code(), Code::NotFound);
    // The same answer as for an order with no shipment yet: nothing leaks.
    let none = app
        .by_order(&Uuid::now_v7().to_string(), &app.bob.token)
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    assert_eq!(by_order.message(), none.message());
    // Admins and the order service see every shipment.
    assert_eq!(
        app.get(&shipment.id, &app.admin.token).await.unwrap().id,
        shipment.id
    );
    let as_order = app
        .client()
        .get_shipment_by_order(app.order(pb::GetShipmentByOrderRequest {
            order_id: shipment.order_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    assert_eq!(as_order.id, shipment.id);
    // Customers cannot advance shipments, not even their own.
    let advance = app
        .client()
        .advance_shipment(with_bearer(
            advance_request(&shipment.id, pb::ShipmentStatus::InTransit, ""),
            &app.alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(advance.code(), Code::PermissionDenied);
    let bad_id = app.get("nope", &app.alice.token).await.unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    app.teardown().await;
}

#[tokio::test]
async fn the_order_service_may_only_cancel_before_pick_up() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    let as_order = |status| {
        let mut client = app.client();
        let request = app.order(advance_request(&shipment.id, status, ""));
        async move { client.advance_shipment(request).await }
    };
    let moved = as_order(pb::ShipmentStatus::InTransit).await.unwrap_err();
    assert_eq!(moved.code(), Code::PermissionDenied);
    let cancelled = as_order(pb::ShipmentStatus::Cancelled)
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    assert_eq!(cancelled.status(), pb::ShipmentStatus::Cancelled);
    // Cancelling again (a retried saga step) returns the cancelled shipment.
    let again = as_order(pb::ShipmentStatus::Cancelled)
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    assert_eq!(again.events.len(), 2);

    let shipped = app.ship(&app.bob, PbTier::Standard).await;
    app.advance(&shipped.id, pb::ShipmentStatus::InTransit, "Hub")
        .await
        .unwrap();
    let late = app
        .client()
        .advance_shipment(app.order(advance_request(
            &shipped.id,
            pb::ShipmentStatus::Cancelled,
            "",
        )))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    app.teardown().await;
}

#[tokio::test]
async fn order_updates_are_kept_and_retried_while_the_order_service_is_down() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    // Nothing is owed before the parcel leaves.
    assert!(app.syncs(&shipment.id).await.is_empty());
    for status in [
        pb::ShipmentStatus::InTransit,
        pb::ShipmentStatus::OutForDelivery,
        pb::ShipmentStatus::Delivered,
    ] {
        app.advance(&shipment.id, status, "").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let owed = app.syncs(&shipment.id).await;
    assert_eq!(owed.len(), 2, "{owed:?}");
    let (status, state, attempts, failed) = &owed[0];
    assert_eq!((status.as_str(), state.as_str()), ("SHIPPED", "pending"));
    assert!(*attempts >= 2, "attempted {attempts} times");
    assert!(failed);
    // COMPLETED waits behind SHIPPED: never sent before it.
    assert_eq!(
        owed[1],
        ("COMPLETED".to_owned(), "pending".to_owned(), 0, false)
    );
    // Still retried later, still pending.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = app.syncs(&shipment.id).await;
    assert!(later[0].2 > *attempts, "{later:?}");
    assert_eq!(later[0].1, "pending");
    app.teardown().await;
}

/// What the stand-in order service was asked, and how it answers.
#[derive(Default)]
struct OrderLog {
    /// (order id, status, calling service) in arrival order.
    calls: Vec<(String, order_pb::OrderStatus, String)>,
    /// Orders that are cancelled: FAILED_PRECONDITION.
    cancelled: HashSet<String>,
    /// UNAVAILABLE for this many calls first.
    unavailable: usize,
}

/// A stand-in for the order service's UpdateOrderStatus (the real one is not in this crate).
/// It checks the caller's service token like the real method guard does.
#[derive(Clone)]
struct StandInOrders {
    log: Arc<Mutex<OrderLog>>,
    verifier: ServiceVerifier,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the stand-in"))
}

#[tonic::async_trait]
impl OrderService for StandInOrders {
    async fn place_order(
        &self,
        _: Request<order_pb::PlaceOrderRequest>,
    ) -> Result<Response<order_pb::PlaceOrderResponse>, Status> {
        unimplemented()
    }

    async fn get_order(
        &self,
        _: Request<order_pb::GetOrderRequest>,
    ) -> Result<Response<order_pb::GetOrderResponse>, Status> {
        unimplemented()
    }

    async fn list_orders(
        &self,
        _: Request<order_pb::ListOrdersRequest>,
    ) -> Result<Response<order_pb::ListOrdersResponse>, Status> {
        unimplemented()
    }

    async fn cancel_order(
        &self,
        _: Request<order_pb::CancelOrderRequest>,
    ) -> Result<Response<order_pb::CancelOrderResponse>, Status> {
        unimplemented()
    }

    async fn update_order_status(
        &self,
        request: Request<order_pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<order_pb::UpdateOrderStatusResponse>, Status> {
        let caller = request
            .metadata()
            .get(SERVICE_TOKEN)
            .and_then(|v| v.to_str().ok())
            .and_then(|token| self.verifier.verify(token).ok())
            .map(|identity| identity.name)
            .ok_or_else(|| Status::unauthenticated("a service token is required"))?;
        let message = request.into_inner();
        let mut log = self.log.lock().unwrap();
        log.calls
            .push((message.order_id.clone(), message.status(), caller));
        if log.unavailable > 0 {
            log.unavailable -= 1;
            return Err(Status::unavailable("starting up"));
        }
        if log.cancelled.contains(&message.order_id) {
            return Err(Status::failed_precondition("the order is CANCELLED"));
        }
        Ok(Response::new(order_pb::UpdateOrderStatusResponse {
            order: None,
        }))
    }

    async fn refund_order(
        &self,
        _: Request<order_pb::RefundOrderRequest>,
    ) -> Result<Response<order_pb::RefundOrderResponse>, Status> {
        unimplemented()
    }

    type WatchOrderStream = futures::stream::Empty<Result<order_pb::WatchOrderResponse, Status>>;

    async fn watch_order(
        &self,
        _: Request<order_pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        unimplemented()
    }
}

/// Serves a stand-in order service on `listener` that trusts the identities of `verifier`.
fn serve_orders(
    listener: tokio::net::TcpListener,
    log: Arc<Mutex<OrderLog>>,
    verifier: ServiceVerifier,
) -> String {
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrderServiceServer::new(StandInOrders { log, verifier }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

/// Starts the delivery service with a stand-in order service, which it returns the log of.
async fn spawn_with_orders(
    config: DeliveryConfig,
    log: OrderLog,
) -> (TestApp, Arc<Mutex<OrderLog>>) {
    let log = Arc::new(Mutex::new(log));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shared = log.clone();
    let app = spawn_app_with(config, move |verifier| {
        serve_orders(listener, shared, verifier)
    })
    .await;
    (app, log)
}

#[tokio::test]
async fn pending_order_updates_are_delivered_once_the_order_service_is_back() {
    let mut app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    for status in [
        pb::ShipmentStatus::InTransit,
        pb::ShipmentStatus::OutForDelivery,
        pb::ShipmentStatus::Delivered,
    ] {
        app.advance(&shipment.id, status, "").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let owed = app.syncs(&shipment.id).await;
    assert_eq!(owed.len(), 2);
    assert!(owed.iter().all(|s| s.1 == "pending"), "{owed:?}");

    // The instance that cannot reach the order service stops (a restart, a crash); a new one
    // that can reach it delivers what was owed, from the database.
    let log = Arc::new(Mutex::new(OrderLog::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let verifier = app.mesh.started.keys.verifier().clone();
    let order_url = serve_orders(listener, log.clone(), verifier);
    app.env = app.env.clone().set("ORDER_GRPC_URL", order_url);
    app.channel = app.start_instance(no_courier()).await;
    let replacement = app.mesh.others.pop().unwrap();
    std::mem::replace(&mut app.mesh.started, replacement)
        .stop()
        .await;

    let started = Instant::now();
    loop {
        let owed = app.syncs(&shipment.id).await;
        if owed.iter().all(|s| s.1 == "done") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{owed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls: Vec<order_pb::OrderStatus> = log.lock().unwrap().calls.iter().map(|c| c.1).collect();
    assert_eq!(
        calls,
        [
            order_pb::OrderStatus::Shipped,
            order_pb::OrderStatus::Completed
        ]
    );
    // The shipment is served by the new instance as before.
    let delivered = app.get(&shipment.id, &app.alice.token).await.unwrap();
    assert_eq!(delivered.status(), pb::ShipmentStatus::Delivered);
    app.teardown().await;
}

#[tokio::test]
async fn the_order_follows_the_shipment_signed_as_the_delivery_service() {
    let (app, log) = spawn_with_orders(
        fast(100),
        OrderLog {
            // The order service is unavailable at first: the updates are retried.
            unavailable: 2,
            ..OrderLog::default()
        },
    )
    .await;
    let shipment = app.ship_paid(&app.alice, PbTier::Standard).await;
    app.wait_for(
        &shipment.id,
        pb::ShipmentStatus::Delivered,
        Duration::from_secs(10),
    )
    .await;
    let started = Instant::now();
    loop {
        let owed = app.syncs(&shipment.id).await;
        if owed.iter().all(|s| s.1 == "done") && owed.len() == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{owed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = log.lock().unwrap().calls.clone();
    let statuses: Vec<order_pb::OrderStatus> = calls.iter().map(|c| c.1).collect();
    // Two refused attempts of SHIPPED, then SHIPPED, then COMPLETED: in order, each until OK.
    assert_eq!(
        statuses,
        [
            order_pb::OrderStatus::Shipped,
            order_pb::OrderStatus::Shipped,
            order_pb::OrderStatus::Shipped,
            order_pb::OrderStatus::Completed,
        ]
    );
    assert!(
        calls
            .iter()
            .all(|(order, _, caller)| *order == shipment.order_id && caller == "delivery")
    );
    app.teardown().await;
}

#[tokio::test]
async fn updates_of_a_cancelled_order_are_given_up() {
    let (app, log) = spawn_with_orders(no_courier(), OrderLog::default()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    log.lock()
        .unwrap()
        .cancelled
        .insert(shipment.order_id.clone());
    app.advance(&shipment.id, pb::ShipmentStatus::InTransit, "Hub")
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let owed = app.syncs(&shipment.id).await;
        if owed.len() == 1 && owed[0].1 != "pending" {
            assert_eq!(owed[0].1, "rejected");
            assert_eq!(owed[0].2, 1, "tried once");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{owed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log.lock().unwrap().calls.len(), 1, "not retried");
    app.teardown().await;
}

/// The (from, to) of the courier's three steps.
fn courier_moves() -> Vec<(pb::ShipmentStatus, pb::ShipmentStatus)> {
    COURIER_PATH.windows(2).map(|w| (w[0], w[1])).collect()
}

#[tokio::test]
async fn a_created_shipment_records_one_shipment_created_with_priority_by_tier() {
    let app = spawn_app(no_courier()).await;
    let vip_order = Uuid::now_v7();
    let request = with_request_id(
        app.order(create_request(vip_order, &app.alice.id, PbTier::Vip)),
        "req-create-vip",
    );
    let vip = app
        .client()
        .create_shipment(request)
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    let standard = app.ship(&app.bob, PbTier::Standard).await;
    // An order that named no tier is fulfilled (and prioritised) as standard.
    let unnamed = app.ship(&app.bob, PbTier::Unspecified).await;

    let rows = app.outbox(&vip.id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.priority, 9);
    assert_eq!(row.correlation_id, "req-create-vip");
    assert!(row.pending);
    assert_eq!(row.id.get_version_num(), 7);
    let created = row.created();
    assert_eq!(created.shipment_id, vip.id);
    assert_eq!(created.order_id, vip_order.to_string());
    assert_eq!(created.user_id, app.alice.id);
    assert_eq!(created.tier(), PbTier::Vip);
    assert_eq!(created.lines, vip.lines);
    assert_eq!(created.lines[0].sku, "KB-1");
    assert_eq!(created.lines[0].quantity, 2);

    for (shipment, user) in [(&standard, &app.bob), (&unnamed, &app.bob)] {
        let rows = app.outbox(&shipment.id).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].priority, 1);
        // No request id came with the call.
        assert_eq!(rows[0].correlation_id, "");
        let created = rows[0].created();
        assert_eq!(created.tier(), PbTier::Standard);
        assert_eq!(created.user_id, user.id);
    }

    // A repeated create (a retried saga step) returns the shipment and records nothing.
    let again = app
        .create(create_request(vip_order, &app.alice.id, PbTier::Standard))
        .await
        .unwrap();
    assert_eq!(again.id, vip.id);
    // Concurrent creates of one order: one shipment, one event.
    let concurrent = Uuid::now_v7();
    let results = futures::future::join_all(
        (0..8).map(|_| app.create(create_request(concurrent, &app.bob.id, PbTier::Vip))),
    )
    .await;
    let id = results[0].as_ref().unwrap().id.clone();
    assert_eq!(app.outbox(&vip.id).await.len(), 1);
    assert_eq!(app.outbox(&id).await.len(), 1);
    let total: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(total, 4);
    app.teardown().await;
}

#[tokio::test]
async fn every_admin_transition_records_one_status_change() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Vip).await;
    let advance = |request: pb::AdvanceShipmentRequest, request_id: &str| {
        let mut client = app.client();
        let request = with_request_id(app.admin(request), request_id);
        async move { client.advance_shipment(request).await }
    };
    advance(
        advance_request(&shipment.id, pb::ShipmentStatus::Packed, "Bench 4"),
        "req-1",
    )
    .await
    .unwrap();
    // Refused transitions record nothing.
    advance(
        advance_request(&shipment.id, pb::ShipmentStatus::Delivered, ""),
        "req-refused",
    )
    .await
    .unwrap_err();
    advance(
        pb::AdvanceShipmentRequest {
            carrier: "ParcelCo".into(),
            tracking_number: "PC-7".into(),
            ..advance_request(&shipment.id, pb::ShipmentStatus::Shipped, "Gate")
        },
        "req-2",
    )
    .await
    .unwrap();
    advance(
        advance_request(&shipment.id, pb::ShipmentStatus::InTransit, "Hub"),
        "req-3",
    )
    .await
    .unwrap();
    // A new scan in transit is a transition of its own.
    advance(
        advance_request(&shipment.id, pb::ShipmentStatus::InTransit, "Next hub"),
        "req-4",
    )
    .await
    .unwrap();

    let rows = app.outbox(&shipment.id).await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[0].event_type, "shipment.created");
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    let correlation: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.correlation_id.as_str())
        .collect();
    assert_eq!(correlation, ["req-1", "req-2", "req-3", "req-4"]);
    let changes: Vec<_> = rows[1..].iter().map(OutboxRow::status_changed).collect();
    use pb::ShipmentStatus as S;
    assert_eq!(
        moves(&changes),
        [
            (S::LabelCreated, S::Packed),
            (S::Packed, S::Shipped),
            (S::Shipped, S::InTransit),
            (S::InTransit, S::InTransit),
        ]
    );
    for change in &changes {
        assert_eq!(change.shipment_id, shipment.id);
        assert_eq!(change.order_id, shipment.order_id);
        assert_eq!(change.user_id, app.alice.id);
        assert_eq!(change.tier(), PbTier::Vip);
        assert_eq!(change.note, "scanned");
    }
    assert_eq!(changes[0].location, "Bench 4");
    assert_eq!(changes[3].location, "Next hub");
    // The carrier is named once the parcel was handed over, with the hand-over's replacement.
    assert_eq!(
        (
            changes[0].carrier.as_str(),
            changes[0].tracking_number.as_str()
        ),
        ("", "")
    );
    for change in &changes[1..] {
        assert_eq!(
            (change.carrier.as_str(), change.tracking_number.as_str()),
            ("ParcelCo", "PC-7")
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_cancellation_records_one_status_change_however_often_it_is_sent() {
    let app = spawn_app(no_courier()).await;
    let shipment = app.ship(&app.alice, PbTier::Standard).await;
    for _ in 0..3 {
        let request = with_request_id(
            app.order(advance_request(
                &shipment.id,
                pb::ShipmentStatus::Cancelled,
                "",
            )),
            "req-cancel",
        );
        let cancelled = app
            .client()
            .advance_shipment(request)
            .await
            .unwrap()
            .into_inner()
            .shipment
            .unwrap();
        assert_eq!(cancelled.status(), pb::ShipmentStatus::Cancelled);
    }
    let rows = app.outbox(&shipment.id).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].correlation_id, "req-cancel");
    let change = rows[1].status_changed();
    assert_eq!(change.from_status(), pb::ShipmentStatus::LabelCreated);
    assert_eq!(change.to_status(), pb::ShipmentStatus::Cancelled);
    assert_eq!(change.tier(), PbTier::Standard);
    assert_eq!(change.carrier, "");
    app.teardown().await;
}

#[tokio::test]
async fn each_courier_step_records_one_status_change_without_correlation() {
    let app = spawn_app(fast(100)).await;
    let created = app.ship_paid(&app.bob, PbTier::Standard).await;
    app.wait_for(
        &created.id,
        pb::ShipmentStatus::Delivered,
        Duration::from_secs(10),
    )
    .await;
    // Nothing follows DELIVERED.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = app.outbox(&created.id).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows[1..].iter().all(|r| r.correlation_id.is_empty()));
    let changes: Vec<_> = rows[1..].iter().map(OutboxRow::status_changed).collect();
    assert_eq!(moves(&changes), courier_moves());
    assert_eq!(changes[0].location, "SimPost sorting centre");
    assert_eq!(changes[0].note, "Picked up by SimPost");
    assert_eq!(changes[2].location, "Leipzig");
    for change in &changes {
        assert_eq!(change.user_id, app.bob.id);
        assert_eq!(change.tier(), PbTier::Standard);
        assert_eq!(change.carrier, "SimPost");
        assert_eq!(change.tracking_number, created.tracking_number);
    }
    app.teardown().await;
}
