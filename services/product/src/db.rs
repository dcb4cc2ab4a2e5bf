//! The product database: creating it when missing, connecting, and the embedded migrations.

use std::time::Duration;

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

/// A connection pool sized by the config. Every connection starts with the config's
/// `statement_timeout`, so the server cancels a runaway statement instead of letting it hold the
/// connection, and the locks it took, indefinitely.
pub async fn connect(url: &str, config: &ProductConfig) -> anyhow::Result<PgPool> {
    let options = connect_options(url)?.options([(
        "statement_timeout",
        statement_timeout_setting(config.statement_timeout),
    )]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await?)
}

/// A timeout as a PostgreSQL `statement_timeout` value: whole milliseconds, rounded up so that a
/// short timeout never becomes 0, which would turn the limit off.
fn statement_timeout_setting(timeout: Duration) -> String {
    format!("{}ms", timeout.as_nanos().div_ceil(1_000_000))
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
        assert_eq!(statement_timeout_setting(Duration::from_nanos(1)), "1ms");
        assert_eq!(statement_timeout_setting(Duration::ZERO), "0ms");
    }

    /// The local PostgreSQL every test run has (trust authentication).
    const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

    #[tokio::test]
    async fn the_server_cancels_statements_over_the_timeout() {
        let db_name = format!("product_test_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{SERVER}/{db_name}");
        ensure_database(&connect_options(&url).unwrap())
            .await
            .expect("test database");
        let config = ProductConfig {
            max_connections: 1,
            statement_timeout: Duration::from_millis(200),
            ..ProductConfig::default()
        };
        let pool = connect(&url, &config).await.expect("pool");

        let setting: String = sqlx::query_scalar("show statement_timeout")
            .fetch_one(&pool)
            .await
            .expect("show statement_timeout");
        assert_eq!(setting, "200ms");
        let started = std::time::Instant::now();
        let err = sqlx::query("select pg_sleep(5)")
            .execute(&pool)
            .await
            .expect_err("a statement over the timeout fails");
        let elapsed = started.elapsed();
        let db_err = err.as_database_error().expect("a database error");
        // 57014 is query_canceled; the message names the statement timeout as the reason.
        assert_eq!(db_err.code().as_deref(), Some("57014"), "{db_err}");
        assert!(
            db_err.message().contains("statement timeout"),
            "{}",
            db_err.message()
        );
        assert!(
            elapsed < Duration::from_secs(4),
            "cancelled after {elapsed:?}"
        );
        // The one pooled connection survives the cancellation.
        let one: i32 = sqlx::query_scalar("select 1")
            .fetch_one(&pool)
            .await
            .expect("the connection still works");
        assert_eq!(one, 1);

        pool.close().await;
        let mut maintenance =
            PgConnection::connect_with(&connect_options(&url).unwrap().database("postgres"))
                .await
                .expect("maintenance");
        sqlx::query(&format!(
            "drop database if exists \"{db_name}\" with (force)"
        ))
        .execute(&mut maintenance)
        .await
        .expect("drop test database");
    }
}
