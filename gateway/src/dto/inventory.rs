//! JSON shapes of the inventory API (stock levels, the stock audit trail, adjustments) and
//! their conversion to and from the product service's InventoryService contracts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;
use shopmesh_platform::time::time_or_epoch;
use utoipa::{IntoParams, ToSchema};

use crate::dto::non_empty;

/// The stock level of one SKU. `available = on_hand - reserved`.
#[derive(Serialize, ToSchema)]
pub struct StockResponse {
    pub sku: String,
    pub product_id: String,
    pub on_hand: i32,
    pub reserved: i32,
    pub available: i32,
    pub low_stock_threshold: i32,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MovementReason {
    Receiving,
    Damage,
    Correction,
    Return,
    Sale,
    Reserve,
    Release,
    Expire,
}

/// One entry of the stock audit trail.
#[derive(Serialize, ToSchema)]
pub struct MovementResponse {
    pub id: String,
    /// Change of on_hand.
    pub delta: i32,
    pub on_hand_after: i32,
    /// Change of reserved.
    pub reserved_delta: i32,
    pub reserved_after: i32,
    pub reason: Option<MovementReason>,
    /// The admin who made the change; absent when a service did.
    pub actor_id: Option<String>,
    pub order_id: Option<String>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A SKU's level and its history, newest first.
#[derive(Serialize, ToSchema)]
pub struct InventoryResponse {
    pub stock: StockResponse,
    pub movements: Vec<MovementResponse>,
    /// Cursor for older movements; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MovementQuery {
    /// Movements per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Why stock is adjusted by hand.
#[derive(Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub enum AdjustReason {
    Receiving,
    Damage,
    Correction,
    Return,
}

/// A signed change of on_hand.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    #[schema(schema_with = non_zero_delta)]
    pub delta: i32,
    pub reason: AdjustReason,
    #[schema(schema_with = adjust_note)]
    pub note: Option<String>,
}

fn adjust_note() -> utoipa::openapi::Schema {
    crate::dto::optional_multiline_text(
        "At most 500 characters; line breaks and tabs are allowed, other control or invisible\n\
         (zero-width, bidi) characters are not (surrounding whitespace is trimmed).",
        500,
    )
}

/// A non-zero 32-bit change of on_hand.
fn non_zero_delta() -> utoipa::openapi::Schema {
    use utoipa::openapi::{ObjectBuilder, OneOfBuilder, Type};
    let range = |min: i32, max: i32| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int32,
            )))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    let delta = OneOfBuilder::new()
        .item(range(i32::MIN, -1))
        .item(range(1, i32::MAX))
        .description(Some(
            "Non-zero; negative removes stock (never below what is reserved: 409).",
        ))
        .examples([25])
        .build();
    utoipa::openapi::Schema::OneOf(delta)
}

#[derive(Serialize, ToSchema)]
pub struct AdjustResponse {
    pub stock: StockResponse,
    pub movement: MovementResponse,
}

impl From<pb::Stock> for StockResponse {
    fn from(s: pb::Stock) -> Self {
        Self {
            sku: s.sku,
            product_id: s.product_id,
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
            low_stock_threshold: s.low_stock_threshold,
            updated_at: time_or_epoch(s.update_time),
        }
    }
}

impl From<pb::StockMovement> for MovementResponse {
    fn from(m: pb::StockMovement) -> Self {
        use pb::StockMovementReason as R;
        let reason = match m.reason() {
            R::Receiving => Some(MovementReason::Receiving),
            R::Damage => Some(MovementReason::Damage),
            R::Correction => Some(MovementReason::Correction),
            R::Return => Some(MovementReason::Return),
            R::Sale => Some(MovementReason::Sale),
            R::Reserve => Some(MovementReason::Reserve),
            R::Release => Some(MovementReason::Release),
            R::Expire => Some(MovementReason::Expire),
            R::Unspecified => None,
        };
        Self {
            id: m.id,
            delta: m.delta,
            on_hand_after: m.on_hand_after,
            reserved_delta: m.reserved_delta,
            reserved_after: m.reserved_after,
            reason,
            actor_id: non_empty(m.actor_id),
            order_id: non_empty(m.order_id),
            note: non_empty(m.note),
            created_at: time_or_epoch(m.create_time),
        }
    }
}

impl From<AdjustReason> for pb::StockMovementReason {
    fn from(reason: AdjustReason) -> Self {
        match reason {
            AdjustReason::Receiving => Self::Receiving,
            AdjustReason::Damage => Self::Damage,
            AdjustReason::Correction => Self::Correction,
            AdjustReason::Return => Self::Return,
        }
    }
}
