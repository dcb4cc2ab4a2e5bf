//! The analytics service: order, revenue, conversion and product figures for admins, built
//! from the order, payment and registration events in its own PostgreSQL database. Exposed
//! over gRPC only (admin only); the gateway serves them under `/api/admin/analytics`.
//!
//! The `analytics` consumer keeps one fact row per order (placed, paid, latest status, total,
//! lines) and one row per refund and registration, each written in the transaction that
//! records the event in the inbox, so a redelivered event counts once; an order's row ends the
//! same whatever order its events arrive in ([`repo`]). The figures are read from those rows in
//! one snapshot per answer, so they lag the source by the event delay and never disagree with
//! each other. Which day a figure counts on is in analytics.proto: paid figures on the day the
//! order was paid, placement figures on the day it was placed, refunds on the day they were made.

pub mod config;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod repo;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::events::consumer_task;
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::pg;
use shopmesh_platform::settings::{Env, Secret, SettingsError};
use sqlx::migrate::Migrator;

pub use crate::config::AnalyticsConfig;
pub use crate::consumer::{CONSUMER, subscription};
use crate::repo::AnalyticsRepo;

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.analytics.v1.AnalyticsService";

/// The migrations in `services/analytics/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The analytics service's own database.
pub fn database_url(env: &Env) -> Result<Secret, SettingsError> {
    env.store_url(config::DATABASE_URL, config::DEV_DATABASE_URL)
}

/// Creates the database named in `ANALYTICS_DATABASE_URL` when it does not exist and applies
/// the embedded migrations.
pub async fn migrate(env: &Env) -> anyhow::Result<()> {
    pg::migrate(config::DATABASE_URL, database_url(env)?.expose(), &MIGRATOR).await
}

/// The analytics service's registration in the mesh. Tests may replace the tunables read from
/// the environment.
#[derive(Default)]
pub struct Analytics {
    pub config: Option<AnalyticsConfig>,
}

impl Analytics {
    pub fn with_config(config: AnalyticsConfig) -> Self {
        Self {
            config: Some(config),
        }
    }
}

impl Service for Analytics {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn default_port(&self) -> u16 {
        50058
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
                "ANALYTICS_DATABASE_URL",
                "postgres://shopmesh:${POSTGRES_PASSWORD:-shopmesh}@postgres:5432/shopmesh_analytics",
            ),
            ("ANALYTICS_CURRENCY", "${ANALYTICS_CURRENCY:-USD}"),
            (
                "ANALYTICS_DB_MAX_CONNECTIONS",
                "${ANALYTICS_DB_MAX_CONNECTIONS:-10}",
            ),
            (
                "ANALYTICS_STATEMENT_TIMEOUT_MS",
                "${ANALYTICS_STATEMENT_TIMEOUT_MS:-5000}",
            ),
        ]
    }

    fn subscriptions(&self) -> Vec<shopmesh_platform::events::Subscription> {
        vec![consumer::subscription()]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        AnalyticsConfig::from_env(env)?;
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
                None => AnalyticsConfig::from_env(&ctx.env)?,
            };
            migrate(&ctx.env).await?;
            let pool = pg::connect(
                config::DATABASE_URL,
                database_url(&ctx.env)?.expose(),
                config.pool,
            )
            .await?;
            let repo = AnalyticsRepo::new(pool.clone());
            let server =
                ctx.server()
                    .add_service(AnalyticsServiceServer::new(grpc::AnalyticsGrpc::new(
                        repo.clone(),
                        config.currency.clone(),
                    )));
            Ok(Built::new(server)
                .ready(Arc::new(move || {
                    let repo = repo.clone();
                    async move { repo.ping().await.map_err(|err| err.to_string()) }.boxed()
                }))
                // The figures follow order.*, payment.* and user.registered; a message being
                // handled at shutdown is finished (or handed back) before the task ends.
                .task(
                    consumer_task(
                        subscription(),
                        Arc::new(consumer::AnalyticsHandler),
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
