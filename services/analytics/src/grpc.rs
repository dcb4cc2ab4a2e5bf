//! The gRPC face of the analytics service: validates the question, asks the repository and
//! converts the figures to protobuf.
//!
//! Every RPC is admin only. The platform's method guard enforces it from analytics.proto's
//! policies before a call gets here; each handler checks the caller again, so that a policy
//! edit alone cannot open the figures to customers.

use shopmesh_contracts::pb::shopmesh::analytics::v1::{
    self as pb, analytics_service_server::AnalyticsService as AnalyticsApi,
};
use shopmesh_contracts::pb::shopmesh::common::v1::Money as PbMoney;
use shopmesh_contracts::pb::shopmesh::order::v1::OrderStatus as PbOrderStatus;
use shopmesh_platform::grpc::admin;
use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::time::optional_time;
use tonic::{Request, Response, Status};

use crate::domain::{self, OrderStatus, Range, Ranking};
use crate::error::Error;
use crate::repo::AnalyticsRepo;

/// Implements `shopmesh.analytics.v1.AnalyticsService`.
#[derive(Clone)]
pub struct AnalyticsGrpc {
    repo: AnalyticsRepo,
    currency: String,
}

impl AnalyticsGrpc {
    pub fn new(repo: AnalyticsRepo, currency: String) -> Self {
        Self { repo, currency }
    }

    fn money(&self, amount_minor: i64) -> Option<PbMoney> {
        Some(PbMoney {
            amount_minor,
            currency: self.currency.clone(),
        })
    }
}

fn status_pb(status: OrderStatus) -> PbOrderStatus {
    match status {
        OrderStatus::Created => PbOrderStatus::Created,
        OrderStatus::Paid => PbOrderStatus::Paid,
        OrderStatus::Shipped => PbOrderStatus::Shipped,
        OrderStatus::Completed => PbOrderStatus::Completed,
        OrderStatus::Cancelled => PbOrderStatus::Cancelled,
        OrderStatus::Refunded => PbOrderStatus::Refunded,
    }
}

/// The range of a request.
fn range(range: Option<pb::TimeRange>) -> Result<Range, Vec<FieldError>> {
    let Some(range) = range else {
        return Err(vec![field_error("range", "is required")]);
    };
    Range::new(
        optional_time(range.start_time),
        optional_time(range.end_time),
    )
}

fn ranking(raw: i32) -> Result<Ranking, FieldError> {
    match pb::TopProductsOrder::try_from(raw) {
        Ok(pb::TopProductsOrder::Unspecified | pb::TopProductsOrder::Units) => Ok(Ranking::Units),
        Ok(pb::TopProductsOrder::Revenue) => Ok(Ranking::Revenue),
        Err(_) => Err(field_error("order_by", "must be UNITS or REVENUE")),
    }
}

#[tonic::async_trait]
impl AnalyticsApi for AnalyticsGrpc {
    async fn get_summary(
        &self,
        request: Request<pb::GetSummaryRequest>,
    ) -> Result<Response<pb::GetSummaryResponse>, Status> {
        admin(&request)?;
        let range = range(request.into_inner().range).map_err(Error::from)?;
        let summary = self
            .repo
            .summary(range, &self.currency)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::GetSummaryResponse {
            order_count: summary.paid,
            revenue: self.money(summary.revenue),
            refunded: self.money(summary.refunded),
            customer_count: summary.customers,
            new_customer_count: summary.new_customers,
            average_order_value: self.money(domain::average(summary.revenue, summary.paid)),
            placed_order_count: summary.placed,
            conversion: Some(pb::Conversion {
                started: summary.placed,
                paid: summary.placed_and_paid,
                rate: domain::rate(summary.placed_and_paid, summary.placed),
            }),
            by_status: summary
                .by_status
                .iter()
                .map(|(status, orders, amount)| pb::StatusSummary {
                    status: status_pb(*status).into(),
                    order_count: *orders,
                    amount: self.money(*amount),
                })
                .collect(),
            currency: self.currency.clone(),
        }))
    }

    async fn get_revenue_by_day(
        &self,
        request: Request<pb::GetRevenueByDayRequest>,
    ) -> Result<Response<pb::GetRevenueByDayResponse>, Status> {
        admin(&request)?;
        let range = range(request.into_inner().range).map_err(Error::from)?;
        let days = self
            .repo
            .days(range, &self.currency)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::GetRevenueByDayResponse {
            days: days
                .into_iter()
                .map(|day| pb::DailyRevenue {
                    date: day.date.format("%Y-%m-%d").to_string(),
                    order_count: day.paid,
                    revenue: self.money(day.revenue),
                    placed_order_count: day.placed,
                    refunded: self.money(day.refunded),
                })
                .collect(),
            currency: self.currency.clone(),
        }))
    }

    async fn get_top_products(
        &self,
        request: Request<pb::GetTopProductsRequest>,
    ) -> Result<Response<pb::GetTopProductsResponse>, Status> {
        admin(&request)?;
        let req = request.into_inner();
        // Every bad field at once.
        let (range, limit, ranking) = match (
            range(req.range),
            domain::top_products_limit(req.limit),
            ranking(req.order_by),
        ) {
            (Ok(range), Ok(limit), Ok(ranking)) => (range, limit, ranking),
            (range, limit, ranking) => {
                let mut errors = range.err().unwrap_or_default();
                errors.extend(limit.err());
                errors.extend(ranking.err());
                return Err(Error::Invalid(errors).into());
            }
        };
        let products = self
            .repo
            .top_products(range, &self.currency, ranking, limit)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::GetTopProductsResponse {
            products: products
                .into_iter()
                .map(|p| pb::TopProduct {
                    product_id: p.product_id,
                    sku: p.sku,
                    name: p.name,
                    units_sold: p.units,
                    revenue: self.money(p.revenue),
                })
                .collect(),
            currency: self.currency.clone(),
        }))
    }
}
