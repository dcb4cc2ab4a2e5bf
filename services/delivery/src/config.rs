//! Tunables of the delivery service. The defaults are what production runs; tests shorten the
//! timings by building the struct.

use std::time::Duration;

use shopmesh_platform::Env;
use shopmesh_platform::pg::PoolSettings;

/// The database URL key.
pub const DATABASE_URL: &str = "DELIVERY_DATABASE_URL";

/// Longest packing time: the fulfilment transaction (and its database connection) is held that
/// long.
pub const MAX_PACKING: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// The carrier new shipments are labelled with.
    pub carrier: String,
    /// Whether the courier simulator runs in this process.
    pub courier_enabled: bool,
    /// Time between two courier steps of one shipment: a paid order is DELIVERED three steps
    /// after its label is created.
    pub courier_step: Duration,
    /// How often the courier looks for shipments whose next step is due.
    pub courier_poll: Duration,
    /// Most shipments one courier pass advances; the rest wait for the next pass (VIP first).
    pub courier_batch: i64,
    /// How long the packing station takes per order (`DELIVERY_PACKING_MS`): the fulfilment
    /// consumer packs one order.paid at a time, highest priority first, and spends this long on
    /// each before it records the shipment fulfilled, so a burst of paid orders forms a backlog
    /// in the priority queue that VIP orders overtake. Simulated work: the consumer sleeps this
    /// long inside the transaction that records the fulfilment. Zero packs at once (tests).
    pub packing: Duration,
    /// How often the order-sync worker looks for order updates to deliver (it is also woken by
    /// every transition this process applies).
    pub sync_poll: Duration,
    /// First retry delay of an order update the order service did not accept; doubles per
    /// attempt up to `sync_backoff_max`.
    pub sync_backoff_base: Duration,
    pub sync_backoff_max: Duration,
    /// How long a claimed order update is held by the worker that claimed it (an attempt that
    /// outlives it, say because the process died, is picked up again).
    pub sync_lease: Duration,
    /// Most order updates one worker pass claims.
    pub sync_batch: i64,
    /// How often TrackShipment looks for new events in the database when no in-process
    /// transition woke it (another instance may have recorded them).
    pub track_poll: Duration,
    pub pool: PoolSettings,
}

impl DeliveryConfig {
    /// The defaults with what the environment sets (`DELIVERY_COURIER_ENABLED`,
    /// `DELIVERY_COURIER_STEP_MS`, `DELIVERY_PACKING_MS`, `DELIVERY_DB_MAX_CONNECTIONS`,
    /// `DELIVERY_STATEMENT_TIMEOUT_MS`).
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let courier_step = env.millis("DELIVERY_COURIER_STEP_MS", "15000")?;
        if courier_step < Duration::from_millis(10) {
            anyhow::bail!("invalid setting DELIVERY_COURIER_STEP_MS: must be at least 10");
        }
        let packing = env.millis("DELIVERY_PACKING_MS", "200")?;
        if packing > MAX_PACKING {
            anyhow::bail!(
                "invalid setting DELIVERY_PACKING_MS: must be at most {} (an order is packed \
                 inside a database transaction)",
                MAX_PACKING.as_millis()
            );
        }
        let statement_timeout = env.millis("DELIVERY_STATEMENT_TIMEOUT_MS", "5000")?;
        if statement_timeout.is_zero() {
            anyhow::bail!("invalid setting DELIVERY_STATEMENT_TIMEOUT_MS: must be at least 1");
        }
        Ok(Self {
            courier_enabled: env.parse("DELIVERY_COURIER_ENABLED", "true")?,
            courier_step,
            courier_poll: poll_for(courier_step),
            packing,
            pool: PoolSettings {
                max_connections: env.positive("DELIVERY_DB_MAX_CONNECTIONS", "10")?,
                statement_timeout,
                ..defaults.pool
            },
            ..defaults
        })
    }

    /// The defaults with a courier step of `step` (the poll interval follows it).
    pub fn with_courier_step(step: Duration) -> Self {
        Self {
            courier_step: step,
            courier_poll: poll_for(step),
            ..Self::default()
        }
    }
}

/// A quarter of the step, between 10 ms and 1 s: steps are taken close to when they are due
/// without polling the database needlessly often.
fn poll_for(step: Duration) -> Duration {
    (step / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            carrier: "SimPost".to_owned(),
            courier_enabled: true,
            courier_step: Duration::from_secs(15),
            courier_poll: Duration::from_secs(1),
            courier_batch: 100,
            packing: Duration::from_millis(200),
            sync_poll: Duration::from_millis(500),
            sync_backoff_base: Duration::from_millis(500),
            sync_backoff_max: Duration::from_secs(60),
            sync_lease: Duration::from_secs(30),
            sync_batch: 50,
            track_poll: Duration::from_millis(250),
            pool: PoolSettings::default(),
        }
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
        let config = DeliveryConfig::from_env(&env(&[
            ("DELIVERY_COURIER_ENABLED", "false"),
            ("DELIVERY_COURIER_STEP_MS", "100"),
            ("DELIVERY_DB_MAX_CONNECTIONS", "3"),
            ("DELIVERY_PACKING_MS", "0"),
        ]))
        .unwrap();
        assert_eq!(config.packing, Duration::ZERO);
        assert!(!config.courier_enabled);
        assert_eq!(config.courier_step, Duration::from_millis(100));
        assert_eq!(config.courier_poll, Duration::from_millis(25));
        assert_eq!(config.pool.max_connections, 3);
        let defaults = DeliveryConfig::from_env(&env(&[])).unwrap();
        assert!(defaults.courier_enabled);
        assert_eq!(defaults.courier_step, Duration::from_secs(15));
        assert_eq!(defaults.courier_poll, Duration::from_secs(1));
        assert_eq!(defaults.packing, Duration::from_millis(200));
        assert_eq!(defaults.packing, DeliveryConfig::default().packing);
    }

    #[test]
    fn bad_tunables_are_refused() {
        let err = DeliveryConfig::from_env(&env(&[("DELIVERY_COURIER_STEP_MS", "0")])).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_COURIER_STEP_MS"));
        let err =
            DeliveryConfig::from_env(&env(&[("DELIVERY_COURIER_ENABLED", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_COURIER_ENABLED"));
        let err = DeliveryConfig::from_env(&env(&[("DELIVERY_PACKING_MS", "60001")])).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_PACKING_MS"));
        let err = DeliveryConfig::from_env(&env(&[("DELIVERY_PACKING_MS", "-1")])).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_PACKING_MS"));
    }
}
