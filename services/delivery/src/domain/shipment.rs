//! Shipments, their lines and tracking events, and the validated inputs that create and advance
//! them.

use chrono::{DateTime, Utc};
use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::text::{optional_text, required_text};
use uuid::Uuid;

use crate::domain::ShipmentStatus;

/// Most lines one shipment carries.
pub const MAX_LINES: usize = 100;
/// Longest location or carrier text.
pub const MAX_LOCATION_CHARS: usize = 200;
/// Longest note.
pub const MAX_NOTE_CHARS: usize = 500;
/// Longest carrier name or tracking number.
pub const MAX_CARRIER_CHARS: usize = 64;

/// Fulfilment priority, a snapshot of the customer's tier when the order was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Standard,
    Vip,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "STANDARD",
            Self::Vip => "VIP",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "STANDARD" => Some(Self::Standard),
            "VIP" => Some(Self::Vip),
            _ => None,
        }
    }
}

/// Where the parcel goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub recipient: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    pub phone: String,
}

/// One product line to pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub sku: String,
    pub product_name: String,
    pub quantity: i32,
}

/// One recorded status of a shipment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingEvent {
    /// UUIDv7.
    pub id: Uuid,
    /// 1 for the LABEL_CREATED event, then one more per transition: the order of the history.
    pub seq: i32,
    pub status: ShipmentStatus,
    pub location: String,
    pub note: String,
    pub at: DateTime<Utc>,
}

/// The delivery of one order.
#[derive(Clone, Debug)]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: String,
    pub tier: Tier,
    pub status: ShipmentStatus,
    /// Sequence number of the latest event; transitions are conditional on it.
    pub last_event_seq: i32,
    pub address: Address,
    pub lines: Vec<Line>,
    pub carrier: String,
    pub tracking_number: String,
    /// Oldest first.
    pub events: Vec<TrackingEvent>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who is looking: a customer sees only their own shipments, admins and the order service all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    Customer(String),
    Everyone,
}

impl Viewer {
    pub fn may_see(&self, shipment: &Shipment) -> bool {
        match self {
            Self::Customer(user_id) => *user_id == shipment.user_id,
            Self::Everyone => true,
        }
    }
}

/// A validated CreateShipment request.
#[derive(Clone, Debug)]
pub struct NewShipment {
    pub order_id: Uuid,
    pub user_id: String,
    pub tier: Tier,
    pub address: Address,
    pub lines: Vec<Line>,
}

/// CreateShipment's fields before validation (the gRPC layer fills this from protobuf).
#[derive(Clone, Debug, Default)]
pub struct ShipmentDraft {
    pub order_id: String,
    pub user_id: String,
    /// `None` when the order named no tier: standard.
    pub vip: Option<bool>,
    pub address: Option<Address>,
    pub lines: Vec<Line>,
}

impl ShipmentDraft {
    /// Validates every field, gathering all violations into one error.
    pub fn validate(self) -> Result<NewShipment, Vec<FieldError>> {
        let mut errors = Vec::new();
        let order_id = parse_id("order_id", &self.order_id).map_err(|e| errors.push(e));
        let user_id = required_text("user_id", &self.user_id, 64).map_err(|e| errors.push(e));
        let address = match self.address {
            None => {
                errors.push(field_error("address", "is required"));
                Err(())
            }
            Some(address) => validate_address(address, &mut errors),
        };
        if self.lines.is_empty() {
            errors.push(field_error("lines", "must not be empty"));
        } else if self.lines.len() > MAX_LINES {
            errors.push(field_error(
                "lines",
                format!("must hold at most {MAX_LINES} lines"),
            ));
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, line) in self.lines.into_iter().enumerate() {
            let field = |name: &str| format!("lines[{i}].{name}");
            let product_id = required_text(&field("product_id"), &line.product_id, 64);
            let sku = required_text(&field("sku"), &line.sku, 64);
            let name = optional_text(&field("product_name"), &line.product_name, 200);
            if line.quantity <= 0 {
                errors.push(field_error(&field("quantity"), "must be positive"));
            }
            match (product_id, sku, name) {
                (Ok(product_id), Ok(sku), Ok(product_name)) => lines.push(Line {
                    product_id,
                    sku,
                    product_name,
                    quantity: line.quantity,
                }),
                (a, b, c) => errors.extend([a.err(), b.err(), c.err()].into_iter().flatten()),
            }
        }
        match (order_id, user_id, address) {
            (Ok(order_id), Ok(user_id), Ok(address)) if errors.is_empty() => Ok(NewShipment {
                order_id,
                user_id,
                tier: if self.vip == Some(true) {
                    Tier::Vip
                } else {
                    Tier::Standard
                },
                address,
                lines,
            }),
            _ => Err(errors),
        }
    }
}

fn validate_address(address: Address, errors: &mut Vec<FieldError>) -> Result<Address, ()> {
    let mut ok = true;
    let mut take = |result: Result<String, FieldError>| match result {
        Ok(value) => value,
        Err(error) => {
            errors.push(error);
            ok = false;
            String::new()
        }
    };
    let checked = Address {
        recipient: take(required_text("address.recipient", &address.recipient, 200)),
        line1: take(required_text("address.line1", &address.line1, 200)),
        line2: take(optional_text("address.line2", &address.line2, 200)),
        city: take(required_text("address.city", &address.city, 100)),
        region: take(optional_text("address.region", &address.region, 100)),
        postal_code: take(required_text(
            "address.postal_code",
            &address.postal_code,
            20,
        )),
        country: take(country(&address.country)),
        phone: take(optional_text("address.phone", &address.phone, 32)),
    };
    if ok { Ok(checked) } else { Err(()) }
}

fn country(raw: &str) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_owned())
    } else {
        Err(field_error(
            "address.country",
            "must be an ISO 3166-1 alpha-2 code in upper case",
        ))
    }
}

/// A UUID field; `field` names it in the error.
pub fn parse_id(field: &str, raw: &str) -> Result<Uuid, FieldError> {
    if raw.trim().is_empty() {
        return Err(field_error(field, "is required"));
    }
    Uuid::parse_str(raw.trim()).map_err(|_| field_error(field, "must be a UUID"))
}

/// One transition, validated: the next status with what the carrier reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub status: ShipmentStatus,
    pub location: String,
    pub note: String,
    /// Replaces the carrier when set.
    pub carrier: Option<String>,
    /// Replaces the tracking number when set.
    pub tracking_number: Option<String>,
}

/// AdvanceShipment's fields before validation.
#[derive(Clone, Debug, Default)]
pub struct StepDraft {
    /// `None` when the request named no (or an unknown) status.
    pub status: Option<ShipmentStatus>,
    pub location: String,
    pub note: String,
    pub carrier: String,
    pub tracking_number: String,
}

impl StepDraft {
    pub fn validate(self) -> Result<Step, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.status.is_none() {
            errors.push(field_error("status", "is required"));
        }
        let mut take = |result: Result<String, FieldError>| {
            result.map_err(|e| errors.push(e)).unwrap_or_default()
        };
        let location = take(optional_text(
            "location",
            &self.location,
            MAX_LOCATION_CHARS,
        ));
        let note = take(optional_text("note", &self.note, MAX_NOTE_CHARS));
        let carrier = take(optional_text("carrier", &self.carrier, MAX_CARRIER_CHARS));
        let tracking_number = take(optional_text(
            "tracking_number",
            &self.tracking_number,
            MAX_CARRIER_CHARS,
        ));
        match self.status {
            Some(status) if errors.is_empty() => Ok(Step {
                status,
                location,
                note,
                carrier: (!carrier.is_empty()).then_some(carrier),
                tracking_number: (!tracking_number.is_empty()).then_some(tracking_number),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ShipmentDraft {
        ShipmentDraft {
            order_id: Uuid::now_v7().to_string(),
            user_id: "user-1".into(),
            vip: Some(true),
            address: Some(Address {
                recipient: "Ada Lovelace".into(),
                line1: "1 Analytical Way".into(),
                city: "London".into(),
                postal_code: "N1 9GU".into(),
                country: "GB".into(),
                ..Address::default()
            }),
            lines: vec![Line {
                product_id: "p-1".into(),
                sku: "SKU-1".into(),
                product_name: "Engine".into(),
                quantity: 2,
            }],
        }
    }

    #[test]
    fn a_complete_draft_is_valid() {
        let shipment = draft().validate().unwrap();
        assert_eq!(shipment.tier, Tier::Vip);
        assert_eq!(shipment.lines.len(), 1);
        let standard = ShipmentDraft {
            vip: None,
            ..draft()
        };
        assert_eq!(standard.validate().unwrap().tier, Tier::Standard);
    }

    #[test]
    fn every_violation_is_reported() {
        let mut bad = draft();
        bad.order_id = "nope".into();
        bad.user_id = " ".into();
        bad.address.as_mut().unwrap().country = "gb".into();
        bad.lines[0].quantity = 0;
        bad.lines[0].sku = String::new();
        let fields: Vec<String> = bad
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "order_id",
                "user_id",
                "address.country",
                "lines[0].quantity",
                "lines[0].sku"
            ]
        );
    }

    #[test]
    fn a_step_needs_a_status_and_clean_text() {
        let errors = StepDraft {
            status: None,
            note: "a\u{0}b".into(),
            ..StepDraft::default()
        }
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["status", "note"]);
        let step = StepDraft {
            status: Some(ShipmentStatus::InTransit),
            location: " Leipzig hub ".into(),
            ..StepDraft::default()
        }
        .validate()
        .unwrap();
        assert_eq!(step.location, "Leipzig hub");
        assert_eq!(step.carrier, None);
    }
}
