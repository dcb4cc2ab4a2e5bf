//! JSON shapes of the REST API (what clients see), one module per service, and their
//! conversion from the gRPC contracts. Domain types stay inside the services; these are wire
//! types only. This module holds what every service shares: the problem document of every
//! error answer and the conversion of protobuf's empty strings (timestamps convert with
//! `shopmesh_platform::time`).

pub mod analytics;
pub mod cart;
pub mod inventory;
pub mod notification;
pub mod order;
pub mod payment;
pub mod product;
pub mod shipment;
pub mod system;
pub mod user;

use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document; every error answer has this shape.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// A URI reference identifying the problem type; `about:blank` when the status says it all.
    #[schema(example = "about:blank")]
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(example = "Conflict")]
    pub title: String,
    #[schema(example = 409)]
    pub status: u16,
    #[schema(example = "an account with this email already exists")]
    pub detail: String,
    /// Field-level validation errors (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldErrorDoc>>,
}

/// One invalid input field.
#[derive(Serialize, ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorDoc {
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "must be a valid email address")]
    pub message: String,
}

/// Protobuf's empty string as JSON's absent value.
pub fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// Characters no text field may hold: control characters and the invisible ones (zero-width,
/// text-direction) that `shopmesh_platform::text` refuses.
macro_rules! forbidden {
    () => {
        r"\u0000-\u001F\u007F-\u009F\u061C\u200B-\u200F\u202A-\u202E\u2060\u2066-\u2069\uFEFF"
    };
}

/// Single-line text: not blank, none of the forbidden characters.
const LINE_PATTERN: &str = concat!(
    "^[^",
    forbidden!(),
    "]*[^\\s",
    forbidden!(),
    "][^",
    forbidden!(),
    "]*$"
);

/// Multi-line text: line breaks and tabs allowed, other control or invisible characters not.
const MULTILINE_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u061C\u200B-\u200F\u202A-\u202E\u2060\u2066-\u2069\uFEFF]*$";

/// The schema of a validated single-line text field of `min..=max` characters.
pub(crate) fn line_text(
    description: &str,
    example: Option<&str>,
    min: usize,
    max: usize,
) -> utoipa::openapi::Schema {
    use utoipa::openapi::{ObjectBuilder, Type};
    // `example` (singular) is what the derive writes for the other fields; keep them alike.
    #[allow(deprecated)]
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .example(example.map(|e| serde_json::Value::String(e.to_owned())))
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(LINE_PATTERN))
        .into()
}

/// The schema of an optional multi-line text field of at most `max` characters.
pub(crate) fn optional_multiline_text(description: &str, max: usize) -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::SchemaType;
    use utoipa::openapi::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(description))
        .max_length(Some(max))
        .pattern(Some(MULTILINE_PATTERN))
        .into()
}
