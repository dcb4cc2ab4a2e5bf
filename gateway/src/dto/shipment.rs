//! JSON shapes of the shipment routes: an order's shipment, its tracking updates (also the
//! `data` of the tracking event stream) and the admin's advance body, converted from and to the
//! delivery service's contracts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::delivery::v1 as pb;
use shopmesh_contracts::pb::shopmesh::user::v1::Tier;
use shopmesh_platform::problem::Problem;
use shopmesh_platform::time::optional_time;
use utoipa::ToSchema;

use crate::dto::non_empty;
use crate::dto::order::ShippingAddress;

/// Where a shipment is. The courier's path is LABEL_CREATED → IN_TRANSIT → OUT_FOR_DELIVERY →
/// DELIVERED; a warehouse may report PENDING → PACKED → SHIPPED first. DELIVERED, RETURNED and
/// CANCELLED are final.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShipmentStatus {
    LabelCreated,
    Pending,
    Packed,
    Shipped,
    InTransit,
    OutForDelivery,
    Delivered,
    Failed,
    Returned,
    Cancelled,
}

impl ShipmentStatus {
    /// The status of a protobuf value; `None` for UNSPECIFIED and unknown values.
    pub fn from_pb(value: i32) -> Option<Self> {
        Some(match pb::ShipmentStatus::try_from(value).ok()? {
            pb::ShipmentStatus::Unspecified => return None,
            pb::ShipmentStatus::LabelCreated => Self::LabelCreated,
            pb::ShipmentStatus::Pending => Self::Pending,
            pb::ShipmentStatus::Packed => Self::Packed,
            pb::ShipmentStatus::Shipped => Self::Shipped,
            pb::ShipmentStatus::InTransit => Self::InTransit,
            pb::ShipmentStatus::OutForDelivery => Self::OutForDelivery,
            pb::ShipmentStatus::Delivered => Self::Delivered,
            pb::ShipmentStatus::Failed => Self::Failed,
            pb::ShipmentStatus::Returned => Self::Returned,
            pb::ShipmentStatus::Cancelled => Self::Cancelled,
        })
    }

    pub fn to_pb(self) -> pb::ShipmentStatus {
        match self {
            Self::LabelCreated => pb::ShipmentStatus::LabelCreated,
            Self::Pending => pb::ShipmentStatus::Pending,
            Self::Packed => pb::ShipmentStatus::Packed,
            Self::Shipped => pb::ShipmentStatus::Shipped,
            Self::InTransit => pb::ShipmentStatus::InTransit,
            Self::OutForDelivery => pb::ShipmentStatus::OutForDelivery,
            Self::Delivered => pb::ShipmentStatus::Delivered,
            Self::Failed => pb::ShipmentStatus::Failed,
            Self::Returned => pb::ShipmentStatus::Returned,
            Self::Cancelled => pb::ShipmentStatus::Cancelled,
        }
    }

    /// Whether nothing follows this status (the tracking stream ends after it).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Returned | Self::Cancelled)
    }
}

/// One recorded status of a shipment: the `data` of a `tracking` event on the stream.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct TrackingUpdate {
    pub status: ShipmentStatus,
    /// Where it was scanned, such as "Leipzig hub"; null when unknown.
    #[schema(example = "SimPost sorting centre")]
    pub location: Option<String>,
    #[schema(example = "Picked up by SimPost")]
    pub note: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// One entry of a shipment's tracking history.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct TrackingEventResponse {
    /// The event id (also the `id:` of the stream's event, for `Last-Event-ID`).
    pub id: String,
    #[serde(flatten)]
    pub update: TrackingUpdate,
}

impl TryFrom<pb::TrackingEvent> for TrackingEventResponse {
    type Error = Problem;

    fn try_from(e: pb::TrackingEvent) -> Result<Self, Problem> {
        Ok(Self {
            update: TrackingUpdate {
                status: ShipmentStatus::from_pb(e.status).ok_or_else(Problem::internal)?,
                location: non_empty(e.location),
                note: non_empty(e.note),
                at: optional_time(e.event_time),
            },
            id: e.id,
        })
    }
}

/// What to pack.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ShipmentLineResponse {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
}

/// The delivery of one order.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ShipmentResponse {
    pub id: String,
    pub order_id: String,
    pub user_id: String,
    /// Fulfilment priority: VIP shipments overtake standard ones.
    #[schema(example = "STANDARD")]
    pub tier: String,
    pub status: ShipmentStatus,
    #[schema(example = "SimPost")]
    pub carrier: String,
    #[schema(example = "SIM004215378912")]
    pub tracking_number: String,
    pub address: Option<ShippingAddress>,
    pub lines: Vec<ShipmentLineResponse>,
    /// Tracking history, oldest first; the first is LABEL_CREATED.
    pub events: Vec<TrackingEventResponse>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl TryFrom<pb::Shipment> for ShipmentResponse {
    type Error = Problem;

    fn try_from(s: pb::Shipment) -> Result<Self, Problem> {
        let tier = match Tier::try_from(s.tier) {
            Ok(Tier::Vip) => "VIP",
            _ => "STANDARD",
        };
        Ok(Self {
            status: ShipmentStatus::from_pb(s.status).ok_or_else(Problem::internal)?,
            tier: tier.to_owned(),
            address: s.address.map(Into::into),
            lines: s
                .lines
                .into_iter()
                .map(|l| ShipmentLineResponse {
                    product_id: l.product_id,
                    sku: l.sku,
                    name: l.product_name,
                    quantity: l.quantity,
                })
                .collect(),
            events: s
                .events
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            created_at: optional_time(s.create_time),
            updated_at: optional_time(s.update_time),
            id: s.id,
            order_id: s.order_id,
            user_id: s.user_id,
            carrier: s.carrier,
            tracking_number: s.tracking_number,
        })
    }
}

/// The next status of a shipment, with what the carrier reported.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    pub status: ShipmentStatus,
    /// Where it was scanned.
    #[schema(max_length = 200, example = "Leipzig hub")]
    pub location: Option<String>,
    #[schema(max_length = 500, example = "Arrived at the hub")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_spell_like_the_contract() {
        for value in 1..=10 {
            let status = ShipmentStatus::from_pb(value).unwrap();
            assert_eq!(status.to_pb() as i32, value);
            let json = serde_json::to_value(status).unwrap();
            let name = pb::ShipmentStatus::try_from(value).unwrap().as_str_name();
            assert_eq!(
                json.as_str().unwrap(),
                name.strip_prefix("SHIPMENT_STATUS_").unwrap()
            );
        }
        assert_eq!(ShipmentStatus::from_pb(0), None);
        assert_eq!(ShipmentStatus::from_pb(99), None);
    }

    #[test]
    fn tracking_events_flatten_their_update() {
        let event = TrackingEventResponse::try_from(pb::TrackingEvent {
            id: "e-1".into(),
            status: pb::ShipmentStatus::InTransit.into(),
            location: "Leipzig hub".into(),
            note: String::new(),
            event_time: None,
        })
        .unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "e-1",
                "status": "IN_TRANSIT",
                "location": "Leipzig hub",
                "note": null,
                "at": null
            })
        );
    }
}
