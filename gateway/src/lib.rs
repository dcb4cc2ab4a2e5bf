//! The gateway: the only REST surface of shopmesh. It verifies access tokens, applies CORS,
//! request ids, body limits, rate limits and timeouts, translates JSON to gRPC calls on the
//! services, answers errors as problem+json, and serves the OpenAPI document and Swagger UI.

pub mod dto;
pub mod extract;
pub mod import;
pub mod middleware;
pub mod routes;
pub mod settings;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::Settings;
use shopmesh_platform::identity::ServiceSigner;
use shopmesh_platform::jwks::JwksCache;
use shopmesh_platform::mesh::peer_channel;
use shopmesh_platform::problem::Problem;
use shopmesh_platform::shutdown::Shutdown;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_swagger_ui::SwaggerUi;

use crate::middleware::Limiters;
use crate::settings::GatewaySettings;
pub use crate::state::{AppState, Upstream};

/// How often idle rate-limit buckets are forgotten.
const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The OpenAPI document the gateway serves at `/openapi.json` (checked in as docs/openapi.json).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api().1
}

/// The OpenAPI document as pretty JSON with a trailing newline, as checked in.
pub fn openapi_json() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    Problem::internal().into_response()
}

/// The complete router with all middleware, for a given state.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = routes::api();
    let policy = state.policy.clone();
    let api = api
        .route(
            "/metrics",
            get(|| async { shopmesh_platform::metrics::render() }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate_and_limit,
        ))
        .with_state(state);
    Router::new()
        .merge(api)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .route("/docs/grpc", get(routes::system::grpc_reference))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such resource") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this resource",
            )
        })
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::request_id))
                .layer(axum::middleware::from_fn(middleware::metrics))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(cors(&policy.cors_allowed_origins))
                .layer(axum::middleware::from_fn_with_state(
                    policy.clone(),
                    middleware::deadline,
                ))
                .layer(DefaultBodyLimit::max(policy.body_limit_bytes)),
        )
}

/// A bound gateway, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    grace: Duration,
}

impl Application {
    /// Binds `GATEWAY_ADDR` (port 0 picks a free port) with one resilient channel per upstream,
    /// each call signed with the gateway's own service identity. The services may not be up
    /// yet: channels connect lazily, and `jwks` is filled in the background by the caller.
    pub async fn build(
        gateway: &GatewaySettings,
        settings: &Settings,
        upstreams: Vec<Upstream>,
        jwks: Arc<JwksCache>,
        identity: &ServiceSigner,
    ) -> anyhow::Result<Self> {
        shopmesh_platform::metrics::handle();
        let mut channels = BTreeMap::new();
        for upstream in &upstreams {
            channels.insert(
                upstream.name,
                peer_channel(
                    upstream.name,
                    &upstream.url,
                    &settings.grpc_client,
                    identity,
                )?,
            );
        }
        let channel = |name: &str| {
            channels
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the gateway needs the {name} service"))
        };
        let state = AppState {
            user: UserServiceClient::new(channel("user")?),
            product: ProductServiceClient::new(channel("product")?),
            inventory: InventoryServiceClient::new(channel("product")?),
            channels: Arc::new(channels),
            upstreams: Arc::new(upstreams),
            jwks,
            policy: Arc::new(gateway.policy.clone()),
            limiters: Arc::new(Limiters::new(
                gateway.policy.rate_limit_ip,
                gateway.policy.rate_limit_user,
            )),
        };
        let listener = TcpListener::bind(gateway.addr).await?;
        Ok(Self {
            listener,
            state,
            grace: settings.shutdown_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown`: stops accepting, lets in-flight requests finish (bounded by the
    /// grace period), then returns.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let limiters = self.state.limiters.clone();
        let prune_stop = shutdown.clone();
        let prune = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(LIMITER_PRUNE_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticker.tick() => limiters.prune(),
                    () = prune_stop.clone().wait() => break,
                }
            }
        });
        let app = router(self.state);
        let serve = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().wait());
        let serve = async move { serve.await };
        tokio::pin!(serve);
        let grace = self.grace;
        tokio::select! {
            result = &mut serve => result?,
            () = async {
                shutdown.wait().await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!("HTTP drain did not finish within the grace period"),
        }
        prune.abort();
        Ok(())
    }
}
