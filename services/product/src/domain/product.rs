//! Products: the editable fields as sent and as validated, stored products, partial updates by
//! field mask, and the entity tag of a product version.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use shopmesh_platform::problem::FieldError;
use uuid::Uuid;

use crate::domain::currency::Currency;
use crate::domain::money::{Money, parse_price};
use crate::domain::sku::Sku;
use crate::domain::text::{field_error, multiline_text, optional_id, required_text};

/// Most distinct ids one BatchGetProducts may ask for.
pub const MAX_BATCH_GET: usize = 100;
/// Most rows in one import batch.
pub const MAX_IMPORT_ROWS: usize = 500;
/// Most images per product.
pub const MAX_IMAGE_URLS: usize = 10;
/// Largest attributes document, as compact JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Deepest nesting of an attributes document: the document itself is level 1, each object or
/// array inside it one more.
pub const MAX_ATTRIBUTES_DEPTH: usize = 8;

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

/// Why an attributes document is refused, found by [`check_attributes`].
fn attributes_error(message: impl Into<String>) -> FieldError {
    field_error("attributes", message)
}

/// Walks an attributes document no deeper than [`MAX_ATTRIBUTES_DEPTH`] (a document nested
/// deeper is refused at the first level too many, without looking further in), refusing control
/// characters in keys (any) and string values (any but line breaks and tabs), and adding up its
/// size as compact JSON, giving up as soon as it passes [`MAX_ATTRIBUTES_BYTES`].
fn check_attributes(value: &Value, depth: usize, size: &mut usize) -> Result<(), FieldError> {
    fn add(size: &mut usize, bytes: usize) -> Result<(), FieldError> {
        *size = size.saturating_add(bytes);
        if *size > MAX_ATTRIBUTES_BYTES {
            Err(attributes_error(format!(
                "must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"
            )))
        } else {
            Ok(())
        }
    }
    fn string_bytes(text: &str) -> usize {
        // Quotes plus the text; escapes are rare and only make the real size larger, which the
        // exact check on the serialised document below catches.
        text.len() + 2
    }
    match value {
        Value::Null => add(size, 4),
        Value::Bool(b) => add(size, if *b { 4 } else { 5 }),
        Value::Number(n) => add(size, n.to_string().len()),
        Value::String(text) => {
            if text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            {
                return Err(attributes_error(
                    "string values must not contain control characters",
                ));
            }
            add(size, string_bytes(text))
        }
        Value::Array(_) | Value::Object(_) if depth >= MAX_ATTRIBUTES_DEPTH => {
            Err(attributes_error(format!(
                "must be nested at most {MAX_ATTRIBUTES_DEPTH} levels deep"
            )))
        }
        Value::Array(items) => {
            add(size, 2 + items.len().saturating_sub(1))?;
            items
                .iter()
                .try_for_each(|item| check_attributes(item, depth + 1, size))
        }
        Value::Object(map) => check_object(map, depth + 1, size),
    }
}

/// [`check_attributes`] for an object at `depth` (the document itself is depth 1).
fn check_object(
    map: &Map<String, Value>,
    depth: usize,
    size: &mut usize,
) -> Result<(), FieldError> {
    *size = size.saturating_add(2 + map.len().saturating_sub(1));
    for (key, value) in map {
        if key.chars().any(char::is_control) {
            return Err(attributes_error("keys must not contain control characters"));
        }
        // "key": value
        *size = size.saturating_add(key.len() + 3);
        check_attributes(value, depth, size)?;
    }
    if *size > MAX_ATTRIBUTES_BYTES {
        return Err(attributes_error(format!(
            "must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"
        )));
    }
    Ok(())
}

fn attributes(raw: Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    if raw
        .keys()
        .any(|key| key.is_empty() || key.chars().count() > 100)
    {
        return Err(attributes_error("keys must be 1 to 100 characters long"));
    }
    // Depth, control characters and an estimate of the size first, bounded: nothing below
    // serialises or stores a document that is too deep or too large.
    check_attributes_document(&raw)?;
    let size = serde_json::to_vec(&raw)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(attributes_error(format!(
            "must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"
        )));
    }
    Ok(raw)
}

/// Checks a whole attributes document (depth 1) against the limits of [`check_attributes`].
fn check_attributes_document(map: &Map<String, Value>) -> Result<(), FieldError> {
    let mut size = 0;
    check_object(map, 1, &mut size)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("currency", "USD").unwrap()
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

    fn with_attributes(value: Value) -> Result<ProductFields, Vec<FieldError>> {
        let Value::Object(attributes) = value else {
            unreachable!()
        };
        ProductFields::parse(
            &ProductDraft {
                attributes,
                ..draft()
            },
            usd(),
        )
    }

    fn attribute_error(value: Value) -> String {
        let errors = with_attributes(value).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "attributes");
        errors[0].message.clone()
    }

    #[test]
    fn attributes_are_bounded_in_depth_and_size() {
        let mut deep = serde_json::json!("leaf");
        for _ in 0..60 {
            deep = serde_json::json!({ "n": deep });
        }
        let Value::Object(map) = deep.clone() else {
            unreachable!()
        };
        assert!(attribute_error(Value::Object(map)).contains("levels deep"));
        let mut list = serde_json::json!(1);
        for _ in 0..MAX_ATTRIBUTES_DEPTH {
            list = serde_json::json!([list]);
        }
        assert!(attribute_error(serde_json::json!({ "l": list })).contains("levels deep"));
        let mut ok = serde_json::json!([1, "two"]);
        for _ in 2..MAX_ATTRIBUTES_DEPTH {
            ok = serde_json::json!({ "n": ok });
        }
        assert!(with_attributes(serde_json::json!({ "n": ok })).is_ok());

        let big = serde_json::json!({ "blob": "x".repeat(MAX_ATTRIBUTES_BYTES) });
        assert!(attribute_error(big).contains("bytes"));
        // Escapes make the stored document larger than the text: the exact check catches it.
        let escaped = serde_json::json!({ "blob": "\"".repeat(MAX_ATTRIBUTES_BYTES / 2 + 10) });
        assert!(attribute_error(escaped).contains("bytes"));
    }

    #[test]
    fn attributes_refuse_control_characters() {
        for bad in [
            serde_json::json!({ "k\u{0}": "v" }),
            serde_json::json!({ "k": "v\u{0}" }),
            serde_json::json!({ "k": ["ok", { "inner": "\u{1b}[31m" }] }),
            serde_json::json!({ "k": { "n\ny": 1 } }),
        ] {
            assert!(
                attribute_error(bad.clone()).contains("control characters"),
                "{bad}"
            );
        }
        assert!(with_attributes(serde_json::json!({ "care": "wash cold\n\tinside out" })).is_ok());
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
}
