//! Tunables of the payment service, read from the environment once at start; tests build the
//! struct directly.

use std::time::Duration;

use shopmesh_platform::Env;
use shopmesh_platform::pg::PoolSettings;

/// The settings key of the database URL.
pub const DATABASE_URL: &str = "PAYMENT_DATABASE_URL";
/// The database URL in the dev profile.
pub const DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/shopmesh_payment";

#[derive(Clone, Debug)]
pub struct PaymentConfig {
    /// Artificial latency of every call to the test provider, to make the service slow on
    /// purpose (timeouts, PENDING answers, the callers' deadlines).
    pub provider_delay: Duration,
    /// Provider calls per charge or refund when it fails transiently, the first included.
    pub provider_attempts: u32,
    /// Base of the exponential backoff between provider attempts.
    pub provider_backoff: Duration,
    /// Longest a Charge or Refund waits for the provider before answering PENDING (the work
    /// goes on in the background and a repeat, or GetPayment, sees how it ended). The caller's
    /// deadline shortens it.
    pub provider_wait: Duration,
    /// A payment still PENDING this long after its last change was left behind (a crash, a
    /// lost task); the recovery sweeper drives it to its end with the same provider key.
    pub recover_after: Duration,
    /// How often the recovery sweeper looks for such payments.
    pub recovery_interval: Duration,
    pub pool: PoolSettings,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        Self {
            provider_delay: Duration::ZERO,
            provider_attempts: 3,
            provider_backoff: Duration::from_millis(50),
            provider_wait: Duration::from_secs(8),
            recover_after: Duration::from_secs(30),
            recovery_interval: Duration::from_secs(10),
            pool: PoolSettings {
                max_connections: 20,
                ..PoolSettings::default()
            },
        }
    }
}

impl PaymentConfig {
    /// The defaults with what the environment sets.
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let statement_timeout = env.millis("PAYMENT_STATEMENT_TIMEOUT_MS", "5000")?;
        if statement_timeout.is_zero() {
            anyhow::bail!("invalid setting PAYMENT_STATEMENT_TIMEOUT_MS: must be at least 1");
        }
        let provider_wait = env.millis("PAYMENT_PROVIDER_WAIT_MS", "8000")?;
        if provider_wait.is_zero() {
            anyhow::bail!("invalid setting PAYMENT_PROVIDER_WAIT_MS: must be at least 1");
        }
        let recover_after = env.secs("PAYMENT_RECOVER_AFTER_SECS", "30")?;
        if recover_after.is_zero() {
            anyhow::bail!("invalid setting PAYMENT_RECOVER_AFTER_SECS: must be at least 1");
        }
        Ok(Self {
            recover_after,
            // Often enough that a stranded payment waits at most about twice its threshold.
            recovery_interval: recover_after.min(defaults.recovery_interval),
            provider_delay: env.millis("PAYMENT_PROVIDER_DELAY_MS", "0")?,
            provider_attempts: env.positive("PAYMENT_PROVIDER_MAX_ATTEMPTS", "3")?,
            provider_backoff: env.millis("PAYMENT_PROVIDER_BACKOFF_MS", "50")?,
            provider_wait,
            pool: PoolSettings {
                max_connections: env.positive("PAYMENT_DB_MAX_CONNECTIONS", "20")?,
                statement_timeout,
                ..defaults.pool
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::from_map(map).unwrap()
    }

    #[test]
    fn the_environment_sets_the_tunables() {
        let config = PaymentConfig::from_env(&env(&[
            ("PAYMENT_PROVIDER_DELAY_MS", "250"),
            ("PAYMENT_PROVIDER_MAX_ATTEMPTS", "5"),
            ("PAYMENT_DB_MAX_CONNECTIONS", "7"),
            ("PAYMENT_RECOVER_AFTER_SECS", "4"),
        ]))
        .unwrap();
        assert_eq!(config.provider_delay, Duration::from_millis(250));
        assert_eq!(config.provider_attempts, 5);
        assert_eq!(config.pool.max_connections, 7);
        assert_eq!(config.recover_after, Duration::from_secs(4));
        assert_eq!(config.recovery_interval, Duration::from_secs(4));
        assert_eq!(
            PaymentConfig::from_env(&env(&[])).unwrap().provider_delay,
            Duration::ZERO
        );
    }

    #[test]
    fn nonsense_is_refused_with_its_key() {
        let err =
            PaymentConfig::from_env(&env(&[("PAYMENT_PROVIDER_MAX_ATTEMPTS", "0")])).unwrap_err();
        assert!(err.to_string().contains("PAYMENT_PROVIDER_MAX_ATTEMPTS"));
        let err =
            PaymentConfig::from_env(&env(&[("PAYMENT_PROVIDER_DELAY_MS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("PAYMENT_PROVIDER_DELAY_MS"));
    }
}
