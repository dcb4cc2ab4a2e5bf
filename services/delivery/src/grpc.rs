//! The gRPC face of the delivery service: converts protobuf messages to domain calls and back,
//! and decides who is asking.
//!
//! Access is decided before a call reaches these handlers, by the platform's method guard from
//! each RPC's policy in delivery.proto: CreateShipment admits only the order service's identity;
//! reads and TrackShipment need a user token (or the order service); AdvanceShipment an admin
//! token or the order service. The handlers still check callers where they act on them, and
//! ownership: a customer sees only their own shipments (NOT_FOUND for others').

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use shopmesh_contracts::pb::shopmesh::delivery::v1::{
    self as pb, delivery_service_server::DeliveryService as DeliveryApi,
};
use shopmesh_contracts::pb::shopmesh::user::v1::Tier as PbTier;
use shopmesh_platform::auth::Identity;
use shopmesh_platform::grpc::{REQUEST_ID, calling_service};
use shopmesh_platform::time::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{
    Address, Line, Shipment, ShipmentDraft, ShipmentStatus, StepDraft, TrackingEvent, Viewer,
};
use crate::error::Error;
use crate::events::tier_pb;
use crate::service::{Advancer, DeliveryService};

/// The one service allowed to create shipments and to see every one without a user token.
const ORDER_SERVICE: &str = "order";

pub struct DeliveryGrpc {
    service: Arc<DeliveryService>,
}

impl DeliveryGrpc {
    pub fn new(service: Arc<DeliveryService>) -> Self {
        Self { service }
    }
}

/// The request id of the call, the correlation id of the events it causes; empty when none.
fn correlation_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn from_order_service<T>(request: &Request<T>) -> bool {
    calling_service(request).is_some_and(|s| s.name == ORDER_SERVICE)
}

/// Who is looking: the user of the token (admins see all), else the order service (all).
fn viewer<T>(request: &Request<T>) -> Result<Viewer, Status> {
    if let Some(user) = request.extensions().get::<Identity>() {
        return Ok(if user.is_admin() {
            Viewer::Everyone
        } else {
            Viewer::Customer(user.user_id.clone())
        });
    }
    if from_order_service(request) {
        return Ok(Viewer::Everyone);
    }
    Err(Status::unauthenticated("an access token is required"))
}

pub fn status_pb(status: ShipmentStatus) -> pb::ShipmentStatus {
    match status {
        ShipmentStatus::LabelCreated => pb::ShipmentStatus::LabelCreated,
        ShipmentStatus::Pending => pb::ShipmentStatus::Pending,
        ShipmentStatus::Packed => pb::ShipmentStatus::Packed,
        ShipmentStatus::Shipped => pb::ShipmentStatus::Shipped,
        ShipmentStatus::InTransit => pb::ShipmentStatus::InTransit,
        ShipmentStatus::OutForDelivery => pb::ShipmentStatus::OutForDelivery,
        ShipmentStatus::Delivered => pb::ShipmentStatus::Delivered,
        ShipmentStatus::Failed => pb::ShipmentStatus::Failed,
        ShipmentStatus::Returned => pb::ShipmentStatus::Returned,
        ShipmentStatus::Cancelled => pb::ShipmentStatus::Cancelled,
    }
}

/// A protobuf status as the domain's; `None` for UNSPECIFIED and unknown values.
fn status_from_pb(value: i32) -> Option<ShipmentStatus> {
    Some(match pb::ShipmentStatus::try_from(value).ok()? {
        pb::ShipmentStatus::Unspecified => return None,
        pb::ShipmentStatus::LabelCreated => ShipmentStatus::LabelCreated,
        pb::ShipmentStatus::Pending => ShipmentStatus::Pending,
        pb::ShipmentStatus::Packed => ShipmentStatus::Packed,
        pb::ShipmentStatus::Shipped => ShipmentStatus::Shipped,
        pb::ShipmentStatus::InTransit => ShipmentStatus::InTransit,
        pb::ShipmentStatus::OutForDelivery => ShipmentStatus::OutForDelivery,
        pb::ShipmentStatus::Delivered => ShipmentStatus::Delivered,
        pb::ShipmentStatus::Failed => ShipmentStatus::Failed,
        pb::ShipmentStatus::Returned => ShipmentStatus::Returned,
        pb::ShipmentStatus::Cancelled => ShipmentStatus::Cancelled,
    })
}

fn event_pb(event: &TrackingEvent) -> pb::TrackingEvent {
    pb::TrackingEvent {
        id: event.id.to_string(),
        status: status_pb(event.status).into(),
        location: event.location.clone(),
        note: event.note.clone(),
        event_time: Some(timestamp(event.at)),
    }
}

fn shipment_pb(shipment: &Shipment) -> pb::Shipment {
    let a = &shipment.address;
    pb::Shipment {
        id: shipment.id.to_string(),
        order_id: shipment.order_id.to_string(),
        user_id: shipment.user_id.clone(),
        tier: tier_pb(shipment.tier).into(),
        status: status_pb(shipment.status).into(),
        address: Some(PostalAddress {
            recipient: a.recipient.clone(),
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            region: a.region.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
            phone: a.phone.clone(),
        }),
        lines: shipment
            .lines
            .iter()
            .map(|l| pb::ShipmentLine {
                product_id: l.product_id.clone(),
                sku: l.sku.clone(),
                product_name: l.product_name.clone(),
                quantity: l.quantity,
            })
            .collect(),
        carrier: shipment.carrier.clone(),
        tracking_number: shipment.tracking_number.clone(),
        events: shipment.events.iter().map(event_pb).collect(),
        create_time: Some(timestamp(shipment.created_at)),
        update_time: Some(timestamp(shipment.updated_at)),
    }
}

fn draft(request: pb::CreateShipmentRequest) -> ShipmentDraft {
    ShipmentDraft {
        order_id: request.order_id,
        user_id: request.user_id,
        vip: match PbTier::try_from(request.tier) {
            Ok(PbTier::Vip) => Some(true),
            Ok(PbTier::Standard) => Some(false),
            _ => None,
        },
        address: request.address.map(|a| Address {
            recipient: a.recipient,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            region: a.region,
            postal_code: a.postal_code,
            country: a.country,
            phone: a.phone,
        }),
        lines: request
            .lines
            .into_iter()
            .map(|l| Line {
                product_id: l.product_id,
                sku: l.sku,
                product_name: l.product_name,
                quantity: l.quantity,
            })
            .collect(),
    }
}

type TrackStream = Pin<Box<dyn Stream<Item = Result<pb::TrackShipmentResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DeliveryApi for DeliveryGrpc {
    async fn create_shipment(
        &self,
        request: Request<pb::CreateShipmentRequest>,
    ) -> Result<Response<pb::CreateShipmentResponse>, Status> {
        if !from_order_service(&request) {
            return Err(Status::permission_denied(
                "only the order service creates shipments",
            ));
        }
        let correlation_id = correlation_id(&request);
        let shipment = self
            .service
            .create(draft(request.into_inner()), &correlation_id)
            .await?;
        Ok(Response::new(pb::CreateShipmentResponse {
            shipment: Some(shipment_pb(&shipment)),
        }))
    }

    async fn get_shipment(
        &self,
        request: Request<pb::GetShipmentRequest>,
    ) -> Result<Response<pb::GetShipmentResponse>, Status> {
        let viewer = viewer(&request)?;
        let shipment = self
            .service
            .get(&viewer, &request.get_ref().shipment_id)
            .await?;
        Ok(Response::new(pb::GetShipmentResponse {
            shipment: Some(shipment_pb(&shipment)),
        }))
    }

    async fn get_shipment_by_order(
        &self,
        request: Request<pb::GetShipmentByOrderRequest>,
    ) -> Result<Response<pb::GetShipmentByOrderResponse>, Status> {
        let viewer = viewer(&request)?;
        let shipment = self
            .service
            .get_by_order(&viewer, &request.get_ref().order_id)
            .await?;
        Ok(Response::new(pb::GetShipmentByOrderResponse {
            shipment: Some(shipment_pb(&shipment)),
        }))
    }

    type TrackShipmentStream = TrackStream;

    async fn track_shipment(
        &self,
        request: Request<pb::TrackShipmentRequest>,
    ) -> Result<Response<Self::TrackShipmentStream>, Status> {
        let viewer = viewer(&request)?;
        let message = request.get_ref();
        let events = self
            .service
            .track(&viewer, &message.shipment_id, &message.after_event_id)
            .await?;
        let stream = events.map(|item| {
            item.map(|event| pb::TrackShipmentResponse {
                event: Some(event_pb(&event)),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn advance_shipment(
        &self,
        request: Request<pb::AdvanceShipmentRequest>,
    ) -> Result<Response<pb::AdvanceShipmentResponse>, Status> {
        let advancer = match request.extensions().get::<Identity>() {
            Some(user) if user.is_admin() => Advancer::Admin,
            _ if from_order_service(&request) => Advancer::OrderService,
            Some(_) => return Err(Error::PermissionDenied("admin role required").into()),
            None => return Err(Status::unauthenticated("an access token is required")),
        };
        let correlation_id = correlation_id(&request);
        let message = request.into_inner();
        let step = StepDraft {
            status: status_from_pb(message.status),
            location: message.location,
            note: message.note,
            carrier: message.carrier,
            tracking_number: message.tracking_number,
        };
        let shipment = self
            .service
            .advance(advancer, &message.shipment_id, step, &correlation_id)
            .await?;
        Ok(Response::new(pb::AdvanceShipmentResponse {
            shipment: Some(shipment_pb(&shipment)),
        }))
    }
}
