//! The notification service: the users' inbox and their e-mails, in its own PostgreSQL
//! database, written by consuming events. Exposed over gRPC only (the gateway serves
//! `/api/notifications`).
//!
//! - The consumer "notification" ([`handler`]) keeps a copy of every recipient from user.*
//!   events and renders the order, payment and shipment events into notifications: one in-app
//!   row and, unless muted, one e-mail job, written in the transaction of the event's inbox row,
//!   so a redelivery writes nothing twice. An event about a user not known yet is retried, then
//!   dead-lettered, and applies on a re-drive once the user is known.
//! - The sender ([`sender`]) sends the e-mail jobs over SMTP with retries and backoff; the
//!   handler wakes it after every commit.
//! - [`grpc`] serves `shopmesh.notification.v1.NotificationService`: the caller's own
//!   notifications and e-mail preferences.

pub mod config;
pub mod error;
pub mod grpc;
pub mod handler;
pub mod kind;
pub mod repo;
pub mod sender;
pub mod service;
pub mod templates;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::notification::v1::notification_service_server::NotificationServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::events::consumer_task;
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::pg;
use shopmesh_platform::settings::{Env, Secret, SettingsError};
use sqlx::migrate::Migrator;
use tokio::sync::Notify;

pub use crate::config::NotificationConfig;
use crate::handler::NotificationHandler;
use crate::sender::Sender;
use crate::service::Inbox;

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.notification.v1.NotificationService";

/// The migrations in `services/notification/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The notification service's own database.
pub fn database_url(env: &Env) -> Result<Secret, SettingsError> {
    env.store_url(config::DATABASE_URL, config::DEV_DATABASE_URL)
}

/// Creates the database named in `NOTIFICATION_DATABASE_URL` when it does not exist and
/// applies the embedded migrations.
pub async fn migrate(env: &Env) -> anyhow::Result<()> {
    pg::migrate(config::DATABASE_URL, database_url(env)?.expose(), &MIGRATOR).await
}

/// The notification service's registration in the mesh. Tests may replace the tunables read
/// from the environment.
#[derive(Default)]
pub struct Notification {
    pub config: Option<NotificationConfig>,
}

impl Notification {
    pub fn with_config(config: NotificationConfig) -> Self {
        Self {
            config: Some(config),
        }
    }
}

impl Service for Notification {
    fn name(&self) -> &'static str {
        "notification"
    }

    fn default_port(&self) -> u16 {
        50057
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
                "NOTIFICATION_DATABASE_URL",
                "postgres://shopmesh:${POSTGRES_PASSWORD:-shopmesh}@postgres:5432/shopmesh_notification",
            ),
            // Plain SMTP: point it at a relay on the compose network or the host.
            (
                "NOTIFICATION_SMTP_HOST",
                "${NOTIFICATION_SMTP_HOST:-127.0.0.1}",
            ),
            ("NOTIFICATION_SMTP_PORT", "${NOTIFICATION_SMTP_PORT:-2525}"),
            (
                "NOTIFICATION_SMTP_FROM",
                "\"${NOTIFICATION_SMTP_FROM:-shopmesh <no-reply@shopmesh.local>}\"",
            ),
            (
                "NOTIFICATION_EMAIL_MAX_ATTEMPTS",
                "${NOTIFICATION_EMAIL_MAX_ATTEMPTS:-8}",
            ),
            (
                "NOTIFICATION_EMAIL_BACKOFF_MS",
                "${NOTIFICATION_EMAIL_BACKOFF_MS:-1000}",
            ),
            (
                "NOTIFICATION_DB_MAX_CONNECTIONS",
                "${NOTIFICATION_DB_MAX_CONNECTIONS:-10}",
            ),
        ]
    }

    fn subscriptions(&self) -> Vec<shopmesh_platform::events::Subscription> {
        vec![handler::subscription()]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        NotificationConfig::from_env(env)?;
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
                None => NotificationConfig::from_env(&ctx.env)?,
            };
            migrate(&ctx.env).await?;
            let pool = pg::connect(
                config::DATABASE_URL,
                database_url(&ctx.env)?.expose(),
                config.pool,
            )
            .await?;
            let store = repo::Store::new(pool.clone());
            let inbox = Inbox::new(store.clone());
            let wake = Arc::new(Notify::new());
            let sender = Sender::new(store, &config, wake.clone());
            let server = ctx.server().add_service(NotificationServiceServer::new(
                grpc::NotificationGrpc::new(inbox.clone()),
            ));
            Ok(Built::new(server)
                .ready(Arc::new(move || {
                    let inbox = inbox.clone();
                    async move { inbox.ready().await.map_err(|err| err.to_string()) }.boxed()
                }))
                .task(
                    consumer_task(
                        handler::subscription(),
                        Arc::new(NotificationHandler::new(wake)),
                        pool.clone(),
                        ctx.broker(),
                    )
                    .await,
                )
                // A pass in progress finishes before it stops.
                .task(Box::new(move |stop| sender.run(stop).boxed()))
                .on_stopped(async move { pool.close().await }.boxed()))
        }
        .boxed()
    }
}
