//! Validation shared by every input: the field error each parser reports, free text and
//! optional ids.

use shopmesh_platform::problem::FieldError;
use uuid::Uuid;

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
