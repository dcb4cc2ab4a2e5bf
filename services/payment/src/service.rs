//! The payment use cases: tokenize a card, charge an order once, refund within what was
//! captured, and show payments to those who may see them.
//!
//! Provider calls run in a task of their own: a caller that goes away (or whose deadline runs
//! out) does not stop a charge half way. The caller waits for the task at most
//! `provider_wait` (less when its deadline is nearer) and gets the payment as PENDING past
//! that; the task settles it meanwhile, and a repeated Charge or GetPayment shows the result.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::config::PaymentConfig;
use crate::domain::{
    Card, ChargeInput, Failure, FailureReason, Money, Payment, PaymentStatus, Refund, RefundInput,
    RefundStatus, parse_uuid,
};
use crate::error::Error;
use crate::provider::{ChargeResult, PaymentMethod, PaymentProvider, ProviderError};
use crate::repo::{
    ChargeOutcome, NewCharge, NewMethod, NewRefund, PaymentRepo, StartCharge, StartRefund,
};

/// What is kept back from the caller's deadline so that the answer still reaches it in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// Who asks to see payments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// Another service of the mesh the policy admits (the order service): sees every payment.
    Service,
    /// An admin: sees every payment.
    Admin,
    /// A customer: sees their own payments only.
    Customer(String),
}

impl Viewer {
    fn may_see(&self, payment: &Payment) -> bool {
        match self {
            Self::Service | Self::Admin => true,
            Self::Customer(user_id) => *user_id == payment.user_id,
        }
    }
}

/// A tokenized card as TokenizeCard answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenized {
    pub token: String,
    pub brand: String,
    pub last4: String,
}

/// The raw card fields of TokenizeCard. Its `Debug` shows none of them.
pub struct CardDetails<'a> {
    pub number: &'a str,
    pub exp_month: i32,
    pub exp_year: i32,
    pub cvc: &'a str,
}

impl std::fmt::Debug for CardDetails<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardDetails(***)")
    }
}

/// The payment use cases over a repository and a provider.
#[derive(Clone)]
pub struct PaymentService {
    repo: Arc<dyn PaymentRepo>,
    provider: Arc<dyn PaymentProvider>,
    config: Arc<PaymentConfig>,
}

impl PaymentService {
    pub fn new(
        repo: Arc<dyn PaymentRepo>,
        provider: Arc<dyn PaymentProvider>,
        config: PaymentConfig,
    ) -> Self {
        Self {
            repo,
            provider,
            config: Arc::new(config),
        }
    }

    /// Whether the database answers.
    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.repo.ping().await?)
    }

    /// Checks the card and keeps only what may be kept (brand, last four, expiry, scenario)
    /// under a new single-use token of `user_id`.
    #[tracing::instrument(skip_all)]
    pub async fn tokenize(&self, user_id: &str, card: CardDetails<'_>) -> Result<Tokenized, Error> {
        let today = chrono::Utc::now().date_naive();
        let card = Card::parse(card.number, card.exp_month, card.exp_year, card.cvc, today)?;
        let token = self.provider.tokenize(&card).await.map_err(unavailable)?;
        let method = PaymentMethod {
            token,
            brand: card.brand.as_str().to_owned(),
            last4: card.last4,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            scenario: card.scenario,
        };
        self.repo
            .save_method(&NewMethod {
                user_id: user_id.to_owned(),
                method: method.clone(),
            })
            .await?;
        Ok(Tokenized {
            token: method.token,
            brand: method.brand,
            last4: method.last4,
        })
    }

    /// Charges an order once. A repeat returns the order's payment as it is (driving a PENDING
    /// one to its end with the same provider key), ALREADY_EXISTS when it names another amount.
    #[tracing::instrument(skip(self, token, amount))]
    pub async fn charge(
        &self,
        order_id: &str,
        user_id: &str,
        amount: Option<(i64, &str)>,
        token: &str,
        budget: Option<Duration>,
    ) -> Result<Payment, Error> {
        let input = ChargeInput::parse(order_id, user_id, amount, token)?;
        let new = NewCharge {
            id: Uuid::now_v7(),
            order_id: input.order_id,
            user_id: input.user_id,
            amount: input.amount,
            token: input.payment_method_token,
        };
        let payment = match self.repo.start_charge(&new).await? {
            StartCharge::Created(payment) => payment,
            StartCharge::Existing(payment) => {
                if payment.amount != new.amount {
                    return Err(Error::AlreadyExists(format!(
                        "order {} was already charged {} {}",
                        payment.order_id, payment.amount.amount_minor, payment.amount.currency
                    )));
                }
                payment
            }
        };
        if payment.status != PaymentStatus::Pending {
            return Ok(payment);
        }
        let wait = self.wait(budget);
        let driver = self.clone();
        let (id, amount) = (payment.id, payment.amount.clone());
        let task = tokio::spawn(async move {
            let settled = driver.drive_charge(id, amount).await;
            // Nobody may be waiting any more: the failure is logged here, where it is known.
            if let Err(err) = &settled {
                tracing::error!(payment_id = %id, error = %err, "settling a charge failed");
            }
            settled
        });
        match tokio::time::timeout(wait, task).await {
            Ok(joined) => joined.map_err(|err| Error::Internal(err.into()))?,
            Err(_) => Ok(payment),
        }
    }

    fn wait(&self, budget: Option<Duration>) -> Duration {
        provider_wait(self.config.provider_wait, budget)
    }

    /// The backoff before provider attempt `attempt + 1`.
    fn backoff(&self, attempt: u32) -> Duration {
        self.config
            .provider_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
    }

    /// Asks the provider (retrying transient failures, always with the payment id as the
    /// idempotency key) and settles the payment with its answer.
    async fn drive_charge(&self, payment_id: Uuid, amount: Money) -> Result<Payment, Error> {
        let Some(method) = self.repo.method_of(payment_id).await? else {
            let failure = Failure::new(
                FailureReason::InvalidPaymentMethod,
                "",
                "the payment method is unknown or was already used",
            );
            return Ok(self
                .repo
                .finish_charge(payment_id, &ChargeOutcome::Failed(failure), 0)
                .await?);
        };
        let key = payment_id.to_string();
        let mut attempts = 0u32;
        let outcome = loop {
            attempts += 1;
            match self.provider.charge(&key, &method, &amount).await {
                Ok(ChargeResult::Captured { reference }) => {
                    break ChargeOutcome::Captured { reference };
                }
                Ok(ChargeResult::Declined(failure)) => break ChargeOutcome::Failed(failure),
                Err(ProviderError::Transient(why)) => {
                    tracing::warn!(%payment_id, attempts, error = %why, "provider charge failed");
                    if attempts >= self.config.provider_attempts {
                        break ChargeOutcome::Failed(Failure::new(
                            FailureReason::ProcessorError,
                            "processing_error",
                            "the payment could not be processed, try again later",
                        ));
                    }
                    tokio::time::sleep(self.backoff(attempts)).await;
                }
            }
        };
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        Ok(self
            .repo
            .finish_charge(payment_id, &outcome, attempts)
            .await?)
    }

    /// Drives payments left PENDING (a crash between recording a charge and settling it, a task
    /// lost at shutdown) to their end, with the same provider key, so that the money the
    /// provider may have captured is recorded and the order saga sees an outcome. Returns how
    /// many were settled.
    pub async fn recover_stranded(&self) -> Result<usize, Error> {
        let stranded = self.repo.stranded(self.config.recover_after, 100).await?;
        let mut settled = 0;
        for (payment_id, amount) in stranded {
            let payment = self.drive_charge(payment_id, amount).await?;
            if payment.status != PaymentStatus::Pending {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Gives back part or all of a captured payment, once per idempotency key.
    #[tracing::instrument(skip(self, input), fields(payment_id = %input.payment_id))]
    pub async fn refund(
        &self,
        input: RefundInput,
        requested_by: &str,
        budget: Option<Duration>,
    ) -> Result<(Refund, Payment), Error> {
        let payment = self
            .repo
            .payment(input.payment_id)
            .await?
            .ok_or(Error::NotFound("payment"))?;
        if let Some(amount) = &input.amount
            && amount.currency != payment.amount.currency
        {
            return Err(Error::field(
                "amount.currency",
                format!("must be the payment's currency {}", payment.amount.currency),
            ));
        }
        if let Some(existing) = self
            .repo
            .refund_by_key(input.payment_id, &input.idempotency_key)
            .await?
        {
            return self.repeated_refund(existing, &input, budget).await;
        }
        let new = NewRefund {
            id: Uuid::now_v7(),
            payment_id: input.payment_id,
            idempotency_key: input.idempotency_key.clone(),
            amount_minor: input.amount.as_ref().map(|m| m.amount_minor),
            reason: input.reason,
            note: input.note.clone(),
            requested_by: requested_by.to_owned(),
        };
        match self.repo.start_refund(&new).await? {
            StartRefund::Reserved(refund, payment) => {
                self.settle_refund(refund, payment, budget).await
            }
            StartRefund::Existing(existing) => self.repeated_refund(existing, &input, budget).await,
            StartRefund::NotFound => Err(Error::NotFound("payment")),
            StartRefund::NotCaptured(payment) => Err(Error::FailedPrecondition(format!(
                "the payment did not succeed (it is {}): there is nothing to refund",
                payment.status.as_str()
            ))),
            StartRefund::Exceeds(payment) => Err(Error::FailedPrecondition(format!(
                "the amount exceeds what is left to refund ({} {})",
                payment.refundable_minor(),
                payment.amount.currency
            ))),
        }
    }

    /// A refund asked again with its idempotency key: the first one, driven on if PENDING.
    async fn repeated_refund(
        &self,
        existing: Refund,
        input: &RefundInput,
        budget: Option<Duration>,
    ) -> Result<(Refund, Payment), Error> {
        if let Some(amount) = &input.amount
            && *amount != existing.amount
        {
            return Err(Error::AlreadyExists(
                "this idempotency key was used for a refund of another amount".into(),
            ));
        }
        let payment = self
            .repo
            .payment(existing.payment_id)
            .await?
            .ok_or(Error::NotFound("payment"))?;
        if existing.status == RefundStatus::Pending {
            return self.settle_refund(existing, payment, budget).await;
        }
        Ok((existing, payment))
    }

    async fn settle_refund(
        &self,
        refund: Refund,
        payment: Payment,
        budget: Option<Duration>,
    ) -> Result<(Refund, Payment), Error> {
        let wait = self.wait(budget);
        let driver = self.clone();
        let (pending, reference) = (refund.clone(), payment.provider_reference.clone());
        let task = tokio::spawn(async move {
            let refund_id = pending.id;
            let settled = driver.drive_refund(pending, reference).await;
            if let Err(err) = &settled {
                tracing::error!(%refund_id, error = %err, "settling a refund failed");
            }
            settled
        });
        match tokio::time::timeout(wait, task).await {
            Ok(joined) => joined.map_err(|err| Error::Internal(err.into()))?,
            Err(_) => Ok((refund, payment)),
        }
    }

    /// Asks the provider to give the money back (retrying transient failures with one key per
    /// payment and idempotency key) and settles the refund with its answer.
    async fn drive_refund(
        &self,
        refund: Refund,
        reference: String,
    ) -> Result<(Refund, Payment), Error> {
        let key = format!("{}:{}", refund.payment_id, refund.idempotency_key);
        let mut attempts = 0u32;
        let outcome = loop {
            attempts += 1;
            match self.provider.refund(&key, &reference, &refund.amount).await {
                Ok(_) => break Ok(()),
                Err(ProviderError::Transient(why)) => {
                    tracing::warn!(refund_id = %refund.id, attempts, error = %why, "provider refund failed");
                    if attempts >= self.config.provider_attempts {
                        break Err("the refund could not be processed, try again later".to_owned());
                    }
                    tokio::time::sleep(self.backoff(attempts)).await;
                }
            }
        };
        Ok(self.repo.finish_refund(refund.id, outcome).await?)
    }

    /// One payment, NOT_FOUND when the viewer may not see it (existence does not leak).
    #[tracing::instrument(skip(self))]
    pub async fn payment(&self, viewer: &Viewer, id: &str) -> Result<Payment, Error> {
        let id = parse_uuid("payment_id", id)?;
        self.repo
            .payment(id)
            .await?
            .filter(|payment| viewer.may_see(payment))
            .ok_or(Error::NotFound("payment"))
    }

    /// The payments of an order. A customer who has none on it gets NOT_FOUND, whether the
    /// order is someone else's, unknown or was never charged, so that the answer says nothing
    /// about other customers' orders.
    #[tracing::instrument(skip(self))]
    pub async fn payments_of_order(
        &self,
        viewer: &Viewer,
        order_id: &str,
    ) -> Result<Vec<Payment>, Error> {
        let order_id = parse_uuid("order_id", order_id)?;
        let payments = self.repo.payments_of_order(order_id).await?;
        match viewer {
            Viewer::Customer(_) => {
                let own: Vec<Payment> = payments
                    .into_iter()
                    .filter(|payment| viewer.may_see(payment))
                    .collect();
                if own.is_empty() {
                    Err(Error::NotFound("payments of the order"))
                } else {
                    Ok(own)
                }
            }
            Viewer::Service | Viewer::Admin => Ok(payments),
        }
    }
}

/// How long a call waits for the provider: the configured wait, shortened by what is left of
/// the caller's deadline (less a margin for the answer to travel back).
fn provider_wait(configured: Duration, budget: Option<Duration>) -> Duration {
    budget.map_or(configured, |budget| {
        configured.min(budget.saturating_sub(DEADLINE_MARGIN))
    })
}

fn unavailable(error: ProviderError) -> Error {
    tracing::warn!(error = %error, "payment provider unavailable");
    Error::Unavailable("the payment provider is unavailable, try again".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_deadline_shortens_the_wait_for_the_provider() {
        let configured = Duration::from_secs(8);
        assert_eq!(provider_wait(configured, None), configured);
        assert_eq!(
            provider_wait(configured, Some(Duration::from_secs(2))),
            Duration::from_secs(2) - DEADLINE_MARGIN
        );
        assert_eq!(
            provider_wait(configured, Some(Duration::from_secs(60))),
            configured
        );
        assert_eq!(
            provider_wait(configured, Some(Duration::from_millis(100))),
            Duration::ZERO
        );
    }
}
