//! The storage port of the payment service and its PostgreSQL adapter.
//!
//! The port returns outcomes in domain terms ("this order already has a payment", "more than
//! is left to refund"); the service decides what each means for the caller. The invariants that
//! must hold under concurrency live in the database: one payment per order (unique key), one
//! capture per payment (unique partial index on the ledger), refunds within the amount (check
//! constraint and conditional update), one refund per idempotency key (unique key).

mod pg;

use async_trait::async_trait;
use uuid::Uuid;

pub use pg::PgPaymentRepo;

use crate::domain::{Failure, Money, Payment, Refund, RefundReason};
use crate::provider::PaymentMethod;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RepoError {
    fn from(error: sqlx::Error) -> Self {
        Self::Backend(error.into())
    }
}

/// A payment method to keep after tokenization (never the number or CVC).
#[derive(Clone, Debug)]
pub struct NewMethod {
    pub user_id: String,
    pub method: PaymentMethod,
}

/// A charge to record.
#[derive(Clone, Debug)]
pub struct NewCharge {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: String,
    pub amount: Money,
    pub token: String,
}

/// What recording a charge found.
#[derive(Clone, Debug)]
pub enum StartCharge {
    /// A new payment: PENDING with its payment method bound to it, or already FAILED when the
    /// token is unknown, someone else's or used.
    Created(Payment),
    /// The order's payment from an earlier Charge, as it is now.
    Existing(Payment),
}

/// How the provider settled a charge.
#[derive(Clone, Debug)]
pub enum ChargeOutcome {
    Captured { reference: String },
    Failed(Failure),
}

/// A refund to record.
#[derive(Clone, Debug)]
pub struct NewRefund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub idempotency_key: String,
    /// `None`: everything not yet refunded.
    pub amount_minor: Option<i64>,
    pub reason: RefundReason,
    pub note: String,
    pub requested_by: String,
}

/// What recording a refund found.
#[derive(Clone, Debug)]
pub enum StartRefund {
    /// The refund is PENDING and its amount counted against the payment.
    Reserved(Refund, Payment),
    /// A refund with this idempotency key exists already.
    Existing(Refund),
    NotFound,
    /// The payment did not succeed (or is PENDING): nothing to refund.
    NotCaptured(Payment),
    /// The amount is more than is left to refund (or nothing is left).
    Exceeds(Payment),
}

/// Payments, refunds, the ledger and the stored payment methods.
#[async_trait]
pub trait PaymentRepo: Send + Sync {
    async fn ping(&self) -> Result<(), RepoError>;
    async fn save_method(&self, method: &NewMethod) -> Result<(), RepoError>;
    /// Inserts the PENDING payment unless the order has one (then returns that), and binds the
    /// single-use token to it, all in one transaction.
    async fn start_charge(&self, charge: &NewCharge) -> Result<StartCharge, RepoError>;
    /// The payment method bound to a payment.
    async fn method_of(&self, payment_id: Uuid) -> Result<Option<PaymentMethod>, RepoError>;
    /// Settles a PENDING payment and, when captured, writes its ledger capture in the same
    /// transaction. A payment settled already stays as it is. Returns the payment as it is now.
    async fn finish_charge(
        &self,
        payment_id: Uuid,
        outcome: &ChargeOutcome,
        attempts: i32,
    ) -> Result<Payment, RepoError>;
    async fn payment(&self, id: Uuid) -> Result<Option<Payment>, RepoError>;
    /// Every payment of an order, oldest first.
    async fn payments_of_order(&self, order_id: Uuid) -> Result<Vec<Payment>, RepoError>;
    /// Up to `limit` payments PENDING and unchanged for at least `idle`, oldest first.
    async fn stranded(
        &self,
        idle: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, Money)>, RepoError>;
    async fn refund_by_key(&self, payment_id: Uuid, key: &str)
    -> Result<Option<Refund>, RepoError>;
    /// Counts the refund against the payment (a conditional update that keeps the total within
    /// the captured amount) and inserts it PENDING, in one transaction.
    async fn start_refund(&self, refund: &NewRefund) -> Result<StartRefund, RepoError>;
    /// Settles a PENDING refund: SUCCEEDED with its ledger row, or FAILED with its amount given
    /// back to the payment. A settled refund stays as it is.
    async fn finish_refund(
        &self,
        refund_id: Uuid,
        outcome: Result<(), String>,
    ) -> Result<(Refund, Payment), RepoError>;
}
