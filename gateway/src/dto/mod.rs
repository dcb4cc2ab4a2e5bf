//! JSON shapes of the REST API (what clients see), one module per service, and their
//! conversion from the gRPC contracts. Domain types stay inside the services; these are wire
//! types only. This module holds what every service shares: the problem document of every
//! error answer and the conversion of protobuf's empty strings (timestamps convert with
//! `shopmesh_platform::time`).

pub mod inventory;
pub mod product;
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
