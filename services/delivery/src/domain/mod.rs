//! Plain domain types of the delivery service, validated by parsing, and its pure rules (the
//! transition table, the courier's path). Protobuf types are converted at the gRPC edge.

mod courier;
mod shipment;
mod status;

pub use self::courier::courier_step;
pub use self::shipment::{
    Address, Line, MAX_CARRIER_CHARS, MAX_LINES, MAX_LOCATION_CHARS, MAX_NOTE_CHARS, NewShipment,
    Shipment, ShipmentDraft, Step, StepDraft, Tier, TrackingEvent, Viewer, parse_id,
};
pub use self::status::{OrderUpdate, Packing, ShipmentStatus};
