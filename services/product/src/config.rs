//! Tunables of the product service that are not (yet) environment settings. The defaults are
//! what production runs; tests shorten the timings.

use std::time::Duration;

use crate::domain::Currency;

#[derive(Clone, Debug)]
pub struct ProductConfig {
    /// Every price of the catalog is in this currency.
    pub catalog_currency: Currency,
    /// How long Reserve holds stock when the caller names no TTL.
    pub default_reservation_ttl: Duration,
    /// Shortest TTL a caller may ask for.
    pub min_reservation_ttl: Duration,
    /// Longest TTL a caller may ask for.
    pub max_reservation_ttl: Duration,
    /// How often the sweeper looks for expired reservations.
    pub sweep_interval: Duration,
    /// Most reservations one sweep expires before it yields to the next tick.
    pub sweep_batch: usize,
    /// Low-stock threshold of new products that name none.
    pub default_low_stock_threshold: i32,
    /// Size of the PostgreSQL connection pool.
    pub max_connections: u32,
    /// How long a call waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` of every pooled connection: the server cancels a statement
    /// that runs longer, so a runaway query cannot hold a connection and its locks. Rounded up
    /// to whole milliseconds; zero turns the limit off, as in PostgreSQL.
    pub statement_timeout: Duration,
}

impl ProductConfig {
    /// The defaults with what the environment sets (`PRODUCT_RESERVATION_TTL_SECS`,
    /// `PRODUCT_SWEEP_INTERVAL_SECS`, `PRODUCT_DB_MAX_CONNECTIONS`,
    /// `PRODUCT_STATEMENT_TIMEOUT_MS`).
    pub fn from_env(env: &shopmesh_platform::Env) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let reservation_ttl = env.secs("PRODUCT_RESERVATION_TTL_SECS", "900")?;
        if reservation_ttl < defaults.min_reservation_ttl
            || reservation_ttl > defaults.max_reservation_ttl
        {
            anyhow::bail!(
                "invalid setting PRODUCT_RESERVATION_TTL_SECS: must be between {} and {} seconds",
                defaults.min_reservation_ttl.as_secs(),
                defaults.max_reservation_ttl.as_secs()
            );
        }
        let sweep_interval = env.secs("PRODUCT_SWEEP_INTERVAL_SECS", "5")?;
        if sweep_interval.is_zero() {
            anyhow::bail!("invalid setting PRODUCT_SWEEP_INTERVAL_SECS: must be at least 1");
        }
        let statement_timeout = env.millis("PRODUCT_STATEMENT_TIMEOUT_MS", "5000")?;
        if statement_timeout.is_zero() {
            anyhow::bail!("invalid setting PRODUCT_STATEMENT_TIMEOUT_MS: must be at least 1");
        }
        Ok(Self {
            default_reservation_ttl: reservation_ttl,
            sweep_interval,
            max_connections: env.positive("PRODUCT_DB_MAX_CONNECTIONS", "20")?,
            statement_timeout,
            ..defaults
        })
    }
}

impl Default for ProductConfig {
    fn default() -> Self {
        Self {
            catalog_currency: Currency::USD,
            default_reservation_ttl: Duration::from_secs(15 * 60),
            min_reservation_ttl: Duration::from_secs(1),
            max_reservation_ttl: Duration::from_secs(60 * 60),
            sweep_interval: Duration::from_secs(5),
            sweep_batch: 500,
            default_low_stock_threshold: 5,
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> shopmesh_platform::Env {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        shopmesh_platform::Env::from_map(map).unwrap()
    }

    #[test]
    fn the_environment_sets_the_tunables() {
        let config = ProductConfig::from_env(&env(&[
            ("PRODUCT_RESERVATION_TTL_SECS", "120"),
            ("PRODUCT_SWEEP_INTERVAL_SECS", "2"),
            ("PRODUCT_DB_MAX_CONNECTIONS", "7"),
        ]))
        .unwrap();
        assert_eq!(config.default_reservation_ttl, Duration::from_secs(120));
        assert_eq!(config.sweep_interval, Duration::from_secs(2));
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.catalog_currency, Currency::USD);
    }

    #[test]
    fn out_of_range_tunables_are_refused() {
        let err =
            ProductConfig::from_env(&env(&[("PRODUCT_RESERVATION_TTL_SECS", "7200")])).unwrap_err();
        assert!(err.to_string().contains("PRODUCT_RESERVATION_TTL_SECS"));
        let err =
            ProductConfig::from_env(&env(&[("PRODUCT_SWEEP_INTERVAL_SECS", "0")])).unwrap_err();
        assert!(err.to_string().contains("PRODUCT_SWEEP_INTERVAL_SECS"));
    }
}
