//! The gateway: the only REST surface of shopmesh. It verifies access tokens, applies CORS,
//! request ids, body limits, rate limits and timeouts, translates JSON to gRPC calls on the
//! services, answers errors as problem+json, and serves the OpenAPI document and Swagger UI.

pub mod dto;
pub mod extract;
pub mod import;
pub mod middleware;
pub mod ratelimit;
pub mod routes;
pub mod settings;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::Settings;
use shopmesh_platform::events::Broker;
use shopmesh_platform::identity::ServiceSigner;
use shopmesh_platform::jwks::JwksCache;
use shopmesh_platform::mesh::peer_channel;
use shopmesh_platform::problem::Problem;
use shopmesh_platform::revocation::{RedisRevocations, RevocationCheck};
use shopmesh_platform::shutdown::Shutdown;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_swagger_ui::SwaggerUi;

use crate::ratelimit::Limiters;
use crate::settings::GatewaySettings;
pub use crate::state::{AppState, DrillChannel, Upstream};

/// How often idle rate-limit buckets are forgotten.
const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// How often the gateway reads every consumer's queue depths into its metrics.
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// Reads every consumer's queue depths (passive declares) into the gauge
/// `shopmesh_events_queue_messages{consumer, queue}` (`queue` is `main`, `retry` or
/// `dead_letter`) and `shopmesh_events_queue_consumers{consumer}`, every
/// [`QUEUE_DEPTH_INTERVAL`]; a consumer whose queues cannot be read keeps its last figures.
async fn sample_queue_depths(state: AppState, stop: Shutdown) {
    let mut ticker = tokio::time::interval(QUEUE_DEPTH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.clone().wait() => return,
        }
        for consumer in state.consumers.iter() {
            let Ok(depth) = shopmesh_platform::events::depth::depth(&state.events, consumer).await
            else {
                continue;
            };
            for (queue, messages) in [
                ("main", depth.messages),
                ("retry", depth.retry_messages),
                ("dead_letter", depth.dead_letters),
            ] {
                metrics::gauge!("shopmesh_events_queue_messages", "consumer" => *consumer, "queue" => queue)
                    .set(f64::from(messages));
            }
            metrics::gauge!("shopmesh_events_queue_consumers", "consumer" => *consumer)
                .set(f64::from(depth.consumers));
        }
    }
}

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
            HeaderName::from_static("x-cart-id"),
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
    header_read_timeout: Duration,
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
        let mut drill_channels = Vec::new();
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
            // One per instance of the upstream (its address may list several, comma-separated),
            // named apart so their calls and breaker state show separately in the metrics.
            for url in upstream
                .url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
            {
                drill_channels.push(DrillChannel {
                    service: upstream.name,
                    url: url.to_owned(),
                    channel: peer_channel(
                        &format!("{}-drill", upstream.name),
                        url,
                        &settings.grpc_client,
                        identity,
                    )?,
                });
            }
        }
        let channel = |name: &str| {
            channels
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the gateway needs the {name} service"))
        };
        let consumers = upstreams
            .iter()
            .flat_map(|upstream| upstream.consumers.iter().copied())
            .collect();
        let state = AppState {
            events: Broker::new(settings.events.clone(), "gateway"),
            consumers: Arc::new(consumers),
            user: UserServiceClient::new(channel("user")?),
            product: ProductServiceClient::new(channel("product")?),
            inventory: InventoryServiceClient::new(channel("product")?),
            channels: Arc::new(channels),
            drill_channels: Arc::new(drill_channels),
            started: std::time::Instant::now(),
            upstreams: Arc::new(upstreams),
            jwks,
            sessions: Arc::new(RevocationCheck::new(Arc::new(RedisRevocations::new(
                gateway.redis_url.expose(),
                &gateway.redis_key_prefix,
            )?))),
            policy: Arc::new(gateway.policy.clone()),
            limiters: Arc::new(Limiters::new(
                gateway.rate_limit_store,
                gateway.policy.rate_limit_ip,
                gateway.policy.rate_limit_user,
                gateway.redis_url.expose(),
                &gateway.redis_key_prefix,
            )?),
        };
        let listener = TcpListener::bind(gateway.addr).await?;
        Ok(Self {
            listener,
            state,
            grace: settings.shutdown_grace,
            header_read_timeout: gateway.header_read_timeout,
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
        let depths = tokio::spawn(sample_queue_depths(self.state.clone(), shutdown.clone()));
        let app = router(self.state);
        // hyper's own connection builder rather than axum::serve, for the header read timeout.
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        let graceful = GracefulShutdown::new();
        let stop = shutdown.clone().wait();
        tokio::pin!(stop);
        loop {
            let (stream, remote) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let _ = stream.set_nodelay(true);
            let service = tower::ServiceBuilder::new()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(remote));
                    request
                })
                .service(app.clone());
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let connection = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                );
                if let Err(err) = watcher.watch(connection).await {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
            });
        }
        // Stop accepting, let in-flight requests finish, at most for the grace period.
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(self.grace) => {
                tracing::warn!("HTTP drain did not finish within the grace period");
            }
        }
        prune.abort();
        depths.abort();
        Ok(())
    }
}
