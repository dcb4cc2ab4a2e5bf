//! `/api/notifications`: the caller's inbox and e-mail preferences, on the notification
//! service. Every route acts on the caller's own notifications (an admin's too); someone else's
//! notification answers 404, like an unknown one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use shopmesh_contracts::pb::shopmesh::notification::v1 as pb;
use shopmesh_contracts::pb::shopmesh::notification::v1::notification_service_client::NotificationServiceClient;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::problem::{Problem, field_error};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::notification::{
    NotificationPage, NotificationQuery, NotificationResponse, Preferences,
};
use crate::dto::{ProblemDoc, non_empty};
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::routes::{PROBLEM, page_size, upstream};
use crate::state::AppState;

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
        .routes(routes!(delete_notification))
        .routes(routes!(get_preferences, update_preferences))
}

fn client(state: &AppState) -> Result<NotificationServiceClient<MeshChannel>, Problem> {
    state
        .channel("notification")
        .map(NotificationServiceClient::new)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the notification service is not available",
            )
            .with_retry_after(1)
        })
}

/// Kinds there are, and so the most a preferences body lists.
const MAX_MUTED: usize = 7;

fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such notification")
}

/// A path id that is not a UUID names no notification.
fn notification_id(id: &str) -> Result<String, Problem> {
    uuid::Uuid::parse_str(id)
        .map(|id| id.to_string())
        .map_err(|_| not_found())
}

/// The caller's notifications, newest first.
#[utoipa::path(
    get, path = "/api/notifications", tag = "notifications",
    security(("bearer" = [])),
    params(NotificationQuery),
    responses(
        (status = 200, description = "One page of the caller's notifications", body = NotificationPage),
        (status = 400, description = "Page size out of range, a bad `unread` value or a malformed cursor", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The notification service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_notifications(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<axum::Json<NotificationPage>, Problem> {
    let page_size = page_size(query.limit)?;
    let page = client(&state)?
        .list_notifications(caller.ctx.request(pb::ListNotificationsRequest {
            page_size,
            page_token: query.cursor.unwrap_or_default(),
            unread_only: query.unread.unwrap_or(false),
            channel: pb::Channel::Unspecified as i32,
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(NotificationPage {
        items: page
            .notifications
            .into_iter()
            .map(NotificationResponse::from_pb)
            .collect::<Result<_, _>>()?,
        next_cursor: non_empty(page.next_page_token),
    }))
}

/// Mark one of the caller's notifications read. Marking a read one again changes nothing.
#[utoipa::path(
    put, path = "/api/notifications/{id}/read", tag = "notifications",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Notification id (a UUID)")),
    responses(
        (status = 200, description = "The notification, read", body = NotificationResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such notification of the caller's (unknown, or another user's)", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The notification service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn mark_read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<NotificationResponse>, Problem> {
    let notification_id = notification_id(&id)?;
    let notification = client(&state)?
        .mark_read(caller.ctx.request(pb::MarkReadRequest { notification_id }))
        .await
        .map_err(upstream)?
        .into_inner()
        .notification
        .ok_or_else(Problem::internal)?;
    Ok(axum::Json(NotificationResponse::from_pb(notification)?))
}

/// Delete one of the caller's notifications for good. An e-mail sent for it is not recalled.
#[utoipa::path(
    delete, path = "/api/notifications/{id}", tag = "notifications",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Notification id (a UUID)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such notification of the caller's (unknown, another user's, or deleted already)", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The notification service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn delete_notification(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let notification_id = notification_id(&id)?;
    client(&state)?
        .delete_notification(
            caller
                .ctx
                .request(pb::DeleteNotificationRequest { notification_id }),
        )
        .await
        .map_err(upstream)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's notification preferences: which kinds are not sent by e-mail.
#[utoipa::path(
    get, path = "/api/notifications/preferences", tag = "notifications",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's preferences (nothing muted until set)", body = Preferences),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The notification service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_preferences(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Preferences>, Problem> {
    let response = client(&state)?
        .get_preferences(caller.ctx.request(pb::GetPreferencesRequest {}))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(Preferences::from_pb(response.preferences)?))
}

/// Replace the caller's notification preferences. A muted kind still reaches the inbox; only
/// its e-mails stop, from the next notification on.
#[utoipa::path(
    put, path = "/api/notifications/preferences", tag = "notifications",
    security(("bearer" = [])),
    request_body = Preferences,
    responses(
        (status = 200, description = "The preferences as stored", body = Preferences),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "An unknown kind, more than 7 kinds, or a missing or unknown field", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The notification service is unavailable; retry after Retry-After", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn update_preferences(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Preferences>,
) -> Result<axum::Json<Preferences>, Problem> {
    if body.email_muted.len() > MAX_MUTED {
        return Err(
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid input").with_errors(vec![
                field_error(
                    "email_muted",
                    format!("at most {MAX_MUTED} kinds: there are no more"),
                ),
            ]),
        );
    }
    let response = client(&state)?
        .update_preferences(caller.ctx.request(pb::UpdatePreferencesRequest {
            preferences: Some(body.to_pb()),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(Preferences::from_pb(response.preferences)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_routes_are_documented_with_their_statuses() {
        let openapi = crate::openapi();
        let paths = &openapi.paths.paths;
        let list = paths
            .get("/api/notifications")
            .and_then(|item| item.get.as_ref())
            .expect("GET /api/notifications");
        assert_eq!(
            list.tags.as_deref(),
            Some(&["notifications".to_owned()][..])
        );
        assert!(list.security.is_some(), "bearer");
        let params: Vec<&str> = list
            .parameters
            .iter()
            .flatten()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(params, ["unread", "limit", "cursor"]);
        for status in ["200", "400", "401", "503", "default"] {
            assert!(list.responses.responses.contains_key(status), "{status}");
        }
        let read = paths
            .get("/api/notifications/{id}/read")
            .and_then(|item| item.put.as_ref())
            .expect("PUT read");
        let delete = paths
            .get("/api/notifications/{id}")
            .and_then(|item| item.delete.as_ref())
            .expect("DELETE");
        for op in [read, delete] {
            assert!(op.responses.responses.contains_key("404"));
        }
        assert!(delete.responses.responses.contains_key("204"));
        let preferences = paths
            .get("/api/notifications/preferences")
            .expect("preferences");
        assert!(preferences.get.is_some());
        let put = preferences.put.as_ref().expect("PUT preferences");
        assert!(put.request_body.is_some());
        assert!(put.responses.responses.contains_key("422"));
        let schemas = &openapi.components.as_ref().expect("components").schemas;
        for schema in [
            "NotificationPage",
            "NotificationResponse",
            "NotificationKind",
            "Preferences",
        ] {
            assert!(schemas.contains_key(schema), "{schema}");
        }
    }
}
