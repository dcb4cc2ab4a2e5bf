//! JSON shapes of the cart routes and their conversion from the cart service's contracts.
//!
//! Card details arrive in [`CheckoutBody::payment`] and go to the payment service's tokenizer
//! only; none of these types implements `Debug`, so they cannot end up in a log line by accident.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::cart::v1 as pb;
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use shopmesh_platform::time::optional_time;
use utoipa::ToSchema;

use crate::dto::order::{Amount, amount};

/// A SKU as the catalog spells it (any letter case).
pub const SKU_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$";

/// One line of the cart, priced from the catalog when the cart was read.
#[derive(Serialize, ToSchema)]
pub struct CartItemResponse {
    pub product_id: String,
    #[schema(example = "TSHIRT-RED-M")]
    pub sku: String,
    /// The product's current name (its last known name when unavailable).
    pub name: String,
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i32,
    /// The current catalog price; checkout expects to be charged this.
    pub unit_price: Amount,
    /// unit_price × quantity.
    pub line_total: Amount,
    /// False when the product was deactivated or deleted: remove the line to check out.
    pub available: bool,
}

/// The caller's cart. An empty cart has no `expires_at`.
#[derive(Serialize, ToSchema)]
pub struct CartResponse {
    /// In the order the products were first added.
    pub items: Vec<CartItemResponse>,
    /// Sum of the line totals of available lines.
    pub total: Amount,
    /// Sum of the quantities of every line.
    pub item_count: i32,
    /// When the cart disappears unless read or changed again (7 days after the last use by
    /// default).
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::Cart> for CartResponse {
    fn from(c: pb::Cart) -> Self {
        Self {
            items: c
                .items
                .into_iter()
                .map(|i| CartItemResponse {
                    product_id: i.product_id,
                    sku: i.sku,
                    name: i.name,
                    quantity: i.quantity,
                    unit_price: amount(i.unit_price),
                    line_total: amount(i.line_total),
                    available: i.available,
                })
                .collect(),
            total: amount(c.total),
            item_count: c.item_count,
            expires_at: optional_time(c.expire_time),
            updated_at: optional_time(c.update_time),
        }
    }
}

/// Units of a product to put in the cart; they add to the product's line if it has one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItemBody {
    /// 2 to 40 letters, digits or dashes, starting and ending with a letter or digit
    /// (case-insensitive).
    #[schema(
        example = "TSHIRT-RED-M",
        pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$",
        min_length = 2,
        max_length = 40
    )]
    pub sku: String,
    /// 1 to 99; a line holds at most 99 units in all (409 beyond).
    #[schema(minimum = 1, maximum = 99, example = 1)]
    pub quantity: i32,
}

/// The new quantity of a line.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItemBody {
    /// 0 to 99; 0 removes the line.
    #[schema(minimum = 0, maximum = 99, example = 2)]
    pub quantity: i32,
}

/// An address for this order only (it is not added to the address book).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingAddressBody {
    #[schema(example = "Ada Lovelace", min_length = 1, max_length = 100)]
    pub recipient: String,
    #[schema(example = "12 St James's Square", min_length = 1, max_length = 200)]
    pub line1: String,
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(example = "London", min_length = 1, max_length = 100)]
    pub city: String,
    #[schema(max_length = 100)]
    pub region: Option<String>,
    #[schema(example = "SW1Y 4JH", min_length = 1, max_length = 20)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (case-insensitive).
    #[schema(example = "GB", pattern = "^[A-Za-z]{2}$")]
    pub country: String,
    /// Optional +, then 6 to 15 digits; spaces, dashes, dots and parentheses allowed.
    #[schema(example = "+44 20 7946 0000")]
    pub phone: Option<String>,
}

impl From<ShippingAddressBody> for PostalAddress {
    fn from(a: ShippingAddressBody) -> Self {
        Self {
            recipient: a.recipient,
            line1: a.line1,
            line2: a.line2.unwrap_or_default(),
            city: a.city,
            region: a.region.unwrap_or_default(),
            postal_code: a.postal_code,
            country: a.country,
            phone: a.phone.unwrap_or_default(),
        }
    }
}

/// Card details. They are tokenized by the payment service before the checkout and never stored
/// or logged; only the token travels on.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// 12 to 19 digits; spaces and dashes are ignored.
    #[schema(example = "4242 4242 4242 4242", pattern = "^[0-9 -]{12,25}$")]
    pub card_number: String,
    #[schema(minimum = 1, maximum = 12, example = 12)]
    pub exp_month: i32,
    /// Four digits; the expiry month must not be in the past.
    #[schema(minimum = 1000, maximum = 9999, example = 2030)]
    pub exp_year: i32,
    /// 3 or 4 digits.
    #[schema(example = "123", pattern = "^[0-9]{3,4}$")]
    pub cvc: String,
}

/// What to check out with: exactly one of `address_id` (from the address book) and
/// `shipping_address`, and the card.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// An address of the caller's address book (`GET /api/users/me/addresses`).
    pub address_id: Option<String>,
    pub shipping_address: Option<ShippingAddressBody>,
    pub payment: PaymentBody,
}
