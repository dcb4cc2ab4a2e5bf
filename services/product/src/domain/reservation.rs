//! Reservations: stock held for an order, its lines and its life cycle.

use chrono::{DateTime, Utc};
use shopmesh_platform::problem::FieldError;
use uuid::Uuid;

use crate::domain::sku::Sku;
use crate::domain::text::field_error;

/// Most lines in one reservation.
pub const MAX_RESERVATION_LINES: usize = 100;

/// The life cycle of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationStatus {
    Active,
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "active" => Self::Active,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// A quantity of one SKU held for an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationLine {
    pub sku: Sku,
    pub quantity: i32,
}

/// Validates the lines of a reservation and sorts them by SKU. Every transaction locks stock rows
/// in SKU order, which is what keeps concurrent multi-line reservations from deadlocking.
pub fn reservation_lines(raw: &[(String, i32)]) -> Result<Vec<ReservationLine>, Vec<FieldError>> {
    if raw.is_empty() {
        return Err(vec![field_error("lines", "at least one line is required")]);
    }
    if raw.len() > MAX_RESERVATION_LINES {
        return Err(vec![field_error(
            "lines",
            format!("at most {MAX_RESERVATION_LINES} lines"),
        )]);
    }
    let mut errors = Vec::new();
    let mut lines: Vec<ReservationLine> = Vec::with_capacity(raw.len());
    for (index, (sku, quantity)) in raw.iter().enumerate() {
        let sku = match Sku::parse_field(&format!("lines[{index}].sku"), sku) {
            Ok(sku) => sku,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        if *quantity <= 0 {
            errors.push(field_error(
                &format!("lines[{index}].quantity"),
                "must be positive",
            ));
        }
        if lines.iter().any(|line| line.sku == sku) {
            errors.push(field_error(
                &format!("lines[{index}].sku"),
                "each SKU may appear only once",
            ));
        }
        lines.push(ReservationLine {
            sku,
            quantity: *quantity,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(lines)
}

/// The stock held for one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    /// Sorted by SKU.
    pub lines: Vec<ReservationLine>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl Reservation {
    /// The status as callers see it: an active reservation past its expiry is expired, whether
    /// or not the sweeper got to it yet.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        if self.status == ReservationStatus::Active && self.expires_at <= now {
            ReservationStatus::Expired
        } else {
            self.status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_lines_are_checked_and_sorted() {
        let lines = reservation_lines(&[("b-2".into(), 1), ("A-1".into(), 3)]).unwrap();
        assert_eq!(lines[0].sku.as_str(), "A-1");
        assert_eq!(lines[1].sku.as_str(), "B-2");
        assert!(reservation_lines(&[]).is_err());
        let errors = reservation_lines(&[("A-1".into(), 0), ("a-1".into(), 1)]).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["lines[0].quantity", "lines[1].sku"]);
    }

    #[test]
    fn expired_active_reservations_read_as_expired() {
        let now = Utc::now();
        let reservation = Reservation {
            order_id: Uuid::now_v7(),
            status: ReservationStatus::Active,
            lines: Vec::new(),
            expires_at: now,
            created_at: now,
        };
        assert_eq!(reservation.status_at(now), ReservationStatus::Expired);
        assert_eq!(
            reservation.status_at(now - chrono::Duration::seconds(1)),
            ReservationStatus::Active
        );
    }
}
