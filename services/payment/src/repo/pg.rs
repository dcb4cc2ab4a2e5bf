//! PostgreSQL adapter of [`PaymentRepo`]. All SQL of the service lives here.
//!
//! Lock order: a payment row before its refunds and ledger rows. Every transaction that touches
//! both follows it, so they cannot deadlock one another.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{
    Currency, Failure, FailureReason, Money, Payment, PaymentStatus, Refund, RefundReason,
    RefundStatus, Scenario,
};
use crate::events::OutboxEvent;
use crate::provider::PaymentMethod;
use crate::repo::{
    ChargeOutcome, NewCharge, NewMethod, NewRefund, PaymentRepo, RepoError, StartCharge,
    StartRefund,
};

type Tx = Transaction<'static, Postgres>;

/// Payments, refunds, the ledger and payment methods in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgPaymentRepo {
    pool: PgPool,
}

impl PgPaymentRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

const PAYMENT_COLUMNS: &str = "id, order_id, user_id, amount_minor, currency, refunded_minor, \
    status, failure_reason, decline_code, failure_message, provider_reference, card_brand, \
    card_last4, created_at, updated_at";

const REFUND_COLUMNS: &str = "id, payment_id, idempotency_key, amount_minor, currency, reason, \
    note, status, failure_message, requested_by, created_at";

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: Uuid,
    order_id: Uuid,
    user_id: String,
    amount_minor: i64,
    currency: String,
    refunded_minor: i64,
    status: String,
    failure_reason: Option<String>,
    decline_code: String,
    failure_message: String,
    provider_reference: String,
    card_brand: String,
    card_last4: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PaymentRow {
    fn payment(self, refunds: Vec<Refund>) -> Result<Payment, RepoError> {
        let status = PaymentStatus::parse(&self.status)
            .ok_or_else(|| RepoError::Corrupt(format!("payment status {}", self.status)))?;
        let failure = match self.failure_reason.as_deref() {
            None => None,
            Some(raw) => Some(Failure {
                reason: FailureReason::parse(raw)
                    .ok_or_else(|| RepoError::Corrupt(format!("failure reason {raw}")))?,
                decline_code: self.decline_code,
                message: self.failure_message,
            }),
        };
        Ok(Payment {
            id: self.id,
            order_id: self.order_id,
            user_id: self.user_id,
            amount: Money {
                amount_minor: self.amount_minor,
                currency: Currency::stored(self.currency),
            },
            refunded_minor: self.refunded_minor,
            status,
            failure,
            provider_reference: self.provider_reference,
            card_brand: self.card_brand,
            card_last4: self.card_last4,
            refunds,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: Uuid,
    payment_id: Uuid,
    idempotency_key: String,
    amount_minor: i64,
    currency: String,
    reason: String,
    note: String,
    status: String,
    failure_message: String,
    requested_by: String,
    created_at: DateTime<Utc>,
}

impl RefundRow {
    fn refund(self) -> Result<Refund, RepoError> {
        Ok(Refund {
            id: self.id,
            payment_id: self.payment_id,
            idempotency_key: self.idempotency_key,
            amount: Money {
                amount_minor: self.amount_minor,
                currency: Currency::stored(self.currency),
            },
            reason: RefundReason::parse(&self.reason)
                .ok_or_else(|| RepoError::Corrupt(format!("refund reason {}", self.reason)))?,
            note: self.note,
            status: RefundStatus::parse(&self.status)
                .ok_or_else(|| RepoError::Corrupt(format!("refund status {}", self.status)))?,
            failure_message: self.failure_message,
            requested_by: self.requested_by,
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MethodRow {
    token: String,
    brand: String,
    last4: String,
    exp_month: i32,
    exp_year: i32,
    scenario: String,
}

impl MethodRow {
    fn method(self) -> Result<PaymentMethod, RepoError> {
        Ok(PaymentMethod {
            scenario: Scenario::parse(&self.scenario)
                .ok_or_else(|| RepoError::Corrupt(format!("scenario {}", self.scenario)))?,
            token: self.token,
            brand: self.brand,
            last4: self.last4,
            exp_month: self.exp_month.unsigned_abs(),
            exp_year: self.exp_year,
        })
    }
}

async fn refunds_of<'e, E>(executor: E, payment_id: Uuid) -> Result<Vec<Refund>, RepoError>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = format!(
        "select {REFUND_COLUMNS} from refunds where payment_id = $1 order by created_at, id"
    );
    sqlx::query_as::<_, RefundRow>(&sql)
        .bind(payment_id)
        .fetch_all(executor)
        .await?
        .into_iter()
        .map(RefundRow::refund)
        .collect()
}

/// The payment with its refunds, read inside `tx`.
async fn payment_in(tx: &mut Tx, id: Uuid) -> Result<Option<Payment>, RepoError> {
    let sql = format!("select {PAYMENT_COLUMNS} from payments where id = $1");
    let Some(row) = sqlx::query_as::<_, PaymentRow>(&sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let refunds = refunds_of(&mut **tx, id).await?;
    row.payment(refunds).map(Some)
}

async fn payment_required(tx: &mut Tx, id: Uuid) -> Result<Payment, RepoError> {
    payment_in(tx, id)
        .await?
        .ok_or_else(|| RepoError::Corrupt(format!("payment {id} vanished")))
}

/// Records an event in the outbox, in the transaction of the change it describes.
async fn insert_outbox(tx: &mut Tx, event: &OutboxEvent) -> Result<(), RepoError> {
    sqlx::query(
        "insert into outbox (id, event_type, aggregate_id, payload_type, payload) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(event.event_type)
    .bind(&event.aggregate_id)
    .bind(event.payload_type)
    .bind(&event.payload)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn refund_in(tx: &mut Tx, id: Uuid) -> Result<Option<Refund>, RepoError> {
    let sql = format!("select {REFUND_COLUMNS} from refunds where id = $1");
    sqlx::query_as::<_, RefundRow>(&sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(RefundRow::refund)
        .transpose()
}

#[async_trait]
impl PaymentRepo for PgPaymentRepo {
    async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn save_method(&self, new: &NewMethod) -> Result<(), RepoError> {
        let m = &new.method;
        sqlx::query(
            "insert into payment_methods (token, user_id, brand, last4, exp_month, exp_year, scenario) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&m.token)
        .bind(&new.user_id)
        .bind(&m.brand)
        .bind(&m.last4)
        .bind(i32::try_from(m.exp_month).unwrap_or(0))
        .bind(m.exp_year)
        .bind(m.scenario.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(order_id = %charge.order_id))]
    async fn start_charge(&self, charge: &NewCharge) -> Result<StartCharge, RepoError> {
        let mut tx = self.pool.begin().await?;
        // The order id is the idempotency key: a concurrent insert for the same order waits for
        // the first one to commit, then does nothing.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "insert into payments (id, order_id, user_id, amount_minor, currency, status) \
             values ($1, $2, $3, $4, $5, 'PENDING') \
             on conflict (order_id) do nothing returning id",
        )
        .bind(charge.id)
        .bind(charge.order_id)
        .bind(&charge.user_id)
        .bind(charge.amount.amount_minor)
        .bind(charge.amount.currency.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            let sql = format!("select {PAYMENT_COLUMNS} from payments where order_id = $1");
            let row = sqlx::query_as::<_, PaymentRow>(&sql)
                .bind(charge.order_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| RepoError::Corrupt("the conflicting payment vanished".into()))?;
            let refunds = refunds_of(&self.pool, row.id).await?;
            return Ok(StartCharge::Existing(row.payment(refunds)?));
        }
        // A token is for one charge, by the user who tokenized it.
        let card: Option<(String, String)> = sqlx::query_as(
            "update payment_methods set payment_id = $1 \
             where token = $2 and user_id = $3 and payment_id is null \
             returning brand, last4",
        )
        .bind(charge.id)
        .bind(&charge.token)
        .bind(&charge.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        match card {
            Some((brand, last4)) => {
                sqlx::query("update payments set card_brand = $2, card_last4 = $3 where id = $1")
                    .bind(charge.id)
                    .bind(brand)
                    .bind(last4)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query(
                    "update payments set status = 'FAILED', failure_reason = 'INVALID_PAYMENT_METHOD', \
                     failure_message = $2, updated_at = now() where id = $1",
                )
                .bind(charge.id)
                .bind("the payment method is unknown or was already used")
                .execute(&mut *tx)
                .await?;
            }
        }
        let payment = payment_required(&mut tx, charge.id).await?;
        if let Some(event) = OutboxEvent::charge_settled(&payment) {
            insert_outbox(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(StartCharge::Created(payment))
    }

    async fn method_of(&self, payment_id: Uuid) -> Result<Option<PaymentMethod>, RepoError> {
        sqlx::query_as::<_, MethodRow>(
            "select token, brand, last4, exp_month, exp_year, scenario \
             from payment_methods where payment_id = $1",
        )
        .bind(payment_id)
        .fetch_optional(&self.pool)
        .await?
        .map(MethodRow::method)
        .transpose()
    }

    #[tracing::instrument(skip(self, outcome))]
    async fn finish_charge(
        &self,
        payment_id: Uuid,
        outcome: &ChargeOutcome,
        attempts: i32,
    ) -> Result<Payment, RepoError> {
        let (status, reason, code, message, reference) = match outcome {
            ChargeOutcome::Captured { reference } => {
                (PaymentStatus::Succeeded, None, "", "", reference.as_str())
            }
            ChargeOutcome::Failed(failure) => (
                PaymentStatus::Failed,
                Some(failure.reason.as_str()),
                failure.decline_code.as_str(),
                failure.message.as_str(),
                "",
            ),
        };
        let mut tx = self.pool.begin().await?;
        // Only a PENDING payment is settled: of concurrent drivers of one payment, one wins.
        let settled: Option<(i64, String)> = sqlx::query_as(
            "update payments set status = $2, failure_reason = $3, decline_code = $4, \
             failure_message = $5, provider_reference = $6, attempts = attempts + $7, \
             updated_at = now() \
             where id = $1 and status = 'PENDING' returning amount_minor, currency",
        )
        .bind(payment_id)
        .bind(status.as_str())
        .bind(reason)
        .bind(code)
        .bind(message)
        .bind(reference)
        .bind(attempts)
        .fetch_optional(&mut *tx)
        .await?;
        let was_pending = settled.is_some();
        if let Some((amount_minor, currency)) = settled
            && status == PaymentStatus::Succeeded
        {
            // The unique partial index refuses a second capture of one payment.
            sqlx::query(
                "insert into ledger_entries (payment_id, kind, amount_minor, currency) \
                 values ($1, 'capture', $2, $3)",
            )
            .bind(payment_id)
            .bind(amount_minor)
            .bind(currency)
            .execute(&mut *tx)
            .await?;
        }
        let payment = payment_required(&mut tx, payment_id).await?;
        if was_pending && let Some(event) = OutboxEvent::charge_settled(&payment) {
            insert_outbox(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(payment)
    }

    async fn payment(&self, id: Uuid) -> Result<Option<Payment>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let payment = payment_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(payment)
    }

    async fn payments_of_order(&self, order_id: Uuid) -> Result<Vec<Payment>, RepoError> {
        let sql = format!(
            "select {PAYMENT_COLUMNS} from payments where order_id = $1 order by created_at, id"
        );
        let rows = sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(order_id)
            .fetch_all(&self.pool)
            .await?;
        let mut payments = Vec::with_capacity(rows.len());
        for row in rows {
            let refunds = refunds_of(&self.pool, row.id).await?;
            payments.push(row.payment(refunds)?);
        }
        Ok(payments)
    }

    async fn stranded(
        &self,
        idle: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, Money)>, RepoError> {
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let rows: Vec<(Uuid, i64, String)> = sqlx::query_as(
            "select id, amount_minor, currency from payments \
             where status = 'PENDING' and updated_at <= now() - make_interval(secs => $1 / 1000.0) \
             order by updated_at limit $2",
        )
        .bind(idle_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, amount_minor, currency)| {
                (
                    id,
                    Money {
                        amount_minor,
                        currency: Currency::stored(currency),
                    },
                )
            })
            .collect())
    }

    async fn refund_by_key(
        &self,
        payment_id: Uuid,
        key: &str,
    ) -> Result<Option<Refund>, RepoError> {
        let sql = format!(
            "select {REFUND_COLUMNS} from refunds where payment_id = $1 and idempotency_key = $2"
        );
        sqlx::query_as::<_, RefundRow>(&sql)
            .bind(payment_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(RefundRow::refund)
            .transpose()
    }

    #[tracing::instrument(skip_all, fields(payment_id = %refund.payment_id))]
    async fn start_refund(&self, refund: &NewRefund) -> Result<StartRefund, RepoError> {
        let mut tx = self.pool.begin().await?;
        // The payment row is locked first (the lock order of this module), so that what is
        // left to refund cannot move until this refund is counted or given up.
        let locked: Option<(i64, i64, String, String)> = sqlx::query_as(
            "select amount_minor, refunded_minor, status, currency from payments \
             where id = $1 for update",
        )
        .bind(refund.payment_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((amount_minor, refunded_minor, status, currency)) = locked else {
            return Ok(StartRefund::NotFound);
        };
        let captured = matches!(
            PaymentStatus::parse(&status),
            Some(PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded)
        );
        let rest = amount_minor.saturating_sub(refunded_minor);
        let wanted = refund.amount_minor.unwrap_or(rest);
        if !captured {
            let payment = payment_required(&mut tx, refund.payment_id).await?;
            let verdict = if status == PaymentStatus::Refunded.as_str() {
                StartRefund::Exceeds(payment)
            } else {
                StartRefund::NotCaptured(payment)
            };
            return Ok(verdict);
        }
        if wanted <= 0 || wanted > rest {
            let payment = payment_required(&mut tx, refund.payment_id).await?;
            return Ok(StartRefund::Exceeds(payment));
        }
        // The conditional update is the guarantee (the lock above only makes its outcome
        // known in advance): the total refunded never passes the captured amount, and the check
        // constraint backs it.
        let counted = sqlx::query(
            "update payments set refunded_minor = refunded_minor + $2, \
               status = case when refunded_minor + $2 = amount_minor \
                   then 'REFUNDED' else 'PARTIALLY_REFUNDED' end, \
               updated_at = now() \
             where id = $1 and status in ('SUCCEEDED', 'PARTIALLY_REFUNDED') \
               and refunded_minor + $2 <= amount_minor",
        )
        .bind(refund.payment_id)
        .bind(wanted)
        .execute(&mut *tx)
        .await?;
        if counted.rows_affected() == 0 {
            let payment = payment_required(&mut tx, refund.payment_id).await?;
            return Ok(StartRefund::Exceeds(payment));
        }
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "insert into refunds (id, payment_id, idempotency_key, amount_minor, currency, reason, \
               note, status, requested_by) \
             values ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8) \
             on conflict (payment_id, idempotency_key) do nothing returning id",
        )
        .bind(refund.id)
        .bind(refund.payment_id)
        .bind(&refund.idempotency_key)
        .bind(wanted)
        .bind(&currency)
        .bind(refund.reason.as_str())
        .bind(&refund.note)
        .bind(&refund.requested_by)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            // The same key was used by a refund that committed while this one waited for the
            // lock: that refund is the answer, and this one's count is undone.
            tx.rollback().await?;
            return match self
                .refund_by_key(refund.payment_id, &refund.idempotency_key)
                .await?
            {
                Some(existing) => Ok(StartRefund::Existing(existing)),
                None => Err(RepoError::Corrupt("the conflicting refund vanished".into())),
            };
        }
        let payment = payment_required(&mut tx, refund.payment_id).await?;
        let created = refund_in(&mut tx, refund.id)
            .await?
            .ok_or_else(|| RepoError::Corrupt("the new refund vanished".into()))?;
        tx.commit().await?;
        Ok(StartRefund::Reserved(created, payment))
    }

    #[tracing::instrument(skip(self, outcome))]
    async fn finish_refund(
        &self,
        refund_id: Uuid,
        outcome: Result<(), String>,
    ) -> Result<(Refund, Payment), RepoError> {
        let mut tx = self.pool.begin().await?;
        let payment_id: Uuid = sqlx::query_scalar("select payment_id from refunds where id = $1")
            .bind(refund_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| RepoError::Corrupt(format!("refund {refund_id} vanished")))?;
        sqlx::query("select 1 from payments where id = $1 for update")
            .bind(payment_id)
            .execute(&mut *tx)
            .await?;
        let (status, message) = match &outcome {
            Ok(()) => (RefundStatus::Succeeded, ""),
            Err(message) => (RefundStatus::Failed, message.as_str()),
        };
        // Only a PENDING refund is settled: of concurrent drivers of one refund, one wins.
        let settled: Option<(i64, String)> = sqlx::query_as(
            "update refunds set status = $2, failure_message = $3 \
             where id = $1 and status = 'PENDING' returning amount_minor, currency",
        )
        .bind(refund_id)
        .bind(status.as_str())
        .bind(message)
        .fetch_optional(&mut *tx)
        .await?;
        let refunded_now = settled.is_some() && outcome.is_ok();
        if let Some((amount_minor, currency)) = settled {
            if outcome.is_ok() {
                sqlx::query(
                    "insert into ledger_entries (payment_id, refund_id, kind, amount_minor, currency) \
                     values ($1, $2, 'refund', $3, $4)",
                )
                .bind(payment_id)
                .bind(refund_id)
                .bind(amount_minor)
                .bind(currency)
                .execute(&mut *tx)
                .await?;
            } else {
                // The provider did not give the money back: it no longer counts as refunded.
                sqlx::query(
                    "update payments set refunded_minor = refunded_minor - $2, \
                       status = case when refunded_minor - $2 = 0 \
                           then 'SUCCEEDED' else 'PARTIALLY_REFUNDED' end, \
                       updated_at = now() \
                     where id = $1",
                )
                .bind(payment_id)
                .bind(amount_minor)
                .execute(&mut *tx)
                .await?;
            }
        }
        let refund = refund_in(&mut tx, refund_id)
            .await?
            .ok_or_else(|| RepoError::Corrupt(format!("refund {refund_id} vanished")))?;
        let payment = payment_required(&mut tx, payment_id).await?;
        if refunded_now {
            let succeeded: i64 = sqlx::query_scalar(
                "select coalesce(sum(amount_minor), 0)::bigint from refunds \
                 where payment_id = $1 and status = 'SUCCEEDED'",
            )
            .bind(payment_id)
            .fetch_one(&mut *tx)
            .await?;
            insert_outbox(
                &mut tx,
                &OutboxEvent::refunded(&payment, &refund, succeeded),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((refund, payment))
    }
}
