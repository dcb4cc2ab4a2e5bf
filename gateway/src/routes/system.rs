//! Health, readiness and the public keys.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::problem::Problem;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::dto::ProblemDoc;
use crate::dto::system::{HealthResponse, JwkResponse, JwksResponse, ReadinessResponse};
use crate::routes::PROBLEM;
use crate::state::AppState;

const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The public keys that verify access tokens (JWKS).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "system",
    responses(
        (status = 200, description = "The key set", body = JwksResponse),
        (status = 503, description = "Keys not loaded yet", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    let keys = state.jwks.keys();
    if keys.is_empty() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signing keys not loaded yet",
        )
        .with_retry_after(1));
    }
    let body = JwksResponse {
        keys: keys
            .into_iter()
            .map(|k| JwkResponse {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                alg: k.alg,
                use_: k.use_,
            })
            .collect(),
    };
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(body),
    ))
}

/// Liveness: the gateway process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "system",
    responses((status = 200, description = "Alive", body = HealthResponse))
)]
pub async fn healthz() -> axum::Json<HealthResponse> {
    axum::Json(HealthResponse {
        status: "ok".into(),
    })
}

/// Readiness: the gateway can serve, i.e. every service it calls reports SERVING over gRPC
/// health and the token keys are loaded.
#[utoipa::path(
    get, path = "/readyz", tag = "system",
    responses(
        (status = 200, description = "Ready", body = ReadinessResponse),
        (status = 503, description = "A dependency is not ready", body = ReadinessResponse),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let dependencies: Vec<(String, HealthClient<MeshChannel>, &'static str)> = state
        .upstreams
        .iter()
        .filter_map(|upstream| {
            let channel = state.channel(upstream.name)?;
            Some(upstream.health.iter().map(move |service| {
                // Each check is named by its gRPC service: "shopmesh.product.v1.InventoryService"
                // is "inventory".
                let short = service.rsplit('.').next().unwrap_or(service);
                let name = short
                    .strip_suffix("Service")
                    .unwrap_or(short)
                    .to_lowercase();
                (name, HealthClient::new(channel.clone()), *service)
            }))
        })
        .flatten()
        .collect();
    let checks = futures::future::join_all(dependencies.into_iter().map(
        |(name, mut health, service)| async move {
            let answer = tokio::time::timeout(
                READINESS_TIMEOUT,
                health.check(HealthCheckRequest {
                    service: service.to_owned(),
                }),
            )
            .await;
            let state = match answer {
                Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => {
                    "serving"
                }
                Ok(Ok(_)) => "not_serving",
                _ => "unreachable",
            };
            (name, state.to_owned())
        },
    ))
    .await;
    let mut checks: BTreeMap<String, String> = checks.into_iter().collect();
    let services_ready = checks.values().all(|state| state == "serving");
    let keys_ready = state.jwks.is_loaded();
    checks.insert(
        "jwks".to_owned(),
        if keys_ready { "loaded" } else { "missing" }.to_owned(),
    );
    let ready = services_ready && keys_ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(ReadinessResponse {
            status: if ready { "ready" } else { "unavailable" }.to_owned(),
            checks,
        }),
    )
}

/// The gRPC reference: every service, method, message and enum of the contracts with their
/// comments and each RPC's access policy, generated at build time from the descriptor set.
pub async fn grpc_reference() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        shopmesh_contracts::GRPC_REFERENCE_HTML,
    )
}
