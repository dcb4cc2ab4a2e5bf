//! The payment service: payments, refunds, the ledger and the payment provider port, in its own
//! PostgreSQL database. Exposed over gRPC only; the order saga charges and refunds through it
//! and the gateway shows an order's payments.
//!
//! Money moves at most once: the order id is Charge's idempotency key (a unique key on
//! `payments.order_id`), the ledger admits one capture per payment (a unique partial index),
//! refunds are counted by a conditional update under a check constraint that keeps the refunded
//! total within the amount, and every provider call carries an idempotency key so that retries
//! never capture twice.

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod provider;
pub mod repo;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_server::PaymentServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::events::{PgOutbox, relay_task};
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::pg;
use shopmesh_platform::settings::{Env, Secret, SettingsError};
use shopmesh_platform::shutdown::Shutdown;
use sqlx::migrate::Migrator;

pub use crate::config::PaymentConfig;
use crate::provider::TestProvider;
use crate::repo::PgPaymentRepo;
use crate::service::PaymentService;

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.payment.v1.PaymentService";

/// The migrations in `services/payment/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The payment service's own database.
pub fn database_url(env: &Env) -> Result<Secret, SettingsError> {
    env.store_url(config::DATABASE_URL, config::DEV_DATABASE_URL)
}

/// Creates the database named in `PAYMENT_DATABASE_URL` when it does not exist and applies the
/// embedded migrations.
pub async fn migrate(env: &Env) -> anyhow::Result<()> {
    pg::migrate(config::DATABASE_URL, database_url(env)?.expose(), &MIGRATOR).await
}

/// The payment service's registration in the mesh. Tests may replace the tunables read from
/// the environment.
#[derive(Default)]
pub struct Payment {
    pub config: Option<PaymentConfig>,
}

impl Payment {
    pub fn with_config(config: PaymentConfig) -> Self {
        Self {
            config: Some(config),
        }
    }
}

impl Service for Payment {
    fn name(&self) -> &'static str {
        "payment"
    }

    fn default_port(&self) -> u16 {
        50055
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
                "PAYMENT_DATABASE_URL",
                "postgres://shopmesh:${POSTGRES_PASSWORD:-shopmesh}@postgres:5432/shopmesh_payment",
            ),
            (
                "PAYMENT_PROVIDER_DELAY_MS",
                "${PAYMENT_PROVIDER_DELAY_MS:-0}",
            ),
            (
                "PAYMENT_PROVIDER_MAX_ATTEMPTS",
                "${PAYMENT_PROVIDER_MAX_ATTEMPTS:-3}",
            ),
            (
                "PAYMENT_PROVIDER_BACKOFF_MS",
                "${PAYMENT_PROVIDER_BACKOFF_MS:-50}",
            ),
            (
                "PAYMENT_PROVIDER_WAIT_MS",
                "${PAYMENT_PROVIDER_WAIT_MS:-8000}",
            ),
            (
                "PAYMENT_DB_MAX_CONNECTIONS",
                "${PAYMENT_DB_MAX_CONNECTIONS:-20}",
            ),
            (
                "PAYMENT_STATEMENT_TIMEOUT_MS",
                "${PAYMENT_STATEMENT_TIMEOUT_MS:-5000}",
            ),
        ]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        PaymentConfig::from_env(env)?;
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
                None => PaymentConfig::from_env(&ctx.env)?,
            };
            migrate(&ctx.env).await?;
            let pool = pg::connect(
                config::DATABASE_URL,
                database_url(&ctx.env)?.expose(),
                config.pool,
            )
            .await?;
            let provider = Arc::new(TestProvider::new(config.provider_delay));
            let interval = config.recovery_interval;
            let payments =
                PaymentService::new(Arc::new(PgPaymentRepo::new(pool.clone())), provider, config);
            let server =
                ctx.server()
                    .add_service(PaymentServiceServer::new(grpc::PaymentGrpc::new(
                        payments.clone(),
                    )));
            let sweeper = payments.clone();
            Ok(Built::new(server)
                .ready(Arc::new(move || {
                    let payments = payments.clone();
                    async move { payments.ready().await.map_err(|err| err.to_string()) }.boxed()
                }))
                // The sweeper finishes the payment it is on before it stops.
                .task(Box::new(move |stop| {
                    recover_until_stopped(sweeper, interval, stop).boxed()
                }))
                // payment.succeeded / failed / refunded leave through the outbox.
                .task(relay_task(
                    Arc::new(PgOutbox::new(pool.clone())),
                    ctx.broker(),
                    "payment",
                ))
                .on_stopped(async move { pool.close().await }.boxed()))
        }
        .boxed()
    }
}

/// Drives stranded PENDING payments to their end on every tick until shutdown.
async fn recover_until_stopped(payments: PaymentService, interval: Duration, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        match payments.recover_stranded().await {
            Ok(0) => {}
            Ok(settled) => tracing::info!(settled, "stranded payments settled"),
            Err(err) => tracing::warn!(error = %err, "recovering stranded payments failed"),
        }
    }
}
