//! The order database. Every state change is a conditional update (on the status or saga step
//! the caller saw) inside a transaction that also writes its history and saga-log rows, so two
//! drivers of one saga, or a saga and a customer, can never both apply a change.
//!
//! Every status change also writes its event to the outbox in that transaction, and only when
//! its conditional update changed the row: the insert in [`OrderRepo::insert`] (order.created)
//! and `apply_status`, through which every other status change goes (order.paid,
//! order.cancelled, order.shipped, order.completed, order.refunded). A repeated call that
//! changes nothing writes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use shopmesh_contracts::pb::shopmesh::order::v1::{OrderStatus, SagaStep};

use crate::events::OutboxEvent;

/// A shipping address as stored (JSON) with the order.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct StoredAddress {
    pub recipient: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
    pub phone: String,
}

impl From<PostalAddress> for StoredAddress {
    fn from(a: PostalAddress) -> Self {
        Self {
            recipient: a.recipient,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            region: a.region,
            postal_code: a.postal_code,
            country: a.country,
            phone: a.phone,
        }
    }
}

impl From<StoredAddress> for PostalAddress {
    fn from(a: StoredAddress) -> Self {
        Self {
            recipient: a.recipient,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            region: a.region,
            postal_code: a.postal_code,
            country: a.country,
            phone: a.phone,
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: String,
    pub tier: i16,
    pub status: i16,
    pub idempotency_key: String,
    pub currency: String,
    pub total_minor: i64,
    pub refunded_minor: i64,
    pub shipping_address: Json<StoredAddress>,
    pub payment_method_token: String,
    pub payment_id: String,
    pub shipment_id: String,
    pub cancellation_reason: i16,
    pub cancellation_note: String,
    pub saga_step: i16,
    pub charge_attempted: bool,
    pub restock: bool,
    pub cancel_requested: bool,
    pub cancel_actor: String,
    pub cancel_reason: i16,
    pub saga_attempts: i32,
    /// The x-request-id of the PlaceOrder call, for the events the saga writes.
    pub correlation_id: String,
    /// The x-request-id of the CancelOrder call the saga has yet to carry out.
    pub cancel_correlation_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LineRow {
    pub product_id: String,
    pub sku: String,
    pub product_name: String,
    pub unit_price_minor: i64,
    pub quantity: i32,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub from_status: i16,
    pub to_status: i16,
    pub actor_id: String,
    pub note: String,
    pub changed_at: DateTime<Utc>,
}

/// An order with its lines and status history.
#[derive(Clone, Debug)]
pub struct FullOrder {
    pub order: OrderRow,
    pub lines: Vec<LineRow>,
    pub history: Vec<HistoryRow>,
}

/// What PlaceOrder persists.
pub struct NewOrder {
    pub user_id: String,
    pub tier: i16,
    pub idempotency_key: String,
    pub currency: String,
    pub total_minor: i64,
    pub address: StoredAddress,
    pub payment_method_token: String,
    pub lines: Vec<LineRow>,
    pub first_step: i16,
    pub lease: Duration,
    /// The x-request-id of the PlaceOrder call; empty when it had none.
    pub correlation_id: String,
}

pub enum Inserted {
    Created(Uuid),
    /// The user already used the key: this is its order.
    Existing(Uuid),
    /// The user's orders still being placed hold this many units already.
    OverHeldLimit(i64),
}

/// A status change to apply together with a saga step, when the order is still in `from`.
#[derive(Clone, Debug)]
pub struct StatusChange {
    pub from: &'static [i16],
    pub to: i16,
    pub actor_id: String,
    pub note: String,
    /// Set with CANCELLED.
    pub reason: Option<(i16, String)>,
    /// The correlation id of the change's event: the x-request-id of the request behind it.
    pub correlation_id: String,
}

/// Fields a saga step sets besides the step itself.
#[derive(Clone, Debug, Default)]
pub struct StepChanges {
    pub payment_id: Option<String>,
    pub shipment_id: Option<String>,
    pub charge_attempted: Option<bool>,
    pub restock: Option<bool>,
    pub refunded_minor: Option<i64>,
    pub status: Option<StatusChange>,
}

const ORDER_COLUMNS: &str = "id, user_id, tier, status, idempotency_key, currency, total_minor, \
    refunded_minor, shipping_address, payment_method_token, payment_id, shipment_id, \
    cancellation_reason, cancellation_note, saga_step, charge_attempted, restock, \
    cancel_requested, cancel_actor, cancel_reason, saga_attempts, correlation_id, \
    cancel_correlation_id, created_at, updated_at";

const LINES_OF: &str = "select product_id, sku, product_name, unit_price_minor, quantity \
    from order_lines where order_id = $1 order by position";

fn lease_interval(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

#[derive(Clone)]
pub struct OrderRepo {
    pool: PgPool,
}

impl OrderRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn find_by_key(&self, user_id: &str, key: &str) -> anyhow::Result<Option<Uuid>> {
        Ok(
            sqlx::query_scalar("select id from orders where user_id = $1 and idempotency_key = $2")
                .bind(user_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Persists a new order with its lines, first history row and first saga step, holding the
    /// saga's lease. Serialised per user (a transaction-scoped advisory lock), so concurrent
    /// retries with one key find each other and the held-units limit cannot be raced.
    pub async fn insert(&self, new: NewOrder, max_held_units: i64) -> anyhow::Result<Inserted> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(&new.user_id)
            .execute(&mut *tx)
            .await?;
        let existing: Option<Uuid> =
            sqlx::query_scalar("select id from orders where user_id = $1 and idempotency_key = $2")
                .bind(&new.user_id)
                .bind(&new.idempotency_key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = existing {
            return Ok(Inserted::Existing(id));
        }
        let held: i64 = sqlx::query_scalar(
            "select coalesce(sum(l.quantity), 0)::bigint from orders o \
             join order_lines l on l.order_id = o.id where o.user_id = $1 and o.status = 1",
        )
        .bind(&new.user_id)
        .fetch_one(&mut *tx)
        .await?;
        let wanted: i64 = new.lines.iter().map(|l| i64::from(l.quantity)).sum();
        if held + wanted > max_held_units {
            return Ok(Inserted::OverHeldLimit(held));
        }
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into orders (id, user_id, tier, status, idempotency_key, currency, total_minor, \
             shipping_address, payment_method_token, saga_step, lease_until, correlation_id) \
             values ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10), \
             $11)",
        )
        .bind(id)
        .bind(&new.user_id)
        .bind(new.tier)
        .bind(&new.idempotency_key)
        .bind(&new.currency)
        .bind(new.total_minor)
        .bind(Json(&new.address))
        .bind(&new.payment_method_token)
        .bind(new.first_step)
        .bind(lease_interval(new.lease))
        .bind(&new.correlation_id)
        .execute(&mut *tx)
        .await?;
        for (position, line) in new.lines.iter().enumerate() {
            sqlx::query(
                "insert into order_lines (order_id, position, product_id, sku, product_name, \
                 unit_price_minor, quantity) values ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(i32::try_from(position)?)
            .bind(&line.product_id)
            .bind(&line.sku)
            .bind(&line.product_name)
            .bind(line.unit_price_minor)
            .bind(line.quantity)
            .execute(&mut *tx)
            .await?;
        }
        insert_history(&mut tx, id, 0, 1, "", "").await?;
        log(&mut tx, id, new.first_step, "started", "").await?;
        // Only the transaction that inserted the row gets here: a repeated key returned above.
        let (order, lines) = snapshot(&mut tx, id).await?;
        insert_outbox(
            &mut tx,
            &OutboxEvent::created(&order, &lines),
            &new.correlation_id,
        )
        .await?;
        tx.commit().await?;
        Ok(Inserted::Created(id))
    }

    pub async fn load(&self, id: Uuid) -> anyhow::Result<Option<FullOrder>> {
        let order: Option<OrderRow> =
            sqlx::query_as(&format!("select {ORDER_COLUMNS} from orders where id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(order) = order else {
            return Ok(None);
        };
        let lines = sqlx::query_as(LINES_OF)
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let history = sqlx::query_as(
            "select from_status, to_status, actor_id, note, changed_at from order_status_history \
             where order_id = $1 order by id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(FullOrder {
            order,
            lines,
            history,
        }))
    }

    /// When the order last changed, for watchers.
    pub async fn updated_at(&self, id: Uuid) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("select updated_at from orders where id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Takes the saga lease of an unfinished order unless another driver holds it.
    pub async fn take_lease(&self, id: Uuid, lease: Duration) -> anyhow::Result<bool> {
        let taken = sqlx::query(
            "update orders set lease_until = now() + make_interval(secs => $2) \
             where id = $1 and saga_step not in (7, 8) \
             and (lease_until is null or lease_until < now())",
        )
        .bind(id)
        .bind(lease_interval(lease))
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Extends a lease the caller holds (before a long call).
    pub async fn renew_lease(&self, id: Uuid, step: i16, lease: Duration) -> anyhow::Result<bool> {
        let renewed = sqlx::query(
            "update orders set lease_until = now() + make_interval(secs => $3) \
             where id = $1 and saga_step = $2",
        )
        .bind(id)
        .bind(step)
        .bind(lease_interval(lease))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    pub async fn release_lease(&self, id: Uuid) -> anyhow::Result<()> {
        sqlx::query("update orders set lease_until = null where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that step `from` ended (`outcome`, `detail`) and `to` is next, with the changes
    /// that go with it, if the order is still at `from`. False when another driver moved it.
    pub async fn advance(
        &self,
        id: Uuid,
        from: i16,
        to: i16,
        detail: &str,
        changes: StepChanges,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "update orders set saga_step = $3, payment_id = coalesce($4, payment_id), \
             shipment_id = coalesce($5, shipment_id), \
             charge_attempted = coalesce($6, charge_attempted), restock = coalesce($7, restock), \
             refunded_minor = greatest(refunded_minor, coalesce($8, 0)), saga_attempts = 0, \
             next_attempt_at = now(), updated_at = now(), \
             lease_until = case when $3 in (7, 8) then null \
                                else now() + make_interval(secs => $9) end \
             where id = $1 and saga_step = $2",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(changes.payment_id.as_deref())
        .bind(changes.shipment_id.as_deref())
        .bind(changes.charge_attempted)
        .bind(changes.restock)
        .bind(changes.refunded_minor)
        .bind(lease_interval(lease))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(change) = &changes.status {
            apply_status(&mut tx, id, change).await?;
        }
        if from == SHIP_STEP && to == DONE_STEP {
            // The shipment now exists: the paid order goes to fulfilment.
            let (order, lines) = snapshot(&mut tx, id).await?;
            if order.status == PAID_STATUS {
                let correlation_id = order.correlation_id.clone();
                insert_outbox(&mut tx, &OutboxEvent::paid(&order, &lines), &correlation_id).await?;
            }
        }
        log(&mut tx, id, from, "done", detail).await?;
        if to != from {
            log(&mut tx, id, to, "started", "").await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records a failed attempt of `step` and when to try again; gives up the lease so recovery
    /// (or a later driver) retries.
    pub async fn retry_later(
        &self,
        id: Uuid,
        step: i16,
        delay: Duration,
        detail: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "update orders set saga_attempts = saga_attempts + 1, lease_until = null, \
             next_attempt_at = now() + make_interval(secs => $3) \
             where id = $1 and saga_step = $2",
        )
        .bind(id)
        .bind(step)
        .bind(delay.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        log(&mut tx, id, step, "retrying", detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Notes, before the first charge attempt, that a charge may go through from now on.
    pub async fn mark_charge_attempted(&self, id: Uuid) -> anyhow::Result<()> {
        sqlx::query("update orders set charge_attempted = true where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Unfinished sagas due for another attempt whose lease has expired.
    pub async fn due(&self, limit: i64) -> anyhow::Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "select id from orders where saga_step not in (7, 8) and next_attempt_at <= now() \
             and (lease_until is null or lease_until < now()) order by next_attempt_at limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Page of order ids, newest first, after the cursor `(created_at, id)`.
    pub async fn list(
        &self,
        user_id: Option<&str>,
        status: Option<i16>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> anyhow::Result<Vec<Uuid>> {
        let (after_time, after_id) = after.unzip();
        Ok(sqlx::query_scalar(
            "select id from orders where ($1::text is null or user_id = $1) \
             and ($2::smallint is null or status = $2) \
             and ($3::timestamptz is null or (created_at, id) < ($3, $4)) \
             order by created_at desc, id desc limit $5",
        )
        .bind(user_id)
        .bind(status)
        .bind(after_time)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Changes the status when the order is still in one of `change.from`. False otherwise.
    pub async fn set_status(&self, id: Uuid, change: &StatusChange) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let applied = apply_status(&mut tx, id, change).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Asks the saga of a CREATED order to stop before charging; `correlation_id` goes with the
    /// order.cancelled event the saga writes when it does.
    pub async fn request_cancel(
        &self,
        id: Uuid,
        actor: &str,
        note: &str,
        reason: i16,
        correlation_id: &str,
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "update orders set cancel_requested = true, cancel_actor = $2, \
             cancellation_note = $3, cancel_reason = $4, cancel_correlation_id = $5, \
             updated_at = now() \
             where id = $1 and status = 1",
        )
        .bind(id)
        .bind(actor)
        .bind(note)
        .bind(reason)
        .bind(correlation_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Starts cancelling a PAID order whose saga finished: the saga's next step stops the
    /// shipment. False when the order is not PAID with a finished saga. `correlation_id` goes
    /// with the order.cancelled event the saga writes once the shipment is stopped.
    pub async fn begin_paid_cancel(
        &self,
        id: Uuid,
        actor: &str,
        note: &str,
        reason: i16,
        step: i16,
        correlation_id: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "update orders set saga_step = $4, cancel_requested = true, cancel_actor = $2, \
             cancellation_note = $3, cancel_reason = $5, cancel_correlation_id = $6, \
             lease_until = null, next_attempt_at = now(), updated_at = now() \
             where id = $1 and status = 2 and saga_step = 7",
        )
        .bind(id)
        .bind(actor)
        .bind(note)
        .bind(step)
        .bind(reason)
        .bind(correlation_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            log(&mut tx, id, step, "started", "cancellation requested").await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up cancelling a paid order (its shipment had left): back to the finished saga.
    pub async fn abandon_paid_cancel(
        &self,
        id: Uuid,
        step: i16,
        detail: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "update orders set saga_step = 7, cancel_requested = false, cancel_actor = '', \
             cancellation_note = '', cancel_correlation_id = '', lease_until = null, \
             updated_at = now() \
             where id = $1 and saga_step = $2",
        )
        .bind(id)
        .bind(step)
        .execute(&mut *tx)
        .await?;
        log(&mut tx, id, step, "failed", detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the payment's refunded total; a full refund moves a paid order to REFUNDED (and
    /// writes order.refunded with `correlation_id`).
    pub async fn record_refund(
        &self,
        id: Uuid,
        refunded_minor: i64,
        actor: &str,
        note: &str,
        correlation_id: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let total: Option<i64> = sqlx::query_scalar(
            "update orders set refunded_minor = greatest(refunded_minor, $2), updated_at = now() \
             where id = $1 returning total_minor",
        )
        .bind(id)
        .bind(refunded_minor)
        .fetch_optional(&mut *tx)
        .await?;
        if total.is_some_and(|total| refunded_minor >= total) {
            apply_status(
                &mut tx,
                id,
                &StatusChange {
                    from: &[2, 3, 4],
                    to: 6,
                    actor_id: actor.to_owned(),
                    note: note.to_owned(),
                    reason: None,
                    correlation_id: correlation_id.to_owned(),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Applies `change` if the order is still in one of `change.from`, with its history row and its
/// outbox event (built from the order as the change left it). False, writing nothing, otherwise.
/// Saga steps and status whose values `advance` looks at (`SagaStep::CreateShipment`,
/// `SagaStep::Completed`, `OrderStatus::Paid`).
const SHIP_STEP: i16 = SagaStep::CreateShipment as i16;
const DONE_STEP: i16 = SagaStep::Completed as i16;
const PAID_STATUS: i16 = OrderStatus::Paid as i16;

pub(crate) async fn apply_status(
    tx: &mut PgConnection,
    id: Uuid,
    change: &StatusChange,
) -> anyhow::Result<bool> {
    let (reason, reason_note) = change
        .reason
        .clone()
        .map_or((None, None), |(r, n)| (Some(r), Some(n)));
    let from: Option<i16> = sqlx::query_scalar(
        "update orders o set status = $3, updated_at = now(), \
         cancellation_reason = coalesce($4, cancellation_reason), \
         cancellation_note = coalesce($5, cancellation_note) \
         from (select id, status from orders where id = $1 for update) old \
         where o.id = old.id and old.status = any($2) returning old.status",
    )
    .bind(id)
    .bind(change.from)
    .bind(change.to)
    .bind(reason)
    .bind(reason_note)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(from) = from else {
        return Ok(false);
    };
    insert_history(tx, id, from, change.to, &change.actor_id, &change.note).await?;
    let (order, _) = snapshot(tx, id).await?;
    if let Some(event) = OutboxEvent::status_changed(from, &order) {
        insert_outbox(tx, &event, &change.correlation_id).await?;
    }
    Ok(true)
}

/// The order and its lines as this transaction sees them.
async fn snapshot(tx: &mut PgConnection, id: Uuid) -> anyhow::Result<(OrderRow, Vec<LineRow>)> {
    let order = sqlx::query_as(&format!("select {ORDER_COLUMNS} from orders where id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let lines = sqlx::query_as(LINES_OF)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    Ok((order, lines))
}

/// Records an event in the outbox, in the transaction of the change it describes.
async fn insert_outbox(
    tx: &mut PgConnection,
    event: &OutboxEvent,
    correlation_id: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into outbox (id, event_type, aggregate_id, payload_type, payload, \
         correlation_id, priority) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(event.event_type)
    .bind(&event.aggregate_id)
    .bind(&event.payload_type)
    .bind(&event.payload)
    .bind(correlation_id)
    .bind(event.priority)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_history(
    tx: &mut PgConnection,
    id: Uuid,
    from: i16,
    to: i16,
    actor: &str,
    note: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into order_status_history (order_id, from_status, to_status, actor_id, note) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(actor)
    .bind(note)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn log(
    tx: &mut PgConnection,
    id: Uuid,
    step: i16,
    outcome: &str,
    detail: &str,
) -> anyhow::Result<()> {
    sqlx::query("insert into saga_log (order_id, step, outcome, detail) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(step)
        .bind(outcome)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
