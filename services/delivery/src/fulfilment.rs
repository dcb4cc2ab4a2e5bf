//! The packing station: the `fulfilment` consumer of `order.paid`.
//!
//! Paid orders reach it through a RabbitMQ priority queue (`x-max-priority` 10): the order
//! service publishes order.paid with AMQP priority 9 for VIP customers and 1 for standard ones.
//! The station packs one order at a time (prefetch 1, one lane), so the broker hands it the
//! highest-priority message waiting each time it finishes one: in a backlog of standard orders,
//! a VIP order is packed next. Packing takes `DELIVERY_PACKING_MS` per order (simulated work:
//! the handler sleeps that long) and ends by recording `fulfilled_at` on the shipment, in the
//! transaction that records the event in the inbox, so a redelivered order.paid never packs
//! twice.
//!
//! What packing does depends on where the shipment is ([`ShipmentStatus::packing`]): a
//! LABEL_CREATED shipment is packed in place and becomes due for the courier, which picks up
//! only fulfilled shipments; a PENDING one moves to PACKED (the warehouse path); one that moved
//! on already is only recorded fulfilled; a cancelled one is left alone. An order.paid whose
//! shipment does not exist yet (it overtook CreateShipment) is retried later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shopmesh_contracts::pb::shopmesh::events::v1::OrderPaid;
use shopmesh_platform::events::{Event, Handler, HandlerError, MAX_PRIORITY, Subscription};
use sqlx::PgConnection;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::config::DeliveryConfig;
use crate::domain::{Packing, Step};
use crate::repo::{self, RepoError};
use crate::service::Signals;

/// The consumer's name: its queue (with the prefix) and its rows in the inbox.
pub const CONSUMER: &str = "fulfilment";
/// The event it packs.
pub const ORDER_PAID: &str = "order.paid";

/// What the fulfilment consumer listens to: order.paid on a priority queue, one message at a
/// time so that priority decides the order in which a backlog is packed.
pub fn subscription() -> Subscription {
    Subscription {
        consumer: CONSUMER,
        bindings: vec![ORDER_PAID],
        max_priority: Some(MAX_PRIORITY),
        prefetch: Some(1),
        lanes: Some(1),
    }
}

/// Packs the shipments of paid orders.
pub struct Fulfilment {
    packing: Duration,
    courier_step: Duration,
    signals: Arc<Signals>,
    /// Shipments that got a tracking event (PENDING -> PACKED), by event id, to wake their
    /// tracking streams once the transaction committed.
    transitioned: Mutex<HashMap<Uuid, Uuid>>,
}

impl Fulfilment {
    pub fn new(config: &DeliveryConfig, signals: Arc<Signals>) -> Self {
        Self {
            packing: config.packing,
            courier_step: config.courier_step,
            signals,
            transitioned: Mutex::new(HashMap::new()),
        }
    }

    /// The packing station's work on one order.
    async fn pack(&self) {
        if !self.packing.is_zero() {
            tokio::time::sleep(self.packing).await;
        }
    }
}

fn database(err: RepoError) -> HandlerError {
    HandlerError::Retry(format!("database: {err}"))
}

#[async_trait]
impl Handler for Fulfilment {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        if event.event_type() != ORDER_PAID {
            return Ok(());
        }
        let paid: OrderPaid = event.payload()?;
        let order_id = Uuid::parse_str(paid.order_id.trim()).map_err(|_| {
            HandlerError::Permanent(format!("order id {:?} is not a UUID", paid.order_id))
        })?;
        let Some(target) = repo::lock_for_fulfilment(tx, order_id)
            .await
            .map_err(database)?
        else {
            // It overtook CreateShipment (or the saga has not recorded it yet): later.
            return Err(HandlerError::Retry(format!(
                "order {order_id} has no shipment yet"
            )));
        };
        if target.fulfilled_at.is_some() {
            // Another order.paid of the same order (a new event id) found it packed.
            tracing::debug!(%order_id, shipment_id = %target.id, "shipment already fulfilled");
            return Ok(());
        }
        let step = match target.status.packing() {
            Packing::Cancelled => {
                tracing::info!(%order_id, shipment_id = %target.id,
                    "the shipment was cancelled; nothing to pack");
                return Ok(());
            }
            Packing::MovedOn => None,
            Packing::InPlace => {
                self.pack().await;
                None
            }
            Packing::Transition(to) => {
                self.pack().await;
                Some(Step {
                    status: to,
                    location: "Warehouse".to_owned(),
                    note: "Packed".to_owned(),
                    carrier: None,
                    tracking_number: None,
                })
            }
        };
        let fulfilled_at = repo::record_fulfilment(
            tx,
            &target,
            step.as_ref(),
            self.courier_step,
            &event.envelope.correlation_id,
        )
        .await
        .map_err(database)?;
        let tier = target.tier.as_str();
        metrics::counter!("delivery_orders_fulfilled_total", "tier" => tier).increment(1);
        if let Some(paid_at) = shopmesh_platform::events::occurred_at(&event.envelope) {
            let wait = (fulfilled_at - paid_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("delivery_fulfilment_wait_seconds", "tier" => tier).record(wait);
        }
        tracing::info!(%order_id, shipment_id = %target.id, tier, priority = event.priority,
            "order packed");
        if step.is_some() {
            self.transitioned.lock().await.insert(event.id, target.id);
        }
        Ok(())
    }

    async fn committed(&self, event: &Event) {
        let shipment = self.transitioned.lock().await.remove(&event.id);
        if let Some(id) = shipment {
            self.signals.transitioned([id]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscription_is_a_priority_queue_served_one_at_a_time() {
        let subscription = subscription();
        assert_eq!(subscription.consumer, "fulfilment");
        assert_eq!(subscription.bindings, ["order.paid"]);
        assert_eq!(subscription.max_priority, Some(10));
        assert_eq!(subscription.prefetch, Some(1));
        assert_eq!(subscription.lanes, Some(1));
    }
}
