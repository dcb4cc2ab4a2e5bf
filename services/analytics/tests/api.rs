//! Integration tests of the analytics service against the local PostgreSQL and RabbitMQ. Every
//! test gets a fresh database, its own exchange and queue prefix (`TestEnv`), its own run
//! directory and its own server on a free port, started through the platform's `Mesh` (the
//! harness is `shopmesh_testkit`). Events are published to the exchange as the producers'
//! relays publish them; the figures the service answers with are compared with a recount of the
//! same events done here, independently of the service's SQL.

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use prost::Message;
use shopmesh_analytics::{Analytics, CONSUMER, subscription};
use shopmesh_contracts::pb::shopmesh::analytics::v1 as pb;
use shopmesh_contracts::pb::shopmesh::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_contracts::pb::shopmesh::order::v1::{CancellationReason, OrderStatus};
use shopmesh_contracts::pb::shopmesh::user::v1::Role;
use shopmesh_platform::events::relay::{self, OutgoingEvent};
use shopmesh_platform::events::{Broker, consumer, payload_type};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_platform::time::timestamp;
use shopmesh_testkit::{PgDatabase, TestEnv, TestMesh, bad_fields, with_bearer};
use sqlx::PgPool;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

const USD: &str = "USD";

struct TestApp {
    database: PgDatabase,
    mesh: TestMesh,
    channel: Channel,
    db: PgPool,
    broker: Broker,
    admin: String,
}

async fn spawn_app() -> TestApp {
    let database = PgDatabase::new("analytics_test");
    // One lane: the consumer applies the events in the order they are published, so that a test
    // decides the order of arrival (and a repeat is handled before what follows it).
    let env = TestEnv::new("analytics")
        .serve("analytics")
        .database("analytics", database.url())
        .set("EVENTS_CONSUMER_LANES", "1");
    let services = Mesh::new(vec![Arc::new(Analytics::default()) as Arc<dyn Service>]);
    let mesh = TestMesh::start(&env, &services, &["analytics"], &[]).await;
    // The consumer declares its queue once it runs; declaring it here too (idempotent) makes
    // sure nothing the test publishes is dropped for want of a bound queue.
    let broker = Broker::new(mesh.settings.events.clone(), "analytics-test");
    let declaring = broker.channel().await.expect("broker channel");
    consumer::declare(&broker, &declaring, &subscription())
        .await
        .expect("declare the analytics queue");
    let _ = declaring.close(200, "bye".into()).await;
    let channel = mesh.channel("analytics").await;
    let db = database.pool().await;
    TestApp {
        admin: mesh.users.admin_token(),
        database,
        mesh,
        channel,
        db,
        broker,
    }
}

impl TestApp {
    fn client(&self) -> AnalyticsServiceClient<Channel> {
        AnalyticsServiceClient::new(self.channel.clone())
    }

    async fn publish(&self, events: &[OutgoingEvent]) {
        let channel = self.broker.publisher().await.expect("publisher");
        relay::publish(&channel, &self.broker.settings().exchange, "test", events)
            .await
            .expect("events published");
        let _ = channel.close(200, "bye".into()).await;
    }

    /// Waits until the consumer has applied `count` distinct events.
    async fn applied(&self, count: i64) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let applied: i64 = sqlx::query_scalar("select count(*) from inbox where consumer = $1")
                .bind(CONSUMER)
                .fetch_one(&self.db)
                .await
                .unwrap();
            if applied == count {
                return;
            }
            assert!(
                applied < count,
                "{applied} events applied, {count} published"
            );
            assert!(
                Instant::now() < until,
                "only {applied} of {count} events applied (dead-lettered?)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn summary(&self, range: pb::TimeRange) -> pb::GetSummaryResponse {
        self.client()
            .get_summary(with_bearer(
                pb::GetSummaryRequest { range: Some(range) },
                &self.admin,
            ))
            .await
            .expect("summary")
            .into_inner()
    }

    async fn days(&self, range: pb::TimeRange) -> pb::GetRevenueByDayResponse {
        self.client()
            .get_revenue_by_day(with_bearer(
                pb::GetRevenueByDayRequest { range: Some(range) },
                &self.admin,
            ))
            .await
            .expect("revenue by day")
            .into_inner()
    }

    async fn top(
        &self,
        range: pb::TimeRange,
        order_by: pb::TopProductsOrder,
        limit: i32,
    ) -> pb::GetTopProductsResponse {
        self.client()
            .get_top_products(with_bearer(
                pb::GetTopProductsRequest {
                    range: Some(range),
                    limit,
                    order_by: order_by.into(),
                },
                &self.admin,
            ))
            .await
            .expect("top products")
            .into_inner()
    }

    async fn stop(self) {
        self.broker.close().await;
        self.db.close().await;
        self.mesh.stop().await;
        self.database.drop().await;
    }
}

// ----- the input: events as the producers publish them -----

fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, day, hour, minute, second)
        .unwrap()
}

fn date(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 2, day).unwrap()
}

/// The whole UTC days `first..=last` of February 2026.
fn days(first: u32, last: u32) -> pb::TimeRange {
    span(
        at(first, 0, 0, 0),
        at(last, 0, 0, 0) + chrono::Duration::days(1),
    )
}

fn span(start: DateTime<Utc>, end: DateTime<Utc>) -> pb::TimeRange {
    pb::TimeRange {
        start_time: Some(timestamp(start)),
        end_time: Some(timestamp(end)),
    }
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.into(),
    })
}

fn event<M: Message>(
    kind: &str,
    name: &str,
    aggregate: &str,
    at: DateTime<Utc>,
    payload: &M,
) -> OutgoingEvent {
    OutgoingEvent {
        id: Uuid::now_v7(),
        event_type: kind.into(),
        aggregate_id: aggregate.into(),
        payload_type: payload_type(name),
        payload: payload.encode_to_vec(),
        correlation_id: String::new(),
        priority: 0,
        occurred_at: at,
    }
}

/// A product of the catalog: id, SKU, name, unit price.
#[derive(Clone, Copy)]
struct Product(&'static str, &'static str, &'static str, i64);

const KETTLE: Product = Product("p-kettle", "KET-1", "Kettle", 2500);
const MUG: Product = Product("p-mug", "MUG-1", "Mug", 800);
const TEAPOT: Product = Product("p-teapot", "TEA-1", "Teapot", 4000);
const SPOON: Product = Product("p-spoon", "SPO-1", "Spoon", 300);

/// One order and the events that tell it.
struct Order {
    id: Uuid,
    user: String,
    currency: &'static str,
    lines: Vec<events::OrderLine>,
    total: i64,
}

impl Order {
    fn new(user: &str, currency: &'static str, lines: &[(Product, i32)]) -> Self {
        let lines: Vec<events::OrderLine> = lines
            .iter()
            .map(
                |(Product(id, sku, name, price), quantity)| events::OrderLine {
                    product_id: (*id).into(),
                    sku: (*sku).into(),
                    product_name: (*name).into(),
                    unit_price: money(*price, currency),
                    quantity: *quantity,
                    line_total: money(price * i64::from(*quantity), currency),
                },
            )
            .collect();
        let total = lines
            .iter()
            .map(|line| line.line_total.as_ref().unwrap().amount_minor)
            .sum();
        Self {
            id: Uuid::now_v7(),
            user: user.into(),
            currency,
            lines,
            total,
        }
    }

    fn aggregate(&self) -> String {
        self.id.to_string()
    }

    fn total(&self) -> Option<Money> {
        money(self.total, self.currency)
    }

    fn created(&self, at: DateTime<Utc>) -> OutgoingEvent {
        event(
            "order.created",
            "OrderCreated",
            &self.aggregate(),
            at,
            &events::OrderCreated {
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                lines: self.lines.clone(),
                total: self.total(),
                ..Default::default()
            },
        )
    }

    fn paid(&self, at: DateTime<Utc>) -> OutgoingEvent {
        event(
            "order.paid",
            "OrderPaid",
            &self.aggregate(),
            at,
            &events::OrderPaid {
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                lines: self.lines.clone(),
                total: self.total(),
                payment_id: format!("pay-{}", self.id),
                ..Default::default()
            },
        )
    }

    fn shipped(&self, at: DateTime<Utc>) -> OutgoingEvent {
        event(
            "order.shipped",
            "OrderShipped",
            &self.aggregate(),
            at,
            &events::OrderShipped {
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                ..Default::default()
            },
        )
    }

    fn completed(&self, at: DateTime<Utc>) -> OutgoingEvent {
        event(
            "order.completed",
            "OrderCompleted",
            &self.aggregate(),
            at,
            &events::OrderCompleted {
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                total: self.total(),
            },
        )
    }

    fn cancelled(&self, at: DateTime<Utc>, previous: OrderStatus, refunded: i64) -> OutgoingEvent {
        event(
            "order.cancelled",
            "OrderCancelled",
            &self.aggregate(),
            at,
            &events::OrderCancelled {
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                previous_status: previous.into(),
                reason: CancellationReason::CustomerRequested.into(),
                total: self.total(),
                refunded_total: money(refunded, self.currency),
                ..Default::default()
            },
        )
    }

    fn refunded(&self, at: DateTime<Utc>) -> OutgoingEvent {
        event(
            "order.refunded",
            "OrderRefunded",
            &self.aggregate(),
            at,
            &events::OrderRefunded {
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                previous_status: OrderStatus::Paid.into(),
                total: self.total(),
                refunded_total: self.total(),
            },
        )
    }

    fn payment_succeeded(&self, at: DateTime<Utc>) -> OutgoingEvent {
        let payment_id = format!("pay-{}", self.id);
        event(
            "payment.succeeded",
            "PaymentSucceeded",
            &payment_id.clone(),
            at,
            &events::PaymentSucceeded {
                payment_id,
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                amount: self.total(),
            },
        )
    }

    fn payment_failed(&self, at: DateTime<Utc>) -> OutgoingEvent {
        let payment_id = format!("pay-{}", self.id);
        event(
            "payment.failed",
            "PaymentFailed",
            &payment_id.clone(),
            at,
            &events::PaymentFailed {
                payment_id,
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                amount: self.total(),
                decline_code: "card_declined".into(),
                ..Default::default()
            },
        )
    }

    fn payment_refunded(&self, at: DateTime<Utc>, amount: i64) -> OutgoingEvent {
        let payment_id = format!("pay-{}", self.id);
        event(
            "payment.refunded",
            "PaymentRefunded",
            &payment_id.clone(),
            at,
            &events::PaymentRefunded {
                payment_id,
                refund_id: Uuid::now_v7().to_string(),
                order_id: self.aggregate(),
                user_id: self.user.clone(),
                amount: money(amount, self.currency),
                refunded_amount: money(amount, self.currency),
                fully_refunded: amount == self.total,
                ..Default::default()
            },
        )
    }
}

fn registered(user: &str, role: Role, at: DateTime<Utc>) -> OutgoingEvent {
    event(
        "user.registered",
        "UserRegistered",
        user,
        at,
        &events::UserRegistered {
            user_id: user.into(),
            email: format!("{user}@example.com"),
            role: role.into(),
            ..Default::default()
        },
    )
}

/// The shop's days: paid, shipped, completed, cancelled before and after payment, refunded,
/// one order paid after midnight of the day it was placed, one still in checkout, one in
/// another currency, one outside the range; order.paid of one order before its order.created,
/// another's order.paid published twice.
fn the_shop() -> Vec<OutgoingEvent> {
    let a = Order::new("u1", USD, &[(KETTLE, 2), (MUG, 1)]);
    let b = Order::new("u2", USD, &[(TEAPOT, 1)]);
    let c = Order::new("u3", USD, &[(KETTLE, 1)]);
    let d = Order::new("u1", USD, &[(MUG, 3), (SPOON, 2)]);
    let e = Order::new("u4", USD, &[(TEAPOT, 1), (SPOON, 1)]);
    let f = Order::new("u2", USD, &[(KETTLE, 1)]);
    let g = Order::new("u3", USD, &[(MUG, 1)]);
    let h = Order::new("u4", USD, &[(KETTLE, 1)]);
    let i = Order::new("u1", USD, &[(TEAPOT, 2)]);
    let j = Order::new("u2", "EUR", &[(TEAPOT, 5)]);
    let l = Order::new("u3", USD, &[(SPOON, 4)]);
    let e_paid = e.paid(at(11, 10, 0, 2));
    vec![
        registered("u1", Role::Customer, at(10, 8, 0, 0)),
        registered("u2", Role::Customer, at(10, 8, 30, 0)),
        registered("admin-1", Role::Admin, at(10, 8, 45, 0)),
        // A: paid, shipped on day 10, completed on day 11.
        a.created(at(10, 9, 0, 0)),
        a.payment_succeeded(at(10, 9, 0, 1)),
        a.paid(at(10, 9, 0, 2)),
        a.shipped(at(10, 15, 0, 0)),
        // B: paid on day 10, refunded in full on day 11.
        b.created(at(10, 10, 0, 0)),
        b.payment_succeeded(at(10, 10, 0, 1)),
        b.paid(at(10, 10, 0, 2)),
        // C: declined, cancelled.
        c.created(at(10, 11, 0, 0)),
        c.payment_failed(at(10, 11, 0, 1)),
        c.cancelled(at(10, 11, 0, 2), OrderStatus::Created, 0),
        // J: another currency: in no figure.
        j.created(at(10, 12, 0, 0)),
        j.paid(at(10, 12, 0, 2)),
        // H: placed just before midnight, paid just after.
        h.created(at(10, 23, 59, 50)),
        h.payment_succeeded(at(11, 0, 0, 4)),
        h.paid(at(11, 0, 0, 5)),
        registered("u3", Role::Customer, at(11, 8, 0, 0)),
        // D: order.paid (and its shipment) arrive before order.created.
        d.paid(at(11, 9, 0, 2)),
        d.shipped(at(11, 14, 0, 0)),
        d.created(at(11, 9, 0, 0)),
        a.completed(at(11, 10, 0, 0)),
        // E: its order.paid published twice.
        e.created(at(11, 10, 0, 0)),
        e_paid.clone(),
        e_paid,
        // F: cancelled by the customer before payment.
        f.created(at(11, 11, 0, 0)),
        f.cancelled(at(11, 11, 30, 0), OrderStatus::Created, 0),
        b.payment_refunded(at(11, 12, 0, 0), 4000),
        b.refunded(at(11, 12, 0, 1)),
        // L: paid, then cancelled and refunded.
        l.created(at(11, 13, 0, 0)),
        l.paid(at(11, 13, 0, 2)),
        l.payment_refunded(at(11, 13, 30, 0), 1200),
        l.cancelled(at(11, 13, 30, 1), OrderStatus::Paid, 1200),
        // G: still in checkout.
        g.created(at(11, 23, 59, 30)),
        // I: days later, outside the main range.
        registered("u4", Role::Customer, at(14, 8, 0, 0)),
        i.created(at(14, 9, 0, 0)),
        i.paid(at(14, 9, 0, 2)),
    ]
}

// ----- the recount: the figures straight from the events -----

#[derive(Default, Clone)]
struct Told {
    user: String,
    currency: String,
    total: i64,
    placed_at: Option<DateTime<Utc>>,
    paid_at: Option<DateTime<Utc>>,
    /// The status of the latest event (by occurred_at).
    status: Option<(DateTime<Utc>, OrderStatus)>,
    lines: Vec<events::OrderLine>,
}

/// The sales of one product, with its SKU and name at the latest sale.
struct Sales {
    units: i64,
    revenue: i64,
    latest: DateTime<Utc>,
    sku: String,
    name: String,
}

struct Recount {
    orders: BTreeMap<String, Told>,
    /// (when, amount, currency)
    refunds: Vec<(DateTime<Utc>, i64, String)>,
    registrations: Vec<DateTime<Utc>>,
}

fn decode<M: Message + Default>(event: &OutgoingEvent) -> M {
    M::decode(event.payload.as_slice()).unwrap()
}

impl Recount {
    fn of(published: &[OutgoingEvent]) -> Self {
        let mut seen = HashSet::new();
        let mut orders: BTreeMap<String, Told> = BTreeMap::new();
        let mut refunds = Vec::new();
        let mut registrations = Vec::new();
        for event in published {
            if !seen.insert(event.id) {
                continue;
            }
            let t = event.occurred_at;
            let set = |orders: &mut BTreeMap<String, Told>, order_id: &str, status| {
                let told = orders.entry(order_id.to_owned()).or_default();
                if told.status.is_none_or(|(when, _)| when < t) {
                    told.status = Some((t, status));
                }
            };
            match event.event_type.as_str() {
                "order.created" => {
                    let p: events::OrderCreated = decode(event);
                    set(&mut orders, &p.order_id, OrderStatus::Created);
                    let told = orders.get_mut(&p.order_id).unwrap();
                    told.placed_at = Some(t);
                    told.user = p.user_id;
                    told.total = p.total.clone().unwrap().amount_minor;
                    told.currency = p.total.unwrap().currency;
                    told.lines = p.lines;
                }
                "order.paid" => {
                    let p: events::OrderPaid = decode(event);
                    set(&mut orders, &p.order_id, OrderStatus::Paid);
                    orders.get_mut(&p.order_id).unwrap().paid_at = Some(t);
                }
                "order.shipped" => {
                    let p: events::OrderShipped = decode(event);
                    set(&mut orders, &p.order_id, OrderStatus::Shipped);
                }
                "order.completed" => {
                    let p: events::OrderCompleted = decode(event);
                    set(&mut orders, &p.order_id, OrderStatus::Completed);
                }
                "order.cancelled" => {
                    let p: events::OrderCancelled = decode(event);
                    set(&mut orders, &p.order_id, OrderStatus::Cancelled);
                }
                "order.refunded" => {
                    let p: events::OrderRefunded = decode(event);
                    set(&mut orders, &p.order_id, OrderStatus::Refunded);
                }
                "payment.refunded" => {
                    let p: events::PaymentRefunded = decode(event);
                    let amount = p.amount.unwrap();
                    refunds.push((t, amount.amount_minor, amount.currency));
                }
                "user.registered" => {
                    let p: events::UserRegistered = decode(event);
                    if p.role != i32::from(Role::Admin) {
                        registrations.push(t);
                    }
                }
                _ => {}
            }
        }
        Self {
            orders,
            refunds,
            registrations,
        }
    }

    fn shop_orders(&self) -> impl Iterator<Item = &Told> {
        self.orders.values().filter(|o| o.currency == USD)
    }

    fn summary(&self, range: &pb::TimeRange) -> pb::GetSummaryResponse {
        let inside = within(range);
        let placed: Vec<&Told> = self
            .shop_orders()
            .filter(|o| o.placed_at.is_some_and(inside))
            .collect();
        let paid: Vec<&Told> = self
            .shop_orders()
            .filter(|o| o.paid_at.is_some_and(inside))
            .collect();
        let revenue: i64 = paid.iter().map(|o| o.total).sum();
        let customers: BTreeSet<&str> = paid.iter().map(|o| o.user.as_str()).collect();
        let placed_and_paid = placed.iter().filter(|o| o.paid_at.is_some()).count() as i64;
        let by_status = [
            OrderStatus::Created,
            OrderStatus::Paid,
            OrderStatus::Shipped,
            OrderStatus::Completed,
            OrderStatus::Cancelled,
            OrderStatus::Refunded,
        ]
        .into_iter()
        .map(|status| {
            let these: Vec<&&Told> = placed
                .iter()
                .filter(|o| o.status.unwrap().1 == status)
                .collect();
            pb::StatusSummary {
                status: status.into(),
                order_count: these.len() as i64,
                amount: money(these.iter().map(|o| o.total).sum(), USD),
            }
        })
        .collect();
        let order_count = paid.len() as i64;
        pb::GetSummaryResponse {
            order_count,
            revenue: money(revenue, USD),
            refunded: money(
                self.refunds
                    .iter()
                    .filter(|(t, _, currency)| inside(*t) && currency == USD)
                    .map(|(_, amount, _)| amount)
                    .sum(),
                USD,
            ),
            customer_count: customers.len() as i64,
            new_customer_count: self.registrations.iter().filter(|t| inside(**t)).count() as i64,
            average_order_value: money(
                if order_count > 0 {
                    revenue / order_count
                } else {
                    0
                },
                USD,
            ),
            placed_order_count: placed.len() as i64,
            conversion: Some(pb::Conversion {
                started: placed.len() as i64,
                paid: placed_and_paid,
                rate: if placed.is_empty() {
                    0.0
                } else {
                    placed_and_paid as f64 / placed.len() as f64
                },
            }),
            by_status,
            currency: USD.into(),
        }
    }

    fn days(&self, first: u32, last: u32) -> pb::GetRevenueByDayResponse {
        let days = (first..=last)
            .map(|day| {
                let range = days(day, day);
                let inside = within(&range);
                let paid: Vec<&Told> = self
                    .shop_orders()
                    .filter(|o| o.paid_at.is_some_and(inside))
                    .collect();
                pb::DailyRevenue {
                    date: date(day).to_string(),
                    order_count: paid.len() as i64,
                    revenue: money(paid.iter().map(|o| o.total).sum(), USD),
                    placed_order_count: self
                        .shop_orders()
                        .filter(|o| o.placed_at.is_some_and(inside))
                        .count() as i64,
                    refunded: money(
                        self.refunds
                            .iter()
                            .filter(|(t, _, currency)| inside(*t) && currency == USD)
                            .map(|(_, amount, _)| amount)
                            .sum(),
                        USD,
                    ),
                }
            })
            .collect();
        pb::GetRevenueByDayResponse {
            days,
            currency: USD.into(),
        }
    }

    fn top(
        &self,
        range: &pb::TimeRange,
        order_by: pb::TopProductsOrder,
        limit: usize,
    ) -> pb::GetTopProductsResponse {
        let inside = within(range);
        let mut sales: BTreeMap<String, Sales> = BTreeMap::new();
        for order in self.shop_orders().filter(|o| o.paid_at.is_some_and(inside)) {
            let when = order.paid_at.unwrap();
            for line in &order.lines {
                let entry = sales.entry(line.product_id.clone()).or_insert(Sales {
                    units: 0,
                    revenue: 0,
                    latest: when,
                    sku: line.sku.clone(),
                    name: line.product_name.clone(),
                });
                entry.units += i64::from(line.quantity);
                entry.revenue += line.line_total.as_ref().unwrap().amount_minor;
                if when > entry.latest {
                    entry.latest = when;
                    entry.sku = line.sku.clone();
                    entry.name = line.product_name.clone();
                }
            }
        }
        let mut products: Vec<pb::TopProduct> = sales
            .into_iter()
            .map(|(product_id, sales)| pb::TopProduct {
                product_id,
                sku: sales.sku,
                name: sales.name,
                units_sold: sales.units,
                revenue: money(sales.revenue, USD),
            })
            .collect();
        let revenue = |p: &pb::TopProduct| p.revenue.as_ref().unwrap().amount_minor;
        products.sort_by(|x, y| {
            let key = |p: &pb::TopProduct| match order_by {
                pb::TopProductsOrder::Revenue => (revenue(p), p.units_sold),
                _ => (p.units_sold, revenue(p)),
            };
            key(y).cmp(&key(x)).then(x.product_id.cmp(&y.product_id))
        });
        products.truncate(limit);
        pb::GetTopProductsResponse {
            products,
            currency: USD.into(),
        }
    }
}

/// Whether a time falls in the half-open range.
fn within(range: &pb::TimeRange) -> impl Fn(DateTime<Utc>) -> bool + Copy {
    let start = shopmesh_platform::time::optional_time(range.start_time).unwrap();
    let end = shopmesh_platform::time::optional_time(range.end_time).unwrap();
    move |t| start <= t && t < end
}

// ----- the tests -----

#[tokio::test]
async fn the_figures_are_a_recount_of_the_events() {
    let app = spawn_app().await;
    let published = the_shop();
    app.publish(&published).await;
    let distinct: HashSet<Uuid> = published.iter().map(|e| e.id).collect();
    assert_eq!(distinct.len() + 1, published.len(), "one event twice");
    app.applied(distinct.len() as i64).await;
    let recount = Recount::of(&published);

    // The two main days, each day alone, the day outside, an empty day, and a range that cuts
    // through days (the midnight order is placed inside it and paid outside).
    for range in [
        days(10, 11),
        days(10, 10),
        days(11, 11),
        days(14, 14),
        days(20, 20),
        days(1, 28),
        span(at(10, 12, 0, 0), at(11, 0, 0, 0)),
    ] {
        let summary = app.summary(range).await;
        assert_eq!(summary, recount.summary(&range), "{range:?}");
    }

    // Spot checks of the recount itself against the story, so that both cannot be wrong alike:
    // A, B, H (paid after midnight), D, E (once), L are paid on days 10-11; C, F, G are not.
    let main = app.summary(days(10, 11)).await;
    assert_eq!(main.placed_order_count, 9);
    assert_eq!(main.order_count, 6);
    assert_eq!(
        main.revenue.as_ref().unwrap().amount_minor,
        5800 + 4000 + 2500 + 3000 + 4300 + 1200
    );
    assert_eq!(main.refunded.as_ref().unwrap().amount_minor, 4000 + 1200);
    assert_eq!(main.customer_count, 4);
    assert_eq!(main.new_customer_count, 3);
    assert_eq!(
        main.average_order_value.as_ref().unwrap().amount_minor,
        20800 / 6
    );
    let conversion = main.conversion.as_ref().unwrap();
    assert_eq!((conversion.started, conversion.paid), (9, 6));
    let by_status: Vec<(OrderStatus, i64, i64)> = main
        .by_status
        .iter()
        .map(|s| {
            (
                s.status(),
                s.order_count,
                s.amount.as_ref().unwrap().amount_minor,
            )
        })
        .collect();
    assert_eq!(
        by_status,
        [
            (OrderStatus::Created, 1, 800),
            (OrderStatus::Paid, 2, 4300 + 2500),
            (OrderStatus::Shipped, 1, 3000),
            (OrderStatus::Completed, 1, 5800),
            (OrderStatus::Cancelled, 3, 2500 + 2500 + 1200),
            (OrderStatus::Refunded, 1, 4000),
        ]
    );
    // Day 10: H is placed on it but paid on day 11.
    let day10 = app.summary(days(10, 10)).await;
    assert_eq!((day10.placed_order_count, day10.order_count), (4, 2));
    assert_eq!(app.summary(days(14, 14)).await.order_count, 1);
    let empty = app.summary(days(20, 20)).await;
    assert_eq!(empty.order_count, 0);
    assert_eq!(empty.average_order_value.unwrap().amount_minor, 0);
    assert_eq!(empty.conversion.unwrap().rate, 0.0);

    // Per day, days without orders included.
    let series = app.days(days(9, 15)).await;
    assert_eq!(series, recount.days(9, 15));
    assert_eq!(series.days.len(), 7);
    assert_eq!(series.days[0].date, "2026-02-09");
    assert_eq!(series.days[2].order_count, 4);
    assert_eq!(series.days[2].placed_order_count, 5);

    // Top products both ways, with and without a limit.
    for range in [days(10, 11), days(10, 14), days(11, 11), days(20, 20)] {
        for order_by in [
            pb::TopProductsOrder::Unspecified,
            pb::TopProductsOrder::Units,
            pb::TopProductsOrder::Revenue,
        ] {
            assert_eq!(
                app.top(range, order_by, 0).await,
                recount.top(&range, order_by, 10),
                "{range:?} {order_by:?}"
            );
            assert_eq!(
                app.top(range, order_by, 2).await,
                recount.top(&range, order_by, 2),
                "{range:?} {order_by:?}"
            );
        }
    }
    let by_units = app.top(days(10, 11), pb::TopProductsOrder::Units, 0).await;
    let ids: Vec<&str> = by_units
        .products
        .iter()
        .map(|p| p.product_id.as_str())
        .collect();
    // Spoons 2+1+4, mugs 1+3, kettles 2+1, teapots 1+1.
    assert_eq!(ids, ["p-spoon", "p-mug", "p-kettle", "p-teapot"]);
    let by_revenue = app
        .top(days(10, 11), pb::TopProductsOrder::Revenue, 1)
        .await;
    assert_eq!(by_revenue.products[0].product_id, "p-teapot");
    assert_eq!(by_revenue.products[0].name, "Teapot");
    assert_eq!(by_revenue.products[0].units_sold, 2);

    app.stop().await;
}

/// The columns of an order's fact row and its lines, without its id.
async fn fact_row(db: &PgPool, order_id: Uuid) -> (String, String, bool, String, i64, i64, String) {
    let row: (
        String,
        DateTime<Utc>,
        bool,
        Option<DateTime<Utc>>,
        String,
        i64,
        String,
    ) = sqlx::query_as(
        "select user_id, placed_at, placed_known, paid_at, status, total_minor, currency \
             from order_facts where order_id = $1",
    )
    .bind(order_id)
    .fetch_one(db)
    .await
    .unwrap();
    let lines: Vec<(String, i32, i64)> = sqlx::query_as(
        "select product_id, quantity, line_total_minor from order_fact_lines \
         where order_id = $1 order by line_no",
    )
    .bind(order_id)
    .fetch_all(db)
    .await
    .unwrap();
    (
        row.0,
        row.1.to_rfc3339(),
        row.2,
        format!("{:?} {}", row.3, row.4),
        row.5,
        lines.len() as i64,
        format!("{lines:?} {}", row.6),
    )
}

#[tokio::test]
async fn an_order_ends_the_same_whatever_order_its_events_arrive_in() {
    let app = spawn_app().await;
    let lines = [(KETTLE, 1), (SPOON, 3)];
    // The same story three times: in order, reversed, and shuffled.
    let story = |order: &Order| {
        vec![
            order.created(at(12, 9, 0, 0)),
            order.paid(at(12, 9, 0, 2)),
            order.shipped(at(12, 12, 0, 0)),
            order.completed(at(13, 9, 0, 0)),
            order.refunded(at(13, 18, 0, 0)),
        ]
    };
    let forward = Order::new("u9", USD, &lines);
    let backward = Order::new("u9", USD, &lines);
    let shuffled = Order::new("u9", USD, &lines);
    let mut published = story(&forward);
    published.extend(story(&backward).into_iter().rev());
    let mut mixed = story(&shuffled);
    mixed.swap(0, 3);
    mixed.swap(1, 4);
    published.extend(mixed);
    app.publish(&published).await;
    app.applied(published.len() as i64).await;

    let expected = fact_row(&app.db, forward.id).await;
    assert_eq!(expected.0, "u9");
    assert_eq!(expected.1, at(12, 9, 0, 0).to_rfc3339());
    assert!(expected.2, "placed by order.created");
    assert!(expected.3.ends_with("REFUNDED"), "{}", expected.3);
    assert_eq!(expected.4, 2500 + 900);
    assert_eq!(expected.5, 2);
    assert_eq!(fact_row(&app.db, backward.id).await, expected);
    assert_eq!(fact_row(&app.db, shuffled.id).await, expected);

    // Before order.created arrives, the order is placed at the earliest time seen so far.
    let early = Order::new("u8", USD, &lines);
    app.publish(&[early.paid(at(12, 9, 0, 2)), early.shipped(at(12, 12, 0, 0))])
        .await;
    app.applied(published.len() as i64 + 2).await;
    let provisional = fact_row(&app.db, early.id).await;
    assert_eq!(provisional.1, at(12, 9, 0, 2).to_rfc3339());
    assert!(!provisional.2);
    assert_eq!(
        provisional.3,
        format!("Some({:?}) SHIPPED", at(12, 9, 0, 2))
    );
    app.publish(&[early.created(at(12, 9, 0, 0))]).await;
    app.applied(published.len() as i64 + 3).await;
    let settled = fact_row(&app.db, early.id).await;
    assert_eq!(settled.1, at(12, 9, 0, 0).to_rfc3339());
    assert!(settled.2);
    let summary = app.summary(days(12, 12)).await;
    assert_eq!(summary.placed_order_count, 4);
    assert_eq!(summary.order_count, 4);

    app.stop().await;
}

#[tokio::test]
async fn only_admins_see_the_figures() {
    let app = spawn_app().await;
    let customer = app.mesh.users.customer_token(&Uuid::now_v7().to_string());
    let mut client = app.client();
    let range = Some(days(10, 11));
    let denied = [
        client
            .get_summary(with_bearer(pb::GetSummaryRequest { range }, &customer))
            .await
            .unwrap_err(),
        client
            .get_revenue_by_day(with_bearer(pb::GetRevenueByDayRequest { range }, &customer))
            .await
            .unwrap_err(),
        client
            .get_top_products(with_bearer(
                pb::GetTopProductsRequest {
                    range,
                    ..Default::default()
                },
                &customer,
            ))
            .await
            .unwrap_err(),
    ];
    for status in denied {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let anonymous = client
        .get_summary(pb::GetSummaryRequest { range })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    // The admin's answer for a range without events: zeros in the shop currency.
    let summary = app.summary(days(10, 11)).await;
    assert_eq!(summary.currency, USD);
    assert_eq!(summary.revenue.unwrap().currency, USD);
    assert_eq!(summary.by_status.len(), 6);
    app.stop().await;
}

#[tokio::test]
async fn bad_questions_name_their_fields() {
    let app = spawn_app().await;
    let mut client = app.client();
    let summary =
        |range: Option<pb::TimeRange>| with_bearer(pb::GetSummaryRequest { range }, &app.admin);
    let cases = [
        (summary(None), vec!["range"]),
        (
            summary(Some(pb::TimeRange::default())),
            vec!["range.start_time", "range.end_time"],
        ),
        (
            summary(Some(span(at(11, 0, 0, 0), at(10, 0, 0, 0)))),
            vec!["range.end_time"],
        ),
        (
            summary(Some(span(
                at(1, 0, 0, 0),
                at(1, 0, 0, 0) + chrono::Duration::days(367),
            ))),
            vec!["range"],
        ),
    ];
    for (request, fields) in cases {
        let status = client.get_summary(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), fields);
    }
    let status = client
        .get_revenue_by_day(with_bearer(
            pb::GetRevenueByDayRequest { range: None },
            &app.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["range"]);
    let status = client
        .get_top_products(with_bearer(
            pb::GetTopProductsRequest {
                range: Some(days(10, 10)),
                limit: 101,
                order_by: 7,
            },
            &app.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["limit", "order_by"]);
    app.stop().await;
}
