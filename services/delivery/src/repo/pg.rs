//! The PostgreSQL adapter of [`ShipmentRepo`]: all SQL of the delivery service.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{
    self, Address, Line, NewShipment, OrderUpdate, Shipment, ShipmentStatus, Step, Tier,
    TrackingEvent,
};
use crate::events::{OutboxEvent, Transition};
use crate::repo::{
    CourierMove, Created, FulfilmentTarget, Label, OrderSync, RepoError, ShipmentRepo, SyncOutcome,
};

/// Shipments in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgShipmentRepo {
    pool: PgPool,
}

impl PgShipmentRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn corrupt(what: &str, value: &str) -> RepoError {
    RepoError::Backend(anyhow::anyhow!("stored {what} is invalid: {value:?}"))
}

fn stored_status(raw: &str) -> Result<ShipmentStatus, RepoError> {
    ShipmentStatus::parse(raw).ok_or_else(|| corrupt("shipment status", raw))
}

/// A duration as the seconds `make_interval` takes.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

const SHIPMENT_COLUMNS: &str = "id, order_id, user_id, tier, status, last_event_seq, recipient, \
     line1, line2, city, region, postal_code, country, phone, carrier, tracking_number, \
     created_at, updated_at";

#[derive(Debug, FromRow)]
struct ShipmentRow {
    id: Uuid,
    order_id: Uuid,
    user_id: String,
    tier: String,
    status: String,
    last_event_seq: i32,
    recipient: String,
    line1: String,
    line2: String,
    city: String,
    region: String,
    postal_code: String,
    country: String,
    phone: String,
    carrier: String,
    tracking_number: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct LineRow {
    product_id: String,
    sku: String,
    product_name: String,
    quantity: i32,
}

#[derive(Debug, FromRow)]
struct EventRow {
    id: Uuid,
    seq: i32,
    status: String,
    location: String,
    note: String,
    created_at: DateTime<Utc>,
}

impl EventRow {
    fn event(self) -> Result<TrackingEvent, RepoError> {
        Ok(TrackingEvent {
            id: self.id,
            seq: self.seq,
            status: stored_status(&self.status)?,
            location: self.location,
            note: self.note,
            at: self.created_at,
        })
    }
}

const EVENT_COLUMNS: &str = "id, seq, status, location, note, created_at";

/// The shipment `column = value` names, with its lines and events.
async fn load(
    conn: &mut PgConnection,
    column: &str,
    value: Uuid,
) -> Result<Option<Shipment>, RepoError> {
    let row: Option<ShipmentRow> = sqlx::query_as(&format!(
        "select {SHIPMENT_COLUMNS} from shipments where {column} = $1"
    ))
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let lines: Vec<LineRow> = sqlx::query_as(
        "select product_id, sku, product_name, quantity from shipment_lines \
         where shipment_id = $1 order by line_no",
    )
    .bind(row.id)
    .fetch_all(&mut *conn)
    .await?;
    let events: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from tracking_events where shipment_id = $1 order by seq"
    ))
    .bind(row.id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Shipment {
        id: row.id,
        order_id: row.order_id,
        tier: Tier::parse(&row.tier).ok_or_else(|| corrupt("tier", &row.tier))?,
        status: stored_status(&row.status)?,
        user_id: row.user_id,
        last_event_seq: row.last_event_seq,
        address: Address {
            recipient: row.recipient,
            line1: row.line1,
            line2: row.line2,
            city: row.city,
            region: row.region,
            postal_code: row.postal_code,
            country: row.country,
            phone: row.phone,
        },
        lines: lines
            .into_iter()
            .map(|l| Line {
                product_id: l.product_id,
                sku: l.sku,
                product_name: l.product_name,
                quantity: l.quantity,
            })
            .collect(),
        carrier: row.carrier,
        tracking_number: row.tracking_number,
        events: events
            .into_iter()
            .map(EventRow::event)
            .collect::<Result<_, _>>()?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
}

/// What a transition's update returns: the shipment as the outbox event describes it.
#[derive(Debug, FromRow)]
struct AdvancedRow {
    last_event_seq: i32,
    order_id: Uuid,
    user_id: String,
    tier: String,
    carrier: String,
    tracking_number: String,
}

/// Applies one step inside the caller's transaction if the shipment is still in `from` at
/// event `from_seq`: `false` when it moved on. Writes the tracking event, the
/// shipment.status_changed outbox event (with `correlation_id`) and, when the new status
/// implies an order status the order has not been sent yet, the order update.
async fn apply_step(
    conn: &mut PgConnection,
    id: Uuid,
    from: ShipmentStatus,
    from_seq: i32,
    step: &Step,
    courier_step: Duration,
    correlation_id: &str,
) -> Result<bool, RepoError> {
    // The courier takes the next step after `courier_step`, if it has one to take.
    let next_step_in = step.status.courier_next().map(|_| secs(courier_step));
    let advanced: Option<AdvancedRow> = sqlx::query_as(
        "update shipments set status = $4, last_event_seq = last_event_seq + 1, \
             carrier = coalesce($5, carrier), tracking_number = coalesce($6, tracking_number), \
             next_step_at = clock_timestamp() + make_interval(secs => $7), \
             updated_at = clock_timestamp() \
         where id = $1 and status = $2 and last_event_seq = $3 \
         returning last_event_seq, order_id, user_id, tier, carrier, tracking_number",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(from_seq)
    .bind(step.status.as_str())
    .bind(step.carrier.as_deref())
    .bind(step.tracking_number.as_deref())
    .bind(next_step_in)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(advanced) = advanced else {
        return Ok(false);
    };
    sqlx::query(
        "insert into tracking_events (id, shipment_id, seq, status, location, note, created_at) \
         values ($1, $2, $3, $4, $5, $6, clock_timestamp())",
    )
    .bind(Uuid::now_v7())
    .bind(id)
    .bind(advanced.last_event_seq)
    .bind(step.status.as_str())
    .bind(&step.location)
    .bind(&step.note)
    .execute(&mut *conn)
    .await?;
    let event = OutboxEvent::status_changed(&Transition {
        shipment_id: id,
        order_id: advanced.order_id,
        user_id: &advanced.user_id,
        tier: Tier::parse(&advanced.tier).ok_or_else(|| corrupt("tier", &advanced.tier))?,
        from,
        step,
        carrier: &advanced.carrier,
        tracking_number: &advanced.tracking_number,
    });
    insert_outbox(conn, &event, correlation_id).await?;
    if let Some(update) = step.status.order_update() {
        record_order_update(conn, id, update, step).await?;
    }
    Ok(true)
}

/// Records `event` in the outbox, in the caller's transaction.
async fn insert_outbox(
    conn: &mut PgConnection,
    event: &OutboxEvent,
    correlation_id: &str,
) -> Result<(), RepoError> {
    sqlx::query(
        "insert into outbox (id, event_type, aggregate_id, payload_type, payload, \
             correlation_id, priority) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(event.event_type)
    .bind(&event.aggregate_id)
    .bind(event.payload_type)
    .bind(&event.payload)
    .bind(correlation_id)
    .bind(event.priority)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Owes the order service `update` (once per shipment and target status).
async fn record_order_update(
    conn: &mut PgConnection,
    id: Uuid,
    update: OrderUpdate,
    step: &Step,
) -> Result<(), RepoError> {
    let note = match step.location.as_str() {
        "" => format!("shipment {}", step.status),
        location => format!("shipment {} at {location}", step.status),
    };
    sqlx::query(
        "insert into order_sync (shipment_id, order_id, order_status, note, next_attempt_at, \
             created_at) \
         select id, order_id, $2, $3, now(), now() from shipments where id = $1 \
         on conflict (shipment_id, order_status) do nothing",
    )
    .bind(id)
    .bind(update.as_str())
    .bind(note)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, FromRow)]
struct FulfilmentRow {
    id: Uuid,
    tier: String,
    status: String,
    last_event_seq: i32,
    fulfilled_at: Option<DateTime<Utc>>,
}

/// The shipment of `order_id`, locked (`for update`) in the caller's transaction until it
/// commits: a second order.paid of the same order (another event id, another instance) waits
/// and then finds it fulfilled. `None` when the order has no shipment (yet).
pub async fn lock_for_fulfilment(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<FulfilmentTarget>, RepoError> {
    let row: Option<FulfilmentRow> = sqlx::query_as(
        "select id, tier, status, last_event_seq, fulfilled_at from shipments \
         where order_id = $1 for update",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(FulfilmentTarget {
            id: row.id,
            tier: Tier::parse(&row.tier).ok_or_else(|| corrupt("tier", &row.tier))?,
            status: stored_status(&row.status)?,
            last_event_seq: row.last_event_seq,
            fulfilled_at: row.fulfilled_at,
        })
    })
    .transpose()
}

/// Records `target` fulfilled now (the clock time, after the packing), in the caller's
/// transaction, and returns when. With `step` (PENDING -> PACKED) the transition is applied
/// first, with its tracking event and shipment.status_changed outbox event (with
/// `correlation_id`). A shipment still LABEL_CREATED becomes due for the courier's pick-up
/// `courier_step` from now; one that moved on keeps its courier schedule.
pub async fn record_fulfilment(
    conn: &mut PgConnection,
    target: &FulfilmentTarget,
    step: Option<&Step>,
    courier_step: Duration,
    correlation_id: &str,
) -> Result<DateTime<Utc>, RepoError> {
    if let Some(step) = step
        && !apply_step(
            conn,
            target.id,
            target.status,
            target.last_event_seq,
            step,
            courier_step,
            correlation_id,
        )
        .await?
    {
        // The row is locked since it was read: it cannot have moved on.
        return Err(RepoError::Backend(anyhow::anyhow!(
            "shipment {} changed while it was locked for packing",
            target.id
        )));
    }
    let fulfilled_at: DateTime<Utc> = sqlx::query_scalar(
        "update shipments set fulfilled_at = clock_timestamp(), \
             next_step_at = case when status = 'LABEL_CREATED' \
                 then clock_timestamp() + make_interval(secs => $2) else next_step_at end, \
             updated_at = clock_timestamp() \
         where id = $1 \
         returning fulfilled_at",
    )
    .bind(target.id)
    .bind(secs(courier_step))
    .fetch_one(&mut *conn)
    .await?;
    Ok(fulfilled_at)
}

#[derive(Debug, FromRow)]
struct DueRow {
    id: Uuid,
    status: String,
    last_event_seq: i32,
    carrier: String,
    city: String,
}

#[derive(Debug, FromRow)]
struct SyncRow {
    id: i64,
    shipment_id: Uuid,
    order_id: Uuid,
    order_status: String,
    note: String,
    attempts: i32,
}

#[async_trait]
impl ShipmentRepo for PgShipmentRepo {
    #[tracing::instrument(skip(self))]
    async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip(self, shipment, label, correlation_id), fields(order_id = %shipment.order_id))]
    async fn create(
        &self,
        shipment: &NewShipment,
        label: &Label,
        correlation_id: &str,
    ) -> Result<Created, RepoError> {
        let mut tx = self.pool.begin().await?;
        let a = &shipment.address;
        // A concurrent create of the same order waits on the unique index and then inserts
        // nothing: both callers get the one shipment. No courier step is due (next_step_at is
        // null) until the packing station has fulfilled it.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "insert into shipments (id, order_id, user_id, tier, status, last_event_seq, \
                 recipient, line1, line2, city, region, postal_code, country, phone, carrier, \
                 tracking_number, next_step_at, created_at, updated_at) \
             values ($1, $2, $3, $4, 'LABEL_CREATED', 1, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, null, now(), now()) \
             on conflict (order_id) do nothing \
             returning id",
        )
        .bind(label.id)
        .bind(shipment.order_id)
        .bind(&shipment.user_id)
        .bind(shipment.tier.as_str())
        .bind(&a.recipient)
        .bind(&a.line1)
        .bind(&a.line2)
        .bind(&a.city)
        .bind(&a.region)
        .bind(&a.postal_code)
        .bind(&a.country)
        .bind(&a.phone)
        .bind(&label.carrier)
        .bind(&label.tracking_number)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            let mut conn = self.pool.acquire().await?;
            return load(&mut conn, "order_id", shipment.order_id)
                .await?
                .map(Created::Existing)
                .ok_or_else(|| {
                    RepoError::Backend(anyhow::anyhow!("the order's shipment vanished"))
                });
        }
        for (line_no, line) in (0_i32..).zip(&shipment.lines) {
            sqlx::query(
                "insert into shipment_lines (shipment_id, line_no, product_id, sku, \
                     product_name, quantity) values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(label.id)
            .bind(line_no)
            .bind(&line.product_id)
            .bind(&line.sku)
            .bind(&line.product_name)
            .bind(line.quantity)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "insert into tracking_events (id, shipment_id, seq, status, location, note, \
                 created_at) values ($1, $2, 1, 'LABEL_CREATED', '', $3, now())",
        )
        .bind(label.event_id)
        .bind(label.id)
        .bind(format!(
            "Label created: {} {}",
            label.carrier, label.tracking_number
        ))
        .execute(&mut *tx)
        .await?;
        let created = load(&mut tx, "id", label.id)
            .await?
            .ok_or_else(|| RepoError::Backend(anyhow::anyhow!("the new shipment vanished")))?;
        insert_outbox(&mut tx, &OutboxEvent::created(&created), correlation_id).await?;
        tx.commit().await?;
        Ok(Created::New(created))
    }

    #[tracing::instrument(skip(self))]
    async fn shipment(&self, id: Uuid) -> Result<Option<Shipment>, RepoError> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, "id", id).await
    }

    #[tracing::instrument(skip(self))]
    async fn shipment_by_order(&self, order_id: Uuid) -> Result<Option<Shipment>, RepoError> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, "order_id", order_id).await
    }

    #[tracing::instrument(skip(self, step, correlation_id), fields(to = %step.status))]
    async fn advance(
        &self,
        id: Uuid,
        from: ShipmentStatus,
        from_seq: i32,
        step: &Step,
        courier_step: Duration,
        correlation_id: &str,
    ) -> Result<Option<Shipment>, RepoError> {
        let mut tx = self.pool.begin().await?;
        if !apply_step(
            &mut tx,
            id,
            from,
            from_seq,
            step,
            courier_step,
            correlation_id,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let shipment = load(&mut tx, "id", id).await?;
        tx.commit().await?;
        Ok(shipment)
    }

    #[tracing::instrument(skip(self))]
    async fn events_after(
        &self,
        id: Uuid,
        after_seq: i32,
    ) -> Result<Vec<TrackingEvent>, RepoError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from tracking_events where shipment_id = $1 and seq > $2 \
             order by seq"
        ))
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(EventRow::event).collect()
    }

    #[tracing::instrument(skip(self))]
    async fn event_seq(&self, shipment_id: Uuid, event_id: Uuid) -> Result<Option<i32>, RepoError> {
        Ok(
            sqlx::query_scalar(
                "select seq from tracking_events where shipment_id = $1 and id = $2",
            )
            .bind(shipment_id)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    #[tracing::instrument(skip(self))]
    async fn courier_pass(
        &self,
        limit: i64,
        courier_step: Duration,
    ) -> Result<Vec<CourierMove>, RepoError> {
        let mut tx = self.pool.begin().await?;
        // Rows another instance (or an admin's AdvanceShipment) holds are skipped, not waited
        // for: each due step is taken exactly once, by whoever locked its row.
        let due: Vec<DueRow> = sqlx::query_as(
            "select id, status, last_event_seq, carrier, city from shipments \
             where next_step_at is not null and next_step_at <= now() \
             order by priority, next_step_at, id \
             limit $1 \
             for update skip locked",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut moves = Vec::with_capacity(due.len());
        for row in due {
            let from = stored_status(&row.status)?;
            match domain::courier_step(from, &row.carrier, &row.city) {
                Some(step) => {
                    if apply_step(
                        &mut tx,
                        row.id,
                        from,
                        row.last_event_seq,
                        &step,
                        courier_step,
                        // The courier acts on no request.
                        "",
                    )
                    .await?
                    {
                        moves.push(CourierMove {
                            shipment_id: row.id,
                            to: step.status,
                        });
                    }
                }
                // Nothing for the courier to do in this status: stop looking at it.
                None => {
                    sqlx::query("update shipments set next_step_at = null where id = $1")
                        .bind(row.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(moves)
    }

    #[tracing::instrument(skip(self))]
    async fn claim_syncs(&self, limit: i64, lease: Duration) -> Result<Vec<OrderSync>, RepoError> {
        let rows: Vec<SyncRow> = sqlx::query_as(
            "with due as ( \
                 select s.id from order_sync s \
                 where s.state = 'pending' and s.next_attempt_at <= now() \
                   and not exists ( \
                       select 1 from order_sync e \
                       where e.shipment_id = s.shipment_id and e.state = 'pending' \
                         and e.id < s.id) \
                 order by s.id \
                 limit $1 \
                 for update skip locked) \
             update order_sync o set next_attempt_at = now() + make_interval(secs => $2) \
             from due where o.id = due.id \
             returning o.id, o.shipment_id, o.order_id, o.order_status, o.note, o.attempts",
        )
        .bind(limit)
        .bind(secs(lease))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .into_iter()
            .map(|row| {
                Ok(OrderSync {
                    id: row.id,
                    shipment_id: row.shipment_id,
                    order_id: row.order_id,
                    status: OrderUpdate::parse(&row.order_status)
                        .ok_or_else(|| corrupt("order status", &row.order_status))?,
                    note: row.note,
                    attempts: row.attempts,
                })
            })
            .collect::<Result<Vec<_>, RepoError>>()?;
        claimed.sort_by_key(|sync| sync.id);
        Ok(claimed)
    }

    #[tracing::instrument(skip(self))]
    async fn finish_sync(&self, id: i64, outcome: &SyncOutcome) -> Result<(), RepoError> {
        let query = match outcome {
            SyncOutcome::Done => sqlx::query(
                "update order_sync set state = 'done', attempts = attempts + 1, \
                     last_error = null, done_at = now() where id = $1",
            )
            .bind(id),
            SyncOutcome::Rejected(reason) => sqlx::query(
                "update order_sync set state = 'rejected', attempts = attempts + 1, \
                     last_error = $2, done_at = now() where id = $1",
            )
            .bind(id)
            .bind(reason),
            SyncOutcome::Retry { retry_at, error } => sqlx::query(
                "update order_sync set attempts = attempts + 1, last_error = $2, \
                     next_attempt_at = $3 where id = $1 and state = 'pending'",
            )
            .bind(id)
            .bind(error)
            .bind(retry_at),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }
}
