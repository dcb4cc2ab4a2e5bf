//! Events the product service records in its outbox. The payloads are the protobuf messages of
//! `shopmesh.events.v1`; the outbox relay (`shopmesh_platform::events::relay`) wraps each in an `EventEnvelope` when it
//! publishes. Writing them in the transaction of the change is what makes sure none is lost.

use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::Money as PbMoney;
use shopmesh_contracts::pb::shopmesh::events::v1 as pb;
use shopmesh_contracts::pb::shopmesh::product::v1::StockMovementReason;

use crate::domain::{Money, MovementReason, Product, StockLevel, StockMovement};

/// One outbox row, ready to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The routing key, e.g. "inventory.low_stock".
    pub event_type: &'static str,
    pub aggregate_id: String,
    /// Type URL of the payload message.
    pub payload_type: &'static str,
    pub payload: Vec<u8>,
}

fn money(money: Money) -> PbMoney {
    PbMoney {
        amount_minor: money.amount_minor,
        currency: money.currency.as_str().to_owned(),
    }
}

/// The protobuf reason of a movement (shared with the gRPC edge).
pub fn reason_pb(reason: MovementReason) -> StockMovementReason {
    match reason {
        MovementReason::Receiving => StockMovementReason::Receiving,
        MovementReason::Damage => StockMovementReason::Damage,
        MovementReason::Correction => StockMovementReason::Correction,
        MovementReason::Return => StockMovementReason::Return,
        MovementReason::Sale => StockMovementReason::Sale,
        MovementReason::Reserve => StockMovementReason::Reserve,
        MovementReason::Release => StockMovementReason::Release,
        MovementReason::Expire => StockMovementReason::Expire,
    }
}

impl OutboxEvent {
    pub fn product_created(product: &Product) -> Self {
        let f = &product.fields;
        Self {
            event_type: "product.created",
            aggregate_id: product.id.to_string(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.ProductCreated",
            payload: pb::ProductCreated {
                product_id: product.id.to_string(),
                sku: product.sku.as_str().to_owned(),
                name: f.name.clone(),
                category_id: f.category_id.map(|id| id.to_string()).unwrap_or_default(),
                price: Some(money(f.price)),
                active: f.active,
            }
            .encode_to_vec(),
        }
    }

    pub fn product_updated(product: &Product, changed_fields: &[&str]) -> Self {
        let f = &product.fields;
        Self {
            event_type: "product.updated",
            aggregate_id: product.id.to_string(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.ProductUpdated",
            payload: pb::ProductUpdated {
                product_id: product.id.to_string(),
                sku: product.sku.as_str().to_owned(),
                name: f.name.clone(),
                category_id: f.category_id.map(|id| id.to_string()).unwrap_or_default(),
                price: Some(money(f.price)),
                active: f.active,
                changed_fields: changed_fields.iter().map(|f| (*f).to_owned()).collect(),
            }
            .encode_to_vec(),
        }
    }

    pub fn product_deleted(product: &Product) -> Self {
        Self {
            event_type: "product.deleted",
            aggregate_id: product.id.to_string(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.ProductDeleted",
            payload: pb::ProductDeleted {
                product_id: product.id.to_string(),
                sku: product.sku.as_str().to_owned(),
            }
            .encode_to_vec(),
        }
    }

    pub fn low_stock(level: &StockLevel, product_name: &str) -> Self {
        Self {
            event_type: "inventory.low_stock",
            aggregate_id: level.sku.as_str().to_owned(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.InventoryLowStock",
            payload: pb::InventoryLowStock {
                sku: level.sku.as_str().to_owned(),
                product_id: level.product_id.to_string(),
                product_name: product_name.to_owned(),
                on_hand: level.on_hand,
                reserved: level.reserved,
                available: level.available(),
                low_stock_threshold: level.low_stock_threshold,
            }
            .encode_to_vec(),
        }
    }

    pub fn adjusted(level: &StockLevel, movement: &StockMovement) -> Self {
        Self {
            event_type: "inventory.adjusted",
            aggregate_id: level.sku.as_str().to_owned(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.InventoryAdjusted",
            payload: pb::InventoryAdjusted {
                movement_id: movement.id.to_string(),
                sku: level.sku.as_str().to_owned(),
                product_id: level.product_id.to_string(),
                delta: movement.on_hand_delta,
                reason: reason_pb(movement.reason).into(),
                on_hand_after: movement.on_hand_after,
                available_after: level.available(),
                actor_id: movement.actor_id.clone().unwrap_or_default(),
                order_id: movement
                    .order_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                note: movement.note.clone(),
            }
            .encode_to_vec(),
        }
    }
}
