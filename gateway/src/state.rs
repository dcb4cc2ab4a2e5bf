//! Shared state of the gateway: one resilient gRPC channel per upstream service, the JWKS
//! cache, the session revocation check, edge policy and rate limiters.

use std::collections::BTreeMap;
use std::sync::Arc;

use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::events::Broker;
use shopmesh_platform::jwks::JwksCache;
use shopmesh_platform::revocation::RevocationCheck;

use crate::ratelimit::Limiters;
use crate::settings::GatewayPolicy;

/// A service the gateway calls: where it is and which gRPC services `/readyz` checks on it.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: &'static str,
    pub url: String,
    pub health: &'static [&'static str],
    /// The event consumers it runs.
    pub consumers: Vec<&'static str>,
}

/// The fault-injection channel of one instance of an upstream: rules live in each server's
/// memory, so a drill reaches every instance rather than whichever one a balanced call picks.
#[derive(Clone, Debug)]
pub struct DrillChannel {
    pub service: &'static str,
    /// The instance's own address.
    pub url: String,
    pub channel: MeshChannel,
}

#[derive(Clone)]
pub struct AppState {
    /// The channel of every upstream, by service name (each with its own circuit breaker).
    pub channels: Arc<BTreeMap<&'static str, MeshChannel>>,
    pub upstreams: Arc<Vec<Upstream>>,
    pub user: UserServiceClient<MeshChannel>,
    pub product: ProductServiceClient<MeshChannel>,
    pub inventory: InventoryServiceClient<MeshChannel>,
    pub jwks: Arc<JwksCache>,
    /// Whether a verified token's session is still active (logout, access changes).
    pub sessions: Arc<RevocationCheck>,
    pub policy: Arc<GatewayPolicy>,
    pub limiters: Arc<Limiters>,
    /// The message broker, for the consumers' dead-letter queues.
    pub events: Broker,
    /// Every event consumer of the mesh.
    pub consumers: Arc<Vec<&'static str>>,
    /// A channel to every instance of every upstream for the fault-injection service, each with
    /// a circuit breaker of its own: the faults a drill injects open the breaker of the
    /// upstream's main channel, and that must not keep the admin from seeing or clearing them.
    pub drill_channels: Arc<Vec<DrillChannel>>,
    /// When this gateway process started, for the console's uptime.
    pub started: std::time::Instant,
}

impl AppState {
    /// The channel to an upstream service, for a route module's typed client.
    pub fn channel(&self, service: &str) -> Option<MeshChannel> {
        self.channels.get(service).cloned()
    }
}
