//! Tunables of the analytics service, read from the environment once at start; tests build the
//! struct directly.

use shopmesh_platform::Env;
use shopmesh_platform::pg::PoolSettings;

/// The settings key of the database URL.
pub const DATABASE_URL: &str = "ANALYTICS_DATABASE_URL";
/// The database URL in the dev profile.
pub const DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/shopmesh_analytics";
/// The settings key of the shop currency.
pub const CURRENCY: &str = "ANALYTICS_CURRENCY";

#[derive(Clone, Debug)]
pub struct AnalyticsConfig {
    /// The shop currency (ISO 4217, upper case): every figure is in it, and orders in any other
    /// currency are left out of them.
    pub currency: String,
    pub pool: PoolSettings,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            currency: "USD".to_owned(),
            pool: PoolSettings::default(),
        }
    }
}

/// Whether `code` looks like an ISO 4217 alphabetic code: three upper-case ASCII letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

impl AnalyticsConfig {
    /// The defaults with what the environment sets.
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let currency = env.string(CURRENCY, &defaults.currency);
        if !is_currency_code(&currency) {
            anyhow::bail!(
                "invalid setting {CURRENCY}: expected an ISO 4217 code such as USD, got {currency:?}"
            );
        }
        let statement_timeout = env.millis("ANALYTICS_STATEMENT_TIMEOUT_MS", "5000")?;
        if statement_timeout.is_zero() {
            anyhow::bail!("invalid setting ANALYTICS_STATEMENT_TIMEOUT_MS: must be at least 1");
        }
        Ok(Self {
            currency,
            pool: PoolSettings {
                max_connections: env.positive("ANALYTICS_DB_MAX_CONNECTIONS", "10")?,
                statement_timeout,
                ..defaults.pool
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

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
        let config = AnalyticsConfig::from_env(&env(&[
            ("ANALYTICS_CURRENCY", "EUR"),
            ("ANALYTICS_DB_MAX_CONNECTIONS", "3"),
            ("ANALYTICS_STATEMENT_TIMEOUT_MS", "750"),
        ]))
        .unwrap();
        assert_eq!(config.currency, "EUR");
        assert_eq!(config.pool.max_connections, 3);
        assert_eq!(config.pool.statement_timeout, Duration::from_millis(750));
        let defaults = AnalyticsConfig::from_env(&env(&[])).unwrap();
        assert_eq!(defaults.currency, "USD");
        assert_eq!(defaults.pool.max_connections, 10);
    }

    #[test]
    fn nonsense_is_refused_with_its_key() {
        for (key, value) in [
            ("ANALYTICS_CURRENCY", "usd"),
            ("ANALYTICS_CURRENCY", "DOLLAR"),
            ("ANALYTICS_DB_MAX_CONNECTIONS", "0"),
            ("ANALYTICS_STATEMENT_TIMEOUT_MS", "0"),
            ("ANALYTICS_STATEMENT_TIMEOUT_MS", "soon"),
        ] {
            let err = AnalyticsConfig::from_env(&env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }
}
