//! Integration tests of the order service over gRPC, against the local PostgreSQL: the outbox
//! events of every status change. Every test gets a fresh database named by a UUID, its own run
//! directory (service identity keys) and its own server on a free port, started through the
//! platform's `Mesh` (the harness is `shopmesh_testkit`).
//!
//! The product, payment and delivery services do not run here: one stand-in server answers for
//! all three with what the saga needs (a fixed catalog, reservations that always hold, charges
//! that succeed or are declined, shipments), so that each test decides how the checkout goes.

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::{Money, PostalAddress};
use shopmesh_contracts::pb::shopmesh::delivery::v1 as delivery_pb;
use shopmesh_contracts::pb::shopmesh::delivery::v1::ShipmentStatus;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_server::{
    DeliveryService, DeliveryServiceServer,
};
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_contracts::pb::shopmesh::events::v1::EventEnvelope;
use shopmesh_contracts::pb::shopmesh::order::v1 as pb;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_client::OrderServiceClient;
use shopmesh_contracts::pb::shopmesh::order::v1::{CancellationReason, OrderStatus, SagaStep};
use shopmesh_contracts::pb::shopmesh::payment::v1 as payment_pb;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_server::{
    PaymentService, PaymentServiceServer,
};
use shopmesh_contracts::pb::shopmesh::product::v1 as product_pb;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_server::{
    ProductService, ProductServiceServer,
};
use shopmesh_contracts::pb::shopmesh::user::v1::Tier;
use shopmesh_order::{Order, OrderConfig};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::TestUser as User;
use shopmesh_testkit::{NotStarted, PgDatabase, TestEnv, TestMesh, with_bearer};
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

/// The stand-in catalog: product id, SKU, name, unit price (USD minor units).
const CATALOG: [(&str, &str, &str, i64); 2] = [
    ("p-keyboard", "KB-1", "Keyboard", 1250),
    ("p-mouse", "MS-1", "Mouse", 300),
];

fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "USD".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The stand-in product, payment and delivery services.

/// What the stand-ins answer, and the payments they took (by order id).
#[derive(Default)]
struct PeerState {
    /// Charge answers FAILED with decline code "card_declined".
    decline: bool,
    /// Reserve answers only once this gate has a permit (none: at once).
    reserve_gate: Option<Arc<tokio::sync::Semaphore>>,
    payments: HashMap<String, payment_pb::Payment>,
}

#[derive(Clone, Default)]
struct StandIns {
    state: Arc<Mutex<PeerState>>,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the stand-in"))
}

#[tonic::async_trait]
impl ProductService for StandIns {
    async fn get_product(
        &self,
        _: Request<product_pb::GetProductRequest>,
    ) -> Result<Response<product_pb::GetProductResponse>, Status> {
        unimplemented()
    }

    async fn get_product_by_sku(
        &self,
        _: Request<product_pb::GetProductBySkuRequest>,
    ) -> Result<Response<product_pb::GetProductBySkuResponse>, Status> {
        unimplemented()
    }

    async fn batch_get_products(
        &self,
        request: Request<product_pb::BatchGetProductsRequest>,
    ) -> Result<Response<product_pb::BatchGetProductsResponse>, Status> {
        let mut response = product_pb::BatchGetProductsResponse::default();
        for id in request.into_inner().product_ids {
            match CATALOG.iter().find(|(pid, ..)| *pid == id) {
                Some((pid, sku, name, price)) => response.products.push(product_pb::Product {
                    id: (*pid).into(),
                    sku: (*sku).into(),
                    name: (*name).into(),
                    price: Some(usd(*price)),
                    active: true,
                    in_stock: true,
                    ..product_pb::Product::default()
                }),
                None => response.not_found_ids.push(id),
            }
        }
        Ok(Response::new(response))
    }

    async fn search_products(
        &self,
        _: Request<product_pb::SearchProductsRequest>,
    ) -> Result<Response<product_pb::SearchProductsResponse>, Status> {
        unimplemented()
    }

    async fn create_product(
        &self,
        _: Request<product_pb::CreateProductRequest>,
    ) -> Result<Response<product_pb::CreateProductResponse>, Status> {
        unimplemented()
    }

    async fn update_product(
        &self,
        _: Request<product_pb::UpdateProductRequest>,
    ) -> Result<Response<product_pb::UpdateProductResponse>, Status> {
        unimplemented()
    }

    async fn delete_product(
        &self,
        _: Request<product_pb::DeleteProductRequest>,
    ) -> Result<Response<product_pb::DeleteProductResponse>, Status> {
        unimplemented()
    }

    async fn import_products(
        &self,
        _: Request<Streaming<product_pb::ImportProductsRequest>>,
    ) -> Result<Response<product_pb::ImportProductsResponse>, Status> {
        unimplemented()
    }

    async fn list_categories(
        &self,
        _: Request<product_pb::ListCategoriesRequest>,
    ) -> Result<Response<product_pb::ListCategoriesResponse>, Status> {
        unimplemented()
    }

    async fn create_category(
        &self,
        _: Request<product_pb::CreateCategoryRequest>,
    ) -> Result<Response<product_pb::CreateCategoryResponse>, Status> {
        unimplemented()
    }
}

#[tonic::async_trait]
impl InventoryService for StandIns {
    async fn get_stock(
        &self,
        _: Request<product_pb::GetStockRequest>,
    ) -> Result<Response<product_pb::GetStockResponse>, Status> {
        unimplemented()
    }

    async fn list_stock(
        &self,
        _: Request<product_pb::ListStockRequest>,
    ) -> Result<Response<product_pb::ListStockResponse>, Status> {
        unimplemented()
    }

    async fn list_stock_movements(
        &self,
        _: Request<product_pb::ListStockMovementsRequest>,
    ) -> Result<Response<product_pb::ListStockMovementsResponse>, Status> {
        unimplemented()
    }

    async fn reserve(
        &self,
        _: Request<product_pb::ReserveRequest>,
    ) -> Result<Response<product_pb::ReserveResponse>, Status> {
        let gate = self.state.lock().unwrap().reserve_gate.clone();
        if let Some(gate) = gate {
            // The permit goes back on drop: once open, the gate stays open.
            drop(gate.acquire().await.unwrap());
        }
        Ok(Response::new(product_pb::ReserveResponse::default()))
    }

    async fn commit(
        &self,
        _: Request<product_pb::CommitRequest>,
    ) -> Result<Response<product_pb::CommitResponse>, Status> {
        Ok(Response::new(product_pb::CommitResponse::default()))
    }

    async fn release(
        &self,
        _: Request<product_pb::ReleaseRequest>,
    ) -> Result<Response<product_pb::ReleaseResponse>, Status> {
        Ok(Response::new(product_pb::ReleaseResponse::default()))
    }

    async fn adjust(
        &self,
        _: Request<product_pb::AdjustRequest>,
    ) -> Result<Response<product_pb::AdjustResponse>, Status> {
        Ok(Response::new(product_pb::AdjustResponse::default()))
    }

    async fn set_low_stock_threshold(
        &self,
        _: Request<product_pb::SetLowStockThresholdRequest>,
    ) -> Result<Response<product_pb::SetLowStockThresholdResponse>, Status> {
        unimplemented()
    }
}

#[tonic::async_trait]
impl PaymentService for StandIns {
    /// Idempotent on the order id, like the real one.
    async fn charge(
        &self,
        request: Request<payment_pb::ChargeRequest>,
    ) -> Result<Response<payment_pb::ChargeResponse>, Status> {
        use payment_pb::PaymentStatus as P;
        let charge = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let decline = state.decline;
        let payment = state
            .payments
            .entry(charge.order_id.clone())
            .or_insert_with(|| payment_pb::Payment {
                id: Uuid::now_v7().to_string(),
                order_id: charge.order_id.clone(),
                user_id: charge.user_id.clone(),
                refunded_amount: Some(usd(0)),
                amount: charge.amount.clone(),
                status: if decline { P::Failed } else { P::Succeeded }.into(),
                decline_code: if decline {
                    "card_declined".into()
                } else {
                    String::new()
                },
                ..payment_pb::Payment::default()
            })
            .clone();
        Ok(Response::new(payment_pb::ChargeResponse {
            payment: Some(payment),
        }))
    }

    /// Refunds everything left when no amount is given; the same payment answers a repeat.
    async fn refund(
        &self,
        request: Request<payment_pb::RefundRequest>,
    ) -> Result<Response<payment_pb::RefundResponse>, Status> {
        use payment_pb::PaymentStatus as P;
        let refund = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let payment = state
            .payments
            .values_mut()
            .find(|p| p.id == refund.payment_id)
            .ok_or_else(|| Status::not_found("no such payment"))?;
        let amount = payment.amount.as_ref().map_or(0, |m| m.amount_minor);
        let already = payment
            .refunded_amount
            .as_ref()
            .map_or(0, |m| m.amount_minor);
        let asked = refund.amount.map_or(amount - already, |m| m.amount_minor);
        let refunded = (already + asked).min(amount);
        payment.refunded_amount = Some(usd(refunded));
        payment.status = if refunded >= amount {
            P::Refunded
        } else {
            P::PartiallyRefunded
        }
        .into();
        Ok(Response::new(payment_pb::RefundResponse {
            refund: Some(payment_pb::Refund {
                id: Uuid::now_v7().to_string(),
                payment_id: payment.id.clone(),
                amount: Some(usd(asked)),
                status: payment_pb::RefundStatus::Succeeded.into(),
                ..payment_pb::Refund::default()
            }),
            payment: Some(payment.clone()),
        }))
    }

    async fn tokenize_card(
        &self,
        _: Request<payment_pb::TokenizeCardRequest>,
    ) -> Result<Response<payment_pb::TokenizeCardResponse>, Status> {
        unimplemented()
    }

    async fn get_payment(
        &self,
        _: Request<payment_pb::GetPaymentRequest>,
    ) -> Result<Response<payment_pb::GetPaymentResponse>, Status> {
        unimplemented()
    }

    async fn list_payments_by_order(
        &self,
        request: Request<payment_pb::ListPaymentsByOrderRequest>,
    ) -> Result<Response<payment_pb::ListPaymentsByOrderResponse>, Status> {
        let order_id = request.into_inner().order_id;
        let state = self.state.lock().unwrap();
        Ok(Response::new(payment_pb::ListPaymentsByOrderResponse {
            payments: state.payments.get(&order_id).cloned().into_iter().collect(),
        }))
    }
}

fn shipment_id(order_id: &str) -> String {
    format!("ship-{order_id}")
}

#[tonic::async_trait]
impl DeliveryService for StandIns {
    async fn create_shipment(
        &self,
        request: Request<delivery_pb::CreateShipmentRequest>,
    ) -> Result<Response<delivery_pb::CreateShipmentResponse>, Status> {
        let order_id = request.into_inner().order_id;
        Ok(Response::new(delivery_pb::CreateShipmentResponse {
            shipment: Some(delivery_pb::Shipment {
                id: shipment_id(&order_id),
                order_id,
                status: delivery_pb::ShipmentStatus::LabelCreated.into(),
                ..delivery_pb::Shipment::default()
            }),
        }))
    }

    async fn get_shipment(
        &self,
        _: Request<delivery_pb::GetShipmentRequest>,
    ) -> Result<Response<delivery_pb::GetShipmentResponse>, Status> {
        unimplemented()
    }

    async fn get_shipment_by_order(
        &self,
        _: Request<delivery_pb::GetShipmentByOrderRequest>,
    ) -> Result<Response<delivery_pb::GetShipmentByOrderResponse>, Status> {
        unimplemented()
    }

    type TrackShipmentStream =
        futures::stream::Empty<Result<delivery_pb::TrackShipmentResponse, Status>>;

    async fn track_shipment(
        &self,
        _: Request<delivery_pb::TrackShipmentRequest>,
    ) -> Result<Response<Self::TrackShipmentStream>, Status> {
        unimplemented()
    }

    /// Cancelling a shipment that has not left always works.
    async fn advance_shipment(
        &self,
        _: Request<delivery_pb::AdvanceShipmentRequest>,
    ) -> Result<Response<delivery_pb::AdvanceShipmentResponse>, Status> {
        Ok(Response::new(
            delivery_pb::AdvanceShipmentResponse::default(),
        ))
    }
}

/// Serves the stand-ins on a free port; returns their URL.
async fn serve_stand_ins(stand_ins: StandIns) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProductServiceServer::new(stand_ins.clone()))
            .add_service(InventoryServiceServer::new(stand_ins.clone()))
            .add_service(PaymentServiceServer::new(stand_ins.clone()))
            .add_service(DeliveryServiceServer::new(stand_ins))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

// ---------------------------------------------------------------------------------------------
// The order service under test.

struct TestApp {
    database: PgDatabase,
    mesh: TestMesh,
    channel: Channel,
    /// Direct access to the outbox, which the API does not expose.
    db: PgPool,
    peers: StandIns,
    admin: User,
    customer: User,
    /// The test's own exchange and queues.
    events: shopmesh_platform::events::EventSettings,
}

/// One outbox row.
#[derive(Debug)]
struct Row {
    event_type: String,
    aggregate_id: String,
    payload_type: String,
    payload: Vec<u8>,
    correlation_id: String,
    priority: i16,
}

async fn spawn_app() -> TestApp {
    let database = PgDatabase::new("order_test");
    let peers = StandIns::default();
    let url = serve_stand_ins(peers.clone()).await;
    let env = TestEnv::new("order")
        .serve("order")
        .database("order", database.url())
        .set("PRODUCT_GRPC_URL", url.clone())
        .set("PAYMENT_GRPC_URL", url.clone())
        .set("DELIVERY_GRPC_URL", url);
    // Generous waits: the tests share a small machine with whatever else runs on it.
    let config = OrderConfig {
        wait: Duration::from_secs(15),
        lease: Duration::from_secs(3),
        recovery_interval: Duration::from_millis(200),
        ..OrderConfig::default()
    };
    let services = Mesh::new(vec![
        Arc::new(Order {
            config: Some(config),
        }) as Arc<dyn Service>,
        // In the mesh's list so that the order service knows their addresses (the stand-ins');
        // never started here.
        Arc::new(NotStarted::new("product")),
        Arc::new(NotStarted::new("payment")),
        Arc::new(NotStarted::new("delivery")),
    ]);
    // The tests call as the cart (PlaceOrder) and the delivery service (UpdateOrderStatus).
    let mesh = TestMesh::start(&env, &services, &["order"], &["cart", "delivery"]).await;
    let channel = mesh.channel("order").await;
    let db = database.pool().await;
    TestApp {
        events: shopmesh_platform::events::EventSettings::from_env(&env.env()).unwrap(),
        admin: mesh.users.admin(),
        customer: mesh.users.customer(),
        database,
        mesh,
        channel,
        db,
        peers,
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

/// Two keyboards and a mouse: 2 * 1250 + 300.
const TOTAL: i64 = 2800;

fn place_request(user: &User, key: &str, tier: Tier) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        user_id: user.id.clone(),
        tier: tier.into(),
        lines: vec![
            pb::PlaceOrderLine {
                product_id: "p-keyboard".into(),
                quantity: 2,
                expected_unit_price: Some(usd(1250)),
            },
            pb::PlaceOrderLine {
                product_id: "p-mouse".into(),
                quantity: 1,
                expected_unit_price: Some(usd(300)),
            },
        ],
        shipping_address: Some(address()),
        payment_method_token: "tok_test".into(),
    }
}

fn with_request_id<T>(mut request: Request<T>, request_id: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

fn decode<M: Message + Default>(row: &Row, name: &str) -> M {
    assert_eq!(
        row.payload_type,
        format!("type.googleapis.com/shopmesh.events.v1.{name}")
    );
    M::decode(row.payload.as_slice()).expect("the payload decodes")
}

/// The lines as a consumer reads them: (product id, SKU, name, unit price, quantity, total).
fn lines(lines: &[events::OrderLine]) -> Vec<(String, String, String, i64, i32, i64)> {
    lines
        .iter()
        .map(|l| {
            let unit = l.unit_price.clone().unwrap();
            let total = l.line_total.clone().unwrap();
            assert_eq!(
                (unit.currency.as_str(), total.currency.as_str()),
                ("USD", "USD")
            );
            (
                l.product_id.clone(),
                l.sku.clone(),
                l.product_name.clone(),
                unit.amount_minor,
                l.quantity,
                total.amount_minor,
            )
        })
        .collect()
}

fn expected_lines() -> Vec<(String, String, String, i64, i32, i64)> {
    vec![
        (
            "p-keyboard".into(),
            "KB-1".into(),
            "Keyboard".into(),
            1250,
            2,
            2500,
        ),
        ("p-mouse".into(), "MS-1".into(), "Mouse".into(), 300, 1, 300),
    ]
}

/// CancelOrder as `user`, with `request_id` as x-request-id (a free function, so that a test can
/// run it in a task of its own).
async fn cancel(channel: Channel, user: &User, order_id: &str, request_id: &str) -> pb::Order {
    let request = pb::CancelOrderRequest {
        order_id: order_id.into(),
        reason: "changed my mind".into(),
    };
    OrderServiceClient::new(channel)
        .cancel_order(with_request_id(
            with_bearer(request, &user.token),
            request_id,
        ))
        .await
        .expect("the order is cancelled")
        .into_inner()
        .order
        .expect("order")
}

impl TestApp {
    fn client(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel.clone())
    }

    /// PlaceOrder as the cart, with `request_id` as x-request-id.
    async fn place(&self, request: pb::PlaceOrderRequest, request_id: &str) -> pb::Order {
        self.place_within(request, request_id, Duration::from_secs(20))
            .await
    }

    async fn place_within(
        &self,
        request: pb::PlaceOrderRequest,
        request_id: &str,
        timeout: Duration,
    ) -> pb::Order {
        let mut request = with_request_id(self.mesh.as_service("cart", request), request_id);
        request.set_timeout(timeout);
        self.client()
            .place_order(request)
            .await
            .expect("the order is placed")
            .into_inner()
            .order
            .expect("order")
    }

    async fn cancel(&self, user: &User, order_id: &str, request_id: &str) -> pb::Order {
        cancel(self.channel.clone(), user, order_id, request_id).await
    }

    async fn cancel_requested(&self, order_id: &str) -> bool {
        sqlx::query_scalar("select cancel_requested from orders where id = $1::uuid")
            .bind(order_id)
            .fetch_one(&self.db)
            .await
            .expect("order")
    }

    /// UpdateOrderStatus as the delivery service.
    async fn update_status(
        &self,
        order_id: &str,
        status: OrderStatus,
        request_id: &str,
    ) -> Result<pb::Order, Status> {
        let request = pb::UpdateOrderStatusRequest {
            order_id: order_id.into(),
            status: status.into(),
            note: String::new(),
        };
        self.client()
            .update_order_status(with_request_id(
                self.mesh.as_service("delivery", request),
                request_id,
            ))
            .await
            .map(|r| r.into_inner().order.expect("order"))
    }

    async fn refund(&self, order_id: &str, key: &str, request_id: &str) -> pb::Order {
        let request = pb::RefundOrderRequest {
            order_id: order_id.into(),
            amount: None,
            note: "returned".into(),
            idempotency_key: key.into(),
        };
        self.client()
            .refund_order(with_request_id(
                with_bearer(request, &self.admin.token),
                request_id,
            ))
            .await
            .expect("the order is refunded")
            .into_inner()
            .order
            .expect("order")
    }

    /// The outbox rows of an order, in publication order.
    async fn outbox(&self, order_id: &str) -> Vec<Row> {
        let rows: Vec<(String, String, String, Vec<u8>, String, i16)> = sqlx::query_as(
            "select event_type, aggregate_id, payload_type, payload, correlation_id, priority \
             from outbox where aggregate_id = $1 order by seq",
        )
        .bind(order_id)
        .fetch_all(&self.db)
        .await
        .expect("outbox");
        rows.into_iter()
            .map(
                |(event_type, aggregate_id, payload_type, payload, correlation_id, priority)| Row {
                    event_type,
                    aggregate_id,
                    payload_type,
                    payload,
                    correlation_id,
                    priority,
                },
            )
            .collect()
    }

    async fn event_types(&self, order_id: &str) -> Vec<String> {
        self.outbox(order_id)
            .await
            .into_iter()
            .map(|r| r.event_type)
            .collect()
    }

    /// Waits until the saga of the order has nothing left to do (COMPLETED or COMPENSATED), so
    /// that a test sees every event it will ever write.
    async fn saga_finished(&self, order_id: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let step: i16 = sqlx::query_scalar("select saga_step from orders where id = $1::uuid")
                .bind(order_id)
                .fetch_one(&self.db)
                .await
                .expect("saga step");
            if [SagaStep::Completed as i16, SagaStep::Compensated as i16].contains(&step) {
                return;
            }
            if Instant::now() >= until {
                let log: Vec<(i16, String, String)> = sqlx::query_as(
                    "select step, outcome, detail from saga_log where order_id = $1::uuid \
                     order by id",
                )
                .bind(order_id)
                .fetch_all(&self.db)
                .await
                .expect("saga log");
                panic!("the saga is stuck at step {step}: {log:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn teardown(self) {
        drop(self.channel);
        self.mesh.stop().await;
        self.db.close().await;
        self.database.drop().await;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_paid_order_writes_one_created_and_one_paid_event_with_its_tier_priority() {
    let app = spawn_app().await;
    for (tier, priority) in [(Tier::Vip, 9), (Tier::Standard, 1)] {
        let key = format!("checkout-{}", tier.as_str_name());
        let request_id = format!("req-{}", Uuid::now_v7());
        let order = app
            .place(place_request(&app.customer, &key, tier), &request_id)
            .await;
        assert_eq!(order.status(), OrderStatus::Paid, "{order:?}");
        app.saga_finished(&order.id).await;

        let rows = app.outbox(&order.id).await;
        let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(types, ["order.created", "order.paid"], "{tier:?}");
        for row in &rows {
            assert_eq!(row.aggregate_id, order.id);
            // The saga's order.paid carries the id of the PlaceOrder request it finished.
            assert_eq!(row.correlation_id, request_id);
        }
        assert_eq!(
            rows[0].priority, 0,
            "order.created is no fulfilment message"
        );
        assert_eq!(rows[1].priority, priority, "{tier:?}");

        let created: events::OrderCreated = decode(&rows[0], "OrderCreated");
        assert_eq!(created.order_id, order.id);
        assert_eq!(created.user_id, app.customer.id);
        assert_eq!(created.tier(), tier);
        assert_eq!(created.total, Some(usd(TOTAL)));
        assert_eq!(lines(&created.lines), expected_lines());
        assert_eq!(created.shipping_address, Some(address()));

        let paid: events::OrderPaid = decode(&rows[1], "OrderPaid");
        assert_eq!(paid.order_id, order.id);
        assert_eq!(paid.user_id, app.customer.id);
        assert_eq!(paid.tier(), tier);
        assert_eq!(paid.total, Some(usd(TOTAL)));
        assert_eq!(lines(&paid.lines), expected_lines());
        assert_eq!(paid.shipping_address, Some(address()));
        assert_eq!(paid.payment_id, order.payment_id);
        assert!(!paid.payment_id.is_empty());
        // Fulfilment gets the shipment with it: order.paid leaves once the shipment exists.
        let shipment_id: String =
            sqlx::query_scalar("select shipment_id from orders where id = $1::uuid")
                .bind(&order.id)
                .fetch_one(&app.db)
                .await
                .expect("shipment id");
        assert!(!shipment_id.is_empty());
        assert_eq!(paid.shipment_id, shipment_id);

        // A replay of the checkout (same key, any request id) is the same order and no event.
        let again = app
            .place(place_request(&app.customer, &key, tier), "req-replay")
            .await;
        assert_eq!(again.id, order.id);
        assert_eq!(app.outbox(&order.id).await.len(), 2);
    }
    let total: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(total, 4);
    app.teardown().await;
}

#[tokio::test]
async fn a_declined_checkout_writes_one_cancelled_event() {
    let app = spawn_app().await;
    app.peers.state.lock().unwrap().decline = true;
    let order = app
        .place(
            place_request(&app.customer, "declined", Tier::Standard),
            "req-declined",
        )
        .await;
    assert_eq!(order.status(), OrderStatus::Cancelled, "{order:?}");
    app.saga_finished(&order.id).await;

    let rows = app.outbox(&order.id).await;
    let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["order.created", "order.cancelled"]);
    assert_eq!(rows[1].correlation_id, "req-declined");
    assert_eq!(rows[1].priority, 0);
    let cancelled: events::OrderCancelled = decode(&rows[1], "OrderCancelled");
    assert_eq!(cancelled.order_id, order.id);
    assert_eq!(cancelled.user_id, app.customer.id);
    assert_eq!(cancelled.tier(), Tier::Standard);
    assert_eq!(cancelled.previous_status(), OrderStatus::Created);
    assert_eq!(cancelled.reason(), CancellationReason::PaymentFailed);
    assert_eq!(cancelled.note, "card_declined");
    assert_eq!(cancelled.total, Some(usd(TOTAL)));
    assert_eq!(cancelled.refunded_total, Some(usd(0)));
    assert_eq!(cancelled.shipment_id, "");

    // Cancelling what is cancelled already returns it unchanged, and writes nothing.
    let again = app.cancel(&app.customer, &order.id, "req-cancel").await;
    assert_eq!(again.status(), OrderStatus::Cancelled);
    assert_eq!(app.outbox(&order.id).await.len(), 2);
    app.teardown().await;
}

#[tokio::test]
async fn cancelling_a_paid_order_writes_one_cancelled_event() {
    let app = spawn_app().await;
    let order = app
        .place(
            place_request(&app.customer, "to-cancel", Tier::Vip),
            "req-place",
        )
        .await;
    assert_eq!(order.status(), OrderStatus::Paid);

    let cancelled = app.cancel(&app.customer, &order.id, "req-cancel").await;
    assert_eq!(cancelled.status(), OrderStatus::Cancelled, "{cancelled:?}");
    app.saga_finished(&order.id).await;
    // Cancelled and refunded in full (after the cancellation, by the saga's compensation).
    let refunded = app
        .cancel(&app.customer, &order.id, "req-cancel-again")
        .await;
    assert_eq!(refunded.refunded_total, Some(usd(TOTAL)));

    let rows = app.outbox(&order.id).await;
    let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["order.created", "order.paid", "order.cancelled"]);
    // The saga stopped the shipment and cancelled the order for the CancelOrder request.
    assert_eq!(rows[2].correlation_id, "req-cancel");
    assert_eq!(rows[2].priority, 0);
    let event: events::OrderCancelled = decode(&rows[2], "OrderCancelled");
    assert_eq!(event.order_id, order.id);
    assert_eq!(event.user_id, app.customer.id);
    assert_eq!(event.tier(), Tier::Vip);
    assert_eq!(event.previous_status(), OrderStatus::Paid);
    assert_eq!(event.reason(), CancellationReason::CustomerRequested);
    assert_eq!(event.note, "changed my mind");
    assert_eq!(event.total, Some(usd(TOTAL)));
    assert_eq!(event.shipment_id, shipment_id(&order.id));
    app.teardown().await;
}

#[tokio::test]
async fn cancelling_an_order_being_placed_writes_one_cancelled_event_for_the_cancel_request() {
    let app = spawn_app().await;
    // The reservation waits for the test: PlaceOrder answers first, with the order CREATED.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    app.peers.state.lock().unwrap().reserve_gate = Some(gate.clone());
    let order = app
        .place_within(
            place_request(&app.customer, "slow", Tier::Standard),
            "req-place",
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(order.status(), OrderStatus::Created, "{order:?}");

    // CancelOrder asks the saga to stop and waits for it; the reservation answers once the
    // request is recorded, and the saga stops before charging.
    let cancelling = tokio::spawn({
        let (channel, user, id) = (app.channel.clone(), app.customer.clone(), order.id.clone());
        async move { cancel(channel, &user, &id, "req-cancel").await }
    });
    let until = Instant::now() + Duration::from_secs(10);
    while !app.cancel_requested(&order.id).await {
        assert!(
            Instant::now() < until,
            "the cancellation was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.add_permits(1);
    let cancelled = cancelling.await.unwrap();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled, "{cancelled:?}");
    app.saga_finished(&order.id).await;

    let rows = app.outbox(&order.id).await;
    let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["order.created", "order.cancelled"]);
    assert_eq!(rows[0].correlation_id, "req-place");
    // The saga carried out the cancellation the CancelOrder request asked for.
    assert_eq!(rows[1].correlation_id, "req-cancel");
    let event: events::OrderCancelled = decode(&rows[1], "OrderCancelled");
    assert_eq!(event.previous_status(), OrderStatus::Created);
    assert_eq!(event.reason(), CancellationReason::CustomerRequested);
    assert_eq!(event.note, "changed my mind");
    assert_eq!(event.refunded_total, Some(usd(0)));
    assert!(app.peers.state.lock().unwrap().payments.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn fulfilment_and_a_full_refund_write_one_event_per_change() {
    let app = spawn_app().await;
    let order = app
        .place(
            place_request(&app.customer, "ship-me", Tier::Vip),
            "req-place",
        )
        .await;
    assert_eq!(order.status(), OrderStatus::Paid);
    app.saga_finished(&order.id).await;

    // Repeated status updates (the delivery service retries) change the order once.
    for attempt in 0..2 {
        let shipped = app
            .update_status(
                &order.id,
                OrderStatus::Shipped,
                &format!("req-ship-{attempt}"),
            )
            .await
            .unwrap();
        assert_eq!(shipped.status(), OrderStatus::Shipped);
    }
    for attempt in 0..2 {
        let completed = app
            .update_status(
                &order.id,
                OrderStatus::Completed,
                &format!("req-done-{attempt}"),
            )
            .await
            .unwrap();
        assert_eq!(completed.status(), OrderStatus::Completed);
    }
    // A late SHIPPED after COMPLETED changes nothing either.
    app.update_status(&order.id, OrderStatus::Shipped, "req-late")
        .await
        .unwrap();
    // A repeated refund (same idempotency key) refunds and moves the order once.
    for _ in 0..2 {
        let refunded = app.refund(&order.id, "refund-1", "req-refund").await;
        assert_eq!(refunded.status(), OrderStatus::Refunded);
    }

    let rows = app.outbox(&order.id).await;
    let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.created",
            "order.paid",
            "order.shipped",
            "order.completed",
            "order.refunded"
        ]
    );
    let correlation: Vec<_> = rows.iter().map(|r| r.correlation_id.as_str()).collect();
    assert_eq!(
        correlation,
        [
            "req-place",
            "req-place",
            "req-ship-0",
            "req-done-0",
            "req-refund"
        ]
    );
    let priorities: Vec<_> = rows.iter().map(|r| r.priority).collect();
    assert_eq!(priorities, [0, 9, 0, 0, 0]);

    let shipped: events::OrderShipped = decode(&rows[2], "OrderShipped");
    assert_eq!(shipped.order_id, order.id);
    assert_eq!(shipped.user_id, app.customer.id);
    assert_eq!(shipped.shipment_id, shipment_id(&order.id));
    let completed: events::OrderCompleted = decode(&rows[3], "OrderCompleted");
    assert_eq!(completed.order_id, order.id);
    assert_eq!(completed.user_id, app.customer.id);
    assert_eq!(completed.total, Some(usd(TOTAL)));
    let refunded: events::OrderRefunded = decode(&rows[4], "OrderRefunded");
    assert_eq!(refunded.order_id, order.id);
    assert_eq!(refunded.user_id, app.customer.id);
    assert_eq!(refunded.previous_status(), OrderStatus::Completed);
    assert_eq!(refunded.total, Some(usd(TOTAL)));
    assert_eq!(refunded.refunded_total, Some(usd(TOTAL)));
    app.teardown().await;
}

#[tokio::test]
async fn concurrent_status_updates_write_one_event() {
    let app = spawn_app().await;
    let order = app
        .place(
            place_request(&app.customer, "race", Tier::Standard),
            "req-place",
        )
        .await;
    app.saga_finished(&order.id).await;

    let updates = (0..8).map(|i| {
        let app = &app;
        let id = order.id.clone();
        async move {
            app.update_status(&id, OrderStatus::Shipped, &format!("req-{i}"))
                .await
        }
    });
    for result in futures::future::join_all(updates).await {
        assert_eq!(result.unwrap().status(), OrderStatus::Shipped);
    }
    let types = app.event_types(&order.id).await;
    assert_eq!(types, ["order.created", "order.paid", "order.shipped"]);
    app.teardown().await;
}

/// Publishes shipment.status_changed for the order's shipment, as the delivery service's relay
/// does; returns the envelope so that a test can send the very same event again.
async fn publish_shipment(
    app: &TestApp,
    order_id: &str,
    from: ShipmentStatus,
    to: ShipmentStatus,
    again: Option<&EventEnvelope>,
) -> EventEnvelope {
    let envelope = match again {
        Some(envelope) => envelope.clone(),
        None => shopmesh_platform::events::new_envelope(
            "delivery",
            &shipment_id(order_id),
            "shipment.status_changed",
            "ShipmentStatusChanged",
            &events::ShipmentStatusChanged {
                shipment_id: shipment_id(order_id),
                order_id: order_id.to_owned(),
                from_status: from.into(),
                to_status: to.into(),
                ..Default::default()
            },
        ),
    };
    let broker = shopmesh_platform::events::Broker::new(app.events.clone(), "order-test");
    let channel = broker.publisher().await.unwrap();
    let any = envelope.payload.clone().unwrap();
    let event = shopmesh_platform::events::OutgoingEvent {
        id: envelope.event_id.parse().unwrap(),
        event_type: envelope.r#type.clone(),
        aggregate_id: envelope.aggregate_id.clone(),
        payload_type: any.type_url,
        payload: any.value,
        correlation_id: "req-courier".into(),
        priority: 0,
        occurred_at: chrono::Utc::now(),
    };
    shopmesh_platform::events::relay::publish(&channel, &app.events.exchange, "delivery", &[event])
        .await
        .unwrap();
    broker.close().await;
    envelope
}

impl TestApp {
    async fn wait_for_status(&self, order_id: &str, status: OrderStatus) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let current: i16 = sqlx::query_scalar("select status from orders where id = $1::uuid")
                .bind(order_id)
                .fetch_one(&self.db)
                .await
                .unwrap();
            if current == status as i16 {
                return;
            }
            assert!(
                Instant::now() < until,
                "the order stayed at {current}, not {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn shipment_events_move_the_order_once_each() {
    let app = spawn_app().await;
    let order = app
        .place(
            place_request(&app.customer, "shipment-events", Tier::Standard),
            "req-place",
        )
        .await;
    app.saga_finished(&order.id).await;

    // Packing changes nothing; handing over ships the order; the same event again is absorbed.
    publish_shipment(
        &app,
        &order.id,
        ShipmentStatus::Pending,
        ShipmentStatus::Packed,
        None,
    )
    .await;
    let shipped = publish_shipment(
        &app,
        &order.id,
        ShipmentStatus::Packed,
        ShipmentStatus::Shipped,
        None,
    )
    .await;
    app.wait_for_status(&order.id, OrderStatus::Shipped).await;
    publish_shipment(
        &app,
        &order.id,
        ShipmentStatus::Packed,
        ShipmentStatus::Shipped,
        Some(&shipped),
    )
    .await;
    publish_shipment(
        &app,
        &order.id,
        ShipmentStatus::OutForDelivery,
        ShipmentStatus::Delivered,
        None,
    )
    .await;
    app.wait_for_status(&order.id, OrderStatus::Completed).await;
    // A late redelivery of SHIPPED after COMPLETED changes nothing either.
    publish_shipment(
        &app,
        &order.id,
        ShipmentStatus::Packed,
        ShipmentStatus::Shipped,
        Some(&shipped),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rows = app.outbox(&order.id).await;
    let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.created",
            "order.paid",
            "order.shipped",
            "order.completed"
        ]
    );
    // The order's events carry the correlation id of the shipment event that caused them.
    assert_eq!(rows[2].correlation_id, "req-courier");
    let applied: i64 = sqlx::query_scalar("select count(*) from inbox where consumer = 'order'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(applied, 3, "three distinct shipment events were applied");
    app.teardown().await;
}

#[tokio::test]
async fn a_shipment_event_for_a_paid_order_delivered_at_once_completes_it() {
    let app = spawn_app().await;
    let order = app
        .place(
            place_request(&app.customer, "delivered-at-once", Tier::Standard),
            "req-place",
        )
        .await;
    app.saga_finished(&order.id).await;
    // An admin advanced the shipment straight to DELIVERED: the order passes through SHIPPED.
    publish_shipment(
        &app,
        &order.id,
        ShipmentStatus::LabelCreated,
        ShipmentStatus::Delivered,
        None,
    )
    .await;
    app.wait_for_status(&order.id, OrderStatus::Completed).await;
    assert_eq!(
        app.event_types(&order.id).await,
        [
            "order.created",
            "order.paid",
            "order.shipped",
            "order.completed"
        ]
    );
    app.teardown().await;
}
