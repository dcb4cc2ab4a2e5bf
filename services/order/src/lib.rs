//! The order service: orders with line snapshots, status history and the checkout saga that
//! reserves stock (product), charges (payment) and ships (delivery) exactly once, in its own
//! PostgreSQL database. Exposed over gRPC only; the gateway is its REST face.
//!
//! No crash can charge without an order or sell stock twice: the order and its first saga step
//! are committed before any call is made, every step is recorded before it is taken, every call
//! is idempotent on the order id, and a recovery worker resumes whatever a dead driver left
//! (see [`saga`]).

pub mod config;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod repo;
pub mod saga;
pub mod service;
pub mod shipments;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_client::DeliveryServiceClient;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_server::OrderServiceServer;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_client::PaymentServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_platform::Settings;
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::settings::Env;
use sqlx::migrate::Migrator;

pub use crate::config::{OrderConfig, database_url};
use crate::repo::OrderRepo;
use crate::saga::Saga;
use crate::service::OrderService;

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.order.v1.OrderService";

/// The migrations in `services/order/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

const URL_KEY: &str = "ORDER_DATABASE_URL";

/// Creates the order database when missing and applies the migrations.
pub async fn migrate(env: &Env) -> anyhow::Result<()> {
    shopmesh_platform::pg::migrate(URL_KEY, database_url(env)?.expose(), &MIGRATOR).await
}

/// The order service's registration in the mesh. Tests may replace the tunables read from the
/// environment.
#[derive(Default)]
pub struct Order {
    pub config: Option<OrderConfig>,
}

impl Service for Order {
    fn name(&self) -> &'static str {
        "order"
    }

    fn default_port(&self) -> u16 {
        50054
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn subscriptions(&self) -> Vec<shopmesh_platform::events::Subscription> {
        vec![shipments::subscription()]
    }

    fn stores(&self) -> &'static [Store] {
        &[Store::Postgres, Store::RabbitMq]
    }

    fn deploy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "ORDER_DATABASE_URL",
                "postgres://shopmesh:${POSTGRES_PASSWORD:-shopmesh}@postgres:5432/shopmesh_order",
            ),
            (
                "ORDER_CHECKOUT_BUDGET_MS",
                "${ORDER_CHECKOUT_BUDGET_MS:-5000}",
            ),
            ("ORDER_MAX_HELD_UNITS", "${ORDER_MAX_HELD_UNITS:-200}"),
        ]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        OrderConfig::from_env(env)?;
        database_url(env)?;
        Ok(())
    }

    fn migrate(&self, env: Env, _settings: Settings) -> BoxFuture<'static, anyhow::Result<()>> {
        async move { migrate(&env).await }.boxed()
    }

    fn build(&self, ctx: Context) -> BoxFuture<'static, anyhow::Result<Built>> {
        let config = self.config.clone();
        async move {
            let config = match config {
                Some(config) => config,
                None => OrderConfig::from_env(&ctx.env)?,
            };
            migrate(&ctx.env).await?;
            let pool = shopmesh_platform::pg::connect(
                URL_KEY,
                database_url(&ctx.env)?.expose(),
                config.pool,
            )
            .await?;
            let product = ctx.channel("product")?;
            let payment = PaymentServiceClient::new(ctx.channel("payment")?);
            let peers = saga::Peers {
                inventory: InventoryServiceClient::new(product.clone()),
                payment: payment.clone(),
                delivery: DeliveryServiceClient::new(ctx.channel("delivery")?),
            };
            let interval = config.recovery_interval;
            let saga = Saga::new(OrderRepo::new(pool.clone()), peers, config);
            let service = Arc::new(OrderService::new(
                saga.clone(),
                ProductServiceClient::new(product),
                payment,
            ));
            let server = ctx
                .server()
                .add_service(OrderServiceServer::new(grpc::OrderGrpc::new(
                    service.clone(),
                )));
            Ok(Built::new(server)
                .ready(Arc::new(move || {
                    let service = service.clone();
                    async move { service.ready().await.map_err(|err| err.to_string()) }.boxed()
                }))
                .task(Box::new(move |stop| {
                    saga::recover_until_stopped(saga, interval, stop).boxed()
                }))
                // order.* events leave through the outbox.
                .task(shopmesh_platform::events::relay_task(
                    Arc::new(shopmesh_platform::events::PgOutbox::new(pool.clone())),
                    ctx.broker(),
                    "order",
                ))
                // Shipment progress moves orders to SHIPPED and COMPLETED.
                .task(
                    shopmesh_platform::events::consumer_task(
                        shipments::subscription(),
                        Arc::new(shipments::ShipmentProgress),
                        pool.clone(),
                        ctx.broker(),
                    )
                    .await,
                )
                .on_stopped(async move { pool.close().await }.boxed()))
        }
        .boxed()
    }
}
