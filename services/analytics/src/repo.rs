//! Every SQL statement of the analytics service: applying facts (inside the consumer's
//! transaction, next to its inbox row) and the read queries behind the RPCs.
//!
//! Applying is order-independent: an order's placement time is the occurred_at of order.created
//! once that arrived (before it, the earliest occurred_at seen), its payment time the earliest
//! order.paid, its status the one of highest rank (ties broken by name), its total and lines the
//! same whichever event brought them. So whatever order an order's events arrive in, its row
//! ends the same.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::domain::{Fact, OrderStatus, OrderUpdate, Range, Ranking, Refund, Registration};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database cannot be reached (or the pool gave up waiting for a connection).
    #[error("the analytics database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error(transparent)]
    Backend(sqlx::Error),
}

impl From<sqlx::Error> for RepoError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                RepoError::Unavailable(err)
            }
            other => RepoError::Backend(other),
        }
    }
}

/// Applies `fact` in the consumer's transaction.
pub async fn apply(tx: &mut PgConnection, fact: &Fact) -> Result<(), sqlx::Error> {
    match fact {
        Fact::Order(update) => apply_order(tx, update).await,
        Fact::Refund(refund) => apply_refund(tx, refund).await,
        Fact::Registration(registration) => apply_registration(tx, registration).await,
    }
}

async fn apply_order(tx: &mut PgConnection, update: &OrderUpdate) -> Result<(), sqlx::Error> {
    let (total_minor, currency) = update.total.as_ref().map_or((0, ""), |money| {
        (money.amount_minor, money.currency.as_str())
    });
    sqlx::query(
        "insert into order_facts as f (order_id, user_id, placed_at, placed_known, paid_at, \
             status, status_rank, total_minor, currency) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         on conflict (order_id) do update set \
             user_id = case when f.user_id = '' then excluded.user_id else f.user_id end, \
             placed_at = case \
                 when excluded.placed_known then excluded.placed_at \
                 when f.placed_known then f.placed_at \
                 else least(f.placed_at, excluded.placed_at) end, \
             placed_known = f.placed_known or excluded.placed_known, \
             paid_at = least(f.paid_at, excluded.paid_at), \
             status = case when (excluded.status_rank, excluded.status) > (f.status_rank, f.status) \
                 then excluded.status else f.status end, \
             status_rank = greatest(f.status_rank, excluded.status_rank), \
             total_minor = case when $10 then excluded.total_minor else f.total_minor end, \
             currency = case when $10 then excluded.currency else f.currency end, \
             updated_at = now()",
    )
    .bind(update.order_id)
    .bind(&update.user_id)
    .bind(update.occurred_at)
    .bind(update.placed)
    .bind(update.paid.then_some(update.occurred_at))
    .bind(update.status.as_str())
    .bind(update.status.rank())
    .bind(total_minor)
    .bind(currency)
    .bind(update.total.is_some())
    .execute(&mut *tx)
    .await?;
    if update.lines.is_empty() {
        return Ok(());
    }
    let mut numbers = Vec::with_capacity(update.lines.len());
    let mut products = Vec::with_capacity(update.lines.len());
    let mut skus = Vec::with_capacity(update.lines.len());
    let mut names = Vec::with_capacity(update.lines.len());
    let mut quantities = Vec::with_capacity(update.lines.len());
    let mut totals = Vec::with_capacity(update.lines.len());
    for (number, line) in update.lines.iter().enumerate() {
        numbers.push(i32::try_from(number).unwrap_or(i32::MAX));
        products.push(line.product_id.clone());
        skus.push(line.sku.clone());
        names.push(line.name.clone());
        quantities.push(line.quantity);
        totals.push(line.line_total_minor);
    }
    // order.created and order.paid carry the same snapshot: the first to arrive writes it.
    sqlx::query(
        "insert into order_fact_lines (order_id, line_no, product_id, sku, product_name, \
             quantity, line_total_minor) \
         select $1, * from unnest($2::integer[], $3::text[], $4::text[], $5::text[], \
             $6::integer[], $7::bigint[]) \
         on conflict (order_id, line_no) do nothing",
    )
    .bind(update.order_id)
    .bind(numbers)
    .bind(products)
    .bind(skus)
    .bind(names)
    .bind(quantities)
    .bind(totals)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply_refund(tx: &mut PgConnection, refund: &Refund) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into refunds (refund_id, payment_id, order_id, amount_minor, currency, \
             refunded_at) \
         values ($1, $2, $3, $4, $5, $6) \
         on conflict (refund_id) do nothing",
    )
    .bind(&refund.refund_id)
    .bind(&refund.payment_id)
    .bind(&refund.order_id)
    .bind(refund.amount.amount_minor)
    .bind(&refund.amount.currency)
    .bind(refund.refunded_at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn apply_registration(
    tx: &mut PgConnection,
    registration: &Registration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into registrations as r (user_id, registered_at) values ($1, $2) \
         on conflict (user_id) do update set \
             registered_at = least(r.registered_at, excluded.registered_at)",
    )
    .bind(&registration.user_id)
    .bind(registration.registered_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// The figures of a range (amounts in minor units of the shop currency).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Orders placed in the range.
    pub placed: i64,
    /// Of those, the ones paid (whenever).
    pub placed_and_paid: i64,
    /// Orders paid in the range.
    pub paid: i64,
    /// Sum of the totals of the orders paid in the range.
    pub revenue: i64,
    /// Distinct users with an order paid in the range.
    pub customers: i64,
    /// Refunds made in the range.
    pub refunded: i64,
    /// Accounts registered in the range.
    pub new_customers: i64,
    /// The orders placed in the range by latest status: (orders, sum of totals), every status.
    pub by_status: Vec<(OrderStatus, i64, i64)>,
}

/// The figures of one UTC day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub placed: i64,
    pub paid: i64,
    pub revenue: i64,
    pub refunded: i64,
}

/// The sales of one product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductSales {
    pub product_id: String,
    /// SKU and name at the latest sale.
    pub sku: String,
    pub name: String,
    pub units: i64,
    pub revenue: i64,
}

/// The read side.
#[derive(Clone)]
pub struct AnalyticsRepo {
    pool: PgPool,
}

/// A read-only transaction that sees one snapshot, so that the figures of one answer agree
/// with each other while events keep arriving.
async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, RepoError> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

impl AnalyticsRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn summary(&self, range: Range, currency: &str) -> Result<Summary, RepoError> {
        let mut tx = snapshot(&self.pool).await?;
        let (placed, placed_and_paid, paid, revenue, customers): (i64, i64, i64, i64, i64) =
            sqlx::query_as(
                "select \
                     count(*) filter (where placed_at >= $1 and placed_at < $2), \
                     count(*) filter (where placed_at >= $1 and placed_at < $2 \
                         and paid_at is not null), \
                     count(*) filter (where paid_at >= $1 and paid_at < $2), \
                     coalesce(sum(total_minor) filter (where paid_at >= $1 and paid_at < $2), \
                         0)::bigint, \
                     count(distinct user_id) filter (where paid_at >= $1 and paid_at < $2) \
                 from order_facts \
                 where currency = $3 \
                     and ((placed_at >= $1 and placed_at < $2) \
                         or (paid_at >= $1 and paid_at < $2))",
            )
            .bind(range.start)
            .bind(range.end)
            .bind(currency)
            .fetch_one(&mut *tx)
            .await?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "select status, count(*), coalesce(sum(total_minor), 0)::bigint \
             from order_facts \
             where currency = $3 and placed_at >= $1 and placed_at < $2 \
             group by status",
        )
        .bind(range.start)
        .bind(range.end)
        .bind(currency)
        .fetch_all(&mut *tx)
        .await?;
        let mut counted: BTreeMap<OrderStatus, (i64, i64)> = BTreeMap::new();
        for (status, orders, amount) in rows {
            if let Some(status) = OrderStatus::parse(&status) {
                counted.insert(status, (orders, amount));
            }
        }
        let by_status = OrderStatus::ALL
            .into_iter()
            .map(|status| {
                let (orders, amount) = counted.get(&status).copied().unwrap_or_default();
                (status, orders, amount)
            })
            .collect();
        let refunded: i64 = sqlx::query_scalar(
            "select coalesce(sum(amount_minor), 0)::bigint from refunds \
             where currency = $3 and refunded_at >= $1 and refunded_at < $2",
        )
        .bind(range.start)
        .bind(range.end)
        .bind(currency)
        .fetch_one(&mut *tx)
        .await?;
        let new_customers: i64 = sqlx::query_scalar(
            "select count(*) from registrations where registered_at >= $1 and registered_at < $2",
        )
        .bind(range.start)
        .bind(range.end)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Summary {
            placed,
            placed_and_paid,
            paid,
            revenue,
            customers,
            refunded,
            new_customers,
            by_status,
        })
    }

    /// One entry per UTC day the range touches, days without figures included.
    pub async fn days(&self, range: Range, currency: &str) -> Result<Vec<Day>, RepoError> {
        let mut tx = snapshot(&self.pool).await?;
        let mut days: BTreeMap<NaiveDate, Day> = range
            .days()
            .into_iter()
            .map(|date| {
                (
                    date,
                    Day {
                        date,
                        ..Day::default()
                    },
                )
            })
            .collect();
        let placed: Vec<(NaiveDate, i64)> = sqlx::query_as(
            "select (placed_at at time zone 'UTC')::date as day, count(*) \
             from order_facts \
             where currency = $3 and placed_at >= $1 and placed_at < $2 \
             group by day",
        )
        .bind(range.start)
        .bind(range.end)
        .bind(currency)
        .fetch_all(&mut *tx)
        .await?;
        let paid: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
            "select (paid_at at time zone 'UTC')::date as day, count(*), \
                 coalesce(sum(total_minor), 0)::bigint \
             from order_facts \
             where currency = $3 and paid_at >= $1 and paid_at < $2 \
             group by day",
        )
        .bind(range.start)
        .bind(range.end)
        .bind(currency)
        .fetch_all(&mut *tx)
        .await?;
        let refunded: Vec<(NaiveDate, i64)> = sqlx::query_as(
            "select (refunded_at at time zone 'UTC')::date as day, \
                 coalesce(sum(amount_minor), 0)::bigint \
             from refunds \
             where currency = $3 and refunded_at >= $1 and refunded_at < $2 \
             group by day",
        )
        .bind(range.start)
        .bind(range.end)
        .bind(currency)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for (date, count) in placed {
            if let Some(day) = days.get_mut(&date) {
                day.placed = count;
            }
        }
        for (date, count, revenue) in paid {
            if let Some(day) = days.get_mut(&date) {
                day.paid = count;
                day.revenue = revenue;
            }
        }
        for (date, amount) in refunded {
            if let Some(day) = days.get_mut(&date) {
                day.refunded = amount;
            }
        }
        Ok(days.into_values().collect())
    }

    /// The best-selling products among the orders paid in the range.
    pub async fn top_products(
        &self,
        range: Range,
        currency: &str,
        ranking: Ranking,
        limit: u32,
    ) -> Result<Vec<ProductSales>, RepoError> {
        let order_by = match ranking {
            Ranking::Units => "units desc, revenue desc, product_id",
            Ranking::Revenue => "revenue desc, units desc, product_id",
        };
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(&format!(
            "select l.product_id, \
                 (array_agg(l.sku order by f.paid_at desc, l.order_id desc))[1], \
                 (array_agg(l.product_name order by f.paid_at desc, l.order_id desc))[1], \
                 sum(l.quantity)::bigint as units, \
                 sum(l.line_total_minor)::bigint as revenue \
             from order_fact_lines l join order_facts f on f.order_id = l.order_id \
             where f.currency = $3 and f.paid_at >= $1 and f.paid_at < $2 \
             group by l.product_id \
             order by {order_by} \
             limit $4"
        ))
        .bind(range.start)
        .bind(range.end)
        .bind(currency)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(product_id, sku, name, units, revenue)| ProductSales {
                product_id,
                sku,
                name,
                units,
                revenue,
            })
            .collect())
    }
}
