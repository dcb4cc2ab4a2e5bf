//! `/api/orders` and `/api/admin/orders`: the caller's orders, cancellation, and the admin's
//! order list, fulfilment status changes and refunds.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::order::v1 as pb;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_client::OrderServiceClient;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::problem::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::order::{
    AdminOrderQuery, CancelBody, FulfilmentStatus, OrderPage, OrderQuery, OrderResponse,
    OrderStatusBody, RefundBody,
};
use crate::dto::{ProblemDoc, non_empty};
use crate::extract::{AdminCaller, ApiJson, ApiQuery, Caller};
use crate::routes::{PROBLEM, page_size, upstream};
use crate::state::AppState;

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(admin_list_orders))
        .routes(routes!(admin_set_status))
        .routes(routes!(admin_refund))
}

/// A client of the order service.
pub fn client(state: &AppState) -> Result<OrderServiceClient<MeshChannel>, Problem> {
    state
        .channel("order")
        .map(OrderServiceClient::new)
        .ok_or_else(Problem::internal)
}

fn order(o: Option<pb::Order>) -> Result<axum::Json<OrderResponse>, Problem> {
    o.map(|o| axum::Json(o.into()))
        .ok_or_else(Problem::internal)
}

/// The caller's orders, newest first.
#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    security(("bearer" = [])),
    params(OrderQuery),
    responses(
        (status = 200, description = "One page of the caller's orders", body = OrderPage),
        (status = 400, description = "Page size out of range, unknown status or malformed cursor", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<OrderQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    let page_size = page_size(query.limit)?;
    let page = client(&state)?
        .list_orders(caller.ctx.request(pb::ListOrdersRequest {
            user_id: caller.identity.user_id.clone(),
            status: query.status.map_or(0, |s| s.to_pb()),
            page_size,
            page_token: query.cursor.unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(OrderPage {
        items: page.orders.into_iter().map(Into::into).collect(),
        next_cursor: non_empty(page.next_page_token),
    }))
}

/// One of the caller's orders (any order for an admin).
#[utoipa::path(
    get, path = "/api/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id", format = Uuid)),
    responses(
        (status = 200, description = "The order", body = OrderResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such order of the caller", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderResponse>, Problem> {
    let response = client(&state)?
        .get_order(caller.ctx.request(pb::GetOrderRequest { order_id: id }))
        .await
        .map_err(upstream)?
        .into_inner();
    order(response.order)
}

/// Cancel an order before it ships. A paid order is refunded in full and its stock put back.
#[utoipa::path(
    post, path = "/api/orders/{id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id", format = Uuid)),
    request_body(content = Option<CancelBody>, description = "Optional reason", content_type = "application/json"),
    responses(
        (status = 200, description = "The cancelled order (or unchanged when it was cancelled already)", body = OrderResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such order of the caller", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The order has shipped, completed or been refunded", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid reason", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The order is still being prepared, or a service is unavailable; retry", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<OrderResponse>, Problem> {
    // The body is optional: none means no reason.
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|_| {
            Problem::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object with an optional string `reason`",
            )
        })?
    };
    let response = client(&state)?
        .cancel_order(caller.ctx.request(pb::CancelOrderRequest {
            order_id: id,
            reason: body.reason.unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    order(response.order)
}

/// Every order, newest first, filtered by customer and status.
#[utoipa::path(
    get, path = "/api/admin/orders", tag = "admin",
    security(("bearer" = [])),
    params(AdminOrderQuery),
    responses(
        (status = 200, description = "One page of orders", body = OrderPage),
        (status = 400, description = "Page size out of range, unknown status or malformed cursor", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn admin_list_orders(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiQuery(query): ApiQuery<AdminOrderQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    let page_size = page_size(query.limit)?;
    let page = client(&state)?
        .list_orders(caller.ctx.request(pb::ListOrdersRequest {
            user_id: query.user_id.unwrap_or_default(),
            status: query.status.map_or(0, |s| s.to_pb()),
            page_size,
            page_token: query.cursor.unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(OrderPage {
        items: page.orders.into_iter().map(Into::into).collect(),
        next_cursor: non_empty(page.next_page_token),
    }))
}

/// Move an order along fulfilment by hand: PAID → SHIPPED → COMPLETED.
#[utoipa::path(
    post, path = "/api/admin/orders/{id}/status", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id", format = Uuid)),
    request_body = OrderStatusBody,
    responses(
        (status = 200, description = "The order after the change (unchanged when it had the status already)", body = OrderResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such order", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The transition is not allowed from the order's status", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid body", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn admin_set_status(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OrderStatusBody>,
) -> Result<axum::Json<OrderResponse>, Problem> {
    let status = match body.status {
        FulfilmentStatus::Shipped => pb::OrderStatus::Shipped,
        FulfilmentStatus::Completed => pb::OrderStatus::Completed,
    };
    let response = client(&state)?
        .update_order_status(caller.ctx.request(pb::UpdateOrderStatusRequest {
            order_id: id,
            status: status as i32,
            note: body.note.unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    order(response.order)
}

/// Refund part or all of a paid order. Send an `Idempotency-Key` header to make retries safe
/// (without one, every request is a new refund). A refund that empties the payment moves the
/// order to REFUNDED.
#[utoipa::path(
    post, path = "/api/admin/refunds", tag = "admin",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 printable ASCII characters; the same key returns the same refund", min_length = 1, max_length = 128, pattern = "^[!-~]{1,128}$")),
    request_body = RefundBody,
    responses(
        (status = 200, description = "The order after the refund", body = OrderResponse),
        (status = 400, description = "Malformed Idempotency-Key", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such order", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The order was never paid, or the amount exceeds what is left to refund", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid body (amount not positive, another currency)", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn admin_refund(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefundBody>,
) -> Result<axum::Json<OrderResponse>, Problem> {
    let key = match headers.get("idempotency-key") {
        Some(value) => value
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
            })
            .map(str::to_owned)
            .ok_or_else(|| {
                Problem::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "Idempotency-Key must be 1 to 128 printable ASCII characters",
                )
            })?,
        None => uuid::Uuid::now_v7().to_string(),
    };
    let response = client(&state)?
        .refund_order(caller.ctx.request(pb::RefundOrderRequest {
            order_id: body.order_id,
            amount: body.amount.map(|a| Money {
                amount_minor: a.amount,
                currency: a.currency,
            }),
            note: body.note.unwrap_or_default(),
            idempotency_key: key,
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    order(response.order)
}
