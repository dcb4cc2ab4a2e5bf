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
