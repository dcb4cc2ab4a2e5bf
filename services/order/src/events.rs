//! Events the order service records in its outbox: `order.created`, `order.paid`,
//! `order.cancelled`, `order.shipped`, `order.completed` and `order.refunded`, with the protobuf
//! payloads of `shopmesh.events.v1`. Each is built from the order as it stands after its status
//! change, inside the transaction of that change (see [`crate::repo`]), so none is lost and none
//! is sent for a change that did not happen; the outbox relay publishes them.

use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::{Money, PostalAddress};
use shopmesh_contracts::pb::shopmesh::events::v1 as pb;
use shopmesh_contracts::pb::shopmesh::order::v1::OrderStatus;
use shopmesh_contracts::pb::shopmesh::user::v1::Tier;

use crate::repo::{LineRow, OrderRow};

/// AMQP priority of a fulfilment message (order.paid) of a VIP customer.
pub const PRIORITY_VIP: i16 = 9;
/// AMQP priority of a fulfilment message of any other customer.
pub const PRIORITY_STANDARD: i16 = 1;

const TYPE_PREFIX: &str = "type.googleapis.com/shopmesh.events.v1.";

/// One outbox row, ready to insert (the id and the correlation id are added on insert).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The routing key, e.g. "order.paid".
    pub event_type: &'static str,
    /// The order id.
    pub aggregate_id: String,
    /// Type URL of the payload message.
    pub payload_type: String,
    pub payload: Vec<u8>,
    /// AMQP priority: by tier for fulfilment messages, 0 for the others.
    pub priority: i16,
}

fn money(order: &OrderRow, amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: order.currency.clone(),
    })
}

fn lines(order: &OrderRow, lines: &[LineRow]) -> Vec<pb::OrderLine> {
    lines
        .iter()
        .map(|l| pb::OrderLine {
            product_id: l.product_id.clone(),
            sku: l.sku.clone(),
            product_name: l.product_name.clone(),
            unit_price: money(order, l.unit_price_minor),
            quantity: l.quantity,
            line_total: money(
                order,
                l.unit_price_minor.saturating_mul(i64::from(l.quantity)),
            ),
        })
        .collect()
}

fn address(order: &OrderRow) -> Option<PostalAddress> {
    Some(order.shipping_address.0.clone().into())
}

/// The fulfilment priority of an order of `tier` (a shopmesh.user.v1.Tier).
pub fn fulfilment_priority(tier: i16) -> i16 {
    if Tier::try_from(i32::from(tier)) == Ok(Tier::Vip) {
        PRIORITY_VIP
    } else {
        PRIORITY_STANDARD
    }
}

fn event(order: &OrderRow, event_type: &'static str, name: &str, payload: Vec<u8>) -> OutboxEvent {
    OutboxEvent {
        event_type,
        aggregate_id: order.id.to_string(),
        payload_type: format!("{TYPE_PREFIX}{name}"),
        payload,
        priority: 0,
    }
}

impl OutboxEvent {
    /// order.created: the order row was just inserted.
    pub fn created(order: &OrderRow, order_lines: &[LineRow]) -> Self {
        let payload = pb::OrderCreated {
            order_id: order.id.to_string(),
            user_id: order.user_id.clone(),
            tier: i32::from(order.tier),
            lines: lines(order, order_lines),
            total: money(order, order.total_minor),
            shipping_address: address(order),
        };
        event(
            order,
            "order.created",
            "OrderCreated",
            payload.encode_to_vec(),
        )
    }

    /// `order.paid`: written when the saga has recorded the order's shipment (stock committed,
    /// charged, shipment created), so that fulfilment finds everything it needs.
    pub fn paid(order: &OrderRow, order_lines: &[LineRow]) -> Self {
        OutboxEvent {
            priority: fulfilment_priority(order.tier),
            ..event(
                order,
                "order.paid",
                "OrderPaid",
                pb::OrderPaid {
                    order_id: order.id.to_string(),
                    user_id: order.user_id.clone(),
                    tier: i32::from(order.tier),
                    lines: lines(order, order_lines),
                    total: money(order, order.total_minor),
                    shipping_address: address(order),
                    payment_id: order.payment_id.clone(),
                    shipment_id: order.shipment_id.clone(),
                }
                .encode_to_vec(),
            )
        }
    }

    /// The event of the status change `from` -> `order.status` that was just applied to
    /// `order` (the row as it stands after the change); `None` for a change no event describes.
    pub fn status_changed(from: i16, order: &OrderRow) -> Option<Self> {
        let status = |s: i16| OrderStatus::try_from(i32::from(s)).unwrap_or_default();
        let order_id = order.id.to_string();
        let user_id = order.user_id.clone();
        Some(match status(order.status) {
            // order.paid leaves once the shipment exists too (see `paid`), not with the status.
            OrderStatus::Paid => return None,
            OrderStatus::Cancelled => event(
                order,
                "order.cancelled",
                "OrderCancelled",
                pb::OrderCancelled {
                    order_id,
                    user_id,
                    tier: i32::from(order.tier),
                    previous_status: status(from).into(),
                    reason: i32::from(order.cancellation_reason),
                    note: order.cancellation_note.clone(),
                    total: money(order, order.total_minor),
                    refunded_total: money(order, order.refunded_minor),
                    shipment_id: order.shipment_id.clone(),
                }
                .encode_to_vec(),
            ),
            OrderStatus::Shipped => event(
                order,
                "order.shipped",
                "OrderShipped",
                pb::OrderShipped {
                    order_id,
                    user_id,
                    shipment_id: order.shipment_id.clone(),
                    // The order does not know them: UpdateOrderStatus does not carry them.
                    carrier: String::new(),
                    tracking_number: String::new(),
                }
                .encode_to_vec(),
            ),
            OrderStatus::Completed => event(
                order,
                "order.completed",
                "OrderCompleted",
                pb::OrderCompleted {
                    order_id,
                    user_id,
                    total: money(order, order.total_minor),
                }
                .encode_to_vec(),
            ),
            OrderStatus::Refunded => event(
                order,
                "order.refunded",
                "OrderRefunded",
                pb::OrderRefunded {
                    order_id,
                    user_id,
                    previous_status: status(from).into(),
                    total: money(order, order.total_minor),
                    refunded_total: money(order, order.refunded_minor),
                }
                .encode_to_vec(),
            ),
            // CREATED is order.created, written with the insert.
            OrderStatus::Created | OrderStatus::Unspecified => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::StoredAddress;
    use chrono::Utc;
    use shopmesh_contracts::pb::shopmesh::order::v1::CancellationReason;
    use sqlx::types::Json;
    use uuid::Uuid;

    fn order(status: OrderStatus, tier: Tier) -> (OrderRow, Vec<LineRow>) {
        let row = OrderRow {
            id: Uuid::now_v7(),
            user_id: "user-1".into(),
            tier: i16::try_from(tier as i32).unwrap(),
            status: i16::try_from(status as i32).unwrap(),
            idempotency_key: "k".into(),
            currency: "EUR".into(),
            total_minor: 2 * 1250 + 300,
            refunded_minor: 0,
            shipping_address: Json(StoredAddress {
                recipient: "Ada".into(),
                city: "Leipzig".into(),
                country: "DE".into(),
                ..StoredAddress::default()
            }),
            payment_method_token: "tok".into(),
            payment_id: "pay-1".into(),
            shipment_id: String::new(),
            cancellation_reason: 0,
            cancellation_note: String::new(),
            saga_step: 4,
            charge_attempted: true,
            restock: false,
            cancel_requested: false,
            cancel_actor: String::new(),
            cancel_reason: 0,
            saga_attempts: 0,
            correlation_id: "req-1".into(),
            cancel_correlation_id: String::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let lines = vec![
            LineRow {
                product_id: "p-1".into(),
                sku: "KB-1".into(),
                product_name: "Keyboard".into(),
                unit_price_minor: 1250,
                quantity: 2,
            },
            LineRow {
                product_id: "p-2".into(),
                sku: "MS-1".into(),
                product_name: "Mouse".into(),
                unit_price_minor: 300,
                quantity: 1,
            },
        ];
        (row, lines)
    }

    const CREATED: i16 = OrderStatus::Created as i16;
    const PAID: i16 = OrderStatus::Paid as i16;

    #[test]
    fn order_paid_carries_the_lines_and_a_priority_by_tier() {
        let (vip, lines) = order(OrderStatus::Paid, Tier::Vip);
        let event = OutboxEvent::paid(&vip, &lines);
        // The status change alone does not emit it: the shipment is not there yet.
        assert_eq!(OutboxEvent::status_changed(CREATED, &vip), None);
        assert_eq!(event.event_type, "order.paid");
        assert_eq!(
            event.payload_type,
            "type.googleapis.com/shopmesh.events.v1.OrderPaid"
        );
        assert_eq!(event.aggregate_id, vip.id.to_string());
        assert_eq!(event.priority, PRIORITY_VIP);
        let paid = pb::OrderPaid::decode(event.payload.as_slice()).unwrap();
        assert_eq!(paid.order_id, vip.id.to_string());
        assert_eq!(paid.user_id, "user-1");
        assert_eq!(paid.tier(), Tier::Vip);
        assert_eq!(paid.payment_id, "pay-1");
        assert_eq!(paid.total.unwrap().amount_minor, 2800);
        assert_eq!(paid.lines.len(), 2);
        assert_eq!(paid.lines[0].sku, "KB-1");
        assert_eq!(paid.lines[0].line_total.clone().unwrap().amount_minor, 2500);
        assert_eq!(paid.lines[1].unit_price.clone().unwrap().currency, "EUR");
        assert_eq!(paid.shipping_address.unwrap().city, "Leipzig");

        for tier in [Tier::Standard, Tier::Unspecified] {
            let (row, lines) = order(OrderStatus::Paid, tier);
            let event = OutboxEvent::paid(&row, &lines);
            assert_eq!(event.priority, PRIORITY_STANDARD, "{tier:?}");
        }
    }

    #[test]
    fn only_fulfilment_events_have_a_priority() {
        let (mut row, lines) = order(OrderStatus::Created, Tier::Vip);
        assert_eq!(OutboxEvent::created(&row, &lines).priority, 0);
        assert_eq!(OutboxEvent::status_changed(0, &row), None);
        for (from, to, kind) in [
            (PAID, OrderStatus::Cancelled, "order.cancelled"),
            (PAID, OrderStatus::Shipped, "order.shipped"),
            (
                OrderStatus::Shipped as i16,
                OrderStatus::Completed,
                "order.completed",
            ),
            (PAID, OrderStatus::Refunded, "order.refunded"),
        ] {
            row.status = to as i16;
            let event = OutboxEvent::status_changed(from, &row).unwrap();
            assert_eq!((event.event_type, event.priority), (kind, 0));
        }
    }

    #[test]
    fn order_cancelled_says_from_where_and_why() {
        let (mut row, _) = order(OrderStatus::Cancelled, Tier::Standard);
        row.cancellation_reason = CancellationReason::PaymentFailed as i16;
        row.cancellation_note = "card_declined".into();
        row.refunded_minor = 100;
        row.shipment_id = "ship-1".into();
        let event = OutboxEvent::status_changed(PAID, &row).unwrap();
        let cancelled = pb::OrderCancelled::decode(event.payload.as_slice()).unwrap();
        assert_eq!(cancelled.previous_status(), OrderStatus::Paid);
        assert_eq!(cancelled.reason(), CancellationReason::PaymentFailed);
        assert_eq!(cancelled.note, "card_declined");
        assert_eq!(cancelled.tier(), Tier::Standard);
        assert_eq!(cancelled.shipment_id, "ship-1");
        assert_eq!(cancelled.refunded_total.unwrap().amount_minor, 100);
        assert_eq!(cancelled.total.unwrap().amount_minor, 2800);
    }
}
