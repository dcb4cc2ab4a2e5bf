//! Request pipeline pieces: request id, access-token verification, per-IP and per-user rate
//! limits, and HTTP metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shopmesh_platform::auth::{AuthError, bearer_token};
use shopmesh_platform::grpc::{Deadline, REQUEST_ID};
use shopmesh_platform::problem::Problem;
use shopmesh_platform::revocation::Verdict;
use tracing::Instrument;

use crate::extract::{Authentication, RequestId};
use crate::ratelimit::Limiters;
use crate::settings::{Cidr, GatewayPolicy};
use crate::state::AppState;

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate limit exceeded, slow down",
    )
    .with_retry_after(secs.max(1))
    .into_response()
}

fn valid_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Keeps a well-formed incoming `x-request-id` (nginx sets one) or mints a UUIDv7, runs the
/// request in a span carrying it, and echoes it on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, value);
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if shopmesh_platform::telemetry::exporting() {
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| req.uri().path(), axum::extract::MatchedPath::as_str);
        span.record("otel.name", format!("{} {route}", req.method()));
        span.record("otel.kind", "server");
        // The caller's trace if it sent one, else the trace the request id stands for (nginx's
        // request id is a trace id).
        if !shopmesh_platform::telemetry::continue_from_headers(&span, req.headers()) {
            shopmesh_platform::telemetry::continue_from_request_id(&span, &id);
        }
    }
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Longest a request with a token of an unknown key waits for the keys to be fetched again.
const UNKNOWN_KEY_WAIT: Duration = Duration::from_millis(500);

/// Path of the streamed product import, which runs under its own budget.
const IMPORT_PATH: &str = "/api/admin/products/import";

/// Gives every request its budget (the import its longer one) as a [`Deadline`] that the
/// extractors hand to every gRPC call, and answers 504 when it runs out.
pub async fn deadline(
    State(policy): State<Arc<GatewayPolicy>>,
    mut req: Request,
    next: Next,
) -> Response {
    let budget = if req.uri().path() == IMPORT_PATH {
        policy.import_timeout
    } else {
        policy.request_timeout
    };
    req.extensions_mut().insert(Deadline::after(budget));
    match tokio::time::timeout(budget, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "the request took too long").into_response()
        }
    }
}

/// Records request count and latency by method, route template and status.
pub async fn metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.clone())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    if response.status().is_server_error() {
        tracing::error!(status = %status, elapsed_ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::info!(status = %status, elapsed_ms = elapsed.as_millis() as u64, "request");
    }
    response
}

/// The client's address: the TCP peer, or the `X-Real-IP` it sets when the peer is a trusted
/// proxy (the nginx edge sets it to the address it saw). A client that connects directly cannot
/// pick its own rate-limit key with a header. X-Forwarded-For is never read: clients can append
/// to it.
fn client_ip(req: &Request, trusted: &[Cidr]) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_canonical());
    let Some(peer) = peer else {
        return IpAddr::from([0, 0, 0, 0]);
    };
    if !trusted.iter().any(|net| net.contains(peer)) {
        return peer;
    }
    req.headers()
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// Applies the per-IP limit, verifies a bearer token if one is sent, applies the per-user limit
/// to verified callers and checks that their session is still active, recording the outcome for
/// the extractors.
pub async fn authenticate_and_limit(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&req, &state.policy.trusted_proxies);
    if let Err(wait) = state.limiters.check_ip(ip).await {
        return too_many(wait);
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().ok().and_then(bearer_token).map(str::to_owned));
    // `Ok`: a valid signature and claims, its session not checked yet; `Err`: the outcome.
    let verified = match header {
        None => None,
        Some(None) => Some(Err(Authentication::Refused)),
        Some(Some(token)) => {
            let mut result = state.jwks.verifier().verify_session(&token);
            // Perhaps the user service rotated its key: fetch the keys again (rate-limited)
            // and give the token a second look once they are in.
            if matches!(result, Err(AuthError::UnknownKey))
                && state.jwks.refresh_for_unknown_key(UNKNOWN_KEY_WAIT).await
            {
                result = state.jwks.verifier().verify_session(&token);
            }
            Some(match result {
                Ok((identity, session)) => Ok((identity, session, token)),
                Err(AuthError::KeysUnavailable) => Err(Authentication::KeysUnavailable),
                Err(err) => {
                    tracing::debug!(error = %err, "access token refused");
                    Err(Authentication::Refused)
                }
            })
        }
    };
    if let Some(Ok((identity, ..))) = &verified
        && let Err(wait) = state.limiters.check_user(&identity.user_id).await
    {
        return too_many(wait);
    }
    // A valid signature is not enough: the session may have ended (logout) or the account's
    // access changed since the token was signed. Checked after the per-user limit, so one
    // client's flood of requests cannot become a flood on the store.
    let authentication = match verified {
        None => None,
        Some(Err(outcome)) => Some(outcome),
        Some(Ok((identity, session, token))) => {
            Some(match state.sessions.check(&identity, &session).await {
                Ok(Verdict::Active) => Authentication::Verified { identity, token },
                Ok(Verdict::SessionEnded | Verdict::Stale) => Authentication::SessionEnded,
                Err(err) => {
                    tracing::error!(error = %err, "could not check the session of an access token");
                    Authentication::SessionCheckUnavailable
                }
            })
        }
    };
    if let Some(authentication) = authentication {
        req.extensions_mut().insert(authentication);
    }
    next.run(req).await
}

/// Shared handle to the limiters.
pub type SharedLimiters = Arc<Limiters>;
