//! The gateway's own settings: what it enforces at the edge.

use std::net::SocketAddr;
use std::time::Duration;

use shopmesh_platform::settings::{Env, SettingsError};

/// A sustained rate with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
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
    pub trust_proxy_headers: bool,
}

/// The gateway's listen address and edge policy.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    pub addr: SocketAddr,
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
                trust_proxy_headers: env.parse("TRUST_PROXY_HEADERS", "true")?,
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
        let err = GatewaySettings::from_env(&env(&[("RATE_LIMIT_IP_BURST", "0")])).unwrap_err();
        assert_eq!(err.key, "RATE_LIMIT_IP_BURST");
        let err = GatewaySettings::from_env(&env(&[("BODY_LIMIT_BYTES", "10")])).unwrap_err();
        assert_eq!(err.key, "BODY_LIMIT_BYTES");
    }
}
