//! The gRPC face of the payment service: converts protobuf messages to domain calls and back,
//! and decides who is asking.
//!
//! Access is decided before a call reaches these handlers, by the platform's method guard from
//! each RPC's policy in payment.proto: Charge admits the order service only, Refund an admin or
//! the order service, TokenizeCard any signed-in user, and the reads a user or the order
//! service. The handlers check the caller again where they act on it, and decide ownership: a
//! customer sees only their own payments.

use std::time::Duration;

use shopmesh_contracts::pb::shopmesh::common::v1::Money as PbMoney;
use shopmesh_contracts::pb::shopmesh::payment::v1::{
    self as pb, payment_service_server::PaymentService as PaymentApi,
};
use shopmesh_platform::grpc::{Deadline, calling_service, identity};
use shopmesh_platform::time::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{
    FailureReason, Money, Payment, PaymentStatus, Refund, RefundInput, RefundReason, RefundStatus,
};
use crate::error::Error;
use crate::service::{CardDetails, PaymentService, Viewer};

/// The one service the contracts admit to charge, and to see every payment.
const ORDER_SERVICE: &str = "order";

fn money_pb(money: &Money) -> PbMoney {
    PbMoney {
        amount_minor: money.amount_minor,
        currency: money.currency.as_str().to_owned(),
    }
}

fn status_pb(status: PaymentStatus) -> pb::PaymentStatus {
    match status {
        PaymentStatus::Pending => pb::PaymentStatus::Pending,
        PaymentStatus::Succeeded => pb::PaymentStatus::Succeeded,
        PaymentStatus::Failed => pb::PaymentStatus::Failed,
        PaymentStatus::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
    }
}

fn failure_pb(reason: FailureReason) -> pb::PaymentFailureReason {
    match reason {
        FailureReason::CardDeclined => pb::PaymentFailureReason::CardDeclined,
        FailureReason::InsufficientFunds => pb::PaymentFailureReason::InsufficientFunds,
        FailureReason::ExpiredCard => pb::PaymentFailureReason::ExpiredCard,
        FailureReason::InvalidPaymentMethod => pb::PaymentFailureReason::InvalidPaymentMethod,
        FailureReason::FraudSuspected => pb::PaymentFailureReason::FraudSuspected,
        FailureReason::ProcessorError => pb::PaymentFailureReason::ProcessorError,
    }
}

fn refund_status_pb(status: RefundStatus) -> pb::RefundStatus {
    match status {
        RefundStatus::Pending => pb::RefundStatus::Pending,
        RefundStatus::Succeeded => pb::RefundStatus::Succeeded,
        RefundStatus::Failed => pb::RefundStatus::Failed,
    }
}

fn reason_pb(reason: RefundReason) -> pb::RefundReason {
    match reason {
        RefundReason::Unspecified => pb::RefundReason::Unspecified,
        RefundReason::CustomerRequest => pb::RefundReason::CustomerRequest,
        RefundReason::OrderCancelled => pb::RefundReason::OrderCancelled,
        RefundReason::GoodsReturned => pb::RefundReason::GoodsReturned,
        RefundReason::Duplicate => pb::RefundReason::Duplicate,
        RefundReason::Fraudulent => pb::RefundReason::Fraudulent,
        RefundReason::Other => pb::RefundReason::Other,
    }
}

/// A refund reason as sent; `None` for a number the contract does not know.
fn reason(raw: i32) -> Option<RefundReason> {
    Some(match pb::RefundReason::try_from(raw).ok()? {
        pb::RefundReason::Unspecified => RefundReason::Unspecified,
        pb::RefundReason::CustomerRequest => RefundReason::CustomerRequest,
        pb::RefundReason::OrderCancelled => RefundReason::OrderCancelled,
        pb::RefundReason::GoodsReturned => RefundReason::GoodsReturned,
        pb::RefundReason::Duplicate => RefundReason::Duplicate,
        pb::RefundReason::Fraudulent => RefundReason::Fraudulent,
        pb::RefundReason::Other => RefundReason::Other,
    })
}

fn refund_pb(refund: &Refund) -> pb::Refund {
    pb::Refund {
        id: refund.id.to_string(),
        payment_id: refund.payment_id.to_string(),
        amount: Some(money_pb(&refund.amount)),
        reason: reason_pb(refund.reason).into(),
        note: refund.note.clone(),
        status: refund_status_pb(refund.status).into(),
        failure_message: refund.failure_message.clone(),
        requested_by: refund.requested_by.clone(),
        create_time: Some(timestamp(refund.created_at)),
    }
}

fn payment_pb(payment: &Payment) -> pb::Payment {
    let failure = payment.failure.as_ref();
    pb::Payment {
        id: payment.id.to_string(),
        order_id: payment.order_id.to_string(),
        user_id: payment.user_id.clone(),
        amount: Some(money_pb(&payment.amount)),
        refunded_amount: Some(PbMoney {
            amount_minor: payment.refunded_minor,
            currency: payment.amount.currency.as_str().to_owned(),
        }),
        status: status_pb(payment.status).into(),
        failure_reason: failure
            .map_or(pb::PaymentFailureReason::Unspecified, |f| {
                failure_pb(f.reason)
            })
            .into(),
        decline_code: failure.map(|f| f.decline_code.clone()).unwrap_or_default(),
        failure_message: failure.map(|f| f.message.clone()).unwrap_or_default(),
        provider_reference: payment.provider_reference.clone(),
        refunds: payment.refunds.iter().map(refund_pb).collect(),
        create_time: Some(timestamp(payment.created_at)),
        update_time: Some(timestamp(payment.updated_at)),
        card_brand: payment.card_brand.clone(),
        card_last4: payment.card_last4.clone(),
    }
}

fn amount(money: Option<&PbMoney>) -> Option<(i64, &str)> {
    money.map(|m| (m.amount_minor, m.currency.as_str()))
}

fn from_order_service<T>(request: &Request<T>) -> bool {
    calling_service(request).is_some_and(|service| service.name == ORDER_SERVICE)
}

/// What is left of the caller's deadline.
fn budget<T>(request: &Request<T>) -> Option<Duration> {
    request
        .extensions()
        .get::<Deadline>()
        .map(Deadline::remaining)
}

/// Who is asking to see payments: the order service sees all (whatever user it forwards), an
/// admin all, anyone else their own. The gateway's identity grants nothing by itself.
fn viewer<T>(request: &Request<T>) -> Result<Viewer, Status> {
    if from_order_service(request) {
        return Ok(Viewer::Service);
    }
    let caller = identity(request)?;
    Ok(if caller.is_admin() {
        Viewer::Admin
    } else {
        Viewer::Customer(caller.user_id)
    })
}

/// Implements `shopmesh.payment.v1.PaymentService`.
#[derive(Clone)]
pub struct PaymentGrpc {
    payments: PaymentService,
}

impl PaymentGrpc {
    pub fn new(payments: PaymentService) -> Self {
        Self { payments }
    }
}

#[tonic::async_trait]
impl PaymentApi for PaymentGrpc {
    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        if !from_order_service(&request) {
            return Err(Status::permission_denied(
                "only the order service may charge",
            ));
        }
        let budget = budget(&request);
        let req = request.into_inner();
        let payment = self
            .payments
            .charge(
                &req.order_id,
                &req.user_id,
                amount(req.amount.as_ref()),
                &req.payment_method_token,
                budget,
            )
            .await?;
        Ok(Response::new(pb::ChargeResponse {
            payment: Some(payment_pb(&payment)),
        }))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let admin = identity(&request).ok().filter(|caller| caller.is_admin());
        if admin.is_none() && !from_order_service(&request) {
            return Err(Status::permission_denied("admin role required"));
        }
        // The admin who asked, directly or through the order service; empty for the service.
        let requested_by = admin.map(|caller| caller.user_id).unwrap_or_default();
        let budget = budget(&request);
        let req = request.into_inner();
        let input = RefundInput::parse(
            &req.payment_id,
            amount(req.amount.as_ref()),
            reason(req.reason),
            &req.note,
            &req.idempotency_key,
        )
        .map_err(Error::from)?;
        let (refund, payment) = self.payments.refund(input, &requested_by, budget).await?;
        Ok(Response::new(pb::RefundResponse {
            refund: Some(refund_pb(&refund)),
            payment: Some(payment_pb(&payment)),
        }))
    }

    async fn tokenize_card(
        &self,
        request: Request<pb::TokenizeCardRequest>,
    ) -> Result<Response<pb::TokenizeCardResponse>, Status> {
        let caller = identity(&request)?;
        let req = request.into_inner();
        let tokenized = self
            .payments
            .tokenize(
                &caller.user_id,
                CardDetails {
                    number: &req.card_number,
                    exp_month: req.exp_month,
                    exp_year: req.exp_year,
                    cvc: &req.cvc,
                },
            )
            .await?;
        Ok(Response::new(pb::TokenizeCardResponse {
            payment_method_token: tokenized.token,
            brand: tokenized.brand,
            last4: tokenized.last4,
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let viewer = viewer(&request)?;
        let payment = self
            .payments
            .payment(&viewer, &request.into_inner().payment_id)
            .await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment_pb(&payment)),
        }))
    }

    async fn list_payments_by_order(
        &self,
        request: Request<pb::ListPaymentsByOrderRequest>,
    ) -> Result<Response<pb::ListPaymentsByOrderResponse>, Status> {
        let viewer = viewer(&request)?;
        let payments = self
            .payments
            .payments_of_order(&viewer, &request.into_inner().order_id)
            .await?;
        Ok(Response::new(pb::ListPaymentsByOrderResponse {
            payments: payments.iter().map(payment_pb).collect(),
        }))
    }
}
