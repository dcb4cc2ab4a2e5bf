//! Amounts of money and the rule for product prices.

use shopmesh_platform::problem::FieldError;

use crate::domain::currency::Currency;
use crate::domain::text::field_error;

/// An amount in minor units of a currency. Never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

/// A product price: positive, in the catalog currency (one currency keeps price sorting and
/// price filters meaningful).
pub fn parse_price(
    amount_minor: i64,
    currency: &str,
    catalog: Currency,
) -> Result<Money, Vec<FieldError>> {
    let mut errors = Vec::new();
    if amount_minor <= 0 {
        errors.push(field_error("price.amount_minor", "must be positive"));
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
}
