//! The consumer "notification": turns events into notifications.
//!
//! user.registered and user.updated keep the local copy of the recipient (e-mail address and
//! name); user.registered also welcomes them. The order, payment and shipment events each
//! render their template into one in-app notification and, unless the user muted that kind for
//! e-mail (or has no address), one e-mail job, both in the transaction of the event's inbox row:
//! a redelivered event finds its id in the inbox and writes nothing again. One notification per
//! fact and user besides (`notifications_one_per_fact`), so that two events telling the same
//! thing (order.completed and shipment.status_changed DELIVERED) notify once.
//!
//! An event about a user this service has not heard of yet (the user.registered is still on its
//! way, or was lost) is retried, then dead-lettered: once the user is known, a re-drive applies
//! it.

use std::sync::Arc;

use async_trait::async_trait;
use prost::Message;
use shopmesh_contracts::pb::shopmesh::delivery::v1::ShipmentStatus;
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_contracts::pb::shopmesh::order::v1::CancellationReason;
use shopmesh_platform::events::{Event, Handler, HandlerError, Subscription};
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::kind::{Channel, Kind};
use crate::repo::{self, NewEmail, NewNotification, Recipient};
use crate::templates::{self, Rendered};

/// The consumer's name: its queue, its inbox rows and its dead letters.
pub const CONSUMER: &str = "notification";

/// The events it handles.
pub const BINDINGS: &[&str] = &[
    "user.registered",
    "user.updated",
    "order.paid",
    "order.cancelled",
    "order.shipped",
    "order.completed",
    "order.refunded",
    "payment.failed",
    "shipment.status_changed",
];

/// The subscription of the consumer.
pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, BINDINGS)
}

/// Applies events; wakes the e-mail sender after each commit.
pub struct NotificationHandler {
    emails: Arc<Notify>,
}

impl NotificationHandler {
    /// `emails` is what the e-mail sender waits on.
    pub fn new(emails: Arc<Notify>) -> Self {
        Self { emails }
    }
}

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, HandlerError> {
    if value.trim().is_empty() {
        Err(HandlerError::Permanent(format!("the event has no {field}")))
    } else {
        Ok(value)
    }
}

fn payload<M: Message + Default>(event: &Event) -> Result<M, HandlerError> {
    event.payload()
}

/// Writes the notification of one fact for `user_id`, rendered for the recipient, and its
/// e-mail job unless muted.
async fn notify(
    tx: &mut PgConnection,
    event: &Event,
    user_id: &str,
    fact: String,
    render: impl FnOnce(&Recipient) -> Rendered,
) -> Result<(), HandlerError> {
    let user_id = required("user_id", user_id)?;
    let Some(recipient) = repo::recipient(tx, user_id).await? else {
        return Err(HandlerError::Retry(format!("recipient {user_id} unknown")));
    };
    let rendered = render(&recipient);
    let emailed = !recipient.email.trim().is_empty()
        && !repo::email_muted(tx, user_id, rendered.kind).await?;
    let id = Uuid::now_v7();
    let fresh = repo::insert_notification(
        tx,
        &NewNotification {
            id,
            user_id,
            kind: rendered.kind,
            channel: if emailed {
                Channel::Email
            } else {
                Channel::InApp
            },
            subject: &rendered.subject,
            body: &rendered.body,
            fact: &fact,
            event_id: event.id,
        },
    )
    .await?;
    if fresh && emailed {
        repo::insert_email(
            tx,
            &NewEmail {
                notification_id: id,
                user_id,
                to_address: recipient.email.trim(),
                to_name: &templates::one_line(&recipient.name),
                subject: &rendered.subject,
                body: &rendered.body,
            },
        )
        .await?;
    }
    if !fresh {
        tracing::debug!(user_id, fact, event_id = %event.id, "already notified of this");
    }
    Ok(())
}

fn fact(kind: Kind, about: &str) -> String {
    format!("{}:{about}", kind.as_str())
}

#[async_trait]
impl Handler for NotificationHandler {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let changed_at = shopmesh_platform::events::occurred_at(&event.envelope)
            .unwrap_or_else(chrono::Utc::now);
        match event.event_type() {
            "user.registered" => {
                let user: events::UserRegistered = payload(event)?;
                let user_id = required("user_id", &user.user_id)?;
                repo::upsert_recipient(tx, user_id, &user.email, &user.name, changed_at).await?;
                notify(tx, event, user_id, Kind::Welcome.as_str().to_owned(), |r| {
                    templates::welcome(&r.name)
                })
                .await
            }
            "user.updated" => {
                let user: events::UserUpdated = payload(event)?;
                let user_id = required("user_id", &user.user_id)?;
                repo::upsert_recipient(tx, user_id, &user.email, &user.name, changed_at).await?;
                Ok(())
            }
            "order.paid" => {
                let paid: events::OrderPaid = payload(event)?;
                let about = fact(Kind::OrderPaid, &paid.order_id);
                notify(tx, event, &paid.user_id, about, |r| {
                    templates::order_paid(&r.name, &paid)
                })
                .await
            }
            "payment.failed" => {
                let failed: events::PaymentFailed = payload(event)?;
                let about = fact(Kind::PaymentFailed, &failed.payment_id);
                notify(tx, event, &failed.user_id, about, |r| {
                    templates::payment_failed(&r.name, &failed)
                })
                .await
            }
            "order.cancelled" => {
                let cancelled: events::OrderCancelled = payload(event)?;
                // payment.failed has told the customer already.
                if cancelled.reason == CancellationReason::PaymentFailed as i32 {
                    return Ok(());
                }
                let about = fact(Kind::OrderCancelled, &cancelled.order_id);
                notify(tx, event, &cancelled.user_id, about, |r| {
                    templates::order_cancelled(&r.name, &cancelled)
                })
                .await
            }
            "order.shipped" => {
                let shipped: events::OrderShipped = payload(event)?;
                let about = fact(Kind::OrderShipped, &shipped.order_id);
                notify(tx, event, &shipped.user_id, about, |r| {
                    templates::order_shipped(&r.name, &shipped)
                })
                .await
            }
            "order.completed" => {
                let completed: events::OrderCompleted = payload(event)?;
                let about = fact(Kind::OrderDelivered, &completed.order_id);
                notify(tx, event, &completed.user_id, about, |r| {
                    templates::order_delivered(&r.name, &completed.order_id)
                })
                .await
            }
            "shipment.status_changed" => {
                let changed: events::ShipmentStatusChanged = payload(event)?;
                if changed.to_status != ShipmentStatus::Delivered as i32 {
                    return Ok(());
                }
                let about = fact(Kind::OrderDelivered, &changed.order_id);
                notify(tx, event, &changed.user_id, about, |r| {
                    templates::order_delivered(&r.name, &changed.order_id)
                })
                .await
            }
            // Consumers ignore event types they do not know.
            _ => Ok(()),
        }
    }

    async fn committed(&self, _event: &Event) {
        self.emails.notify_one();
    }
}
