//! Free-text validation shared by every service: trimmed, length-capped by characters, and never
//! carrying control characters (NUL included), which have no business in names or addresses and
//! break logs, CSV exports and some stores, nor invisible characters that reorder or hide text
//! (bidi controls, zero-width characters), which let a name or label look like another one.
//! Each function reports a [`FieldError`] naming the field it was given.

use crate::problem::{FieldError, field_error};

/// Whether the text holds any control character (NUL, escape, newline, tab …).
pub fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// Whether the character is a bidirectional-text control (U+061C, U+200E/F, U+202A–U+202E,
/// U+2066–U+2069) or a zero-width character (U+200B–U+200D, U+2060, U+FEFF): invisible, and able
/// to reorder or disguise the text around it.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Whether the text holds any bidi control or zero-width character (see [`is_invisible`]).
pub fn has_invisible(value: &str) -> bool {
    value.chars().any(is_invisible)
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
    if has_invisible(value) {
        return Err(invisible(name));
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
    if has_invisible(value) {
        return Err(invisible(name));
    }
    Ok(value.to_owned())
}

fn too_long(name: &str, max: usize) -> FieldError {
    field_error(name, format!("must be at most {max} characters"))
}

fn control(name: &str) -> FieldError {
    field_error(name, "must not contain control characters")
}

fn invisible(name: &str) -> FieldError {
    field_error(
        name,
        "must not contain invisible or text-direction characters (zero-width or bidi controls)",
    )
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
    fn bidi_controls_and_zero_width_characters_are_refused() {
        for bad in [
            "Ad\u{202e}a",
            "Ad\u{202a}a",
            "A\u{2066}da",
            "A\u{2069}da",
            "A\u{200e}da",
            "A\u{200f}da",
            "A\u{061c}da",
            "Ad\u{200b}a",
            "Ad\u{200c}a",
            "Ad\u{200d}a",
            "Ad\u{2060}a",
            "\u{feff}Ada",
        ] {
            assert!(
                message(required_text("name", bad, 100)).contains("invisible"),
                "{bad:?}"
            );
            assert!(optional_text("label", bad, 100).is_err(), "{bad:?}");
            assert!(multiline_text("description", bad, 100).is_err(), "{bad:?}");
            assert!(has_invisible(bad), "{bad:?}");
        }
        // Right-to-left scripts themselves are fine; only the invisible controls are refused.
        assert_eq!(
            required_text("name", "שלום עולם", 100).unwrap(),
            "שלום עולם"
        );
        assert_eq!(required_text("name", "مرحبا", 100).unwrap(), "مرحبا");
        assert!(!has_invisible("Zoë, Łódź, 東京"));
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
