//! `/api/admin/queues`: how many events wait for each consumer of the mesh (admin role
//! required), read from RabbitMQ with passive declares: the consumer's main queue (and how many
//! consumers read it), its retry queue and its dead-letter queue.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use shopmesh_platform::events::depth::{self, QueueDepth};
use shopmesh_platform::problem::Problem;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::ProblemDoc;
use crate::extract::AdminCaller;
use crate::routes::PROBLEM;
use crate::state::AppState;

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_queues))
}

/// The queues of one event consumer.
#[derive(Serialize, ToSchema)]
pub struct ConsumerQueue {
    #[schema(example = "analytics")]
    pub consumer: String,
    /// The consumer's main queue.
    #[schema(example = "shopmesh.analytics")]
    pub queue: String,
    /// Events ready in the main queue (those being handled right now are not counted).
    pub messages: u32,
    /// Consumers reading the main queue: 0 means nobody is handling these events.
    pub consumers: u32,
    /// Events waiting out the retry delay after a failed attempt.
    pub retry_messages: u32,
    /// Events parked after their last attempt (see `/api/admin/dead-letters`).
    pub dead_letters: u32,
}

impl From<QueueDepth> for ConsumerQueue {
    fn from(d: QueueDepth) -> Self {
        Self {
            consumer: d.consumer,
            queue: d.queue,
            messages: d.messages,
            consumers: d.consumers,
            retry_messages: d.retry_messages,
            dead_letters: d.dead_letters,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct QueueList {
    /// One entry per event consumer, in the mesh's order.
    pub queues: Vec<ConsumerQueue>,
}

/// The depth of every event consumer's queues. A queue that does not exist yet counts 0.
#[utoipa::path(
    get, path = "/api/admin/queues", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Queue depths per consumer", body = QueueList),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The message broker is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_queues(
    State(state): State<AppState>,
    AdminCaller(_caller): AdminCaller,
) -> Result<axum::Json<QueueList>, Problem> {
    let mut queues = Vec::with_capacity(state.consumers.len());
    for consumer in state.consumers.iter() {
        let found = depth::depth(&state.events, consumer).await.map_err(|err| {
            tracing::warn!(consumer, error = %err, "reading queue depths failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the message broker is not available",
            )
            .with_retry_after(1)
        })?;
        queues.push(found.into());
    }
    Ok(axum::Json(QueueList { queues }))
}
