//! The user service: accounts, profiles and addresses in MongoDB, refresh-token families in
//! Redis, Ed25519 access tokens. Exposed over gRPC only; the gateway is its REST face.
//! Registrations and profile, role and tier changes are recorded as events (user.registered,
//! user.updated) in the changed account's own document, for the outbox relay ([`events`]).

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod password;
pub mod repo;
pub mod service;
pub mod throttle;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_contracts::user::user_service_server::UserServiceServer;
use shopmesh_platform::Settings;
use shopmesh_platform::auth::TokenVerifier;
use shopmesh_platform::mesh::{Built, Context, Service, Store};
use shopmesh_platform::revocation::{RedisRevocations, RevocationCheck};
use shopmesh_platform::settings::{Env, Secret, SettingsError};

use crate::repo::{MongoUserRepo, RedisRefreshTokens, UserRepo};
use crate::service::UserService;
use crate::throttle::{LoginThrottlePolicy, RedisLoginThrottle};
use crate::token::{SigningKeys, TokenSigner};

/// gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "shopmesh.user.v1.UserService";

/// The user service's own settings.
#[derive(Clone, Debug)]
pub struct UserSettings {
    pub mongodb_url: Secret,
    pub mongodb_database: String,
    pub redis_url: Secret,
    pub redis_key_prefix: String,
    /// Ed25519 PKCS#8 PEM; without it the dev profile generates one per installation.
    pub private_key_pem: Option<Secret>,
    /// The key a rotation retired, still published so that its tokens verify until they expire.
    pub previous_key_pem: Option<Secret>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl UserSettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        Ok(Self {
            mongodb_url: env.store_url("MONGODB_URL", "mongodb://127.0.0.1:27017")?,
            mongodb_database: env.string("MONGODB_DATABASE", "shopmesh_user"),
            redis_url: env.store_url("REDIS_URL", "redis://127.0.0.1:6379")?,
            redis_key_prefix: env.string("REDIS_KEY_PREFIX", "shopmesh:"),
            private_key_pem: env.secret("JWT_PRIVATE_KEY_PEM"),
            previous_key_pem: env.secret("JWT_PREVIOUS_KEY_PEM"),
            access_ttl: env.secs("ACCESS_TOKEN_TTL_SECS", "900")?,
            refresh_ttl: env.secs("REFRESH_TOKEN_TTL_SECS", "2592000")?,
        })
    }
}

/// The access-token signing keys of this installation (refusing a missing key in production).
pub fn signing_keys(settings: &Settings, user: &UserSettings) -> anyhow::Result<SigningKeys> {
    Ok(SigningKeys::load(
        user.private_key_pem.as_ref(),
        user.previous_key_pem.as_ref(),
        settings.profile,
        &settings.run_dir,
        &settings.jwt,
        user.access_ttl,
    )?)
}

/// The signer of new access tokens of this installation.
pub fn signer(settings: &Settings, user: &UserSettings) -> anyhow::Result<TokenSigner> {
    Ok(signing_keys(settings, user)?.current()?)
}

/// How often the user service looks for a rotated key file.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Connects the stores of the user service.
pub async fn connect(settings: &Settings, user: &UserSettings) -> anyhow::Result<Arc<UserService>> {
    connect_with_keys(user, signing_keys(settings, user)?).await
}

/// [`connect`] with signing keys already loaded.
async fn connect_with_keys(
    user: &UserSettings,
    keys: SigningKeys,
) -> anyhow::Result<Arc<UserService>> {
    let users = MongoUserRepo::connect(user.mongodb_url.expose(), &user.mongodb_database).await?;
    let tokens = RedisRefreshTokens::connect(
        user.redis_url.expose(),
        &user.redis_key_prefix,
        user.refresh_ttl,
    )
    .await?;
    let sessions = RedisRevocations::new(user.redis_url.expose(), &user.redis_key_prefix)?;
    let throttle = RedisLoginThrottle::connect(
        user.redis_url.expose(),
        &user.redis_key_prefix,
        LoginThrottlePolicy::default(),
    )
    .await?;
    Ok(Arc::new(UserService::new(
        Arc::new(users),
        Arc::new(tokens),
        keys,
        Arc::new(throttle),
        Arc::new(RevocationCheck::new(Arc::new(sessions))),
    )))
}

/// Creates the MongoDB indexes the user service relies on.
pub async fn migrate(user: &UserSettings) -> anyhow::Result<()> {
    let users = MongoUserRepo::connect(user.mongodb_url.expose(), &user.mongodb_database).await?;
    users.migrate().await?;
    Ok(())
}

/// The user service's registration in the mesh.
pub struct User;

impl Service for User {
    fn name(&self) -> &'static str {
        "user"
    }

    fn default_port(&self) -> u16 {
        50051
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn stores(&self) -> &'static [Store] {
        &[Store::MongoDb, Store::Redis, Store::RabbitMq]
    }

    fn deploy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("MONGODB_URL", "mongodb://mongo:27017"),
            ("MONGODB_DATABASE", "shopmesh_user"),
            ("REDIS_URL", "redis://redis:6379"),
            ("REDIS_KEY_PREFIX", "\"shopmesh:\""),
            // Only the user service signs user tokens, so only its container holds the key.
            (
                "JWT_PRIVATE_KEY_PEM",
                "${JWT_PRIVATE_KEY_PEM:?set JWT_PRIVATE_KEY_PEM (an Ed25519 PKCS#8 PEM)}",
            ),
            ("JWT_PREVIOUS_KEY_PEM", "${JWT_PREVIOUS_KEY_PEM:-}"),
            ("ACCESS_TOKEN_TTL_SECS", "${ACCESS_TOKEN_TTL_SECS:-900}"),
            (
                "REFRESH_TOKEN_TTL_SECS",
                "${REFRESH_TOKEN_TTL_SECS:-2592000}",
            ),
        ]
    }

    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        UserSettings::from_env(env)?;
        Ok(())
    }

    fn migrate(&self, env: Env, _settings: Settings) -> BoxFuture<'static, anyhow::Result<()>> {
        async move { migrate(&UserSettings::from_env(&env)?).await }.boxed()
    }

    fn build(&self, ctx: Context) -> BoxFuture<'static, anyhow::Result<Built>> {
        async move {
            let user = UserSettings::from_env(&ctx.env)?;
            // The key check comes first: production must refuse a missing key before anything
            // else happens.
            let keys = signing_keys(&ctx.settings, &user)?;
            migrate(&user).await?;
            let service = connect_with_keys(&user, keys).await?;
            // The user service holds its keys: it verifies tokens with them directly.
            let own = TokenVerifier::with_keys(
                &ctx.settings.jwt.issuer,
                &ctx.settings.jwt.audience,
                &service.jwks(),
            );
            let mut guard = ctx.guard();
            guard.users = own.clone();
            guard.jwks = None;
            let server = shopmesh_platform::grpc::GrpcServerBuilder::new(guard).add_service(
                UserServiceServer::new(grpc::UserGrpc::new(service.clone(), own.clone())),
            );
            let ready = service.clone();
            let rotating = service.clone();
            let outbox = Arc::new(UserOutbox(service.outbox()));
            Ok(Built::new(server)
                // user.registered / user.updated leave from the user documents' outbox.
                .task(shopmesh_platform::events::relay_task(
                    outbox,
                    ctx.broker(),
                    "user",
                ))
                .ready(Arc::new(move || {
                    let service = ready.clone();
                    async move { service.ready().await.map_err(|err| err.to_string()) }.boxed()
                }))
                // A rotated key file takes effect without a restart: new tokens are signed with
                // it, and both keys verify (here and, through the JWKS, everywhere else).
                .task(Box::new(move |stop| {
                    async move {
                        let mut ticker = tokio::time::interval(KEY_RELOAD_INTERVAL);
                        let stopped = stop.wait();
                        tokio::pin!(stopped);
                        loop {
                            tokio::select! {
                                () = &mut stopped => break,
                                _ = ticker.tick() => {}
                            }
                            match rotating.keys().reload() {
                                Ok(true) => own.set_keys(&rotating.jwks()),
                                Ok(false) => {}
                                Err(err) => tracing::warn!(error = %err, "could not re-read the signing keys"),
                            }
                        }
                    }
                    .boxed()
                })))
        }
        .boxed()
    }
}

/// The relay's view of the events waiting in user documents (`pending_events`, written in the
/// same single-document update as the change they describe, so no MongoDB transaction is
/// needed). Several replicas of the user service would each relay: a user's events could then
/// leave twice (consumers deduplicate) but not out of order, as each relay reads oldest first.
struct UserOutbox(Arc<dyn repo::UserRepo>);

#[async_trait::async_trait]
impl shopmesh_platform::events::Outbox for UserOutbox {
    async fn pending(
        &self,
        limit: u32,
    ) -> anyhow::Result<Vec<shopmesh_platform::events::OutgoingEvent>> {
        let pending = self.0.pending_events(limit as usize).await?;
        Ok(pending
            .into_iter()
            .filter_map(|event| {
                let Ok(id) = uuid::Uuid::parse_str(&event.id) else {
                    tracing::error!(event_id = %event.id, "an outbox event id is not a UUID");
                    return None;
                };
                Some(shopmesh_platform::events::OutgoingEvent {
                    id,
                    event_type: event.event_type,
                    aggregate_id: event.aggregate_id,
                    payload_type: event.payload_type,
                    payload: event.payload,
                    correlation_id: event.correlation_id,
                    priority: 0,
                    occurred_at: event.created_at,
                })
            })
            .collect())
    }

    async fn mark_published(&self, ids: &[uuid::Uuid]) -> anyhow::Result<()> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.0.mark_events_published(&ids).await?;
        Ok(())
    }
}
