//! The stock-keeping unit, the name callers use for a product and its stock.

use shopmesh_platform::problem::FieldError;

use crate::domain::text::field_error;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_normalised_and_checked() {
        assert_eq!(Sku::parse(" ab-12 ").unwrap().as_str(), "AB-12");
        for bad in ["", "A", "-AB", "AB-", "A B", "AB_12", "ÄB", &"A".repeat(41)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Sku::parse(&"A".repeat(40)).is_ok());
    }
}
