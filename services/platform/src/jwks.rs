//! The user service's public keys (JWKS), fetched over gRPC and kept fresh, for every process
//! that verifies access tokens without holding the signing key (the gateway, split-out services).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shopmesh_contracts::user::GetJwksRequest;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use tokio::sync::{Notify, watch};

use crate::auth::{Jwk, TokenVerifier};
use crate::client::MeshChannel;
use crate::shutdown::Shutdown;

/// How often the public keys are fetched again when all is well.
const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Fastest a refresh may be forced by tokens with an unknown key id.
const JWKS_FORCED_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How long after a forced refresh callers may still wait for it to land.
const JWKS_FORCED_IN_FLIGHT: Duration = Duration::from_secs(1);

/// The user service's public keys, fetched over gRPC and kept fresh in the background.
pub struct JwksCache {
    verifier: TokenVerifier,
    keys: RwLock<Vec<Jwk>>,
    refresh: Notify,
    last_forced: Mutex<Option<Instant>>,
    /// Counts successful fetches, so a caller can wait for the next one.
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier,
            keys: RwLock::new(Vec::new()),
            refresh: Notify::new(),
            last_forced: Mutex::new(None),
            generation: watch::Sender::new(0),
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

    /// Asks the background task to fetch the keys now, at most once per interval. True when
    /// a fetch was asked for or one was asked for just now (so one is under way).
    pub fn request_refresh(&self) -> bool {
        let Ok(mut last) = self.last_forced.lock() else {
            return false;
        };
        match *last {
            Some(at) if at.elapsed() < JWKS_FORCED_IN_FLIGHT => true,
            Some(at) if at.elapsed() < JWKS_FORCED_MIN_INTERVAL => false,
            _ => {
                *last = Some(Instant::now());
                self.refresh.notify_one();
                true
            }
        }
    }

    /// A token names a key this cache does not know: perhaps the user service rotated its
    /// key. Asks for a fetch (rate-limited) and waits, at most `wait`, for it to land, so the
    /// first tokens of a new key verify instead of failing. False when no fetch is coming.
    pub async fn refresh_for_unknown_key(&self, wait: Duration) -> bool {
        let mut fetched = self.generation.subscribe();
        let before = *fetched.borrow_and_update();
        if !self.request_refresh() {
            return false;
        }
        tokio::time::timeout(wait, fetched.wait_for(|generation| *generation > before))
            .await
            .is_ok_and(|changed| changed.is_ok())
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
        self.generation.send_modify(|generation| *generation += 1);
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
