//! Typed settings read once from the environment (12-factor). Every key is listed in
//! `.env.example`. Tests build [`Settings`] from a map instead of touching the process environment.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Which defaults are acceptable. Secrets have defaults only in [`Profile::Dev`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Production,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A value that must never appear in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Access and refresh token settings.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// Ed25519 PKCS#8 PEM; `None` selects the built-in dev key, which only the dev profile accepts.
    pub private_key_pem: Option<Secret>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

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
    pub request_timeout: Duration,
    pub rate_limit_ip: RateLimit,
    pub rate_limit_user: RateLimit,
    pub trust_proxy_headers: bool,
}

/// Tunables of the product service.
#[derive(Clone, Copy, Debug)]
pub struct ProductSettings {
    /// How long Reserve holds stock when the caller names no TTL.
    pub reservation_ttl: Duration,
    /// How often expired reservations are swept.
    pub sweep_interval: Duration,
    /// Size of the PostgreSQL connection pool.
    pub db_max_connections: u32,
}

/// Outbound gRPC call limits.
#[derive(Clone, Copy, Debug)]
pub struct GrpcClientSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Everything the `shopmesh` binary reads from its environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub profile: Profile,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub gateway_addr: SocketAddr,
    pub user_grpc_addr: SocketAddr,
    pub user_grpc_url: String,
    pub product_grpc_addr: SocketAddr,
    pub product_grpc_url: String,
    pub metrics_addr: SocketAddr,
    pub mongodb_url: Secret,
    pub mongodb_database: String,
    pub redis_url: Secret,
    pub redis_key_prefix: String,
    pub product_database_url: Secret,
    pub product: ProductSettings,
    pub jwt: JwtSettings,
    pub gateway: GatewayPolicy,
    pub grpc_client: GrpcClientSettings,
    pub shutdown_grace: Duration,
}

/// A setting that is missing or does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct SettingsError {
    pub key: &'static str,
    pub reason: String,
}

struct Source<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Source<'_> {
    fn raw(&self, key: &str) -> Option<String> {
        (self.lookup)(key).filter(|value| !value.trim().is_empty())
    }

    fn string(&self, key: &'static str, default: &str) -> String {
        self.raw(key).unwrap_or_else(|| default.to_owned())
    }

    /// A value with a dev default; the production profile must set it explicitly, so a
    /// production process never silently talks to a developer's local store.
    fn store_url(
        &self,
        key: &'static str,
        dev_default: &str,
        profile: Profile,
    ) -> Result<Secret, SettingsError> {
        match (self.raw(key), profile) {
            (Some(value), _) => Ok(Secret::new(value)),
            (None, Profile::Dev) => Ok(Secret::new(dev_default)),
            (None, Profile::Production) => Err(SettingsError {
                key,
                reason: "required in the production profile".into(),
            }),
        }
    }

    fn parse<T>(&self, key: &'static str, default: &str) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let value = self.string(key, default);
        value.trim().parse().map_err(|err: T::Err| SettingsError {
            key,
            reason: err.to_string(),
        })
    }

    fn millis(&self, key: &'static str, default: &str) -> Result<Duration, SettingsError> {
        self.parse::<u64>(key, default).map(Duration::from_millis)
    }

    fn secs(&self, key: &'static str, default: &str) -> Result<Duration, SettingsError> {
        self.parse::<u64>(key, default).map(Duration::from_secs)
    }

    fn positive(&self, key: &'static str, default: &str) -> Result<u32, SettingsError> {
        let value: u32 = self.parse(key, default)?;
        if value == 0 {
            return Err(SettingsError {
                key,
                reason: "must be greater than zero".into(),
            });
        }
        Ok(value)
    }
}

impl Settings {
    /// Reads the process environment (after `.env`, which `main` loads).
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|key| std::env::var(key).ok())
    }

    /// Reads settings from a map; keys absent from it take their defaults.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, SettingsError> {
        Self::from_lookup(&|key| map.get(key).cloned())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let src = Source { lookup };
        let profile = match src.string("SHOPMESH_PROFILE", "dev").as_str() {
            "dev" | "development" => Profile::Dev,
            "production" | "prod" => Profile::Production,
            other => {
                return Err(SettingsError {
                    key: "SHOPMESH_PROFILE",
                    reason: format!("expected dev or production, got {other:?}"),
                });
            }
        };
        let log_format = match src.string("LOG_FORMAT", "json").as_str() {
            "json" => LogFormat::Json,
            "pretty" | "text" => LogFormat::Pretty,
            other => {
                return Err(SettingsError {
                    key: "LOG_FORMAT",
                    reason: format!("expected json or pretty, got {other:?}"),
                });
            }
        };
        let user_grpc_addr: SocketAddr = src.parse("USER_GRPC_ADDR", "127.0.0.1:50051")?;
        let user_grpc_url = src
            .raw("USER_GRPC_URL")
            .unwrap_or_else(|| format!("http://{user_grpc_addr}"));
        let product_grpc_addr: SocketAddr = src.parse("PRODUCT_GRPC_ADDR", "127.0.0.1:50052")?;
        let product_grpc_url = src
            .raw("PRODUCT_GRPC_URL")
            .unwrap_or_else(|| format!("http://{product_grpc_addr}"));
        let cors_allowed_origins = src
            .string(
                "CORS_ALLOWED_ORIGINS",
                "http://127.0.0.1:8080,http://localhost:8080",
            )
            .split(',')
            .map(|origin| origin.trim().to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        let body_limit_bytes: usize = src.parse("BODY_LIMIT_BYTES", "262144")?;
        if body_limit_bytes < 1024 {
            return Err(SettingsError {
                key: "BODY_LIMIT_BYTES",
                reason: "must be at least 1024".into(),
            });
        }

        Ok(Self {
            profile,
            log_format,
            log_filter: src.string("RUST_LOG", "info"),
            gateway_addr: src.parse("GATEWAY_ADDR", "127.0.0.1:8081")?,
            user_grpc_addr,
            user_grpc_url,
            product_grpc_addr,
            product_grpc_url,
            metrics_addr: src.parse("METRICS_ADDR", "127.0.0.1:9464")?,
            mongodb_url: src.store_url("MONGODB_URL", "mongodb://127.0.0.1:27017", profile)?,
            mongodb_database: src.string("MONGODB_DATABASE", "shopmesh_user"),
            redis_url: src.store_url("REDIS_URL", "redis://127.0.0.1:6379", profile)?,
            redis_key_prefix: src.string("REDIS_KEY_PREFIX", "shopmesh:"),
            product_database_url: src.store_url(
                "PRODUCT_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/shopmesh_product",
                profile,
            )?,
            product: ProductSettings {
                reservation_ttl: src.secs("PRODUCT_RESERVATION_TTL_SECS", "900")?,
                sweep_interval: src.secs("PRODUCT_SWEEP_INTERVAL_SECS", "5")?,
                db_max_connections: src.positive("PRODUCT_DB_MAX_CONNECTIONS", "20")?,
            },
            jwt: JwtSettings {
                private_key_pem: src.raw("JWT_PRIVATE_KEY_PEM").map(Secret::new),
                issuer: src.string("JWT_ISSUER", "shopmesh"),
                audience: src.string("JWT_AUDIENCE", "shopmesh"),
                access_ttl: src.secs("ACCESS_TOKEN_TTL_SECS", "900")?,
                refresh_ttl: src.secs("REFRESH_TOKEN_TTL_SECS", "2592000")?,
            },
            gateway: GatewayPolicy {
                cors_allowed_origins,
                body_limit_bytes,
                request_timeout: src.millis("REQUEST_TIMEOUT_MS", "15000")?,
                rate_limit_ip: RateLimit {
                    per_second: src.positive("RATE_LIMIT_IP_PER_SECOND", "50")?,
                    burst: src.positive("RATE_LIMIT_IP_BURST", "100")?,
                },
                rate_limit_user: RateLimit {
                    per_second: src.positive("RATE_LIMIT_USER_PER_SECOND", "20")?,
                    burst: src.positive("RATE_LIMIT_USER_BURST", "40")?,
                },
                trust_proxy_headers: src.parse("TRUST_PROXY_HEADERS", "true")?,
            },
            grpc_client: GrpcClientSettings {
                connect_timeout: src.millis("GRPC_CONNECT_TIMEOUT_MS", "2000")?,
                request_timeout: src.millis("GRPC_REQUEST_TIMEOUT_MS", "5000")?,
            },
            shutdown_grace: src.secs("SHUTDOWN_GRACE_SECS", "10")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_map(&map)
    }

    #[test]
    fn defaults_are_the_dev_profile_on_loopback() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.profile, Profile::Dev);
        assert_eq!(s.gateway_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(s.user_grpc_url, "http://127.0.0.1:50051");
        assert!(s.jwt.private_key_pem.is_none());
        assert_eq!(s.jwt.access_ttl, Duration::from_secs(900));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = settings(&[("GATEWAY_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(err.key, "GATEWAY_ADDR");
        let err = settings(&[("SHOPMESH_PROFILE", "staging")]).unwrap_err();
        assert_eq!(err.key, "SHOPMESH_PROFILE");
        let err = settings(&[("RATE_LIMIT_IP_BURST", "0")]).unwrap_err();
        assert_eq!(err.key, "RATE_LIMIT_IP_BURST");
    }

    #[test]
    fn production_needs_explicit_store_urls() {
        let err = settings(&[("SHOPMESH_PROFILE", "production")]).unwrap_err();
        assert_eq!(err.key, "MONGODB_URL");
        let ok = settings(&[
            ("SHOPMESH_PROFILE", "production"),
            ("MONGODB_URL", "mongodb://mongo:27017"),
            ("REDIS_URL", "redis://redis:6379"),
            ("PRODUCT_DATABASE_URL", "postgres://db/shopmesh_product"),
        ])
        .unwrap();
        assert_eq!(ok.profile, Profile::Production);
        assert_eq!(ok.redis_url.expose(), "redis://redis:6379");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = settings(&[
            ("JWT_PRIVATE_KEY_PEM", "-----BEGIN PRIVATE KEY----- sekrit"),
            ("REDIS_URL", "redis://:hunter2@host"),
        ])
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("sekrit"));
        assert!(!printed.contains("hunter2"));
    }
}
