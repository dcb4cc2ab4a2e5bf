//! The product service: the catalog (products, categories, full-text search) and inventory
//! (stock levels, reservations, the stock audit trail) in its own PostgreSQL database. Exposed
//! over gRPC only; the gateway is its REST face.
//!
//! Stock can never be oversold: the `stock` table's check constraint keeps
//! `0 <= reserved <= on_hand`, and Reserve takes stock with one conditional update per line inside
//! one transaction. A background sweeper gives back reservations that outlive their TTL.

pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod repo;
pub mod seed;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_server::InventoryServiceServer;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_server::ProductServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::events::{PgOutbox, relay_task};
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::settings::{Env, Secret, SettingsError};
use shopmesh_platform::shutdown::Shutdown;
use sqlx::PgPool;

pub use crate::config::ProductConfig;
use crate::repo::{Coalescing, PgCatalogRepo, PgInventoryRepo};
pub use crate::seed::SeedReport;
use crate::service::{CatalogService, InventoryService};

/// gRPC service names, as health checks and reflection know them.
pub const PRODUCT_SERVICE_NAME: &str = "shopmesh.product.v1.ProductService";
pub const INVENTORY_SERVICE_NAME: &str = "shopmesh.product.v1.InventoryService";

/// The product service's own database.
pub fn database_url(env: &Env) -> Result<Secret, SettingsError> {
    env.store_url(
        "PRODUCT_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/shopmesh_product",
    )
}

/// Creates the database named in `PRODUCT_DATABASE_URL` when it does not exist (through the
/// server's `postgres` maintenance database) and applies the embedded migrations.
pub async fn migrate(env: &Env) -> anyhow::Result<()> {
    db::migrate_url(database_url(env)?.expose()).await
}

/// The catalog and inventory use cases over one connection pool.
pub fn services(
    pool: &PgPool,
    config: &ProductConfig,
) -> (Arc<CatalogService>, Arc<InventoryService>) {
    let catalog = CatalogService::new(Arc::new(PgCatalogRepo::new(pool.clone())), config.clone());
    let inventory = InventoryService::new(
        Arc::new(Coalescing::new(PgInventoryRepo::new(pool.clone()))),
        config.clone(),
    );
    (Arc::new(catalog), Arc::new(inventory))
}

/// Migrates, then loads the demo catalog (idempotent: products are upserted by SKU, stock is
/// only set for new products), with a progress bar on the terminal.
pub async fn seed(env: &Env) -> anyhow::Result<SeedReport> {
    migrate(env).await?;
    let config = ProductConfig::from_env(env)?;
    let pool = db::connect(database_url(env)?.expose(), &config).await?;
    let (catalog, _) = services(&pool, &config);
    let report = seed::seed_catalog(&catalog).await;
    pool.close().await;
    report
}

/// The product service's registration in the mesh. Tests may replace the tunables read from
/// the environment.
#[derive(Default)]
pub struct Product {
    pub config: Option<ProductConfig>,
}

impl Product {
    pub fn with_config(config: ProductConfig) -> Self {
        Self {
            config: Some(config),
        }
    }
}

impl Service for Product {
    fn name(&self) -> &'static str {
        "product"
    }

    fn default_port(&self) -> u16 {
        50052
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[PRODUCT_SERVICE_NAME, INVENTORY_SERVICE_NAME]
    }

    fn stores(&self) -> &'static [Store] {
        &[Store::Postgres, Store::RabbitMq]
    }

    fn deploy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "PRODUCT_DATABASE_URL",
                "postgres://shopmesh:${POSTGRES_PASSWORD:-shopmesh}@postgres:5432/shopmesh_product",
            ),
            (
                "PRODUCT_RESERVATION_TTL_SECS",
                "${PRODUCT_RESERVATION_TTL_SECS:-900}",
            ),
            (
                "PRODUCT_SWEEP_INTERVAL_SECS",
                "${PRODUCT_SWEEP_INTERVAL_SECS:-5}",
            ),
            (
                "PRODUCT_DB_MAX_CONNECTIONS",
                "${PRODUCT_DB_MAX_CONNECTIONS:-20}",
            ),
            (
                "PRODUCT_STATEMENT_TIMEOUT_MS",
                "${PRODUCT_STATEMENT_TIMEOUT_MS:-5000}",
            ),
        ]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        ProductConfig::from_env(env)?;
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
                None => ProductConfig::from_env(&ctx.env)?,
            };
            migrate(&ctx.env).await?;
            let pool = db::connect(database_url(&ctx.env)?.expose(), &config).await?;
            let (catalog, inventory) = services(&pool, &config);
            let server = ctx
                .server()
                .add_service(ProductServiceServer::new(grpc::ProductGrpc::new(
                    catalog.clone(),
                )))
                .add_service(InventoryServiceServer::new(grpc::InventoryGrpc::new(
                    inventory.clone(),
                )));
            let interval = config.sweep_interval;
            let sweeper = inventory.clone();
            Ok(Built::new(server)
                .ready(Arc::new(move || {
                    let catalog = catalog.clone();
                    async move { catalog.ready().await.map_err(|err| err.to_string()) }.boxed()
                }))
                // The sweeper finishes the reservation it is on (each is one short transaction).
                .task(Box::new(move |stop| {
                    sweep_until_stopped(sweeper, interval, stop).boxed()
                }))
                // Product changes and low-stock crossings leave through the outbox.
                .task(relay_task(
                    Arc::new(PgOutbox::new(pool.clone())),
                    ctx.broker(),
                    "product",
                ))
                .on_stopped(async move { pool.close().await }.boxed()))
        }
        .boxed()
    }
}

/// Gives back reservations past their TTL on every tick until shutdown.
async fn sweep_until_stopped(
    inventory: Arc<InventoryService>,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        match inventory.sweep().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "reservation sweep"),
            Err(err) => tracing::warn!(error = %err, "reservation sweep failed"),
        }
    }
}
