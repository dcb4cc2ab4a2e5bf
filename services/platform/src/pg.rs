//! PostgreSQL plumbing every service with its own database shares: creating the database when
//! it is missing, applying the service's embedded migrations, and a pool whose connections all
//! carry a `statement_timeout`.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// How a service's pool is sized and bounded.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// The server cancels any statement running longer.
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// Connection options from a `postgres://` URL; `key` names the setting in errors.
pub fn connect_options(key: &str, url: &str) -> anyhow::Result<PgConnectOptions> {
    url.parse()
        .map_err(|err| anyhow::anyhow!("{key} is not a PostgreSQL URL: {err}"))
}

/// Creates the database the options name unless it exists, through the `postgres` maintenance
/// database of the same server. Safe to run concurrently.
pub async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("the database URL names no database"))?
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
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it first.
            Err(sqlx::Error::Database(err))
                if matches!(err.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(err) => return Err(err.into()),
        }
    }
    maintenance.close().await?;
    Ok(())
}

/// Creates the database if needed and applies every pending migration of `migrator`.
pub async fn migrate(key: &str, url: &str, migrator: &Migrator) -> anyhow::Result<()> {
    let options = connect_options(key, url)?;
    ensure_database(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// A pool sized by `settings`, every connection with its `statement_timeout`.
pub async fn connect(key: &str, url: &str, settings: PoolSettings) -> anyhow::Result<PgPool> {
    let options = connect_options(key, url)?.options([(
        "statement_timeout",
        statement_timeout_setting(settings.statement_timeout),
    )]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await?)
}

/// A timeout as a PostgreSQL `statement_timeout` value: whole milliseconds, rounded up so that a
/// short timeout never becomes 0, which would turn the limit off.
pub fn statement_timeout_setting(timeout: Duration) -> String {
    format!("{}ms", timeout.as_nanos().div_ceil(1_000_000))
}

/// Whether a database error is a unique-constraint violation (SQLSTATE 23505).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_are_whole_milliseconds_rounded_up() {
        assert_eq!(statement_timeout_setting(Duration::from_secs(5)), "5000ms");
        assert_eq!(
            statement_timeout_setting(Duration::from_micros(1500)),
            "2ms"
        );
        assert_eq!(statement_timeout_setting(Duration::ZERO), "0ms");
    }
}
