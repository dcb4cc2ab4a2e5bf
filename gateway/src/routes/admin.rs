//! `/api/admin/users*`: account administration (admin role required).

use axum::extract::{Path, State};
use shopmesh_contracts::user as pb;
use shopmesh_platform::problem::Problem;

use crate::dto::ProblemDoc;
use crate::dto::user::{ListUsersQuery, UserAccessBody, UserPage, UserResponse};
use crate::extract::{AdminCaller, ApiJson, ApiQuery};
use crate::routes::{PROBLEM, page_size, upstream};
use crate::state::AppState;

/// Page through accounts in creation order, optionally searching by email.
#[utoipa::path(
    get, path = "/api/admin/users", tag = "admin",
    security(("bearer" = [])),
    params(ListUsersQuery),
    responses(
        (status = 200, description = "One page of accounts", body = UserPage),
        (status = 400, description = "Page size out of range or malformed cursor", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiQuery(query): ApiQuery<ListUsersQuery>,
) -> Result<axum::Json<UserPage>, Problem> {
    let page_size = page_size(query.limit)?;
    let page = state
        .user
        .clone()
        .list_users(caller.ctx.request(pb::ListUsersRequest {
            page_size,
            page_token: query.cursor.unwrap_or_default(),
            email_contains: query.q.unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(UserPage {
        items: page.users.into_iter().map(Into::into).collect(),
        next_cursor: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// One account.
#[utoipa::path(
    get, path = "/api/admin/users/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such account", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<axum::Json<UserResponse>, Problem> {
    let user = state
        .user
        .clone()
        .get_user(caller.ctx.request(pb::GetUserRequest { user_id: id }))
        .await
        .map_err(upstream)?
        .into_inner()
        .user
        .ok_or_else(Problem::internal)?;
    Ok(axum::Json(user.into()))
}

/// Change an account's role and/or tier. Its current access tokens stop working on the next request
/// (401: the session version changed); it logs in or refreshes to get the new role.
#[utoipa::path(
    patch, path = "/api/admin/users/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    request_body = UserAccessBody,
    responses(
        (status = 200, description = "The updated account", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such account", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Unknown role or tier, or unknown fields", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn update_user_access(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserAccessBody>,
) -> Result<axum::Json<UserResponse>, Problem> {
    let request = pb::UpdateUserAccessRequest {
        user_id: id,
        role: body.role.map_or(pb::Role::Unspecified, Into::into).into(),
        tier: body.tier.map_or(pb::Tier::Unspecified, Into::into).into(),
    };
    let user = state
        .user
        .clone()
        .update_user_access(caller.ctx.request(request))
        .await
        .map_err(upstream)?
        .into_inner()
        .user
        .ok_or_else(Problem::internal)?;
    Ok(axum::Json(user.into()))
}
