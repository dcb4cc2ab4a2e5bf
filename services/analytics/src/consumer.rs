//! The `analytics` consumer: turns order.*, payment.* and user.registered events into facts and
//! applies them in the consumer runtime's transaction, next to the event's inbox row, so that a
//! redelivered event changes nothing twice.
//!
//! | event | fact |
//! |---|---|
//! | order.created | the order placed (its placement time), its user, total and lines; CREATED |
//! | order.paid | the order paid (its payment time), total and lines; PAID |
//! | order.shipped / order.completed | SHIPPED / COMPLETED |
//! | order.cancelled / order.refunded | CANCELLED / REFUNDED (final) |
//! | payment.refunded | one refund, counted on its day |
//! | user.registered | one new customer (admin accounts are not customers) |
//!
//! payment.succeeded and payment.failed change no figure (order.paid is what makes an order
//! paid), and other event types are acknowledged and ignored, as the contract asks of
//! consumers. A payload that does not decode, or holds what no order can (an order id that is
//! not a UUID, negative amounts), fails for good: it is dead-lettered at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::Money as PbMoney;
use shopmesh_contracts::pb::shopmesh::events::v1 as pb;
use shopmesh_contracts::pb::shopmesh::user::v1::Role;
use shopmesh_platform::events::{Event, Handler, HandlerError, Subscription, payload_type};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Fact, Line, Money, OrderStatus, OrderUpdate, Refund, Registration};
use crate::repo;

/// The consumer's name: its queue and its rows in the inbox.
pub const CONSUMER: &str = "analytics";

/// What the consumer listens to.
pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, &["order.*", "payment.*", "user.registered"])
}

/// Applies the events.
pub struct AnalyticsHandler;

#[async_trait]
impl Handler for AnalyticsHandler {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let Some(fact) = fact(event)? else {
            return Ok(());
        };
        repo::apply(tx, &fact).await?;
        Ok(())
    }
}

fn permanent(event: &Event, why: impl std::fmt::Display) -> HandlerError {
    HandlerError::Permanent(format!("{} {}: {why}", event.event_type(), event.id))
}

/// The payload as `M`, which the envelope must say it is (`name` in `shopmesh.events.v1`).
fn payload<M: Message + Default>(event: &Event, name: &str) -> Result<M, HandlerError> {
    let expected = payload_type(name);
    let actual = event
        .envelope
        .payload
        .as_ref()
        .map(|any| any.type_url.as_str())
        .unwrap_or_default();
    if actual != expected {
        return Err(permanent(
            event,
            format!("expected a {name} payload, got {actual:?}"),
        ));
    }
    event.payload()
}

fn occurred_at(event: &Event) -> Result<DateTime<Utc>, HandlerError> {
    shopmesh_platform::events::occurred_at(&event.envelope)
        .ok_or_else(|| permanent(event, "the envelope has no valid occurred_at"))
}

fn order_id(event: &Event, raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw).map_err(|_| permanent(event, format!("order id {raw:?} is not a UUID")))
}

fn money(event: &Event, money: Option<&PbMoney>, field: &str) -> Result<Money, HandlerError> {
    let money = money.cloned().unwrap_or_default();
    if money.amount_minor < 0 {
        return Err(permanent(event, format!("{field} is negative")));
    }
    Ok(Money {
        amount_minor: money.amount_minor,
        currency: money.currency,
    })
}

fn lines(event: &Event, lines: &[pb::OrderLine]) -> Result<Vec<Line>, HandlerError> {
    lines
        .iter()
        .map(|line| {
            if line.quantity < 0 {
                return Err(permanent(event, "a line has a negative quantity"));
            }
            Ok(Line {
                product_id: line.product_id.clone(),
                sku: line.sku.clone(),
                name: line.product_name.clone(),
                quantity: line.quantity,
                line_total_minor: money(event, line.line_total.as_ref(), "a line total")?
                    .amount_minor,
            })
        })
        .collect()
}

/// An order event's update with what every order event has.
fn order_update(
    event: &Event,
    raw_order_id: &str,
    user_id: &str,
    status: OrderStatus,
) -> Result<OrderUpdate, HandlerError> {
    Ok(OrderUpdate {
        order_id: order_id(event, raw_order_id)?,
        user_id: user_id.to_owned(),
        occurred_at: occurred_at(event)?,
        placed: false,
        paid: false,
        status,
        total: None,
        lines: Vec::new(),
    })
}

/// What `event` adds to the figures; `None` for an event that changes none.
pub fn fact(event: &Event) -> Result<Option<Fact>, HandlerError> {
    let fact = match event.event_type() {
        "order.created" => {
            let p: pb::OrderCreated = payload(event, "OrderCreated")?;
            Fact::Order(OrderUpdate {
                placed: true,
                total: Some(money(event, p.total.as_ref(), "total")?),
                lines: lines(event, &p.lines)?,
                ..order_update(event, &p.order_id, &p.user_id, OrderStatus::Created)?
            })
        }
        "order.paid" => {
            let p: pb::OrderPaid = payload(event, "OrderPaid")?;
            Fact::Order(OrderUpdate {
                paid: true,
                total: Some(money(event, p.total.as_ref(), "total")?),
                lines: lines(event, &p.lines)?,
                ..order_update(event, &p.order_id, &p.user_id, OrderStatus::Paid)?
            })
        }
        "order.shipped" => {
            let p: pb::OrderShipped = payload(event, "OrderShipped")?;
            Fact::Order(order_update(
                event,
                &p.order_id,
                &p.user_id,
                OrderStatus::Shipped,
            )?)
        }
        "order.completed" => {
            let p: pb::OrderCompleted = payload(event, "OrderCompleted")?;
            Fact::Order(OrderUpdate {
                total: Some(money(event, p.total.as_ref(), "total")?),
                ..order_update(event, &p.order_id, &p.user_id, OrderStatus::Completed)?
            })
        }
        "order.cancelled" => {
            let p: pb::OrderCancelled = payload(event, "OrderCancelled")?;
            Fact::Order(OrderUpdate {
                total: Some(money(event, p.total.as_ref(), "total")?),
                ..order_update(event, &p.order_id, &p.user_id, OrderStatus::Cancelled)?
            })
        }
        "order.refunded" => {
            let p: pb::OrderRefunded = payload(event, "OrderRefunded")?;
            Fact::Order(OrderUpdate {
                total: Some(money(event, p.total.as_ref(), "total")?),
                ..order_update(event, &p.order_id, &p.user_id, OrderStatus::Refunded)?
            })
        }
        "payment.refunded" => {
            let p: pb::PaymentRefunded = payload(event, "PaymentRefunded")?;
            if p.refund_id.is_empty() {
                return Err(permanent(event, "the refund has no id"));
            }
            Fact::Refund(Refund {
                amount: money(event, p.amount.as_ref(), "amount")?,
                refund_id: p.refund_id,
                payment_id: p.payment_id,
                order_id: p.order_id,
                refunded_at: occurred_at(event)?,
            })
        }
        "user.registered" => {
            let p: pb::UserRegistered = payload(event, "UserRegistered")?;
            if p.role == i32::from(Role::Admin) {
                return Ok(None);
            }
            if p.user_id.is_empty() {
                return Err(permanent(event, "the user has no id"));
            }
            Fact::Registration(Registration {
                user_id: p.user_id,
                registered_at: occurred_at(event)?,
            })
        }
        // payment.succeeded, payment.failed and whatever else: no figure changes.
        _ => return Ok(None),
    };
    Ok(Some(fact))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use shopmesh_contracts::pb::shopmesh::events::v1::EventEnvelope;
    use shopmesh_platform::events::new_envelope;

    use super::*;

    fn usd(amount_minor: i64) -> Option<PbMoney> {
        Some(PbMoney {
            amount_minor,
            currency: "USD".into(),
        })
    }

    fn event(envelope: EventEnvelope) -> Event {
        Event {
            id: envelope.event_id.parse().unwrap(),
            envelope,
            priority: 0,
            attempt: 1,
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn with_time(mut envelope: EventEnvelope) -> EventEnvelope {
        envelope.occurred_at = Some(shopmesh_platform::time::timestamp(at()));
        envelope
    }

    #[test]
    fn order_created_places_the_order_with_its_lines() {
        let order_id = Uuid::now_v7();
        let created = pb::OrderCreated {
            order_id: order_id.to_string(),
            user_id: "u1".into(),
            lines: vec![pb::OrderLine {
                product_id: "p1".into(),
                sku: "SKU-1".into(),
                product_name: "Kettle".into(),
                quantity: 2,
                line_total: usd(5000),
                ..Default::default()
            }],
            total: usd(5000),
            ..Default::default()
        };
        let envelope = with_time(new_envelope(
            "order",
            &order_id.to_string(),
            "order.created",
            "OrderCreated",
            &created,
        ));
        let Some(Fact::Order(update)) = fact(&event(envelope)).unwrap() else {
            panic!("an order fact");
        };
        assert!(update.placed && !update.paid);
        assert_eq!(update.status, OrderStatus::Created);
        assert_eq!(update.occurred_at, at());
        assert_eq!(update.total.unwrap().amount_minor, 5000);
        assert_eq!(update.lines[0].quantity, 2);
        assert_eq!(update.lines[0].name, "Kettle");
    }

    #[test]
    fn payment_outcomes_and_unknown_events_change_nothing() {
        let succeeded = new_envelope(
            "payment",
            "pay-1",
            "payment.succeeded",
            "PaymentSucceeded",
            &pb::PaymentSucceeded::default(),
        );
        assert_eq!(fact(&event(succeeded)).unwrap(), None);
        let shipment = new_envelope(
            "delivery",
            "s-1",
            "shipment.created",
            "ShipmentCreated",
            &pb::ShipmentCreated::default(),
        );
        assert_eq!(fact(&event(shipment)).unwrap(), None);
        let admin = new_envelope(
            "user",
            "u-1",
            "user.registered",
            "UserRegistered",
            &pb::UserRegistered {
                user_id: "u-1".into(),
                role: Role::Admin.into(),
                ..Default::default()
            },
        );
        assert_eq!(fact(&event(admin)).unwrap(), None);
    }

    #[test]
    fn malformed_events_fail_for_good() {
        let not_a_uuid = new_envelope(
            "order",
            "x",
            "order.paid",
            "OrderPaid",
            &pb::OrderPaid {
                order_id: "not-a-uuid".into(),
                ..Default::default()
            },
        );
        let negative = new_envelope(
            "order",
            "x",
            "order.created",
            "OrderCreated",
            &pb::OrderCreated {
                order_id: Uuid::now_v7().to_string(),
                total: usd(-1),
                ..Default::default()
            },
        );
        let wrong_type = new_envelope(
            "order",
            "x",
            "order.created",
            "OrderPaid",
            &pb::OrderPaid::default(),
        );
        let mut garbage = new_envelope(
            "order",
            "x",
            "order.created",
            "OrderCreated",
            &pb::OrderCreated::default(),
        );
        garbage.payload.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
        let mut timeless = new_envelope(
            "order",
            "x",
            "order.created",
            "OrderCreated",
            &pb::OrderCreated {
                order_id: Uuid::now_v7().to_string(),
                ..Default::default()
            },
        );
        timeless.occurred_at = None;
        for envelope in [not_a_uuid, negative, wrong_type, garbage, timeless] {
            let kind = envelope.r#type.clone();
            assert!(
                matches!(fact(&event(envelope)), Err(HandlerError::Permanent(_))),
                "{kind}"
            );
        }
    }
}
