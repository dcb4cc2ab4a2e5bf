//! Shared state of the gateway: gRPC clients, the JWKS cache, edge policy and rate limiters.

use std::sync::Arc;

use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::jwks::JwksCache;
use shopmesh_platform::settings::GatewayPolicy;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

use crate::middleware::Limiters;

#[derive(Clone)]
pub struct AppState {
    pub user: UserServiceClient<Channel>,
    pub user_health: HealthClient<Channel>,
    pub product: ProductServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub product_health: HealthClient<Channel>,
    pub jwks: Arc<JwksCache>,
    pub policy: Arc<GatewayPolicy>,
    pub limiters: Arc<Limiters>,
}
