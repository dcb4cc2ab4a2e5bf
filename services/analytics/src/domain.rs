//! What the analytics service knows: order statuses with the rank that makes their updates
//! order-independent, the facts events bring, and the validated time range of a question.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use shopmesh_platform::problem::{FieldError, field_error};
use uuid::Uuid;

/// The longest range a question may span.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Products ranked when the caller names no limit, and the most it may name.
pub const DEFAULT_TOP_PRODUCTS: u32 = 10;
pub const MAX_TOP_PRODUCTS: u32 = 100;

/// The status of an order as its latest event tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderStatus {
    Created,
    Paid,
    Shipped,
    Completed,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    /// Every status, in the order the status breakdown lists them.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Created,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
    ];

    /// The name stored in `order_facts.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Refunded => "REFUNDED",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// How far along an order is: an event never moves an order to a lower rank, so the status
    /// an order ends with does not depend on the order its events arrive in. CANCELLED and
    /// REFUNDED are final (the order service never leaves them, and never reaches one from the
    /// other).
    pub fn rank(self) -> i16 {
        match self {
            OrderStatus::Created => 1,
            OrderStatus::Paid => 2,
            OrderStatus::Shipped => 3,
            OrderStatus::Completed => 4,
            OrderStatus::Cancelled | OrderStatus::Refunded => 5,
        }
    }
}

/// An amount in minor units of a currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

/// One line of an order as placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub line_total_minor: i64,
}

/// What one order event says about its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderUpdate {
    pub order_id: Uuid,
    pub user_id: String,
    /// When the change committed (the envelope's occurred_at).
    pub occurred_at: DateTime<Utc>,
    /// order.created: `occurred_at` is when the order was placed.
    pub placed: bool,
    /// order.paid: `occurred_at` is when the order was paid.
    pub paid: bool,
    pub status: OrderStatus,
    /// The order total, when the event carries it.
    pub total: Option<Money>,
    /// The lines, when the event carries them (order.created and order.paid).
    pub lines: Vec<Line>,
}

/// One succeeded refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub refund_id: String,
    pub payment_id: String,
    pub order_id: String,
    pub amount: Money,
    pub refunded_at: DateTime<Utc>,
}

/// One registered account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub user_id: String,
    pub registered_at: DateTime<Utc>,
}

/// What an event adds to the figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    Order(OrderUpdate),
    Refund(Refund),
    Registration(Registration),
}

/// A validated half-open time range `[start, end)`: start before end, at most
/// [`MAX_RANGE_DAYS`] long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Range {
    /// The range of `start` and `end` (`None`: absent or unrepresentable), every problem named
    /// by its field under `range`.
    pub fn new(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if start.is_none() {
            errors.push(field_error("range.start_time", "is required"));
        }
        if end.is_none() {
            errors.push(field_error("range.end_time", "is required"));
        }
        let (Some(start), Some(end)) = (start, end) else {
            return Err(errors);
        };
        if end <= start {
            return Err(vec![field_error(
                "range.end_time",
                "must be after range.start_time",
            )]);
        }
        if end - start > Duration::days(MAX_RANGE_DAYS) {
            return Err(vec![field_error(
                "range",
                format!("must span at most {MAX_RANGE_DAYS} days"),
            )]);
        }
        Ok(Self { start, end })
    }

    /// The UTC calendar days the range touches, oldest first.
    pub fn days(&self) -> Vec<NaiveDate> {
        let first = self.start.date_naive();
        // The end is excluded: the last day is the one of the last instant inside the range.
        let last = (self.end - Duration::nanoseconds(1)).date_naive();
        first.iter_days().take_while(|day| *day <= last).collect()
    }
}

/// How the top products are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranking {
    /// Units sold, revenue breaking ties.
    Units,
    /// Revenue, units breaking ties.
    Revenue,
}

/// The limit of a top-products question: 0 means [`DEFAULT_TOP_PRODUCTS`].
pub fn top_products_limit(limit: i32) -> Result<u32, FieldError> {
    match u32::try_from(limit) {
        Ok(0) => Ok(DEFAULT_TOP_PRODUCTS),
        Ok(limit) if limit <= MAX_TOP_PRODUCTS => Ok(limit),
        _ => Err(field_error(
            "limit",
            format!("must be between 0 and {MAX_TOP_PRODUCTS}"),
        )),
    }
}

/// `sum / count` rounded down; zero when `count` is zero.
pub fn average(sum: i64, count: i64) -> i64 {
    if count > 0 { sum.div_euclid(count) } else { 0 }
}

/// `part / whole` as a rate from 0 to 1; zero when `whole` is zero.
pub fn rate(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        part as f64 / whole as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn ranks_never_go_back_and_names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert!(OrderStatus::Created.rank() < OrderStatus::Paid.rank());
        assert!(OrderStatus::Paid.rank() < OrderStatus::Shipped.rank());
        assert!(OrderStatus::Shipped.rank() < OrderStatus::Completed.rank());
        assert!(OrderStatus::Completed.rank() < OrderStatus::Refunded.rank());
        assert!(OrderStatus::Paid.rank() < OrderStatus::Cancelled.rank());
        assert_eq!(OrderStatus::parse("LOST"), None);
    }

    #[test]
    fn ranges_are_checked_field_by_field() {
        let fields = |r: Result<Range, Vec<FieldError>>| -> Vec<String> {
            r.unwrap_err().into_iter().map(|e| e.field).collect()
        };
        assert_eq!(
            fields(Range::new(None, None)),
            ["range.start_time", "range.end_time"]
        );
        assert_eq!(
            fields(Range::new(Some(at(2026, 3, 2, 0)), Some(at(2026, 3, 1, 0)))),
            ["range.end_time"]
        );
        assert_eq!(
            fields(Range::new(Some(at(2026, 3, 1, 0)), Some(at(2026, 3, 1, 0)))),
            ["range.end_time"]
        );
        assert_eq!(
            fields(Range::new(Some(at(2025, 1, 1, 0)), Some(at(2026, 1, 3, 0)))),
            ["range"]
        );
        // A leap year: 366 days is allowed.
        assert!(Range::new(Some(at(2024, 1, 1, 0)), Some(at(2025, 1, 1, 0))).is_ok());
    }

    #[test]
    fn a_range_touches_its_utc_days() {
        let whole = Range::new(Some(at(2026, 3, 1, 0)), Some(at(2026, 3, 3, 0))).unwrap();
        assert_eq!(
            whole.days(),
            [
                NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
            ]
        );
        let partial = Range::new(Some(at(2026, 3, 1, 22)), Some(at(2026, 3, 2, 1))).unwrap();
        assert_eq!(partial.days().len(), 2);
        let hour = Range::new(Some(at(2026, 3, 1, 5)), Some(at(2026, 3, 1, 6))).unwrap();
        assert_eq!(hour.days().len(), 1);
    }

    #[test]
    fn limits_averages_and_rates() {
        assert_eq!(top_products_limit(0), Ok(10));
        assert_eq!(top_products_limit(100), Ok(100));
        assert!(top_products_limit(101).is_err());
        assert!(top_products_limit(-1).is_err());
        assert_eq!(average(1000, 3), 333);
        assert_eq!(average(1000, 0), 0);
        assert_eq!(rate(1, 4), 0.25);
        assert_eq!(rate(3, 0), 0.0);
    }
}
