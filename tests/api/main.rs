//! End-to-end tests of the REST edge (through nginx), the gRPC servers and the binary, against
//! real MongoDB-protocol, Redis and nginx servers.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod account_flow;
mod admin;
mod admin_ops;
mod balance;
mod catalog;
mod catalog_cache;
mod checkout;
mod edge;
mod events;
mod faults;
mod grpc;
mod loadgen;
mod log_hygiene;
mod mesh;
mod notifications;
mod process;
mod saga_crash;
mod sessions;
mod shared_limit;
mod tokens;
mod traces;
mod ui;
mod validation;
