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
}

impl ProductConfig {
    /// The defaults with what the environment sets (`PRODUCT_RESERVATION_TTL_SECS`,
    /// `PRODUCT_SWEEP_INTERVAL_SECS`, `PRODUCT_DB_MAX_CONNECTIONS`).
    pub fn from_settings(settings: &shopmesh_platform::Settings) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let product = settings.product;
        if product.reservation_ttl < defaults.min_reservation_ttl
            || product.reservation_ttl > defaults.max_reservation_ttl
        {
            anyhow::bail!(
                "invalid setting PRODUCT_RESERVATION_TTL_SECS: must be between {} and {} seconds",
                defaults.min_reservation_ttl.as_secs(),
                defaults.max_reservation_ttl.as_secs()
            );
        }
        if product.sweep_interval.is_zero() {
            anyhow::bail!("invalid setting PRODUCT_SWEEP_INTERVAL_SECS: must be at least 1");
        }
        Ok(Self {
            default_reservation_ttl: product.reservation_ttl,
            sweep_interval: product.sweep_interval,
            max_connections: product.db_max_connections,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> shopmesh_platform::Settings {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        shopmesh_platform::Settings::from_map(&map).unwrap()
    }

    #[test]
    fn the_environment_sets_the_tunables() {
        let config = ProductConfig::from_settings(&settings(&[
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
            ProductConfig::from_settings(&settings(&[("PRODUCT_RESERVATION_TTL_SECS", "7200")]))
                .unwrap_err();
        assert!(err.to_string().contains("PRODUCT_RESERVATION_TTL_SECS"));
        let err = ProductConfig::from_settings(&settings(&[("PRODUCT_SWEEP_INTERVAL_SECS", "0")]))
            .unwrap_err();
        assert!(err.to_string().contains("PRODUCT_SWEEP_INTERVAL_SECS"));
    }
}
