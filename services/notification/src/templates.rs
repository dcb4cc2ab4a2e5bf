//! The templates: plain text, deterministic (the same event renders the same text, whenever and
//! however often), in English. Text taken from events (names, products, carriers, messages) is
//! put on one line: control characters become spaces, so nothing an event carries can break a
//! template's layout.

use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_contracts::pb::shopmesh::order::v1::CancellationReason;

use crate::kind::Kind;

/// A notification as rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub kind: Kind,
    pub subject: String,
    pub body: String,
}

const SIGNATURE: &str = "-- shopmesh";

/// Currencies (ISO 4217) without minor units.
const ZERO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
/// Currencies (ISO 4217) with three decimals.
const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// Digits after the decimal point of `currency`'s minor unit.
fn exponent(currency: &str) -> u32 {
    if ZERO_DECIMALS.contains(&currency) {
        0
    } else if THREE_DECIMALS.contains(&currency) {
        3
    } else {
        2
    }
}

/// An amount in minor units as text: `USD 1234.50`, `JPY 1500`, `KWD 1.250`.
pub fn format_money(amount_minor: i64, currency: &str) -> String {
    let currency = one_line(currency);
    let digits = exponent(&currency);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    if digits == 0 {
        return format!("{currency} {sign}{magnitude}");
    }
    let unit = 10_u64.pow(digits);
    format!(
        "{currency} {sign}{}.{:0width$}",
        magnitude / unit,
        magnitude % unit,
        width = digits as usize
    )
}

fn money(amount: Option<&Money>) -> String {
    let amount = amount.cloned().unwrap_or_default();
    format_money(amount.amount_minor, &amount.currency)
}

/// `text` on one line: control characters (line breaks included) become spaces, and the ends
/// are trimmed.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn greeting(name: &str) -> String {
    let name = one_line(name);
    if name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {name},")
    }
}

/// The body: the greeting, the paragraphs, the signature, one blank line between each.
fn body(name: &str, paragraphs: &[String]) -> String {
    let mut parts = vec![greeting(name)];
    parts.extend(paragraphs.iter().cloned());
    parts.push(SIGNATURE.to_owned());
    let mut text = parts.join("\n\n");
    text.push('\n');
    text
}

/// user.registered.
pub fn welcome(name: &str) -> Rendered {
    Rendered {
        kind: Kind::Welcome,
        subject: "Welcome to shopmesh".to_owned(),
        body: body(
            name,
            &["Welcome to shopmesh! Your account is ready.".to_owned()],
        ),
    }
}

/// One order line: `2 x Blue Mug  USD 25.98` (the line's total).
fn order_line(line: &events::OrderLine) -> String {
    let total = match &line.line_total {
        Some(total) => total.clone(),
        // Older producers might not send it: the unit price times the quantity.
        None => {
            let unit = line.unit_price.clone().unwrap_or_default();
            Money {
                amount_minor: unit.amount_minor.saturating_mul(i64::from(line.quantity)),
                currency: unit.currency,
            }
        }
    };
    let name = match one_line(&line.product_name) {
        name if name.is_empty() => one_line(&line.sku),
        name => name,
    };
    format!(
        "{} x {}  {}",
        line.quantity,
        name,
        format_money(total.amount_minor, &total.currency)
    )
}

/// order.paid: the order confirmation.
pub fn order_paid(name: &str, paid: &events::OrderPaid) -> Rendered {
    let order = one_line(&paid.order_id);
    let lines: Vec<String> = paid.lines.iter().map(order_line).collect();
    let mut paragraphs = vec![format!(
        "Thank you for your order {order}. Your payment went through and we are preparing it."
    )];
    if !lines.is_empty() {
        paragraphs.push(lines.join("\n"));
    }
    paragraphs.push(format!("Total: {}", money(paid.total.as_ref())));
    paragraphs.push("We will let you know when it ships.".to_owned());
    Rendered {
        kind: Kind::OrderPaid,
        subject: format!("Order confirmation {order}"),
        body: body(name, &paragraphs),
    }
}

/// payment.failed.
pub fn payment_failed(name: &str, failed: &events::PaymentFailed) -> Rendered {
    let order = one_line(&failed.order_id);
    let amount = money(failed.amount.as_ref());
    let message = one_line(&failed.failure_message);
    let first = if message.is_empty() {
        format!("The payment of {amount} for your order {order} did not go through.")
    } else {
        format!("The payment of {amount} for your order {order} did not go through: {message}")
    };
    Rendered {
        kind: Kind::PaymentFailed,
        subject: format!("Payment failed for order {order}"),
        body: body(
            name,
            &[
                first,
                "Nothing was charged. You can place the order again with another card.".to_owned(),
            ],
        ),
    }
}

/// order.shipped: carrier and tracking number.
pub fn order_shipped(name: &str, shipped: &events::OrderShipped) -> Rendered {
    let order = one_line(&shipped.order_id);
    let carrier = one_line(&shipped.carrier);
    let tracking = one_line(&shipped.tracking_number);
    let mut paragraphs = vec![if carrier.is_empty() {
        format!("Your order {order} is on its way.")
    } else {
        format!("Your order {order} is on its way with {carrier}.")
    }];
    if !tracking.is_empty() {
        paragraphs.push(format!("Tracking number: {tracking}"));
    }
    Rendered {
        kind: Kind::OrderShipped,
        subject: format!("Your order {order} has shipped"),
        body: body(name, &paragraphs),
    }
}

/// order.completed or shipment.status_changed to DELIVERED (one text for both, so whichever
/// arrives first writes the same notification).
pub fn order_delivered(name: &str, order_id: &str) -> Rendered {
    let order = one_line(order_id);
    Rendered {
        kind: Kind::OrderDelivered,
        subject: format!("Your order {order} was delivered"),
        body: body(
            name,
            &[format!(
                "Your order {order} was delivered. We hope you enjoy it!"
            )],
        ),
    }
}

/// order.refunded.
pub fn order_refunded(name: &str, refunded: &events::OrderRefunded) -> Rendered {
    let order = one_line(&refunded.order_id);
    Rendered {
        kind: Kind::OrderRefunded,
        subject: format!("Refund for order {order}"),
        body: body(
            name,
            &[
                format!(
                    "We refunded {} for your order {order}.",
                    money(refunded.refunded_total.as_ref())
                ),
                "It goes back to the card you paid with; your bank may take a few days to show it."
                    .to_owned(),
            ],
        ),
    }
}

fn cancellation_cause(reason: CancellationReason) -> &'static str {
    match reason {
        CancellationReason::CustomerRequested => " at your request",
        CancellationReason::AdminRequested => " by our staff",
        CancellationReason::OutOfStock => " because an item is out of stock",
        CancellationReason::PaymentFailed => " because the payment failed",
        CancellationReason::ReservationExpired => {
            " because its items could not be held for it any longer"
        }
        CancellationReason::ServiceUnavailable => " because it could not be completed in time",
        CancellationReason::Unspecified => "",
    }
}

/// order.cancelled.
pub fn order_cancelled(name: &str, cancelled: &events::OrderCancelled) -> Rendered {
    let order = one_line(&cancelled.order_id);
    let reason =
        CancellationReason::try_from(cancelled.reason).unwrap_or(CancellationReason::Unspecified);
    let refunded = cancelled
        .refunded_total
        .as_ref()
        .filter(|amount| amount.amount_minor > 0);
    let money_line = match refunded {
        Some(amount) => format!(
            "We refunded {} to the card you paid with.",
            format_money(amount.amount_minor, &amount.currency)
        ),
        None => "You were not charged.".to_owned(),
    };
    Rendered {
        kind: Kind::OrderCancelled,
        subject: format!("Your order {order} was cancelled"),
        body: body(
            name,
            &[
                format!(
                    "Your order {order} was cancelled{}.",
                    cancellation_cause(reason)
                ),
                money_line,
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(amount_minor: i64) -> Option<Money> {
        Some(Money {
            amount_minor,
            currency: "USD".into(),
        })
    }

    #[test]
    fn money_is_formatted_from_minor_units_by_currency() {
        assert_eq!(format_money(6598, "USD"), "USD 65.98");
        assert_eq!(format_money(5, "EUR"), "EUR 0.05");
        assert_eq!(format_money(0, "USD"), "USD 0.00");
        assert_eq!(format_money(1500, "JPY"), "JPY 1500");
        assert_eq!(format_money(1250, "KWD"), "KWD 1.250");
        assert_eq!(format_money(-250, "USD"), "USD -2.50");
        assert_eq!(format_money(i64::MIN, "USD"), "USD -92233720368547758.08");
    }

    #[test]
    fn the_confirmation_lists_every_line_and_the_total() {
        let paid = events::OrderPaid {
            order_id: "0190b6a4-7d2e-7c3a-9f1e-5a6b7c8d9e0f".into(),
            lines: vec![
                events::OrderLine {
                    product_name: "Blue Mug".into(),
                    quantity: 2,
                    unit_price: usd(1299),
                    line_total: usd(2598),
                    ..Default::default()
                },
                events::OrderLine {
                    product_name: "Teapot\nwith lid".into(),
                    sku: "TEA-1".into(),
                    quantity: 1,
                    unit_price: usd(4000),
                    line_total: None,
                    ..Default::default()
                },
            ],
            total: usd(6598),
            ..Default::default()
        };
        let rendered = order_paid("Ada", &paid);
        assert_eq!(rendered.kind, Kind::OrderPaid);
        assert_eq!(
            rendered.subject,
            "Order confirmation 0190b6a4-7d2e-7c3a-9f1e-5a6b7c8d9e0f"
        );
        assert_eq!(
            rendered.body,
            "Hello Ada,\n\n\
             Thank you for your order 0190b6a4-7d2e-7c3a-9f1e-5a6b7c8d9e0f. Your payment went \
             through and we are preparing it.\n\n\
             2 x Blue Mug  USD 25.98\n\
             1 x Teapot with lid  USD 40.00\n\n\
             Total: USD 65.98\n\n\
             We will let you know when it ships.\n\n\
             -- shopmesh\n"
        );
        // Deterministic.
        assert_eq!(order_paid("Ada", &paid), rendered);
    }

    #[test]
    fn the_other_templates_carry_what_their_event_says() {
        let failed = payment_failed(
            "",
            &events::PaymentFailed {
                order_id: "o1".into(),
                amount: usd(1000),
                failure_message: "Your card was declined.".into(),
                ..Default::default()
            },
        );
        assert!(failed.body.starts_with("Hello,\n\n"), "{}", failed.body);
        assert!(failed.body.contains(
            "The payment of USD 10.00 for your order o1 did not go through: Your card was declined."
        ));
        let shipped = order_shipped(
            "Ada",
            &events::OrderShipped {
                order_id: "o1".into(),
                carrier: "ACME Post".into(),
                tracking_number: "TRK123".into(),
                ..Default::default()
            },
        );
        assert!(shipped.body.contains("on its way with ACME Post."));
        assert!(shipped.body.contains("Tracking number: TRK123"));
        let delivered = order_delivered("Ada", "o1");
        assert_eq!(delivered.subject, "Your order o1 was delivered");
        let refunded = order_refunded(
            "Ada",
            &events::OrderRefunded {
                order_id: "o1".into(),
                total: usd(6598),
                refunded_total: usd(6598),
                ..Default::default()
            },
        );
        assert!(
            refunded
                .body
                .contains("We refunded USD 65.98 for your order o1.")
        );
        let cancelled = order_cancelled(
            "Ada",
            &events::OrderCancelled {
                order_id: "o1".into(),
                reason: CancellationReason::CustomerRequested as i32,
                refunded_total: usd(500),
                ..Default::default()
            },
        );
        assert!(cancelled.body.contains("was cancelled at your request."));
        assert!(cancelled.body.contains("We refunded USD 5.00"));
        assert_eq!(welcome("Ada").subject, "Welcome to shopmesh");
    }
}
