//! JSON shapes of the notification routes and their conversion from the notification service's
//! contracts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::notification::v1 as pb;
use shopmesh_platform::problem::Problem;
use shopmesh_platform::time::optional_time;
use utoipa::{IntoParams, ToSchema};

/// What a notification tells; each kind can be muted for e-mail on its own.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The account was created.
    Welcome,
    /// The order confirmation: the order is paid.
    OrderPaid,
    /// A payment did not go through.
    PaymentFailed,
    /// The order was handed to the carrier (carrier and tracking number).
    OrderShipped,
    OrderDelivered,
    OrderRefunded,
    OrderCancelled,
}

impl NotificationKind {
    pub fn to_pb(self) -> i32 {
        (match self {
            Self::Welcome => pb::NotificationKind::Welcome,
            Self::OrderPaid => pb::NotificationKind::OrderPaid,
            Self::PaymentFailed => pb::NotificationKind::PaymentFailed,
            Self::OrderShipped => pb::NotificationKind::OrderShipped,
            Self::OrderDelivered => pb::NotificationKind::OrderDelivered,
            Self::OrderRefunded => pb::NotificationKind::OrderRefunded,
            Self::OrderCancelled => pb::NotificationKind::OrderCancelled,
        }) as i32
    }

    /// The kind of a protobuf value; `None` for UNSPECIFIED or one this gateway does not know.
    pub fn from_pb(raw: i32) -> Option<Self> {
        Some(match pb::NotificationKind::try_from(raw).ok()? {
            pb::NotificationKind::Unspecified => return None,
            pb::NotificationKind::Welcome => Self::Welcome,
            pb::NotificationKind::OrderPaid => Self::OrderPaid,
            pb::NotificationKind::PaymentFailed => Self::PaymentFailed,
            pb::NotificationKind::OrderShipped => Self::OrderShipped,
            pb::NotificationKind::OrderDelivered => Self::OrderDelivered,
            pb::NotificationKind::OrderRefunded => Self::OrderRefunded,
            pb::NotificationKind::OrderCancelled => Self::OrderCancelled,
        })
    }
}

/// How a notification reached the user.
#[derive(Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationChannel {
    /// Only in the inbox (its kind is muted for e-mail).
    InApp,
    /// Sent by e-mail too.
    Email,
}

/// One notification of the caller's.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct NotificationResponse {
    #[schema(format = Uuid)]
    pub id: String,
    pub kind: NotificationKind,
    pub channel: NotificationChannel,
    #[schema(example = "Order confirmation 0190b6a4-7d2e-7c3a-9f1e-5a6b7c8d9e0f")]
    pub subject: String,
    /// Plain text.
    pub body: String,
    pub read: bool,
    pub created_at: Option<DateTime<Utc>>,
    /// Absent while unread.
    pub read_at: Option<DateTime<Utc>>,
}

impl NotificationResponse {
    /// The JSON of a protobuf notification; a kind or channel this gateway does not know is
    /// an internal error (the gateway and the service disagree on the contract).
    pub fn from_pb(n: pb::Notification) -> Result<Self, Problem> {
        let kind = NotificationKind::from_pb(n.kind).ok_or_else(|| {
            tracing::error!(kind = n.kind, "a notification of an unknown kind");
            Problem::internal()
        })?;
        let channel = match pb::Channel::try_from(n.channel) {
            Ok(pb::Channel::InApp) => NotificationChannel::InApp,
            Ok(pb::Channel::Email) => NotificationChannel::Email,
            _ => {
                tracing::error!(channel = n.channel, "a notification of an unknown channel");
                return Err(Problem::internal());
            }
        };
        Ok(Self {
            id: n.id,
            kind,
            channel,
            subject: n.subject,
            body: n.body,
            read: n.read,
            created_at: optional_time(n.create_time),
            read_at: optional_time(n.read_time),
        })
    }
}

/// One page of the caller's notifications, newest first; `next_cursor` is absent on the last
/// page.
#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// Only unread notifications.
    pub unread: Option<bool>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (with the same filters).
    pub cursor: Option<String>,
}

/// How notifications reach the caller. Every kind always reaches the inbox.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Kinds not sent by e-mail; empty means every kind is e-mailed. A PUT replaces the whole
    /// list (repeats count once); answers list each kind once, in the order of the enum.
    #[schema(max_items = 7, example = json!(["order_shipped"]))]
    pub email_muted: Vec<NotificationKind>,
}

impl Preferences {
    pub fn from_pb(p: Option<pb::Preferences>) -> Result<Self, Problem> {
        let raw = p.unwrap_or_default().email_muted;
        let email_muted = raw
            .iter()
            .map(|kind| NotificationKind::from_pb(*kind))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                tracing::error!(kinds = ?raw, "preferences of an unknown kind");
                Problem::internal()
            })?;
        Ok(Self { email_muted })
    }

    pub fn to_pb(&self) -> pb::Preferences {
        pb::Preferences {
            email_muted: self.email_muted.iter().map(|k| k.to_pb()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_the_contract() {
        for kind in [
            NotificationKind::Welcome,
            NotificationKind::OrderPaid,
            NotificationKind::PaymentFailed,
            NotificationKind::OrderShipped,
            NotificationKind::OrderDelivered,
            NotificationKind::OrderRefunded,
            NotificationKind::OrderCancelled,
        ] {
            assert_eq!(NotificationKind::from_pb(kind.to_pb()), Some(kind));
        }
        assert_eq!(NotificationKind::from_pb(0), None);
        assert_eq!(
            serde_json::to_string(&NotificationKind::OrderPaid).unwrap(),
            "\"order_paid\""
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        assert!(serde_json::from_str::<Preferences>(r#"{"email_muted":["order_lost"]}"#).is_err());
        assert!(serde_json::from_str::<Preferences>(r#"{"email_muted":[],"sms":true}"#).is_err());
        let ok: Preferences = serde_json::from_str(r#"{"email_muted":["welcome"]}"#).unwrap();
        assert_eq!(ok.email_muted, [NotificationKind::Welcome]);
    }
}
