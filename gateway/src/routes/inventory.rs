//! `/api/admin/inventory/*`: stock levels, the stock audit trail and adjustments.

use axum::extract::{Path, State};
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;
use shopmesh_platform::problem::Problem;

use crate::dto::inventory::{AdjustBody, AdjustResponse, InventoryResponse, MovementQuery};
use crate::dto::{ProblemDoc, non_empty};
use crate::extract::{AdminCaller, ApiJson, ApiQuery};
use crate::routes::{PROBLEM, page_size, upstream};
use crate::state::AppState;

/// Stock level and movement history of a SKU.
#[utoipa::path(
    get, path = "/api/admin/inventory/{sku}", tag = "admin",
    security(("bearer" = [])),
    params(("sku" = String, Path, description = "Stock-keeping unit: 2 to 40 letters, digits or dashes, starting and ending with a letter or digit (case-insensitive)", pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$", min_length = 2, max_length = 40), MovementQuery),
    responses(
        (status = 200, description = "Level and history", body = InventoryResponse),
        (status = 400, description = "Malformed cursor or page size over the cap", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "Unknown SKU", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_inventory(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(sku): Path<String>,
    ApiQuery(query): ApiQuery<MovementQuery>,
) -> Result<axum::Json<InventoryResponse>, Problem> {
    let page_size = page_size(query.limit)?;
    let mut inventory = state.inventory.clone();
    let stock = inventory
        .get_stock(caller.ctx.request(pb::GetStockRequest { sku: sku.clone() }))
        .await
        .map_err(upstream)?
        .into_inner()
        .stock
        .ok_or_else(Problem::internal)?;
    let page = inventory
        .list_stock_movements(caller.ctx.request(pb::ListStockMovementsRequest {
            sku,
            page_size,
            page_token: query.cursor.unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(InventoryResponse {
        stock: stock.into(),
        movements: page.movements.into_iter().map(Into::into).collect(),
        next_cursor: non_empty(page.next_page_token),
    }))
}

/// Adjust on_hand (receiving, damage, correction, return); recorded in the audit trail.
#[utoipa::path(
    post, path = "/api/admin/inventory/{sku}/adjust", tag = "admin",
    security(("bearer" = [])),
    params(("sku" = String, Path, description = "Stock-keeping unit: 2 to 40 letters, digits or dashes, starting and ending with a letter or digit (case-insensitive)", pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$", min_length = 2, max_length = 40)),
    request_body(content = AdjustBody, example = json!({
        "delta": 25,
        "reason": "receiving",
        "note": "Delivery 2026-12-01"
    })),
    responses(
        (status = 200, description = "The new level and its movement", body = AdjustResponse),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "Unknown SKU", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "on_hand would drop below what is reserved", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid delta or reason", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn adjust(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(sku): Path<String>,
    ApiJson(body): ApiJson<AdjustBody>,
) -> Result<axum::Json<AdjustResponse>, Problem> {
    let response = state
        .inventory
        .clone()
        .adjust(caller.ctx.request(pb::AdjustRequest {
            sku,
            delta: body.delta,
            reason: pb::StockMovementReason::from(body.reason).into(),
            note: body.note.unwrap_or_default(),
            order_id: String::new(),
            idempotency_key: String::new(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(AdjustResponse {
        stock: response.stock.ok_or_else(Problem::internal)?.into(),
        movement: response.movement.ok_or_else(Problem::internal)?.into(),
    }))
}
