//! `/api/orders/{id}/shipment`: an order's shipment and its live tracking stream (Server-Sent
//! Events), and `/api/admin/shipments/{id}/advance`, on the delivery service.
//!
//! The tracking stream outlives the request budget the deadline middleware gives every request:
//! that budget bounds the work until the response head (finding the shipment, opening the
//! TrackShipment stream), and the events follow in the body, which the middleware does not time.
//! TrackShipment is long-running in the contracts, so the mesh client bounds only its head too.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use shopmesh_contracts::pb::shopmesh::delivery::v1 as pb;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_client::DeliveryServiceClient;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::problem::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::ProblemDoc;
use crate::dto::shipment::{AdvanceBody, ShipmentResponse, ShipmentStatus, TrackingEventResponse};
use crate::extract::{AdminCaller, ApiJson, Caller};
use crate::routes::{PROBLEM, upstream};
use crate::state::AppState;

/// How often an idle tracking stream sends a comment, so that proxies (nginx reads with a 30 s
/// timeout) and clients keep the connection open between two scans.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_shipment))
        .routes(routes!(track_shipment))
        .routes(routes!(advance_shipment))
}

/// A client of the delivery service.
fn client(state: &AppState) -> Result<DeliveryServiceClient<MeshChannel>, Problem> {
    state
        .channel("delivery")
        .map(DeliveryServiceClient::new)
        .ok_or_else(Problem::internal)
}

fn shipment(s: Option<pb::Shipment>) -> Result<ShipmentResponse, Problem> {
    s.ok_or_else(Problem::internal)?.try_into()
}

/// The shipment of one of the caller's orders (any order's for an admin), with its tracking
/// history.
#[utoipa::path(
    get, path = "/api/orders/{id}/shipment", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id", format = Uuid)),
    responses(
        (status = 200, description = "The shipment and its tracking history", body = ShipmentResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such order of the caller, or it has no shipment yet", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "The order id is not a UUID", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The delivery service is unavailable; retry", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_shipment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ShipmentResponse>, Problem> {
    let response = client(&state)?
        .get_shipment_by_order(
            caller
                .ctx
                .request(pb::GetShipmentByOrderRequest { order_id: id }),
        )
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(shipment(response.shipment)?))
}

/// Live tracking of an order's shipment as Server-Sent Events: first every recorded event,
/// oldest first, then each new one as it happens; the stream closes after DELIVERED, RETURNED
/// or CANCELLED. Each event is `event: tracking`, `id: <event id>` and
/// `data: {"status","location","note","at"}`; comments keep an idle connection open. A client
/// that reconnects with `Last-Event-ID` gets only the later events, and 204 once it has seen
/// the final one (which tells an EventSource to stop reconnecting). An error after the stream
/// has started arrives as `event: error` with a problem document, and the stream closes.
#[utoipa::path(
    get, path = "/api/orders/{id}/shipment/events", tag = "orders",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Order id", format = Uuid),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: resume after it"),
    ),
    responses(
        (status = 200, description = "The tracking stream", content_type = "text/event-stream", body = String,
            example = json!("event: tracking\nid: 0193a1c2-7f00-7000-8000-000000000001\ndata: {\"status\":\"IN_TRANSIT\",\"location\":\"SimPost sorting centre\",\"note\":\"Picked up by SimPost\",\"at\":\"2026-12-01T10:00:15Z\"}\n\n")),
        (status = 204, description = "The client has already received the final event"),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such order of the caller, or it has no shipment yet", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "The order id is not a UUID", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The delivery service is unavailable; retry", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn track_shipment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let mut client = client(&state)?;
    let found = client
        .get_shipment_by_order(
            caller
                .ctx
                .request(pb::GetShipmentByOrderRequest { order_id: id }),
        )
        .await
        .map_err(upstream)?
        .into_inner()
        .shipment
        .ok_or_else(Problem::internal)?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after_event_id = match resume_point(&found.events, last_event_id) {
        Resume::Done => return Ok(StatusCode::NO_CONTENT.into_response()),
        Resume::After(id) => id,
        Resume::FromStart => String::new(),
    };
    let events = client
        .track_shipment(caller.ctx.request(pb::TrackShipmentRequest {
            shipment_id: found.id,
            after_event_id,
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    let mut response = tracking_sse(events, KEEP_ALIVE).into_response();
    // nginx would otherwise buffer the stream and deliver events late, in bunches.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Where a (re)connecting client's stream starts.
#[derive(Debug, PartialEq, Eq)]
enum Resume {
    FromStart,
    /// After this event, which the client has.
    After(String),
    /// The client has the final event: nothing will follow.
    Done,
}

/// Resumes after the client's `Last-Event-ID` when it names one of the shipment's recorded
/// events; an unknown id (another shipment's, a garbled one) replays the history instead of
/// failing the reconnect.
fn resume_point(events: &[pb::TrackingEvent], last_event_id: Option<&str>) -> Resume {
    let Some(seen) = last_event_id
        .map(str::trim)
        .and_then(|id| events.iter().find(|e| e.id == id))
    else {
        return Resume::FromStart;
    };
    if ShipmentStatus::from_pb(seen.status).is_some_and(ShipmentStatus::is_final) {
        Resume::Done
    } else {
        Resume::After(seen.id.clone())
    }
}

/// The SSE body of a TrackShipment stream: one `tracking` event per message, an `error` event
/// (a problem document) if the stream fails, closed when the stream ends.
pub fn tracking_sse<S>(
    events: S,
    keep_alive: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    S: Stream<Item = Result<pb::TrackShipmentResponse, tonic::Status>> + Send + 'static,
{
    let stream = events
        .scan(false, |failed, item| {
            // Nothing follows an error: the client reconnects (with Last-Event-ID).
            if *failed {
                return futures::future::ready(None);
            }
            let event = match item {
                Ok(message) => tracking_event(message),
                Err(status) => {
                    *failed = true;
                    error_event(&upstream(status))
                }
            };
            futures::future::ready(Some(Ok(event)))
        })
        .boxed();
    Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive))
}

fn tracking_event(message: pb::TrackShipmentResponse) -> Event {
    let converted = message
        .event
        .ok_or_else(Problem::internal)
        .and_then(TrackingEventResponse::try_from);
    match converted {
        Ok(event) => match Event::default()
            .event("tracking")
            .id(event.id.clone())
            .json_data(&event.update)
        {
            Ok(sse) => sse,
            Err(_) => error_event(&Problem::internal()),
        },
        Err(problem) => error_event(&problem),
    }
}

fn error_event(problem: &Problem) -> Event {
    Event::default()
        .event("error")
        .json_data(problem)
        .unwrap_or_else(|_| Event::default().event("error").data("internal error"))
}

/// Record a shipment's next status, with where it was scanned. The transitions the delivery
/// service allows: LABEL_CREATED → IN_TRANSIT | PENDING | PACKED | SHIPPED | CANCELLED;
/// PENDING → PACKED | CANCELLED; PACKED → SHIPPED | CANCELLED; SHIPPED → IN_TRANSIT;
/// IN_TRANSIT → IN_TRANSIT (a new scan) | OUT_FOR_DELIVERY | RETURNED; OUT_FOR_DELIVERY →
/// DELIVERED | FAILED; FAILED → OUT_FOR_DELIVERY | RETURNED.
#[utoipa::path(
    post, path = "/api/admin/shipments/{id}/advance", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Shipment id", format = Uuid)),
    request_body(content = AdvanceBody, example = json!({
        "status": "IN_TRANSIT",
        "location": "Leipzig hub",
        "note": "Arrived at the hub"
    })),
    responses(
        (status = 200, description = "The shipment after the transition", body = ShipmentResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such shipment", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The transition is not allowed from the shipment's status, or another one was recorded meanwhile", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid body or shipment id", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The delivery service is unavailable; retry", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn advance_shipment(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AdvanceBody>,
) -> Result<axum::Json<ShipmentResponse>, Problem> {
    let response = client(&state)?
        .advance_shipment(caller.ctx.request(pb::AdvanceShipmentRequest {
            shipment_id: id,
            status: body.status.to_pb().into(),
            location: body.location.unwrap_or_default(),
            note: body.note.unwrap_or_default(),
            carrier: String::new(),
            tracking_number: String::new(),
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(shipment(response.shipment)?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::settings::{GatewayPolicy, RateLimit};

    fn policy(request_timeout: Duration) -> Arc<GatewayPolicy> {
        let limit = RateLimit {
            per_second: 100,
            burst: 100,
        };
        Arc::new(GatewayPolicy {
            cors_allowed_origins: Vec::new(),
            body_limit_bytes: 1024,
            request_timeout,
            import_timeout: request_timeout,
            rate_limit_ip: limit,
            rate_limit_user: limit,
            trusted_proxies: Vec::new(),
        })
    }

    fn message(id: &str, status: pb::ShipmentStatus) -> pb::TrackShipmentResponse {
        pb::TrackShipmentResponse {
            event: Some(pb::TrackingEvent {
                id: id.into(),
                status: status.into(),
                location: "Leipzig hub".into(),
                note: String::new(),
                event_time: Some(prost_types::Timestamp {
                    seconds: 1_796_000_000,
                    nanos: 0,
                }),
            }),
        }
    }

    /// A stream of `items`, one every `every`.
    fn paced(
        items: Vec<Result<pb::TrackShipmentResponse, tonic::Status>>,
        every: Duration,
    ) -> impl Stream<Item = Result<pb::TrackShipmentResponse, tonic::Status>> + Send + 'static {
        futures::stream::iter(items).then(move |item| async move {
            tokio::time::sleep(every).await;
            item
        })
    }

    async fn body_through_deadline(
        items: Vec<Result<pb::TrackShipmentResponse, tonic::Status>>,
        every: Duration,
        budget: Duration,
    ) -> (Response, String, Duration) {
        let app = Router::new()
            .route(
                "/events",
                get(move || {
                    let items = items.clone();
                    async move { tracking_sse(paced(items, every), Duration::from_millis(40)) }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                policy(budget),
                crate::middleware::deadline,
            ));
        let started = Instant::now();
        let response = app
            .oneshot(Request::get("/events").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            Response::from_parts(parts, Body::empty()),
            String::from_utf8(bytes.to_vec()).unwrap(),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn the_stream_outlives_the_request_budget_and_closes_after_the_last_event() {
        let items = vec![
            Ok(message("e-1", pb::ShipmentStatus::LabelCreated)),
            Ok(message("e-2", pb::ShipmentStatus::InTransit)),
            Ok(message("e-3", pb::ShipmentStatus::OutForDelivery)),
            Ok(message("e-4", pb::ShipmentStatus::Delivered)),
        ];
        let (response, text, elapsed) = body_through_deadline(
            items,
            Duration::from_millis(120),
            Duration::from_millis(150),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        // Every event arrived although the stream ran three times the request budget.
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert_eq!(text.matches("event: tracking\n").count(), 4, "{text}");
        assert!(text.contains(
            "event: tracking\nid: e-2\ndata: {\"status\":\"IN_TRANSIT\",\"location\":\"Leipzig hub\",\"note\":null,\"at\":\"2026-11-30T"
        ), "{text}");
        let last = text.rfind("id: e-4").unwrap();
        assert!(text[last..].contains("\"status\":\"DELIVERED\""), "{text}");
        // Idle stretches carry keep-alive comments.
        assert!(text.contains("\n:\n") || text.starts_with(":\n"), "{text}");
        assert!(!text.contains("504"), "{text}");
    }

    #[test]
    fn a_reconnect_resumes_after_the_last_event_it_names() {
        let events: Vec<pb::TrackingEvent> = [
            ("e-1", pb::ShipmentStatus::LabelCreated),
            ("e-2", pb::ShipmentStatus::InTransit),
            ("e-3", pb::ShipmentStatus::Delivered),
        ]
        .into_iter()
        .map(|(id, status)| message(id, status).event.unwrap())
        .collect();
        assert_eq!(resume_point(&events, None), Resume::FromStart);
        assert_eq!(
            resume_point(&events, Some(" e-2 ")),
            Resume::After("e-2".into())
        );
        assert_eq!(resume_point(&events, Some("e-3")), Resume::Done);
        assert_eq!(resume_point(&events, Some("e-9")), Resume::FromStart);
        assert_eq!(
            resume_point(&events[..2], Some("e-1")),
            Resume::After("e-1".into())
        );
    }

    #[test]
    fn the_shipment_routes_are_documented_with_their_statuses() {
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let paths = &doc["paths"];
        for (path, method, tag, expected) in [
            (
                "/api/orders/{id}/shipment",
                "get",
                "orders",
                &["200", "401", "404", "422", "503"][..],
            ),
            (
                "/api/orders/{id}/shipment/events",
                "get",
                "orders",
                &["200", "204", "401", "404", "422", "503"][..],
            ),
            (
                "/api/admin/shipments/{id}/advance",
                "post",
                "admin",
                &["200", "401", "403", "404", "409", "422", "503"][..],
            ),
        ] {
            let operation = &paths[path][method];
            assert_eq!(operation["tags"][0], tag, "{method} {path}");
            assert_eq!(operation["security"][0]["bearer"], serde_json::json!([]));
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} is documented"));
            for status in expected {
                assert!(
                    responses.contains_key(*status),
                    "{method} {path} documents {status}"
                );
            }
        }
        let stream = &paths["/api/orders/{id}/shipment/events"]["get"]["responses"]["200"];
        assert!(
            stream["content"]["text/event-stream"].is_object(),
            "{stream}"
        );
        let statuses = &doc["components"]["schemas"]["ShipmentStatus"]["enum"];
        assert_eq!(
            statuses.as_array().map(Vec::len),
            Some(10),
            "every status is documented: {statuses}"
        );
    }

    #[tokio::test]
    async fn a_failing_stream_ends_with_a_problem_event() {
        let items = vec![
            Ok(message("e-1", pb::ShipmentStatus::LabelCreated)),
            Err(tonic::Status::unavailable("the service is shutting down")),
            Ok(message("e-2", pb::ShipmentStatus::InTransit)),
        ];
        let (_, text, _) =
            body_through_deadline(items, Duration::from_millis(10), Duration::from_secs(5)).await;
        assert_eq!(text.matches("event: tracking\n").count(), 1, "{text}");
        assert!(text.contains("event: error\ndata: {"), "{text}");
        assert!(text.contains("\"status\":503"), "{text}");
        assert!(!text.contains("id: e-2"), "{text}");
    }
}
