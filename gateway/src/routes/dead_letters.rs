//! `/api/admin/dead-letters`: the events each consumer gave up on, with the error that stopped
//! them, and re-drive of one back to its consumer (admin role required). The gateway reads the
//! consumers' dead-letter queues on RabbitMQ directly: listing leaves them in place.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_platform::events::dead_letters::{self, DeadLetter};
use shopmesh_platform::problem::Problem;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::ProblemDoc;
use crate::extract::{AdminCaller, ApiQuery};
use crate::routes::PROBLEM;
use crate::state::AppState;

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(redrive_dead_letter))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this consumer's dead letters (e.g. `notification`); all consumers when absent.
    #[param(pattern = "^[a-z][a-z0-9-]{0,39}$")]
    pub consumer: Option<String>,
    /// Most dead letters shown per consumer, 1 to 500 (default 100); `total` counts them all.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// One event a consumer gave up on.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterResponse {
    /// The event id (UUIDv7); empty when the message was not an event envelope.
    pub event_id: String,
    #[schema(example = "order.paid")]
    pub event_type: String,
    pub aggregate_id: String,
    pub producer: String,
    pub correlation_id: String,
    /// Why the last attempt failed.
    pub error: String,
    pub attempts: u32,
    pub dead_at: Option<DateTime<Utc>>,
    pub occurred_at: Option<DateTime<Utc>>,
}

impl From<DeadLetter> for DeadLetterResponse {
    fn from(d: DeadLetter) -> Self {
        Self {
            event_id: d.event_id,
            event_type: d.event_type,
            aggregate_id: d.aggregate_id,
            producer: d.producer,
            correlation_id: d.correlation_id,
            error: d.error,
            attempts: d.attempts,
            dead_at: d.dead_at,
            occurred_at: d.occurred_at,
        }
    }
}

/// The dead-letter queue of one consumer.
#[derive(Serialize, ToSchema)]
pub struct ConsumerDeadLetters {
    #[schema(example = "notification")]
    pub consumer: String,
    /// Messages parked in all.
    pub total: u32,
    /// The oldest of them, up to `limit`.
    pub items: Vec<DeadLetterResponse>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    pub consumers: Vec<ConsumerDeadLetters>,
}

/// Outcome of a re-drive.
#[derive(Serialize, ToSchema)]
pub struct Redriven {
    pub consumer: String,
    pub event_id: String,
    /// Always true: the event is back in the consumer's queue for a fresh round of attempts.
    pub redriven: bool,
}

fn broker_down() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the message broker is not available",
    )
    .with_retry_after(1)
}

fn known_consumer(state: &AppState, consumer: &str) -> Result<(), Problem> {
    if state.consumers.contains(&consumer) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("no event consumer is called {consumer:?}"),
        ))
    }
}

/// Every consumer's dead letters, oldest first: what failed, how often and why. Listing does
/// not remove them.
#[utoipa::path(
    get, path = "/api/admin/dead-letters", tag = "admin",
    security(("bearer" = [])),
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "Dead letters per consumer", body = DeadLetterList),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such consumer", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "limit out of range", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The message broker is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    AdminCaller(_caller): AdminCaller,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<axum::Json<DeadLetterList>, Problem> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit must be between 1 and 500",
        ));
    }
    let consumers: Vec<&'static str> = match &query.consumer {
        Some(name) => {
            known_consumer(&state, name)?;
            state
                .consumers
                .iter()
                .copied()
                .filter(|c| c == name)
                .collect()
        }
        None => state.consumers.to_vec(),
    };
    let mut out = Vec::with_capacity(consumers.len());
    for consumer in consumers {
        let page = dead_letters::list(&state.events, consumer, limit as usize)
            .await
            .map_err(|err| {
                tracing::warn!(consumer, error = %err, "listing dead letters failed");
                broker_down()
            })?;
        out.push(ConsumerDeadLetters {
            consumer: consumer.to_owned(),
            total: page.total,
            items: page.items.into_iter().map(Into::into).collect(),
        });
    }
    Ok(axum::Json(DeadLetterList { consumers: out }))
}

/// Sends one dead letter back to its consumer as a first attempt (after the cause was fixed).
#[utoipa::path(
    post, path = "/api/admin/dead-letters/{consumer}/{event_id}/redrive", tag = "admin",
    security(("bearer" = [])),
    params(
        ("consumer" = String, Path, description = "Consumer name, e.g. notification"),
        ("event_id" = String, Path, format = Uuid, description = "The dead letter's event id"),
    ),
    responses(
        (status = 200, description = "Back in the consumer's queue", body = Redriven),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such consumer, or no dead letter with this event id", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The message broker is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn redrive_dead_letter(
    State(state): State<AppState>,
    AdminCaller(_caller): AdminCaller,
    Path((consumer, event_id)): Path<(String, String)>,
) -> Result<axum::Json<Redriven>, Problem> {
    known_consumer(&state, &consumer)?;
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no dead letter with this event id is parked for this consumer",
        )
    };
    let event_id = uuid::Uuid::parse_str(&event_id)
        .map_err(|_| not_found())?
        .to_string();
    let found = dead_letters::redrive(&state.events, &consumer, &event_id)
        .await
        .map_err(|err| {
            tracing::warn!(consumer, error = %err, "re-driving a dead letter failed");
            broker_down()
        })?;
    if !found {
        return Err(not_found());
    }
    tracing::info!(consumer, %event_id, "dead letter re-driven");
    Ok(axum::Json(Redriven {
        consumer,
        event_id,
        redriven: true,
    }))
}
