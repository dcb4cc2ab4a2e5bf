//! JSON shapes of the catalog API (products, categories, import reports) and their conversion
//! to and from the product service's ProductService contracts.

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;
use shopmesh_platform::time::{optional_time, time_or_epoch};
use utoipa::{IntoParams, ToSchema};

use crate::dto::{line_text, non_empty, optional_multiline_text};

/// An amount of money in integer minor units (cents) and an ISO 4217 currency code.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// Minor units, e.g. 1999 for 19.99: positive, at most 1000000000.
    #[schema(example = 1999, minimum = 1, maximum = 1_000_000_000)]
    pub amount: i64,
    #[schema(schema_with = catalog_currency)]
    pub currency: String,
}

/// Characters no single-line text may hold: control characters (Unicode Cc) and invisible or
/// text-direction characters (zero-width, bidi controls, BOM).
macro_rules! no_control {
    () => {
        r"\u0000-\u001F\u007F-\u009F\u061C\u200B-\u200F\u202A-\u202E\u2060\u2066-\u2069\uFEFF"
    };
}

/// An absolute http(s) URL with a host, printable ASCII only (percent-encode the rest).
const IMAGE_URL_PATTERN: &str = "^https?://[!-\"$-.0->@-~][!-~]*$";

fn string_schema(pattern: &str, min_length: usize, max_length: usize) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min_length))
        .max_length(Some(max_length))
        .build()
}

/// The currency of a price: the catalog's.
fn catalog_currency() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["USD"]))
        .pattern(Some("^[A-Z]{3}$"))
        .examples(["USD"])
        .description(Some(
            "The catalog currency (USD), an ISO 4217 code: every price is in it (lower case is \
             accepted and normalised).",
        ))
        .build()
}

/// The category of a product (see [`optional_uuid`]).
fn category_ref() -> utoipa::openapi::Schema {
    optional_uuid(
        "An existing category (its UUID); empty, null or absent for none (422 when unknown).",
    )
}

/// The parent of a category (see [`optional_uuid`]).
fn parent_ref() -> utoipa::openapi::Schema {
    optional_uuid(
        "An existing category (its UUID); empty, null or absent for a root category (422 when \
         unknown).",
    )
}

const PRODUCT_NAME: &str = "1 to 200 characters, not blank, without control or invisible \
     (zero-width, bidi)\ncharacters (surrounding whitespace is trimmed).";

fn new_product_name() -> utoipa::openapi::Schema {
    line_text(PRODUCT_NAME, Some("Red T-shirt, M"), 1, 200)
}

fn product_name() -> utoipa::openapi::Schema {
    line_text(PRODUCT_NAME, None, 1, 200)
}

fn product_description() -> utoipa::openapi::Schema {
    optional_multiline_text(
        "At most 5000 characters; line breaks and tabs are allowed, other control or \
         invisible\ncharacters are not (surrounding whitespace is trimmed).",
        5000,
    )
}

fn category_name() -> utoipa::openapi::Schema {
    line_text(
        "1 to 100 characters, not blank, without control or invisible (zero-width, \
         bidi)\ncharacters (surrounding whitespace is trimmed).",
        Some("Running shoes"),
        1,
        100,
    )
}

/// An optional reference by id: a UUID, or empty (or null) for none.
fn optional_uuid(description: &str) -> utoipa::openapi::Schema {
    use utoipa::openapi::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let reference = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .description(Some(description))
        .build();
    utoipa::openapi::Schema::OneOf(reference)
}

/// Up to 10 image URLs.
fn image_urls() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::Array,
            utoipa::openapi::Type::Null,
        ]))
        .items(string_schema(IMAGE_URL_PATTERN, 8, 2048))
        .max_items(Some(10))
        .description(Some(
            "At most 10 absolute http(s) URLs with a host, each at most 2048 bytes, without \
             whitespace or control characters (surrounding whitespace is trimmed).",
        ))
        .build()
}

/// A JSON object of free-form attributes.
fn attributes() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, OneOfBuilder, Type};
    let value = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u061C\u200B-\u200F\u202A-\u202E\u2060\u2066-\u2069\uFEFF]*$")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(ObjectBuilder::new().schema_type(Type::Array))
        .item(ObjectBuilder::new().schema_type(Type::Object));
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Object,
            Type::Null,
        ]))
        .property_names(Some(string_schema(
            concat!("^[^", no_control!(), "]*$"),
            1,
            100,
        )))
        .additional_properties(Some(utoipa::openapi::Schema::OneOf(value.build())))
        .description(Some(
            "Free-form JSON object. Keys are 1 to 100 characters without control characters; \
             strings anywhere inside hold no control characters other than line breaks and \
             tabs; numbers are finite; nesting is at most 8 levels deep (the object itself is \
             level 1) and the whole object is at most 16384 bytes as JSON.",
        ))
        .build()
}

/// A product of the catalog.
#[derive(Serialize, ToSchema)]
pub struct ProductResponse {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category_id: Option<String>,
    pub price: MoneyBody,
    pub image_urls: Vec<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub active: bool,
    pub in_stock: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when the product was deleted (it can no longer be ordered).
    pub deleted_at: Option<DateTime<Utc>>,
}

/// One page of products; `next_cursor` is absent on the last page.
#[derive(Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ProductSort {
    /// Relevance with `q`, newest without.
    Default,
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

impl From<ProductSort> for pb::ProductSort {
    fn from(sort: ProductSort) -> Self {
        match sort {
            ProductSort::Default => Self::Unspecified,
            ProductSort::Relevance => Self::Relevance,
            ProductSort::PriceAsc => Self::PriceAsc,
            ProductSort::PriceDesc => Self::PriceDesc,
            ProductSort::Newest => Self::Newest,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Full-text query over name, description and SKU (ranked; several words narrow it).
    pub q: Option<String>,
    /// Only this category and its descendants.
    pub category_id: Option<String>,
    /// Lowest price in minor units (with `currency`).
    #[param(minimum = 0)]
    pub min_price: Option<i64>,
    /// Highest price in minor units (with `currency`).
    #[param(minimum = 0)]
    pub max_price: Option<i64>,
    /// Currency of the price bounds: the catalog currency.
    pub currency: Option<String>,
    /// Only products with available stock.
    pub in_stock: Option<bool>,
    #[param(inline)]
    pub sort: Option<ProductSort>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (same query, filters and sort).
    pub cursor: Option<String>,
}

/// A new product. `initial_stock` units are received into stock at once.
#[derive(Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct NewProductBody {
    /// 2 to 40 letters, digits or dashes, starting and ending with a letter or digit; unique
    /// (surrounding whitespace is trimmed, lower case is normalised to upper case).
    #[schema(
        example = "TSHIRT-RED-M",
        pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$",
        min_length = 2,
        max_length = 40
    )]
    pub sku: String,
    #[schema(schema_with = new_product_name)]
    pub name: String,
    #[schema(schema_with = product_description)]
    pub description: Option<String>,
    #[schema(schema_with = category_ref)]
    pub category_id: Option<String>,
    pub price: MoneyBody,
    #[schema(schema_with = image_urls)]
    pub image_urls: Option<Vec<String>>,
    #[schema(schema_with = attributes)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    /// Default true.
    pub active: Option<bool>,
    /// Units received into stock at once: not negative (default 0).
    #[schema(minimum = 0, maximum = 2_147_483_647)]
    pub initial_stock: Option<i32>,
    /// Available stock at or below which the product counts as low on stock: not negative;
    /// 0 or absent takes the default (5).
    #[schema(minimum = 0, maximum = 2_147_483_647)]
    pub low_stock_threshold: Option<i32>,
}

/// Every editable field of a product (the SKU never changes).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceProductBody {
    #[schema(schema_with = product_name)]
    pub name: String,
    #[schema(schema_with = product_description)]
    pub description: Option<String>,
    #[schema(schema_with = category_ref)]
    pub category_id: Option<String>,
    pub price: MoneyBody,
    #[schema(schema_with = image_urls)]
    pub image_urls: Option<Vec<String>>,
    #[schema(schema_with = attributes)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    pub active: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryBody {
    #[schema(schema_with = category_name)]
    pub name: String,
    /// Lower-case letters and digits joined by single dashes, at most 100 characters; unique.
    #[schema(
        example = "running-shoes",
        pattern = "^[a-z0-9]+(-[a-z0-9]+)*$",
        min_length = 1,
        max_length = 100
    )]
    pub slug: String,
    #[schema(schema_with = parent_ref)]
    pub parent_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CategoryResponse {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub parent_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CategoryQuery {
    /// Only the direct children of this category (empty: the root categories).
    pub parent_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CategoryList {
    pub items: Vec<CategoryResponse>,
}

/// One rejected import row.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ImportError {
    /// 0-based batch the row belonged to; the whole batch was rejected.
    pub batch: i32,
    /// 1-based line of the row in the uploaded file (CSV: the header is line 1).
    pub line: i64,
    pub sku: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

/// The outcome of an import.
#[derive(Serialize, ToSchema)]
pub struct ImportReport {
    pub batches_committed: i32,
    pub batches_rejected: i32,
    pub products_created: i32,
    pub products_updated: i32,
    pub errors: Vec<ImportError>,
    /// True when the import stopped before the end of the upload (its deadline ran out or the
    /// connection broke): exactly the batches counted above were committed.
    pub incomplete: bool,
    /// Why it stopped, when incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

fn json_value(value: prost_types::Value) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.into_iter().map(json_value).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(json_object(s)),
    }
}

fn json_object(value: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    value
        .fields
        .into_iter()
        .map(|(k, v)| (k, json_value(v)))
        .collect()
}

fn proto_value(value: serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(proto_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(proto_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn proto_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, proto_value(v))).collect(),
    }
}

impl From<pb::Product> for ProductResponse {
    fn from(p: pb::Product) -> Self {
        let price = p.price.unwrap_or_default();
        Self {
            id: p.id,
            sku: p.sku,
            name: p.name,
            description: p.description,
            category_id: non_empty(p.category_id),
            price: MoneyBody {
                amount: price.amount_minor,
                currency: price.currency,
            },
            image_urls: p.image_urls,
            attributes: p.attributes.map(json_object).unwrap_or_default(),
            active: p.active,
            in_stock: p.in_stock,
            created_at: time_or_epoch(p.create_time),
            updated_at: time_or_epoch(p.update_time),
            deleted_at: optional_time(p.delete_time),
        }
    }
}

impl From<pb::Category> for CategoryResponse {
    fn from(c: pb::Category) -> Self {
        Self {
            id: c.id,
            name: c.name,
            slug: c.slug,
            parent_id: non_empty(c.parent_id),
            created_at: time_or_epoch(c.create_time),
        }
    }
}

impl From<MoneyBody> for Money {
    fn from(m: MoneyBody) -> Self {
        Self {
            amount_minor: m.amount,
            currency: m.currency,
        }
    }
}

impl NewProductBody {
    /// The product as the service takes it, with its initial stock and low-stock threshold
    /// (shared by create and import).
    pub(crate) fn input(self) -> (pb::ProductInput, i32, i32) {
        (
            pb::ProductInput {
                sku: self.sku,
                name: self.name,
                description: self.description.unwrap_or_default(),
                category_id: self.category_id.unwrap_or_default(),
                price: Some(self.price.into()),
                image_urls: self.image_urls.unwrap_or_default(),
                attributes: self.attributes.map(proto_struct),
                active: self.active.unwrap_or(true),
            },
            self.initial_stock.unwrap_or(0),
            self.low_stock_threshold.unwrap_or(0),
        )
    }

    pub fn into_request(self) -> pb::CreateProductRequest {
        let (product, initial_stock, low_stock_threshold) = self.input();
        pb::CreateProductRequest {
            product: Some(product),
            initial_stock,
            low_stock_threshold,
        }
    }
}

impl ReplaceProductBody {
    pub fn into_request(self, product_id: String, etag: String) -> pb::UpdateProductRequest {
        let paths = [
            "name",
            "description",
            "category_id",
            "price",
            "image_urls",
            "attributes",
            "active",
        ];
        pb::UpdateProductRequest {
            product_id,
            product: Some(pb::ProductInput {
                sku: String::new(),
                name: self.name,
                description: self.description.unwrap_or_default(),
                category_id: self.category_id.unwrap_or_default(),
                price: Some(self.price.into()),
                image_urls: self.image_urls.unwrap_or_default(),
                attributes: self.attributes.map(proto_struct),
                active: self.active,
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            etag,
        }
    }
}

impl From<pb::ImportProductsResponse> for ImportReport {
    fn from(r: pb::ImportProductsResponse) -> Self {
        Self {
            batches_committed: r.batches_committed,
            batches_rejected: r.batches_rejected,
            products_created: r.products_created,
            products_updated: r.products_updated,
            errors: r
                .errors
                .into_iter()
                .map(|e| ImportError {
                    batch: e.batch_index,
                    line: e.row_number,
                    sku: non_empty(e.sku),
                    field: non_empty(e.field),
                    message: e.message,
                })
                .collect(),
            incomplete: r.incomplete,
            stopped_reason: non_empty(r.stopped_reason),
        }
    }
}
