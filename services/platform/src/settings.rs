//! Typed settings read once from the environment (12-factor). Every key is listed in
//! `.env.example`. [`Env`] is the environment every crate reads its own keys from; [`Settings`]
//! holds the keys every process shares. Tests build an [`Env`] from a map instead of touching
//! the process environment.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
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

/// What every process needs to verify user access tokens (the user service alone signs them).
#[derive(Clone, Debug)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
}

/// Outbound gRPC call limits and resilience, shared by every client in the process.
#[derive(Clone, Copy, Debug)]
pub struct GrpcClientSettings {
    pub connect_timeout: Duration,
    /// Budget of a unary call when the caller brings no deadline of its own.
    pub request_timeout: Duration,
    /// Budget of a long-running stream (imports, watches).
    pub stream_timeout: Duration,
    /// Attempts of an idempotent call, the first included.
    pub retry_max_attempts: u32,
    /// Base of the jittered exponential backoff between attempts.
    pub retry_backoff_base: Duration,
    /// Consecutive failures after which the circuit to an upstream opens.
    pub breaker_failures: u32,
    /// How long an open circuit fails fast before it lets one probe through.
    pub breaker_open_for: Duration,
}

/// Server-side limits of every gRPC server.
#[derive(Clone, Copy, Debug)]
pub struct GrpcServerSettings {
    /// Longest a unary RPC may run, whatever deadline the caller sent.
    pub unary_timeout: Duration,
    /// Longest a long-running stream may run.
    pub stream_timeout: Duration,
    /// Whether the server's fault-injection service may set rules (`FAULT_INJECTION_ENABLED`);
    /// off by default, for drills only.
    pub fault_injection: bool,
}

/// Settings every process of the mesh reads. Each service and the gateway read their own keys
/// through [`Env`] in their own crate.
#[derive(Clone, Debug)]
pub struct Settings {
    pub profile: Profile,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// Where traces go (nowhere by default).
    pub tracing: TracingSettings,
    /// Prometheus `/metrics` of a process that runs no gateway.
    pub metrics_addr: SocketAddr,
    /// Where the dev profile keeps what it generates per installation (keys, local data).
    pub run_dir: PathBuf,
    /// The services' identity keys: `<service>.key` (private, 0600) and `<service>.pub`.
    pub mesh_keys_dir: PathBuf,
    pub jwt: JwtSettings,
    pub grpc_client: GrpcClientSettings,
    pub grpc_server: GrpcServerSettings,
    /// The message broker and how events are relayed and consumed.
    pub events: crate::events::EventSettings,
    pub shutdown_grace: Duration,
}

/// OpenTelemetry trace export ([`crate::telemetry`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TracingSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's OTLP/HTTP base URL (`/v1/traces` is
    /// appended), e.g. `http://otel-collector:4318`. Unset or empty: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`: the `service.name` of this process's spans (default `shopmesh`).
    pub service_name: String,
}

/// A setting that is missing or does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct SettingsError {
    pub key: String,
    pub reason: String,
}

impl SettingsError {
    pub fn new(key: &str, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The environment a process was started with (after `.env`), and the profile it selects.
/// Every crate reads its own keys through it; the keys read are remembered so that a test can
/// check that `.env.example` documents each of them.
#[derive(Clone)]
pub struct Env {
    lookup: Arc<Lookup>,
    profile: Profile,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Result<Self, SettingsError> {
        Self::new(Arc::new(|key: &str| std::env::var(key).ok()))
    }

    /// A map; keys absent from it take their defaults.
    pub fn from_map(map: HashMap<String, String>) -> Result<Self, SettingsError> {
        Self::new(Arc::new(move |key: &str| map.get(key).cloned()))
    }

    fn new(lookup: Arc<Lookup>) -> Result<Self, SettingsError> {
        let mut env = Self {
            lookup,
            profile: Profile::Dev,
            read: Arc::new(Mutex::new(BTreeSet::new())),
        };
        env.profile = match env.string("SHOPMESH_PROFILE", "dev").as_str() {
            "dev" | "development" => Profile::Dev,
            "production" | "prod" => Profile::Production,
            other => {
                return Err(SettingsError::new(
                    "SHOPMESH_PROFILE",
                    format!("expected dev or production, got {other:?}"),
                ));
            }
        };
        Ok(env)
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Every key looked up so far.
    pub fn keys_read(&self) -> Vec<String> {
        self.read
            .lock()
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The value of `key`, unless unset or blank.
    pub fn raw(&self, key: &str) -> Option<String> {
        if let Ok(mut read) = self.read.lock() {
            read.insert(key.to_owned());
        }
        (self.lookup)(key).filter(|value| !value.trim().is_empty())
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.raw(key).unwrap_or_else(|| default.to_owned())
    }

    /// A secret value, if set.
    pub fn secret(&self, key: &str) -> Option<Secret> {
        self.raw(key).map(Secret::new)
    }

    /// A store URL with a dev default; the production profile must set it explicitly, so a
    /// production process never silently talks to a developer's local store.
    pub fn store_url(&self, key: &str, dev_default: &str) -> Result<Secret, SettingsError> {
        match (self.raw(key), self.profile) {
            (Some(value), _) => Ok(Secret::new(value)),
            (None, Profile::Dev) => Ok(Secret::new(dev_default)),
            (None, Profile::Production) => Err(SettingsError::new(
                key,
                "required in the production profile",
            )),
        }
    }

    pub fn parse<T>(&self, key: &str, default: &str) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let value = self.string(key, default);
        value
            .trim()
            .parse()
            .map_err(|err: T::Err| SettingsError::new(key, err.to_string()))
    }

    pub fn millis(&self, key: &str, default: &str) -> Result<Duration, SettingsError> {
        self.parse::<u64>(key, default).map(Duration::from_millis)
    }

    pub fn secs(&self, key: &str, default: &str) -> Result<Duration, SettingsError> {
        self.parse::<u64>(key, default).map(Duration::from_secs)
    }

    pub fn positive(&self, key: &str, default: &str) -> Result<u32, SettingsError> {
        let value: u32 = self.parse(key, default)?;
        if value == 0 {
            return Err(SettingsError::new(key, "must be greater than zero"));
        }
        Ok(value)
    }
}

impl Settings {
    /// Reads the mesh-wide keys of `env`.
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let log_format = match env.string("LOG_FORMAT", "json").as_str() {
            "json" => LogFormat::Json,
            "pretty" | "text" => LogFormat::Pretty,
            other => {
                return Err(SettingsError::new(
                    "LOG_FORMAT",
                    format!("expected json or pretty, got {other:?}"),
                ));
            }
        };
        let run_dir = PathBuf::from(env.string("SHOPMESH_RUN_DIR", ".run"));
        let mesh_keys_dir = env
            .raw("MESH_KEYS_DIR")
            .map_or_else(|| run_dir.join("mesh"), PathBuf::from);
        let stream_timeout = env.millis("GRPC_STREAM_TIMEOUT_MS", "300000")?;
        Ok(Self {
            profile: env.profile(),
            log_format,
            log_filter: env.string("RUST_LOG", "info"),
            tracing: TracingSettings {
                otlp_endpoint: env.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
                service_name: env.string("OTEL_SERVICE_NAME", "shopmesh"),
            },
            metrics_addr: env.parse(
                "METRICS_ADDR",
                &format!("{}:9464", env.string("BIND_HOST", "127.0.0.1")),
            )?,
            run_dir,
            mesh_keys_dir,
            jwt: JwtSettings {
                issuer: env.string("JWT_ISSUER", "shopmesh"),
                audience: env.string("JWT_AUDIENCE", "shopmesh"),
            },
            grpc_client: GrpcClientSettings {
                connect_timeout: env.millis("GRPC_CONNECT_TIMEOUT_MS", "2000")?,
                request_timeout: env.millis("GRPC_REQUEST_TIMEOUT_MS", "5000")?,
                stream_timeout,
                retry_max_attempts: env.positive("GRPC_RETRY_MAX_ATTEMPTS", "3")?,
                retry_backoff_base: env.millis("GRPC_RETRY_BACKOFF_MS", "25")?,
                breaker_failures: env.positive("GRPC_BREAKER_FAILURES", "5")?,
                breaker_open_for: env.millis("GRPC_BREAKER_OPEN_MS", "5000")?,
            },
            grpc_server: GrpcServerSettings {
                unary_timeout: env.millis("GRPC_SERVER_TIMEOUT_MS", "10000")?,
                stream_timeout,
                fault_injection: env.parse("FAULT_INJECTION_ENABLED", "false")?,
            },
            events: crate::events::EventSettings::from_env(env)?,
            shutdown_grace: env.secs("SHUTDOWN_GRACE_SECS", "10")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, SettingsError> {
        Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_env(&env(pairs)?)
    }

    #[test]
    fn defaults_are_the_dev_profile_on_loopback() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.profile, Profile::Dev);
        assert_eq!(s.metrics_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(s.mesh_keys_dir, PathBuf::from(".run/mesh"));
        assert_eq!(s.grpc_client.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = settings(&[("METRICS_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(err.key, "METRICS_ADDR");
        let err = env(&[("SHOPMESH_PROFILE", "staging")]).unwrap_err();
        assert_eq!(err.key, "SHOPMESH_PROFILE");
        let err = settings(&[("GRPC_BREAKER_FAILURES", "0")]).unwrap_err();
        assert_eq!(err.key, "GRPC_BREAKER_FAILURES");
    }

    #[test]
    fn production_needs_explicit_store_urls() {
        let prod = env(&[("SHOPMESH_PROFILE", "production")]).unwrap();
        assert_eq!(
            prod.store_url("REDIS_URL", "redis://127.0.0.1")
                .unwrap_err()
                .key,
            "REDIS_URL"
        );
        let set = env(&[
            ("SHOPMESH_PROFILE", "production"),
            ("REDIS_URL", "redis://redis:6379"),
        ])
        .unwrap();
        assert_eq!(
            set.store_url("REDIS_URL", "redis://127.0.0.1")
                .unwrap()
                .expose(),
            "redis://redis:6379"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let e = env(&[("REDIS_URL", "redis://:hunter2@host")]).unwrap();
        let url = e.store_url("REDIS_URL", "").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn the_keys_read_are_remembered() {
        let e = env(&[]).unwrap();
        let _ = Settings::from_env(&e).unwrap();
        let keys = e.keys_read();
        assert!(keys.contains(&"GRPC_REQUEST_TIMEOUT_MS".to_owned()));
        assert!(keys.contains(&"SHOPMESH_PROFILE".to_owned()));
    }
}
