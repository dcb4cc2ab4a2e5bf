//! Free-text validation shared by every service: trimmed, length-capped by characters, and never
//! carrying control characters (NUL included), which have no business in names or addresses and
//! break logs, CSV exports and some stores. Each function reports a [`FieldError`] naming the
//! field it was given.

use crate::problem::{FieldError, field_error};

/// Whether the text holds any control character (NUL, escape, newline, tab …).
pub fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// A required, trimmed, single-line text of 1..=max characters.
pub fn required_text(name: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(field_error(name, "must not be empty"));
    }
    optional_text(name, value, max)
}

/// An optional, trimmed, single-line text of at most max characters ("" when absent).
pub fn optional_text(name: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.chars().count() > max {
        return Err(too_long(name, max));
    }
    if has_control(value) {
        return Err(control(name));
    }
    Ok(value.to_owned())
}

/// An optional, trimmed text of at most max characters that may span lines: newlines and tabs
/// are kept, every other control character is refused.
pub fn multiline_text(name: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.chars().count() > max {
        return Err(too_long(name, max));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(control(name));
    }
    Ok(value.to_owned())
}

fn too_long(name: &str, max: usize) -> FieldError {
    field_error(name, format!("must be at most {max} characters"))
}

fn control(name: &str) -> FieldError {
    field_error(name, "must not contain control characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<String, FieldError>) -> String {
        result.unwrap_err().message
    }

    #[test]
    fn required_text_is_trimmed_and_capped() {
        assert_eq!(required_text("name", "  Ada  ", 3).unwrap(), "Ada");
        assert_eq!(
            message(required_text("name", "   ", 3)),
            "must not be empty"
        );
        assert_eq!(
            message(required_text("name", "Adam", 3)),
            "must be at most 3 characters"
        );
        // The cap counts characters, not bytes.
        assert_eq!(required_text("name", "ÄÖÜ", 3).unwrap(), "ÄÖÜ");
        let error = required_text("city", "", 10).unwrap_err();
        assert_eq!(error.field, "city");
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\0b", "a\u{1b}b", "a\nb", "a\tb", "a\u{7f}b", "a\u{85}b"] {
            assert_eq!(
                message(required_text("name", bad, 100)),
                "must not contain control characters",
                "{bad:?}"
            );
            assert!(optional_text("name", bad, 100).is_err(), "{bad:?}");
            assert!(has_control(bad), "{bad:?}");
        }
        assert!(!has_control("plain text, ünïcödé"));
    }

    #[test]
    fn optional_text_may_be_empty() {
        assert_eq!(optional_text("label", "  ", 5).unwrap(), "");
        assert_eq!(
            message(optional_text("label", "toolong", 5)),
            "must be at most 5 characters"
        );
    }

    #[test]
    fn multiline_text_keeps_line_breaks_but_not_nul() {
        assert_eq!(
            multiline_text("description", " one\r\n\ttwo ", 100).unwrap(),
            "one\r\n\ttwo"
        );
        assert_eq!(multiline_text("description", "", 100).unwrap(), "");
        for bad in ["a\0b", "a\u{1b}[31mb", "a\u{7}b"] {
            assert_eq!(
                message(multiline_text("description", bad, 100)),
                "must not contain control characters",
                "{bad:?}"
            );
        }
        assert!(multiline_text("description", "abcdef", 5).is_err());
    }
}
