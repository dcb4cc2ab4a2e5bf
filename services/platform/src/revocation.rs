//! Ending access before an access token expires. An access token names its login session
//! (`sid`, the refresh-token family) and the account's token version when it was signed (`ver`).
//! Logging out, or presenting a rotated refresh token again, marks the session ended; changing
//! an account's role or tier bumps its token version. Every process that admits callers (the
//! gateway, the user service) asks [`RevocationCheck`] before it trusts a verified token.
//!
//! # Fail closed
//!
//! When the store cannot be asked, the check answers [`RevocationError`] and callers refuse the
//! request with 503 (`Retry-After`) rather than admit a token that may have been revoked. Redis
//! is already required by the user service (refresh tokens, so login and refresh stop anyway
//! when it is down), so failing open would buy little availability and would reopen exactly the
//! hole this closes: a logged-out or demoted admin keeping access while Redis is unreachable.
//! The in-process cache keeps the hot path off Redis for [`CACHE_TTL`], which is also how long a
//! revocation may take to reach another process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::auth::{Identity, Session};

/// How long a process trusts what it last read about a session.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Most sessions remembered at once; beyond that, expired entries go and then everything.
pub const CACHE_CAPACITY: usize = 100_000;

/// The revocation store could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("the revocation store is unavailable: {0}")]
pub struct RevocationError(#[source] pub anyhow::Error);

/// What the store knows about one session and its account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// The session was ended (logout, refresh-token reuse).
    pub ended: bool,
    /// The account's current token version; tokens signed with an older one are refused.
    pub token_version: u64,
}

/// The outcome of checking a verified token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Active,
    /// Its session was ended: logged out, or its refresh token was stolen and reused.
    SessionEnded,
    /// The account's role or tier changed after it was signed.
    Stale,
}

/// Where ended sessions and token versions are kept.
#[async_trait]
pub trait Revocations: Send + Sync {
    async fn state(&self, session_id: &str, user_id: &str)
    -> Result<SessionState, RevocationError>;
    /// The account's current token version (0 when it never changed).
    async fn token_version(&self, user_id: &str) -> Result<u64, RevocationError>;
    /// Marks a session ended for `remember` (at least the access-token lifetime plus leeway:
    /// after that, every token of the session has expired anyway).
    async fn end_session(
        &self,
        session_id: &str,
        remember: Duration,
    ) -> Result<(), RevocationError>;
    /// Bumps the account's token version, refusing every token signed before; returns the new one.
    async fn bump_token_version(&self, user_id: &str) -> Result<u64, RevocationError>;
}

/// [`Revocations`] in Redis, under the installation's key prefix (the same `REDIS_KEY_PREFIX`
/// as the user service's refresh tokens):
/// - `<prefix>session-ended:<sid>` = `1`, expiring once every token of the session has expired;
/// - `<prefix>token-version:<user id>` = an integer, never expiring: if it expired, the version
///   would fall back to 0 and tokens signed before the last change would be admitted again.
///
/// The connection is made on first use (and retried on the next use after a failure), so a
/// process starts while Redis is still coming up and answers 503 until it can ask.
pub struct RedisRevocations {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
}

impl RedisRevocations {
    /// Checks the URL only; see the type's docs for when it connects.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: OnceCell::new(),
            prefix: prefix.to_owned(),
        })
    }

    fn session_key(&self, session_id: &str) -> String {
        format!("{}session-ended:{session_id}", self.prefix)
    }

    fn version_key(&self, user_id: &str) -> String {
        format!("{}token-version:{user_id}", self.prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, RevocationError> {
        // Short timeouts: this sits on the path of every authenticated request.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1);
        self.connection
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await
            .cloned()
            .map_err(unavailable)
    }
}

fn unavailable(err: redis::RedisError) -> RevocationError {
    RevocationError(anyhow::Error::new(err).context("redis"))
}

#[async_trait]
impl Revocations for RedisRevocations {
    async fn state(
        &self,
        session_id: &str,
        user_id: &str,
    ) -> Result<SessionState, RevocationError> {
        let mut redis = self.connection().await?;
        let (ended, version): (Option<String>, Option<u64>) = redis::pipe()
            .get(self.session_key(session_id))
            .get(self.version_key(user_id))
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok(SessionState {
            ended: ended.is_some(),
            token_version: version.unwrap_or(0),
        })
    }

    async fn token_version(&self, user_id: &str) -> Result<u64, RevocationError> {
        let mut redis = self.connection().await?;
        let version: Option<u64> = redis::cmd("GET")
            .arg(self.version_key(user_id))
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok(version.unwrap_or(0))
    }

    async fn end_session(
        &self,
        session_id: &str,
        remember: Duration,
    ) -> Result<(), RevocationError> {
        let mut redis = self.connection().await?;
        let () = redis::cmd("SET")
            .arg(self.session_key(session_id))
            .arg("1")
            .arg("EX")
            .arg(remember.as_secs().max(1))
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn bump_token_version(&self, user_id: &str) -> Result<u64, RevocationError> {
        let mut redis = self.connection().await?;
        redis::cmd("INCR")
            .arg(self.version_key(user_id))
            .query_async(&mut redis)
            .await
            .map_err(unavailable)
    }
}

struct Entry {
    user_id: String,
    state: SessionState,
    read_at: Instant,
}

/// The check every admitting process runs: [`Revocations`] behind a short, bounded in-process
/// cache keyed by session. Writes made through it also drop this process's cached entries, so
/// the process that revokes sees it at once; other processes within [`CACHE_TTL`].
pub struct RevocationCheck {
    store: Arc<dyn Revocations>,
    ttl: Duration,
    capacity: usize,
    cache: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for RevocationCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationCheck")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RevocationCheck {
    pub fn new(store: Arc<dyn Revocations>) -> Self {
        Self::with_cache(store, CACHE_TTL, CACHE_CAPACITY)
    }

    pub fn with_cache(store: Arc<dyn Revocations>, ttl: Duration, capacity: usize) -> Self {
        Self {
            store,
            ttl,
            capacity: capacity.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a verified token may still be used.
    pub async fn check(
        &self,
        identity: &Identity,
        session: &Session,
    ) -> Result<Verdict, RevocationError> {
        let state = match self.cached(&session.id, &identity.user_id) {
            Some(state) => state,
            None => {
                let state = self.store.state(&session.id, &identity.user_id).await?;
                self.remember(&session.id, &identity.user_id, state);
                state
            }
        };
        Ok(if state.ended {
            Verdict::SessionEnded
        } else if session.version < state.token_version {
            Verdict::Stale
        } else {
            Verdict::Active
        })
    }

    /// The version to sign new tokens with, read from the store (never the cache).
    pub async fn token_version(&self, user_id: &str) -> Result<u64, RevocationError> {
        self.store.token_version(user_id).await
    }

    pub async fn end_session(
        &self,
        session_id: &str,
        remember: Duration,
    ) -> Result<(), RevocationError> {
        self.store.end_session(session_id, remember).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(session_id);
        }
        Ok(())
    }

    pub async fn bump_token_version(&self, user_id: &str) -> Result<u64, RevocationError> {
        let version = self.store.bump_token_version(user_id).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, entry| entry.user_id != user_id);
        }
        Ok(version)
    }

    fn cached(&self, session_id: &str, user_id: &str) -> Option<SessionState> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(session_id)
            .filter(|entry| entry.user_id == user_id && entry.read_at.elapsed() < self.ttl)
            .map(|entry| entry.state)
    }

    fn remember(&self, session_id: &str, user_id: &str, state: SessionState) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.capacity && !cache.contains_key(session_id) {
            let ttl = self.ttl;
            cache.retain(|_, entry| entry.read_at.elapsed() < ttl);
            if cache.len() >= self.capacity {
                cache.clear();
            }
        }
        cache.insert(
            session_id.to_owned(),
            Entry {
                user_id: user_id.to_owned(),
                state,
                read_at: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::auth::{Role, Tier};

    #[derive(Default)]
    struct Memory {
        ended: Mutex<Vec<String>>,
        versions: Mutex<HashMap<String, u64>>,
        reads: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Revocations for Memory {
        async fn state(
            &self,
            session_id: &str,
            user_id: &str,
        ) -> Result<SessionState, RevocationError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(RevocationError(anyhow::anyhow!("down")));
            }
            self.reads.fetch_add(1, Ordering::SeqCst);
            let ended = self.ended.lock().unwrap().iter().any(|s| s == session_id);
            Ok(SessionState {
                ended,
                token_version: self.token_version(user_id).await?,
            })
        }

        async fn token_version(&self, user_id: &str) -> Result<u64, RevocationError> {
            Ok(*self.versions.lock().unwrap().get(user_id).unwrap_or(&0))
        }

        async fn end_session(
            &self,
            session_id: &str,
            _remember: Duration,
        ) -> Result<(), RevocationError> {
            self.ended.lock().unwrap().push(session_id.to_owned());
            Ok(())
        }

        async fn bump_token_version(&self, user_id: &str) -> Result<u64, RevocationError> {
            let mut versions = self.versions.lock().unwrap();
            let version = versions.entry(user_id.to_owned()).or_default();
            *version += 1;
            Ok(*version)
        }
    }

    fn caller(user: &str) -> Identity {
        Identity {
            user_id: user.into(),
            role: Role::Admin,
            tier: Tier::Standard,
        }
    }

    fn session(id: &str, version: u64) -> Session {
        Session {
            id: id.into(),
            version,
        }
    }

    #[tokio::test]
    async fn ended_sessions_and_older_versions_are_refused() {
        let store = Arc::new(Memory::default());
        let check = RevocationCheck::new(store.clone());
        let (a, b) = (caller("a"), caller("b"));
        assert_eq!(
            check.check(&a, &session("s1", 0)).await.unwrap(),
            Verdict::Active
        );
        check
            .end_session("s1", Duration::from_secs(905))
            .await
            .unwrap();
        assert_eq!(
            check.check(&a, &session("s1", 0)).await.unwrap(),
            Verdict::SessionEnded
        );
        assert_eq!(
            check.check(&a, &session("s2", 0)).await.unwrap(),
            Verdict::Active
        );
        assert_eq!(check.bump_token_version("a").await.unwrap(), 1);
        assert_eq!(
            check.check(&a, &session("s2", 0)).await.unwrap(),
            Verdict::Stale
        );
        assert_eq!(
            check.check(&a, &session("s3", 1)).await.unwrap(),
            Verdict::Active
        );
        assert_eq!(
            check.check(&b, &session("s4", 0)).await.unwrap(),
            Verdict::Active,
            "other accounts are untouched"
        );
    }

    #[tokio::test]
    async fn reads_are_cached_briefly_and_an_unreachable_store_is_an_error() {
        let store = Arc::new(Memory::default());
        let check = RevocationCheck::with_cache(store.clone(), Duration::from_millis(50), 2);
        let a = caller("a");
        for _ in 0..5 {
            check.check(&a, &session("s1", 0)).await.unwrap();
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        check.check(&a, &session("s1", 0)).await.unwrap();
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
        // Bounded: more sessions than the capacity still answer.
        for id in ["s2", "s3", "s4"] {
            check.check(&a, &session(id, 0)).await.unwrap();
        }
        assert!(check.cache.lock().unwrap().len() <= 2);
        // Fail closed: no answer from the store is an error, never "active".
        store.down.store(true, Ordering::SeqCst);
        assert!(check.check(&a, &session("s9", 0)).await.is_err());
    }
}
