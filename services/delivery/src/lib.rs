//! The delivery service: shipments, tracking events and the courier simulator, in its own
//! PostgreSQL database. Exposed over gRPC only; the gateway is its REST face.
//!
//! The order saga creates one shipment per paid order (idempotent per order id), labelled with a
//! carrier and tracking number. The order's `order.paid` then reaches the packing station (the
//! `fulfilment` consumer, see [`fulfilment`]) through a RabbitMQ priority queue, VIP orders
//! first, which packs one order per `DELIVERY_PACKING_MS` and records the shipment fulfilled.
//! A simulated courier picks up fulfilled shipments and advances each one step per
//! `DELIVERY_COURIER_STEP_MS` (LABEL_CREATED → IN_TRANSIT → OUT_FOR_DELIVERY → DELIVERED), VIP
//! shipments first, each step taken exactly once however many instances run. Every transition
//! records its tracking event and, in the same transaction, the order status it implies
//! (SHIPPED, COMPLETED), which a worker delivers to the order service until it is accepted,
//! and its domain event (shipment.created, shipment.status_changed) in the transactional
//! outbox, which the platform's relay publishes.

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod fulfilment;
pub mod grpc;
pub mod orders;
pub mod repo;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_server::DeliveryServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::pg;
use shopmesh_platform::settings::{Env, Secret, SettingsError};
use shopmesh_platform::shutdown::{self, Shutdown};
use sqlx::migrate::Migrator;

pub use crate::config::DeliveryConfig;
use crate::fulfilment::Fulfilment;
use crate::orders::GrpcOrderUpdates;
use crate::repo::PgShipmentRepo;
use crate::service::{DeliveryService, OrderSyncWorker, Signals};

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.delivery.v1.DeliveryService";

/// The migrations in `services/delivery/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The delivery service's own database.
pub fn database_url(env: &Env) -> Result<Secret, SettingsError> {
    env.store_url(
        config::DATABASE_URL,
        "postgres://postgres@127.0.0.1:5432/shopmesh_delivery",
    )
}

/// Creates the database named in `DELIVERY_DATABASE_URL` when it does not exist and applies
/// the embedded migrations.
pub async fn migrate(env: &Env) -> anyhow::Result<()> {
    pg::migrate(config::DATABASE_URL, database_url(env)?.expose(), &MIGRATOR).await
}

/// The delivery service's registration in the mesh. Tests may replace the tunables read from
/// the environment.
#[derive(Default)]
pub struct Delivery {
    pub config: Option<DeliveryConfig>,
}

impl Delivery {
    pub fn with_config(config: DeliveryConfig) -> Self {
        Self {
            config: Some(config),
        }
    }
}

impl Service for Delivery {
    fn name(&self) -> &'static str {
        "delivery"
    }

    fn default_port(&self) -> u16 {
        50056
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn stores(&self) -> &'static [Store] {
        &[Store::Postgres, Store::RabbitMq]
    }

    fn deploy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "DELIVERY_DATABASE_URL",
                "postgres://shopmesh:${POSTGRES_PASSWORD:-shopmesh}@postgres:5432/shopmesh_delivery",
            ),
            (
                "DELIVERY_COURIER_ENABLED",
                "${DELIVERY_COURIER_ENABLED:-true}",
            ),
            (
                "DELIVERY_COURIER_STEP_MS",
                "${DELIVERY_COURIER_STEP_MS:-15000}",
            ),
            ("DELIVERY_PACKING_MS", "${DELIVERY_PACKING_MS:-200}"),
            (
                "DELIVERY_DB_MAX_CONNECTIONS",
                "${DELIVERY_DB_MAX_CONNECTIONS:-10}",
            ),
            (
                "DELIVERY_STATEMENT_TIMEOUT_MS",
                "${DELIVERY_STATEMENT_TIMEOUT_MS:-5000}",
            ),
        ]
    }

    fn subscriptions(&self) -> Vec<shopmesh_platform::events::Subscription> {
        vec![fulfilment::subscription()]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        DeliveryConfig::from_env(env)?;
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
                None => DeliveryConfig::from_env(&ctx.env)?,
            };
            migrate(&ctx.env).await?;
            let pool = pg::connect(
                config::DATABASE_URL,
                database_url(&ctx.env)?.expose(),
                config.pool,
            )
            .await?;
            let repo = Arc::new(PgShipmentRepo::new(pool.clone()));
            let signals = Arc::new(Signals::default());
            // Open tracking streams end at shutdown, before the server's drain waits for them.
            let (stop_streams, streams_stopping) = shutdown::channel();
            let service = Arc::new(DeliveryService::new(
                repo.clone(),
                config.clone(),
                signals.clone(),
                streams_stopping,
            ));
            let orders = GrpcOrderUpdates::new(
                ctx.channel("order")?,
                ctx.settings.grpc_client.request_timeout,
            );
            let worker =
                OrderSyncWorker::new(repo, Arc::new(orders), config.clone(), signals.clone());
            let packing = Arc::new(Fulfilment::new(&config, signals.clone()));
            let server =
                ctx.server()
                    .add_service(DeliveryServiceServer::new(grpc::DeliveryGrpc::new(
                        service.clone(),
                    )));
            let ready = service.clone();
            let mut built = Built::new(server)
                .ready(Arc::new(move || {
                    let service = ready.clone();
                    async move { service.ready().await.map_err(|err| err.to_string()) }.boxed()
                }))
                .task(Box::new(move |stop| {
                    async move {
                        stop.wait().await;
                        stop_streams.trigger();
                    }
                    .boxed()
                }))
                // Each attempt is one call (bounded by the client's request timeout, below the
                // grace period) and one row update; a pass under way at shutdown finishes.
                .task(Box::new(move |stop| worker.run(stop).boxed()))
                // shipment.created / shipment.status_changed leave through the outbox.
                .task(shopmesh_platform::events::relay_task(
                    Arc::new(shopmesh_platform::events::PgOutbox::new(pool.clone())),
                    ctx.broker(),
                    "delivery",
                ))
                // order.paid, VIP first: packs each order's shipment, which makes it due for
                // the courier.
                .task(
                    shopmesh_platform::events::consumer_task(
                        fulfilment::subscription(),
                        packing,
                        pool.clone(),
                        ctx.broker(),
                    )
                    .await,
                );
            if config.courier_enabled {
                let courier = service.clone();
                let poll = config.courier_poll;
                built = built.task(Box::new(move |stop| {
                    courier_until_stopped(courier, poll, stop).boxed()
                }));
            } else {
                tracing::info!("the courier simulator is disabled");
            }
            Ok(built.on_stopped(async move { pool.close().await }.boxed()))
        }
        .boxed()
    }
}

/// Takes the courier's due steps on every tick until shutdown (a pass is one transaction, which
/// finishes before the loop looks at the signal again). A full batch runs the next pass at once.
async fn courier_until_stopped(service: Arc<DeliveryService>, poll: Duration, stop: Shutdown) {
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            _ = ticker.tick() => {}
        }
        match service.courier_pass().await {
            Ok(0) => {}
            Ok(steps) => {
                tracing::debug!(steps, "courier pass");
                if steps >= service.courier_batch() {
                    ticker.reset_immediately();
                }
            }
            Err(err) => tracing::warn!(error = %err, "courier pass failed"),
        }
    }
}
