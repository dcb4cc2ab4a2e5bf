//! Amounts of money and the rule for product prices.

use shopmesh_platform::problem::FieldError;

use crate::domain::currency::Currency;
use crate::domain::text::field_error;

/// Highest product price (and price filter bound), in minor units: 1_000_000_000 is 10 million
/// units of a two-decimal currency. Far above anything the shop sells, and far enough below
/// `i64::MAX` that totals of many lines and large quantities stay representable.
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000;

/// An amount in minor units of a currency. Never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    /// The sum of two amounts of the same currency; `None` on overflow or a currency mismatch.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        if self.currency != other.currency {
            return None;
        }
        Some(Self {
            amount_minor: self.amount_minor.checked_add(other.amount_minor)?,
            currency: self.currency,
        })
    }

    /// This amount times a quantity; `None` on overflow.
    pub fn checked_mul(self, quantity: i64) -> Option<Self> {
        Some(Self {
            amount_minor: self.amount_minor.checked_mul(quantity)?,
            currency: self.currency,
        })
    }
}

/// A product price: positive, at most [`MAX_PRICE_MINOR`], in the catalog currency (one currency
/// keeps price sorting and price filters meaningful).
pub fn parse_price(
    amount_minor: i64,
    currency: &str,
    catalog: Currency,
) -> Result<Money, Vec<FieldError>> {
    let mut errors = Vec::new();
    if amount_minor <= 0 {
        errors.push(field_error("price.amount_minor", "must be positive"));
    } else if amount_minor > MAX_PRICE_MINOR {
        errors.push(field_error(
            "price.amount_minor",
            format!("must be at most {MAX_PRICE_MINOR}"),
        ));
    }
    match Currency::parse("price.currency", currency) {
        Ok(code) if code == catalog => {}
        Ok(_) => errors.push(field_error(
            "price.currency",
            format!("must be the catalog currency {catalog}"),
        )),
        Err(err) => errors.push(err),
    }
    if errors.is_empty() {
        Ok(Money {
            amount_minor,
            currency: catalog,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("currency", "USD").unwrap()
    }

    #[test]
    fn prices_are_positive_and_in_the_catalog_currency() {
        assert_eq!(parse_price(1999, "usd", usd()).unwrap().amount_minor, 1999);
        let errors = parse_price(-1, "XYZ", usd()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["price.amount_minor", "price.currency"]);
        assert!(parse_price(0, "USD", usd()).is_err());
        let errors = parse_price(100, "EUR", usd()).unwrap_err();
        assert!(errors[0].message.contains("catalog currency USD"));
    }

    #[test]
    fn prices_are_capped() {
        assert!(parse_price(MAX_PRICE_MINOR, "USD", usd()).is_ok());
        for too_much in [MAX_PRICE_MINOR + 1, i64::MAX] {
            let errors = parse_price(too_much, "USD", usd()).unwrap_err();
            assert_eq!(errors[0].field, "price.amount_minor");
            assert!(errors[0].message.contains("at most"), "{too_much}");
        }
    }

    #[test]
    fn arithmetic_on_money_is_checked() {
        let price = parse_price(MAX_PRICE_MINOR, "USD", usd()).unwrap();
        assert_eq!(
            price.checked_mul(3).unwrap().amount_minor,
            3 * MAX_PRICE_MINOR
        );
        assert_eq!(price.checked_mul(i64::MAX), None);
        let big = Money {
            amount_minor: i64::MAX,
            currency: usd(),
        };
        assert_eq!(big.checked_add(price), None);
        assert_eq!(
            price.checked_add(price).unwrap().amount_minor,
            2 * MAX_PRICE_MINOR
        );
        let euros = Money {
            amount_minor: 1,
            currency: Currency::parse("currency", "EUR").unwrap(),
        };
        assert_eq!(price.checked_add(euros), None);
    }
}
