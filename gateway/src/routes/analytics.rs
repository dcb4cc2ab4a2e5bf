//! `/api/admin/analytics`: order, revenue, conversion and product figures over a range of UTC
//! days, from the analytics service (admin role required). Ranges are whole days, `from` to
//! `to` inclusive, today by default; a date that does not parse or a range that is backwards or
//! longer than 366 days is 422 naming the parameter.

use axum::extract::State;
use axum::http::StatusCode;
use shopmesh_contracts::pb::shopmesh::analytics::v1 as pb;
use shopmesh_contracts::pb::shopmesh::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::problem::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::ProblemDoc;
use crate::dto::analytics::{
    AnalyticsSummary, AnalyticsTimeseries, AnalyticsTopProducts, DayRange, RangeQuery,
    TopProductsQuery,
};
use crate::extract::{AdminCaller, ApiQuery};
use crate::routes::{PROBLEM, page_size, upstream};
use crate::state::AppState;

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(timeseries))
        .routes(routes!(top_products))
}

fn analytics(state: &AppState) -> Result<AnalyticsServiceClient<MeshChannel>, Problem> {
    state
        .channel("analytics")
        .map(AnalyticsServiceClient::new)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the analytics service is not available",
            )
            .with_retry_after(1)
        })
}

/// Orders, revenue, average order value, conversion and the orders by status over a range of
/// days. `orders` counts the orders placed in the range (whatever became of them: `by_status`
/// breaks them down); `revenue` is the sum of the orders paid in the range, in minor units,
/// before refunds, and `average_order_value` is `revenue / paid_orders`.
#[utoipa::path(
    get, path = "/api/admin/analytics/summary", tag = "admin",
    security(("bearer" = [])),
    params(RangeQuery),
    responses(
        (status = 200, description = "The figures of the range", body = AnalyticsSummary),
        (status = 400, description = "An unknown query parameter", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "A date that is not YYYY-MM-DD, `from` after `to`, or more than 366 days", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The analytics service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
        (status = 504, description = "The analytics service did not answer in time", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn summary(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<axum::Json<AnalyticsSummary>, Problem> {
    let range = DayRange::from_query(query.from.as_deref(), query.to.as_deref())?;
    let response = analytics(&state)?
        .get_summary(caller.ctx.request(pb::GetSummaryRequest {
            range: Some(range.to_pb()?),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(AnalyticsSummary::new(response, range)))
}

/// The figures of every UTC day of a range, oldest first, days without orders included:
/// orders placed, orders paid, revenue (paid, minor units, before refunds) and refunds.
#[utoipa::path(
    get, path = "/api/admin/analytics/timeseries", tag = "admin",
    security(("bearer" = [])),
    params(RangeQuery),
    responses(
        (status = 200, description = "One entry per day of the range", body = AnalyticsTimeseries),
        (status = 400, description = "An unknown query parameter", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "A date that is not YYYY-MM-DD, `from` after `to`, or more than 366 days", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The analytics service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
        (status = 504, description = "The analytics service did not answer in time", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn timeseries(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<axum::Json<AnalyticsTimeseries>, Problem> {
    let range = DayRange::from_query(query.from.as_deref(), query.to.as_deref())?;
    let response = analytics(&state)?
        .get_revenue_by_day(caller.ctx.request(pb::GetRevenueByDayRequest {
            range: Some(range.to_pb()?),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(AnalyticsTimeseries::new(response, range)))
}

/// The best-selling products of a range, by units sold or by revenue: the lines of the orders
/// paid in it (before refunds).
#[utoipa::path(
    get, path = "/api/admin/analytics/top-products", tag = "admin",
    security(("bearer" = [])),
    params(TopProductsQuery),
    responses(
        (status = 200, description = "The products, best first", body = AnalyticsTopProducts),
        (status = 400, description = "`by` not units or revenue, `limit` out of 1..=100, or an unknown query parameter", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "A date that is not YYYY-MM-DD, `from` after `to`, or more than 366 days", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The analytics service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
        (status = 504, description = "The analytics service did not answer in time", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn top_products(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiQuery(query): ApiQuery<TopProductsQuery>,
) -> Result<axum::Json<AnalyticsTopProducts>, Problem> {
    let range = DayRange::from_query(query.from.as_deref(), query.to.as_deref())?;
    let limit = page_size(query.limit)?;
    let by = query.by.unwrap_or_default();
    let response = analytics(&state)?
        .get_top_products(caller.ctx.request(pb::GetTopProductsRequest {
            range: Some(range.to_pb()?),
            limit,
            order_by: by.to_pb().into(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(AnalyticsTopProducts::new(response, by, range)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_routes_are_documented_with_every_status_and_format() {
        let openapi = crate::openapi();
        for path in [
            "/api/admin/analytics/summary",
            "/api/admin/analytics/timeseries",
            "/api/admin/analytics/top-products",
        ] {
            let item = openapi.paths.paths.get(path).expect(path);
            let get = item.get.as_ref().expect("GET");
            assert_eq!(get.tags.as_deref(), Some(&["admin".to_owned()][..]));
            assert!(get.security.is_some(), "bearer");
            for status in ["200", "400", "401", "403", "422", "503", "504", "default"] {
                assert!(
                    get.responses.responses.contains_key(status),
                    "{path} {status}"
                );
            }
        }
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let params = &doc["paths"]["/api/admin/analytics/top-products"]["get"]["parameters"];
        let param = |name: &str| {
            params
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{name} documented"))
                .clone()
        };
        assert_eq!(param("from")["schema"]["format"], "date");
        assert_eq!(param("to")["schema"]["format"], "date");
        assert_eq!(param("limit")["schema"]["maximum"], 100);
        let schemas = &doc["components"]["schemas"];
        let summary = &schemas["AnalyticsSummary"]["properties"];
        for field in [
            "orders",
            "revenue",
            "average_order_value",
            "currency",
            "conversion",
            "by_status",
        ] {
            assert!(summary.get(field).is_some(), "{field}");
        }
        assert_eq!(summary["revenue"]["format"], "int64");
        assert_eq!(summary["from"]["format"], "date");
        assert_eq!(
            schemas["ConversionFigures"]["properties"]["rate"]["format"],
            "double"
        );
        assert_eq!(
            schemas["DayFigures"]["properties"]["date"]["format"],
            "date"
        );
    }
}
