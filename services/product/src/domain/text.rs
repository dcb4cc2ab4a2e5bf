//! Validation shared by every input: the field error each parser reports and free text come from
//! the platform's kit (one definition for every service); optional ids are the product's own.

use shopmesh_platform::problem::FieldError;
pub use shopmesh_platform::problem::field_error;
pub use shopmesh_platform::text::{has_control, multiline_text, required_text};
use uuid::Uuid;

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
