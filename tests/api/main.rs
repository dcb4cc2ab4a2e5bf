//! End-to-end tests of the REST edge (through nginx), the gRPC servers and the binary, against
//! real MongoDB-protocol, Redis and nginx servers.

mod helpers;

mod account_flow;
mod admin;
mod catalog;
mod edge;
mod grpc;
mod process;
mod tokens;
mod validation;
