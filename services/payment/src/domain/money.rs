//! Amounts of money: integer minor units of a currency, never floats.

use shopmesh_platform::problem::{FieldError, field_error};

/// Highest amount one payment may carry, in minor units (10 billion units of a two-decimal
/// currency): far above any basket, and far enough below `i64::MAX` that sums stay exact.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// A three-letter ISO 4217-style currency code, upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let code = raw.trim().to_ascii_uppercase();
        if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(code))
        } else {
            Err(field_error(field, "must be a three-letter currency code"))
        }
    }

    /// A code read back from the database, which only ever holds parsed codes.
    pub fn stored(code: String) -> Self {
        Self(code)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount in minor units of a currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

/// A positive amount of at most [`MAX_AMOUNT_MINOR`]; `field` names the money field
/// (`amount` → `amount.amount_minor`, `amount.currency`). `None` (unset) is refused.
pub fn parse_amount(field: &str, amount: Option<(i64, &str)>) -> Result<Money, Vec<FieldError>> {
    let Some((amount_minor, currency)) = amount else {
        return Err(vec![field_error(field, "is required")]);
    };
    let mut errors = Vec::new();
    if amount_minor <= 0 {
        errors.push(field_error(
            &format!("{field}.amount_minor"),
            "must be positive",
        ));
    } else if amount_minor > MAX_AMOUNT_MINOR {
        errors.push(field_error(
            &format!("{field}.amount_minor"),
            format!("must be at most {MAX_AMOUNT_MINOR}"),
        ));
    }
    let currency = Currency::parse(&format!("{field}.currency"), currency)
        .map_err(|err| errors.push(err))
        .ok();
    match currency {
        Some(currency) if errors.is_empty() => Ok(Money {
            amount_minor,
            currency,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_capped_and_in_a_currency() {
        let money = parse_amount("amount", Some((1999, "usd"))).unwrap();
        assert_eq!(money.amount_minor, 1999);
        assert_eq!(money.currency.as_str(), "USD");
        let errors = parse_amount("amount", Some((0, "dollars"))).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["amount.amount_minor", "amount.currency"]);
        assert!(parse_amount("amount", Some((MAX_AMOUNT_MINOR + 1, "USD"))).is_err());
        assert_eq!(parse_amount("amount", None).unwrap_err()[0].field, "amount");
    }
}
