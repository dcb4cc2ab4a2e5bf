//! `/api/admin/metrics`: this gateway process's request counters for the admin console (admin
//! role required): HTTP requests by method, route and status, and the gRPC calls it made by
//! service, method and code. The counts are cumulative since the process started, the same
//! counters `/metrics` exposes; a console computes rates from two readings and `uptime_seconds`
//! (a count that went down means the gateway restarted).

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use shopmesh_platform::metrics::samples;
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
    OpenApiRouter::new().routes(routes!(get_metrics))
}

/// Requests to one route that ended with one status.
#[derive(Serialize, ToSchema)]
pub struct HttpCount {
    #[schema(example = "GET")]
    pub method: String,
    /// The route template; `unmatched` for paths no route knows.
    #[schema(example = "/api/products/{id}")]
    pub route: String,
    #[schema(example = 200)]
    pub status: u16,
    pub requests: u64,
}

/// Calls of one gRPC method that ended with one code.
#[derive(Serialize, ToSchema)]
pub struct GrpcCount {
    #[schema(example = "shopmesh.product.v1.ProductService")]
    pub service: String,
    #[schema(example = "GetProduct")]
    pub method: String,
    /// The gRPC status code name (`OK`, `NOT_FOUND`, `UNAVAILABLE` …).
    #[schema(example = "OK")]
    pub code: String,
    pub requests: u64,
}

#[derive(Serialize, ToSchema)]
pub struct GatewayMetrics {
    /// HTTP requests answered, sorted by route, method and status.
    pub http: Vec<HttpCount>,
    /// gRPC calls made to the services, retries and the drill calls included, sorted by service,
    /// method and code.
    pub grpc_client: Vec<GrpcCount>,
    /// Seconds since this gateway process started.
    pub uptime_seconds: f64,
}

/// The canonical name of a gRPC status code number.
fn code_name(code: &str) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    code.parse::<usize>()
        .ok()
        .and_then(|n| NAMES.get(n))
        .map_or_else(|| code.to_owned(), |name| (*name).to_owned())
}

/// Cumulative request counts of this gateway process, by HTTP route and status and by gRPC
/// method and code, with its uptime. Every gateway replica counts its own requests.
#[utoipa::path(
    get, path = "/api/admin/metrics", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The gateway's request counters", body = GatewayMetrics),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_metrics(
    State(state): State<AppState>,
    AdminCaller(_caller): AdminCaller,
) -> Result<axum::Json<GatewayMetrics>, Problem> {
    let mut http: BTreeMap<(String, String, u16), u64> = BTreeMap::new();
    for sample in samples("http_requests_total") {
        let Ok(status) = sample.label("status").parse::<u16>() else {
            continue;
        };
        *http
            .entry((
                sample.label("route").to_owned(),
                sample.label("method").to_owned(),
                status,
            ))
            .or_default() += sample.value as u64;
    }
    // The upstream label is summed over: the same method may be reached over more than one
    // channel (the drill channels).
    let mut grpc: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for sample in samples("grpc_client_requests_total") {
        let path = sample.label("method").trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        *grpc
            .entry((
                service.to_owned(),
                method.to_owned(),
                code_name(sample.label("code")),
            ))
            .or_default() += sample.value as u64;
    }
    Ok(axum::Json(GatewayMetrics {
        http: http
            .into_iter()
            .map(|((route, method, status), requests)| HttpCount {
                method,
                route,
                status,
                requests,
            })
            .collect(),
        grpc_client: grpc
            .into_iter()
            .map(|((service, method, code), requests)| GrpcCount {
                service,
                method,
                code,
                requests,
            })
            .collect(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
    }))
}
