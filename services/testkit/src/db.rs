//! A uniquely named PostgreSQL database per test, dropped afterwards.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The local PostgreSQL server the tests run against (trust authentication, user postgres).
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A database of its own for one test, named `<prefix>_<uuid>` so that tests run in parallel
/// never share rows.
///
/// The name is reserved, not created: the services create their database themselves (through
/// the maintenance database), which is part of what the tests exercise. The database is dropped
/// `with (force)` by [`PgDatabase::drop`], or on `Drop` when a test panicked before it.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    url: String,
    dropped: bool,
}

impl PgDatabase {
    /// A fresh database name on [`PG_SERVER`], e.g. `product_test_<uuid>`.
    pub fn new(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        let url = format!("{PG_SERVER}/{name}");
        Self {
            name,
            url,
            dropped: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL a service is configured with (`<SVC>_DATABASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A small pool for assertions on rows the API does not expose. Connect only once the
    /// service has created the database.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("test database connection")
    }

    /// Drops the database (closing whatever sessions are still connected to it).
    pub async fn drop(mut self) {
        drop_database(&self.name)
            .await
            .expect("drop the test database");
        self.dropped = true;
    }
}

impl Drop for PgDatabase {
    /// A test that failed before its teardown leaves no database behind either. `Drop` cannot
    /// await, and may run inside a runtime, so the drop runs on a thread of its own; it is best
    /// effort (a panic while unwinding would abort the test binary).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(drop_database(&name)).ok()
        })
        .join();
    }
}

async fn drop_database(name: &str) -> Result<(), sqlx::Error> {
    let options: PgConnectOptions = format!("{PG_SERVER}/postgres").parse()?;
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}
