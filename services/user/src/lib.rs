//! The user service: accounts, profiles and addresses in MongoDB, refresh-token families in
//! Redis, Ed25519 access tokens. Exposed over gRPC only; the gateway is its REST face.

pub mod domain;
pub mod error;
pub mod grpc;
pub mod repo;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use shopmesh_contracts::user::user_service_server::UserServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::auth::{TokenSigner, TokenVerifier};
use shopmesh_platform::grpc::{GrpcServer, GrpcServerBuilder};
use shopmesh_platform::shutdown::Shutdown;
use tonic_health::ServingStatus;

use crate::repo::{MongoUserRepo, RedisRefreshTokens, UserRepo};
use crate::service::UserService;

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.user.v1.UserService";

/// How often readiness re-checks MongoDB and Redis.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Connects the stores of the user service.
pub async fn connect(settings: &Settings) -> anyhow::Result<Arc<UserService>> {
    let signer = TokenSigner::from_settings(&settings.jwt, settings.profile)?;
    let users =
        MongoUserRepo::connect(settings.mongodb_url.expose(), &settings.mongodb_database).await?;
    let tokens = RedisRefreshTokens::connect(
        settings.redis_url.expose(),
        &settings.redis_key_prefix,
        settings.jwt.refresh_ttl,
    )
    .await?;
    Ok(Arc::new(UserService::new(
        Arc::new(users),
        Arc::new(tokens),
        signer,
    )))
}

/// Creates the MongoDB indexes the user service relies on.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let users =
        MongoUserRepo::connect(settings.mongodb_url.expose(), &settings.mongodb_database).await?;
    users.migrate().await?;
    Ok(())
}

/// A built, bound user service.
pub struct Application {
    server: GrpcServer,
    service: Arc<UserService>,
}

impl Application {
    /// Loads the signing key (refusing the dev key in production), connects the stores, ensures
    /// indexes, and binds `USER_GRPC_ADDR` (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The key check comes first: production must refuse a missing or dev key before anything else.
        let signer = TokenSigner::from_settings(&settings.jwt, settings.profile)?;
        migrate(settings).await?;
        let service = connect(settings).await?;
        let verifier = TokenVerifier::for_signer(&signer);
        let server = GrpcServerBuilder::new(verifier)
            .add_service(UserServiceServer::new(grpc::UserGrpc::new(service.clone())))
            .bind(settings.user_grpc_addr)
            .await?;
        Ok(Self { server, service })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn service(&self) -> Arc<UserService> {
        self.service.clone()
    }

    /// Serves until `shutdown`; readiness follows the stores meanwhile.
    pub async fn run_until_stopped(
        self,
        shutdown: Shutdown,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let health = self.server.health();
        let service = self.service.clone();
        let watch = shutdown.clone();
        let readiness = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(READINESS_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = watch.clone().wait() => break,
                }
                if watch.is_triggered() {
                    break;
                }
                let status = match service.ready().await {
                    Ok(()) => ServingStatus::Serving,
                    Err(err) => {
                        tracing::warn!(error = %err, "user service dependencies unavailable");
                        ServingStatus::NotServing
                    }
                };
                health.set_service_status(SERVICE_NAME, status).await;
            }
        });
        let result = self.server.run_until_stopped(shutdown, grace).await;
        readiness.abort();
        result
    }
}
