//! Delivers the order status changes shipments owe (SHIPPED, COMPLETED) to the order service.
//!
//! Each change was written in the same transaction as the tracking event that caused it, so
//! none is lost when the order service is down: the worker claims due ones (with a lease, so
//! several instances never send the same one at once, and one that died mid-call is picked up
//! again), at most the oldest pending one per shipment (SHIPPED always reaches the order before
//! COMPLETED), and retries with exponential backoff until the order service answers OK.
//! UpdateOrderStatus is idempotent, so a change sent twice does no harm.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use shopmesh_platform::shutdown::Shutdown;
use uuid::Uuid;

use crate::config::DeliveryConfig;
use crate::domain::OrderUpdate;
use crate::repo::{OrderSync, RepoError, ShipmentRepo, SyncOutcome};
use crate::service::Signals;

/// Why the order service did not apply an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderUpdateError {
    /// For good: the order is cancelled or refunded (or unknown). Retrying cannot help.
    Rejected(String),
    /// For now: unreachable, overloaded, timed out … Retried later.
    Failed(String),
}

/// The order service's UpdateOrderStatus, as the worker needs it.
#[async_trait]
pub trait OrderUpdates: Send + Sync {
    async fn update_status(
        &self,
        order_id: Uuid,
        status: OrderUpdate,
        note: &str,
    ) -> Result<(), OrderUpdateError>;
}

pub struct OrderSyncWorker {
    repo: Arc<dyn ShipmentRepo>,
    orders: Arc<dyn OrderUpdates>,
    config: DeliveryConfig,
    signals: Arc<Signals>,
}

impl OrderSyncWorker {
    pub fn new(
        repo: Arc<dyn ShipmentRepo>,
        orders: Arc<dyn OrderUpdates>,
        config: DeliveryConfig,
        signals: Arc<Signals>,
    ) -> Self {
        Self {
            repo,
            orders,
            config,
            signals,
        }
    }

    /// Claims the due updates and sends them (concurrently: at most one per shipment is
    /// claimed). Returns how many the order service applied.
    pub async fn pass(&self) -> Result<usize, RepoError> {
        let claimed = self
            .repo
            .claim_syncs(self.config.sync_batch, self.config.sync_lease)
            .await?;
        let results =
            futures::future::join_all(claimed.iter().map(|sync| self.deliver(sync))).await;
        let mut applied = 0;
        for result in results {
            if result? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Sends one update and records the outcome; `true` when it is settled.
    async fn deliver(&self, sync: &OrderSync) -> Result<bool, RepoError> {
        let outcome = match self
            .orders
            .update_status(sync.order_id, sync.status, &sync.note)
            .await
        {
            Ok(()) => {
                tracing::info!(order_id = %sync.order_id, status = sync.status.as_str(), "order updated");
                SyncOutcome::Done
            }
            Err(OrderUpdateError::Rejected(reason)) => {
                tracing::warn!(
                    order_id = %sync.order_id,
                    shipment_id = %sync.shipment_id,
                    status = sync.status.as_str(),
                    reason = %reason,
                    "the order service refused the order update; not retrying"
                );
                SyncOutcome::Rejected(reason)
            }
            Err(OrderUpdateError::Failed(error)) => {
                let delay = backoff(
                    self.config.sync_backoff_base,
                    self.config.sync_backoff_max,
                    sync.attempts,
                );
                tracing::warn!(
                    order_id = %sync.order_id,
                    status = sync.status.as_str(),
                    attempt = sync.attempts + 1,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %error,
                    "order update failed; will retry"
                );
                let retry_at = chrono::Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                SyncOutcome::Retry { retry_at, error }
            }
        };
        let label = match outcome {
            SyncOutcome::Done => "done",
            SyncOutcome::Rejected(_) => "rejected",
            SyncOutcome::Retry { .. } => "retry",
        };
        metrics::counter!("delivery_order_sync_attempts_total", "outcome" => label).increment(1);
        let settled = !matches!(outcome, SyncOutcome::Retry { .. });
        self.repo.finish_sync(sync.id, &outcome).await?;
        Ok(settled)
    }

    /// Runs passes until shutdown: again at once after a pass that settled something (the
    /// shipment's next update may be waiting behind it), otherwise on the next transition of
    /// this process or after the poll interval. A pass under way when shutdown comes is
    /// finished (its calls are bounded by their timeout), so that what it sent is recorded and
    /// nothing stays leased; a process that dies mid-pass leaves leases that expire.
    pub async fn run(self, stop: Shutdown) {
        let stopped = stop.clone().wait();
        tokio::pin!(stopped);
        while !stop.is_triggered() {
            let woken = self.signals.syncs.notified();
            tokio::pin!(woken);
            let settled = match self.pass().await {
                Ok(settled) => settled,
                Err(err) => {
                    tracing::warn!(error = %err, "order sync pass failed");
                    0
                }
            };
            if settled > 0 {
                continue;
            }
            tokio::select! {
                () = &mut stopped => return,
                () = &mut woken => {}
                () = tokio::time::sleep(self.config.sync_poll) => {}
            }
        }
    }
}

/// The delay before attempt `attempts + 1`: `base * 2^attempts`, at most `max`, with jitter
/// (between half and all of it) so that many shipments do not retry in lockstep.
fn backoff(base: Duration, max: Duration, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts).unwrap_or(0).min(20);
    let full = base.saturating_mul(1 << exponent).min(max);
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let first = backoff(base, max, 0);
        assert!(
            first >= Duration::from_millis(50) && first <= base,
            "{first:?}"
        );
        let third = backoff(base, max, 2);
        assert!(
            third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
            "{third:?}"
        );
        for attempts in [10, 1000, i32::MAX] {
            let late = backoff(base, max, attempts);
            assert!(late >= Duration::from_secs(1) && late <= max, "{late:?}");
        }
    }
}
