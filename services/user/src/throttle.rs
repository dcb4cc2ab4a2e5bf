//! The login throttle: exponential back-off per account and per client IP, kept in Redis so
//! that every replica of the user service sees the same counts.
//!
//! Every attempt is counted before the password is checked (one atomic script checks and
//! counts), so a burst of parallel guesses cannot all slip in before the first failure is
//! recorded. A successful login then resets its account and takes its own attempt off the
//! client IP's count. Once a key has `limit` attempts within the window, the next attempt must
//! wait `base * 2^(attempts - limit)` (capped) after the last counted one; refused attempts are
//! not counted. A key is forgotten a window after its last counted attempt.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// How hard the throttle holds back repeated failures.
#[derive(Clone, Debug)]
pub struct LoginThrottlePolicy {
    /// Failed attempts on one account before it backs off.
    pub account_limit: u32,
    /// Failed attempts from one client IP (on any accounts) before it backs off.
    pub ip_limit: u32,
    /// How long counts are kept after the last counted attempt.
    pub window: Duration,
    /// The first back-off; each further failure doubles it.
    pub base: Duration,
    /// The longest back-off.
    pub cap: Duration,
}

impl Default for LoginThrottlePolicy {
    fn default() -> Self {
        Self {
            account_limit: 5,
            ip_limit: 20,
            window: Duration::from_secs(15 * 60),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(15 * 60),
        }
    }
}

/// The outcome of asking to attempt a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Go ahead; the attempt has been counted.
    Allowed,
    /// Refused; try again after this long.
    Wait(Duration),
}

/// A login throttle: ask before checking a password, report a success afterwards.
#[async_trait]
pub trait LoginThrottle: Send + Sync {
    /// Counts an attempt on `account` (a normalized email) from `client_ip`, unless either
    /// is backing off.
    async fn attempt(&self, account: &str, client_ip: Option<IpAddr>) -> anyhow::Result<Attempt>;
    /// Resets `account` after a successful login and takes the attempt off `client_ip`.
    async fn succeeded(&self, account: &str, client_ip: Option<IpAddr>) -> anyhow::Result<()>;
}

/// [`LoginThrottle`] in Redis: one hash (`n` attempts, `last` attempt in ms) per account and
/// per IP. All keys share one hash tag, so a script touching two of them stays valid on a
/// Redis cluster.
pub struct RedisLoginThrottle {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    policy: LoginThrottlePolicy,
}

/// KEYS: the account key, then the IP key if known. ARGV: now (ms), window (ms), base (ms),
/// cap (ms), then each key's limit. Returns 0 when the attempt was counted, otherwise the
/// milliseconds left to wait.
const ATTEMPT: &str = r"
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[4 + i])
  local f = redis.call('HMGET', key, 'n', 'last')
  local n = tonumber(f[1]) or 0
  local last = tonumber(f[2]) or 0
  if n >= limit then
    local lock = math.min(tonumber(ARGV[3]) * 2 ^ math.min(n - limit, 30), tonumber(ARGV[4]))
    local left = math.ceil(last + lock - now)
    if left > wait then wait = left end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'n', 1)
  redis.call('HSET', key, 'last', ARGV[1])
  redis.call('PEXPIRE', key, ARGV[2])
end
return 0
";

/// KEYS: the account key, then the IP key if known.
const SUCCEEDED: &str = r"
redis.call('DEL', KEYS[1])
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 and tonumber(redis.call('HGET', KEYS[2], 'n') or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], 'n', -1)
end
return 1
";

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisLoginThrottle {
    pub async fn connect(
        url: &str,
        prefix: &str,
        policy: LoginThrottlePolicy,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            redis,
            prefix: prefix.to_owned(),
            policy,
        })
    }

    /// Accounts are keyed by a digest, so Redis never holds email addresses.
    fn keys(&self, account: &str, client_ip: Option<IpAddr>) -> Vec<String> {
        let digest = Sha256::digest(account.as_bytes());
        let mut keys = vec![format!(
            "{}login:{{throttle}}:account:{digest:x}",
            self.prefix
        )];
        if let Some(ip) = client_ip {
            keys.push(format!("{}login:{{throttle}}:ip:{ip}", self.prefix));
        }
        keys
    }
}

#[async_trait]
impl LoginThrottle for RedisLoginThrottle {
    async fn attempt(&self, account: &str, client_ip: Option<IpAddr>) -> anyhow::Result<Attempt> {
        let now = millis(SystemTime::now().duration_since(UNIX_EPOCH)?);
        let script = redis::Script::new(ATTEMPT);
        let mut invocation = script.prepare_invoke();
        for key in self.keys(account, client_ip) {
            invocation.key(key);
        }
        invocation
            .arg(now)
            .arg(millis(self.policy.window))
            .arg(millis(self.policy.base))
            .arg(millis(self.policy.cap))
            .arg(self.policy.account_limit)
            .arg(self.policy.ip_limit);
        let mut redis = self.redis.clone();
        let wait_ms: u64 = invocation.invoke_async(&mut redis).await?;
        Ok(if wait_ms == 0 {
            Attempt::Allowed
        } else {
            Attempt::Wait(Duration::from_millis(wait_ms))
        })
    }

    async fn succeeded(&self, account: &str, client_ip: Option<IpAddr>) -> anyhow::Result<()> {
        let script = redis::Script::new(SUCCEEDED);
        let mut invocation = script.prepare_invoke();
        for key in self.keys(account, client_ip) {
            invocation.key(key);
        }
        let mut redis = self.redis.clone();
        let _: i64 = invocation.invoke_async(&mut redis).await?;
        Ok(())
    }
}
