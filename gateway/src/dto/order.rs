//! Orders as the REST edge shows them, shared by the cart's checkout answer and `/api/orders`.

use serde::Serialize;
use shopmesh_contracts::pb::shopmesh::common::v1::{Money, PostalAddress};
use shopmesh_contracts::pb::shopmesh::order::v1 as pb;
use shopmesh_platform::time::optional_time;
use utoipa::ToSchema;

use crate::dto::non_empty;

/// An amount in integer minor units (cents) and its ISO 4217 currency.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct Amount {
    #[schema(example = 1999)]
    pub amount: i64,
    #[schema(example = "USD")]
    pub currency: String,
}

impl From<Money> for Amount {
    fn from(m: Money) -> Self {
        Self {
            amount: m.amount_minor,
            currency: m.currency,
        }
    }
}

/// An optional protobuf amount as JSON (zero in no currency when unset).
pub fn amount(m: Option<Money>) -> Amount {
    m.unwrap_or_default().into()
}

/// A shipping address as copied into an order.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ShippingAddress {
    pub recipient: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub phone: Option<String>,
}

impl From<PostalAddress> for ShippingAddress {
    fn from(a: PostalAddress) -> Self {
        Self {
            recipient: a.recipient,
            line1: a.line1,
            line2: non_empty(a.line2),
            city: a.city,
            region: non_empty(a.region),
            postal_code: a.postal_code,
            country: a.country,
            phone: non_empty(a.phone),
        }
    }
}

/// One line of an order: name and price as they were when the order was placed.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct OrderLine {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub unit_price: Amount,
    pub quantity: i32,
    pub line_total: Amount,
}

/// One status change of an order.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct StatusChange {
    /// Absent for the first change (the order's creation).
    pub from: Option<String>,
    pub to: String,
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// The customer or admin who caused it; absent when the checkout or delivery did.
    pub actor_id: Option<String>,
    pub note: Option<String>,
}

/// An order.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct OrderResponse {
    pub id: String,
    pub user_id: String,
    /// CREATED, PAID, SHIPPED, COMPLETED, CANCELLED or REFUNDED.
    #[schema(example = "PAID")]
    pub status: String,
    pub lines: Vec<OrderLine>,
    pub total: Amount,
    pub refunded_total: Amount,
    pub shipping_address: Option<ShippingAddress>,
    pub payment_id: Option<String>,
    pub shipment_id: Option<String>,
    /// Why it was cancelled: CUSTOMER_REQUESTED, ADMIN_REQUESTED, OUT_OF_STOCK,
    /// PAYMENT_FAILED or RESERVATION_EXPIRED.
    pub cancellation_reason: Option<String>,
    /// The canceller's note or the card's decline code.
    pub cancellation_note: Option<String>,
    /// The checkout step last recorded.
    pub checkout_step: String,
    pub status_history: Vec<StatusChange>,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An order status as the API spells it: the enum name without its prefix.
pub fn status_name(status: i32) -> Option<String> {
    match pb::OrderStatus::try_from(status).ok()? {
        pb::OrderStatus::Unspecified => None,
        s => Some(strip(s.as_str_name(), "ORDER_STATUS_")),
    }
}

fn strip(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

impl From<pb::Order> for OrderResponse {
    fn from(o: pb::Order) -> Self {
        let reason = pb::CancellationReason::try_from(o.cancellation_reason)
            .ok()
            .filter(|r| *r != pb::CancellationReason::Unspecified)
            .map(|r| strip(r.as_str_name(), "CANCELLATION_REASON_"));
        let step = pb::SagaStep::try_from(o.saga_step)
            .map(|s| strip(s.as_str_name(), "SAGA_STEP_"))
            .unwrap_or_else(|_| "UNSPECIFIED".to_owned());
        Self {
            status: status_name(o.status).unwrap_or_else(|| "UNSPECIFIED".to_owned()),
            lines: o
                .lines
                .into_iter()
                .map(|l| OrderLine {
                    product_id: l.product_id,
                    sku: l.sku,
                    name: l.product_name,
                    unit_price: amount(l.unit_price),
                    quantity: l.quantity,
                    line_total: amount(l.line_total),
                })
                .collect(),
            total: amount(o.total),
            refunded_total: amount(o.refunded_total),
            shipping_address: o.shipping_address.map(Into::into),
            payment_id: non_empty(o.payment_id),
            shipment_id: non_empty(o.shipment_id),
            cancellation_reason: reason,
            cancellation_note: non_empty(o.cancellation_note),
            checkout_step: step,
            status_history: o
                .status_history
                .into_iter()
                .map(|c| StatusChange {
                    from: status_name(c.from_status),
                    to: status_name(c.to_status).unwrap_or_else(|| "UNSPECIFIED".to_owned()),
                    at: optional_time(c.change_time),
                    actor_id: non_empty(c.actor_id),
                    note: non_empty(c.note),
                })
                .collect(),
            created_at: optional_time(o.create_time),
            updated_at: optional_time(o.update_time),
            id: o.id,
            user_id: o.user_id,
        }
    }
}

/// One page of orders, newest first; `next_cursor` is absent on the last page.
#[derive(Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderResponse>,
    pub next_cursor: Option<String>,
}

/// The order statuses a list can be filtered by.
#[derive(serde::Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatusFilter {
    Created,
    Paid,
    Shipped,
    Completed,
    Cancelled,
    Refunded,
}

impl OrderStatusFilter {
    pub fn to_pb(self) -> i32 {
        (match self {
            Self::Created => pb::OrderStatus::Created,
            Self::Paid => pb::OrderStatus::Paid,
            Self::Shipped => pb::OrderStatus::Shipped,
            Self::Completed => pb::OrderStatus::Completed,
            Self::Cancelled => pb::OrderStatus::Cancelled,
            Self::Refunded => pb::OrderStatus::Refunded,
        }) as i32
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    /// Only orders in this status.
    #[param(inline)]
    pub status: Option<OrderStatusFilter>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (with the same filters).
    pub cursor: Option<String>,
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminOrderQuery {
    /// Only this customer's orders.
    #[param(max_length = 64)]
    pub user_id: Option<String>,
    /// Only orders in this status.
    #[param(inline)]
    pub status: Option<OrderStatusFilter>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (with the same filters).
    pub cursor: Option<String>,
}

/// Why the customer or admin cancels.
#[derive(serde::Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[schema(max_length = 500, example = "ordered the wrong size")]
    pub reason: Option<String>,
}

/// The fulfilment statuses an admin may set.
#[derive(serde::Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FulfilmentStatus {
    Shipped,
    Completed,
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderStatusBody {
    pub status: FulfilmentStatus,
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

/// An amount to refund, in the order's currency.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundAmount {
    /// Minor units, positive.
    #[schema(minimum = 1, maximum = 1_000_000_000_000i64, example = 500)]
    pub amount: i64,
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// A refund of a paid order; without `amount` everything not yet refunded is given back.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    #[schema(format = Uuid)]
    pub order_id: String,
    pub amount: Option<RefundAmount>,
    #[schema(max_length = 500)]
    pub note: Option<String>,
}
