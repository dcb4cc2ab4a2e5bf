//! The shared harness of the services' gRPC integration tests: a fresh PostgreSQL database per
//! test, a test environment with its own run directory, services started through the platform's
//! `Mesh` on free ports, user tokens from a test signer, and requests that carry a user's bearer
//! token or a service's identity.
//!
//! Every test starts the real service against the servers that run on this machine; the kit only
//! removes the code each test file would otherwise repeat. It is a dev-dependency only.

// A test kit reports a broken fixture by panicking, like the tests it serves: a harness that
// cannot create its database or start its service has nothing better to return to a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db;
mod env;
mod mesh;
mod proxy;
mod rabbit;
mod request;
mod tokens;

pub use db::{PG_SERVER, PgDatabase};
pub use env::TestEnv;
pub use mesh::{NotStarted, TestMesh, closed_port, connect};
pub use proxy::TcpProxy;
pub use rabbit::RabbitNode;
pub use request::{as_service, bad_fields, service_request, usd, with_bearer};
pub use tokens::{TestUser, TestUsers};

/// The MongoDB(-protocol) server of this test run: `MONGODB_URL` (which `scripts/test` sets to
/// the stand-in it started), or the local default.
pub fn mongodb_url() -> String {
    std::env::var("MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}
