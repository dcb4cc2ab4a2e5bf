//! The cart service: shopping carts in Redis and checkout.
//!
//! One cart per user (from the verified access token) and one per anonymous cart id (the UUID in
//! the `x-shopmesh-cart-id` metadata), each a Redis key with a sliding TTL. Every change is one
//! Lua script that checks the caps (50 lines, 99 units a line) where it writes, so concurrent
//! requests cannot pass them. Prices come from the product service whenever a cart is read or
//! changed; Checkout hands the lines and their price snapshots to the order service.

pub mod domain;
pub mod error;
pub mod grpc;
pub mod repo;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::cart::v1::cart_service_server::CartServiceServer;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_client::OrderServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::Settings;
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::settings::{Env, Secret, SettingsError};

use crate::repo::RedisCartStore;
use crate::service::{CartService, Peers};

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.cart.v1.CartService";

/// The cart service's own settings.
#[derive(Clone, Debug)]
pub struct CartSettings {
    pub redis_url: Secret,
    /// Prefix of every cart key; tests use a unique one each.
    pub key_prefix: String,
    /// A cart disappears this long after it was last read or changed.
    pub ttl: Duration,
}

impl CartSettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let ttl = env.secs("CART_TTL_SECS", "604800")?;
        if ttl.is_zero() {
            return Err(SettingsError::new("CART_TTL_SECS", "must be positive"));
        }
        Ok(Self {
            redis_url: env.store_url("CART_REDIS_URL", "redis://127.0.0.1:6379")?,
            key_prefix: env.string("CART_KEY_PREFIX", "shopmesh:cart:"),
            ttl,
        })
    }
}

/// Connects the cart store and the peers.
pub async fn connect(ctx: &Context, settings: &CartSettings) -> anyhow::Result<Arc<CartService>> {
    let store = RedisCartStore::connect(
        settings.redis_url.expose(),
        &settings.key_prefix,
        settings.ttl,
    )
    .await?;
    let peers = Peers {
        products: ProductServiceClient::new(ctx.channel("product")?),
        users: UserServiceClient::new(ctx.channel("user")?),
        orders: OrderServiceClient::new(ctx.channel("order")?),
    };
    Ok(Arc::new(CartService::new(
        Arc::new(store),
        peers,
        settings.ttl,
    )))
}

/// The cart service's registration in the mesh.
#[derive(Default)]
pub struct Cart;

impl Service for Cart {
    fn name(&self) -> &'static str {
        "cart"
    }

    fn default_port(&self) -> u16 {
        50053
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn stores(&self) -> &'static [Store] {
        &[Store::Redis]
    }

    fn deploy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("CART_REDIS_URL", "redis://redis:6379"),
            ("CART_KEY_PREFIX", "\"shopmesh:cart:\""),
            ("CART_TTL_SECS", "${CART_TTL_SECS:-604800}"),
        ]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        CartSettings::from_env(env)?;
        Ok(())
    }

    fn migrate(&self, _env: Env, _settings: Settings) -> BoxFuture<'static, anyhow::Result<()>> {
        // Redis needs no schema.
        async move { Ok(()) }.boxed()
    }

    fn build(&self, ctx: Context) -> BoxFuture<'static, anyhow::Result<Built>> {
        async move {
            let settings = CartSettings::from_env(&ctx.env)?;
            let service = connect(&ctx, &settings).await?;
            let server = ctx
                .server()
                .add_service(CartServiceServer::new(grpc::CartGrpc::new(service.clone())));
            Ok(Built::new(server).ready(Arc::new(move || {
                let service = service.clone();
                async move { service.ready().await.map_err(|err| err.to_string()) }.boxed()
            })))
        }
        .boxed()
    }
}
