//! Events the delivery service records in its outbox: `shipment.created` and
//! `shipment.status_changed`, with the protobuf payloads of `shopmesh.events.v1`. They are
//! written in the transaction that creates or advances the shipment, so none is lost and none
//! is sent for a change that did not happen; the outbox relay publishes them.

use prost::Message;
use shopmesh_contracts::pb::shopmesh::delivery::v1::ShipmentLine;
use shopmesh_contracts::pb::shopmesh::events::v1 as pb;
use shopmesh_contracts::pb::shopmesh::user::v1::Tier as PbTier;
use uuid::Uuid;

use crate::domain::{Shipment, ShipmentStatus, Step, Tier};
use crate::grpc::status_pb;

pub const SHIPMENT_CREATED: &str = "shipment.created";
pub const SHIPMENT_STATUS_CHANGED: &str = "shipment.status_changed";

/// AMQP priority of a fulfilment message (shipment.created) of a VIP customer.
pub const PRIORITY_VIP: i16 = 9;
/// AMQP priority of a fulfilment message of a standard customer.
pub const PRIORITY_STANDARD: i16 = 1;

/// One outbox row, ready to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The routing key, e.g. "shipment.created".
    pub event_type: &'static str,
    /// The shipment id.
    pub aggregate_id: String,
    /// Type URL of the payload message.
    pub payload_type: &'static str,
    pub payload: Vec<u8>,
    /// AMQP priority: by tier for fulfilment messages, 0 for the others.
    pub priority: i16,
}

/// What a transition changed, as the outbox needs it: the shipment after the change and the
/// status it came from.
#[derive(Clone, Debug)]
pub struct Transition<'a> {
    pub shipment_id: Uuid,
    pub order_id: Uuid,
    pub user_id: &'a str,
    pub tier: Tier,
    pub from: ShipmentStatus,
    pub step: &'a Step,
    /// The carrier and tracking number after the change.
    pub carrier: &'a str,
    pub tracking_number: &'a str,
}

pub fn tier_pb(tier: Tier) -> PbTier {
    match tier {
        Tier::Standard => PbTier::Standard,
        Tier::Vip => PbTier::Vip,
    }
}

/// Whether the parcel has been handed to the carrier once a shipment is in `status`: the
/// event names the carrier and tracking number only from then on ("empty until SHIPPED").
fn handed_over(status: ShipmentStatus) -> bool {
    !matches!(
        status,
        ShipmentStatus::LabelCreated
            | ShipmentStatus::Pending
            | ShipmentStatus::Packed
            | ShipmentStatus::Cancelled
    )
}

impl OutboxEvent {
    /// The event of a new shipment: a fulfilment message, prioritised by tier.
    pub fn created(shipment: &Shipment) -> Self {
        Self {
            event_type: SHIPMENT_CREATED,
            aggregate_id: shipment.id.to_string(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.ShipmentCreated",
            payload: pb::ShipmentCreated {
                shipment_id: shipment.id.to_string(),
                order_id: shipment.order_id.to_string(),
                user_id: shipment.user_id.clone(),
                tier: tier_pb(shipment.tier).into(),
                lines: shipment
                    .lines
                    .iter()
                    .map(|l| ShipmentLine {
                        product_id: l.product_id.clone(),
                        sku: l.sku.clone(),
                        product_name: l.product_name.clone(),
                        quantity: l.quantity,
                    })
                    .collect(),
            }
            .encode_to_vec(),
            priority: match shipment.tier {
                Tier::Vip => PRIORITY_VIP,
                Tier::Standard => PRIORITY_STANDARD,
            },
        }
    }

    /// The event of one applied transition.
    pub fn status_changed(change: &Transition<'_>) -> Self {
        let to = change.step.status;
        let (carrier, tracking_number) = if handed_over(to) {
            (change.carrier.to_owned(), change.tracking_number.to_owned())
        } else {
            (String::new(), String::new())
        };
        Self {
            event_type: SHIPMENT_STATUS_CHANGED,
            aggregate_id: change.shipment_id.to_string(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.ShipmentStatusChanged",
            payload: pb::ShipmentStatusChanged {
                shipment_id: change.shipment_id.to_string(),
                order_id: change.order_id.to_string(),
                user_id: change.user_id.to_owned(),
                tier: tier_pb(change.tier).into(),
                from_status: status_pb(change.from).into(),
                to_status: status_pb(to).into(),
                location: change.step.location.clone(),
                note: change.step.note.clone(),
                carrier,
                tracking_number,
            }
            .encode_to_vec(),
            priority: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopmesh_contracts::pb::shopmesh::delivery::v1::ShipmentStatus as PbStatus;

    fn step(status: ShipmentStatus) -> Step {
        Step {
            status,
            location: "Leipzig hub".into(),
            note: "scan".into(),
            carrier: None,
            tracking_number: None,
        }
    }

    fn transition(step: &Step, from: ShipmentStatus) -> Transition<'_> {
        Transition {
            shipment_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            user_id: "user-1",
            tier: Tier::Vip,
            from,
            step,
            carrier: "SimPost",
            tracking_number: "SIM000000000001",
        }
    }

    #[test]
    fn a_status_change_names_both_statuses() {
        let step = step(ShipmentStatus::InTransit);
        let event = OutboxEvent::status_changed(&transition(&step, ShipmentStatus::LabelCreated));
        assert_eq!(event.event_type, SHIPMENT_STATUS_CHANGED);
        assert_eq!(event.priority, 0);
        let payload = pb::ShipmentStatusChanged::decode(event.payload.as_slice()).unwrap();
        assert_eq!(payload.from_status(), PbStatus::LabelCreated);
        assert_eq!(payload.to_status(), PbStatus::InTransit);
        assert_eq!(payload.tier(), PbTier::Vip);
        assert_eq!(payload.location, "Leipzig hub");
        assert_eq!(payload.carrier, "SimPost");
        assert_eq!(payload.tracking_number, "SIM000000000001");
    }

    #[test]
    fn the_carrier_is_named_only_once_the_parcel_left() {
        for status in [
            ShipmentStatus::Pending,
            ShipmentStatus::Packed,
            ShipmentStatus::Cancelled,
        ] {
            let step = step(status);
            let event =
                OutboxEvent::status_changed(&transition(&step, ShipmentStatus::LabelCreated));
            let payload = pb::ShipmentStatusChanged::decode(event.payload.as_slice()).unwrap();
            assert_eq!(payload.carrier, "", "{status}");
            assert_eq!(payload.tracking_number, "", "{status}");
        }
        let step = step(ShipmentStatus::Shipped);
        let event = OutboxEvent::status_changed(&transition(&step, ShipmentStatus::Packed));
        let payload = pb::ShipmentStatusChanged::decode(event.payload.as_slice()).unwrap();
        assert_eq!(payload.carrier, "SimPost");
    }
}
