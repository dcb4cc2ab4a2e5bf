//! The product database: creating it when missing, connecting, and the embedded migrations.

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::ProductConfig;

/// The migrations in `services/product/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connection options from a `postgres://` URL.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    url.parse()
        .map_err(|err| anyhow::anyhow!("PRODUCT_DATABASE_URL is not a PostgreSQL URL: {err}"))
}

/// Creates the database the options name unless it exists, through the `postgres` maintenance
/// database of the same server. Safe to run concurrently.
pub async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("PRODUCT_DATABASE_URL names no database"))?
        .to_owned();
    let mut maintenance = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut maintenance)
            .await?;
    if !exists {
        // CREATE DATABASE takes no bind parameters; the name is quoted as an identifier.
        let statement = format!("create database \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&statement).execute(&mut maintenance).await {
            Ok(_) => tracing::info!(database = %name, "created the product database"),
            // Another process created it first.
            Err(sqlx::Error::Database(err))
                if matches!(err.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(err) => return Err(err.into()),
        }
    }
    maintenance.close().await?;
    Ok(())
}

/// Creates the database if needed and applies every pending migration.
pub async fn migrate_url(url: &str) -> anyhow::Result<()> {
    let options = connect_options(url)?;
    ensure_database(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// A connection pool sized by the config.
pub async fn connect(url: &str, config: &ProductConfig) -> anyhow::Result<PgPool> {
    let options = connect_options(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await?)
}
