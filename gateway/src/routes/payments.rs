//! `/api/orders/{id}/payments`: the payments of an order, on the payment service.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use shopmesh_contracts::pb::shopmesh::payment::v1 as pb;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_client::PaymentServiceClient;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::problem::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::ProblemDoc;
use crate::dto::payment::PaymentList;
use crate::extract::Caller;
use crate::routes::{PROBLEM, upstream};
use crate::state::AppState;

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_order_payments))
}

fn payments(state: &AppState) -> Result<PaymentServiceClient<MeshChannel>, Problem> {
    state
        .channel("payment")
        .map(PaymentServiceClient::new)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the payment service is not available",
            )
            .with_retry_after(1)
        })
}

fn no_payments() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no payments found for this order")
}

/// The payments of one of the caller's orders, oldest first, with their refunds. An admin sees
/// any order's. Another customer's order answers 404, like an unknown one.
#[utoipa::path(
    get, path = "/api/orders/{id}/payments", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Order id (a UUID)")),
    responses(
        (status = 200, description = "The order's payments", body = PaymentList),
        (status = 401, description = "No valid access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No payment of the caller's on this order: unknown order, another customer's, or never charged", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The payment service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
        (status = 504, description = "The payment service did not answer in time", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_order_payments(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<PaymentList>, Problem> {
    // A path that is not a UUID names no order.
    let order_id = uuid::Uuid::parse_str(&id).map_err(|_| no_payments())?;
    let response = payments(&state)?
        .list_payments_by_order(caller.ctx.request(pb::ListPaymentsByOrderRequest {
            order_id: order_id.to_string(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(PaymentList {
        payments: response.payments.into_iter().map(Into::into).collect(),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_route_is_documented_with_every_status() {
        let openapi = crate::openapi();
        let item = openapi
            .paths
            .paths
            .get("/api/orders/{id}/payments")
            .expect("documented");
        let get = item.get.as_ref().expect("GET");
        assert_eq!(get.tags.as_deref(), Some(&["orders".to_owned()][..]));
        assert!(get.security.is_some(), "bearer");
        for status in ["200", "401", "404", "503", "504", "default"] {
            assert!(get.responses.responses.contains_key(status), "{status}");
        }
        let schemas = &openapi.components.as_ref().expect("components").schemas;
        for schema in ["PaymentList", "PaymentResponse", "RefundResponse"] {
            assert!(schemas.contains_key(schema), "{schema}");
        }
    }
}
