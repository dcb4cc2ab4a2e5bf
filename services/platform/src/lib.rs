//! Shared plumbing for every shopmesh service, written once: the service registration trait and
//! runner (`mesh`), typed settings, telemetry, graceful shutdown, access-token verification,
//! service identity, the gRPC server builder (health, reflection, method guard, fault injection, request id), the
//! resilient gRPC client, the gRPC status → problem+json mapping, metrics, and small shared
//! kits (timestamps, text validation, cursors).

pub mod address;
pub mod auth;
pub mod balance;
pub mod client;
pub mod cursor;
pub mod events;
pub mod faults;
pub mod grpc;
pub mod identity;
pub mod jwks;
pub mod mesh;
pub mod metrics;
pub mod page;
pub mod pg;
pub mod problem;
pub mod revocation;
pub mod settings;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod text;
pub mod time;

pub use settings::{Env, Profile, Settings};
pub use shutdown::{Shutdown, ShutdownTrigger};
