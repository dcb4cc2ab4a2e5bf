//! JSON shapes of the admin analytics routes, the date range of their queries, and their
//! conversion from the analytics service's contracts. Every amount is an integer in minor units
//! of the shop currency, which each answer names once (`currency`).

use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::analytics::v1 as pb;
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::order::v1::OrderStatus;
use shopmesh_platform::problem::{FieldError, Problem, field_error};
use shopmesh_platform::time::timestamp;
use utoipa::{IntoParams, ToSchema};

/// The longest range, in days (the analytics service's limit).
pub const MAX_RANGE_DAYS: u64 = 366;

/// The days a question covers.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// First UTC day of the range, inclusive (`YYYY-MM-DD`); default: `to`.
    #[param(value_type = Option<String>, format = Date, example = "2026-03-01")]
    pub from: Option<String>,
    /// Last UTC day of the range, inclusive (`YYYY-MM-DD`), at most 366 days after `from`;
    /// default: today (UTC).
    #[param(value_type = Option<String>, format = Date, example = "2026-03-31")]
    pub to: Option<String>,
}

/// What ranks the top products.
#[derive(Deserialize, Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TopProductsBy {
    /// Units sold, revenue breaking ties.
    #[default]
    Units,
    /// Revenue, units breaking ties.
    Revenue,
}

impl TopProductsBy {
    pub fn to_pb(self) -> pb::TopProductsOrder {
        match self {
            Self::Units => pb::TopProductsOrder::Units,
            Self::Revenue => pb::TopProductsOrder::Revenue,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TopProductsQuery {
    /// First UTC day of the range, inclusive (`YYYY-MM-DD`); default: `to`.
    #[param(value_type = Option<String>, format = Date, example = "2026-03-01")]
    pub from: Option<String>,
    /// Last UTC day of the range, inclusive (`YYYY-MM-DD`), at most 366 days after `from`;
    /// default: today (UTC).
    #[param(value_type = Option<String>, format = Date, example = "2026-03-31")]
    pub to: Option<String>,
    /// What ranks the products (default `units`); the product id breaks remaining ties.
    #[param(inline)]
    pub by: Option<TopProductsBy>,
    /// How many products, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A validated range of whole UTC days, `from` to `to` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// A calendar date written exactly `YYYY-MM-DD`.
fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
}

fn invalid(errors: Vec<FieldError>) -> Problem {
    Problem::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid date range",
    )
    .with_errors(errors)
}

impl DayRange {
    /// The range of the query parameters (`to` defaults to `today`, `from` to `to`); a date
    /// that does not parse, `from` after `to`, or more than [`MAX_RANGE_DAYS`] days is 422
    /// naming the parameter.
    pub fn parse(from: Option<&str>, to: Option<&str>, today: NaiveDate) -> Result<Self, Problem> {
        let date = |name: &str, value: Option<&str>| match value {
            None => Ok(None),
            Some(text) => parse_date(text)
                .map(Some)
                .ok_or_else(|| field_error(name, "must be a calendar date written YYYY-MM-DD")),
        };
        let (from, to) = match (date("from", from), date("to", to)) {
            (Ok(from), Ok(to)) => (from, to),
            (from, to) => {
                return Err(invalid(
                    [from.err(), to.err()].into_iter().flatten().collect(),
                ));
            }
        };
        let to = to.unwrap_or(today);
        let from = from.unwrap_or(to);
        if from > to {
            return Err(invalid(vec![field_error(
                "to",
                "must not be before `from`",
            )]));
        }
        // The day after `to` exists for every date written with four digits.
        let spanned = to
            .signed_duration_since(from)
            .num_days()
            .unsigned_abs()
            .saturating_add(1);
        if spanned > MAX_RANGE_DAYS {
            return Err(invalid(vec![field_error(
                "to",
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            )]));
        }
        Ok(Self { from, to })
    }

    /// The range of the query parameters, with today's UTC date for the defaults.
    pub fn from_query(from: Option<&str>, to: Option<&str>) -> Result<Self, Problem> {
        Self::parse(from, to, Utc::now().date_naive())
    }

    /// The same days as the analytics service's half-open time range: `from` 00:00 UTC to the
    /// day after `to`, 00:00 UTC.
    pub fn to_pb(self) -> Result<pb::TimeRange, Problem> {
        let end = self
            .to
            .checked_add_days(Days::new(1))
            .ok_or_else(|| invalid(vec![field_error("to", "is too far in the future")]))?;
        Ok(pb::TimeRange {
            start_time: Some(timestamp(
                self.from.and_time(chrono::NaiveTime::MIN).and_utc(),
            )),
            end_time: Some(timestamp(end.and_time(chrono::NaiveTime::MIN).and_utc())),
        })
    }
}

fn minor(money: Option<&Money>) -> i64 {
    money.map_or(0, |m| m.amount_minor)
}

/// An order status name without its prefix (`ORDER_STATUS_PAID` → `PAID`).
fn status_name(raw: i32) -> String {
    OrderStatus::try_from(raw)
        .map(|status| {
            let name = status.as_str_name();
            name.strip_prefix("ORDER_STATUS_")
                .unwrap_or(name)
                .to_owned()
        })
        .unwrap_or_else(|_| "UNSPECIFIED".to_owned())
}

/// Checkout conversion over the orders placed in the range.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct ConversionFigures {
    /// Checkouts started: orders placed in the range (`order.created`).
    #[schema(example = 40)]
    pub started: i64,
    /// Those of them that were paid (`order.paid`), whenever, whatever became of them since.
    #[schema(example = 30)]
    pub paid: i64,
    /// `paid / started`, from 0 to 1; 0 when nothing was started.
    #[schema(example = 0.75, minimum = 0, maximum = 1)]
    pub rate: f64,
}

/// The orders placed in the range that have one status now.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct StatusFigures {
    /// CREATED (still in checkout), PAID, SHIPPED, COMPLETED, CANCELLED or REFUNDED.
    #[schema(example = "PAID")]
    pub status: String,
    #[schema(example = 12)]
    pub orders: i64,
    /// Sum of their totals, minor units.
    #[schema(example = 45000)]
    pub amount: i64,
}

/// The figures of a range of days. Placement figures (`orders`, `conversion`, `by_status`)
/// count an order on the UTC day it was placed; paid figures (`paid_orders`, `revenue`,
/// `average_order_value`, `customers`) on the day it was paid; refunds on the day they were
/// made. Built from events: they lag the shop by the event delay.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct AnalyticsSummary {
    /// Orders placed in the range, whatever became of them (the sum of `by_status`).
    #[schema(example = 40)]
    pub orders: i64,
    /// Sum of the totals of the orders paid in the range, minor units, before refunds.
    #[schema(example = 125000)]
    pub revenue: i64,
    /// `revenue / paid_orders`, rounded down, minor units; 0 without paid orders.
    #[schema(example = 4166)]
    pub average_order_value: i64,
    /// ISO 4217 code of the shop currency, the currency of every amount here.
    #[schema(example = "USD")]
    pub currency: String,
    /// Orders paid in the range.
    #[schema(example = 30)]
    pub paid_orders: i64,
    /// Sum of the refunds made in the range, minor units (not taken off `revenue`).
    #[schema(example = 8000)]
    pub refunded: i64,
    /// Distinct customers with an order paid in the range.
    #[schema(example = 25)]
    pub customers: i64,
    /// Customer accounts registered in the range.
    #[schema(example = 7)]
    pub new_customers: i64,
    pub conversion: ConversionFigures,
    /// One entry per status, in the order CREATED, PAID, SHIPPED, COMPLETED, CANCELLED,
    /// REFUNDED, zeros included.
    pub by_status: Vec<StatusFigures>,
    /// First day of the range (UTC), inclusive.
    pub from: NaiveDate,
    /// Last day of the range (UTC), inclusive.
    pub to: NaiveDate,
}

impl AnalyticsSummary {
    pub fn new(s: pb::GetSummaryResponse, range: DayRange) -> Self {
        let conversion = s.conversion.unwrap_or_default();
        Self {
            orders: s.placed_order_count,
            revenue: minor(s.revenue.as_ref()),
            average_order_value: minor(s.average_order_value.as_ref()),
            currency: s.currency,
            paid_orders: s.order_count,
            refunded: minor(s.refunded.as_ref()),
            customers: s.customer_count,
            new_customers: s.new_customer_count,
            conversion: ConversionFigures {
                started: conversion.started,
                paid: conversion.paid,
                rate: conversion.rate,
            },
            by_status: s
                .by_status
                .into_iter()
                .map(|entry| StatusFigures {
                    status: status_name(entry.status),
                    orders: entry.order_count,
                    amount: minor(entry.amount.as_ref()),
                })
                .collect(),
            from: range.from,
            to: range.to,
        }
    }
}

/// The figures of one UTC day.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct DayFigures {
    #[schema(value_type = String, format = Date, example = "2026-03-01")]
    pub date: String,
    /// Orders placed that day.
    #[schema(example = 14)]
    pub orders: i64,
    /// Orders paid that day.
    #[schema(example = 11)]
    pub paid_orders: i64,
    /// Sum of the totals of the orders paid that day, minor units, before refunds.
    #[schema(example = 52000)]
    pub revenue: i64,
    /// Sum of the refunds made that day, minor units.
    #[schema(example = 0)]
    pub refunded: i64,
}

/// The figures of every day of a range, oldest first, days without orders included.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct AnalyticsTimeseries {
    /// ISO 4217 code of the shop currency, the currency of every amount here.
    #[schema(example = "USD")]
    pub currency: String,
    pub days: Vec<DayFigures>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl AnalyticsTimeseries {
    pub fn new(r: pb::GetRevenueByDayResponse, range: DayRange) -> Self {
        Self {
            currency: r.currency,
            days: r
                .days
                .into_iter()
                .map(|day| DayFigures {
                    orders: day.placed_order_count,
                    paid_orders: day.order_count,
                    revenue: minor(day.revenue.as_ref()),
                    refunded: minor(day.refunded.as_ref()),
                    date: day.date,
                })
                .collect(),
            from: range.from,
            to: range.to,
        }
    }
}

/// The sales of one product: the lines of the orders paid in the range, before refunds.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct ProductFigures {
    pub product_id: String,
    /// SKU at the latest sale.
    #[schema(example = "KET-1")]
    pub sku: String,
    /// Name at the latest sale.
    #[schema(example = "Kettle")]
    pub name: String,
    /// Units sold.
    #[schema(example = 9)]
    pub units: i64,
    /// Sum of the line totals, minor units.
    #[schema(example = 22500)]
    pub revenue: i64,
}

/// The best-selling products of a range, best first.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct AnalyticsTopProducts {
    /// What ranked them.
    pub by: TopProductsBy,
    /// ISO 4217 code of the shop currency, the currency of every amount here.
    #[schema(example = "USD")]
    pub currency: String,
    pub products: Vec<ProductFigures>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl AnalyticsTopProducts {
    pub fn new(r: pb::GetTopProductsResponse, by: TopProductsBy, range: DayRange) -> Self {
        Self {
            by,
            currency: r.currency,
            products: r
                .products
                .into_iter()
                .map(|p| ProductFigures {
                    revenue: minor(p.revenue.as_ref()),
                    units: p.units_sold,
                    product_id: p.product_id,
                    sku: p.sku,
                    name: p.name,
                })
                .collect(),
            from: range.from,
            to: range.to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn fields(problem: &Problem) -> Vec<&str> {
        problem.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn ranges_default_to_today_and_cover_whole_days() {
        let today = day("2026-03-15");
        let range = DayRange::parse(None, None, today).unwrap();
        assert_eq!((range.from, range.to), (today, today));
        let range = DayRange::parse(Some("2026-03-01"), None, today).unwrap();
        assert_eq!((range.from, range.to), (day("2026-03-01"), today));
        let range = DayRange::parse(None, Some("2026-02-01"), today).unwrap();
        assert_eq!(
            (range.from, range.to),
            (day("2026-02-01"), day("2026-02-01"))
        );
        let pb = DayRange::parse(Some("2026-02-28"), Some("2026-03-01"), today)
            .unwrap()
            .to_pb()
            .unwrap();
        assert_eq!(
            shopmesh_platform::time::optional_time(pb.start_time),
            Some(day("2026-02-28").and_time(chrono::NaiveTime::MIN).and_utc())
        );
        assert_eq!(
            shopmesh_platform::time::optional_time(pb.end_time),
            Some(day("2026-03-02").and_time(chrono::NaiveTime::MIN).and_utc())
        );
        // 366 days is the most: a leap year end to end.
        assert!(DayRange::parse(Some("2024-01-01"), Some("2024-12-31"), today).is_ok());
    }

    #[test]
    fn bad_dates_and_ranges_are_422_naming_the_parameter() {
        let today = day("2026-03-15");
        for (from, to, expected) in [
            (Some("2026-3-1"), None, vec!["from"]),
            (Some("2026-02-30"), Some("yesterday"), vec!["from", "to"]),
            (None, Some("+2026-03-01"), vec!["to"]),
            (Some("2026-03-02"), Some("2026-03-01"), vec!["to"]),
            (Some("2025-01-01"), Some("2026-01-02"), vec!["to"]),
            (Some("2026-03-20"), None, vec!["to"]),
        ] {
            let problem = DayRange::parse(from, to, today).unwrap_err();
            assert_eq!(problem.status, 422, "{from:?} {to:?}");
            assert_eq!(fields(&problem), expected, "{from:?} {to:?}");
        }
    }

    #[test]
    fn the_summary_keeps_the_contract_names() {
        let range =
            DayRange::parse(Some("2026-03-01"), Some("2026-03-02"), day("2026-03-15")).unwrap();
        let usd = |amount_minor| {
            Some(Money {
                amount_minor,
                currency: "USD".into(),
            })
        };
        let summary = AnalyticsSummary::new(
            pb::GetSummaryResponse {
                order_count: 3,
                revenue: usd(9000),
                refunded: usd(1000),
                customer_count: 2,
                new_customer_count: 1,
                average_order_value: usd(3000),
                placed_order_count: 4,
                conversion: Some(pb::Conversion {
                    started: 4,
                    paid: 3,
                    rate: 0.75,
                }),
                by_status: vec![pb::StatusSummary {
                    status: OrderStatus::Paid.into(),
                    order_count: 3,
                    amount: usd(9000),
                }],
                currency: "USD".into(),
            },
            range,
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["orders"], 4);
        assert_eq!(json["revenue"], 9000);
        assert_eq!(json["average_order_value"], 3000);
        assert_eq!(json["currency"], "USD");
        assert_eq!(json["conversion"]["started"], 4);
        assert_eq!(json["conversion"]["paid"], 3);
        assert_eq!(json["conversion"]["rate"], 0.75);
        assert_eq!(json["by_status"][0]["status"], "PAID");
        assert_eq!(json["by_status"][0]["orders"], 3);
        assert_eq!(json["by_status"][0]["amount"], 9000);
        assert_eq!(json["from"], "2026-03-01");
        assert_eq!(json["to"], "2026-03-02");
    }
}
