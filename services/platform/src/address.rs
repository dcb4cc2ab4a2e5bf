//! Postal address validation, written once: the user service checks address-book entries with
//! it and the cart service checks the inline shipping address of a checkout with it, so an order
//! can never carry an address the address book would have refused.

use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;

use crate::problem::{FieldError, field_error};
use crate::text::{optional_text, required_text};

/// The officially assigned ISO 3166-1 alpha-2 codes (249), sorted for binary search. Reserved
/// and user-assigned codes (EU, UK, XK, ZZ, AA …) are not countries addresses can be in.
pub const ISO_3166_ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// The field-name prefix of the shipping address of a checkout (`shipping_address.city`).
pub const SHIPPING_ADDRESS: &str = "shipping_address";

/// An assigned ISO 3166-1 alpha-2 country code from [`ISO_3166_ALPHA2`], upper-cased.
pub fn country(raw: &str) -> Result<String, FieldError> {
    country_field("country", raw)
}

fn country_field(name: &str, raw: &str) -> Result<String, FieldError> {
    let value = raw.trim().to_ascii_uppercase();
    if ISO_3166_ALPHA2.binary_search(&value.as_str()).is_ok() {
        Ok(value)
    } else {
        Err(field_error(
            name,
            "must be an assigned ISO 3166-1 alpha-2 country code such as DE or US",
        ))
    }
}

/// A phone number: an optional leading +, then 6 to 15 digits; spaces, dashes, dots and
/// parentheses are accepted as separators and kept as typed. Empty means none.
pub fn phone(name: &str, raw: &str) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    let body = value.strip_prefix('+').unwrap_or(value);
    let separators_ok = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    let digits = body.chars().filter(char::is_ascii_digit).count();
    if !separators_ok || !(6..=15).contains(&digits) {
        return Err(field_error(
            name,
            "must be a phone number: optional +, then 6 to 15 digits",
        ));
    }
    Ok(value.to_owned())
}

/// Validates the shipping address of an order, reporting every problem at once with field
/// names under `shipping_address.` (`shipping_address.city`). Returns the address trimmed, with
/// the country upper-cased.
pub fn validate_postal_address(address: &PostalAddress) -> Result<PostalAddress, Vec<FieldError>> {
    validate_address_fields(&format!("{SHIPPING_ADDRESS}."), address)
}

/// [`validate_postal_address`] with field names under `prefix` (empty for bare names such as
/// `city`, as the address book reports them).
pub fn validate_address_fields(
    prefix: &str,
    address: &PostalAddress,
) -> Result<PostalAddress, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut take = |result: Result<String, FieldError>| match result {
        Ok(value) => value,
        Err(err) => {
            errors.push(err);
            String::new()
        }
    };
    let name = |field: &str| format!("{prefix}{field}");
    let valid = PostalAddress {
        recipient: take(required_text(&name("recipient"), &address.recipient, 100)),
        line1: take(required_text(&name("line1"), &address.line1, 200)),
        line2: take(optional_text(&name("line2"), &address.line2, 200)),
        city: take(required_text(&name("city"), &address.city, 100)),
        region: take(optional_text(&name("region"), &address.region, 100)),
        postal_code: take(required_text(
            &name("postal_code"),
            &address.postal_code,
            20,
        )),
        country: take(country_field(&name("country"), &address.country)),
        phone: take(phone(&name("phone"), &address.phone)),
    };
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> PostalAddress {
        PostalAddress {
            recipient: " Ada Lovelace ".into(),
            line1: "Unter den Linden 1".into(),
            line2: String::new(),
            city: "Berlin".into(),
            region: String::new(),
            postal_code: "10117".into(),
            country: "de".into(),
            phone: "+49 30 1234567".into(),
        }
    }

    #[test]
    fn country_codes_are_sorted_for_binary_search() {
        assert_eq!(ISO_3166_ALPHA2.len(), 249);
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ISO_3166_ALPHA2
                .iter()
                .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn countries_must_be_assigned_codes() {
        assert_eq!(country(" gb ").unwrap(), "GB");
        for bad in ["ZZ", "UK", "EU", "DEU", ""] {
            assert!(country(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_valid_shipping_address_is_normalised() {
        let valid = validate_postal_address(&berlin()).unwrap();
        assert_eq!(valid.recipient, "Ada Lovelace");
        assert_eq!(valid.country, "DE");
        assert_eq!(valid.phone, "+49 30 1234567");
    }

    #[test]
    fn shipping_address_errors_name_every_field_under_the_prefix() {
        let errors = validate_postal_address(&PostalAddress {
            phone: "call me".into(),
            ..PostalAddress::default()
        })
        .unwrap_err();
        let names: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            names,
            [
                "shipping_address.recipient",
                "shipping_address.line1",
                "shipping_address.city",
                "shipping_address.postal_code",
                "shipping_address.country",
                "shipping_address.phone",
            ]
        );
    }

    #[test]
    fn control_characters_are_refused() {
        let errors = validate_postal_address(&PostalAddress {
            city: "Ber\u{0}lin".into(),
            ..berlin()
        })
        .unwrap_err();
        assert_eq!(errors[0].field, "shipping_address.city");
    }
}
