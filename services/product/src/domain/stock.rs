//! Stock levels, the low-stock signal, and the audit trail of stock movements and adjustments.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::sku::Sku;

/// The stock level of one SKU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: Sku,
    pub product_id: Uuid,
    pub on_hand: i32,
    pub reserved: i32,
    pub low_stock_threshold: i32,
    pub updated_at: DateTime<Utc>,
}

impl StockLevel {
    pub fn available(&self) -> i32 {
        self.on_hand - self.reserved
    }

    pub fn is_low(&self) -> bool {
        self.available() <= self.low_stock_threshold
    }
}

/// What a change of available stock means for the low-stock state of a SKU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowStockChange {
    /// Available fell to or below the threshold: emit one inventory.low_stock.
    BecameLow,
    /// Available rose above the threshold again: the next fall emits again.
    Recovered,
    Unchanged,
}

/// Compares the recorded low-stock flag with the new level. Only the transition into low stock
/// emits an event, so a SKU that stays low does not repeat it on every sale.
pub fn low_stock_change(was_low: bool, available: i32, threshold: i32) -> LowStockChange {
    match (was_low, available <= threshold) {
        (false, true) => LowStockChange::BecameLow,
        (true, false) => LowStockChange::Recovered,
        _ => LowStockChange::Unchanged,
    }
}

/// Why a stock level changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MovementReason {
    Receiving,
    Damage,
    Correction,
    Return,
    Sale,
    Reserve,
    Release,
    Expire,
}

impl MovementReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiving => "receiving",
            Self::Damage => "damage",
            Self::Correction => "correction",
            Self::Return => "return",
            Self::Sale => "sale",
            Self::Reserve => "reserve",
            Self::Release => "release",
            Self::Expire => "expire",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "receiving" => Self::Receiving,
            "damage" => Self::Damage,
            "correction" => Self::Correction,
            "return" => Self::Return,
            "sale" => Self::Sale,
            "reserve" => Self::Reserve,
            "release" => Self::Release,
            "expire" => Self::Expire,
            _ => return None,
        })
    }

    /// Whether an admin may give this reason to Adjust; the others are recorded by the
    /// reservation life cycle only.
    pub fn adjustable(self) -> bool {
        matches!(
            self,
            Self::Receiving | Self::Damage | Self::Correction | Self::Return
        )
    }
}

/// One entry of the stock audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockMovement {
    pub id: Uuid,
    pub seq: i64,
    pub sku: Sku,
    pub reason: MovementReason,
    pub on_hand_delta: i32,
    pub reserved_delta: i32,
    pub on_hand_after: i32,
    pub reserved_after: i32,
    pub actor_id: Option<String>,
    pub order_id: Option<Uuid>,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

/// A validated admin adjustment of on_hand.
#[derive(Clone, Debug)]
pub struct Adjustment {
    pub sku: Sku,
    pub delta: i32,
    pub reason: MovementReason,
    pub note: String,
    pub order_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_stock_fires_only_on_the_way_down() {
        assert_eq!(low_stock_change(false, 5, 5), LowStockChange::BecameLow);
        assert_eq!(low_stock_change(true, 3, 5), LowStockChange::Unchanged);
        assert_eq!(low_stock_change(true, 6, 5), LowStockChange::Recovered);
        assert_eq!(low_stock_change(false, 6, 5), LowStockChange::Unchanged);
    }
}
