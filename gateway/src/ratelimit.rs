//! The gateway's rate limits (GCRA) behind one port with two adapters:
//! - [`MemoryLimiters`]: keyed buckets in this process (governor), for a single gateway;
//! - [`RedisLimiters`]: one budget shared by every gateway replica, kept in Redis by one Lua
//!   script, with the in-memory buckets as its fallback while Redis cannot be reached.
//!
//! The port is an enum rather than a trait object: a check happens on every request, and an
//! enum dispatches without boxing a future, so the in-memory path costs what it always did.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::settings::{RateLimit, RateLimitStore};

/// The rate limiter of the gateway: per client IP and per verified user.
pub enum Limiters {
    Memory(MemoryLimiters),
    Redis(Box<RedisLimiters>),
}

impl Limiters {
    /// The adapter the settings name. Redis is connected on first use.
    pub fn new(
        store: RateLimitStore,
        per_ip: RateLimit,
        per_user: RateLimit,
        redis_url: &str,
        redis_key_prefix: &str,
    ) -> anyhow::Result<Self> {
        Ok(match store {
            RateLimitStore::Memory => Self::Memory(MemoryLimiters::new(per_ip, per_user)),
            RateLimitStore::Redis => Self::Redis(Box::new(RedisLimiters::new(
                redis_url,
                redis_key_prefix,
                per_ip,
                per_user,
            )?)),
        })
    }

    /// `Err(wait)` when the client's IP has no budget left, `wait` being how long until it has.
    pub async fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        match self {
            Self::Memory(memory) => memory.check_ip(ip),
            Self::Redis(redis) => redis.check_ip(ip).await,
        }
    }

    /// `Err(wait)` when the user has no budget left.
    pub async fn check_user(&self, user_id: &String) -> Result<(), Duration> {
        match self {
            Self::Memory(memory) => memory.check_user(user_id),
            Self::Redis(redis) => redis.check_user(user_id).await,
        }
    }

    /// Forgets in-memory buckets that are full again (Redis keys expire by themselves).
    pub fn prune(&self) {
        match self {
            Self::Memory(memory) => memory.prune(),
            Self::Redis(redis) => redis.fallback.prune(),
        }
    }
}

type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// Per-IP and per-user token buckets (GCRA), in memory per gateway instance. nginx adds a
/// per-IP limit across the whole pool.
pub struct MemoryLimiters {
    per_ip: KeyedLimiter<IpAddr>,
    per_user: KeyedLimiter<String>,
}

fn quota(limit: RateLimit) -> Quota {
    let rate = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl MemoryLimiters {
    pub fn new(per_ip: RateLimit, per_user: RateLimit) -> Self {
        Self {
            per_ip: RateLimiter::keyed(quota(per_ip)),
            per_user: RateLimiter::keyed(quota(per_user)),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        // The limiter's own clock, read only on refusal: building a clock calibrates it, far
        // too costly per request.
        self.per_ip
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.per_ip.clock().now()))
    }

    pub fn check_user(&self, user_id: &String) -> Result<(), Duration> {
        self.per_user
            .check_key(user_id)
            .map_err(|not_until| not_until.wait_time_from(self.per_user.clock().now()))
    }

    /// Forgets buckets that are full again, so memory follows active clients only.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_user.retain_recent();
        self.per_user.shrink_to_fit();
    }
}

/// GCRA in one round trip. KEYS[1]: the bucket; ARGV[1]: the emission interval in ms (may be
/// fractional); ARGV[2]: the burst. The key holds the theoretical arrival time (TAT) in ms of
/// Redis's own clock, so the gateways' clocks do not matter, and expires when the bucket is
/// full again. Returns 0 when the request is admitted, else the wait in ms (at least 1).
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - capacity - now
if wait > 0 then
  return math.max(1, math.ceil(wait))
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat))
redis.call('PEXPIRE', KEYS[1], math.ceil(new_tat - now))
return 0
";

/// How long after a Redis failure checks go straight to the in-memory buckets, so an outage
/// does not add a timeout to every request.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// At most one warning about an unreachable Redis per this interval.
const WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// Limits in Redis (see [`GCRA`]), shared by every gateway on the same Redis and
/// `REDIS_KEY_PREFIX`: `<prefix>ratelimit:ip:<ip>` and `<prefix>ratelimit:user:<id>`.
///
/// When Redis cannot be reached the check fails open to this gateway's in-memory buckets (a
/// rate limiter must not take the shop down), and a warning is logged at most once per
/// [`WARNING_INTERVAL`]. The connection is made on first use and retried after failures.
pub struct RedisLimiters {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    ip_prefix: String,
    user_prefix: String,
    /// Emission interval in ms and burst, as the script's arguments.
    ip_args: (f64, u32),
    user_args: (f64, u32),
    fallback: MemoryLimiters,
    started: Instant,
    /// Milliseconds since `started` until which Redis is skipped (0: not skipped).
    skip_until_ms: AtomicU64,
    /// Milliseconds since `started` of the last warning, plus one (0: none yet).
    warned_at_ms: AtomicU64,
}

fn script_args(limit: RateLimit) -> (f64, u32) {
    (
        1000.0 / f64::from(limit.per_second.max(1)),
        limit.burst.max(1),
    )
}

impl RedisLimiters {
    /// Checks the URL only; see the type's docs for when it connects.
    pub fn new(
        url: &str,
        key_prefix: &str,
        per_ip: RateLimit,
        per_user: RateLimit,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: OnceCell::new(),
            script: redis::Script::new(GCRA),
            ip_prefix: format!("{key_prefix}ratelimit:ip:"),
            user_prefix: format!("{key_prefix}ratelimit:user:"),
            ip_args: script_args(per_ip),
            user_args: script_args(per_user),
            fallback: MemoryLimiters::new(per_ip, per_user),
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            warned_at_ms: AtomicU64::new(0),
        })
    }

    pub async fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = format!("{}{ip}", self.ip_prefix);
        match self.shared(&key, self.ip_args).await {
            Some(verdict) => verdict,
            None => self.fallback.check_ip(ip),
        }
    }

    pub async fn check_user(&self, user_id: &String) -> Result<(), Duration> {
        let key = format!("{}{user_id}", self.user_prefix);
        match self.shared(&key, self.user_args).await {
            Some(verdict) => verdict,
            None => self.fallback.check_user(user_id),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The shared verdict, or `None` when Redis could not give one.
    async fn shared(
        &self,
        key: &str,
        (interval, burst): (f64, u32),
    ) -> Option<Result<(), Duration>> {
        if self.elapsed_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        match self.invoke(key, interval, burst).await {
            Ok(0) => Some(Ok(())),
            Ok(wait_ms) => Some(Err(Duration::from_millis(wait_ms))),
            Err(err) => {
                self.failed(&err);
                None
            }
        }
    }

    async fn invoke(&self, key: &str, interval: f64, burst: u32) -> redis::RedisResult<u64> {
        // Short timeouts: this sits on the path of every request, and a slow Redis must cost
        // little before the fallback takes over.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(250))
            .set_response_timeout(Duration::from_millis(250))
            .set_number_of_retries(0);
        let mut connection = self
            .connection
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await?
            .clone();
        // EVALSHA; redis-rs loads the script and retries when the server does not know it.
        self.script
            .key(key)
            .arg(interval)
            .arg(burst)
            .invoke_async(&mut connection)
            .await
    }

    fn failed(&self, err: &redis::RedisError) {
        let now = self.elapsed_ms();
        let backoff = u64::try_from(REDIS_BACKOFF.as_millis()).unwrap_or(u64::MAX);
        self.skip_until_ms
            .store(now.saturating_add(backoff), Ordering::Relaxed);
        let interval = u64::try_from(WARNING_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_add(1).saturating_sub(last) >= interval;
        if due
            && self
                .warned_at_ms
                .compare_exchange(
                    last,
                    now.saturating_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(
                error = %err,
                "rate-limit store unreachable: limiting in this gateway's memory only"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn redis_url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    fn prefix() -> String {
        format!("test:{}:", uuid::Uuid::new_v4().simple())
    }

    const TEN_PER_SECOND: RateLimit = RateLimit {
        per_second: 1,
        burst: 10,
    };

    fn shared(prefix: &str, limit: RateLimit) -> RedisLimiters {
        RedisLimiters::new(&redis_url(), prefix, limit, limit).unwrap()
    }

    #[tokio::test]
    async fn the_burst_is_admitted_then_a_wait_of_about_one_interval_is_asked() {
        let limiters = shared(&prefix(), TEN_PER_SECOND);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        for i in 0..10 {
            assert_eq!(
                limiters.shared_check_ip(ip).await,
                Some(Ok(())),
                "request {i}"
            );
        }
        let Some(Err(wait)) = limiters.shared_check_ip(ip).await else {
            panic!("the 11th request of a burst of 10 is refused");
        };
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another client has a budget of its own, and so has a user.
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert_eq!(limiters.shared_check_ip(other).await, Some(Ok(())));
        assert!(limiters.check_user(&"u-1".to_owned()).await.is_ok());
    }

    #[tokio::test]
    async fn two_limiters_share_one_budget_and_keys_expire() {
        let prefix = prefix();
        let first = shared(&prefix, TEN_PER_SECOND);
        let second = shared(&prefix, TEN_PER_SECOND);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let mut admitted = 0;
        for i in 0..20 {
            let limiter = if i % 2 == 0 { &first } else { &second };
            match limiter.shared_check_ip(ip).await {
                Some(Ok(())) => admitted += 1,
                Some(Err(_)) => {}
                None => panic!("Redis answers"),
            }
        }
        assert!((10..=11).contains(&admitted), "{admitted} admitted");
        let mut redis = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}ratelimit:ip:{ip}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(
            ttl > 0 && ttl <= 10_000,
            "the bucket expires once full: {ttl}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_memory() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let limiters = RedisLimiters::new(
            &format!("redis://127.0.0.1:{closed}"),
            &prefix(),
            TEN_PER_SECOND,
            TEN_PER_SECOND,
        )
        .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert!(limiters.check_ip(ip).await.is_ok());
        }
        assert!(limiters.check_ip(ip).await.is_err(), "memory still limits");
    }

    impl RedisLimiters {
        async fn shared_check_ip(&self, ip: IpAddr) -> Option<Result<(), Duration>> {
            self.shared(&format!("{}{ip}", self.ip_prefix), self.ip_args)
                .await
        }
    }
}
