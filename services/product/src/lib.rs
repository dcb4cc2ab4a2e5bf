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

use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_server::InventoryServiceServer;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_server::ProductServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::auth::{TokenSigner, TokenVerifier};
use shopmesh_platform::grpc::{GrpcServer, GrpcServerBuilder};
use shopmesh_platform::shutdown::Shutdown;
use sqlx::PgPool;
use tonic_health::ServingStatus;

pub use crate::config::ProductConfig;
use crate::repo::{PgCatalogRepo, PgInventoryRepo};
pub use crate::seed::SeedReport;
use crate::service::{CatalogService, InventoryService};

/// gRPC service names, as health checks and reflection know them.
pub const PRODUCT_SERVICE_NAME: &str = "shopmesh.product.v1.ProductService";
pub const INVENTORY_SERVICE_NAME: &str = "shopmesh.product.v1.InventoryService";

/// How often readiness re-checks PostgreSQL.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Creates the database named in `PRODUCT_DATABASE_URL` when it does not exist (through the
/// server's `postgres` maintenance database) and applies the embedded migrations.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    db::migrate_url(settings.product_database_url.expose()).await
}

/// The catalog and inventory use cases over one connection pool.
pub fn services(
    pool: &PgPool,
    config: &ProductConfig,
) -> (Arc<CatalogService>, Arc<InventoryService>) {
    let catalog = CatalogService::new(Arc::new(PgCatalogRepo::new(pool.clone())), config.clone());
    let inventory =
        InventoryService::new(Arc::new(PgInventoryRepo::new(pool.clone())), config.clone());
    (Arc::new(catalog), Arc::new(inventory))
}

/// Migrates, then loads the demo catalog (idempotent: products are upserted by SKU, stock is
/// only set for new products), with a progress bar on the terminal.
pub async fn seed(settings: &Settings) -> anyhow::Result<SeedReport> {
    migrate(settings).await?;
    let config = ProductConfig::from_settings(settings)?;
    let pool = db::connect(settings.product_database_url.expose(), &config).await?;
    let (catalog, _) = services(&pool, &config);
    let report = seed::seed_catalog(&catalog).await;
    pool.close().await;
    report
}

/// A built, bound product service.
pub struct Application {
    server: GrpcServer,
    catalog: Arc<CatalogService>,
    inventory: Arc<InventoryService>,
    pool: PgPool,
    config: ProductConfig,
}

impl Application {
    /// Migrates (creating the database when missing), connects, and binds `PRODUCT_GRPC_ADDR`
    /// (port 0 picks a free port). Tokens are verified against the configured signing key, like
    /// the user service does.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, ProductConfig::from_settings(settings)?).await
    }

    /// [`Application::build`] with explicit tunables (tests shorten the sweeper interval).
    pub async fn build_with(settings: &Settings, config: ProductConfig) -> anyhow::Result<Self> {
        let signer = TokenSigner::from_settings(&settings.jwt, settings.profile)?;
        Self::build_with_verifier(settings, config, TokenVerifier::for_signer(&signer)).await
    }

    /// [`Application::build_with`] with a given token verifier, e.g. one fed from the user
    /// service's JWKS when this process does not hold the signing key.
    pub async fn build_with_verifier(
        settings: &Settings,
        config: ProductConfig,
        verifier: TokenVerifier,
    ) -> anyhow::Result<Self> {
        migrate(settings).await?;
        let pool = db::connect(settings.product_database_url.expose(), &config).await?;
        let (catalog, inventory) = services(&pool, &config);
        let server = GrpcServerBuilder::new(verifier)
            .add_service(ProductServiceServer::new(grpc::ProductGrpc::new(
                catalog.clone(),
            )))
            .add_service(InventoryServiceServer::new(grpc::InventoryGrpc::new(
                inventory.clone(),
            )))
            .bind(settings.product_grpc_addr)
            .await?;
        Ok(Self {
            server,
            catalog,
            inventory,
            pool,
            config,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn catalog(&self) -> Arc<CatalogService> {
        self.catalog.clone()
    }

    pub fn inventory(&self) -> Arc<InventoryService> {
        self.inventory.clone()
    }

    /// Serves until `shutdown`. Meanwhile the reservation sweeper runs every
    /// `config.sweep_interval` and readiness follows PostgreSQL; both stop with the server, and
    /// the pool closes last.
    pub async fn run_until_stopped(
        self,
        shutdown: Shutdown,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let sweeper = tokio::spawn(sweep_until_stopped(
            self.inventory.clone(),
            self.config.sweep_interval,
            shutdown.clone(),
        ));
        let readiness = tokio::spawn(follow_readiness(
            self.catalog.clone(),
            self.server.health(),
            shutdown.clone(),
        ));
        let result = self.server.run_until_stopped(shutdown, grace).await;
        readiness.abort();
        // The sweeper finishes the reservation it is on (each is one short transaction).
        if tokio::time::timeout(grace, sweeper).await.is_err() {
            tracing::warn!("reservation sweeper did not stop within the grace period");
        }
        self.pool.close().await;
        result
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

/// Flips both services' health with the database's reachability until shutdown.
async fn follow_readiness(
    catalog: Arc<CatalogService>,
    health: tonic_health::server::HealthReporter,
    shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(READINESS_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.clone().wait() => break,
        }
        if shutdown.is_triggered() {
            break;
        }
        let status = match catalog.ready().await {
            Ok(()) => ServingStatus::Serving,
            Err(err) => {
                tracing::warn!(error = %err, "product database unavailable");
                ServingStatus::NotServing
            }
        };
        health
            .set_service_status(PRODUCT_SERVICE_NAME, status)
            .await;
        health
            .set_service_status(INVENTORY_SERVICE_NAME, status)
            .await;
    }
}
