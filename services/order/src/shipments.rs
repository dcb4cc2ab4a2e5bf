//! The order side of delivery: the consumer `order` follows `shipment.status_changed` and moves
//! the order to SHIPPED when its shipment is handed to the carrier and to COMPLETED when it is
//! delivered, in the transaction that records the event in the inbox (so a redelivery changes
//! nothing, and the order.shipped / order.completed events it causes are written exactly once).

use async_trait::async_trait;
use shopmesh_contracts::pb::shopmesh::delivery::v1::ShipmentStatus;
use shopmesh_contracts::pb::shopmesh::events::v1::ShipmentStatusChanged;
use shopmesh_contracts::pb::shopmesh::order::v1::OrderStatus;
use shopmesh_platform::events::{Event, Handler, HandlerError, Subscription};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::repo::{StatusChange, apply_status};

/// The consumer's name: its queue and its inbox rows.
pub const CONSUMER: &str = "order";

/// What the order service listens to.
pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, &["shipment.status_changed"])
}

const PAID: i16 = OrderStatus::Paid as i16;
const SHIPPED: i16 = OrderStatus::Shipped as i16;
const COMPLETED: i16 = OrderStatus::Completed as i16;

/// Applies shipment progress to orders.
pub struct ShipmentProgress;

fn change(from: &'static [i16], to: i16, note: String, correlation_id: &str) -> StatusChange {
    StatusChange {
        from,
        to,
        actor_id: String::new(),
        note,
        reason: None,
        correlation_id: correlation_id.to_owned(),
    }
}

#[async_trait]
impl Handler for ShipmentProgress {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let changed: ShipmentStatusChanged = event.payload()?;
        let Ok(order_id) = Uuid::parse_str(&changed.order_id) else {
            return Err(HandlerError::Permanent(format!(
                "shipment {} names order {:?}, which is not an order id",
                changed.shipment_id, changed.order_id
            )));
        };
        let correlation_id = &event.envelope.correlation_id;
        let shipped = || {
            change(
                &[PAID],
                SHIPPED,
                format!("shipment {} handed to the carrier", changed.shipment_id),
                correlation_id,
            )
        };
        let apply = |e: anyhow::Error| HandlerError::Retry(format!("updating the order: {e:#}"));
        match changed.to_status() {
            ShipmentStatus::Shipped => {
                apply_status(tx, order_id, &shipped())
                    .await
                    .map_err(apply)?;
            }
            ShipmentStatus::Delivered => {
                // A shipment advanced by hand may skip SHIPPED; the order passes through it.
                apply_status(tx, order_id, &shipped())
                    .await
                    .map_err(apply)?;
                let delivered = change(
                    &[SHIPPED],
                    COMPLETED,
                    format!("shipment {} delivered", changed.shipment_id),
                    correlation_id,
                );
                apply_status(tx, order_id, &delivered)
                    .await
                    .map_err(apply)?;
            }
            // Other steps (packing, in transit, out for delivery) do not change the order;
            // cancellation is the order's own doing.
            _ => {}
        }
        Ok(())
    }
}
