//! SQL shared by the catalog and inventory adapters: stock rows, movements, the low-stock
//! crossing and outbox rows. Everything here runs inside the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{
    Actor, LowStockChange, MovementReason, Reservation, ReservationLine, ReservationStatus, Sku,
    StockLevel, StockMovement, low_stock_change,
};
use crate::events::OutboxEvent;
use crate::repo::RepoError;

pub(super) type Tx = Transaction<'static, Postgres>;

fn corrupt(what: &str, value: &str) -> RepoError {
    RepoError::Backend(anyhow::anyhow!("stored {what} is invalid: {value:?}"))
}

pub(super) fn stored_sku(raw: &str) -> Result<Sku, RepoError> {
    Sku::parse(raw).map_err(|_| corrupt("sku", raw))
}

pub(super) const LEVEL_COLUMNS: &str =
    "sku, product_id, on_hand, reserved, low_stock_threshold, low_stock, updated_at";

/// A stock row as stored, with its low-stock flag.
#[derive(Debug, FromRow)]
pub(super) struct LevelRow {
    pub sku: String,
    pub product_id: Uuid,
    pub on_hand: i32,
    pub reserved: i32,
    pub low_stock_threshold: i32,
    pub low_stock: bool,
    pub updated_at: DateTime<Utc>,
}

impl LevelRow {
    pub fn level(&self) -> Result<StockLevel, RepoError> {
        Ok(StockLevel {
            sku: stored_sku(&self.sku)?,
            product_id: self.product_id,
            on_hand: self.on_hand,
            reserved: self.reserved,
            low_stock_threshold: self.low_stock_threshold,
            updated_at: self.updated_at,
        })
    }
}

pub(super) const MOVEMENT_COLUMNS: &str = "id, seq, sku, reason, on_hand_delta, reserved_delta, \
     on_hand_after, reserved_after, actor_id, order_id, note, created_at";

#[derive(Debug, FromRow)]
pub(super) struct MovementRow {
    pub id: Uuid,
    pub seq: i64,
    pub sku: String,
    pub reason: String,
    pub on_hand_delta: i32,
    pub reserved_delta: i32,
    pub on_hand_after: i32,
    pub reserved_after: i32,
    pub actor_id: Option<String>,
    pub order_id: Option<Uuid>,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

impl MovementRow {
    pub fn movement(self) -> Result<StockMovement, RepoError> {
        Ok(StockMovement {
            id: self.id,
            seq: self.seq,
            sku: stored_sku(&self.sku)?,
            reason: MovementReason::parse(&self.reason)
                .ok_or_else(|| corrupt("movement reason", &self.reason))?,
            on_hand_delta: self.on_hand_delta,
            reserved_delta: self.reserved_delta,
            on_hand_after: self.on_hand_after,
            reserved_after: self.reserved_after,
            actor_id: self.actor_id,
            order_id: self.order_id,
            note: self.note,
            created_at: self.created_at,
        })
    }
}

/// A movement to record: the change and the level it left behind.
pub(super) struct NewMovement<'a> {
    pub sku: &'a str,
    pub reason: MovementReason,
    pub on_hand_delta: i32,
    pub reserved_delta: i32,
    pub on_hand_after: i32,
    pub reserved_after: i32,
    pub order_id: Option<Uuid>,
    pub note: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// Inserts one movement and returns it as stored.
pub(super) async fn insert_movement(
    tx: &mut Tx,
    movement: &NewMovement<'_>,
    actor: &Actor,
) -> Result<MovementRow, RepoError> {
    let sql = format!(
        "insert into stock_movements (id, sku, reason, on_hand_delta, reserved_delta, \
         on_hand_after, reserved_after, actor_id, order_id, note, idempotency_key) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning {MOVEMENT_COLUMNS}"
    );
    let row = sqlx::query_as::<_, MovementRow>(&sql)
        .bind(Uuid::now_v7())
        .bind(movement.sku)
        .bind(movement.reason.as_str())
        .bind(movement.on_hand_delta)
        .bind(movement.reserved_delta)
        .bind(movement.on_hand_after)
        .bind(movement.reserved_after)
        .bind(actor.user_id.as_deref())
        .bind(movement.order_id)
        .bind(movement.note)
        .bind(movement.idempotency_key)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row)
}

/// Inserts several movements of one reason and order in one statement.
pub(super) async fn insert_movements(
    tx: &mut Tx,
    reason: MovementReason,
    order_id: Option<Uuid>,
    movements: &[(&LevelRow, i32, i32)],
    actor: &Actor,
) -> Result<(), RepoError> {
    if movements.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = movements.iter().map(|_| Uuid::now_v7()).collect();
    let skus: Vec<&str> = movements
        .iter()
        .map(|(row, _, _)| row.sku.as_str())
        .collect();
    let on_hand_deltas: Vec<i32> = movements.iter().map(|(_, d, _)| *d).collect();
    let reserved_deltas: Vec<i32> = movements.iter().map(|(_, _, d)| *d).collect();
    let on_hand_after: Vec<i32> = movements.iter().map(|(row, _, _)| row.on_hand).collect();
    let reserved_after: Vec<i32> = movements.iter().map(|(row, _, _)| row.reserved).collect();
    sqlx::query(
        "insert into stock_movements (id, sku, reason, on_hand_delta, reserved_delta, \
         on_hand_after, reserved_after, actor_id, order_id) \
         select m.id, m.sku, $7, m.on_hand_delta, m.reserved_delta, m.on_hand_after, \
         m.reserved_after, $8, $9 \
         from unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[]) \
         as m(id, sku, on_hand_delta, reserved_delta, on_hand_after, reserved_after)",
    )
    .bind(ids)
    .bind(skus)
    .bind(on_hand_deltas)
    .bind(reserved_deltas)
    .bind(on_hand_after)
    .bind(reserved_after)
    .bind(reason.as_str())
    .bind(actor.user_id.as_deref())
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records an event in the outbox, in the transaction of the change it describes.
pub(super) async fn insert_outbox(
    tx: &mut Tx,
    event: &OutboxEvent,
    actor: &Actor,
) -> Result<(), RepoError> {
    sqlx::query(
        "insert into outbox (id, event_type, aggregate_id, payload_type, payload, correlation_id) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(event.event_type)
    .bind(&event.aggregate_id)
    .bind(event.payload_type)
    .bind(&event.payload)
    .bind(&actor.correlation_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Brings the low-stock flag of a just-changed stock row up to date. The row is locked by the
/// update that produced `row`, so concurrent changes of the SKU see the flags in order and a
/// crossing into low stock records exactly one inventory.low_stock event.
pub(super) async fn settle_low_stock(
    tx: &mut Tx,
    row: &LevelRow,
    actor: &Actor,
) -> Result<(), RepoError> {
    let change = low_stock_change(
        row.low_stock,
        row.on_hand - row.reserved,
        row.low_stock_threshold,
    );
    if change == LowStockChange::Unchanged {
        return Ok(());
    }
    let low = change == LowStockChange::BecameLow;
    sqlx::query("update stock set low_stock = $2 where sku = $1")
        .bind(&row.sku)
        .bind(low)
        .execute(&mut **tx)
        .await?;
    if low {
        let name: String = sqlx::query_scalar("select name from products where id = $1")
            .bind(row.product_id)
            .fetch_one(&mut **tx)
            .await?;
        insert_outbox(tx, &OutboxEvent::low_stock(&row.level()?, &name), actor).await?;
    }
    Ok(())
}

#[derive(Debug, FromRow)]
pub(super) struct ReservationRow {
    pub order_id: Uuid,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl ReservationRow {
    pub fn status(&self) -> Result<ReservationStatus, RepoError> {
        ReservationStatus::parse(&self.status)
            .ok_or_else(|| corrupt("reservation status", &self.status))
    }

    pub fn with_lines(self, lines: Vec<ReservationLine>) -> Result<Reservation, RepoError> {
        Ok(Reservation {
            order_id: self.order_id,
            status: self.status()?,
            lines,
            expires_at: self.expires_at,
            created_at: self.created_at,
        })
    }
}

/// The lines of a reservation, in SKU order: the lock order. They are sorted here rather than by
/// SQL because `order by` follows the database collation, and every path must lock stock rows in
/// the same (byte-wise) order that Reserve uses.
pub(super) async fn reservation_lines(
    conn: &mut sqlx::PgConnection,
    order_id: Uuid,
) -> Result<Vec<ReservationLine>, RepoError> {
    let rows: Vec<(String, i32)> =
        sqlx::query_as("select sku, quantity from reservation_lines where order_id = $1")
            .bind(order_id)
            .fetch_all(conn)
            .await?;
    let mut lines = rows
        .into_iter()
        .map(|(sku, quantity)| {
            Ok(ReservationLine {
                sku: stored_sku(&sku)?,
                quantity,
            })
        })
        .collect::<Result<Vec<_>, RepoError>>()?;
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(lines)
}
