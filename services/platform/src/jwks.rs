//! The user service's public keys (JWKS), fetched over gRPC and kept fresh, for every process
//! that verifies access tokens without holding the signing key (the gateway, split-out services).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shopmesh_contracts::user::GetJwksRequest;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use tokio::sync::Notify;

use crate::auth::{Jwk, TokenVerifier};
use crate::client::MeshChannel;
use crate::shutdown::Shutdown;

/// How often the public keys are fetched again when all is well.
const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Fastest a refresh may be forced by tokens with an unknown key id.
const JWKS_FORCED_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The user service's public keys, fetched over gRPC and kept fresh in the background.
pub struct JwksCache {
    verifier: TokenVerifier,
    keys: RwLock<Vec<Jwk>>,
    refresh: Notify,
    last_forced: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier,
            keys: RwLock::new(Vec::new()),
            refresh: Notify::new(),
            last_forced: Mutex::new(None),
        }
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    pub fn keys(&self) -> Vec<Jwk> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn is_loaded(&self) -> bool {
        self.verifier.has_keys()
    }

    /// Asks the background task to fetch the keys now, at most once per interval.
    pub fn request_refresh(&self) {
        let Ok(mut last) = self.last_forced.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= JWKS_FORCED_MIN_INTERVAL) {
            *last = Some(Instant::now());
            self.refresh.notify_one();
        }
    }

    async fn fetch(
        &self,
        client: &mut UserServiceClient<MeshChannel>,
    ) -> Result<(), tonic::Status> {
        let response = client.get_jwks(GetJwksRequest {}).await?.into_inner();
        let keys: Vec<Jwk> = response
            .keys
            .into_iter()
            .map(|k| Jwk {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                alg: k.alg,
                use_: k.r#use,
            })
            .collect();
        self.verifier.set_keys(&keys);
        if let Ok(mut guard) = self.keys.write() {
            *guard = keys;
        }
        Ok(())
    }

    /// Fetches the keys until shutdown: quickly (with backoff) until the first success, then
    /// every few minutes or when asked.
    pub async fn run(
        self: Arc<Self>,
        mut client: UserServiceClient<MeshChannel>,
        shutdown: Shutdown,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.fetch(&mut client).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    JWKS_REFRESH
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "could not fetch the JWKS from the user service");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.refresh.notified() => {}
                () = shutdown.clone().wait() => return,
            }
        }
    }
}
