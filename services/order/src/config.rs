//! The order service's tunables, read from the environment.

use std::time::Duration;

use shopmesh_platform::pg::PoolSettings;
use shopmesh_platform::settings::{Env, Secret, SettingsError};

/// Where a test hook crashes the process during the saga (dev profile only), to prove that a
/// restarted order service finishes or compensates every saga it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the step was recorded, before its call is made.
    Before(i32),
    /// After its call answered, before the outcome was recorded.
    After(i32),
}

#[derive(Clone, Debug)]
pub struct OrderConfig {
    pub pool: PoolSettings,
    /// Each attempt of a call to product, payment or delivery.
    pub call_timeout: Duration,
    /// How long reserving and charging may keep failing transiently (a dependency down or slow)
    /// before the checkout gives up and compensates.
    pub checkout_budget: Duration,
    /// The longest PlaceOrder and CancelOrder wait for the saga before answering with the order
    /// as it stands (the saga goes on).
    pub wait: Duration,
    /// How long one saga driver holds an order; recovery takes over orders whose lease expired.
    pub lease: Duration,
    /// How often the recovery worker looks for unfinished sagas.
    pub recovery_interval: Duration,
    /// How long reserved stock is held for a checkout.
    pub reservation_ttl: Duration,
    /// The most units one user may hold in orders still being placed (CREATED).
    pub max_held_units: i64,
    pub crash_at: Option<CrashPoint>,
}

impl Default for OrderConfig {
    fn default() -> Self {
        Self {
            pool: PoolSettings {
                max_connections: 20,
                ..PoolSettings::default()
            },
            call_timeout: Duration::from_secs(3),
            checkout_budget: Duration::from_secs(5),
            wait: Duration::from_secs(8),
            lease: Duration::from_secs(10),
            recovery_interval: Duration::from_secs(2),
            reservation_ttl: Duration::from_secs(900),
            max_held_units: 200,
            crash_at: None,
        }
    }
}

/// The order service's own database.
pub fn database_url(env: &Env) -> Result<Secret, SettingsError> {
    env.store_url(
        "ORDER_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/shopmesh_order",
    )
}

impl OrderConfig {
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let crash_at = parse_crash_point(&env.string("ORDER_FAULT_CRASH_AT", ""))
            .map_err(|reason| SettingsError::new("ORDER_FAULT_CRASH_AT", reason))?;
        if crash_at.is_some() && env.profile() != shopmesh_platform::Profile::Dev {
            return Err(SettingsError::new(
                "ORDER_FAULT_CRASH_AT",
                "is a test hook and only allowed in the dev profile",
            ));
        }
        Ok(Self {
            pool: PoolSettings {
                max_connections: env.positive("ORDER_DB_MAX_CONNECTIONS", "20")?,
                acquire_timeout: Duration::from_secs(5),
                statement_timeout: env.millis("ORDER_STATEMENT_TIMEOUT_MS", "5000")?,
            },
            call_timeout: env.millis("ORDER_CALL_TIMEOUT_MS", "3000")?,
            checkout_budget: env.millis("ORDER_CHECKOUT_BUDGET_MS", "5000")?,
            wait: env.millis("ORDER_CHECKOUT_WAIT_MS", "8000")?,
            lease: env.millis("ORDER_SAGA_LEASE_MS", "10000")?,
            recovery_interval: env.millis("ORDER_RECOVERY_INTERVAL_MS", "2000")?,
            reservation_ttl: env.secs("ORDER_RESERVATION_TTL_SECS", "900")?,
            max_held_units: i64::from(env.positive("ORDER_MAX_HELD_UNITS", "200")?),
            crash_at,
        })
    }
}

/// `before:<step>` or `after:<step>` with a step name such as `charge_payment`; empty for none.
fn parse_crash_point(raw: &str) -> Result<Option<CrashPoint>, String> {
    use shopmesh_contracts::pb::shopmesh::order::v1::SagaStep;
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || format!("{raw:?} is not before:<step> or after:<step>");
    let (when, step) = raw.split_once(':').ok_or_else(bad)?;
    let step = SagaStep::from_str_name(&format!("SAGA_STEP_{}", step.to_ascii_uppercase()))
        .ok_or_else(bad)? as i32;
    match when {
        "before" => Ok(Some(CrashPoint::Before(step))),
        "after" => Ok(Some(CrashPoint::After(step))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopmesh_contracts::pb::shopmesh::order::v1::SagaStep;

    #[test]
    fn crash_points_name_a_step() {
        assert_eq!(parse_crash_point("").unwrap(), None);
        assert_eq!(
            parse_crash_point("after:charge_payment").unwrap(),
            Some(CrashPoint::After(SagaStep::ChargePayment as i32))
        );
        assert!(parse_crash_point("during:charge_payment").is_err());
        assert!(parse_crash_point("before:nap").is_err());
    }
}
