//! Shared plumbing for every shopmesh service, written once: typed settings, telemetry,
//! graceful shutdown, access-token signing and verification, the gRPC server builder (health,
//! reflection, auth interceptor, request id), the gRPC status → problem+json mapping, and metrics.

pub mod auth;
pub mod grpc;
pub mod jwks;
pub mod metrics;
pub mod problem;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use settings::{Profile, Settings};
pub use shutdown::{Shutdown, ShutdownTrigger};
