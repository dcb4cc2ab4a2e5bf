//! JSON shapes of the payment routes and their conversion from the payment service's
//! contracts. Card data is never here beyond the brand and the last four digits.

use chrono::{DateTime, Utc};
use serde::Serialize;
use shopmesh_contracts::pb::shopmesh::payment::v1 as pb;
use shopmesh_platform::time::optional_time;
use utoipa::ToSchema;

use crate::dto::non_empty;
use crate::dto::order::{Amount, amount};

/// An enum name without its prefix (`PAYMENT_STATUS_SUCCEEDED` → `SUCCEEDED`); `None` for the
/// unspecified value.
fn name(full: &str, prefix: &str) -> Option<String> {
    let short = full.strip_prefix(prefix).unwrap_or(full);
    (short != "UNSPECIFIED").then(|| short.to_owned())
}

/// Money given back on a payment.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct RefundResponse {
    pub id: String,
    pub amount: Amount,
    /// CUSTOMER_REQUEST, ORDER_CANCELLED, GOODS_RETURNED, DUPLICATE, FRAUDULENT or OTHER;
    /// absent when none was given.
    #[schema(example = "ORDER_CANCELLED")]
    pub reason: Option<String>,
    pub note: Option<String>,
    /// PENDING, SUCCEEDED or FAILED.
    #[schema(example = "SUCCEEDED")]
    pub status: String,
    pub failure_message: Option<String>,
    /// The admin who asked; absent when the shop itself refunded (a cancelled order).
    pub requested_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::Refund> for RefundResponse {
    fn from(r: pb::Refund) -> Self {
        Self {
            reason: pb::RefundReason::try_from(r.reason)
                .ok()
                .and_then(|reason| name(reason.as_str_name(), "REFUND_REASON_")),
            status: pb::RefundStatus::try_from(r.status)
                .ok()
                .and_then(|status| name(status.as_str_name(), "REFUND_STATUS_"))
                .unwrap_or_else(|| "UNSPECIFIED".to_owned()),
            amount: amount(r.amount),
            note: non_empty(r.note),
            failure_message: non_empty(r.failure_message),
            requested_by: non_empty(r.requested_by),
            created_at: optional_time(r.create_time),
            id: r.id,
        }
    }
}

/// One charge of an order.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct PaymentResponse {
    pub id: String,
    pub order_id: String,
    /// PENDING, SUCCEEDED, FAILED, PARTIALLY_REFUNDED or REFUNDED.
    #[schema(example = "SUCCEEDED")]
    pub status: String,
    pub amount: Amount,
    /// Given back so far.
    pub refunded_amount: Amount,
    /// visa, mastercard, amex or unknown.
    #[schema(example = "visa")]
    pub card_brand: Option<String>,
    #[schema(example = "4242")]
    pub card_last4: Option<String>,
    /// Why a FAILED payment failed: CARD_DECLINED, INSUFFICIENT_FUNDS, EXPIRED_CARD,
    /// INVALID_PAYMENT_METHOD, FRAUD_SUSPECTED or PROCESSOR_ERROR.
    #[schema(example = "INSUFFICIENT_FUNDS")]
    pub failure_reason: Option<String>,
    /// The card issuer's decline code.
    #[schema(example = "insufficient_funds")]
    pub decline_code: Option<String>,
    /// Safe to show the customer.
    pub failure_message: Option<String>,
    /// Oldest first.
    pub refunds: Vec<RefundResponse>,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::Payment> for PaymentResponse {
    fn from(p: pb::Payment) -> Self {
        Self {
            status: pb::PaymentStatus::try_from(p.status)
                .ok()
                .and_then(|status| name(status.as_str_name(), "PAYMENT_STATUS_"))
                .unwrap_or_else(|| "UNSPECIFIED".to_owned()),
            failure_reason: pb::PaymentFailureReason::try_from(p.failure_reason)
                .ok()
                .and_then(|reason| name(reason.as_str_name(), "PAYMENT_FAILURE_REASON_")),
            amount: amount(p.amount),
            refunded_amount: amount(p.refunded_amount),
            card_brand: non_empty(p.card_brand),
            card_last4: non_empty(p.card_last4),
            decline_code: non_empty(p.decline_code),
            failure_message: non_empty(p.failure_message),
            refunds: p.refunds.into_iter().map(Into::into).collect(),
            created_at: optional_time(p.create_time),
            id: p.id,
            order_id: p.order_id,
        }
    }
}

/// The payments of an order, oldest first.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct PaymentList {
    pub payments: Vec<PaymentResponse>,
}

#[cfg(test)]
mod tests {
    use shopmesh_contracts::pb::shopmesh::common::v1::Money;

    use super::*;

    #[test]
    fn payments_show_names_without_prefixes_and_absent_empties() {
        let payment = PaymentResponse::from(pb::Payment {
            id: "p".into(),
            order_id: "o".into(),
            amount: Some(Money {
                amount_minor: 1999,
                currency: "USD".into(),
            }),
            status: pb::PaymentStatus::Failed.into(),
            failure_reason: pb::PaymentFailureReason::InsufficientFunds.into(),
            decline_code: "insufficient_funds".into(),
            card_brand: "visa".into(),
            card_last4: "9995".into(),
            refunds: vec![pb::Refund {
                id: "r".into(),
                status: pb::RefundStatus::Succeeded.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(payment.status, "FAILED");
        assert_eq!(
            payment.failure_reason.as_deref(),
            Some("INSUFFICIENT_FUNDS")
        );
        assert_eq!(payment.amount.amount, 1999);
        assert_eq!(payment.failure_message, None);
        assert_eq!(payment.refunds[0].status, "SUCCEEDED");
        assert_eq!(payment.refunds[0].reason, None);
        assert_eq!(payment.refunds[0].requested_by, None);
    }
}
