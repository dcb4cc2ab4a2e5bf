//! The order's rules: which status may follow which, what a valid order request is, and the
//! arithmetic of totals. Pure functions, no I/O.

use std::collections::HashSet;

use shopmesh_contracts::pb::shopmesh::order::v1::{OrderStatus, SagaStep};
use shopmesh_platform::problem::{FieldError, field_error};

/// The most units of one product in one order (the cart's cap).
pub const MAX_LINE_QUANTITY: i32 = 99;
/// The most lines of one order (the cart's cap).
pub const MAX_LINES: usize = 50;

/// Whether an order may move from `from` to `to`:
/// CREATED -> PAID -> SHIPPED -> COMPLETED; CREATED|PAID -> CANCELLED;
/// PAID|SHIPPED|COMPLETED -> REFUNDED.
pub fn can_transition(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::*;
    matches!(
        (from, to),
        (Created, Paid)
            | (Paid, Shipped)
            | (Shipped, Completed)
            | (Created | Paid, Cancelled)
            | (Paid | Shipped | Completed, Refunded)
    )
}

/// Whether the saga has nothing left to do.
pub fn saga_finished(step: SagaStep) -> bool {
    matches!(step, SagaStep::Completed | SagaStep::Compensated)
}

/// The upper-case name of a status without its prefix, for messages.
pub fn status_name(status: OrderStatus) -> &'static str {
    status
        .as_str_name()
        .strip_prefix("ORDER_STATUS_")
        .unwrap_or("UNSPECIFIED")
}

/// An idempotency key: 1-128 printable ASCII characters.
pub fn idempotency_key(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.is_empty() || raw.len() > 128 || !raw.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(field_error(
            field,
            "must be 1 to 128 printable ASCII characters without spaces",
        ));
    }
    Ok(raw.to_owned())
}

/// One requested line after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedLine {
    pub product_id: String,
    pub quantity: i32,
    pub expected_minor: i64,
    pub expected_currency: String,
}

/// Checks the shape of requested lines: at least one, at most [`MAX_LINES`], each product once,
/// quantities 1..=99, one currency. Catalog checks (existence, activity, price) come after.
pub fn check_lines(lines: &[RequestedLine]) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if lines.is_empty() {
        errors.push(field_error("lines", "must hold at least one line"));
    }
    if lines.len() > MAX_LINES {
        errors.push(field_error(
            "lines",
            format!("must hold at most {MAX_LINES} lines"),
        ));
    }
    let mut seen = HashSet::new();
    let mut currencies = HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        if line.product_id.is_empty() {
            errors.push(field_error(
                &format!("lines[{i}].product_id"),
                "is required",
            ));
        } else if !seen.insert(line.product_id.as_str()) {
            errors.push(field_error(
                &format!("lines[{i}].product_id"),
                "repeats a product of an earlier line",
            ));
        }
        if !(1..=MAX_LINE_QUANTITY).contains(&line.quantity) {
            errors.push(field_error(
                &format!("lines[{i}].quantity"),
                format!("must be between 1 and {MAX_LINE_QUANTITY}"),
            ));
        }
        if line.expected_minor <= 0 {
            errors.push(field_error(
                &format!("lines[{i}].expected_unit_price"),
                "must be a positive amount",
            ));
        }
        currencies.insert(line.expected_currency.as_str());
    }
    if currencies.len() > 1 {
        errors.push(field_error("lines", "must all be in one currency"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// `unit * quantity` summed over lines, or `None` on overflow.
pub fn total(lines: impl IntoIterator<Item = (i64, i32)>) -> Option<i64> {
    lines.into_iter().try_fold(0i64, |sum, (unit, quantity)| {
        unit.checked_mul(i64::from(quantity))
            .and_then(|line| sum.checked_add(line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn the_transition_table_allows_only_the_life_cycle() {
        let all = [Created, Paid, Shipped, Completed, Cancelled, Refunded];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|f| all.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| can_transition(*f, *t))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Created, Paid),
                (Created, Cancelled),
                (Paid, Shipped),
                (Paid, Cancelled),
                (Paid, Refunded),
                (Shipped, Completed),
                (Shipped, Refunded),
                (Completed, Refunded),
            ]
        );
    }

    fn line(id: &str, quantity: i32) -> RequestedLine {
        RequestedLine {
            product_id: id.to_owned(),
            quantity,
            expected_minor: 100,
            expected_currency: "USD".to_owned(),
        }
    }

    #[test]
    fn lines_are_checked_for_shape() {
        assert!(check_lines(&[line("a", 1), line("b", 99)]).is_ok());
        let fields = |lines: &[RequestedLine]| -> Vec<String> {
            check_lines(lines)
                .unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(fields(&[]), ["lines"]);
        assert_eq!(fields(&[line("a", 0)]), ["lines[0].quantity"]);
        assert_eq!(fields(&[line("a", 100)]), ["lines[0].quantity"]);
        assert_eq!(
            fields(&[line("a", 1), line("a", 2)]),
            ["lines[1].product_id"]
        );
        let mut eur = line("b", 1);
        eur.expected_currency = "EUR".to_owned();
        assert_eq!(fields(&[line("a", 1), eur]), ["lines"]);
    }

    #[test]
    fn totals_use_checked_arithmetic() {
        assert_eq!(total([(250, 2), (100, 1)]), Some(600));
        assert_eq!(total([(i64::MAX, 2)]), None);
    }

    #[test]
    fn idempotency_keys_are_printable_ascii() {
        assert!(idempotency_key("k", "checkout-1").is_ok());
        assert!(idempotency_key("k", "").is_err());
        assert!(idempotency_key("k", "has space").is_err());
        assert!(idempotency_key("k", &"x".repeat(129)).is_err());
        assert!(idempotency_key("k", "naïve").is_err());
    }
}
