//! Events the payment service records in its outbox: `payment.succeeded`, `payment.failed` and
//! `payment.refunded`, with the protobuf payloads of `shopmesh.events.v1`. They are written in
//! the transaction that settles the payment or refund, so none is lost and none is sent for a
//! change that did not happen; the outbox relay (`shopmesh_platform::events::relay`) publishes them.

use prost::Message;
use shopmesh_contracts::pb::shopmesh::common::v1::Money as PbMoney;
use shopmesh_contracts::pb::shopmesh::events::v1 as pb;
use shopmesh_contracts::pb::shopmesh::payment::v1::{PaymentFailureReason, RefundReason};

use crate::domain::{self, Money, Payment, Refund};

/// One outbox row, ready to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The routing key, e.g. "payment.succeeded".
    pub event_type: &'static str,
    /// The payment id.
    pub aggregate_id: String,
    /// Type URL of the payload message.
    pub payload_type: &'static str,
    pub payload: Vec<u8>,
}

fn money(money: &Money) -> PbMoney {
    PbMoney {
        amount_minor: money.amount_minor,
        currency: money.currency.as_str().to_owned(),
    }
}

fn failure_reason(reason: domain::FailureReason) -> PaymentFailureReason {
    use domain::FailureReason as R;
    match reason {
        R::CardDeclined => PaymentFailureReason::CardDeclined,
        R::InsufficientFunds => PaymentFailureReason::InsufficientFunds,
        R::ExpiredCard => PaymentFailureReason::ExpiredCard,
        R::InvalidPaymentMethod => PaymentFailureReason::InvalidPaymentMethod,
        R::FraudSuspected => PaymentFailureReason::FraudSuspected,
        R::ProcessorError => PaymentFailureReason::ProcessorError,
    }
}

fn refund_reason(reason: domain::RefundReason) -> RefundReason {
    use domain::RefundReason as R;
    match reason {
        R::Unspecified => RefundReason::Unspecified,
        R::CustomerRequest => RefundReason::CustomerRequest,
        R::OrderCancelled => RefundReason::OrderCancelled,
        R::GoodsReturned => RefundReason::GoodsReturned,
        R::Duplicate => RefundReason::Duplicate,
        R::Fraudulent => RefundReason::Fraudulent,
        R::Other => RefundReason::Other,
    }
}

impl OutboxEvent {
    /// The event of a settled charge: succeeded or failed; `None` while it is PENDING.
    pub fn charge_settled(payment: &Payment) -> Option<Self> {
        let (payment_id, order_id) = (payment.id.to_string(), payment.order_id.to_string());
        if let Some(failure) = &payment.failure {
            return Some(Self {
                event_type: "payment.failed",
                aggregate_id: payment_id.clone(),
                payload_type: "type.googleapis.com/shopmesh.events.v1.PaymentFailed",
                payload: pb::PaymentFailed {
                    payment_id,
                    order_id,
                    user_id: payment.user_id.clone(),
                    amount: Some(money(&payment.amount)),
                    failure_reason: failure_reason(failure.reason).into(),
                    decline_code: failure.decline_code.clone(),
                    failure_message: failure.message.clone(),
                }
                .encode_to_vec(),
            });
        }
        payment.captured().then(|| Self {
            event_type: "payment.succeeded",
            aggregate_id: payment_id.clone(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.PaymentSucceeded",
            payload: pb::PaymentSucceeded {
                payment_id,
                order_id,
                user_id: payment.user_id.clone(),
                amount: Some(money(&payment.amount)),
            }
            .encode_to_vec(),
        })
    }

    /// The event of a succeeded refund; `refunded_minor` is the sum of the payment's succeeded
    /// refunds, this one included.
    pub fn refunded(payment: &Payment, refund: &Refund, refunded_minor: i64) -> Self {
        Self {
            event_type: "payment.refunded",
            aggregate_id: payment.id.to_string(),
            payload_type: "type.googleapis.com/shopmesh.events.v1.PaymentRefunded",
            payload: pb::PaymentRefunded {
                payment_id: payment.id.to_string(),
                refund_id: refund.id.to_string(),
                order_id: payment.order_id.to_string(),
                user_id: payment.user_id.clone(),
                amount: Some(money(&refund.amount)),
                refunded_amount: Some(PbMoney {
                    amount_minor: refunded_minor,
                    currency: payment.amount.currency.as_str().to_owned(),
                }),
                fully_refunded: refunded_minor >= payment.amount.amount_minor,
                reason: refund_reason(refund.reason).into(),
            }
            .encode_to_vec(),
        }
    }
}
