//! Plain domain types of the user service, validated by parsing. Generated protobuf types are
//! converted into these at the gRPC edge and never travel further in.

use chrono::{DateTime, Utc};
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use shopmesh_platform::address::validate_address_fields;
pub use shopmesh_platform::address::{country, phone};
use shopmesh_platform::auth::{Role, Tier};
use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::text::{has_control, has_invisible};
pub use shopmesh_platform::text::{optional_text, required_text};

/// Addresses a single account may keep.
pub const MAX_ADDRESSES: usize = 20;

/// An email address as given (trimmed) and its normalised, lower-case form, which is what
/// uniqueness is decided on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    display: String,
    normalized: String,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim();
        let invalid = || field_error("email", "must be a valid email address");
        if value.is_empty() || value.len() > 254 || has_control(value) || value.contains(' ') {
            return Err(invalid());
        }
        // Zero-width and bidi characters would make two different addresses look identical.
        if has_invisible(value) {
            return Err(field_error(
                "email",
                "must not contain invisible or text-direction characters (zero-width or bidi controls)",
            ));
        }
        let (local, domain) = value.rsplit_once('@').ok_or_else(invalid)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(invalid());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(invalid());
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid());
        }
        Ok(Self {
            display: value.to_owned(),
            normalized: value.to_lowercase(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }

    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// Lower-cased lookup form of whatever the caller typed, valid or not (login must not reveal
/// whether an address is well-formed or registered).
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// A password strong enough to accept: 10 to 128 characters, at least three of lower case,
/// upper case, digits and symbols, and not one of the passwords everybody tries first.
#[derive(Clone)]
pub struct Password(String);

const COMMON_PASSWORDS: &[&str] = &[
    "password123!",
    "Password123",
    "Password123!",
    "Qwerty12345",
    "Welcome123!",
    "Passw0rd123",
    "Admin12345!",
    "Letmein123!",
];

impl Password {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let chars = raw.chars().count();
        if chars < 10 {
            return Err(field_error(
                "password",
                "must be at least 10 characters long",
            ));
        }
        if chars > 128 {
            return Err(field_error(
                "password",
                "must be at most 128 characters long",
            ));
        }
        let classes = [
            raw.chars().any(|c| c.is_lowercase()),
            raw.chars().any(|c| c.is_uppercase()),
            raw.chars().any(|c| c.is_ascii_digit()),
            raw.chars().any(|c| !c.is_alphanumeric()),
        ]
        .into_iter()
        .filter(|present| *present)
        .count();
        if classes < 3 {
            return Err(field_error(
                "password",
                "must mix at least three of: lower case, upper case, digits, symbols",
            ));
        }
        if COMMON_PASSWORDS
            .iter()
            .any(|common| common.eq_ignore_ascii_case(raw))
        {
            return Err(field_error("password", "is too common"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A stored account with its profile.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub email_normalized: String,
    pub password_hash: String,
    pub name: String,
    pub phone: String,
    pub role: Role,
    pub tier: Tier,
    pub addresses: Vec<Address>,
    /// Bumped by every change of the account (profile, access, addresses); writes are
    /// conditional on it.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A postal address of a user.
#[derive(Clone, Debug, PartialEq)]
pub struct Address {
    pub id: String,
    pub fields: AddressFields,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// The editable part of an address, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressFields {
    pub label: String,
    pub recipient: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
    pub phone: String,
}

/// The address fields as a caller sent them, before validation.
#[derive(Clone, Debug, Default)]
pub struct AddressDraft {
    pub label: String,
    pub recipient: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
    pub phone: String,
}

impl AddressFields {
    /// Validates every field, reporting all problems at once. The postal part is the
    /// platform's address validation, the one an order's inline address passes too.
    pub fn parse(draft: &AddressDraft) -> Result<Self, Vec<FieldError>> {
        let label = optional_text("label", &draft.label, 50);
        let postal = validate_address_fields(
            "",
            &PostalAddress {
                recipient: draft.recipient.clone(),
                line1: draft.line1.clone(),
                line2: draft.line2.clone(),
                city: draft.city.clone(),
                region: draft.region.clone(),
                postal_code: draft.postal_code.clone(),
                country: draft.country.clone(),
                phone: draft.phone.clone(),
            },
        );
        match (label, postal) {
            (Ok(label), Ok(p)) => Ok(Self {
                label,
                recipient: p.recipient,
                line1: p.line1,
                line2: p.line2,
                city: p.city,
                region: p.region,
                postal_code: p.postal_code,
                country: p.country,
                phone: p.phone,
            }),
            (label, postal) => Err(label
                .err()
                .into_iter()
                .chain(postal.err().unwrap_or_default())
                .collect()),
        }
    }

    pub fn to_draft(&self) -> AddressDraft {
        AddressDraft {
            label: self.label.clone(),
            recipient: self.recipient.clone(),
            line1: self.line1.clone(),
            line2: self.line2.clone(),
            city: self.city.clone(),
            region: self.region.clone(),
            postal_code: self.postal_code.clone(),
            country: self.country.clone(),
            phone: self.phone.clone(),
        }
    }
}

/// Keeps exactly one default among `addresses` (when there are any): `preferred` wins if given,
/// otherwise an existing default stays, otherwise the oldest becomes the default.
pub fn settle_default(addresses: &mut [Address], preferred: Option<&str>) {
    if addresses.is_empty() {
        return;
    }
    let chosen = preferred
        .and_then(|id| addresses.iter().position(|a| a.id == id))
        .or_else(|| addresses.iter().position(|a| a.is_default))
        .unwrap_or_else(|| {
            addresses
                .iter()
                .enumerate()
                .min_by_key(|(_, a)| (a.created_at, a.id.clone()))
                .map(|(i, _)| i)
                .unwrap_or(0)
        });
    for (i, address) in addresses.iter_mut().enumerate() {
        address.is_default = i == chosen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_parse_and_normalise() {
        let email = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@Example.COM");
        assert_eq!(email.normalized(), "ada.lovelace@example.com");
        for bad in [
            "",
            "plain",
            "a@b",
            "@example.com",
            "a@@example.com",
            "a b@example.com",
            "a@-x.com",
            "a..b@example.com",
            "a@example..com",
            "a\u{0}b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for bad in [
            "ad\u{200b}a@example.com",
            "a\u{200d}@example.com",
            "\u{feff}ada@example.com",
            "ada\u{202e}moc.elpmaxe@example.com",
            "a\u{2066}b@example.com",
            "a\u{061c}b@example.com",
        ] {
            let error = Email::parse(bad).unwrap_err();
            assert!(error.message.contains("invisible"), "{bad:?}");
        }
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(Password::parse("short1A!").is_err());
        assert!(Password::parse("alllowercaseletters").is_err());
        assert!(Password::parse("password123!").is_err());
        assert!(Password::parse(&"Aa1".repeat(50)).is_err());
        assert!(Password::parse("Correct-Horse-9").is_ok());
    }

    #[test]
    fn phones_and_countries() {
        assert_eq!(
            phone("phone", " +49 30 1234567 ").unwrap(),
            "+49 30 1234567"
        );
        assert_eq!(phone("phone", "").unwrap(), "");
        assert!(phone("phone", "12345").is_err());
        assert!(phone("phone", "call me").is_err());
        assert_eq!(country("de").unwrap(), "DE");
        assert!(country("DEU").is_err());
        assert_eq!(country(" gb ").unwrap(), "GB");
        for bad in [
            "ZZ", "XX", "AA", "UK", "EU", "XK", "QM", "", "D", "1A", "ÄÖ",
        ] {
            assert!(country(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn address_validation_reports_every_field() {
        let errors = AddressFields::parse(&AddressDraft::default()).unwrap_err();
        let names: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            names,
            ["recipient", "line1", "city", "postal_code", "country"]
        );
    }

    fn address(id: &str, secs: i64, is_default: bool) -> Address {
        Address {
            id: id.into(),
            fields: AddressFields::default(),
            is_default,
            created_at: DateTime::from_timestamp(secs, 0).unwrap(),
        }
    }

    #[test]
    fn exactly_one_default_survives() {
        let mut list = vec![address("a", 1, false), address("b", 2, false)];
        settle_default(&mut list, None);
        assert!(list[0].is_default && !list[1].is_default);
        settle_default(&mut list, Some("b"));
        assert!(!list[0].is_default && list[1].is_default);
        let mut list = vec![address("b", 2, false), address("c", 3, true)];
        settle_default(&mut list, None);
        assert!(list[1].is_default && !list[0].is_default);
    }
}
