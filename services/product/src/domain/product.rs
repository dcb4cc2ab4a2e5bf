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
