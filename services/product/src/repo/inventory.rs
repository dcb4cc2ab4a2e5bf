//! PostgreSQL adapter of [`InventoryRepo`].
//!
//! Lock order, everywhere: the reservation row first, then stock rows in SKU order. Reserve,
//! Commit, Release and the sweeper all follow it, so they cannot deadlock one another.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{
    Actor, Adjustment, MovementReason, Reservation, ReservationLine, ReservationStatus, Sku,
    StockLevel, StockMovement,
};
use crate::events::OutboxEvent;
use crate::repo::coalesce::{Decision, ReserveRequest, decide};
use crate::repo::sql::{
    LEVEL_COLUMNS, LevelRow, MOVEMENT_COLUMNS, MovementRow, NewMovement, ReservationRow, Tx,
    insert_movement, insert_movements, insert_outbox, reservation_lines, settle_low_stock,
};
use crate::repo::{
    AdjustOutcome, CommitOutcome, InventoryRepo, ReleaseOutcome, RepoError, ReserveOutcome,
};

/// Stock, reservations and movements in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgInventoryRepo {
    pool: PgPool,
}

impl PgInventoryRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The first result of an adjustment made with this idempotency key, if any.
    async fn repeated_adjustment(&self, key: &str) -> Result<Option<AdjustOutcome>, RepoError> {
        let sql =
            format!("select {MOVEMENT_COLUMNS} from stock_movements where idempotency_key = $1");
        let Some(first) = sqlx::query_as::<_, MovementRow>(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let first = first.movement()?;
        let level = self.stock(&first.sku).await?;
        Ok(level.map(|level| AdjustOutcome::Repeated(level, first)))
    }
}

impl PgInventoryRepo {
    /// Reserves a batch of orders in one transaction (see [`crate::repo::coalesce`]): one outcome
    /// per request, in order. An order id twice in the batch, or already reserved, is answered
    /// with its stored reservation after the batch commits.
    pub(super) async fn reserve_batch(
        &self,
        batch: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, RepoError> {
        let mut tx = self.pool.begin().await?;
        // Reservation rows first (the lock order). The first request of an order id inserts.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<usize> = (0..batch.len())
            .filter(|&i| seen.insert(batch[i].order_id))
            .collect();
        let ids: Vec<Uuid> = firsts.iter().map(|&i| batch[i].order_id).collect();
        let ttls: Vec<i64> = firsts
            .iter()
            .map(|&i| i64::try_from(batch[i].ttl.as_millis()).unwrap_or(i64::MAX))
            .collect();
        let sql = format!(
            "insert into reservations (order_id, status, expires_at) \
             select r.order_id, 'active', now() + r.ttl * interval '1 millisecond' \
             from unnest($1::uuid[], $2::bigint[]) as r(order_id, ttl) \
             on conflict (order_id) do nothing returning {RESERVATION_COLUMNS}"
        );
        let inserted: Vec<ReservationRow> = sqlx::query_as(&sql)
            .bind(&ids)
            .bind(&ttls)
            .fetch_all(&mut *tx)
            .await?;
        let mut new: HashMap<Uuid, ReservationRow> = inserted
            .into_iter()
            .map(|row| (row.order_id, row))
            .collect();
        let fresh: Vec<usize> = firsts
            .into_iter()
            .filter(|&i| new.contains_key(&batch[i].order_id))
            .collect();

        // Then every stock row the new orders touch, locked once, in byte-wise SKU order.
        let mut skus: Vec<&str> = fresh
            .iter()
            .flat_map(|&i| batch[i].lines.iter().map(|l| l.sku.as_str()))
            .collect();
        skus.sort_unstable();
        skus.dedup();
        let sql = format!(
            "select {LEVEL_COLUMNS} from stock where sku = any($1::text[]) \
             order by sku collate \"C\" for update"
        );
        let locked: Vec<LevelRow> = sqlx::query_as(&sql).bind(&skus).fetch_all(&mut *tx).await?;
        let mut available: BTreeMap<String, i32> = locked
            .iter()
            .map(|row| (row.sku.clone(), row.on_hand - row.reserved))
            .collect();
        let orders: Vec<&[ReservationLine]> =
            fresh.iter().map(|&i| batch[i].lines.as_slice()).collect();
        let decisions = decide(&orders, &mut available);

        // The orders that got their stock: one movement and one line per order line, with the
        // level each left behind.
        let mut level: HashMap<&str, (i32, i32)> = locked
            .iter()
            .map(|row| (row.sku.as_str(), (row.on_hand, row.reserved)))
            .collect();
        let mut last_actor: HashMap<&str, &Actor> = HashMap::new();
        let mut movement = MovementColumns::default();
        let mut failed = Vec::new();
        for (&i, decision) in fresh.iter().zip(&decisions) {
            let request = &batch[i];
            if *decision != Decision::Reserve {
                failed.push(request.order_id);
                continue;
            }
            for line in &request.lines {
                let sku = line.sku.as_str();
                let Some((on_hand, reserved)) = level.get_mut(sku) else {
                    continue;
                };
                *reserved += line.quantity;
                movement.push(request, line, *on_hand, *reserved);
                last_actor.insert(sku, &request.actor);
            }
        }
        if !failed.is_empty() {
            sqlx::query("delete from reservations where order_id = any($1::uuid[])")
                .bind(&failed)
                .execute(&mut *tx)
                .await?;
        }
        if !movement.ids.is_empty() {
            let (deltas_sku, deltas): (Vec<&str>, Vec<i32>) = level
                .iter()
                .filter_map(|(sku, (_, reserved))| {
                    let before = locked.iter().find(|row| row.sku == *sku)?.reserved;
                    (*reserved != before).then_some((*sku, *reserved - before))
                })
                .unzip();
            let sql = format!(
                "update stock set reserved = stock.reserved + d.delta, updated_at = now() \
                 from unnest($1::text[], $2::int[]) as d(sku, delta) \
                 where stock.sku = d.sku returning {}",
                LEVEL_COLUMNS
                    .split(", ")
                    .map(|c| format!("stock.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let changed: Vec<LevelRow> = sqlx::query_as(&sql)
                .bind(&deltas_sku)
                .bind(&deltas)
                .fetch_all(&mut *tx)
                .await?;
            movement.insert(&mut tx).await?;
            for row in &changed {
                let actor = last_actor
                    .get(row.sku.as_str())
                    .copied()
                    .cloned()
                    .unwrap_or_default();
                settle_low_stock(&mut tx, row, &actor).await?;
            }
        }
        tx.commit().await?;

        let mut decided: HashMap<Uuid, &Decision> = HashMap::new();
        for (&i, decision) in fresh.iter().zip(&decisions) {
            decided.insert(batch[i].order_id, decision);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut answered = std::collections::HashSet::new();
        for request in batch {
            let first = answered.insert(request.order_id);
            let outcome = match decided.get(&request.order_id) {
                Some(Decision::Reserve) if first => {
                    let row = new.remove(&request.order_id).ok_or_else(|| {
                        RepoError::Backend(anyhow::anyhow!("a reserved order lost its row"))
                    })?;
                    ReserveOutcome::Reserved(row.with_lines(request.lines.clone())?)
                }
                Some(Decision::Short(skus)) if first => ReserveOutcome::Short(skus.clone()),
                Some(Decision::Unknown(skus)) if first => ReserveOutcome::Unknown(skus.clone()),
                // Reserved before this batch, or a repeat within it: what is stored now (a
                // repeat of an order the batch could not reserve tries again on its own).
                _ => match self.reservation(request.order_id).await? {
                    Some(existing) => ReserveOutcome::Existing(existing),
                    None => {
                        self.reserve(
                            request.order_id,
                            &request.lines,
                            request.ttl,
                            &request.actor,
                        )
                        .await?
                    }
                },
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

/// The `reserve` movements of a batch, column by column, for one insert.
#[derive(Default)]
struct MovementColumns {
    ids: Vec<Uuid>,
    skus: Vec<String>,
    deltas: Vec<i32>,
    on_hand_after: Vec<i32>,
    reserved_after: Vec<i32>,
    actors: Vec<Option<String>>,
    orders: Vec<Uuid>,
}

impl MovementColumns {
    fn push(
        &mut self,
        request: &ReserveRequest,
        line: &ReservationLine,
        on_hand: i32,
        reserved: i32,
    ) {
        self.ids.push(Uuid::now_v7());
        self.skus.push(line.sku.as_str().to_owned());
        self.deltas.push(line.quantity);
        self.on_hand_after.push(on_hand);
        self.reserved_after.push(reserved);
        self.actors.push(request.actor.user_id.clone());
        self.orders.push(request.order_id);
    }

    /// The movements and the reservation lines they belong to.
    async fn insert(&self, tx: &mut Tx) -> Result<(), RepoError> {
        sqlx::query(
            "insert into stock_movements (id, sku, reason, on_hand_delta, reserved_delta, \
             on_hand_after, reserved_after, actor_id, order_id) \
             select m.id, m.sku, 'reserve', 0, m.delta, m.on_hand_after, m.reserved_after, \
             m.actor_id, m.order_id \
             from unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::int[], $6::text[], \
             $7::uuid[]) as m(id, sku, delta, on_hand_after, reserved_after, actor_id, order_id)",
        )
        .bind(&self.ids)
        .bind(&self.skus)
        .bind(&self.deltas)
        .bind(&self.on_hand_after)
        .bind(&self.reserved_after)
        .bind(&self.actors)
        .bind(&self.orders)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "insert into reservation_lines (order_id, sku, quantity) \
             select l.order_id, l.sku, l.quantity \
             from unnest($1::uuid[], $2::text[], $3::int[]) as l(order_id, sku, quantity)",
        )
        .bind(&self.orders)
        .bind(&self.skus)
        .bind(&self.deltas)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

const RESERVATION_COLUMNS: &str = "order_id, status, expires_at, created_at";

/// Gives the stock of `lines` back to available (reserved drops, on_hand stays), recording one
/// movement per line. The caller holds the reservation's row lock.
async fn give_back(
    tx: &mut Tx,
    order_id: Uuid,
    lines: &[ReservationLine],
    reason: MovementReason,
    actor: &Actor,
) -> Result<(), RepoError> {
    let mut rows = Vec::with_capacity(lines.len());
    for line in lines {
        let sql = format!(
            "update stock set reserved = reserved - $2, updated_at = now() \
             where sku = $1 returning {LEVEL_COLUMNS}"
        );
        let row = sqlx::query_as::<_, LevelRow>(&sql)
            .bind(line.sku.as_str())
            .bind(line.quantity)
            .fetch_one(&mut **tx)
            .await?;
        rows.push((row, line.quantity));
    }
    let movements: Vec<(&LevelRow, i32, i32)> = rows.iter().map(|(row, q)| (row, 0, -q)).collect();
    insert_movements(tx, reason, Some(order_id), &movements, actor).await?;
    for (row, _) in &rows {
        settle_low_stock(tx, row, actor).await?;
    }
    Ok(())
}

async fn set_status(
    tx: &mut Tx,
    order_id: Uuid,
    status: ReservationStatus,
) -> Result<(), RepoError> {
    sqlx::query("update reservations set status = $2, updated_at = now() where order_id = $1")
        .bind(order_id)
        .bind(status.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The reservation row of an order, locked for the rest of the transaction, and whether it is
/// past its expiry by the database clock.
async fn lock_reservation(
    tx: &mut Tx,
    order_id: Uuid,
) -> Result<Option<(ReservationRow, bool)>, RepoError> {
    #[derive(sqlx::FromRow)]
    struct Locked {
        #[sqlx(flatten)]
        row: ReservationRow,
        due: bool,
    }
    let sql = format!(
        "select {RESERVATION_COLUMNS}, expires_at <= now() as due from reservations \
         where order_id = $1 for update"
    );
    let locked = sqlx::query_as::<_, Locked>(&sql)
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(locked.map(|l| (l.row, l.due)))
}

fn with_status(
    row: ReservationRow,
    lines: Vec<ReservationLine>,
    status: ReservationStatus,
) -> Result<Reservation, RepoError> {
    let mut reservation = row.with_lines(lines)?;
    reservation.status = status;
    Ok(reservation)
}

#[async_trait]
impl InventoryRepo for PgInventoryRepo {
    #[tracing::instrument(skip(self))]
    async fn stock(&self, sku: &Sku) -> Result<Option<StockLevel>, RepoError> {
        let sql = format!("select {LEVEL_COLUMNS} from stock where sku = $1");
        sqlx::query_as::<_, LevelRow>(&sql)
            .bind(sku.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.level())
            .transpose()
    }

    #[tracing::instrument(skip(self))]
    async fn list_stock(
        &self,
        after: Option<&Sku>,
        low_only: bool,
        limit: usize,
    ) -> Result<Vec<StockLevel>, RepoError> {
        let sql = format!(
            "select {LEVEL_COLUMNS} from stock \
             where ($1::text is null or sku > $1) \
             and (not $2 or on_hand - reserved <= low_stock_threshold) \
             order by sku limit $3"
        );
        sqlx::query_as::<_, LevelRow>(&sql)
            .bind(after.map(Sku::as_str))
            .bind(low_only)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(LevelRow::level)
            .collect()
    }

    #[tracing::instrument(skip(self))]
    async fn movements(
        &self,
        sku: &Sku,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StockMovement>, RepoError> {
        let sql = format!(
            "select {MOVEMENT_COLUMNS} from stock_movements \
             where sku = $1 and ($2::bigint is null or seq < $2) \
             order by seq desc limit $3"
        );
        sqlx::query_as::<_, MovementRow>(&sql)
            .bind(sku.as_str())
            .bind(before_seq)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(MovementRow::movement)
            .collect()
    }

    #[tracing::instrument(skip(self))]
    async fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>, RepoError> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("select {RESERVATION_COLUMNS} from reservations where order_id = $1");
        let Some(row) = sqlx::query_as::<_, ReservationRow>(&sql)
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let lines = reservation_lines(&mut conn, order_id).await?;
        row.with_lines(lines).map(Some)
    }

    #[tracing::instrument(skip(self, lines, actor), fields(lines = lines.len()))]
    async fn reserve(
        &self,
        order_id: Uuid,
        lines: &[ReservationLine],
        ttl: Duration,
        actor: &Actor,
    ) -> Result<ReserveOutcome, RepoError> {
        let mut tx = self.pool.begin().await?;
        // The reservation row comes first: a concurrent Reserve for the same order waits on its
        // key here and then finds it, so an order is never reserved twice.
        let sql = format!(
            "insert into reservations (order_id, status, expires_at) \
             values ($1, 'active', now() + $2 * interval '1 millisecond') \
             on conflict (order_id) do nothing returning {RESERVATION_COLUMNS}"
        );
        let inserted = sqlx::query_as::<_, ReservationRow>(&sql)
            .bind(order_id)
            .bind(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(reservation) = inserted else {
            tx.rollback().await?;
            return match self.reservation(order_id).await? {
                Some(existing) => Ok(ReserveOutcome::Existing(existing)),
                None => Err(RepoError::Backend(anyhow::anyhow!(
                    "reservation of order {order_id} vanished"
                ))),
            };
        };

        // One conditional update per line, in SKU order, recording its movement in the same
        // statement. The update holds the row lock until commit, and a transaction waiting for
        // it re-checks the condition against the committed row, so available stock can never be
        // handed out twice (and the stock_levels check constraint would refuse it anyway).
        let sql = format!(
            "with changed as ( \
               update stock set reserved = reserved + $2, updated_at = now() \
               where sku = $1 and on_hand - reserved >= $2 returning {LEVEL_COLUMNS} \
             ), moved as ( \
               insert into stock_movements (id, sku, reason, on_hand_delta, reserved_delta, \
                 on_hand_after, reserved_after, actor_id, order_id) \
               select $3, sku, 'reserve', 0, $2, on_hand, reserved, $4, $5 from changed \
             ) select {LEVEL_COLUMNS} from changed"
        );
        let mut rows = Vec::with_capacity(lines.len());
        let mut failed_at = None;
        for (index, line) in lines.iter().enumerate() {
            let row = sqlx::query_as::<_, LevelRow>(&sql)
                .bind(line.sku.as_str())
                .bind(line.quantity)
                .bind(Uuid::now_v7())
                .bind(actor.user_id.as_deref())
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(row) => rows.push(row),
                None => {
                    failed_at = Some(index);
                    break;
                }
            }
        }

        if let Some(index) = failed_at {
            // Name every short SKU, not just the first: the failing one and any later line that
            // would fail too (read without locking; nothing is reserved either way).
            let rest = &lines[index..];
            let rest_skus: Vec<&str> = rest.iter().map(|l| l.sku.as_str()).collect();
            let available: Vec<(String, i32)> = sqlx::query_as(
                "select sku, on_hand - reserved from stock where sku = any($1::text[])",
            )
            .bind(&rest_skus)
            .fetch_all(&mut *tx)
            .await?;
            tx.rollback().await?;
            let lookup = |sku: &Sku| {
                available
                    .iter()
                    .find(|(s, _)| s == sku.as_str())
                    .map(|(_, a)| *a)
            };
            let unknown: Vec<Sku> = rest
                .iter()
                .filter(|l| lookup(&l.sku).is_none())
                .map(|l| l.sku.clone())
                .collect();
            if !unknown.is_empty() {
                return Ok(ReserveOutcome::Unknown(unknown));
            }
            let mut short: Vec<Sku> = rest
                .iter()
                .filter(|l| lookup(&l.sku).is_some_and(|a| a < l.quantity))
                .map(|l| l.sku.clone())
                .collect();
            if short.first() != Some(&rest[0].sku) {
                // The failing line's stock was freed between its update and the read above.
                short.insert(0, rest[0].sku.clone());
            }
            return Ok(ReserveOutcome::Short(short));
        }

        // The lines reference stock rows this transaction already holds, so their foreign key
        // checks add no lock traffic on a hot row.
        let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
        let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
        sqlx::query(
            "insert into reservation_lines (order_id, sku, quantity) \
             select $1, l.sku, l.quantity from unnest($2::text[], $3::int[]) as l(sku, quantity)",
        )
        .bind(order_id)
        .bind(&skus)
        .bind(&quantities)
        .execute(&mut *tx)
        .await?;
        for row in &rows {
            settle_low_stock(&mut tx, row, actor).await?;
        }
        tx.commit().await?;
        reservation
            .with_lines(lines.to_vec())
            .map(ReserveOutcome::Reserved)
    }

    #[tracing::instrument(skip(self, actor))]
    async fn commit(&self, order_id: Uuid, actor: &Actor) -> Result<CommitOutcome, RepoError> {
        let mut tx = self.pool.begin().await?;
        let Some((row, due)) = lock_reservation(&mut tx, order_id).await? else {
            return Ok(CommitOutcome::NotFound);
        };
        let lines = reservation_lines(&mut tx, order_id).await?;
        match row.status()? {
            ReservationStatus::Committed => {
                tx.rollback().await?;
                Ok(CommitOutcome::AlreadyCommitted(row.with_lines(lines)?))
            }
            ReservationStatus::Released | ReservationStatus::Expired => {
                tx.rollback().await?;
                Ok(CommitOutcome::Closed(row.with_lines(lines)?))
            }
            ReservationStatus::Active if due => {
                // Past its TTL but not swept yet: do the sweeper's work now, then refuse.
                give_back(&mut tx, order_id, &lines, MovementReason::Expire, actor).await?;
                set_status(&mut tx, order_id, ReservationStatus::Expired).await?;
                tx.commit().await?;
                with_status(row, lines, ReservationStatus::Expired).map(CommitOutcome::Closed)
            }
            ReservationStatus::Active => {
                let sql = format!(
                    "update stock set on_hand = on_hand - $2, reserved = reserved - $2, \
                     updated_at = now() where sku = $1 returning {LEVEL_COLUMNS}"
                );
                let mut rows = Vec::with_capacity(lines.len());
                for line in &lines {
                    let level = sqlx::query_as::<_, LevelRow>(&sql)
                        .bind(line.sku.as_str())
                        .bind(line.quantity)
                        .fetch_one(&mut *tx)
                        .await?;
                    rows.push((level, line.quantity));
                }
                let movements: Vec<(&LevelRow, i32, i32)> =
                    rows.iter().map(|(r, q)| (r, -q, -q)).collect();
                insert_movements(
                    &mut tx,
                    MovementReason::Sale,
                    Some(order_id),
                    &movements,
                    actor,
                )
                .await?;
                for (level, _) in &rows {
                    settle_low_stock(&mut tx, level, actor).await?;
                }
                set_status(&mut tx, order_id, ReservationStatus::Committed).await?;
                tx.commit().await?;
                with_status(row, lines, ReservationStatus::Committed).map(CommitOutcome::Committed)
            }
        }
    }

    #[tracing::instrument(skip(self, actor))]
    async fn release(&self, order_id: Uuid, actor: &Actor) -> Result<ReleaseOutcome, RepoError> {
        let mut tx = self.pool.begin().await?;
        let Some((row, _)) = lock_reservation(&mut tx, order_id).await? else {
            return Ok(ReleaseOutcome::NotFound);
        };
        let lines = reservation_lines(&mut tx, order_id).await?;
        match row.status()? {
            ReservationStatus::Committed => {
                tx.rollback().await?;
                Ok(ReleaseOutcome::Committed(row.with_lines(lines)?))
            }
            ReservationStatus::Released | ReservationStatus::Expired => {
                tx.rollback().await?;
                Ok(ReleaseOutcome::AlreadyClosed(row.with_lines(lines)?))
            }
            ReservationStatus::Active => {
                give_back(&mut tx, order_id, &lines, MovementReason::Release, actor).await?;
                set_status(&mut tx, order_id, ReservationStatus::Released).await?;
                tx.commit().await?;
                with_status(row, lines, ReservationStatus::Released).map(ReleaseOutcome::Released)
            }
        }
    }

    #[tracing::instrument(skip(self, actor), fields(sku = %adjustment.sku))]
    async fn adjust(
        &self,
        adjustment: &Adjustment,
        actor: &Actor,
    ) -> Result<AdjustOutcome, RepoError> {
        if let Some(key) = &adjustment.idempotency_key
            && let Some(outcome) = self.repeated_adjustment(key).await?
        {
            return Ok(outcome);
        }

        let mut tx = self.pool.begin().await?;
        // The condition refuses what the stock_levels check constraint would refuse anyway, so
        // the caller gets a clean answer instead of a constraint error.
        let sql = format!(
            "update stock set on_hand = on_hand + $2, updated_at = now() \
             where sku = $1 and on_hand + $2 >= reserved returning {LEVEL_COLUMNS}"
        );
        let row = sqlx::query_as::<_, LevelRow>(&sql)
            .bind(adjustment.sku.as_str())
            .bind(adjustment.delta)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(match self.stock(&adjustment.sku).await? {
                Some(level) => AdjustOutcome::BelowReserved(level),
                None => AdjustOutcome::UnknownSku,
            });
        };
        let movement = NewMovement {
            sku: &row.sku,
            reason: adjustment.reason,
            on_hand_delta: adjustment.delta,
            reserved_delta: 0,
            on_hand_after: row.on_hand,
            reserved_after: row.reserved,
            order_id: adjustment.order_id,
            note: &adjustment.note,
            idempotency_key: adjustment.idempotency_key.as_deref(),
        };
        let movement = match insert_movement(&mut tx, &movement, actor).await {
            Ok(movement) => movement.movement()?,
            Err(RepoError::Unique(_)) if adjustment.idempotency_key.is_some() => {
                // A concurrent call with the same key won; answer with its result.
                tx.rollback().await?;
                let key = adjustment.idempotency_key.as_deref().unwrap_or_default();
                return self.repeated_adjustment(key).await?.ok_or_else(|| {
                    RepoError::Backend(anyhow::anyhow!("idempotent adjustment vanished"))
                });
            }
            Err(err) => return Err(err),
        };
        let level = row.level()?;
        settle_low_stock(&mut tx, &row, actor).await?;
        insert_outbox(&mut tx, &OutboxEvent::adjusted(&level, &movement), actor).await?;
        tx.commit().await?;
        Ok(AdjustOutcome::Adjusted(level, movement))
    }

    #[tracing::instrument(skip(self, actor))]
    async fn set_threshold(
        &self,
        sku: &Sku,
        threshold: i32,
        actor: &Actor,
    ) -> Result<Option<StockLevel>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "update stock set low_stock_threshold = $2, updated_at = now() \
             where sku = $1 returning {LEVEL_COLUMNS}"
        );
        let Some(row) = sqlx::query_as::<_, LevelRow>(&sql)
            .bind(sku.as_str())
            .bind(threshold)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        settle_low_stock(&mut tx, &row, actor).await?;
        tx.commit().await?;
        row.level().map(Some)
    }

    #[tracing::instrument(skip(self))]
    async fn expire_due(&self, limit: usize) -> Result<usize, RepoError> {
        let actor = Actor::system();
        let mut expired = 0;
        while expired < limit {
            let mut tx = self.pool.begin().await?;
            // skip locked: a reservation being committed or released right now is left to that
            // call; another sweeper replica takes the next one instead of waiting.
            let sql = format!(
                "select {RESERVATION_COLUMNS} from reservations \
                 where status = 'active' and expires_at <= now() \
                 order by expires_at limit 1 for update skip locked"
            );
            let Some(row) = sqlx::query_as::<_, ReservationRow>(&sql)
                .fetch_optional(&mut *tx)
                .await?
            else {
                break;
            };
            let lines = reservation_lines(&mut tx, row.order_id).await?;
            give_back(
                &mut tx,
                row.order_id,
                &lines,
                MovementReason::Expire,
                &actor,
            )
            .await?;
            set_status(&mut tx, row.order_id, ReservationStatus::Expired).await?;
            tx.commit().await?;
            tracing::info!(order_id = %row.order_id, "expired reservation released");
            expired += 1;
        }
        Ok(expired)
    }
}
