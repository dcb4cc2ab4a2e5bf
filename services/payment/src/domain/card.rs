//! Card details as TokenizeCard receives them, checked and reduced at once to what may be kept:
//! brand, last four digits, expiry and the test scenario. The full number and the CVC never
//! leave [`Card::parse`]: they are not stored, not logged and not echoed in error messages.

use chrono::Datelike;
use shopmesh_platform::problem::{FieldError, field_error};

/// Card networks the service recognises from the number's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Unknown,
}

impl Brand {
    /// The brand of a digits-only card number.
    pub fn detect(digits: &str) -> Self {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        if digits.starts_with('4') {
            Self::Visa
        } else if prefix(2).is_some_and(|p| (51..=55).contains(&p))
            || prefix(4).is_some_and(|p| (2221..=2720).contains(&p))
        {
            Self::Mastercard
        } else if prefix(2).is_some_and(|p| p == 34 || p == 37) {
            Self::Amex
        } else {
            Self::Unknown
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Unknown => "unknown",
        }
    }
}

/// What the built-in test provider does when the card is charged, chosen by the well-known
/// test numbers so that every outcome can be produced on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Succeed,
    Decline,
    InsufficientFunds,
    /// The provider fails transiently on every attempt.
    Transient,
}

impl Scenario {
    fn of(digits: &str) -> Self {
        match digits {
            "4000000000000002" => Self::Decline,
            "4000000000009995" => Self::InsufficientFunds,
            "4000000000000119" => Self::Transient,
            _ => Self::Succeed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeed => "succeed",
            Self::Decline => "decline",
            Self::InsufficientFunds => "insufficient_funds",
            Self::Transient => "transient",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "succeed" => Self::Succeed,
            "decline" => Self::Decline,
            "insufficient_funds" => Self::InsufficientFunds,
            "transient" => Self::Transient,
            _ => return None,
        })
    }
}

/// A checked card, without its number or CVC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    pub brand: Brand,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub scenario: Scenario,
}

/// Whether a digits-only number passes the Luhn checksum.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

impl Card {
    /// Checks number (12-19 digits, spaces and dashes ignored, Luhn), expiry (a month 1-12 of a
    /// four-digit year, not before `today`'s month) and CVC (3 or 4 digits); every violation is
    /// reported, none repeats what was sent.
    pub fn parse(
        number: &str,
        exp_month: i32,
        exp_year: i32,
        cvc: &str,
        today: chrono::NaiveDate,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let digits: String = number.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if digits.is_empty() {
            errors.push(field_error("card_number", "must not be empty"));
        } else if !digits.chars().all(|c| c.is_ascii_digit()) {
            errors.push(field_error(
                "card_number",
                "must contain only digits, spaces and dashes",
            ));
        } else if !(12..=19).contains(&digits.len()) {
            errors.push(field_error("card_number", "must be 12 to 19 digits"));
        } else if !luhn_valid(&digits) {
            errors.push(field_error("card_number", "is not a valid card number"));
        }
        let month_ok = (1..=12).contains(&exp_month);
        if !month_ok {
            errors.push(field_error("exp_month", "must be between 1 and 12"));
        }
        let year_ok = (1000..=9999).contains(&exp_year);
        if !year_ok {
            errors.push(field_error("exp_year", "must be a four-digit year"));
        } else if exp_year < today.year() {
            errors.push(field_error("exp_year", "the card has expired"));
        } else if month_ok && exp_year == today.year() && exp_month.unsigned_abs() < today.month() {
            errors.push(field_error("exp_month", "the card has expired"));
        }
        let cvc = cvc.trim();
        if !(3..=4).contains(&cvc.len()) || !cvc.chars().all(|c| c.is_ascii_digit()) {
            errors.push(field_error("cvc", "must be 3 or 4 digits"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            brand: Brand::detect(&digits),
            last4: digits[digits.len() - 4..].to_owned(),
            exp_month: exp_month.unsigned_abs(),
            exp_year,
            scenario: Scenario::of(&digits),
        })
    }

    /// Whether the card has expired by `today` (it is valid through the end of its month).
    pub fn expired(exp_month: u32, exp_year: i32, today: chrono::NaiveDate) -> bool {
        (exp_year, exp_month) < (today.year(), today.month())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 6, 15).unwrap()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn test_cards_pass_luhn_and_pick_their_scenario() {
        for (number, scenario) in [
            ("4242 4242 4242 4242", Scenario::Succeed),
            ("4000-0000-0000-0002", Scenario::Decline),
            ("4000000000009995", Scenario::InsufficientFunds),
            ("4000000000000119", Scenario::Transient),
            ("5555555555554444", Scenario::Succeed),
        ] {
            let card = Card::parse(number, 12, 2030, "123", today()).unwrap();
            assert_eq!(card.scenario, scenario, "{number}");
        }
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn brands_come_from_the_prefix() {
        assert_eq!(Brand::detect("4242424242424242"), Brand::Visa);
        assert_eq!(Brand::detect("5105105105105100"), Brand::Mastercard);
        assert_eq!(Brand::detect("2221000000000009"), Brand::Mastercard);
        assert_eq!(Brand::detect("2720990000000000"), Brand::Mastercard);
        assert_eq!(Brand::detect("2721000000000000"), Brand::Unknown);
        assert_eq!(Brand::detect("378282246310005"), Brand::Amex);
        assert_eq!(Brand::detect("341111111111111"), Brand::Amex);
        assert_eq!(Brand::detect("6011111111111117"), Brand::Unknown);
    }

    #[test]
    fn only_brand_last4_and_expiry_are_kept() {
        let card = Card::parse("4242424242424242", 7, 2026, "1234", today()).unwrap();
        assert_eq!(card.last4, "4242");
        assert_eq!(card.brand, Brand::Visa);
        assert_eq!((card.exp_month, card.exp_year), (7, 2026));
        assert!(!format!("{card:?}").contains("42424242"));
    }

    #[test]
    fn every_violation_is_reported_without_the_number() {
        let errors = Card::parse("4242424242424241", 13, 99, "12a", today()).unwrap_err();
        assert_eq!(
            fields(&errors),
            ["card_number", "exp_month", "exp_year", "cvc"]
        );
        assert!(errors.iter().all(|e| !e.message.contains("4242")));
        let errors = Card::parse("1234 5678 901", 1, 2030, "123", today()).unwrap_err();
        assert_eq!(errors[0].message, "must be 12 to 19 digits");
        let errors = Card::parse("4242x4242", 1, 2030, "123", today()).unwrap_err();
        assert_eq!(fields(&errors), ["card_number"]);
    }

    #[test]
    fn expiry_may_not_be_in_the_past() {
        assert!(Card::parse("4242424242424242", 6, 2026, "123", today()).is_ok());
        let errors = Card::parse("4242424242424242", 5, 2026, "123", today()).unwrap_err();
        assert_eq!(fields(&errors), ["exp_month"]);
        let errors = Card::parse("4242424242424242", 12, 2025, "123", today()).unwrap_err();
        assert_eq!(fields(&errors), ["exp_year"]);
        assert!(Card::expired(5, 2026, today()));
        assert!(!Card::expired(6, 2026, today()));
    }
}
