//! Inventory use cases: stock levels, reservations and admin adjustments.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shopmesh_platform::cursor;
use shopmesh_platform::problem::FieldError;
use uuid::Uuid;

use crate::config::ProductConfig;
use crate::domain::{
    self, Actor, Adjustment, MovementReason, Reservation, ReservationStatus, Sku, StockLevel,
    StockMovement, field_error, reservation_lines,
};
use crate::error::Error;
use crate::repo::{AdjustOutcome, CommitOutcome, InventoryRepo, ReleaseOutcome, ReserveOutcome};

/// An adjustment as a caller sent it.
#[derive(Clone, Debug, Default)]
pub struct AdjustRequest {
    pub sku: String,
    pub delta: i32,
    /// `None` when the caller named no (or an unknown) reason.
    pub reason: Option<MovementReason>,
    pub note: String,
    pub order_id: String,
    pub idempotency_key: String,
}

pub struct InventoryService {
    repo: Arc<dyn InventoryRepo>,
    config: ProductConfig,
}

fn order_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw.trim()).map_err(|_| Error::field("order_id", "must be a UUID"))
}

/// Shows a reservation as callers see it at this moment (past its TTL reads as expired).
fn current(mut reservation: Reservation) -> Reservation {
    reservation.status = reservation.status_at(Utc::now());
    reservation
}

fn malformed_token() -> Error {
    Error::BadArgument("malformed page_token".into())
}

impl InventoryService {
    pub fn new(repo: Arc<dyn InventoryRepo>, config: ProductConfig) -> Self {
        Self { repo, config }
    }

    #[tracing::instrument(skip(self))]
    pub async fn stock(&self, sku: &str) -> Result<StockLevel, Error> {
        let sku = Sku::parse(sku)?;
        self.repo
            .stock(&sku)
            .await?
            .ok_or(Error::NotFound("stock record"))
    }

    /// A page of stock levels in SKU order.
    #[tracing::instrument(skip(self))]
    pub async fn list_stock(
        &self,
        page_size: i32,
        page_token: &str,
        low_only: bool,
    ) -> Result<(Vec<StockLevel>, Option<String>), Error> {
        let size = domain::page_size(page_size).map_err(Error::BadArgument)?;
        let flag = if low_only { "low" } else { "all" };
        let after = match page_token.trim() {
            "" => None,
            token => {
                let parts = cursor::decode(token, 3).ok_or_else(malformed_token)?;
                if parts[0] != "k1" || parts[1] != flag {
                    return Err(malformed_token());
                }
                Some(Sku::parse(&parts[2]).map_err(|_| malformed_token())?)
            }
        };
        let mut levels = self
            .repo
            .list_stock(after.as_ref(), low_only, size + 1)
            .await?;
        let next = if levels.len() > size {
            levels.truncate(size);
            levels
                .last()
                .map(|level| cursor::encode(&["k1", flag, level.sku.as_str()]))
        } else {
            None
        };
        Ok((levels, next))
    }

    /// A page of one SKU's audit trail, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn movements(
        &self,
        sku: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<StockMovement>, Option<String>), Error> {
        let sku = Sku::parse(sku)?;
        let size = domain::page_size(page_size).map_err(Error::BadArgument)?;
        let before = match page_token.trim() {
            "" => None,
            token => {
                let parts = cursor::decode(token, 3).ok_or_else(malformed_token)?;
                if parts[0] != "m1" || parts[1] != sku.as_str() {
                    return Err(malformed_token());
                }
                Some(parts[2].parse::<i64>().map_err(|_| malformed_token())?)
            }
        };
        if self.repo.stock(&sku).await?.is_none() {
            return Err(Error::NotFound("stock record"));
        }
        let mut movements = self.repo.movements(&sku, before, size + 1).await?;
        let next = if movements.len() > size {
            movements.truncate(size);
            movements
                .last()
                .map(|m| cursor::encode(&["m1", sku.as_str(), &m.seq.to_string()]))
        } else {
            None
        };
        Ok((movements, next))
    }

    /// The TTL of a reservation from a signed duration in milliseconds: the default when unset
    /// or zero, otherwise within the configured bounds.
    fn ttl(&self, requested_ms: Option<i64>) -> Result<Duration, FieldError> {
        let config = &self.config;
        let ttl = match requested_ms {
            None | Some(0) => return Ok(config.default_reservation_ttl),
            Some(ms) => u64::try_from(ms).map(Duration::from_millis),
        };
        match ttl {
            Ok(ttl) if ttl >= config.min_reservation_ttl && ttl <= config.max_reservation_ttl => {
                Ok(ttl)
            }
            _ => Err(field_error(
                "ttl",
                format!(
                    "must be between {} and {} seconds",
                    config.min_reservation_ttl.as_secs(),
                    config.max_reservation_ttl.as_secs()
                ),
            )),
        }
    }

    /// Holds stock for every line of an order or for none. Idempotent per order id: a repeat with
    /// the same lines returns the stored reservation whatever its status.
    #[tracing::instrument(skip(self, lines, actor), fields(lines = lines.len()))]
    pub async fn reserve(
        &self,
        order_id: &str,
        lines: &[(String, i32)],
        ttl_ms: Option<i64>,
        actor: &Actor,
    ) -> Result<Reservation, Error> {
        let mut errors = Vec::new();
        let order = Uuid::parse_str(order_id.trim())
            .map_err(|_| errors.push(field_error("order_id", "must be a UUID")))
            .ok();
        let lines = reservation_lines(lines).map_err(|e| errors.extend(e)).ok();
        let ttl = self.ttl(ttl_ms).map_err(|e| errors.push(e)).ok();
        let (Some(order), Some(lines), Some(ttl), true) = (order, lines, ttl, errors.is_empty())
        else {
            return Err(Error::Invalid(errors));
        };
        match self.repo.reserve(order, &lines, ttl, actor).await? {
            ReserveOutcome::Reserved(reservation) => Ok(reservation),
            ReserveOutcome::Existing(existing) if existing.lines == lines => Ok(current(existing)),
            ReserveOutcome::Existing(_) => Err(Error::ReservationMismatch(order)),
            ReserveOutcome::Short(skus) => Err(Error::InsufficientStock(skus)),
            ReserveOutcome::Unknown(skus) => Err(Error::UnknownSkus(skus)),
        }
    }

    /// Sells an order's reservation. Committing twice returns the committed reservation.
    #[tracing::instrument(skip(self, actor))]
    pub async fn commit(&self, order_id: &str, actor: &Actor) -> Result<Reservation, Error> {
        let order = self::order_id(order_id)?;
        match self.repo.commit(order, actor).await? {
            CommitOutcome::Committed(r) | CommitOutcome::AlreadyCommitted(r) => Ok(r),
            CommitOutcome::Closed(r) => Err(Error::FailedPrecondition(match r.status {
                ReservationStatus::Released => {
                    format!("the reservation of order {order} was released")
                }
                _ => format!("the reservation of order {order} has expired"),
            })),
            CommitOutcome::NotFound => Err(Error::NotFound("reservation")),
        }
    }

    /// Gives an order's reserved stock back. Safe to repeat, and for orders without one.
    #[tracing::instrument(skip(self, actor))]
    pub async fn release(
        &self,
        order_id: &str,
        actor: &Actor,
    ) -> Result<Option<Reservation>, Error> {
        let order = self::order_id(order_id)?;
        match self.repo.release(order, actor).await? {
            ReleaseOutcome::Released(r) | ReleaseOutcome::AlreadyClosed(r) => Ok(Some(r)),
            ReleaseOutcome::Committed(_) => Err(Error::FailedPrecondition(format!(
                "the reservation of order {order} was committed; restock with Adjust RETURN"
            ))),
            ReleaseOutcome::NotFound => Ok(None),
        }
    }

    #[tracing::instrument(skip(self, request, actor), fields(sku = %request.sku))]
    pub async fn adjust(
        &self,
        request: &AdjustRequest,
        actor: &Actor,
    ) -> Result<(StockLevel, StockMovement), Error> {
        let mut errors = Vec::new();
        let sku = Sku::parse(&request.sku).map_err(|e| errors.push(e)).ok();
        if request.delta == 0 {
            errors.push(field_error("delta", "must not be zero"));
        }
        let reason = match request.reason {
            Some(reason) if reason.adjustable() => Some(reason),
            _ => {
                errors.push(field_error(
                    "reason",
                    "must be RECEIVING, DAMAGE, CORRECTION or RETURN",
                ));
                None
            }
        };
        let note = domain::multiline_text("note", &request.note, 500)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let order = domain::optional_id("order_id", &request.order_id)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let key = request.idempotency_key.trim();
        if key.chars().count() > 200 {
            errors.push(field_error(
                "idempotency_key",
                "must be at most 200 characters",
            ));
        } else if domain::has_control(key) {
            errors.push(field_error(
                "idempotency_key",
                "must not contain control characters",
            ));
        }
        let (Some(sku), Some(reason), true) = (sku, reason, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        let adjustment = Adjustment {
            sku,
            delta: request.delta,
            reason,
            note,
            order_id: order,
            idempotency_key: (!key.is_empty()).then(|| key.to_owned()),
        };
        match self.repo.adjust(&adjustment, actor).await? {
            AdjustOutcome::Adjusted(level, movement) | AdjustOutcome::Repeated(level, movement) => {
                Ok((level, movement))
            }
            AdjustOutcome::BelowReserved(level) => Err(Error::FailedPrecondition(format!(
                "adjusting {} by {} would leave on_hand below reserved ({} on hand, {} reserved)",
                level.sku, adjustment.delta, level.on_hand, level.reserved
            ))),
            AdjustOutcome::UnknownSku => Err(Error::NotFound("stock record")),
        }
    }

    #[tracing::instrument(skip(self, actor))]
    pub async fn set_threshold(
        &self,
        sku: &str,
        threshold: i32,
        actor: &Actor,
    ) -> Result<StockLevel, Error> {
        let sku = Sku::parse(sku)?;
        if threshold < 0 {
            return Err(Error::field("low_stock_threshold", "must not be negative"));
        }
        self.repo
            .set_threshold(&sku, threshold, actor)
            .await?
            .ok_or(Error::NotFound("stock record"))
    }

    /// Releases reservations past their TTL; the background sweeper calls this on every tick.
    pub async fn sweep(&self) -> Result<usize, Error> {
        Ok(self.repo.expire_due(self.config.sweep_batch).await?)
    }
}
