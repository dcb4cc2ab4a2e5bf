//! Plain domain types of the product service, validated by parsing. Generated protobuf types are
//! converted into these at the gRPC edge and never travel further in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use shopmesh_platform::problem::FieldError;
use uuid::Uuid;

/// Largest page any list or search returns.
pub const MAX_PAGE_SIZE: usize = 100;
/// Page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Most distinct ids one BatchGetProducts may ask for.
pub const MAX_BATCH_GET: usize = 100;
/// Most rows in one import batch.
pub const MAX_IMPORT_ROWS: usize = 500;
/// Most lines in one reservation.
pub const MAX_RESERVATION_LINES: usize = 100;
/// Most images per product.
pub const MAX_IMAGE_URLS: usize = 10;
/// Largest attributes document, as compact JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Longest full-text query.
pub const MAX_QUERY_CHARS: usize = 200;

/// A field error with the given field name and message.
pub fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// A stock-keeping unit: 2 to 40 characters of upper-case letters, digits and dashes, starting and
/// ending with a letter or digit. Input is trimmed and upper-cased, so `ab-12` names `AB-12`.
/// The database checks the same format.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::parse_field("sku", raw)
    }

    pub fn parse_field(name: &str, raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim().to_ascii_uppercase();
        let bytes = value.as_bytes();
        let allowed = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-';
        let valid = (2..=40).contains(&bytes.len())
            && bytes.iter().all(allowed)
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-');
        if valid {
            Ok(Self(value))
        } else {
            Err(field_error(
                name,
                "must be 2 to 40 letters, digits or dashes, starting and ending with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Active ISO 4217 codes of currencies goods can be priced in (funds, precious metals and the
/// testing codes are left out), sorted for binary search.
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 alphabetic currency code from [`ISO_4217`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The US dollar, the default catalog currency.
    pub const USD: Self = Self(*b"USD");

    pub fn parse(name: &str, raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim().to_ascii_uppercase();
        if ISO_4217.binary_search(&value.as_str()).is_err() {
            return Err(field_error(name, "must be a known ISO 4217 currency code"));
        }
        let mut code = [0u8; 3];
        code.copy_from_slice(value.as_bytes());
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters from the list above ever get here.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in minor units of a currency. Never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

/// A product price: positive, in the catalog currency (one currency keeps price sorting and
/// price filters meaningful).
pub fn parse_price(
    amount_minor: i64,
    currency: &str,
    catalog: Currency,
) -> Result<Money, Vec<FieldError>> {
    let mut errors = Vec::new();
    if amount_minor <= 0 {
        errors.push(field_error("price.amount_minor", "must be positive"));
    }
    match Currency::parse("price.currency", currency) {
        Ok(code) if code == catalog => {}
        Ok(_) => errors.push(field_error(
            "price.currency",
            format!("must be the catalog currency {catalog}"),
        )),
        Err(err) => errors.push(err),
    }
    if errors.is_empty() {
        Ok(Money {
            amount_minor,
            currency: catalog,
        })
    } else {
        Err(errors)
    }
}

/// A required, trimmed, single-line text of 1..=max characters.
pub fn required_text(name: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(field_error(name, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(field_error(
            name,
            format!("must be at most {max} characters"),
        ));
    }
    if has_control(value) {
        return Err(field_error(name, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// An optional, trimmed text of at most max characters that may span lines.
pub fn multiline_text(name: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.chars().count() > max {
        return Err(field_error(
            name,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(field_error(name, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A URL-friendly unique name: lower-case letters and digits in groups joined by single dashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim();
        let valid = (1..=100).contains(&value.len())
            && value.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(field_error(
                "slug",
                "must be lower-case letters and digits joined by single dashes, e.g. running-shoes",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An optional id: empty means none, anything else must be a UUID.
pub fn optional_id(name: &str, raw: &str) -> Result<Option<Uuid>, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(value)
        .map(Some)
        .map_err(|_| field_error(name, "must be a UUID"))
}

fn image_urls(raw: &[String]) -> Result<Vec<String>, FieldError> {
    if raw.len() > MAX_IMAGE_URLS {
        return Err(field_error(
            "image_urls",
            format!("at most {MAX_IMAGE_URLS} images"),
        ));
    }
    raw.iter()
        .map(|url| {
            let url = url.trim();
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let host_ok = rest.is_some_and(|rest| {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                !host.is_empty()
            });
            if !host_ok
                || url.len() > 2048
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                Err(field_error("image_urls", "must be absolute http(s) URLs"))
            } else {
                Ok(url.to_owned())
            }
        })
        .collect()
}

fn attributes(raw: Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    if raw
        .keys()
        .any(|key| key.is_empty() || key.chars().count() > 100)
    {
        return Err(field_error(
            "attributes",
            "keys must be 1 to 100 characters long",
        ));
    }
    let size = serde_json::to_vec(&raw)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(field_error(
            "attributes",
            format!("must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"),
        ));
    }
    Ok(raw)
}

/// The editable fields of a product as a caller sent them, before validation.
#[derive(Clone, Debug, Default)]
pub struct ProductDraft {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category_id: String,
    pub price_amount_minor: i64,
    pub price_currency: String,
    pub image_urls: Vec<String>,
    pub attributes: Map<String, Value>,
    pub active: bool,
}

/// The editable fields of a product, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductFields {
    pub name: String,
    pub description: String,
    pub category_id: Option<Uuid>,
    pub price: Money,
    pub image_urls: Vec<String>,
    pub attributes: Map<String, Value>,
    pub active: bool,
}

impl ProductFields {
    /// Validates every field but the SKU, reporting all problems at once.
    pub fn parse(draft: &ProductDraft, catalog: Currency) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = required_text("name", &draft.name, 200)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let description = multiline_text("description", &draft.description, 5000)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let category_id = optional_id("category_id", &draft.category_id)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let price = parse_price(draft.price_amount_minor, &draft.price_currency, catalog)
            .map_err(|e| errors.extend(e))
            .ok();
        let image_urls = image_urls(&draft.image_urls)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let attributes = attributes(draft.attributes.clone())
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        match price {
            Some(price) if errors.is_empty() => Ok(Self {
                name,
                description,
                category_id,
                price,
                image_urls,
                attributes,
                active: draft.active,
            }),
            _ => Err(errors),
        }
    }

    /// The names of the fields whose values differ between `self` and `other`.
    pub fn changed_fields(&self, other: &Self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.name != other.name {
            changed.push("name");
        }
        if self.description != other.description {
            changed.push("description");
        }
        if self.category_id != other.category_id {
            changed.push("category_id");
        }
        if self.price != other.price {
            changed.push("price");
        }
        if self.image_urls != other.image_urls {
            changed.push("image_urls");
        }
        if self.attributes != other.attributes {
            changed.push("attributes");
        }
        if self.active != other.active {
            changed.push("active");
        }
        changed
    }
}

/// A new product with its validated SKU and fields.
#[derive(Clone, Debug)]
pub struct NewProduct {
    pub id: Uuid,
    pub sku: Sku,
    pub fields: ProductFields,
    pub initial_stock: i32,
    pub low_stock_threshold: i32,
}

/// A stored product.
#[derive(Clone, Debug)]
pub struct Product {
    pub id: Uuid,
    pub sku: Sku,
    pub fields: ProductFields,
    /// Bumped by every write; see [`etag`].
    pub version: i64,
    /// on_hand - reserved of the product's stock.
    pub available: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Product {
    pub fn in_stock(&self) -> bool {
        self.available > 0
    }

    pub fn etag(&self) -> String {
        etag(self.version)
    }

    /// The product's fields as a draft, for applying a partial update on top.
    pub fn to_draft(&self) -> ProductDraft {
        let f = &self.fields;
        ProductDraft {
            sku: self.sku.as_str().to_owned(),
            name: f.name.clone(),
            description: f.description.clone(),
            category_id: f.category_id.map(|id| id.to_string()).unwrap_or_default(),
            price_amount_minor: f.price.amount_minor,
            price_currency: f.price.currency.as_str().to_owned(),
            image_urls: f.image_urls.clone(),
            attributes: f.attributes.clone(),
            active: f.active,
        }
    }
}

/// The fields UpdateProduct may name in its mask.
pub const UPDATABLE_FIELDS: &[&str] = &[
    "name",
    "description",
    "category_id",
    "price",
    "image_urls",
    "attributes",
    "active",
];

/// Copies the fields named in `mask` from `patch` onto `base`; an empty mask replaces every
/// editable field. The SKU is not editable; unknown names are refused.
pub fn apply_mask(
    base: &ProductDraft,
    patch: &ProductDraft,
    mask: &[String],
) -> Result<ProductDraft, String> {
    if mask.is_empty() {
        return Ok(ProductDraft {
            sku: base.sku.clone(),
            ..patch.clone()
        });
    }
    let mut merged = base.clone();
    for path in mask {
        match path.as_str() {
            "name" => merged.name = patch.name.clone(),
            "description" => merged.description = patch.description.clone(),
            "category_id" => merged.category_id = patch.category_id.clone(),
            "price" => {
                merged.price_amount_minor = patch.price_amount_minor;
                merged.price_currency = patch.price_currency.clone();
            }
            "price.amount_minor" => merged.price_amount_minor = patch.price_amount_minor,
            "image_urls" => merged.image_urls = patch.image_urls.clone(),
            "attributes" => merged.attributes = patch.attributes.clone(),
            "active" => merged.active = patch.active,
            "sku" => return Err("the sku of a product cannot change".into()),
            other => return Err(format!("update_mask names an unknown field: {other}")),
        }
    }
    Ok(merged)
}

/// The opaque entity tag of a product version.
pub fn etag(version: i64) -> String {
    format!("v{version}")
}

/// The version in an entity tag, tolerating the HTTP forms `"v3"` and `W/"v3"`.
pub fn parse_etag(raw: &str) -> Option<i64> {
    let value = raw.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value.trim_matches('"');
    value.strip_prefix('v')?.parse().ok().filter(|v| *v >= 1)
}

/// A node of the category tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub parent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The stock level of one SKU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: Sku,
    pub product_id: Uuid,
    pub on_hand: i32,
    pub reserved: i32,
    pub low_stock_threshold: i32,
    pub updated_at: DateTime<Utc>,
}

impl StockLevel {
    pub fn available(&self) -> i32 {
        self.on_hand - self.reserved
    }

    pub fn is_low(&self) -> bool {
        self.available() <= self.low_stock_threshold
    }
}

/// What a change of available stock means for the low-stock state of a SKU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowStockChange {
    /// Available fell to or below the threshold: emit one inventory.low_stock.
    BecameLow,
    /// Available rose above the threshold again: the next fall emits again.
    Recovered,
    Unchanged,
}

/// Compares the recorded low-stock flag with the new level. Only the transition into low stock
/// emits an event, so a SKU that stays low does not repeat it on every sale.
pub fn low_stock_change(was_low: bool, available: i32, threshold: i32) -> LowStockChange {
    match (was_low, available <= threshold) {
        (false, true) => LowStockChange::BecameLow,
        (true, false) => LowStockChange::Recovered,
        _ => LowStockChange::Unchanged,
    }
}

/// Why a stock level changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl MovementReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiving => "receiving",
            Self::Damage => "damage",
            Self::Correction => "correction",
            Self::Return => "return",
            Self::Sale => "sale",
            Self::Reserve => "reserve",
            Self::Release => "release",
            Self::Expire => "expire",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "receiving" => Self::Receiving,
            "damage" => Self::Damage,
            "correction" => Self::Correction,
            "return" => Self::Return,
            "sale" => Self::Sale,
            "reserve" => Self::Reserve,
            "release" => Self::Release,
            "expire" => Self::Expire,
            _ => return None,
        })
    }

    /// Whether an admin may give this reason to Adjust; the others are recorded by the
    /// reservation life cycle only.
    pub fn adjustable(self) -> bool {
        matches!(
            self,
            Self::Receiving | Self::Damage | Self::Correction | Self::Return
        )
    }
}

/// One entry of the stock audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockMovement {
    pub id: Uuid,
    pub seq: i64,
    pub sku: Sku,
    pub reason: MovementReason,
    pub on_hand_delta: i32,
    pub reserved_delta: i32,
    pub on_hand_after: i32,
    pub reserved_after: i32,
    pub actor_id: Option<String>,
    pub order_id: Option<Uuid>,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

/// A validated admin adjustment of on_hand.
#[derive(Clone, Debug)]
pub struct Adjustment {
    pub sku: Sku,
    pub delta: i32,
    pub reason: MovementReason,
    pub note: String,
    pub order_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
}

/// The life cycle of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationStatus {
    Active,
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "active" => Self::Active,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// A quantity of one SKU held for an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationLine {
    pub sku: Sku,
    pub quantity: i32,
}

/// Validates the lines of a reservation and sorts them by SKU. Every transaction locks stock rows
/// in SKU order, which is what keeps concurrent multi-line reservations from deadlocking.
pub fn reservation_lines(raw: &[(String, i32)]) -> Result<Vec<ReservationLine>, Vec<FieldError>> {
    if raw.is_empty() {
        return Err(vec![field_error("lines", "at least one line is required")]);
    }
    if raw.len() > MAX_RESERVATION_LINES {
        return Err(vec![field_error(
            "lines",
            format!("at most {MAX_RESERVATION_LINES} lines"),
        )]);
    }
    let mut errors = Vec::new();
    let mut lines: Vec<ReservationLine> = Vec::with_capacity(raw.len());
    for (index, (sku, quantity)) in raw.iter().enumerate() {
        let sku = match Sku::parse_field(&format!("lines[{index}].sku"), sku) {
            Ok(sku) => sku,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        if *quantity <= 0 {
            errors.push(field_error(
                &format!("lines[{index}].quantity"),
                "must be positive",
            ));
        }
        if lines.iter().any(|line| line.sku == sku) {
            errors.push(field_error(
                &format!("lines[{index}].sku"),
                "each SKU may appear only once",
            ));
        }
        lines.push(ReservationLine {
            sku,
            quantity: *quantity,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(lines)
}

/// The stock held for one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    /// Sorted by SKU.
    pub lines: Vec<ReservationLine>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl Reservation {
    /// The status as callers see it: an active reservation past its expiry is expired, whether
    /// or not the sweeper got to it yet.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        if self.status == ReservationStatus::Active && self.expires_at <= now {
            ReservationStatus::Expired
        } else {
            self.status
        }
    }
}

/// Who caused a change and which request it belongs to, for the audit trail and event envelopes.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    /// The user id from the caller's access token; `None` when the service itself acts.
    pub user_id: Option<String>,
    pub correlation_id: String,
}

impl Actor {
    pub fn system() -> Self {
        Self::default()
    }
}

/// A page size from a request: 0 means the default, more than the cap is refused.
pub fn page_size(raw: i32) -> Result<usize, String> {
    match usize::try_from(raw) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(format!("page_size must be between 0 and {MAX_PAGE_SIZE}")),
    }
}

/// Opaque page tokens: base64url of unit-separated parts. Their meaning is private to the
/// service, which checks every part when decoding.
pub mod cursor {
    use super::*;

    const SEPARATOR: char = '\u{1f}';

    pub fn encode(parts: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(parts.join(&SEPARATOR.to_string()))
    }

    /// The parts of a token, if it decodes to exactly `count` of them.
    pub fn decode(token: &str, count: usize) -> Option<Vec<String>> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let parts: Vec<String> = text.split(SEPARATOR).map(str::to_owned).collect();
        (parts.len() == count).then_some(parts)
    }
}

/// How search results are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductSort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

impl ProductSort {
    fn code(self) -> &'static str {
        match self {
            Self::Relevance => "r",
            Self::PriceAsc => "pa",
            Self::PriceDesc => "pd",
            Self::Newest => "n",
        }
    }
}

/// A validated search: query, filters and the effective sort.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchFilter {
    pub q: Option<String>,
    pub category_id: Option<Uuid>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock_only: bool,
    pub include_inactive: bool,
    pub sort: ProductSort,
}

impl SearchFilter {
    /// The sort actually applied: relevance needs a query, without one it is newest first.
    pub fn effective_sort(q: Option<&str>, requested: Option<ProductSort>) -> ProductSort {
        match (q, requested) {
            (None, Some(ProductSort::Relevance) | None) => ProductSort::Newest,
            (Some(_), None) => ProductSort::Relevance,
            (_, Some(sort)) => sort,
        }
    }

    /// A stable 64-bit FNV-1a hash of everything a page token is only valid for.
    pub fn fingerprint(&self) -> u64 {
        let canonical = format!(
            "{:?}|{:?}|{:?}|{:?}|{}|{}|{}",
            self.q,
            self.category_id,
            self.min_price,
            self.max_price,
            self.in_stock_only,
            self.include_inactive,
            self.sort.code()
        );
        canonical
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }
}

/// The sort key of the last row of a page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SortKey {
    /// ts_rank, a PostgreSQL real; kept bit-exact so the next page compares equal values equal.
    Rank(f32),
    Price(i64),
    /// Newest first sorts by id alone.
    Id,
}

/// Where the next page of a search starts: after (key, id) in sort order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchCursor {
    pub key: SortKey,
    pub id: Uuid,
}

impl SearchCursor {
    pub fn encode(&self, filter: &SearchFilter) -> String {
        let fingerprint = format!("{:016x}", filter.fingerprint());
        let key = match self.key {
            SortKey::Rank(rank) => format!("{:08x}", rank.to_bits()),
            SortKey::Price(price) => price.to_string(),
            SortKey::Id => String::new(),
        };
        let id = self.id.to_string();
        cursor::encode(&["s1", &fingerprint, filter.sort.code(), &key, &id])
    }

    /// Decodes a token made by [`SearchCursor::encode`] for this same filter.
    pub fn decode(token: &str, filter: &SearchFilter) -> Result<Self, &'static str> {
        const MALFORMED: &str = "malformed page_token";
        let parts = cursor::decode(token, 5).ok_or(MALFORMED)?;
        if parts[0] != "s1" {
            return Err(MALFORMED);
        }
        let fingerprint = u64::from_str_radix(&parts[1], 16).map_err(|_| MALFORMED)?;
        if fingerprint != filter.fingerprint() || parts[2] != filter.sort.code() {
            return Err("page_token was made for a different query, filter or sort");
        }
        let key = match filter.sort {
            ProductSort::Relevance => u32::from_str_radix(&parts[3], 16)
                .map(|bits| SortKey::Rank(f32::from_bits(bits)))
                .map_err(|_| MALFORMED)?,
            ProductSort::PriceAsc | ProductSort::PriceDesc => {
                SortKey::Price(parts[3].parse().map_err(|_| MALFORMED)?)
            }
            ProductSort::Newest if parts[3].is_empty() => SortKey::Id,
            ProductSort::Newest => return Err(MALFORMED),
        };
        if let SortKey::Rank(rank) = key
            && !rank.is_finite()
        {
            return Err(MALFORMED);
        }
        let id = Uuid::parse_str(&parts[4]).map_err(|_| MALFORMED)?;
        Ok(Self { key, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("currency", "USD").unwrap()
    }

    #[test]
    fn iso_codes_are_sorted_for_binary_search() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn skus_are_normalised_and_checked() {
        assert_eq!(Sku::parse(" ab-12 ").unwrap().as_str(), "AB-12");
        for bad in ["", "A", "-AB", "AB-", "A B", "AB_12", "ÄB", &"A".repeat(41)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Sku::parse(&"A".repeat(40)).is_ok());
    }

    #[test]
    fn currencies_must_be_known_codes() {
        assert_eq!(Currency::parse("c", "eur").unwrap().as_str(), "EUR");
        for bad in ["", "US", "USDX", "XYZ", "XXX", "XAU", "12$"] {
            assert!(
                Currency::parse("c", bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn prices_are_positive_and_in_the_catalog_currency() {
        assert_eq!(parse_price(1999, "usd", usd()).unwrap().amount_minor, 1999);
        let errors = parse_price(-1, "XYZ", usd()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["price.amount_minor", "price.currency"]);
        assert!(parse_price(0, "USD", usd()).is_err());
        let errors = parse_price(100, "EUR", usd()).unwrap_err();
        assert!(errors[0].message.contains("catalog currency USD"));
    }

    fn draft() -> ProductDraft {
        ProductDraft {
            sku: "TS-1".into(),
            name: "Trail Shoe".into(),
            description: "Grippy.\nLight.".into(),
            category_id: String::new(),
            price_amount_minor: 8999,
            price_currency: "USD".into(),
            image_urls: vec!["https://img.example.com/ts-1.jpg".into()],
            attributes: Map::new(),
            active: true,
        }
    }

    #[test]
    fn product_fields_report_every_problem() {
        assert!(ProductFields::parse(&draft(), usd()).is_ok());
        let bad = ProductDraft {
            name: " ".into(),
            category_id: "nope".into(),
            price_amount_minor: -5,
            image_urls: vec!["ftp://x".into()],
            ..draft()
        };
        let errors = ProductFields::parse(&bad, usd()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "category_id", "price.amount_minor", "image_urls"]
        );
    }

    #[test]
    fn masks_merge_named_fields_and_refuse_the_sku() {
        let base = draft();
        let patch = ProductDraft {
            name: "Road Shoe".into(),
            price_amount_minor: 5,
            ..ProductDraft::default()
        };
        let merged = apply_mask(&base, &patch, &["name".into()]).unwrap();
        assert_eq!(merged.name, "Road Shoe");
        assert_eq!(merged.price_amount_minor, 8999);
        let full = apply_mask(&base, &patch, &[]).unwrap();
        assert_eq!(full.sku, "TS-1");
        assert_eq!(full.price_amount_minor, 5);
        assert!(apply_mask(&base, &patch, &["sku".into()]).is_err());
        assert!(apply_mask(&base, &patch, &["colour".into()]).is_err());
    }

    #[test]
    fn etags_round_trip_in_http_forms() {
        assert_eq!(parse_etag(&etag(7)), Some(7));
        assert_eq!(parse_etag("\"v7\""), Some(7));
        assert_eq!(parse_etag("W/\"v7\""), Some(7));
        assert_eq!(parse_etag("7"), None);
        assert_eq!(parse_etag("v0"), None);
    }

    #[test]
    fn low_stock_fires_only_on_the_way_down() {
        assert_eq!(low_stock_change(false, 5, 5), LowStockChange::BecameLow);
        assert_eq!(low_stock_change(true, 3, 5), LowStockChange::Unchanged);
        assert_eq!(low_stock_change(true, 6, 5), LowStockChange::Recovered);
        assert_eq!(low_stock_change(false, 6, 5), LowStockChange::Unchanged);
    }

    #[test]
    fn reservation_lines_are_checked_and_sorted() {
        let lines = reservation_lines(&[("b-2".into(), 1), ("A-1".into(), 3)]).unwrap();
        assert_eq!(lines[0].sku.as_str(), "A-1");
        assert_eq!(lines[1].sku.as_str(), "B-2");
        assert!(reservation_lines(&[]).is_err());
        let errors = reservation_lines(&[("A-1".into(), 0), ("a-1".into(), 1)]).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["lines[0].quantity", "lines[1].sku"]);
    }

    #[test]
    fn page_sizes_are_capped() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(100), Ok(100));
        assert!(page_size(101).is_err());
        assert!(page_size(-1).is_err());
    }

    fn filter(sort: ProductSort) -> SearchFilter {
        SearchFilter {
            q: Some("red shoe".into()),
            category_id: None,
            min_price: Some(100),
            max_price: None,
            in_stock_only: true,
            include_inactive: false,
            sort,
        }
    }

    #[test]
    fn search_cursors_round_trip_and_bind_to_their_filter() {
        let id = Uuid::now_v7();
        let relevance = filter(ProductSort::Relevance);
        let cursor = SearchCursor {
            key: SortKey::Rank(0.0607927),
            id,
        };
        let token = cursor.encode(&relevance);
        assert_eq!(SearchCursor::decode(&token, &relevance), Ok(cursor));

        let other = SearchFilter {
            q: Some("blue shoe".into()),
            ..relevance.clone()
        };
        assert!(SearchCursor::decode(&token, &other).is_err());
        assert!(SearchCursor::decode(&token, &filter(ProductSort::PriceAsc)).is_err());
        for bad in ["", "!!!", "bm90IGEgY3Vyc29y", &token[1..]] {
            assert!(SearchCursor::decode(bad, &relevance).is_err(), "{bad:?}");
        }

        let by_price = filter(ProductSort::PriceDesc);
        let cursor = SearchCursor {
            key: SortKey::Price(-3),
            id,
        };
        assert_eq!(
            SearchCursor::decode(&cursor.encode(&by_price), &by_price),
            Ok(cursor)
        );
    }

    #[test]
    fn relevance_needs_a_query() {
        assert_eq!(
            SearchFilter::effective_sort(None, Some(ProductSort::Relevance)),
            ProductSort::Newest
        );
        assert_eq!(
            SearchFilter::effective_sort(Some("x"), None),
            ProductSort::Relevance
        );
        assert_eq!(
            SearchFilter::effective_sort(None, Some(ProductSort::PriceAsc)),
            ProductSort::PriceAsc
        );
    }

    #[test]
    fn expired_active_reservations_read_as_expired() {
        let now = Utc::now();
        let reservation = Reservation {
            order_id: Uuid::now_v7(),
            status: ReservationStatus::Active,
            lines: Vec::new(),
            expires_at: now,
            created_at: now,
        };
        assert_eq!(reservation.status_at(now), ReservationStatus::Expired);
        assert_eq!(
            reservation.status_at(now - chrono::Duration::seconds(1)),
            ReservationStatus::Active
        );
    }
}
