//! Time to shipment by tier under a backlog: the delivery service's packing station (the
//! `fulfilment` consumer of order.paid on a RabbitMQ priority queue) against the local RabbitMQ
//! and PostgreSQL. Run with `cargo bench -p shopmesh-delivery --bench fulfilment`.
//!
//! The bench starts the delivery service on a fresh database (dropped at the end) with its own
//! exchange and queues, creates the shipments of 300 standard and 30 VIP orders, then publishes
//! their order.paid one every `ARRIVAL` ms, as the order service's relay would (priority 1 and 9,
//! publisher confirms), with the VIP orders spread evenly through the stream. Orders arrive
//! faster than the station packs them (one per `PACKING` ms plus its transaction), so a backlog
//! of standard orders builds up, which every VIP order arriving mid-backlog overtakes. For each
//! order it measures the time from its publication to the shipment's `fulfilled_at`, and prints
//! p50, p99 and max per tier.
//!
//! Knobs (environment): FULFILMENT_BENCH_STANDARD (300), FULFILMENT_BENCH_VIP (30),
//! FULFILMENT_BENCH_PACKING_MS (10), FULFILMENT_BENCH_ARRIVAL_MS (5); FULFILMENT_BENCH_VERBOSE
//! (set) also lists when each VIP order was published and packed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use shopmesh_contracts::pb::shopmesh::delivery::v1 as pb;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_client::DeliveryServiceClient;
use shopmesh_contracts::pb::shopmesh::events::v1::OrderPaid;
use shopmesh_contracts::pb::shopmesh::user::v1::Tier as PbTier;
use shopmesh_delivery::{Delivery, DeliveryConfig, fulfilment};
use shopmesh_platform::events::relay::{self, OutgoingEvent};
use shopmesh_platform::events::{Broker, PRIORITY_STANDARD, PRIORITY_VIP, consumer, payload_type};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::{NotStarted, PgDatabase, TestEnv, TestMesh};
use uuid::Uuid;

/// Longest the backlog may take to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

struct Knobs {
    standard: usize,
    vip: usize,
    packing: Duration,
    arrival: Duration,
}

fn knob(key: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(key) {
        Ok(raw) => raw
            .parse()
            .with_context(|| format!("{key} must be a whole number, not {raw:?}")),
        Err(_) => Ok(default),
    }
}

impl Knobs {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            standard: usize::try_from(knob("FULFILMENT_BENCH_STANDARD", 300)?)?,
            vip: usize::try_from(knob("FULFILMENT_BENCH_VIP", 30)?)?,
            packing: Duration::from_millis(knob("FULFILMENT_BENCH_PACKING_MS", 10)?),
            arrival: Duration::from_millis(knob("FULFILMENT_BENCH_ARRIVAL_MS", 5)?),
        })
    }

    /// The tiers in arrival order: the VIP orders spread evenly among the standard ones (the
    /// first after half a gap), so that each arrives with a backlog ahead of it.
    fn arrivals(&self) -> Vec<PbTier> {
        let mut tiers = Vec::with_capacity(self.standard + self.vip);
        let mut placed_vip = 0;
        for i in 0..self.standard {
            // VIP order j goes after (j + 1/2) * standard / vip standard ones.
            while placed_vip < self.vip && (2 * placed_vip + 1) * self.standard <= 2 * i * self.vip
            {
                tiers.push(PbTier::Vip);
                placed_vip += 1;
            }
            tiers.push(PbTier::Standard);
        }
        tiers.extend(std::iter::repeat_n(PbTier::Vip, self.vip - placed_vip));
        tiers
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

fn order_paid(shipment: &pb::Shipment) -> OutgoingEvent {
    let vip = shipment.tier() == PbTier::Vip;
    OutgoingEvent {
        id: Uuid::now_v7(),
        event_type: "order.paid".into(),
        aggregate_id: shipment.order_id.clone(),
        payload_type: payload_type("OrderPaid"),
        payload: OrderPaid {
            order_id: shipment.order_id.clone(),
            user_id: shipment.user_id.clone(),
            tier: shipment.tier,
            shipment_id: shipment.id.clone(),
            ..OrderPaid::default()
        }
        .encode_to_vec(),
        correlation_id: String::new(),
        priority: if vip { PRIORITY_VIP } else { PRIORITY_STANDARD },
        occurred_at: Utc::now(),
    }
}

/// Nearest-rank percentile of sorted `values`, in milliseconds.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Measured {
    tier: PbTier,
    published_at: DateTime<Utc>,
    fulfilled_at: DateTime<Utc>,
}

async fn run() -> anyhow::Result<()> {
    let knobs = Knobs::from_env()?;
    let database = PgDatabase::new("delivery_fulfilment_bench");
    let env = TestEnv::new("delivery-fulfilment-bench")
        .serve("delivery")
        .database("delivery", database.url())
        .set("ORDER_GRPC_URL", "http://127.0.0.1:1")
        .set("RUST_LOG", "error");
    let services = Mesh::new(vec![
        Arc::new(Delivery::with_config(DeliveryConfig {
            courier_enabled: false,
            packing: knobs.packing,
            ..DeliveryConfig::default()
        })) as Arc<dyn Service>,
        Arc::new(NotStarted::like(
            "order",
            50054,
            &["shopmesh.order.v1.OrderService"],
        )),
    ]);
    let mesh = TestMesh::start(&env, &services, &["delivery"], &[]).await;
    let result = measure(&knobs, &mesh, &database).await;
    mesh.stop().await;
    database.drop().await;
    let measured = result?;

    println!(
        "fulfilment: {} standard + {} VIP order.paid, one published every {} ms, packing {} ms \
         per order, prefetch 1, x-max-priority 10",
        knobs.standard,
        knobs.vip,
        knobs.arrival.as_millis(),
        knobs.packing.as_millis()
    );
    if std::env::var_os("FULFILMENT_BENCH_VERBOSE").is_some() {
        let mut vips: Vec<&Measured> = measured.iter().filter(|m| m.tier == PbTier::Vip).collect();
        vips.sort_by_key(|m| m.published_at);
        for m in vips {
            println!(
                "VIP published {} fulfilled {}",
                m.published_at, m.fulfilled_at
            );
        }
    }
    let first = measured.iter().map(|m| m.published_at).min();
    let last_published = measured.iter().map(|m| m.published_at).max();
    if let (Some(first), Some(last)) = (first, last_published) {
        println!(
            "published in {:.2} s",
            (last - first).num_milliseconds() as f64 / 1000.0
        );
    }
    let last = measured.iter().map(|m| m.fulfilled_at).max();
    if let (Some(first), Some(last)) = (first, last) {
        let seconds = (last - first).num_milliseconds() as f64 / 1000.0;
        println!(
            "{} orders packed in {seconds:.2} s ({:.0} orders/s)",
            measured.len(),
            measured.len() as f64 / seconds.max(0.001)
        );
    }
    println!();
    println!("time to shipment (publish -> fulfilled_at), ms");
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>10}",
        "tier", "orders", "p50", "p99", "max"
    );
    for (name, tier) in [("VIP", PbTier::Vip), ("standard", PbTier::Standard)] {
        let mut millis: Vec<f64> = measured
            .iter()
            .filter(|m| m.tier == tier)
            .map(|m| {
                (m.fulfilled_at - m.published_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1000.0
            })
            .collect();
        millis.sort_by(f64::total_cmp);
        println!(
            "{:<10} {:>6} {:>10.1} {:>10.1} {:>10.1}",
            name,
            millis.len(),
            percentile(&millis, 0.50),
            percentile(&millis, 0.99),
            millis.last().copied().unwrap_or(0.0)
        );
    }
    Ok(())
}

async fn measure(
    knobs: &Knobs,
    mesh: &TestMesh,
    database: &PgDatabase,
) -> anyhow::Result<Vec<Measured>> {
    let broker = Broker::new(mesh.settings.events.clone(), "fulfilment-bench");
    let publisher = broker.publisher().await?;
    // Declared before anything is published (the consumer may not have connected yet).
    consumer::declare(&broker, &publisher, &fulfilment::subscription()).await?;
    let mut client = DeliveryServiceClient::new(mesh.channel("delivery").await);
    let user = mesh.users.customer();

    let mut shipments = Vec::new();
    for tier in knobs.arrivals() {
        let request = pb::CreateShipmentRequest {
            order_id: Uuid::now_v7().to_string(),
            user_id: user.id.clone(),
            tier: tier.into(),
            address: Some(address()),
            lines: vec![pb::ShipmentLine {
                product_id: Uuid::now_v7().to_string(),
                sku: "KB-1".into(),
                product_name: "Keyboard".into(),
                quantity: 1,
            }],
        };
        let shipment = client
            .create_shipment(mesh.as_service("order", request))
            .await?
            .into_inner()
            .shipment
            .context("CreateShipment returned no shipment")?;
        shipments.push(shipment);
    }

    // The arrivals: one order.paid per tick, each timed from just before its publication.
    let mut published = HashMap::with_capacity(shipments.len());
    let mut ticker = tokio::time::interval(knobs.arrival.max(Duration::from_micros(100)));
    for shipment in &shipments {
        ticker.tick().await;
        let event = order_paid(shipment);
        published.insert(shipment.id.clone(), (shipment.tier(), Utc::now()));
        relay::publish(
            &publisher,
            &broker.settings().exchange,
            "order",
            std::slice::from_ref(&event),
        )
        .await?;
    }

    let pool = database.pool().await;
    let started = Instant::now();
    let fulfilled: Vec<(Uuid, DateTime<Utc>)> = loop {
        let rows: Vec<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("select id, fulfilled_at from shipments where fulfilled_at is not null")
                .fetch_all(&pool)
                .await?;
        if rows.len() == shipments.len() {
            break rows;
        }
        anyhow::ensure!(
            started.elapsed() < DRAIN_LIMIT,
            "only {} of {} orders packed after {DRAIN_LIMIT:?}",
            rows.len(),
            shipments.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    pool.close().await;
    let _ = publisher.close(200, "bye".into()).await;
    broker.close().await;

    fulfilled
        .into_iter()
        .map(|(id, fulfilled_at)| {
            let (tier, published_at) = published
                .get(&id.to_string())
                .copied()
                .with_context(|| format!("shipment {id} was not published"))?;
            Ok(Measured {
                tier,
                published_at,
                fulfilled_at,
            })
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
