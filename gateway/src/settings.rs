//! The gateway's own settings: what it enforces at the edge.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shopmesh_platform::Profile;
use shopmesh_platform::settings::{Env, Secret, SettingsError};

/// A sustained rate with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Where the rate-limit buckets live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitStore {
    /// In this gateway's memory: each replica has its own budget (the dev default).
    Memory,
    /// In Redis (`REDIS_URL`, `REDIS_KEY_PREFIX`): one budget shared by every replica (the
    /// production default). While Redis is unreachable, a gateway limits in memory alone.
    Redis,
}

impl std::str::FromStr for RateLimitStore {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "memory" => Ok(Self::Memory),
            "redis" => Ok(Self::Redis),
            other => Err(format!("{other:?} is neither `memory` nor `redis`")),
        }
    }
}

/// What the REST gateway enforces at the edge.
#[derive(Clone, Debug)]
pub struct GatewayPolicy {
    pub cors_allowed_origins: Vec<String>,
    pub body_limit_bytes: usize,
    /// Budget of a request: propagated to every gRPC hop as its deadline; 504 when it runs out.
    pub request_timeout: Duration,
    /// Budget of a streamed product import, which may outlast any unary request.
    pub import_timeout: Duration,
    pub rate_limit_ip: RateLimit,
    pub rate_limit_user: RateLimit,
    /// Peers whose `X-Real-IP` names the client (the nginx edge). Anyone else is keyed by the
    /// address it connects from, whatever headers it sends.
    pub trusted_proxies: Vec<Cidr>,
}

/// An IP network, `10.0.0.0/8` or `::1/128`; a bare address is a /32 (or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix outside 0..={max}"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The gateway's listen address and edge policy.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    pub addr: SocketAddr,
    /// How long a client may take to send a request's headers before the connection is closed
    /// (slow-header clients would otherwise hold connections open).
    pub header_read_timeout: Duration,
    /// Where the user service records ended sessions and token versions (the same Redis and
    /// key prefix as the user service, which reads the same two keys), and where the shared
    /// rate-limit buckets live with `RATE_LIMIT_STORE=redis`.
    pub redis_url: Secret,
    pub redis_key_prefix: String,
    /// Where the per-IP and per-user buckets live (`RATE_LIMIT_STORE`).
    pub rate_limit_store: RateLimitStore,
    pub policy: GatewayPolicy,
}

impl GatewaySettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let cors_allowed_origins = env
            .string(
                "CORS_ALLOWED_ORIGINS",
                "http://127.0.0.1:8080,http://localhost:8080",
            )
            .split(',')
            .map(|origin| origin.trim().to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        let body_limit_bytes: usize = env.parse("BODY_LIMIT_BYTES", "262144")?;
        if body_limit_bytes < 1024 {
            return Err(SettingsError::new(
                "BODY_LIMIT_BYTES",
                "must be at least 1024",
            ));
        }
        Ok(Self {
            addr: env.parse(
                "GATEWAY_ADDR",
                &format!("{}:8081", env.string("BIND_HOST", "127.0.0.1")),
            )?,
            header_read_timeout: env.millis("HEADER_READ_TIMEOUT_MS", "10000")?,
            redis_url: env.store_url("REDIS_URL", "redis://127.0.0.1:6379")?,
            redis_key_prefix: env.string("REDIS_KEY_PREFIX", "shopmesh:"),
            rate_limit_store: {
                let default = match env.profile() {
                    Profile::Dev => "memory",
                    Profile::Production => "redis",
                };
                env.string("RATE_LIMIT_STORE", default)
                    .parse()
                    .map_err(|reason| SettingsError::new("RATE_LIMIT_STORE", reason))?
            },
            policy: GatewayPolicy {
                cors_allowed_origins,
                body_limit_bytes,
                request_timeout: env.millis("REQUEST_TIMEOUT_MS", "15000")?,
                import_timeout: env.millis("IMPORT_TIMEOUT_MS", "300000")?,
                rate_limit_ip: RateLimit {
                    per_second: env.positive("RATE_LIMIT_IP_PER_SECOND", "50")?,
                    burst: env.positive("RATE_LIMIT_IP_BURST", "100")?,
                },
                rate_limit_user: RateLimit {
                    per_second: env.positive("RATE_LIMIT_USER_PER_SECOND", "20")?,
                    burst: env.positive("RATE_LIMIT_USER_BURST", "40")?,
                },
                trusted_proxies: env
                    .string("TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
                    .split(',')
                    .filter(|part| !part.trim().is_empty() && part.trim() != "none")
                    .map(Cidr::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|reason| SettingsError::new("TRUSTED_PROXIES", reason))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_bad_values() {
        let s = GatewaySettings::from_env(&env(&[])).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:8081");
        assert_eq!(s.policy.request_timeout, Duration::from_secs(15));
        assert_eq!(s.rate_limit_store, RateLimitStore::Memory);
        let redis = GatewaySettings::from_env(&env(&[("RATE_LIMIT_STORE", "redis")])).unwrap();
        assert_eq!(redis.rate_limit_store, RateLimitStore::Redis);
        let err = GatewaySettings::from_env(&env(&[("RATE_LIMIT_STORE", "disk")])).unwrap_err();
        assert_eq!(err.key, "RATE_LIMIT_STORE");
        let err = GatewaySettings::from_env(&env(&[("RATE_LIMIT_IP_BURST", "0")])).unwrap_err();
        assert_eq!(err.key, "RATE_LIMIT_IP_BURST");
        let err = GatewaySettings::from_env(&env(&[("BODY_LIMIT_BYTES", "10")])).unwrap_err();
        assert_eq!(err.key, "BODY_LIMIT_BYTES");
        let err =
            GatewaySettings::from_env(&env(&[("TRUSTED_PROXIES", "10.0.0.0/33")])).unwrap_err();
        assert_eq!(err.key, "TRUSTED_PROXIES");
    }

    #[test]
    fn only_loopback_is_trusted_by_default_and_networks_match_by_prefix() {
        let s = GatewaySettings::from_env(&env(&[])).unwrap();
        let trusted = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            s.policy.trusted_proxies.iter().any(|c| c.contains(ip))
        };
        assert!(trusted("127.0.0.1"));
        assert!(trusted("::1"));
        assert!(trusted("::ffff:127.0.0.1"));
        assert!(!trusted("127.0.0.2"));
        assert!(!trusted("10.1.2.3"));
        assert!(!trusted("203.0.113.7"));
        let net = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(net.contains("172.31.255.1".parse().unwrap()));
        assert!(!net.contains("172.32.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            !Cidr::parse("fd00::/8")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("nonsense").is_err());
        let none = GatewaySettings::from_env(&env(&[("TRUSTED_PROXIES", "none")])).unwrap();
        assert!(none.policy.trusted_proxies.is_empty());
    }
}
