//! Payments and refunds, their life cycles, and the inputs of Charge and Refund.

use chrono::{DateTime, Utc};
use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::text;
use uuid::Uuid;

use crate::domain::money::{Money, parse_amount};

/// Longest user id Charge accepts (user ids are UUIDs or MongoDB ids; this is only a bound).
const MAX_USER_ID: usize = 128;
/// Longest payment method token Charge accepts.
const MAX_TOKEN: usize = 128;
/// Longest refund note.
pub const MAX_NOTE: usize = 500;
/// Longest refund idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// A required UUID field.
pub fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(raw.trim()).map_err(|_| field_error(field, "must be a UUID"))
}

/// Declares a text-backed enum with its stored spelling.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

stored_enum!(
    /// The life cycle of a payment.
    PaymentStatus {
        Pending => "PENDING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        PartiallyRefunded => "PARTIALLY_REFUNDED",
        Refunded => "REFUNDED",
    }
);

stored_enum!(
    /// Why a charge failed.
    FailureReason {
        CardDeclined => "CARD_DECLINED",
        InsufficientFunds => "INSUFFICIENT_FUNDS",
        ExpiredCard => "EXPIRED_CARD",
        InvalidPaymentMethod => "INVALID_PAYMENT_METHOD",
        FraudSuspected => "FRAUD_SUSPECTED",
        ProcessorError => "PROCESSOR_ERROR",
    }
);

stored_enum!(
    /// The life cycle of a refund.
    RefundStatus {
        Pending => "PENDING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
    }
);

stored_enum!(
    /// Why money was given back.
    RefundReason {
        Unspecified => "UNSPECIFIED",
        CustomerRequest => "CUSTOMER_REQUEST",
        OrderCancelled => "ORDER_CANCELLED",
        GoodsReturned => "GOODS_RETURNED",
        Duplicate => "DUPLICATE",
        Fraudulent => "FRAUDULENT",
        Other => "OTHER",
    }
);

/// How a failed charge failed, in terms safe to show the customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    /// The provider's raw decline code; empty when none.
    pub decline_code: String,
    pub message: String,
}

impl Failure {
    pub fn new(reason: FailureReason, decline_code: &str, message: &str) -> Self {
        Self {
            reason,
            decline_code: decline_code.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Money given back on a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub idempotency_key: String,
    pub amount: Money,
    pub reason: RefundReason,
    pub note: String,
    pub status: RefundStatus,
    pub failure_message: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
}

/// One charge of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: String,
    pub amount: Money,
    /// Given back so far (refunds in flight included), in the payment's currency.
    pub refunded_minor: i64,
    pub status: PaymentStatus,
    pub failure: Option<Failure>,
    pub provider_reference: String,
    pub card_brand: String,
    pub card_last4: String,
    /// Oldest first.
    pub refunds: Vec<Refund>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    /// Whether money was captured (and so may be refunded).
    pub fn captured(&self) -> bool {
        matches!(
            self.status,
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded
        )
    }

    /// What is left to refund.
    pub fn refundable_minor(&self) -> i64 {
        if self.captured() {
            self.amount.amount_minor.saturating_sub(self.refunded_minor)
        } else {
            0
        }
    }
}

/// A validated Charge request.
#[derive(Clone, Debug)]
pub struct ChargeInput {
    pub order_id: Uuid,
    pub user_id: String,
    pub amount: Money,
    pub payment_method_token: String,
}

impl ChargeInput {
    pub fn parse(
        order_id: &str,
        user_id: &str,
        amount: Option<(i64, &str)>,
        token: &str,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let order_id = parse_uuid("order_id", order_id)
            .map_err(|e| errors.push(e))
            .ok();
        let user_id = text::required_text("user_id", user_id, MAX_USER_ID)
            .map_err(|e| errors.push(e))
            .ok();
        let amount = parse_amount("amount", amount)
            .map_err(|e| errors.extend(e))
            .ok();
        let token = text::required_text("payment_method_token", token, MAX_TOKEN)
            .map_err(|e| errors.push(e))
            .ok();
        match (order_id, user_id, amount, token) {
            (Some(order_id), Some(user_id), Some(amount), Some(payment_method_token))
                if errors.is_empty() =>
            {
                Ok(Self {
                    order_id,
                    user_id,
                    amount,
                    payment_method_token,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A validated Refund request. `amount_minor` is `None` for "everything not yet refunded"; the
/// currency, when given, must be the payment's (checked against the payment).
#[derive(Clone, Debug)]
pub struct RefundInput {
    pub payment_id: Uuid,
    pub amount: Option<Money>,
    pub reason: RefundReason,
    pub note: String,
    pub idempotency_key: String,
}

impl RefundInput {
    pub fn parse(
        payment_id: &str,
        amount: Option<(i64, &str)>,
        reason: Option<RefundReason>,
        note: &str,
        idempotency_key: &str,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let payment_id = parse_uuid("payment_id", payment_id)
            .map_err(|e| errors.push(e))
            .ok();
        let amount = match amount {
            None => None,
            some => parse_amount("amount", some)
                .map_err(|e| errors.extend(e))
                .ok(),
        };
        if reason.is_none() {
            errors.push(field_error("reason", "must be a known refund reason"));
        }
        let note = text::multiline_text("note", note, MAX_NOTE)
            .map_err(|e| errors.push(e))
            .ok();
        let key = idempotency_key;
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
            errors.push(field_error(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
            ));
        } else if !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            errors.push(field_error(
                "idempotency_key",
                "must be printable ASCII characters",
            ));
        }
        match (payment_id, reason, note) {
            (Some(payment_id), Some(reason), Some(note)) if errors.is_empty() => Ok(Self {
                payment_id,
                amount,
                reason,
                note,
                idempotency_key: key.to_owned(),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn charges_need_an_order_a_user_an_amount_and_a_token() {
        let order = Uuid::now_v7().to_string();
        let input = ChargeInput::parse(&order, "u1", Some((500, "usd")), "pm_x").unwrap();
        assert_eq!(input.amount.currency.as_str(), "USD");
        let errors = ChargeInput::parse("nope", "", Some((-1, "USD")), "").unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "order_id",
                "user_id",
                "amount.amount_minor",
                "payment_method_token"
            ]
        );
    }

    #[test]
    fn refunds_need_a_printable_key_and_a_known_reason() {
        let id = Uuid::now_v7().to_string();
        let input =
            RefundInput::parse(&id, None, Some(RefundReason::Other), "why", "key-1").unwrap();
        assert_eq!(input.amount, None);
        let errors =
            RefundInput::parse(&id, Some((0, "USD")), None, "a\u{0}b", "caf\u{e9}").unwrap_err();
        assert_eq!(
            fields(&errors),
            ["amount.amount_minor", "reason", "note", "idempotency_key"]
        );
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
        let errors =
            RefundInput::parse(&id, None, Some(RefundReason::Other), "", &long).unwrap_err();
        assert_eq!(fields(&errors), ["idempotency_key"]);
    }

    #[test]
    fn stored_spellings_round_trip() {
        for status in [
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
            PaymentStatus::Failed,
            PaymentStatus::PartiallyRefunded,
            PaymentStatus::Refunded,
        ] {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(
            FailureReason::parse("PROCESSOR_ERROR"),
            Some(FailureReason::ProcessorError)
        );
        assert_eq!(RefundReason::parse("nope"), None);
    }
}
